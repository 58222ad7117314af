//! The rule-file format: one JSON file per architecture family, mirroring the vLLM model file it
//! names. Built-in files are embedded (`src/arch/families/`); `--rules FILE` adds or replaces one.
//! The format is documented in the README (§ Rule files).

use super::expr::Expr;
use crate::arch::Partition;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// What a family's loader does with a checkpoint name that reaches no parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Unmapped {
    /// `params_dict[name]` raises `KeyError` (Llama, Mixtral, DeepSeek, …).
    Keyerror,
    /// `if name not in params_dict: continue` — silently dropped (Qwen2, Qwen3, Qwen3-MoE).
    Drop,
    /// `AutoWeightsLoader` all the way down: `ValueError: There is no module or parameter named …`.
    NoModule,
}

/// WeightsMapper: each list applied in order, every matching entry (cumulative); `null` drops the tensor.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Mapper {
    #[serde(default)]
    pub substr: Vec<(String, Option<String>)>,
    #[serde(default)]
    pub prefix: Vec<(String, Option<String>)>,
    #[serde(default)]
    pub suffix: Vec<(String, Option<String>)>,
}

/// A name the loader skips on purpose.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Skip {
    #[serde(default)]
    pub prefix: Option<String>,
    #[serde(default)]
    pub substr: Option<String>,
    #[serde(default)]
    pub suffix: Option<String>,
    /// Only when this config expression is non-zero (e.g. `tie_word_embeddings`).
    #[serde(default)]
    pub when: Option<String>,
    pub reason: String,
}

/// `stacked_params_mapping`: `(param, shard, id)`; the first entry whose `shard` is a substring of the
/// name replaces it with `param`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Stacked {
    pub param: String,
    pub shard: String,
    pub id: serde_json::Value,
    /// Only for names starting with this (vision towers have their own mapping).
    #[serde(default)]
    pub within: Option<String>,
    /// Only when this config expression is non-zero (DeepSeek fuses q_a / kv_a only with q_lora_rank).
    #[serde(default)]
    pub when: Option<String>,
}

/// `make_expert_params_mapping`: `experts.{E}.{gate|up|down}.` → `{param}w13_` / `{param}w2_`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Experts {
    pub gate: String,
    pub up: String,
    pub down: String,
    /// What `experts.` becomes in the parameter name (vLLM 0.33.0: `experts.routed_experts.`).
    pub param: String,
}

/// MTP / speculative layers the main model skips.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Mtp {
    /// `layers`: `*.layers.{n}.*` with n ≥ num_hidden_layers; `prefix`: names under `prefix`.
    pub style: String,
    #[serde(default)]
    pub prefix: Option<String>,
    /// The draft model class that loads them.
    pub draft: String,
    /// The draft model as vLLM builds it from the same checkpoint with speculative decoding on
    /// (absent: not described; audit and plan say the draft is not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub draft_model: Option<DraftModel>,
}

/// The MTP draft model (`layers` style): each spec layer `n..n+num_nextn_predict_layers` holds one
/// decoder block of the main family's kind (its weights renamed under `block`), the layer's own
/// modules (`own`, names unchanged, `params` below) and weights shared with the main model
/// (`shared`: `model.layers.{n}.X` loads into `model.X`, from the first spec layer only). The
/// main model's other weights are skipped, except the top-level shared ones (the embedding).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DraftModel {
    /// The class vLLM builds (`DeepSeekMTP`).
    pub class: String,
    /// The vLLM source the rules below mirror.
    pub source: String,
    /// The recorded evidence that verified them.
    pub verified: String,
    /// Inserted after `layers.{n}.` in the names of the decoder block's weights (`mtp_block.`).
    pub block: String,
    /// Module names of the spec layer's own weights (a weight whose name contains one keeps it).
    pub own: Vec<String>,
    /// Module names shared with the main model (`embed_tokens`).
    pub shared: Vec<String>,
    /// The spec layer's own parameters (repeated over `mtp_layers`).
    pub params: Vec<ParamRule>,
}

