//! Which quantization scheme a checkpoint declares, read the way vLLM reads it: `quantization_config`
//! (top level or in `text_config`), `compression_config`, or `hf_quant_config.json`.

use serde::Serialize;
use serde_json::Value;

/// How the scale of an fp8 weight is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ScaleLayout {
    /// `[ceil(N/bn), ceil(K/bk)]`, multiplied blockwise.
    Block { n: u64, k: u64 },
    /// One scale per output row: `[N, 1]` or `[N]`.
    Channel,
    /// One scale for the whole tensor: `[]` or `[1]`.
    Tensor,
}

impl std::fmt::Display for ScaleLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScaleLayout::Block { n, k } => write!(f, "block {n}x{k}"),
            ScaleLayout::Channel => f.write_str("per-channel"),
            ScaleLayout::Tensor => f.write_str("per-tensor"),
        }
    }
}

/// `quant_method`, as vLLM names its quantization configs (`vllm/model_executor/layers/quantization/__init__.py`
/// QUANTIZATION_METHODS); a method ckptpilot has no knowledge of keeps its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuantMethod {
    Fp8,
    CompressedTensors,
    Modelopt,
    Mxfp4,
    Mxfp8,
    ModeloptMxfp8,
    DeepseekV4Fp8,
    Gptq,
    GptqMarlin,
    Awq,
    AwqMarlin,
    Bitsandbytes,
    /// vLLM-Ascend's ModelSlim formats (`--quantization ascend`).
    Ascend,
    /// No `quant_method` key.
    Unnamed,
    Other(String),
}

impl QuantMethod {
    const KNOWN: &'static [(&'static str, QuantMethod)] = &[
        ("fp8", QuantMethod::Fp8),
        ("compressed-tensors", QuantMethod::CompressedTensors),
        ("modelopt", QuantMethod::Modelopt),
        ("mxfp4", QuantMethod::Mxfp4),
        ("mxfp8", QuantMethod::Mxfp8),
        ("modelopt_mxfp8", QuantMethod::ModeloptMxfp8),
        ("deepseek_v4_fp8", QuantMethod::DeepseekV4Fp8),
        ("gptq", QuantMethod::Gptq),
        ("gptq_marlin", QuantMethod::GptqMarlin),
        ("awq", QuantMethod::Awq),
        ("awq_marlin", QuantMethod::AwqMarlin),
        ("bitsandbytes", QuantMethod::Bitsandbytes),
        ("ascend", QuantMethod::Ascend),
        ("", QuantMethod::Unnamed),
    ];

    pub fn parse(name: &str) -> QuantMethod {
        Self::KNOWN
            .iter()
            .find(|(n, _)| *n == name)
            .map_or_else(|| QuantMethod::Other(name.to_string()), |(_, m)| m.clone())
    }

    pub fn as_str(&self) -> &str {
        match self {
            QuantMethod::Other(s) => s,
            m => Self::KNOWN.iter().find(|(_, k)| k == m).map_or("", |(n, _)| n),
        }
    }
}

impl std::fmt::Display for QuantMethod {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for QuantMethod {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// The quantization scheme, as data.
#[derive(Debug, Clone, Serialize)]
pub struct QuantScheme {
    /// `quant_method` (fp8, compressed-tensors, mxfp4, gptq, awq, bitsandbytes, modelopt, …).
    pub method: QuantMethod,
    /// Where it was found: `quantization_config`, `text_config.quantization_config`, `compression_config`, `hf_quant_config.json`.
    pub source: String,
    /// For fp8 schemes: the scale layout of linear weights.
    pub fp8_scale: Option<ScaleLayout>,
    /// The suffix (after the weight's module name) of the scale tensor: `weight_scale_inv` or `weight_scale`.
    pub scale_suffix: Option<&'static str>,
    /// `scale_fmt` (e.g. `ue8m0`: power-of-two scales).
    pub scale_fmt: Option<String>,
    pub fmt: Option<String>,
    pub activation_scheme: Option<String>,
    pub bits: Option<u64>,
    pub group_size: Option<i64>,
    /// compressed-tensors weights: `symmetric` (false: zero points are stored).
    pub symmetric: Option<bool>,
    /// compressed-tensors: whether the config groups quantize input activations (W4A4, not W4A16).
    pub input_quantized: Option<bool>,
    /// compressed-tensors `format`, or modelopt `quant_algo`.
    pub format: Option<String>,
    /// Module names (or glob patterns) that stay unquantized.
    pub not_converted: Vec<String>,
    /// The key `not_converted` came from.
    pub not_converted_key: Option<&'static str>,
    pub kv_cache_scheme: Option<String>,
    /// For ModelSlim (`--quantization ascend`): the description file, each tensor's scheme.
    #[serde(skip)]
    pub modelslim: Option<std::sync::Arc<super::modelslim::Description>>,
}

impl QuantScheme {
    /// A ModelSlim checkpoint: vLLM-Ascend's `--quantization ascend`, auto-detected from its
    /// description file (vllm_ascend/quantization/modelslim_config.py).
    pub fn from_modelslim(d: &super::modelslim::Description) -> QuantScheme {
        QuantScheme {
            method: QuantMethod::Ascend,
            source: d.file.clone(),
            fp8_scale: None,
            scale_suffix: None,
            scale_fmt: None,
            fmt: None,
            activation_scheme: None,
            bits: None,
            group_size: None,
            symmetric: None,
            input_quantized: None,
            format: d.model_quant_type.clone(),
            not_converted: Vec::new(),
            not_converted_key: None,
            kv_cache_scheme: None,
            modelslim: Some(std::sync::Arc::new(d.clone())),
        }
    }

