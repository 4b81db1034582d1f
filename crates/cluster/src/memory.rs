//! In-memory coordination: one process, no network, same contract.
//!
//! Used by `centralino dev`, by standalone nodes (`centralino node` without
//! `--etcd`) and by unit tests. Revisions, leases, ownership records and
//! fencing behave as they do in etcd, so the [`contract`](crate::contract)
//! suite runs against both: a token is the revision its claim was made at,
//! and an append is accepted only with the owner's token, or with token 0
//! when nobody owns the customer (a missing etcd key compares as revision
//! 0). Leases never expire on their own here: there is only one process to
//! hold them. The journal keeps what etcd keeps: per customer the record,
//! the open conversation's latest snapshot and the events after it; a
//! closed conversation leaves it (its history is in the archive by then).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::Duration;

use centralino_actors::campaign::CampaignRecord;
use centralino_actors::journal::{Creation, CustomerRecord, JournalBatch, Recovered};
use centralino_core::customer::Conversation;
use centralino_core::history::HistoryEvent;
use centralino_core::kpi::KpiReport;
use centralino_core::queue::QueueConfig;
use centralino_core::rules::RoutingRule;
use centralino_core::{CampaignId, Channel, ConversationId, CustomerId, Identity, QueueId};
use tokio::sync::mpsc;

use crate::coordination::{ActorKey, Coordination, MemberEvent, NodeInfo};
use crate::error::{ClusterError, Result};
use crate::topology::ROUTER;

#[derive(Default)]
pub struct MemoryCoordination {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    revision: u64,
    next_lease: i64,
    leases: BTreeMap<i64, NodeInfo>,
    owners: BTreeMap<ActorKey, Owner>,
    /// Customer → the node that last claimed it (outlives leases).
    placed: BTreeMap<CustomerId, String>,
    journals: BTreeMap<CustomerId, Stored>,
    watchers: Vec<mpsc::Sender<MemberEvent>>,
    identities: BTreeMap<Identity, CustomerId>,
    customers: BTreeSet<CustomerId>,
    /// Gateway streams per node, with the node's lease.
    gateways: BTreeMap<String, (i64, Vec<Vec<Channel>>)>,
    queues: BTreeMap<QueueId, QueueConfig>,
    rules: Option<Vec<RoutingRule>>,
    kpis: Option<KpiReport>,
    campaigns: BTreeMap<CampaignId, CampaignRecord>,
    campaign_replies: BTreeSet<(CampaignId, CustomerId)>,
}

struct Owner {
    node: String,
    token: u64,
    lease: i64,
}

struct Stored {
    record: CustomerRecord,
    conversation: Option<ConversationId>,
    /// The conversation's latest snapshot.
    snapshot: Option<Box<Conversation>>,
    /// The conversation's events after the snapshot.
    events: Vec<HistoryEvent>,
}

impl Inner {
    /// A creating batch's fence and claim (as etcd's transaction does it):
    /// nobody owns the customer and none of the identities is linked; then
    /// the customer is owned and the identities are its. Returns the token.
    fn create(&mut self, key: &ActorKey, customer: CustomerId, create: &Creation) -> Result<u64> {
        let Some((node, lease)) = &create.owner else {
            return Err(ClusterError::Unavailable(format!(
                "creating {customer}: the batch names no owner"
            )));
        };
        if !self.leases.contains_key(lease) {
            return Err(ClusterError::LeaseExpired(*lease));
        }
        if let Some(o) = self.owners.get(key) {
            return Err(ClusterError::OwnedElsewhere {
                key: key.to_string(),
                owner: o.node.clone(),
            });
        }
        if let Some((identity, &other)) = create
            .identities
            .iter()
            .find_map(|i| self.identities.get(i).map(|c| (i, c)))
        {
            return Err(ClusterError::IdentityTaken {
                identity: identity.clone(),
                customer: other,
            });
        }
        for i in &create.identities {
            self.identities.insert(i.clone(), customer);
        }
        self.customers.insert(customer);
        Ok(self.own(key, node, *lease))
    }
}

