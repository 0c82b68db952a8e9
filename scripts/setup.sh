#!/usr/bin/env bash
# Installs every system package blkdrv needs on a Debian host, then builds the workspace.
# Idempotent: a second run installs nothing new and rebuilds incrementally.
# `setup.sh --main-job` then runs the main job (scripts/main-job.sh) on a loopback pool.
set -euo pipefail
cd "$(dirname "$0")/.."

# Host tools and build-time headers. Each group says why it is here:
#   util-linux, e2fsprogs, xfsprogs, btrfs-progs: mkfs/mount/losetup for the pool backings;
#   libclang-dev, pkg-config: bindgen inside loopdev-3 (loop ioctls from linux/loop.h);
#   tar: building test fixtures in the conformance suite;
#   libdevmapper-dev: headers the devicemapper crate binds at build time (pure ioctls at run time);
#   thin-provisioning-tools, lvm2, dmsetup: thin_check/thin_ls, LVM thin pools (run inside the VM);
#   qemu-system-x86, busybox-static, kmod, cpio, xz-utils: the VM test harness (tests/vm/run),
#   which boots a stock Debian kernel with device-mapper for the tests this kernel cannot run;
#   fdisk (sfdisk), libtirpc3, libssl3, zlib1g: the VM's OpenZFS tools (tests/vm/mkzfs copies
#   them and their libraries into the guest; build-essential compiles the ZFS module for the
#   VM kernel; mkzfs installs the matching linux-headers itself, it depends on the kernel ABI).
PKGS=(util-linux e2fsprogs xfsprogs btrfs-progs libclang-dev pkg-config build-essential tar
      libdevmapper-dev thin-provisioning-tools lvm2 dmsetup
      qemu-system-x86 busybox-static kmod cpio xz-utils
      fdisk libtirpc3 libssl3 zlib1g)

