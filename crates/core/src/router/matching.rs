//! Matching: the two directions in which a pairing is found.
//!
//! - Customer side ([`Router::place`]): a conversation starts (or resumes)
//!   waiting; the queue's strategy picks among the routable agents, in the
//!   queue's idle index order. If none fits, it joins the waiting set.
//! - Agent side ([`Router::fill_agent`]): an agent gains room; it takes the
//!   highest-ranked eligible conversation across all its queues (and the
//!   conversations transferred to it by name), and again while room is left.
//!
//! Every input that adds waiting work or frees capacity ends in one of the
//! two, which is how invariant 5 holds after every step.

use std::collections::BTreeMap;

use crate::agent::AgentProfile;
use crate::channel::Channel;
use crate::error::{CoreError, Result};
use crate::explain::{Candidate, Explanation, MAX_CANDIDATES, PassedOver, Rule};
use crate::history::TransferTarget;
use crate::ids::{AgentId, ConversationId, OfferId, QueueId};
use crate::priority::{PriorityInputs, Rank};
use crate::queue::{QueueConfig, Strategy};
use crate::time::TimeMs;

use super::state::{AgentIx, AgentSlot, Entry, Phase, QueueIx, QueueState, Timer, WaitSlot};
use super::{Enqueue, Output, RevokeReason, Router};

impl Router {
    pub(super) fn upsert_queue(
        &mut self,
        now: TimeMs,
        cfg: QueueConfig,
        out: &mut Vec<Output>,
    ) -> Result<()> {
        cfg.validate()?;
        // Take every agent out of the indexes and every waiting conversation
        // of this queue out of its set; rebuild both under the new config.
        for ax in 0..self.agents.len() as AgentIx {
            self.unindex(ax);
        }
        let qx = match self.queue_ix.get(&cfg.id) {
            Some(&qx) => {
                let old = std::mem::replace(&mut self.queues[qx as usize], QueueState::new(cfg));
                let steps = self.queues[qx as usize].cfg.max_step();
                // Offered, assigned and scheduled conversations come back to
                // the waiting sets later, at their step: it must exist in the
                // new configuration too (the waiting ones are clamped below).
                for e in self.entries.values_mut().filter(|e| e.queue == qx) {
                    e.step = e.step.min(steps);
                }
                for (_, conv) in old
                    .waiting
                    .into_iter()
                    .flat_map(|s| s.into_iter())
                    .flatten()
                {
                    let Some(e) = self.entries.get_mut(&conv) else {
                        continue;
                    };
                    e.step = e.step.min(steps);
                    let q = &self.queues[qx as usize];
                    let (deadline, breakdown) =
                        rank_inputs(&self.cfg, q, e.channel, &e.inputs, e.enqueued_at);
                    e.rank.deadline = deadline;
                    e.breakdown = breakdown;
                    self.queues[qx as usize].waiting[e.step as usize][e.channel.index()]
                        .insert(e.rank, conv);
                }
                qx
            }
            None => {
                let qx = self.queues.len() as QueueIx;
                self.queue_ix.insert(cfg.id.clone(), qx);
                self.kpis.add_queue(cfg.id.as_str());
                self.queues.push(QueueState::new(cfg));
                qx
            }
        };
        let cfg = &self.queues[qx as usize].cfg;
        for a in &mut self.agents {
            a.queues.retain(|(q, _, _)| *q != qx);
            if let Some(level) = cfg.level_of(&a.profile) {
                a.queues.push((qx, level, cfg.proficiency_of(&a.profile)));
            }
        }
        for ax in 0..self.agents.len() as AgentIx {
            self.reindex(ax, |_| {});
        }
        for ax in 0..self.agents.len() as AgentIx {
            self.fill_agent(now, ax, out);
        }
        Ok(())
    }

    pub(super) fn login(
        &mut self,
        now: TimeMs,
        profile: AgentProfile,
        away: bool,
        session: Option<String>,
        out: &mut Vec<Output>,
    ) -> Result<()> {
        profile.validate()?;
        let queues = self.memberships(&profile);
        let ax = match self.agent_ix.get(&profile.id) {
            Some(&ax) => ax,
            None => {
                let ax = self.agents.len() as AgentIx;
                self.agent_ix.insert(profile.id.clone(), ax);
                self.agents
                    .push(AgentSlot::new(profile.clone(), now, away, &self.cfg));
                self.kpis.add_agent(profile.id.as_str());
                ax
            }
        };
        self.reindex(ax, |a| {
            if !a.logged_in {
                a.idle_since = now;
                a.staffed_since = Some(now);
            }
            a.logged_in = true;
            // Back: an absent agent keeps what it held (see `recovery`).
            a.absent_until = None;
            a.session = session;
            a.away = away;
            a.profile = profile;
            a.queues = queues;
        });
        self.report(ax, out);
        self.fill_agent(now, ax, out);
        Ok(())
    }

