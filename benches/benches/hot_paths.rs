//! Criterion benches of the Rust-side hot paths of the pool manager: size parsing, the metadata
//! store (one layer-create transaction, name lookup, listing, id allocation) and tar import
//! (validate + digest alone, spool + validate + digest, then apply into a directory).
//!
//! Everything runs unprivileged in temp dirs (`$TMPDIR`, else /tmp): no pool, mount or driver.
//! Store commits use the store's own settings (WAL, synchronous=FULL), so the transaction bench
//! includes a real fsync and depends on the disk behind the temp dir.

use blkdrv_pool::layer::LayerRecord;
use blkdrv_pool::store::Store;
use blkdrv_pool::{Bytes, ObjectId};
use blkdrv_pool::{LayerKind, LayerState, PoolError};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, SamplingMode, Throughput};
use layertar::{apply_tar, spool_tar, validate, ApplyOptions};
use std::hint::black_box;
use std::io::BufReader;
use std::path::PathBuf;
use std::time::{Duration, Instant};
use tempfile::TempDir;

fn parse_size(c: &mut Criterion) {
    c.bench_function("parse_size", |b| {
        b.iter(|| black_box("1.5G").parse::<Bytes>().unwrap())
    });
}

// ---------------------------------------------------------------------------------------------
// Store
// ---------------------------------------------------------------------------------------------

/// The row `Pool::create` records as its intent: an image layer being created.
fn record(id: ObjectId, name: &str) -> LayerRecord {
    LayerRecord {
        id,
        parent: None,
        kind: LayerKind::Image,
        state: LayerState::Creating,
        digest: Some(format!("sha256:{:064x}", id.get())),
        pending_name: Some(name.to_string()),
        created: 1_700_000_000,
        size: None,
        limit: None,
    }
}

/// A fresh store holding `n` layers named `layer-<i>`, inserted in one transaction so setup
/// costs one commit rather than `n` fsyncs.
fn store_with(n: usize) -> (TempDir, Store, Vec<String>) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut store = Store::create(&dir.path().join("store.db")).expect("create store");
    let names: Vec<String> = (0..n).map(|i| format!("layer-{i}")).collect();
    store
        .tx("bench setup", |t| {
            for name in &names {
                let id = t.allocate_id()?;
                t.insert_layer(&record(id, name))?;
                t.bind_name(name, id)?;
            }
            Ok(())
        })
        .expect("fill store");
    (dir, store, names)
}

fn store_benches(c: &mut Criterion) {
    let mut g = c.benchmark_group("store");
    g.sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));

    // One committed transaction per iteration, like a layer create's intent record; the store
    // grows by one layer each time, so names must be unique.
    {
        let (_dir, mut store, _) = store_with(0);
        let mut n = 0u64;
        g.bench_function("create_layer_tx", |b| {
            b.iter(|| {
                n += 1;
                let name = format!("bench-{n}");
                store
                    .tx("bench create", |t| {
                        let id = t.allocate_id()?;
                        t.insert_layer(&record(id, &name))?;
                        t.bind_name(&name, id)?;
                        Ok(id)
                    })
                    .unwrap()
            })
        });
    }

    {
        let (_dir, store, names) = store_with(1_000);
        assert!(store.resolve(&names[999]).unwrap().is_some());
        assert_eq!(store.layers().unwrap().len(), 1_000);
        // Cycle through all names so the lookups are not one cached row.
        let mut i = 0;
        g.bench_function("resolve_1k", |b| {
            b.iter(|| {
                i = (i + 1) % names.len();
                store.resolve(black_box(&names[i])).unwrap()
            })
        });
        g.bench_function("layers_1k", |b| b.iter(|| store.layers().unwrap()));
    }

    // allocate_id is only callable inside a transaction, whose commit (an fsync) would swamp
    // it; so time only the calls, then roll back. Rolling back also keeps next_id from
    // running into the 24-bit id limit over millions of iterations.
    {
        let (_dir, mut store, _) = store_with(10_000);
        g.bench_function("allocate_id_10k", |b| {
            b.iter_custom(|iters| {
                let mut elapsed = Duration::ZERO;
                let r = store.tx("bench allocate_id", |t| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        black_box(t.allocate_id()?);
                    }
                    elapsed = start.elapsed();
                    Err::<(), _>(PoolError::Invalid("roll back".into()))
                });
                assert!(matches!(r, Err(PoolError::Invalid(_))), "{r:?}");
                elapsed
            })
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// Tar import
// ---------------------------------------------------------------------------------------------

/// A layer-like tar: 25 directories holding 500 files of 0..=64 KiB plus four 1 MiB files.
/// Sizes come from a fixed-seed xorshift so every run (and every baseline) sees the same tar.
fn layer_tar() -> Vec<u8> {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    // Incompressible-looking bytes; apply just copies them, but keep them non-uniform anyway.
    let data: Vec<u8> = (0..1 << 20).map(|_| next() as u8).collect();
    // Our own ids, so chown succeeds as root and as a normal user alike.
    let (uid, gid) = (
        nix::unistd::geteuid().as_raw() as u64,
        nix::unistd::getegid().as_raw() as u64,
    );
    let header = |kind: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(uid);
        h.set_gid(gid);
        h.set_mtime(1_700_000_000);
        h
    };
    let mut b = tar::Builder::new(Vec::new());
    for d in 0..25 {
        let mut h = header(tar::EntryType::Directory, 0o755, 0);
        b.append_data(&mut h, format!("d{d:02}/"), std::io::empty())
            .unwrap();
    }
    for f in 0..500 {
        let size = (next() % (64 * 1024 + 1)) as usize;
        let mut h = header(tar::EntryType::Regular, 0o644, size as u64);
        b.append_data(&mut h, format!("d{:02}/f{f:03}", f % 25), &data[..size])
            .unwrap();
    }
    for f in 0..4 {
        let mut h = header(tar::EntryType::Regular, 0o644, data.len() as u64);
        b.append_data(&mut h, format!("d00/big{f}"), &data[..])
            .unwrap();
    }
    b.into_inner().unwrap()
}

