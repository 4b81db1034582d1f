//! What-if replay of a real recording: a `centralino dev` process writes
//! its closed conversations to an archive directory, is stopped with
//! SIGTERM, and `centralino replay` runs the archive under the recording's
//! configuration and under two other strategies. Both sides are printed,
//! the numbers are sane, and a replay run twice gives the same numbers.

mod support;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// A directory removed when the test ends, however it ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir =
            std::env::temp_dir().join(format!("centralino-replay-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create the temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Closed conversations archived under `dir` (any cluster, any customer).
fn archived(dir: &Path) -> usize {
    let Ok(clusters) = std::fs::read_dir(dir) else {
        return 0;
    };
    clusters
        .flatten()
        .flat_map(|c| std::fs::read_dir(c.path()).into_iter().flatten().flatten())
        .flat_map(|cu| std::fs::read_dir(cu.path()).into_iter().flatten().flatten())
        .filter(|f| f.file_name().to_string_lossy().ends_with(".jsonl"))
        .count()
}

fn replay(archive: &Path, json: &Path, strategy: &str) -> Output {
    Command::new(env!("CARGO_BIN_EXE_centralino"))
        .args(["replay", "--archive"])
        .arg(archive)
        .args([
            "--dev-agents",
            "4",
            "--seed",
            "11",
            "--strategy",
            strategy,
            "--json",
        ])
        .arg(json)
        .output()
        .expect("run centralino replay")
}

fn number(v: &serde_json::Value, path: &[&str]) -> f64 {
    let mut at = v;
    for key in path {
        at = &at[*key];
    }
    at.as_f64()
        .unwrap_or_else(|| panic!("{} is a number in {v}", path.join(".")))
}

#[test]
fn a_dev_recording_replays_under_two_strategies() {
    let tmp = TempDir::new();
    let archive = tmp.0.join("archive");
    // Few agents and short handle times: conversations close quickly, and
    // customers sometimes wait, so that strategies can differ.
    let mut args: Vec<&OsStr> = [
        "--rate",
        "12",
        "--agents",
        "4",
        "--handle-ms",
        "300",
        "--seed",
        "11",
    ]
    .map(OsStr::new)
    .to_vec();
    args.extend([OsStr::new("--archive-dir"), archive.as_os_str()]);
    let (mut dev, _) = support::start_dev(args);

    let wanted = 25;
    let deadline = Instant::now() + Duration::from_secs(120);
    while archived(&archive) < wanted {
        assert!(
            Instant::now() < deadline,
            "centralino dev archived {} conversations in 120 s, wanted {wanted}",
            archived(&archive)
        );
        if let Some(status) = dev.0.try_wait().expect("poll centralino dev") {
            panic!("centralino dev exited early: {status}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }

    support::terminate(&mut dev);
    let closed = archived(&archive);

    for strategy in ["most_proficient", "round_robin"] {
        let json = tmp.0.join(format!("{strategy}.json"));
        let out = replay(&archive, &json, strategy);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "replay failed: {stdout}\n{stderr}");
        for expected in [
            "A: centralino dev's configuration",
            &format!("B: A, {strategy} on every queue"),
            "service level",
            "ASA",
            "occupancy",
        ] {
            assert!(stdout.contains(expected), "{expected:?} printed:\n{stdout}");
        }
        let text = std::fs::read_to_string(&json).expect("the JSON report");
        let v: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        for side in ["a", "b"] {
            let contacts = number(&v, &[side, "contacts"]);
            assert!(
                contacts >= closed as f64,
                "{side}: {contacts} contacts from {closed} closed conversations"
            );
            assert!(number(&v, &[side, "answered"]) > 0.0, "{side}: answered");
            for share in ["service_level_pct", "occupancy_pct", "busiest_agent_pct"] {
                let pct = number(&v, &[side, share]);
                assert!((0.0..=100.0).contains(&pct), "{side}.{share} = {pct}");
            }
            let asa = number(&v, &[side, "asa_ms"]);
            assert!(asa.is_finite() && asa >= 0.0, "{side}.asa_ms = {asa}");
            assert_eq!(
                number(&v, &[side, "never_answered"]),
                0.0,
                "{side}: {stdout}"
            );
        }
        let sl = number(&v, &["b", "service_level_pct"]) - number(&v, &["a", "service_level_pct"]);
        assert!(
            (number(&v, &["difference", "service_level_pt"]) - sl).abs() < 1e-9,
            "the difference is B - A"
        );

        // The same replay again: the same numbers, to the last digit.
        let again = tmp.0.join(format!("{strategy}-again.json"));
        let out = replay(&archive, &again, strategy);
        assert!(out.status.success());
        let second = std::fs::read_to_string(&again).expect("the second JSON report");
        assert_eq!(text, second, "a replay is deterministic");
    }
}
