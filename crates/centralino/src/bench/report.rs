//! The results: `report.json`, `contacts.csv` and the human summary.
//!
//! Every headline number sits next to its target from the brief ("How good
//! it must be") and the ratio to it; a number this run did not measure is
//! `null` in the JSON and "not measured" in the summary, never a guess.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;

use super::keys::Footprint;
use super::tracker::Contact;

/// The CSV header the issue fixes.
pub const CSV_HEADER: &str = "contact_id,class,channel,arrival_ts,offer_ts,accept_ts,agent,node";

/// Targets from the brief, on the 2-core machine with 3 nodes.
pub const TARGET_ROUTED_PER_S: f64 = 5_000.0;
pub const TARGET_OFFER_P99_MS: f64 = 5.0;
/// The rate the ingest-to-offer target is set at.
pub const TARGET_OFFER_RATE_PER_S: f64 = 1_000.0;
pub const TARGET_ETCD_PER_CONTACT: f64 = 1.0;
pub const TARGET_MIGRATION_P99_MS: f64 = 10.0;
pub const TARGET_FAILOVER_S: f64 = 3.0;
pub const TARGET_CUSTOMER_ACTORS: f64 = 100_000.0;
pub const TARGET_AGENTS_ONLINE: f64 = 15_000.0;

/// Latency percentiles, ms.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Latency {
    pub count: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// Percentiles of `samples` (seconds) through an HdrHistogram of
/// microseconds with 3 significant digits; `None` without samples.
pub fn latency(samples: impl IntoIterator<Item = f64>) -> Option<Latency> {
    let mut h = Histogram::<u64>::new(3).expect("3 significant digits is valid");
    for s in samples {
        h.record((s.max(0.0) * 1e6).round() as u64)
            .expect("an auto-resizing histogram takes any value");
    }
    if h.is_empty() {
        return None;
    }
    let ms = |us: u64| us as f64 / 1_000.0;
    Some(Latency {
        count: h.len(),
        p50_ms: ms(h.value_at_quantile(0.5)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
        mean_ms: h.mean() / 1_000.0,
    })
}

/// Requests etcd received over a window, from its `/metrics`.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct EtcdUsage {
    /// Every gRPC message etcd's KV, Lease and Watch services received:
    /// unary requests (Range, Put, Txn, DeleteRange, LeaseGrant, ...) and
    /// stream messages (lease keep-alives, watch requests).
    pub requests: f64,
    /// The same, by `service/method`.
    pub by_method: BTreeMap<String, f64>,
    /// etcd's MVCC counters over the window: put, txn, range, delete.
    pub mvcc: BTreeMap<String, f64>,
    /// Per contact routed (accepted) in the window: the brief's measure.
    pub per_contact: Option<f64>,
    /// Per contact acknowledged in the window: the same cost when routing
    /// lags behind ingestion (then `per_contact` overstates it).
    pub per_acked_contact: Option<f64>,
}

/// Envelopes the nodes sent each other over a window (see
/// `bench::crossings`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct EnvelopeUsage {
    pub envelopes: f64,
    /// Per contact routed (accepted) in the window.
    pub per_contact: Option<f64>,
    /// The same, by kind (`Envelope::kind`: `desktop`, `router.step`, ...).
    pub per_contact_by_kind: BTreeMap<String, f64>,
}

