//! The Rust runtime of Model Foundry micro-models.
//!
//! A micro-model is two files: `<task>_preprocessor.bin` (protobuf `foundry.v1.Preprocessor`:
//! the text spec settings, vocabulary, idf, labels, threshold) and `<task>_classifier.onnx` (a
//! linear classifier exported by skl2onnx, optionally calibrated). This crate reads both,
//! validates them as strictly as the Python and JavaScript runtimes, and answers like them:
//!
//! ```no_run
//! let model = foundry_rt::MicroModel::load("is_question", "models")?;
//! let answer = model.predict("今天天气怎么样？");
//! println!("{} {:?} {}", model.labels()[answer.label], answer.probabilities, answer.confident);
//! # Ok::<(), foundry_rt::ArtifactError>(())
//! ```
//!
//! The text spec is docs/preprocessor-spec.md; the ONNX graphs it reads are listed in
//! [`graph`]. No ONNX Runtime: the classifier's weights are read from the `.onnx` (kept as
//! its float32 values, one row of every class's weight per vocabulary n-gram) and summed per
//! text in float64 ([`kernel`]).

pub mod conformance;
pub mod error;
pub mod graph;
pub mod kernel;
pub mod model;
pub mod proto;
pub mod pyjson;
pub mod textspec;
pub mod unicode;
pub mod vocabulary;

pub use error::ArtifactError;
pub use model::{MicroModel, Prediction, Scratch};
