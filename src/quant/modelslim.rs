//! ModelSlim, vLLM-Ascend's own quantized format: `quant_model_description.json` (or the older
//! API's `quant_model_description_<type>.json`) names each saved tensor's scheme; vLLM-Ascend
//! (`--quantization ascend`) reads only that file and decides each layer by its `<prefix>.weight`
//! entry. What each scheme loads beside the weight is data (`modelslim.json`).

use crate::checkpoint::Checkpoint;
use crate::findings::{Code, Finding};
use serde::Deserialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::OnceLock;

/// The current pipeline's description file.
pub const DESCRIPTION: &str = "quant_model_description.json";

/// Keys of the description that are not tensors.
const META_KEYS: &[&str] = &[
    "version",
    "model_quant_type",
    "metadata",
    "group_size",
    "optional",
    "kv_cache_type",
    "fa_quant_type",
    "indexer_quant_type",
    "kv_quant_type",
    "reduce_quant_type",
];

/// A parsed description file.
#[derive(Debug, Clone)]
pub struct Description {
    /// The file it was read from (`quant_model_description.json` or `quant_model_description_w8a8_dynamic.json`).
    pub file: String,
    pub model_quant_type: Option<String>,
    /// Tensor name → scheme (`FLOAT`, `W8A8_DYNAMIC`, …).
    pub types: HashMap<String, String>,
    /// `group_size` (the MX methods' scale group along K; they default it to 32).
    pub group_size: Option<u64>,
    /// `kv_cache_type` (`C8`: an int8 KV cache on the attention layers that carry
    /// `k_proj.kv_cache_scale`).
    pub kv_cache_type: Option<String>,
    /// Every other non-tensor key with a number (`max_supported_tp`, …), for the contracts'
    /// `tp_limit`.
    pub numbers: BTreeMap<String, u64>,
    /// `fa_quant_type` and `indexer_quant_type` as written (JSON null included: the older API writes
    /// `"fa_quant_type": null`, which vLLM-Ascend's `!= ""` test counts as enabled).
    pub fa_quant_type: Option<Value>,
    pub indexer_quant_type: Option<Value>,
    /// Keys ending in `.quant_type` (msModelSlim's per-attention FA3 strings, `….indexer.quant_type`):
    /// values, not tensors.
    pub attention_keys: BTreeMap<String, String>,
}

/// An attention layer vLLM-Ascend builds with a ModelSlim attention method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttentionLayer {
    /// The decoder layer index (modelslim_config.py joins every `.N.` group of the key).
    pub layer: u64,
    /// The checkpoint's attention prefix (`model.layers.0.self_attn`): the marker key's stem.
    pub prefix: String,
    /// The scheme get_quant_type_for_layer returns (None: the key holds null).
    pub scheme: Option<String>,
}

/// The layer index vLLM-Ascend reads from a description key: `"".join(re.findall(r"\.(\d+)\.", key))`.
fn layer_index(key: &str) -> Option<u64> {
    let parts: Vec<&str> = key.split('.').collect();
    let n = parts.len();
    let ids: String = parts
        .iter()
        .enumerate()
        .filter(|(i, s)| *i > 0 && *i + 1 < n && !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
        .map(|(_, s)| *s)
        .collect();
    ids.parse().ok()
}

/// The attention-cache quantization a renamed tensor belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheQuant {
    /// `kv_cache_type: C8` (AscendC8KVCacheAttentionMethod on `<attn>.attn`).
    C8,
    /// `fa_quant_type` (the FAKQuant attention method on an MLA layer's `mla_attn.mla_attn`).
    Fa,
    /// `indexer_quant_type` (INT8_DYNAMIC's indexer rotations, same module).
    Indexer,
}

/// vLLM-Ascend's cache-scale mapper: checkpoint suffix → parameter suffix, per feature
/// (modelslim_config.py :: get_cache_scale_mapper lines 622-655, vllm-ascend 182b75ea84; vLLM 0.33.0's
/// AutoWeightsLoader.load_weights applies it to every tensor before the model sees it,
/// model_executor/models/utils.py).
const CACHE_SCALE_RENAMES: &[(CacheQuant, &str, &str)] = &[
    (CacheQuant::C8, ".k_proj.kv_cache_scale", ".attn.k_cache_scale"),
    (CacheQuant::C8, ".k_proj.kv_cache_offset", ".attn.k_cache_offset"),
    (CacheQuant::C8, ".v_proj.kv_cache_scale", ".attn.v_cache_scale"),
    (CacheQuant::C8, ".v_proj.kv_cache_offset", ".attn.v_cache_offset"),
    (CacheQuant::Fa, ".fa_q.scale", ".mla_attn.mla_attn.fa_q.scale"),
    (CacheQuant::Fa, ".fa_k.scale", ".mla_attn.mla_attn.fa_k.scale"),
    (CacheQuant::Fa, ".fa_v.scale", ".mla_attn.mla_attn.fa_v.scale"),
    (CacheQuant::Fa, ".fa_q.offset", ".mla_attn.mla_attn.fa_q.offset"),
    (CacheQuant::Fa, ".fa_k.offset", ".mla_attn.mla_attn.fa_k.offset"),
    (CacheQuant::Fa, ".fa_v.offset", ".mla_attn.mla_attn.fa_v.offset"),
    (CacheQuant::Indexer, ".indexer.q_rot", ".mla_attn.mla_attn.indexer.q_rot"),
    (CacheQuant::Indexer, ".indexer.k_rot", ".mla_attn.mla_attn.indexer.k_rot"),
];

/// A checkpoint tensor vLLM-Ascend's cache-scale mapper renames.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheRename {
    pub feature: CacheQuant,
    /// The parameter name it is loaded as.
    pub param: String,
    /// Whether the attention method that registers that parameter runs on this layer: C8 on the
    /// description's C8 layers of a non-MLA model (the parameters sit on `<attn>.attn`), FAKQuant /
    /// the indexer on its attention layers of an MLA model (on `mla_attn.mla_attn`, which only MLA
    /// attention has). Where it does not, the model has no such parameter and its loader refuses
    /// the renamed name as it refuses any unknown one.
    pub registered: bool,
}

