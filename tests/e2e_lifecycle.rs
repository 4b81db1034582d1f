//! End to end, through real gRPC only: a gateway and agent desktops against
//! a real node.
//!
//! `a_contact_lives_from_chat_to_voice_to_resolution` follows one customer
//! from a web chat, through a phone call that joins the same conversation,
//! across a rejected offer and an unanswered one, to an accepted offer, a
//! reply delivered to the voice gateway, wrap-up and resolution.
//! `malformed_requests_are_refused_naming_the_field` checks that bad input
//! gets the right status naming the field at fault and harms nothing.

use centralino_core::history::EventKind;
use centralino_core::queue::QueueConfig;
use centralino_core::{Channel, ConversationId, RouterConfig};
use centralino_proto::v1 as pb;
use centralino_tests::{
    DEADLINE, Desktop, TestNode, assert_result, assert_status, cmd, describe, eventually,
    eventually_some, login, within,
};
use pb::agent_event::Event;
use pb::get_conversation_request::Who;
use pb::history_event::Kind;
use tokio_stream::StreamExt;
use tonic::Code;

/// An unanswered offer moves on after this long.
const OFFER_TIMEOUT_MS: u64 = 1_500;
/// A rejecting agent is not offered the same conversation for this long:
/// longer than the offer timeout, so the agent who rejected is still
/// declined when the other agent's offer times out, and the conversation
/// waits until this expires before it goes back to that agent.
const DECLINE_TTL_MS: u64 = 2_500;

const CHAT_TEXT: &str = "Ciao, la mia bolletta di marzo è raddoppiata: potete controllare?";
const IVR_TEXT: &str = "IVR: il cliente chiama per la bolletta di marzo";
const REPLY_TEXT: &str =
    "Buongiorno, vedo la sua chat: la bolletta di marzo include un conguaglio, le spiego.";

fn router_config() -> RouterConfig {
    RouterConfig {
        offer_timeout_ms: OFFER_TIMEOUT_MS,
        decline_ttl_ms: DECLINE_TTL_MS,
        // No after-contact work: wrap-up frees capacity at once.
        acw_ms: [0; Channel::COUNT],
        ..RouterConfig::default()
    }
}

fn general_queue() -> QueueConfig {
    QueueConfig {
        topics: vec!["billing".into()],
        ..QueueConfig::open("general")
    }
}

fn identity(kind: pb::IdentityKind, address: &str) -> pb::Identity {
    pb::Identity {
        kind: kind as i32,
        address: address.into(),
    }
}

fn by_identity(i: &pb::Identity) -> pb::GetConversationRequest {
    pb::GetConversationRequest {
        who: Some(Who::Identity(i.clone())),
    }
}

