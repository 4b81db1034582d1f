//! Routing decisions per second of the pure core, single-threaded.
//!
//! Two benchmarks, both at contact-center scale (5,000 agents on voice,
//! capacity 100, over 8 skill queues; every agent qualifies for 3 of them):
//!
//! - `agent_side`: the steady state of a busy center. All 5,000 agents are
//!   on a call and 10,000 customers wait. One iteration is one decision: an
//!   agent wraps up (no after-contact work), the router offers it the
//!   highest-priority conversation it is eligible for across its queues
//!   (that is the decision), the agent accepts, and one new customer
//!   arrives, so 10,000 keep waiting.
//! - `customer_side`: agents idle, a customer arrives; the queue's strategy
//!   picks the agent (the decision), who accepts and wraps up at once, so
//!   5,000 agents stay idle.
//!
//! Throughput is reported in elements, one element per decision. Every
//! iteration goes through `Router::step` with the real inputs, outputs and
//! explanation, as the router actor drives it. The measurement is kept short
//! so `cargo bench -p centralino-core --bench routing` ends in well under a
//! minute; pass `-- --quick` for a faster, rougher run.

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};

use centralino_core::agent::{AgentProfile, Skill};
use centralino_core::ids::CustomerId;
use centralino_core::priority::{PriorityInputs, PriorityPolicy};
use centralino_core::queue::{BullseyeStep, QueueConfig, Strategy};
use centralino_core::router::Enqueue;
use centralino_core::{
    AgentId, Channel, ConversationId, Input, OfferId, Output, QueueId, Router, RouterConfig, TimeMs,
};

const AGENTS: usize = 5_000;
const WAITING: usize = 10_000;
const QUEUES: usize = 8;

fn config() -> RouterConfig {
    RouterConfig {
        offer_timeout_ms: 15_000,
        continuity_window_ms: 3_600_000,
        decline_ttl_ms: 30_000,
        // Capacity frees at wrap-up: each iteration is one whole decision.
        acw_ms: [0; Channel::COUNT],
        priority: PriorityPolicy::default(),
        ..RouterConfig::default()
    }
}

fn queue_configs(strategy: Strategy) -> Vec<QueueConfig> {
    (0..QUEUES)
        .map(|i| QueueConfig {
            required: vec![Skill::new(&format!("skill{i}"), 3)],
            strategy,
            bullseye: vec![BullseyeStep {
                after_ms: 30_000,
                relax_proficiency: 1,
                drop_skills: vec![],
            }],
            ..QueueConfig::open(&format!("q{i}"))
        })
        .collect()
}

/// Agent `i` masters its home queue's skill and two neighbours' (one of
/// them only after a bullseye step), so queues overlap as in real centers.
fn profile(i: usize) -> AgentProfile {
    let skill = |q: usize, p: u8| Skill::new(&format!("skill{}", q % QUEUES), p);
    AgentProfile {
        id: AgentId::new(format!("agent-{i}")),
        name: format!("Agent {i}"),
        skills: vec![
            skill(i, 3 + (i % 3) as u8),
            skill(i + 1, 3),
            skill(i + 3, 2),
        ],
        languages: vec!["it".into()],
        capacity: 100,
    }
}

/// A driver around the router: the clock, the next ids, one output buffer.
struct World {
    router: Router,
    now: TimeMs,
    next_customer: u64,
    queue_ids: Vec<QueueId>,
    agent_ids: Vec<AgentId>,
    /// The conversation each agent is on, by agent index.
    on_call: Vec<Option<ConversationId>>,
    out: Vec<Output>,
    /// The agent that hangs up next (agents take turns).
    next_agent: usize,
}

impl World {
    fn new(strategy: Strategy) -> Self {
        let queues = queue_configs(strategy);
        let mut w = World {
            router: Router::new(config()),
            now: 1_000_000,
            next_customer: 1,
            queue_ids: queues.iter().map(|q| q.id.clone()).collect(),
            agent_ids: (0..AGENTS)
                .map(|i| AgentId::new(format!("agent-{i}")))
                .collect(),
            on_call: vec![None; AGENTS],
            out: Vec::with_capacity(16),
            next_agent: 0,
        };
        for q in queues {
            w.step(Input::UpsertQueue(q));
        }
        for i in 0..AGENTS {
            w.step(Input::Login {
                profile: profile(i),
                away: false,
                session: None,
            });
        }
        w
    }

