//! The `failover` scenario: the time from a node's SIGKILL until every
//! waiting customer it held is queued again on the survivors, with nothing
//! lost (brief: "failover under 3 s").
//!
//! The bench's own cluster (3 nodes unless `--nodes`), no agent logged in,
//! so every customer waits. Each of `--repeat` repetitions:
//!
//! 1. brings the cluster back to its size (a new node `n<k>` replaces the
//!    one killed before) and waits until every node lists every member;
//! 2. creates `--customers` new waiting customers ([`population`]), spread
//!    by placement, and waits until the router lists each as queued;
//! 3. picks the victim: with `--victim other` (the default) the node that
//!    owns the most of the bench's customers among those that do not host
//!    the router (etcd's `owners/router/main`); with `--victim router`, the
//!    router's node: a survivor must then take the router over too, and
//!    every node report what it holds to the new router;
//! 4. reads whom the victim owns (etcd's `owners/customer/`) and how long
//!    each has waited (Admin.ListConversations), then SIGKILLs it and polls
//!    every [`POLL`] until each of those customers is owned by a survivor
//!    AND listed as queued by the router (asked of a survivor): the
//!    failover time;
//! 5. checks that each kept its original waiting time (its `waited_ms`
//!    grew by at least the time that passed, less [`WAIT_SLACK`]: a
//!    customer queued afresh would have lost the seconds before the kill)
//!    and its conversation (Gateway.GetConversation on the survivors).
//!
//! The failover time includes etcd noticing the lease's expiry (the TTL,
//! which etcd grants in whole seconds and checks every 500 ms) and the
//! survivors recovering the customers from the journal; the report gives
//! the TTL granted to the victim's lease and the p50 over the repetitions.
//! A repetition that does not finish within [`deadline`] ends the
//! scenario: what remained is reported.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::ValueEnum;
use serde::Serialize;

use super::keys::ClusterKeys;
use super::population::{self, Created, is_queued};
use super::report::{self, Latency};
use super::system::System;

/// How often the condition is polled after the kill.
pub const POLL: Duration = Duration::from_millis(20);
/// How much shorter than expected a recovered customer's waiting time may
/// be (clock reads and the router's 20 ms tick); far below the seconds a
/// customer queued afresh would lose.
pub const WAIT_SLACK: Duration = Duration::from_millis(500);
/// How long the bench waits for the cluster to settle between steps.
const SETTLE: Duration = Duration::from_secs(60);
/// Submits in flight while customers are created.
const IN_FLIGHT: usize = 32;
/// New customers per repetition unless `--customers` says otherwise: the
/// victim holds about a third of them, and of earlier repetitions'.
pub const DEFAULT_CUSTOMERS: usize = 150;

/// Which node dies.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Victim {
    /// A node that does not host the router, the one owning the most
    /// waiting customers.
    Other,
    /// The node hosting the router.
    Router,
}

impl Victim {
    pub fn name(self) -> &'static str {
        match self {
            Victim::Other => "other",
            Victim::Router => "router",
        }
    }
}

/// What the scenario is asked to do.
pub struct Spec {
    pub nodes: usize,
    pub customers: usize,
    pub repeat: usize,
    pub victim: Victim,
    pub tag: String,
}

/// One repetition.
#[derive(Debug, Serialize)]
pub struct Run {
    pub victim: String,
    pub router: Option<String>,
    /// Waiting customers the victim owned when it was killed.
    pub held: usize,
    /// The TTL etcd granted the victim's membership lease, s.
    pub lease_ttl_s: Option<i64>,
    /// From SIGKILL until every held customer was owned by a survivor and
    /// queued; `None` if that did not happen within the deadline.
    pub failover_s: Option<f64>,
    /// At the deadline: held customers no survivor owned, and those the
    /// router did not list as queued.
    pub not_owned: usize,
    pub not_queued: usize,
    /// Held customers whose waiting time was reset, with examples.
    pub lost_wait: usize,
    pub lost_wait_examples: Vec<String>,
    /// Held customers whose conversation was not intact.
    pub history: population::Checked,
    /// Customers of the run (every repetition's) no longer queued after
    /// this one; `None` if the router could not be asked.
    pub others_not_queued: Option<usize>,
    /// What the survivors logged: customers recovered from the victim, and
    /// the longest recovery pass, ms.
    pub recovered_logged: u64,
    pub recovery_ms_logged: Option<u64>,
}

