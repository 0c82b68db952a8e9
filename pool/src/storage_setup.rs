//! container-storage-setup compatibility: its sysconfig variables (STORAGE_DRIVER, DEVS, VG,
//! DATA_SIZE, CHUNK_SIZE, ...) parsed and turned into an LVM-backed pool init request.
// OWNER: storage-setup helper (issue 15). Stub of the interface commit.
