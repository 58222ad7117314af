//! `ckptpilot plan`: which tensor / expert / pipeline-parallel configurations vLLM 0.33.0 (or
//! vLLM-Ascend) will accept for a checkpoint, what each rank holds, and how much KV cache is left.
//!
//! Everything is predicted from config.json and, when weights are present, from the real tensor
//! shapes and dtypes ([`shape::ModelShape`]). The rules are in [`rules`], memory in [`memory`].

pub mod device;
pub mod memory;
pub mod rules;
pub mod shape;

use crate::arch::parallel_rules;
use crate::arch::rules::RuleSet;
use crate::checkpoint::config::ModelConfig;
use crate::checkpoint::Checkpoint;
use crate::error::CheckpointError;
use crate::quant::scheme::QuantScheme;
use device::Device;
use memory::{KvCache, RankWeights};
use serde::Serialize;
use serde_json::Value;
use shape::ModelShape;
use std::path::Path;
use std::path::PathBuf;

pub const SCHEMA: &str = "ckptpilot.plan/1";

pub use crate::target::Target;

/// A feasibility rule (its id is the kebab-case name in `--json` and the matrix header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    Config,
    Heads,
    KvHeads,
    QkNorm,
    Mlp,
    Moe,
    Fp8Block,
    /// vLLM builds the model but cannot load the checkpoint's quantization scales into it.
    ScaleLoad,
    Vocab,
    Pp,
    Target,
    MaxLen,
    Weights,
    KvCache,
}

impl Rule {
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::Config => "config",
            Rule::Heads => "heads",
            Rule::KvHeads => "kv-heads",
            Rule::QkNorm => "qk-norm",
            Rule::Mlp => "mlp",
            Rule::Moe => "moe",
            Rule::Fp8Block => "fp8-block",
            Rule::ScaleLoad => "scale-load",
            Rule::Vocab => "vocab",
            Rule::Pp => "pp",
            Rule::Target => "target",
            Rule::MaxLen => "max-len",
            Rule::Weights => "weights",
            Rule::KvCache => "kv-cache",
        }
    }

    /// Whether a failure of this rule means vLLM cannot build the model at this parallel layout
    /// at all (the shapes do not split), as opposed to the device, the serving options or the
    /// target platform: a remap table or a stub at such a layout would describe slices that never exist.
    /// A scale that does not load ([`Rule::ScaleLoad`]) is not one: vLLM builds the model and routes
    /// every tensor as the remap shows; plan calls the configuration infeasible all the same.
    pub fn is_layout(self) -> bool {
        matches!(
            self,
            Rule::Config
                | Rule::Heads
                | Rule::KvHeads
                | Rule::QkNorm
                | Rule::Mlp
                | Rule::Moe
                | Rule::Fp8Block
                | Rule::Vocab
                | Rule::Pp
        )
    }
}

impl std::fmt::Display for Rule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<&str> for Rule {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

pub use crate::model::parallel::{MoeBackend, Parallel};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    Pass,
    Caveat,
    Fail,
    NotApplicable,
}

/// One rule's outcome at one configuration.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub rule: Rule,
    pub status: Status,
    /// The matrix cell: a few characters with the numbers.
    pub short: String,
    /// For failures: the error vLLM raises (exact text where vLLM has one); for caveats: the why.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// The way out, as printed: only remedies the planner checked feasible (see [`Remedy`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
    /// The ways out a failing rule proposes; after planning, only those found feasible.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub remedies: Vec<Remedy>,
}

impl Check {
    /// The same check, proposing these ways out.
    pub fn with(mut self, remedies: Vec<Remedy>) -> Check {
        self.remedies = remedies;
        self
    }
}

/// One way out of a failure. Every remedy but [`Remedy::Manual`] is planned before it is printed:
/// a layout is named only if the planner finds it feasible, bf16 weights, a shorter context or an
/// fp8 KV cache only if they make this configuration feasible.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum Remedy {
    /// Another TP / EP layout; `layouts` lists the feasible ones once planned.
    Layout {
        #[serde(skip_serializing_if = "Vec::is_empty")]
        layouts: Vec<String>,
    },
    /// Expert parallelism off.
    NoEp,
    /// bf16 weights; `how` says how to get them.
    Bf16 { how: String },
    /// A shorter context.
    MaxModelLen { len: u64 },
    /// An fp8 KV cache.
    KvCacheFp8,
    /// Outside what plan models (the config file, the model class, the device): said as the rule
    /// says it.
    Manual { what: String },
}

impl Remedy {
    pub fn layout() -> Remedy {
        Remedy::Layout { layouts: Vec::new() }
    }
    pub fn manual(what: impl Into<String>) -> Remedy {
        Remedy::Manual { what: what.into() }
    }
    pub fn bf16(how: impl Into<String>) -> Remedy {
        Remedy::Bf16 { how: how.into() }
    }
    fn text(&self) -> String {
        match self {
            Remedy::Layout { layouts } => format!("use {} (planned feasible)", or_list(layouts)),
            Remedy::NoEp => "drop --enable-expert-parallel".into(),
            Remedy::Bf16 { how } => how.clone(),
            Remedy::MaxModelLen { len } => format!("--max-model-len {len}"),
            Remedy::KvCacheFp8 => "--kv-cache-dtype fp8".into(),
            Remedy::Manual { what } => what.clone(),
        }
    }
}

/// "a", "a or b", "a, b or c".
fn or_list(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [one] => one.clone(),
        [rest @ .., last] => format!("{} or {last}", rest.join(", ")),
    }
}

