//! devicemapper: block-granularity copy-on-write on a dm-thin pool, the way Red Hat and Fedora
//! hosts ran container storage.
//!
//! The pool is a `thin-pool` target over a metadata and a data device (two loopback files, two
//! block devices, or one device split in two). One base thin device (thin id 0) is formatted once
//! at `pool init`; every layer is a thin snapshot (`create_snap`) of its parent or of the base, so
//! no layer pays for mkfs. Thin ids are the pool's object ids. Each create and delete advances the
//! thin-pool transaction id, which the pool records, so a pool changed behind blkdrv's back is
//! refused on open.
//!
//! Everything goes through the `devicemapper` crate's ioctls; device nodes are `/dev/dm-N` from
//! devtmpfs, so no udev is needed. `thin_check` (on activation) and `thin_ls` (listing and exact
//! per-layer usage) run through `sys::exec`.

use crate::error::{DriverError, Result};
use crate::fsbacked::FsType;
use crate::identity;
use crate::options;
use crate::plan::{
    self, BackingPlan, BackingRequest, LoopbackFile, OptionKind, OptionRole, OptionSpec,
};
use crate::sys::lvm::{self, PoolLv};
use crate::sys::{blockdev, exec, mount, signature};
use crate::{Backing, BenchHooks, Layers};
use crate::{
    Bytes, Capabilities, Driver, DriverFactory, DriverOptions, Granularity, Identity, LayerChain,
    MetaSpace, MountFlags, MountMode, ObjectId, PoolContext, Requirements, Space, Usage,
};
use devicemapper as dmc;
use devicemapper::{
    DevId, Device, DmDevice, DmError, DmFlags, DmName, DmNameBuf, DmOptions, LinearDev,
    LinearDevTargetParams, LinearTargetParams, TargetLine, ThinDev, ThinDevId, ThinPoolDev,
    ThinPoolStatus, ThinPoolStatusSummary, DM,
};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

const NAME: &str = "devicemapper";
/// The base device every layer descends from; object ids start at 1, so 0 is free.
const BASE_ID: u32 = 0;
/// Thin id of the bench's raw snapshot: the one id the store never allocates to a layer.
const RAW_BENCH_ID: u32 = ObjectId::SCRATCH.get();
const KIB64: u64 = 64 << 10;

const KEY_FS: &str = "fs";
const KEY_BLOCK_SIZE: &str = "block_size";
const KEY_BASE_SIZE: &str = "base_size";
const KEY_METADATA_SIZE: &str = "metadata_size";
const KEY_DISCARD: &str = "discard";
const KEY_OVERCOMMIT: &str = "overcommit";
const KEY_LVM: &str = "lvm";
const KEY_VG: &str = "vg";
const KEY_THINPOOL: &str = "thinpool";
const KEY_AX_THRESHOLD: &str = "autoextend_threshold";
const KEY_AX_PERCENT: &str = "autoextend_percent";
const KEY_MKFS_ARGS: &str = "mkfs_args";
/// Not stored: the device joins the pool's devices.
const KEY_METADATA_DEVICE: &str = "metadata_device";
/// The options, in the order unknown-option errors list them.
const OPTIONS: &[OptionSpec] = &[
    OptionSpec::flag(
        KEY_FS,
        "fs",
        "FS",
        "Filesystem of the backing (vfs, overlay) or of the thin devices (devicemapper): \
         xfs (default) or ext4.",
    )
    .host_default(),
    OptionSpec::key(
        KEY_BLOCK_SIZE,
        "thin-pool block size: 64KiB (default) to 1GiB, a multiple of 64KiB",
    ),
    OptionSpec::key(
        KEY_BASE_SIZE,
        "size of the base thin device every layer descends from",
    ),
    OptionSpec::key(
        KEY_METADATA_SIZE,
        "thin-pool metadata size, 2MiB to 16GiB (default from the data size)",
    ),
    OptionSpec::key(
        KEY_DISCARD,
        "pass discards down to the data device: on (default) or off",
    ),
    OptionSpec::key(
        KEY_OVERCOMMIT,
        "allow a base size larger than the data area: on or off (default)",
    ),
    OptionSpec::flag(
        KEY_LVM,
        "lvm",
        "",
        "Make an LVM volume group on the --device(s) and a thin-pool LV in it (40% of the \
         VG; the rest is room for LVM's autoextend profile), like container-storage-setup \
         on Red Hat/Fedora hosts.",
    )
    .kind(OptionKind::Switch { value: "on" }),
    OptionSpec::flag(
        KEY_VG,
        "vg",
        "NAME",
        "With --lvm: name of the volume group (default blkdrv-<pool>).",
    ),
    OptionSpec::flag(
        KEY_THINPOOL,
        "thinpool",
        "VG/LV",
        "Use this existing, empty LVM thin-pool LV instead of devices.",
    )
    .role(OptionRole::Existing),
    OptionSpec::key(
        KEY_AX_THRESHOLD,
        "LVM autoextend threshold, percent of the thin pool (default 80)",
    ),
    OptionSpec::key(
        KEY_AX_PERCENT,
        "LVM autoextend step, percent of the thin pool (default 20)",
    ),
    OptionSpec::flag(
        KEY_MKFS_ARGS,
        "mkfs-arg",
        "ARG",
        "An extra argument for mkfs of the base filesystem (repeatable, one word each), \
         e.g. --mkfs-arg=-i --mkfs-arg=size=512 for xfs.",
    )
    .kind(OptionKind::Words),
    OptionSpec::flag(
        KEY_METADATA_DEVICE,
        "metadata-device",
        "DEV",
        "A separate device for thin-pool metadata (with one --device for data).",
    )
    .kind(OptionKind::Device),
];
/// The LV blkdrv creates in `--lvm` mode, as container-storage-setup named Docker's.
const LVM_POOL_LV: &str = "thinpool";
/// Share of the VG's free space the pool's data starts with; the rest is room to autoextend.
const LVM_DATA_PCT: u8 = 40;

pub struct Factory;

fn bad(key: &str, value: &str, reason: impl Into<String>) -> DriverError {
    options::bad(NAME, key, value, reason)
}

fn parse_size(key: &str, v: &str) -> Result<Bytes> {
    options::size(NAME, key, v)
}

fn on_off(key: &str, v: &str) -> Result<bool> {
    options::on_off(NAME, key, v)
}

/// Metadata needed for a data area, after thin_metadata_size's rules of thumb: a mapping costs
/// about 64 bytes and snapshots share btree nodes; doubled for headroom, never under 16 MiB
/// (the kernel needs 2 MiB; small pools fill metadata fast with many snapshots), at most the
/// kernel's 16 GiB.
pub fn metadata_size_for(data: Bytes, block: Bytes) -> Bytes {
    let blocks = data.0 / block.0.max(1);
    let bytes = (blocks * 128).clamp(16 << 20, 16 << 30);
    Bytes(bytes.div_ceil(1 << 20) << 20)
}

fn dm_errno(e: &DmError) -> Option<nix::errno::Errno> {
    match e {
        DmError::Core(dmc::errors::Error::Ioctl(_, _, _, errno)) => Some(**errno),
        _ => None,
    }
}

fn dm_err(op: &'static str, target: impl std::fmt::Display, e: DmError) -> DriverError {
    match dm_errno(&e) {
        Some(errno) => DriverError::sys(op, target, errno),
        None => DriverError::Kernel {
            op,
            target: target.to_string(),
            message: e.to_string(),
        },
    }
}

fn device_of(dev: &Path) -> Result<Device> {
    let devno = dmc::devnode_to_devno(dev)
        .map_err(|e| dm_err("look up device number of", dev.display(), e))?
        .ok_or_else(|| DriverError::Device {
            device: dev.to_path_buf(),
            reason: "not a block device".into(),
        })?;
    Ok(Device::from(devno))
}

fn sectors(b: Bytes) -> dmc::Sectors {
    dmc::Sectors(b.0 / 512)
}

/// Where the metadata and data areas live on the pool's devices.
struct Areas {
    meta: (PathBuf, Bytes, Bytes),
    data: (PathBuf, Bytes, Bytes),
}

