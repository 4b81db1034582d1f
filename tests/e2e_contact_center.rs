//! The contact-center features a supervisor checks, end to end through real
//! gRPC on one in-process node: who got the offer and why, where customers
//! wait, what the history holds, and KPIs counted by hand.
//!
//! - `routing_rules_choose_the_queue_and_the_priority_by_segment_and_contract`
//! - `an_angry_customer_is_served_first_and_the_explanation_says_why`
//! - `a_returning_customer_goes_to_the_last_agent_on_any_channel_if_present`
//! - `a_callback_keeps_the_place_and_is_offered_on_the_chosen_channel_and_time`
//! - `a_transfer_carries_the_history_and_never_drops_the_customer`
//! - `after_contact_work_and_the_occupancy_cap_rest_the_agent`
//! - `kpis_of_a_scripted_morning_match_the_hand_count`
//! - `an_agent_who_leaves_with_an_offer_holds_up_nobody`

use std::time::Duration;

use centralino_core::occupancy::OccupancyCap;
use centralino_core::queue::QueueConfig;
use centralino_core::{Channel, RouterConfig};
use centralino_proto::v1 as pb;
use centralino_tests::outreach::{identity, phone, view_of};
use centralino_tests::{DEADLINE, TestNode, assert_status, cmd, describe, eventually_some, login};
use pb::agent_command::{self as ac, Command};
use pb::agent_event::Event;
use pb::history_event::Kind;
use tonic::Code;

fn router_config() -> RouterConfig {
    RouterConfig {
        // No after-contact work unless a test asks for it.
        acw_ms: [0; Channel::COUNT],
        ..RouterConfig::default()
    }
}

fn chat(session: &str) -> pb::Identity {
    identity(pb::IdentityKind::ChatSession, session)
}

fn contact(channel: pb::Channel, who: &pb::Identity, topic: &str) -> pb::SubmitContactRequest {
    pb::SubmitContactRequest {
        channel: channel as i32,
        identity: Some(who.clone()),
        topic: topic.into(),
        text: format!("hello on {channel:?} about {topic}"),
        ..Default::default()
    }
}

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn transfer_to_queue(conversation_id: &str, queue: &str, note: &str) -> Command {
    Command::Transfer(ac::Transfer {
        conversation_id: conversation_id.into(),
        to: Some(ac::transfer::To::QueueId(queue.into())),
        note: note.into(),
    })
}

fn transfer_to_agent(conversation_id: &str, agent: &str, note: &str) -> Command {
    Command::Transfer(ac::Transfer {
        conversation_id: conversation_id.into(),
        to: Some(ac::transfer::To::AgentId(agent.into())),
        note: note.into(),
    })
}

async fn kpis(node: &TestNode) -> pb::KpiReport {
    node.admin()
        .get_kpis(pb::GetKpisRequest {})
        .await
        .expect("GetKpis")
        .into_inner()
}

async fn agent_view(node: &TestNode, agent: &str) -> pb::AgentView {
    node.admin()
        .list_agents(pb::ListAgentsRequest {})
        .await
        .expect("ListAgents")
        .into_inner()
        .agents
        .into_iter()
        .find(|a| a.agent_id == agent)
        .unwrap_or_else(|| panic!("{agent} is not listed"))
}

/// Waits until the customer's conversation is queued (routing has seen it).
async fn queued(
    gw: &pb::gateway_client::GatewayClient<tonic::transport::Channel>,
    who: &pb::Identity,
) -> pb::ConversationView {
    eventually_some(DEADLINE, "the conversation to be queued", || {
        let (gw, who) = (gw.clone(), who.clone());
        async move {
            let v = view_of(&gw, &who).await;
            (v.state == pb::ConversationState::Queued as i32 && v.position > 0).then_some(v)
        }
    })
    .await
}

