//! Live KPIs per queue, channel and agent, kept by the router as it decides.
//!
//! - **Service level**: contacts answered within their SLA target over all
//!   answered **plus abandoned** contacts (abandons count against the
//!   level; there is no short-abandon threshold).
//! - **ASA**: the wait of answered contacts, from when the customer started
//!   waiting to the first acceptance.
//! - **AHT**: assignment to wrap-up, per wrap-up.
//! - **Abandonment rate**: abandoned over answered plus abandoned.
//! - **Transfer rate**: transfers over answered contacts.
//! - **First-contact resolution**: resolved conversations that one agent
//!   took and resolved, with no transfer and no second assignment, over all
//!   resolved.
//! - **Occupancy** (agents and the total only): time with work (an offer,
//!   an assignment or after-contact work) over logged-in time.
//!
//! A contact is answered once: a transfer or a requeue answered again by
//! another agent counts for neither queue nor channel a second time.

use crate::channel::Channel;

/// Counters for one key (a queue, a channel, an agent or the total).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Counters {
    /// Conversations that entered routing.
    pub offered: u64,
    pub answered: u64,
    pub answered_within_sla: u64,
    pub abandoned: u64,
    pub wait_ms_total: u64,
    pub handled: u64,
    pub handle_ms_total: u64,
    pub transfers: u64,
    pub resolved: u64,
    #[serde(default)]
    pub resolved_first_contact: u64,
    /// Agents and the total only: time with work and logged-in time, ms.
    #[serde(default)]
    pub busy_ms: u64,
    #[serde(default)]
    pub staffed_ms: u64,
}

fn ratio(num: u64, den: u64, none: f64) -> f64 {
    if den == 0 {
        none
    } else {
        num as f64 / den as f64
    }
}

impl Counters {
    /// Answered within target over answered plus abandoned; 1.0 when none.
    pub fn service_level(&self) -> f64 {
        ratio(
            self.answered_within_sla,
            self.answered + self.abandoned,
            1.0,
        )
    }
    /// Average speed of answer, ms.
    pub fn asa_ms(&self) -> f64 {
        ratio(self.wait_ms_total, self.answered, 0.0)
    }
    /// Average handle time (assigned to wrap-up), ms.
    pub fn aht_ms(&self) -> f64 {
        ratio(self.handle_ms_total, self.handled, 0.0)
    }
    /// Abandoned over answered plus abandoned; 0.0 when none.
    pub fn abandonment_rate(&self) -> f64 {
        ratio(self.abandoned, self.answered + self.abandoned, 0.0)
    }
    /// Transfers over answered contacts; 0.0 when none.
    pub fn transfer_rate(&self) -> f64 {
        ratio(self.transfers, self.answered, 0.0)
    }
    /// First-contact resolutions over resolutions; 0.0 when none.
    pub fn first_contact_resolution(&self) -> f64 {
        ratio(self.resolved_first_contact, self.resolved, 0.0)
    }
    /// Busy over logged-in time; 0.0 when never logged in (and for queues
    /// and channels, which do not measure it).
    pub fn occupancy(&self) -> f64 {
        ratio(self.busy_ms, self.staffed_ms, 0.0)
    }

    /// The counters as a row of numbers, in field order: a compact form to
    /// store many (see [`Counters::from_row`]).
    pub fn to_row(&self) -> Vec<u64> {
        vec![
            self.offered,
            self.answered,
            self.answered_within_sla,
            self.abandoned,
            self.wait_ms_total,
            self.handled,
            self.handle_ms_total,
            self.transfers,
            self.resolved,
            self.resolved_first_contact,
            self.busy_ms,
            self.staffed_ms,
        ]
    }

    /// Counters from a row made by [`Counters::to_row`]; a shorter row (an
    /// older version's) leaves the missing counters at zero.
    pub fn from_row(row: &[u64]) -> Counters {
        let at = |i: usize| row.get(i).copied().unwrap_or(0);
        Counters {
            offered: at(0),
            answered: at(1),
            answered_within_sla: at(2),
            abandoned: at(3),
            wait_ms_total: at(4),
            handled: at(5),
            handle_ms_total: at(6),
            transfers: at(7),
            resolved: at(8),
            resolved_first_contact: at(9),
            busy_ms: at(10),
            staffed_ms: at(11),
        }
    }

    /// Adds `other` to these counters.
    pub fn add(&mut self, o: &Counters) {
        self.offered += o.offered;
        self.answered += o.answered;
        self.answered_within_sla += o.answered_within_sla;
        self.abandoned += o.abandoned;
        self.wait_ms_total += o.wait_ms_total;
        self.handled += o.handled;
        self.handle_ms_total += o.handle_ms_total;
        self.transfers += o.transfers;
        self.resolved += o.resolved;
        self.resolved_first_contact += o.resolved_first_contact;
        self.busy_ms += o.busy_ms;
        self.staffed_ms += o.staffed_ms;
    }
}

