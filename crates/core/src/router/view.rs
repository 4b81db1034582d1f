//! Read-only views for supervisors and the self-service API.

use crate::agent::{AgentState, Skill};
use crate::channel::Channel;
use crate::ids::{AgentId, ConversationId, QueueId};
use crate::kpi::Counters;
use crate::queue::QueueConfig;
use crate::time::TimeMs;

use super::Router;
use super::state::Phase;

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct AgentView {
    pub id: AgentId,
    pub name: String,
    pub state: AgentState,
    pub load: u16,
    pub capacity: u16,
    pub skills: Vec<Skill>,
    pub conversations: Vec<ConversationId>,
    pub queues: Vec<QueueId>,
    /// Over the occupancy cap: offered nothing new until under it again.
    #[serde(default)]
    pub resting: bool,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct QueueView {
    pub config: QueueConfig,
    pub waiting: usize,
    pub oldest_wait_ms: u64,
    pub agents_logged_in: usize,
    pub agents_available: usize,
}

#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ConversationView {
    pub conversation: ConversationId,
    pub queue: QueueId,
    pub channel: Channel,
    pub phase: Phase,
    pub agent: Option<AgentId>,
    pub waited_ms: u64,
    pub score_ms: i64,
    /// 1-based place among the queue's waiting conversations, when waiting.
    pub position: Option<u32>,
}

impl Router {
    pub fn agent_views(&self) -> Vec<AgentView> {
        self.agents
            .iter()
            .map(|a| AgentView {
                id: a.id.clone(),
                name: a.profile.name.clone(),
                state: a.reported,
                load: a.load,
                capacity: a.profile.capacity,
                skills: a.profile.skills.clone(),
                conversations: a.holding.clone(),
                queues: a
                    .queues
                    .iter()
                    .map(|&(qx, _, _)| self.queue_id(qx).clone())
                    .collect(),
                resting: a.capped,
            })
            .collect()
    }

    pub fn queue_views(&self, now: TimeMs) -> Vec<QueueView> {
        self.queues
            .iter()
            .enumerate()
            .map(|(qx, q)| {
                let member = |a: &&super::state::AgentSlot| {
                    a.logged_in && a.queues.iter().any(|&(x, _, _)| x as usize == qx)
                };
                let oldest = q
                    .waiting
                    .iter()
                    .flat_map(|s| s.iter())
                    .flat_map(|m| m.values())
                    .filter_map(|c| self.entries.get(c))
                    .map(|e| now.saturating_sub(e.enqueued_at))
                    .max()
                    .unwrap_or(0);
                QueueView {
                    config: q.cfg.clone(),
                    waiting: q.waiting_len(),
                    oldest_wait_ms: oldest,
                    agents_logged_in: self.agents.iter().filter(member).count(),
                    agents_available: q.idle.len(),
                }
            })
            .collect()
    }

    /// Every conversation the router holds, optionally of one queue. The
    /// places in the queues are counted in one pass per queue (sorting its
    /// waiting conversations), not once per conversation: a queue of
    /// 30,000 would otherwise cost the router's mailbox seconds per call.
    pub fn conversation_views(
        &self,
        now: TimeMs,
        queue: Option<&QueueId>,
    ) -> Vec<ConversationView> {
        let mut positions: rustc_hash::FxHashMap<ConversationId, u32> = Default::default();
        for q in &self.queues {
            if queue.is_some_and(|id| id != &q.cfg.id) {
                continue;
            }
            let mut waiting: Vec<(crate::priority::Rank, ConversationId)> = q
                .waiting
                .iter()
                .flat_map(|s| s.iter())
                .flat_map(|m| m.iter().map(|(r, c)| (*r, *c)))
                .collect();
            waiting.sort_unstable();
            positions.extend(
                waiting
                    .into_iter()
                    .enumerate()
                    .map(|(i, (_, c))| (c, i as u32 + 1)),
            );
        }
        let mut v: Vec<_> = self
            .entries
            .iter()
            .filter(|(_, e)| queue.is_none_or(|q| self.queue_id(e.queue) == q))
            .map(|(c, e)| {
                // Not in its queue's sets: waiting for a named agent.
                let position = positions.get(c).copied().or_else(|| self.position(e));
                self.view_of(now, *c, e, position)
            })
            .collect();
        v.sort_by_key(|v| v.conversation);
        v
    }

