//! The system under test: nodes someone else runs (`--target`), or a
//! cluster the bench starts itself (`--nodes N`) and always tears down.
//!
//! `--standalone` is one `centralino node` alone (in-memory
//! coordination). `--nodes N` (3 unless given) is the system's `etcd` (Debian's
//! `etcd-server`) on two free loopback ports with its data on tmpfs
//! (`/dev/shm`) when there is one, plus N `centralino node --etcd ...
//! --cluster bench-<pid>` processes, named `n1`, `n2`, ... in the order
//! they start ([`System::add_node`] starts one more later). The nodes are
//! this very binary (`std::env::current_exe()`), configured by a file the
//! bench writes to the output directory: the default queue and no
//! after-contact work, so that a freed agent is free at once; or, with
//! `--node-config`, a copy of that file instead (whatever it leaves out is
//! the node's default: after-contact work included). Their logs (and etcd's) go to the
//! output directory, and each node's Prometheus metrics are saved there at
//! the end: that is where to look when a number is bad.
//!
//! Scenarios that stop a node on purpose ([`System::kill`],
//! [`System::sigterm`]) take it out of [`System::targets`], and its exit
//! is not reported as a death. [`System::keys`] reads the cluster's keys
//! in etcd; [`rss_bytes`] a node process's resident memory.
//!
//! Teardown: [`System::shutdown`] sends SIGTERM to the nodes (they drain
//! and leave the cluster), waits, kills what is left, then stops etcd and
//! deletes its data. If the bench fails or panics first, dropping the
//! processes kills them.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::transport::{Channel as Conn, Endpoint};
use tonic_health::pb::HealthCheckRequest;

use super::keys::ClusterKeys;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

/// How long a node or etcd may take to start serving.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long nodes get to exit after SIGTERM (they give calls 5 s, actors
/// up to 10 s) before they are killed.
const STOP_DEADLINE: Duration = Duration::from_secs(20);
/// Starts of a node whose port another process took meanwhile.
const START_ATTEMPTS: u32 = 3;
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

impl Target {
    /// A new HTTP/2 connection to the node (TCP_NODELAY, like a gateway's).
    pub async fn connect(&self) -> anyhow::Result<Conn> {
        Endpoint::from_shared(format!("http://{}", self.addr))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await
            .with_context(|| format!("connecting to node {} at {}", self.name, self.addr))
    }
}

/// How the bench starts its own nodes.
#[derive(Clone, Debug)]
pub struct SpawnSpec {
    pub nodes: usize,
    /// The most nodes running at once over the run (nodes may join later):
    /// each gets that share of the machine's cores.
    pub peak_nodes: usize,
    /// With etcd even for one node (a cluster that others join later).
    pub clustered: bool,
    /// `--lease-ttl-ms` of every node (and `--keep-alive-ms` a quarter of
    /// it); the node's defaults otherwise.
    pub lease_ttl_ms: Option<u64>,
    /// The nodes' configuration file (`--node-config`); the bench's own
    /// ([`NODE_CONFIG`]) otherwise.
    pub node_config: Option<PathBuf>,
}

/// A child process, killed when dropped.
struct Proc {
    name: String,
    child: Child,
    log: PathBuf,
    /// The node's metrics endpoint, if any.
    metrics: Option<SocketAddr>,
    /// The bench stopped it on purpose: its exit is no death.
    stopped: bool,
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
    /// What starting one more node takes.
    exe: PathBuf,
    config: PathBuf,
    out: PathBuf,
    cluster: String,
    etcd_url: Option<String>,
    lease_ttl_ms: Option<u64>,
    /// Each node's tokio worker threads: its share of this machine's cores.
    workers: usize,
}

/// Each of `nodes` co-located nodes' share of this machine's cores (at
/// least one).
pub fn worker_share(nodes: usize) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (cores / nodes.max(1)).max(1)
}

impl Spawned {
    /// Starts node `n<k>` (k = nodes started so far + 1); does not wait
    /// for it to serve (see [`Spawned::wait_node`]).
    fn start_node(&mut self) -> anyhow::Result<Target> {
        let id = format!("n{}", self.nodes.len() + 1);
        let (proc, target) = self.launch(id)?;
        self.nodes.push(proc);
        Ok(target)
    }

