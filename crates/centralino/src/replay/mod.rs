//! `centralino replay`: what-if replay (brief, capability 14). Recorded
//! traffic goes through the routing core twice, under configuration A
//! (the one it was recorded under) and under B (another), and the service
//! level, ASA and occupancy of both are printed side by side.
//!
//! The routing core is a pure state machine with time as an argument
//! (`centralino_core::Router`), so a replay is exact: the same recording,
//! configuration and agents give the same numbers on every run, and the
//! difference between A and B is the configuration's doing alone. A
//! replay under A is not the recording itself, though: its agents are
//! ideal (they accept at once, never reject, never step away), which is
//! what makes A and B comparable.
//!
//! The layers, pure to impure:
//!
//! - [`recording`]: the traffic, read from the history archive (what a
//!   node or `centralino dev --archive-dir` wrote) or the benchmark's
//!   `contacts.csv`, and what each contact was (arrival, channel, topic,
//!   tier, sentiment, handle times);
//! - [`pool`]: the agents both replays staff;
//! - [`simulate`]: the discrete-event replay through a `Router`;
//! - [`compare`]: the numbers side by side;
//! - this module: the command line, files in and out.
//!
//! Configurations are node configuration files (`deploy/centralino.toml`),
//! read by `config::Config` like a node reads them: `[routing]`,
//! `[priority]` and `[[queues]]` matter here, `[node]` does not.

mod compare;
mod pool;
mod recording;
mod simulate;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use centralino_cluster::{Archive, FileArchive};
use clap::ValueEnum;

use crate::config::{Config, Overrides, StrategyName};
use compare::Comparison;
use recording::{CsvAssumptions, Recorded, Recording};

/// `centralino replay` flags.
#[derive(clap::Args, Debug)]
#[command(group(
    clap::ArgGroup::new("traffic").required(true).args(["archive", "contacts"])
))]
pub struct Args {
    /// The recording as a history archive: a cluster's directory
    /// (`<archive_dir>/<cluster>`, holding `cu-<n>/<k>.<token>.jsonl`), or the
    /// archive_dir above it when it holds one cluster.
    #[arg(long, value_name = "DIR")]
    archive: Option<PathBuf>,
    /// The recording as the benchmark's per-contact file (contacts.csv
    /// under `centralino bench --out`). It records no handle time: give
    /// --handle-ms.
    #[arg(long, value_name = "FILE", requires = "handle_ms")]
    contacts: Option<PathBuf>,
    /// Configuration A, the one the traffic was recorded under (a node's
    /// TOML file, see deploy/centralino.toml). Default: the configuration
    /// `centralino dev` runs when given no --config.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Configuration B, to compare with A. Default: A itself (changed by
    /// --strategy).
    #[arg(long, value_name = "FILE")]
    compare: Option<PathBuf>,
    /// In B, this strategy for every queue, or QUEUE=STRATEGY for one;
    /// repeatable, applied in order. Strategies: longest_idle,
    /// most_proficient, least_occupied, round_robin.
    #[arg(long, value_name = "[QUEUE=]STRATEGY")]
    strategy: Vec<String>,
    /// The agents both replays staff: a TOML file of `[[agents]]` with id,
    /// skills = { skill = proficiency }, capacity (100), languages.
    /// Default: the agents the recording names, with the skills its
    /// decisions prove (lower bounds) and capacity 100.
    #[arg(long, value_name = "FILE", conflicts_with = "dev_agents")]
    agents: Option<PathBuf>,
    /// Staff the pool `centralino dev --agents N --seed S` logged in
    /// (for a recording of a dev run; the seed is --seed).
    #[arg(long, value_name = "N")]
    dev_agents: Option<usize>,
    /// The `centralino dev --seed` the recording was made with.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// contacts.csv only: every contact's handle time, ms (the bench's
    /// agents draw theirs with this mean: see its report.json,
    /// parameters.phases[].handle_ms).
    #[arg(long, value_name = "MS")]
    handle_ms: Option<u64>,
    /// contacts.csv only: every contact's topic (the bench's --topic).
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Also write the numbers as JSON to this file.
    #[arg(long, value_name = "FILE")]
    json: Option<PathBuf>,
}

