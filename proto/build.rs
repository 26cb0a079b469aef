//! Build step: compile `quiver/meta/v1/meta.proto` with the pure-Rust `protox`
//! (no `protoc` needed on CI) and generate tonic client and server code.

use std::error::Error;

const PROTO: &str = "quiver/meta/v1/meta.proto";

fn main() -> Result<(), Box<dyn Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    let fds = protox::compile([PROTO], ["."])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}
