//! Hardening: loop devices held by other processes, deleted backing files, and what `pool
//! destroy` leaves behind (issue #11, defects 2 and 4).

use crate::trial;
use blkdrv_drivers::sys::loopdev;
use libtest_mimic::Trial;

pub fn trials() -> Vec<Trial> {
    vec![trial(
        "loopdev::find_matches_inode_not_path",
        find_matches_inode_not_path,
    )]
}

/// A device attached to a file that was deleted and recreated at the same path is not that
/// file's device.
fn find_matches_inode_not_path() {
    let dir = tempfile::tempdir_in("/tmp").unwrap();
    let img = dir.path().join("x.img");
    loopdev::create_sparse_file(&img, blkdrv_drivers::Bytes::mib(16)).unwrap();
    let lo = loopdev::attach(&img).unwrap();
    let img = img.canonicalize().unwrap();
    assert_eq!(
        loopdev::find_by_backing_file(&img).unwrap(),
        vec![lo.path.clone()]
    );
    std::fs::remove_file(&img).unwrap();
    loopdev::create_sparse_file(&img, blkdrv_drivers::Bytes::mib(16)).unwrap();
    assert!(
        loopdev::find_by_backing_file(&img).unwrap().is_empty(),
        "{} is attached to the deleted file, not the new one",
        lo.path.display()
    );
    let again = loopdev::attach(&img).unwrap();
    assert_ne!(
        again.path, lo.path,
        "attach reused the deleted file's device"
    );
    let _ = loopdev::detach(&again.path);
    let _ = loopdev::detach(&lo.path);
}
