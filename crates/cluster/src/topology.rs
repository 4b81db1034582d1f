//! The cluster as the actors see it: the [`Cluster`] port implemented over
//! a [`Coordination`] backend and the internal gRPC service.
//!
//! - **Placement.** A customer lives where its ownership record says; a
//!   customer nobody owns goes to the live member that rendezvous hashing
//!   picks for its id. A node that joins takes its share of new customers
//!   at once, and the others move it its share of theirs (the customers
//!   rendezvous hashing now gives to it, and no others: see
//!   `Hub::rebalance_to`).
//! - **Ownership.** The node that starts a customer's actor claims it
//!   first; the claim's revision is the fencing token its journal writes
//!   carry. A lost race answers with the owner, and the request goes there.
//! - **The router** is owned like any actor (`owners/router/main`): the
//!   first node to claim it hosts it, and every pairing decision of the
//!   cluster is made there, in one deterministic order. The claim's token
//!   is the router's *epoch*. When its node dies (its lease takes the key)
//!   or gives it up (a drain), the survivors claim it again; the winner
//!   announces the new epoch to every node, which reports what it holds
//!   (see `centralino_actors::router`, "Taking over").
//! - **Agents and gateways** are where their streams are connected; agent
//!   sessions are ownership records, gateway streams a per-node list.
//! - **Messaging.** An envelope for another node goes over that node's
//!   `Node.Exchange` stream, JSON-encoded, through its [`Pipe`], which
//!   carries what queues up under load several envelopes per frame.
//!
//! Lookups are cached: owners of remote customers until their node leaves
//! or a send to it fails, agent homes and gateway lists for a second.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use centralino_actors::cluster::{Claim, Cluster, Home};
use centralino_actors::error::{ActorError, Result};
use centralino_actors::sync::lock;
use centralino_actors::wire::{Envelope, EnvelopeReply};
use centralino_core::directory::Resolution;
use centralino_core::kpi::KpiReport;
use centralino_core::queue::QueueConfig;
use centralino_core::rules::RoutingRule;
use centralino_core::{AgentId, Channel, CustomerId, Identity};
use centralino_proto::internal::node_client::NodeClient;
use tonic::transport::Endpoint;

use crate::coordination::{ActorKey, Coordination, MemberEvent, NodeInfo};
use crate::error::ClusterError;
use crate::peer::Pipe;

/// The router's ownership key.
pub const ROUTER: &str = "main";
/// Largest frame between nodes (envelopes carry whole histories).
pub const MAX_FRAME: usize = 16 * 1024 * 1024;
/// How long gateway lists are trusted.
const CACHE_FOR: Duration = Duration::from_secs(1);
/// How long an agent's home is trusted (a desktop that reconnects to
/// another node moves it; a failed send forgets it at once).
const AGENT_CACHE_FOR: Duration = Duration::from_secs(10);

/// Every node's gateway streams, each a list of channels (empty: all).
type GatewayList = Vec<(String, Vec<Vec<Channel>>)>;

pub struct Topology {
    me: NodeInfo,
    lease: i64,
    coord: Arc<dyn Coordination>,
    members: Mutex<BTreeMap<String, NodeInfo>>,
    /// Customers this node owns, with their tokens.
    mine: Mutex<HashMap<CustomerId, u64>>,
    /// Owners of customers elsewhere.
    owners: Mutex<HashMap<CustomerId, String>>,
    /// Where agents' desktops are connected, and since when it is known.
    agents: Mutex<HashMap<AgentId, (String, Instant)>>,
    agent_tokens: Mutex<HashMap<AgentId, u64>>,
    gateways_here: Mutex<Vec<Vec<Channel>>>,
    gateways: Mutex<Option<(GatewayList, Instant)>>,
    /// Identities this node has resolved, and whose they are.
    identities: IdentityCache,
    /// Where the router is, and its epoch (0 while unknown).
    router: Mutex<Option<(String, u64)>>,
    /// The newest router epoch this node has reported to.
    reported: Mutex<u64>,
    peers: Mutex<HashMap<String, Pipe>>,
    /// Ids of members that left (died or drained), for failover.
    left: tokio::sync::broadcast::Sender<String>,
    /// Ids of members that joined, for rebalancing.
    joined: tokio::sync::broadcast::Sender<String>,
    /// The router may have no node: its node gave it up.
    router_vacant: tokio::sync::Notify,
}

