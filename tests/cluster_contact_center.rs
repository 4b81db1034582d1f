//! Routing rules and KPIs on a real cluster: etcd and three `centralino
//! node` processes, real gRPC clients and Prometheus scrapes only.
//!
//! `rules_and_kpis_survive_the_death_of_the_router_s_node`:
//!
//! 1. An operator sets the routing rules through n2: Italian business
//!    customers go to the "business" queue.
//! 2. Customers write through n1 and n2; an agent on n3 serves and
//!    resolves them: the business one is offered from "business", its
//!    explanation naming the rule; one customer abandons.
//! 3. The router's node (n1) publishes the KPIs on its Prometheus
//!    endpoint and saves them in etcd: the counts by hand.
//! 4. n1 is killed. Once its lease ends a survivor takes the router over:
//!    through n2 the KPIs still hold every count from before (nothing is
//!    lost: the last save came after the last change), through n3 the
//!    rules are the operator's, and a new business customer is routed by
//!    them, counted on top, on the new router's Prometheus endpoint too.
//!
//! Waits poll with deadlines; nothing sleeps for a fixed time.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use centralino_proto::v1 as pb;
use centralino_tests::cluster::{ClusterProcess, NodeSpec, etcd_prefix, free_port};
use centralino_tests::etcd::EtcdServer;
use centralino_tests::outreach::{identity, view_of};
use centralino_tests::{Desktop, cmd, eventually_some, login};

const CLUSTER: &str = "contact-center";
/// Longest wait for any one condition (a loaded machine, a lease to end).
const WAIT: Duration = Duration::from_secs(60);

/// A config file for one node: its metrics endpoint and the queues.
fn config(metrics_port: u16) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "centralino-cc-{}-{metrics_port}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).expect("config dir");
    let path = dir.join("node.toml");
    std::fs::write(
        &path,
        format!(
            "[node]\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n\n\
             [[queues]]\nid = \"general\"\n\n[[queues]]\nid = \"business\"\n"
        ),
    )
    .expect("write config");
    path
}

struct Node {
    process: ClusterProcess,
    metrics_port: u16,
    /// The directory of its config file, removed when the test passes.
    config_dir: PathBuf,
}

async fn start(etcd: &str, id: &str) -> Node {
    let metrics_port = free_port();
    let config = config(metrics_port);
    let process = ClusterProcess::start_with(NodeSpec {
        etcd: etcd.into(),
        cluster: CLUSTER.into(),
        node_id: id.into(),
        config: Some(config.clone()),
        ..Default::default()
    })
    .await;
    Node {
        process,
        metrics_port,
        config_dir: config.parent().map(PathBuf::from).unwrap_or_default(),
    }
}

/// The node's Prometheus exposition, or `None` if it does not answer.
fn scrape(port: u16) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).ok()?;
    Some(body)
}

/// The value of the sample `name{labels}` in an exposition; labels in any
/// order.
fn sample(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(&format!("{name}{{")))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn total(body: &str, outcome: &str) -> Option<f64> {
    sample(
        body,
        "centralino_kpi_contacts",
        &[("scope", "total"), ("key", "all"), ("outcome", outcome)],
    )
}

async fn kpis(node: &ClusterProcess) -> Option<pb::Kpi> {
    node.admin()
        .get_kpis(pb::GetKpisRequest {})
        .await
        .ok()?
        .into_inner()
        .total
}

fn chat(session: &str) -> pb::Identity {
    identity(pb::IdentityKind::ChatSession, session)
}

