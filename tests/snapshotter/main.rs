//! The gRPC contract suite: containerd's snapshots API as containerd's own snapshotters and its
//! metadata layer expect it, against `blkdrv snapshotter serve` (a child process) on a fresh
//! pool of every driver the conformance suite runs.
//!
//! Needs root. `BLKDRV_TEST_DRIVERS=vfs,overlay` restricts the drivers; a driver whose kernel
//! support this host lacks (device-mapper, ZFS) is reported as ignored with the command that
//! runs it in the VM, as in the conformance suite.

// The helpers hand back the RPC's `tonic::Status` (176 bytes) for the cases to check its code.
#![allow(clippy::result_large_err)]

mod cases;
mod fixture;

use libtest_mimic::Arguments;

fn main() {
    kit::child::maybe_run_child();
    let args = Arguments::from_args();
    let drivers = kit::trial::suite_drivers(
        &args,
        "snapshotter",
        cases::CASES.len(),
        |_| "snapshotter".into(),
        " (its lines in tests/vm/suites)",
    );
    let mut trials = Vec::new();
    for d in &drivers {
        for &(case, run) in cases::CASES {
            let name = d.name;
            trials.push(kit::trial::driver_trial(
                d,
                format!("{name}::{case}"),
                move || run(name),
            ));
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    kit::trial::conclude(&args, "snapshotter", conclusion);
}
