//! The actors: thin, supervised owners of the core's state.
//!
//! - one [`customer::CustomerActor`] per customer: owns the [`Customer`]
//!   (identities, the open conversation and its history), persists every
//!   change through the [`Journal`] port before acknowledging it;
//! - one [`agent::AgentActor`] per logged-in agent: owns the desktop
//!   session and forwards the agent's commands to whoever decides them;
//! - one [`router::RouterActor`] per cluster, on the node that owns it: owns
//!   the [`Router`] and so every pairing decision; the single writer of
//!   agent capacity (invariant 1).
//!
//! Actors are addressed by id through the [`Hub`], which asks the
//! [`Cluster`] port where each lives and carries [`wire`] requests to other
//! nodes; [`Standalone`] is the one-node port.
//!
//! Each actor turns a message into one core call and carries out the
//! returned decisions (persist, send, reply); the decisions themselves are
//! made in `centralino-core`.
//!
//! Supervision: the [`supervisor::Supervisor`] actor is the parent of every
//! customer and agent actor. When one fails the hub notices it is stopped;
//! the next message for that customer claims and spawns it again from the
//! journal. The router actor is linked to the supervisor too; its failure
//! is fatal for the node (a node whose router died must not keep serving).
//!
//! Message discipline that keeps this deadlock-free, on one node or across
//! nodes: the router never *asks* another actor, it only tells (through the
//! hub's delivery lanes, never waiting on the network); customers and agents
//! may ask the router.
//!
//! [`Customer`]: centralino_core::customer::Customer
//! [`Router`]: centralino_core::Router

pub mod agent;
pub mod campaign;
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
pub mod sync;
pub mod wire;

pub use cluster::{Claim, Cluster, Home};
pub use error::{ActorError, Result};
pub use hub::{Delivery, DesktopEvent, Hub};
pub use journal::{Journal, JournalError};
pub use standalone::Standalone;
