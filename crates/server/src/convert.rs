//! Proto ↔ domain. Every request is validated here, where proto types
//! become domain types, and every refusal names the field at fault and how
//! to fix it (invariant 7). Nothing past this module sees a proto type.

use centralino_core::agent::{AgentProfile, AgentState, Skill};
use centralino_core::customer::{Attributes, ConversationState, MAX_TEXT_BYTES};
use centralino_core::explain::{Explanation, PassedOver};
use centralino_core::history::{EventKind, HistoryEvent, TransferTarget};
use centralino_core::queue::{BullseyeStep, QueueConfig, Strategy};
use centralino_core::{
    AgentId, Channel, ConversationId, CustomerId, Identity, IdentityKind, OfferId, QueueId,
};
use centralino_proto::v1 as pb;
use tonic::Status;

/// Campaigns, bot hand-overs and what they add to the history.
mod outreach;
pub use outreach::*;

/// Routing rules (`Admin.SetRoutingRules`).
mod rules;
pub use rules::*;

/// Longest identity address, agent id, topic, disposition, and the like.
pub const MAX_SHORT_TEXT: usize = 256;
/// Most identities a contact may link at once.
pub const MAX_LINKED_IDENTITIES: usize = 16;
/// Most skills an agent or a queue may list.
pub const MAX_SKILLS: usize = 64;

/// INVALID_ARGUMENT naming `field`.
pub fn invalid(field: &str, message: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {message}"))
}

fn short(field: &str, s: &str) -> Result<(), Status> {
    if s.len() > MAX_SHORT_TEXT {
        return Err(invalid(
            field,
            format!("{} bytes is over the {MAX_SHORT_TEXT}-byte limit", s.len()),
        ));
    }
    Ok(())
}

pub fn channel(field: &str, v: i32) -> Result<Channel, Status> {
    match pb::Channel::try_from(v) {
        Ok(pb::Channel::Voice) => Ok(Channel::Voice),
        Ok(pb::Channel::Chat) => Ok(Channel::Chat),
        Ok(pb::Channel::Email) => Ok(Channel::Email),
        Ok(pb::Channel::Sms) => Ok(Channel::Sms),
        Ok(pb::Channel::Whatsapp) => Ok(Channel::WhatsApp),
        Ok(pb::Channel::Social) => Ok(Channel::Social),
        Ok(pb::Channel::App) => Ok(Channel::App),
        Ok(pb::Channel::Unspecified) => Err(invalid(
            field,
            "is required: set one of CHANNEL_VOICE, CHANNEL_CHAT, CHANNEL_EMAIL, CHANNEL_SMS, CHANNEL_WHATSAPP, CHANNEL_SOCIAL, CHANNEL_APP",
        )),
        Err(_) => Err(invalid(
            field,
            format!("unknown channel {v}: use one of CHANNEL_VOICE (1) .. CHANNEL_APP (7)"),
        )),
    }
}

pub fn channel_to_pb(c: Channel) -> i32 {
    (match c {
        Channel::Voice => pb::Channel::Voice,
        Channel::Chat => pb::Channel::Chat,
        Channel::Email => pb::Channel::Email,
        Channel::Sms => pb::Channel::Sms,
        Channel::WhatsApp => pb::Channel::Whatsapp,
        Channel::Social => pb::Channel::Social,
        Channel::App => pb::Channel::App,
    }) as i32
}

/// A required identity.
pub fn identity(field: &str, v: Option<&pb::Identity>) -> Result<Identity, Status> {
    let v = v.ok_or_else(|| {
        invalid(
            field,
            "is required: set the customer's identity (kind and address)",
        )
    })?;
    let kind = match pb::IdentityKind::try_from(v.kind) {
        Ok(pb::IdentityKind::Phone) => IdentityKind::Phone,
        Ok(pb::IdentityKind::Email) => IdentityKind::Email,
        Ok(pb::IdentityKind::ChatSession) => IdentityKind::ChatSession,
        Ok(pb::IdentityKind::SocialHandle) => IdentityKind::SocialHandle,
        Ok(pb::IdentityKind::AppUser) => IdentityKind::AppUser,
        Ok(pb::IdentityKind::Unspecified) | Err(_) => {
            return Err(invalid(
                &format!("{field}.kind"),
                "set IDENTITY_KIND_PHONE, _EMAIL, _CHAT_SESSION, _SOCIAL_HANDLE or _APP_USER",
            ));
        }
    };
    if v.address.trim().is_empty() {
        return Err(invalid(&format!("{field}.address"), "must not be empty"));
    }
    short(&format!("{field}.address"), &v.address)?;
    Ok(Identity::new(kind, &v.address))
}