/// Runs the replay and prints the comparison.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let (a, a_label) = load_config(args.config.as_deref())?;
    let (mut b, b_base) = match &args.compare {
        Some(path) => load_config(Some(path))?,
        None => (a.clone(), "A".to_owned()),
    };
    let changes = apply_strategies(&mut b, &args.strategy)?;
    let b_label = if changes.is_empty() {
        b_base
    } else {
        format!("{b_base}, {}", changes.join(", "))
    };

    let (a_router, a_queues) = (a.router()?, a.queues()?);
    let recorded = Recorded {
        priority: &a_router.priority,
        queues: &a_queues,
    };
    let rec = match (&args.archive, &args.contacts) {
        (Some(dir), _) => read_archive(dir, &recorded).await?,
        (None, Some(path)) => {
            let file =
                std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
            let assume = CsvAssumptions {
                topic: &args.topic,
                handle_ms: args
                    .handle_ms
                    .context("--handle-ms: contacts.csv records no handle time")?,
            };
            Recording::from_csv(&path.display().to_string(), file, &assume)?
        }
        (None, None) => bail!("give the recording: --archive DIR or --contacts FILE"),
    };
    if rec.contacts.is_empty() {
        bail!("{}: no contact to replay", rec.source);
    }

    let agents = match (&args.agents, args.dev_agents) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the agent pool {}", path.display()))?;
            pool::from_toml(&path.display().to_string(), &text)?
        }
        (None, Some(n)) => pool::dev(n, args.seed),
        (None, None) => {
            eprintln!(
                "note: agents recovered from the recording ({} named, capacity 100, skills only as \
                 far as its routing decisions prove them): give --agents FILE or --dev-agents N for \
                 the real pool",
                rec.agents.len()
            );
            pool::recovered(&rec)
        }
    };
    if agents.is_empty() {
        bail!("no agents to staff: give --agents FILE or --dev-agents N");
    }
    if !rec.skipped.is_empty() {
        eprintln!(
            "note: {} routing round(s) left out (never assigned in the recording, so no handle time), e.g. {}",
            rec.skipped.len(),
            rec.skipped[0]
        );
    }

    let outcome_a =
        simulate::simulate(&rec, a_router, &a_queues, &agents).context("replaying under A")?;
    let outcome_b = simulate::simulate(&rec, b.router()?, &b.queues()?, &agents)
        .context("replaying under B")?;
    let comparison = Comparison::of(&rec, (&a_label, &outcome_a), (&b_label, &outcome_b));
    print!("{}", comparison.table());
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&comparison)? + "\n";
        std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
        println!("\nwrote {}", path.display());
    }
    Ok(())
}

/// A configuration file as a node reads it, or `centralino dev`'s own.
fn load_config(path: Option<&Path>) -> anyhow::Result<(Config, String)> {
    match path {
        Some(p) => Ok((
            Config::load(Some(p), Overrides::default())?,
            p.display().to_string(),
        )),
        None => {
            let mut cfg = Config::load(None, Overrides::default())?;
            crate::sim::dev_defaults(&mut cfg);
            Ok((cfg, "centralino dev's configuration".to_owned()))
        }
    }
}

/// Applies `--strategy` values to the configuration's queues; says what
/// changed, for the report.
fn apply_strategies(cfg: &mut Config, specs: &[String]) -> anyhow::Result<Vec<String>> {
    let mut said = Vec::new();
    for spec in specs {
        let (queue, name) = match spec.split_once('=') {
            Some((q, s)) => (Some(q.trim()), s.trim()),
            None => (None, spec.trim()),
        };
        let strategy = StrategyName::from_str(name, false).map_err(|_| {
            let names: Vec<_> = StrategyName::value_variants()
                .iter()
                .filter_map(|v| v.to_possible_value().map(|p| p.get_name().to_owned()))
                .collect();
            anyhow::anyhow!(
                "--strategy {spec:?}: unknown strategy {name:?}; use {}",
                names.join(", ")
            )
        })?;
        match queue {
            None => {
                for q in &mut cfg.queues {
                    q.strategy = strategy;
                }
                said.push(format!("{name} on every queue"));
            }
            Some(id) => {
                let Some(q) = cfg.queues.iter_mut().find(|q| q.id == id) else {
                    let ids: Vec<_> = cfg.queues.iter().map(|q| q.id.as_str()).collect();
                    bail!(
                        "--strategy {spec:?}: no queue {id:?}; the queues are {}",
                        ids.join(", ")
                    );
                };
                q.strategy = strategy;
                said.push(format!("{name} on {id}"));
            }
        }
    }
    Ok(said)
}

/// The archive's conversations, read through the archive port.
async fn read_archive(dir: &Path, recorded: &Recorded<'_>) -> anyhow::Result<Recording> {
    let root = cluster_dir(dir)?;
    let archive = FileArchive::open_to_read(&root)?;
    let mut histories = Vec::new();
    for customer in archive.customers().await? {
        for conversation in archive.list(customer).await? {
            if let Some(events) = archive.read(conversation).await? {
                histories.push((conversation, events));
            }
        }
    }
    if histories.is_empty() {
        bail!(
            "{}: no archived conversation (cu-<n>/<k>.<token>.jsonl files) in it",
            root.display()
        );
    }
    let source = format!(
        "{} ({} closed conversations)",
        root.display(),
        histories.len()
    );
    Ok(Recording::from_histories(source, histories, recorded))
}

