//! Placeholder library target: this package exists to hold the workspace integration tests in `tests/`.
