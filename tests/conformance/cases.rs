//! The conformance cases. Each takes a driver name, makes its own pool, and must pass unchanged
//! for every driver. The list follows containerd's SnapshotterSuite, written anew for blkdrv.

use blkdrv_pool::{LayerName, LayerState, Source};
use kit::ensure;
use kit::pool::*;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

/// A conformance case: run on every driver, each time on a pool of its own.
pub struct Case {
    pub name: &'static str,
    pub run: fn(&str) -> TestResult,
    /// What the pool must be for the case to apply; otherwise it is reported as ignored.
    pub needs: Needs,
}

/// What a case needs of the test pool beyond a driver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Any pool the suite makes (loopback files, or the VM's raw disks and LVM).
    Any,
    /// A pool on loopback files: the pool grows them, and tests can look at them.
    Loopback,
}

impl Case {
    const fn any(name: &'static str, run: fn(&str) -> TestResult) -> Case {
        Case {
            name,
            run,
            needs: Needs::Any,
        }
    }

    const fn loopback(name: &'static str, run: fn(&str) -> TestResult) -> Case {
        Case {
            name,
            run,
            needs: Needs::Loopback,
        }
    }
}

pub const CASES: &[Case] = &[
    Case::any("basic", basic),
    Case::any("stat_active", stat_active),
    Case::any("stat_committed", stat_committed),
    Case::any("transitivity", transitivity),
    Case::any("view_readonly", view_readonly),
    Case::any("active_ro_mount_refuses_writes", active_ro_mount),
    Case::any("remove_refused_with_children", remove_with_children),
    Case::any("remove_refused_while_mounted", remove_while_mounted),
    Case::any("list_walk", list_walk),
    Case::any("layer_file_update", layer_file_update),
    Case::any("remove_directory_in_lower_layer", remove_dir_in_lower),
    Case::any("deleted_files_in_child", deleted_files_in_child),
    Case::any("move_file_from_lower_layer", move_file_from_lower),
    Case::any("ownership_and_permissions_across_commit", chown_chmod),
    Case::any("root_directory_permissions", root_permission),
    Case::any("chain_128_layers", chain_128),
    Case::any("tar_whiteouts", tar_whiteouts),
    Case::any("build_cache_reuse", build_cache_reuse),
    Case::any("diff_export_round_trip", diff_export),
    Case::any("usage_counts_exclusive_bytes", usage),
    Case::any("persistence_across_processes", persistence),
    Case::any("kill_9_campaign", crate::campaign::kill_9_campaign),
    Case::any(
        "enospc_through_mounted_layer",
        crate::campaign::enospc_through_mounted_layer,
    ),
    Case::any("concurrent_writers", crate::campaign::concurrent_writers),
    Case::any("crash_at_every_step", crash_every_step),
    Case::any("kill_9_during_import_and_remove", kill_9_at_random),
    Case::any("hostile_tar_corpus", crate::hostile::hostile_tar_corpus),
    Case::any(
        "export::mounts_by_another_process",
        crate::export::mounts_by_another_process,
    ),
    Case::any(
        "export::chain_128_by_another_process",
        crate::export::chain_128_by_another_process,
    ),
    Case::any(
        "backing::exclusive_usage_of_a_snapshot",
        crate::backing::exclusive_usage,
    ),
    Case::loopback(
        "backing::loopback_pool_grows_when_space_runs_low",
        crate::backing::loopback_pool_grows,
    ),
    Case::any(
        "backing::deactivate_then_activate_keeps_layers",
        crate::backing::deactivate_activate,
    ),
    Case::any(
        "snapshot::prepare_commit_view_remove",
        crate::snapshots::prepare_commit_view_remove,
    ),
    Case::any(
        "snapshot::keys_with_slashes_spaces_and_quotes",
        crate::snapshots::keys_with_slashes_spaces_and_quotes,
    ),
    Case::any("snapshot::update_labels", crate::snapshots::update_labels),
    Case::any(
        "snapshot::usage_is_the_own_delta",
        crate::snapshots::usage_is_the_own_delta,
    ),
    Case::any(
        "snapshot::cli_and_snapshot_layers_stay_apart",
        crate::snapshots::cli_and_snapshot_layers_stay_apart,
    ),
    Case::any(
        "snapshot::crash_between_steps",
        crate::snapshots::crash_between_steps,
    ),
    Case::any(
        "snapshot::busy_remove_is_deferred",
        crate::snapshots::busy_remove_is_deferred,
    ),
    Case::any(
        "volume::data_survives_container_rm",
        crate::volumes::data_survives_container_rm,
    ),
    Case::any(
        "volume::readonly_refuses_writes",
        crate::volumes::readonly_refuses_writes,
    ),
    Case::any(
        "volume::filled_from_image",
        crate::volumes::filled_from_image,
    ),
    Case::any(
        "volume::limit_enforced_or_refused",
        crate::volumes::limit_enforced_or_refused,
    ),
    Case::any(
        "volume::clone_shares_blocks",
        crate::volumes::clone_shares_blocks,
    ),
    Case::any(
        "volume::rm_in_use_refused",
        crate::volumes::rm_in_use_refused,
    ),
    Case::any(
        "container::bind_and_tmpfs_at_targets",
        crate::volumes::bind_and_tmpfs_at_targets,
    ),
    Case::any(
        "container::symlink_at_mount_path_stays_inside_root",
        crate::volumes::symlink_at_mount_path_stays_inside_root,
    ),
    Case::any(
        "container::commit_excludes_volumes",
        crate::volumes::commit_excludes_volumes,
    ),
    Case::any(
        "container::rm_volumes_removes_anonymous_only",
        crate::volumes::rm_volumes_removes_anonymous_only,
    ),
    Case::any(
        "container::crash_at_every_step",
        crate::containers::crash_at_every_step,
    ),
];

