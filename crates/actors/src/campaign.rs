//! Campaigns on a node: the store they are kept in, and the runner that
//! carries one out.
//!
//! A campaign runs on one node at a time: the node that received
//! `Admin.StartCampaign` stores it ([`CampaignStore::create`]), claims it
//! (an ownership record on its lease, like an actor's, whose revision is
//! the fencing token every save of its progress carries) and runs it here.
//! The runner is a task, owned by [`Campaigns`]: it pages through the
//! customer records of the journal ([`CampaignStore::scan`]), lets
//! `centralino_core::campaign::run` decide what each record settles, and
//! asks the customers it must reach, wherever they live, through the hub
//! (`CustomerRequest::Campaign`); their actors plan again with what they
//! know, record the notice and hand it to a gateway. Deferred customers
//! are asked again when their quiet hours end, and every notice's
//! conversation is closed when its reply window ends unanswered. The
//! runner saves its progress every [`SAVE_EVERY`] while it changes, so any
//! node answers `Admin.GetCampaign` from the store.
//!
//! Replies are counted by the customers, not the runner: a customer whose
//! contact answers a notice adds itself to the campaign's replies in the
//! store (idempotent), wherever the campaign runs.
//!
//! # When the runner's node dies
//!
//! Its lease takes the campaign's ownership record with it. Whenever a
//! member leaves (and when a node starts), every node offers to take over
//! the campaigns that are not finished and that no node owns
//! ([`Campaigns::resume`]); the one whose claim wins runs it again *from
//! the start*: the scan meets every customer again, and the marks the
//! customers keep say whom the campaign reached already (and who replied),
//! so nobody is reached twice and the counts come out as a run that never
//! stopped would have made them. Deferred customers are deferred again,
//! and reply windows run from each notice's own time. A zombie runner (its
//! node stalled past its lease) can no longer save: the fence refuses it,
//! and it stops.
//!
//! Message discipline: the runner asks customers; customers never ask a
//! runner (they write replies to the store), so there is no call cycle.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use centralino_core::campaign::run::{
    CampaignRun, Delivered, Expired, Next, Progress, Status, Task,
};
use centralino_core::campaign::{CampaignSpec, Known};
use centralino_core::{CampaignId, CoreError, CustomerId, TimeMs};
use futures::StreamExt;
use rustc_hash::FxHashMap;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::clock::now_ms;
use crate::error::{ActorError, Result};
use crate::hub::Hub;
use crate::journal::CustomerRecord;
use crate::sync::lock;
use crate::wire::{CustomerReply, CustomerRequest};

/// Customer records read per page of the scan.
pub const PAGE: usize = 64;
/// Customers asked at once.
pub const ASK_PARALLEL: usize = 16;
/// How often a runner saves its progress while it changes.
pub const SAVE_EVERY: Duration = Duration::from_millis(250);
/// Longest a runner sleeps between looks at its timers.
const IDLE_WAKE: Duration = Duration::from_secs(1);

/// A campaign as the store keeps it: what the operator asked for, and
/// where it stands as of the runner's last save.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CampaignRecord {
    pub spec: CampaignSpec,
    pub status: Status,
    /// The node running it (the last one to save).
    pub runner: String,
    pub progress: Progress,
    pub started_at: TimeMs,
    pub updated_at: TimeMs,
}

/// Where campaigns are kept, and the customer records they scan.
/// Implemented over the coordination backend by `centralino-cluster`.
#[async_trait::async_trait]
pub trait CampaignStore: Send + Sync + 'static {
    /// Stores a new campaign; `false` if one with its id exists.
    async fn create(&self, record: &CampaignRecord) -> Result<bool>;
    /// Takes the campaign for this node if no live node holds it: the
    /// fencing token, or `None` if another node holds it.
    async fn claim(&self, id: &CampaignId) -> Result<Option<u64>>;
    /// Saves the runner's record, if `token` still holds the campaign
    /// ([`ActorError::Fenced`] otherwise).
    async fn save(&self, record: &CampaignRecord, token: u64) -> Result<()>;
    /// Gives the campaign up (it finished here).
    async fn release(&self, id: &CampaignId, token: u64);
    async fn get(&self, id: &CampaignId) -> Result<Option<CampaignRecord>>;
    async fn list(&self) -> Result<Vec<CampaignRecord>>;
    /// The customer replied to the campaign's notice (idempotent).
    async fn replied(&self, id: &CampaignId, customer: CustomerId) -> Result<()>;
    /// How many customers replied.
    async fn replies(&self, id: &CampaignId) -> Result<u64>;
    /// A page of the customers' records: those of up to `limit` customers
    /// after `after` (from the first when `None`), in the store's own
    /// order, and the last customer the page covered, to pass as `after`
    /// next (`None`: the scan is over).
    async fn scan(
        &self,
        after: Option<CustomerId>,
        limit: usize,
    ) -> Result<(Vec<CustomerRecord>, Option<CustomerId>)>;
}

