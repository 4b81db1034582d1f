//! Scripted, deterministic scenarios of the [`Router`] through its public
//! API: inputs and the current time in, decisions and views out.
//!
//! Each test is a small story with a clock the test moves by hand. The
//! values asserted (who gets which conversation, loads, phases, KPI numbers,
//! explanation fields) are worked out by hand from the module docs of
//! `router`, `priority`, `queue` and `kpi`, so a change of behaviour shows
//! up as a failing line that names what changed.

use centralino_core::agent::{AgentProfile, AgentState, Skill};
use centralino_core::explain::{Candidate, Explanation, PassedOver, Rule};
use centralino_core::history::TransferTarget;
use centralino_core::ids::CustomerId;
use centralino_core::kpi::Counters;
use centralino_core::priority::{PriorityBreakdown, PriorityInputs, PriorityPolicy};
use centralino_core::queue::{BullseyeStep, QueueConfig, Strategy};
use centralino_core::router::{AgentView, ConversationView, Enqueue, Phase, Restore, RevokeReason};
use centralino_core::{
    AgentId, Channel, ConversationId, CoreError, Input, OfferId, Output, QueueId, Router,
    RouterConfig, TimeMs,
};

const OFFER_TIMEOUT: u64 = 15_000;
const DECLINE_TTL: u64 = 30_000;
const CONTINUITY: u64 = 3_600_000;

/// No after-contact work unless a test asks for it, so capacity frees at
/// wrap-up and the scripts stay short.
fn config() -> RouterConfig {
    RouterConfig {
        offer_timeout_ms: OFFER_TIMEOUT,
        continuity_window_ms: CONTINUITY,
        decline_ttl_ms: DECLINE_TTL,
        acw_ms: [0; Channel::COUNT],
        priority: PriorityPolicy::default(),
        ..RouterConfig::default()
    }
}

fn c(n: u64) -> ConversationId {
    ConversationId {
        customer: CustomerId(n),
        number: 1,
    }
}

fn queue(id: &str, strategy: Strategy, required: &[(&str, u8)]) -> QueueConfig {
    QueueConfig {
        strategy,
        required: required.iter().map(|(n, p)| Skill::new(n, *p)).collect(),
        ..QueueConfig::open(id)
    }
}

fn profile(id: &str, skills: &[(&str, u8)], capacity: u16) -> AgentProfile {
    AgentProfile {
        id: AgentId::new(id),
        name: id.to_uppercase(),
        skills: skills.iter().map(|(n, p)| Skill::new(n, *p)).collect(),
        languages: vec!["it".into()],
        capacity,
    }
}

/// One offer as emitted, flattened for assertions.
#[derive(Debug, Clone)]
struct Offer {
    offer: OfferId,
    conv: ConversationId,
    agent: String,
    queue: String,
    expires_at: TimeMs,
    explanation: Explanation,
}

fn offers(out: &[Output]) -> Vec<Offer> {
    out.iter()
        .filter_map(|o| match o {
            Output::Offered {
                offer,
                conversation,
                agent,
                queue,
                expires_at,
                explanation,
                ..
            } => Some(Offer {
                offer: *offer,
                conv: *conversation,
                agent: agent.to_string(),
                queue: queue.to_string(),
                expires_at: *expires_at,
                explanation: (**explanation).clone(),
            }),
            _ => None,
        })
        .collect()
}

/// The single offer in `out`; fails if there is none or more than one.
fn one_offer(out: &[Output]) -> Offer {
    let v = offers(out);
    assert_eq!(v.len(), 1, "expected exactly one offer in {out:#?}");
    v.into_iter().next().unwrap()
}

/// (customer number, agent) of every offer, in emission order.
fn pairs(out: &[Output]) -> Vec<(u64, String)> {
    offers(out)
        .into_iter()
        .map(|o| (o.conv.customer.0, o.agent))
        .collect()
}

fn cand(agent: &str, key: u64, passed_over: Option<PassedOver>) -> Candidate {
    Candidate {
        agent: AgentId::new(agent),
        key,
        passed_over,
    }
}

/// A router, a hand-moved clock, and shorthands for the inputs.
struct Sim {
    router: Router,
    now: TimeMs,
}

impl Sim {
    fn new(cfg: RouterConfig, queues: Vec<QueueConfig>) -> Self {
        let mut sim = Sim {
            router: Router::new(cfg),
            now: 0,
        };
        for q in queues {
            sim.step(Input::UpsertQueue(q));
        }
        sim
    }

    /// Moves the clock to `t` and fires the timers due.
    fn at(&mut self, t: TimeMs) -> Vec<Output> {
        assert!(t >= self.now, "time goes forward");
        self.now = t;
        let mut out = Vec::new();
        self.router.tick(t, &mut out);
        out
    }

    fn try_step(&mut self, input: Input) -> Result<Vec<Output>, CoreError> {
        let mut out = Vec::new();
        self.router.step(self.now, input, &mut out).map(|()| out)
    }

    fn step(&mut self, input: Input) -> Vec<Output> {
        let dbg = format!("{input:?}");
        self.try_step(input)
            .unwrap_or_else(|e| panic!("{dbg} failed: {e}"))
    }

    fn login(&mut self, id: &str, skills: &[(&str, u8)], capacity: u16) -> Vec<Output> {
        self.step(Input::Login {
            profile: profile(id, skills, capacity),
            away: false,
            session: None,
        })
    }

    fn enqueue(&mut self, n: u64, queue: &str, channel: Channel) -> Vec<Output> {
        self.step(Input::Enqueue(self.arrival(n, queue, channel)))
    }

    /// An arrival now, with no priority inputs, continuity or schedule.
    fn arrival(&self, n: u64, queue: &str, channel: Channel) -> Enqueue {
        Enqueue {
            conversation: c(n),
            queue: QueueId::new(queue),
            channel,
            enqueued_at: self.now,
            priority: PriorityInputs::default(),
            last_agent: None,
            not_before: None,
        }
    }

    fn accept(&mut self, o: &Offer) -> Vec<Output> {
        self.step(Input::Accept {
            agent: AgentId::new(&o.agent),
            offer: o.offer,
        })
    }

    fn reject(&mut self, o: &Offer) -> Vec<Output> {
        self.step(Input::Reject {
            agent: AgentId::new(&o.agent),
            offer: o.offer,
            reason: "busy".into(),
        })
    }

    /// Enqueues and accepts at once; the conversation must be offered.
    fn serve(&mut self, n: u64, queue: &str, channel: Channel) -> Offer {
        let o = one_offer(&self.enqueue(n, queue, channel));
        self.accept(&o);
        o
    }

    fn wrap_up(&mut self, agent: &str, n: u64) -> Vec<Output> {
        self.step(Input::WrapUp {
            agent: AgentId::new(agent),
            conversation: c(n),
        })
    }

    fn agent(&self, id: &str) -> AgentView {
        self.router
            .agent_views()
            .into_iter()
            .find(|a| a.id.as_str() == id)
            .expect("agent known")
    }

    fn conv(&self, n: u64) -> ConversationView {
        self.router
            .conversation_view(self.now, c(n))
            .expect("conversation known")
    }
}

// ---------------------------------------------------------------- strategies

#[test]
fn longest_idle_offers_to_the_agent_idle_longest_not_the_first_logged_in() {
    let mut s = Sim::new(config(), vec![queue("q", Strategy::LongestIdle, &[])]);
    s.login("a1", &[], 100);
    s.at(1_000);
    s.login("a2", &[], 100);
    s.at(2_000);
    s.login("a3", &[], 100);

    s.at(3_000);
    let o = s.serve(1, "q", Channel::Voice);
    assert_eq!(o.agent, "a1");
    assert_eq!(o.explanation.rule, Rule::LongestIdle);
    assert_eq!(
        o.explanation.candidates,
        vec![
            cand("a1", 0, None),
            cand("a2", 1_000, Some(PassedOver::RankedLower)),
            cand("a3", 2_000, Some(PassedOver::RankedLower))
        ]
    );
    assert_eq!(s.serve(2, "q", Channel::Voice).agent, "a2");
    assert_eq!(s.serve(3, "q", Channel::Voice).agent, "a3");

    // a2 finishes first, then a1: a2 has now been idle longer.
    s.at(10_000);
    s.wrap_up("a2", 2);
    s.at(11_000);
    s.wrap_up("a1", 1);
    s.at(12_000);
    let o = one_offer(&s.enqueue(4, "q", Channel::Voice));
    assert_eq!(o.agent, "a2");
    assert_eq!(
        o.explanation.candidates,
        vec![
            cand("a2", 10_000, None),
            cand("a1", 11_000, Some(PassedOver::RankedLower))
        ]
    );
}

