//! Volume rows: a name bound to a volume's object (a `layers` row owned by `volume`).

use super::{id_col, Store, Tx};
use crate::error::{PoolError, Result};
use blkdrv_drivers::ObjectId;
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::BTreeMap;

/// One row of the store's volume table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeRecord {
    pub name: String,
    pub layer: ObjectId,
    pub anonymous: bool,
    pub origin: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// Unix seconds.
    pub created: i64,
    /// The container whose create made it, until that create finishes.
    pub made_by: Option<String>,
}

impl Store {
    /// Every volume, by name.
    pub fn volumes(&self) -> Result<Vec<VolumeRecord>> {
        read_volumes(&self.conn, "", []).map_err(|e| self.err("list volumes", e))
    }

    /// The name of the volume or container whose object layer `id` is.
    pub fn object_owner_name(&self, id: ObjectId) -> Result<Option<String>> {
        self.conn
            .query_row(
                "SELECT name FROM volumes WHERE layer=?1
                 UNION ALL SELECT name FROM containers WHERE layer=?1",
                [id.get()],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| self.err("read object owner", e))
    }

    pub fn volume(&self, name: &str) -> Result<Option<VolumeRecord>> {
        read_volumes(&self.conn, "WHERE name=?1", [name])
            .map(|v| v.into_iter().next())
            .map_err(|e| self.err("read volume", e))
    }
}

impl Tx<'_> {
    /// Inserts a volume row. A taken name is [`PoolError::VolumeExists`].
    pub fn insert_volume(&self, v: &VolumeRecord) -> Result<()> {
        self.t
            .execute(
                "INSERT INTO volumes(name,layer,anonymous,origin,labels,created,made_by)
                 VALUES(?1,?2,?3,?4,?5,?6,?7)",
                params![
                    v.name,
                    v.layer.get(),
                    v.anonymous,
                    v.origin,
                    serde_json::to_string(&v.labels).expect("string maps serialize"),
                    v.created,
                    v.made_by,
                ],
            )
            .map(drop)
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
                {
                    PoolError::VolumeExists(v.name.clone())
                }
                e => self.err(e),
            })
    }

    /// The create of container `name` finished: the volumes it made are no longer its to undo.
    pub fn release_volumes(&self, container: &str) -> Result<()> {
        self.t
            .execute(
                "UPDATE volumes SET made_by=NULL WHERE made_by=?1",
                [container],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }
}

fn read_volumes<P: rusqlite::Params>(
    conn: &Connection,
    filter: &str,
    p: P,
) -> rusqlite::Result<Vec<VolumeRecord>> {
    let sql = format!(
        "SELECT name,layer,anonymous,origin,labels,created,made_by
         FROM volumes {filter} ORDER BY name"
    );
    let mut st = conn.prepare(&sql)?;
    let rows = st.query_map(p, |r| {
        let labels: String = r.get(4)?;
        Ok(VolumeRecord {
            name: r.get(0)?,
            layer: id_col(r, 1)?,
            anonymous: r.get(2)?,
            origin: r.get(3)?,
            labels: serde_json::from_str(&labels).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    4,
                    rusqlite::types::Type::Text,
                    e.to_string().into(),
                )
            })?,
            created: r.get(5)?,
            made_by: r.get(6)?,
        })
    })?;
    rows.collect()
}
