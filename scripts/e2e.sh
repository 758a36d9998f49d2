#!/usr/bin/env bash
# End-to-end on kind: build the image, install MinIO and the chart, convert the sample files
# as Kubernetes Jobs through the registered deployments, and read every output back.
#
#   scripts/e2e.sh            (or `make e2e`)
#   KEEP=1 scripts/e2e.sh     keep the cluster, release and data afterwards
#
# Idempotent: reuses the cluster when it exists (scripts/kind.sh up), upgrades the release,
# and writes each run's files under a fresh prefix. Cleanup deletes the cluster when this
# script created it, else only the namespace. Needs kind, Docker, helm and kubectl (HELM /
# KUBECTL from the Makefile) and the sample data in $DATA (default data/).
# The steps shared with the Docker-only test (tests/e2e/test_worker_loop.py) are
# scripts/e2e_steps.py: upload, trigger, wait, verify.
set -Eeuo pipefail

cd "$(dirname "$0")/.."
KIND_CLUSTER="${KIND_CLUSTER:-echoflow}"
NS="${NS:-echoflow}"
RELEASE="${RELEASE:-echoflow}"
DATA="${DATA:-data}"
HELM="${HELM:-$(command -v helm || echo .tools/helm)}"
KUBECTL="${KUBECTL:-$(command -v kubectl || echo .tools/kubectl)}"
PY=.venv/bin/python
RUN="e2e-$(date -u +%Y%m%d-%H%M%S)"
LOGS="$(mktemp -d)"
PIDS=()
RUN_IDS=()
CREATED_CLUSTER=0

log() { echo "e2e: $*" >&2; }
k() { "$KUBECTL" -n "$NS" "$@"; }
step() { "$PY" scripts/e2e_steps.py "$@"; }

diagnose() {
  local rc=$?
  [ "$BASH_SUBSHELL" = 0 ] || exit "$rc"  # a failing $(...): report once, from the main shell
  trap - ERR
  log "FAILED (exit $rc); diagnostics follow"
  k get pods,jobs,svc -o wide || true
  k describe jobs -l prefect.io/flow-run-id || true
  k describe pods -l prefect.io/flow-run-id || true
  for pod in $(k get pods -l prefect.io/flow-run-id -o name 2>/dev/null); do
    echo "--- logs $pod"; k logs --tail=200 "$pod" || true
  done
  echo "--- worker"; k logs --tail=200 "deploy/$RELEASE-worker" || true
  echo "--- server"; k logs --tail=100 "deploy/$RELEASE-server" || true
  for id in "${RUN_IDS[@]}"; do
    echo "--- flow run $id"; .venv/bin/prefect flow-run logs "$id" 2>&1 | tail -n 100 || true
  done
  exit "$rc"
}

cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then
    log "KEEP=1: cluster $KIND_CLUSTER, namespace $NS and s3://converted/$RUN kept"
  elif [ "$CREATED_CLUSTER" = 1 ]; then
    scripts/kind.sh down || true
  else
    "$HELM" uninstall "$RELEASE" -n "$NS" --wait >/dev/null 2>&1 || true
    "$KUBECTL" delete namespace "$NS" --wait=false >/dev/null 2>&1 || true
  fi
  rm -rf "$LOGS"
}
trap diagnose ERR
trap cleanup EXIT

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

forward() {  # svc remote-port local-port path: wait until an HTTP answer comes through
  "$KUBECTL" -n "$NS" port-forward "svc/$1" "$3:$2" >"$LOGS/forward-$1.log" 2>&1 &
  PIDS+=($!)
  for _ in $(seq 60); do
    curl -s -o /dev/null "http://127.0.0.1:$3$4" && return 0
    sleep 2
  done
  cat "$LOGS/forward-$1.log" >&2
  return 1
}

[ -x "$PY" ] || make install
[ -f "$DATA/ek60/DY1801_EK60-D20180211-T164025.raw" ] || { log "sample data not found in $DATA"; exit 1; }

