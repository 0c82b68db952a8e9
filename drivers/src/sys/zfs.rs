//! OpenZFS through its command-line tools (`zfs`, `zpool`), typed.
//!
//! Why the tools and not a library binding:
//! - libzfs_core, the stable C API, would link every blkdrv binary against libzfs_core.so from
//!   Debian contrib, also on hosts that never run ZFS; and it has no mount, list or property
//!   reads, which live in libzfs, whose soname changes between releases (.so.4 in 2.1, .so.6 in
//!   2.3).
//! - The registry's `libzfs-sys` binds ZFS 0.7 and segfaulted in our probe on a host without
//!   /dev/zfs.
//! - containerd's and moby's ZFS drivers drive the tools too (through go-zfs).
//!
//! Every command goes through [`exec::run`]. Output is read in the scripted form (`-H`: no
//! headers, tab-separated; `-p`: exact numbers), and names are validated newtypes, so nothing
//! that reaches a command line can be taken for an option or for another object.

use super::exec;
use crate::error::{DriverError, Result};
use crate::Bytes;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const ZFS: &str = "zfs";
pub const ZPOOL: &str = "zpool";

/// Longest dataset or snapshot name (ZFS_MAX_DATASET_NAME_LEN without the NUL).
pub const MAX_NAME: usize = 255;
/// Longest pool name: the kernel keeps room for "<pool>/$ORIGIN@$ORIGIN" (zfs_namecheck.c).
const MAX_POOL_NAME: usize = 256 - 2 - 2 * "$ORIGIN".len() - 1;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid ZFS {kind} name {name:?}: {reason}")]
pub struct InvalidName {
    pub kind: &'static str,
    pub name: String,
    pub reason: String,
}

fn invalid(kind: &'static str, name: &str, reason: impl Into<String>) -> InvalidName {
    InvalidName {
        kind,
        name: name.to_string(),
        reason: reason.into(),
    }
}

/// One component of a name. ZFS also allows spaces; blkdrv does not, so names survive
/// mountinfo escaping and whitespace-split output unchanged.
fn check_component(kind: &'static str, whole: &str, c: &str) -> Result<(), InvalidName> {
    if c.is_empty() {
        return Err(invalid(kind, whole, "empty component"));
    }
    if c == "." || c == ".." {
        return Err(invalid(kind, whole, format!("component {c:?} is reserved")));
    }
    if let Some(bad) = c
        .chars()
        .find(|ch| !(ch.is_ascii_alphanumeric() || matches!(ch, '-' | '_' | '.' | ':')))
    {
        return Err(invalid(
            kind,
            whole,
            format!("character {bad:?} is not allowed (letters, digits, - _ . :)"),
        ));
    }
    Ok(())
}

/// A zpool name, checked as the kernel checks it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ZpoolName(String);