fn contact(who: &pb::Identity, segment: &str) -> pb::SubmitContactRequest {
    pb::SubmitContactRequest {
        channel: pb::Channel::Chat as i32,
        identity: Some(who.clone()),
        topic: "billing".into(),
        text: "hello".into(),
        attributes: Some(pb::CustomerAttributes {
            segment: segment.into(),
            language: "it".into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Takes the next offer, checks its queue, accepts and resolves it.
async fn serve(agent: &mut Desktop, queue: &str) -> pb::agent_event::Offer {
    let offer = agent.next_offer().await;
    assert_eq!(offer.queue_id, queue, "{offer:?}");
    agent.command_ok(cmd::accept(&offer.offer_id)).await;
    agent.command_ok(cmd::resolve(&offer.conversation_id)).await;
    offer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_and_kpis_survive_the_death_of_the_router_s_node() {
    let etcd = EtcdServer::start();
    let endpoint = etcd.endpoint();
    let mut n1 = start(&endpoint, "n1").await;
    let (n2, n3) = tokio::join!(start(&endpoint, "n2"), start(&endpoint, "n3"));

    // 1. The operator's rules, through n2.
    let rules = pb::RoutingRules {
        rules: vec![pb::RoutingRule {
            name: "business-italian".into(),
            segments: vec!["business".into()],
            languages: vec!["it".into()],
            queue_id: "business".into(),
            ..Default::default()
        }],
    };
    n2.process
        .admin()
        .set_routing_rules(rules.clone())
        .await
        .expect("rules set");

    // 2. Customers through n1 and n2; an agent on n3 serves them.
    let mut agent = Desktop::try_login(n3.process.desktop_client(), login("anna", 30))
        .await
        .expect("anna logs in on n3");
    let mut gw1 = n1.process.gateway();
    let mut gw2 = n2.process.gateway();
    gw1.submit_contact(contact(&chat("cc-1"), "consumer"))
        .await
        .expect("cc-1");
    serve(&mut agent, "general").await;
    gw2.submit_contact(contact(&chat("cc-2"), "business"))
        .await
        .expect("cc-2");
    let business = serve(&mut agent, "business").await;
    let e = business.explanation.expect("an explanation");
    assert_eq!(e.routing_rule, "business-italian");
    // cc-3 is answered; cc-4 waits behind it and leaves.
    gw1.submit_contact(contact(&chat("cc-3"), "consumer"))
        .await
        .expect("cc-3");
    let third = agent.next_offer().await;
    agent.command_ok(cmd::accept(&third.offer_id)).await;
    gw2.submit_contact(contact(&chat("cc-4"), "consumer"))
        .await
        .expect("cc-4");
    eventually_some(WAIT, "cc-4 queued", || {
        let gw = gw2.clone();
        async move {
            let v = view_of(&gw, &chat("cc-4")).await;
            (v.position == 1).then_some(())
        }
    })
    .await;
    gw2.abandon(pb::AbandonRequest {
        identity: Some(chat("cc-4")),
        channel: pb::Channel::Chat as i32,
    })
    .await
    .expect("cc-4 leaves");
    agent.command_ok(cmd::resolve(&third.conversation_id)).await;

    // 3. By hand: 4 contacts, 3 answered and resolved, 1 abandoned. The
    //    router (on n1, the first node) publishes them, then saves them.
    let want = |k: &pb::Kpi| (k.offered, k.answered, k.abandoned, k.resolved) == (4, 3, 1, 3);
    eventually_some(WAIT, "the KPIs on n1's Prometheus endpoint", || {
        let port = n1.metrics_port;
        async move {
            let body = scrape(port)?;
            let counts = ["offered", "answered", "abandoned", "resolved"]
                .map(|o| total(&body, o).unwrap_or(-1.0));
            (counts == [4.0, 3.0, 1.0, 3.0]).then_some(())
        }
    })
    .await;
    let before = kpis(&n1.process).await.expect("KPIs from n1");
    assert!(want(&before), "{before:?}");
    assert!(
        (before.service_level - 0.75).abs() < 1e-9,
        "3 of 3 + 1: {before:?}"
    );
    assert!((before.abandonment_rate - 0.25).abs() < 1e-9, "{before:?}");
    // Saved in etcd: the total's row starts offered, answered, within,
    // abandoned (see `Counters::to_row`); resolved is its ninth number.
    let key = format!("{}router/kpis", etcd_prefix(CLUSTER));
    eventually_some(WAIT, "the KPIs saved in etcd", || {
        let doc = etcd.value(&key);
        async move {
            let doc = doc?;
            let row = doc.split("\"total\":[").nth(1)?.split(']').next()?;
            let n: Vec<u64> = row
                .split(',')
                .filter_map(|x| x.trim().parse().ok())
                .collect();
            (n.len() >= 9 && n[0] == 4 && n[1] == 3 && n[3] == 1 && n[8] == 3).then_some(())
        }
    })
    .await;

    // 4. The router's node dies; a survivor takes over and goes on.
    n1.process.kill();
    let after = eventually_some(WAIT, "a new router answering with the KPIs", || {
        let node = &n2.process;
        async move { kpis(node).await.filter(|k| k.resolved >= 3) }
    })
    .await;
    assert!(want(&after), "carried over: {after:?}");
    let read = n3
        .process
        .admin()
        .get_routing_rules(pb::GetRoutingRulesRequest {})
        .await
        .expect("rules after the takeover")
        .into_inner();
    assert_eq!(read, rules);
    let mut gw3 = n3.process.gateway();
    gw3.submit_contact(contact(&chat("cc-5"), "business"))
        .await
        .expect("cc-5");
    let fifth = serve(&mut agent, "business").await;
    assert_eq!(
        fifth.explanation.map(|e| e.routing_rule),
        Some("business-italian".to_owned())
    );
    let last = eventually_some(WAIT, "cc-5 counted on top", || {
        let node = &n3.process;
        async move { kpis(node).await.filter(|k| k.resolved == 4) }
    })
    .await;
    assert_eq!((last.offered, last.answered, last.abandoned), (5, 4, 1));
    // The new router's node publishes them now.
    let ports = [n2.metrics_port, n3.metrics_port];
    eventually_some(
        WAIT,
        "the KPIs on the new router's endpoint",
        || async move {
            ports
                .iter()
                .any(|&p| scrape(p).and_then(|b| total(&b, "resolved")) == Some(4.0))
                .then_some(())
        },
    )
    .await;
    for n in [&n1, &n2, &n3] {
        let _ = std::fs::remove_dir_all(&n.config_dir);
    }
    drop(etcd);
}
