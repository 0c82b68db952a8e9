//! Finishing or undoing what a dead process left in flight, and `pool check`.

use super::mounts::{presence, tables_for, Presence};
use super::types::{CheckReport, ContainerState};
use super::Pool;
use crate::error::{PoolError, Result};
use crate::layer::{LayerRecord, LayerState};
use blkdrv_drivers::sys::mount;
use blkdrv_drivers::ObjectId;
use std::collections::HashMap;

/// What [`Pool::finish_removals`] did with one layer.
pub(super) enum Removal {
    Done,
    /// Layers on it are still there.
    Waiting,
    Failed(PoolError),
}

fn label(rec: &LayerRecord) -> String {
    rec.pending_name
        .clone()
        .unwrap_or_else(|| format!("layer {}", rec.id))
}

impl Pool {
    /// Finishes or undoes what a dead process left in flight. Returns what it did.
    pub(super) fn reconcile(&mut self) -> Result<Vec<String>> {
        let mut done = Vec::new();
        // Leftover import/diff mounts of a crashed process.
        let n = mount::detach_all_under(&self.tmp_dir())
            .map_err(|e| PoolError::backing(&self.name, e))?;
        if n > 0 {
            done.push(format!("unmounted {n} leftover temporary mount(s)"));
        }
        let mounts = self.store.mounts()?;
        let tables = tables_for(&mounts)?;
        for m in mounts {
            match presence(&m, &tables) {
                Presence::Gone => {
                    self.store
                        .tx("drop stale mount", |t| t.remove_mount(&m.target, m.ns))?;
                    if m.settled {
                        done.push(format!(
                            "forgot mount {} (no longer mounted)",
                            m.target.display()
                        ));
                    }
                }
                Presence::Mounted if !m.settled => {
                    self.store
                        .tx("settle mount", |t| t.settle_mount(&m.target, m.ns))?;
                    done.push(format!("recorded interrupted mount {}", m.target.display()));
                }
                // Kept: a mount that cannot be seen from here is not a mount that is gone.
                Presence::Mounted | Presence::Unknown => {}
            }
        }
        // Containers first: an interrupted container create undoes the volumes it made and its
        // writable layer; an interrupted mount or umount is taken down.
        for c in self.store.containers()? {
            let result = match c.state {
                ContainerState::Creating => self.undo_container_create(&c.name).map(|()| {
                    Some(format!(
                        "rolled back interrupted create of container {}",
                        c.name
                    ))
                }),
                ContainerState::Mounting | ContainerState::Unmounting | ContainerState::Mounted => {
                    self.recover_container_mount(&c)
                }
                ContainerState::Created | ContainerState::Removing => Ok(None),
            };
            match result {
                Ok(Some(d)) => done.push(d),
                Ok(None) => {}
                Err(e) => done.push(format!(
                    "could not finish {} of container {} (will retry): {e}",
                    c.state, c.name
                )),
            }
        }
        // Creates and commits first, in id order; then removals (`finish_removals`).
        let mut in_flight = self.store.layers()?;
        in_flight.sort_by_key(|r| r.id);
        for rec in in_flight {
            // One layer that cannot be finished must not keep the pool closed: report it, leave
            // it in flight for the next writer, and go on with the others.
            let result = match rec.state {
                LayerState::Creating => self
                    .undo_create(rec.id)
                    .map(|()| format!("rolled back interrupted create of {}", label(&rec))),
                LayerState::Committing => self
                    .finish_commit(rec.id)
                    .map(|()| format!("finished interrupted commit of {}", label(&rec))),
                _ => continue,
            };
            done.push(result.unwrap_or_else(|e| {
                format!(
                    "could not finish {} of {} (will retry): {e}",
                    rec.state,
                    label(&rec)
                )
            }));
        }
        for (rec, removal) in self.finish_removals()? {
            done.push(match removal {
                Removal::Done => format!("finished interrupted remove of {}", label(&rec)),
                Removal::Waiting => format!(
                    "kept removal of layer {} for later: layers on it are still there",
                    rec.id
                ),
                Removal::Failed(e) => format!(
                    "could not finish {} of {} (will retry): {e}",
                    rec.state,
                    label(&rec)
                ),
            });
        }
        // Abandoned spool files of crashed imports.
        if let Ok(entries) = std::fs::read_dir(self.tmp_dir()) {
            for e in entries.flatten() {
                if e.path().is_file() {
                    let _ = std::fs::remove_file(e.path());
                } else {
                    // Mount points of a volume fill (`fill-ID/root`), empty once detached.
                    if let Ok(sub) = std::fs::read_dir(e.path()) {
                        for d in sub.flatten() {
                            let _ = std::fs::remove_dir(d.path());
                        }
                    }
                    let _ = std::fs::remove_dir(e.path());
                }
            }
        }
        for d in &done {
            tracing::info!(pool = %self.name, "{d}");
        }
        Ok(done)
    }

