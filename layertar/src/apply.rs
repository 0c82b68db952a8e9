//! Applying: a validated tar written onto a directory that already shows the parent layer,
//! with OCI whiteouts and opaque directories (which hide only lower layers' content, never this
//! tar's), hardlinks, special files, and every entry's owner, mode, xattrs and mtime.
//!
//! The tree is checked as it is written: no component of a path may be a symlink (from this
//! tar or a lower layer) or a non-directory, and nothing is created, chowned, chmodded or given
//! xattrs through a symlink. Directory metadata is set last, deepest first, so later entries
//! cannot disturb it.

use crate::entry::{
    classify, device_refused, entry_meta, self_and_ancestors, traversed_dir, HeaderMeta, Item, Kind,
};
use crate::error::{entry_err, read_err, truncated, Error, Result};
use crate::meta::{self, Meta, NotRoot, Owner, Policy, Times, Unsupported, Xattr};
use crate::tap::{tapped, TappedEntries};
use crate::COPY_BUF;
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::sys::time::TimeSpec;
use std::collections::{HashMap, HashSet};
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

/// How a tar is spooled and applied.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyOptions {
    /// Import char/block device nodes (`layer create --allow-devices`); refused by default.
    pub allow_devices: bool,
}

/// What applying did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub entries: u64,
    /// File data written.
    pub bytes: u64,
    /// Whiteouts and opaque directories applied.
    pub whiteouts: u64,
}

/// How often `progress` hears of the bytes written.
pub(crate) const PROGRESS_STEP: u64 = 1 << 20;

pub(crate) fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

/// The metadata of `p` without following a symlink, None if nothing is there.
pub(crate) fn lstat(p: &Path) -> Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(p) {
        Ok(m) => Ok(Some(m)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(Error::io("lstat", p, e)),
    }
}

/// How imported metadata is set: an xattr the layer's filesystem cannot hold fails the import
/// (the layer would not be what the tar says); unprivileged, files keep the importer's own
/// uid/gid (EINVAL too: an id this user namespace does not map).
pub(crate) const IMPORT: Policy = Policy {
    unsupported_xattr: Unsupported::Fail,
    not_root: NotRoot::EpermOrEinval,
};

/// What a directory gets once nothing more is written in it: mode, mtime, then xattrs (after
/// the mode, as for files, so an access ACL and the mode agree as the tar says).
type DirMeta = (u32, TimeSpec, Vec<Xattr>);

struct Applier<'a> {
    root: &'a Path,
    opts: &'a ApplyOptions,
    /// Paths this tar has written so far; whiteouts only hide what lower layers had.
    written: HashSet<PathBuf>,
    /// Ancestors of written paths.
    written_parents: HashSet<PathBuf>,
    /// Directory metadata applied at the end, so later entries cannot disturb it.
    dirs: HashMap<PathBuf, DirMeta>,
    stats: ApplyStats,
    reported: u64,
    chown_warned: bool,
}

