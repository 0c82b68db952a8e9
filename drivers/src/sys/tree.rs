//! File-tree operations for the directory-based drivers: measuring a layer, copying one in full
//! (vfs, and overlay copy-up of a whole layer), and deleting one.
//!
//! All walks are iterative (image layers can be thousands of directories deep), never follow
//! symlinks, and stop at mount points: a layer that still has something mounted inside must not
//! be measured, copied or deleted through it.

use crate::error::{DriverError, Result};
use crate::units::{Bytes, Sectors};
use layertar::meta::{self, Meta, NotRoot, Owner, Policy, Step, Times, Unsupported};
use nix::errno::Errno;
use nix::libc;
use nix::sys::stat::{mknod, Mode, SFlag};
use nix::sys::time::TimeSpec;
use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::{self, Metadata, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::{Path, PathBuf};

fn lstat(op: &'static str, path: &Path) -> Result<Metadata> {
    fs::symlink_metadata(path).map_err(|e| DriverError::io(op, path, e))
}

fn not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

fn cstring(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

/// Whether the directory `path` is the root of a mount. statx's STATX_ATTR_MOUNT_ROOT (Linux 5.8)
/// also sees bind mounts of the same filesystem and does not mistake btrfs subvolumes for mounts;
/// older kernels fall back to comparing st_dev with the walk's root.
fn is_mount_root(path: &Path, meta: &Metadata, root_dev: u64) -> bool {
    statx_mount_root(path).unwrap_or(meta.dev() != root_dev)
}

fn statx_mount_root(path: &Path) -> Option<bool> {
    let c = cstring(path).ok()?;
    let mut stx = std::mem::MaybeUninit::<libc::statx>::zeroed();
    // SAFETY: `c` is a valid NUL-terminated path and `stx` a writable statx buffer.
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW | libc::AT_STATX_DONT_SYNC,
            0,
            stx.as_mut_ptr(),
        )
    };
    if rc != 0 {
        return None;
    }
    // SAFETY: statx succeeded and filled the buffer (which was zeroed to begin with anyway).
    let stx = unsafe { stx.assume_init() };
    let bit = libc::STATX_ATTR_MOUNT_ROOT as u64;
    (stx.stx_attributes_mask & bit != 0).then_some(stx.stx_attributes & bit != 0)
}

fn mount_point_error(path: &Path) -> DriverError {
    DriverError::io(
        "remove tree: mount point inside",
        path,
        io::Error::from_raw_os_error(libc::EBUSY),
    )
}

/// Space and inodes used by the tree at `root`: st_blocks*512 of every inode counted once
/// (hardlinks by (dev, ino)), and the number of distinct inodes including `root` itself.
/// Does not cross mount points and never follows symlinks.
pub fn disk_usage(root: &Path) -> Result<(Bytes, u64)> {
    const OP: &str = "disk usage";
    let meta = lstat(OP, root)?;
    let root_dev = meta.dev();
    // st_blocks counts 512-byte units whatever the filesystem's block size.
    let mut bytes = Sectors(meta.blocks()).bytes();
    let mut inodes = 1u64;
    if !meta.is_dir() {
        return Ok((bytes, inodes));
    }
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            // A live layer may lose a directory while it is measured.
            Err(e) if not_found(&e) && dir != root => continue,
            Err(e) => return Err(DriverError::io(OP, &dir, e)),
        };
        for entry in entries {
            let entry = entry.map_err(|e| DriverError::io(OP, &dir, e))?;
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if not_found(&e) => continue,
                Err(e) => return Err(DriverError::io(OP, entry.path(), e)),
            };
            if meta.is_dir() {
                let path = entry.path();
                if is_mount_root(&path, &meta, root_dev) {
                    continue;
                }
                stack.push(path);
            } else if meta.nlink() > 1 && !seen.insert((meta.dev(), meta.ino())) {
                continue;
            }
            bytes += Sectors(meta.blocks()).bytes();
            inodes += 1;
        }
    }
    Ok((bytes, inodes))
}

// FICLONE = _IOW(0x94, 9, int): make the destination share the source's extents.
nix::ioctl_write_int!(ficlone, 0x94, 9);

