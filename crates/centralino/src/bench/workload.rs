//! The workload model: what the simulated gateways send, and when.
//!
//! Everything here is pure and seeded, so that one `--seed` gives the same
//! sequence of contacts (arrival gaps, class, channel) on every run:
//!
//! - arrivals are a Poisson process: exponential gaps with mean `1 / rate`;
//! - each contact draws a priority class and a channel from weighted mixes
//!   (`normal:0.8,gold:0.15,angry:0.05`, `chat:0.5,voice:0.3,email:0.2`);
//! - handle times are exponential with mean `--handle-ms`, drawn by the
//!   simulated agent (see `load`).
//!
//! A class name maps onto what a gateway can say about a customer: `angry`
//! is a standard-tier customer with sentiment -0.9, `normal` (or `standard`)
//! a standard-tier customer with no sentiment, and any other name is taken
//! as the customer's tier (`gold`, `silver`, ...), which the node's priority
//! policy boosts if it knows it.

use anyhow::{Context, bail};
use centralino_core::Channel;
use centralino_proto::v1 as pb;
use rand::Rng;

/// One entry of a weighted mix.
#[derive(Clone, Debug, PartialEq)]
pub struct Share<T> {
    pub item: T,
    /// Normalised: the shares of a mix sum to 1.
    pub share: f64,
}

/// A weighted mix of items, drawn from by [`Mix::pick`].
#[derive(Clone, Debug, PartialEq)]
pub struct Mix<T> {
    pub shares: Vec<Share<T>>,
}

impl<T> Mix<T> {
    /// Parses `name:weight,name:weight,...` with `item` turning each name
    /// into an item. Weights must be positive and finite; they are
    /// normalised to sum to 1. A name without weight counts 1.
    pub fn parse(
        what: &str,
        spec: &str,
        item: impl Fn(&str) -> anyhow::Result<T>,
    ) -> anyhow::Result<Mix<T>> {
        let mut shares = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, weight) = match part.split_once(':') {
                Some((n, w)) => {
                    let w: f64 = w.trim().parse().with_context(|| {
                        format!("--{what}: weight of {n:?} is not a number: {w:?}")
                    })?;
                    (n.trim(), w)
                }
                None => (part, 1.0),
            };
            if !(weight.is_finite() && weight > 0.0) {
                bail!("--{what}: weight of {name:?} must be positive, got {weight}");
            }
            let item = item(name).with_context(|| format!("--{what}"))?;
            shares.push(Share {
                item,
                share: weight,
            });
        }
        if shares.is_empty() {
            bail!("--{what}: give at least one name:weight");
        }
        Ok(Mix::normalised(shares))
    }

    /// The mix of these (positive) weights, scaled to sum to 1.
    fn normalised(mut shares: Vec<Share<T>>) -> Mix<T> {
        let total: f64 = shares.iter().map(|s| s.share).sum();
        for s in &mut shares {
            s.share /= total;
        }
        Mix { shares }
    }

    /// The index of the entry that `u` in `[0, 1)` falls into.
    pub fn index_of(&self, u: f64) -> usize {
        let mut acc = 0.0;
        for (i, s) in self.shares.iter().enumerate() {
            acc += s.share;
            if u < acc {
                return i;
            }
        }
        self.shares.len() - 1
    }

    /// Draws an entry's index.
    pub fn pick(&self, rng: &mut impl Rng) -> usize {
        self.index_of(rng.random())
    }
}

/// A priority class: what the gateway tells Centralino about the customer.
#[derive(Clone, Debug, PartialEq)]
pub struct Class {
    pub name: String,
    pub tier: String,
    pub sentiment: Option<f64>,
}

impl Class {
    /// See the module docs for how names map.
    pub fn parse(name: &str) -> anyhow::Result<Class> {
        let name = name.to_lowercase();
        if name.is_empty()
            || !name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            bail!("class name {name:?}: use letters, digits, '-' and '_'");
        }
        let (tier, sentiment) = match name.as_str() {
            "angry" => ("standard".to_owned(), Some(-0.9)),
            "normal" | "standard" => ("standard".to_owned(), None),
            other => (other.to_owned(), None),
        };
        Ok(Class {
            name,
            tier,
            sentiment,
        })
    }
}

pub use crate::config::channel;

pub fn channel_to_pb(c: Channel) -> pb::Channel {
    pb::Channel::try_from(centralino_server::convert::channel_to_pb(c))
        .unwrap_or(pb::Channel::Unspecified)
}

/// The identity a gateway on `channel` would see for bench customer `n` of
/// run `tag`: every contact is a new customer, so it opens a conversation of
/// its own (and runs against a long-lived cluster do not join each other's).
pub fn identity(channel: Channel, tag: &str, n: u64) -> pb::Identity {
    let (kind, address) = match channel {
        Channel::Voice | Channel::Sms | Channel::WhatsApp => {
            (pb::IdentityKind::Phone, format!("+999{tag}{n:09}"))
        }
        Channel::Email => (
            pb::IdentityKind::Email,
            format!("bench-{tag}-{n}@example.invalid"),
        ),
        Channel::Chat => (pb::IdentityKind::ChatSession, format!("bench-{tag}-{n}")),
        Channel::Social => (
            pb::IdentityKind::SocialHandle,
            format!("x:@bench_{tag}_{n}"),
        ),
        Channel::App => (pb::IdentityKind::AppUser, format!("bench-{tag}-{n}")),
    };
    pb::Identity {
        kind: kind as i32,
        address,
    }
}