fn ln(s: &str) -> LayerName {
    LayerName::new(s).expect("valid test name")
}

fn base_files(p: &Path) -> std::io::Result<()> {
    fs::write(p.join("a"), "a1")?;
    fs::create_dir_all(p.join("d/sub"))?;
    fs::write(p.join("d/f"), "df")?;
    fs::write(p.join("d/sub/g"), "g")?;
    Ok(())
}

fn basic(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    import_dir(&tp, &mut pool, "base", None, base_files)?;
    pool.snapshot("base", &ln("c1"), None)?;
    with_mount(&tp, &mut pool, "c1", false, |p| {
        ensure_s(read(&p.join("a"))? == "a1", "base file visible in snapshot")?;
        fs::write(p.join("new"), "n").map_err(|e| e.to_string())
    })?;
    pool.commit("c1")?;
    with_mount(&tp, &mut pool, "c1", true, |p| {
        ensure_s(
            read(&p.join("new"))? == "n",
            "written file kept after commit",
        )?;
        ensure_s(read(&p.join("d/sub/g"))? == "g", "nested base file")
    })?;
    with_mount(&tp, &mut pool, "base", true, |p| {
        ensure_s(!p.join("new").exists(), "child write leaked into parent")
    })?;
    Ok(())
}

fn ensure_s(cond: bool, what: &str) -> Result<(), String> {
    if cond {
        Ok(())
    } else {
        Err(format!("check failed: {what}"))
    }
}

fn stat_active(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    import_dir(&tp, &mut pool, "base", None, base_files)?;
    pool.snapshot("base", &ln("act"), None)?;
    let i = pool.inspect("act")?;
    ensure!(i.state == LayerState::Active, "state {:?}", i.state);
    ensure!(i.parent.as_deref() == Some("base"), "parent {:?}", i.parent);
    ensure!(i.depth == 1, "depth {}", i.depth);
    Ok(())
}

fn stat_committed(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    import_dir(&tp, &mut pool, "base", None, base_files)?;
    pool.snapshot("base", &ln("c"), None)?;
    pool.commit("c")?;
    let i = pool.inspect("c")?;
    ensure!(i.state == LayerState::Committed, "state {:?}", i.state);
    ensure!(
        i.size_bytes.is_some(),
        "committed layer has a recorded size"
    );
    let err = pool.commit("c").err().ok_or("second commit must fail")?;
    ensure!(err.is_user_error(), "second commit is a user error: {err}");
    Ok(())
}

fn transitivity(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    import_dir(&tp, &mut pool, "l1", None, |p| fs::write(p.join("a"), "1"))?;
    derive(&tp, &mut pool, "l1", "l2", |p| fs::write(p.join("b"), "2"))?;
    derive(&tp, &mut pool, "l2", "l3", |p| {
        fs::write(p.join("c"), "3")?;
        fs::write(p.join("a"), "1'")
    })?;
    with_mount(&tp, &mut pool, "l3", true, |p| {
        ensure_s(read(&p.join("a"))? == "1'", "a updated in l3")?;
        ensure_s(read(&p.join("b"))? == "2", "b from l2")?;
        ensure_s(read(&p.join("c"))? == "3", "c from l3")
    })?;
    with_mount(&tp, &mut pool, "l2", true, |p| {
        ensure_s(read(&p.join("a"))? == "1", "l2 keeps a")?;
        ensure_s(!p.join("c").exists(), "l2 has no c")
    })?;
    Ok(())
}

