//! What the tests that start a real `centralino` process share: the
//! process (killed if a test fails before stopping it), a free port, and
//! the clean stop by SIGTERM.

use std::ffi::OsStr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Kills the child if the test fails before it stops it.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// Starts `centralino dev` on a free loopback port with these further
/// arguments, its output discarded; the port is where it will listen.
pub fn start_dev(args: impl IntoIterator<Item = impl AsRef<OsStr>>) -> (Running, u16) {
    let port = free_port();
    let child = Command::new(env!("CARGO_BIN_EXE_centralino"))
        .args(["dev", "--listen", &format!("127.0.0.1:{port}")])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start centralino dev");
    (Running(child), port)
}

/// Sends SIGTERM and waits, 30 s at most, for the ordered shutdown to run
/// and the process to exit by itself, successfully.
pub fn terminate(node: &mut Running) {
    let pid = node.0.id().to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("send SIGTERM");
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(status) = node.0.try_wait().expect("wait for centralino") {
            assert!(
                status.success(),
                "centralino exits cleanly on SIGTERM, got {status}"
            );
            return;
        }
        assert!(
            Instant::now() < deadline,
            "centralino still running 30 s after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
