//! The simulation's proactive outbound and bots, through the public API
//! like everything else in `dev`:
//!
//! - customers carry contact preferences (segment, preferred channel, time
//!   zone, consent), as a CRM-fed gateway would send them;
//! - some chat customers talk to a bot first, which hands them over to a
//!   human with its transcript ([`hand_over`]);
//! - [`CAMPAIGN_AFTER`] into the run, an incident notice goes to every
//!   consumer, on their preferred channel, respecting consent and quiet
//!   hours on their own clock, with follow-up work for agents in the
//!   `outbound` queue; some customers reply to it ([`maybe_reply`]);
//! - the live report shows the campaign's counts and the hand-overs.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use centralino_proto::v1 as pb;
use pb::admin_client::AdminClient;
use pb::gateway_client::GatewayClient;
use rand::Rng;
use rand::rngs::StdRng;
use tokio::sync::watch;
use tonic::transport::Channel as Conn;

/// When the simulation starts its incident campaign.
pub const CAMPAIGN_AFTER: Duration = Duration::from_secs(15);
/// The campaign's id.
pub const CAMPAIGN: &str = "dev-incident";
/// Share of new chat customers who talk to a bot first.
const BOT_FIRST: f64 = 0.25;
/// Share of notified customers who reply.
const REPLY: f64 = 0.3;

/// What the report shows besides the KPIs.
#[derive(Default)]
pub struct Counters {
    pub hand_overs: AtomicU64,
}

/// A customer's profile as the gateway knows it: segment, preferred
/// channel, time zone, consent.
pub fn profile(rng: &mut StdRng, tier: &str) -> pb::CustomerAttributes {
    let segment = if rng.random_bool(0.2) {
        "business"
    } else {
        "consumer"
    };
    let preferred = match rng.random_range(0..10) {
        0..=2 => pb::Channel::Sms,
        3..=5 => pb::Channel::Email,
        6 | 7 => pb::Channel::Whatsapp,
        _ => pb::Channel::Unspecified,
    };
    let time_zone = match rng.random_range(0..10) {
        0 => "America/New_York",
        1 => "Asia/Tokyo",
        _ => "Europe/Rome",
    };
    let declined: Vec<i32> = match rng.random_range(0..20) {
        0 => vec![
            pb::Channel::Sms as i32,
            pb::Channel::Email as i32,
            pb::Channel::Whatsapp as i32,
        ],
        1 | 2 => vec![preferred as i32]
            .into_iter()
            .filter(|c| *c != 0)
            .collect(),
        _ => vec![],
    };
    pb::CustomerAttributes {
        tier: tier.into(),
        segment: segment.into(),
        language: "it".into(),
        // Gold customers hold the premium contract the dev rules boost.
        contract: if tier == "gold" {
            "premium"
        } else {
            "standard"
        }
        .into(),
        preferred_channel: preferred as i32,
        time_zone: time_zone.into(),
        consent: Some(pb::ContactConsent {
            do_not_contact: declined,
        }),
    }
}

/// Whether this new chat customer talks to the bot first.
pub fn bot_first(rng: &mut StdRng) -> bool {
    rng.random_bool(BOT_FIRST)
}

/// The bot hands a chat customer over to a human, with what was said.
pub async fn hand_over(
    gw: &mut GatewayClient<Conn>,
    chat: pb::Identity,
    topic: &str,
    attributes: pb::CustomerAttributes,
    counters: &Counters,
) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let line = |from: pb::transcript_line::Speaker, text: String, ago: i64| pb::TranscriptLine {
        from: from as i32,
        text,
        at_unix_ms: now - ago,
    };
    use pb::transcript_line::Speaker::{Bot, Customer};
    let req = pb::HandOverRequest {
        bot_id: "dev-assistant".into(),
        channel: pb::Channel::Chat as i32,
        identity: Some(chat),
        topic: topic.into(),
        summary: format!("could not settle a {topic} question; the customer asked for a person"),
        transcript: vec![
            line(Customer, format!("I have a problem with {topic}"), 40_000),
            line(Bot, "I can help: what exactly happened?".into(), 30_000),
            line(
                Customer,
                "it's complicated, I'd rather talk to someone".into(),
                10_000,
            ),
        ],
        attributes: Some(attributes),
        ..Default::default()
    };
    match gw.hand_over(req).await {
        Ok(_) => {
            counters.hand_overs.fetch_add(1, Ordering::Relaxed);
        }
        Err(e) => tracing::warn!(error = %e, "simulated hand-over refused"),
    }
}

