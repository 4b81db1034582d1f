//! The coordination contract against a real etcd, and what only a real etcd
//! can do to a client: compact the history a watcher still needs, restart,
//! refuse an oversized request.
//!
//! Each test starts its own etcd (on tmpfs, about a second) so that tests
//! can stop and restart it without disturbing each other.

use std::time::Duration;

use centralino_cluster::etcd::EtcdOptions;
use centralino_cluster::{
    ActorKey, ClusterError, Coordination, EtcdCoordination, MemberEvent, NodeInfo, contract,
};
use centralino_core::{ConversationId, CustomerId};
use centralino_tests::etcd::{EtcdServer, Link};
use centralino_tests::{DEADLINE, eventually, within};
use tokio::sync::mpsc;

/// Short, so that calls to a stopped etcd fail quickly.
const TIMEOUT: Duration = Duration::from_secs(1);

const TTL: Duration = Duration::from_secs(30);

async fn connect(endpoints: Vec<String>, prefix: &str) -> EtcdCoordination {
    let opts = EtcdOptions {
        timeout: TIMEOUT,
        ..EtcdOptions::default()
    };
    within(
        "connecting to etcd",
        EtcdCoordination::connect_with(&endpoints, prefix, opts),
    )
    .await
    .expect("connect to etcd")
}

fn node(id: &str) -> NodeInfo {
    NodeInfo {
        id: id.into(),
        advertise: format!("127.0.0.1:{}", 9000 + id.len()),
    }
}

async fn next(rx: &mut mpsc::Receiver<MemberEvent>, what: &str) -> MemberEvent {
    within(what, rx.recv())
        .await
        .expect("the member watch is open")
}

