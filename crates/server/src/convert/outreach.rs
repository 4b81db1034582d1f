//! Proto ↔ domain for proactive outbound and self-service: campaigns and
//! their progress, a bot's hand-over and its transcript, the customer's
//! contact preferences (preferred channel, time zone, consent), and the
//! estimated wait. Like the rest of `convert`, every refusal names the
//! field and how to fix it.

use centralino_actors::campaign::CampaignRecord;
use centralino_core::campaign::run::Status as RunStatus;
use centralino_core::campaign::{
    Audience, CampaignSpec, DEFAULT_REPLY_WINDOW_MS, FollowUp, QuietHours, Zone,
};
use centralino_core::customer::{HandOver, MAX_TEXT_BYTES};
use centralino_core::history::{EventKind, Speaker, TranscriptLine};
use centralino_core::wait::WaitEstimate;
use centralino_core::{CampaignId, Channel, Identity, QueueId};
use centralino_proto::v1 as pb;
use tonic::Status;

use super::{
    MAX_LINKED_IDENTITIES, attributes, channel, channel_to_pb, identity, identity_to_pb, invalid,
    sentiment, short, text, topic,
};

/// Most lines a bot's transcript may carry.
pub const MAX_TRANSCRIPT_LINES: usize = 256;
/// Most text a transcript may carry, all lines together.
pub const MAX_TRANSCRIPT_BYTES: usize = 128 * 1024;
/// Most values an audience may list per attribute.
pub const MAX_AUDIENCE_VALUES: usize = 64;

/// A channel that may be left unset (0): `None` then.
pub fn optional_channel(field: &str, v: i32) -> Result<Option<Channel>, Status> {
    if v == 0 {
        return Ok(None);
    }
    channel(field, v).map(Some)
}

/// An IANA time zone, or nothing when empty; kept as the database spells it.
pub fn time_zone(field: &str, v: &str) -> Result<Option<String>, Status> {
    if v.trim().is_empty() {
        return Ok(None);
    }
    short(field, v)?;
    let zone = Zone::parse(field, v).map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(Some(zone.name().to_owned()))
}

/// The consent a gateway states: when set, the whole list of channels the
/// customer declined (sorted, once each).
pub fn consent(
    field: &str,
    c: Option<&pb::ContactConsent>,
) -> Result<Option<Vec<Channel>>, Status> {
    let Some(c) = c else {
        return Ok(None);
    };
    let mut channels = c
        .do_not_contact
        .iter()
        .map(|v| channel(&format!("{field}.do_not_contact"), *v))
        .collect::<Result<Vec<_>, _>>()?;
    channels.sort();
    channels.dedup();
    Ok(Some(channels))
}

/// A short text that must be there, trimmed; `what` says what to put.
fn required<'a>(field: &str, v: &'a str, what: &str) -> Result<&'a str, Status> {
    let v = v.trim();
    if v.is_empty() {
        return Err(invalid(field, format!("is required: {what}")));
    }
    short(field, v)?;
    Ok(v)
}