    pub(super) fn logout(
        &mut self,
        now: TimeMs,
        agent: &AgentId,
        out: &mut Vec<Output>,
    ) -> Result<()> {
        let ax = self.agent(agent)?;
        self.end_session(now, ax, out);
        Ok(())
    }

    /// The agent is gone: its offers and assignments go back to the queues
    /// (keeping their place), and so do conversations transferred to it.
    pub(super) fn end_session(&mut self, now: TimeMs, ax: AgentIx, out: &mut Vec<Output>) {
        let agent = self.agents[ax as usize].id.clone();
        let agent = &agent;
        let holding = std::mem::take(&mut self.agents[ax as usize].holding);
        let personal = std::mem::take(&mut self.agents[ax as usize].personal);
        self.reindex(ax, |a| {
            a.logged_in = false;
            a.absent_until = None;
            a.load = 0;
            a.staffed_ms = a.staffed_ms(now);
            a.staffed_since = None;
        });
        self.load_changed(now, ax);
        let mut requeue = Vec::new();
        for conv in holding {
            let Some(e) = self.entries.get_mut(&conv) else {
                continue;
            };
            match e.phase {
                Phase::Offered { offer, .. } => {
                    self.offers.remove(&offer);
                    out.push(Output::OfferRevoked {
                        offer,
                        conversation: conv,
                        agent: agent.clone(),
                        reason: RevokeReason::AgentLoggedOut,
                    });
                }
                Phase::Assigned { .. } => out.push(Output::Requeued {
                    conversation: conv,
                    from: agent.clone(),
                }),
                Phase::WrapUp { .. } | Phase::Scheduled | Phase::Waiting => {
                    self.entries.remove(&conv);
                    self.declining.remove(&conv);
                    continue;
                }
            }
            e.phase = Phase::Waiting;
            e.agent = None;
            e.target = None;
            e.last_agent = None;
            requeue.push((e.rank, conv));
        }
        for (rank, conv) in personal {
            if let Some(e) = self.entries.get_mut(&conv) {
                e.target = None;
                requeue.push((rank, conv));
            }
        }
        self.report(ax, out);
        requeue.sort();
        for (_, conv) in requeue {
            // Back in its queue after waiting since `enqueued_at`: at the
            // bullseye step that wait has reached, with the next step timed.
            // The timer chain stopped while the conversation was assigned or
            // meant for this agent by name, so without this it never widened.
            if let Some(e) = self.entries.get_mut(&conv) {
                e.step = reached_step(
                    &self.queues[e.queue as usize].cfg,
                    now.saturating_sub(e.enqueued_at),
                );
            }
            self.schedule_bullseye(conv);
            self.place(now, conv, out);
        }
    }

    pub(super) fn set_away(
        &mut self,
        now: TimeMs,
        agent: &AgentId,
        away: bool,
        out: &mut Vec<Output>,
    ) -> Result<()> {
        let ax = self.agent(agent)?;
        self.reindex(ax, |a| a.away = away);
        self.report(ax, out);
        self.fill_agent(now, ax, out);
        Ok(())
    }

    /// Routes a conversation again (it changed channel, or a callback
    /// replaces its waiting): whatever the router held for it is withdrawn,
    /// and it is queued anew keeping its place. Not a new contact for the
    /// KPIs.
    pub(super) fn reroute(&mut self, now: TimeMs, e: Enqueue, out: &mut Vec<Output>) -> Result<()> {
        if !self.queue_ix.contains_key(&e.queue) {
            return Err(CoreError::UnknownQueue(e.queue));
        }
        let previous = self
            .entries
            .get(&e.conversation)
            .map(|p| (p.queue, p.channel));
        if previous.is_some() {
            self.withdraw(now, e.conversation, false, out)?;
        }
        let conversation = e.conversation;
        self.enqueue_as(now, e, previous.is_none(), out)?;
        // One contact, counted where it is routed now.
        if let (Some((qx, channel)), Some(e)) = (previous, self.entries.get(&conversation)) {
            let (new_q, new_ch) = (e.queue, e.channel);
            self.kpis.each(qx, channel, None, |c| {
                c.offered = c.offered.saturating_sub(1)
            });
            self.kpis.offered(new_q, new_ch);
        }
        Ok(())
    }

