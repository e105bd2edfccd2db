//! Generates the protobuf code (prost) of the two schemas the runtime reads: the repository's
//! `proto/foundry/v1/preprocessor.proto` (the `.bin`, single source of truth shared with the
//! Python and JavaScript runtimes) and `proto/onnx_subset.proto` (the parts of ONNX it reads).
use std::path::PathBuf;

fn main() {
    let crate_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let repo_proto = crate_dir.join("../../proto");
    let preprocessor = repo_proto.join("foundry/v1/preprocessor.proto");
    let onnx = crate_dir.join("proto/onnx_subset.proto");
    for file in [&preprocessor, &onnx] {
        println!("cargo:rerun-if-changed={}", file.display());
    }
    prost_build::Config::new()
        .compile_protos(&[preprocessor, onnx], &[repo_proto, crate_dir.join("proto")])
        .expect("protoc could not compile the schemas (apt-get install protobuf-compiler)");
}
