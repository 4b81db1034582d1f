//! The routing core of Centralino: pure, synchronous, deterministic.
//!
//! Everything that decides lives here: who a customer is ([`directory`]),
//! what their conversation holds and which state it is in ([`customer`],
//! [`history`]), who may serve it and how urgent it is ([`queue`],
//! [`priority`]), and which agent gets it ([`router`]). Inputs and the
//! current time go in, decisions come out.
//!
//! Architecture invariant: this crate does no I/O, reads no clock, spawns
//! nothing and depends on no async runtime. Time is a number the caller
//! passes ([`TimeMs`]). That is what makes the property tests exhaustive,
//! the benchmark honest, and what-if replay exact.

pub mod agent;
pub mod campaign;
pub mod channel;
pub mod customer;
pub mod directory;
pub mod error;
pub mod explain;
pub mod history;
pub mod ids;
pub mod kpi;
pub mod occupancy;
pub mod priority;
pub mod queue;
pub mod router;
pub mod rules;
pub mod time;
pub mod wait;

pub use agent::{AgentProfile, AgentState, Skill};
pub use channel::{Channel, Identity, IdentityKind};
pub use error::{CoreError, Result};
pub use ids::{AgentId, CampaignId, ConversationId, CustomerId, OfferId, QueueId};
pub use router::{Input, Output, Router, RouterConfig};
pub use time::{DurationMs, TimeMs};
