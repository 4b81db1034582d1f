//! Real `centralino node` processes joined in one cluster through a real etcd.
//!
//! [`ClusterProcess::start`] spawns the `centralino` binary as
//! `centralino node --etcd <endpoint> --cluster <name> --listen 127.0.0.1:<port>
//! --node-id <id>` on a free loopback port, with its standard output and
//! error written to `node.log` in a fresh temporary directory, and returns
//! once the node answers the `grpc.health.v1.Health/Check` of the empty
//! service with SERVING. The process can be sent SIGTERM (the node drains and
//! leaves the cluster) or SIGKILL, and is killed when dropped. When a test
//! fails (the process is dropped while the thread panics), the tail of the
//! node's log is printed and its directory kept.
//!
//! The nodes of one test cluster (same etcd, same cluster name) share one
//! history archive, as the nodes of a real cluster on one machine do: a
//! fresh temporary directory, passed as `--archive-dir`, created for the
//! cluster's first node and removed when its last node is dropped (kept,
//! and named, when a test fails). A cluster whose nodes are all gone and
//! that starts again gets a new, empty one.
//!
//! # Where the binary comes from
//!
//! This harness lives in the `centralino-tests` package, so cargo does not
//! set `CARGO_BIN_EXE_centralino` for it (cargo only sets that for the tests
//! of the package that defines the binary, and an artifact dependency on a
//! binary is still unstable). Instead, [`centralino_binary`] runs
//! `cargo build -p centralino --message-format=json` ONCE per test process
//! (a `OnceLock`), with the cargo that runs the tests (`$CARGO`), the
//! workspace's manifest and the test's own profile (`--release` when the test
//! itself is built without debug assertions), and takes the executable's
//! path from the `compiler-artifact` message of the `centralino` binary
//! target. When nothing changed since `cargo test` built the workspace this
//! is a no-op that takes a fraction of a second; when product code changed
//! meanwhile, the nodes run the current code. Setting `CENTRALINO_BIN` to a
//! path skips the build and uses that binary.
//!
//! Nothing here sleeps for a fixed time: every wait polls its condition until
//! a deadline and fails naming what it waited for.

use std::collections::HashMap;
use std::fs;
use std::io::{Read, Seek, SeekFrom};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use centralino_proto::v1::admin_client::AdminClient;
use centralino_proto::v1::agent_desktop_client::AgentDesktopClient;
use centralino_proto::v1::gateway_client::GatewayClient;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::MAX_RESPONSE_BYTES;
use crate::etcd::EtcdServer;

/// How long a node may take to start answering its health check (a debug
/// build on a loaded 2-core machine, with etcd to connect to first).
pub const START_DEADLINE: Duration = Duration::from_secs(60);

/// How long a node may take to exit after SIGTERM: it lets calls finish
/// (5 s), stops its actors (up to 10 s) and leaves the cluster.
pub const STOP_DEADLINE: Duration = Duration::from_secs(30);

/// How often the harness re-checks a process while it waits.
const POLL_EVERY: Duration = Duration::from_millis(25);

/// Attempts at a free port, should another process take the one chosen
/// between choosing it and the node binding it.
const START_ATTEMPTS: usize = 3;

/// Lines of the node's log printed when a test fails.
const TAIL_LINES: usize = 80;

/// A port on 127.0.0.1 that was free a moment ago (the OS picked it).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local address").port()
}

/// The key prefix of a cluster's state in etcd (`/centralino/<cluster>/`).
pub fn etcd_prefix(cluster: &str) -> String {
    format!("/centralino/{cluster}/")
}

/// The owners of the cluster's customers, from etcd: customer id
/// (`cu-<n>`) → node id, read from the `owners/customer/` keys.
pub fn customer_owners(
    etcd: &EtcdServer,
    cluster: &str,
) -> std::collections::BTreeMap<String, String> {
    let prefix = format!("{}owners/customer/", etcd_prefix(cluster));
    let out = etcd.etcdctl(&["get", "--prefix", &prefix]);
    let mut lines = out.lines().filter(|l| !l.is_empty());
    let mut owners = std::collections::BTreeMap::new();
    while let Some(key) = lines.next() {
        let owner = lines
            .next()
            .unwrap_or_else(|| panic!("etcdctl printed key {key:?} without a value"));
        let customer = key
            .strip_prefix(prefix.as_str())
            .unwrap_or_else(|| panic!("key {key:?} outside {prefix:?}"));
        owners.insert(customer.to_owned(), owner.to_owned());
    }
    owners
}

