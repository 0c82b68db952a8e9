#!/usr/bin/env bash
# Provisions a blkdrv test VM (vagrant/Vagrantfile; Fedora or Debian guest, as root):
#   1. a Rust toolchain (rustup, with rustfmt and clippy for scripts/test.sh) if cargo is missing;
#   2. scripts/setup.sh from the source tree: system packages (dnf or apt) and a release build;
#      then blkdrv installed: the RPM or .deb of scripts/package.sh when it makes one, else the
#      binary to /usr/local/bin;
#   3. what this kernel runs natively (scripts/kernel-features.sh --load);
#   4. `blkdrv storage-setup` with vagrant/docker-storage-setup (its DEVS set to the first extra
#      disk): an LVM thin pool; a btrfs pool on the second extra disk;
#   5. the test suite (scripts/test.sh; BLKDRV_PROVISION_TESTS=0 skips it) and a quick bench;
#   6. where the results are.
# Running it again (`vagrant provision`) gives the disks back first (storage-setup --reset,
# pool destroy), so each run starts from blank disks. Exit status: the first failing step's.
#
# Environment (the Vagrantfile sets it): BLKDRV_SRC (the source tree in the guest),
# BLKDRV_DISK_SERIALS (the extra disks' serials, libvirt), BLKDRV_DISK_GB (their size: how the
# disks are found without serials, VirtualBox), BLKDRV_PROVISION_TESTS (1), BLKDRV_RESULTS
# (/home/vagrant/blkdrv-results).
set -euo pipefail

SRC=${BLKDRV_SRC:-/home/vagrant/blkdrv}
RESULTS=${BLKDRV_RESULTS:-/home/vagrant/blkdrv-results}
DISK_GB=${BLKDRV_DISK_GB:-8}
SERIALS=${BLKDRV_DISK_SERIALS:-blkdrv-disk0 blkdrv-disk1}
RUN_TESTS=${BLKDRV_PROVISION_TESTS:-1}
SYSCONFIG=/etc/sysconfig/docker-storage-setup
BTRFS_POOL=btrfs
started=$SECONDS

say() { printf '\n== provision: %s (at %d s)\n' "$*" "$((SECONDS - started))"; }
die() { echo "provision: error: $*" >&2; exit 1; }
rc=0
fail() { # <status> <what>: remembered; the steps after it still run
  echo "provision: $2 failed (exit $1)" >&2
  [ "$rc" -ne 0 ] || rc=$1
}

[ "$(id -u)" -eq 0 ] || die "run as root (the Vagrantfile's provisioner is privileged)"
[ -f "$SRC/scripts/setup.sh" ] || die "no source tree at $SRC (BLKDRV_SRC; the Vagrantfile rsyncs it)"
[[ $DISK_GB =~ ^[1-9][0-9]*$ ]] || die "BLKDRV_DISK_GB must be a positive integer (got '$DISK_GB')"
mkdir -p "$RESULTS"
cd "$SRC"

# --- 1. Rust ----------------------------------------------------------------------------------
export PATH=/root/.cargo/bin:$PATH
if ! command -v cargo >/dev/null 2>&1; then
  say "installing Rust (rustup, minimal profile with rustfmt and clippy)"
  if command -v dnf >/dev/null 2>&1; then
    dnf install -y -q rustup
    rustup-init -y -q --profile minimal --component rustfmt,clippy
  else
    # Debian bookworm packages no rustup: the installer script.
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends curl ca-certificates
    curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y -q --profile minimal --component rustfmt,clippy
  fi
fi
cargo --version

# --- 2. packages, build, install ----------------------------------------------------------------
say "scripts/setup.sh (system packages, cargo build --release)"
./scripts/setup.sh 2>&1 | tee "$RESULTS/setup.log"

say "installing blkdrv"
installed=""
if [ -x scripts/package.sh ]; then
  marker=$(mktemp)
  if PROFILE=release ./scripts/package.sh > "$RESULTS/package.log" 2>&1; then
    if command -v dnf >/dev/null 2>&1; then
      pkg=$(find target -name 'blkdrv*.rpm' -newer "$marker" | head -n1)
      if [ -n "$pkg" ] && dnf install -y -q "./$pkg"; then installed="RPM $pkg"; fi
    else
      pkg=$(find target -name 'blkdrv*.deb' -newer "$marker" | head -n1)
      if [ -n "$pkg" ] && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "./$pkg"; then installed="package $pkg"; fi
    fi
    [ -n "$installed" ] || echo "provision: no package installed from scripts/package.sh: installing the binary instead" >&2
  else
    echo "provision: scripts/package.sh failed (see $RESULTS/package.log): installing the binary instead" >&2
  fi
  rm -f "$marker"
fi
if [ -z "$installed" ]; then
  install -m 0755 target/release/blkdrv /usr/local/bin/blkdrv
  installed="target/release/blkdrv as /usr/local/bin/blkdrv"
fi
echo "installed: $installed"
blkdrv --version
if systemctl cat blkdrv-activate.service >/dev/null 2>&1; then
  # Pools come back after a reboot of the VM.
  systemctl enable blkdrv-activate.service || fail $? "systemctl enable blkdrv-activate.service"
fi

