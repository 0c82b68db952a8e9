//! Volumes and containers, through the pool's API on every driver: volumes outlive containers,
//! binds and tmpfs land at their targets, mount points resolve inside the root, limits hold
//! where the driver has them, native clones share blocks, commit leaves volumes out.
//!
//! Drivers differ here only through what the pool reports (its capabilities, a limit refused
//! as a user error), never through the driver's name. Each case makes one pool and few
//! volumes: under TCG (dm, zfs in the VM) every thin device or dataset costs a mkfs or a mount.

use blkdrv_pool::{
    Bytes, ContainerName, ContainerPath, ContainerSpec, ContainerState, LayerName, MountEntry,
    MountSource, Pool, PoolError, VolumeName, VolumeSpec,
};
use kit::ensure;
use kit::pool::*;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub(crate) fn vn(s: &str) -> VolumeName {
    VolumeName::new(s).expect("valid test volume name")
}

pub(crate) fn cn(s: &str) -> ContainerName {
    ContainerName::new(s).expect("valid test container name")
}

fn cpath(s: &str) -> ContainerPath {
    ContainerPath::new(s).expect("valid test container path")
}

/// `-v NAME:TARGET[:ro]`.
pub(crate) fn named(name: &str, target: &str, readonly: bool) -> MountEntry {
    MountEntry {
        source: MountSource::Volume {
            name: Some(vn(name)),
            anonymous: false,
            nocopy: false,
        },
        target: cpath(target),
        readonly,
    }
}

/// `--mount type=volume,source=NAME,target=TARGET,volume-nocopy`.
fn named_nocopy(name: &str, target: &str) -> MountEntry {
    MountEntry {
        source: MountSource::Volume {
            name: Some(vn(name)),
            anonymous: false,
            nocopy: true,
        },
        target: cpath(target),
        readonly: false,
    }
}

/// `-v TARGET`: an anonymous volume.
pub(crate) fn anonymous(target: &str) -> MountEntry {
    MountEntry {
        source: MountSource::Volume {
            name: None,
            anonymous: true,
            nocopy: false,
        },
        target: cpath(target),
        readonly: false,
    }
}

pub(crate) fn spec(image: &str, mounts: Vec<MountEntry>) -> ContainerSpec {
    ContainerSpec {
        image: image.to_string(),
        mounts,
        limit: None,
    }
}

/// The image every case starts from: a small tree with a directory a volume is mounted over.
pub(crate) fn image(tp: &TestPool, pool: &mut Pool) -> Result<(), String> {
    import_dir(tp, pool, "img", None, |p| {
        fs::create_dir_all(p.join("etc"))?;
        fs::write(p.join("etc/os-release"), "ID=test\n")?;
        fs::create_dir_all(p.join("data/sub"))?;
        fs::write(p.join("data/seed"), "from the image")?;
        fs::write(p.join("data/sub/deep"), "deep")?;
        fs::create_dir_all(p.join("app"))?;
        fs::write(p.join("app/bin"), "#!/bin/true\n")
    })
    .map(drop)
}

/// Every mount point at or under `dir`.
pub(crate) fn mounts_under(dir: &Path) -> Result<Vec<PathBuf>, String> {
    kit::leaks::mounts_in(dir)
}

/// Mounts container `name` at a fresh target for the duration of `f`, unmounting even when `f`
/// fails, then checks that nothing is left mounted under the target.
pub(crate) fn with_container<T>(
    tp: &TestPool,
    pool: &mut Pool,
    name: &str,
    f: impl FnOnce(&Path) -> Result<T, String>,
) -> Result<T, String> {
    let target = tempfile::tempdir_in(&tp.scratch).map_err(|e| e.to_string())?;
    let root = target.path().to_path_buf();
    let mounted = pool
        .container_mount(name, &root)
        .map_err(|e| format!("container mount {name}: {e}"))?;
    let out = f(&root);
    let um = pool.container_umount(name);
    let out = out?;
    let unmounted = um.map_err(|e| format!("container umount {name}: {e}"))?;
    ensure_s(
        unmounted.len() == mounted.mounts.len(),
        &format!(
            "umount undid every mount: mounted {:?}, unmounted {unmounted:?}",
            mounted.mounts
        ),
    )?;
    let left = mounts_under(&root)?;
    ensure_s(
        left.is_empty(),
        &format!("mounts left under the root after umount: {left:?}"),
    )?;
    Ok(out)
}

