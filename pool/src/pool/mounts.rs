//! Layer mounts, and judging recorded mounts in the namespace that made them.

use super::types::MountRequest;
use super::{mkdir, Pool};
use crate::crash;
use crate::error::{PoolError, Result};
use crate::layer::LayerState;
use crate::store::MountRecord;
use blkdrv_drivers::sys::mount;
use blkdrv_drivers::sys::mount::{MountNs, NsTables, NsView};
use blkdrv_drivers::{MountFlags, MountMode, ObjectId};
use std::path::{Path, PathBuf};

impl Pool {
    /// Refuses `check`'s operation on layer `id` (called `name`) while it has a mount that the
    /// operation cannot run under, telling the user how to get past it.
    pub(super) fn refuse_while_mounted(
        &self,
        id: ObjectId,
        name: &str,
        check: MountCheck,
    ) -> Result<()> {
        let blocking: Vec<MountRecord> = self
            .store
            .mounts()?
            .into_iter()
            .filter(|m| m.layer == id && check.blocked_by(m))
            .collect();
        let Some(first) = blocking.first() else {
            return Ok(());
        };
        let (op, reason) = match check {
            MountCheck::Commit => (
                "commit",
                format!(
                    "layer is mounted read-write at {}; run `blkdrv layer umount {name}` first",
                    first.target.display()
                ),
            ),
            MountCheck::Remove => {
                let at = joined_targets(blocking.iter().map(|m| m.target.as_path()));
                (
                    "remove",
                    format!("layer is mounted at {at} (use --force to unmount first)"),
                )
            }
        };
        Err(PoolError::Refused {
            op,
            layer: name.to_string(),
            reason,
        })
    }

    /// `layer mount` with the default policy: see [`MountRequest`].
    pub fn mount(&mut self, name: &str, target: &Path, read_only: bool) -> Result<MountMode> {
        self.mount_with(
            name,
            target,
            MountRequest {
                read_only,
                ..MountRequest::default()
            },
        )
    }

    /// `layer mount`. Active layers mount read-write unless `read_only`; committed layers always
    /// mount read-only (a view). Every mount is `nodev` unless `req.dev`; read-only mounts are
    /// also `nosuid` (inspection, not a container's root). The target and its missing parents
    /// are created (mode 0700). Returns the mode used.
    pub fn mount_with(
        &mut self,
        name: &str,
        target: &Path,
        req: MountRequest,
    ) -> Result<MountMode> {
        let read_only = req.read_only;
        let rec = self.lookup(name)?;
        let mode = match rec.state {
            LayerState::Active if !read_only => MountMode::ReadWrite,
            LayerState::Active | LayerState::Committed => MountMode::ReadOnly,
            s => {
                return Err(PoolError::Refused {
                    op: "mount",
                    layer: name.to_string(),
                    reason: format!("layer is {s}"),
                })
            }
        };
        mkdir(target)?;
        let target = target
            .canonicalize()
            .map_err(|e| PoolError::user_path("resolve mount target", target, e))?;
        let ns = Some(own_ns()?);
        if mount::is_mountpoint(&target).unwrap_or(false) {
            return Err(PoolError::Refused {
                op: "mount",
                layer: name.to_string(),
                reason: format!("{} is already a mount point", target.display()),
            });
        }
        let mounts = self.store.mounts()?;
        if let Some(m) = mounts
            .iter()
            .find(|m| m.layer == rec.id && m.mode == MountMode::ReadWrite)
        {
            if mode == MountMode::ReadWrite {
                return Err(PoolError::Refused {
                    op: "mount",
                    layer: name.to_string(),
                    reason: format!(
                        "layer is already mounted read-write at {} (an active layer has one writer)",
                        m.target.display()
                    ),
                });
            }
        }
        let chain = self.chain(&rec)?;
        self.store.tx("record mount intent", |t| {
            t.add_mount(&target, ns, rec.id, mode)
        })?;
        crash::point("mount:intent");
        let flags = MountFlags {
            nodev: !req.dev,
            nosuid: mode == MountMode::ReadOnly,
        };
        if let Err(e) = self.driver.mount(&chain, &target, mode, flags) {
            let e = PoolError::driver("mount", name, e);
            let rb = self
                .store
                .tx("roll back mount", |t| t.remove_mount(&target, ns));
            return Err(e.with_rollback(rb));
        }
        crash::point("mount:mounted");
        self.store
            .tx("record mount done", |t| t.settle_mount(&target, ns))?;
        Ok(mode)
    }

