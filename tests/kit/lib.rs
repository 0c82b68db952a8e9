//! The test kit shared by every blkdrv test binary (the lib target of `blkdrv-tests`):
//!
//! - [`pool`]: library-level fixtures, a [`pool::TestPool`] on a loopback file or the VM's raw
//!   disks, destroyed on drop even when a case fails;
//! - [`cli`]: CLI-level fixtures, an [`cli::Env`] state root running the CLI in-process;
//! - [`child`]: the CLI in a child process (this test binary re-executed in child mode), for
//!   crashes, kills, signals and other mount namespaces;
//! - [`trial`]: the one wrapper that turns a case (panicking or `Result`) into a libtest-mimic
//!   trial, and the VM gate that reports cases this kernel cannot run as ignored;
//! - [`leaks`]: mounts and loop devices a test left behind;
//! - [`snapshotter`]: `blkdrv snapshotter serve` as a child, stopped on drop, and a gRPC
//!   client on its socket;
//! - [`rng`]: the one seeded PRNG (`BLKDRV_TEST_SEED` replays a run);
//! - [`config`]: the environment the suite reads, read once at start;
//! - [`ociimage`]: a test OCI image archive built locally (no registry), for containerd;
//! - [`containerd`]: a private containerd with proxy snapshotters, and `ctr` against it.
//!
//! A library rather than `#[path]`-included modules: every binary links the same code, and
//! nothing is dead code in one binary and used in another.

pub mod child;
pub mod cli;
pub mod config;
pub mod containerd;
pub mod ctrmount;
pub mod leaks;
pub mod ociimage;
pub mod pool;
pub mod rng;
pub mod snapshotter;
pub mod trial;

pub use libtest_mimic::Failed;

pub const MIB: u64 = 1 << 20;

/// What a `Result`-style case returns.
pub type TestResult = Result<(), Failed>;

/// Fails the case with a message and where (the kit's assert for `Result`-returning cases).
#[macro_export]
macro_rules! ensure {
    ($cond:expr, $($msg:tt)+) => {
        if !$cond {
            return Err(format!("{}:{}: {}", file!(), line!(), format!($($msg)+)).into());
        }
    };
}
