//! One tar entry, read as hostile input: its path normalised and checked, its type classified
//! (whiteouts, opaque directories and the layer root included), its PAX xattr records parsed by
//! length and filtered, and its header metadata read. Shared by spooling and applying, so both
//! refuse exactly the same entries.

use crate::error::{entry_err, Error, Result};
use crate::escape::escape_controls;
use crate::meta::{Owner, Xattr};
use nix::sys::time::TimeSpec;
use std::collections::BTreeMap;
use std::ffi::{CString, OsStr};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

pub(crate) const WH_PREFIX: &[u8] = b".wh.";
const WH_META_PREFIX: &[u8] = b".wh..wh.";
const WH_OPAQUE: &[u8] = b".wh..wh..opq";
const PAX_XATTR: &[u8] = b"SCHILY.xattr.";
/// Linux limits (XATTR_NAME_MAX, XATTR_SIZE_MAX): larger ones cannot be set anywhere.
const XATTR_NAME_MAX: usize = 255;
pub(crate) const XATTR_SIZE_MAX: usize = 64 * 1024;

/// What an entry is, once classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Kind {
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
pub(crate) struct Item {
    /// The entry path as written in the tar, for error messages.
    pub(crate) name: String,
    pub(crate) rel: PathBuf,
    pub(crate) kind: Kind,
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

pub(crate) fn classify<R: Read>(entry: &tar::Entry<'_, R>) -> Result<Item> {
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
pub(crate) fn self_and_ancestors(p: &Path) -> impl Iterator<Item = &Path> {
    p.ancestors().filter(|a| !a.as_os_str().is_empty())
}

/// The directory whose chain of components an item needs to traverse.
pub(crate) fn traversed_dir(item: &Item) -> &Path {
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
pub(crate) fn xattr_misfit(kind: &Kind, name: &[u8]) -> Option<&'static str> {
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
pub(crate) fn entry_xattrs(pax: Option<&[u8]>, name: &str) -> Result<Vec<Xattr>> {
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

/// The refusal of a device node entry (char or block), None for any other kind.
pub(crate) fn device_refused(name: &str, kind: &Kind) -> Option<Error> {
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

/// Parses a PAX time ("1700000000", "1700000000.5", "-1.25").
pub(crate) fn parse_pax_time(v: &str) -> Option<TimeSpec> {
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

/// The metadata an entry's header (and PAX records) give its path.
pub(crate) struct HeaderMeta {
    pub(crate) mode: u32,
    pub(crate) owner: Owner,
    pub(crate) mtime: TimeSpec,
    pub(crate) xattrs: Vec<Xattr>,
}

/// A numeric header field; one left blank (all NUL or spaces, as some writers do) reads as 0.
fn field<T: Default>(name: &str, what: &str, raw: &[u8], parsed: io::Result<T>) -> Result<T> {
    match parsed {
        Ok(v) => Ok(v),
        Err(_) if raw.iter().all(|b| *b == 0 || *b == b' ') => Ok(T::default()),
        Err(_) => Err(entry_err(name, format!("bad {what} field"))),
    }
}

pub(crate) fn entry_meta<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    name: &str,
    pax: Option<&[u8]>,
) -> Result<HeaderMeta> {
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
    Ok(HeaderMeta {
        mode,
        owner: Owner { uid, gid },
        mtime,
        xattrs,
    })
}
