//! The driver's options: the table users see, their parsing into typed [`Settings`] and the
//! sizes derived from them.

use super::NAME;
use crate::error::{DriverError, Result};
use crate::fsbacked::FsType;
use crate::options;
use crate::plan::{self, OptionKind, OptionRole, OptionSpec};
use crate::sys::lvm::{self, PoolLv};
use crate::{Bytes, DriverOptions};
use devicemapper as dmc;

pub(super) const KIB64: Bytes = Bytes::kib(64);

pub(super) const KEY_FS: &str = "fs";
pub(super) const KEY_BLOCK_SIZE: &str = "block_size";
pub(super) const KEY_BASE_SIZE: &str = "base_size";
pub(super) const KEY_METADATA_SIZE: &str = "metadata_size";
pub(super) const KEY_DISCARD: &str = "discard";
pub(super) const KEY_OVERCOMMIT: &str = "overcommit";
pub(super) const KEY_LVM: &str = "lvm";
pub(super) const KEY_VG: &str = "vg";
pub(super) const KEY_THINPOOL: &str = "thinpool";
pub(super) const KEY_AX_THRESHOLD: &str = "autoextend_threshold";
pub(super) const KEY_AX_PERCENT: &str = "autoextend_percent";
pub(super) const KEY_MKFS_ARGS: &str = "mkfs_args";
pub(super) const KEY_POOL_LV: &str = "pool_lv";
pub(super) const KEY_DATA_SIZE: &str = "data_size";
pub(super) const KEY_MIN_DATA_SIZE: &str = "min_data_size";
/// Not stored: the device joins the pool's devices.
pub(super) const KEY_METADATA_DEVICE: &str = "metadata_device";
/// The options, in the order unknown-option errors list them.
pub(super) const OPTIONS: &[OptionSpec] = &[
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
        "With --lvm: name of the volume group (default blkdrv-<pool>). An existing VG is \
         used without --device: the thin pool goes in its free space.",
    ),
    OptionSpec::key(
        KEY_POOL_LV,
        "with --lvm: name of the thin-pool LV (default thinpool)",
    ),
    OptionSpec::key(
        KEY_DATA_SIZE,
        "with --lvm: data size, N%FREE (default 40%FREE), N%VG or a size",
    ),
    OptionSpec::key(
        KEY_MIN_DATA_SIZE,
        "with --lvm: refuse a VG with less free space; raise a smaller data_size to it",
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
pub(super) const LVM_POOL_LV: &str = "thinpool";

pub(super) fn bad(key: &str, value: &str, reason: impl Into<String>) -> DriverError {
    options::bad(NAME, key, value, reason)
}

pub(super) fn parse_size(key: &str, v: &str) -> Result<Bytes> {
    options::size(NAME, key, v)
}

pub(super) fn on_off(key: &str, v: &str) -> Result<bool> {
    options::on_off(NAME, key, v)
}

/// Metadata needed for a data area, after thin_metadata_size's rules of thumb: a mapping costs
/// about 64 bytes and snapshots share btree nodes; doubled for headroom, never under 16 MiB
/// (the kernel needs 2 MiB; small pools fill metadata fast with many snapshots), at most the
/// kernel's 16 GiB.
pub fn metadata_size_for(data: Bytes, block: Bytes) -> Bytes {
    let blocks = data / block.max(Bytes(1));
    let bytes = (blocks * 128).clamp(16 << 20, 16 << 30);
    Bytes(bytes.div_ceil(1 << 20) << 20)
}

/// Validated options.
#[derive(Debug, Clone)]
pub(super) struct Settings {
    pub(super) fs: FsType,
    pub(super) block_size: Bytes,
    pub(super) base_size: Option<Bytes>,
    pub(super) metadata_size: Option<Bytes>,
    pub(super) discard: bool,
    pub(super) overcommit: bool,
    /// Make a VG and a thin-pool LV on the devices (`--lvm`).
    pub(super) lvm: bool,
    pub(super) vg: Option<String>,
    /// Use this existing thin-pool LV (`--thinpool VG/LV`).
    pub(super) thinpool: Option<PoolLv>,
    pub(super) autoextend: lvm::Autoextend,
    /// With --lvm: the thin-pool LV's name ([`LVM_POOL_LV`] if unset).
    pub(super) pool_lv: Option<String>,
    pub(super) data_size: Option<lvm::DataSize>,
    pub(super) min_data_size: Option<Bytes>,
    /// Extra mkfs arguments for the base filesystem (words, space-separated).
    pub(super) mkfs_args: Vec<String>,
}

pub(super) fn pct(key: &str, v: &str) -> Result<u8> {
    v.trim_end_matches('%')
        .parse::<u8>()
        .ok()
        .filter(|p| (1..=100).contains(p))
        .ok_or_else(|| bad(key, v, "expected a percentage from 1 to 100"))
}

impl Settings {
    pub(super) fn parse(options: &DriverOptions) -> Result<Settings> {
        options::check_known(NAME, options, &plan::stored_keys(OPTIONS))?;
        let get = |k: &str| options.get(k).map(String::as_str);
        let fs = match get(KEY_FS).unwrap_or("xfs") {
            "xfs" => FsType::Xfs,
            "ext4" => FsType::Ext4,
            v => return Err(bad(KEY_FS, v, "expected xfs or ext4")),
        };
        let block_size = match get(KEY_BLOCK_SIZE) {
            Some(v) => parse_size(KEY_BLOCK_SIZE, v)?,
            None => KIB64,
        };
        // The kernel takes 64 KiB to 1 GiB in multiples of 64 KiB.
        if !block_size.is_multiple_of(KIB64)
            || block_size == Bytes::ZERO
            || block_size > Bytes::gib(1)
        {
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
        let pool_lv = get(KEY_POOL_LV).map(str::to_string);
        if let Some(v) = &pool_lv {
            if !lvm::valid_name(v) {
                return Err(bad(KEY_POOL_LV, v, "not a valid LVM logical volume name"));
            }
        }
        let data_size = get(KEY_DATA_SIZE)
            .map(|v| {
                v.parse::<lvm::DataSize>()
                    .map_err(|e| bad(KEY_DATA_SIZE, v, e))
            })
            .transpose()?;
        let min_data_size = get(KEY_MIN_DATA_SIZE)
            .map(|v| parse_size(KEY_MIN_DATA_SIZE, v))
            .transpose()?;
        // These shape the LV --lvm makes; elsewhere they would be silently meaningless.
        for (key, set) in [
            (KEY_POOL_LV, pool_lv.is_some()),
            (KEY_DATA_SIZE, data_size.is_some()),
            (KEY_MIN_DATA_SIZE, min_data_size.is_some()),
        ] {
            if set && !lvm {
                return Err(bad(key, get(key).unwrap_or(""), "goes with --lvm"));
            }
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
            pool_lv,
            data_size,
            min_data_size,
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
    pub(super) fn min_size(&self) -> Bytes {
        match self.fs {
            FsType::Ext4 => Bytes::mib(64),
            _ => Bytes::mib(320),
        }
    }

    pub(super) fn to_options(&self) -> DriverOptions {
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
        if let Some(v) = &self.pool_lv {
            o.insert(KEY_POOL_LV.into(), v.clone());
        }
        if let Some(d) = self.data_size {
            o.insert(KEY_DATA_SIZE.into(), d.to_string());
        }
        if let Some(m) = self.min_data_size {
            o.insert(KEY_MIN_DATA_SIZE.into(), m.0.to_string());
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
    pub(super) fn low_water(&self, data: Bytes) -> dmc::DataBlocks {
        dmc::DataBlocks(data / self.block_size / 10)
    }

    pub(super) fn feature_args(&self) -> Vec<String> {
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

/// Size of the base device (and so of every layer): as asked, or the pool's data up to the
/// 10 GiB moby used; over the pool only with overcommit.
pub(super) fn base_size_for(s: &Settings, data_size: Bytes, min: Bytes) -> Result<Bytes> {
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
        None => data_size.min(Bytes::gib(10)),
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

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn lvm_shape_options_go_with_lvm() {
        let mut o = DriverOptions::new();
        o.insert(KEY_DATA_SIZE.into(), "60%FREE".into());
        let e = Settings::parse(&o).unwrap_err().to_string();
        assert!(e.contains("goes with --lvm"), "{e}");
        o.insert(KEY_LVM.into(), "on".into());
        o.insert(KEY_POOL_LV.into(), "docker-pool".into());
        o.insert(KEY_MIN_DATA_SIZE.into(), "2G".into());
        let s = Settings::parse(&o).unwrap();
        assert_eq!(s.data_size, Some(lvm::DataSize::FreePct(60)));
        assert_eq!(s.min_data_size, Some(Bytes::gib(2)));
        // What is stored reads back the same.
        let again = Settings::parse(&s.to_options()).unwrap();
        assert_eq!(again.data_size, s.data_size);
        assert_eq!(again.pool_lv.as_deref(), Some("docker-pool"));
        assert_eq!(again.min_data_size, s.min_data_size);
        o.insert(KEY_POOL_LV.into(), "a/b".into());
        assert!(Settings::parse(&o).is_err());
        o.insert(KEY_POOL_LV.into(), "tp".into());
        o.insert(KEY_DATA_SIZE.into(), "40%PVS".into());
        assert!(Settings::parse(&o).is_err());
    }

    #[test]
    fn metadata_is_sized_from_data() {
        assert_eq!(metadata_size_for(Bytes::gib(1), KIB64), Bytes::mib(16));
        let big = metadata_size_for(Bytes::gib(100), KIB64);
        assert_eq!(big, Bytes::mib(200));
        assert!(metadata_size_for(Bytes(1 << 50), KIB64) <= Bytes::gib(16));
    }
}
