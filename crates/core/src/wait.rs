//! Estimated wait: how long a waiting customer will likely wait still.
//!
//! The method, stated so that a customer-facing figure can be explained:
//!
//! - Each queue keeps the times of its latest answers (accepted offers):
//!   at most [`SAMPLES`], none older than [`WINDOW_MS`].
//! - With `k >= 2` of them, the queue's recent *answer interval* is their
//!   mean spacing, `(t_k - t_1) / (k - 1)`. If the queue has gone longer
//!   than that without an answer, `now - t_k` is taken instead: answers
//!   have evidently slowed, and the gap since the last one is the best
//!   lower bound of the interval now.
//! - A customer at position `p` in the queue (1 = next) is estimated to
//!   wait `p` intervals: `estimate = p * interval`.
//! - With fewer than two recent answers there is no estimate (the queue
//!   has no recent rate to go by), and the API says so.
//!
//! What it assumes: agents keep answering this queue at the recent pace;
//! answers are memoryless (then the expected wait for the `p`-th place is
//! `p` mean intervals, however long the last one has lasted); nobody ahead
//! abandons (which would shorten the wait) and nobody of higher priority
//! arrives ahead (which would lengthen it: the position can move back).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::time::{DurationMs, TimeMs};

/// Most answer times a queue keeps.
pub const SAMPLES: usize = 20;
/// Answers older than this do not count as recent.
pub const WINDOW_MS: DurationMs = 15 * 60_000;

/// A queue's latest answer times, oldest first.
#[derive(Clone, Debug, Default)]
pub struct AnswerLog {
    times: VecDeque<TimeMs>,
}

/// An estimated wait and what it was computed from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WaitEstimate {
    /// 1-based place in the queue.
    pub position: u32,
    /// `position * interval_ms`.
    pub wait_ms: DurationMs,
    /// The answer interval used (see the module docs).
    pub interval_ms: DurationMs,
    /// How many recent answers it was computed from.
    pub answers: u32,
}

impl AnswerLog {
    /// An answer at `at` (times arrive in order).
    pub fn answered(&mut self, at: TimeMs) {
        if self.times.len() == SAMPLES {
            self.times.pop_front();
        }
        self.times.push_back(at);
    }

    /// The estimate for the customer at `position`, at `now`.
    pub fn estimate(&self, now: TimeMs, position: u32) -> Option<WaitEstimate> {
        let recent: Vec<TimeMs> = self
            .times
            .iter()
            .copied()
            .filter(|t| now.saturating_sub(*t) <= WINDOW_MS)
            .collect();
        let (&first, &last) = (recent.first()?, recent.last()?);
        let k = recent.len() as u64;
        if k < 2 {
            return None;
        }
        let mean = (last - first) / (k - 1);
        let interval_ms = mean.max(now.saturating_sub(last));
        Some(WaitEstimate {
            position,
            wait_ms: u64::from(position) * interval_ms,
            interval_ms,
            answers: k as u32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: TimeMs = 1_000;

    /// Worked by hand: answers at 0, 30, 60 and 90 s; mean spacing 30 s.
    #[test]
    fn position_times_the_recent_answer_interval() {
        let mut log = AnswerLog::default();
        let t0 = 1_000_000;
        for t in [0, 30, 60, 90] {
            log.answered(t0 + t * S);
        }
        // At 100 s, 10 s after the last answer: 3rd place waits 3 x 30 s.
        let e = log.estimate(t0 + 100 * S, 3).expect("four answers");
        assert_eq!(
            e,
            WaitEstimate {
                position: 3,
                wait_ms: 90 * S,
                interval_ms: 30 * S,
                answers: 4
            }
        );
        // At 200 s, nothing for 110 s: the interval is at least that.
        let e = log.estimate(t0 + 200 * S, 3).expect("four answers");
        assert_eq!((e.interval_ms, e.wait_ms), (110 * S, 330 * S));
        // 15 minutes after the third answer only the last two count,
        // spaced 30 s, but 870 s have passed since the last.
        let e = log
            .estimate(t0 + 60 * S + WINDOW_MS, 1)
            .expect("two answers");
        assert_eq!((e.answers, e.interval_ms), (2, WINDOW_MS - 30 * S));
    }

    #[test]
    fn no_estimate_without_two_recent_answers() {
        let mut log = AnswerLog::default();
        assert_eq!(log.estimate(10, 1), None);
        log.answered(10);
        assert_eq!(log.estimate(20, 1), None);
        log.answered(20);
        assert!(log.estimate(30, 1).is_some());
        assert_eq!(log.estimate(20 + WINDOW_MS + 1, 1), None, "both too old");
    }

    #[test]
    fn only_the_latest_answers_are_kept() {
        let mut log = AnswerLog::default();
        for t in 0..100 {
            log.answered(t * S);
        }
        let e = log.estimate(99 * S, 1).expect("answers");
        assert_eq!((e.answers, e.interval_ms), (SAMPLES as u32, S));
    }
}