/// The fix line: the checked remedies, or why there is none to offer.
fn fix_text(remedies: &[Remedy]) -> String {
    if remedies.is_empty() {
        return "none that plan can check: no TP / EP layout up to 64, bf16 weights, shorter context or fp8 KV cache makes this configuration feasible (see the other failures)".into();
    }
    remedies.iter().map(Remedy::text).collect::<Vec<_>>().join("; or ")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Verdict {
    Feasible,
    FeasibleWithCaveats,
    Infeasible,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub rule: Rule,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// The plan for one configuration.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigPlan {
    pub tp: u64,
    pub ep: bool,
    pub ep_size: u64,
    pub dp: u64,
    pub pp: u64,
    /// Devices this configuration occupies: TP × DP × PP.
    pub devices: u64,
    pub verdict: Verdict,
    pub feasible: bool,
    pub failures: Vec<Failure>,
    pub checks: Vec<Check>,
    /// Weight bytes on the most loaded rank, in the form the target serves (bf16 where it lacks fp8).
    pub per_rank_weight_bytes: u64,
    pub per_rank_weights: RankWeights,
    pub kv_bytes_per_token: u64,
    pub kv_bytes_per_seq: u64,
    /// Device memory × utilisation − weights − activation reserve (0 when negative).
    pub kv_cache_bytes_available: u64,
    pub max_seqs_at_max_model_len: u64,
    /// Whether `max_num_seqs` sequences of `max_model_len` fit (the adaptation workflow's baseline).
    pub baseline_fits: bool,
    /// The fields above that come from family rules no recorded vLLM run verifies (see
    /// [`FamilyUse`]): estimates, not vLLM's numbers.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unverified: Vec<&'static str>,
    /// The MTP draft model vLLM builds beside the main one with `--speculative-config` (method
    /// mtp), on this configuration's first rank: not in the figures above.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtp_draft: Option<DraftPlan>,
}

/// The MTP draft on one rank.
#[derive(Debug, Clone, Serialize)]
pub struct DraftPlan {
    /// The class vLLM builds (`DeepSeekMTP`).
    pub class: String,
    /// Its weight bytes, in the form the target serves.
    pub weight_bytes: u64,
    /// The recorded evidence its rules follow.
    pub verified: String,
    /// No recorded run backs the family's rules for this architecture (see [`FamilyUse`]): the
    /// draft's figures are estimates too.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unverified: bool,
    pub params: Vec<DraftParam>,
}

/// One draft parameter on the rank.
#[derive(Debug, Clone, Serialize)]
pub struct DraftParam {
    pub name: String,
    pub numel: u64,
    pub bytes: u64,
}

/// What the user asked.
#[derive(Debug, Clone)]
pub struct PlanOptions {
    pub tp: Vec<u64>,
    /// Each entry one EP setting to plan (false, true or both).
    pub ep: Vec<bool>,
    pub dp: u64,
    pub pp: u64,
    pub target: Target,
    /// None: the target's default preset.
    pub device: Option<Device>,
    pub gpu_memory_utilization: f64,
    /// None: 131072, capped at the model's own limit.
    pub max_model_len: Option<u64>,
    pub max_num_seqs: u64,
    /// `auto` (the model dtype) or `fp8`.
    pub kv_cache_dtype: String,
    pub activation_reserve_bytes: u64,
    /// `--moe-backend`.
    pub moe_backend: MoeBackend,
}

impl Default for PlanOptions {
    fn default() -> Self {
        PlanOptions {
            tp: vec![1, 2, 4, 8, 16],
            ep: vec![false],
            dp: 1,
            pp: 1,
            target: Target::Vllm,
            device: None,
            gpu_memory_utilization: 0.9,
            max_model_len: None,
            max_num_seqs: 16,
            kv_cache_dtype: "auto".into(),
            activation_reserve_bytes: 4 << 30,
            moe_backend: MoeBackend::Auto,
        }
    }
}

/// The adaptation workflow's capacity baseline: 128k context.
pub const BASELINE_MAX_MODEL_LEN: u64 = 131_072;

#[derive(Debug, Clone, Serialize)]
pub struct PlanReport {
    pub schema: &'static str,
    pub vllm_reference: &'static str,
    pub model: String,
    pub architecture: Option<String>,
    pub model_type: Option<String>,
    /// `weights` (real tensor shapes and dtypes) or `config` (derived from config.json).
    pub source: &'static str,
    pub quantization: Option<String>,
    pub target: Target,
    pub device: Device,
    pub gpu_memory_utilization: f64,
    pub max_model_len: u64,
    pub max_model_len_check: Check,
    pub max_num_seqs: u64,
    pub kv_cache_dtype: String,
    pub moe_backend: MoeBackend,
    pub activation_reserve_bytes: u64,
    pub rules: Vec<Rule>,
    /// The family rules the figures come from, and whether a recorded vLLM run verifies them.
    pub family: FamilyUse,
    pub notes: Vec<String>,
    pub configs: Vec<ConfigPlan>,
}

/// Why a plan could not be made.
#[derive(Debug, thiserror::Error)]
pub enum PlanError {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("{}:{line}:{column}: not valid JSON: {message}", path.display())]
    ConfigJson { path: PathBuf, line: usize, column: usize, message: String },
}

/// What `plan` reads: a checkpoint directory / file / cache id, or a lone config.json.
pub struct PlanInput {
    pub model: String,
    pub config: ModelConfig,
    pub quant: Option<QuantScheme>,
    pub shape: ModelShape,
    /// The parameters vLLM builds, when a family (built-in or `--rules`) names the architecture:
    /// per-rank memory is counted from it.
    pub spec: Option<crate::model::ModelSpec>,
    /// Which family the spec came from and whether a recorded vLLM run verifies it.
    pub family: FamilyUse,
    /// vLLM's refusal of the architecture itself (message, fix): every configuration fails `target`.
    pub refusal: Option<(String, String)>,
    /// The config sizes ModelSlim attention methods allocate over (index_head_dim from the raw JSON).
    pub attention: crate::quant::modelslim::AttentionDims,
}

fn arch_refusal(c: &ModelConfig, rules: &RuleSet) -> Option<(String, String)> {
    crate::arch::registry::refusal(rules, &c.architectures, c.model_type.as_deref(), c.remote_config)
}

/// Which family rules a plan used, how they were chosen, and whether a recorded vLLM oracle run
/// verifies them for this architecture. When not, every figure derived from the rules is listed
/// in each configuration's `unverified`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FamilyUse {
    pub family: Option<String>,
    /// `architecture` (a family file names it), `model_type`, `generic` (the generic decoder) or
    /// `none` (no config sizes to build from).
    pub matched_by: &'static str,
    pub verified: bool,
    /// The TP sizes the recorded runs cover.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub verified_tp: Vec<u64>,
}

/// The figures of a configuration that come from the family rules (shapes, per-rank bytes, KV
/// cache), listed as unverified when no recorded vLLM run backs the rules.
pub const RULE_DERIVED_FIELDS: &[&str] = &[
    "per_rank_weight_bytes",
    "per_rank_weights",
    "kv_bytes_per_token",
    "kv_bytes_per_seq",
    "kv_cache_bytes_available",
    "max_seqs_at_max_model_len",
    "checks.mlp",
    "checks.moe",
    "checks.qk-norm",
    "checks.fp8-block",
    "checks.scale-load",
    "checks.weights",
    "checks.kv-cache",
];

impl PlanInput {
    /// A path to a `config.json` (or a directory holding one and no safetensors) plans from the config
    /// alone; anything else is opened as a checkpoint and planned from its real tensors.
    pub fn open(input: &str, rules: &RuleSet) -> Result<PlanInput, PlanError> {
        let p = Path::new(input);
        let lone_config = if p.is_file() && input.ends_with(".json") {
            Some(p.to_path_buf())
        } else if p.is_dir() && p.join("config.json").is_file() && !has_safetensors(p) {
            Some(p.join("config.json"))
        } else {
            None
        };
        if let Some(cfg_path) = lone_config {
            let text = crate::fsutil::read_bounded_string(&cfg_path, crate::fsutil::JSON_CAP)
                .map_err(CheckpointError::from)?;
            let v: Value = serde_json::from_str(&text).map_err(|e| PlanError::ConfigJson {
                path: cfg_path.clone(),
                line: e.line(),
                column: e.column(),
                message: e.to_string(),
            })?;
            let hf_quant = cfg_path
                .parent()
                .map(|d| d.join("hf_quant_config.json"))
                .and_then(|q| crate::fsutil::read_bounded(&q, crate::fsutil::JSON_CAP).ok())
                .and_then(|t| serde_json::from_slice::<Value>(&t).ok());
            let config = ModelConfig::from_value(&v);
            let quant = QuantScheme::detect(Some(&v), hf_quant.as_ref());
            let (spec, notes, family) = spec_for(&config, Some(&v), quant.as_ref(), rules);
            let shape = ModelShape::of(spec.as_ref(), "config", notes);
            let refusal = arch_refusal(&config, rules);
            let attention = crate::quant::modelslim::AttentionDims::of(&config, Some(&v));
            return Ok(PlanInput { model: input.to_string(), config, quant, shape, spec, family, refusal, attention });
        }
        let (ck, _findings) = Checkpoint::open(input)?;
        PlanInput::from_checkpoint(&ck, input, rules)
    }

    /// From a checkpoint already open: its config and its real tensor shapes.
    pub fn from_checkpoint(ck: &Checkpoint, model: &str, rules: &RuleSet) -> Result<PlanInput, PlanError> {
        ck.require_readable()?;
        let config = ck.require_config()?.clone();
        let quant = ck.quant_scheme().cloned();
        let (spec, notes, family) = spec_for(&config, ck.config_json.as_ref(), quant.as_ref(), rules);
        let shape = ModelShape::of(spec.as_ref(), "weights", notes);
        let refusal = arch_refusal(&config, rules);
        let attention = crate::quant::modelslim::AttentionDims::of(&config, ck.config_json.as_ref());
        Ok(PlanInput { model: model.to_string(), config, quant, shape, spec, family, refusal, attention })
    }

