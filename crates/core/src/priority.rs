//! Priority: deadline-aware and re-scored continuously, yet with an order
//! that never needs re-sorting.
//!
//! Each waiting conversation gets a *virtual deadline*:
//!
//! ```text
//! virtual_deadline = enqueued_at + sla_target(channel) - tier_boost - topic_boost - rule_boost - sentiment_boost
//! ```
//!
//! Its priority score at time `now` is `now - virtual_deadline`: how far past
//! (positive) or before (negative) its deadline it is. The score grows by one
//! per millisecond waited, for every conversation alike, so the *order*
//! between two waiting conversations never changes while they wait: earliest
//! virtual deadline first, FIFO (enqueue sequence) between equal deadlines.
//! That is what lets queues keep conversations in a sorted set, and an agent
//! pick the best across its queues in logarithmic time, while the score the
//! explanation reports is the live, re-scored one.

use serde::{Deserialize, Serialize};

use crate::time::{DurationMs, TimeMs};

/// Boosts that operators configure. A boost is how many milliseconds earlier
/// a conversation's virtual deadline falls.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PriorityPolicy {
    /// Per customer tier (e.g. "gold" → 30 000).
    pub tier_boost_ms: Vec<(String, DurationMs)>,
    /// Boost per unit of negative sentiment: a score of -1.0 (angry) earns
    /// the whole amount, neutral or positive sentiment earns nothing.
    pub sentiment_boost_ms: DurationMs,
}

impl Default for PriorityPolicy {
    fn default() -> Self {
        PriorityPolicy {
            tier_boost_ms: vec![("gold".into(), 30_000), ("silver".into(), 10_000)],
            sentiment_boost_ms: 60_000,
        }
    }
}

/// What went into a conversation's priority, for the explanation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriorityBreakdown {
    pub sla_target_ms: DurationMs,
    pub tier_boost_ms: DurationMs,
    pub topic_boost_ms: DurationMs,
    pub sentiment_boost_ms: DurationMs,
    /// From the routing rule that matched (see [`crate::rules`]).
    #[serde(default)]
    pub rule_boost_ms: DurationMs,
    pub waited_ms: DurationMs,
}

/// A waiting conversation's place in priority order: smaller is served first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Rank {
    /// Virtual deadline in ms (may be before the epoch for large boosts).
    pub deadline: i64,
    /// Cluster-wide enqueue sequence: FIFO among equal deadlines.
    pub seq: u64,
}

impl Rank {
    /// The live score at `now`: milliseconds past the virtual deadline.
    pub fn score(&self, now: TimeMs) -> i64 {
        now as i64 - self.deadline
    }
}

/// What a conversation brings to its priority.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PriorityInputs {
    pub channel_sla_ms: DurationMs,
    pub tier: Option<String>,
    pub topic_boost_ms: DurationMs,
    /// -1.0 (angry) .. 1.0 (happy).
    pub sentiment: Option<f64>,
    /// The routing rule that matched, if any, and its boost.
    #[serde(default)]
    pub rule: Option<String>,
    #[serde(default)]
    pub rule_boost_ms: DurationMs,
}

impl PriorityPolicy {
    /// The virtual deadline and its breakdown (without `waited_ms`, which
    /// depends on when it is read).
    pub fn deadline(
        &self,
        enqueued_at: TimeMs,
        inputs: &PriorityInputs,
    ) -> (i64, PriorityBreakdown) {
        let tier_boost_ms = inputs
            .tier
            .as_deref()
            .and_then(|t| {
                self.tier_boost_ms
                    .iter()
                    .find(|(name, _)| name.eq_ignore_ascii_case(t))
            })
            .map_or(0, |(_, b)| *b);
        let sentiment_boost_ms = match inputs.sentiment {
            Some(s) if s < 0.0 => {
                (self.sentiment_boost_ms as f64 * (-s).min(1.0)).round() as DurationMs
            }
            _ => 0,
        };
        let breakdown = PriorityBreakdown {
            sla_target_ms: inputs.channel_sla_ms,
            tier_boost_ms,
            topic_boost_ms: inputs.topic_boost_ms,
            sentiment_boost_ms,
            rule_boost_ms: inputs.rule_boost_ms,
            waited_ms: 0,
        };
        let deadline = enqueued_at as i64 + inputs.channel_sla_ms as i64
            - tier_boost_ms as i64
            - inputs.topic_boost_ms as i64
            - inputs.rule_boost_ms as i64
            - sentiment_boost_ms as i64;
        (deadline, breakdown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs(sla: u64, tier: Option<&str>, sentiment: Option<f64>) -> PriorityInputs {
        PriorityInputs {
            channel_sla_ms: sla,
            tier: tier.map(Into::into),
            topic_boost_ms: 0,
            sentiment,
            ..Default::default()
        }
    }

    #[test]
    fn voice_outranks_email_that_arrived_at_the_same_time() {
        let p = PriorityPolicy::default();
        let (voice, _) = p.deadline(1_000, &inputs(20_000, None, None));
        let (email, _) = p.deadline(1_000, &inputs(4 * 3_600_000, Some("gold"), None));
        assert!(voice < email);
    }

    #[test]
    fn angry_and_gold_customers_rise() {
        let p = PriorityPolicy::default();
        let (plain, _) = p.deadline(0, &inputs(60_000, None, None));
        let (angry, b) = p.deadline(0, &inputs(60_000, None, Some(-0.5)));
        let (gold, g) = p.deadline(0, &inputs(60_000, Some("GOLD"), Some(0.9)));
        assert_eq!(b.sentiment_boost_ms, 30_000);
        assert_eq!(plain - angry, 30_000);
        assert_eq!(g.tier_boost_ms, 30_000);
        assert_eq!(g.sentiment_boost_ms, 0);
        assert!(gold < plain);
    }

    #[test]
    fn score_grows_with_time_but_order_does_not_change() {
        let a = Rank {
            deadline: 10,
            seq: 2,
        };
        let b = Rank {
            deadline: 20,
            seq: 1,
        };
        assert!(a < b);
        assert_eq!(a.score(100) - a.score(50), 50);
        assert!(a.score(100) > b.score(100));
    }
}
