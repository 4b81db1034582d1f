//! The campaign store (`centralino_actors::campaign::CampaignStore`) over a
//! [`Coordination`] backend: campaigns and their replies are kept there
//! (etcd: `campaigns/`, `campaign-replies/`), a campaign's runner owns
//! `ActorKey::Campaign` on its node's lease, and every save of its progress
//! is fenced by that ownership's token.

use std::sync::Arc;

use centralino_actors::campaign::{CampaignRecord, CampaignStore};
use centralino_actors::error::{ActorError, Result};
use centralino_actors::journal::CustomerRecord;
use centralino_core::{CampaignId, CustomerId};

use crate::coordination::{ActorKey, Coordination};
use crate::error::ClusterError;

/// Campaigns kept by the coordination backend, for the node `node` whose
/// lease is `lease`.
pub struct CoordinatedCampaigns {
    coord: Arc<dyn Coordination>,
    node: String,
    lease: i64,
}

impl CoordinatedCampaigns {
    pub fn new(coord: Arc<dyn Coordination>, node: impl Into<String>, lease: i64) -> Self {
        CoordinatedCampaigns {
            coord,
            node: node.into(),
            lease,
        }
    }
}

fn actor_error(e: ClusterError) -> ActorError {
    match e {
        ClusterError::Fenced { .. } | ClusterError::OwnedElsewhere { .. } => {
            ActorError::Fenced(e.to_string())
        }
        other => ActorError::unavailable(other.to_string()),
    }
}

#[async_trait::async_trait]
impl CampaignStore for CoordinatedCampaigns {
    async fn create(&self, record: &CampaignRecord) -> Result<bool> {
        self.coord
            .create_campaign(record)
            .await
            .map_err(actor_error)
    }

    async fn claim(&self, id: &CampaignId) -> Result<Option<u64>> {
        match self
            .coord
            .claim(&ActorKey::Campaign(id.clone()), &self.node, self.lease)
            .await
        {
            Ok(token) => Ok(Some(token)),
            Err(ClusterError::OwnedElsewhere { .. }) => Ok(None),
            Err(e) => Err(actor_error(e)),
        }
    }

    async fn save(&self, record: &CampaignRecord, token: u64) -> Result<()> {
        self.coord
            .save_campaign(record, token)
            .await
            .map_err(actor_error)
    }

    async fn release(&self, id: &CampaignId, token: u64) {
        if let Err(e) = self
            .coord
            .release(&ActorKey::Campaign(id.clone()), token)
            .await
        {
            tracing::debug!(campaign = %id, error = %e, "releasing a campaign");
        }
    }

    async fn get(&self, id: &CampaignId) -> Result<Option<CampaignRecord>> {
        self.coord.campaign(id).await.map_err(actor_error)
    }

    async fn list(&self) -> Result<Vec<CampaignRecord>> {
        self.coord.campaigns().await.map_err(actor_error)
    }

    async fn replied(&self, id: &CampaignId, customer: CustomerId) -> Result<()> {
        self.coord
            .add_campaign_reply(id, customer)
            .await
            .map_err(actor_error)
    }

    async fn replies(&self, id: &CampaignId) -> Result<u64> {
        self.coord.campaign_replies(id).await.map_err(actor_error)
    }

    async fn scan(
        &self,
        after: Option<CustomerId>,
        limit: usize,
    ) -> Result<(Vec<CustomerRecord>, Option<CustomerId>)> {
        self.coord
            .scan_records(after, limit)
            .await
            .map_err(actor_error)
    }
}
