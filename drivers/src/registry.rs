//! The list of drivers. Adding a driver is one module and one line here.

use crate::DriverFactory;

static ALL: &[&dyn DriverFactory] = &[
    &crate::overlay::Factory,
    &crate::vfs::Factory,
    &crate::btrfs::Factory,
    &crate::devicemapper::Factory,
    &crate::zfs::Factory,
];

/// Every driver compiled in, in display order.
pub fn all() -> &'static [&'static dyn DriverFactory] {
    ALL
}

/// The driver called `name`, if compiled in.
pub fn get(name: &str) -> Option<&'static dyn DriverFactory> {
    ALL.iter().copied().find(|f| f.name() == name)
}

/// Names of all drivers, for help texts and errors.
pub fn names() -> Vec<&'static str> {
    ALL.iter().map(|f| f.name()).collect()
}
