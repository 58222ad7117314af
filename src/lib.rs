//! ckptpilot: pre-flight checks and conversions for Hugging Face safetensors checkpoints headed for
//! vLLM and vLLM-Ascend (rules of vLLM 0.33.0).
//!
//! The pipeline: [`checkpoint`] (resolve, map, validate) → [`audit`] (findings) → [`render`].

pub mod arch;
pub mod audit;
pub mod bench;
pub mod checkpoint;
pub mod cli;
pub mod convert;
pub mod diff;
pub mod error;
pub mod findings;
pub mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
pub mod hub;
pub mod manifest;
pub mod matching;
pub mod model;
pub mod plan;
pub mod quant;
pub mod remap;
pub mod render;
pub mod stub;
pub mod target;
pub mod ui;

pub use audit::{audit, AuditReport};
pub use checkpoint::Checkpoint;
pub use error::CheckpointError;
pub use findings::{Code, Finding, Severity};
