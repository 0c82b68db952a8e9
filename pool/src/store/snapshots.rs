//! containerd's snapshot rows.

use super::{id_col, Store, Tx};
use crate::error::{PoolError, Result};
use crate::snapshot::{Labels, SnapshotKind, SnapshotRecord, SnapshotUsage, Timestamp};
use blkdrv_drivers::ObjectId;
use rusqlite::{params, Connection};

impl Store {
    /// Every snapshot row, by key.
    pub fn snapshots(&self) -> Result<Vec<SnapshotRecord>> {
        read_snapshots(&self.conn, "", []).map_err(|e| self.err("list snapshots", e))
    }

    pub fn snapshot(&self, key: &str) -> Result<Option<SnapshotRecord>> {
        read_snapshots(&self.conn, "WHERE key=?1", [key])
            .map(|v| v.into_iter().next())
            .map_err(|e| self.err("read snapshot", e))
    }

    /// Keys of the snapshots prepared or viewed on `key`.
    pub fn snapshot_children(&self, key: &str) -> Result<Vec<String>> {
        let mut st = self
            .conn
            .prepare("SELECT key FROM snapshots WHERE parent=?1 ORDER BY key")
            .map_err(|e| self.err("list snapshot children", e))?;
        let rows = st
            .query_map([key], |r| r.get::<_, String>(0))
            .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|e| self.err("list snapshot children", e))?;
        Ok(rows)
    }
}

impl Tx<'_> {
    pub fn insert_snapshot(&self, s: &SnapshotRecord) -> Result<()> {
        self.t
            .execute(
                "INSERT INTO snapshots(key,kind,layer,parent,labels,created,updated,
                                       usage_bytes,usage_inodes)
                 VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9)",
                params![
                    s.key,
                    s.kind.as_str(),
                    s.layer.get(),
                    s.parent,
                    labels_json(&s.labels),
                    s.created.0,
                    s.updated.0,
                    s.usage.map(|u| u.bytes as i64),
                    s.usage.map(|u| u.inodes as i64),
                ],
            )
            .map(drop)
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
                {
                    PoolError::SnapshotExists(s.key.clone())
                }
                e => self.err(e),
            })
    }

    pub fn delete_snapshot(&self, key: &str) -> Result<()> {
        self.t
            .execute("DELETE FROM snapshots WHERE key=?1", [key])
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Commit's row change: active `key` becomes committed `name` with `labels`, created and
    /// updated `at`.
    pub fn commit_snapshot(
        &self,
        key: &str,
        name: &str,
        labels: &Labels,
        at: Timestamp,
    ) -> Result<()> {
        self.t
            .execute(
                "UPDATE snapshots SET key=?2, kind='committed', labels=?3, created=?4, updated=?4
                 WHERE key=?1",
                params![key, name, labels_json(labels), at.0],
            )
            .map(drop)
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY =>
                {
                    PoolError::SnapshotExists(name.to_string())
                }
                e => self.err(e),
            })
    }

    pub fn set_snapshot_labels(&self, key: &str, labels: &Labels, at: Timestamp) -> Result<()> {
        self.t
            .execute(
                "UPDATE snapshots SET labels=?2, updated=?3 WHERE key=?1",
                params![key, labels_json(labels), at.0],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Records the usage measured when layer `id` was committed on its committed snapshot.
    pub fn set_snapshot_usage(&self, id: ObjectId, usage: Option<SnapshotUsage>) -> Result<()> {
        self.t
            .execute(
                "UPDATE snapshots SET usage_bytes=?2, usage_inodes=?3
                 WHERE layer=?1 AND kind='committed'",
                params![
                    id.get(),
                    usage.map(|u| u.bytes as i64),
                    usage.map(|u| u.inodes as i64)
                ],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }
}

fn labels_json(l: &Labels) -> String {
    serde_json::to_string(l).expect("string maps serialize")
}

fn read_snapshots<P: rusqlite::Params>(
    conn: &Connection,
    filter: &str,
    p: P,
) -> rusqlite::Result<Vec<SnapshotRecord>> {
    let sql = format!(
        "SELECT key,kind,layer,parent,labels,created,updated,usage_bytes,usage_inodes
         FROM snapshots {filter} ORDER BY key"
    );
    let mut st = conn.prepare(&sql)?;
    let bad = |i: usize, what: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, what.into())
    };
    let rows = st.query_map(p, |r| {
        let kind: String = r.get(1)?;
        let labels: String = r.get(4)?;
        let usage_bytes: Option<i64> = r.get(7)?;
        let usage_inodes: Option<i64> = r.get(8)?;
        Ok(SnapshotRecord {
            key: r.get(0)?,
            kind: SnapshotKind::parse(&kind).ok_or_else(|| bad(1, format!("kind {kind:?}")))?,
            layer: id_col(r, 2)?,
            parent: r.get(3)?,
            labels: serde_json::from_str(&labels).map_err(|e| bad(4, e.to_string()))?,
            created: Timestamp(r.get(5)?),
            updated: Timestamp(r.get(6)?),
            usage: usage_bytes.map(|b| SnapshotUsage {
                bytes: b.max(0) as u64,
                inodes: usage_inodes.unwrap_or(0).max(0) as u64,
            }),
        })
    })?;
    rows.collect()
}
