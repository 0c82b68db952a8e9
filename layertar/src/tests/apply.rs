use super::*;

#[test]
fn round_trip_tar_dir_spool_apply() {
    let src = tempfile::tempdir().unwrap();
    populate(src.path());
    let mut t = Vec::new();
    tar_dir(src.path(), &mut t).unwrap();

    let spool_dir = tempfile::tempdir().unwrap();
    let (file, d) = spool_tar(&t[..], spool_dir.path()).unwrap();
    let dst = tempfile::tempdir().unwrap();
    let reopened = fs::File::open(file.path()).unwrap();
    let mut last = 0;
    let stats = apply_tar(reopened, dst.path(), &ApplyOptions::default(), &mut |b| {
        last = b
    })
    .unwrap();
    assert_eq!(stats.entries, d.entries);
    assert_eq!(stats.whiteouts, 0);
    assert_eq!(last, stats.bytes);
    assert_eq!(snapshot(src.path()), snapshot(dst.path()));
    for dir in ["a", "a/deep", "a/deep/er", "sticky", "ro"] {
        assert_eq!(
            dir_mtime(&src.path().join(dir)),
            dir_mtime(&dst.path().join(dir)),
            "{dir}"
        );
    }
    let m = fs::metadata(dst.path().join("suid")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o4755);
    let m = fs::metadata(dst.path().join("sticky")).unwrap();
    assert_eq!(m.mode() & 0o7777, 0o1777);
    if nix::unistd::geteuid().is_root() {
        let m = fs::symlink_metadata(dst.path().join("sym")).unwrap();
        assert_eq!((m.uid(), m.gid()), (1234, 4321));
        // The symlink's target kept its own owner.
        let m = fs::metadata(dst.path().join("a/file.txt")).unwrap();
        assert_eq!((m.uid(), m.gid()), (1000, 1001));
    }
    // A second tar of the result is byte-identical.
    let mut t2 = Vec::new();
    tar_dir(dst.path(), &mut t2).unwrap();
    assert_eq!(t, t2);
}

#[test]
fn apply_honours_pax_subsecond_mtime() {
    let mut b = tar::Builder::new(Vec::new());
    b.append_pax_extensions([("mtime", &b"1700000000.25"[..])])
        .unwrap();
    let mut h = header(tar::EntryType::Regular, 0o644, 1);
    b.append_data(&mut h, "f", &b"x"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let dst = tempfile::tempdir().unwrap();
    apply(&tar, dst.path()).unwrap();
    let m = fs::metadata(dst.path().join("f")).unwrap();
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_700_000_000, 250_000_000));
    assert_eq!(
        parse_pax_time("-1.25").map(|t| (t.tv_sec(), t.tv_nsec())),
        Some((-2, 750_000_000))
    );
    assert!(parse_pax_time("1e5").is_none());
}

#[test]
fn apply_reports_progress_every_mib() {
    let big = vec![3u8; 5 * 1024 * 1024 + 17];
    let tar = TarBuilder::new().file("big", &big, 0o644).done();
    let dst = tempfile::tempdir().unwrap();
    let mut calls = Vec::new();
    let stats = apply_tar(&tar[..], dst.path(), &ApplyOptions::default(), &mut |b| {
        calls.push(b)
    })
    .unwrap();
    assert_eq!(stats.bytes, big.len() as u64);
    assert!(calls.len() >= 5 && calls.len() <= 7, "{calls:?}");
    assert!(calls[0] >= PROGRESS_STEP);
    // Every step but the final report is at least a MiB.
    let steps: Vec<u64> = calls.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(
        steps[..steps.len() - 1].iter().all(|s| *s >= PROGRESS_STEP),
        "{calls:?}"
    );
    assert!(steps.iter().all(|s| *s > 0));
    assert_eq!(*calls.last().unwrap(), big.len() as u64);
}

