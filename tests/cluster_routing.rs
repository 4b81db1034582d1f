//! A real cluster routes thousands of contacts end to end, through a scale-out
//! and an etcd restart: real `centralino node` processes, a real etcd, and
//! real gRPC clients only.
//!
//! `a_cluster_routes_contacts_through_scale_out_and_an_etcd_restart`:
//!
//! 1. etcd and three nodes (`n1`..`n3`) in one cluster, with the default
//!    queue and no after-contact work (a config file sets `acw_ms` to 0, so
//!    a wrap-up frees capacity at once).
//! 2. Priority: one agent, logged in AWAY; four ordinary voice contacts and
//!    then an angry one (sentiment -1.0) wait in the queue, submitted through
//!    gateways on random nodes. The angry one is first in line; when the
//!    agent turns AVAILABLE its first offer is the angry conversation, then
//!    the four others in the order they came (FIFO between equals).
//! 3. Load: twelve agent desktops (capacity 100) and gateway clients on
//!    random nodes (seeded). Every desktop accepts each offer, replies once,
//!    wraps up and resolves. `CONTACTS` contacts (chat, email, voice; tiers
//!    and some negative sentiment) come through the gateways with bounded
//!    concurrency. After a third of them a fourth node joins; after two
//!    thirds etcd is restarted (same data, same ports) while contacts keep
//!    coming. A contact refused with UNAVAILABLE (or not answered in time) is
//!    retried as a gateway would, until a deadline.
//! 4. Checks: every acknowledged contact was offered, accepted exactly once
//!    (a conversation offered again only after its earlier offer was revoked
//!    or refused; an offer revoked that never reached its desktop was lost
//!    on its way), replied to, wrapped up and resolved; each offer's history
//!    holds the contact's message, with contiguous sequence numbers; the
//!    history read through Gateway.GetConversation after the wrap-up (before
//!    the resolve closes it) is contiguous and complete: the message, Queued
//!    before the first offer, every offer the desktops received (and no
//!    other), one assignment to the agent who accepted, after its offer, the
//!    reply, the wrap-up last; every resolved conversation has left etcd
//!    for the cluster's archive (one file, ending with the resolution),
//!    etcd restart included; no agent ever held more than its capacity (the
//!    desktops' own ledger of accepted work, the load the router reports on
//!    the desktop streams, and Admin.ListAgents polled throughout); the
//!    fourth node owns (etcd's `owners/customer/` keys) a fair share of the
//!    customers created after it joined; finally every node exits cleanly on
//!    SIGTERM. All problems are collected and reported together, with a
//!    summary (retries, revocations, offer delivery delays and accept round
//!    trips over time) and the tail of every node's log.
//!
//! Waits poll a condition with generous deadlines; nothing sleeps for a
//! fixed time except a short poll interval or a retry backoff.
//! `CLUSTER_ROUTING_CONTACTS` overrides the number of contacts (to narrow a
//! failure down); the default is what the test is meant to pass with.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use centralino_proto::v1 as pb;
use centralino_tests::cluster::{ClusterProcess, NodeSpec, customer_owners};
use centralino_tests::etcd::EtcdServer;
use centralino_tests::{Desktop, Rng, cmd, login};
use pb::agent_command::Command;
use pb::agent_event::Event;
use pb::gateway_client::GatewayClient;
use pb::get_conversation_request::Who;
use pb::history_event::Kind;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Code;
use tonic::transport::Channel;

const CLUSTER: &str = "routing";
/// Contacts submitted in the load phase.
const CONTACTS: usize = 2_400;
const AGENTS: usize = 12;
const CAPACITY: u32 = 100;
/// Contacts in flight at once.
const CONCURRENCY: usize = 24;
/// Gateway clients on the first three nodes, and added once the fourth joins.
const GATEWAYS: usize = 6;
const GATEWAYS_LATER: usize = 2;
const SEED: u64 = 0x00C3_A7A1_1A0F_2026;
/// Longest wait for any one condition (or for progress while draining).
const WAIT: Duration = Duration::from_secs(60);
/// A gateway gives up retrying a contact after this long.
const SUBMIT_DEADLINE: Duration = Duration::from_secs(60);
/// One SubmitContact attempt may take this long.
const CALL_TIMEOUT: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(50);
/// How long an offer stays open (`routing.offer_timeout_ms`, the default).
const OFFER_TIMEOUT: Duration = Duration::from_secs(15);
/// A desktop retries a failed reply / wrap-up / resolve this many times.
const STEP_ATTEMPTS: u32 = 100;
const STEP_BACKOFF: Duration = Duration::from_millis(300);

/// No after-contact work: a wrap-up frees the agent's capacity at once.
const CONFIG: &str = r#"
[routing]
offer_timeout_ms = 15000
acw_ms = { voice = 0, chat = 0, email = 0, sms = 0, whatsapp = 0, social = 0, app = 0 }
"#;

fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Offer delivery delays and accept round trips, per 5 s of the run.
fn timing_table(reports: &[(String, DesktopReport)]) -> String {
    let mut buckets: BTreeMap<u64, (usize, u64, u64, u64, u64)> = BTreeMap::new();
    for (_, r) in reports {
        for &(at, delay, accept) in &r.timings {
            let b = buckets.entry(at / 5_000 * 5).or_default();
            b.0 += 1;
            b.1 = b.1.max(delay);
            b.2 += delay;
            if let Some(a) = accept {
                b.3 = b.3.max(a);
                b.4 += a;
            }
        }
    }
    let mut out = String::from(
        "  t (s)  offers  delivery delay mean/max (ms)  accept round trip mean/max (ms)\n",
    );
    for (t, (n, dmax, dsum, amax, asum)) in buckets {
        out += &format!(
            "  {t:>5}  {n:>6}  {:>10} / {dmax:<10}        {:>10} / {amax}\n",
            dsum / n as u64,
            asum / n as u64
        );
    }
    out
}

fn cost(channel: i32) -> u32 {
    match pb::Channel::try_from(channel) {
        Ok(pb::Channel::Voice) => 100,
        Ok(pb::Channel::Chat | pb::Channel::Whatsapp | pb::Channel::App) => 30,
        Ok(pb::Channel::Email | pb::Channel::Social) => 20,
        Ok(pb::Channel::Sms) => 10,
        _ => panic!("an offer on channel {channel}"),
    }
}

fn identity(kind: pb::IdentityKind, address: String) -> pb::Identity {
    pb::Identity {
        kind: kind as i32,
        address,
    }
}

