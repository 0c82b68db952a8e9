//! What `blkdrv bench` needs from the drivers, answered by the pool so that the bench names no
//! driver and does not depend on the drivers crate: the configurations to compare (each
//! driver's optional [`BenchSetup`](blkdrv_drivers::BenchSetup)), whether this host runs them,
//! and whether a scratch directory is free of mounts. The raw kernel operation of a layer
//! create is [`crate::Pool::raw_snapshot`].

use blkdrv_drivers::sys::mount;
use blkdrv_drivers::{registry, DriverError, DriverFactory, DriverOptions};
use std::path::Path;

/// One driver configuration `blkdrv bench` runs: a driver with options, under a label
/// ("overlay-xfs"; the driver's name when it has one configuration).
#[derive(Clone)]
pub struct BenchVariant {
    pub label: String,
    pub options: DriverOptions,
    factory: &'static dyn DriverFactory,
}

impl BenchVariant {
    /// The driver's name, as `pool init` takes it.
    pub fn driver(&self) -> &'static str {
        self.factory.name()
    }

    /// Whether this host can run the driver; `Err` says what is missing.
    pub fn check_host(&self) -> Result<(), DriverError> {
        self.factory.check_host()
    }
}

impl std::fmt::Debug for BenchVariant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BenchVariant")
            .field("label", &self.label)
            .field("driver", &self.driver())
            .field("options", &self.options)
            .finish()
    }
}

/// Every driver's bench configurations, in registry order: what its [`BenchSetup`] lists, or
/// one run with default options.
///
/// [`BenchSetup`]: blkdrv_drivers::BenchSetup
pub fn variants() -> Vec<BenchVariant> {
    let mut out = Vec::new();
    for &factory in registry::all() {
        let listed = match factory.bench() {
            Some(setup) => setup.variants(),
            None => vec![(factory.name().to_string(), DriverOptions::new())],
        };
        out.extend(listed.into_iter().map(|(label, options)| BenchVariant {
            label,
            options,
            factory,
        }));
    }
    out
}

/// Whether anything is mounted at or below `dir` (a bench never deletes a directory that
/// still has mounts below it).
pub fn mounted_below(dir: &Path) -> Result<bool, DriverError> {
    Ok(mount::mountinfo()?
        .iter()
        .any(|m| m.target.starts_with(dir)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_driver_has_a_variant_and_overlay_two() {
        let v = variants();
        for f in registry::all() {
            assert!(v.iter().any(|v| v.driver() == f.name()), "{}", f.name());
        }
        let overlay: Vec<&str> = v
            .iter()
            .filter(|v| v.driver() == "overlay")
            .map(|v| v.label.as_str())
            .collect();
        assert_eq!(overlay, ["overlay-ext4", "overlay-xfs"]);
        assert!(v.iter().any(|v| v.label == "vfs" && v.options.is_empty()));
    }

    #[test]
    fn a_fresh_directory_has_no_mounts() {
        let d = tempfile::tempdir().unwrap();
        assert!(!mounted_below(d.path()).unwrap());
    }
}
