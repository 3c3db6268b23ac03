//! Compiles `proto/data.proto` with protox (pure Rust), so the build needs no system protoc.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = "../../proto";
    println!("cargo:rerun-if-changed={proto_dir}/data.proto");
    let descriptors = protox::compile(["data.proto"], [proto_dir])?;
    prost_build::Config::new().compile_fds(descriptors)?;
    Ok(())
}
