//! A campaign's run: what to ask which customer next, and its progress.
//!
//! A run meets every customer once through a scan of the journal's
//! customer records ([`CampaignRun::scanned`]): what the record settles
//! (not targeted, skipped, already reached, deferred to the end of quiet
//! hours) is counted at once; a customer to reach now is asked to
//! ([`Task::Deliver`]): their actor plans again with what it knows and
//! answers. Deferred customers are asked again when their window opens,
//! failed asks are retried, and every notice sent waits for its reply
//! window to end ([`Task::Expire`]): the customer's actor then closes the
//! conversation the notice opened if the customer never answered, so that
//! unanswered notices do not stay open (and in the journal) forever.
//!
//! Each targeted customer has exactly one disposition at a time (asking,
//! deferred, sent on a channel, skipped for consent, unreachable, failed),
//! and the counts are those dispositions: a customer deferred and later
//! sent counts once, as sent (and in `deferred_total`).
//!
//! A run is rebuilt from scratch when a campaign moves to another node:
//! the customers' marks say whom it reached (and who replied), so a rescan
//! counts exactly what a run that never stopped would.

use std::collections::BTreeSet;

use rustc_hash::{FxHashMap, FxHashSet};
use serde::{Deserialize, Serialize};

use super::{CampaignSpec, Known, Plan, Skip, plan};
use crate::channel::Channel;
use crate::customer::CampaignMark;
use crate::ids::{ConversationId, CustomerId};
use crate::time::{DurationMs, TimeMs};

/// How soon a customer whose actor could not be asked is asked again.
pub const RETRY_MS: DurationMs = 2_000;
/// How many times a customer is asked before it counts as failed.
pub const MAX_ATTEMPTS: u32 = 5;

/// What the run asks a customer's actor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Task {
    /// Plan again and, if it says so, send the notice now.
    Deliver,
    /// The reply window of the notice in this conversation is over: close
    /// the conversation if the customer never answered.
    Expire(ConversationId),
}

/// A customer actor's answer to [`Task::Deliver`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Delivered {
    /// The notice went out (recorded, handed to a gateway); `follow_up`:
    /// its conversation was queued for an agent.
    Sent { mark: CampaignMark, follow_up: bool },
    /// Not sent now, because of this plan (anything but `Send`).
    Not(Plan),
}

/// A customer actor's answer to [`Task::Expire`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Expired {
    /// The notice was never answered: its conversation is closed.
    Closed,
    /// The customer replied, an agent took the conversation, or it is no
    /// longer open: left as it is.
    Kept { replied: bool },
}

/// Where a campaign stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Status {
    /// Scanning, asking, or waiting for quiet hours to end.
    Delivering,
    /// Every targeted customer is settled; notices wait for replies.
    AwaitingReplies,
    Finished,
}

/// The counts a supervisor reads.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// Customer records the scan has met.
    pub scanned: u64,
    /// In the audience.
    pub targeted: u64,
    /// Reached (the notice is in their history and went to a gateway).
    pub sent: u64,
    pub sent_by_channel: Vec<(Channel, u64)>,
    pub skipped_consent: u64,
    pub skipped_unreachable: u64,
    /// Waiting for their quiet hours to end, now.
    pub deferred: u64,
    /// Ever deferred (most are sent later).
    pub deferred_total: u64,
    /// Being asked right now.
    pub asking: u64,
    /// Could not be reached after [`MAX_ATTEMPTS`].
    pub failed: u64,
    /// Notices whose conversation was queued for an agent.
    pub follow_ups: u64,
    /// Notices waiting for their reply window to end.
    pub awaiting_reply: u64,
    /// Conversations closed because the notice was never answered.
    pub closed_unanswered: u64,
    /// Every record has been scanned.
    pub scan_complete: bool,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Disposition {
    Asking,
    Deferred,
    Sent(Channel),
    Skipped(Skip),
    Failed,
}

/// What the run wants done after a customer was met or answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    Nothing,
    /// Ask the customer's actor to deliver, now.
    Deliver,
    /// The customer replied to this campaign's notice: make sure the
    /// count of replies has them (idempotent).
    Replied,
}

/// One campaign's run. See the module docs.
#[derive(Debug)]
pub struct CampaignRun {
    spec: CampaignSpec,
    progress: Progress,
    dispositions: FxHashMap<CustomerId, Disposition>,
    ever_deferred: FxHashSet<CustomerId>,
    attempts: FxHashMap<CustomerId, u32>,
    timers: BTreeSet<(TimeMs, CustomerId, Task)>,
}