/// What the scenario measured.
#[derive(Debug, Serialize)]
pub struct Measured {
    pub victim: Victim,
    pub runs: Vec<Run>,
    /// Over the repetitions that finished.
    pub failover: Option<Latency>,
    pub lease_ttl_s: Option<i64>,
    pub customers_created: usize,
    pub create_failed: u64,
    pub create_first_error: Option<String>,
}

/// The deadline of one repetition: generous next to a lease TTL of a few
/// seconds, short enough that a cluster that never recovers (today: a
/// killed router) does not stall the run.
pub fn deadline(lease_ttl_s: Option<i64>) -> Duration {
    Duration::from_secs(30.max(10 * lease_ttl_s.unwrap_or(2).max(1) as u64))
}

/// Runs the scenario on the bench's own cluster.
pub async fn measure(system: &mut System, spec: &Spec) -> anyhow::Result<Measured> {
    if spec.nodes < 2 {
        bail!(
            "the failover scenario needs at least 2 nodes (one to kill, one to take its customers), got --nodes {}",
            spec.nodes
        );
    }
    let keys = system.keys().await?;
    let mut all: Vec<Created> = Vec::new();
    let mut m = Measured {
        victim: spec.victim,
        runs: Vec::new(),
        failover: None,
        lease_ttl_s: None,
        customers_created: 0,
        create_failed: 0,
        create_first_error: None,
    };
    for rep in 0..spec.repeat {
        while system.targets.len() < spec.nodes {
            let t = system.add_node().await?;
            eprintln!(
                "bench: failover: {} joins to replace the killed node",
                t.name
            );
        }
        population::wait_members(&system.targets, SETTLE).await?;
        let from = (rep * spec.customers) as u64;
        let made = population::create(
            &system.targets,
            &spec.tag,
            "fo",
            from..from + spec.customers as u64,
            IN_FLIGHT,
        )
        .await?;
        m.create_failed += made.failed;
        if m.create_first_error.is_none() {
            m.create_first_error = made.first_error;
        }
        all.extend(made.created);
        m.customers_created = all.len();
        let run = repetition(system, &keys, spec, &all, rep).await?;
        let done = run.failover_s.is_some();
        m.runs.push(run);
        if !done {
            eprintln!("bench: failover: the repetition did not finish; no further repetition");
            break;
        }
    }
    m.failover = report::latency(m.runs.iter().filter_map(|r| r.failover_s));
    m.lease_ttl_s = m.runs.iter().find_map(|r| r.lease_ttl_s);
    Ok(m)
}

