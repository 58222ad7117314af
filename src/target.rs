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

/// vLLM-Ascend's hardware families (vllm_ascend/device/hardware.py :: AscendDeviceType, at
/// vllm-ascend 182b75ea84: SOC 220–225 A2, 250–255 A3, 260 and every `ascend950*` SOC A5). Only
/// A5 runs the MX and FP8 kernels the MX / FP8 ModelSlim schemes call (float8_e8m0fnu scales and
/// float4_e2m1fn_x2 / float8_e4m3fn operands: vllm_ascend/quantization/utils.py, "operators like GMM
/// in Ascend950").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Npu {
    A2,
    A3,
    A5,
    /// Ascend 310P (SOCs `ascend310p*`, AscendDeviceType._310P, device/hardware.py lines 21, 41-48):
    /// vLLM-Ascend registers a 310P ModelSlim config there (vllm_ascend/platform.py lines 276-277)
    /// whose own scheme registry (W8A8, W8A8_DYNAMIC, W8A8S, W8A8SC) serves linear and MoE layers.
    P310,
}

impl Npu {
    pub fn as_str(self) -> &'static str {
        match self {
            Npu::A2 => "A2",
            Npu::A3 => "A3",
            Npu::A5 => "A5 (Ascend 950)",
            Npu::P310 => "310P",
        }
    }

    /// Parse the family names scheme contracts use (`"A5"`).
    pub fn parse(s: &str) -> Option<Npu> {
        match s {
            "A2" => Some(Npu::A2),
            "A3" => Some(Npu::A3),
            "A5" => Some(Npu::A5),
            "310P" => Some(Npu::P310),
            _ => None,
        }
    }
}