    pub fn detect(config: Option<&Value>, hf_quant_config: Option<&Value>) -> Option<QuantScheme> {
        let (q, source) = config
            .and_then(|c| {
                c.get("quantization_config")
                    .filter(|q| q.is_object())
                    .map(|q| (q, "quantization_config"))
                    .or_else(|| {
                        c.get("text_config")
                            .and_then(|t| t.get("quantization_config"))
                            .filter(|q| q.is_object())
                            .map(|q| (q, "text_config.quantization_config"))
                    })
                    .or_else(|| {
                        c.get("compression_config").filter(|q| q.is_object()).map(|q| (q, "compression_config"))
                    })
            })
            .or_else(|| hf_quant_config.filter(|q| q.is_object()).map(|q| (q, "hf_quant_config.json")))?;
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
        let mut method = s(q, "quant_method").unwrap_or_default();
        // hf_quant_config.json (ModelOpt) nests under "quantization".
        let modelopt = q.get("quantization").filter(|x| x.is_object());
        if method.is_empty() && (modelopt.is_some() || q.get("producer").is_some()) {
            method = "modelopt".into();
        }
        if method.is_empty() && q.get("load_in_8bit").is_some() {
            method = "bitsandbytes".into();
        }
        let method = QuantMethod::parse(&method);
        let mut scheme = QuantScheme {
            method: method.clone(),
            source: source.into(),
            fp8_scale: None,
            scale_suffix: None,
            scale_fmt: s(q, "scale_fmt"),
            fmt: s(q, "fmt"),
            activation_scheme: s(q, "activation_scheme"),
            bits: q.get("bits").and_then(Value::as_u64),
            group_size: q.get("group_size").and_then(Value::as_i64),
            symmetric: None,
            input_quantized: None,
            format: s(q, "format").or_else(|| modelopt.and_then(|m| s(m, "quant_algo"))).or_else(|| s(q, "quant_algo")),
            not_converted: Vec::new(),
            not_converted_key: None,
            kv_cache_scheme: None,
            modelslim: None,
        };
        for key in ["ignored_layers", "modules_to_not_convert", "ignore", "exclude_modules", "llm_int8_skip_modules"] {
            let list = q.get(key).or_else(|| modelopt.and_then(|m| m.get(key)));
            if let Some(a) = list.and_then(Value::as_array) {
                scheme.not_converted = a.iter().filter_map(|x| x.as_str().map(str::to_string)).collect();
                scheme.not_converted_key = Some(key);
                break;
            }
        }
        scheme.kv_cache_scheme = q
            .get("kv_cache_scheme")
            .filter(|v| !v.is_null())
            .map(|v| v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string()))
            .or_else(|| modelopt.and_then(|m| s(m, "kv_cache_quant_algo")));
        match method {
            QuantMethod::Fp8 => {
                let block = q.get("weight_block_size").and_then(Value::as_array).and_then(|a| match a.as_slice() {
                    [n, k] => Some((n.as_u64()?, k.as_u64()?)),
                    _ => None,
                });
                scheme.fp8_scale = Some(match block {
                    Some((n, k)) if n > 0 && k > 0 => ScaleLayout::Block { n, k },
                    _ => ScaleLayout::Tensor,
                });
                scheme.scale_suffix = Some(if block.is_some() { "weight_scale_inv" } else { "weight_scale" });
            }
            QuantMethod::CompressedTensors => {
                // The first config group whose weights are 8-bit floats decides the fp8 layout.
                let groups = q.get("config_groups").and_then(Value::as_object);
                if let Some(w) = groups.and_then(|g| {
                    g.values().filter_map(|grp| grp.get("weights")).find(|w| {
                        w.get("type").and_then(Value::as_str) == Some("float")
                            && w.get("num_bits").and_then(Value::as_u64) == Some(8)
                    })
                }) {
                    let strategy = w.get("strategy").and_then(Value::as_str).unwrap_or("tensor");
                    scheme.fp8_scale = match strategy {
                        "channel" => Some(ScaleLayout::Channel),
                        "block" => {
                            w.get("block_structure").and_then(Value::as_array).and_then(|a| match a.as_slice() {
                                [n, k] => Some(ScaleLayout::Block { n: n.as_u64()?, k: k.as_u64()? }),
                                _ => None,
                            })
                        }
                        _ => Some(ScaleLayout::Tensor),
                    };
                    scheme.scale_suffix = Some("weight_scale");
                    scheme.format = scheme.format.or(Some(format!("float-quantized ({strategy})")));
                } else if let Some(w) = groups.and_then(|g| g.values().filter_map(|grp| grp.get("weights")).next()) {
                    scheme.bits = w.get("num_bits").and_then(Value::as_u64);
                    scheme.group_size = w.get("group_size").and_then(Value::as_i64);
                    scheme.symmetric = w.get("symmetric").and_then(Value::as_bool);
                    scheme.input_quantized = groups
                        .map(|g| g.values().any(|grp| grp.get("input_activations").is_some_and(|a| !a.is_null())));
                }
            }
            QuantMethod::Modelopt => {
                let algo = scheme.format.clone().unwrap_or_default();
                if algo.eq_ignore_ascii_case("FP8") {
                    scheme.fp8_scale = Some(ScaleLayout::Tensor);
                    scheme.scale_suffix = Some("weight_scale");
                }
            }
            _ => {}
        }
        Some(scheme)
    }

