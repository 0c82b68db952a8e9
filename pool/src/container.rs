//! The container and volume model: validated names, container paths and the mounts a
//! container records, spelled on the command line as Docker spells them (`-v`, `--mount`).

use crate::error::{PoolError, Result};
use blkdrv_drivers::Bytes;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;

/// A volume name. Docker's rule (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`): it names an object in the
/// pool and appears in paths and messages, so nothing else is allowed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct VolumeName(String);

/// A container name, by the same rule as Docker's (`[a-zA-Z0-9][a-zA-Z0-9_.-]+`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContainerName(String);

/// A path inside a container's root filesystem: absolute, without `.`/`..` components, empty
/// components, NUL or control characters, and not the root itself. Kept as the user wrote it
/// minus redundant slashes; resolving it (symlinks in the writable layer included) happens
/// inside the root at mount time, never on the host.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ContainerPath(String);

/// Where a container mount's content comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum MountSource {
    /// A volume of the pool. `name: None` only as parsed from `-v /path` or `--mount
    /// type=volume` without a source: `container create` names it and records `anonymous`.
    /// `nocopy`: do not fill a new, empty volume from the image's directory at the target.
    Volume {
        name: Option<VolumeName>,
        anonymous: bool,
        nocopy: bool,
    },
    /// A host directory or file (absolute path), bind-mounted recursively.
    Bind { source: PathBuf },
    /// A fresh tmpfs, gone at unmount.
    Tmpfs {
        size: Option<Bytes>,
        /// Permission bits of its root (Docker's default 1777).
        mode: Option<u32>,
    },
}

/// One mount of a container, as `container create` records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountEntry {
    #[serde(flatten)]
    pub source: MountSource,
    pub target: ContainerPath,
    pub readonly: bool,
}

impl MountEntry {
    /// Parses Docker's `-v [SOURCE:]TARGET[:OPTIONS]`: SOURCE is a volume name or an absolute
    /// host path (bind), none means an anonymous volume; OPTIONS are `ro`, `rw`, `nocopy`
    /// (comma-separated). Anything else is an error naming what is wrong.
    pub fn from_volume_flag(spec: &str) -> Result<MountEntry> {
        let bad = |why: String| PoolError::Invalid(format!("invalid -v {}: {why}", quoted(spec)));
        let parts: Vec<&str> = spec.split(':').collect();
        if parts.iter().any(|p| p.is_empty()) {
            return Err(bad(
                "empty section between colons (the form is [SOURCE:]TARGET[:OPTIONS])".into(),
            ));
        }
        let (source, target, options) = match parts.as_slice() {
            [t] => (None, *t, None),
            // Docker's rule: `/data:ro` is a target with options but no source, which no
            // volume spec is (an anonymous volume takes no options).
            [t, o] if o.split(',').all(|w| VOLUME_FLAG_WORDS.contains(&w)) => {
                return Err(bad(format!(
                    "{} looks like options, but an anonymous volume ({}) takes none; write SOURCE:TARGET:OPTIONS",
                    quoted(o),
                    quoted(t)
                )))
            }
            [s, t] => (Some(*s), *t, None),
            [s, t, o] => (Some(*s), *t, Some(*o)),
            _ => {
                return Err(bad(
                    "too many colons (the form is [SOURCE:]TARGET[:OPTIONS])".into(),
                ))
            }
        };
        let target = ContainerPath::new(target).map_err(|e| bad(inner(e)))?;
        let source = match source {
            None => MountSource::Volume {
                name: None,
                anonymous: true,
                nocopy: false,
            },
            Some(s) if s.starts_with('/') => MountSource::Bind {
                source: PathBuf::from(s),
            },
            Some(s) => {
                let name = VolumeName::new(s).map_err(|e| {
                    let hint = if s.contains('/') || s.starts_with('.') {
                        "; to bind-mount a host directory, give its absolute path"
                    } else {
                        ""
                    };
                    bad(format!("{}{hint}", inner(e)))
                })?;
                MountSource::Volume {
                    name: Some(name),
                    anonymous: false,
                    nocopy: false,
                }
            }
        };
        let mut entry = MountEntry {
            source,
            target,
            readonly: false,
        };
        let Some(options) = options else {
            return Ok(entry);
        };
        let mut access: Option<&str> = None;
        let mut copy = false;
        for word in options.split(',') {
            match word {
                "ro" | "rw" => {
                    if let Some(prev) = access {
                        return Err(bad(format!(
                            "option {} given after {}: use one of ro, rw",
                            quoted(word),
                            quoted(prev)
                        )));
                    }
                    access = Some(word);
                    entry.readonly = word == "ro";
                }
                "nocopy" => {
                    if copy {
                        return Err(bad("option \"nocopy\" given twice".into()));
                    }
                    copy = true;
                    match &mut entry.source {
                        MountSource::Volume { nocopy, .. } => *nocopy = true,
                        _ => {
                            return Err(bad(
                                "option \"nocopy\" applies to volumes, not to a bind mount".into(),
                            ))
                        }
                    }
                }
                w => return Err(bad(unsupported_volume_word(w))),
            }
        }
        Ok(entry)
    }

