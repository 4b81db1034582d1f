//! Recovery: how a router that starts in the middle of a cluster's life
//! learns what the one before it knew, and how it lives with agents whose
//! desktops went away with a node.
//!
//! The router's state is not journaled: it is rebuilt from the facts that
//! customers and agents hold. A router that takes over starts *held*
//! ([`Router::hold`]): it takes logins, waiting conversations (enqueued
//! with their original waiting time, so they keep their place) and
//! assignments ([`Restore`]), but offers nothing, so that it never reserves
//! capacity an agent turns out to be using already (invariant 1). It
//! resumes on [`Input::Resume`](super::Input::Resume) (every node has
//! reported what it holds) or at the hold's deadline, whichever comes
//! first, with one matching pass: longest-idle agents first, each taking
//! the best conversation it is eligible for.
//!
//! An agent is *absent* when its desktop is gone but its work is not: its
//! node died ([`Input::SessionsLost`](super::Input::SessionsLost)), or an
//! assignment was restored before the agent logged in to this router. An
//! absent agent takes no new work; its open offers go back to the queues
//! at once (no decline, no penalty); its assignments wait
//! `reconnect_grace_ms` for the desktop to log in again, through any node,
//! and are queued again (keeping their place) if it does not.

use crate::agent::AgentProfile;
use crate::channel::FULL_CAPACITY;
use crate::error::{CoreError, Result};
use crate::ids::AgentId;
use crate::priority::Rank;
use crate::time::TimeMs;

use super::matching::{TakenBack, rank_inputs, reached_step};
use super::state::{AgentIx, AgentSlot, Entry, Phase, Timer};
use super::{Enqueue, Output, RevokeReason, Router};

/// An assignment that a router which started later must know about: the
/// conversation as it would be enqueued, the agent holding it and since
/// when.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Restore {
    pub enqueue: Enqueue,
    pub agent: AgentId,
    /// When the agent accepted it.
    pub since: TimeMs,
}

impl Router {
    /// Offers nothing until `until` or [`Input::Resume`](super::Input::Resume):
    /// see the module docs.
    pub fn hold(&mut self, until: TimeMs) {
        self.held_until = Some(until);
        self.timers.insert((until, Timer::HoldEnds));
    }

    /// Whether the router is held (see [`Router::hold`]).
    pub fn is_held(&self) -> bool {
        self.held_until.is_some()
    }

    /// Ends a hold: every agent, longest idle first, takes what it can.
    pub(super) fn resume(&mut self, now: TimeMs, out: &mut Vec<Output>) {
        if self.held_until.take().is_none() {
            return;
        }
        let mut order: Vec<AgentIx> = (0..self.agents.len() as AgentIx).collect();
        order.sort_by_key(|&ax| (self.agents[ax as usize].idle_since, ax));
        for ax in order {
            self.fill_agent(now, ax, out);
        }
    }

    /// The hold's deadline: resume if it is still this hold's.
    pub(super) fn hold_due(&mut self, at: TimeMs, out: &mut Vec<Output>) {
        if self.held_until == Some(at) {
            self.resume(at, out);
        }
    }

    pub(super) fn restore(&mut self, now: TimeMs, r: Restore, out: &mut Vec<Output>) -> Result<()> {
        let conv = r.enqueue.conversation;
        let qx = *self
            .queue_ix
            .get(&r.enqueue.queue)
            .ok_or_else(|| CoreError::UnknownQueue(r.enqueue.queue.clone()))?;
        if let Some(e) = self.entries.get(&conv) {
            // Told twice (a retry, or recovered twice): the same fact.
            let same = matches!(e.phase, Phase::Assigned { .. })
                && e.agent
                    .is_some_and(|ax| self.agents[ax as usize].id == r.agent);
            return if same {
                Ok(())
            } else {
                Err(CoreError::AlreadyRouted(conv))
            };
        }
        let ax = self.present_or_absent(now, &r.agent, out);
        let q = &self.queues[qx as usize];
        let e = &r.enqueue;
        let (deadline, breakdown) =
            rank_inputs(&self.cfg, q, e.channel, &e.priority, e.enqueued_at);
        let seq = self.next_seq;
        self.next_seq += 1;
        let step = reached_step(&q.cfg, now.saturating_sub(e.enqueued_at));
        let channel = e.channel;
        self.entries.insert(
            conv,
            Entry {
                queue: qx,
                channel,
                rank: Rank { deadline, seq },
                breakdown,
                inputs: e.priority.clone(),
                enqueued_at: e.enqueued_at,
                step,
                target: None,
                last_agent: None,
                declined: Vec::new(),
                // Counted by the router that assigned it.
                answered: true,
                phase: Phase::Assigned { since: r.since },
                agent: Some(ax),
            },
        );
        // The agent holds it, whatever its capacity says: this is a fact
        // to live with, not an offer to make (an agent over capacity is
        // offered nothing until it is under again).
        self.reindex(ax, |a| {
            a.load = a.load.saturating_add(channel.cost());
            a.holding.push(conv);
        });
        self.load_changed(now, ax);
        self.report(ax, out);
        Ok(())
    }