fn is_erofs(r: std::io::Result<()>) -> bool {
    matches!(r, Err(e) if e.raw_os_error() == Some(nix::libc::EROFS))
}

fn view_readonly(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    import_dir(&tp, &mut pool, "base", None, base_files)?;
    // Committed layers mount read-only even when not asked to.
    with_mount(&tp, &mut pool, "base", false, |p| {
        ensure_s(
            is_erofs(fs::write(p.join("x"), "x")),
            "create in view gives EROFS",
        )?;
        ensure_s(
            is_erofs(fs::write(p.join("a"), "x")),
            "overwrite in view gives EROFS",
        )?;
        ensure_s(
            is_erofs(fs::remove_file(p.join("a"))),
            "unlink in view gives EROFS",
        )
    })?;
    Ok(())
}

fn active_ro_mount(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    import_dir(&tp, &mut pool, "base", None, base_files)?;
    pool.snapshot("base", &ln("c"), None)?;
    with_mount(&tp, &mut pool, "c", true, |p| {
        ensure_s(
            is_erofs(fs::write(p.join("x"), "x")),
            "ro mount of active layer gives EROFS",
        )
    })?;
    Ok(())
}

fn remove_with_children(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    import_dir(&tp, &mut pool, "base", None, base_files)?;
    pool.snapshot("base", &ln("child"), None)?;
    let err = pool
        .remove("base", false)
        .err()
        .ok_or("remove with children must fail")?;
    ensure!(
        err.to_string().contains("child"),
        "error names the child: {err}"
    );
    pool.remove("child", false)?;
    pool.remove("base", false)?;
    ensure!(pool.list()?.is_empty(), "all removed");
    let report = pool.check(false)?;
    ensure!(report.is_clean(), "no drift after removes: {report:?}");
    Ok(())
}

fn remove_while_mounted(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    import_dir(&tp, &mut pool, "base", None, base_files)?;
    pool.snapshot("base", &ln("c"), None)?;
    let target = tp.path("m");
    pool.mount("c", &target, false)?;
    let err = pool
        .remove("c", false)
        .err()
        .ok_or("remove of mounted layer must fail")?;
    ensure!(
        err.to_string().contains("mounted"),
        "error says mounted: {err}"
    );
    pool.remove("c", true)?;
    ensure!(
        !blkdrv_drivers::sys::mount::is_mountpoint(&target)?,
        "--force unmounted the layer"
    );
    Ok(())
}

fn list_walk(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    import_dir(&tp, &mut pool, "base", None, base_files)?;
    derive(&tp, &mut pool, "base", "mid", |p| {
        fs::write(p.join("m"), "m")
    })?;
    pool.snapshot("mid", &ln("top"), None)?;
    let l = pool.list()?;
    let names: Vec<&str> = l.iter().map(|i| i.name.as_str()).collect();
    ensure!(
        names == ["base", "mid", "top"],
        "parents before children: {names:?}"
    );
    ensure!(l[2].parent.as_deref() == Some("mid"), "top's parent");
    ensure!(l[2].state == LayerState::Active, "top active");
    ensure!(l[1].state == LayerState::Committed, "mid committed");
    Ok(())
}

fn layer_file_update(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    import_dir(&tp, &mut pool, "base", None, base_files)?;
    derive(&tp, &mut pool, "base", "upd", |p| {
        fs::write(p.join("d/f"), "changed")
    })?;
    with_mount(&tp, &mut pool, "upd", true, |p| {
        ensure_s(read(&p.join("d/f"))? == "changed", "child sees update")
    })?;
    with_mount(&tp, &mut pool, "base", true, |p| {
        ensure_s(read(&p.join("d/f"))? == "df", "parent unchanged")
    })?;
    Ok(())
}

