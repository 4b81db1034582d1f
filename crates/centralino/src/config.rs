//! Node configuration: one typed struct, read from a TOML file, then
//! overridden by environment variables (`CENTRALINO_*`) and flags, then
//! validated once. Unknown keys are refused. `deploy/centralino.toml` is
//! the fully commented example.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use centralino_core::agent::Skill;
use centralino_core::occupancy::OccupancyCap;
use centralino_core::priority::PriorityPolicy;
use centralino_core::queue::{BullseyeStep, QueueConfig, Strategy};
use centralino_core::rules::{Conditions, RoutingRule};
use centralino_core::{Channel, QueueId, RouterConfig};
use serde::Deserialize;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub node: NodeSection,
    pub routing: RoutingSection,
    pub priority: PrioritySection,
    pub queues: Vec<QueueSection>,
    /// Routing rules, tried in order (see `centralino_core::rules`).
    pub rules: Vec<RuleSection>,
}

/// A routing rule as the file spells it: every listed condition must hold
/// (any of its values, ignoring case); the first rule that holds decides
/// the queue (else the topic does) and adds its boost.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleSection {
    pub name: String,
    #[serde(default)]
    pub topics: Vec<String>,
    /// Channel names.
    #[serde(default)]
    pub channels: Vec<String>,
    #[serde(default)]
    pub tiers: Vec<String>,
    #[serde(default)]
    pub segments: Vec<String>,
    #[serde(default)]
    pub languages: Vec<String>,
    #[serde(default)]
    pub contracts: Vec<String>,
    /// Queue id; absent: the topic's queue.
    #[serde(default)]
    pub queue: Option<String>,
    #[serde(default)]
    pub priority_boost_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// Unique within the cluster; defaults to the host name and port.
    pub id: String,
    pub listen: SocketAddr,
    /// What other nodes and clients dial; defaults to `listen`.
    pub advertise: Option<String>,
    /// Prometheus metrics endpoint; none when absent.
    pub metrics_listen: Option<SocketAddr>,
    /// etcd endpoints; empty runs the node standalone (in-memory coordination).
    pub etcd: Vec<String>,
    /// Cluster name: the nodes of one cluster share it, and their keys live
    /// under `/centralino/<cluster>/` in etcd.
    pub cluster: String,
    /// Membership lease time-to-live, ms (etcd rounds it up to whole
    /// seconds). A node that dies is noticed by the others once it expires,
    /// and its customers are recovered then: this bounds failover.
    pub lease_ttl_ms: u64,
    /// How often the lease is renewed, ms; at most a third of the TTL, so
    /// that two renewals in a row may be late without the lease expiring.
    pub keep_alive_ms: u64,
    /// Directory of the history archive (closed conversations), shared by
    /// the nodes of the cluster; the cluster's files go to
    /// `<archive_dir>/<cluster>/`. Unset: [`DEFAULT_ARCHIVE_DIR`] for a
    /// clustered node, memory for a standalone one.
    pub archive_dir: Option<PathBuf>,
    /// Contacts (SubmitContact, HandOver) this node handles at once; more
    /// are refused with RESOURCE_EXHAUSTED, so that an overloaded node
    /// keeps routing what it took in (0: no bound).
    pub max_contacts_in_flight: usize,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoutingSection {
    pub offer_timeout_ms: u64,
    pub continuity_window_ms: u64,
    pub decline_ttl_ms: u64,
    /// How long an agent whose desktop went away with its node keeps its
    /// conversations, waiting for the desktop to log in again elsewhere.
    pub reconnect_grace_ms: u64,
    /// After-contact work per channel name ("voice" = 5000, ...).
    pub acw_ms: BTreeMap<String, u64>,
    /// Agents busier than this share of `occupancy_window_ms` are offered
    /// nothing new until they are under it again; absent: no cap.
    pub occupancy_cap: Option<f64>,
    pub occupancy_window_ms: u64,
}

