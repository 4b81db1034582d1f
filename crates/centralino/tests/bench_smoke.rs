//! `centralino bench` end to end, small enough for CI: it starts one
//! standalone node itself, drives it for a few seconds, tears it down, and
//! writes a report with the agreed fields and one CSV row per contact; a
//! mixed workload (agents with skills and capacities, topics, wrap-up,
//! abandonment) runs against one node clustered over a real etcd; and a
//! tiny scale scenario on one node counts the actors and desktops it made;
//! a short quality scenario compares waits with queueing theory.
//! No timing is asserted: the numbers are the bench's business.

use std::path::PathBuf;
use std::process::Command;

/// Runs `centralino bench ARGS --out DIR` (a fresh DIR named after
/// `name`); asserts it succeeded; its stdout, report.json and DIR.
fn bench(name: &str, args: &[&str]) -> (String, serde_json::Value, PathBuf) {
    let out = std::env::temp_dir().join(format!(
        "centralino-bench-smoke-{name}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&out);
    let run = Command::new(env!("CARGO_BIN_EXE_centralino"))
        .arg("bench")
        .args(args)
        .arg("--out")
        .arg(&out)
        .env("RUST_LOG", "warn")
        .output()
        .expect("run centralino bench");
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "bench failed ({}):\n{stdout}\n{stderr}",
        run.status
    );
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(out.join("report.json")).expect("report.json"),
    )
    .expect("report.json is JSON");
    (stdout, report, out)
}

#[test]
fn bench_writes_its_report_and_one_row_per_contact() {
    let (stdout, report, out) = bench(
        "load",
        &[
            "--standalone",
            "--rate",
            "50",
            "--agents",
            "10",
            "--duration",
            "3",
            "--warmup",
            "1",
            "--drain",
            "3",
            "--ceiling-secs",
            "1",
        ],
    );
    assert!(
        stdout.contains("routed contacts/s"),
        "the summary names the numbers:\n{stdout}"
    );
    for field in [
        "routed_per_s",
        "ingest_to_offer_p50_ms",
        "ingest_to_offer_p99_ms",
        "ingest_to_offer_p999_ms",
        "etcd_requests_per_contact",
        "migration_pause_p99_ms",
        "failover_s",
        "grpc_ceiling_per_s",
        "etcd_put_ceiling_per_s",
        "drain_s",
        "etcd_bytes_per_active_conversation",
        "bytes_per_idle_actor",
        "actors_per_node",
        "agents_online",
        "parameters",
    ] {
        assert!(
            report.get(field).is_some(),
            "report.json has {field}: {report:#}"
        );
    }
    let routed = report["routed_per_s"]
        .as_f64()
        .expect("routed_per_s measured");
    assert!(routed > 0.0, "contacts were routed: {report:#}");
    assert!(
        report["ingest_to_offer_p99_ms"].as_f64().is_some(),
        "latency measured: {report:#}"
    );
    assert!(
        report["grpc_ceiling_per_s"]
            .as_f64()
            .is_some_and(|c| c > 0.0),
        "gRPC ceiling measured: {report:#}"
    );
    // One standalone node: no etcd, and nothing faked for what is not measured.
    for field in [
        "etcd_requests_per_contact",
        "etcd_put_ceiling_per_s",
        "etcd_bytes_per_active_conversation",
        "migration_pause_p99_ms",
        "failover_s",
        "drain_s",
        "bytes_per_idle_actor",
        "agents_online",
    ] {
        assert!(
            report[field].is_null(),
            "{field} is null without etcd or a scenario for it: {report:#}"
        );
    }
    assert_eq!(report["parameters"]["seed"], 1);

    let csv = std::fs::read_to_string(out.join("contacts.csv")).expect("contacts.csv");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("contact_id,class,channel,arrival_ts,offer_ts,accept_ts,agent,node")
    );
    let rows: Vec<&str> = lines.collect();
    let submitted: u64 = report["phases"]
        .as_array()
        .expect("phases")
        .iter()
        .map(|p| p["submitted"].as_u64().unwrap_or(0))
        .sum();
    // Every contact sent is a row: those of the window and those of the
    // warm-up (about 50/s over 4 s; Poisson, so loosely).
    assert!(
        rows.len() as u64 >= submitted && (100..=400).contains(&rows.len()),
        "{} rows, {submitted} in the window",
        rows.len()
    );
    for (i, row) in rows.iter().enumerate() {
        let fields: Vec<&str> = row.split(',').collect();
        assert_eq!(fields.len(), 8, "row {i}: {row}");
        assert_eq!(fields[0], i.to_string(), "row {i}: {row}");
        assert!(
            fields[3].parse::<f64>().is_ok(),
            "row {i} has an arrival time: {row}"
        );
    }
    assert!(
        rows.iter().any(|r| !r.ends_with(",,,,")),
        "some contacts were offered and accepted"
    );
    let _ = std::fs::remove_dir_all(&out);
}

