//! Compiles proto/ with protox (no system protoc) and writes the descriptor set that gRPC
//! server reflection serves. The server stubs are generated only with the `server` feature:
//! an application using the SDK alone gets the client side only.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    if std::env::var_os("CARGO_FEATURE_CLIENT").is_none() {
        return Ok(());
    }
    let fds = protox::compile(["chainlog/v1/chainlog.proto"], ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("chainlog_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_server(std::env::var_os("CARGO_FEATURE_SERVER").is_some())
        // Records arrive by the thousand on a replica: kept as slices of the receive buffer.
        .bytes(".chainlog.v1.ReplicatedTx.record")
        .compile_fds(fds)?;
    // The failover coordinator's client of etcd (a server's, never the SDK's).
    if std::env::var_os("CARGO_FEATURE_SERVER").is_some() {
        let etcd = protox::compile(["etcd/rpc.proto"], ["proto"])?;
        tonic_prost_build::configure()
            .build_server(false)
            .compile_fds(etcd)?;
    }
    Ok(())
}