fn ensure_s(cond: bool, what: &str) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(format!("check failed: {what}"))
    }
}

fn write(p: &Path, s: &str) -> Result<(), String> {
    fs::write(p, s).map_err(|e| format!("write {}: {e}", p.display()))
}

fn volume_names(pool: &Pool) -> Result<Vec<String>, String> {
    let mut v: Vec<String> = pool
        .volume_list()
        .map_err(|e| format!("volume ls: {e}"))?
        .into_iter()
        .map(|v| v.name)
        .collect();
    v.sort();
    Ok(v)
}

/// Writes `bytes` of pseudo-random data to `p` in 1 MiB chunks and syncs; returns the first
/// error (a limit reached) with the bytes written before it.
fn write_until(p: &Path, bytes: u64, seed: u64) -> Result<u64, (u64, std::io::Error)> {
    let mut rng = kit::rng::Rng::new(seed);
    let mut f = fs::File::create(p).map_err(|e| (0, e))?;
    let mut chunk = vec![0u8; 1 << 20];
    let mut written = 0;
    while written < bytes {
        rng.fill(&mut chunk);
        let n = chunk.len().min((bytes - written) as usize);
        f.write_all(&chunk[..n]).map_err(|e| (written, e))?;
        written += n as u64;
    }
    f.sync_all().map_err(|e| (written, e))?;
    Ok(written)
}

fn digest(p: &Path) -> Result<String, String> {
    use sha2::Digest;
    let data = fs::read(p).map_err(|e| format!("read {}: {e}", p.display()))?;
    Ok(format!("{:x}", sha2::Sha256::digest(&data)))
}

/// Data written through a container's mounted volume survives `container rm` and shows in a
/// new container; the writable layer's files do not.
pub fn data_survives_container_rm(driver: &str) -> kit::TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    image(&tp, &mut pool)?;
    pool.container_create(&cn("c1"), &spec("img", vec![named("db", "/srv/db", false)]))?;
    ensure!(
        volume_names(&pool)? == ["db"],
        "a named volume that did not exist is created: {:?}",
        volume_names(&pool)?
    );
    with_container(&tp, &mut pool, "c1", |root| {
        write(&root.join("srv/db/table"), "rows")?;
        write(&root.join("app/scratch"), "writable layer")
    })?;
    let removed = pool.container_remove("c1", false, false)?;
    ensure!(
        removed.volumes_removed.is_empty(),
        "named volume kept: {removed:?}"
    );
    ensure!(
        pool.container_inspect("c1").is_err(),
        "container gone after rm"
    );
    let v = pool.volume_inspect("db")?;
    ensure!(v.users.is_empty(), "no users after rm: {:?}", v.users);
    pool.container_create(&cn("c2"), &spec("img", vec![named("db", "/data", false)]))?;
    with_container(&tp, &mut pool, "c2", |root| {
        ensure_s(
            read(&root.join("data/table"))? == "rows",
            "volume data in the new container",
        )?;
        ensure_s(
            !root.join("app/scratch").exists(),
            "the old writable layer's file is gone with it",
        )?;
        ensure_s(
            !root.join("data/seed").exists(),
            "a non-empty volume is not filled from the image",
        )
    })?;
    let v = pool.volume_inspect("db")?;
    ensure!(v.users == ["c2"], "users {:?}", v.users);
    Ok(())
}

