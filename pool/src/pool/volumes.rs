//! Volumes: named data outside the layer tree that outlives containers (`blkdrv volume`).

use super::types::{VolumeInfo, VolumeSpec};
use super::Pool;
use crate::container::VolumeName;
use crate::error::{PoolError, Result};

fn todo<T>(what: &str) -> Result<T> {
    Err(PoolError::Invalid(format!("{what}: not implemented yet")))
}

impl Pool {
    /// `volume create`: an empty volume, or with `spec.from` a native clone of another one.
    /// `name: None` names it like Docker's anonymous volumes (64 hex digits).
    pub fn volume_create(
        &mut self,
        name: Option<&VolumeName>,
        spec: &VolumeSpec,
    ) -> Result<VolumeInfo> {
        let _ = (name, spec);
        todo("volume create")
    }

    /// `volume ls`: every volume, sizes not measured.
    pub fn volume_list(&self) -> Result<Vec<VolumeInfo>> {
        todo("volume ls")
    }

    /// `volume inspect`: one volume, its usage measured.
    pub fn volume_inspect(&self, name: &str) -> Result<VolumeInfo> {
        let _ = name;
        todo("volume inspect")
    }

    /// `volume rm`: refused while a container uses it (`force` does not override that, as in
    /// Docker).
    pub fn volume_remove(&mut self, name: &str) -> Result<()> {
        let _ = name;
        todo("volume rm")
    }

    /// `volume prune`: removes unused anonymous volumes, with `all` unused named ones too
    /// (Docker 23's rule). Returns the names removed.
    pub fn volume_prune(&mut self, all: bool) -> Result<Vec<String>> {
        let _ = all;
        todo("volume prune")
    }
}