enum CopyStep {
    /// Copy the entries of `src` into the already created `dst`.
    Enter { src: PathBuf, dst: PathBuf },
    /// All of a directory's entries are copied: give it its owner, mode, xattrs and times last,
    /// so that creating the entries neither needs write permission nor bumps the mtime.
    Finish {
        src: PathBuf,
        dst: PathBuf,
        meta: Metadata,
    },
}

/// Copies the tree `src` into the existing, empty directory `dst` like `cp -a --one-file-system`:
/// file data (reflinked when the filesystem can), directories, symlinks, hardlinks (kept as
/// hardlinks within the copy), fifos, sockets, device nodes and overlayfs whiteouts, owners,
/// modes, atimes/mtimes and extended attributes. The root's own metadata is copied onto `dst`.
/// Mount points inside `src` are copied as empty directories. A name that already exists in
/// `dst` fails with EEXIST.
pub fn copy_tree(src: &Path, dst: &Path) -> Result<()> {
    let root_meta = lstat("copy tree: stat source", src)?;
    if !root_meta.is_dir() {
        return Err(DriverError::io(
            "copy tree: source",
            src,
            io::Error::from_raw_os_error(libc::ENOTDIR),
        ));
    }
    let dst_meta =
        fs::metadata(dst).map_err(|e| DriverError::io("copy tree: stat destination", dst, e))?;
    if !dst_meta.is_dir() {
        return Err(DriverError::io(
            "copy tree: destination",
            dst,
            io::Error::from_raw_os_error(libc::ENOTDIR),
        ));
    }
    // dst inside src must not be copied into itself.
    let dst_id = (dst_meta.dev(), dst_meta.ino());
    let root_dev = root_meta.dev();
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    let mut stack = vec![
        CopyStep::Finish {
            src: src.to_path_buf(),
            dst: dst.to_path_buf(),
            meta: root_meta,
        },
        CopyStep::Enter {
            src: src.to_path_buf(),
            dst: dst.to_path_buf(),
        },
    ];
    while let Some(step) = stack.pop() {
        match step {
            CopyStep::Finish { src, dst, meta } => apply_metadata(&src, &dst, &meta)?,
            CopyStep::Enter { src, dst } => {
                let entries = fs::read_dir(&src)
                    .map_err(|e| DriverError::io("copy tree: read dir", &src, e))?;
                for entry in entries {
                    let entry =
                        entry.map_err(|e| DriverError::io("copy tree: read dir", &src, e))?;
                    let s = entry.path();
                    let d = dst.join(entry.file_name());
                    let meta = entry
                        .metadata()
                        .map_err(|e| DriverError::io("copy tree: stat", &s, e))?;
                    if !meta.is_dir() {
                        copy_non_dir(&s, &d, &meta, &mut links)?;
                        continue;
                    }
                    if (meta.dev(), meta.ino()) == dst_id {
                        continue;
                    }
                    fs::DirBuilder::new()
                        .mode(0o700)
                        .create(&d)
                        .map_err(|e| DriverError::io("copy tree: mkdir", &d, e))?;
                    let descend = !is_mount_root(&s, &meta, root_dev);
                    stack.push(CopyStep::Finish {
                        src: s.clone(),
                        dst: d.clone(),
                        meta,
                    });
                    if descend {
                        stack.push(CopyStep::Enter { src: s, dst: d });
                    }
                }
            }
        }
    }
    Ok(())
}

fn copy_non_dir(
    src: &Path,
    dst: &Path,
    meta: &Metadata,
    links: &mut HashMap<(u64, u64), PathBuf>,
) -> Result<()> {
    let key = (meta.dev(), meta.ino());
    if meta.nlink() > 1 {
        if let Some(first) = links.get(&key) {
            // link(2) does not follow symlinks on Linux, so hardlinked symlinks stay symlinks.
            return fs::hard_link(first, dst)
                .map_err(|e| DriverError::io("copy tree: hardlink", dst, e));
        }
    }
    let ft = meta.file_type();
    if ft.is_file() {
        copy_file_data(src, dst)?;
    } else if ft.is_symlink() {
        let target =
            fs::read_link(src).map_err(|e| DriverError::io("copy tree: read link", src, e))?;
        std::os::unix::fs::symlink(&target, dst)
            .map_err(|e| DriverError::io("copy tree: symlink", dst, e))?;
    } else {
        let kind = if ft.is_fifo() {
            SFlag::S_IFIFO
        } else if ft.is_char_device() {
            SFlag::S_IFCHR // includes overlayfs whiteouts (0:0)
        } else if ft.is_block_device() {
            SFlag::S_IFBLK
        } else {
            SFlag::S_IFSOCK
        };
        let rdev = if ft.is_char_device() || ft.is_block_device() {
            meta.rdev()
        } else {
            0
        };
        mknod(dst, kind, Mode::from_bits_truncate(0o600), rdev)
            .map_err(|e| DriverError::sys("copy tree: mknod", dst.display(), e))?;
    }
    apply_metadata(src, dst, meta)?;
    if meta.nlink() > 1 {
        links.insert(key, dst.to_path_buf());
    }
    Ok(())
}

