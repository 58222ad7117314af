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
}

impl Description {
    pub fn from_value(file: &str, v: &Value) -> Option<Description> {
        let obj = v.as_object()?;
        let types = obj
            .iter()
            .filter(|(k, _)| !META_KEYS.contains(&k.as_str()))
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
            .collect();
        Some(Description {
            file: file.to_string(),
            model_quant_type: obj.get("model_quant_type").and_then(Value::as_str).map(str::to_string),
            types,
            group_size: obj.get("group_size").and_then(Value::as_u64),
            kv_cache_type: obj.get("kv_cache_type").and_then(Value::as_str).map(str::to_string),
            numbers: obj.iter().filter_map(|(k, v)| Some((k.clone(), v.as_u64()?))).collect(),
        })
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
                (npu != Some(want)).then_some((s, want, c.source.as_str()))
            })
            .collect()
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
}

fn one() -> u64 {
    1
}

/// vLLM-Ascend's layer types for quantization methods (`@register_scheme(quant_type, layer_type)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LayerType {
    Linear,
    Moe,
}

impl LayerType {
    pub fn as_str(self) -> &'static str {
        match self {
            LayerType::Linear => "linear",
            LayerType::Moe => "moe",
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
}

fn contracts() -> &'static BTreeMap<String, Contract> {
    static C: OnceLock<Contracts> = OnceLock::new();
    &C.get_or_init(|| serde_json::from_str(include_str!("modelslim.json")).expect("embedded modelslim.json is valid"))
        .schemes
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
    /// in vllm_ascend/quantization/methods/*.py (the 310P set and the attention schemes aside) has a
    /// contract with exactly those layer types, a source and a fixture or the reason it has none.
    #[test]
    fn every_registered_scheme_has_a_contract() {
        use LayerType::{Linear, Moe};
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
