//! zfs: every layer is a ZFS filesystem dataset below the pool's parent dataset, named after its
//! object id. An empty layer is `zfs create`; committing sets `readonly=on` and takes the
//! snapshot `<layer>@committed`; an active layer on a committed parent is `zfs clone` of the
//! parent's snapshot, so it shares every record until it writes. Datasets have
//! `mountpoint=legacy`: nothing automounts, blkdrv mounts them itself (mount(2) with type zfs,
//! what `mount -t zfs` does).
//!
//! Where the datasets live:
//! - loopback and `--device` pools: a zpool blkdrv creates (`ashift=12`, no cache file,
//!   `mountpoint=none` on the root dataset, compression off unless `-o compression=`); its root
//!   dataset is the parent. Loopback files are given to ZFS as file vdevs, not through the loop
//!   device the pool attaches: a file needs no udev (a whole disk does: `zpool create` labels it
//!   and waits for udev to show the new partition), its path does not change between boots as a
//!   loop device's number does, ZFS reads its labels by path on import, and growing it needs no
//!   loop capacity refresh, only `zpool online -e`.
//! - `-o zpool=NAME` without devices: a dataset `NAME/blkdrv-<pool>` in that existing pool.
//! - `-o dataset=NAME`: that existing dataset, only while it is empty unless `-o adopt=on`.
//!
//! The pool's identity is the zpool GUID plus the parent dataset (name and GUID). Sizes come from
//! ZFS's own accounting (`used`, `referenced`), never from walking files. Everything runs through
//! [`crate::sys::zfs`] (see there why the tools and not a library).

use crate::error::{DriverError, Result};
use crate::identity::text;
use crate::options;
use crate::plan::{self, OptionRole, OptionSpec};
use crate::sys::blockdev;
use crate::sys::mount;
use crate::sys::zfs::{self as z, Dataset, Failure, Snapshot, ZpoolName};
use crate::{Backing, BenchHooks, Layers};
use crate::{
    Bytes, Capabilities, Driver, DriverFactory, DriverOptions, Granularity, Identity, LayerChain,
    MountFlags, MountMode, ObjectId, PoolContext, Requirements, Space, Usage,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const NAME: &str = "zfs";

const KEY_ZPOOL: &str = "zpool";
const KEY_DATASET: &str = "dataset";
const KEY_COMPRESSION: &str = "compression";
const KEY_ADOPT: &str = "adopt";
/// The options, in the order unknown-option errors list them.
const OPTIONS: &[OptionSpec] = &[
    OptionSpec::flag(
        KEY_ZPOOL,
        "zpool",
        "NAME",
        "Name of the zpool. With --device or --size blkdrv creates it; alone it uses this \
         existing, imported zpool.",
    )
    .role(OptionRole::ExistingUnlessBacked),
    OptionSpec::flag(
        KEY_DATASET,
        "dataset",
        "POOL/DATASET",
        "Use this existing, empty dataset (-o adopt=on: one with other children too).",
    )
    .role(OptionRole::Existing),
    OptionSpec::flag(
        KEY_COMPRESSION,
        "compression",
        "ALGO",
        "Compression of the layers (default off): lz4, zstd, zstd-N, gzip-N, ...",
    ),
    OptionSpec::key(
        KEY_ADOPT,
        "with --dataset: take a dataset that has other children: on or off (default)",
    ),
];

/// The snapshot that freezes a committed layer; children are clones of it.
const COMMITTED: &str = "committed";
/// Scratch clone for [`BenchHooks::raw_snapshot`]; not a decimal id, so never listed as a layer.
const SCRATCH: &str = "bench-raw";
/// Room a parent dataset name must leave for "/<largest id>@committed".
const MAX_PARENT: usize = z::MAX_NAME - "/16777215@committed".len();
/// Slop space alone takes up to 128 MiB of a small zpool (spa_get_slop_space); under this a
/// pool would have less room for layers than it reserves.
const MIN_SIZE: Bytes = Bytes(256 << 20);
/// How long a remove waits for a `zfs` process a killed blkdrv left working on the layer.
const TOOL_WAIT: Duration = Duration::from_secs(30);

fn bad(key: &str, value: &str, reason: impl Into<String>) -> DriverError {
    options::bad(NAME, key, value, reason)
}

/// ZFS's compression values (zfs_prop.c), levels included.
fn valid_compression(v: &str) -> bool {
    let level = |s: &str, ok: &dyn Fn(u32) -> bool| s.parse::<u32>().is_ok_and(ok);
    match v {
        "on" | "off" | "lz4" | "lzjb" | "zle" | "gzip" | "zstd" | "zstd-fast" => true,
        _ => {
            if let Some(n) = v.strip_prefix("gzip-") {
                level(n, &|n| (1..=9).contains(&n))
            } else if let Some(n) = v.strip_prefix("zstd-fast-") {
                level(n, &|n| {
                    (1..=10).contains(&n)
                        || (n % 10 == 0 && (20..=100).contains(&n))
                        || n == 500
                        || n == 1000
                })
            } else if let Some(n) = v.strip_prefix("zstd-") {
                level(n, &|n| (1..=19).contains(&n))
            } else {
                false
            }
        }
    }
}

/// Validated options.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    /// With devices: the name of the zpool to create; without: an existing zpool to use.
    zpool: Option<ZpoolName>,
    /// An existing dataset to use as the parent.
    dataset: Option<Dataset>,
    compression: String,
    /// Take a dataset that already has other children.
    adopt: bool,
}

