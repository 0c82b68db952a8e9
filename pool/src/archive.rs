//! Layer tars: spooling with digest and validation, applying with OCI whiteouts, and writing
//! deterministic tars of a directory or of the difference between two directories.
//!
//! Everything here treats tar input as hostile: paths are normalised and checked before use, and
//! nothing is ever created, chowned, chmodded or given xattrs through a symlink.
//!
//! Rules that make one tar give the same content on every driver:
//! - Device nodes (char and block) are refused by `spool_tar` unless
//!   [`ApplyOptions::allow_devices`] (`layer create --allow-devices`): an image has no business
//!   shipping `/dev/sda`. FIFOs are allowed. Setuid/setgid bits are kept, as moby and containerd do.
//! - A char device 0:0 is overlayfs's on-disk whiteout, and some tools put it in tars: it is read
//!   as a whiteout of its own path on every driver, whatever `allow_devices` says, never as a node.
//! - Extended attributes travel as PAX `SCHILY.xattr.NAME` records, in both directions, for the
//!   names [`xattr_kept`] accepts: `user.*`, `security.capability` (file capabilities) and the
//!   POSIX ACLs. Others (`trusted.*` would steer overlayfs, `security.selinux` is host policy)
//!   are skipped on import and never exported, so a tar of a directory does not depend on the
//!   host's labels. Import sets them after chown, which clears `security.capability`.
//! - Errors never carry raw bytes of the tar: entry names, link targets and tar-crate messages are
//!   escaped, so every error is one line without control characters.

use crate::error::{PoolError, Result};
use crate::text::escape_controls;
use flate2::read::MultiGzDecoder;
use nix::sys::stat::{makedev, mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{CString, OsStr};
use std::fs;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Digest form used everywhere: "sha256:<64 lowercase hex>".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digested {
    pub digest: String,
    pub entries: u64,
    /// Uncompressed tar length.
    pub bytes: u64,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct ApplyOptions {
    /// Import char/block device nodes (`layer create --allow-devices`); refused by default.
    pub allow_devices: bool,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ApplyStats {
    pub entries: u64,
    pub bytes: u64,
    pub whiteouts: u64,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiffStats {
    pub added: u64,
    pub modified: u64,
    pub deleted: u64,
}

const WH_PREFIX: &[u8] = b".wh.";
const WH_META_PREFIX: &[u8] = b".wh..wh.";
const WH_OPAQUE: &[u8] = b".wh..wh..opq";
const PAX_XATTR: &[u8] = b"SCHILY.xattr.";
/// Linux limits (XATTR_NAME_MAX, XATTR_SIZE_MAX): larger ones cannot be set anywhere.
const XATTR_NAME_MAX: usize = 255;
const XATTR_SIZE_MAX: usize = 64 * 1024;
const PROGRESS_STEP: u64 = 1 << 20;
/// Bytes allowed after the end-of-archive marker (writers pad to their record size, 10 KiB for
/// GNU tar's default; large blocking factors reach a few hundred KiB).
const MAX_TRAILER: u64 = 1 << 20;
const COPY_BUF: usize = 128 * 1024;

// ---------------------------------------------------------------------------------------------
// Entry classification (shared by spool_tar and apply_tar)
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, PartialEq, Eq)]
enum Kind {
    Dir,
    File,
    Symlink(PathBuf),
    /// Normalised path of the link target inside the layer.
    Hardlink(PathBuf),
    Fifo,
    Char(u32, u32),
    Block(u32, u32),
    /// `rel` is the path to delete.
    Whiteout,
    /// `rel` is the opaque directory (empty: the layer root).
    Opaque,
    /// The layer root's own metadata ("./"): owner, mode and mtime of the root directory.
    Root,
    /// Nothing to do: aufs whiteout metadata.
    Skip,
}

#[derive(Debug)]
struct Item {
    /// The entry path as written in the tar, for error messages.
    name: String,
    rel: PathBuf,
    kind: Kind,
}

/// The entry name is shown with `{:?}` by the error (escaped there); the reason may quote paths
/// from the tar, so it is escaped here.
fn entry_err(entry: &str, reason: impl Into<String>) -> PoolError {
    PoolError::TarEntry {
        entry: entry.to_string(),
        reason: escape_controls(&reason.into()),
    }
}

/// The tar crate's messages quote header fields (the entry path among them): escaped.
fn read_err(source: io::Error) -> PoolError {
    let msg = source.to_string();
    let escaped = escape_controls(&msg);
    if escaped == msg {
        return PoolError::TarRead { source };
    }
    PoolError::TarRead {
        source: io::Error::new(source.kind(), escaped),
    }
}

/// An I/O error whose path came from the tar may hold control characters: escape it for
/// display (the OS error itself is kept).
fn clean_err(e: PoolError) -> PoolError {
    match e {
        PoolError::Io { op, path, source } => {
            let shown = path.to_string_lossy();
            let escaped = escape_controls(&shown);
            let path = if escaped == shown {
                path
            } else {
                PathBuf::from(escaped)
            };
            PoolError::Io { op, path, source }
        }
        other => other,
    }
}

fn truncated(name: &str) -> PoolError {
    read_err(io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("tar stream ends inside the data of entry {name:?}"),
    ))
}

/// Turns a tar path into a relative path with only normal components. An empty result means
/// the layer root ("." or "./").
fn normalize(raw: &[u8]) -> std::result::Result<PathBuf, &'static str> {
    if raw.is_empty() {
        return Err("empty path");
    }
    if raw.contains(&0) {
        return Err("path contains NUL");
    }
    if raw[0] == b'/' {
        return Err("absolute path");
    }
    let mut out = PathBuf::new();
    for comp in raw.split(|b| *b == b'/') {
        match comp {
            b"" | b"." => {}
            b".." => return Err("path contains `..`"),
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    Ok(out)
}

fn classify<R: Read>(entry: &tar::Entry<'_, R>) -> Result<Item> {
    let header = entry.header();
    let raw = entry.path_bytes();
    let name = String::from_utf8_lossy(&raw).into_owned();
    let etype = header.entry_type();
    if etype == tar::EntryType::XGlobalHeader {
        return Ok(Item {
            name,
            rel: PathBuf::new(),
            kind: Kind::Skip,
        });
    }
    let rel = normalize(&raw).map_err(|r| entry_err(&name, r))?;
    // Pre-POSIX tars mark directories only by a trailing slash.
    let is_dir = etype == tar::EntryType::Directory
        || (etype == tar::EntryType::Regular && raw.ends_with(b"/"));

    let Some(file_name) = rel.file_name().map(|n| n.as_bytes().to_vec()) else {
        if is_dir {
            return Ok(Item {
                name,
                rel,
                kind: Kind::Root,
            });
        }
        return Err(entry_err(&name, "entry names the layer root"));
    };

    if file_name.starts_with(WH_PREFIX) {
        let dir = rel.parent().unwrap_or(Path::new("")).to_path_buf();
        if file_name == WH_OPAQUE {
            return Ok(Item {
                name,
                rel: dir,
                kind: Kind::Opaque,
            });
        }
        if file_name.starts_with(WH_META_PREFIX) {
            // aufs bookkeeping (.wh..wh.plnk, .wh..wh.aufs): meaningless here.
            tracing::debug!(entry = %name, "ignoring aufs whiteout metadata");
            return Ok(Item {
                name,
                rel,
                kind: Kind::Skip,
            });
        }
        let target = &file_name[WH_PREFIX.len()..];
        if target.is_empty() || target == b"." || target == b".." {
            return Err(entry_err(&name, "invalid whiteout name"));
        }
        return Ok(Item {
            name,
            rel: dir.join(OsStr::from_bytes(target)),
            kind: Kind::Whiteout,
        });
    }

    let kind = match etype {
        _ if is_dir => Kind::Dir,
        tar::EntryType::Regular | tar::EntryType::Continuous => Kind::File,
        tar::EntryType::Symlink => {
            let target = entry.link_name_bytes().unwrap_or_default();
            if target.is_empty() {
                return Err(entry_err(&name, "symlink without target"));
            }
            if target.contains(&0) {
                return Err(entry_err(&name, "symlink target contains NUL"));
            }
            Kind::Symlink(PathBuf::from(OsStr::from_bytes(&target)))
        }
        tar::EntryType::Link => {
            let target = entry.link_name_bytes().unwrap_or_default();
            let target = normalize(&target)
                .map_err(|r| entry_err(&name, format!("hardlink target: {r}")))?;
            if target.as_os_str().is_empty() {
                return Err(entry_err(&name, "hardlink to the layer root"));
            }
            Kind::Hardlink(target)
        }
        tar::EntryType::Fifo => Kind::Fifo,
        tar::EntryType::Char | tar::EntryType::Block => {
            let bad = |_| entry_err(&name, "bad device number field");
            let major = header.device_major().map_err(bad)?.unwrap_or(0);
            let minor = header.device_minor().map_err(bad)?.unwrap_or(0);
            if etype == tar::EntryType::Char && major == 0 && minor == 0 {
                // overlayfs's whiteout form: the same meaning on every driver.
                return Ok(Item {
                    name,
                    rel,
                    kind: Kind::Whiteout,
                });
            }
            if etype == tar::EntryType::Char {
                Kind::Char(major, minor)
            } else {
                Kind::Block(major, minor)
            }
        }
        _ => return Err(entry_err(&name, "unsupported entry type")),
    };
    Ok(Item { name, rel, kind })
}

/// Non-empty ancestors of `p`, including `p` itself.
fn self_and_ancestors(p: &Path) -> impl Iterator<Item = &Path> {
    p.ancestors().filter(|a| !a.as_os_str().is_empty())
}

/// The directory whose chain of components an item needs to traverse.
fn traversed_dir(item: &Item) -> &Path {
    match item.kind {
        Kind::Opaque => &item.rel,
        _ => item.rel.parent().unwrap_or(Path::new("")),
    }
}

/// The xattr names a layer tar carries (see the module doc): what an image needs to run as
/// built, and nothing that is the host's policy or another subsystem's bookkeeping.
pub fn xattr_kept(name: &[u8]) -> bool {
    name.starts_with(b"user.")
        || name == b"security.capability"
        || name == b"system.posix_acl_access"
        || name == b"system.posix_acl_default"
}

/// Why the kernel would refuse xattr `name` on an entry of `kind` (it would fail the import
/// after the layer exists): said at spool time instead. A hardlink entry's records are ignored
/// (containerd's writer leaves the file's there; the inode has those of its first entry), as
/// are a whiteout's.
fn xattr_misfit(kind: &Kind, name: &[u8]) -> Option<&'static str> {
    let file = matches!(kind, Kind::File);
    let dir = matches!(kind, Kind::Dir | Kind::Root);
    let node = !matches!(
        kind,
        Kind::Hardlink(_) | Kind::Whiteout | Kind::Opaque | Kind::Skip
    );
    if !node {
        return None;
    }
    if name.starts_with(b"user.") && !file && !dir {
        return Some("user.* xattrs exist only on regular files and directories");
    }
    if name == b"security.capability" && !file {
        return Some("security.capability exists only on regular files");
    }
    if name == b"system.posix_acl_default" && !dir {
        return Some("a default ACL exists only on directories");
    }
    if name == b"system.posix_acl_access" && matches!(kind, Kind::Symlink(_)) {
        return Some("a symlink has no ACL");
    }
    None
}

/// One extended attribute: name (no NUL) and raw value bytes.
type Xattr = (CString, Vec<u8>);

/// Bytes of extension headers (PAX, GNU long names) allowed before one entry: real ones are a
/// few KiB; this bounds what a decompression bomb can make the tar reader hold in memory.
const MAX_EXT_HEADERS: usize = 16 << 20;

/// What the tar reader consumed while looking for the next entry.
#[derive(Default)]
struct TapState {
    armed: bool,
    /// Stream offset of `buf[0]`.
    start: u64,
    /// Stream offset read so far.
    pos: u64,
    buf: Vec<u8>,
    /// Stream offset where the previous entry's data (padded) ends.
    prev_end: u64,
}

/// Shared by the tap (which records) and the entry loop (which arms it and reads the record).
type SharedTap = std::rc::Rc<std::cell::RefCell<TapState>>;

/// Sits under the tar reader and records the raw headers before each entry: the tar crate
/// splits PAX records at newlines, which breaks binary xattr values (a capability or an ACL
/// holding a 0x0a byte), so the records are parsed here by their length, as POSIX says.
struct Tap<R> {
    inner: R,
    st: SharedTap,
}

impl<R: Read> Read for Tap<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        let mut st = self.st.borrow_mut();
        if st.armed {
            if st.buf.len() + n > MAX_EXT_HEADERS {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "extended headers of one entry exceed {} MiB",
                        MAX_EXT_HEADERS >> 20
                    ),
                ));
            }
            st.buf.extend_from_slice(&buf[..n]);
        }
        st.pos += n as u64;
        Ok(n)
    }
}

