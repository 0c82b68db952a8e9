#![allow(dead_code)] // Each test binary uses part of it.

//! A driver opened directly, without a pool store: for the layer operations the CLI does not
//! reach by itself (volumes, `clone_active`), tested per driver. The pool is formatted on
//! sparse loopback files in a temp dir of the kit's run dir; dropping it destroys the driver's
//! backing (zpool, dm devices, mount), detaches the loop devices and deletes the files, even when
//! a case fails.

use blkdrv_drivers::sys::{loopdev, mount};
use blkdrv_drivers::{
    registry, BackingPlan, BackingRequest, Bytes, Driver, DriverFactory, DriverOptions, Identity,
    LayerChain, MountFlags, MountMode, ObjectId, PoolContext,
};
use std::path::{Path, PathBuf};

pub struct Direct {
    pub driver: Box<dyn Driver>,
    pub dir: PathBuf,
    factory: &'static dyn DriverFactory,
    ctx: PoolContext,
    identity: Identity,
    loops: Vec<loopdev::AttachedLoop>,
    mounts: std::cell::RefCell<Vec<PathBuf>>,
    _tmp: tempfile::TempDir,
}

pub fn id(n: u32) -> ObjectId {
    ObjectId::new(n).unwrap()
}

impl Direct {
    /// A fresh pool of `driver` on loopback files of `size`, with `options` (`-o` pairs).
    pub fn new(driver: &str, size: Bytes, options: &[(&str, &str)]) -> Result<Direct, String> {
        let f = registry::get(driver).ok_or(format!("no driver {driver}"))?;
        let opts: DriverOptions = options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let opts = f.validate_options(&opts).map_err(|e| e.to_string())?;
        std::fs::create_dir_all(kit::pool::run_dir()).map_err(|e| e.to_string())?;
        let tmp = tempfile::Builder::new()
            .prefix(&format!("direct-{driver}-"))
            .tempdir_in(kit::pool::run_dir())
            .map_err(|e| e.to_string())?;
        let dir = tmp.path().to_path_buf();
        let plan = f
            .plan(
                &opts,
                &BackingRequest {
                    size: Some(size),
                    default_size: size,
                    devices: Vec::new(),
                    option_devices: Default::default(),
                },
            )
            .map_err(|e| e.to_string())?;
        let BackingPlan::Loopback { files, .. } = plan else {
            return Err(format!("{driver}: not a loopback plan"));
        };
        let mut loops = Vec::new();
        let mut backing_files = std::collections::BTreeMap::new();
        for lf in files {
            let file = dir.join(lf.stem);
            loopdev::create_sparse_file(&file, lf.size).map_err(|e| e.to_string())?;
            let l = loopdev::attach(&file).map_err(|e| e.to_string())?;
            backing_files.insert(l.path.clone(), file.canonicalize().unwrap());
            loops.push(l);
        }
        let state_dir = dir.join("driver");
        std::fs::create_dir_all(&state_dir).map_err(|e| e.to_string())?;
        let ctx = PoolContext {
            pool: "direct".into(),
            state_dir,
            devices: loops.iter().map(|l| l.path.clone()).collect(),
            backing_files,
            options: opts,
            generation: None,
        };
        let identity = f.format(&ctx).map_err(|e| format!("format: {e}"))?;
        let driver = f.open(&ctx, &identity).map_err(|e| format!("open: {e}"))?;
        Ok(Direct {
            driver,
            dir,
            factory: f,
            ctx,
            identity,
            loops,
            mounts: Default::default(),
            _tmp: tmp,
        })
    }

    /// Mounts object `id` (a volume or active layer) read-write at a new dir; unmounted on drop
    /// unless [`Direct::unmount`] did it.
    pub fn mount_rw(&self, chain: &LayerChain) -> Result<PathBuf, String> {
        let target = self.dir.join(format!("m{}", chain.id));
        std::fs::create_dir_all(&target).map_err(|e| e.to_string())?;
        self.driver
            .mount(chain, &target, MountMode::ReadWrite, MountFlags::default())
            .map_err(|e| format!("mount {}: {e}", chain.id))?;
        self.mounts.borrow_mut().push(target.clone());
        Ok(target)
    }

