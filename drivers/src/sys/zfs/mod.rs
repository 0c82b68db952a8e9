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

mod names;
mod output;

pub use names::{Dataset, InvalidName, Snapshot, ZpoolName, MAX_NAME};
pub use output::{classify, dependents, failure, parse_list, Entry, Failure, Props};

use super::exec;
use crate::error::Result;
use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

pub const ZFS: &str = "zfs";
pub const ZPOOL: &str = "zpool";

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

/// `zfs destroy SNAP`: fails with dependent clones (never -R).
pub fn destroy_snapshot(snap: &Snapshot) -> Result<()> {
    run(
        ZFS,
        vec!["destroy".into(), snap.as_str().into()],
        "destroy a ZFS snapshot",
    )
    .map(drop)
}

/// `zfs promote DS`: the clone `ds` takes over its origin's snapshots up to the one it was
/// cloned from, and the origin becomes a clone of `ds`'s copy of that snapshot.
pub fn promote(ds: &Dataset) -> Result<()> {
    run(
        ZFS,
        vec!["promote".into(), ds.as_str().into()],
        "promote a ZFS clone",
    )
    .map(drop)
}

/// One snapshot as `zfs list -t snapshot -o name,createtxg,clones` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotInfo {
    pub snapshot: Snapshot,
    /// The transaction group that made it: snapshots of one dataset are ordered by it.
    pub txg: u64,
    /// The datasets cloned from it.
    pub clones: Vec<Dataset>,
}

/// The snapshots of `ds` itself (`depth` 1) or of the datasets below it too (`depth` 2).
pub fn snapshots(ds: &Dataset, depth: u8) -> Result<Vec<SnapshotInfo>> {
    let out = run(
        ZFS,
        vec![
            "list".into(),
            "-Hp".into(),
            "-o".into(),
            "name,createtxg,clones".into(),
            "-t".into(),
            "snapshot".into(),
            "-d".into(),
            depth.to_string().into(),
            ds.as_str().into(),
        ],
        "list ZFS snapshots",
    )?;
    Ok(output::parse_snapshots(&out))
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
