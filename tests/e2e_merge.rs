//! Two customers found to be one person are merged, end to end over gRPC
//! (a real node, real clients).
//!
//! `a_linked_identity_of_another_customer_merges_the_two`: Anna writes
//! from the app (customer A), then from a web chat the node has never seen
//! (customer B); both wait. Her chat gateway then sends a message linking
//! the chat session to her app user, which it has verified. The node must
//! merge A into B (the contact's customer):
//!
//! - B's history tells the merge (`Merged`, naming A and its identities)
//!   and holds A's conversation, each event with its own sequence number
//!   and time (`Absorbed`), after B's own events: contiguous;
//! - one conversation waits, B's, in A's earlier place;
//! - A is a tombstone: asked by customer id or by the app identity,
//!   `GetConversation` answers with B's conversation, and a new message
//!   from the app joins B's conversation;
//! - an agent is offered B's conversation once, with the whole history.

use std::time::Duration;

use centralino_core::queue::QueueConfig;
use centralino_core::{Channel, RouterConfig};
use centralino_proto::v1 as pb;
use centralino_tests::{TestNode, linked_contact as contact, login, within};
use pb::get_conversation_request::Who;
use pb::history_event::Kind;

fn router_config() -> RouterConfig {
    RouterConfig {
        acw_ms: [0; Channel::COUNT],
        ..RouterConfig::default()
    }
}

fn identity(kind: pb::IdentityKind, address: &str) -> pb::Identity {
    pb::Identity {
        kind: kind as i32,
        address: address.into(),
    }
}

fn app() -> pb::Identity {
    identity(pb::IdentityKind::AppUser, "anna.rossi")
}

fn chat() -> pb::Identity {
    identity(pb::IdentityKind::ChatSession, "web-7f3a")
}

fn describe(e: &pb::HistoryEvent) -> String {
    match e.kind.as_ref() {
        Some(Kind::CustomerMessage(m)) => format!("message {}", m.text),
        Some(Kind::Queued(_)) => "queued".into(),
        Some(Kind::Merged(m)) => format!("merged {}", m.from_customer_id),
        Some(Kind::Absorbed(a)) => format!(
            "absorbed {} #{}",
            a.conversation_id,
            a.event.as_ref().map_or(0, |e| e.seq)
        ),
        other => format!("{other:?}"),
    }
}

async fn conversation(node: &TestNode, who: Who) -> pb::ConversationView {
    let mut g = node.gateway();
    within(
        "GetConversation",
        g.get_conversation(pb::GetConversationRequest { who: Some(who) }),
    )
    .await
    .expect("GetConversation")
    .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linked_identity_of_another_customer_merges_the_two() {
    let node = TestNode::start(router_config(), vec![QueueConfig::open("care")]).await;
    let gw = node.gateway();
    let submit = |req| {
        let mut gw = gw.clone();
        async move {
            within("SubmitContact", gw.submit_contact(req))
                .await
                .expect("contact accepted")
                .into_inner()
        }
    };

    let first = submit(contact(pb::Channel::App, app(), vec![], "la fibra non va")).await;
    let a = first.customer_id.clone();
    // Anna's first message waits a measurable while before the chat starts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = submit(contact(pb::Channel::Chat, chat(), vec![], "ancora niente")).await;
    let b = second.customer_id.clone();
    assert_ne!(a, b, "two identities nobody linked are two customers");

    let linked = submit(contact(
        pb::Channel::Chat,
        chat(),
        vec![app()],
        "sono la stessa persona dell'app",
    ))
    .await;
    assert_eq!(linked.customer_id, b, "the contact is the chat customer's");
    assert_eq!(linked.conversation_id, second.conversation_id);

    // B's history: its own events, the merge, then A's conversation.
    let view = conversation(&node, Who::CustomerId(b.clone())).await;
    let seqs: Vec<u64> = view.history.iter().map(|e| e.seq).collect();
    let want: Vec<u64> = (1..=view.history.len() as u64).collect();
    assert_eq!(seqs, want, "contiguous after the merge");
    let told: Vec<String> = view.history.iter().map(describe).collect();
    let merged_at = told
        .iter()
        .position(|e| *e == format!("merged {a}"))
        .unwrap_or_else(|| panic!("no Merged event naming {a}: {told:?}"));
    assert!(
        told[..merged_at].contains(&"message sono la stessa persona dell'app".to_owned()),
        "the linking contact comes first: {told:?}"
    );
    let absorbed: Vec<&String> = told[merged_at + 1..].iter().collect();
    assert_eq!(
        absorbed,
        vec![
            &format!("absorbed {} #1", first.conversation_id),
            &format!("absorbed {} #2", first.conversation_id),
        ],
        "A's message and its Queued, with their own seqs: {told:?}"
    );
    let Some(Kind::Absorbed(message)) = &view.history[merged_at + 1].kind else {
        panic!("not absorbed");
    };
    let original = message.event.as_ref().expect("the absorbed event");
    assert!(
        original.at_unix_ms < view.history[0].at_unix_ms,
        "the absorbed message keeps its own (earlier) time"
    );
    let Some(Kind::Merged(m)) = &view.history[merged_at].kind else {
        panic!("not merged");
    };
    assert_eq!(m.identities, vec![app()], "the merge names A's identities");
    assert!(
        view.identities.contains(&app()) && view.identities.contains(&chat()),
        "B has both identities now: {:?}",
        view.identities
    );

    // One conversation waits, B's, with A's earlier waiting time.
    let mut admin = node.admin();
    let listed = within(
        "ListConversations",
        admin.list_conversations(pb::ListConversationsRequest::default()),
    )
    .await
    .expect("ListConversations")
    .into_inner()
    .conversations;
    let ids: Vec<&str> = listed.iter().map(|c| c.conversation_id.as_str()).collect();
    assert_eq!(ids, vec![second.conversation_id.as_str()], "only B's waits");
    assert!(
        listed[0].waited_ms >= 300,
        "B's conversation took A's earlier place: waited {} ms",
        listed[0].waited_ms
    );

    // A is a tombstone: whoever asks for A finds B.
    for who in [Who::CustomerId(a.clone()), Who::Identity(app())] {
        let v = conversation(&node, who).await;
        assert_eq!(
            (v.customer_id.as_str(), v.conversation_id.as_str()),
            (b.as_str(), second.conversation_id.as_str())
        );
    }
    let later = submit(contact(pb::Channel::App, app(), vec![], "novità?")).await;
    assert_eq!(
        (later.customer_id.as_str(), later.conversation_id.as_str()),
        (b.as_str(), second.conversation_id.as_str()),
        "a message from A's identity joins B's conversation"
    );

    // An agent is offered the merged conversation, once, with everything.
    let mut desk = node.login(login("ada", 100)).await;
    let offer = desk.next_offer().await;
    assert_eq!(offer.conversation_id, second.conversation_id);
    let texts: Vec<String> = offer.history.iter().map(describe).collect();
    assert!(
        texts.iter().any(|e| e.starts_with("merged "))
            && texts.contains(&"message novità?".to_owned()),
        "the offer carries the whole history: {texts:?}"
    );
    let no_second = tokio::time::timeout(Duration::from_millis(500), desk.next_offer()).await;
    assert!(no_second.is_err(), "A's conversation is not offered too");
    desk.close().await;
    node.shutdown().await;
}
