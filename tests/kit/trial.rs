//! Cases as libtest-mimic trials: the one wrapper that turns a panic into a failure (cases
//! written in the assert style, and `Result` cases calling code that may panic), and the VM
//! gate for cases that need what only some kernels have (device-mapper, ZFS).

use crate::TestResult;
use libtest_mimic::{Arguments, Failed, Trial};
use std::panic::UnwindSafe;

/// Runs `f`, turning a panic into a failure that carries the panic's message.
pub fn guarded(f: impl FnOnce() -> TestResult + UnwindSafe) -> TestResult {
    std::panic::catch_unwind(f).unwrap_or_else(|p| {
        Err(Failed::from(format!(
            "panicked: {}",
            p.downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default()
        )))
    })
}

/// A trial from a case in the assert style (it fails by panicking).
pub fn trial(name: &str, run: fn()) -> Trial {
    Trial::test(name, move || {
        guarded(|| {
            run();
            Ok(())
        })
    })
}

/// A trial from a `Result` case that may also panic.
pub fn result_trial(name: &str, run: fn() -> TestResult) -> Trial {
    Trial::test(name, move || guarded(run))
}

/// True when the cases that need what `available` says are to be reported as ignored: outside
/// the VM on a host that lacks it. Inside the VM (`BLKDRV_IN_VM`) they run, and fail if it is
/// missing there.
pub fn vm_only(available: bool) -> bool {
    !crate::config::get().in_vm && !available
}

/// The one line a binary prints (unless listing) for cases it reports as ignored because
/// this kernel lacks something: "{what}: N cases need {lacking}: run `tests/vm/run
/// {filter}`{note}".
pub fn announce_vm_only(
    args: &Arguments,
    what: &str,
    cases: usize,
    lacking: &str,
    filter: &str,
    note: &str,
) {
    if !args.list {
        eprintln!("{what}: {cases} cases need {lacking}: run `tests/vm/run {filter}`{note}");
    }
}

/// A case of a VM-only target.
pub type Case = fn() -> TestResult;

/// What a VM-only target needs from the kernel, and how it says so.
pub struct VmTarget {
    /// The test target's name; `tests/vm/run NAME` runs it.
    pub target: &'static str,
    /// Whether this kernel has what the cases need.
    pub available: fn() -> bool,
    /// What the cases need, for the "ignored" line ("device-mapper, which this kernel lacks").
    pub lacking: &'static str,
    /// Appended to the line.
    pub note: &'static str,
    /// Inside a VM booted without it: each case fails with this reason instead of its own
    /// error.
    pub missing: Option<&'static str>,
}

impl VmTarget {
    /// Runs `cases` (ignored outside the VM on a host without what they need), then exits.
    pub fn run(&self, cases: &[(&str, Case)]) -> ! {
        let args = Arguments::from_args();
        let available = self.available;
        let vm_only = vm_only(available());
        if vm_only {
            announce_vm_only(
                &args,
                self.target,
                cases.len(),
                self.lacking,
                self.target,
                self.note,
            );
        }
        let missing = self.missing;
        let trials = cases
            .iter()
            .map(|&(name, run)| {
                Trial::test(name, move || {
                    if let Some(reason) = missing.filter(|_| !available()) {
                        return Err(reason.into());
                    }
                    guarded(run)
                })
                .with_ignored_flag(vm_only)
            })
            .collect();
        libtest_mimic::run(&args, trials).exit()
    }
}

/// A driver of the registry as a per-driver suite sees it.
pub struct SuiteDriver {
    pub name: &'static str,
    /// What this host lacks for it (`check_host`), if anything.
    pub missing: Option<String>,
    /// Its cases are reported as ignored here: only the VM has its kernel support.
    pub vm_only: bool,
}

/// The registry's drivers a per-driver suite runs on (`BLKDRV_TEST_DRIVERS` selects), with the
/// one line for each whose `cases` run only in the VM (`tests/vm/run {filter(name)}{note}`).
pub fn suite_drivers(
    args: &Arguments,
    suite: &str,
    cases: usize,
    filter: impl Fn(&str) -> String,
    note: &str,
) -> Vec<SuiteDriver> {
    let cfg = crate::config::get();
    let mut out = Vec::new();
    for f in blkdrv_drivers::registry::all() {
        let name = f.name();
        if cfg
            .drivers
            .as_ref()
            .is_some_and(|s| !s.iter().any(|d| d == name))
        {
            continue;
        }
        let missing = f.check_host().err().map(|e| e.to_string());
        let vm_only = vm_only(!blkdrv_drivers::sys::host::only_kernel_missing(
            &f.requirements(),
        ));
        if vm_only {
            announce_vm_only(
                args,
                &format!("{suite}: {name}"),
                cases,
                &format!(
                    "kernel support this host lacks ({})",
                    missing.clone().unwrap_or_default()
                ),
                &filter(name),
                note,
            );
        }
        out.push(SuiteDriver {
            name,
            missing,
            vm_only,
        });
    }
    out
}

/// A case of driver `d` as a trial: fails without root or when the host lacks what the driver
/// needs; ignored where `d` runs only in the VM.
pub fn driver_trial(
    d: &SuiteDriver,
    name: String,
    run: impl FnOnce() -> TestResult + UnwindSafe + Send + 'static,
) -> Trial {
    let missing = d.missing.clone();
    Trial::test(name, move || {
        if !nix::unistd::geteuid().is_root() {
            return Err(Failed::from(
                "needs root (loop devices, mounts): run as root",
            ));
        }
        if let Some(e) = &missing {
            return Err(Failed::from(e.as_str()));
        }
        guarded(run)
    })
    .with_ignored_flag(d.vm_only)
}

/// Ends a suite: cleanup must hold even for failed cases, so anything left behind (mounts,
/// loop devices of the kit's pools) fails the run.
pub fn conclude(args: &Arguments, suite: &str, conclusion: libtest_mimic::Conclusion) -> ! {
    let leaks = crate::pool::leaks();
    if !leaks.is_empty() && !args.list {
        eprintln!(
            "{suite}: left behind after the run:\n  {}",
            leaks.join("\n  ")
        );
        std::process::exit(101);
    }
    conclusion.exit()
}