/// All counters, indexed as the router indexes queues and agents.
#[derive(Clone, Debug, Default)]
pub struct Kpis {
    pub(crate) queues: Vec<Counters>,
    pub(crate) agents: Vec<Counters>,
    pub(crate) channels: [Counters; Channel::COUNT],
    pub(crate) total: Counters,
    /// Counters of agents an earlier router knew and this one has not seen
    /// yet, by agent id (see `Router::carry_kpis`); ordered, for reports.
    pub(crate) carried_agents: std::collections::BTreeMap<String, Counters>,
    /// Counters of queues not defined yet, by queue id.
    pub(crate) carried_queues: std::collections::BTreeMap<String, Counters>,
}

impl Kpis {
    pub(crate) fn add_queue(&mut self, id: &str) {
        self.queues
            .push(self.carried_queues.remove(id).unwrap_or_default());
    }
    /// An agent the router has not seen, starting from its counters from
    /// an earlier router if there are any.
    pub(crate) fn add_agent(&mut self, id: &str) {
        self.agents
            .push(self.carried_agents.remove(id).unwrap_or_default());
    }

    pub(crate) fn each(
        &mut self,
        queue: u16,
        channel: Channel,
        agent: Option<u32>,
        f: impl Fn(&mut Counters),
    ) {
        f(&mut self.total);
        f(&mut self.channels[channel.index()]);
        if let Some(q) = self.queues.get_mut(queue as usize) {
            f(q);
        }
        if let Some(a) = agent.and_then(|a| self.agents.get_mut(a as usize)) {
            f(a);
        }
    }

    pub(crate) fn offered(&mut self, queue: u16, channel: Channel) {
        self.each(queue, channel, None, |c| c.offered += 1);
    }
    pub(crate) fn answered(
        &mut self,
        queue: u16,
        channel: Channel,
        agent: u32,
        waited_ms: u64,
        within: bool,
    ) {
        self.each(queue, channel, Some(agent), |c| {
            c.answered += 1;
            c.wait_ms_total += waited_ms;
            c.answered_within_sla += u64::from(within);
        });
    }
    pub(crate) fn abandoned(&mut self, queue: u16, channel: Channel) {
        self.each(queue, channel, None, |c| c.abandoned += 1);
    }
    pub(crate) fn handled(&mut self, queue: u16, channel: Channel, agent: u32, handle_ms: u64) {
        self.each(queue, channel, Some(agent), |c| {
            c.handled += 1;
            c.handle_ms_total += handle_ms;
        });
    }
    pub(crate) fn transferred(&mut self, queue: u16, channel: Channel, agent: u32) {
        self.each(queue, channel, Some(agent), |c| c.transfers += 1);
    }
}

/// The KPIs with their keys, for reports; also what a router saves so
/// that the one taking over after it goes on counting (see
/// [`crate::router::Router::carry_kpis`]).
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct KpiReport {
    pub queues: Vec<(String, Counters)>,
    pub channels: Vec<(Channel, Counters)>,
    pub agents: Vec<(String, Counters)>,
    pub total: Counters,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_holds_every_counter() {
        let c = Counters {
            offered: 1,
            answered: 2,
            answered_within_sla: 3,
            abandoned: 4,
            wait_ms_total: 5,
            handled: 6,
            handle_ms_total: 7,
            transfers: 8,
            resolved: 9,
            resolved_first_contact: 10,
            busy_ms: 11,
            staffed_ms: 12,
        };
        assert_eq!(Counters::from_row(&c.to_row()), c);
        assert_eq!(Counters::from_row(&[5]).offered, 5);
    }

    #[test]
    fn rates_are_shares_of_what_they_are_about() {
        let c = Counters {
            answered: 8,
            abandoned: 2,
            transfers: 2,
            resolved: 4,
            resolved_first_contact: 3,
            busy_ms: 45,
            staffed_ms: 60,
            ..Default::default()
        };
        assert_eq!(c.abandonment_rate(), 0.2);
        assert_eq!(c.transfer_rate(), 0.25);
        assert_eq!(c.first_contact_resolution(), 0.75);
        assert_eq!(c.occupancy(), 0.75);
        let none = Counters::default();
        assert_eq!(
            (
                none.abandonment_rate(),
                none.transfer_rate(),
                none.occupancy()
            ),
            (0.0, 0.0, 0.0)
        );
    }

    #[test]
    fn abandons_count_against_service_level() {
        let c = Counters {
            answered: 3,
            answered_within_sla: 3,
            abandoned: 1,
            wait_ms_total: 300,
            ..Default::default()
        };
        assert_eq!(c.service_level(), 0.75);
        assert_eq!(c.asa_ms(), 100.0);
        assert_eq!(Counters::default().service_level(), 1.0);
    }
}
