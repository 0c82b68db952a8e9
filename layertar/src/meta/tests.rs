use super::*;
use std::os::unix::fs::{symlink, MetadataExt};

const SKIP_FAIL: Policy = Policy {
    unsupported_xattr: Unsupported::Fail,
    not_root: NotRoot::Eperm,
};

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

fn c(s: &str) -> CString {
    CString::new(s).unwrap()
}

#[test]
fn owner_then_mode_keeps_setuid_and_times_come_last() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    fs::write(&f, b"x").unwrap();
    let t = Times {
        atime: TimeSpec::new(1_000_000_000, 5),
        mtime: TimeSpec::new(1_500_000_000, 7),
    };
    let owner = is_root().then_some(Owner {
        uid: 1000,
        gid: 1001,
    });
    let xattrs = [(c("user.k"), b"v".to_vec())];
    let meta = Meta {
        owner,
        mode: Some(0o4755),
        xattrs: &xattrs,
        times: Some(t),
    };
    let policy = Policy {
        unsupported_xattr: Unsupported::Skip,
        ..SKIP_FAIL
    };
    assert!(!apply(&f, &meta, policy).unwrap().owner_dropped);
    let m = fs::symlink_metadata(&f).unwrap();
    // chown before chmod: the setuid bit survives.
    assert_eq!(m.mode() & 0o7777, 0o4755);
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_500_000_000, 7));
    assert_eq!((m.atime(), m.atime_nsec()), (1_000_000_000, 5));
    if is_root() {
        assert_eq!((m.uid(), m.gid()), (1000, 1001));
    }
}

#[test]
fn capability_set_after_chown_survives_it() {
    if !is_root() {
        eprintln!("SKIP: needs root to set security.capability");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("ping");
    fs::write(&f, b"x").unwrap();
    // cap_net_raw+ep, VFS_CAP_REVISION_2.
    let mut cap = vec![0u8; 20];
    cap[..4].copy_from_slice(&[0x01, 0x00, 0x00, 0x02]);
    cap[5] = 0x20;
    let xattrs = [(c("security.capability"), cap.clone())];
    let meta = Meta {
        owner: Some(Owner {
            uid: 1000,
            gid: 1000,
        }),
        mode: Some(0o755),
        xattrs: &xattrs,
        times: None,
    };
    apply(&f, &meta, SKIP_FAIL).unwrap();
    let got = read_xattrs(&f, |n| n == b"security.capability").unwrap();
    assert_eq!(got, vec![(c("security.capability"), cap)]);
}

#[test]
fn a_symlink_is_never_followed() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().join("target");
    fs::write(&target, b"t").unwrap();
    let before = fs::metadata(&target).unwrap();
    let link = dir.path().join("link");
    symlink(&target, &link).unwrap();
    let meta = Meta {
        owner: Some(Owner {
            uid: before.uid(),
            gid: before.gid(),
        }),
        mode: None,
        xattrs: &[],
        times: Some(Times::both(TimeSpec::new(1_234_567_890, 0))),
    };
    apply(&link, &meta, SKIP_FAIL).unwrap();
    assert_eq!(fs::symlink_metadata(&link).unwrap().mtime(), 1_234_567_890);
    let after = fs::metadata(&target).unwrap();
    assert_eq!(after.mtime(), before.mtime());
    // user.* xattrs do not exist on symlinks: refused for the link, not set on the target.
    let xattrs = [(c("user.k"), b"v".to_vec())];
    let err = apply(
        &link,
        &Meta {
            xattrs: &xattrs,
            ..Meta::default()
        },
        SKIP_FAIL,
    )
    .unwrap_err();
    assert_eq!(err.step, Step::SetXattr(c("user.k")));
    assert!(read_xattrs(&target, |_| true).unwrap().is_empty());
}

#[test]
fn parts_left_out_are_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    fs::write(&f, b"x").unwrap();
    fs::set_permissions(&f, fs::Permissions::from_mode(0o640)).unwrap();
    let before = fs::metadata(&f).unwrap();
    apply(&f, &Meta::default(), SKIP_FAIL).unwrap();
    let after = fs::metadata(&f).unwrap();
    assert_eq!(after.mode(), before.mode());
    assert_eq!(
        (after.mtime(), after.mtime_nsec()),
        (before.mtime(), before.mtime_nsec())
    );
}

#[test]
fn read_xattrs_filters_and_sorts() {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("f");
    fs::write(&f, b"x").unwrap();
    let cp = c(f.to_str().unwrap());
    if let Err(e) = set_xattr(&cp, &c("user.b"), b"2") {
        eprintln!("SKIP: no user xattrs here: {e}");
        return;
    }
    set_xattr(&cp, &c("user.a"), b"1").unwrap();
    set_xattr(&cp, &c("user.skip"), b"").unwrap();
    let got = read_xattrs(&f, |n| n != b"user.skip").unwrap();
    assert_eq!(
        got,
        vec![(c("user.a"), b"1".to_vec()), (c("user.b"), b"2".to_vec())]
    );
    assert_eq!(get_xattr(&cp, &c("user.b")).unwrap(), b"2");
    let err = get_xattr(&cp, &c("user.none")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(nix::libc::ENODATA));
}
