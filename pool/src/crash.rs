//! Deterministic crash points for tests. Setting `BLKDRV_CRASH_AT=<op>:<step>` makes the process
//! abort (no unwinding, no destructors: as close to `kill -9` as a process can do to itself)
//! when it reaches that step, so a test can crash every operation at every step.

/// Every crash point, in the order the operations reach them.
pub const STEPS: &[&str] = &[
    "create:intent",
    "create:object",
    "create:applied",
    "create:committed",
    "snapshot:intent",
    "snapshot:object",
    "commit:intent",
    "commit:object",
    "remove:intent",
    "remove:object",
    "mount:intent",
    "mount:mounted",
];

pub const ENV: &str = "BLKDRV_CRASH_AT";

/// Aborts the process if `BLKDRV_CRASH_AT` names `step`.
pub fn point(step: &'static str) {
    debug_assert!(STEPS.contains(&step), "unknown crash point {step}");
    if std::env::var(ENV).is_ok_and(|v| v == step) {
        eprintln!("blkdrv: crash point {step} reached, aborting");
        std::process::abort();
    }
}
