//! Compiles proto/ with protox (no system protoc) and writes the descriptor set that gRPC
//! server reflection serves.

use prost::Message;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["chainlog/v1/chainlog.proto"], ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("chainlog_descriptor.bin"), fds.encode_to_vec())?;
    // Records arrive by the thousand on a replica: kept as slices of the receive buffer.
    tonic_prost_build::configure()
        .bytes(".chainlog.v1.ReplicatedTx.record")
        .compile_fds(fds)?;
    Ok(())
}