#[test]
fn apply_replaces_types_and_merges_dirs() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    fs::create_dir_all(r.join("d/keep")).unwrap();
    fs::write(r.join("d/old"), b"old").unwrap();
    fs::create_dir_all(r.join("becomes_file/sub")).unwrap();
    fs::write(r.join("becomes_dir"), b"x").unwrap();
    symlink("/nowhere", r.join("sym_to_file")).unwrap();
    fs::write(r.join("shared"), b"orig").unwrap();
    fs::hard_link(r.join("shared"), r.join("shared2")).unwrap();
    let tar = TarBuilder::new()
        .dir("d", 0o700)
        .file("d/new", b"n", 0o644)
        .file("becomes_file", b"f", 0o600)
        .dir("becomes_dir", 0o750)
        .file("becomes_dir/in", b"i", 0o644)
        .file("sym_to_file", b"s", 0o644)
        .file("shared", b"replaced", 0o644)
        .done();
    apply(&tar, r).unwrap();
    assert!(r.join("d/keep").is_dir());
    assert_eq!(fs::read(r.join("d/old")).unwrap(), b"old");
    assert_eq!(fs::read(r.join("d/new")).unwrap(), b"n");
    assert_eq!(fs::metadata(r.join("d")).unwrap().mode() & 0o7777, 0o700);
    assert_eq!(fs::read(r.join("becomes_file")).unwrap(), b"f");
    assert_eq!(fs::read(r.join("becomes_dir/in")).unwrap(), b"i");
    assert!(fs::symlink_metadata(r.join("sym_to_file"))
        .unwrap()
        .is_file());
    // The old inode is unlinked, not overwritten: its other name keeps its content.
    assert_eq!(fs::read(r.join("shared")).unwrap(), b"replaced");
    assert_eq!(fs::read(r.join("shared2")).unwrap(), b"orig");
}

#[test]
fn whiteouts_delete_files_and_dirs() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    fs::create_dir_all(r.join("a")).unwrap();
    fs::write(r.join("a/x"), b"x").unwrap();
    fs::write(r.join("a/y"), b"y").unwrap();
    fs::create_dir_all(r.join("d/sub")).unwrap();
    fs::write(r.join("d/sub/z"), b"z").unwrap();
    symlink("/etc", r.join("s")).unwrap();
    let tar = TarBuilder::new()
        .file("a/.wh.x", b"", 0)
        .file(".wh.d", b"", 0)
        .file(".wh.s", b"", 0)
        .file(".wh.not-there", b"", 0)
        .done();
    let stats = apply(&tar, r).unwrap();
    assert_eq!(stats.whiteouts, 4);
    assert!(!r.join("a/x").exists());
    assert!(r.join("a/y").exists());
    assert!(!r.join("d").exists());
    assert!(fs::symlink_metadata(r.join("s")).is_err());
    assert!(Path::new("/etc").is_dir());
    assert!(!r.join("a/.wh.x").exists());
}

#[test]
fn whiteout_does_not_hide_same_layer_entries() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    fs::create_dir_all(r.join("d")).unwrap();
    fs::write(r.join("d/lower"), b"l").unwrap();
    let tar = TarBuilder::new()
        .file("f", b"mine", 0o644)
        .file("d/mine", b"m", 0o644)
        .file(".wh.f", b"", 0)
        .file(".wh.d", b"", 0)
        .done();
    apply(&tar, r).unwrap();
    assert_eq!(fs::read(r.join("f")).unwrap(), b"mine");
    assert_eq!(fs::read(r.join("d/mine")).unwrap(), b"m");
    assert!(!r.join("d/lower").exists());
}