    /// Plan the model as served without its quantization (fp8 dequantized at load or beforehand).
    pub fn without_quantization(&mut self, json: Option<&Value>, rules: &RuleSet) {
        self.quant = None;
        let (spec, notes, family) = spec_for(&self.config, json, None, rules);
        self.shape = ModelShape::of(spec.as_ref(), self.shape.source, notes);
        self.spec = spec;
        self.family = family;
    }
}

/// The family file's TP behaviour (for an architecture planned by model_type or with the generic
/// decoder, parallel.json's entry for its model_type where there is one).
fn family_parallel(cfg: &ModelConfig, spec: Option<&crate::model::ModelSpec>) -> crate::arch::FamilyParallel {
    match spec {
        Some(spec) => spec.parallel.clone(),
        None => parallel_rules().family(cfg.text_model_type.as_deref().or(cfg.model_type.as_deref())),
    }
}

/// The one model for the architecture config.json names: its family file; for an architecture no
/// family file lists, the family whose `model_types` has the config's model_type; else the generic
/// decoder (`generic.json`). The second and third are said in the notes.
fn spec_for(
    cfg: &ModelConfig,
    json: Option<&Value>,
    quant: Option<&QuantScheme>,
    rules: &RuleSet,
) -> (Option<crate::model::ModelSpec>, Vec<String>, FamilyUse) {
    let arch = cfg.architecture.as_deref();
    let mut notes = Vec::new();
    let mut matched_by = "architecture";
    let family = match arch.and_then(|a| rules.for_architecture(a)) {
        Some(f) => Some(f),
        None => {
            let types = [cfg.text_model_type.as_deref(), cfg.model_type.as_deref()];
            let by_type = types
                .iter()
                .flatten()
                .find_map(|t| rules.families.iter().find(|f| f.model_types.iter().any(|m| m == t)));
            let (f, how) = match by_type {
                Some(f) => {
                    matched_by = "model_type";
                    (Some(f), format!("the `{}` family (its model_types list this model_type)", f.family))
                }
                None => (
                    rules.families.iter().find(|f| f.family == GENERIC_FAMILY),
                    "the generic decoder (src/arch/families/generic.json: GQA or MLA attention, dense / MoE / shared-expert MLP)".to_string(),
                ),
            };
            notes.push(format!(
                "architecture {} has no family rule file: parameters are planned with {how}; layers it does not describe are not counted. Write one (`ckptpilot remap MODEL --emit-rules FILE`, then --rules FILE) to plan it exactly",
                arch.unwrap_or("(none)")
            ));
            if f.is_some_and(|f| f.family == GENERIC_FAMILY) {
                matched_by = "generic";
                if cfg.has_vision || cfg.has_audio {
                    notes.push("vision/audio towers are not counted by the generic decoder".into());
                }
                if cfg.layer_types.as_ref().is_some_and(|t| t.iter().any(|x| x.contains("linear"))) {
                    notes.push("linear-attention layers are counted as full attention by the generic decoder".into());
                }
            }
            f
        }
    };
    // Modelled: fp8 scales, ModelSlim's schemes, compressed-tensors' packed formats and MXFP4
    // experts (stored dtypes).
    let modelled = |q: &QuantScheme| {
        q.fp8_scale.is_some()
            || q.modelslim.is_some()
            || crate::quant::ct_packed::contract(q).is_some()
            || q.method == crate::quant::scheme::QuantMethod::Mxfp4
    };
    if let Some(q) = quant.filter(|q| !modelled(q)) {
        notes.push(format!(
            "quantization `{}` is not modelled: weight bytes assume {}",
            q.method,
            cfg.torch_dtype.as_deref().unwrap_or("bfloat16")
        ));
    }
    let by_architecture = arch.and_then(|a| rules.for_architecture(a)).is_some();
    let spec = family.map(|f| {
        let mut spec = crate::model::ModelSpec::build(cfg, json, f, quant);
        let model_type = cfg.text_model_type.as_deref().or(cfg.model_type.as_deref());
        if !by_architecture {
            if let Some(p) = model_type.and_then(|t| parallel_rules().families.get(t)) {
                spec.parallel = p.clone();
            }
        }
        spec
    });
    let verified_tp: Vec<u64> = match (matched_by, arch) {
        ("architecture", Some(a)) if family.is_some() => {
            crate::arch::coverage::verified_tps(a).map(<[u64]>::to_vec).unwrap_or_default()
        }
        _ => Vec::new(),
    };
    let verified = !verified_tp.is_empty();
    if family.is_some() && !verified {
        notes.push(format!(
            "UNVERIFIED: no recorded vLLM run backs the `{}` rules for {}; every figure derived from them (per-rank weights, KV cache, the mlp / moe / qk-norm / fp8-block / scale-load / weights / kv-cache checks) is an estimate (`unverified` in --json; `ckptpilot families` lists what is verified)",
            family.map(|f| f.family.as_str()).unwrap_or("?"),
            arch.unwrap_or("this architecture")
        ));
    }
    let use_ = FamilyUse {
        family: family.map(|f| f.family.clone()),
        matched_by: if family.is_some() { matched_by } else { "none" },
        verified,
        verified_tp,
    };
    (spec, notes, use_)
}

/// The family used for architectures nothing else describes.
pub const GENERIC_FAMILY: &str = "generic";

fn has_safetensors(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().any(|e| e.file_name().to_string_lossy().ends_with(".safetensors")))
        .unwrap_or(false)
}

fn max_len_check(cfg: &ModelConfig, requested: Option<u64>) -> (u64, Check) {
    let derived = cfg.derived_max_model_len;
    let mut check = Check {
        rule: Rule::MaxLen,
        status: Status::Pass,
        short: String::new(),
        message: String::new(),
        fix: None,
        remedies: Vec::new(),
    };
    let len = match (requested, derived) {
        (Some(r), Some((d, key))) if r > d => {
            check.status = Status::Fail;
            check.short = format!("{r} > {d}");
            check.message = format!(
                "ValueError: User-specified max_model_len ({r}) is greater than the derived max_model_len ({key}={d}.0 or model_max_length=None in model's config.json). To allow overriding this maximum, set the env var VLLM_ALLOW_LONG_MAX_MODEL_LEN=1."
            );
            check.fix = Some(format!("--max-model-len {d}, or extend the context with rope scaling (e.g. --hf-overrides with YaRN) where the model supports it"));
            r
        }
        (Some(r), _) => r,
        (None, Some((d, _))) if d < BASELINE_MAX_MODEL_LEN => {
            check.status = Status::Caveat;
            check.short = format!("capped {d}");
            check.message = format!("the model's context limit is {d} (vLLM's derived max_model_len): capacity is computed at {d}, not the 128k baseline; serving 131072 needs --hf-overrides raising max_position_embeddings with a rope_scaling the model supports (YaRN), or VLLM_ALLOW_LONG_MAX_MODEL_LEN=1");
            d
        }
        _ => BASELINE_MAX_MODEL_LEN,
    };
    if check.short.is_empty() {
        check.short = len.to_string();
    }
    (len, check)
}

/// A change to what the user asked, to check a remedy.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Variant {
    /// Weights served as bf16 (the quantization dropped).
    bf16: bool,
    /// Another --max-model-len.
    max_model_len: Option<u64>,
    /// An fp8 KV cache.
    kv_fp8: bool,
}

/// Everything a configuration's plan needs besides the configuration itself.
struct Planner<'a> {
    input: &'a PlanInput,
    opts: &'a PlanOptions,
    fam: crate::arch::FamilyParallel,
    device: Device,
    max_model_len: u64,
    len_check: Check,
}