/// One parameter (or a family of them, one per layer / block) of the vLLM model.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ParamRule {
    /// With placeholders from `repeat` (e.g. `model.layers.{L}.self_attn.qkv_proj.weight`).
    pub name: String,
    /// Placeholder → which indices: `layers`, `dense_layers`, `moe_layers`, `full_attention_layers`,
    /// `linear_attention_layers`, or a count expression (`vision_config.depth`).
    #[serde(default)]
    pub repeat: BTreeMap<String, String>,
    #[serde(default)]
    pub when: Option<String>,
    pub partition: Partition,
    /// Shape of the checkpoint tensor(s) feeding it: one `shape`, or one per shard id.
    #[serde(default)]
    pub shape: Option<Vec<String>>,
    #[serde(default)]
    pub shards: BTreeMap<String, Vec<String>>,
    /// Per-expert slots: the count expression (e.g. `num_experts`).
    #[serde(default)]
    pub experts: Option<String>,
    /// One checkpoint tensor carries every expert (gpt-oss, Qwen3-VL-MoE).
    #[serde(default)]
    pub fused_experts: bool,
    /// For a fused expert tensor the loader cuts up itself, expert by expert: the shard ids it
    /// passes for the slices, in order (`["w1", "w3"]` for a gate_up tensor, `["w2"]` for down;
    /// Llama 4, GraniteMoe, Qwen3-VL-MoE). Empty: the tensor is loaded whole (gpt-oss).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fused_shards: Vec<String>,
    /// A quantized checkpoint carries a scale beside this weight.
    #[serde(default)]
    pub quantized: bool,
    /// No tensor needs to fill it (vLLM initialises it itself).
    #[serde(default)]
    pub optional: bool,
    /// The dtype vLLM allocates the parameter in whatever the checkpoint holds (a router or a
    /// correction bias kept in float32); absent: the model dtype.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype: Option<AllocDtype>,
    /// The vLLM source line that allocates it so, for `dtype`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dtype_source: Option<String>,
    /// Where the parameter sits for pipeline stages and what the main model counts. Absent: a
    /// parameter repeated over decoder layers is in that layer (`mtp_layers`: MTP), any other is
    /// part of a tower (vision / audio, on the first stage).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<ParamRole>,
    /// Which dimension of the checkpoint shape TP splits, where the partition's default is not it
    /// (fused expert tensors stored transposed); `"none"`: not split by TP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tp_dim: Option<TpDim>,
    /// A head count the TP size must divide for vLLM to build this layer (vision attention:
    /// `AssertionError: {heads} is not divisible by {tp}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heads: Option<String>,
    /// The decoder attention's q or k norm (its width decides how it behaves under TP: plan's
    /// qk-norm rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qk_norm: Option<QkSide>,
}

/// Which of the attention's q/k norms a parameter is (`qk_norm` in a rule file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QkSide {
    Q,
    K,
}

/// Where a parameter sits in the model (`role` in a rule file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ParamRole {
    /// The input embedding: first pipeline stage.
    Embed,
    /// The final norm and lm_head: last pipeline stage.
    Head,
    /// A vision / audio tower or projector: first stage, replicated across pipeline stages never.
    Tower,
    /// A speculative (MTP) layer: not built by the main model.
    Mtp,
}

/// `tp_dim` in a rule file: a dimension index, or `"none"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(untagged)]
pub enum TpDim {
    Dim(usize),
    Named(NoSplit),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NoSplit {
    None,
}

/// A parameter dtype vLLM fixes in the model code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AllocDtype {
    Float32,
    /// A quantized checkpoint's integer weights and companions (ModelSlim int8 weights and int4
    /// packed two per byte, `quant_bias`).
    Int8,
    Int32,
    Int64,
}

impl AllocDtype {
    pub fn bytes(self) -> u64 {
        match self {
            AllocDtype::Float32 | AllocDtype::Int32 => 4,
            AllocDtype::Int8 => 1,
            AllocDtype::Int64 => 8,
        }
    }

