//! The contract every [`Coordination`] backend must pass, written once and
//! run against each (in memory here; etcd in the cluster tests). Each check
//! panics with a message that says which promise broke.

use std::time::Duration;

use centralino_actors::journal::{
    Creation, CustomerRecord, JournalBatch, Recovered, SNAPSHOT_EVERY, rebuild,
};
use centralino_core::customer::{Attributes, Contact, Customer};
use centralino_core::explain::{Candidate, Explanation, PassedOver, Rule};
use centralino_core::history::{EventKind, HistoryEvent};
use centralino_core::priority::PriorityBreakdown;
use centralino_core::queue::QueueConfig;
use centralino_core::{
    AgentId, Channel, ConversationId, CustomerId, Identity, IdentityKind, OfferId, TimeMs,
};

use crate::coordination::{ActorKey, Coordination, MemberEvent, NodeInfo};
use crate::error::ClusterError;

/// Runs every check. Use a fresh, empty backend (or a fresh key prefix).
pub async fn run_all(c: &dyn Coordination) {
    membership(c).await;
    ownership(c).await;
    journal_fencing(c).await;
    journal_without_owner(c).await;
    journal_close(c).await;
    journal_snapshots(c).await;
    snapshot_fencing(c).await;
    directory(c).await;
    gateways(c).await;
    queues(c).await;
    router_documents(c).await;
    creation(c).await;
    group_commit(c).await;
    migration_and_orphans(c).await;
    customer_scan(c).await;
    campaigns(c).await;
}

/// A campaign's scan meets every customer that is both known (linked) and
/// journaled, once, page by page, and the pages end.
pub async fn customer_scan(c: &dyn Coordination) {
    let ids: Vec<CustomerId> = (0..5).map(|i| CustomerId(900_700 + i)).collect();
    for (i, id) in ids.iter().enumerate() {
        let identity = Identity::new(IdentityKind::Email, &format!("scan{i}@example.it"));
        c.link_identity(&identity, *id).await.expect("link");
        let conv = ConversationId {
            customer: *id,
            number: 1,
        };
        c.append(batch(*id, conv, 0, 1..=1))
            .await
            .expect("append without an owner");
    }
    let mut seen = Vec::new();
    let mut after = None;
    for page in 0.. {
        assert!(page < 1_000, "the scan never ends");
        let (records, next) = c.scan_records(after, 2).await.expect("scan");
        assert!(records.len() <= 2, "a page holds at most its limit");
        seen.extend(records.iter().map(|r| r.id));
        match next {
            None => break,
            Some(n) => {
                assert_ne!(Some(n), after, "a page moves the cursor");
                after = Some(n);
            }
        }
    }
    for id in &ids {
        assert_eq!(
            seen.iter().filter(|s| *s == id).count(),
            1,
            "the scan meets {id} exactly once: {seen:?}"
        );
    }
}

/// Campaigns: created once, saved only by their owner's token, replies
/// counted once per customer.
pub async fn campaigns(c: &dyn Coordination) {
    use centralino_actors::campaign::CampaignRecord;
    use centralino_core::CampaignId;
    use centralino_core::campaign::run::{Progress, Status};
    use centralino_core::campaign::{Audience, CampaignSpec, QuietHours, Zone};
    let id = CampaignId::new("contract-campaign");
    let mut record = CampaignRecord {
        spec: CampaignSpec {
            id: id.clone(),
            name: "contract".into(),
            audience: Audience {
                everyone: true,
                ..Default::default()
            },
            message: "hello".into(),
            topic: "news".into(),
            fallbacks: vec![Channel::Sms],
            ignore_preferred: false,
            quiet_hours: QuietHours::NONE,
            time_zone: Zone::UTC,
            follow_up: None,
            reply_window_ms: 1_000,
        },
        status: Status::Delivering,
        runner: "contract-c1".into(),
        progress: Progress::default(),
        started_at: 1,
        updated_at: 1,
    };
    assert!(c.create_campaign(&record).await.expect("create"), "new");
    assert!(
        !c.create_campaign(&record).await.expect("create again"),
        "a campaign id is taken once"
    );
    let lease = c
        .join(&node("contract-c1"), Duration::from_secs(10))
        .await
        .expect("join");
    let key = ActorKey::Campaign(id.clone());
    let token = c.claim(&key, "contract-c1", lease).await.expect("claim");
    record.progress.sent = 3;
    c.save_campaign(&record, token)
        .await
        .expect("the owner saves");
    record.progress.sent = 99;
    assert_fenced(
        c.save_campaign(&record, token + 1_000).await,
        "a campaign save with a stale token",
    );
    let stored = c.campaign(&id).await.expect("read").expect("stored");
    assert_eq!(stored.progress.sent, 3, "the fenced save changed nothing");
    assert!(
        c.campaigns()
            .await
            .expect("list")
            .iter()
            .any(|r| r.spec.id == id)
    );
    for customer in [1, 1, 2] {
        c.add_campaign_reply(&id, CustomerId(customer))
            .await
            .expect("reply");
    }
    assert_eq!(c.campaign_replies(&id).await.expect("count"), 2);
    let other = CampaignId::new("contract-campaign-2");
    assert_eq!(c.campaign_replies(&other).await.expect("count"), 0);
    c.leave(lease).await.expect("leave");
    assert_fenced(
        c.save_campaign(&record, token).await,
        "a campaign save after the owner's lease ended",
    );
}

