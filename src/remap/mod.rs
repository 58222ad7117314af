//! `ckptpilot remap`: every checkpoint tensor to the vLLM parameter it fills (shard id, expert id, TP
//! slice), following a family's rule file, and the reverse check — parameters nothing fills, tensors
//! that go nowhere, slots filled twice, shapes that disagree with the config.

pub mod draft;
pub mod json;

pub use crate::arch::{expr, rules};
pub use crate::model::expected::{expected_params, Expected, Role, ScaleOf, Vars};

use crate::arch::Partition;
use crate::checkpoint::config::ModelConfig;
use crate::checkpoint::names::find;
use crate::checkpoint::Checkpoint;
use crate::findings::{Code, Finding};
use crate::model::layout::padded_vocab;
use rules::{Family, RuleSet, Unmapped};
use rustc_hash::FxHashMap;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, HashSet};

mod router;

use router::Router;

pub const SCHEMA: &str = "ckptpilot.remap/1";

/// The most layers / blocks / experts a rule expands to: beyond any real model.

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Loaded into a parameter of the same name (possibly renamed by the mapper).
    Load,
    /// One shard of a stacked parameter (qkv_proj, gate_up_proj, fused_qkv_a_proj).
    Stack,
    /// One expert's projection into the fused expert parameter.
    Expert,
    /// fp8 on a target without fp8: dequantized with its scale at load, then loaded.
    DequantizeThenLoad,
    /// Skipped on purpose (reason given).
    Skip,
    /// Reaches no parameter (reason says what vLLM does).
    Unmapped,
    /// Loaded into a persistent buffer of the module (not a parameter: no TP split, no weight bytes).
    Buffer,
}

/// One rank's part of a checkpoint tensor: `[start, end)` along `dim`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RankSlice {
    pub rank: u64,
    pub dim: usize,
    pub start: u64,
    pub end: u64,
}

