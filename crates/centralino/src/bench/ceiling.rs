//! The ceilings the cluster's numbers are read against, measured in the
//! same process on the same machine, and etcd's request counters.
//!
//! - gRPC: a no-op unary call (`grpc.health.v1.Health/Check` against a
//!   tonic-health server started here on loopback) driven closed-loop by
//!   `concurrency` workers over `connections` HTTP/2 connections. Nothing
//!   Centralino does per contact can beat one round trip of this.
//! - etcd: raw puts (256-byte values) on a scratch prefix at the same
//!   concurrency (64 keys per worker, overwritten), deleted afterwards: the durability path's ceiling without
//!   group commit.
//! - etcd's own counters: `/metrics` on its client port, read before and
//!   after a window: every message its KV, Lease and Watch services
//!   received, by method, and the MVCC put/txn/range/delete counters.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::net::TcpListener;
use tonic::transport::{Endpoint, Server};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_client::HealthClient;

use super::report::{Ceiling, EtcdUsage, latency};
use super::system::http_get;

/// Keys per worker the etcd put ceiling cycles through.
const SCRATCH_KEYS: u64 = 64;

/// Calls before the measured part of a ceiling run, per worker.
const WARMUP: Duration = Duration::from_millis(500);

/// Runs `workers` closed loops of `call` for `WARMUP + secs`; counts the
/// calls (and their latencies) that started after the warm-up.
async fn closed_loop<F, Fut>(
    workers: usize,
    secs: f64,
    call: F,
) -> anyhow::Result<(u64, f64, Vec<f64>)>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send,
{
    let start = Instant::now();
    let measure_from = start + WARMUP;
    let end = measure_from + Duration::from_secs_f64(secs);
    let stop = Arc::new(AtomicBool::new(false));
    let calls = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for w in 0..workers {
        let (call, stop, calls) = (call.clone(), stop.clone(), calls.clone());
        tasks.push(tokio::spawn(async move {
            let mut samples = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let t = Instant::now();
                if t >= end {
                    break;
                }
                call(w, i).await?;
                i += 1;
                if t >= measure_from {
                    let done = Instant::now();
                    if done <= end {
                        calls.fetch_add(1, Ordering::Relaxed);
                        samples.push((done - t).as_secs_f64());
                    }
                }
            }
            anyhow::Ok(samples)
        }));
    }
    let mut samples = Vec::new();
    let mut first_error = None;
    for t in tasks {
        match t.await {
            Ok(Ok(s)) => samples.extend(s),
            Ok(Err(e)) => {
                stop.store(true, Ordering::Relaxed);
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(e.into());
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok((calls.load(Ordering::Relaxed), secs, samples))
}

/// The no-op tonic unary ceiling.
pub async fn grpc(concurrency: usize, connections: usize, secs: f64) -> anyhow::Result<Ceiling> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .context("binding the ceiling server")?;
    let addr = listener.local_addr()?;
    let (_reporter, health) = tonic_health::server::health_reporter();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(
        Server::builder()
            .tcp_nodelay(true)
            .add_service(health)
            .serve_with_incoming_shutdown(
                tokio_stream::wrappers::TcpListenerStream::new(listener),
                async {
                    let _ = stop_rx.await;
                },
            ),
    );
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?.tcp_nodelay(true);
    let mut clients = Vec::new();
    for _ in 0..connections.max(1) {
        clients.push(HealthClient::new(
            endpoint
                .connect()
                .await
                .context("connecting to the ceiling server")?,
        ));
    }
    let clients = Arc::new(clients);
    let result = closed_loop(concurrency, secs, move |w, _| {
        let mut c = clients[w % clients.len()].clone();
        async move {
            c.check(HealthCheckRequest {
                service: String::new(),
            })
            .await?;
            Ok(())
        }
    })
    .await;
    let _ = stop_tx.send(());
    let _ = server.await;
    let (calls, secs, samples) = result?;
    Ok(Ceiling {
        what: "gRPC no-op unary (health Check)".into(),
        concurrency,
        connections: connections.max(1),
        seconds: secs,
        calls,
        per_s: calls as f64 / secs,
        latency: latency(samples),
    })
}

/// The raw etcd put ceiling, on `/centralino-bench/<tag>/scratch/`,
/// deleted afterwards.
pub async fn etcd_puts(
    endpoint: &str,
    concurrency: usize,
    secs: f64,
    tag: &str,
) -> anyhow::Result<Ceiling> {
    let client = etcd_client::Client::connect([endpoint], None)
        .await
        .with_context(|| format!("connecting to etcd at {endpoint}"))?;
    let prefix = format!("/centralino-bench/{tag}/scratch/");
    let value = Arc::new(vec![b'x'; 256]);
    let kv = client.kv_client();
    let p = prefix.clone();
    let result = closed_loop(concurrency, secs, move |w, i| {
        // A bounded key set, so that the clean-up is one small delete.
        let (mut kv, key, value) = (
            kv.clone(),
            format!("{p}{w}/{}", i % SCRATCH_KEYS),
            value.clone(),
        );
        async move {
            kv.put(key, value.as_slice(), None).await?;
            Ok(())
        }
    })
    .await;
    let mut kv = client.kv_client();
    let cleanup = kv
        .delete(
            prefix.clone(),
            Some(etcd_client::DeleteOptions::new().with_prefix()),
        )
        .await;
    let (calls, secs, samples) = result?;
    cleanup.with_context(|| format!("deleting the scratch prefix {prefix}"))?;
    Ok(Ceiling {
        what: "etcd put (256 B)".into(),
        concurrency,
        connections: 1,
        seconds: secs,
        calls,
        per_s: calls as f64 / secs,
        latency: latency(samples),
    })
}

/// etcd's request counters at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EtcdCounters {
    /// `service/method` → messages received.
    pub by_method: BTreeMap<String, f64>,
    /// `put`, `txn`, `range`, `delete` → MVCC operations.
    pub mvcc: BTreeMap<String, f64>,
}

