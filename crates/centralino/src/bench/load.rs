//! One measured phase: simulated gateways and agent desktops driving the
//! nodes through the public gRPC API only.
//!
//! - Agents: `agents` desktops of the kinds of `--agent-mix` (capacity and
//!   skills; by default all identical: capacity 100, no skills), in exact
//!   counts by the mix's shares, spread round-robin over the targets, each
//!   on one `AgentDesktop.Session` stream. An agent accepts every offer at
//!   once and, after an exponential handle time drawn from its own seeded
//!   generator, timed from the moment the offer reached it, resolves the
//!   conversation; with `--wrap-up-ms` it first wraps it up and resolves
//!   it after an exponential wrap-up time (whether its capacity stays held
//!   meanwhile is the nodes' after-contact work setting). No rejects.
//! - Customers: with `--patience-ms`, each waits for an exponential
//!   patience from its acknowledgement; one not offered by then leaves
//!   (`Gateway.Abandon`). No abandonment otherwise.
//! - Gateways: an open-loop Poisson generator. It never waits for a reply:
//!   every `SubmitContact` is its own task, spread round-robin over the
//!   targets' connections. Only if `max_in_flight` calls are already
//!   outstanding does it skip a contact (and count it), so that a stalled
//!   system cannot exhaust the bench's memory.
//! - Timeline: agents log in; the generator runs for `warmup + duration`;
//!   the window `[warmup, warmup + duration)` is what the report measures,
//!   with etcd's counters read at both of its ends; in a throughput phase
//!   with etcd, what the cluster's keys take there is read as the window
//!   closes, while its conversations are open. Then the bench waits (at
//!   most `drain` seconds) for the phase's contacts to be offered and
//!   accepted, lets agents finish what they hold, and logs them out.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use centralino_core::Channel;
use centralino_proto::v1 as pb;
use pb::agent_desktop_client::AgentDesktopClient;
use pb::agent_event::Event;
use pb::gateway_client::GatewayClient;
use rand::SeedableRng;
use rand::rngs::StdRng;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel as Conn;

use super::ceiling::EtcdCounters;
use super::crossings::Crossings;
use super::keys::{ClusterKeys, Footprint};
use super::report::{self, Phase};
use super::system::{System, Target};
use super::tracker::{Clock, Contact, Tracker};
use super::workload::{self, AgentKind, Class, Mix};

/// Largest message the bench accepts (an offer carries the whole history).
const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
/// How long every agent together may take to log in.
const LOGIN_DEADLINE: Duration = Duration::from_secs(60);
/// A `SubmitContact` that takes longer than this counts as failed.
const SUBMIT_TIMEOUT: Duration = Duration::from_secs(30);
/// Commands buffered per desktop.
const DESKTOP_BUFFER: usize = 1024;

/// What one phase runs.
#[derive(Clone, Debug)]
pub struct PhaseSpec {
    pub index: usize,
    pub scenario: &'static str,
    pub what: String,
    pub rate: f64,
    pub agents: usize,
    pub handle_ms: f64,
    pub warmup: f64,
    pub duration: f64,
    pub drain: f64,
    pub seed: u64,
    pub max_in_flight: usize,
    /// gRPC connections per target, for gateways and desktops alike.
    pub connections: usize,
    /// The topics of the contacts (`--topic`), by share.
    pub topics: Arc<Mix<String>>,
    /// The kinds of agents (`--agent-mix`), by share.
    pub agent_kinds: Arc<Mix<AgentKind>>,
    /// Mean wrap-up time, ms, between an agent's wrap-up and its resolve
    /// (none: it resolves at once).
    pub wrap_up_ms: Option<f64>,
    /// Mean patience, ms, of a customer not offered yet (none: nobody
    /// abandons).
    pub patience_ms: Option<f64>,
}

/// What every phase shares.
pub struct Env {
    pub clock: Clock,
    pub tracker: Arc<Tracker>,
    pub classes: Arc<Mix<Class>>,
    pub channels: Arc<Mix<Channel>>,
    /// Makes identities and agent ids unique to this run.
    pub tag: String,
    pub targets: Vec<Target>,
    pub etcd: Option<String>,
    /// The cluster's key prefix in etcd, when there is an etcd.
    pub prefix: Option<String>,
    /// Processes whose CPU time is measured over each window.
    pub processes: Vec<(String, u32)>,
    /// The metrics endpoints of the nodes the bench started, whose
    /// envelope counters are read over each window (none with --target).
    pub node_metrics: Vec<SocketAddr>,
}