impl Planner<'_> {
    fn eval(&self, par: &Parallel, v: Variant) -> ConfigPlan {
        let (input, opts, cfg) = (self.input, self.opts, &self.input.config);
        let quant = if v.bf16 { None } else { input.quant.as_ref() };
        let ctx = rules::Ctx {
            cfg,
            fam: &self.fam,
            shape: &input.shape,
            quant,
            target: opts.target,
            fp8_device: self.device.fp8,
            npu: self.device.npu,
            spec: input.spec.as_ref(),
            refusal: input.refusal.as_ref(),
        };
        let (max_model_len, len_check) = match v.max_model_len {
            Some(len) => max_len_check(cfg, Some(len)),
            None => (self.max_model_len, self.len_check.clone()),
        };
        let kv_elem = if v.kv_fp8 || opts.kv_cache_dtype.starts_with("fp8") {
            1
        } else {
            shape::dtype_bytes(cfg.torch_dtype.as_deref())
        };
        // Targets without fp8 hold bf16 weights (after `ckptpilot dequant`).
        let serves_bf16 = v.bf16 || (!self.device.fp8 && opts.target == Target::VllmAscend);
        let budget = (self.device.memory_bytes as f64 * opts.gpu_memory_utilization) as u64;
        let mut checks = rules::evaluate(&ctx, par);
        checks.push(len_check);
        let w = input.spec.as_ref().map(|spec| spec.rank_weights(par)).unwrap_or_default();
        let weights = if serves_bf16 { w.bf16 } else { w.stored };
        // ModelSlim attention methods (FAKQuant, INT8_DYNAMIC) register parameters on the attention
        // layers that no weight rule holds: the heaviest PP stage's share, per rank.
        let weights = weights.saturating_add(match (opts.target, quant.and_then(|q| q.modelslim.as_ref())) {
            (Target::VllmAscend, Some(d)) => {
                let layers = cfg.num_layers.unwrap_or(0);
                let parts = memory::pp_partition(layers, par.pp.max(1));
                let mut lo = 0u64;
                parts
                    .iter()
                    .map(|&n| {
                        let r = lo..=lo.saturating_add(n).saturating_sub(1);
                        lo = lo.saturating_add(n);
                        if n == 0 {
                            0
                        } else {
                            d.attention_rank_bytes(&input.attention, par.tp, Some(&r))
                        }
                    })
                    .max()
                    .unwrap_or(0)
            }
            _ => 0,
        });
        // ModelSlim C8: vLLM-Ascend keeps these layers' KV cache in int8, whatever --kv-cache-dtype says.
        let c8 = match (opts.target, quant.and_then(|q| q.modelslim.as_ref())) {
            (Target::VllmAscend, Some(d)) => d.c8_layers(),
            _ => Default::default(),
        };
        let kv: KvCache = memory::kv_cache(cfg, &self.fam, par, kv_elem, max_model_len, &c8);
        let available = budget.saturating_sub(weights).saturating_sub(opts.activation_reserve_bytes);
        let max_seqs = available.checked_div(kv.bytes_per_seq).unwrap_or(0);
        checks.push(weights_check(weights, budget, opts, &self.device));
        checks.push(kv_check(&kv, weights, budget, available, max_seqs, max_model_len, opts));
        let verdict = if checks.iter().any(|c| c.status == Status::Fail) {
            Verdict::Infeasible
        } else if checks.iter().any(|c| c.status == Status::Caveat) {
            Verdict::FeasibleWithCaveats
        } else {
            Verdict::Feasible
        };
        ConfigPlan {
            tp: par.tp,
            ep: par.ep,
            ep_size: par.ep_size(),
            dp: par.dp,
            pp: par.pp,
            devices: par.tp * par.dp * par.pp,
            verdict,
            feasible: verdict != Verdict::Infeasible,
            failures: Vec::new(),
            checks,
            per_rank_weight_bytes: weights,
            per_rank_weights: w,
            kv_bytes_per_token: kv.bytes_per_token,
            kv_bytes_per_seq: kv.bytes_per_seq,
            kv_cache_bytes_available: available,
            max_seqs_at_max_model_len: max_seqs,
            baseline_fits: max_seqs >= opts.max_num_seqs,
            unverified: if input.family.verified { Vec::new() } else { RULE_DERIVED_FIELDS.to_vec() },
            mtp_draft: input.spec.as_ref().and_then(|s| s.draft.as_deref()).map(|d| {
                let params: Vec<DraftParam> = d
                    .rank_params(par)
                    .into_iter()
                    .map(|r| DraftParam {
                        bytes: r.numel.saturating_mul(if serves_bf16 { r.bf16_elem } else { r.elem }),
                        name: r.name,
                        numel: r.numel,
                    })
                    .collect();
                DraftPlan {
                    class: d.class.clone(),
                    weight_bytes: params.iter().map(|p| p.bytes).sum(),
                    verified: d.verified.clone(),
                    unverified: !input.family.verified,
                    params,
                }
            }),
        }
    }

    fn parallel(&self, tp: u64, ep: bool) -> Parallel {
        self.parallel_pp(tp, ep, self.opts.pp)
    }

    fn parallel_pp(&self, tp: u64, ep: bool, pp: u64) -> Parallel {
        let o = self.opts;
        Parallel { tp: tp.max(1), ep, dp: o.dp.max(1), pp: pp.max(1), moe_backend: o.moe_backend }
    }
}

/// (TP, EP, PP) of one probed layout.
type Layout = (u64, bool, u64);

/// The layouts a remedy may name: TP 1..64 (and the sizes asked for), each without EP and, for an
/// MoE model, with it; DP and PP as asked.
/// (TP, EP, PP), the PP asked for first; then, for a model no such layout serves, the same with
/// pipeline stages (2, 4, 8), which only a remedy that finds nothing else names.
fn probe_layouts(p: &Planner<'_>) -> (Vec<Layout>, Vec<Layout>) {
    let mut tps: Vec<u64> = [1u64, 2, 4, 8, 16, 32, 64].into_iter().chain(p.opts.tp.iter().copied()).collect();
    tps.sort_unstable();
    tps.dedup();
    let eps: &[bool] = if p.input.config.moe.is_some() { &[false, true] } else { &[false] };
    let grid = |pp: u64| -> Vec<(u64, bool, u64)> {
        tps.iter().flat_map(|&t| eps.iter().map(move |&e| (t, e, pp))).filter(|&(t, _, pp)| t * pp <= 64).collect()
    };
    let asked = grid(p.opts.pp.max(1));
    let staged = if p.opts.pp <= 1 { [2u64, 4, 8].into_iter().flat_map(grid).collect() } else { Vec::new() };
    (asked, staged)
}

fn layout_name(tp: u64, ep: bool, pp: u64, asked_pp: u64) -> String {
    let mut s = format!("TP {tp}");
    if ep {
        s.push_str(" with EP");
    }
    if pp != asked_pp {
        s.push_str(&format!(" and PP {pp}"));
    }
    s
}