    pub fn conversation_view(
        &self,
        now: TimeMs,
        conversation: ConversationId,
    ) -> Option<ConversationView> {
        let e = self.entries.get(&conversation)?;
        Some(self.view_of(now, conversation, e, self.position(e)))
    }

    /// 1-based place among its queue's waiting conversations, if waiting
    /// (counted: linear in the place).
    fn position(&self, e: &super::state::Entry) -> Option<u32> {
        (e.phase == Phase::Waiting).then(|| {
            let q = &self.queues[e.queue as usize];
            let ahead: usize = q
                .waiting
                .iter()
                .flat_map(|s| s.iter())
                .map(|m| m.range(..e.rank).count())
                .sum();
            ahead as u32 + 1
        })
    }

    fn view_of(
        &self,
        now: TimeMs,
        conversation: ConversationId,
        e: &super::state::Entry,
        position: Option<u32>,
    ) -> ConversationView {
        ConversationView {
            conversation,
            queue: self.queue_id(e.queue).clone(),
            channel: e.channel,
            phase: e.phase,
            agent: e.agent.map(|ax| self.agents[ax as usize].id.clone()),
            waited_ms: now.saturating_sub(e.enqueued_at),
            score_ms: e.rank.score(now),
            position,
        }
    }

    /// Every agent the router knows, in the order they first logged in,
    /// with the capacity its conversations take now (offered, assigned or
    /// in after-contact work). Cheaper than [`Router::agent_views`]: a
    /// driver that samples load after every step (what-if replay measures
    /// occupancy this way) copies nothing.
    pub fn agent_loads(&self) -> impl Iterator<Item = (&AgentId, u16)> + '_ {
        self.agents.iter().map(|a| (&a.id, a.load))
    }

    /// Number of conversations waiting (not offered) across all queues.
    pub fn waiting(&self) -> usize {
        self.queues.iter().map(|q| q.waiting_len()).sum::<usize>()
            + self.agents.iter().map(|a| a.personal.len()).sum::<usize>()
    }
}

impl Router {
    /// The live KPIs at `now`, keyed by queue id, channel and agent id,
    /// with those carried from an earlier router (see [`Router::carry_kpis`]).
    pub fn kpi_report(&self, now: TimeMs) -> crate::kpi::KpiReport {
        let k = &self.kpis;
        let mut total = k.total;
        let carried = |m: &std::collections::BTreeMap<String, Counters>| {
            m.iter().map(|(id, c)| (id.clone(), *c)).collect::<Vec<_>>()
        };
        let mut agents: Vec<(String, Counters)> = self
            .agents
            .iter()
            .zip(&k.agents)
            .map(|(a, c)| {
                let live = Counters {
                    busy_ms: a.busy.total_ms(now),
                    staffed_ms: a.staffed_ms(now),
                    ..Counters::default()
                };
                total.add(&live);
                let mut c = *c;
                c.add(&live);
                (a.id.to_string(), c)
            })
            .collect();
        let mut queues: Vec<(String, Counters)> = self
            .queues
            .iter()
            .zip(&k.queues)
            .map(|(q, c)| (q.cfg.id.to_string(), *c))
            .collect();
        queues.extend(carried(&k.carried_queues));
        agents.extend(carried(&k.carried_agents));
        crate::kpi::KpiReport {
            queues,
            channels: Channel::ALL
                .iter()
                .map(|&ch| (ch, k.channels[ch.index()]))
                .collect(),
            agents,
            total,
        }
    }

    /// Goes on counting from `report`, what an earlier router counted (its
    /// last saved [`Router::kpi_report`]): its counters are added to these,
    /// those of agents and queues this router has not seen yet kept until
    /// it does.
    pub fn carry_kpis(&mut self, report: &crate::kpi::KpiReport) {
        let k = &mut self.kpis;
        k.total.add(&report.total);
        for (ch, c) in &report.channels {
            k.channels[ch.index()].add(c);
        }
        for (id, c) in &report.queues {
            match self.queue_ix.get(&QueueId::new(id)) {
                Some(&qx) => k.queues[qx as usize].add(c),
                None => k.carried_queues.entry(id.clone()).or_default().add(c),
            }
        }
        for (id, c) in &report.agents {
            match self.agent_ix.get(&AgentId::new(id)) {
                Some(&ax) => k.agents[ax as usize].add(c),
                None => k.carried_agents.entry(id.clone()).or_default().add(c),
            }
        }
    }
}