/// Entries of a tar read through a [`Tap`], each with its raw PAX data (if any).
struct TappedEntries<'a, R: Read> {
    entries: tar::Entries<'a, Tap<R>>,
    st: SharedTap,
}

fn tapped<R: Read>(reader: R) -> (tar::Archive<Tap<R>>, SharedTap) {
    let st = std::rc::Rc::new(std::cell::RefCell::new(TapState::default()));
    let tap = Tap {
        inner: reader,
        st: st.clone(),
    };
    (tar::Archive::new(tap), st)
}

impl<'a, R: Read> TappedEntries<'a, R> {
    fn new(archive: &'a mut tar::Archive<Tap<R>>, st: SharedTap) -> Result<Self> {
        let entries = archive.entries().map_err(read_err)?;
        Ok(TappedEntries { entries, st })
    }

    /// The next entry and the data of the PAX header before it. Must be called only after the
    /// previous entry's data was read to its end.
    #[allow(clippy::type_complexity)]
    fn next(&mut self) -> Option<Result<(tar::Entry<'a, Tap<R>>, Option<Vec<u8>>)>> {
        {
            let mut st = self.st.borrow_mut();
            st.buf.clear();
            st.start = st.pos;
            st.armed = true;
        }
        let next = self.entries.next();
        self.st.borrow_mut().armed = false;
        let entry = match next? {
            Ok(e) => e,
            Err(e) => return Some(Err(read_err(e))),
        };
        let mut st = self.st.borrow_mut();
        let pax = pax_before(&st, entry.raw_header_position());
        st.prev_end = entry
            .raw_file_position()
            .saturating_add(entry.size().div_ceil(512).saturating_mul(512));
        Some(pax.map(|p| (entry, p)))
    }
}

/// Finds the PAX header among the extension headers between the previous entry and the header
/// at `header_pos`, all of which the tap recorded.
fn pax_before(st: &TapState, header_pos: u64) -> Result<Option<Vec<u8>>> {
    let bad = || {
        read_err(io::Error::new(
            io::ErrorKind::InvalidData,
            "extension headers do not line up",
        ))
    };
    let mut off = st.prev_end;
    if off < st.start || header_pos < off {
        return Err(bad());
    }
    let mut pax = None;
    while off < header_pos {
        let i = usize::try_from(off - st.start).map_err(|_| bad())?;
        let block = st.buf.get(i..i + 512).ok_or_else(bad)?;
        let mut h = tar::Header::new_old();
        h.as_mut_bytes().copy_from_slice(block);
        let size = h.entry_size().map_err(|_| bad())?;
        let data_len = usize::try_from(size).map_err(|_| bad())?;
        if h.entry_type() == tar::EntryType::XHeader {
            let end = (i + 512).checked_add(data_len).ok_or_else(bad)?;
            pax = Some(st.buf.get(i + 512..end).ok_or_else(bad)?.to_vec());
        }
        off = off
            .saturating_add(512)
            .saturating_add(size.div_ceil(512).saturating_mul(512));
    }
    if off != header_pos {
        return Err(bad());
    }
    Ok(pax)
}

/// One PAX record: key and value bytes.
type PaxRecord<'a> = (&'a [u8], &'a [u8]);

/// PAX records ("LEN KEY=VALUE\n"), split by their length so values may hold any byte.
fn pax_records(data: &[u8]) -> std::result::Result<Vec<PaxRecord<'_>>, &'static str> {
    let mut out = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let sp = rest
            .iter()
            .position(|b| *b == b' ')
            .ok_or("malformed PAX record")?;
        let len: usize = std::str::from_utf8(&rest[..sp])
            .ok()
            .and_then(|l| l.parse().ok())
            .ok_or("malformed PAX record length")?;
        if len <= sp + 1 || len > rest.len() || rest[len - 1] != b'\n' {
            return Err("malformed PAX record");
        }
        let kv = &rest[sp + 1..len - 1];
        let eq = kv
            .iter()
            .position(|b| *b == b'=')
            .ok_or("malformed PAX record")?;
        out.push((&kv[..eq], &kv[eq + 1..]));
        rest = &rest[len..];
    }
    Ok(out)
}

/// The `SCHILY.xattr.*` records of an entry's PAX data that [`xattr_kept`] keeps, in name
/// order; a later record of the same name wins, as with any PAX key. Malformed ones are refused.
fn entry_xattrs(pax: Option<&[u8]>, name: &str) -> Result<Vec<Xattr>> {
    let Some(pax) = pax else {
        return Ok(Vec::new());
    };
    let records = pax_records(pax).map_err(|r| entry_err(name, r))?;
    let mut found: BTreeMap<Vec<u8>, Vec<u8>> = BTreeMap::new();
    for (key, value) in records {
        let Some(xname) = key.strip_prefix(PAX_XATTR) else {
            continue;
        };
        if !xattr_kept(xname) {
            tracing::debug!(entry = %escape_controls(name), xattr = %escape_controls(&String::from_utf8_lossy(xname)), "skipping xattr");
            continue;
        }
        if xname.len() > XATTR_NAME_MAX || xname.contains(&0) {
            return Err(entry_err(name, "bad xattr name"));
        }
        if value.len() > XATTR_SIZE_MAX {
            return Err(entry_err(
                name,
                format!(
                    "xattr {} larger than {XATTR_SIZE_MAX} bytes",
                    String::from_utf8_lossy(xname)
                ),
            ));
        }
        found.insert(xname.to_vec(), value.to_vec());
    }
    Ok(found
        .into_iter()
        .filter_map(|(k, v)| CString::new(k).ok().map(|k| (k, v)))
        .collect())
}

fn path_cstring(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| {
        PoolError::io(
            "xattr on",
            p,
            io::Error::new(io::ErrorKind::InvalidInput, "path contains NUL"),
        )
    })
}

/// lsetxattr: never follows a symlink.
fn set_xattrs(p: &Path, xattrs: &[Xattr]) -> Result<()> {
    if xattrs.is_empty() {
        return Ok(());
    }
    let cp = path_cstring(p)?;
    for (name, value) in xattrs {
        // SAFETY: both strings are NUL-terminated; `value` is valid for its length.
        let rc = unsafe {
            nix::libc::lsetxattr(
                cp.as_ptr(),
                name.as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                0,
            )
        };
        if rc != 0 {
            let e = io::Error::last_os_error();
            let why = if e.raw_os_error() == Some(nix::libc::ENOTSUP) {
                "the layer's filesystem does not support this xattr".to_string()
            } else {
                e.to_string()
            };
            return Err(PoolError::io(
                "set xattr of",
                p,
                io::Error::new(
                    e.kind(),
                    format!("{}: {why}", String::from_utf8_lossy(name.as_bytes())),
                ),
            ));
        }
    }
    Ok(())
}

