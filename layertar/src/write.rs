//! Writing deterministic layer tars: the same tree gives the same bytes (and digest) on every
//! run and host. Entries in path-byte order, parents first, the root as "./"; hardlinks for
//! second and later paths of an inode; kept xattrs as PAX records (no PAX header when there are
//! none); mount points not crossed; a file that shrinks while archived is an error, not a short
//! entry.

use crate::apply::is_not_found;
use crate::entry::xattr_kept;
use crate::error::{Error, Result};
use crate::meta::{self, Xattr};
use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Every path below a directory with its metadata, keyed by relative path bytes.
pub(crate) type Tree = BTreeMap<Vec<u8>, fs::Metadata>;

/// The kept xattrs of `p` (see [`xattr_kept`]), in name order, not following a symlink.
pub(crate) fn kept_xattrs(p: &Path) -> Result<Vec<Xattr>> {
    Ok(meta::read_xattrs(p, xattr_kept)?)
}

pub(crate) fn join_rel(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(rel.len() + 1 + name.len());
    if !rel.is_empty() {
        v.extend_from_slice(rel);
        v.push(b'/');
    }
    v.extend_from_slice(name);
    v
}

pub(crate) fn rel_path(rel: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(rel))
}

/// Splits "a/b/c" into ("a/b", "c"); a top-level name has an empty parent.
pub(crate) fn split_last(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|b| *b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&[], rel),
    }
}

/// Everything below `dir` on the same filesystem, keyed by relative path bytes (so iteration is
/// sorted by path bytes, parents first). Sockets are skipped: tar cannot carry them.
pub(crate) fn walk_tree(dir: &Path) -> Result<Tree> {
    let root_meta = fs::metadata(dir).map_err(|e| Error::io("stat", dir, e))?;
    if !root_meta.is_dir() {
        return Err(Error::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let dev = root_meta.dev();
    let mut tree = Tree::new();
    let mut stack: Vec<(PathBuf, Vec<u8>)> = vec![(dir.to_path_buf(), Vec::new())];
    while let Some((abs, rel)) = stack.pop() {
        let rd = fs::read_dir(&abs).map_err(|e| Error::io("read directory", &abs, e))?;
        for child in rd {
            let child = child.map_err(|e| Error::io("read directory", &abs, e))?;
            let cabs = child.path();
            let meta = match fs::symlink_metadata(&cabs) {
                Ok(m) => m,
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(Error::io("lstat", &cabs, e)),
            };
            if meta.dev() != dev {
                tracing::debug!(path = %cabs.display(), "skipping mount point");
                continue;
            }
            if meta.file_type().is_socket() {
                tracing::debug!(path = %cabs.display(), "skipping socket");
                continue;
            }
            let crel = join_rel(&rel, child.file_name().as_bytes());
            if meta.is_dir() {
                stack.push((cabs, crel.clone()));
            }
            tree.insert(crel, meta);
        }
    }
    Ok(tree)
}

/// Reads exactly `remaining` bytes or fails: a file that shrank while being archived must not
/// produce a tar whose data is shorter than its header says.
struct ExactReader {
    file: io::Take<fs::File>,
    remaining: u64,
}

impl Read for ExactReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.remaining == 0 {
            return Ok(0);
        }
        let n = self.file.read(buf)?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "file shrank while being archived",
            ));
        }
        self.remaining -= n as u64;
        Ok(n)
    }
}

struct TarWriter<W: Write> {
    builder: tar::Builder<W>,
    entries: u64,
}

impl<W: Write> TarWriter<W> {
    fn new(out: W) -> Self {
        TarWriter {
            builder: tar::Builder::new(out),
            entries: 0,
        }
    }

