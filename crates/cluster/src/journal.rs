//! The actors' journal port, implemented over a [`Coordination`] backend,
//! with group commit.
//!
//! Customer actors commit concurrently, each waiting for its own batch. A
//! single committer task takes every batch waiting at that moment (at most
//! [`MAX_GROUP`]) and hands them to the backend in one call, which writes
//! them in as few requests as it can (etcd: one fenced transaction for many
//! customers). Nothing waits to fill a group: an idle journal commits each
//! batch at once, a busy one commits more per request.

use std::sync::Arc;

use centralino_actors::journal::{Journal, JournalBatch, JournalError, Recovered};
use centralino_core::CustomerId;
use tokio::sync::{mpsc, oneshot};

use crate::coordination::Coordination;
use crate::error::ClusterError;

/// Most batches committed together.
pub const MAX_GROUP: usize = 64;

type Pending = (JournalBatch, oneshot::Sender<Result<(), JournalError>>);

/// Journals customer changes through the coordination backend.
pub struct CoordinatedJournal {
    coord: Arc<dyn Coordination>,
    committer: mpsc::UnboundedSender<Pending>,
}

impl CoordinatedJournal {
    /// A journal; starts its committer on the current tokio runtime.
    pub fn new(coord: Arc<dyn Coordination>) -> Self {
        let (committer, rx) = mpsc::unbounded_channel();
        tokio::spawn(commit_groups(coord.clone(), rx));
        CoordinatedJournal { coord, committer }
    }
}

async fn commit_groups(coord: Arc<dyn Coordination>, mut rx: mpsc::UnboundedReceiver<Pending>) {
    while let Some(first) = rx.recv().await {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(p) => group.push(p),
                Err(_) => break,
            }
        }
        crate::metrics::group_commit(group.len());
        let (batches, replies): (Vec<_>, Vec<_>) = group.into_iter().unzip();
        let keys: Vec<_> = batches.iter().map(|b| (b.record.id, b.token)).collect();
        let results = coord.append_many(batches).await;
        for ((reply, result), (customer, token)) in replies.into_iter().zip(results).zip(keys) {
            let _ = reply.send(result.map_err(|e| journal_error(customer, token, e)));
        }
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
        let (tx, rx) = oneshot::channel();
        self.committer
            .send((batch, tx))
            .map_err(|_| JournalError::Unavailable("journal committer stopped".into()))?;
        rx.await
            .map_err(|_| JournalError::Unavailable("journal committer stopped".into()))?
    }

    async fn recover(&self, customer: CustomerId) -> Result<Option<Recovered>, JournalError> {
        self.coord
            .load(customer)
            .await
            .map_err(|e| journal_error(customer, 0, e))
    }
}
