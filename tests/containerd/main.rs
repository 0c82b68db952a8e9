//! Real containerd and runc on blkdrv pools: per driver, a pool, `blkdrv snapshotter serve` on
//! it and a private containerd with the server as its `blkdrv` proxy snapshotter; then the test
//! image (tests/kit/ociimage.rs) is imported and run through containerd, containerd's GC removes
//! it again, and the pool is left with no layers and a clean `pool check`.
//!
//! In the same run and the same containerd (its root on the same disk as the pool's loopback
//! file), `ctr images import` and `ctr run` are timed for blkdrv and for containerd's own
//! `overlayfs` and `native` snapshotters, each in its own namespace, interleaved round by round
//! (`BLKDRV_CTR_ROUNDS`, 3 on the host, 1 in the VM; the median is reported). The table is
//! printed and written to `containerd-timings.json` in `$BLKDRV_VM_OUT` (the VM) or the target
//! directory. The cases run one at a time (each has its own containerd and server), so that
//! their timings do not measure each other.
//!
//! `reference::overlayfs` runs the same checks on containerd's own overlayfs snapshotter only:
//! when it fails, the image, containerd or runc is at fault, not blkdrv.
//!
//! Needs root, containerd, ctr, runc (scripts/setup.sh installs them). devicemapper and zfs
//! cases are ignored on a host without them and run in the VM (`tests/vm/run containerd`).

mod flow;
mod server;

use libtest_mimic::{Arguments, Failed, Trial};
use std::sync::Mutex;

/// One snapshotter's timings in one case.
#[derive(Debug, Clone)]
pub struct Timing {
    /// The pool driver under blkdrv, or "-" for containerd's own snapshotters' reference case.
    pub driver: String,
    /// `blkdrv`, `overlayfs` or `native`.
    pub snapshotter: String,
    pub import_ms: Vec<f64>,
    pub run_ms: Vec<f64>,
}

/// Timings of every case, written out after the run.
pub static TIMINGS: Mutex<Vec<Timing>> = Mutex::new(Vec::new());

/// Held by every case for its whole run: the cases take one at a time whatever
/// `--test-threads` says, so that a case's timings are not another case's load (each runs its
/// own containerd, server and containers).
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// Runs `case` under [`ONE_AT_A_TIME`] (a panicking case poisons nothing the next one needs).
fn serial(case: impl FnOnce() -> kit::TestResult + std::panic::UnwindSafe) -> kit::TestResult {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    kit::trial::guarded(case)
}

fn main() {
    kit::child::maybe_run_child();
    let args = Arguments::from_args();
    let mut trials = vec![Trial::test("reference::overlayfs", || {
        needs_root()?;
        serial(flow::reference)
    })];
    for d in &kit::trial::suite_drivers(
        &args,
        "containerd",
        1,
        |_| "containerd".into(),
        " (scripts/test.sh does)",
    ) {
        let name = d.name;
        trials.push(kit::trial::driver_trial(
            d,
            format!("blkdrv::{name}"),
            move || serial(move || flow::blkdrv(name)),
        ));
    }
    let conclusion = libtest_mimic::run(&args, trials);
    if !args.list {
        flow::report_timings();
    }
    kit::trial::conclude(&args, "containerd", conclusion);
}

fn needs_root() -> Result<(), Failed> {
    if nix::unistd::geteuid().is_root() {
        Ok(())
    } else {
        Err(Failed::from(
            "needs root (containerd, runc, loop devices, mounts): run as root",
        ))
    }
}