/// The path of the `centralino` binary, built once per test process. See
/// the module docs.
pub fn centralino_binary() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(p) = std::env::var_os("CENTRALINO_BIN") {
            let p = PathBuf::from(p);
            assert!(p.is_file(), "CENTRALINO_BIN={} is not a file", p.display());
            return p;
        }
        build_binary()
    })
}

fn build_binary() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the tests package lives inside the workspace")
        .join("Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.arg("build")
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["-p", "centralino", "--bin", "centralino"])
        .arg("--message-format=json-render-diagnostics")
        .stdin(Stdio::null());
    if !cfg!(debug_assertions) {
        cmd.arg("--release");
    }
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run cargo to build the centralino binary: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "`cargo build -p centralino` failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        stdout
    );
    // One JSON object per line; the binary's artifact message names the
    // target `centralino` of kind `bin` and carries `"executable":"<path>"`.
    // Parsed by hand to keep the test package's dependencies as they are:
    // cargo prints these fields compactly and Linux paths need no escapes.
    stdout
        .lines()
        .filter(|l| l.contains(r#""reason":"compiler-artifact""#))
        .filter(|l| l.contains(r#""kind":["bin"]"#) && l.contains(r#""name":"centralino""#))
        .find_map(|l| {
            let start = l.find(r#""executable":""#)? + r#""executable":""#.len();
            let len = l[start..].find('"')?;
            Some(PathBuf::from(&l[start..start + len]))
        })
        .unwrap_or_else(|| {
            panic!("cargo built no executable named centralino; its messages:\n{stdout}")
        })
}

/// What a node is started with, beyond what [`ClusterProcess::start`] takes.
#[derive(Clone, Debug, Default)]
pub struct NodeSpec {
    pub etcd: String,
    pub cluster: String,
    pub node_id: String,
    /// `--config FILE`.
    pub config: Option<PathBuf>,
    /// `--lease-ttl-ms N`.
    pub lease_ttl_ms: Option<u64>,
    /// `RUST_LOG` for the node; `info,h2=warn,tower=warn` when not set.
    pub log_filter: Option<String>,
    /// `--archive-dir DIR`; when not set, the directory the cluster's nodes
    /// share (see the module docs).
    pub archive_dir: Option<PathBuf>,
}

/// The archive directory of one test cluster; removed when the last node
/// holding it is dropped, unless a test is failing.
pub struct ArchiveDir {
    path: PathBuf,
}

impl ArchiveDir {
    /// The directory of the nodes of `cluster` on etcd `etcd`, created for
    /// the first of them.
    fn shared(etcd: &str, cluster: &str) -> Arc<ArchiveDir> {
        type Dirs = HashMap<(String, String), Weak<ArchiveDir>>;
        static DIRS: OnceLock<Mutex<Dirs>> = OnceLock::new();
        let mut dirs = DIRS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let key = (etcd.to_owned(), cluster.to_owned());
        if let Some(dir) = dirs.get(&key).and_then(Weak::upgrade) {
            return dir;
        }
        dirs.retain(|_, d| d.strong_count() > 0);
        let dir = Arc::new(ArchiveDir {
            path: fresh_dir(&format!("archive-{cluster}")),
        });
        dirs.insert(key, Arc::downgrade(&dir));
        dir
    }
}

impl Drop for ArchiveDir {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- history archive kept in {}", self.path.display());
        } else {
            let _ = fs::remove_dir_all(&self.path);
        }
    }
}

/// A `centralino node` process. Killed on drop.
pub struct ClusterProcess {
    pub node_id: String,
    addr: SocketAddr,
    dir: PathBuf,
    /// Where this node's cluster archives closed conversations.
    archive_dir: PathBuf,
    child: Option<Child>,
    exit: Option<ExitStatus>,
    /// Keeps the shared archive directory while the node may use it;
    /// dropped after the process is killed.
    _archive: Option<Arc<ArchiveDir>>,
}

impl ClusterProcess {
    /// Starts `centralino node` in cluster `cluster` through etcd at
    /// `etcd_endpoint` (`http://127.0.0.1:<port>`), with the default
    /// configuration; returns once it serves.
    pub async fn start(etcd_endpoint: &str, cluster: &str, node_id: &str) -> ClusterProcess {
        Self::start_with(NodeSpec {
            etcd: etcd_endpoint.into(),
            cluster: cluster.into(),
            node_id: node_id.into(),
            ..Default::default()
        })
        .await
    }

    /// Starts a node as `spec` says; returns once it answers its health
    /// check with SERVING. Panics with the node's log if it exits or does
    /// not serve within [`START_DEADLINE`].
    pub async fn start_with(spec: NodeSpec) -> ClusterProcess {
        let bin = centralino_binary();
        let dir = fresh_dir(&spec.node_id);
        let archive = match &spec.archive_dir {
            Some(path) => (path.clone(), None),
            None => {
                let shared = ArchiveDir::shared(&spec.etcd, &spec.cluster);
                (shared.path.clone(), Some(shared))
            }
        };
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(dir.join("node.log"))
                .expect("open node.log");
            let mut cmd = Command::new(bin);
            cmd.arg("node")
                .arg("--etcd")
                .arg(&spec.etcd)
                .arg("--cluster")
                .arg(&spec.cluster)
                .arg("--listen")
                .arg(addr.to_string())
                .arg("--node-id")
                .arg(&spec.node_id)
                .arg("--archive-dir")
                .arg(&archive.0);
            if let Some(c) = &spec.config {
                cmd.arg("--config").arg(c);
            }
            if let Some(ttl) = spec.lease_ttl_ms {
                cmd.arg("--lease-ttl-ms").arg(ttl.to_string());
            }
            // Only the flags above configure the node: nothing leaks in from
            // the environment the tests run in.
            for (k, _) in std::env::vars_os() {
                if k.to_string_lossy().starts_with("CENTRALINO_") {
                    cmd.env_remove(k);
                }
            }
            let filter = spec
                .log_filter
                .clone()
                .unwrap_or_else(|| "info,h2=warn,tower=warn".into());
            let child = cmd
                .env("RUST_LOG", filter)
                .env("NO_COLOR", "1")
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("clone the log file"))
                .stderr(log)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
            let mut node = ClusterProcess {
                node_id: spec.node_id.clone(),
                addr,
                dir: dir.clone(),
                archive_dir: archive.0.join(&spec.cluster),
                child: Some(child),
                exit: None,
                _archive: archive.1.clone(),
            };
            match node.wait_serving().await {
                Ok(()) => return node,
                Err(log) if log.contains("Address already in use") => {
                    // The port was taken meanwhile: try another.
                    node.kill();
                    last_log = log;
                }
                Err(log) => {
                    node.kill();
                    let _ = fs::remove_dir_all(&dir);
                    panic!(
                        "node {} did not start:\n{}",
                        spec.node_id,
                        tail(&log, TAIL_LINES)
                    );
                }
            }
        }
        panic!(
            "node {} did not start after {START_ATTEMPTS} attempts:\n{}",
            spec.node_id,
            tail(&last_log, TAIL_LINES)
        );
    }

    /// Polls the health check until SERVING; on failure, the reason and the log.
    async fn wait_serving(&mut self) -> Result<(), String> {
        let give_up = tokio::time::Instant::now() + START_DEADLINE;
        let endpoint = self
            .endpoint_config()
            .connect_timeout(Duration::from_secs(1));
        let mut last: String;
        loop {
            if let Some(status) = self.try_exit() {
                return Err(format!(
                    "exited with {status} before serving\n{}",
                    self.log()
                ));
            }
            match endpoint.connect().await {
                Ok(channel) => {
                    let mut health = HealthClient::new(channel);
                    let mut req = tonic::Request::new(HealthCheckRequest {
                        service: String::new(),
                    });
                    req.set_timeout(Duration::from_secs(2));
                    match health.check(req).await {
                        Ok(r) if r.get_ref().status == ServingStatus::Serving as i32 => {
                            return Ok(());
                        }
                        Ok(r) => last = format!("health status {}", r.get_ref().status),
                        Err(s) => last = format!("health check failed: {s}"),
                    }
                }
                Err(e) => last = format!("connecting: {e}"),
            }
            if tokio::time::Instant::now() >= give_up {
                return Err(format!(
                    "not serving within {START_DEADLINE:?} (last: {last})\n{}",
                    self.log()
                ));
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The cluster's archive (`<--archive-dir>/<cluster>/`): one
    /// `cu-<n>/<k>.<token>.jsonl` file per closed conversation.
    pub fn archive_dir(&self) -> &Path {
        &self.archive_dir
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn endpoint_config(&self) -> Endpoint {
        Endpoint::from_shared(self.endpoint())
            .expect("valid endpoint")
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
    }

    /// A new connection (HTTP/2 channel) to the node, connected lazily.
    pub fn channel(&self) -> Channel {
        self.endpoint_config().connect_lazy()
    }

    pub fn gateway(&self) -> GatewayClient<Channel> {
        GatewayClient::new(self.channel())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .max_encoding_message_size(usize::MAX)
    }

    pub fn desktop_client(&self) -> AgentDesktopClient<Channel> {
        AgentDesktopClient::new(self.channel())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .max_encoding_message_size(usize::MAX)
    }

    pub fn admin(&self) -> AdminClient<Channel> {
        AdminClient::new(self.channel())
            .max_decoding_message_size(MAX_RESPONSE_BYTES)
            .max_encoding_message_size(usize::MAX)
    }

    /// The node's log file (standard output and error).
    pub fn log_path(&self) -> PathBuf {
        self.dir.join("node.log")
    }

    /// The whole log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The last `lines` lines of the log (reads at most the last 256 KiB).
    pub fn log_tail(&self, lines: usize) -> String {
        let mut s = String::new();
        if let Ok(mut f) = fs::File::open(self.log_path()) {
            let len = f.metadata().map_or(0, |m| m.len());
            let _ = f.seek(SeekFrom::Start(len.saturating_sub(256 * 1024)));
            let mut buf = Vec::new();
            let _ = f.read_to_end(&mut buf);
            s = String::from_utf8_lossy(&buf).into_owned();
        }
        tail(&s, lines)
    }

    /// Log lines containing `needle`.
    pub fn log_lines_with(&self, needle: &str) -> Vec<String> {
        self.log()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_owned)
            .collect()
    }

    /// Whether the process still runs.
    pub fn is_running(&mut self) -> bool {
        self.try_exit().is_none() && self.child.is_some()
    }

    /// The exit status if the process has exited (reaping it).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        if self.exit.is_none()
            && let Some(child) = self.child.as_mut()
            && let Ok(Some(status)) = child.try_wait()
        {
            self.exit = Some(status);
        }
        self.exit
    }

    /// The node's process id, while it runs (for signals the harness has
    /// no method for, such as SIGSTOP and SIGCONT).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGTERM (the node drains and leaves the cluster); does not wait.
    pub fn sigterm(&mut self) {
        if self.try_exit().is_some() {
            return;
        }
        if let Some(child) = &self.child {
            let ok = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "could not send SIGTERM to node {}", self.node_id);
        }
    }

    /// Waits until the process has exited, at most `deadline`; its status,
    /// or `None` if it still runs.
    pub async fn wait_exit(&mut self, deadline: Duration) -> Option<ExitStatus> {
        let give_up = tokio::time::Instant::now() + deadline;
        loop {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            if tokio::time::Instant::now() >= give_up {
                return None;
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// SIGTERM, then waits up to [`STOP_DEADLINE`] for the exit; panics
    /// with the log's tail if the node does not exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.sigterm();
        match self.wait_exit(STOP_DEADLINE).await {
            Some(s) => s,
            None => panic!(
                "node {} did not exit within {STOP_DEADLINE:?} of SIGTERM; its log ends:\n{}",
                self.node_id,
                self.log_tail(TAIL_LINES)
            ),
        }
    }

    /// SIGKILL, and waits until it is gone.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if self.exit.is_none() {
                let _ = child.kill();
                if let Ok(s) = child.wait() {
                    self.exit = Some(s);
                }
            }
            self.child = Some(child);
        }
    }
}

impl Drop for ClusterProcess {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- node {} ({}), log {} (kept), last {TAIL_LINES} lines:\n{}",
                self.node_id,
                self.addr,
                self.log_path().display(),
                self.log_tail(TAIL_LINES)
            );
        } else {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

fn tail(s: &str, lines: usize) -> String {
    let all: Vec<&str> = s.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// A new directory for one node's files (or one cluster's archive).
fn fresh_dir(name: &str) -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "centralino-node-{name}-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}