/// A running campaign's stop switch.
struct Runner {
    stop: watch::Sender<bool>,
}

/// The campaigns of one node: starts, resumes and stops their runners.
pub struct Campaigns {
    store: Arc<dyn CampaignStore>,
    node: String,
    running: Mutex<FxHashMap<CampaignId, Runner>>,
}

impl Campaigns {
    pub fn new(store: Arc<dyn CampaignStore>, node: impl Into<String>) -> Arc<Campaigns> {
        Arc::new(Campaigns {
            store,
            node: node.into(),
            running: Mutex::default(),
        })
    }

    pub fn store(&self) -> &Arc<dyn CampaignStore> {
        &self.store
    }

    /// Starts a new campaign here; its first record.
    pub async fn start(
        self: &Arc<Self>,
        hub: &Arc<Hub>,
        spec: CampaignSpec,
    ) -> Result<CampaignRecord> {
        spec.validate()?;
        let now = now_ms();
        let record = CampaignRecord {
            spec,
            status: Status::Delivering,
            runner: self.node.clone(),
            progress: Progress::default(),
            started_at: now,
            updated_at: now,
        };
        let id = record.spec.id.clone();
        if !self.store.create(&record).await? {
            return Err(CoreError::CampaignExists(id).into());
        }
        match self.store.claim(&id).await? {
            Some(token) => self.spawn(hub, record.clone(), token),
            // Another node's resume took it in the instant between: it
            // runs there, which is as good.
            None => tracing::info!(campaign = %id, "campaign taken over by another node at start"),
        }
        Ok(record)
    }

    /// Takes over the campaigns that are not finished and that no live
    /// node runs (their node died, or this node restarted); returns how
    /// many started here.
    pub async fn resume(self: &Arc<Self>, hub: &Arc<Hub>) -> Result<usize> {
        let mut started = 0;
        for mut record in self.store.list().await? {
            let id = record.spec.id.clone();
            if record.status == Status::Finished || lock(&self.running).contains_key(&id) {
                continue;
            }
            let Some(token) = self.store.claim(&id).await? else {
                continue;
            };
            tracing::info!(campaign = %id, from = %record.runner, "campaign taken over: running it again from the start");
            record.runner = self.node.clone();
            self.spawn(hub, record, token);
            started += 1;
        }
        Ok(started)
    }

    /// A campaign's record and how many customers replied, from any node.
    pub async fn view(&self, id: &CampaignId) -> Result<Option<(CampaignRecord, u64)>> {
        let Some(record) = self.store.get(id).await? else {
            return Ok(None);
        };
        let replied = self.store.replies(id).await?;
        Ok(Some((record, replied)))
    }

    /// Every campaign, with its replies.
    pub async fn list(&self) -> Result<Vec<(CampaignRecord, u64)>> {
        let mut all = Vec::new();
        for record in self.store.list().await? {
            let replied = self.store.replies(&record.spec.id).await?;
            all.push((record, replied));
        }
        Ok(all)
    }

    /// Stops every runner here (the node shuts down; its lease takes the
    /// ownership records, and another node resumes them).
    pub fn stop_all(&self) {
        for (_, r) in lock(&self.running).drain() {
            let _ = r.stop.send(true);
        }
    }

    fn spawn(self: &Arc<Self>, hub: &Arc<Hub>, record: CampaignRecord, token: u64) {
        let (stop, stopped) = watch::channel(false);
        let id = record.spec.id.clone();
        lock(&self.running).insert(id.clone(), Runner { stop });
        let (me, hub) = (self.clone(), hub.clone());
        tokio::spawn(async move {
            let runner = Run {
                hub,
                store: me.store.clone(),
                record,
                token,
                stopped,
            };
            runner.go().await;
            lock(&me.running).remove(&id);
        });
    }
}

/// One runner (see the module docs).
struct Run {
    hub: Arc<Hub>,
    store: Arc<dyn CampaignStore>,
    record: CampaignRecord,
    token: u64,
    stopped: watch::Receiver<bool>,
}

