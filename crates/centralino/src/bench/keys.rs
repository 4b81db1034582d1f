//! What a cluster holds in etcd, as the bench reads it (it never writes
//! there): who owns which customer, which node hosts the router, the lease
//! TTL a node was granted, and how many bytes the cluster's keys take.
//!
//! Every key lives under the cluster's prefix (`/centralino/<cluster>/`,
//! ARCHITECTURE.md "What etcd holds"). A range is read in pages of
//! [`PAGE`] keys, each page at the revision of the first one, so that a
//! large prefix is one consistent snapshot without one response over the
//! client's message limit.

use std::collections::BTreeMap;

use anyhow::Context;
use etcd_client::{Client, GetOptions, KeyValue};
use serde::Serialize;

/// Keys per range request: a page of journal values stays well under the
/// etcd client's 4 MiB message limit.
const PAGE: i64 = 256;

/// A read-only view of one cluster's keys.
pub struct ClusterKeys {
    client: Client,
    prefix: String,
}

/// The keys of one kind (the first segment after the prefix: `journal`,
/// `owners`, ...).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct KindBytes {
    pub keys: u64,
    /// Key (with the cluster's prefix) plus value bytes.
    pub bytes: u64,
}

/// The bytes a cluster's keys take in etcd at one revision (keys and
/// values as stored; not etcd's own overhead: older revisions, the
/// database's pages).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Footprint {
    pub revision: i64,
    pub keys: u64,
    pub bytes: u64,
    pub by_kind: BTreeMap<String, KindBytes>,
    /// Conversations with events in the journal (`journal/<cu>/events/<k>/`):
    /// the open ones.
    pub open_conversations: u64,
    /// Customers the cluster knows (`customers/<cu>`), open conversation or
    /// not.
    pub customers: u64,
    /// Bytes of the open conversations' events (`journal/<cu>/events/`):
    /// what grows with the conversations that are active.
    pub event_bytes: u64,
    /// Bytes of what etcd keeps for every customer it knows, active or not:
    /// `customers/`, `identities/`, `placed/`, `owners/customer/` and the
    /// `journal/<cu>/record`s.
    pub customer_bytes: u64,
    /// Bytes of closed conversations (`archive/`, the stand-in for the
    /// history archive they are to move to).
    pub archive_bytes: u64,
}

impl Footprint {
    /// Adds up `(key without the cluster's prefix, key bytes, value bytes)`.
    pub fn of<'a>(revision: i64, keys: impl IntoIterator<Item = (&'a str, usize, usize)>) -> Self {
        let mut f = Footprint {
            revision,
            ..Footprint::default()
        };
        let mut conversations = std::collections::BTreeSet::new();
        for (key, key_len, value_len) in keys {
            let bytes = (key_len + value_len) as u64;
            f.keys += 1;
            f.bytes += bytes;
            let kind = key.split('/').next().unwrap_or_default();
            let k = f.by_kind.entry(kind.to_owned()).or_default();
            k.keys += 1;
            k.bytes += bytes;
            let parts: Vec<&str> = key.splitn(5, '/').collect();
            match parts[..] {
                ["journal", cu, "events", k, _] => {
                    conversations.insert((cu, k));
                    f.event_bytes += bytes;
                }
                ["customers", ..] => {
                    f.customers += 1;
                    f.customer_bytes += bytes;
                }
                ["journal", _, "record"] | ["identities", ..] | ["placed", ..] => {
                    f.customer_bytes += bytes
                }
                ["owners", "customer", ..] => f.customer_bytes += bytes,
                ["archive", ..] => f.archive_bytes += bytes,
                _ => {}
            }
        }
        f.open_conversations = conversations.len() as u64;
        f
    }

    /// Bytes per open conversation: every key of the cluster (customers
    /// without an open conversation, the archive stand-in and ownership
    /// included) over the open conversations.
    pub fn per_open_conversation(&self) -> Option<f64> {
        per(self.bytes, self.open_conversations)
    }

    /// Event bytes per open conversation.
    pub fn events_per_open_conversation(&self) -> Option<f64> {
        per(self.event_bytes, self.open_conversations)
    }

    /// Bytes kept for every known customer, per customer.
    pub fn per_customer(&self) -> Option<f64> {
        per(self.customer_bytes, self.customers)
    }
}

impl ClusterKeys {
    /// Connects to etcd at `url` (`http://host:port`) to read `prefix`.
    pub async fn connect(url: &str, prefix: &str) -> anyhow::Result<ClusterKeys> {
        let client = Client::connect([url], None)
            .await
            .with_context(|| format!("connecting to etcd at {url}"))?;
        Ok(ClusterKeys {
            client,
            prefix: prefix.to_owned(),
        })
    }

