//! Compiles the public contract in `proto/` with protox (pure Rust, so no
//! system `protoc` is needed) and writes both the generated Rust code and the
//! encoded file descriptor set that server reflection serves.

use std::{env, error::Error, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn Error>> {
    let protos = ["iot/jobs/v1/gateway.proto"];
    println!("cargo:rerun-if-changed=proto");

    let fds = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("iot_jobs_v1_descriptor.bin"),
        fds.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // google.rpc.Status is tonic-types' own type, so details built with
        // tonic_types::ErrorDetails can be placed in it directly.
        .extern_path(".google.rpc.Status", "::tonic_types::pb::Status")
        // Ordered maps encode the same way every time, so a job's encoding
        // can identify its state (watch event versions).
        .btree_map(".")
        .compile_fds(fds)?;
    Ok(())
}
