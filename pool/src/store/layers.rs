//! Layer rows, their names and owners.

use super::{id_col, Store, Tx};
use crate::error::{PoolError, Result};
use crate::layer::{LayerKind, LayerOwner, LayerRecord, LayerState};
use blkdrv_drivers::{Bytes, ObjectId, Usage};
use rusqlite::{params, Connection, OptionalExtension};
use std::collections::HashMap;

impl Store {
    /// Layers' comments, for the layers that have one.
    pub fn comments(&self) -> Result<HashMap<ObjectId, String>> {
        let mut st = self
            .conn
            .prepare("SELECT id, comment FROM layers WHERE comment IS NOT NULL")
            .map_err(|e| self.err("list layer comments", e))?;
        let rows = st
            .query_map([], |r| Ok((id_col(r, 0)?, r.get::<_, String>(1)?)))
            .and_then(|it| it.collect::<std::result::Result<HashMap<_, _>, _>>())
            .map_err(|e| self.err("list layer comments", e))?;
        Ok(rows)
    }

    pub fn layers(&self) -> Result<Vec<LayerRecord>> {
        read_layers(&self.conn, "", []).map_err(|e| self.err("list layers", e))
    }

    pub fn layer(&self, id: ObjectId) -> Result<Option<LayerRecord>> {
        read_layers(&self.conn, "WHERE id=?1", [id.get()])
            .map(|v| v.into_iter().next())
            .map_err(|e| self.err("read layer", e))
    }

    pub fn names(&self) -> Result<Vec<(String, ObjectId)>> {
        let mut st = self
            .conn
            .prepare("SELECT name, layer FROM names ORDER BY name")
            .map_err(|e| self.err("list names", e))?;
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, id_col(r, 1)?)))
            .and_then(|it| it.collect::<std::result::Result<Vec<_>, _>>())
            .map_err(|e| self.err("list names", e))?;
        Ok(rows)
    }

    pub fn resolve(&self, name: &str) -> Result<Option<ObjectId>> {
        self.conn
            .query_row("SELECT layer FROM names WHERE name=?1", [name], |r| {
                id_col(r, 0)
            })
            .optional()
            .map_err(|e| self.err("resolve name", e))
    }

    pub fn by_content(&self, key: &str) -> Result<Option<ObjectId>> {
        self.conn
            .query_row("SELECT id FROM layers WHERE content_key=?1", [key], |r| {
                id_col(r, 0)
            })
            .optional()
            .map_err(|e| self.err("look up content", e))
    }

    pub fn owners(&self) -> Result<HashMap<ObjectId, LayerOwner>> {
        let mut st = self
            .conn
            .prepare("SELECT id, owner FROM layers WHERE owner IS NOT NULL")
            .map_err(|e| self.err("list layer owners", e))?;
        let rows = st
            .query_map([], |r| {
                let o: String = r.get(1)?;
                let owner = LayerOwner::parse(&o).ok_or_else(|| {
                    rusqlite::Error::FromSqlConversionFailure(
                        1,
                        rusqlite::types::Type::Text,
                        format!("owner {o:?}").into(),
                    )
                })?;
                Ok((id_col(r, 0)?, owner))
            })
            .and_then(|it| it.collect::<std::result::Result<HashMap<_, _>, _>>())
            .map_err(|e| self.err("list layer owners", e))?;
        Ok(rows)
    }
}