fn customer_texts(history: &[pb::HistoryEvent]) -> Vec<String> {
    history
        .iter()
        .filter_map(|e| match &e.kind {
            Some(Kind::CustomerMessage(m)) => Some(m.text.clone()),
            _ => None,
        })
        .collect()
}

fn contiguous(history: &[pb::HistoryEvent]) -> bool {
    history
        .iter()
        .enumerate()
        .all(|(i, e)| e.seq == i as u64 + 1)
}

// ------------------------------------------------------------------ ledger

/// What the desktops saw, per conversation and overall.
#[derive(Default)]
struct Ledger {
    convs: HashMap<String, Conv>,
    /// offer id → conversation id, for revocations.
    offers: HashMap<String, String>,
    violations: Vec<String>,
    /// Desktops set AWAY by the router (an offer went unanswered).
    set_away: Vec<String>,
    revoked: BTreeMap<String, u64>,
    step_errors: BTreeMap<String, u64>,
    forwarded_messages: u64,
}

#[derive(Default)]
struct Conv {
    offers: Vec<OfferRec>,
    /// Customer messages in the latest offer's history.
    texts: Vec<String>,
    replied: u32,
    wrapped: u32,
    resolved: u32,
    gave_up: Vec<String>,
    /// The history read through Gateway.GetConversation after the wrap-up
    /// and before the resolve, described by [`describe`]; or why not.
    history: Option<Result<Vec<String>, String>>,
}

struct OfferRec {
    offer_id: String,
    agent: String,
    revoked: Option<String>,
    accept: Option<Result<(), String>>,
}

type Shared = Arc<Mutex<Ledger>>;

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------- desktops

#[derive(Clone, Copy, Debug)]
enum Step {
    Reply,
    WrapUp,
    Resolve,
}

enum Pending {
    Accept {
        conv: String,
        offer: String,
        cost: u32,
        sent: Instant,
        timing: usize,
    },
    Step {
        step: Step,
        conv: String,
        attempt: u32,
    },
    SetAvailable,
}

/// One automatic agent desktop: accepts every offer, replies once, wraps
/// up and resolves, several conversations at a time.
struct AutoDesktop {
    agent: String,
    node: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<DesktopReport>,
}

#[derive(Debug)]
struct DesktopReport {
    offers: u64,
    accepted: u64,
    max_load: u32,
    /// Per offer: (when it arrived, ms since the test began; how long after
    /// the router made it; how long its accept took).
    timings: Vec<(u64, u64, Option<u64>)>,
}

struct DesktopCtx {
    agent: String,
    ledger: Shared,
    tx: Option<mpsc::Sender<pb::AgentCommand>>,
    next: u64,
    pending: HashMap<u64, Pending>,
    /// Accepted and not yet wrapped up, with their channel cost.
    active: HashMap<String, u32>,
    retry: mpsc::UnboundedSender<(Step, String, u32)>,
    /// A gateway client on the desktop's node, to read the history.
    gateway: GatewayClient<Channel>,
    /// When the test began.
    t0: Instant,
    report: DesktopReport,
}

impl DesktopCtx {
    async fn send(&mut self, command: Command, pending: Pending) {
        let Some(tx) = &self.tx else { return };
        let request_id = self.next;
        self.next += 1;
        self.pending.insert(request_id, pending);
        let cmd = pb::AgentCommand {
            request_id,
            command: Some(command),
        };
        if tx.send(cmd).await.is_err() {
            lock(&self.ledger).violations.push(format!(
                "{}: the session's request stream closed",
                self.agent
            ));
        }
    }