/// A volume mounted read-only refuses writes with EROFS; the same volume read-write in
/// another container takes them.
pub fn readonly_refuses_writes(driver: &str) -> kit::TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    image(&tp, &mut pool)?;
    pool.volume_create(Some(&vn("ro-vol")), &VolumeSpec::default())?;
    pool.container_create(
        &cn("reader"),
        &spec("img", vec![named("ro-vol", "/data", true)]),
    )?;
    with_container(&tp, &mut pool, "reader", |root| {
        let err = fs::write(root.join("data/x"), "no")
            .err()
            .ok_or("write into a read-only volume succeeded")?;
        ensure_s(
            err.raw_os_error() == Some(nix::libc::EROFS),
            &format!("write refused with EROFS, got {err}"),
        )?;
        // The writable layer beside it stays writable.
        write(&root.join("app/ok"), "yes")
    })?;
    Ok(())
}

/// A new empty volume over a non-empty image directory is filled from it; `nocopy` leaves it
/// empty; a volume with content is not refilled.
pub fn filled_from_image(driver: &str) -> kit::TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    image(&tp, &mut pool)?;
    pool.container_create(
        &cn("fill"),
        &spec(
            "img",
            vec![
                named("filled", "/data", false),
                named_nocopy("empty", "/app"),
            ],
        ),
    )?;
    with_container(&tp, &mut pool, "fill", |root| {
        ensure_s(
            read(&root.join("data/seed"))? == "from the image",
            "new volume filled from the image's directory",
        )?;
        ensure_s(
            read(&root.join("data/sub/deep"))? == "deep",
            "nested files filled",
        )?;
        let left: Vec<_> = fs::read_dir(root.join("app"))
            .map_err(|e| e.to_string())?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name())
            .filter(|n| n != "lost+found")
            .collect();
        ensure_s(
            left.is_empty(),
            &format!("nocopy volume is empty, has {left:?}"),
        )?;
        // Change the filled volume: the next container must see this, not the image.
        fs::remove_file(root.join("data/seed")).map_err(|e| e.to_string())?;
        write(&root.join("data/mine"), "changed")
    })?;
    pool.container_remove("fill", false, false)?;
    pool.container_create(
        &cn("again"),
        &spec("img", vec![named("filled", "/data", false)]),
    )?;
    with_container(&tp, &mut pool, "again", |root| {
        ensure_s(
            read(&root.join("data/mine"))? == "changed",
            "volume content kept",
        )?;
        ensure_s(
            !root.join("data/seed").exists(),
            "a non-empty volume is not refilled from the image",
        )
    })?;
    // The image itself never saw the volume's writes.
    with_mount(&tp, &mut pool, "img", true, |p| {
        ensure_s(
            read(&p.join("data/seed"))? == "from the image",
            "image unchanged",
        )
    })?;
    Ok(())
}

/// Bind and tmpfs mounts appear at their targets inside the mounted root; a tmpfs's files go
/// with the unmount and never reach the writable layer.
pub fn bind_and_tmpfs_at_targets(driver: &str) -> kit::TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    image(&tp, &mut pool)?;
    let host = tp.path("host-dir");
    write(&host.join("from-host"), "hello")?;
    let mounts = vec![
        MountEntry {
            source: MountSource::Bind {
                source: host.clone(),
            },
            target: cpath("/mnt/host"),
            readonly: false,
        },
        MountEntry {
            source: MountSource::Bind {
                source: host.clone(),
            },
            target: cpath("/mnt/host-ro"),
            readonly: true,
        },
        MountEntry {
            source: MountSource::Tmpfs {
                size: Some(Bytes::mib(4)),
                mode: None,
            },
            target: cpath("/run/tmp"),
            readonly: false,
        },
    ];
    pool.container_create(&cn("binds"), &spec("img", mounts))?;
    with_container(&tp, &mut pool, "binds", |root| {
        ensure_s(
            read(&root.join("mnt/host/from-host"))? == "hello",
            "bind source visible at its target",
        )?;
        write(&root.join("mnt/host/from-container"), "back")?;
        let err = fs::write(root.join("mnt/host-ro/x"), "no")
            .err()
            .ok_or("write through a read-only bind succeeded")?;
        ensure_s(
            err.raw_os_error() == Some(nix::libc::EROFS),
            &format!("read-only bind refuses with EROFS, got {err}"),
        )?;
        let st = nix::sys::statfs::statfs(&root.join("run/tmp")).map_err(|e| e.to_string())?;
        ensure_s(
            st.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC,
            "a tmpfs at /run/tmp",
        )?;
        write(&root.join("run/tmp/volatile"), "gone soon")
    })?;
    ensure!(
        read(&host.join("from-container"))? == "back",
        "a write through the bind lands in the host directory"
    );
    ensure!(
        mounts_under(&host)?.is_empty(),
        "nothing mounted on the bind source"
    );
    with_container(&tp, &mut pool, "binds", |root| {
        ensure_s(
            !root.join("run/tmp/volatile").exists(),
            "a tmpfs starts empty at every mount",
        )
    })?;
    Ok(())
}

