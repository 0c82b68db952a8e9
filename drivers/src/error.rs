//! The drivers crate's one error type. Every variant names the object and the operation, so a
//! message read in a log says what failed on what without a backtrace.

use crate::ObjectId;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("{op} {target}: {source}")]
    Sys {
        op: &'static str,
        target: String,
        #[source]
        source: nix::Error,
    },

    /// A kernel interface failure with no errno to show (device-mapper library errors).
    #[error("{op} {target}: {message}")]
    Kernel {
        op: &'static str,
        target: String,
        message: String,
    },

    #[error("`{command}` failed ({status}): {stderr}")]
    Command {
        command: String,
        status: String,
        stderr: String,
    },

    #[error("`{program}` is not installed (needed to {purpose}); run scripts/setup.sh")]
    MissingTool {
        program: String,
        purpose: &'static str,
    },

    #[error("layer object {id} not found on disk ({op})")]
    NotFound { id: ObjectId, op: &'static str },

    #[error("layer object {id} already exists on disk ({op})")]
    Exists { id: ObjectId, op: &'static str },

    #[error("layer object {id}: {op} refused: {reason}")]
    Refused {
        id: ObjectId,
        op: &'static str,
        reason: String,
    },

    /// A transient refusal: the object is in use (EBUSY from a leaked mount namespace). The
    /// pool retries later instead of failing the operation.
    #[error("layer object {id}: {op} deferred: {reason}")]
    Busy {
        id: ObjectId,
        op: &'static str,
        reason: String,
    },

    /// A key the driver does not take at all (unlike a bad value for a key it knows).
    #[error("invalid option {key}={value:?} for driver {driver}: unknown option (known: {known})")]
    UnknownOption {
        driver: &'static str,
        key: String,
        value: String,
        known: String,
    },

    #[error("invalid option {key}={value:?} for driver {driver}: {reason}")]
    BadOption {
        driver: &'static str,
        key: String,
        value: String,
        reason: String,
    },

    /// A `pool init` request whose parts do not go together (`--thinpool` with `--device`).
    #[error("driver {driver}: {reason}")]
    BadRequest {
        driver: &'static str,
        reason: String,
    },

    #[error("device {device}: {reason}")]
    Device { device: PathBuf, reason: String },

    #[error("pool identity mismatch on {device}: recorded {field}={recorded}, found {found}; the device may have been swapped or reformatted")]
    IdentityMismatch {
        device: PathBuf,
        field: String,
        recorded: String,
        found: String,
    },

    #[error("the {driver} driver does not support {what}")]
    Unsupported { driver: &'static str, what: String },

    #[error("driver {driver} is unavailable on this host: {reason}")]
    Unavailable { driver: String, reason: String },

    /// A driver's identity record that does not encode as text: a bug in the driver.
    #[error("encode the {driver} driver's pool record: {reason}")]
    Record {
        driver: &'static str,
        reason: String,
    },
}

pub type Result<T, E = DriverError> = std::result::Result<T, E>;

impl DriverError {
    /// A batch query that failed as a whole (one thin_ls, one zfs get), reported once per layer
    /// it was asked about, each naming its layer.
    pub fn for_each_layer<T>(
        op: &'static str,
        layers: &[crate::LayerChain],
        e: &DriverError,
    ) -> Vec<Result<T>> {
        let message = e.to_string();
        layers
            .iter()
            .map(|l| {
                Err(DriverError::Kernel {
                    op,
                    target: l.id.to_string(),
                    message: message.clone(),
                })
            })
            .collect()
    }

    pub fn io(op: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        DriverError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub fn sys(op: &'static str, target: impl std::fmt::Display, source: nix::Error) -> Self {
        DriverError::Sys {
            op,
            target: target.to_string(),
            source,
        }
    }

    /// The errno behind the error, when there is one (lets callers test for EBUSY, ENOSPC...).
    pub fn errno(&self) -> Option<nix::errno::Errno> {
        match self {
            DriverError::Sys { source, .. } => Some(*source),
            DriverError::Io { source, .. } => {
                source.raw_os_error().map(nix::errno::Errno::from_raw)
            }
            _ => None,
        }
    }
}