# Debian `contrib` (OpenZFS: zfs-dkms, zfsutils-linux, for the VM harness) from the same mirrors
# and suites as the enabled Debian `main` entries, in a file of our own: deb822
# (blkdrv-contrib.sources) for deb822 entries, one-line (blkdrv-contrib.list) for one-line ones.
# Suites that already have contrib are left out (apt warns about duplicates). Prints "changed"
# when it wrote or removed a file.
contrib_sources() {
  local d=/etc/apt/sources.list.d f ext new changed=0 files=()
  [ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
  for f in "$d"/*.list "$d"/*.sources; do
    [ -f "$f" ] || continue
    case "$f" in */blkdrv-contrib.*) continue ;; esac
    files+=("$f")
  done
  [ ${#files[@]} -gt 0 ] || return 0
  for ext in sources list; do
    new=$(awk -v want="$ext" '
      function flush(   i, n, u, s, k, key) {
        if (!nf) return
        if (tolower(f["enabled"]) == "no" || (" " f["types"] " ") !~ / deb / || f["uris"] !~ /debian/) { nf = 0; delete f; return }
        n = split(f["uris"], u, /[ \t]+/); split(f["suites"], s, /[ \t]+/)
        if ((" " f["components"] " ") ~ / contrib /) { for (i = 1; i <= n; i++) for (k in s) has[norm(u[i]) " " s[k]] = 1 }
        else if ((" " f["components"] " ") ~ / main /) { cand[++nc] = "822"; for (i = 0; i < nf; i++) st[nc, i] = line[i]; stn[nc] = nf; suites[nc] = f["suites"]; uris[nc] = f["uris"] }
        nf = 0; delete f
      }
      function norm(u) { sub(/\/+$/, "", u); return u }
      FNR == 1 { flush() }
      FILENAME ~ /\.sources$/ {
        if ($0 ~ /^#/) next
        if ($0 ~ /^[ \t]*$/) { flush(); next }
        if ($0 ~ /^[ \t]/) { line[nf++] = $0; next }     # continuation (e.g. an inline Signed-By key)
        k = tolower($0); sub(/:.*/, "", k); v = $0; sub(/^[^:]*:[ \t]*/, "", v)
        f[k] = v; line[nf++] = $0; next
      }
      {                                                  # one-line format
        sub(/#.*/, ""); if ($1 != "deb") next
        l = $0; opts = ""
        if (match(l, /\[[^]]*\]/)) { opts = substr(l, RSTART, RLENGTH) " "; l = substr(l, 1, RSTART - 1) substr(l, RSTART + RLENGTH) }
        n = split(l, w, /[ \t]+/); if (w[1] == "") { for (i = 1; i < n; i++) w[i] = w[i + 1]; n-- }
        if (w[2] !~ /debian/) next
        comps = " "; for (i = 4; i <= n; i++) comps = comps w[i] " "
        if (comps ~ / contrib /) has[norm(w[2]) " " w[3]] = 1
        else if (comps ~ / main /) { cand[++nc] = "list"; one[nc] = "deb " opts w[2] " " w[3] " contrib"; uris[nc] = w[2]; suites[nc] = w[3] }
      }
      END {
        flush()
        for (c = 1; c <= nc; c++) {
          if ((want == "sources") != (cand[c] == "822")) continue
          n = split(uris[c], u, /[ \t]+/); m = split(suites[c], s, /[ \t]+/); keep = ""
          for (k = 1; k <= m; k++) { dup = 0; for (i = 1; i <= n; i++) if ((norm(u[i]) " " s[k]) in has) dup = 1; if (!dup && !((uris[c] " " s[k]) in done)) { keep = keep (keep == "" ? "" : " ") s[k]; done[uris[c] " " s[k]] = 1 } }
          if (keep == "") continue
          if (cand[c] == "list") { print one[c]; continue }
          if (out++) print ""
          for (i = 0; i < stn[c]; i++) {
            l = st[c, i]; k = tolower(l); sub(/:.*/, "", k)
            if (l ~ /^[ \t]/) { if (!skip) print l; continue }
            skip = (k == "components" || k == "types" || k == "suites" || k == "enabled")
            if (k == "types") print "Types: deb"
            else if (k == "suites") print "Suites: " keep
            else if (k == "components") print "Components: contrib"
            else if (!skip) print l
          }
        }
      }' "${files[@]}")
    f=$d/blkdrv-contrib.$ext
    if [ -z "$new" ]; then
      if [ -e "$f" ]; then rm -f "$f"; changed=1; fi
    elif [ ! -f "$f" ] || [ "$(cat "$f")" != "# Written by blkdrv scripts/setup.sh: Debian contrib for OpenZFS (tests/vm/mkzfs)."$'\n'"$new" ]; then
      printf '# Written by blkdrv scripts/setup.sh: Debian contrib for OpenZFS (tests/vm/mkzfs).\n%s\n' "$new" > "$f"
      changed=1
    fi
  done
  [ "$changed" = 0 ] || echo changed
}

update_lists=0
if [ "$(id -u)" -eq 0 ]; then
  [ -z "$(contrib_sources)" ] || update_lists=1
  # The entry exists but its lists were never fetched (or were cleaned).
  apt-cache show zfs-dkms >/dev/null 2>&1 || update_lists=1
fi

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: need root to install: ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  update_lists=0
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
if [ "$update_lists" = 1 ]; then
  # Only ZFS in the VM needs contrib: a failure here is a warning, mkzfs reports it if it matters.
  apt-get update -qq || echo "setup: warning: apt-get update failed; Debian contrib (OpenZFS) may be unavailable" >&2
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found: install the Rust toolchain (rustup) first" >&2
  exit 1
fi
if [ "${BLKDRV_SETUP_NO_BUILD:-0}" != 1 ]; then
  cargo build --release --workspace --locked
fi
if [ "${1:-}" = "--main-job" ]; then
  exec ./scripts/main-job.sh
fi