impl ZpoolName {
    pub fn new(s: &str) -> Result<ZpoolName, InvalidName> {
        check_component("pool", s, s)?;
        if s.len() > MAX_POOL_NAME {
            return Err(invalid(
                "pool",
                s,
                format!("longer than {MAX_POOL_NAME} characters"),
            ));
        }
        if !s.starts_with(|c: char| c.is_ascii_alphabetic()) {
            return Err(invalid("pool", s, "must start with a letter"));
        }
        if matches!(s, "mirror" | "raidz" | "draid") {
            return Err(invalid("pool", s, "the name is reserved"));
        }
        Ok(ZpoolName(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The pool's root dataset.
    pub fn root(&self) -> Dataset {
        Dataset(self.0.clone())
    }
}

impl std::str::FromStr for ZpoolName {
    type Err = InvalidName;
    fn from_str(s: &str) -> Result<ZpoolName, InvalidName> {
        ZpoolName::new(s)
    }
}

impl fmt::Display for ZpoolName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A filesystem or volume name (`pool/a/b`): no snapshot or bookmark part.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Dataset(String);

impl Dataset {
    pub fn new(s: &str) -> Result<Dataset, InvalidName> {
        if s.len() > MAX_NAME {
            return Err(invalid(
                "dataset",
                s,
                format!("longer than {MAX_NAME} characters"),
            ));
        }
        let mut parts = s.split('/');
        let pool = parts.next().unwrap_or_default();
        ZpoolName::new(pool).map_err(|e| invalid("dataset", s, e.reason))?;
        for c in parts {
            check_component("dataset", s, c)?;
        }
        Ok(Dataset(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn pool(&self) -> ZpoolName {
        ZpoolName(self.0.split('/').next().unwrap_or_default().to_string())
    }

    /// The last component.
    pub fn leaf(&self) -> &str {
        self.0.rsplit('/').next().unwrap_or_default()
    }

    pub fn child(&self, leaf: &str) -> Result<Dataset, InvalidName> {
        check_component("dataset", leaf, leaf)?;
        Dataset::new(&format!("{}/{leaf}", self.0))
    }

    pub fn snapshot(&self, name: &str) -> Result<Snapshot, InvalidName> {
        let whole = format!("{}@{name}", self.0);
        check_component("snapshot", &whole, name)?;
        if whole.len() > MAX_NAME {
            return Err(invalid(
                "snapshot",
                &whole,
                format!("longer than {MAX_NAME} characters"),
            ));
        }
        Ok(Snapshot(whole))
    }
}

impl std::str::FromStr for Dataset {
    type Err = InvalidName;
    fn from_str(s: &str) -> Result<Dataset, InvalidName> {
        Dataset::new(s)
    }
}

impl fmt::Display for Dataset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// `dataset@name`, only made from a valid [`Dataset`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Snapshot(String);

impl Snapshot {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Snapshot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Property values of one pool or dataset, from `get -Hp -o property,value`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Props {
    object: String,
    values: BTreeMap<String, String>,
}

impl Props {
    /// Parses `-o property,value` output about one object.
    pub fn parse(object: &str, text: &str) -> Result<Props> {
        let mut values = BTreeMap::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (k, v) = line.split_once('\t').ok_or_else(|| DriverError::Kernel {
                op: "parse ZFS properties of",
                target: object.to_string(),
                message: format!("expected `property<TAB>value`, got {line:?}"),
            })?;
            values.insert(k.to_string(), v.to_string());
        }
        Ok(Props {
            object: object.to_string(),
            values,
        })
    }

    /// Parses `-o name,property,value` output about many objects, by name.
    pub fn parse_many(whole: &str, text: &str) -> Result<BTreeMap<String, Props>> {
        let mut by_name: BTreeMap<String, String> = BTreeMap::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            let (name, rest) = line.split_once('\t').ok_or_else(|| DriverError::Kernel {
                op: "parse ZFS properties of",
                target: whole.to_string(),
                message: format!("expected `name<TAB>property<TAB>value`, got {line:?}"),
            })?;
            let text = by_name.entry(name.to_string()).or_default();
            text.push_str(rest);
            text.push('\n');
        }
        by_name
            .into_iter()
            .map(|(name, text)| Props::parse(&name, &text).map(|p| (name, p)))
            .collect()
    }

    /// The value, or None when the property is missing or unset ("-").
    pub fn get(&self, prop: &str) -> Option<&str> {
        self.values
            .get(prop)
            .map(String::as_str)
            .filter(|v| *v != "-")
    }

    fn bad(&self, prop: &str, message: String) -> DriverError {
        DriverError::Kernel {
            op: "read ZFS property",
            target: format!("{prop} of {}", self.object),
            message,
        }
    }

    pub fn text(&self, prop: &str) -> Result<&str> {
        self.get(prop)
            .ok_or_else(|| self.bad(prop, "missing from the tool's output".into()))
    }

    pub fn num(&self, prop: &str) -> Result<u64> {
        let v = self.text(prop)?;
        v.parse()
            .map_err(|_| self.bad(prop, format!("{v:?} is not a whole number")))
    }

    pub fn bytes(&self, prop: &str) -> Result<Bytes> {
        self.num(prop).map(Bytes)
    }
}

/// What a failed `zfs`/`zpool` command said, for the cases callers act on. The tools have no
/// error codes beyond exit status 1, so this reads libzfs's messages (stable across releases).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// "dataset does not exist", "no such pool", "no such pool available".
    Missing,
    /// "dataset already exists", "pool already exists".
    Exists,
    /// EBUSY: "dataset is busy", "pool or dataset is busy", "pool is busy".
    Busy,
    /// `zfs destroy` of a filesystem whose snapshot has clones.
    DependentClones,
    /// A quota below what the dataset already uses.
    BelowUsage,
    /// "out of space": the pool (or a quota) has no room for the operation.
    NoSpace,
    Other,
}

pub fn classify(stderr: &str) -> Failure {
    if stderr.contains("dependent clones") {
        Failure::DependentClones
    } else if stderr.contains("does not exist") || stderr.contains("no such pool") {
        Failure::Missing
    } else if stderr.contains("already exists") {
        Failure::Exists
    } else if stderr.contains("busy") {
        Failure::Busy
    } else if stderr.contains("less than current used") {
        Failure::BelowUsage
    } else if stderr.contains("out of space") {
        Failure::NoSpace
    } else {
        Failure::Other
    }
}

pub fn failure(e: &DriverError) -> Failure {
    match e {
        DriverError::Command { stderr, .. } => classify(stderr),
        _ => Failure::Other,
    }
}

/// The datasets a refused `zfs destroy` lists after "use '-R' to destroy the following
/// datasets:" (exec folds lines with "; ", which no dataset name can contain).
pub fn dependents(e: &DriverError) -> Vec<String> {
    let DriverError::Command { stderr, .. } = e else {
        return Vec::new();
    };
    stderr
        .split("; ")
        .skip_while(|l| !l.contains("following datasets"))
        .skip(1)
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

fn run(program: &str, args: Vec<OsString>, purpose: &'static str) -> Result<String> {
    exec::run(program, args, purpose)
}

fn props_args(flag: &str, props: &[(&str, String)]) -> Vec<OsString> {
    props
        .iter()
        .flat_map(|(k, v)| [flag.into(), format!("{k}={v}").into()])
        .collect()
}

/// `zfs create -o k=v... DS`.
pub fn create(ds: &Dataset, props: &[(&str, String)]) -> Result<()> {
    let mut a: Vec<OsString> = vec!["create".into()];
    a.extend(props_args("-o", props));
    a.push(ds.as_str().into());
    run(ZFS, a, "create a ZFS dataset").map(drop)
}

/// `zfs clone -o k=v... SNAP DS`.
pub fn clone(origin: &Snapshot, ds: &Dataset, props: &[(&str, String)]) -> Result<()> {
    let mut a: Vec<OsString> = vec!["clone".into()];
    a.extend(props_args("-o", props));
    a.push(origin.as_str().into());
    a.push(ds.as_str().into());
    run(ZFS, a, "clone a ZFS snapshot").map(drop)
}

pub fn snapshot(snap: &Snapshot) -> Result<()> {
    run(
        ZFS,
        vec!["snapshot".into(), snap.as_str().into()],
        "snapshot a ZFS dataset",
    )
    .map(drop)
}

/// `zfs destroy [-r] DS`. With `recursive` the dataset's snapshots go too; dependent clones
/// elsewhere still make it fail (that takes -R, which blkdrv never uses).
pub fn destroy(ds: &Dataset, recursive: bool) -> Result<()> {
    let mut a: Vec<OsString> = vec!["destroy".into()];
    if recursive {
        a.push("-r".into());
    }
    a.push(ds.as_str().into());
    run(ZFS, a, "destroy a ZFS dataset").map(drop)
}

pub fn set(ds: &Dataset, prop: &str, value: &str) -> Result<()> {
    run(
        ZFS,
        vec![
            "set".into(),
            format!("{prop}={value}").into(),
            ds.as_str().into(),
        ],
        "set a ZFS property",
    )
    .map(drop)
}

/// `<tool> get -Hp -o <columns> PROPS <args...>`: the scripted form, exact numbers.
fn get_raw(program: &str, columns: &str, props: &[&str], args: &[&str]) -> Result<String> {
    let mut a: Vec<OsString> = vec![
        "get".into(),
        "-Hp".into(),
        "-o".into(),
        columns.into(),
        props.join(",").into(),
    ];
    a.extend(args.iter().map(OsString::from));
    let purpose = if program == ZPOOL {
        "read zpool properties"
    } else {
        "read ZFS properties"
    };
    run(program, a, purpose)
}

/// `zfs get -Hp -o property,value PROPS OBJECT` (a dataset or snapshot name).
pub fn get(object: &str, props: &[&str]) -> Result<Props> {
    Props::parse(object, &get_raw(ZFS, "property,value", props, &[object])?)
}

/// PROPS of `ds` and the filesystems directly below it, in one `zfs get -r -d 1`, by name.
pub fn get_below(ds: &Dataset, props: &[&str]) -> Result<BTreeMap<String, Props>> {
    let out = get_raw(
        ZFS,
        "name,property,value",
        props,
        &["-r", "-d", "1", "-t", "filesystem", ds.as_str()],
    )?;
    Props::parse_many(ds.as_str(), &out)
}

/// One line of `zfs list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub kind: String,
    pub origin: Option<String>,
}

/// Parses `zfs list -H -o name,type,origin` output. Lines that do not have the three fields are
/// skipped (and logged): one odd entry must not hide the others.
pub fn parse_list(text: &str) -> Vec<Entry> {
    text.lines()
        .filter(|l| !l.is_empty())
        .filter_map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            match f.as_slice() {
                [name, kind, origin] => Some(Entry {
                    name: name.to_string(),
                    kind: kind.to_string(),
                    origin: Some(origin.to_string()).filter(|o| o != "-"),
                }),
                _ => {
                    tracing::warn!(line = l, "skipping an unreadable `zfs list` line");
                    None
                }
            }
        })
        .collect()
}

/// The datasets (of `types`: filesystem, volume, snapshot) directly below `ds`, and its own
/// snapshots if asked for; `ds` itself is left out.
pub fn list_below(ds: &Dataset, types: &[&str]) -> Result<Vec<Entry>> {
    let out = run(
        ZFS,
        vec![
            "list".into(),
            "-H".into(),
            "-o".into(),
            "name,type,origin".into(),
            "-t".into(),
            types.join(",").into(),
            "-d".into(),
            "1".into(),
            ds.as_str().into(),
        ],
        "list ZFS datasets",
    )?;
    Ok(parse_list(&out)
        .into_iter()
        .filter(|e| e.name != ds.as_str())
        .collect())
}

/// `zpool create -f -o k=v... -O k=v... NAME VDEV...`. `-f`: the pool manager has already
/// refused devices with a signature unless the admin gave --force.
pub fn zpool_create(
    name: &ZpoolName,
    vdevs: &[PathBuf],
    pool_props: &[(&str, String)],
    fs_props: &[(&str, String)],
) -> Result<()> {
    let mut a: Vec<OsString> = vec!["create".into(), "-f".into()];
    a.extend(props_args("-o", pool_props));
    a.extend(props_args("-O", fs_props));
    a.push(name.as_str().into());
    a.extend(vdevs.iter().map(|v| v.as_os_str().to_owned()));
    run(ZPOOL, a, "create a zpool").map(drop)
}

/// `zpool get -Hp -o property,value PROPS NAME`.
pub fn zpool_get(name: &ZpoolName, props: &[&str]) -> Result<Props> {
    Props::parse(
        name.as_str(),
        &get_raw(ZPOOL, "property,value", props, &[name.as_str()])?,
    )
}

/// The GUID of the imported pool `name`; None when no pool of that name is imported.
pub fn zpool_guid(name: &ZpoolName) -> Result<Option<u64>> {
    match zpool_get(name, &["guid"]) {
        Ok(p) => p.num("guid").map(Some),
        Err(e) if failure(&e) == Failure::Missing => Ok(None),
        Err(e) => Err(e),
    }
}

/// Imports the pool with `guid` without mounting anything and without a cache file (blkdrv,
/// not the boot scripts, activates its pools). `search`: the vdev paths to read labels from;
/// empty means the tool's default device directories.
pub fn zpool_import(guid: u64, search: &[PathBuf]) -> Result<()> {
    let mut a: Vec<OsString> = vec![
        "import".into(),
        "-N".into(),
        "-o".into(),
        "cachefile=none".into(),
    ];
    for s in search {
        a.push("-d".into());
        a.push(s.as_os_str().to_owned());
    }
    a.push(guid.to_string().into());
    run(ZPOOL, a, "import a zpool").map(drop)
}

pub fn zpool_export(name: &ZpoolName) -> Result<()> {
    run(
        ZPOOL,
        vec!["export".into(), name.as_str().into()],
        "export a zpool",
    )
    .map(drop)
}

/// `zpool destroy -f`: called only for pools blkdrv created, after the pool manager refused
/// while layers were mounted (unless the admin forced it).
pub fn zpool_destroy(name: &ZpoolName) -> Result<()> {
    run(
        ZPOOL,
        vec!["destroy".into(), "-f".into(), name.as_str().into()],
        "destroy a zpool",
    )
    .map(drop)
}

/// Waits for the pool's current transaction group to reach the disk: space figures count data
/// only once it has.
pub fn zpool_sync(name: &ZpoolName) -> Result<()> {
    run(
        ZPOOL,
        vec!["sync".into(), name.as_str().into()],
        "sync a zpool",
    )
    .map(drop)
}

/// `zpool online -e`: takes up the space a grown vdev (a longer file) gained.
pub fn zpool_expand(name: &ZpoolName, vdev: &Path) -> Result<()> {
    run(
        ZPOOL,
        vec![
            "online".into(),
            "-e".into(),
            name.as_str().into(),
            vdev.as_os_str().to_owned(),
        ],
        "expand a zpool vdev",
    )
    .map(drop)
}

/// Waits, up to `limit`, until no `zfs`/`zpool` process names `object` (or a snapshot or child
/// of it) on its command line. A blkdrv killed with -9 leaves its tool running, and that
/// tool's ioctl can still create the dataset after the next blkdrv has looked for it: an
/// object nobody recorded. Returns false on timeout.
pub fn wait_for_tools(object: &str, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        match tool_running_on(object) {
            None => return true,
            Some(pid) if Instant::now() >= deadline => {
                tracing::warn!(pid, object, "a ZFS tool still works on the object");
                return false;
            }
            Some(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Whether a command-line argument names `object` or something inside it.
fn names_object(arg: &[u8], object: &str) -> bool {
    let o = object.as_bytes();
    arg.strip_prefix(o)
        .is_some_and(|rest| rest.is_empty() || rest[0] == b'@' || rest[0] == b'/')
}

fn tool_running_on(object: &str) -> Option<u32> {
    let me = std::process::id();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        // comm first: one small read per process, cmdline only for the ZFS tools.
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if !matches!(comm.trim_end(), ZFS | ZPOOL) {
            continue;
        }
        // A zombie has finished its work (and shows an empty command line forever).
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        if stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.trim_start().chars().next())
            == Some('Z')
        {
            continue;
        }
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        // Kernel threads have no command line and no executable.
        if cmdline.is_empty() && std::fs::read_link(e.path().join("exe")).is_err() {
            continue;
        }
        if tool_args_may_name(&cmdline, object) {
            return Some(pid);
        }
    }
    None
}

/// Whether a live ZFS tool's command line (NUL-separated) names `object`. An empty one counts:
/// during execve the new image's arguments are not readable yet, and a tool caught in that
/// moment (a killed blkdrv's `zfs clone` starting) must not be taken for no tool.
fn tool_args_may_name(cmdline: &[u8], object: &str) -> bool {
    cmdline.is_empty()
        || cmdline
            .split(|b| *b == 0)
            .skip(1)
            .any(|a| names_object(a, object))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_names_follow_the_kernel_rules() {
        for ok in ["tank", "blkdrv-t-0a1b2c3d", "a.b:c_d-e", "mirrored"] {
            assert!(ZpoolName::new(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "1tank", "-o", "mirror", "raidz", "ta nk", "ta/nk", "t@x", "t%",
        ] {
            assert!(ZpoolName::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(ZpoolName::new(&"a".repeat(MAX_POOL_NAME)).is_ok());
        assert!(ZpoolName::new(&"a".repeat(MAX_POOL_NAME + 1)).is_err());
    }

    #[test]
    fn dataset_names_are_checked_per_component() {
        let d = Dataset::new("tank/blkdrv/layers").unwrap();
        assert_eq!(d.pool().as_str(), "tank");
        assert_eq!(d.leaf(), "layers");
        assert_eq!(d.child("17").unwrap().as_str(), "tank/blkdrv/layers/17");
        assert_eq!(
            d.snapshot("committed").unwrap().as_str(),
            "tank/blkdrv/layers@committed"
        );
        assert_eq!(Dataset::new("tank").unwrap().leaf(), "tank");
        for bad in [
            "",
            "tank/",
            "/tank",
            "tank//a",
            "tank/../a",
            "tank/.",
            "tank@snap",
            "tank#book",
            "tank/a b",
            "1tank/a",
            "tank/-o\n",
        ] {
            assert!(Dataset::new(bad).is_err(), "{bad:?} accepted");
        }
        assert!(d.child("a/b").is_err());
        assert!(d.child("").is_err());
        assert!(d.snapshot("x@y").is_err());
        let long = format!("tank/{}", "a".repeat(MAX_NAME - 5));
        assert!(Dataset::new(&long).is_ok());
        assert!(Dataset::new(&format!("{long}a")).is_err());
        assert!(Dataset::new(&long).unwrap().snapshot("s").is_err());
        let e = Dataset::new("tank/a b").unwrap_err().to_string();
        assert!(e.contains("tank/a b") && e.contains("' '"), "{e}");
    }

    #[test]
    fn get_output_is_parsed_into_numbers() {
        // `zfs get -Hp -o property,value used,referenced,written,usedbysnapshots,refquota`
        let text = "used\t5373952\nreferenced\t110100480\nwritten\t5373952\nusedbysnapshots\t0\nrefquota\t0\n";
        let p = Props::parse("tank/7", text).unwrap();
        assert_eq!(p.bytes("used").unwrap(), Bytes(5_373_952));
        assert_eq!(p.num("referenced").unwrap(), 110_100_480);
        assert_eq!(p.num("usedbysnapshots").unwrap(), 0);
        let e = p.num("guid").unwrap_err().to_string();
        assert!(e.contains("guid of tank/7"), "{e}");
        // `zpool get -Hp`: fragmentation is "-" where it is not known.
        let z = Props::parse(
            "tank",
            "size\t1073741824\ncapacity\t3\nfragmentation\t-\nhealth\tONLINE\n",
        )
        .unwrap();
        assert_eq!(z.get("fragmentation"), None);
        assert_eq!(z.text("health").unwrap(), "ONLINE");
        assert_eq!(z.num("capacity").unwrap(), 3);
        let bad = Props::parse("tank", "size\tlots\n").unwrap();
        assert!(bad.num("size").is_err());
        assert!(Props::parse("tank", "no tab here\n").is_err());
    }

    #[test]
    fn a_tool_mid_exec_counts_as_working_on_the_object() {
        assert!(tool_args_may_name(b"", "tank/p/7"));
        assert!(tool_args_may_name(
            b"zfs\0clone\0tank/p/1@committed\0tank/p/7\0",
            "tank/p/7"
        ));
        assert!(!tool_args_may_name(b"zfs\0list\0tank/p/70\0", "tank/p/7"));
        assert!(!tool_args_may_name(b"zfs\0tank/p/7\0", "tank/p/8"));
    }

    #[test]
    fn recursive_get_output_is_grouped_by_name() {
        // `zfs get -Hp -r -d 1 -o name,property,value used,referenced tank/p`
        let text = "tank/p\tused\t900\ntank/p\treferenced\t100\n\
                    tank/p/1\tused\t500\ntank/p/1\treferenced\t400\n\
                    tank/p/2\tused\t7\ntank/p/2\treferenced\t407\n";
        let m = Props::parse_many("tank/p", text).unwrap();
        assert_eq!(m.len(), 3);
        assert_eq!(m["tank/p/1"].num("used").unwrap(), 500);
        assert_eq!(m["tank/p/2"].num("referenced").unwrap(), 407);
        let e = m["tank/p"].num("guid").unwrap_err().to_string();
        assert!(e.contains("guid of tank/p"), "{e}");
        assert!(Props::parse_many("tank/p", "tank/p\tused\n").is_err());
        assert!(Props::parse_many("tank/p", "nothing\n").is_err());
    }

    #[test]
    fn list_output_skips_unreadable_lines() {
        let text = "tank/l\tfilesystem\t-\ntank/l/1\tfilesystem\t-\ngarbage\ntank/l/2\tfilesystem\ttank/l/1@committed\n";
        let e = parse_list(text);
        assert_eq!(e.len(), 3);
        assert_eq!(e[1].origin, None);
        assert_eq!(e[2].origin.as_deref(), Some("tank/l/1@committed"));
    }

    fn command_error(stderr: &str) -> DriverError {
        DriverError::Command {
            command: "zfs destroy -r tank/l/1".into(),
            status: "exit status: 1".into(),
            stderr: stderr.into(),
        }
    }

    #[test]
    fn tool_messages_are_classified() {
        for (msg, want) in [
            (
                "cannot open 'tank/l/9': dataset does not exist",
                Failure::Missing,
            ),
            ("cannot open 'nosuch': no such pool", Failure::Missing),
            (
                "cannot import '123': no such pool available",
                Failure::Missing,
            ),
            (
                "cannot create 'tank/l/3': dataset already exists",
                Failure::Exists,
            ),
            ("cannot destroy 'tank/l/3': dataset is busy", Failure::Busy),
            (
                "cannot export 'tank': pool is busy",
                Failure::Busy,
            ),
            (
                "cannot set property for 'tank/l/3': size is less than current used or reserved space",
                Failure::BelowUsage,
            ),
            (
                "cannot create 'blkdrv-t-a2cf63b2/3': out of space",
                Failure::NoSpace,
            ),
            ("cannot open 'tank': permission denied", Failure::Other),
        ] {
            assert_eq!(classify(msg), want, "{msg}");
        }
        assert_eq!(
            failure(&DriverError::MissingTool {
                program: "zfs".into(),
                purpose: "x"
            }),
            Failure::Other
        );
    }

    #[test]
    fn dependents_are_read_from_a_refused_destroy() {
        let e = command_error(
            "cannot destroy 'tank/l/1': filesystem has dependent clones; use '-R' to destroy the following datasets:; tank/l/2; tank/l/bench-raw",
        );
        assert_eq!(failure(&e), Failure::DependentClones);
        assert_eq!(dependents(&e), ["tank/l/2", "tank/l/bench-raw"]);
        assert!(dependents(&command_error("dataset is busy")).is_empty());
    }

    #[test]
    fn tool_arguments_name_objects_exactly() {
        assert!(names_object(b"tank/l/1", "tank/l/1"));
        assert!(names_object(b"tank/l/1@committed", "tank/l/1"));
        assert!(names_object(b"tank/l/1/x", "tank/l/1"));
        assert!(!names_object(b"tank/l/12", "tank/l/1"));
        assert!(!names_object(b"tank/l", "tank/l/1"));
    }

    #[test]
    fn properties_become_option_pairs() {
        let a = props_args(
            "-o",
            &[
                ("mountpoint", "legacy".into()),
                ("compression", "lz4".into()),
            ],
        );
        assert_eq!(
            a,
            ["-o", "mountpoint=legacy", "-o", "compression=lz4"].map(OsString::from)
        );
    }
}
