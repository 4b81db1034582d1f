//! Proactive outbound campaigns: who is reached, on which channel, and when.
//!
//! An operator starts a campaign (say, a notice about a known incident to
//! the customers it has not hit yet): an audience chosen by customer
//! attributes, a message, a channel policy, quiet hours, and optionally
//! follow-up work for agents. For every customer the campaign meets,
//! [`plan`] decides, from what is known of the customer alone:
//!
//! 1. already reached by this campaign (it keeps a [`CampaignMark`]): done;
//! 2. not in the audience: nothing;
//! 3. the channel: the customer's preferred one first (unless the campaign
//!    says otherwise), then the campaign's fallbacks in order, taking the
//!    first on which the customer has an address and has not declined
//!    contact (do-not-contact, per channel). Declined on every channel it
//!    could use: *skipped for consent*. No address on any: *unreachable*;
//! 4. quiet hours, on the customer's clock (their time zone, else the
//!    campaign's): quiet now, the message is *deferred* until the window
//!    opens ([`quiet`]);
//! 5. otherwise it is sent now.
//!
//! The customer's own actor plans again when asked to send (it holds the
//! latest attributes), records the notice in the customer's history (the
//! one history inbound and outbound share) and hands it to a gateway. A
//! reply joins the conversation the notice is in. [`run`] is the campaign
//! as a whole: what to ask whom next, and the counts a supervisor reads.
//!
//! Architecture invariant: pure and synchronous, like the rest of the core.
//! Time is an argument; time zones come from a compiled-in database.

pub mod quiet;
pub mod run;

use serde::{Deserialize, Serialize};

use crate::channel::{Channel, Identity, IdentityKind};
use crate::customer::{Attributes, CampaignMark, Customer};
use crate::error::{CoreError, Result};
use crate::ids::{CampaignId, QueueId};
use crate::time::{DurationMs, TimeMs};

pub use quiet::{QuietHours, Zone};

/// How long a notice waits for the customer's reply by default before its
/// conversation is closed unanswered.
pub const DEFAULT_REPLY_WINDOW_MS: DurationMs = 72 * 3_600_000;

/// Who a campaign is for: customers whose attributes match every listed
/// dimension (any of the values listed for it). `everyone` must be said
/// explicitly: an empty audience is a mistake, not a broadcast.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Audience {
    pub tiers: Vec<String>,
    pub segments: Vec<String>,
    pub languages: Vec<String>,
    pub everyone: bool,
}

impl Audience {
    pub fn matches(&self, a: &Attributes) -> bool {
        if self.everyone {
            return true;
        }
        let any = |wanted: &[String], have: &Option<String>| {
            wanted.is_empty()
                || have
                    .as_deref()
                    .is_some_and(|h| wanted.iter().any(|w| w.eq_ignore_ascii_case(h)))
        };
        any(&self.tiers, &a.tier)
            && any(&self.segments, &a.segment)
            && any(&self.languages, &a.language)
    }

    fn is_empty(&self) -> bool {
        !self.everyone
            && self.tiers.is_empty()
            && self.segments.is_empty()
            && self.languages.is_empty()
    }
}

/// Work for agents that a notice brings: its conversation is queued in
/// `queue` on `channel` (the notice's when `None`), blended with inbound work at the queue's priority
/// (the queue's SLA targets and boost set its virtual deadline, so a queue
/// with long targets ranks campaign work behind inbound customers).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowUp {
    pub queue: QueueId,
    pub channel: Option<Channel>,
}

/// A campaign as the operator defines it, validated.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CampaignSpec {
    pub id: CampaignId,
    pub name: String,
    pub audience: Audience,
    pub message: String,
    /// The topic of the conversations notices open; replies route by it.
    pub topic: String,
    /// Tried in order after the customer's preferred channel.
    pub fallbacks: Vec<Channel>,
    /// Use only `fallbacks`, whatever the customer prefers.
    pub ignore_preferred: bool,
    pub quiet_hours: QuietHours,
    /// For customers whose time zone is not known.
    pub time_zone: Zone,
    pub follow_up: Option<FollowUp>,
    /// How long a notice waits for a reply before its conversation (if the
    /// notice opened it and nothing else happened in it) is closed.
    pub reply_window_ms: DurationMs,
}

