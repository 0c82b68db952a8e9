//! Layer operations: create (import), snapshot, commit, remove, diff.

use super::mounts::MountCheck;
use super::spool::{reopen, Spooled};
use super::types::{CreateOutcome, LayerInfo, RemoveOutcome, Source};
use super::{mkdir, now, Pool};
use crate::crash;
use crate::error::{PoolError, Result};
use crate::layer::{LayerKind, LayerName, LayerRecord, LayerState};
use crate::signal;
use crate::store::{content_key, Tx};
use blkdrv_drivers::sys::mount;
use blkdrv_drivers::{Bytes, LayerChain, MountFlags, MountMode, ObjectId, Usage};
use std::path::PathBuf;

/// What [`Pool::begin_create`] makes.
pub(super) struct NewLayer<'a> {
    /// Names the layer in errors.
    pub label: &'a str,
    /// The name to bind when the create finishes (`None`: a layer with no name).
    pub pending_name: Option<String>,
    pub parent: Option<ObjectId>,
    pub kind: LayerKind,
    pub digest: Option<String>,
    pub limit: Option<Bytes>,
    /// Crash points after the intent and after the object.
    pub steps: [&'static str; 2],
    /// How the driver makes the object.
    pub make: Make,
}

/// How [`Pool::begin_create`] has the driver make a new object.
pub(super) enum Make {
    /// An empty active layer on `parent` (`Layers::create`).
    Layer,
    /// A volume's object (`Layers::create_volume`).
    Volume,
    /// A copy of what this active object holds now (`Layers::clone_active`).
    Clone(LayerChain),
}

impl Pool {
    pub(super) fn committed_parent(
        &self,
        parent: Option<&str>,
        op: &'static str,
        name: &str,
    ) -> Result<Option<LayerRecord>> {
        let Some(p) = parent else { return Ok(None) };
        let rec = self.lookup(p).map_err(|e| match e {
            PoolError::LayerNotFound(_) => PoolError::Refused {
                op,
                layer: name.to_string(),
                reason: format!("parent {p:?} does not exist"),
            },
            e => e,
        })?;
        if rec.state != LayerState::Committed {
            return Err(PoolError::Refused {
                op,
                layer: name.to_string(),
                reason: format!(
                    "parent {p:?} is {} (only committed layers can be parents; run `blkdrv layer commit {p}`)",
                    rec.state
                ),
            });
        }
        Ok(Some(rec))
    }

    pub(super) fn ensure_name_free(&self, name: &LayerName) -> Result<()> {
        if self.store.resolve(name.as_str())?.is_some() {
            return Err(PoolError::LayerExists(name.to_string()));
        }
        Ok(())
    }

