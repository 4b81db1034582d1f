//! The waiting customers the failover, drain and scale scenarios work on,
//! made and checked through the public API only.
//!
//! Each customer is one chat message through `Gateway.SubmitContact` from
//! an identity of its own (`bench-<tag>-<label>-<n>`), so it is a new
//! customer with a conversation of its own; with no agent available it
//! waits in the queue. The acknowledgement names the customer, the
//! conversation and the message's sequence number, and that is what
//! [`check`] later expects `Gateway.GetConversation` to answer: the same
//! open conversation, that message at that sequence number, and sequence
//! numbers contiguous from 1.
//!
//! Calls are spread round-robin over the nodes, `in_flight` at a time.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use centralino_core::Channel;
use centralino_proto::v1 as pb;
use futures::StreamExt;
use pb::admin_client::AdminClient;
use pb::gateway_client::GatewayClient;
use pb::get_conversation_request::Who;
use pb::history_event::Kind;
use tonic::transport::Channel as Conn;

use super::system::{Target, poll_until};
use super::workload;

/// Largest response the bench reads (a ListConversations of a long queue).
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024 * 1024;
/// A call that takes longer than this failed.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// How long one customer's check keeps retrying a node that cannot answer
/// (UNAVAILABLE: a node just joined or left) on the next one.
const CHECK_DEADLINE: Duration = Duration::from_secs(10);
const RETRY_EVERY: Duration = Duration::from_millis(50);
/// Problems kept by a check, as examples (all are counted).
const EXAMPLES: usize = 10;

/// A customer the bench made, as its acknowledgement named it.
#[derive(Clone, Debug)]
pub struct Created {
    pub customer: String,
    pub conversation: String,
    /// The message's sequence number in the conversation.
    pub seq: u64,
    pub text: String,
}

/// What [`create`] made.
#[derive(Debug, Default)]
pub struct Population {
    pub created: Vec<Created>,
    /// Submits that were not acknowledged.
    pub failed: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
}

impl Population {
    /// Acknowledged customers per second.
    pub fn per_s(&self) -> f64 {
        self.created.len() as f64 / self.seconds.max(f64::EPSILON)
    }
}

/// What [`check`] found.
#[derive(Debug, Default, serde::Serialize)]
pub struct Checked {
    pub checked: usize,
    /// Customers whose conversation is missing, changed or incomplete.
    pub lost: usize,
    /// Examples of what was wrong.
    pub examples: Vec<String>,
}

