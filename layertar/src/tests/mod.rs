//! Unit tests of the whole crate, by concern: spooling, applying, hostile input, xattrs, and
//! writing tars of a directory or a diff. Tars are built with [`crate::testing`], the builder
//! the integration tests use too.

use crate::apply::{lstat, IMPORT, PROGRESS_STEP};
use crate::entry::{parse_pax_time, XATTR_SIZE_MAX};
use crate::meta::{self, Meta, Times, Xattr};
use crate::testing::{gzip, header, TarBuilder};
use crate::write::{kept_xattrs, rel_path, walk_tree};
use crate::*;
use nix::sys::stat::{makedev, Mode};
use nix::sys::time::TimeSpec;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::{lchown, symlink, FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

mod apply;
mod hostile;
mod spool;
mod write;
mod xattrs;

/// Sets `xattrs` on `p` as an import does (a filesystem without the namespace is an error).
fn set_xattrs(p: &Path, xattrs: &[Xattr]) -> Result<()> {
    meta::apply(
        p,
        &Meta {
            xattrs,
            ..Meta::default()
        },
        IMPORT,
    )?;
    Ok(())
}

fn apply(tar: &[u8], root: &Path) -> Result<ApplyStats> {
    apply_tar(tar, root, &ApplyOptions::default(), &mut |_| {})
}

fn spool(tar: &[u8]) -> Result<Digested> {
    let dir = tempfile::tempdir().unwrap();
    spool_tar(tar, dir.path()).map(|(_, d)| d)
}

fn sha(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn assert_entry_err(r: Result<impl std::fmt::Debug>, want: &str) {
    match r {
        Err(Error::Entry { reason, .. }) => {
            assert!(reason.contains(want), "reason {reason:?} lacks {want:?}")
        }
        other => panic!("expected TarEntry({want}), got {other:?}"),
    }
}

fn set_mtime_secs(p: &Path, secs: i64) {
    let times = Some(Times::both(TimeSpec::new(secs, 0)));
    meta::apply(
        p,
        &Meta {
            times,
            ..Meta::default()
        },
        IMPORT,
    )
    .unwrap();
}

fn entry_names(tar: &[u8]) -> Vec<(String, tar::EntryType)> {
    let mut a = tar::Archive::new(tar);
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                e.header().entry_type(),
            )
        })
        .collect()
}

/// A comparable description of a tree: type, mode, uid, gid, mtime seconds, content or
/// link target, and which paths share an inode.
fn snapshot(dir: &Path) -> Vec<String> {
    let tree = walk_tree(dir).unwrap();
    let mut first_of_inode: HashMap<u64, String> = HashMap::new();
    let mut out = Vec::new();
    for (rel, m) in &tree {
        let rel_s = String::from_utf8_lossy(rel).into_owned();
        let abs = dir.join(rel_path(rel));
        let ft = m.file_type();
        let what = if ft.is_dir() {
            // Directory mtimes are checked separately where they matter.
            format!("dir {:o}", m.mode())
        } else if ft.is_symlink() {
            format!("link -> {}", fs::read_link(&abs).unwrap().display())
        } else if ft.is_file() {
            format!("file {:o} {:?}", m.mode(), fs::read(&abs).unwrap())
        } else {
            format!("special {:o} {}", m.mode(), m.rdev())
        };
        let link = if !ft.is_dir() && m.nlink() > 1 {
            match first_of_inode.get(&m.ino()) {
                Some(f) => format!(" =hardlink {f}"),
                None => {
                    first_of_inode.insert(m.ino(), rel_s.clone());
                    String::new()
                }
            }
        } else {
            String::new()
        };
        let mtime = if ft.is_dir() { 0 } else { m.mtime() };
        out.push(format!(
            "{rel_s}: {what} {}:{} t{mtime}{link}",
            m.uid(),
            m.gid()
        ));
    }
    out
}

fn dir_mtime(p: &Path) -> i64 {
    fs::symlink_metadata(p).unwrap().mtime()
}

