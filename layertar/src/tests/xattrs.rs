use super::*;

#[test]
fn xattrs_round_trip_import_tar_dir_import() {
    let root = tempfile::tempdir().unwrap();
    if !xattrs_supported(root.path()) {
        return;
    }
    let binary: Vec<u8> = (0u8..=255).collect();
    let mut tb = TarBuilder::new();
    tb = tb.pax(&[("SCHILY.xattr.user.dir", b"D")]);
    tb = tb.dir("d", 0o755);
    tb = tb.pax(&[
        ("SCHILY.xattr.user.bin", &binary),
        ("SCHILY.xattr.user.a", b"1"),
        // Skipped: host policy and overlayfs bookkeeping.
        ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
        ("SCHILY.xattr.security.selinux", b"system_u:object_r:x:s0"),
    ]);
    tb = tb.file("d/f", b"data", 0o4755);
    let is_root = nix::unistd::geteuid().is_root();
    if is_root {
        tb = tb.pax(&[("SCHILY.xattr.security.capability", &CAP_NET_RAW)]);
        let mut h = header(tar::EntryType::Regular, 0o755, 1);
        h.set_uid(1000);
        h.set_gid(1000);
        tb = tb.entry(h, "ping", b"p");
    }
    let tar = tb.done();
    spool(&tar).unwrap();
    apply(&tar, root.path()).unwrap();
    let f = root.path().join("d/f");
    assert_eq!(xattr_of(&f, "user.bin").as_deref(), Some(&binary[..]));
    assert_eq!(xattr_of(&f, "user.a").as_deref(), Some(&b"1"[..]));
    assert_eq!(xattr_of(&f, "trusted.overlay.opaque"), None);
    assert_eq!(
        xattr_of(&root.path().join("d"), "user.dir").as_deref(),
        Some(&b"D"[..])
    );
    assert_eq!(fs::metadata(&f).unwrap().mode() & 0o7777, 0o4755);
    if is_root {
        // Set after chown, which would have cleared it.
        let ping = root.path().join("ping");
        assert_eq!(
            xattr_of(&ping, "security.capability").as_deref(),
            Some(&CAP_NET_RAW[..])
        );
        assert_eq!(fs::metadata(&ping).unwrap().uid(), 1000);
    }

    // tar_dir carries them, deterministically, and a second import gives the same tree.
    let mut out1 = Vec::new();
    tar_dir(root.path(), &mut out1).unwrap();
    let mut out2 = Vec::new();
    tar_dir(root.path(), &mut out2).unwrap();
    assert_eq!(out1, out2);
    let again = tempfile::tempdir().unwrap();
    apply(&out1, again.path()).unwrap();
    assert_eq!(snapshot(root.path()), snapshot(again.path()));
    for p in ["d", "d/f", "ping"] {
        let (a, b) = (root.path().join(p), again.path().join(p));
        if a.exists() {
            assert_eq!(kept_xattrs(&a).unwrap(), kept_xattrs(&b).unwrap(), "{p}");
        }
    }
    assert_eq!(
        xattr_of(&again.path().join("d/f"), "user.bin").as_deref(),
        Some(&binary[..])
    );
}