    /// Parses Docker's `--mount type=volume|bind|tmpfs,source=...,target=...[,readonly]
    /// [,volume-nocopy][,tmpfs-size=SIZE][,tmpfs-mode=OCTAL]` (with Docker's aliases `src`,
    /// `dst`, `destination`, `ro`). Options of another mount type, a source on tmpfs, unknown
    /// keys and repeated keys are errors.
    pub fn from_mount_flag(spec: &str) -> Result<MountEntry> {
        let bad =
            |why: String| PoolError::Invalid(format!("invalid --mount {}: {why}", quoted(spec)));
        let mut fields: Vec<(MountKey, &'static str, Option<String>)> = Vec::new();
        for field in split_csv(spec).map_err(|e| bad(e.into()))? {
            let (key, value) = match field.split_once('=') {
                Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_string())),
                None => (field.to_ascii_lowercase(), None),
            };
            let Some((canon, k)) = MountKey::parse(&key) else {
                return Err(bad(format!(
                    "unknown key {} (known: type, source|src, target|dst|destination, readonly|ro, volume-nocopy, tmpfs-size, tmpfs-mode)",
                    quoted(&key)
                )));
            };
            if let Some((_, first, _)) = fields.iter().find(|(f, _, _)| *f == k) {
                let how = if *first == canon {
                    format!("key {} given twice", quoted(canon))
                } else {
                    format!("key {} repeats {}", quoted(canon), quoted(first))
                };
                return Err(bad(how));
            }
            if value.is_none() && !k.is_bool() {
                return Err(bad(format!(
                    "field {} must be a key=value pair",
                    quoted(&field)
                )));
            }
            fields.push((k, canon, value));
        }
        let get = |k: MountKey| {
            fields
                .iter()
                .find(|(f, _, _)| *f == k)
                .map(|(_, canon, v)| (*canon, v.as_deref()))
        };
        let kind = match get(MountKey::Type).and_then(|(_, v)| v) {
            // Docker's default.
            None => "volume".to_string(),
            Some(t) => t.to_ascii_lowercase(),
        };
        let family = match kind.as_str() {
            "volume" | "bind" | "tmpfs" => kind.as_str(),
            "npipe" | "cluster" | "image" => {
                return Err(bad(format!(
                    "mount type {} is not supported (blkdrv has volume, bind, tmpfs)",
                    quoted(&kind)
                )))
            }
            _ => {
                return Err(bad(format!(
                    "unknown mount type {} (known: volume, bind, tmpfs)",
                    quoted(&kind)
                )))
            }
        };
        // Docker's rule: a `volume-*`, `bind-*` or `tmpfs-*` key only with its own type.
        for (k, canon, _) in &fields {
            if let Some(f) = k.family() {
                if f != family {
                    return Err(bad(format!(
                        "{} is an option of type={f} mounts, not of type={family}",
                        quoted(canon)
                    )));
                }
            }
            if let Some(what) = k.unsupported() {
                return Err(bad(format!("{} is not supported: {what}", quoted(canon))));
            }
        }
        let flag = |k: MountKey| -> Result<bool> {
            match get(k) {
                None => Ok(false),
                Some((_, None)) => Ok(true),
                Some((canon, Some(v))) => parse_bool(v).ok_or_else(|| {
                    bad(format!(
                        "{}={} is not a boolean (true or false)",
                        canon,
                        quoted(v)
                    ))
                }),
            }
        };
        let readonly = flag(MountKey::Readonly)?;
        let target = match get(MountKey::Target) {
            Some((_, Some(t))) if !t.is_empty() => {
                ContainerPath::new(t).map_err(|e| bad(inner(e)))?
            }
            _ => return Err(bad("target is required (target=/path)".into())),
        };
        let src = get(MountKey::Source)
            .and_then(|(_, v)| v)
            .filter(|v| !v.is_empty());
        let source = match family {
            "volume" => {
                let nocopy = flag(MountKey::VolumeNocopy)?;
                match src {
                    None => MountSource::Volume {
                        name: None,
                        anonymous: true,
                        nocopy,
                    },
                    Some(s) if s.starts_with('/') => {
                        return Err(bad(format!(
                            "source {} is a path, not a volume name; for a host directory use type=bind",
                            quoted(s)
                        )))
                    }
                    Some(s) => MountSource::Volume {
                        name: Some(VolumeName::new(s).map_err(|e| bad(inner(e)))?),
                        anonymous: false,
                        nocopy,
                    },
                }
            }
            "bind" => match src {
                None => return Err(bad("a bind mount needs a source (source=/host/path)".into())),
                Some(s) if !s.starts_with('/') => {
                    return Err(bad(format!(
                        "bind source {} must be an absolute path",
                        quoted(s)
                    )))
                }
                Some(s) => MountSource::Bind {
                    source: PathBuf::from(s),
                },
            },
            _ => {
                if let Some(s) = src {
                    return Err(bad(format!(
                        "a tmpfs mount takes no source (got {})",
                        quoted(s)
                    )));
                }
                let size = match get(MountKey::TmpfsSize).and_then(|(_, v)| v) {
                    None => None,
                    Some(v) => {
                        let b: Bytes = v.parse().map_err(|e: blkdrv_drivers::ParseSizeError| {
                            bad(format!("tmpfs-size: {e}"))
                        })?;
                        if b == Bytes::ZERO {
                            // size=0 is no limit to the kernel, surely not what was meant.
                            return Err(bad("tmpfs-size must be more than 0".into()));
                        }
                        Some(b)
                    }
                };
                let mode = match get(MountKey::TmpfsMode).and_then(|(_, v)| v) {
                    None => None,
                    Some(v) => Some(
                        u32::from_str_radix(v, 8)
                            .ok()
                            .filter(|m| *m <= 0o7777 && !v.starts_with('+'))
                            .ok_or_else(|| {
                                bad(format!(
                                    "tmpfs-mode {} is not an octal mode (0 to 7777, e.g. 1777)",
                                    quoted(v)
                                ))
                            })?,
                    ),
                };
                MountSource::Tmpfs { size, mode }
            }
        };
        Ok(MountEntry {
            source,
            target,
            readonly,
        })
    }

    /// Refuses two mounts on one target (Docker's "duplicate mount point"): the second would
    /// hide the first.
    pub fn check_distinct_targets(mounts: &[MountEntry]) -> Result<()> {
        for (i, m) in mounts.iter().enumerate() {
            if mounts[..i].iter().any(|o| o.target == m.target) {
                return Err(PoolError::Invalid(format!(
                    "duplicate mount point {}: two mounts on one target",
                    quoted(m.target.as_str())
                )));
            }
        }
        Ok(())
    }
}

