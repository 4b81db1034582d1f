//! Compiles proto/centralino/v1 with a vendored protoc, so that building
//! needs nothing but the Rust toolchain.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    // SAFETY: build scripts are single-threaded; nothing else reads the
    // environment concurrently.
    unsafe { std::env::set_var("PROTOC", protoc) };

    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = [
        "v1/common",
        "v1/gateway",
        "v1/agent",
        "v1/admin",
        "internal/v1/node",
    ]
    .map(|f| root.join(format!("centralino/{f}.proto")));
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    let descriptor = PathBuf::from(std::env::var("OUT_DIR")?).join("centralino_v1_descriptor.bin");
    tonic_prost_build::configure()
        .file_descriptor_set_path(descriptor)
        .compile_protos(&files, &[root])?;
    Ok(())
}
