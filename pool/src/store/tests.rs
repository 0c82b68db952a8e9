//! The store's unit tests: round trips, migrations, constraints.

use super::*;
use crate::layer::{LayerKind, LayerOwner, LayerRecord, LayerState};
use crate::snapshot::{Labels, SnapshotKind, SnapshotRecord, SnapshotUsage, Timestamp};
use blkdrv_drivers::Usage;

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
    assert_eq!(s.meta("schema").unwrap().as_deref(), Some("4"));
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

/// What schema 3 had: no volumes, containers or layer comments.
fn downgrade_to_3(s: &Store) {
    s.conn
        .execute_batch(
            "DROP TABLE volumes;
             DROP TABLE containers;
             ALTER TABLE layers DROP COLUMN comment;
             UPDATE meta SET value='3' WHERE key='schema';",
        )
        .unwrap();
}

/// What schema 2 had: no snapshot table, no layer owners.
fn downgrade_to_2(s: &Store) {
    downgrade_to_3(s);
    s.conn
        .execute_batch(
            "DROP TABLE snapshots;
             ALTER TABLE layers DROP COLUMN owner;
             UPDATE meta SET value='2' WHERE key='schema';",
        )
        .unwrap();
}

fn snap(key: &str, kind: SnapshotKind, layer: ObjectId, parent: Option<&str>) -> SnapshotRecord {
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
    assert_eq!(s.meta("schema").unwrap().as_deref(), Some("4"));
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
    assert_eq!(s.meta("schema").unwrap().as_deref(), Some("4"));
}

#[test]
fn a_store_newer_than_this_blkdrv_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.db");
    let s = Store::create(&p).unwrap();
    s.set_meta("schema", "5").unwrap();
    drop(s);
    let e = Store::open(&p).err().expect("schema 5 must not open");
    assert!(e.to_string().contains("schema version Some(5)"), "{e}");
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

/// A store of schema 3 opens as schema 4: its layers and snapshots are kept, without
/// comments; volumes, containers and comments can then be recorded.
#[test]
fn schema_3_is_upgraded_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("s.db");
    let mut s = Store::create(&p).unwrap();
    let id = s
        .tx("t", |t| {
            let a = t.allocate_id()?;
            t.insert_layer(&rec(a, None))?;
            t.bind_name("cli-layer", a)?;
            t.set_owner(a, LayerOwner::Containerd)?;
            t.insert_snapshot(&snap("k", SnapshotKind::Active, a, None))
                .map(|()| a)
        })
        .unwrap();
    downgrade_to_3(&s);
    assert!(s.conn.execute_batch("SELECT * FROM volumes").is_err());
    drop(s);
    let mut s = Store::open(&p).unwrap();
    assert_eq!(s.meta("schema").unwrap().as_deref(), Some("4"));
    assert_eq!(s.resolve("cli-layer").unwrap(), Some(id));
    assert_eq!(s.snapshots().unwrap().len(), 1);
    assert!(s.comments().unwrap().is_empty());
    assert!(s.volumes().unwrap().is_empty() && s.containers().unwrap().is_empty());
    // A comment is recorded once: a reused layer keeps its first.
    assert!(s.tx("t", |t| t.set_comment(id, "RUN a")).unwrap());
    assert!(!s.tx("t", |t| t.set_comment(id, "RUN b")).unwrap());
    assert_eq!(s.comments().unwrap()[&id], "RUN a");
    let v = vol("data", id);
    s.tx("t", |t| t.insert_volume(&v)).unwrap();
    assert_eq!(s.volume("data").unwrap(), Some(v));
}

fn vol(name: &str, layer: ObjectId) -> VolumeRecord {
    VolumeRecord {
        name: name.into(),
        layer,
        anonymous: false,
        origin: None,
        labels: [("k".to_string(), "v".to_string())].into(),
        created: 3,
        made_by: Some("c1".into()),
    }
}

/// Volume and container rows round-trip (mounts as JSON, root and namespace), taken names
/// are VolumeExists/ContainerExists, and a layer's deletion takes the row it is the object of.
#[test]
fn volumes_and_containers_round_trip_and_go_with_their_layer() {
    use crate::container::{ContainerPath, MountEntry, MountSource, VolumeName};
    use crate::pool::ContainerState;
    let dir = tempfile::tempdir().unwrap();
    let mut s = Store::create(&dir.path().join("s.db")).unwrap();
    let (img, w, v) = s
        .tx("t", |t| {
            let ids = (t.allocate_id()?, t.allocate_id()?, t.allocate_id()?);
            t.insert_layer(&rec(ids.0, None))?;
            t.insert_layer(&rec(ids.1, Some(ids.0)))?;
            t.insert_layer(&rec(ids.2, None))?;
            Ok(ids)
        })
        .unwrap();
    let c = ContainerRecord {
        name: "web".into(),
        layer: w,
        image: img,
        mounts: vec![MountEntry {
            source: MountSource::Volume {
                name: Some(VolumeName::new("data").unwrap()),
                anonymous: false,
                nocopy: true,
            },
            target: ContainerPath::new("/var/lib/data").unwrap(),
            readonly: true,
        }],
        state: ContainerState::Creating,
        created: 9,
        root: None,
        ns: None,
    };
    s.tx("t", |t| {
        t.insert_volume(&vol("data", v))?;
        t.insert_container(&c)
    })
    .unwrap();
    assert_eq!(s.container("web").unwrap().as_ref(), Some(&c));
    let again = ContainerRecord {
        layer: v,
        ..c.clone()
    };
    let e = s.tx("t", |t| t.insert_container(&again)).unwrap_err();
    assert!(matches!(e, PoolError::ContainerExists(_)), "{e}");
    let e = s
        .tx("t", |t| t.insert_volume(&vol("data", img)))
        .unwrap_err();
    assert!(matches!(e, PoolError::VolumeExists(_)), "{e}");
    s.tx("t", |t| {
        t.set_container_state("web", ContainerState::Mounting)?;
        t.set_container_root("web", Some((Path::new("/mnt/r"), MountNs(42))))?;
        t.release_volumes("c1")
    })
    .unwrap();
    let got = s.container("web").unwrap().unwrap();
    assert_eq!(
        (got.state, got.root.as_deref(), got.ns),
        (
            ContainerState::Mounting,
            Some(Path::new("/mnt/r")),
            Some(MountNs(42))
        )
    );
    assert_eq!(s.volume("data").unwrap().unwrap().made_by, None);
    // The image cannot go while a container is on it.
    assert!(s.tx("t", |t| t.delete_layer(img)).is_err());
    s.tx("t", |t| {
        t.delete_layer(w)?;
        t.delete_layer(v)
    })
    .unwrap();
    assert!(s.containers().unwrap().is_empty() && s.volumes().unwrap().is_empty());
}