/// A transfer hands ownership over in one step and fences the old owner's
/// token; a dead owner's customers are listed as orphans until a survivor
/// claims them; a release forgets the placement.
pub async fn migration_and_orphans(c: &dyn Coordination) {
    let la = c
        .join(&node("contract-m1"), Duration::from_secs(10))
        .await
        .expect("join m1");
    let lb = c
        .join(&node("contract-m2"), Duration::from_secs(10))
        .await
        .expect("join m2");
    let (moved, left, released) = (
        CustomerId(900_301),
        CustomerId(900_302),
        CustomerId(900_303),
    );
    let conv = ConversationId {
        customer: moved,
        number: 1,
    };
    let key = ActorKey::Customer(moved);
    let t1 = c.claim(&key, "contract-m1", la).await.expect("claim");
    c.append(batch(moved, conv, t1, 1..=2))
        .await
        .expect("owner appends");
    let t2 = c
        .transfer(&key, t1, "contract-m2", lb)
        .await
        .expect("transfer with the owner's token");
    assert!(t2 > t1, "a transfer gives a newer token");
    assert_eq!(
        c.owner(&key).await.expect("owner"),
        Some(("contract-m2".into(), t2))
    );
    assert_fenced(
        c.append(batch(moved, conv, t1, 3..=3)).await,
        "the old owner after a transfer",
    );
    c.append(batch(moved, conv, t2, 3..=3))
        .await
        .expect("the new owner appends");
    match c.transfer(&key, t1, "contract-m1", la).await {
        Err(ClusterError::Fenced { .. }) => {}
        other => panic!("a transfer with a stale token must be fenced, got {other:?}"),
    }
    c.claim(&ActorKey::Customer(left), "contract-m1", la)
        .await
        .expect("claim left");
    let tr = c
        .claim(&ActorKey::Customer(released), "contract-m1", la)
        .await
        .expect("claim released");
    c.release(&ActorKey::Customer(released), tr)
        .await
        .expect("release");
    let mine = |o: Vec<(String, CustomerId)>| -> Vec<(String, CustomerId)> {
        let mut o: Vec<_> = o
            .into_iter()
            .filter(|(_, id)| [moved, left, released].contains(id))
            .collect();
        o.sort();
        o
    };
    let live = vec!["contract-m1".to_string(), "contract-m2".to_string()];
    assert_eq!(
        mine(c.orphans(&live).await.expect("orphans")),
        vec![],
        "no orphans while their owners live"
    );
    c.leave(la).await.expect("leave m1");
    let live = vec!["contract-m2".to_string()];
    assert_eq!(
        mine(c.orphans(&live).await.expect("orphans")),
        vec![("contract-m1".to_string(), left)],
        "the dead owner's customer is an orphan; the moved and the released ones are not"
    );
    c.claim(&ActorKey::Customer(left), "contract-m2", lb)
        .await
        .expect("a survivor claims the orphan");
    assert_eq!(
        mine(c.orphans(&live).await.expect("orphans")),
        vec![],
        "a claimed orphan is placed on its new owner"
    );
    c.leave(lb).await.expect("leave m2");
}

/// Several customers' batches in one call: each is fenced on its own, so a
/// fenced-out one fails alone and the others are written.
pub async fn group_commit(c: &dyn Coordination) {
    let lease = c
        .join(&node("contract-h"), Duration::from_secs(10))
        .await
        .expect("join h");
    let (a, b, z) = (
        CustomerId(900_201),
        CustomerId(900_202),
        CustomerId(900_203),
    );
    let conv = |customer| ConversationId {
        customer,
        number: 1,
    };
    let ta = c
        .claim(&ActorKey::Customer(a), "contract-h", lease)
        .await
        .expect("claim a");
    let tb = c
        .claim(&ActorKey::Customer(b), "contract-h", lease)
        .await
        .expect("claim b");
    let results = c
        .append_many(vec![
            batch(a, conv(a), ta, 1..=2),
            batch(b, conv(b), tb + 1, 1..=1),
            batch(z, conv(z), 0, 1..=3),
            closing_batch(a, conv(a), ta, 1..=3),
        ])
        .await;
    assert_eq!(results.len(), 4, "one result per batch");
    assert!(results[0].is_ok(), "a's batch is written: {:?}", results[0]);
    assert_fenced(results[1].clone(), "b's batch with a wrong token");
    assert!(
        results[2].is_ok(),
        "an unowned customer with token 0: {:?}",
        results[2]
    );
    assert!(
        results[3].is_ok(),
        "a's close after its batch: {:?}",
        results[3]
    );
    let load = |id| async move { c.load(id).await.expect("load") };
    assert_eq!(
        load(b).await,
        None,
        "nothing of the fenced batch was written"
    );
    assert_eq!(load(z).await.expect("z journaled").events.len(), 3);
    assert_eq!(
        load(a).await.expect("a journaled").events,
        vec![],
        "a's conversation closed"
    );
    c.leave(lease).await.expect("leave h");
}

