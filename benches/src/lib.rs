//! Benchmark workloads shared by `blkdrv bench` and the criterion benches (filled in by the
//! benchmark issue).