fn remove_dir_in_lower(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    import_dir(&tp, &mut pool, "base", None, base_files)?;
    derive(&tp, &mut pool, "base", "rmd", |p| {
        fs::remove_dir_all(p.join("d"))
    })?;
    with_mount(&tp, &mut pool, "rmd", true, |p| {
        ensure_s(!p.join("d").exists(), "dir gone in child")
    })?;
    // A grandchild re-creating the directory must not see the old content.
    derive(&tp, &mut pool, "rmd", "again", |p| {
        fs::create_dir(p.join("d"))
    })?;
    with_mount(&tp, &mut pool, "again", true, |p| {
        ensure_s(
            p.join("d").is_dir() && !p.join("d/f").exists(),
            "re-created dir is empty",
        )
    })?;
    with_mount(&tp, &mut pool, "base", true, |p| {
        ensure_s(p.join("d/sub/g").exists(), "parent keeps dir")
    })?;
    Ok(())
}

fn deleted_files_in_child(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    import_dir(&tp, &mut pool, "base", None, base_files)?;
    derive(&tp, &mut pool, "base", "del", |p| {
        fs::remove_file(p.join("a"))
    })?;
    derive(&tp, &mut pool, "del", "del2", |p| {
        fs::write(p.join("z"), "z")
    })?;
    with_mount(&tp, &mut pool, "del2", true, |p| {
        ensure_s(!p.join("a").exists(), "deletion inherited by grandchild")?;
        ensure_s(p.join("z").exists(), "grandchild file")
    })?;
    Ok(())
}

fn move_file_from_lower(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    import_dir(&tp, &mut pool, "base", None, base_files)?;
    derive(&tp, &mut pool, "base", "mv", |p| {
        fs::rename(p.join("d/f"), p.join("moved"))
    })?;
    with_mount(&tp, &mut pool, "mv", true, |p| {
        ensure_s(read(&p.join("moved"))? == "df", "moved content")?;
        ensure_s(!p.join("d/f").exists(), "old path gone")
    })?;
    Ok(())
}

fn chown_chmod(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    import_dir(&tp, &mut pool, "base", None, base_files)?;
    derive(&tp, &mut pool, "base", "own", |p| {
        std::os::unix::fs::chown(p.join("a"), Some(1000), Some(1001))?;
        fs::set_permissions(p.join("a"), fs::Permissions::from_mode(0o640))?;
        fs::write(p.join("suid"), "x")?;
        fs::set_permissions(p.join("suid"), fs::Permissions::from_mode(0o4755))?;
        fs::set_permissions(p.join("d"), fs::Permissions::from_mode(0o1777))
    })?;
    with_mount(&tp, &mut pool, "own", true, |p| {
        let a = fs::metadata(p.join("a")).map_err(|e| e.to_string())?;
        ensure_s(a.uid() == 1000 && a.gid() == 1001, "owner kept")?;
        ensure_s(a.mode() & 0o7777 == 0o640, "mode kept")?;
        let s = fs::metadata(p.join("suid")).map_err(|e| e.to_string())?;
        ensure_s(s.mode() & 0o7777 == 0o4755, "setuid kept")?;
        let d = fs::metadata(p.join("d")).map_err(|e| e.to_string())?;
        ensure_s(d.mode() & 0o7777 == 0o1777, "sticky dir kept")
    })?;
    Ok(())
}

fn root_permission(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    import_dir(&tp, &mut pool, "base", None, |p| {
        fs::set_permissions(p, fs::Permissions::from_mode(0o750))?;
        std::os::unix::fs::chown(p, Some(0), Some(42))
    })?;
    pool.snapshot("base", &ln("c"), None)?;
    for name in ["base", "c"] {
        with_mount(&tp, &mut pool, name, true, |p| {
            let m = fs::metadata(p).map_err(|e| e.to_string())?;
            ensure_s(
                m.mode() & 0o7777 == 0o750,
                &format!("{name} root mode {:o}", m.mode()),
            )?;
            ensure_s(m.gid() == 42, &format!("{name} root gid"))
        })?;
    }
    Ok(())
}

