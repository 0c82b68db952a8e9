//! blkdrv storage drivers.
//!
//! A driver turns a pool's block devices into copy-on-write layers. The vocabulary follows
//! containerd's snapshotters: a *committed* layer is read-only and shareable, an *active* layer is
//! writable and built on a committed parent (or empty), and a *view* is a read-only mount of a
//! committed layer.
//!
//! Drivers keep no metadata of their own: the pool owns ids, parents and state, and passes every
//! driver call the facts it needs (the object id, the parent chain). A driver names its on-disk
//! objects after the [`ObjectId`] so the pool can always find an object it recorded an intent for.
//!
//! Adding a driver means one new module and one line in [`registry`].

mod btrfs;
mod devicemapper;
mod driver;
pub mod error;
mod fsbacked;
pub mod id;
mod identity;
pub mod options;
mod overlay;
pub mod plan;
pub mod registry;
pub mod sys;
mod types;
pub mod units;
mod vfs;
mod zfs;

pub use driver::{Backing, BenchHooks, BenchSetup, Driver, DriverFactory, Layers};
pub use error::{DriverError, Result};
pub use id::{InvalidObjectId, ObjectId};
pub use identity::Identity;
pub use plan::{BackingPlan, BackingRequest, LoopbackFile, OptionKind, OptionRole, OptionSpec};
pub use types::*;
pub use units::{Bytes, ParseSizeError, Sectors};