/// An empty directory to apply into, kept until `scratch` drops. Deleting trees between
/// iterations would slow the later ones: ext4 without a journal (this VM's disk) skips inodes
/// freed in the last 1-5 minutes when allocating, so file creation slows after many deletes.
fn fresh_root(scratch: &TempDir) -> PathBuf {
    tempfile::tempdir_in(scratch.path())
        .expect("temp dir")
        .keep()
}

fn tar_benches(c: &mut Criterion) {
    let tar = layer_tar();
    let mut g = c.benchmark_group("tar");
    // Tens of ms per iteration: flat sampling keeps 20 samples within a few seconds. Short
    // times also bound the kept trees (20 MiB per iteration, a few GiB in $TMPDIR at most).
    g.sample_size(20)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        // The tar stream length, what a user pipes into `layer create`.
        .throughput(Throughput::Bytes(tar.len() as u64));

    // The parser alone: what spooling costs before it touches the disk.
    g.bench_function("validate", |b| {
        b.iter(|| validate(&tar[..], &ApplyOptions::default()).unwrap())
    });

    let spool_dir = tempfile::tempdir().expect("temp dir");
    // The returned spool file is dropped (deleted) by criterion after the timed batch.
    g.bench_function("spool", |b| {
        b.iter(|| spool_tar(&tar[..], spool_dir.path()).unwrap())
    });

    // Making the targets stays untimed. All trees stay until the group ends (see fresh_root),
    // so `import` does not pay for the inodes `apply` freed just before it.
    let scratch = tempfile::tempdir().expect("temp dir");
    g.bench_function("apply", |b| {
        b.iter_batched(
            || fresh_root(&scratch),
            |root| apply_tar(&tar[..], &root, &ApplyOptions::default(), &mut |_| {}).unwrap(),
            BatchSize::PerIteration,
        )
    });

    // What `Pool::create` does minus the driver: spool, then apply from the spool file.
    g.bench_function("import", |b| {
        b.iter_batched(
            || fresh_root(&scratch),
            |root| {
                let (spool, _digest) = spool_tar(&tar[..], spool_dir.path()).unwrap();
                let f = std::fs::File::open(spool.path()).unwrap();
                apply_tar(
                    BufReader::new(f),
                    &root,
                    &ApplyOptions::default(),
                    &mut |_| {},
                )
                .unwrap();
                spool
            },
            BatchSize::PerIteration,
        )
    });
    g.finish();
}

criterion_group!(benches, parse_size, store_benches, tar_benches);
criterion_main!(benches);
