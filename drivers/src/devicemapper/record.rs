//! The identity a pool records at `pool init`.

use crate::error::Result;
use crate::fsbacked::FsType;
use crate::identity;
use crate::sys::lvm::PoolLv;
use crate::{Bytes, Identity};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// The identity recorded at `pool init` and checked on every open.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Recorded {
    /// Prefix of the pool's dm device names.
    pub(super) dm_prefix: String,
    /// UUID of the base device's filesystem, which every layer inherits.
    pub(super) base_fs_uuid: String,
    #[serde(with = "identity::bytes")]
    pub(super) base_size: Bytes,
    pub(super) fs: FsType,
    /// Where the thin pool lives when LVM holds it; `None`: blkdrv's own dm pool.
    #[serde(flatten)]
    pub(super) lvm: Option<LvmRecorded>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct LvmRecorded {
    #[serde(with = "identity::text")]
    pub(super) lvm_pool: PoolLv,
    /// The thin-pool LV's UUID: a recreated LV of the same name is another pool.
    pub(super) lvm_uuid: String,
    /// blkdrv made the LV (`--lvm`), so destroy removes it; and its VG.
    #[serde(default, with = "identity::yes_no")]
    pub(super) lvm_created: bool,
    #[serde(default, with = "identity::yes_no")]
    pub(super) lvm_vg_created: bool,
}

impl Recorded {
    pub(super) fn read(identity: &Identity, device: &Path) -> Result<Recorded> {
        let rec: Recorded = identity.read(device)?;
        if rec.lvm.is_none() && identity.get("lvm_pool").is_some() {
            // serde reads a flattened Option that fails as None: say what is wrong instead.
            identity.read::<LvmRecorded>(device)?;
        }
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::super::NAME;
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
}