impl Settings {
    fn parse(options: &DriverOptions) -> Result<Settings> {
        options::check_known(NAME, options, &plan::stored_keys(OPTIONS))?;
        let get = |k: &str| options.get(k).map(String::as_str);
        let zpool = get(KEY_ZPOOL)
            .map(|v| ZpoolName::new(v).map_err(|e| bad(KEY_ZPOOL, v, e.to_string())))
            .transpose()?;
        let dataset = get(KEY_DATASET)
            .map(|v| Dataset::new(v).map_err(|e| bad(KEY_DATASET, v, e.to_string())))
            .transpose()?;
        if let Some(d) = &dataset {
            if d.as_str().len() > MAX_PARENT {
                return Err(bad(
                    KEY_DATASET,
                    d.as_str(),
                    format!("longer than {MAX_PARENT} characters: layer names must fit below it"),
                ));
            }
            if let Some(p) = &zpool {
                return Err(bad(
                    KEY_DATASET,
                    d.as_str(),
                    format!("--dataset names the dataset to use and --zpool {p} a pool: give one"),
                ));
            }
        }
        let compression = get(KEY_COMPRESSION).unwrap_or("off").to_string();
        if !valid_compression(&compression) {
            return Err(bad(
                KEY_COMPRESSION,
                &compression,
                "expected off, on, lz4, zstd, zstd-N, zstd-fast-N, gzip, gzip-N, zle or lzjb",
            ));
        }
        let adopt = get(KEY_ADOPT)
            .map(|v| options::on_off(NAME, KEY_ADOPT, v))
            .transpose()?
            .unwrap_or(false);
        if adopt && dataset.is_none() {
            return Err(bad(
                KEY_ADOPT,
                "on",
                "adopt goes with --dataset (an existing dataset)",
            ));
        }
        Ok(Settings {
            zpool,
            dataset,
            compression,
            adopt,
        })
    }

    fn to_options(&self) -> DriverOptions {
        let mut o = DriverOptions::new();
        if let Some(p) = &self.zpool {
            o.insert(KEY_ZPOOL.into(), p.to_string());
        }
        if let Some(d) = &self.dataset {
            o.insert(KEY_DATASET.into(), d.to_string());
        }
        o.insert(KEY_COMPRESSION.into(), self.compression.clone());
        if self.adopt {
            o.insert(KEY_ADOPT.into(), "on".into());
        }
        o
    }
}

/// What blkdrv made, and so what it takes down on deactivate and destroy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Created {
    /// The zpool (loopback files or --device): exported on deactivate, destroyed on destroy.
    Zpool,
    /// The parent dataset in an existing zpool: destroyed on destroy.
    Dataset,
    /// Nothing: an adopted dataset; destroy removes blkdrv's layers only.
    #[serde(rename = "none")]
    Nothing,
}

/// The identity recorded at `pool init` and checked on every open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Recorded {
    #[serde(with = "text")]
    zpool: ZpoolName,
    #[serde(with = "text")]
    zpool_guid: u64,
    #[serde(with = "text")]
    dataset: Dataset,
    #[serde(with = "text")]
    dataset_guid: u64,
    created: Created,
}

/// A pool device as ZFS gets it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Vdev {
    /// A loopback file of the pool, by its absolute path.
    File(PathBuf),
    Device(PathBuf),
}

impl Vdev {
    fn path(&self) -> &Path {
        match self {
            Vdev::File(p) | Vdev::Device(p) => p,
        }
    }
}

/// The pool's devices as vdevs: loop devices the pool attached to its own backing files become
/// those files (see the module doc; the pool says which they are); anything else, a user's loop
/// device included, stays the block device it is.
fn vdevs(ctx: &PoolContext) -> Result<Vec<Vdev>> {
    Ok(ctx
        .devices
        .iter()
        .map(|d| match ctx.backing_files.get(d) {
            Some(file) => Vdev::File(file.clone()),
            None => Vdev::Device(d.clone()),
        })
        .collect())
}

/// libefi (behind `zpool create`) treats sd, hd, vd, xvd and nvme disks as whole disks: it
/// partitions them and waits up to 30 s until libudev calls the new partition initialized,
/// which means udev wrote its database entry under /run/udev/data. With no udev database at
/// all (no udevd, no stand-in like the test VM's) that wait always fails: say so at once.
fn refuse_whole_disk_without_udev(dev: &Path) -> Result<()> {
    if Path::new("/run/udev/control").exists() || Path::new("/run/udev/data").is_dir() {
        return Ok(());
    }
    let real = dev.canonicalize().unwrap_or_else(|_| dev.to_path_buf());
    let name = real
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let whole = ["sd", "hd", "vd", "xvd", "nvme"]
        .iter()
        .any(|p| name.starts_with(p))
        && !blockdev::is_partition(&name);
    if whole {
        return Err(DriverError::Device {
            device: dev.to_path_buf(),
            reason: "is a whole disk and udev is not running: zpool create would partition it and \
                     wait in vain for udev to register the partition; give a partition (e.g. \
                     /dev/vdb1) or start udev"
                .into(),
        });
    }
    Ok(())
}

/// Pool-level guid of `name`, or a clear refusal when no such pool is imported.
fn zpool_guid_of(name: &ZpoolName, key: &str) -> Result<u64> {
    z::zpool_guid(name)?.ok_or_else(|| {
        bad(
            key,
            name.as_str(),
            "no imported zpool has this name (import it first)",
        )
    })
}

fn dataset_guid(ds: &Dataset) -> Result<u64> {
    z::get(ds.as_str(), &["guid"])?.num("guid")
}

/// `pool init` on devices or loopback files: a new zpool.
fn create_zpool(ctx: &PoolContext, s: &Settings, vdevs: &[Vdev]) -> Result<Recorded> {
    let name = match &s.zpool {
        Some(n) => n.clone(),
        // Zpool names are global to the host: a random part keeps pools of the same name under
        // different roots (every test pool is "t") apart.
        None => ZpoolName::new(&format!("blkdrv-{}-{}", ctx.pool, crate::id::random_tag()))
            .map_err(|e| bad(KEY_ZPOOL, &ctx.pool, e.to_string()))?,
    };
    if z::zpool_guid(&name)?.is_some() {
        return Err(bad(
            KEY_ZPOOL,
            name.as_str(),
            "a zpool of this name is already imported: pick another name, or give no --device \
             and no --size to put the pool's layers in it",
        ));
    }
    for v in vdevs {
        if let Vdev::Device(d) = v {
            refuse_whole_disk_without_udev(d)?;
        }
    }
    let paths: Vec<PathBuf> = vdevs.iter().map(|v| v.path().to_path_buf()).collect();
    z::zpool_create(
        &name,
        &paths,
        &[("ashift", "12".into()), ("cachefile", "none".into())],
        &[
            ("mountpoint", "none".into()),
            ("compression", s.compression.clone()),
        ],
    )?;
    let root = name.root();
    let rec = (|| {
        Ok(Recorded {
            zpool_guid: zpool_guid_of(&name, KEY_ZPOOL)?,
            dataset_guid: dataset_guid(&root)?,
            zpool: name.clone(),
            dataset: root.clone(),
            created: Created::Zpool,
        })
    })();
    if rec.is_err() {
        // The pool manager deletes the loopback files next: do not leave a zpool on them.
        if let Err(u) = z::zpool_destroy(&name) {
            tracing::warn!("cleaning up after a failed zpool init: {u}");
        }
    }
    rec
}

