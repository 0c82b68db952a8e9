//! The volume workload: an empty volume's create, its fill through a container's mount, a
//! native clone (`volume create --from`) of a small and a large volume, a plain copy of the
//! same data (a new volume and the files copied across two mounts, what users do without
//! clones), and the first 4 KiB write into a file the clone inherited.

use crate::bench::{drop_caches, e2s, mib, secs, Bench, R};
use crate::report::Unit;
use blkdrv_pool::{
    ContainerName, ContainerPath, ContainerSpec, MountEntry, MountSource, VolumeName, VolumeSpec,
};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::time::Instant;

fn volume_at(name: &str, target: &str) -> R<MountEntry> {
    Ok(MountEntry {
        source: MountSource::Volume {
            name: Some(VolumeName::new(name).map_err(e2s)?),
            anonymous: false,
            nocopy: true,
        },
        target: ContainerPath::new(target).map_err(e2s)?,
        readonly: false,
    })
}

impl Bench {
    fn fresh_name(&mut self, prefix: &str) -> String {
        self.fresh(prefix).to_string()
    }

    fn volume(&mut self, name: &str, from: Option<&str>) -> R<()> {
        let spec = VolumeSpec {
            from: from.map(str::to_string),
            ..VolumeSpec::default()
        };
        let name = VolumeName::new(name).map_err(e2s)?;
        self.pool()
            .volume_create(Some(&name), &spec)
            .map_err(|e| format!("volume create {name}: {e}"))
            .map(drop)
    }

    /// A container on `image` with `volumes` (name, target), mounted: its root.
    fn container_with(&mut self, image: &str, volumes: &[(&str, &str)]) -> R<(String, PathBuf)> {
        let name = self.fresh_name("ctr");
        let mounts = volumes
            .iter()
            .map(|(v, t)| volume_at(v, t))
            .collect::<R<Vec<_>>>()?;
        let spec = ContainerSpec {
            image: image.to_string(),
            mounts,
            limit: None,
        };
        let cname = ContainerName::new(&name).map_err(e2s)?;
        self.pool()
            .container_create(&cname, &spec)
            .map_err(|e| format!("container create {name}: {e}"))?;
        let root = self.work.join(&name);
        self.pool()
            .container_mount(&name, &root)
            .map_err(|e| format!("container mount {name}: {e}"))?;
        self.containers.push(name.clone());
        Ok((name, root))
    }

    fn container_done(&mut self, name: &str) -> R<()> {
        self.containers.retain(|c| c != name);
        self.pool()
            .container_umount(name)
            .map_err(|e| format!("container umount {name}: {e}"))?;
        self.pool()
            .container_remove(name, true, false)
            .map_err(|e| format!("container rm {name}: {e}"))
            .map(drop)
    }

    pub(crate) fn volumes(&mut self) -> R<()> {
        let (small, large) = (self.sizes.volume_small, self.sizes.volume_large);
        let image = self.blob_layer(self.sizes.small_parent)?;
        let big = mib(large);
        let mut create = Vec::new();
        let mut fill = Vec::new();
        let (mut clone_small, mut clone_large) = (Vec::new(), Vec::new());
        let mut copy = Vec::new();
        let mut first = Vec::new();
        for i in 0..self.total_runs() {
            let (vs, vl) = (self.fresh_name("vsmall"), self.fresh_name("vlarge"));
            let t = Instant::now();
            self.volume(&vs, None)?;
            let tc = t.elapsed();
            self.volume(&vl, None)?;
            let (ctr, root) = self.container_with(&image, &[(&vs, "/small"), (&vl, "/large")])?;
            Self::write_and_sync(&root.join("small/blob"), &mut self.rng, small)?;
            let t = Instant::now();
            Self::write_and_sync(&root.join("large/blob"), &mut self.rng, large)?;
            let tf = t.elapsed();
            self.container_done(&ctr)?;

            // The clones: constant time where the driver clones natively. (The fill was synced;
            // caches are dropped only where a timing reads or copies up data.)
            let (cs, cl) = (self.fresh_name("csmall"), self.fresh_name("clarge"));
            let t = Instant::now();
            self.volume(&cs, Some(&vs))?;
            let tcs = t.elapsed();
            let t = Instant::now();
            self.volume(&cl, Some(&vl))?;
            let tcl = t.elapsed();

            // The same data by hand: a new volume, both mounted, the file copied, synced.
            drop_caches();
            let cp = self.fresh_name("copy");
            let t = Instant::now();
            self.volume(&cp, None)?;
            let (ctr, root) = self.container_with(&image, &[(&vl, "/src"), (&cp, "/dst")])?;
            std::fs::copy(root.join("src/blob"), root.join("dst/blob")).map_err(e2s)?;
            std::fs::File::open(root.join("dst/blob"))
                .and_then(|f| f.sync_all())
                .map_err(e2s)?;
            let tcp = t.elapsed();
            self.container_done(&ctr)?;

            // The first write into a block the clone shares with its source.
            let (ctr, root) = self.container_with(&image, &[(&cl, "/data")])?;
            let mut block = vec![0u8; 4096];
            self.rng.fill(&mut block);
            drop_caches();
            let t = Instant::now();
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(root.join("data/blob"))
                .map_err(e2s)?;
            f.write_all_at(&block, large.0 / 2).map_err(e2s)?;
            f.sync_all().map_err(e2s)?;
            let tw = t.elapsed();
            drop(f);
            self.container_done(&ctr)?;

            for v in [&cs, &cl, &cp, &vs, &vl] {
                self.pool()
                    .volume_remove(v)
                    .map_err(|e| format!("volume rm {v}: {e}"))?;
            }
            if i > 0 {
                create.push(secs(tc));
                fill.push(secs(tf));
                clone_small.push(secs(tcs));
                clone_large.push(secs(tcl));
                copy.push(secs(tcp));
                first.push(secs(tw));
            }
        }
        self.row("volume", "create", "empty", Unit::Seconds, create);
        self.row("volume", "fill", &big, Unit::Seconds, fill);
        self.row("volume", "clone", &mib(small), Unit::Seconds, clone_small);
        self.row("volume", "clone", &big, Unit::Seconds, clone_large);
        self.row("volume", "copy", &big, Unit::Seconds, copy);
        let param = format!("4 KiB into a {big} clone");
        self.row("volume", "first_write", &param, Unit::Seconds, first);
        Ok(())
    }
}
