#!/usr/bin/env bash
# Prepares this machine for building and testing Skiff: a Docker engine, busybox for the tests'
# base images, qemu-user emulation for arm builds, and what `skiff server` runs with or is tested
# against (CNCF distribution, PostgreSQL with a `skiff` role, haproxy, openssl, git with its
# http-backend for the fleets' repositories). Idempotent, on a
# fresh machine or an already set up one; no systemd needed. Run as root (CI does).
set -euo pipefail

CACHE="${SKIFF_TEST_CACHE:-/var/cache/skiff-test}"
log() { printf '[setup] %s\n' "$*" >&2; }
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need=()
for pkg in docker.io busybox-static qemu-user-static binfmt-support dosfstools mtools fdisk e2fsprogs iproute2 util-linux zstd xz-utils bzip2 zip python3-gi gir1.2-glib-2.0 \
           docker-registry postgresql haproxy openssl git xdelta3; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The engine: start one only when nothing answers on the socket.
DOCKER=/usr/bin/docker
# A dockerd still stopping (or still starting) holds its pid file: a second one would exit at once.
# Wait for it to answer or to be gone (stopping its containers can take a while).
for _ in $(seq 1 120); do
  pgrep -x dockerd >/dev/null 2>&1 || break
  $DOCKER info >/dev/null 2>&1 && break
  sleep 0.5
done
if ! $DOCKER info >/dev/null 2>&1; then
  if pgrep -x dockerd >/dev/null 2>&1; then
    log "a dockerd runs (pid $(pgrep -x dockerd | tr '\n' ' ')) but does not answer on /var/run/docker.sock after 60 s; see /var/log/dockerd.log"
    exit 1
  fi
  log "starting dockerd"
  $SUDO bash -c 'setsid dockerd >/var/log/dockerd.log 2>&1 < /dev/null &'
  for _ in $(seq 1 60); do
    $DOCKER info >/dev/null 2>&1 && break
    sleep 0.5
  done
  $DOCKER info >/dev/null 2>&1 || { log "dockerd did not start; see /var/log/dockerd.log"; tail -20 /var/log/dockerd.log >&2 || true; exit 1; }
fi
log "engine $($DOCKER version --format '{{.Server.Version}}') answers"

# qemu-user emulation with the fix-binary flag, so arm64/armhf containers run here.
BINFMT=/proc/sys/fs/binfmt_misc
[ -e "$BINFMT/status" ] || $SUDO mount -t binfmt_misc binfmt_misc "$BINFMT"
register() { # name magic mask
  local name=$1 magic=$2 mask=$3 interp="/usr/bin/$1-static"
  if [ -e "$BINFMT/$name" ] && grep -q '^flags: .*F' "$BINFMT/$name" && grep -q "interpreter $interp" "$BINFMT/$name"; then return; fi
  [ -e "$BINFMT/$name" ] && echo -1 | $SUDO tee "$BINFMT/$name" >/dev/null
  echo ":$name:M::$magic:$mask:$interp:F" | $SUDO tee "$BINFMT/register" >/dev/null
  log "registered $interp (flag F)"
}
register qemu-aarch64 '\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00' '\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'
register qemu-arm '\x7fELF\x01\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x28\x00' '\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff'

# An arm64 busybox for the tests' arm64 base image (Debian's package, unpacked).
if [ ! -x "$CACHE/arm64/bin/busybox" ]; then
  log "fetching busybox-static:arm64"
  $SUDO mkdir -p "$CACHE"
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then
    $SUDO dpkg --add-architecture arm64
    $SUDO apt-get update -qq
  fi
  tmp=$(mktemp -d)
  (cd "$tmp" && apt-get download busybox-static:arm64 >/dev/null 2>&1 || { $SUDO apt-get update -qq && apt-get download busybox-static:arm64 >/dev/null; })
  dpkg-deb -x "$tmp"/busybox-static_*_arm64.deb "$tmp/rootfs"
  $SUDO mkdir -p "$CACHE/arm64/bin"
  $SUDO cp "$tmp/rootfs/bin/busybox" "$CACHE/arm64/bin/busybox"
  rm -rf "$tmp"
fi
# PostgreSQL for `skiff server --database postgres://…` and its tests: start the cluster of the
# installed major version (no systemd: pg_ctlcluster), then make sure the `skiff` role exists with
# password `skiff` and may create databases (each test run makes its own).
pgver=$(ls /usr/lib/postgresql 2>/dev/null | sort -n | tail -1)
[ -n "$pgver" ] || { log "postgresql is installed but /usr/lib/postgresql has no version"; exit 1; }
if ! pg_lsclusters --no-header 2>/dev/null | awk -v v="$pgver" '$1 == v && $2 == "main"' | grep -q .; then
  log "creating PostgreSQL $pgver cluster main"
  $SUDO pg_createcluster "$pgver" main >/dev/null
fi
if ! pg_lsclusters --no-header | awk -v v="$pgver" '$1 == v && $2 == "main" && $4 == "online"' | grep -q .; then
  log "starting PostgreSQL $pgver cluster main"
  $SUDO pg_ctlcluster "$pgver" main start
fi
pgport=$(pg_lsclusters --no-header | awk -v v="$pgver" '$1 == v && $2 == "main" { print $3 }')
psql_su() { # as the postgres superuser, over its local socket
  if [ -n "$SUDO" ]; then sudo -u postgres psql -p "$pgport" -v ON_ERROR_STOP=1 -qtAX "$@"
  else runuser -u postgres -- psql -p "$pgport" -v ON_ERROR_STOP=1 -qtAX "$@"; fi
}
for _ in $(seq 1 60); do
  psql_su -c 'SELECT 1' >/dev/null 2>&1 && break
  sleep 0.5
done
if [ "$(psql_su -c "SELECT 1 FROM pg_roles WHERE rolname = 'skiff'")" != 1 ]; then
  log "creating PostgreSQL role skiff"
  psql_su -c "CREATE ROLE skiff LOGIN CREATEDB PASSWORD 'skiff'"
elif [ "$(psql_su -c "SELECT rolcanlogin AND rolcreatedb FROM pg_roles WHERE rolname = 'skiff'")" != t ]; then
  log "letting PostgreSQL role skiff log in and create databases"
  psql_su -c "ALTER ROLE skiff LOGIN CREATEDB PASSWORD 'skiff'"
fi
PGPASSWORD=skiff psql -h 127.0.0.1 -p "$pgport" -U skiff -d postgres -qtAX -c 'SELECT 1' >/dev/null \
  || { log "cannot log in to PostgreSQL as skiff on 127.0.0.1:$pgport"; exit 1; }
log "PostgreSQL $pgver answers on 127.0.0.1:$pgport (role skiff)"

# The registry and load balancer are started by skiff server and the tests with their own configs;
# Debian's packages may have started their own daemons where an init system exists: leave them.
log "docker-registry $(docker-registry --version 2>/dev/null | awk '{ print $3 }'), $(haproxy -v 2>/dev/null | head -1 | awk '{ print $1, $3 }'), $(openssl version | awk '{ print $1, $2 }')"
log "ready (test cache: $CACHE)"