pub fn identity_to_pb(i: &Identity) -> pb::Identity {
    let kind = match i.kind {
        IdentityKind::Phone => pb::IdentityKind::Phone,
        IdentityKind::Email => pb::IdentityKind::Email,
        IdentityKind::ChatSession => pb::IdentityKind::ChatSession,
        IdentityKind::SocialHandle => pb::IdentityKind::SocialHandle,
        IdentityKind::AppUser => pb::IdentityKind::AppUser,
    };
    pb::Identity {
        kind: kind as i32,
        address: i.address.clone(),
    }
}

pub fn attributes(field: &str, a: Option<&pb::CustomerAttributes>) -> Result<Attributes, Status> {
    let Some(a) = a else {
        return Ok(Attributes::default());
    };
    let opt = |name: &str, v: &str| -> Result<Option<String>, Status> {
        short(&format!("{field}.{name}"), v)?;
        let v = v.trim().to_lowercase();
        Ok((!v.is_empty()).then_some(v))
    };
    Ok(Attributes {
        tier: opt("tier", &a.tier)?,
        segment: opt("segment", &a.segment)?,
        language: opt("language", &a.language)?,
        contract: opt("contract", &a.contract)?,
        preferred_channel: optional_channel(
            &format!("{field}.preferred_channel"),
            a.preferred_channel,
        )?,
        time_zone: time_zone(&format!("{field}.time_zone"), &a.time_zone)?,
        do_not_contact: consent(&format!("{field}.consent"), a.consent.as_ref())?,
    })
}

pub fn attributes_to_pb(a: &Attributes) -> pb::CustomerAttributes {
    pb::CustomerAttributes {
        tier: a.tier.clone().unwrap_or_default(),
        segment: a.segment.clone().unwrap_or_default(),
        language: a.language.clone().unwrap_or_default(),
        contract: a.contract.clone().unwrap_or_default(),
        preferred_channel: a.preferred_channel.map_or(0, channel_to_pb),
        time_zone: a.time_zone.clone().unwrap_or_default(),
        consent: a.do_not_contact.as_ref().map(|d| pb::ContactConsent {
            do_not_contact: d.iter().map(|c| channel_to_pb(*c)).collect(),
        }),
    }
}

pub fn text(field: &str, t: &str) -> Result<String, Status> {
    if t.len() > MAX_TEXT_BYTES {
        return Err(invalid(
            field,
            format!(
                "{} bytes is over the {MAX_TEXT_BYTES}-byte limit; split the message",
                t.len()
            ),
        ));
    }
    Ok(t.to_owned())
}

pub fn sentiment(field: &str, s: Option<f64>) -> Result<Option<f64>, Status> {
    match s {
        Some(v) if !v.is_finite() || !(-1.0..=1.0).contains(&v) => Err(invalid(
            field,
            format!("must be between -1.0 and 1.0, got {v}"),
        )),
        other => Ok(other),
    }
}

pub fn topic(field: &str, t: &str) -> Result<String, Status> {
    short(field, t)?;
    Ok(t.trim().to_lowercase())
}

pub fn conversation_id(field: &str, s: &str) -> Result<ConversationId, Status> {
    if s.is_empty() {
        return Err(invalid(field, "is required"));
    }
    s.parse().map_err(|e| invalid(field, e))
}

pub fn customer_id(field: &str, s: &str) -> Result<CustomerId, Status> {
    s.parse().map_err(|e| invalid(field, e))
}

pub fn offer_id(field: &str, s: &str) -> Result<OfferId, Status> {
    if s.is_empty() {
        return Err(invalid(field, "is required"));
    }
    s.parse().map_err(|e| invalid(field, e))
}

pub fn agent_id(field: &str, s: &str) -> Result<AgentId, Status> {
    let s = s.trim();
    if s.is_empty() {
        return Err(invalid(field, "is required"));
    }
    short(field, s)?;
    Ok(AgentId::new(s))
}

fn skills(field: &str, v: &[pb::Skill]) -> Result<Vec<Skill>, Status> {
    if v.len() > MAX_SKILLS {
        return Err(invalid(field, format!("at most {MAX_SKILLS} skills")));
    }
    v.iter()
        .map(|s| {
            if s.name.trim().is_empty() {
                return Err(invalid(&format!("{field}.name"), "must not be empty"));
            }
            short(&format!("{field}.name"), &s.name)?;
            if !(1..=5).contains(&s.proficiency) {
                return Err(invalid(
                    &format!("{field}.proficiency"),
                    format!("skill {:?} must be 1..5, got {}", s.name, s.proficiency),
                ));
            }
            Ok(Skill::new(&s.name, s.proficiency as u8))
        })
        .collect()
}