impl CampaignSpec {
    /// Checks what no conversion can: the id's form, that the audience and
    /// some channel are said.
    pub fn validate(&self) -> Result<()> {
        crate::ids::check_name("campaign_id", self.id.as_str())?;
        if self.audience.is_empty() {
            return Err(CoreError::invalid(
                "audience",
                "choose customers by tiers, segments or languages, or set everyone",
            ));
        }
        if self.message.trim().is_empty() {
            return Err(CoreError::invalid("message", "must not be empty"));
        }
        if self.fallbacks.is_empty() && self.ignore_preferred {
            return Err(CoreError::invalid(
                "channels",
                "list at least one channel, or let the customer's preferred channel be used",
            ));
        }
        if self.reply_window_ms == 0 {
            return Err(CoreError::invalid("reply_window_ms", "must be positive"));
        }
        Ok(())
    }

    /// The channels tried for a customer, in order.
    fn channels(&self, a: &Attributes) -> Vec<Channel> {
        let preferred = a.preferred_channel.filter(|_| !self.ignore_preferred);
        let mut order: Vec<Channel> = preferred.into_iter().collect();
        for c in &self.fallbacks {
            if !order.contains(c) {
                order.push(*c);
            }
        }
        order
    }
}

/// Why a targeted customer is not contacted.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Skip {
    /// Declined contact on every channel the campaign could reach them on.
    Consent,
    /// No address on any channel the campaign may use.
    Unreachable,
}

/// What to do about one customer now.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Plan {
    /// This campaign reached them already.
    AlreadySent(CampaignMark),
    NotTargeted,
    Skip(Skip),
    /// Quiet hours: send on `channel` to `to` at `until`.
    Defer {
        until: TimeMs,
        channel: Channel,
        to: Identity,
    },
    Send {
        channel: Channel,
        to: Identity,
    },
}

/// The kind of address a channel reaches.
pub fn address_kind(c: Channel) -> IdentityKind {
    match c {
        Channel::Voice | Channel::Sms | Channel::WhatsApp => IdentityKind::Phone,
        Channel::Email => IdentityKind::Email,
        Channel::Chat => IdentityKind::ChatSession,
        Channel::Social => IdentityKind::SocialHandle,
        Channel::App => IdentityKind::AppUser,
    }
}

/// What is known of a customer that planning reads: their attributes,
/// identities and campaign marks (a running customer's, or its journal
/// record's).
#[derive(Clone, Copy, Debug)]
pub struct Known<'a> {
    pub attributes: &'a Attributes,
    pub identities: &'a [Identity],
    pub marks: &'a [CampaignMark],
}

impl<'a> From<&'a Customer> for Known<'a> {
    fn from(c: &'a Customer) -> Self {
        Known {
            attributes: &c.attributes,
            identities: &c.identities,
            marks: &c.campaigns,
        }
    }
}

