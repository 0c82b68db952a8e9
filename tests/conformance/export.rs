//! Mounts another process performs (`Pool::export`, what the containerd snapshotter hands out):
//! the specs are mounted by a child process (this binary re-executed), the way containerd's
//! mount package does it (mount/mount_linux.go: known words become mount(2) flags, the rest
//! is the data string, at most one page; a read-only bind is remounted read-only), never by
//! the pool. The child mounts in the host's mount namespace, as containerd and the runc shim
//! do; this process checks the content, unmounts (through a guard) and removes the layers.

use blkdrv_pool::pool::RemoveOutcome;
use blkdrv_pool::{ExportPolicy, MountSpec, Pool};
use kit::ensure;
use kit::pool::*;
use nix::mount::MntFlags;
use std::fs;
use std::path::{Path, PathBuf};

/// Set in the child's environment: `[spec, target]` as JSON.
const ENV_MOUNT: &str = "BLKDRV_TEST_EXPORT_MOUNT";
use kit::ctrmount::PAGE;

/// In mount-child mode, performs the mount passed in the environment and exits; otherwise
/// returns.
pub fn maybe_mount_child() {
    let Ok(arg) = std::env::var(ENV_MOUNT) else {
        return;
    };
    let (spec, target): (MountSpec, PathBuf) =
        serde_json::from_str(&arg).expect("mount child argument is JSON");
    match mount_like_containerd(&spec, &target) {
        Ok(()) => std::process::exit(0),
        Err(e) => {
            eprintln!("mount {spec:?} at {}: {e}", target.display());
            std::process::exit(1);
        }
    }
}

/// containerd's mount(2) calls for `spec` (the kit's one imitation of its mount package).
fn mount_like_containerd(spec: &MountSpec, target: &Path) -> Result<(), String> {
    kit::ctrmount::mount_like_containerd(&spec.fstype, &spec.source, &spec.options, target)
}

/// A mount made by the child, unmounted when dropped (detached if busy), so that a failed case
/// leaves nothing mounted.
struct ChildMount {
    target: tempfile::TempDir,
    mounted: bool,
}

impl ChildMount {
    /// Mounts the one spec of `specs` at a fresh dir under the test's scratch space, from a
    /// child process.
    fn new(tp: &TestPool, specs: &[MountSpec]) -> Result<ChildMount, String> {
        let [spec] = specs else {
            return Err(format!("expected one mount, got {specs:?}"));
        };
        let target = tempfile::tempdir_in(&tp.scratch).map_err(|e| e.to_string())?;
        let arg = serde_json::to_string(&(spec, target.path())).map_err(|e| e.to_string())?;
        let out = std::process::Command::new(std::env::current_exe().map_err(|e| e.to_string())?)
            .env(ENV_MOUNT, arg)
            .output()
            .map_err(|e| format!("start mount child: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount child ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(ChildMount {
            target,
            mounted: true,
        })
    }

    fn path(&self) -> &Path {
        self.target.path()
    }

    fn unmount(mut self) -> Result<(), String> {
        self.mounted = false;
        nix::mount::umount(self.target.path())
            .map_err(|e| format!("unmount {}: {e}", self.target.path().display()))
    }
}

impl Drop for ChildMount {
    fn drop(&mut self) {
        if self.mounted {
            let _ = nix::mount::umount2(self.target.path(), MntFlags::MNT_DETACH);
        }
    }
}

fn is_erofs(r: std::io::Result<()>) -> bool {
    matches!(r, Err(e) if e.raw_os_error() == Some(nix::libc::EROFS))
}

/// Checks every spec keeps the container rules: never `nosuid`; `nodev` exactly when the
/// policy asks; `ro` exactly for read-only exports; absolute host paths.
fn check_specs(specs: &[MountSpec], ro: bool, policy: ExportPolicy) -> Result<(), String> {
    for s in specs {
        let has = |w: &str| s.options.iter().any(|o| o == w);
        ensure_s(!has("nosuid"), &format!("no nosuid: {s:?}"))?;
        ensure_s(
            has("nodev") != policy.dev,
            &format!("nodev by policy: {s:?}"),
        )?;
        ensure_s(
            has("ro") == ro,
            &format!("ro exactly when read-only: {s:?}"),
        )?;
        for p in layer_paths(s) {
            ensure_s(p.is_absolute(), &format!("absolute layer paths: {s:?}"))?;
        }
    }
    Ok(())
}

