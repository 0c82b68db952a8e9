use super::*;

#[test]
fn rejects_absolute_path() {
    let tar = TarBuilder::new()
        .raw(tar::EntryType::Regular, b"/etc/x", b"", b"x")
        .done();
    refused_everywhere(&tar, "absolute path");
}

#[test]
fn rejects_dotdot() {
    let tar = TarBuilder::new()
        .raw(tar::EntryType::Regular, b"a/../../x", b"", b"x")
        .done();
    refused_everywhere(&tar, "..");
    let tar = TarBuilder::new()
        .raw(tar::EntryType::Regular, b"..", b"", b"")
        .done();
    refused_everywhere(&tar, "..");
}

#[test]
fn rejects_empty_path_and_bad_whiteouts() {
    let tar = TarBuilder::new()
        .raw(tar::EntryType::Regular, b"", b"", b"")
        .done();
    refused_everywhere(&tar, "empty path");
    let tar = TarBuilder::new()
        .raw(tar::EntryType::Regular, b"a/.wh.", b"", b"")
        .done();
    refused_everywhere(&tar, "invalid whiteout");
    let tar = TarBuilder::new()
        .raw(tar::EntryType::Regular, b".", b"", b"")
        .done();
    refused_everywhere(&tar, "layer root");
}

#[test]
fn rejects_bad_hardlink_targets() {
    let tar = TarBuilder::new()
        .raw(tar::EntryType::Link, b"l", b"/etc/passwd", b"")
        .done();
    refused_everywhere(&tar, "hardlink target: absolute path");
    let tar = TarBuilder::new()
        .raw(tar::EntryType::Link, b"l", b"../../etc/passwd", b"")
        .done();
    refused_everywhere(&tar, "hardlink target: path contains `..`");
    let root = tempfile::tempdir().unwrap();
    let tar = TarBuilder::new().hardlink("l", "missing").done();
    assert_entry_err(apply(&tar, root.path()), "does not exist");
}

#[test]
fn rejects_writing_through_symlink_in_same_tar() {
    let outside = tempfile::tempdir().unwrap();
    let tar = TarBuilder::new()
        .symlink("esc", outside.path().to_str().unwrap())
        .file("esc/pwned", b"x", 0o644)
        .done();
    assert_entry_err(spool(&tar), "writes through symlink esc");
    let root = tempfile::tempdir().unwrap();
    assert_entry_err(apply(&tar, root.path()), "writes through symlink esc");
    assert!(!outside.path().join("pwned").exists());

    let tar = TarBuilder::new()
        .dir("d", 0o755)
        .symlink("d/s", "/")
        .file("d/s/x/y", b"", 0o644)
        .done();
    assert_entry_err(spool(&tar), "writes through symlink d/s");

    // Hardlinked symlinks and link targets through symlinks.
    let tar = TarBuilder::new()
        .symlink("s", "/etc")
        .hardlink("s2", "s")
        .file("s2/x", b"", 0o644)
        .done();
    assert_entry_err(spool(&tar), "writes through symlink s2");
    let tar = TarBuilder::new()
        .symlink("s", "/etc")
        .hardlink("pw", "s/passwd")
        .done();
    assert_entry_err(spool(&tar), "writes through symlink s");
    let tar = TarBuilder::new()
        .symlink("s", "/etc")
        .file("s/.wh..wh..opq", b"", 0)
        .done();
    assert_entry_err(spool(&tar), "writes through symlink s");

    // A symlink replaced by a directory is fine again.
    let tar = TarBuilder::new()
        .symlink("s", "/etc")
        .dir("s", 0o755)
        .file("s/x", b"ok", 0o644)
        .done();
    spool(&tar).unwrap();
    let root = tempfile::tempdir().unwrap();
    apply(&tar, root.path()).unwrap();
    assert_eq!(fs::read(root.path().join("s/x")).unwrap(), b"ok");
}

#[test]
fn rejects_unsupported_types() {
    let tar = TarBuilder::new()
        .raw(tar::EntryType::new(b'V'), b"vol", b"", b"")
        .done();
    refused_everywhere(&tar, "unsupported entry type");
    let tar = TarBuilder::new()
        .raw(tar::EntryType::new(b'S'), b"sparse", b"", b"")
        .done();
    match spool(&tar) {
        Err(Error::Entry { .. }) | Err(Error::Read { .. }) => {}
        other => panic!("sparse accepted: {other:?}"),
    }
}