impl Applier<'_> {
    /// Checks every component of `dir` (inclusive) under root: refuses symlinks and
    /// non-directories, creates missing ones if `create`. Returns false if one is missing.
    fn walk_dirs(&self, name: &str, dir: &Path, create: bool) -> Result<bool> {
        let mut cur = self.root.to_path_buf();
        let mut rel = PathBuf::new();
        for comp in dir.components() {
            cur.push(comp);
            rel.push(comp);
            match lstat(&cur)? {
                Some(m) if m.file_type().is_symlink() => {
                    return Err(entry_err(
                        name,
                        format!("writes through symlink {}", rel.display()),
                    ));
                }
                Some(m) if m.is_dir() => {}
                Some(_) => {
                    return Err(entry_err(
                        name,
                        format!("parent {} is not a directory", rel.display()),
                    ));
                }
                None if create => {
                    fs::create_dir(&cur).map_err(|e| Error::io("create directory", &cur, e))?;
                }
                None => return Ok(false),
            }
        }
        Ok(true)
    }

    /// Removes whatever is at `p` unless it is a directory and `keep_dir`. Returns true if a
    /// directory remains.
    fn clear(&self, p: &Path, keep_dir: bool) -> Result<bool> {
        match lstat(p)? {
            None => Ok(false),
            Some(m) if m.is_dir() => {
                if keep_dir {
                    return Ok(true);
                }
                fs::remove_dir_all(p).map_err(|e| Error::io("remove directory", p, e))?;
                Ok(false)
            }
            Some(_) => {
                fs::remove_file(p).map_err(|e| Error::io("remove", p, e))?;
                Ok(false)
            }
        }
    }

    /// Deletes `rel` from root except what this tar has written (OCI: whiteouts only apply to
    /// lower layers).
    fn prune(&self, rel: &Path) -> Result<()> {
        let p = self.root.join(rel);
        let Some(m) = lstat(&p)? else {
            return Ok(());
        };
        if m.is_dir() {
            if !self.written.contains(rel) && !self.written_parents.contains(rel) {
                return fs::remove_dir_all(&p).map_err(|e| Error::io("remove directory", &p, e));
            }
            let children = fs::read_dir(&p).map_err(|e| Error::io("read directory", &p, e))?;
            for child in children {
                let child = child.map_err(|e| Error::io("read directory", &p, e))?;
                self.prune(&rel.join(child.file_name()))?;
            }
            Ok(())
        } else if !self.written.contains(rel) {
            fs::remove_file(&p).map_err(|e| Error::io("remove", &p, e))
        } else {
            Ok(())
        }
    }

    fn mark_written(&mut self, rel: &Path) {
        for a in self_and_ancestors(rel).skip(1) {
            if !self.written_parents.insert(a.to_path_buf()) {
                break;
            }
        }
        self.written.insert(rel.to_path_buf());
    }

    /// Sets `meta` on `p` (see [`meta::apply`] for the order), warning once when, unprivileged,
    /// ownership cannot be kept (the content still can).
    fn set_meta(&mut self, p: &Path, meta: Meta<'_>) -> Result<()> {
        let applied = meta::apply(p, &meta, IMPORT)?;
        if applied.owner_dropped && !self.chown_warned {
            tracing::warn!(path = %p.display(), "not root: keeping own uid/gid for layer files");
            self.chown_warned = true;
        }
        Ok(())
    }

    fn chown(&mut self, p: &Path, owner: Owner) -> Result<()> {
        self.set_meta(
            p,
            Meta {
                owner: Some(owner),
                ..Meta::default()
            },
        )
    }

    /// Everything the entry's header gives, on a node just created (mode `None` for a symlink).
    fn set_entry_meta(&mut self, p: &Path, meta: &HeaderMeta, mode: Option<u32>) -> Result<()> {
        self.set_meta(
            p,
            Meta {
                owner: Some(meta.owner),
                mode,
                xattrs: &meta.xattrs,
                times: Some(Times::both(meta.mtime)),
            },
        )
    }

    fn add_bytes(&mut self, n: u64, progress: &mut dyn FnMut(u64)) {
        self.stats.bytes += n;
        if self.stats.bytes - self.reported >= PROGRESS_STEP {
            self.reported = self.stats.bytes;
            progress(self.stats.bytes);
        }
    }

    fn apply_entry<R: Read>(
        &mut self,
        entry: &mut tar::Entry<'_, R>,
        pax: Option<&[u8]>,
        item: Item,
        progress: &mut dyn FnMut(u64),
    ) -> Result<()> {
        let name = item.name.as_str();
        let rel = item.rel.as_path();
        let p = self.root.join(rel);
        match &item.kind {
            Kind::Skip => return Ok(()),
            Kind::Whiteout => {
                self.stats.whiteouts += 1;
                if self.walk_dirs(name, traversed_dir(&item), false)? {
                    self.prune(rel)?;
                }
                return Ok(());
            }
            Kind::Opaque => {
                self.stats.whiteouts += 1;
                if self.walk_dirs(name, rel, false)? {
                    let children =
                        fs::read_dir(&p).map_err(|e| Error::io("read directory", &p, e))?;
                    for child in children {
                        let child = child.map_err(|e| Error::io("read directory", &p, e))?;
                        self.prune(&rel.join(child.file_name()))?;
                    }
                }
                // Later entries of this tar in the directory are kept by `written`.
                return Ok(());
            }
            Kind::Char(..) | Kind::Block(..) if !self.opts.allow_devices => {
                return Err(device_refused(name, &item.kind)
                    .unwrap_or_else(|| entry_err(name, "device node refused")));
            }
            _ => {}
        }

        if let Kind::Hardlink(target) = &item.kind {
            self.link(name, rel, target)?;
            self.mark_written(rel);
            return Ok(());
        }

        let meta = entry_meta(entry, name, pax)?;
        if let Kind::Root = &item.kind {
            // Mode and mtime are set with the other directories at the end.
            self.chown(&p, meta.owner)?;
            self.dirs
                .insert(PathBuf::new(), (meta.mode, meta.mtime, meta.xattrs));
            return Ok(());
        }
        self.walk_dirs(name, traversed_dir(&item), true)?;
        match &item.kind {
            Kind::Dir => {
                if !self.clear(&p, true)? {
                    fs::create_dir(&p).map_err(|e| Error::io("create directory", &p, e))?;
                }
                self.chown(&p, meta.owner)?;
                self.dirs
                    .insert(rel.to_path_buf(), (meta.mode, meta.mtime, meta.xattrs));
            }
            Kind::File => {
                self.clear(&p, false)?;
                let mut f = fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .custom_flags(nix::libc::O_NOFOLLOW)
                    .open(&p)
                    .map_err(|e| Error::io("create file", &p, e))?;
                let want = entry.size();
                let mut got = 0u64;
                let mut buf = vec![0u8; COPY_BUF];
                loop {
                    let n = match entry.read(&mut buf) {
                        Ok(0) => break,
                        Ok(n) => n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        Err(e) => return Err(read_err(e)),
                    };
                    f.write_all(&buf[..n])
                        .map_err(|e| Error::io("write file", &p, e))?;
                    got += n as u64;
                    self.add_bytes(n as u64, progress);
                }
                if got != want {
                    return Err(truncated(name));
                }
                drop(f);
                // Created O_NOFOLLOW above under checked parents: not a symlink.
                self.set_entry_meta(&p, &meta, Some(meta.mode))?;
            }
            Kind::Symlink(target) => {
                self.clear(&p, false)?;
                std::os::unix::fs::symlink(target, &p)
                    .map_err(|e| Error::io("create symlink", &p, e))?;
                // Owner, xattrs and mtime of the link itself; a symlink has no mode.
                self.set_entry_meta(&p, &meta, None)?;
            }
            Kind::Fifo | Kind::Char(..) | Kind::Block(..) => {
                self.clear(&p, false)?;
                let perm = Mode::from_bits_truncate(0o600);
                let made = match item.kind {
                    Kind::Char(ma, mi) => {
                        mknod(&p, SFlag::S_IFCHR, perm, makedev(ma.into(), mi.into()))
                    }
                    Kind::Block(ma, mi) => {
                        mknod(&p, SFlag::S_IFBLK, perm, makedev(ma.into(), mi.into()))
                    }
                    _ => nix::unistd::mkfifo(&p, perm),
                };
                made.map_err(|e| Error::io("create special file", &p, e.into()))?;
                // Just created as a fifo/device under checked parents: not a symlink.
                self.set_entry_meta(&p, &meta, Some(meta.mode))?;
            }
            _ => {}
        }
        if item.kind != Kind::Dir {
            self.dirs.remove(rel);
        }
        self.mark_written(rel);
        Ok(())
    }

    fn link(&mut self, name: &str, rel: &Path, target: &Path) -> Result<()> {
        let missing = || {
            entry_err(
                name,
                format!("hardlink target {} does not exist", target.display()),
            )
        };
        if target == rel {
            return if lstat(&self.root.join(rel))?.is_some() {
                Ok(())
            } else {
                Err(missing())
            };
        }
        if target.starts_with(rel) {
            return Err(entry_err(name, "hardlink target lies inside the entry"));
        }
        if !self.walk_dirs(name, target.parent().unwrap_or(Path::new("")), false)? {
            return Err(missing());
        }
        let tp = self.root.join(target);
        match lstat(&tp)? {
            None => return Err(missing()),
            Some(m) if m.is_dir() => {
                return Err(entry_err(name, "hardlink target is a directory"));
            }
            Some(_) => {}
        }
        self.walk_dirs(name, rel.parent().unwrap_or(Path::new("")), true)?;
        let p = self.root.join(rel);
        self.clear(&p, false)?;
        // linkat without AT_SYMLINK_FOLLOW: a symlink target is linked, not followed.
        fs::hard_link(&tp, &p).map_err(|e| Error::io("create hardlink", &p, e))?;
        self.dirs.remove(rel);
        Ok(())
    }

    /// Directory modes and mtimes, deepest first, once nothing else will be written.
    fn finish_dirs(&mut self) -> Result<()> {
        let mut dirs: Vec<(PathBuf, DirMeta)> = self.dirs.drain().collect();
        dirs.sort_by(|a, b| {
            let da = a.0.components().count();
            let db = b.0.components().count();
            db.cmp(&da).then_with(|| a.0.cmp(&b.0))
        });
        for (rel, (mode, mtime, xattrs)) in dirs {
            // Re-check: a later entry may have replaced a component by a symlink.
            let intact = match self.walk_dirs("", &rel, false) {
                Ok(exists) => exists,
                Err(Error::Entry { .. }) => false,
                Err(e) => return Err(e),
            };
            if !intact {
                continue;
            }
            let p = self.root.join(&rel);
            // Checked just above: no symlink on the way. The root itself is the caller's and
            // may be a symlink: "/." reaches the directory it names (for the xattrs; chmod
            // follows anyway), while the mtime is set on `p` itself, as the owner was.
            let at = if rel.as_os_str().is_empty() {
                p.join(".")
            } else {
                p.clone()
            };
            self.set_meta(
                &at,
                Meta {
                    mode: Some(mode),
                    xattrs: &xattrs,
                    ..Meta::default()
                },
            )?;
            self.set_meta(
                &p,
                Meta {
                    times: Some(Times::both(mtime)),
                    ..Meta::default()
                },
            )?;
        }
        Ok(())
    }
}

