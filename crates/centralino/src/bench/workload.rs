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
        let total: f64 = shares.iter().map(|s| s.share).sum();
        for s in &mut shares {
            s.share /= total;
        }
        Ok(Mix { shares })
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
    fn exponential_has_the_mean_asked() {
        let mut rng = StdRng::seed_from_u64(7);
        let n = 200_000;
        let mean = (0..n).map(|_| exponential(&mut rng, 5.0)).sum::<f64>() / f64::from(n);
        assert!((mean - 5.0).abs() < 0.1, "{mean}");
    }
}
