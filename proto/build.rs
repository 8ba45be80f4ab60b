//! Generates the admin API's messages, servers and clients with the system `protoc`, and the
//! file descriptor set that the reflection service serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = proto_files(std::path::Path::new("ferry"))?;
    println!("cargo:rerun-if-changed=ferry");
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("ferry_descriptor.bin"))
        .compile_protos(&protos, &[PathBuf::from(".")])
        .map_err(|e| {
            format!("compiling the protos (is protoc installed? scripts/test installs it): {e}")
        })?;
    Ok(())
}

/// Every `.proto` under `dir`, sorted (so the generated code does not depend on directory order).
fn proto_files(dir: &std::path::Path) -> std::io::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            found.extend(proto_files(&path)?);
        } else if path.extension().is_some_and(|e| e == "proto") {
            found.push(path);
        }
    }
    found.sort();
    Ok(found)
}