#[test]
fn device_nodes_refused_by_default() {
    for (kind, what) in [
        (tar::EntryType::Block, "block device 7:0"),
        (tar::EntryType::Char, "char device 1:3"),
    ] {
        let (ma, mi) = if kind == tar::EntryType::Block {
            (7, 0)
        } else {
            (1, 3)
        };
        let tar = TarBuilder::new().node("dev/x", kind, ma, mi).done();
        for r in [
            spool(&tar).map(|_| ()),
            apply(&tar, tempfile::tempdir().unwrap().path()).map(|_| ()),
        ] {
            let msg = r.expect_err("device imported by default").to_string();
            assert!(msg.contains(what) && msg.contains("refused"), "{msg}");
            assert!(msg.contains("--allow-devices"), "{msg}");
            assert!(msg.contains("\"dev/x\""), "{msg}");
        }
    }
}

#[test]
fn bad_xattr_records_are_refused_before_import() {
    let mut tb = TarBuilder::new();
    tb = tb.pax(&[("SCHILY.xattr.user.k", b"v")]);
    let tar = tb.symlink("l", "t").done();
    assert_entry_err(spool(&tar), "only on regular files and directories");
    for (key, what) in [
        ("SCHILY.xattr.security.capability", "only on regular files"),
        (
            "SCHILY.xattr.system.posix_acl_default",
            "only on directories",
        ),
    ] {
        let mut tb = TarBuilder::new();
        tb = tb.pax(&[(key, &acl_value())]);
        let tar = tb.symlink("l", "t").done();
        assert_entry_err(spool(&tar), what);
    }
    let mut tb = TarBuilder::new();
    tb = tb.pax(&[("SCHILY.xattr.user.k", b"v")]);
    // The same on a regular file is fine, and on a hardlink ignored.
    tb = tb.file("x", b"x", 0o644);
    tb = tb.pax(&[("SCHILY.xattr.user.k", b"other")]);
    let tar = tb.hardlink("y", "x").done();
    spool(&tar).unwrap();
    let root = tempfile::tempdir().unwrap();
    if xattrs_supported(root.path()) {
        apply(&tar, root.path()).unwrap();
        assert_eq!(
            xattr_of(&root.path().join("y"), "user.k").as_deref(),
            Some(&b"v"[..])
        );
    }
    // A record whose length runs past the header's data.
    let mut tb = TarBuilder::new();
    let data = b"99 SCHILY.xattr.user.k=v\n";
    let mut h = header(tar::EntryType::XHeader, 0o644, data.len() as u64);
    h.set_cksum();
    tb = tb.append(&h, data);
    let tar = tb.file("f", b"", 0o644).done();
    assert_entry_err(spool(&tar), "malformed PAX record");
    let mut tb = TarBuilder::new();
    let big = vec![b'x'; XATTR_SIZE_MAX + 1];
    tb = tb.pax(&[("SCHILY.xattr.user.big", &big)]);
    let tar = tb.file("f", b"", 0o644).done();
    assert_entry_err(spool(&tar), "larger than");
}

#[test]
fn errors_escape_names_from_the_tar() {
    // A name forging a second output line, with a terminal escape.
    let name = b"x\ncreated layer \x1b[2Jevil/../../y";
    let tar = TarBuilder::new()
        .raw(tar::EntryType::Regular, name, b"", b"")
        .done();
    let msg = spool(&tar).unwrap_err().to_string();
    assert_clean(&msg);
    assert!(msg.contains("\\n") && msg.contains("{1b}"), "{msg}");

    // A symlink whose name has a newline, written through later.
    let tar = TarBuilder::new()
        .raw(tar::EntryType::Symlink, b"l\nk", b"/etc", b"")
        .raw(tar::EntryType::Regular, b"l\nk/passwd", b"", b"")
        .done();
    let msg = spool(&tar).unwrap_err().to_string();
    assert!(msg.contains("writes through symlink"), "{msg}");
    assert_clean(&msg);

    // The tar crate's own messages quote header fields: a bad mode field.
    let mut h = header(tar::EntryType::Regular, 0o644, 0);
    h.as_old_mut().name[..5].copy_from_slice(b"a\x1b]0;");
    h.as_old_mut().size = *b"zz\n\x1b[31m\0\0\0\0";
    h.set_cksum();
    let mut tar = h.as_bytes().to_vec();
    tar.extend_from_slice(&[0u8; 1024]);
    let msg = spool(&tar).unwrap_err().to_string();
    assert_clean(&msg);

    // Hardlink target missing: the reason quotes the target.
    let root = tempfile::tempdir().unwrap();
    let tar = TarBuilder::new()
        .raw(tar::EntryType::Link, b"l", b"no\x1bpe", b"")
        .done();
    let msg = apply(&tar, root.path()).unwrap_err().to_string();
    assert!(msg.contains("does not exist"), "{msg}");
    assert_clean(&msg);
}
