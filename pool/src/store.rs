//! The pool's metadata store: SQLite in WAL mode, one file per pool.
//!
//! Why SQLite: ACID with synchronous=FULL (a committed transaction survives kill -9 and power
//! loss), and WAL lets any number of reader processes (`layer ls`, `pool status`) read while
//! a writer works, which an embedded store that locks the whole file per process cannot.

use crate::error::{PoolError, Result};
use crate::layer::{LayerKind, LayerOwner, LayerRecord, LayerState};
use crate::snapshot::{Labels, SnapshotKind, SnapshotRecord, SnapshotUsage, Timestamp};
use blkdrv_drivers::sys::mount::MountNs;
use blkdrv_drivers::{Bytes, MountMode, ObjectId, Usage};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// 2: mounts carry the mount namespace they live in (`mntns`), keyed by (target, mntns).
/// 3: containerd's snapshots (`snapshots`) and the owner of a layer (`layers.owner`).
const SCHEMA_VERSION: i64 = 3;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS layers (
    id INTEGER PRIMARY KEY,
    parent INTEGER REFERENCES layers(id),
    kind TEXT NOT NULL,
    state TEXT NOT NULL,
    digest TEXT,
    -- parent id (0 for none) + digest of committed image layers: the build-cache key.
    content_key TEXT UNIQUE,
    pending_name TEXT,
    created INTEGER NOT NULL,
    -- Usage recorded at commit; NULL where the driver cannot tell.
    size_bytes INTEGER,
    size_inodes INTEGER,
    size_referenced INTEGER,
    -- Per-layer size limit given at create/snapshot; then the owner: NULL for the CLI's
    -- layers, 'containerd' for snapshots' layers (no comment between: DROP COLUMN chokes).
    size_limit INTEGER,
    owner TEXT
);
CREATE INDEX IF NOT EXISTS layers_parent ON layers(parent);
CREATE TABLE IF NOT EXISTS names (
    name TEXT PRIMARY KEY,
    layer INTEGER NOT NULL REFERENCES layers(id)
);
CREATE INDEX IF NOT EXISTS names_layer ON names(layer);
CREATE TABLE IF NOT EXISTS mounts (
    target TEXT NOT NULL,
    -- Inode of the mount namespace the mount lives in; 0 for records of schema 1 (unknown).
    mntns INTEGER NOT NULL DEFAULT 0,
    layer INTEGER NOT NULL REFERENCES layers(id),
    mode TEXT NOT NULL,
    -- 'mounting' is the intent; 'mounted' once mount(2) returned.
    state TEXT NOT NULL,
    PRIMARY KEY (target, mntns)
);
";

/// containerd's snapshots (schema 3), in their own table: their keys are not layer names.
const SNAPSHOTS: &str = "
CREATE TABLE IF NOT EXISTS snapshots (
    -- containerd's key (or committed name): any text but NUL, up to 4096 bytes.
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    -- The snapshot's layer; a view points at its parent's layer.
    layer INTEGER NOT NULL REFERENCES layers(id),
    parent TEXT REFERENCES snapshots(key),
    -- JSON object of string labels.
    labels TEXT NOT NULL,
    -- Nanoseconds since the epoch.
    created INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    -- Usage measured at commit (committed snapshots).
    usage_bytes INTEGER,
    usage_inodes INTEGER
);
CREATE INDEX IF NOT EXISTS snapshots_parent ON snapshots(parent);
CREATE INDEX IF NOT EXISTS snapshots_layer ON snapshots(layer);
";

/// Schema 1 -> 2: the mounts table gains its namespace column and key. Old records keep
/// namespace 0 (unknown): they are judged in every namespace.
const MIGRATE_1_2: &str = "
CREATE TABLE mounts_v2 (
    target TEXT NOT NULL,
    mntns INTEGER NOT NULL DEFAULT 0,
    layer INTEGER NOT NULL REFERENCES layers(id),
    mode TEXT NOT NULL,
    state TEXT NOT NULL,
    PRIMARY KEY (target, mntns)
);
INSERT INTO mounts_v2(target, mntns, layer, mode, state)
    SELECT target, 0, layer, mode, state FROM mounts;