impl Topology {
    /// Resolves a contact with one identity in one read at most: a known
    /// identity (cached here) is its customer's; an unknown one is looked
    /// up, and if nobody has it, it makes a new customer, which the
    /// customer's first journal write creates, linking the identity (see
    /// `centralino_actors::journal`, "Creating a customer"): a new customer
    /// costs no write of its own.
    async fn resolve_one(&self, identity: &Identity) -> Result<Resolution> {
        let mut res = Resolution {
            customer: CustomerId(0),
            created: false,
            linked: Vec::new(),
            conflicts: Vec::new(),
            pending: Vec::new(),
        };
        match self.lookup(identity).await? {
            Some(c) => res.customer = c,
            None => {
                res.customer = fresh_customer();
                res.created = true;
                res.pending.push(identity.clone());
            }
        }
        Ok(res)
    }

    /// Starts following membership for the node that joined under `lease`.
    pub async fn start(
        coord: Arc<dyn Coordination>,
        me: NodeInfo,
        lease: i64,
    ) -> crate::Result<Arc<Topology>> {
        let mut events = coord.watch_members().await?;
        let members = coord.members().await?;
        let t = Arc::new(Topology {
            me,
            lease,
            coord,
            members: Mutex::new(members.into_iter().map(|m| (m.id.clone(), m)).collect()),
            mine: Default::default(),
            owners: Default::default(),
            agents: Default::default(),
            agent_tokens: Default::default(),
            gateways_here: Default::default(),
            gateways: Default::default(),
            router: Default::default(),
            reported: Default::default(),
            identities: IdentityCache::new(IDENTITY_CACHE),
            peers: Default::default(),
            left: tokio::sync::broadcast::channel(64).0,
            joined: tokio::sync::broadcast::channel(64).0,
            router_vacant: tokio::sync::Notify::new(),
        });
        let weak = Arc::downgrade(&t);
        tokio::spawn(async move {
            while let Some(e) = events.recv().await {
                let Some(t) = weak.upgrade() else { return };
                t.member_event(e);
            }
        });
        Ok(t)
    }

    pub fn node(&self) -> &NodeInfo {
        &self.me
    }

    pub fn members(&self) -> Vec<NodeInfo> {
        lock(&self.members).values().cloned().collect()
    }

    fn member_event(&self, e: MemberEvent) {
        match e {
            MemberEvent::Joined(n) => {
                tracing::info!(node = %n.id, advertise = %n.advertise, "member joined");
                let id = n.id.clone();
                lock(&self.members).insert(n.id.clone(), n);
                let _ = self.joined.send(id);
            }
            MemberEvent::Left(id) => {
                tracing::info!(node = %id, "member left");
                lock(&self.members).remove(&id);
                self.forget_node(&id);
                let _ = self.left.send(id);
            }
        }
    }

    /// Ids of members as they leave: the node recovers the dead ones'
    /// customers that placement now gives it.
    pub fn members_left(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.left.subscribe()
    }

    /// Ids of members as they join: the node moves them their share of
    /// its customers.
    pub fn members_joined(&self) -> tokio::sync::broadcast::Receiver<String> {
        self.joined.subscribe()
    }

    /// Drops every cached fact that points at `node`.
    fn forget_node(&self, node: &str) {
        lock(&self.owners).retain(|_, n| n != node);
        lock(&self.agents).retain(|_, (n, _)| n != node);
        lock(&self.peers).remove(node);
        *lock(&self.gateways) = None;
        self.forget_router_at(node);
    }

