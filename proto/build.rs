//! Generates the admin API's messages, servers and clients with the system `protoc`, and the
//! file descriptor set that the reflection service serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=ferry/admin/v1/admin.proto");
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("ferry_descriptor.bin"))
        .compile_protos(&["ferry/admin/v1/admin.proto"], &["."])
        .map_err(|e| {
            format!("compiling the protos (is protoc installed? scripts/test installs it): {e}")
        })?;
    Ok(())
}