#[test]
fn most_proficient_offers_by_proficiency_and_skips_agents_below_the_minimum() {
    let mut s = Sim::new(
        config(),
        vec![queue(
            "billing",
            Strategy::MostProficient,
            &[("billing", 2)],
        )],
    );
    s.login("p3", &[("billing", 3)], 100);
    s.login("p5", &[("billing", 5), ("fiber", 5)], 100);
    s.login("p2", &[("billing", 2)], 100);
    s.login("p1", &[("billing", 1)], 100);
    s.login("x", &[("fiber", 5)], 100);
    let qv = s
        .router
        .queue_views(s.now)
        .into_iter()
        .find(|q| q.config.id.as_str() == "billing")
        .unwrap();
    assert_eq!(
        (qv.agents_logged_in, qv.agents_available),
        (3, 3),
        "p1 and x do not qualify"
    );

    let o = s.serve(1, "billing", Channel::Voice);
    assert_eq!(o.agent, "p5");
    assert_eq!(o.explanation.rule, Rule::MostProficient);
    let key = |p: u64| u64::from(u32::MAX) - p;
    assert_eq!(
        o.explanation.candidates,
        vec![
            cand("p5", key(5), None),
            cand("p3", key(3), Some(PassedOver::RankedLower)),
            cand("p2", key(2), Some(PassedOver::RankedLower))
        ]
    );
    assert_eq!(s.serve(2, "billing", Channel::Voice).agent, "p3");
    assert_eq!(s.serve(3, "billing", Channel::Voice).agent, "p2");

    // Only unqualified agents are free: the fourth waits.
    assert!(offers(&s.enqueue(4, "billing", Channel::Voice)).is_empty());
    assert_eq!(s.conv(4).phase, Phase::Waiting);
    assert_eq!(s.agent("p1").state, AgentState::Available);
    assert!(s.agent("p1").conversations.is_empty());
}

#[test]
fn least_occupied_offers_to_the_agent_with_the_least_capacity_in_use() {
    let mut s = Sim::new(config(), vec![queue("lo", Strategy::LeastOccupied, &[])]);
    s.login("c1", &[], 100);
    assert_eq!(
        pairs(&s.enqueue(1, "lo", Channel::Chat)),
        vec![(1, "c1".into())]
    );
    assert_eq!(
        pairs(&s.enqueue(2, "lo", Channel::Chat)),
        vec![(2, "c1".into())]
    );
    s.at(10);
    s.login("c2", &[], 100);
    assert_eq!(
        pairs(&s.enqueue(3, "lo", Channel::Chat)),
        vec![(3, "c2".into())]
    );
    s.at(20);
    s.login("c3", &[], 100);
    // Loads 60, 30, 0.
    let o = one_offer(&s.enqueue(4, "lo", Channel::Chat));
    assert_eq!(o.agent, "c3");
    assert_eq!(o.explanation.rule, Rule::LeastOccupied);
    // The key shown is the strategy's key, the load in use.
    assert_eq!(
        o.explanation.candidates,
        vec![
            cand("c3", 0, None),
            cand("c2", 30, Some(PassedOver::RankedLower)),
            cand("c1", 60, Some(PassedOver::RankedLower))
        ]
    );
    // Loads 60, 30, 30: the tie goes to the one idle since earlier (c2).
    assert_eq!(
        pairs(&s.enqueue(5, "lo", Channel::Chat)),
        vec![(5, "c2".into())]
    );
    assert_eq!(
        pairs(&s.enqueue(6, "lo", Channel::Chat)),
        vec![(6, "c3".into())]
    );
    let loads: Vec<u16> = ["c1", "c2", "c3"].iter().map(|a| s.agent(a).load).collect();
    assert_eq!(loads, vec![60, 60, 60]);
}

#[test]
fn round_robin_takes_turns_among_agents_with_room() {
    let mut s = Sim::new(config(), vec![queue("rr", Strategy::RoundRobin, &[])]);
    for a in ["r1", "r2", "r3"] {
        s.login(a, &[], 100);
    }
    let mut got = Vec::new();
    for n in 1..=3 {
        got.extend(pairs(&s.enqueue(n, "rr", Channel::Chat)));
    }
    let o = one_offer(&s.enqueue(4, "rr", Channel::Chat));
    assert_eq!(o.explanation.rule, Rule::RoundRobin);
    // The key is the id of each agent's last offer: of-1, of-2, of-3.
    assert_eq!(
        o.explanation.candidates,
        vec![
            cand("r1", 1, None),
            cand("r2", 2, Some(PassedOver::RankedLower)),
            cand("r3", 3, Some(PassedOver::RankedLower))
        ]
    );
    got.push((4, o.agent));
    for n in 5..=6 {
        got.extend(pairs(&s.enqueue(n, "rr", Channel::Chat)));
    }
    let want: Vec<(u64, String)> = [
        (1, "r1"),
        (2, "r2"),
        (3, "r3"),
        (4, "r1"),
        (5, "r2"),
        (6, "r3"),
    ]
    .iter()
    .map(|(n, a)| (*n, a.to_string()))
    .collect();
    assert_eq!(got, want);
}

// ------------------------------------------------------------------ capacity

#[test]
fn weighted_capacity_mixes_chats_but_voice_excludes_everything() {
    let mut s = Sim::new(config(), vec![queue("q", Strategy::LongestIdle, &[])]);
    s.login("w", &[], 100);

    assert_eq!(s.serve(1, "q", Channel::Chat).agent, "w");
    assert_eq!(s.agent("w").load, 30);
    // A call does not fit on top of a chat.
    s.at(1_000);
    assert!(offers(&s.enqueue(100, "q", Channel::Voice)).is_empty());
    assert_eq!(s.serve(2, "q", Channel::Chat).agent, "w");
    assert_eq!(s.serve(3, "q", Channel::Chat).agent, "w");
    // Three chats: 90 of 100. A fourth chat waits, an SMS (10) still fits.
    assert_eq!(
        (s.agent("w").load, s.agent("w").state),
        (90, AgentState::Available)
    );
    assert!(offers(&s.enqueue(4, "q", Channel::Chat)).is_empty());
    assert_eq!(s.serve(5, "q", Channel::Sms).agent, "w");
    assert_eq!(
        (s.agent("w").load, s.agent("w").state),
        (100, AgentState::Busy)
    );
    assert_eq!(s.agent("w").conversations, vec![c(1), c(2), c(3), c(5)]);

    // Chat 1 ends: 30 free. The call ranks first (20 s SLA, waiting
    // longest) but needs 100, so the waiting chat is offered.
    s.at(2_000);
    assert_eq!(pairs(&s.wrap_up("w", 1)), vec![(4, "w".into())]);
    assert_eq!(s.agent("w").load, 100);
    let Phase::Offered { offer, .. } = s.conv(4).phase else {
        panic!("conversation 4 should be offered")
    };
    s.step(Input::Accept {
        agent: AgentId::new("w"),
        offer,
    });
    for n in [2, 3, 5] {
        assert!(
            offers(&s.wrap_up("w", n)).is_empty(),
            "the call still does not fit"
        );
    }
    assert_eq!(s.agent("w").load, 30);
    // The last chat ends: the call takes the whole capacity.
    let o = one_offer(&s.wrap_up("w", 4));
    assert_eq!((o.conv, o.agent.as_str()), (c(100), "w"));
    assert_eq!(s.agent("w").load, 100);
    s.accept(&o);
    // Voice excludes the rest, even the cheapest channel.
    assert!(offers(&s.enqueue(6, "q", Channel::Sms)).is_empty());
    assert_eq!(s.conv(6).phase, Phase::Waiting);
}

// ------------------------------------------------------- reject and timeout

