//! Compiles `protos/apps.proto` (at the workspace root) in pure Rust with protox: no protoc needed.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../../protos/apps.proto");
    let fds = protox::compile(["apps.proto"], ["../../protos"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("apps_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