# --- 3. kernel features -----------------------------------------------------------------------------
say "kernel features (scripts/kernel-features.sh --load)"
./scripts/kernel-features.sh --load | tee "$RESULTS/kernel-features.txt"

# --- 4. pools on the two extra disks ----------------------------------------------------------------
# The extra disks: by serial (libvirt), else the partition-less whole disks of DISK_GB
# (VirtualBox). Never the root disk: it has partitions, and its size is another.
disks=()
for s in $SERIALS; do
  if [ -b "/dev/disk/by-id/virtio-$s" ]; then disks+=("$(readlink -f "/dev/disk/by-id/virtio-$s")"); fi
done
if [ "${#disks[@]}" -lt 2 ]; then
  disks=()
  while read -r name size type; do
    [ "$type" = disk ] || continue
    case "$name" in /dev/zram*|/dev/loop*|/dev/sr*) continue ;; esac
    [ "$size" = $((DISK_GB * 1024 * 1024 * 1024)) ] || continue
    [ "$(lsblk -nro NAME "$name" | wc -l)" -eq 1 ] || continue
    disks+=("$name")
  done < <(lsblk -dnbpo NAME,SIZE,TYPE)
fi
[ "${#disks[@]}" -ge 2 ] || die "found ${#disks[@]} of the two extra ${DISK_GB} GiB disks (lsblk below); VirtualBox: vagrant up with VAGRANT_EXPERIMENTAL=disks
$(lsblk -dpo NAME,SIZE,TYPE,SERIAL)"
lvm_disk=${disks[0]} btrfs_disk=${disks[1]}
echo "extra disks: $lvm_disk (LVM thin pool, storage-setup), $btrfs_disk (btrfs pool)"

if [ -f "$RESULTS/.pools-made" ]; then
  say "giving the disks back from the last provisioning"
  blkdrv storage-setup --reset || fail $? "blkdrv storage-setup --reset"
  blkdrv pool destroy "$BTRFS_POOL" --force || fail $? "blkdrv pool destroy $BTRFS_POOL"
  # pool destroy leaves the btrfs signature on the device (measured in the test VM), and
  # pool init refuses a device with one: this disk is ours, blank it.
  wipefs -a -q "$btrfs_disk" || fail $? "wipefs -a $btrfs_disk"
  rm -f "$RESULTS/.pools-made"
fi

say "blkdrv storage-setup on $lvm_disk ($SYSCONFIG from vagrant/docker-storage-setup)"
sample=vagrant/docker-storage-setup
[ -f "$sample" ] || die "$sample is missing (the sample container-storage-setup file)"
mkdir -p "$(dirname "$SYSCONFIG")"
# The sample names no disk of this VM: DEVS becomes the first extra disk.
{ grep -v '^[[:space:]]*\(export[[:space:]]\+\)\?DEVS=' "$sample"
  printf '# Set by vagrant/provision.sh: the first extra disk of this VM.\nDEVS="%s"\n' "$lvm_disk"; } > "$SYSCONFIG"
touch "$RESULTS/.pools-made"
if blkdrv storage-setup --json > "$RESULTS/storage-setup.json"; then
  blkdrv pool ls
  lvs -o lv_name,vg_name,lv_size,data_percent,lv_profile 2>/dev/null | tee "$RESULTS/lvs.txt" || true
else
  fail $? "blkdrv storage-setup"
fi

say "btrfs pool on $btrfs_disk"
blkdrv pool init "$BTRFS_POOL" --driver btrfs --device "$btrfs_disk" --json > "$RESULTS/btrfs-pool.json" \
  || fail $? "blkdrv pool init $BTRFS_POOL --driver btrfs --device $btrfs_disk"
blkdrv pool ls | tee "$RESULTS/pools.txt" || true

# --- 5. the test suite and a quick bench ---------------------------------------------------------
if [ "$RUN_TESTS" = 1 ]; then
  say "test suite (scripts/test.sh; log $RESULTS/test.log)"
  set +e
  ./scripts/test.sh > "$RESULTS/test.log" 2>&1
  trc=$?
  set -e
  tail -n 25 "$RESULTS/test.log"
  [ "$trc" -eq 0 ] || fail "$trc" "scripts/test.sh"
else
  say "test suite skipped (BLKDRV_PROVISION_TESTS=0)"
fi

say "quick bench (blkdrv bench --quick; every driver this kernel runs, loopback pools)"
blkdrv bench --quick --out "$RESULTS/bench" > "$RESULTS/bench.log" 2>&1 || fail $? "blkdrv bench --quick"
tail -n 20 "$RESULTS/bench.log"

# --- 6. where the results are ---------------------------------------------------------------------
say "done in $((SECONDS - started)) s, exit $rc"
cat <<EOF
Results in $RESULTS (vagrant ssh -c 'ls $RESULTS'):
  kernel-features.txt     what this kernel runs natively
  storage-setup.json      blkdrv storage-setup on $lvm_disk ($SYSCONFIG)
  btrfs-pool.json         the btrfs pool on $btrfs_disk; pools.txt: blkdrv pool ls
  test.log                scripts/test.sh (its last line: tests: N passed, M failed)
  bench/, bench.log       blkdrv bench --quick (bench.txt, bench.json, bench.svg)
  setup.log, package.log  scripts/setup.sh, scripts/package.sh
EOF
exit "$rc"
