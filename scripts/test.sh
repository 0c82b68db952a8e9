#!/usr/bin/env bash
# The whole test suite: installs what it needs, checks formatting and lints, runs unit tests,
# the CLI contract tests and the conformance suite (every driver this host can run), checks
# that nothing (loop device, mount) was left behind, and runs the device-mapper and ZFS suites
# in VMs (tests/vm/run: one boot per group of tests/vm/suites). Needs root. `.ci/run` calls this.
#
# One build serves the host and the VMs (cargo profile `ci`). The VMs are the long pole (each
# qemu is one emulated CPU), so they start as soon as their binaries are built and run in the
# background while clippy and the host tests run; their log is printed at the end.
# Every step runs even if an earlier one failed (fmt and the build excepted); the exit status
# is the first failing step's. The last line is "tests: N passed, M failed".
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "test.sh: the suite creates loop devices and mounts; run it as root" >&2
  exit 1
fi
PROFILE=ci
CI_DIR=target/ci-run
mkdir -p "$CI_DIR"
started=$SECONDS
phase() { printf '== %s (at %d s)\n' "$*" "$((SECONDS - started))"; }

phase "setup (scripts/setup.sh)"
BLKDRV_SETUP_NO_BUILD=1 ./scripts/setup.sh

phase "cargo fmt --check"
cargo fmt --all -- --check

rc=0
fail() { # <status> <what>: remembers the first failure
  echo "test.sh: $2 failed (exit $1)" >&2
  [ "$rc" -ne 0 ] || rc=$1
}

# Drivers this kernel cannot run (device-mapper with dm-thin, ZFS) are tested for real in a VM
# with a stock Debian kernel; their host runs below report them as ignored. Those it can run
# (a Fedora host: device-mapper; one with OpenZFS: zfs) run in the host's cargo test, and the
# VM gets only the suite lines the host lacks (VM_NATIVE; tests/vm/run --plan lists them): none
# left, no VM. VM_NATIVE set by the caller overrides the detection (VM_NATIVE= : all in the VM).
phase "kernel features (scripts/kernel-features.sh --load)"
features=$(./scripts/kernel-features.sh --load)
while read -r driver has why; do
  if [ "$has" = yes ]; then echo "  $driver: this kernel has it: its suites run on the host"
  else echo "  $driver: not on this kernel ($why)"; fi
done <<<"$features"
if [ -z "${VM_NATIVE+set}" ]; then
  VM_NATIVE=$(awk '$2 == "yes" { print $1 }' <<<"$features" | paste -sd, -)
