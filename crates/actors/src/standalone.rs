//! One node on its own: every actor lives here; the identity directory is
//! in memory. Used by `centralino dev`, standalone nodes and tests.

use std::sync::Mutex;

use centralino_core::directory::{Directory, Resolution};
use centralino_core::{AgentId, Channel, CustomerId, Identity};

use crate::cluster::{Claim, Cluster, Home};
use crate::error::{ActorError, Result};
use crate::wire::{Envelope, EnvelopeReply};

pub struct Standalone {
    node: String,
    directory: Mutex<Directory>,
}

impl Standalone {
    pub fn new(node: impl Into<String>) -> Self {
        Standalone {
            node: node.into(),
            directory: Mutex::new(Directory::default()),
        }
    }

    fn directory(&self) -> std::sync::MutexGuard<'_, Directory> {
        self.directory.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[async_trait::async_trait]
impl Cluster for Standalone {
    fn node_id(&self) -> &str {
        &self.node
    }
    async fn resolve(&self, identity: &Identity, also: &[Identity]) -> Result<Resolution> {
        Ok(self.directory().resolve(identity, also))
    }
    async fn lookup(&self, identity: &Identity) -> Result<Option<CustomerId>> {
        Ok(self.directory().lookup(identity))
    }
    async fn customer_exists(&self, id: CustomerId) -> Result<bool> {
        Ok(self.directory().issued(id))
    }
    async fn customer_home(&self, _id: CustomerId) -> Result<Home> {
        Ok(Home::Here)
    }
    async fn claim_customer(&self, _id: CustomerId) -> Result<Claim> {
        Ok(Claim::Owned { token: 0 })
    }
    async fn release_customer(&self, _id: CustomerId, _token: u64) {}
    async fn router_home(&self) -> Result<Home> {
        Ok(Home::Here)
    }
    async fn agent_session(&self, _agent: &AgentId, _connected: bool) -> Result<()> {
        Ok(())
    }
    /// A desktop connected here is found by the hub before it asks; one
    /// that is not is not connected anywhere (there is nowhere else): what
    /// was meant for it is dropped, not retried (a lane retrying it would
    /// hold up every decision behind it).
    async fn agent_home(&self, _agent: &AgentId) -> Result<Option<Home>> {
        Ok(None)
    }
    async fn gateway_session(&self, _channels: &[Channel], _open: bool) -> Result<()> {
        Ok(())
    }
    async fn gateway_nodes(&self, _channel: Channel) -> Result<Vec<String>> {
        Ok(Vec::new())
    }
    async fn send(&self, node: &str, _envelope: Envelope) -> Result<EnvelopeReply> {
        Err(ActorError::unavailable(format!(
            "node {node} (a standalone node has no peers)"
        )))
    }
}