/// Paths a spec names that belong to the layers (bind sources, overlay dirs, dm device links),
/// as opposed to the pool's device (btrfs) or a dataset name (zfs): they must be gone once the
/// layers are removed.
fn layer_paths(s: &MountSpec) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if s.fstype == "bind" || s.source.starts_with("/dev/mapper/") {
        out.push(PathBuf::from(&s.source));
    }
    for o in &s.options {
        if let Some((k, v)) = o.split_once('=') {
            if matches!(k, "lowerdir" | "upperdir" | "workdir") {
                out.extend(v.split(':').map(PathBuf::from));
            }
        }
    }
    out
}

fn ensure_s(cond: bool, what: &str) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(format!("check failed: {what}"))
    }
}

fn export(
    pool: &Pool,
    name: &str,
    ro: bool,
    policy: ExportPolicy,
) -> Result<Vec<MountSpec>, String> {
    let specs = pool
        .export(name, ro, policy)
        .map_err(|e| format!("export {name}: {e}"))?;
    check_specs(&specs, ro, policy)?;
    Ok(specs)
}

/// Removes `names` in order and checks the pool and the driver keep nothing of them: no
/// record, no object on disk, none of the paths the exports named.
fn remove_all(pool: &mut Pool, names: &[&str], exported: &[MountSpec]) -> Result<(), String> {
    for n in names {
        let out = pool
            .remove(n, false)
            .map_err(|e| format!("remove {n}: {e}"))?;
        ensure_s(
            matches!(out, RemoveOutcome::Removed),
            &format!("{n} removed at once, got {out:?}"),
        )?;
    }
    let left = pool.list().map_err(|e| e.to_string())?;
    ensure_s(left.is_empty(), &format!("no layers left: {left:?}"))?;
    let report = pool.check(false).map_err(|e| format!("check: {e}"))?;
    ensure_s(report.is_clean(), &format!("pool check clean: {report:?}"))?;
    for s in exported {
        for p in layer_paths(s) {
            ensure_s(
                fs::symlink_metadata(&p).is_err(),
                &format!("{} gone with its layer", p.display()),
            )?;
        }
    }
    Ok(())
}

const NODEV: ExportPolicy = ExportPolicy { dev: false };
const DEV: ExportPolicy = ExportPolicy { dev: true };

/// An active layer on a three-layer chain exported read-write, then committed and exported
/// read-only, and its committed parent exported read-only: each mounted by another process.
pub fn mounts_by_another_process(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    import_dir(&tp, &mut pool, "base", None, |p| {
        fs::write(p.join("a"), "a1")?;
        fs::create_dir_all(p.join("d/sub"))?;
        fs::write(p.join("d/f"), "df")?;
        fs::write(p.join("d/sub/g"), "g")
    })?;
    // A deletion in the middle layer: a whiteout for overlay, a plain unlink elsewhere.
    derive(&tp, &mut pool, "base", "mid", |p| {
        fs::remove_file(p.join("a"))?;
        fs::write(p.join("m"), "m")
    })?;
    pool.snapshot("mid", &blkdrv_pool::LayerName::new("act").unwrap(), None)
        .map_err(|e| format!("snapshot act: {e}"))?;
    let mut exported = Vec::new();

    let rw = export(&pool, "act", false, NODEV)?;
    exported.extend(rw.iter().cloned());
    let m = ChildMount::new(&tp, &rw)?;
    let p = m.path();
    ensure!(
        read(&p.join("d/f"))? == "df",
        "base file through the export"
    );
    ensure!(read(&p.join("d/sub/g"))? == "g", "nested base file");
    ensure!(read(&p.join("m"))? == "m", "middle layer's file");
    ensure!(!p.join("a").exists(), "the middle layer's deletion hides a");
    fs::write(p.join("w"), "w").map_err(|e| format!("write through rw export: {e}"))?;
    fs::write(p.join("d/f"), "changed").map_err(|e| format!("overwrite lower file: {e}"))?;
    ensure!(read(&p.join("w"))? == "w", "written file");
    m.unmount()?;
    // Exporting again hands out the same mounts (Mounts is asked many times per snapshot).
    ensure!(
        export(&pool, "act", false, NODEV)? == rw,
        "export is stable"
    );

    pool.commit("act").map_err(|e| format!("commit act: {e}"))?;
    let ro = export(&pool, "act", true, NODEV)?;
    exported.extend(ro.iter().cloned());
    let m = ChildMount::new(&tp, &ro)?;
    let p = m.path();
    ensure!(read(&p.join("w"))? == "w", "write kept after commit");
    ensure!(
        read(&p.join("d/f"))? == "changed",
        "overwrite kept after commit"
    );
    ensure!(
        read(&p.join("d/sub/g"))? == "g",
        "base file in the committed layer"
    );
    ensure!(
        !p.join("a").exists(),
        "deletion kept in the committed layer"
    );
    ensure!(
        is_erofs(fs::write(p.join("x"), "x")),
        "read-only export refuses a new file"
    );
    ensure!(
        is_erofs(fs::write(p.join("m"), "x")),
        "read-only export refuses an overwrite"
    );
    // The pool records no exported mount, the driver must see it: removing the layer under it
    // is refused, or deferred until it is unmounted (dm: the open device), never done.
    let removed = pool.remove("act", false);
    ensure!(
        !matches!(removed, Ok(RemoveOutcome::Removed)),
        "remove of a layer mounted by another process refused or deferred"
    );
    ensure!(
        read(&p.join("w"))? == "w",
        "content intact after the refused remove"
    );
    m.unmount()?;
    let mut order = vec!["act", "mid", "base"];
    if matches!(removed, Ok(RemoveOutcome::Deferred)) {
        // The next writer finishes a deferred removal: this one, now that nothing holds it.
        drop(pool);
        pool = tp.open()?;
        ensure!(
            pool.inspect("act").is_err(),
            "deferred remove finished on open"
        );
        order.remove(0);
    }

    // A committed parent, with device nodes allowed by policy: the same layer twice at once.
    let mid = export(&pool, "mid", true, DEV)?;
    exported.extend(mid.iter().cloned());
    let m1 = ChildMount::new(&tp, &mid)?;
    let m2 = ChildMount::new(&tp, &mid)?;
    for m in [&m1, &m2] {
        ensure!(read(&m.path().join("m"))? == "m", "parent's file");
        ensure!(
            !m.path().join("w").exists(),
            "child's write not in the parent"
        );
        ensure!(read(&m.path().join("d/f"))? == "df", "parent unchanged");
    }
    m1.unmount()?;
    m2.unmount()?;

    remove_all(&mut pool, &order, &exported)?;
    Ok(())
}

