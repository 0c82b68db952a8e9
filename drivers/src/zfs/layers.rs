//! The layer operations: a layer is a dataset, created empty or cloned from its parent's
//! `@committed` snapshot, made read-only and snapshotted on commit, mounted with mount(2).

use super::{Zfs, CLONE_PREFIX, COMMITTED, NAME, SCRATCH, TOOL_WAIT};
use crate::error::{DriverError, Result};
use crate::sys::mount;
use crate::sys::zfs::{self as z, Dataset, Failure, Snapshot};
use crate::{
    Bytes, Capabilities, Granularity, LayerChain, Layers, MountFlags, MountMode, MountSpec,
    ObjectId, Usage,
};
use std::path::Path;

const USAGE_PROPS: &[&str] = &["used", "referenced"];

/// `used` of a clone counts only the records it wrote (its origin's are charged to the origin
/// snapshot); `used` of a committed layer includes its snapshot: what removing the layer frees.
fn usage_of(p: &z::Props) -> Result<Usage> {
    Ok(Usage {
        bytes: p.bytes("used")?,
        inodes: None,
        referenced: Some(p.bytes("referenced")?),
    })
}

/// Whether a mount's own options make it read-write.
fn is_rw(m: &mount::MountInfo) -> bool {
    m.options.split(',').next() == Some("rw")
}

