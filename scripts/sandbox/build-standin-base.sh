#!/usr/bin/env bash
# Build a small local stand-in for the pangeo base image, for machines that cannot pull it.
#
# It copies the parts of the pangeo layout that images/Dockerfile relies on (see
# images/README.md): a Python environment at /srv/conda/envs/notebook (here a venv made
# from Debian bookworm's python3.11 instead of a conda env), NB_PYTHON_PREFIX, CONDA_DIR,
# PATH with the env's bin first, user jovyan (uid/gid 1000, HOME /home/jovyan), /srv owned
# by jovyan, /srv/start as ENTRYPOINT, USER jovyan.
#
# The rootfs comes from debootstrap (minbase) using the Debian mirror this machine's apt
# is configured with, and is loaded with `docker import`. The image is tagged with a hash
# of this script and reused when that tag already exists.
#
# Usage: scripts/sandbox/build-standin-base.sh        prints the image name on stdout (last line)
# Env:   STANDIN_REPO  image repository (default echoflow-standin-base)
#        DEBIAN_MIRROR mirror URL (default: read from /etc/apt/sources.list*, else deb.debian.org)
#        SUITE         Debian suite (default bookworm)
set -euo pipefail

SUITE="${SUITE:-bookworm}"
STANDIN_REPO="${STANDIN_REPO:-echoflow-standin-base}"
hash="$( { cat "${BASH_SOURCE[0]}"; echo "$SUITE"; } | sha256sum | cut -c1-12)"
image="${STANDIN_REPO}:${SUITE}-${hash}"

log() { echo "build-standin-base: $*" >&2; }

if docker image inspect "$image" >/dev/null 2>&1; then
  log "reusing $image"
  echo "$image"
  exit 0
fi

if [ "$(id -u)" != 0 ]; then
  log "debootstrap needs root"; exit 1
fi

if ! command -v debootstrap >/dev/null 2>&1; then
  log "installing debootstrap"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2 || true
  apt-get install -y -q debootstrap >&2
fi

find_mirror() {
  local f url
  # deb822 .sources files: "URIs: http://..." with a Debian (not -security) archive
  for f in /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    url="$(grep -hoE '(URIs:[[:space:]]*|^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?)https?://[^[:space:]]+' "$f" 2>/dev/null \
      | grep -oE 'https?://[^[:space:]]+' | grep -E '/debian/?$' | grep -v security | head -n1 || true)"
    if [ -n "$url" ]; then echo "${url%/}"; return; fi
  done
  echo "http://deb.debian.org/debian"
}
mirror="${DEBIAN_MIRROR:-$(find_mirror)}"

rootfs="$(mktemp -d /tmp/echoflow-standin.XXXXXX)"
cleanup() { rm -rf --one-file-system "$rootfs"; }
trap cleanup EXIT

start=$(date +%s)
log "debootstrap $SUITE from $mirror into $rootfs"
keyring=()
[ -f /usr/share/keyrings/debian-archive-keyring.gpg ] && keyring=(--keyring=/usr/share/keyrings/debian-archive-keyring.gpg)
debootstrap --variant=minbase "${keyring[@]}" \
  --include=python3,python3-venv,ca-certificates \
  "$SUITE" "$rootfs" "$mirror" >/tmp/echoflow-standin-debootstrap.log 2>&1 \
  || { tail -n 30 /tmp/echoflow-standin-debootstrap.log >&2; log "debootstrap failed (log: /tmp/echoflow-standin-debootstrap.log)"; exit 1; }

# The pangeo layout, created inside the rootfs.
chroot "$rootfs" /bin/sh -eu >&2 <<'EOF'
groupadd --gid 1000 jovyan
useradd --create-home --home-dir /home/jovyan --gid 1000 --uid 1000 --no-log-init --shell /bin/bash jovyan
mkdir -p /srv/conda/envs /srv/conda/etc
python3 -m venv /srv/conda/envs/notebook
/srv/conda/envs/notebook/bin/python -m pip --version
cat > /srv/start <<'START'
#!/bin/bash
# stand-in for pangeo's /srv/start: run the given command
export PANGEO_ENV="notebook"
exec "$@"
START
chmod 0755 /srv/start
chown -R 1000:1000 /srv /home/jovyan
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /var/log/* \
       /usr/share/doc/* /usr/share/man/* /usr/share/info/* /usr/share/locale/*
find /srv/conda /usr/lib/python3* -name '__pycache__' -prune -exec rm -rf {} +
EOF

log "importing as $image"
tar -C "$rootfs" --numeric-owner -c . | docker import \
  --change 'ENV CONDA_ENV=notebook NB_USER=jovyan NB_UID=1000 SHELL=/bin/bash LANG=C.UTF-8 LC_ALL=C.UTF-8 CONDA_DIR=/srv/conda' \
  --change 'ENV NB_PYTHON_PREFIX=/srv/conda/envs/notebook DASK_ROOT_CONFIG=/srv/conda/etc HOME=/home/jovyan' \
  --change 'ENV PATH=/srv/conda/envs/notebook/bin:/srv/conda/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'LABEL io.echoflow.standin-base=pangeo-layout-on-debian-'"$SUITE" \
  --change 'USER jovyan' \
  --change 'WORKDIR /home/jovyan' \
  --change 'ENTRYPOINT ["/srv/start"]' \
  -m "echoflow stand-in for the pangeo base image (debootstrap $SUITE)" \
  - "$image" >&2
# Older stand-ins (earlier versions of this script) go, unless an image still builds on them.
docker images --format '{{.Repository}}:{{.Tag}}' "$STANDIN_REPO" | grep -vxF "$image" \
  | xargs -r docker rmi >/dev/null 2>&1 || true
log "built $image in $(( $(date +%s) - start ))s ($(docker image inspect -f '{{.Size}}' "$image" | awk '{printf "%.0f MB", $1/1e6}'))"
echo "$image"
