//! Queues: which conversations go where, who may serve them, how fast.
//!
//! A queue requires skills at a minimum proficiency. While a conversation
//! waits, bullseye steps widen the requirement (lower the proficiency, drop
//! skills): step `k` applies the relaxations of steps `1..=k`. An agent's
//! *level* in a queue is the first step at which it qualifies; a conversation
//! at step `s` may go to agents whose level is at most `s`.

use serde::{Deserialize, Serialize};

use crate::agent::{AgentProfile, PROFICIENCY, Skill};
use crate::channel::Channel;
use crate::error::{CoreError, Result};
use crate::ids::QueueId;
use crate::time::DurationMs;

/// How a queue picks among several available agents.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Strategy {
    /// The agent idle for longest (since its load last dropped to zero).
    #[default]
    LongestIdle,
    /// The highest total proficiency in the queue's skills.
    MostProficient,
    /// The agent with the least capacity in use.
    LeastOccupied,
    /// The agent offered work least recently.
    RoundRobin,
}

/// One bullseye widening step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BullseyeStep {
    /// Waiting time (since the conversation was queued) at which it applies.
    pub after_ms: DurationMs,
    pub relax_proficiency: u8,
    pub drop_skills: Vec<String>,
}

/// A queue as the operator defines it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct QueueConfig {
    pub id: QueueId,
    pub name: String,
    /// Topics routed to this queue (lower-case).
    pub topics: Vec<String>,
    pub required: Vec<Skill>,
    /// SLA targets that differ from the channel defaults.
    pub sla_ms: Vec<(Channel, DurationMs)>,
    pub strategy: Strategy,
    pub bullseye: Vec<BullseyeStep>,
    pub priority_boost_ms: DurationMs,
}

/// Steps are indexed by a `u8`; more than this is never useful.
pub const MAX_BULLSEYE_STEPS: usize = 8;

impl QueueConfig {
    /// A queue with no skill requirements, default SLAs and longest idle.
    pub fn open(id: &str) -> Self {
        QueueConfig {
            id: QueueId::new(id),
            name: id.to_owned(),
            topics: Vec::new(),
            required: Vec::new(),
            sla_ms: Vec::new(),
            strategy: Strategy::LongestIdle,
            bullseye: Vec::new(),
            priority_boost_ms: 0,
        }
    }

    pub fn validate(&self) -> Result<()> {
        crate::ids::check_name("queue_id", self.id.as_str())?;
        for s in &self.required {
            if s.name.is_empty() {
                return Err(CoreError::invalid(
                    "required_skills.name",
                    "must not be empty",
                ));
            }
            if !PROFICIENCY.contains(&s.proficiency) {
                return Err(CoreError::invalid(
                    "required_skills.proficiency",
                    format!(
                        "minimum proficiency of {:?} must be 1..=5, got {}",
                        s.name, s.proficiency
                    ),
                ));
            }
        }
        if self.bullseye.len() > MAX_BULLSEYE_STEPS {
            return Err(CoreError::invalid(
                "bullseye",
                format!("at most {MAX_BULLSEYE_STEPS} steps"),
            ));
        }
        if self
            .bullseye
            .windows(2)
            .any(|w| w[1].after_ms <= w[0].after_ms)
        {
            return Err(CoreError::invalid(
                "bullseye.after_ms",
                "steps must come in strictly increasing after_ms order",
            ));
        }
        if let Some((ch, _)) = self.sla_ms.iter().find(|(_, ms)| *ms == 0) {
            return Err(CoreError::invalid(
                "sla_targets.answer_within_ms",
                format!("target for {ch} must be positive"),
            ));
        }
        Ok(())
    }

    /// The SLA target for a channel in this queue.
    pub fn sla_ms(&self, channel: Channel) -> DurationMs {
        self.sla_ms
            .iter()
            .find(|(c, _)| *c == channel)
            .map_or(channel.default_sla_ms(), |(_, ms)| *ms)
    }

    /// The highest bullseye step.
    pub fn max_step(&self) -> u8 {
        self.bullseye.len() as u8
    }

    /// Whether the profile meets the requirements as widened by `step`.
    pub fn qualifies_at(&self, profile: &AgentProfile, step: u8) -> bool {
        let steps = &self.bullseye[..(step as usize).min(self.bullseye.len())];
        let relax: u8 = steps
            .iter()
            .map(|s| s.relax_proficiency)
            .fold(0u8, u8::saturating_add);
        self.required.iter().all(|req| {
            if steps.iter().any(|s| {
                s.drop_skills
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(&req.name))
            }) {
                return true;
            }
            let min = req.proficiency.saturating_sub(relax).max(1);
            profile.proficiency(&req.name) >= min
        })
    }

    /// The first step at which the agent qualifies, or `None` if never.
    pub fn level_of(&self, profile: &AgentProfile) -> Option<u8> {
        (0..=self.max_step()).find(|&s| self.qualifies_at(profile, s))
    }

    /// Total proficiency over the queue's skills (the "most proficient" key).
    pub fn proficiency_of(&self, profile: &AgentProfile) -> u32 {
        if self.required.is_empty() {
            return profile
                .skills
                .iter()
                .map(|s| s.proficiency as u32)
                .max()
                .unwrap_or(0);
        }
        self.required
            .iter()
            .map(|r| profile.proficiency(&r.name) as u32)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::AgentId;

    fn agent(skills: &[(&str, u8)]) -> AgentProfile {
        AgentProfile {
            id: AgentId::new("a"),
            name: "a".into(),
            skills: skills.iter().map(|(n, p)| Skill::new(n, *p)).collect(),
            languages: vec![],
            capacity: 100,
        }
    }

    #[test]
    fn bullseye_widens_step_by_step() {
        let mut q = QueueConfig::open("tech");
        q.required = vec![Skill::new("fiber", 4), Skill::new("billing", 2)];
        q.bullseye = vec![
            BullseyeStep {
                after_ms: 30_000,
                relax_proficiency: 1,
                drop_skills: vec![],
            },
            BullseyeStep {
                after_ms: 60_000,
                relax_proficiency: 1,
                drop_skills: vec!["billing".into()],
            },
        ];
        assert_eq!(q.level_of(&agent(&[("fiber", 5), ("billing", 2)])), Some(0));
        assert_eq!(q.level_of(&agent(&[("fiber", 3), ("billing", 2)])), Some(1));
        assert_eq!(q.level_of(&agent(&[("fiber", 2)])), Some(2));
        assert_eq!(q.level_of(&agent(&[("fiber", 1)])), None);
        assert_eq!(q.proficiency_of(&agent(&[("fiber", 5), ("billing", 2)])), 7);
    }

    #[test]
    fn validation_names_the_field() {
        let mut q = QueueConfig::open("Bad Id");
        assert_eq!(q.validate().unwrap_err().field(), Some("queue_id"));
        q.id = QueueId::new("ok");
        q.required = vec![Skill::new("x", 9)];
        assert_eq!(
            q.validate().unwrap_err().field(),
            Some("required_skills.proficiency")
        );
    }
}