impl Description {
    /// How vLLM-Ascend renames `name` before loading (None: the mapper leaves it alone, because
    /// no enabled feature's suffix ends it).
    pub fn cache_rename(&self, name: &str, mla: bool) -> Option<CacheRename> {
        let enabled = |v: &Option<Value>| v.as_ref().is_some_and(|v| v.as_str() != Some(""));
        let (c8, fa, indexer) = (
            self.kv_cache_type.as_deref() == Some("C8"),
            enabled(&self.fa_quant_type),
            enabled(&self.indexer_quant_type),
        );
        let &(feature, from, to) = CACHE_SCALE_RENAMES.iter().find(|(f, from, _)| {
            name.ends_with(from)
                && match f {
                    CacheQuant::C8 => c8,
                    CacheQuant::Fa => fa,
                    CacheQuant::Indexer => indexer,
                }
        })?;
        let param = format!("{}{to}", &name[..name.len() - from.len()]);
        let layer = layer_index(name);
        let registered = match feature {
            CacheQuant::C8 => !mla && layer.is_some_and(|l| self.c8_layers().contains(&l)),
            CacheQuant::Fa | CacheQuant::Indexer => {
                mla && layer.is_some_and(|l| self.attention_layers().iter().any(|a| a.layer == l))
            }
        };
        Some(CacheRename { feature, param, registered })
    }
    pub fn from_value(file: &str, v: &Value) -> Option<Description> {
        let obj = v.as_object()?;
        let not_meta = |k: &&String| !META_KEYS.contains(&k.as_str());
        let types = obj
            .iter()
            .filter(|(k, _)| not_meta(k) && !k.ends_with(".quant_type"))
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect();
        let attention_keys = obj
            .iter()
            .filter(|(k, _)| not_meta(k) && k.ends_with(".quant_type"))
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect();
        Some(Description {
            file: file.to_string(),
            model_quant_type: obj.get("model_quant_type").and_then(Value::as_str).map(str::to_string),
            types,
            group_size: obj.get("group_size").and_then(Value::as_u64),
            kv_cache_type: obj.get("kv_cache_type").and_then(Value::as_str).map(str::to_string),
            numbers: obj.iter().filter_map(|(k, v)| Some((k.clone(), v.as_u64()?))).collect(),
            fa_quant_type: obj.get("fa_quant_type").cloned(),
            indexer_quant_type: obj.get("indexer_quant_type").cloned(),
            attention_keys,
        })
    }

    /// The attention layers vLLM-Ascend builds with an attention method, by layer index
    /// (modelslim_config.py :: _add_kvcache_quant_metadata lines 1034-1052: `fa_quant_type` /
    /// `indexer_quant_type` other than "" enable the keys containing `fa_k.scale` /
    /// `indexer.quant_type`; get_quant_method lines 741-746), each with the scheme
    /// get_quant_type_for_layer gives it (lines 492-500: `fa_quant_type` when the key is present, else
    /// `indexer_quant_type`), vllm-ascend 182b75ea84.
    pub fn attention_layers(&self) -> Vec<AttentionLayer> {
        let enabled = |v: &Option<Value>| v.as_ref().is_some_and(|v| v.as_str() != Some(""));
        let scheme = match (&self.fa_quant_type, &self.indexer_quant_type) {
            (Some(v), _) | (None, Some(v)) => v.as_str().map(str::to_string),
            (None, None) => None,
        };
        let mut out: BTreeMap<u64, AttentionLayer> = BTreeMap::new();
        let keys = self.types.keys().chain(self.attention_keys.keys());
        for key in keys {
            for (on, marker) in [
                (enabled(&self.fa_quant_type), ".fa_k.scale"),
                (enabled(&self.indexer_quant_type), ".indexer.quant_type"),
            ] {
                let Some(at) = key.find(marker).filter(|_| on) else { continue };
                let Some(layer) = layer_index(key) else { continue };
                // A layer that is both keeps its FAKQuant prefix (the first marker).
                out.entry(layer).or_insert_with(|| AttentionLayer {
                    layer,
                    prefix: key[..at].to_string(),
                    scheme: scheme.clone(),
                });
            }
        }
        out.into_values().collect()
    }

    /// Bytes one rank holds for the attention methods' parameters (the contracts' `attention.params`)
    /// of the layers in `layers` (a PP stage; None: all), at TP `tp`: rows-split parameters hold
    /// their heads / TP, replicated ones the whole tensor; `model_bytes` is the model dtype's size,
    /// `index_head_dim` the config's (D). A scheme with no attention contract adds nothing (it does
    /// not start).
    pub fn attention_rank_bytes(
        &self,
        shape: &AttentionDims,
        tp: u64,
        layers: Option<&std::ops::RangeInclusive<u64>>,
    ) -> u64 {
        let tp = tp.max(1);
        self.attention_layers()
            .iter()
            .filter(|l| layers.is_none_or(|r| r.contains(&l.layer)))
            .filter_map(|l| attention_contract(l.scheme.as_deref()?))
            .map(|a| {
                a.params
                    .iter()
                    .map(|p| {
                        let elems: u64 = p
                            .shape
                            .iter()
                            .enumerate()
                            .map(|(i, d)| {
                                let v = shape.dim(d).unwrap_or(0);
                                if i == 0 && p.split == Split::Rows {
                                    shape.rank_rows(d, tp)
                                } else {
                                    v
                                }
                            })
                            .product();
                        elems.saturating_mul(p.alloc_bytes(shape.model_bytes))
                    })
                    .sum::<u64>()
            })
            .sum()
    }

    /// The MX scale group along K (vLLM-Ascend's methods: `quant_description.get("group_size", 32)`).
    pub fn group(&self) -> u64 {
        self.group_size.filter(|&g| g > 0).unwrap_or(32)
    }