/// Decides what `spec` does about a customer at `now` (see the module docs).
pub fn plan(spec: &CampaignSpec, now: TimeMs, who: Known<'_>) -> Plan {
    if let Some(m) = who.marks.iter().find(|m| m.campaign == spec.id) {
        return Plan::AlreadySent(m.clone());
    }
    let a = who.attributes;
    if !spec.audience.matches(a) {
        return Plan::NotTargeted;
    }
    let mut declined = false;
    let mut chosen = None;
    for channel in spec.channels(a) {
        let kind = address_kind(channel);
        // The latest address of the kind: the one the customer used last.
        let Some(to) = who.identities.iter().rev().find(|i| i.kind == kind) else {
            continue;
        };
        if a.declined(channel) {
            declined = true;
            continue;
        }
        chosen = Some((channel, to.clone()));
        break;
    }
    let Some((channel, to)) = chosen else {
        return Plan::Skip(if declined {
            Skip::Consent
        } else {
            Skip::Unreachable
        });
    };
    let zone = a
        .time_zone
        .as_deref()
        .and_then(|z| Zone::parse("time_zone", z).ok())
        .unwrap_or(spec.time_zone);
    let until = spec.quiet_hours.opens_at(now, zone);
    if until > now {
        Plan::Defer { until, channel, to }
    } else {
        Plan::Send { channel, to }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{ConversationId, CustomerId};

    const NOON_UTC: TimeMs = 1_768_478_400_000; // 2026-01-15 12:00 UTC

    fn spec() -> CampaignSpec {
        CampaignSpec {
            id: CampaignId::new("outage-north"),
            name: "Fibre outage, north".into(),
            audience: Audience {
                segments: vec!["consumer".into()],
                ..Default::default()
            },
            message: "A fibre outage may affect you tonight; we are on it.".into(),
            topic: "outage".into(),
            fallbacks: vec![Channel::Sms, Channel::Email],
            ignore_preferred: false,
            quiet_hours: QuietHours::parse("q", "21:00", "08:00").expect("valid"),
            time_zone: Zone::UTC,
            follow_up: None,
            reply_window_ms: DEFAULT_REPLY_WINDOW_MS,
        }
    }

    fn attrs(segment: &str) -> Attributes {
        Attributes {
            segment: Some(segment.into()),
            ..Default::default()
        }
    }

    fn phone() -> Identity {
        Identity::new(IdentityKind::Phone, "+39 340 1")
    }
    fn email() -> Identity {
        Identity::new(IdentityKind::Email, "m@example.it")
    }

    fn plan_for(a: &Attributes, ids: &[Identity], marks: &[CampaignMark]) -> Plan {
        plan(
            &spec(),
            NOON_UTC,
            Known {
                attributes: a,
                identities: ids,
                marks,
            },
        )
    }

    #[test]
    fn the_preferred_channel_first_then_the_fallbacks() {
        let mut a = attrs("consumer");
        a.preferred_channel = Some(Channel::WhatsApp);
        let ids = [email(), phone()];
        assert_eq!(
            plan_for(&a, &ids, &[]),
            Plan::Send {
                channel: Channel::WhatsApp,
                to: phone()
            }
        );
        // Declined WhatsApp: the first fallback with an address.
        a.do_not_contact = Some(vec![Channel::WhatsApp]);
        assert_eq!(
            plan_for(&a, &ids, &[]),
            Plan::Send {
                channel: Channel::Sms,
                to: phone()
            }
        );
        // No phone: e-mail.
        assert_eq!(
            plan_for(&a, &[email()], &[]),
            Plan::Send {
                channel: Channel::Email,
                to: email()
            }
        );
    }

    #[test]
    fn consent_and_reachability_are_told_apart() {
        let mut a = attrs("consumer");
        a.do_not_contact = Some(vec![Channel::Sms, Channel::Email]);
        assert_eq!(
            plan_for(&a, &[phone(), email()], &[]),
            Plan::Skip(Skip::Consent)
        );
        let chat = Identity::new(IdentityKind::ChatSession, "web-1");
        assert_eq!(
            plan_for(&attrs("consumer"), &[chat], &[]),
            Plan::Skip(Skip::Unreachable),
            "a chat session is not among the campaign's channels"
        );
        // Declined only where there is no address anyway: still unreachable.
        let mut a = attrs("consumer");
        a.do_not_contact = Some(vec![Channel::Email]);
        assert_eq!(plan_for(&a, &[], &[]), Plan::Skip(Skip::Unreachable));
    }

    #[test]
    fn quiet_hours_defer_on_the_customers_clock() {
        let mut a = attrs("consumer");
        a.time_zone = Some("Asia/Tokyo".into()); // 21:00 there
        match plan_for(&a, &[phone()], &[]) {
            Plan::Defer { until, channel, .. } => {
                assert_eq!(channel, Channel::Sms);
                assert_eq!(until, NOON_UTC + 11 * 3_600_000, "08:00 in Tokyo");
            }
            other => panic!("deferred, not {other:?}"),
        }
    }

    #[test]
    fn audience_marks_and_validation() {
        assert_eq!(
            plan_for(&attrs("business"), &[phone()], &[]),
            Plan::NotTargeted
        );
        assert_eq!(
            plan_for(&Attributes::default(), &[phone()], &[]),
            Plan::NotTargeted
        );
        let mark = CampaignMark {
            campaign: CampaignId::new("outage-north"),
            conversation: ConversationId {
                customer: CustomerId(1),
                number: 1,
            },
            channel: Channel::Sms,
            at: 1,
            replied: false,
        };
        assert_eq!(
            plan_for(&attrs("business"), &[], std::slice::from_ref(&mark)),
            Plan::AlreadySent(mark),
            "reached once, whatever changed since"
        );
        let mut s = spec();
        s.audience = Audience::default();
        assert_eq!(s.validate().expect_err("empty").field(), Some("audience"));
        let mut s = spec();
        s.id = CampaignId::new("Bad Id");
        assert_eq!(s.validate().expect_err("id").field(), Some("campaign_id"));
        assert!(spec().validate().is_ok());
    }
}
