#!/usr/bin/env bash
# Package charts/echoflow.
#   CHART_REPO unset or a directory path: write dist/echoflow-<version>.tgz and
#     dist/index.yaml (a static Helm repository; CHART_URL sets the URL prefix in it).
#   CHART_REPO=oci://registry/path: `helm push` the package there (log in first with
#     `helm registry login`).
# HELM (default: helm on PATH, else .tools/helm), CHART_DIR, DIST override the defaults.
set -euo pipefail

cd "$(dirname "$0")/.."
CHART_DIR="${CHART_DIR:-charts/echoflow}"
DIST="${DIST:-dist}"
CHART_REPO="${CHART_REPO:-}"
if [[ -z "${HELM:-}" ]]; then
  HELM="$(command -v helm || echo .tools/helm)"
fi
[[ -x "$HELM" ]] || { echo "chart-package: helm not found (run scripts/fetch-tools.sh .tools)" >&2; exit 1; }

version="$(sed -n 's/^version:[[:space:]]*"\{0,1\}\([^"]*\)"\{0,1\}[[:space:]]*$/\1/p' "$CHART_DIR/Chart.yaml")"
[[ -n "$version" ]] || { echo "chart-package: no version in $CHART_DIR/Chart.yaml" >&2; exit 1; }

"$HELM" lint --strict "$CHART_DIR"
mkdir -p "$DIST"
"$HELM" package "$CHART_DIR" --version "$version" --destination "$DIST"
package="$DIST/$(basename "$CHART_DIR")-$version.tgz"
[[ -f "$package" ]] || { echo "chart-package: $package was not written" >&2; exit 1; }

if [[ "$CHART_REPO" == oci://* ]]; then
  "$HELM" push "$package" "$CHART_REPO"
  echo "pushed $package to $CHART_REPO"
else
  if [[ -n "${CHART_URL:-}" ]]; then
    "$HELM" repo index "$DIST" --url "$CHART_URL"
  else
    "$HELM" repo index "$DIST"
  fi
  echo "wrote $package and $DIST/index.yaml"
fi
