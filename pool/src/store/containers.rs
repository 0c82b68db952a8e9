//! Container rows: a name, its writable layer (a `layers` row owned by `container`), the image
//! it is on, its mounts and its state.

use super::{id_col, ns_col, Store, Tx};
use crate::container::MountEntry;
use crate::error::{PoolError, Result};
use crate::pool::ContainerState;
use blkdrv_drivers::sys::mount::MountNs;
use blkdrv_drivers::ObjectId;
use rusqlite::{params, Connection};
use std::path::{Path, PathBuf};

/// One row of the store's container table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerRecord {
    pub name: String,
    /// Its writable layer.
    pub layer: ObjectId,
    pub image: ObjectId,
    pub mounts: Vec<MountEntry>,
    pub state: ContainerState,
    /// Unix seconds.
    pub created: i64,
    /// Where its root is (being) assembled, and the mount namespace that does it.
    pub root: Option<PathBuf>,
    pub ns: Option<MountNs>,
}

fn bad(i: usize, what: String) -> rusqlite::Error {
    rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, what.into())
}

impl Store {
    /// Every container, by name.
    pub fn containers(&self) -> Result<Vec<ContainerRecord>> {
        read_containers(&self.conn, "", []).map_err(|e| self.err("list containers", e))
    }

    pub fn container(&self, name: &str) -> Result<Option<ContainerRecord>> {
        read_containers(&self.conn, "WHERE name=?1", [name])
            .map(|v| v.into_iter().next())
            .map_err(|e| self.err("read container", e))
    }
}

impl Tx<'_> {
    /// Inserts a container row. A taken name is [`PoolError::ContainerExists`].
    pub fn insert_container(&self, c: &ContainerRecord) -> Result<()> {
        self.t
            .execute(
                "INSERT INTO containers(name,layer,image,mounts,state,created,root,mntns)
                 VALUES(?1,?2,?3,?4,?5,?6,?7,?8)",
                params![
                    c.name,
                    c.layer.get(),
                    c.image.get(),
                    serde_json::to_string(&c.mounts).expect("mount entries serialize"),
                    c.state.as_str(),
                    c.created,
                    c.root.as_ref().map(|p| p.to_string_lossy().into_owned()),
                    c.ns.map(|n| ns_col(Some(n))),
                ],
            )
            .map(drop)
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
                {
                    PoolError::ContainerExists(c.name.clone())
                }
                e => self.err(e),
            })
    }

    pub fn set_container_state(&self, name: &str, state: ContainerState) -> Result<()> {
        self.t
            .execute(
                "UPDATE containers SET state=?2 WHERE name=?1",
                params![name, state.as_str()],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Records where the container's root is being assembled (`None`: taken down).
    pub fn set_container_root(&self, name: &str, root: Option<(&Path, MountNs)>) -> Result<()> {
        self.t
            .execute(
                "UPDATE containers SET root=?2, mntns=?3 WHERE name=?1",
                params![
                    name,
                    root.map(|(p, _)| p.to_string_lossy().into_owned()),
                    root.map(|(_, n)| ns_col(Some(n))),
                ],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }
}

fn read_containers<P: rusqlite::Params>(
    conn: &Connection,
    filter: &str,
    p: P,
) -> rusqlite::Result<Vec<ContainerRecord>> {
    let sql = format!(
        "SELECT name,layer,image,mounts,state,created,root,mntns
         FROM containers {filter} ORDER BY name"
    );
    let mut st = conn.prepare(&sql)?;
    let rows = st.query_map(p, |r| {
        let mounts: String = r.get(3)?;
        let state: String = r.get(4)?;
        let root: Option<String> = r.get(6)?;
        let ns: Option<i64> = r.get(7)?;
        Ok(ContainerRecord {
            name: r.get(0)?,
            layer: id_col(r, 1)?,
            image: id_col(r, 2)?,
            mounts: serde_json::from_str(&mounts).map_err(|e| bad(3, e.to_string()))?,
            state: ContainerState::parse(&state)
                .ok_or_else(|| bad(4, format!("state {state:?}")))?,
            created: r.get(5)?,
            root: root.map(PathBuf::from),
            ns: ns.filter(|n| *n != 0).map(|n| MountNs(n as u64)),
        })
    })?;
    rows.collect()
}
