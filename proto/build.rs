//! Build step: compile `quiver/meta/v1/meta.proto` and
//! `quiver/raft/v1/raft.proto` with the pure-Rust `protox` (no `protoc`
//! needed on CI) and generate tonic client and server code.

use std::error::Error;

const PROTOS: [&str; 2] = ["quiver/meta/v1/meta.proto", "quiver/raft/v1/raft.proto"];

fn main() -> Result<(), Box<dyn Error>> {
    for proto in PROTOS {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(PROTOS, ["."])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .compile_fds(fds)?;
    Ok(())
}
