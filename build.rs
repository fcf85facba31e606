//! Generates Rust types from the protobuf schemas under `proto/`.
//!
//! protox parses the schemas in pure Rust, so no `protoc` binary is needed.

fn main() {
    if let Err(error) = compile_criu_images() {
        panic!("failed to compile proto/criu-images.proto: {error}");
    }
}

/// Compiles the CRIU image schema into `$OUT_DIR/criu_images.rs`.
fn compile_criu_images() -> Result<(), Box<dyn std::error::Error>> {
    const SCHEMA: &str = "proto/criu-images.proto";
    println!("cargo:rerun-if-changed={SCHEMA}");

    let descriptors = protox::compile([SCHEMA], ["proto"])?;
    prost_build::Config::new()
        .type_attribute(
            ".",
            "#[allow(clippy::doc_markdown, clippy::enum_variant_names)]",
        )
        .compile_fds(descriptors)?;
    Ok(())
}