fn assert_unavailable<T: std::fmt::Debug>(r: Result<T, ClusterError>, what: &str) {
    match r {
        Err(ClusterError::Unavailable(msg)) => assert!(!msg.is_empty()),
        other => panic!("{what}: expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn etcd_passes_the_contract() {
    let etcd = EtcdServer::start();
    let c = connect(etcd.endpoints(), "/centralino/contract/").await;
    contract::run_all(&c).await;
}

#[tokio::test]
async fn connecting_to_no_etcd_is_unavailable_not_a_hang() {
    // A port that was free a moment ago: nothing answers there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let opts = EtcdOptions {
        timeout: TIMEOUT,
        ..EtcdOptions::default()
    };
    let r = within(
        "connect to fail",
        EtcdCoordination::connect_with(&[format!("http://127.0.0.1:{port}")], "/x/", opts),
    )
    .await;
    assert_unavailable(r.map(|_| ()), "connecting to nothing");
}

/// A watcher cut off from etcd while members change and the history is
/// compacted still reports the difference once it is back, then keeps
/// reporting later changes.
#[tokio::test]
async fn member_watch_recovers_after_compaction() {
    let etcd = EtcdServer::start();
    let link = Link::to(&etcd.endpoint());
    let prefix = "/centralino/watch/";
    let watcher = connect(vec![link.endpoint()], prefix).await;
    let other = connect(etcd.endpoints(), prefix).await;

    let mut rx = watcher.watch_members().await.expect("watch members");
    let la = other.join(&node("a"), TTL).await.expect("join a");
    assert_eq!(
        next(&mut rx, "a's join").await,
        MemberEvent::Joined(node("a"))
    );

    // The watcher falls behind: cut off while b joins and a leaves, and
    // the revisions it has not seen are compacted away.
    link.cut();
    let lb = other.join(&node("b"), TTL).await.expect("join b");
    other.leave(la).await.expect("a leaves");
    etcd.compact(etcd.revision());
    link.heal();

    // Watching from its last revision + 1 now fails (compacted), so the
    // watcher lists the members again and reports the difference: leaves
    // first, then joins. (Replayed events would come in the opposite
    // order: b joined before a left.)
    assert_eq!(
        next(&mut rx, "a's leave, after the compaction").await,
        MemberEvent::Left("a".into())
    );
    assert_eq!(
        next(&mut rx, "b's join, after the compaction").await,
        MemberEvent::Joined(node("b"))
    );

    let lc = other.join(&node("c"), TTL).await.expect("join c");
    assert_eq!(
        next(&mut rx, "c's join after recovery").await,
        MemberEvent::Joined(node("c"))
    );
    other.leave(lb).await.expect("b leaves");
    assert_eq!(
        next(&mut rx, "b's leave after recovery").await,
        MemberEvent::Left("b".into())
    );
    other.leave(lc).await.expect("c leaves");
    assert_eq!(
        next(&mut rx, "c's leave").await,
        MemberEvent::Left("c".into())
    );
}

/// etcd stops: calls fail with Unavailable within the timeout instead of
/// hanging. It restarts with its data: the same client works again, the
/// journal, the lease and the ownership are intact, and the member watch
/// resumes. The same holds after a SIGKILL: what etcd acknowledged is on
/// disk.
#[tokio::test]
async fn etcd_restart_mid_run() {
    let mut etcd = EtcdServer::start();
    let c = connect(etcd.endpoints(), "/centralino/restart/").await;
    let customer = CustomerId(7);
    let conv = ConversationId {
        customer,
        number: 1,
    };
    let lease = c.join(&node("n1"), TTL).await.expect("join");
    let mut rx = c.watch_members().await.expect("watch members");
    let token = c
        .claim(&ActorKey::Customer(customer), "n1", lease)
        .await
        .expect("claim");
    c.append(contract::batch(customer, conv, token, 1..=3))
        .await
        .expect("append");

    for (round, how) in [(1, "stop"), (2, "kill")] {
        if how == "stop" {
            etcd.stop();
        } else {
            etcd.kill();
        }
        assert_unavailable(
            within("members() with etcd down", c.members()).await,
            "members",
        );
        assert_unavailable(
            within("keep_alive() with etcd down", c.keep_alive(lease)).await,
            "keep-alive (not LeaseExpired: the lease may well be alive)",
        );
        let seq = 3 + round;
        assert_unavailable(
            within(
                "append() with etcd down",
                c.append(contract::batch(customer, conv, token, seq..=seq)),
            )
            .await,
            "append",
        );

        etcd.restart();
        eventually(
            DEADLINE,
            "the client reaches the restarted etcd",
            || async { c.members().await.is_ok() },
        )
        .await;
        assert_eq!(
            c.members().await.expect("members"),
            vec![node("n1")],
            "the member survives"
        );
        c.keep_alive(lease)
            .await
            .expect("the lease survives the restart");
        assert_eq!(
            c.owner(&ActorKey::Customer(customer)).await.expect("owner"),
            Some(("n1".into(), token)),
            "ownership and token survive"
        );
        let r = c.load(customer).await.expect("load").expect("the journal");
        let expected: Vec<u64> = (1..=2 + round).collect();
        assert_eq!(
            r.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            expected,
            "acknowledged events survive, the refused one is not there ({how})"
        );
        c.append(contract::batch(customer, conv, token, seq..=seq))
            .await
            .expect("the owner writes again");

        let id = format!("after-{how}");
        let l2 = c.join(&node(&id), TTL).await.expect("join");
        assert_eq!(
            next(&mut rx, "a join after the restart").await,
            MemberEvent::Joined(node(&id)),
            "the member watch resumes after the {how}"
        );
        c.leave(l2).await.expect("leave");
        assert_eq!(
            next(&mut rx, "a leave after the restart").await,
            MemberEvent::Left(id)
        );
    }
}

/// An operator reads the cluster's state with etcdctl.
#[tokio::test]
async fn etcd_layout_is_readable() {
    let etcd = EtcdServer::start();
    let prefix = "/centralino/layout/";
    let c = connect(etcd.endpoints(), prefix).await;
    let lease = c.join(&node("n1"), TTL).await.expect("join");
    let customer = CustomerId(42);
    let (first, second) = (
        ConversationId {
            customer,
            number: 1,
        },
        ConversationId {
            customer,
            number: 2,
        },
    );
    let token = c
        .claim(&ActorKey::Customer(customer), "n1", lease)
        .await
        .expect("claim");
    c.claim(&ActorKey::Agent("alice".into()), "n1", lease)
        .await
        .expect("claim agent");
    c.claim(&ActorKey::Router("main".into()), "n1", lease)
        .await
        .expect("claim router");
    c.append(contract::batch(customer, first, token, 1..=2))
        .await
        .expect("append");
    c.append(contract::closing_batch(customer, first, token, 3..=3))
        .await
        .expect("close");
    c.append(contract::batch(customer, second, token, 1..=2))
        .await
        .expect("append");

    let keys = etcd.keys(prefix);
    println!("{}", keys.join("\n"));
    let expected = [
        "archive/cu-42.1",
        "journal/cu-42/events/2/00000000000000000001",
        "journal/cu-42/events/2/00000000000000000002",
        "journal/cu-42/record",
        "members/n1",
        "owners/agent/alice",
        "owners/customer/cu-42",
        "owners/router/main",
        "placed/cu-42",
    ]
    .map(|k| format!("{prefix}{k}"));
    assert_eq!(keys, expected, "the key layout");

    assert_eq!(
        etcd.value(&format!("{prefix}owners/customer/cu-42"))
            .as_deref(),
        Some("n1")
    );
    assert_eq!(
        etcd.value(&format!("{prefix}placed/cu-42")).as_deref(),
        Some("n1"),
        "the placement names the owner"
    );
    let member = etcd
        .value(&format!("{prefix}members/n1"))
        .expect("member value");
    assert!(
        member.contains("\"advertise\":\"127.0.0.1:9002\""),
        "{member}"
    );
    let archive = etcd
        .value(&format!("{prefix}archive/cu-42.1"))
        .expect("archive value");
    assert_eq!(
        archive.matches("\"seq\":").count(),
        3,
        "the whole closed conversation is archived: {archive}"
    );

    c.leave(lease).await.expect("leave");
    let keys = etcd.keys(prefix);
    assert!(
        keys.iter()
            .all(|k| !k.contains("/members/") && !k.contains("/owners/")),
        "membership and ownership go with the lease: {keys:?}"
    );
}

/// Batches etcd would refuse are refused before they are sent, and write
/// nothing.
#[tokio::test]
async fn oversized_batches_are_refused_before_etcd() {
    let etcd = EtcdServer::start();
    let opts = EtcdOptions {
        timeout: TIMEOUT,
        max_request_bytes: 2_000,
        ..EtcdOptions::default()
    };
    let c = EtcdCoordination::connect_with(&etcd.endpoints(), "/centralino/limits/", opts)
        .await
        .expect("connect");
    let customer = CustomerId(1);
    let conv = ConversationId {
        customer,
        number: 1,
    };
    let too_many_bytes = c.append(contract::batch(customer, conv, 0, 1..=40)).await;
    match too_many_bytes {
        Err(ClusterError::Unavailable(msg)) => assert!(msg.contains("limit"), "{msg}"),
        other => panic!("a batch over the byte limit must be refused, got {other:?}"),
    }

    let c = connect(etcd.endpoints(), "/centralino/limits/").await;
    let too_many_ops = c.append(contract::batch(customer, conv, 0, 1..=200)).await;
    match too_many_ops {
        Err(ClusterError::Unavailable(msg)) => assert!(msg.contains("operations"), "{msg}"),
        other => panic!("a batch over etcd's operation limit must be refused, got {other:?}"),
    }
    assert_eq!(
        c.load(customer).await.expect("load"),
        None,
        "nothing was written"
    );
    c.append(contract::batch(customer, conv, 0, 1..=100))
        .await
        .expect("a batch within the limits is written");
}
