//! Proactive outbound and self-service, end to end through real gRPC on
//! one in-process node: what a supervisor would check.
//!
//! - `a_campaign_reaches_each_customer_as_consent_and_quiet_hours_allow`:
//!   eight scripted customers, counted by hand (reached on which channel,
//!   skipped for consent, unreachable, deferred for quiet hours, not
//!   targeted); the notices reach the gateway's stream and the histories;
//!   a reply joins the notice's conversation and is counted, and the agent
//!   who takes it sees the notice.
//! - `a_deferred_notice_goes_out_when_the_quiet_hours_end_with_its_follow_up`:
//!   quiet hours that end a few seconds into the test; then the notice
//!   goes out and its follow-up is offered to an agent, blended.
//! - `an_unanswered_notice_is_closed_when_its_reply_window_ends`.
//! - `self_service_shows_the_place_the_estimated_wait_and_the_resolution`.
//! - `a_bot_hands_over_with_its_transcript`.
//! - `campaign_and_hand_over_requests_are_validated`.

use centralino_core::queue::QueueConfig;
use centralino_core::{Channel, RouterConfig};
use centralino_proto::v1 as pb;
use centralino_tests::outreach::{
    Person, attributes, campaign_when, consumer_campaign, deliveries, email, identity, notices,
    phone, progress, quiet_hours_ending_in, sent_on, view_of, zone_at_local_hour,
};
use centralino_tests::{DEADLINE, Desktop, TestNode, assert_status, cmd, eventually_some, login};
use pb::history_event::Kind;
use tonic::Code;

fn router_config() -> RouterConfig {
    RouterConfig {
        // No after-contact work: a wrap-up frees capacity at once.
        acw_ms: [0; Channel::COUNT],
        ..RouterConfig::default()
    }
}

/// The default queue, and a queue for campaign follow-ups whose long SLA
/// targets rank that work behind inbound customers.
fn queues() -> Vec<QueueConfig> {
    let mut outbound = QueueConfig::open("outbound");
    outbound.sla_ms = Channel::ALL.iter().map(|c| (*c, 3_600_000)).collect();
    vec![QueueConfig::open("general"), outbound]
}

/// Each person writes, and `agent` serves and resolves them, so that they
/// are customers without an open conversation when the campaign comes.
async fn customers_served(node: &TestNode, agent: &mut Desktop, people: &[&Person]) {
    let mut gw = node.gateway();
    for p in people {
        gw.submit_contact(p.contact())
            .await
            .expect("contact accepted");
    }
    for _ in people {
        let offer = agent.next_offer().await;
        agent.command_ok(cmd::accept(&offer.offer_id)).await;
        agent.command_ok(cmd::resolve(&offer.conversation_id)).await;
    }
}