fn assert_contiguous(history: &[pb::HistoryEvent]) {
    let seqs: Vec<u64> = history.iter().map(|e| e.seq).collect();
    let expected: Vec<u64> = (1..=history.len() as u64).collect();
    assert_eq!(
        seqs, expected,
        "history sequence numbers must be contiguous from 1, in order"
    );
    for w in history.windows(2) {
        assert!(
            w[0].at_unix_ms <= w[1].at_unix_ms,
            "history timestamps go backwards: {w:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_contact_lives_from_chat_to_voice_to_resolution() {
    let node = TestNode::start(router_config(), vec![general_queue()]).await;
    let mut gw = node.gateway();
    let mut admin = node.admin();

    // The gateway listens for replies on every channel before anything happens.
    let mut deliveries = gw
        .deliveries(pb::DeliveriesRequest {
            gateway_id: "gw-omni".into(),
            channels: vec![],
        })
        .await
        .expect("deliveries stream opens")
        .into_inner();

    // A customer writes on the web chat while no agent is logged in.
    let chat = identity(pb::IdentityKind::ChatSession, "web-7f3a9c");
    let phone = identity(pb::IdentityKind::Phone, "+393401234567");
    let first = gw
        .submit_contact(pb::SubmitContactRequest {
            channel: pb::Channel::Chat as i32,
            identity: Some(chat.clone()),
            topic: "billing".into(),
            text: CHAT_TEXT.into(),
            ..Default::default()
        })
        .await
        .expect("chat contact accepted")
        .into_inner();
    assert!(
        !first.joined_existing,
        "a first contact opens a conversation: {first:?}"
    );
    assert_eq!(first.seq, 1, "the first contact is the first history event");
    let conversation = first.conversation_id.clone();

    // Wait until routing has queued it, so the history's order below does
    // not depend on whether the phone call overtakes the chat's queueing.
    eventually(DEADLINE, "the chat contact is queued", || {
        let mut gw = gw.clone();
        let req = by_identity(&chat);
        async move {
            let v = gw
                .get_conversation(req)
                .await
                .expect("get conversation")
                .into_inner();
            v.history
                .iter()
                .any(|e| matches!(e.kind, Some(Kind::Queued(_))))
        }
    })
    .await;

    // The same person calls; the IVR has verified the chat session is theirs.
    let call = gw
        .submit_contact(pb::SubmitContactRequest {
            channel: pb::Channel::Voice as i32,
            identity: Some(phone.clone()),
            topic: "billing".into(),
            text: IVR_TEXT.into(),
            link_identities: vec![chat.clone()],
            ..Default::default()
        })
        .await
        .expect("voice contact accepted")
        .into_inner();
    assert_eq!(
        call.customer_id, first.customer_id,
        "the linked phone resolves to the chat's customer"
    );
    assert_eq!(
        call.conversation_id, conversation,
        "the call joins the open chat conversation"
    );
    assert!(
        call.joined_existing,
        "the call joins an existing conversation: {call:?}"
    );
    assert_eq!(call.seq, 3, "chat message, queued, then the call");

    // The conversation is now routed on voice, queued, first in line.
    let view = eventually_some(DEADLINE, "the conversation is queued again on voice", || {
        let mut gw = gw.clone();
        let req = by_identity(&phone);
        async move {
            let v = gw.get_conversation(req).await.expect("get conversation").into_inner();
            let requeued = v.history.last().is_some_and(|e| matches!(&e.kind, Some(Kind::Queued(q)) if q.channel == pb::Channel::Voice as i32));
            requeued.then_some(v)
        }
    })
    .await;
    assert_eq!(view.conversation_id, conversation);
    assert_eq!(view.customer_id, first.customer_id);
    assert_eq!(view.state, pb::ConversationState::Queued as i32);
    assert_eq!(view.channel, pb::Channel::Voice as i32);
    assert_eq!(view.queue_id, "general");
    assert_eq!(
        view.position, 1,
        "the only waiting conversation is first in line"
    );
    for i in [&chat, &phone] {
        assert!(
            view.identities.contains(i),
            "the customer has identity {i:?}: {:?}",
            view.identities
        );
    }

    // Two agents log in. Anna comes first and is offered the waiting call.
    let mut anna = node.login(login("anna", 100)).await;
    let first_offer = anna.next_offer().await;
    let mut bruno = node.login(login("bruno", 100)).await;

    assert_eq!(first_offer.conversation_id, conversation);
    assert_eq!(first_offer.customer_id, first.customer_id);
    assert_eq!(
        first_offer.channel,
        pb::Channel::Voice as i32,
        "it is offered on the channel the customer is now on"
    );
    assert_eq!(first_offer.queue_id, "general");
    assert!(
        first_offer.expires_unix_ms > 0,
        "the offer says when it expires"
    );
    // The whole cross-channel timeline comes with the offer.
    let offered_history: Vec<String> = first_offer.history.iter().map(describe).collect();
    assert!(
        first_offer.history.iter().any(|e| matches!(&e.kind, Some(Kind::CustomerMessage(m)) if m.text == CHAT_TEXT && m.channel == pb::Channel::Chat as i32)),
        "the offer carries the chat message: {offered_history:#?}"
    );
    assert!(
        first_offer.history.iter().any(|e| matches!(&e.kind, Some(Kind::CustomerMessage(m)) if m.text == IVR_TEXT && m.channel == pb::Channel::Voice as i32)),
        "the offer carries the call's transcript: {offered_history:#?}"
    );
    assert_contiguous(&first_offer.history);
    assert_eq!(
        offered_history.last().map(String::as_str),
        Some(format!("offered anna {}", first_offer.offer_id).as_str()),
        "the offer's history ends with the offer itself"
    );
    // Why anna.
    let why = first_offer
        .explanation
        .as_ref()
        .expect("the offer explains itself");
    assert!(!why.rule.is_empty(), "explanation has a rule: {why:?}");
    assert!(
        !why.summary.is_empty(),
        "explanation has a summary: {why:?}"
    );
    assert!(
        why.summary.contains("anna"),
        "the summary names who was chosen: {:?}",
        why.summary
    );
    assert_eq!(why.queue_id, "general");
    assert!(
        why.candidates
            .iter()
            .any(|c| c.agent_id == "anna" && c.chosen),
        "anna is the chosen candidate: {:?}",
        why.candidates
    );
    assert_eq!(
        why.candidates.iter().filter(|c| c.chosen).count(),
        1,
        "exactly one candidate is chosen: {:?}",
        why.candidates
    );
    // The offered explanation is the one recorded in the history.
    match first_offer.history.last().and_then(|e| e.kind.as_ref()) {
        Some(Kind::Offered(o)) => assert_eq!(
            o.explanation.as_ref(),
            Some(why),
            "history and offer explain the same decision"
        ),
        other => panic!("the history should end with the offer: {other:?}"),
    }

    // Anna rejects: the offer moves on to bruno.
    anna.command_ok(cmd::reject(&first_offer.offer_id, "not my area"))
        .await;
    let second_offer = bruno.next_offer().await;
    assert_eq!(second_offer.conversation_id, conversation);
    assert_ne!(second_offer.offer_id, first_offer.offer_id, "a new offer");
    assert_eq!(second_offer.channel, pb::Channel::Voice as i32);
    let why = second_offer
        .explanation
        .as_ref()
        .expect("the offer explains itself");
    assert!(
        !why.rule.is_empty() && !why.summary.is_empty(),
        "explanation has a rule and a summary: {why:?}"
    );
    assert!(
        why.candidates
            .iter()
            .any(|c| c.agent_id == "bruno" && c.chosen),
        "bruno is the chosen candidate: {:?}",
        why.candidates
    );
    assert!(
        why.candidates
            .iter()
            .all(|c| c.agent_id != "anna" || !c.chosen),
        "anna declined and must not be chosen: {:?}",
        why.candidates
    );
    assert!(
        second_offer
            .history
            .iter()
            .any(|e| matches!(&e.kind, Some(Kind::OfferRejected(r)) if r.agent_id == "anna" && r.offer_id == first_offer.offer_id && r.reason == "not my area")),
        "bruno sees that anna rejected: {:#?}",
        second_offer.history.iter().map(describe).collect::<Vec<_>>()
    );

    // Bruno does not answer: after the offer timeout the offer is revoked
    // on his desktop and he is set away (redirect on no answer).
    let revoked = bruno
        .next_event_matching(
            "the unanswered offer's revocation",
            |e| matches!(e, Event::OfferRevoked(r) if r.offer_id == second_offer.offer_id),
        )
        .await;
    let Event::OfferRevoked(revoked) = revoked else {
        unreachable!()
    };
    assert_eq!(revoked.reason, "timed out");
    bruno
        .next_event_matching(
            "bruno set away after not answering",
            |e| matches!(e, Event::StateChanged(s) if s.state == pb::AgentState::Away as i32),
        )
        .await;

    // Once anna's decline expires the conversation goes back to her.
    let third_offer = anna.next_offer().await;
    assert_eq!(third_offer.conversation_id, conversation);
    assert!(
        third_offer.offer_id != first_offer.offer_id
            && third_offer.offer_id != second_offer.offer_id,
        "a new offer"
    );
    let why = third_offer
        .explanation
        .as_ref()
        .expect("the offer explains itself");
    assert!(
        !why.rule.is_empty() && !why.summary.is_empty(),
        "explanation has a rule and a summary: {why:?}"
    );
    assert!(
        why.candidates
            .iter()
            .any(|c| c.agent_id == "anna" && c.chosen),
        "anna is the chosen candidate: {:?}",
        why.candidates
    );
    assert!(
        third_offer
            .history
            .iter()
            .any(|e| matches!(&e.kind, Some(Kind::OfferTimedOut(t)) if t.agent_id == "bruno" && t.offer_id == second_offer.offer_id)),
        "the history shows bruno's offer timed out: {:#?}",
        third_offer.history.iter().map(describe).collect::<Vec<_>>()
    );

    // Anna accepts and answers the caller at once, as a desktop does once
    // its accept is acknowledged; the reply reaches the gateway.
    anna.command_ok(cmd::accept(&third_offer.offer_id)).await;
    anna.command_ok(cmd::reply(&conversation, REPLY_TEXT)).await;
    let delivery = within(
        "the reply on the gateway's deliveries stream",
        deliveries.next(),
    )
    .await
    .expect("the deliveries stream is open")
    .expect("a delivery, not an error");
    assert_eq!(delivery.conversation_id, conversation);
    assert_eq!(delivery.customer_id, first.customer_id);
    assert_eq!(
        delivery.channel,
        pb::Channel::Voice as i32,
        "the reply leaves by the channel the customer is on"
    );
    assert_eq!(
        delivery.to.as_ref(),
        Some(&phone),
        "the reply goes to the caller's phone"
    );
    assert_eq!(delivery.agent_id, "anna");
    assert_eq!(delivery.text, REPLY_TEXT);

    let view = gw
        .get_conversation(by_identity(&phone))
        .await
        .expect("get conversation")
        .into_inner();
    assert_eq!(view.state, pb::ConversationState::Assigned as i32);
    assert_eq!(view.agent_id, "anna");

    // Wrap-up, then the whole history, in the order it happened.
    anna.command_ok(cmd::wrap_up(&conversation, "billing explained"))
        .await;
    let view = gw
        .get_conversation(by_identity(&chat))
        .await
        .expect("get conversation")
        .into_inner();
    assert_eq!(view.conversation_id, conversation);
    assert_eq!(view.state, pb::ConversationState::WrappedUp as i32);
    assert_contiguous(&view.history);
    let history: Vec<String> = view.history.iter().map(describe).collect();
    let (of1, of2, of3) = (
        &first_offer.offer_id,
        &second_offer.offer_id,
        &third_offer.offer_id,
    );
    let expected = vec![
        format!("customer_message Chat {CHAT_TEXT:?}"),
        "queued general Chat".to_owned(),
        format!("customer_message Voice {IVR_TEXT:?}"),
        format!("identity_linked {}", phone.address),
        "queued general Voice".to_owned(),
        format!("offered anna {of1}"),
        format!("offer_rejected anna {of1} \"not my area\""),
        format!("offered bruno {of2}"),
        format!("offer_timed_out bruno {of2}"),
        format!("offered anna {of3}"),
        "assigned anna".to_owned(),
        format!("agent_message anna Voice {REPLY_TEXT:?}"),
        "wrapped_up anna \"billing explained\"".to_owned(),
    ];
    assert_eq!(history, expected, "the conversation's history");
    assert_eq!(
        delivery.seq, 12,
        "the delivery carries the reply's sequence number"
    );

    // Resolve closes it: asking after it, the customer sees it resolved,
    // with its whole history (from the archive).
    anna.command_ok(cmd::resolve(&conversation)).await;
    let view = gw
        .get_conversation(by_identity(&phone))
        .await
        .expect("get conversation")
        .into_inner();
    assert_eq!(view.customer_id, first.customer_id);
    assert_eq!(
        view.conversation_id, conversation,
        "the resolved one: {view:?}"
    );
    assert_eq!(view.state, pb::ConversationState::Resolved as i32);
    let mut resolved: Vec<String> = view.history.iter().map(describe).collect();
    assert_eq!(resolved.pop(), Some("resolved anna".to_owned()));
    assert_eq!(
        resolved, expected,
        "the history as it was, then the resolution"
    );
    assert_eq!(view.position, 0);
    assert!(view.wait_estimate.is_none());
    // It left the journal for the archive, whole: the events above and the
    // resolution.
    let closed: ConversationId = conversation.parse().expect("a conversation id");
    let archived = node
        .node
        .archive()
        .read(closed)
        .await
        .expect("read the archive")
        .expect("the resolved conversation is archived");
    assert_eq!(
        archived.iter().map(|e| e.seq).collect::<Vec<_>>(),
        (1..=expected.len() as u64 + 1).collect::<Vec<_>>(),
        "the whole history, resolution included"
    );
    assert!(
        matches!(&archived[expected.len()].kind, EventKind::Resolved { by } if by == "anna"),
        "{:?}",
        archived[expected.len()]
    );

    // KPIs: one contact answered (and resolved) overall and by anna.
    let kpis = eventually_some(DEADLINE, "the resolution is counted", || {
        let mut admin = admin.clone();
        async move {
            let k = admin
                .get_kpis(pb::GetKpisRequest {})
                .await
                .expect("get kpis")
                .into_inner();
            (k.total.as_ref().is_some_and(|t| t.resolved == 1)).then_some(k)
        }
    })
    .await;
    let total = kpis.total.as_ref().expect("total kpis");
    assert_eq!(total.answered, 1, "total answered: {total:?}");
    assert_eq!(total.abandoned, 0, "total abandoned: {total:?}");
    assert_eq!(total.waiting, 0, "nobody waits: {total:?}");
    let anna_kpi = kpis
        .agents
        .iter()
        .find(|k| k.key == "anna")
        .expect("anna's kpis");
    assert_eq!(anna_kpi.answered, 1, "anna answered it: {anna_kpi:?}");
    let bruno_kpi = kpis
        .agents
        .iter()
        .find(|k| k.key == "bruno")
        .expect("bruno's kpis");
    assert_eq!(bruno_kpi.answered, 0, "bruno did not: {bruno_kpi:?}");

    // Both agents are free again; bruno is still away after not answering.
    let agents = admin
        .list_agents(pb::ListAgentsRequest {})
        .await
        .expect("list agents")
        .into_inner()
        .agents;
    assert_eq!(agents.len(), 2, "both agents are listed: {agents:?}");
    for a in &agents {
        assert_eq!(a.load, 0, "{} holds nothing: {a:?}", a.agent_id);
        assert!(
            a.conversation_ids.is_empty(),
            "{} holds nothing: {a:?}",
            a.agent_id
        );
        assert_eq!(a.capacity, 100);
    }
    let state = |id: &str| {
        agents
            .iter()
            .find(|a| a.agent_id == id)
            .unwrap_or_else(|| panic!("agent {id} listed"))
            .state
    };
    assert_eq!(state("anna"), pb::AgentState::Available as i32);
    assert_eq!(state("bruno"), pb::AgentState::Away as i32);

    anna.close().await;
    bruno.close().await;
    drop(deliveries);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_are_refused_naming_the_field() {
    let node = TestNode::start(router_config(), vec![general_queue()]).await;
    let mut gw = node.gateway();
    let chat = identity(pb::IdentityKind::ChatSession, "web-malformed");
    let contact = |text: String| pb::SubmitContactRequest {
        channel: pb::Channel::Chat as i32,
        identity: Some(chat.clone()),
        topic: "billing".into(),
        text,
        ..Default::default()
    };

    // Gateway.
    let r = gw
        .submit_contact(pb::SubmitContactRequest {
            identity: None,
            ..contact("hello".into())
        })
        .await;
    assert_status(r, Code::InvalidArgument, "identity");

    let r = gw
        .submit_contact(pb::SubmitContactRequest {
            channel: 99,
            ..contact("hello".into())
        })
        .await;
    let s = assert_status(r, Code::InvalidArgument, "channel");
    assert!(
        s.message().contains("99"),
        "the message quotes the bad value: {:?}",
        s.message()
    );

    let r = gw.submit_contact(contact("x".repeat(16 * 1024 + 1))).await;
    assert_status(r, Code::InvalidArgument, "text");

    // Over the server's 256 KiB request limit the message is refused while
    // it is decoded, before the service sees it: tonic's decoder answers
    // OUT_OF_RANGE, as `centralino_server::MAX_REQUEST_BYTES` documents.
    let r = gw
        .submit_contact(contact(
            "x".repeat(centralino_server::MAX_REQUEST_BYTES + 1024),
        ))
        .await;
    let s = r.expect_err("a request over the limit is refused");
    assert_eq!(
        s.code(),
        Code::OutOfRange,
        "status for a request over the size limit: {s:?}"
    );
    assert!(
        s.message().contains("too large"),
        "the message says why: {:?}",
        s.message()
    );

    let unknown = identity(pb::IdentityKind::Email, "nobody@example.com");
    let r = gw.get_conversation(by_identity(&unknown)).await;
    assert_status(r, Code::NotFound, "identity");

    // None of that created a customer.
    let r = gw.get_conversation(by_identity(&chat)).await;
    assert_status(r, Code::NotFound, "identity");

    // AgentDesktop: a bad login fails the stream, naming the field.
    let r = Desktop::try_login(node.desktop_client(), login("carla", -5)).await;
    assert_status(r.map(|_| ()), Code::InvalidArgument, "login.capacity");

    // A bad command gets a result naming the field; the stream lives on.
    let mut dario = node.login(login("dario", 100)).await;
    let r = dario.command(cmd::reply("cu-999999.1", "hello?")).await;
    assert_result(&r, Code::NotFound, "conversation_id");
    // A made-up customer id spawns no customer actor (no customer exists yet).
    assert_eq!(
        node.node.hub.customer_count(),
        0,
        "no customer actor for a made-up id"
    );
    dario
        .command_ok(cmd::set_state(pb::AgentState::Available))
        .await;

    let r = dario.command(cmd::accept("of-999999")).await;
    assert_result(&r, Code::NotFound, "offer_id");

    let r = dario.command(cmd::reply("nope", "hello?")).await;
    assert_result(&r, Code::InvalidArgument, "reply.conversation_id");

    let r = dario.command(cmd::wrap_up("nope", "x")).await;
    assert_result(&r, Code::InvalidArgument, "wrap_up.conversation_id");

    let r = dario.command(cmd::resolve("")).await;
    assert_result(&r, Code::InvalidArgument, "resolve.conversation_id");

    let r = dario
        .command(cmd::reply("cu-999999.1", &"x".repeat(16 * 1024 + 1)))
        .await;
    assert_result(&r, Code::InvalidArgument, "reply.text");

    // After all that the node still serves a valid contact end to end.
    assert!(node.node.is_alive(), "the node's actors still run");
    let ok = gw
        .submit_contact(contact("a real question".into()))
        .await
        .expect("a valid contact is accepted")
        .into_inner();
    assert!(!ok.joined_existing);
    assert_eq!(
        ok.seq, 1,
        "nothing the bad requests did reached this customer's history"
    );
    let offer = dario.next_offer().await;
    assert_eq!(offer.conversation_id, ok.conversation_id);
    dario.command_ok(cmd::accept(&offer.offer_id)).await;
    let view = gw
        .get_conversation(by_identity(&chat))
        .await
        .expect("get conversation")
        .into_inner();
    assert_eq!(view.state, pb::ConversationState::Assigned as i32);
    assert_eq!(view.agent_id, "dario");

    dario.close().await;
    node.shutdown().await;
}