    /// Whether module `name` (a weight name without its final `.weight`) is listed as not converted.
    /// Entries are module names (prefix match on a `.` boundary), `*` globs, or `re:` regexes
    /// (compressed-tensors; not evaluated — returns None so callers can say so).
    pub fn is_not_converted(&self, module: &str) -> Option<bool> {
        let mut unknown = false;
        for pat in &self.not_converted {
            if pat.starts_with("re:") {
                unknown = true;
                continue;
            }
            if pat.contains('*') {
                if glob_match(pat, module) || glob_match(&format!("{pat}.*"), module) {
                    return Some(true);
                }
            } else if module == pat
                || module.starts_with(&format!("{pat}."))
                || module.ends_with(&format!(".{pat}"))
                || module.contains(&format!(".{pat}."))
            {
                return Some(true);
            }
        }
        if unknown {
            None
        } else {
            Some(false)
        }
    }
}

/// `*` matches any run of characters (including dots), everything else literally.
pub fn glob_match(pat: &str, s: &str) -> bool {
    let parts: Vec<&str> = pat.split('*').collect();
    if parts.len() == 1 {
        return pat == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deepseek_block() {
        let c = json!({"quantization_config": {"quant_method": "fp8", "weight_block_size": [128, 128], "fmt": "e4m3", "scale_fmt": "ue8m0"}});
        let q = QuantScheme::detect(Some(&c), None).unwrap();
        assert_eq!(q.fp8_scale, Some(ScaleLayout::Block { n: 128, k: 128 }));
        assert_eq!(q.scale_suffix, Some("weight_scale_inv"));
        assert_eq!(q.scale_fmt.as_deref(), Some("ue8m0"));
    }

    #[test]
    fn compressed_tensors_channel() {
        let c = json!({"quantization_config": {"quant_method": "compressed-tensors", "format": "float-quantized",
            "config_groups": {"group_0": {"weights": {"type": "float", "num_bits": 8, "strategy": "channel"}}}, "ignore": ["lm_head"]}});
        let q = QuantScheme::detect(Some(&c), None).unwrap();
        assert_eq!(q.fp8_scale, Some(ScaleLayout::Channel));
        assert_eq!(q.is_not_converted("lm_head"), Some(true));
        assert_eq!(q.is_not_converted("model.layers.0.mlp.down_proj"), Some(false));
    }

    #[test]
    fn globs() {
        assert!(glob_match("model.layers.*.self_attn", "model.layers.3.self_attn"));
        assert!(glob_match("model.layers.61*", "model.layers.61.mlp.experts.0.up_proj"));
        assert!(!glob_match("model.layers.61*", "model.layers.6.mlp"));
        let c = json!({"quantization_config": {"quant_method": "mxfp4", "modules_to_not_convert": ["model.layers.*.self_attn"]}});
        let q = QuantScheme::detect(Some(&c), None).unwrap();
        assert_eq!(q.is_not_converted("model.layers.0.self_attn.q_proj"), Some(true));
    }
}