    pub(super) fn enqueue(&mut self, now: TimeMs, e: Enqueue, out: &mut Vec<Output>) -> Result<()> {
        self.enqueue_as(now, e, true, out)
    }

    fn enqueue_as(
        &mut self,
        now: TimeMs,
        e: Enqueue,
        new_contact: bool,
        out: &mut Vec<Output>,
    ) -> Result<()> {
        let mut freed = None;
        if let Some(existing) = self.entries.get(&e.conversation) {
            // The customer came back while their agent was still wrapping
            // up: that wrap-up ends now, and a new routing round starts
            // (continuity will prefer the same agent).
            let (Phase::WrapUp { .. }, Some(ax)) = (existing.phase, existing.agent) else {
                return Err(CoreError::AlreadyRouted(e.conversation));
            };
            let channel = existing.channel;
            self.entries.remove(&e.conversation);
            self.declining.remove(&e.conversation);
            self.release(now, ax, e.conversation, channel);
            self.report(ax, out);
            freed = Some(ax);
        }
        let qx = *self
            .queue_ix
            .get(&e.queue)
            .ok_or_else(|| CoreError::UnknownQueue(e.queue.clone()))?;
        let q = &self.queues[qx as usize];
        let (deadline, breakdown) =
            rank_inputs(&self.cfg, q, e.channel, &e.priority, e.enqueued_at);
        let seq = self.next_seq;
        self.next_seq += 1;
        let step = reached_step(&q.cfg, now.saturating_sub(e.enqueued_at));
        let last_agent = e
            .last_agent
            .and_then(|(id, at)| self.agent_ix.get(&id).map(|&ax| (ax, at)))
            .filter(|(_, at)| now.saturating_sub(*at) <= self.cfg.continuity_window_ms);
        let scheduled = e.not_before.filter(|t| *t > now);
        self.entries.insert(
            e.conversation,
            Entry {
                queue: qx,
                channel: e.channel,
                rank: Rank { deadline, seq },
                breakdown,
                inputs: e.priority,
                enqueued_at: e.enqueued_at,
                step,
                target: None,
                last_agent,
                declined: Vec::new(),
                answered: false,
                phase: if scheduled.is_some() {
                    Phase::Scheduled
                } else {
                    Phase::Waiting
                },
                agent: None,
            },
        );
        if new_contact {
            self.kpis.offered(qx, e.channel);
        }
        out.push(Output::Queued {
            conversation: e.conversation,
            queue: e.queue,
            channel: e.channel,
        });
        self.schedule_bullseye(e.conversation);
        match scheduled {
            Some(t) => {
                self.timers.insert((t, Timer::Scheduled(e.conversation)));
            }
            None => self.place(now, e.conversation, out),
        }
        if let Some(ax) = freed {
            self.fill_agent(now, ax, out);
        }
        Ok(())
    }

    pub(super) fn withdraw(
        &mut self,
        now: TimeMs,
        conv: ConversationId,
        abandoned: bool,
        out: &mut Vec<Output>,
    ) -> Result<()> {
        let e = self
            .entries
            .remove(&conv)
            .ok_or(CoreError::UnknownConversation(conv))?;
        self.declining.remove(&conv);
        match e.phase {
            Phase::Waiting => self.remove_waiting(&e),
            Phase::Offered { offer, .. } => {
                self.offers.remove(&offer);
                if let Some(ax) = e.agent {
                    let agent = self.agents[ax as usize].id.clone();
                    out.push(Output::OfferRevoked {
                        offer,
                        conversation: conv,
                        agent,
                        reason: RevokeReason::Withdrawn,
                    });
                }
            }
            Phase::Scheduled | Phase::Assigned { .. } | Phase::WrapUp { .. } => {}
        }
        if abandoned
            && !e.answered
            && matches!(
                e.phase,
                Phase::Waiting | Phase::Offered { .. } | Phase::Scheduled
            )
        {
            self.kpis.abandoned(e.queue, e.channel);
        }
        if let Some(ax) = e.agent {
            self.release(now, ax, conv, e.channel);
            self.report(ax, out);
            self.fill_agent(now, ax, out);
        }
        Ok(())
    }