    /// Finishes the removals in flight (left by a dead process, or deferred while the driver
    /// found the object busy), children before parents: a parent's object cannot go while a
    /// child's is there, so it waits (for Cleanup or the next writer) until theirs are done.
    pub(super) fn finish_removals(&mut self) -> Result<Vec<(LayerRecord, Removal)>> {
        let layers = self.store.layers()?;
        let mut children: HashMap<ObjectId, usize> = HashMap::new();
        for p in layers.iter().filter_map(|l| l.parent) {
            *children.entry(p).or_default() += 1;
        }
        let mut removing: Vec<LayerRecord> = layers
            .into_iter()
            .filter(|l| l.state == LayerState::Removing)
            .collect();
        // Children have higher ids than their parents (made after them).
        removing.sort_by_key(|l| std::cmp::Reverse(l.id));
        let mut out = Vec::new();
        for rec in removing {
            let removal = if children.get(&rec.id).copied().unwrap_or(0) > 0 {
                Removal::Waiting
            } else {
                match self.finish_remove(rec.id) {
                    Ok(()) => {
                        if let Some(n) = rec.parent.and_then(|p| children.get_mut(&p)) {
                            *n -= 1;
                        }
                        Removal::Done
                    }
                    Err(e) => Removal::Failed(e),
                }
            };
            out.push((rec, removal));
        }
        Ok(out)
    }

    /// `pool check [--repair]`: drift between the store and what is on disk.
    pub fn check(&mut self, repair: bool) -> Result<CheckReport> {
        let mut report = CheckReport {
            recovered: self.recovered.clone(),
            ..Default::default()
        };
        let on_disk = self
            .driver
            .list()
            .map_err(|e| PoolError::backing(&self.name, e))?;
        let all = self.records()?;
        for id in &on_disk {
            if !all.contains_key(id) {
                report.orphans.push(id.get());
            }
        }
        let mut missing: Vec<ObjectId> = all
            .keys()
            .filter(|id| !on_disk.contains(id))
            .copied()
            .collect();
        missing.sort();
        report.missing = missing.iter().map(|i| i.get()).collect();
        for v in self.store.volumes()? {
            if missing.contains(&v.layer) {
                report
                    .missing_owned
                    .push(format!("volume {} (object {})", v.name, v.layer));
            }
        }
        for c in self.store.containers()? {
            if missing.contains(&c.layer) {
                report
                    .missing_owned
                    .push(format!("container {} (writable layer {})", c.name, c.layer));
            }
        }
        let mounts = self.store.mounts()?;
        let tables = tables_for(&mounts)?;
        for m in mounts {
            match presence(&m, &tables) {
                Presence::Gone => report.stale_mounts.push(m),
                Presence::Unknown => report.unverified_mounts.push(m),
                Presence::Mounted => {}
            }
        }
        if repair {
            for id in &report.orphans {
                let id = ObjectId::new(*id).expect("listed ids are valid");
                self.driver
                    .remove(id)
                    .map_err(|e| PoolError::driver("remove orphan", id.to_string(), e))?;
                report.repaired.push(format!("removed orphan object {id}"));
            }
            for m in &report.stale_mounts {
                self.store
                    .tx("drop stale mount", |tx| tx.remove_mount(&m.target, m.ns))?;
                report
                    .repaired
                    .push(format!("forgot stale mount {}", m.target.display()));
            }
            // A layer whose data is gone cannot be repaired; forget it unless others build on it.
            for id in &missing {
                if all.values().any(|r| r.parent == Some(*id)) {
                    report.repaired.push(format!(
                        "kept layer {id}: its data is missing but it has children"
                    ));
                    continue;
                }
                self.store
                    .tx("forget missing layer", |t| t.delete_layer(*id))?;
                report
                    .repaired
                    .push(format!("forgot layer {id}: its data was missing"));
            }
        }
        Ok(report)
    }
}