/// An identity belongs to one customer: the first link wins, later links
/// to another customer answer with the first.
pub async fn directory(c: &dyn Coordination) {
    let phone = Identity::new(IdentityKind::Phone, "+39 000 111");
    let email = Identity::new(IdentityKind::Email, "contract@example.it");
    let (a, b) = (CustomerId(900_101), CustomerId(900_102));
    assert_eq!(
        c.lookup_identity(&phone).await.expect("lookup"),
        None,
        "an unknown identity has no customer"
    );
    assert!(
        !c.customer_known(a).await.expect("known"),
        "nobody linked to the customer yet"
    );
    assert_eq!(
        c.link_identity(&phone, a).await.expect("link"),
        (a, true),
        "the first link wins"
    );
    assert_eq!(
        c.link_identity(&phone, b).await.expect("link"),
        (a, false),
        "a second link answers with the owner"
    );
    assert_eq!(c.link_identity(&email, a).await.expect("link"), (a, true));
    assert_eq!(c.lookup_identity(&phone).await.expect("lookup"), Some(a));
    assert!(
        c.customer_known(a).await.expect("known"),
        "a linked customer is known"
    );
    assert!(
        !c.customer_known(b).await.expect("known"),
        "a customer that lost every race is not"
    );
}

/// Gateway streams are listed per node and go with the node's lease.
pub async fn gateways(c: &dyn Coordination) {
    let lease = c
        .join(&node("contract-g"), Duration::from_secs(10))
        .await
        .expect("join g");
    let streams = vec![vec![Channel::Voice, Channel::Chat], vec![]];
    c.set_gateways("contract-g", lease, &streams)
        .await
        .expect("set gateways");
    let all = c.gateways().await.expect("gateways");
    assert!(
        all.contains(&("contract-g".to_owned(), streams)),
        "the node's streams are listed: {all:?}"
    );
    c.leave(lease).await.expect("leave g");
    let all = c.gateways().await.expect("gateways");
    assert!(
        all.iter().all(|(n, _)| n != "contract-g"),
        "a node that left has no gateway streams: {all:?}"
    );
}

/// A new customer's first batch creates it: claims it for the node and
/// links its identities in the same write, or fails and writes nothing
/// when another customer has an identity (or someone owns it); alone or in
/// a group with other customers' batches.
pub async fn creation(c: &dyn Coordination) {
    let lease = c
        .join(&node("contract-cr"), Duration::from_secs(10))
        .await
        .expect("join cr");
    let creating = |customer: CustomerId, identities: Vec<Identity>| {
        let conv = ConversationId {
            customer,
            number: 1,
        };
        let mut b = batch(customer, conv, 0, 1..=1);
        b.create = Some(Creation {
            identities,
            owner: Some(("contract-cr".into(), lease)),
        });
        b
    };
    let (x, y, z) = (
        CustomerId(900_401),
        CustomerId(900_402),
        CustomerId(900_403),
    );
    let ix = Identity::new(IdentityKind::Phone, "+39 040 900401");
    let token = c
        .append(creating(x, vec![ix.clone()]))
        .await
        .expect("a new customer's first batch creates it");
    assert!(token > 0, "creation returns the ownership's token");
    assert_eq!(
        c.owner(&ActorKey::Customer(x)).await.expect("owner"),
        Some(("contract-cr".to_owned(), token)),
        "the creating node owns it, under the returned token"
    );
    assert_eq!(c.lookup_identity(&ix).await.expect("lookup"), Some(x));
    assert!(c.customer_known(x).await.expect("known"));
    let conv = ConversationId {
        customer: x,
        number: 1,
    };
    assert_eq!(
        c.append(batch(x, conv, token, 2..=2)).await.expect("next"),
        token,
        "later batches write under the token"
    );
    match c.append(creating(y, vec![ix.clone()])).await {
        Err(ClusterError::IdentityTaken { identity, customer }) => {
            assert_eq!((identity, customer), (ix.clone(), x));
        }
        other => panic!("a creation with a taken identity: expected IdentityTaken, got {other:?}"),
    }
    assert_eq!(
        c.owner(&ActorKey::Customer(y)).await.expect("owner"),
        None,
        "a refused creation claims nothing"
    );
    assert!(!c.customer_known(y).await.expect("known"));
    match c.append(creating(x, vec![])).await {
        Err(ClusterError::OwnedElsewhere { .. }) => {}
        other => panic!("creating an owned customer: expected OwnedElsewhere, got {other:?}"),
    }
    // In a group: each member as if alone.
    let iz = Identity::new(IdentityKind::Email, "z@contract.example");
    let results = c
        .append_many(vec![
            creating(z, vec![iz.clone()]),
            batch(x, conv, token, 3..=3),
            creating(y, vec![ix.clone()]),
        ])
        .await;
    let tz = match &results[0] {
        Ok(t) => *t,
        other => panic!("a creation in a group: {other:?}"),
    };
    assert_eq!(
        c.owner(&ActorKey::Customer(z)).await.expect("owner"),
        Some(("contract-cr".to_owned(), tz))
    );
    assert_eq!(results[1], Ok(token), "the owner's batch in the group");
    assert!(
        matches!(results[2], Err(ClusterError::IdentityTaken { .. })),
        "the conflicting creation in the group fails alone: {:?}",
        results[2]
    );
    assert_eq!(c.lookup_identity(&iz).await.expect("lookup"), Some(z));
    c.leave(lease).await.expect("leave cr");
}

