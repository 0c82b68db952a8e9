//! Volumes and copies (`clone_active`) of the file-level drivers, overlay and vfs, on real xfs
//! and ext4 backings on loop devices, through the driver directly. Needs root.

#[path = "direct.rs"]
mod direct;

use blkdrv_drivers::{Bytes, DriverError, LayerChain};
use direct::{id, Direct};
use std::os::unix::fs::MetadataExt;

fn pool(driver: &str, fs: &str) -> Direct {
    Direct::new(driver, Bytes::mib(512), &[("fs", fs)]).unwrap()
}

#[test]
fn overlay_volumes_and_copies() {
    let d = pool("overlay", "xfs");
    direct::volume_copies(&d).unwrap();
    direct::layer_copy_keeps_deletions(&d).unwrap();
}

#[test]
fn vfs_volumes_and_copies() {
    let d = pool("vfs", "ext4");
    direct::volume_copies(&d).unwrap();
    direct::layer_copy_keeps_deletions(&d).unwrap();
}

#[test]
fn directory_drivers_refuse_volume_limits_and_make_nothing() {
    for driver in ["overlay", "vfs"] {
        let d = pool(driver, "ext4");
        let e = d
            .driver
            .create_volume(id(1), Some(Bytes::mib(10)))
            .unwrap_err();
        assert!(matches!(e, DriverError::Unsupported { .. }), "{e:?}");
        let text = e.to_string();
        assert!(
            text.contains("plain directories without per-volume limits"),
            "{text}"
        );
        assert!(d.list().unwrap().is_empty(), "{driver}: something was made");
    }
}

/// On xfs (reflink=1) the overlay copy shares the file's extents: the copy costs metadata, and
/// the copied file keeps owner, mode and xattrs.
#[test]
fn overlay_copy_on_xfs_reflinks_and_keeps_metadata() {
    let d = pool("overlay", "xfs");
    let v = LayerChain::volume(id(1));
    d.driver.create_volume(v.id, None).unwrap();
    let m = d.mount_rw(&v).unwrap();
    direct::write_synced(&m.join("big"), 64 << 20).unwrap();
    std::os::unix::fs::chown(m.join("big"), Some(1234), Some(5678)).unwrap();
    std::fs::set_permissions(
        m.join("big"),
        std::os::unix::fs::PermissionsExt::from_mode(0o4751),
    )
    .unwrap();
    xattr_set(&m.join("big"), "user.k", b"v");
    let before = d.driver.space().unwrap().used;
    d.driver.clone_active(&v, id(2)).unwrap();
    let after = d.driver.space().unwrap().used;
    assert!(
        after.0 < before.0 + (16 << 20),
        "a 64 MiB file copied by reflink took {} bytes",
        after.0 - before.0
    );
    let mc = d.mount_rw(&LayerChain::volume(id(2))).unwrap();
    let md = std::fs::metadata(mc.join("big")).unwrap();
    assert_eq!(
        (md.uid(), md.gid(), md.mode() & 0o7777),
        (1234, 5678, 0o4751)
    );
    assert_eq!(xattr_get(&mc.join("big"), "user.k"), b"v");
    assert_eq!(md.len(), 64 << 20);
}

fn xattr_set(p: &std::path::Path, name: &str, value: &[u8]) {
    let p = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let r = unsafe {
        nix::libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    assert_eq!(r, 0, "lsetxattr: {}", std::io::Error::last_os_error());
}

fn xattr_get(p: &std::path::Path, name: &str) -> Vec<u8> {
    let p = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let n = std::ffi::CString::new(name).unwrap();
    let mut buf = vec![0u8; 256];
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let r =
        unsafe { nix::libc::lgetxattr(p.as_ptr(), n.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(r >= 0, "lgetxattr: {}", std::io::Error::last_os_error());
    buf.truncate(r as usize);
    buf
}
