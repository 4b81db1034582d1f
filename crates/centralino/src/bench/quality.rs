//! The `quality` scenario: do customers wait what queueing theory says a
//! work-conserving priority queue makes them wait? (brief, "How good it
//! must be": Erlang C for one class.)
//!
//! Poisson arrivals on one channel, exponential handle times, identical
//! agents without wrap-up or abandonment, one queue: an M/M/c queue with
//! `c` = agents x the contacts each can hold at once. Its defaults (17
//! voice contacts/s, 1 s handle time, 20 agents: 85% busy) make the mean
//! wait (about 130 ms) large beside the routing latency that every wait
//! also holds, and the 180 s window about 20 times the queue's relaxation
//! time, so the measured mean is a statistic, not an anecdote.
//!
//! What it reports, predicted ([`queueing`](super::queueing)) beside
//! measured (offer − arrival of the contacts that arrived in the window):
//! the chance of waiting longer than a few multiples of the mean wait of
//! those who wait, the mean wait with a 95% confidence interval (batch
//! means over ten slices of the window), the p50/p90/p99 waits, and per
//! priority class its mean wait (Cobham's formula: strict priority, which
//! the nodes' virtual deadlines are while waits stay far below the boosts
//! between classes). Nothing in it is a target: a measured mean far outside
//! the interval of the prediction says the router is not work-conserving
//! or not serving in priority order, or that routing latency dominates.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use centralino_core::Channel;
use centralino_core::priority::{PriorityInputs, PriorityPolicy};
use serde::Serialize;

use super::load::{self, Env, PhaseSpec};
use super::queueing::Mmc;
use super::report::{self, Phase};
use super::system::System;
use super::tracker::Clock;
use super::workload::{Class, Mix};

/// Slices of the window for the batch-means confidence interval.
const BATCHES: usize = 10;
/// Student's t at 95%, two-sided, for `BATCHES - 1` degrees of freedom.
const T_95_9_DOF: f64 = 2.262;

/// What the scenario runs.
pub struct Spec {
    pub phase: PhaseSpec,
    pub classes: Arc<Mix<Class>>,
    pub channels: Arc<Mix<Channel>>,
    pub tag: String,
    /// Where contacts.csv goes.
    pub out: PathBuf,
    /// The nodes run a configuration the bench did not write (--node-config
    /// or --target): queues, skills or boosts may differ from the model's.
    pub foreign_config: bool,
}

/// What the scenario measured.
#[derive(Serialize)]
pub struct Measured {
    pub phase: Phase,
    /// The M/M/c queue the workload makes, if it makes one.
    pub model: Option<Model>,
    /// Why there is no model, when there is none.
    pub not_modelled: Option<String>,
    /// Prediction beside measurement (with a model and offered contacts).
    pub comparison: Option<Comparison>,
}

/// The queue the workload makes.
#[derive(Clone, Debug, Serialize)]
pub struct Model {
    pub queue: Mmc,
    /// Contacts one agent holds at once (its capacity over the channel's
    /// cost).
    pub per_agent: u32,
    pub offered_load_erlangs: f64,
    pub utilisation: f64,
    pub p_wait: f64,
    /// What the prediction takes for granted.
    pub assumptions: String,
}

/// One priority class as the model sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ClassModel {
    pub name: String,
    pub share: f64,
    /// How far ahead of plain contacts its virtual deadline falls.
    pub boost_ms: u64,
}

/// The wait of one contact that arrived in the window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Wait {
    pub class: usize,
    pub arrival: f64,
    pub wait_s: f64,
}