impl Env {
    /// The phases' surroundings on `system`'s nodes, times on `clock`.
    pub fn on(
        system: &System,
        clock: Clock,
        (classes, channels): (Arc<Mix<Class>>, Arc<Mix<Channel>>),
        tag: String,
    ) -> Env {
        Env {
            clock,
            tracker: Arc::new(Tracker::new()),
            classes,
            channels,
            tag,
            targets: system.targets.clone(),
            etcd: system.etcd.clone(),
            prefix: system.prefix.clone(),
            processes: system.processes(),
            node_metrics: system.node_metrics(),
        }
    }
}

/// What a phase measured besides the contacts themselves.
pub struct PhaseRun {
    pub spec: PhaseSpec,
    pub window: (f64, f64),
    /// Agent ids, indexed from `agent_base` in the tracker.
    pub agent_ids: Vec<String>,
    pub skipped: u64,
    pub max_lag_ms: f64,
    pub mean_in_flight: f64,
    pub etcd: Option<(EtcdCounters, EtcdCounters)>,
    /// Envelopes between the nodes before and after the window.
    pub crossings: Option<(Crossings, Crossings)>,
    /// The cluster's keys in etcd as the window closed (throughput only).
    pub footprint: Option<Footprint>,
    /// Process name → CPU seconds used over the window.
    pub cpu: Vec<(String, f64)>,
    pub counters: Arc<Counters>,
    pub load_avg: Option<f64>,
}

