use super::*;

#[test]
fn tar_dir_is_deterministic_and_digest_stable() {
    let src = tempfile::tempdir().unwrap();
    populate(src.path());
    let mut t1 = Vec::new();
    let mut t2 = Vec::new();
    let n = tar_dir(src.path(), &mut t1).unwrap();
    tar_dir(src.path(), &mut t2).unwrap();
    assert_eq!(t1, t2);
    assert_eq!(spool(&t1).unwrap().digest, spool(&t2).unwrap().digest);
    assert_eq!(spool(&t1).unwrap().entries, n);
}

#[test]
fn tar_dir_order_names_and_hardlinks() {
    let src = tempfile::tempdir().unwrap();
    let s = src.path();
    fs::create_dir_all(s.join("a/c")).unwrap();
    fs::create_dir(s.join("a-b")).unwrap();
    fs::write(s.join("a/c/f"), b"1").unwrap();
    fs::hard_link(s.join("a/c/f"), s.join("z")).unwrap();
    fs::hard_link(s.join("a/c/f"), s.join("a-b/g")).unwrap();
    let mut t = Vec::new();
    assert_eq!(tar_dir(s, &mut t).unwrap(), 7);
    let names = entry_names(&t);
    use tar::EntryType as E;
    assert_eq!(
        names,
        vec![
            ("./".into(), E::Directory),
            ("a".into(), E::Directory),
            ("a-b".into(), E::Directory),
            ("a-b/g".into(), E::Regular),
            ("a/c".into(), E::Directory),
            ("a/c/f".into(), E::Link),
            ("z".into(), E::Link),
        ]
    );
    let mut a = tar::Archive::new(&t[..]);
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        if e.header().entry_type() == E::Link {
            assert_eq!(&*e.link_name_bytes().unwrap(), b"a-b/g");
        }
    }
}

#[test]
fn tar_dir_without_xattrs_is_unchanged() {
    // No PAX header unless a file has xattrs: digests of existing --from-dir layers stay.
    let src = tempfile::tempdir().unwrap();
    populate(src.path());
    let mut out = Vec::new();
    tar_dir(src.path(), &mut out).unwrap();
    let mut a = tar::Archive::new(&out[..]);
    for e in a.entries().unwrap() {
        let mut e = e.unwrap();
        assert!(e.pax_extensions().unwrap().is_none());
    }
}

fn base_tar() -> Vec<u8> {
    TarBuilder::new()
        .dir("etc", 0o755)
        .file("etc/conf", b"v1", 0o644)
        .file("etc/mode", b"m", 0o644)
        .file("etc/same", b"s", 0o644)
        .dir("gone", 0o755)
        .file("gone/a", b"a", 0o644)
        .dir("gone/sub", 0o755)
        .file("gone/sub/b", b"b", 0o644)
        .file("gonefile", b"g", 0o644)
        .dir("keep", 0o755)
        .file("keep/untouched", b"u", 0o644)
        .file("keep/linked", b"L", 0o644)
        .dir("todir", 0o755)
        .file("todir/child", b"c", 0o644)
        .symlink("sym", "etc/conf")
        .done()
}

fn base(dir: &Path) {
    apply(&base_tar(), dir).unwrap();
}