fn copy_file_data(src: &Path, dst: &Path) -> Result<()> {
    let mut from = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(src)
        .map_err(|e| DriverError::io("copy tree: open source", src, e))?;
    let mut to = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dst)
        .map_err(|e| DriverError::io("copy tree: create file", dst, e))?;
    // SAFETY: both descriptors are open for the duration of the call.
    let cloned = unsafe { ficlone(to.as_raw_fd(), from.as_raw_fd() as _) };
    if cloned.is_ok() {
        return Ok(());
    }
    // Not on a reflink filesystem, or across filesystems. std's copy uses copy_file_range
    // (which may still share extents) and falls back to read/write.
    io::copy(&mut from, &mut to).map_err(|e| DriverError::io("copy tree: copy data", dst, e))?;
    Ok(())
}

/// How a copy sets metadata: like `cp -a`, an xattr namespace the destination filesystem lacks
/// is left out, and an unprivileged copy keeps its own ownership.
const COPY: Policy = Policy {
    unsupported_xattr: Unsupported::Skip,
    not_root: NotRoot::Eperm,
};

/// Gives `dst` the owner, mode (none for a symlink), xattrs and times of `src`, whose metadata
/// is `meta`, in the order [`meta::apply`] keeps.
fn apply_metadata(src: &Path, dst: &Path, meta: &Metadata) -> Result<()> {
    let xattrs = meta::read_xattrs(src, |_| true).map_err(|e| match e.step {
        Step::ListXattrs => DriverError::io("copy tree: list xattrs", src, e.source),
        _ => DriverError::io("copy tree: get xattr", src, e.source),
    })?;
    let wanted = Meta {
        owner: Some(Owner {
            uid: meta.uid(),
            gid: meta.gid(),
        }),
        mode: (!meta.file_type().is_symlink()).then_some(meta.mode() & 0o7777),
        xattrs: &xattrs,
        times: Some(Times {
            atime: TimeSpec::new(meta.atime(), meta.atime_nsec()),
            mtime: TimeSpec::new(meta.mtime(), meta.mtime_nsec()),
        }),
    };
    meta::apply(dst, &wanted, COPY).map_err(|e| {
        let errno = || Errno::from_raw(e.source.raw_os_error().unwrap_or(libc::EIO));
        match e.step {
            Step::Chown => DriverError::sys("copy tree: chown", dst.display(), errno()),
            Step::SetTimes => DriverError::sys("copy tree: set times", dst.display(), errno()),
            Step::Chmod => DriverError::io("copy tree: chmod", dst, e.source),
            _ => DriverError::io("copy tree: set xattr", dst, e.source),
        }
    })?;
    Ok(())
}

