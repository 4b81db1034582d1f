//! Coordination through etcd: membership, ownership and the journal of
//! active conversations, for clusters of nodes.
//!
//! # Key layout
//!
//! Every key lives under the cluster's prefix (`/centralino/<cluster>/`),
//! so several clusters can share one etcd and `etcdctl get --prefix` shows
//! one cluster's whole state:
//!
//! ```text
//! members/<node-id>                       JSON {"id", "advertise"}, on the node's lease
//! owners/customer/cu-<n>                  owner node id, on the owner's lease
//! owners/agent/<agent-id>                 owner node id, on the owner's lease
//! owners/router/<name>                    owner node id, on the owner's lease
//! placed/cu-<n>                           node id of the customer's last claim (no lease)
//! journal/cu-<n>/record                   JSON CustomerRecord
//! journal/cu-<n>/snapshot                 JSON Conversation: the open conversation as of its
//!                                         latest snapshot, whole history included
//! journal/cu-<n>/events/<k>/<seq>         JSON HistoryEvent of open conversation cu-<n>.<k>
//!                                         after the snapshot; seq zero-padded to 20 digits,
//!                                         so key order is seq order
//! identities/<kind>/<address>             "cu-<n>": the customer the identity belongs to
//! customers/cu-<n>                        (empty) the customer exists
//! gateways/<node-id>                      JSON list of the node's gateway streams' channels, on its lease
//! queues/<queue-id>                       JSON QueueConfig: a queue an operator defined (Admin.UpsertQueue)
//! owners/campaign/<campaign-id>           the node running the campaign, on its lease
//! campaigns/<campaign-id>                 JSON CampaignRecord: the campaign and its progress
//! campaign-replies/<campaign-id>/cu-<n>   (empty) the customer replied to the campaign's notice
//! ```
//!
//! Values are JSON (serde) so that an operator can read them with `etcdctl`.
//! Closed conversations are not here: their history is in the archive
//! ([`crate::archive`]), and a customer without an open conversation keeps
//! only its record in the journal.
//!
//! # Fencing
//!
//! Architecture invariant: a lease alone never grants exclusivity; every
//! journal write is checked against the writer's fencing token, in the same
//! transaction that writes.
//!
//! The fencing token of an owned actor is the `mod_revision` of its owner
//! key. [`claim`](Coordination::claim) writes the key in one transaction only
//! if it does not exist (`create_revision == 0`), so the token is the
//! revision of that transaction; re-claiming by the owner returns the same
//! token. Every journal append is ONE transaction guarded by
//! `mod_revision(owners/customer/cu-<n>) == token`. A missing key compares as
//! `mod_revision` 0, so token 0 means "nobody owns it" (a single node that
//! claims nothing) and a token of a revoked lease (whose owner keys etcd
//! deleted) is refused: [`ClusterError::Fenced`]. A new claim is written at a
//! newer revision, so a token is never reused.
//!
//! # What one batch writes
//!
//! Always the record; then, in the same fenced transaction:
//! - an ordinary batch: one key per new event;
//! - a batch with a snapshot: the snapshot key, and a delete of the
//!   conversation's event keys (the snapshot covers them all, the batch's
//!   own events included), so the journal of a long conversation is one
//!   snapshot and fewer than about [`SNAPSHOT_EVERY`] events;
//! - a closing batch: a delete of the conversation's event keys and of the
//!   snapshot. The history is already in the archive (the journal stores it
//!   there before this transaction), so none of it is sent to etcd, and a
//!   close is small however long the conversation was.
//!
//! Batches of several customers share a transaction (group commit), each
//! guarded by its own fence.
//!
//! # Limits
//!
//! etcd refuses requests over 1.5 MiB (`--max-request-bytes`) and
//! transactions of more than 128 operations (`--max-txn-ops`). A batch over
//! [`EtcdOptions::max_request_bytes`] or [`EtcdOptions::max_txn_ops`] is
//! refused before it is sent, with [`ClusterError::Rejected`] naming the
//! limit: nothing is written, and etcd never sees an oversized request.
//! Retrying cannot help, so the actor answers the request that made the
//! batch with RESOURCE_EXHAUSTED.
//!
//! A snapshot holds the whole history, so a conversation whose history
//! outgrows one request (about 1 MiB of events: thousands of messages) can
//! no longer take its next snapshot: the batch that would carry it is
//! refused, saying that the conversation has outgrown the journal, and so
//! is every later one that crosses the same point. The conversation can
//! still be resolved (a close sends no history to etcd; the archive gets
//! all of it), and the customer's next contact opens a new conversation.
//! An actor batches at most [`MAX_BATCH_EVENTS`] events without a snapshot,
//! so the operation limit is never what refuses a single customer's batch.
//!
//! [`SNAPSHOT_EVERY`]: centralino_actors::journal::SNAPSHOT_EVERY
//! [`MAX_BATCH_EVENTS`]: centralino_actors::journal::MAX_BATCH_EVENTS
//!
//! # Timeouts
//!
//! Every etcd call, connecting included, is bounded by
//! [`EtcdOptions::timeout`]: an unreachable etcd gives
//! [`ClusterError::Unavailable`] saying which call did not answer, never a
//! hang. The client also pings idle connections (HTTP/2 keep-alive), so a
//! watch on a silently dead connection fails instead of waiting forever.
//!
//! # Watching members
//!
//! [`watch_members`](Coordination::watch_members) lists the members at
//! revision R, then a task watches `members/` from R+1 and turns puts into
//! [`MemberEvent::Joined`] and deletes into [`MemberEvent::Left`]. It keeps
//! the last revision it has seen (events, and progress notifications), so:
//! - when the watch stream breaks (etcd restarted, connection lost) it
//!   watches again from that revision + 1, after a short backoff;
//! - when that revision has been compacted away, it lists the members again
//!   and emits the difference from what it knew (first the nodes that left,
//!   then those that joined), then watches from the new revision + 1.
//!
//! The task stops when the receiver is dropped.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::time::Duration;

use centralino_actors::campaign::CampaignRecord;
use centralino_actors::journal::{Creation, CustomerRecord, JournalBatch, Recovered};
use centralino_core::customer::Conversation;
use centralino_core::history::HistoryEvent;
use centralino_core::kpi::{Counters, KpiReport};
use centralino_core::queue::QueueConfig;
use centralino_core::rules::RoutingRule;
use centralino_core::{CampaignId, Channel, ConversationId, CustomerId, Identity, IdentityKind};
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, DeleteOptions, EventType, GetOptions, KeyValue,
    KvClient, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::coordination::{ActorKey, Coordination, MemberEvent, NodeInfo};
use crate::error::{ClusterError, Result};
use crate::topology::ROUTER;

/// How long any one etcd call may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);

/// Largest journal transaction sent by default: 1 MiB, leaving room under
/// etcd's default request limit of 1.5 MiB for the request's framing.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// Most operations in one transaction by default: etcd's `--max-txn-ops`.
pub const MAX_TXN_OPS: usize = 128;

/// Largest response accepted (a load of a long open conversation).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Counted per operation on top of its key and value (protobuf framing).
const OP_OVERHEAD_BYTES: usize = 16;