/// Half an hour: long enough that one long call does not rest an agent.
pub const DEFAULT_OCCUPANCY_WINDOW_MS: u64 = 1_800_000;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PrioritySection {
    pub tier_boost_ms: BTreeMap<String, u64>,
    pub sentiment_boost_ms: u64,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueSection {
    pub id: String,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub topics: Vec<String>,
    /// Skill name → minimum proficiency (1..5).
    #[serde(default)]
    pub required_skills: BTreeMap<String, u8>,
    #[serde(default)]
    pub strategy: StrategyName,
    /// Channel name → answer within this many ms.
    #[serde(default)]
    pub sla_ms: BTreeMap<String, u64>,
    #[serde(default)]
    pub bullseye: Vec<BullseyeSection>,
    #[serde(default)]
    pub priority_boost_ms: u64,
}

/// A queue's strategy as the file and the command line spell it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum StrategyName {
    #[default]
    LongestIdle,
    MostProficient,
    LeastOccupied,
    RoundRobin,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BullseyeSection {
    pub after_ms: u64,
    #[serde(default)]
    pub relax_proficiency: u8,
    #[serde(default)]
    pub drop_skills: Vec<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            node: NodeSection::default(),
            routing: RoutingSection::default(),
            priority: PrioritySection::default(),
            queues: vec![QueueSection {
                id: "general".into(),
                name: "General".into(),
                topics: vec![],
                required_skills: BTreeMap::new(),
                strategy: StrategyName::LongestIdle,
                sla_ms: BTreeMap::new(),
                bullseye: vec![],
                priority_boost_ms: 0,
            }],
            rules: Vec::new(),
        }
    }
}

/// 2 s: a dead node's customers are back on the others about 2.5 s after
/// it died (etcd checks expiries every 500 ms), under the 3 s target.
pub const DEFAULT_LEASE_TTL_MS: u64 = 2_000;
/// Four renewals per TTL: a loaded 2-core machine may stall a node for
/// over a second (a debug build, the benchmark on the same cores) without
/// its lease expiring falsely.
pub const DEFAULT_KEEP_ALIVE_MS: u64 = 500;

/// Where a clustered node archives closed conversations unless told
/// otherwise: the conventional place of a service's state, which a
/// container mounts as a volume. A node that cannot write there refuses to
/// start, naming the setting.
pub const DEFAULT_ARCHIVE_DIR: &str = "/var/lib/centralino/archive";

impl Default for NodeSection {
    fn default() -> Self {
        NodeSection {
            id: String::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 7070)),
            advertise: None,
            metrics_listen: None,
            etcd: Vec::new(),
            cluster: "default".into(),
            lease_ttl_ms: DEFAULT_LEASE_TTL_MS,
            keep_alive_ms: DEFAULT_KEEP_ALIVE_MS,
            archive_dir: None,
            max_contacts_in_flight: centralino_server::DEFAULT_MAX_CONTACTS_IN_FLIGHT,
        }
    }
}

impl Default for RoutingSection {
    fn default() -> Self {
        let d = RouterConfig::default();
        RoutingSection {
            offer_timeout_ms: d.offer_timeout_ms,
            continuity_window_ms: d.continuity_window_ms,
            decline_ttl_ms: d.decline_ttl_ms,
            reconnect_grace_ms: d.reconnect_grace_ms,
            acw_ms: Channel::ALL
                .iter()
                .map(|c| (c.name().to_owned(), d.acw_ms[c.index()]))
                .collect(),
            occupancy_cap: None,
            occupancy_window_ms: DEFAULT_OCCUPANCY_WINDOW_MS,
        }
    }
}

impl Default for PrioritySection {
    fn default() -> Self {
        let d = PriorityPolicy::default();
        PrioritySection {
            tier_boost_ms: d.tier_boost_ms.into_iter().collect(),
            sentiment_boost_ms: d.sentiment_boost_ms,
        }
    }
}

/// Overrides from the environment and flags (flags win; clap reads both).
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    pub listen: Option<SocketAddr>,
    pub node_id: Option<String>,
    pub advertise: Option<String>,
    pub metrics_listen: Option<SocketAddr>,
    pub etcd: Option<Vec<String>>,
    pub cluster: Option<String>,
    pub lease_ttl_ms: Option<u64>,
    pub keep_alive_ms: Option<u64>,
    pub archive_dir: Option<PathBuf>,
}

