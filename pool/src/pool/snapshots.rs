//! containerd's snapshot operations on the pool (see [`crate::snapshot`]). Each follows the
//! pool's intent/work/completion protocol, so a server killed between the steps is reconciled
//! by the next writer like any other.

use super::Pool;
use crate::error::{PoolError, Result};
use crate::snapshot::{LabelUpdate, Labels, SnapshotInfo, SnapshotUsage};
use blkdrv_drivers::MountSpec;

fn todo(op: &str) -> PoolError {
    PoolError::Invalid(format!("snapshot {op}: not implemented yet"))
}

/// Options of the mounts a snapshot hands out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ExportPolicy {
    /// Let device nodes in the layer be opened through the mount (no `nodev`).
    pub dev: bool,
}

impl Pool {
    /// Prepare: a new active snapshot `key` on the committed snapshot `parent` (or empty).
    /// Errors: `SnapshotExists` for a used key, `SnapshotNotFound` for a missing parent,
    /// `Refused` for a parent that is not committed.
    pub fn snapshot_prepare(
        &mut self,
        key: &str,
        parent: Option<&str>,
        labels: Labels,
        policy: ExportPolicy,
    ) -> Result<Vec<MountSpec>> {
        let _ = (key, parent, labels, policy);
        Err(todo("prepare"))
    }

    /// View: a read-only snapshot `key` of the committed `parent`, sharing its layer.
    pub fn snapshot_view(
        &mut self,
        key: &str,
        parent: &str,
        labels: Labels,
        policy: ExportPolicy,
    ) -> Result<Vec<MountSpec>> {
        let _ = (key, parent, labels, policy);
        Err(todo("view"))
    }

    /// Mounts of an active snapshot or a view. Committed snapshots are refused (`Refused`).
    pub fn snapshot_mounts(&mut self, key: &str, policy: ExportPolicy) -> Result<Vec<MountSpec>> {
        let _ = (key, policy);
        Err(todo("mounts"))
    }

    /// Commit: the active snapshot `key` becomes the committed snapshot `name` with `labels`
    /// (which replace the active's); its usage is stored. `SnapshotExists` if `name` is used.
    pub fn snapshot_commit(
        &mut self,
        name: &str,
        key: &str,
        labels: Labels,
    ) -> Result<SnapshotInfo> {
        let _ = (name, key, labels);
        Err(todo("commit"))
    }

    /// Remove a snapshot and its layer (a view: only the record). `SnapshotHasChildren` while
    /// others are prepared or viewed on it.
    pub fn snapshot_remove(&mut self, key: &str) -> Result<()> {
        let _ = key;
        Err(todo("remove"))
    }

    /// Update the labels of `key` (updated = now; created never changes).
    pub fn snapshot_update(
        &mut self,
        key: &str,
        labels: Labels,
        update: LabelUpdate,
    ) -> Result<SnapshotInfo> {
        let _ = (key, labels, update);
        Err(todo("update"))
    }

    /// Cleanup: finish deferred removals.
    pub fn snapshot_cleanup(&mut self) -> Result<()> {
        Err(todo("cleanup"))
    }

    /// Stat. Works on read-only handles.
    pub fn snapshot_stat(&self, key: &str) -> Result<SnapshotInfo> {
        let _ = key;
        Err(todo("stat"))
    }

    /// Every snapshot made through this API (Walk; filters are the caller's business).
    pub fn snapshot_list(&self) -> Result<Vec<SnapshotInfo>> {
        Err(todo("list"))
    }

    /// Usage: stored at commit for committed snapshots; measured for active ones; 0 for views.
    pub fn snapshot_usage(&self, key: &str) -> Result<SnapshotUsage> {
        let _ = key;
        Err(todo("usage"))
    }
}
