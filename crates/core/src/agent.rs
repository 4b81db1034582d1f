//! Agents: who they are (profile) and how they appear to supervisors (state).
//!
//! Capacity is one weighted budget across channels: each conversation an
//! agent holds, is offered, or is wrapping up costs its channel's share
//! ([`Channel::cost`](crate::Channel::cost)), and the sum never exceeds the
//! agent's capacity (invariant 1, enforced by the router, which reserves
//! capacity when it makes an offer, not when the offer is accepted).

use serde::{Deserialize, Serialize};

use crate::channel::FULL_CAPACITY;
use crate::error::{CoreError, Result};
use crate::ids::AgentId;

/// Lowest and highest proficiency.
pub const PROFICIENCY: std::ops::RangeInclusive<u8> = 1..=5;

/// A skill and how well it is mastered (1..=5). In a queue's requirements
/// the proficiency is the minimum required.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Skill {
    pub name: String,
    pub proficiency: u8,
}

impl Skill {
    pub fn new(name: &str, proficiency: u8) -> Self {
        Skill {
            name: name.trim().to_lowercase(),
            proficiency,
        }
    }
}

/// What an agent brings when logging in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AgentProfile {
    pub id: AgentId,
    pub name: String,
    pub skills: Vec<Skill>,
    pub languages: Vec<String>,
    /// Weighted capacity, 1..=100.
    pub capacity: u16,
}

impl AgentProfile {
    /// Checks the profile's own consistency; `field` errors name the part.
    pub fn validate(&self) -> Result<()> {
        if self.capacity == 0 || self.capacity > FULL_CAPACITY {
            return Err(CoreError::invalid(
                "capacity",
                format!("must be 1..={FULL_CAPACITY}, got {}", self.capacity),
            ));
        }
        for s in &self.skills {
            if s.name.is_empty() {
                return Err(CoreError::invalid("skills.name", "must not be empty"));
            }
            if !PROFICIENCY.contains(&s.proficiency) {
                return Err(CoreError::invalid(
                    "skills.proficiency",
                    format!("skill {:?} must be 1..=5, got {}", s.name, s.proficiency),
                ));
            }
        }
        Ok(())
    }

    /// The agent's proficiency in a skill, 0 when it lacks the skill.
    pub fn proficiency(&self, skill: &str) -> u8 {
        self.skills
            .iter()
            .find(|s| s.name == skill)
            .map_or(0, |s| s.proficiency)
    }
}

/// How an agent appears to supervisors and to its own desktop.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AgentState {
    Offline,
    /// Logged in, ready, and with room for at least one more conversation.
    Available,
    /// Logged in and ready, but with no room for more work.
    Busy,
    /// Logged in, taking no new work (asked for, or after a missed offer).
    Away,
    /// Only after-contact work left.
    WrapUp,
    /// Over its occupancy cap: offered nothing new until it is under again
    /// (see [`crate::occupancy`]).
    Resting,
}