/// A mix of agents with skills and capacities, topics whose queues require
/// skills (one that no agent has), wrap-up and patience: the skilled queue
/// is served, the unserved one's customers abandon, every conversation
/// served is wrapped up and resolved without an error.
#[test]
fn a_mixed_workload_wraps_up_and_abandons() {
    let config = std::env::temp_dir().join(format!(
        "centralino-bench-smoke-mixed-{}.toml",
        std::process::id()
    ));
    std::fs::write(
        &config,
        r#"
[routing.acw_ms]
voice = 0
chat = 0
email = 0

[[queues]]
id = "general"

[[queues]]
id = "billing"
topics = ["billing"]
required_skills = { billing = 3 }

[[queues]]
id = "nobody"
topics = ["nobody"]
required_skills = { klingon = 5 }
"#,
    )
    .expect("write the node config");
    let (stdout, report, out) = bench(
        "mixed",
        &[
            "--nodes",
            "1",
            "--node-config",
            config.to_str().expect("a UTF-8 temp path"),
            "--rate",
            "60",
            "--agents",
            "10",
            "--agent-mix",
            "generalist:0.5:100,biller:0.5:60:billing=4+english",
            "--topic",
            "general:0.5,billing:0.3,nobody:0.2",
            "--handle-ms",
            "50",
            "--wrap-up-ms",
            "30",
            "--patience-ms",
            "200",
            "--duration",
            "3",
            "--warmup",
            "1",
            "--drain",
            "5",
            "--ceiling-secs",
            "0",
        ],
    );
    let phase = &report["phases"][0];
    let count = |field: &str| phase[field].as_u64().unwrap_or(u64::MAX);
    assert!(count("routed") > 0, "contacts were routed:\n{stdout}");
    assert!(
        count("abandoned") > 0,
        "the customers no agent can serve abandoned:\n{stdout}"
    );
    assert_eq!(count("never_offered"), 0, "{stdout}");
    for errors in ["wrap_up_errors", "resolve_errors"] {
        assert_eq!(count(errors), 0, "{errors}:\n{stdout}");
    }
    // An abandon can withdraw an offer on its way to the desktop, whose
    // accept then fails; nothing else may.
    assert!(
        count("accept_errors") <= count("abandoned"),
        "accept errors only where customers left:\n{stdout}"
    );
    assert!(
        stdout.contains("abandoned before an offer"),
        "the summary says who left:\n{stdout}"
    );
    assert!(
        report["etcd_requests_per_contact"]
            .as_f64()
            .is_some_and(|r| r > 0.0),
        "one node over etcd: its requests are counted: {report:#}"
    );
    let mix = &report["parameters"]["agent_mix"];
    assert_eq!(mix[1]["capacity"], 60, "{mix:#}");
    assert_eq!(mix[1]["skills"][0][0], "billing", "{mix:#}");
    assert_eq!(report["parameters"]["wrap_up_ms"], 30.0);
    let _ = std::fs::remove_dir_all(&out);
    let _ = std::fs::remove_file(&config);
}

#[test]
fn scale_counts_the_actors_and_desktops_it_made() {
    let (stdout, report, out) = bench(
        "scale",
        &[
            "--scenario",
            "scale",
            "--standalone",
            "--customers",
            "40",
            "--agents",
            "15",
            "--duration",
            "0.2",
        ],
    );
    assert!(
        stdout.contains("bytes per idle actor"),
        "the summary names the numbers:\n{stdout}"
    );
    assert_eq!(report["customer_actors_in_cluster"], 40.0, "{report:#}");
    assert_eq!(report["actors_per_node"], 40.0, "{report:#}");
    assert_eq!(report["agents_online"], 15.0, "{report:#}");
    assert!(
        report["bytes_per_idle_actor"].is_f64(),
        "the node's memory was read: {report:#}"
    );
    assert_eq!(report["system"]["scale"]["sessions_lost"], 0, "{report:#}");
    assert!(report["routed_per_s"].is_null(), "{report:#}");
    let _ = std::fs::remove_dir_all(&out);
}

/// The quality scenario on one standalone node, briefly: the waits beside
/// what Erlang C and the priority formula predict for the queue the run
/// drew, per class in the order they are served, and its contacts in
/// contacts.csv. A workload that is no M/M/c queue (two channels) gets no
/// prediction and says why, rather than a wrong one.
#[test]
fn the_quality_scenario_compares_waits_with_queueing_theory() {
    let (stdout, report, out) = bench(
        "quality",
        &[
            "--scenario",
            "quality",
            "--standalone",
            "--classes",
            "normal:0.7,gold:0.3",
            "--duration",
            "5",
            "--warmup",
            "1",
        ],
    );
    assert!(
        stdout.contains("Erlang C"),
        "the summary names the model:\n{stdout}"
    );
    for field in [
        "wait_mean_ms",
        "wait_mean_erlang_c_ms",
        "wait_mean_to_erlang_c",
    ] {
        assert!(
            report[field]
                .as_f64()
                .is_some_and(|v| v.is_finite() && v >= 0.0),
            "{field} measured: {report:#}"
        );
    }
    let q = &report["system"]["quality"];
    assert_eq!(
        q["model"]["queue"]["servers"], 20,
        "20 agents, one voice contact each: {q:#}"
    );
    let classes: Vec<&str> = q["comparison"]["classes"]
        .as_array()
        .expect("classes compared")
        .iter()
        .filter_map(|c| c["class"].as_str())
        .collect();
    assert_eq!(
        classes,
        ["gold", "normal"],
        "served in priority order: {q:#}"
    );
    let csv = std::fs::read_to_string(out.join("contacts.csv")).expect("contacts.csv");
    assert!(
        csv.lines()
            .skip(1)
            .any(|r| r.contains(",voice,") && !r.ends_with(",,,,")),
        "voice contacts offered and accepted:\n{csv}"
    );
    let _ = std::fs::remove_dir_all(&out);

    let (stdout, report, out) = bench(
        "quality-mixed",
        &[
            "--scenario",
            "quality",
            "--standalone",
            "--channels",
            "voice:0.5,chat:0.5",
            "--duration",
            "2",
            "--warmup",
            "0",
        ],
    );
    assert!(stdout.contains("no prediction"), "{stdout}");
    assert!(report["wait_mean_erlang_c_ms"].is_null(), "{report:#}");
    assert!(
        report["system"]["quality"]["not_modelled"]
            .as_str()
            .is_some_and(|why| why.contains("channels")),
        "{report:#}"
    );
    let _ = std::fs::remove_dir_all(&out);
}
