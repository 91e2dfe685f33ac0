//! Compiles the agent API (`proto/vmrun/agent/v1/agent.proto`) with the
//! vendored protoc, generating the client and/or server half depending on the
//! crate's `client` and `server` features.

use std::env;
use std::io;

const PROTO: &str = "proto/vmrun/agent/v1/agent.proto";

fn main() -> io::Result<()> {
    // No system protoc: use the one shipped in protoc-bin-vendored, so the
    // build works the same on every machine.
    let protoc = protoc_bin_vendored::protoc_bin_path().map_err(io::Error::other)?;
    // Build scripts run single-threaded, so changing the environment is fine.
    env::set_var("PROTOC", protoc);

    let client = env::var_os("CARGO_FEATURE_CLIENT").is_some();
    let server = env::var_os("CARGO_FEATURE_SERVER").is_some();

    tonic_prost_build::configure()
        .build_client(client)
        .build_server(server)
        // The client makes its own Channel (hybrid vsock), so the generated
        // `connect(url)` helpers would only pull in unused transport code.
        .build_transport(false)
        // stdio chunks are handed between tasks without copying.
        .bytes(".vmrun.agent.v1")
        .compile_protos(&[PROTO], &["proto"])
}
