//! The conformance suite: every case against every driver, each on a fresh loopback pool.
//!
//! Needs root (loop devices, mounts). `BLKDRV_TEST_DRIVERS=vfs,overlay` restricts the drivers.
//! A driver whose kernel support this host lacks (device-mapper, ZFS) is reported as ignored with
//! the command that runs it in the VM (`tests/vm/run`, which `scripts/test.sh` calls); inside the
//! VM (`BLKDRV_IN_VM=1`), or when anything else is missing, it fails with the reason.

mod backing;
mod campaign;
mod cases;
mod export;
mod hostile;
mod snapshots;

use cases::Needs;
use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    kit::child::maybe_run_child();
    snapshots::maybe_run_child();
    export::maybe_mount_child();
    let args = Arguments::from_args();
    let cfg = kit::config::get();
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
                &format!("conformance: {name}"),
                cases::CASES.len(),
                &format!(
                    "kernel support this host lacks ({})",
                    host.as_ref()
                        .err()
                        .map(|e| e.to_string())
                        .unwrap_or_default()
                ),
                &format!("{name}::"),
                " (scripts/test.sh does)",
            );
        }
        for case in cases::CASES {
            let run = case.run;
            let host = host.as_ref().map_err(|e| e.to_string()).cloned();
            let trial = Trial::test(format!("{name}::{}", case.name), move || {
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
            let ignored = vm_only || (case.needs == Needs::Loopback && !on_loopback);
            trials.push(trial.with_ignored_flag(ignored));
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    // Cleanup must hold even for failed tests: anything left behind fails the run.
    let leaks = kit::pool::leaks();
    if !leaks.is_empty() && !args.list {
        eprintln!(
            "conformance: left behind after the run:\n  {}",
            leaks.join("\n  ")
        );
        std::process::exit(101);
    }
    conclusion.exit();
}