/// An exponential variate with the given mean (inverse transform).
pub fn exponential(rng: &mut impl Rng, mean: f64) -> f64 {
    let u: f64 = rng.random();
    -(1.0 - u).ln() * mean
}

/// A kind of simulated agent (`--agent-mix`): its weighted capacity and
/// skills (name, proficiency 1..5).
#[derive(Clone, Debug, PartialEq)]
pub struct AgentKind {
    pub name: String,
    pub capacity: i32,
    pub skills: Vec<(String, i32)>,
}

impl AgentKind {
    /// The agents of `--agents` and the default mix: capacity 100, no
    /// skills.
    pub fn identical() -> AgentKind {
        AgentKind {
            name: "agent".into(),
            capacity: 100,
            skills: vec![],
        }
    }

    pub fn skills_pb(&self) -> Vec<pb::Skill> {
        self.skills
            .iter()
            .map(|(name, proficiency)| pb::Skill {
                name: name.clone(),
                proficiency: *proficiency,
            })
            .collect()
    }
}

/// Parses `--agent-mix`: `name:weight:capacity[:skill=level+skill=level]`,
/// comma-separated (`generalist:0.7:100,billing:0.3:60:billing=4+english=3`).
/// Capacity is 1..100 (voice costs 100, chat 30, email 20); a skill without
/// a level is level 3.
pub fn agent_mix(spec: &str) -> anyhow::Result<Mix<AgentKind>> {
    let flag = "--agent-mix";
    let mut shares = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let fields: Vec<&str> = part.split(':').map(str::trim).collect();
        let [name, weight, capacity, rest @ ..] = fields.as_slice() else {
            bail!("{flag}: {part:?} is not name:weight:capacity[:skill=level+...]");
        };
        if rest.len() > 1 {
            bail!("{flag}: {part:?} has more than four ':'-separated fields");
        }
        let weight: f64 = weight
            .parse()
            .with_context(|| format!("{flag}: weight of {name:?} is not a number: {weight:?}"))?;
        if !(weight.is_finite() && weight > 0.0) {
            bail!("{flag}: weight of {name:?} must be positive, got {weight}");
        }
        let capacity: i32 = match capacity.parse() {
            Ok(c) if (1..=100).contains(&c) => c,
            _ => bail!("{flag}: capacity of {name:?} must be 1..100, got {capacity:?}"),
        };
        let mut skills = Vec::new();
        for skill in rest.iter().flat_map(|s| s.split('+')).map(str::trim) {
            let (skill, level) = skill.split_once('=').unwrap_or((skill, "3"));
            let level: i32 = match level.trim().parse() {
                Ok(l) if (1..=5).contains(&l) => l,
                _ => {
                    bail!("{flag}: level of skill {skill:?} ({name:?}) must be 1..5, got {level:?}")
                }
            };
            if skill.is_empty() {
                bail!("{flag}: a skill of {name:?} has no name");
            }
            skills.push((skill.trim().to_owned(), level));
        }
        shares.push(Share {
            item: AgentKind {
                name: (*name).to_owned(),
                capacity,
                skills,
            },
            share: weight,
        });
    }
    if shares.is_empty() {
        bail!("{flag}: give at least one name:weight:capacity");
    }
    Ok(Mix::normalised(shares))
}

/// How many of `n` agents each kind of the mix gets: the shares rounded so
/// that they add up to `n` exactly (largest remainders first).
pub fn counts<T>(mix: &Mix<T>, n: usize) -> Vec<usize> {
    let exact: Vec<f64> = mix.shares.iter().map(|s| s.share * n as f64).collect();
    let mut counts: Vec<usize> = exact.iter().map(|x| x.floor() as usize).collect();
    let mut by_remainder: Vec<usize> = (0..exact.len()).collect();
    by_remainder.sort_by(|&a, &b| {
        let (ra, rb) = (exact[a] - exact[a].floor(), exact[b] - exact[b].floor());
        rb.total_cmp(&ra).then(a.cmp(&b))
    });
    let short = n.saturating_sub(counts.iter().sum());
    for &i in by_remainder.iter().take(short) {
        counts[i] += 1;
    }
    counts
}

/// The mean capacity of the mix's agents.
pub fn mean_capacity(mix: &Mix<AgentKind>) -> f64 {
    mix.shares
        .iter()
        .map(|s| s.share * f64::from(s.item.capacity))
        .sum()
}

/// A topic of `--topic` (the queue a contact is routed to).
pub fn topic(name: &str) -> anyhow::Result<String> {
    if name.is_empty()
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    {
        bail!("topic {name:?}: use letters, digits, '-', '_' and '.'");
    }
    Ok(name.to_owned())
}