/// A source tree with most kinds of entries.
fn populate(src: &Path) {
    fs::create_dir_all(src.join("a/deep/er")).unwrap();
    fs::create_dir(src.join("a-b")).unwrap();
    fs::write(src.join("a/file.txt"), b"hello world").unwrap();
    fs::write(src.join("a/deep/er/x"), vec![7u8; 3000]).unwrap();
    fs::write(src.join("suid"), b"#!/bin/sh\n").unwrap();
    fs::hard_link(src.join("a/file.txt"), src.join("hl")).unwrap();
    symlink("a/file.txt", src.join("sym")).unwrap();
    symlink("/etc/passwd", src.join("abs-sym")).unwrap();
    nix::unistd::mkfifo(&src.join("fifo"), Mode::from_bits_truncate(0o640)).unwrap();
    let long = "n".repeat(150);
    fs::write(src.join("a").join(&long), b"long name").unwrap();
    symlink("t".repeat(200), src.join("longsym")).unwrap();
    fs::create_dir(src.join("sticky")).unwrap();
    fs::set_permissions(src.join("sticky"), fs::Permissions::from_mode(0o1777)).unwrap();
    fs::create_dir(src.join("ro")).unwrap();
    fs::write(src.join("ro/f"), b"r").unwrap();
    fs::set_permissions(src.join("ro/f"), fs::Permissions::from_mode(0o400)).unwrap();
    fs::set_permissions(src.join("ro"), fs::Permissions::from_mode(0o555)).unwrap();
    if nix::unistd::geteuid().is_root() {
        lchown(src.join("a/file.txt"), Some(1000), Some(1001)).unwrap();
        lchown(src.join("sym"), Some(1234), Some(4321)).unwrap();
        lchown(src.join("a/deep"), Some(5), Some(6)).unwrap();
    }
    // After chown, which would clear setuid.
    fs::set_permissions(src.join("suid"), fs::Permissions::from_mode(0o4755)).unwrap();
    for (i, (rel, _)) in walk_tree(src).unwrap().iter().enumerate().rev() {
        set_mtime_secs(&src.join(rel_path(rel)), 1_500_000_000 + i as i64);
    }
}

/// Each bad tar must be refused by spool_tar and by apply_tar.
fn refused_everywhere(tar: &[u8], want: &str) {
    assert_entry_err(spool(tar), want);
    let root = tempfile::tempdir().unwrap();
    assert_entry_err(apply(tar, root.path()), want);
}

/// Creates `p` and sets a user xattr; false (with the reason printed) if the filesystem of
/// the temp dir cannot hold one.
fn xattrs_supported(dir: &Path) -> bool {
    let p = dir.join(".xattr-probe");
    fs::write(&p, b"").unwrap();
    let r = set_xattrs(&p, &[(CString::new("user.probe").unwrap(), b"1".to_vec())]);
    fs::remove_file(&p).unwrap();
    match r {
        Ok(()) => true,
        Err(e) => {
            eprintln!("SKIP: {} cannot hold user xattrs: {e}", dir.display());
            false
        }
    }
}

fn xattr_of(p: &Path, name: &str) -> Option<Vec<u8>> {
    kept_xattrs(p)
        .unwrap()
        .into_iter()
        .find(|(n, _)| n.as_bytes() == name.as_bytes())
        .map(|(_, v)| v)
}

/// A file capability (cap_net_raw+ep, VFS_CAP_REVISION_2): binary, with NUL bytes.
const CAP_NET_RAW: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x00, 0x00, 0x00, 0x00,
];

/// A POSIX access ACL in the kernel's xattr form: user::rwx user:10:r-- group::r-x
/// mask::r-x other::r-- (uid 10 puts a 0x0a byte in the value).
fn acl_value() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 7u16, u32::MAX),
        (0x02, 4, 10),
        (0x04, 5, u32::MAX),
        (0x10, 5, u32::MAX),
        (0x20, 4, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

/// Every message is one line of printable text, whatever the tar holds.
fn assert_clean(msg: &str) {
    assert!(
        !msg.chars().any(|c| c.is_control()),
        "control character in {msg:?}"
    );
}