    pub(super) fn accept(
        &mut self,
        now: TimeMs,
        agent: &AgentId,
        offer: OfferId,
        out: &mut Vec<Output>,
    ) -> Result<()> {
        let ax = self.agent(agent)?;
        let conv = self.open_offer(ax, offer)?;
        let Some(e) = self.entries.get_mut(&conv) else {
            return Err(CoreError::UnknownOffer(offer));
        };
        self.offers.remove(&offer);
        let bullseye = bullseye_timer(&self.queues[e.queue as usize].cfg, conv, e);
        e.phase = Phase::Assigned { since: now };
        let waited_ms = now.saturating_sub(e.enqueued_at);
        let within = waited_ms <= e.breakdown.sla_target_ms;
        let (qx, channel) = (e.queue, e.channel);
        let first_answer = !std::mem::replace(&mut e.answered, true);
        // An assigned conversation no longer widens (a transfer or a requeue
        // schedules its next step afresh): drop the pending step timer now
        // rather than keep it in the timer set until it fires stale.
        if let Some(timer) = bullseye {
            self.timers.remove(&timer);
        }
        if first_answer {
            self.kpis.answered(qx, channel, ax, waited_ms, within);
        }
        self.answers.entry(qx).or_default().answered(now);
        out.push(Output::Assigned {
            offer,
            conversation: conv,
            agent: agent.clone(),
            waited_ms,
        });
        self.report(ax, out);
        Ok(())
    }

    pub(super) fn reject(
        &mut self,
        now: TimeMs,
        agent: &AgentId,
        offer: OfferId,
        reason: String,
        out: &mut Vec<Output>,
    ) -> Result<()> {
        let ax = self.agent(agent)?;
        let conv = self.open_offer(ax, offer)?;
        out.push(Output::Rejected {
            offer,
            conversation: conv,
            agent: agent.clone(),
            reason,
        });
        self.take_back_offer(now, conv, offer, ax, TakenBack::Declined, out);
        Ok(())
    }

    /// An offer went unanswered: it moves on and the agent is set away.
    pub(super) fn expire_offer(&mut self, now: TimeMs, offer: OfferId, out: &mut Vec<Output>) {
        let Some(&conv) = self.offers.get(&offer) else {
            return;
        };
        let Some(ax) = self.entries.get(&conv).and_then(|e| e.agent) else {
            return;
        };
        let agent = self.agents[ax as usize].id.clone();
        out.push(Output::OfferRevoked {
            offer,
            conversation: conv,
            agent,
            reason: RevokeReason::TimedOut,
        });
        self.take_back_offer(now, conv, offer, ax, TakenBack::TimedOut, out);
    }

    /// The offer goes back: the conversation waits (or is offered to the
    /// next agent), the agent's capacity is free again. A decline keeps the
    /// agent from being offered it again for `decline_ttl_ms`; a missed
    /// offer sets the agent away.
    pub(super) fn take_back_offer(
        &mut self,
        now: TimeMs,
        conv: ConversationId,
        offer: OfferId,
        ax: AgentIx,
        why: TakenBack,
        out: &mut Vec<Output>,
    ) {
        self.offers.remove(&offer);
        let ttl = self.cfg.decline_ttl_ms;
        let Some(e) = self.entries.get_mut(&conv) else {
            return;
        };
        e.phase = Phase::Waiting;
        e.agent = None;
        let channel = e.channel;
        let timed_out = why == TakenBack::TimedOut;
        if why == TakenBack::Declined && ttl > 0 {
            e.declined.push((ax, now + ttl));
            self.declining.insert(conv);
            self.timers
                .insert((now + ttl, Timer::DeclineExpiry(conv, ax)));
        }
        self.release(now, ax, conv, channel);
        // Back in the indexes before `place`, so that the explanation lists
        // the agent who let the offer go (and why it was passed over).
        self.reindex(ax, |a| a.away |= timed_out);
        self.report(ax, out);
        self.place(now, conv, out);
        self.fill_agent(now, ax, out);
    }

