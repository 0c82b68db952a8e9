//! Placeholder: filled in by the containerd snapshotter work (issue 13).
fn main() {}
