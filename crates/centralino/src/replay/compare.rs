//! The two replays side by side: service level, ASA and occupancy for A,
//! for B, and B − A, as a table for people and as JSON for tools.
//!
//! - **Service level**: contacts answered within their channel's SLA
//!   target (as the replayed configuration's queue sets it) over those
//!   answered, from the router's KPIs; a replay has no abandons. A
//!   transferred contact is answered once per episode, as the live KPIs
//!   count it.
//! - **ASA**: the mean wait to an answer, ms, from the same KPIs.
//! - **Occupancy**: the time agents held work (offered, assigned or in
//!   after-contact work) over the time they were staffed. An agent with
//!   one chat is occupied as much as one with three: spreading chats over
//!   more agents raises it. Every agent of the pool is staffed from the
//!   first arrival until the replay's last work ended: a configuration
//!   that finishes the same work later keeps its agents longer, and shows
//!   it as lower occupancy. Each replay has its own window, so that A's
//!   numbers do not depend on the B it is compared with. The busiest and
//!   the idlest agent show how a strategy spreads the work.
//! - **Capacity in use**: the agents' load (each conversation costs its
//!   channel's share of 100) over their capacity, in the same window: how
//!   much of what the pool could carry it carried. The same work in the
//!   same window gives the same figure under any strategy (after-contact
//!   work aside), which is what tells a change in occupancy from a change
//!   in work.

use std::fmt::Write as _;

use centralino_core::Channel;
use centralino_core::kpi::Counters;
use serde::Serialize;

use super::recording::Recording;
use super::simulate::Outcome;

