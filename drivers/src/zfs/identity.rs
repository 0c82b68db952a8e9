//! What `pool init` records of a zfs pool ([`Recorded`]), and its check when the pool is opened.

use super::settings::Settings;
use super::{vdevs, Vdev, Zfs};
use crate::error::{DriverError, Result};
use crate::identity::text;
use crate::sys::zfs::{self as z, Dataset, Failure, ZpoolName};
use crate::{Identity, PoolContext};
use serde::{Deserialize, Serialize};
use std::path::PathBuf;

/// What blkdrv made, and so what it takes down on deactivate and destroy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Created {
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
pub(super) struct Recorded {
    #[serde(with = "text")]
    pub(super) zpool: ZpoolName,
    #[serde(with = "text")]
    pub(super) zpool_guid: u64,
    #[serde(with = "text")]
    pub(super) dataset: Dataset,
    #[serde(with = "text")]
    pub(super) dataset_guid: u64,
    pub(super) created: Created,
}

/// Opens the pool recorded in `identity`: imports a zpool blkdrv made if it is not imported, and
/// checks the zpool's and the parent dataset's GUIDs against the recorded ones.
pub(super) fn open(ctx: &PoolContext, identity: &Identity) -> Result<Zfs> {
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
    Ok(Zfs {
        recordsize: props.bytes("recordsize")?,
        rec,
        vdevs,
        compression: s.compression,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::zfs::NAME;
    use std::path::Path;

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
}
