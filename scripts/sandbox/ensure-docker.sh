#!/usr/bin/env bash
# Make sure a Docker engine answers `docker info`.
#
# Already running: exit 0. Otherwise (as root, on Debian/Ubuntu): install Debian's
# docker.io when dockerd is missing, start dockerd in the background (log:
# $DOCKERD_LOG, default /tmp/dockerd.log) and wait for it.
#
# Env: DOCKERD_LOG           dockerd's log file
#      DOCKER_START_TIMEOUT  seconds to wait for the engine (default 60)
#      DOCKERD_FLAGS         extra dockerd flags (default: none; when the default start
#                            fails, a retry uses --iptables=false --storage-driver=vfs)
set -euo pipefail

DOCKERD_LOG="${DOCKERD_LOG:-/tmp/dockerd.log}"
TIMEOUT="${DOCKER_START_TIMEOUT:-60}"

log() { echo "ensure-docker: $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

engine_up() { docker info >/dev/null 2>&1; }

if command -v docker >/dev/null 2>&1 && engine_up; then
  exit 0
fi

[ "$(id -u)" = 0 ] || die "no Docker engine answers and starting one needs root (start Docker, or run as root)"

if ! command -v dockerd >/dev/null 2>&1; then
  command -v apt-get >/dev/null 2>&1 || die "dockerd is not installed and apt-get is not available to install it"
  log "installing docker.io with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >&2 || log "apt-get update failed; trying the install anyway"
  apt-get install -y -q --no-install-recommends docker.io iptables ca-certificates >&2 \
    || die "apt-get install docker.io failed"
fi
command -v docker >/dev/null 2>&1 || die "no docker client after installing docker.io"

wait_engine() {  # $1 = dockerd pid
  local deadline=$(( $(date +%s) + TIMEOUT ))
  while [ "$(date +%s)" -lt "$deadline" ]; do
    engine_up && return 0
    kill -0 "$1" 2>/dev/null || return 1
    sleep 1
  done
  return 1
}

start_dockerd() {  # extra flags...
  log "starting dockerd $* (log: $DOCKERD_LOG)"
  # setsid: not tied to the caller's session or terminal; it outlives this script.
  setsid dockerd "$@" >>"$DOCKERD_LOG" 2>&1 < /dev/null &
  local pid=$!
  if wait_engine "$pid"; then
    log "Docker engine is up (dockerd pid $pid)"
    return 0
  fi
  kill "$pid" 2>/dev/null || true
  for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  return 1
}

# A stale pid file from an earlier dockerd (e.g. a machine handed over as it was) blocks a start.
if [ -f /var/run/docker.pid ] && ! kill -0 "$(cat /var/run/docker.pid 2>/dev/null)" 2>/dev/null; then
  rm -f /var/run/docker.pid
fi

if pgrep -x dockerd >/dev/null 2>&1; then
  log "a dockerd is already running but does not answer yet; waiting"
  deadline=$(( $(date +%s) + TIMEOUT ))
  while [ "$(date +%s)" -lt "$deadline" ]; do engine_up && exit 0; sleep 1; done
  die "dockerd runs but 'docker info' did not answer within ${TIMEOUT}s (see $DOCKERD_LOG)"
fi

# shellcheck disable=SC2086
start_dockerd ${DOCKERD_FLAGS:-} && exit 0
log "dockerd did not come up with default flags; retrying without iptables and with the vfs storage driver"
rm -f /var/run/docker.pid
# shellcheck disable=SC2086
start_dockerd ${DOCKERD_FLAGS:-} --iptables=false --storage-driver=vfs && exit 0

tail -n 25 "$DOCKERD_LOG" >&2 || true
die "could not start a Docker engine within ${TIMEOUT}s (full log: $DOCKERD_LOG)"
