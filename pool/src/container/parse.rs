//! Docker's `-v` and `--mount` spellings of a container's mounts.

use super::*;

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