#[test]
fn opaque_dir_removes_lower_content_only() {
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    fs::create_dir_all(r.join("o/lowerdir")).unwrap();
    fs::write(r.join("o/old1"), b"1").unwrap();
    fs::write(r.join("o/lowerdir/old2"), b"2").unwrap();
    fs::write(r.join("outside"), b"keep").unwrap();
    let tar = TarBuilder::new()
        .dir("o", 0o755)
        .file("o/new", b"n", 0o644)
        .file("o/.wh..wh..opq", b"", 0)
        .file("o/after", b"a", 0o644)
        .done();
    let stats = apply(&tar, r).unwrap();
    assert_eq!(stats.whiteouts, 1);
    let mut names: Vec<_> = fs::read_dir(r.join("o"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, vec!["after", "new"]);
    assert!(r.join("outside").exists());
}

#[test]
fn aufs_metadata_and_root_entries_are_skipped() {
    let root = tempfile::tempdir().unwrap();
    let tar = TarBuilder::new()
        .dir("./", 0o755)
        .dir(".wh..wh.plnk", 0o700)
        .file("./x", b"x", 0o644)
        .done();
    spool(&tar).unwrap();
    apply(&tar, root.path()).unwrap();
    assert!(!root.path().join(".wh..wh.plnk").exists());
    assert_eq!(fs::read(root.path().join("x")).unwrap(), b"x");
}

#[test]
fn apply_refuses_symlinks_from_lower_layer() {
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("victim"), b"safe").unwrap();
    let root = tempfile::tempdir().unwrap();
    let r = root.path();
    symlink(outside.path(), r.join("lnk")).unwrap();
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (
            TarBuilder::new().file("lnk/new", b"x", 0o644).done(),
            "writes through symlink lnk",
        ),
        (
            TarBuilder::new().dir("lnk/d", 0o755).done(),
            "writes through symlink lnk",
        ),
        (
            TarBuilder::new().file("lnk/.wh.victim", b"", 0).done(),
            "writes through symlink lnk",
        ),
        (
            TarBuilder::new().file("lnk/.wh..wh..opq", b"", 0).done(),
            "writes through symlink lnk",
        ),
        (
            TarBuilder::new().hardlink("h", "lnk/victim").done(),
            "writes through symlink lnk",
        ),
    ];
    for (tar, want) in cases {
        spool(&tar).unwrap();
        assert_entry_err(apply(&tar, r), want);
    }
    assert_eq!(fs::read(outside.path().join("victim")).unwrap(), b"safe");
    assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 1);
    // Replacing the symlink itself is allowed and does not touch its target.
    let tar = TarBuilder::new().file("lnk", b"now a file", 0o600).done();
    apply(&tar, r).unwrap();
    assert!(fs::symlink_metadata(r.join("lnk")).unwrap().is_file());
    assert_eq!(fs::read(outside.path().join("victim")).unwrap(), b"safe");
}

#[test]
fn symlink_forgotten_when_its_directory_is_replaced() {
    let tar = TarBuilder::new()
        .dir("a", 0o755)
        .symlink("a/s", "/etc")
        .file("a", b"file now", 0o644)
        .dir("a", 0o755)
        .file("a/s/x", b"x", 0o644)
        .done();
    spool(&tar).unwrap();
    let root = tempfile::tempdir().unwrap();
    apply(&tar, root.path()).unwrap();
    assert_eq!(fs::read(root.path().join("a/s/x")).unwrap(), b"x");
    assert!(fs::symlink_metadata(root.path().join("a/s"))
        .unwrap()
        .is_dir());
}

#[test]
fn blank_numeric_fields_read_as_zero() {
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(2);
    b.append_data(&mut h, "f", &b"hi"[..]).unwrap();
    let tar = b.into_inner().unwrap();
    let root = tempfile::tempdir().unwrap();
    apply(&tar, root.path()).unwrap();
    let m = fs::metadata(root.path().join("f")).unwrap();
    assert_eq!((m.mode() & 0o7777, m.mtime()), (0, 0));

    let mut bad = TarBuilder::new().file("f", b"", 0o644).done();
    bad[108..116].copy_from_slice(b"zzzzzzz\0");
    let mut h = tar::Header::new_old();
    h.as_mut_bytes().copy_from_slice(&bad[..512]);
    h.set_cksum();
    bad[..512].copy_from_slice(h.as_bytes());
    let root = tempfile::tempdir().unwrap();
    assert_entry_err(apply(&bad, root.path()), "bad uid field");
}

