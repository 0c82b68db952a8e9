//! Mounts another process performs (containerd, the runc shim): the pool hands out the driver's
//! [`MountSpec`]s instead of mounting. The pool records no mount: it cannot see or undo mounts
//! in other processes, so the caller owns them (containerd unmounts before Remove/Commit).

use super::{ExportPolicy, Pool};
use crate::error::{PoolError, Result};
use crate::layer::{LayerRecord, LayerState};
use blkdrv_drivers::{MountFlags, MountMode, MountSpec};

impl Pool {
    /// The mounts of layer `name` for another process: read-write for an active layer unless
    /// `read_only`; committed layers only read-only.
    pub fn export(
        &self,
        name: &str,
        read_only: bool,
        policy: ExportPolicy,
    ) -> Result<Vec<MountSpec>> {
        let rec = self.lookup(name)?;
        self.export_record(&rec, name, read_only, policy)
    }

    /// [`Pool::export`] of a record; `what` names it in errors.
    pub(crate) fn export_record(
        &self,
        rec: &LayerRecord,
        what: &str,
        read_only: bool,
        policy: ExportPolicy,
    ) -> Result<Vec<MountSpec>> {
        let mode = match rec.state {
            LayerState::Active if !read_only => MountMode::ReadWrite,
            LayerState::Active | LayerState::Committed => MountMode::ReadOnly,
            s => {
                return Err(PoolError::Refused {
                    op: "export",
                    layer: what.to_string(),
                    reason: format!("layer is {s}"),
                })
            }
        };
        let chain = self.chain(rec)?;
        // Never nosuid: these are container root filesystems (README, "Security").
        let flags = MountFlags {
            nodev: !policy.dev,
            nosuid: false,
        };
        self.driver
            .export(&chain, mode, flags)
            .map_err(|e| PoolError::driver("export", what, e))
    }
}