/// Things that went wrong on the desktops.
#[derive(Default, Debug)]
pub struct Counters {
    pub accept_errors: AtomicU64,
    pub wrap_up_errors: AtomicU64,
    pub resolve_errors: AtomicU64,
    pub revoked: AtomicU64,
    pub sessions_lost: AtomicU64,
    /// Handle times drawn, and their sum in µs: the realised mean.
    pub handles: AtomicU64,
    pub handle_us: AtomicU64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Control {
    Run,
    /// Take no new work from the stopped generator: leave once nothing is held.
    Finish,
    Stop,
}

/// Runs one phase; `agent_base` is the tracker index of its first agent.
pub async fn run(spec: PhaseSpec, env: &Env, agent_base: u32) -> anyhow::Result<PhaseRun> {
    let pool = connect(&env.targets, spec.connections).await?;
    let counters = Arc::new(Counters::default());
    let (control_tx, control_rx) = watch::channel(Control::Run);

    // Agents log in, spread over the targets.
    let mut agent_ids = Vec::with_capacity(spec.agents);
    let mut agents = Vec::with_capacity(spec.agents);
    let mut logins = Vec::with_capacity(spec.agents);
    let kinds = workload::counts(&spec.agent_kinds, spec.agents)
        .into_iter()
        .enumerate()
        .flat_map(|(k, n)| std::iter::repeat_n(k, n));
    for (i, kind) in kinds.enumerate() {
        let (node, conn) = pool[i % pool.len()].clone();
        let id = format!("bench-{}-{}-{i}", env.tag, spec.index);
        let ctx = AgentCtx {
            index: agent_base + i as u32,
            node,
            id: id.clone(),
            kind: spec.agent_kinds.shares[kind].item.clone(),
            handle_mean_s: spec.handle_ms / 1_000.0,
            wrap_up_mean_s: spec.wrap_up_ms.map(|ms| ms / 1_000.0),
            seed: spec.seed ^ (0xA6E0_0000_0000_0000 | (spec.index as u64) << 32 | i as u64),
            tracker: env.tracker.clone(),
            clock: env.clock,
            counters: counters.clone(),
        };
        let (ready_tx, ready_rx) = oneshot::channel();
        agents.push(tokio::spawn(agent(conn, ctx, ready_tx, control_rx.clone())));
        logins.push(ready_rx);
        agent_ids.push(id);
    }
    all_logged_in(logins, LOGIN_DEADLINE).await?;

    // The generator, the in-flight sampler and etcd's counters.
    let t0 = Instant::now();
    let window_start = t0 + Duration::from_secs_f64(spec.warmup);
    let window_end = window_start + Duration::from_secs_f64(spec.duration);
    let in_flight = Arc::new(AtomicUsize::new(0));
    let probe = {
        let (url, processes) = (env.etcd.clone(), env.processes.clone());
        let nodes = env.node_metrics.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(window_start.into()).await;
            let cpu_before: Vec<Option<f64>> =
                processes.iter().map(|(_, pid)| cpu_seconds(*pid)).collect();
            let before = match &url {
                Some(u) => Some(EtcdCounters::read(u).await?),
                None => None,
            };
            let crossings_before = Crossings::read(&nodes).await;
            tokio::time::sleep_until(window_end.into()).await;
            let cpu_after: Vec<Option<f64>> =
                processes.iter().map(|(_, pid)| cpu_seconds(*pid)).collect();
            let etcd = match (&url, before) {
                (Some(u), Some(b)) => Some((b, EtcdCounters::read(u).await?)),
                _ => None,
            };
            // A standalone node has no peers, and no such counter.
            let crossings = match crossings_before {
                Some(b) => Crossings::read(&nodes)
                    .await
                    .filter(|a| !a.by_kind.is_empty())
                    .map(|a| (b, a)),
                None => None,
            };
            let cpu = processes
                .iter()
                .zip(cpu_before.iter().zip(&cpu_after))
                .filter_map(|((name, _), (b, a))| Some((name.clone(), (*a)? - (*b)?)))
                .collect::<Vec<_>>();
            anyhow::Ok((etcd, crossings, cpu))
        })
    };
    let sampler = {
        let in_flight = in_flight.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(window_start.into()).await;
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let (mut sum, mut n) = (0.0, 0u64);
            while Instant::now() < window_end {
                tick.tick().await;
                sum += in_flight.load(Ordering::Relaxed) as f64;
                n += 1;
            }
            if n == 0 { 0.0 } else { sum / n as f64 }
        })
    };
    let gateways: Vec<GatewayClient<Conn>> = pool
        .iter()
        .map(|(_, c)| {
            GatewayClient::new(c.clone())
                .max_decoding_message_size(MAX_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_MESSAGE_BYTES)
        })
        .collect();
    let (skipped, max_lag) = generate(&spec, env, &gateways, t0, window_end, &in_flight).await;
    let mean_in_flight = sampler.await.unwrap_or(0.0);
    let (etcd, crossings, cpu) = probe
        .await
        .context("reading etcd's metrics")?
        .context("reading etcd's metrics")?;
    let load_avg = load_avg();
    // What etcd holds while the conversations of the window are open (the
    // agents resolve them during the drain below).
    let footprint = match (&env.etcd, &env.prefix) {
        (Some(url), Some(prefix)) if spec.scenario == "throughput" => Some(
            ClusterKeys::connect(url, prefix)
                .await?
                .footprint()
                .await
                .context("reading the cluster's keys in etcd")?,
        ),
        _ => None,
    };

    // Drain: the phase's contacts get offered and accepted, agents finish.
    let drain_until = Instant::now() + Duration::from_secs_f64(spec.drain);
    while Instant::now() < drain_until {
        if in_flight.load(Ordering::Relaxed) == 0 && env.tracker.outstanding(spec.index) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = control_tx.send(Control::Finish);
    let finish_within = Duration::from_secs_f64((spec.handle_ms / 1_000.0 * 20.0).clamp(3.0, 30.0));
    let finish_until = tokio::time::Instant::now() + finish_within;
    for a in &mut agents {
        if tokio::time::timeout_at(finish_until, &mut *a)
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = control_tx.send(Control::Stop);
    // Those awaited above are finished (and must not be polled again).
    for a in agents.into_iter().filter(|a| !a.is_finished()) {
        let _ = tokio::time::timeout(Duration::from_secs(5), a).await;
    }
    let window = (env.clock.at(window_start), env.clock.at(window_end));
    Ok(PhaseRun {
        spec,
        window,
        agent_ids,
        skipped,
        max_lag_ms: max_lag * 1_000.0,
        mean_in_flight,
        etcd,
        crossings,
        footprint,
        cpu,
        counters,
        load_avg,
    })
}

/// `per_target` connections to every target, interleaved so that entry
/// `k` goes to target `k % targets`.
async fn connect(targets: &[Target], per_target: usize) -> anyhow::Result<Vec<(u16, Conn)>> {
    let mut pool = Vec::new();
    for _ in 0..per_target.max(1) {
        for (i, t) in targets.iter().enumerate() {
            pool.push((i as u16, t.connect().await?));
        }
    }
    Ok(pool)
}

/// The open-loop Poisson generator, from `t0` until `end`. Returns the
/// contacts skipped for `max_in_flight` and the worst lag (s) behind the
/// schedule.
async fn generate(
    spec: &PhaseSpec,
    env: &Env,
    gateways: &[GatewayClient<Conn>],
    t0: Instant,
    end: Instant,
    in_flight: &Arc<AtomicUsize>,
) -> (u64, f64) {
    let mut rng = StdRng::seed_from_u64(spec.seed.wrapping_add(spec.index as u64));
    let mean_gap = 1.0 / spec.rate;
    let mut next = t0;
    let (mut skipped, mut max_lag, mut n) = (0u64, 0.0f64, 0usize);
    loop {
        next += Duration::from_secs_f64(workload::exponential(&mut rng, mean_gap));
        if next >= end {
            break;
        }
        let class = env.classes.pick(&mut rng);
        let channel = env.channels.pick(&mut rng);
        // Drawn only when asked for, so that the other draws of a seed stay
        // the same.
        let topic = match spec.topics.shares.len() {
            1 => 0,
            _ => spec.topics.pick(&mut rng),
        };
        let patience = spec
            .patience_ms
            .map(|ms| Duration::from_secs_f64(workload::exponential(&mut rng, ms / 1_000.0)));
        if next > Instant::now() {
            tokio::time::sleep_until(next.into()).await;
        }
        max_lag = max_lag.max(Instant::now().saturating_duration_since(next).as_secs_f64());
        n += 1;
        if in_flight.load(Ordering::Relaxed) >= spec.max_in_flight {
            skipped += 1;
            continue;
        }
        let id = env
            .tracker
            .arrive(spec.index, class, channel, env.clock.now());
        let c = &env.classes.shares[class].item;
        let ch = env.channels.shares[channel].item;
        let req = pb::SubmitContactRequest {
            channel: workload::channel_to_pb(ch) as i32,
            identity: Some(workload::identity(ch, &env.tag, id as u64)),
            topic: spec.topics.shares[topic].item.clone(),
            text: format!("bench contact {id}"),
            sentiment: c.sentiment,
            attributes: Some(pb::CustomerAttributes {
                tier: c.tier.clone(),
                ..Default::default()
            }),
            link_identities: vec![],
        };
        let mut client = gateways[n % gateways.len()].clone();
        let (tracker, clock, in_flight) = (env.tracker.clone(), env.clock, in_flight.clone());
        in_flight.fetch_add(1, Ordering::Relaxed);
        tokio::spawn(async move {
            let mut req = tonic::Request::new(req);
            req.set_timeout(SUBMIT_TIMEOUT);
            let abandon = pb::AbandonRequest {
                identity: req.get_ref().identity.clone(),
                channel: req.get_ref().channel,
            };
            let acked = match client.submit_contact(req).await {
                Ok(r) => {
                    tracker.acked(id, r.into_inner().conversation_id, clock.now());
                    true
                }
                Err(s) => {
                    tracker.failed(id, status_text(&s));
                    false
                }
            };
            in_flight.fetch_sub(1, Ordering::Relaxed);
            // A customer not offered within its patience leaves. An offer
            // still on its way to the desktop is withdrawn by the abandon,
            // and the agent's accept of it then fails (an accept error).
            if let Some(patience) = patience.filter(|_| acked) {
                tokio::time::sleep(patience).await;
                if !tracker.is_offered(id) && client.abandon(abandon).await.is_ok() {
                    tracker.abandoned(id, clock.now());
                }
            }
        });
    }
    (skipped, max_lag)
}

struct AgentCtx {
    index: u32,
    node: u16,
    id: String,
    kind: AgentKind,
    handle_mean_s: f64,
    wrap_up_mean_s: Option<f64>,
    seed: u64,
    tracker: Arc<Tracker>,
    clock: Clock,
    counters: Arc<Counters>,
}

enum Pending {
    Accept(String),
    WrapUp(String),
    Resolve,
}

/// What an agent's timers say is due for a conversation.
enum Due {
    /// The handle time is over: wrap up (with `--wrap-up-ms`) or resolve.
    Handled(String),
    /// The wrap-up time is over: resolve.
    WrappedUp(String),
}

/// An open desktop session: commands out, events in.
pub type Session = (
    mpsc::Sender<pb::AgentCommand>,
    tonic::Streaming<pb::AgentEvent>,
);

/// Opens an `AgentDesktop.Session` on `conn` and logs agent `id` in as
/// `kind` (capacity and skills) in `state`; returns once the login
/// succeeded.
async fn log_in(
    conn: Conn,
    id: &str,
    kind: &AgentKind,
    state: pb::AgentState,
) -> anyhow::Result<Session> {
    use pb::agent_command::Command as C;
    let (tx, rx) = mpsc::channel::<pb::AgentCommand>(DESKTOP_BUFFER);
    let login = pb::agent_command::Login {
        agent_id: id.to_owned(),
        name: id.to_owned(),
        skills: kind.skills_pb(),
        languages: vec![],
        capacity: kind.capacity,
        initial_state: state as i32,
    };
    let _ = tx
        .send(pb::AgentCommand {
            request_id: 1,
            command: Some(C::Login(login)),
        })
        .await;
    let mut client = AgentDesktopClient::new(conn)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let mut events = client
        .session(ReceiverStream::new(rx))
        .await
        .map_err(|s| anyhow::anyhow!("{id}: login refused: {s}"))?
        .into_inner();
    match events.message().await {
        Ok(Some(pb::AgentEvent {
            event: Some(Event::Result(r)),
        })) if r.request_id == 1 && r.code == 0 => Ok((tx, events)),
        other => bail!("{id}: no successful login result, got {other:?}"),
    }
}

/// A desktop task's word that its login succeeded (or why it did not).
pub type LoggedIn = oneshot::Receiver<anyhow::Result<()>>;

/// Logs a desktop in like [`log_in`] and tells `ready` how it went; the
/// session if it succeeded.
pub async fn log_in_telling(
    conn: Conn,
    id: &str,
    kind: &AgentKind,
    state: pb::AgentState,
    ready: oneshot::Sender<anyhow::Result<()>>,
) -> Option<Session> {
    match log_in(conn, id, kind, state).await {
        Ok(session) => {
            let _ = ready.send(Ok(()));
            Some(session)
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            None
        }
    }
}

/// Waits until every desktop of `logins` has logged in, at most
/// `deadline`; fails with the first that could not.
pub async fn all_logged_in(logins: Vec<LoggedIn>, deadline: Duration) -> anyhow::Result<()> {
    let n = logins.len();
    let all = tokio::time::timeout(deadline, async {
        for (i, l) in logins.into_iter().enumerate() {
            match l.await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e.context(format!("desktop {i} could not log in"))),
                Err(_) => bail!("desktop {i} stopped before logging in"),
            }
        }
        Ok(())
    })
    .await;
    all.unwrap_or_else(|_| bail!("{n} desktops did not all log in within {deadline:?}"))
}

