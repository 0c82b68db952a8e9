//! Volumes: named data outside the layer tree that outlives containers (`blkdrv volume`).
//!
//! A volume's object is a row of `layers` (kind `volume`, owner `volume`, no parent, no name
//! in the layer namespace) with a row of `volumes` naming it, made in the intent transaction:
//! the layer protocol (creating -> active, removing -> gone) then covers volumes too, and the
//! reconciler's undo of a create or finish of a remove takes the volume row with the layer's.
//!
//! Semantics (documented for the CLI):
//! - `volume create NAME` of an existing name with the same options (no `--from`, the same
//!   `--size` and labels) returns the existing volume, as Docker does; other options refuse
//!   with VolumeExists (exit 2).
//! - `volume rm` is refused while any container's mounts name the volume (mounted or not).
//! - `volume prune` removes the volumes no container names: anonymous ones, and with `all`
//!   named ones too (Docker 23's rule).

use super::layers::{Make, NewLayer};
use super::types::{RemoveOutcome, VolumeInfo, VolumeSpec};
use super::{now, Pool};
use crate::container::{MountSource, VolumeName};
use crate::error::{PoolError, Result};
use crate::layer::{LayerKind, LayerOwner, LayerRecord, LayerState};
use crate::store::{ContainerRecord, VolumeRecord};
use blkdrv_drivers::{DriverError, LayerChain};
use std::collections::HashMap;
use std::io::Read;

/// A name for an anonymous volume: 64 hex digits from the kernel's random source, as Docker's.
pub(super) fn anonymous_name() -> Result<VolumeName> {
    let mut b = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut b))
        .map_err(|e| PoolError::io("read random bytes", "/dev/urandom", e))?;
    let s: String = b.iter().map(|x| format!("{x:02x}")).collect();
    VolumeName::new(&s)
}

/// Names of the containers whose mounts name volume `name`.
pub(super) fn users_of(containers: &[ContainerRecord], name: &str) -> Vec<String> {
    containers
        .iter()
        .filter(|c| {
            c.mounts.iter().any(|m| {
                matches!(&m.source, MountSource::Volume { name: Some(n), .. } if n.as_str() == name)
            })
        })
        .map(|c| c.name.clone())
        .collect()
}

/// A driver's refusal of what the user asked (a limit it cannot enforce, no native clone) is
/// the user's error; the rest stays a failure of the operation.
pub(super) fn user_refusal(op: &'static str, name: &str, e: PoolError) -> PoolError {
    let reason = match &e {
        PoolError::Driver { source, .. } => match source.as_ref() {
            DriverError::Unsupported { .. } => source.to_string(),
            // What the driver cannot make of the request (a size below the filesystem's
            // smallest): its reason is the whole story.
            DriverError::Refused { reason, .. } => reason.clone(),
            _ => return e,
        },
        _ => return e,
    };
    PoolError::Refused {
        op,
        layer: name.to_string(),
        reason,
    }
}

impl Pool {
    /// `volume create`: an empty volume, or with `spec.from` a native clone of another one.
    /// `name: None` names it like Docker's anonymous volumes (64 hex digits). See the module
    /// comment for an existing name.
    pub fn volume_create(
        &mut self,
        name: Option<&VolumeName>,
        spec: &VolumeSpec,
    ) -> Result<VolumeInfo> {
        let (name, anonymous) = match name {
            Some(n) => (n.clone(), false),
            None => (anonymous_name()?, true),
        };
        if let Some(v) = self.store.volume(name.as_str())? {
            let layer = self.store.layer(v.layer)?;
            let same = spec.from.is_none()
                && layer.as_ref().map(|l| l.limit) == Some(spec.limit)
                && v.labels == spec.labels
                && layer.is_some_and(|l| l.state == LayerState::Active);
            if same {
                return self.volume_inspect(name.as_str());
            }
            return Err(PoolError::VolumeExists(name.to_string()));
        }
        self.make_volume(&name, spec, anonymous, None)?;
        self.volume_inspect(name.as_str())
    }

