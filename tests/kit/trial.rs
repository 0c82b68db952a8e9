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