/// The kept xattrs of `p` (not following a symlink), in name order. A filesystem without
/// xattr support has none.
fn read_xattrs(p: &Path) -> Result<Vec<Xattr>> {
    use blkdrv_drivers::sys::tree::{get_xattr, list_xattrs};
    let cp = path_cstring(p)?;
    let mut names = match list_xattrs(&cp) {
        Ok(l) => l,
        Err(e) if e.raw_os_error() == Some(nix::libc::ENOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(PoolError::io("list xattrs of", p, e)),
    };
    names.retain(|n| xattr_kept(n.as_bytes()));
    names.sort_unstable();
    let mut out = Vec::with_capacity(names.len());
    for name in names {
        match get_xattr(&cp, &name) {
            Ok(v) => out.push((name, v)),
            // Removed since it was listed.
            Err(e) if e.raw_os_error() == Some(nix::libc::ENODATA) => {}
            Err(e) => return Err(PoolError::io("get xattr of", p, e)),
        }
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// spool_tar
// ---------------------------------------------------------------------------------------------

/// Copies everything read into the spool file and the hash.
struct Tee<'a, R> {
    inner: R,
    out: BufWriter<&'a fs::File>,
    hasher: Sha256,
    bytes: u64,
    write_error: Option<io::Error>,
}

impl<R: Read> Read for Tee<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Err(e) = self.out.write_all(&buf[..n]) {
            let msg = e.to_string();
            self.write_error = Some(e);
            return Err(io::Error::other(format!("writing spool file: {msg}")));
        }
        self.hasher.update(&buf[..n]);
        self.bytes += n as u64;
        Ok(n)
    }
}

/// Returns a reader of the uncompressed stream, detecting gzip by its magic.
fn decompressed<'a>(mut reader: impl Read + 'a) -> Result<Box<dyn Read + 'a>> {
    let mut head = [0u8; 2];
    let mut got = 0;
    while got < head.len() {
        match reader.read(&mut head[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(read_err(e)),
        }
    }
    let chained = io::Cursor::new(head[..got].to_vec()).chain(reader);
    if got == 2 && head == [0x1f, 0x8b] {
        Ok(Box::new(MultiGzDecoder::new(chained)))
    } else {
        Ok(Box::new(chained))
    }
}

/// Symlinks created so far by the tar being validated, to refuse later entries through them.
#[derive(Default)]
struct SymlinkTracker {
    symlinks: HashSet<PathBuf>,
    /// Ancestors of recorded symlinks, so replacing one of them can forget what it contained.
    symlink_parents: HashSet<PathBuf>,
}

impl SymlinkTracker {
    fn check_dir(&self, name: &str, dir: &Path) -> Result<()> {
        if self.symlinks.is_empty() {
            return Ok(());
        }
        for a in self_and_ancestors(dir) {
            if self.symlinks.contains(a) {
                return Err(entry_err(
                    name,
                    format!("writes through symlink {}", a.display()),
                ));
            }
        }
        Ok(())
    }

    fn check(&self, item: &Item) -> Result<()> {
        self.check_dir(&item.name, traversed_dir(item))?;
        if let Kind::Hardlink(target) = &item.kind {
            self.check_dir(&item.name, target.parent().unwrap_or(Path::new("")))?;
        }
        Ok(())
    }

    fn add_symlink(&mut self, rel: &Path) {
        for a in self_and_ancestors(rel).skip(1) {
            self.symlink_parents.insert(a.to_path_buf());
        }
        self.symlinks.insert(rel.to_path_buf());
    }

    fn record(&mut self, item: &Item) {
        let rel = item.rel.as_path();
        match &item.kind {
            Kind::Symlink(_) => self.add_symlink(rel),
            Kind::Hardlink(target) if self.symlinks.contains(target) => self.add_symlink(rel),
            // Whiteouts only hide lower layers, so they never remove this tar's symlinks.
            Kind::Whiteout | Kind::Opaque | Kind::Skip | Kind::Root => {}
            // A directory over a directory merges; over a symlink it replaces just that.
            Kind::Dir => {
                self.symlinks.remove(rel);
            }
            _ => {
                self.symlinks.remove(rel);
                if self.symlink_parents.remove(rel) {
                    // A non-directory replaced a directory holding symlinks.
                    self.symlinks.retain(|s| !s.starts_with(rel));
                }
            }
        }
    }
}

/// Reads a whole layer tar (plain, or gzip detected by the 1f 8b magic) from `reader`, copies
/// the uncompressed tar bytes into a new temp file in `spool_dir` and computes their sha256
/// (an OCI diff_id). Every entry is parsed and validated on the way, so a truncated or malicious
/// tar is rejected before any layer exists.
pub fn spool_tar(
    reader: impl Read,
    spool_dir: &Path,
) -> Result<(tempfile::NamedTempFile, Digested)> {
    spool_tar_with(reader, spool_dir, &ApplyOptions::default())
}

/// [`spool_tar`] with the import options: device nodes are refused here, before any layer
/// exists, unless `opts.allow_devices`.
pub fn spool_tar_with(
    reader: impl Read,
    spool_dir: &Path,
    opts: &ApplyOptions,
) -> Result<(tempfile::NamedTempFile, Digested)> {
    spool_inner(reader, spool_dir, opts).map_err(clean_err)
}

fn spool_inner(
    reader: impl Read,
    spool_dir: &Path,
    opts: &ApplyOptions,
) -> Result<(tempfile::NamedTempFile, Digested)> {
    let spool = tempfile::NamedTempFile::new_in(spool_dir)
        .map_err(|e| PoolError::io("create spool file in", spool_dir, e))?;
    let input = decompressed(reader)?;
    let mut tee = Tee {
        inner: input,
        out: BufWriter::with_capacity(COPY_BUF, spool.as_file()),
        hasher: Sha256::new(),
        bytes: 0,
        write_error: None,
    };
    // The spool holds the whole uncompressed tar: data claiming more than that filesystem has
    // free can never be imported, so it is refused at its header instead of after writing it
    // (a gzip bomb of a few MiB can claim terabytes).
    // fsblkcnt_t is not u64 on every target.
    #[allow(clippy::useless_conversion)]
    let room = nix::sys::statvfs::statvfs(spool_dir)
        .ok()
        .map(|v| u64::from(v.blocks_available()).saturating_mul(u64::from(v.fragment_size())));
    let walked = validate_stream(&mut tee, opts, room).and_then(|entries| {
        // Keep the trailer and what follows it, as the digest covers the whole stream, but
        // only up to a bound: padding, not gigabytes of decompressed zeros.
        let after =
            io::copy(&mut (&mut tee).take(MAX_TRAILER + 1), &mut io::sink()).map_err(read_err)?;
        if after > MAX_TRAILER {
            return Err(read_err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "more than {} KiB of data after the end of the tar",
                    MAX_TRAILER / 1024
                ),
            )));
        }
        Ok(entries)
    });
    if let Some(e) = tee.write_error.take() {
        return Err(PoolError::io("write spool file", spool.path(), e));
    }
    let entries = walked?;
    if tee.bytes == 0 {
        return Err(read_err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "empty tar stream",
        )));
    }
    tee.out
        .flush()
        .map_err(|e| PoolError::io("write spool file", spool.path(), e))?;
    let digested = Digested {
        digest: format!("sha256:{}", hex::encode(tee.hasher.finalize_reset())),
        entries,
        bytes: tee.bytes,
    };
    drop(tee);
    Ok((spool, digested))
}

fn device_refused(name: &str, kind: &Kind) -> Option<PoolError> {
    let (what, major, minor) = match kind {
        Kind::Char(ma, mi) => ("char", ma, mi),
        Kind::Block(ma, mi) => ("block", ma, mi),
        _ => return None,
    };
    Some(entry_err(
        name,
        format!(
            "{what} device {major}:{minor} refused: image tars may not create device nodes \
             (`layer create --allow-devices` allows them)"
        ),
    ))
}

fn validate_stream(input: &mut impl Read, opts: &ApplyOptions, room: Option<u64>) -> Result<u64> {
    let (mut archive, st) = tapped(input);
    let mut entries = TappedEntries::new(&mut archive, st)?;
    let mut tracker = SymlinkTracker::default();
    let mut count = 0u64;
    let mut claimed = 0u64;
    while let Some(next) = entries.next() {
        let (mut entry, pax) = next?;
        let item = classify(&entry)?;
        if !opts.allow_devices {
            if let Some(e) = device_refused(&item.name, &item.kind) {
                return Err(e);
            }
        }
        let xattrs = entry_xattrs(pax.as_deref(), &item.name)?;
        for (xname, _) in &xattrs {
            if let Some(why) = xattr_misfit(&item.kind, xname.as_bytes()) {
                return Err(entry_err(&item.name, why));
            }
        }
        if entry.header().entry_type() != tar::EntryType::XGlobalHeader {
            count += 1;
        }
        tracker.check(&item)?;
        tracker.record(&item);
        let want = entry.size();
        claimed = claimed.saturating_add(want);
        if let Some(room) = room.filter(|r| claimed > *r) {
            return Err(entry_err(
                &item.name,
                format!(
                    "claims {want} bytes of data: the tar would need more than the {room} bytes \
                     free where it is spooled"
                ),
            ));
        }
        // Read the data ourselves: the tar crate's reader stops silently at EOF.
        let got = io::copy(&mut entry, &mut io::sink()).map_err(read_err)?;
        if got != want {
            return Err(truncated(&item.name));
        }
    }
    Ok(count)
}

// ---------------------------------------------------------------------------------------------
// apply_tar
// ---------------------------------------------------------------------------------------------

fn is_not_found(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
}

fn lstat(p: &Path) -> Result<Option<fs::Metadata>> {
    match fs::symlink_metadata(p) {
        Ok(m) => Ok(Some(m)),
        Err(e) if is_not_found(&e) => Ok(None),
        Err(e) => Err(PoolError::io("lstat", p, e)),
    }
}

fn set_mtime(p: &Path, t: TimeSpec) -> Result<()> {
    utimensat(
        nix::fcntl::AT_FDCWD,
        p,
        &t,
        &t,
        UtimensatFlags::NoFollowSymlink,
    )
    .map_err(|e| PoolError::io("set mtime of", p, e.into()))
}