/// Removes the tree at `root` like `rm -rf`, without following symlinks (a symlink `root` is
/// removed itself). Refuses, before deleting anything it can see, when a mount point is at or
/// below `root`. A missing `root` is Ok. Directories without owner rwx (image layers have 0555
/// ones) are made accessible first.
pub fn remove_tree(root: &Path) -> Result<()> {
    const OP: &str = "remove tree";
    let meta = match fs::symlink_metadata(root) {
        Ok(m) => m,
        Err(e) if not_found(&e) => return Ok(()),
        Err(e) => return Err(DriverError::io(OP, root, e)),
    };
    if !meta.is_dir() {
        return match fs::remove_file(root) {
            Err(e) if !not_found(&e) => Err(DriverError::io(OP, root, e)),
            _ => Ok(()),
        };
    }
    let root_dev = meta.dev();
    if is_mount_root(root, &meta, root_dev) {
        return Err(mount_point_error(root));
    }
    check_no_mounts_below(root)?;

    // (directory, its mode, whether its entries are already gone)
    let mut stack = vec![(root.to_path_buf(), meta.mode(), false)];
    while let Some((dir, mode, emptied)) = stack.pop() {
        if emptied {
            match fs::remove_dir(&dir) {
                Err(e) if !not_found(&e) => return Err(DriverError::io(OP, &dir, e)),
                _ => continue,
            }
        }
        if mode & 0o700 != 0o700 {
            match fs::set_permissions(&dir, fs::Permissions::from_mode((mode | 0o700) & 0o7777)) {
                Err(e) if !not_found(&e) => {
                    return Err(DriverError::io("remove tree: chmod", &dir, e))
                }
                _ => {}
            }
        }
        let entries = match fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if not_found(&e) => continue,
            Err(e) => return Err(DriverError::io(OP, &dir, e)),
        };
        stack.push((dir.clone(), mode, true));
        for entry in entries {
            let entry = entry.map_err(|e| DriverError::io(OP, &dir, e))?;
            let path = entry.path();
            let meta = match entry.metadata() {
                Ok(m) => m,
                Err(e) if not_found(&e) => continue,
                Err(e) => return Err(DriverError::io(OP, &path, e)),
            };
            if meta.is_dir() {
                if is_mount_root(&path, &meta, root_dev) {
                    return Err(mount_point_error(&path));
                }
                stack.push((path, meta.mode(), false));
            } else {
                match fs::remove_file(&path) {
                    Err(e) if !not_found(&e) => return Err(DriverError::io(OP, &path, e)),
                    _ => {}
                }
            }
        }
    }
    Ok(())
}

