fn main() {
    compile_daemon_proto();
}

/// Generates the gRPC client and server of `ckpt daemon` from proto/ckpt.proto.
///
/// protox parses the file in Rust, so building needs no `protoc`.
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