/// One measured phase (a scenario's load run).
#[derive(Clone, Debug, Default, Serialize)]
pub struct Phase {
    pub scenario: String,
    pub what: String,
    pub rate_per_s: f64,
    pub agents: usize,
    pub handle_ms: f64,
    pub warmup_s: f64,
    pub duration_s: f64,
    /// The measured window, seconds on the bench's clock.
    pub window_start_s: f64,
    pub window_end_s: f64,
    /// Contacts sent whose arrival is in the window.
    pub submitted: u64,
    pub submitted_per_s: f64,
    /// Of those: acknowledged, failed, offered, accepted (at any time).
    pub acked: u64,
    pub failed: u64,
    pub offered: u64,
    pub accepted: u64,
    /// Of those: accepted by the end of the window.
    pub routed: u64,
    /// `routed / duration`: contacts that arrived in the window and were
    /// acknowledged, offered and accepted within it, per second.
    pub routed_per_s: f64,
    /// Every accept inside the window, whatever the arrival, per second
    /// (the completion rate; above `routed_per_s` when a backlog from the
    /// warm-up drains, below the submission rate when one builds up).
    pub accepted_in_window_per_s: f64,
    /// Every acknowledgement inside the window, whatever the arrival.
    pub acked_in_window: u64,
    /// Arrived in the window, never offered before the bench stopped (and
    /// did not abandon).
    pub never_offered: u64,
    /// Arrived in the window and left unoffered (`--patience-ms`).
    pub abandoned: u64,
    /// The system did not keep up with the offered load: fewer routed than
    /// submitted (by more than 5%), contacts skipped, or some never offered.
    /// When false, `routed_per_s` is the offered load, not a capacity.
    pub saturated: bool,
    pub ingest_to_offer: Option<Latency>,
    pub ingest_to_ack: Option<Latency>,
    pub offer_to_accept: Option<Latency>,
    /// Contacts the generator did not send because `--max-in-flight` calls
    /// were already outstanding (the system fell behind).
    pub skipped_by_generator: u64,
    /// How far the generator ran behind its Poisson schedule at worst, ms
    /// (a CPU-starved generator, not the system under test).
    pub generator_max_lag_ms: f64,
    /// Mean SubmitContact calls in flight during the window.
    pub mean_in_flight: f64,
    pub accept_errors: u64,
    pub wrap_up_errors: u64,
    pub resolve_errors: u64,
    pub offers_revoked: u64,
    /// Desktop sessions the server ended (or that broke) during the load.
    pub sessions_lost: u64,
    pub etcd: Option<EtcdUsage>,
    /// What the cluster's keys took in etcd when the window closed (the
    /// throughput phases of runs with etcd).
    pub etcd_footprint: Option<Footprint>,
    /// Envelopes between the nodes (the bench's own nodes only).
    pub node_envelopes: Option<EnvelopeUsage>,
    /// CPU cores each process used over the window (CPU seconds / window
    /// seconds): the bench, and the nodes and etcd it started.
    pub cpu_cores: BTreeMap<String, f64>,
    /// Load average (1 min) at the end of the window: the machine is shared.
    pub load_avg_1m: Option<f64>,
}

/// A ceiling measured in this process.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Ceiling {
    pub what: String,
    pub concurrency: usize,
    pub connections: usize,
    pub seconds: f64,
    pub calls: u64,
    pub per_s: f64,
    pub latency: Option<Latency>,
}

/// `report.json`.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub routed_per_s: Option<f64>,
    pub ingest_to_offer_p50_ms: Option<f64>,
    pub ingest_to_offer_p99_ms: Option<f64>,
    pub ingest_to_offer_p999_ms: Option<f64>,
    /// The offered rate, contacts/s, of the phase the latencies come from
    /// (the target is at 1,000/s).
    pub ingest_to_offer_at_rate_per_s: Option<f64>,
    pub etcd_requests_per_contact: Option<f64>,
    /// Envelopes the nodes sent each other per routed contact (the bench's
    /// own nodes; null with --target or one node).
    pub node_envelopes_per_contact: Option<f64>,
    pub etcd_bytes_per_active_conversation: Option<f64>,
    pub migration_pause_p50_ms: Option<f64>,
    pub migration_pause_p99_ms: Option<f64>,
    /// From SIGTERM until the drained node's process exited.
    pub drain_s: Option<f64>,
    /// p50 over the repetitions.
    pub failover_s: Option<f64>,
    /// The TTL etcd granted the killed node's membership lease.
    pub failover_lease_ttl_s: Option<f64>,
    pub actors_per_node: Option<f64>,
    pub customer_actors_in_cluster: Option<f64>,
    pub bytes_per_idle_actor: Option<f64>,
    /// The bench's agents online (Admin.ListAgents) at the end of the
    /// scale scenario.
    pub agents_online: Option<f64>,
    /// quality: the mean wait (offer − arrival) measured, what Erlang C
    /// predicts for the same queue, and measured / predicted.
    pub wait_mean_ms: Option<f64>,
    pub wait_mean_erlang_c_ms: Option<f64>,
    pub wait_mean_to_erlang_c: Option<f64>,
    pub grpc_ceiling_per_s: Option<f64>,
    pub etcd_put_ceiling_per_s: Option<f64>,
    /// Whether the phase `routed_per_s` comes from saturated the system
    /// (if not, `routed_per_s` is the offered load, not a capacity).
    pub routed_saturated: Option<bool>,
    /// `routed_per_s / grpc_ceiling_per_s`.
    pub routed_to_grpc_ceiling: Option<f64>,
    /// The etcd requests per second the routed load made (routed/s x
    /// requests per contact) over the etcd put ceiling: the share of the
    /// durability ceiling in use.
    pub etcd_load_to_put_ceiling: Option<f64>,
    /// Scenarios the run was asked for (by `all`) and did not run.
    pub not_measured: Vec<String>,
    pub parameters: serde_json::Value,
    pub system: serde_json::Value,
    pub phases: Vec<Phase>,
    pub grpc_ceiling: Option<Ceiling>,
    pub etcd_put_ceiling: Option<Ceiling>,
}