/// One kill, with everything before and after it (module docs, steps 3-5).
async fn repetition(
    system: &mut System,
    keys: &ClusterKeys,
    spec: &Spec,
    all: &[Created],
    rep: usize,
) -> anyhow::Result<Run> {
    let live: Vec<String> = system.targets.iter().map(|t| t.name.clone()).collect();
    let before = population::admin(system.targets[0].connect().await?);
    // No agent is logged in, so every customer should wait.
    population::wait_queued(&before, all, SETTLE)
        .await
        .context("the customers created for the failover, in the router's queue")?;
    let owners = keys.owners().await?;
    let router = keys.router().await?;
    let victim = pick_victim(spec.victim, &owners, all, &live, router.as_deref())?;
    let survivors: Vec<String> = live.iter().filter(|n| **n != victim).cloned().collect();
    let held: Vec<&Created> = all
        .iter()
        .filter(|c| owners.get(&c.customer) == Some(&victim))
        .collect();
    if held.is_empty() {
        bail!(
            "node {victim} owns none of the {} waiting customers: nothing to fail over (--customers is too small?)",
            all.len()
        );
    }
    let lease_ttl_s = keys.lease_ttl_s(&victim).await?;
    // Connections to a survivor are made before the kill, so that the
    // polling measures the cluster, not a TCP handshake.
    let survivor = system
        .targets
        .iter()
        .find(|t| t.name != victim)
        .context("no survivor")?
        .clone();
    let mut admin = population::admin(survivor.connect().await?);
    let listed = population::conversations(&mut admin)
        .await
        .context("Admin.ListConversations before the kill")?;
    let waited_before: BTreeMap<&str, i64> = held
        .iter()
        .filter_map(|c| {
            Some((
                c.conversation.as_str(),
                listed.get(&c.conversation)?.waited_ms,
            ))
        })
        .collect();
    let listed_at = Instant::now();
    eprintln!(
        "bench: failover {}/{}: SIGKILL {victim} (router on {}), holding {} of {} waiting customers (owners by node {:?}); lease TTL {} s",
        rep + 1,
        spec.repeat,
        router.as_deref().unwrap_or("no node"),
        held.len(),
        all.len(),
        by_node(&owners),
        lease_ttl_s.map_or("?".into(), |t| t.to_string())
    );

    let killed = Instant::now();
    system.kill(&victim)?;
    let give_up = killed + deadline(lease_ttl_s);
    let (mut not_owned, mut not_queued);
    let (failover_s, last_list, last_list_at) = loop {
        let owners = keys.owners().await.unwrap_or_default();
        let listed = population::conversations(&mut admin).await.ok();
        let at = Instant::now();
        not_owned = held
            .iter()
            .filter(|c| {
                !owners
                    .get(&c.customer)
                    .is_some_and(|n| survivors.contains(n))
            })
            .count();
        not_queued = held
            .iter()
            .filter(|c| !listed.as_ref().is_some_and(|l| is_queued(l, c)))
            .count();
        if not_owned == 0 && not_queued == 0 {
            break (Some(killed.elapsed().as_secs_f64()), listed, at);
        }
        if Instant::now() >= give_up {
            eprintln!(
                "bench: failover: {:?} after SIGKILL, {not_owned} of {victim}'s {} customers have no survivor owner and {not_queued} are not queued",
                deadline(lease_ttl_s),
                held.len(),
            );
            break (None, listed, at);
        }
        tokio::time::sleep(POLL).await;
    };
    if let Some(s) = failover_s {
        eprintln!(
            "bench: failover: every customer of {victim} queued again {s:.3} s after SIGKILL"
        );
    }

    // Waiting times kept: waited_ms grew by at least the time that passed.
    let grew_by = last_list_at.duration_since(listed_at).as_millis() as i64;
    let slack = WAIT_SLACK.as_millis() as i64;
    let mut lost_wait_examples = Vec::new();
    let mut lost_wait = 0;
    if let Some(listed) = &last_list {
        for (conv, before) in &waited_before {
            let Some(now) = listed.get(*conv).map(|s| s.waited_ms) else {
                continue;
            };
            if now < before + grew_by - slack {
                lost_wait += 1;
                if lost_wait_examples.len() < 5 {
                    lost_wait_examples.push(format!(
                        "{conv} waited {before} ms before the kill and {now} ms {grew_by} ms later"
                    ));
                }
            }
        }
    }
    let others_not_queued = last_list
        .as_ref()
        .map(|l| all.iter().filter(|c| !is_queued(l, c)).count());
    let held_owned: Vec<Created> = held.iter().map(|c| (*c).clone()).collect();
    let history = if failover_s.is_some() {
        population::check(&system.targets, &held_owned, IN_FLIGHT).await?
    } else {
        population::Checked::default()
    };
    let (recovered_logged, recovery_ms_logged) = recovery_logged(system, &survivors, &victim);
    Ok(Run {
        victim,
        router,
        held: held.len(),
        lease_ttl_s,
        failover_s,
        not_owned,
        not_queued,
        lost_wait,
        lost_wait_examples,
        history,
        others_not_queued,
        recovered_logged,
        recovery_ms_logged,
    })
}

