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

use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    kit::child::maybe_run_child();
    let args = Arguments::from_args();
    let cfg = kit::config::get();
    let mut trials = Vec::new();
    for f in blkdrv_drivers::registry::all() {
        let name = f.name();
        if cfg
            .drivers
            .as_ref()
            .is_some_and(|s| !s.iter().any(|d| d == name))
        {
            continue;
        }
        let host = f.check_host();
        let vm_only = kit::trial::vm_only(!blkdrv_drivers::sys::host::only_kernel_missing(
            &f.requirements(),
        ));
        if vm_only {
            kit::trial::announce_vm_only(
                &args,
                &format!("snapshotter: {name}"),
                cases::CASES.len(),
                &format!(
                    "kernel support this host lacks ({})",
                    host.as_ref()
                        .err()
                        .map(|e| e.to_string())
                        .unwrap_or_default()
                ),
                &format!("snapshotter {name}::"),
                "",
            );
        }
        for &(case, run) in cases::CASES {
            let host = host.as_ref().map_err(|e| e.to_string()).cloned();
            let trial = Trial::test(format!("{name}::{case}"), move || {
                if !nix::unistd::geteuid().is_root() {
                    return Err(Failed::from(
                        "needs root (loop devices, mounts): run as root",
                    ));
                }
                if let Err(e) = &host {
                    return Err(Failed::from(e.as_str()));
                }
                kit::trial::guarded(|| run(name))
            });
            trials.push(trial.with_ignored_flag(vm_only));
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    let leaks = kit::pool::leaks();
    if !leaks.is_empty() && !args.list {
        eprintln!(
            "snapshotter: left behind after the run:\n  {}",
            leaks.join("\n  ")
        );
        std::process::exit(101);
    }
    conclusion.exit();
}
