//! The `dev` simulation: gateways and agent desktops that drive the node
//! through its public gRPC API, exactly as real ones would.
//!
//! Customers arrive as a Poisson process on every channel; some come back
//! on another channel from a linked identity (and join their open
//! conversation), some are upset (negative sentiment), some ask for a
//! callback, some hang up if they wait too long (an abandon); some chat
//! customers talk to a bot first, which hands them over with its
//! transcript. Routing rules send business customers' billing questions
//! to the billing queue ahead of others and serve premium contracts
//! earlier; agents busier than 90% of the last minute rest. Agents with
//! mixed skills accept offers after a short delay (and now and then reject
//! one), reply, then wrap up, resolve or transfer. An incident campaign
//! reaches the consumers after a while, and some of them reply (see
//! [`outreach`]). Every few seconds the live KPIs are printed (service
//! level, ASA, abandons, transfers, first-contact resolution, occupancy,
//! resting agents), with the campaign's counts.

mod outreach;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use centralino_proto::v1 as pb;
use pb::admin_client::AdminClient;
use pb::agent_desktop_client::AgentDesktopClient;
use pb::gateway_client::GatewayClient;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tonic::transport::Channel as Conn;

use centralino_core::Skill;

use crate::config::{BullseyeSection, Config, QueueSection, RuleSection, StrategyName};

#[derive(Clone, Debug)]
pub struct Options {
    pub rate: f64,
    pub agents: usize,
    pub handle_ms: u64,
    pub seed: u64,
    pub report_every: Duration,
}

pub struct Simulation {
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Simulation {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for t in self.tasks {
            let _ = tokio::time::timeout(Duration::from_secs(3), t).await;
        }
    }
}

const TOPICS: [(&str, &str); 6] = [
    ("billing", "billing"),
    ("invoice", "billing"),
    ("fiber", "tech"),
    ("outage", "tech"),
    ("upgrade", "sales"),
    ("complaint", "care"),
];
const SKILLS: [&str; 4] = ["billing", "tech", "sales", "care"];

/// Queues and timers that make the simulation interesting.
pub fn dev_defaults(cfg: &mut Config) {
    let q = |id: &str, topics: &[&str], skill: Option<(&str, u8)>, strategy, boost| QueueSection {
        id: id.into(),
        name: String::new(),
        topics: topics.iter().map(|t| t.to_string()).collect(),
        required_skills: skill
            .map(|(s, p)| BTreeMap::from([(s.to_owned(), p)]))
            .unwrap_or_default(),
        strategy,
        sla_ms: BTreeMap::new(),
        bullseye: vec![BullseyeSection {
            after_ms: 10_000,
            relax_proficiency: 2,
            drop_skills: vec![],
        }],
        priority_boost_ms: boost,
    };
    // Campaign follow-ups: open to every agent, with long SLA targets, so
    // that they are blended in behind inbound customers.
    let mut outbound = q("outbound", &[], None, StrategyName::LongestIdle, 0);
    outbound.sla_ms = ["voice", "chat", "email", "sms", "whatsapp", "social", "app"]
        .iter()
        .map(|c| (c.to_string(), 3_600_000))
        .collect();
    cfg.queues = vec![
        q("general", &[], None, StrategyName::LongestIdle, 0),
        q(
            "billing",
            &["billing", "invoice"],
            Some(("billing", 2)),
            StrategyName::LongestIdle,
            0,
        ),
        q(
            "tech",
            &["fiber", "outage"],
            Some(("tech", 3)),
            StrategyName::MostProficient,
            0,
        ),
        q(
            "sales",
            &["upgrade"],
            Some(("sales", 2)),
            StrategyName::LeastOccupied,
            0,
        ),
        q(
            "care",
            &["complaint"],
            Some(("care", 3)),
            StrategyName::RoundRobin,
            20_000,
        ),
        outbound,
    ];
    cfg.routing.offer_timeout_ms = 5_000;
    cfg.routing.decline_ttl_ms = 5_000;
    cfg.routing.acw_ms.insert("voice".into(), 500);
    cfg.routing.acw_ms.insert("chat".into(), 200);
    // A short window, so that a dev run shows agents resting.
    cfg.routing.occupancy_cap = Some(0.9);
    cfg.routing.occupancy_window_ms = 60_000;
    let rule = |name: &str| RuleSection {
        name: name.into(),
        topics: vec![],
        channels: vec![],
        tiers: vec![],
        segments: vec![],
        languages: vec![],
        contracts: vec![],
        queue: None,
        priority_boost_ms: 0,
    };
    cfg.rules = vec![
        RuleSection {
            segments: vec!["business".into()],
            topics: vec!["billing".into(), "invoice".into(), "upgrade".into()],
            queue: Some("billing".into()),
            priority_boost_ms: 15_000,
            ..rule("business-billing")
        },
        RuleSection {
            contracts: vec!["premium".into()],
            priority_boost_ms: 30_000,
            ..rule("premium-contract")
        },
    ];
}

