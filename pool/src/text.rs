//! Text that came from outside (tar headers, paths, tool output) on its way to a terminal or a
//! log line: one line, control characters escaped. The one escaper lives in `layertar`, whose
//! errors need it first; this is where the pool's callers find it.

pub use layertar::escape_controls;
