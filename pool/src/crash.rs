//! Deterministic crash points for tests. Setting `BLKDRV_CRASH_AT=<op>:<step>` makes the process
//! abort (no unwinding, no destructors: as close to `kill -9` as a process can do to itself)
//! when it reaches that step, so a test can crash every operation at every step.
//! `BLKDRV_STALL_AT=<op>:<step>` instead makes it wait there (up to a minute) until a signal
//! arrives, so a test can deliver SIGTERM at a known step.

/// Every crash point, in the order the operations reach them.
pub const STEPS: &[&str] = &[
    "create:intent",
    "create:object",
    "create:mounted",
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

/// The crash points of containerd's snapshot operations, apart from [`STEPS`] (whose cases
/// drive each step through the CLI). Commit and remove reach the layer's own `commit:object`
/// and `remove:object` too.
pub const SNAPSHOT_STEPS: &[&str] = &[
    "prepare:intent",
    "prepare:object",
    "snapshot-commit:intent",
    "snapshot-remove:intent",
];

/// The crash points of volumes and containers, apart from [`STEPS`]. Their layers reach the
/// layer steps too (`commit:object`, `remove:object`).
pub const CONTAINER_STEPS: &[&str] = &[
    "volume-create:intent",
    "volume-create:object",
    "volume-remove:intent",
    "container-create:intent",
    "container-create:object",
    "container-create:volumes",
    "container-create:filled",
    "container-mount:intent",
    "container-mount:partial",
    "container-umount:intent",
    "container-umount:partial",
    "container-commit:intent",
    "container-commit:object",
    "container-remove:intent",
    "container-remove:layer",
];

pub const ENV: &str = "BLKDRV_CRASH_AT";
pub const ENV_STALL: &str = "BLKDRV_STALL_AT";

/// Aborts the process if `BLKDRV_CRASH_AT` names `step`.
pub fn point(step: &'static str) {
    debug_assert!(
        STEPS.contains(&step) || SNAPSHOT_STEPS.contains(&step) || CONTAINER_STEPS.contains(&step),
        "unknown crash point {step}"
    );
    if std::env::var(ENV).is_ok_and(|v| v == step) {
        eprintln!("blkdrv: crash point {step} reached, aborting");
        std::process::abort();
    }
    if std::env::var(ENV_STALL).is_ok_and(|v| v == step) {
        eprintln!("blkdrv: stall point {step} reached, waiting for a signal");
        let until = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while crate::signal::pending().is_none() && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}