    /// Refuses a size limit of 0 or larger than the pool (it could never be reached).
    pub(super) fn check_limit(
        &self,
        op: &'static str,
        name: &str,
        limit: Option<blkdrv_drivers::Bytes>,
    ) -> Result<()> {
        let Some(l) = limit else { return Ok(()) };
        let refuse = |reason: String| PoolError::Refused {
            op,
            layer: name.to_string(),
            reason,
        };
        if l.0 == 0 {
            return Err(refuse("--size must be more than 0".into()));
        }
        let total = self
            .driver
            .space()
            .map_err(|e| PoolError::backing(&self.name, e))?
            .total;
        if l > total {
            return Err(refuse(format!(
                "--size {l} is larger than the pool ({total})"
            )));
        }
        Ok(())
    }

    /// Checks what a new volume needs before anything is made.
    pub(super) fn check_volume_spec(&self, name: &VolumeName, spec: &VolumeSpec) -> Result<()> {
        let refuse = |reason: String| PoolError::Refused {
            op: "volume create",
            layer: name.to_string(),
            reason,
        };
        self.check_limit("volume create", name.as_str(), spec.limit)?;
        if let Some(from) = &spec.from {
            let src = self
                .store
                .volume(from)?
                .ok_or_else(|| PoolError::VolumeNotFound(from.clone()))?;
            let state = self.store.layer(src.layer)?.map(|l| l.state);
            if state != Some(LayerState::Active) {
                return Err(refuse(format!(
                    "volume {from:?} is {}",
                    state.map_or("missing".to_string(), |s| s.to_string())
                )));
            }
        }
        Ok(())
    }

    /// Makes volume `name` (its layer row, its volume row, its object) and completes it.
    /// `made_by`: the container whose create this is part of (undone with it after a crash).
    pub(super) fn make_volume(
        &mut self,
        name: &VolumeName,
        spec: &VolumeSpec,
        anonymous: bool,
        made_by: Option<&str>,
    ) -> Result<VolumeRecord> {
        self.check_volume_spec(name, spec)?;
        let make = match &spec.from {
            Some(from) => {
                let src = self
                    .store
                    .volume(from)?
                    .ok_or_else(|| PoolError::VolumeNotFound(from.clone()))?;
                Make::Clone(LayerChain::volume(src.layer))
            }
            None => Make::Volume,
        };
        self.ensure_space()?;
        let created = now();
        let row = |rec: &LayerRecord| VolumeRecord {
            name: name.to_string(),
            layer: rec.id,
            anonymous,
            origin: spec.from.clone(),
            labels: spec.labels.clone(),
            created,
            made_by: made_by.map(str::to_string),
        };
        let (rec, _) = self
            .begin_create(
                NewLayer {
                    label: name.as_str(),
                    pending_name: None,
                    parent: None,
                    kind: LayerKind::Volume,
                    digest: None,
                    limit: spec.limit,
                    steps: ["volume-create:intent", "volume-create:object"],
                    make,
                },
                |t, rec| {
                    t.set_owner(rec.id, LayerOwner::Volume)?;
                    t.insert_volume(&row(rec))
                },
            )
            .map_err(|e| user_refusal("volume create", name.as_str(), e))?;
        let done = self.store.tx("record volume create done", |t| {
            t.set_state(rec.id, LayerState::Active)
        });
        if let Err(e) = done {
            return Err(e.with_rollback(self.undo_create(rec.id)));
        }
        Ok(row(&rec))
    }

