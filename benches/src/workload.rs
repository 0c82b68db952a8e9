//! The workloads: one table (name, what it measures, the phases it reports, the function that
//! runs it) and the functions, each timing its phases on one variant's [`Bench`].

use crate::bench::{drop_caches, e2s, mib, secs, Bench, R};
use crate::gen;
use crate::report::Unit;
use blkdrv_pool::{Bytes, Source};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

/// One workload.
#[derive(Debug)]
pub struct Workload {
    pub name: &'static str,
    /// What it measures, for `blkdrv bench --help`.
    pub about: &'static str,
    /// The phases it reports rows for, in the order it measures them.
    pub phases: &'static [&'static str],
    /// It needs the generated rootfs tree (made once per run, shared by every variant).
    pub uses_rootfs: bool,
    pub(crate) run: fn(&mut Bench) -> R<()>,
}

/// Every workload, in the order they run and are reported.
pub static WORKLOADS: &[Workload] = &[
    Workload {
        name: "import",
        about: "base image import: a generated rootfs tree as a committed layer",
        phases: &["import", "cache_hit"],
        uses_rootfs: true,
        run: Bench::import,
    },
    Workload {
        name: "create",
        about: "layer create on a small and a large parent, vs the raw kernel operation",
        phases: &["blkdrv", "raw", "commit"],
        uses_rootfs: false,
        run: Bench::create,
    },
    Workload {
        name: "mount",
        about: "mount and unmount of a writable layer",
        phases: &["mount", "umount"],
        uses_rootfs: false,
        run: Bench::mount_umount,
    },
    Workload {
        name: "first_write",
        about: "first and second 4 KiB write into a large inherited file (copy-on-write)",
        phases: &["first", "second"],
        uses_rootfs: false,
        run: Bench::first_write,
    },
    Workload {
        name: "density",
        about: "container layers on one image, each writing 1 MiB: space vs full copies",
        phases: &["layer", "pool_used", "full_copies"],
        uses_rootfs: true,
        run: Bench::density,
    },
    Workload {
        name: "scale",
        about: "many layers in one pool: create time of the first vs the last, layer ls",
        phases: &["create_first", "create_last", "ls"],
        uses_rootfs: false,
        run: Bench::scale,
    },
    Workload {
        name: "seq_read",
        about: "sequential read of a large file through a layer vs a plain host file",
        phases: &["layer", "host_file"],
        uses_rootfs: false,
        run: Bench::seq_read,
    },
    Workload {
        name: "deep_chain",
        about: "read a file from the bottom of a long layer chain",
        phases: &["read_via_bottom", "read_via_top"],
        uses_rootfs: false,
        run: Bench::deep_chain,
    },
    Workload {
        name: "remove",
        about: "layer removal time and whether (and when) the space comes back",
        phases: &["rm", "space_back_after", "space_returned"],
        uses_rootfs: true,
        run: Bench::remove,
    },
    Workload {
        name: "volume",
        about: "volume create, fill, native clone (small vs large) vs a plain copy, first write into a clone",
        phases: &["create", "fill", "clone", "copy", "first_write"],
        uses_rootfs: false,
        run: Bench::volumes,
    },
];

/// The workload called `name`.
pub fn find(name: &str) -> Option<&'static Workload> {
    WORKLOADS.iter().find(|w| w.name == name)
}

/// How long `remove` watches for the space to come back (btrfs frees deleted subvolumes in a
/// background cleaner woken by transaction commits, every 30 s by default).
const SPACE_DEADLINE: Duration = Duration::from_secs(10);

impl Bench {
    pub(crate) fn import(&mut self) -> R<()> {
        let param = format!("{} files, {}", self.tree.files, mib(Bytes(self.tree.bytes)));
        let marker = self.tree_dir.join("etc/bench-run");
        let tree = self.tree_dir.to_path_buf();
        let (mut import, mut cached) = (Vec::new(), Vec::new());
        for i in 0..self.total_runs() {
            // Different content per run: the build cache must not turn run 2 into a lookup.
            std::fs::write(&marker, format!("{}-{i}\n", self.label)).map_err(e2s)?;
            drop_caches();
            let name = self.fresh("import");
            let t = Instant::now();
            let out = self
                .pool()
                .create(&name, None, Source::Dir(&tree), None, &mut |_| {})
                .map_err(e2s)?;
            let took = t.elapsed();
            if out.reused {
                return Err("import was served from the build cache".into());
            }
            // The same content again: the build cache answers.
            let again = self.fresh("import-again");
            let t = Instant::now();
            let hit = self
                .pool()
                .create(&again, None, Source::Dir(&tree), None, &mut |_| {})
                .map_err(e2s)?;
            let hit_took = t.elapsed();
            if !hit.reused {
                return Err("identical content was imported again instead of reused".into());
            }
            if i > 0 {
                import.push(secs(took));
                cached.push(secs(hit_took));
            }
            self.rm(again.as_str())?;
            self.rm(name.as_str())?;
        }
        let _ = std::fs::remove_file(&marker);
        self.row("import", "import", &param, Unit::Seconds, import);
        self.row("import", "cache_hit", &param, Unit::Seconds, cached);
        Ok(())
    }