DROP TABLE mounts;
ALTER TABLE mounts_v2 RENAME TO mounts;
UPDATE meta SET value='2' WHERE key='schema';
";

/// Schema 2 -> 3: the snapshot table and layer owners. Every existing layer is the CLI's.
const MIGRATE_2_3: &[&str] = &[
    "ALTER TABLE layers ADD COLUMN owner TEXT;",
    SNAPSHOTS,
    "UPDATE meta SET value='3' WHERE key='schema';",
];

/// Each upgrade, by the version it reads: applied in order until [`SCHEMA_VERSION`], each in
/// a transaction of its own (a crash between two leaves a store of the version in between).
const MIGRATIONS: &[(i64, &[&str])] = &[(1, &[MIGRATE_1_2]), (2, MIGRATE_2_3)];

/// A recorded mount of a layer.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MountRecord {
    pub target: PathBuf,
    /// The mount namespace the mount was made in (`None`: recorded by an older blkdrv).
    #[serde(rename = "mntns", serialize_with = "ser_ns")]
    pub ns: Option<MountNs>,
    pub layer: ObjectId,
    pub mode: MountMode,
    pub settled: bool,
}

fn ser_ns<S: serde::Serializer>(
    ns: &Option<MountNs>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match ns {
        Some(n) => s.serialize_u64(n.0),
        None => s.serialize_none(),
    }
}

fn ns_col(ns: Option<MountNs>) -> i64 {
    ns.map_or(0, |n| n.0 as i64)
}

pub struct Store {
    conn: Connection,
    path: PathBuf,
}

pub fn content_key(parent: Option<ObjectId>, digest: &str) -> String {
    format!("{}/{}", parent.map_or(0, ObjectId::get), digest)
}

impl Store {
    /// Creates a new store file. Fails if one exists.
    pub fn create(path: &Path) -> Result<Store> {
        if path.exists() {
            return Err(PoolError::Invalid(format!(
                "store {} already exists",
                path.display()
            )));
        }
        let s = Self::connect(path)?;
        s.conn
            .execute_batch(SCHEMA)
            .and_then(|()| s.conn.execute_batch(SNAPSHOTS))
            .map_err(|e| s.err("create schema", e))?;
        s.set_meta("schema", &SCHEMA_VERSION.to_string())?;
        s.set_meta("next_id", "1")?;
        Ok(s)
    }

    /// Opens an existing store, checking it is a readable blkdrv store.
    pub fn open(path: &Path) -> Result<Store> {
        if !path.is_file() {
            return Err(PoolError::io(
                "open store",
                path,
                std::io::Error::from(std::io::ErrorKind::NotFound),
            ));
        }
        let s = Self::connect(path)?;
        let corrupt = |op, e| PoolError::CorruptStore {
            path: path.to_path_buf(),
            op,
            source: e,
        };
        let check: String = s
            .conn
            .query_row("PRAGMA quick_check", [], |r| r.get(0))
            .map_err(|e| corrupt("integrity check", e))?;
        if check != "ok" {
            return Err(corrupt(
                "integrity check",
                rusqlite::Error::InvalidParameterName(check),
            ));
        }
        let v: Option<String> = s
            .conn
            .query_row("SELECT value FROM meta WHERE key='schema'", [], |r| {
                r.get(0)
            })
            .optional()
            .map_err(|e| corrupt("read schema version", e))?;
        let mut version = v.as_deref().and_then(|v| v.parse::<i64>().ok());
        let mut s = s;
        while let Some(from) = version.filter(|v| *v < SCHEMA_VERSION) {
            let Some((_, steps)) = MIGRATIONS.iter().find(|(v, _)| *v == from) else {
                break;
            };
            s.migrate(from, steps)?;
            version = Some(from + 1);
        }
        match version {
            Some(SCHEMA_VERSION) => Ok(s),
            other => Err(corrupt(
                "read schema version",
                rusqlite::Error::InvalidParameterName(format!(
                    "schema version {other:?}, this blkdrv reads {SCHEMA_VERSION}"
                )),
            )),
        }
    }