fn chain_128(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    import_dir(&tp, &mut pool, "l0", None, |p| fs::write(p.join("f0"), "0"))?;
    for i in 1..128 {
        let parent = format!("l{}", i - 1);
        import_dir(&tp, &mut pool, &format!("l{i}"), Some(&parent), |p| {
            fs::write(p.join(format!("f{i}")), i.to_string())?;
            // Each layer overwrites one shared file: the top must win.
            fs::write(p.join("top"), i.to_string())
        })?;
    }
    let top = pool.inspect("l127")?;
    ensure!(top.depth == 127, "depth {}", top.depth);
    with_mount(&tp, &mut pool, "l127", true, |p| {
        for i in 0..128 {
            ensure_s(
                read(&p.join(format!("f{i}")))? == i.to_string(),
                &format!("f{i}"),
            )?;
        }
        ensure_s(read(&p.join("top"))? == "127", "topmost layer wins")
    })?;
    pool.snapshot("l127", &ln("rw"), None)?;
    with_mount(&tp, &mut pool, "rw", false, |p| {
        fs::write(p.join("f0"), "w").map_err(|e| e.to_string())?;
        ensure_s(read(&p.join("f0"))? == "w", "write on a 128-deep chain")
    })?;
    Ok(())
}

/// A tar with OCI whiteouts applied on a parent removes what they name.
fn tar_whiteouts(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    import_dir(&tp, &mut pool, "base", None, base_files)?;
    let mut b = tar::Builder::new(Vec::new());
    let mut empty = tar::Header::new_gnu();
    empty.set_size(0);
    empty.set_mode(0o644);
    empty.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut empty.clone(), ".wh.a", std::io::empty())
        .map_err(|e| e.to_string())?;
    b.append_data(&mut empty.clone(), "d/.wh..wh..opq", std::io::empty())
        .map_err(|e| e.to_string())?;
    let mut h = tar::Header::new_gnu();
    h.set_size(3);
    h.set_mode(0o600);
    h.set_entry_type(tar::EntryType::Regular);
    b.append_data(&mut h, "d/kept", &b"new"[..])
        .map_err(|e| e.to_string())?;
    let data = b.into_inner().map_err(|e| e.to_string())?;
    pool.create(
        &ln("wh"),
        Some("base"),
        Source::Tar(Box::new(&data[..])),
        None,
        &mut |_| {},
    )?;
    with_mount(&tp, &mut pool, "wh", true, |p| {
        ensure_s(!p.join("a").exists(), "whiteout removed a")?;
        ensure_s(
            !p.join("d/f").exists() && !p.join("d/sub").exists(),
            "opaque dir hides lower",
        )?;
        ensure_s(read(&p.join("d/kept"))? == "new", "file in opaque dir kept")?;
        let names: Vec<_> = fs::read_dir(p)
            .map_err(|e| e.to_string())?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ensure_s(
            !names.iter().any(|n| n.starts_with(".wh.")),
            "no whiteout files visible",
        )
    })?;
    Ok(())
}

fn build_cache_reuse(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    let src = tp.path("src");
    base_files(&src).map_err(|e| e.to_string())?;
    let first = pool.create(&ln("one"), None, Source::Dir(&src), None, &mut |_| {})?;
    ensure!(!first.reused, "first import is new");
    let second = pool.create(&ln("two"), None, Source::Dir(&src), None, &mut |_| {})?;
    ensure!(second.reused, "same content reused");
    ensure!(second.layer.id == first.layer.id, "same layer");
    // Same content on a different parent is a different layer.
    let third = pool.create(
        &ln("three"),
        Some("one"),
        Source::Dir(&src),
        None,
        &mut |_| {},
    )?;
    ensure!(!third.reused, "different parent means new layer");
    // Removing one of two names only drops the name, even though the layer has a child.
    let r = pool.remove("one", false)?;
    ensure!(
        r == blkdrv_pool::pool::RemoveOutcome::Untagged,
        "untagged, got {r:?}"
    );
    ensure!(
        pool.inspect("two")?.id == first.layer.id,
        "other name still resolves"
    );
    pool.remove("two", false)
        .err()
        .ok_or("last name of a layer with a child must not go")?;
    pool.remove("three", false)?;
    ensure!(
        pool.remove("two", false)? == blkdrv_pool::pool::RemoveOutcome::Removed,
        "removed"
    );
    Ok(())
}