/// One CSV line (no newline). Times in seconds with microsecond precision;
/// empty fields for what never happened.
pub fn csv_row(
    id: usize,
    c: &Contact,
    class: &str,
    channel: &str,
    agent: Option<&str>,
    node: Option<&str>,
) -> String {
    let t = |v: Option<f64>| v.map(|s| format!("{s:.6}")).unwrap_or_default();
    format!(
        "{id},{class},{channel},{:.6},{},{},{},{}",
        c.arrival,
        t(c.offer),
        t(c.accept),
        agent.unwrap_or_default(),
        node.unwrap_or_default()
    )
}

/// How a number compares with its target.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Goal {
    AtLeast(f64),
    AtMost(f64),
    Below(f64),
    None,
}

/// "target" and "ratio" columns of the summary.
pub fn against(value: Option<f64>, goal: Goal) -> (String, String) {
    let (target, t) = match goal {
        Goal::AtLeast(t) => (format!(">= {}", num(t)), t),
        Goal::AtMost(t) => (format!("<= {}", num(t)), t),
        Goal::Below(t) => (format!("< {}", num(t)), t),
        Goal::None => return ("-".into(), "-".into()),
    };
    let Some(v) = value else {
        return (target, "-".into());
    };
    let ratio = v / t;
    let verdict = match goal {
        Goal::AtLeast(_) if ratio >= 1.0 => "met".to_owned(),
        Goal::AtLeast(_) => format!("missed by {:.0}%", (1.0 - ratio) * 100.0),
        Goal::AtMost(_) if ratio <= 1.0 => "met".to_owned(),
        Goal::Below(_) if ratio < 1.0 => "met".to_owned(),
        Goal::AtMost(_) | Goal::Below(_) => format!("missed: {ratio:.1}x the limit"),
        Goal::None => unreachable!(),
    };
    (target, format!("{ratio:.2}x ({verdict})"))
}

/// A number for people: thousands separated, sensible decimals.
pub fn num(v: f64) -> String {
    if !v.is_finite() {
        return v.to_string();
    }
    if v.abs() >= 100.0 {
        let s = format!("{:.0}", v.abs());
        let mut out = String::new();
        for (i, ch) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(ch);
        }
        return if v < 0.0 { format!("-{out}") } else { out };
    }
    if v.abs() >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

fn opt(v: Option<f64>, unit: &str) -> String {
    v.map(|v| format!("{} {unit}", num(v)))
        .unwrap_or_else(|| "not measured".into())
}