/// How often idle connections are pinged to detect a dead etcd.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(3);

/// Backoff of the member watch while etcd cannot be reached.
const WATCH_RETRY_MIN: Duration = Duration::from_millis(100);
const WATCH_RETRY_MAX: Duration = Duration::from_secs(2);

/// How the etcd backend talks to etcd.
#[derive(Clone, Debug)]
pub struct EtcdOptions {
    /// Longest wait for one etcd call, and for connecting; past it the call
    /// fails with [`ClusterError::Unavailable`].
    pub timeout: Duration,
    /// Largest journal transaction, in bytes of keys and values.
    pub max_request_bytes: usize,
    /// Most operations in one journal transaction (etcd's `--max-txn-ops`).
    pub max_txn_ops: usize,
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions {
            timeout: DEFAULT_TIMEOUT,
            max_request_bytes: MAX_REQUEST_BYTES,
            max_txn_ops: MAX_TXN_OPS,
        }
    }
}

/// [`Coordination`] over etcd. Cheap to clone: clones share one connection.
#[derive(Clone)]
pub struct EtcdCoordination {
    client: Client,
    kv: KvClient,
    /// Point reads waiting to go out together (see [`read_batches`]).
    reads: mpsc::UnboundedSender<Read>,
    /// Ends with `/`.
    prefix: String,
    opts: EtcdOptions,
    /// For error messages.
    endpoints: String,
}

/// A member key's value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Member {
    id: String,
    advertise: String,
}

impl From<&NodeInfo> for Member {
    fn from(n: &NodeInfo) -> Self {
        Member {
            id: n.id.clone(),
            advertise: n.advertise.clone(),
        }
    }
}

impl From<Member> for NodeInfo {
    fn from(m: Member) -> Self {
        NodeInfo {
            id: m.id,
            advertise: m.advertise,
        }
    }
}

/// A member as listed: its info and the revision its key was created at,
/// which tells one incarnation of a node id from the next.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Listed {
    info: NodeInfo,
    created: i64,
}

type Members = BTreeMap<String, Listed>;

impl EtcdCoordination {
    /// Connects to etcd at `endpoints` (`http://host:port`) and keeps every
    /// key under `prefix` (the cluster's, e.g. `/centralino/<cluster>/`; a
    /// missing trailing `/` is added), with the default [`EtcdOptions`].
    pub async fn connect(endpoints: &[String], prefix: &str) -> Result<Self> {
        Self::connect_with(endpoints, prefix, EtcdOptions::default()).await
    }

    /// [`connect`](Self::connect) with options. Fails with
    /// [`ClusterError::Unavailable`] unless etcd answers a first read within
    /// the timeout.
    pub async fn connect_with(
        endpoints: &[String],
        prefix: &str,
        opts: EtcdOptions,
    ) -> Result<Self> {
        let shown = endpoints.join(",");
        if endpoints.is_empty() {
            return Err(ClusterError::Unavailable("no etcd endpoint given".into()));
        }
        let options = ConnectOptions::new()
            .with_connect_timeout(opts.timeout)
            .with_keep_alive(KEEP_ALIVE_INTERVAL, opts.timeout)
            .with_keep_alive_while_idle(true)
            .with_require_leader(true);
        let client =
            match tokio::time::timeout(opts.timeout, Client::connect(endpoints, Some(options)))
                .await
            {
                Ok(Ok(c)) => c,
                Ok(Err(e)) => {
                    return Err(ClusterError::Unavailable(format!(
                        "connecting to etcd at {shown}: {e}"
                    )));
                }
                Err(_) => return Err(timed_out(&shown, "connecting", opts.timeout)),
            };
        let mut prefix = prefix.to_owned();
        if !prefix.ends_with('/') {
            prefix.push('/');
        }
        let kv = client
            .kv_client()
            .max_decoding_message_size(MAX_RESPONSE_BYTES);
        let (reads, pending) = mpsc::unbounded_channel();
        tokio::spawn(read_batches(
            kv.clone(),
            opts.timeout,
            shown.clone(),
            pending,
        ));
        let this = EtcdCoordination {
            client,
            kv,
            reads,
            prefix,
            opts,
            endpoints: shown,
        };
        let mut kv = this.kv.clone();
        let probe = kv.get(
            this.key("members/"),
            Some(GetOptions::new().with_prefix().with_count_only()),
        );
        this.call("the first read (members)", None, probe).await?;
        tracing::info!(endpoints = %this.endpoints, prefix = %this.prefix, "connected to etcd");
        Ok(this)
    }