    pub(crate) fn create(&mut self) -> R<()> {
        // Both parents exist and are on disk before any timing: the first snapshot after an
        // import would otherwise pay for flushing it (btrfs: a whole transaction).
        let sizes = [self.sizes.small_parent, self.sizes.big_parent];
        for size in sizes {
            self.blob_layer(size)?;
        }
        drop_caches();
        for size in sizes {
            let parent = self.blob_layer(size)?;
            let param = format!("parent {}", mib(size));
            let (mut ours, mut raw, mut commit) = (Vec::new(), Vec::new(), Vec::new());
            for i in 0..self.total_runs() {
                let name = self.fresh("create");
                let t = Instant::now();
                self.pool().snapshot(&parent, &name, None).map_err(e2s)?;
                let s = t.elapsed();
                let t = Instant::now();
                self.pool().commit(name.as_str()).map_err(e2s)?;
                let c = t.elapsed();
                self.rm(name.as_str())?;
                let r = self.pool().raw_snapshot(&parent).map_err(e2s)?;
                if i > 0 {
                    ours.push(secs(s));
                    commit.push(secs(c));
                    if let Some(r) = r {
                        raw.push(secs(r));
                    }
                }
            }
            self.row("create", "blkdrv", &param, Unit::Seconds, ours);
            if raw.is_empty() {
                if !self.notes.iter().any(|n| n.0 == "create/raw") {
                    self.notes.push((
                        "create/raw".into(),
                        "no single kernel operation to compare with".into(),
                    ));
                }
            } else {
                self.row("create", "raw", &param, Unit::Seconds, raw);
            }
            self.row("create", "commit", &param, Unit::Seconds, commit);
        }
        Ok(())
    }

    pub(crate) fn mount_umount(&mut self) -> R<()> {
        let parent = self.blob_layer(self.sizes.small_parent)?;
        let name = self.fresh("mount");
        self.pool().snapshot(&parent, &name, None).map_err(e2s)?;
        let (mut m, mut u) = (Vec::new(), Vec::new());
        for i in 0..self.total_runs() {
            let t = Instant::now();
            let target = self.mount(name.as_str(), false)?;
            let tm = t.elapsed();
            let t = Instant::now();
            self.umount(&target)?;
            let tu = t.elapsed();
            if i > 0 {
                m.push(secs(tm));
                u.push(secs(tu));
            }
        }
        self.rm(name.as_str())?;
        self.row("mount", "mount", "writable layer", Unit::Seconds, m);
        self.row("mount", "umount", "writable layer", Unit::Seconds, u);
        Ok(())
    }

    pub(crate) fn first_write(&mut self) -> R<()> {
        let size = self.sizes.cow_file;
        let parent = self.blob_layer(size)?;
        let param = format!("file {}", mib(size));
        let (mut first, mut second) = (Vec::new(), Vec::new());
        let mut block = vec![0u8; 4096];
        for i in 0..self.total_runs() {
            let name = self.fresh("cow");
            self.pool().snapshot(&parent, &name, None).map_err(e2s)?;
            let target = self.mount(name.as_str(), false)?;
            let path = target.join("blob");
            drop_caches();
            self.rng.fill(&mut block);
            // Open for writing is where overlay copies up; fsync makes the write durable so
            // block and extent drivers pay for their copy too.
            let t = Instant::now();
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .map_err(|e| format!("open {}: {e}", path.display()))?;
            f.write_all_at(&block, size.0 / 2).map_err(e2s)?;
            f.sync_all().map_err(e2s)?;
            let t1 = t.elapsed();
            let t = Instant::now();
            f.write_all_at(&block, size.0 / 4).map_err(e2s)?;
            f.sync_all().map_err(e2s)?;
            let t2 = t.elapsed();
            drop(f);
            self.umount(&target)?;
            self.rm(name.as_str())?;
            if i > 0 {
                first.push(secs(t1));
                second.push(secs(t2));
            }
        }
        self.row("first_write", "first", &param, Unit::Seconds, first);
        self.row("first_write", "second", &param, Unit::Seconds, second);
        Ok(())
    }

