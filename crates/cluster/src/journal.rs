//! The actors' journal port, implemented over a [`Coordination`] backend
//! and an [`Archive`], with group commit.
//!
//! Customer actors commit concurrently, each waiting for its own batch. A
//! single committer task takes every batch waiting at that moment (at most
//! [`MAX_GROUP`]) and hands them to the backend in one call, which writes
//! them in as few requests as it can (etcd: one fenced transaction for many
//! customers). An idle journal commits each batch at once; a busy one also
//! gathers what arrives within the backend's group window (etcd: see
//! [`crate::group`]), and commits more per request.
//!
//! A batch that closes a conversation first stores the conversation's
//! whole history in the archive, on the committing actor's own task (so
//! that a slow disk holds up that customer only, never the committer), and
//! only then joins a group: the backend's fenced write then drops the
//! conversation from the journal. If that write fails or is fenced, the
//! conversation is still open in the journal, the actor undoes the close,
//! and a later close archives it again, replacing what was stored; an
//! acknowledged close is in the archive.

use std::sync::Arc;

use centralino_actors::journal::{Journal, JournalBatch, JournalError, Recovered};
use centralino_core::history::HistoryEvent;
use centralino_core::{ConversationId, CustomerId};
use tokio::sync::{mpsc, oneshot};

use crate::archive::{Archive, check_whole};
use crate::coordination::Coordination;
use crate::error::ClusterError;
use crate::group::Gather;

/// Most batches committed together.
pub const MAX_GROUP: usize = 64;

type Pending = (JournalBatch, oneshot::Sender<Result<u64, JournalError>>);

/// Journals customer changes through the coordination backend.
pub struct CoordinatedJournal {
    coord: Arc<dyn Coordination>,
    archive: Arc<dyn Archive>,
    committer: mpsc::UnboundedSender<Pending>,
    /// This node and its lease: the owner a creating batch claims for.
    owner: (String, i64),
}

impl CoordinatedJournal {
    /// A journal that archives closed conversations in `archive`; starts
    /// its committer on the current tokio runtime.
    pub fn new(
        coord: Arc<dyn Coordination>,
        archive: Arc<dyn Archive>,
        node: &str,
        lease: i64,
    ) -> Self {
        let (committer, rx) = mpsc::unbounded_channel();
        tokio::spawn(commit_groups(coord.clone(), rx));
        CoordinatedJournal {
            coord,
            archive,
            committer,
            owner: (node.to_owned(), lease),
        }
    }

    /// Stores a closing batch's conversation in the archive.
    async fn archive(&self, batch: &JournalBatch) -> Result<(), JournalError> {
        let customer = batch.record.id;
        let Some(conv) = batch.conversation.filter(|_| batch.closed) else {
            return Ok(());
        };
        check_whole(conv, &batch.events).map_err(|e| journal_error(customer, batch.token, e))?;
        let started = std::time::Instant::now();
        self.archive
            .store(conv, batch.token, &batch.events)
            .await
            .map_err(|e| journal_error(customer, batch.token, e))?;
        crate::metrics::archive_store(started.elapsed());
        Ok(())
    }
}

async fn commit_groups(coord: Arc<dyn Coordination>, mut rx: mpsc::UnboundedReceiver<Pending>) {
    let mut gather = Gather::new(coord.group_window(), MAX_GROUP);
    while let Some(group) = gather.next(&mut rx).await {
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
        ClusterError::IdentityTaken { identity, customer } => {
            JournalError::Taken { identity, customer }
        }
        ClusterError::Rejected(m) => JournalError::Rejected(m),
        other => JournalError::Unavailable(other.to_string()),
    }
}