    /// The key prefix, ending with `/`.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, rest: impl fmt::Display) -> String {
        format!("{}{rest}", self.prefix)
    }

    fn member_key(&self, node: &str) -> String {
        self.key(format_args!("members/{node}"))
    }

    fn owner_key(&self, key: &ActorKey) -> String {
        self.key(format_args!("owners/{key}"))
    }

    /// The node that last claimed the customer; not on any lease, so it
    /// outlives a dead owner and tells survivors whom to recover.
    fn placed_key(&self, customer: CustomerId) -> String {
        self.key(format_args!("placed/{customer}"))
    }

    /// The writes that make `node` the owner of `key`: the ownership record
    /// on the node's lease and, for a customer, its placement record.
    fn owner_puts(&self, key: &ActorKey, owner_key: &str, node: &str, lease: i64) -> Vec<TxnOp> {
        let mut puts = vec![TxnOp::put(
            owner_key,
            node,
            Some(PutOptions::new().with_lease(lease)),
        )];
        if let ActorKey::Customer(c) = key {
            puts.push(TxnOp::put(self.placed_key(*c), node, None));
        }
        puts
    }

    fn record_key(&self, customer: CustomerId) -> String {
        self.key(format_args!("journal/{customer}/record"))
    }

    fn events_prefix(&self, conv: ConversationId) -> String {
        self.key(format_args!(
            "journal/{}/events/{}/",
            conv.customer, conv.number
        ))
    }

    fn event_key(&self, conv: ConversationId, seq: u64) -> String {
        format!("{}{seq:020}", self.events_prefix(conv))
    }

    fn identity_key(&self, identity: &Identity) -> String {
        let kind = match identity.kind {
            IdentityKind::Phone => "phone",
            IdentityKind::Email => "email",
            IdentityKind::ChatSession => "chat",
            IdentityKind::SocialHandle => "social",
            IdentityKind::AppUser => "app",
        };
        self.key(format_args!("identities/{kind}/{}", identity.address))
    }

    /// Every value under `sub` (a prefix ending with `/`), decoded.
    async fn list<T: for<'de> Deserialize<'de>>(&self, what: &str, sub: &str) -> Result<Vec<T>> {
        let prefix = self.key(sub);
        let mut kv = self.kv.clone();
        let resp = self
            .call(
                what,
                None,
                kv.get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        resp.kvs().iter().map(decode).collect()
    }

    fn campaign_key(&self, id: &CampaignId) -> String {
        self.key(format_args!("campaigns/{id}"))
    }

    fn snapshot_key(&self, customer: CustomerId) -> String {
        self.key(format_args!("journal/{customer}/snapshot"))
    }

    /// Runs one etcd call within the timeout. Errors become
    /// [`ClusterError::Unavailable`] naming `what`, except "lease not found"
    /// for calls about `lease`, which becomes [`ClusterError::LeaseExpired`].
    async fn call<T>(
        &self,
        what: &str,
        lease: Option<i64>,
        fut: impl Future<Output = std::result::Result<T, etcd_client::Error>>,
    ) -> Result<T> {
        crate::metrics::etcd_request(what);
        match tokio::time::timeout(self.opts.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => match lease {
                Some(lease) if e.to_string().contains("lease not found") => {
                    Err(ClusterError::LeaseExpired(lease))
                }
                _ => Err(ClusterError::Unavailable(format!(
                    "etcd at {}: {what}: {e}",
                    self.endpoints
                ))),
            },
            Err(_) => Err(timed_out(&self.endpoints, what, self.opts.timeout)),
        }
    }

    /// One key's value, read together with the other point reads waiting
    /// at the same moment (see [`read_batches`]).
    async fn read(&self, key: String) -> Result<Option<KeyValue>> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let stopped = || ClusterError::Unavailable("the etcd reader stopped".into());
        self.reads.send((key, tx)).map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Puts `value` at `key` if `owner` is still owned with `token`
    /// ([`ClusterError::Fenced`] otherwise).
    async fn fenced_put(
        &self,
        what: &str,
        owner: &ActorKey,
        token: u64,
        key: String,
        value: Vec<u8>,
    ) -> Result<()> {
        let txn = Txn::new()
            .when([fence(&self.owner_key(owner), token)])
            .and_then([TxnOp::put(key, value, None)]);
        let mut kv = self.kv.clone();
        let resp = self.call(what, None, kv.txn(txn)).await?;
        if !resp.succeeded() {
            return Err(ClusterError::Fenced {
                key: owner.to_string(),
                token,
            });
        }
        Ok(())
    }

    /// The members and the revision they were read at.
    async fn list_members(&self) -> Result<(Members, i64)> {
        let mut kv = self.kv.clone();
        let prefix = self.key("members/");
        let resp = self
            .call(
                "listing members",
                None,
                kv.get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let revision = resp.header().map_or(0, |h| h.revision());
        let mut members = Members::new();
        for kv in resp.kvs() {
            // Keyed by the id in the key, as deletes (which carry only the
            // key) are in the watch.
            let Some(id) = member_id(kv, &prefix) else {
                continue;
            };
            match decode::<Member>(kv) {
                Ok(m) => {
                    let listed = Listed {
                        info: m.into(),
                        created: kv.create_revision(),
                    };
                    members.insert(id, listed);
                }
                Err(e) => tracing::warn!(error = %e, "skipping a member key"),
            }
        }
        Ok((members, revision))
    }

    /// Refuses a batch etcd would refuse, naming the limit and the fix.
    fn check_limits(&self, batch: &JournalBatch, ops: &Ops) -> Result<()> {
        let customer = batch.record.id;
        let (bytes, limit) = (ops.bytes, self.opts.max_request_bytes);
        if bytes > limit {
            let message = match (&batch.snapshot, batch.conversation) {
                (Some(snapshot), Some(conv)) => format!(
                    "conversation {conv} has outgrown the journal: its snapshot ({} events) makes a \
                     write of {bytes} bytes, over the {limit}-byte limit of one etcd request; \
                     resolve the conversation (its whole history moves to the archive) and the \
                     customer's next contact opens a new one",
                    snapshot.history.len()
                ),
                _ => format!(
                    "journal batch of {customer} is {bytes} bytes, over the {limit}-byte limit \
                     of one etcd request"
                ),
            };
            return Err(ClusterError::Rejected(message));
        }
        if ops.ops.len() > self.opts.max_txn_ops {
            return Err(ClusterError::Rejected(format!(
                "journal batch of {customer} needs {} operations, over etcd's limit of {} per transaction",
                ops.ops.len(),
                self.opts.max_txn_ops
            )));
        }
        Ok(())
    }

    /// The fence and the writes of a batch (see "What one batch writes").
    fn batch_ops(&self, batch: &JournalBatch) -> Result<(Vec<Compare>, Ops)> {
        let customer = batch.record.id;
        let owner = ActorKey::Customer(customer);
        let owner_key = self.owner_key(&owner);
        let mut ops = Ops::default();
        let fences = match &batch.create {
            None => vec![fence(&owner_key, batch.token)],
            Some(create) => {
                // Nobody owns it and none of its identities is linked; the
                // write claims it and links them.
                let Some((node, lease)) = &create.owner else {
                    return Err(ClusterError::Unavailable(format!(
                        "creating {customer}: the batch names no owner"
                    )));
                };
                let mut fences = vec![Compare::create_revision(
                    owner_key.as_str(),
                    CompareOp::Equal,
                    0,
                )];
                for op in self.owner_puts(&owner, &owner_key, node, *lease) {
                    ops.push(op, owner_key.len() + node.len());
                }
                ops.put(self.key(format_args!("customers/{customer}")), Vec::new());
                for i in &create.identities {
                    let key = self.identity_key(i);
                    fences.push(Compare::create_revision(key.as_str(), CompareOp::Equal, 0));
                    ops.put(key, customer.to_string().into_bytes());
                }
                fences
            }
        };
        ops.put(self.record_key(customer), encode(&batch.record)?);
        match (batch.conversation, &batch.snapshot) {
            (Some(conv), _) if batch.closed => {
                ops.delete_prefix(self.events_prefix(conv));
                ops.delete(self.snapshot_key(customer));
            }
            (Some(conv), Some(snapshot)) => {
                check_snapshot(conv, snapshot, &batch.events)?;
                ops.put(self.snapshot_key(customer), encode(snapshot)?);
                ops.delete_prefix(self.events_prefix(conv));
            }
            (Some(conv), None) => {
                for e in &batch.events {
                    ops.put(self.event_key(conv, e.seq), encode(e)?);
                }
            }
            (None, _) if !batch.events.is_empty() || batch.snapshot.is_some() => {
                debug_assert!(
                    false,
                    "journal batch of {customer} has events but no conversation"
                );
                return Err(ClusterError::Unavailable(format!(
                    "journal batch of {customer} has events but no conversation"
                )));
            }
            (None, _) => {}
        }
        self.check_limits(batch, &ops)?;
        Ok((fences, ops))
    }

    /// The fenced write of one batch; the token the customer's writes carry
    /// from now on.
    async fn append_one(&self, batch: JournalBatch) -> Result<u64> {
        let (fences, ops) = self.batch_ops(&batch)?;
        let owner = ActorKey::Customer(batch.record.id);
        let mut txn = Txn::new().when(fences).and_then(ops.ops);
        if let Some(create) = &batch.create {
            // Why the fence failed, if it does: who owns it, whose
            // identities they are.
            let mut gets = vec![TxnOp::get(self.owner_key(&owner), None)];
            for i in &create.identities {
                gets.push(TxnOp::get(self.identity_key(i), None));
            }
            txn = txn.or_else(gets);
        }
        let mut kv = self.kv.clone();
        let resp = self.call("journal append", None, kv.txn(txn)).await?;
        let revision = resp.header().map_or(0, |h| h.revision()) as u64;
        match (&batch.create, resp.succeeded()) {
            (None, true) => Ok(batch.token),
            (Some(_), true) => Ok(revision),
            (None, false) => Err(ClusterError::Fenced {
                key: owner.to_string(),
                token: batch.token,
            }),
            (Some(create), false) => Err(creation_refused(&owner, create, resp.op_responses())),
        }
    }

    /// Group commit: the batches of several customers in as few
    /// transactions as etcd's limits allow (and at most one batch of a
    /// customer in each), each guarded by every member's fence. A group whose transaction fails (one member was fenced out)
    /// is retried member by member, so only the fenced one fails.
    async fn append_group(&self, batches: Vec<JournalBatch>) -> Vec<Result<u64>> {
        let mut results: Vec<Option<Result<u64>>> = vec![None; batches.len()];
        let mut groups: Vec<(Vec<usize>, Vec<Compare>, Ops)> = Vec::new();
        for (i, b) in batches.iter().enumerate() {
            let (fence, ops) = match self.batch_ops(b) {
                Ok(x) => x,
                Err(e) => {
                    results[i] = Some(Err(e));
                    continue;
                }
            };
            // A transaction touches a key once: a customer's second batch
            // goes to the next transaction, which etcd applies after.
            let fits = groups.last().is_some_and(|(members, _, g)| {
                members.len() < self.opts.max_txn_ops
                    && g.ops.len() + ops.ops.len() <= self.opts.max_txn_ops
                    && g.bytes + ops.bytes <= self.opts.max_request_bytes
                    && members.iter().all(|&m| batches[m].record.id != b.record.id)
            });
            if !fits {
                groups.push((Vec::new(), Vec::new(), Ops::default()));
            }
            if let Some((members, fences, g)) = groups.last_mut() {
                members.push(i);
                fences.extend(fence);
                g.bytes += ops.bytes;
                g.ops.extend(ops.ops);
            }
        }
        let mut kv = self.kv.clone();
        for (members, fences, ops) in groups {
            let outcome = if members.len() == 1 {
                None
            } else {
                let txn = Txn::new().when(fences).and_then(ops.ops);
                Some(
                    self.call("journal append (group commit)", None, kv.txn(txn))
                        .await,
                )
            };
            match outcome {
                Some(Ok(resp)) if resp.succeeded() => {
                    let revision = resp.header().map_or(0, |h| h.revision()) as u64;
                    for i in members {
                        let b = &batches[i];
                        let token = if b.create.is_some() {
                            revision
                        } else {
                            b.token
                        };
                        results[i] = Some(Ok(token));
                    }
                }
                Some(Err(e)) => {
                    for i in members {
                        results[i] = Some(Err(e.clone()));
                    }
                }
                // One member, or a member fenced out: each on its own.
                _ => {
                    for i in members {
                        results[i] = Some(self.append_one(batches[i].clone()).await);
                    }
                }
            }
        }
        results
            .into_iter()
            .map(|r| {
                r.unwrap_or_else(|| {
                    Err(ClusterError::Unavailable(
                        "journal batch not committed".into(),
                    ))
                })
            })
            .collect()
    }
}

/// Why a creating batch's fence failed, from the `or_else` reads of its
/// transaction: the customer is owned (by a node that raced this one), or
/// one of its identities belongs to another customer.
fn creation_refused(
    owner: &ActorKey,
    create: &Creation,
    responses: Vec<TxnOpResponse>,
) -> ClusterError {
    let mut kvs = responses.into_iter().map(|r| match r {
        TxnOpResponse::Get(g) => g.kvs().first().cloned(),
        _ => None,
    });
    if let Some(Some(kv)) = kvs.next() {
        return ClusterError::OwnedElsewhere {
            key: owner.to_string(),
            owner: String::from_utf8_lossy(kv.value()).into_owned(),
        };
    }
    for (identity, kv) in create.identities.iter().zip(kvs) {
        if let Some(customer) = kv.and_then(|kv| parse_customer(&kv).ok()) {
            return ClusterError::IdentityTaken {
                identity: identity.clone(),
                customer,
            };
        }
    }
    ClusterError::Unavailable(format!(
        "creating {owner}: the fence failed, yet nothing was in the way (changed meanwhile?)"
    ))
}

/// A snapshot must be of the batch's conversation and cover its events:
/// the transaction that writes it deletes every event key it replaces.
fn check_snapshot(
    conv: ConversationId,
    snapshot: &Conversation,
    events: &[HistoryEvent],
) -> Result<()> {
    let covered = snapshot.history.last_seq();
    let last = events.last().map_or(covered, |e| e.seq);
    if snapshot.id != conv || last != covered {
        debug_assert!(
            false,
            "snapshot of {} up to seq {covered} in a batch of {conv} up to seq {last}",
            snapshot.id
        );
        return Err(ClusterError::Unavailable(format!(
            "journal batch of {conv}: its snapshot ({} up to seq {covered}) does not cover the batch (up to seq {last})",
            snapshot.id
        )));
    }
    Ok(())
}

#[async_trait::async_trait]
impl Coordination for EtcdCoordination {
    fn group_window(&self) -> Duration {
        crate::group::GROUP_WINDOW
    }

    async fn join(&self, node: &NodeInfo, ttl: Duration) -> Result<i64> {
        let ttl_secs = (ttl.as_secs_f64().ceil() as i64).max(1);
        let mut leases = self.client.lease_client();
        let lease = self
            .call("granting a lease", None, leases.grant(ttl_secs, None))
            .await?
            .id();
        let value = encode(&Member::from(node))?;
        let mut kv = self.kv.clone();
        let put = kv.put(
            self.member_key(&node.id),
            value,
            Some(PutOptions::new().with_lease(lease)),
        );
        if let Err(e) = self.call("registering the member", Some(lease), put).await {
            // Best effort: the lease would expire on its own anyway.
            let _ = self
                .call(
                    "revoking the lease of a failed join",
                    Some(lease),
                    leases.revoke(lease),
                )
                .await;
            return Err(e);
        }
        Ok(lease)
    }

    /// Opens a keep-alive stream, sends ONE renewal and reads its answer
    /// (etcd-client refuses a TTL of 0: the lease is gone). At one renewal
    /// per third of the TTL, the stream's set-up costs nothing that matters,
    /// and no stream outlives an etcd restart.
    async fn keep_alive(&self, lease: i64) -> Result<()> {
        let mut leases = self.client.lease_client();
        self.call("renewing the lease", Some(lease), leases.keep_alive(lease))
            .await?;
        Ok(())
    }

    async fn leave(&self, lease: i64) -> Result<()> {
        let mut leases = self.client.lease_client();
        self.call("revoking the lease", Some(lease), leases.revoke(lease))
            .await?;
        Ok(())
    }

    async fn members(&self) -> Result<Vec<NodeInfo>> {
        let (members, _) = self.list_members().await?;
        let mut m: Vec<NodeInfo> = members.into_values().map(|l| l.info).collect();
        m.sort();
        Ok(m)
    }

    async fn watch_members(&self) -> Result<mpsc::Receiver<MemberEvent>> {
        let (known, revision) = self.list_members().await?;
        let (tx, rx) = mpsc::channel(1024);
        let watch = MemberWatch {
            etcd: self.clone(),
            known,
            next: revision + 1,
            relist: false,
            backoff: WATCH_RETRY_MIN,
            tx,
        };
        tokio::spawn(watch.run());
        Ok(rx)
    }

    async fn claim(&self, key: &ActorKey, node: &str, lease: i64) -> Result<u64> {
        let owner_key = self.owner_key(key);
        let txn = Txn::new()
            .when([Compare::create_revision(
                owner_key.as_str(),
                CompareOp::Equal,
                0,
            )])
            .and_then(self.owner_puts(key, &owner_key, node, lease))
            .or_else([TxnOp::get(owner_key.as_str(), None)]);
        let mut kv = self.kv.clone();
        let resp = self
            .call("claiming an actor", Some(lease), kv.txn(txn))
            .await?;
        if resp.succeeded() {
            let revision = resp.header().map_or(0, |h| h.revision());
            debug_assert!(revision > 0, "a write has a revision");
            return Ok(revision as u64);
        }
        let Some(current) = first_kv(resp.op_responses()) else {
            // The compare failed, so the key existed at the transaction's
            // revision and its get saw it.
            return Err(ClusterError::Unavailable(format!(
                "claim of {key}: owner key vanished inside a transaction"
            )));
        };
        let owner = String::from_utf8_lossy(current.value()).into_owned();
        if owner != node {
            return Err(ClusterError::OwnedElsewhere {
                key: key.to_string(),
                owner,
            });
        }
        Ok(current.mod_revision() as u64)
    }

    async fn release(&self, key: &ActorKey, token: u64) -> Result<()> {
        let owner_key = self.owner_key(key);
        let mut deletes = vec![TxnOp::delete(owner_key.as_str(), None)];
        if let ActorKey::Customer(c) = key {
            deletes.push(TxnOp::delete(self.placed_key(*c), None));
        }
        let txn = Txn::new()
            .when([fence(&owner_key, token)])
            .and_then(deletes)
            .or_else([TxnOp::get(owner_key.as_str(), None)]);
        let mut kv = self.kv.clone();
        let resp = self.call("releasing an actor", None, kv.txn(txn)).await?;
        if resp.succeeded() || first_kv(resp.op_responses()).is_none() {
            // Released, or nobody owned it any more.
            return Ok(());
        }
        Err(ClusterError::Fenced {
            key: key.to_string(),
            token,
        })
    }

    async fn owner(&self, key: &ActorKey) -> Result<Option<(String, u64)>> {
        Ok(self.read(self.owner_key(key)).await?.map(|kv| {
            (
                String::from_utf8_lossy(kv.value()).into_owned(),
                kv.mod_revision() as u64,
            )
        }))
    }

    async fn transfer(&self, key: &ActorKey, from: u64, node: &str, lease: i64) -> Result<u64> {
        let owner_key = self.owner_key(key);
        let txn = Txn::new()
            .when([fence(&owner_key, from)])
            .and_then(self.owner_puts(key, &owner_key, node, lease));
        let mut kv = self.kv.clone();
        let resp = self
            .call("transferring an actor", Some(lease), kv.txn(txn))
            .await?;
        if !resp.succeeded() {
            return Err(ClusterError::Fenced {
                key: key.to_string(),
                token: from,
            });
        }
        Ok(resp.header().map_or(0, |h| h.revision()) as u64)
    }

    async fn orphans(&self, live: &[String]) -> Result<Vec<(String, CustomerId)>> {
        let prefix = self.key("placed/");
        let mut kv = self.kv.clone();
        let resp = self
            .call(
                "listing placements",
                None,
                kv.get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let mut orphans = Vec::new();
        for kv in resp.kvs() {
            let node = String::from_utf8_lossy(kv.value()).into_owned();
            if live.contains(&node) {
                continue;
            }
            let id = kv
                .key_str()
                .ok()
                .and_then(|k| k.strip_prefix(prefix.as_str()))
                .and_then(|k| k.parse::<CustomerId>().ok());
            match id {
                Some(id) => orphans.push((node, id)),
                None => {
                    tracing::warn!(key = ?String::from_utf8_lossy(kv.key()), "unreadable placement key; skipped")
                }
            }
        }
        Ok(orphans)
    }

    async fn append(&self, batch: JournalBatch) -> Result<u64> {
        self.append_one(batch).await
    }

    async fn append_many(&self, batches: Vec<JournalBatch>) -> Vec<Result<u64>> {
        self.append_group(batches).await
    }

    async fn load(&self, customer: CustomerId) -> Result<Option<Recovered>> {
        // One range read: the record, the snapshot and the events as of
        // one revision.
        let prefix = self.key(format_args!("journal/{customer}/"));
        let mut kv = self.kv.clone();
        let resp = self
            .call(
                "loading a journal",
                None,
                kv.get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        let record_key = self.record_key(customer);
        let Some(record) = resp
            .kvs()
            .iter()
            .find(|kv| kv.key() == record_key.as_bytes())
        else {
            return Ok(None);
        };
        let record: CustomerRecord = decode(record)?;
        let Some(open) = record.open else {
            return Ok(Some(Recovered {
                record,
                snapshot: None,
                events: Vec::new(),
            }));
        };
        let snapshot_key = self.snapshot_key(customer);
        let snapshot = match resp
            .kvs()
            .iter()
            .find(|kv| kv.key() == snapshot_key.as_bytes())
        {
            // A snapshot of another conversation is a leftover: the open
            // one has none yet.
            Some(kv) => Some(Box::new(decode::<Conversation>(kv)?)).filter(|s| s.id == open),
            None => None,
        };
        let mut last = snapshot.as_ref().map_or(0, |s| s.history.last_seq());
        let mut events = Vec::new();
        // Keys come sorted, and zero-padded seqs sort numerically.
        let events_prefix = self.events_prefix(open);
        for kv in resp
            .kvs()
            .iter()
            .filter(|kv| kv.key().starts_with(events_prefix.as_bytes()))
        {
            let event = decode::<HistoryEvent>(kv)?;
            if event.seq <= last {
                continue;
            }
            if event.seq != last + 1 {
                // Replaying past a gap would renumber every later event.
                return Err(ClusterError::Unavailable(format!(
                    "journal of {open} is not contiguous: seq {} follows seq {last} (key {}); \
                     the customer cannot be recovered until the missing event is restored",
                    event.seq,
                    String::from_utf8_lossy(kv.key())
                )));
            }
            last = event.seq;
            events.push(event);
        }
        Ok(Some(Recovered {
            record,
            snapshot,
            events,
        }))
    }

    async fn link_identity(
        &self,
        identity: &Identity,
        customer: CustomerId,
    ) -> Result<(CustomerId, bool)> {
        let key = self.identity_key(identity);
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([
                TxnOp::put(key.as_str(), customer.to_string(), None),
                TxnOp::put(self.key(format_args!("customers/{customer}")), "", None),
            ])
            .or_else([TxnOp::get(key.as_str(), None)]);
        let mut kv = self.kv.clone();
        let resp = self.call("linking an identity", None, kv.txn(txn)).await?;
        if resp.succeeded() {
            return Ok((customer, true));
        }
        let current = first_kv(resp.op_responses()).ok_or_else(|| {
            ClusterError::Unavailable(format!(
                "identity {identity}: key vanished inside a transaction"
            ))
        })?;
        Ok((parse_customer(&current)?, false))
    }

    async fn lookup_identity(&self, identity: &Identity) -> Result<Option<CustomerId>> {
        self.read(self.identity_key(identity))
            .await?
            .as_ref()
            .map(parse_customer)
            .transpose()
    }

    async fn customer_known(&self, customer: CustomerId) -> Result<bool> {
        let key = self.key(format_args!("customers/{customer}"));
        Ok(self.read(key).await?.is_some())
    }

    async fn set_gateways(&self, node: &str, lease: i64, streams: &[Vec<Channel>]) -> Result<()> {
        let key = self.key(format_args!("gateways/{node}"));
        let mut kv = self.kv.clone();
        let value = encode(streams)?;
        self.call(
            "registering gateway streams",
            Some(lease),
            kv.put(key, value, Some(PutOptions::new().with_lease(lease))),
        )
        .await?;
        Ok(())
    }

    async fn gateways(&self) -> Result<Vec<(String, Vec<Vec<Channel>>)>> {
        let prefix = self.key("gateways/");
        let mut kv = self.kv.clone();
        let resp = self
            .call(
                "listing gateway streams",
                None,
                kv.get(prefix.as_str(), Some(GetOptions::new().with_prefix())),
            )
            .await?;
        resp.kvs()
            .iter()
            .map(|kv| {
                let node = kv
                    .key_str()
                    .map_err(|e| ClusterError::Unavailable(format!("gateway key: {e}")))?;
                Ok((
                    node.trim_start_matches(prefix.as_str()).to_owned(),
                    decode(kv)?,
                ))
            })
            .collect()
    }

    async fn save_queue(&self, queue: &QueueConfig) -> Result<()> {
        let key = self.key(format_args!("queues/{}", queue.id));
        let mut kv = self.kv.clone();
        self.call("saving a queue", None, kv.put(key, encode(queue)?, None))
            .await?;
        Ok(())
    }

    async fn queues(&self) -> Result<Vec<QueueConfig>> {
        self.list("listing queues", "queues/").await
    }

    async fn save_rules(&self, rules: &[RoutingRule]) -> Result<()> {
        let key = self.key("router/rules");
        let mut kv = self.kv.clone();
        self.call(
            "saving the routing rules",
            None,
            kv.put(key, encode(&rules)?, None),
        )
        .await?;
        Ok(())
    }

    async fn rules(&self) -> Result<Option<Vec<RoutingRule>>> {
        let kv = self.read(self.key("router/rules")).await?;
        kv.as_ref().map(decode).transpose()
    }

    async fn save_kpis(&self, kpis: &KpiReport, token: u64) -> Result<()> {
        let owner = ActorKey::Router(ROUTER.into());
        let mut doc = encode(&KpiDoc::of(kpis, true))?;
        if doc.len() > MAX_KPI_DOC {
            tracing::warn!(
                bytes = doc.len(),
                agents = kpis.agents.len(),
                "the agents' KPIs are too many to save: a router taking over starts them from zero"
            );
            doc = encode(&KpiDoc::of(kpis, false))?;
        }
        self.fenced_put(
            "saving the KPIs",
            &owner,
            token,
            self.key("router/kpis"),
            doc,
        )
        .await
    }

    async fn kpis(&self) -> Result<Option<KpiReport>> {
        let kv = self.read(self.key("router/kpis")).await?;
        let doc: Option<KpiDoc> = kv.as_ref().map(decode).transpose()?;
        Ok(doc.map(KpiDoc::report))
    }

    /// Pages through `customers/` (one small key per customer, in key
    /// order), then reads the page's records in one transaction: two
    /// requests per page, whatever the customers' histories hold.
    async fn scan_records(
        &self,
        after: Option<CustomerId>,
        limit: usize,
    ) -> Result<(Vec<CustomerRecord>, Option<CustomerId>)> {
        let prefix = self.key("customers/");
        let start = match after {
            Some(c) => format!("{prefix}{c}\0"),
            None => prefix.clone(),
        };
        // The end of the prefix's range: its last byte ('/') plus one.
        let end = format!("{}0", &prefix[..prefix.len() - 1]);
        let limit = limit.clamp(1, self.opts.max_txn_ops);
        let mut kv = self.kv.clone();
        let options = GetOptions::new()
            .with_range(end)
            .with_keys_only()
            .with_limit(limit as i64);
        let resp = self
            .call("scanning customers", None, kv.get(start, Some(options)))
            .await?;
        let ids: Vec<CustomerId> = resp
            .kvs()
            .iter()
            .filter_map(|kv| {
                kv.key_str()
                    .ok()?
                    .strip_prefix(prefix.as_str())?
                    .parse()
                    .ok()
            })
            .collect();
        let Some(&last) = ids.last() else {
            return Ok((Vec::new(), None));
        };
        let gets: Vec<TxnOp> = ids
            .iter()
            .map(|id| TxnOp::get(self.record_key(*id), None))
            .collect();
        let resp = self
            .call(
                "reading customer records",
                None,
                kv.txn(Txn::new().and_then(gets)),
            )
            .await?;
        let mut records = Vec::with_capacity(ids.len());
        for r in resp.op_responses() {
            if let TxnOpResponse::Get(g) = r {
                for kv in g.kvs() {
                    records.push(decode::<CustomerRecord>(kv)?);
                }
            }
        }
        Ok((records, Some(last)))
    }

    async fn create_campaign(&self, record: &CampaignRecord) -> Result<bool> {
        let key = self.campaign_key(&record.spec.id);
        let txn = Txn::new()
            .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
            .and_then([TxnOp::put(key.as_str(), encode(record)?, None)]);
        let mut kv = self.kv.clone();
        let resp = self.call("creating a campaign", None, kv.txn(txn)).await?;
        Ok(resp.succeeded())
    }

    async fn save_campaign(&self, record: &CampaignRecord, token: u64) -> Result<()> {
        let owner = ActorKey::Campaign(record.spec.id.clone());
        let key = self.campaign_key(&record.spec.id);
        self.fenced_put("saving a campaign", &owner, token, key, encode(record)?)
            .await
    }

    async fn campaign(&self, id: &CampaignId) -> Result<Option<CampaignRecord>> {
        let mut kv = self.kv.clone();
        let resp = self
            .call(
                "reading a campaign",
                None,
                kv.get(self.campaign_key(id), None),
            )
            .await?;
        resp.kvs().first().map(decode).transpose()
    }

    async fn campaigns(&self) -> Result<Vec<CampaignRecord>> {
        self.list("listing campaigns", "campaigns/").await
    }

    async fn add_campaign_reply(&self, id: &CampaignId, customer: CustomerId) -> Result<()> {
        let key = self.key(format_args!("campaign-replies/{id}/{customer}"));
        let mut kv = self.kv.clone();
        self.call("counting a campaign reply", None, kv.put(key, "", None))
            .await?;
        Ok(())
    }

    async fn campaign_replies(&self, id: &CampaignId) -> Result<u64> {
        let prefix = self.key(format_args!("campaign-replies/{id}/"));
        let mut kv = self.kv.clone();
        let resp = self
            .call(
                "counting campaign replies",
                None,
                kv.get(
                    prefix,
                    Some(GetOptions::new().with_prefix().with_count_only()),
                ),
            )
            .await?;
        Ok(resp.count().max(0) as u64)
    }
}

/// The node id of a key under `members/` (`prefix`).
fn parse_customer(kv: &KeyValue) -> Result<CustomerId> {
    let v = String::from_utf8_lossy(kv.value());
    v.parse().map_err(|e| {
        ClusterError::Unavailable(format!(
            "identity record {:?}: {e}",
            String::from_utf8_lossy(kv.key())
        ))
    })
}

fn member_id(kv: &KeyValue, prefix: &str) -> Option<String> {
    let id = kv.key().strip_prefix(prefix.as_bytes())?;
    Some(String::from_utf8_lossy(id).into_owned())
}

/// The compare that fences a write: the owner key is still at `token`.
fn fence(owner_key: &str, token: u64) -> Compare {
    Compare::mod_revision(owner_key, CompareOp::Equal, token as i64)
}

/// The key-value of the first get in a transaction's responses.
fn first_kv(responses: Vec<TxnOpResponse>) -> Option<KeyValue> {
    responses.into_iter().find_map(|r| match r {
        TxnOpResponse::Get(mut g) => g.take_kvs().into_iter().next(),
        _ => None,
    })
}

fn timed_out(endpoints: &str, what: &str, timeout: Duration) -> ClusterError {
    ClusterError::Unavailable(format!(
        "etcd at {endpoints} did not answer within {timeout:?}: {what}"
    ))
}

/// Largest KPI document saved with the agents' rows (etcd takes at most
/// 1.5 MiB per request): about 12,000 agents.
const MAX_KPI_DOC: usize = 1 << 20;

/// The router's KPIs as stored: each counter set a row of numbers
/// ([`Counters::to_row`]), about 80 bytes an agent instead of 250.
#[derive(Serialize, Deserialize)]
struct KpiDoc {
    total: Vec<u64>,
    channels: Vec<(Channel, Vec<u64>)>,
    queues: Vec<(String, Vec<u64>)>,
    agents: Vec<(String, Vec<u64>)>,
}

impl KpiDoc {
    fn of(k: &KpiReport, with_agents: bool) -> KpiDoc {
        let rows = |v: &[(String, Counters)]| -> Vec<(String, Vec<u64>)> {
            v.iter().map(|(id, c)| (id.clone(), c.to_row())).collect()
        };
        KpiDoc {
            total: k.total.to_row(),
            channels: k.channels.iter().map(|(ch, c)| (*ch, c.to_row())).collect(),
            queues: rows(&k.queues),
            agents: if with_agents {
                rows(&k.agents)
            } else {
                Vec::new()
            },
        }
    }

    fn report(self) -> KpiReport {
        let counters = |v: Vec<(String, Vec<u64>)>| -> Vec<(String, Counters)> {
            v.into_iter()
                .map(|(id, row)| (id, Counters::from_row(&row)))
                .collect()
        };
        KpiReport {
            total: Counters::from_row(&self.total),
            channels: self
                .channels
                .into_iter()
                .map(|(ch, row)| (ch, Counters::from_row(&row)))
                .collect(),
            queues: counters(self.queues),
            agents: counters(self.agents),
        }
    }
}

fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value)
        .map_err(|e| ClusterError::Unavailable(format!("encoding a journal value: {e}")))
}

fn decode<T: for<'de> Deserialize<'de>>(kv: &KeyValue) -> Result<T> {
    serde_json::from_slice(kv.value()).map_err(|e| {
        ClusterError::Unavailable(format!(
            "cannot decode etcd key {}: {e}",
            String::from_utf8_lossy(kv.key())
        ))
    })
}

/// The operations of one transaction and their size.
#[derive(Default)]
struct Ops {
    ops: Vec<TxnOp>,
    bytes: usize,
}

impl Ops {
    /// An operation built elsewhere, of about `bytes`.
    fn push(&mut self, op: TxnOp, bytes: usize) {
        self.bytes += bytes + OP_OVERHEAD_BYTES;
        self.ops.push(op);
    }

    fn put(&mut self, key: String, value: Vec<u8>) {
        self.bytes += key.len() + value.len() + OP_OVERHEAD_BYTES;
        self.ops.push(TxnOp::put(key, value, None));
    }

    fn delete(&mut self, key: String) {
        self.bytes += key.len() + OP_OVERHEAD_BYTES;
        self.ops.push(TxnOp::delete(key, None));
    }

    fn delete_prefix(&mut self, prefix: String) {
        self.bytes += 2 * prefix.len() + OP_OVERHEAD_BYTES;
        self.ops.push(TxnOp::delete(
            prefix,
            Some(DeleteOptions::new().with_prefix()),
        ));
    }
}

/// A point read waiting to go out, and where its answer goes.
type Read = (
    String,
    tokio::sync::oneshot::Sender<Result<Option<KeyValue>>>,
);

/// Most point reads in one request (etcd's `--max-txn-ops`).
const MAX_READS: usize = MAX_TXN_OPS;

/// Point reads together: every read waiting when the previous request
/// returned (and, when busy, arriving within the group window: see
/// [`crate::group`]) goes out in one transaction of gets (one read alone is
/// a plain get), so that under load the reads of many contacts (identities,
/// owners) cost one etcd request.
async fn read_batches(
    mut kv: KvClient,
    timeout: Duration,
    endpoints: String,
    mut pending: mpsc::UnboundedReceiver<Read>,
) {
    let mut gather = crate::group::Gather::new(crate::group::GROUP_WINDOW, MAX_READS);
    while let Some(batch) = gather.next(&mut pending).await {
        let keys: Vec<String> = batch.iter().map(|(k, _)| k.clone()).collect();
        let read = async {
            if let [key] = &keys[..] {
                crate::metrics::etcd_request("point read");
                return kv
                    .get(key.as_str(), None)
                    .await
                    .map(|r| vec![r.kvs().first().cloned()]);
            }
            crate::metrics::etcd_request("point reads (batched)");
            let gets = keys.iter().map(|k| TxnOp::get(k.as_str(), None));
            kv.txn(Txn::new().and_then(gets.collect::<Vec<_>>()))
                .await
                .map(|r| {
                    r.op_responses()
                        .into_iter()
                        .map(|op| match op {
                            TxnOpResponse::Get(g) => g.kvs().first().cloned(),
                            _ => None,
                        })
                        .collect()
                })
        };
        let results: Result<Vec<Option<KeyValue>>> = match tokio::time::timeout(timeout, read).await
        {
            Ok(Ok(values)) if values.len() == keys.len() => Ok(values),
            Ok(Ok(values)) => Err(ClusterError::Unavailable(format!(
                "etcd at {endpoints}: {} reads answered with {} values",
                keys.len(),
                values.len()
            ))),
            Ok(Err(e)) => Err(ClusterError::Unavailable(format!(
                "etcd at {endpoints}: reading: {e}"
            ))),
            Err(_) => Err(timed_out(&endpoints, "reading", timeout)),
        };
        match results {
            Ok(values) => {
                for ((_, reply), value) in batch.into_iter().zip(values) {
                    let _ = reply.send(Ok(value));
                }
            }
            Err(e) => {
                for (_, reply) in batch {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }
}

/// The task behind [`Coordination::watch_members`].
struct MemberWatch {
    etcd: EtcdCoordination,
    /// The members as of revision `next - 1`.
    known: Members,
    /// The first revision not yet seen.
    next: i64,
    /// `next` is compacted away: list the members again before watching.
    relist: bool,
    /// The wait before the next attempt after a failure; back to the
    /// minimum once etcd answers.
    backoff: Duration,
    tx: mpsc::Sender<MemberEvent>,
}

/// Why following the watch stopped.
enum Stopped {
    /// The receiver is gone.
    Receiver,
    /// Revision `next` is compacted away (etcd's compaction revision).
    Compacted(i64),
    /// The stream failed or ended, or etcd did not answer.
    Broken(String),
}

impl MemberWatch {
    async fn run(mut self) {
        loop {
            let tx = self.tx.clone();
            let stopped = tokio::select! {
                _ = tx.closed() => return,
                s = self.step() => s,
            };
            match stopped {
                Stopped::Receiver => return,
                Stopped::Compacted(compacted) => {
                    tracing::info!(
                        next = self.next,
                        compacted,
                        "member watch fell behind a compaction; listing members again"
                    );
                    self.relist = true;
                }
                Stopped::Broken(error) => {
                    tracing::warn!(next = self.next, relist = self.relist, %error, retry_in = ?self.backoff, "member watch interrupted");
                    tokio::select! {
                        _ = tx.closed() => return,
                        _ = tokio::time::sleep(self.backoff) => {}
                    }
                    self.backoff = (self.backoff * 2).min(WATCH_RETRY_MAX);
                }
            }
        }
    }

    /// Lists the members again if needed, then follows the watch from
    /// `next` until it stops.
    async fn step(&mut self) -> Stopped {
        if self.relist {
            let (members, revision) = match self.etcd.list_members().await {
                Ok(listed) => listed,
                Err(e) => return Stopped::Broken(e.to_string()),
            };
            let changes = diff(&self.known, &members);
            self.known = members;
            self.next = revision + 1;
            self.relist = false;
            for change in changes {
                if self.tx.send(change).await.is_err() {
                    return Stopped::Receiver;
                }
            }
        }
        self.follow().await
    }

    async fn follow(&mut self) -> Stopped {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.next)
            .with_progress_notify();
        let prefix = self.etcd.key("members/");
        let mut watches = self.etcd.client.watch_client();
        let mut stream = match self
            .etcd
            .call(
                "watching members",
                None,
                watches.watch(prefix.as_str(), Some(options)),
            )
            .await
        {
            Ok(s) => s,
            Err(e) => return Stopped::Broken(e.to_string()),
        };
        loop {
            let resp = match stream.message().await {
                Ok(Some(r)) => {
                    self.backoff = WATCH_RETRY_MIN;
                    r
                }
                Ok(None) => return Stopped::Broken("the watch stream ended".into()),
                Err(e) => return Stopped::Broken(e.to_string()),
            };
            if resp.compact_revision() > 0 {
                return Stopped::Compacted(resp.compact_revision());
            }
            if resp.canceled() {
                return Stopped::Broken(format!(
                    "the watch was canceled: {}",
                    resp.cancel_reason()
                ));
            }
            if resp.events().is_empty() {
                if !resp.created() {
                    // A progress notification: every change up to its
                    // revision has been delivered.
                    if let Some(h) = resp.header() {
                        self.next = self.next.max(h.revision() + 1);
                    }
                }
                continue;
            }
            for event in resp.events() {
                let Some(kv) = event.kv() else { continue };
                self.next = self.next.max(kv.mod_revision() + 1);
                let Some(change) = self.apply(event.event_type(), kv, &prefix) else {
                    continue;
                };
                if self.tx.send(change).await.is_err() {
                    return Stopped::Receiver;
                }
            }
        }
    }

    /// Applies one watched change to `known`; the event to report, if any.
    fn apply(&mut self, kind: EventType, kv: &KeyValue, prefix: &str) -> Option<MemberEvent> {
        let id = member_id(kv, prefix)?;
        match kind {
            EventType::Put => match decode::<Member>(kv) {
                Ok(m) => {
                    let info = NodeInfo::from(m);
                    self.known.insert(
                        id,
                        Listed {
                            info: info.clone(),
                            created: kv.create_revision(),
                        },
                    );
                    Some(MemberEvent::Joined(info))
                }
                Err(e) => {
                    tracing::warn!(error = %e, "skipping a member key");
                    None
                }
            },
            EventType::Delete => self.known.remove(&id).map(|_| MemberEvent::Left(id)),
        }
    }
}

/// What changed from `old` to `new`: first the nodes that left, then those
/// that joined, each in id order. A node id whose key was created again is
/// a new incarnation: it left and joined.
fn diff(old: &Members, new: &Members) -> Vec<MemberEvent> {
    let mut events = Vec::new();
    for (id, was) in old {
        match new.get(id) {
            Some(now) if now.created == was.created => {}
            _ => events.push(MemberEvent::Left(id.clone())),
        }
    }
    for (id, now) in new {
        match old.get(id) {
            Some(was) if was == now => {}
            _ => events.push(MemberEvent::Joined(now.info.clone())),
        }
    }
    events
}

#[cfg(test)]
mod tests {
    use super::*;

    fn listed(id: &str, advertise: &str, created: i64) -> (String, Listed) {
        (
            id.to_owned(),
            Listed {
                info: NodeInfo {
                    id: id.into(),
                    advertise: advertise.into(),
                },
                created,
            },
        )
    }

    #[test]
    fn diff_reports_leaves_then_joins_and_new_incarnations() {
        let old: Members = [
            listed("a", "x:1", 5),
            listed("b", "x:2", 6),
            listed("c", "x:3", 7),
        ]
        .into();
        let new: Members = [
            listed("b", "x:2", 6),
            listed("c", "x:9", 12),
            listed("d", "x:4", 13),
        ]
        .into();
        assert_eq!(
            diff(&old, &new),
            vec![
                MemberEvent::Left("a".into()),
                MemberEvent::Left("c".into()),
                MemberEvent::Joined(NodeInfo {
                    id: "c".into(),
                    advertise: "x:9".into()
                }),
                MemberEvent::Joined(NodeInfo {
                    id: "d".into(),
                    advertise: "x:4".into()
                }),
            ]
        );
        assert!(diff(&new, &new).is_empty(), "no change, no event");
    }
}
