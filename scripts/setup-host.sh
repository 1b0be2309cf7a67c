#!/usr/bin/env bash
# Prepares this machine for building and testing Skiff: a Docker engine, busybox for the tests'
# base images, qemu-user emulation for arm builds. Idempotent; run as root (CI does).
set -euo pipefail

CACHE="${SKIFF_TEST_CACHE:-/var/cache/skiff-test}"
log() { printf '[setup] %s\n' "$*" >&2; }
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

need=()
for pkg in docker.io busybox-static qemu-user-static binfmt-support dosfstools mtools fdisk e2fsprogs iproute2 util-linux zstd xz-utils bzip2 zip python3-gi gir1.2-glib-2.0; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# The engine: start one only when nothing answers on the socket.
DOCKER=/usr/bin/docker
if ! $DOCKER info >/dev/null 2>&1; then
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
log "ready (test cache: $CACHE)"