/// Devices in context order: [data, metadata] (two devices or two loopback files), or [one]
/// split into metadata first, then data.
fn areas(ctx: &PoolContext, options: &Settings) -> Result<Areas> {
    match ctx.devices.as_slice() {
        [data, meta] => Ok(Areas {
            data: (data.clone(), Bytes(0), blockdev::size(data)?),
            meta: (meta.clone(), Bytes(0), blockdev::size(meta)?),
        }),
        [one] => {
            let total = blockdev::size(one)?;
            let meta = options
                .metadata_size
                .unwrap_or_else(|| metadata_size_for(total, options.block_size));
            if meta.0 * 2 >= total.0 {
                return Err(DriverError::Device {
                    device: one.clone(),
                    reason: format!("{total} is too small to hold {meta} of metadata and data"),
                });
            }
            Ok(Areas {
                meta: (one.clone(), Bytes(0), meta),
                data: (one.clone(), meta, Bytes(total.0 - meta.0)),
            })
        }
        other => Err(DriverError::Device {
            device: ctx.state_dir.clone(),
            reason: format!(
                "a thin pool needs a data device and optionally a metadata device, got {}",
                other.len()
            ),
        }),
    }
}

/// Validated options.
#[derive(Debug, Clone)]
struct Settings {
    fs: FsType,
    block_size: Bytes,
    base_size: Option<Bytes>,
    metadata_size: Option<Bytes>,
    discard: bool,
    overcommit: bool,
    /// Make a VG and a thin-pool LV on the devices (`--lvm`).
    lvm: bool,
    vg: Option<String>,
    /// Use this existing thin-pool LV (`--thinpool VG/LV`).
    thinpool: Option<PoolLv>,
    autoextend: lvm::Autoextend,
    /// Extra mkfs arguments for the base filesystem (words, space-separated).
    mkfs_args: Vec<String>,
}

fn pct(key: &str, v: &str) -> Result<u8> {
    v.trim_end_matches('%')
        .parse::<u8>()
        .ok()
        .filter(|p| (1..=100).contains(p))
        .ok_or_else(|| bad(key, v, "expected a percentage from 1 to 100"))
}

impl Settings {
    fn parse(options: &DriverOptions) -> Result<Settings> {
        options::check_known(NAME, options, &plan::stored_keys(OPTIONS))?;
        let get = |k: &str| options.get(k).map(String::as_str);
        let fs = match get(KEY_FS).unwrap_or("xfs") {
            "xfs" => FsType::Xfs,
            "ext4" => FsType::Ext4,
            v => return Err(bad(KEY_FS, v, "expected xfs or ext4")),
        };
        let block_size = match get(KEY_BLOCK_SIZE) {
            Some(v) => parse_size(KEY_BLOCK_SIZE, v)?,
            None => Bytes(KIB64),
        };
        // The kernel takes 64 KiB to 1 GiB in multiples of 64 KiB.
        if block_size.0 % KIB64 != 0 || block_size.0 == 0 || block_size.0 > 1 << 30 {
            return Err(bad(
                KEY_BLOCK_SIZE,
                &block_size.to_string(),
                "must be a multiple of 64KiB between 64KiB and 1GiB",
            ));
        }
        let base_size = get(KEY_BASE_SIZE)
            .map(|v| parse_size(KEY_BASE_SIZE, v))
            .transpose()?;
        let metadata_size = get(KEY_METADATA_SIZE)
            .map(|v| parse_size(KEY_METADATA_SIZE, v))
            .transpose()?;
        if let Some(m) = metadata_size {
            if m < Bytes::mib(2) || m > Bytes::gib(16) {
                return Err(bad(
                    KEY_METADATA_SIZE,
                    &m.to_string(),
                    "thin-pool metadata must be between 2MiB and 16GiB",
                ));
            }
        }
        let lvm = get(KEY_LVM)
            .map(|v| on_off(KEY_LVM, v))
            .transpose()?
            .unwrap_or(false);
        let vg = get(KEY_VG).map(str::to_string);
        if let Some(v) = &vg {
            if !lvm::valid_name(v) {
                return Err(bad(KEY_VG, v, "not a valid LVM volume group name"));
            }
            if !lvm {
                return Err(bad(KEY_VG, v, "a volume group name goes with --lvm"));
            }
        }
        let thinpool = get(KEY_THINPOOL)
            .map(|v| v.parse::<PoolLv>().map_err(|e| bad(KEY_THINPOOL, v, e)))
            .transpose()?;
        if let (Some(t), true) = (&thinpool, lvm) {
            return Err(bad(
                KEY_THINPOOL,
                &t.to_string(),
                "--thinpool uses an existing pool; --lvm makes a new one: pick one",
            ));
        }
        let autoextend = lvm::Autoextend {
            threshold_pct: get(KEY_AX_THRESHOLD)
                .map(|v| pct(KEY_AX_THRESHOLD, v))
                .transpose()?
                .unwrap_or(80),
            percent: get(KEY_AX_PERCENT)
                .map(|v| pct(KEY_AX_PERCENT, v))
                .transpose()?
                .unwrap_or(20),
        };
        let mkfs_args = get(KEY_MKFS_ARGS)
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default();
        Ok(Settings {
            mkfs_args,
            lvm,
            vg,
            thinpool,
            autoextend,
            fs,
            block_size,
            base_size,
            metadata_size,
            discard: get(KEY_DISCARD)
                .map(|v| on_off(KEY_DISCARD, v))
                .transpose()?
                .unwrap_or(true),
            overcommit: get(KEY_OVERCOMMIT)
                .map(|v| on_off(KEY_OVERCOMMIT, v))
                .transpose()?
                .unwrap_or(false),
        })
    }

    /// The smallest data area: the base filesystem must fit (xfs refuses under 300 MiB).
    fn min_size(&self) -> Bytes {
        match self.fs {
            FsType::Ext4 => Bytes::mib(64),
            _ => Bytes::mib(320),
        }
    }

    fn to_options(&self) -> DriverOptions {
        let mut o = DriverOptions::new();
        o.insert(KEY_FS.into(), self.fs.name().into());
        o.insert(KEY_BLOCK_SIZE.into(), self.block_size.0.to_string());
        if let Some(b) = self.base_size {
            o.insert(KEY_BASE_SIZE.into(), b.0.to_string());
        }
        if let Some(m) = self.metadata_size {
            o.insert(KEY_METADATA_SIZE.into(), m.0.to_string());
        }
        o.insert(
            KEY_DISCARD.into(),
            if self.discard { "on" } else { "off" }.into(),
        );
        o.insert(
            KEY_OVERCOMMIT.into(),
            if self.overcommit { "on" } else { "off" }.into(),
        );
        if self.lvm {
            o.insert(KEY_LVM.into(), "on".into());
        }
        if let Some(v) = &self.vg {
            o.insert(KEY_VG.into(), v.clone());
        }
        if let Some(t) = &self.thinpool {
            o.insert(KEY_THINPOOL.into(), t.to_string());
        }
        if !self.mkfs_args.is_empty() {
            o.insert(KEY_MKFS_ARGS.into(), self.mkfs_args.join(" "));
        }
        if self.lvm || self.thinpool.is_some() {
            o.insert(
                KEY_AX_THRESHOLD.into(),
                self.autoextend.threshold_pct.to_string(),
            );
            o.insert(KEY_AX_PERCENT.into(), self.autoextend.percent.to_string());
        }
        o
    }

    /// Low water mark: the kernel raises an event when free data blocks fall under it.
    fn low_water(&self, data: Bytes) -> dmc::DataBlocks {
        dmc::DataBlocks((data.0 / self.block_size.0) / 10)
    }

    fn feature_args(&self) -> Vec<String> {
        // Zeroing new blocks is redundant on fresh loop files and costs every first write;
        // LVM's `--zero n` and container-storage-setup make the same choice. A full pool must
        // fail writes with ENOSPC, not queue them forever.
        let mut f = vec!["skip_block_zeroing".into(), "error_if_no_space".into()];
        if !self.discard {
            f.push("ignore_discard".into());
        }
        f
    }
}

/// dm names of one pool's devices. The prefix is random per pool (kept in the identity), so
/// pools of the same name under different roots never collide.
#[derive(Debug, Clone)]
struct Names {
    prefix: String,
    /// The thin-pool device: `<prefix>-pool`, or the LVM pool LV's dm name.
    pool: DmNameBuf,
}