fn diff_export(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    import_dir(&tp, &mut pool, "base", None, base_files)?;
    derive(&tp, &mut pool, "base", "ch", |p| {
        fs::write(p.join("added"), "x")?;
        fs::remove_file(p.join("d/f"))?;
        fs::write(p.join("a"), "a2")
    })?;
    let mut out = Vec::new();
    let stats = pool.diff("ch", &mut out)?;
    ensure!(
        stats.added >= 1 && stats.deleted == 1 && stats.modified >= 1,
        "stats {stats:?}"
    );
    let mut names = Vec::new();
    for e in tar::Archive::new(&out[..])
        .entries()
        .map_err(|e| e.to_string())?
    {
        let e = e.map_err(|e| e.to_string())?;
        names.push(
            e.path()
                .map_err(|e| e.to_string())?
                .to_string_lossy()
                .into_owned(),
        );
    }
    ensure!(
        names.iter().any(|n| n == "added"),
        "added in diff: {names:?}"
    );
    ensure!(
        names.iter().any(|n| n == "d/.wh.f"),
        "whiteout in diff: {names:?}"
    );
    ensure!(
        !names.iter().any(|n| n == "d/sub/g"),
        "unchanged file not in diff: {names:?}"
    );
    // Re-importing the diff on the same parent reproduces the child.
    pool.create(
        &ln("re"),
        Some("base"),
        Source::Tar(Box::new(&out[..])),
        None,
        &mut |_| {},
    )?;
    with_mount(&tp, &mut pool, "re", true, |p| {
        ensure_s(read(&p.join("a"))? == "a2", "modified")?;
        ensure_s(!p.join("d/f").exists(), "deleted")?;
        ensure_s(read(&p.join("added"))? == "x", "added")
    })?;
    Ok(())
}

fn usage(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let mut pool = tp.open()?;
    import_dir(&tp, &mut pool, "base", None, |p| {
        fs::write(p.join("big"), vec![7u8; 4 << 20])
    })?;
    pool.snapshot("base", &ln("c"), None)?;
    with_mount(&tp, &mut pool, "c", false, |p| {
        fs::write(p.join("one"), vec![1u8; 1 << 20]).map_err(|e| e.to_string())
    })?;
    let active = pool
        .inspect("c")?
        .size_bytes
        .ok_or("active size measured")?;
    ensure!(active >= 1 << 20, "active layer counts its 1 MiB: {active}");
    pool.commit("c")?;
    let committed = pool.inspect("c")?.size_bytes.ok_or("size recorded")?;
    ensure!(committed >= 1 << 20, "committed size {committed}");
    let base = pool.inspect("base")?.size_bytes.ok_or("base size")?;
    ensure!(base >= 4 << 20, "base counts its 4 MiB: {base}");
    Ok(())
}

/// Layers made by one process are there, with their content, for the next.
fn persistence(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let src = tp.path("src");
    base_files(&src).map_err(|e| e.to_string())?;
    let code = kit::child::run_layer_command(
        &tp,
        &[
            "layer",
            "create",
            "base",
            "--from-dir",
            src.to_str().unwrap(),
        ],
        None,
    )?;
    ensure!(code == 0, "child create exit {code}");
    let code = kit::child::run_layer_command(&tp, &["layer", "snapshot", "base", "c"], None)?;
    ensure!(code == 0, "child snapshot exit {code}");
    let mut pool = tp.open()?;
    let l = pool.list()?;
    ensure!(l.len() == 2, "two layers after reopen: {l:?}");
    with_mount(&tp, &mut pool, "c", false, |p| {
        ensure_s(read(&p.join("d/sub/g"))? == "g", "content persisted")
    })?;
    Ok(())
}