    /// From a safetensors dtype name, where it is one of these.
    pub fn from_safetensors(d: &str) -> Option<AllocDtype> {
        match d {
            "F32" => Some(AllocDtype::Float32),
            // One byte each: int8, packed nibbles, fp8 group scales.
            "I8" | "U8" | "F8_E4M3" => Some(AllocDtype::Int8),
            "I32" => Some(AllocDtype::Int32),
            "I64" => Some(AllocDtype::Int64),
            _ => None,
        }
    }
}

/// A family's rule file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Family {
    pub family: String,
    pub architectures: Vec<String>,
    /// The vLLM file (and loader) the rules mirror.
    pub vllm_source: String,
    /// How the rules were verified (the oracle run, or the source read where vLLM cannot build on a CPU).
    #[serde(default)]
    pub verified: String,
    /// model_type values, to infer a family for an unknown architecture.
    #[serde(default)]
    pub model_types: Vec<String>,
    /// The class named in vLLM's "There is no module or parameter named …" error.
    #[serde(default)]
    pub class: String,
    /// Architecture → the vLLM class that serves it (`module:Class`), for adapters that subclass it.
    #[serde(default)]
    pub vllm_classes: BTreeMap<String, String>,
    #[serde(default)]
    pub mapper: Mapper,
    /// Parameter aliases applied after routing (substring → replacement): vLLM 0.33.0 registers fused
    /// experts under `experts.routed_experts.` and accepts `experts.w13_…` as an alias.
    #[serde(default)]
    pub aliases: Vec<(String, String)>,
    #[serde(default)]
    pub skip: Vec<Skip>,
    /// Names vLLM loads into a persistent buffer, not a parameter (AutoWeightsLoader's "Add
    /// persistent registered buffers": XIELU's beta / eps, Gemma 4's layer_scalar, a router's
    /// expert_bias under the Transformers backend). `reason` cites the vLLM source; `when` as skips.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub buffers: Vec<Skip>,
    /// KV-cache scale renames (suffix → suffix, first match wins). Built-in families get vLLM's
    /// `maybe_remap_kv_scale_name` table from `_blocks.json` unless they set their own.
    #[serde(default)]
    pub kv_scale_renames: Vec<(String, String)>,
    #[serde(default)]
    pub stacked: Vec<Stacked>,
    #[serde(default)]
    pub experts: Option<Experts>,
    #[serde(default)]
    pub mtp: Option<Mtp>,
    pub unmapped: Unmapped,
    /// How the family's layers behave under TP beyond their partitions (q/k norms, KV-head
    /// replication, TP ≤ experts); absent: the generic decoder's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel: Option<crate::arch::FamilyParallel>,
    /// The vLLM source `parallel` mirrors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parallel_source: Option<String>,
    /// Named blocks from `_blocks.json` whose params this family has.
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub params: Vec<ParamRule>,
    /// Notes for whoever completes a generated rule file (ignored by the tool).
    #[serde(default, rename = "_todo", skip_serializing_if = "Vec::is_empty")]
    pub todo: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum RulesError {
    #[error(transparent)]
    Read(#[from] crate::fsutil::ReadError),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: {message}", path.display())]
    Invalid { path: PathBuf, message: String },
}

/// Every file in `src/arch/families/`, `_blocks.json` first (listed by build.rs: no hand-kept list).
const BUILTIN: &[(&str, &str)] = include!(concat!(env!("OUT_DIR"), "/families.rs"));

/// Every family, built-in and user-supplied, with `include`s resolved.
#[derive(Debug, Clone)]
pub struct RuleSet {
    pub families: Vec<Family>,
    /// Architectures a user-supplied (`--rules`) family lists: the file stands for the plugin that
    /// registers them with vLLM.
    pub user_architectures: std::collections::BTreeSet<String>,
}

fn invalid(path: &str, message: impl Into<String>) -> RulesError {
    RulesError::Invalid { path: PathBuf::from(path), message: message.into() }
}

fn parse_family(path: &str, text: &str) -> Result<Family, RulesError> {
    serde_json::from_str(text).map_err(|e| invalid(path, format!("line {} column {}: {e}", e.line(), e.column())))
}

/// Check every expression parses and every placeholder is repeated, so a bad user file fails on load.
fn validate(path: &str, f: &Family) -> Result<(), RulesError> {
    let check = |what: &str, e: &str| Expr::parse(e).map(|_| ()).map_err(|m| invalid(path, format!("{what}: {m}")));
    for s in &f.skip {
        if let Some(w) = &s.when {
            check("skip.when", w)?;
        }
        if s.prefix.is_none() && s.substr.is_none() && s.suffix.is_none() {
            return Err(invalid(path, format!("skip `{}` names no prefix, substr or suffix", s.reason)));
        }
    }
    for s in &f.stacked {
        if let Some(w) = &s.when {
            check("stacked.when", w)?;
        }
    }
    let draft = f.mtp.as_ref().and_then(|m| m.draft_model.as_ref()).map(|d| d.params.as_slice()).unwrap_or_default();
    for p in f.params.iter().chain(draft) {
        for (var, spec) in &p.repeat {
            if !p.name.contains(&format!("{{{var}}}")) {
                return Err(invalid(path, format!("param {}: repeat {{{var}}} does not appear in the name", p.name)));
            }
            if !LAYER_SETS.contains(&spec.as_str()) {
                check(&format!("param {} repeat {var}", p.name), spec)?;
            }
        }
        for dims in p.shape.iter().chain(p.shards.values()) {
            for d in dims {
                check(&format!("param {} shape", p.name), d)?;
            }
        }
        if let Some(w) = &p.when {
            check(&format!("param {} when", p.name), w)?;
        }
        if let Some(e) = &p.experts {
            check(&format!("param {} experts", p.name), e)?;
        }
        if let Some(h) = &p.heads {
            check(&format!("param {} heads", p.name), h)?;
        }
        if p.shape.is_none() && p.shards.is_empty() {
            return Err(invalid(path, format!("param {}: needs `shape` or `shards`", p.name)));
        }
    }
    Ok(())
}

/// The layer sets a `repeat` can name.
pub const LAYER_SETS: &[&str] = &[
    "layers",
    "dense_layers",
    "moe_layers",
    "full_attention_layers",
    "linear_attention_layers",
    "conv_layers",
    "mtp_layers",
];

#[derive(Deserialize)]
struct Blocks {
    #[serde(flatten)]
    blocks: BTreeMap<String, serde_json::Value>,
}

impl RuleSet {
    /// The built-in families plus `extra` user files (a user family replaces a built-in of the same name).
    pub fn load(extra: &[&Path]) -> Result<RuleSet, RulesError> {
        let (blocks_path, blocks_text) = BUILTIN[0];
        let blocks: Blocks = serde_json::from_str(blocks_text).map_err(|e| invalid(blocks_path, e.to_string()))?;
        let mut block_params: BTreeMap<String, Vec<ParamRule>> = BTreeMap::new();
        for (k, v) in blocks.blocks {
            if k.starts_with('_') {
                continue;
            }
            let ps: Vec<ParamRule> =
                serde_json::from_value(v).map_err(|e| invalid(blocks_path, format!("{k}: {e}")))?;
            block_params.insert(k, ps);
        }
        let kv_renames: Vec<(String, String)> = serde_json::from_str::<serde_json::Value>(blocks_text)
            .ok()
            .and_then(|v| serde_json::from_value(v.get("_kv_scale_renames")?.clone()).ok())
            .unwrap_or_default();
        let mut families = Vec::new();
        let mut add = |path: &str, mut f: Family| -> Result<(), RulesError> {
            if f.kv_scale_renames.is_empty() {
                f.kv_scale_renames = kv_renames.clone();
            }
            for inc in std::mem::take(&mut f.include) {
                let ps = block_params
                    .get(&inc)
                    .ok_or_else(|| invalid(path, format!("include `{inc}`: no such block in _blocks.json")))?;
                let mut merged = ps.clone();
                merged.append(&mut f.params);
                f.params = merged;
            }
            validate(path, &f)?;
            families.retain(|g: &Family| g.family != f.family);
            families.push(f);
            Ok(())
        };
        for (path, text) in &BUILTIN[1..] {
            add(path, parse_family(path, text)?)?;
        }
        let mut user_architectures = std::collections::BTreeSet::new();
        for p in extra {
            let text = crate::fsutil::read_bounded_string(p, crate::fsutil::JSON_CAP)?;
            let path = p.to_string_lossy().into_owned();
            let f = parse_family(&path, &text)?;
            user_architectures.extend(f.architectures.iter().cloned());
            add(&path, f)?;
        }
        Ok(RuleSet { families, user_architectures })
    }

    /// The built-in families, loaded once.
    pub fn builtin() -> &'static RuleSet {
        static RULES: std::sync::OnceLock<RuleSet> = std::sync::OnceLock::new();
        RULES.get_or_init(|| RuleSet::load(&[]).expect("the embedded rule files are valid (a unit test loads them)"))
    }

    /// These families plus `extra`, whose architectures count as registered by a plugin (as a
    /// `--rules` file's do).
    pub fn with(&self, extra: Family) -> RuleSet {
        let mut r = self.clone();
        r.user_architectures.extend(extra.architectures.iter().cloned());
        r.families.retain(|f| f.family != extra.family);
        r.families.push(extra);
        r
    }

    /// The family whose `architectures` lists `arch`.
    pub fn for_architecture(&self, arch: &str) -> Option<&Family> {
        self.families.iter().rev().find(|f| f.architectures.iter().any(|a| a == arch))
    }
}