impl Names {
    fn new(prefix: String, lvm: Option<&PoolLv>) -> Names {
        let pool = match lvm {
            Some(p) => p.dm_name(""),
            None => format!("{prefix}-pool"),
        };
        Names {
            pool: DmNameBuf::new(pool).expect("LVM and blkdrv names are valid dm names"),
            prefix,
        }
    }
    fn name(&self, what: &str) -> DmNameBuf {
        DmNameBuf::new(format!("{}-{what}", self.prefix)).expect("short ascii names are valid")
    }
    fn pool(&self) -> DmNameBuf {
        self.pool.clone()
    }
    fn thin(&self, id: u32) -> DmNameBuf {
        if id == BASE_ID {
            self.name("base")
        } else {
            self.name(&id.to_string())
        }
    }
}

fn dm() -> Result<DM> {
    DM::new().map_err(|e| DriverError::Unavailable {
        driver: NAME.into(),
        reason: format!("cannot open /dev/mapper/control: {e}"),
    })
}

/// Removes every dm device of one pool: thin devices, then the pool, then the linear devices
/// under it.
fn remove_all(dm: &DM, names: &Names) -> Result<()> {
    let prefix = format!("{}-", names.prefix);
    let all = dm
        .list_devices()
        .map_err(|e| dm_err("list devices", "device-mapper", e))?;
    let mut order: Vec<DmNameBuf> = all.into_iter().map(|(n, _, _)| n).collect();
    order.retain(|n| n.to_string().starts_with(&prefix));
    order.sort_by_key(|n| match n.to_string().trim_start_matches(&prefix) {
        "pool" => 1,
        "meta" | "data" => 2,
        _ => 0,
    });
    for n in order {
        let name: &DmName = &n;
        dm.device_remove(&DevId::Name(name), DmOptions::default())
            .map_err(|e| dm_err("deactivate", name, e))?;
    }
    Ok(())
}

/// [`setup_pool_inner`], and on failure takes down what it set up (the linear devices would
/// otherwise hold the loop devices), unless the pool was already active before.
fn setup_pool(dm: &DM, names: &Names, a: &Areas, s: &Settings, fresh: bool) -> Result<ThinPoolDev> {
    let was_active = dmc::device_exists(dm, &names.pool())
        .map_err(|e| dm_err("list devices for", &*names.pool(), e))?;
    setup_pool_inner(dm, names, a, s, fresh).inspect_err(|_| {
        if !was_active {
            if let Err(r) = remove_all(dm, names) {
                tracing::warn!("cleaning up after a failed activation: {r}");
            }
        }
    })
}

/// Brings up the linear metadata/data devices and the thin-pool (or attaches to them).
fn setup_pool_inner(
    dm: &DM,
    names: &Names,
    a: &Areas,
    s: &Settings,
    fresh: bool,
) -> Result<ThinPoolDev> {
    // The pool first: a table-less pool holds nothing, a table-less linear device nothing.
    clear_tableless(dm, &names.pool())?;
    for what in ["meta", "data"] {
        clear_tableless(dm, &names.name(what))?;
    }
    let linear = |what: &str, (dev, off, len): &(PathBuf, Bytes, Bytes)| -> Result<LinearDev> {
        let params =
            LinearDevTargetParams::Linear(LinearTargetParams::new(device_of(dev)?, sectors(*off)));
        LinearDev::setup(
            dm,
            &names.name(what),
            None,
            vec![TargetLine::new(dmc::Sectors(0), sectors(*len), params)],
        )
        .map_err(|e| dm_err("set up linear device", &*names.name(what), e))
    };
    let meta = linear("meta", &a.meta)?;
    let data = linear("data", &a.data)?;
    let block = sectors(s.block_size);
    let lwm = s.low_water(a.data.2);
    let pool_exists = dmc::device_exists(dm, &names.pool())
        .map_err(|e| dm_err("list devices for", &*names.pool(), e))?;
    if fresh {
        ThinPoolDev::new(
            dm,
            &names.pool(),
            None,
            meta,
            data,
            block,
            lwm,
            s.feature_args(),
        )
        .map_err(|e| dm_err("create thin-pool", &*names.pool(), e))
    } else {
        if !pool_exists {
            // LVM runs thin_check before activating a pool; so do we: activating damaged
            // metadata can make it worse.
            let node = meta.devnode();
            exec::run(
                "thin_check",
                [node.as_os_str()],
                "check thin-pool metadata before activation",
            )
            .map_err(|e| DriverError::Device {
                device: a.meta.0.clone(),
                reason: format!(
                    "thin_check found damaged pool metadata ({e}); repair it with thin_repair before using the pool"
                ),
            })?;
        }
        ThinPoolDev::setup(
            dm,
            &names.pool(),
            None,
            meta,
            data,
            block,
            lwm,
            s.feature_args(),
        )
        .map_err(|e| dm_err("activate thin-pool", &*names.pool(), e))
    }
}

impl DriverFactory for Factory {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "device-mapper thin provisioning (block copy-on-write, thin snapshots)"
    }

    fn requirements(&self) -> Requirements {
        Requirements {
            filesystems: vec!["xfs", "ext4"],
            tools: vec!["thin_check", "thin_ls", "mkfs.xfs", "mkfs.ext4"],
            // The node /dev/mapper/control can exist without the driver (packages create it);
            // sysfs shows whether the kernel really has device-mapper.
            paths: vec!["/sys/class/misc/device-mapper"],
        }
    }

    fn options(&self) -> &'static [OptionSpec] {
        OPTIONS
    }

    fn validate_options(&self, options: &DriverOptions) -> Result<DriverOptions> {
        Settings::parse(options).map(|s| s.to_options())
    }

    fn plan(&self, options: &DriverOptions, request: &BackingRequest) -> Result<BackingPlan> {
        let s = Settings::parse(options)?;
        let meta_device = request
            .option_devices
            .get(KEY_METADATA_DEVICE)
            .is_some_and(|d| !d.is_empty());
        if s.lvm && meta_device {
            return Err(DriverError::BadRequest {
                driver: NAME,
                reason: "--metadata-device goes with plain devices; --lvm puts metadata in the \
                         volume group: pick one"
                    .into(),
            });
        }
        // A VG on the pool's own loopback files takes an explicit --size (tests do that).
        if s.lvm && request.devices.is_empty() && request.size.is_none() {
            return Err(bad(
                KEY_LVM,
                "on",
                "--lvm needs --device DEV for the volume group",
            ));
        }
        // A thin pool on loopback files: data, then metadata sized for it.
        let files = |size: Bytes| {
            let meta = s
                .metadata_size
                .unwrap_or_else(|| metadata_size_for(size, s.block_size));
            vec![
                LoopbackFile { stem: "data", size },
                LoopbackFile {
                    stem: "metadata",
                    size: meta,
                },
            ]
        };
        plan::standard(NAME, OPTIONS, options, request, s.min_size(), &files)
    }

    fn min_device_size(&self, options: &DriverOptions) -> Bytes {
        Settings::parse(options).map_or(Bytes::mib(320), |s| s.min_size())
    }

    fn format(&self, ctx: &PoolContext) -> Result<Identity> {
        let s = Settings::parse(&ctx.options)?;
        let dm = dm()?;
        if s.lvm || s.thinpool.is_some() {
            return format_lvm(&dm, ctx, &s);
        }
        let a = areas(ctx, &s)?;
        let names = Names::new(format!("blkdrv-{}", crate::id::random_tag()), None);
        let base_size = base_size_for(&s, a.data.2, s.min_size())?;
        // Fresh metadata: the kernel formats the area only if its superblock is blank.
        zero_head(&a.meta.0, a.meta.1)?;
        let made = setup_pool(&dm, &names, &a, &s, true)
            .and_then(|pool| make_base(&dm, &names, &pool, &s, base_size));
        if made.is_err() {
            // A half-made pool would keep the loop devices busy: take it all down.
            if let Err(r) = remove_all(&dm, &names) {
                tracing::warn!("cleaning up after a failed format: {r}");
            }
        }
        let uuid = made?;
        let rec = Recorded {
            dm_prefix: names.prefix.clone(),
            base_fs_uuid: uuid,
            base_size,
            fs: s.fs,
            lvm: None,
        };
        Identity::record(NAME, &rec)
    }

    fn open(&self, ctx: &PoolContext, identity: &Identity) -> Result<Box<dyn Driver>> {
        let s = Settings::parse(&ctx.options)?;
        let label = ctx
            .devices
            .first()
            .cloned()
            .unwrap_or_else(|| ctx.state_dir.clone());
        let rec = Recorded::read(identity, &label)?;
        let prefix = rec.dm_prefix;
        let base_size = rec.base_size;
        let recorded_uuid = rec.base_fs_uuid;
        let dm = dm()?;
        let (names, pool, home, label) = match rec.lvm {
            Some(LvmRecorded {
                lvm_pool: lv,
                lvm_uuid: recorded,
                lvm_created,
                lvm_vg_created,
            }) => {
                let lv_path = PathBuf::from(format!("/dev/{lv}"));
                let info = lvm::pool_info(&lv)?;
                if info.uuid != recorded {
                    return Err(DriverError::IdentityMismatch {
                        device: lv_path,
                        field: "LVM thin-pool LV UUID".into(),
                        recorded,
                        found: format!("{}: {lv} was recreated or is another pool", info.uuid),
                    });
                }
                let names = Names::new(prefix, Some(&lv));
                if !exists(&dm, &names.pool())? {
                    lvm::activate(&lv)?;
                }
                let pool = attach_pool(&dm, &names.pool())?;
                let home = Home::Lvm {
                    created: lvm_created,
                    vg_created: lvm_vg_created,
                    pool: lv,
                };
                (names, pool, home, lv_path)
            }
            None => {
                let a = areas(ctx, &s)?;
                let names = Names::new(prefix, None);
                let pool = setup_pool(&dm, &names, &a, &s, false)?;
                (names, pool, Home::Devices, a.data.0)
            }
        };
        let d = DmThin {
            block: Bytes(pool.data_block_size().0 * 512),
            inner: Mutex::new(Inner { dm, pool }),
            names,
            settings: s,
            base_size,
            devices: ctx.devices.clone(),
            home,
        };
        let txid = d.txid()?;
        if let Some(g) = ctx.generation {
            // One ahead is a crash between a kernel change and the store update, which the
            // pool's recovery finishes or undoes; anything else was done behind our back.
            if txid != g && txid != g + 1 {
                return Err(DriverError::IdentityMismatch {
                    device: label,
                    field: "thin-pool transaction id".into(),
                    recorded: g.to_string(),
                    found: format!(
                        "{txid}: the pool was changed outside blkdrv (or belongs to another pool record)"
                    ),
                });
            }
        }
        let found = d.with_thin(BASE_ID, signature::fs_uuid)?;
        let found = found
            .map(|(_, u)| u)
            .unwrap_or_else(|| "no filesystem".into());
        if found != recorded_uuid {
            return Err(DriverError::IdentityMismatch {
                device: label,
                field: "base filesystem UUID".into(),
                recorded: recorded_uuid,
                found,
            });
        }
        Ok(Box::new(d))
    }
}

