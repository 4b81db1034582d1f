//! Routing rules between proto and the core (see `centralino_core::rules`).

use centralino_core::QueueId;
use centralino_core::rules::{Conditions, MAX_RULES, RoutingRule};
use centralino_proto::v1 as pb;
use tonic::Status;

use super::{channel, channel_to_pb, invalid, short};

/// Most values one condition may list.
pub const MAX_RULE_VALUES: usize = 64;
/// Largest boost a rule may give: a day.
pub const MAX_RULE_BOOST_MS: i64 = 86_400_000;

fn values(field: &str, v: &[String]) -> Result<Vec<String>, Status> {
    if v.len() > MAX_RULE_VALUES {
        return Err(invalid(
            field,
            format!("at most {MAX_RULE_VALUES} values, got {}", v.len()),
        ));
    }
    let mut out = Vec::with_capacity(v.len());
    for x in v {
        short(field, x)?;
        let x = x.trim().to_lowercase();
        if x.is_empty() {
            return Err(invalid(
                field,
                "values must not be empty; leave the list empty to accept anything",
            ));
        }
        out.push(x);
    }
    Ok(out)
}

pub fn routing_rules(r: &pb::RoutingRules) -> Result<Vec<RoutingRule>, Status> {
    if r.rules.len() > MAX_RULES {
        return Err(invalid(
            "rules",
            format!("at most {MAX_RULES} rules, got {}", r.rules.len()),
        ));
    }
    r.rules.iter().map(routing_rule).collect()
}

fn routing_rule(r: &pb::RoutingRule) -> Result<RoutingRule, Status> {
    let boost = r.priority_boost_ms;
    if !(0..=MAX_RULE_BOOST_MS).contains(&boost) {
        return Err(invalid(
            "rules.priority_boost_ms",
            format!("must be 0..{MAX_RULE_BOOST_MS} (a day), got {boost}"),
        ));
    }
    let channels = r
        .channels
        .iter()
        .map(|&c| channel("rules.channels", c))
        .collect::<Result<Vec<_>, _>>()?;
    let queue = r.queue_id.trim();
    Ok(RoutingRule {
        name: r.name.trim().to_owned(),
        when: Conditions {
            topics: values("rules.topics", &r.topics)?,
            channels,
            tiers: values("rules.tiers", &r.tiers)?,
            segments: values("rules.segments", &r.segments)?,
            languages: values("rules.languages", &r.languages)?,
            contracts: values("rules.contracts", &r.contracts)?,
        },
        queue: (!queue.is_empty()).then(|| QueueId::new(queue)),
        priority_boost_ms: boost as u64,
    })
}

pub fn routing_rules_to_pb(rules: &[RoutingRule]) -> pb::RoutingRules {
    pb::RoutingRules {
        rules: rules
            .iter()
            .map(|r| pb::RoutingRule {
                name: r.name.clone(),
                topics: r.when.topics.clone(),
                channels: r.when.channels.iter().map(|&c| channel_to_pb(c)).collect(),
                tiers: r.when.tiers.clone(),
                segments: r.when.segments.clone(),
                languages: r.when.languages.clone(),
                contracts: r.when.contracts.clone(),
                queue_id: r
                    .queue
                    .as_ref()
                    .map(ToString::to_string)
                    .unwrap_or_default(),
                priority_boost_ms: r.priority_boost_ms as i64,
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rule_round_trips_and_bad_input_names_its_field() {
        let pb_rule = pb::RoutingRule {
            name: "vip".into(),
            segments: vec!["Business".into()],
            channels: vec![pb::Channel::Voice as i32],
            queue_id: "vip".into(),
            priority_boost_ms: 30_000,
            ..Default::default()
        };
        let rules = routing_rules(&pb::RoutingRules {
            rules: vec![pb_rule.clone()],
        })
        .unwrap();
        assert_eq!(rules[0].when.segments, vec!["business".to_owned()]);
        let back = routing_rules_to_pb(&rules);
        assert_eq!(back.rules[0].queue_id, "vip");
        assert_eq!(back.rules[0].priority_boost_ms, 30_000);

        let negative = pb::RoutingRule {
            priority_boost_ms: -1,
            ..pb_rule.clone()
        };
        let err = routing_rules(&pb::RoutingRules {
            rules: vec![negative],
        })
        .unwrap_err();
        assert!(
            err.message().starts_with("rules.priority_boost_ms"),
            "{err}"
        );
        let blank = pb::RoutingRule {
            tiers: vec![" ".into()],
            ..pb_rule
        };
        let err = routing_rules(&pb::RoutingRules { rules: vec![blank] }).unwrap_err();
        assert!(err.message().starts_with("rules.tiers"), "{err}");
    }
}
