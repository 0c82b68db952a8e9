//! `pool activate --all`: every pool of a state dir brought up after a reboot, each one's
//! outcome reported, one failure never stopping the others.
// OWNER: systemd helper (issue 15). Stub of the interface commit.