#[test]
fn a_rejected_offer_moves_on_and_is_not_offered_back_until_the_decline_expires() {
    let mut s = Sim::new(config(), vec![queue("q", Strategy::LongestIdle, &[])]);
    s.login("a", &[], 100);
    // a holds a chat, so it stays idle since 0 and ranks before b.
    assert_eq!(s.serve(100, "q", Channel::Chat).agent, "a");
    s.at(500);
    s.login("b", &[], 100);
    let o = one_offer(&s.enqueue(1, "q", Channel::Chat));
    assert_eq!(o.agent, "a");

    s.at(1_000);
    let out = s.reject(&o);
    assert!(out.contains(&Output::Rejected {
        offer: o.offer,
        conversation: c(1),
        agent: AgentId::new("a"),
        reason: "busy".into()
    }));
    let to_b = one_offer(&out);
    assert_eq!(to_b.agent, "b");
    // The chosen agent first, then those passed over in the order considered.
    assert_eq!(
        to_b.explanation.candidates,
        vec![
            cand("b", 500, None),
            cand("a", 0, Some(PassedOver::DeclinedEarlier))
        ]
    );

    s.at(2_000);
    let out = s.reject(&to_b);
    assert!(offers(&out).is_empty(), "both declined: nobody gets it");
    assert_eq!(s.conv(1).phase, Phase::Waiting);
    assert_eq!(
        (s.agent("a").state, s.agent("b").state),
        (AgentState::Available, AgentState::Available)
    );
    assert_eq!((s.agent("a").load, s.agent("b").load), (30, 0));

    // a declined at 1 000: not offered it again before 31 000, then it is.
    assert!(offers(&s.at(1_000 + DECLINE_TTL - 1)).is_empty());
    let again = one_offer(&s.at(1_000 + DECLINE_TTL));
    assert_eq!((again.conv, again.agent.as_str()), (c(1), "a"));
    assert_eq!(again.explanation.rule, Rule::AgentFreed);
}

#[test]
fn the_explanation_always_names_the_chosen_agent_first_even_after_many_passed_over() {
    let mut s = Sim::new(
        config(),
        vec![
            queue("setup", Strategy::RoundRobin, &[]),
            queue("main", Strategy::LongestIdle, &[]),
        ],
    );
    let busy = ["n1", "n2", "n3", "n4", "n5", "n6"];
    for a in busy {
        s.login(a, &[], 100);
    }
    // One SMS each (round robin): all keep room, but not for a call.
    for n in 1..=6 {
        s.enqueue(n, "setup", Channel::Sms);
    }
    assert!(busy.iter().all(|a| s.agent(a).load == 10));
    s.at(1);
    s.login("free", &[], 100);
    let o = one_offer(&s.enqueue(7, "main", Channel::Voice));
    assert_eq!(o.agent, "free");
    let mut want = vec![cand("free", 1, None)];
    want.extend(
        busy[..4]
            .iter()
            .map(|a| cand(a, 0, Some(PassedOver::NoCapacity))),
    );
    assert_eq!(o.explanation.candidates, want);
}

#[test]
fn an_unanswered_offer_times_out_moves_on_and_sets_the_agent_away() {
    let mut s = Sim::new(config(), vec![queue("q", Strategy::LongestIdle, &[])]);
    s.login("a", &[], 100);
    s.at(10);
    s.login("b", &[], 100);
    let o = one_offer(&s.enqueue(1, "q", Channel::Voice));
    assert_eq!((o.agent.as_str(), o.expires_at), ("a", 10 + OFFER_TIMEOUT));

    assert!(s.at(10 + OFFER_TIMEOUT - 1).is_empty());
    let out = s.at(10 + OFFER_TIMEOUT);
    assert!(out.contains(&Output::OfferRevoked {
        offer: o.offer,
        conversation: c(1),
        agent: AgentId::new("a"),
        reason: RevokeReason::TimedOut
    }));
    assert!(out.contains(&Output::AgentStateChanged {
        agent: AgentId::new("a"),
        state: AgentState::Away,
        load: 0
    }));
    let next = one_offer(&out);
    assert_eq!((next.conv, next.agent.as_str()), (c(1), "b"));
    assert_eq!(
        (s.agent("a").state, s.agent("a").load),
        (AgentState::Away, 0)
    );

    // While away, a gets nothing; once back, it takes what waits.
    s.accept(&next);
    assert!(offers(&s.enqueue(2, "q", Channel::Voice)).is_empty());
    let back = one_offer(&s.step(Input::SetAway {
        agent: AgentId::new("a"),
        away: false,
    }));
    assert_eq!(
        (back.conv, back.agent.as_str(), back.explanation.rule),
        (c(2), "a", Rule::AgentFreed)
    );
}

// ---------------------------------------------------------------- continuity

#[test]
fn continuity_offers_to_the_last_agent_first_only_if_present_with_room_and_in_the_window() {
    let mut s = Sim::new(config(), vec![queue("q", Strategy::LongestIdle, &[])]);
    s.login("first", &[], 100);
    s.login("last", &[], 100);
    let t0 = 2 * CONTINUITY;
    s.at(t0);
    let returning = |s: &Sim, n: u64, channel: Channel, last_seen: TimeMs| Enqueue {
        last_agent: Some((AgentId::new("last"), last_seen)),
        ..s.arrival(n, "q", channel)
    };

    // Last contact just outside the window: the queue's strategy decides
    // ("first" and "last" idle since 0, "first" ranks first by index).
    let o = one_offer(&s.step(Input::Enqueue(returning(
        &s,
        1,
        Channel::Chat,
        t0 - CONTINUITY - 1,
    ))));
    assert_eq!(
        (o.agent.as_str(), o.explanation.rule),
        ("first", Rule::LongestIdle)
    );

    // Within the window, on another channel: the last agent first.
    let o = one_offer(&s.step(Input::Enqueue(returning(&s, 2, Channel::Chat, t0 - 10_000))));
    assert_eq!(
        (o.agent.as_str(), o.explanation.rule),
        ("last", Rule::Continuity)
    );
    assert_eq!(o.explanation.candidates, vec![cand("last", 0, None)]);

    // No room for a call on top of that chat: whoever has room takes it.
    s.at(t0 + 1);
    s.login("third", &[], 100);
    let o = one_offer(&s.step(Input::Enqueue(returning(&s, 3, Channel::Voice, t0))));
    assert_eq!(
        (o.agent.as_str(), o.explanation.rule),
        ("third", Rule::LongestIdle)
    );
    assert_eq!(
        o.explanation.candidates,
        vec![
            cand("third", t0 + 1, None),
            cand("first", 0, Some(PassedOver::NoCapacity)),
            cand("last", 0, Some(PassedOver::NoCapacity))
        ]
    );

    // Away or logged out: not present, the strategy decides.
    s.step(Input::SetAway {
        agent: AgentId::new("last"),
        away: true,
    });
    let o = one_offer(&s.step(Input::Enqueue(returning(&s, 4, Channel::Chat, t0))));
    assert_eq!(
        (o.agent.as_str(), o.explanation.rule),
        ("first", Rule::LongestIdle)
    );
    // Logging out re-queues the chat "last" was offered; "first" takes it.
    assert_eq!(
        pairs(&s.step(Input::Logout {
            agent: AgentId::new("last")
        })),
        vec![(2, "first".into())]
    );
    let o = one_offer(&s.step(Input::Enqueue(returning(&s, 5, Channel::Sms, t0))));
    assert_eq!(
        (o.agent.as_str(), o.explanation.rule),
        ("first", Rule::LongestIdle)
    );
    assert_eq!(s.agent("first").conversations, vec![c(1), c(4), c(2), c(5)]);
    assert_eq!(s.agent("first").load, 100);
}

// ------------------------------------------------------------------ bullseye