/// Share of contacts whose customer hangs up if not answered within an
/// exponentially distributed patience of mean [`PATIENCE_MS`].
const IMPATIENT: f64 = 0.15;
const PATIENCE_MS: f64 = 8_000.0;

/// One simulated agent: who logs in, and the random stream that then
/// decides its accepts, rejects and handle times.
pub struct DevAgent {
    pub id: String,
    pub skills: Vec<Skill>,
    rng: StdRng,
}

/// The agents `centralino dev --agents n --seed seed` logs in, and the seed
/// of its customers. A function of its arguments alone, so that a replay of
/// a dev recording can staff the very same pool (`centralino replay
/// --dev-agents`).
pub fn dev_agents(n: usize, seed: u64) -> (Vec<DevAgent>, u64) {
    let mut rng = StdRng::seed_from_u64(seed);
    let agents = (0..n)
        .map(|i| {
            let mut own = StdRng::seed_from_u64(rng.random());
            let mut skills = Vec::new();
            for s in SKILLS {
                if own.random_bool(0.6) {
                    skills.push(Skill::new(s, own.random_range(1..=5)));
                }
            }
            DevAgent {
                id: format!("agent-{i:02}"),
                skills,
                rng: own,
            }
        })
        .collect();
    (agents, rng.random())
}

pub async fn start(addr: SocketAddr, o: Options) -> anyhow::Result<Simulation> {
    let conn = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let (agents, customers_seed) = dev_agents(o.agents, o.seed);
    for (i, a) in agents.into_iter().enumerate() {
        tasks.push(tokio::spawn(agent(
            conn.clone(),
            i,
            a,
            o.handle_ms,
            stop_rx.clone(),
        )));
    }
    let counters = Arc::new(outreach::Counters::default());
    tasks.push(tokio::spawn(deliveries(
        conn.clone(),
        customers_seed ^ 1,
        stop_rx.clone(),
    )));
    tasks.push(tokio::spawn(customers(
        conn.clone(),
        o.rate,
        customers_seed,
        counters.clone(),
        stop_rx.clone(),
    )));
    tasks.push(tokio::spawn(outreach::campaign(
        conn.clone(),
        stop_rx.clone(),
    )));
    tasks.push(tokio::spawn(report(
        conn,
        o.report_every,
        counters,
        stop_rx,
    )));
    println!(
        "simulation: {} agents, {:.1} contacts/s, mean handle {} ms; Ctrl-C to stop",
        o.agents, o.rate, o.handle_ms
    );
    Ok(Simulation { stop, tasks })
}

fn exp_ms(rng: &mut StdRng, mean: f64) -> Duration {
    let u: f64 = rng.random();
    Duration::from_millis((-(1.0 - u).ln() * mean) as u64)
}

fn identity(kind: pb::IdentityKind, address: String) -> pb::Identity {
    pb::Identity {
        kind: kind as i32,
        address,
    }
}

/// A person: their known identities by channel.
struct Person {
    phone: pb::Identity,
    email: pb::Identity,
    chat: pb::Identity,
    /// Tier, segment and contact preferences.
    attributes: pb::CustomerAttributes,
}