/// One replay's numbers.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    /// Which configuration, for people.
    pub label: String,
    pub contacts: usize,
    /// From the first arrival until the last work ended, ms.
    pub staffed_ms: u64,
    pub answered: u64,
    pub never_answered: usize,
    pub service_level_pct: f64,
    pub asa_ms: f64,
    pub occupancy_pct: f64,
    pub busiest_agent_pct: f64,
    pub idlest_agent_pct: f64,
    pub capacity_in_use_pct: f64,
    pub transfers: u64,
    pub channels: Vec<ChannelSummary>,
    pub agents: Vec<AgentSummary>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ChannelSummary {
    pub channel: String,
    pub contacts: usize,
    pub answered: u64,
    pub service_level_pct: f64,
    pub asa_ms: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AgentSummary {
    pub id: String,
    pub busy_ms: u64,
    pub occupancy_pct: f64,
}

/// Both replays and what they were run on.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    pub recording: String,
    pub agents: usize,
    pub a: Summary,
    pub b: Summary,
    /// B − A for each headline number (percentage points for the shares).
    pub difference: Difference,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Difference {
    pub service_level_pt: f64,
    pub asa_ms: f64,
    pub occupancy_pt: f64,
    pub busiest_agent_pt: f64,
    pub idlest_agent_pt: f64,
    pub capacity_in_use_pt: f64,
    pub never_answered: i64,
}

impl Comparison {
    pub fn of(rec: &Recording, a: (&str, &Outcome), b: (&str, &Outcome)) -> Comparison {
        let (sa, sb) = (summary(rec, a.0, a.1), summary(rec, b.0, b.1));
        let difference = Difference {
            service_level_pt: sb.service_level_pct - sa.service_level_pct,
            asa_ms: sb.asa_ms - sa.asa_ms,
            occupancy_pt: sb.occupancy_pct - sa.occupancy_pct,
            busiest_agent_pt: sb.busiest_agent_pct - sa.busiest_agent_pct,
            idlest_agent_pt: sb.idlest_agent_pct - sa.idlest_agent_pct,
            capacity_in_use_pt: sb.capacity_in_use_pct - sa.capacity_in_use_pct,
            never_answered: sb.never_answered as i64 - sa.never_answered as i64,
        };
        Comparison {
            recording: rec.source.clone(),
            agents: a.1.agents.len(),
            a: sa,
            b: sb,
            difference,
        }
    }

    /// The table for people.
    pub fn table(&self) -> String {
        let (a, b) = (&self.a, &self.b);
        let mut t = String::new();
        let _ = writeln!(t, "replay of {}", self.recording);
        let _ = writeln!(t, "{} contacts, {} agents", a.contacts, self.agents);
        let _ = writeln!(t, "  A: {}", a.label);
        let _ = writeln!(t, "  B: {}", b.label);
        let _ = writeln!(t);
        let _ = writeln!(t, "{:<26}{:>12}{:>12}{:>12}", "", "A", "B", "B - A");
        let row = |t: &mut String, name: &str, x: String, y: String, d: String| {
            let _ = writeln!(t, "{name:<26}{x:>12}{y:>12}{d:>12}");
        };
        let pct = |v: f64| format!("{v:.1}%");
        let pt = |v: f64| format!("{v:+.1} pt");
        let ms = |v: f64| format!("{v:.0} ms");
        let dms = |v: f64| format!("{v:+.0} ms");
        row(
            &mut t,
            "service level",
            pct(a.service_level_pct),
            pct(b.service_level_pct),
            pt(self.difference.service_level_pt),
        );
        for (ca, cb) in a.channels.iter().zip(&b.channels) {
            row(
                &mut t,
                &format!("  {} ({})", ca.channel, ca.contacts),
                pct(ca.service_level_pct),
                pct(cb.service_level_pct),
                pt(cb.service_level_pct - ca.service_level_pct),
            );
        }
        row(
            &mut t,
            "ASA",
            ms(a.asa_ms),
            ms(b.asa_ms),
            dms(self.difference.asa_ms),
        );
        for (ca, cb) in a.channels.iter().zip(&b.channels) {
            row(
                &mut t,
                &format!("  {}", ca.channel),
                ms(ca.asa_ms),
                ms(cb.asa_ms),
                dms(cb.asa_ms - ca.asa_ms),
            );
        }
        row(
            &mut t,
            "occupancy",
            pct(a.occupancy_pct),
            pct(b.occupancy_pct),
            pt(self.difference.occupancy_pt),
        );
        row(
            &mut t,
            "  busiest agent",
            pct(a.busiest_agent_pct),
            pct(b.busiest_agent_pct),
            pt(self.difference.busiest_agent_pt),
        );
        row(
            &mut t,
            "  idlest agent",
            pct(a.idlest_agent_pct),
            pct(b.idlest_agent_pct),
            pt(self.difference.idlest_agent_pt),
        );
        let secs = |v: u64| format!("{:.1} s", v as f64 / 1_000.0);
        row(
            &mut t,
            "staffed until work done",
            secs(a.staffed_ms),
            secs(b.staffed_ms),
            format!(
                "{:+.1} s",
                (b.staffed_ms as f64 - a.staffed_ms as f64) / 1_000.0
            ),
        );
        row(
            &mut t,
            "capacity in use",
            pct(a.capacity_in_use_pct),
            pct(b.capacity_in_use_pct),
            pt(self.difference.capacity_in_use_pt),
        );
        let count = |v: u64| v.to_string();
        row(
            &mut t,
            "answered",
            count(a.answered),
            count(b.answered),
            format!("{:+}", b.answered as i64 - a.answered as i64),
        );
        row(
            &mut t,
            "never answered",
            a.never_answered.to_string(),
            b.never_answered.to_string(),
            format!("{:+}", self.difference.never_answered),
        );
        row(
            &mut t,
            "transfers",
            count(a.transfers),
            count(b.transfers),
            format!("{:+}", b.transfers as i64 - a.transfers as i64),
        );
        t
    }
}

fn summary(rec: &Recording, label: &str, o: &Outcome) -> Summary {
    let staffed_ms = o.end.saturating_sub(o.start);
    let share = |busy: u64| {
        if staffed_ms == 0 {
            0.0
        } else {
            busy as f64 * 100.0 / staffed_ms as f64
        }
    };
    let agents: Vec<AgentSummary> = o
        .agents
        .iter()
        .map(|a| AgentSummary {
            id: a.id.to_string(),
            busy_ms: a.busy_ms,
            occupancy_pct: share(a.busy_ms),
        })
        .collect();
    let busy: u64 = agents.iter().map(|a| a.busy_ms).sum();
    let occupancy_pct = if agents.is_empty() {
        0.0
    } else {
        share(busy) / agents.len() as f64
    };
    let shares = agents.iter().map(|a| a.occupancy_pct);
    let load: u64 = o.agents.iter().map(|a| a.load_ms).sum();
    let could: u64 = o
        .agents
        .iter()
        .map(|a| u64::from(a.capacity) * staffed_ms)
        .sum();
    let capacity_in_use_pct = if could == 0 {
        0.0
    } else {
        load as f64 * 100.0 / could as f64
    };
    let channels = Channel::ALL
        .iter()
        .filter_map(|&ch| {
            let contacts = rec.contacts.iter().filter(|c| c.channel == ch).count();
            let k = o
                .kpis
                .channels
                .iter()
                .find(|(c, _)| *c == ch)
                .map_or(Counters::default(), |(_, k)| *k);
            (contacts > 0 || k.answered > 0).then(|| ChannelSummary {
                channel: ch.name().to_owned(),
                contacts,
                answered: k.answered,
                service_level_pct: k.service_level() * 100.0,
                asa_ms: k.asa_ms(),
            })
        })
        .collect();
    let total = &o.kpis.total;
    Summary {
        label: label.to_owned(),
        contacts: rec.contacts.len(),
        staffed_ms,
        answered: total.answered,
        never_answered: o.contacts.iter().filter(|c| c.waited_ms.is_none()).count(),
        service_level_pct: total.service_level() * 100.0,
        asa_ms: total.asa_ms(),
        occupancy_pct,
        busiest_agent_pct: shares.clone().fold(0.0, f64::max),
        idlest_agent_pct: if agents.is_empty() {
            0.0
        } else {
            shares.fold(f64::INFINITY, f64::min)
        },
        capacity_in_use_pct,
        transfers: total.transfers,
        channels,
        agents,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replay::simulate::{AgentUse, ContactResult};
    use centralino_core::kpi::KpiReport;

    fn outcome(busy: [u64; 2], end: u64, answered: u64, within: u64, wait: u64) -> Outcome {
        let total = Counters {
            answered,
            answered_within_sla: within,
            wait_ms_total: wait,
            ..Counters::default()
        };
        Outcome {
            kpis: KpiReport {
                total,
                ..KpiReport::default()
            },
            contacts: vec![ContactResult::default()],
            agents: busy
                .iter()
                .enumerate()
                .map(|(i, &busy_ms)| AgentUse {
                    id: format!("agent-{i}").as_str().into(),
                    capacity: 100,
                    busy_ms,
                    // Voice only: the whole capacity while busy.
                    load_ms: busy_ms * 100,
                })
                .collect(),
            start: 0,
            end,
        }
    }

    /// The numbers of the hand-worked scenario in `simulate`'s tests:
    /// longest idle is done at 30 s, most proficient at 40 s.
    #[test]
    fn shares_over_each_replays_staffed_window() {
        let rec = Recording::default();
        let a = outcome([30_000, 20_000], 30_000, 3, 3, 9_000);
        let b = outcome([10_000, 40_000], 40_000, 3, 2, 29_000);
        let c = Comparison::of(&rec, ("longest idle", &a), ("most proficient", &b));
        assert_eq!((c.a.staffed_ms, c.b.staffed_ms), (30_000, 40_000));
        // 50 s of work over 2 agents × 30 s, then × 40 s.
        assert!((c.a.occupancy_pct - 250.0 / 3.0).abs() < 1e-9);
        assert_eq!(c.b.occupancy_pct, 62.5, "the same work, done later");
        assert_eq!(
            (c.a.busiest_agent_pct, c.b.busiest_agent_pct),
            (100.0, 100.0)
        );
        assert!((c.a.idlest_agent_pct - 200.0 / 3.0).abs() < 1e-9);
        assert_eq!(c.b.idlest_agent_pct, 25.0);
        assert_eq!(
            c.b.capacity_in_use_pct, c.b.occupancy_pct,
            "voice: as loaded as occupied"
        );
        assert_eq!(
            Comparison::of(&rec, ("A", &a), ("A again", &a)).a,
            Comparison::of(&rec, ("A", &a), ("B", &b)).a,
            "A's numbers do not depend on B"
        );
        assert_eq!(c.a.service_level_pct, 100.0);
        assert!((c.difference.service_level_pt + 100.0 / 3.0).abs() < 1e-9);
        assert!((c.difference.asa_ms - 20_000.0 / 3.0).abs() < 1e-9);
        let table = c.table();
        assert!(table.contains("service level"), "{table}");
        assert!(table.contains("-33.3 pt"), "{table}");
    }
}