fn rule(name: &str) -> pb::RoutingRule {
    pb::RoutingRule {
        name: name.into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_rules_choose_the_queue_and_the_priority_by_segment_and_contract() {
    let queues = vec![
        QueueConfig::open("general"),
        QueueConfig::open("business_it"),
    ];
    let node = TestNode::start(router_config(), queues).await;
    let mut admin = node.admin();
    // Rules as data: Italian business customers to their own queue; a
    // premium contract served 40 s earlier wherever it goes.
    let business = pb::RoutingRule {
        segments: vec!["business".into()],
        languages: vec!["it".into()],
        queue_id: "business_it".into(),
        ..rule("business-italian")
    };
    let premium = pb::RoutingRule {
        contracts: vec!["premium".into()],
        priority_boost_ms: 40_000,
        ..rule("premium")
    };
    // Mistakes are refused, naming the field and the fix.
    let nowhere = pb::RoutingRule {
        queue_id: "nowhere".into(),
        ..business.clone()
    };
    let s = assert_status(
        admin
            .set_routing_rules(pb::RoutingRules {
                rules: vec![nowhere],
            })
            .await,
        Code::InvalidArgument,
        "rules.queue",
    );
    assert!(s.message().contains("define the queue first"), "{s:?}");
    let negative = pb::RoutingRule {
        priority_boost_ms: -1,
        ..premium.clone()
    };
    assert_status(
        admin
            .set_routing_rules(pb::RoutingRules {
                rules: vec![negative],
            })
            .await,
        Code::InvalidArgument,
        "rules.priority_boost_ms",
    );
    let rules = pb::RoutingRules {
        rules: vec![business, premium],
    };
    admin
        .set_routing_rules(rules.clone())
        .await
        .expect("valid rules");
    let read = admin
        .get_routing_rules(pb::GetRoutingRulesRequest {})
        .await
        .expect("GetRoutingRules")
        .into_inner();
    assert_eq!(read, rules);

    // Nobody is logged in: three callers wait.
    let mut gw = node.gateway();
    let (plain, italian, vip) = (phone("+390001"), phone("+390002"), phone("+390003"));
    let attrs = |segment: &str, language: &str, contract: &str| pb::CustomerAttributes {
        segment: segment.into(),
        language: language.into(),
        contract: contract.into(),
        ..Default::default()
    };
    let with =
        |req: pb::SubmitContactRequest, a: pb::CustomerAttributes| pb::SubmitContactRequest {
            attributes: Some(a),
            ..req
        };
    gw.submit_contact(with(
        contact(pb::Channel::Voice, &plain, "billing"),
        attrs("consumer", "it", ""),
    ))
    .await
    .expect("plain caller");
    queued(&gw, &plain).await;
    gw.submit_contact(with(
        contact(pb::Channel::Voice, &italian, "billing"),
        attrs("Business", "IT", ""),
    ))
    .await
    .expect("business caller");
    gw.submit_contact(with(
        contact(pb::Channel::Voice, &vip, "billing"),
        attrs("consumer", "en", "premium"),
    ))
    .await
    .expect("premium caller");
    let it = queued(&gw, &italian).await;
    assert_eq!((it.queue_id.as_str(), it.position), ("business_it", 1));
    // The premium caller came last but is first in line in "general".
    let v = queued(&gw, &vip).await;
    assert_eq!((v.queue_id.as_str(), v.position), ("general", 1));
    assert_eq!(view_of(&gw, &plain).await.position, 2);

    // The agent who logs in gets the premium caller, and the explanation
    // says which rule raised it and by how much.
    let mut anna = node.login(login("anna", 100)).await;
    let offer = anna.next_offer().await;
    assert_eq!(offer.customer_id, v.customer_id);
    let e = offer.explanation.expect("an explanation");
    assert_eq!(e.routing_rule, "premium");
    assert_eq!(e.priority.as_ref().map(|p| p.rule_boost_ms), Some(40_000));
    assert!(
        e.summary.contains("rule premium +40000 ms"),
        "{}",
        e.summary
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_angry_customer_is_served_first_and_the_explanation_says_why() {
    let node = TestNode::start(router_config(), vec![QueueConfig::open("general")]).await;
    let mut gw = node.gateway();
    let (calm, angry) = (chat("web-calm"), chat("web-angry"));
    gw.submit_contact(pb::SubmitContactRequest {
        sentiment: Some(0.3),
        ..contact(pb::Channel::Chat, &calm, "billing")
    })
    .await
    .expect("calm customer");
    queued(&gw, &calm).await;
    gw.submit_contact(pb::SubmitContactRequest {
        sentiment: Some(-0.9),
        ..contact(pb::Channel::Chat, &angry, "billing")
    })
    .await
    .expect("angry customer");
    // The angry one, second to arrive, is first in line.
    assert_eq!(queued(&gw, &angry).await.position, 1);
    assert_eq!(view_of(&gw, &calm).await.position, 2);
    // Room for one chat: the offer is the angry customer's.
    let mut anna = node.login(login("anna", 30)).await;
    let offer = anna.next_offer().await;
    assert_eq!(offer.customer_id, view_of(&gw, &angry).await.customer_id);
    let e = offer.explanation.expect("an explanation");
    // 60 s of boost at -1.0; -0.9 earns 54 s.
    assert_eq!(
        e.priority.as_ref().map(|p| p.sentiment_boost_ms),
        Some(54_000)
    );
    assert!(
        e.summary.contains("upset customer +54000 ms"),
        "{}",
        e.summary
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_returning_customer_goes_to_the_last_agent_on_any_channel_if_present() {
    let node = TestNode::start(router_config(), vec![QueueConfig::open("general")]).await;
    let mut gw = node.gateway();
    let mut anna = node.login(login("anna", 100)).await;
    let mut bruno = node.login(login("bruno", 100)).await;
    // Giulia chats; anna, idle longest, serves her and resolves.
    let giulia_chat = chat("web-giulia");
    gw.submit_contact(contact(pb::Channel::Chat, &giulia_chat, "billing"))
        .await
        .expect("chat");
    let first = anna.next_offer().await;
    anna.command_ok(cmd::accept(&first.offer_id)).await;
    anna.command_ok(cmd::reply(&first.conversation_id, "done, anything else?"))
        .await;
    anna.command_ok(cmd::resolve(&first.conversation_id)).await;
    // She calls the next day from her phone (the IVR verified her chat
    // session): bruno has been idle longer, yet the call goes to anna,
    // her last agent.
    let giulia_phone = phone("+39333000111");
    gw.submit_contact(pb::SubmitContactRequest {
        link_identities: vec![giulia_chat.clone()],
        ..contact(pb::Channel::Voice, &giulia_phone, "billing")
    })
    .await
    .expect("call");
    let again = anna.next_offer().await;
    assert_eq!(again.customer_id, first.customer_id);
    assert_eq!(again.channel, pb::Channel::Voice as i32);
    let e = again.explanation.as_ref().expect("an explanation");
    assert_eq!(e.rule, "continuity");
    anna.command_ok(cmd::accept(&again.offer_id)).await;
    anna.command_ok(cmd::resolve(&again.conversation_id)).await;
    // Away, anna is not present: the next return goes by the queue's
    // strategy, to bruno.
    anna.command_ok(cmd::set_state(pb::AgentState::Away)).await;
    gw.submit_contact(contact(pb::Channel::Chat, &giulia_chat, "billing"))
        .await
        .expect("chat again");
    let third = bruno.next_offer().await;
    assert_eq!(third.customer_id, first.customer_id);
    assert_eq!(
        third.explanation.as_ref().map(|e| e.rule.as_str()),
        Some("longest_idle")
    );
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_callback_keeps_the_place_and_is_offered_on_the_chosen_channel_and_time() {
    let node = TestNode::start(router_config(), vec![QueueConfig::open("general")]).await;
    let mut gw = node.gateway();
    let people: Vec<pb::Identity> = (1..=3).map(|i| chat(&format!("web-cb-{i}"))).collect();
    for p in &people {
        gw.submit_contact(contact(pb::Channel::Chat, p, "billing"))
            .await
            .expect("chat");
        queued(&gw, p).await;
    }
    // The first in line would rather be called back: same place, voice.
    let number = phone("+39333123456");
    gw.request_callback(pb::RequestCallbackRequest {
        identity: Some(people[0].clone()),
        channel: pb::Channel::Voice as i32,
        callback_to: Some(number.clone()),
        not_before_unix_ms: 0,
    })
    .await
    .expect("callback");
    let v = view_of(&gw, &people[0]).await;
    assert_eq!(
        (v.position, v.channel),
        (1, pb::Channel::Voice as i32),
        "keeps the place, now on voice"
    );
    assert!(
        v.history
            .iter()
            .any(|h| matches!(&h.kind, Some(Kind::CallbackRequested(c)) if c.identity.as_ref() == Some(&number)))
    );
    // The second picks a time three seconds from now.
    let at = unix_ms() + 3_000;
    gw.request_callback(pb::RequestCallbackRequest {
        identity: Some(people[1].clone()),
        channel: pb::Channel::Voice as i32,
        callback_to: None,
        not_before_unix_ms: at,
    })
    .await
    .expect("scheduled callback");
    // An agent logs in: the callback first, on voice.
    let mut anna = node.login(login("anna", 100)).await;
    let o1 = anna.next_offer().await;
    assert_eq!(o1.customer_id, v.customer_id);
    assert_eq!(o1.channel, pb::Channel::Voice as i32);
    anna.command_ok(cmd::accept(&o1.offer_id)).await;
    anna.command_ok(cmd::resolve(&o1.conversation_id)).await;
    // Then the third (the scheduled one is not due yet), on chat.
    let o2 = anna.next_offer().await;
    assert_eq!(o2.customer_id, view_of(&gw, &people[2]).await.customer_id);
    assert!(unix_ms() < at, "the machine is too slow for this script");
    anna.command_ok(cmd::accept(&o2.offer_id)).await;
    anna.command_ok(cmd::resolve(&o2.conversation_id)).await;
    // The scheduled callback is offered at its time, not before, on voice.
    let o3 = anna.next_offer().await;
    let received = unix_ms();
    assert!(received >= at, "offered {} ms early", at - received);
    assert_eq!(o3.customer_id, view_of(&gw, &people[1]).await.customer_id);
    assert_eq!(o3.channel, pb::Channel::Voice as i32);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transfer_carries_the_history_and_never_drops_the_customer() {
    let mut care = QueueConfig::open("care");
    care.required = vec![centralino_core::Skill::new("care", 2)];
    let node = TestNode::start(router_config(), vec![QueueConfig::open("general"), care]).await;
    let mut gw = node.gateway();
    let mut anna = node.login(login("anna", 100)).await;
    let marco = chat("web-marco");
    gw.submit_contact(contact(pb::Channel::Chat, &marco, "billing"))
        .await
        .expect("chat");
    let o = anna.next_offer().await;
    anna.command_ok(cmd::accept(&o.offer_id)).await;
    anna.command_ok(cmd::reply(&o.conversation_id, "let me find a colleague"))
        .await;
    // To "care", where nobody qualifies yet: the customer is not dropped,
    // but waits there, first in line.
    anna.command_ok(transfer_to_queue(
        &o.conversation_id,
        "care",
        "wants to cancel",
    ))
    .await;
    let v = queued(&gw, &marco).await;
    assert_eq!((v.queue_id.as_str(), v.position), ("care", 1));
    let k = kpis(&node).await;
    let general = k
        .queues
        .iter()
        .find(|q| q.key == "general")
        .expect("general");
    assert_eq!((general.transfers, general.answered), (1, 1));
    // A care agent logs in and gets it with the whole history: the chat,
    // anna's reply and the transfer with its note.
    let mut carla = node
        .login(pb::agent_command::Login {
            skills: vec![pb::Skill {
                name: "care".into(),
                proficiency: 3,
            }],
            ..login("carla", 100)
        })
        .await;
    let o2 = carla.next_offer().await;
    assert_eq!(
        (o2.conversation_id.as_str(), o2.queue_id.as_str()),
        (o.conversation_id.as_str(), "care")
    );
    let history: Vec<String> = o2.history.iter().map(describe).collect();
    assert!(
        history
            .iter()
            .any(|h| h.contains("let me find a colleague"))
            && o2.history.iter().any(|h| matches!(
                &h.kind,
                Some(Kind::Transferred(t)) if t.to_queue_id == "care" && t.note == "wants to cancel"
            )),
        "{history:#?}"
    );
    carla.command_ok(cmd::accept(&o2.offer_id)).await;
    // To a named agent who is busy: it waits for her, then reaches her.
    carla
        .command_ok(transfer_to_agent(
            &o2.conversation_id,
            "anna",
            "back to you",
        ))
        .await;
    let o3 = anna.next_offer().await;
    assert_eq!(o3.conversation_id, o.conversation_id);
    assert_eq!(
        o3.explanation.as_ref().map(|e| e.rule.as_str()),
        Some("direct_transfer")
    );
    anna.command_ok(cmd::accept(&o3.offer_id)).await;
    anna.command_ok(cmd::resolve(&o3.conversation_id)).await;
    let k = kpis(&node).await;
    let t = k.total.expect("total");
    // One contact, answered once, transferred twice, resolved once, and
    // not at first contact.
    assert_eq!(
        (
            t.answered,
            t.transfers,
            t.resolved,
            t.resolved_first_contact
        ),
        (1, 2, 1, 0)
    );
    assert_eq!(t.transfer_rate, 2.0);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_contact_work_and_the_occupancy_cap_rest_the_agent() {
    // Chat has 1.5 s of after-contact work; an agent busy over half of a
    // 4 s window rests.
    let mut cfg = router_config();
    cfg.acw_ms[Channel::Chat.index()] = 1_500;
    cfg.occupancy_cap = Some(OccupancyCap {
        max: 0.5,
        window_ms: 4_000,
    });
    let node = TestNode::start(cfg, vec![QueueConfig::open("general")]).await;
    let mut gw = node.gateway();
    let mut anna = node.login(login("anna", 30)).await;
    let (first, second) = (chat("web-occ-1"), chat("web-occ-2"));
    gw.submit_contact(contact(pb::Channel::Chat, &first, "billing"))
        .await
        .expect("chat");
    let o = anna.next_offer().await;
    anna.command_ok(cmd::accept(&o.offer_id)).await;
    // Busy for over 2 s of the last 4: resting.
    let state_is = |s: pb::AgentState| move |e: &Event| matches!(e, Event::StateChanged(c) if c.state == s as i32);
    anna.next_event_matching("resting", state_is(pb::AgentState::Resting))
        .await;
    assert!(agent_view(&node, "anna").await.resting);
    // Wrap-up starts 1.5 s of after-contact work; then, still over the
    // cap, she rests with nothing on her desk.
    anna.command_ok(cmd::wrap_up(&o.conversation_id, "solved"))
        .await;
    anna.next_event_matching("after-contact work", state_is(pb::AgentState::WrapUp))
        .await;
    let rested = anna
        .next_event_matching("resting again", state_is(pb::AgentState::Resting))
        .await;
    assert!(matches!(rested, Event::StateChanged(c) if c.load == 0));
    // A chat comes: it waits while she rests, although she has room.
    gw.submit_contact(contact(pb::Channel::Chat, &second, "billing"))
        .await
        .expect("chat");
    let v = queued(&gw, &second).await;
    let view = agent_view(&node, "anna").await;
    assert!(view.resting && view.load == 0, "{view:?}");
    assert_eq!(v.state, pb::ConversationState::Queued as i32);
    // Once her busy share of the window is back to half, she gets it.
    let o2 = anna.next_offer().await;
    assert_eq!(o2.customer_id, v.customer_id);
    assert!(!agent_view(&node, "anna").await.resting);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kpis_of_a_scripted_morning_match_the_hand_count() {
    let node = TestNode::start(router_config(), vec![QueueConfig::open("general")]).await;
    let mut gw = node.gateway();
    // Room for one chat each.
    let mut anna = node.login(login("anna", 30)).await;
    let (a, b, c) = (chat("web-kpi-a"), chat("web-kpi-b"), chat("web-kpi-c"));
    // A: offered to anna at once, answered, resolved by her (first contact).
    gw.submit_contact(contact(pb::Channel::Chat, &a, "billing"))
        .await
        .expect("a");
    let oa = anna.next_offer().await;
    anna.command_ok(cmd::accept(&oa.offer_id)).await;
    // B: waits (anna is full) and leaves: an abandon.
    gw.submit_contact(contact(pb::Channel::Chat, &b, "billing"))
        .await
        .expect("b");
    queued(&gw, &b).await;
    let left = gw
        .abandon(pb::AbandonRequest {
            identity: Some(b.clone()),
            channel: pb::Channel::Chat as i32,
        })
        .await
        .expect("abandon")
        .into_inner();
    let vb = view_of(&gw, &b).await;
    assert_eq!(vb.conversation_id, left.conversation_id);
    assert_eq!(vb.state, pb::ConversationState::Abandoned as i32);
    assert!(matches!(
        vb.history.last().and_then(|e| e.kind.as_ref()),
        Some(Kind::Abandoned(_))
    ));
    // An assigned conversation is not the customer's to abandon; nor is a
    // stranger's.
    assert_status(
        gw.abandon(pb::AbandonRequest {
            identity: Some(a.clone()),
            channel: pb::Channel::Chat as i32,
        })
        .await,
        Code::FailedPrecondition,
        "identity",
    );
    assert_status(
        gw.abandon(pb::AbandonRequest {
            identity: Some(chat("web-nobody")),
            channel: pb::Channel::Chat as i32,
        })
        .await,
        Code::NotFound,
        "identity",
    );
    anna.command_ok(cmd::resolve(&oa.conversation_id)).await;
    // C: anna answers, then hands it to bruno, who resolves it.
    gw.submit_contact(contact(pb::Channel::Chat, &c, "billing"))
        .await
        .expect("c");
    let oc = anna.next_offer().await;
    anna.command_ok(cmd::accept(&oc.offer_id)).await;
    let mut bruno = node.login(login("bruno", 30)).await;
    anna.command_ok(transfer_to_agent(&oc.conversation_id, "bruno", "for you"))
        .await;
    let ob = bruno.next_offer().await;
    bruno.command_ok(cmd::accept(&ob.offer_id)).await;
    bruno.command_ok(cmd::resolve(&ob.conversation_id)).await;

    // By hand: 3 contacts entered routing; A and C answered (C once, though
    // two agents took it), both well within chat's 60 s target; B
    // abandoned. Service level counts the abandon against it: 2 / (2 + 1).
    // One transfer over 2 answered; 2 resolved, 1 at first contact.
    let t = eventually_some(DEADLINE, "both resolutions counted", || {
        let node = &node;
        async move {
            let t = kpis(node).await.total.expect("total");
            (t.resolved == 2).then_some(t)
        }
    })
    .await;
    assert_eq!(
        (t.offered, t.answered, t.answered_within_sla, t.abandoned),
        (3, 2, 2, 1)
    );
    assert!((t.service_level - 2.0 / 3.0).abs() < 1e-9, "{t:?}");
    assert!((t.abandonment_rate - 1.0 / 3.0).abs() < 1e-9, "{t:?}");
    assert_eq!((t.transfers, t.transfer_rate), (1, 0.5));
    assert_eq!(
        (t.resolved_first_contact, t.first_contact_resolution),
        (1, 0.5)
    );
    // Handled twice (A by anna, C by bruno); occupancy is busy over
    // logged-in time, so between nothing and all of it.
    assert!(
        t.asa_ms < Duration::from_secs(5).as_millis() as f64,
        "{t:?}"
    );
    assert!(t.occupancy > 0.0 && t.occupancy <= 1.0, "{t:?}");
    let k = kpis(&node).await;
    let agent = |id: &str| k.agents.iter().find(|a| a.key == id).cloned().expect(id);
    let (anna_k, bruno_k) = (agent("anna"), agent("bruno"));
    assert_eq!(
        (anna_k.answered, anna_k.transfers, anna_k.resolved),
        (2, 1, 1)
    );
    assert_eq!(
        (bruno_k.answered, bruno_k.transfers, bruno_k.resolved),
        (0, 0, 1),
        "bruno took over a contact already answered"
    );
    assert!(anna_k.staffed_ms >= anna_k.busy_ms && anna_k.busy_ms > 0);
    let chat_k = k
        .channels
        .iter()
        .find(|c| c.key == "chat")
        .expect("chat row");
    assert_eq!(
        (chat_k.offered, chat_k.answered, chat_k.abandoned),
        (3, 2, 1)
    );
    node.shutdown().await;
}

/// The delivery lane an agent's desktop events take: FNV-1a of the agent
/// id over the hub's lanes, as `Hub::post_desktop` picks it.
fn lane_of(agent: &str) -> u64 {
    let h = agent.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    h % centralino_actors::hub::LANES as u64
}

/// An agent logs out while an offer waits on their desktop: the offer's
/// revocation is for a desktop that is gone. It is dropped, and the next
/// offer to another agent on the same delivery lane arrives at once (it
/// used to wait a minute behind the revocation's retries).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_who_leaves_with_an_offer_holds_up_nobody() {
    let node = TestNode::start(router_config(), vec![QueueConfig::open("general")]).await;
    let mut gw = node.gateway();
    let mut anna = node.login(login("anna", 100)).await;
    gw.submit_contact(contact(pb::Channel::Voice, &phone("+390009001"), "billing"))
        .await
        .expect("call");
    anna.next_offer().await;
    anna.close().await;
    let colleague = (0..)
        .map(|i| format!("bruno-{i}"))
        .find(|b| lane_of(b) == lane_of("anna"))
        .expect("some name shares anna's lane");
    let mut bruno = node.login(login(&colleague, 100)).await;
    // The call anna left goes back to the queue and to bruno, through the
    // lane anna's revocation took.
    let offer = bruno.next_offer().await;
    assert_eq!(offer.channel, pb::Channel::Voice as i32);
    node.shutdown().await;
}