    async fn step(&mut self, step: Step, conv: String, attempt: u32) {
        let command = match step {
            Step::Reply => cmd::reply(&conv, &format!("reply to {conv}")),
            Step::WrapUp => {
                // Counted free from the moment the wrap-up is sent: the
                // router cannot free it earlier, so the desktop's count never
                // exceeds what the router holds.
                self.active.remove(&conv);
                cmd::wrap_up(&conv, "done")
            }
            Step::Resolve => cmd::resolve(&conv),
        };
        self.send(
            command,
            Pending::Step {
                step,
                conv,
                attempt,
            },
        )
        .await;
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Offer(o) => {
                self.report.offers += 1;
                let conv = o.conversation_id.clone();
                {
                    let mut l = lock(&self.ledger);
                    if !contiguous(&o.history) {
                        let seqs: Vec<u64> = o.history.iter().map(|e| e.seq).collect();
                        l.violations.push(format!(
                            "offer {} of {conv} to {}: history not contiguous: {seqs:?}",
                            o.offer_id, self.agent
                        ));
                    }
                    l.offers.insert(o.offer_id.clone(), conv.clone());
                    let c = l.convs.entry(conv.clone()).or_default();
                    c.texts = customer_texts(&o.history);
                    c.offers.push(OfferRec {
                        offer_id: o.offer_id.clone(),
                        agent: self.agent.clone(),
                        revoked: None,
                        accept: None,
                    });
                }
                // The router made the offer `OFFER_TIMEOUT` before it expires.
                let made = o.expires_unix_ms - OFFER_TIMEOUT.as_millis() as i64;
                let delay = (unix_ms() - made).max(0) as u64;
                self.report
                    .timings
                    .push((self.t0.elapsed().as_millis() as u64, delay, None));
                let pending = Pending::Accept {
                    conv,
                    offer: o.offer_id.clone(),
                    cost: cost(o.channel),
                    sent: Instant::now(),
                    timing: self.report.timings.len() - 1,
                };
                self.send(cmd::accept(&o.offer_id), pending).await;
            }
            Event::OfferRevoked(r) => {
                let mut l = lock(&self.ledger);
                *l.revoked.entry(r.reason.clone()).or_default() += 1;
                let Some(conv) = l.offers.get(&r.offer_id).cloned() else {
                    l.violations.push(format!(
                        "{}: offer {} revoked ({}) but never received: the offer was lost on its way",
                        self.agent, r.offer_id, r.reason
                    ));
                    return;
                };
                if let Some(o) = l
                    .convs
                    .get_mut(&conv)
                    .and_then(|c| c.offers.iter_mut().find(|o| o.offer_id == r.offer_id))
                {
                    o.revoked = Some(r.reason);
                }
            }
            Event::StateChanged(s) => {
                if s.load > CAPACITY {
                    lock(&self.ledger).violations.push(format!(
                        "{}: the router reports load {} over capacity {CAPACITY}",
                        self.agent, s.load
                    ));
                }
                if s.state == pb::AgentState::Away as i32 {
                    // Redirect on no answer: an offer timed out. The agent
                    // makes itself available again, as a person would.
                    lock(&self.ledger).set_away.push(self.agent.clone());
                    self.send(
                        cmd::set_state(pb::AgentState::Available),
                        Pending::SetAvailable,
                    )
                    .await;
                }
            }
            Event::CustomerMessage(_) => lock(&self.ledger).forwarded_messages += 1,
            Event::Result(r) => self.on_result(r).await,
        }
    }

    async fn on_result(&mut self, r: pb::agent_event::CommandResult) {
        let ok = r.code == 0;
        let why = format!("{:?}: {}", Code::from(r.code), r.message);
        match self.pending.remove(&r.request_id) {
            None => lock(&self.ledger).violations.push(format!(
                "{}: a result for request {} never sent: {r:?}",
                self.agent, r.request_id
            )),
            Some(Pending::SetAvailable) => {
                if !ok {
                    lock(&self.ledger)
                        .violations
                        .push(format!("{}: SetState AVAILABLE refused: {why}", self.agent));
                }
            }
            Some(Pending::Accept {
                conv,
                offer,
                cost,
                sent,
                timing,
            }) => {
                self.report.timings[timing].2 = Some(sent.elapsed().as_millis() as u64);
                {
                    let mut l = lock(&self.ledger);
                    if let Some(o) = l
                        .convs
                        .get_mut(&conv)
                        .and_then(|c| c.offers.iter_mut().find(|o| o.offer_id == offer))
                    {
                        o.accept = Some(if ok { Ok(()) } else { Err(why) });
                    }
                }
                if ok {
                    self.report.accepted += 1;
                    self.active.insert(conv.clone(), cost);
                    let load: u32 = self.active.values().sum();
                    self.report.max_load = self.report.max_load.max(load);
                    if load > CAPACITY {
                        lock(&self.ledger).violations.push(format!(
                            "{}: holds {load} of capacity {CAPACITY} after accepting {conv}: {:?}",
                            self.agent, self.active
                        ));
                    }
                    self.step(Step::Reply, conv, 0).await;
                }
            }
            Some(Pending::Step {
                step,
                conv,
                attempt,
            }) => {
                if ok {
                    {
                        let mut l = lock(&self.ledger);
                        let c = l.convs.entry(conv.clone()).or_default();
                        match step {
                            Step::Reply => c.replied += 1,
                            Step::WrapUp => c.wrapped += 1,
                            Step::Resolve => c.resolved += 1,
                        }
                    }
                    match step {
                        Step::Reply => self.step(Step::WrapUp, conv, 0).await,
                        Step::WrapUp => {
                            // Read the history before resolving closes it.
                            let (gw, ledger, retry) = (
                                self.gateway.clone(),
                                self.ledger.clone(),
                                self.retry.clone(),
                            );
                            tokio::spawn(async move {
                                let history = read_history(gw, &conv).await;
                                if let Ok(h) = &history
                                    && !h.contiguous
                                {
                                    lock(&ledger).violations.push(format!(
                                        "{conv}: history sequence numbers not contiguous: {:?}",
                                        h.events
                                    ));
                                }
                                lock(&ledger).convs.entry(conv.clone()).or_default().history =
                                    Some(history.map(|h| h.events));
                                let _ = retry.send((Step::Resolve, conv, 0));
                            });
                        }
                        Step::Resolve => {}
                    }
                    return;
                }
                let mut l = lock(&self.ledger);
                *l.step_errors
                    .entry(format!("{step:?}: {:?}", Code::from(r.code)))
                    .or_default() += 1;
                if attempt + 1 >= STEP_ATTEMPTS {
                    let msg = format!(
                        "{step:?} by {} failed {STEP_ATTEMPTS} times, last: {why}",
                        self.agent
                    );
                    l.convs.entry(conv).or_default().gave_up.push(msg);
                    return;
                }
                drop(l);
                let retry = self.retry.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(STEP_BACKOFF).await;
                    let _ = retry.send((step, conv, attempt + 1));
                });
            }
        }
    }
}

struct ReadHistory {
    events: Vec<String>,
    contiguous: bool,
}

/// The conversation's history as Gateway.GetConversation shows it, retried
/// while the cluster is unavailable.
async fn read_history(mut gw: GatewayClient<Channel>, conv: &str) -> Result<ReadHistory, String> {
    let customer = conv.split('.').next().unwrap_or(conv).to_owned();
    let give_up = tokio::time::Instant::now() + SUBMIT_DEADLINE;
    loop {
        let mut req = tonic::Request::new(pb::GetConversationRequest {
            who: Some(Who::CustomerId(customer.clone())),
        });
        req.set_timeout(CALL_TIMEOUT);
        match gw.get_conversation(req).await {
            Ok(v) => {
                let v = v.into_inner();
                if v.conversation_id != conv {
                    return Err(format!(
                        "GetConversation({customer}) shows conversation {:?} in state {}, not {conv}",
                        v.conversation_id, v.state
                    ));
                }
                return Ok(ReadHistory {
                    contiguous: contiguous(&v.history),
                    events: v.history.iter().map(describe).collect(),
                });
            }
            Err(s)
                if matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded)
                    && tokio::time::Instant::now() < give_up =>
            {
                tokio::time::sleep(STEP_BACKOFF).await;
            }
            Err(s) => return Err(format!("GetConversation({customer}): {s:?}")),
        }
    }
}

/// A short, comparable description of a history event.
fn describe(e: &pb::HistoryEvent) -> String {
    match &e.kind {
        Some(Kind::CustomerMessage(m)) => format!("msg {}", m.text),
        Some(Kind::AgentMessage(m)) => format!("reply {}", m.agent_id),
        Some(Kind::Queued(_)) => "queued".into(),
        Some(Kind::Offered(o)) => format!("offered {} {}", o.agent_id, o.offer_id),
        Some(Kind::OfferRejected(r)) => {
            format!("rejected {} {} {}", r.agent_id, r.offer_id, r.reason)
        }
        Some(Kind::OfferTimedOut(t)) => format!("timed_out {} {}", t.agent_id, t.offer_id),
        Some(Kind::Assigned(a)) => format!("assigned {}", a.agent_id),
        Some(Kind::Transferred(t)) => format!(
            "transferred {} {}{}",
            t.from_agent_id, t.to_queue_id, t.to_agent_id
        ),
        Some(Kind::CallbackRequested(_)) => "callback".into(),
        Some(Kind::WrappedUp(w)) => format!("wrapped {}", w.agent_id),
        Some(Kind::Resolved(r)) => format!("resolved {}", r.by),
        Some(Kind::IdentityLinked(_)) => "linked".into(),
        Some(Kind::Merged(m)) => format!("merged {}", m.from_customer_id),
        Some(Kind::Absorbed(a)) => format!("absorbed {}", a.conversation_id),
        Some(Kind::MergedInto(m)) => format!("merged into {}", m.into_customer_id),
        Some(Kind::Notice(n)) => format!("notice {}", n.campaign_id),
        Some(Kind::BotTranscript(b)) => format!("bot_transcript {}", b.bot_id),
        Some(Kind::Abandoned(_)) => "abandoned".into(),
        None => "(no kind)".into(),
    }
}

