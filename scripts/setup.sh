#!/usr/bin/env bash
# Installs every system package blkdrv needs, then builds the workspace. Debian (apt) and
# Fedora/RHEL (dnf), told apart by /etc/os-release (ID, ID_LIKE).
# Idempotent: a second run installs nothing new and rebuilds incrementally.
# `setup.sh --main-job` then runs the main job (scripts/main-job.sh) on a loopback pool.
set -euo pipefail
cd "$(dirname "$0")/.."

# The distribution family: ID, then ID_LIKE (Ubuntu says "debian", Rocky "rhel centos fedora").
# BLKDRV_OS_RELEASE: another file, for testing this choice.
os_release=${BLKDRV_OS_RELEASE:-/etc/os-release}
family="" ids=""
if [ -r "$os_release" ]; then
  # shellcheck disable=SC1090  # the host's file
  ids=$(. "$os_release" && echo "${ID:-} ${ID_LIKE:-}")
  for id in $ids; do
    case "$id" in
      debian|ubuntu) family=debian; break ;;
      fedora|rhel|centos) family=fedora; break ;;
    esac
  done
fi
case "$family" in
  debian|fedora) ;;
  *) echo "setup: unknown distribution ($os_release ID/ID_LIKE: ${ids:-none}): this script knows Debian (apt) and Fedora/RHEL (dnf)" >&2
     exit 1 ;;
esac

# Debian: host tools and build-time headers. Each group says why it is here:
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
#   rpm (rpm -qlp/--requires), shellcheck, vagrant (vagrant validate), vagrant-libvirt (without
#   it vagrant validate accepts any libvirt setting), systemd (systemd-analyze verify): the
#   package, script, Vagrantfile and unit checks of scripts/test.sh;
#   containerd, runc: the containerd tests (tests/containerd) run a private containerd with
#   blkdrv as its proxy snapshotter, and tests/vm/mkimage copies both (with ctr and
#   containerd-shim-runc-v2) into the VM.
PKGS=(util-linux e2fsprogs xfsprogs btrfs-progs libclang-dev pkg-config build-essential tar
      libdevmapper-dev thin-provisioning-tools lvm2 dmsetup
      qemu-system-x86 busybox-static kmod cpio xz-utils
      fdisk libtirpc3 libssl3 zlib1g debian-archive-keyring protobuf-compiler
      rpm shellcheck vagrant vagrant-libvirt systemd
      containerd runc)

# Fedora/RHEL: the same roles under Fedora's names, written from Fedora's package names
# (dnf could not be run where this was written: see README "Installing on Fedora / RHEL").
# Fedora's kernel has device-mapper with dm-thin and btrfs, so those suites run on the host
# (scripts/kernel-features.sh); the VM harness (tests/vm/run) boots a Debian kernel fetched
# with apt and does not run here, so its tools (qemu, busybox-static, the OpenZFS build
# packages) are not listed. Build and run time:
#   util-linux (losetup, wipefs, sfdisk), e2fsprogs, xfsprogs, btrfs-progs, tar;
#   clang-devel (libclang for bindgen), pkgconf-pkg-config, gcc, make;
#   device-mapper-devel (devmapper.pc and headers for the devicemapper crate),
#   device-mapper-persistent-data (thin_check, thin_ls), lvm2, device-mapper (dmsetup);
#   kmod (modprobe: scripts/kernel-features.sh --load); protobuf-compiler (protoc);
#   rpm (rpm -qlp --requires for scripts/package.sh), cpio (unpacking the RPM), binutils
#   (strip); systemd (systemd-analyze).
FEDORA_PKGS=(util-linux e2fsprogs xfsprogs btrfs-progs tar
             clang-devel pkgconf-pkg-config gcc make
             device-mapper-devel device-mapper-persistent-data lvm2 device-mapper
             kmod protobuf-compiler rpm cpio binutils systemd)
# Only for the checks and tests, installed one at a time because RHEL's own repositories lack
# some (ShellCheck and protobuf-compiler are in EPEL/CRB, vagrant in HashiCorp's, containerd
# in none): a missing one is named, and what needs it says so when it runs.
#   ShellCheck (scripts/lint-static.sh), vagrant and vagrant-libvirt (vagrant validate), dpkg
#   and dpkg-dev (dpkg-deb, and dpkg-shlibdeps for cargo deb's library Depends, in
#   scripts/package.sh), containerd, runc (tests/containerd).
FEDORA_TEST_PKGS=(ShellCheck vagrant vagrant-libvirt dpkg dpkg-dev containerd runc)

if [ "$family" = fedora ]; then
  dnf=dnf
  command -v dnf >/dev/null 2>&1 || dnf=yum
  missing=()
  for p in "${FEDORA_PKGS[@]}" "${FEDORA_TEST_PKGS[@]}"; do
    rpm -q --quiet "$p" 2>/dev/null || missing+=("$p")
  done
  if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ]; then
      echo "setup: need root to install: ${missing[*]}" >&2
      exit 1
    fi
    required=()
    for p in "${missing[@]}"; do
      [[ " ${FEDORA_TEST_PKGS[*]} " == *" $p "* ]] || required+=("$p")
    done
    if [ "${#required[@]}" -gt 0 ]; then
      "$dnf" install -y -q "${required[@]}"
    fi
    for p in "${missing[@]}"; do
      [[ " ${FEDORA_TEST_PKGS[*]} " == *" $p "* ]] || continue
      "$dnf" install -y -q "$p" >/dev/null 2>&1 \
        || echo "setup: warning: $dnf could not install $p (not in the enabled repositories?): the checks that need it fail" >&2
    done
  fi
fi

# OpenZFS for the VM comes from Debian `contrib`: tests/vm/mkzfs fetches it through an apt
# source list of its own, so the host's apt sources are left as they are. Earlier versions of
# this script added /etc/apt/sources.list.d/blkdrv-contrib.{sources,list}; a file it wrote (it
# starts with this header) is removed, once.
if [ "$family" = debian ] && [ "$(id -u)" -eq 0 ]; then
  for f in /etc/apt/sources.list.d/blkdrv-contrib.sources /etc/apt/sources.list.d/blkdrv-contrib.list; do
    if [ -f "$f" ] && head -n1 "$f" | grep -q '^# Written by blkdrv scripts/setup.sh'; then
      rm -f "$f"
      echo "setup: removed $f (tests/vm/mkzfs has its own apt source list now)"
    fi
  done
fi

missing=()
if [ "$family" = debian ]; then
  for p in "${PKGS[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
fi
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