#[test]
fn bullseye_widens_to_a_less_proficient_agent_after_the_step_time() {
    let mut tech = queue("tech", Strategy::MostProficient, &[("fiber", 4)]);
    tech.bullseye = vec![BullseyeStep {
        after_ms: 30_000,
        relax_proficiency: 1,
        drop_skills: vec![],
    }];
    let mut s = Sim::new(config(), vec![tech]);
    s.login("expert", &[("fiber", 5)], 100);
    s.login("junior", &[("fiber", 3)], 100);
    s.login("novice", &[("fiber", 2)], 100);
    assert_eq!(s.serve(1, "tech", Channel::Voice).agent, "expert");

    s.at(1_000);
    let o = s.enqueue(2, "tech", Channel::Voice);
    assert!(offers(&o).is_empty(), "junior does not meet fiber 4 yet");
    assert_eq!(s.conv(2).position, Some(1));
    assert!(offers(&s.at(1_000 + 30_000 - 1)).is_empty());
    let o = one_offer(&s.at(1_000 + 30_000));
    assert_eq!((o.conv, o.agent.as_str()), (c(2), "junior"));
    assert_eq!(
        (o.explanation.rule, o.explanation.bullseye_step),
        (Rule::MostProficient, 1)
    );
    // Novice (fiber 2) is below even the widened minimum of 3.
    assert!(
        o.explanation
            .candidates
            .iter()
            .all(|c| c.agent.as_str() != "novice")
    );
    assert_eq!(s.router.queue_views(s.now)[0].waiting, 0);

    // A callback that keeps its place starts at the step its wait reached.
    s.accept(&o);
    s.at(100_000);
    let kept = Enqueue {
        enqueued_at: 40_000,
        ..s.arrival(3, "tech", Channel::Voice)
    };
    let out = s.step(Input::Enqueue(kept));
    assert!(
        offers(&out).is_empty(),
        "only novice is free and fiber 3 is required at step 1"
    );
    s.step(Input::Logout {
        agent: AgentId::new("novice"),
    });
    let o = one_offer(&s.login("junior2", &[("fiber", 3)], 100));
    assert_eq!(
        (o.conv, o.agent.as_str(), o.explanation.rule),
        (c(3), "junior2", Rule::AgentFreed)
    );
    assert_eq!(o.explanation.bullseye_step, 1);
}

// ------------------------------------------------------------------ transfer

#[test]
fn transfer_to_a_queue_waits_there_for_a_qualified_agent() {
    let mut s = Sim::new(
        config(),
        vec![
            queue("support", Strategy::LongestIdle, &[("support", 1)]),
            queue("sales", Strategy::LongestIdle, &[("sales", 3)]),
        ],
    );
    s.login("sup", &[("support", 3)], 100);
    s.login("seller", &[("sales", 4)], 100);
    // The seller is on a call.
    assert_eq!(s.serve(1, "sales", Channel::Voice).agent, "seller");
    assert_eq!(s.serve(2, "support", Channel::Voice).agent, "sup");

    s.at(5_000);
    let out = s.step(Input::Transfer {
        agent: AgentId::new("sup"),
        conversation: c(2),
        to: TransferTarget::Queue(QueueId::new("sales")),
    });
    assert!(out.contains(&Output::Transferred {
        conversation: c(2),
        from: AgentId::new("sup"),
        to: TransferTarget::Queue(QueueId::new("sales"))
    }));
    assert!(
        offers(&out).is_empty(),
        "sup lacks the sales skill, the seller is busy"
    );
    let v = s.conv(2);
    assert_eq!(
        (v.queue.as_str(), v.phase, v.agent, v.waited_ms),
        ("sales", Phase::Waiting, None, 5_000)
    );
    assert_eq!(s.agent("sup").load, 0);

    s.at(8_000);
    let o = one_offer(&s.wrap_up("seller", 1));
    assert_eq!(
        (
            o.conv,
            o.agent.as_str(),
            o.queue.as_str(),
            o.explanation.rule
        ),
        (c(2), "seller", "sales", Rule::AgentFreed)
    );
    let k = s.router.kpi_report(s.now);
    let support = k.queues.iter().find(|(q, _)| q == "support").unwrap().1;
    assert_eq!((support.transfers, k.total.transfers), (1, 1));
}

#[test]
fn transfer_to_an_agent_waits_for_that_agent_and_nobody_else() {
    let mut s = Sim::new(config(), vec![queue("q", Strategy::LongestIdle, &[])]);
    s.login("a", &[], 100);
    s.login("b", &[], 100);
    s.login("idle", &[], 100);
    assert_eq!(s.serve(1, "q", Channel::Voice).agent, "a");
    assert_eq!(s.serve(2, "q", Channel::Voice).agent, "b");

    s.at(1_000);
    let to_b = TransferTarget::Agent(AgentId::new("b"));
    let out = s.step(Input::Transfer {
        agent: AgentId::new("a"),
        conversation: c(1),
        to: to_b.clone(),
    });
    assert!(out.contains(&Output::Transferred {
        conversation: c(1),
        from: AgentId::new("a"),
        to: to_b
    }));
    assert!(
        offers(&out).is_empty(),
        "b is on a call; idle and a must not get it"
    );
    assert_eq!(s.conv(1).phase, Phase::Waiting);
    assert_eq!(s.router.waiting(), 1);
    assert!(s.agent("idle").conversations.is_empty());

    // b is free: the transfer is offered to b, by name.
    s.at(2_000);
    let o = one_offer(&s.wrap_up("b", 2));
    assert_eq!(
        (o.conv, o.agent.as_str(), o.explanation.rule),
        (c(1), "b", Rule::DirectTransfer)
    );
    // b declines: it still waits for b, and comes back when the decline expires.
    s.at(3_000);
    assert!(offers(&s.reject(&o)).is_empty());
    assert_eq!(s.conv(1).phase, Phase::Waiting);
    assert!(offers(&s.at(3_000 + DECLINE_TTL - 1)).is_empty());
    let o = one_offer(&s.at(3_000 + DECLINE_TTL));
    assert_eq!(
        (o.conv, o.agent.as_str(), o.explanation.rule),
        (c(1), "b", Rule::DirectTransfer)
    );
}

#[test]
fn transfer_to_a_free_agent_is_offered_at_once() {
    let mut s = Sim::new(config(), vec![queue("q", Strategy::LongestIdle, &[])]);
    s.login("a", &[], 100);
    s.login("b", &[], 100);
    s.serve(1, "q", Channel::Chat);
    let out = s.step(Input::Transfer {
        agent: AgentId::new("a"),
        conversation: c(1),
        to: TransferTarget::Agent(AgentId::new("b")),
    });
    let o = one_offer(&out);
    assert_eq!(
        (o.agent.as_str(), o.explanation.rule),
        ("b", Rule::DirectTransfer)
    );
    assert_eq!(o.explanation.candidates, vec![cand("b", 0, None)]);
    assert_eq!((s.agent("a").load, s.agent("b").load), (0, 30));
    // Only an assigned conversation can be transferred: b holds an offer.
    let to_a = |s: &mut Sim, to: &str| {
        s.try_step(Input::Transfer {
            agent: AgentId::new("b"),
            conversation: c(1),
            to: TransferTarget::Agent(AgentId::new(to)),
        })
    };
    assert!(matches!(
        to_a(&mut s, "a"),
        Err(CoreError::NotAssigned { .. })
    ));
    s.accept(&o);
    // To an agent who is not logged in: refused, and nothing changed.
    let before = (s.router.agent_views(), s.conv(1));
    let err = to_a(&mut s, "ghost");
    assert_eq!(err, Err(CoreError::AgentNotLoggedIn(AgentId::new("ghost"))));
    assert_eq!((s.router.agent_views(), s.conv(1)), before);
    assert_eq!(
        s.router.kpi_report(s.now).total.transfers,
        1,
        "only the a → b transfer counts"
    );
}

// ------------------------------------------------------------------- wrap-up

#[test]
fn after_contact_work_holds_the_capacity_until_its_timer() {
    let mut cfg = config();
    cfg.acw_ms[Channel::Voice.index()] = 5_000;
    let mut s = Sim::new(cfg, vec![queue("q", Strategy::LongestIdle, &[])]);
    s.login("a", &[], 100);
    s.serve(1, "q", Channel::Voice);

    s.at(10_000);
    let out = s.wrap_up("a", 1);
    assert!(out.contains(&Output::AgentStateChanged {
        agent: AgentId::new("a"),
        state: AgentState::WrapUp,
        load: 100
    }));
    assert_eq!(s.conv(1).phase, Phase::WrapUp { until: 15_000 });
    assert_eq!(s.router.next_timer(), Some(15_000));

    s.at(12_000);
    assert!(
        offers(&s.enqueue(2, "q", Channel::Sms)).is_empty(),
        "capacity held by after-contact work"
    );
    assert!(offers(&s.at(14_999)).is_empty());
    let out = s.at(15_000);
    let o = one_offer(&out);
    assert_eq!(
        (o.conv, o.agent.as_str(), o.explanation.rule),
        (c(2), "a", Rule::AgentFreed)
    );
    assert_eq!(
        s.router.conversation_view(s.now, c(1)),
        None,
        "the wrapped-up conversation left routing"
    );
    assert_eq!(s.agent("a").load, 10);
}