/// Queue definitions are kept, one per id, the latest winning.
pub async fn queues(c: &dyn Coordination) {
    let mut q = QueueConfig::open("contract-q");
    q.topics = vec!["billing".into()];
    c.save_queue(&q).await.expect("save a queue");
    q.topics = vec!["refunds".into()];
    c.save_queue(&q).await.expect("save it again");
    c.save_queue(&QueueConfig::open("contract-q2"))
        .await
        .expect("save another");
    let saved = c.queues().await.expect("list queues");
    let mine: Vec<_> = saved
        .iter()
        .filter(|s| s.id.as_str().starts_with("contract-q"))
        .collect();
    assert_eq!(mine.len(), 2, "one definition per queue id: {saved:?}");
    assert!(
        mine.contains(&&q),
        "the latest definition of a queue is the one kept: {saved:?}"
    );
}

/// The routing rules are kept whole; the KPIs are saved only by the
/// router's current owner, and read back exactly.
pub async fn router_documents(c: &dyn Coordination) {
    use centralino_core::kpi::{Counters, KpiReport};
    use centralino_core::rules::{Conditions, RoutingRule};
    assert_eq!(c.rules().await.expect("read rules"), None, "none set yet");
    let rules = vec![RoutingRule {
        name: "business".into(),
        when: Conditions {
            segments: vec!["business".into()],
            ..Default::default()
        },
        queue: None,
        priority_boost_ms: 20_000,
    }];
    c.save_rules(&rules).await.expect("save rules");
    assert_eq!(c.rules().await.expect("read rules"), Some(rules));
    c.save_rules(&[]).await.expect("clear rules");
    assert_eq!(
        c.rules().await.expect("read rules"),
        Some(Vec::new()),
        "cleared is not unset"
    );

    let lease = c
        .join(&node("contract-kpi"), Duration::from_secs(10))
        .await
        .expect("join");
    let router = ActorKey::Router(crate::topology::ROUTER.into());
    let epoch = c
        .claim(&router, "contract-kpi", lease)
        .await
        .expect("claim the router");
    let counters = Counters {
        offered: 7,
        answered: 5,
        busy_ms: 1_234,
        ..Default::default()
    };
    let report = KpiReport {
        queues: vec![("general".into(), counters)],
        channels: vec![(Channel::Chat, counters)],
        agents: vec![("anna".into(), counters)],
        total: counters,
    };
    c.save_kpis(&report, epoch).await.expect("save KPIs");
    assert_eq!(c.kpis().await.expect("read KPIs"), Some(report.clone()));
    let stale = c.save_kpis(&KpiReport::default(), epoch + 1).await;
    assert!(
        matches!(stale, Err(ClusterError::Fenced { .. })),
        "a router that is not the owner saves nothing: {stale:?}"
    );
    assert_eq!(c.kpis().await.expect("read KPIs"), Some(report));
    c.release(&router, epoch).await.expect("release the router");
    c.leave(lease).await.expect("leave");
}

fn node(id: &str) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        advertise: format!("127.0.0.1:{}", 7000 + id.len()),
    }
}

