//! Planned shutdown, failover and fencing in a real three-node cluster: real
//! `centralino node` processes, a real etcd, and real gRPC clients only.
//!
//! Every scenario starts its own etcd and three nodes (`n1` first, then `n2`
//! and `n3`) in a cluster of its own, with a 2 s membership lease and no
//! after-contact work. The router (one per cluster) lives on the first node
//! that started (etcd's `owners/router/main`) and does not fail over yet, so
//! `n1` is never the victim: each test reads the router's node from etcd and
//! asserts that the victim is another one.
//!
//! Contacts are chat messages, submitted through gateway clients on random
//! nodes, with no agent logged in (so every conversation waits). A submit
//! that fails (UNAVAILABLE, no answer in time, a connection cut) is retried
//! on the next node, as a gateway's client library would. Each attempt
//! carries its own text (`m00042 from <identity> [attempt 2 via n1]`), so a
//! history tells which attempt landed: an acknowledged attempt must be there
//! exactly once, at the sequence number its acknowledgement gave, and one
//! that was not acknowledged is told apart from it. One identity's messages
//! are submitted one after the other, so their sequence numbers must also
//! grow in the order they were acknowledged. A history is checked through
//! `Gateway.GetConversation` (by customer id) asked of a surviving node: its
//! sequence numbers must be contiguous from 1.
//!
//! - `drain_moves_every_customer_and_loses_nothing`: 300 customers, then a
//!   background load (new customers, and follow-up messages from existing
//!   ones, half of those from the victim's customers) while the non-router
//!   node owning the most customers gets SIGTERM. It
//!   must exit 0, log `drained` with `failed=0`, and leave no
//!   `owners/customer/`, `placed/` or `members/` key naming it; every
//!   acknowledged message is in its history exactly once; every conversation
//!   is still queued (`Admin.ListConversations`), and once agents log in on
//!   the survivors each is offered and accepted exactly once.
//! - `a_killed_node_s_waiting_customers_are_queued_again_and_routed`: 150
//!   customers spread over the three nodes, the same background load, then
//!   SIGKILL of a non-router node. The failover time (SIGKILL until no `placed/` key
//!   names the dead node and every customer it owned is owned by a survivor)
//!   is measured and printed. Every conversation must still be queued with
//!   its original waiting time; agents on the survivors then accept, reply
//!   and wrap up each exactly once, and each history is contiguous and holds
//!   every acknowledged message exactly once, in order, then the routing.
//! - `a_node_that_joins_takes_its_share_of_the_existing_customers`: 240
//!   customers and a background load, then a fourth node starts. Each old
//!   node must log its rebalance (`moved=N failed=0`); n4 must own about a
//!   quarter of the customers that existed before it joined; every
//!   acknowledged message is in its history exactly once and every
//!   conversation is still queued.
//! - `agents_keep_their_conversations_when_the_router_s_node_dies`: 40
//!   waiting customers and six agents (two per node) who accept every
//!   offer but hold what they accepted, three chats each (full); then
//!   SIGKILL of the router's node. A survivor's router must list every
//!   conversation; every agent (those whose desktop died with the node log
//!   in again through a survivor, as a client library would) must hold
//!   exactly the chats it held, with its load, and be offered nothing
//!   meanwhile (the new router restores assignments before it offers).
//!   Released, the agents wrap up and take every waiting customer, each
//!   accepted once; histories are complete.
//! - `a_zombie_node_is_fenced_out_and_steps_down`: a non-router node is
//!   SIGSTOPped past its lease. Messages for its customers are sent to it
//!   while it is stopped (they wait in its socket); the survivors recover
//!   its customers; messages to some of them are acknowledged by the
//!   survivors. On SIGCONT the zombie must find its lease gone, log `lease
//!   lost` and exit non-zero; the messages it held are retried on the
//!   survivors. Histories must hold every acknowledged message exactly once
//!   and nothing that was not acknowledged; etcd's owners never name the
//!   zombie again (polled from the takeover until after its exit).
//!
//! Waits poll a condition with generous deadlines; nothing sleeps for a
//! fixed time except a poll interval or a retry backoff. All problems of a
//! test are collected and reported together, after a short summary.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::process::Command as Process;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use centralino_proto::v1 as pb;
use centralino_tests::cluster::{ClusterProcess, NodeSpec, etcd_prefix};
use centralino_tests::etcd::EtcdServer;
use centralino_tests::{Rng, cmd, login};
use pb::agent_command::Command;
use pb::agent_event::Event;
use pb::gateway_client::GatewayClient;
use pb::get_conversation_request::Who;
use pb::history_event::Kind;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

/// `--lease-ttl-ms` of every node.
const LEASE_TTL_MS: u64 = 2_000;
/// Longest wait for any one condition (or for progress).
const WAIT: Duration = Duration::from_secs(60);
/// One gRPC call may take this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);
/// Agent capacity; a chat costs 30, so three chats at a time.
const CAPACITY: i32 = 100;
const CHAT_COST: i32 = 30;
const SEED: u64 = 0x0FA1_10FE_2026_0001;
/// No after-contact work: a wrap-up frees the agent's capacity at once.
const CONFIG: &str = r#"
[routing]
offer_timeout_ms = 15000
acw_ms = { voice = 0, chat = 0, email = 0, sms = 0, whatsapp = 0, social = 0, app = 0 }
"#;