/// A bot's hand-over, validated: the domain request and the identities to
/// link.
pub fn hand_over(r: &pb::HandOverRequest) -> Result<(HandOver, Vec<Identity>), Status> {
    let bot = required("bot_id", &r.bot_id, "name the bot that hands over")?;
    if r.transcript.is_empty() {
        return Err(invalid(
            "transcript",
            "is required: at least one line of what was said, so the customer need not repeat it",
        ));
    }
    if r.transcript.len() > MAX_TRANSCRIPT_LINES {
        return Err(invalid(
            "transcript",
            format!(
                "{} lines is over the limit of {MAX_TRANSCRIPT_LINES}; keep the latest",
                r.transcript.len()
            ),
        ));
    }
    let total: usize = r.transcript.iter().map(|l| l.text.len()).sum();
    if total > MAX_TRANSCRIPT_BYTES {
        return Err(invalid(
            "transcript",
            format!(
                "{total} bytes of text is over the {MAX_TRANSCRIPT_BYTES}-byte limit; keep the latest lines"
            ),
        ));
    }
    let mut lines = Vec::with_capacity(r.transcript.len());
    let mut previous = 0;
    for (i, l) in r.transcript.iter().enumerate() {
        let field = |f: &str| format!("transcript[{i}].{f}");
        let from = match pb::transcript_line::Speaker::try_from(l.from) {
            Ok(pb::transcript_line::Speaker::Customer) => Speaker::Customer,
            Ok(pb::transcript_line::Speaker::Bot) => Speaker::Bot,
            _ => {
                return Err(invalid(
                    &field("from"),
                    "set SPEAKER_CUSTOMER or SPEAKER_BOT",
                ));
            }
        };
        if l.text.trim().is_empty() {
            return Err(invalid(&field("text"), "must not be empty"));
        }
        let text = text(&field("text"), &l.text)?;
        if l.at_unix_ms < previous {
            return Err(invalid(
                &field("at_unix_ms"),
                format!(
                    "{} is before the line above ({previous}); lines come in the order they were said",
                    l.at_unix_ms
                ),
            ));
        }
        previous = l.at_unix_ms;
        lines.push(TranscriptLine {
            from,
            text,
            at: l.at_unix_ms as u64,
        });
    }
    if r.summary.len() > MAX_TEXT_BYTES {
        return Err(invalid(
            "summary",
            format!("over the {MAX_TEXT_BYTES}-byte limit"),
        ));
    }
    if r.link_identities.len() > MAX_LINKED_IDENTITIES {
        return Err(invalid(
            "link_identities",
            format!("at most {MAX_LINKED_IDENTITIES} identities"),
        ));
    }
    let links = r
        .link_identities
        .iter()
        .map(|i| identity("link_identities", Some(i)))
        .collect::<Result<Vec<_>, _>>()?;
    let h = HandOver {
        bot: bot.to_owned(),
        channel: channel("channel", r.channel)?,
        identity: identity("identity", r.identity.as_ref())?,
        topic: topic("topic", &r.topic)?,
        sentiment: sentiment("sentiment", r.sentiment)?,
        attributes: attributes("attributes", r.attributes.as_ref())?,
        summary: r.summary.trim().to_owned(),
        transcript: lines,
    };
    Ok((h, links))
}

/// The history's outbound and hand-over events.
pub fn outreach_event_to_pb(kind: &EventKind) -> pb::history_event::Kind {
    use pb::history_event as h;
    match kind {
        EventKind::Notice {
            campaign,
            channel,
            to,
            text,
            topic,
        } => h::Kind::Notice(h::Notice {
            campaign_id: campaign.to_string(),
            channel: channel_to_pb(*channel),
            to: Some(identity_to_pb(to)),
            text: text.clone(),
            topic: topic.clone(),
        }),
        EventKind::BotTranscript {
            bot,
            channel,
            identity,
            topic,
            sentiment,
            summary,
            lines,
        } => h::Kind::BotTranscript(h::BotTranscript {
            bot_id: bot.clone(),
            channel: channel_to_pb(*channel),
            identity: Some(identity_to_pb(identity)),
            topic: topic.clone(),
            sentiment: *sentiment,
            summary: summary.clone(),
            lines: lines
                .iter()
                .map(|l| pb::TranscriptLine {
                    from: (match l.from {
                        Speaker::Customer => pb::transcript_line::Speaker::Customer,
                        Speaker::Bot => pb::transcript_line::Speaker::Bot,
                    }) as i32,
                    text: l.text.clone(),
                    at_unix_ms: l.at as i64,
                })
                .collect(),
        }),
        // Only the two kinds above are routed here (see `event_to_pb`).
        other => h::Kind::Resolved(h::Resolved {
            by: format!("{other:?}"),
        }),
    }
}

fn values(field: &str, v: &[String]) -> Result<Vec<String>, Status> {
    if v.len() > MAX_AUDIENCE_VALUES {
        return Err(invalid(
            field,
            format!("at most {MAX_AUDIENCE_VALUES} values"),
        ));
    }
    v.iter()
        .map(|s| {
            short(field, s)?;
            Ok(s.trim().to_lowercase())
        })
        .filter(|r| r.as_ref().map_or(true, |s: &String| !s.is_empty()))
        .collect()
}