/// kill -9 at every crash point of create/snapshot/commit/remove/mount, then reopen: no committed
/// layer lost, no orphan object, no half-made layer visible.
fn crash_every_step(driver: &str) -> TestResult {
    let tp = TestPool::new(driver)?;
    let src = tp.path("src");
    base_files(&src).map_err(|e| e.to_string())?;
    let s = src.to_str().unwrap().to_string();
    let (baseline, base_tree) = {
        let mut pool = tp.open()?;
        pool.create(&ln("base"), None, Source::Dir(&src), None, &mut |_| {})?;
        let tree = crate::campaign::layer_manifest(&tp, &mut pool, "base")?;
        (kit::leaks::Baseline::take(tp.dir())?, tree)
    };
    let mnt = tp.path("mnt");
    let m = mnt.to_str().unwrap().to_string();
    for step in blkdrv_pool::crash::STEPS {
        let op = step.split(':').next().unwrap();
        // Set up what the operation needs, in this process.
        {
            let mut pool = tp.open()?;
            match op {
                "commit" | "mount" => {
                    pool.snapshot("base", &ln("victim"), None)?;
                }
                "remove" => {
                    pool.snapshot("base", &ln("victim"), None)?;
                }
                _ => {}
            }
        }
        let args: Vec<&str> = match op {
            "create" => vec![
                "layer",
                "create",
                "victim",
                "--parent",
                "base",
                "--from-dir",
                &s,
            ],
            "snapshot" => vec!["layer", "snapshot", "base", "victim"],
            "commit" => vec!["layer", "commit", "victim"],
            "remove" => vec!["layer", "rm", "victim"],
            "mount" => vec!["layer", "mount", "victim", &m],
            other => return Err(format!("no driver for crash op {other}").into()),
        };
        let code = kit::child::run_layer_command(&tp, &args, Some(step))?;
        ensure!(code != 0, "{step}: child did not crash (exit {code})");
        let mut pool = tp.open()?;
        let report = pool.check(false)?;
        ensure!(
            report.is_clean(),
            "{step}: drift after recovery: {report:?}"
        );
        let base = pool.inspect("base")?;
        ensure!(base.state == LayerState::Committed, "{step}: base survived");
        let tree = crate::campaign::layer_manifest(&tp, &mut pool, "base")?;
        ensure!(
            tree == base_tree,
            "{step}: base changed: {}",
            crate::campaign::diff(&base_tree, &tree)
        );
        for l in pool.list()? {
            ensure!(
                l.state.is_settled(),
                "{step}: layer {} left {}",
                l.name,
                l.state
            );
        }
        let victim = pool.inspect("victim").ok();
        // Nothing left over but the pool's own objects and the victim's recorded mount.
        let recorded: Vec<std::path::PathBuf> = victim
            .iter()
            .flat_map(|v| v.mounts.iter().map(|m| m.target.clone()))
            .collect();
        baseline.check(&recorded, step)?;
        // Creates roll back unless they had finished; commits roll forward; removes roll forward.
        let expect_present = *step == "create:committed" || op == "commit" || op == "mount";
        ensure!(
            victim.is_some() == expect_present,
            "{step}: victim present={} expected {expect_present}",
            victim.is_some()
        );
        if let Some(v) = &victim {
            if step.starts_with("commit") {
                ensure!(
                    v.state == LayerState::Committed,
                    "{step}: commit rolled forward, got {}",
                    v.state
                );
            }
            if step.starts_with("mount") {
                // The mount either happened and is recorded, or did not and is forgotten.
                let live = blkdrv_drivers::sys::mount::is_mountpoint(&mnt)?;
                ensure!(
                    live != v.mounts.is_empty(),
                    "{step}: mount record matches reality"
                );
            } else {
                // A finished import of the same files, or a snapshot of base: base's tree.
                let tree = crate::campaign::layer_manifest(&tp, &mut pool, "victim")?;
                let (want, got) = (
                    crate::campaign::without_root(&base_tree),
                    crate::campaign::without_root(&tree),
                );
                ensure!(
                    got == want,
                    "{step}: victim's tree: {}",
                    crate::campaign::diff(&want, &got)
                );
            }
            pool.remove("victim", true)?;
        }
        ensure!(
            pool.check(false)?.is_clean(),
            "{step}: clean after removing victim"
        );
        baseline.check(&[], &format!("{step}: after removing victim"))?;
    }
    Ok(())
}

