//! Routing rules: which queue a conversation goes to and how much earlier
//! it is served, decided by what is known of the customer and the contact.
//!
//! Operators write rules as data (the configuration file's `[[rules]]`, or
//! `Admin.SetRoutingRules` at run time), not code. Rules are tried in order;
//! the first whose every condition holds decides:
//!
//! - its `queue`, if it names one; otherwise the queue that lists the
//!   contact's topic (else the default queue), as without rules;
//! - its `priority_boost_ms`, which moves the conversation's virtual deadline
//!   earlier (see [`crate::priority`]); the decision's explanation names the
//!   rule and its boost.
//!
//! A condition is a list of accepted values (any one matches, compared
//! without regard to case); an empty list accepts anything, and a condition
//! on an attribute the customer does not have fails. No rule matching is
//! not an error: the topic decides.

use serde::{Deserialize, Serialize};

use crate::channel::Channel;
use crate::error::{CoreError, Result};
use crate::ids::QueueId;
use crate::time::DurationMs;

/// Most rules a router keeps; more is a configuration mistake.
pub const MAX_RULES: usize = 256;

/// One routing rule.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoutingRule {
    /// Names the rule in explanations; unique among the rules.
    pub name: String,
    #[serde(default)]
    pub when: Conditions,
    /// The queue it sends to; `None` leaves the choice to the topic.
    #[serde(default)]
    pub queue: Option<QueueId>,
    #[serde(default)]
    pub priority_boost_ms: DurationMs,
}

/// What a rule requires; every non-empty list must accept.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Conditions {
    #[serde(default)]
    pub topics: Vec<String>,
    #[serde(default)]
    pub channels: Vec<Channel>,
    #[serde(default)]
    pub tiers: Vec<String>,
    #[serde(default)]
    pub segments: Vec<String>,
    #[serde(default)]
    pub languages: Vec<String>,
    #[serde(default)]
    pub contracts: Vec<String>,
}

/// What a rule is matched against: the contact and its customer.
#[derive(Clone, Copy, Debug)]
pub struct Facts<'a> {
    pub topic: &'a str,
    pub channel: Channel,
    pub tier: Option<&'a str>,
    pub segment: Option<&'a str>,
    pub language: Option<&'a str>,
    pub contract: Option<&'a str>,
}

impl<'a> Facts<'a> {
    /// A contact on `channel` about `topic`, from a customer of whom
    /// nothing else is known.
    pub fn new(topic: &'a str, channel: Channel) -> Self {
        Facts {
            topic,
            channel,
            tier: None,
            segment: None,
            language: None,
            contract: None,
        }
    }
}

fn accepts(list: &[String], value: Option<&str>) -> bool {
    list.is_empty() || value.is_some_and(|v| list.iter().any(|l| l.eq_ignore_ascii_case(v)))
}

impl Conditions {
    pub fn holds(&self, f: &Facts<'_>) -> bool {
        accepts(&self.topics, Some(f.topic))
            && (self.channels.is_empty() || self.channels.contains(&f.channel))
            && accepts(&self.tiers, f.tier)
            && accepts(&self.segments, f.segment)
            && accepts(&self.languages, f.language)
            && accepts(&self.contracts, f.contract)
    }
}

impl RoutingRule {
    pub fn validate(&self, has_queue: impl Fn(&QueueId) -> bool) -> Result<()> {
        crate::ids::check_name("rules.name", &self.name)?;
        if let Some(q) = &self.queue
            && !has_queue(q)
        {
            return Err(CoreError::invalid(
                "rules.queue",
                format!(
                    "rule {:?} sends to queue {:?}, which is not defined; define the queue first or leave queue out to route by topic",
                    self.name,
                    q.as_str()
                ),
            ));
        }
        Ok(())
    }
}

/// Checks a whole rule list: each rule valid, names unique, not too many.
pub fn validate(rules: &[RoutingRule], has_queue: impl Fn(&QueueId) -> bool) -> Result<()> {
    if rules.len() > MAX_RULES {
        return Err(CoreError::invalid(
            "rules",
            format!("at most {MAX_RULES} rules, got {}", rules.len()),
        ));
    }
    for (i, r) in rules.iter().enumerate() {
        r.validate(&has_queue)?;
        if rules[..i].iter().any(|o| o.name == r.name) {
            return Err(CoreError::invalid(
                "rules.name",
                format!("rule name {:?} is used twice; names must be unique", r.name),
            ));
        }
    }
    Ok(())
}

/// The first rule whose conditions hold.
pub fn first_match<'r>(rules: &'r [RoutingRule], facts: &Facts<'_>) -> Option<&'r RoutingRule> {
    rules.iter().find(|r| r.when.holds(facts))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(name: &str, when: Conditions, queue: Option<&str>, boost: u64) -> RoutingRule {
        RoutingRule {
            name: name.into(),
            when,
            queue: queue.map(QueueId::new),
            priority_boost_ms: boost,
        }
    }

    #[test]
    fn the_first_rule_whose_conditions_all_hold_decides() {
        let rules = vec![
            rule(
                "business-italian",
                Conditions {
                    segments: vec!["business".into()],
                    languages: vec!["it".into()],
                    ..Default::default()
                },
                Some("business_it"),
                0,
            ),
            rule(
                "gold",
                Conditions {
                    tiers: vec!["Gold".into()],
                    ..Default::default()
                },
                None,
                20_000,
            ),
        ];
        let mut f = Facts {
            segment: Some("BUSINESS"),
            language: Some("it"),
            tier: Some("gold"),
            ..Facts::new("billing", Channel::Chat)
        };
        assert_eq!(
            first_match(&rules, &f).map(|r| r.name.as_str()),
            Some("business-italian")
        );
        f.language = Some("en");
        assert_eq!(
            first_match(&rules, &f).map(|r| r.name.as_str()),
            Some("gold")
        );
        f.tier = None;
        assert!(
            first_match(&rules, &f).is_none(),
            "an unknown attribute fails its condition"
        );
    }

    #[test]
    fn topics_and_channels_are_conditions_too() {
        let c = Conditions {
            topics: vec!["fraud".into()],
            channels: vec![Channel::Voice],
            ..Default::default()
        };
        let f = Facts::new("FRAUD", Channel::Voice);
        assert!(c.holds(&f));
        assert!(!c.holds(&Facts {
            channel: Channel::Email,
            ..f
        }));
        assert!(
            Conditions::default().holds(&f),
            "no condition accepts anything"
        );
    }

    #[test]
    fn a_rule_list_names_existing_queues_and_unique_names() {
        let has = |q: &QueueId| q.as_str() == "general";
        let ok = vec![rule("a", Conditions::default(), Some("general"), 0)];
        assert!(validate(&ok, has).is_ok());
        let unknown = vec![rule("a", Conditions::default(), Some("vip"), 0)];
        let err = validate(&unknown, has).unwrap_err().to_string();
        assert!(err.contains("rules.queue") && err.contains("vip"), "{err}");
        let twice = vec![
            rule("a", Conditions::default(), None, 0),
            rule("a", Conditions::default(), None, 0),
        ];
        assert!(
            validate(&twice, has)
                .unwrap_err()
                .to_string()
                .contains("twice")
        );
    }
}