/// The human summary printed on stdout.
pub fn summary(r: &Report, header: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{header}");
    if let Some(dead) = r
        .system
        .get("dead_nodes")
        .and_then(|d| d.as_array())
        .filter(|d| !d.is_empty())
    {
        let _ = writeln!(
            s,
            "WARNING: {} node(s) died during the run; the numbers describe a failing system (see the node logs)",
            dead.len()
        );
    }
    for p in &r.phases {
        let _ = writeln!(
            s,
            "\nphase {}: {}\n  offered {} contacts/s to {} agents (mean handle {} ms), {} s measured after {} s warm-up; load avg {}",
            p.scenario,
            p.what,
            num(p.rate_per_s),
            p.agents,
            num(p.handle_ms),
            num(p.duration_s),
            num(p.warmup_s),
            p.load_avg_1m.map(num).unwrap_or_else(|| "?".into()),
        );
        let _ = writeln!(
            s,
            "  in the window: submitted {} ({}/s), acked {}, failed {}, offered {}, accepted {} ({} by window end), never offered {}",
            p.submitted,
            num(p.submitted_per_s),
            p.acked,
            p.failed,
            p.offered,
            p.accepted,
            p.routed,
            p.never_offered
        );
        let _ = writeln!(
            s,
            "  routed {}/s (accepts in window {}/s); skipped by generator {}; generator lag max {} ms; mean in flight {}",
            num(p.routed_per_s),
            num(p.accepted_in_window_per_s),
            p.skipped_by_generator,
            num(p.generator_max_lag_ms),
            num(p.mean_in_flight)
        );
        for (name, l) in [
            ("ingest->ack", &p.ingest_to_ack),
            ("ingest->offer", &p.ingest_to_offer),
            ("offer->accept", &p.offer_to_accept),
        ] {
            if let Some(l) = l {
                let _ = writeln!(
                    s,
                    "  {name:<14} p50 {} ms, p99 {} ms, p99.9 {} ms, max {} ms (n={})",
                    num(l.p50_ms),
                    num(l.p99_ms),
                    num(l.p999_ms),
                    num(l.max_ms),
                    l.count
                );
            }
        }
        if p.abandoned > 0 {
            let _ = writeln!(
                s,
                "  abandoned before an offer: {} ({:.1}% of those submitted)",
                p.abandoned,
                100.0 * p.abandoned as f64 / p.submitted.max(1) as f64
            );
        }
        if p.accept_errors
            + p.wrap_up_errors
            + p.resolve_errors
            + p.offers_revoked
            + p.sessions_lost
            > 0
        {
            let _ = writeln!(
                s,
                "  accept errors {}, wrap-up errors {}, resolve errors {}, offers revoked {}, desktop sessions lost {}",
                p.accept_errors,
                p.wrap_up_errors,
                p.resolve_errors,
                p.offers_revoked,
                p.sessions_lost
            );
        }
        if let Some(e) = &p.etcd {
            let top: Vec<String> = e
                .by_method
                .iter()
                .filter(|(_, v)| **v > 0.0)
                .map(|(k, v)| format!("{k} {}", num(*v)))
                .collect();
            let _ = writeln!(
                s,
                "  etcd: {} requests in the window ({} per routed contact, {} per acknowledged contact): {}",
                num(e.requests),
                e.per_contact.map(num).unwrap_or("-".into()),
                e.per_acked_contact.map(num).unwrap_or("-".into()),
                top.join(", ")
            );
        }
        if let Some(f) = &p.etcd_footprint {
            let b = |v: Option<f64>| v.map_or("-".into(), num);
            let _ = writeln!(
                s,
                "  etcd as the window closed: {} keys, {} bytes for {} open conversations ({} B each) of {} customers: events {} B per open conversation, {} B per customer known (record, identities, ownership, placement), archive {} B",
                num(f.keys as f64),
                num(f.bytes as f64),
                f.open_conversations,
                b(f.per_open_conversation()),
                f.customers,
                b(f.events_per_open_conversation()),
                b(f.per_customer()),
                num(f.archive_bytes as f64),
            );
        }
        if let Some(e) = &p.node_envelopes {
            let by_kind: Vec<String> = e
                .per_contact_by_kind
                .iter()
                .filter(|(_, v)| **v >= 0.005)
                .map(|(k, v)| format!("{k} {v:.2}"))
                .collect();
            let _ = writeln!(
                s,
                "  envelopes between nodes: {} in the window ({} per routed contact): {}",
                num(e.envelopes),
                e.per_contact.map_or("-".into(), |v| format!("{v:.2}")),
                by_kind.join(", ")
            );
        }
        if !p.cpu_cores.is_empty() {
            let cpu: Vec<String> = p
                .cpu_cores
                .iter()
                .map(|(k, v)| format!("{k} {v:.2}"))
                .collect();
            let _ = writeln!(
                s,
                "  CPU cores used in the window: {} (total {:.2})",
                cpu.join(", "),
                p.cpu_cores.values().sum::<f64>()
            );
        }
        if p.saturated {
            let _ = writeln!(
                s,
                "  SATURATED: the system did not keep up with the offered load; routed/s is what it sustained"
            );
        } else {
            let _ = writeln!(
                s,
                "  not saturated: routed/s is the offered load, not a capacity"
            );
        }
    }

    let _ = writeln!(
        s,
        "\n{:<34} {:>16} {:>12}  ratio to target",
        "number", "measured", "target"
    );
    let rows: [(&str, Option<f64>, &str, Goal); 13] = [
        (
            "routed contacts/s (end to end)",
            r.routed_per_s,
            "/s",
            Goal::AtLeast(TARGET_ROUTED_PER_S),
        ),
        (
            "ingest->offer p50",
            r.ingest_to_offer_p50_ms,
            "ms",
            Goal::None,
        ),
        (
            "ingest->offer p99",
            r.ingest_to_offer_p99_ms,
            "ms",
            Goal::Below(TARGET_OFFER_P99_MS),
        ),
        (
            "ingest->offer p99.9",
            r.ingest_to_offer_p999_ms,
            "ms",
            Goal::None,
        ),
        (
            "etcd requests per routed contact",
            r.etcd_requests_per_contact,
            "",
            Goal::AtMost(TARGET_ETCD_PER_CONTACT),
        ),
        (
            "migration pause p99",
            r.migration_pause_p99_ms,
            "ms",
            Goal::Below(TARGET_MIGRATION_P99_MS),
        ),
        (
            "failover (p50)",
            r.failover_s,
            "s",
            Goal::Below(TARGET_FAILOVER_S),
        ),
        ("drain of a node", r.drain_s, "s", Goal::None),
        (
            "etcd bytes per active conversation",
            r.etcd_bytes_per_active_conversation,
            "B",
            Goal::None,
        ),
        (
            "customer actors in the cluster",
            r.customer_actors_in_cluster,
            "",
            Goal::AtLeast(TARGET_CUSTOMER_ACTORS),
        ),
        ("actors per node", r.actors_per_node, "", Goal::None),
        (
            "bytes per idle actor",
            r.bytes_per_idle_actor,
            "B",
            Goal::None,
        ),
        (
            "agents online",
            r.agents_online,
            "",
            Goal::AtLeast(TARGET_AGENTS_ONLINE),
        ),
    ];
    for (name, v, unit, goal) in rows {
        let (target, mut ratio) = against(v, goal);
        if goal == Goal::AtLeast(TARGET_ROUTED_PER_S) && r.routed_saturated == Some(false) {
            ratio.push_str("; the offered load, not saturated");
        }
        if goal == Goal::Below(TARGET_OFFER_P99_MS)
            && let Some(rate) = r.ingest_to_offer_at_rate_per_s
            && (rate - TARGET_OFFER_RATE_PER_S).abs() > 0.5
        {
            let _ = write!(
                ratio,
                "; at {}/s, the target is at {}/s",
                num(rate),
                num(TARGET_OFFER_RATE_PER_S)
            );
        }
        let target = if target == "-" {
            target
        } else {
            format!("{target} {unit}").trim_end().to_owned()
        };
        let _ = writeln!(s, "{name:<34} {:>16} {target:>12}  {ratio}", opt(v, unit));
    }
    let measured_ceilings = r.grpc_ceiling.is_some() || r.etcd_put_ceiling.is_some();
    if !measured_ceilings && r.phases.is_empty() {
        // A scenario without load phases (migration, failover, drain,
        // scale) measures no ceiling.
        return not_measured(s, r);
    }
    let _ = writeln!(s, "\nceilings, measured in this process on this machine:");
    for (c, ratio) in [
        (
            &r.grpc_ceiling,
            r.routed_to_grpc_ceiling
                .map(|x| format!("routed/grpc_ceiling = {x:.3}")),
        ),
        (
            &r.etcd_put_ceiling,
            r.etcd_requests_per_contact.map(|x| {
                let share = r.etcd_load_to_put_ceiling.map_or_else(String::new, |s| {
                    format!(", routed x requests/contact / etcd_put_ceiling = {s:.3}")
                });
                format!("etcd requests/contact = {x:.2}{share}")
            }),
        ),
    ] {
        if let Some(c) = c {
            let l = c
                .latency
                .as_ref()
                .map(|l| format!(", p50 {} ms, p99 {} ms", num(l.p50_ms), num(l.p99_ms)))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "  {:<28} {:>10}/s at {} in flight over {} connection(s){l}; {}",
                c.what,
                num(c.per_s),
                c.concurrency,
                c.connections,
                ratio.unwrap_or_else(|| "-".into())
            );
        }
    }
    if r.etcd_put_ceiling.is_none() {
        let _ = writeln!(
            s,
            "  etcd put ceiling             not measured (no etcd in this run)"
        );
    }
    not_measured(s, r)
}

