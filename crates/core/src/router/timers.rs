//! Timers: the only way time moves the router. `tick(now)` fires every
//! timer due at or before `now`, each at its own due time, in (time, kind)
//! order, so a replay with the same inputs makes the same decisions.
//! A timer whose subject has moved on (an offer accepted, a conversation
//! gone) is stale and does nothing.
//!
//! Offer expiries, the most frequent timers, are not in the sorted set: every
//! offer expires `offer_timeout_ms` after it is made, so they are due in the
//! order they were made and a FIFO holds them; an accepted or rejected
//! offer's expiry stays there, stale, until it is due. `tick` merges the FIFO
//! with the set in (time, kind) order. Were the caller's clock to step back,
//! an expiry queued behind a later one fires late by at most that step.

use crate::ids::ConversationId;
use crate::time::TimeMs;

use super::matching::reached_step;
use super::state::{AgentIx, Phase, Timer};
use super::{Output, Router};

impl Router {
    /// Fires the timers due at or before `now`.
    pub fn tick(&mut self, now: TimeMs, out: &mut Vec<Output>) {
        loop {
            let set = self.timers.first().copied();
            let fifo = self
                .offer_expiries
                .front()
                .map(|&(at, offer)| (at, Timer::OfferExpiry(offer)));
            let Some((at, timer)) = set.into_iter().chain(fifo).min() else {
                break;
            };
            if at > now {
                break;
            }
            if fifo == Some((at, timer)) {
                self.offer_expiries.pop_front();
            } else {
                self.timers.pop_first();
            }
            match timer {
                Timer::OfferExpiry(offer) => self.expire_offer(at, offer, out),
                Timer::AcwEnd(conv) => self.end_acw(at, conv, out),
                Timer::Scheduled(conv) => self.scheduled_due(at, conv, out),
                Timer::Bullseye(conv, step) => self.widen(at, conv, step, out),
                Timer::DeclineExpiry(conv, ax) => self.forget_decline(at, conv, ax, out),
                Timer::HoldEnds => self.hold_due(at, out),
                Timer::Absent(ax) => self.absent_due(at, ax, out),
                Timer::Occupancy(ax) => self.occupancy_due(at, ax, out),
            }
        }
    }

    /// The agent's occupancy may have crossed the cap: an agent back under
    /// it takes work again.
    fn occupancy_due(&mut self, now: TimeMs, ax: AgentIx, out: &mut Vec<Output>) {
        if self.agents[ax as usize].cap_check != Some(now) {
            return;
        }
        self.agents[ax as usize].cap_check = None;
        self.check_cap(now, ax);
        self.report(ax, out);
        self.fill_agent(now, ax, out);
    }

    fn end_acw(&mut self, now: TimeMs, conv: ConversationId, out: &mut Vec<Output>) {
        let Some(e) = self.entries.get(&conv) else {
            return;
        };
        let (Phase::WrapUp { until }, Some(ax)) = (e.phase, e.agent) else {
            return;
        };
        if until != now {
            return;
        }
        let channel = e.channel;
        self.entries.remove(&conv);
        self.declining.remove(&conv);
        self.release(now, ax, conv, channel);
        self.report(ax, out);
        self.fill_agent(now, ax, out);
    }

    fn scheduled_due(&mut self, now: TimeMs, conv: ConversationId, out: &mut Vec<Output>) {
        let Some(e) = self.entries.get_mut(&conv) else {
            return;
        };
        if e.phase != Phase::Scheduled {
            return;
        }
        e.phase = Phase::Waiting;
        self.place(now, conv, out);
    }

    /// A bullseye step is reached: the conversation may go to more agents.
    ///
    /// The step is recomputed from the conversation's *current* queue and
    /// wait, not taken from the timer: a timer set under another queue (before
    /// a transfer) or another configuration (before an upsert) is stale, and
    /// trusting it widened too early or past the queue's last step, which
    /// indexed out of its waiting sets and panicked.
    fn widen(&mut self, now: TimeMs, conv: ConversationId, _scheduled: u8, out: &mut Vec<Output>) {
        let Some(e) = self.entries.get(&conv) else {
            return;
        };
        let step = reached_step(
            &self.queues[e.queue as usize].cfg,
            now.saturating_sub(e.enqueued_at),
        );
        if e.step >= step || e.target.is_some() {
            return;
        }
        let waiting = e.phase == Phase::Waiting;
        if !matches!(
            e.phase,
            Phase::Waiting | Phase::Offered { .. } | Phase::Scheduled
        ) {
            return;
        }
        if waiting {
            let slot = e.slot();
            self.remove_waiting_at(slot);
        }
        if let Some(e) = self.entries.get_mut(&conv) {
            e.step = step;
        }
        self.schedule_bullseye(conv);
        if waiting {
            self.place(now, conv, out);
        }
    }

    fn forget_decline(
        &mut self,
        now: TimeMs,
        conv: ConversationId,
        ax: AgentIx,
        out: &mut Vec<Output>,
    ) {
        let Some(e) = self.entries.get_mut(&conv) else {
            return;
        };
        e.declined.retain(|&(a, until)| a != ax || until > now);
        if e.declined.is_empty() {
            self.declining.remove(&conv);
        }
        if e.phase == Phase::Waiting {
            self.fill_agent(now, ax, out);
        }
    }
}
