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
#   VM kernel; mkzfs installs the matching linux-headers itself, it depends on the kernel ABI);
#   debian-archive-keyring: signs the Debian contrib lists mkzfs fetches for OpenZFS;
#   protobuf-compiler: protoc, which containerd-snapshots runs at build time for the gRPC API;
#   rpm (rpm -qlp/--requires), shellcheck, vagrant (vagrant validate), systemd
#   (systemd-analyze verify): the package, script and unit checks of scripts/test.sh;
#   containerd, runc: the containerd tests (tests/containerd) run a private containerd with
#   blkdrv as its proxy snapshotter, and tests/vm/mkimage copies both (with ctr and
#   containerd-shim-runc-v2) into the VM.
PKGS=(util-linux e2fsprogs xfsprogs btrfs-progs libclang-dev pkg-config build-essential tar
      libdevmapper-dev thin-provisioning-tools lvm2 dmsetup
      qemu-system-x86 busybox-static kmod cpio xz-utils
      fdisk libtirpc3 libssl3 zlib1g debian-archive-keyring protobuf-compiler
      rpm shellcheck vagrant systemd
      containerd runc)

# OpenZFS for the VM comes from Debian `contrib`: tests/vm/mkzfs fetches it through an apt
# source list of its own, so the host's apt sources are left as they are. Earlier versions of
# this script added /etc/apt/sources.list.d/blkdrv-contrib.{sources,list}; a file it wrote (it
# starts with this header) is removed, once.
if [ "$(id -u)" -eq 0 ]; then
  for f in /etc/apt/sources.list.d/blkdrv-contrib.sources /etc/apt/sources.list.d/blkdrv-contrib.list; do
    if [ -f "$f" ] && head -n1 "$f" | grep -q '^# Written by blkdrv scripts/setup.sh'; then
      rm -f "$f"
      echo "setup: removed $f (tests/vm/mkzfs has its own apt source list now)"
    fi
  done
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
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
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