/// The identity recorded at `pool init` and checked on every open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Recorded {
    /// Prefix of the pool's dm device names.
    dm_prefix: String,
    /// UUID of the base device's filesystem, which every layer inherits.
    base_fs_uuid: String,
    #[serde(with = "identity::bytes")]
    base_size: Bytes,
    fs: FsType,
    /// Where the thin pool lives when LVM holds it; `None`: blkdrv's own dm pool.
    #[serde(flatten)]
    lvm: Option<LvmRecorded>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct LvmRecorded {
    #[serde(with = "identity::text")]
    lvm_pool: PoolLv,
    /// The thin-pool LV's UUID: a recreated LV of the same name is another pool.
    lvm_uuid: String,
    /// blkdrv made the LV (`--lvm`), so destroy removes it; and its VG.
    #[serde(default, with = "identity::yes_no")]
    lvm_created: bool,
    #[serde(default, with = "identity::yes_no")]
    lvm_vg_created: bool,
}

impl Recorded {
    fn read(identity: &Identity, device: &Path) -> Result<Recorded> {
        let rec: Recorded = identity.read(device)?;
        if rec.lvm.is_none() && identity.get("lvm_pool").is_some() {
            // serde reads a flattened Option that fails as None: say what is wrong instead.
            identity.read::<LvmRecorded>(device)?;
        }
        Ok(rec)
    }
}

/// Size of the base device (and so of every layer): as asked, or the pool's data up to the
/// 10 GiB moby used; over the pool only with overcommit.
fn base_size_for(s: &Settings, data_size: Bytes, min: Bytes) -> Result<Bytes> {
    let base_size = match s.base_size {
        Some(b) if b > data_size && !s.overcommit => {
            return Err(bad(
                KEY_BASE_SIZE,
                &b.to_string(),
                format!(
                    "larger than the pool's {data_size} of data; add -o overcommit=on to allow it"
                ),
            ))
        }
        Some(b) => b,
        None => Bytes(data_size.0.min(10 << 30)),
    };
    if base_size < min {
        return Err(bad(
            KEY_BASE_SIZE,
            &base_size.to_string(),
            format!("too small for a {} filesystem", s.fs.name()),
        ));
    }
    Ok(base_size)
}

/// Removes `name` if it exists without a live table: what a process killed between creating a
/// dm device and loading its table leaves behind (setup would otherwise fail on it forever).
fn clear_tableless(dm: &DM, name: &DmName) -> Result<()> {
    if !exists(dm, name)? {
        return Ok(());
    }
    let info = dm
        .device_info(&DevId::Name(name))
        .map_err(|e| dm_err("read device info of", name, e))?;
    if !info.flags().contains(DmFlags::DM_ACTIVE_PRESENT) && info.open_count() == 0 {
        tracing::info!(device = %name, "removing a device left without a table");
        dm.device_remove(&DevId::Name(name), DmOptions::default())
            .map_err(|e| dm_err("remove table-less device", name, e))?;
    }
    Ok(())
}

fn exists(dm: &DM, name: &DmName) -> Result<bool> {
    dmc::device_exists(dm, name).map_err(|e| dm_err("list devices for", name, e))
}

/// `pool init --lvm` (a new VG and thin-pool LV on the devices) or `--thinpool VG/LV` (an
/// existing, empty thin-pool LV), then the base device as for any pool.
fn format_lvm(dm: &DM, ctx: &PoolContext, s: &Settings) -> Result<Identity> {
    let (lv, created) = match &s.thinpool {
        Some(t) => (t.clone(), None),
        None => {
            let vg =
                s.vg.clone()
                    .unwrap_or_else(|| format!("blkdrv-{}", ctx.pool));
            let lv = PoolLv {
                vg,
                lv: LVM_POOL_LV.into(),
            };
            if ctx.devices.is_empty() {
                return Err(bad(
                    KEY_LVM,
                    "on",
                    "--lvm needs --device DEV for the volume group",
                ));
            }
            let mut total = 0;
            for d in &ctx.devices {
                total += blockdev::size(d)?.0;
            }
            let data = Bytes(total / 100 * u64::from(LVM_DATA_PCT));
            let meta = s
                .metadata_size
                .unwrap_or_else(|| metadata_size_for(data, s.block_size));
            let c = lvm::create_thin_pool(
                &lv,
                &ctx.devices,
                s.block_size,
                meta,
                LVM_DATA_PCT,
                s.autoextend,
            )?;
            (lv, Some(c))
        }
    };
    let names = Names::new(format!("blkdrv-{}", crate::id::random_tag()), Some(&lv));
    let made = (|| {
        let info = lvm::pool_info(&lv)?;
        if info.thin_lvs > 0 {
            return Err(DriverError::Device {
                device: PathBuf::from(format!("/dev/{lv}")),
                reason: format!(
                    "has {} LVM thin volume(s); blkdrv needs a thin pool of its own (lvcreate --type thin-pool)",
                    info.thin_lvs
                ),
            });
        }
        if !exists(dm, &names.pool())? {
            lvm::activate(&lv)?;
        }
        let pool = attach_pool(dm, &names.pool())?;
        if created.is_none() {
            // Someone else's thin devices would collide with blkdrv's ids.
            let txid = pool_status(dm, &names, &pool)?.transaction_id;
            let ids = thin_ls(dm, &names, &pool)?;
            if txid != 0 || !ids.is_empty() {
                return Err(DriverError::Device {
                    device: PathBuf::from(format!("/dev/{lv}")),
                    reason: format!(
                        "is in use: transaction id {txid} and {} thin device(s) (ids {}); blkdrv adopts only an empty thin pool",
                        ids.len(),
                        ids.iter().map(|(i, _, _)| i.to_string()).collect::<Vec<_>>().join(", ")
                    ),
                });
            }
        }
        let data = Bytes(pool.data_dev().size().bytes().0 as u64);
        let mut s = s.clone();
        s.block_size = Bytes(pool.data_block_size().0 * 512);
        let base_size = base_size_for(&s, data, s.min_size())?;
        let uuid = make_base(dm, &names, &pool, &s, base_size).inspect_err(|_| {
            if created.is_none() {
                // Give the adopted pool back as found: without the half-made base.
                let _ = dm.target_msg(&DevId::Name(&names.pool()), None, "delete 0");
            }
        })?;
        Ok((info, base_size, uuid))
    })();
    let (info, base_size, uuid) = match made {
        Ok(m) => m,
        Err(e) => {
            // Leave an adopted pool as found; remove what blkdrv made.
            let undo = match &created {
                Some(c) => {
                    remove_all(dm, &names).and_then(|()| lvm::remove_thin_pool(c, &ctx.devices))
                }
                None => remove_all(dm, &names),
            };
            if let Err(u) = undo {
                tracing::warn!("cleaning up after a failed LVM pool init: {u}");
            }
            return Err(e);
        }
    };
    let rec = Recorded {
        dm_prefix: names.prefix.clone(),
        base_fs_uuid: uuid,
        base_size,
        fs: s.fs,
        lvm: Some(LvmRecorded {
            lvm_pool: lv,
            lvm_uuid: info.uuid,
            lvm_created: created.is_some(),
            lvm_vg_created: created.as_ref().is_some_and(|c| c.vg_created),
        }),
    };
    Identity::record(NAME, &rec)
}

