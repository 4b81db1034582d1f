//! Two customers living on different nodes of a real cluster (etcd and
//! three `centralino node` processes) are merged when a gateway links an
//! identity of one to a contact of the other.
//!
//! `customers_on_two_nodes_are_merged_and_the_tombstone_forwards`: Anna
//! writes from the app and from a web chat, until the two customers live on
//! different nodes (etcd's owners say where); then the chat gateway sends a
//! message that links the app user, through the third node. Checked, asking
//! every node: the chat customer's history tells the merge and holds the
//! app conversation's events (contiguous seqs); the app customer answers
//! for the chat one (by id and by identity); a later app message joins the
//! chat conversation; the router lists one conversation for the two.

use std::time::{Duration, Instant};

use centralino_proto::v1 as pb;
use centralino_tests::cluster::{ClusterProcess, NodeSpec, customer_owners};
use centralino_tests::etcd::EtcdServer;
use centralino_tests::linked_contact as contact;
use pb::get_conversation_request::Who;
use pb::history_event::Kind;

const CLUSTER: &str = "merge";
const WAIT: Duration = Duration::from_secs(60);
/// Pairs of customers tried until two live on different nodes.
const ATTEMPTS: usize = 20;

fn identity(kind: pb::IdentityKind, address: &str) -> pb::Identity {
    pb::Identity {
        kind: kind as i32,
        address: address.into(),
    }
}

async fn submit(node: &ClusterProcess, req: pb::SubmitContactRequest) -> pb::SubmitContactResponse {
    node.gateway()
        .submit_contact(req)
        .await
        .unwrap_or_else(|s| panic!("a contact through {}: {s:?}", node.node_id))
        .into_inner()
}

async fn view(node: &ClusterProcess, who: Who) -> pb::ConversationView {
    node.gateway()
        .get_conversation(pb::GetConversationRequest { who: Some(who) })
        .await
        .unwrap_or_else(|s| panic!("GetConversation through {}: {s:?}", node.node_id))
        .into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn customers_on_two_nodes_are_merged_and_the_tombstone_forwards() {
    let etcd = EtcdServer::start();
    let mut nodes = Vec::new();
    for id in ["n1", "n2", "n3"] {
        nodes.push(
            ClusterProcess::start_with(NodeSpec {
                etcd: etcd.endpoint(),
                cluster: CLUSTER.into(),
                node_id: id.into(),
                ..Default::default()
            })
            .await,
        );
    }

    // Two customers of the same person, on two different nodes.
    let mut found = None;
    for n in 0..ATTEMPTS {
        let app = identity(pb::IdentityKind::AppUser, &format!("anna-{n}"));
        let chat = identity(pb::IdentityKind::ChatSession, &format!("web-{n}"));
        let a = submit(
            &nodes[0],
            contact(pb::Channel::App, app.clone(), vec![], "la fibra non va"),
        )
        .await;
        let b = submit(
            &nodes[1],
            contact(pb::Channel::Chat, chat.clone(), vec![], "ancora niente"),
        )
        .await;
        let owners = customer_owners(&etcd, CLUSTER);
        let (oa, ob) = (owners.get(&a.customer_id), owners.get(&b.customer_id));
        if oa.is_some() && ob.is_some() && oa != ob {
            println!(
                "{} on {oa:?} (app), {} on {ob:?} (chat)",
                a.customer_id, b.customer_id
            );
            found = Some((app, chat, a, b));
            break;
        }
    }
    let (app, chat, a, b) = found.expect("two customers on different nodes");

    // The chat gateway links the app user, through the third node.
    let linked = submit(
        &nodes[2],
        contact(
            pb::Channel::Chat,
            chat.clone(),
            vec![app.clone()],
            "sono io, dall'app",
        ),
    )
    .await;
    assert_eq!(
        (&linked.customer_id, &linked.conversation_id),
        (&b.customer_id, &b.conversation_id)
    );

    for node in &nodes {
        let v = view(node, Who::CustomerId(b.customer_id.clone())).await;
        let seqs: Vec<u64> = v.history.iter().map(|e| e.seq).collect();
        assert_eq!(
            seqs,
            (1..=v.history.len() as u64).collect::<Vec<_>>(),
            "contiguous, asked of {}",
            node.node_id
        );
        let merged = v.history.iter().position(
            |e| matches!(&e.kind, Some(Kind::Merged(m)) if m.from_customer_id == a.customer_id),
        );
        let merged = merged.unwrap_or_else(|| {
            panic!(
                "no Merged event in {}'s view: {:?}",
                node.node_id, v.history
            )
        });
        let absorbed: Vec<String> = v.history[merged + 1..]
            .iter()
            .filter_map(|e| match &e.kind {
                Some(Kind::Absorbed(x)) => match x.event.as_ref().and_then(|e| e.kind.as_ref()) {
                    Some(Kind::CustomerMessage(m)) => Some(m.text.clone()),
                    _ => None,
                },
                _ => None,
            })
            .collect();
        assert_eq!(
            absorbed,
            vec!["la fibra non va".to_owned()],
            "{}",
            node.node_id
        );
        assert!(v.identities.contains(&app) && v.identities.contains(&chat));
        // The tombstone answers for the survivor, wherever it is asked.
        for who in [
            Who::CustomerId(a.customer_id.clone()),
            Who::Identity(app.clone()),
        ] {
            let t = view(node, who).await;
            assert_eq!(
                (&t.customer_id, &t.conversation_id),
                (&b.customer_id, &b.conversation_id),
                "asked of {}",
                node.node_id
            );
        }
    }

    let later = submit(
        &nodes[0],
        contact(pb::Channel::App, app.clone(), vec![], "novità?"),
    )
    .await;
    assert_eq!(
        (&later.customer_id, &later.conversation_id),
        (&b.customer_id, &b.conversation_id),
        "a message from the app joins the chat conversation"
    );

    // One conversation for the two, in the router.
    let give_up = Instant::now() + WAIT;
    loop {
        let listed = nodes[2]
            .admin()
            .list_conversations(pb::ListConversationsRequest::default())
            .await
            .expect("ListConversations")
            .into_inner()
            .conversations;
        let ids: Vec<&str> = listed
            .iter()
            .map(|c| c.conversation_id.as_str())
            .filter(|c| *c == a.conversation_id || *c == b.conversation_id)
            .collect();
        if ids == [b.conversation_id.as_str()] {
            break;
        }
        assert!(
            Instant::now() < give_up,
            "the router lists {ids:?}, want only {}",
            b.conversation_id
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