/// Ends the summary with the scenarios asked for and left out.
fn not_measured(mut s: String, r: &Report) -> String {
    if !r.not_measured.is_empty() {
        let _ = writeln!(
            s,
            "\nnot measured: {} (fields are null in report.json)",
            r.not_measured.join(", ")
        );
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_come_from_the_histogram() {
        // 1..=1000 ms: p50 = 500 ms, p99 = 990 ms, p99.9 = 999 ms (3 digits).
        let l = latency((1..=1000).map(|ms| f64::from(ms) / 1_000.0)).unwrap();
        assert_eq!(l.count, 1000);
        assert!((l.p50_ms - 500.0).abs() <= 0.5, "{l:?}");
        assert!((l.p99_ms - 990.0).abs() <= 1.0, "{l:?}");
        assert!((l.p999_ms - 999.0).abs() <= 1.0, "{l:?}");
        assert!((l.max_ms - 1000.0).abs() <= 1.0, "{l:?}");
        assert!((l.mean_ms - 500.5).abs() <= 0.5, "{l:?}");
        // Sub-millisecond values keep their microseconds.
        let l = latency([0.000_250, 0.000_250, 0.000_750]).unwrap();
        assert_eq!(l.p50_ms, 0.25);
        assert!(latency(std::iter::empty()).is_none());
    }

    #[test]
    fn csv_rows_leave_what_never_happened_empty() {
        let done = Contact {
            arrival: 1.5,
            offer: Some(1.501_25),
            accept: Some(1.6),
            ..Contact::default()
        };
        assert_eq!(
            csv_row(7, &done, "gold", "chat", Some("bench-a-3"), Some("n2")),
            "7,gold,chat,1.500000,1.501250,1.600000,bench-a-3,n2"
        );
        let waiting = Contact {
            arrival: 2.0,
            ..Contact::default()
        };
        assert_eq!(
            csv_row(8, &waiting, "normal", "voice", None, None),
            "8,normal,voice,2.000000,,,,"
        );
        assert_eq!(
            csv_row(0, &waiting, "a", "b", None, None)
                .split(',')
                .count(),
            CSV_HEADER.split(',').count()
        );
    }

    #[test]
    fn ratios_say_met_or_by_how_much() {
        assert_eq!(
            against(Some(2_500.0), Goal::AtLeast(5_000.0)),
            (">= 5,000".into(), "0.50x (missed by 50%)".into())
        );
        assert_eq!(
            against(Some(2.5), Goal::Below(5.0)),
            ("< 5.00".into(), "0.50x (met)".into())
        );
        assert_eq!(
            against(Some(10.0), Goal::Below(5.0)).1,
            "2.00x (missed: 2.0x the limit)"
        );
        assert_eq!(against(None, Goal::Below(5.0)).1, "-");
        assert_eq!(num(12_345.6), "12,346");
        assert_eq!(num(123.0), "123");
        assert_eq!(num(0.1234), "0.12");
    }
}
