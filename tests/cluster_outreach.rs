//! Proactive outbound and self-service on a real cluster: etcd and three
//! `centralino node` processes, real gRPC clients only.
//!
//! `a_campaign_and_self_service_work_across_the_cluster_and_survive_the_runners_death`:
//!
//! 1. Four business customers write (by e-mail) through gateways on all
//!    three nodes, so they live all over the cluster.
//! 2. Self-service: an agent on n3 takes the first two; asked through n1,
//!    the next customer is first in line with an estimated wait of one
//!    answer interval (two recent answers), the one after second with two.
//!    The agent resolves one: asked through n2, that customer sees it
//!    resolved, whole, from the cluster's archive.
//! 3. Nine consumers write, the same way (one on the chat); then a
//!    campaign to the consumers, started on n2: four are reached by SMS
//!    (a gateway stream on n1 gets the notices, wherever the customers
//!    live), two are skipped for consent, one is unreachable (a chat
//!    session only), two are deferred (it is night where they are for the
//!    next two hours). Counts read through n3, computed by hand.
//! 4. One of the reached customers replies through n3: the reply joins the
//!    notice's conversation and is counted, read through n1.
//! 5. n2, the campaign's node, is killed. Once its lease ends, a survivor
//!    takes the campaign over and runs it again from the start: the same
//!    counts, the reply still counted, and every reached customer has the
//!    notice exactly once in the history (nobody was reached twice).
//!
//! Waits poll with deadlines; nothing sleeps for a fixed time.

use std::time::Duration;

use centralino_proto::v1 as pb;
use centralino_tests::cluster::ClusterProcess;
use centralino_tests::etcd::EtcdServer;
use centralino_tests::outreach::{
    Person, attributes, campaign_when, consumer_campaign, deliveries, email, identity, notices,
    people, phone, progress, sent_on, view_of,
};
use centralino_tests::{Desktop, cmd, eventually_some, login};
use pb::history_event::Kind;

const CLUSTER: &str = "outreach";
/// Longest wait for any one condition (a loaded machine, a lease to end).
const WAIT: Duration = Duration::from_secs(60);

/// Quiet hours in UTC from an hour ago to two hours from now ("HH:MM"): a
/// customer on UTC is in them for the whole test; one six hours ahead
/// (`Etc/GMT-6`) is not.
fn quiet_now() -> pb::QuietHours {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        / 60
        % 1_440;
    let hm = |m: u64| format!("{:02}:{:02}", m % 1_440 / 60, m % 60);
    pb::QuietHours {
        from: hm(now + 1_440 - 60),
        until: hm(now + 120),
    }
}