pub fn skills_to_pb(v: &[Skill]) -> Vec<pb::Skill> {
    v.iter()
        .map(|s| pb::Skill {
            name: s.name.clone(),
            proficiency: s.proficiency as i32,
        })
        .collect()
}

/// An agent's login; returns the profile and whether it starts away.
pub fn login(l: &pb::agent_command::Login) -> Result<(AgentProfile, bool), Status> {
    let id = agent_id("login.agent_id", &l.agent_id)?;
    short("login.name", &l.name)?;
    let capacity = match l.capacity {
        0 => 100,
        c @ 1..=100 => c as u16,
        c => {
            return Err(invalid(
                "login.capacity",
                format!("must be 1..100 (0 means 100), got {c}"),
            ));
        }
    };
    let away = match pb::AgentState::try_from(l.initial_state) {
        Ok(pb::AgentState::Unspecified | pb::AgentState::Available) => false,
        Ok(pb::AgentState::Away) => true,
        _ => {
            return Err(invalid(
                "login.initial_state",
                "must be AGENT_STATE_AVAILABLE or AGENT_STATE_AWAY",
            ));
        }
    };
    let languages = l
        .languages
        .iter()
        .map(|x| x.trim().to_lowercase())
        .filter(|x| !x.is_empty())
        .collect();
    let name = if l.name.is_empty() {
        id.to_string()
    } else {
        l.name.clone()
    };
    Ok((
        AgentProfile {
            id,
            name,
            skills: skills("login.skills", &l.skills)?,
            languages,
            capacity,
        },
        away,
    ))
}

pub fn agent_state_to_pb(s: AgentState) -> i32 {
    (match s {
        AgentState::Offline => pb::AgentState::Offline,
        AgentState::Available => pb::AgentState::Available,
        AgentState::Busy => pb::AgentState::Busy,
        AgentState::Away => pb::AgentState::Away,
        AgentState::WrapUp => pb::AgentState::WrapUp,
        AgentState::Resting => pb::AgentState::Resting,
    }) as i32
}

pub fn conversation_state_to_pb(s: ConversationState) -> i32 {
    (match s {
        ConversationState::Queued => pb::ConversationState::Queued,
        ConversationState::Offered => pb::ConversationState::Offered,
        ConversationState::Assigned => pb::ConversationState::Assigned,
        ConversationState::WrappedUp => pb::ConversationState::WrappedUp,
        ConversationState::Resolved => pb::ConversationState::Resolved,
        ConversationState::Notified => pb::ConversationState::Notified,
        ConversationState::Abandoned => pb::ConversationState::Abandoned,
    }) as i32
}

pub fn transfer_target(t: &pb::agent_command::Transfer) -> Result<TransferTarget, Status> {
    use pb::agent_command::transfer::To;
    match &t.to {
        Some(To::QueueId(q)) if !q.is_empty() => Ok(TransferTarget::Queue(QueueId::new(q))),
        Some(To::AgentId(a)) => Ok(TransferTarget::Agent(agent_id("transfer.agent_id", a)?)),
        _ => Err(invalid("transfer.to", "set queue_id or agent_id")),
    }
}