    pub(crate) fn density(&mut self) -> R<()> {
        let image = self.image()?;
        let n = self.sizes.density_layers;
        let w = self.sizes.density_write;
        let param = format!("{n} layers on a {} image", mib(Bytes(self.tree.bytes)));
        let before = self.settled_used()?;
        let mut times = Vec::new();
        let mut names = Vec::new();
        for _ in 0..n {
            let name = self.fresh("density");
            let t = Instant::now();
            self.pool().snapshot(&image, &name, None).map_err(e2s)?;
            let target = self.mount(name.as_str(), false)?;
            Self::write_and_sync(&target.join("written"), &mut self.rng, w)?;
            self.umount(&target)?;
            times.push(secs(t.elapsed()));
            names.push(name);
        }
        let after = self.settled_used()?;
        for name in names {
            self.rm(name.as_str())?;
        }
        let full = n as u64 * (self.tree.bytes + w.0);
        self.row("density", "layer", &param, Unit::Seconds, times);
        self.row(
            "density",
            "pool_used",
            &param,
            Unit::Bytes,
            vec![after.saturating_sub(before) as f64],
        );
        self.row(
            "density",
            "full_copies",
            &param,
            Unit::Bytes,
            vec![full as f64],
        );
        Ok(())
    }

    pub(crate) fn scale(&mut self) -> R<()> {
        let parent = self.blob_layer(self.sizes.small_parent)?;
        let (n, win) = (self.sizes.scale_layers, self.sizes.scale_window);
        let param = format!("{n} layers");
        let mut times = Vec::with_capacity(n);
        let mut names = Vec::with_capacity(n);
        for _ in 0..n {
            let name = self.fresh("scale");
            let t = Instant::now();
            self.pool().snapshot(&parent, &name, None).map_err(e2s)?;
            times.push(secs(t.elapsed()));
            names.push(name);
        }
        let mut ls = Vec::new();
        for i in 0..self.total_runs() {
            let t = Instant::now();
            let listed = self.pool().list().map_err(e2s)?;
            if i > 0 {
                ls.push(secs(t.elapsed()));
            }
            if listed.len() < n {
                return Err(format!("layer ls shows {} of {n} layers", listed.len()));
            }
        }
        // Newest first: removal of the most recent is the common case and keeps ids dense.
        for name in names.iter().rev() {
            self.rm(name.as_str())?;
        }
        let last = times[n.saturating_sub(win)..].to_vec();
        times.truncate(win);
        self.row("scale", "create_first", &param, Unit::Seconds, times);
        self.row("scale", "create_last", &param, Unit::Seconds, last);
        self.row("scale", "ls", &param, Unit::Seconds, ls);
        Ok(())
    }

    pub(crate) fn seq_read(&mut self) -> R<()> {
        let size = self.sizes.read_file;
        let parent = self.blob_layer(size)?;
        let param = format!("file {}", mib(size));
        let name = self.fresh("read");
        self.pool().snapshot(&parent, &name, None).map_err(e2s)?;
        let target = self.mount(name.as_str(), false)?;
        // The same bytes as a plain file on the filesystem that holds the loopback files.
        let host = self.work.join("host-file");
        Self::write_and_sync(&host, &mut self.rng, size)?;
        let (mut via_layer, mut via_host) = (Vec::new(), Vec::new());
        for i in 0..self.total_runs() {
            let ((n, tl), (_, th)) = if i % 2 == 0 {
                let l = Self::cold_read(&target.join("blob"))?;
                (l, Self::cold_read(&host)?)
            } else {
                let h = Self::cold_read(&host)?;
                (Self::cold_read(&target.join("blob"))?, h)
            };
            if n != size.0 {
                return Err(format!("read {n} bytes of {}", size.0));
            }
            if i > 0 {
                via_layer.push(secs(tl));
                via_host.push(secs(th));
            }
        }
        let _ = std::fs::remove_file(&host);
        self.umount(&target)?;
        self.rm(name.as_str())?;
        self.row("seq_read", "layer", &param, Unit::Seconds, via_layer);
        self.row("seq_read", "host_file", &param, Unit::Seconds, via_host);
        Ok(())
    }