/// A symlink in the image or writable layer at a mount path (absolute, or climbing with `..`)
/// resolves inside the root: the volume lands under the root, the host's path is untouched.
/// The symlinks point at a scratch directory, not at /etc, so that a broken resolver mounts
/// over nothing that matters.
pub fn symlink_at_mount_path_stays_inside_root(driver: &str) -> kit::TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    let victim = tp.path("host-victim");
    write(&victim.join("host-file"), "host")?;
    let abs = victim.clone();
    let climb = format!("../../../../../../../..{}/c", victim.display());
    import_dir(&tp, &mut pool, "img", None, |p| {
        std::os::unix::fs::symlink(&abs, p.join("abs"))?;
        fs::create_dir_all(p.join("deep/er"))?;
        std::os::unix::fs::symlink(&climb, p.join("deep/er/climb"))
    })?;
    // The same attack planted in a writable layer, committed as the next image.
    pool.container_create(&cn("plant"), &spec("img", vec![]))?;
    with_container(&tp, &mut pool, "plant", |root| {
        std::os::unix::fs::symlink(abs.join("p"), root.join("planted")).map_err(|e| e.to_string())
    })?;
    pool.container_commit("plant", &LayerName::new("img2")?, None)?;
    let mounts = vec![
        named("v-abs", "/abs/x", false),
        named("v-climb", "/deep/er/climb", false),
        named("v-planted", "/planted", false),
    ];
    pool.container_create(&cn("escape"), &spec("img2", mounts))?;
    let inside = victim.strip_prefix("/").map_err(|e| e.to_string())?;
    with_container(&tp, &mut pool, "escape", |root| {
        let host_mounts = mounts_under(&victim)?;
        ensure_s(
            host_mounts.is_empty(),
            &format!("a mount landed on the host path: {host_mounts:?}"),
        )?;
        // Resolved inside the root: each volume at its symlink's target under the root. (The
        // test writes there directly: from the host, the symlinks point at the host.)
        let under = root.join(inside);
        let live = mounts_under(root)?;
        for (d, f) in [
            ("x", "through-abs"),
            ("c", "through-climb"),
            ("p", "through-planted"),
        ] {
            ensure_s(
                live.contains(&under.join(d)),
                &format!("a volume mounted at <root>/<victim>/{d}: mounts {live:?}"),
            )?;
            write(&under.join(d).join(f), f)?;
        }
        Ok(())
    })?;
    let names: Vec<String> = fs::read_dir(&victim)?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    ensure!(
        names == ["host-file"] && read(&victim.join("host-file"))? == "host",
        "host directory untouched: {names:?}"
    );
    // The writes went into the volumes.
    let mounts = vec![
        named("v-abs", "/va", false),
        named("v-climb", "/vc", false),
        named("v-planted", "/vp", false),
    ];
    pool.container_create(&cn("check"), &spec("img", mounts))?;
    with_container(&tp, &mut pool, "check", |root| {
        for (d, f) in [
            ("va", "through-abs"),
            ("vc", "through-climb"),
            ("vp", "through-planted"),
        ] {
            ensure_s(
                root.join(d).join(f).exists(),
                &format!("{f} is in its volume"),
            )?;
        }
        Ok(())
    })?;
    Ok(())
}

