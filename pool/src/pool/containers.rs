//! Containers: a writable layer on an image plus the mounts it records (`blkdrv container`).

use super::types::{
    ContainerInfo, ContainerMounted, ContainerRemoved, ContainerSpec, HistoryEntry, LayerInfo,
};
use super::Pool;
use crate::container::ContainerName;
use crate::error::{PoolError, Result};
use crate::layer::{LayerComment, LayerName};
use std::path::{Path, PathBuf};

fn todo<T>(what: &str) -> Result<T> {
    Err(PoolError::Invalid(format!("{what}: not implemented yet")))
}

impl Pool {
    /// `container create`: the writable layer on `spec.image`, named volumes that do not exist
    /// created, anonymous ones made, new empty volumes filled from the image's directory at
    /// their target (unless `nocopy`). Nothing is created when any part is refused.
    pub fn container_create(
        &mut self,
        name: &ContainerName,
        spec: &ContainerSpec,
    ) -> Result<ContainerInfo> {
        let _ = (name, spec);
        todo("container create")
    }

    pub fn container_list(&self) -> Result<Vec<ContainerInfo>> {
        todo("container ls")
    }

    /// `container inspect`: one container, its writable layer's usage measured.
    pub fn container_inspect(&self, name: &str) -> Result<ContainerInfo> {
        let _ = name;
        todo("container inspect")
    }

    /// `container mount`: assembles the root filesystem at `target` (see [`ContainerMounted`]).
    pub fn container_mount(&mut self, name: &str, target: &Path) -> Result<ContainerMounted> {
        let _ = (name, target);
        todo("container mount")
    }

    /// `container umount`: takes the root filesystem down, in reverse order. Returns what was
    /// unmounted.
    pub fn container_umount(&mut self, name: &str) -> Result<Vec<PathBuf>> {
        let _ = name;
        todo("container umount")
    }

    /// `container commit`: a committed image layer `layer` holding the writable layer's
    /// content now (volumes, binds and tmpfs excluded), on the container's image. The
    /// container goes on as it was.
    pub fn container_commit(
        &mut self,
        name: &str,
        layer: &LayerName,
        comment: Option<&LayerComment>,
    ) -> Result<LayerInfo> {
        let _ = (name, layer, comment);
        todo("container commit")
    }

    /// `container rm`: destroys the writable layer with the container; named volumes stay,
    /// anonymous ones go with `volumes`. A mounted container is refused unless `force`
    /// (which unmounts first).
    pub fn container_remove(
        &mut self,
        name: &str,
        volumes: bool,
        force: bool,
    ) -> Result<ContainerRemoved> {
        let _ = (name, volumes, force);
        todo("container rm")
    }

    /// `blkdrv history`: the chain from `layer` down to its base, top first.
    pub fn history(&self, layer: &str) -> Result<Vec<HistoryEntry>> {
        let _ = layer;
        todo("history")
    }

    /// Records the comment shown by `history` (`layer create --comment`). A layer reused from
    /// the build cache keeps the comment it was first given.
    pub fn set_comment(&mut self, layer: &str, comment: &LayerComment) -> Result<()> {
        let _ = (layer, comment);
        todo("layer comment")
    }
}