/// `pool init --zpool NAME` without devices: a dataset of blkdrv's own in an existing zpool.
fn create_parent(ctx: &PoolContext, s: &Settings, zpool: &ZpoolName) -> Result<Recorded> {
    let zpool_guid = zpool_guid_of(zpool, KEY_ZPOOL)?;
    let parent = zpool
        .root()
        .child(&format!("blkdrv-{}", ctx.pool))
        .map_err(|e| bad(KEY_ZPOOL, zpool.as_str(), e.to_string()))?;
    let props = [
        ("mountpoint", "none".to_string()),
        ("compression", s.compression.clone()),
    ];
    match z::create(&parent, &props) {
        Ok(()) => {}
        Err(e) if z::failure(&e) == Failure::Exists => {
            return Err(bad(
                KEY_ZPOOL,
                zpool.as_str(),
                format!("dataset {parent} already exists: to use it, pass --dataset {parent}"),
            ))
        }
        Err(e) => return Err(e),
    }
    let guid = dataset_guid(&parent).inspect_err(|_| {
        let _ = z::destroy(&parent, false);
    })?;
    Ok(Recorded {
        zpool: zpool.clone(),
        zpool_guid,
        dataset: parent,
        dataset_guid: guid,
        created: Created::Dataset,
    })
}

/// Whether `name` (a child of the parent) could be taken for one of blkdrv's own datasets.
fn collides(parent: &Dataset, name: &str) -> bool {
    name.strip_prefix(parent.as_str())
        .and_then(|r| r.strip_prefix('/'))
        .is_some_and(|leaf| leaf == SCRATCH || leaf.bytes().all(|b| b.is_ascii_digit()))
}

/// `pool init --dataset NAME`: an existing dataset, as it is.
fn adopt_dataset(ds: &Dataset, adopt: bool) -> Result<Recorded> {
    let props = match z::get(ds.as_str(), &["type", "guid"]) {
        Ok(p) => p,
        Err(e) if z::failure(&e) == Failure::Missing => {
            return Err(bad(KEY_DATASET, ds.as_str(), "no such dataset"))
        }
        Err(e) => return Err(e),
    };
    let kind = props.text("type")?;
    if kind != "filesystem" {
        return Err(bad(
            KEY_DATASET,
            ds.as_str(),
            format!("is a {kind}, not a filesystem"),
        ));
    }
    let below = z::list_below(ds, &["filesystem", "volume", "snapshot"])?;
    let names = |v: &[&z::Entry]| {
        let mut n: Vec<&str> = v.iter().take(5).map(|e| e.name.as_str()).collect();
        if v.len() > 5 {
            n.push("...");
        }
        n.join(", ")
    };
    if !adopt && !below.is_empty() {
        let all: Vec<&z::Entry> = below.iter().collect();
        return Err(bad(
            KEY_DATASET,
            ds.as_str(),
            format!(
                "is not empty ({} children or snapshots: {}); blkdrv takes only an empty dataset \
                 unless -o adopt=on",
                below.len(),
                names(&all)
            ),
        ));
    }
    let clash: Vec<&z::Entry> = below
        .iter()
        .filter(|e| e.kind != "snapshot" && collides(ds, &e.name))
        .collect();
    if !clash.is_empty() {
        return Err(bad(
            KEY_DATASET,
            ds.as_str(),
            format!(
                "has children named like blkdrv's layers ({}): they would be taken for layers",
                names(&clash)
            ),
        ));
    }
    let zpool = ds.pool();
    Ok(Recorded {
        zpool_guid: zpool_guid_of(&zpool, KEY_DATASET)?,
        zpool,
        dataset: ds.clone(),
        dataset_guid: props.num("guid")?,
        created: Created::Nothing,
    })
}

pub struct Factory;