    /// Upgrades the store from schema `from` to `from + 1` by `steps`, in one transaction.
    fn migrate(&mut self, from: i64, steps: &[&str]) -> Result<()> {
        let path = self.path.clone();
        let corrupt = |e| PoolError::CorruptStore {
            path: path.clone(),
            op: "upgrade schema",
            source: e,
        };
        let t = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(corrupt)?;
        // Another process may have upgraded it between our read and the lock.
        let again: String = t
            .query_row("SELECT value FROM meta WHERE key='schema'", [], |r| {
                r.get(0)
            })
            .map_err(corrupt)?;
        if again == from.to_string() {
            for sql in steps {
                t.execute_batch(sql).map_err(corrupt)?;
            }
        }
        t.commit().map_err(corrupt)?;
        tracing::info!(store = %self.path.display(), "upgraded schema {from} to {}", from + 1);
        Ok(())
    }

    fn connect(path: &Path) -> Result<Store> {
        let corrupt = |op, e| PoolError::CorruptStore {
            path: path.to_path_buf(),
            op,
            source: e,
        };
        let conn = Connection::open(path).map_err(|e| corrupt("open", e))?;
        // WAL: readers are never blocked by the writer. FULL: a commit is on disk when it returns.
        conn.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA foreign_keys=ON;",
        )
        .map_err(|e| corrupt("configure", e))?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(|e| corrupt("configure", e))?;
        Ok(Store {
            conn,
            path: path.to_path_buf(),
        })
    }

    fn err(&self, op: &'static str, source: rusqlite::Error) -> PoolError {
        PoolError::Store {
            path: self.path.clone(),
            op,
            source,
        }
    }

    /// Runs `f` in one transaction: all of its changes land, or none.
    pub fn tx<T>(&mut self, op: &'static str, f: impl FnOnce(&Tx<'_>) -> Result<T>) -> Result<T> {
        let path = self.path.clone();
        let t = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| PoolError::Store {
                path: path.clone(),
                op,
                source: e,
            })?;
        let tx = Tx { t, path, op };
        let out = f(&tx)?;
        tx.t.commit().map_err(|e| PoolError::Store {
            path: tx.path.clone(),
            op,
            source: e,
        })?;
        Ok(out)
    }

    pub fn meta(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM meta WHERE key=?1", [key], |r| r.get(0))
            .optional()
            .map_err(|e| self.err("read meta", e))
    }

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO meta(key,value) VALUES(?1,?2) ON CONFLICT(key) DO UPDATE SET value=?2",
                params![key, value],
            )
            .map(drop)
            .map_err(|e| self.err("write meta", e))
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

    /// Layers and their owners, for the layers that have one (see [`LayerOwner`]).
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

/// A write transaction.
pub struct Tx<'c> {
    t: Transaction<'c>,
    path: PathBuf,
    op: &'static str,
}

