//! vfs: every layer is a full copy of its parent's directory tree. The naive baseline that
//! every copy-on-write driver is measured against. On xfs the copy uses reflinks for file data
//! (per-inode cost remains), on ext4 it copies every byte.

use crate::error::{DriverError, Result};
use crate::fsbacked::{self, FsBacking};
use crate::sys::{mount, tree};
use crate::{Backing, BenchHooks, Layers};
use crate::{
    Bytes, Capabilities, Driver, DriverFactory, DriverOptions, Granularity, Identity, LayerChain,
    MountFlags, MountMode, MountSpec, ObjectId, PoolContext, Requirements, Space, Usage,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const NAME: &str = "vfs";

pub struct Factory;

impl DriverFactory for Factory {
    fn name(&self) -> &'static str {
        NAME
    }

    fn suits(&self, _host: &crate::HostFacts) -> Option<crate::Suitability> {
        Some(crate::Suitability {
            rank: 1,
            why: "the fallback: a full copy per layer, no copy-on-write".into(),
        })
    }

    fn description(&self) -> &'static str {
        "full directory copy per layer (baseline, no copy-on-write)"
    }

    fn init_help(&self) -> &'static str {
        "vfs formats the backing with --fs (xfs by default) and mounts it under the state dir."
    }

    fn requirements(&self) -> Requirements {
        fsbacked::requirements(&[])
    }

    fn min_device_size(&self, options: &DriverOptions) -> Bytes {
        fsbacked::min_device_size(options)
    }

    fn options(&self) -> &'static [crate::OptionSpec] {
        fsbacked::OPTIONS
    }

    fn validate_options(&self, options: &DriverOptions) -> Result<DriverOptions> {
        fsbacked::validate_options(NAME, options)
    }

    fn format(&self, ctx: &PoolContext) -> Result<Identity> {
        fsbacked::format(ctx)
    }

    fn open(&self, ctx: &PoolContext, identity: &Identity) -> Result<Box<dyn Driver>> {
        Ok(Box::new(Vfs {
            backing: FsBacking::open(ctx, identity, NAME)?,
        }))
    }
}

pub struct Vfs {
    backing: FsBacking,
}

impl Vfs {
    fn dir(&self, id: ObjectId) -> PathBuf {
        self.backing.mnt.join(NAME).join(id.to_string())
    }
}

impl Layers for Vfs {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            granularity: Granularity::File {
                reflink: self.backing.fs.reflink(),
            },
            native_snapshots: false,
        }
    }

    fn create(&self, layer: &LayerChain) -> Result<()> {
        let parent = layer.parent().map(|p| self.dir(p));
        fsbacked::create_atomically(&self.dir(layer.id), |tmp| match &parent {
            Some(p) => tree::copy_tree(p, tmp),
            None => Ok(()),
        })
    }

    fn create_volume(&self, id: ObjectId, limit: Option<Bytes>) -> Result<()> {
        if let Some(limit) = limit {
            return Err(fsbacked::refuse_volume_limit(NAME, id, limit));
        }
        self.create(&LayerChain::volume(id))
    }

    // A full copy, as every vfs layer is (reflinked file data on xfs). A source mounted
    // read-write meanwhile is copied as the walk finds it, like `cp -a` of a live tree.
    fn clone_active(&self, source: &LayerChain, new: ObjectId) -> Result<()> {
        let from = self.dir(source.id);
        if !from.is_dir() {
            return Err(DriverError::NotFound {
                id: source.id,
                op: "clone",
            });
        }
        fsbacked::create_atomically(&self.dir(new), |tmp| tree::copy_tree(&from, tmp))
    }

    // Nothing to freeze on disk: the pool mounts committed layers read-only.
    fn commit(&self, _layer: &LayerChain) -> Result<()> {
        Ok(())
    }

    fn mount(
        &self,
        layer: &LayerChain,
        target: &Path,
        mode: MountMode,
        flags: MountFlags,
    ) -> Result<()> {
        mount::bind(&self.dir(layer.id), target, flags.ms(mode))
    }

    // The layer is a plain directory on the backing, which is mounted in the host's namespace:
    // a bind of it is what containerd's native snapshotter hands out too.
    fn export(
        &self,
        layer: &LayerChain,
        mode: MountMode,
        flags: MountFlags,
    ) -> Result<Vec<MountSpec>> {
        let dir = self.dir(layer.id);
        if !dir.is_dir() {
            return Err(DriverError::NotFound {
                id: layer.id,
                op: "export",
            });
        }
        let source = self.backing.export_source(&dir, flags)?;
        Ok(vec![MountSpec::bind(&source, mode, flags)])
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        mount::unmount(target)
    }

    fn remove(&self, id: ObjectId) -> Result<()> {
        // Deleting a directory under a live mount would leave that mount empty: ask the mount
        // tables of every namespace, not only the pool's records.
        mount::users_of_dir(&self.dir(id), &self.backing.mnt)?.check_remove(id, "the layer")?;
        fsbacked::remove_object(&self.dir(id))
    }

    fn list(&self) -> Result<Vec<ObjectId>> {
        fsbacked::list_ids(&self.backing.mnt.join(NAME))
    }

    fn usage(&self, layer: &LayerChain) -> Result<Usage> {
        let (bytes, inodes) = tree::disk_usage(&self.dir(layer.id))?;
        Ok(Usage {
            bytes,
            inodes: Some(inodes),
            referenced: None,
        })
    }
}

impl Backing for Vfs {
    fn space(&self) -> Result<Space> {
        self.backing.space()
    }

    fn deactivate(&self) -> Result<()> {
        self.backing.deactivate()
    }

    fn grow(&self) -> Result<()> {
        self.backing.grow()
    }
}

impl Driver for Vfs {
    fn bench(&self) -> Option<&dyn BenchHooks> {
        Some(self)
    }
}

impl BenchHooks for Vfs {
    // The raw operation is the same tree copy without the create-then-rename dance.
    fn raw_snapshot(&self, parent: &LayerChain) -> Result<Duration> {
        let dst = self.backing.mnt.join(NAME).join(".bench-raw");
        fsbacked::remove_object(&dst)?;
        std::fs::create_dir(&dst).map_err(|e| DriverError::io("create", &dst, e))?;
        let t = Instant::now();
        let copied = tree::copy_tree(&self.dir(parent.id), &dst);
        let took = t.elapsed();
        let cleaned = fsbacked::remove_object(&dst);
        copied?;
        cleaned?;
        Ok(took)
    }
}