impl DriverFactory for Factory {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "ZFS datasets, snapshots and clones (record copy-on-write, native space accounting)"
    }

    fn requirements(&self) -> Requirements {
        Requirements {
            filesystems: vec!["zfs"],
            // The tools come with the kernel module (zfsutils-linux with zfs-dkms) and are of
            // no use without it, so they count as kernel support: a host without ZFS is sent
            // to the VM rather than told to install tools. check_host still asks for them.
            tools: Vec::new(),
            paths: vec!["/dev/zfs"],
        }
    }

    fn check_host(&self) -> Result<()> {
        let mut req = self.requirements();
        req.tools = vec![z::ZFS, z::ZPOOL];
        crate::sys::host::check(NAME, &req)
    }

    fn options(&self) -> &'static [OptionSpec] {
        OPTIONS
    }

    fn validate_options(&self, options: &DriverOptions) -> Result<DriverOptions> {
        Settings::parse(options).map(|s| s.to_options())
    }

    fn min_device_size(&self, _options: &DriverOptions) -> Bytes {
        MIN_SIZE
    }

    fn format(&self, ctx: &PoolContext) -> Result<Identity> {
        let s = Settings::parse(&ctx.options)?;
        let vdevs = vdevs(ctx)?;
        let rec = match (&s.dataset, &s.zpool, vdevs.is_empty()) {
            (Some(ds), _, true) => adopt_dataset(ds, s.adopt)?,
            (Some(ds), _, false) => {
                return Err(bad(
                    KEY_DATASET,
                    ds.as_str(),
                    "an existing dataset is used as it is: give no --device and no --size",
                ))
            }
            (None, _, false) => create_zpool(ctx, &s, &vdevs)?,
            (None, Some(p), true) => create_parent(ctx, &s, p)?,
            (None, None, true) => {
                return Err(DriverError::Device {
                    device: ctx.state_dir.clone(),
                    reason: "a zfs pool needs --device, a loopback --size, --zpool NAME (an \
                             existing zpool) or --dataset NAME (an existing dataset)"
                        .into(),
                })
            }
        };
        Identity::record(NAME, &rec)
    }

    fn open(&self, ctx: &PoolContext, identity: &Identity) -> Result<Box<dyn Driver>> {
        let s = Settings::parse(&ctx.options)?;
        let label = ctx
            .devices
            .first()
            .cloned()
            .unwrap_or_else(|| PathBuf::from(identity.get("zpool").unwrap_or_default()));
        let rec: Recorded = identity.read(&label)?;
        let vdevs = match rec.created {
            Created::Zpool => vdevs(ctx)?,
            _ => Vec::new(),
        };
        // Name the file rather than the loop device the pool attached to it.
        let label = vdevs.first().map_or(label, |v| v.path().to_path_buf());
        let found = match z::zpool_guid(&rec.zpool)? {
            Some(g) => g,
            None if rec.created == Created::Zpool => {
                // After a reboot or `pool deactivate`: import it from its own vdevs (files are
                // read by path; devices are looked for where the tool always looks).
                let search: Vec<PathBuf> = vdevs
                    .iter()
                    .filter_map(|v| match v {
                        Vdev::File(p) => Some(p.clone()),
                        Vdev::Device(_) => None,
                    })
                    .collect();
                match z::zpool_import(rec.zpool_guid, &search) {
                    Ok(()) => {}
                    Err(e) if z::failure(&e) == Failure::Missing => {
                        return Err(DriverError::IdentityMismatch {
                            device: label,
                            field: "zpool GUID".into(),
                            recorded: rec.zpool_guid.to_string(),
                            found: "no pool with this GUID on the pool's devices".into(),
                        })
                    }
                    Err(e) => return Err(e),
                }
                z::zpool_guid(&rec.zpool)?.ok_or_else(|| DriverError::IdentityMismatch {
                    device: label.clone(),
                    field: "zpool name".into(),
                    recorded: rec.zpool.to_string(),
                    found: "the pool with the recorded GUID imported under another name".into(),
                })?
            }
            None => {
                return Err(DriverError::Device {
                    device: PathBuf::from(rec.zpool.as_str()),
                    reason: format!(
                        "zpool {} is not imported; blkdrv did not create it, so it leaves that to \
                         the admin (zpool import {})",
                        rec.zpool, rec.zpool
                    ),
                })
            }
        };
        if found != rec.zpool_guid {
            return Err(DriverError::IdentityMismatch {
                device: label,
                field: "zpool GUID".into(),
                recorded: rec.zpool_guid.to_string(),
                found: format!(
                    "{found}: the imported zpool {} is another pool of the same name",
                    rec.zpool
                ),
            });
        }
        let props = match z::get(rec.dataset.as_str(), &["guid", "recordsize"]) {
            Ok(p) => p,
            Err(e) if z::failure(&e) == Failure::Missing => {
                return Err(DriverError::IdentityMismatch {
                    device: label,
                    field: "dataset".into(),
                    recorded: rec.dataset.to_string(),
                    found: "no such dataset in the zpool".into(),
                })
            }
            Err(e) => return Err(e),
        };
        let guid = props.num("guid")?;
        if guid != rec.dataset_guid {
            return Err(DriverError::IdentityMismatch {
                device: label,
                field: format!("GUID of dataset {}", rec.dataset),
                recorded: rec.dataset_guid.to_string(),
                found: format!("{guid}: the dataset was destroyed and made again"),
            });
        }
        Ok(Box::new(Zfs {
            recordsize: props.bytes("recordsize")?,
            rec,
            vdevs,
            compression: s.compression,
        }))
    }
}

pub struct Zfs {
    rec: Recorded,
    vdevs: Vec<Vdev>,
    compression: String,
    recordsize: Bytes,
}

const USAGE_PROPS: &[&str] = &["used", "referenced"];

/// `used` of a clone counts only the records it wrote (its origin's are charged to the origin
/// snapshot); `used` of a committed layer includes its snapshot: what removing the layer frees.
fn usage_of(p: &z::Props) -> Result<Usage> {
    Ok(Usage {
        bytes: p.bytes("used")?,
        inodes: None,
        referenced: Some(p.bytes("referenced")?),
    })
}

/// Whether a mount's own options make it read-write.
fn is_rw(m: &mount::MountInfo) -> bool {
    m.options.split(',').next() == Some("rw")
}

impl Zfs {
    fn dataset(&self, id: ObjectId) -> Dataset {
        self.rec
            .dataset
            .child(&id.to_string())
            .expect("decimal ids fit below a parent of at most MAX_PARENT characters")
    }

    fn committed(&self, id: ObjectId) -> Snapshot {
        self.dataset(id)
            .snapshot(COMMITTED)
            .expect("MAX_PARENT leaves room for the snapshot name")
    }

    fn scratch(&self) -> Dataset {
        self.rec
            .dataset
            .child(SCRATCH)
            .expect("MAX_PARENT leaves room for the scratch name")
    }

