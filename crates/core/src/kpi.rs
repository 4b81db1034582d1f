//! Live KPIs per queue, channel and agent, kept by the router as it decides.
//!
//! Service level counts contacts answered within their SLA target over all
//! answered **plus abandoned** contacts (abandons count against the level;
//! there is no short-abandon threshold).

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
}

impl Counters {
    /// Answered within target over answered plus abandoned; 1.0 when none.
    pub fn service_level(&self) -> f64 {
        let n = self.answered + self.abandoned;
        if n == 0 {
            1.0
        } else {
            self.answered_within_sla as f64 / n as f64
        }
    }
    /// Average speed of answer, ms.
    pub fn asa_ms(&self) -> f64 {
        if self.answered == 0 {
            0.0
        } else {
            self.wait_ms_total as f64 / self.answered as f64
        }
    }
    /// Average handle time (assigned to wrap-up), ms.
    pub fn aht_ms(&self) -> f64 {
        if self.handled == 0 {
            0.0
        } else {
            self.handle_ms_total as f64 / self.handled as f64
        }
    }
}

/// All counters, indexed as the router indexes queues and agents.
#[derive(Clone, Debug, Default)]
pub struct Kpis {
    pub(crate) queues: Vec<Counters>,
    pub(crate) agents: Vec<Counters>,
    pub(crate) channels: [Counters; Channel::COUNT],
    pub(crate) total: Counters,
}

impl Kpis {
    pub(crate) fn add_queue(&mut self) {
        self.queues.push(Counters::default());
    }
    pub(crate) fn add_agent(&mut self) {
        self.agents.push(Counters::default());
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

/// The KPIs with their keys, for reports.
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