/// The cluster directory `dir` names: itself if it holds customers, else
/// its only subdirectory that does (`--archive-dir` names the directory
/// above the cluster's).
fn cluster_dir(dir: &Path) -> anyhow::Result<PathBuf> {
    let holds_customers = |d: &Path| -> anyhow::Result<bool> {
        let entries =
            std::fs::read_dir(d).with_context(|| format!("--archive: listing {}", d.display()))?;
        for entry in entries {
            let entry = entry.with_context(|| format!("--archive: listing {}", d.display()))?;
            let name = entry.file_name();
            if name
                .to_str()
                .is_some_and(|n| n.parse::<centralino_core::CustomerId>().is_ok())
            {
                return Ok(true);
            }
        }
        Ok(false)
    };
    if holds_customers(dir)? {
        return Ok(dir.to_owned());
    }
    let mut clusters = Vec::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("--archive: listing {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("--archive: listing {}", dir.display()))?
            .path();
        if path.is_dir() && holds_customers(&path)? {
            clusters.push(path);
        }
    }
    clusters.sort();
    match clusters.as_slice() {
        [one] => Ok(one.clone()),
        [] => bail!(
            "--archive {}: no archived conversations (cu-<n>/ directories) in it or in a cluster directory under it",
            dir.display()
        ),
        many => bail!(
            "--archive {}: it holds the archives of several clusters ({}); name one",
            dir.display(),
            many.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use centralino_core::kpi::Counters;

    #[test]
    fn strategies_apply_to_every_queue_or_one() {
        let (mut cfg, _) = load_config(None).expect("dev config");
        let said = apply_strategies(
            &mut cfg,
            &["most_proficient".into(), "care=least_occupied".into()],
        )
        .expect("valid");
        assert_eq!(
            said,
            vec!["most_proficient on every queue", "least_occupied on care"]
        );
        let of = |id: &str| cfg.queues.iter().find(|q| q.id == id).map(|q| q.strategy);
        assert_eq!(of("tech"), Some(StrategyName::MostProficient));
        assert_eq!(of("care"), Some(StrategyName::LeastOccupied));
        let err = apply_strategies(&mut cfg, &["fastest".into()]).unwrap_err();
        assert!(err.to_string().contains("round_robin"), "{err}");
        let err = apply_strategies(&mut cfg, &["nope=round_robin".into()]).unwrap_err();
        assert!(err.to_string().contains("the queues are general"), "{err}");
    }

    /// Under its own configuration a replay gives the same numbers every
    /// time: a dev-like recording, replayed twice under A and once more
    /// under an unchanged B, agrees to the bit.
    #[test]
    fn a_replay_under_its_own_configuration_is_deterministic() {
        let (cfg, _) = load_config(None).expect("dev config");
        let (router, queues) = (cfg.router().expect("router"), cfg.queues().expect("queues"));
        let topics = ["billing", "fiber", "upgrade", "complaint", "other"];
        let channels = [
            centralino_core::Channel::Voice,
            centralino_core::Channel::Chat,
            centralino_core::Channel::Email,
        ];
        // Deterministic but uneven traffic: a busy stretch, then a lull.
        let contacts = (0..300u64)
            .map(|i| recording::RecordedContact {
                label: format!("c{i}"),
                customer: i % 97,
                arrival: i * 400 + (i * i * 37) % 350,
                not_before: None,
                channel: channels[(i % 3) as usize],
                topic: topics[(i % 5) as usize].into(),
                tier: (i % 7 == 0).then(|| "gold".to_owned()),
                sentiment: (i % 11 == 0).then_some(-0.8),
                segments: vec![recording::Segment {
                    handle_ms: 1_000 + (i * 7_919) % 6_000,
                    then: recording::AfterService::WrapUp,
                }],
                served_by: vec![],
            })
            .collect::<Vec<_>>();
        let mut rec = Recording {
            source: "synthetic".into(),
            contacts,
            ..Recording::default()
        };
        rec.contacts.sort_by_key(|c| c.arrival);
        let agents = pool::dev(14, 7);
        let first = simulate::simulate(&rec, router.clone(), &queues, &agents).expect("replay");
        let second = simulate::simulate(&rec, router.clone(), &queues, &agents).expect("replay");
        assert_eq!(
            first, second,
            "same recording, same configuration, same numbers"
        );
        let total: Counters = first.kpis.total;
        assert!(total.answered > 0 && total.answered <= 300, "{total:?}");
        let c = Comparison::of(&rec, ("A", &first), ("B", &second));
        assert_eq!(c.difference.service_level_pt, 0.0);
        assert_eq!(c.difference.asa_ms, 0.0);
        assert_eq!(c.difference.occupancy_pt, 0.0);
    }
}