pub fn queue(q: &pb::Queue) -> Result<QueueConfig, Status> {
    let strategy = match pb::Strategy::try_from(q.strategy) {
        Ok(pb::Strategy::Unspecified | pb::Strategy::LongestIdle) => Strategy::LongestIdle,
        Ok(pb::Strategy::MostProficient) => Strategy::MostProficient,
        Ok(pb::Strategy::LeastOccupied) => Strategy::LeastOccupied,
        Ok(pb::Strategy::RoundRobin) => Strategy::RoundRobin,
        Err(_) => {
            return Err(invalid(
                "strategy",
                format!("unknown strategy {}", q.strategy),
            ));
        }
    };
    short("name", &q.name)?;
    let sla_ms = q
        .sla_targets
        .iter()
        .map(|t| {
            let ch = channel("sla_targets.channel", t.channel)?;
            if t.answer_within_ms <= 0 {
                return Err(invalid(
                    "sla_targets.answer_within_ms",
                    format!("must be positive, got {}", t.answer_within_ms),
                ));
            }
            Ok((ch, t.answer_within_ms as u64))
        })
        .collect::<Result<_, Status>>()?;
    let bullseye = q
        .bullseye
        .iter()
        .map(|b| {
            if b.after_ms <= 0 {
                return Err(invalid(
                    "bullseye.after_ms",
                    format!("must be positive, got {}", b.after_ms),
                ));
            }
            if !(0..=4).contains(&b.relax_proficiency) {
                return Err(invalid(
                    "bullseye.relax_proficiency",
                    format!("must be 0..4, got {}", b.relax_proficiency),
                ));
            }
            Ok(BullseyeStep {
                after_ms: b.after_ms as u64,
                relax_proficiency: b.relax_proficiency as u8,
                drop_skills: b
                    .drop_skills
                    .iter()
                    .map(|s| s.trim().to_lowercase())
                    .collect(),
            })
        })
        .collect::<Result<_, Status>>()?;
    if q.priority_boost_ms < 0 {
        return Err(invalid("priority_boost_ms", "must not be negative"));
    }
    let cfg = QueueConfig {
        id: QueueId::new(q.queue_id.trim()),
        name: if q.name.is_empty() {
            q.queue_id.clone()
        } else {
            q.name.clone()
        },
        topics: q
            .topics
            .iter()
            .map(|t| t.trim().to_lowercase())
            .filter(|t| !t.is_empty())
            .collect(),
        required: skills("required_skills", &q.required_skills)?,
        sla_ms,
        strategy,
        bullseye,
        priority_boost_ms: q.priority_boost_ms as u64,
    };
    cfg.validate()
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(cfg)
}

pub fn queue_to_pb(q: &QueueConfig) -> pb::Queue {
    pb::Queue {
        queue_id: q.id.to_string(),
        name: q.name.clone(),
        topics: q.topics.clone(),
        required_skills: skills_to_pb(&q.required),
        sla_targets: Channel::ALL
            .iter()
            .map(|&c| pb::SlaTarget {
                channel: channel_to_pb(c),
                answer_within_ms: q.sla_ms(c) as i64,
                target: 0.8,
            })
            .collect(),
        strategy: (match q.strategy {
            Strategy::LongestIdle => pb::Strategy::LongestIdle,
            Strategy::MostProficient => pb::Strategy::MostProficient,
            Strategy::LeastOccupied => pb::Strategy::LeastOccupied,
            Strategy::RoundRobin => pb::Strategy::RoundRobin,
        }) as i32,
        bullseye: q
            .bullseye
            .iter()
            .map(|b| pb::BullseyeStep {
                after_ms: b.after_ms as i64,
                relax_proficiency: b.relax_proficiency as i32,
                drop_skills: b.drop_skills.clone(),
            })
            .collect(),
        priority_boost_ms: q.priority_boost_ms as i64,
    }
}

pub fn explanation_to_pb(e: &Explanation) -> pb::Explanation {
    pb::Explanation {
        queue_id: e.queue.to_string(),
        rule: e.rule.name().into(),
        score_ms: e.score_ms,
        priority: Some(pb::PriorityBreakdown {
            sla_target_ms: e.priority.sla_target_ms as i64,
            tier_boost_ms: e.priority.tier_boost_ms as i64,
            topic_boost_ms: e.priority.topic_boost_ms as i64,
            sentiment_boost_ms: e.priority.sentiment_boost_ms as i64,
            waited_ms: e.priority.waited_ms as i64,
            rule_boost_ms: e.priority.rule_boost_ms as i64,
        }),
        bullseye_step: e.bullseye_step as u32,
        candidates: e
            .candidates
            .iter()
            .map(|c| pb::Candidate {
                agent_id: c.agent.to_string(),
                chosen: c.passed_over.is_none(),
                key: c.key.to_string(),
                note: match c.passed_over {
                    None => String::new(),
                    Some(PassedOver::RankedLower) => "ranked lower by the strategy".into(),
                    Some(PassedOver::DeclinedEarlier) => {
                        "declined this conversation earlier".into()
                    }
                    Some(PassedOver::NoCapacity) => "no free capacity for the channel".into(),
                    Some(PassedOver::SkillsNotMet) => "skills not met at this bullseye step".into(),
                },
            })
            .collect(),
        summary: e.summary(),
        routing_rule: e.routing_rule.clone().unwrap_or_default(),
    }
}

