//! Channels and identities.
//!
//! Every channel costs a share of an agent's capacity of 100 (voice takes it
//! all, chats and emails mix) and has a default service-level target: the
//! time within which a contact on it should be answered.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A contact channel.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub enum Channel {
    Voice,
    Chat,
    Email,
    Sms,
    WhatsApp,
    Social,
    App,
}

impl Channel {
    pub const ALL: [Channel; 7] = [
        Channel::Voice,
        Channel::Chat,
        Channel::Email,
        Channel::Sms,
        Channel::WhatsApp,
        Channel::Social,
        Channel::App,
    ];
    pub const COUNT: usize = Self::ALL.len();

    /// Dense index, for per-channel arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Share of an agent's capacity (out of [`FULL_CAPACITY`]) that one
    /// conversation on this channel takes.
    pub const fn cost(self) -> u16 {
        match self {
            Channel::Voice => 100,
            Channel::Chat | Channel::WhatsApp | Channel::App => 30,
            Channel::Email | Channel::Social => 20,
            Channel::Sms => 10,
        }
    }

    /// Default service-level target: answer within this many milliseconds.
    pub const fn default_sla_ms(self) -> u64 {
        match self {
            Channel::Voice => 20_000,
            Channel::Chat | Channel::App => 60_000,
            Channel::WhatsApp => 5 * 60_000,
            Channel::Sms => 30 * 60_000,
            Channel::Social => 15 * 60_000,
            Channel::Email => 4 * 3_600_000,
        }
    }

    /// The channel named `name` (as [`Channel::name`] spells it, any case).
    pub fn from_name(name: &str) -> Option<Channel> {
        Channel::ALL
            .into_iter()
            .find(|c| c.name().eq_ignore_ascii_case(name))
    }

    /// Lower-case name used in metrics labels, logs and KPIs.
    pub const fn name(self) -> &'static str {
        match self {
            Channel::Voice => "voice",
            Channel::Chat => "chat",
            Channel::Email => "email",
            Channel::Sms => "sms",
            Channel::WhatsApp => "whatsapp",
            Channel::Social => "social",
            Channel::App => "app",
        }
    }
}

impl fmt::Display for Channel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The capacity every agent has at most: one voice call, or a mix of others.
pub const FULL_CAPACITY: u16 = 100;

/// The cheapest channel's cost: an agent with less free capacity than this
/// can take nothing more.
pub const MIN_COST: u16 = 10;

/// What kind of address an identity is.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub enum IdentityKind {
    Phone,
    Email,
    ChatSession,
    SocialHandle,
    AppUser,
}

/// One way to reach one person.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Serialize, Deserialize)]
pub struct Identity {
    pub kind: IdentityKind,
    /// Normalised address (trimmed; e-mail lower-cased).
    pub address: String,
}

impl Identity {
    /// Builds an identity, normalising the address so that the same person
    /// is recognised whatever the gateway's spelling.
    pub fn new(kind: IdentityKind, address: &str) -> Self {
        let address = address.trim();
        let address = match kind {
            IdentityKind::Email | IdentityKind::SocialHandle => address.to_lowercase(),
            IdentityKind::Phone => address
                .chars()
                .filter(|c| !c.is_whitespace() && *c != '-')
                .collect(),
            IdentityKind::ChatSession | IdentityKind::AppUser => address.to_owned(),
        };
        Identity { kind, address }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}:{}", self.kind, self.address)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn voice_excludes_everything_and_chats_mix() {
        assert_eq!(Channel::Voice.cost(), FULL_CAPACITY);
        assert!(3 * Channel::Chat.cost() <= FULL_CAPACITY);
        assert!(Channel::ALL.iter().all(|c| c.cost() >= MIN_COST));
    }

    #[test]
    fn identities_are_normalised() {
        assert_eq!(
            Identity::new(IdentityKind::Email, " Mario@Example.COM "),
            Identity::new(IdentityKind::Email, "mario@example.com")
        );
        assert_eq!(
            Identity::new(IdentityKind::Phone, "+39 340-123").address,
            "+39340123"
        );
    }
}