    /// Properties every layer gets. Compression is set on each layer, not only inherited, so an
    /// adopted dataset's own setting does not change what the pool was made with.
    fn layer_props(&self) -> [(&'static str, String); 2] {
        [
            ("mountpoint", "legacy".to_string()),
            ("compression", self.compression.clone()),
        ]
    }

    /// Mounts of `ds` in this mount namespace.
    /// Space counts once its transaction group is on disk. An unmount and a snapshot sync by
    /// themselves; a layer mounted here may hold data written seconds ago.
    fn sync_if_mounted(&self, layers: &[LayerChain]) -> Result<()> {
        let mounted: std::collections::HashSet<String> = mount::mountinfo()?
            .into_iter()
            .filter(|m| m.fstype == "zfs")
            .map(|m| m.source)
            .collect();
        if layers
            .iter()
            .any(|l| mounted.contains(self.dataset(l.id).as_str()))
        {
            z::zpool_sync(&self.rec.zpool)?;
        }
        Ok(())
    }

    fn mounts_of(&self, ds: &Dataset) -> Result<Vec<mount::MountInfo>> {
        Ok(mount::mountinfo()?
            .into_iter()
            .filter(|m| m.fstype == "zfs" && m.source == ds.as_str())
            .collect())
    }

    fn make(&self, layer: &LayerChain, ds: &Dataset) -> Result<()> {
        match self.make_once(layer, ds) {
            // Space a destroy freed already counts as `available`, but is allocatable only
            // a few transaction groups later (deferred frees; async destroy): let them pass and
            // try once more. Seen right after removing a layer that had filled the pool.
            Err(e) if z::failure(&e) == Failure::NoSpace => {
                for _ in 0..3 {
                    z::zpool_sync(&self.rec.zpool)?;
                }
                self.make_once(layer, ds)
            }
            r => r,
        }
    }

    fn make_once(&self, layer: &LayerChain, ds: &Dataset) -> Result<()> {
        match layer.parent() {
            Some(p) => z::clone(&self.committed(p), ds, &self.layer_props()).map_err(|e| {
                // The origin is what can be missing: the new dataset does not exist yet.
                if z::failure(&e) == Failure::Missing {
                    DriverError::NotFound {
                        id: p,
                        op: "find the committed snapshot to clone",
                    }
                } else {
                    e
                }
            }),
            None => z::create(ds, &self.layer_props()),
        }
    }

    /// Destroys a layer dataset and its snapshot. The one clone blkdrv may leave on its own
    /// (an interrupted raw_snapshot) is destroyed first; any other clone means children.
    fn destroy_layer(&self, id: ObjectId, ds: &Dataset) -> Result<()> {
        let mut cleared_scratch = false;
        loop {
            let e = match z::destroy(ds, true) {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            match z::failure(&e) {
                Failure::Missing => return Ok(()),
                Failure::Busy => {
                    return Err(DriverError::Busy {
                        id,
                        op: "remove",
                        reason: format!(
                            "dataset {ds} is busy (still mounted in another mount namespace, or \
                             held)"
                        ),
                    })
                }
                Failure::DependentClones => {
                    let deps = z::dependents(&e);
                    let scratch = self.scratch();
                    if !cleared_scratch
                        && !deps.is_empty()
                        && deps.iter().all(|d| d == scratch.as_str())
                    {
                        cleared_scratch = true;
                        match z::destroy(&scratch, false) {
                            Ok(()) => continue,
                            Err(se) if z::failure(&se) == Failure::Missing => continue,
                            Err(se) => return Err(se),
                        }
                    }
                    return Err(DriverError::Refused {
                        id,
                        op: "remove",
                        reason: format!(
                            "its snapshot {} has dependent clones (layers built on it): {}",
                            self.committed(id),
                            if deps.is_empty() {
                                "see zfs list -t all".to_string()
                            } else {
                                deps.join(", ")
                            }
                        ),
                    });
                }
                _ => return Err(e),
            }
        }
    }

    fn space_details(&self, pool: &z::Props, ds: &z::Props) -> Vec<(String, String)> {
        let num = |p: &z::Props, k: &str| p.num(k).ok();
        let mut d = Vec::new();
        let home = match self.rec.created {
            Created::Zpool => {
                let files = self
                    .vdevs
                    .iter()
                    .filter(|v| matches!(v, Vdev::File(_)))
                    .count();
                if files > 0 {
                    format!("made by blkdrv on {files} loopback file vdev(s)")
                } else {
                    format!("made by blkdrv on {} device(s)", self.vdevs.len())
                }
            }
            _ => "an existing zpool".into(),
        };
        d.push(("Zpool".into(), format!("{} ({home})", self.rec.zpool)));
        d.push(("Zpool GUID".into(), self.rec.zpool_guid.to_string()));
        d.push((
            "Dataset".into(),
            format!(
                "{} ({})",
                self.rec.dataset,
                match self.rec.created {
                    Created::Zpool => "the zpool's root dataset",
                    Created::Dataset => "made by blkdrv",
                    Created::Nothing => "adopted",
                }
            ),
        ));
        d.push((
            "Health".into(),
            pool.get("health").unwrap_or("unknown").to_string(),
        ));
        if let (Some(size), Some(alloc), Some(free)) =
            (num(pool, "size"), num(pool, "allocated"), num(pool, "free"))
        {
            d.push((
                "Zpool Size".into(),
                format!(
                    "{} ({} allocated, {} free)",
                    Bytes(size),
                    Bytes(alloc),
                    Bytes(free)
                ),
            ));
        }
        let pct = |k: &str| pool.get(k).map_or("-".to_string(), |v| format!("{v}%"));
        d.push(("Capacity".into(), pct("capacity")));
        d.push(("Fragmentation".into(), pct("fragmentation")));
        d.push((
            "Compression".into(),
            match ds.get("compressratio") {
                Some(r) if self.compression != "off" => {
                    format!("{} (ratio {r}x)", self.compression)
                }
                _ => self.compression.clone(),
            },
        ));
        d.push(("Record Size".into(), self.recordsize.to_string()));
        for v in &self.vdevs {
            let line = match v {
                Vdev::File(p) => {
                    use std::os::unix::fs::MetadataExt;
                    match std::fs::metadata(p) {
                        Ok(md) => format!(
                            "{} (file, {} allocated of {})",
                            p.display(),
                            Bytes(md.blocks() * 512),
                            Bytes(md.len())
                        ),
                        Err(e) => format!("{} (file: {e})", p.display()),
                    }
                }
                Vdev::Device(p) => format!("{} (device)", p.display()),
            };
            d.push(("Vdev".into(), line));
        }
        d
    }

    fn file_vdevs(&self) -> impl Iterator<Item = &Path> {
        self.vdevs.iter().filter_map(|v| match v {
            Vdev::File(p) => Some(p.as_path()),
            Vdev::Device(_) => None,
        })
    }

    /// Destroys blkdrv's layers in an adopted dataset, clones before their origins, and leaves
    /// everything else.
    fn destroy_layers(&self) -> Result<()> {
        loop {
            let mine: Vec<z::Entry> = z::list_below(&self.rec.dataset, &["filesystem"])?
                .into_iter()
                .filter(|e| collides(&self.rec.dataset, &e.name))
                .collect();
            if mine.is_empty() {
                return Ok(());
            }
            // Leaves first: datasets whose snapshot no other of ours was cloned from.
            let leaves: Vec<&z::Entry> = mine
                .iter()
                .filter(|e| {
                    let snap = format!("{}@", e.name);
                    !mine.iter().any(|o| {
                        o.origin
                            .as_deref()
                            .is_some_and(|origin| origin.starts_with(&snap))
                    })
                })
                .collect();
            if leaves.is_empty() {
                return Err(DriverError::Device {
                    device: PathBuf::from(self.rec.dataset.as_str()),
                    reason: "could not order the layers for destruction (clone cycle?)".into(),
                });
            }
            for e in leaves {
                let ds = Dataset::new(&e.name).map_err(|err| DriverError::Device {
                    device: PathBuf::from(&e.name),
                    reason: err.to_string(),
                })?;
                match z::destroy(&ds, true) {
                    Ok(()) => {}
                    Err(err) if z::failure(&err) == Failure::Missing => {}
                    Err(err) => return Err(err),
                }
            }
        }
    }
}

impl Layers for Zfs {
    fn name(&self) -> &'static str {
        NAME
    }

    // ZFS copies on write in records: the first write into shared data rewrites the whole
    // record it falls in (measured: a 4 KiB write into an inherited file made the clone's
    // `written` one 128 KiB record plus metadata). Files smaller than a record are one smaller
    // record, but for the large files where copy-on-write cost matters ZFS behaves like
    // dm-thin's fixed blocks, not like btrfs's 4 KiB extents: so Block, of the recordsize.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            granularity: Granularity::Block {
                size: self.recordsize,
            },
            native_snapshots: true,
        }
    }

    fn create(&self, layer: &LayerChain) -> Result<()> {
        let ds = self.dataset(layer.id);
        match self.make(layer, &ds) {
            Err(e) if z::failure(&e) == Failure::Exists => {
                // Left by a crash before the store recorded it: start over.
                self.remove(layer.id)?;
                self.make(layer, &ds)
            }
            r => r,
        }
    }

    fn commit(&self, layer: &LayerChain) -> Result<()> {
        let ds = self.dataset(layer.id);
        let missing = |e: DriverError| {
            if z::failure(&e) == Failure::Missing {
                DriverError::NotFound {
                    id: layer.id,
                    op: "commit",
                }
            } else {
                e
            }
        };
        // Read-only first, then the snapshot children are cloned from: the layer's own view
        // can never drift from what its children see. Both steps are idempotent, so a commit
        // rolled forward after a crash just repeats them.
        z::set(&ds, "readonly", "on").map_err(missing)?;
        match z::snapshot(&self.committed(layer.id)) {
            Err(e) if z::failure(&e) == Failure::Exists => Ok(()),
            r => r.map_err(missing),
        }
    }

    fn mount(
        &self,
        layer: &LayerChain,
        target: &Path,
        mode: MountMode,
        flags: MountFlags,
    ) -> Result<()> {
        let ds = self.dataset(layer.id);
        let ms = flags.ms(mode);
        // What mount.zfs adds for a legacy dataset: where it is mounted, which the kernel
        // needs to automount .zfs/snapshot entries (a comma would split the option string).
        let hint = format!("mntpoint={}", target.display());
        let data = (!hint.contains(',')).then_some(hint.as_str());
        let err = match mount::mount(Path::new(ds.as_str()), target, "zfs", ms, data) {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if err.errno() != Some(nix::errno::Errno::EBUSY) {
            return Err(err);
        }
        // One ZFS superblock per dataset, read-only or read-write: a second mount in the other
        // mode gets EBUSY. A read-only view of a layer mounted read-write is a read-only bind of
        // that mount; the other way round cannot be done.
        let here = self.mounts_of(&ds)?;
        match (mode, here.iter().find(|m| is_rw(m))) {
            (MountMode::ReadOnly, Some(rw)) => mount::bind(&rw.target, target, ms),
            _ => Err(DriverError::Refused {
                id: layer.id,
                op: "mount",
                reason: format!(
                    "ZFS mounts a dataset either read-only or read-write, and {ds} is mounted the \
                     other way{} ({err})",
                    here.first()
                        .map(|m| format!(" at {}", m.target.display()))
                        .unwrap_or_default()
                ),
            }),
        }
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        mount::unmount(target)
    }

    fn remove(&self, id: ObjectId) -> Result<()> {
        let ds = self.dataset(id);
        // `zfs destroy` would unmount a mount of ours silently; one blkdrv does not know of is
        // someone's, so refuse and say where, in whichever mount namespace it is.
        let tables = mount::NsTables::read()?;
        mount::Users::of(
            &tables,
            tables
                .all()
                .filter(|(_, _, m)| m.fstype == "zfs" && m.source == ds.as_str()),
        )
        .check_remove(id, &format!("dataset {ds}"))?;
        z::wait_for_tools(ds.as_str(), TOOL_WAIT);
        self.destroy_layer(id, &ds)
    }

    fn list(&self) -> Result<Vec<ObjectId>> {
        let mut ids = Vec::new();
        for e in z::list_below(&self.rec.dataset, &["filesystem"])? {
            let leaf = e.name.rsplit('/').next().unwrap_or_default();
            // Only canonical decimal names: "007" is not layer 7's dataset, and removing it as
            // an orphan would destroy layer 7.
            match ObjectId::parse(leaf).filter(|id| id.to_string() == leaf) {
                Some(id) => ids.push(id),
                None if leaf == SCRATCH => {}
                None => tracing::debug!(dataset = %e.name, "not a layer dataset; skipped"),
            }
        }
        ids.sort();
        Ok(ids)
    }

    // One layer (every commit measures one): a `zfs get` of that dataset alone; the recursive
    // get reads every layer's properties, which made a 128-layer chain quadratic.
    fn usage(&self, layer: &LayerChain) -> Result<Usage> {
        self.sync_if_mounted(std::slice::from_ref(layer))?;
        let ds = self.dataset(layer.id);
        match z::get(ds.as_str(), USAGE_PROPS) {
            Ok(p) => usage_of(&p),
            Err(e) if z::failure(&e) == Failure::Missing => Err(DriverError::NotFound {
                id: layer.id,
                op: "usage",
            }),
            Err(e) => Err(e),
        }
    }

    // One recursive `zfs get` for all: one per layer took 26.5 s for 200 layers in the VM.
    fn usage_many(&self, layers: &[LayerChain]) -> Vec<Result<Usage>> {
        if layers.len() <= 1 {
            return layers.iter().map(|l| self.usage(l)).collect();
        }
        let all = self
            .sync_if_mounted(layers)
            .and_then(|()| z::get_below(&self.rec.dataset, USAGE_PROPS));
        let all = match all {
            Ok(all) => all,
            Err(e) => {
                let msg = e.to_string();
                return layers
                    .iter()
                    .map(|l| {
                        Err(DriverError::Kernel {
                            op: "read usage (zfs get) of layer",
                            target: l.id.to_string(),
                            message: msg.clone(),
                        })
                    })
                    .collect();
            }
        };
        layers
            .iter()
            .map(|l| {
                let p = all
                    .get(self.dataset(l.id).as_str())
                    .ok_or(DriverError::NotFound {
                        id: l.id,
                        op: "usage",
                    })?;
                usage_of(p)
            })
            .collect()
    }

    // refquota bounds what the layer references, its parent's data included: the size of the
    // filesystem as its user sees it, as btrfs's qgroup limit (max_rfer) and a dm-thin
    // device's fixed size do.
    fn set_limit(&self, id: ObjectId, limit: Bytes) -> Result<()> {
        let ds = self.dataset(id);
        match z::set(&ds, "refquota", &limit.0.to_string()) {
            Ok(()) => Ok(()),
            Err(e) => match z::failure(&e) {
                Failure::Missing => Err(DriverError::NotFound {
                    id,
                    op: "set size limit",
                }),
                Failure::BelowUsage => {
                    let referenced = z::get(ds.as_str(), &["referenced"])
                        .and_then(|p| p.bytes("referenced"))
                        .map(|b| b.to_string())
                        .unwrap_or_else(|_| "more".into());
                    Err(DriverError::Refused {
                        id,
                        op: "set size limit",
                        reason: format!(
                            "{limit} is less than the layer already references ({referenced}, its \
                             parent's data included): the limit covers the whole filesystem"
                        ),
                    })
                }
                _ => Err(e),
            },
        }
    }
}