impl CampaignRun {
    pub fn new(spec: CampaignSpec) -> Self {
        CampaignRun {
            spec,
            progress: Progress::default(),
            dispositions: FxHashMap::default(),
            ever_deferred: FxHashSet::default(),
            attempts: FxHashMap::default(),
            timers: BTreeSet::new(),
        }
    }

    pub fn spec(&self) -> &CampaignSpec {
        &self.spec
    }

    pub fn progress(&self) -> &Progress {
        &self.progress
    }

    /// The scan met this customer's record.
    pub fn scanned(&mut self, now: TimeMs, id: CustomerId, who: Known<'_>) -> Next {
        self.progress.scanned += 1;
        match plan(&self.spec, now, who) {
            Plan::Send { .. } => {
                self.set(id, Some(Disposition::Asking));
                Next::Deliver
            }
            other => self.settle(id, other),
        }
    }

    /// The scan is over: every record was met.
    pub fn scan_complete(&mut self) {
        self.progress.scan_complete = true;
    }

    /// Tasks whose time has come, in time order; a deferred customer is
    /// being asked from now on.
    pub fn due(&mut self, now: TimeMs) -> Vec<(CustomerId, Task)> {
        let mut due = Vec::new();
        while let Some(&(at, id, task)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, id, task));
            match task {
                Task::Deliver => self.set(id, Some(Disposition::Asking)),
                Task::Expire(_) => self.progress.awaiting_reply -= 1,
            }
            due.push((id, task));
        }
        due
    }

    /// When the next task is due.
    pub fn next_due(&self) -> Option<TimeMs> {
        self.timers.first().map(|(at, _, _)| *at)
    }

    /// The customer's actor answered [`Task::Deliver`] (`None`: it could
    /// not be asked).
    pub fn delivered(&mut self, now: TimeMs, id: CustomerId, answer: Option<Delivered>) -> Next {
        match answer {
            Some(Delivered::Sent { mark, follow_up }) => {
                self.progress.follow_ups += u64::from(follow_up);
                self.settle(id, Plan::AlreadySent(mark))
            }
            // The actor sends what it plans to send: a `Send` is a bug
            // between versions; ask again later like a failure.
            Some(Delivered::Not(Plan::Send { .. })) | None => {
                let attempts = self.attempts.entry(id).or_default();
                *attempts += 1;
                if *attempts >= MAX_ATTEMPTS {
                    self.set(id, Some(Disposition::Failed));
                } else {
                    self.timers.insert((now + RETRY_MS, id, Task::Deliver));
                }
                Next::Nothing
            }
            Some(Delivered::Not(plan)) => self.settle(id, plan),
        }
    }

    /// The customer's actor answered [`Task::Expire`] of `conversation`
    /// (`None`: it could not be asked; asked again later).
    pub fn expired(
        &mut self,
        now: TimeMs,
        id: CustomerId,
        conversation: ConversationId,
        answer: Option<Expired>,
    ) -> Next {
        match answer {
            Some(Expired::Closed) => {
                self.progress.closed_unanswered += 1;
                Next::Nothing
            }
            Some(Expired::Kept { replied }) if replied => Next::Replied,
            Some(Expired::Kept { .. }) => Next::Nothing,
            None => {
                self.progress.awaiting_reply += 1;
                self.timers
                    .insert((now + RETRY_MS, id, Task::Expire(conversation)));
                Next::Nothing
            }
        }
    }

    pub fn status(&self) -> Status {
        let p = &self.progress;
        if !p.scan_complete || p.asking > 0 || p.deferred > 0 {
            Status::Delivering
        } else if p.awaiting_reply > 0 {
            Status::AwaitingReplies
        } else {
            Status::Finished
        }
    }

    /// A plan that is not a `Send`: the customer's disposition now.
    fn settle(&mut self, id: CustomerId, plan: Plan) -> Next {
        match plan {
            Plan::AlreadySent(mark) => {
                self.set(id, Some(Disposition::Sent(mark.channel)));
                if mark.replied {
                    return Next::Replied;
                }
                let end = mark.at + self.spec.reply_window_ms;
                if self
                    .timers
                    .insert((end, id, Task::Expire(mark.conversation)))
                {
                    self.progress.awaiting_reply += 1;
                }
            }
            Plan::NotTargeted => self.set(id, None),
            Plan::Skip(s) => self.set(id, Some(Disposition::Skipped(s))),
            Plan::Defer { until, .. } => {
                self.set(id, Some(Disposition::Deferred));
                if self.ever_deferred.insert(id) {
                    self.progress.deferred_total += 1;
                }
                self.timers.insert((until, id, Task::Deliver));
            }
            Plan::Send { .. } => {
                self.set(id, Some(Disposition::Asking));
                return Next::Deliver;
            }
        }
        Next::Nothing
    }

    /// Moves the customer to disposition `d` (`None`: not targeted),
    /// keeping the counts.
    fn set(&mut self, id: CustomerId, d: Option<Disposition>) {
        let old = match d {
            Some(d) => self.dispositions.insert(id, d),
            None => self.dispositions.remove(&id),
        };
        if let Some(old) = old {
            self.count(old, -1);
        }
        if let Some(d) = d {
            self.count(d, 1);
        }
        self.progress.targeted = self.dispositions.len() as u64;
    }

    fn count(&mut self, d: Disposition, by: i64) {
        let p = &mut self.progress;
        let add = |n: &mut u64| *n = n.saturating_add_signed(by);
        match d {
            Disposition::Asking => add(&mut p.asking),
            Disposition::Deferred => add(&mut p.deferred),
            Disposition::Skipped(Skip::Consent) => add(&mut p.skipped_consent),
            Disposition::Skipped(Skip::Unreachable) => add(&mut p.skipped_unreachable),
            Disposition::Failed => add(&mut p.failed),
            Disposition::Sent(channel) => {
                add(&mut p.sent);
                match p.sent_by_channel.iter_mut().find(|(c, _)| *c == channel) {
                    Some((_, n)) => add(n),
                    None => {
                        p.sent_by_channel.push((channel, by.max(0) as u64));
                        p.sent_by_channel.sort();
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::campaign::{Audience, QuietHours, Zone};
    use crate::channel::{Identity, IdentityKind};
    use crate::customer::Attributes;
    use crate::ids::CampaignId;

    const NOON_UTC: TimeMs = 1_768_478_400_000; // 2026-01-15 12:00 UTC
    const HOUR: TimeMs = 3_600_000;

    fn spec() -> CampaignSpec {
        CampaignSpec {
            id: CampaignId::new("incident"),
            name: String::new(),
            audience: Audience {
                everyone: true,
                ..Default::default()
            },
            message: "heads up".into(),
            topic: "outage".into(),
            fallbacks: vec![Channel::Sms],
            ignore_preferred: true,
            quiet_hours: QuietHours::parse("q", "21:00", "08:00").expect("valid"),
            time_zone: Zone::UTC,
            follow_up: None,
            reply_window_ms: 24 * HOUR,
        }
    }

    fn person(tz: &str) -> (Attributes, Vec<Identity>) {
        let a = Attributes {
            time_zone: Some(tz.into()),
            ..Default::default()
        };
        (a, vec![Identity::new(IdentityKind::Phone, "+39 1")])
    }

    fn known<'a>(p: &'a (Attributes, Vec<Identity>), marks: &'a [CampaignMark]) -> Known<'a> {
        Known {
            attributes: &p.0,
            identities: &p.1,
            marks,
        }
    }

    fn sent(id: u64, at: TimeMs) -> Delivered {
        Delivered::Sent {
            mark: mark(id, at, false),
            follow_up: false,
        }
    }

    fn mark(id: u64, at: TimeMs, replied: bool) -> CampaignMark {
        CampaignMark {
            campaign: CampaignId::new("incident"),
            conversation: ConversationId {
                customer: CustomerId(id),
                number: 1,
            },
            channel: Channel::Sms,
            at,
            replied,
        }
    }

    #[test]
    fn a_deferred_customer_counts_once_and_goes_out_when_the_window_opens() {
        let mut run = CampaignRun::new(spec());
        let rome = person("Europe/Rome"); // 13:00
        let tokyo = person("Asia/Tokyo"); // 21:00
        assert_eq!(
            run.scanned(NOON_UTC, CustomerId(1), known(&rome, &[])),
            Next::Deliver
        );
        assert_eq!(
            run.scanned(NOON_UTC, CustomerId(2), known(&tokyo, &[])),
            Next::Nothing
        );
        run.scan_complete();
        let p = run.progress();
        assert_eq!((p.targeted, p.asking, p.deferred, p.sent), (2, 1, 1, 0));
        run.delivered(NOON_UTC, CustomerId(1), Some(sent(1, NOON_UTC)));
        assert_eq!(run.status(), Status::Delivering, "Tokyo is still deferred");
        // The window opens at 08:00 in Tokyo: eleven hours on.
        assert_eq!(run.next_due(), Some(NOON_UTC + 11 * HOUR));
        assert!(run.due(NOON_UTC + 11 * HOUR - 1).is_empty());
        let opens = NOON_UTC + 11 * HOUR;
        assert_eq!(run.due(opens), vec![(CustomerId(2), Task::Deliver)]);
        run.delivered(opens, CustomerId(2), Some(sent(2, opens)));
        let p = run.progress();
        assert_eq!(
            (p.targeted, p.sent, p.deferred, p.deferred_total, p.asking),
            (2, 2, 0, 1, 0)
        );
        assert_eq!(p.sent_by_channel, vec![(Channel::Sms, 2)]);
        assert_eq!(run.status(), Status::AwaitingReplies);
        assert_eq!(p.awaiting_reply, 2);
    }

    #[test]
    fn reply_windows_end_with_a_close_or_a_count() {
        let mut run = CampaignRun::new(spec());
        let rome = person("Europe/Rome");
        run.scanned(NOON_UTC, CustomerId(1), known(&rome, &[]));
        run.scanned(NOON_UTC, CustomerId(2), known(&rome, &[]));
        run.scan_complete();
        run.delivered(NOON_UTC, CustomerId(1), Some(sent(1, NOON_UTC)));
        run.delivered(NOON_UTC, CustomerId(2), Some(sent(2, NOON_UTC)));
        let end = NOON_UTC + 24 * HOUR;
        let due = run.due(end);
        assert_eq!(due.len(), 2);
        let conv = |n| ConversationId {
            customer: CustomerId(n),
            number: 1,
        };
        run.expired(end, CustomerId(1), conv(1), Some(Expired::Closed));
        assert_eq!(
            run.expired(
                end,
                CustomerId(2),
                conv(2),
                Some(Expired::Kept { replied: true })
            ),
            Next::Replied
        );
        assert_eq!(run.progress().closed_unanswered, 1);
        assert_eq!(run.status(), Status::Finished);
    }

    #[test]
    fn a_rescan_counts_what_the_marks_say() {
        // The campaign's node died after reaching customer 1 (who replied)
        // and customer 2; the new run meets their marks.
        let mut run = CampaignRun::new(spec());
        let rome = person("Europe/Rome");
        let m1 = [mark(1, NOON_UTC - HOUR, true)];
        let m2 = [mark(2, NOON_UTC - HOUR, false)];
        assert_eq!(
            run.scanned(NOON_UTC, CustomerId(1), known(&rome, &m1)),
            Next::Replied
        );
        assert_eq!(
            run.scanned(NOON_UTC, CustomerId(2), known(&rome, &m2)),
            Next::Nothing
        );
        run.scan_complete();
        let p = run.progress();
        assert_eq!((p.targeted, p.sent, p.awaiting_reply), (2, 2, 1));
        assert_eq!(run.next_due(), Some(NOON_UTC - HOUR + 24 * HOUR));
    }

    #[test]
    fn failed_asks_are_retried_then_counted() {
        let mut run = CampaignRun::new(spec());
        let rome = person("Europe/Rome");
        run.scanned(NOON_UTC, CustomerId(1), known(&rome, &[]));
        run.scan_complete();
        let mut now = NOON_UTC;
        for attempt in 1..MAX_ATTEMPTS {
            run.delivered(now, CustomerId(1), None);
            assert_eq!(run.progress().failed, 0, "attempt {attempt}");
            now += RETRY_MS;
            assert_eq!(run.due(now), vec![(CustomerId(1), Task::Deliver)]);
        }
        run.delivered(now, CustomerId(1), None);
        let p = run.progress();
        assert_eq!((p.failed, p.asking, p.targeted), (1, 0, 1));
        assert_eq!(run.status(), Status::Finished);
        // Answers that change the plan move the count.
        let mut run = CampaignRun::new(spec());
        run.scanned(NOON_UTC, CustomerId(1), known(&rome, &[]));
        run.delivered(
            NOON_UTC,
            CustomerId(1),
            Some(Delivered::Not(Plan::Skip(Skip::Consent))),
        );
        run.scanned(NOON_UTC, CustomerId(2), known(&rome, &[]));
        run.delivered(
            NOON_UTC,
            CustomerId(2),
            Some(Delivered::Not(Plan::NotTargeted)),
        );
        let p = run.progress();
        assert_eq!((p.targeted, p.skipped_consent, p.asking), (1, 1, 0));
    }
}