#[test]
fn write_diff_detects_changes_and_reproduces_layer() {
    let parent = tempfile::tempdir().unwrap();
    let layer = tempfile::tempdir().unwrap();
    let (p, l) = (parent.path(), layer.path());
    base(p);
    base(l);
    // Identical trees: empty diff.
    let mut empty = Vec::new();
    let s = write_diff(l, Some(p), &mut empty).unwrap();
    assert_eq!(s, DiffStats::default());
    assert!(entry_names(&empty).is_empty());

    fs::write(l.join("etc/conf"), b"version 2").unwrap();
    fs::set_permissions(l.join("etc/mode"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_dir_all(l.join("gone")).unwrap();
    fs::remove_file(l.join("gonefile")).unwrap();
    fs::create_dir(l.join("new")).unwrap();
    fs::write(l.join("new/file"), b"fresh").unwrap();
    fs::hard_link(l.join("keep/linked"), l.join("new/link-to-unchanged")).unwrap();
    fs::write(l.join("new/a"), b"pair").unwrap();
    fs::hard_link(l.join("new/a"), l.join("new/b")).unwrap();
    fs::remove_file(l.join("sym")).unwrap();
    symlink("etc/same", l.join("sym")).unwrap();
    fs::remove_dir_all(l.join("todir")).unwrap();
    fs::write(l.join("todir"), b"was a dir").unwrap();

    let mut diff = Vec::new();
    let stats = write_diff(l, Some(p), &mut diff).unwrap();
    assert_eq!(
        stats,
        DiffStats {
            // new, new/file, new/link-to-unchanged, new/a, new/b
            added: 5,
            // etc/conf, etc/mode, sym, todir ("etc" is emitted only as a parent)
            modified: 4,
            // gone, gonefile
            deleted: 2,
        }
    );
    let names: Vec<String> = entry_names(&diff).into_iter().map(|(n, _)| n).collect();
    assert!(names.contains(&".wh.gone".to_string()), "{names:?}");
    assert!(names.contains(&".wh.gonefile".to_string()));
    assert!(!names.iter().any(|n| n.starts_with("gone/")));
    assert!(!names.iter().any(|n| n.starts_with("todir/")));
    assert!(!names.contains(&"etc/same".to_string()));
    assert!(!names.contains(&"keep".to_string()));
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    for (n, t) in entry_names(&diff) {
        if n == "new/b" || n == "new/link-to-unchanged" {
            assert_eq!(t, tar::EntryType::Link, "{n}");
        }
    }

    // Apply onto a fresh copy of the parent: the result matches the layer.
    let copy = tempfile::tempdir().unwrap();
    base(copy.path());
    spool(&diff).unwrap();
    apply(&diff, copy.path()).unwrap();
    assert_eq!(snapshot(l), snapshot(copy.path()));
    for dir in ["etc", "new"] {
        assert_eq!(
            dir_mtime(&l.join(dir)),
            dir_mtime(&copy.path().join(dir)),
            "{dir}"
        );
    }
}

#[test]
fn write_diff_nested_deletes_emit_parents() {
    let parent = tempfile::tempdir().unwrap();
    let layer = tempfile::tempdir().unwrap();
    let (p, l) = (parent.path(), layer.path());
    for d in [p, l] {
        fs::create_dir_all(d.join("x/y/z")).unwrap();
        fs::write(d.join("x/y/z/f"), b"f").unwrap();
        fs::write(d.join("x/y/z/g"), b"g").unwrap();
        for rel in ["x/y/z/f", "x/y/z/g", "x/y/z", "x/y", "x"] {
            set_mtime_secs(&d.join(rel), 1_000_000);
        }
    }
    fs::remove_file(l.join("x/y/z/f")).unwrap();
    // Only z's mtime changes; x and x/y must still be emitted before the whiteout.
    let mut diff = Vec::new();
    let s = write_diff(l, Some(p), &mut diff).unwrap();
    assert_eq!((s.added, s.modified, s.deleted), (0, 1, 1));
    let names: Vec<String> = entry_names(&diff).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, vec!["x", "x/y", "x/y/z", "x/y/z/.wh.f"]);
    let mut a = tar::Archive::new(&diff[..]);
    for e in a.entries().unwrap() {
        let e = e.unwrap();
        if e.path_bytes().ends_with(b".wh.f") {
            assert_eq!(e.header().mode().unwrap(), 0);
            assert_eq!(e.size(), 0);
            assert_eq!(e.header().entry_type(), tar::EntryType::Regular);
        }
    }
}

#[test]
fn write_diff_without_parent_is_everything() {
    let layer = tempfile::tempdir().unwrap();
    populate(layer.path());
    let mut diff = Vec::new();
    let s = write_diff(layer.path(), None, &mut diff).unwrap();
    let mut full = Vec::new();
    let n = tar_dir(layer.path(), &mut full).unwrap();
    assert_eq!(s.added, n);
    assert_eq!((s.modified, s.deleted), (0, 0));
    assert_eq!(diff, full);
}