impl Backing for Zfs {
    fn space(&self) -> Result<Space> {
        let pool = z::zpool_get(
            &self.rec.zpool,
            &[
                "size",
                "allocated",
                "free",
                "health",
                "capacity",
                "fragmentation",
            ],
        )?;
        let ds = z::get(
            self.rec.dataset.as_str(),
            &["used", "available", "compressratio"],
        )?;
        // The parent dataset's view: `available` already leaves out ZFS's slop reserve (up to
        // 128 MiB, a quarter of a small pool), which zpool `free` still counts.
        let used = ds.bytes("used")?;
        let available = ds.bytes("available")?;
        Ok(Space {
            total: used + available,
            used,
            available,
            inodes_total: 0,
            inodes_free: 0,
            // Only a zpool on blkdrv's own loopback files can grow (`zpool online -e` after the
            // pool lengthens a file); what writers can still use is what the policy watches.
            unallocated: (self.rec.created == Created::Zpool && self.file_vdevs().next().is_some())
                .then_some(available),
            pending: None,
            metadata: None,
            details: self.space_details(&pool, &ds),
        })
    }

    fn deactivate(&self) -> Result<()> {
        if self.rec.created != Created::Zpool {
            // Not blkdrv's zpool to take down; its layers are unmounted already.
            return Ok(());
        }
        match z::zpool_export(&self.rec.zpool) {
            Err(e) if z::failure(&e) == Failure::Missing => Ok(()),
            r => r,
        }
    }