else
  for d in ${VM_NATIVE//,/ }; do
    grep -qx "$d yes" <<<"$features" \
      || echo "test.sh: warning: VM_NATIVE names $d, which this kernel lacks: its suites are ignored on the host and left out of the VM" >&2
  done
fi
export VM_NATIVE
echo "  VM_NATIVE=$VM_NATIVE (tests/vm/run leaves their suite lines to the host)"
plan_out=$(tests/vm/run --plan) || { echo "test.sh: tests/vm/run --plan failed" >&2; exit 2; }
vm_plan=$(sed -n 's/^plan: //p' <<<"$plan_out")
untested=""
# Why this host cannot boot the VM, if it cannot: tests/vm/mkimage fetches a Debian kernel
# through apt, and qemu runs it.
vm_unable=""
for c in apt-get apt-cache dpkg-deb dpkg-query qemu-system-x86_64; do
  command -v "$c" >/dev/null 2>&1 || vm_unable+="${vm_unable:+, }no $c"
done
vm_pid=""
vm_log=$CI_DIR/vm.log
if [ -z "$vm_plan" ]; then
  phase "VM suites: none needed (the host kernel runs every suite natively, VM_NATIVE=$VM_NATIVE)"
elif [ "${BLKDRV_TEST_VM:-1}" = 0 ] || [ -n "$vm_unable" ]; then
  why="BLKDRV_TEST_VM=0"
  [ -n "$vm_unable" ] && why="this host cannot run the test VM ($vm_unable: tests/vm/mkimage needs Debian's apt for the guest kernel)"
  phase "VM suites SKIPPED: $why"
  untested=$(printf '%s\n%s\n' "$untested" "$vm_plan" | sed '/^$/d')
else
  phase "build for the VM suites (tests/vm/run --build-only, profile $PROFILE)"
  VM_PROFILE=$PROFILE tests/vm/run --build-only
  phase "VM suites started in the background (log: $vm_log)"
  # Its own process group is not needed: the trap below stops it (its traps stop qemu).
  VM_PROFILE=$PROFILE VM_SETUP_DONE=1 tests/vm/run --no-build > "$vm_log" 2>&1 &
  vm_pid=$!
fi
# shellcheck disable=SC2317  # invoked by the traps
stop_vm() { [ -z "$vm_pid" ] || { kill "$vm_pid" 2>/dev/null || true; wait "$vm_pid" 2>/dev/null || true; }; }
trap 'stop_vm' EXIT
trap 'echo "test.sh: interrupted" >&2; exit 130' INT
trap 'echo "test.sh: terminated" >&2; exit 143' TERM

phase "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings || fail $? "cargo clippy"

phase "cargo test (unit, CLI contract, conformance; profile $PROFILE)"
log=$CI_DIR/host-tests.log
set +e
cargo test --workspace --profile "$PROFILE" --locked --no-fail-fast 2>&1 | tee "$log"
host_rc=${PIPESTATUS[0]}
set -e
[ "$host_rc" -eq 0 ] || fail "$host_rc" "cargo test"
# One closing line for the whole run: the per-binary lines end with doc-test runs of 0 tests.
summary=$(awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
               END { printf "%d passed, %d failed", p, f }' "$log")
echo "host tests: $summary"

phase "benches build"
cargo build --workspace --profile "$PROFILE" --locked --bench '*' -q || fail $? "benches build"

phase "static checks: shellcheck, vagrant validate (scripts/lint-static.sh)"
./scripts/lint-static.sh || fail $? "static checks"

phase "packages: RPM and .deb built and checked (scripts/package.sh --check)"
PROFILE=$PROFILE ./scripts/package.sh --check || fail $? "packages"

phase "leak check"
leaks=$(losetup -a | grep -E '/tmp/blkdrv-(conformance|cli-tests)' || true)
mounts=$(findmnt -rn -o TARGET | grep -E '^/tmp/blkdrv-(conformance|cli-tests)' || true)
# overlay's short links for exported layers (drivers/src/overlay.rs): one whose layer is gone
# is a pool destroyed without its driver.
links=$(find /run/blkdrv/l -xtype l 2>/dev/null || true)
if [ -n "$leaks$mounts$links" ]; then
  echo "test.sh: tests left behind:" >&2
  echo "$leaks$mounts$links" >&2
  fail 1 "leak check"
else
  echo "no loop devices, mounts or dangling overlay links left behind"
fi

vm_summary="0 passed, 0 failed"
if [ -n "$vm_pid" ]; then
  phase "waiting for the VM suites"
  set +e
  wait "$vm_pid"
  vm_rc=$?
  set -e
  vm_pid=""
  phase "VM suites (tests/vm/run; log $vm_log)"
  cat "$vm_log"
  vm_summary=$(sed -n 's/^vm: \([0-9]* passed, [0-9]* failed\).*/\1/p' "$vm_log" | tail -n1)
  if [ "$vm_rc" -ne 0 ]; then
    echo "tests: VM suites failed (exit $vm_rc): ${vm_summary:-no summary}"
    fail "$vm_rc" "VM suites"
    vm_summary=${vm_summary:-0 passed, 0 failed}
  fi
fi
phase "done"
if [ -n "$untested" ]; then
  echo "tests: UNTESTED in this run ($(wc -l <<<"$untested") lines of tests/vm/suites: this kernel lacks what they need, or the spare disks of @devices/@lvm, and the VM did not run):"
  while IFS= read -r l; do echo "  $l"; done <<<"$untested"
fi
total=$(printf '%s\n%s\n' "$summary" "$vm_summary" | awk '{p += $1; f += $3} END {printf "%d passed, %d failed", p, f}')
echo "tests: $total"
exit "$rc"