/// Applies an uncompressed tar stream onto `root`, a directory that already shows the parent
/// layer's content. Honours OCI whiteouts and opaque directories, preserves ownership, modes,
/// mtimes, links and special files. `progress` gets the cumulative bytes written, about every
/// MiB and once at the end.
pub fn apply_tar(
    reader: impl Read,
    root: &Path,
    opts: &ApplyOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<ApplyStats> {
    apply_tar_inner(reader, root, opts, progress).map_err(Error::escaped)
}

fn apply_tar_inner(
    reader: impl Read,
    root: &Path,
    opts: &ApplyOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<ApplyStats> {
    // The root itself is the caller's (trusted) path and may be reached through a symlink.
    let root_meta = fs::metadata(root).map_err(|e| Error::io("stat", root, e))?;
    if !root_meta.is_dir() {
        return Err(Error::ApplyTarget {
            path: root.to_path_buf(),
        });
    }
    let mut applier = Applier {
        root,
        opts,
        written: HashSet::new(),
        written_parents: HashSet::new(),
        dirs: HashMap::new(),
        stats: ApplyStats::default(),
        reported: 0,
        chown_warned: false,
    };
    let (mut archive, st) = tapped(reader);
    let mut entries = TappedEntries::new(&mut archive, st)?;
    while let Some(next) = entries.next() {
        let (mut entry, pax) = next?;
        let item = classify(&entry)?;
        if entry.header().entry_type() != tar::EntryType::XGlobalHeader {
            applier.stats.entries += 1;
        }
        let want = entry.size();
        let is_file = item.kind == Kind::File;
        let name = item.name.clone();
        applier.apply_entry(&mut entry, pax.as_deref(), item, progress)?;
        if !is_file {
            // Data of non-files is ignored, but a stream cut inside it is still truncated.
            let got = io::copy(&mut entry, &mut io::sink()).map_err(read_err)?;
            if got != want {
                return Err(truncated(&name));
            }
        }
    }
    applier.finish_dirs()?;
    if applier.stats.bytes != applier.reported {
        progress(applier.stats.bytes);
    }
    Ok(applier.stats)
}