/// Starts the incident campaign once the run has customers.
pub async fn campaign(conn: Conn, mut stop: watch::Receiver<bool>) {
    tokio::select! {
        _ = stop.changed() => return,
        () = tokio::time::sleep(CAMPAIGN_AFTER) => {}
    }
    let req = pb::Campaign {
        campaign_id: CAMPAIGN.into(),
        name: "Fibre incident in the north".into(),
        audience: Some(pb::Audience {
            segments: vec!["consumer".into()],
            ..Default::default()
        }),
        message: "A fibre incident may affect your line today; our technicians are on it.".into(),
        topic: "outage".into(),
        channels: vec![
            pb::Channel::Sms as i32,
            pb::Channel::Email as i32,
            pb::Channel::Whatsapp as i32,
        ],
        quiet_hours: Some(pb::QuietHours {
            from: "21:00".into(),
            until: "08:00".into(),
        }),
        time_zone: "Europe/Rome".into(),
        follow_up: Some(pb::FollowUp {
            queue_id: "outbound".into(),
            channel: 0,
        }),
        ..Default::default()
    };
    match AdminClient::new(conn).start_campaign(req).await {
        Ok(_) => println!(
            "simulation: campaign {CAMPAIGN} started (an incident notice to every consumer)"
        ),
        Err(e) => tracing::warn!(error = %e, "simulated campaign refused"),
    }
}

/// Some customers answer the notice, on the channel it came by.
pub fn maybe_reply(conn: &Conn, d: &pb::Delivery, rng: &mut StdRng) {
    if d.campaign_id.is_empty() || !rng.random_bool(REPLY) {
        return;
    }
    let mut gw = GatewayClient::new(conn.clone());
    let req = pb::SubmitContactRequest {
        channel: d.channel,
        identity: d.to.clone(),
        text: "Thanks for the notice: is my line affected?".into(),
        ..Default::default()
    };
    let wait = Duration::from_millis(rng.random_range(500..5_000));
    tokio::spawn(async move {
        tokio::time::sleep(wait).await;
        if let Err(e) = gw.submit_contact(req).await {
            tracing::warn!(error = %e, "simulated reply to a notice refused");
        }
    });
}

/// The report's outbound part: the campaign's counts and the hand-overs.
pub async fn report_line(admin: &mut AdminClient<Conn>, counters: &Arc<Counters>) -> String {
    let bots = counters.hand_overs.load(Ordering::Relaxed);
    let req = pb::GetCampaignRequest {
        campaign_id: CAMPAIGN.into(),
    };
    let Ok(v) = admin.get_campaign(req).await else {
        return format!(" | bot hand-overs {bots}");
    };
    let Some(p) = v.into_inner().progress else {
        return format!(" | bot hand-overs {bots}");
    };
    let by: Vec<String> = p
        .sent_by_channel
        .iter()
        .map(|c| {
            let name = pb::Channel::try_from(c.channel).map_or("?", |c| c.as_str_name());
            format!(
                "{} {}",
                name.trim_start_matches("CHANNEL_").to_lowercase(),
                c.count
            )
        })
        .collect();
    format!(
        " | bot hand-overs {bots} | campaign sent {} ({}) consent-skipped {} deferred {} replied {} follow-ups {}",
        p.sent,
        by.join(", "),
        p.skipped_consent,
        p.deferred,
        p.replied,
        p.follow_ups
    )
}
