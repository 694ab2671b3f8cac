//! Compiles `berth/v1/*.proto` with protox (pure Rust), so no system protoc is needed.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "berth/v1/types.proto",
    "berth/v1/sessions.proto",
    "berth/v1/ports.proto",
    "berth/v1/control_plane.proto",
    "berth/v1/worker.proto",
    "berth/v1/sandboxes.proto",
    "berth/v1/admin.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // read when the script runs, not when it was compiled: one compiled build script
    // may serve several checkouts that share a target directory
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={}", root.join(proto).display());
    }
    let descriptors = protox::compile(PROTOS, [&root])?;
    // the encoded set feeds the API port's server reflection (`FILE_DESCRIPTOR_SET`)
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("berth_descriptor.bin"),
        prost::Message::encode_to_vec(&descriptors),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Unimplemented calls answer UNIMPLEMENTED instead of failing to compile, so a
        // service can grow one call at a time.
        .generate_default_stubs(true)
        .compile_fds(descriptors)?;
    Ok(())
}
