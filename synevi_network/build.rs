//! Compiles `proto/synevi.proto` with protox, a protobuf compiler written in Rust, so a fresh
//! clone builds with `cargo build` alone: no `protoc` needs to be installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/synevi.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_build::configure()
        // `bytes` fields decode into `Bytes`, sharing the frame's buffer instead of copying
        // every payload and key.
        .bytes(["."])
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