#[test]
fn acls_round_trip() {
    let root = tempfile::tempdir().unwrap();
    let probe = root.path().join("probe");
    fs::write(&probe, b"").unwrap();
    let acl = acl_value();
    if let Err(e) = set_xattrs(
        &probe,
        &[(
            CString::new("system.posix_acl_access").unwrap(),
            acl.clone(),
        )],
    ) {
        eprintln!("SKIP: {} cannot hold ACLs: {e}", root.path().display());
        return;
    }
    fs::remove_file(&probe).unwrap();
    let mut tb = TarBuilder::new();
    tb = tb.pax(&[
        ("SCHILY.xattr.system.posix_acl_access", &acl),
        ("SCHILY.xattr.system.posix_acl_default", &acl),
    ]);
    let tar = tb.dir("shared", 0o755).done();
    spool(&tar).unwrap();
    apply(&tar, root.path()).unwrap();
    let d = root.path().join("shared");
    assert_eq!(xattr_of(&d, "system.posix_acl_access"), Some(acl.clone()));
    assert_eq!(xattr_of(&d, "system.posix_acl_default"), Some(acl.clone()));
    let mut out = Vec::new();
    tar_dir(root.path(), &mut out).unwrap();
    let again = tempfile::tempdir().unwrap();
    apply(&out, again.path()).unwrap();
    let d2 = again.path().join("shared");
    assert_eq!(kept_xattrs(&d).unwrap(), kept_xattrs(&d2).unwrap());
    assert_eq!(
        fs::metadata(&d).unwrap().mode(),
        fs::metadata(&d2).unwrap().mode()
    );
}

#[test]
fn xattrs_of_long_names_and_hardlinks_round_trip() {
    let src = tempfile::tempdir().unwrap();
    if !xattrs_supported(src.path()) {
        return;
    }
    let long = src.path().join("l".repeat(150));
    fs::write(&long, b"x").unwrap();
    fs::hard_link(&long, src.path().join("hl")).unwrap();
    set_xattrs(&long, &[(CString::new("user.k").unwrap(), b"v\n".to_vec())]).unwrap();
    let mut out = Vec::new();
    tar_dir(src.path(), &mut out).unwrap();
    let dst = tempfile::tempdir().unwrap();
    apply(&out, dst.path()).unwrap();
    for name in ["l".repeat(150), "hl".to_string()] {
        assert_eq!(
            xattr_of(&dst.path().join(&name), "user.k").as_deref(),
            Some(&b"v\n"[..]),
            "{name}"
        );
    }
    if std::process::Command::new("tar")
        .arg("--version")
        .output()
        .is_ok()
    {
        let t = src.path().join("out.tar");
        fs::write(&t, &out).unwrap();
        let o = std::process::Command::new("tar")
            .args(["--xattrs", "-tvf"])
            .arg(&t)
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "GNU tar: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        // And what GNU tar writes imports the same.
        let g = dst.path().join("gnu.tar");
        let o = std::process::Command::new("tar")
            .args(["--xattrs", "--xattrs-include=*", "-C"])
            .arg(src.path())
            .arg("-cf")
            .arg(&g)
            .arg("l".repeat(150))
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let third = tempfile::tempdir().unwrap();
        apply(&fs::read(&g).unwrap(), third.path()).unwrap();
        assert_eq!(
            xattr_of(&third.path().join("l".repeat(150)), "user.k").as_deref(),
            Some(&b"v\n"[..])
        );
    }
}

#[test]
fn write_diff_counts_an_xattr_change_as_modified() {
    let parent = tempfile::tempdir().unwrap();
    if !xattrs_supported(parent.path()) {
        return;
    }
    let layer = tempfile::tempdir().unwrap();
    for d in [parent.path(), layer.path()] {
        fs::write(d.join("f"), b"same").unwrap();
        set_mtime_secs(&d.join("f"), 1_600_000_000);
        set_mtime_secs(d, 1_600_000_000);
    }
    set_xattrs(
        &layer.path().join("f"),
        &[(CString::new("user.k").unwrap(), vec![0, 1, 2])],
    )
    .unwrap();
    let mut out = Vec::new();
    let st = write_diff(layer.path(), Some(parent.path()), &mut out).unwrap();
    assert_eq!(st.modified, 1, "{st:?}");
    let onto = tempfile::tempdir().unwrap();
    fs::write(onto.path().join("f"), b"same").unwrap();
    apply(&out, onto.path()).unwrap();
    assert_eq!(
        xattr_of(&onto.path().join("f"), "user.k").as_deref(),
        Some(&[0u8, 1, 2][..])
    );
}