/// Predicted beside measured.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Comparison {
    /// Contacts that arrived in the window and were offered.
    pub contacts: usize,
    /// Arrived in the window, never offered (left out of the waits).
    pub never_offered: u64,
    pub mean_wait_ms: Pair,
    /// The measured mean's 95% confidence interval, ms (batch means).
    pub mean_wait_ci95_ms: Option<(f64, f64)>,
    /// measured / predicted.
    pub mean_wait_ratio: f64,
    /// P(wait > t) at multiples of the mean wait of those who wait.
    pub tail: Vec<TailPoint>,
    /// Waits at p50, p90 and p99, ms.
    pub quantiles: Vec<QuantilePoint>,
    /// Per class, in the order they are served (one entry per class of the
    /// mix; classes with the same boost share a prediction).
    pub classes: Vec<ClassWait>,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Pair {
    pub predicted: f64,
    pub measured: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct TailPoint {
    pub t_ms: f64,
    pub predicted: f64,
    pub measured: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct QuantilePoint {
    pub quantile: f64,
    pub predicted_ms: f64,
    pub measured_ms: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ClassWait {
    pub class: String,
    pub share: f64,
    pub boost_ms: u64,
    pub contacts: usize,
    pub mean_wait_ms: Pair,
    pub mean_wait_ci95_ms: Option<(f64, f64)>,
}

/// The M/M/c queue `spec` makes with arrivals at `arrival_per_s` and a
/// mean handle time of `service_s` (those the run drew, which stray from
/// the configured ones by chance: at 85% busy, 4% more arrivals than asked
/// make the mean wait about 70% longer), or why it makes none.
pub fn model(spec: &Spec, arrival_per_s: f64, service_s: f64) -> Result<Model, String> {
    let p = &spec.phase;
    if spec.channels.shares.len() != 1 {
        return Err(format!(
            "{} channels in the mix: contacts of different costs share an agent's capacity, which is no M/M/c queue (use --channels with one channel)",
            spec.channels.shares.len()
        ));
    }
    if p.agent_kinds.shares.len() != 1 {
        return Err(
            "more than one kind of agent (--agent-mix): the agents are not identical".into(),
        );
    }
    if p.topics.shares.len() != 1 {
        return Err("more than one topic: contacts may wait in different queues".into());
    }
    if p.patience_ms.is_some() {
        return Err("customers abandon (--patience-ms): that is Erlang A, not C".into());
    }
    if p.wrap_up_ms.is_some() {
        return Err(
            "agents wrap up (--wrap-up-ms): the time an agent is held is not exponential".into(),
        );
    }
    let cost = spec.channels.shares[0].item.cost();
    let capacity = p.agent_kinds.shares[0].item.capacity;
    let per_agent = u32::try_from(capacity).unwrap_or(0) / u32::from(cost.max(1));
    let servers = u32::try_from(p.agents)
        .ok()
        .and_then(|a| a.checked_mul(per_agent))
        .filter(|s| *s > 0)
        .ok_or_else(|| {
            format!("an agent of capacity {capacity} holds no contact costing {cost}")
        })?;
    let queue = Mmc::new(servers, arrival_per_s, service_s).ok_or_else(|| {
        format!(
            "{arrival_per_s:.2} contacts/s of {:.0} ms on {servers} agents' slots is at least 100% of their time: the queue grows without bound",
            service_s * 1e3
        )
    })?;
    let mut assumptions = "arrivals and handle times as the run drew them; one queue that every agent serves; boosts of the nodes' default priority policy; an agent is busy from the offer until the router takes its resolve (the handle time plus two hops)".to_owned();
    if spec.foreign_config {
        assumptions.push_str(
            "; the nodes run a configuration the bench did not write, which may break these",
        );
    }
    Ok(Model {
        queue,
        per_agent,
        offered_load_erlangs: queue.offered_load(),
        utilisation: queue.utilisation(),
        p_wait: queue.p_wait(),
        assumptions,
    })
}

/// Each class's boost under the nodes' default policy (what the bench's
/// own nodes run): strict priority between classes with different boosts.
pub fn class_models(classes: &Mix<Class>) -> Vec<ClassModel> {
    let policy = PriorityPolicy::default();
    classes
        .shares
        .iter()
        .map(|s| {
            let inputs = PriorityInputs {
                tier: Some(s.item.tier.clone()),
                sentiment: s.item.sentiment,
                ..PriorityInputs::default()
            };
            let (deadline, _) = policy.deadline(0, &inputs);
            ClassModel {
                name: s.item.name.clone(),
                share: s.share,
                boost_ms: u64::try_from(-deadline).unwrap_or(0),
            }
        })
        .collect()
}

/// Prediction beside measurement: `waits` of the contacts that arrived in
/// `window` and were offered, `never_offered` of them not; `None` without
/// waits.
pub fn compare(
    queue: &Mmc,
    classes: &[ClassModel],
    waits: &[Wait],
    window: (f64, f64),
    never_offered: u64,
) -> Option<Comparison> {
    if waits.is_empty() {
        return None;
    }
    let all: Vec<f64> = waits.iter().map(|w| w.wait_s).collect();
    let predicted_mean = queue.mean_wait_s();
    let measured_mean = mean(&all);
    // Multiples of the mean wait of those who wait, 1/(cμ − λ).
    let scale = queue.mean_wait_s() / queue.p_wait();
    let tail = [0.25, 0.5, 1.0, 2.0, 3.0]
        .iter()
        .map(|k| {
            let t = k * scale;
            TailPoint {
                t_ms: t * 1e3,
                predicted: queue.p_wait_longer(t),
                measured: all.iter().filter(|w| **w > t).count() as f64 / all.len() as f64,
            }
        })
        .collect();
    let mut sorted = all.clone();
    sorted.sort_by(f64::total_cmp);
    let quantiles = [0.5, 0.9, 0.99]
        .iter()
        .map(|q| QuantilePoint {
            quantile: *q,
            predicted_ms: queue.wait_quantile_s(*q) * 1e3,
            measured_ms: quantile(&sorted, *q) * 1e3,
        })
        .collect();

    // Classes with equal boosts are one class to the router (FIFO between
    // equal deadlines): one prediction per boost, highest first.
    let mut boosts: Vec<u64> = classes.iter().map(|c| c.boost_ms).collect();
    boosts.sort_unstable_by(|a, b| b.cmp(a));
    boosts.dedup();
    let group_shares: Vec<f64> = boosts
        .iter()
        .map(|b| {
            classes
                .iter()
                .filter(|c| c.boost_ms == *b)
                .map(|c| c.share)
                .sum()
        })
        .collect();
    let group_waits = queue.class_mean_waits_s(&group_shares);
    let mut order: Vec<usize> = (0..classes.len()).collect();
    order.sort_by_key(|i| std::cmp::Reverse(classes[*i].boost_ms));
    let class_waits = order
        .into_iter()
        .map(|i| {
            let c = &classes[i];
            let group = boosts.iter().position(|b| *b == c.boost_ms).unwrap_or(0);
            let mine: Vec<Wait> = waits.iter().filter(|w| w.class == i).copied().collect();
            let values: Vec<f64> = mine.iter().map(|w| w.wait_s).collect();
            ClassWait {
                class: c.name.clone(),
                share: c.share,
                boost_ms: c.boost_ms,
                contacts: mine.len(),
                mean_wait_ms: Pair {
                    predicted: group_waits.get(group).copied().unwrap_or(f64::NAN) * 1e3,
                    measured: if values.is_empty() {
                        f64::NAN
                    } else {
                        mean(&values) * 1e3
                    },
                },
                mean_wait_ci95_ms: batch_means_ci(&mine, window).map(|(l, h)| (l * 1e3, h * 1e3)),
            }
        })
        .collect();

    Some(Comparison {
        contacts: waits.len(),
        never_offered,
        mean_wait_ms: Pair {
            predicted: predicted_mean * 1e3,
            measured: measured_mean * 1e3,
        },
        mean_wait_ci95_ms: batch_means_ci(waits, window).map(|(l, h)| (l * 1e3, h * 1e3)),
        mean_wait_ratio: measured_mean / predicted_mean,
        tail,
        quantiles,
        classes: class_waits,
    })
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// The value below which a share `q` of `sorted` falls.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// A 95% confidence interval of the mean wait by batch means: the window
/// cut into [`BATCHES`] slices by arrival, whose means are nearly
/// independent when a slice is long beside the queue's relaxation time.
/// `None` unless every slice has a wait.
fn batch_means_ci(waits: &[Wait], (start, end): (f64, f64)) -> Option<(f64, f64)> {
    let width = (end - start) / BATCHES as f64;
    if width.is_nan() || width <= 0.0 {
        return None;
    }
    let mut sums = [0.0; BATCHES];
    let mut counts = [0usize; BATCHES];
    for w in waits {
        let b = (((w.arrival - start) / width).floor().max(0.0) as usize).min(BATCHES - 1);
        sums[b] += w.wait_s;
        counts[b] += 1;
    }
    if counts.contains(&0) {
        return None;
    }
    let means: Vec<f64> = sums.iter().zip(counts).map(|(s, n)| s / n as f64).collect();
    let m = mean(&means);
    let var = means.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (BATCHES - 1) as f64;
    let half = T_95_9_DOF * (var / BATCHES as f64).sqrt();
    Some((m - half, m + half))
}

/// Runs the scenario on `system`'s nodes: one load phase, its contacts
/// written to `spec.out`/contacts.csv, and the comparison.
pub async fn measure(system: &System, spec: &Spec) -> anyhow::Result<Measured> {
    let env = Env::on(
        system,
        Clock::start(),
        (spec.classes.clone(), spec.channels.clone()),
        spec.tag.clone(),
    );
    let p = &spec.phase;
    eprintln!(
        "bench: phase quality: {} contacts/s, {} agents, mean handle {} ms, {} s warm-up + {} s measured",
        p.rate, p.agents, p.handle_ms, p.warmup, p.duration
    );
    let run = load::run(p.clone(), &env, 0).await?;
    let contacts = env.tracker.snapshot();
    let nodes: Vec<String> = env.targets.iter().map(|t| t.name.clone()).collect();
    super::write_contacts(
        &spec.out,
        &contacts,
        &run.agent_ids,
        &nodes,
        &spec.classes,
        &spec.channels,
    )?;
    let phase = run.summarise(&contacts);
    let handles = run.counters.handles.load(Ordering::Relaxed);
    let service_s = if handles == 0 {
        p.handle_ms / 1e3
    } else {
        run.counters.handle_us.load(Ordering::Relaxed) as f64 / handles as f64 / 1e6
    };
    let arrival_per_s = phase.submitted as f64 / (run.window.1 - run.window.0).max(f64::EPSILON);
    let (model, not_modelled) = match model(spec, arrival_per_s, service_s) {
        Ok(m) => (Some(m), None),
        Err(why) => (None, Some(why)),
    };
    let comparison = model.as_ref().and_then(|m| {
        let waits: Vec<Wait> = contacts
            .iter()
            .filter(|c| run.arrived_in_window(c))
            .filter_map(|c| {
                Some(Wait {
                    class: c.class,
                    arrival: c.arrival,
                    wait_s: c.offer? - c.arrival,
                })
            })
            .collect();
        compare(
            &m.queue,
            &class_models(&spec.classes),
            &waits,
            run.window,
            phase.never_offered,
        )
    });
    Ok(Measured {
        phase,
        model,
        not_modelled,
        comparison,
    })
}

impl super::Outcome for Measured {
    fn fill(&self, report: &mut super::Report) {
        if let Some(c) = &self.comparison {
            report.wait_mean_ms = Some(c.mean_wait_ms.measured);
            report.wait_mean_erlang_c_ms = Some(c.mean_wait_ms.predicted);
            report.wait_mean_to_erlang_c = Some(c.mean_wait_ratio);
        }
    }

    fn header(&self, system: &str) -> String {
        let p = &self.phase;
        let mut s = format!(
            "centralino bench: scenario quality, {system}: {} contacts/s, mean handle {} ms, {} agents; {} routed in {} s",
            report::num(p.rate_per_s),
            report::num(p.handle_ms),
            p.agents,
            p.routed,
            report::num(p.duration_s),
        );
        let (Some(m), Some(c)) = (&self.model, &self.comparison) else {
            s.push_str(&format!(
                "\n  no prediction: {}",
                self.not_modelled
                    .as_deref()
                    .unwrap_or("no contact was offered")
            ));
            return s;
        };
        s.push_str(&format!(
            "\n  M/M/c as drawn: {:.2} arrivals/s, mean handle {:.0} ms; c = {} ({} per agent), A = {:.2} erlangs, utilisation {:.1}%, Erlang C P(wait) = {:.3}",
            m.queue.arrival_per_s,
            m.queue.service_s * 1e3,
            m.queue.servers,
            m.per_agent,
            m.offered_load_erlangs,
            m.utilisation * 100.0,
            m.p_wait
        ));
        let ci = |ci: Option<(f64, f64)>| {
            ci.map_or("no interval".into(), |(l, h)| {
                format!("95% CI {l:.1} – {h:.1}")
            })
        };
        s.push_str(&format!(
            "\n  mean wait: predicted {:.1} ms, measured {:.1} ms ({}), ratio {:.2}; {} contacts, {} never offered",
            c.mean_wait_ms.predicted,
            c.mean_wait_ms.measured,
            ci(c.mean_wait_ci95_ms),
            c.mean_wait_ratio,
            c.contacts,
            c.never_offered
        ));
        s.push_str("\n  P(wait > t), predicted / measured:");
        for t in &c.tail {
            s.push_str(&format!(
                " {:.0} ms {:.3}/{:.3};",
                t.t_ms, t.predicted, t.measured
            ));
        }
        s.push_str("\n  waits, predicted / measured:");
        for q in &c.quantiles {
            s.push_str(&format!(
                " p{} {:.1}/{:.1} ms;",
                q.quantile * 100.0,
                q.predicted_ms,
                q.measured_ms
            ));
        }
        if c.classes.len() > 1 {
            s.push_str(
                "\n  by class (strict priority, highest first), mean wait predicted / measured:",
            );
            for k in &c.classes {
                s.push_str(&format!(
                    "\n    {} ({:.0}%, boost {} s): {:.1} / {:.1} ms ({}), {} contacts",
                    k.class,
                    k.share * 100.0,
                    k.boost_ms / 1_000,
                    k.mean_wait_ms.predicted,
                    k.mean_wait_ms.measured,
                    ci(k.mean_wait_ci95_ms),
                    k.contacts
                ));
            }
        }
        s.push_str(&format!("\n  assumes: {}", m.assumptions));
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn classes() -> Vec<ClassModel> {
        class_models(
            &Mix::parse("classes", "normal:0.8,gold:0.15,angry:0.05", Class::parse)
                .expect("a valid mix"),
        )
    }

    #[test]
    fn classes_rank_by_their_boosts_under_the_default_policy() {
        let c = classes();
        let boost = |n: &str| c.iter().find(|k| k.name == n).map(|k| k.boost_ms);
        assert_eq!(boost("normal"), Some(0));
        assert_eq!(boost("gold"), Some(30_000));
        assert!(boost("angry") > boost("gold"), "{c:?}");
    }

    /// Waits drawn from the model itself (by inverting its distribution)
    /// compare as the model: ratio 1, the tail where it should be.
    #[test]
    fn waits_that_follow_the_model_compare_equal() {
        let q = Mmc::new(20, 17.0, 1.0).expect("stable");
        let n = 10_000;
        let waits: Vec<Wait> = (0..n)
            .map(|i| {
                // Evenly spread quantiles, so the sample is the distribution.
                let u = (i as f64 + 0.5) / n as f64;
                Wait {
                    class: 0,
                    arrival: i as f64 / n as f64 * 100.0,
                    wait_s: q.wait_quantile_s(u),
                }
            })
            .collect();
        let one = vec![ClassModel {
            name: "normal".into(),
            share: 1.0,
            boost_ms: 0,
        }];
        let c = compare(&q, &one, &waits, (0.0, 100.0), 0).expect("waits");
        assert!(
            (c.mean_wait_ratio - 1.0).abs() < 0.01,
            "{}",
            c.mean_wait_ratio
        );
        for t in &c.tail {
            assert!((t.measured - t.predicted).abs() < 0.005, "{t:?}");
        }
        assert_eq!(c.classes.len(), 1);
        assert!((c.classes[0].mean_wait_ms.predicted - c.mean_wait_ms.predicted).abs() < 1e-9);
    }

    #[test]
    fn classes_are_listed_in_service_order_with_their_own_waits() {
        let q = Mmc::new(20, 17.0, 1.0).expect("stable");
        let ks = classes();
        let waits: Vec<Wait> = (0..300)
            .map(|i| Wait {
                class: i % 3,
                arrival: i as f64 / 3.0,
                wait_s: (i % 3) as f64 * 0.1,
            })
            .collect();
        let c = compare(&q, &ks, &waits, (0.0, 100.0), 2).expect("waits");
        let names: Vec<&str> = c.classes.iter().map(|k| k.class.as_str()).collect();
        assert_eq!(names, ["angry", "gold", "normal"]);
        let predicted: Vec<f64> = c.classes.iter().map(|k| k.mean_wait_ms.predicted).collect();
        assert!(
            predicted[0] < predicted[1] && predicted[1] < predicted[2],
            "{predicted:?}"
        );
        // angry is class 2 of the mix: its measured waits are 0.2 s.
        assert!((c.classes[0].mean_wait_ms.measured - 200.0).abs() < 1e-9);
        assert_eq!(c.never_offered, 2);
        assert!(c.mean_wait_ci95_ms.is_some(), "every slice has waits");
    }

    #[test]
    fn no_waits_no_comparison_and_empty_slices_no_interval() {
        let q = Mmc::new(20, 17.0, 1.0).expect("stable");
        assert_eq!(compare(&q, &classes(), &[], (0.0, 10.0), 0), None);
        let early = [Wait {
            class: 0,
            arrival: 0.5,
            wait_s: 0.1,
        }];
        assert_eq!(batch_means_ci(&early, (0.0, 10.0)), None);
    }
}