    pub(super) fn transfer(
        &mut self,
        now: TimeMs,
        agent: &AgentId,
        conv: ConversationId,
        to: TransferTarget,
        out: &mut Vec<Output>,
    ) -> Result<()> {
        let ax = self.agent(agent)?;
        let e = self.entry(conv)?;
        if !matches!(e.phase, Phase::Assigned { .. }) || e.agent != Some(ax) {
            return Err(CoreError::NotAssigned {
                conversation: conv,
                agent: agent.clone(),
            });
        }
        let (qx, target) = match &to {
            TransferTarget::Queue(q) => (
                *self
                    .queue_ix
                    .get(q)
                    .ok_or_else(|| CoreError::UnknownQueue(q.clone()))?,
                None,
            ),
            TransferTarget::Agent(a) => (e.queue, Some(self.agent(a)?)),
        };
        let (channel, from_queue) = (e.channel, e.queue);
        let q = &self.queues[qx as usize];
        let (deadline, breakdown) = rank_inputs(&self.cfg, q, channel, &e.inputs, e.enqueued_at);
        let step = if target.is_some() {
            0
        } else {
            reached_step(&q.cfg, now.saturating_sub(e.enqueued_at))
        };
        self.kpis.transferred(from_queue, channel, ax);
        let Some(e) = self.entries.get_mut(&conv) else {
            return Err(CoreError::UnknownConversation(conv));
        };
        e.queue = qx;
        e.rank.deadline = deadline;
        e.breakdown = breakdown;
        e.step = step;
        e.target = target;
        e.last_agent = None;
        e.declined.clear();
        self.declining.remove(&conv);
        e.phase = Phase::Waiting;
        e.agent = None;
        out.push(Output::Transferred {
            conversation: conv,
            from: agent.clone(),
            to,
        });
        self.release(now, ax, conv, channel);
        self.sync_index(ax);
        self.report(ax, out);
        self.schedule_bullseye(conv);
        self.place(now, conv, out);
        self.fill_agent(now, ax, out);
        Ok(())
    }

    pub(super) fn wrap_up(
        &mut self,
        now: TimeMs,
        agent: &AgentId,
        conv: ConversationId,
        out: &mut Vec<Output>,
    ) -> Result<()> {
        let ax = self.agent(agent)?;
        let e = self
            .entries
            .get_mut(&conv)
            .ok_or(CoreError::UnknownConversation(conv))?;
        if let (Phase::WrapUp { .. }, Some(holder)) = (e.phase, e.agent)
            && holder == ax
        {
            // Already wrapped up by this agent: a retry changes nothing.
            return Ok(());
        }
        let (Phase::Assigned { since }, Some(holder)) = (e.phase, e.agent) else {
            return Err(CoreError::NotAssigned {
                conversation: conv,
                agent: agent.clone(),
            });
        };
        if holder != ax {
            return Err(CoreError::NotAssigned {
                conversation: conv,
                agent: agent.clone(),
            });
        }
        let (qx, channel) = (e.queue, e.channel);
        let acw = self.cfg.acw_ms[channel.index()];
        self.kpis
            .handled(qx, channel, ax, now.saturating_sub(since));
        if acw == 0 {
            self.entries.remove(&conv);
            self.declining.remove(&conv);
            self.release(now, ax, conv, channel);
            self.report(ax, out);
            self.fill_agent(now, ax, out);
        } else {
            e.phase = Phase::WrapUp { until: now + acw };
            self.timers.insert((now + acw, Timer::AcwEnd(conv)));
            self.report(ax, out);
        }
        Ok(())
    }

    /// Customer side: `conv` has just become `Waiting` and is in no set;
    /// offer it to the best eligible routable agent, or let it wait.
    pub(super) fn place(&mut self, now: TimeMs, conv: ConversationId, out: &mut Vec<Output>) {
        let Some(e) = self.entries.get(&conv) else {
            return;
        };
        debug_assert_eq!(e.phase, Phase::Waiting);
        if self.held_until.is_some() {
            self.park(conv);
            return;
        }
        if let Some(tx) = e.target {
            let t = &self.agents[tx as usize];
            if t.fits(e.channel) && !e.declined_by(tx) {
                let cands = vec![Candidate {
                    agent: t.id.clone(),
                    key: 0,
                    passed_over: None,
                }];
                self.offer(now, conv, tx, Rule::DirectTransfer, cands, out);
            } else {
                self.park(conv);
            }
            return;
        }
        if let Some((la, at)) = e.last_agent {
            let a = &self.agents[la as usize];
            if now.saturating_sub(at) <= self.cfg.continuity_window_ms
                && a.fits(e.channel)
                && !e.declined_by(la)
            {
                let cands = vec![Candidate {
                    agent: a.id.clone(),
                    key: 0,
                    passed_over: None,
                }];
                self.offer(now, conv, la, Rule::Continuity, cands, out);
                return;
            }
        }
        // The explanation lists the chosen agent first (always, however many
        // were passed over before it), then up to `MAX_CANDIDATES - 1` others
        // in the order considered, each with the strategy's primary key (idle
        // since, inverted proficiency, load or last offer id; the secondary
        // key only breaks ties and is not shown).
        let q = &self.queues[e.queue as usize];
        let mut chosen = None;
        let mut cands = Vec::with_capacity(MAX_CANDIDATES);
        for &(key, _, ax) in &q.idle {
            let a = &self.agents[ax as usize];
            let note = if chosen.is_some() {
                PassedOver::RankedLower
            } else if !a
                .queues
                .iter()
                .any(|&(qx, level, _)| qx == e.queue && level <= e.step)
            {
                PassedOver::SkillsNotMet
            } else if !a.fits(e.channel) {
                PassedOver::NoCapacity
            } else if e.declined_by(ax) {
                PassedOver::DeclinedEarlier
            } else {
                chosen = Some(ax);
                cands.insert(
                    0,
                    Candidate {
                        agent: a.id.clone(),
                        key,
                        passed_over: None,
                    },
                );
                continue;
            };
            if cands.len() < MAX_CANDIDATES - usize::from(chosen.is_none()) {
                cands.push(Candidate {
                    agent: a.id.clone(),
                    key,
                    passed_over: Some(note),
                });
            } else if chosen.is_some() {
                break;
            }
        }
        match chosen {
            Some(ax) => {
                let rule = strategy_rule(q.cfg.strategy);
                self.offer(now, conv, ax, rule, cands, out);
            }
            None => self.park(conv),
        }
    }