    /// The decoder layers whose KV cache vLLM-Ascend keeps in int8 (C8): with `kv_cache_type` C8,
    /// those whose `…k_proj.kv_cache_scale` the description lists
    /// (vllm_ascend/quantization/modelslim_config.py :: _add_kvcache_quant_metadata, and
    /// methods/kv_c8.py :: AscendC8KVCacheAttentionMethod.create_weights: kv_cache_torch_dtype int8
    /// unless the instance is a PD KV producer; vllm-ascend 182b75ea84). Empty without C8.
    pub fn c8_layers(&self) -> std::collections::BTreeSet<u64> {
        if self.kv_cache_type.as_deref() != Some("C8") {
            return Default::default();
        }
        self.types
            .keys()
            .filter(|k| k.contains("k_proj.kv_cache_scale"))
            .filter_map(|k| {
                // vLLM-Ascend joins every `.N.` group of the name; one layer index is the case it handles.
                let ids: String =
                    k.split('.').filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())).collect();
                ids.parse().ok()
            })
            .collect()
    }

    /// The schemes the description uses whose methods need another hardware family than `npu`
    /// (scheme, family, the contract's source), sorted.
    pub fn needs_device(&self, npu: Option<crate::target::Npu>) -> Vec<(&str, crate::target::Npu, &'static str)> {
        let schemes: std::collections::BTreeSet<&str> = self.types.values().map(String::as_str).collect();
        schemes
            .into_iter()
            .filter_map(|s| {
                let c = contract(s)?;
                let want = crate::target::Npu::parse(c.device.as_deref()?)?;
                // 310P-only schemes are the 310P registry's question (device_refusal).
                (want != crate::target::Npu::P310 && npu != Some(want)).then_some((s, want, c.source.as_str()))
            })
            .collect()
    }

    /// The first layer vLLM-Ascend refuses to build on `npu` because of which registry serves it
    /// (scheme, layer type, the error text): on a 310P the 310P registry serves linear and MoE layers
    /// and refuses the rest (vllm_ascend/_310p/quantization/modelslim_config.py lines 49-81); anywhere
    /// else a 310P-only scheme has no method (modelslim_config.py lines 535-541). A weight under
    /// `.experts.` is an MoE layer's. Attention layers use the main registry on every device
    /// (_310p/quantization/modelslim_config.py line 144).
    pub fn device_refusal(&self, npu: Option<crate::target::Npu>) -> Option<(String, LayerType, String)> {
        let reg = registry_310p();
        let mut weights: Vec<(&String, &String)> = self.types.iter().filter(|(k, _)| k.ends_with(".weight")).collect();
        weights.sort();
        for (name, scheme) in weights {
            let layer = if name.contains(".experts.") { LayerType::Moe } else { LayerType::Linear };
            let refused = if npu == Some(crate::target::Npu::P310) {
                (!reg.serves(scheme, layer)).then(|| reg.refusal(scheme, layer))
            } else {
                contract(scheme)
                    .filter(|c| c.device.as_deref() == Some("310P"))
                    .map(|_| Contract::unsupported_text(scheme, layer))
            };
            if let Some(text) = refused {
                return Some((scheme.clone(), layer, text));
            }
        }
        None
    }

    /// The description beside the weights: the current pipeline's name first, then the older API's
    /// `quant_model_description_<type>.json`. Returns the file name and its JSON.
    pub fn find(root: &Path) -> Option<String> {
        if root.join(DESCRIPTION).is_file() {
            return Some(DESCRIPTION.to_string());
        }
        let mut older: Vec<String> = std::fs::read_dir(root)
            .ok()?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("quant_model_description_") && n.ends_with(".json"))
            .collect();
        older.sort();
        older.into_iter().next()
    }

    /// How many weights each scheme covers, for the report (`W8A8_DYNAMIC 14, FLOAT 5`).
    pub fn weight_schemes(&self) -> String {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (name, scheme) in &self.types {
            if name.ends_with(".weight") {
                *counts.entry(scheme).or_default() += 1;
            }
        }
        counts.iter().map(|(s, n)| format!("{s} {n}")).collect::<Vec<_>>().join(", ")
    }

    /// The scheme of the layer whose weight is `module.weight`.
    pub fn scheme_of(&self, module: &str) -> Option<&str> {
        self.types.get(&format!("{module}.weight")).map(String::as_str)
    }
}

/// One tensor a scheme loads beside the weight.
#[derive(Debug, Clone, Deserialize)]
pub struct Companion {
    pub suffix: String,
    pub dtypes: Vec<String>,
    /// Over the checkpoint weight's [N, K] (K logical: the contract's `packed_k` times the stored
    /// K): `N`, `K`, `N2` (2N: int4 packed two per byte), `K/2`, `K/G` (cdiv by the description's
    /// group size), a number, or `*`.
    pub shape: Vec<String>,
    /// The shape for an MoE down projection (FusedMoE shard `w2`), where it differs.
    #[serde(default)]
    pub shape_down: Option<Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Contract {
    pub weight_dtypes: Vec<String>,
    pub companions: Vec<Companion>,
    /// Parameters the method allocates that the checkpoint does not carry (counted in memory,
    /// never required; dtype `model`: the model's dtype).
    #[serde(default)]
    pub allocated: Vec<Companion>,
    /// The layer types vLLM-Ascend registers a method for (`linear`, `moe`).
    pub layers: Vec<LayerType>,
    /// The hardware family its kernels need (`A5`: Ascend 950); none: every A2 / A3 / A5.
    #[serde(default)]
    pub device: Option<String>,
    /// Values per stored element along K (fp4: 2): the weight is [N, K / packed_k] on disk.
    #[serde(default = "one")]
    pub packed_k: u64,
    /// A TP the method refuses above a description value.
    #[serde(default)]
    pub tp_limit: Option<TpLimit>,
    /// The vLLM-Ascend source the contract mirrors.
    #[serde(default)]
    pub source: String,
    /// The msModelSlim checkpoint that exercises it, or why there is none.
    #[serde(default)]
    pub fixture: String,
    /// Weights packed this many values per byte along N (int4: 2); the checkpoint weight is [N / packed_n, K].
    #[serde(default = "one")]
    pub packed_n: u64,
    /// The routed experts' down-projection `scale_bias` has this many columns, split by the experts'
    /// TP (`w2_scale_bias` [E, hidden, columns // tp]): more TP than columns refuses to build, a TP
    /// that does not divide them leaves columns unloaded. `expert_tp_source` cites vLLM-Ascend.
    #[serde(default)]
    pub expert_tp_columns: Option<u64>,
    #[serde(default)]
    pub expert_tp_source: String,
    /// An attention method's parameters (the `attention` layer type).
    #[serde(default)]
    pub attention: Option<AttentionContract>,
}

fn one() -> u64 {
    1
}

/// What an attention scheme (`FAKQuant`, `INT8_DYNAMIC`) registers on the attention layer.
#[derive(Debug, Clone, Deserialize)]
pub struct AttentionContract {
    /// The description key that enables it (`fa_quant_type`).
    pub enable_key: String,
    /// The key fragment whose keys name its layers (`fa_k.scale`).
    pub marker: String,
    pub params: Vec<AttentionParam>,
    /// The loader's assertion text (`{loaded}`, `{param}`, `{tp}`, `{rank}`).
    pub load_error: String,
    pub source_params: String,
}

/// How a parameter is split over TP ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    /// Dim 0 narrowed to shape[0] // tp at rank * that.
    Rows,
    /// Whole on every rank.
    Replicated,
}

