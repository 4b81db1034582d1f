//! The identity directory: which customer an identity belongs to.
//!
//! Resolution is real time, on every contact. An identity seen for the first
//! time creates a customer, unless the gateway links it to identities it has
//! verified belong to the same person, in which case it joins that customer.

use rustc_hash::FxHashMap;

use crate::channel::Identity;
use crate::ids::CustomerId;

/// The result of resolving a contact's identities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolution {
    pub customer: CustomerId,
    /// A new customer was created.
    pub created: bool,
    /// Identities newly linked to `customer`.
    pub linked: Vec<Identity>,
    /// Linked identities that already belong to another customer: the two
    /// are the same person, to be merged.
    pub conflicts: Vec<(Identity, CustomerId)>,
    /// Identities of a new customer that are not linked yet: the
    /// customer's first durable write links them (a cluster creates a
    /// customer that way; this directory links at once and leaves it empty).
    pub pending: Vec<Identity>,
}

/// Identity → customer, with customer ids allocated here.
#[derive(Clone, Debug, Default)]
pub struct Directory {
    by_identity: FxHashMap<Identity, CustomerId>,
    next: u64,
}

impl Directory {
    pub fn lookup(&self, identity: &Identity) -> Option<CustomerId> {
        self.by_identity.get(identity).copied()
    }

    /// Resolves `identity` (and links `also`) to one customer.
    pub fn resolve(&mut self, identity: &Identity, also: &[Identity]) -> Resolution {
        let known = std::iter::once(identity)
            .chain(also)
            .find_map(|i| self.lookup(i));
        let (customer, created) = match known {
            Some(c) => (c, false),
            None => {
                self.next += 1;
                (CustomerId(self.next), true)
            }
        };
        let mut linked = Vec::new();
        let mut conflicts = Vec::new();
        for i in std::iter::once(identity).chain(also) {
            match self.by_identity.get(i) {
                None => {
                    self.by_identity.insert(i.clone(), customer);
                    if !(created && i == identity) {
                        linked.push(i.clone());
                    }
                }
                Some(&other) if other != customer => conflicts.push((i.clone(), other)),
                Some(_) => {}
            }
        }
        Resolution {
            customer,
            created,
            linked,
            conflicts,
            pending: Vec::new(),
        }
    }

    /// Whether this directory ever issued `id`.
    pub fn issued(&self, id: CustomerId) -> bool {
        id.0 >= 1 && id.0 <= self.next
    }

    pub fn len(&self) -> usize {
        self.by_identity.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_identity.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::IdentityKind;

    #[test]
    fn a_linked_phone_resolves_to_the_chat_customer() {
        let mut d = Directory::default();
        let chat = Identity::new(IdentityKind::ChatSession, "s1");
        let phone = Identity::new(IdentityKind::Phone, "+391");
        let first = d.resolve(&chat, &[]);
        assert!(first.created);
        let second = d.resolve(&phone, std::slice::from_ref(&chat));
        assert_eq!(second.customer, first.customer);
        assert_eq!(second.linked, vec![phone.clone()]);
        assert_eq!(d.lookup(&phone), Some(first.customer));
        let other = d.resolve(&Identity::new(IdentityKind::Email, "x@y.z"), &[]);
        assert_ne!(other.customer, first.customer);
        let clash = d.resolve(&Identity::new(IdentityKind::Email, "x@y.z"), &[phone]);
        assert_eq!(clash.conflicts.len(), 1);
    }
}
