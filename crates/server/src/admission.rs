//! Admission: how many contacts a node takes in at once.
//!
//! A contact the node accepts costs it work for its whole way (identity,
//! the customer's actor, a journal commit, routing, the offer), and under
//! more load than the cluster can route every stage queues it. Without a
//! bound an overloaded node queues without limit: every contact waits
//! longer than its gateway's deadline, the work done for it is wasted, and
//! the node routes nothing at all. So `SubmitContact` and `HandOver` enter
//! here first; past `max_contacts_in_flight` a contact is refused at once
//! with RESOURCE_EXHAUSTED (the gateway backs off and retries, here or on
//! another node), and those admitted keep going at the rate the cluster
//! can route.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tonic::Status;

/// The bound on contacts in flight on one node (see the module docs).
#[derive(Clone, Debug)]
pub struct Admission {
    in_flight: Arc<AtomicUsize>,
    /// 0: no bound.
    limit: usize,
}

/// A contact admitted; it leaves when this is dropped.
#[derive(Debug)]
pub struct Admitted(Arc<AtomicUsize>);

impl Admission {
    /// At most `limit` contacts at once; 0 admits every contact.
    pub fn new(limit: usize) -> Admission {
        Admission {
            in_flight: Arc::new(AtomicUsize::new(0)),
            limit,
        }
    }

    /// Admits a contact, or refuses it naming the bound and what to do.
    pub fn enter(&self) -> Result<Admitted, Status> {
        let before = self.in_flight.fetch_add(1, Ordering::AcqRel);
        let admitted = Admitted(self.in_flight.clone());
        if self.limit > 0 && before >= self.limit {
            crate::metrics::contact_refused();
            return Err(Status::resource_exhausted(format!(
                "node overloaded: {} contacts in flight already (node.max_contacts_in_flight); retry after a backoff, here or through another node",
                self.limit
            )));
        }
        Ok(admitted)
    }

    /// Contacts in flight now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contacts_past_the_bound_are_refused_until_one_leaves() {
        let a = Admission::new(2);
        let first = a.enter().expect("first");
        let second = a.enter().expect("second");
        let refused = a.enter().expect_err("the third is over the bound");
        assert_eq!(refused.code(), tonic::Code::ResourceExhausted);
        assert!(
            refused.message().contains("node.max_contacts_in_flight"),
            "the refusal names the setting: {}",
            refused.message()
        );
        assert_eq!(a.in_flight(), 2, "a refusal leaves nothing behind");
        drop(first);
        let third = a.enter().expect("room again once one left");
        assert_eq!(a.in_flight(), 2);
        drop((second, third));
        assert_eq!(a.in_flight(), 0);
    }

    #[test]
    fn no_bound_admits_everything() {
        let a = Admission::new(0);
        let held: Vec<Admitted> = (0..10_000).map(|_| a.enter().expect("admitted")).collect();
        assert_eq!(a.in_flight(), 10_000);
        drop(held);
        assert_eq!(a.in_flight(), 0);
    }
}