/// Builds a [`ThinPoolDev`] handle for a thin pool someone else set up (LVM), from the kernel's
/// own tables, so thin devices can be made on it as on blkdrv's own pools.
fn attach_pool(dm: &DM, name: &DmName) -> Result<ThinPoolDev> {
    let table = |n: &DmName| {
        dm.table_status(
            &DevId::Name(n),
            DmOptions::default().set_flags(DmFlags::DM_STATUS_TABLE),
        )
        .map_err(|e| dm_err("read table of", n, e))
    };
    let uuid = |info: &dmc::DeviceInfo| info.uuid().map(|u| u.to_owned());
    let bad_table = |n: &DmName, e: DmError| DriverError::Kernel {
        op: "parse table of",
        target: n.to_string(),
        message: e.to_string(),
    };
    let all = dm
        .list_devices()
        .map_err(|e| dm_err("list devices", "device-mapper", e))?;
    let linear = |dev: Device| -> Result<LinearDev> {
        let (n, _, _) =
            all.iter()
                .find(|(_, d, _)| *d == dev)
                .ok_or_else(|| DriverError::Kernel {
                    op: "find device-mapper device",
                    target: dev.to_string(),
                    message: "the thin pool's metadata or data device is not a dm device".into(),
                })?;
        let (info, lines) = table(n)?;
        let mut t = Vec::new();
        for (start, len, ty, params) in lines {
            let p = format!("{ty} {params}")
                .parse::<LinearDevTargetParams>()
                .map_err(|e| bad_table(n, e))?;
            t.push(TargetLine::new(dmc::Sectors(start), dmc::Sectors(len), p));
        }
        LinearDev::setup(dm, n, uuid(&info).as_deref(), t).map_err(|e| dm_err("attach to", &**n, e))
    };
    let (info, lines) = table(name)?;
    let [(_, _, ty, params)] = lines.as_slice() else {
        return Err(DriverError::Kernel {
            op: "parse table of",
            target: name.to_string(),
            message: format!("expected one thin-pool line, found {}", lines.len()),
        });
    };
    let p = format!("{ty} {params}")
        .parse::<dmc::ThinPoolTargetParams>()
        .map_err(|e| bad_table(name, e))?;
    let meta = linear(p.metadata_dev)?;
    let data = linear(p.data_dev)?;
    ThinPoolDev::setup(
        dm,
        name,
        uuid(&info).as_deref(),
        meta,
        data,
        p.data_block_size,
        p.low_water_mark,
        p.feature_args.into_iter().collect(),
    )
    .map_err(|e| dm_err("attach to thin-pool", name, e))
}

/// Creates the base thin device, formats it and returns its filesystem UUID.
fn make_base(
    dm: &DM,
    names: &Names,
    pool: &ThinPoolDev,
    s: &Settings,
    base_size: Bytes,
) -> Result<String> {
    let id = ThinDevId::new_u64(BASE_ID.into()).expect("0 is a valid thin id");
    let mut base = ThinDev::new(dm, &names.thin(BASE_ID), None, sectors(base_size), pool, id)
        .map_err(|e| dm_err("create base thin device in", &*names.pool(), e))?;
    let node = base.devnode();
    let made = crate::fsbacked::mkfs_with(&node, s.fs, &s.mkfs_args).and_then(|()| {
        let (_, uuid) = signature::fs_uuid(&node)?.ok_or_else(|| DriverError::Device {
            device: node.clone(),
            reason: "no filesystem UUID after mkfs".into(),
        })?;
        Ok(uuid)
    });
    let teardown = base
        .teardown(dm)
        .map_err(|e| dm_err("deactivate base device", &*names.thin(BASE_ID), e));
    let uuid = made?;
    teardown?;
    set_txid(dm, names, 0, 1)?;
    Ok(uuid)
}
fn zero_head(dev: &Path, offset: Bytes) -> Result<()> {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open(dev)
        .map_err(|e| DriverError::io("open", dev, e))?;
    f.seek(SeekFrom::Start(offset.0))
        .and_then(|_| f.write_all(&[0u8; 4096]))
        .and_then(|_| f.sync_all())
        .map_err(|e| DriverError::io("zero metadata superblock on", dev, e))
}

fn set_txid(dm: &DM, names: &Names, old: u64, new: u64) -> Result<()> {
    dm.target_msg(
        &DevId::Name(&names.pool()),
        None,
        &format!("set_transaction_id {old} {new}"),
    )
    .map(drop)
    .map_err(|e| dm_err("set transaction id of", &*names.pool(), e))
}

struct Inner {
    dm: DM,
    pool: ThinPoolDev,
}

/// Where the thin pool lives.
#[derive(Debug, Clone)]
enum Home {
    /// blkdrv's own thin-pool target over two areas (loopback files or block devices).
    Devices,
    /// An LVM thin-pool LV: made by `--lvm` (and its VG too if `vg_created`) or adopted.
    Lvm {
        pool: PoolLv,
        created: bool,
        vg_created: bool,
    },
}

pub struct DmThin {
    // libdevmapper was never thread-safe and the pool table is reloaded on grow: one lock.
    inner: Mutex<Inner>,
    names: Names,
    settings: Settings,
    /// Data block size, from the pool's table (an adopted LVM pool has its own).
    block: Bytes,
    base_size: Bytes,
    devices: Vec<PathBuf>,
    home: Home,
}

fn pool_status(
    dm: &DM,
    names: &Names,
    pool: &ThinPoolDev,
) -> Result<Box<dmc::ThinPoolWorkingStatus>> {
    match pool.status(dm, DmOptions::default()) {
        Ok(ThinPoolStatus::Working(w)) => Ok(w),
        Ok(other) => Err(DriverError::Kernel {
            op: "read status of",
            target: (*names.pool()).to_string(),
            message: format!("thin-pool is {other:?}: it needs repair (thin_check / thin_repair)"),
        }),
        Err(e) => Err(dm_err("read status of", &*names.pool(), e)),
    }
}

