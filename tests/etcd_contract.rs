//! The coordination contract against a real etcd, and what only a real etcd
//! can do to a client: compact the history a watcher still needs, restart,
//! refuse an oversized request. And what etcd holds per conversation,
//! measured (`etcd_bytes_per_active_and_closed_conversation`).
//!
//! Each test starts its own etcd (on tmpfs, about a second) so that tests
//! can stop and restart it without disturbing each other.

use std::sync::Arc;
use std::time::Duration;

use centralino_actors::journal::{Journal, SNAPSHOT_EVERY};
use centralino_cluster::etcd::EtcdOptions;
use centralino_cluster::journal::CoordinatedJournal;
use centralino_cluster::{
    ActorKey, Archive, ClusterError, Coordination, EtcdCoordination, MemberEvent, MemoryArchive,
    NodeInfo, contract,
};
use centralino_core::history::EventKind;
use centralino_core::{
    AgentId, Channel, ConversationId, CustomerId, Identity, IdentityKind, OfferId,
};
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

    // A long conversation: a snapshot and the events after it.
    let long = CustomerId(43);
    let long_token = c
        .claim(&ActorKey::Customer(long), "n1", lease)
        .await
        .expect("claim");
    let mut script = contract::Script::new(long, long_token);
    contract::long_conversation(&c, &mut script, SNAPSHOT_EVERY + 10).await;
    let covered = c
        .load(long)
        .await
        .expect("load")
        .and_then(|r| r.snapshot)
        .expect("a snapshot")
        .history
        .last_seq();

    let keys = etcd.keys(prefix);
    println!("{}", keys.join("\n"));
    let (long_keys, keys): (Vec<String>, Vec<String>) =
        keys.into_iter().partition(|k| k.contains("/cu-43"));
    let tail: Vec<String> = ((covered + 1)..=script.customer.history().len() as u64)
        .map(|seq| format!("journal/cu-43/events/1/{seq:020}"))
        .collect();
    let expected_long: Vec<String> = tail
        .iter()
        .map(String::as_str)
        .chain([
            "journal/cu-43/record",
            "journal/cu-43/snapshot",
            "owners/customer/cu-43",
            "placed/cu-43",
        ])
        .map(|k| format!("{prefix}{k}"))
        .collect();
    assert_eq!(
        long_keys, expected_long,
        "a long conversation: the events after its snapshot, the record, the snapshot"
    );
    let expected = [
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
    let snapshot = etcd
        .value(&format!("{prefix}journal/cu-43/snapshot"))
        .expect("snapshot value");
    assert_eq!(
        snapshot.matches("\"seq\":").count() as u64,
        covered,
        "the snapshot holds the whole history up to its point"
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
        Err(ClusterError::Rejected(msg)) => assert!(msg.contains("limit"), "{msg}"),
        other => panic!("a batch over the byte limit must be refused, got {other:?}"),
    }

    let c = connect(etcd.endpoints(), "/centralino/limits/").await;
    let too_many_ops = c.append(contract::batch(customer, conv, 0, 1..=200)).await;
    match too_many_ops {
        Err(ClusterError::Rejected(msg)) => assert!(msg.contains("operations"), "{msg}"),
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

/// A conversation whose history no longer fits in one etcd request cannot
/// take its next snapshot: the batch is refused with a message that says
/// so and what to do, nothing is written, and the conversation can still
/// be closed (a close sends no history to etcd).
#[tokio::test]
async fn a_conversation_that_outgrows_one_request_is_refused_and_can_close() {
    let etcd = EtcdServer::start();
    let opts = EtcdOptions {
        timeout: TIMEOUT,
        max_request_bytes: 64 * 1024,
        ..EtcdOptions::default()
    };
    let c = EtcdCoordination::connect_with(&etcd.endpoints(), "/centralino/outgrown/", opts)
        .await
        .expect("connect");
    let customer = CustomerId(1);
    let mut script = contract::Script::new(customer, 0);
    // Long messages: the first snapshot (at SNAPSHOT_EVERY events) is
    // over 64 KiB, each event alone far under it.
    let text = "x".repeat(400);
    let mut refused = None;
    for _ in 0..SNAPSHOT_EVERY {
        script.message(Channel::Chat, &text);
        let b = script.batch();
        match c.append(b.clone()).await {
            Ok(_) => script.committed(&b),
            Err(e) => {
                refused = Some((b, e));
                break;
            }
        }
    }
    let (batch, error) = refused.expect("the snapshot batch is refused");
    assert!(
        batch.snapshot.is_some(),
        "it is the batch with the snapshot"
    );
    match error {
        ClusterError::Rejected(msg) => {
            assert!(msg.contains("cu-1.1 has outgrown the journal"), "{msg}");
            assert!(msg.contains("resolve the conversation"), "{msg}");
        }
        other => panic!("expected Rejected, got {other:?}"),
    }
    let r = c.load(customer).await.expect("load").expect("journaled");
    assert_eq!(r.snapshot, None, "nothing of the refused batch was written");
    assert_eq!(r.events.len() as u64, SNAPSHOT_EVERY - 1);

    let close = script.close("anna");
    c.append(close)
        .await
        .expect("the conversation can still close");
    let r = c
        .load(customer)
        .await
        .expect("load")
        .expect("the record stays");
    assert_eq!((r.record.open, r.snapshot, r.events), (None, None, vec![]));
    assert_eq!(
        etcd.keys("/centralino/outgrown/"),
        vec!["/centralino/outgrown/journal/cu-1/record".to_string()],
        "only the record is left"
    );
}

/// Conversations measured by the footprint test.
const FOOTPRINT_CONVERSATIONS: u64 = 1_000;

/// Customers journaling at once while the footprint test fills etcd.
const FOOTPRINT_IN_FLIGHT: u64 = 50;

/// Keys and bytes (key + value) under a prefix, by kind of key, and the
/// size of etcd's database once compacted and defragmented.
#[derive(Debug, Default)]
struct Usage {
    kinds: std::collections::BTreeMap<&'static str, (u64, u64)>,
    db_bytes: i64,
}

impl Usage {
    async fn measure(client: &mut etcd_client::Client, prefix: &str) -> Usage {
        let resp = client
            .get(prefix, Some(etcd_client::GetOptions::new().with_prefix()))
            .await
            .expect("read the prefix");
        let mut usage = Usage::default();
        for kv in resp.kvs() {
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            let rest = key.strip_prefix(prefix).expect("under the prefix");
            let kind = match rest.split('/').next().unwrap_or_default() {
                "journal" if rest.ends_with("/record") => "journal record",
                "journal" if rest.ends_with("/snapshot") => "journal snapshot",
                "journal" => "journal events",
                "identities" => "identities",
                "customers" => "customers",
                "owners" => "owners",
                "placed" => "placed",
                "members" => "members",
                _ => "other",
            };
            let entry = usage.kinds.entry(kind).or_default();
            entry.0 += 1;
            entry.1 += (kv.key().len() + kv.value().len()) as u64;
        }
        // What the quota counts is the database file: compacted (old
        // revisions dropped) and defragmented (free pages returned), it
        // holds the live keys and etcd's own overhead per key.
        let revision = resp.header().map_or(0, |h| h.revision());
        client
            .compact(
                revision,
                Some(etcd_client::CompactionOptions::new().with_physical()),
            )
            .await
            .expect("compact");
        client.defragment().await.expect("defragment");
        usage.db_bytes = client.status().await.expect("status").db_size();
        usage
    }

    fn of(&self, kind: &str) -> (u64, u64) {
        self.kinds.get(kind).copied().unwrap_or_default()
    }

    fn total(&self, kinds: &[&str]) -> (u64, u64) {
        kinds
            .iter()
            .map(|k| self.of(k))
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    }
}

/// The keys a customer has in etcd: its journal, its identity, its
/// existence, and its ownership while its actor runs.
const CUSTOMER_KINDS: [&str; 7] = [
    "journal events",
    "journal snapshot",
    "journal record",
    "identities",
    "customers",
    "owners",
    "placed",
];

/// A typical conversation, committed step by step as the customer actor
/// commits it: a chat message, queued, offered (with a five-candidate
/// explanation), assigned, and three replies and two more messages, then
/// wrapped up. Ten events.
async fn typical_conversation(
    c: &EtcdCoordination,
    journal: &CoordinatedJournal,
    lease: i64,
    customer: CustomerId,
) -> contract::Script {
    let identity = Identity::new(IdentityKind::ChatSession, &format!("chat-{customer}"));
    c.link_identity(&identity, customer)
        .await
        .expect("link the identity");
    let token = c
        .claim(&ActorKey::Customer(customer), "n1", lease)
        .await
        .expect("claim");
    let mut s = contract::Script::new(customer, token);
    let anna = AgentId::new("anna");
    let steps: [&(dyn Fn(&mut contract::Script) + Sync); 10] = [
        &|s| {
            s.message(
                Channel::Chat,
                "Buongiorno, la fattura di marzo riporta un importo doppio rispetto al solito: potete verificare?",
            );
        },
        &|s| {
            s.record(EventKind::Queued {
                queue: "billing".into(),
                channel: Channel::Chat,
            });
        },
        &|s| {
            s.record(EventKind::Offered {
                agent: anna.clone(),
                offer: OfferId(s.customer.id.0),
                explanation: contract::explanation("billing", "anna"),
            });
        },
        &|s| {
            s.record(EventKind::Assigned {
                agent: anna.clone(),
            });
        },
        &|s| {
            s.reply(
                "anna",
                "Buongiorno, sono Anna. Verifico subito la fattura di marzo, un momento.",
            );
        },
        &|s| {
            s.message(Channel::Chat, "Grazie, resto in attesa.");
        },
        &|s| {
            s.reply(
                "anna",
                "Ho trovato un addebito duplicato: lo stornerò nella prossima fattura, senza costi.",
            );
        },
        &|s| {
            s.message(Channel::Chat, "Perfetto, grazie mille!");
        },
        &|s| {
            s.reply("anna", "Grazie a lei, buona giornata.");
        },
        &|s| {
            s.record(EventKind::WrappedUp {
                agent: anna.clone(),
                disposition: "billing: duplicate charge refunded".into(),
            });
        },
    ];
    for step in steps {
        step(&mut s);
        let b = s.batch();
        journal.commit(b.clone()).await.expect("commit");
        s.committed(&b);
    }
    s
}

/// What etcd holds per active and per closed conversation, measured on a
/// real etcd: FOOTPRINT_CONVERSATIONS typical conversations are journaled
/// (through the journal the nodes use, group commit included), measured,
/// resolved, measured again. Prints the numbers (ARCHITECTURE.md, "What
/// etcd holds", quotes them); asserts that a closed conversation leaves
/// only the customer's record in the journal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcd_bytes_per_active_and_closed_conversation() {
    let etcd = EtcdServer::start();
    let prefix = "/centralino/footprint/";
    let c = Arc::new(connect(etcd.endpoints(), prefix).await);
    let archive = Arc::new(MemoryArchive::new());
    let lease = c.join(&node("n1"), TTL).await.expect("join");
    let journal = Arc::new(CoordinatedJournal::new(
        c.clone(),
        archive.clone(),
        "n1",
        lease,
    ));
    let mut client = etcd_client::Client::connect(etcd.endpoints(), None)
        .await
        .expect("connect a raw client");
    let empty = Usage::measure(&mut client, prefix).await;

    let mut workers = tokio::task::JoinSet::new();
    for w in 0..FOOTPRINT_IN_FLIGHT {
        let (c, journal) = (c.clone(), journal.clone());
        workers.spawn(async move {
            let mut scripts = Vec::new();
            let mut n = 1 + w;
            while n <= FOOTPRINT_CONVERSATIONS {
                scripts.push(typical_conversation(&c, &journal, lease, CustomerId(n)).await);
                n += FOOTPRINT_IN_FLIGHT;
            }
            scripts
        });
    }
    let mut scripts = Vec::new();
    while let Some(done) = workers.join_next().await {
        scripts.push(done.expect("a worker"));
    }
    let events = scripts[0][0].customer.history().len() as u64;
    let active = Usage::measure(&mut client, prefix).await;

    let mut workers = tokio::task::JoinSet::new();
    for mut batch in scripts {
        let journal = journal.clone();
        workers.spawn(async move {
            for s in &mut batch {
                let close = s.close("anna");
                journal.commit(close.clone()).await.expect("close");
                s.committed(&close);
            }
        });
    }
    while let Some(done) = workers.join_next().await {
        done.expect("a worker");
    }
    let closed = Usage::measure(&mut client, prefix).await;

    let n = FOOTPRINT_CONVERSATIONS;
    let per = |bytes: u64| bytes as f64 / n as f64;
    println!(
        "\netcd footprint of {n} typical conversations ({events} events each: 3 messages in, \
         3 replies, queued, offered with a 5-candidate explanation, assigned, wrapped up)"
    );
    println!(
        "{:<18} {:>13} {:>15} {:>13} {:>15}",
        "kind of key", "active: keys", "bytes/conv.", "closed: keys", "bytes/conv."
    );
    for kind in CUSTOMER_KINDS {
        let (ak, ab) = active.of(kind);
        let (ck, cb) = closed.of(kind);
        println!(
            "{kind:<18} {ak:>13} {:>15.0} {ck:>13} {:>15.0}",
            per(ab),
            per(cb)
        );
    }
    let (ak, ab) = active.total(&CUSTOMER_KINDS);
    let (ck, cb) = closed.total(&CUSTOMER_KINDS);
    println!(
        "{:<18} {ak:>13} {:>15.0} {ck:>13} {:>15.0}",
        "all of a customer",
        per(ab),
        per(cb)
    );
    let (_, journal_active) = active.total(&CUSTOMER_KINDS[..3]);
    let (_, journal_closed) = closed.total(&CUSTOMER_KINDS[..3]);
    println!(
        "journal only: {:.0} bytes per active conversation, {:.0} per closed one",
        per(journal_active),
        per(journal_closed)
    );
    let db_active = (active.db_bytes - empty.db_bytes).max(0) as u64;
    let db_closed = (closed.db_bytes - empty.db_bytes).max(0) as u64;
    println!(
        "etcd database (compacted, defragmented): {} bytes empty, {:.0} bytes per active conversation, \
         {:.0} per closed one",
        empty.db_bytes,
        per(db_active),
        per(db_closed)
    );
    let quota: u64 = 2 * 1024 * 1024 * 1024;
    println!(
        "etcd's default 2 GiB quota: about {} active conversations by the database size, \
         {} by key and value bytes alone",
        quota / (db_active / n).max(1),
        quota / (ab / n).max(1)
    );

    // Each customer's keys, as the layout says.
    assert_eq!(
        active.of("journal events").0,
        n * events,
        "one key per event"
    );
    assert_eq!(active.of("journal record").0, n);
    assert_eq!(active.of("journal snapshot").0, 0, "no snapshot this short");
    assert!(
        active.kinds.keys().all(|k| *k != "other"),
        "only known keys: {:?}",
        active.kinds
    );
    // A closed conversation leaves only the customer's record in the
    // journal: no event, no snapshot, no archive key.
    assert_eq!(closed.of("journal events"), (0, 0), "events left etcd");
    assert_eq!(closed.of("journal snapshot"), (0, 0));
    assert_eq!(closed.of("journal record").0, n, "the records stay");
    assert!(
        closed.kinds.keys().all(|k| *k != "other"),
        "nothing else (no archive/ key): {:?}",
        closed.kinds
    );
    assert!(
        per(journal_closed) <= 512.0,
        "a closed conversation's journal is its customer's record, a few hundred bytes: {:.0}",
        per(journal_closed)
    );
    assert!(
        journal_closed * 4 < journal_active,
        "closing gives back most of what the conversation held: {journal_closed} of {journal_active} bytes"
    );
    // The history went to the archive, whole.
    let archived = archive
        .read(ConversationId {
            customer: CustomerId(n),
            number: 1,
        })
        .await
        .expect("read the archive")
        .expect("archived");
    assert_eq!(archived.len() as u64, events + 1, "with the resolution");
}