    fn step(&mut self, input: Input) {
        self.out.clear();
        if let Err(e) = self.router.step(self.now, input, &mut self.out) {
            panic!("benchmark input refused: {e}");
        }
    }

    /// A new voice customer; one in ten is gold, one in seven upset, so
    /// priorities interleave instead of being plain FIFO.
    fn arrival(&mut self) -> Enqueue {
        let n = self.next_customer;
        self.next_customer += 1;
        Enqueue {
            conversation: ConversationId {
                customer: CustomerId(n),
                number: 1,
            },
            queue: self.queue_ids[(n as usize * 7) % QUEUES].clone(),
            channel: Channel::Voice,
            enqueued_at: self.now,
            priority: PriorityInputs {
                tier: n.is_multiple_of(10).then(|| "gold".to_string()),
                sentiment: n.is_multiple_of(7).then_some(-0.6),
                ..Default::default()
            },
            last_agent: None,
            not_before: None,
        }
    }

    /// The single offer in the last outputs: (offer, conversation, agent index).
    fn offered(&self) -> Option<(OfferId, ConversationId, usize)> {
        self.out.iter().find_map(|o| match o {
            Output::Offered {
                offer,
                conversation,
                agent,
                ..
            } => {
                let ix = agent.as_str()["agent-".len()..].parse().expect("agent id");
                Some((*offer, *conversation, ix))
            }
            _ => None,
        })
    }

    fn accept(&mut self, offer: OfferId, conv: ConversationId, ix: usize) {
        self.step(Input::Accept {
            agent: self.agent_ids[ix].clone(),
            offer,
        });
        self.on_call[ix] = Some(conv);
    }

    /// Every agent on a call and `WAITING` customers queued.
    fn busy_center() -> Self {
        let mut w = World::new(Strategy::LongestIdle);
        while w.on_call.iter().any(Option::is_none) {
            let e = w.arrival();
            w.step(Input::Enqueue(e));
            let (offer, conv, ix) = w.offered().expect("an idle agent takes the call");
            w.accept(offer, conv, ix);
        }
        for _ in 0..WAITING {
            let e = w.arrival();
            w.step(Input::Enqueue(e));
            assert!(w.offered().is_none(), "every agent is busy");
        }
        assert_eq!(w.router.waiting(), WAITING);
        w
    }

    /// One agent-side decision: an agent hangs up and takes the best call.
    fn agent_side_decision(&mut self) {
        self.now += 1;
        let ix = self.next_agent;
        self.next_agent = (ix + 1) % AGENTS;
        let conversation = self.on_call[ix].take().expect("on a call");
        self.step(Input::WrapUp {
            agent: self.agent_ids[ix].clone(),
            conversation,
        });
        let (offer, conv, to) = self
            .offered()
            .expect("the freed agent is offered a waiting call");
        debug_assert_eq!(to, ix);
        self.accept(black_box(offer), conv, to);
        let e = self.arrival();
        self.step(Input::Enqueue(e));
    }

    /// One customer-side decision: a customer arrives, an idle agent is
    /// picked, accepts, and hangs up again (back to idle).
    fn customer_side_decision(&mut self) {
        self.now += 1;
        let e = self.arrival();
        self.step(Input::Enqueue(e));
        let (offer, conv, ix) = self.offered().expect("an idle agent takes the call");
        self.accept(black_box(offer), conv, ix);
        self.step(Input::WrapUp {
            agent: self.agent_ids[ix].clone(),
            conversation: conv,
        });
        self.on_call[ix] = None;
    }
}

fn routing(c: &mut Criterion) {
    let mut group = c.benchmark_group("routing");
    group.throughput(Throughput::Elements(1));
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .sample_size(30);

    let mut busy = World::busy_center();
    group.bench_function("agent_side/5000_agents_busy_10000_waiting", |b| {
        b.iter(|| busy.agent_side_decision())
    });
    // The steady state held: still 10,000 waiting, every agent on a call.
    assert_eq!(busy.router.waiting(), WAITING);
    assert!(busy.on_call.iter().all(Option::is_some));

    let mut idle = World::new(Strategy::LongestIdle);
    group.bench_function("customer_side/5000_agents_idle", |b| {
        b.iter(|| idle.customer_side_decision())
    });
    assert_eq!(idle.router.waiting(), 0);
    group.finish();
}

criterion_group!(benches, routing);
criterion_main!(benches);