/// Thin ids in the pool's metadata and their exclusive/mapped bytes, from thin_ls on a
/// metadata snapshot (the live metadata cannot be read while the pool runs).
fn thin_ls(dm: &DM, names: &Names, pool: &ThinPoolDev) -> Result<Vec<(u32, Bytes, Bytes)>> {
    let id = DevId::Name(&names.pool);
    let meta_node = pool.meta_dev().devnode();
    // A pool has one metadata snapshot. Readers (`layer ls`) take it without the pool's writer
    // lock, so processes take turns through a flock on the metadata device, which the kernel
    // drops when a process dies. Holding it, a reservation that exists was left by a process
    // killed between reserve and release: release it, or no usage could be read again.
    let meta = std::fs::File::open(&meta_node)
        .map_err(|e| DriverError::io("open metadata device", &meta_node, e))?;
    let _turn = nix::fcntl::Flock::lock(meta, nix::fcntl::FlockArg::LockExclusive)
        .map_err(|(_, e)| DriverError::sys("lock metadata device", meta_node.display(), e))?;
    let reserve = || dm.target_msg(&id, None, "reserve_metadata_snap");
    match reserve() {
        Err(e) if dm_errno(&e) == Some(nix::errno::Errno::EBUSY) => {
            tracing::info!(pool = %&*names.pool, "releasing a metadata snapshot left by a killed process");
            dm.target_msg(&id, None, "release_metadata_snap")
                .map_err(|e| dm_err("release stale metadata snapshot of", &*names.pool, e))?;
            reserve()
        }
        r => r,
    }
    .map_err(|e| dm_err("reserve metadata snapshot of", &*names.pool, e))?;
    let out = exec::run(
        "thin_ls",
        [
            "--metadata-snap".as_ref(),
            "--no-headers".as_ref(),
            "-o".as_ref(),
            "DEV,EXCLUSIVE_BYTES,MAPPED_BYTES".as_ref(),
            meta_node.as_os_str(),
        ],
        "list thin devices",
    );
    let released = dm
        .target_msg(&id, None, "release_metadata_snap")
        .map_err(|e| dm_err("release metadata snapshot of", &*names.pool, e));
    let out = out?;
    released?;
    Ok(out
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let id = f.next()?.parse().ok()?;
            let excl = f.next()?.parse().ok()?;
            let mapped = f.next()?.parse().ok()?;
            Some((id, Bytes(excl), Bytes(mapped)))
        })
        .collect())
}

impl DmThin {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn status(&self) -> Result<Box<dmc::ThinPoolWorkingStatus>> {
        let g = self.lock();
        pool_status(&g.dm, &self.names, &g.pool)
    }

    fn txid(&self) -> Result<u64> {
        Ok(self.status()?.transaction_id)
    }

    /// Advances the transaction id by one: called once per create and delete.
    fn bump(&self) -> Result<()> {
        let t = self.txid()?;
        let g = self.lock();
        set_txid(&g.dm, &self.names, t, t + 1)
    }

    fn is_active(&self, dm: &DM, id: u32) -> Result<bool> {
        dmc::device_exists(dm, &self.names.thin(id))
            .map_err(|e| dm_err("list devices for", &*self.names.thin(id), e))
    }

    fn thin_id(id: u32) -> ThinDevId {
        ThinDevId::new_u64(id.into()).expect("object ids fit in 24 bits")
    }

    /// Activates a thin device (or attaches to it if active).
    fn activate(&self, g: &Inner, id: u32) -> Result<ThinDev> {
        clear_tableless(&g.dm, &self.names.thin(id))?;
        ThinDev::setup(
            &g.dm,
            &self.names.thin(id),
            None,
            sectors(self.base_size),
            &g.pool,
            Self::thin_id(id),
        )
        .map_err(|e| dm_err("activate thin device", &*self.names.thin(id), e))
    }

    /// Runs `f` on the node of thin device `id`, deactivating it afterwards if it was not
    /// active before.
    fn with_thin<T>(&self, id: u32, f: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
        let g = self.lock();
        let was_active = self.is_active(&g.dm, id)?;
        let mut dev = self.activate(&g, id)?;
        let out = f(&dev.devnode());
        if !was_active {
            dev.teardown(&g.dm)
                .map_err(|e| dm_err("deactivate thin device", &*self.names.thin(id), e))?;
        }
        out
    }

    /// Removes the dm device of thin `id` if it is active and unused. Busy: Ok(false).
    fn deactivate(&self, g: &Inner, id: u32) -> Result<bool> {
        let name = self.names.thin(id);
        if !self.is_active(&g.dm, id)? {
            return Ok(true);
        }
        let info =
            g.dm.device_info(&DevId::Name(&name))
                .map_err(|e| dm_err("read device info of", &*name, e))?;
        if info.open_count() > 0 {
            return Ok(false);
        }
        match g
            .dm
            .device_remove(&DevId::Name(&name), DmOptions::default())
        {
            Ok(_) => Ok(true),
            Err(e) if dm_errno(&e) == Some(nix::errno::Errno::EBUSY) => Ok(false),
            Err(e) => Err(dm_err("deactivate thin device", &*name, e)),
        }
    }

    fn thin_ls(&self) -> Result<Vec<(u32, Bytes, Bytes)>> {
        let g = self.lock();
        thin_ls(&g.dm, &self.names, &g.pool)
    }

    fn discard_all(&self, node: &Path) -> Result<()> {
        blockdev::discard(node, self.base_size)
    }
}

impl Layers for DmThin {
    fn name(&self) -> &'static str {
        NAME
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            granularity: Granularity::Block { size: self.block },
            native_snapshots: true,
        }
    }

    fn create(&self, layer: &LayerChain) -> Result<()> {
        let new = layer.id.get();
        let origin = layer.parent().map_or(BASE_ID, ObjectId::get);
        let g = self.lock();
        let msg = format!("create_snap {new} {origin}");
        let pool = DevId::Name(&self.names.pool());
        // An active origin must be suspended around create_snap (kernel thin-provisioning.txt).
        let suspend = self.is_active(&g.dm, origin)?;
        let origin_name = self.names.thin(origin);
        if suspend {
            g.dm.device_suspend(
                &DevId::Name(&origin_name),
                DmOptions::default().set_flags(DmFlags::DM_SUSPEND),
            )
            .map_err(|e| dm_err("suspend origin", &*origin_name, e))?;
        }
        let mut sent = g.dm.target_msg(&pool, None, &msg);
        if let Err(e) = &sent {
            if dm_errno(e) == Some(nix::errno::Errno::EEXIST) {
                // Left by a crash before the store recorded it: replace it.
                let _ = g.dm.target_msg(&pool, None, &format!("delete {new}"));
                sent = g.dm.target_msg(&pool, None, &msg);
            }
        }
        // Resume whatever happened, or every later I/O to the origin would hang.
        if suspend {
            g.dm.device_suspend(&DevId::Name(&origin_name), DmOptions::default())
                .map_err(|e| dm_err("resume origin", &*origin_name, e))?;
        }
        sent.map_err(|e| dm_err("create snapshot in", &*self.names.pool(), e))?;
        drop(g);
        self.bump()
    }

    // The pool mounts committed layers read-only; nothing to freeze at the block level.
    fn commit(&self, _layer: &LayerChain) -> Result<()> {
        Ok(())
    }

    fn mount(
        &self,
        layer: &LayerChain,
        target: &Path,
        mode: MountMode,
        flags: MountFlags,
    ) -> Result<()> {
        let g = self.lock();
        let id = layer.id.get();
        let dev = self.activate(&g, id)?;
        let ms = flags.ms(mode);
        // Every snapshot carries the base filesystem's UUID; xfs refuses duplicates otherwise.
        let data = match self.settings.fs {
            FsType::Xfs => Some("nouuid"),
            _ => None,
        };
        let r = mount::mount(&dev.devnode(), target, self.settings.fs.name(), ms, data);
        if r.is_err() {
            let _ = self.deactivate(&g, id);
        }
        r
    }

    fn unmount(&self, target: &Path) -> Result<()> {
        // Which thin device is mounted there, to deactivate it once unused.
        let canon = target
            .canonicalize()
            .unwrap_or_else(|_| target.to_path_buf());
        let source = mount::mountinfo()?
            .into_iter()
            .find(|m| m.target == canon)
            .map(|m| m.source);
        mount::unmount(target)?;
        let Some(src) = source else { return Ok(()) };
        let Some(dm_n) = Path::new(&src)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
        else {
            return Ok(());
        };
        let name = blockdev::dm_name(&dm_n).unwrap_or_default();
        let Some(id) = name
            .strip_prefix(&format!("{}-", self.names.prefix))
            .and_then(|s| s.parse::<u32>().ok())
        else {
            return Ok(());
        };
        let g = self.lock();
        // Still mounted elsewhere (another view): leave it active.
        self.deactivate(&g, id).map(drop)
    }

    fn remove(&self, id: ObjectId) -> Result<()> {
        let n = id.get();
        let g = self.lock();
        if self.settings.discard && !self.is_active(&g.dm, n)? {
            // Discard while the device is unused, so the pool and the loopback file get the
            // space back (deleting a thin id frees pool blocks but passes no discard down).
            if let Ok(mut dev) = self.activate(&g, n) {
                let r = self.discard_all(&dev.devnode());
                let _ = dev.teardown(&g.dm);
                if let Err(e) = r {
                    tracing::info!(layer = %id, "discard skipped: {e}");
                }
            }
        }
        if !self.deactivate(&g, n)? {
            // Open somewhere, perhaps in a leaked mount namespace: let the kernel remove the
            // device when its last user goes, and delete the thin id on a later try.
            let name = self.names.thin(n);
            let _ = g.dm.device_remove(
                &DevId::Name(&name),
                DmOptions::default().set_flags(DmFlags::DM_DEFERRED_REMOVE),
            );
            return Err(DriverError::Busy {
                id,
                op: "remove",
                reason: format!("thin device {} is open", &*name),
            });
        }
        let pool = DevId::Name(&self.names.pool());
        let msg = format!("delete {n}");
        let mut tries = 0;
        loop {
            match g.dm.target_msg(&pool, None, &msg) {
                Ok(_) => break,
                // Not in the pool: a crash after the delete, or never created.
                Err(e) if dm_errno(&e) == Some(nix::errno::Errno::ENODATA) => return Ok(()),
                // Right after a deferred remove the kernel may still hold the device briefly.
                Err(e) if dm_errno(&e) == Some(nix::errno::Errno::EBUSY) && tries < 10 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(30));
                }
                Err(e) if dm_errno(&e) == Some(nix::errno::Errno::EBUSY) => {
                    return Err(DriverError::Busy {
                        id,
                        op: "remove",
                        reason: "the thin id is still in use".into(),
                    })
                }
                Err(e) => return Err(dm_err("delete thin device from", &*self.names.pool(), e)),
            }
        }
        drop(g);
        self.bump()
    }

    fn list(&self) -> Result<Vec<ObjectId>> {
        Ok(self
            .thin_ls()?
            .into_iter()
            .filter_map(|(id, _, _)| ObjectId::new(id).ok())
            .collect())
    }

    fn usage(&self, layer: &LayerChain) -> Result<Usage> {
        self.usage_many(std::slice::from_ref(layer))
            .pop()
            .expect("one result per layer")
    }

    // One thin_ls for all: 200 layers took 57 s one by one in the VM.
    fn usage_many(&self, layers: &[LayerChain]) -> Vec<Result<Usage>> {
        let all = match self.thin_ls() {
            Ok(all) => all,
            Err(e) => {
                let msg = e.to_string();
                return layers
                    .iter()
                    .map(|l| {
                        Err(DriverError::Kernel {
                            op: "read usage (thin_ls) of layer",
                            target: l.id.to_string(),
                            message: msg.clone(),
                        })
                    })
                    .collect();
            }
        };
        let by_id: std::collections::HashMap<u32, (Bytes, Bytes)> =
            all.into_iter().map(|(i, e, m)| (i, (e, m))).collect();
        layers
            .iter()
            .map(|l| {
                let (excl, mapped) = by_id.get(&l.id.get()).ok_or(DriverError::NotFound {
                    id: l.id,
                    op: "usage",
                })?;
                Ok(Usage {
                    bytes: *excl,
                    inodes: None,
                    referenced: Some(*mapped),
                })
            })
            .collect()
    }
}