/// A campaign as an operator asks for it, validated.
pub fn campaign_spec(c: &pb::Campaign) -> Result<CampaignSpec, Status> {
    short("name", &c.name)?;
    let audience = c.audience.as_ref().map_or_else(
        || Ok(Audience::default()),
        |a| -> Result<Audience, Status> {
            Ok(Audience {
                tiers: values("audience.tiers", &a.tiers)?,
                segments: values("audience.segments", &a.segments)?,
                languages: values("audience.languages", &a.languages)?,
                everyone: a.everyone,
            })
        },
    )?;
    let mut fallbacks = Vec::new();
    for v in &c.channels {
        let ch = channel("channels", *v)?;
        if !fallbacks.contains(&ch) {
            fallbacks.push(ch);
        }
    }
    let quiet_hours = match &c.quiet_hours {
        Some(q) if !(q.from.is_empty() && q.until.is_empty()) => {
            QuietHours::parse("quiet_hours", &q.from, &q.until)
                .map_err(|e| Status::invalid_argument(e.to_string()))?
        }
        _ => QuietHours::NONE,
    };
    let time_zone = if c.time_zone.trim().is_empty() {
        Zone::UTC
    } else {
        Zone::parse("time_zone", &c.time_zone)
            .map_err(|e| Status::invalid_argument(e.to_string()))?
    };
    let follow_up = match &c.follow_up {
        None => None,
        Some(f) => {
            let q = required(
                "follow_up.queue_id",
                &f.queue_id,
                "the queue whose agents follow the notices up",
            )?;
            Some(FollowUp {
                queue: QueueId::new(q),
                channel: optional_channel("follow_up.channel", f.channel)?,
            })
        }
    };
    let reply_window_ms = match c.reply_window_ms {
        0 => DEFAULT_REPLY_WINDOW_MS,
        ms if ms < 0 => {
            return Err(invalid(
                "reply_window_ms",
                format!("must be positive (0 means 72 hours), got {ms}"),
            ));
        }
        ms => ms as u64,
    };
    let spec = CampaignSpec {
        id: CampaignId::new(c.campaign_id.trim()),
        name: c.name.trim().to_owned(),
        audience,
        message: text("message", &c.message)?,
        topic: topic("topic", &c.topic)?,
        fallbacks,
        ignore_preferred: c.ignore_preferred_channel,
        quiet_hours,
        time_zone,
        follow_up,
        reply_window_ms,
    };
    spec.validate()
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(spec)
}

pub fn campaign_to_pb(s: &CampaignSpec) -> pb::Campaign {
    let (from, until) = s.quiet_hours.describe();
    pb::Campaign {
        campaign_id: s.id.to_string(),
        name: s.name.clone(),
        audience: Some(pb::Audience {
            tiers: s.audience.tiers.clone(),
            segments: s.audience.segments.clone(),
            languages: s.audience.languages.clone(),
            everyone: s.audience.everyone,
        }),
        message: s.message.clone(),
        topic: s.topic.clone(),
        channels: s.fallbacks.iter().map(|c| channel_to_pb(*c)).collect(),
        ignore_preferred_channel: s.ignore_preferred,
        quiet_hours: (!s.quiet_hours.is_none()).then_some(pb::QuietHours { from, until }),
        time_zone: s.time_zone.name().to_owned(),
        follow_up: s.follow_up.as_ref().map(|f| pb::FollowUp {
            queue_id: f.queue.to_string(),
            channel: f.channel.map_or(0, channel_to_pb),
        }),
        reply_window_ms: s.reply_window_ms as i64,
    }
}

/// A campaign's record as a supervisor reads it; `replied` from the store.
pub fn campaign_view_to_pb(r: &CampaignRecord, replied: u64) -> pb::CampaignView {
    let p = &r.progress;
    pb::CampaignView {
        campaign: Some(campaign_to_pb(&r.spec)),
        status: (match r.status {
            RunStatus::Delivering => pb::CampaignStatus::Delivering,
            RunStatus::AwaitingReplies => pb::CampaignStatus::AwaitingReplies,
            RunStatus::Finished => pb::CampaignStatus::Finished,
        }) as i32,
        runner_node: r.runner.clone(),
        progress: Some(pb::CampaignProgress {
            scanned: p.scanned,
            targeted: p.targeted,
            sent: p.sent,
            sent_by_channel: p
                .sent_by_channel
                .iter()
                .map(|(c, n)| pb::ChannelCount {
                    channel: channel_to_pb(*c),
                    count: *n,
                })
                .collect(),
            skipped_consent: p.skipped_consent,
            skipped_unreachable: p.skipped_unreachable,
            deferred: p.deferred,
            deferred_total: p.deferred_total,
            sending: p.asking,
            failed: p.failed,
            replied,
            follow_ups: p.follow_ups,
            awaiting_reply: p.awaiting_reply,
            closed_unanswered: p.closed_unanswered,
            scan_complete: p.scan_complete,
        }),
        started_unix_ms: r.started_at as i64,
        updated_unix_ms: r.updated_at as i64,
    }
}

