#!/bin/sh
# Which of the kernel-dependent drivers (devicemapper: dm-thin; zfs: OpenZFS) this kernel can
# run, so the test command runs their suites on the host and leaves only the rest to the VM
# (tests/vm/run, VM_NATIVE). POSIX sh: the test VM's guest (dash and busybox) runs it too.
#
#   scripts/kernel-features.sh [--load]
#
# One line per driver: "<driver> yes" or "<driver> no <why>". --load first asks modprobe
# for the modules (as root; a Fedora host loads dm_mod and dm_thin_pool on demand, so an idle
# host has neither loaded). Exit 0 in both cases; 2 for usage errors.
#
# The checks follow what the tests themselves look at (tests/drivers/devicemapper.rs,
# drivers/src/devicemapper/factory.rs: /sys/class/misc/device-mapper; tests/drivers/zfs.rs and
# drivers/src/zfs: /dev/zfs and "zfs" in /proc/filesystems), plus the thin-pool target, which
# every devicemapper pool needs and a kernel can lack while it has device-mapper.
set -u

load=0
case "${1:-}" in
  "") ;;
  --load) load=1 ;;
  -h|--help) sed -n '2,10s/^# \{0,1\}//p' "$0"; exit 0 ;;
  *) echo "kernel-features.sh: unknown argument '$1' (known: --load)" >&2; exit 2 ;;
esac

# Loads a module quietly when asked to and able to; nothing else depends on it succeeding.
try_load() {
  [ "$load" = 1 ] || return 0
  [ "$(id -u)" = 0 ] || return 0
  command -v modprobe >/dev/null 2>&1 || return 0
  modprobe -q "$1" >/dev/null 2>&1 || true
}

# Whether the running kernel has module $1 built in or installed (not necessarily loaded).
module_known() {
  m=$1 dir=/lib/modules/$(uname -r)
  # modules.builtin and modules.dep name files with dashes or underscores as built.
  alt=$(printf '%s' "$m" | tr '_-' '-_')
  for f in "$dir/modules.builtin" "$dir/modules.dep"; do
    [ -r "$f" ] || continue
    if grep -Eq "(^|/)($m|$alt)\\.ko" "$f"; then return 0; fi
  done
  return 1
}

dm_thin() {
  try_load dm_thin_pool
  if [ ! -e /sys/class/misc/device-mapper ]; then
    if module_known dm_mod; then
      echo "devicemapper no device-mapper is not loaded (modprobe dm_mod, or run with --load as root)"
    else
      echo "devicemapper no this kernel has no device-mapper (no /sys/class/misc/device-mapper)"
    fi
    return
  fi
  # Loaded (or built in) thin-pool target: /sys/module shows either, dmsetup asks the kernel.
  if [ -d /sys/module/dm_thin_pool ]; then echo "devicemapper yes"; return; fi
  if command -v dmsetup >/dev/null 2>&1 && dmsetup targets 2>/dev/null | grep -q '^thin-pool'; then
    echo "devicemapper yes"; return
  fi
  if module_known dm_thin_pool || module_known dm-thin-pool; then
    # The kernel loads it on the first thin-pool table (request_module), as root.
    echo "devicemapper yes"; return
  fi
  echo "devicemapper no device-mapper without the thin-pool target (no dm_thin_pool module)"
}

zfs() {
  try_load zfs
  if [ -c /dev/zfs ] && grep -qw zfs /proc/filesystems 2>/dev/null; then
    echo "zfs yes"
  elif module_known zfs; then
    echo "zfs no the zfs module is installed but not loaded (modprobe zfs, or run with --load as root)"
  else
    echo "zfs no no OpenZFS kernel module (no /dev/zfs)"
  fi
}

dm_thin
zfs