/// The words Docker accepts after `-v SOURCE:TARGET:`: blkdrv takes `ro`, `rw`, `nocopy`.
const VOLUME_FLAG_WORDS: &[&str] = &[
    "ro",
    "rw",
    "nocopy",
    "z",
    "Z",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "private",
    "rprivate",
    "consistent",
    "cached",
    "delegated",
];

/// Why a `-v` option word is refused: Docker's words blkdrv does not do, said as such (never
/// ignored), or a word Docker does not know either.
fn unsupported_volume_word(w: &str) -> String {
    match w {
        "z" | "Z" => format!(
            "option {} (SELinux relabelling) is not supported; blkdrv takes ro, rw, nocopy",
            quoted(w)
        ),
        "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" => format!(
            "option {} (mount propagation) is not supported: blkdrv's bind mounts are always rprivate",
            quoted(w)
        ),
        "consistent" | "cached" | "delegated" => format!(
            "option {} (Docker Desktop's consistency) is not supported; blkdrv takes ro, rw, nocopy",
            quoted(w)
        ),
        _ => format!(
            "unknown option {} (known: ro, rw, nocopy)",
            quoted(w)
        ),
    }
}

/// The keys of `--mount`, aliases folded together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum MountKey {
    Type,
    Source,
    Target,
    Readonly,
    VolumeNocopy,
    TmpfsSize,
    TmpfsMode,
    /// Docker's keys blkdrv does not do (refused, never ignored).
    Consistency,
    BindPropagation,
    BindNonrecursive,
    BindRecursive,
    BindCreateSrc,
    VolumeDriver,
    VolumeLabel,
    VolumeOpt,
    VolumeSubpath,
    TmpfsOption,
}