// -------------------------------------------------------------------- logout

#[test]
fn logout_requeues_assigned_and_offered_conversations_keeping_their_place() {
    let mut s = Sim::new(config(), vec![queue("q", Strategy::LongestIdle, &[])]);
    // b is on a call, so only a takes work.
    s.login("b", &[], 100);
    assert_eq!(s.serve(101, "q", Channel::Voice).agent, "b");
    s.login("a", &[], 100);

    s.at(1_000);
    let assigned = s.serve(1, "q", Channel::Chat);
    s.at(2_000);
    let offered = one_offer(&s.enqueue(2, "q", Channel::Chat));
    assert_eq!(
        (assigned.agent.as_str(), offered.agent.as_str()),
        ("a", "a")
    );
    s.at(3_000);
    assert!(offers(&s.enqueue(3, "q", Channel::Voice)).is_empty());

    s.at(4_000);
    let out = s.step(Input::Logout {
        agent: AgentId::new("a"),
    });
    assert!(out.contains(&Output::Requeued {
        conversation: c(1),
        from: AgentId::new("a")
    }));
    assert!(out.contains(&Output::OfferRevoked {
        offer: offered.offer,
        conversation: c(2),
        agent: AgentId::new("a"),
        reason: RevokeReason::AgentLoggedOut
    }));
    assert!(offers(&out).is_empty(), "b is on a call");
    let a = s.agent("a");
    assert_eq!(
        (a.state, a.load, a.conversations.len()),
        (AgentState::Offline, 0, 0)
    );
    for n in [1, 2, 3] {
        assert_eq!(s.conv(n).phase, Phase::Waiting, "conversation {n}");
    }
    // They kept their place: the call (20 s SLA from 3 000) is first, then
    // the chats in arrival order.
    assert_eq!(
        (s.conv(3).position, s.conv(1).position, s.conv(2).position),
        (Some(1), Some(2), Some(3))
    );
    assert_eq!(s.conv(1).waited_ms, 3_000);

    s.at(5_000);
    let o = one_offer(&s.wrap_up("b", 101));
    assert_eq!((o.conv, o.agent.as_str()), (c(3), "b"));
    s.accept(&o);
    s.at(6_000);
    assert_eq!(
        pairs(&s.wrap_up("b", 3)),
        vec![(1, "b".into()), (2, "b".into())]
    );
}

// ---------------------------------------------------------------------- KPIs

#[test]
fn kpis_of_a_small_scripted_day() {
    let mut s = Sim::new(config(), vec![queue("kpi", Strategy::LongestIdle, &[])]);
    s.login("a", &[], 100);
    // c1 answered after 5 s (within the 20 s voice target), handled 60 s.
    let o1 = one_offer(&s.enqueue(1, "kpi", Channel::Voice));
    s.at(1_000);
    s.enqueue(2, "kpi", Channel::Voice);
    s.at(3_000);
    s.enqueue(3, "kpi", Channel::Voice);
    s.at(5_000);
    let out = s.accept(&o1);
    assert!(out.contains(&Output::Assigned {
        offer: o1.offer,
        conversation: c(1),
        agent: AgentId::new("a"),
        waited_ms: 5_000
    }));
    // c3 abandons while waiting.
    s.at(10_000);
    s.step(Input::Withdraw {
        conversation: c(3),
        abandoned: true,
    });
    // c2 answered after 65 s (late), handled 30 s.
    s.at(65_000);
    let o2 = one_offer(&s.wrap_up("a", 1));
    s.at(66_000);
    s.accept(&o2);
    s.at(96_000);
    s.wrap_up("a", 2);
    // c4 answered after 2 s, handled 90 s.
    s.at(100_000);
    let o4 = one_offer(&s.enqueue(4, "kpi", Channel::Voice));
    s.at(102_000);
    s.accept(&o4);
    s.at(192_000);
    s.wrap_up("a", 4);
    // c5 is offered, then resolved elsewhere: withdrawn, not abandoned.
    s.at(200_000);
    s.enqueue(5, "kpi", Channel::Voice);
    s.at(201_000);
    s.step(Input::Withdraw {
        conversation: c(5),
        abandoned: false,
    });
    s.router.note_resolved(
        &QueueId::new("kpi"),
        Channel::Voice,
        Some(&AgentId::new("a")),
        true,
    );

    let k = s.router.kpi_report(s.now);
    let t = k.total;
    assert_eq!(
        (t.offered, t.answered, t.answered_within_sla, t.abandoned),
        (5, 3, 2, 1)
    );
    assert_eq!(
        (t.wait_ms_total, t.handled, t.handle_ms_total, t.resolved),
        (72_000, 3, 180_000, 1)
    );
    // Service level: 2 within target over 3 answered + 1 abandoned.
    assert_eq!(t.service_level(), 0.5);
    assert_eq!(t.asa_ms(), 24_000.0);
    assert_eq!(t.aht_ms(), 60_000.0);
    // Occupancy (agents and the total only): with no after-contact work on
    // voice here, `a` had work from 0 to 96 s (c1, then c2 offered at its
    // wrap-up), 100 to 192 s (c4) and 200 to 201 s (c5's offer), logged in
    // for all 201 s.
    assert_eq!((t.busy_ms, t.staffed_ms), (189_000, 201_000));
    assert!((t.occupancy() - 189.0 / 201.0).abs() < 1e-12);
    // The same numbers per queue and channel; the agent has no abandons.
    let per_key = Counters {
        busy_ms: 0,
        staffed_ms: 0,
        ..t
    };
    assert_eq!(k.queues, vec![("kpi".to_string(), per_key)]);
    assert_eq!(
        k.channels
            .iter()
            .find(|(ch, _)| *ch == Channel::Voice)
            .unwrap()
            .1,
        per_key
    );
    assert!(
        k.channels
            .iter()
            .filter(|(ch, _)| *ch != Channel::Voice)
            .all(|(_, c)| c.offered == 0)
    );
    let a = k.agents.iter().find(|(id, _)| id == "a").unwrap().1;
    assert_eq!(
        (
            a.offered,
            a.answered,
            a.answered_within_sla,
            a.abandoned,
            a.handled,
            a.resolved
        ),
        (0, 3, 2, 0, 3, 1)
    );
    assert_eq!(a.aht_ms(), 60_000.0);
    assert_eq!(a.occupancy(), t.occupancy());
}

// --------------------------------------------------------------- explanation

#[test]
fn the_explanation_records_rule_score_and_priority_breakdown_with_the_sentiment_boost() {
    let mut q = queue("care", Strategy::LongestIdle, &[]);
    q.priority_boost_ms = 5_000;
    let mut s = Sim::new(config(), vec![q]);
    let angry = Enqueue {
        priority: PriorityInputs {
            tier: Some("gold".into()),
            sentiment: Some(-0.5),
            ..Default::default()
        },
        ..s.arrival(1, "care", Channel::Chat)
    };
    s.step(Input::Enqueue(angry));
    s.at(7_000);
    let o = one_offer(&s.login("a", &[], 100));
    let e = &o.explanation;
    assert_eq!(
        (e.queue.as_str(), e.rule, e.bullseye_step),
        ("care", Rule::AgentFreed, 0)
    );
    assert_eq!(
        e.priority,
        PriorityBreakdown {
            sla_target_ms: 60_000,
            tier_boost_ms: 30_000,
            topic_boost_ms: 5_000,
            sentiment_boost_ms: 30_000,
            rule_boost_ms: 0,
            waited_ms: 7_000
        }
    );
    // Virtual deadline 0 + 60 000 - 30 000 - 5 000 - 30 000 = -5 000; at 7 000
    // the conversation is 12 000 ms past it.
    assert_eq!(e.score_ms, 12_000);
    assert_eq!(e.candidates, vec![cand("a", 0, None)]);
    let summary = e.summary();
    assert!(summary.contains("agent_freed chose a"), "{summary}");
    assert!(summary.contains("upset customer +30000 ms"), "{summary}");
    assert!(summary.contains("tier +30000 ms"), "{summary}");
}

