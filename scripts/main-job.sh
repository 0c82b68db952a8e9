#!/usr/bin/env bash
# The main job on the embedded default (a sparse loopback pool, `--driver auto`): the story
# blkdrv exists for. Two images built from layer tars share their first three layers (base OS,
# packages, libraries) and differ in source code and entrypoint: the second reuses the three
# and adds two, and the sizes show it. A container of the first gets a named volume; a file is
# written to the volume and one to the writable layer (through `container mount`); removing the
# container drops the writable layer and keeps the volume; a new container sees the volume's
# data. Then a quick side-by-side bench of every driver this host runs (each on its own
# loopback pool; report in target/bench-quick/). Runs in its own state dir and destroys every
# pool at the end, so it leaves no loop device or mount behind.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BLKDRV_BIN:-target/release/blkdrv}
DRIVER=${BLKDRV_DRIVER:-auto}
WORK=$(mktemp -d /tmp/blkdrv-main-job.XXXXXX)
export BLKDRV_ROOT="$WORK/root" BLKDRV_CONFIG=/nonexistent BLKDRV_NO_PROGRESS=1
cleanup() {
    "$BIN" container rm --force shop-1 shop-2 >/dev/null 2>&1 || true
    "$BIN" pool destroy --force >/dev/null 2>&1 || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# Shows a command as one would type it (arguments with spaces or quotes in single quotes).
say() {
    local shown=() a special='[][[:space:]"()'"'"']'
    for a in "$@"; do
        if [[ $a =~ $special ]]; then shown+=("'${a//\'/\'\\\'\'}'"); else shown+=("$a"); fi
    done
    printf '\n$ %s\n' "${shown[*]}"
    "$@"
}
fail() { echo "main job: $*" >&2; exit 1; }

# One layer tar per build step, as `docker build` would make them. $1: name, the rest: files
# (PATH=SIZE of random data, or PATH:TEXT).
layer_tar() {
    local name=$1 dir="$WORK/build/$1"
    shift
    mkdir -p "$dir"
    for f in "$@"; do
        if [[ $f =~ ^[^:=]+=[0-9]+[KMG]?$ ]]; then
            mkdir -p "$dir/$(dirname "${f%%=*}")"
            head -c "${f#*=}" /dev/urandom >"$dir/${f%%=*}"
        else
            mkdir -p "$dir/$(dirname "${f%%:*}")"
            printf '%s\n' "${f#*:}" >"$dir/${f%%:*}"
        fi
    done
    tar -C "$dir" -cf "$WORK/$name.tar" .
}
layer_tar os etc/os-release:'ID=blkdrv-demo' etc/hostname:shop bin/sh=2M lib/libc.so.6=2M
layer_tar packages usr/bin/python3=3M usr/lib/python3/os.py:'# stdlib'
layer_tar libraries usr/lib/python3/site-packages/flask/__init__.py=1M
layer_tar shop-src app/shop.py:'print("shop")' app/templates/cart.html=512K
layer_tar shop-entry entrypoint:'exec python3 /app/shop.py'
layer_tar admin-src app/admin.py:'print("admin")' app/static/admin.js=768K
layer_tar admin-entry entrypoint:'exec python3 /app/admin.py'

say "$BIN" pool init --driver "$DRIVER" --size 4G

# Image 1, "shop": five layers, each with what made it (shown by `blkdrv history`).
build() { # image, step tar, parent, comment
    local parent=()
    [[ -n $3 ]] && parent=(--parent "$3")
    say "$BIN" layer create "$1" --from-tar "$WORK/$2.tar" "${parent[@]}" --comment "$4"
}
build shop-os os "" "FROM debian:bookworm-slim (base OS)"
build shop-pkgs packages shop-os "RUN apt-get install -y python3"
build shop-libs libraries shop-pkgs "RUN pip install flask"
build shop-src shop-src shop-libs "COPY shop/ /app"
build shop shop-entry shop-src "ENTRYPOINT [\"/entrypoint\"] (shop)"

# Image 2, "admin": the same three first layers are reused from the cache (same content on the
# same parent: nothing is stored twice), then its own two.
used_before=$("$BIN" --json pool status | sed -n 's/^ *"used": \([0-9]*\).*/\1/p' | head -1)
build admin-os os "" "FROM debian:bookworm-slim (base OS)"
build admin-pkgs packages admin-os "RUN apt-get install -y python3"
build admin-libs libraries admin-pkgs "RUN pip install flask"
build admin-src admin-src admin-libs "COPY admin/ /app"
build admin admin-entry admin-src "ENTRYPOINT [\"/entrypoint\"] (admin)"
for l in os pkgs libs; do
    [[ $("$BIN" --json layer inspect "admin-$l" | sed -n 's/^  "id": \([0-9]*\).*/\1/p') == \
       $("$BIN" --json layer inspect "shop-$l" | sed -n 's/^  "id": \([0-9]*\).*/\1/p') ]] ||
        fail "admin-$l is not shop-$l's layer"
done
used_after=$("$BIN" --json pool status | sed -n 's/^ *"used": \([0-9]*\).*/\1/p' | head -1)
echo "pool space used by image 2's own layers: $(( (used_after - used_before) / 1024 )) KiB"
say "$BIN" layer ls --tree
say "$BIN" history shop
say "$BIN" history admin

# A container of image 1 with a named volume for its data.
say "$BIN" container create shop-1 --image shop -v shop-data:/var/lib/shop
say "$BIN" container mount shop-1 "$WORK/rootfs"
echo "order 1: 2 carts" >"$WORK/rootfs/var/lib/shop/orders.db"   # into the volume
echo "session 42" >"$WORK/rootfs/tmp-session"                    # into the writable layer
grep -q python3 "$WORK/rootfs/entrypoint" || fail "the image's entrypoint is not in the root"
say "$BIN" container ls
say "$BIN" container umount shop-1
say "$BIN" container rm shop-1
say "$BIN" container ls --quiet
say "$BIN" volume ls
say "$BIN" volume inspect shop-data

# A new container sees the volume's data, and none of the old writable layer.
say "$BIN" container create shop-2 --image shop -v shop-data:/var/lib/shop
say "$BIN" container mount shop-2 "$WORK/rootfs"
say cat "$WORK/rootfs/var/lib/shop/orders.db"
grep -q "order 1" "$WORK/rootfs/var/lib/shop/orders.db" || fail "the volume lost its data"
[[ ! -e $WORK/rootfs/tmp-session ]] || fail "the old writable layer survived container rm"
say "$BIN" container rm --force shop-2
say "$BIN" volume rm shop-data
say "$BIN" pool destroy
say "$BIN" bench --quick --dir "$WORK/bench" --out target/bench-quick
trap - EXIT
rm -rf "$WORK"