/// Each person writes once, through the nodes in turn.
async fn write(nodes: &[&ClusterProcess], people: &[&Person]) {
    for (i, p) in people.iter().enumerate() {
        let mut gw = nodes[i % nodes.len()].gateway();
        gw.submit_contact(p.contact())
            .await
            .unwrap_or_else(|s| panic!("contact {i} refused: {s:?}"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_campaign_and_self_service_work_across_the_cluster_and_survive_the_runners_death() {
    let etcd = EtcdServer::start();
    let endpoint = etcd.endpoint();
    let n1 = ClusterProcess::start(&endpoint, CLUSTER, "n1").await;
    let (n2, n3) = tokio::join!(
        ClusterProcess::start(&endpoint, CLUSTER, "n2"),
        ClusterProcess::start(&endpoint, CLUSTER, "n3")
    );
    let mut n2 = n2;
    let nodes = [&n1, &n2, &n3];
    eventually_some(WAIT, "three members", || {
        let mut admin = n1.admin();
        async move {
            let r = admin.list_nodes(pb::ListNodesRequest {}).await.ok()?;
            (r.get_ref().node_ids.len() == 3).then_some(())
        }
    })
    .await;
    let mut deliveries = deliveries(&n1.gateway(), "gw-n1", &[]).await;

    // 1. Customers, through all three nodes.
    let day = "Etc/GMT-6";
    let business = people(4, "biz", "+39 02 000 000", "business", day);
    let reached = people(4, "day", "+39 340 100 000", "consumer", day);
    let declined = [
        Person {
            first: email("no-mail@example.it"),
            also: vec![],
            attributes: attributes("consumer", None, day, Some(&[pb::Channel::Email])),
        },
        Person {
            first: email("no-contact@example.it"),
            also: vec![phone("+39 340 100 0099")],
            attributes: attributes(
                "consumer",
                None,
                day,
                Some(&[pb::Channel::Sms, pb::Channel::Email]),
            ),
        },
    ];
    let unreachable = Person {
        first: identity(pb::IdentityKind::ChatSession, "web-only"),
        also: vec![],
        attributes: attributes("consumer", None, day, None),
    };
    let sleeping = people(2, "night", "+39 340 200 000", "consumer", "UTC");
    let consumers: Vec<&Person> = reached
        .iter()
        .chain(&declined)
        .chain([&unreachable])
        .chain(&sleeping)
        .collect();
    write(&nodes, &business.iter().collect::<Vec<_>>()).await;

    // 2. Self-service across nodes. The agent on n3 takes the first two
    // (room for two e-mails), then goes away.
    let mut sara = Desktop::try_login(n3.desktop_client(), login("sara", 40))
        .await
        .expect("sara logs in");
    let (o1, o2) = (sara.next_offer().await, sara.next_offer().await);
    // The two offers come from the customers' own nodes: in either order.
    let first = view_of(&n1.gateway(), &business[0].first).await;
    let (o1, o2) = if o1.conversation_id == first.conversation_id {
        (o1, o2)
    } else {
        (o2, o1)
    };
    sara.command_ok(cmd::set_state(pb::AgentState::Away)).await;
    sara.command_ok(cmd::accept(&o1.offer_id)).await;
    sara.command_ok(cmd::accept(&o2.offer_id)).await;
    let via_n1 = n1.gateway();
    for (k, p) in business[2..].iter().enumerate() {
        let position = k as u32 + 1;
        let view = eventually_some(WAIT, "a place and an estimate", || {
            let (gw, who) = (via_n1.clone(), p.first.clone());
            async move {
                let v = view_of(&gw, &who).await;
                (v.position == position && v.wait_estimate.is_some()).then_some(v)
            }
        })
        .await;
        let e = view.wait_estimate.expect("an estimate");
        assert_eq!((e.position, e.answers_sampled), (position, 2), "{view:?}");
        assert_eq!(
            e.estimated_wait_ms,
            i64::from(position) * e.mean_answer_interval_ms
        );
    }
    sara.command_ok(cmd::resolve(&o1.conversation_id)).await;
    let resolved = view_of(&n2.gateway(), &business[0].first).await;
    assert_eq!(resolved.conversation_id, o1.conversation_id);
    assert_eq!(resolved.state, pb::ConversationState::Resolved as i32);
    assert!(
        matches!(resolved.history.last().and_then(|e| e.kind.as_ref()), Some(Kind::Resolved(r)) if r.by == "sara"),
        "the archived history, resolution last: {:?}",
        resolved.history
    );

    // 3. The consumers write too; then the campaign, on n2, its progress
    // read through n3.
    write(&nodes, &consumers).await;
    let message = "A storm may cut lines tonight; we are ready.";
    let campaign = consumer_campaign("storm-warning", message, quiet_now(), "UTC");
    let started = n2
        .admin()
        .start_campaign(campaign)
        .await
        .expect("campaign starts on n2")
        .into_inner();
    assert_eq!(started.runner_node, "n2");
    let settled = |v: &pb::CampaignView| {
        let p = progress(v);
        p.scan_complete && p.sending == 0 && p.sent == 4
    };
    let v = campaign_when(&n3.admin(), "storm-warning", WAIT, "settled", settled).await;
    let counts = |v: &pb::CampaignView| {
        let p = progress(v);
        (
            p.scanned,
            p.targeted,
            p.sent,
            p.skipped_consent,
            p.skipped_unreachable,
            p.deferred,
        )
    };
    assert_eq!(counts(&v), (13, 9, 4, 2, 1, 2), "by hand: {v:#?}");
    assert_eq!(sent_on(&v, pb::Channel::Sms), 4);
    assert_eq!(v.runner_node, "n2");
    let got = notices(&mut deliveries, 4).await;
    let mut phones: Vec<String> = got.iter().map(|(_, to, _)| to.clone()).collect();
    phones.sort();
    assert_eq!(
        phones,
        (0..4)
            .map(|i| format!("+39340100000{i}"))
            .collect::<Vec<_>>()
    );
    assert!(got.iter().all(|(c, _, _)| *c == pb::Channel::Sms));

    // 4. A reply through n3 joins the notice's conversation.
    let before = view_of(&n3.gateway(), &reached[0].first).await;
    let reply = n3
        .gateway()
        .submit_contact(pb::SubmitContactRequest {
            channel: pb::Channel::Sms as i32,
            identity: Some(reached[0].also[0].clone()),
            text: "thanks; will the landline work?".into(),
            ..Default::default()
        })
        .await
        .expect("reply accepted")
        .into_inner();
    assert_eq!(reply.conversation_id, before.conversation_id);
    assert!(reply.joined_existing);
    campaign_when(
        &n1.admin(),
        "storm-warning",
        WAIT,
        "the reply counted",
        |v| progress(v).replied == 1,
    )
    .await;

    // 5. The campaign's node dies; a survivor runs it again from the start.
    n2.kill();
    let v = campaign_when(&n1.admin(), "storm-warning", WAIT, "taken over", |v| {
        v.runner_node != "n2" && settled(v)
    })
    .await;
    assert!(["n1", "n3"].contains(&v.runner_node.as_str()), "{v:?}");
    assert_eq!(counts(&v), (13, 9, 4, 2, 1, 2), "the same counts: {v:#?}");
    assert_eq!(progress(&v).replied, 1, "the reply still counted");
    for p in &reached {
        let view = view_of(&n1.gateway(), &p.first).await;
        let notices = view
            .history
            .iter()
            .filter(
                |e| matches!(&e.kind, Some(Kind::Notice(n)) if n.campaign_id == "storm-warning"),
            )
            .count();
        assert_eq!(notices, 1, "reached once: {:?}", view.history);
    }
    for p in &sleeping {
        let view = view_of(&n3.gateway(), &p.first).await;
        assert!(
            !view
                .history
                .iter()
                .any(|e| matches!(e.kind, Some(Kind::Notice(_)))),
            "still deferred: {:?}",
            view.history
        );
    }
}
