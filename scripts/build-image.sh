#!/usr/bin/env bash
# Build the echoflow image from images/Dockerfile (context: the repository root).
#
# Env (all optional):
#   IMAGE       tag to build (default echoflow:<version>-<git short rev>)
#   BASE_IMAGE  base image; empty = the Dockerfile's pinned pangeo image (found locally or
#               pulled; the build fails when it can be neither); "standin" = a local image
#               of the same layout built by scripts/sandbox/build-standin-base.sh, for tests
#               on machines that cannot reach the base's registry (never for publishing)
#   CA_BUNDLE   CA bundle file for a TLS-inspecting proxy; passed as the BuildKit secret
#               "ca", used only by the install step, never stored in the image. Empty: the
#               file named by PIP_CERT, SSL_CERT_FILE or REQUESTS_CA_BUNDLE when one is set
#               (pip on this machine trusts it, so the build's pip should too); "none": no CA.
#   VERSION     org.opencontainers.image.version (default: version in pyproject.toml)
#   REVISION    org.opencontainers.image.revision (default: git HEAD, "-dirty" if modified)
#   SOURCE      org.opencontainers.image.source (default: [project.urls] Source)
#   DOCKER_BUILD_ARGS  extra arguments for docker build (e.g. --no-cache)
# Prints the image name as the last line on stdout.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
log() { echo "build-image: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

docker info >/dev/null 2>&1 || die "no Docker engine answers 'docker info': start Docker (a bare root sandbox: scripts/sandbox/prepare.sh)"

pyproject_value() {  # first `key = "value"` in pyproject.toml
  sed -n "s/^$1 = \"\(.*\)\"/\1/p" pyproject.toml | head -n1
}
VERSION="${VERSION:-$(pyproject_value version)}"
[ -n "$VERSION" ] || die "no version in pyproject.toml"
SOURCE="${SOURCE:-$(pyproject_value Source)}"
if [ -z "${REVISION:-}" ]; then
  REVISION="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
  if [ "$REVISION" != unknown ] && [ -n "$(git status --porcelain -- src pyproject.toml constraints.txt images 2>/dev/null)" ]; then
    REVISION="${REVISION}-dirty"
  fi
fi
short_rev="$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)"
IMAGE="${IMAGE:-echoflow:${VERSION}-${short_rev}}"

# The base: the stand-in only when asked for; else explicit, else the Dockerfile's default.
default_base="$(sed -n 's/^ARG BASE_IMAGE=//p' images/Dockerfile | head -n1)"
if [ "${BASE_IMAGE:-}" = standin ]; then
  BASE_IMAGE="$("$repo/scripts/sandbox/build-standin-base.sh" | tail -n1)"
  log "stand-in base: $BASE_IMAGE (NOT the pangeo image; fine for tests, not for publishing)"
elif [ -z "${BASE_IMAGE:-}" ]; then
  BASE_IMAGE="$default_base"
  if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
    log "pulling $BASE_IMAGE"
    timeout "${PULL_TIMEOUT:-180}" docker pull -q "$BASE_IMAGE" >&2 \
      || die "cannot pull the base image $BASE_IMAGE: check registry access, or set BASE_IMAGE to a mirror of it (BASE_IMAGE=standin builds a local stand-in for tests only)"
  fi
fi

# BuildKit is needed (RUN --mount for the source and the CA secret). Either the docker CLI
# has buildx, or use a client that still has BuildKit built in (Docker 20.10, e.g. Debian's
# docker.io at /usr/bin/docker).
docker_cmd=()
if docker buildx version >/dev/null 2>&1; then
  docker_cmd=(docker build)
else
  for c in "$(command -v docker)" /usr/bin/docker /usr/local/bin/docker; do
    [ -x "$c" ] || continue
    v="$("$c" version --format '{{.Client.Version}}' 2>/dev/null || true)"
    case "$v" in
      1[89].*|20.*) docker_cmd=("$c" build); break ;;
    esac
  done
  [ ${#docker_cmd[@]} -gt 0 ] || die "BuildKit is needed: install docker-buildx (the buildx plugin), or Debian's docker.io (its client has BuildKit built in)"
fi

args=(--network host -f images/Dockerfile -t "$IMAGE"
      --build-arg "BASE_IMAGE=$BASE_IMAGE"
      --build-arg "VERSION=$VERSION"
      --build-arg "REVISION=$REVISION"
      --build-arg "SOURCE=$SOURCE"
      --build-arg "CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ)")
if [ -z "${CA_BUNDLE:-}" ]; then
  for f in "${PIP_CERT:-}" "${SSL_CERT_FILE:-}" "${REQUESTS_CA_BUNDLE:-}"; do
    if [ -n "$f" ] && [ -s "$f" ]; then CA_BUNDLE="$f"; log "CA bundle from the environment: $f"; break; fi
  done
fi
[ "${CA_BUNDLE:-}" = none ] && CA_BUNDLE=
if [ -n "${CA_BUNDLE:-}" ]; then
  [ -s "$CA_BUNDLE" ] || die "CA_BUNDLE=$CA_BUNDLE is not a readable, non-empty file"
  args+=(--secret "id=ca,src=$(cd "$(dirname "$CA_BUNDLE")" && pwd)/$(basename "$CA_BUNDLE")")
fi
if [ -n "${DOCKER_BUILD_ARGS:-}" ]; then
  # shellcheck disable=SC2206
  args+=(${DOCKER_BUILD_ARGS})
fi

log "building $IMAGE on $BASE_IMAGE (version $VERSION, revision $REVISION${CA_BUNDLE:+, CA secret from $CA_BUNDLE})"
start=$(date +%s)
DOCKER_BUILDKIT=1 "${docker_cmd[@]}" "${args[@]}" . >&2
log "built $IMAGE in $(( $(date +%s) - start ))s, $(docker image inspect -f '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1/1e6}')"
echo "$IMAGE"