/// To the consumers: preferred channel, then SMS, then e-mail; quiet
/// 22:00-06:00 on the customer's clock (UTC when unknown).
fn campaign(id: &str) -> pb::Campaign {
    let night = pb::QuietHours {
        from: "22:00".into(),
        until: "06:00".into(),
    };
    let message = "A fibre outage may reach your area tonight; we are on it.";
    consumer_campaign(id, message, night, "UTC")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_reaches_each_customer_as_consent_and_quiet_hours_allow() {
    let node = TestNode::start(router_config(), queues()).await;
    let (mut gw, admin) = (node.gateway(), node.admin());
    let mut deliveries = deliveries(&gw, "gw-all", &[]).await;
    let (day, night) = (zone_at_local_hour(12), zone_at_local_hour(2));
    use pb::Channel::{Email, Sms, Whatsapp};
    // The population, and what the campaign (consumers; the preferred
    // channel, then SMS, then e-mail; quiet 22:00-06:00) does to each:
    let ada = Person {
        // prefers WhatsApp, has a phone: WhatsApp.
        first: email("ada@example.it"),
        also: vec![phone("+39 340 000 0001")],
        attributes: attributes("consumer", Some(Whatsapp), &day, None),
    };
    let bea = Person {
        // prefers WhatsApp but declined it: SMS, the first fallback.
        first: email("bea@example.it"),
        also: vec![phone("+39 340 000 0002")],
        attributes: attributes("consumer", Some(Whatsapp), &day, Some(&[Whatsapp])),
    };
    let cai = Person {
        // no phone, declined e-mail: skipped for consent.
        first: email("cai@example.it"),
        also: vec![],
        attributes: attributes("consumer", None, &day, Some(&[Email])),
    };
    let dan = Person {
        // only a chat session: unreachable on SMS or e-mail.
        first: identity(pb::IdentityKind::ChatSession, "web-dan"),
        also: vec![],
        attributes: attributes("consumer", None, &day, None),
    };
    let eva = Person {
        // 02:00 where she lives: deferred until 06:00 there.
        first: email("eva@example.it"),
        also: vec![],
        attributes: attributes("consumer", Some(Email), &night, None),
    };
    let fay = Person {
        // a business customer: not in the audience.
        first: email("fay@example.it"),
        also: vec![phone("+39 340 000 0006")],
        attributes: attributes("business", None, &day, None),
    };
    let gil = Person {
        // declined every channel he has an address on: consent.
        first: email("gil@example.it"),
        also: vec![phone("+39 340 000 0007")],
        attributes: attributes("consumer", Some(Sms), &day, Some(&[Sms, Email, Whatsapp])),
    };
    let hal = Person {
        // prefers e-mail: e-mail; he will reply.
        first: email("hal@example.it"),
        also: vec![],
        attributes: attributes("consumer", Some(Email), &day, None),
    };
    let everyone = [&ada, &bea, &cai, &dan, &eva, &fay, &gil, &hal];
    let mut anna = node.login(login("anna", 100)).await;
    customers_served(&node, &mut anna, &everyone).await;

    let started = admin
        .clone()
        .start_campaign(campaign("outage-north"))
        .await
        .expect("campaign starts")
        .into_inner();
    assert_eq!(started.status, pb::CampaignStatus::Delivering as i32);
    assert_eq!(started.runner_node, node.node.info.id);

    let v = campaign_when(
        &admin,
        "outage-north",
        DEADLINE,
        "every customer settled",
        |v| {
            let p = progress(v);
            p.scan_complete && p.sending == 0 && p.sent == 3
        },
    )
    .await;
    let p = progress(&v);
    assert_eq!(p.scanned, 8, "every customer met: {p:?}");
    assert_eq!(p.targeted, 7, "all but fay (business): {p:?}");
    assert_eq!(
        (p.sent, p.skipped_consent, p.skipped_unreachable),
        (3, 2, 1),
        "{p:?}"
    );
    assert_eq!(
        (p.deferred, p.deferred_total, p.failed),
        (1, 1, 0),
        "eva waits: {p:?}"
    );
    assert_eq!(
        (sent_on(&v, Whatsapp), sent_on(&v, Sms), sent_on(&v, Email)),
        (1, 1, 1),
        "ada on WhatsApp, bea on SMS, hal by e-mail: {v:?}"
    );
    assert_eq!(
        v.status,
        pb::CampaignStatus::Delivering as i32,
        "eva's notice is still to go"
    );

    // The gateway got exactly those three, at the right addresses.
    let got = notices(&mut deliveries, 3).await;
    let shown: Vec<(pb::Channel, String)> = got.iter().map(|(c, a, _)| (*c, a.clone())).collect();
    assert_eq!(
        shown,
        vec![
            (Email, "hal@example.it".to_owned()),
            (Sms, "+393400000002".to_owned()),
            (Whatsapp, "+393400000001".to_owned()),
        ]
    );

    // Hal's history: a new conversation, opened by the notice.
    let hal_view = view_of(&gw, &hal.first).await;
    assert_eq!(hal_view.state, pb::ConversationState::Notified as i32);
    match hal_view.history.as_slice() {
        [e] => match &e.kind {
            Some(Kind::Notice(n)) => {
                assert_eq!(n.campaign_id, "outage-north");
                assert_eq!(n.channel, Email as i32);
                assert_eq!(n.topic, "outage");
            }
            other => panic!("a notice, not {other:?}"),
        },
        other => panic!("one event, the notice: {other:?}"),
    }
    // Eva, deferred, has nothing new: her last conversation is the resolved one.
    let eva_view = view_of(&gw, &eva.first).await;
    assert_eq!(eva_view.state, pb::ConversationState::Resolved as i32);
    assert!(
        !eva_view
            .history
            .iter()
            .any(|e| matches!(e.kind, Some(Kind::Notice(_))))
    );

    // Hal replies by e-mail: it joins the notice's conversation, counts as
    // a reply, and anna is offered it with the notice before the reply.
    let reply = gw
        .submit_contact(pb::SubmitContactRequest {
            channel: Email as i32,
            identity: Some(hal.first.clone()),
            text: "Is my street affected?".into(),
            ..Default::default()
        })
        .await
        .expect("reply accepted")
        .into_inner();
    assert_eq!(reply.conversation_id, hal_view.conversation_id);
    assert!(reply.joined_existing, "{reply:?}");
    let offer = anna.next_offer().await;
    assert_eq!(offer.conversation_id, hal_view.conversation_id);
    let kinds: Vec<&str> = offer
        .history
        .iter()
        .map(|e| match &e.kind {
            Some(Kind::Notice(_)) => "notice",
            Some(Kind::CustomerMessage(_)) => "customer_message",
            Some(Kind::Queued(_)) => "queued",
            Some(Kind::Offered(_)) => "offered",
            _ => "other",
        })
        .collect();
    assert_eq!(kinds, ["notice", "customer_message", "queued", "offered"]);
    assert_eq!(offer.queue_id, "general", "the reply routes by topic");
    let v = campaign_when(
        &admin,
        "outage-north",
        DEADLINE,
        "hal's reply counted",
        |v| progress(v).replied == 1,
    )
    .await;
    assert_eq!(progress(&v).sent, 3, "a reply changes no other count");
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_notice_goes_out_when_the_quiet_hours_end_with_its_follow_up() {
    let node = TestNode::start(router_config(), queues()).await;
    let (mut gw, admin) = (node.gateway(), node.admin());
    let mut deliveries = deliveries(&gw, "gw-sms", &[pb::Channel::Sms]).await;
    let ivo = Person {
        first: phone("+39 340 000 0009"),
        also: vec![],
        attributes: attributes("consumer", None, "", None),
    };
    // A phone contact comes by voice here; any channel will do.
    let mut first = ivo.contact();
    first.channel = pb::Channel::Voice as i32;
    gw.submit_contact(first).await.expect("contact");
    let mut anna = node.login(login("anna", 100)).await;
    let offer = anna.next_offer().await;
    anna.command_ok(cmd::accept(&offer.offer_id)).await;
    anna.command_ok(cmd::resolve(&offer.conversation_id)).await;

    let mut c = campaign("deferred");
    c.channels = vec![pb::Channel::Sms as i32];
    // Long enough that the campaign surely meets ivo while it is quiet.
    c.quiet_hours = Some(quiet_hours_ending_in(5));
    c.follow_up = Some(pb::FollowUp {
        queue_id: "outbound".into(),
        channel: pb::Channel::Voice as i32,
    });
    admin.clone().start_campaign(c).await.expect("starts");
    let v = campaign_when(&admin, "deferred", DEADLINE, "ivo deferred", |v| {
        progress(v).scan_complete && progress(v).deferred == 1
    })
    .await;
    assert_eq!(progress(&v).sent, 0, "quiet hours: nothing sent yet");

    // The window opens: the SMS goes out, and a voice follow-up is offered
    // to anna from the outbound queue, the notice in its history.
    let got = notices(&mut deliveries, 1).await;
    assert_eq!(
        (got[0].0, got[0].1.as_str()),
        (pb::Channel::Sms, "+393400000009")
    );
    let offer = anna.next_offer().await;
    assert_eq!(offer.queue_id, "outbound");
    assert_eq!(offer.channel, pb::Channel::Voice as i32);
    assert!(
        matches!(offer.history.first().and_then(|e| e.kind.as_ref()), Some(Kind::Notice(n)) if n.campaign_id == "deferred"),
        "the follow-up carries the notice: {:?}",
        offer.history
    );
    let v = campaign_when(&admin, "deferred", DEADLINE, "the notice counted", |v| {
        progress(v).sent == 1
    })
    .await;
    let p = progress(&v);
    assert_eq!(
        (p.deferred, p.deferred_total, p.follow_ups),
        (0, 1, 1),
        "{p:?}"
    );
    assert_eq!(v.status, pb::CampaignStatus::AwaitingReplies as i32);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_notice_is_closed_when_its_reply_window_ends() {
    let node = TestNode::start(router_config(), queues()).await;
    let (mut gw, admin) = (node.gateway(), node.admin());
    let quiet = Person {
        first: email("quiet@example.it"),
        also: vec![],
        attributes: attributes("consumer", None, "", None),
    };
    let chatty = Person {
        first: email("chatty@example.it"),
        also: vec![],
        attributes: attributes("consumer", None, "", None),
    };
    let mut anna = node.login(login("anna", 100)).await;
    customers_served(&node, &mut anna, &[&quiet, &chatty]).await;
    anna.close().await;

    let mut c = campaign("short-window");
    c.quiet_hours = None;
    // Long enough for the reply below to come within it.
    c.reply_window_ms = 5_000;
    admin.clone().start_campaign(c).await.expect("starts");
    campaign_when(&admin, "short-window", DEADLINE, "both reached", |v| {
        progress(v).sent == 2
    })
    .await;
    let chatty_conv = view_of(&gw, &chatty.first).await.conversation_id;
    gw.submit_contact(pb::SubmitContactRequest {
        channel: pb::Channel::Email as i32,
        identity: Some(chatty.first.clone()),
        text: "thanks, noted".into(),
        ..Default::default()
    })
    .await
    .expect("reply");

    let v = campaign_when(&admin, "short-window", DEADLINE, "the windows end", |v| {
        v.status == pb::CampaignStatus::Finished as i32
    })
    .await;
    let p = progress(&v);
    assert_eq!((p.sent, p.replied, p.closed_unanswered), (2, 1, 1), "{p:?}");
    // The silent customer's notice conversation is closed, and says why.
    let view = view_of(&gw, &quiet.first).await;
    assert_eq!(view.state, pb::ConversationState::Resolved as i32);
    let last = view.history.last().and_then(|e| e.kind.clone());
    assert!(
        matches!(&last, Some(Kind::Resolved(r)) if r.by.starts_with("campaign short-window: no reply")),
        "{last:?}"
    );
    // The one who replied keeps it open, waiting for an agent.
    let view = view_of(&gw, &chatty.first).await;
    assert_eq!(view.conversation_id, chatty_conv);
    assert_eq!(view.state, pb::ConversationState::Queued as i32);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn self_service_shows_the_place_the_estimated_wait_and_the_resolution() {
    let node = TestNode::start(router_config(), queues()).await;
    let mut gw = node.gateway();
    let chats: Vec<pb::Identity> = (1..=5)
        .map(|i| identity(pb::IdentityKind::ChatSession, &format!("web-{i}")))
        .collect();
    for c in &chats {
        gw.submit_contact(pb::SubmitContactRequest {
            channel: pb::Channel::Chat as i32,
            identity: Some(c.clone()),
            topic: "billing".into(),
            text: "where is my refund?".into(),
            ..Default::default()
        })
        .await
        .expect("contact");
    }
    // Room for two chats: the first two are offered, three wait.
    let mut anna = node.login(login("anna", 60)).await;
    let (o1, o2) = (anna.next_offer().await, anna.next_offer().await);
    // The first two customers' offers, made in that order, travel on
    // different delivery lanes: either may reach the desktop first.
    let first = view_of(&gw, &chats[0]).await.customer_id;
    let second = view_of(&gw, &chats[1]).await.customer_id;
    let (o1, o2) = if o1.customer_id == first {
        (o1, o2)
    } else {
        (o2, o1)
    };
    assert_eq!((&o1.customer_id, &o2.customer_id), (&first, &second));
    let view = view_of(&gw, &chats[2]).await;
    assert_eq!(view.state, pb::ConversationState::Queued as i32);
    assert_eq!(view.position, 1);
    assert!(
        view.wait_estimate.is_none(),
        "no answer yet, no estimate: {view:?}"
    );
    // Two answers: now the queue has a pace.
    anna.command_ok(cmd::accept(&o1.offer_id)).await;
    anna.command_ok(cmd::accept(&o2.offer_id)).await;
    let mut last_wait = 0;
    for (i, c) in chats[2..].iter().enumerate() {
        let view = view_of(&gw, c).await;
        let position = i as u32 + 1;
        assert_eq!(view.position, position, "{view:?}");
        let e = view.wait_estimate.expect("two recent answers: an estimate");
        assert_eq!(e.position, position);
        assert_eq!(e.answers_sampled, 2);
        assert_eq!(
            e.estimated_wait_ms,
            i64::from(position) * e.mean_answer_interval_ms,
            "position x the answer interval"
        );
        assert!(
            e.estimated_wait_ms >= last_wait,
            "further back, longer wait"
        );
        last_wait = e.estimated_wait_ms;
    }
    // Anna resolves the first: asking after it, the customer sees it
    // resolved, with the whole history, from the archive.
    anna.command_ok(cmd::reply(&o1.conversation_id, "refund sent today"))
        .await;
    anna.command_ok(cmd::resolve(&o1.conversation_id)).await;
    let view = view_of(&gw, &chats[0]).await;
    assert_eq!(view.conversation_id, o1.conversation_id);
    assert_eq!(view.state, pb::ConversationState::Resolved as i32);
    let kinds: Vec<bool> = view
        .history
        .iter()
        .map(|e| matches!(e.kind, Some(Kind::AgentMessage(_))))
        .collect();
    assert!(
        kinds.contains(&true),
        "the reply is in it: {:?}",
        view.history
    );
    assert!(matches!(
        view.history.last().and_then(|e| e.kind.as_ref()),
        Some(Kind::Resolved(_))
    ));
    // Her place freed, the next customer is offered; the others move up.
    let o3 = anna.next_offer().await;
    assert_eq!(o3.customer_id, view_of(&gw, &chats[2]).await.customer_id);
    let view = eventually_some(DEADLINE, "web-5 moves up to second", || {
        let gw = gw.clone();
        let c = chats[4].clone();
        async move {
            let v = view_of(&gw, &c).await;
            (v.position == 2).then_some(v)
        }
    })
    .await;
    assert!(view.wait_estimate.is_some_and(|e| e.answers_sampled == 2));
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bot_hands_over_with_its_transcript() {
    let node = TestNode::start(router_config(), queues()).await;
    let mut gw = node.gateway();
    let chat = identity(pb::IdentityKind::ChatSession, "web-bot-1");
    let line = |from: pb::transcript_line::Speaker, text: &str, at: i64| pb::TranscriptLine {
        from: from as i32,
        text: text.into(),
        at_unix_ms: at,
    };
    use pb::transcript_line::Speaker::{Bot, Customer};
    let transcript = vec![
        line(Customer, "my bill doubled this month", 1_000),
        line(Bot, "I see two charges for March. Is that it?", 2_000),
        line(Customer, "yes, and I want a human", 3_000),
    ];
    let handed = gw
        .hand_over(pb::HandOverRequest {
            bot_id: "billing-bot".into(),
            channel: pb::Channel::Chat as i32,
            identity: Some(chat.clone()),
            topic: "billing".into(),
            summary: "double charge in March; asks for an agent".into(),
            transcript: transcript.clone(),
            sentiment: Some(-0.6),
            ..Default::default()
        })
        .await
        .expect("hand-over accepted")
        .into_inner();
    assert!(!handed.joined_existing);
    assert_eq!(handed.seq, 1, "the transcript is the first event");

    // The agent's offer carries it, lines in the order they were said.
    let mut anna = node.login(login("anna", 100)).await;
    let offer = anna.next_offer().await;
    assert_eq!(offer.conversation_id, handed.conversation_id);
    let Some(Kind::BotTranscript(t)) = offer.history.first().and_then(|e| e.kind.clone()) else {
        panic!(
            "the offer's history starts with the transcript: {:?}",
            offer.history
        );
    };
    assert_eq!(t.bot_id, "billing-bot");
    assert_eq!(t.summary, "double charge in March; asks for an agent");
    assert_eq!(t.lines, transcript);
    assert_eq!(t.sentiment, Some(-0.6));
    let why = offer.explanation.expect("explained");
    assert!(
        why.priority.is_some_and(|p| p.sentiment_boost_ms > 0),
        "the bot's sentiment raised the priority"
    );
    // The customer writes again while the agent has it: same conversation.
    anna.command_ok(cmd::accept(&offer.offer_id)).await;
    let again = gw
        .submit_contact(pb::SubmitContactRequest {
            channel: pb::Channel::Chat as i32,
            identity: Some(chat.clone()),
            text: "hello?".into(),
            ..Default::default()
        })
        .await
        .expect("contact")
        .into_inner();
    assert_eq!(again.conversation_id, handed.conversation_id);
    let view = view_of(&gw, &chat).await;
    let seqs: Vec<u64> = view.history.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>());
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn campaign_and_hand_over_requests_are_validated() {
    let node = TestNode::start(router_config(), queues()).await;
    let (mut gw, mut admin) = (node.gateway(), node.admin());
    let mut c = campaign("bad");
    c.time_zone = "Mars/Olympus".into();
    assert_status(
        admin.start_campaign(c).await,
        Code::InvalidArgument,
        "time_zone",
    );
    let mut c = campaign("bad");
    c.follow_up = Some(pb::FollowUp {
        queue_id: "nowhere".into(),
        channel: 0,
    });
    assert_status(
        admin.start_campaign(c).await,
        Code::NotFound,
        "follow_up.queue_id",
    );
    let mut c = campaign("bad");
    c.audience = Some(pb::Audience::default());
    assert_status(
        admin.start_campaign(c).await,
        Code::InvalidArgument,
        "audience",
    );
    admin
        .start_campaign(campaign("once"))
        .await
        .expect("a first start");
    assert_status(
        admin.start_campaign(campaign("once")).await,
        Code::AlreadyExists,
        "campaign_id",
    );
    assert_status(
        admin
            .get_campaign(pb::GetCampaignRequest {
                campaign_id: "never".into(),
            })
            .await,
        Code::NotFound,
        "campaign_id",
    );
    let listed = admin
        .list_campaigns(pb::ListCampaignsRequest {})
        .await
        .expect("list")
        .into_inner();
    assert_eq!(listed.campaigns.len(), 1, "only the good one: {listed:?}");

    let hand_over = |transcript| pb::HandOverRequest {
        bot_id: "bot".into(),
        channel: pb::Channel::Chat as i32,
        identity: Some(identity(pb::IdentityKind::ChatSession, "web-x")),
        transcript,
        ..Default::default()
    };
    let line = |at: i64| pb::TranscriptLine {
        from: pb::transcript_line::Speaker::Customer as i32,
        text: "hi".into(),
        at_unix_ms: at,
    };
    assert_status(
        gw.hand_over(hand_over(vec![line(5), line(4)])).await,
        Code::InvalidArgument,
        "transcript[1].at_unix_ms",
    );
    assert_status(
        gw.hand_over(hand_over(vec![])).await,
        Code::InvalidArgument,
        "transcript",
    );
    let mut bad_tz = Person {
        first: email("tz@example.it"),
        also: vec![],
        attributes: attributes("consumer", None, "Europe/Atlantis", None),
    }
    .contact();
    assert_status(
        gw.submit_contact(bad_tz.clone()).await,
        Code::InvalidArgument,
        "attributes.time_zone",
    );
    bad_tz.attributes = Some(attributes("consumer", None, "Europe/Rome", None));
    gw.submit_contact(bad_tz)
        .await
        .expect("a good zone is taken");
    node.shutdown().await;
}