/// The node to kill: see the module docs, step 3.
fn pick_victim(
    victim: Victim,
    owners: &BTreeMap<String, String>,
    customers: &[Created],
    live: &[String],
    router: Option<&str>,
) -> anyhow::Result<String> {
    match victim {
        Victim::Router => {
            let r = router.context("no node hosts the router (owners/router/main is empty)")?;
            if !live.iter().any(|n| n == r) {
                bail!("the router's node {r} is not one of the live nodes {live:?}");
            }
            Ok(r.to_owned())
        }
        Victim::Other => {
            let mut held: BTreeMap<&str, usize> = BTreeMap::new();
            for c in customers {
                if let Some(n) = owners.get(&c.customer) {
                    *held.entry(n.as_str()).or_default() += 1;
                }
            }
            live.iter()
                .filter(|n| Some(n.as_str()) != router)
                .max_by_key(|n| {
                    (
                        held.get(n.as_str()).copied().unwrap_or(0),
                        std::cmp::Reverse(*n),
                    )
                })
                .cloned()
                .with_context(|| format!("every live node ({live:?}) hosts the router?"))
        }
    }
}

/// From the survivors' logs: customers recovered from `victim` and the
/// longest recovery pass (`recovered customers of a dead node
/// recovered=N from=Some("<victim>") ms=M`).
fn recovery_logged(system: &System, survivors: &[String], victim: &str) -> (u64, Option<u64>) {
    let from = format!("from=Some(\"{victim}\")");
    let lines: Vec<String> = survivors
        .iter()
        .flat_map(|s| system.log_lines_with(s, "recovered customers of a dead node"))
        .filter(|l| l.contains(&from))
        .collect();
    let recovered = lines.iter().filter_map(|l| log_field(l, "recovered")).sum();
    let ms = lines.iter().filter_map(|l| log_field(l, "ms")).max();
    (recovered, ms)
}