/// `--size` is enforced where the driver has a limit (a write past it fails with ENOSPC or
/// EDQUOT) and refused as a user error, with nothing created, where it has none. A driver
/// that limits layers must limit volumes too.
pub fn limit_enforced_or_refused(driver: &str) -> kit::TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    image(&tp, &mut pool)?;
    // A small limit first; a driver whose volumes carry a filesystem may have a minimum
    // (xfs: 300 MiB), so a refused small limit is retried once above any such minimum.
    let sizes = [Bytes::mib(16), Bytes::mib(320)];
    let probe = pool.snapshot("img", &LayerName::new("probe")?, Some(sizes[1]));
    if let Err(e) = &probe {
        eprintln!("{driver}: layer --size {} refused: {e}", sizes[1]);
    }
    let layers_limited = probe.is_ok();
    let mut accepted = None;
    for limit in sizes {
        let made = pool.volume_create(
            Some(&vn("small")),
            &VolumeSpec {
                limit: Some(limit),
                ..VolumeSpec::default()
            },
        );
        match made {
            Ok(info) => {
                accepted = Some((limit, info));
                break;
            }
            Err(e) => {
                ensure!(e.is_user_error(), "a refused --size is a user error: {e}");
                eprintln!("{driver}: volume --size {limit} refused: {e}");
                ensure!(
                    volume_names(&pool)?.is_empty(),
                    "nothing created after a refused --size"
                );
            }
        }
    }
    let Some((limit, info)) = accepted else {
        ensure!(
            !layers_limited,
            "layers take --size {} but volumes refuse it",
            sizes[1]
        );
        return Ok(());
    };
    ensure!(
        info.limit_bytes == Some(limit.0),
        "limit recorded: {:?}",
        info.limit_bytes
    );
    pool.container_create(
        &cn("filler"),
        &spec("img", vec![named("small", "/data", false)]),
    )?;
    with_container(&tp, &mut pool, "filler", |root| {
        match write_until(&root.join("data/big"), 2 * limit.0, 1) {
            Ok(n) => Err(format!("wrote {n} bytes into a {limit} volume")),
            Err((n, e)) => {
                let code = e.raw_os_error();
                ensure_s(
                    code == Some(nix::libc::ENOSPC) || code == Some(nix::libc::EDQUOT),
                    &format!("write past the limit fails with ENOSPC/EDQUOT, got {e}"),
                )?;
                eprintln!("{driver}: volume limit {limit}: write refused after {n} bytes ({e})");
                ensure_s(
                    n <= limit.0 + (1 << 20),
                    &format!("stopped near the limit: {n} bytes"),
                )
            }
        }
    })?;
    Ok(())
}