async fn customers(
    conn: Conn,
    rate: f64,
    seed: u64,
    counters: Arc<outreach::Counters>,
    mut stop: watch::Receiver<bool>,
) {
    let mut gw = GatewayClient::new(conn);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut people: Vec<Person> = Vec::new();
    let mut next = 0u64;
    loop {
        let wait = exp_ms(&mut rng, 1_000.0 / rate.max(0.01));
        tokio::select! {
            _ = stop.changed() => return,
            () = tokio::time::sleep(wait) => {}
        }
        let returning = !people.is_empty() && rng.random_bool(0.35);
        let who = if returning {
            rng.random_range(0..people.len())
        } else {
            next += 1;
            let tier = match rng.random_range(0..10) {
                0 => "gold",
                1 | 2 => "silver",
                _ => "standard",
            };
            people.push(Person {
                phone: identity(pb::IdentityKind::Phone, format!("+39340{next:07}")),
                email: identity(
                    pb::IdentityKind::Email,
                    format!("customer{next}@example.it"),
                ),
                chat: identity(pb::IdentityKind::ChatSession, format!("web-{next}")),
                attributes: outreach::profile(&mut rng, tier),
            });
            if people.len() > 5_000 {
                people.remove(0);
            }
            people.len() - 1
        };
        let p = &people[who];
        let (channel, id, link) = match rng.random_range(0..10) {
            0..=3 => (pb::Channel::Chat, p.chat.clone(), p.phone.clone()),
            4..=6 => (pb::Channel::Voice, p.phone.clone(), p.chat.clone()),
            7 | 8 => (pb::Channel::Email, p.email.clone(), p.phone.clone()),
            _ => (pb::Channel::Whatsapp, p.phone.clone(), p.email.clone()),
        };
        let (topic, _) = TOPICS[rng.random_range(0..TOPICS.len())];
        if !returning && channel == pb::Channel::Chat && outreach::bot_first(&mut rng) {
            let attributes = p.attributes.clone();
            outreach::hand_over(&mut gw, id, topic, attributes, &counters).await;
            continue;
        }
        let angry = rng.random_bool(0.08);
        let req = pb::SubmitContactRequest {
            channel: channel as i32,
            identity: Some(id.clone()),
            topic: topic.into(),
            text: if returning {
                format!("me again about {topic}, on {}", channel.as_str_name())
            } else {
                format!("hello, a question about {topic}")
            },
            sentiment: angry.then_some(-0.8),
            attributes: Some(p.attributes.clone()),
            // Returning customers come from a number or address the gateway has
            // verified belongs to them.
            link_identities: if returning { vec![link] } else { vec![] },
        };
        if let Err(e) = gw.submit_contact(req).await {
            tracing::warn!(error = %e, "simulated contact refused");
        }
        if rng.random_bool(0.03) {
            let req = pb::RequestCallbackRequest {
                identity: Some(id),
                channel: pb::Channel::Voice as i32,
                callback_to: Some(p.phone.clone()),
                not_before_unix_ms: 0,
            };
            let _ = gw.request_callback(req).await;
        } else if rng.random_bool(IMPATIENT) {
            // Hangs up if still waiting by then; answered by then, the
            // abandon is refused (FAILED_PRECONDITION) and nothing happens.
            let patience = exp_ms(&mut rng, PATIENCE_MS);
            let mut gw = gw.clone();
            tokio::spawn(async move {
                tokio::time::sleep(patience).await;
                let req = pb::AbandonRequest {
                    identity: Some(id),
                    channel: channel as i32,
                };
                let _ = gw.abandon(req).await;
            });
        }
    }
}

/// The gateways' side: replies and notices go out (some customers answer
/// the notices).
async fn deliveries(conn: Conn, seed: u64, mut stop: watch::Receiver<bool>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut gw = GatewayClient::new(conn.clone());
    let Ok(resp) = gw
        .deliveries(pb::DeliveriesRequest {
            gateway_id: "sim-gateway".into(),
            channels: vec![],
        })
        .await
    else {
        return;
    };
    let mut stream = resp.into_inner();
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            m = stream.message() => match m {
                Ok(Some(d)) => outreach::maybe_reply(&conn, &d, &mut rng),
                _ => return,
            },
        }
    }
}