impl MountKey {
    /// The key for `key` (lowercase) and its canonical spelling.
    fn parse(key: &str) -> Option<(&'static str, MountKey)> {
        use MountKey::*;
        Some(match key {
            "type" => ("type", Type),
            "source" => ("source", Source),
            "src" => ("src", Source),
            "target" => ("target", Target),
            "dst" => ("dst", Target),
            "destination" => ("destination", Target),
            "readonly" => ("readonly", Readonly),
            "ro" => ("ro", Readonly),
            "volume-nocopy" => ("volume-nocopy", VolumeNocopy),
            "tmpfs-size" => ("tmpfs-size", TmpfsSize),
            "tmpfs-mode" => ("tmpfs-mode", TmpfsMode),
            "consistency" => ("consistency", Consistency),
            "bind-propagation" => ("bind-propagation", BindPropagation),
            "bind-nonrecursive" => ("bind-nonrecursive", BindNonrecursive),
            "bind-recursive" => ("bind-recursive", BindRecursive),
            "bind-create-src" => ("bind-create-src", BindCreateSrc),
            "volume-driver" => ("volume-driver", VolumeDriver),
            "volume-label" => ("volume-label", VolumeLabel),
            "volume-opt" => ("volume-opt", VolumeOpt),
            "volume-subpath" => ("volume-subpath", VolumeSubpath),
            "tmpfs-options" => ("tmpfs-options", TmpfsOption),
            _ => return None,
        })
    }

    /// Keys Docker lets stand alone (`readonly` for `readonly=true`).
    fn is_bool(self) -> bool {
        matches!(
            self,
            MountKey::Readonly
                | MountKey::VolumeNocopy
                | MountKey::BindNonrecursive
                | MountKey::BindCreateSrc
        )
    }

    /// The mount type a key belongs to, for those that belong to one.
    fn family(self) -> Option<&'static str> {
        use MountKey::*;
        match self {
            VolumeNocopy | VolumeDriver | VolumeLabel | VolumeOpt | VolumeSubpath => Some("volume"),
            BindPropagation | BindNonrecursive | BindRecursive | BindCreateSrc => Some("bind"),
            TmpfsSize | TmpfsMode | TmpfsOption => Some("tmpfs"),
            Type | Source | Target | Readonly | Consistency => None,
        }
    }

    /// Why blkdrv refuses a key Docker knows.
    fn unsupported(self) -> Option<&'static str> {
        use MountKey::*;
        match self {
            Consistency => Some("a Docker Desktop option"),
            BindPropagation => Some("blkdrv's bind mounts are always rprivate"),
            BindNonrecursive | BindRecursive => Some("blkdrv's bind mounts are always recursive"),
            BindCreateSrc => Some("the bind source must exist"),
            VolumeDriver | VolumeOpt => Some("volumes are the pool driver's own"),
            VolumeLabel => Some("label volumes with `blkdrv volume create --label`"),
            VolumeSubpath => Some("a volume is mounted whole"),
            TmpfsOption => Some("use tmpfs-size and tmpfs-mode"),
            _ => None,
        }
    }
}