impl Backing for DmThin {
    fn space(&self) -> Result<Space> {
        let w = self.status()?;
        let block = self.block.0;
        let total = Bytes(w.usage.total_data.0 * block);
        let used = Bytes(w.usage.used_data.0 * block);
        let meta_total = Bytes(w.usage.total_meta.0 * 4096);
        let meta_used = Bytes(w.usage.used_meta.0 * 4096);
        let state = match w.summary {
            ThinPoolStatusSummary::Good => "ok",
            ThinPoolStatusSummary::ReadOnly => "read-only (metadata problem: run thin_check)",
            ThinPoolStatusSummary::OutOfSpace => "out of data space (writes fail with ENOSPC)",
        };
        let mut details = vec![
            ("Pool Device".into(), (*self.names.pool()).to_string()),
            (
                "Pool Home".into(),
                match &self.home {
                    Home::Devices => "blkdrv's own thin-pool target".into(),
                    Home::Lvm { pool, created, .. } => format!(
                        "LVM thin-pool LV {pool} ({}, autoextend at {}% by {}%)",
                        if *created {
                            "made by blkdrv"
                        } else {
                            "adopted"
                        },
                        lvm::profile_threshold(pool)
                            .unwrap_or(self.settings.autoextend.threshold_pct),
                        self.settings.autoextend.percent
                    ),
                },
            ),
            ("Pool State".into(), state.to_string()),
            ("Needs Check".into(), w.needs_check.to_string()),
            (
                "Metadata Space".into(),
                format!("{meta_used} used of {meta_total}"),
            ),
            ("Transaction Id".into(), w.transaction_id.to_string()),
            ("Block Size".into(), self.block.to_string()),
            ("Base Device Size".into(), self.base_size.to_string()),
            ("Base Filesystem".into(), self.settings.fs.name().into()),
            (
                "Discard On Remove".into(),
                if self.settings.discard { "on" } else { "off" }.into(),
            ),
        ];
        // Loopback files: what the host really spends vs. their apparent size.
        let loops = crate::sys::loopdev::list().unwrap_or_default();
        for (dev, file) in loops.iter().filter(|(d, _)| self.devices.contains(d)) {
            use std::os::unix::fs::MetadataExt;
            if let Ok(md) = std::fs::metadata(file) {
                details.push((
                    format!("Loop File {}", dev.display()),
                    format!(
                        "{} ({} allocated of {})",
                        file.display(),
                        Bytes(md.blocks() * 512),
                        Bytes(md.len())
                    ),
                ));
            }
        }
        Ok(Space {
            total,
            used,
            available: total.saturating_sub(used),
            inodes_total: 0,
            inodes_free: 0,
            unallocated: Some(total.saturating_sub(used)),
            pending: None,
            metadata: Some(MetaSpace {
                total: meta_total,
                available: meta_total.saturating_sub(meta_used),
            }),
            details,
        })
    }

    fn deactivate(&self) -> Result<()> {
        let g = self.lock();
        remove_all(&g.dm, &self.names)?;
        if let Home::Lvm { pool, .. } = &self.home {
            lvm::deactivate(pool)?;
        }
        Ok(())
    }

    fn destroy(&self) -> Result<()> {
        let g = self.lock();
        remove_all(&g.dm, &self.names)?;
        match &self.home {
            Home::Devices => Ok(()),
            Home::Lvm {
                pool,
                created: true,
                vg_created,
            } => lvm::remove_thin_pool(
                &lvm::Created {
                    pool: pool.clone(),
                    vg_created: *vg_created,
                },
                &self.devices,
            ),
            Home::Lvm { pool, .. } => {
                // An adopted pool goes back empty: blkdrv's thin devices (and base) deleted.
                let id = DevId::Name(&self.names.pool);
                for (n, _, _) in thin_ls(&g.dm, &self.names, &g.pool)? {
                    g.dm.target_msg(&id, None, &format!("delete {n}"))
                        .map_err(|e| dm_err("delete thin device from", &*self.names.pool, e))?;
                }
                let t = pool_status(&g.dm, &self.names, &g.pool)?.transaction_id;
                set_txid(&g.dm, &self.names, t, 0)?;
                lvm::deactivate(pool)
            }
        }
    }

    fn autoextend(&self) -> Result<Option<String>> {
        let Home::Lvm { pool, .. } = &self.home else {
            return Ok(None);
        };
        // dmeventd does this on hosts that run it; blkdrv also checks at each command, so
        // pools grow where nothing monitors them (containers, the test VM).
        let threshold =
            lvm::profile_threshold(pool).unwrap_or(self.settings.autoextend.threshold_pct);
        let w = self.status()?;
        let (used, total) = (w.usage.used_data.0, w.usage.total_data.0.max(1));
        if used * 100 < total * u64::from(threshold) {
            return Ok(None);
        }
        let grown = lvm::extend_by_policy(pool)?;
        // The pool's table changed under the handle: attach again.
        let mut g = self.lock();
        let fresh = attach_pool(&g.dm, &self.names.pool)?;
        g.pool = fresh;
        Ok(grown.map(|size| {
            format!(
                "grew LVM thin pool {pool} to {size}: {}% of its data was used (threshold {threshold}%)",
                used * 100 / total
            )
        }))
    }