    /// `layer create`: imports a tar or directory as a committed image layer on `parent`.
    /// Identical content on the same parent is reused (the build cache).
    pub fn create(
        &mut self,
        name: &LayerName,
        parent: Option<&str>,
        source: Source<'_>,
        limit: Option<Bytes>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<CreateOutcome> {
        let spooled = Spooled::new(&self.tmp_dir(), source, false)?;
        self.create_from(name, parent, spooled, limit, progress)
    }

    /// `layer create` of content spooled (and validated) beforehand, without the writer lock:
    /// a slow or stalled producer then blocks no other writer.
    pub fn create_from(
        &mut self,
        name: &LayerName,
        parent: Option<&str>,
        spooled: Spooled,
        limit: Option<Bytes>,
        progress: &mut dyn FnMut(u64),
    ) -> Result<CreateOutcome> {
        let parent_rec = self.committed_parent(parent, "create", name.as_str())?;
        let existing_name = self.store.resolve(name.as_str())?;
        let Spooled {
            file: spool,
            digested,
            opts,
        } = spooled;
        let parent_id = parent_rec.as_ref().map(|r| r.id);
        let key = content_key(parent_id, &digested.digest);
        if let Some(id) = self.store.by_content(&key)? {
            match existing_name {
                Some(e) if e == id => {}
                Some(_) => return Err(PoolError::LayerExists(name.to_string())),
                None => self
                    .store
                    .tx("tag reused layer", |t| t.bind_name(name.as_str(), id))?,
            }
            return Ok(CreateOutcome {
                layer: self.info(id)?,
                reused: true,
            });
        }
        if existing_name.is_some() {
            return Err(PoolError::LayerExists(name.to_string()));
        }
        self.ensure_space()?;

        let (rec, chain) = self.begin_create(
            NewLayer {
                label: name.as_str(),
                pending_name: Some(name.to_string()),
                parent: parent_id,
                kind: LayerKind::Image,
                digest: Some(digested.digest.clone()),
                limit,
                steps: ["create:intent", "create:object"],
                make: Make::Layer,
            },
            |_, _| Ok(()),
        )?;
        let work = (|| {
            let target = self.tmp_dir().join(format!("import-{}", rec.id));
            mkdir(&target)?;
            self.driver
                .mount(&chain, &target, MountMode::ReadWrite, MountFlags::INERT)
                .map_err(|e| PoolError::driver("mount for import", name.as_str(), e))?;
            crash::point("create:mounted");
            // Through the descriptor, not the path: another writer's recovery may have swept
            // the tmp dir while this process spooled without the lock.
            let applied = reopen(&spool, "reopen spooled tar")
                .and_then(|f| {
                    layertar::apply_tar(
                        std::io::BufReader::new(signal::Checked(f)),
                        &target,
                        &opts,
                        progress,
                    )
                    .map_err(PoolError::from)
                })
                .map_err(signal::or_interrupted);
            // Flush before unmount so the import's cost is paid here, not by the next snapshot.
            let unmounted = self
                .driver
                .unmount(&target)
                .map_err(|e| PoolError::driver("unmount after import", name.as_str(), e));
            applied?;
            unmounted?;
            let _ = std::fs::remove_dir(&target);
            crash::point("create:applied");
            let committed = LayerChain {
                active: false,
                ..chain.clone()
            };
            self.driver
                .commit(&committed)
                .map_err(|e| PoolError::driver("commit", name.as_str(), e))?;
            let usage = self.measure(&committed);
            self.store.tx("record create done", |t| {
                t.set_committed(rec.id, usage, Some(&key))?;
                t.bind_name(name.as_str(), rec.id)
            })
        })();
        if let Err(e) = work {
            return Err(e.with_rollback(self.undo_create(rec.id)));
        }
        crash::point("create:committed");
        Ok(CreateOutcome {
            layer: self.info(rec.id)?,
            reused: false,
        })
    }

    /// First half of every create: records the intent (a `creating` row, and whatever `also`
    /// records with it in the same transaction), then makes the driver object. A failure
    /// undoes the intent.
    pub(super) fn begin_create(
        &mut self,
        new: NewLayer<'_>,
        also: impl FnOnce(&Tx<'_>, &LayerRecord) -> Result<()>,
    ) -> Result<(LayerRecord, LayerChain)> {
        let NewLayer {
            label,
            pending_name,
            parent,
            kind,
            digest,
            limit,
            steps,
            make,
        } = new;
        let rec = self.store.tx("record create intent", |t| {
            let rec = LayerRecord {
                id: t.allocate_id()?,
                parent,
                kind,
                state: LayerState::Creating,
                digest,
                pending_name,
                created: now(),
                size: None,
                limit,
            };
            t.insert_layer(&rec)?;
            also(t, &rec)?;
            Ok(rec)
        })?;
        crash::point(steps[0]);
        let chain = self.chain(&rec)?;
        let set_limit = || match limit {
            Some(l) => self.driver.set_limit(rec.id, l),
            None => Ok(()),
        };
        let made = match &make {
            Make::Layer => self.driver.create(&chain).and_then(|()| set_limit()),
            Make::Volume => self.driver.create_volume(rec.id, limit),
            Make::Clone(source) => self
                .driver
                .clone_active(source, rec.id)
                .and_then(|()| set_limit()),
        };
        if let Err(e) = made {
            let e = PoolError::driver("create", label, e);
            return Err(e.with_rollback(self.undo_create(rec.id)));
        }
        crash::point(steps[1]);
        self.record_generation()?;
        Ok((rec, chain))
    }

    /// Undoes a create: unmounts a leftover import mount, deletes the object and the row.
    pub(super) fn undo_create(&mut self, id: ObjectId) -> Result<()> {
        let target = self.tmp_dir().join(format!("import-{id}"));
        if mount::is_mountpoint(&target).unwrap_or(false) {
            self.driver
                .unmount(&target)
                .map_err(|e| PoolError::driver("unmount import", id.to_string(), e))?;
        }
        let _ = std::fs::remove_dir(&target);
        self.driver
            .remove(id)
            .map_err(|e| PoolError::driver("remove", id.to_string(), e))?;
        self.store.tx("roll back create", |t| t.delete_layer(id))?;
        self.record_generation()
    }

    /// `layer snapshot`: a writable (active) layer on a committed parent. The returned size is
    /// unknown: nothing of its own to measure yet.
    pub fn snapshot(
        &mut self,
        parent: &str,
        name: &LayerName,
        limit: Option<Bytes>,
    ) -> Result<LayerInfo> {
        let parent_rec = self
            .committed_parent(Some(parent), "snapshot", name.as_str())?
            .expect("parent given");
        self.ensure_name_free(name)?;
        self.ensure_space()?;
        let (rec, _) = self.begin_create(
            NewLayer {
                label: name.as_str(),
                pending_name: Some(name.to_string()),
                parent: Some(parent_rec.id),
                kind: LayerKind::Container,
                digest: None,
                limit,
                steps: ["snapshot:intent", "snapshot:object"],
                make: Make::Layer,
            },
            |_, _| Ok(()),
        )?;
        let done = self.store.tx("record snapshot done", |t| {
            t.set_state(rec.id, LayerState::Active)?;
            t.clear_pending_name(rec.id)?;
            t.bind_name(name.as_str(), rec.id)
        });
        if let Err(e) = done {
            return Err(e.with_rollback(self.undo_create(rec.id)));
        }
        // Size unknown (null in JSON) until `layer inspect` or `layer ls` measures it.
        self.info_measured(rec.id, false)
    }

    /// Times the driver's bare kernel operation for a layer on committed `parent` and undoes
    /// it (`blkdrv bench` compares it with [`Pool::snapshot`]). Nothing is recorded.
    pub fn raw_snapshot(&mut self, parent: &str) -> Result<Option<std::time::Duration>> {
        let rec = self
            .committed_parent(Some(parent), "raw snapshot", parent)?
            .expect("parent given");
        let chain = self.chain(&rec)?;
        // Drivers without bench hooks have no single kernel operation to compare with.
        let Some(hooks) = self.driver.bench() else {
            return Ok(None);
        };
        hooks
            .raw_snapshot(&chain)
            .map(Some)
            .map_err(|e| PoolError::driver("raw snapshot", parent, e))
    }

    /// `layer commit`: freezes an active layer.
    pub fn commit(&mut self, name: &str) -> Result<LayerInfo> {
        let rec = self.lookup(name)?;
        if rec.state != LayerState::Active {
            return Err(PoolError::Refused {
                op: "commit",
                layer: name.to_string(),
                reason: format!(
                    "layer is {} (only active layers can be committed)",
                    rec.state
                ),
            });
        }
        self.refuse_while_mounted(rec.id, name, MountCheck::Commit)?;
        self.commit_record(&rec, "commit:intent", |_| Ok(()))?;
        self.info(rec.id)
    }

    /// The commit of an active layer: records the intent (with whatever `also` records in the
    /// same transaction), then finishes it. From the intent on it is rolled forward.
    pub(super) fn commit_record(
        &mut self,
        rec: &LayerRecord,
        step: &'static str,
        also: impl FnOnce(&Tx<'_>) -> Result<()>,
    ) -> Result<()> {
        self.store.tx("record commit intent", |t| {
            t.set_state(rec.id, LayerState::Committing)?;
            also(t)
        })?;
        crash::point(step);
        self.finish_commit(rec.id)
    }

    /// A committed layer's size to record. A driver that cannot measure (btrfs without quotas)
    /// must not make the commit fail: the size is then unknown.
    pub(super) fn measure(&self, chain: &LayerChain) -> Option<Usage> {
        match self.driver.usage(chain) {
            Ok(u) => Some(u),
            Err(e) => {
                tracing::info!(layer = %chain.id, "size unknown: {e}");
                None
            }
        }
    }

    /// Second half of a commit; also how an interrupted commit is rolled forward.
    pub(super) fn finish_commit(&mut self, id: ObjectId) -> Result<()> {
        let rec = self
            .store
            .layer(id)?
            .ok_or_else(|| PoolError::LayerNotFound(id.to_string()))?;
        let chain = LayerChain {
            active: false,
            ..self.chain(&rec)?
        };
        self.driver
            .commit(&chain)
            .map_err(|e| PoolError::driver("commit", id.to_string(), e))?;
        crash::point("commit:object");
        let usage = self.measure(&chain);
        self.store.tx("record commit done", |t| {
            t.set_committed(id, usage, None)?;
            // A snapshot's layer: containerd reads its usage from the snapshot row.
            t.set_snapshot_usage(id, usage.map(Into::into))
        })
    }

    /// `layer rm`. Refused while the layer has children or is mounted (`force` unmounts first).
    /// A layer with several names only loses this name.
    pub fn remove(&mut self, name: &str, force: bool) -> Result<RemoveOutcome> {
        let rec = self.lookup(name)?;
        let names = self.names_by_layer()?;
        if names.get(&rec.id).is_some_and(|n| n.len() > 1) {
            self.store.tx("untag", |t| t.unbind_name(name))?;
            return Ok(RemoveOutcome::Untagged);
        }
        let all = self.records()?;
        // A container on the layer is named as one: `container rm` is what frees it.
        let containers: std::collections::HashMap<ObjectId, String> = self
            .store
            .containers()?
            .into_iter()
            .map(|c| (c.layer, c.name))
            .collect();
        let mut children: Vec<String> = all
            .values()
            .filter(|r| r.parent == Some(rec.id))
            .map(|r| match containers.get(&r.id) {
                Some(c) => format!("container {c}"),
                None => Self::display_name(&names, r.id),
            })
            .collect();
        children.sort();
        if !children.is_empty() {
            return Err(PoolError::Refused {
                op: "remove",
                layer: name.to_string(),
                reason: format!("layer has children: {}", children.join(", ")),
            });
        }
        if !force {
            self.refuse_while_mounted(rec.id, name, MountCheck::Remove)?;
        } else if self.store.mounts()?.iter().any(|m| m.layer == rec.id) {
            self.umount(name, None)?;
        }
        self.remove_record(&rec, name, "remove:intent", |_| Ok(()), |_| Ok(()))
    }

    /// The removal of a layer nothing depends on: records the intent (with `also` in the same
    /// transaction), then removes the object. A busy object defers the removal (the layer stays
    /// `removing` for the next writer or Cleanup); any other failure undoes the intent (and
    /// runs `undo` in that transaction).
    pub(super) fn remove_record(
        &mut self,
        rec: &LayerRecord,
        name: &str,
        step: &'static str,
        also: impl FnOnce(&Tx<'_>) -> Result<()>,
        undo: impl FnOnce(&Tx<'_>) -> Result<()>,
    ) -> Result<RemoveOutcome> {
        self.store.tx("record remove intent", |t| {
            t.set_state(rec.id, LayerState::Removing)?;
            also(t)
        })?;
        crash::point(step);
        match self.finish_remove(rec.id) {
            Ok(()) => {}
            Err(PoolError::Driver { source, .. })
                if matches!(*source, blkdrv_drivers::DriverError::Busy { .. }) =>
            {
                tracing::info!(layer = name, "removal deferred: {source}");
                self.notices
                    .push(format!("removal of {name} deferred: {source}"));
                return Ok(RemoveOutcome::Deferred);
            }
            Err(e) => {
                // The driver refused or failed (a mount blkdrv does not know of, EBUSY): the layer
                // stays as it was rather than half-removed; `pool check` reports any damage.
                let back = self.store.tx("undo remove intent", |t| {
                    t.set_state(rec.id, rec.state)?;
                    undo(t)
                });
                return Err(e.with_rollback(back));
            }
        }
        Ok(RemoveOutcome::Removed)
    }

    pub(super) fn finish_remove(&mut self, id: ObjectId) -> Result<()> {
        self.driver
            .remove(id)
            .map_err(|e| PoolError::driver("remove", id.to_string(), e))?;
        crash::point("remove:object");
        self.store
            .tx("record remove done", |t| t.delete_layer(id))?;
        self.record_generation()
    }

    /// `layer diff`: the layer's changes against its parent as an OCI layer tar.
    pub fn diff(
        &mut self,
        name: &str,
        out: &mut dyn std::io::Write,
    ) -> Result<layertar::DiffStats> {
        let rec = self.lookup(name)?;
        if !rec.state.is_settled() {
            return Err(PoolError::Refused {
                op: "diff",
                layer: name.to_string(),
                reason: format!("layer is {}", rec.state),
            });
        }
        let all = self.records()?;
        let chain = self.chain_of(&rec, &all);
        let base = self
            .tmp_dir()
            .join(format!("diff-{}-{}", rec.id, std::process::id()));
        let (top, bottom) = (base.join("layer"), base.join("parent"));
        let mut mounted: Vec<PathBuf> = Vec::new();
        let result = (|| {
            mkdir(&top)?;
            self.driver
                .mount(&chain, &top, MountMode::ReadOnly, MountFlags::INERT)
                .map_err(|e| PoolError::driver("mount for diff", name, e))?;
            mounted.push(top.clone());
            let parent_path = match rec.parent.and_then(|p| all.get(&p)) {
                Some(p) => {
                    mkdir(&bottom)?;
                    let pc = self.chain_of(p, &all);
                    self.driver
                        .mount(&pc, &bottom, MountMode::ReadOnly, MountFlags::INERT)
                        .map_err(|e| PoolError::driver("mount parent for diff", name, e))?;
                    mounted.push(bottom.clone());
                    Some(bottom.clone())
                }
                None => None,
            };
            layertar::write_diff(
                &top,
                parent_path.as_deref(),
                signal::CheckedWrite(&mut *out),
            )
            .map_err(|e| signal::or_interrupted(e.into()))
        })();
        let mut cleanup = Ok(());
        for m in mounted.iter().rev() {
            if let Err(e) = self.driver.unmount(m) {
                cleanup = Err(PoolError::driver("unmount after diff", name, e));
            }
        }
        let _ = std::fs::remove_dir(&top);
        let _ = std::fs::remove_dir(&bottom);
        let _ = std::fs::remove_dir(&base);
        match result {
            Ok(s) => cleanup.map(|_| s),
            Err(e) => Err(e.with_rollback(cleanup)),
        }
    }
}
