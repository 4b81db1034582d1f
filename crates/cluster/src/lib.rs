//! The cluster layer: coordination between nodes, and the node that hosts
//! the actors.
//!
//! [`Coordination`] is the interface the cluster coordinates through:
//! membership (nodes under leases), ownership (exactly one owner per actor,
//! with a fencing token), and the durable journal of active conversations
//! (every write checked against the writer's fencing token).
//! [`MemoryCoordination`] implements it in memory for `centralino dev`,
//! standalone nodes and unit tests; the etcd implementation passes the same
//! [`contract`] suite.
//!
//! Closed conversations leave the journal for the history [`Archive`]
//! ([`FileArchive`] for clusters, [`MemoryArchive`] for standalone nodes).
//!
//! [`Node`] wires a coordination backend, the archive, the journal adapter
//! and the actors together, and owns the node's ordered shutdown.

pub mod archive;
pub mod campaigns;
pub mod contract;
pub mod coordination;
pub mod error;
pub mod etcd;
pub mod group;
pub mod journal;
pub mod memory;
pub mod metrics;
pub mod node;
pub mod peer;
pub mod topology;

pub use archive::{Archive, FileArchive, MemoryArchive};
pub use coordination::{ActorKey, Coordination, MemberEvent, NodeInfo};
pub use error::{ClusterError, Result};
pub use etcd::EtcdCoordination;
pub use memory::MemoryCoordination;
pub use node::{Mode, Node, NodeOptions};