impl Config {
    /// The file (if any), then the overrides; validated.
    pub fn load(file: Option<&Path>, o: Overrides) -> anyhow::Result<Config> {
        let mut cfg = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading config file {}", path.display()))?;
                toml::from_str::<Config>(&text)
                    .with_context(|| format!("config file {}", path.display()))?
            }
            None => Config::default(),
        };
        if let Some(l) = o.listen {
            cfg.node.listen = l;
        }
        if let Some(id) = o.node_id {
            cfg.node.id = id;
        }
        if o.advertise.is_some() {
            cfg.node.advertise = o.advertise;
        }
        if o.metrics_listen.is_some() {
            cfg.node.metrics_listen = o.metrics_listen;
        }
        if let Some(etcd) = o.etcd {
            cfg.node.etcd = etcd;
        }
        if let Some(cluster) = o.cluster {
            cfg.node.cluster = cluster;
        }
        if let Some(ttl) = o.lease_ttl_ms {
            cfg.node.lease_ttl_ms = ttl;
        }
        if let Some(every) = o.keep_alive_ms {
            cfg.node.keep_alive_ms = every;
        }
        if o.archive_dir.is_some() {
            cfg.node.archive_dir = o.archive_dir;
        }
        if cfg.node.id.is_empty() {
            cfg.node.id = format!("node-{}", cfg.node.listen.port());
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.queues.is_empty() {
            bail!(
                "queues: define at least one queue (the first is the default for unmatched topics)"
            );
        }
        let queues = self.queues()?;
        for q in &queues {
            q.validate()
                .with_context(|| format!("queues: queue {:?}", q.id.as_str()))?;
        }
        centralino_core::rules::validate(&self.rules()?, |id| queues.iter().any(|q| &q.id == id))?;
        self.router()?;
        if self.node.cluster.is_empty()
            || !self
                .node
                .cluster
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!(
                "node.cluster: use letters, digits, '-' and '_', got {:?}",
                self.node.cluster
            );
        }
        if self.node.lease_ttl_ms < 1_000 {
            bail!(
                "node.lease_ttl_ms: must be at least 1000, got {}",
                self.node.lease_ttl_ms
            );
        }
        if self
            .node
            .archive_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            bail!(
                "node.archive_dir: must not be empty; leave it out for the default ({DEFAULT_ARCHIVE_DIR} when clustered)"
            );
        }
        if self.node.keep_alive_ms == 0 || self.node.keep_alive_ms * 3 > self.node.lease_ttl_ms {
            bail!(
                "node.keep_alive_ms: must be between 1 and a third of node.lease_ttl_ms ({}), got {}",
                self.node.lease_ttl_ms / 3,
                self.node.keep_alive_ms
            );
        }
        Ok(())
    }

    /// The directory of this cluster's archive, or `None` for the memory
    /// archive (a standalone node left at the default).
    pub fn archive_dir(&self) -> Option<PathBuf> {
        let base = match &self.node.archive_dir {
            Some(dir) => dir.clone(),
            None if self.node.etcd.is_empty() => return None,
            None => PathBuf::from(DEFAULT_ARCHIVE_DIR),
        };
        Some(base.join(&self.node.cluster))
    }

    pub fn advertise(&self) -> String {
        self.node
            .advertise
            .clone()
            .unwrap_or_else(|| self.node.listen.to_string())
    }

    pub fn router(&self) -> anyhow::Result<RouterConfig> {
        let r = &self.routing;
        if r.offer_timeout_ms == 0 {
            bail!("routing.offer_timeout_ms: must be positive");
        }
        let mut acw_ms = [0; Channel::COUNT];
        for (name, ms) in &r.acw_ms {
            acw_ms[channel(name).context("routing.acw_ms")?.index()] = *ms;
        }
        let occupancy_cap = r.occupancy_cap.map(|max| OccupancyCap {
            max,
            window_ms: r.occupancy_window_ms,
        });
        if let Some(cap) = &occupancy_cap {
            cap.validate()?;
        }
        Ok(RouterConfig {
            occupancy_cap,
            offer_timeout_ms: r.offer_timeout_ms,
            continuity_window_ms: r.continuity_window_ms,
            decline_ttl_ms: r.decline_ttl_ms,
            reconnect_grace_ms: r.reconnect_grace_ms,
            acw_ms,
            priority: PriorityPolicy {
                tier_boost_ms: self
                    .priority
                    .tier_boost_ms
                    .iter()
                    .map(|(k, v)| (k.to_lowercase(), *v))
                    .collect(),
                sentiment_boost_ms: self.priority.sentiment_boost_ms,
            },
        })
    }

    pub fn rules(&self) -> anyhow::Result<Vec<RoutingRule>> {
        let lower = |v: &[String]| v.iter().map(|x| x.trim().to_lowercase()).collect();
        self.rules
            .iter()
            .map(|r| {
                Ok(RoutingRule {
                    name: r.name.clone(),
                    when: Conditions {
                        topics: lower(&r.topics),
                        channels: r
                            .channels
                            .iter()
                            .map(|c| {
                                channel(c).with_context(|| format!("rules.{}.channels", r.name))
                            })
                            .collect::<anyhow::Result<_>>()?,
                        tiers: lower(&r.tiers),
                        segments: lower(&r.segments),
                        languages: lower(&r.languages),
                        contracts: lower(&r.contracts),
                    },
                    queue: r.queue.as_deref().map(QueueId::new),
                    priority_boost_ms: r.priority_boost_ms,
                })
            })
            .collect()
    }

    pub fn queues(&self) -> anyhow::Result<Vec<QueueConfig>> {
        self.queues
            .iter()
            .map(|q| {
                Ok(QueueConfig {
                    id: QueueId::new(&q.id),
                    name: if q.name.is_empty() {
                        q.id.clone()
                    } else {
                        q.name.clone()
                    },
                    topics: q.topics.iter().map(|t| t.to_lowercase()).collect(),
                    required: q
                        .required_skills
                        .iter()
                        .map(|(n, p)| Skill::new(n, *p))
                        .collect(),
                    sla_ms: q
                        .sla_ms
                        .iter()
                        .map(|(c, ms)| {
                            Ok((
                                channel(c).with_context(|| format!("queues.{}.sla_ms", q.id))?,
                                *ms,
                            ))
                        })
                        .collect::<anyhow::Result<_>>()?,
                    strategy: match q.strategy {
                        StrategyName::LongestIdle => Strategy::LongestIdle,
                        StrategyName::MostProficient => Strategy::MostProficient,
                        StrategyName::LeastOccupied => Strategy::LeastOccupied,
                        StrategyName::RoundRobin => Strategy::RoundRobin,
                    },
                    bullseye: q
                        .bullseye
                        .iter()
                        .map(|b| BullseyeStep {
                            after_ms: b.after_ms,
                            relax_proficiency: b.relax_proficiency,
                            drop_skills: b.drop_skills.clone(),
                        })
                        .collect(),
                    priority_boost_ms: q.priority_boost_ms,
                })
            })
            .collect()
    }
}

