//! A real etcd for tests, and a link to it that a test can cut.
//!
//! [`EtcdServer::start`] runs the system's `etcd` binary (Debian's
//! `etcd-server`) as a one-member cluster on two free loopback ports (client
//! and peer), with a fresh data directory on tmpfs (`/dev/shm`) when there
//! is one, and returns once etcd answers its health check. The server can be
//! stopped, killed and restarted on the same ports with the same data, which
//! is what "etcd is restarted mid-run" needs; dropping it kills the process
//! and deletes the directory.
//!
//! [`Link`] is a TCP relay between a client and etcd: [`Link::cut`] drops
//! every connection and refuses new ones until [`Link::heal`], which
//! partitions one client from etcd while others keep using it.
//!
//! Nothing here sleeps for a fixed time: waits poll a condition until a
//! deadline, and a wait that runs out panics with what etcd logged.

use std::fs;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long etcd may take to start (it takes about a second) or to stop.
pub const ETCD_DEADLINE: Duration = Duration::from_secs(30);

/// How often the harness re-checks etcd while it waits.
const POLL_EVERY: Duration = Duration::from_millis(20);

/// Attempts at finding free ports, should another process take one between
/// choosing it and etcd binding it.
const START_ATTEMPTS: usize = 3;

/// A running (or stopped) single-member etcd.
pub struct EtcdServer {
    /// Holds `data/` and `etcd.log`; deleted on drop.
    dir: PathBuf,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

impl EtcdServer {
    /// Starts etcd on free loopback ports with an empty data directory and
    /// waits until it answers. Panics with a clear message if `etcd` is not
    /// installed or does not come up.
    pub fn start() -> EtcdServer {
        ensure_installed("etcd", "etcd-server");
        let mut last_log = String::new();
        for _ in 0..START_ATTEMPTS {
            let [client_port, peer_port] = free_ports();
            let mut server = EtcdServer {
                dir: fresh_dir(),
                client_port,
                peer_port,
                child: None,
            };
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(log) => last_log = log, // a port was taken meanwhile? try others
            }
        }
        panic!("etcd did not start after {START_ATTEMPTS} attempts; its last log:\n{last_log}");
    }