/// Joining makes a node a member and tells watchers; leaving undoes both.
pub async fn membership(c: &dyn Coordination) {
    let mut watch = c.watch_members().await.expect("watch members");
    let lease = c
        .join(&node("contract-a"), Duration::from_secs(10))
        .await
        .expect("join");
    c.keep_alive(lease)
        .await
        .expect("keep-alive of a live lease");
    assert!(
        c.members()
            .await
            .expect("members")
            .contains(&node("contract-a")),
        "a joined node is a member"
    );
    assert_eq!(
        next(&mut watch).await,
        MemberEvent::Joined(node("contract-a")),
        "watchers see the join"
    );
    c.leave(lease).await.expect("leave");
    assert!(
        !c.members()
            .await
            .expect("members")
            .contains(&node("contract-a")),
        "a node that left is no member"
    );
    assert_eq!(
        next(&mut watch).await,
        MemberEvent::Left("contract-a".into()),
        "watchers see the leave"
    );
    match c.keep_alive(lease).await {
        Err(ClusterError::LeaseExpired(l)) => assert_eq!(l, lease),
        other => panic!("a revoked lease cannot be kept alive, got {other:?}"),
    }
}

/// Exactly one owner; the token changes hands only through release.
pub async fn ownership(c: &dyn Coordination) {
    let la = c
        .join(&node("contract-b"), Duration::from_secs(10))
        .await
        .expect("join b");
    let lb = c
        .join(&node("contract-c"), Duration::from_secs(10))
        .await
        .expect("join c");
    let key = ActorKey::Customer(CustomerId(900_001));
    let t1 = c.claim(&key, "contract-b", la).await.expect("first claim");
    assert_eq!(
        c.claim(&key, "contract-b", la)
            .await
            .expect("re-claim by owner"),
        t1,
        "re-claim by the owner keeps its token"
    );
    match c.claim(&key, "contract-c", lb).await {
        Err(ClusterError::OwnedElsewhere { owner, .. }) => assert_eq!(owner, "contract-b"),
        other => panic!("a second node must not own a claimed actor, got {other:?}"),
    }
    assert_eq!(
        c.owner(&key).await.expect("owner"),
        Some(("contract-b".into(), t1))
    );
    c.release(&key, t1).await.expect("release by owner");
    let t2 = c
        .claim(&key, "contract-c", lb)
        .await
        .expect("claim after release");
    assert!(t2 > t1, "a new claim gets a newer fencing token");
    assert!(
        c.release(&key, t1).await.is_err(),
        "a stale token cannot release"
    );
    c.leave(la).await.expect("leave b");
    c.leave(lb).await.expect("leave c");
    assert_eq!(
        c.owner(&key).await.expect("owner"),
        None,
        "ownership goes with the owner's lease"
    );
    match c.claim(&key, "contract-b", la).await {
        Err(ClusterError::LeaseExpired(l)) => assert_eq!(l, la),
        other => panic!("a claim under a revoked lease must fail, got {other:?}"),
    }
    assert_eq!(
        c.owner(&key).await.expect("owner"),
        None,
        "nothing claimed under a revoked lease"
    );
}

/// Appends are kept in order and refused with a superseded token.
pub async fn journal_fencing(c: &dyn Coordination) {
    let la = c
        .join(&node("contract-d"), Duration::from_secs(10))
        .await
        .expect("join d");
    let lb = c
        .join(&node("contract-e"), Duration::from_secs(10))
        .await
        .expect("join e");
    let customer = CustomerId(900_002);
    let key = ActorKey::Customer(customer);
    let conv = ConversationId {
        customer,
        number: 1,
    };
    let t1 = c.claim(&key, "contract-d", la).await.expect("claim");
    c.append(batch(customer, conv, t1, 1..=3))
        .await
        .expect("append by owner");
    c.append(batch(customer, conv, t1, 4..=5))
        .await
        .expect("second append by owner");
    let r = c
        .load(customer)
        .await
        .expect("load")
        .expect("journal exists");
    assert_eq!(
        r.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2, 3, 4, 5],
        "events come back in order"
    );
    c.release(&key, t1).await.expect("release");
    let t2 = c.claim(&key, "contract-e", lb).await.expect("new owner");
    assert_fenced(
        c.append(batch(customer, conv, t1, 6..=6)).await,
        "the old owner's write is fenced out",
    );
    assert_fenced(
        c.append(batch(customer, conv, 0, 6..=6)).await,
        "token 0 does not write an owned journal",
    );
    c.append(batch(customer, conv, t2, 6..=6))
        .await
        .expect("the new owner writes");
    let r = c
        .load(customer)
        .await
        .expect("load")
        .expect("journal exists");
    assert_eq!(r.events.len(), 6, "nothing from the fenced writer");
    c.leave(la).await.expect("leave d");
    c.leave(lb).await.expect("leave e");
    assert_fenced(
        c.append(batch(customer, conv, t2, 7..=7)).await,
        "once its lease is revoked, the owner's token no longer writes",
    );
    let r = c
        .load(customer)
        .await
        .expect("load")
        .expect("journal exists");
    assert_eq!(
        r.events.len(),
        6,
        "nothing from the owner whose lease is gone"
    );
}