/// The number after ` name=` in a log line.
pub fn log_field(line: &str, name: &str) -> Option<u64> {
    let at = line.find(&format!(" {name}="))? + name.len() + 2;
    line[at..]
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

impl Measured {
    /// Customers lost over the repetitions.
    fn lost(&self) -> usize {
        self.runs.iter().map(Run::lost).sum()
    }
}

impl super::Outcome for Measured {
    fn fill(&self, report: &mut super::Report) {
        report.failover_s = self.failover.as_ref().map(|l| l.p50_ms / 1_000.0);
        report.failover_lease_ttl_s = self.lease_ttl_s.map(|t| t as f64);
    }

    fn header(&self, system: &str) -> String {
        let secs = |ms: f64| format!("{:.3} s", ms / 1_000.0);
        let mut s = format!(
            "centralino bench: scenario failover, {system}, victim {}: {} of {} repetitions recovered; failover p50 {}, max {} with a lease TTL of {} s; customers whose conversation, waiting time or place in the queue was lost: {}",
            self.victim.name(),
            self.failover.as_ref().map_or(0, |l| l.count),
            self.runs.len(),
            self.failover
                .as_ref()
                .map_or("-".into(), |l| secs(l.p50_ms)),
            self.failover
                .as_ref()
                .map_or("-".into(), |l| secs(l.max_ms)),
            self.lease_ttl_s.map_or("?".into(), |t| t.to_string()),
            self.lost(),
        );
        for (i, r) in self.runs.iter().enumerate() {
            s.push_str(&format!("\n  repetition {}: {}", i + 1, r.describe()));
        }
        s
    }

    fn failure(&self) -> Option<String> {
        if self.runs.iter().any(|r| r.failover_s.is_none()) {
            return Some(
                "a node's waiting customers were not all queued again on the survivors in time"
                    .into(),
            );
        }
        (self.lost() > 0).then(|| {
            format!(
                "{} customers lost their conversation, waiting time or place in the queue",
                self.lost()
            )
        })
    }
}

impl Run {
    /// Customers this repetition lost: their conversation, their waiting
    /// time or their place in the queue. Only a finished repetition has
    /// checked them.
    fn lost(&self) -> usize {
        self.history.lost + self.lost_wait + self.others_not_queued.unwrap_or(0)
    }

    /// The summary's lines about it.
    fn describe(&self) -> String {
        let outcome = match self.failover_s {
            Some(f) => format!(
                "all queued again on survivors after {f:.3} s; waiting times reset {}, conversations lost {} of {}, customers of earlier repetitions not queued {}",
                self.lost_wait,
                self.history.lost,
                self.history.checked,
                self.others_not_queued.map_or("?".into(), |n| n.to_string()),
            ),
            None => format!(
                "NOT RECOVERED within {:?}: {} not owned by a survivor, {} not listed as queued{}",
                deadline(self.lease_ttl_s),
                self.not_owned,
                self.not_queued,
                if self.router.as_deref() == Some(self.victim.as_str()) {
                    " (the router was on it: no survivor took it over)"
                } else {
                    ""
                }
            ),
        };
        let mut s = format!(
            "killed {} (router on {}) holding {} waiting customers: {outcome}; survivors logged {} recovered{}",
            self.victim,
            self.router.as_deref().unwrap_or("-"),
            self.held,
            self.recovered_logged,
            self.recovery_ms_logged
                .map_or(String::new(), |ms| format!(" (longest pass {ms} ms)")),
        );
        for e in self.lost_wait_examples.iter().chain(&self.history.examples) {
            s.push_str(&format!("\n    {e}"));
        }
        s
    }
}

/// The customers each node owns, for the log.
pub fn by_node(owners: &BTreeMap<String, String>) -> BTreeMap<String, usize> {
    let mut by = BTreeMap::new();
    for n in owners.values() {
        *by.entry(n.clone()).or_default() += 1;
    }
    by
}

#[cfg(test)]
mod tests {
    use super::*;

    fn customer(n: u32) -> Created {
        Created {
            customer: format!("cu-{n}"),
            conversation: format!("cu-{n}.1"),
            seq: 1,
            text: String::new(),
        }
    }

    #[test]
    fn the_victim_is_the_busiest_node_without_the_router_unless_asked() {
        let owners: BTreeMap<String, String> = [
            (1, "n1"),
            (2, "n1"),
            (3, "n1"),
            (4, "n2"),
            (5, "n3"),
            (6, "n3"),
        ]
        .into_iter()
        .map(|(c, n)| (format!("cu-{c}"), n.to_owned()))
        .collect();
        let customers: Vec<Created> = (1..=6).map(customer).collect();
        let live: Vec<String> = ["n1", "n2", "n3"].map(String::from).to_vec();
        let pick = |v, router| pick_victim(v, &owners, &customers, &live, router).ok();
        assert_eq!(pick(Victim::Other, Some("n1")).as_deref(), Some("n3"));
        assert_eq!(pick(Victim::Other, Some("n3")).as_deref(), Some("n1"));
        assert_eq!(pick(Victim::Router, Some("n2")).as_deref(), Some("n2"));
        assert_eq!(pick(Victim::Router, None), None);
        assert_eq!(pick(Victim::Router, Some("n9")), None);
        assert_eq!(by_node(&owners).get("n1"), Some(&3));
    }

    #[test]
    fn log_fields_are_read_by_name() {
        let line = r#"2026-01-01T00:00:00Z  INFO recovered customers of a dead node recovered=42 from=Some("n2") ms=317"#;
        assert_eq!(log_field(line, "recovered"), Some(42));
        assert_eq!(log_field(line, "ms"), Some(317));
        assert_eq!(log_field(line, "moved"), None);
    }
}