    /// Waits until the node of `target` serves. One that died because
    /// another process bound its port between [`free_port`]'s probe and the
    /// node's own bind is started again, under the same id, on fresh ports
    /// (at most [`START_ATTEMPTS`] times); `target` then names its new
    /// address.
    async fn wait_node(&mut self, target: &mut Target) -> anyhow::Result<()> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let proc = self.node(&target.name)?;
            let Err(e) = wait_serving(proc, &target.addr).await else {
                return Ok(());
            };
            // The whole log: a backtrace may follow the error.
            let port_taken = !proc.running()
                && std::fs::read_to_string(&proc.log)
                    .is_ok_and(|log| log.contains("Address already in use"));
            if !port_taken || attempt >= START_ATTEMPTS {
                return Err(e);
            }
            eprintln!(
                "bench: node {}: another process took its port; starting it again on others",
                target.name
            );
            let (fresh, t) = self.launch(target.name.clone())?;
            *self.node(&target.name)? = fresh;
            *target = t;
        }
    }

    /// Starts a node process as `id` on fresh loopback ports.
    fn launch(&self, id: String) -> anyhow::Result<(Proc, Target)> {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let metrics = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let log_path = self.out.join(format!("node-{id}.log"));
        let log = std::fs::File::create(&log_path)
            .with_context(|| format!("creating {}", log_path.display()))?;
        let mut cmd = Command::new(&self.exe);
        cmd.arg("node")
            .arg("--config")
            .arg(&self.config)
            .arg("--listen")
            .arg(listen.to_string())
            .arg("--node-id")
            .arg(&id)
            .arg("--metrics-listen")
            .arg(metrics.to_string());
        if let Some(url) = &self.etcd_url {
            cmd.arg("--etcd")
                .arg(url)
                .arg("--cluster")
                .arg(&self.cluster);
        }
        // Closed conversations go beside etcd's data, and go with it.
        if let Some(scratch) = &self.scratch {
            cmd.arg("--archive-dir").arg(scratch.join("archive"));
        }
        if let Some(ttl) = self.lease_ttl_ms {
            // Renewed four times per TTL, as the node's defaults are.
            cmd.arg("--lease-ttl-ms")
                .arg(ttl.to_string())
                .arg("--keep-alive-ms")
                .arg((ttl / 4).max(1).to_string());
        }
        // Only the flags above configure the node.
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("CENTRALINO_") {
                cmd.env_remove(k);
            }
        }
        // Nodes sharing a machine share its cores: more worker threads than
        // that only add wake-ups and context switches (measured: 13% of the
        // nodes' CPU with 3 nodes on 2 cores). A value set by the caller
        // stands.
        if std::env::var_os("TOKIO_WORKER_THREADS").is_none() {
            cmd.env("TOKIO_WORKER_THREADS", self.workers.to_string());
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
            .with_context(|| format!("starting {} node", self.exe.display()))?;
        let proc = Proc {
            name: id.clone(),
            child,
            log: log_path,
            metrics: Some(metrics),
            stopped: false,
        };
        Ok((
            proc,
            Target {
                addr: listen.to_string(),
                name: id,
            },
        ))
    }

    fn node(&mut self, name: &str) -> anyhow::Result<&mut Proc> {
        self.nodes
            .iter_mut()
            .find(|p| p.name == name)
            .with_context(|| format!("no node {name} was started by the bench"))
    }
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
    /// The nodes that should be up: those the bench stopped are left out.
    pub targets: Vec<Target>,
    /// etcd's client URL (`http://host:port`), when there is one to read.
    pub etcd: Option<String>,
    /// The cluster's key prefix in etcd (`/centralino/<cluster>/`), when
    /// there is an etcd.
    pub prefix: Option<String>,
    /// "standalone node", "3 nodes + etcd", "target".
    pub description: String,
    spawned: Option<Spawned>,
}

