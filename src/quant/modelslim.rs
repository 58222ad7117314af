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
        })
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
    /// Over the checkpoint weight's [N, K]: `N`, `K`, `N2` (2N: int4 packed two per byte), `K/2`, a
    /// number, or `*`.
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
    /// vLLM-Ascend has a method for it on routed experts only.
    #[serde(default)]
    pub experts_only: bool,
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
    pub fn shape_for(&self, weight: &[u64], down: bool) -> Vec<Option<u64>> {
        let (n, k) = (weight.first().copied().unwrap_or(0), weight.get(1).copied().unwrap_or(1));
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
    for t in ck.tensors() {
        if !d.types.contains_key(&t.entry.name) {
            out.push(
                Finding::new(
                    Code::ModelslimUndescribed,
                    format!(
                        "{} is not in {file}: vLLM-Ascend decides every layer's scheme from that file",
                        t.entry.name
                    ),
                )
                .file(&t.shard.name)
                .tensor(&t.entry.name),
            );
        }
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
                    format!("{name} is {scheme} in {file}, a scheme vLLM-Ascend has no method for"),
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
            let want = comp.shape_for(&t.entry.shape, false);
            let shape_ok = fits(&want) || (comp.shape_down.is_some() && fits(&comp.shape_for(&t.entry.shape, true)));
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
        assert_eq!(sb.shape_for(&[64, 48], true), vec![Some(128), Some(16)]);
        assert_eq!(sb.shape_for(&[24, 128], false), vec![Some(48), Some(1)]);
    }
}