/// A 128-layer chain exported read-only, and an active layer on it read-write, mounted by
/// another process: the options must fit in one page however long the pool's paths are.
pub fn chain_128_by_another_process(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    let mut names = Vec::new();
    for i in 0..128 {
        let name = format!("l{i}");
        let parent = (i > 0).then(|| format!("l{}", i - 1));
        import_dir(&tp, &mut pool, &name, parent.as_deref(), |p| {
            fs::write(p.join(format!("f{i}")), i.to_string())?;
            fs::write(p.join("top"), i.to_string())
        })?;
        names.push(name);
    }
    let mut exported = Vec::new();
    let ro = export(&pool, "l127", true, NODEV)?;
    exported.extend(ro.iter().cloned());
    for s in &ro {
        let data = s.options.join(",");
        ensure!(
            data.len() < PAGE,
            "options fit a page: {} bytes",
            data.len()
        );
        // Where the layers' own paths would not have fitted, the short names did the work.
        if let Some(lower) = s.options.iter().find_map(|o| o.strip_prefix("lowerdir=")) {
            let real: usize = lower
                .split(':')
                .map(|l| fs::read_link(l).map_or(l.len(), |t| t.as_os_str().len()) + 1)
                .sum();
            ensure!(
                lower.split(':').count() == 128,
                "128 lower dirs, got {}",
                lower.split(':').count()
            );
            eprintln!(
                "{driver}: 128 lower dirs in {} bytes of options ({real} spelled out)",
                data.len()
            );
        }
    }
    let m = ChildMount::new(&tp, &ro)?;
    for i in 0..128 {
        ensure!(
            read(&m.path().join(format!("f{i}")))? == i.to_string(),
            "f{i} through the 128-layer export"
        );
    }
    ensure!(read(&m.path().join("top"))? == "127", "topmost layer wins");
    m.unmount()?;

    pool.snapshot("l127", &blkdrv_pool::LayerName::new("rw").unwrap(), None)
        .map_err(|e| format!("snapshot rw: {e}"))?;
    let rw = export(&pool, "rw", false, NODEV)?;
    exported.extend(rw.iter().cloned());
    let m = ChildMount::new(&tp, &rw)?;
    fs::write(m.path().join("f0"), "w").map_err(|e| format!("write on 128 layers: {e}"))?;
    ensure!(
        read(&m.path().join("f0"))? == "w",
        "write on a 128-deep chain"
    );
    ensure!(read(&m.path().join("f64"))? == "64", "middle of the chain");
    m.unmount()?;

    let mut order = vec!["rw"];
    order.extend(names.iter().rev().map(String::as_str));
    remove_all(&mut pool, &order, &exported)?;
    Ok(())
}