/// Parses a PAX time ("1700000000", "1700000000.5", "-1.25").
fn parse_pax_time(v: &str) -> Option<TimeSpec> {
    let (neg, v) = match v.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, v),
    };
    let (secs, frac) = v.split_once('.').unwrap_or((v, ""));
    if secs.is_empty() || !secs.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: i64 = secs.parse().ok()?;
    let mut nanos: i64 = 0;
    for i in 0..9 {
        let d = frac.as_bytes().get(i).map_or(0, |b| i64::from(b - b'0'));
        nanos = nanos * 10 + d;
    }
    let (secs, nanos) = match (neg, nanos) {
        (false, _) => (secs, nanos),
        (true, 0) => (-secs, 0),
        (true, n) => (-secs - 1, 1_000_000_000 - n),
    };
    Some(TimeSpec::new(secs, nanos))
}

struct Meta {
    mode: u32,
    uid: u32,
    gid: u32,
    mtime: TimeSpec,
    xattrs: Vec<Xattr>,
}

/// A numeric header field; one left blank (all NUL or spaces, as some writers do) reads as 0.
fn field<T: Default>(name: &str, what: &str, raw: &[u8], parsed: io::Result<T>) -> Result<T> {
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(T::default()),
        Err(_) => Err(entry_err(name, format!("bad {what} field"))),
    }
}

