//! Compiles `proto/synevi.proto` with protox, a protobuf compiler written in Rust, so a fresh
//! clone builds with `cargo build` alone: no `protoc` needs to be installed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/synevi.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_build::configure()
        // `bytes` fields decode into `Bytes` slices of the frame's buffer: timestamp lists
        // are decoded from them in place, without a copy. Payloads and keys, which outlive
        // the message, are copied out (`wire::owned`), or they would pin the frame.
        .bytes(["."])
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