/// How a tensor is split across TP ranks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
pub enum TpSplit {
    /// Every rank loads all of it.
    Replicated,
    /// Each rank loads `slices[rank]`.
    Split {
        slices: Vec<RankSlice>,
    },
    /// Whole tensor on the expert-parallel rank that owns the expert.
    ExpertOwner {
        rank: u64,
    },
    /// The loader slices it itself (fused experts, quantization scales): not modelled.
    ByLoader,
    None,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub checkpoint_name: String,
    /// Shared by every row of the shard (one allocation per shard, not per row).
    pub shard_file: std::sync::Arc<str>,
    pub dtype: &'static str,
    pub shape: Box<[u64]>,
    /// Shared by every row that fills the parameter.
    pub param: Option<std::sync::Arc<str>>,
    pub shard_id: Option<Value>,
    pub expert_id: Option<u64>,
    pub partition: Option<Partition>,
    pub action: Action,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<Box<str>>,
    /// For an unmapped tensor: the parameter name its routing reached (which the model lacks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routed_to: Option<Box<str>>,
    pub tp: TpSplit,
    /// No recorded vLLM run backs the rule that placed this row (an inferred family, the generic
    /// decoder, or a family file with no evidence for this architecture): the rules' guess.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub unverified: bool,
    /// The shape the family expects from the config where this row's differs (a `remap-shape` finding).
    #[serde(skip)]
    pub expected_shape: Option<Box<[u64]>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FamilyInfo {
    pub family: String,
    pub vllm_source: String,
    pub verified: String,
    /// `architecture` (named in config.json) or `inferred` (closest by tensor names).
    pub matched_by: &'static str,
    /// For an inferred family: the share of tensors it maps.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// Whether a recorded vLLM oracle run verifies these rules for this architecture (see
    /// `ckptpilot families`); when not, every row is marked `unverified`.
    pub recorded: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct RemapReport {
    pub schema: &'static str,
    pub vllm_reference: &'static str,
    pub model: String,
    pub architecture: Option<String>,
    pub family: Option<FamilyInfo>,
    pub tp: u64,
    pub ep: bool,
    pub target: crate::target::Target,
    pub rows: Vec<Row>,
    /// The parameters the vLLM model will have (from the rules and the config), with their shard ids.
    pub params: Vec<ParamOut>,
    /// The reverse check, as audit findings.
    pub findings: Vec<Finding>,
    pub counts: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ParamOut {
    pub name: String,
    pub partition: Partition,
    /// Shard ids ("q", "k", "v", "0", "1", "w1", …); empty for an unstacked parameter.
    pub shards: Vec<String>,
    /// Shape of each shard's checkpoint tensor, as the config implies it (null where not evaluated).
    pub shapes: Vec<Option<Vec<u64>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experts: Option<u64>,
    /// One checkpoint tensor carries every expert.
    pub fused_experts: bool,
    pub optional: bool,
    /// The dtype vLLM allocates it in regardless of the checkpoint (absent: the model dtype).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dtype: Option<crate::arch::rules::AllocDtype>,
}

/// WeightsMapper semantics: substr, then prefix, then suffix; every matching entry applies to the
/// progressively rewritten name; a `null` target drops the tensor.
pub fn apply_mapper(m: &rules::Mapper, name: &str) -> Option<String> {
    let mut n = String::with_capacity(name.len() + 16);
    apply_mapper_into(m, name, &mut n).then_some(n)
}

/// [`apply_mapper`] into a buffer the caller reuses; false when the mapper drops the name.
fn apply_mapper_into(m: &rules::Mapper, name: &str, n: &mut String) -> bool {
    n.clear();
    n.push_str(name);
    for (from, to) in &m.substr {
        if let Some(at) = find(n, from) {
            let Some(to) = to.as_deref() else { return false };
            n.replace_range(at..at + from.len(), to);
        }
    }
    for (from, to) in &m.prefix {
        if n.starts_with(from.as_str()) {
            let Some(to) = to.as_deref() else { return false };
            n.replace_range(..from.len(), to);
        }
    }
    for (from, to) in &m.suffix {
        if n.ends_with(from.as_str()) {
            let Some(to) = to.as_deref() else { return false };
            n.truncate(n.len() - from.len());
            n.push_str(to);
        }
    }
    true
}

/// Where one checkpoint name goes, before the parameter set is consulted.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    Skip(String),
    /// Loaded into a persistent buffer (the family's `buffers`; the reason cites vLLM).
    Buffer(String),
    /// A KV-cache scale, renamed the way vLLM renames it; dropped with a warning if the model has no
    /// such parameter.
    KvScale {
        name: String,
    },
    Param {
        name: String,
        shard: Option<Value>,
        expert: Option<u64>,
        stacked: bool,
    },
}

/// The routing of `name` by the family's rules, as the family's `load_weights` does it.
pub fn route(family: &Family, vars: &Vars<'_>, name: &str) -> Route {
    let mut buf = (String::with_capacity(name.len() + 16), String::new());
    let r = Router::new(family, vars).route_into(name, &mut buf);
    let n = buf.0;
    match r {
        Routed::Skip(reason) => Route::Skip(reason.into_owned()),
        Routed::Buffer(reason) => Route::Buffer(reason.to_string()),
        Routed::KvScale => Route::KvScale { name: n },
        Routed::Param { shard, expert, stacked } => {
            Route::Param { name: n, shard: shard.map(ShardRef::to_value), expert, stacked }
        }
    }
}

/// A shard id as routing finds it, borrowed: an expert projection's (`w1`, `w2`, `w3`) or a
/// stacked rule's.
#[derive(Debug, Clone, Copy)]
enum ShardRef<'f> {
    Expert(&'static str),
    Rule(&'f Value),
}

impl<'f> ShardRef<'f> {
    fn to_value(self) -> Value {
        match self {
            ShardRef::Expert(s) => Value::from(s),
            ShardRef::Rule(v) => v.clone(),
        }
    }
    /// As [`shard_key`] of its value.
    fn key(self) -> std::borrow::Cow<'f, str> {
        match self {
            ShardRef::Expert(s) => std::borrow::Cow::Borrowed(s),
            ShardRef::Rule(Value::String(s)) => std::borrow::Cow::Borrowed(s.as_str()),
            ShardRef::Rule(other) => std::borrow::Cow::Owned(other.to_string()),
        }
    }
    fn is(self, v: &Value) -> bool {
        match self {
            ShardRef::Expert(s) => v.as_str() == Some(s),
            ShardRef::Rule(r) => r == v,
        }
    }
}

/// [`Route`] with nothing owned: a parameter or KV-scale name is left in the caller's buffer.
enum Routed<'f> {
    Skip(std::borrow::Cow<'f, str>),
    Buffer(&'f str),
    KvScale,
    Param { shard: Option<ShardRef<'f>>, expert: Option<u64>, stacked: bool },
}

/// Every dotted prefix of every expected parameter name (`model`, `model.layers`, …): the modules
/// the vLLM model has, so an unmapped name is placed in one hash lookup per segment.
fn module_prefixes(expected: &[Expected]) -> HashSet<&str> {
    let mut out = HashSet::new();
    for e in expected {
        let n = e.name.as_str();
        out.extend(n.match_indices('.').map(|(i, _)| &n[..i]));
        out.insert(n);
    }
    out
}

/// The shortest dotted prefix of `name` that is not a module or parameter of the model.
fn unknown_prefix(name: &str, known: &HashSet<&str>) -> String {
    name.match_indices('.')
        .map(|(i, _)| &name[..i])
        .chain([name])
        .find(|p| !known.contains(p))
        .unwrap_or(name)
        .to_string()
}

/// The options of one remap.
#[derive(Debug, Clone)]
pub struct RemapOptions {
    pub tp: u64,
    pub ep: bool,
    pub target: crate::target::Target,
    /// Build the table; without it only the reverse check runs (what `audit` needs).
    pub rows: bool,
}

impl Default for RemapOptions {
    fn default() -> Self {
        RemapOptions { tp: 1, ep: false, target: crate::target::Target::Vllm, rows: true }
    }
}

fn shard_key(v: &Option<Value>) -> std::borrow::Cow<'_, str> {
    match v {
        None => std::borrow::Cow::Borrowed(""),
        Some(Value::String(s)) => std::borrow::Cow::Borrowed(s.as_str()),
        Some(other) => std::borrow::Cow::Owned(other.to_string()),
    }
}

/// Whether the last dotted segment of `name` names a scale (`weight_scale_inv`, `k_scale`, …).
fn leaf_is_scale(name: &str) -> bool {
    let leaf = name.rfind('.').map_or(name, |i| &name[i + 1..]);
    crate::checkpoint::names::has(leaf, "scale")
}

/// The TP split of one checkpoint tensor filling `exp` (shard `shard`).
fn tp_split(exp: &Expected, row: &Row, vars: &Vars<'_>, opts: &RemapOptions) -> TpSplit {
    let tp = opts.tp.max(1);
    if leaf_is_scale(&row.checkpoint_name) {
        return if exp.partition == Partition::Replicated { TpSplit::Replicated } else { TpSplit::ByLoader };
    }
    if exp.fused_experts {
        return TpSplit::ByLoader;
    }
    let shape = &row.shape;
    let even = |dim: usize| -> TpSplit {
        let Some(&len) = shape.get(dim) else { return TpSplit::Replicated };
        let per = len / tp;
        TpSplit::Split {
            slices: (0..tp).map(|r| RankSlice { rank: r, dim, start: r * per, end: (r + 1) * per }).collect(),
        }
    };
    if tp == 1 && exp.partition != Partition::Expert {
        return TpSplit::Replicated;
    }
    match exp.partition {
        Partition::Replicated => TpSplit::Replicated,
        Partition::Column | Partition::Merged | Partition::QkvQ => even(0),
        // q, k and v rows of one fused tensor: each rank's part is three ranges (and a replicated
        // KV head when TP exceeds them), cut by QKVParallelLinear's loader.
        Partition::Qkv => TpSplit::ByLoader,
        Partition::Row => {
            if shape.len() < 2 {
                TpSplit::Replicated
            } else {
                even(1)
            }
        }
        Partition::QkvKv => {
            let shard = shard_key(&row.shard_id);
            if shard == "q" {
                return even(0);
            }
            let nkv = vars.get("num_key_value_heads").unwrap_or(1).max(1) as u64;
            let Some(&len) = shape.first() else { return TpSplit::Replicated };
            if tp >= nkv {
                let hd = len / nkv;
                let replicas = (tp / nkv).max(1);
                TpSplit::Split {
                    slices: (0..tp)
                        .map(|r| {
                            let h = r / replicas;
                            RankSlice { rank: r, dim: 0, start: h * hd, end: (h + 1) * hd }
                        })
                        .collect(),
                }
            } else {
                even(0)
            }
        }
        Partition::Vocab => {
            let Some(&rows) = shape.first() else { return TpSplit::Replicated };
            let per = padded_vocab(rows) / tp;
            TpSplit::Split {
                slices: (0..tp)
                    .map(|r| RankSlice { rank: r, dim: 0, start: (r * per).min(rows), end: ((r + 1) * per).min(rows) })
                    .collect(),
            }
        }
        Partition::Expert => {
            let e = row.expert_id.unwrap_or(0);
            if opts.ep && tp > 1 {
                let n = exp.experts.unwrap_or(1).max(1);
                let (base, rem) = (n / tp, n % tp);
                // Linear placement: rank r holds base + (r < rem) experts starting at r*base + min(r, rem).
                let owner = (0..tp).find(|&r| {
                    let start = r * base + r.min(rem);
                    let count = base + (r < rem) as u64;
                    e >= start && e < start + count
                });
                return owner.map_or(TpSplit::None, |rank| TpSplit::ExpertOwner { rank });
            }
            if tp == 1 {
                return TpSplit::Replicated;
            }
            // w1 / w3 split on the output dim, w2 on the input dim.
            if shard_key(&row.shard_id) == "w2" {
                even(1)
            } else {
                even(0)
            }
        }
    }
}

/// The ModelSlim description vLLM-Ascend reads, when that is the target.
fn modelslim_for_ascend(
    ck: &Checkpoint,
    target: crate::target::Target,
) -> Option<&crate::quant::modelslim::Description> {
    (target == crate::target::Target::VllmAscend).then_some(ck.modelslim.as_ref()).flatten()
}

/// Remap every tensor of `ck` with `family`.
pub fn remap_with(
    ck: &Checkpoint,
    model: &str,
    family: &Family,
    matched_by: &'static str,
    confidence: Option<f64>,
    opts: &RemapOptions,
) -> RemapReport {
    let cfg = ck.config.clone().unwrap_or_default();
    let vars = Vars::new(&cfg, ck.config_json.as_ref());
    let quant = ck.quant_scheme().cloned();
    // Sizes beyond any real model would size the parameter set by an unchecked field.
    let out_of_range = cfg.sizes_in_range().err();
    let expected = if out_of_range.is_some() { Vec::new() } else { expected_params(family, &vars, quant.as_ref()) };
    let by_name: FxHashMap<&str, usize> = expected.iter().enumerate().map(|(i, e)| (e.name.as_str(), i)).collect();
    let modules = module_prefixes(&expected);
    let no_fp8 = opts.target == crate::target::Target::VllmAscend;
    let mut rows: Vec<Row> = Vec::with_capacity(if opts.rows { ck.tensor_count() } else { 0 });
    // Rules a recorded vLLM run verifies for this very architecture (chosen by it, not inferred).
    let recorded = matched_by == "architecture"
        && cfg.architecture.as_deref().is_some_and(|a| {
            family.architectures.iter().any(|x| x == a) && crate::arch::coverage::verified_tps(a).is_some()
        });
    let mut findings = Folder::default();
    let ascend_description = modelslim_for_ascend(ck, opts.target);
    let mla = cfg.mla.is_some();
    // (parameter, shard, expert) → the row that filled it.
    // ModelSlim: the scheme of the first shard stacked into each fused parameter.
    let modelslim = quant.as_ref().and_then(|q| q.modelslim.clone());
    // fused parameter → its shards' (order in the family's stacked rules, scheme, tensor, file).
    let mut fused_scheme: BTreeMap<String, Vec<(usize, String, String, String)>> = BTreeMap::new();
    let mut filled = Filled::new(&expected);
    let router = Router::new(family, &vars);
    // Rows share their shard's name and their parameter's name.
    let shard_names: Vec<std::sync::Arc<str>> =
        if opts.rows { ck.shards.iter().map(|s| std::sync::Arc::from(s.name.as_str())).collect() } else { Vec::new() };
    // The shard of a row nobody keeps: one empty name for all (not an allocation per tensor).
    let no_shard: std::sync::Arc<str> = std::sync::Arc::from("");
    let mut param_names: Vec<Option<std::sync::Arc<str>>> = vec![None; if opts.rows { expected.len() } else { 0 }];
    // The routed name of the tensor at hand (reused: no allocation per tensor).
    let mut route_buf = (String::new(), String::new());
    for (ti, (id, t)) in ck.tensors_with_ids().enumerate() {
        let e = t.entry;
        let keep = opts.rows;
        let mut row = Row {
            checkpoint_name: if keep { e.name.clone() } else { String::new() },
            shard_file: if keep { shard_names[id.shard_index()].clone() } else { no_shard.clone() },
            dtype: e.dtype.as_str(),
            shape: if keep { e.shape.as_slice().into() } else { Box::default() },
            param: None,
            shard_id: None,
            expert_id: None,
            partition: None,
            action: Action::Skip,
            reason: None,
            routed_to: None,
            tp: TpSplit::None,
            unverified: !recorded,
            expected_shape: None,
        };
        // vLLM-Ascend's cache-scale mapper renames attention-cache quantization tensors first; where
        // the attention method registers the renamed parameter it is loaded there (it is no parameter
        // of the family's own set), elsewhere the renamed name goes through the model's routing.
        let renamed = ascend_description.and_then(|d| d.cache_rename(&e.name, mla));
        if let Some(r) = renamed.as_ref().filter(|r| r.registered) {
            row.action = Action::Load;
            row.param = Some(r.param.as_str().into());
            row.reason = Some(
                format!(
                    "renamed by vLLM-Ascend's cache-scale mapper; registered by its {} attention method",
                    match r.feature {
                        crate::quant::modelslim::CacheQuant::C8 => "C8 KV-cache",
                        crate::quant::modelslim::CacheQuant::Fa => "FAKQuant",
                        crate::quant::modelslim::CacheQuant::Indexer => "indexer (INT8_DYNAMIC)",
                    }
                )
                .into(),
            );
            if opts.rows {
                rows.push(row);
            }
            continue;
        }
        let route_name = renamed.as_ref().map_or(e.name.as_str(), |r| r.param.as_str());
        let routed = match &out_of_range {
            Some(why) => Routed::Skip(format!("not checked: config.json {why}").into()),
            None => match router.route_into(route_name, &mut route_buf) {
                Routed::KvScale if !by_name.contains_key(route_buf.0.as_str()) => Routed::Skip(format!(
                    "KV-cache scale with no `{}` parameter: vLLM warns \"Found kv scale in the checkpoint … not loaded\" and drops it",
                    route_buf.0
                ).into()),
                Routed::KvScale => Routed::Param { shard: None, expert: None, stacked: false },
                r => r,
            },
        };
        match routed {
            Routed::Skip(reason) => {
                if keep {
                    row.reason = Some(reason.into());
                }
            }
            Routed::Buffer(reason) => {
                row.action = Action::Buffer;
                row.reason = Some(reason.into());
                row.routed_to = Some(apply_mapper(&family.mapper, &e.name).unwrap_or_else(|| e.name.clone()).into());
            }
            Routed::KvScale => unreachable!("resolved above"),
            Routed::Param { shard, expert, stacked } => {
                let name = route_buf.0.as_str();
                if let (true, Some(d)) = (stacked && e.name.ends_with(".weight"), &modelslim) {
                    let scheme = d.types.get(&e.name).cloned().unwrap_or_default();
                    // vLLM-Ascend walks a fused layer's shards in packed_modules_mapping order (the
                    // family's stacked rules', by shard id).
                    let order = family
                        .stacked
                        .iter()
                        .position(|r| shard.is_some_and(|s| s.is(&r.id)) && name.contains(r.param.as_str()))
                        .unwrap_or(usize::MAX);
                    fused_scheme.entry(name.to_string()).or_default().push((
                        order,
                        scheme,
                        e.name.clone(),
                        t.shard.name.clone(),
                    ));
                }
                match by_name.get(name).map(|&i| (i, &expected[i])) {
                    None => {
                        row.action = Action::Unmapped;
                        let first = name.split('.').next().unwrap_or("");
                        let (code, reason) = if !modules.contains(first) || family.unmapped == Unmapped::NoModule {
                            // (the generic family lists no architecture: it names itself)
                            let class = match (family.class.as_str(), family.architectures.first()) {
                                ("", Some(a)) => a.as_str(),
                                ("", None) => family.family.as_str(),
                                (c, _) => c,
                            };
                            // AutoWeightsLoader names the first path prefix no module has.
                            let prefix = unknown_prefix(name, &modules);
                            (
                                Code::RemapUnmapped,
                                format!("ValueError: There is no module or parameter named '{prefix}' in {class}"),
                            )
                        } else {
                            match family.unmapped {
                                Unmapped::Keyerror => (Code::RemapUnmapped, format!("KeyError: '{name}'")),
                                Unmapped::Drop => (
                                    Code::RemapUnmappedDropped,
                                    format!("silently skipped (`{name}` is not a parameter)"),
                                ),
                                Unmapped::NoModule => unreachable!("handled above"),
                            }
                        };
                        findings.add(code, &e.name, Some(&t.shard.name), || format!("{} → {name}: {reason}", e.name));
                        row.reason = Some(reason.into());
                        row.routed_to = Some(name.into());
                    }
                    Some((pi, exp)) => {
                        row.partition = Some(exp.partition);
                        row.action = if expert.is_some() || exp.fused_experts {
                            Action::Expert
                        } else if stacked {
                            Action::Stack
                        } else {
                            Action::Load
                        };
                        let is_scale = leaf_is_scale(&e.name);
                        if no_fp8 && e.dtype.is_fp8_weight() {
                            row.action = Action::DequantizeThenLoad;
                        } else if no_fp8 && is_scale && quant.as_ref().is_some_and(|q| q.fp8_scale.is_some()) {
                            row.action = Action::Skip;
                            row.reason = Some("consumed by dequantizing its weight (target without fp8)".into());
                        }
                        // A ModelSlim scheme vLLM-Ascend serves only for routed experts, on another layer.
                        if let Some(scheme) = modelslim.as_ref().and_then(|d| d.types.get(&e.name)) {
                            use crate::quant::modelslim::{Contract, LayerType};
                            let layer =
                                if exp.partition == Partition::Expert { LayerType::Moe } else { LayerType::Linear };
                            let unserved = crate::quant::modelslim::contract(scheme).is_some_and(|c| !c.serves(layer));
                            if unserved && e.name.ends_with(".weight") {
                                findings.add(Code::ModelslimScheme, &e.name, Some(&t.shard.name), || {
                                    format!(
                                        "{} is {scheme}, and {name} is a {} layer: {}",
                                        e.name,
                                        layer.as_str(),
                                        Contract::unsupported_text(scheme, layer)
                                    )
                                });
                            }
                        }
                        let key = shard.map_or(std::borrow::Cow::Borrowed(""), ShardRef::key);
                        // The slot must exist for this shard id.
                        let slot = exp.shards.iter().position(|(k, _)| *k == key);
                        match slot.map(|si| (si, exp.shards[si].1.as_ref())) {
                            None => {
                                row.action = Action::Unmapped;
                                let reason = format!("{name} has no shard `{key}`");
                                findings.add(Code::RemapUnmapped, &e.name, Some(&t.shard.name), || {
                                    format!("{}: {reason}", e.name)
                                });
                                row.reason = Some(reason.into());
                            }
                            Some((si, want)) => {
                                if let Some(want) = want {
                                    if *want != e.shape {
                                        if keep {
                                            row.expected_shape = Some(want.as_slice().into());
                                        }
                                        findings.add(Code::RemapShape, &e.name, Some(&t.shard.name), || {
                                            format!(
                                                "{} is {:?}; {name}{} expects {:?} from the config",
                                                e.name,
                                                e.shape,
                                                if key.is_empty() { String::new() } else { format!(" shard {key}") },
                                                want
                                            )
                                        });
                                    }
                                }
                                for x in Filled::slots_of(exp, expert) {
                                    if let Some(prev) = filled.insert(&expected, (pi, si, x), ti as u32) {
                                        let prev = &ck.tensor_at(prev as usize).entry.name;
                                        findings.add(Code::RemapDuplicate, &e.name, Some(&t.shard.name), || {
                                            format!(
                                                "{} and {prev} both fill {name}{}{}",
                                                e.name,
                                                if key.is_empty() { String::new() } else { format!(" shard {key}") },
                                                if x == u64::MAX { String::new() } else { format!(" expert {x}") }
                                            )
                                        });
                                    }
                                }
                            }
                        }
                        if !keep {
                            // Only the table reads what follows.
                        } else if row.action == Action::Unmapped {
                            row.routed_to = Some(name.into());
                        } else {
                            row.param = Some(param_names[pi].get_or_insert_with(|| name.into()).clone());
                            row.shard_id = match exp.fused_shards.as_slice() {
                                // The loader slices a fused expert tensor itself and passes these ids.
                                [] => shard.map(ShardRef::to_value),
                                [one] => Some(Value::String(one.clone())),
                                many => Some(Value::Array(many.iter().cloned().map(Value::String).collect())),
                            };
                            row.expert_id = expert;
                        }
                        if opts.rows {
                            row.tp = tp_split(exp, &row, &vars, opts);
                        }
                    }
                }
            }
        }
        if opts.rows {
            rows.push(row);
        }
    }
    // Parameters (and each shard / expert slot) no tensor fills.
    let unfilled: BTreeMap<&str, String> = filled.unfilled(&expected).collect();
    for (name, what) in unfilled {
        findings.add(Code::RemapUnfilled, name, None, || format!("{name}{what}: no checkpoint tensor fills it"));
    }
    // Fused shards of different schemes: the first error vLLM-Ascend raises for the layer
    // (vllm_ascend/quantization/modelslim_config.py, 182b75ea84): is_layer_skipped_ascend's when a
    // FLOAT shard sits beside a quantized one, else get_linear_quant_type's.
    for (name, mut shards) in fused_scheme {
        shards.sort_by_key(|s| s.0);
        let first = shards[0].1.clone();
        let Some(odd) = shards.iter().find(|s| s.1 != first) else { continue };
        let (_, scheme, tensor, file) = odd;
        let prefix = name.strip_suffix(".weight").unwrap_or(&name);
        let proj = prefix.rsplit('.').next().unwrap_or(prefix);
        let vllm = if first == "FLOAT" || shards.iter().any(|s| s.1 == "FLOAT") {
            format!("ValueError: Detected some but not all shards of {prefix} are quantized. All shards of fused layers to have the same precision.")
        } else {
            format!("ValueError: Not all shards of {prefix} are quantized with same quant type. Shard {proj} uses {scheme}, but another shard uses {first}. Please check quantization config.")
        };
        let other = &shards[0].2;
        findings.add(Code::ModelslimScheme, tensor, Some(file), || {
            format!("{tensor} is {scheme} but {other}, fused with it into {name}, is {first}: {vllm}")
        });
    }
    let mut findings = findings.finish();
    if let Some(why) = &out_of_range {
        findings.push(Finding::new(
            Code::ConfigField,
            format!("config.json: {why}; the remap and its reverse check did not run"),
        ));
    }
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for r in &rows {
        let k = serde_json::to_value(r.action).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default();
        *counts.entry(k).or_default() += 1;
    }
    findings.insert(
        0,
        Finding::new(
            if matched_by == "inferred" { Code::RemapFamilyInferred } else { Code::RemapFamily },
            match confidence {
                Some(c) => format!(
                    "family `{}` inferred from the tensors (match {:.0}%: `ckptpilot match` shows how); rules mirror {}",
                    family.family,
                    c * 100.0,
                    family.vllm_source
                ),
                None => format!("family `{}`: rules mirror {}", family.family, family.vllm_source),
            },
        ),
    );
    RemapReport {
        schema: SCHEMA,
        vllm_reference: crate::target::VLLM_REFERENCE,
        model: model.to_string(),
        architecture: cfg.architecture.clone(),
        family: Some(FamilyInfo {
            family: family.family.clone(),
            vllm_source: family.vllm_source.clone(),
            verified: family.verified.clone(),
            matched_by,
            confidence,
            recorded,
        }),
        tp: opts.tp,
        ep: opts.ep,
        target: opts.target,
        rows,
        params: expected
            .iter()
            .map(|e| ParamOut {
                name: e.name.clone(),
                partition: e.partition,
                shards: e.shards.iter().map(|(k, _)| k.clone()).filter(|k| !k.is_empty()).collect(),
                shapes: e.shards.iter().map(|(_, s)| s.clone()).collect(),
                experts: e.experts,
                fused_experts: e.fused_experts,
                optional: e.optional,
                dtype: e.dtype,
            })
            .collect(),
        findings,
        counts,
    }
}

/// Which tensor filled each (parameter, shard, expert) slot: a flat array over the slots the
/// parameter set has (expert ids within `experts`, or the one whole-parameter slot), the rare rest
/// (an expert id past the config's count) in a map. Tensors by load-order position.
struct Filled {
    /// Each expected parameter's first slot.
    base: Vec<usize>,
    slots: Vec<u32>,
    other: FxHashMap<(usize, usize, u64), u32>,
}

impl Filled {
    const EMPTY: u32 = u32::MAX;

    /// The slots of `exp` one tensor fills: its expert's, every expert's for a fused expert tensor,
    /// else the whole parameter's.
    fn slots_of(exp: &Expected, expert: Option<u64>) -> impl Iterator<Item = u64> {
        let experts = match (expert, exp.fused_experts) {
            (Some(x), _) => x..x + 1,
            (None, true) => 0..exp.experts.unwrap_or(1),
            (None, false) => u64::MAX..u64::MAX,
        };
        experts.chain((expert.is_none() && !exp.fused_experts).then_some(u64::MAX))
    }

    /// Each required parameter with slots no tensor fills, and which (` (shard w3 expert 5)`, or
    /// nothing when the parameter is one slot), in parameter order.
    fn unfilled<'e>(&'e self, expected: &'e [Expected]) -> impl Iterator<Item = (&'e str, String)> + 'e {
        expected.iter().enumerate().filter(|(_, e)| !e.optional).filter_map(move |(pi, exp)| {
            let mut slots = Vec::new();
            for (si, (key, _)) in exp.shards.iter().enumerate() {
                let experts = exp.experts.map_or(0..0, |n| 0..n).chain(exp.experts.is_none().then_some(u64::MAX));
                for x in experts.filter(|&x| !self.contains(expected, (pi, si, x))) {
                    let mut what = String::new();
                    if !key.is_empty() {
                        what.push_str(&format!("shard {key}"));
                    }
                    if x != u64::MAX {
                        what.push_str(&format!("{}expert {x}", if what.is_empty() { "" } else { " " }));
                    }
                    slots.push(what);
                }
            }
            let what = if slots.is_empty() {
                return None;
            } else if slots.iter().all(String::is_empty) {
                String::new()
            } else if slots.len() > 6 {
                format!(" ({} slots: {}, …)", slots.len(), slots[..4].join(", "))
            } else {
                format!(" ({})", slots.join(", "))
            };
            Some((exp.name.as_str(), what))
        })
    }

    fn width(e: &Expected) -> usize {
        e.experts.map_or(1, |n| n as usize)
    }

    fn new(expected: &[Expected]) -> Filled {
        let mut base = Vec::with_capacity(expected.len());
        let mut n = 0usize;
        for e in expected {
            base.push(n);
            n += e.shards.len() * Self::width(e);
        }
        Filled { base, slots: vec![Self::EMPTY; n], other: FxHashMap::default() }
    }

    fn slot(&self, expected: &[Expected], (pi, si, x): (usize, usize, u64)) -> Option<usize> {
        let e = &expected[pi];
        let xi = match e.experts {
            Some(n) if x < n => x as usize,
            None if x == u64::MAX => 0,
            _ => return None,
        };
        Some(self.base[pi] + si * Self::width(e) + xi)
    }

    /// Record `tensor` in the slot; the tensor that was there before, if any.
    fn insert(&mut self, expected: &[Expected], key: (usize, usize, u64), tensor: u32) -> Option<u32> {
        match self.slot(expected, key) {
            Some(i) => Some(std::mem::replace(&mut self.slots[i], tensor)).filter(|&p| p != Self::EMPTY),
            None => self.other.insert(key, tensor),
        }
    }

    fn contains(&self, expected: &[Expected], key: (usize, usize, u64)) -> bool {
        match self.slot(expected, key) {
            Some(i) => self.slots[i] != Self::EMPTY,
            None => self.other.contains_key(&key),
        }
    }
}

/// One finding per (code, tensor pattern): a problem repeated in every layer or expert is reported
/// once, with the count and the pattern. The message is built for the first of each group only (a
/// checkpoint whose every tensor disagrees with its config has ~90k of them).
#[derive(Default)]
struct Folder {
    groups: Vec<(Finding, String, usize)>,
    /// pattern → (code, group) for each code seen with it (a handful at most).
    index: FxHashMap<String, Vec<(Code, usize)>>,
    /// The pattern of the tensor at hand, built in place (no allocation per tensor).
    scratch: String,
}

impl Folder {
    fn add(&mut self, code: Code, tensor: &str, file: Option<&str>, message: impl FnOnce() -> String) {
        crate::checkpoint::names::pattern_into(tensor, &mut self.scratch);
        let codes = match self.index.get_mut(self.scratch.as_str()) {
            Some(codes) => codes,
            None => self.index.entry(self.scratch.clone()).or_default(),
        };
        if let Some(&(_, i)) = codes.iter().find(|(c, _)| *c == code) {
            self.groups[i].2 += 1;
            return;
        }
        codes.push((code, self.groups.len()));
        let mut f = Finding::new(code, message()).tensor(tensor);
        if let Some(file) = file {
            f = f.file(file);
        }
        self.groups.push((f, self.scratch.clone(), 1));
    }