/// One simulated agent desktop: see the module docs.
async fn agent(
    conn: Conn,
    ctx: AgentCtx,
    ready: oneshot::Sender<anyhow::Result<()>>,
    mut control: watch::Receiver<Control>,
) {
    use pb::agent_command::Command as C;
    let Some((tx, mut events)) =
        log_in_telling(conn, &ctx.id, &ctx.kind, pb::AgentState::Available, ready).await
    else {
        return;
    };

    let mut rng = StdRng::seed_from_u64(ctx.seed);
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<Due>();
    let mut pending: HashMap<u64, Pending> = HashMap::new();
    let mut refused: HashSet<String> = HashSet::new();
    let mut request = 1u64;
    // Offers received and not yet resolved (or refused).
    let mut held = 0usize;
    let mut finishing = false;
    loop {
        if finishing && held == 0 {
            break;
        }
        tokio::select! {
            changed = control.changed() => {
                let c = *control.borrow();
                if changed.is_err() || c == Control::Stop {
                    break;
                }
                finishing = c == Control::Finish;
            }
            Some(due) = done_rx.recv() => {
                let (conversation, wrap_up) = match due {
                    Due::Handled(c) => (c, ctx.wrap_up_mean_s.is_some()),
                    Due::WrappedUp(c) => (c, false),
                };
                if refused.remove(&conversation) {
                    continue;
                }
                request += 1;
                let cmd = if wrap_up {
                    pending.insert(request, Pending::WrapUp(conversation.clone()));
                    C::WrapUp(pb::agent_command::WrapUp {
                        conversation_id: conversation,
                        disposition: "bench".into(),
                    })
                } else {
                    pending.insert(request, Pending::Resolve);
                    C::Resolve(pb::agent_command::Resolve { conversation_id: conversation })
                };
                if tx.send(pb::AgentCommand { request_id: request, command: Some(cmd) }).await.is_err() {
                    break;
                }
            }
            event = events.message() => {
                let event = match event {
                    Ok(Some(e)) => e,
                    Ok(None) | Err(_) => {
                        if *control.borrow() == Control::Run {
                            ctx.counters.sessions_lost.fetch_add(1, Ordering::Relaxed);
                        }
                        break;
                    }
                };
                match event.event {
                    Some(Event::Offer(offer)) => {
                        let now = ctx.clock.now();
                        ctx.tracker.offered(&offer.conversation_id, now, ctx.index, ctx.node);
                        held += 1;
                        request += 1;
                        pending.insert(request, Pending::Accept(offer.conversation_id.clone()));
                        let handle = Duration::from_secs_f64(workload::exponential(&mut rng, ctx.handle_mean_s));
                        ctx.counters.handles.fetch_add(1, Ordering::Relaxed);
                        ctx.counters.handle_us.fetch_add(u64::try_from(handle.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
                        let (done, conversation) = (done_tx.clone(), offer.conversation_id);
                        tokio::spawn(async move {
                            tokio::time::sleep(handle).await;
                            let _ = done.send(Due::Handled(conversation));
                        });
                        let cmd = C::Accept(pb::agent_command::Accept { offer_id: offer.offer_id });
                        if tx.send(pb::AgentCommand { request_id: request, command: Some(cmd) }).await.is_err() {
                            break;
                        }
                    }
                    Some(Event::Result(r)) => match pending.remove(&r.request_id) {
                        Some(Pending::Accept(conversation)) if r.code == 0 => ctx.tracker.accepted(&conversation, ctx.clock.now()),
                        Some(Pending::Accept(conversation)) => {
                            ctx.counters.accept_errors.fetch_add(1, Ordering::Relaxed);
                            refused.insert(conversation);
                            held = held.saturating_sub(1);
                        }
                        Some(Pending::WrapUp(conversation)) if r.code == 0 => {
                            let mean = ctx.wrap_up_mean_s.unwrap_or(0.0);
                            let wrap_up = Duration::from_secs_f64(workload::exponential(&mut rng, mean));
                            let done = done_tx.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(wrap_up).await;
                                let _ = done.send(Due::WrappedUp(conversation));
                            });
                        }
                        Some(Pending::WrapUp(_)) => {
                            ctx.counters.wrap_up_errors.fetch_add(1, Ordering::Relaxed);
                            held = held.saturating_sub(1);
                        }
                        Some(Pending::Resolve) => {
                            if r.code != 0 {
                                ctx.counters.resolve_errors.fetch_add(1, Ordering::Relaxed);
                            }
                            held = held.saturating_sub(1);
                        }
                        None => {}
                    },
                    Some(Event::OfferRevoked(_)) => {
                        ctx.counters.revoked.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(_) | None => {}
                }
            }
        }
    }
    // Dropping the command stream logs the agent out.
}

/// A status with its source chain (a transport error says little alone).
fn status_text(s: &tonic::Status) -> String {
    let mut text = format!("{:?}: {}", s.code(), s.message());
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        text.push_str(&format!(": {e}"));
        source = e.source();
    }
    text
}

