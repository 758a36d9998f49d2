#!/usr/bin/env bash
# Local kind cluster for the echoflow e2e.
#   scripts/kind.sh up     create cluster $KIND_CLUSTER from k8s/kind-config.yaml (no-op if it exists)
#   scripts/kind.sh load   load image $IMAGE into it
#   scripts/kind.sh down   delete it
# Needs `kind` (and Docker) on PATH. KIND_CLUSTER defaults to echoflow; the Makefile sets both.
set -euo pipefail

cd "$(dirname "$0")/.."
KIND="${KIND:-kind}"
KIND_CLUSTER="${KIND_CLUSTER:-echoflow}"

case "${1:-}" in
  up|load|down) ;;
  *) echo "usage: $0 up|load|down" >&2; exit 2 ;;
esac
command -v "$KIND" >/dev/null || { echo "kind.sh: '$KIND' not found on PATH" >&2; exit 1; }

case "$1" in
  up)
    if "$KIND" get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then
      echo "kind cluster $KIND_CLUSTER already exists"
    else
      "$KIND" create cluster --name "$KIND_CLUSTER" --config k8s/kind-config.yaml --wait 120s
    fi
    ;;
  load)
    : "${IMAGE:?set IMAGE to the image to load, e.g. echoflow:0.1.0-dev}"
    "$KIND" load docker-image "$IMAGE" --name "$KIND_CLUSTER"
    ;;
  down)
    "$KIND" delete cluster --name "$KIND_CLUSTER"
    ;;
esac