    /// Claims the router for this node if no node holds it: its epoch (the
    /// claim's token) if this node holds it now, `None` if another does.
    pub async fn claim_router(&self) -> crate::Result<Option<u64>> {
        match self
            .coord
            .claim(&ActorKey::Router(ROUTER.into()), &self.me.id, self.lease)
            .await
        {
            Ok(epoch) => {
                *lock(&self.router) = Some((self.me.id.clone(), epoch));
                Ok(Some(epoch))
            }
            Err(ClusterError::OwnedElsewhere { owner, .. }) => {
                let mut router = lock(&self.router);
                if router.as_ref().is_none_or(|(n, _)| *n != owner) {
                    *router = Some((owner, 0));
                }
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Gives the router up (this node drains): after this, another node
    /// may claim it.
    pub async fn release_router(&self, epoch: u64) -> crate::Result<()> {
        *lock(&self.router) = None;
        self.coord
            .release(&ActorKey::Router(ROUTER.into()), epoch)
            .await
    }

    /// Resolves when the router may have lost its node (it was given up).
    pub async fn router_vacancy(&self) {
        self.router_vacant.notified().await
    }

    /// The live member rendezvous hashing picks for `key`.
    fn rendezvous(&self, key: u64) -> Option<String> {
        self.rendezvous_except(key, None)
    }

    /// The live member rendezvous hashing picks for `key`, leaving out
    /// `except`.
    fn rendezvous_except(&self, key: u64, except: Option<&str>) -> Option<String> {
        let members = lock(&self.members);
        let nodes = members.keys().filter(|node| Some(node.as_str()) != except);
        pick(nodes, key).map(str::to_owned)
    }

    fn forget_router_at(&self, node: &str) {
        let mut router = lock(&self.router);
        if router.as_ref().is_some_and(|(n, _)| n == node) {
            *router = None;
        }
    }

    fn home(&self, node: String) -> Home {
        if node == self.me.id {
            Home::Here
        } else {
            Home::There(node)
        }
    }

    fn peer(&self, node: &str) -> Result<Pipe> {
        if let Some(c) = lock(&self.peers).get(node) {
            return Ok(c.clone());
        }
        let advertise = lock(&self.members).get(node).map(|m| m.advertise.clone());
        let advertise = advertise
            .ok_or_else(|| ActorError::unavailable(format!("node {node} (not a live member)")))?;
        let endpoint = Endpoint::from_shared(format!("http://{advertise}"))
            .map_err(|e| ActorError::unavailable(format!("node {node} at {advertise:?} ({e})")))?
            .connect_timeout(Duration::from_secs(3))
            // The pipe's stream lives as long as the peer: pings find a
            // peer gone silent (a SIGKILL closes its sockets at once; a
            // lost machine does not).
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(3))
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        let client = NodeClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(MAX_FRAME)
            .max_encoding_message_size(MAX_FRAME);
        let pipe = Pipe::new(node.to_owned(), client);
        lock(&self.peers).insert(node.to_owned(), pipe.clone());
        Ok(pipe)
    }
}

fn unavailable(e: ClusterError) -> ActorError {
    ActorError::unavailable(e.to_string())
}

#[async_trait::async_trait]
impl Cluster for Topology {
    fn node_id(&self) -> &str {
        &self.me.id
    }

    async fn resolve(&self, identity: &Identity, also: &[Identity]) -> Result<Resolution> {
        if also.is_empty() {
            return self.resolve_one(identity).await;
        }
        let mut known = None;
        for i in std::iter::once(identity).chain(also) {
            if let Some(c) = self.lookup(i).await? {
                known = Some(c);
                break;
            }
        }
        let mut customer = known.unwrap_or_else(fresh_customer);
        let mut res = Resolution {
            customer,
            created: false,
            linked: Vec::new(),
            conflicts: Vec::new(),
            pending: Vec::new(),
        };
        for (n, i) in std::iter::once(identity).chain(also).enumerate() {
            let (owner, linked_now) = self
                .coord
                .link_identity(i, customer)
                .await
                .map_err(unavailable)?;
            self.identities.put(i.clone(), owner);
            if n == 0 && owner != customer {
                // Another contact linked this identity first: it is theirs.
                customer = owner;
                res.customer = owner;
            } else if owner != customer {
                res.conflicts.push((i.clone(), owner));
            } else if linked_now && n == 0 && known.is_none() {
                res.created = true;
            } else if linked_now {
                res.linked.push(i.clone());
            }
        }
        Ok(res)
    }

    async fn lookup(&self, identity: &Identity) -> Result<Option<CustomerId>> {
        if let Some(c) = self.identities.get(identity) {
            return Ok(Some(c));
        }
        let found = self
            .coord
            .lookup_identity(identity)
            .await
            .map_err(unavailable)?;
        if let Some(c) = found {
            self.identities.put(identity.clone(), c);
        }
        Ok(found)
    }

    async fn customer_exists(&self, id: CustomerId) -> Result<bool> {
        if lock(&self.mine).contains_key(&id) || lock(&self.owners).contains_key(&id) {
            return Ok(true);
        }
        self.coord.customer_known(id).await.map_err(unavailable)
    }

    async fn customer_home(&self, id: CustomerId) -> Result<Home> {
        if lock(&self.mine).contains_key(&id) {
            return Ok(Home::Here);
        }
        if let Some(node) = lock(&self.owners).get(&id).cloned() {
            return Ok(self.home(node));
        }
        if let Some((node, _)) = self
            .coord
            .owner(&ActorKey::Customer(id))
            .await
            .map_err(unavailable)?
        {
            if node != self.me.id {
                lock(&self.owners).insert(id, node.clone());
            }
            return Ok(self.home(node));
        }
        let node = self
            .rendezvous(id.0)
            .ok_or_else(|| ActorError::unavailable("cluster membership (no live member)"))?;
        Ok(self.home(node))
    }

    async fn claim_customer(&self, id: CustomerId) -> Result<Claim> {
        match self
            .coord
            .claim(&ActorKey::Customer(id), &self.me.id, self.lease)
            .await
        {
            Ok(token) => {
                lock(&self.mine).insert(id, token);
                lock(&self.owners).remove(&id);
                Ok(Claim::Owned { token })
            }
            Err(ClusterError::OwnedElsewhere { owner, .. }) => {
                lock(&self.owners).insert(id, owner.clone());
                Ok(Claim::Elsewhere(owner))
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn release_customer(&self, id: CustomerId, token: u64) {
        lock(&self.mine).remove(&id);
        if let Err(e) = self.coord.release(&ActorKey::Customer(id), token).await {
            tracing::debug!(customer = %id, error = %e, "releasing ownership");
        }
    }

    async fn adopt_customer(&self, id: CustomerId, from: u64) -> Result<u64> {
        let token = self
            .coord
            .transfer(&ActorKey::Customer(id), from, &self.me.id, self.lease)
            .await
            .map_err(unavailable)?;
        lock(&self.mine).insert(id, token);
        lock(&self.owners).remove(&id);
        Ok(token)
    }

    fn customer_moved(&self, id: CustomerId, node: &str) {
        lock(&self.mine).remove(&id);
        lock(&self.owners).insert(id, node.to_owned());
    }

    fn claimed(&self, id: CustomerId, token: u64) {
        lock(&self.mine).insert(id, token);
        lock(&self.owners).remove(&id);
    }

    fn identity_of(&self, identity: &Identity, customer: CustomerId) {
        self.identities.put(identity.clone(), customer);
    }

    fn customer_at(&self, id: CustomerId, node: &str) {
        if node != self.me.id && !lock(&self.mine).contains_key(&id) {
            lock(&self.owners).insert(id, node.to_owned());
        }
    }

    fn drain_target(&self, id: CustomerId) -> Option<String> {
        self.rendezvous_except(id.0, Some(&self.me.id))
    }

    fn placement(&self, id: CustomerId) -> Option<String> {
        self.rendezvous(id.0)
    }

    fn member_ids(&self) -> Vec<String> {
        lock(&self.members).keys().cloned().collect()
    }

    async fn orphans_here(&self, live: Option<&[String]>) -> Result<Vec<CustomerId>> {
        let live = live.map_or_else(|| self.member_ids(), <[String]>::to_vec);
        let orphans = self.coord.orphans(&live).await.map_err(unavailable)?;
        Ok(orphans
            .into_iter()
            .filter(|(_, id)| pick(&live, id.0) == Some(self.me.id.as_str()))
            .map(|(_, id)| id)
            .collect())
    }

    async fn save_queue(&self, queue: &QueueConfig) -> Result<()> {
        self.coord.save_queue(queue).await.map_err(unavailable)
    }

    async fn save_rules(&self, rules: &[RoutingRule]) -> Result<()> {
        self.coord.save_rules(rules).await.map_err(unavailable)
    }

    async fn save_kpis(&self, kpis: &KpiReport, epoch: u64) -> Result<()> {
        self.coord.save_kpis(kpis, epoch).await.map_err(unavailable)
    }

    async fn router_home(&self) -> Result<Home> {
        if let Some((node, _)) = lock(&self.router).clone() {
            return Ok(self.home(node));
        }
        match self
            .coord
            .owner(&ActorKey::Router(ROUTER.into()))
            .await
            .map_err(unavailable)?
        {
            Some((node, epoch)) => {
                *lock(&self.router) = Some((node.clone(), epoch));
                Ok(self.home(node))
            }
            None => Err(ActorError::unavailable("router (no node hosts it)")),
        }
    }

    fn router_epoch(&self) -> Option<u64> {
        lock(&self.router)
            .as_ref()
            .map(|(_, epoch)| *epoch)
            .filter(|e| *e > 0)
    }

    fn router_started(&self, node: &str, epoch: u64, _members: &[String]) -> bool {
        {
            let mut router = lock(&self.router);
            let known = router.as_ref().map_or(0, |(_, e)| *e);
            if epoch < known {
                return false;
            }
            *router = Some((node.to_owned(), epoch));
        }
        let mut reported = lock(&self.reported);
        if epoch <= *reported {
            return false;
        }
        *reported = epoch;
        true
    }

    fn router_vacated(&self, node: &str) {
        self.forget_router_at(node);
        self.router_vacant.notify_one();
    }

    fn forget_router(&self) {
        *lock(&self.router) = None;
    }

    async fn agent_session(&self, agent: &AgentId, connected: bool) -> Result<()> {
        let key = ActorKey::Agent(agent.to_string());
        if !connected {
            self.forget_agent(agent);
            let token = lock(&self.agent_tokens).remove(agent);
            if let Some(token) = token {
                let _ = self.coord.release(&key, token).await;
            }
            return Ok(());
        }
        let token = match self.coord.claim(&key, &self.me.id, self.lease).await {
            Ok(t) => t,
            // The desktop moved here from another node: take the session over.
            Err(ClusterError::OwnedElsewhere { .. }) => {
                if let Some((_, old)) = self.coord.owner(&key).await.map_err(unavailable)? {
                    let _ = self.coord.release(&key, old).await;
                }
                self.coord
                    .claim(&key, &self.me.id, self.lease)
                    .await
                    .map_err(unavailable)?
            }
            Err(e) => return Err(unavailable(e)),
        };
        lock(&self.agent_tokens).insert(agent.clone(), token);
        lock(&self.agents).insert(agent.clone(), (self.me.id.clone(), Instant::now()));
        Ok(())
    }

    async fn agent_home(&self, agent: &AgentId) -> Result<Option<Home>> {
        if let Some((node, at)) = lock(&self.agents).get(agent).cloned()
            && at.elapsed() < AGENT_CACHE_FOR
        {
            return Ok(Some(self.home(node)));
        }
        let owner = self
            .coord
            .owner(&ActorKey::Agent(agent.to_string()))
            .await
            .map_err(unavailable)?
            .map(|(n, _)| n);
        // "Connected nowhere" is not kept: a desktop may log in again
        // (through any node) at any moment.
        match &owner {
            Some(node) => lock(&self.agents).insert(agent.clone(), (node.clone(), Instant::now())),
            None => lock(&self.agents).remove(agent),
        };
        Ok(owner.map(|n| self.home(n)))
    }

    fn forget_agent(&self, agent: &AgentId) {
        lock(&self.agents).remove(agent);
    }

    async fn gateway_session(&self, channels: &[Channel], open: bool) -> Result<()> {
        let streams = {
            let mut here = lock(&self.gateways_here);
            if open {
                here.push(channels.to_vec());
            } else if let Some(i) = here.iter().position(|c| c == channels) {
                here.remove(i);
            }
            here.clone()
        };
        self.coord
            .set_gateways(&self.me.id, self.lease, &streams)
            .await
            .map_err(unavailable)
    }

    async fn gateway_nodes(&self, channel: Channel) -> Result<Vec<String>> {
        let cached = lock(&self.gateways)
            .as_ref()
            .filter(|(_, at)| at.elapsed() < CACHE_FOR)
            .map(|(g, _)| g.clone());
        let all = match cached {
            Some(g) => g,
            None => {
                let g = self.coord.gateways().await.map_err(unavailable)?;
                *lock(&self.gateways) = Some((g.clone(), Instant::now()));
                g
            }
        };
        Ok(all
            .into_iter()
            .filter(|(node, streams)| {
                *node != self.me.id && streams.iter().any(|s| s.is_empty() || s.contains(&channel))
            })
            .map(|(node, _)| node)
            .collect())
    }

    async fn send(&self, node: &str, envelope: Envelope) -> Result<EnvelopeReply> {
        let r = self.peer(node)?.send(envelope).await;
        if r.is_err() {
            // Whatever we believed about that node may be stale.
            self.forget_node(node);
        }
        r
    }
}

/// A fresh customer id: random, so that nodes allocate ids without
/// coordinating (the identity link that makes it a customer is the check).
fn fresh_customer() -> CustomerId {
    CustomerId(rand::random::<u64>() >> 12 | 1)
}

/// Identities resolved on this node, at most [`IDENTITY_CACHE`]. An
/// identity's customer never changes once linked (a merge, when there is
/// one, leaves the absorbed customer forwarding to the survivor), so an
/// entry never goes stale; when full, the cache is emptied and refills.
struct IdentityCache {
    map: Mutex<HashMap<Identity, CustomerId>>,
    capacity: usize,
}

impl IdentityCache {
    fn new(capacity: usize) -> Self {
        IdentityCache {
            map: Mutex::default(),
            capacity,
        }
    }

    fn get(&self, identity: &Identity) -> Option<CustomerId> {
        lock(&self.map).get(identity).copied()
    }

    fn put(&self, identity: Identity, customer: CustomerId) {
        let mut map = lock(&self.map);
        if map.len() >= self.capacity {
            map.clear();
        }
        map.insert(identity, customer);
    }
}

/// Identities a node remembers (about 100 bytes each).
const IDENTITY_CACHE: usize = 200_000;

/// Rendezvous hashing: the node among `nodes` with the highest score for
/// `key`, the same in every process for the same set.
fn pick<'a>(nodes: impl IntoIterator<Item = &'a String>, key: u64) -> Option<&'a str> {
    nodes
        .into_iter()
        .max_by_key(|node| mix(key ^ fnv(node.as_bytes())))
        .map(String::as_str)
}

/// FNV-1a: a stable hash of a node id (the same in every process).
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// splitmix64's finaliser: spreads the combined key over 64 bits.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rendezvous_moves_only_the_share_of_a_new_node() {
        let pick = |nodes: &[&str], key: u64| {
            nodes
                .iter()
                .max_by_key(|n| mix(key ^ fnv(n.as_bytes())))
                .map(|n| n.to_string())
        };
        let three = ["n1", "n2", "n3"];
        let four = ["n1", "n2", "n3", "n4"];
        let mut moved = 0;
        let mut to_new = 0;
        for key in 0..10_000u64 {
            let (a, b) = (pick(&three, key), pick(&four, key));
            if a != b {
                moved += 1;
                to_new += usize::from(b.as_deref() == Some("n4"));
            }
        }
        assert_eq!(moved, to_new, "keys only ever move to the new node");
        assert!(
            (2_000..3_000).contains(&moved),
            "about a quarter moves: {moved}"
        );
    }
}
