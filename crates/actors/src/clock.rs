//! The one place the actors read the wall clock; the core never does.

use std::time::{SystemTime, UNIX_EPOCH};

use centralino_core::TimeMs;

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> TimeMs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as TimeMs)
}
