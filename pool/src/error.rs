//! The pool crate's one error type. Variants carry the object (pool, layer, path) and the
//! operation; a failed rollback keeps both the cause and the rollback failure.

use blkdrv_drivers::DriverError;
use std::path::PathBuf;

fn pending_note(pending: Option<blkdrv_drivers::Bytes>) -> String {
    match pending {
        Some(p) if p.0 > 0 => format!(" and {p} freed by removed layers not reusable yet"),
        _ => String::new(),
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    /// Bad input from the user (exit code 2 in the CLI).
    #[error("{0}")]
    Invalid(String),

    #[error("pool {pool:?} not found under {root}; create it with `blkdrv pool init {pool}`")]
    PoolNotFound { pool: String, root: PathBuf },

    /// The pool's directory is there but its store is gone (deleted by hand): nothing can be
    /// listed or opened, only removed.
    #[error("pool {pool:?}: its store {path} is missing, so its layers cannot be read; remove what is left with `blkdrv pool destroy --force {pool}`")]
    StoreMissing { pool: String, path: PathBuf },

    /// SIGINT or SIGTERM: the operation stopped at a safe point and undid what it had begun.
    #[error("interrupted by {signal}; the operation was rolled back")]
    Interrupted { signal: &'static str },

    #[error("pool {pool:?} already exists under {root}; use `blkdrv pool destroy {pool}` first")]
    PoolExists { pool: String, root: PathBuf },

    #[error("layer {0:?} not found")]
    LayerNotFound(String),

    #[error("layer {0:?} already exists")]
    LayerExists(String),

    #[error("volume {0:?} not found")]
    VolumeNotFound(String),

    #[error("volume {0:?} already exists")]
    VolumeExists(String),

    #[error("container {0:?} not found")]
    ContainerNotFound(String),

    #[error("container {0:?} already exists")]
    ContainerExists(String),

    /// containerd's NotFound: no snapshot has this key.
    #[error("snapshot {0:?} not found")]
    SnapshotNotFound(String),

    /// containerd's AlreadyExists: the key (or commit name) is taken.
    #[error("snapshot {0:?} already exists")]
    SnapshotExists(String),

    /// containerd's FailedPrecondition; its GC relies on "remove" being in the message.
    #[error("cannot remove snapshot {key:?}: {children} snapshot(s) depend on it")]
    SnapshotHasChildren { key: String, children: usize },

    #[error("{op} {layer:?} refused: {reason}")]
    Refused {
        op: &'static str,
        layer: String,
        reason: String,
    },

    #[error("pool {pool:?}: not enough free {what} space for a new layer: {available} free of {total} ({pct:.1}%){}, minimum is {min_pct}% (--min-free)", pending_note(*.pending))]
    LowSpace {
        pool: String,
        what: &'static str,
        available: blkdrv_drivers::Bytes,
        /// Freed by removed layers but still not reusable (after waiting for it).
        pending: Option<blkdrv_drivers::Bytes>,
        total: blkdrv_drivers::Bytes,
        pct: f64,
        min_pct: u8,
    },

    #[error("pool {pool:?} is busy: another blkdrv process holds {lock} (pid {holder})")]
    Busy {
        pool: String,
        lock: PathBuf,
        holder: String,
    },

    #[error("pool store {path} is unreadable or corrupt ({op}): {source}; move it aside or restore it from a backup")]
    CorruptStore {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    #[error("pool store {path}: {op}: {source}")]
    Store {
        path: PathBuf,
        op: &'static str,
        #[source]
        source: rusqlite::Error,
    },

    #[error("config {path}: {reason}")]
    Config { path: PathBuf, reason: String },

    /// Importing or exporting a layer tar: a hostile or malformed entry, an unreadable stream,
    /// a tree a tar cannot carry (input errors), or the filesystem failing.
    #[error(transparent)]
    Tar(#[from] layertar::Error),

    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    // Boxed: driver errors are large and most results never carry one.
    #[error("{op} layer {layer:?}: {source}")]
    Driver {
        op: &'static str,
        layer: String,
        #[source]
        source: Box<DriverError>,
    },

    #[error("pool {pool:?}: {source}")]
    Backing {
        pool: String,
        #[source]
        source: Box<DriverError>,
    },

    /// Another process holds the pool's loop device: destroying now would leave it attached.
    #[error("pool {pool:?} not destroyed: {} (stop that, or use --force)", .what.join("; "))]
    Held { pool: String, what: Vec<String> },

    /// The pool is gone but a loop device of it stays attached while its holder keeps it open.
    #[error("pool {pool:?} destroyed, but {}", .what.join("; "))]
    StillHeld { pool: String, what: Vec<String> },

    /// `pool activate --all`: the pools that did not come up (each reported with its error).
    #[error("{} of {total} pool(s) not activated: {}", .failed.len(), .failed.join(", "))]
    NotActivated { total: usize, failed: Vec<String> },

    #[error("{cause}; rolling back also failed: {rollback}")]
    Rollback {
        cause: Box<PoolError>,
        rollback: Box<PoolError>,
    },
}

pub type Result<T, E = PoolError> = std::result::Result<T, E>;

impl PoolError {
    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PoolError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub fn driver(op: &'static str, layer: impl Into<String>, source: DriverError) -> Self {
        PoolError::Driver {
            op,
            layer: layer.into(),
            source: Box::new(source),
        }
    }

    pub fn backing(pool: impl std::fmt::Display, source: DriverError) -> Self {
        PoolError::Backing {
            pool: pool.to_string(),
            source: Box::new(source),
        }
    }

    /// True for errors caused by what the user asked (CLI exit code 2), not by the system.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            PoolError::Invalid(_)
                | PoolError::PoolNotFound { .. }
                | PoolError::StoreMissing { .. }
                | PoolError::PoolExists { .. }
                | PoolError::LayerNotFound(_)
                | PoolError::LayerExists(_)
                | PoolError::VolumeNotFound(_)
                | PoolError::VolumeExists(_)
                | PoolError::ContainerNotFound(_)
                | PoolError::ContainerExists(_)
                | PoolError::Refused { .. }
                | PoolError::Config { .. }
        ) || matches!(self, PoolError::Tar(e) if e.is_input_error())
    }

    /// An error about a path the user gave: a path that cannot exist (too long, not found,
    /// through a non-directory) is bad input; anything else is a failure of the operation.
    pub fn user_path(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        let path = path.into();
        match source.raw_os_error() {
            Some(nix::libc::ENOENT)
            | Some(nix::libc::ENAMETOOLONG)
            | Some(nix::libc::ENOTDIR)
            | Some(nix::libc::ELOOP) => {
                PoolError::Invalid(format!("{op} {}: {source}", path.display()))
            }
            _ => PoolError::io(op, path, source),
        }
    }

    /// The number of the signal that interrupted the operation (exit status 128 + it).
    pub fn interrupted_by(&self) -> Option<i32> {
        match self {
            PoolError::Interrupted { signal } => signal
                .parse::<nix::sys::signal::Signal>()
                .ok()
                .map(|s| s as i32),
            PoolError::Rollback { cause, .. } => cause.interrupted_by(),
            _ => None,
        }
    }

    /// Attaches a rollback failure to the error that caused the rollback.
    pub fn with_rollback(self, rollback: std::result::Result<(), PoolError>) -> PoolError {
        match rollback {
            Ok(()) => self,
            Err(r) => PoolError::Rollback {
                cause: Box::new(self),
                rollback: Box::new(r),
            },
        }
    }
}
