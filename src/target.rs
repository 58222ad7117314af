//! Which serving stack the answers are for: one enum every layer shares (the quantization support
//! table, the model spec, the commands), so none has to reach up into `plan` for it.

use serde::Serialize;

/// The vLLM release whose behaviour every rule reproduces (each report says so).
pub const VLLM_REFERENCE: &str = "0.33.0";

/// Which serving stack the answers are for (`--target`, or `CKPTPILOT_TARGET`; one default, `vllm`,
/// for every command).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// vLLM on NVIDIA GPUs (fp8 native on Hopper and later).
    #[default]
    Vllm,
    /// vLLM-Ascend on Huawei Ascend NPUs (A2/A3: no fp8, no fp4).
    VllmAscend,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Vllm => "vllm",
            Target::VllmAscend => "vllm-ascend",
        }
    }
}