/// Without any owner (a single node that claims nothing) token 0 writes,
/// and only token 0.
pub async fn journal_without_owner(c: &dyn Coordination) {
    let customer = CustomerId(900_003);
    let conv = ConversationId {
        customer,
        number: 1,
    };
    assert_eq!(
        c.load(customer).await.expect("load"),
        None,
        "no journal before the first append"
    );
    c.append(batch(customer, conv, 0, 1..=2))
        .await
        .expect("token 0 writes an unowned journal");
    assert_fenced(
        c.append(batch(customer, conv, 12_345, 3..=3)).await,
        "a token nobody holds does not write",
    );
    let r = c
        .load(customer)
        .await
        .expect("load")
        .expect("journal exists");
    assert_eq!(
        r.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2]
    );
}

/// Closing a conversation takes its events out of the open journal; the
/// record stays, and the next conversation starts empty.
pub async fn journal_close(c: &dyn Coordination) {
    let lease = c
        .join(&node("contract-f"), Duration::from_secs(10))
        .await
        .expect("join f");
    let customer = CustomerId(900_004);
    let first = ConversationId {
        customer,
        number: 1,
    };
    let token = c
        .claim(&ActorKey::Customer(customer), "contract-f", lease)
        .await
        .expect("claim");
    c.append(batch(customer, first, token, 1..=3))
        .await
        .expect("append");
    c.append(closing_batch(customer, first, token, 4..=5))
        .await
        .expect("close");
    let r = c
        .load(customer)
        .await
        .expect("load")
        .expect("the record stays");
    assert_eq!(r.record.open, None, "no open conversation after the close");
    assert_eq!(
        r.events,
        vec![],
        "a closed conversation leaves no open events"
    );

    let second = ConversationId {
        customer,
        number: 2,
    };
    c.append(batch(customer, second, token, 1..=2))
        .await
        .expect("append to the next conversation");
    let r = c
        .load(customer)
        .await
        .expect("load")
        .expect("journal exists");
    assert_eq!(r.record.open, Some(second));
    assert_eq!(
        r.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
        vec![1, 2],
        "only the open conversation's events"
    );
    assert_fenced(
        c.append(closing_batch(customer, second, token + 1, 3..=3))
            .await,
        "a close is fenced too",
    );
    assert_fenced(
        c.append(closing_batch(customer, second, token + 1, 1..=3))
            .await,
        "a close with the whole history is fenced too",
    );
    c.append(closing_batch(customer, second, token, 1..=3))
        .await
        .expect("close with the whole history");
    let r = c
        .load(customer)
        .await
        .expect("load")
        .expect("the record stays");
    assert_eq!(
        r.events,
        vec![],
        "a close with the whole history leaves no open events"
    );
    c.leave(lease).await.expect("leave f");
}

fn assert_fenced<T: std::fmt::Debug>(r: crate::error::Result<T>, what: &str) {
    match r {
        Err(ClusterError::Fenced { .. }) => {}
        other => panic!("{what}: expected Fenced, got {other:?}"),
    }
}

/// A batch of events `seqs` of the open conversation `conv`.
pub fn batch(
    customer: CustomerId,
    conv: ConversationId,
    token: u64,
    seqs: std::ops::RangeInclusive<u64>,
) -> JournalBatch {
    JournalBatch {
        record: CustomerRecord {
            id: customer,
            attributes: Attributes::default(),
            identities: vec![],
            opened: 1,
            last_agent: None,
            open: Some(conv),
            merged_into: None,
            campaigns: vec![],
        },
        conversation: Some(conv),
        events: seqs
            .map(|seq| HistoryEvent {
                seq,
                at: seq,
                kind: EventKind::Resolved {
                    by: "contract".into(),
                },
            })
            .collect(),
        closed: false,
        snapshot: None,
        token,
        create: None,
    }
}

/// A batch that closes `conv` with its last events `seqs`.
pub fn closing_batch(
    customer: CustomerId,
    conv: ConversationId,
    token: u64,
    seqs: std::ops::RangeInclusive<u64>,
) -> JournalBatch {
    let mut b = batch(customer, conv, token, seqs);
    b.record.open = None;
    b.closed = true;
    b
}

async fn next(rx: &mut tokio::sync::mpsc::Receiver<MemberEvent>) -> MemberEvent {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("membership event within 10 s")
        .expect("watch open")
}

/// A customer driven by hand the way its actor drives it: each change goes
/// through the core's transitions, and [`batch`](Script::batch) is the batch
/// the actor would commit next ([`JournalBatch::of`]), snapshot included
/// when one is due.
pub struct Script {
    pub customer: Customer,
    durable_seq: u64,
    token: u64,
    now: TimeMs,
}

impl Script {
    pub fn new(customer: CustomerId, token: u64) -> Script {
        let mut c = Customer::new(customer, Vec::new());
        c.attributes.tier = Some("gold".into());
        c.attributes.language = Some("it".into());
        Script {
            customer: c,
            durable_seq: 0,
            token,
            now: 1_700_000_000_000,
        }
    }