    /// `layer umount`: unmounts `name` at `target`, or everywhere it is mounted.
    pub fn umount(&mut self, name: &str, target: Option<&Path>) -> Result<Vec<PathBuf>> {
        let rec = self.lookup(name)?;
        let target = target.map(|t| t.canonicalize().unwrap_or_else(|_| t.to_path_buf()));
        let mounts: Vec<MountRecord> = self
            .store
            .mounts()?
            .into_iter()
            .filter(|m| m.layer == rec.id && target.as_ref().is_none_or(|t| &m.target == t))
            .collect();
        if mounts.is_empty() {
            return Err(PoolError::Refused {
                op: "umount",
                layer: name.to_string(),
                reason: match target {
                    Some(t) => format!("not mounted at {}", t.display()),
                    None => "not mounted".into(),
                },
            });
        }
        let mut done = Vec::new();
        let tables = tables_for(&mounts)?;
        for m in mounts {
            self.unmount_record(&m, &tables, name)?;
            done.push(m.target);
        }
        Ok(done)
    }

    /// Unmounts one recorded mount where it lives and forgets it: in this mount namespace
    /// through the driver; in another one from inside it (a service's private namespace).
    pub(super) fn unmount_record(
        &mut self,
        m: &MountRecord,
        tables: &NsTables,
        name: &str,
    ) -> Result<()> {
        match m
            .ns
            .filter(|ns| *ns != tables.own())
            .map(|ns| tables.view(ns))
        {
            None => self
                .driver
                .unmount(&m.target)
                .map_err(|e| PoolError::driver("unmount", name, e))?,
            Some(NsView::Table { pid, .. }) => mount::unmount_in(pid, &m.target)
                .map_err(|e| PoolError::driver("unmount in another mount namespace", name, e))?,
            Some(NsView::Held) => {
                return Err(PoolError::Refused {
                    op: "umount",
                    layer: name.to_string(),
                    reason: format!(
                        "mounted at {} in mount namespace {}, which no process is in (it is held \
                         open); unmount it there",
                        m.target.display(),
                        m.ns.expect("foreign")
                    ),
                })
            }
            // The namespace died and took the mount with it.
            Some(NsView::Gone) => {}
        }
        self.store
            .tx("record unmount", |t| t.remove_mount(&m.target, m.ns))
    }
}

/// Mount targets as a message lists them.
pub(super) fn joined_targets<'a>(targets: impl Iterator<Item = &'a Path>) -> String {
    targets
        .map(|t| t.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

/// An operation that a layer's mounts can stand in the way of (see
/// [`Pool::refuse_while_mounted`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MountCheck {
    /// `layer commit`: a read-write mount would go on writing to the frozen layer.
    Commit,
    /// `layer rm`: any mount (`--force` unmounts first).
    Remove,
}

impl MountCheck {
    fn blocked_by(self, m: &MountRecord) -> bool {
        match self {
            MountCheck::Commit => m.mode == MountMode::ReadWrite,
            MountCheck::Remove => true,
        }
    }
}

/// Whether a recorded mount still exists, judged in the namespace it was made in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Presence {
    Mounted,
    Gone,
    /// Its namespace exists but cannot be looked into: keep the record.
    Unknown,
}

pub(super) fn presence(m: &MountRecord, tables: &NsTables) -> Presence {
    let found = |mounts: &[mount::MountInfo]| {
        if mounts.iter().any(|mi| mi.target == m.target) {
            Presence::Mounted
        } else {
            Presence::Gone
        }
    };
    match m.ns {
        Some(ns) => match tables.view(ns) {
            NsView::Table { mounts, .. } => found(&mounts),
            NsView::Held => Presence::Unknown,
            NsView::Gone => Presence::Gone,
        },
        // A record of an older blkdrv, namespace unknown: mounted if mounted anywhere.
        None => {
            if tables.all().any(|(_, _, mi)| mi.target == m.target) {
                Presence::Mounted
            } else {
                Presence::Gone
            }
        }
    }
}

pub(super) fn own_ns() -> Result<MountNs> {
    mount::own_namespace().map_err(|e| PoolError::backing("mount namespace", e))
}

/// The mount tables needed to judge `mounts`: only this namespace's while every record is
/// ours; every namespace's otherwise.
pub(super) fn tables_for(mounts: &[MountRecord]) -> Result<NsTables> {
    let own = own_ns()?;
    let r = if mounts.iter().all(|m| m.ns == Some(own)) {
        NsTables::own_only()
    } else {
        NsTables::read()
    };
    r.map_err(|e| PoolError::backing("mount tables", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(mode: MountMode) -> MountRecord {
        MountRecord {
            target: PathBuf::from("/mnt/x"),
            ns: None,
            layer: ObjectId::new(1).expect("valid id"),
            mode,
            settled: true,
        }
    }

    #[test]
    fn commit_is_blocked_by_writers_only_and_remove_by_any_mount() {
        let (rw, ro) = (record(MountMode::ReadWrite), record(MountMode::ReadOnly));
        assert!(MountCheck::Commit.blocked_by(&rw));
        assert!(!MountCheck::Commit.blocked_by(&ro));
        assert!(MountCheck::Remove.blocked_by(&rw));
        assert!(MountCheck::Remove.blocked_by(&ro));
    }
}