/// Go's strconv.ParseBool, which Docker uses for `readonly=` and friends.
fn parse_bool(v: &str) -> Option<bool> {
    match v {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

/// One CSV record, as Docker reads `--mount`: fields split at commas, a field in double
/// quotes may hold commas (`"source=/a,b"`) and doubled quotes.
fn split_csv(s: &str) -> std::result::Result<Vec<String>, &'static str> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars().peekable();
    let mut quoted_field = false;
    let mut in_quotes = false;
    while let Some(c) = chars.next() {
        if in_quotes {
            if c == '"' {
                if chars.peek() == Some(&'"') {
                    chars.next();
                    cur.push('"');
                } else {
                    in_quotes = false;
                }
            } else {
                cur.push(c);
            }
            continue;
        }
        match c {
            '"' if cur.is_empty() && !quoted_field => {
                in_quotes = true;
                quoted_field = true;
            }
            '"' => return Err("a quote inside a field (quote the whole field)"),
            ',' => {
                out.push(std::mem::take(&mut cur));
                quoted_field = false;
            }
            c if quoted_field => {
                let _ = c;
                return Err("text after a quoted field's closing quote");
            }
            c => cur.push(c),
        }
    }
    if in_quotes {
        return Err("a quote that is never closed");
    }
    out.push(cur);
    if out.iter().any(|f| f.is_empty()) {
        return Err("an empty field (two commas in a row, or one at an end)");
    }
    Ok(out)
}

/// The text of a validation error, to put inside another.
fn inner(e: PoolError) -> String {
    match e {
        PoolError::Invalid(m) => m,
        e => e.to_string(),
    }
}

/// Text from the command line inside an error message: quoted, control characters escaped.
fn quoted(s: &str) -> String {
    format!("\"{}\"", crate::text::escape_controls(s))
}

fn validate_docker_name(what: &str, s: &str) -> Result<()> {
    let ok_first = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    let ok_rest = s
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if s.len() < 2 || s.len() > crate::layer::MAX_NAME_BYTES || !ok_first || !ok_rest {
        return Err(PoolError::Invalid(format!(
            "invalid {what} name {:?}: use 2 to {} characters of [a-zA-Z0-9_.-], starting with a letter or digit",
            crate::text::escape_controls(s),
            crate::layer::MAX_NAME_BYTES
        )));
    }
    Ok(())
}

macro_rules! docker_name {
    ($t:ident, $what:literal) => {
        impl $t {
            pub fn new(s: &str) -> Result<$t> {
                validate_docker_name($what, s).map(|()| $t(s.to_string()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl TryFrom<String> for $t {
            type Error = PoolError;
            fn try_from(s: String) -> Result<$t> {
                $t::new(&s)
            }
        }

        impl From<$t> for String {
            fn from(n: $t) -> String {
                n.0
            }
        }
    };
}

docker_name!(VolumeName, "volume");
docker_name!(ContainerName, "container");

impl ContainerPath {
    pub fn new(s: &str) -> Result<ContainerPath> {
        let bad = |why: &str| {
            Err(PoolError::Invalid(format!(
                "invalid container path {:?}: {why}",
                crate::text::escape_controls(s)
            )))
        };
        if !s.starts_with('/') {
            return bad("must be absolute");
        }
        if s.chars().any(|c| c == '\0' || c.is_control()) {
            return bad("contains a control character");
        }
        let parts: Vec<&str> = s.split('/').filter(|p| !p.is_empty()).collect();
        if parts.is_empty() {
            return bad("is the container's root");
        }
        if parts.iter().any(|p| *p == "." || *p == "..") {
            return bad("must not contain '.' or '..' components");
        }
        Ok(ContainerPath(format!("/{}", parts.join("/"))))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The components below the root, in order.
    pub fn components(&self) -> impl Iterator<Item = &str> {
        self.0.split('/').filter(|p| !p.is_empty())
    }

    /// Whether `self` lies strictly below `other` (`/a/b` below `/a`, not below `/ab`).
    pub fn is_below(&self, other: &ContainerPath) -> bool {
        self.0.len() > other.0.len()
            && self.0.starts_with(&other.0)
            && self.0.as_bytes()[other.0.len()] == b'/'
    }
}

impl fmt::Display for ContainerPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ContainerPath {
    type Error = PoolError;
    fn try_from(s: String) -> Result<ContainerPath> {
        ContainerPath::new(&s)
    }
}

impl From<ContainerPath> for String {
    fn from(p: ContainerPath) -> String {
        p.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_dockers_rule() {
        for ok in ["db", "my-vol_1.0", "A1"] {
            assert!(VolumeName::new(ok).is_ok(), "{ok}");
            assert!(ContainerName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a", "a/b", "-x", ".x", "_x", "a b", "a:b", "é1"] {
            assert!(VolumeName::new(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn container_paths_stay_inside_the_root() {
        assert_eq!(ContainerPath::new("/data//x/").unwrap().as_str(), "/data/x");
        for bad in [
            "",
            "data",
            "../../etc",
            "/",
            "//",
            "/a/../b",
            "/a/./b",
            "/a\nb",
        ] {
            assert!(ContainerPath::new(bad).is_err(), "{bad:?} accepted");
        }
        let (a, ab, ax) = (
            ContainerPath::new("/a").unwrap(),
            ContainerPath::new("/ab").unwrap(),
            ContainerPath::new("/a/x").unwrap(),
        );
        assert!(ax.is_below(&a) && !ab.is_below(&a) && !a.is_below(&a));
    }

    fn vol(name: Option<&str>, anonymous: bool, nocopy: bool) -> MountSource {
        MountSource::Volume {
            name: name.map(|n| VolumeName::new(n).unwrap()),
            anonymous,
            nocopy,
        }
    }

    fn entry(source: MountSource, target: &str, readonly: bool) -> MountEntry {
        MountEntry {
            source,
            target: ContainerPath::new(target).unwrap(),
            readonly,
        }
    }

    fn v(spec: &str) -> MountEntry {
        MountEntry::from_volume_flag(spec).unwrap_or_else(|e| panic!("-v {spec:?}: {e}"))
    }

    fn m(spec: &str) -> MountEntry {
        MountEntry::from_mount_flag(spec).unwrap_or_else(|e| panic!("--mount {spec:?}: {e}"))
    }

    /// The error for a bad spec: Invalid, one line, and containing each of `says`.
    fn refused(r: Result<MountEntry>, spec: &str, says: &[&str]) {
        match r {
            Err(PoolError::Invalid(msg)) => {
                assert!(!msg.contains('\n'), "{spec:?}: two lines: {msg}");
                for s in says {
                    assert!(msg.contains(s), "{spec:?}: {msg:?} does not say {s:?}");
                }
            }
            other => panic!("{spec:?}: not refused as Invalid: {other:?}"),
        }
    }

    #[test]
    fn volume_flag_forms() {
        assert_eq!(
            v("db:/var/lib/db"),
            entry(vol(Some("db"), false, false), "/var/lib/db", false)
        );
        assert_eq!(
            v("db:/data:ro"),
            entry(vol(Some("db"), false, false), "/data", true)
        );
        assert_eq!(
            v("db:/data:rw"),
            entry(vol(Some("db"), false, false), "/data", false)
        );
        assert_eq!(
            v("db:/data:nocopy"),
            entry(vol(Some("db"), false, true), "/data", false)
        );
        assert_eq!(
            v("db:/data:ro,nocopy"),
            entry(vol(Some("db"), false, true), "/data", true)
        );
        assert_eq!(
            v("db:/data:nocopy,ro"),
            entry(vol(Some("db"), false, true), "/data", true)
        );
        assert_eq!(v("/data"), entry(vol(None, true, false), "/data", false));
        assert_eq!(
            v("/data//x/"),
            entry(vol(None, true, false), "/data/x", false)
        );
        let bind = |p: &str| MountSource::Bind {
            source: PathBuf::from(p),
        };
        assert_eq!(
            v("/srv/site:/usr/share/www"),
            entry(bind("/srv/site"), "/usr/share/www", false)
        );
        assert_eq!(
            v("/srv/site:/www:ro"),
            entry(bind("/srv/site"), "/www", true)
        );
        assert_eq!(
            v("/etc/hosts:/etc/hosts:ro"),
            entry(bind("/etc/hosts"), "/etc/hosts", true)
        );
    }

    #[test]
    fn volume_flag_refuses_escaping_targets() {
        for spec in [
            "vol:../../etc",
            "vol:data",
            "vol:/a/../../etc",
            "../x",
            "vol:/",
            "vol:/a/./b",
        ] {
            refused(
                MountEntry::from_volume_flag(spec),
                spec,
                &["invalid container path"],
            );
        }
        refused(
            MountEntry::from_volume_flag("vol:../../etc"),
            "",
            &["\"vol:../../etc\"", "absolute"],
        );
    }

    #[test]
    fn volume_flag_refuses_relative_sources_and_bad_names() {
        for spec in ["./x:/data", "x/y:/data", "../up:/data", ".hidden:/data"] {
            refused(
                MountEntry::from_volume_flag(spec),
                spec,
                &["invalid volume name", "absolute path"],
            );
        }
        refused(
            MountEntry::from_volume_flag("a:/data"),
            "a:/data",
            &["invalid volume name"],
        );
        refused(
            MountEntry::from_volume_flag("my vol:/data"),
            "",
            &["invalid volume name"],
        );
    }

    #[test]
    fn volume_flag_refuses_bad_shapes_and_options() {
        for (spec, says) in [
            (":/data", "empty section"),
            ("vol::ro", "empty section"),
            ("vol:/data:", "empty section"),
            ("", "empty section"),
            ("a:/b:ro:x", "too many colons"),
            ("/data:ro", "anonymous volume"),
            ("/data:ro,nocopy", "anonymous volume"),
            ("vol:/data:ro,rw", "use one of ro, rw"),
            ("vol:/data:ro,ro", "use one of ro, rw"),
            ("vol:/data:nocopy,nocopy", "twice"),
            ("vol:/data:rx", "unknown option \"rx\""),
            ("vol:/data:ro,", "unknown option \"\""),
            ("vol:/data:z", "SELinux"),
            ("vol:/data:Z", "SELinux"),
            ("/h:/data:rshared", "propagation"),
            ("/h:/data:ro,private", "propagation"),
            ("vol:/data:cached", "consistency"),
            ("/host:/data:nocopy", "not to a bind"),
        ] {
            refused(MountEntry::from_volume_flag(spec), spec, &[says]);
        }
    }

    #[test]
    fn errors_escape_control_characters() {
        let r = MountEntry::from_volume_flag("vol:/data:\x1b[31mro");
        refused(r, "esc", &["\\x1b[31m"]);
        let Err(PoolError::Invalid(msg)) = MountEntry::from_mount_flag("type=vol\nume,target=/x")
        else {
            panic!("accepted");
        };
        assert!(!msg.contains('\n') && msg.contains("vol\\nume"), "{msg}");
    }

    #[test]
    fn mount_flag_forms() {
        assert_eq!(
            m("type=volume,source=db,target=/data"),
            entry(vol(Some("db"), false, false), "/data", false)
        );
        assert_eq!(
            m("type=volume,src=db,dst=/data,readonly"),
            entry(vol(Some("db"), false, false), "/data", true)
        );
        assert_eq!(
            m("type=volume,src=db,destination=/data,ro=true"),
            entry(vol(Some("db"), false, false), "/data", true)
        );
        assert_eq!(
            m("type=volume,src=db,target=/data,readonly=false"),
            entry(vol(Some("db"), false, false), "/data", false)
        );
        assert_eq!(
            m("type=volume,src=db,target=/data,readonly=0"),
            entry(vol(Some("db"), false, false), "/data", false)
        );
        assert_eq!(
            m("type=volume,src=db,target=/data,volume-nocopy"),
            entry(vol(Some("db"), false, true), "/data", false)
        );
        assert_eq!(
            m("type=volume,src=db,target=/data,volume-nocopy=true"),
            entry(vol(Some("db"), false, true), "/data", false)
        );
        assert_eq!(
            m("type=volume,src=db,target=/data,volume-nocopy=false"),
            entry(vol(Some("db"), false, false), "/data", false)
        );
        // Docker's default type is volume; no source is an anonymous one.
        assert_eq!(
            m("target=/data"),
            entry(vol(None, true, false), "/data", false)
        );
        assert_eq!(
            m("type=volume,target=/data"),
            entry(vol(None, true, false), "/data", false)
        );
        assert_eq!(
            m("type=volume,source=,target=/data"),
            entry(vol(None, true, false), "/data", false)
        );
        // Keys and the type are case-insensitive, as in Docker; values are not.
        assert_eq!(
            m("Type=VOLUME,Source=DB,Target=/Data"),
            entry(vol(Some("DB"), false, false), "/Data", false)
        );
        assert_eq!(
            m("type=bind,source=/srv/x,target=/x,readonly"),
            entry(
                MountSource::Bind {
                    source: PathBuf::from("/srv/x")
                },
                "/x",
                true
            )
        );
        assert_eq!(
            m("type=tmpfs,target=/run/cache"),
            entry(
                MountSource::Tmpfs {
                    size: None,
                    mode: None
                },
                "/run/cache",
                false
            )
        );
        assert_eq!(
            m("type=tmpfs,target=/t,tmpfs-size=64m,tmpfs-mode=0700,readonly"),
            entry(
                MountSource::Tmpfs {
                    size: Some(Bytes::mib(64)),
                    mode: Some(0o700)
                },
                "/t",
                true
            )
        );
        assert_eq!(
            m("type=tmpfs,dst=/t,tmpfs-mode=1777,tmpfs-size=1048576"),
            entry(
                MountSource::Tmpfs {
                    size: Some(Bytes::mib(1)),
                    mode: Some(0o1777)
                },
                "/t",
                false
            )
        );
        // A quoted CSV field may hold a comma.
        assert_eq!(
            m("type=bind,\"source=/srv/a,b\",target=/x"),
            entry(
                MountSource::Bind {
                    source: PathBuf::from("/srv/a,b")
                },
                "/x",
                false
            )
        );
    }

    #[test]
    fn mount_flag_refusals() {
        for (spec, says) in [
            ("type=nfs,target=/x", "unknown mount type \"nfs\""),
            ("type=npipe,target=/x", "not supported"),
            ("type=image,source=x,target=/x", "not supported"),
            ("type=volume,source=db", "target is required"),
            ("type=volume,source=db,target=", "target is required"),
            (
                "type=volume,source=db,target=../../etc",
                "invalid container path",
            ),
            ("type=volume,source=db,target=data", "must be absolute"),
            (
                "type=bind,source=/h,target=/a/../../etc",
                "invalid container path",
            ),
            (
                "type=volume,source=db,target=/x,color=red",
                "unknown key \"color\"",
            ),
            (
                "type=volume,source=db,target=/x,target=/y",
                "key \"target\" given twice",
            ),
            ("type=volume,src=db,source=db,target=/y", "repeats \"src\""),
            ("type=volume,type=bind,target=/y", "given twice"),
            ("type=volume,source=db,target=/x,ro,readonly", "repeats"),
            (
                "type=volume,source=db,target=/x,readonly=yes",
                "not a boolean",
            ),
            (
                "type=volume,source=db,target=/x,volume-nocopy=2",
                "not a boolean",
            ),
            ("type,source=db,target=/x", "key=value pair"),
            ("type=volume,source,target=/x", "key=value pair"),
            ("type=tmpfs,source=foo,target=/x", "takes no source"),
            (
                "type=tmpfs,target=/x,volume-nocopy",
                "type=volume mounts, not of type=tmpfs",
            ),
            (
                "type=bind,source=/h,target=/x,tmpfs-size=1m",
                "type=tmpfs mounts, not of type=bind",
            ),
            (
                "type=volume,source=v,target=/x,tmpfs-mode=700",
                "type=tmpfs mounts, not of type=volume",
            ),
            (
                "type=volume,source=v,target=/x,bind-propagation=rshared",
                "type=bind mounts",
            ),
            (
                "type=bind,source=/h,target=/x,bind-propagation=rshared",
                "rprivate",
            ),
            (
                "type=bind,source=/h,target=/x,bind-nonrecursive",
                "recursive",
            ),
            (
                "type=volume,source=v,target=/x,volume-driver=local",
                "not supported",
            ),
            (
                "type=volume,source=v,target=/x,volume-subpath=a",
                "not supported",
            ),
            (
                "type=volume,source=v,target=/x,consistency=cached",
                "not supported",
            ),
            ("type=bind,target=/x", "needs a source"),
            ("type=bind,source=rel/dir,target=/x", "absolute"),
            ("type=bind,source=./x,target=/x", "absolute"),
            ("type=volume,source=/host,target=/x", "type=bind"),
            ("type=volume,source=a/b,target=/x", "invalid volume name"),
            ("type=tmpfs,target=/x,tmpfs-size=big", "invalid size"),
            ("type=tmpfs,target=/x,tmpfs-size=0", "more than 0"),
            ("type=tmpfs,target=/x,tmpfs-mode=999", "octal"),
            ("type=tmpfs,target=/x,tmpfs-mode=17777", "octal"),
            ("type=tmpfs,target=/x,tmpfs-mode=+7", "octal"),
            ("type=volume,,target=/x", "empty field"),
            ("type=volume,target=/x,", "empty field"),
            ("", "empty field"),
            ("type=bind,\"source=/a,target=/x", "never closed"),
            ("type=bind,\"source=/a\"x,target=/x", "closing quote"),
        ] {
            refused(MountEntry::from_mount_flag(spec), spec, &[says]);
        }
    }

    #[test]
    fn duplicate_targets_are_refused() {
        let a = v("db:/data");
        let b = m("type=tmpfs,target=/data/");
        let c = v("/other");
        assert!(MountEntry::check_distinct_targets(&[a.clone(), c.clone()]).is_ok());
        let Err(PoolError::Invalid(msg)) = MountEntry::check_distinct_targets(&[a, c, b]) else {
            panic!("accepted");
        };
        assert!(msg.contains("\"/data\""), "{msg}");
    }

    #[test]
    fn entries_round_trip_through_json() {
        for e in [
            v("db:/data:ro,nocopy"),
            v("/anon"),
            v("/h:/x"),
            m("type=tmpfs,target=/t,tmpfs-size=1m,tmpfs-mode=755"),
        ] {
            let j = serde_json::to_string(&e).unwrap();
            assert_eq!(serde_json::from_str::<MountEntry>(&j).unwrap(), e, "{j}");
        }
    }
}
