//! Identifiers. External ids (agents, queues) are cheap-to-clone strings;
//! ids Centralino assigns (customers, conversations, offers) are numbers with
//! a stable textual form that the server parses back.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(Arc<str>);

        impl $name {
            pub fn new(s: impl AsRef<str>) -> Self {
                Self(Arc::from(s.as_ref()))
            }
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), self.0)
            }
        }
        impl From<&str> for $name {
            fn from(s: &str) -> Self {
                Self::new(s)
            }
        }
    };
}

string_id!(
    /// An agent, named by the contact center (e.g. the employee id).
    AgentId
);
string_id!(
    /// A queue, named by the operator who defines it.
    QueueId
);
string_id!(
    /// An outbound campaign, named by the operator who starts it.
    CampaignId
);

/// A customer: one per person, whatever the channel. Text form `cu-<n>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct CustomerId(pub u64);

/// A conversation of one customer. Text form `cu-<n>.<k>`: the customer id
/// is part of the conversation id, so any node can tell which customer actor
/// owns a conversation without a lookup.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct ConversationId {
    pub customer: CustomerId,
    pub number: u32,
}

/// An offer of one conversation to one agent. Text form `of-<n>`.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct OfferId(pub u64);

impl fmt::Display for CustomerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cu-{}", self.0)
    }
}
impl fmt::Display for ConversationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.customer, self.number)
    }
}
impl fmt::Display for OfferId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "of-{}", self.0)
    }
}

/// Checks a name an operator chooses for a queue or a campaign: 1 to 64
/// characters of `[a-z0-9_-]`, so that it is safe in keys, paths and
/// metric labels; `field` names the request field for the error.
pub fn check_name(field: &str, id: &str) -> crate::error::Result<()> {
    let ok = (1..=64).contains(&id.len())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(crate::error::CoreError::invalid(
            field,
            format!("must be 1..64 characters of [a-z0-9_-], got {id:?}"),
        ))
    }
}

/// Parse error for the textual ids; says what form was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected}, got {got:?}")]
pub struct ParseIdError {
    pub expected: &'static str,
    pub got: String,
}

impl FromStr for CustomerId {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_prefix("cu-")
            .and_then(|n| n.parse().ok())
            .map(CustomerId)
            .ok_or_else(|| ParseIdError {
                expected: "a customer id like cu-42",
                got: s.to_owned(),
            })
    }
}
impl FromStr for ConversationId {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseIdError {
            expected: "a conversation id like cu-42.1",
            got: s.to_owned(),
        };
        let (customer, number) = s.rsplit_once('.').ok_or_else(err)?;
        Ok(ConversationId {
            customer: customer.parse().map_err(|_| err())?,
            number: number.parse().map_err(|_| err())?,
        })
    }
}
impl FromStr for OfferId {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.strip_prefix("of-")
            .and_then(|n| n.parse().ok())
            .map(OfferId)
            .ok_or_else(|| ParseIdError {
                expected: "an offer id like of-7",
                got: s.to_owned(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn textual_ids_round_trip() {
        let c = ConversationId {
            customer: CustomerId(42),
            number: 3,
        };
        assert_eq!(c.to_string(), "cu-42.3");
        assert_eq!("cu-42.3".parse::<ConversationId>(), Ok(c));
        assert_eq!("of-9".parse::<OfferId>(), Ok(OfferId(9)));
        assert!("cu-x.1".parse::<ConversationId>().is_err());
        assert!("42".parse::<CustomerId>().is_err());
    }
}
