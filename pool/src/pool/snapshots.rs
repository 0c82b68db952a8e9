//! containerd's snapshot operations on the pool (see [`crate::snapshot`]). Each follows the
//! pool's intent/work/completion protocol, so a server killed between the steps is reconciled
//! by the next writer like any other:
//! - Prepare records the snapshot row with its `creating` layer in one transaction; a dead
//!   Prepare is rolled back with the layer (the row goes with it), a finished one is complete.
//! - Commit renames the row in the transaction that marks the layer `committing`; the commit is
//!   rolled forward, and its usage lands on the row with the layer's.
//! - Remove deletes the row in the transaction that marks the layer `removing`; the removal is
//!   rolled forward (or deferred while the driver reports the object busy).
//!
//! Snapshot layers belong to containerd ([`LayerOwner::Containerd`]): they have no name, so the
//! CLI's layer commands never reach them, and the snapshot table is the only way to them.

use super::layers::{Make, NewLayer};
use super::recovery::Removal;
use super::types::RemoveOutcome;
use super::Pool;
use crate::error::{PoolError, Result};
use crate::layer::{LayerKind, LayerOwner, LayerRecord, LayerState};
use crate::snapshot::{
    apply_label_update, LabelUpdate, Labels, SnapshotInfo, SnapshotKey, SnapshotKind,
    SnapshotRecord, SnapshotUsage, Timestamp,
};
use blkdrv_drivers::{DriverError, MountSpec, ObjectId};

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
        let key = SnapshotKey::new("key", key)?;
        // Before any work: containerd's unpacker takes AlreadyExists as "already unpacked".
        self.ensure_key_free(&key)?;
        let parent = parent
            .map(|p| self.committed_snapshot(p, "prepare", &key))
            .transpose()?;
        self.ensure_space()?;
        let now = Timestamp::now();
        let row = |layer: ObjectId| SnapshotRecord {
            key: key.as_str().to_string(),
            kind: SnapshotKind::Active,
            layer,
            parent: parent.as_ref().map(|(p, _)| p.key.clone()),
            labels: labels.clone(),
            created: now,
            updated: now,
            usage: None,
        };
        let (rec, _) = self.begin_create(
            NewLayer {
                label: key.as_str(),
                pending_name: None,
                parent: parent.as_ref().map(|(_, l)| l.id),
                kind: LayerKind::Container,
                digest: None,
                limit: None,
                steps: ["prepare:intent", "prepare:object"],
                make: Make::Layer,
            },
            |t, rec| {
                t.set_owner(rec.id, LayerOwner::Containerd)?;
                t.insert_snapshot(&row(rec.id))
            },
        )?;
        // The mounts before the completion: a layer containerd cannot mount is no snapshot, and
        // an answer of "failed" must leave nothing behind (the key stays free for a retry).
        let active = LayerRecord {
            state: LayerState::Active,
            ..rec.clone()
        };
        let done = self
            .export_record(&active, key.as_str(), false, policy)
            .and_then(|mounts| {
                self.store.tx("record prepare done", |t| {
                    t.set_state(rec.id, LayerState::Active)
                })?;
                Ok(mounts)
            });
        done.map_err(|e| e.with_rollback(self.undo_create(rec.id)))
    }

    /// View: a read-only snapshot `key` of the committed `parent`, sharing its layer.
    pub fn snapshot_view(
        &mut self,
        key: &str,
        parent: &str,
        labels: Labels,
        policy: ExportPolicy,
    ) -> Result<Vec<MountSpec>> {
        let key = SnapshotKey::new("key", key)?;
        self.ensure_key_free(&key)?;
        let (parent, layer) = self.committed_snapshot(parent, "view", &key)?;
        // The mounts first: a parent the driver cannot export leaves no row behind.
        let mounts = self.export_record(&layer, key.as_str(), true, policy)?;
        let now = Timestamp::now();
        self.store.tx("record view", |t| {
            t.insert_snapshot(&SnapshotRecord {
                key: key.as_str().to_string(),
                kind: SnapshotKind::View,
                layer: layer.id,
                parent: Some(parent.key.clone()),
                labels,
                created: now,
                updated: now,
                usage: None,
            })
        })?;
        Ok(mounts)
    }

    /// Mounts of an active snapshot or a view. Committed snapshots are refused (`Refused`).
    pub fn snapshot_mounts(&mut self, key: &str, policy: ExportPolicy) -> Result<Vec<MountSpec>> {
        let (row, layer) = self.snapshot_row(key)?;
        match row.kind {
            SnapshotKind::Active => self.export_record(&layer, key, false, policy),
            SnapshotKind::View => self.export_record(&layer, key, true, policy),
            SnapshotKind::Committed => Err(PoolError::Refused {
                op: "mounts",
                layer: key.to_string(),
                reason: "snapshot is committed (prepare or view a snapshot on it)".into(),
            }),
        }
    }

    /// Commit: the active snapshot `key` becomes the committed snapshot `name` with `labels`
    /// (which replace the active's); its usage is stored. `SnapshotExists` if `name` is used.
    pub fn snapshot_commit(
        &mut self,
        name: &str,
        key: &str,
        labels: Labels,
    ) -> Result<SnapshotInfo> {
        let name = SnapshotKey::new("name", name)?;
        self.ensure_key_free(&name)?;
        let (row, layer) = self.snapshot_row(key)?;
        if row.kind != SnapshotKind::Active || layer.state != LayerState::Active {
            return Err(PoolError::Refused {
                op: "commit",
                layer: key.to_string(),
                reason: format!(
                    "snapshot is {} (only active snapshots can be committed)",
                    row.kind
                ),
            });
        }
        let now = Timestamp::now();
        self.commit_record(&layer, "snapshot-commit:intent", |t| {
            t.commit_snapshot(&row.key, name.as_str(), &labels, now)
        })?;
        self.snapshot_stat(name.as_str())
    }

    /// Remove a snapshot and its layer (a view: only the record). `SnapshotHasChildren` while
    /// others are prepared or viewed on it.
    pub fn snapshot_remove(&mut self, key: &str) -> Result<()> {
        let (row, layer) = self.snapshot_row(key)?;
        let children = self.store.snapshot_children(&row.key)?;
        if !children.is_empty() {
            return Err(PoolError::SnapshotHasChildren {
                key: row.key,
                children: children.len(),
            });
        }
        if row.kind == SnapshotKind::View {
            return self
                .store
                .tx("remove view", |t| t.delete_snapshot(&row.key));
        }
        // Layers still on this one whose rows are gone: removals deferred while the driver
        // found them busy. This layer's own removal waits for theirs (Cleanup, the next writer).
        let pending = self
            .store
            .layers()?
            .iter()
            .filter(|l| l.parent == Some(layer.id))
            .count();
        if pending > 0 {
            self.store.tx("record remove intent", |t| {
                t.set_state(layer.id, LayerState::Removing)?;
                t.delete_snapshot(&row.key)
            })?;
            tracing::info!(
                snapshot = key,
                layer = %layer.id,
                "removal deferred: {pending} layer(s) on it are still being removed"
            );
            return Ok(());
        }
        let outcome = self.remove_record(
            &layer,
            key,
            "snapshot-remove:intent",
            |t| t.delete_snapshot(&row.key),
            |t| t.insert_snapshot(&row),
        )?;
        if outcome == RemoveOutcome::Deferred {
            // The snapshot is gone for containerd; the object goes at Cleanup or the next open.
            tracing::info!(snapshot = key, layer = %layer.id, "layer removal deferred");
        }
        Ok(())
    }

    /// Update the labels of `key` (updated = now; created never changes).
    pub fn snapshot_update(
        &mut self,
        key: &str,
        labels: Labels,
        update: LabelUpdate,
    ) -> Result<SnapshotInfo> {
        let (mut row, _) = self.snapshot_row(key)?;
        apply_label_update(&mut row.labels, labels, &update);
        row.updated = Timestamp::now();
        self.store.tx("update snapshot labels", |t| {
            t.set_snapshot_labels(&row.key, &row.labels, row.updated)
        })?;
        Ok(row.info())
    }

    /// Cleanup: finish deferred removals.
    pub fn snapshot_cleanup(&mut self) -> Result<()> {
        let mut first_error = None;
        for (rec, removal) in self.finish_removals()? {
            match removal {
                Removal::Done => tracing::info!(layer = %rec.id, "finished deferred removal"),
                Removal::Waiting => {}
                Removal::Failed(PoolError::Driver { source, .. })
                    if matches!(*source, DriverError::Busy { .. }) =>
                {
                    tracing::info!(layer = %rec.id, "removal still deferred: {source}");
                }
                Removal::Failed(e) => {
                    tracing::warn!(layer = %rec.id, "deferred removal failed: {e}");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Stat. Works on read-only handles.
    pub fn snapshot_stat(&self, key: &str) -> Result<SnapshotInfo> {
        self.snapshot_row(key).map(|(row, _)| row.info())
    }

    /// Every snapshot made through this API (Walk; filters are the caller's business).
    pub fn snapshot_list(&self) -> Result<Vec<SnapshotInfo>> {
        let layers = self.records()?;
        Ok(self
            .store
            .snapshots()?
            .iter()
            .filter(|s| layers.get(&s.layer).is_some_and(visible))
            .map(SnapshotRecord::info)
            .collect())
    }

    /// Usage: stored at commit for committed snapshots; measured for active ones; 0 for views.
    pub fn snapshot_usage(&self, key: &str) -> Result<SnapshotUsage> {
        let (row, layer) = self.snapshot_row(key)?;
        match row.kind {
            SnapshotKind::View => Ok(SnapshotUsage::default()),
            // Unknown (a driver that could not measure at commit) reads as 0: containerd
            // wants a number, and a committed layer's size never changes to be measured later.
            SnapshotKind::Committed => Ok(row.usage.unwrap_or_default()),
            SnapshotKind::Active => {
                let chain = self.chain(&layer)?;
                // The driver's exclusive usage: the layer's own delta, unsigned, so never
                // below 0 even where a driver derives it from its parent's.
                self.driver
                    .usage(&chain)
                    .map(SnapshotUsage::from)
                    .map_err(|e| PoolError::driver("usage", key, e))
            }
        }
    }

    // ----- helpers -----

    /// The row of `key` and the layer it points at (a view's: the parent's). Rows of a Prepare
    /// still in flight are not there yet.
    fn snapshot_row(&self, key: &str) -> Result<(SnapshotRecord, LayerRecord)> {
        let missing = || PoolError::SnapshotNotFound(key.to_string());
        let row = self.store.snapshot(key)?.ok_or_else(missing)?;
        let layer = self.store.layer(row.layer)?.ok_or_else(missing)?;
        if !visible(&layer) {
            return Err(missing());
        }
        Ok((row, layer))
    }

    fn ensure_key_free(&self, key: &SnapshotKey) -> Result<()> {
        // A row of a Prepare in flight counts too: its key is taken.
        if self.store.snapshot(key.as_str())?.is_some() {
            return Err(PoolError::SnapshotExists(key.as_str().to_string()));
        }
        Ok(())
    }

    /// The committed snapshot `parent` and its layer, for `op` on `key`.
    fn committed_snapshot(
        &self,
        parent: &str,
        op: &'static str,
        key: &SnapshotKey,
    ) -> Result<(SnapshotRecord, LayerRecord)> {
        let (row, layer) = self.snapshot_row(parent)?;
        if row.kind != SnapshotKind::Committed || layer.state != LayerState::Committed {
            return Err(PoolError::Refused {
                op,
                layer: key.as_str().to_string(),
                reason: format!(
                    "parent {parent:?} is {} (only committed snapshots can be parents)",
                    row.kind
                ),
            });
        }
        Ok((row, layer))
    }
}

/// Whether a snapshot on `layer` exists for containerd: not while its Prepare is in flight (a
/// crash rolls it back), and a commit in flight is rolled forward, so it already is committed.
fn visible(layer: &LayerRecord) -> bool {
    layer.state != LayerState::Creating
}
