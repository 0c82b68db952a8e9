//! Criterion benches of the Rust-side hot paths. Only size parsing for now; the benchmark issue
//! adds store operations, id allocation and tar import throughput.

use blkdrv_drivers::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

fn parse_size(c: &mut Criterion) {
    c.bench_function("parse_size", |b| {
        b.iter(|| black_box("1.5G").parse::<Bytes>().unwrap())
    });
}

criterion_group!(benches, parse_size);
criterion_main!(benches);
