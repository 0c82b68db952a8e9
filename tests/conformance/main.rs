//! The conformance suite: every case against every driver, each on a fresh loopback pool.
//!
//! Needs root (loop devices, mounts). `BLKDRV_TEST_DRIVERS=vfs,overlay` restricts the drivers.
//! A driver whose kernel support this host lacks (device-mapper, ZFS) is reported as ignored with
//! the command that runs it in the VM (`tests/vm/run`, which `scripts/test.sh` calls); inside the
//! VM (`BLKDRV_IN_VM=1`), or when anything else is missing, it fails with the reason.

mod backing;
mod campaign;
mod cases;
mod containers;
mod export;
mod hostile;
mod snapshots;
mod volumes;

use cases::Needs;
use libtest_mimic::Arguments;

fn main() {
    kit::child::maybe_run_child();
    snapshots::maybe_run_child();
    export::maybe_mount_child();
    containers::maybe_run_child();
    let args = Arguments::from_args();
    let on_loopback = kit::pool::on_loopback();
    let not_here = cases::CASES
        .iter()
        .filter(|c| c.needs == Needs::Loopback && !on_loopback)
        .count();
    if not_here > 0 && !args.list {
        eprintln!(
            "conformance: {not_here} cases per driver need pools on loopback files (BLKDRV_TEST_DEVICES is set): ignored"
        );
    }
    let drivers = kit::trial::suite_drivers(
        &args,
        "conformance",
        cases::CASES.len(),
        |name| format!("{name}::"),
        " (scripts/test.sh does)",
    );
    let mut trials = Vec::new();
    for d in &drivers {
        for case in cases::CASES {
            let (name, run) = (d.name, case.run);
            let trial =
                kit::trial::driver_trial(d, format!("{name}::{}", case.name), move || run(name));
            let ignored = d.vm_only || (case.needs == Needs::Loopback && !on_loopback);
            trials.push(trial.with_ignored_flag(ignored));
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    kit::trial::conclude(&args, "conformance", conclusion);
}