log "cluster"
if ! "${KIND:-kind}" get clusters 2>/dev/null | grep -qx "$KIND_CLUSTER"; then CREATED_CLUSTER=1; fi
scripts/kind.sh up
"$KUBECTL" config use-context "kind-$KIND_CLUSTER" >/dev/null

log "image"
IMAGE="$(scripts/build-image.sh | tail -n1)"
export IMAGE
scripts/kind.sh load

log "MinIO and the chart"
"$KUBECTL" create namespace "$NS" --dry-run=client -o yaml | "$KUBECTL" apply -f - >/dev/null
k apply -f k8s/minio.yaml
k rollout status deploy/minio --timeout=300s
k wait --for=condition=complete job/minio-buckets --timeout=300s
"$HELM" upgrade --install "$RELEASE" charts/echoflow -n "$NS" -f k8s/values-kind.yaml \
  --set image.repository="${IMAGE%:*}" --set-string image.tag="${IMAGE##*:}" \
  --set workPool.concurrencyLimit=3 --wait --timeout 10m
"$HELM" test "$RELEASE" -n "$NS" --logs --timeout 10m

log "port-forwards to the Prefect API and MinIO"
api_port="$(free_port)"
s3_port="$(free_port)"
forward "$RELEASE-server" 4200 "$api_port" /api/health
forward minio 9000 "$s3_port" /minio/health/ready
export PREFECT_API_URL="http://127.0.0.1:$api_port/api"
secret() { k get secret echoflow-s3 -o "jsonpath={.data.$1}" | base64 -d; }
AWS_ACCESS_KEY_ID="$(secret AWS_ACCESS_KEY_ID)"
AWS_SECRET_ACCESS_KEY="$(secret AWS_SECRET_ACCESS_KEY)"
export AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_DEFAULT_REGION=us-east-1
export AWS_ENDPOINT_URL="http://127.0.0.1:$s3_port"

log "upload the samples to s3://raw/$RUN"
step upload-samples --data "$DATA" --dest "s3://raw/$RUN" --ek60-copies 3

log "trigger: two batch runs and a cruise (one child run per file)"
"$KUBECTL" -n "$NS" get jobs -l prefect.io/flow-run-id -w &
PIDS+=($!)
out="s3://converted/$RUN"
ek60="$(step trigger convert-batch/echoflow --params "{\"sources\": [\"s3://raw/$RUN/ek60/*.raw\"],
  \"sonar_model\": \"EK60\", \"output_prefix\": \"$out/ek60\", \"output_type\": \"zarr\"}" | tail -n1)"
azfp="$(step trigger convert-batch/echoflow --params "{\"sources\": [\"s3://raw/$RUN/azfp/17031001.01A\"],
  \"sonar_model\": \"AZFP\", \"xml_path\": \"s3://raw/$RUN/azfp/17030815.XML\",
  \"output_prefix\": \"$out/azfp\", \"output_type\": \"netcdf\"}" | tail -n1)"
cruise="$(step trigger convert-cruise/echoflow --params "{\"sources\": [\"s3://raw/$RUN/ek60/*.raw\"],
  \"sonar_model\": \"EK60\", \"output_prefix\": \"$out/cruise\", \"output_type\": \"zarr\",
  \"files_per_job\": 1, \"poll_seconds\": 5}" | tail -n1)"
RUN_IDS=("$ek60" "$azfp" "$cruise")

log "wait for the flow runs"
step wait "$ek60" "$azfp" "$cruise" --timeout 1800
mapfile -t children < <(step children "$cruise")
[ "${#children[@]}" = 3 ] || { log "expected 3 child runs of the cruise, got ${#children[@]}"; false; }
RUN_IDS+=("${children[@]}")
step wait "${children[@]}" --timeout 300
for id in "${RUN_IDS[@]}"; do
  k wait --for=condition=complete job -l "prefect.io/flow-run-id=$id" --timeout=300s
done

log "verify: every output opens with echopype from S3"
step verify "$out/ek60" --expect 3
step verify "$out/azfp" --expect 1
step verify "$out/cruise" --expect 3
log "PASSED (run $RUN)"