impl MemoryCoordination {
    pub fn new() -> Self {
        Self::default()
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Inner {
    fn bump(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    /// Makes `node` the owner of `key` (and, for a customer, places it
    /// there); returns the new token.
    fn own(&mut self, key: &ActorKey, node: &str, lease: i64) -> u64 {
        let token = self.bump();
        self.owners.insert(
            key.clone(),
            Owner {
                node: node.to_owned(),
                token,
                lease,
            },
        );
        if let ActorKey::Customer(c) = key {
            self.placed.insert(*c, node.to_owned());
        }
        token
    }

    fn notify(&mut self, e: MemberEvent) {
        self.watchers
            .retain(|w| w.try_send(e.clone()).is_ok() || !w.is_closed());
    }
}

#[async_trait::async_trait]
impl Coordination for MemoryCoordination {
    async fn join(&self, node: &NodeInfo, _ttl: Duration) -> Result<i64> {
        let mut g = self.inner();
        g.next_lease += 1;
        let lease = g.next_lease;
        g.leases.insert(lease, node.clone());
        g.bump();
        g.notify(MemberEvent::Joined(node.clone()));
        Ok(lease)
    }

    async fn keep_alive(&self, lease: i64) -> Result<()> {
        if self.inner().leases.contains_key(&lease) {
            Ok(())
        } else {
            Err(ClusterError::LeaseExpired(lease))
        }
    }

    async fn leave(&self, lease: i64) -> Result<()> {
        let mut g = self.inner();
        let node = g
            .leases
            .remove(&lease)
            .ok_or(ClusterError::LeaseExpired(lease))?;
        g.owners.retain(|_, o| o.lease != lease);
        g.gateways.retain(|_, (l, _)| *l != lease);
        g.bump();
        g.notify(MemberEvent::Left(node.id));
        Ok(())
    }

    async fn members(&self) -> Result<Vec<NodeInfo>> {
        let mut m: Vec<_> = self.inner().leases.values().cloned().collect();
        m.sort();
        m.dedup();
        Ok(m)
    }

    async fn watch_members(&self) -> Result<mpsc::Receiver<MemberEvent>> {
        let (tx, rx) = mpsc::channel(1024);
        self.inner().watchers.push(tx);
        Ok(rx)
    }

    async fn claim(&self, key: &ActorKey, node: &str, lease: i64) -> Result<u64> {
        let mut g = self.inner();
        if !g.leases.contains_key(&lease) {
            return Err(ClusterError::LeaseExpired(lease));
        }
        if let Some(o) = g.owners.get(key) {
            if o.node != node {
                return Err(ClusterError::OwnedElsewhere {
                    key: key.to_string(),
                    owner: o.node.clone(),
                });
            }
            return Ok(o.token);
        }
        Ok(g.own(key, node, lease))
    }

    async fn transfer(&self, key: &ActorKey, from: u64, node: &str, lease: i64) -> Result<u64> {
        let mut g = self.inner();
        if !g.leases.contains_key(&lease) {
            return Err(ClusterError::LeaseExpired(lease));
        }
        if g.owners.get(key).map(|o| o.token) != Some(from) {
            return Err(ClusterError::Fenced {
                key: key.to_string(),
                token: from,
            });
        }
        Ok(g.own(key, node, lease))
    }

    async fn orphans(&self, live: &[String]) -> Result<Vec<(String, CustomerId)>> {
        Ok(self
            .inner()
            .placed
            .iter()
            .filter(|(_, n)| !live.contains(n))
            .map(|(c, n)| (n.clone(), *c))
            .collect())
    }

    async fn release(&self, key: &ActorKey, token: u64) -> Result<()> {
        let mut g = self.inner();
        match g.owners.get(key) {
            Some(o) if o.token == token => {
                g.owners.remove(key);
                if let ActorKey::Customer(c) = key {
                    g.placed.remove(c);
                }
                g.bump();
                Ok(())
            }
            Some(_) => Err(ClusterError::Fenced {
                key: key.to_string(),
                token,
            }),
            None => Ok(()),
        }
    }

    async fn owner(&self, key: &ActorKey) -> Result<Option<(String, u64)>> {
        Ok(self
            .inner()
            .owners
            .get(key)
            .map(|o| (o.node.clone(), o.token)))
    }

    async fn append(&self, batch: JournalBatch) -> Result<u64> {
        let mut g = self.inner();
        let key = ActorKey::Customer(batch.record.id);
        let token = match &batch.create {
            Some(create) => g.create(&key, batch.record.id, create)?,
            None => {
                // As in etcd, where a missing owner key compares as revision
                // 0: without an owner only token 0 writes, with one only its
                // token.
                let owner_token = g.owners.get(&key).map_or(0, |o| o.token);
                if owner_token != batch.token {
                    return Err(ClusterError::Fenced {
                        key: key.to_string(),
                        token: batch.token,
                    });
                }
                batch.token
            }
        };
        g.bump();
        let customer = batch.record.id;
        let stored = g.journals.entry(customer).or_insert_with(|| Stored {
            record: batch.record.clone(),
            conversation: None,
            snapshot: None,
            events: Vec::new(),
        });
        stored.record = batch.record;
        if stored.conversation != batch.conversation || batch.closed {
            stored.conversation = batch.conversation;
            stored.snapshot = None;
            stored.events.clear();
        }
        if batch.closed {
            // The history is in the archive: the journal lets go of it.
            stored.conversation = None;
            return Ok(token);
        }
        if let Some(snapshot) = batch.snapshot {
            // It covers every event so far, the batch's included.
            stored.snapshot = Some(snapshot);
            stored.events.clear();
            return Ok(token);
        }
        let last = stored.events.last().map_or_else(
            || stored.snapshot.as_ref().map_or(0, |s| s.history.last_seq()),
            |e| e.seq,
        );
        if let Some(first) = batch.events.first() {
            debug_assert_eq!(
                first.seq,
                last + 1,
                "journal batch for {customer} is not contiguous"
            );
        }
        stored.events.extend(batch.events);
        Ok(token)
    }

    async fn load(&self, customer: CustomerId) -> Result<Option<Recovered>> {
        let g = self.inner();
        Ok(g.journals.get(&customer).map(|s| Recovered {
            record: s.record.clone(),
            snapshot: s.snapshot.clone(),
            events: s.events.clone(),
        }))
    }

    async fn link_identity(
        &self,
        identity: &Identity,
        customer: CustomerId,
    ) -> Result<(CustomerId, bool)> {
        let mut g = self.inner();
        if let Some(&owner) = g.identities.get(identity) {
            return Ok((owner, false));
        }
        g.identities.insert(identity.clone(), customer);
        g.customers.insert(customer);
        g.bump();
        Ok((customer, true))
    }

    async fn lookup_identity(&self, identity: &Identity) -> Result<Option<CustomerId>> {
        Ok(self.inner().identities.get(identity).copied())
    }

    async fn customer_known(&self, customer: CustomerId) -> Result<bool> {
        Ok(self.inner().customers.contains(&customer))
    }

    async fn set_gateways(&self, node: &str, lease: i64, streams: &[Vec<Channel>]) -> Result<()> {
        let mut g = self.inner();
        if !g.leases.contains_key(&lease) {
            return Err(ClusterError::LeaseExpired(lease));
        }
        g.gateways
            .insert(node.to_owned(), (lease, streams.to_vec()));
        g.bump();
        Ok(())
    }

    async fn gateways(&self) -> Result<Vec<(String, Vec<Vec<Channel>>)>> {
        Ok(self
            .inner()
            .gateways
            .iter()
            .map(|(n, (_, s))| (n.clone(), s.clone()))
            .collect())
    }

    async fn save_queue(&self, queue: &QueueConfig) -> Result<()> {
        let mut g = self.inner();
        g.queues.insert(queue.id.clone(), queue.clone());
        g.bump();
        Ok(())
    }

    async fn queues(&self) -> Result<Vec<QueueConfig>> {
        Ok(self.inner().queues.values().cloned().collect())
    }

    async fn save_rules(&self, rules: &[RoutingRule]) -> Result<()> {
        let mut g = self.inner();
        g.rules = Some(rules.to_vec());
        g.bump();
        Ok(())
    }

    async fn rules(&self) -> Result<Option<Vec<RoutingRule>>> {
        Ok(self.inner().rules.clone())
    }

    async fn save_kpis(&self, kpis: &KpiReport, token: u64) -> Result<()> {
        let mut g = self.inner();
        let key = ActorKey::Router(ROUTER.into());
        if g.owners.get(&key).map(|o| o.token) != Some(token) {
            return Err(ClusterError::Fenced {
                key: key.to_string(),
                token,
            });
        }
        g.kpis = Some(kpis.clone());
        g.bump();
        Ok(())
    }

    async fn kpis(&self) -> Result<Option<KpiReport>> {
        Ok(self.inner().kpis.clone())
    }

    async fn scan_records(
        &self,
        after: Option<CustomerId>,
        limit: usize,
    ) -> Result<(Vec<CustomerRecord>, Option<CustomerId>)> {
        use std::ops::Bound::{Excluded, Unbounded};
        let g = self.inner();
        let from = after.map_or(Unbounded, Excluded);
        let page: Vec<CustomerRecord> = g
            .journals
            .range((from, Unbounded))
            .take(limit.max(1))
            .map(|(_, s)| s.record.clone())
            .collect();
        let next = page.last().map(|r| r.id);
        Ok((page, next))
    }

    async fn create_campaign(&self, record: &CampaignRecord) -> Result<bool> {
        let mut g = self.inner();
        if g.campaigns.contains_key(&record.spec.id) {
            return Ok(false);
        }
        g.campaigns.insert(record.spec.id.clone(), record.clone());
        g.bump();
        Ok(true)
    }

    async fn save_campaign(&self, record: &CampaignRecord, token: u64) -> Result<()> {
        let mut g = self.inner();
        let key = ActorKey::Campaign(record.spec.id.clone());
        if g.owners.get(&key).map(|o| o.token) != Some(token) {
            return Err(ClusterError::Fenced {
                key: key.to_string(),
                token,
            });
        }
        g.campaigns.insert(record.spec.id.clone(), record.clone());
        g.bump();
        Ok(())
    }

    async fn campaign(&self, id: &CampaignId) -> Result<Option<CampaignRecord>> {
        Ok(self.inner().campaigns.get(id).cloned())
    }

    async fn campaigns(&self) -> Result<Vec<CampaignRecord>> {
        Ok(self.inner().campaigns.values().cloned().collect())
    }

    async fn add_campaign_reply(&self, id: &CampaignId, customer: CustomerId) -> Result<()> {
        let mut g = self.inner();
        if g.campaign_replies.insert((id.clone(), customer)) {
            g.bump();
        }
        Ok(())
    }

    async fn campaign_replies(&self, id: &CampaignId) -> Result<u64> {
        Ok(self
            .inner()
            .campaign_replies
            .iter()
            .filter(|(c, _)| c == id)
            .count() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_coordination_passes_the_contract() {
        crate::contract::run_all(&MemoryCoordination::new()).await;
    }
}
