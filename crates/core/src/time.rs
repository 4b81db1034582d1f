//! Time in the core is a number handed in by the caller: milliseconds since
//! the Unix epoch. The core never reads a clock, so every decision can be
//! replayed exactly.

/// A point in time, in milliseconds since the Unix epoch.
pub type TimeMs = u64;

/// A span of time in milliseconds.
pub type DurationMs = u64;