/// Check every failing rule's remedies by planning them, keep the feasible ones and write the fix
/// line from them: no suggestion `plan` itself would refuse.
fn verify_remedies(p: &Planner<'_>, configs: &mut [ConfigPlan]) {
    use std::collections::HashMap;
    let memo: std::cell::RefCell<HashMap<(u64, bool, u64, bool), bool>> = Default::default();
    let feasible = |tp: u64, ep: bool, pp: u64, bf16: bool| -> bool {
        if let Some(&f) = memo.borrow().get(&(tp, ep, pp, bf16)) {
            return f;
        }
        let f = p.eval(&p.parallel_pp(tp, ep, pp), Variant { bf16, ..Variant::default() }).feasible;
        memo.borrow_mut().insert((tp, ep, pp, bf16), f);
        f
    };
    let (asked, staged) = probe_layouts(p);
    let asked_pp = p.opts.pp.max(1);
    for c in configs.iter_mut() {
        let here = (c.tp, c.ep, c.pp);
        let par = p.parallel(c.tp, c.ep);
        // Feasible layouts other than this one, fewest devices first (then without EP first).
        let others = |bf16: bool| -> Vec<String> {
            let pick = |probes: &[(u64, bool, u64)]| -> Vec<String> {
                probes
                    .iter()
                    .filter(|&&l| l != here && feasible(l.0, l.1, l.2, bf16))
                    .take(4)
                    .map(|&(t, e, pp)| layout_name(t, e, pp, asked_pp))
                    .collect()
            };
            let found = pick(&asked);
            if found.is_empty() {
                pick(&staged)
            } else {
                found
            }
        };
        let mut failing = Vec::new();
        for (i, check) in c.checks.iter().enumerate() {
            if check.status == Status::Fail {
                failing.push(i);
            }
        }
        for i in failing {
            let proposed = std::mem::take(&mut c.checks[i].remedies);
            let mut kept = Vec::new();
            for r in proposed {
                match r {
                    Remedy::Layout { .. } => {
                        let layouts = others(false);
                        if !layouts.is_empty() && !kept.iter().any(|k| matches!(k, Remedy::Layout { .. })) {
                            kept.push(Remedy::Layout { layouts });
                        }
                    }
                    Remedy::NoEp => {
                        if c.ep && feasible(c.tp, false, c.pp, false) {
                            kept.push(Remedy::NoEp);
                        }
                    }
                    Remedy::Bf16 { how } => {
                        if p.input.quant.is_none() {
                            continue;
                        }
                        if feasible(c.tp, c.ep, c.pp, true) {
                            kept.push(Remedy::Bf16 { how });
                        } else {
                            let layouts = others(true);
                            if !layouts.is_empty() {
                                kept.push(Remedy::Bf16 { how: format!("{how}, served at {}", or_list(&layouts)) });
                            }
                        }
                    }
                    Remedy::MaxModelLen { len } => {
                        let v = Variant { max_model_len: Some(len), ..Variant::default() };
                        if len > 0 && p.eval(&par, v).feasible {
                            kept.push(Remedy::MaxModelLen { len });
                        }
                    }
                    Remedy::KvCacheFp8 => {
                        let v = Variant { kv_fp8: true, ..Variant::default() };
                        if !p.opts.kv_cache_dtype.starts_with("fp8") && p.eval(&par, v).feasible {
                            kept.push(Remedy::KvCacheFp8);
                        }
                    }
                    Remedy::Manual { .. } => kept.push(r),
                }
            }
            c.checks[i].fix = Some(fix_text(&kept));
            c.checks[i].remedies = kept;
        }
        c.failures = c
            .checks
            .iter()
            .filter(|k| k.status == Status::Fail)
            .map(|k| Failure { rule: k.rule, message: k.message.clone(), fix: k.fix.clone() })
            .collect();
    }
}

pub fn plan(input: &PlanInput, opts: &PlanOptions) -> PlanReport {
    let cfg = &input.config;
    let fam = family_parallel(cfg, input.spec.as_ref());
    let device = opts.device.clone().unwrap_or_else(|| match opts.target {
        Target::Vllm => Device::preset("h100").expect("preset"),
        Target::VllmAscend => Device::preset("ascend-a2").expect("preset"),
    });
    let (max_model_len, len_check) = max_len_check(cfg, opts.max_model_len);
    let serves_bf16 = !device.fp8 && opts.target == Target::VllmAscend;
    let planner = Planner { input, opts, fam, device, max_model_len, len_check };
    let mut configs: Vec<ConfigPlan> = Vec::new();
    for &tp in &opts.tp {
        for &ep in &opts.ep {
            configs.push(planner.eval(&planner.parallel(tp, ep), Variant::default()));
        }
    }
    verify_remedies(&planner, &mut configs);
    let Planner { device, len_check, .. } = planner;
    let mut notes = input.shape.notes.clone();
    if let Some(d) = input.spec.as_ref().and_then(|s| s.draft.as_deref()) {
        let per_tp: Vec<String> = configs
            .iter()
            .filter_map(|c| c.mtp_draft.as_ref().map(|m| format!("TP {}: {}", c.tp, crate::ui::bytes(m.weight_bytes))))
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let evidence = if input.family.verified {
            d.verified.clone()
        } else {
            "UNVERIFIED for this architecture: an estimate from the family's rules".to_string()
        };
        notes.push(format!(
            "MTP: with --speculative-config (method mtp) vLLM also builds the draft model {}, weights per rank {} ({evidence}; `mtp_draft` in --json); the figures above are the main model's",
            d.class,
            per_tp.join(", "),
        ));
    } else if cfg.mtp_layers > 0 || input.shape.params.iter().any(|p| p.role == shape::Role::Mtp) {
        notes.push("MTP / speculative layers are not counted in the main model's weights (vLLM loads them only with --speculative-config); the family does not describe its draft model, so the draft's memory is not counted".into());
    }
    if cfg.mla.is_some() {
        notes.push("MLA: the KV cache holds one latent vector (kv_lora_rank + qk_rope_head_dim) per token and layer on every rank, not split by TP".into());
    }
    if serves_bf16 && input.quant.as_ref().is_some_and(|q| q.fp8_scale.is_some()) {
        notes.push(format!(
            "{} has no fp8: per-rank weights are counted as bf16 (after `ckptpilot dequant`)",
            device.name
        ));
    }
    if opts.target == Target::VllmAscend {
        notes.push("vllm-ascend can give the lm_head, embedding, o_proj and MLP their own TP sizes (additional_config.finegrained_tp_config: lmhead_tensor_parallel_size, embedding_tensor_parallel_size, oproj_tensor_parallel_size, mlp_tensor_parallel_size); the shapes of those layers then follow that size, not --tensor-parallel-size".into());
    }
    if cfg.index_topk.is_some() {
        notes.push("sparse attention (index_topk): the KV figure adds the indexer's fp8 keys (128 + 4 bytes per token and layer)".into());
    }
    let mut rule_ids: Vec<Rule> = rules::RULES.to_vec();
    rule_ids.extend([Rule::MaxLen, Rule::Weights, Rule::KvCache]);
    PlanReport {
        schema: SCHEMA,
        vllm_reference: crate::target::VLLM_REFERENCE,
        model: input.model.clone(),
        architecture: cfg.architecture.clone(),
        model_type: cfg.text_model_type.clone().or_else(|| cfg.model_type.clone()),
        source: input.shape.source,
        quantization: input.quant.as_ref().map(|q| match q.fp8_scale {
            Some(l) => format!("{} ({l})", q.method),
            None => q.method.to_string(),
        }),
        target: opts.target,
        device,
        gpu_memory_utilization: opts.gpu_memory_utilization,
        max_model_len,
        max_model_len_check: len_check,
        max_num_seqs: opts.max_num_seqs,
        kv_cache_dtype: opts.kv_cache_dtype.clone(),
        moe_backend: opts.moe_backend,
        activation_reserve_bytes: opts.activation_reserve_bytes,
        rules: rule_ids,
        family: input.family.clone(),
        notes,
        configs,
    }
}

fn gib(b: u64) -> String {
    format!("{:.1} GiB", b as f64 / (1u64 << 30) as f64)
}

fn weights_check(weights: u64, budget: u64, opts: &PlanOptions, device: &Device) -> Check {
    let short = gib(weights);
    if weights > budget {
        return Check {
            rule: Rule::Weights,
            status: Status::Fail,
            short: format!("{short} > {}", gib(budget)),
            message: format!(
                "torch.OutOfMemoryError while loading: the most loaded rank holds {} of weights, more than {} × {} = {}",
                gib(weights),
                gib(device.memory_bytes),
                opts.gpu_memory_utilization,
                gib(budget)
            ),
            fix: Some("more TP / PP / EP ranks, a device with more memory, or a smaller weight format".into()),
            remedies: vec![Remedy::layout(), Remedy::manual("a device with more memory (--device / --device-memory)")],
        };
    }
    Check { rule: Rule::Weights, status: Status::Pass, short, message: String::new(), fix: None, remedies: Vec::new() }
}