    /// Puts a waiting conversation in its set: its queue's at its step and
    /// channel, or its named agent's personal one.
    fn park(&mut self, conv: ConversationId) {
        let Some(e) = self.entries.get(&conv) else {
            return;
        };
        let (rank, step, ch, qx) = (e.rank, e.step, e.channel, e.queue);
        match e.target {
            Some(tx) => {
                self.agents[tx as usize].personal.insert(rank, conv);
            }
            None => {
                self.queues[qx as usize].waiting[step as usize][ch.index()].insert(rank, conv);
            }
        }
    }

    /// Agent side: while the agent is routable, give it the best eligible
    /// waiting conversation across its queues and its personal ones.
    pub(super) fn fill_agent(&mut self, now: TimeMs, ax: AgentIx, out: &mut Vec<Output>) {
        while self.held_until.is_none() && self.agents[ax as usize].routable() {
            let Some(conv) = self.best_for(ax) else { break };
            let Some(slot) = self.entries.get(&conv).map(Entry::slot) else {
                break;
            };
            self.remove_waiting_at(slot);
            let cands = vec![Candidate {
                agent: self.agents[ax as usize].id.clone(),
                key: 0,
                passed_over: None,
            }];
            let rule = if slot.target.is_some() {
                Rule::DirectTransfer
            } else {
                Rule::AgentFreed
            };
            self.offer(now, conv, ax, rule, cands, out);
        }
        self.sync_index(ax);
    }

    /// Puts the agent in its queues' idle indexes if it is routable and not
    /// there yet (or takes it out if it is there but no longer routable).
    fn sync_index(&mut self, ax: AgentIx) {
        let a = &self.agents[ax as usize];
        if a.indexed != a.routable() {
            self.reindex(ax, |_| {});
        }
    }

    /// The highest-ranked conversation the agent is eligible for.
    pub(super) fn best_for(&self, ax: AgentIx) -> Option<ConversationId> {
        let a = &self.agents[ax as usize];
        let free = a.free();
        let mut best: Option<(Rank, ConversationId)> = None;
        // `mixed`: the set holds several channels (the personal one), so each
        // entry's cost is checked; a queue's set is one channel that fits.
        // Entries are looked up only when they may carry a decline: a
        // freed agent's choice then touches no conversation but the chosen.
        let consider = |set: &BTreeMap<Rank, ConversationId>,
                        mixed: bool,
                        best: &mut Option<(Rank, ConversationId)>| {
            for (rank, conv) in set {
                if best.is_some_and(|(b, _)| *rank >= b) {
                    return;
                }
                if mixed || self.declining.contains(conv) {
                    let Some(e) = self.entries.get(conv) else {
                        continue;
                    };
                    if e.channel.cost() > free || e.declined_by(ax) {
                        continue;
                    }
                }
                *best = Some((*rank, *conv));
                return;
            }
        };
        consider(&a.personal, true, &mut best);
        for &(qx, level, _) in &a.queues {
            let q = &self.queues[qx as usize];
            for step in q.waiting.iter().skip(level as usize) {
                for ch in Channel::ALL {
                    if ch.cost() <= free && !step[ch.index()].is_empty() {
                        consider(&step[ch.index()], false, &mut best);
                    }
                }
            }
        }
        best.map(|(_, conv)| conv)
    }