/// Fails if the mount table lists a mount point at or below `root`, so nothing is deleted when
/// e.g. a container's /proc is still mounted deep inside a layer. The walk checks again per
/// directory, for mounts made meanwhile.
fn check_no_mounts_below(root: &Path) -> Result<()> {
    let canonical = fs::canonicalize(root).map_err(|e| DriverError::io("remove tree", root, e))?;
    for m in super::mount::mountinfo()? {
        if m.target.starts_with(&canonical) {
            return Err(mount_point_error(&m.target));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::fcntl::{AtFlags, AT_FDCWD};
    use nix::sys::stat::{utimensat, UtimensatFlags};
    use std::os::unix::fs::symlink;
    use std::process::Command;

    fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
        meta::set_xattr(&cstring(path)?, &CString::new(name).unwrap(), value)
    }

    fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
        meta::get_xattr(&cstring(path).unwrap(), &CString::new(name).unwrap()).ok()
    }

    fn set_mtime(path: &Path, secs: i64, nsec: i64) {
        let t = TimeSpec::new(secs, nsec);
        utimensat(AT_FDCWD, path, &t, &t, UtimensatFlags::NoFollowSymlink).unwrap();
    }

    fn is_root() -> bool {
        nix::unistd::geteuid().is_root()
    }

    /// A tree with one of each kind of entry the copy must keep.
    fn sample_tree(src: &Path) {
        fs::create_dir_all(src.join("a/b")).unwrap();
        fs::write(src.join("a/file"), b"hello world").unwrap();
        fs::set_permissions(src.join("a/file"), fs::Permissions::from_mode(0o4751)).unwrap();
        fs::write(src.join("big"), vec![7u8; 300_000]).unwrap();
        fs::hard_link(src.join("a/file"), src.join("a/b/link")).unwrap();
        symlink("../file", src.join("a/b/sym")).unwrap();
        symlink("/nonexistent/target", src.join("dangling")).unwrap();
        nix::unistd::mkfifo(&src.join("fifo"), Mode::from_bits_truncate(0o640)).unwrap();
        set_xattr(&src.join("a/file"), "user.note", b"kept").unwrap();
        set_xattr(&src.join("a"), "user.dir", b"").unwrap();
        set_mtime(&src.join("a/b/sym"), 1_000_000, 0);
        set_mtime(&src.join("a/file"), 1_234_567_890, 123_456_789);
        fs::set_permissions(src.join("a/b"), fs::Permissions::from_mode(0o555)).unwrap();
        set_mtime(&src.join("a/b"), 1_500_000_000, 5);
        set_mtime(&src.join("a"), 1_600_000_000, 0);
        fs::set_permissions(src, fs::Permissions::from_mode(0o751)).unwrap();
        set_mtime(src, 1_700_000_000, 42);
    }

    fn same_meta(a: &Path, b: &Path) {
        let (ma, mb) = (
            fs::symlink_metadata(a).unwrap(),
            fs::symlink_metadata(b).unwrap(),
        );
        assert_eq!(ma.mode(), mb.mode(), "mode of {b:?}");
        assert_eq!((ma.uid(), ma.gid()), (mb.uid(), mb.gid()), "owner of {b:?}");
        assert_eq!(
            (ma.mtime(), ma.mtime_nsec()),
            (mb.mtime(), mb.mtime_nsec()),
            "mtime of {b:?}"
        );
    }

    #[test]
    fn copy_preserves_everything() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        fs::create_dir(&src).unwrap();
        fs::create_dir(&dst).unwrap();
        sample_tree(&src);
        if is_root() {
            nix::unistd::fchownat(
                AT_FDCWD,
                &src.join("big"),
                Some(1234.into()),
                Some(5678.into()),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .unwrap();
            nix::unistd::fchownat(
                AT_FDCWD,
                &src.join("dangling"),
                Some(99.into()),
                Some(98.into()),
                AtFlags::AT_SYMLINK_NOFOLLOW,
            )
            .unwrap();
            // overlayfs whiteout and a device node
            mknod(
                &src.join("wh"),
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o600),
                0,
            )
            .unwrap();
            mknod(
                &src.join("null"),
                SFlag::S_IFCHR,
                Mode::from_bits_truncate(0o666),
                nix::sys::stat::makedev(1, 3),
            )
            .unwrap();
            set_xattr(&src.join("a"), "trusted.overlay.opaque", b"y").unwrap();
        }

        copy_tree(&src, &dst).unwrap();

        assert_eq!(fs::read(dst.join("a/file")).unwrap(), b"hello world");
        assert_eq!(fs::read(dst.join("big")).unwrap(), vec![7u8; 300_000]);
        assert_eq!(fs::read(dst.join("a/b/link")).unwrap(), b"hello world");
        let f = fs::metadata(dst.join("a/file")).unwrap();
        assert_eq!(f.nlink(), 2);
        assert_eq!(f.ino(), fs::metadata(dst.join("a/b/link")).unwrap().ino());
        assert_eq!(f.mode() & 0o7777, 0o4751);
        assert_eq!(
            fs::read_link(dst.join("a/b/sym")).unwrap(),
            Path::new("../file")
        );
        assert_eq!(
            fs::read_link(dst.join("dangling")).unwrap(),
            Path::new("/nonexistent/target")
        );
        assert!(fs::symlink_metadata(dst.join("fifo"))
            .unwrap()
            .file_type()
            .is_fifo());
        assert_eq!(
            xattr(&dst.join("a/file"), "user.note").as_deref(),
            Some(&b"kept"[..])
        );
        assert_eq!(xattr(&dst.join("a"), "user.dir").as_deref(), Some(&b""[..]));
        for p in [
            "", "a", "a/b", "a/file", "a/b/sym", "big", "dangling", "fifo",
        ] {
            same_meta(&src.join(p), &dst.join(p));
        }
        if is_root() {
            let wh = fs::symlink_metadata(dst.join("wh")).unwrap();
            assert!(wh.file_type().is_char_device());
            assert_eq!(wh.rdev(), 0);
            assert_eq!(
                fs::symlink_metadata(dst.join("null")).unwrap().rdev(),
                nix::sys::stat::makedev(1, 3)
            );
            assert_eq!(
                xattr(&dst.join("a"), "trusted.overlay.opaque").as_deref(),
                Some(&b"y"[..])
            );
            for p in ["wh", "null"] {
                same_meta(&src.join(p), &dst.join(p));
            }
        }
    }

    #[test]
    fn copy_into_subdirectory_of_itself_terminates() {
        let tmp = tempfile::tempdir().unwrap();
        fs::write(tmp.path().join("f"), b"x").unwrap();
        let dst = tmp.path().join("copy");
        fs::create_dir(&dst).unwrap();
        copy_tree(tmp.path(), &dst).unwrap();
        assert_eq!(fs::read(dst.join("f")).unwrap(), b"x");
        assert!(!dst.join("copy").exists());
    }

    #[test]
    fn copy_refuses_existing_names() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, dst) = (tmp.path().join("src"), tmp.path().join("dst"));
        fs::create_dir(&src).unwrap();
        fs::create_dir(&dst).unwrap();
        fs::write(src.join("f"), b"new").unwrap();
        fs::write(dst.join("f"), b"old").unwrap();
        assert_eq!(
            copy_tree(&src, &dst).unwrap_err().errno(),
            Some(Errno::EEXIST)
        );
        assert!(copy_tree(&tmp.path().join("missing"), &dst).is_err());
    }

    #[test]
    fn deep_trees_do_not_overflow() {
        let tmp = tempfile::tempdir().unwrap();
        let src = tmp.path().join("src");
        let mut p = src.clone();
        for _ in 0..1500 {
            p.push("d");
        }
        fs::create_dir_all(&p).unwrap();
        fs::write(p.join("leaf"), b"deep").unwrap();
        let dst = tmp.path().join("dst");
        fs::create_dir(&dst).unwrap();
        copy_tree(&src, &dst).unwrap();
        let (_, inodes) = disk_usage(&dst).unwrap();
        assert_eq!(inodes, 1 + 1500 + 1);
        remove_tree(&src).unwrap();
        remove_tree(&dst).unwrap();
        assert!(!src.exists() && !dst.exists());
    }

    #[test]
    fn remove_handles_read_only_dirs_and_symlinks() {
        let tmp = tempfile::tempdir().unwrap();
        let outside = tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::write(outside.join("keep"), b"k").unwrap();
        let root = tmp.path().join("layer");
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::write(root.join("usr/bin/tool"), b"t").unwrap();
        symlink(&outside, root.join("usr/link-to-outside")).unwrap();
        fs::set_permissions(root.join("usr/bin"), fs::Permissions::from_mode(0o555)).unwrap();
        fs::set_permissions(root.join("usr"), fs::Permissions::from_mode(0o500)).unwrap();
        remove_tree(&root).unwrap();
        assert!(!root.exists());
        assert!(outside.join("keep").exists(), "followed a symlink");
        remove_tree(&root).unwrap(); // missing is fine

        // A symlink root is removed itself, not its target.
        let link = tmp.path().join("link");
        symlink(&outside, &link).unwrap();
        remove_tree(&link).unwrap();
        assert!(fs::symlink_metadata(&link).is_err());
        assert!(outside.join("keep").exists());
    }

    #[test]
    fn disk_usage_counts_hardlinks_once() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("r");
        fs::create_dir_all(root.join("sub")).unwrap();
        fs::write(root.join("f"), vec![1u8; 64 * 1024]).unwrap();
        let (before, inodes_before) = disk_usage(&root).unwrap();
        assert_eq!(inodes_before, 3);
        for i in 0..5 {
            fs::hard_link(root.join("f"), root.join(format!("sub/l{i}"))).unwrap();
        }
        symlink("f", root.join("s")).unwrap();
        let (after, inodes_after) = disk_usage(&root).unwrap();
        assert_eq!(inodes_after, 4);
        let blocks =
            |p: &str| Sectors(fs::symlink_metadata(root.join(p)).unwrap().blocks()).bytes();
        assert_eq!(after, before + blocks("s"));
        assert!(after >= Bytes::kib(64));
        let expected: Bytes = ["", "sub", "f", "s"].iter().map(|p| blocks(p)).sum();
        assert_eq!(after, expected);
        assert_eq!(disk_usage(&root.join("f")).unwrap().1, 1);
        assert!(disk_usage(&root.join("missing")).is_err());
    }

    /// Mounts a tmpfs (a different filesystem) and a bind mount of the same filesystem inside a
    /// tree; every walk must stop at both. Needs root; skipped otherwise.
    #[test]
    fn walks_stop_at_mount_points() {
        use nix::mount::{mount, umount2, MntFlags, MsFlags};
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().join("layer");
        let (tmpfs_dir, bind_dir, elsewhere) = (
            root.join("proc"),
            root.join("a/vol"),
            tmp.path().join("elsewhere"),
        );
        fs::create_dir_all(&tmpfs_dir).unwrap();
        fs::create_dir_all(&bind_dir).unwrap();
        fs::create_dir(&elsewhere).unwrap();
        fs::write(elsewhere.join("precious"), vec![1u8; 8192]).unwrap();
        fs::write(root.join("a/own"), b"mine").unwrap();
        if mount(
            Some("tmpfs"),
            &tmpfs_dir,
            Some("tmpfs"),
            MsFlags::empty(),
            Some("size=1m"),
        )
        .is_err()
        {
            eprintln!("skipping: cannot mount (not root?)");
            return;
        }
        struct Unmount(Vec<PathBuf>);
        impl Drop for Unmount {
            fn drop(&mut self) {
                for p in &self.0 {
                    let _ = umount2(p, MntFlags::MNT_DETACH);
                }
            }
        }
        let mut guard = Unmount(vec![tmpfs_dir.clone()]);
        fs::write(tmpfs_dir.join("inside"), b"x").unwrap();
        mount(
            Some(&elsewhere),
            &bind_dir,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .unwrap();
        guard.0.push(bind_dir.clone());

        // Usage: neither mount's contents nor its root are counted.
        let (_, inodes) = disk_usage(&root).unwrap();
        assert_eq!(inodes, 3, "root, a, a/own");

        // Copy: mount points become empty directories.
        let dst = tmp.path().join("copy");
        fs::create_dir(&dst).unwrap();
        copy_tree(&root, &dst).unwrap();
        assert_eq!(fs::read(dst.join("a/own")).unwrap(), b"mine");
        assert!(
            dst.join("proc").is_dir() && fs::read_dir(dst.join("proc")).unwrap().next().is_none()
        );
        assert!(dst.join("a/vol").is_dir() && !dst.join("a/vol/precious").exists());

        // Remove: refused up front, nothing deleted.
        let err = remove_tree(&root).unwrap_err();
        assert!(
            err.to_string().contains("remove tree: mount point inside"),
            "{err}"
        );
        assert_eq!(err.errno(), Some(Errno::EBUSY));
        assert!(root.join("a/own").exists());
        assert!(elsewhere.join("precious").exists());
        // Also when the mount is found only during the walk (statx / st_dev check).
        let err = remove_tree(&root.join("a")).unwrap_err();
        assert!(err.to_string().contains("mount point inside"), "{err}");
        assert!(elsewhere.join("precious").exists());
        // The root itself being a mount point is refused too.
        assert!(remove_tree(&tmpfs_dir).is_err());
        assert!(tmpfs_dir.join("inside").exists());

        drop(guard);
        remove_tree(&root).unwrap();
        assert!(!root.exists());
        assert!(elsewhere.join("precious").exists());
    }

    /// The copy matches what `cp -a` produces, as seen by `ls -lR --time-style=full-iso`.
    #[test]
    fn matches_cp_a() {
        let tmp = tempfile::tempdir().unwrap();
        let (src, ours, theirs) = (
            tmp.path().join("src"),
            tmp.path().join("ours"),
            tmp.path().join("theirs"),
        );
        fs::create_dir(&src).unwrap();
        fs::create_dir(&ours).unwrap();
        sample_tree(&src);
        copy_tree(&src, &ours).unwrap();
        let st = Command::new("cp")
            .arg("-a")
            .arg(&src)
            .arg(&theirs)
            .status()
            .unwrap();
        assert!(st.success());
        let listing = |p: &Path| {
            let out = Command::new("ls")
                .args(["-laR", "--time-style=full-iso"])
                .current_dir(p)
                .output()
                .unwrap();
            String::from_utf8(out.stdout)
                .unwrap()
                .lines()
                .filter(|l| !l.starts_with("total"))
                .map(|l| l.to_string())
                .collect::<Vec<_>>()
        };
        let (a, b) = (listing(&ours), listing(&theirs));
        // ".." differs (different parents); everything else must be identical.
        let strip = |v: Vec<String>| {
            v.into_iter()
                .filter(|l| !l.ends_with(" .."))
                .collect::<Vec<_>>()
        };
        assert_eq!(strip(a), strip(b));
    }
}