    /// Every key under the cluster's prefix + `sub`, at one revision;
    /// with that revision.
    async fn range(&self, sub: &str) -> anyhow::Result<(i64, Vec<KeyValue>)> {
        let start = format!("{}{sub}", self.prefix).into_bytes();
        let end = prefix_end(&start);
        let mut kv = self.client.kv_client();
        let mut from = start.clone();
        let mut revision = 0;
        let mut all = Vec::new();
        loop {
            let options = GetOptions::new()
                .with_range(end.clone())
                .with_limit(PAGE)
                .with_revision(revision);
            let mut page = kv.get(from.clone(), Some(options)).await.with_context(|| {
                format!("reading {} from etcd", String::from_utf8_lossy(&start))
            })?;
            if revision == 0 {
                revision = page.header().map_or(0, |h| h.revision());
            }
            let more = page.more();
            let kvs = page.take_kvs();
            let Some(last) = kvs.last() else { break };
            // The next page starts just after the last key.
            from = last.key().to_vec();
            from.push(0);
            all.extend(kvs);
            if !more {
                break;
            }
        }
        Ok((revision, all))
    }

    /// Key (without prefix and `sub`) → value, for values that are text.
    async fn text_values(&self, sub: &str) -> anyhow::Result<BTreeMap<String, String>> {
        let cut = self.prefix.len() + sub.len();
        let (_, kvs) = self.range(sub).await?;
        Ok(kvs
            .iter()
            .map(|kv| {
                let key = String::from_utf8_lossy(kv.key());
                (
                    key.get(cut..).unwrap_or_default().to_owned(),
                    String::from_utf8_lossy(kv.value()).into_owned(),
                )
            })
            .collect())
    }

    /// Customer id (`cu-<n>`) → the node owning its actor.
    pub async fn owners(&self) -> anyhow::Result<BTreeMap<String, String>> {
        self.text_values("owners/customer/").await
    }

    /// The node hosting the router (`owners/router/main`), if any.
    pub async fn router(&self) -> anyhow::Result<Option<String>> {
        Ok(self
            .text_values("owners/router/main")
            .await?
            .into_values()
            .next())
    }

    /// The TTL (whole seconds, as etcd granted it) of the lease node
    /// `node` holds its membership on; `None` if it is not a member.
    pub async fn lease_ttl_s(&self, node: &str) -> anyhow::Result<Option<i64>> {
        let (_, kvs) = self.range(&format!("members/{node}")).await?;
        let Some(lease) = kvs
            .iter()
            .find(|kv| kv.key().ends_with(format!("members/{node}").as_bytes()))
            .map(|kv| kv.lease())
        else {
            return Ok(None);
        };
        let ttl = self
            .client
            .lease_client()
            .time_to_live(lease, None)
            .await
            .with_context(|| format!("reading the TTL of node {node}'s lease {lease}"))?;
        Ok(Some(ttl.granted_ttl()))
    }

    /// What the cluster's keys take now.
    pub async fn footprint(&self) -> anyhow::Result<Footprint> {
        let (revision, kvs) = self.range("").await?;
        let cut = self.prefix.len();
        let keys: Vec<(String, usize, usize)> = kvs
            .iter()
            .map(|kv| {
                let key = String::from_utf8_lossy(kv.key());
                (
                    key.get(cut..).unwrap_or_default().to_owned(),
                    kv.key().len(),
                    kv.value().len(),
                )
            })
            .collect();
        Ok(Footprint::of(
            revision,
            keys.iter().map(|(k, kl, vl)| (k.as_str(), *kl, *vl)),
        ))
    }
}

fn per(bytes: u64, n: u64) -> Option<f64> {
    (n > 0).then(|| bytes as f64 / n as f64)
}

/// The end of the range of keys starting with `prefix` (etcd's convention:
/// the prefix with its last byte below 0xff incremented).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // All 0xff (or empty): to the end of the key space.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn footprint_counts_bytes_by_kind_and_open_conversations() {
        let keys = [
            ("members/n1", 30, 40),
            ("journal/cu-1/record", 40, 200),
            ("journal/cu-1/events/1/00000000000000000001", 60, 150),
            ("journal/cu-1/events/1/00000000000000000002", 60, 150),
            ("journal/cu-2/record", 40, 200),
            ("journal/cu-2/events/3/00000000000000000001", 60, 150),
            ("archive/cu-2.2", 35, 900),
            ("customers/cu-1", 35, 0),
            ("customers/cu-2", 35, 0),
        ];
        let f = Footprint::of(7, keys);
        assert_eq!(f.revision, 7);
        assert_eq!(f.keys, 9);
        assert_eq!(
            f.bytes,
            keys.iter().map(|(_, k, v)| (k + v) as u64).sum::<u64>()
        );
        assert_eq!(f.open_conversations, 2, "cu-1.1 and cu-2.3");
        assert_eq!(f.customers, 2);
        assert_eq!(
            f.by_kind.get("journal"),
            Some(&KindBytes {
                keys: 5,
                bytes: 240 + 210 + 210 + 240 + 210
            })
        );
        assert_eq!(f.per_open_conversation(), Some(f.bytes as f64 / 2.0));
        assert_eq!(f.event_bytes, 210 * 3);
        assert_eq!(f.events_per_open_conversation(), Some(315.0));
        assert_eq!(f.archive_bytes, 935);
        assert_eq!(f.customer_bytes, 240 * 2 + 35 * 2);
        assert_eq!(f.per_customer(), Some(275.0));
        assert_eq!(Footprint::of(1, []).per_open_conversation(), None);
    }

    #[test]
    fn prefix_end_is_the_next_key_after_every_key_with_the_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
