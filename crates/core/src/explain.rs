//! "Why this agent": the explanation every routing decision records.

use serde::{Deserialize, Serialize};

use crate::ids::{AgentId, QueueId};
use crate::priority::PriorityBreakdown;

/// Which rule made a decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rule {
    /// The customer's last agent, present and with capacity, within the
    /// continuity window.
    Continuity,
    /// A conversation transferred to a named agent.
    DirectTransfer,
    LongestIdle,
    MostProficient,
    LeastOccupied,
    RoundRobin,
    /// An agent freed up and took the highest-priority eligible
    /// conversation across all of its queues.
    AgentFreed,
}

impl Rule {
    pub const fn name(self) -> &'static str {
        match self {
            Rule::Continuity => "continuity",
            Rule::DirectTransfer => "direct_transfer",
            Rule::LongestIdle => "longest_idle",
            Rule::MostProficient => "most_proficient",
            Rule::LeastOccupied => "least_occupied",
            Rule::RoundRobin => "round_robin",
            Rule::AgentFreed => "agent_freed",
        }
    }
}

/// Why a candidate was passed over.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum PassedOver {
    /// Ranked after the chosen agent by the strategy.
    RankedLower,
    /// Declined this conversation earlier; only taken when nobody else can.
    DeclinedEarlier,
    /// Not enough free capacity for the conversation's channel.
    NoCapacity,
    /// Does not meet the queue's skills at the conversation's bullseye step.
    SkillsNotMet,
}

/// One agent considered for a decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub agent: AgentId,
    /// The strategy's sort key for this agent, smaller ranks first.
    pub key: u64,
    /// `None` for the chosen agent.
    pub passed_over: Option<PassedOver>,
}

/// At most this many candidates are recorded per decision.
pub const MAX_CANDIDATES: usize = 5;

/// The full explanation of one routing decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Explanation {
    pub queue: QueueId,
    pub rule: Rule,
    /// Milliseconds past the conversation's virtual deadline when decided
    /// (higher is more urgent).
    pub score_ms: i64,
    pub priority: PriorityBreakdown,
    pub bullseye_step: u8,
    /// The routing rule that chose the queue or raised the priority.
    #[serde(default)]
    pub routing_rule: Option<String>,
    /// The chosen agent first, then those passed over, in the order considered.
    pub candidates: Vec<Candidate>,
}

impl Explanation {
    /// One line for people: what decided and on what numbers.
    pub fn summary(&self) -> String {
        let chosen = self
            .candidates
            .iter()
            .find(|c| c.passed_over.is_none())
            .map(|c| c.agent.as_str())
            .unwrap_or("-");
        let mut s = format!(
            "queue {}: {} chose {} (waited {} ms, sla {} ms, score {} ms",
            self.queue,
            self.rule.name(),
            chosen,
            self.priority.waited_ms,
            self.priority.sla_target_ms,
            self.score_ms
        );
        if self.priority.tier_boost_ms != 0 {
            s.push_str(&format!(", tier +{} ms", self.priority.tier_boost_ms));
        }
        if self.priority.topic_boost_ms != 0 {
            s.push_str(&format!(", topic +{} ms", self.priority.topic_boost_ms));
        }
        if let Some(rule) = &self.routing_rule {
            s.push_str(&format!(", rule {rule}"));
            if self.priority.rule_boost_ms != 0 {
                s.push_str(&format!(" +{} ms", self.priority.rule_boost_ms));
            }
        }
        if self.priority.sentiment_boost_ms != 0 {
            s.push_str(&format!(
                ", upset customer +{} ms",
                self.priority.sentiment_boost_ms
            ));
        }
        if self.bullseye_step > 0 {
            s.push_str(&format!(", bullseye step {}", self.bullseye_step));
        }
        let passed = self
            .candidates
            .iter()
            .filter(|c| c.passed_over.is_some())
            .count();
        if passed > 0 {
            s.push_str(&format!(", {passed} other candidates passed over"));
        }
        s.push(')');
        s
    }
}