#[test]
fn apply_root_may_be_a_symlink_to_a_dir() {
    let real = tempfile::tempdir().unwrap();
    let holder = tempfile::tempdir().unwrap();
    let via = holder.path().join("via");
    symlink(real.path(), &via).unwrap();
    apply(&TarBuilder::new().file("f", b"1", 0o644).done(), &via).unwrap();
    assert!(real.path().join("f").is_file());
    let mut t = Vec::new();
    // The root ("./") and f.
    assert_eq!(tar_dir(&via, &mut t).unwrap(), 2);
}

#[test]
fn hardlink_to_symlink_links_the_symlink() {
    let root = tempfile::tempdir().unwrap();
    let tar = TarBuilder::new()
        .symlink("s", "/etc/passwd")
        .hardlink("h", "s")
        .done();
    spool(&tar).unwrap();
    apply(&tar, root.path()).unwrap();
    let m = fs::symlink_metadata(root.path().join("h")).unwrap();
    assert!(m.file_type().is_symlink());
    assert_eq!(m.nlink(), 2);
}

#[test]
fn device_nodes_with_allow_devices() {
    let tar = TarBuilder::new()
        .node("null", tar::EntryType::Char, 1, 3)
        .done();
    let opts = ApplyOptions {
        allow_devices: true,
    };
    let dir = tempfile::tempdir().unwrap();
    spool_tar_with(&tar[..], dir.path(), &opts).unwrap();
    if !nix::unistd::geteuid().is_root() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    match apply_tar(&tar[..], root.path(), &opts, &mut |_| {}) {
        Ok(_) => {
            let m = fs::symlink_metadata(root.path().join("null")).unwrap();
            assert!(m.file_type().is_char_device());
            assert_eq!(m.rdev(), makedev(1, 3));
            assert_eq!(m.mode() & 0o7777, 0o666);
            let mut out = Vec::new();
            tar_dir(root.path(), &mut out).unwrap();
            let mut a = tar::Archive::new(&out[..]);
            // Entry 0 is the root directory.
            let e = a.entries().unwrap().nth(1).unwrap().unwrap();
            assert_eq!(e.header().entry_type(), tar::EntryType::Char);
            assert_eq!(e.header().device_major().unwrap(), Some(1));
            assert_eq!(e.header().device_minor().unwrap(), Some(3));
        }
        // Containers without CAP_MKNOD.
        Err(Error::Io { source, .. }) if source.raw_os_error() == Some(nix::libc::EPERM) => {}
        Err(e) => panic!("{e}"),
    }
}

#[test]
fn char_0_0_is_a_whiteout_whatever_allow_devices_says() {
    let tar = TarBuilder::new()
        .node("gone", tar::EntryType::Char, 0, 0)
        .node("d/gone2", tar::EntryType::Char, 0, 0)
        .done();
    spool(&tar).unwrap();
    for allow_devices in [false, true] {
        let root = tempfile::tempdir().unwrap();
        fs::write(root.path().join("gone"), b"lower").unwrap();
        fs::create_dir(root.path().join("d")).unwrap();
        fs::create_dir(root.path().join("d/gone2")).unwrap();
        fs::write(root.path().join("d/gone2/x"), b"x").unwrap();
        fs::write(root.path().join("d/stays"), b"s").unwrap();
        let opts = ApplyOptions { allow_devices };
        let st = apply_tar(&tar[..], root.path(), &opts, &mut |_| {}).unwrap();
        assert_eq!(st.whiteouts, 2);
        assert!(lstat(&root.path().join("gone")).unwrap().is_none());
        assert!(lstat(&root.path().join("d/gone2")).unwrap().is_none());
        assert!(root.path().join("d/stays").exists());
    }
}