    fn finish(self) -> Vec<Finding> {
        self.groups
            .into_iter()
            .map(|(mut f, pat, n)| {
                if n > 1 {
                    f.message = format!("{} — and {} more like it ({pat})", f.message, n - 1);
                }
                f
            })
            .collect()
    }
}

/// The share of tensors `family` maps to an expected parameter (for inference).
fn coverage(ck: &Checkpoint, family: &Family) -> f64 {
    let cfg = ck.config.clone().unwrap_or_default();
    let vars = Vars::new(&cfg, ck.config_json.as_ref());
    let expected = expected_params(family, &vars, None);
    let names: std::collections::HashSet<&str> = expected.iter().map(|e| e.name.as_str()).collect();
    let (mut hit, mut total) = (0usize, 0usize);
    let router = Router::new(family, &vars);
    let mut buf = (String::new(), String::new());
    for t in ck.tensors() {
        if leaf_is_scale(&t.entry.name) {
            continue;
        }
        total += 1;
        match router.route_into(&t.entry.name, &mut buf) {
            Routed::Param { .. } if names.contains(buf.0.as_str()) => hit += 1,
            Routed::Skip(_) | Routed::KvScale | Routed::Buffer(_) => hit += 1,
            _ => {}
        }
    }
    if total == 0 {
        0.0
    } else {
        hit as f64 / total as f64
    }
}

/// Remap with the family named by config.json's architecture, or the closest one by tensor names.
pub fn remap(ck: &Checkpoint, model: &str, rules: &RuleSet, opts: &RemapOptions) -> RemapReport {
    let arch = ck.config.as_ref().and_then(|c| c.architecture.clone());
    if let Some(f) = arch.as_deref().and_then(|a| rules.for_architecture(a)) {
        return remap_with(ck, model, f, "architecture", None, opts);
    }
    let (best, score) = infer(ck, rules);
    remap_with(ck, model, best, "inferred", Some(score), opts)
}

/// The family that maps the largest share of the tensors; among equals, one whose `model_types`
/// lists the config's model_type, then the first by name (families are listed by file name).
pub fn infer<'a>(ck: &Checkpoint, rules: &'a RuleSet) -> (&'a Family, f64) {
    let cfg = ck.config.as_ref();
    let types = [cfg.and_then(|c| c.text_model_type.as_deref()), cfg.and_then(|c| c.model_type.as_deref())];
    let knows_type = |f: &Family| types.iter().flatten().any(|t| f.model_types.iter().any(|m| m == t));
    let mut best = (&rules.families[0], -1.0, false);
    for f in &rules.families {
        let c = coverage(ck, f);
        let typed = knows_type(f);
        if c > best.1 || (c == best.1 && typed && !best.2) {
            best = (f, c, typed);
        }
    }
    (best.0, best.1)
}