impl Tx<'_> {
    pub fn insert_layer(&self, l: &LayerRecord) -> Result<()> {
        self.t
            .execute(
                "INSERT INTO layers(id,parent,kind,state,digest,pending_name,created,
                                    size_bytes,size_inodes,size_referenced,size_limit)
                 VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11)",
                params![
                    l.id.get(),
                    l.parent.map(ObjectId::get),
                    l.kind.as_str(),
                    l.state.as_str(),
                    l.digest,
                    l.pending_name,
                    l.created,
                    l.size.map(|u| u.bytes.0 as i64),
                    l.size.and_then(|u| u.inodes).map(|i| i as i64),
                    l.size.and_then(|u| u.referenced).map(|b| b.0 as i64),
                    l.limit.map(|b| b.0 as i64),
                ],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    pub fn set_state(&self, id: ObjectId, state: LayerState) -> Result<()> {
        self.t
            .execute(
                "UPDATE layers SET state=?2 WHERE id=?1",
                params![id.get(), state.as_str()],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Marks a layer committed with its final size (and content key for image layers).
    /// Marks a layer committed with its final size, if known (and content key for image layers).
    pub fn set_committed(
        &self,
        id: ObjectId,
        size: Option<Usage>,
        content_key: Option<&str>,
    ) -> Result<()> {
        self.t
            .execute(
                "UPDATE layers SET state='committed', size_bytes=?2, size_inodes=?3,
                        size_referenced=?4, content_key=COALESCE(?5, content_key),
                        pending_name=NULL WHERE id=?1",
                params![
                    id.get(),
                    size.map(|u| u.bytes.0 as i64),
                    size.and_then(|u| u.inodes).map(|i| i as i64),
                    size.and_then(|u| u.referenced).map(|b| b.0 as i64),
                    content_key
                ],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    pub fn clear_pending_name(&self, id: ObjectId) -> Result<()> {
        self.t
            .execute(
                "UPDATE layers SET pending_name=NULL WHERE id=?1",
                [id.get()],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    pub fn bind_name(&self, name: &str, id: ObjectId) -> Result<()> {
        self.t
            .execute(
                "INSERT INTO names(name, layer) VALUES(?1, ?2)",
                params![name, id.get()],
            )
            .map(drop)
            .map_err(|e| match e {
                rusqlite::Error::SqliteFailure(f, _)
                    if f.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    PoolError::LayerExists(name.to_string())
                }
                e => self.err(e),
            })
    }

    pub fn unbind_name(&self, name: &str) -> Result<()> {
        self.t
            .execute("DELETE FROM names WHERE name=?1", [name])
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Marks layer `id` as made by `owner` (in the transaction that inserts it).
    pub fn set_owner(&self, id: ObjectId, owner: LayerOwner) -> Result<()> {
        self.t
            .execute(
                "UPDATE layers SET owner=?2 WHERE id=?1",
                params![id.get(), owner.as_str()],
            )
            .map(drop)
            .map_err(|e| self.err(e))
    }

    /// Records layer `id`'s comment unless it has one (a layer reused from the build cache
    /// keeps its first). Returns whether it was recorded.
    pub fn set_comment(&self, id: ObjectId, comment: &str) -> Result<bool> {
        self.t
            .execute(
                "UPDATE layers SET comment=?2 WHERE id=?1 AND comment IS NULL",
                params![id.get(), comment],
            )
            .map(|n| n > 0)
            .map_err(|e| self.err(e))
    }

    /// Deletes a layer row with its names, mount records, snapshot rows (a rolled-back
    /// Prepare's row goes with its layer) and the volume or container row it is the object of.
    pub fn delete_layer(&self, id: ObjectId) -> Result<()> {
        for sql in [
            "DELETE FROM snapshots WHERE layer=?1",
            "DELETE FROM volumes WHERE layer=?1",
            "DELETE FROM containers WHERE layer=?1",
            "DELETE FROM names WHERE layer=?1",
            "DELETE FROM mounts WHERE layer=?1",
            "DELETE FROM layers WHERE id=?1",
        ] {
            self.t.execute(sql, [id.get()]).map_err(|e| self.err(e))?;
        }
        Ok(())
    }
}

fn read_layers<P: rusqlite::Params>(
    conn: &Connection,
    filter: &str,
    p: P,
) -> rusqlite::Result<Vec<LayerRecord>> {
    let sql = format!(
        "SELECT id,parent,kind,state,digest,pending_name,created,size_bytes,size_inodes,
                size_referenced,size_limit
         FROM layers {filter} ORDER BY id"
    );
    let mut st = conn.prepare(&sql)?;
    let bad = |i: usize, what: String| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Text, what.into())
    };
    let rows = st.query_map(p, |r| {
        let kind: String = r.get(2)?;
        let state: String = r.get(3)?;
        let parent: Option<u32> = r.get(1)?;
        let size_bytes: Option<i64> = r.get(7)?;
        let size_inodes: Option<i64> = r.get(8)?;
        let size_referenced: Option<i64> = r.get(9)?;
        let size_limit: Option<i64> = r.get(10)?;
        Ok(LayerRecord {
            id: id_col(r, 0)?,
            parent: parent
                .map(|p| ObjectId::new(p).map_err(|e| bad(1, e.to_string())))
                .transpose()?,
            kind: LayerKind::parse(&kind).ok_or_else(|| bad(2, format!("kind {kind:?}")))?,
            state: LayerState::parse(&state).ok_or_else(|| bad(3, format!("state {state:?}")))?,
            digest: r.get(4)?,
            pending_name: r.get(5)?,
            created: r.get(6)?,
            size: size_bytes.map(|b| Usage {
                bytes: Bytes(b as u64),
                inodes: size_inodes.map(|i| i as u64),
                referenced: size_referenced.map(|r| Bytes(r as u64)),
            }),
            limit: size_limit.map(|b| Bytes(b as u64)),
        })
    })?;
    rows.collect()
}