fn kv_check(
    kv: &KvCache,
    weights: u64,
    budget: u64,
    available: u64,
    max_seqs: u64,
    len: u64,
    opts: &PlanOptions,
) -> Check {
    if weights > budget {
        return Check {
            rule: Rule::KvCache,
            status: Status::NotApplicable,
            short: "-".into(),
            message: "weights do not fit".into(),
            fix: None,
            remedies: Vec::new(),
        };
    }
    if kv.bytes_per_seq == 0 {
        // Nothing per sequence at this layout (no KV head lands on a rank: the kv-heads rule says
        // why): no capacity to compute, and no "0 GiB needed" error to invent.
        return Check {
            rule: Rule::KvCache,
            status: Status::NotApplicable,
            short: "-".into(),
            message: "no KV cache per sequence at this layout".into(),
            fix: None,
            remedies: Vec::new(),
        };
    }
    if available == 0 {
        return Check {
            rule: Rule::KvCache,
            status: Status::Fail,
            short: "no room".into(),
            message: "ValueError: No available memory for the cache blocks. Try increasing `gpu_memory_utilization` when initializing the engine (this flag also controls CPU memory reservation on the CPU backend, despite its name).".into(),
            fix: Some("more ranks (TP/PP/EP) or a higher --gpu-memory-utilization".into()),
            remedies: vec![Remedy::layout(), Remedy::manual("a higher --gpu-memory-utilization")],
        };
    }
    if max_seqs == 0 {
        let est = available.checked_div(kv.bytes_per_token).unwrap_or(0);
        return Check {
            rule: Rule::KvCache,
            status: Status::Fail,
            short: "0 seqs".into(),
            message: format!(
                "ValueError: To serve at least one request with the model's max seq len ({len}), ({:.2} GiB KV cache is needed, which is larger than the available KV cache memory ({:.2} GiB). Based on the available memory, the estimated maximum model length is {est}. Try increasing `gpu_memory_utilization` (which also controls CPU memory on the CPU backend) or decreasing `max_model_len` when initializing the engine.",
                kv.bytes_per_seq as f64 / (1u64 << 30) as f64,
                available as f64 / (1u64 << 30) as f64
            ),
            fix: Some(format!("--max-model-len {est} or fewer, more ranks, or --kv-cache-dtype fp8")),
            remedies: vec![Remedy::MaxModelLen { len: est }, Remedy::layout(), Remedy::KvCacheFp8],
        };
    }
    if max_seqs < opts.max_num_seqs {
        return Check {
            rule: Rule::KvCache,
            status: Status::Caveat,
            short: format!("{max_seqs} seqs"),
            message: format!(
                "only {max_seqs} sequences of {len} tokens fit in the KV cache; the baseline asks for {}",
                opts.max_num_seqs
            ),
            fix: None,
            remedies: Vec::new(),
        };
    }
    Check {
        rule: Rule::KvCache,
        status: Status::Pass,
        short: format!("{max_seqs} seqs"),
        message: String::new(),
        fix: None,
        remedies: Vec::new(),
    }
}

/// The failures that make vLLM refuse to build the model at `tp` (with or without EP) at all —
/// the layout rules ([`Rule::is_layout`]), not memory or the target. Empty when vLLM builds it, or
/// when there is no config to plan from (the remap reports that itself).
pub fn layout_failures(
    ck: &Checkpoint,
    model: &str,
    tp: u64,
    ep: bool,
    target: Target,
    rules: &RuleSet,
) -> Vec<Failure> {
    let Ok(input) = PlanInput::from_checkpoint(ck, model, rules) else { return Vec::new() };
    let opts = PlanOptions { tp: vec![tp], ep: vec![ep], target, ..PlanOptions::default() };
    plan(&input, &opts).configs.into_iter().flat_map(|c| c.failures).filter(|f| f.rule.is_layout()).collect()
}

