//! Whether a target serves a quantization scheme at all, before any shape is looked at: one table
//! that `plan` (its `target` rule) and `audit` (`target-unsupported`) both read, so the two never
//! disagree. Each refusal is the error the target itself raises, with where it raises it.

use super::scheme::{QuantMethod, QuantScheme};
use crate::target::Npu;
use crate::target::Target;

/// What the target does with the scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// Served as it is; the label names the method.
    Native(String),
    /// Served, with a cost worth knowing (fp8 weight-only through Marlin on a device without fp8).
    Caveat { short: String, message: String },
    /// The target raises at startup.
    Unsupported { short: String, message: String, fix: String },
}

/// How `ckptpilot stub --target vllm-ascend` serves an fp8 checkpoint anyway: its adapter
/// dequantizes each weight as it loads (and the scripts serve the model unquantized).
pub const LOAD_TIME_DEQUANT: &str =
    "or let `ckptpilot stub MODEL --target vllm-ascend` write an adapter that dequantizes fp8 to bf16 at load time (the kit serves it with quantization_config null; memory as bf16)";

/// vLLM 0.33.0's own quantization methods (`vllm/model_executor/layers/quantization/__init__.py ::
/// QuantizationMethods`), the list its error prints. `ascend` is not among them: only the
/// vLLM-Ascend plugin registers it.
pub const VLLM_METHODS: &[&str] = &[
    "awq",
    "auto_awq",
    "fp8",
    "fbgemm_fp8",
    "fp_quant",
    "modelopt",
    "modelopt_fp4",
    "modelopt_mxfp8",
    "modelopt_mixed",
    "auto_gptq",
    "gptq",
    "gptq_marlin",
    "awq_marlin",
    "humming",
    "compressed-tensors",
    "experts_int8",
    "quark",
    "moe_wna16",
    "torchao",
    "inc",
    "mxfp4",
    "gpt_oss_mxfp4",
    "deepseek_v4_fp8",
    "online",
    "fp8_per_tensor",
    "fp8_per_block",
    "fp8_per_channel",
    "int8_per_channel_weight_only",
    "nvfp4_per_token",
    "mxfp8",
];