impl EtcdCounters {
    /// Reads etcd's `/metrics` (`endpoint` as `http://host:port`).
    pub async fn read(endpoint: &str) -> anyhow::Result<EtcdCounters> {
        let addr = endpoint.trim_start_matches("http://").trim_end_matches('/');
        Ok(EtcdCounters::parse(&http_get(addr, "/metrics").await?))
    }

    /// Picks the counters out of Prometheus text.
    pub fn parse(text: &str) -> EtcdCounters {
        let mut c = EtcdCounters::default();
        for line in text.lines() {
            let Some((name, value)) = line.rsplit_once(' ') else {
                continue;
            };
            let Ok(value) = value.parse::<f64>() else {
                continue;
            };
            if let Some(labels) = name.strip_prefix("grpc_server_msg_received_total{") {
                let label = |key: &str| {
                    labels
                        .split(',')
                        .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix("=\"")))
                        .map(|v| v.trim_end_matches('}').trim_end_matches('"'))
                };
                let (Some(service), Some(method)) = (label("grpc_service"), label("grpc_method"))
                else {
                    continue;
                };
                if !service.starts_with("etcdserverpb.") {
                    continue; // grpc.health: our own probes
                }
                let service = service.trim_start_matches("etcdserverpb.");
                if ["KV", "Lease", "Watch"].contains(&service) {
                    *c.by_method
                        .entry(format!("{service}/{method}"))
                        .or_default() += value;
                }
            } else if let Some(op) = name
                .strip_prefix("etcd_mvcc_")
                .and_then(|n| n.strip_suffix("_total"))
                && ["put", "txn", "range", "delete"].contains(&op)
            {
                c.mvcc.insert(op.to_owned(), value);
            }
        }
        c
    }

    /// What happened between `self` (before) and `after`, per `contacts`.
    /// (`contacts` routed, `acked` acknowledged in the window).
    pub fn usage(&self, after: &EtcdCounters, contacts: u64, acked: u64) -> EtcdUsage {
        let delta =
            |a: &BTreeMap<String, f64>, b: &BTreeMap<String, f64>| -> BTreeMap<String, f64> {
                b.iter()
                    .map(|(k, v)| (k.clone(), v - a.get(k).copied().unwrap_or(0.0)))
                    .filter(|(_, v)| *v != 0.0)
                    .collect()
            };
        let by_method = delta(&self.by_method, &after.by_method);
        let requests = by_method.values().sum();
        EtcdUsage {
            requests,
            by_method,
            mvcc: delta(&self.mvcc, &after.mvcc),
            per_contact: (contacts > 0).then(|| requests / contacts as f64),
            per_acked_contact: (acked > 0).then(|| requests / acked as f64),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = r#"# HELP etcd_mvcc_put_total Total number of puts seen by this member.
# TYPE etcd_mvcc_put_total counter
etcd_mvcc_put_total 7
etcd_mvcc_txn_total 40
etcd_mvcc_range_total 12
etcd_mvcc_delete_total 0
etcd_mvcc_db_total_size_in_bytes 20480
grpc_server_msg_received_total{grpc_method="Check",grpc_service="grpc.health.v1.Health",grpc_type="unary"} 5
grpc_server_msg_received_total{grpc_method="Put",grpc_service="etcdserverpb.KV",grpc_type="unary"} 7
grpc_server_msg_received_total{grpc_method="Txn",grpc_service="etcdserverpb.KV",grpc_type="unary"} 40
grpc_server_msg_received_total{grpc_method="LeaseKeepAlive",grpc_service="etcdserverpb.Lease",grpc_type="bidi_stream"} 3
grpc_server_msg_received_total{grpc_method="Status",grpc_service="etcdserverpb.Maintenance",grpc_type="unary"} 2
grpc_server_started_total{grpc_method="Txn",grpc_service="etcdserverpb.KV",grpc_type="unary"} 40
"#;

    #[test]
    fn counters_are_read_from_prometheus_text() {
        let c = EtcdCounters::parse(SAMPLE);
        assert_eq!(c.by_method.get("KV/Txn"), Some(&40.0));
        assert_eq!(c.by_method.get("Lease/LeaseKeepAlive"), Some(&3.0));
        assert_eq!(
            c.by_method.len(),
            3,
            "health checks and maintenance are not the product's requests: {c:?}"
        );
        assert_eq!(c.mvcc.get("txn"), Some(&40.0));
        assert_eq!(c.mvcc.len(), 4);

        let after = EtcdCounters::parse(
            &SAMPLE
                .replace("} 40", "} 90")
                .replace("etcd_mvcc_txn_total 40", "etcd_mvcc_txn_total 90"),
        );
        let u = c.usage(&after, 25, 50);
        assert_eq!(u.requests, 50.0);
        assert_eq!(u.by_method, BTreeMap::from([("KV/Txn".to_owned(), 50.0)]));
        assert_eq!(u.mvcc, BTreeMap::from([("txn".to_owned(), 50.0)]));
        assert_eq!(u.per_contact, Some(2.0));
        assert_eq!(u.per_acked_contact, Some(1.0));
        assert_eq!(c.usage(&after, 0, 0).per_contact, None);
    }
}