#[async_trait::async_trait]
impl Journal for CoordinatedJournal {
    async fn commit(&self, mut batch: JournalBatch) -> Result<u64, JournalError> {
        // Archived before the journal lets go of it (see the module docs).
        self.archive(&batch).await?;
        if let Some(create) = &mut batch.create {
            create.owner = Some(self.owner.clone());
        }
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

    async fn last_closed(
        &self,
        customer: CustomerId,
    ) -> Result<Option<(ConversationId, Vec<HistoryEvent>)>, JournalError> {
        let unavailable = |e: ClusterError| JournalError::Unavailable(e.to_string());
        let closed = self.archive.list(customer).await.map_err(unavailable)?;
        let Some(&last) = closed.iter().max_by_key(|c| c.number) else {
            return Ok(None);
        };
        let history = self.archive.read(last).await.map_err(unavailable)?;
        Ok(history.map(|h| (last, h)))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use centralino_core::history::HistoryEvent;
    use centralino_core::{Channel, ConversationId};

    use super::*;
    use crate::archive::MemoryArchive;
    use crate::contract::{Script, long_conversation};
    use crate::coordination::{ActorKey, NodeInfo};
    use crate::memory::MemoryCoordination;

    /// An archive whose disk is full.
    struct Broken;

    #[async_trait::async_trait]
    impl Archive for Broken {
        async fn store(&self, _: ConversationId, _: u64, _: &[HistoryEvent]) -> crate::Result<()> {
            Err(ClusterError::Archive(
                "writing: No space left on device".into(),
            ))
        }
        async fn read(&self, _: ConversationId) -> crate::Result<Option<Vec<HistoryEvent>>> {
            Ok(None)
        }
        async fn list(&self, _: CustomerId) -> crate::Result<Vec<ConversationId>> {
            Ok(vec![])
        }
    }

    async fn owned(coord: &MemoryCoordination, node: &str, customer: CustomerId) -> (i64, u64) {
        let info = NodeInfo {
            id: node.into(),
            advertise: "127.0.0.1:1".into(),
        };
        let lease = coord
            .join(&info, Duration::from_secs(10))
            .await
            .expect("join");
        let token = coord
            .claim(&ActorKey::Customer(customer), node, lease)
            .await
            .expect("claim");
        (lease, token)
    }

    #[tokio::test]
    async fn a_close_goes_to_the_archive_whole_and_leaves_only_the_record() {
        let coord = Arc::new(MemoryCoordination::new());
        let archive = Arc::new(MemoryArchive::new());
        let journal = CoordinatedJournal::new(coord.clone(), archive.clone(), "n1", 0);
        let customer = CustomerId(1);
        let (_, token) = owned(&coord, "n1", customer).await;
        let mut script = Script::new(customer, token);
        long_conversation(coord.as_ref(), &mut script, 20).await;
        let history = script.customer.history().to_vec();
        let conv = script.conversation();

        let close = script.close("anna");
        journal.commit(close.clone()).await.expect("close");
        let archived = archive.read(conv).await.expect("read").expect("archived");
        assert_eq!(archived.len(), history.len() + 1, "the whole history");
        assert_eq!(&archived[..history.len()], &history[..]);
        let r = journal
            .recover(customer)
            .await
            .expect("recover")
            .expect("record");
        assert_eq!((r.record.open, r.snapshot, r.events), (None, None, vec![]));
        assert_eq!(archive.list(customer).await.expect("list"), vec![conv]);
    }

    #[tokio::test]
    async fn a_fenced_close_leaves_the_conversation_open_and_a_later_close_wins() {
        let coord = Arc::new(MemoryCoordination::new());
        let archive = Arc::new(MemoryArchive::new());
        let journal = CoordinatedJournal::new(coord.clone(), archive.clone(), "n1", 0);
        let customer = CustomerId(2);
        let (_, old) = owned(&coord, "n1", customer).await;
        let mut stale = Script::new(customer, old);
        long_conversation(coord.as_ref(), &mut stale, 10).await;
        let conv = stale.conversation();

        // Another node takes the customer over: its token is newer.
        let info = NodeInfo {
            id: "n2".into(),
            advertise: "127.0.0.1:2".into(),
        };
        let lb = coord
            .join(&info, Duration::from_secs(10))
            .await
            .expect("join");
        let new = coord
            .transfer(&ActorKey::Customer(customer), old, "n2", lb)
            .await
            .expect("transfer");
        let mut owner = Script::taken_over(stale.customer.clone(), new);

        match journal.commit(stale.close("anna")).await {
            Err(JournalError::Fenced { .. }) => {}
            other => panic!("the stale owner's close must be fenced, got {other:?}"),
        }
        let r = journal
            .recover(customer)
            .await
            .expect("recover")
            .expect("journal");
        assert_eq!(
            r.record.open,
            Some(conv),
            "a fenced close leaves the conversation open in the journal"
        );

        owner.message(Channel::Voice, "sono ancora qui");
        let close = owner.close("bruno");
        journal
            .commit(close.clone())
            .await
            .expect("the owner closes");
        assert_eq!(
            archive.read(conv).await.expect("read"),
            Some(close.events.clone()),
            "the owner's close replaced the stale one in the archive"
        );
        match journal.commit(stale.close("anna")).await {
            Err(JournalError::Fenced { .. }) => {}
            other => panic!("a stale close after the owner's must be fenced, got {other:?}"),
        }
        assert_eq!(
            archive.read(conv).await.expect("read"),
            Some(close.events),
            "and cannot replace it"
        );
    }

    #[tokio::test]
    async fn a_close_the_archive_cannot_take_changes_nothing() {
        let coord = Arc::new(MemoryCoordination::new());
        let journal = CoordinatedJournal::new(coord.clone(), Arc::new(Broken), "n1", 0);
        let customer = CustomerId(3);
        let (_, token) = owned(&coord, "n1", customer).await;
        let mut script = Script::new(customer, token);
        long_conversation(coord.as_ref(), &mut script, 5).await;
        let before = journal.recover(customer).await.expect("recover");
        match journal.commit(script.close("anna")).await {
            Err(JournalError::Unavailable(m)) => assert!(m.contains("No space left"), "{m}"),
            other => panic!("expected Unavailable, got {other:?}"),
        }
        assert_eq!(
            journal.recover(customer).await.expect("recover"),
            before,
            "the journal still holds the open conversation"
        );

        let mut partial = script.close("anna");
        partial.events.remove(0);
        match journal.commit(partial).await {
            Err(JournalError::Rejected(m)) => assert!(m.contains("seq 1"), "{m}"),
            other => panic!("a close without the whole history must be rejected, got {other:?}"),
        }
    }
}
