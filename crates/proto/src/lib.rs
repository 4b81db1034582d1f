//! The public gRPC contract of Centralino, generated from `proto/centralino/v1`.
//!
//! The `.proto` files are the contract for gateways and desktops written in
//! any language; this crate only compiles them. Conversion into domain types
//! (and so all input validation) happens in `centralino-server`, never here.

/// Version 1 of the contract: package `centralino.v1`.
pub mod v1 {
    #![allow(clippy::large_enum_variant, clippy::doc_lazy_continuation)]
    tonic::include_proto!("centralino.v1");

    /// The encoded file descriptor set, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("centralino_v1_descriptor");
}

/// Node-to-node messages (not a public contract): package
/// `centralino.internal.v1`.
pub mod internal {
    tonic::include_proto!("centralino.internal.v1");
}