/// `volume create --from` makes a copy whose data equals the source's, independent of it both
/// ways; where the driver has native snapshots, the pool's usage barely grows.
pub fn clone_shares_blocks(driver: &str) -> kit::TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    image(&tp, &mut pool)?;
    let native = pool.status()?.capabilities.native_snapshots;
    let data = 64u64 << 20;
    pool.container_create(
        &cn("writer"),
        &spec("img", vec![named("src", "/data", false)]),
    )?;
    let sum = with_container(&tp, &mut pool, "writer", |root| {
        write_until(&root.join("data/blob"), data, 5).map_err(|(_, e)| e.to_string())?;
        write(&root.join("data/small"), "source")?;
        digest(&root.join("data/blob"))
    })?;
    nix::unistd::sync();
    let before = pool.status()?.space.used;
    let clone = pool.volume_create(
        Some(&vn("copy")),
        &VolumeSpec {
            from: Some("src".into()),
            ..VolumeSpec::default()
        },
    )?;
    nix::unistd::sync();
    let after = pool.status()?.space.used;
    ensure!(
        clone.origin.as_deref() == Some("src"),
        "origin {:?}",
        clone.origin
    );
    let grew = after.0.saturating_sub(before.0);
    eprintln!("{driver}: clone of {data} bytes: pool used grew by {grew} (native {native})");
    if native {
        ensure!(
            grew < data / 4,
            "a native clone shares the source's blocks: pool used grew by {grew} bytes for {data}"
        );
    }
    pool.container_create(
        &cn("both"),
        &spec(
            "img",
            vec![named("src", "/src", false), named("copy", "/copy", false)],
        ),
    )?;
    with_container(&tp, &mut pool, "both", |root| {
        ensure_s(
            digest(&root.join("copy/blob"))? == sum,
            "clone's data equals the source's",
        )?;
        write(&root.join("copy/small"), "clone")?;
        write(&root.join("src/only-src"), "s")?;
        write(&root.join("copy/only-copy"), "c")?;
        ensure_s(
            read(&root.join("src/small"))? == "source",
            "a write to the clone does not show in the source",
        )?;
        ensure_s(
            !root.join("copy/only-src").exists() && !root.join("src/only-copy").exists(),
            "new files stay in their volume",
        )
    })?;
    // The source can go while its clone lives (zfs: the clone is promoted or kept apart).
    pool.container_remove("writer", false, false)?;
    pool.container_remove("both", false, false)?;
    pool.volume_remove("src")?;
    pool.container_create(
        &cn("after"),
        &spec("img", vec![named("copy", "/data", false)]),
    )?;
    with_container(&tp, &mut pool, "after", |root| {
        ensure_s(
            digest(&root.join("data/blob"))? == sum,
            "clone intact after its source's removal",
        )
    })?;
    ensure!(
        pool.volume_inspect("copy")?.origin.is_none(),
        "no origin once the source is gone"
    );
    Ok(())
}

/// `container commit` makes a committed layer with the writable layer's files, without the
/// volume's content; `history` shows it on the image with its comment.
pub fn commit_excludes_volumes(driver: &str) -> kit::TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    image(&tp, &mut pool)?;
    pool.container_create(
        &cn("builder"),
        &spec("img", vec![named("vol", "/data", false)]),
    )?;
    with_container(&tp, &mut pool, "builder", |root| {
        write(&root.join("data/in-volume"), "v")?;
        write(&root.join("app/in-layer"), "l")
    })?;
    let comment = blkdrv_pool::LayerComment::new("RUN make")?;
    let layer = pool.container_commit("builder", &LayerName::new("built")?, Some(&comment))?;
    ensure!(
        layer.state == blkdrv_pool::LayerState::Committed,
        "committed: {:?}",
        layer.state
    );
    ensure!(
        layer.parent.as_deref() == Some("img"),
        "on the image: {:?}",
        layer.parent
    );
    with_mount(&tp, &mut pool, "built", true, |p| {
        ensure_s(
            read(&p.join("app/in-layer"))? == "l",
            "writable layer's file committed",
        )?;
        ensure_s(
            !p.join("data/in-volume").exists(),
            "volume content excluded from the commit",
        )?;
        ensure_s(
            read(&p.join("data/seed"))? == "from the image",
            "the image's own files under the volume's path stay",
        )
    })?;
    let h = pool.history("built")?;
    ensure!(
        h.len() == 2 && h[0].layer == "built" && h[1].layer == "img",
        "history {h:?}"
    );
    ensure!(
        h[0].comment.as_deref() == Some("RUN make"),
        "comment {:?}",
        h[0].comment
    );
    // The container goes on as it was.
    let c = pool.container_inspect("builder")?;
    ensure!(c.state == ContainerState::Created, "state {:?}", c.state);
    with_container(&tp, &mut pool, "builder", |root| {
        ensure_s(
            read(&root.join("data/in-volume"))? == "v",
            "volume still mounted",
        )
    })?;
    Ok(())
}

