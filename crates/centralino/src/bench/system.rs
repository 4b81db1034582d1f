//! The system under test: nodes someone else runs (`--target`), or a
//! cluster the bench starts itself (`--nodes N`) and always tears down.
//!
//! `--nodes 1` is one standalone `centralino node` (in-memory
//! coordination). `--nodes N > 1` is the system's `etcd` (Debian's
//! `etcd-server`) on two free loopback ports with its data on tmpfs
//! (`/dev/shm`) when there is one, plus N `centralino node --etcd ...
//! --cluster bench-<pid>` processes. The nodes are this very binary
//! (`std::env::current_exe()`), configured by a file the bench writes to
//! the output directory: the default queue and no after-contact work, so
//! that a freed agent is free at once. Their logs (and etcd's) go to the
//! output directory, and each node's Prometheus metrics are saved there at
//! the end: that is where to look when a number is bad.
//!
//! Teardown: [`System::shutdown`] sends SIGTERM to the nodes (they drain
//! and leave the cluster), waits, kills what is left, then stops etcd and
//! deletes its data. If the bench fails or panics first, dropping the
//! processes kills them.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::Endpoint;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How long a node or etcd may take to start serving.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long nodes get to exit after SIGTERM (they give calls 5 s, actors
/// up to 10 s) before they are killed.
const STOP_DEADLINE: Duration = Duration::from_secs(20);
const POLL_EVERY: Duration = Duration::from_millis(25);

/// The node configuration the bench runs its own nodes with.
const NODE_CONFIG: &str = "\
# Written by `centralino bench`: the default queue (no skills required) and
# no after-contact work, so that a wrapped-up agent is free at once.
[routing]
offer_timeout_ms = 15000
decline_ttl_ms = 30000

[routing.acw_ms]
voice = 0
chat = 0
email = 0
sms = 0
whatsapp = 0
social = 0
app = 0
";

/// A node the bench drives.
#[derive(Clone, Debug)]
pub struct Target {
    /// `host:port`.
    pub addr: String,
    /// How the CSV names it: the node id when the bench started it, else
    /// the address.
    pub name: String,
}

/// A child process, killed when dropped.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    /// The node's metrics endpoint, if any.
    metrics: Option<SocketAddr>,
}

