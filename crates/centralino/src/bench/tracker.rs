//! What happened to every contact, on one monotonic clock.
//!
//! The generator records a contact's arrival when it sends `SubmitContact`;
//! the response names the conversation; the agent desktop that receives
//! the offer, and later the result of its accept, name the conversation
//! too. The tracker joins them by conversation id. An offer (even its
//! accept) can reach a desktop before the gateway has the response to its
//! `SubmitContact`: those are kept aside under the conversation id and
//! merged when the response arrives.
//!
//! Times are seconds since the bench started ([`Clock`]). Only the first
//! offer and the first accept of a conversation count.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

/// Seconds since the bench started.
#[derive(Clone, Copy, Debug)]
pub struct Clock(Instant);

impl Clock {
    pub fn start() -> Clock {
        Clock(Instant::now())
    }

    pub fn now(&self) -> f64 {
        self.0.elapsed().as_secs_f64()
    }

    pub fn at(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.0).as_secs_f64()
    }
}

/// One contact, as the CSV shows it (plus what the report needs).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Contact {
    /// Index into the class mix.
    pub class: usize,
    /// Index into the channel mix.
    pub channel: usize,
    /// Which measured phase (scenario) sent it.
    pub phase: usize,
    pub arrival: f64,
    /// When the `SubmitContact` response arrived (acknowledged as durable).
    pub ack: Option<f64>,
    pub offer: Option<f64>,
    pub accept: Option<f64>,
    /// Index of the agent (into the run's agent list) offered it first.
    pub agent: Option<u32>,
    /// When the customer left unoffered (`--patience-ms`).
    pub abandoned: Option<f64>,
    /// Index of the node (target) that agent's desktop is connected to.
    pub node: Option<u16>,
    /// The `SubmitContact` failed with this status.
    pub error: Option<String>,
}

/// An offer or accept seen before the response that names its conversation.
#[derive(Default)]
struct Early {
    offer: Option<(f64, u32, u16)>,
    accept: Option<f64>,
}

#[derive(Default)]
struct Inner {
    contacts: Vec<Contact>,
    by_conversation: HashMap<String, usize>,
    early: HashMap<String, Early>,
}

/// Shared by the generator's tasks and every desktop.
#[derive(Default)]
pub struct Tracker {
    inner: Mutex<Inner>,
}

impl Tracker {
    pub fn new() -> Tracker {
        Tracker::default()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panicking holder leaves consistent data: every update is one
        // assignment.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a contact the generator is sending; its id.
    pub fn arrive(&self, phase: usize, class: usize, channel: usize, at: f64) -> usize {
        let mut g = self.lock();
        g.contacts.push(Contact {
            class,
            channel,
            phase,
            arrival: at,
            ..Contact::default()
        });
        g.contacts.len() - 1
    }

    /// The `SubmitContact` of contact `id` was acknowledged: `conversation`.
    pub fn acked(&self, id: usize, conversation: String, at: f64) {
        let mut g = self.lock();
        let early = g.early.remove(&conversation);
        let c = &mut g.contacts[id];
        c.ack = Some(at);
        if let Some(e) = early {
            if let Some((t, agent, node)) = e.offer {
                c.offer = Some(t);
                c.agent = Some(agent);
                c.node = Some(node);
            }
            c.accept = e.accept;
        }
        g.by_conversation.insert(conversation, id);
    }

    /// The `SubmitContact` of contact `id` failed.
    pub fn failed(&self, id: usize, error: String) {
        self.lock().contacts[id].error = Some(error);
    }

    /// A desktop received an offer of `conversation`.
    pub fn offered(&self, conversation: &str, at: f64, agent: u32, node: u16) {
        let mut g = self.lock();
        match g.by_conversation.get(conversation).copied() {
            Some(id) => {
                let c = &mut g.contacts[id];
                if c.offer.is_none() {
                    c.offer = Some(at);
                    c.agent = Some(agent);
                    c.node = Some(node);
                }
            }
            None => {
                let e = g.early.entry(conversation.to_owned()).or_default();
                if e.offer.is_none() {
                    e.offer = Some((at, agent, node));
                }
            }
        }
    }

    /// A desktop's accept of an offer of `conversation` succeeded.
    pub fn accepted(&self, conversation: &str, at: f64) {
        let mut g = self.lock();
        match g.by_conversation.get(conversation).copied() {
            Some(id) => {
                let c = &mut g.contacts[id];
                c.accept.get_or_insert(at);
            }
            None => {
                g.early
                    .entry(conversation.to_owned())
                    .or_default()
                    .accept
                    .get_or_insert(at);
            }
        }
    }

    /// Whether contact `id` has been offered.
    pub fn is_offered(&self, id: usize) -> bool {
        self.lock()
            .contacts
            .get(id)
            .is_some_and(|c| c.offer.is_some())
    }

    /// Contact `id`'s customer left before an offer.
    pub fn abandoned(&self, id: usize, at: f64) {
        if let Some(c) = self.lock().contacts.get_mut(id) {
            c.abandoned.get_or_insert(at);
        }
    }

    /// Contacts of `phase` still waiting for a response, an offer or an
    /// accept (and whose customer did not leave).
    pub fn outstanding(&self, phase: usize) -> usize {
        let g = self.lock();
        g.contacts
            .iter()
            .filter(|c| c.phase == phase && c.error.is_none() && c.accept.is_none())
            .filter(|c| c.abandoned.is_none())
            .count()
    }

    /// A copy of every contact so far, in id order.
    pub fn snapshot(&self) -> Vec<Contact> {
        self.lock().contacts.clone()
    }

    /// Conversations offered that no response of this run named (left
    /// over on a target cluster, or whose SubmitContact failed after the
    /// node accepted it).
    pub fn unmatched(&self) -> usize {
        self.lock().early.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_before_and_after_the_response_are_both_matched() {
        let t = Tracker::new();
        let a = t.arrive(0, 1, 2, 1.0);
        let b = t.arrive(0, 0, 0, 1.5);
        // b: the offer and the accept overtake the SubmitContact response.
        t.offered("cu-2.1", 1.6, 7, 1);
        t.accepted("cu-2.1", 1.7);
        t.acked(b, "cu-2.1".into(), 1.8);
        // a: the usual order; a second offer (after a reject) does not count.
        t.acked(a, "cu-1.1".into(), 1.1);
        t.offered("cu-1.1", 1.2, 3, 0);
        t.offered("cu-1.1", 1.25, 4, 2);
        t.accepted("cu-1.1", 1.3);
        let s = t.snapshot();
        assert_eq!(
            (s[0].ack, s[0].offer, s[0].accept, s[0].agent, s[0].node),
            (Some(1.1), Some(1.2), Some(1.3), Some(3), Some(0))
        );
        assert_eq!(
            (s[1].ack, s[1].offer, s[1].accept, s[1].agent, s[1].node),
            (Some(1.8), Some(1.6), Some(1.7), Some(7), Some(1))
        );
        assert_eq!(t.outstanding(0), 0);
        assert_eq!(t.unmatched(), 0);
    }

    #[test]
    fn failures_and_strays_are_kept_apart() {
        let t = Tracker::new();
        let a = t.arrive(0, 0, 0, 0.5);
        let _b = t.arrive(0, 0, 0, 0.6);
        t.failed(a, "unavailable".into());
        t.offered("cu-99.1", 0.7, 0, 0);
        assert_eq!(t.outstanding(0), 1, "b is still waiting; a failed");
        assert_eq!(t.unmatched(), 1);
    }
}
