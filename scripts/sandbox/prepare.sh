#!/usr/bin/env bash
# OS packages the test suite needs beyond the venv: headless Chromium for the UI test
# (tests/ui). Installs it with apt-get when it is missing and this is root on Debian.
set -euo pipefail
if command -v chromium >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
else
  echo "prepare: chromium is missing and cannot be installed here (needs root and apt-get); tests/ui will be skipped" >&2
fi
