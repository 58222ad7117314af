//! A typed view of `config.json`: what the checks and the plan need, wherever the config keeps it.
//!
//! Vision-language configs keep the language model's numbers in `text_config` (and some keep
//! `architectures` only there); the text fields are read from `text_config` first, then the top
//! level. Omni configs (Qwen2.5-Omni, Qwen3-Omni) nest it one level deeper, in
//! `thinker_config.text_config` (the thinker is what vLLM builds; transformers' `get_text_config` looks
//! there too). Every field is optional: a config that lacks one simply skips the checks that need it.

use serde::Serialize;
use serde_json::Value;

#[derive(Debug, Clone, Default, Serialize)]
pub struct ModelConfig {
    pub architecture: Option<String>,
    /// Where `architecture` was found: "architectures" or "text_config.architectures".
    pub architecture_source: Option<&'static str>,
    /// Every name of `architectures` (where `architecture` came from), in order.
    pub architectures: Vec<String>,
    /// `auto_map` names an `AutoConfig`: the config has its own (remote) code.
    pub remote_config: bool,
    pub model_type: Option<String>,
    pub text_model_type: Option<String>,
    pub num_layers: Option<u64>,
    pub num_heads: Option<u64>,
    pub num_kv_heads: Option<u64>,
    pub head_dim: Option<u64>,
    /// True when head_dim was not written and was derived as hidden_size / num_heads.
    pub head_dim_derived: bool,
    pub hidden_size: Option<u64>,
    pub intermediate_size: Option<u64>,
    pub vocab_size: Option<u64>,
    /// As written; `None` when absent (the audit resolves it from the family's default).
    pub tie_word_embeddings: Option<bool>,
    pub moe: Option<MoeConfig>,
    pub mla: Option<MlaConfig>,
    /// Declared MTP (next-token-prediction) layers: `num_nextn_predict_layers` or `mtp_num_hidden_layers`.
    pub mtp_layers: u64,
    pub has_vision: bool,
    pub has_audio: bool,
    pub sliding_window: Option<u64>,
    pub layer_types: Option<Vec<String>>,
    /// Hybrid models (Qwen3-Next): every k-th layer is full attention, the others linear.
    pub full_attention_interval: Option<u64>,
    /// `max_position_embeddings`.
    pub max_position_embeddings: Option<u64>,
    /// The longest context vLLM derives from the config, and the key it came from (see [`derived_max_len`]).
    pub derived_max_model_len: Option<(u64, &'static str)>,
    /// `torch_dtype` (or `dtype`, newer transformers).
    pub torch_dtype: Option<String>,
    /// `use_sliding_window`, where the config has the key (Qwen2 family: `false` disables `sliding_window`).
    pub use_sliding_window: Option<bool>,
    /// The MLP width of dense layers when it differs from the experts' (`intermediate_size_mlp`, Llama 4).
    pub dense_intermediate_size: Option<u64>,
    /// Linear-attention (Gated DeltaNet) dimensions, when the config declares them.
    pub linear_attention: Option<LinearAttentionConfig>,
    /// DeepSeek sparse attention (`index_topk`): an indexer cache beside the latent cache.
    pub index_topk: Option<u64>,
    /// Size fields that are present but hold something no model can be built from: a string, a
    /// negative or fractional number, zero heads. Each entry says the key and what it holds; every
    /// command refuses such a config the same way ([`ModelConfig::sizes_in_range`]).
    pub invalid: Vec<String>,
}

/// Linear-attention dimensions (Qwen3-Next `linear_*` keys): a constant state per sequence.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LinearAttentionConfig {
    pub num_key_heads: u64,
    pub num_value_heads: u64,
    pub key_head_dim: u64,
    pub value_head_dim: u64,
    pub conv_kernel_dim: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct MoeConfig {
    pub num_experts: u64,
    /// The config key the count came from.
    pub experts_key: &'static str,
    pub experts_per_tok: Option<u64>,
    pub moe_intermediate_size: Option<u64>,
    pub shared_experts: Option<u64>,
    pub shared_expert_intermediate_size: Option<u64>,
    pub first_k_dense_replace: Option<u64>,
    pub moe_layer_freq: Option<u64>,
    pub decoder_sparse_step: Option<u64>,
    pub mlp_only_layers: Vec<u64>,
    /// ERNIE 4.5 MoE (vllm/model_executor/models/ernie45_moe.py :: Ernie4_5_MoeModel): layer i has
    /// experts when start ≤ i ≤ end and (i + 1) % interval == 0.
    pub moe_layer_start_index: Option<u64>,
    pub moe_layer_end_index: Option<u64>,
    pub moe_layer_interval: Option<u64>,
    /// Jamba: layer i has experts when i % period == offset (transformers' JambaConfig
    /// `layers_num_experts`, which vllm/model_executor/models/jamba.py reads per layer).
    pub expert_layer_period: Option<u64>,
    pub expert_layer_offset: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct MlaConfig {
    pub q_lora_rank: Option<u64>,
    pub kv_lora_rank: u64,
    pub qk_rope_head_dim: Option<u64>,
    pub qk_nope_head_dim: Option<u64>,
    pub v_head_dim: Option<u64>,
}

impl MoeConfig {
    /// Whether layer `i` holds routed experts, following the placement keys transformers and vLLM
    /// use (DeepSeek: first_k_dense_replace + moe_layer_freq; Qwen-MoE: decoder_sparse_step +
    /// mlp_only_layers).
    pub fn is_moe_layer(&self, i: u64) -> bool {
        if self.mlp_only_layers.contains(&i) {
            return false;
        }
        if let Some(k) = self.first_k_dense_replace {
            if i < k {
                return false;
            }
        }
        if let Some(f) = self.moe_layer_freq.filter(|&f| f > 0) {
            if i % f != 0 {
                return false;
            }
        }
        if let Some(s) = self.decoder_sparse_step.filter(|&s| s > 0) {
            if (i + 1) % s != 0 {
                return false;
            }
        }
        if self.moe_layer_start_index.is_some_and(|s| i < s) || self.moe_layer_end_index.is_some_and(|e| i > e) {
            return false;
        }
        if let Some(p) = self.expert_layer_period.filter(|&p| p > 0) {
            if i % p != self.expert_layer_offset.unwrap_or(0) {
                return false;
            }
        }
        if let Some(k) = self.moe_layer_interval.filter(|&k| k > 0) {
            if (i + 1) % k != 0 {
                return false;
            }
        }
        true
    }
}

/// A lookup over `text_config` then the top level.
struct View<'a> {
    text: Option<&'a Value>,
    top: &'a Value,
}

impl<'a> View<'a> {
    fn get(&self, key: &str) -> Option<&'a Value> {
        self.text
            .and_then(|t| t.get(key))
            .filter(|v| !v.is_null())
            .or_else(|| self.top.get(key).filter(|v| !v.is_null()))
    }
    fn u64(&self, keys: &[&str]) -> Option<u64> {
        keys.iter().find_map(|k| self.get(k).and_then(as_count))
    }
    fn u64_key(&self, keys: &[&'static str]) -> Option<(u64, &'static str)> {
        keys.iter().find_map(|k| self.get(k).and_then(as_count).map(|v| (v, *k)))
    }
}

/// The config keys vLLM reads the total KV heads from, in its order
/// (vllm/transformers_utils/config.py :: CONFIG_FIELD_ALIASES["total_num_kv_heads"]), then ours.
const KV_HEAD_KEYS: &[&str] = &[
    "n_head_kv",
    "num_kv_heads",
    "num_key_value_heads",
    "multi_query_group_num",
    "num_attention_groups",
    "n_kv_heads",
];

/// Model types whose configs vLLM 0.33 reads through its Falcon convertor: `multi_query` means one KV
/// head unless `new_decoder_architecture` (vllm/transformers_utils/model_arch_config_convertor.py ::
/// FalconModelArchConfigConvertor.get_total_num_kv_heads, and falcon.py :: FalconAttention).
const MULTI_QUERY_MODEL_TYPES: &[&str] = &["falcon", "RefinedWeb", "RefinedWebModel"];

/// Model types whose transformers config class sets `num_key_value_heads` from `multi_query` (the
/// flag's class default when config.json lacks it), which vLLM then reads off the config object:
/// transformers 5.20.2 models/gpt_bigcode/configuration_gpt_bigcode.py (`num_key_value_heads = 1 if
/// self.multi_query else self.n_head`, multi_query defaulting to True). Recorded: GPTBigCode at TP 2
/// (tools/oracle/families.tsv) holds c_attn as 2 query heads + 1 replicated KV head per rank.
const MULTI_QUERY_CONFIG_CLASSES: &[(&str, bool)] = &[("gpt_bigcode", true)];

/// The total KV heads as vLLM 0.33 normalises them (None: the attention heads, its default).
fn total_kv_heads(view: &View<'_>, top: &Value) -> Option<u64> {
    let model_type = top.get("model_type").and_then(Value::as_str).unwrap_or("");
    let flag = |k: &str| view.get(k).and_then(Value::as_bool).unwrap_or(false);
    if MULTI_QUERY_MODEL_TYPES.contains(&model_type) && flag("multi_query") && !flag("new_decoder_architecture") {
        return Some(1);
    }
    if let Some(&(_, default)) = MULTI_QUERY_CONFIG_CLASSES.iter().find(|(t, _)| *t == model_type) {
        if view.get("multi_query").and_then(Value::as_bool).unwrap_or(default) {
            return Some(1);
        }
    }
    // DbrxModelArchConfigConvertor: attn_config.kv_n_heads.
    let nested = view.get("attn_config").and_then(|a| a.get("kv_n_heads")).and_then(as_count);
    view.u64(KV_HEAD_KEYS).or(nested)
}

/// The keys vLLM takes a context limit from (the smallest present wins), in its order.
pub const MAX_LEN_KEYS: &[&str] = &[
    "max_position_embeddings",
    "n_positions",
    "max_seq_len",
    "seq_length",
    "model_max_length",
    "max_target_positions",
    "max_sequence_length",
    "max_seq_length",
    "seq_len",
];

/// vLLM 0.33.0's derived max_model_len (`derive_max_model_len_and_key`, `_get_and_verify_max_len`):
/// the smallest of [`MAX_LEN_KEYS`] (`model_max_length` overrides), times the rope scaling factor
/// except for rope types that already encode it (su, longrope, llama3, yarn, deepseek_yarn,
/// deepseek_llama_scaling) and for Gemma 3. Returns the length and the key it came from.
fn derived_max_len(view: &View<'_>, model_type: Option<&str>) -> Option<(u64, &'static str)> {
    let mut best: Option<(u64, &'static str)> = None;
    for k in MAX_LEN_KEYS {
        if let Some(v) = view.get(k).and_then(as_count) {
            if best.is_none_or(|(b, _)| v < b) {
                best = Some((v, k));
            }
        }
    }
    if let Some(v) = view.get("model_max_length").and_then(as_count).filter(|&v| v > 0) {
        best = Some((v, "model_max_length"));
    }
    let (base, key) = best?;
    if model_type.is_some_and(|m| m.contains("gemma3")) {
        return Some((base, key));
    }
    let Some(rs) = view.get("rope_scaling").or_else(|| view.get("rope_parameters")).filter(|r| r.is_object()) else {
        return Some((base, key));
    };
    let kind = rs.get("rope_type").or_else(|| rs.get("type")).and_then(Value::as_str).unwrap_or("default");
    if matches!(kind, "su" | "longrope" | "llama3" | "yarn" | "deepseek_yarn" | "deepseek_llama_scaling") {
        return Some((base, key));
    }
    match rs.get("factor").and_then(Value::as_f64).filter(|f| f.is_finite() && *f > 0.0) {
        Some(f) => Some(((base as f64 * f) as u64, key)),
        None => Some((base, key)),
    }
}

fn as_count(v: &Value) -> Option<u64> {
    v.as_u64().or_else(|| v.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64))
}

/// Upper bounds on config sizes: larger values are not real models, and sizing loops or products by
/// them would hang or overflow.
const SIZE_LIMITS: &[(&str, u64)] = &[
    ("num_hidden_layers", 1 << 16),
    ("num_attention_heads", 1 << 16),
    ("num_key_value_heads", 1 << 16),
    ("head_dim", 1 << 16),
    ("hidden_size", 1 << 20),
    ("intermediate_size", 1 << 24),
    ("moe_intermediate_size", 1 << 24),
    ("num_experts", 1 << 16),
    ("vocab_size", 1 << 28),
    ("kv_lora_rank", 1 << 20),
    ("q_lora_rank", 1 << 20),
    ("num_nextn_predict_layers", 1 << 10),
];

/// Size keys that must hold a non-negative integer when present, and whether zero is impossible
/// too (vLLM divides by it or sizes a tensor with it).
const SIZE_KEYS: &[(&str, bool)] = &[
    ("num_hidden_layers", false),
    ("num_attention_heads", true),
    ("num_key_value_heads", true),
    ("head_dim", true),
    ("hidden_size", true),
    ("intermediate_size", false),
    ("moe_intermediate_size", false),
    ("vocab_size", true),
    ("num_experts_per_tok", false),
    ("kv_lora_rank", false),
    ("q_lora_rank", false),
    ("max_position_embeddings", false),
    ("num_nextn_predict_layers", false),
];

/// What is wrong with a present size value, if anything.
fn size_value_problem(key: &str, v: &Value, positive: bool) -> Option<String> {
    let kind = match v {
        Value::String(s) => format!("{:?} (a string)", s.chars().take(40).collect::<String>()),
        Value::Bool(b) => format!("{b} (a boolean)"),
        Value::Array(_) => "a list".into(),
        Value::Object(_) => "an object".into(),
        Value::Number(n) => match as_count(v) {
            Some(0) if positive => return Some(format!("{key} is 0; vLLM divides by it, so it must be at least 1")),
            Some(_) => return None,
            None => format!("{n}"),
        },
        Value::Null => return None,
    };
    Some(format!("{key} is {kind}, not a non-negative integer"))
}

impl ModelConfig {
    /// `Err(why)` when a size field holds something no model can be built from (see
    /// [`ModelConfig::invalid`]) or a size is beyond any real model's.
    pub fn sizes_in_range(&self) -> Result<(), String> {
        if !self.invalid.is_empty() {
            return Err(self.invalid.join("; "));
        }
        let moe = self.moe.as_ref();
        let mla = self.mla.as_ref();
        for (key, limit) in SIZE_LIMITS {
            let v = match *key {
                "num_hidden_layers" => self.num_layers,
                "num_attention_heads" => self.num_heads,
                "num_key_value_heads" => self.num_kv_heads,
                "head_dim" => self.head_dim,
                "hidden_size" => self.hidden_size,
                "intermediate_size" => self.intermediate_size.max(self.dense_intermediate_size),
                "moe_intermediate_size" => {
                    moe.and_then(|m| m.moe_intermediate_size.max(m.shared_expert_intermediate_size))
                }
                "num_experts" => moe.map(|m| m.num_experts),
                "vocab_size" => self.vocab_size,
                "kv_lora_rank" => mla.map(|m| m.kv_lora_rank),
                "q_lora_rank" => mla.and_then(|m| m.q_lora_rank),
                _ => Some(self.mtp_layers),
            };
            if let Some(v) = v.filter(|v| v > limit) {
                return Err(format!("{key} = {v} is beyond any real model (limit {limit})"));
            }
        }
        Ok(())
    }