    /// The agent's slot for a restored assignment: as it is if the agent
    /// is logged in here, else logged in but absent, waiting for its
    /// desktop (with a placeholder profile until it logs in).
    fn present_or_absent(
        &mut self,
        now: TimeMs,
        agent: &AgentId,
        out: &mut Vec<Output>,
    ) -> AgentIx {
        let ax = match self.agent_ix.get(agent) {
            Some(&ax) if self.agents[ax as usize].logged_in => return ax,
            Some(&ax) => ax,
            None => {
                let ax = self.agents.len() as AgentIx;
                self.agent_ix.insert(agent.clone(), ax);
                let profile = AgentProfile {
                    id: agent.clone(),
                    name: agent.to_string(),
                    skills: Vec::new(),
                    languages: Vec::new(),
                    capacity: FULL_CAPACITY,
                };
                self.agents
                    .push(AgentSlot::new(profile, now, false, &self.cfg));
                self.kpis.add_agent(agent.as_str());
                ax
            }
        };
        self.reindex(ax, |a| {
            a.logged_in = true;
            a.staffed_since.get_or_insert(now);
        });
        self.make_absent(now, ax, out);
        ax
    }

    /// The desktops connected through `session` are gone: their agents
    /// become absent.
    pub(super) fn sessions_lost(&mut self, now: TimeMs, session: &str, out: &mut Vec<Output>) {
        let gone: Vec<AgentIx> = self
            .agents
            .iter()
            .enumerate()
            .filter(|(_, a)| {
                a.logged_in && a.absent_until.is_none() && a.session.as_deref() == Some(session)
            })
            .map(|(ax, _)| ax as AgentIx)
            .collect();
        for ax in gone {
            self.make_absent(now, ax, out);
        }
    }

    /// Marks a logged-in agent absent: its open offers go back to the
    /// queues, its assignments wait for it until the grace ends.
    fn make_absent(&mut self, now: TimeMs, ax: AgentIx, out: &mut Vec<Output>) {
        let until = now + self.cfg.reconnect_grace_ms;
        self.reindex(ax, |a| a.absent_until = Some(until));
        self.timers.insert((until, Timer::Absent(ax)));
        let offers: Vec<_> = self.agents[ax as usize]
            .holding
            .iter()
            .filter_map(|c| match self.entries.get(c).map(|e| e.phase) {
                Some(Phase::Offered { offer, .. }) => Some((*c, offer)),
                _ => None,
            })
            .collect();
        let agent = self.agents[ax as usize].id.clone();
        for (conv, offer) in offers {
            out.push(Output::OfferRevoked {
                offer,
                conversation: conv,
                agent: agent.clone(),
                reason: RevokeReason::AgentDisconnected,
            });
            self.take_back_offer(now, conv, offer, ax, TakenBack::Disconnected, out);
        }
        self.report(ax, out);
    }

    /// An absent agent's grace is over: unless it came back, it is logged
    /// out and what it held waits again.
    pub(super) fn absent_due(&mut self, at: TimeMs, ax: AgentIx, out: &mut Vec<Output>) {
        if self.agents[ax as usize].absent_until == Some(at) {
            self.end_session(at, ax, out);
        }
    }
}
