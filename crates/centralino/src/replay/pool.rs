//! The agents a replay staffs, the same for both configurations.
//!
//! A history says who served, not what they could do: skills and capacity
//! come with an agent's login, not with a conversation. So the pool comes
//! from one of three places, in order of fidelity:
//!
//! - a file (`--agents FILE`, TOML): every agent with its skills and
//!   capacity, as the contact center staffs it:
//!
//!   ```toml
//!   [[agents]]
//!   id = "agent-00"
//!   skills = { billing = 4, tech = 2 }   # skill = proficiency 1..5
//!   capacity = 100                       # optional, 100 by default
//!   languages = ["it"]                   # optional
//!   ```
//!
//! - `centralino dev`'s own agents (`--dev-agents N --seed S`): the pool
//!   that `centralino dev --agents N --seed S` logged in, rebuilt by the
//!   same function (`sim::dev_agents`);
//! - otherwise, the agents the recording names, each with capacity 100 and
//!   the skills its routing decisions prove (lower bounds, see
//!   `Recording::note_qualified`): agents who were never offered anything
//!   are missing, and proficiencies above a queue's minimum are unknown,
//!   which blunts strategies such as most proficient.
//!
//! Every agent logs in when the first contact arrives and stays available
//! to the end: a recording holds no shifts or breaks.

use std::collections::BTreeMap;

use anyhow::{Context, bail};
use centralino_core::channel::FULL_CAPACITY;
use centralino_core::{AgentId, AgentProfile, Skill};
use serde::Deserialize;

use super::recording::Recording;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PoolFile {
    agents: Vec<AgentEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AgentEntry {
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    skills: BTreeMap<String, u8>,
    #[serde(default = "full_capacity")]
    capacity: u16,
    #[serde(default)]
    languages: Vec<String>,
}

fn full_capacity() -> u16 {
    FULL_CAPACITY
}

/// The pool in a file's text; errors name the file (`name`) and the agent
/// at fault.
pub fn from_toml(name: &str, text: &str) -> anyhow::Result<Vec<AgentProfile>> {
    let file: PoolFile = toml::from_str(text).with_context(|| format!("agent pool {name}"))?;
    if file.agents.is_empty() {
        bail!("agent pool {name}: agents: list at least one agent");
    }
    let mut seen = std::collections::BTreeSet::new();
    file.agents
        .into_iter()
        .enumerate()
        .map(|(i, a)| {
            if a.id.is_empty() {
                bail!("agent pool {name}: agents[{i}].id: must not be empty");
            }
            if !seen.insert(a.id.clone()) {
                bail!(
                    "agent pool {name}: agents[{i}].id: {:?} is listed twice",
                    a.id
                );
            }
            let profile = AgentProfile {
                id: AgentId::new(&a.id),
                name: if a.name.is_empty() {
                    a.id.clone()
                } else {
                    a.name
                },
                skills: a.skills.iter().map(|(s, p)| Skill::new(s, *p)).collect(),
                languages: a.languages,
                capacity: a.capacity,
            };
            profile
                .validate()
                .with_context(|| format!("agent pool {name}: agents[{i}] ({})", a.id))?;
            Ok(profile)
        })
        .collect()
}

/// The agents `centralino dev --agents n --seed seed` logs in.
pub fn dev(n: usize, seed: u64) -> Vec<AgentProfile> {
    let (agents, _) = crate::sim::dev_agents(n, seed);
    agents
        .into_iter()
        .enumerate()
        .map(|(i, a)| AgentProfile {
            id: AgentId::new(&a.id),
            name: format!("Agent {i}"),
            skills: a.skills,
            languages: vec!["it".into()],
            capacity: FULL_CAPACITY,
        })
        .collect()
}

/// The agents the recording names, with the skills it proves.
pub fn recovered(rec: &Recording) -> Vec<AgentProfile> {
    rec.agents
        .iter()
        .map(|(id, skills)| AgentProfile {
            id: id.clone(),
            name: id.to_string(),
            skills: skills.iter().map(|(s, p)| Skill::new(s, *p)).collect(),
            languages: Vec::new(),
            capacity: FULL_CAPACITY,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pool_file_reads_and_bad_agents_are_named() {
        let pool = from_toml(
            "pool.toml",
            "[[agents]]\nid = \"ann\"\nskills = { Billing = 4 }\n\n\
             [[agents]]\nid = \"bob\"\ncapacity = 60\n",
        )
        .expect("valid");
        assert_eq!(pool.len(), 2);
        assert_eq!(pool[0].proficiency("billing"), 4, "skill names normalised");
        assert_eq!((pool[0].capacity, pool[1].capacity), (100, 60));

        let err = from_toml(
            "pool.toml",
            "[[agents]]\nid = \"ann\"\nskills = { billing = 9 }\n",
        )
        .unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains("agents[0] (ann)") && msg.contains("skills.proficiency"),
            "{msg}"
        );
        let err = from_toml(
            "pool.toml",
            "[[agents]]\nid = \"a\"\n[[agents]]\nid = \"a\"\n",
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("agents[1].id"), "{err:#}");
        let err = from_toml("pool.toml", "[[agents]]\nid = \"a\"\nskils = {}\n").unwrap_err();
        assert!(format!("{err:#}").contains("skils"), "{err:#}");
    }

    #[test]
    fn the_dev_pool_is_a_function_of_its_seed() {
        let (a, b) = (dev(14, 7), dev(14, 7));
        assert_eq!(a, b);
        assert_eq!(a.len(), 14);
        assert_eq!(a[3].id.as_str(), "agent-03");
        assert_ne!(a, dev(14, 8), "another seed, other skills");
    }
}