/// What is wrong with where a resolved conversation is: it must have left
/// etcd (no event key of it) for the cluster's archive (one file, its
/// history ending with the resolution).
fn archive_problems(node: &ClusterProcess, journal_keys: &[String], conv: &str) -> Vec<String> {
    let Some((customer, number)) = conv.split_once('.') else {
        return vec![format!("{conv}: not a conversation id")];
    };
    let mut problems = Vec::new();
    let events = format!("/journal/{customer}/events/{number}/");
    if journal_keys.iter().any(|k| k.contains(&events)) {
        problems.push(format!(
            "{conv}: resolved, yet its events are still in etcd"
        ));
    }
    let dir = node.archive_dir().join(customer);
    let files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| {
                    p.file_name().and_then(|n| n.to_str()).is_some_and(|n| {
                        n.starts_with(&format!("{number}.")) && n.ends_with(".jsonl")
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    match &files[..] {
        [file] => {
            let text = std::fs::read_to_string(file).unwrap_or_default();
            let last = text.lines().last().unwrap_or_default();
            if !last.contains("\"Resolved\"") {
                problems.push(format!(
                    "{conv}: the archived history ({}) does not end with the resolution: {last:?}",
                    file.display()
                ));
            }
        }
        other => problems.push(format!(
            "{conv}: resolved, want one archive file in {}, found {other:?}",
            dir.display()
        )),
    }
    problems
}

/// What is wrong with a conversation's history read before its resolve,
/// given the offers the desktops received and the one accepted.
fn history_problems(conv: &str, text: &str, c: &Conv, accepted: &OfferRec) -> Vec<String> {
    let h = match &c.history {
        None => {
            return vec![format!(
                "{conv}: its history was never read before the resolve"
            )];
        }
        Some(Err(e)) => return vec![format!("{conv}: reading its history: {e}")],
        Some(Ok(h)) => h,
    };
    let mut p = Vec::new();
    let pos = |want: &str| h.iter().position(|e| e == want);
    if pos(&format!("msg {text}")).is_none() {
        p.push(format!("the contact's message {text:?} is missing"));
    }
    let first_offer = h.iter().position(|e| e.starts_with("offered "));
    match (h.iter().position(|e| e == "queued"), first_offer) {
        (Some(q), Some(o)) if q < o => {}
        (q, o) => p.push(format!(
            "no Queued event before the first offer (queued at {q:?}, offered at {o:?})"
        )),
    }
    for o in &c.offers {
        if pos(&format!("offered {} {}", o.agent, o.offer_id)).is_none() {
            p.push(format!(
                "offer {} to {} was received but is not in the history",
                o.offer_id, o.agent
            ));
        }
    }
    for e in h.iter().filter(|e| e.starts_with("offered ")) {
        let offer = e.rsplit(' ').next().unwrap_or_default();
        if !c.offers.iter().any(|o| o.offer_id == offer) {
            p.push(format!("the history's {e:?} never reached a desktop"));
        }
    }
    let assigned: Vec<&String> = h.iter().filter(|e| e.starts_with("assigned ")).collect();
    let want = format!("assigned {}", accepted.agent);
    if assigned != [&want] {
        p.push(format!("assignments {assigned:?}, want exactly [{want:?}]"));
    }
    match (
        pos(&format!("offered {} {}", accepted.agent, accepted.offer_id)),
        pos(&want),
    ) {
        (Some(o), Some(a)) if o < a => {}
        (o, a) => p.push(format!(
            "the accepted offer (at {o:?}) does not precede the assignment (at {a:?})"
        )),
    }
    if pos(&format!("reply {}", accepted.agent)).is_none() {
        p.push(format!("the reply of {} is missing", accepted.agent));
    }
    if h.last() != Some(&format!("wrapped {}", accepted.agent)) {
        p.push(format!(
            "does not end with the wrap-up by {}",
            accepted.agent
        ));
    }
    if p.is_empty() {
        return p;
    }
    vec![format!("{conv}: history {h:?}: {}", p.join("; "))]
}

impl AutoDesktop {
    async fn start(
        agent: String,
        node: &ClusterProcess,
        ledger: Shared,
        t0: Instant,
    ) -> AutoDesktop {
        let mut client = node.desktop_client();
        let (tx, rx) = mpsc::channel(1024);
        tx.send(pb::AgentCommand {
            request_id: 1,
            command: Some(Command::Login(login(&agent, CAPACITY as i32))),
        })
        .await
        .expect("command channel open");
        let mut events = tokio::time::timeout(WAIT, client.session(ReceiverStream::new(rx)))
            .await
            .unwrap_or_else(|_| panic!("{agent}: the session did not open within {WAIT:?}"))
            .unwrap_or_else(|s| panic!("{agent}: the session was refused: {s:?}"))
            .into_inner();
        // The login's result comes first.
        let first = tokio::time::timeout(WAIT, events.next())
            .await
            .unwrap_or_else(|_| panic!("{agent}: no login result within {WAIT:?}"));
        match first {
            Some(Ok(pb::AgentEvent {
                event: Some(Event::Result(r)),
            })) if r.request_id == 1 && r.code == 0 => {}
            other => panic!("{agent}: login failed: {other:?}"),
        }
        let (stop, mut stopped) = oneshot::channel::<()>();
        let (retry, mut retries) = mpsc::unbounded_channel();
        let mut ctx = DesktopCtx {
            agent: agent.clone(),
            ledger,
            tx: Some(tx),
            next: 2,
            pending: HashMap::new(),
            active: HashMap::new(),
            retry,
            gateway: node.gateway(),
            t0,
            report: DesktopReport {
                offers: 0,
                accepted: 0,
                max_load: 0,
                timings: Vec::new(),
            },
        };
        let task = tokio::spawn(async move {
            let mut stopping = false;
            loop {
                tokio::select! {
                    e = events.next() => match e {
                        None => break,
                        Some(Err(s)) => {
                            if !stopping {
                                lock(&ctx.ledger).violations.push(format!("{}: the session failed: {s:?}", ctx.agent));
                            }
                            break;
                        }
                        Some(Ok(pb::AgentEvent { event: None })) => {
                            lock(&ctx.ledger).violations.push(format!("{}: an AgentEvent without an event", ctx.agent));
                        }
                        Some(Ok(pb::AgentEvent { event: Some(e) })) => ctx.on_event(e).await,
                    },
                    Some((step, conv, attempt)) = retries.recv() => ctx.step(step, conv, attempt).await,
                    _ = &mut stopped, if !stopping => {
                        // Logging out: closing the request stream ends the session.
                        stopping = true;
                        ctx.tx = None;
                    }
                }
            }
            ctx.report
        });
        AutoDesktop {
            agent,
            node: node.node_id.clone(),
            stop: Some(stop),
            task,
        }
    }

    /// Logs out and waits for the session to end.
    async fn close(mut self) -> DesktopReport {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        match tokio::time::timeout(WAIT, self.task).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => panic!("{}: desktop task failed: {e}", self.agent),
            Err(_) => panic!(
                "{} (on {}): the session did not end within {WAIT:?} of logout",
                self.agent, self.node
            ),
        }
    }
}

// ---------------------------------------------------------------- gateways

#[derive(Clone)]
struct Gateway {
    node: String,
    client: GatewayClient<Channel>,
}

/// Counts the replies each gateway stream receives, per conversation.
type Deliveries = Arc<Mutex<HashMap<String, u32>>>;

async fn open_gateway(node: &ClusterProcess, name: String, deliveries: Deliveries) -> Gateway {
    let mut client = node.gateway();
    let mut stream = tokio::time::timeout(
        WAIT,
        client.deliveries(pb::DeliveriesRequest {
            gateway_id: name.clone(),
            channels: vec![],
        }),
    )
    .await
    .unwrap_or_else(|_| panic!("{name}: the deliveries stream did not open"))
    .unwrap_or_else(|s| panic!("{name}: the deliveries stream was refused: {s:?}"))
    .into_inner();
    tokio::spawn(async move {
        while let Some(Ok(d)) = stream.next().await {
            *lock(&deliveries).entry(d.conversation_id).or_default() += 1;
        }
    });
    Gateway {
        node: node.node_id.clone(),
        client,
    }
}

/// One contact as the test submitted it.
#[derive(Clone, Debug)]
struct Contact {
    index: usize,
    request: pb::SubmitContactRequest,
}

#[derive(Clone, Debug)]
struct Acked {
    contact: Contact,
    gateway_node: String,
    response: pb::SubmitContactResponse,
    attempts: u32,
    /// Codes of the attempts that failed.
    refusals: Vec<Code>,
}

fn contact(index: usize, rng: &mut Rng) -> Contact {
    let (channel, who) = match rng.below(10) {
        0..=4 => (
            pb::Channel::Chat,
            identity(pb::IdentityKind::ChatSession, format!("web-{index:05}")),
        ),
        5..=7 => (
            pb::Channel::Email,
            identity(
                pb::IdentityKind::Email,
                format!("cliente{index}@example.com"),
            ),
        ),
        _ => (
            pb::Channel::Voice,
            identity(pb::IdentityKind::Phone, format!("+39340{index:07}")),
        ),
    };
    let tier = ["gold", "silver", "standard", ""][rng.below(4)];
    let sentiment = if rng.chance(0.2) {
        Some(-0.5 - 0.5 * (rng.below(2) as f64))
    } else {
        None
    };
    let topic = ["billing", "support", "sales"][rng.below(3)];
    Contact {
        index,
        request: pb::SubmitContactRequest {
            channel: channel as i32,
            identity: Some(who),
            topic: topic.into(),
            text: format!("contact #{index}: a question about {topic} on {channel:?}"),
            sentiment,
            attributes: Some(pb::CustomerAttributes {
                tier: tier.into(),
                ..Default::default()
            }),
            link_identities: vec![],
        },
    }
}

/// Submits a contact, retrying like a gateway while the cluster says
/// UNAVAILABLE or does not answer in time, until [`SUBMIT_DEADLINE`].
async fn submit(gw: Gateway, c: Contact) -> Result<Acked, String> {
    let give_up = tokio::time::Instant::now() + SUBMIT_DEADLINE;
    let mut client = gw.client.clone();
    let mut refusals = Vec::new();
    let mut backoff = Duration::from_millis(50);
    loop {
        let mut req = tonic::Request::new(c.request.clone());
        req.set_timeout(CALL_TIMEOUT);
        match client.submit_contact(req).await {
            Ok(r) => {
                return Ok(Acked {
                    attempts: refusals.len() as u32 + 1,
                    contact: c,
                    gateway_node: gw.node,
                    response: r.into_inner(),
                    refusals,
                });
            }
            Err(s) if matches!(s.code(), Code::Unavailable | Code::DeadlineExceeded) => {
                refusals.push(s.code());
                if tokio::time::Instant::now() + backoff >= give_up {
                    return Err(format!(
                        "contact #{} via {}: still refused after {SUBMIT_DEADLINE:?} ({} attempts), last: {s:?}",
                        c.index,
                        gw.node,
                        refusals.len()
                    ));
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
            Err(s) => {
                return Err(format!(
                    "contact #{} via {}: refused with {s:?} (not a retryable status)",
                    c.index, gw.node
                ));
            }
        }
    }
}

/// Polls `probe` until it returns `Some`, at most `deadline`.
async fn until<T, F, Fut>(deadline: Duration, what: &str, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        if let Some(v) = probe().await {
            return v;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "not within {deadline:?}: {what}"
        );
        tokio::time::sleep(POLL).await;
    }
}

async fn conversation_of(
    gw: &mut GatewayClient<Channel>,
    who: &pb::Identity,
) -> Result<pb::ConversationView, tonic::Status> {
    let mut req = tonic::Request::new(pb::GetConversationRequest {
        who: Some(Who::Identity(who.clone())),
    });
    req.set_timeout(CALL_TIMEOUT);
    gw.get_conversation(req).await.map(|r| r.into_inner())
}

// --------------------------------------------------------------- priority

/// With no agent available, four ordinary voice contacts and then an angry
/// one wait; the agent who turns available is offered the angry one first,
/// then the others in arrival order.
async fn priority_goes_first(nodes: &[ClusterProcess], rng: &mut Rng) {
    let agent_node = &nodes[rng.below(nodes.len())];
    let mut agent_login = login("prio-agent", CAPACITY as i32);
    agent_login.initial_state = pb::AgentState::Away as i32;
    let mut desk = Desktop::try_login(agent_node.desktop_client(), agent_login)
        .await
        .unwrap_or_else(|s| panic!("prio-agent login on {} refused: {s:?}", agent_node.node_id));

    let mut waiting = Vec::new();
    for i in 0..5 {
        let angry = i == 4;
        let node = &nodes[rng.below(nodes.len())];
        let mut gw = node.gateway();
        let who = identity(pb::IdentityKind::Phone, format!("+39060000{i:03}"));
        let ack = gw
            .submit_contact(pb::SubmitContactRequest {
                channel: pb::Channel::Voice as i32,
                identity: Some(who.clone()),
                topic: "billing".into(),
                text: format!("priority caller {i}"),
                sentiment: angry.then_some(-1.0),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|s| panic!("priority contact {i} via {} refused: {s:?}", node.node_id))
            .into_inner();
        // Queued before the next comes, so that the arrival order is known.
        until(WAIT, &format!("priority contact {i} is queued"), || {
            let mut gw = gw.clone();
            let who = who.clone();
            async move {
                let v = conversation_of(&mut gw, &who).await.ok()?;
                (v.state == pb::ConversationState::Queued as i32).then_some(())
            }
        })
        .await;
        waiting.push((ack.conversation_id, who, gw));
    }
    // Position in line: the angry caller first, the others in arrival order.
    for (k, (conv, who, gw)) in waiting.iter().enumerate() {
        let v = conversation_of(&mut gw.clone(), who)
            .await
            .unwrap_or_else(|s| panic!("GetConversation of {conv}: {s:?}"));
        let expected = if k == 4 { 1 } else { k as u32 + 2 };
        assert_eq!(
            v.position,
            expected,
            "queue position of {conv} (caller {k}, angry = {})",
            k == 4
        );
    }

    desk.command_ok(cmd::set_state(pb::AgentState::Available))
        .await;
    let order: Vec<usize> = vec![4, 0, 1, 2, 3];
    for (n, &k) in order.iter().enumerate() {
        let offer = desk.next_offer().await;
        assert_eq!(
            offer.conversation_id, waiting[k].0,
            "offer #{n} to the freed agent should be caller {k}'s conversation (angry first, then FIFO)"
        );
        if k == 4 {
            let why = offer.explanation.as_ref().expect("an explanation");
            let p = why.priority.as_ref().expect("a priority breakdown");
            assert_eq!(
                p.sentiment_boost_ms, 60_000,
                "the angry caller's boost: {why:?}"
            );
        }
        desk.command_ok(cmd::accept(&offer.offer_id)).await;
        desk.command_ok(cmd::wrap_up(&offer.conversation_id, "done"))
            .await;
        desk.command_ok(cmd::resolve(&offer.conversation_id)).await;
    }
    desk.close().await;
}

// ------------------------------------------------------------------- test

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_routes_contacts_through_scale_out_and_an_etcd_restart() {
    let t0 = Instant::now();
    let contacts: usize = std::env::var("CLUSTER_ROUTING_CONTACTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CONTACTS);
    let mut rng = Rng(SEED);
    let etcd = EtcdServer::start();
    let endpoint = etcd.endpoint();
    let config_dir =
        std::env::temp_dir().join(format!("centralino-routing-{}", std::process::id()));
    std::fs::create_dir_all(&config_dir).expect("config dir");
    let config = config_dir.join("centralino.toml");
    std::fs::write(&config, CONFIG).expect("write the config");
    let spec = |id: &str| NodeSpec {
        etcd: endpoint.clone(),
        cluster: CLUSTER.into(),
        node_id: id.into(),
        config: Some(config.clone()),
        ..Default::default()
    };

    // The first node to start claims the router.
    let n1 = ClusterProcess::start_with(spec("n1")).await;
    let (n2, n3) = tokio::join!(
        ClusterProcess::start_with(spec("n2")),
        ClusterProcess::start_with(spec("n3"))
    );
    let mut nodes = vec![n1, n2, n3];
    eprintln!("[{:>6.1?}] etcd and 3 nodes up", t0.elapsed());

    // ---- priority
    priority_goes_first(&nodes, &mut rng).await;
    eprintln!("[{:>6.1?}] priority order checked", t0.elapsed());

    // ---- load
    let ledger: Shared = Arc::default();
    let deliveries: Deliveries = Arc::default();
    let mut desktops = Vec::new();
    for a in 0..AGENTS {
        let node = &nodes[rng.below(nodes.len())];
        desktops.push(AutoDesktop::start(format!("agent-{a:02}"), node, ledger.clone(), t0).await);
    }
    let mut gateways = Vec::new();
    for g in 0..GATEWAYS {
        let node = &nodes[rng.below(nodes.len())];
        gateways.push(open_gateway(node, format!("gw-{g}"), deliveries.clone()).await);
    }
    eprintln!(
        "[{:>6.1?}] {AGENTS} desktops on {:?}, {GATEWAYS} gateways on {:?}",
        t0.elapsed(),
        desktops.iter().map(|d| d.node.as_str()).collect::<Vec<_>>(),
        gateways.iter().map(|g| g.node.as_str()).collect::<Vec<_>>()
    );

    // Supervisors' view, polled throughout: no agent over capacity.
    let admin_stop = Arc::new(AtomicBool::new(false));
    let admin_clients: Vec<_> = nodes
        .iter()
        .map(|n| (n.node_id.clone(), n.admin()))
        .collect();
    let admin_task = {
        let stop = admin_stop.clone();
        let mut admins = admin_clients.clone();
        let mut rng = Rng(SEED ^ 0xad);
        tokio::spawn(async move {
            let (mut polls, mut errors, mut over) = (0u64, 0u64, Vec::new());
            while !stop.load(Ordering::Relaxed) {
                let k = rng.below(admins.len());
                let (node, admin) = &mut admins[k];
                let mut req = tonic::Request::new(pb::ListAgentsRequest {});
                req.set_timeout(CALL_TIMEOUT);
                match admin.list_agents(req).await {
                    Ok(r) => {
                        polls += 1;
                        for a in r.into_inner().agents {
                            if a.load > a.capacity {
                                over.push(format!("{node}: ListAgents shows {a:?}"));
                            }
                        }
                    }
                    Err(_) => errors += 1,
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            (polls, errors, over)
        })
    };

    let join_at = contacts / 3;
    let restart_at = 2 * contacts / 3;
    let limit = Arc::new(Semaphore::new(CONCURRENCY));
    let mut submissions = JoinSet::new();
    let mut etcd_slot = Some(etcd);
    let mut restart = None;
    let load_started = Instant::now();
    for i in 0..contacts {
        if i == join_at {
            let t = Instant::now();
            let n4 = ClusterProcess::start_with(spec("n4")).await;
            eprintln!(
                "[{:>6.1?}] n4 joined after contact #{i} (started in {:.1?})",
                t0.elapsed(),
                t.elapsed()
            );
            nodes.push(n4);
            for g in 0..GATEWAYS_LATER {
                let node = &nodes[rng.below(nodes.len())];
                gateways.push(open_gateway(node, format!("gw-late-{g}"), deliveries.clone()).await);
            }
        }
        if i == restart_at {
            let mut etcd = etcd_slot.take().expect("etcd is here");
            eprintln!(
                "[{:>6.1?}] restarting etcd after contact #{i}",
                t0.elapsed()
            );
            restart = Some(tokio::task::spawn_blocking(move || {
                let t = Instant::now();
                etcd.restart();
                (etcd, t.elapsed())
            }));
        }
        let c = contact(i, &mut rng);
        let gw = gateways[rng.below(gateways.len())].clone();
        let permit = limit.clone().acquire_owned().await.expect("semaphore open");
        submissions.spawn(async move {
            let r = submit(gw, c).await;
            drop(permit);
            r
        });
    }
    let mut acked = Vec::new();
    let mut failed = Vec::new();
    while let Some(r) = submissions.join_next().await {
        match r.expect("a submission task panicked") {
            Ok(a) => acked.push(a),
            Err(e) => failed.push(e),
        }
    }
    let submit_time = load_started.elapsed();
    let (etcd, etcd_down) = match restart {
        Some(h) => h.await.expect("the etcd restart panicked"),
        None => (etcd_slot.take().expect("etcd"), Duration::ZERO),
    };
    acked.sort_by_key(|a| a.contact.index);
    let retried: Vec<&Acked> = acked.iter().filter(|a| a.attempts > 1).collect();
    eprintln!(
        "[{:>6.1?}] {} contacts acknowledged in {submit_time:.1?} ({} after retries), {} failed; etcd restart took {etcd_down:.1?}",
        t0.elapsed(),
        acked.len(),
        retried.len(),
        failed.len()
    );

    // Every acknowledged conversation is resolved by the desktops; waits
    // as long as progress is made, failing after WAIT without any.
    let wanted: HashSet<String> = acked
        .iter()
        .map(|a| a.response.conversation_id.clone())
        .collect();
    let resolved_count = |l: &Ledger| {
        wanted
            .iter()
            .filter(|c| l.convs.get(*c).is_some_and(|c| c.resolved > 0))
            .count()
    };
    let mut last = (resolved_count(&lock(&ledger)), Instant::now());
    let mut last_report = Instant::now();
    loop {
        let done = resolved_count(&lock(&ledger));
        if done == wanted.len() {
            break;
        }
        if done > last.0 {
            last = (done, Instant::now());
        }
        if last_report.elapsed() > Duration::from_secs(5) {
            eprintln!("[{:>6.1?}] {done}/{} resolved", t0.elapsed(), wanted.len());
            last_report = Instant::now();
        }
        if last.1.elapsed() > WAIT {
            break;
        }
        // Stop waiting for conversations whose desktops gave up on them.
        let stuck = {
            let l = lock(&ledger);
            wanted.iter().all(|c| match l.convs.get(c) {
                Some(c) => c.resolved > 0 || !c.gave_up.is_empty(),
                None => false,
            })
        };
        if stuck {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    eprintln!(
        "[{:>6.1?}] {}/{} acknowledged conversations resolved",
        t0.elapsed(),
        resolved_count(&lock(&ledger)),
        wanted.len()
    );

    // Scale-out: the fourth node owns a fair share of the customers created
    // after it joined (read before any node leaves: ownership is on leases).
    let owners = customer_owners(&etcd, CLUSTER);
    let after_join: Vec<&Acked> = acked
        .iter()
        .filter(|a| a.contact.index >= join_at)
        .collect();
    let mut by_node: BTreeMap<String, usize> = BTreeMap::new();
    let mut unowned = 0;
    for a in &after_join {
        match owners.get(&a.response.customer_id) {
            Some(n) => *by_node.entry(n.clone()).or_default() += 1,
            None => unowned += 1,
        }
    }
    let mut all_by_node: BTreeMap<&str, usize> = BTreeMap::new();
    for n in owners.values() {
        *all_by_node.entry(n.as_str()).or_default() += 1;
    }
    eprintln!(
        "customers created after n4 joined, by owner: {by_node:?} ({unowned} with no owner key); all owners: {all_by_node:?}"
    );

    // Agents hold nothing at the end (all conversations resolved).
    let mut final_admin = nodes[0].admin();
    let final_agents = final_admin
        .list_agents(pb::ListAgentsRequest {})
        .await
        .map(|r| r.into_inner().agents);

    admin_stop.store(true, Ordering::Relaxed);
    let (admin_polls, admin_errors, admin_over) = admin_task.await.expect("admin poller");
    let mut reports = Vec::new();
    for d in desktops {
        let agent = d.agent.clone();
        reports.push((agent, d.close().await));
    }

    // ---- the verdict (every desktop is closed: the ledger is final)
    let l = std::mem::take(&mut *lock(&ledger));
    let mut problems: Vec<String> = Vec::new();
    problems.extend(failed.iter().cloned());
    problems.extend(l.violations.iter().cloned());
    problems.extend(admin_over.iter().cloned());
    let mut not_offered = Vec::new();
    let mut lost_message = Vec::new();
    let mut bad_history = Vec::new();
    let journal_keys = etcd.keys(&format!("/centralino/{CLUSTER}/journal/"));
    for a in &acked {
        let conv = &a.response.conversation_id;
        if l.convs.get(conv).is_some_and(|c| c.resolved == 1) {
            problems.extend(archive_problems(&nodes[0], &journal_keys, conv));
        }
        let Some(c) = l.convs.get(conv) else {
            not_offered.push(format!(
                "#{} {conv} (via {}, {} attempts {:?})",
                a.contact.index, a.gateway_node, a.attempts, a.refusals
            ));
            continue;
        };
        let accepted: Vec<&OfferRec> = c
            .offers
            .iter()
            .filter(|o| matches!(o.accept, Some(Ok(()))))
            .collect();
        if accepted.len() != 1 {
            problems.push(format!(
                "{conv} (contact #{}) accepted {} times: {:?}",
                a.contact.index,
                accepted.len(),
                c.offers
                    .iter()
                    .map(|o| (&o.offer_id, &o.agent, &o.revoked, &o.accept))
                    .collect::<Vec<_>>()
            ));
        }
        for o in &c.offers {
            let fine = matches!(o.accept, Some(Ok(())))
                || o.revoked.is_some()
                || matches!(o.accept, Some(Err(_)));
            if !fine {
                problems.push(format!(
                    "{conv}: offer {} to {} was neither accepted, refused nor revoked",
                    o.offer_id, o.agent
                ));
            }
        }
        if !c.texts.contains(&a.contact.request.text) {
            lost_message.push(format!(
                "{conv} (contact #{}): the offered history lacks {:?}; it has {:?}",
                a.contact.index, a.contact.request.text, c.texts
            ));
        }
        if let [accepted] = accepted[..] {
            bad_history.extend(history_problems(conv, &a.contact.request.text, c, accepted));
        }
        if c.resolved != 1 || c.wrapped != 1 || c.replied != 1 {
            problems.push(format!(
                "{conv} (contact #{}): replied {} / wrapped up {} / resolved {} times (want 1 each); gave up: {:?}",
                a.contact.index, c.replied, c.wrapped, c.resolved, c.gave_up
            ));
        }
    }
    if !not_offered.is_empty() {
        problems.push(format!(
            "{} acknowledged contacts never offered, e.g. {:?}",
            not_offered.len(),
            &not_offered[..not_offered.len().min(10)]
        ));
    }
    problems.extend(lost_message.into_iter().take(20));
    if !bad_history.is_empty() {
        problems.push(format!(
            "{} conversations with a wrong history:",
            bad_history.len()
        ));
        problems.extend(bad_history.into_iter().take(20));
    }
    let share = by_node.get("n4").copied().unwrap_or(0) as f64 / after_join.len().max(1) as f64;
    // Rendezvous hashing gives the fourth node a quarter of new customers.
    if share < 0.15 {
        problems.push(format!(
            "n4 owns {:.1}% of the {} customers created after it joined (want at least 15%): {by_node:?}",
            share * 100.0,
            after_join.len()
        ));
    }
    match &final_agents {
        Ok(agents) => {
            for a in agents
                .iter()
                .filter(|a| a.load != 0 || !a.conversation_ids.is_empty())
            {
                problems.push(format!("at the end, {} still holds {:?}", a.agent_id, a));
            }
        }
        Err(s) => problems.push(format!("final ListAgents failed: {s:?}")),
    }
    let delivered = lock(&deliveries).clone();
    let replies: u32 = wanted
        .iter()
        .filter_map(|c| l.convs.get(c))
        .map(|c| c.replied)
        .sum();
    let delivered_wanted = wanted.iter().filter(|c| delivered.contains_key(*c)).count();
    let delivered_twice = delivered.values().filter(|n| **n > 1).count();

    eprintln!("---- summary after {:.1?}", t0.elapsed());
    eprintln!(
        "contacts: {} submitted, {} acknowledged ({} needed retries, refusals {:?}), {} failed",
        contacts,
        acked.len(),
        retried.len(),
        retried.iter().flat_map(|a| a.refusals.iter()).fold(
            BTreeMap::<String, usize>::new(),
            |mut m, c| {
                *m.entry(format!("{c:?}")).or_default() += 1;
                m
            }
        ),
        failed.len()
    );
    eprintln!(
        "joined existing conversations on retry: {}",
        acked.iter().filter(|a| a.response.joined_existing).count()
    );
    eprintln!(
        "desktops: {:?}",
        reports
            .iter()
            .map(|(a, r)| format!(
                "{a}: {} offers, {} accepted, max load {}",
                r.offers, r.accepted, r.max_load
            ))
            .collect::<Vec<_>>()
    );
    eprintln!(
        "revocations {:?}; desktops set away by the router {} times {:?}; step errors {:?}; forwarded messages {}",
        l.revoked,
        l.set_away.len(),
        l.set_away
            .iter()
            .fold(BTreeMap::<&str, usize>::new(), |mut m, a| {
                *m.entry(a.as_str()).or_default() += 1;
                m
            }),
        l.step_errors,
        l.forwarded_messages
    );
    let mut odd_offers = Vec::new();
    for (conv, c) in &l.convs {
        for o in c
            .offers
            .iter()
            .filter(|o| o.revoked.is_some() || matches!(o.accept, Some(Err(_))))
        {
            odd_offers.push(format!(
                "{conv} {} to {}: revoked {:?}, accept {:?}",
                o.offer_id, o.agent, o.revoked, o.accept
            ));
        }
    }
    odd_offers.sort();
    eprintln!("offers revoked or refused: {odd_offers:#?}");
    eprintln!(
        "offers as the desktops saw them:\n{}",
        timing_table(&reports)
    );
    eprintln!(
        "admin polls: {admin_polls} ok, {admin_errors} failed; replies {replies}, delivered to gateways for {delivered_wanted} of {} conversations ({delivered_twice} delivered more than once)",
        wanted.len()
    );
    drop(l);

    // ---- shutdown: SIGTERM, every node exits cleanly.
    drop(gateways);
    drop(final_admin);
    drop(admin_clients);
    let mut exits = Vec::new();
    for n in nodes.iter_mut() {
        n.sigterm();
    }
    for n in nodes.iter_mut() {
        let status = n.wait_exit(centralino_tests::cluster::STOP_DEADLINE).await;
        exits.push((n.node_id.clone(), status));
    }
    eprintln!("[{:>6.1?}] exits: {exits:?}", t0.elapsed());
    for (node, status) in &exits {
        match status {
            Some(s) if s.success() => {}
            other => problems.push(format!("{node} after SIGTERM: {other:?}")),
        }
    }

    if !problems.is_empty() {
        let shown = problems.len().min(40);
        panic!(
            "{} problems (first {shown}):\n{}",
            problems.len(),
            problems[..shown].join("\n")
        );
    }
    let _ = std::fs::remove_dir_all(&config_dir);
    drop(etcd);
    eprintln!("[{:>6.1?}] done", t0.elapsed());
}