#[test]
fn an_upset_customer_overtakes_an_earlier_calm_one() {
    let mut s = Sim::new(config(), vec![queue("care", Strategy::LongestIdle, &[])]);
    s.enqueue(1, "care", Channel::Chat);
    s.at(1_000);
    let upset = Enqueue {
        priority: PriorityInputs {
            sentiment: Some(-1.0),
            ..Default::default()
        },
        ..s.arrival(2, "care", Channel::Chat)
    };
    s.step(Input::Enqueue(upset));
    s.at(2_000);
    // Deadlines: calm 60 000, upset 1 000 + 60 000 - 60 000 = 1 000.
    assert_eq!((s.conv(2).position, s.conv(1).position), (Some(1), Some(2)));
    assert_eq!((s.conv(2).score_ms, s.conv(1).score_ms), (1_000, -58_000));
    s.login("a", &[], 30);
    assert_eq!(s.agent("a").conversations, vec![c(2)]);
}

#[test]
fn a_freed_agent_takes_the_most_urgent_conversation_across_all_its_queues() {
    let mut s = Sim::new(
        config(),
        vec![
            queue("chatq", Strategy::LongestIdle, &[("chat", 1)]),
            queue("voiceq", Strategy::LongestIdle, &[("voice", 1)]),
        ],
    );
    s.login("both", &[("chat", 1), ("voice", 1)], 100);
    s.serve(1, "chatq", Channel::Voice);
    // Waiting: a chat since 0 (deadline 60 000), a call since 10 000
    // (deadline 30 000), a chat since 20 000 (deadline 80 000).
    s.enqueue(2, "chatq", Channel::Chat);
    s.at(10_000);
    s.enqueue(3, "voiceq", Channel::Voice);
    s.at(20_000);
    s.enqueue(4, "chatq", Channel::Chat);
    s.at(25_000);
    let o = one_offer(&s.wrap_up("both", 1));
    assert_eq!(
        (o.conv, o.queue.as_str(), o.explanation.rule),
        (c(3), "voiceq", Rule::AgentFreed)
    );
    assert_eq!(o.explanation.score_ms, -5_000);
    s.accept(&o);
    assert_eq!(
        pairs(&s.wrap_up("both", 3)),
        vec![(2, "both".into()), (4, "both".into())]
    );
}

// ------------------------------------------------- bullseye after requeueing

/// A queue needing fiber 4 that widens to fiber 3 after 10 s.
fn tiered() -> QueueConfig {
    let mut q = queue("tiered", Strategy::LongestIdle, &[("fiber", 4)]);
    q.bullseye = vec![BullseyeStep {
        after_ms: 10_000,
        relax_proficiency: 1,
        drop_skills: vec![],
    }];
    q
}

#[test]
fn a_bullseye_timer_left_from_the_previous_queue_does_not_widen_after_a_transfer() {
    // Regression: the step-1 timer scheduled in "tiered" fired after the
    // transfer into "flat" (which has no steps) and set step 1 there; placing
    // the conversation then indexed past the queue's step sets and panicked.
    let mut s = Sim::new(
        config(),
        vec![
            tiered(),
            queue("flat", Strategy::LongestIdle, &[("flat", 1)]),
        ],
    );
    s.login("expert", &[("fiber", 4)], 100);
    s.serve(1, "tiered", Channel::Voice);
    s.at(2_000);
    let out = s.step(Input::Transfer {
        agent: AgentId::new("expert"),
        conversation: c(1),
        to: TransferTarget::Queue(QueueId::new("flat")),
    });
    assert!(offers(&out).is_empty());
    assert!(offers(&s.at(10_000)).is_empty());
    assert_eq!(
        (s.conv(1).queue.as_str(), s.conv(1).phase),
        ("flat", Phase::Waiting)
    );
    let o = one_offer(&s.login("flatter", &[("flat", 1)], 100));
    assert_eq!((o.conv, o.explanation.bullseye_step), (c(1), 0));
}

#[test]
fn a_conversation_requeued_by_logout_is_at_the_bullseye_step_its_wait_reached() {
    // Regression: the step timer that fired while the conversation was
    // assigned ended the widening chain; requeued by the expert's logout it
    // stayed at step 0 for ever while a junior, eligible at step 1, idled.
    let mut s = Sim::new(config(), vec![tiered()]);
    s.login("expert", &[("fiber", 4)], 100);
    s.login("junior", &[("fiber", 3)], 100);
    assert_eq!(s.serve(1, "tiered", Channel::Voice).agent, "expert");
    assert!(s.at(10_000).is_empty());
    s.at(20_000);
    let out = s.step(Input::Logout {
        agent: AgentId::new("expert"),
    });
    assert!(out.contains(&Output::Requeued {
        conversation: c(1),
        from: AgentId::new("expert")
    }));
    let o = one_offer(&out);
    assert_eq!(
        (o.conv, o.agent.as_str(), o.explanation.bullseye_step),
        (c(1), "junior", 1)
    );
}

#[test]
fn a_conversation_transferred_to_an_agent_who_logs_out_resumes_widening() {
    let mut s = Sim::new(config(), vec![tiered()]);
    s.login("expert", &[("fiber", 4)], 100);
    s.login("expert2", &[("fiber", 4)], 100);
    s.serve(1, "tiered", Channel::Voice);
    s.serve(2, "tiered", Channel::Voice);
    // Transferred by name to expert2, who is on a call: it waits for expert2.
    s.at(1_000);
    s.step(Input::Transfer {
        agent: AgentId::new("expert"),
        conversation: c(1),
        to: TransferTarget::Agent(AgentId::new("expert2")),
    });
    s.step(Input::SetAway {
        agent: AgentId::new("expert"),
        away: true,
    });
    s.at(5_000);
    s.login("junior", &[("fiber", 3)], 100);
    s.step(Input::Logout {
        agent: AgentId::new("expert2"),
    });
    // Back in the queue at 5 s: step 0, junior not eligible yet; at 10 s it is.
    let c1 = s.conv(1);
    assert_eq!((c1.phase, c1.position), (Phase::Waiting, Some(1)));
    assert!(s.agent("junior").conversations.is_empty());
    let o = one_offer(&s.at(10_000));
    assert_eq!(
        (o.conv, o.agent.as_str(), o.explanation.bullseye_step),
        (c(1), "junior", 1)
    );
}

#[test]
fn redefining_a_queue_with_fewer_steps_while_a_conversation_is_offered_is_safe() {
    // Regression: only waiting conversations had their step clamped to the
    // new configuration; an offered one at step 1 came back at step 1 into
    // a queue with one step set and the router panicked.
    let mut s = Sim::new(config(), vec![tiered()]);
    s.login("junior", &[("fiber", 3)], 100);
    s.enqueue(1, "tiered", Channel::Voice);
    let o = one_offer(&s.at(10_000));
    assert_eq!(o.explanation.bullseye_step, 1);
    s.step(Input::UpsertQueue(queue(
        "tiered",
        Strategy::LongestIdle,
        &[("fiber", 3)],
    )));
    s.at(11_000);
    assert!(
        offers(&s.reject(&o)).is_empty(),
        "junior declined and is the only agent"
    );
    assert_eq!(s.conv(1).phase, Phase::Waiting);
    s.login("other", &[("fiber", 3)], 100);
    assert_eq!(s.agent("other").conversations, vec![c(1)]);
}

// ------------------------------------------------------------------ reroute

