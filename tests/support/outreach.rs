//! Helpers for the campaign and self-service tests: customers whose local
//! time is day or night whenever the test runs, quiet hours that end in a
//! few seconds, and waiting (polling, never sleeping) for a campaign's
//! progress.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use centralino_proto::v1 as pb;
use pb::admin_client::AdminClient;
use pb::gateway_client::GatewayClient;
use tonic::transport::Channel;

use tokio_stream::StreamExt;

use crate::{POLL_EVERY, within};

/// Seconds since midnight UTC, now.
fn utc_second_of_day() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        % 86_400
}

/// An IANA zone (`Etc/GMT±N`, a fixed offset) whose local time is now
/// within the hour `hour` (0..24): a customer there is in the middle of
/// their day (or night) whenever the test runs. (`Etc/GMT-2` is UTC+2.)
pub fn zone_at_local_hour(hour: i64) -> String {
    let utc_hour = (utc_second_of_day() / 3600) as i64;
    let mut offset = (hour - utc_hour).rem_euclid(24);
    if offset > 14 {
        offset -= 24;
    }
    match offset {
        0 => "Etc/GMT".to_owned(),
        o if o > 0 => format!("Etc/GMT-{o}"),
        o => format!("Etc/GMT+{}", -o),
    }
}

/// Quiet hours, in UTC, that began an hour ago and end `secs` seconds from
/// now ("HH:MM:SS").
pub fn quiet_hours_ending_in(secs: u64) -> pb::QuietHours {
    let now = utc_second_of_day();
    let at = |s: u64| {
        let s = s % 86_400;
        format!("{:02}:{:02}:{:02}", s / 3600, s / 60 % 60, s % 60)
    };
    pb::QuietHours {
        from: at(now + 86_400 - 3_600),
        until: at(now + secs),
    }
}