/// One attention-method parameter, under the checkpoint's attention prefix.
#[derive(Debug, Clone, Deserialize)]
pub struct AttentionParam {
    pub suffix: String,
    /// Checkpoint dtypes accepted (the loader copy_s, which casts).
    pub dtypes: Vec<String>,
    /// The parameter's dtype: `model`, `F32`, `I8`.
    pub alloc: String,
    /// Over `H`, `KVH`, `D` or numbers (whole model; per rank for `Rows`, dim 0 / TP).
    pub shape: Vec<String>,
    pub split: Split,
    /// Read from the checkpoint (false: allocated only).
    pub loaded: bool,
}

impl AttentionParam {
    pub fn alloc_bytes(&self, model_bytes: u64) -> u64 {
        match self.alloc.as_str() {
            "model" => model_bytes,
            "F32" | "I32" => 4,
            "BF16" | "F16" => 2,
            _ => 1,
        }
    }
}

/// The config sizes attention contracts are written over.
#[derive(Debug, Clone, Copy, Default)]
pub struct AttentionDims {
    /// num_attention_heads.
    pub heads: Option<u64>,
    /// The attention layer's KV heads: 1 for MLA, else num_key_value_heads.
    pub kv_heads: Option<u64>,
    /// index_head_dim (DeepSeek sparse attention's indexer).
    pub index_head_dim: Option<u64>,
    /// Bytes of the model dtype (the parameters torch.get_default_dtype() allocates).
    pub model_bytes: u64,
    /// MLA: one latent KV head on every rank.
    pub mla: bool,
}

impl AttentionDims {
    /// From a config and its raw JSON (for `index_head_dim`, which ModelConfig does not keep).
    pub fn of(cfg: &crate::checkpoint::config::ModelConfig, json: Option<&Value>) -> AttentionDims {
        let mla = cfg.mla.is_some();
        AttentionDims {
            heads: cfg.num_heads,
            kv_heads: if mla { Some(1) } else { cfg.num_kv_heads.or(cfg.num_heads) },
            index_head_dim: json.and_then(|j| j.get("index_head_dim")).and_then(Value::as_u64),
            model_bytes: match cfg.torch_dtype.as_deref() {
                Some("float32") => 4,
                _ => 2,
            },
            mla,
        }
    }

    pub fn dim(&self, d: &str) -> Option<u64> {
        match d {
            "H" => self.heads,
            "KVH" => self.kv_heads,
            "D" => self.index_head_dim,
            n => n.parse().ok(),
        }
    }

    /// A rows-split dimension on one rank: heads / TP; KV heads replicate below one per rank (vLLM's
    /// Attention keeps max(1, kv_heads / tp)), and an MLA layer's single latent head is every rank's.
    pub fn rank_rows(&self, d: &str, tp: u64) -> u64 {
        let v = self.dim(d).unwrap_or(0);
        match d {
            "KVH" => (v / tp).max(1.min(v)),
            _ => v / tp,
        }
    }
}

/// The attention contract of `scheme`, if vLLM-Ascend registers it for attention layers.
pub fn attention_contract(scheme: &str) -> Option<&'static AttentionContract> {
    contract(scheme).filter(|c| c.serves(LayerType::Attention))?.attention.as_ref()
}

/// The 310P registry (vllm_ascend/_310p/quantization): schemes → layer types, and its refusal.
#[derive(Debug, Deserialize)]
pub struct Registry310p {
    pub schemes: BTreeMap<String, Vec<LayerType>>,
    pub error: String,
    pub source: String,
}

impl Registry310p {
    /// Whether the 310P config builds `layer` with `scheme` (FLOAT layers are skipped before the
    /// registry is asked: modelslim_config.py :: is_layer_skipped_ascend).
    pub fn serves(&self, scheme: &str, layer: LayerType) -> bool {
        scheme == "FLOAT" || self.schemes.get(scheme).is_some_and(|l| l.contains(&layer))
    }

    pub fn refusal(&self, scheme: &str, layer: LayerType) -> String {
        self.error.replace("{scheme}", scheme).replace("{layer}", layer.as_str())
    }
}

pub fn registry_310p() -> &'static Registry310p {
    &all().registry_310p
}

/// vLLM-Ascend's layer types for quantization methods (`@register_scheme(quant_type, layer_type)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerType {
    Linear,
    Moe,
    Attention,
}

impl LayerType {
    pub fn as_str(self) -> &'static str {
        match self {
            LayerType::Linear => "linear",
            LayerType::Moe => "moe",
            LayerType::Attention => "attention",
        }
    }
}