/// Mean capacity units (out of an agent's 100) one conversation of this
/// mix takes: sizes the agent pool.
pub fn mean_cost(channels: &Mix<Channel>) -> f64 {
    channels
        .shares
        .iter()
        .map(|s| s.share * f64::from(s.item.cost()))
        .sum()
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    use super::*;

    #[test]
    fn mixes_parse_and_normalise() {
        let m = Mix::parse("classes", "normal:0.8, gold:0.15,angry:0.05", Class::parse).unwrap();
        assert_eq!(m.shares.len(), 3);
        assert_eq!(
            m.shares[2].item,
            Class {
                name: "angry".into(),
                tier: "standard".into(),
                sentiment: Some(-0.9)
            }
        );
        assert_eq!(m.shares[1].item.tier, "gold");
        assert!((m.shares.iter().map(|s| s.share).sum::<f64>() - 1.0).abs() < 1e-12);

        let c = Mix::parse("channels", "chat:2,voice:1,email:1", channel).unwrap();
        assert_eq!(
            c.shares.iter().map(|s| s.item).collect::<Vec<_>>(),
            [Channel::Chat, Channel::Voice, Channel::Email]
        );
        assert!((c.shares[0].share - 0.5).abs() < 1e-12);
        assert!((mean_cost(&c) - (0.5 * 30.0 + 0.25 * 100.0 + 0.25 * 20.0)).abs() < 1e-9);

        let one = Mix::parse("channels", "voice", channel).unwrap();
        assert_eq!(
            one.shares,
            vec![Share {
                item: Channel::Voice,
                share: 1.0
            }]
        );
    }

    #[test]
    fn bad_mixes_are_refused_naming_the_flag() {
        for (spec, needle) in [
            ("", "at least one"),
            ("chat:x", "not a number"),
            ("chat:-1", "positive"),
            ("fax:1", "unknown channel"),
        ] {
            let e = format!("{:#}", Mix::parse("channels", spec, channel).unwrap_err());
            assert!(
                e.contains("--channels") && e.contains(needle),
                "{spec:?}: {e}"
            );
        }
        assert!(Mix::parse("classes", "gold class:1", Class::parse).is_err());
    }

    #[test]
    fn picks_follow_the_shares() {
        let m = Mix::parse("channels", "chat:0.5,voice:0.3,email:0.2", channel).unwrap();
        assert_eq!(m.index_of(0.0), 0);
        assert_eq!(m.index_of(0.49), 0);
        assert_eq!(m.index_of(0.5), 1);
        assert_eq!(m.index_of(0.79), 1);
        assert_eq!(m.index_of(0.8), 2);
        assert_eq!(m.index_of(0.999_999_999), 2);
        let mut rng = StdRng::seed_from_u64(1);
        let mut counts = [0u32; 3];
        for _ in 0..100_000 {
            counts[m.pick(&mut rng)] += 1;
        }
        assert!((49_000..51_000).contains(&counts[0]), "{counts:?}");
        assert!((19_000..21_000).contains(&counts[2]), "{counts:?}");
    }

    #[test]
    fn agent_mixes_parse_with_capacities_and_skills() {
        let m = agent_mix("generalist:0.7:100, billing:0.3:60:billing=4+english").unwrap();
        assert_eq!(m.shares.len(), 2);
        assert_eq!(
            m.shares[0].item,
            AgentKind {
                name: "generalist".into(),
                capacity: 100,
                skills: vec![],
            }
        );
        assert_eq!(
            m.shares[1].item.skills,
            vec![("billing".to_owned(), 4), ("english".to_owned(), 3)]
        );
        assert!((mean_capacity(&m) - (0.7 * 100.0 + 0.3 * 60.0)).abs() < 1e-9);
        for (spec, needle) in [
            ("a:1", "name:weight:capacity"),
            ("a:x:100", "not a number"),
            ("a:1:0", "1..100"),
            ("a:1:101", "1..100"),
            ("a:1:50:sales=9", "1..5"),
            ("a:1:50:=2", "no name"),
            ("a:1:50:x:y", "four"),
            ("", "at least one"),
        ] {
            let e = format!("{:#}", agent_mix(spec).unwrap_err());
            assert!(
                e.contains("--agent-mix") && e.contains(needle),
                "{spec:?}: {e}"
            );
        }
    }

    #[test]
    fn counts_add_up_to_the_total_and_follow_the_shares() {
        let m = agent_mix("a:0.5:100,b:0.3:100,c:0.2:100").unwrap();
        assert_eq!(counts(&m, 10), vec![5, 3, 2]);
        assert_eq!(counts(&m, 7), vec![4, 2, 1]);
        assert_eq!(counts(&m, 1), vec![1, 0, 0]);
        for n in 0..200 {
            assert_eq!(counts(&m, n).iter().sum::<usize>(), n);
        }
    }

    #[test]
    fn exponential_has_the_mean_asked() {
        let mut rng = StdRng::seed_from_u64(7);
        let n = 200_000;
        let mean = (0..n).map(|_| exponential(&mut rng, 5.0)).sum::<f64>() / f64::from(n);
        assert!((mean - 5.0).abs() < 0.1, "{mean}");
    }
}
