#!/usr/bin/env bash
# The main job on the embedded default (a sparse loopback pool): init a pool, import an image
# layer from a tar, reuse it from the build cache, snapshot it as a container layer, write into
# it, commit, and show the layer tree; then a quick side-by-side bench of every driver this host
# runs (each on its own loopback pool; report in target/bench-quick/). Runs in its own state dir
# and destroys every pool at the end, so it leaves no loop device or mount behind.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BLKDRV_BIN:-target/release/blkdrv}
DRIVER=${BLKDRV_DRIVER:-overlay}
WORK=$(mktemp -d /tmp/blkdrv-main-job.XXXXXX)
export BLKDRV_ROOT="$WORK/root" BLKDRV_CONFIG=/nonexistent
cleanup() { "$BIN" pool destroy --force >/dev/null 2>&1 || true; rm -rf "$WORK"; }
trap cleanup EXIT

say() { printf '\n$ %s\n' "$*"; "$@"; }

# A small rootfs-like tree as the image.
mkdir -p "$WORK/img/etc" "$WORK/img/usr/bin" "$WORK/img/var/log"
echo blkdrv-demo >"$WORK/img/etc/hostname"
head -c 8M /dev/urandom >"$WORK/img/usr/bin/app"
for i in $(seq 1 200); do echo "line $i" >"$WORK/img/var/log/f$i"; done
tar -C "$WORK/img" -cf "$WORK/image.tar" .

say "$BIN" pool init --driver "$DRIVER" --size 4G
say "$BIN" layer create base --from-tar "$WORK/image.tar"
say "$BIN" layer create base-again --from-tar "$WORK/image.tar"
say "$BIN" layer snapshot base web1
mkdir -p "$WORK/mnt"
say "$BIN" layer mount web1 "$WORK/mnt"
echo "written by the container" >"$WORK/mnt/etc/motd"
dd if=/dev/zero of="$WORK/mnt/var/log/app.log" bs=1M count=2 status=none
say "$BIN" layer umount web1
say "$BIN" layer commit web1
say "$BIN" layer ls --tree
say "$BIN" pool status
say "$BIN" layer diff web1 -o "$WORK/web1.tar"
say "$BIN" pool destroy
say "$BIN" bench --quick --dir "$WORK/bench" --out target/bench-quick
trap - EXIT
rm -rf "$WORK"