#[test]
fn a_channel_switch_keeps_the_place_and_counts_one_contact() {
    let mut s = Sim::new(config(), vec![queue("q", Strategy::LongestIdle, &[])]);
    // Two customers wait on chat; nobody is logged in.
    s.enqueue(1, "q", Channel::Chat);
    s.at(1_000);
    s.enqueue(2, "q", Channel::Chat);
    // The first calls in: routed again on voice, from its original time.
    s.at(2_000);
    let mut voice = s.arrival(1, "q", Channel::Voice);
    voice.enqueued_at = 0;
    let out = s.step(Input::Reroute(voice));
    assert!(out.contains(&Output::Queued {
        conversation: c(1),
        queue: QueueId::new("q"),
        channel: Channel::Voice
    }));
    assert_eq!(s.conv(1).channel, Channel::Voice);
    assert_eq!(
        s.conv(1).waited_ms,
        2_000,
        "the wait counts from the first contact"
    );
    assert_eq!(
        s.conv(1).position,
        Some(1),
        "voice's tighter SLA keeps it first"
    );
    let k = s.router.kpi_report(s.now);
    assert_eq!(k.total.offered, 2, "two contacts, not three");
    let by = |ch: Channel| {
        k.channels
            .iter()
            .find(|(c, _)| *c == ch)
            .map(|(_, c)| c.offered)
    };
    assert_eq!(
        (by(Channel::Chat), by(Channel::Voice)),
        (Some(1), Some(1)),
        "counted where it is routed now"
    );
    // Rerouting a conversation the router does not hold starts a new round.
    let out = s.step(Input::Reroute(s.arrival(3, "q", Channel::Email)));
    assert_eq!(out.len(), 1);
    assert_eq!(s.router.kpi_report(s.now).total.offered, 3);
    assert!(
        s.try_step(Input::Reroute(s.arrival(4, "nope", Channel::Email)))
            .is_err()
    );
}

// ------------------------------------------------------------- taking over

const GRACE: u64 = 30_000;

fn restore(s: &Sim, n: u64, agent: &str, channel: Channel) -> Input {
    Input::Restore(Restore {
        enqueue: Enqueue {
            enqueued_at: 0,
            ..s.arrival(n, "q", channel)
        },
        agent: AgentId::new(agent),
        since: 0,
    })
}

fn login_at(s: &mut Sim, id: &str, capacity: u16, session: &str) -> Vec<Output> {
    s.step(Input::Login {
        profile: profile(id, &[], capacity),
        away: false,
        session: Some(session.into()),
    })
}

#[test]
fn a_router_of_a_later_epoch_never_reuses_an_earlier_router_s_offer_ids() {
    let mut s = Sim::new(config(), vec![queue("q", Strategy::LongestIdle, &[])]);
    s.router = Router::of_epoch(config(), 7);
    s.step(Input::UpsertQueue(queue("q", Strategy::LongestIdle, &[])));
    s.login("a", &[], 100);
    let o = one_offer(&s.enqueue(1, "q", Channel::Chat));
    assert_eq!(o.offer, OfferId((7 << 32) | 1));
}

#[test]
fn a_held_router_queues_but_offers_nothing_until_it_resumes() {
    let mut s = Sim::new(config(), vec![queue("q", Strategy::LongestIdle, &[])]);
    s.router.hold(5_000);
    s.login("a", &[], 100);
    let out = s.enqueue(1, "q", Channel::Chat);
    assert!(offers(&out).is_empty(), "held: no offer in {out:?}");
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Queued { conversation, .. } if *conversation == c(1))),
        "held: still queued"
    );
    assert_eq!(s.conv(1).phase, Phase::Waiting);
    assert!(s.router.is_held());
    assert_eq!(pairs(&s.step(Input::Resume)), vec![(1, "a".into())]);
    assert!(!s.router.is_held());
}

#[test]
fn a_hold_ends_by_itself_at_its_deadline() {
    let mut s = Sim::new(config(), vec![queue("q", Strategy::LongestIdle, &[])]);
    s.router.hold(5_000);
    s.login("a", &[], 100);
    s.enqueue(1, "q", Channel::Chat);
    assert!(offers(&s.at(4_999)).is_empty());
    assert_eq!(pairs(&s.at(5_000)), vec![(1, "a".into())]);
    // A late Resume changes nothing.
    assert!(offers(&s.step(Input::Resume)).is_empty());
}

#[test]
fn restored_assignments_take_capacity_before_anything_is_offered() {
    let mut s = Sim::new(config(), vec![queue("q", Strategy::LongestIdle, &[])]);
    s.router.hold(5_000);
    s.login("a", &[], 100);
    let r = restore(&s, 1, "a", Channel::Voice);
    s.step(r.clone());
    // Told twice (a retry, or recovered twice): the same fact.
    s.step(r);
    s.enqueue(2, "q", Channel::Chat);
    assert!(
        offers(&s.step(Input::Resume)).is_empty(),
        "a holds a voice call"
    );
    assert_eq!(
        (s.agent("a").load, s.agent("a").state),
        (100, AgentState::Busy)
    );
    assert!(matches!(s.conv(1).phase, Phase::Assigned { .. }));
    assert_eq!(s.conv(1).agent, Some(AgentId::new("a")));
    // The restored assignment ends like any other.
    assert_eq!(pairs(&s.wrap_up("a", 1)), vec![(2, "a".into())]);
    // A restore for a conversation held otherwise is refused.
    let other = restore(&s, 2, "b", Channel::Chat);
    assert_eq!(
        s.try_step(other).unwrap_err(),
        CoreError::AlreadyRouted(c(2))
    );
}

#[test]
fn an_assignment_restored_before_its_agent_logs_in_waits_for_the_agent() {
    let mut s = Sim::new(config(), vec![queue("q", Strategy::LongestIdle, &[])]);
    s.router.hold(5_000);
    let r = restore(&s, 1, "b", Channel::Chat);
    s.step(r);
    assert_eq!(
        (s.agent("b").load, s.agent("b").state),
        (30, AgentState::Offline)
    );
    s.enqueue(2, "q", Channel::Chat);
    assert!(offers(&s.step(Input::Resume)).is_empty(), "b is absent");
    s.at(1_000);
    // b's desktop logs in again (through any node): it keeps c1 and takes c2.
    let o = one_offer(&login_at(&mut s, "b", 100, "n2"));
    assert_eq!((o.conv, o.agent.as_str()), (c(2), "b"));
    s.accept(&o);
    assert_eq!(s.agent("b").load, 60);
    // Its grace ends with nothing to do: it came back.
    let out = s.at(GRACE);
    assert!(out.is_empty(), "{out:?}");
    assert!(matches!(s.conv(1).phase, Phase::Assigned { .. }));
}

#[test]
fn an_absent_agent_s_conversations_wait_again_after_the_grace_keeping_their_place() {
    let mut s = Sim::new(config(), vec![queue("q", Strategy::LongestIdle, &[])]);
    s.router.hold(5_000);
    let r = restore(&s, 1, "b", Channel::Chat);
    s.step(r);
    s.step(Input::Resume);
    s.at(1_000);
    s.login("a", &[], 100);
    assert!(offers(&s.at(GRACE - 1)).is_empty());
    let out = s.at(GRACE);
    assert!(
        out.iter()
            .any(|o| matches!(o, Output::Requeued { conversation, .. } if *conversation == c(1))),
        "{out:?}"
    );
    let o = one_offer(&out);
    assert_eq!((o.conv, o.agent.as_str()), (c(1), "a"));
    assert_eq!(o.explanation.priority.waited_ms, GRACE, "its place kept");
    assert_eq!(s.agent("b").state, AgentState::Offline);
    assert_eq!(s.agent("b").load, 0);
}

#[test]
fn desktops_lost_with_a_node_give_their_offers_back_and_keep_their_assignments() {
    let mut s = Sim::new(config(), vec![queue("q", Strategy::LongestIdle, &[])]);
    login_at(&mut s, "a", 60, "n2");
    let o1 = s.serve(1, "q", Channel::Chat);
    assert_eq!(o1.agent, "a");
    let o2 = one_offer(&s.enqueue(2, "q", Channel::Chat));
    assert_eq!(o2.agent, "a");

    s.at(1_000);
    let out = s.step(Input::SessionsLost {
        session: "n2".into(),
    });
    assert!(
        out.iter().any(|o| matches!(o,
            Output::OfferRevoked { offer, reason: RevokeReason::AgentDisconnected, .. }
                if *offer == o2.offer)),
        "{out:?}"
    );
    assert_eq!(
        (s.agent("a").state, s.agent("a").load),
        (AgentState::Offline, 30)
    );
    assert_eq!(s.conv(2).phase, Phase::Waiting, "no penalty, no decline");

    // Another agent takes the offer that went back.
    let o = one_offer(&login_at(&mut s, "b", 100, "n3"));
    assert_eq!((o.conv, o.agent.as_str()), (c(2), "b"));
    s.accept(&o);
    // A session elsewhere is untouched by a second loss of n2.
    assert!(
        s.step(Input::SessionsLost {
            session: "n2".into()
        })
        .is_empty()
    );

    // a reconnects through n3 within the grace: it still holds c1.
    s.at(2_000);
    login_at(&mut s, "a", 60, "n3");
    assert_eq!(
        (s.agent("a").state, s.agent("a").load),
        (AgentState::Available, 30)
    );
    assert!(s.at(1_000 + GRACE).is_empty());
    assert!(matches!(s.conv(1).phase, Phase::Assigned { .. }));
}