impl System {
    /// Nodes someone else runs, of cluster `cluster` when `etcd` is given.
    pub fn external(
        targets: &[String],
        etcd: Option<String>,
        cluster: &str,
    ) -> anyhow::Result<System> {
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
            prefix: etcd.as_ref().map(|_| cluster_prefix(cluster)),
            targets,
            etcd,
            description,
            spawned: None,
        })
    }

    /// Starts the nodes `spec` asks for (and etcd when more than one, or
    /// when asked) on loopback; logs and the node config go to `out`.
    pub async fn spawn(spec: &SpawnSpec, out: &Path) -> anyhow::Result<System> {
        let nodes = spec.nodes;
        if nodes == 0 {
            bail!("--nodes: must be at least 1");
        }
        let config = out.join("bench-node.toml");
        let text = match &spec.node_config {
            Some(path) => std::fs::read_to_string(path)
                .with_context(|| format!("--node-config: reading {}", path.display()))?,
            None => NODE_CONFIG.to_owned(),
        };
        std::fs::write(&config, text).with_context(|| format!("writing {}", config.display()))?;
        let mut spawned = Spawned {
            nodes: Vec::new(),
            etcd: None,
            scratch: None,
            exe: std::env::current_exe().context("finding this binary to start nodes with")?,
            config,
            out: out.to_path_buf(),
            cluster: format!("bench-{}", std::process::id()),
            etcd_url: None,
            lease_ttl_ms: spec.lease_ttl_ms,
            workers: worker_share(spec.peak_nodes.max(nodes)),
        };
        if nodes > 1 || spec.clustered {
            let scratch = scratch_dir()?;
            spawned.scratch = Some(scratch.clone());
            let (proc, url) = start_etcd(&scratch, out).await?;
            spawned.etcd = Some(proc);
            spawned.etcd_url = Some(url);
        }
        let mut targets = Vec::new();
        for _ in 0..nodes {
            targets.push(spawned.start_node()?);
        }
        for target in &mut targets {
            spawned.wait_node(target).await?;
        }
        let cluster = spawned.cluster.clone();
        let description = match &spawned.etcd_url {
            None => "1 standalone node (spawned)".to_owned(),
            Some(_) => format!("{nodes} node(s) + etcd (spawned, cluster {cluster})"),
        };
        Ok(System {
            targets,
            etcd: spawned.etcd_url.clone(),
            prefix: spawned.etcd_url.as_ref().map(|_| cluster_prefix(&cluster)),
            description,
            spawned: Some(spawned),
        })
    }

    fn spawned(&mut self) -> anyhow::Result<&mut Spawned> {
        self.spawned.as_mut().context(
            "this needs nodes the bench starts itself (--nodes), not running ones (--target)",
        )
    }

    /// Starts one more node in the cluster (`n<k>`); returns once it
    /// serves.
    pub async fn add_node(&mut self) -> anyhow::Result<Target> {
        let s = self.spawned()?;
        if s.etcd_url.is_none() {
            bail!("a standalone node has no cluster to add a node to");
        }
        let mut target = s.start_node()?;
        s.wait_node(&mut target).await?;
        let (started, cluster) = (s.nodes.len(), s.cluster.clone());
        self.targets.push(target.clone());
        self.description =
            format!("{started} nodes started over the run + etcd (spawned, cluster {cluster})");
        Ok(target)
    }

    /// SIGKILL to node `name`, at once (no drain, no goodbye): its lease
    /// expires in etcd by itself.
    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        let p = self.spawned()?.node(name)?;
        p.stopped = true;
        p.child
            .kill()
            .with_context(|| format!("sending SIGKILL to node {name}"))?;
        self.targets.retain(|t| t.name != name);
        Ok(())
    }

    /// SIGTERM to node `name`: it drains, leaves the cluster and exits.
    pub fn sigterm(&mut self, name: &str) -> anyhow::Result<()> {
        let p = self.spawned()?.node(name)?;
        p.stopped = true;
        if !p.running() {
            bail!(
                "node {name} is not running; its log ends:\n{}",
                p.log_tail(30)
            );
        }
        p.sigterm();
        self.targets.retain(|t| t.name != name);
        Ok(())
    }

    /// Waits (polling) until node `name` has exited, at most `deadline`;
    /// its exit status, or `None` if it still runs.
    pub async fn wait_exit(
        &mut self,
        name: &str,
        deadline: Duration,
    ) -> anyhow::Result<Option<ExitStatus>> {
        let p = self.spawned()?.node(name)?;
        let give_up = tokio::time::Instant::now() + deadline;
        loop {
            if let Ok(Some(status)) = p.child.try_wait() {
                return Ok(Some(status));
            }
            if tokio::time::Instant::now() >= give_up {
                return Ok(None);
            }
            tokio::time::sleep(EXIT_POLL).await;
        }
    }

    /// The lines of node `name`'s log that contain `needle`.
    pub fn log_lines_with(&self, name: &str, needle: &str) -> Vec<String> {
        let Some(p) = self
            .spawned
            .as_ref()
            .and_then(|s| s.nodes.iter().find(|p| p.name == name))
        else {
            return vec![];
        };
        std::fs::read_to_string(&p.log)
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// The process id of each node the bench started and has not stopped,
    /// by node name (none for `--target` nodes).
    pub fn node_pids(&self) -> Vec<(String, u32)> {
        self.spawned
            .iter()
            .flat_map(|s| &s.nodes)
            .filter(|p| !p.stopped)
            .map(|p| (p.name.clone(), p.child.id()))
            .collect()
    }

    /// A reader of the cluster's keys in etcd.
    pub async fn keys(&self) -> anyhow::Result<ClusterKeys> {
        match (&self.etcd, &self.prefix) {
            (Some(url), Some(prefix)) => ClusterKeys::connect(url, prefix).await,
            _ => bail!(
                "this reads the cluster's keys in etcd, and there is no etcd: run 2 or more nodes (--nodes), or give --target nodes their --etcd and --cluster"
            ),
        }
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

    /// The metrics endpoints of the nodes the bench started and still runs.
    pub fn node_metrics(&self) -> Vec<SocketAddr> {
        self.spawned.as_ref().map_or_else(Vec::new, |s| {
            s.nodes
                .iter()
                .filter(|p| !p.stopped)
                .filter_map(|p| p.metrics)
                .collect()
        })
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
                    .filter(|p| !p.stopped)
                    .map(|p| (p.name.clone(), p.child.id())),
            );
        }
        v
    }

    /// Spawned nodes that are no longer running though the bench did not
    /// stop them, with their logs' tails.
    pub fn dead_nodes(&mut self) -> Vec<String> {
        let Some(s) = &mut self.spawned else {
            return vec![];
        };
        s.nodes
            .iter_mut()
            .filter(|p| !p.stopped)
            .filter_map(|p| {
                (!p.running())
                    .then(|| format!("{} exited; its log ends:\n{}", p.name, p.log_tail(30)))
            })
            .collect()
    }

    /// SIGKILL to every node still running: for a teardown where draining
    /// would only move actors between nodes that are all leaving.
    pub fn kill_nodes(&mut self) {
        for p in self.spawned.iter_mut().flat_map(|s| &mut s.nodes) {
            p.stopped = true;
            let _ = p.child.kill();
        }
        self.targets.clear();
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

/// Polls `check` every `every` until it answers `Ok(value)`; past
/// `deadline`, fails with `what` and the last thing `check` said was
/// missing (its `Err`). An error of `check` itself ends the wait at once.
pub async fn poll_until<T, F, Fut>(
    what: &str,
    deadline: Duration,
    every: Duration,
    mut check: F,
) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Result<T, String>>>,
{
    let give_up = tokio::time::Instant::now() + deadline;
    loop {
        let missing = match check().await? {
            Ok(v) => return Ok(v),
            Err(missing) => missing,
        };
        if tokio::time::Instant::now() >= give_up {
            bail!("{what}: not within {deadline:?} ({missing})");
        }
        tokio::time::sleep(every).await;
    }
}

/// How often an exit is polled for: fine enough for a drain measured in
/// seconds.
const EXIT_POLL: Duration = Duration::from_millis(5);

/// The key prefix of cluster `cluster` in etcd (as `centralino node` has it).
pub fn cluster_prefix(cluster: &str) -> String {
    format!("/centralino/{cluster}/")
}

/// The resident set size of process `pid`, bytes (`VmRSS` in
/// `/proc/<pid>/status`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

/// A loopback port free now and not handed out before by this process:
/// the kernel may offer a port again once its probe is closed, and two of
/// our processes told the same port lose one of them (a node that cannot
/// listen dies at start).
fn free_port() -> anyhow::Result<u16> {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    for _ in 0..100 {
        let l = TcpListener::bind("127.0.0.1:0").context("binding a free loopback port")?;
        let port = l.local_addr()?.port();
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if !given.contains(&port) {
            given.push(port);
            return Ok(port);
        }
    }
    bail!("no loopback port free that this bench has not handed out already")
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
        stopped: false,
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