    /// The client URL, e.g. `http://127.0.0.1:40123`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// [`endpoint`](Self::endpoint) as the list clients take.
    pub fn endpoints(&self) -> Vec<String> {
        vec![self.endpoint()]
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Whether the etcd process is running.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Stops etcd gracefully (SIGTERM) and waits until it has exited; the
    /// data stays. Falls back to SIGKILL past [`ETCD_DEADLINE`].
    pub fn stop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let term = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        if !matches!(term, Ok(s) if s.success()) {
            let _ = child.kill();
        }
        let give_up = Instant::now() + ETCD_DEADLINE;
        loop {
            match child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= give_up => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return;
                }
                Ok(None) => std::thread::sleep(POLL_EVERY),
            }
        }
    }

    /// Kills etcd (SIGKILL) and waits until it is gone; the data stays.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again (stopping it first if it runs) on the same ports
    /// with the same data, and waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        if let Err(log) = self.spawn_and_wait() {
            panic!(
                "etcd did not restart on port {}; its log:\n{log}",
                self.client_port
            );
        }
    }

    /// Runs `etcdctl` against this etcd; its standard output. Panics if it
    /// fails.
    pub fn etcdctl(&self, args: &[&str]) -> String {
        ensure_installed("etcdctl", "etcd-client");
        let out = Command::new("etcdctl")
            .env("ETCDCTL_API", "3")
            .arg(format!("--endpoints={}", self.endpoint()))
            .arg("--command-timeout=10s")
            .args(args)
            .output()
            .expect("run etcdctl");
        assert!(
            out.status.success(),
            "etcdctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("etcdctl prints UTF-8")
    }

    /// The store's current revision.
    pub fn revision(&self) -> i64 {
        let fields = self.etcdctl(&["endpoint", "status", "--write-out=fields"]);
        fields
            .lines()
            .find_map(|l| l.strip_prefix("\"Revision\" : "))
            .and_then(|r| r.trim().parse().ok())
            .unwrap_or_else(|| panic!("no revision in etcdctl's endpoint status:\n{fields}"))
    }

    /// Compacts the history up to `revision` (physically: watchers behind
    /// it must recover).
    pub fn compact(&self, revision: i64) {
        self.etcdctl(&["compact", &revision.to_string(), "--physical"]);
    }

    /// The keys under `prefix`, in key order.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.etcdctl(&["get", "--prefix", prefix, "--keys-only"])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The value of `key`, if set.
    pub fn value(&self, key: &str) -> Option<String> {
        let out = self.etcdctl(&["get", key, "--print-value-only"]);
        (!out.is_empty()).then(|| out.trim_end_matches('\n').to_owned())
    }

    /// Spawns etcd and waits for its health check; on failure, kills it and
    /// returns its log.
    fn spawn_and_wait(&mut self) -> Result<(), String> {
        debug_assert!(self.child.is_none(), "etcd is already running");
        let log_path = self.dir.join("etcd.log");
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .expect("open etcd.log");
        let client = format!("http://127.0.0.1:{}", self.client_port);
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let child = Command::new("etcd")
            .arg("--name=test")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run etcd: {e}"));
        self.child = Some(child);
        let give_up = Instant::now() + ETCD_DEADLINE;
        loop {
            if healthy(self.client_port) {
                return Ok(());
            }
            let exited = !self.is_running();
            if exited || Instant::now() >= give_up {
                self.kill();
                let log = fs::read_to_string(&log_path).unwrap_or_default();
                let why = if exited {
                    "etcd exited"
                } else {
                    "etcd did not become healthy in time"
                };
                return Err(format!("{why}\n{log}"));
            }
            std::thread::sleep(POLL_EVERY);
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.kill();
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Whether etcd on `port` answers `GET /health` with `"health":"true"`
/// (it does once it has a leader).
fn healthy(port: u16) -> bool {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
    let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut response = String::new();
    let _ = s.read_to_string(&mut response);
    response.contains("\"health\":\"true\"")
}

/// Panics with how to install `binary` if it is not on PATH.
fn ensure_installed(binary: &str, package: &str) {
    if let Err(e) = Command::new(binary)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        panic!(
            "cannot run `{binary}` ({e}): the etcd tests need etcd installed; on Debian: \
             apt-get install {package}"
        );
    }
}

/// Two distinct ports that were free a moment ago.
fn free_ports() -> [u16; 2] {
    let a = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    let b = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    [port_of(&a), port_of(&b)]
}

fn port_of(l: &TcpListener) -> u16 {
    l.local_addr().expect("local address").port()
}

/// A new directory on tmpfs if there is one (etcd fsyncs every write).
fn fresh_dir() -> PathBuf {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let shm = Path::new("/dev/shm");
    let base = if shm.is_dir() && fs::metadata(shm).is_ok_and(|m| !m.permissions().readonly()) {
        shm.to_path_buf()
    } else {
        std::env::temp_dir()
    };
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = base.join(format!(
        "centralino-etcd-{}-{}-{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("create {}: {e}", dir.display()));
    dir
}

/// A TCP relay to etcd that a test can cut and heal.
pub struct Link {
    addr: SocketAddr,
    state: Arc<LinkState>,
    accept: Option<JoinHandle<()>>,
}

struct LinkState {
    target: SocketAddr,
    cut: AtomicBool,
    closing: AtomicBool,
    /// Both ends of every relayed connection, to shut them down on a cut.
    streams: Mutex<Vec<TcpStream>>,
}

impl Link {
    /// A relay on a free loopback port to etcd's client `endpoint`
    /// (`http://127.0.0.1:<port>`).
    pub fn to(endpoint: &str) -> Link {
        let target: SocketAddr = endpoint
            .trim_start_matches("http://")
            .parse()
            .unwrap_or_else(|e| panic!("endpoint {endpoint:?} is not http://ip:port: {e}"));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the link");
        let addr = listener.local_addr().expect("local address");
        let state = Arc::new(LinkState {
            target,
            cut: AtomicBool::new(false),
            closing: AtomicBool::new(false),
            streams: Mutex::new(Vec::new()),
        });
        let accept = {
            let state = state.clone();
            std::thread::spawn(move || accept_loop(listener, state))
        };
        Link {
            addr,
            state,
            accept: Some(accept),
        }
    }

    /// The relay's URL, for the client to connect to instead of etcd's.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Drops every relayed connection and refuses new ones until
    /// [`heal`](Self::heal).
    pub fn cut(&self) {
        let mut streams = self.state.streams.lock().unwrap();
        self.state.cut.store(true, Ordering::SeqCst);
        for s in streams.drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }

    /// Relays new connections again.
    pub fn heal(&self) {
        self.state.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.state.closing.store(true, Ordering::SeqCst);
        self.cut();
        // Wake the accept loop so that it sees `closing`.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, state: Arc<LinkState>) {
    for incoming in listener.incoming() {
        if state.closing.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = incoming else { continue };
        if state.cut.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let Ok(server) = TcpStream::connect_timeout(&state.target, Duration::from_secs(1)) else {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        };
        let _ = client.set_nodelay(true);
        let _ = server.set_nodelay(true);
        let (Ok(c2), Ok(s2), Ok(c3), Ok(s3)) = (
            client.try_clone(),
            server.try_clone(),
            client.try_clone(),
            server.try_clone(),
        ) else {
            continue;
        };
        {
            // Checked under the lock that `cut` drains: no connection slips
            // through a cut.
            let mut streams = state.streams.lock().unwrap();
            if state.cut.load(Ordering::SeqCst) {
                let _ = client.shutdown(Shutdown::Both);
                let _ = server.shutdown(Shutdown::Both);
                continue;
            }
            streams.extend([c3, s3]);
        }
        std::thread::spawn(move || pipe(client, server));
        std::thread::spawn(move || pipe(s2, c2));
    }
}

/// Copies `from` to `to` until either side closes, then closes both.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let _ = std::io::copy(&mut from, &mut to);
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