    /// A customer taken over by a new owner (holding `token`) with
    /// everything it had durable, as an actor starts from a recovery or a
    /// hand-over.
    pub fn taken_over(customer: Customer, token: u64) -> Script {
        let durable_seq = customer.history().len() as u64;
        let now = customer.history().last().map_or(0, |e| e.at);
        Script {
            customer,
            durable_seq,
            token,
            now,
        }
    }

    fn tick(&mut self) -> TimeMs {
        self.now += 1_500;
        self.now
    }

    /// The open conversation (opening one is the caller's first step).
    pub fn conversation(&self) -> ConversationId {
        self.customer
            .open
            .as_ref()
            .map(|c| c.id)
            .expect("the script opened a conversation")
    }

    /// The customer writes (or calls) on `channel`.
    pub fn message(&mut self, channel: Channel, text: &str) -> &mut Self {
        let identity = match channel {
            Channel::Voice | Channel::Sms | Channel::WhatsApp => Identity::new(
                IdentityKind::Phone,
                &format!("+39 02 555 {:04}", self.customer.id.0 % 10_000),
            ),
            Channel::Email => Identity::new(
                IdentityKind::Email,
                &format!("{}@example.it", self.customer.id),
            ),
            _ => Identity::new(
                IdentityKind::ChatSession,
                &format!("chat-{}", self.customer.id),
            ),
        };
        let now = self.tick();
        self.customer.contact(
            now,
            Contact {
                channel,
                identity,
                topic: "billing".into(),
                text: text.into(),
                sentiment: Some(-0.3),
                attributes: Attributes::default(),
            },
        );
        self
    }

    /// A routing decision or any other event about the open conversation.
    pub fn record(&mut self, kind: EventKind) -> &mut Self {
        let now = self.tick();
        let conv = self.conversation();
        self.customer
            .record(now, conv, kind)
            .expect("the conversation is open");
        self
    }

    /// The assigned agent replies.
    pub fn reply(&mut self, agent: &str, text: &str) -> &mut Self {
        let now = self.tick();
        let conv = self.conversation();
        self.customer
            .agent_reply(now, conv, &AgentId::new(agent), text.into())
            .expect("the agent is assigned");
        self
    }

    /// What the actor would commit now.
    pub fn batch(&self) -> JournalBatch {
        JournalBatch::of(&self.customer, self.durable_seq, false, self.token)
    }

    /// Resolves the open conversation; the closing batch.
    pub fn close(&mut self, agent: &str) -> JournalBatch {
        self.record(EventKind::Resolved { by: agent.into() });
        JournalBatch::of(&self.customer, self.durable_seq, true, self.token)
    }

    /// `batch` was committed: as the actor does after a successful commit.
    pub fn committed(&mut self, batch: &JournalBatch) {
        if batch.closed {
            self.customer.open = None;
            self.durable_seq = 0;
        } else {
            self.durable_seq = self.customer.history().len() as u64;
        }
    }
}

/// An explanation as the router records one: the chosen agent and four
/// passed over.
pub fn explanation(queue: &str, chosen: &str) -> Box<Explanation> {
    let mut candidates = vec![Candidate {
        agent: AgentId::new(chosen),
        key: 120_000,
        passed_over: None,
    }];
    for (i, why) in [
        PassedOver::RankedLower,
        PassedOver::RankedLower,
        PassedOver::NoCapacity,
        PassedOver::SkillsNotMet,
    ]
    .into_iter()
    .enumerate()
    {
        candidates.push(Candidate {
            agent: AgentId::new(format!("agent-{i}")),
            key: 60_000 - i as u64 * 10_000,
            passed_over: Some(why),
        });
    }
    Box::new(Explanation {
        queue: queue.into(),
        rule: Rule::LongestIdle,
        score_ms: -17_250,
        priority: PriorityBreakdown {
            sla_target_ms: 60_000,
            tier_boost_ms: 30_000,
            topic_boost_ms: 0,
            sentiment_boost_ms: 18_000,
            rule_boost_ms: 0,
            waited_ms: 2_750,
        },
        bullseye_step: 0,
        routing_rule: None,
        candidates,
    })
}