    fn header(meta: &fs::Metadata, kind: tar::EntryType) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(meta.mode() & 0o7777);
        h.set_uid(meta.uid().into());
        h.set_gid(meta.gid().into());
        h.set_mtime(u64::try_from(meta.mtime()).unwrap_or(0));
        h.set_size(0);
        h
    }

    /// Writes one node of `base`; `link_to` makes it a hardlink entry.
    fn node(
        &mut self,
        base: &Path,
        rel: &[u8],
        meta: &fs::Metadata,
        link_to: Option<&[u8]>,
    ) -> Result<()> {
        let abs = base.join(rel_path(rel));
        let path = if rel.is_empty() {
            Path::new("./")
        } else {
            rel_path(rel)
        };
        let werr = |e| Error::io("write tar entry for", &abs, e);
        let ft = meta.file_type();
        // A hardlink shares the first path's inode, whose entry carries the xattrs.
        if link_to.is_none() {
            self.xattrs(&abs)?;
        }
        if let Some(target) = link_to {
            let mut h = Self::header(meta, tar::EntryType::Link);
            self.builder
                .append_link(&mut h, path, rel_path(target))
                .map_err(werr)?;
        } else if ft.is_dir() {
            let mut h = Self::header(meta, tar::EntryType::Directory);
            self.builder
                .append_data(&mut h, path, io::empty())
                .map_err(werr)?;
        } else if ft.is_symlink() {
            let target = fs::read_link(&abs).map_err(|e| Error::io("readlink", &abs, e))?;
            let bytes = target.as_os_str().as_bytes();
            let mut h = Self::header(meta, tar::EntryType::Symlink);
            // Literal when it fits, so the target is kept byte for byte.
            if bytes.len() <= 100 && h.set_link_name_literal(bytes).is_ok() {
                self.builder
                    .append_data(&mut h, path, io::empty())
                    .map_err(werr)?;
            } else {
                self.builder
                    .append_link(&mut h, path, &target)
                    .map_err(werr)?;
            }
        } else if ft.is_file() {
            let mut h = Self::header(meta, tar::EntryType::Regular);
            let size = meta.len();
            h.set_size(size);
            let file = fs::OpenOptions::new()
                .read(true)
                .custom_flags(nix::libc::O_NOFOLLOW)
                .open(&abs)
                .map_err(|e| Error::io("open", &abs, e))?;
            let data = ExactReader {
                file: file.take(size),
                remaining: size,
            };
            self.builder.append_data(&mut h, path, data).map_err(werr)?;
        } else if ft.is_fifo() || ft.is_char_device() || ft.is_block_device() {
            let kind = if ft.is_fifo() {
                tar::EntryType::Fifo
            } else if ft.is_char_device() {
                tar::EntryType::Char
            } else {
                tar::EntryType::Block
            };
            let mut h = Self::header(meta, kind);
            if !ft.is_fifo() {
                let rdev = meta.rdev();
                let major = u32::try_from(nix::sys::stat::major(rdev));
                let minor = u32::try_from(nix::sys::stat::minor(rdev));
                let (Ok(major), Ok(minor)) = (major, minor) else {
                    return Err(Error::DeviceNumber { path: abs });
                };
                h.set_device_major(major).map_err(werr)?;
                h.set_device_minor(minor).map_err(werr)?;
            }
            self.builder
                .append_data(&mut h, path, io::empty())
                .map_err(werr)?;
        } else {
            // Sockets are filtered by walk_tree; nothing else exists.
            return Ok(());
        }
        self.entries += 1;
        Ok(())
    }

    /// The kept xattrs of `abs` as one PAX header (none when it has none, so a tree without
    /// xattrs gives the same bytes as before xattrs were carried).
    fn xattrs(&mut self, abs: &Path) -> Result<()> {
        let xattrs = kept_xattrs(abs)?;
        if xattrs.is_empty() {
            return Ok(());
        }
        let mut records: Vec<(String, &[u8])> = Vec::with_capacity(xattrs.len());
        for (name, value) in &xattrs {
            let Ok(name) = std::str::from_utf8(name.as_bytes()) else {
                return Err(Error::XattrName {
                    path: abs.to_path_buf(),
                    name: String::from_utf8_lossy(name.as_bytes()).into_owned(),
                });
            };
            records.push((format!("SCHILY.xattr.{name}"), value));
        }
        self.builder
            .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
            .map_err(|e| Error::io("write tar entry for", abs, e))
    }

    fn whiteout(&mut self, base: &Path, rel: &[u8]) -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_mode(0);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(0);
        h.set_size(0);
        self.builder
            .append_data(&mut h, rel_path(rel), io::empty())
            .map_err(|e| Error::io("write tar entry for", base.join(rel_path(rel)), e))?;
        self.entries += 1;
        Ok(())
    }

    fn finish(self, base: &Path) -> Result<u64> {
        let mut out = self
            .builder
            .into_inner()
            .map_err(|e| Error::io("finish tar of", base, e))?;
        out.flush()
            .map_err(|e| Error::io("finish tar of", base, e))?;
        Ok(self.entries)
    }
}

pub(crate) enum Emit {
    Node,
    Whiteout,
}

/// Writes the chosen entries of `tree` in path-byte order. Second and later emitted paths of an
/// inode become hardlinks; so does an emitted path whose inode also has an unchanged path
/// (which the apply target already holds).
pub(crate) fn emit_tar(
    base: &Path,
    tree: &Tree,
    emit: &BTreeMap<Vec<u8>, Emit>,
    unchanged_links: &HashMap<u64, Vec<u8>>,
    out: impl Write,
) -> Result<u64> {
    let mut w = TarWriter::new(out);
    let mut first_path: HashMap<u64, &[u8]> = HashMap::new();
    for (rel, what) in emit {
        match what {
            Emit::Whiteout => w.whiteout(base, rel)?,
            Emit::Node => {
                let Some(meta) = tree.get(rel) else { continue };
                let mut link_to: Option<&[u8]> = None;
                if !meta.is_dir() && meta.nlink() > 1 {
                    if let Some(t) = unchanged_links.get(&meta.ino()) {
                        link_to = Some(t);
                    } else if let Some(t) = first_path.get(&meta.ino()) {
                        link_to = Some(t);
                    } else {
                        first_path.insert(meta.ino(), rel);
                    }
                }
                w.node(base, rel, meta, link_to)?;
            }
        }
    }
    w.finish(base)
}

/// Writes a deterministic tar of directory `dir` (the root itself first, as "./"): entries sorted by
/// path bytes, relative paths without "./", hardlinks for second and later paths of an inode.
/// Does not cross mount points. Returns the number of entries.
pub fn tar_dir(dir: &Path, out: impl Write) -> Result<u64> {
    tar_dir_inner(dir, out).map_err(Error::escaped)
}

pub(crate) fn tar_dir_inner(dir: &Path, out: impl Write) -> Result<u64> {
    let mut tree = walk_tree(dir)?;
    // The root's own owner and mode are part of the layer ("./", first since "" sorts first).
    tree.insert(
        Vec::new(),
        fs::metadata(dir).map_err(|e| Error::io("stat", dir, e))?,
    );
    let emit: BTreeMap<Vec<u8>, Emit> = tree.keys().map(|k| (k.clone(), Emit::Node)).collect();
    emit_tar(dir, &tree, &emit, &HashMap::new(), out)
}