// ------------------------------------------------- rules, wellbeing, KPIs

/// Rules as data pick the queue by segment and language and raise a
/// contract's priority; the explanation names the rule and its boost.
#[test]
fn routing_rules_pick_the_queue_and_boost_and_the_explanation_says_which() {
    use centralino_core::rules::{Conditions, Facts, RoutingRule};
    let mut s = Sim::new(
        config(),
        vec![
            queue("general", Strategy::LongestIdle, &[]),
            queue("business_it", Strategy::LongestIdle, &[]),
        ],
    );
    let rules = vec![
        RoutingRule {
            name: "business-italian".into(),
            when: Conditions {
                segments: vec!["business".into()],
                languages: vec!["it".into()],
                ..Default::default()
            },
            queue: Some(QueueId::new("business_it")),
            priority_boost_ms: 0,
        },
        RoutingRule {
            name: "premium-contract".into(),
            when: Conditions {
                contracts: vec!["premium".into()],
                ..Default::default()
            },
            queue: None,
            priority_boost_ms: 40_000,
        },
    ];
    // A rule naming an undefined queue is refused, with the field named.
    let mut bad = rules.clone();
    bad[0].queue = Some(QueueId::new("nowhere"));
    let err = s.try_step(Input::SetRules(bad)).unwrap_err();
    assert_eq!(err.field(), Some("rules.queue"), "{err}");
    s.step(Input::SetRules(rules));

    let business = Facts {
        segment: Some("business"),
        language: Some("it"),
        ..Facts::new("billing", Channel::Chat)
    };
    let c1 = s.router.classify(&business).unwrap();
    assert_eq!(
        (c1.queue.as_str(), c1.rule.as_deref(), c1.boost_ms),
        ("business_it", Some("business-italian"), 0)
    );
    let premium = Facts {
        contract: Some("PREMIUM"),
        ..Facts::new("billing", Channel::Voice)
    };
    let c2 = s.router.classify(&premium).unwrap();
    assert_eq!(
        (c2.queue.as_str(), c2.rule.as_deref(), c2.boost_ms),
        ("general", Some("premium-contract"), 40_000)
    );
    let plain = s
        .router
        .classify(&Facts::new("billing", Channel::Voice))
        .unwrap();
    assert_eq!((plain.queue.as_str(), plain.rule), ("general", None));

    // Two voice calls wait; the premium one, arriving 30 s later, is served
    // first: its deadline is 40 s earlier.
    s.enqueue(1, "general", Channel::Voice);
    s.at(30_000);
    let mut e = s.arrival(2, "general", Channel::Voice);
    e.priority.rule = c2.rule.clone();
    e.priority.rule_boost_ms = c2.boost_ms;
    s.step(Input::Enqueue(e));
    let o = one_offer(&s.login("a", &[], 100));
    assert_eq!(o.conv, c(2));
    assert_eq!(
        o.explanation.routing_rule.as_deref(),
        Some("premium-contract")
    );
    assert_eq!(o.explanation.priority.rule_boost_ms, 40_000);
    assert!(
        o.explanation
            .summary()
            .contains("rule premium-contract +40000 ms"),
        "{}",
        o.explanation.summary()
    );
}

/// An agent over the occupancy cap rests: no new offer until its busy time
/// in the window falls to the cap, then it takes the waiting work at once.
#[test]
fn an_agent_over_the_occupancy_cap_rests_until_it_is_under_again() {
    use centralino_core::occupancy::OccupancyCap;
    let cfg = RouterConfig {
        occupancy_cap: Some(OccupancyCap {
            max: 0.5,
            window_ms: 600_000,
        }),
        ..config()
    };
    let mut s = Sim::new(cfg, vec![queue("q", Strategy::LongestIdle, &[])]);
    s.login("a", &[], 100);
    // Busy from 0 to 400 s: over the cap (300 s of 600) from 300 s on.
    s.serve(1, "q", Channel::Voice);
    s.at(300_000);
    assert!(
        !s.agent("a").resting,
        "exactly at the cap is still under it"
    );
    let out = s.at(300_001);
    assert!(s.agent("a").resting);
    assert!(out.contains(&Output::AgentStateChanged {
        agent: AgentId::new("a"),
        state: AgentState::Resting,
        load: 100
    }));
    s.at(400_000);
    s.wrap_up("a", 1);
    let a = s.agent("a");
    assert_eq!((a.state, a.load, a.resting), (AgentState::Resting, 0, true));
    // A call arrives and waits: the agent rests although it is free.
    let out = s.enqueue(2, "q", Channel::Voice);
    assert!(offers(&out).is_empty(), "{out:?}");
    // 400 s busy (0 to 400 s) of a 600 s window: the window starts sliding
    // past busy time at 600 s, and the cap (300 s) is met at 700 s; not a
    // millisecond earlier.
    assert!(offers(&s.at(699_999)).is_empty());
    assert!(s.agent("a").resting);
    let out = s.at(700_000);
    assert_eq!(pairs(&out), vec![(2, "a".to_string())]);
    assert!(!s.agent("a").resting);
}

/// A transferred conversation is answered once for its queue: the transfer
/// rate is transfers over contacts, and its second leg is not a second ASA.
#[test]
fn a_transfer_is_counted_once_and_its_second_answer_is_not() {
    let mut s = Sim::new(
        config(),
        vec![
            queue("sales", Strategy::LongestIdle, &[]),
            queue("care", Strategy::LongestIdle, &[("care", 2)]),
        ],
    );
    s.login("a", &[], 100);
    s.at(2_000);
    s.serve(1, "sales", Channel::Voice);
    s.at(5_000);
    s.login("b", &[("care", 3)], 100);
    s.at(20_000);
    let out = s.step(Input::Transfer {
        agent: AgentId::new("a"),
        conversation: c(1),
        to: TransferTarget::Queue(QueueId::new("care")),
    });
    let o = one_offer(&out);
    assert_eq!(o.agent, "b");
    s.at(25_000);
    s.accept(&o);
    let t = s.router.kpi_report(s.now).total;
    assert_eq!((t.answered, t.transfers, t.wait_ms_total), (1, 1, 0));
    assert_eq!(t.transfer_rate(), 1.0);
    let b = s.router.kpi_report(s.now);
    let b = b.agents.iter().find(|(id, _)| id == "b").unwrap().1;
    assert_eq!(b.answered, 0, "b took over a contact already answered");
}

/// KPIs a router saved go on in the router that takes over: its counts add
/// to them, for agents and queues it meets later too.
#[test]
fn kpis_carried_from_an_earlier_router_go_on_counting() {
    let mut old = Sim::new(config(), vec![queue("q", Strategy::LongestIdle, &[])]);
    old.login("a", &[], 100);
    old.serve(1, "q", Channel::Voice);
    old.at(10_000);
    old.wrap_up("a", 1);
    let saved = old.router.kpi_report(old.now);

    let mut new = Sim {
        router: Router::new(config()),
        now: 20_000,
    };
    new.router.carry_kpis(&saved);
    // Before the queue and the agent exist here, their counts are kept.
    let early = new.router.kpi_report(new.now);
    assert_eq!(early.total, saved.total);
    assert_eq!(early.queues, saved.queues);
    new.step(Input::UpsertQueue(queue("q", Strategy::LongestIdle, &[])));
    new.login("a", &[], 100);
    new.serve(2, "q", Channel::Voice);
    new.at(30_000);
    new.wrap_up("a", 2);
    let k = new.router.kpi_report(new.now);
    assert_eq!((k.total.answered, k.total.handled), (2, 2));
    assert_eq!(k.queues.len(), 1);
    let a = k.agents.iter().find(|(id, _)| id == "a").unwrap().1;
    assert_eq!((a.answered, a.handle_ms_total), (2, 20_000));
    // 10 s logged in and busy before, 10 s of 10 s here.
    assert_eq!((a.busy_ms, a.staffed_ms), (20_000, 20_000));
}