/// Drives `script` through `steps` more steps of a long conversation that
/// goes round and round (messages on two channels, queued, offered,
/// assigned, replies, wrap-up, callback), committing in batches of one to
/// three steps as an actor would; every batch through `c`.
pub async fn long_conversation(c: &dyn Coordination, script: &mut Script, steps: u64) {
    let mut step = 0;
    while step < steps {
        for _ in 0..=(step % 3) {
            match (step, step % 8) {
                (0, _) | (_, 0) => script.message(Channel::Chat, "la fattura di marzo è sbagliata"),
                (_, 1) => script.record(EventKind::Queued {
                    queue: "billing".into(),
                    channel: Channel::Chat,
                }),
                (_, 2) => script.record(EventKind::Offered {
                    agent: AgentId::new("anna"),
                    offer: OfferId(step),
                    explanation: explanation("billing", "anna"),
                }),
                (_, 3) => script.record(EventKind::Assigned {
                    agent: AgentId::new("anna"),
                }),
                (_, 4) => script.reply("anna", "controllo subito"),
                (_, 5) => script.message(Channel::Voice, "vi chiamo"),
                (_, 6) => script.record(EventKind::WrappedUp {
                    agent: AgentId::new("anna"),
                    disposition: "explained".into(),
                }),
                _ => script.record(EventKind::CallbackRequested {
                    channel: Channel::Voice,
                    to: Identity::new(IdentityKind::Phone, "+39 02 555 0000"),
                    not_before: 0,
                }),
            };
            step += 1;
        }
        let b = script.batch();
        c.append(b.clone()).await.expect("the owner appends");
        script.committed(&b);
    }
}

/// A conversation of more than twice [`SNAPSHOT_EVERY`] events is kept as
/// a snapshot and a short tail, and recovers to the very customer that was
/// live, the same one that replaying every event gives; a close takes the
/// snapshot away with the events.
pub async fn journal_snapshots(c: &dyn Coordination) {
    let lease = c
        .join(&node("contract-s"), Duration::from_secs(10))
        .await
        .expect("join s");
    let customer = CustomerId(900_501);
    let token = c
        .claim(&ActorKey::Customer(customer), "contract-s", lease)
        .await
        .expect("claim");
    let mut script = Script::new(customer, token);
    long_conversation(c, &mut script, 2 * SNAPSHOT_EVERY + 40).await;
    let live = script.customer.clone();
    let history = live.history().to_vec();

    let r = c.load(customer).await.expect("load").expect("journaled");
    let snapshot = r.snapshot.clone().expect("a snapshot was taken");
    let covered = snapshot.history.last_seq();
    assert!(
        covered >= 2 * SNAPSHOT_EVERY,
        "the latest snapshot covers the second {SNAPSHOT_EVERY} events, got {covered}"
    );
    assert_eq!(
        snapshot.history.events(),
        &history[..covered as usize],
        "the snapshot holds the whole history up to its point"
    );
    assert_eq!(
        r.events,
        history[covered as usize..].to_vec(),
        "only the tail comes back as events"
    );
    assert!(
        r.events.len() < SNAPSHOT_EVERY as usize,
        "recovery replays fewer than {SNAPSHOT_EVERY} events, got {}",
        r.events.len()
    );
    let every_event = rebuild(Recovered {
        record: r.record.clone(),
        snapshot: None,
        events: history.clone(),
    });
    let recovered = rebuild(r);
    assert_eq!(recovered, live, "recovers to the customer that was live");
    assert_eq!(
        recovered, every_event,
        "the same customer as replaying every event"
    );

    let close = script.close("anna");
    c.append(close.clone()).await.expect("close");
    script.committed(&close);
    let r = c
        .load(customer)
        .await
        .expect("load")
        .expect("the record stays");
    assert_eq!(
        (r.record.open, r.snapshot, r.events),
        (None, None, vec![]),
        "a close leaves neither snapshot nor events"
    );
    script.message(Channel::Email, "una nuova domanda");
    let b = script.batch();
    c.append(b.clone()).await.expect("the next conversation");
    let r = c.load(customer).await.expect("load").expect("journaled");
    assert_eq!(r.snapshot, None, "the next conversation starts without one");
    assert_eq!(r.events.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1]);
    c.leave(lease).await.expect("leave s");
}

/// A snapshot is a journal write like any other: once another node owns
/// the customer, the old owner's snapshot is refused and changes nothing.
pub async fn snapshot_fencing(c: &dyn Coordination) {
    let la = c
        .join(&node("contract-t1"), Duration::from_secs(10))
        .await
        .expect("join t1");
    let lb = c
        .join(&node("contract-t2"), Duration::from_secs(10))
        .await
        .expect("join t2");
    let customer = CustomerId(900_502);
    let key = ActorKey::Customer(customer);
    let old = c.claim(&key, "contract-t1", la).await.expect("claim");
    let mut stale = Script::new(customer, old);
    long_conversation(c, &mut stale, SNAPSHOT_EVERY - 10).await;
    let before = c.load(customer).await.expect("load");
    c.transfer(&key, old, "contract-t2", lb)
        .await
        .expect("transfer");
    for _ in 0..10 {
        stale.message(Channel::Chat, "ancora io");
    }
    let b = stale.batch();
    assert!(
        b.snapshot.is_some(),
        "the stale owner's batch carries a snapshot"
    );
    assert_fenced(c.append(b).await, "a stale owner's snapshot");
    assert_eq!(
        c.load(customer).await.expect("load"),
        before,
        "the fenced snapshot changed nothing"
    );
    c.leave(la).await.expect("leave t1");
    c.leave(lb).await.expect("leave t2");
}