macro_rules! say {
    ($t0:expr, $($arg:tt)*) => {
        eprintln!("[{:>6.1?}] {}", $t0.elapsed(), format!($($arg)*))
    };
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ----------------------------------------------------------------- cluster

/// etcd and three nodes, `n1` (the router's) started first.
struct TestCluster {
    /// Declared first: dropped (killed) before etcd.
    nodes: Vec<ClusterProcess>,
    name: String,
    etcd: Arc<EtcdServer>,
    config_dir: PathBuf,
    t0: Instant,
}

impl TestCluster {
    async fn start(name: &str) -> TestCluster {
        let t0 = Instant::now();
        let etcd = Arc::new(
            tokio::task::spawn_blocking(EtcdServer::start)
                .await
                .expect("etcd starts"),
        );
        let config_dir =
            std::env::temp_dir().join(format!("centralino-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&config_dir).expect("config dir");
        let config = config_dir.join("centralino.toml");
        std::fs::write(&config, CONFIG).expect("write the config");
        let spec = |id: &str| node_spec(&etcd, name, &config, id);
        // The first node to start claims the router.
        let n1 = ClusterProcess::start_with(spec("n1")).await;
        let (n2, n3) = tokio::join!(
            ClusterProcess::start_with(spec("n2")),
            ClusterProcess::start_with(spec("n3"))
        );
        let c = TestCluster {
            nodes: vec![n1, n2, n3],
            name: name.into(),
            etcd,
            config_dir,
            t0,
        };
        for n in &c.nodes {
            c.wait_members(n, &["n1", "n2", "n3"]).await;
        }
        say!(t0, "{name}: etcd and 3 nodes up");
        c
    }

    /// Starts one more node, `id`, in the cluster.
    async fn add_node(&mut self, id: &str) {
        let config = self.config_dir.join("centralino.toml");
        let spec = node_spec(&self.etcd, &self.name, &config, id);
        self.nodes.push(ClusterProcess::start_with(spec).await);
    }

    fn node(&self, id: &str) -> &ClusterProcess {
        self.nodes
            .iter()
            .find(|n| n.node_id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    fn node_mut(&mut self, id: &str) -> &mut ClusterProcess {
        self.nodes
            .iter_mut()
            .find(|n| n.node_id == id)
            .unwrap_or_else(|| panic!("no node {id}"))
    }

    fn gateways(&self, ids: &[&str]) -> Arc<Vec<Gw>> {
        Arc::new(
            ids.iter()
                .map(|id| Gw {
                    node: (*id).to_owned(),
                    client: self.node(id).gateway(),
                })
                .collect(),
        )
    }

    /// Key (without the cluster's prefix and `sub`) → value, under `sub`.
    async fn kv(&self, sub: &str) -> BTreeMap<String, String> {
        let etcd = self.etcd.clone();
        let prefix = format!("{}{sub}", etcd_prefix(&self.name));
        tokio::task::spawn_blocking(move || read_prefix(&etcd, &prefix))
            .await
            .expect("reading etcd")
    }

    /// Customer id → owning node (`owners/customer/`, on the owners' leases).
    async fn owners(&self) -> BTreeMap<String, String> {
        self.kv("owners/customer/").await
    }

    /// Customer id → the node that last claimed it (`placed/`, no lease).
    async fn placed(&self) -> BTreeMap<String, String> {
        self.kv("placed/").await
    }

    /// Ids of the live members (`members/`).
    async fn members(&self) -> BTreeSet<String> {
        let etcd = self.etcd.clone();
        let prefix = format!("{}members/", etcd_prefix(&self.name));
        tokio::task::spawn_blocking(move || {
            etcd.keys(&prefix)
                .into_iter()
                .filter_map(|k| k.strip_prefix(prefix.as_str()).map(str::to_owned))
                .collect()
        })
        .await
        .expect("reading etcd")
    }

    /// The node hosting the router (`owners/router/main`).
    async fn router_node(&self) -> Option<String> {
        self.kv("owners/router/main").await.into_values().next()
    }

    /// Waits until `node` answers Admin.ListNodes with exactly `want`.
    async fn wait_members(&self, node: &ClusterProcess, want: &[&str]) {
        let want: Vec<String> = want.iter().map(|s| (*s).to_owned()).collect();
        let give_up = Instant::now() + WAIT;
        let mut admin = node.admin();
        loop {
            let mut req = tonic::Request::new(pb::ListNodesRequest {});
            req.set_timeout(CALL_TIMEOUT);
            let last = admin.list_nodes(req).await.map(|r| r.into_inner());
            if let Ok(r) = &last
                && r.node_ids == want
            {
                return;
            }
            assert!(
                Instant::now() < give_up,
                "{} does not list members {want:?} within {WAIT:?}; last: {last:?}",
                node.node_id
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

/// How every node of a test cluster is started.
fn node_spec(etcd: &EtcdServer, cluster: &str, config: &std::path::Path, id: &str) -> NodeSpec {
    NodeSpec {
        etcd: etcd.endpoint(),
        cluster: cluster.into(),
        node_id: id.into(),
        config: Some(config.to_owned()),
        lease_ttl_ms: Some(LEASE_TTL_MS),
        log_filter: std::env::var("NODE_LOG").ok(),
        archive_dir: None,
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.config_dir);
    }
}

/// `etcdctl get --prefix`: key (without `prefix`) → value, for keys whose
/// values are one line (node ids).
fn read_prefix(etcd: &EtcdServer, prefix: &str) -> BTreeMap<String, String> {
    let out = etcd.etcdctl(&["get", "--prefix", prefix]);
    let mut lines = out.lines();
    let mut map = BTreeMap::new();
    while let Some(key) = lines.next() {
        if key.is_empty() {
            continue;
        }
        let value = lines.next().unwrap_or_default();
        let key = key.strip_prefix(prefix).unwrap_or(key);
        map.insert(key.to_owned(), value.to_owned());
    }
    map
}

fn count_by_node(owners: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for n in owners.values() {
        *by.entry(n.clone()).or_default() += 1;
    }
    by
}

/// Which node a scenario stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Victim {
    /// The router's node: the router must move too.
    Router,
    /// The non-router node owning the most customers.
    Other,
}

/// The node a scenario stops.
fn pick_victim(owners: &BTreeMap<String, String>, router: &str, victim: Victim) -> String {
    if victim == Victim::Router {
        return router.to_owned();
    }
    let by = count_by_node(owners);
    ["n1", "n2", "n3"]
        .into_iter()
        .filter(|n| *n != router)
        .max_by_key(|n| (by.get(*n).copied().unwrap_or(0), *n))
        .expect("a node that is not the router's")
        .to_owned()
}

/// Waits until a survivor's router lists every conversation in `wanted`
/// (after a node died or drained: its customers queued again elsewhere,
/// and the router moved if it was there); returns how long after `since`.
async fn wait_listed(
    c: &TestCluster,
    survivor: &str,
    wanted: &BTreeSet<String>,
    since: Instant,
) -> Result<Duration, String> {
    let give_up = Instant::now() + WAIT;
    loop {
        let listed: BTreeSet<String> = list_conversations(c.node(survivor))
            .await
            .into_iter()
            .map(|l| l.conversation_id)
            .collect();
        let missing: Vec<&String> = wanted.iter().filter(|w| !listed.contains(*w)).collect();
        if missing.is_empty() {
            return Ok(since.elapsed());
        }
        if Instant::now() >= give_up {
            return Err(format!(
                "{WAIT:?} after the victim stopped, {survivor}'s router does not list {} conversations, e.g. {:?}",
                missing.len(),
                &missing[..missing.len().min(10)]
            ));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// The nodes other than `victim`.
fn survivors_of(victim: &str) -> Vec<&'static str> {
    ["n1", "n2", "n3"]
        .into_iter()
        .filter(|n| *n != victim)
        .collect()
}

/// The customers `owners` says `node` owns.
fn owned_by(owners: &BTreeMap<String, String>, node: &str) -> BTreeSet<String> {
    owners
        .iter()
        .filter(|(_, n)| *n == node)
        .map(|(cu, _)| cu.clone())
        .collect()
}

/// Of `customers`, those the survivors have not taken over from `victim`
/// yet: no survivor owns them, or `placed/` still names `victim`.
async fn not_taken_over<'a>(
    c: &TestCluster,
    customers: impl IntoIterator<Item = &'a String>,
    survivors: &[&str],
    victim: &str,
) -> Vec<String> {
    let (placed, owners) = (c.placed().await, c.owners().await);
    customers
        .into_iter()
        .filter(|cu| {
            !owners
                .get(*cu)
                .is_some_and(|n| survivors.contains(&n.as_str()))
                || placed.get(*cu).is_some_and(|n| n == victim)
        })
        .cloned()
        .collect()
}

/// The router's node, asserted to be `n1` (the first to start).
async fn router_is_n1(c: &TestCluster) -> String {
    let router = c.router_node().await;
    assert_eq!(
        router.as_deref(),
        Some("n1"),
        "the router lives on the first node that started (owners/router/main)"
    );
    router.unwrap_or_default()
}

/// The value of `name=` in a log line.
fn field(line: &str, name: &str) -> Option<u64> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The pid of a node's process.
fn pid_of(node: &ClusterProcess) -> u32 {
    node.pid()
        .unwrap_or_else(|| panic!("node {} has no process", node.node_id))
}

fn signal(pid: u32, sig: &str) {
    let ok = Process::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "kill -{sig} {pid} failed");
}

// ---------------------------------------------------------------- contacts

#[derive(Clone)]
struct Gw {
    node: String,
    client: GatewayClient<Channel>,
}

/// One acknowledged attempt.
#[derive(Clone, Debug)]
struct Ack {
    identity: String,
    customer: String,
    conversation: String,
    seq: u64,
    text: String,
    via: String,
    attempts: u32,
    at: Instant,
}

/// One attempt that was not acknowledged.
#[derive(Clone, Debug)]
struct Refused {
    identity: String,
    text: String,
    via: String,
    code: Code,
    message: String,
}

/// What the gateway clients sent and were told.
#[derive(Clone, Default)]
struct LoadLog {
    /// In the order they were acknowledged.
    acks: Vec<Ack>,
    refused: Vec<Refused>,
    /// Messages never acknowledged.
    failures: Vec<String>,
    /// Identities with at least one acknowledged message.
    known: Vec<String>,
    /// Identities with a submit in flight (one at a time per identity).
    busy: HashSet<String>,
    /// Identities the background load sends half its follow-ups from (the
    /// victim's customers).
    focus: Vec<String>,
}

type Log = Arc<Mutex<LoadLog>>;

fn chat(identity: &str, text: &str) -> pb::SubmitContactRequest {
    pb::SubmitContactRequest {
        channel: pb::Channel::Chat as i32,
        identity: Some(pb::Identity {
            kind: pb::IdentityKind::ChatSession as i32,
            address: identity.into(),
        }),
        topic: "support".into(),
        text: text.into(),
        ..Default::default()
    }
}

/// What a client library retries (on another node).
///
/// Besides the retryable codes, a stream the HTTP/2 connection reset: tonic
/// reports it as INTERNAL "h2 protocol error". A node that shuts down
/// gracefully answers every call it took; a call that crosses its final
/// GOAWAY on the wire is reset unprocessed, and HTTP/2 says it may be sent
/// again (gRPC's own libraries retry it transparently). The drain test
/// still fails if such an attempt turns up in a history.
fn retryable(s: &tonic::Status) -> bool {
    match s.code() {
        Code::Unavailable
        | Code::DeadlineExceeded
        | Code::Cancelled
        | Code::Unknown
        | Code::Aborted => true,
        Code::Internal => s.message().starts_with("h2 protocol error"),
        _ => false,
    }
}

/// Submits one chat message from `identity`, first through `gws[first]`,
/// then through the next node after each failed attempt, until it is
/// acknowledged or [`WAIT`] runs out. The first attempt may take
/// `first_timeout`, the others [`CALL_TIMEOUT`].
async fn submit(
    gws: &[Gw],
    first: usize,
    identity: &str,
    label: &str,
    log: &Log,
    first_timeout: Duration,
) -> Option<Ack> {
    let give_up = Instant::now() + WAIT;
    let mut backoff = Duration::from_millis(20);
    let mut attempt = 0u32;
    loop {
        attempt += 1;
        let gw = &gws[(first + attempt as usize - 1) % gws.len()];
        let text = format!(
            "{label} from {identity} [attempt {attempt} via {}]",
            gw.node
        );
        let mut req = tonic::Request::new(chat(identity, &text));
        req.set_timeout(if attempt == 1 {
            first_timeout
        } else {
            CALL_TIMEOUT
        });
        match gw.client.clone().submit_contact(req).await {
            Ok(r) => {
                let r = r.into_inner();
                let ack = Ack {
                    identity: identity.to_owned(),
                    customer: r.customer_id,
                    conversation: r.conversation_id,
                    seq: r.seq,
                    text,
                    via: gw.node.clone(),
                    attempts: attempt,
                    at: Instant::now(),
                };
                let mut l = lock(log);
                if !l.known.iter().any(|k| k == identity) {
                    l.known.push(identity.to_owned());
                }
                l.acks.push(ack.clone());
                return Some(ack);
            }
            Err(s) => {
                let give_up_now = !retryable(&s) || Instant::now() + backoff >= give_up;
                {
                    let mut l = lock(log);
                    l.refused.push(Refused {
                        identity: identity.to_owned(),
                        text,
                        via: gw.node.clone(),
                        code: s.code(),
                        message: s.message().to_owned(),
                    });
                    if give_up_now {
                        l.failures.push(format!(
                            "{label} from {identity}: not acknowledged after {attempt} attempts, last via {}: {:?} {}",
                            gw.node,
                            s.code(),
                            s.message()
                        ));
                    }
                }
                if give_up_now {
                    return None;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }
}

/// Shared by the submitters: numbers for new identities and for messages.
#[derive(Clone)]
struct Counters {
    cluster: String,
    identities: Arc<AtomicUsize>,
    messages: Arc<AtomicUsize>,
}

impl Counters {
    fn new(cluster: &str) -> Counters {
        Counters {
            cluster: cluster.into(),
            identities: Arc::default(),
            messages: Arc::default(),
        }
    }
    fn new_identity(&self) -> String {
        let i = self.identities.fetch_add(1, Ordering::Relaxed);
        format!("{}-visitor-{i:04}", self.cluster)
    }
    fn label(&self) -> String {
        format!("m{:05}", self.messages.fetch_add(1, Ordering::Relaxed))
    }
}

/// `n` new customers (one message each), `concurrency` at a time, through
/// gateways on random nodes.
async fn seed(gws: Arc<Vec<Gw>>, log: &Log, counters: &Counters, n: usize, concurrency: usize) {
    let left = Arc::new(AtomicUsize::new(n));
    let mut tasks = JoinSet::new();
    for w in 0..concurrency {
        let (gws, log, counters, left) = (gws.clone(), log.clone(), counters.clone(), left.clone());
        tasks.spawn(async move {
            let mut rng = Rng(SEED ^ (w as u64) << 8);
            while left
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |l| l.checked_sub(1))
                .is_ok()
            {
                let identity = counters.new_identity();
                let first = rng.below(gws.len());
                submit(
                    &gws,
                    first,
                    &identity,
                    &counters.label(),
                    &log,
                    CALL_TIMEOUT,
                )
                .await;
            }
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.expect("a seeding task panicked");
    }
}

/// Sends half the background load's follow-ups from these customers.
fn focus_on(log: &Log, customers: &BTreeSet<String>) {
    let mut l = lock(log);
    let focus: BTreeSet<String> = l
        .acks
        .iter()
        .filter(|a| customers.contains(&a.customer))
        .map(|a| a.identity.clone())
        .collect();
    l.focus = focus.into_iter().collect();
}

/// Submitters that keep going until stopped: half new customers, half
/// follow-up messages from customers already known (half of those from the
/// [`focus_on`] customers, if any; never two at once for one identity).
struct Background {
    stop: Arc<AtomicBool>,
    tasks: JoinSet<()>,
}

impl Background {
    fn start(gws: Arc<Vec<Gw>>, log: &Log, counters: &Counters, workers: usize) -> Background {
        let stop = Arc::new(AtomicBool::new(false));
        let mut tasks = JoinSet::new();
        for w in 0..workers {
            let (gws, log, counters, stop) =
                (gws.clone(), log.clone(), counters.clone(), stop.clone());
            tasks.spawn(async move {
                let mut rng = Rng(SEED ^ 0xb6 ^ (w as u64) << 16);
                while !stop.load(Ordering::Relaxed) {
                    let follow_up = rng.below(2) == 0;
                    let identity = {
                        let mut l = lock(&log);
                        let from_focus = !l.focus.is_empty() && rng.below(2) == 0;
                        let pool = if from_focus { &l.focus } else { &l.known };
                        let pick = (0..4).find_map(|_| {
                            let i = rng.below(pool.len());
                            pool.get(i).filter(|k| !l.busy.contains(*k)).cloned()
                        });
                        match pick.filter(|_| follow_up) {
                            Some(known) => {
                                l.busy.insert(known.clone());
                                known
                            }
                            None => counters.new_identity(),
                        }
                    };
                    let first = rng.below(gws.len());
                    submit(
                        &gws,
                        first,
                        &identity,
                        &counters.label(),
                        &log,
                        CALL_TIMEOUT,
                    )
                    .await;
                    lock(&log).busy.remove(&identity);
                }
            });
        }
        Background { stop, tasks }
    }

    /// Stops after each submitter's current message.
    async fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        while let Some(r) = self.tasks.join_next().await {
            r.expect("a submitter panicked");
        }
    }
}

/// Waits until at least `n` attempts are acknowledged in all.
async fn wait_acks(log: &Log, n: usize, what: &str) {
    let give_up = Instant::now() + WAIT;
    while lock(log).acks.len() < n {
        assert!(
            Instant::now() < give_up,
            "{what}: fewer than {n} acknowledgements within {WAIT:?} (failures: {:?})",
            lock(log).failures
        );
        tokio::time::sleep(POLL).await;
    }
}

// --------------------------------------------------------------- histories

/// The customer's open conversation, retried while the cluster is
/// unavailable.
async fn conversation(gw: &Gw, customer: &str) -> Result<pb::ConversationView, String> {
    let give_up = Instant::now() + WAIT;
    loop {
        let mut req = tonic::Request::new(pb::GetConversationRequest {
            who: Some(Who::CustomerId(customer.into())),
        });
        req.set_timeout(CALL_TIMEOUT);
        match gw.client.clone().get_conversation(req).await {
            Ok(v) => return Ok(v.into_inner()),
            Err(s) if retryable(&s) && Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(s) => {
                return Err(format!(
                    "GetConversation({customer}) via {}: {:?} {}",
                    gw.node,
                    s.code(),
                    s.message()
                ));
            }
        }
    }
}

/// The conversations of `customers`, read through `gws` (8 at a time).
async fn read_conversations(
    gws: &[Gw],
    customers: &BTreeSet<String>,
) -> BTreeMap<String, Result<pb::ConversationView, String>> {
    let ids: Vec<String> = customers.iter().cloned().collect();
    let mut tasks = JoinSet::new();
    for (k, chunk) in ids.chunks(ids.len().div_ceil(8).max(1)).enumerate() {
        let gw = gws[k % gws.len()].clone();
        let chunk = chunk.to_vec();
        tasks.spawn(async move {
            let mut out = Vec::new();
            for id in chunk {
                let v = conversation(&gw, &id).await;
                out.push((id, v));
            }
            out
        });
    }
    let mut all = BTreeMap::new();
    while let Some(r) = tasks.join_next().await {
        all.extend(r.expect("a reader panicked"));
    }
    all
}

fn contiguous(history: &[pb::HistoryEvent]) -> bool {
    history
        .iter()
        .enumerate()
        .all(|(i, e)| e.seq == i as u64 + 1)
}

fn describe(e: &pb::HistoryEvent) -> String {
    match &e.kind {
        Some(Kind::CustomerMessage(m)) => format!("msg {}", m.text),
        Some(Kind::AgentMessage(m)) => format!("reply {}", m.agent_id),
        Some(Kind::Queued(_)) => "queued".into(),
        Some(Kind::Offered(o)) => format!("offered {} {}", o.agent_id, o.offer_id),
        Some(Kind::OfferRejected(r)) => format!("rejected {} {}", r.agent_id, r.offer_id),
        Some(Kind::OfferTimedOut(t)) => format!("timed_out {} {}", t.agent_id, t.offer_id),
        Some(Kind::Assigned(a)) => format!("assigned {}", a.agent_id),
        Some(Kind::WrappedUp(w)) => format!("wrapped {}", w.agent_id),
        Some(Kind::Resolved(r)) => format!("resolved {}", r.by),
        Some(other) => format!("{other:?}"),
        None => "(no kind)".into(),
    }
}

/// What the histories showed.
#[derive(Default)]
struct HistoryCheck {
    problems: Vec<String>,
    customers: usize,
    messages: usize,
    /// Attempts not acknowledged that are in a history anyway.
    landed_unacked: Vec<(Refused, u64)>,
    views: BTreeMap<String, pb::ConversationView>,
}

/// Checks the histories of the customers in `only` (all with an
/// acknowledged message when `None`): one open conversation per customer,
/// the one every ack named; contiguous seqs from 1; each acknowledged text
/// exactly once, at its acknowledged seq, the seqs growing in the order of
/// the acks; no customer message that no attempt sent.
async fn check_histories(
    gws: &[Gw],
    log: &LoadLog,
    only: Option<&BTreeSet<String>>,
) -> HistoryCheck {
    let mut acks: BTreeMap<&str, Vec<&Ack>> = BTreeMap::new();
    for a in &log.acks {
        if only.is_none_or(|o| o.contains(&a.customer)) {
            acks.entry(a.customer.as_str()).or_default().push(a);
        }
    }
    let identity_of: HashMap<&str, &str> = log
        .acks
        .iter()
        .map(|a| (a.identity.as_str(), a.customer.as_str()))
        .collect();
    let mut refused_by_text: HashMap<&str, &Refused> = HashMap::new();
    for r in &log.refused {
        refused_by_text.insert(r.text.as_str(), r);
    }
    let customers: BTreeSet<String> = acks.keys().map(|c| (*c).to_owned()).collect();
    let views = read_conversations(gws, &customers).await;
    let mut out = HistoryCheck {
        customers: customers.len(),
        ..Default::default()
    };
    for (customer, acks) in &acks {
        let view = match views.get(*customer) {
            Some(Ok(v)) => v,
            Some(Err(e)) => {
                out.problems.push(e.clone());
                continue;
            }
            None => {
                out.problems
                    .push(format!("{customer}: its history was not read"));
                continue;
            }
        };
        let mut p = Vec::new();
        let h = &view.history;
        for a in acks {
            if a.conversation != view.conversation_id {
                p.push(format!(
                    "{:?} was acknowledged in conversation {} but the open one is {:?}",
                    a.text, a.conversation, view.conversation_id
                ));
            }
        }
        if !contiguous(h) {
            p.push(format!(
                "seqs not contiguous from 1: {:?}",
                h.iter().map(|e| e.seq).collect::<Vec<_>>()
            ));
        }
        let texts: Vec<(u64, &str)> = h
            .iter()
            .filter_map(|e| match &e.kind {
                Some(Kind::CustomerMessage(m)) => Some((e.seq, m.text.as_str())),
                _ => None,
            })
            .collect();
        let mut last_seq = 0;
        for a in acks {
            out.messages += 1;
            let at: Vec<u64> = texts
                .iter()
                .filter(|(_, t)| *t == a.text)
                .map(|(s, _)| *s)
                .collect();
            if at != [a.seq] {
                p.push(format!(
                    "{:?} (acknowledged at seq {} via {}) is at seqs {at:?}",
                    a.text, a.seq, a.via
                ));
            }
            if a.seq <= last_seq {
                p.push(format!(
                    "{:?} was acknowledged after seq {last_seq} but at seq {}",
                    a.text, a.seq
                ));
            }
            last_seq = a.seq;
        }
        for (seq, t) in &texts {
            if acks.iter().any(|a| a.text == *t) {
                continue;
            }
            match refused_by_text.get(t) {
                Some(r) if identity_of.get(r.identity.as_str()) == Some(customer) => {
                    out.landed_unacked.push(((*r).clone(), *seq));
                }
                _ => p.push(format!(
                    "seq {seq} holds {t:?}, which no attempt for this customer sent"
                )),
            }
        }
        if !p.is_empty() {
            out.problems.push(format!("{customer}: {}", p.join("; ")));
        }
    }
    out.views = views
        .into_iter()
        .filter_map(|(c, v)| v.ok().map(|v| (c, v)))
        .collect();
    out
}

/// Every conversation the router holds, with retries.
async fn list_conversations(node: &ClusterProcess) -> Vec<pb::ConversationSummary> {
    let mut admin = node.admin();
    let give_up = Instant::now() + WAIT;
    loop {
        let mut req = tonic::Request::new(pb::ListConversationsRequest {
            queue_id: String::new(),
        });
        req.set_timeout(CALL_TIMEOUT);
        match admin.list_conversations(req).await {
            Ok(r) => return r.into_inner().conversations,
            Err(s) if retryable(&s) && Instant::now() < give_up => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(s) => panic!("ListConversations via {}: {s:?}", node.node_id),
        }
    }
}

/// Problems unless every conversation in `wanted` is listed as queued;
/// returns them and how many were listed in all.
fn queued_problems(
    listed: &[pb::ConversationSummary],
    wanted: &BTreeSet<String>,
) -> (Vec<String>, usize) {
    let mut p = Vec::new();
    let by_id: HashMap<&str, &pb::ConversationSummary> = listed
        .iter()
        .map(|c| (c.conversation_id.as_str(), c))
        .collect();
    let missing: Vec<&String> = wanted
        .iter()
        .filter(|c| !by_id.contains_key(c.as_str()))
        .collect();
    if !missing.is_empty() {
        p.push(format!(
            "{} acknowledged conversations are not listed by ListConversations, e.g. {:?}",
            missing.len(),
            &missing[..missing.len().min(10)]
        ));
    }
    let not_queued: Vec<String> = wanted
        .iter()
        .filter_map(|c| by_id.get(c.as_str()))
        .filter(|c| c.state != pb::ConversationState::Queued as i32)
        .map(|c| format!("{} in state {}", c.conversation_id, c.state))
        .collect();
    if !not_queued.is_empty() {
        p.push(format!(
            "{} conversations are not queued (no agent ever logged in): {:?}",
            not_queued.len(),
            &not_queued[..not_queued.len().min(10)]
        ));
    }
    let extra: Vec<&str> = by_id
        .keys()
        .filter(|c| !wanted.contains(**c))
        .copied()
        .collect();
    if !extra.is_empty() {
        p.push(format!(
            "{} listed conversations were never acknowledged to a gateway: {:?}",
            extra.len(),
            &extra[..extra.len().min(10)]
        ));
    }
    (p, listed.len())
}

// ------------------------------------------------------------------ agents

/// What the agent desktops saw, per conversation.
#[derive(Default)]
struct Desk {
    convs: HashMap<String, DeskConv>,
    /// offer id → conversation id.
    offers: HashMap<String, String>,
    problems: Vec<String>,
}

#[derive(Default, Debug)]
struct DeskConv {
    /// (offer id, agent) of every offer received.
    offers: Vec<(String, String)>,
    accepted: Vec<(String, String)>,
    refused: Vec<(String, String)>,
    revoked: Vec<(String, String)>,
    replied: u32,
    wrapped: u32,
}

type SharedDesk = Arc<Mutex<Desk>>;

enum Pending {
    Accept { conv: String, offer: String },
    Reply { conv: String },
    WrapUp { conv: String },
    Available,
}

/// How an automatic agent behaves.
#[derive(Clone, Default)]
struct Behaviour {
    /// Reply once before wrapping up.
    reply: bool,
    /// Hold every accepted conversation (no reply, no wrap-up) until this
    /// turns true; meanwhile an offer beyond the agent's capacity is a
    /// problem (nothing frees capacity while it holds).
    hold: Option<tokio::sync::watch::Receiver<bool>>,
    /// Nodes to log in through again, in turn, when the session breaks (its
    /// node died), as a desktop's client library would; none: a broken
    /// session is a problem.
    reconnect: Vec<(
        String,
        pb::agent_desktop_client::AgentDesktopClient<Channel>,
    )>,
}

/// What an agent has to tell the test.
#[derive(Default, Debug)]
struct AgentNews {
    /// Conversations accepted and not yet wrapped up, while holding.
    held: BTreeSet<String>,
    /// Sessions opened (1 + reconnections).
    sessions: usize,
}

/// One automatic agent: accepts every offer, replies once (if asked) and
/// wraps up, or holds what it accepted until released (see [`Behaviour`]).
struct Agent {
    id: String,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    news: Arc<Mutex<AgentNews>>,
}

impl Agent {
    async fn start(
        id: String,
        node: &ClusterProcess,
        behaviour: Behaviour,
        desk: SharedDesk,
    ) -> Agent {
        let first = (node.node_id.clone(), node.desktop_client());
        let (stop, mut stopped) = oneshot::channel::<()>();
        let news: Arc<Mutex<AgentNews>> = Arc::default();
        let (opened_tx, opened_rx) = oneshot::channel();
        let agent = id.clone();
        let shared = news.clone();
        let task = tokio::spawn(async move {
            let news = shared;
            let mut opened = Some(opened_tx);
            let mut stopping = false;
            let mut next = 2u64;
            let mut hold = behaviour.hold.clone();
            let mut released = hold.as_ref().is_none_or(|h| *h.borrow());
            let nodes: Vec<_> = std::iter::once(first)
                .chain(behaviour.reconnect.iter().cloned())
                .collect();
            'sessions: for attempt in 0.. {
                let (via, mut client) = nodes[attempt % nodes.len()].clone();
                if attempt > 0 {
                    if behaviour.reconnect.is_empty() || attempt > 50 {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let (tx, rx) = mpsc::channel(1024);
                let _ = tx
                    .send(pb::AgentCommand {
                        request_id: 1,
                        command: Some(Command::Login(login(&agent, CAPACITY))),
                    })
                    .await;
                let opening =
                    tokio::time::timeout(CALL_TIMEOUT, client.session(ReceiverStream::new(rx)));
                let mut events = match opening.await {
                    Ok(Ok(events)) => events.into_inner(),
                    Ok(Err(s)) if attempt > 0 => {
                        eprintln!(
                            "{agent}: session via {via} refused ({}); next node",
                            s.message()
                        );
                        continue;
                    }
                    Err(_) if attempt > 0 => continue,
                    Ok(Err(s)) => {
                        lock(&desk)
                            .problems
                            .push(format!("{agent}: the session was refused: {s:?}"));
                        break;
                    }
                    Err(_) => {
                        lock(&desk).problems.push(format!(
                            "{agent}: the session did not open within {CALL_TIMEOUT:?}"
                        ));
                        break;
                    }
                };
                let mut tx = Some(tx);
                let mut pending: HashMap<u64, Pending> = HashMap::new();
                let send = |tx: &Option<mpsc::Sender<pb::AgentCommand>>,
                            next: &mut u64,
                            pending: &mut HashMap<u64, Pending>,
                            command: Command,
                            p: Pending| {
                    let request_id = *next;
                    *next += 1;
                    pending.insert(request_id, p);
                    if let Some(tx) = tx {
                        let _ = tx.try_send(pb::AgentCommand {
                            request_id,
                            command: Some(command),
                        });
                    }
                };
                // Work that goes on after an accept, or after the release.
                let follow_up = |conv: String| {
                    if behaviour.reply {
                        (
                            cmd::reply(&conv, &format!("reply to {conv}")),
                            Pending::Reply { conv },
                        )
                    } else {
                        (cmd::wrap_up(&conv, "done"), Pending::WrapUp { conv })
                    }
                };
                loop {
                    tokio::select! {
                        e = events.next() => {
                            let e = match e {
                                None if stopping => break 'sessions,
                                None | Some(Err(_)) if !stopping && !behaviour.reconnect.is_empty() => {
                                    eprintln!("{agent}: session via {via} lost; logging in again elsewhere");
                                    continue 'sessions;
                                }
                                None => break 'sessions,
                                Some(Err(s)) => {
                                    if !stopping {
                                        lock(&desk).problems.push(format!("{agent}: the session failed: {s:?}"));
                                    }
                                    break 'sessions;
                                }
                                Some(Ok(pb::AgentEvent { event: None })) => continue,
                                Some(Ok(pb::AgentEvent { event: Some(e) })) => e,
                            };
                            match e {
                                Event::Offer(o) => {
                                    {
                                        let mut d = lock(&desk);
                                        if !contiguous(&o.history) {
                                            d.problems.push(format!(
                                                "offer {} of {} to {agent}: history seqs not contiguous: {:?}",
                                                o.offer_id, o.conversation_id,
                                                o.history.iter().map(|e| e.seq).collect::<Vec<_>>()
                                            ));
                                        }
                                        let held = lock(&news).held.len() as i32;
                                        if !released && (held + 1) * CHAT_COST > CAPACITY {
                                            d.problems.push(format!(
                                                "{agent} holds {held} chats and was offered {} too: over capacity",
                                                o.conversation_id
                                            ));
                                        }
                                        d.offers.insert(o.offer_id.clone(), o.conversation_id.clone());
                                        d.convs.entry(o.conversation_id.clone()).or_default()
                                            .offers.push((o.offer_id.clone(), agent.clone()));
                                    }
                                    send(&tx, &mut next, &mut pending, cmd::accept(&o.offer_id),
                                        Pending::Accept { conv: o.conversation_id, offer: o.offer_id });
                                }
                                Event::OfferRevoked(r) => {
                                    let mut d = lock(&desk);
                                    match d.offers.get(&r.offer_id).cloned() {
                                        Some(conv) => d.convs.entry(conv).or_default()
                                            .revoked.push((r.offer_id, r.reason)),
                                        None => d.problems.push(format!(
                                            "{agent}: offer {} revoked ({}) but never received", r.offer_id, r.reason)),
                                    }
                                }
                                Event::StateChanged(s) => {
                                    if s.state == pb::AgentState::Away as i32 && !stopping {
                                        // An offer went unanswered: available again.
                                        send(&tx, &mut next, &mut pending,
                                            cmd::set_state(pb::AgentState::Available), Pending::Available);
                                    }
                                }
                                Event::CustomerMessage(_) => {}
                                Event::Result(r) => {
                                    let ok = r.code == 0;
                                    let why = format!("{:?}: {}", Code::from(r.code), r.message);
                                    if r.request_id == 1 {
                                        if !ok {
                                            lock(&desk).problems.push(format!("{agent}: login via {via} refused: {why}"));
                                            break 'sessions;
                                        }
                                        lock(&news).sessions += 1;
                                        if let Some(opened) = opened.take() {
                                            let _ = opened.send(());
                                        }
                                        continue;
                                    }
                                    match pending.remove(&r.request_id) {
                                        None => lock(&desk).problems.push(format!(
                                            "{agent}: a result for request {} never sent", r.request_id)),
                                        Some(Pending::Available) => {
                                            if !ok {
                                                lock(&desk).problems.push(format!("{agent}: SetState refused: {why}"));
                                            }
                                        }
                                        Some(Pending::Accept { conv, offer }) => {
                                            {
                                                let mut d = lock(&desk);
                                                let c = d.convs.entry(conv.clone()).or_default();
                                                if ok {
                                                    c.accepted.push((offer, agent.clone()));
                                                } else {
                                                    c.refused.push((offer, why));
                                                }
                                            }
                                            if ok && !released {
                                                lock(&news).held.insert(conv);
                                            } else if ok {
                                                let (command, p) = follow_up(conv);
                                                send(&tx, &mut next, &mut pending, command, p);
                                            }
                                        }
                                        Some(Pending::Reply { conv }) => {
                                            if ok {
                                                lock(&desk).convs.entry(conv.clone()).or_default().replied += 1;
                                            } else {
                                                lock(&desk).problems.push(format!("{agent}: reply to {conv} refused: {why}"));
                                            }
                                            send(&tx, &mut next, &mut pending,
                                                cmd::wrap_up(&conv, "done"), Pending::WrapUp { conv });
                                        }
                                        Some(Pending::WrapUp { conv }) => {
                                            if ok {
                                                lock(&desk).convs.entry(conv).or_default().wrapped += 1;
                                            } else {
                                                lock(&desk).problems.push(format!("{agent}: wrap-up of {conv} refused: {why}"));
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        r = async { hold.as_mut().expect("guarded").changed().await }, if !released => {
                            if r.is_err() || *hold.as_ref().expect("guarded").borrow() {
                                released = true;
                                let held = std::mem::take(&mut lock(&news).held);
                                for conv in held {
                                    let (command, p) = follow_up(conv);
                                    send(&tx, &mut next, &mut pending, command, p);
                                }
                            }
                        }
                        _ = &mut stopped, if !stopping => {
                            // Logging out: closing the request stream ends the session.
                            stopping = true;
                            tx = None;
                        }
                    }
                }
            }
            if opened.is_some() {
                lock(&desk)
                    .problems
                    .push(format!("{agent}: never logged in"));
            }
        });
        // Logged in before the test goes on (or failed, which it reports).
        let _ = tokio::time::timeout(WAIT, opened_rx).await;
        Agent {
            id,
            stop,
            task,
            news,
        }
    }

    /// What the agent holds now (in hold mode).
    fn held(&self) -> BTreeSet<String> {
        lock(&self.news).held.clone()
    }

    fn sessions(&self) -> usize {
        lock(&self.news).sessions
    }

    async fn close(self) {
        let _ = self.stop.send(());
        match tokio::time::timeout(WAIT, self.task).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("{}: desktop task failed: {e}", self.id),
            Err(_) => panic!(
                "{}: the session did not end within {WAIT:?} of logout",
                self.id
            ),
        }
    }
}

/// Logs in `n` agents, spread over `nodes`.
async fn agents_on(
    nodes: &[&ClusterProcess],
    n: usize,
    reply: bool,
    desk: &SharedDesk,
) -> Vec<Agent> {
    let mut agents = Vec::new();
    for a in 0..n {
        let node = nodes[a % nodes.len()];
        let behaviour = Behaviour {
            reply,
            ..Behaviour::default()
        };
        agents.push(
            Agent::start(
                format!("agent-{a:02}-{}", node.node_id),
                node,
                behaviour,
                desk.clone(),
            )
            .await,
        );
    }
    agents
}

/// Waits until every conversation in `wanted` is wrapped up, as long as
/// progress is made (at most [`WAIT`] without any).
async fn wait_wrapped(t0: Instant, desk: &SharedDesk, wanted: &BTreeSet<String>) -> usize {
    let done = || {
        let d = lock(desk);
        wanted
            .iter()
            .filter(|c| d.convs.get(*c).is_some_and(|c| c.wrapped > 0))
            .count()
    };
    let mut last = (done(), Instant::now());
    let mut report = Instant::now();
    loop {
        let n = done();
        if n == wanted.len() {
            return n;
        }
        if n > last.0 {
            last = (n, Instant::now());
        }
        if last.1.elapsed() > WAIT {
            return n;
        }
        if report.elapsed() > Duration::from_secs(5) {
            say!(
                t0,
                "{n}/{} conversations offered, accepted and wrapped up",
                wanted.len()
            );
            report = Instant::now();
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Problems unless every conversation in `wanted` was offered and accepted
/// exactly once (an offer not accepted was refused or revoked) and wrapped
/// up once (replied to once if `reply`).
fn desk_problems(desk: &Desk, wanted: &BTreeSet<String>, reply: bool) -> Vec<String> {
    let mut p = desk.problems.clone();
    let mut never = Vec::new();
    for conv in wanted {
        let Some(c) = desk.convs.get(conv) else {
            never.push(conv.clone());
            continue;
        };
        if c.accepted.len() != 1 {
            p.push(format!(
                "{conv}: accepted {} times: {c:?}",
                c.accepted.len()
            ));
        }
        for (offer, agent) in &c.offers {
            let answered = c.accepted.iter().any(|(o, _)| o == offer)
                || c.refused.iter().any(|(o, _)| o == offer)
                || c.revoked.iter().any(|(o, _)| o == offer);
            if !answered {
                p.push(format!(
                    "{conv}: offer {offer} to {agent} neither accepted, refused nor revoked"
                ));
            }
        }
        if c.wrapped != 1 || (reply && c.replied != 1) {
            p.push(format!(
                "{conv}: replied {} / wrapped up {} times: {c:?}",
                c.replied, c.wrapped
            ));
        }
    }
    if !never.is_empty() {
        p.push(format!(
            "{} acknowledged conversations never offered, e.g. {:?}",
            never.len(),
            &never[..never.len().min(10)]
        ));
    }
    let stray: Vec<&String> = desk.convs.keys().filter(|c| !wanted.contains(*c)).collect();
    if !stray.is_empty() {
        p.push(format!(
            "offers of conversations never acknowledged to a gateway: {stray:?}"
        ));
    }
    p
}

/// What is wrong with a routed conversation's history (after its
/// acknowledged messages, checked by [`check_histories`]): one Queued before
/// the first offer, one assignment to the agent who accepted, after the
/// accepted offer, the reply, the wrap-up last.
fn routed_history_problems(conv: &str, h: &[pb::HistoryEvent], c: &DeskConv) -> Option<String> {
    let h: Vec<String> = h.iter().map(describe).collect();
    let [(offer, agent)] = &c.accepted[..] else {
        return None; // reported already
    };
    let mut p = Vec::new();
    let pos = |want: &str| h.iter().position(|e| e == want);
    let queued = h.iter().filter(|e| *e == "queued").count();
    let first_offer = h.iter().position(|e| e.starts_with("offered "));
    match (pos("queued"), first_offer) {
        // A decision told to the killed node and lost with it (it died
        // before journaling it) is said again to the recovered customer.
        (Some(q), Some(o)) if q < o && queued == 1 => {}
        (q, o) => p.push(format!(
            "want one Queued before the first offer: {queued} Queued, first at {q:?}, first offer at {o:?}"
        )),
    }
    let assigned: Vec<&String> = h.iter().filter(|e| e.starts_with("assigned ")).collect();
    let want = format!("assigned {agent}");
    if assigned != [&want] {
        p.push(format!("assignments {assigned:?}, want [{want:?}]"));
    }
    match (pos(&format!("offered {agent} {offer}")), pos(&want)) {
        (Some(o), Some(a)) if o < a => {}
        (o, a) => p.push(format!("accepted offer at {o:?}, assignment at {a:?}")),
    }
    if pos(&format!("reply {agent}")).is_none() {
        p.push(format!("no reply by {agent}"));
    }
    if h.last() != Some(&format!("wrapped {agent}")) {
        p.push(format!("does not end with the wrap-up by {agent}"));
    }
    (!p.is_empty()).then(|| format!("{conv}: {}; history {h:?}", p.join("; ")))
}

/// Refused attempts by status and node, with one message of each kind.
fn refusal_codes(log: &LoadLog) -> BTreeMap<String, (usize, String)> {
    let mut m: BTreeMap<String, (usize, String)> = BTreeMap::new();
    for r in &log.refused {
        let e = m
            .entry(format!("{:?} via {}", r.code, r.via))
            .or_insert_with(|| (0, r.message.chars().take(160).collect()));
        e.0 += 1;
    }
    m
}

fn finish(t0: Instant, problems: Vec<String>) {
    if !problems.is_empty() {
        let shown = problems.len().min(40);
        panic!(
            "{} problems (first {shown}):\n{}",
            problems.len(),
            problems[..shown].join("\n")
        );
    }
    say!(t0, "done");
}

/// A started cluster whose customers wait (no agent yet), with what a
/// scenario needs to load it further.
struct Seeded {
    c: TestCluster,
    t0: Instant,
    /// The router's node (`n1`).
    router: String,
    /// A gateway client on every node.
    all: Arc<Vec<Gw>>,
    log: Log,
    counters: Counters,
    /// Contacts acknowledged while seeding.
    seeded: usize,
    /// Customer → owner, from etcd, once seeded.
    owners: BTreeMap<String, String>,
}

impl Seeded {
    /// Starts cluster `name` and creates `customers` waiting customers
    /// through gateways on random nodes.
    async fn start(name: &str, customers: usize) -> Seeded {
        let c = TestCluster::start(name).await;
        let t0 = c.t0;
        let router = router_is_n1(&c).await;
        let all = c.gateways(&["n1", "n2", "n3"]);
        let log: Log = Arc::default();
        let counters = Counters::new(&c.name);
        seed(all.clone(), &log, &counters, customers, 8).await;
        let seeded = lock(&log).acks.len();
        let owners = c.owners().await;
        Seeded {
            c,
            t0,
            router,
            all,
            log,
            counters,
            seeded,
            owners,
        }
    }
}

// ------------------------------------------------------------------- tests

/// Customers created before the drain.
const DRAIN_CUSTOMERS: usize = 300;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_moves_every_customer_and_loses_nothing() {
    drain("failover-drain", Victim::Other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn draining_the_router_s_node_hands_the_router_over() {
    drain("failover-drain-router", Victim::Router).await;
}

async fn drain(name: &str, which: Victim) {
    let Seeded {
        mut c,
        t0,
        router,
        all,
        log,
        counters,
        seeded,
        owners,
    } = Seeded::start(name, DRAIN_CUSTOMERS).await;
    let mut problems: Vec<String> = Vec::new();
    let victim = pick_victim(&owners, &router, which);
    let victim_customers = owned_by(&owners, &victim);
    say!(
        t0,
        "{seeded} customers acknowledged; owners {:?}; draining {victim} ({} customers)",
        count_by_node(&owners),
        victim_customers.len()
    );
    assert!(
        !victim_customers.is_empty(),
        "{victim} owns no customer to drain"
    );

    // Contacts keep coming while the victim drains, through all three nodes.
    focus_on(&log, &victim_customers);
    let load = Background::start(all.clone(), &log, &counters, 6);
    wait_acks(&log, seeded + 50, "background load before the drain").await;
    c.node_mut(&victim).sigterm();
    let t_term = Instant::now();
    let status = c.node_mut(&victim).wait_exit(WAIT).await;
    let t_exit = Instant::now();
    let drain_time = t_exit - t_term;
    say!(
        t0,
        "{victim} exited {status:?} {drain_time:.1?} after SIGTERM"
    );
    let at_exit = lock(&log).acks.len();
    wait_acks(&log, at_exit + 50, "background load after the drain").await;
    load.stop().await;
    let snap = lock(&log).clone();

    match status {
        Some(s) if s.success() => {}
        Some(s) => problems.push(format!("{victim} exited with {s} after SIGTERM (want 0)")),
        None => problems.push(format!("{victim} still runs {WAIT:?} after SIGTERM")),
    }
    let drained = c.node(&victim).log_lines_with("drained");
    let (moved, failed) = match drained.last() {
        Some(l) => (field(l, "moved"), field(l, "failed")),
        None => (None, None),
    };
    if drained.is_empty() {
        problems.push(format!("{victim}'s log has no \"drained\" line"));
    } else if failed != Some(0) {
        problems.push(format!("{victim} drained with failures: {drained:?}"));
    }
    if moved.is_some_and(|m| (m as usize) < victim_customers.len()) {
        problems.push(format!(
            "{victim} moved {moved:?} customers but owned {} before the drain",
            victim_customers.len()
        ));
    }
    for l in c.node(&victim).log_lines_with("not moved during the drain") {
        problems.push(format!("{victim}: {l}"));
    }

    // Nothing in etcd names the drained node any more.
    let (owners_after, placed_after, members_after) =
        (c.owners().await, c.placed().await, c.members().await);
    let named = |m: &BTreeMap<String, String>| -> Vec<String> {
        m.iter()
            .filter(|(_, n)| **n == victim)
            .map(|(k, _)| k.clone())
            .collect()
    };
    for (what, keys) in [
        ("owners/customer/", named(&owners_after)),
        ("placed/", named(&placed_after)),
    ] {
        if !keys.is_empty() {
            problems.push(format!(
                "after the drain {} {what} keys still name {victim}, e.g. {:?}",
                keys.len(),
                &keys[..keys.len().min(10)]
            ));
        }
    }
    if members_after.contains(&victim) {
        problems.push(format!("members/{victim} is still in etcd after it exited"));
    }
    let survivors = survivors_of(&victim);
    for s in &survivors {
        c.wait_members(c.node(s), &survivors).await;
    }
    let unowned: Vec<&String> = victim_customers
        .iter()
        .filter(|cu| {
            !owners_after
                .get(*cu)
                .is_some_and(|n| survivors.contains(&n.as_str()))
        })
        .collect();
    if !unowned.is_empty() {
        problems.push(format!(
            "{} of {victim}'s customers have no owner among {survivors:?} after the drain, e.g. {:?}",
            unowned.len(),
            &unowned[..unowned.len().min(10)]
        ));
    }

    // Every acknowledged message, exactly once, where its ack said.
    let survivor_gws = c.gateways(&survivors);
    let hist = check_histories(&survivor_gws, &snap, None).await;
    problems.extend(hist.problems.iter().cloned());
    for (r, seq) in &hist.landed_unacked {
        // A planned shutdown answers what it did: an explicit refusal (not a
        // timeout) must not have been recorded.
        if r.code != Code::DeadlineExceeded {
            problems.push(format!(
                "{:?} was refused ({:?} {} via {}) but is in the history at seq {seq}",
                r.text, r.code, r.message, r.via
            ));
        }
    }
    say!(
        t0,
        "histories of {} customers checked: {} acknowledged messages",
        hist.customers,
        hist.messages
    );

    // Every conversation still waits, and is then routed once.
    let wanted: BTreeSet<String> = snap.acks.iter().map(|a| a.conversation.clone()).collect();
    if let Err(e) = wait_listed(&c, survivors[0], &wanted, t_term).await {
        problems.push(e);
    }
    let new_router = c.router_node().await;
    if which == Victim::Router
        && !new_router
            .as_deref()
            .is_some_and(|r| survivors.contains(&r))
    {
        problems.push(format!(
            "after {victim} drained, the router is on {new_router:?}, not on a survivor"
        ));
    }
    let listed = list_conversations(c.node(survivors[0])).await;
    let (p, listed_n) = queued_problems(&listed, &wanted);
    problems.extend(p);
    let desk: SharedDesk = Arc::default();
    let survivor_nodes: Vec<&ClusterProcess> = survivors.iter().map(|s| c.node(s)).collect();
    let agents = agents_on(&survivor_nodes, 8, false, &desk).await;
    let t_route = Instant::now();
    let wrapped = wait_wrapped(t0, &desk, &wanted).await;
    let route_time = t_route.elapsed();
    for a in agents {
        a.close().await;
    }
    problems.extend(desk_problems(&lock(&desk), &wanted, false));
    problems.extend(snap.failures.iter().cloned());

    eprintln!("---- summary: drain");
    eprintln!(
        "  {} messages acknowledged ({} customers, {} conversations), {} after retries; {} attempts refused {:?}; {} never acknowledged",
        snap.acks.len(),
        hist.customers,
        wanted.len(),
        snap.acks.iter().filter(|a| a.attempts > 1).count(),
        snap.refused.len(),
        refusal_codes(&snap),
        snap.failures.len()
    );
    let during: Vec<&Ack> = snap
        .acks
        .iter()
        .filter(|a| a.at >= t_term && a.at <= t_exit)
        .collect();
    eprintln!(
        "  {victim} owned {} customers before the drain; drained: moved={moved:?} failed={failed:?}; exited {status:?} {drain_time:.1?} after SIGTERM",
        victim_customers.len()
    );
    eprintln!(
        "  acknowledged while it drained: {} messages ({} from its customers, {} through it)",
        during.len(),
        during
            .iter()
            .filter(|a| victim_customers.contains(&a.customer))
            .count(),
        during.iter().filter(|a| a.via == victim).count()
    );
    eprintln!(
        "  refused attempts in a history anyway: {}; ListConversations listed {listed_n} (want {}); {wrapped}/{} routed in {route_time:.1?}",
        hist.landed_unacked.len(),
        wanted.len(),
        wanted.len()
    );
    finish(t0, problems);
}

/// Customers created before the kill.
const KILL_CUSTOMERS: usize = 150;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_waiting_customers_are_queued_again_and_routed() {
    crash("failover-kill", Victim::Other).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_router_node_s_router_and_customers_come_back_elsewhere() {
    crash("failover-kill-router", Victim::Router).await;
}

async fn crash(name: &str, which: Victim) {
    let Seeded {
        mut c,
        t0,
        router,
        all,
        log,
        counters,
        seeded,
        owners,
    } = Seeded::start(name, KILL_CUSTOMERS).await;
    let mut problems: Vec<String> = Vec::new();
    let by_node = count_by_node(&owners);
    assert!(
        ["n1", "n2", "n3"]
            .iter()
            .all(|n| by_node.get(*n).copied().unwrap_or(0) > 0),
        "every node should own some waiting customers: {by_node:?}"
    );
    let victim = pick_victim(&owners, &router, which);
    let survivors = survivors_of(&victim);
    say!(
        t0,
        "{seeded} customers acknowledged; owners {by_node:?}; killing {victim}"
    );

    let victim_customers = owned_by(&owners, &victim);
    focus_on(&log, &victim_customers);
    let load = Background::start(all.clone(), &log, &counters, 4);
    wait_acks(&log, seeded + 20, "background load before the kill").await;
    c.node_mut(&victim).kill();
    let t_kill = Instant::now();
    // Whom survivors must recover: what it owned, and what names it in
    // placed/ now that it is dead (read after the kill, so complete).
    let mut orphans = owned_by(&owners, &victim);
    orphans.extend(
        c.placed()
            .await
            .into_iter()
            .filter(|(_, n)| *n == victim)
            .map(|(cu, _)| cu),
    );
    say!(
        t0,
        "{victim} killed; {} customers to recover",
        orphans.len()
    );

    // Failover: no placement names the dead node, survivors own its customers.
    let give_up = Instant::now() + WAIT;
    // `orphans` holds every placed/ key that named the dead node after the
    // kill (a dead node writes no new ones), so checking each of them
    // covers "no placed/ key names it".
    let failover = loop {
        let pending = not_taken_over(&c, &orphans, &survivors, &victim).await;
        if pending.is_empty() {
            break Some(t_kill.elapsed());
        }
        if Instant::now() >= give_up {
            problems.push(format!(
                "{WAIT:?} after SIGKILL, {} of {victim}'s customers have no survivor owner or are still placed on it, e.g. {:?}",
                pending.len(),
                &pending[..pending.len().min(10)]
            ));
            break None;
        }
        tokio::time::sleep(POLL).await;
    };
    say!(
        t0,
        "failover time (SIGKILL until survivors own every customer of {victim}): {failover:?}"
    );
    // ... and until the router lists every conversation acknowledged
    // before the kill (queued again; the router moved, if it was there).
    let before_kill: BTreeSet<String> = lock(&log)
        .acks
        .iter()
        .filter(|a| a.at < t_kill)
        .map(|a| a.conversation.clone())
        .collect();
    let queued_again = wait_listed(&c, survivors[0], &before_kill, t_kill).await;
    say!(
        t0,
        "queued again (SIGKILL until a survivor's router lists every conversation): {queued_again:?}"
    );
    if let Err(e) = &queued_again {
        problems.push(e.clone());
    }
    let at_failover = lock(&log).acks.len();
    wait_acks(&log, at_failover + 30, "background load after the failover").await;
    load.stop().await;
    let snap = lock(&log).clone();
    let recovered_lines: Vec<String> = survivors
        .iter()
        .flat_map(|s| {
            c.node(s)
                .log_lines_with("recovered customers of a dead node")
                .into_iter()
                .map(move |l| format!("{s}: {l}"))
        })
        .collect();
    let recovered: u64 = recovered_lines
        .iter()
        .filter_map(|l| field(l, "recovered"))
        .sum();
    if recovered_lines.is_empty() {
        problems.push(format!(
            "no survivor logged \"recovered customers of a dead node\" after {victim} died"
        ));
    }
    for s in &survivors {
        c.wait_members(c.node(s), &survivors).await;
    }

    // Every conversation waits again, with its original waiting time.
    let wanted: BTreeSet<String> = snap.acks.iter().map(|a| a.conversation.clone()).collect();
    let asked = Instant::now();
    let listed = list_conversations(c.node(survivors[0])).await;
    let (p, listed_n) = queued_problems(&listed, &wanted);
    problems.extend(p);
    let mut first_ack: HashMap<&str, Instant> = HashMap::new();
    for a in &snap.acks {
        first_ack.entry(a.conversation.as_str()).or_insert(a.at);
    }
    let mut short_waits = Vec::new();
    for conv in listed.iter().filter(|l| orphans.contains(&l.customer_id)) {
        if let Some(at) = first_ack.get(conv.conversation_id.as_str()) {
            let since_ack = asked.saturating_duration_since(*at).as_millis() as i64;
            if conv.waited_ms < since_ack - 1_000 {
                short_waits.push(format!(
                    "{} waited {} ms but was acknowledged {since_ack} ms before",
                    conv.conversation_id, conv.waited_ms
                ));
            }
        }
    }
    if !short_waits.is_empty() {
        problems.push(format!(
            "{} recovered conversations lost their original enqueue time, e.g. {:?}",
            short_waits.len(),
            &short_waits[..short_waits.len().min(5)]
        ));
    }

    // Agents on the survivors take everything.
    let desk: SharedDesk = Arc::default();
    let survivor_nodes: Vec<&ClusterProcess> = survivors.iter().map(|s| c.node(s)).collect();
    let agents = agents_on(&survivor_nodes, 8, true, &desk).await;
    let t_route = Instant::now();
    let wrapped = wait_wrapped(t0, &desk, &wanted).await;
    let route_time = t_route.elapsed();
    for a in agents {
        a.close().await;
    }
    problems.extend(desk_problems(&lock(&desk), &wanted, true));

    let survivor_gws = c.gateways(&survivors);
    let hist = check_histories(&survivor_gws, &snap, None).await;
    problems.extend(hist.problems.iter().cloned());
    let d = lock(&desk);
    let mut bad_routing = Vec::new();
    for (customer, view) in &hist.views {
        if let Some(dc) = d.convs.get(&view.conversation_id) {
            bad_routing.extend(routed_history_problems(customer, &view.history, dc));
        }
    }
    if !bad_routing.is_empty() {
        problems.push(format!(
            "{} histories with a wrong routing record:",
            bad_routing.len()
        ));
        problems.extend(bad_routing.into_iter().take(10));
    }
    problems.extend(snap.failures.iter().cloned());
    let orphan_convs = wanted
        .iter()
        .filter(|cv| orphans.iter().any(|cu| cv.starts_with(&format!("{cu}."))))
        .count();

    eprintln!("---- summary: SIGKILL");
    eprintln!(
        "  {} messages acknowledged ({} customers, {} conversations), {} after retries; {} attempts refused {:?}; {} never acknowledged",
        snap.acks.len(),
        hist.customers,
        wanted.len(),
        snap.acks.iter().filter(|a| a.attempts > 1).count(),
        snap.refused.len(),
        refusal_codes(&snap),
        snap.failures.len()
    );
    eprintln!(
        "  {victim} killed owning {} customers ({orphan_convs} acknowledged conversations); FAILOVER TIME {failover:?}, queued again after {queued_again:?} (lease {LEASE_TTL_MS} ms)",
        orphans.len()
    );
    eprintln!("  recovered by failover: {recovered} ({recovered_lines:?})");
    eprintln!(
        "  refused attempts in a history anyway (ambiguous, allowed): {}; ListConversations listed {listed_n} (want {}); {wrapped}/{} routed in {route_time:.1?}",
        hist.landed_unacked.len(),
        wanted.len(),
        wanted.len()
    );
    drop(d);
    finish(t0, problems);
}

/// Customers created before a fourth node joins.
const JOIN_CUSTOMERS: usize = 240;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_joins_takes_its_share_of_the_existing_customers() {
    let Seeded {
        mut c,
        t0,
        all,
        log,
        counters,
        seeded,
        ..
    } = Seeded::start("rebalance-join", JOIN_CUSTOMERS).await;
    let mut problems: Vec<String> = Vec::new();
    let load = Background::start(all.clone(), &log, &counters, 4);
    wait_acks(&log, seeded + 30, "background load before the join").await;
    let before: BTreeSet<String> = c.owners().await.into_keys().collect();
    c.add_node("n4").await;
    let t_join = Instant::now();
    let old = ["n1", "n2", "n3"];
    for n in ["n1", "n2", "n3", "n4"] {
        c.wait_members(c.node(n), &["n1", "n2", "n3", "n4"]).await;
    }
    // Each old node moves n4 its share, once n4 answers.
    let give_up = Instant::now() + WAIT;
    let lines = loop {
        let lines: Vec<(&str, String)> = old
            .iter()
            .filter_map(|n| {
                c.node(n)
                    .log_lines_with("rebalanced to a new node")
                    .into_iter()
                    .find(|l| l.contains(" to=n4 "))
                    .map(|l| (*n, l))
            })
            .collect();
        if lines.len() == old.len() || Instant::now() >= give_up {
            break lines;
        }
        tokio::time::sleep(POLL).await;
    };
    let rebalanced = t_join.elapsed();
    if lines.len() < old.len() {
        problems.push(format!(
            "{WAIT:?} after n4 joined, only {lines:?} logged their rebalance"
        ));
    }
    let moved: u64 = lines.iter().filter_map(|(_, l)| field(l, "moved")).sum();
    for (n, l) in &lines {
        if field(l, "failed") != Some(0) {
            problems.push(format!("{n} could not move some customers to n4: {l}"));
        }
    }
    let acked = lock(&log).acks.len();
    wait_acks(&log, acked + 30, "background load after the join").await;
    load.stop().await;
    let snap = lock(&log).clone();

    // n4 owns its share of the customers that existed before it joined.
    let owners = c.owners().await;
    let taken = before
        .iter()
        .filter(|cu| owners.get(*cu).map(String::as_str) == Some("n4"))
        .count();
    let share = taken as f64 / before.len() as f64;
    if !(0.12..=0.40).contains(&share) {
        problems.push(format!(
            "n4 owns {taken} of the {} customers that existed before it joined ({:.0}%), want about a quarter",
            before.len(),
            share * 100.0
        ));
    }
    if (moved as usize) < taken {
        problems.push(format!(
            "the old nodes logged {moved} customers moved, but n4 owns {taken} of those that existed before it"
        ));
    }

    // Nothing lost on the way: every acknowledged message exactly once,
    // every conversation still queued.
    let all4 = c.gateways(&["n1", "n2", "n3", "n4"]);
    let hist = check_histories(&all4, &snap, None).await;
    problems.extend(hist.problems.iter().cloned());
    let wanted: BTreeSet<String> = snap.acks.iter().map(|a| a.conversation.clone()).collect();
    if let Err(e) = wait_listed(&c, "n4", &wanted, t_join).await {
        problems.push(e);
    }
    let listed = list_conversations(c.node("n4")).await;
    let (p, listed_n) = queued_problems(&listed, &wanted);
    problems.extend(p);
    problems.extend(snap.failures.iter().cloned());

    // The newcomer dies: what it was moved is recovered like what was
    // created there (the nodes that moved it forward to it no more).
    let n4_customers = owned_by(&c.owners().await, "n4");
    c.node_mut("n4").kill();
    let t_kill = Instant::now();
    let give_up = Instant::now() + WAIT;
    loop {
        let pending = not_taken_over(&c, &n4_customers, &old, "n4").await;
        if pending.is_empty() {
            break;
        }
        if Instant::now() >= give_up {
            problems.push(format!(
                "{WAIT:?} after SIGKILL of n4, {} of its {} customers have no survivor owner, e.g. {:?}",
                pending.len(),
                n4_customers.len(),
                &pending[..pending.len().min(10)]
            ));
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let recovered = t_kill.elapsed();
    if let Err(e) = wait_listed(&c, "n1", &wanted, t_kill).await {
        problems.push(format!("after n4's death: {e}"));
    }
    let hist = check_histories(&c.gateways(&old), &snap, None).await;
    problems.extend(
        hist.problems
            .iter()
            .map(|p| format!("after n4's death: {p}")),
    );

    eprintln!("---- summary: a fourth node joins");
    eprintln!(
        "  {} messages acknowledged ({} customers); n4 joined and owns {taken} of the {} that existed ({:.0}%); moved by the old nodes: {moved} ({lines:?}), all logged {rebalanced:.1?} after the join; {} attempts refused {:?}; ListConversations listed {listed_n} (want {})",
        snap.acks.len(),
        hist.customers,
        before.len(),
        share * 100.0,
        snap.refused.len(),
        refusal_codes(&snap),
        wanted.len()
    );
    eprintln!(
        "  then n4 was killed with {} customers: survivors own them all {recovered:.1?} after",
        n4_customers.len()
    );
    finish(t0, problems);
}

/// Waiting customers when the router's node dies with agents at work.
const HOLD_CUSTOMERS: usize = 40;
/// Agents holding three chats each when it dies, two per node.
const HOLD_AGENTS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_keep_their_conversations_when_the_router_s_node_dies() {
    let Seeded {
        mut c,
        t0,
        router,
        log,
        seeded,
        ..
    } = Seeded::start("failover-router-agents", HOLD_CUSTOMERS).await;
    let mut problems: Vec<String> = Vec::new();
    let victim = router;
    let survivors = survivors_of(&victim);
    let (release, released) = tokio::sync::watch::channel(false);
    let desk: SharedDesk = Arc::default();
    let mut agents = Vec::new();
    for a in 0..HOLD_AGENTS {
        let node = ["n1", "n2", "n3"][a % 3];
        let reconnect = survivors
            .iter()
            .map(|s| ((*s).to_owned(), c.node(s).desktop_client()))
            .collect();
        let behaviour = Behaviour {
            reply: false,
            hold: Some(released.clone()),
            reconnect,
        };
        let id = format!("holder-{a}-{node}");
        agents.push(Agent::start(id, c.node(node), behaviour, desk.clone()).await);
    }
    let full = (CAPACITY / CHAT_COST) as usize;
    let give_up = Instant::now() + WAIT;
    while agents.iter().any(|a| a.held().len() < full) {
        assert!(
            Instant::now() < give_up,
            "agents did not fill up within {WAIT:?}: {:?}",
            agents.iter().map(|a| a.held().len()).collect::<Vec<_>>()
        );
        tokio::time::sleep(POLL).await;
    }
    let held: BTreeMap<String, BTreeSet<String>> =
        agents.iter().map(|a| (a.id.clone(), a.held())).collect();
    say!(
        t0,
        "{seeded} customers waiting or served; {HOLD_AGENTS} agents hold {full} chats each; killing {victim}, the router's node"
    );

    c.node_mut(&victim).kill();
    let t_kill = Instant::now();
    let snap = lock(&log).clone();
    let wanted: BTreeSet<String> = snap.acks.iter().map(|a| a.conversation.clone()).collect();
    let back = wait_listed(&c, survivors[0], &wanted, t_kill).await;
    say!(
        t0,
        "a survivor's router lists every conversation {back:?} after SIGKILL"
    );
    if let Err(e) = &back {
        problems.push(e.clone());
    }
    let new_router = c.router_node().await;
    if !new_router
        .as_deref()
        .is_some_and(|r| survivors.contains(&r))
    {
        problems.push(format!(
            "the router is on {new_router:?}, not on a survivor"
        ));
    }

    // Every agent, its desktop reconnected if its node died, still holds
    // its three chats: the new router learnt them before offering anything.
    let mut admin = c.node(survivors[0]).admin();
    let give_up = Instant::now() + WAIT;
    let mismatched = loop {
        let mut req = tonic::Request::new(pb::ListAgentsRequest {});
        req.set_timeout(CALL_TIMEOUT);
        let views = admin
            .list_agents(req)
            .await
            .map(|r| r.into_inner().agents)
            .unwrap_or_default();
        let wrong: Vec<String> = held
            .iter()
            .filter(|(id, convs)| {
                !views.iter().any(|v| {
                    v.agent_id == **id
                        && v.state != pb::AgentState::Offline as i32
                        && v.load == (convs.len() as i32 * CHAT_COST) as u32
                        && v.conversation_ids.iter().cloned().collect::<BTreeSet<_>>() == **convs
                })
            })
            .map(|(id, _)| {
                let v = views.iter().find(|v| v.agent_id == *id);
                format!(
                    "{id}: {:?}",
                    v.map(|v| (v.state, v.load, &v.conversation_ids))
                )
            })
            .collect();
        if wrong.is_empty() || Instant::now() >= give_up {
            break wrong;
        }
        tokio::time::sleep(POLL).await;
    };
    if !mismatched.is_empty() {
        problems.push(format!(
            "after the takeover, agents do not hold what they held before it: {mismatched:?}"
        ));
    }
    for a in &agents {
        if a.held() != held[&a.id] {
            problems.push(format!(
                "{} held {:?} before the kill, {:?} after",
                a.id,
                held[&a.id],
                a.held()
            ));
        }
    }
    let reconnected: Vec<String> = agents
        .iter()
        .filter(|a| a.sessions() > 1)
        .map(|a| a.id.clone())
        .collect();
    say!(t0, "agents that logged in again elsewhere: {reconnected:?}");
    if reconnected.len() != HOLD_AGENTS / 3 {
        problems.push(format!(
            "the {} agents whose desktops were on {victim} should have logged in again elsewhere; did: {reconnected:?}",
            HOLD_AGENTS / 3
        ));
    }

    // Released, the agents wrap up and take every waiting customer, once.
    let _ = release.send(true);
    let t_route = Instant::now();
    let wrapped = wait_wrapped(t0, &desk, &wanted).await;
    let route_time = t_route.elapsed();
    for a in agents {
        a.close().await;
    }
    problems.extend(desk_problems(&lock(&desk), &wanted, false));
    let survivor_gws = c.gateways(&survivors);
    let hist = check_histories(&survivor_gws, &snap, None).await;
    problems.extend(hist.problems.iter().cloned());

    eprintln!("---- summary: the router's node killed while agents hold conversations");
    eprintln!(
        "  {} conversations; {HOLD_AGENTS} agents held {full} each; router back on {new_router:?} {back:?} after SIGKILL; reconnected {reconnected:?}; {wrapped}/{} wrapped up in {route_time:.1?} after the release",
        wanted.len(),
        wanted.len()
    );
    finish(t0, problems);
}

/// Customers created before the stop.
const ZOMBIE_CUSTOMERS: usize = 90;
/// Former customers of the zombie sent a message through it while stopped.
const ZOMBIE_WRITES: usize = 5;
/// Former customers sent a message through the survivors while it is stopped.
const SURVIVOR_WRITES: usize = 10;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zombie_node_is_fenced_out_and_steps_down() {
    let Seeded {
        mut c,
        t0,
        router,
        log,
        owners,
        ..
    } = Seeded::start("failover-zombie", ZOMBIE_CUSTOMERS).await;
    let mut problems: Vec<String> = Vec::new();
    let victim = pick_victim(&owners, &router, Victim::Other);
    assert_ne!(victim, router, "the victim must not host the router");
    let survivors = survivors_of(&victim);
    let former: Vec<String> = owned_by(&owners, &victim).into_iter().collect();
    assert!(
        former.len() >= ZOMBIE_WRITES + 2,
        "{victim} owns too few customers: {:?}",
        count_by_node(&owners)
    );
    let identity_of: HashMap<String, String> = lock(&log)
        .acks
        .iter()
        .map(|a| (a.customer.clone(), a.identity.clone()))
        .collect();
    let pid = pid_of(c.node(&victim));
    say!(
        t0,
        "owners {:?}; stopping {victim} (pid {pid}) with {} customers",
        count_by_node(&owners),
        former.len()
    );

    signal(pid, "STOP");
    let t_stop = Instant::now();
    // Messages sent to the zombie while it is stopped wait in its socket; a
    // refusal is retried on the survivors.
    let through_zombie: Arc<Vec<Gw>> = Arc::new(
        std::iter::once(Gw {
            node: victim.clone(),
            client: c.node(&victim).gateway(),
        })
        .chain(c.gateways(&survivors).iter().cloned())
        .collect(),
    );
    let mut zombie_writes = JoinSet::new();
    for cu in &former[..ZOMBIE_WRITES] {
        let (gws, log, identity) = (through_zombie.clone(), log.clone(), identity_of[cu].clone());
        let label = format!("zombie-write-{cu}");
        zombie_writes.spawn(async move {
            submit(&gws, 0, &identity, &label, &log, Duration::from_secs(20)).await
        });
    }

    // The survivors take its customers over.
    let give_up = Instant::now() + WAIT;
    let takeover = loop {
        let pending = not_taken_over(&c, &former, &survivors, &victim).await;
        if pending.is_empty() {
            break t_stop.elapsed();
        }
        assert!(
            Instant::now() < give_up,
            "{WAIT:?} after SIGSTOP, {} of {victim}'s customers are not owned by a survivor, e.g. {:?}",
            pending.len(),
            &pending[..pending.len().min(10)]
        );
        tokio::time::sleep(POLL).await;
    };
    say!(
        t0,
        "survivors own every customer of the stopped {victim} {takeover:.1?} after SIGSTOP"
    );

    // From now on etcd's owners must never name the zombie.
    let watch_stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (etcd, stop, victim) = (c.etcd.clone(), watch_stop.clone(), victim.clone());
        let prefix = format!("{}owners/", etcd_prefix(&c.name));
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut polls = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let (e, p) = (etcd.clone(), prefix.clone());
                let owners = tokio::task::spawn_blocking(move || read_prefix(&e, &p))
                    .await
                    .expect("reading etcd");
                polls += 1;
                seen.extend(
                    owners
                        .into_iter()
                        .filter(|(_, n)| *n == victim)
                        .map(|(k, _)| format!("owners/{k}")),
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            (polls, seen)
        })
    };

    // Messages to other former customers, through the survivors.
    let survivor_gws = c.gateways(&survivors);
    let mut via_survivors = Vec::new();
    for (k, cu) in former[ZOMBIE_WRITES..]
        .iter()
        .take(SURVIVOR_WRITES)
        .enumerate()
    {
        let label = format!("after-stop-{cu}");
        match submit(
            &survivor_gws,
            k,
            &identity_of[cu],
            &label,
            &log,
            CALL_TIMEOUT,
        )
        .await
        {
            Some(a) => via_survivors.push(a),
            None => problems.push(format!("{label}: not acknowledged by the survivors")),
        }
    }
    say!(
        t0,
        "{} messages to former customers acknowledged by the survivors",
        via_survivors.len()
    );

    signal(pid, "CONT");
    let t_cont = Instant::now();
    let status = c.node_mut(&victim).wait_exit(WAIT).await;
    let exit_after = t_cont.elapsed();
    say!(
        t0,
        "{victim} exited {status:?} {exit_after:.1?} after SIGCONT"
    );
    let mut zombie_acks = Vec::new();
    while let Some(r) = zombie_writes.join_next().await {
        zombie_acks.push(r.expect("a zombie write task panicked"));
    }

    match status {
        Some(s) if !s.success() => {}
        Some(s) => problems.push(format!(
            "the zombie {victim} exited with {s} (want a failure)"
        )),
        None => problems.push(format!(
            "the zombie {victim} still runs {WAIT:?} after SIGCONT"
        )),
    }
    let lease_lost = c.node(&victim).log_lines_with("lease lost");
    if lease_lost.is_empty() {
        problems.push(format!(
            "the zombie {victim}'s log does not say \"lease lost\""
        ));
    }
    // The writes it held reached its (stale) actors: each must have been
    // fenced, and said so.
    let fenced = c.node(&victim).log_lines_with("fenced out");
    let refused_fenced = lock(&log)
        .refused
        .iter()
        .filter(|r| r.via == victim && r.message.contains("fenced"))
        .count();
    if refused_fenced > 0 && fenced.is_empty() {
        problems.push(format!(
            "{refused_fenced} writes were refused by the zombie as fenced, but its log never says \"fenced out\""
        ));
    }
    let (owners_after, placed_after, members_after) =
        (c.owners().await, c.placed().await, c.members().await);
    for (k, n) in owners_after.iter().chain(placed_after.iter()) {
        if *n == victim {
            problems.push(format!(
                "after the zombie exited, {k} is still placed on/owned by {victim}"
            ));
        }
    }
    if members_after.contains(&victim) {
        problems.push(format!("members/{victim} is in etcd again"));
    }
    for s in &survivors {
        c.wait_members(c.node(s), &survivors).await;
    }
    for a in zombie_acks.iter().flatten() {
        if a.via == victim {
            say!(
                t0,
                "note: the zombie acknowledged {:?} (it must then be in the history)",
                a.text
            );
        }
    }
    let unacked_zombie = zombie_acks.iter().filter(|a| a.is_none()).count();
    if unacked_zombie > 0 {
        problems.push(format!(
            "{unacked_zombie} messages first sent to the zombie were never acknowledged, even retried on the survivors"
        ));
    }

    // Histories: every acknowledged message exactly once, nothing else.
    let snap = lock(&log).clone();
    let former_set: BTreeSet<String> = former.iter().cloned().collect();
    let hist = check_histories(&survivor_gws, &snap, Some(&former_set)).await;
    problems.extend(hist.problems.iter().cloned());
    for (r, seq) in &hist.landed_unacked {
        problems.push(format!(
            "{:?} was not acknowledged ({:?} {} via {}) but is in the history at seq {seq}",
            r.text, r.code, r.message, r.via
        ));
    }
    problems.extend(snap.failures.iter().cloned());
    // Owners were watched from the takeover until now.
    watch_stop.store(true, Ordering::Relaxed);
    let (polls, seen) = watcher.await.expect("the owners watcher");
    if !seen.is_empty() {
        let seen: BTreeSet<&String> = seen.iter().collect();
        problems.push(format!(
            "etcd's owners named the zombie after the takeover: {seen:?}"
        ));
    }

    eprintln!("---- summary: zombie");
    eprintln!(
        "  {victim} stopped with {} customers; survivors owned them {takeover:.1?} after SIGSTOP; {} messages acknowledged by survivors meanwhile",
        former.len(),
        via_survivors.len()
    );
    eprintln!(
        "  messages sent to the stopped zombie: {} ({:?}); refused attempts {:?}",
        ZOMBIE_WRITES,
        zombie_acks
            .iter()
            .map(|a| a
                .as_ref()
                .map(|a| format!("acked via {} after {} attempts", a.via, a.attempts)))
            .collect::<Vec<_>>(),
        snap.refused
            .iter()
            .map(|r| format!("{} {:?}: {}", r.via, r.code, r.message))
            .collect::<Vec<_>>()
    );
    eprintln!(
        "  zombie exited {status:?} {exit_after:.1?} after SIGCONT; \"lease lost\" lines {}; \"fenced out\" lines {}; owners polled {polls} times",
        lease_lost.len(),
        fenced.len()
    );
    eprintln!(
        "  histories of {} former customers checked ({} acknowledged messages)",
        hist.customers, hist.messages
    );
    finish(t0, problems);
}