/// CPU seconds (user + system) process `pid` has used, from
/// `/proc/<pid>/stat` (clock ticks of 1/100 s, Linux's USER_HZ).
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the command name, which is in parentheses and may hold spaces.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let (utime, stime): (f64, f64) = (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
    Some((utime + stime) / 100.0)
}

/// The 1-minute load average, from /proc/loadavg.
pub fn load_avg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl PhaseRun {
    /// Whether `c` is one of this phase's contacts that arrived in its
    /// measured window.
    pub fn arrived_in_window(&self, c: &Contact) -> bool {
        c.phase == self.spec.index && c.arrival >= self.window.0 && c.arrival < self.window.1
    }

    /// The phase's numbers, from the contacts it sent.
    pub fn summarise(&self, contacts: &[Contact]) -> Phase {
        let (ws, we) = self.window;
        let s = &self.spec;
        let window: Vec<&Contact> = contacts
            .iter()
            .filter(|c| self.arrived_in_window(c))
            .collect();
        let count = |f: &dyn Fn(&Contact) -> bool| window.iter().filter(|c| f(c)).count() as u64;
        let routed = count(&|c| c.accept.is_some_and(|a| a <= we));
        let accepted_in_window = contacts
            .iter()
            .filter(|c| c.phase == s.index && c.accept.is_some_and(|a| a >= ws && a <= we))
            .count() as u64;
        let acked_in_window = contacts
            .iter()
            .filter(|c| c.phase == s.index && c.ack.is_some_and(|a| a >= ws && a <= we))
            .count() as u64;
        let etcd = self
            .etcd
            .as_ref()
            .map(|(before, after)| before.usage(after, accepted_in_window, acked_in_window));
        let submitted = window.len() as u64;
        let abandoned = count(&|c| c.abandoned.is_some());
        let never_offered =
            count(&|c| c.offer.is_none() && c.error.is_none() && c.abandoned.is_none());
        // Customers who left are not the system's to route.
        let saturated = (routed as f64) < 0.95 * submitted.saturating_sub(abandoned) as f64
            || self.skipped > 0
            || never_offered > 0;
        let window_s = (we - ws).max(f64::EPSILON);
        Phase {
            scenario: s.scenario.to_owned(),
            what: s.what.clone(),
            rate_per_s: s.rate,
            agents: s.agents,
            handle_ms: s.handle_ms,
            warmup_s: s.warmup,
            duration_s: s.duration,
            window_start_s: ws,
            window_end_s: we,
            submitted: window.len() as u64,
            submitted_per_s: window.len() as f64 / s.duration,
            acked: count(&|c| c.ack.is_some()),
            failed: count(&|c| c.error.is_some()),
            offered: count(&|c| c.offer.is_some()),
            accepted: count(&|c| c.accept.is_some()),
            routed,
            routed_per_s: routed as f64 / s.duration,
            accepted_in_window_per_s: accepted_in_window as f64 / s.duration,
            acked_in_window,
            never_offered,
            abandoned,
            saturated,
            ingest_to_offer: report::latency(
                window.iter().filter_map(|c| Some(c.offer? - c.arrival)),
            ),
            ingest_to_ack: report::latency(window.iter().filter_map(|c| Some(c.ack? - c.arrival))),
            offer_to_accept: report::latency(
                window.iter().filter_map(|c| Some(c.accept? - c.offer?)),
            ),
            skipped_by_generator: self.skipped,
            generator_max_lag_ms: self.max_lag_ms,
            mean_in_flight: self.mean_in_flight,
            accept_errors: self.counters.accept_errors.load(Ordering::Relaxed),
            wrap_up_errors: self.counters.wrap_up_errors.load(Ordering::Relaxed),
            resolve_errors: self.counters.resolve_errors.load(Ordering::Relaxed),
            offers_revoked: self.counters.revoked.load(Ordering::Relaxed),
            sessions_lost: self.counters.sessions_lost.load(Ordering::Relaxed),
            etcd,
            etcd_footprint: self.footprint.clone(),
            node_envelopes: self
                .crossings
                .as_ref()
                .map(|(before, after)| before.usage(after, accepted_in_window)),
            cpu_cores: self
                .cpu
                .iter()
                .map(|(n, secs)| (n.clone(), secs / window_s))
                .collect(),
            load_avg_1m: self.load_avg,
        }
    }

    /// The first error message of the phase's failed contacts, and how many
    /// failed with it.
    pub fn first_error(&self, contacts: &[Contact]) -> Option<(String, usize)> {
        let errors: Vec<&String> = contacts
            .iter()
            .filter(|c| c.phase == self.spec.index)
            .filter_map(|c| c.error.as_ref())
            .collect();
        let first = errors.first()?;
        Some((
            (*first).clone(),
            errors.iter().filter(|e| **e == *first).count(),
        ))
    }
}