    fn volume_info(
        &self,
        v: &VolumeRecord,
        layers: &HashMap<blkdrv_drivers::ObjectId, LayerRecord>,
        containers: &[ContainerRecord],
        names: &std::collections::BTreeSet<String>,
        measure: bool,
    ) -> VolumeInfo {
        let layer = layers.get(&v.layer);
        let usage = if measure {
            self.driver.usage(&LayerChain::volume(v.layer)).ok()
        } else {
            None
        };
        VolumeInfo {
            name: v.name.clone(),
            id: v.layer.get(),
            // A volume row without its layer row cannot be: the foreign key keeps it.
            state: layer.map_or(LayerState::Removing, |l| l.state),
            created: v.created,
            anonymous: v.anonymous,
            origin: v.origin.clone().filter(|o| names.contains(o)),
            labels: v.labels.clone(),
            limit_bytes: layer.and_then(|l| l.limit).map(|b| b.0),
            size_bytes: usage.map(|u| u.bytes.0),
            referenced_bytes: usage.and_then(|u| u.referenced).map(|b| b.0),
            users: users_of(containers, &v.name),
        }
    }

    /// `volume ls`: every volume, sizes not measured.
    pub fn volume_list(&self) -> Result<Vec<VolumeInfo>> {
        let vols = self.store.volumes()?;
        let layers = self.records()?;
        let containers = self.store.containers()?;
        let names = vols.iter().map(|v| v.name.clone()).collect();
        Ok(vols
            .iter()
            .map(|v| self.volume_info(v, &layers, &containers, &names, false))
            .collect())
    }

    /// `volume inspect`: one volume, its usage measured.
    pub fn volume_inspect(&self, name: &str) -> Result<VolumeInfo> {
        let v = self
            .store
            .volume(name)?
            .ok_or_else(|| PoolError::VolumeNotFound(name.to_string()))?;
        let names = self.store.volumes()?.into_iter().map(|v| v.name).collect();
        Ok(self.volume_info(
            &v,
            &self.records()?,
            &self.store.containers()?,
            &names,
            true,
        ))
    }

    /// `volume rm`: refused while a container uses it (`force` does not override that, as in
    /// Docker).
    pub fn volume_remove(&mut self, name: &str) -> Result<()> {
        let v = self
            .store
            .volume(name)?
            .ok_or_else(|| PoolError::VolumeNotFound(name.to_string()))?;
        let users = users_of(&self.store.containers()?, name);
        if !users.is_empty() {
            return Err(PoolError::Refused {
                op: "volume rm",
                layer: name.to_string(),
                reason: format!(
                    "volume {name} is in use by container(s) {}",
                    users.join(", ")
                ),
            });
        }
        self.remove_volume_record(&v).map(drop)
    }

    /// Removes a volume nothing uses (the layer removal protocol; a busy object defers it).
    pub(super) fn remove_volume_record(&mut self, v: &VolumeRecord) -> Result<RemoveOutcome> {
        let rec = self
            .store
            .layer(v.layer)?
            .ok_or_else(|| PoolError::VolumeNotFound(v.name.clone()))?;
        if rec.state == LayerState::Removing {
            // A deferred removal: try to finish it now.
            return match self.finish_remove(rec.id) {
                Ok(()) => Ok(RemoveOutcome::Removed),
                Err(PoolError::Driver { source, .. })
                    if matches!(*source, DriverError::Busy { .. }) =>
                {
                    Ok(RemoveOutcome::Deferred)
                }
                Err(e) => Err(e),
            };
        }
        if rec.state != LayerState::Active {
            return Err(PoolError::Refused {
                op: "volume rm",
                layer: v.name.clone(),
                reason: format!("volume is {}", rec.state),
            });
        }
        self.remove_record(
            &rec,
            &v.name,
            "volume-remove:intent",
            |_| Ok(()),
            |_| Ok(()),
        )
    }

    /// `volume prune`: removes unused anonymous volumes, with `all` unused named ones too
    /// (Docker 23's rule). Returns the names removed.
    pub fn volume_prune(&mut self, all: bool) -> Result<Vec<String>> {
        let containers = self.store.containers()?;
        let layers = self.records()?;
        let mut removed = Vec::new();
        for v in self.store.volumes()? {
            let active = layers
                .get(&v.layer)
                .is_some_and(|l| l.state == LayerState::Active);
            if (v.anonymous || all) && active && users_of(&containers, &v.name).is_empty() {
                self.remove_volume_record(&v)?;
                removed.push(v.name);
            }
        }
        Ok(removed)
    }
}
