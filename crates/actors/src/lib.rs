//! The actors: thin, supervised owners of the core's state.
//!
//! - one [`customer::CustomerActor`] per customer: owns the [`Customer`]
//!   (identities, the open conversation and its history), persists every
//!   change through the [`Journal`] port before acknowledging it;
//! - one [`agent::AgentActor`] per logged-in agent: owns the desktop
//!   session and forwards the agent's commands to whoever decides them;
//! - one [`router::RouterActor`]: owns the [`Router`] and so every pairing
//!   decision; the single writer of agent capacity (invariant 1).
//!
//! Each actor turns a message into one core call and carries out the
//! returned decisions (persist, send, reply); the decisions themselves are
//! made in `centralino-core`.
//!
//! Supervision: the [`supervisor::Supervisor`] actor is the parent of every
//! customer and agent actor. When one fails it is dropped from the
//! [`Hub`]; the next message for that customer spawns it again from the
//! journal. The router actor is linked to the supervisor too; its failure
//! is fatal for the node (it holds no durable state, and a node without a
//! router must not keep serving).
//!
//! Message discipline that keeps this deadlock-free: the router never
//! *calls* another actor, it only casts; customers and agents may call the
//! router.
//!
//! [`Customer`]: centralino_core::customer::Customer
//! [`Router`]: centralino_core::Router

pub mod agent;
pub mod clock;
pub mod cluster;
pub mod customer;
pub mod error;
pub mod hub;
pub mod journal;
pub mod metrics;
pub mod router;
pub mod standalone;
pub mod supervisor;
pub mod wire;

pub use cluster::{Claim, Cluster, Home};
pub use error::{ActorError, Result};
pub use hub::{Delivery, DesktopEvent, Hub};
pub use journal::{Journal, JournalError};
pub use standalone::Standalone;