    pub fn from_value(v: &Value) -> ModelConfig {
        let text = v
            .get("text_config")
            .or_else(|| v.get("thinker_config").and_then(|t| t.get("text_config")))
            .filter(|t| t.is_object());
        let view = View { text, top: v };
        let first_arch = |x: Option<&Value>| {
            x.and_then(|a| a.get("architectures"))
                .and_then(|a| a.as_array())
                .and_then(|a| a.first())
                .and_then(|s| s.as_str())
                .map(str::to_string)
        };
        let (architecture, architecture_source) = match first_arch(Some(v)) {
            Some(a) => (Some(a), Some("architectures")),
            None => match first_arch(text) {
                Some(a) => (Some(a), Some("text_config.architectures")),
                None => (None, None),
            },
        };
        let num_heads = view.u64(&["num_attention_heads", "n_head", "n_heads"]);
        let hidden_size = view.u64(&["hidden_size", "n_embd", "d_model"]);
        let explicit_head_dim = view.u64(&["head_dim"]);
        let derived = match (explicit_head_dim, hidden_size, num_heads) {
            (Some(_), _, _) => None,
            (None, Some(h), Some(n)) if n > 0 && h % n == 0 => Some(h / n),
            _ => None,
        };
        let moe = view
            .u64_key(&["n_routed_experts", "num_experts", "num_local_experts", "moe_num_experts", "n_experts"])
            .filter(|(n, _)| *n > 0)
            .map(|(num_experts, experts_key)| MoeConfig {
                num_experts,
                experts_key,
                experts_per_tok: view.u64(&["num_experts_per_tok", "moe_topk", "top_k"]),
                moe_intermediate_size: view.u64(&["moe_intermediate_size"]),
                shared_experts: view.u64(&["n_shared_experts", "num_shared_experts"]),
                shared_expert_intermediate_size: view.u64(&["shared_expert_intermediate_size"]),
                // AFMoE / LFM2-MoE name it num_dense_layers (afmoe.py: moe_enabled = layer_idx >=
                // config.num_dense_layers).
                first_k_dense_replace: view.u64(&["first_k_dense_replace", "num_dense_layers"]),
                moe_layer_freq: view.u64(&["moe_layer_freq"]),
                decoder_sparse_step: view.u64(&["decoder_sparse_step", "interleave_moe_layer_step"]),
                mlp_only_layers: view
                    .get("mlp_only_layers")
                    .and_then(|a| a.as_array())
                    .map(|a| a.iter().filter_map(as_count).collect())
                    .unwrap_or_default(),
                moe_layer_start_index: view.u64(&["moe_layer_start_index"]),
                moe_layer_end_index: view.u64(&["moe_layer_end_index"]),
                moe_layer_interval: view.u64(&["moe_layer_interval"]),
                expert_layer_period: view.u64(&["expert_layer_period"]),
                expert_layer_offset: view.u64(&["expert_layer_offset"]),
            });
        let mla = view.u64(&["kv_lora_rank"]).map(|kv_lora_rank| MlaConfig {
            q_lora_rank: view.u64(&["q_lora_rank"]),
            kv_lora_rank,
            qk_rope_head_dim: view.u64(&["qk_rope_head_dim"]),
            qk_nope_head_dim: view.u64(&["qk_nope_head_dim"]),
            v_head_dim: view.u64(&["v_head_dim"]),
        });
        let invalid = SIZE_KEYS
            .iter()
            .filter_map(|&(k, positive)| view.get(k).and_then(|x| size_value_problem(k, x, positive)))
            .collect();
        let tie = v
            .get("tie_word_embeddings")
            .and_then(Value::as_bool)
            .or_else(|| text.and_then(|t| t.get("tie_word_embeddings")).and_then(Value::as_bool));
        let architectures = match architecture_source {
            Some("text_config.architectures") => text,
            _ => Some(v),
        }
        .and_then(|a| a.get("architectures"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).map(str::to_string).collect())
        .unwrap_or_default();
        let remote_config =
            v.get("auto_map").and_then(Value::as_object).is_some_and(|m| m.keys().any(|k| k.starts_with("AutoConfig")));
        ModelConfig {
            architecture,
            architecture_source,
            architectures,
            remote_config,
            model_type: v.get("model_type").and_then(Value::as_str).map(str::to_string),
            text_model_type: text.and_then(|t| t.get("model_type")).and_then(Value::as_str).map(str::to_string),
            num_layers: view.u64(&["num_hidden_layers", "n_layer", "num_layers", "n_layers"]),
            num_kv_heads: total_kv_heads(&view, v).or(num_heads),
            num_heads,
            head_dim: explicit_head_dim.or(derived),
            head_dim_derived: derived.is_some(),
            hidden_size,
            intermediate_size: view.u64(&["intermediate_size", "ffn_dim", "n_inner"]),
            vocab_size: view.u64(&["vocab_size", "padded_vocab_size"]),
            tie_word_embeddings: tie,
            moe,
            mla,
            mtp_layers: view.u64(&["num_nextn_predict_layers", "mtp_num_hidden_layers"]).unwrap_or(0),
            has_vision: v.get("vision_config").is_some_and(|x| x.is_object()),
            has_audio: v.get("audio_config").is_some_and(|x| x.is_object()),
            sliding_window: view.u64(&["sliding_window"]),
            layer_types: view
                .get("layer_types")
                .and_then(|a| a.as_array())
                .map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()),
            full_attention_interval: view.u64(&["full_attention_interval"]),
            max_position_embeddings: view.u64(&["max_position_embeddings", "n_positions", "max_seq_len"]),
            derived_max_model_len: derived_max_len(&view, v.get("model_type").and_then(Value::as_str)),
            torch_dtype: view
                .get("torch_dtype")
                .or_else(|| view.get("dtype"))
                .and_then(Value::as_str)
                .map(str::to_string),
            use_sliding_window: view.get("use_sliding_window").and_then(Value::as_bool),
            dense_intermediate_size: view.u64(&["intermediate_size_mlp"]),
            linear_attention: view.u64(&["linear_num_value_heads"]).map(|num_value_heads| LinearAttentionConfig {
                num_key_heads: view.u64(&["linear_num_key_heads"]).unwrap_or(num_value_heads),
                num_value_heads,
                key_head_dim: view.u64(&["linear_key_head_dim"]).unwrap_or(0),
                value_head_dim: view.u64(&["linear_value_head_dim"]).unwrap_or(0),
                conv_kernel_dim: view.u64(&["linear_conv_kernel_dim"]).unwrap_or(4),
            }),
            index_topk: view.u64(&["index_topk"]),
            invalid,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_config_and_derived_head_dim() {
        let v = json!({"model_type": "x_vl", "vision_config": {},
            "text_config": {"architectures": ["XForCausalLM"], "hidden_size": 64, "num_attention_heads": 4,
                             "num_hidden_layers": 2, "vocab_size": 10}});
        let c = ModelConfig::from_value(&v);
        assert_eq!(c.architecture.as_deref(), Some("XForCausalLM"));
        assert_eq!(c.architecture_source, Some("text_config.architectures"));
        assert_eq!(c.head_dim, Some(16));
        assert!(c.head_dim_derived);
        assert_eq!(c.num_kv_heads, Some(4));
        assert!(c.has_vision);
        assert_eq!(c.tie_word_embeddings, None);
    }

    /// Qwen3-Omni: the language model's numbers are under `thinker_config.text_config`.
    #[test]
    fn omni_thinker_text_config() {
        let v = json!({"model_type": "qwen3_omni_moe", "architectures": ["Qwen3OmniMoeForConditionalGeneration"],
            "thinker_config": {"text_config": {"hidden_size": 64, "num_attention_heads": 4, "num_key_value_heads": 2,
                                               "head_dim": 32, "num_hidden_layers": 2, "vocab_size": 256}}});
        let c = ModelConfig::from_value(&v);
        assert_eq!(c.architecture.as_deref(), Some("Qwen3OmniMoeForConditionalGeneration"));
        assert_eq!((c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim), (Some(64), Some(4), Some(2), Some(32)));
        assert_eq!((c.num_layers, c.vocab_size), (Some(2), Some(256)));
    }

    /// vLLM 0.33's KV-head normalisation (config.py CONFIG_FIELD_ALIASES, the Falcon and Dbrx
    /// convertors in model_arch_config_convertor.py).
    #[test]
    fn kv_heads_as_vllm_reads_them() {
        let kv = |v: serde_json::Value| ModelConfig::from_value(&v).num_kv_heads;
        // falcon-7b: multi-query, whatever num_kv_heads says.
        assert_eq!(
            kv(json!({"model_type": "falcon", "num_attention_heads": 71, "num_kv_heads": 71, "multi_query": true})),
            Some(1)
        );
        // falcon-40b: the new decoder architecture ignores multi_query.
        assert_eq!(
            kv(json!({"model_type": "falcon", "num_attention_heads": 128, "num_kv_heads": 8, "multi_query": true,
                      "new_decoder_architecture": true})),
            Some(8)
        );
        // GPTBigCode's config class derives num_key_value_heads from multi_query (default true).
        assert_eq!(kv(json!({"model_type": "gpt_bigcode", "n_head": 12, "multi_query": true})), Some(1));
        assert_eq!(kv(json!({"model_type": "gpt_bigcode", "n_head": 12})), Some(1));
        assert_eq!(kv(json!({"model_type": "gpt_bigcode", "n_head": 12, "multi_query": false})), Some(12));
        // Other model types' multi_query means nothing to vLLM.
        assert_eq!(kv(json!({"model_type": "gpt2", "n_head": 12, "multi_query": true})), Some(12));
        // n_head_kv comes first, then num_kv_heads, num_key_value_heads, multi_query_group_num.
        assert_eq!(kv(json!({"num_attention_heads": 8, "n_head_kv": 2, "num_key_value_heads": 4})), Some(2));
        assert_eq!(kv(json!({"num_attention_heads": 32, "multi_query_group_num": 2})), Some(2));
        assert_eq!(kv(json!({"num_attention_heads": 48, "attn_config": {"kv_n_heads": 8}})), Some(8));
        assert_eq!(kv(json!({"num_attention_heads": 16})), Some(16));
    }

    #[test]
    fn moe_placement() {
        let ds =
            MoeConfig { num_experts: 8, first_k_dense_replace: Some(3), moe_layer_freq: Some(1), ..Default::default() };
        assert!(!ds.is_moe_layer(2));
        assert!(ds.is_moe_layer(3));
        let qw =
            MoeConfig { num_experts: 8, decoder_sparse_step: Some(2), mlp_only_layers: vec![3], ..Default::default() };
        // Jamba's default period 2, offset 1: experts on the odd layers.
        let jamba = MoeConfig {
            num_experts: 16,
            expert_layer_period: Some(2),
            expert_layer_offset: Some(1),
            ..Default::default()
        };
        assert_eq!((0..6).filter(|&i| jamba.is_moe_layer(i)).collect::<Vec<_>>(), vec![1, 3, 5]);
        assert!(!qw.is_moe_layer(0));
        assert!(qw.is_moe_layer(1));
        assert!(!qw.is_moe_layer(3));
        // ERNIE 4.5 MoE (ernie45_moe.py): start ≤ i ≤ end and (i + 1) % interval == 0.
        let v = serde_json::json!({"moe_num_experts": 8, "moe_layer_start_index": 1, "moe_layer_end_index": 4,
            "moe_layer_interval": 1, "num_hidden_layers": 6});
        let er = ModelConfig::from_value(&v).moe.unwrap();
        let moe: Vec<u64> = (0..6).filter(|&i| er.is_moe_layer(i)).collect();
        assert_eq!(moe, [1, 2, 3, 4]);
    }
}
