//! The actors' journal port, implemented over a [`Coordination`] backend.

use std::sync::Arc;

use centralino_actors::journal::{Journal, JournalBatch, JournalError, Recovered};
use centralino_core::CustomerId;

use crate::coordination::Coordination;
use crate::error::ClusterError;

/// Journals customer changes through the coordination backend.
pub struct CoordinatedJournal {
    coord: Arc<dyn Coordination>,
}

impl CoordinatedJournal {
    pub fn new(coord: Arc<dyn Coordination>) -> Self {
        CoordinatedJournal { coord }
    }
}

fn journal_error(customer: CustomerId, token: u64, e: ClusterError) -> JournalError {
    match e {
        ClusterError::Fenced { .. } | ClusterError::OwnedElsewhere { .. } => {
            JournalError::Fenced { customer, token }
        }
        other => JournalError::Unavailable(other.to_string()),
    }
}

#[async_trait::async_trait]
impl Journal for CoordinatedJournal {
    async fn commit(&self, batch: JournalBatch) -> Result<(), JournalError> {
        let (customer, token) = (batch.record.id, batch.token);
        self.coord
            .append(batch)
            .await
            .map_err(|e| journal_error(customer, token, e))
    }

    async fn recover(&self, customer: CustomerId) -> Result<Option<Recovered>, JournalError> {
        self.coord
            .load(customer)
            .await
            .map_err(|e| journal_error(customer, 0, e))
    }
}