/// Polls the campaign until `settled` holds of its view (or fails after
/// `deadline`, showing the last view seen); returns that view.
pub async fn campaign_when(
    admin: &AdminClient<Channel>,
    id: &str,
    deadline: Duration,
    what: &str,
    settled: impl Fn(&pb::CampaignView) -> bool,
) -> pb::CampaignView {
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        let req = pb::GetCampaignRequest {
            campaign_id: id.to_owned(),
        };
        let last = match admin.clone().get_campaign(req).await {
            Ok(v) if settled(v.get_ref()) => return v.into_inner(),
            other => other.map(|v| v.into_inner()),
        };
        if tokio::time::Instant::now() >= give_up {
            panic!("campaign {id}: {what} not within {deadline:?}; last seen: {last:#?}");
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// The campaign's progress (it always has one).
pub fn progress(v: &pb::CampaignView) -> &pb::CampaignProgress {
    v.progress
        .as_ref()
        .expect("a campaign view has its progress")
}

/// How many notices went out on `channel`.
pub fn sent_on(v: &pb::CampaignView, channel: pb::Channel) -> u64 {
    progress(v)
        .sent_by_channel
        .iter()
        .find(|c| c.channel == channel as i32)
        .map_or(0, |c| c.count)
}

/// Attributes for a scripted customer.
pub fn attributes(
    segment: &str,
    preferred: Option<pb::Channel>,
    time_zone: &str,
    do_not_contact: Option<&[pb::Channel]>,
) -> pb::CustomerAttributes {
    pb::CustomerAttributes {
        segment: segment.into(),
        preferred_channel: preferred.map_or(0, |c| c as i32),
        time_zone: time_zone.into(),
        consent: do_not_contact.map(|d| pb::ContactConsent {
            do_not_contact: d.iter().map(|c| *c as i32).collect(),
        }),
        ..Default::default()
    }
}

/// A campaign to the consumers: their preferred channel, then SMS, then
/// e-mail; quiet hours and time zone as the test wants them.
pub fn consumer_campaign(
    id: &str,
    message: &str,
    quiet_hours: pb::QuietHours,
    time_zone: &str,
) -> pb::Campaign {
    pb::Campaign {
        campaign_id: id.into(),
        name: format!("test campaign {id}"),
        audience: Some(pb::Audience {
            segments: vec!["consumer".into()],
            ..Default::default()
        }),
        message: message.into(),
        topic: "outage".into(),
        channels: vec![pb::Channel::Sms as i32, pb::Channel::Email as i32],
        quiet_hours: Some(quiet_hours),
        time_zone: time_zone.into(),
        ..Default::default()
    }
}

/// A gateway's stream of deliveries on `channels` (all when empty).
pub async fn deliveries(
    gw: &GatewayClient<Channel>,
    id: &str,
    channels: &[pb::Channel],
) -> tonic::Streaming<pb::Delivery> {
    gw.clone()
        .deliveries(pb::DeliveriesRequest {
            gateway_id: id.into(),
            channels: channels.iter().map(|c| *c as i32).collect(),
        })
        .await
        .unwrap_or_else(|s| panic!("deliveries stream {id}: {s:?}"))
        .into_inner()
}

/// `n` customers with an e-mail address (`<name><i>@example.it`) and a
/// phone (`<phone><i>`), in `segment` and `time_zone`.
pub fn people(
    n: usize,
    name: &str,
    phone_prefix: &str,
    segment: &str,
    time_zone: &str,
) -> Vec<Person> {
    (0..n)
        .map(|i| Person {
            first: email(&format!("{name}{i}@example.it")),
            also: vec![phone(&format!("{phone_prefix}{i}"))],
            attributes: attributes(segment, None, time_zone, None),
        })
        .collect()
}

/// The customer's conversation view, by identity.
pub async fn view_of(gw: &GatewayClient<Channel>, identity: &pb::Identity) -> pb::ConversationView {
    let mut gw = gw.clone();
    gw.get_conversation(pb::GetConversationRequest {
        who: Some(pb::get_conversation_request::Who::Identity(
            identity.clone(),
        )),
    })
    .await
    .unwrap_or_else(|s| panic!("GetConversation of {identity:?}: {s:?}"))
    .into_inner()
}

pub fn identity(kind: pb::IdentityKind, address: &str) -> pb::Identity {
    pb::Identity {
        kind: kind as i32,
        address: address.into(),
    }
}
pub fn email(a: &str) -> pb::Identity {
    identity(pb::IdentityKind::Email, a)
}
pub fn phone(a: &str) -> pb::Identity {
    identity(pb::IdentityKind::Phone, a)
}

/// A scripted customer: writes once (by e-mail, or on the chat), with
/// these attributes and identities.
pub struct Person {
    pub first: pb::Identity,
    pub also: Vec<pb::Identity>,
    pub attributes: pb::CustomerAttributes,
}

impl Person {
    pub fn contact(&self) -> pb::SubmitContactRequest {
        let channel = if self.first.kind == pb::IdentityKind::ChatSession as i32 {
            pb::Channel::Chat
        } else {
            pb::Channel::Email
        };
        pb::SubmitContactRequest {
            channel: channel as i32,
            identity: Some(self.first.clone()),
            topic: "billing".into(),
            text: "a question about my bill".into(),
            attributes: Some(self.attributes.clone()),
            link_identities: self.also.clone(),
            ..Default::default()
        }
    }
}

/// The next `n` campaign notices on the stream, as (channel, address).
pub async fn notices(
    stream: &mut tonic::Streaming<pb::Delivery>,
    n: usize,
) -> Vec<(pb::Channel, String, String)> {
    let mut got = Vec::new();
    while got.len() < n {
        let d = within("a notice on the gateway's stream", stream.next())
            .await
            .expect("the stream stays open")
            .expect("a delivery");
        if d.campaign_id.is_empty() {
            continue;
        }
        assert!(d.agent_id.is_empty(), "a notice has no agent: {d:?}");
        let to = d.to.map(|i| i.address).unwrap_or_default();
        got.push((
            pb::Channel::try_from(d.channel).expect("a channel"),
            to,
            d.customer_id,
        ));
    }
    got.sort();
    got
}