/// A rule file for the user to complete: the matched (or inferred) family's rules under the
/// checkpoint's architecture name, with the tensors it does not map listed under `_todo`.
pub fn emit_rules(report: &RemapReport, rules: &RuleSet, cfg: Option<&ModelConfig>) -> String {
    let base = report
        .family
        .as_ref()
        .and_then(|f| rules.families.iter().find(|g| g.family == f.family))
        .cloned()
        .unwrap_or_else(|| rules.families[0].clone());
    let mut v = serde_json::to_value(&base).unwrap_or(Value::Null);
    let arch = cfg.and_then(|c| c.architecture.clone()).unwrap_or_else(|| "UnknownForCausalLM".into());
    if let Value::Object(m) = &mut v {
        m.insert("family".into(), Value::from(format!("{}-custom", base.family)));
        m.insert("architectures".into(), Value::from(vec![arch]));
        m.insert(
            "verified".into(),
            Value::from("TODO: check against the vLLM oracle or the model file's load_weights"),
        );
        m.insert("include".into(), Value::Array(Vec::new()));
        let todo: Vec<Value> = report
            .rows
            .iter()
            .filter(|r| r.action == Action::Unmapped)
            .map(|r| {
                Value::from(format!(
                    "{} ({}): {}",
                    r.checkpoint_name,
                    r.routed_to.as_deref().unwrap_or("-"),
                    r.reason.as_deref().unwrap_or("")
                ))
            })
            .collect();
        m.insert("_todo".into(), Value::Array(todo));
        m.remove("class");
    }
    serde_json::to_string_pretty(&v).unwrap_or_default() + "\n"
}