/// A gateway client for a connection, with the bench's message limits.
pub fn gateway(conn: Conn) -> GatewayClient<Conn> {
    GatewayClient::new(conn)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// An admin client for a connection, with the bench's message limits.
pub fn admin(conn: Conn) -> AdminClient<Conn> {
    AdminClient::new(conn)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// One connection per node of `targets`, in order.
pub async fn connect_all(targets: &[Target]) -> anyhow::Result<Vec<Conn>> {
    let mut conns = Vec::with_capacity(targets.len());
    for t in targets {
        conns.push(t.connect().await?);
    }
    Ok(conns)
}

fn request<T>(body: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(body);
    r.set_timeout(CALL_TIMEOUT);
    r
}

/// Creates the customers numbered `numbers` (identities under `label`),
/// `in_flight` submits at a time over the nodes of `targets`.
pub async fn create(
    targets: &[Target],
    tag: &str,
    label: &str,
    numbers: std::ops::Range<u64>,
    in_flight: usize,
) -> anyhow::Result<Population> {
    let conns = connect_all(targets).await?;
    let gateways: Vec<GatewayClient<Conn>> = conns.into_iter().map(gateway).collect();
    let total = (numbers.end - numbers.start) as usize;
    let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
    eprintln!(
        "bench: creating {total} waiting customers through {}",
        names.join(", ")
    );
    let report_every = (total / 10).max(10_000);
    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let tag = format!("{tag}-{label}");
    let results: Vec<Result<Created, String>> = futures::stream::iter(numbers)
        .map(|n| {
            let mut client = gateways[n as usize % gateways.len()].clone();
            let (tag, done) = (tag.clone(), done.clone());
            async move {
                let text = format!("waiting customer {n} of bench {tag}");
                let req = pb::SubmitContactRequest {
                    channel: pb::Channel::Chat as i32,
                    identity: Some(workload::identity(Channel::Chat, &tag, n)),
                    topic: "bench".into(),
                    text: text.clone(),
                    ..Default::default()
                };
                let r = client
                    .submit_contact(request(req))
                    .await
                    .map(|r| r.into_inner())
                    .map_err(|s| format!("{:?}: {}", s.code(), s.message()));
                let d = done.fetch_add(1, Ordering::Relaxed) + 1;
                if d % report_every == 0 {
                    eprintln!(
                        "bench: {d} of {total} customers submitted ({:.0}/s)",
                        d as f64 / started.elapsed().as_secs_f64()
                    );
                }
                r.map(|a| Created {
                    customer: a.customer_id,
                    conversation: a.conversation_id,
                    seq: a.seq,
                    text,
                })
            }
        })
        .buffer_unordered(in_flight.max(1))
        .collect()
        .await;
    let mut p = Population {
        seconds: started.elapsed().as_secs_f64(),
        ..Population::default()
    };
    for r in results {
        match r {
            Ok(c) => p.created.push(c),
            Err(e) => {
                p.failed += 1;
                p.first_error.get_or_insert(e);
            }
        }
    }
    eprintln!(
        "bench: {} customers in {:.1} s ({:.0}/s), {} failed",
        p.created.len(),
        p.seconds,
        p.per_s(),
        p.failed
    );
    if p.created.is_empty() && total > 0 {
        anyhow::bail!(
            "none of {total} customers could be created; the first error: {}",
            p.first_error.as_deref().unwrap_or("-")
        );
    }
    Ok(p)
}

/// Checks every customer of `created` through `Gateway.GetConversation`
/// on the nodes of `targets`, `in_flight` at a time.
pub async fn check(
    targets: &[Target],
    created: &[Created],
    in_flight: usize,
) -> anyhow::Result<Checked> {
    let conns = connect_all(targets).await?;
    if conns.is_empty() {
        anyhow::bail!("no node left to check the customers on");
    }
    let gateways: Vec<GatewayClient<Conn>> = conns.into_iter().map(gateway).collect();
    let gateways = &gateways;
    let problems: Vec<Option<String>> = futures::stream::iter(created.iter().enumerate())
        .map(|(i, c)| async move { check_one(gateways, i, c).await.err() })
        .buffer_unordered(in_flight.max(1))
        .collect()
        .await;
    let mut checked = Checked {
        checked: created.len(),
        ..Checked::default()
    };
    for p in problems.into_iter().flatten() {
        checked.lost += 1;
        if checked.examples.len() < EXAMPLES {
            checked.examples.push(p);
        }
    }
    Ok(checked)
}

/// One customer's conversation, asked of node `i`, then the next ones
/// while they cannot answer.
async fn check_one(gateways: &[GatewayClient<Conn>], i: usize, c: &Created) -> Result<(), String> {
    let give_up = Instant::now() + CHECK_DEADLINE;
    let mut attempt = i;
    let view = loop {
        let mut client = gateways[attempt % gateways.len()].clone();
        let req = pb::GetConversationRequest {
            who: Some(Who::CustomerId(c.customer.clone())),
        };
        match client.get_conversation(request(req)).await {
            Ok(v) => break v.into_inner(),
            Err(s) if s.code() == tonic::Code::Unavailable && Instant::now() < give_up => {
                attempt += 1;
                tokio::time::sleep(RETRY_EVERY).await;
            }
            Err(s) => {
                return Err(format!(
                    "{}: GetConversation failed: {:?}: {}",
                    c.customer,
                    s.code(),
                    s.message()
                ));
            }
        }
    };
    history_problem(c, &view).map_or(Ok(()), Err)
}

/// What is wrong with `view` as the conversation of `c`, if anything.
pub fn history_problem(c: &Created, view: &pb::ConversationView) -> Option<String> {
    if view.conversation_id != c.conversation {
        return Some(format!(
            "{}: open conversation {:?}, want {}",
            c.customer, view.conversation_id, c.conversation
        ));
    }
    let seqs: Vec<u64> = view.history.iter().map(|e| e.seq).collect();
    if !seqs.iter().copied().eq(1..=seqs.len() as u64) {
        return Some(format!(
            "{}: sequence numbers not contiguous from 1: {seqs:?}",
            c.customer
        ));
    }
    let kept = view.history.iter().any(|e| {
        e.seq == c.seq && matches!(&e.kind, Some(Kind::CustomerMessage(m)) if m.text == c.text)
    });
    (!kept).then(|| {
        format!(
            "{}: the acknowledged message {:?} is not at seq {} of {}",
            c.customer, c.text, c.seq, c.conversation
        )
    })
}

/// The conversations the router tracks (`Admin.ListConversations`), by
/// conversation id.
pub async fn conversations(
    admin: &mut AdminClient<Conn>,
) -> Result<HashMap<String, pb::ConversationSummary>, tonic::Status> {
    let list = admin
        .list_conversations(request(pb::ListConversationsRequest::default()))
        .await?
        .into_inner();
    Ok(list
        .conversations
        .into_iter()
        .map(|c| (c.conversation_id.clone(), c))
        .collect())
}

/// Whether the router lists `c` as queued (waiting).
pub fn is_queued(listed: &HashMap<String, pb::ConversationSummary>, c: &Created) -> bool {
    listed
        .get(&c.conversation)
        .is_some_and(|s| s.state == pb::ConversationState::Queued as i32)
}

/// Polls until the router lists every one of `created` as queued; fails
/// past `deadline`, saying how many are not.
pub async fn wait_queued(
    admin: &AdminClient<Conn>,
    created: &[Created],
    deadline: Duration,
) -> anyhow::Result<()> {
    poll_until("every customer queued", deadline, RETRY_EVERY, || {
        let mut admin = admin.clone();
        async move {
            let listed = conversations(&mut admin)
                .await
                .context("Admin.ListConversations")?;
            let missing = created.iter().filter(|c| !is_queued(&listed, c)).count();
            Ok(if missing == 0 {
                Ok(())
            } else {
                Err(format!("{missing} of {} are not", created.len()))
            })
        }
    })
    .await
}

/// Polls `Admin.ListNodes` on every node of `targets` until each lists
/// exactly their names as the live members; fails past `deadline`.
pub async fn wait_members(targets: &[Target], deadline: Duration) -> anyhow::Result<()> {
    let mut want: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    want.sort();
    for t in targets {
        let node = admin(t.connect().await?);
        let what = format!("node {} listing the members {want:?}", t.name);
        poll_until(&what, deadline, RETRY_EVERY, || {
            let (mut node, want) = (node.clone(), &want);
            async move {
                Ok(
                    match node.list_nodes(request(pb::ListNodesRequest {})).await {
                        Ok(r) if r.get_ref().node_ids == *want => Ok(()),
                        Ok(r) => Err(format!("it lists {:?}", r.get_ref().node_ids)),
                        Err(s) => Err(format!("ListNodes: {s}")),
                    },
                )
            }
        })
        .await?;
    }
    Ok(())
}

/// Customer actors running on each node (`Admin.ListNodes` asked of each).
pub async fn local_customers(targets: &[Target]) -> anyhow::Result<Vec<(String, u32)>> {
    let mut v = Vec::new();
    for t in targets {
        let r = admin(t.connect().await?)
            .list_nodes(request(pb::ListNodesRequest {}))
            .await
            .with_context(|| format!("Admin.ListNodes on node {}", t.name))?
            .into_inner();
        v.push((t.name.clone(), r.local_customers));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(seq: u64, text: Option<&str>) -> pb::HistoryEvent {
        pb::HistoryEvent {
            seq,
            at_unix_ms: 0,
            kind: Some(match text {
                Some(t) => Kind::CustomerMessage(pb::history_event::CustomerMessage {
                    text: t.into(),
                    ..Default::default()
                }),
                None => Kind::Queued(pb::history_event::Queued::default()),
            }),
        }
    }

    #[test]
    fn a_history_must_hold_the_acknowledged_message_in_order() {
        let c = Created {
            customer: "cu-1".into(),
            conversation: "cu-1.1".into(),
            seq: 1,
            text: "hello".into(),
        };
        let view = |conv: &str, history| pb::ConversationView {
            conversation_id: conv.into(),
            history,
            ..Default::default()
        };
        let good = view("cu-1.1", vec![event(1, Some("hello")), event(2, None)]);
        assert_eq!(history_problem(&c, &good), None);
        let other = view("cu-1.2", vec![event(1, Some("hello"))]);
        assert!(history_problem(&c, &other).is_some_and(|p| p.contains("want cu-1.1")));
        let gap = view("cu-1.1", vec![event(1, Some("hello")), event(3, None)]);
        assert!(history_problem(&c, &gap).is_some_and(|p| p.contains("contiguous")));
        let lost = view("cu-1.1", vec![event(1, Some("bye")), event(2, None)]);
        assert!(history_problem(&c, &lost).is_some_and(|p| p.contains("not at seq 1")));
    }
}
