//! Envelopes that crossed between the nodes over a window, from the nodes'
//! own `centralino_cluster_node_envelopes_total{kind}` counters (each node
//! counts what it sends another): what a routed contact costs the cluster
//! beyond the gateway's and the desktop's own gRPC calls. Read from the
//! nodes the bench started (their metrics endpoints), before and after the
//! window, like etcd's counters.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use centralino_cluster::metrics::NODE_ENVELOPES;

use super::report::EnvelopeUsage;
use super::system::http_get;

/// Envelopes sent to other nodes so far, by kind, summed over the nodes.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Crossings {
    pub by_kind: BTreeMap<String, f64>,
}

impl Crossings {
    /// Reads every node's `/metrics`; `None` when there is no node to read
    /// (the nodes are not the bench's own) or one does not answer.
    pub async fn read(nodes: &[SocketAddr]) -> Option<Crossings> {
        if nodes.is_empty() {
            return None;
        }
        let mut c = Crossings::default();
        for addr in nodes {
            c.add(&http_get(&addr.to_string(), "/metrics").await.ok()?);
        }
        Some(c)
    }

    /// Adds the envelope counters of one node's Prometheus text.
    pub fn add(&mut self, text: &str) {
        for line in text.lines() {
            let Some(labels) = line
                .strip_prefix(NODE_ENVELOPES)
                .and_then(|l| l.strip_prefix('{'))
            else {
                continue;
            };
            let Some((labels, value)) = labels.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            let kind = labels
                .trim_end_matches('}')
                .split(',')
                .find_map(|kv| kv.strip_prefix("kind=\""))
                .map(|v| v.trim_end_matches('"'));
            if let Some(kind) = kind {
                *self.by_kind.entry(kind.to_owned()).or_default() += value;
            }
        }
    }

    /// What crossed between `self` (before) and `after`, per `contacts`
    /// routed in the window.
    pub fn usage(&self, after: &Crossings, contacts: u64) -> EnvelopeUsage {
        let delta: BTreeMap<String, f64> = after
            .by_kind
            .iter()
            .map(|(k, v)| (k.clone(), v - self.by_kind.get(k).copied().unwrap_or(0.0)))
            .filter(|(_, v)| *v > 0.0)
            .collect();
        // An empty sum of floats is -0.0.
        let envelopes = delta.values().sum::<f64>() + 0.0;
        let per = |v: f64| (contacts > 0).then(|| v / contacts as f64);
        EnvelopeUsage {
            envelopes,
            per_contact: per(envelopes),
            per_contact_by_kind: delta
                .into_iter()
                .filter_map(|(k, v)| Some((k, per(v)?)))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NODE: &str = r#"# TYPE centralino_cluster_node_envelopes_total counter
centralino_cluster_node_envelopes_total{kind="desktop"} 30
centralino_cluster_node_envelopes_total{kind="router.step"} 12
centralino_cluster_node_send_envelopes_count 9
centralino_cluster_etcd_requests_total{op="txn"} 400
"#;

    #[test]
    fn envelopes_are_summed_over_nodes_and_counted_per_contact() {
        let mut before = Crossings::default();
        before.add(NODE);
        assert_eq!(
            before.by_kind.len(),
            2,
            "only the envelope counter: {before:?}"
        );
        let mut after = Crossings::default();
        after.add(&NODE.replace("} 30", "} 50"));
        after.add(&NODE.replace("} 12", "} 32").replace("} 30", "} 40"));
        let u = before.usage(&after, 10);
        // desktop 30 -> 50 + 40 = 90 (60), router.step 12 -> 12 + 32 = 44 (32).
        assert_eq!(u.envelopes, 92.0);
        assert_eq!(u.per_contact, Some(9.2));
        assert_eq!(u.per_contact_by_kind.get("desktop"), Some(&6.0));
        assert_eq!(u.per_contact_by_kind.get("router.step"), Some(&3.2));
        assert_eq!(before.usage(&after, 0).per_contact, None);
    }
}