impl Zfs {
    /// Properties every layer gets. Compression is set on each layer, not only inherited, so an
    /// adopted dataset's own setting does not change what the pool was made with.
    fn layer_props(&self) -> [(&'static str, String); 2] {
        [
            ("mountpoint", "legacy".to_string()),
            ("compression", self.compression.clone()),
        ]
    }

    /// Space counts once its transaction group is on disk. An unmount and a snapshot sync by
    /// themselves; a layer mounted here may hold data written seconds ago.
    fn sync_if_mounted(&self, layers: &[LayerChain]) -> Result<()> {
        let mounted: std::collections::HashSet<String> = mount::mountinfo()?
            .into_iter()
            .filter(|m| m.fstype == "zfs")
            .map(|m| m.source)
            .collect();
        if layers
            .iter()
            .any(|l| mounted.contains(self.dataset(l.id).as_str()))
        {
            z::zpool_sync(&self.rec.zpool)?;
        }
        Ok(())
    }

    /// Mounts of `ds` in this mount namespace.
    fn mounts_of(&self, ds: &Dataset) -> Result<Vec<mount::MountInfo>> {
        Ok(mount::mountinfo()?
            .into_iter()
            .filter(|m| m.fstype == "zfs" && m.source == ds.as_str())
            .collect())
    }

    fn make(&self, layer: &LayerChain, ds: &Dataset) -> Result<()> {
        match self.make_once(layer, ds) {
            // Space a destroy freed already counts as `available`, but is allocatable only
            // a few transaction groups later (deferred frees; async destroy): let them pass and
            // try once more. Seen right after removing a layer that had filled the pool.
            Err(e) if z::failure(&e) == Failure::NoSpace => {
                for _ in 0..3 {
                    z::zpool_sync(&self.rec.zpool)?;
                }
                self.make_once(layer, ds)
            }
            r => r,
        }
    }

    fn make_once(&self, layer: &LayerChain, ds: &Dataset) -> Result<()> {
        match layer.parent() {
            Some(p) => z::clone(&self.committed(p), ds, &self.layer_props()).map_err(|e| {
                // The origin is what can be missing: the new dataset does not exist yet.
                if z::failure(&e) == Failure::Missing {
                    DriverError::NotFound {
                        id: p,
                        op: "find the committed snapshot to clone",
                    }
                } else {
                    e
                }
            }),
            None => z::create(ds, &self.layer_props()),
        }
    }

    /// Destroys a layer dataset and its snapshots, then the copy snapshot it was cloned from
    /// if it was a copy (`clone_active`) and nothing else uses that snapshot. A dataset whose
    /// copies still depend on it hands its snapshots over to the newest copy first (`zfs
    /// promote`), so a copy and its source can be removed in either order; clones of its
    /// `@committed` snapshot are layers built on it and make the removal refused. The one clone
    /// blkdrv may leave on its own (an interrupted raw_snapshot) is destroyed first.
    fn destroy_layer(&self, id: ObjectId, ds: &Dataset) -> Result<()> {
        let mut cleared_scratch = false;
        // Each round promotes one copy, which takes every older snapshot along: rounds are
        // bounded by the number of copies, and a crash in between leaves a state the next
        // remove continues from (the dataset is then a clone of the copy's snapshot).
        for _ in 0..64 {
            let origin = match z::get(ds.as_str(), &["origin"]) {
                Ok(p) => p.get("origin").and_then(|o| Snapshot::parse(o).ok()),
                Err(e) if z::failure(&e) == Failure::Missing => {
                    return self.destroy_copy_leftovers(id)
                }
                Err(e) => return Err(e),
            };
            let e = match z::destroy(ds, true) {
                Ok(()) => return self.destroy_copy_origin(origin),
                Err(e) => e,
            };
            match z::failure(&e) {
                Failure::Missing => return self.destroy_copy_origin(origin),
                Failure::Busy => {
                    return Err(DriverError::Busy {
                        id,
                        op: "remove",
                        reason: format!(
                            "dataset {ds} is busy (still mounted in another mount namespace, or \
                             held)"
                        ),
                    })
                }
                Failure::DependentClones => {
                    let deps = z::dependents(&e);
                    let scratch = self.scratch();
                    if !cleared_scratch
                        && !deps.is_empty()
                        && deps.iter().all(|d| d == scratch.as_str())
                    {
                        cleared_scratch = true;
                        match z::destroy(&scratch, false) {
                            Ok(()) => continue,
                            Err(se) if z::failure(&se) == Failure::Missing => continue,
                            Err(se) => return Err(se),
                        }
                    }
                    self.hand_over_to_copy(id, ds, &deps)?;
                }
                _ => return Err(e),
            }
        }
        Err(DriverError::Refused {
            id,
            op: "remove",
            reason: format!("dataset {ds} still has dependent clones after promoting its copies"),
        })
    }

    /// Promotes the newest copy cloned from one of `ds`'s copy snapshots, or refuses when
    /// what depends on `ds` are layers built on its `@committed` snapshot. A promote moves
    /// every snapshot up to the copy's origin: one of them being `@committed` would give the
    /// copy a committed snapshot that is not its own (its later commit would find it and keep
    /// the source's content), so that is refused too.
    fn hand_over_to_copy(&self, id: ObjectId, ds: &Dataset, deps: &[String]) -> Result<()> {
        let snaps = z::snapshots(ds, 1)?;
        let committed = snaps.iter().find(|s| s.snapshot.name() == COMMITTED);
        let refuse = |why: String| DriverError::Refused {
            id,
            op: "remove",
            reason: why,
        };
        if let Some(c) = committed.filter(|c| !c.clones.is_empty()) {
            return Err(refuse(format!(
                "its snapshot {} has dependent clones (layers built on it): {}",
                c.snapshot,
                c.clones
                    .iter()
                    .map(Dataset::as_str)
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let newest = snaps
            .iter()
            .filter(|s| s.snapshot.name().starts_with(CLONE_PREFIX) && !s.clones.is_empty())
            .max_by_key(|s| s.txg);
        let Some(newest) = newest else {
            return Err(refuse(format!(
                "dataset {ds} has dependent clones: {}",
                if deps.is_empty() {
                    "see zfs list -t all".to_string()
                } else {
                    deps.join(", ")
                }
            )));
        };
        if let Some(c) = committed.filter(|c| c.txg < newest.txg) {
            return Err(refuse(format!(
                "promoting {} would move {} to it",
                newest.clones[0], c.snapshot
            )));
        }
        let copy = &newest.clones[0];
        tracing::debug!(dataset = %ds, copy = %copy, "promoting a copy before removing its source");
        z::promote(copy)
    }

    /// After a copy's dataset is gone: its origin, a copy snapshot no other dataset uses.
    fn destroy_copy_origin(&self, origin: Option<Snapshot>) -> Result<()> {
        match origin {
            Some(o) if o.name().starts_with(CLONE_PREFIX) => self.destroy_unused_snapshot(&o),
            _ => Ok(()),
        }
    }

    /// A copy snapshot still in use (another copy cloned from it after a promote) stays.
    fn destroy_unused_snapshot(&self, snap: &Snapshot) -> Result<()> {
        match z::destroy_snapshot(snap) {
            Err(e) if !matches!(z::failure(&e), Failure::Missing | Failure::DependentClones) => {
                Err(e)
            }
            _ => Ok(()),
        }
    }

    /// A copy that is already gone, or never got made (a crash between `clone_active`'s
    /// snapshot and its clone): its `@clone-<id>` snapshot may be left on the source.
    fn destroy_copy_leftovers(&self, id: ObjectId) -> Result<()> {
        let name = format!("{CLONE_PREFIX}{id}");
        for s in z::snapshots(&self.rec.dataset, 2)? {
            if s.snapshot.name() == name && s.clones.is_empty() {
                self.destroy_unused_snapshot(&s.snapshot)?;
            }
        }
        Ok(())
    }

    /// One attempt of [`Layers::clone_active`]: a fresh copy snapshot of the source (a stale
    /// one from a crashed attempt holds older content), then the clone.
    fn copy_once(&self, source: &LayerChain, new: &Dataset, origin: &Snapshot) -> Result<()> {
        self.destroy_unused_snapshot(origin)?;
        let missing = |e: DriverError| {
            if z::failure(&e) == Failure::Missing {
                DriverError::NotFound {
                    id: source.id,
                    op: "clone",
                }
            } else {
                e
            }
        };
        match z::snapshot(origin) {
            // Still there: the clone of a crashed attempt uses it; the caller removes that.
            Err(e) if z::failure(&e) == Failure::Exists => {}
            r => r.map_err(missing)?,
        }
        z::clone(origin, new, &self.layer_props())
    }
}

impl Layers for Zfs {
    fn name(&self) -> &'static str {
        NAME
    }

    // ZFS copies on write in records: the first write into shared data rewrites the whole
    // record it falls in (measured: a 4 KiB write into an inherited file made the clone's
    // `written` one 128 KiB record plus metadata). Files smaller than a record are one smaller
    // record, but for the large files where copy-on-write cost matters ZFS behaves like
    // dm-thin's fixed blocks, not like btrfs's 4 KiB extents: so Block, of the recordsize.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            granularity: Granularity::Block {
                size: self.recordsize,
            },
            native_snapshots: true,
        }
    }

    fn create(&self, layer: &LayerChain) -> Result<()> {
        let ds = self.dataset(layer.id);
        match self.make(layer, &ds) {
            Err(e) if z::failure(&e) == Failure::Exists => {
                // Left by a crash before the store recorded it: start over.
                self.remove(layer.id)?;
                self.make(layer, &ds)
            }
            r => r,
        }
    }

    // A dataset like an empty layer's, with its refquota set as it is made: no moment
    // without the limit, and one command.
    fn create_volume(&self, id: ObjectId, limit: Option<Bytes>) -> Result<()> {
        let ds = self.dataset(id);
        let mut props = self.layer_props().to_vec();
        if let Some(l) = limit {
            props.push(("refquota", l.0.to_string()));
        }
        match z::create(&ds, &props) {
            Err(e) if z::failure(&e) == Failure::Exists => {
                self.remove(id)?;
                z::create(&ds, &props)
            }
            r => r,
        }
    }

    // A snapshot of the source (mounted or not: ZFS snapshots are consistent with what was
    // written), cloned into the new dataset, which shares every record until it writes. The
    // copy sits on the source's ancestors through the source's own origin. Its refquota is not
    // copied: a limit is set on the copy by whoever wants one.
    fn clone_active(&self, source: &LayerChain, new: ObjectId) -> Result<()> {
        let ds = self.dataset(new);
        let origin = self.clone_origin(source.id, new);
        match self.copy_once(source, &ds, &origin) {
            // Left by a crash before the store recorded it: start over.
            Err(e) if matches!(z::failure(&e), Failure::Exists | Failure::DependentClones) => {
                self.remove(new)?;
                self.copy_once(source, &ds, &origin)
            }
            r => r,
        }
    }

    fn commit(&self, layer: &LayerChain) -> Result<()> {
        let ds = self.dataset(layer.id);
        let missing = |e: DriverError| {
            if z::failure(&e) == Failure::Missing {
                DriverError::NotFound {
                    id: layer.id,
                    op: "commit",
                }
            } else {
                e
            }
        };
        // Read-only first, then the snapshot children are cloned from: the layer's own view
        // can never drift from what its children see. Both steps are idempotent, so a commit
        // rolled forward after a crash just repeats them.
        z::set(&ds, "readonly", "on").map_err(missing)?;
        match z::snapshot(&self.committed(layer.id)) {
            Err(e) if z::failure(&e) == Failure::Exists => Ok(()),
            r => r.map_err(missing),
        }
    }

    fn mount(
        &self,
        layer: &LayerChain,
        target: &Path,
        mode: MountMode,
        flags: MountFlags,
    ) -> Result<()> {
        let ds = self.dataset(layer.id);
        let ms = flags.ms(mode);
        // What mount.zfs adds for a legacy dataset: where it is mounted, which the kernel
        // needs to automount .zfs/snapshot entries (a comma would split the option string).
        let hint = format!("mntpoint={}", target.display());
        let data = (!hint.contains(',')).then_some(hint.as_str());
        let err = match mount::mount(Path::new(ds.as_str()), target, "zfs", ms, data) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if err.errno() != Some(nix::errno::Errno::EBUSY) {
            return Err(err);
        }
        // One ZFS superblock per dataset, read-only or read-write: a second mount in the other
        // mode gets EBUSY. A read-only view of a layer mounted read-write is a read-only bind of
        // that mount; the other way round cannot be done.
        let here = self.mounts_of(&ds)?;
        match (mode, here.iter().find(|m| is_rw(m))) {
            (MountMode::ReadOnly, Some(rw)) => mount::bind(&rw.target, target, ms),
            _ => Err(DriverError::Refused {
                id: layer.id,
                op: "mount",
                reason: format!(
                    "ZFS mounts a dataset either read-only or read-write, and {ds} is mounted the \
                     other way{} ({err})",
                    here.first()
                        .map(|m| format!(" at {}", m.target.display()))
                        .unwrap_or_default()
                ),
            }),
        }
    }

    // Layers have mountpoint=legacy (`layer_props`), which is what lets anyone mount them with
    // mount(2) by dataset name, as containerd's zfs snapshotter does. No `mntpoint=` hint: the
    // target is the other process's to choose, and the kernel only needs it for .zfs/snapshot.
    fn export(
        &self,
        layer: &LayerChain,
        mode: MountMode,
        flags: MountFlags,
    ) -> Result<Vec<MountSpec>> {
        let ds = self.dataset(layer.id);
        match z::get(ds.as_str(), &["mountpoint"]) {
            Ok(p) if p.get("mountpoint") != Some("legacy") => {
                return Err(DriverError::Refused {
                    id: layer.id,
                    op: "export",
                    reason: format!(
                        "dataset {ds} has mountpoint={} (blkdrv makes layers with legacy)",
                        p.get("mountpoint").unwrap_or("none")
                    ),
                })
            }
            Ok(_) => {}
            Err(e) if z::failure(&e) == Failure::Missing => {
                return Err(DriverError::NotFound {
                    id: layer.id,
                    op: "export",
                })
            }
            Err(e) => return Err(e),
        }
        Ok(vec![MountSpec::new("zfs", ds.as_str(), [], mode, flags)])
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        mount::unmount(target)
    }

    fn remove(&self, id: ObjectId) -> Result<()> {
        let ds = self.dataset(id);
        // `zfs destroy` would unmount a mount of ours silently; one blkdrv does not know of is
        // someone's, so refuse and say where, in whichever mount namespace it is.
        let tables = mount::NsTables::read()?;
        mount::Users::of(
            &tables,
            tables
                .all()
                .filter(|(_, _, m)| m.fstype == "zfs" && m.source == ds.as_str()),
        )
        .check_remove(id, &format!("dataset {ds}"))?;
        z::wait_for_tools(ds.as_str(), TOOL_WAIT);
        self.destroy_layer(id, &ds)
    }

    fn list(&self) -> Result<Vec<ObjectId>> {
        let mut ids = Vec::new();
        for e in z::list_below(&self.rec.dataset, &["filesystem"])? {
            let leaf = e.name.rsplit('/').next().unwrap_or_default();
            // Only canonical decimal names: "007" is not layer 7's dataset, and removing it as
            // an orphan would destroy layer 7.
            match ObjectId::parse(leaf).filter(|id| id.to_string() == leaf) {
                Some(id) => ids.push(id),
                None if leaf == SCRATCH => {}
                None => tracing::debug!(dataset = %e.name, "not a layer dataset; skipped"),
            }
        }
        ids.sort();
        Ok(ids)
    }

    // One layer (every commit measures one): a `zfs get` of that dataset alone; the recursive
    // get reads every layer's properties, which made a 128-layer chain quadratic.
    fn usage(&self, layer: &LayerChain) -> Result<Usage> {
        self.sync_if_mounted(std::slice::from_ref(layer))?;
        let ds = self.dataset(layer.id);
        match z::get(ds.as_str(), USAGE_PROPS) {
            Ok(p) => usage_of(&p),
            Err(e) if z::failure(&e) == Failure::Missing => Err(DriverError::NotFound {
                id: layer.id,
                op: "usage",
            }),
            Err(e) => Err(e),
        }
    }

    // One recursive `zfs get` for all: one per layer took 26.5 s for 200 layers in the VM.
    fn usage_many(&self, layers: &[LayerChain]) -> Vec<Result<Usage>> {
        if layers.len() <= 1 {
            return layers.iter().map(|l| self.usage(l)).collect();
        }
        let all = self
            .sync_if_mounted(layers)
            .and_then(|()| z::get_below(&self.rec.dataset, USAGE_PROPS));
        let all = match all {
            Ok(all) => all,
            Err(e) => {
                return DriverError::for_each_layer("read usage (zfs get) of layer", layers, &e)
            }
        };
        layers
            .iter()
            .map(|l| {
                let p = all
                    .get(self.dataset(l.id).as_str())
                    .ok_or(DriverError::NotFound {
                        id: l.id,
                        op: "usage",
                    })?;
                usage_of(p)
            })
            .collect()
    }

    // refquota bounds what the layer references, its parent's data included: the size of the
    // filesystem as its user sees it, as btrfs's qgroup limit (max_rfer) and a dm-thin
    // device's fixed size do.
    fn set_limit(&self, id: ObjectId, limit: Bytes) -> Result<()> {
        let ds = self.dataset(id);
        match z::set(&ds, "refquota", &limit.0.to_string()) {
            Ok(()) => Ok(()),
            Err(e) => match z::failure(&e) {
                Failure::Missing => Err(DriverError::NotFound {
                    id,
                    op: "set size limit",
                }),
                Failure::BelowUsage => {
                    let referenced = z::get(ds.as_str(), &["referenced"])
                        .and_then(|p| p.bytes("referenced"))
                        .map(|b| b.to_string())
                        .unwrap_or_else(|_| "more".into());
                    Err(DriverError::Refused {
                        id,
                        op: "set size limit",
                        reason: format!(
                            "{limit} is less than the layer already references ({referenced}, its \
                             parent's data included): the limit covers the whole filesystem"
                        ),
                    })
                }
                _ => Err(e),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn read_write_mounts_are_told_by_their_own_options() {
        let m = mount::parse_mountinfo(
            "50 1 0:60 / /m1 rw,relatime shared:9 - zfs tank/7 rw,xattr,noacl\n\
             51 1 0:60 / /m2 ro,relatime shared:9 - zfs tank/7 rw,xattr,noacl\n",
        );
        assert!(is_rw(&m[0]));
        assert!(!is_rw(&m[1]));
        assert_eq!(m[0].source, "tank/7");
    }
}
