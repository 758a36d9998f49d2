#!/usr/bin/env bash
# Prepare a bare root Debian sandbox (such as CI here) for `make test`: what the suite needs
# beyond the venv. Run only when asked (.ci/run does); `make test` itself installs nothing.
#   - a Docker engine (scripts/sandbox/ensure-docker.sh: Debian's docker.io, dockerd started)
#   - headless Chromium for the UI test (tests/cli/test_local_api.py, marker `browser`)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
"$here/ensure-docker.sh"
if ! command -v chromium >/dev/null 2>&1; then
  as_root=()
  [ "$(id -u)" = 0 ] || as_root=(sudo -n)  # a CI runner's user with password-less sudo
  if command -v apt-get >/dev/null 2>&1 && "${as_root[@]}" true 2>/dev/null; then
    "${as_root[@]}" apt-get update -qq
    "${as_root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium >/dev/null
  else
    echo "prepare: chromium is missing and cannot be installed here (needs root or sudo, and apt-get)" >&2
    exit 1
  fi
fi