    fn grow(&self) -> Result<()> {
        if matches!(self.home, Home::Lvm { .. }) {
            return Ok(());
        }
        let mut g = self.lock();
        let data_dev = self.devices.first().cloned().ok_or(DriverError::Device {
            device: PathBuf::from("-"),
            reason: "no data device".into(),
        })?;
        let size = blockdev::size(&data_dev)?;
        let offset = if self.devices.len() == 1 {
            // Split device: data follows the metadata area.
            g.pool.meta_dev().size().bytes()
        } else {
            dmc::Bytes(0)
        };
        let offset = Bytes(*offset as u64);
        let len = Bytes(size.0.saturating_sub(offset.0));
        let params = LinearDevTargetParams::Linear(LinearTargetParams::new(
            device_of(&data_dev)?,
            sectors(offset),
        ));
        let Inner { dm, pool } = &mut *g;
        pool.set_data_table(
            dm,
            vec![TargetLine::new(dmc::Sectors(0), sectors(len), params)],
        )
        .and_then(|()| pool.resume(dm))
        .map_err(|e| dm_err("grow data of", &*self.names.pool(), e))
    }

    fn generation(&self) -> Result<Option<u64>> {
        self.txid().map(Some)
    }
}

impl Driver for DmThin {
    fn bench(&self) -> Option<&dyn BenchHooks> {
        Some(self)
    }
}

impl BenchHooks for DmThin {
    // `dmsetup message <pool> 0 "create_snap N origin"` + activation, without the origin
    // suspend, transaction id or store: what blkdrv adds on top shows as the ratio.
    fn raw_snapshot(&self, parent: &LayerChain) -> Result<Duration> {
        let g = self.lock();
        let pool_name = self.names.pool();
        let pool = DevId::Name(&pool_name);
        // A leftover from an interrupted run.
        let _ =
            g.dm.target_msg(&pool, None, &format!("delete {RAW_BENCH_ID}"));
        let t = Instant::now();
        g.dm.target_msg(
            &pool,
            None,
            &format!("create_snap {RAW_BENCH_ID} {}", parent.id.get()),
        )
        .map_err(|e| dm_err("create raw snapshot in", &*pool_name, e))?;
        let dev = self.activate(&g, RAW_BENCH_ID);
        let took = t.elapsed();
        let torn = dev.and_then(|mut d| {
            d.teardown(&g.dm)
                .map_err(|e| dm_err("deactivate", &*self.names.thin(RAW_BENCH_ID), e))
        });
        let deleted =
            g.dm.target_msg(&pool, None, &format!("delete {RAW_BENCH_ID}"))
                .map_err(|e| dm_err("delete raw snapshot from", &*pool_name, e));
        torn?;
        deleted?;
        Ok(took)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records as `pool init` has always written them (text maps) read as typed records, and
    /// a partial LVM record is refused rather than read as a pool of blkdrv's own.
    #[test]
    fn stored_records_read_as_typed_ones() {
        let dev = Path::new("/dev/loop0");
        let plain: Identity = serde_json::from_str(
            r#"{"dm_prefix":"blkdrv-0a1b2c3d","base_fs_uuid":"u-1","base_size":"10737418240",
                "fs":"xfs"}"#,
        )
        .unwrap();
        let rec = Recorded::read(&plain, dev).unwrap();
        assert_eq!(rec.base_size, Bytes::gib(10));
        assert_eq!((rec.fs, rec.lvm), (FsType::Xfs, None));
        let again = Identity::record(NAME, &Recorded::read(&plain, dev).unwrap()).unwrap();
        assert_eq!(again, plain);

        let lvm: Identity = serde_json::from_str(
            r#"{"dm_prefix":"p","base_fs_uuid":"u","base_size":"1048576","fs":"ext4",
                "lvm_pool":"vg0/pool","lvm_uuid":"L-1","lvm_created":"yes",
                "lvm_vg_created":"no"}"#,
        )
        .unwrap();
        let rec = Recorded::read(&lvm, dev).unwrap();
        let l = rec.lvm.clone().unwrap();
        assert_eq!(l.lvm_pool.to_string(), "vg0/pool");
        assert!(l.lvm_created && !l.lvm_vg_created);
        assert_eq!(Identity::record(NAME, &rec).unwrap(), lvm);

        let partial: Identity = serde_json::from_str(
            r#"{"dm_prefix":"p","base_fs_uuid":"u","base_size":"1","fs":"xfs",
                "lvm_pool":"vg0/pool"}"#,
        )
        .unwrap();
        let e = Recorded::read(&partial, dev).unwrap_err().to_string();
        assert!(e.contains("lvm_uuid"), "{e}");
    }

    #[test]
    fn options_are_checked() {
        let mut o = DriverOptions::new();
        o.insert(KEY_BLOCK_SIZE.into(), "96K".into());
        assert!(Settings::parse(&o).is_err(), "not a multiple of 64K");
        o.insert(KEY_BLOCK_SIZE.into(), "128K".into());
        assert_eq!(Settings::parse(&o).unwrap().block_size, Bytes(128 << 10));
        o.insert("colour".into(), "blue".into());
        assert!(Settings::parse(&o).is_err());
        let mut o = DriverOptions::new();
        o.insert(KEY_METADATA_SIZE.into(), "1M".into());
        assert!(Settings::parse(&o).is_err(), "under the kernel's 2 MiB");
        o.insert(KEY_METADATA_SIZE.into(), "lots".into());
        assert!(Settings::parse(&o).is_err());
    }

    fn plan_of(options: &[(&str, &str)], request: &BackingRequest) -> Result<BackingPlan> {
        let o: DriverOptions = options
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Factory.plan(&Factory.validate_options(&o)?, request)
    }

    #[test]
    fn init_requests_are_planned() {
        let loopback = BackingRequest {
            size: Some(Bytes::gib(1)),
            ..BackingRequest::default()
        };
        match plan_of(&[], &loopback).unwrap() {
            BackingPlan::Loopback {
                files, min_size, ..
            } => {
                assert_eq!(min_size, Bytes::mib(320));
                assert_eq!(
                    files[0],
                    LoopbackFile {
                        stem: "data",
                        size: Bytes::gib(1)
                    }
                );
                assert_eq!(files[1].stem, "metadata");
                assert_eq!(
                    files[1].size,
                    metadata_size_for(Bytes::gib(1), Bytes(KIB64))
                );
            }
            other => panic!("{other:?}"),
        }
        let existing = BackingRequest::default();
        assert_eq!(
            plan_of(&[(KEY_THINPOOL, "vg/tp")], &existing).unwrap(),
            BackingPlan::Existing
        );
        let e = plan_of(&[(KEY_THINPOOL, "vg/tp")], &loopback)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--thinpool vg/tp") && e.contains("--size"),
            "{e}"
        );
        let devices = BackingRequest {
            devices: vec!["/dev/d".into()],
            option_devices: [(KEY_METADATA_DEVICE.to_string(), vec!["/dev/m".into()])].into(),
            ..BackingRequest::default()
        };
        assert_eq!(
            plan_of(&[], &devices).unwrap(),
            BackingPlan::Devices(vec!["/dev/d".into(), "/dev/m".into()])
        );
        let e = plan_of(&[(KEY_LVM, "on")], &devices)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--metadata-device") && e.contains("--lvm"),
            "{e}"
        );
        let e = plan_of(&[(KEY_LVM, "on")], &existing)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--lvm needs --device"), "{e}");
        let no_data = BackingRequest {
            option_devices: devices.option_devices.clone(),
            ..BackingRequest::default()
        };
        let e = plan_of(&[], &no_data).unwrap_err().to_string();
        assert!(e.contains("--metadata-device goes with --device"), "{e}");
    }

    #[test]
    fn metadata_is_sized_from_data() {
        assert_eq!(
            metadata_size_for(Bytes::gib(1), Bytes(KIB64)),
            Bytes::mib(16)
        );
        let big = metadata_size_for(Bytes::gib(100), Bytes(KIB64));
        assert_eq!(big, Bytes::mib(200));
        assert!(metadata_size_for(Bytes(1 << 50), Bytes(KIB64)) <= Bytes::gib(16));
    }
}