impl crate::ui::Help for RulesError {
    fn help(&self) -> String {
        match self {
            RulesError::Io { .. } | RulesError::Read(_) => {
                "check the --rules path: a readable regular JSON file".into()
            }
            RulesError::Invalid { .. } => {
                "fix the named field (README: \"Rule files\"); `ckptpilot remap MODEL --emit-rules FILE` writes a valid starting point"
                    .into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_families_load_and_validate() {
        let r = RuleSet::load(&[]).unwrap();
        for arch in [
            "LlamaForCausalLM",
            "MistralForCausalLM",
            "Qwen2ForCausalLM",
            "Qwen3ForCausalLM",
            "Qwen3MoeForCausalLM",
            "MixtralForCausalLM",
            "DeepseekV2ForCausalLM",
            "DeepseekV3ForCausalLM",
            "Glm4MoeForCausalLM",
            "Qwen2_5_VLForConditionalGeneration",
            "Qwen3VLForConditionalGeneration",
            "Gemma3ForCausalLM",
            "Gemma3ForConditionalGeneration",
            "Olmo2ForCausalLM",
            "GptOssForCausalLM",
            "Qwen3NextForCausalLM",
        ] {
            let f = r.for_architecture(arch).unwrap_or_else(|| panic!("{arch}"));
            assert!(!f.vllm_source.is_empty() && !f.verified.is_empty(), "{arch}: cite the vLLM file and the check");
        }
    }

    #[test]
    fn user_file_errors_name_the_field() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.json");
        std::fs::write(
            &p,
            r#"{"family":"x","architectures":["X"],"vllm_source":"x.py","unmapped":"drop",
            "params":[{"name":"a.{L}.w","repeat":{"L":"layers"},"partition":"column","shape":["hidden_size +"]}]}"#,
        )
        .unwrap();
        let e = RuleSet::load(&[p.as_path()]).unwrap_err().to_string();
        assert!(e.contains("x.json") && e.contains("param a.{L}.w shape"), "{e}");
        std::fs::write(&p, r#"{"family":"x","architectures":["X"],"vllm_source":"x.py","unmapped":"maybe"}"#).unwrap();
        let e = RuleSet::load(&[p.as_path()]).unwrap_err().to_string();
        assert!(e.contains("unknown variant `maybe`"), "{e}");
    }
}