impl crate::ui::Help for PlanError {
    fn help(&self) -> String {
        match self {
            PlanError::Checkpoint(e) => crate::ui::Help::help(e),
            PlanError::ConfigJson { .. } => {
                "fix the JSON at that line and column (or download config.json again)".into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn input(v: Value) -> PlanInput {
        let config = ModelConfig::from_value(&v);
        let quant = QuantScheme::detect(Some(&v), None);
        let (spec, notes, family) = spec_for(&config, Some(&v), quant.as_ref(), RuleSet::builtin());
        let shape = ModelShape::of(spec.as_ref(), "config", notes);
        let attention = crate::quant::modelslim::AttentionDims::of(&config, Some(&v));
        PlanInput { model: "test".into(), config, quant, shape, spec, family, refusal: None, attention }
    }

    fn one(v: Value, tp: u64, ep: bool) -> ConfigPlan {
        let opts = PlanOptions { tp: vec![tp], ep: vec![ep], ..Default::default() };
        plan(&input(v), &opts).configs.remove(0)
    }

    fn check<'a>(c: &'a ConfigPlan, rule: &str) -> &'a Check {
        c.checks.iter().find(|k| k.rule == rule).unwrap()
    }

    fn dense(heads: u64, kv: u64) -> Value {
        json!({"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": heads * 128,
               "num_attention_heads": heads, "num_key_value_heads": kv, "head_dim": 128,
               "intermediate_size": 1024, "num_hidden_layers": 2, "vocab_size": 1000,
               "max_position_embeddings": 131072, "torch_dtype": "bfloat16"})
    }

    #[test]
    fn heads_must_divide_tp() {
        let c = one(dense(12, 12), 8, false);
        assert_eq!(check(&c, "heads").status, Status::Fail);
        assert_eq!(
            check(&c, "heads").message,
            "ValueError: Total number of attention heads (12) must be divisible by tensor parallel size (8)."
        );
        assert_eq!(check(&one(dense(12, 12), 4, false), "heads").status, Status::Pass);
    }

    #[test]
    fn kv_heads_replicate_or_divide() {
        // TP ≥ kv: replicate when TP % kv == 0.
        let c = one(dense(16, 4), 8, false);
        assert_eq!(check(&c, "kv-heads").status, Status::Pass);
        assert_eq!(check(&c, "kv-heads").short, "1 ×2");
        let c = one(dense(24, 8), 12, false);
        assert_eq!(check(&c, "kv-heads").status, Status::Fail);
        assert!(check(&c, "kv-heads").message.contains("12 is not divisible by 8"));
        // TP < kv: kv % TP.
        let c = one(dense(12, 6), 4, false);
        assert!(check(&c, "kv-heads").message.contains("6 is not divisible by 4"));
        // KV cache per rank follows the replicated head: 2 × 1 × 128 × 2 bytes × 2 layers.
        assert_eq!(one(dense(16, 4), 8, false).kv_bytes_per_token, 2 * 128 * 2 * 2);
        assert_eq!(one(dense(16, 4), 2, false).kv_bytes_per_token, 2 * 2 * 128 * 2 * 2);
    }

    #[test]
    fn no_kv_replication_family_fails_beyond_kv_heads() {
        // The family file's `parallel` (gpt_oss.json), found by the architecture.
        let mut v = dense(16, 4);
        v["architectures"] = json!(["GptOssForCausalLM"]);
        v["model_type"] = json!("gpt_oss");
        let c = one(v, 8, false);
        assert_eq!(check(&c, "kv-heads").status, Status::Fail);
        assert!(check(&c, "kv-heads").message.starts_with("ZeroDivisionError"));
    }

    #[test]
    fn qk_norm_by_family() {
        // From the family file the architecture names…
        let mut v = dense(16, 4);
        v["architectures"] = json!(["Qwen3ForCausalLM"]);
        assert_eq!(check(&one(v.clone(), 8, false), "qk-norm").short, "per-head");
        v["architectures"] = json!(["Olmo2ForCausalLM"]);
        assert_eq!(check(&one(v.clone(), 8, false), "qk-norm").short, "full, gathered");
        // …or, for an architecture without a family file, from parallel.json by model_type.
        v["architectures"] = json!(["MiniMaxM2ForCausalLM"]);
        v["model_type"] = json!("minimax_m2");
        let c = one(v.clone(), 8, false);
        assert_eq!(check(&c, "qk-norm").short, "k_norm per replica");
        assert_eq!(check(&one(v, 2, false), "qk-norm").short, "full, /2");
        // No q/k norm in a llama: not applicable.
        assert_eq!(check(&one(dense(16, 4), 8, false), "qk-norm").status, Status::NotApplicable);
    }

    #[test]
    fn attention_free_family_needs_no_heads() {
        // mamba.json's `parallel.attention_free` (vLLM's IsAttentionFree MambaForCausalLM): no
        // num_attention_heads in the config, and vLLM builds it.
        let v = json!({"architectures": ["MambaForCausalLM"], "model_type": "mamba", "hidden_size": 768,
                       "intermediate_size": 1536, "state_size": 16, "conv_kernel": 4, "time_step_rank": 48,
                       "num_hidden_layers": 2, "vocab_size": 50280, "tie_word_embeddings": true,
                       "torch_dtype": "bfloat16"});
        let c = one(v.clone(), 2, false);
        assert_eq!(check(&c, "config").status, Status::Pass);
        assert_eq!(check(&c, "heads").status, Status::NotApplicable);
        // conv1d's [intermediate, 1, kernel] weight splits on dim 0 (1536 / 2), not on its unit dimension.
        assert_eq!(check(&c, "mlp").status, Status::Pass, "{:?}", check(&c, "mlp"));
        // The same config under a family with attention is not a model config vLLM can build.
        let mut v = v;
        v["architectures"] = json!(["LlamaForCausalLM"]);
        v["model_type"] = json!("llama");
        assert_eq!(check(&one(v, 2, false), "config").status, Status::Fail);
    }

    #[test]
    fn dense_mlp_intermediate_divides() {
        let mut v = dense(16, 16);
        v["intermediate_size"] = json!(1000);
        let c = one(v, 16, false);
        assert_eq!(check(&c, "mlp").status, Status::Fail);
        assert!(check(&c, "mlp").message.starts_with("AssertionError: 1000 is not divisible by 16"));
    }

    fn moe(inter: u64, experts: u64, model_type: &str) -> Value {
        json!({"architectures": ["Qwen3MoeForCausalLM"], "model_type": model_type, "hidden_size": 2048,
               "num_attention_heads": 32, "num_key_value_heads": 4, "head_dim": 128,
               "intermediate_size": 6144, "moe_intermediate_size": inter, "num_experts": experts,
               "num_hidden_layers": 2, "vocab_size": 151936, "max_position_embeddings": 40960,
               "torch_dtype": "bfloat16"})
    }

    #[test]
    fn moe_without_and_with_ep() {
        let c = one(moe(768, 128, "qwen3_moe"), 4, false);
        assert_eq!(check(&c, "moe").short, "I 192");
        // Flattened TP × DP.
        let opts = PlanOptions { tp: vec![4], dp: 2, ..Default::default() };
        let c = plan(&input(moe(100, 128, "qwen3_moe")), &opts).configs.remove(0);
        assert!(check(&c, "moe").message.contains("100 is not divisible by 8"));
        // EP: whole experts, uneven allowed with a caveat.
        assert_eq!(check(&one(moe(768, 128, "qwen3_moe"), 8, true), "moe").short, "16 exp");
        let c = one(moe(768, 60, "qwen2_moe"), 8, true);
        assert_eq!(check(&c, "moe").status, Status::Caveat);
        assert_eq!(check(&c, "moe").short, "8-7 exp");
        // TP > experts raises in the Qwen MoE block.
        let c = one(moe(768, 4, "qwen3_moe"), 8, false);
        assert_eq!(
            check(&c, "moe").message,
            "ValueError: Tensor parallel size 8 is greater than the number of experts 4."
        );
        // EP on a dense model.
        let c = one(dense(16, 16), 2, true);
        assert!(check(&c, "moe").message.contains("Number of experts in the model must be greater than 0"));
    }

    fn fp8(mut v: Value) -> Value {
        v["quantization_config"] =
            json!({"quant_method": "fp8", "weight_block_size": [128, 128], "activation_scheme": "dynamic"});
        v
    }

    #[test]
    fn fp8_block_row_column_and_exemptions() {
        // Dense down_proj (row): 18432 / 32 = 576, not a multiple of 128.
        let mut v = fp8(dense(32, 32));
        v["intermediate_size"] = json!(18432);
        let c = one(v.clone(), 32, false);
        assert_eq!(check(&c, "fp8-block").status, Status::Fail);
        assert!(check(&c, "fp8-block").message.starts_with(
            "ValueError: Weight input_size_per_partition = 576 is not divisible by weight quantization block_k = 128."
        ));
        // gate_up (merged) is exempt even though 576 % 128 != 0 on the output side; TP 16 passes.
        assert_eq!(check(&one(v, 16, false), "fp8-block").status, Status::Pass);
        // A single-output column layer (MLA q_b_proj) is checked on its output.
        let mla = fp8(json!({"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
            "hidden_size": 1024, "num_attention_heads": 16, "num_key_value_heads": 16, "intermediate_size": 2048,
            "q_lora_rank": 256, "kv_lora_rank": 128, "qk_rope_head_dim": 32, "qk_nope_head_dim": 40, "v_head_dim": 64,
            "num_hidden_layers": 1, "vocab_size": 1024, "max_position_embeddings": 4096}));
        // q_b_proj out 16 × 72 = 1152; / 4 = 288 (not a multiple of 128).
        let c = one(mla, 4, false);
        assert!(
            check(&c, "fp8-block").message.contains("Weight output_partition_size = 288"),
            "{:?}",
            check(&c, "fp8-block")
        );
    }

    #[test]
    fn fp8_moe_refines_or_fails() {
        // 768 / 8 = 96: scales refined to gcd(128, 128, 96, 2048) = 32 — loads (Triton only).
        let c = one(fp8(moe(768, 128, "qwen3_moe")), 8, false);
        assert_eq!(check(&c, "fp8-block").status, Status::Caveat);
        assert_eq!(check(&c, "fp8-block").short, "MoE scales→32x32");
        // 160 / 2 = 80: gcd 16 < 32, so vLLM's validation raises.
        let c = one(fp8(moe(160, 128, "qwen3_moe")), 2, false);
        assert_eq!(
            check(&c, "fp8-block").message,
            "ValueError: The output_size of gate's and up's weight = 80 is not divisible by weight quantization block_n = 128."
        );
        // With EP the experts are whole (160): not a multiple of 128 either, but gcd 32 refines.
        assert_eq!(check(&one(fp8(moe(160, 128, "qwen3_moe")), 2, true), "fp8-block").short, "MoE scales→32x32");
        assert_eq!(check(&one(fp8(moe(768, 128, "qwen3_moe")), 8, true), "fp8-block").status, Status::Pass);
    }

    #[test]
    fn merged_fp8_shards_that_are_not_whole_blocks_fail_at_load() {
        // The Qwen3 case: q 4 × 64 = 256 rows, k and v 64 each: the scale has
        // ceil(384 / 128) = 3 rows, v is loaded at ceil(320 / 128) = 3.
        let v = fp8(json!({"architectures": ["Qwen3ForCausalLM"], "model_type": "qwen3", "hidden_size": 1024,
            "num_attention_heads": 4, "num_key_value_heads": 1, "head_dim": 64, "intermediate_size": 1024,
            "num_hidden_layers": 2, "vocab_size": 1024, "max_position_embeddings": 4096, "torch_dtype": "bfloat16"}));
        let c = one(v.clone(), 1, false);
        assert_eq!(check(&c, "fp8-block").status, Status::Pass, "built: merged layers are exempt from the block check");
        assert_eq!(check(&c, "scale-load").status, Status::Fail);
        assert!(check(&c, "scale-load")
            .message
            .starts_with("RuntimeError: start (3) + length (1) exceeds dimension size (3)."));
        // Whole blocks everywhere: 2 KV heads × 64 = 128.
        let mut whole = v;
        whole["num_key_value_heads"] = json!(2);
        whole["num_attention_heads"] = json!(4);
        assert_eq!(check(&one(whole, 1, false), "scale-load").status, Status::Pass);
    }

    #[test]
    fn moe_backend_pads_or_refuses_instead_of_refining() {
        let backend = |v: Value, tp: u64, b: MoeBackend| {
            let opts = PlanOptions { tp: vec![tp], moe_backend: b, ..Default::default() };
            plan(&input(v), &opts).configs.remove(0)
        };
        // 768 / 8 = 96 per rank. auto (and triton on an fp8 GPU) refine the scales to 32x32 …
        let v = fp8(moe(768, 128, "qwen3_moe"));
        assert_eq!(check(&backend(v.clone(), 8, MoeBackend::Triton), "fp8-block").short, "MoE scales→32x32");
        // … deep_gemm cannot take them: 768 and 2048 are whole blocks, so each rank's 96 rows are
        // padded to 128 and allocated so.
        let c = backend(v.clone(), 8, MoeBackend::DeepGemm);
        assert_eq!(check(&c, "fp8-block").status, Status::Caveat);
        assert_eq!(check(&c, "fp8-block").short, "MoE padded 96→128");
        let auto = backend(v.clone(), 8, MoeBackend::Auto);
        // Per layer: 128 experts × (2 × 32 + 32 extra rows) × 2048 fp8 bytes, in 2 layers; the
        // padded scales are whole 128-blocks instead of 32x32 ones.
        let extra_weights = 2 * 128 * (2 * 32 * 2048 + 2048 * 32);
        let refined_scales = 2 * 128 * 4 * ((2 * 96 / 32) * (2048 / 32) + (2048 / 32) * (96 / 32));
        let (rows_w13, rows_w2, hidden_blocks) = (2 * 128 / 128, 128 / 128, 2048 / 128);
        let padded_scales = 2 * 128 * 4 * (rows_w13 * hidden_blocks + hidden_blocks * rows_w2);
        assert_eq!(
            c.per_rank_weights.stored,
            auto.per_rank_weights.stored + extra_weights + padded_scales - refined_scales
        );
        // 160 / 2 = 80: not refinable (gcd 16); auto raises vLLM's block check, deep_gemm the padding's.
        let v = fp8(moe(160, 128, "qwen3_moe"));
        assert!(check(&backend(v.clone(), 2, MoeBackend::Auto), "fp8-block").message.contains("= 80 is not divisible"));
        assert!(check(&backend(v, 2, MoeBackend::DeepGemm), "fp8-block").message.starts_with(
            "ValueError: Block-aligned FP8 TP sharding requires 128-aligned global expert dimensions, pure TP, and no LoRA or expert bias."
        ));
        // TP 1 never pads: 32 rows refined to 32x32, which marlin's kernels cannot take.
        let mut v = fp8(moe(32, 8, "qwen3_moe"));
        v["hidden_size"] = json!(2048);
        let c = backend(v, 1, MoeBackend::Marlin);
        assert!(check(&c, "fp8-block")
            .message
            .starts_with("ValueError: FP8 MoE backend MARLIN does not support the deployment configuration since"));
    }

    #[test]
    fn vocab_padding_and_pp() {
        let mut v = dense(12, 12);
        v["vocab_size"] = json!(1000); // padded to 1024
        let c = one(v.clone(), 3, false);
        assert!(check(&c, "vocab").message.starts_with("AssertionError: 1024 is not divisible by 3"));
        v["num_hidden_layers"] = json!(61);
        let opts = PlanOptions { tp: vec![4], pp: 4, ..Default::default() };
        let c = plan(&input(v.clone()), &opts).configs.remove(0);
        assert_eq!(check(&c, "pp").short, "15-16 layers");
        let opts = PlanOptions { tp: vec![4], pp: 64, ..Default::default() };
        assert_eq!(check(&plan(&input(v), &opts).configs[0], "pp").status, Status::Fail);
    }

    #[test]
    fn ascend_refuses_native_fp8_and_counts_bf16() {
        let v = fp8(dense(16, 16));
        let opts = PlanOptions { tp: vec![1], target: Target::VllmAscend, ..Default::default() };
        let r = plan(&input(v.clone()), &opts);
        let c = &r.configs[0];
        assert_eq!(check(c, "target").status, Status::Fail);
        assert!(check(c, "target").message.starts_with("NotImplementedError"));
        assert_eq!(r.device.name, "ascend-a2");
        assert_eq!(c.per_rank_weight_bytes, c.per_rank_weights.bf16);
        assert!(c.per_rank_weights.bf16 > c.per_rank_weights.stored);
        let vllm = plan(&input(v), &PlanOptions { tp: vec![1], ..Default::default() });
        assert_eq!(vllm.configs[0].per_rank_weight_bytes, vllm.configs[0].per_rank_weights.stored);
        assert_eq!(check(&vllm.configs[0], "target").status, Status::Pass);
    }

    #[test]
    fn max_len_capped_or_refused() {
        let v = moe(768, 128, "qwen3_moe"); // max_position_embeddings 40960
        let r = plan(&input(v.clone()), &PlanOptions { tp: vec![4], ..Default::default() });
        assert_eq!(r.max_model_len, 40960);
        assert_eq!(r.max_model_len_check.status, Status::Caveat);
        let r = plan(&input(v), &PlanOptions { tp: vec![4], max_model_len: Some(131072), ..Default::default() });
        assert_eq!(r.configs[0].verdict, Verdict::Infeasible);
        assert!(r.max_model_len_check.message.starts_with(
            "ValueError: User-specified max_model_len (131072) is greater than the derived max_model_len (max_position_embeddings=40960.0"
        ));
    }

    #[test]
    fn kv_capacity_and_mla_latent() {
        let mla = json!({"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3",
            "hidden_size": 1024, "num_attention_heads": 16, "num_key_value_heads": 16, "intermediate_size": 2048,
            "kv_lora_rank": 512, "qk_rope_head_dim": 64, "qk_nope_head_dim": 128, "v_head_dim": 128,
            "num_hidden_layers": 10, "vocab_size": 1024, "max_position_embeddings": 163840, "torch_dtype": "bfloat16"});
        for tp in [1, 8] {
            let c = one(mla.clone(), tp, false);
            assert_eq!(c.kv_bytes_per_token, (512 + 64) * 2 * 10, "latent cache is not split by TP");
        }
        let c = one(mla, 1, false);
        let budget = (81_559u64 << 20) as f64 * 0.9;
        let expect = (budget as u64 - c.per_rank_weight_bytes - (4 << 30)) / c.kv_bytes_per_seq;
        assert_eq!(c.max_seqs_at_max_model_len, expect);
        assert_eq!(c.kv_bytes_per_seq, c.kv_bytes_per_token * 131072);
        // fp8 KV halves it.
        let opts = PlanOptions { tp: vec![1], kv_cache_dtype: "fp8".into(), ..Default::default() };
        let v = dense(16, 4);
        let r = plan(&input(v.clone()), &opts);
        assert_eq!(r.configs[0].kv_bytes_per_token * 2, one(v, 1, false).kv_bytes_per_token);
    }

    #[test]
    fn sliding_window_layers_cap_their_cache() {
        let mut v = dense(16, 4);
        v["sliding_window"] = json!(1024);
        v["layer_types"] = json!(["sliding_attention", "full_attention"]);
        let c = one(v, 1, false);
        let per_layer = 2 * 4 * 128 * 2;
        assert_eq!(c.kv_bytes_per_token, 2 * per_layer);
        assert_eq!(c.kv_bytes_per_seq, per_layer * 131072 + per_layer * 1024);
    }
}
