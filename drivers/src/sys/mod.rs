//! Kernel-facing helpers. Everything in blkdrv that talks to the kernel or runs a system tool goes
//! through here or through a driver module; the pool and CLI crates never do it directly.

pub mod blockdev;
pub mod exec;
pub mod host;
pub mod loopdev;
pub mod lvm;
pub mod mount;
pub mod rootpath;
pub mod signature;
pub mod tree;
pub mod zfs;