    fn offer(
        &mut self,
        now: TimeMs,
        conv: ConversationId,
        ax: AgentIx,
        rule: Rule,
        candidates: Vec<Candidate>,
        out: &mut Vec<Output>,
    ) {
        let offer = OfferId(self.next_offer);
        self.next_offer += 1;
        let expires_at = now + self.cfg.offer_timeout_ms;
        let Some(e) = self.entries.get_mut(&conv) else {
            return;
        };
        e.phase = Phase::Offered { offer, expires_at };
        e.agent = Some(ax);
        let channel = e.channel;
        let queue = self.queues[e.queue as usize].cfg.id.clone();
        let mut priority = e.breakdown;
        priority.waited_ms = now.saturating_sub(e.enqueued_at);
        let explanation = Box::new(Explanation {
            queue: queue.clone(),
            rule,
            score_ms: e.rank.score(now),
            priority,
            bullseye_step: e.step,
            routing_rule: e.inputs.rule.clone(),
            candidates,
        });
        self.reindex(ax, |a| {
            a.load += channel.cost();
            a.last_offer = offer.0;
            a.holding.push(conv);
        });
        self.load_changed(now, ax);
        debug_assert!(self.agents[ax as usize].load <= self.agents[ax as usize].profile.capacity);
        self.offers.insert(offer, conv);
        self.offer_expiries.push_back((expires_at, offer));
        let agent = self.agents[ax as usize].id.clone();
        out.push(Output::Offered {
            offer,
            conversation: conv,
            agent,
            channel,
            queue,
            expires_at,
            explanation,
        });
        self.report(ax, out);
    }

    /// Frees the capacity `conv` took from the agent. The agent leaves the
    /// idle indexes; the caller must end with [`Router::fill_agent`], which
    /// gives it work first and indexes it again only if room is left (one
    /// index update per decision instead of three).
    pub(super) fn release(
        &mut self,
        now: TimeMs,
        ax: AgentIx,
        conv: ConversationId,
        channel: Channel,
    ) {
        self.unindex(ax);
        let a = &mut self.agents[ax as usize];
        let before = a.holding.len();
        a.holding.retain(|c| *c != conv);
        if a.holding.len() < before {
            a.load = a.load.saturating_sub(channel.cost());
        }
        if a.load == 0 {
            a.idle_since = now;
        }
        self.load_changed(now, ax);
    }

    /// After the agent's load changed: its busy time, and the occupancy cap.
    pub(super) fn load_changed(&mut self, now: TimeMs, ax: AgentIx) {
        let a = &mut self.agents[ax as usize];
        let busy = a.load > 0;
        a.busy.set(now, busy);
        self.check_cap(now, ax);
    }

    /// Whether the agent is over the occupancy cap at `now`; it takes no new
    /// work while it is. Schedules the next check when one can change that.
    pub(super) fn check_cap(&mut self, now: TimeMs, ax: AgentIx) {
        let Some(cap) = self.cfg.occupancy_cap else {
            return;
        };
        let a = &mut self.agents[ax as usize];
        let (over, next) = a.busy.check(now, &cap);
        if let Some(old) = a.cap_check.take() {
            self.timers.remove(&(old, Timer::Occupancy(ax)));
        }
        if let Some(at) = next {
            self.agents[ax as usize].cap_check = Some(at);
            self.timers.insert((at, Timer::Occupancy(ax)));
        }
        if self.agents[ax as usize].capped != over {
            self.reindex(ax, |a| a.capped = over);
        }
    }

    pub(super) fn remove_waiting(&mut self, e: &Entry) {
        self.remove_waiting_at(e.slot());
    }

    pub(super) fn remove_waiting_at(&mut self, w: WaitSlot) {
        match w.target {
            Some(tx) => {
                self.agents[tx as usize].personal.remove(&w.rank);
            }
            None => {
                self.queues[w.queue as usize].waiting[w.step as usize][w.channel.index()]
                    .remove(&w.rank);
            }
        }
    }

    fn open_offer(&self, ax: AgentIx, offer: OfferId) -> Result<ConversationId> {
        let conv = *self
            .offers
            .get(&offer)
            .ok_or(CoreError::UnknownOffer(offer))?;
        let owner = self
            .entries
            .get(&conv)
            .and_then(|e| e.agent)
            .ok_or(CoreError::UnknownOffer(offer))?;
        if owner != ax {
            return Err(CoreError::NotYourOffer {
                offer,
                owner: self.agents[owner as usize].id.clone(),
                caller: self.agents[ax as usize].id.clone(),
            });
        }
        Ok(conv)
    }