    pub fn unmount(&self, target: &Path) -> Result<(), String> {
        self.driver
            .unmount(target)
            .map_err(|e| format!("unmount {}: {e}", target.display()))?;
        self.mounts.borrow_mut().retain(|m| m != target);
        Ok(())
    }

    /// Deactivates the backing and opens it again, as after a reboot (nothing may be mounted).
    pub fn reopen(&mut self) -> Result<(), String> {
        self.driver
            .deactivate()
            .map_err(|e| format!("deactivate: {e}"))?;
        self.driver = self
            .factory
            .open(&self.ctx, &self.identity)
            .map_err(|e| format!("open again: {e}"))?;
        Ok(())
    }

    /// The objects on disk.
    pub fn list(&self) -> Result<Vec<ObjectId>, String> {
        self.driver.list().map_err(|e| e.to_string())
    }
}

impl Drop for Direct {
    fn drop(&mut self) {
        for m in self.mounts.borrow().iter().rev() {
            if let Err(e) = self.driver.unmount(m) {
                eprintln!("cleanup: unmount {}: {e}", m.display());
                let _ = mount::detach_mounts(std::slice::from_ref(m));
            }
        }
        if let Err(e) = self.driver.destroy() {
            eprintln!("cleanup: destroy the direct pool: {e}");
        }
        for l in &self.loops {
            let _ = loopdev::detach(&l.path);
        }
    }
}

/// Writes `len` bytes of a repeating pattern to `path` and syncs it: the error of whichever
/// step fails (ENOSPC, EDQUOT).
pub fn write_synced(path: &Path, len: usize) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    let chunk = vec![0x5au8; 1 << 20];
    let mut left = len;
    while left > 0 {
        let n = left.min(chunk.len());
        f.write_all(&chunk[..n])?;
        left -= n;
    }
    f.sync_all()
}

/// Maps an error to a message saying what failed.
fn e<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> String {
    move |err| format!("{what}: {err}")
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> String {
    e(what)
}

fn check(ok: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if ok {
        Ok(())
    } else {
        Err(what())
    }
}

fn sorted(mut ids: Vec<ObjectId>) -> Vec<ObjectId> {
    ids.sort();
    ids
}

/// Volumes and their copies on any driver: a copy of a volume mounted read-write holds what
/// the source held at the copy (hardlinks kept), the two diverge afterwards, either can be
/// removed first and both leave nothing, removes repeat, and a copy made again replaces the
/// first.
pub fn volume_copies(d: &Direct) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let (v, c) = (LayerChain::volume(id(1)), id(2));
    d.driver
        .create_volume(v.id, None)
        .map_err(e("create volume"))?;
    let m = d.mount_rw(&v)?;
    std::fs::write(m.join("a"), b"before").map_err(io("write a"))?;
    std::fs::hard_link(m.join("a"), m.join("a2")).map_err(io("link a2"))?;
    d.driver
        .clone_active(&v, c)
        .map_err(e("clone a mounted volume"))?;
    std::fs::write(m.join("b"), b"after").map_err(io("write b"))?;
    let mc = d.mount_rw(&LayerChain::volume(c))?;
    let got = std::fs::read(mc.join("a")).map_err(io("read the copy's a"))?;
    check(got == b"before", || format!("the copy's a: {got:?}"))?;
    let (i1, i2) = (
        std::fs::metadata(mc.join("a")).map_err(io("stat a"))?.ino(),
        std::fs::metadata(mc.join("a2"))
            .map_err(io("stat a2"))?
            .ino(),
    );
    check(i1 == i2, || {
        "a hardlink became two files in the copy".into()
    })?;
    check(!mc.join("b").exists(), || {
        "a write after the copy reached it".into()
    })?;
    std::fs::write(mc.join("c"), b"copy").map_err(io("write c"))?;
    check(!m.join("c").exists(), || {
        "a write into the copy reached the source".into()
    })?;
    d.unmount(&m)?;
    d.unmount(&mc)?;
    // The source first.
    d.driver.remove(v.id).map_err(e("remove the source"))?;
    d.driver
        .remove(v.id)
        .map_err(e("remove the source again"))?;
    check(d.list()? == [c], || {
        format!("after removing the source: {:?}", d.list())
    })?;
    let mc = d.mount_rw(&LayerChain::volume(c))?;
    let got = std::fs::read(mc.join("a")).map_err(io("read a after the source went"))?;
    check(got == b"before", || {
        format!("a after the source went: {got:?}")
    })?;
    d.unmount(&mc)?;
    d.driver.remove(c).map_err(e("remove the copy"))?;
    check(d.list()?.is_empty(), || format!("left: {:?}", d.list()))?;

    // The copy first; then a copy made twice (a crash's leftover) is replaced.
    let (v, c) = (LayerChain::volume(id(3)), id(4));
    d.driver
        .create_volume(v.id, None)
        .map_err(e("create volume 3"))?;
    d.driver.clone_active(&v, c).map_err(e("clone 3"))?;
    d.driver.remove(c).map_err(e("remove the copy first"))?;
    check(d.list()? == [v.id], || {
        format!("after removing the copy: {:?}", d.list())
    })?;
    d.driver.clone_active(&v, c).map_err(e("clone 3 again"))?;
    d.driver
        .clone_active(&v, c)
        .map_err(e("clone 3 over its leftover"))?;
    check(sorted(d.list()?) == [v.id, c], || {
        format!("after two clones: {:?}", d.list())
    })?;
    d.driver.remove(v.id).map_err(e("remove 3"))?;
    d.driver.remove(c).map_err(e("remove 4"))?;
    check(d.list()?.is_empty(), || format!("left: {:?}", d.list()))
}