/// `container rm --volumes` removes the container's anonymous volumes only; without it they
/// stay for `volume prune`.
pub fn rm_volumes_removes_anonymous_only(driver: &str) -> kit::TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    image(&tp, &mut pool)?;
    let c = pool.container_create(
        &cn("one"),
        &spec(
            "img",
            vec![named("kept", "/data", false), anonymous("/cache")],
        ),
    )?;
    let anon_name = c
        .mounts
        .iter()
        .find_map(|m| match &m.source {
            MountSource::Volume {
                name: Some(n),
                anonymous: true,
                ..
            } => Some(n.to_string()),
            _ => None,
        })
        .ok_or_else(|| format!("anonymous volume named in the record: {:?}", c.mounts))?;
    ensure!(
        anon_name.len() == 64 && anon_name.bytes().all(|b| b.is_ascii_hexdigit()),
        "anonymous name is 64 hex digits: {anon_name}"
    );
    ensure!(
        pool.volume_inspect(&anon_name)?.anonymous,
        "marked anonymous"
    );
    let removed = pool.container_remove("one", true, false)?;
    ensure!(
        removed.volumes_removed == [anon_name.clone()],
        "only the anonymous volume removed: {removed:?}"
    );
    ensure!(
        volume_names(&pool)? == ["kept"],
        "named volume kept: {:?}",
        volume_names(&pool)?
    );
    // Without --volumes the anonymous volume stays, unused, until prune.
    pool.container_create(&cn("two"), &spec("img", vec![anonymous("/cache")]))?;
    let removed = pool.container_remove("two", false, false)?;
    ensure!(removed.volumes_removed.is_empty(), "{removed:?}");
    ensure!(
        volume_names(&pool)?.len() == 2,
        "{:?}",
        volume_names(&pool)?
    );
    let pruned = pool.volume_prune(false)?;
    ensure!(
        pruned.len() == 1,
        "prune removes the anonymous one: {pruned:?}"
    );
    ensure!(
        volume_names(&pool)? == ["kept"],
        "{:?}",
        volume_names(&pool)?
    );
    ensure!(pool.check(false)?.is_clean(), "pool check clean");
    Ok(())
}

/// `volume rm` of a volume a container uses is refused as a user error and removes nothing;
/// once the container is gone it succeeds.
pub fn rm_in_use_refused(driver: &str) -> kit::TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    image(&tp, &mut pool)?;
    pool.container_create(
        &cn("holder"),
        &spec("img", vec![named("busy", "/data", false)]),
    )?;
    with_container(&tp, &mut pool, "holder", |root| {
        write(&root.join("data/f"), "kept")
    })?;
    let err = pool
        .volume_remove("busy")
        .err()
        .ok_or("volume rm of a volume in use succeeded")?;
    ensure!(err.is_user_error(), "refusal is a user error: {err}");
    ensure!(
        err.to_string().contains("holder"),
        "the refusal names the user container: {err}"
    );
    ensure!(
        pool.volume_inspect("busy")?.users == ["holder"],
        "volume kept with its user"
    );
    with_container(&tp, &mut pool, "holder", |root| {
        ensure_s(read(&root.join("data/f"))? == "kept", "data kept")
    })?;
    // Mounted, the refusal holds too.
    let target = tp.path("mounted");
    pool.container_mount("holder", &target)?;
    let refused = pool.volume_remove("busy").is_err();
    pool.container_umount("holder")?;
    ensure!(refused, "volume rm of a mounted volume succeeded");
    pool.container_remove("holder", false, false)?;
    pool.volume_remove("busy")?;
    ensure!(volume_names(&pool)?.is_empty(), "removed");
    match pool.volume_remove("busy") {
        Err(PoolError::Invalid(_)) | Err(PoolError::Refused { .. }) => {}
        Err(e) if e.is_user_error() => {}
        other => return Err(format!("rm of a missing volume: {other:?}").into()),
    }
    ensure!(pool.check(false)?.is_clean(), "pool check clean");
    Ok(())
}