/// A real SIGKILL at several moments of a long import and of a removal: whatever moment it
/// lands, the reopened pool is consistent and the victim is either absent or complete, and
/// what happened agrees with how the process ended: a child that exited 0 finished its work, a
/// kill before the process could start rolls back, an import never killed completes.
fn kill_9_at_random(driver: &str) -> TestResult {
    use std::os::unix::process::ExitStatusExt;
    let tp = TestPool::new(driver)?;
    let src = tp.path("src");
    for d in 0..20 {
        let dir = src.join(format!("d{d}"));
        fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        for f in 0..100 {
            fs::write(dir.join(format!("f{f}")), vec![d as u8; 4096]).map_err(|e| e.to_string())?;
        }
    }
    fs::write(src.join("big"), vec![9u8; 16 << 20]).map_err(|e| e.to_string())?;
    let s = src.to_str().unwrap();
    {
        let mut pool = tp.open()?;
        import_dir(&tp, &mut pool, "base", None, base_files)?;
    }
    /// How a child ended: killed by the SIGKILL, or exited on its own before it landed.
    fn ended(status: std::process::ExitStatus) -> Result<bool, String> {
        if status.signal() == Some(nix::libc::SIGKILL) {
            Ok(true)
        } else if status.success() {
            Ok(false)
        } else {
            Err(format!("the child failed on its own: {status:?}"))
        }
    }
    // Delays spread over the import (it takes tens to hundreds of ms here); 0 ms lands before
    // the child has even started. The last round lets the import finish, so that a removal
    // gets killed too.
    let delays = [0u64, 10, 50, 150, 400, 1000, 2000, u64::MAX];
    let mut outcomes = Vec::new();
    for (i, delay_ms) in delays.into_iter().enumerate() {
        let victim = format!("v{i}");
        let mut child = kit::child::layer_command(
            &tp,
            &[
                "layer",
                "create",
                &victim,
                "--parent",
                "base",
                "--from-dir",
                s,
            ],
        )
        .spawn()
        .map_err(|e| e.to_string())?;
        let killed = if delay_ms == u64::MAX {
            let out = child.wait_with_output().map_err(|e| e.to_string())?;
            ensure!(out.status.success(), "uninterrupted import: {out:?}");
            false
        } else {
            std::thread::sleep(std::time::Duration::from_millis(delay_ms));
            let _ = child.kill(); // SIGKILL
            let status = child.wait().map_err(|e| e.to_string())?;
            ended(status).map_err(|e| format!("import killed at {delay_ms} ms: {e}"))?
        };
        let mut pool = tp.open()?;
        let report = pool.check(false)?;
        ensure!(report.is_clean(), "kill at {delay_ms} ms: drift {report:?}");
        ensure!(
            pool.inspect("base")?.state == LayerState::Committed,
            "base intact"
        );
        let complete = pool.inspect(&victim).is_ok();
        let when = if delay_ms == u64::MAX {
            "never".to_string()
        } else {
            format!("{delay_ms} ms")
        };
        outcomes.push(format!(
            "import killed {when}: {} ({})",
            if complete { "complete" } else { "rolled back" },
            if killed { "killed" } else { "exited" }
        ));
        ensure!(
            complete || killed,
            "import at {when}: the child exited 0 but the layer is not there"
        );
        ensure!(
            delay_ms != 0 || !complete,
            "a SIGKILL right after spawn cannot leave a complete import"
        );
        if let Ok(v) = pool.inspect(&victim) {
            ensure!(
                v.state == LayerState::Committed,
                "kill at {delay_ms} ms: victim {}",
                v.state
            );
            with_mount(&tp, &mut pool, &victim, true, |p| {
                let n = fs::read_dir(p.join("d19"))
                    .map_err(|e| e.to_string())?
                    .count();
                ensure_s(n == 100, "complete import has every file")?;
                ensure_s(
                    fs::metadata(p.join("big"))
                        .map_err(|e| e.to_string())?
                        .len()
                        == 16 << 20,
                    "big file whole",
                )
            })?;
            // Now kill a removal of it (our writer handle must not hold the lock meanwhile).
            drop(pool);
            let rm_ms = i as u64 % 4 * 2;
            let mut child = kit::child::layer_command(&tp, &["layer", "rm", &victim])
                .spawn()
                .map_err(|e| e.to_string())?;
            std::thread::sleep(std::time::Duration::from_millis(rm_ms));
            let _ = child.kill();
            let status = child.wait().map_err(|e| e.to_string())?;
            let killed = ended(status).map_err(|e| format!("rm killed at {rm_ms} ms: {e}"))?;
            let mut pool = tp.open()?;
            ensure!(pool.check(false)?.is_clean(), "kill during rm: drift");
            let kept = pool.inspect(&victim).ok();
            outcomes.push(format!(
                "rm killed at {rm_ms} ms: {} ({})",
                if kept.is_some() { "kept" } else { "removed" },
                if killed { "killed" } else { "exited" }
            ));
            ensure!(
                kept.is_none() || killed,
                "rm at {rm_ms} ms: the child exited 0 but the layer is still there"
            );
            if let Some(k) = &kept {
                ensure!(
                    k.state == LayerState::Committed,
                    "a removal killed before it took hold leaves the layer as it was: {}",
                    k.state
                );
            }
            for l in pool.list()? {
                ensure!(l.state.is_settled(), "{} left {}", l.name, l.state);
            }
        }
    }
    eprintln!("{driver}: SIGKILL outcomes: {}", outcomes.join("; "));
    ensure!(
        outcomes
            .iter()
            .any(|o| o.starts_with("import") && o.contains("rolled back")),
        "no kill rolled an import back: {outcomes:?}"
    );
    ensure!(
        outcomes.iter().any(|o| o.starts_with("rm")),
        "no removal was killed: {outcomes:?}"
    );
    Ok(())
}