/// A channel by its name, with an error naming the choices.
pub fn channel(name: &str) -> anyhow::Result<Channel> {
    Channel::from_name(name).with_context(|| {
        format!("unknown channel {name:?}: use voice, chat, email, sms, whatsapp, social or app")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/centralino.toml");
        let cfg = Config::load(Some(&path), Overrides::default())
            .expect("deploy/centralino.toml is valid");
        assert!(!cfg.queues.is_empty());
    }

    #[test]
    fn unknown_keys_are_refused_and_flags_win() {
        let err =
            toml::from_str::<Config>("[node]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n").unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        let cfg = Config::load(
            None,
            Overrides {
                listen: Some("127.0.0.1:9999".parse().unwrap()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(cfg.node.listen.port(), 9999);
        assert_eq!(cfg.node.id, "node-9999");
        let default = Config::load(None, Overrides::default()).unwrap();
        assert_eq!(
            default.node.listen.to_string(),
            "127.0.0.1:7070",
            "dev and node listen on 127.0.0.1:7070 by default"
        );
    }

    #[test]
    fn the_archive_is_in_memory_standalone_and_per_cluster_on_disk() {
        let standalone = Config::load(None, Overrides::default()).unwrap();
        assert_eq!(standalone.archive_dir(), None, "standalone: memory");
        let clustered = Config::load(
            None,
            Overrides {
                etcd: Some(vec!["http://127.0.0.1:2379".into()]),
                cluster: Some("eu".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            clustered.archive_dir(),
            Some(Path::new(DEFAULT_ARCHIVE_DIR).join("eu")),
            "clustered: the default directory, one subdirectory per cluster"
        );
        let flagged = Config::load(
            None,
            Overrides {
                archive_dir: Some("/srv/archive".into()),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(
            flagged.archive_dir(),
            Some(PathBuf::from("/srv/archive/default")),
            "a standalone node given a directory uses it"
        );
        let err = Config::load(
            None,
            Overrides {
                archive_dir: Some("".into()),
                ..Default::default()
            },
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("node.archive_dir"), "{err:#}");
    }
}