fn entry_meta<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    name: &str,
    pax: Option<&[u8]>,
) -> Result<Meta> {
    let header = entry.header();
    let old = header.as_old();
    let mode = field(name, "mode", &old.mode, header.mode())? & 0o7777;
    let uid = field(name, "uid", &old.uid, header.uid())?;
    let gid = field(name, "gid", &old.gid, header.gid())?;
    let uid = u32::try_from(uid).map_err(|_| entry_err(name, "uid out of range"))?;
    let gid = u32::try_from(gid).map_err(|_| entry_err(name, "gid out of range"))?;
    let secs = field(name, "mtime", &old.mtime, header.mtime())?;
    let mut mtime = TimeSpec::new(i64::try_from(secs).unwrap_or(i64::MAX), 0);
    // PAX may carry sub-second (or negative) mtimes that the ustar field cannot.
    if let Ok(Some(exts)) = entry.pax_extensions() {
        for ext in exts.flatten() {
            if ext.key() == Ok("mtime") {
                if let Some(t) = ext.value().ok().and_then(parse_pax_time) {
                    mtime = t;
                }
            }
        }
    }
    let xattrs = entry_xattrs(pax, name)?;
    Ok(Meta {
        mode,
        uid,
        gid,
        mtime,
        xattrs,
    })
}

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
    is_root: bool,
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
                    fs::create_dir(&cur).map_err(|e| PoolError::io("create directory", &cur, e))?;
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
                fs::remove_dir_all(p).map_err(|e| PoolError::io("remove directory", p, e))?;
                Ok(false)
            }
            Some(_) => {
                fs::remove_file(p).map_err(|e| PoolError::io("remove", p, e))?;
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
                return fs::remove_dir_all(&p)
                    .map_err(|e| PoolError::io("remove directory", &p, e));
            }
            let children = fs::read_dir(&p).map_err(|e| PoolError::io("read directory", &p, e))?;
            for child in children {
                let child = child.map_err(|e| PoolError::io("read directory", &p, e))?;
                self.prune(&rel.join(child.file_name()))?;
            }
            Ok(())
        } else if !self.written.contains(rel) {
            fs::remove_file(&p).map_err(|e| PoolError::io("remove", &p, e))
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

    fn chown(&mut self, p: &Path, meta: &Meta) -> Result<()> {
        match std::os::unix::fs::lchown(p, Some(meta.uid), Some(meta.gid)) {
            Ok(()) => Ok(()),
            Err(e)
                if !self.is_root
                    && matches!(e.raw_os_error(), Some(c) if c == nix::libc::EPERM || c == nix::libc::EINVAL) =>
            {
                // Unprivileged: ownership cannot be kept; the content still can.
                if !self.chown_warned {
                    tracing::warn!(path = %p.display(), "not root: keeping own uid/gid for layer files");
                    self.chown_warned = true;
                }
                Ok(())
            }
            Err(e) => Err(PoolError::io("chown", p, e)),
        }
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
                        fs::read_dir(&p).map_err(|e| PoolError::io("read directory", &p, e))?;
                    for child in children {
                        let child = child.map_err(|e| PoolError::io("read directory", &p, e))?;
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
            self.chown(&p, &meta)?;
            self.dirs
                .insert(PathBuf::new(), (meta.mode, meta.mtime, meta.xattrs));
            return Ok(());
        }
        self.walk_dirs(name, traversed_dir(&item), true)?;
        match &item.kind {
            Kind::Dir => {
                if !self.clear(&p, true)? {
                    fs::create_dir(&p).map_err(|e| PoolError::io("create directory", &p, e))?;
                }
                self.chown(&p, &meta)?;
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
                    .map_err(|e| PoolError::io("create file", &p, e))?;
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
                        .map_err(|e| PoolError::io("write file", &p, e))?;
                    got += n as u64;
                    self.add_bytes(n as u64, progress);
                }
                if got != want {
                    return Err(truncated(name));
                }
                self.chown(&p, &meta)?;
                // After chown, which clears setuid/setgid.
                f.set_permissions(fs::Permissions::from_mode(meta.mode))
                    .map_err(|e| PoolError::io("chmod", &p, e))?;
                // After chown, which clears security.capability; created O_NOFOLLOW above.
                set_xattrs(&p, &meta.xattrs)?;
                drop(f);
                set_mtime(&p, meta.mtime)?;
            }
            Kind::Symlink(target) => {
                self.clear(&p, false)?;
                std::os::unix::fs::symlink(target, &p)
                    .map_err(|e| PoolError::io("create symlink", &p, e))?;
                self.chown(&p, &meta)?;
                // lsetxattr: on the link itself.
                set_xattrs(&p, &meta.xattrs)?;
                set_mtime(&p, meta.mtime)?;
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
                made.map_err(|e| PoolError::io("create special file", &p, e.into()))?;
                self.chown(&p, &meta)?;
                // Just created as a fifo/device under checked parents: not a symlink.
                fs::set_permissions(&p, fs::Permissions::from_mode(meta.mode))
                    .map_err(|e| PoolError::io("chmod", &p, e))?;
                set_xattrs(&p, &meta.xattrs)?;
                set_mtime(&p, meta.mtime)?;
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
        fs::hard_link(&tp, &p).map_err(|e| PoolError::io("create hardlink", &p, e))?;
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
                Err(PoolError::TarEntry { .. }) => false,
                Err(e) => return Err(e),
            };
            if !intact {
                continue;
            }
            let p = self.root.join(&rel);
            fs::set_permissions(&p, fs::Permissions::from_mode(mode))
                .map_err(|e| PoolError::io("chmod", &p, e))?;
            // Checked just above: no symlink on the way. The root itself is the caller's and
            // may be a symlink: "/." reaches the directory it names.
            let at = if rel.as_os_str().is_empty() {
                p.join(".")
            } else {
                p.clone()
            };
            set_xattrs(&at, &xattrs)?;
            set_mtime(&p, mtime)?;
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
    apply_tar_inner(reader, root, opts, progress).map_err(clean_err)
}

fn apply_tar_inner(
    reader: impl Read,
    root: &Path,
    opts: &ApplyOptions,
    progress: &mut dyn FnMut(u64),
) -> Result<ApplyStats> {
    // The root itself is the caller's (trusted) path and may be reached through a symlink.
    let root_meta = fs::metadata(root).map_err(|e| PoolError::io("stat", root, e))?;
    if !root_meta.is_dir() {
        return Err(PoolError::Invalid(format!(
            "apply target {} is not a directory",
            root.display()
        )));
    }
    let mut applier = Applier {
        root,
        opts,
        written: HashSet::new(),
        written_parents: HashSet::new(),
        dirs: HashMap::new(),
        stats: ApplyStats::default(),
        reported: 0,
        is_root: nix::unistd::geteuid().is_root(),
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

// ---------------------------------------------------------------------------------------------
// tar_dir / write_diff
// ---------------------------------------------------------------------------------------------

type Tree = BTreeMap<Vec<u8>, fs::Metadata>;

fn join_rel(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(rel.len() + 1 + name.len());
    if !rel.is_empty() {
        v.extend_from_slice(rel);
        v.push(b'/');
    }
    v.extend_from_slice(name);
    v
}

fn rel_path(rel: &[u8]) -> &Path {
    Path::new(OsStr::from_bytes(rel))
}

/// Splits "a/b/c" into ("a/b", "c"); a top-level name has an empty parent.
fn split_last(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|b| *b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&[], rel),
    }
}

/// Everything below `dir` on the same filesystem, keyed by relative path bytes (so iteration is
/// sorted by path bytes, parents first). Sockets are skipped: tar cannot carry them.
fn walk_tree(dir: &Path) -> Result<Tree> {
    let root_meta = fs::metadata(dir).map_err(|e| PoolError::io("stat", dir, e))?;
    if !root_meta.is_dir() {
        return Err(PoolError::Invalid(format!(
            "{} is not a directory",
            dir.display()
        )));
    }
    let dev = root_meta.dev();
    let mut tree = Tree::new();
    let mut stack: Vec<(PathBuf, Vec<u8>)> = vec![(dir.to_path_buf(), Vec::new())];
    while let Some((abs, rel)) = stack.pop() {
        let rd = fs::read_dir(&abs).map_err(|e| PoolError::io("read directory", &abs, e))?;
        for child in rd {
            let child = child.map_err(|e| PoolError::io("read directory", &abs, e))?;
            let cabs = child.path();
            let meta = match fs::symlink_metadata(&cabs) {
                Ok(m) => m,
                Err(e) if is_not_found(&e) => continue,
                Err(e) => return Err(PoolError::io("lstat", &cabs, e)),
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
        let werr = |e| PoolError::io("write tar entry for", &abs, e);
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
            let target = fs::read_link(&abs).map_err(|e| PoolError::io("readlink", &abs, e))?;
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
                .map_err(|e| PoolError::io("open", &abs, e))?;
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
                    return Err(PoolError::Invalid(format!(
                        "{}: device number does not fit a tar header",
                        abs.display()
                    )));
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
        let xattrs = read_xattrs(abs)?;
        if xattrs.is_empty() {
            return Ok(());
        }
        let mut records: Vec<(String, &[u8])> = Vec::with_capacity(xattrs.len());
        for (name, value) in &xattrs {
            let Ok(name) = std::str::from_utf8(name.as_bytes()) else {
                return Err(PoolError::Invalid(format!(
                    "{}: xattr name {:?} is not UTF-8, which a PAX record cannot hold",
                    escape_controls(&abs.to_string_lossy()),
                    String::from_utf8_lossy(name.as_bytes())
                )));
            };
            records.push((format!("SCHILY.xattr.{name}"), value));
        }
        self.builder
            .append_pax_extensions(records.iter().map(|(k, v)| (k.as_str(), *v)))
            .map_err(|e| PoolError::io("write tar entry for", abs, e))
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
            .map_err(|e| PoolError::io("write tar entry for", base.join(rel_path(rel)), e))?;
        self.entries += 1;
        Ok(())
    }

    fn finish(self, base: &Path) -> Result<u64> {
        let mut out = self
            .builder
            .into_inner()
            .map_err(|e| PoolError::io("finish tar of", base, e))?;
        out.flush()
            .map_err(|e| PoolError::io("finish tar of", base, e))?;
        Ok(self.entries)
    }
}

enum Emit {
    Node,
    Whiteout,
}

/// Writes the chosen entries of `tree` in path-byte order. Second and later emitted paths of an
/// inode become hardlinks; so does an emitted path whose inode also has an unchanged path
/// (which the apply target already holds).
fn emit_tar(
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
    tar_dir_inner(dir, out).map_err(clean_err)
}

fn tar_dir_inner(dir: &Path, out: impl Write) -> Result<u64> {
    let mut tree = walk_tree(dir)?;
    // The root's own owner and mode are part of the layer ("./", first since "" sorts first).
    tree.insert(
        Vec::new(),
        fs::metadata(dir).map_err(|e| PoolError::io("stat", dir, e))?,
    );
    let emit: BTreeMap<Vec<u8>, Emit> = tree.keys().map(|k| (k.clone(), Emit::Node)).collect();
    emit_tar(dir, &tree, &emit, &HashMap::new(), out)
}

fn differs(
    layer_abs: &Path,
    parent_abs: &Path,
    l: &fs::Metadata,
    p: &fs::Metadata,
) -> Result<bool> {
    if l.mode() != p.mode()
        || l.uid() != p.uid()
        || l.gid() != p.gid()
        || l.mtime() != p.mtime()
        || l.mtime_nsec() != p.mtime_nsec()
    {
        return Ok(true);
    }
    let ft = l.file_type();
    // Directory sizes are filesystem bookkeeping; their content changes show in the mtime.
    if !ft.is_dir() && l.size() != p.size() {
        return Ok(true);
    }
    if (ft.is_char_device() || ft.is_block_device()) && l.rdev() != p.rdev() {
        return Ok(true);
    }
    if ft.is_symlink() {
        let a = fs::read_link(layer_abs).map_err(|e| PoolError::io("readlink", layer_abs, e))?;
        let b = fs::read_link(parent_abs).map_err(|e| PoolError::io("readlink", parent_abs, e))?;
        if a != b {
            return Ok(true);
        }
    }
    // A change of xattrs alone (setcap, setfacl) changes only the ctime.
    Ok(read_xattrs(layer_abs)? != read_xattrs(parent_abs)?)
}

/// Writes the changes of `layer` against `parent` (None: everything in `layer`) as an OCI layer
/// tar: added and modified entries (by metadata), their parent directories, and `.wh.NAME`
/// whiteouts for deleted paths. `deleted` counts whiteouts (a deleted directory is one).
pub fn write_diff(layer: &Path, parent: Option<&Path>, out: impl Write) -> Result<DiffStats> {
    write_diff_inner(layer, parent, out).map_err(clean_err)
}

fn write_diff_inner(layer: &Path, parent: Option<&Path>, out: impl Write) -> Result<DiffStats> {
    // A base layer's diff is the whole layer, root metadata included.
    if parent.is_none() {
        let added = tar_dir_inner(layer, out)?;
        return Ok(DiffStats {
            added,
            ..Default::default()
        });
    }
    let ltree = walk_tree(layer)?;
    let ptree = match parent {
        Some(p) => walk_tree(p)?,
        None => Tree::new(),
    };
    let parent_base = parent.unwrap_or(layer);
    let mut stats = DiffStats::default();
    let mut emit: BTreeMap<Vec<u8>, Emit> = BTreeMap::new();
    let mut unchanged_links: HashMap<u64, Vec<u8>> = HashMap::new();

    for (rel, lm) in &ltree {
        match ptree.get(rel) {
            None => {
                stats.added += 1;
                emit.insert(rel.clone(), Emit::Node);
            }
            Some(pm) => {
                let la = layer.join(rel_path(rel));
                let pa = parent_base.join(rel_path(rel));
                if differs(&la, &pa, lm, pm)? {
                    stats.modified += 1;
                    emit.insert(rel.clone(), Emit::Node);
                } else if !lm.is_dir() && lm.nlink() > 1 {
                    unchanged_links
                        .entry(lm.ino())
                        .or_insert_with(|| rel.clone());
                }
            }
        }
    }

    for rel in ptree.keys() {
        if ltree.contains_key(rel) {
            continue;
        }
        let (dir, name) = split_last(rel);
        // Only where the parent is still a directory in the layer: otherwise an ancestor's
        // whiteout or replacement already removes it.
        if !dir.is_empty() && !ltree.get(dir).is_some_and(|m| m.is_dir()) {
            continue;
        }
        let mut wh_name = WH_PREFIX.to_vec();
        wh_name.extend_from_slice(name);
        stats.deleted += 1;
        emit.insert(join_rel(dir, &wh_name), Emit::Whiteout);
    }

    // Parents precede children: every ancestor of an emitted path is emitted too.
    let mut ancestors: Vec<Vec<u8>> = Vec::new();
    for rel in emit.keys() {
        let mut cur: &[u8] = rel;
        loop {
            let (dir, _) = split_last(cur);
            if dir.is_empty() {
                break;
            }
            if !emit.contains_key(dir) {
                ancestors.push(dir.to_vec());
            }
            cur = dir;
        }
    }
    for a in ancestors {
        if ltree.contains_key(&a) {
            emit.entry(a).or_insert(Emit::Node);
        }
    }

    emit_tar(layer, &ltree, &emit, &unchanged_links, out)?;
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{lchown, symlink};

    // ---- tar building helpers -----------------------------------------------------------

    fn hdr(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(1_600_000_000);
        h.set_size(size);
        h
    }

    struct TB(tar::Builder<Vec<u8>>);

    impl TB {
        fn new() -> Self {
            TB(tar::Builder::new(Vec::new()))
        }
        fn dir(mut self, path: &str, mode: u32) -> Self {
            let mut h = hdr(tar::EntryType::Directory, mode, 0);
            self.0.append_data(&mut h, path, io::empty()).unwrap();
            self
        }
        fn file(mut self, path: &str, data: &[u8], mode: u32) -> Self {
            let mut h = hdr(tar::EntryType::Regular, mode, data.len() as u64);
            self.0.append_data(&mut h, path, data).unwrap();
            self
        }
        fn symlink(mut self, path: &str, target: &str) -> Self {
            let mut h = hdr(tar::EntryType::Symlink, 0o777, 0);
            self.0.append_link(&mut h, path, target).unwrap();
            self
        }
        fn hardlink(mut self, path: &str, target: &str) -> Self {
            let mut h = hdr(tar::EntryType::Link, 0o644, 0);
            self.0.append_link(&mut h, path, target).unwrap();
            self
        }
        /// An entry with a name and link name written raw, bypassing the builder's checks.
        fn raw(mut self, kind: tar::EntryType, name: &[u8], link: &[u8], data: &[u8]) -> Self {
            let mut h = hdr(kind, 0o644, data.len() as u64);
            {
                let old = h.as_old_mut();
                old.name = [0; 100];
                old.name[..name.len()].copy_from_slice(name);
                old.linkname = [0; 100];
                old.linkname[..link.len()].copy_from_slice(link);
            }
            h.set_cksum();
            self.0.append(&h, data).unwrap();
            self
        }
        fn device(mut self, path: &str, kind: tar::EntryType, major: u32, minor: u32) -> Self {
            let mut h = hdr(kind, 0o666, 0);
            h.set_device_major(major).unwrap();
            h.set_device_minor(minor).unwrap();
            self.0.append_data(&mut h, path, io::empty()).unwrap();
            self
        }
        fn done(self) -> Vec<u8> {
            self.0.into_inner().unwrap()
        }
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
            Err(PoolError::TarEntry { reason, .. }) => {
                assert!(reason.contains(want), "reason {reason:?} lacks {want:?}")
            }
            other => panic!("expected TarEntry({want}), got {other:?}"),
        }
    }

    fn set_mtime_secs(p: &Path, secs: i64) {
        set_mtime(p, TimeSpec::new(secs, 0)).unwrap();
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

    // ---- spool_tar ------------------------------------------------------------------------

    #[test]
    fn spool_digest_matches_sha256_of_plain_bytes() {
        let tar = TB::new().dir("d", 0o755).file("d/f", b"abc", 0o644).done();
        let spool_dir = tempfile::tempdir().unwrap();
        let (file, d) = spool_tar(&tar[..], spool_dir.path()).unwrap();
        assert_eq!(d.digest, sha(&tar));
        assert_eq!(d.bytes, tar.len() as u64);
        assert_eq!(d.entries, 2);
        assert_eq!(fs::read(file.path()).unwrap(), tar);
        assert!(d.digest.starts_with("sha256:") && d.digest.len() == 7 + 64);
        assert_eq!(d.digest, d.digest.to_lowercase());
    }

    #[test]
    fn spool_gzip_gives_same_digest_and_plain_spool() {
        let tar = TB::new().file("f", &[1u8; 5000], 0o644).done();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        assert_eq!(&gz[..2], &[0x1f, 0x8b]);
        let spool_dir = tempfile::tempdir().unwrap();
        let (file, d) = spool_tar(&gz[..], spool_dir.path()).unwrap();
        assert_eq!(d, spool(&tar).unwrap());
        assert_eq!(fs::read(file.path()).unwrap(), tar);
    }

    #[test]
    fn spool_one_byte_reads_work() {
        struct OneByte<'a>(&'a [u8]);
        impl Read for OneByte<'_> {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() || buf.is_empty() {
                    return Ok(0);
                }
                buf[0] = self.0[0];
                self.0 = &self.0[1..];
                Ok(1)
            }
        }
        let tar = TB::new().file("f", b"xyz", 0o644).done();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let (_, d) = spool_tar(OneByte(&gz), dir.path()).unwrap();
        assert_eq!(d.digest, sha(&tar));
    }

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

    // ---- round trip -----------------------------------------------------------------------

    #[test]
    fn round_trip_tar_dir_spool_apply() {
        let src = tempfile::tempdir().unwrap();
        populate(src.path());
        let mut t = Vec::new();
        tar_dir(src.path(), &mut t).unwrap();

        let spool_dir = tempfile::tempdir().unwrap();
        let (file, d) = spool_tar(&t[..], spool_dir.path()).unwrap();
        let dst = tempfile::tempdir().unwrap();
        let reopened = fs::File::open(file.path()).unwrap();
        let mut last = 0;
        let stats = apply_tar(reopened, dst.path(), &ApplyOptions::default(), &mut |b| {
            last = b
        })
        .unwrap();
        assert_eq!(stats.entries, d.entries);
        assert_eq!(stats.whiteouts, 0);
        assert_eq!(last, stats.bytes);
        assert_eq!(snapshot(src.path()), snapshot(dst.path()));
        for dir in ["a", "a/deep", "a/deep/er", "sticky", "ro"] {
            assert_eq!(
                dir_mtime(&src.path().join(dir)),
                dir_mtime(&dst.path().join(dir)),
                "{dir}"
            );
        }
        let m = fs::metadata(dst.path().join("suid")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o4755);
        let m = fs::metadata(dst.path().join("sticky")).unwrap();
        assert_eq!(m.mode() & 0o7777, 0o1777);
        if nix::unistd::geteuid().is_root() {
            let m = fs::symlink_metadata(dst.path().join("sym")).unwrap();
            assert_eq!((m.uid(), m.gid()), (1234, 4321));
            // The symlink's target kept its own owner.
            let m = fs::metadata(dst.path().join("a/file.txt")).unwrap();
            assert_eq!((m.uid(), m.gid()), (1000, 1001));
        }
        // A second tar of the result is byte-identical.
        let mut t2 = Vec::new();
        tar_dir(dst.path(), &mut t2).unwrap();
        assert_eq!(t, t2);
    }

    #[test]
    fn apply_honours_pax_subsecond_mtime() {
        let mut b = tar::Builder::new(Vec::new());
        b.append_pax_extensions([("mtime", &b"1700000000.25"[..])])
            .unwrap();
        let mut h = hdr(tar::EntryType::Regular, 0o644, 1);
        b.append_data(&mut h, "f", &b"x"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let dst = tempfile::tempdir().unwrap();
        apply(&tar, dst.path()).unwrap();
        let m = fs::metadata(dst.path().join("f")).unwrap();
        assert_eq!((m.mtime(), m.mtime_nsec()), (1_700_000_000, 250_000_000));
        assert_eq!(
            parse_pax_time("-1.25").map(|t| (t.tv_sec(), t.tv_nsec())),
            Some((-2, 750_000_000))
        );
        assert!(parse_pax_time("1e5").is_none());
    }

    #[test]
    fn apply_reports_progress_every_mib() {
        let big = vec![3u8; 5 * 1024 * 1024 + 17];
        let tar = TB::new().file("big", &big, 0o644).done();
        let dst = tempfile::tempdir().unwrap();
        let mut calls = Vec::new();
        let stats = apply_tar(&tar[..], dst.path(), &ApplyOptions::default(), &mut |b| {
            calls.push(b)
        })
        .unwrap();
        assert_eq!(stats.bytes, big.len() as u64);
        assert!(calls.len() >= 5 && calls.len() <= 7, "{calls:?}");
        assert!(calls[0] >= PROGRESS_STEP);
        // Every step but the final report is at least a MiB.
        let steps: Vec<u64> = calls.windows(2).map(|w| w[1] - w[0]).collect();
        assert!(
            steps[..steps.len() - 1].iter().all(|s| *s >= PROGRESS_STEP),
            "{calls:?}"
        );
        assert!(steps.iter().all(|s| *s > 0));
        assert_eq!(*calls.last().unwrap(), big.len() as u64);
    }

    // ---- replacement and whiteouts -------------------------------------------------------

    #[test]
    fn apply_replaces_types_and_merges_dirs() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("d/keep")).unwrap();
        fs::write(r.join("d/old"), b"old").unwrap();
        fs::create_dir_all(r.join("becomes_file/sub")).unwrap();
        fs::write(r.join("becomes_dir"), b"x").unwrap();
        symlink("/nowhere", r.join("sym_to_file")).unwrap();
        fs::write(r.join("shared"), b"orig").unwrap();
        fs::hard_link(r.join("shared"), r.join("shared2")).unwrap();
        let tar = TB::new()
            .dir("d", 0o700)
            .file("d/new", b"n", 0o644)
            .file("becomes_file", b"f", 0o600)
            .dir("becomes_dir", 0o750)
            .file("becomes_dir/in", b"i", 0o644)
            .file("sym_to_file", b"s", 0o644)
            .file("shared", b"replaced", 0o644)
            .done();
        apply(&tar, r).unwrap();
        assert!(r.join("d/keep").is_dir());
        assert_eq!(fs::read(r.join("d/old")).unwrap(), b"old");
        assert_eq!(fs::read(r.join("d/new")).unwrap(), b"n");
        assert_eq!(fs::metadata(r.join("d")).unwrap().mode() & 0o7777, 0o700);
        assert_eq!(fs::read(r.join("becomes_file")).unwrap(), b"f");
        assert_eq!(fs::read(r.join("becomes_dir/in")).unwrap(), b"i");
        assert!(fs::symlink_metadata(r.join("sym_to_file"))
            .unwrap()
            .is_file());
        // The old inode is unlinked, not overwritten: its other name keeps its content.
        assert_eq!(fs::read(r.join("shared")).unwrap(), b"replaced");
        assert_eq!(fs::read(r.join("shared2")).unwrap(), b"orig");
    }

    #[test]
    fn whiteouts_delete_files_and_dirs() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("a")).unwrap();
        fs::write(r.join("a/x"), b"x").unwrap();
        fs::write(r.join("a/y"), b"y").unwrap();
        fs::create_dir_all(r.join("d/sub")).unwrap();
        fs::write(r.join("d/sub/z"), b"z").unwrap();
        symlink("/etc", r.join("s")).unwrap();
        let tar = TB::new()
            .file("a/.wh.x", b"", 0)
            .file(".wh.d", b"", 0)
            .file(".wh.s", b"", 0)
            .file(".wh.not-there", b"", 0)
            .done();
        let stats = apply(&tar, r).unwrap();
        assert_eq!(stats.whiteouts, 4);
        assert!(!r.join("a/x").exists());
        assert!(r.join("a/y").exists());
        assert!(!r.join("d").exists());
        assert!(fs::symlink_metadata(r.join("s")).is_err());
        assert!(Path::new("/etc").is_dir());
        assert!(!r.join("a/.wh.x").exists());
    }

    #[test]
    fn whiteout_does_not_hide_same_layer_entries() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("d")).unwrap();
        fs::write(r.join("d/lower"), b"l").unwrap();
        let tar = TB::new()
            .file("f", b"mine", 0o644)
            .file("d/mine", b"m", 0o644)
            .file(".wh.f", b"", 0)
            .file(".wh.d", b"", 0)
            .done();
        apply(&tar, r).unwrap();
        assert_eq!(fs::read(r.join("f")).unwrap(), b"mine");
        assert_eq!(fs::read(r.join("d/mine")).unwrap(), b"m");
        assert!(!r.join("d/lower").exists());
    }

    #[test]
    fn opaque_dir_removes_lower_content_only() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        fs::create_dir_all(r.join("o/lowerdir")).unwrap();
        fs::write(r.join("o/old1"), b"1").unwrap();
        fs::write(r.join("o/lowerdir/old2"), b"2").unwrap();
        fs::write(r.join("outside"), b"keep").unwrap();
        let tar = TB::new()
            .dir("o", 0o755)
            .file("o/new", b"n", 0o644)
            .file("o/.wh..wh..opq", b"", 0)
            .file("o/after", b"a", 0o644)
            .done();
        let stats = apply(&tar, r).unwrap();
        assert_eq!(stats.whiteouts, 1);
        let mut names: Vec<_> = fs::read_dir(r.join("o"))
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, vec!["after", "new"]);
        assert!(r.join("outside").exists());
    }

    #[test]
    fn aufs_metadata_and_root_entries_are_skipped() {
        let root = tempfile::tempdir().unwrap();
        let tar = TB::new()
            .dir("./", 0o755)
            .dir(".wh..wh.plnk", 0o700)
            .file("./x", b"x", 0o644)
            .done();
        spool(&tar).unwrap();
        apply(&tar, root.path()).unwrap();
        assert!(!root.path().join(".wh..wh.plnk").exists());
        assert_eq!(fs::read(root.path().join("x")).unwrap(), b"x");
    }

    // ---- hostile input -------------------------------------------------------------------

    /// Each bad tar must be refused by spool_tar and by apply_tar.
    fn refused_everywhere(tar: &[u8], want: &str) {
        assert_entry_err(spool(tar), want);
        let root = tempfile::tempdir().unwrap();
        assert_entry_err(apply(tar, root.path()), want);
    }

    #[test]
    fn rejects_absolute_path() {
        let tar = TB::new()
            .raw(tar::EntryType::Regular, b"/etc/x", b"", b"x")
            .done();
        refused_everywhere(&tar, "absolute path");
    }

    #[test]
    fn rejects_dotdot() {
        let tar = TB::new()
            .raw(tar::EntryType::Regular, b"a/../../x", b"", b"x")
            .done();
        refused_everywhere(&tar, "..");
        let tar = TB::new()
            .raw(tar::EntryType::Regular, b"..", b"", b"")
            .done();
        refused_everywhere(&tar, "..");
    }

    #[test]
    fn rejects_empty_path_and_bad_whiteouts() {
        let tar = TB::new().raw(tar::EntryType::Regular, b"", b"", b"").done();
        refused_everywhere(&tar, "empty path");
        let tar = TB::new()
            .raw(tar::EntryType::Regular, b"a/.wh.", b"", b"")
            .done();
        refused_everywhere(&tar, "invalid whiteout");
        let tar = TB::new()
            .raw(tar::EntryType::Regular, b".", b"", b"")
            .done();
        refused_everywhere(&tar, "layer root");
    }

    #[test]
    fn rejects_bad_hardlink_targets() {
        let tar = TB::new()
            .raw(tar::EntryType::Link, b"l", b"/etc/passwd", b"")
            .done();
        refused_everywhere(&tar, "hardlink target: absolute path");
        let tar = TB::new()
            .raw(tar::EntryType::Link, b"l", b"../../etc/passwd", b"")
            .done();
        refused_everywhere(&tar, "hardlink target: path contains `..`");
        let root = tempfile::tempdir().unwrap();
        let tar = TB::new().hardlink("l", "missing").done();
        assert_entry_err(apply(&tar, root.path()), "does not exist");
    }

    #[test]
    fn rejects_writing_through_symlink_in_same_tar() {
        let outside = tempfile::tempdir().unwrap();
        let tar = TB::new()
            .symlink("esc", outside.path().to_str().unwrap())
            .file("esc/pwned", b"x", 0o644)
            .done();
        assert_entry_err(spool(&tar), "writes through symlink esc");
        let root = tempfile::tempdir().unwrap();
        assert_entry_err(apply(&tar, root.path()), "writes through symlink esc");
        assert!(!outside.path().join("pwned").exists());

        let tar = TB::new()
            .dir("d", 0o755)
            .symlink("d/s", "/")
            .file("d/s/x/y", b"", 0o644)
            .done();
        assert_entry_err(spool(&tar), "writes through symlink d/s");

        // Hardlinked symlinks and link targets through symlinks.
        let tar = TB::new()
            .symlink("s", "/etc")
            .hardlink("s2", "s")
            .file("s2/x", b"", 0o644)
            .done();
        assert_entry_err(spool(&tar), "writes through symlink s2");
        let tar = TB::new()
            .symlink("s", "/etc")
            .hardlink("pw", "s/passwd")
            .done();
        assert_entry_err(spool(&tar), "writes through symlink s");
        let tar = TB::new()
            .symlink("s", "/etc")
            .file("s/.wh..wh..opq", b"", 0)
            .done();
        assert_entry_err(spool(&tar), "writes through symlink s");

        // A symlink replaced by a directory is fine again.
        let tar = TB::new()
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
    fn apply_refuses_symlinks_from_lower_layer() {
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("victim"), b"safe").unwrap();
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        symlink(outside.path(), r.join("lnk")).unwrap();
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                TB::new().file("lnk/new", b"x", 0o644).done(),
                "writes through symlink lnk",
            ),
            (
                TB::new().dir("lnk/d", 0o755).done(),
                "writes through symlink lnk",
            ),
            (
                TB::new().file("lnk/.wh.victim", b"", 0).done(),
                "writes through symlink lnk",
            ),
            (
                TB::new().file("lnk/.wh..wh..opq", b"", 0).done(),
                "writes through symlink lnk",
            ),
            (
                TB::new().hardlink("h", "lnk/victim").done(),
                "writes through symlink lnk",
            ),
        ];
        for (tar, want) in cases {
            spool(&tar).unwrap();
            assert_entry_err(apply(&tar, r), want);
        }
        assert_eq!(fs::read(outside.path().join("victim")).unwrap(), b"safe");
        assert_eq!(fs::read_dir(outside.path()).unwrap().count(), 1);
        // Replacing the symlink itself is allowed and does not touch its target.
        let tar = TB::new().file("lnk", b"now a file", 0o600).done();
        apply(&tar, r).unwrap();
        assert!(fs::symlink_metadata(r.join("lnk")).unwrap().is_file());
        assert_eq!(fs::read(outside.path().join("victim")).unwrap(), b"safe");
    }

    #[test]
    fn symlink_forgotten_when_its_directory_is_replaced() {
        let tar = TB::new()
            .dir("a", 0o755)
            .symlink("a/s", "/etc")
            .file("a", b"file now", 0o644)
            .dir("a", 0o755)
            .file("a/s/x", b"x", 0o644)
            .done();
        spool(&tar).unwrap();
        let root = tempfile::tempdir().unwrap();
        apply(&tar, root.path()).unwrap();
        assert_eq!(fs::read(root.path().join("a/s/x")).unwrap(), b"x");
        assert!(fs::symlink_metadata(root.path().join("a/s"))
            .unwrap()
            .is_dir());
    }

    #[test]
    fn blank_numeric_fields_read_as_zero() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Regular);
        h.set_size(2);
        b.append_data(&mut h, "f", &b"hi"[..]).unwrap();
        let tar = b.into_inner().unwrap();
        let root = tempfile::tempdir().unwrap();
        apply(&tar, root.path()).unwrap();
        let m = fs::metadata(root.path().join("f")).unwrap();
        assert_eq!((m.mode() & 0o7777, m.mtime()), (0, 0));

        let mut bad = TB::new().file("f", b"", 0o644).done();
        bad[108..116].copy_from_slice(b"zzzzzzz\0");
        let mut h = tar::Header::new_old();
        h.as_mut_bytes().copy_from_slice(&bad[..512]);
        h.set_cksum();
        bad[..512].copy_from_slice(h.as_bytes());
        let root = tempfile::tempdir().unwrap();
        assert_entry_err(apply(&bad, root.path()), "bad uid field");
    }

    #[test]
    fn apply_root_may_be_a_symlink_to_a_dir() {
        let real = tempfile::tempdir().unwrap();
        let holder = tempfile::tempdir().unwrap();
        let via = holder.path().join("via");
        symlink(real.path(), &via).unwrap();
        apply(&TB::new().file("f", b"1", 0o644).done(), &via).unwrap();
        assert!(real.path().join("f").is_file());
        let mut t = Vec::new();
        // The root ("./") and f.
        assert_eq!(tar_dir(&via, &mut t).unwrap(), 2);
    }

    #[test]
    fn hardlink_to_symlink_links_the_symlink() {
        let root = tempfile::tempdir().unwrap();
        let tar = TB::new()
            .symlink("s", "/etc/passwd")
            .hardlink("h", "s")
            .done();
        spool(&tar).unwrap();
        apply(&tar, root.path()).unwrap();
        let m = fs::symlink_metadata(root.path().join("h")).unwrap();
        assert!(m.file_type().is_symlink());
        assert_eq!(m.nlink(), 2);
    }

    #[test]
    fn rejects_truncated_streams() {
        let data = vec![9u8; 4000];
        let tar = TB::new()
            .file("first", b"ok", 0o644)
            .file("f", &data, 0o644)
            .done();
        // Offsets: header(512) data(512) header(512) data(4096 padded) trailer(1024).
        for cut in [
            1024 + 100,
            1024 + 512 + 1000,
            1024 + 512 + 4000 - 1,
            700,
            1,
            511,
        ] {
            let part = &tar[..cut];
            match spool(part) {
                Err(PoolError::TarRead { .. }) | Err(PoolError::TarEntry { .. }) => {}
                other => panic!("spool of {cut} bytes: {other:?}"),
            }
            let root = tempfile::tempdir().unwrap();
            match apply(part, root.path()) {
                Err(PoolError::TarRead { .. }) | Err(PoolError::TarEntry { .. }) => {}
                other => panic!("apply of {cut} bytes: {other:?}"),
            }
        }
        // Complete entries with a missing trailer are accepted.
        spool(&tar[..1024 + 512 + 4096]).unwrap();
        assert!(matches!(spool(&[]), Err(PoolError::TarRead { .. })));
    }

    #[test]
    fn rejects_truncated_gzip() {
        let tar = TB::new().file("f", &vec![5u8; 100_000], 0o644).done();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let gz = gz.finish().unwrap();
        let cut = &gz[..gz.len() / 2];
        assert!(matches!(
            spool(cut),
            Err(PoolError::TarRead { .. }) | Err(PoolError::TarEntry { .. })
        ));
    }

    #[test]
    fn rejects_garbage() {
        let junk = vec![0x42u8; 2048];
        assert!(matches!(spool(&junk), Err(PoolError::TarRead { .. })));
    }

    #[test]
    fn rejects_unsupported_types() {
        let tar = TB::new()
            .raw(tar::EntryType::new(b'V'), b"vol", b"", b"")
            .done();
        refused_everywhere(&tar, "unsupported entry type");
        let tar = TB::new()
            .raw(tar::EntryType::new(b'S'), b"sparse", b"", b"")
            .done();
        match spool(&tar) {
            Err(PoolError::TarEntry { .. }) | Err(PoolError::TarRead { .. }) => {}
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
            let tar = TB::new().device("dev/x", kind, ma, mi).done();
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
    fn device_nodes_with_allow_devices() {
        let tar = TB::new().device("null", tar::EntryType::Char, 1, 3).done();
        let opts = ApplyOptions {
            allow_devices: true,
        };
        let dir = tempfile::tempdir().unwrap();
        spool_tar_with(&tar[..], dir.path(), &opts).unwrap();
        if !nix::unistd::geteuid().is_root() {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        match apply_tar(&tar[..], root.path(), &opts, &mut |_| {}) {
            Ok(_) => {
                let m = fs::symlink_metadata(root.path().join("null")).unwrap();
                assert!(m.file_type().is_char_device());
                assert_eq!(m.rdev(), makedev(1, 3));
                assert_eq!(m.mode() & 0o7777, 0o666);
                let mut out = Vec::new();
                tar_dir(root.path(), &mut out).unwrap();
                let mut a = tar::Archive::new(&out[..]);
                // Entry 0 is the root directory.
                let e = a.entries().unwrap().nth(1).unwrap().unwrap();
                assert_eq!(e.header().entry_type(), tar::EntryType::Char);
                assert_eq!(e.header().device_major().unwrap(), Some(1));
                assert_eq!(e.header().device_minor().unwrap(), Some(3));
            }
            // Containers without CAP_MKNOD.
            Err(PoolError::Io { source, .. })
                if source.raw_os_error() == Some(nix::libc::EPERM) => {}
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn char_0_0_is_a_whiteout_whatever_allow_devices_says() {
        let tar = TB::new()
            .device("gone", tar::EntryType::Char, 0, 0)
            .device("d/gone2", tar::EntryType::Char, 0, 0)
            .done();
        spool(&tar).unwrap();
        for allow_devices in [false, true] {
            let root = tempfile::tempdir().unwrap();
            fs::write(root.path().join("gone"), b"lower").unwrap();
            fs::create_dir(root.path().join("d")).unwrap();
            fs::create_dir(root.path().join("d/gone2")).unwrap();
            fs::write(root.path().join("d/gone2/x"), b"x").unwrap();
            fs::write(root.path().join("d/stays"), b"s").unwrap();
            let opts = ApplyOptions { allow_devices };
            let st = apply_tar(&tar[..], root.path(), &opts, &mut |_| {}).unwrap();
            assert_eq!(st.whiteouts, 2);
            assert!(lstat(&root.path().join("gone")).unwrap().is_none());
            assert!(lstat(&root.path().join("d/gone2")).unwrap().is_none());
            assert!(root.path().join("d/stays").exists());
        }
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
        read_xattrs(p)
            .unwrap()
            .into_iter()
            .find(|(n, _)| n.as_bytes() == name.as_bytes())
            .map(|(_, v)| v)
    }

    /// A file capability (cap_net_raw+ep, VFS_CAP_REVISION_2): binary, with NUL bytes.
    const CAP_NET_RAW: [u8; 20] = [
        0x01, 0x00, 0x00, 0x02, 0x00, 0x20, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
        0x00, 0x00, 0x00, 0x00, 0x00,
    ];

    /// PAX records before one entry, written raw (key = bytes).
    fn with_pax(tb: &mut TB, records: &[(&str, &[u8])]) {
        tb.0.append_pax_extensions(records.iter().map(|(k, v)| (*k, *v)))
            .unwrap();
    }

    #[test]
    fn xattrs_round_trip_import_tar_dir_import() {
        let root = tempfile::tempdir().unwrap();
        if !xattrs_supported(root.path()) {
            return;
        }
        let binary: Vec<u8> = (0u8..=255).collect();
        let mut tb = TB::new();
        with_pax(&mut tb, &[("SCHILY.xattr.user.dir", b"D")]);
        tb = tb.dir("d", 0o755);
        with_pax(
            &mut tb,
            &[
                ("SCHILY.xattr.user.bin", &binary),
                ("SCHILY.xattr.user.a", b"1"),
                // Skipped: host policy and overlayfs bookkeeping.
                ("SCHILY.xattr.trusted.overlay.opaque", b"y"),
                ("SCHILY.xattr.security.selinux", b"system_u:object_r:x:s0"),
            ],
        );
        tb = tb.file("d/f", b"data", 0o4755);
        let is_root = nix::unistd::geteuid().is_root();
        if is_root {
            with_pax(
                &mut tb,
                &[("SCHILY.xattr.security.capability", &CAP_NET_RAW)],
            );
            let mut h = hdr(tar::EntryType::Regular, 0o755, 1);
            h.set_uid(1000);
            h.set_gid(1000);
            tb.0.append_data(&mut h, "ping", &b"p"[..]).unwrap();
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
                assert_eq!(read_xattrs(&a).unwrap(), read_xattrs(&b).unwrap(), "{p}");
            }
        }
        assert_eq!(
            xattr_of(&again.path().join("d/f"), "user.bin").as_deref(),
            Some(&binary[..])
        );
    }

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
        let mut tb = TB::new();
        with_pax(
            &mut tb,
            &[
                ("SCHILY.xattr.system.posix_acl_access", &acl),
                ("SCHILY.xattr.system.posix_acl_default", &acl),
            ],
        );
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
        assert_eq!(read_xattrs(&d).unwrap(), read_xattrs(&d2).unwrap());
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

    #[test]
    fn bad_xattr_records_are_refused_before_import() {
        let mut tb = TB::new();
        with_pax(&mut tb, &[("SCHILY.xattr.user.k", b"v")]);
        let tar = tb.symlink("l", "t").done();
        assert_entry_err(spool(&tar), "only on regular files and directories");
        for (key, what) in [
            ("SCHILY.xattr.security.capability", "only on regular files"),
            (
                "SCHILY.xattr.system.posix_acl_default",
                "only on directories",
            ),
        ] {
            let mut tb = TB::new();
            with_pax(&mut tb, &[(key, &acl_value())]);
            let tar = tb.symlink("l", "t").done();
            assert_entry_err(spool(&tar), what);
        }
        let mut tb = TB::new();
        with_pax(&mut tb, &[("SCHILY.xattr.user.k", b"v")]);
        // The same on a regular file is fine, and on a hardlink ignored.
        tb = tb.file("x", b"x", 0o644);
        with_pax(&mut tb, &[("SCHILY.xattr.user.k", b"other")]);
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
        let mut tb = TB::new();
        let data = b"99 SCHILY.xattr.user.k=v\n";
        let mut h = hdr(tar::EntryType::XHeader, 0o644, data.len() as u64);
        h.set_cksum();
        tb.0.append(&h, &data[..]).unwrap();
        let tar = tb.file("f", b"", 0o644).done();
        assert_entry_err(spool(&tar), "malformed PAX record");
        let mut tb = TB::new();
        let big = vec![b'x'; XATTR_SIZE_MAX + 1];
        with_pax(&mut tb, &[("SCHILY.xattr.user.big", &big)]);
        let tar = tb.file("f", b"", 0o644).done();
        assert_entry_err(spool(&tar), "larger than");
    }

    /// Every message is one line of printable text, whatever the tar holds.
    fn assert_clean(msg: &str) {
        assert!(
            !msg.chars().any(|c| c.is_control()),
            "control character in {msg:?}"
        );
    }

    #[test]
    fn errors_escape_names_from_the_tar() {
        // A name forging a second output line, with a terminal escape.
        let name = b"x\ncreated layer \x1b[2Jevil/../../y";
        let tar = TB::new()
            .raw(tar::EntryType::Regular, name, b"", b"")
            .done();
        let msg = spool(&tar).unwrap_err().to_string();
        assert_clean(&msg);
        assert!(msg.contains("\\n") && msg.contains("{1b}"), "{msg}");

        // A symlink whose name has a newline, written through later.
        let tar = TB::new()
            .raw(tar::EntryType::Symlink, b"l\nk", b"/etc", b"")
            .raw(tar::EntryType::Regular, b"l\nk/passwd", b"", b"")
            .done();
        let msg = spool(&tar).unwrap_err().to_string();
        assert!(msg.contains("writes through symlink"), "{msg}");
        assert_clean(&msg);

        // The tar crate's own messages quote header fields: a bad mode field.
        let mut h = hdr(tar::EntryType::Regular, 0o644, 0);
        h.as_old_mut().name[..5].copy_from_slice(b"a\x1b]0;");
        h.as_old_mut().size = *b"zz\n\x1b[31m\0\0\0\0";
        h.set_cksum();
        let mut tar = h.as_bytes().to_vec();
        tar.extend_from_slice(&[0u8; 1024]);
        let msg = spool(&tar).unwrap_err().to_string();
        assert_clean(&msg);

        // Hardlink target missing: the reason quotes the target.
        let root = tempfile::tempdir().unwrap();
        let tar = TB::new()
            .raw(tar::EntryType::Link, b"l", b"no\x1bpe", b"")
            .done();
        let msg = apply(&tar, root.path()).unwrap_err().to_string();
        assert!(msg.contains("does not exist"), "{msg}");
        assert_clean(&msg);
    }

    #[test]
    fn entry_claiming_more_than_the_spool_space_is_refused_at_its_header() {
        // 1 PiB claimed, 64 KiB present: refused before reading any data.
        let mut h = hdr(tar::EntryType::Regular, 0o644, 0);
        h.set_size(1 << 50);
        h.set_path("bomb").unwrap();
        h.set_cksum();
        let mut tar = h.as_bytes().to_vec();
        tar.extend_from_slice(&[0u8; 65536]);
        assert_entry_err(spool(&tar), "free where it is spooled");
    }

    #[test]
    fn gigabytes_of_trailing_zeros_are_refused() {
        // A gzip of 64 MiB of zeros (64 KiB compressed): an empty tar, then padding without end.
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            gz.write_all(&zeros).unwrap();
        }
        let gz = gz.finish().unwrap();
        let msg = spool(&gz).unwrap_err().to_string();
        assert!(msg.contains("after the end of the tar"), "{msg}");
        // Ordinary padding (GNU tar's 10 KiB record) is fine.
        let mut tar = TB::new().file("f", b"x", 0o644).done();
        tar.extend_from_slice(&[0u8; 10240]);
        spool(&tar).unwrap();
    }

    // ---- write_diff ----------------------------------------------------------------------

    fn base_tar() -> Vec<u8> {
        TB::new()
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
}