pub fn wait_estimate_to_pb(e: &WaitEstimate) -> pb::WaitEstimate {
    pb::WaitEstimate {
        estimated_wait_ms: e.wait_ms as i64,
        position: e.position,
        mean_answer_interval_ms: e.interval_ms as i64,
        answers_sampled: e.answers,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(from: pb::transcript_line::Speaker, text: &str, at: i64) -> pb::TranscriptLine {
        pb::TranscriptLine {
            from: from as i32,
            text: text.into(),
            at_unix_ms: at,
        }
    }

    fn request() -> pb::HandOverRequest {
        pb::HandOverRequest {
            bot_id: "assistant".into(),
            channel: pb::Channel::Chat as i32,
            identity: Some(pb::Identity {
                kind: pb::IdentityKind::ChatSession as i32,
                address: "web-1".into(),
            }),
            transcript: vec![
                line(pb::transcript_line::Speaker::Customer, "hi", 10),
                line(pb::transcript_line::Speaker::Bot, "hello", 11),
            ],
            ..Default::default()
        }
    }

    #[test]
    fn a_hand_over_names_the_field_at_fault() {
        assert!(hand_over(&request()).is_ok());
        let field = |r: pb::HandOverRequest| {
            let s = hand_over(&r).expect_err("refused");
            assert_eq!(s.code(), tonic::Code::InvalidArgument);
            s.message().split(':').next().unwrap_or_default().to_owned()
        };
        let mut r = request();
        r.transcript[1].at_unix_ms = 5;
        assert_eq!(field(r), "transcript[1].at_unix_ms");
        let mut r = request();
        r.transcript[0].from = 0;
        assert_eq!(field(r), "transcript[0].from");
        let mut r = request();
        r.transcript.clear();
        assert_eq!(field(r), "transcript");
        let mut r = request();
        r.bot_id.clear();
        assert_eq!(field(r), "bot_id");
    }

    #[test]
    fn a_campaign_names_the_field_at_fault() {
        let ok = pb::Campaign {
            campaign_id: "incident-7".into(),
            audience: Some(pb::Audience {
                segments: vec!["Consumer".into()],
                ..Default::default()
            }),
            message: "we know; we are on it".into(),
            channels: vec![pb::Channel::Sms as i32],
            quiet_hours: Some(pb::QuietHours {
                from: "21:00".into(),
                until: "08:00".into(),
            }),
            time_zone: "Europe/Rome".into(),
            ..Default::default()
        };
        let spec = campaign_spec(&ok).expect("valid");
        assert_eq!(spec.audience.segments, vec!["consumer".to_owned()]);
        assert_eq!(
            campaign_spec(&campaign_to_pb(&spec)).expect("round trip"),
            spec
        );
        let field = |c: pb::Campaign| {
            let s = campaign_spec(&c).expect_err("refused");
            assert_eq!(s.code(), tonic::Code::InvalidArgument, "{s:?}");
            s.message().split(':').next().unwrap_or_default().to_owned()
        };
        let mut c = ok.clone();
        c.time_zone = "Moon/Base".into();
        assert_eq!(field(c), "time_zone");
        let mut c = ok.clone();
        c.quiet_hours = Some(pb::QuietHours {
            from: "25:00".into(),
            until: "08:00".into(),
        });
        assert_eq!(field(c), "quiet_hours.from");
        let mut c = ok.clone();
        c.audience = None;
        assert_eq!(field(c), "audience");
        let mut c = ok.clone();
        c.channels = vec![42];
        assert_eq!(field(c), "channels");
        let mut c = ok.clone();
        c.reply_window_ms = -1;
        assert_eq!(field(c), "reply_window_ms");
        let mut c = ok;
        c.follow_up = Some(pb::FollowUp::default());
        assert_eq!(field(c), "follow_up.queue_id");
    }
}