async fn agent(
    conn: Conn,
    i: usize,
    me: DevAgent,
    handle_ms: u64,
    mut stop: watch::Receiver<bool>,
) {
    let DevAgent {
        id,
        skills,
        mut rng,
    } = me;
    let (tx, rx) = mpsc::channel::<pb::AgentCommand>(64);
    let mut request = 1u64;
    let login = pb::agent_command::Login {
        agent_id: id,
        name: format!("Agent {i}"),
        skills: skills
            .into_iter()
            .map(|s| pb::Skill {
                name: s.name,
                proficiency: i32::from(s.proficiency),
            })
            .collect(),
        languages: vec!["it".into()],
        capacity: 100,
        initial_state: pb::AgentState::Available as i32,
    };
    let _ = tx
        .send(pb::AgentCommand {
            request_id: request,
            command: Some(pb::agent_command::Command::Login(login)),
        })
        .await;
    let mut client = AgentDesktopClient::new(conn);
    let Ok(resp) = client
        .session(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await
    else {
        return;
    };
    let mut events = resp.into_inner();
    let (done_tx, mut done_rx) = mpsc::channel::<pb::AgentCommand>(64);
    loop {
        let event = tokio::select! {
            _ = stop.changed() => return,
            Some(cmd) = done_rx.recv() => {
                request += 1;
                let _ = tx.send(pb::AgentCommand { request_id: request, ..cmd }).await;
                continue;
            }
            e = events.message() => match e {
                Ok(Some(e)) => e,
                _ => return,
            },
        };
        use pb::agent_event::Event;
        if let Some(Event::Offer(offer)) = event.event {
            {
                request += 1;
                let command = if rng.random_bool(0.04) {
                    pb::agent_command::Command::Reject(pb::agent_command::Reject {
                        offer_id: offer.offer_id.clone(),
                        reason: "busy with a colleague".into(),
                    })
                } else {
                    pb::agent_command::Command::Accept(pb::agent_command::Accept {
                        offer_id: offer.offer_id.clone(),
                    })
                };
                let accepted = matches!(command, pb::agent_command::Command::Accept(_));
                let _ = tx
                    .send(pb::AgentCommand {
                        request_id: request,
                        command: Some(command),
                    })
                    .await;
                if accepted {
                    let handle = exp_ms(&mut rng, handle_ms as f64);
                    let outcome = rng.random_range(0..100);
                    tokio::spawn(handle_conversation(offer, handle, outcome, done_tx.clone()));
                }
            }
        }
    }
}

/// Serves one accepted conversation: reply, then wrap up and resolve (or
/// leave it open for the customer's next contact, or transfer it).
async fn handle_conversation(
    offer: pb::agent_event::Offer,
    handle: Duration,
    outcome: u32,
    done: mpsc::Sender<pb::AgentCommand>,
) {
    use pb::agent_command::Command as C;
    let conversation_id = offer.conversation_id.clone();
    let seen = offer
        .history
        .iter()
        .filter(|e| matches!(e.kind, Some(pb::history_event::Kind::CustomerMessage(_))))
        .count();
    let cmd = |c| pb::AgentCommand {
        request_id: 0,
        command: Some(c),
    };
    let reply = format!("Hello, I can see your {seen} earlier message(s); let me help.");
    let _ = done
        .send(cmd(C::Reply(pb::agent_command::Reply {
            conversation_id: conversation_id.clone(),
            text: reply,
        })))
        .await;
    tokio::time::sleep(handle).await;
    if outcome < 5 {
        let to = Some(pb::agent_command::transfer::To::QueueId("care".into()));
        let note = "customer unhappy: over to care".into();
        let _ = done
            .send(cmd(C::Transfer(pb::agent_command::Transfer {
                conversation_id,
                to,
                note,
            })))
            .await;
        return;
    }
    let _ = done
        .send(cmd(C::WrapUp(pb::agent_command::WrapUp {
            conversation_id: conversation_id.clone(),
            disposition: "answered".into(),
        })))
        .await;
    if outcome < 80 {
        let _ = done
            .send(cmd(C::Resolve(pb::agent_command::Resolve {
                conversation_id,
            })))
            .await;
    }
}

async fn report(
    conn: Conn,
    every: Duration,
    counters: Arc<outreach::Counters>,
    mut stop: watch::Receiver<bool>,
) {
    let mut admin = AdminClient::new(conn);
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        let Ok(k) = admin.get_kpis(pb::GetKpisRequest {}).await else {
            continue;
        };
        let k = k.into_inner();
        let Some(total) = &k.total else { continue };
        let resting = match admin.list_agents(pb::ListAgentsRequest {}).await {
            Ok(r) => r.into_inner().agents.iter().filter(|a| a.resting).count(),
            Err(_) => 0,
        };
        let mut line = format!(
            "routed {:>6} | waiting {:>3} | SL {:>5.1}% ASA {:>6.0} ms | abandoned {:>4.1}% | transfers {:>4.1}% | resolved {:>5} FCR {:>3.0}% | occupancy {:>3.0}%, {} resting",
            total.answered,
            total.waiting,
            total.service_level * 100.0,
            total.asa_ms,
            total.abandonment_rate * 100.0,
            total.transfer_rate * 100.0,
            total.resolved,
            total.first_contact_resolution * 100.0,
            total.occupancy * 100.0,
            resting
        );
        for c in k.channels.iter().filter(|c| c.offered > 0) {
            line.push_str(&format!(
                " | {} SL {:.0}% ASA {:.0} ms",
                c.key,
                c.service_level * 100.0,
                c.asa_ms
            ));
        }
        line.push_str(&outreach::report_line(&mut admin, &counters).await);
        println!("{line}");
    }
}