pub fn event_to_pb(e: &HistoryEvent) -> pb::HistoryEvent {
    use pb::history_event as h;
    let kind = match &e.kind {
        EventKind::CustomerMessage {
            channel,
            identity,
            text,
            topic,
            sentiment,
        } => h::Kind::CustomerMessage(h::CustomerMessage {
            channel: channel_to_pb(*channel),
            identity: Some(identity_to_pb(identity)),
            text: text.clone(),
            topic: topic.clone(),
            sentiment: *sentiment,
        }),
        EventKind::AgentMessage {
            agent,
            channel,
            text,
        } => h::Kind::AgentMessage(h::AgentMessage {
            agent_id: agent.to_string(),
            channel: channel_to_pb(*channel),
            text: text.clone(),
        }),
        EventKind::Queued { queue, channel } => h::Kind::Queued(h::Queued {
            queue_id: queue.to_string(),
            channel: channel_to_pb(*channel),
        }),
        EventKind::Offered {
            agent,
            offer,
            explanation,
        } => h::Kind::Offered(h::Offered {
            agent_id: agent.to_string(),
            offer_id: offer.to_string(),
            explanation: Some(explanation_to_pb(explanation)),
        }),
        EventKind::OfferRejected {
            agent,
            offer,
            reason,
        } => h::Kind::OfferRejected(h::OfferRejected {
            agent_id: agent.to_string(),
            offer_id: offer.to_string(),
            reason: reason.clone(),
        }),
        EventKind::OfferTimedOut { agent, offer } => h::Kind::OfferTimedOut(h::OfferTimedOut {
            agent_id: agent.to_string(),
            offer_id: offer.to_string(),
        }),
        EventKind::Assigned { agent } => h::Kind::Assigned(h::Assigned {
            agent_id: agent.to_string(),
        }),
        EventKind::Transferred { from, to, note } => h::Kind::Transferred(h::Transferred {
            from_agent_id: from.to_string(),
            to_queue_id: match to {
                TransferTarget::Queue(q) => q.to_string(),
                TransferTarget::Agent(_) => String::new(),
            },
            to_agent_id: match to {
                TransferTarget::Agent(a) => a.to_string(),
                TransferTarget::Queue(_) => String::new(),
            },
            note: note.clone(),
        }),
        EventKind::CallbackRequested {
            channel,
            to,
            not_before,
        } => h::Kind::CallbackRequested(h::CallbackRequested {
            channel: channel_to_pb(*channel),
            identity: Some(identity_to_pb(to)),
            not_before_unix_ms: *not_before as i64,
        }),
        EventKind::WrappedUp { agent, disposition } => h::Kind::WrappedUp(h::WrappedUp {
            agent_id: agent.to_string(),
            disposition: disposition.clone(),
        }),
        EventKind::Resolved { by } => h::Kind::Resolved(h::Resolved { by: by.clone() }),
        EventKind::Abandoned { channel } => h::Kind::Abandoned(h::Abandoned {
            channel: channel_to_pb(*channel),
        }),
        EventKind::IdentityLinked { identity } => h::Kind::IdentityLinked(h::IdentityLinked {
            identity: Some(identity_to_pb(identity)),
        }),
        EventKind::Merged {
            from, identities, ..
        } => h::Kind::Merged(h::Merged {
            from_customer_id: from.to_string(),
            identities: identities.iter().map(identity_to_pb).collect(),
        }),
        EventKind::Absorbed {
            conversation,
            event,
        } => h::Kind::Absorbed(Box::new(h::Absorbed {
            conversation_id: conversation.to_string(),
            event: Some(Box::new(event_to_pb(event))),
        })),
        EventKind::MergedInto { into } => h::Kind::MergedInto(h::MergedInto {
            into_customer_id: into.to_string(),
        }),
        EventKind::Notice { .. } | EventKind::BotTranscript { .. } => outreach_event_to_pb(&e.kind),
    };
    pb::HistoryEvent {
        seq: e.seq,
        at_unix_ms: e.at as i64,
        kind: Some(kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_input_names_the_field() {
        let msg = |s: Status| s.message().to_owned();
        assert!(
            msg(channel("channel", 99).unwrap_err()).starts_with("channel: unknown channel 99")
        );
        assert!(msg(identity("identity", None).unwrap_err()).starts_with("identity: is required"));
        let l = pb::agent_command::Login {
            agent_id: "a".into(),
            capacity: -5,
            ..Default::default()
        };
        let e = login(&l).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().starts_with("login.capacity:"));
        assert!(
            msg(text("text", &"x".repeat(MAX_TEXT_BYTES + 1)).unwrap_err()).starts_with("text:")
        );
        assert!(msg(sentiment("sentiment", Some(f64::NAN)).unwrap_err()).starts_with("sentiment:"));
        assert!(
            msg(conversation_id("reply.conversation_id", "nope").unwrap_err())
                .starts_with("reply.conversation_id:")
        );
    }
}
