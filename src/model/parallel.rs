//! One parallel layout (TP, EP, DP, PP and the MoE backend), as the model spec slices parameters
//! for it. `plan` evaluates layouts; the spec only needs to know what one is.

use serde::Serialize;

/// vLLM's `--moe-backend` (vllm/config/kernel.py :: MoEBackend; the fp8 kernels each maps to:
/// fused_moe/oracle/fp8.py :: map_fp8_backend, backend_to_kernel_cls).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum MoeBackend {
    /// vLLM picks a kernel that supports the checkpoint's block shape.
    #[default]
    Auto,
    Triton,
    #[value(name = "deep_gemm")]
    DeepGemm,
    Cutlass,
    #[value(name = "flashinfer_trtllm")]
    FlashinferTrtllm,
    #[value(name = "flashinfer_cutlass")]
    FlashinferCutlass,
    Marlin,
    Humming,
    Aiter,
    Hpc,
}

impl MoeBackend {
    pub fn as_str(self) -> &'static str {
        match self {
            MoeBackend::Auto => "auto",
            MoeBackend::Triton => "triton",
            MoeBackend::DeepGemm => "deep_gemm",
            MoeBackend::Cutlass => "cutlass",
            MoeBackend::FlashinferTrtllm => "flashinfer_trtllm",
            MoeBackend::FlashinferCutlass => "flashinfer_cutlass",
            MoeBackend::Marlin => "marlin",
            MoeBackend::Humming => "humming",
            MoeBackend::Aiter => "aiter",
            MoeBackend::Hpc => "hpc",
        }
    }

    /// The fp8 kernel family vLLM maps it to (`Fp8MoeBackend.value`, as its errors print it).
    pub fn fp8_kernels(self) -> &'static str {
        match self {
            MoeBackend::Auto => "auto",
            MoeBackend::Triton => "TRITON",
            MoeBackend::DeepGemm => "DEEPGEMM",
            MoeBackend::Cutlass => "VLLM_CUTLASS",
            MoeBackend::FlashinferTrtllm => "FLASHINFER_TRTLLM",
            MoeBackend::FlashinferCutlass => "FLASHINFER_CUTLASS",
            MoeBackend::Marlin => "MARLIN",
            MoeBackend::Humming => "HUMMING",
            MoeBackend::Aiter => "AITER",
            MoeBackend::Hpc => "HPC",
        }
    }

    /// Whether the backend's fp8 kernels take a block shape other than 128x128: only Triton's,
    /// which take it as a runtime argument (experts/triton_moe.py :: TritonExperts._supports_quant_scheme,
    /// on a platform with fp8); DeepGEMM and CUTLASS are wrapped with a Triton fallback that must
    /// support it too, and every other backend lists kFp8Static128BlockSym alone.
    pub fn takes_refined_blocks(self) -> bool {
        matches!(self, MoeBackend::Auto | MoeBackend::Triton)
    }
}

/// One parallel configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Parallel {
    pub tp: u64,
    /// `--enable-expert-parallel`.
    pub ep: bool,
    pub dp: u64,
    pub pp: u64,
    /// `--moe-backend`: decides whether fp8 expert shards that are not whole blocks are refined or padded.
    #[serde(skip)]
    pub moe_backend: MoeBackend,
}

impl Parallel {
    /// The MoE layers' TP: flattened TP×DP without EP, 1 with EP (FusedMoEParallelConfig.make).
    pub fn moe_tp(&self) -> u64 {
        if self.ep {
            1
        } else {
            self.tp * self.dp
        }
    }
    /// The expert-parallel size: TP×DP with EP, 1 without.
    pub fn ep_size(&self) -> u64 {
        if self.ep {
            self.tp * self.dp
        } else {
            1
        }
    }
}