impl Tx<'_> {
    fn err(&self, source: rusqlite::Error) -> PoolError {
        PoolError::Store {
            path: self.path.clone(),
            op: self.op,
            source,
        }
    }

    /// Allocates the next object id. Ids are never reused, so a stale on-disk object can never
    /// be mistaken for a new layer's.
    pub fn allocate_id(&self) -> Result<ObjectId> {
        let next: String = self
            .t
            .query_row("SELECT value FROM meta WHERE key='next_id'", [], |r| {
                r.get(0)
            })
            .map_err(|e| self.err(e))?;
        let n: u32 = next
            .parse()
            .map_err(|_| PoolError::Invalid(format!("corrupt next_id {next:?} in store")))?;
        let id =
            ObjectId::new(n).map_err(|e| PoolError::Invalid(format!("id space exhausted: {e}")))?;
        // The last id is the bench's scratch object (ObjectId::SCRATCH), never a layer's.
        if !id.is_allocatable() {
            return Err(PoolError::Invalid(format!(
                "id space exhausted: object id {id} is reserved for scratch objects"
            )));
        }
        self.t
            .execute(
                "UPDATE meta SET value=?1 WHERE key='next_id'",
                [(n + 1).to_string()],
            )
            .map_err(|e| self.err(e))?;
        Ok(id)
    }

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

    /// Inserts a snapshot row. A taken key is [`PoolError::SnapshotExists`].
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

    /// Deletes a layer row with its names, mount records and snapshot rows (a
    /// rolled-back Prepare's row goes with its layer).
    pub fn delete_layer(&self, id: ObjectId) -> Result<()> {
        for sql in [
            "DELETE FROM snapshots WHERE layer=?1",
            "DELETE FROM names WHERE layer=?1",
            "DELETE FROM mounts WHERE layer=?1",
            "DELETE FROM layers WHERE id=?1",
        ] {
            self.t.execute(sql, [id.get()]).map_err(|e| self.err(e))?;
        }
        Ok(())
    }

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

    pub fn set_meta(&self, key: &str, value: &str) -> Result<()> {
        self.t
            .execute(
                "INSERT INTO meta(key,value) VALUES(?1,?2) ON CONFLICT(key) DO UPDATE SET value=?2",
                params![key, value],
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

fn id_col(r: &rusqlite::Row<'_>, i: usize) -> rusqlite::Result<ObjectId> {
    let v: u32 = r.get(i)?;
    ObjectId::new(v).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(i, rusqlite::types::Type::Integer, Box::new(e))
    })
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

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: ObjectId, parent: Option<ObjectId>) -> LayerRecord {
        LayerRecord {
            id,
            parent,
            kind: LayerKind::Image,
            state: LayerState::Creating,
            digest: Some("sha256:ab".into()),
            pending_name: Some("n".into()),
            created: 1,
            size: None,
            limit: None,
        }
    }

    #[test]
    fn layers_round_trip_and_names_are_unique() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::create(&dir.path().join("s.db")).unwrap();
        let (a, b) = s
            .tx("t", |t| {
                let a = t.allocate_id()?;
                t.insert_layer(&rec(a, None))?;
                let b = t.allocate_id()?;
                t.insert_layer(&rec(b, Some(a)))?;
                t.bind_name("x", a)?;
                Ok((a, b))
            })
            .unwrap();
        assert_ne!(a, b);
        let err = s.tx("t", |t| t.bind_name("x", b)).unwrap_err();
        assert!(matches!(err, PoolError::LayerExists(_)), "{err}");
        assert_eq!(s.resolve("x").unwrap(), Some(a));
        assert_eq!(s.layer(b).unwrap().unwrap().parent, Some(a));
        s.tx("t", |t| {
            t.set_committed(a, Some(Usage::default()), Some("0/sha256:ab"))
        })
        .unwrap();
        assert_eq!(s.by_content("0/sha256:ab").unwrap(), Some(a));
        assert_eq!(s.layer(a).unwrap().unwrap().state, LayerState::Committed);
    }

    #[test]
    fn failed_transaction_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::create(&dir.path().join("s.db")).unwrap();
        let r: Result<()> = s.tx("t", |t| {
            let a = t.allocate_id()?;
            t.insert_layer(&rec(a, None))?;
            Err(PoolError::Invalid("boom".into()))
        });
        assert!(r.is_err());
        assert!(s.layers().unwrap().is_empty());
        assert_eq!(s.meta("next_id").unwrap().as_deref(), Some("1"));
    }

    #[test]
    fn the_scratch_id_is_never_allocated() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::create(&dir.path().join("s.db")).unwrap();
        let last = ObjectId::SCRATCH.get() - 1;
        s.set_meta("next_id", &last.to_string()).unwrap();
        let id = s.tx("t", |t| t.allocate_id()).unwrap();
        assert_eq!(id.get(), last);
        let err = s.tx("t", |t| t.allocate_id()).unwrap_err().to_string();
        assert!(err.contains("reserved for scratch"), "{err}");
    }

    #[test]
    fn garbage_file_is_reported_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.db");
        std::fs::write(&p, vec![0x42u8; 8192]).unwrap();
        let err = Store::open(&p).err().expect("garbage must not open");
        assert!(matches!(err, PoolError::CorruptStore { .. }), "{err}");
    }

    /// A store of schema 1 (mounts keyed by target alone) opens as schema 2: its mounts keep
    /// an unknown namespace, and the same target can then be recorded in two namespaces.
    #[test]
    fn schema_1_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.db");
        let mut s = Store::create(&p).unwrap();
        let id = s
            .tx("t", |t| {
                let a = t.allocate_id()?;
                t.insert_layer(&rec(a, None))?;
                Ok(a)
            })
            .unwrap();
        downgrade_to_2(&s);
        s.conn
            .execute_batch(&format!(
                "DROP TABLE mounts;
                 CREATE TABLE mounts (target TEXT PRIMARY KEY, layer INTEGER NOT NULL
                     REFERENCES layers(id), mode TEXT NOT NULL, state TEXT NOT NULL);
                 INSERT INTO mounts VALUES ('/m', {}, 'rw', 'mounted');
                 UPDATE meta SET value='1' WHERE key='schema';",
                id.get()
            ))
            .unwrap();
        drop(s);
        let mut s = Store::open(&p).unwrap();
        assert_eq!(s.meta("schema").unwrap().as_deref(), Some("3"));
        let m = s.mounts().unwrap();
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].target.as_path(), m[0].ns), (Path::new("/m"), None));
        s.tx("t", |t| {
            t.add_mount(Path::new("/m"), Some(MountNs(7)), id, MountMode::ReadOnly)
        })
        .unwrap();
        assert_eq!(s.mounts().unwrap().len(), 2);
        s.tx("t", |t| t.remove_mount(Path::new("/m"), None))
            .unwrap();
        assert_eq!(s.mounts().unwrap()[0].ns, Some(MountNs(7)));
    }

    /// What schema 2 had: no snapshot table, no layer owners.
    fn downgrade_to_2(s: &Store) {
        s.conn
            .execute_batch(
                "DROP TABLE snapshots;
                 ALTER TABLE layers DROP COLUMN owner;
                 UPDATE meta SET value='2' WHERE key='schema';",
            )
            .unwrap();
    }

    fn snap(
        key: &str,
        kind: SnapshotKind,
        layer: ObjectId,
        parent: Option<&str>,
    ) -> SnapshotRecord {
        SnapshotRecord {
            key: key.into(),
            kind,
            layer,
            parent: parent.map(Into::into),
            labels: [(
                "containerd.io/snapshot.ref".to_string(),
                "sha256:c".to_string(),
            )]
            .into(),
            created: Timestamp(1_700_000_000_123_456_789),
            updated: Timestamp(1_700_000_000_123_456_790),
            usage: None,
        }
    }

    /// A store of schema 2 opens as schema 3: its layers are kept, owned by nobody, and
    /// snapshots can be recorded on them.
    #[test]
    fn schema_2_is_upgraded_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.db");
        let mut s = Store::create(&p).unwrap();
        let id = s
            .tx("t", |t| {
                let a = t.allocate_id()?;
                t.insert_layer(&rec(a, None))?;
                t.bind_name("cli-layer", a)?;
                Ok(a)
            })
            .unwrap();
        downgrade_to_2(&s);
        drop(s);
        let mut s = Store::open(&p).unwrap();
        assert_eq!(s.meta("schema").unwrap().as_deref(), Some("3"));
        assert_eq!(s.resolve("cli-layer").unwrap(), Some(id));
        assert!(s.owners().unwrap().is_empty());
        assert!(s.snapshots().unwrap().is_empty());
        s.tx("t", |t| {
            t.insert_snapshot(&snap("k", SnapshotKind::Active, id, None))
        })
        .unwrap();
        assert_eq!(s.snapshots().unwrap().len(), 1);
        drop(s);
        // Opening again is a no-op.
        let s = Store::open(&p).unwrap();
        assert_eq!(s.meta("schema").unwrap().as_deref(), Some("3"));
    }

    #[test]
    fn a_store_newer_than_this_blkdrv_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.db");
        let s = Store::create(&p).unwrap();
        s.set_meta("schema", "4").unwrap();
        drop(s);
        let e = Store::open(&p).err().expect("schema 4 must not open");
        assert!(e.to_string().contains("schema version Some(4)"), "{e}");
    }

    /// Keys of any shape round-trip; labels and nanosecond times too; a taken key is
    /// SnapshotExists; commit renames the row; the children of a key are found by it.
    #[test]
    fn snapshots_round_trip_with_odd_keys() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::create(&dir.path().join("s.db")).unwrap();
        let long = format!("default/17/extract-123 sha256:{}", "ab\"c, ".repeat(60));
        let (a, b) = s
            .tx("t", |t| {
                let a = t.allocate_id()?;
                t.insert_layer(&rec(a, None))?;
                t.set_owner(a, LayerOwner::Containerd)?;
                let b = t.allocate_id()?;
                t.insert_layer(&rec(b, Some(a)))?;
                t.set_owner(b, LayerOwner::Containerd)?;
                t.insert_snapshot(&snap(&long, SnapshotKind::Active, a, None))?;
                Ok((a, b))
            })
            .unwrap();
        let got = s.snapshot(&long).unwrap().unwrap();
        assert_eq!(got, snap(&long, SnapshotKind::Active, a, None));
        assert_eq!(
            s.owners().unwrap(),
            [(a, LayerOwner::Containerd), (b, LayerOwner::Containerd)].into()
        );
        let err = s
            .tx("t", |t| {
                t.insert_snapshot(&snap(&long, SnapshotKind::View, a, None))
            })
            .unwrap_err();
        assert!(
            matches!(err, PoolError::SnapshotExists(ref k) if *k == long),
            "{err}"
        );

        let labels: Labels = [("x".to_string(), "y".to_string())].into();
        s.tx("t", |t| {
            t.commit_snapshot(&long, "sha256:chain", &labels, Timestamp(5))
        })
        .unwrap();
        assert!(s.snapshot(&long).unwrap().is_none());
        let c = s.snapshot("sha256:chain").unwrap().unwrap();
        assert_eq!(
            (c.kind, c.labels.clone(), c.created, c.updated),
            (
                SnapshotKind::Committed,
                labels.clone(),
                Timestamp(5),
                Timestamp(5)
            )
        );
        s.tx("t", |t| {
            t.set_snapshot_usage(
                a,
                Some(SnapshotUsage {
                    bytes: 4096,
                    inodes: 3,
                }),
            )?;
            t.insert_snapshot(&snap(
                "child",
                SnapshotKind::Active,
                b,
                Some("sha256:chain"),
            ))?;
            t.insert_snapshot(&snap("view", SnapshotKind::View, a, Some("sha256:chain")))
        })
        .unwrap();
        assert_eq!(
            s.snapshot("sha256:chain").unwrap().unwrap().usage,
            Some(SnapshotUsage {
                bytes: 4096,
                inodes: 3
            })
        );
        assert_eq!(
            s.snapshot_children("sha256:chain").unwrap(),
            vec!["child".to_string(), "view".to_string()]
        );
        // Committing onto a taken name fails as SnapshotExists and changes nothing.
        let err = s
            .tx("t", |t| {
                t.commit_snapshot("child", "view", &labels, Timestamp(9))
            })
            .unwrap_err();
        assert!(
            matches!(err, PoolError::SnapshotExists(ref k) if k == "view"),
            "{err}"
        );
        assert!(s.snapshot("child").unwrap().is_some());
    }

    /// A layer's deletion takes its snapshot rows with it (a rolled-back Prepare), and a parent
    /// row cannot go while a child row names it.
    #[test]
    fn deleting_a_layer_deletes_its_rows_and_parents_stay_while_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = Store::create(&dir.path().join("s.db")).unwrap();
        let (a, b) = s
            .tx("t", |t| {
                let a = t.allocate_id()?;
                t.insert_layer(&rec(a, None))?;
                let b = t.allocate_id()?;
                t.insert_layer(&rec(b, Some(a)))?;
                t.insert_snapshot(&snap("p", SnapshotKind::Committed, a, None))?;
                t.insert_snapshot(&snap("v", SnapshotKind::View, a, Some("p")))?;
                t.insert_snapshot(&snap("c", SnapshotKind::Active, b, Some("p")))?;
                Ok((a, b))
            })
            .unwrap();
        assert!(s.tx("t", |t| t.delete_snapshot("p")).is_err());
        s.tx("t", |t| t.delete_layer(b)).unwrap();
        assert!(s.snapshot("c").unwrap().is_none());
        s.tx("t", |t| t.delete_layer(a)).unwrap();
        assert!(s.snapshots().unwrap().is_empty());
    }
}