/// A TP limit read from the description (`key`, or `default` when absent); `error` is the method's
/// text with `{tp}` and `{max}`.
#[derive(Debug, Clone, Deserialize)]
pub struct TpLimit {
    pub key: String,
    pub default: u64,
    pub error: String,
}

impl Contract {
    /// Whether vLLM-Ascend has a method for this scheme on `layer`.
    pub fn serves(&self, layer: LayerType) -> bool {
        self.layers.contains(&layer)
    }

    /// The NotImplementedError vLLM-Ascend raises for a scheme on a layer type it has no method
    /// for (vllm_ascend/quantization/modelslim_config.py :: create_scheme_for_layer, 182b75ea84).
    pub fn unsupported_text(scheme: &str, layer: LayerType) -> String {
        format!("NotImplementedError: Currently, vLLM Ascend doesn't support quant_type={scheme} for layer_type={}. Please use a supported quantization format or load the model with its original float weights.", layer.as_str())
    }
}

#[derive(Debug, Deserialize)]
struct Contracts {
    schemes: BTreeMap<String, Contract>,
    registry_310p: Registry310p,
}

fn all() -> &'static Contracts {
    static C: OnceLock<Contracts> = OnceLock::new();
    C.get_or_init(|| serde_json::from_str(include_str!("modelslim.json")).expect("embedded modelslim.json is valid"))
}

fn contracts() -> &'static BTreeMap<String, Contract> {
    &all().schemes
}

/// Every companion suffix any scheme loads (`weight_scale`, `quant_bias`, …).
pub fn companion_suffixes() -> impl Iterator<Item = &'static str> {
    contracts().values().flat_map(|c| c.companions.iter().map(|c| c.suffix.as_str()))
}

/// The contract of a scheme, if vLLM-Ascend has a method for it.
pub fn contract(scheme: &str) -> Option<&'static Contract> {
    contracts().get(scheme)
}

impl Companion {
    /// The expected shape for a weight of checkpoint shape `[n, k]` (None for a `*` dimension);
    /// `down`: the weight is an MoE down projection.
    pub fn shape_for(&self, weight: &[u64], down: bool, packed_k: u64, group: u64) -> Vec<Option<u64>> {
        let (n, k) = (weight.first().copied().unwrap_or(0), weight.get(1).copied().unwrap_or(1));
        let k = k.saturating_mul(packed_k.max(1));
        let dims = match (&self.shape_down, down) {
            (Some(d), true) => d,
            _ => &self.shape,
        };
        dims.iter()
            .map(|d| match d.as_str() {
                "N" => Some(n),
                "N2" => Some(n.saturating_mul(2)),
                "K" => Some(k),
                "K/2" => Some(k / 2),
                "K/G" => Some(k.div_ceil(group.max(1))),
                "*" => None,
                lit => lit.parse().ok(),
            })
            .collect()
    }
}

/// The contract checks: description ↔ tensors both ways, and per quantized layer the tensors its
/// vLLM-Ascend method loads, with their dtypes and shapes.
pub fn check(ck: &Checkpoint, d: &Description, out: &mut Vec<Finding>) {
    let file = d.file.as_str();
    if file != DESCRIPTION {
        out.push(
            Finding::new(
                Code::ModelslimDescriptionName,
                format!("the description is {file}; vLLM-Ascend reads only {DESCRIPTION}: rename it (`mv {file} {DESCRIPTION}`)"),
            )
            .file(file),
        );
    }
    let main_layers = ck.config.as_ref().and_then(|c| c.num_layers);
    for t in ck.tensors() {
        let name = t.entry.name.as_str();
        if d.types.contains_key(name) {
            continue;
        }
        // A linear / embedding weight: vLLM-Ascend looks its layer up by `<prefix>.weight` when it
        // builds it (get_quant_method → create_scheme_for_layer → get_linear_quant_type, or
        // is_layer_skipped_ascend for a fused layer: quant_description[key], 182b75ea84).
        let layer_weight = name.ends_with(".weight") && t.entry.shape.len() == 2;
        let layer = name.split('.').skip_while(|s| *s != "layers").nth(1).and_then(|n| n.parse::<u64>().ok());
        let mtp = layer.zip(main_layers).is_some_and(|(l, n)| l >= n);
        let (code, message) = match (layer_weight, mtp) {
            (true, true) => (
                Code::ModelslimUndescribedMtp,
                format!("{name} (MTP layer {}) is not in {file}: with speculative decoding vLLM-Ascend raises KeyError: '{name}' building the draft model", layer.unwrap_or(0)),
            ),
            (true, false) => (
                Code::ModelslimUndescribed,
                format!("{name} is not in {file}: vLLM-Ascend raises KeyError: '{name}' when it builds the layer (modelslim_config.py :: get_linear_quant_type)"),
            ),
            _ => (
                Code::ModelslimUndescribed,
                format!("{name} is not in {file}: vLLM-Ascend decides every layer's scheme from that file"),
            ),
        };
        out.push(Finding::new(code, message).file(&t.shard.name).tensor(name));
    }
    let mut names: Vec<(&String, &String)> = d.types.iter().collect();
    names.sort();
    for (name, scheme) in names {
        let Some(t) = ck.get(name) else {
            out.push(
                Finding::new(Code::ModelslimMissing, format!("{file} lists {name} ({scheme}), but no shard holds it"))
                    .file(file)
                    .tensor(name),
            );
            continue;
        };
        let Some(module) = name.strip_suffix(".weight") else { continue };
        let Some(c) = contract(scheme) else {
            out.push(
                Finding::new(
                    Code::ModelslimScheme,
                    format!(
                        "{name} is {scheme} in {file}, a scheme vLLM-Ascend registers no method for: {}",
                        Contract::unsupported_text(scheme, LayerType::Linear)
                    ),
                )
                .file(file)
                .tensor(name),
            );
            continue;
        };
        let dtype = t.entry.dtype.as_str();
        if !c.weight_dtypes.iter().any(|d| d == dtype) {
            out.push(
                Finding::new(
                    Code::ModelslimCompanion,
                    format!("{name} is {dtype}; a {scheme} weight is {}", c.weight_dtypes.join(" or ")),
                )
                .file(&t.shard.name)
                .tensor(name),
            );
        }
        for comp in &c.companions {
            let cname = format!("{module}.{}", comp.suffix);
            let Some(ct) = ck.get(&cname) else {
                if d.types.contains_key(&cname) {
                    continue; // listed but absent: reported as modelslim-missing above
                }
                out.push(
                    Finding::new(
                        Code::ModelslimCompanion,
                        format!("{cname} is missing: vLLM-Ascend's {scheme} method loads it for {name}, and vLLM does not report a quantized model's uninitialized parameters"),
                    )
                    .file(&t.shard.name)
                    .tensor(&cname),
                );
                continue;
            };
            // Which projection a tensor is, is the family's knowledge (remap checks it by shard id);
            // here either of the scheme's shapes is accepted.
            let fits = |want: &Vec<Option<u64>>| {
                want.len() == ct.entry.shape.len()
                    && want.iter().zip(&ct.entry.shape).all(|(w, h)| w.is_none_or(|w| w == *h))
            };
            let (pk, g) = (c.packed_k, d.group());
            let want = comp.shape_for(&t.entry.shape, false, pk, g);
            let shape_ok =
                fits(&want) || (comp.shape_down.is_some() && fits(&comp.shape_for(&t.entry.shape, true, pk, g)));
            let dtype_ok = comp.dtypes.iter().any(|d| d == ct.entry.dtype.as_str());
            if !shape_ok || !dtype_ok {
                let want: Vec<String> = want.iter().map(|d| d.map_or("*".into(), |d| d.to_string())).collect();
                out.push(
                    Finding::new(
                        Code::ModelslimCompanion,
                        format!(
                            "{cname} is {} {:?}; {scheme} expects {} [{}] for {name} {:?}",
                            ct.entry.dtype.as_str(),
                            ct.entry.shape,
                            comp.dtypes.join(" or "),
                            want.join(", "),
                            t.entry.shape
                        ),
                    )
                    .file(&ct.shard.name)
                    .tensor(&cname),
                );
            }
        }
    }
    check_attention(ck, d, out);
}

