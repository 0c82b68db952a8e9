#!/usr/bin/env bash
# The whole test suite: installs what it needs, checks formatting and lints, runs unit tests,
# the CLI contract tests and the conformance suite (every driver this host can run), then
# checks that nothing (loop device, mount) was left behind. Needs root. `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" -ne 0 ]; then
  echo "test.sh: the suite creates loop devices and mounts; run it as root" >&2
  exit 1
fi
BLKDRV_SETUP_NO_BUILD=1 ./scripts/setup.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
echo "== cargo test (unit, CLI contract, conformance)"
cargo test --workspace --locked --no-fail-fast
echo "== benches build"
cargo bench --workspace --locked --no-run -q

echo "== leak check"
leaks=$(losetup -a | grep -E '/tmp/blkdrv-(conformance|cli-tests)' || true)
mounts=$(findmnt -rn -o TARGET | grep -E '^/tmp/blkdrv-(conformance|cli-tests)' || true)
if [ -n "$leaks$mounts" ]; then
  echo "test.sh: tests left behind:" >&2
  echo "$leaks$mounts" >&2
  exit 1
fi
echo "no loop devices or mounts left behind"