/// A copy of an active layer on a committed ancestor sits on the same ancestor and carries the
/// layer's own changes, deletions included (overlay: whiteouts and opaque dirs in the upper).
pub fn layer_copy_keeps_deletions(d: &Direct) -> Result<(), String> {
    let base = LayerChain {
        id: id(10),
        active: true,
        ancestors: vec![],
    };
    d.driver.create(&base).map_err(e("create base"))?;
    let m = d.mount_rw(&base)?;
    std::fs::write(m.join("gone"), b"x").map_err(io("write gone"))?;
    std::fs::create_dir(m.join("d")).map_err(io("mkdir d"))?;
    std::fs::write(m.join("d/old"), b"x").map_err(io("write d/old"))?;
    d.unmount(&m)?;
    let base = LayerChain {
        active: false,
        ..base
    };
    d.driver.commit(&base).map_err(e("commit base"))?;
    let top = LayerChain {
        id: id(11),
        active: true,
        ancestors: vec![base.id],
    };
    d.driver.create(&top).map_err(e("create top"))?;
    let m = d.mount_rw(&top)?;
    std::fs::remove_file(m.join("gone")).map_err(io("rm gone"))?;
    std::fs::remove_dir_all(m.join("d")).map_err(io("rm d"))?;
    std::fs::create_dir(m.join("d")).map_err(io("mkdir d again"))?;
    std::fs::write(m.join("d/new"), b"y").map_err(io("write d/new"))?;
    let copy = LayerChain {
        id: id(12),
        ..top.clone()
    };
    d.driver
        .clone_active(&top, copy.id)
        .map_err(e("clone top"))?;
    d.unmount(&m)?;
    let mc = d.mount_rw(&copy)?;
    let names = |p: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(p)
            .map(|r| {
                r.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let (top_names, d_names) = (names(&mc), names(&mc.join("d")));
    d.unmount(&mc)?;
    check(!top_names.contains(&"gone".to_string()), || {
        format!("a deleted file came back in the copy: {top_names:?}")
    })?;
    check(d_names == ["new"], || {
        format!("the replaced dir of the copy holds {d_names:?}")
    })?;
    for l in [top.id, copy.id, base.id] {
        d.driver.remove(l).map_err(e("remove"))?;
    }
    check(d.list()?.is_empty(), || format!("left: {:?}", d.list()))
}