impl Run {
    async fn go(mut self) {
        let id = self.record.spec.id.clone();
        let mut run = CampaignRun::new(self.record.spec.clone());
        let mut after: Option<CustomerId> = None;
        let mut scanning = true;
        let mut dirty = true;
        let mut saved_at = std::time::Instant::now();
        let mut backoff = Duration::from_millis(100);
        tracing::info!(campaign = %id, "campaign running");
        loop {
            if *self.stopped.borrow() {
                return;
            }
            let due = run.due(now_ms());
            if !due.is_empty() {
                self.ask(&mut run, due).await;
                dirty = true;
            }
            if scanning {
                match self.store.scan(after, PAGE).await {
                    Ok((_, None)) => {
                        scanning = false;
                        run.scan_complete();
                        dirty = true;
                    }
                    Ok((page, next)) => {
                        after = next;
                        self.met(&mut run, &page).await;
                        dirty = true;
                        backoff = Duration::from_millis(100);
                    }
                    Err(e) => {
                        tracing::warn!(campaign = %id, error = %e, "scanning customers; retrying");
                        self.pause(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            let status = run.status();
            let finished = status == Status::Finished;
            if dirty
                && (finished || status != self.record.status || saved_at.elapsed() >= SAVE_EVERY)
            {
                match self.save(&run).await {
                    Ok(()) => {
                        dirty = false;
                        saved_at = std::time::Instant::now();
                    }
                    Err(ActorError::Fenced(why)) => {
                        tracing::warn!(campaign = %id, %why, "campaign taken over by another node; stopping here");
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(campaign = %id, error = %e, "saving campaign progress; retrying")
                    }
                }
            }
            if finished && !dirty {
                self.store.release(&id, self.token).await;
                tracing::info!(campaign = %id, progress = ?run.progress(), "campaign finished");
                return;
            }
            if !scanning {
                // Nothing to read: wait for the next task (or a save).
                let now = now_ms();
                let wake = run.next_due().map_or(IDLE_WAKE, |at| {
                    Duration::from_millis(at.saturating_sub(now)).min(IDLE_WAKE)
                });
                let wake = if dirty { wake.min(SAVE_EVERY) } else { wake };
                self.pause(wake).await;
            }
        }
    }

    /// Sleeps, unless the runner is stopped meanwhile.
    async fn pause(&mut self, d: Duration) {
        tokio::select! {
            _ = self.stopped.changed() => {}
            () = tokio::time::sleep(d) => {}
        }
    }

    /// A page of customer records: what each settles, and the asks.
    async fn met(&self, run: &mut CampaignRun, page: &[CustomerRecord]) {
        let now = now_ms();
        let mut asks = Vec::new();
        for r in page {
            let known = Known {
                attributes: &r.attributes,
                identities: &r.identities,
                marks: &r.campaigns,
            };
            match run.scanned(now, r.id, known) {
                Next::Deliver => asks.push((r.id, Task::Deliver)),
                Next::Replied => self.replied(r.id).await,
                Next::Nothing => {}
            }
        }
        self.ask(run, asks).await;
    }

    /// Asks the customers their tasks, [`ASK_PARALLEL`] at a time, and
    /// takes their answers.
    async fn ask(&self, run: &mut CampaignRun, tasks: Vec<(CustomerId, Task)>) {
        let spec = Box::new(run.spec().clone());
        let answers: Vec<_> = futures::stream::iter(tasks)
            .map(|(id, task)| {
                let (hub, spec) = (self.hub.clone(), spec.clone());
                async move {
                    let r = hub
                        .ask_customer(id, CustomerRequest::Campaign { spec, task })
                        .await;
                    (id, task, r)
                }
            })
            .buffer_unordered(ASK_PARALLEL)
            .collect()
            .await;
        let now = now_ms();
        for (id, task, r) in answers {
            if let Err(e) = &r {
                tracing::debug!(campaign = %spec.id, customer = %id, error = %e, "customer not asked; retrying later");
            }
            let next = match (task, r) {
                (Task::Deliver, Ok(CustomerReply::Delivered(d))) => {
                    run.delivered(now, id, Some(*d))
                }
                (Task::Deliver, _) => run.delivered(now, id, None),
                (Task::Expire(c), Ok(CustomerReply::Expired(x))) => {
                    run.expired(now, id, c, Some(x))
                }
                (Task::Expire(c), _) => run.expired(now, id, c, None::<Expired>),
            };
            if next == Next::Replied {
                self.replied(id).await;
            }
        }
    }

    /// Makes sure the replies count has the customer (a reply whose own
    /// count was lost is counted again here).
    async fn replied(&self, customer: CustomerId) {
        if let Err(e) = self.store.replied(&self.record.spec.id, customer).await {
            tracing::debug!(campaign = %self.record.spec.id, %customer, error = %e, "reply not counted");
        }
    }

    async fn save(&mut self, run: &CampaignRun) -> Result<()> {
        let mut record = self.record.clone();
        record.status = run.status();
        record.progress = run.progress().clone();
        record.updated_at = now_ms();
        self.store.save(&record, self.token).await?;
        self.record = record;
        Ok(())
    }
}

/// Delivered answers are boxed on the wire; this keeps the match above flat.
impl From<Delivered> for CustomerReply {
    fn from(d: Delivered) -> Self {
        CustomerReply::Delivered(Box::new(d))
    }
}
