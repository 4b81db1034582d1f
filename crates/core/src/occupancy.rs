//! Occupancy: the share of a rolling window an agent spent busy, and the
//! cap that stops new offers to an agent above it (agent wellbeing).
//!
//! An agent is *busy* while its load is above zero: an offer reserved, a
//! conversation assigned or in after-contact work. Occupancy over the window
//! `[now - window, now]` is the busy time inside it over the window's length
//! (time before the agent logged in counts as not busy: a fresh agent may
//! work `cap × window` straight before the cap stops it).
//!
//! The cap is checked whenever an agent's load changes, and again at the
//! earliest moment it could cross: while busy, occupancy can only grow (the
//! present adds busy time at least as fast as the past slides out), so a
//! check is due `cap × window − busy` later; while idle it can only fall, at
//! most one millisecond per millisecond, so a capped agent is checked again
//! `busy − cap × window` later. No check is wasted on an agent that cannot
//! have crossed.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::time::{DurationMs, TimeMs};

/// The cap operators configure.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct OccupancyCap {
    /// Highest occupancy (0 < max ≤ 1) at which an agent still gets offers.
    pub max: f64,
    pub window_ms: DurationMs,
}

impl OccupancyCap {
    /// Busy milliseconds in a window at which the cap is reached.
    pub fn limit_ms(&self) -> DurationMs {
        (self.max * self.window_ms as f64).round() as DurationMs
    }

    pub fn validate(&self) -> crate::Result<()> {
        if !(self.max > 0.0 && self.max <= 1.0) {
            return Err(crate::CoreError::invalid(
                "routing.occupancy_cap",
                format!(
                    "must be above 0 and at most 1 (a share of the window), got {}",
                    self.max
                ),
            ));
        }
        if self.window_ms < 1_000 {
            return Err(crate::CoreError::invalid(
                "routing.occupancy_window_ms",
                format!("must be at least 1000, got {}", self.window_ms),
            ));
        }
        Ok(())
    }
}

/// One agent's busy time: the spans it was busy in within the last
/// `keep_ms` (none when no cap is configured), oldest first, and the total.
#[derive(Clone, Debug, Default)]
pub struct Busy {
    keep_ms: DurationMs,
    spans: VecDeque<(TimeMs, TimeMs)>,
    since: Option<TimeMs>,
    /// Busy time of spans already ended and pruned, for the KPIs.
    total_ms: u64,
}

impl Busy {
    /// Keeps the spans of the last `keep_ms` (the cap's window; 0 keeps
    /// only the total).
    pub fn new(keep_ms: DurationMs) -> Self {
        Busy {
            keep_ms,
            ..Busy::default()
        }
    }

    /// Records that the agent is busy (`true`) or not from `now` on.
    pub fn set(&mut self, now: TimeMs, busy: bool) {
        match (self.since, busy) {
            (None, true) => self.since = Some(now),
            (Some(from), false) => {
                self.since = None;
                if now > from {
                    self.total_ms += now - from;
                    if self.keep_ms > 0 {
                        self.spans.push_back((from, now));
                        let start = now.saturating_sub(self.keep_ms);
                        while self.spans.front().is_some_and(|&(_, end)| end <= start) {
                            self.spans.pop_front();
                        }
                    }
                }
            }
            _ => {}
        }
    }

    pub fn is_busy(&self) -> bool {
        self.since.is_some()
    }

    /// Busy milliseconds within `[now - window, now]` (`window` at most
    /// `keep_ms`).
    pub fn busy_ms(&self, now: TimeMs, window: DurationMs) -> DurationMs {
        let start = now.saturating_sub(window);
        let past: u64 = self
            .spans
            .iter()
            .map(|&(from, end)| end.min(now).saturating_sub(from.max(start)))
            .sum();
        let current = self
            .since
            .map_or(0, |from| now.saturating_sub(from.max(start)));
        past + current
    }

    /// Busy time ever, up to `now`, for the KPIs.
    pub fn total_ms(&self, now: TimeMs) -> u64 {
        self.total_ms + self.since.map_or(0, |from| now.saturating_sub(from))
    }

    /// Occupancy over the window (0.0 for an empty window).
    pub fn occupancy(&self, now: TimeMs, window: DurationMs) -> f64 {
        if window == 0 {
            return 0.0;
        }
        self.busy_ms(now, window) as f64 / window as f64
    }

    /// Whether the agent is above the cap at `now`, and when to look again
    /// (`None`: nothing can change until its load does).
    pub fn check(&self, now: TimeMs, cap: &OccupancyCap) -> (bool, Option<TimeMs>) {
        let busy = self.busy_ms(now, cap.window_ms);
        let limit = cap.limit_ms();
        if limit >= cap.window_ms {
            // A cap of 1: nobody is ever over it.
            return (false, None);
        }
        let over = busy > limit;
        let next = match (over, self.is_busy()) {
            // Idle and over: falls at most 1 ms per ms.
            (true, false) => Some(now + (busy - limit)),
            // Busy and under: grows at most 1 ms per ms.
            (false, true) => Some(now + (limit - busy).max(1)),
            // Busy and over stays over until the load drops; idle and under
            // stays under.
            _ => None,
        };
        (over, next)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: OccupancyCap = OccupancyCap {
        max: 0.5,
        window_ms: 10_000,
    };

    #[test]
    fn busy_time_is_counted_inside_the_window_only() {
        let mut b = Busy::new(10_000);
        b.set(0, true);
        b.set(4_000, false);
        b.set(6_000, true);
        assert_eq!(b.busy_ms(8_000, 10_000), 6_000);
        assert_eq!(b.busy_ms(12_000, 10_000), 2_000 + 6_000);
        b.set(13_000, false);
        assert_eq!(b.busy_ms(20_000, 10_000), 3_000);
        assert_eq!(b.total_ms(20_000), 11_000);
        assert_eq!(b.busy_ms(40_000, 10_000), 0);
        assert_eq!(b.total_ms(40_000), 11_000, "pruning keeps the total");
    }

    #[test]
    fn an_agent_over_the_cap_is_looked_at_again_when_it_could_be_under() {
        let mut b = Busy::new(10_000);
        b.set(0, true);
        // Busy and under: the earliest crossing is at 5 s.
        assert_eq!(b.check(2_000, &CAP), (false, Some(5_000)));
        assert_eq!(b.check(5_000, &CAP), (false, Some(5_001)));
        let (over, next) = b.check(6_000, &CAP);
        assert!(over);
        assert_eq!(next, None, "busy and over: only a load change can help");
        b.set(8_000, false);
        // 8 s busy of a 10 s window: under once 3 s more slid out.
        assert_eq!(b.check(10_000, &CAP), (true, Some(13_000)));
        assert!(!b.check(13_000, &CAP).0);
    }

    #[test]
    fn a_fresh_agent_counts_the_time_before_its_login_as_not_busy() {
        let mut b = Busy::new(10_000);
        b.set(100_000, true);
        b.set(104_000, false);
        assert!((b.occupancy(104_000, 10_000) - 0.4).abs() < 1e-9);
        assert!(!b.check(104_000, &CAP).0);
        let full = OccupancyCap {
            max: 1.0,
            window_ms: 10_000,
        };
        b.set(104_000, true);
        assert_eq!(
            b.check(200_000, &full),
            (false, None),
            "a cap of 1 never stops anyone"
        );
    }
}
