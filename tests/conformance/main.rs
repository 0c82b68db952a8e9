//! The conformance suite: every case against every driver, each on a fresh loopback pool.
//!
//! Needs root (loop devices, mounts). `BLKDRV_TEST_DRIVERS=vfs,overlay` restricts the drivers.
//! A driver whose kernel support this host lacks (device-mapper, ZFS) is reported as ignored with
//! the command that runs it in the VM (`tests/vm/run`, which `scripts/test.sh` calls); inside the
//! VM (`BLKDRV_IN_VM=1`), or when anything else is missing, it fails with the reason.

mod campaign;
mod cases;
mod child;
#[path = "../common/mod.rs"]
mod common;
mod harness;
mod hostile;

use libtest_mimic::{Arguments, Failed, Trial};

fn main() {
    child::maybe_run_child();
    let args = Arguments::from_args();
    let selected: Option<Vec<String>> = std::env::var("BLKDRV_TEST_DRIVERS")
        .ok()
        .map(|s| s.split(',').map(str::to_string).collect());
    let in_vm = std::env::var_os("BLKDRV_IN_VM").is_some();
    let mut trials = Vec::new();
    for f in blkdrv_drivers::registry::all() {
        let name = f.name();
        if selected
            .as_ref()
            .is_some_and(|s| !s.iter().any(|d| d == name))
        {
            continue;
        }
        let vm_only = !in_vm && blkdrv_drivers::sys::host::only_kernel_missing(&f.requirements());
        if vm_only && !args.list {
            eprintln!(
                "conformance: {name}: {} cases need kernel support this host lacks ({}): run `tests/vm/run {name}::` (scripts/test.sh does)",
                cases::CASES.len(),
                f.check_host().err().map(|e| e.to_string()).unwrap_or_default()
            );
        }
        for (case, run) in cases::CASES {
            let run = *run;
            let host = f.check_host();
            let trial = Trial::test(format!("{name}::{case}"), move || {
                if !nix::unistd::geteuid().is_root() {
                    return Err(Failed::from(
                        "needs root (loop devices, mounts): run as root",
                    ));
                }
                if let Err(e) = &host {
                    return Err(Failed::from(format!("{e}")));
                }
                let r = std::panic::catch_unwind(|| run(name));
                match r {
                    Ok(r) => r,
                    Err(p) => Err(Failed::from(format!(
                        "panicked: {}",
                        p.downcast_ref::<String>()
                            .cloned()
                            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                            .unwrap_or_default()
                    ))),
                }
            });
            trials.push(trial.with_ignored_flag(vm_only));
        }
    }
    let conclusion = libtest_mimic::run(&args, trials);
    // Cleanup must hold even for failed tests: anything left behind fails the run.
    let leaks = harness::leaks();
    if !leaks.is_empty() && !args.list {
        eprintln!(
            "conformance: left behind after the run:\n  {}",
            leaks.join("\n  ")
        );
        std::process::exit(101);
    }
    conclusion.exit();
}
