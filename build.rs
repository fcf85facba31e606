//! Generates Rust types from the protobuf schemas under `proto/`.
//!
//! protox parses the schemas in pure Rust, so no `protoc` binary is needed.

fn main() {
    if let Err(error) = compile_criu_images() {
        panic!("failed to compile proto/criu-images.proto: {error}");
    }
    compile_daemon_proto();
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

/// Generates the gRPC client and server of `ckpt daemon` from proto/ckpt.proto.
fn compile_daemon_proto() {
    println!("cargo:rerun-if-changed=proto/ckpt.proto");
    let descriptors = match protox::compile(["proto/ckpt.proto"], ["proto"]) {
        Ok(descriptors) => descriptors,
        Err(err) => panic!("failed to parse proto/ckpt.proto: {err}"),
    };
    if let Err(err) = tonic_prost_build::configure().compile_fds(descriptors) {
        panic!("failed to generate code from proto/ckpt.proto: {err}");
    }
}