    /// Removes the agent from its queues' idle indexes, applies `f`, and
    /// puts it back if it is still routable: keys always match the fields.
    pub(super) fn reindex(&mut self, ax: AgentIx, f: impl FnOnce(&mut AgentSlot)) {
        self.unindex(ax);
        let a = &mut self.agents[ax as usize];
        f(a);
        if a.routable() {
            for &(qx, _, prof) in &a.queues {
                let q = &mut self.queues[qx as usize];
                q.idle.insert(a.key(q.cfg.strategy, prof, ax));
            }
            a.indexed = true;
        }
    }

    fn unindex(&mut self, ax: AgentIx) {
        let a = &mut self.agents[ax as usize];
        if a.indexed {
            for &(qx, _, prof) in &a.queues {
                let q = &mut self.queues[qx as usize];
                let removed = q.idle.remove(&a.key(q.cfg.strategy, prof, ax));
                debug_assert!(removed, "idle index out of sync for agent {}", a.id);
            }
            a.indexed = false;
        }
    }

    /// Reports the agent's state if it changed.
    pub(super) fn report(&mut self, ax: AgentIx, out: &mut Vec<Output>) {
        let a = &self.agents[ax as usize];
        let wrapping_only = !a.holding.is_empty()
            && a.holding.iter().all(|c| {
                matches!(
                    self.entries.get(c).map(|e| e.phase),
                    Some(Phase::WrapUp { .. })
                )
            });
        let state = a.state(wrapping_only);
        if state != a.reported {
            out.push(Output::AgentStateChanged {
                agent: a.id.clone(),
                state,
                load: a.load,
            });
            self.agents[ax as usize].reported = state;
        }
    }

    pub(super) fn schedule_bullseye(&mut self, conv: ConversationId) {
        let Some(e) = self.entries.get(&conv) else {
            return;
        };
        if let Some(timer) = bullseye_timer(&self.queues[e.queue as usize].cfg, conv, e) {
            self.timers.insert(timer);
        }
    }

    fn memberships(&self, profile: &AgentProfile) -> Vec<(QueueIx, u8, u32)> {
        self.queues
            .iter()
            .enumerate()
            .filter_map(|(qx, q)| {
                q.cfg
                    .level_of(profile)
                    .map(|level| (qx as QueueIx, level, q.cfg.proficiency_of(profile)))
            })
            .collect()
    }

    pub(super) fn queue_id(&self, qx: QueueIx) -> &QueueId {
        &self.queues[qx as usize].cfg.id
    }
}

/// Why an offer went back (see [`Router::take_back_offer`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum TakenBack {
    Declined,
    TimedOut,
    /// The agent's desktop is gone: neither a decline nor a miss.
    Disconnected,
}

/// The timer of the conversation's next bullseye step in queue `q`, if it
/// has one to reach (conversations meant for a named agent do not widen).
fn bullseye_timer(q: &QueueConfig, conv: ConversationId, e: &Entry) -> Option<(TimeMs, Timer)> {
    if e.target.is_some() {
        return None;
    }
    let next = q.bullseye.get(e.step as usize)?;
    Some((
        e.enqueued_at + next.after_ms,
        Timer::Bullseye(conv, e.step + 1),
    ))
}

pub(super) fn rank_inputs(
    cfg: &super::RouterConfig,
    q: &QueueState,
    channel: Channel,
    inputs: &PriorityInputs,
    enqueued_at: TimeMs,
) -> (i64, crate::priority::PriorityBreakdown) {
    let inputs = PriorityInputs {
        channel_sla_ms: q.cfg.sla_ms(channel),
        topic_boost_ms: q.cfg.priority_boost_ms,
        ..inputs.clone()
    };
    cfg.priority.deadline(enqueued_at, &inputs)
}

/// How many bullseye steps a conversation that waited `waited` has reached.
pub(super) fn reached_step(q: &QueueConfig, waited: u64) -> u8 {
    q.bullseye
        .iter()
        .take_while(|s| s.after_ms <= waited)
        .count() as u8
}

fn strategy_rule(s: Strategy) -> Rule {
    match s {
        Strategy::LongestIdle => Rule::LongestIdle,
        Strategy::MostProficient => Rule::MostProficient,
        Strategy::LeastOccupied => Rule::LeastOccupied,
        Strategy::RoundRobin => Rule::RoundRobin,
    }
}
