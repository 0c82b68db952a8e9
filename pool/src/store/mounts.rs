//! Mount records of layers.

use super::{id_col, ns_col, MountRecord, Store, Tx};
use crate::error::Result;
use blkdrv_drivers::sys::mount::MountNs;
use blkdrv_drivers::{MountMode, ObjectId};
use rusqlite::params;
use std::path::{Path, PathBuf};

impl Store {
    pub fn mounts(&self) -> Result<Vec<MountRecord>> {
        let mut st = self
            .conn
            .prepare("SELECT target, mntns, layer, mode, state FROM mounts ORDER BY target, mntns")
            .map_err(|e| self.err("list mounts", e))?;
        let rows = st
            .query_map([], |r| {
                let mode: String = r.get(3)?;
                let state: String = r.get(4)?;
                let ns: i64 = r.get(1)?;
                Ok(MountRecord {
                    target: PathBuf::from(r.get::<_, String>(0)?),
                    ns: (ns != 0).then_some(MountNs(ns as u64)),
                    layer: id_col(r, 2)?,
                    mode: if mode == "ro" {
                        MountMode::ReadOnly
                    } else {
                        MountMode::ReadWrite
                    },
                    settled: state == "mounted",
                })
            })
            .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|e| self.err("list mounts", e))?;
        Ok(rows)
    }
}

impl Tx<'_> {
    pub fn add_mount(
        &self,
        target: &Path,
        ns: Option<MountNs>,
        id: ObjectId,
        mode: MountMode,
    ) -> Result<()> {
        self.t
            .execute(
                "INSERT INTO mounts(target, mntns, layer, mode, state) VALUES(?1,?2,?3,?4,'mounting')
                 ON CONFLICT(target, mntns) DO UPDATE SET layer=?3, mode=?4, state='mounting'",
                params![target.to_string_lossy(), ns_col(ns), id.get(), mode.to_string()],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    pub fn settle_mount(&self, target: &Path, ns: Option<MountNs>) -> Result<()> {
        self.t
            .execute(
                "UPDATE mounts SET state='mounted' WHERE target=?1 AND mntns=?2",
                params![target.to_string_lossy(), ns_col(ns)],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    pub fn remove_mount(&self, target: &Path, ns: Option<MountNs>) -> Result<()> {
        self.t
            .execute(
                "DELETE FROM mounts WHERE target=?1 AND mntns=?2",
                params![target.to_string_lossy(), ns_col(ns)],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }
}