/// Whether `target` (on a device with or without fp8 units; for vLLM-Ascend, the NPU family) serves `q`.
pub fn support(q: &QuantScheme, target: Target, fp8_device: bool, npu: Option<Npu>) -> Support {
    let method = q.method.as_str();
    let unsupported =
        |short: String, message: String, fix: &str| Support::Unsupported { short, message, fix: fix.to_string() };
    match target {
        Target::VllmAscend => {
            if q.method == QuantMethod::Fp8 && !fp8_device {
                return unsupported(
                    "fp8 unsupported".into(),
                    "NotImplementedError (vllm_ascend/quantization/fp8_config.py :: AscendFp8Config.get_quant_method raises it for every layer, vllm-ascend 182b75ea84): vLLM-Ascend serves no native fp8 checkpoint — A2/A3 have no fp8 units, and Ascend 950 runs fp8 only through the ModelSlim W8A8_MXFP8 / W8A8FP8_DYNAMIC schemes".into(),
                    &format!("convert to bf16 with `ckptpilot dequant MODEL --out DIR`, {LOAD_TIME_DEQUANT}, or use a ModelSlim W8A8 checkpoint with --quantization ascend"),
                );
            }
            if q.fp8_scale.is_some() && !fp8_device {
                return unsupported(
                    "fp8 unsupported".into(),
                    format!("{method} fp8 weights need fp8 units, which Ascend A2/A3 do not have"),
                    &format!("convert to bf16 with `ckptpilot dequant`, {LOAD_TIME_DEQUANT}, or use a ModelSlim W8A8 checkpoint"),
                );
            }
            // ModelSlim schemes whose kernels exist on one hardware family only (the contracts'
            // `device`): vLLM-Ascend does not check it before loading.
            if let Some(d) = q.modelslim.as_deref() {
                // A scheme vLLM-Ascend registers no method for (msModelSlim's WFP8AFP8_DYNAMIC, say):
                // create_scheme_for_layer raises for the first layer that names it.
                // The registry (310P or main) that serves each layer on this device.
                if let Some((s, _, text)) = d.device_refusal(npu) {
                    let on_310p = npu == Some(Npu::P310);
                    return unsupported(
                        format!("{s} not on {}", if on_310p { "310P" } else { "this NPU" }),
                        format!(
                            "{text} ({})",
                            if on_310p {
                                super::modelslim::registry_310p().source.as_str()
                            } else {
                                super::modelslim::contract(&s).map_or("", |c| c.source.as_str())
                            }
                        ),
                        if on_310p {
                            "quantize the bf16 checkpoint to a scheme the 310P registry serves (W8A8, W8A8_DYNAMIC, W8A8S, W8A8SC)"
                        } else {
                            "plan for an Ascend 310P (`--device ascend-310p`): vLLM-Ascend serves W8A8S / W8A8SC only there"
                        },
                    );
                }
                // The attention layers' scheme (fa_quant_type / indexer_quant_type).
                if let Some(s) = d.attention_layers().iter().find_map(|l| {
                    let s = l.scheme.as_deref()?;
                    super::modelslim::attention_contract(s).is_none().then_some(s.to_string())
                }) {
                    return unsupported(
                        format!("{s} has no attention method"),
                        super::modelslim::Contract::unsupported_text(&s, super::modelslim::LayerType::Attention),
                        "set fa_quant_type to FAKQuant (or indexer_quant_type to INT8_DYNAMIC) in quant_model_description.json, or remove it to serve the attention unquantized",
                    );
                }
                // Only `<prefix>.weight` entries name a layer's scheme (C8 / FAQuant labels on scale
                // tensors are never looked up).
                let mut unknown: Vec<&str> = d
                    .types
                    .iter()
                    .filter(|(k, _)| k.ends_with(".weight"))
                    .map(|(_, s)| s.as_str())
                    .filter(|s| super::modelslim::contract(s).is_none())
                    .collect();
                unknown.sort_unstable();
                unknown.dedup();
                if let Some(s) = unknown.first() {
                    return unsupported(
                        format!("{s} has no method"),
                        super::modelslim::Contract::unsupported_text(s, super::modelslim::LayerType::Linear),
                        "quantize the bf16 checkpoint to a scheme vLLM-Ascend registers (`ckptpilot quantize --to w8a8-dynamic`)",
                    );
                }
                let need = d.needs_device(npu);
                if let Some(&(_, want, _)) = need.first() {
                    let schemes: Vec<String> = need
                        .iter()
                        .map(|(s, _, _)| {
                            let n = d.types.values().filter(|t| t == s).count();
                            format!("{s} ({n} tensors)")
                        })
                        .collect();
                    return unsupported(
                        format!("needs {}", want.as_str()),
                        format!(
                            "{} run only on Ascend {}: their methods ({}) call MX / FP8 kernels that exist on A5 only; this device is {} — vLLM-Ascend does not check the device before loading, so it fails inside torch_npu's kernels, not with a message of its own",
                            schemes.join(", "),
                            want.as_str(),
                            need.iter()
                                .map(|(_, _, src)| src.split_once(".py").map_or(*src, |(f, _)| f).to_string() + ".py")
                                .collect::<Vec<_>>()
                                .join(", "),
                            npu.map_or("a GPU", Npu::as_str)
                        ),
                        "plan for an Ascend 950 (`--device ascend-950pr` or `ascend-950dt`), or quantize the bf16 checkpoint to a scheme A2/A3 serve (`ckptpilot quantize --to w8a8-dynamic`)",
                    );
                }
            }
            // vllm_ascend/platform.py :: NPUPlatform.supported_quantization.
            let supported = matches!(
                q.method,
                QuantMethod::Ascend
                    | QuantMethod::CompressedTensors
                    | QuantMethod::Fp8
                    | QuantMethod::DeepseekV4Fp8
                    | QuantMethod::ModeloptMxfp8
                    | QuantMethod::Mxfp8
            );
            // vllm_ascend/quantization/compressed_tensors_config.py :: _detect_quant_type (vllm-ascend
            // 182b75ea84): W8A8 static / dynamic, W4A8 dynamic and W4A16 (int, group strategy) have an
            // NPU method; anything else, NVFP4 included (no fp4 units on A2/A3), raises.
            let ct_unsupported = q.method == QuantMethod::CompressedTensors
                && match q.format.as_deref() {
                    Some("nvfp4-pack-quantized") => true,
                    Some("pack-quantized") => q.bits != Some(4) || q.group_size.is_none_or(|g| g <= 0),
                    _ => false,
                };
            if ct_unsupported {
                return unsupported(
                    format!("{} unsupported", q.format.as_deref().unwrap_or(method)),
                    "NotImplementedError: No compressed-tensors compatible quantization type was found. (vllm_ascend/quantization/compressed_tensors_config.py :: _detect_quant_type: NPU methods exist for W8A8, W8A8_DYNAMIC, W4A8_DYNAMIC and group-wise int W4A16 only)".into(),
                    "convert to bf16 with `ckptpilot dequant MODEL --out DIR` (it reads NVFP4 and INT4 pack-quantized), or use a ModelSlim (W8A8) checkpoint",
                );
            }
            if !supported {
                return unsupported(
                    format!("{method} unsupported"),
                    format!("ValueError: {method} quantization is currently not supported in npu."),
                    if q.method == QuantMethod::Mxfp4 {
                        "convert to bf16 with `ckptpilot dequant MODEL --out DIR` (it reads MXFP4), or use a ModelSlim (W8A8) checkpoint"
                    } else {
                        "use a bf16 or ModelSlim (W8A8) checkpoint"
                    },
                );
            }
            Support::Native(method.to_string())
        }
        Target::Vllm => {
            if q.method == QuantMethod::Ascend {
                // vllm/config/model.py :: ModelConfig._verify_quantization: `ascend` is in
                // QUANTIZATION_METHODS only once the vLLM-Ascend plugin has registered it.
                return unsupported(
                    "ascend unknown".into(),
                    format!(
                        "ValueError: Unknown quantization method: ascend. Must be one of {:?}. (vllm/config/model.py :: ModelConfig._verify_quantization: ModelSlim's `ascend` method is registered only by the vLLM-Ascend plugin)",
                        VLLM_METHODS
                    )
                    .replace('"', "'"),
                    "serve this ModelSlim checkpoint with vLLM-Ascend (`--target vllm-ascend`); for GPUs, start from the bf16 (or an fp8 / compressed-tensors) checkpoint it was quantized from",
                );
            }
            if q.fp8_scale.is_some() && !fp8_device {
                return Support::Caveat {
                    short: "fp8 weight-only".into(),
                    message: "this device has no fp8 units: vLLM runs fp8 weights through the weight-only Marlin path (slower, same memory)".into(),
                };
            }
            Support::Native(method.to_string())
        }
    }
}