impl Proc {
    fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    fn sigterm(&mut self) {
        if self.running() {
            let ok = Command::new("kill")
                .args(["-TERM", &self.child.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            if !ok {
                let _ = self.child.kill();
            }
        }
    }

    /// Waits until it has exited, at most `deadline`; kills it after that.
    async fn reap(&mut self, deadline: Duration) -> bool {
        let give_up = tokio::time::Instant::now() + deadline;
        while self.running() {
            if tokio::time::Instant::now() >= give_up {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return false;
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
        true
    }

    fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the bench started. Dropping it kills everything and deletes
/// etcd's data.
struct Spawned {
    nodes: Vec<Proc>,
    etcd: Option<Proc>,
    /// etcd's data directory (on tmpfs when possible).
    scratch: Option<PathBuf>,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        self.nodes.clear();
        self.etcd = None;
        if let Some(d) = self.scratch.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

/// The nodes to drive, the etcd to read (if any), and what to tear down.
pub struct System {
    pub targets: Vec<Target>,
    /// etcd's client URL (`http://host:port`), when there is one to read.
    pub etcd: Option<String>,
    /// "standalone node", "3 nodes + etcd", "target".
    pub description: String,
    spawned: Option<Spawned>,
}

impl System {
    /// Nodes someone else runs.
    pub fn external(targets: &[String], etcd: Option<String>) -> anyhow::Result<System> {
        let targets = targets
            .iter()
            .map(|t| {
                let addr = t
                    .trim()
                    .trim_start_matches("http://")
                    .trim_end_matches('/')
                    .to_owned();
                if addr.is_empty() || !addr.contains(':') {
                    bail!("--target: expected HOST:PORT, got {t:?}");
                }
                Ok(Target {
                    name: addr.clone(),
                    addr,
                })
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        let description = format!(
            "{} target node(s){}",
            targets.len(),
            if etcd.is_some() { " + their etcd" } else { "" }
        );
        Ok(System {
            targets,
            etcd,
            description,
            spawned: None,
        })
    }

    /// Starts `nodes` nodes (and etcd when more than one) on loopback;
    /// logs and the node config go to `out`.
    pub async fn spawn(nodes: usize, out: &Path) -> anyhow::Result<System> {
        if nodes == 0 {
            bail!("--nodes: must be at least 1");
        }
        let exe = std::env::current_exe().context("finding this binary to start nodes with")?;
        let config = out.join("bench-node.toml");
        std::fs::write(&config, NODE_CONFIG)
            .with_context(|| format!("writing {}", config.display()))?;
        let mut spawned = Spawned {
            nodes: Vec::new(),
            etcd: None,
            scratch: None,
        };
        let cluster = format!("bench-{}", std::process::id());
        let etcd = if nodes > 1 {
            let scratch = scratch_dir()?;
            spawned.scratch = Some(scratch.clone());
            let (proc, url) = start_etcd(&scratch, out).await?;
            spawned.etcd = Some(proc);
            Some(url)
        } else {
            None
        };
        let mut targets = Vec::new();
        for i in 1..=nodes {
            let id = format!("n{i}");
            let listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()?));
            let log_path = out.join(format!("node-{id}.log"));
            let log = std::fs::File::create(&log_path)
                .with_context(|| format!("creating {}", log_path.display()))?;
            let mut cmd = Command::new(&exe);
            cmd.arg("node")
                .arg("--config")
                .arg(&config)
                .arg("--listen")
                .arg(listen.to_string())
                .arg("--node-id")
                .arg(&id)
                .arg("--metrics-listen")
                .arg(metrics.to_string());
            if let Some(url) = &etcd {
                cmd.arg("--etcd").arg(url).arg("--cluster").arg(&cluster);
            }
            // Closed conversations go beside etcd's data, and go with it.
            if let Some(scratch) = &spawned.scratch {
                cmd.arg("--archive-dir").arg(scratch.join("archive"));
            }
            // Only the flags above configure the node.
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("CENTRALINO_") {
                    cmd.env_remove(k);
                }
            }
            let filter = std::env::var("CENTRALINO_BENCH_NODE_LOG")
                .unwrap_or_else(|_| "info,h2=warn,tower=warn".into());
            let child = cmd
                .env("RUST_LOG", filter)
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(log.try_clone()?)
                .stderr(log)
                .spawn()
                .with_context(|| format!("starting {} node", exe.display()))?;
            spawned.nodes.push(Proc {
                name: id.clone(),
                child,
                log: log_path,
                metrics: Some(metrics),
            });
            targets.push(Target {
                addr: listen.to_string(),
                name: id,
            });
        }
        for (proc, target) in spawned.nodes.iter_mut().zip(&targets) {
            wait_serving(proc, &target.addr).await?;
        }
        let description = if nodes == 1 {
            "1 standalone node (spawned)".to_owned()
        } else {
            format!("{nodes} nodes + etcd (spawned, cluster {cluster})")
        };
        Ok(System {
            targets,
            etcd,
            description,
            spawned: Some(spawned),
        })
    }

    /// Saves each spawned node's Prometheus metrics to `out`.
    pub async fn save_node_metrics(&self, out: &Path) {
        let Some(s) = &self.spawned else { return };
        for p in &s.nodes {
            let Some(addr) = p.metrics else { continue };
            if let Ok(body) = http_get(&addr.to_string(), "/metrics").await {
                let _ = std::fs::write(out.join(format!("node-{}.metrics.txt", p.name)), body);
            }
        }
    }

    /// The processes whose CPU time the report shows: the bench itself,
    /// and the nodes and etcd it started.
    pub fn processes(&self) -> Vec<(String, u32)> {
        let mut v = vec![("bench".to_owned(), std::process::id())];
        if let Some(s) = &self.spawned {
            v.extend(
                s.nodes
                    .iter()
                    .chain(s.etcd.iter())
                    .map(|p| (p.name.clone(), p.child.id())),
            );
        }
        v
    }

    /// Spawned nodes that are no longer running, with their logs' tails.
    pub fn dead_nodes(&mut self) -> Vec<String> {
        let Some(s) = &mut self.spawned else {
            return vec![];
        };
        s.nodes
            .iter_mut()
            .filter_map(|p| {
                (!p.running())
                    .then(|| format!("{} exited; its log ends:\n{}", p.name, p.log_tail(30)))
            })
            .collect()
    }

    /// Stops what the bench started, in order: nodes (SIGTERM, then kill
    /// past the deadline), then etcd; deletes etcd's data.
    pub async fn shutdown(mut self) {
        let Some(mut s) = self.spawned.take() else {
            return;
        };
        for p in &mut s.nodes {
            p.sigterm();
        }
        for p in &mut s.nodes {
            if !p.reap(STOP_DEADLINE).await {
                eprintln!(
                    "bench: node {} did not exit within {STOP_DEADLINE:?} of SIGTERM; killed",
                    p.name
                );
            }
        }
        if let Some(e) = &mut s.etcd {
            e.sigterm();
            e.reap(Duration::from_secs(10)).await;
        }
        drop(s);
    }
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").context("binding a free loopback port")?;
    Ok(l.local_addr()?.port())
}

/// A fresh directory for etcd's data: on tmpfs when there is one (etcd
/// fsyncs every write), else in the temporary directory.
fn scratch_dir() -> anyhow::Result<PathBuf> {
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() && std::fs::metadata(shm).is_ok_and(|m| !m.permissions().readonly())
    {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = base.join(format!("centralino-bench-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir)
}

async fn start_etcd(scratch: &Path, out: &Path) -> anyhow::Result<(Proc, String)> {
    let (client, peer) = (free_port()?, free_port()?);
    let log_path = out.join("etcd.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let client_url = format!("http://127.0.0.1:{client}");
    let peer_url = format!("http://127.0.0.1:{peer}");
    let child = Command::new("etcd")
        .arg("--name=bench")
        .arg(format!("--data-dir={}", scratch.join("data").display()))
        .arg(format!("--listen-client-urls={client_url}"))
        .arg(format!("--advertise-client-urls={client_url}"))
        .arg(format!("--listen-peer-urls={peer_url}"))
        .arg(format!("--initial-advertise-peer-urls={peer_url}"))
        .arg(format!("--initial-cluster=bench={peer_url}"))
        .arg("--logger=zap")
        .arg("--log-outputs=stderr")
        .arg("--log-level=warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting etcd (on Debian: apt-get install etcd-server)")?;
    let mut proc = Proc {
        name: "etcd".into(),
        child,
        log: log_path,
        metrics: None,
    };
    let give_up = tokio::time::Instant::now() + START_DEADLINE;
    let addr = format!("127.0.0.1:{client}");
    loop {
        if let Ok(body) = http_get(&addr, "/health").await
            && body.contains("\"health\":\"true\"")
        {
            return Ok((proc, client_url));
        }
        if !proc.running() || tokio::time::Instant::now() >= give_up {
            bail!(
                "etcd did not become healthy on {addr}; its log ends:\n{}",
                proc.log_tail(30)
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

async fn wait_serving(proc: &mut Proc, addr: &str) -> anyhow::Result<()> {
    let give_up = tokio::time::Instant::now() + START_DEADLINE;
    let endpoint =
        Endpoint::from_shared(format!("http://{addr}"))?.connect_timeout(Duration::from_secs(1));
    let mut last: String;
    loop {
        if !proc.running() {
            bail!(
                "node {} exited before serving; its log ends:\n{}",
                proc.name,
                proc.log_tail(30)
            );
        }
        match endpoint.connect().await {
            Ok(channel) => {
                let mut req = tonic::Request::new(HealthCheckRequest {
                    service: String::new(),
                });
                req.set_timeout(Duration::from_secs(2));
                match HealthClient::new(channel).check(req).await {
                    Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => return Ok(()),
                    Ok(r) => last = format!("health status {}", r.get_ref().status),
                    Err(s) => last = format!("health check: {s}"),
                }
            }
            Err(e) => last = format!("connecting: {e}"),
        }
        if tokio::time::Instant::now() >= give_up {
            bail!(
                "node {} not serving on {addr} within {START_DEADLINE:?} ({last}); its log ends:\n{}",
                proc.name,
                proc.log_tail(30)
            );
        }
        tokio::time::sleep(POLL_EVERY).await;
    }
}

/// A plain HTTP/1.0 GET (etcd's `/health` and `/metrics`, the nodes'
/// `/metrics`); the body.
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    let io = async {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
            .await?;
        let mut buf = Vec::new();
        s.read_to_end(&mut buf).await?;
        anyhow::Ok(buf)
    };
    let buf = tokio::time::timeout(Duration::from_secs(5), io)
        .await
        .with_context(|| format!("GET http://{addr}{path} timed out"))??;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("GET http://{addr}{path}: no HTTP response"))?;
    let ok = head.starts_with("HTTP/1.") && head.split_whitespace().nth(1) == Some("200");
    if !ok {
        bail!(
            "GET http://{addr}{path}: {}",
            head.lines().next().unwrap_or_default()
        );
    }
    Ok(body.to_owned())
}