    pub(crate) fn deep_chain(&mut self) -> R<()> {
        let depth = self.sizes.chain_depth;
        let param = format!("{depth} layers, file {}", mib(self.sizes.chain_file));
        let src = self.work.join("chain-src");
        std::fs::create_dir_all(&src).map_err(e2s)?;
        gen::write_file(&src.join("bottom"), self.sizes.chain_file.0, &mut self.rng)
            .map_err(e2s)?;
        let mut chain: Vec<String> = Vec::new();
        for level in 0..depth {
            let name = self.fresh("chain");
            let parent = chain.last().cloned();
            if level > 0 {
                // Each upper layer adds a small file of its own.
                let _ = std::fs::remove_dir_all(&src);
                std::fs::create_dir_all(&src).map_err(e2s)?;
                std::fs::write(src.join(format!("level-{level}")), level.to_string())
                    .map_err(e2s)?;
            }
            self.pool()
                .create(
                    &name,
                    parent.as_deref(),
                    Source::Dir(&src),
                    None,
                    &mut |_| {},
                )
                .map_err(e2s)?;
            chain.push(name.to_string());
        }
        let _ = std::fs::remove_dir_all(&src);
        let bottom = self.mount(&chain[0], true)?;
        let top = self.mount(chain.last().expect("depth >= 1"), true)?;
        let (mut via_bottom, mut via_top) = (Vec::new(), Vec::new());
        for i in 0..self.total_runs() {
            // Alternate which goes first, so neither gets the other's leftovers every time.
            let (tb, tt) = if i % 2 == 0 {
                let tb = Self::cold_read(&bottom.join("bottom"))?.1;
                (tb, Self::cold_read(&top.join("bottom"))?.1)
            } else {
                let tt = Self::cold_read(&top.join("bottom"))?.1;
                (Self::cold_read(&bottom.join("bottom"))?.1, tt)
            };
            if i > 0 {
                via_bottom.push(secs(tb));
                via_top.push(secs(tt));
            }
        }
        self.umount(&top)?;
        self.umount(&bottom)?;
        for name in chain.iter().rev() {
            self.rm(name)?;
        }
        self.row(
            "deep_chain",
            "read_via_bottom",
            &param,
            Unit::Seconds,
            via_bottom,
        );
        self.row("deep_chain", "read_via_top", &param, Unit::Seconds, via_top);
        Ok(())
    }

    pub(crate) fn remove(&mut self) -> R<()> {
        let image = self.image()?;
        let w = self.sizes.remove_write;
        let param = format!("wrote {}, watched {} s", mib(w), SPACE_DEADLINE.as_secs());
        let (mut rm, mut back_after, mut returned) = (Vec::new(), Vec::new(), Vec::new());
        for i in 0..self.total_runs() {
            let name = self.fresh("remove");
            self.pool().snapshot(&image, &name, None).map_err(e2s)?;
            let target = self.mount(name.as_str(), false)?;
            Self::write_and_sync(&target.join("written"), &mut self.rng, w)?;
            self.umount(&target)?;
            let before = self.settled_used()?;
            let t = Instant::now();
            self.rm(name.as_str())?;
            let took = t.elapsed();
            // When has (nearly) all of it come back? btrfs frees in a background cleaner.
            let want = w.0 * 9 / 10;
            let deadline = Instant::now() + SPACE_DEADLINE;
            let back = loop {
                nix::unistd::sync();
                let used = self.pool().status().map_err(e2s)?.space.used.0;
                if before.saturating_sub(used) >= want {
                    break Some(t.elapsed());
                }
                if Instant::now() > deadline {
                    break None;
                }
                std::thread::sleep(Duration::from_millis(50));
            };
            let after = self.settled_used()?;
            if i > 0 {
                rm.push(secs(took));
                // Not back within the deadline: recorded as infinity (JSON null), shown as
                // "timeout".
                back_after.push(back.map_or(f64::INFINITY, secs));
                returned.push(before.saturating_sub(after) as f64);
            }
        }
        self.row("remove", "rm", &param, Unit::Seconds, rm);
        self.row(
            "remove",
            "space_back_after",
            &param,
            Unit::Seconds,
            back_after,
        );
        self.row("remove", "space_returned", &param, Unit::Bytes, returned);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_names_each_workload_and_phase_once() {
        for (i, w) in WORKLOADS.iter().enumerate() {
            assert_eq!(find(w.name).map(|f| f.name), Some(w.name));
            assert!(!w.about.is_empty() && !w.phases.is_empty(), "{}", w.name);
            for (j, p) in w.phases.iter().enumerate() {
                assert!(!w.phases[..j].contains(p), "{}/{p} twice", w.name);
            }
            assert!(!WORKLOADS[..i].iter().any(|o| o.name == w.name));
        }
        assert!(find("nope").is_none());
    }
}