/// vLLM's `torch.Size([4, 1])`.
fn torch_size(shape: &[u64]) -> String {
    format!("torch.Size([{}])", shape.iter().map(u64::to_string).collect::<Vec<_>>().join(", "))
}

/// The attention layers' methods (FAKQuant, INT8_DYNAMIC): the scheme must be one vLLM-Ascend
/// registers for attention, and each parameter its create_weights registers must be in the
/// checkpoint with a shape its loader accepts at TP 1 (the per-rank split is plan's).
fn check_attention(ck: &Checkpoint, d: &Description, out: &mut Vec<Finding>) {
    let file = d.file.as_str();
    let dims = ck.config.as_ref().map(|c| AttentionDims::of(c, ck.config_json.as_ref())).unwrap_or_default();
    for l in d.attention_layers() {
        let Some(scheme) = l.scheme.as_deref() else {
            out.push(
                Finding::new(
                    Code::ModelslimScheme,
                    format!("layer {} is an attention-quant layer of {file}, whose fa_quant_type / indexer_quant_type is null: vLLM-Ascend raises ValueError: Could not determine quantization type for layer {}.attn (layer_type=attention). (modelslim_config.py :: create_scheme_for_layer lines 525-528)", l.layer, l.prefix),
                )
                .file(file),
            );
            continue;
        };
        let Some(a) = attention_contract(scheme) else {
            out.push(
                Finding::new(
                    Code::ModelslimScheme,
                    format!(
                        "layer {} ({}) is an attention-quant layer and {file} gives attention layers {scheme}, which vLLM-Ascend registers no attention method for: {}",
                        l.layer,
                        l.prefix,
                        Contract::unsupported_text(scheme, LayerType::Attention)
                    ),
                )
                .file(file),
            );
            continue;
        };
        for p in a.params.iter().filter(|p| p.loaded) {
            let name = format!("{}.{}", l.prefix, p.suffix);
            let Some(t) = ck.get(&name) else {
                out.push(
                    Finding::new(
                        Code::ModelslimCompanion,
                        format!("{name} is missing: vLLM-Ascend's {scheme} attention method registers it for layer {} and loads it from the checkpoint; vLLM does not report a quantized model's uninitialized parameters, so it keeps torch.empty's bytes ({})", l.layer, a.source_params.split_once(':').map_or("", |x| x.0)),
                    )
                    .tensor(&name),
                );
                continue;
            };
            let want: Vec<Option<u64>> = p.shape.iter().map(|s| dims.dim(s)).collect();
            let have = &t.entry.shape;
            let numel = |s: &[u64]| s.iter().product::<u64>();
            let known = want.iter().all(Option::is_some);
            let want_shape: Vec<u64> = want.iter().map(|w| w.unwrap_or(0)).collect();
            // One element into one element is a fill; anything else must match the parameter (TP 1).
            let fill = p.split == Split::Rows && known && numel(&want_shape) == 1 && numel(have) == 1;
            let fits = if known {
                fill || *have == want_shape
            } else {
                // A size the config does not give (index_head_dim): the rank and the known sizes.
                have.len() == want.len() && want.iter().zip(have).all(|(w, h)| w.is_none_or(|w| w == *h))
            };
            let dtype_ok = p.dtypes.iter().any(|x| x == t.entry.dtype.as_str());
            if !fits {
                let param = torch_size(&want_shape);
                let text = a
                    .load_error
                    .replace("{loaded}", &torch_size(have))
                    .replace("{param}", &param)
                    .replace("{tp}", "1")
                    .replace("{rank}", "0");
                out.push(
                    Finding::new(
                        Code::ModelslimCompanion,
                        format!(
                            "{name} is {:?}; vLLM-Ascend's {scheme} method registers [{}] = {param}: {text}",
                            have,
                            p.shape.join(", ")
                        ),
                    )
                    .file(&t.shard.name)
                    .tensor(&name),
                );
            } else if !dtype_ok {
                out.push(
                    Finding::new(
                        Code::ModelslimCompanion,
                        format!("{name} is {}; {scheme} expects {}", t.entry.dtype.as_str(), p.dtypes.join(" or ")),
                    )
                    .file(&t.shard.name)
                    .tensor(&name),
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// vLLM-Ascend's W4A8 down projection scale_bias is [hidden, 16] in the checkpoint whatever the
    /// intermediate size (w4a8.py :: AscendW4A8DynamicFusedMoEMethod); gate/up's are [N, 1]. A real
    /// msModelSlim Qwen3-MoE with intermediate 48 writes [128, 16]: the old [N, K/2] contract
    /// expected [128, 24].
    #[test]
    fn w4a8_down_scale_bias_is_sixteen_columns() {
        let c = contract("W4A8_DYNAMIC").unwrap();
        let sb = c.companions.iter().find(|x| x.suffix == "scale_bias").unwrap();
        // down_proj weight [hidden / 2, intermediate] = [64, 48] (int4 packed along N).
        assert_eq!(sb.shape_for(&[64, 48], true, 1, 32), vec![Some(128), Some(16)]);
        assert_eq!(sb.shape_for(&[24, 128], false, 1, 32), vec![Some(48), Some(1)]);
    }

    /// Every scheme vLLM-Ascend 182b75ea84 registers with `@register_scheme(quant_type, layer_type)`
    /// in vllm_ascend/quantization/methods/*.py (FAKQuant and INT8_DYNAMIC for attention: kv_c8.py
    /// lines 30, 75) and in the 310P registry (vllm_ascend/_310p/quantization/methods/*.py: W8A8S
    /// w8a8s.py line 28, W8A8SC w8a8sc.py line 31) has a contract with exactly those layer types, a
    /// source and a fixture or the reason it has none.
    #[test]
    fn every_registered_scheme_has_a_contract() {
        use LayerType::{Attention, Linear, Moe};
        let registered: &[(&str, &[LayerType])] = &[
            ("W8A8", &[Linear]),
            ("W8A8_DYNAMIC", &[Linear, Moe]),
            ("W8A8_MIX", &[Linear]),
            ("W8A16", &[Linear]),
            ("W4A16", &[Moe]),
            ("W4A8_DYNAMIC", &[Moe]),
            ("W4A4_DYNAMIC", &[Linear]),
            ("W4A4_FLATQUANT_DYNAMIC", &[Linear]),
            ("W4A4_MXFP4", &[Linear, Moe]),
            ("W4A4_MXFP4_FLATQUANT", &[Linear]),
            ("W4A8_MXFP", &[Linear, Moe]),
            ("W4A16_MXFP4", &[Moe]),
            ("W8A8_MXFP8", &[Linear, Moe]),
            ("W8A8FP8_DYNAMIC", &[Linear, Moe]),
            ("FAKQuant", &[Attention]),
            ("INT8_DYNAMIC", &[Attention]),
            ("W8A8S", &[Linear]),
            ("W8A8SC", &[Linear]),
        ];
        for (scheme, layers) in registered {
            let c = contract(scheme).unwrap_or_else(|| panic!("{scheme}: no contract"));
            assert_eq!(&c.layers, layers, "{scheme}");
            assert!(c.source.contains("vllm_ascend/"), "{scheme}: source");
            assert!(!c.fixture.is_empty(), "{scheme}: fixture or reason");
        }
        let a5: Vec<&str> =
            registered.iter().map(|r| r.0).filter(|s| contract(s).unwrap().device.as_deref() == Some("A5")).collect();
        assert_eq!(
            a5,
            ["W4A4_MXFP4", "W4A4_MXFP4_FLATQUANT", "W4A8_MXFP", "W4A16_MXFP4", "W8A8_MXFP8", "W8A8FP8_DYNAMIC"]
        );
        let p310: Vec<&str> =
            registered.iter().map(|r| r.0).filter(|s| contract(s).unwrap().device.as_deref() == Some("310P")).collect();
        assert_eq!(p310, ["W8A8S", "W8A8SC"]);
        // Exactly the attention schemes carry an attention contract.
        for (scheme, layers) in registered {
            assert_eq!(contract(scheme).unwrap().attention.is_some(), layers.contains(&Attention), "{scheme}");
        }
        // The 310P registry: w8a8_static.py line 29, w8a8_dynamic.py lines 35 and 121, w8a8s.py line 28,
        // w8a8sc.py line 31 (vllm_ascend/_310p/quantization/methods, 182b75ea84).
        let reg: Vec<(&str, Vec<LayerType>)> =
            registry_310p().schemes.iter().map(|(s, l)| (s.as_str(), l.clone())).collect();
        assert_eq!(
            reg,
            vec![
                ("W8A8", vec![Linear]),
                ("W8A8S", vec![Linear]),
                ("W8A8SC", vec![Linear]),
                ("W8A8_DYNAMIC", vec![Linear, Moe])
            ]
        );
    }

    /// kv_c8.py's parameters (vllm-ascend 182b75ea84): FAKQuant lines 44-49, scale [heads, 1] in the
    /// model dtype and offset int8 [heads, 1] for q, [kv heads, 1] for k and v, dim 0 split by TP
    /// (lines 19-20); INT8_DYNAMIC lines 87-88, q_rot / k_rot float32 [index_head_dim]^2, unsplit.
    #[test]
    fn attention_parameters_per_rank() {
        let v = serde_json::json!({
            "fa_quant_type": "FAKQuant",
            "model.layers.0.self_attn.fa_k.scale": "FAQuant",
            "model.layers.2.self_attn.fa_k.scale": "FAQuant",
        });
        let d = Description::from_value(DESCRIPTION, &v).unwrap();
        let layers = d.attention_layers();
        assert_eq!(layers.iter().map(|l| l.layer).collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(layers[0].prefix, "model.layers.0.self_attn");
        assert_eq!(layers[0].scheme.as_deref(), Some("FAKQuant"));
        // MLA, 16 heads, bf16, TP 4: q 16/4 = 4 rows, k / v one latent head; scale 2 B + offset 1 B.
        let mla = AttentionDims { heads: Some(16), kv_heads: Some(1), index_head_dim: None, model_bytes: 2, mla: true };
        let per_layer = (4 + 1 + 1) * (2 + 1);
        assert_eq!(d.attention_rank_bytes(&mla, 4, None), 2 * per_layer);
        assert_eq!(d.attention_rank_bytes(&mla, 4, Some(&(1..=2))), per_layer);
        // GQA, 8 heads and 2 KV heads at TP 4: 2 q rows, KV 2/4 -> 1 (replicated).
        let gqa = AttentionDims { heads: Some(8), kv_heads: Some(2), index_head_dim: None, model_bytes: 2, mla: false };
        assert_eq!(d.attention_rank_bytes(&gqa, 4, Some(&(0..=0))), (2 + 1 + 1) * 3);

        let v = serde_json::json!({
            "indexer_quant_type": "INT8_DYNAMIC",
            "model.layers.1.self_attn.indexer.quant_type": "QK_INT8_DYNAMIC",
            "model.layers.1.self_attn.indexer.q_rot": "FLOAT",
        });
        let d = Description::from_value(DESCRIPTION, &v).unwrap();
        // The `.quant_type` key is a value, not a tensor.
        assert!(!d.types.contains_key("model.layers.1.self_attn.indexer.quant_type"));
        let l = d.attention_layers();
        assert_eq!(
            (l[0].layer, l[0].prefix.as_str(), l[0].scheme.as_deref()),
            (1, "model.layers.1.self_attn", Some("INT8_DYNAMIC"))
        );
        let dsa =
            AttentionDims { heads: Some(16), kv_heads: Some(1), index_head_dim: Some(128), model_bytes: 2, mla: true };
        // Two float32 128 x 128 matrices on every rank, whatever the TP.
        assert_eq!(d.attention_rank_bytes(&dsa, 8, None), 2 * 128 * 128 * 4);

        // fa_quant_type "" enables nothing; present-but-other wins over indexer_quant_type.
        let off = Description::from_value(
            DESCRIPTION,
            &serde_json::json!({"fa_quant_type": "", "model.layers.0.self_attn.fa_k.scale": "FAQuant"}),
        )
        .unwrap();
        assert!(off.attention_layers().is_empty());
        let both = Description::from_value(
            DESCRIPTION,
            &serde_json::json!({"fa_quant_type": "FAKQuant", "indexer_quant_type": "INT8_DYNAMIC", "model.layers.3.self_attn.indexer.quant_type": "INT8_DYNAMIC"}),
        )
        .unwrap();
        assert_eq!(both.attention_layers()[0].scheme.as_deref(), Some("FAKQuant"));
    }

    /// On a 310P only the 310P registry's (scheme, layer) pairs build (its own text); elsewhere a
    /// 310P-only scheme has none (the main registry's text).
    #[test]
    fn the_310p_registry_decides_on_a_310p() {
        use crate::target::Npu;
        let d = Description::from_value(
            DESCRIPTION,
            &serde_json::json!({"model.layers.0.mlp.down_proj.weight": "W8A8S", "lm_head.weight": "FLOAT"}),
        )
        .unwrap();
        assert_eq!(d.device_refusal(Some(Npu::P310)), None);
        let (s, l, text) = d.device_refusal(Some(Npu::A2)).unwrap();
        assert_eq!((s.as_str(), l), ("W8A8S", LayerType::Linear));
        assert!(
            text.starts_with(
                "NotImplementedError: Currently, vLLM Ascend doesn't support quant_type=W8A8S for layer_type=linear."
            ),
            "{text}"
        );
        let moe = Description::from_value(
            DESCRIPTION,
            &serde_json::json!({"model.layers.0.mlp.experts.0.up_proj.weight": "W4A8_DYNAMIC"}),
        )
        .unwrap();
        assert_eq!(
            moe.device_refusal(Some(Npu::P310)).unwrap().2,
            "NotImplementedError: Unsupported quant_type=W4A8_DYNAMIC for layer_type=moe."
        );
        assert_eq!(moe.device_refusal(Some(Npu::A3)), None);
    }

    /// MX scales: one e8m0 byte per group of 32 along the logical K; fp4 weights store K / 2.
    #[test]
    fn mx_scale_shapes_follow_the_group_and_the_packing() {
        let fp4 = contract("W4A4_MXFP4").unwrap();
        let s = &fp4.companions[0];
        // weight [N=256, K/2=512]: logical K 1024, 32 groups.
        assert_eq!(s.shape_for(&[256, 512], false, fp4.packed_k, 32), vec![Some(256), Some(32)]);
        let fp8 = contract("W8A8_MXFP8").unwrap();
        assert_eq!(fp8.companions[0].shape_for(&[256, 100], false, fp8.packed_k, 32), vec![Some(256), Some(4)]);
    }

    #[test]
    fn c8_layers_come_from_the_kv_cache_scales() {
        let v = serde_json::json!({
            "kv_cache_type": "C8",
            "model.layers.0.self_attn.k_proj.kv_cache_scale": "W8A8",
            "model.layers.3.self_attn.k_proj.kv_cache_scale": "W8A8",
            "model.layers.1.self_attn.v_proj.kv_cache_scale": "W8A8",
            "model.layers.1.self_attn.q_proj.weight": "W8A8_DYNAMIC",
        });
        let d = Description::from_value(DESCRIPTION, &v).unwrap();
        assert_eq!(d.c8_layers().into_iter().collect::<Vec<_>>(), vec![0, 3]);
        let mut no = v.clone();
        no["kv_cache_type"] = "".into();
        assert!(Description::from_value(DESCRIPTION, &no).unwrap().c8_layers().is_empty());
    }
}