    fn destroy(&self) -> Result<()> {
        match self.rec.created {
            Created::Zpool => match z::zpool_destroy(&self.rec.zpool) {
                Err(e) if z::failure(&e) == Failure::Missing => Ok(()),
                r => r,
            },
            Created::Dataset => match z::destroy(&self.rec.dataset, true) {
                Err(e) if z::failure(&e) == Failure::Missing => Ok(()),
                r => r,
            },
            Created::Nothing => self.destroy_layers(),
        }
    }

    fn grow(&self) -> Result<()> {
        if self.rec.created != Created::Zpool {
            return Ok(());
        }
        for f in self.file_vdevs() {
            z::zpool_expand(&self.rec.zpool, f)?;
        }
        Ok(())
    }
}

impl Driver for Zfs {
    fn bench(&self) -> Option<&dyn BenchHooks> {
        Some(self)
    }
}

impl BenchHooks for Zfs {
    // What `zfs clone parent@committed x` costs by itself (the tool's start included, as in
    // blkdrv's create): the ratio shows blkdrv's own checks and bookkeeping.
    fn raw_snapshot(&self, parent: &LayerChain) -> Result<Duration> {
        let scratch = self.scratch();
        // A leftover from an interrupted run.
        match z::destroy(&scratch, true) {
            Err(e) if z::failure(&e) != Failure::Missing => return Err(e),
            _ => {}
        }
        let origin = self.committed(parent.id);
        let props = [("mountpoint", "legacy".to_string())];
        let t = Instant::now();
        z::clone(&origin, &scratch, &props)?;
        let took = t.elapsed();
        z::destroy(&scratch, false)?;
        Ok(took)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(kv: &[(&str, &str)]) -> DriverOptions {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn options_are_checked_and_normalized() {
        let s = Settings::parse(&opts(&[])).unwrap();
        assert_eq!(s.compression, "off");
        assert_eq!(
            s.to_options(),
            opts(&[("compression", "off")]),
            "compression off is recorded explicitly"
        );
        let s = Settings::parse(&opts(&[("compression", "lz4"), ("zpool", "tank")])).unwrap();
        assert_eq!(s.zpool.as_ref().map(ZpoolName::as_str), Some("tank"));
        for (kv, needle) in [
            (vec![("compression", "fast")], "expected off"),
            (vec![("compression", "gzip-10")], "expected off"),
            (vec![("zpool", "1tank")], "start with a letter"),
            (vec![("dataset", "tank@snap")], "not allowed"),
            (vec![("dataset", "tank/a"), ("zpool", "tank")], "give one"),
            (vec![("adopt", "on")], "goes with --dataset"),
            (vec![("adopt", "maybe"), ("dataset", "tank/a")], "on or off"),
            (vec![("colour", "blue")], "unknown option"),
        ] {
            let e = Settings::parse(&opts(&kv)).unwrap_err().to_string();
            assert!(e.contains(needle), "{kv:?}: {e}");
        }
        let long = format!("tank/{}", "a".repeat(MAX_PARENT));
        assert!(Settings::parse(&opts(&[("dataset", &long)])).is_err());
        let ok = format!("tank/{}", "a".repeat(MAX_PARENT - 5));
        let s = Settings::parse(&opts(&[("dataset", &ok), ("adopt", "yes")])).unwrap();
        assert!(s.adopt);
        assert_eq!(s.to_options()["adopt"], "on");
    }

    #[test]
    fn compression_values_follow_zfs() {
        for ok in [
            "on",
            "off",
            "lz4",
            "zstd",
            "zstd-3",
            "zstd-19",
            "zstd-fast",
            "zstd-fast-1",
            "zstd-fast-50",
            "zstd-fast-1000",
            "gzip",
            "gzip-9",
            "zle",
            "lzjb",
        ] {
            assert!(valid_compression(ok), "{ok}");
        }
        for bad in [
            "",
            "lz5",
            "zstd-0",
            "zstd-20",
            "zstd-fast-11",
            "zstd-fast-200",
            "gzip-0",
            "gzip-",
            "LZ4",
        ] {
            assert!(!valid_compression(bad), "{bad}");
        }
    }

    #[test]
    fn identity_round_trips_and_is_checked() {
        let rec = Recorded {
            zpool: ZpoolName::new("blkdrv-t-0a1b2c3d").unwrap(),
            zpool_guid: 1234567890123456789,
            dataset: Dataset::new("blkdrv-t-0a1b2c3d").unwrap(),
            dataset_guid: 42,
            created: Created::Zpool,
        };
        let id = Identity::record(NAME, &rec).unwrap();
        let label = Path::new("/dev/loop0");
        assert_eq!(id.read::<Recorded>(label).unwrap(), rec);
        // The stored form pools have always had: text values under these keys.
        let stored = serde_json::to_value(&id).unwrap();
        assert_eq!(
            stored,
            serde_json::json!({
                "zpool": "blkdrv-t-0a1b2c3d",
                "zpool_guid": "1234567890123456789",
                "dataset": "blkdrv-t-0a1b2c3d",
                "dataset_guid": "42",
                "created": "zpool",
            })
        );
        let edited = |key: &str, value: Option<&str>| {
            let mut m = stored.as_object().unwrap().clone();
            match value {
                Some(v) => m.insert(key.into(), v.into()),
                None => m.remove(key),
            };
            serde_json::from_value::<Identity>(m.into()).unwrap()
        };
        let e = edited("dataset_guid", None)
            .read::<Recorded>(label)
            .unwrap_err()
            .to_string();
        assert!(e.contains("dataset_guid") && e.contains("missing"), "{e}");
        assert!(edited("created", Some("maybe"))
            .read::<Recorded>(label)
            .is_err());
        for (c, text) in [
            (Created::Zpool, "zpool"),
            (Created::Dataset, "dataset"),
            (Created::Nothing, "none"),
        ] {
            let r = edited("created", Some(text))
                .read::<Recorded>(label)
                .unwrap();
            assert_eq!(r.created, c);
        }
    }

    #[test]
    fn layer_names_are_canonical_ids() {
        let parent = Dataset::new("tank/blkdrv-t").unwrap();
        assert!(collides(&parent, "tank/blkdrv-t/17"));
        assert!(collides(&parent, "tank/blkdrv-t/007"));
        assert!(collides(&parent, "tank/blkdrv-t/bench-raw"));
        assert!(!collides(&parent, "tank/blkdrv-t/app"));
        assert!(!collides(&parent, "tank/blkdrv-tx/17"));
        assert!(!collides(&parent, "tank/blkdrv-t"));
        // The longest parent still leaves room for every id and its snapshot.
        let p = Dataset::new(&format!("tank/{}", "a".repeat(MAX_PARENT - 5))).unwrap();
        let max = ObjectId::new(ObjectId::MAX).unwrap();
        let ds = p.child(&max.to_string()).unwrap();
        assert!(ds.snapshot(COMMITTED).is_ok());
        assert!(p.child(SCRATCH).is_ok());
    }

    #[test]
    fn read_write_mounts_are_told_by_their_own_options() {
        let m = mount::parse_mountinfo(
            "50 1 0:60 / /m1 rw,relatime shared:9 - zfs tank/7 rw,xattr,noacl\n\
             51 1 0:60 / /m2 ro,relatime shared:9 - zfs tank/7 rw,xattr,noacl\n",
        );
        assert!(is_rw(&m[0]));
        assert!(!is_rw(&m[1]));
        assert_eq!(m[0].source, "tank/7");
    }
}
