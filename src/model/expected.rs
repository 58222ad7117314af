//! The parameters a vLLM model has, expanded from a family's rules and the config: the one
//! expansion `remap` (which tensor fills which parameter), `plan` (per-rank bytes) and `audit` (what
//! is missing) all read. It sits below them and imports none of them.

use crate::arch::expr::{self, Expr};
use crate::arch::rules::{self, Family, ParamRule};
use crate::arch::Partition;
use crate::checkpoint::config::ModelConfig;
use crate::quant::scheme::{QuantScheme, ScaleLayout};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;

/// The largest count a rule's `repeat` / `experts` expression may expand to.
const MAX_REPEAT: i64 = 1 << 16;

/// Config values rule expressions read: normalised names first, then raw config keys (text_config
/// first), booleans as 0/1.
pub struct Vars<'a> {
    cfg: &'a ModelConfig,
    json: Option<&'a Value>,
    /// Expression results: the config does not change during a remap.
    memo: std::cell::RefCell<HashMap<String, Option<i64>>>,
    /// The MTP draft's view: the decoder-layer sets range over the spec layers
    /// (`num_hidden_layers..num_hidden_layers + mtp_layers`), each of the kind the main model's
    /// rules would give a layer of that index (vLLM builds a spec layer's block with its index).
    draft: bool,
}

impl<'a> Vars<'a> {
    pub fn new(cfg: &'a ModelConfig, json: Option<&'a Value>) -> Self {
        Vars { cfg, json, memo: Default::default(), draft: false }
    }

    /// The variables of the MTP draft model built from the same config.
    pub fn for_draft(cfg: &'a ModelConfig, json: Option<&'a Value>) -> Self {
        Vars { draft: true, ..Vars::new(cfg, json) }
    }

    pub fn get(&self, name: &str) -> Option<i64> {
        let c = self.cfg;
        let moe = c.moe.as_ref();
        let v = match name {
            "head_dim" => c.head_dim,
            "num_attention_heads" => c.num_heads,
            "num_key_value_heads" => c.num_kv_heads,
            "hidden_size" => c.hidden_size,
            // As config.rs normalises it (`ffn_dim` for OPT, `n_inner` for GPT-2 style configs).
            "intermediate_size" => c.intermediate_size,
            "vocab_size" => c.vocab_size,
            "num_hidden_layers" => c.num_layers,
            "tie_word_embeddings" => Some(c.tie_word_embeddings.unwrap_or_else(|| {
                crate::arch::audit_rules().tie_default(&[c.text_model_type.as_deref(), c.model_type.as_deref()]).0
            }) as u64),
            "num_experts" => moe.map(|m| m.num_experts),
            "moe_intermediate_size" => moe.and_then(|m| m.moe_intermediate_size.or(c.intermediate_size)),
            "n_shared_experts" => moe.and_then(|m| m.shared_experts),
            _ => None,
        };
        if let Some(v) = v {
            return i64::try_from(v).ok();
        }
        // `key.len`: the length of a list (e.g. `vision_config.deepstack_visual_indexes.len`).
        if let Some(list) = name.strip_suffix(".len").and_then(|k| self.lookup(k)).and_then(Value::as_array) {
            return i64::try_from(list.len()).ok();
        }
        match self.lookup(name)? {
            Value::Bool(b) => Some(*b as i64),
            Value::Number(n) => n.as_i64().or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64)),
            _ => None,
        }
    }

    fn eval(&self, src: &str) -> Option<i64> {
        if let Some(v) = self.memo.borrow().get(src) {
            return *v;
        }
        let v = Expr::parse(src).ok().and_then(|e| e.eval(self));
        self.memo.borrow_mut().insert(src.to_string(), v);
        v
    }

    pub fn lookup(&self, name: &str) -> Option<&'a Value> {
        let json = self.json?;
        let find = |root: &'a Value| -> Option<&'a Value> {
            let mut cur = root;
            for seg in name.split('.') {
                // A number indexes a list (`vision_config.image_size.0` of `[448, 448]`).
                cur = match (cur, seg.parse::<usize>()) {
                    (Value::Array(a), Ok(i)) => a.get(i)?,
                    _ => cur.get(seg)?,
                };
            }
            Some(cur)
        };
        json.get("text_config").and_then(find).filter(|v| !v.is_null()).or_else(|| find(json).filter(|v| !v.is_null()))
    }

    pub(crate) fn truthy(&self, cond: &Option<String>) -> bool {
        cond.as_ref().is_none_or(|c| self.eval(c).is_some_and(|v| v != 0))
    }

    /// The named layer sets a rule's `repeat` may use ([`LAYER_SETS`]); anything else is a count
    /// expression.
    fn layer_set(&self, set: &str) -> Vec<u64> {
        let c = self.cfg;
        let n = c.num_layers.unwrap_or(0);
        let full = |i: u64| match (&c.layer_types, c.full_attention_interval) {
            // LFM2's short-convolution blocks ("conv") are not attention either.
            (Some(t), _) => t.get(i as usize).is_none_or(|x| !x.contains("linear") && x != "conv"),
            (None, Some(k)) if k > 0 && c.linear_attention.is_some() => (i + 1) % k == 0,
            _ => true,
        };
        let conv = |i: u64| c.layer_types.as_ref().is_some_and(|t| t.get(i as usize).is_some_and(|x| x == "conv"));
        // A config listing each layer's MLP kind ("dense" / "sparse": transformers' mlp_layer_types) says
        // which layers are MoE itself: vllm/model_executor/models/laguna.py, get_mlp_layer_types (a layer
        // is MoE where its entry is "sparse").
        let mlp_types = self.lookup("mlp_layer_types").and_then(Value::as_array);
        let moe_layer = |i: u64| match mlp_types {
            Some(t) => t.get(i as usize).and_then(Value::as_str) == Some("sparse"),
            None => c.moe.as_ref().is_some_and(|m| m.is_moe_layer(i)),
        };
        let mtp = n..n.saturating_add(c.mtp_layers.min(MAX_REPEAT as u64));
        let layers = if self.draft { mtp.clone() } else { 0..n };
        match set {
            "layers" => layers.collect(),
            "dense_layers" => layers.filter(|&i| !moe_layer(i)).collect(),
            "moe_layers" => layers.filter(|&i| moe_layer(i)).collect(),
            "full_attention_layers" => layers.filter(|&i| full(i)).collect(),
            "linear_attention_layers" => layers.filter(|&i| !full(i) && !conv(i)).collect(),
            "mtp_layers" => mtp.collect(),
            // LFM2's short-convolution blocks: vllm/model_executor/models/lfm2.py, Lfm2Model.__init__
            // (`is_attn = self.config.layer_types[layer_idx] == "full_attention"`, else a
            // Lfm2ShortConvDecoderLayer); lfm2_moe.py alike.
            "conv_layers" => layers.filter(|&i| conv(i)).collect(),
            // Counts from expressions (vision depth, user rules) are bounded like config sizes.
            count => (0..(self.eval(count).unwrap_or(0).clamp(0, MAX_REPEAT) as u64)).collect(),
        }
    }
}

/// The layer sets `repeat` names (the arms of `Vars::layer_set`, tested below); the family format
/// owns the list.
pub use rules::LAYER_SETS;

impl expr::Env for Vars<'_> {
    fn int(&self, name: &str) -> Option<i64> {
        self.get(name)
    }
    fn string(&self, name: &str) -> Option<String> {
        self.lookup(name).and_then(Value::as_str).map(str::to_string)
    }
}

/// One parameter slot family: a parameter name with its shards' expected shapes.
#[derive(Debug, Clone)]
pub struct Expected {
    pub name: String,
    pub partition: Partition,
    /// shard id ("" for an unstacked parameter) → expected checkpoint shape (None: not checked).
    pub shards: Vec<(String, Option<Vec<u64>>)>,
    pub experts: Option<u64>,
    pub fused_experts: bool,
    /// The shard ids the loader gives the slices of a fused expert tensor (the rule's `fused_shards`).
    pub fused_shards: Vec<String>,
    pub optional: bool,
    pub dtype: Option<crate::arch::rules::AllocDtype>,
    /// Where it sits (decoder layer, embedding, head, tower, MTP).
    pub role: Role,
    pub tp_dim: Option<rules::TpDim>,
    /// The head count TP must divide (from the rule's `heads`).
    pub heads: Option<u64>,
    /// For a quantization companion: the weight it scales.
    pub scale_of: Option<ScaleOf>,
    /// The attention's q or k norm.
    pub qk_norm: Option<rules::QkSide>,
}

/// Where a parameter sits, for pipeline stages and for what the main model builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// In decoder layer `n`.
    Layer(u64),
    Embed,
    Head,
    /// Vision / audio towers and projectors (first stage).
    Tower,
    /// MTP / speculative layers: not part of the main model.
    Mtp,
}

/// A quantization companion's weight: its layout and the weight's shards (global checkpoint shapes).
#[derive(Debug, Clone)]
pub struct ScaleOf {
    pub layout: ScaleLayout,
    /// The static activation scale (`input_scale`), not the weight scale.
    pub input: bool,
    pub weight_shards: Vec<(String, Option<Vec<u64>>)>,
}

/// The rule's names with their placeholders filled, each with its role.
fn expand(rule: &ParamRule, vars: &Vars<'_>) -> Vec<(String, Role)> {
    use rules::ParamRole;
    let mut names = vec![(rule.name.clone(), None::<u64>)];
    let mut in_layers = None;
    for (var, spec) in &rule.repeat {
        let idx = vars.layer_set(spec);
        let is_layer = rules::LAYER_SETS.contains(&spec.as_str());
        if is_layer {
            in_layers = Some(spec.as_str());
        }
        names = names
            .iter()
            .flat_map(|(n, l)| {
                idx.iter().map(move |i| {
                    (n.replace(&format!("{{{var}}}"), &i.to_string()), if is_layer { Some(*i) } else { *l })
                })
            })
            .collect();
    }
    names
        .into_iter()
        .map(|(n, layer)| {
            let role = match (rule.role, in_layers, layer) {
                (Some(ParamRole::Embed), ..) => Role::Embed,
                (Some(ParamRole::Head), ..) => Role::Head,
                (Some(ParamRole::Tower), ..) => Role::Tower,
                (Some(ParamRole::Mtp), ..) | (None, Some("mtp_layers"), _) => Role::Mtp,
                (None, Some(_), Some(l)) => Role::Layer(l),
                _ => Role::Tower,
            };
            (n, role)
        })
        .collect()
}

/// The parameters the vLLM model will have, from the family's rules and the config (with quantization
/// companions when the checkpoint is fp8).
pub fn expected_params(family: &Family, vars: &Vars<'_>, quant: Option<&QuantScheme>) -> Vec<Expected> {
    let mut out = Vec::new();
    let dims = |d: &Vec<String>| -> Option<Vec<u64>> {
        d.iter().map(|e| vars.eval(e).and_then(|v| u64::try_from(v).ok())).collect()
    };
    for rule in &family.params {
        if !vars.truthy(&rule.when) {
            continue;
        }
        let shards: Vec<(String, Option<Vec<u64>>)> = if rule.shards.is_empty() {
            vec![(String::new(), rule.shape.as_ref().and_then(dims))]
        } else {
            rule.shards.iter().map(|(k, d)| (k.clone(), dims(d))).collect()
        };
        let experts = rule.experts.as_ref().and_then(|e| vars.eval(e)).map(|e| e.clamp(0, MAX_REPEAT) as u64);
        let heads = rule.heads.as_ref().and_then(|e| vars.eval(e)).and_then(|h| u64::try_from(h).ok());
        let base = |name: String, partition, shards, role, dtype, scale_of| Expected {
            name,
            partition,
            shards,
            experts,
            fused_experts: rule.fused_experts,
            fused_shards: rule.fused_shards.clone(),
            optional: rule.optional,
            dtype,
            role,
            tp_dim: rule.tp_dim,
            heads,
            scale_of,
            qk_norm: rule.qk_norm,
        };
        for (name, role) in expand(rule, vars) {
            if rule.quantized {
                if let (Some(q), Some(layout)) = (quant, quant.and_then(|q| q.fp8_scale)) {
                    let module = name.rsplit_once('.').map_or(name.as_str(), |(m, _)| m);
                    if !not_converted(family, q, module) {
                        let suffix = q.scale_suffix.unwrap_or("weight_scale_inv");
                        let scale_name = format!("{}{}", name.strip_suffix("weight").unwrap_or(&name), suffix);
                        let scale_shards = shards
                            .iter()
                            .map(|(k, s)| {
                                let grid = s.as_ref().and_then(|s| match (layout, s.as_slice()) {
                                    (ScaleLayout::Block { n, k: bk }, [rows, cols]) => {
                                        Some(vec![rows.div_ceil(n.max(1)), cols.div_ceil(bk.max(1))])
                                    }
                                    _ => None,
                                });
                                (k.clone(), grid)
                            })
                            .collect();
                        if q.activation_scheme.as_deref() == Some("static") {
                            out.push(base(
                                format!("{}input_scale", name.strip_suffix("weight").unwrap_or(&name)),
                                Partition::Replicated,
                                shards.iter().map(|(k, _)| (k.clone(), None)).collect(),
                                role,
                                None,
                                Some(ScaleOf { layout, input: true, weight_shards: shards.clone() }),
                            ));
                        }
                        out.push(base(
                            scale_name,
                            rule.partition,
                            scale_shards,
                            role,
                            None,
                            Some(ScaleOf { layout, input: false, weight_shards: shards.clone() }),
                        ));
                    }
                }
            }
            let mut weight_shards = shards.clone();
            let mut weight_dtype = rule.dtype;
            let mut name = name;
            if rule.quantized {
                if let Some((q, c)) = quant.and_then(|q| Some((q, crate::quant::ct_packed::contract(q)?))) {
                    let module = name.rsplit_once('.').map_or(name.as_str(), |(m, _)| m);
                    if !not_converted(family, q, module) {
                        let stem = name.strip_suffix("weight").unwrap_or(&name).to_string();
                        let over = |dims: &Vec<String>| -> Shards {
                            shards
                                .iter()
                                .map(|(id, s)| {
                                    let sh = s.as_ref().and_then(|s| {
                                        crate::quant::ct_packed::shape(dims, s, q)
                                            .into_iter()
                                            .collect::<Option<Vec<u64>>>()
                                    });
                                    (id.clone(), sh)
                                })
                                .collect()
                        };
                        let alloc = |d: &Option<String>| d.as_deref().and_then(rules::AllocDtype::from_safetensors);
                        for comp in c.companions.iter().filter(|t| crate::quant::ct_packed::applies(t, q)) {
                            let part = if comp.replicated { Partition::Replicated } else { rule.partition };
                            let mut e = base(
                                format!("{stem}{}", comp.suffix),
                                part,
                                over(&comp.shape),
                                role,
                                alloc(&comp.dtype),
                                None,
                            );
                            e.optional |= comp.optional;
                            out.push(e);
                        }
                        weight_shards = over(&c.weight.shape);
                        weight_dtype = alloc(&c.weight.dtype);
                        name = format!("{stem}{}", c.weight.suffix);
                    }
                }
                if let Some(d) = quant.and_then(|q| q.modelslim.as_deref()) {
                    let (companions, stored) =
                        modelslim_companions(family, d, &name, rule.partition, &mut weight_shards, &base, role);
                    out.extend(companions);
                    weight_dtype = stored.or(weight_dtype);
                }
            }
            let mut tp_dim = rule.tp_dim;
            if rule.fused_experts && quant.is_some_and(|q| q.method == crate::quant::scheme::QuantMethod::Mxfp4) {
                let module = name.rsplit_once('.').map_or(name.as_str(), |(m, _)| m);
                if let (Some(c), false) =
                    (crate::quant::mxfp4::expert(&name), quant.is_some_and(|q| not_converted(family, q, module)))
                {
                    let over = |dims: &Vec<String>| -> Shards {
                        weight_shards
                            .iter()
                            .map(|(id, s)| (id.clone(), s.as_ref().and_then(|s| crate::quant::mxfp4::shape(dims, s))))
                            .collect()
                    };
                    let stem = name.strip_suffix(c.param.as_str()).unwrap_or(&name).to_string();
                    let mut scale = base(
                        format!("{stem}{}", c.scale.param),
                        rule.partition,
                        over(&c.scale.shape),
                        role,
                        Some(rules::AllocDtype::Int8),
                        None,
                    );
                    scale.tp_dim = Some(rules::TpDim::Dim(c.scale.tp_dim));
                    out.push(scale);
                    weight_shards = over(&c.shape);
                    weight_dtype = Some(rules::AllocDtype::Int8);
                    tp_dim = Some(rules::TpDim::Dim(c.tp_dim));
                }
            }
            let mut e = base(name, rule.partition, weight_shards, role, weight_dtype, None);
            e.tp_dim = tp_dim;
            out.push(e);
        }
    }
    out
}

/// The checkpoint modules a vLLM parameter is loaded from: its stacked shards, or expert 0's
/// projections for a fused expert parameter (vLLM-Ascend reads MoE layers' schemes from `experts.0.*`).
fn checkpoint_modules(family: &Family, param: &str) -> Vec<String> {
    let module = param.strip_suffix(".weight").or_else(|| param.strip_suffix("weight")).unwrap_or(param);
    if let Some(ex) = &family.experts {
        if let Some(pos) = module.find(ex.param.as_str()) {
            let head = &module[..pos];
            let tail = &module[pos + ex.param.len()..];
            let projections: &[&String] = match tail {
                "w13_" => &[&ex.gate, &ex.up],
                "w2_" => &[&ex.down],
                _ => &[],
            };
            return projections.iter().map(|p| format!("{head}experts.0.{p}")).collect();
        }
    }
    let shards = stacked_shards(family, module);
    if shards.is_empty() {
        vec![module.to_string()]
    } else {
        shards
    }
}

/// Shards of one parameter: (shard id, checkpoint shape when the config gives it).
type Shards = Vec<(String, Option<Vec<u64>>)>;

/// `expected_params`' constructor of one parameter of the rule being expanded.
type MakeExpected<'a> =
    dyn Fn(String, Partition, Shards, Role, Option<rules::AllocDtype>, Option<ScaleOf>) -> Expected + 'a;

/// The tensors vLLM-Ascend's method loads beside a ModelSlim-quantized weight (`modelslim.json`),
/// as parameters with the weight's shard ids (the first checkpoint module's scheme decides).
fn modelslim_companions(
    family: &Family,
    d: &crate::quant::modelslim::Description,
    name: &str,
    partition: Partition,
    shards: &mut [(String, Option<Vec<u64>>)],
    base: &MakeExpected<'_>,
    role: Role,
) -> (Vec<Expected>, Option<rules::AllocDtype>) {
    let modules = checkpoint_modules(family, name);
    let schemes: Vec<Option<&str>> = modules.iter().map(|m| d.scheme_of(m)).collect();
    // Mixed schemes across fused shards are reported where the tensors are routed; the first
    // shard's scheme stands for the layer here.
    let Some(Some(scheme)) = schemes.first().copied() else { return (Vec::new(), None) };
    let Some(c) = crate::quant::modelslim::contract(scheme) else { return (Vec::new(), None) };
    // The weight as stored (int8; int4 packed into int8): vLLM-Ascend's methods allocate it so.
    let stored = c.weight_dtypes.first().and_then(|d| rules::AllocDtype::from_safetensors(d));
    // The checkpoint holds packed weights: [N / packed_n, K]; companions are over that shape.
    if c.packed_n > 1 {
        for (_, s) in shards.iter_mut() {
            if let Some(n) = s.as_mut().and_then(|s| s.first_mut()) {
                *n /= c.packed_n;
            }
        }
    }
    // ... or [N, K / packed_k] (fp4 two per byte along K); companions read the logical K back.
    if c.packed_k > 1 {
        for (_, s) in shards.iter_mut() {
            if let Some(k) = s.as_mut().and_then(|s| s.get_mut(1)) {
                *k /= c.packed_k;
            }
        }
    }
    let (pk, g) = (c.packed_k, d.group());
    let stem = name.strip_suffix("weight").unwrap_or(name);
    let companions = c
        .companions
        .iter()
        .map(|comp| {
            let per_row = comp.shape.first().is_some_and(|d| d.starts_with('N'));
            let part = if per_row && partition != Partition::Row { partition } else { Partition::Replicated };
            let comp_shards = shards
                .iter()
                .map(|(id, s)| {
                    (id.clone(), s.as_ref().and_then(|s| comp.shape_for(s, id == "w2", pk, g).into_iter().collect()))
                })
                .collect();
            let dtype = comp.dtypes.first().and_then(|d| rules::AllocDtype::from_safetensors(d));
            base(format!("{stem}{}", comp.suffix), part, comp_shards, role, dtype, None)
        })
        .collect::<Vec<_>>();
    // Allocated by the method but not saved by msModelSlim: memory only, never required.
    let allocated = c.allocated.iter().map(|comp| {
        let per_row = comp.shape.first().is_some_and(|d| d.starts_with('N'));
        let part = if per_row && partition != Partition::Row { partition } else { Partition::Replicated };
        let comp_shards = shards
            .iter()
            .map(|(id, s)| {
                (id.clone(), s.as_ref().and_then(|s| comp.shape_for(s, id == "w2", pk, g).into_iter().collect()))
            })
            .collect();
        let dtype = comp.dtypes.first().and_then(|d| rules::AllocDtype::from_safetensors(d));
        let mut e = base(format!("{stem}{}", comp.suffix), part, comp_shards, role, dtype, None);
        e.optional = true;
        e
    });
    let companions = companions.into_iter().chain(allocated).collect();
    (companions, stored)
}

/// Whether vLLM leaves `module` unquantized: listed in the quantization's not-converted modules, or,
/// for a stacked parameter (qkv_proj, gate_up_proj), every checkpoint module stacked into it is
/// (quantization/utils/quant_utils.py :: is_layer_skipped checks each shard of a fused layer).
fn not_converted(family: &Family, q: &QuantScheme, module: &str) -> bool {
    if q.is_not_converted(module) == Some(true) {
        return true;
    }
    let shards = stacked_shards(family, module);
    !shards.is_empty() && shards.iter().all(|m| q.is_not_converted(m) == Some(true))
}

/// The checkpoint modules stacked into the vLLM module `module` (q/k/v_proj for qkv_proj), by the
/// family's `stacked` table; empty for a module nothing is stacked into.
fn stacked_shards(family: &Family, module: &str) -> Vec<String> {
    let dotted = format!("{module}.");
    family
        .stacked
        .iter()
        .filter(|st| dotted.contains(st.param.as_str()))
        .map(|st| dotted.replacen(st.param.as_str(), &st.shard, 1).trim_end_matches('.').to_string())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Config values that are lists (`[height, width]`, InternVL's image_size / patch_size) are read
    /// by index, as interns1_vit.py reads `image_size[0]`.
    /// Every LAYER_SETS name is an arm of layer_set: a config key of the same name (7) is never read
    /// as a count instead.
    #[test]
    fn layer_sets_are_the_named_arms() {
        let mut json = serde_json::json!({"num_hidden_layers": 3});
        for s in LAYER_SETS {
            json[*s] = serde_json::json!(7);
        }
        let cfg = ModelConfig::from_value(&json);
        let v = Vars::new(&cfg, Some(&json));
        assert_eq!(v.layer_set("layers"), vec![0, 1, 2]);
        for s in LAYER_SETS {
            assert_ne!(v.layer_set(s).len(), 7, "{s} was read as a count expression");
        }
        assert_eq!(v.layer_set("unknown_count").len(), 0);
    }

    /// mlp_layer_types (Laguna, HY-V3) names the MoE layers.
    #[test]
    fn mlp_layer_types_name_the_moe_layers() {
        let json = serde_json::json!({"num_hidden_layers": 3, "num_experts": 4,
                                      "mlp_layer_types": ["dense", "sparse", "sparse"]});
        let cfg = ModelConfig::from_value(&json);
        let v = Vars::new(&cfg, Some(&json));
        assert_eq!(v.layer_set("dense_layers"), vec![0]);
        assert_eq!(v.layer_set("moe_layers"), vec![1, 2]);
    }

    /// LFM2's layer_types: "conv" blocks are their own set, not attention layers.
    #[test]
    fn conv_layers_are_not_attention_layers() {
        let json = serde_json::json!({"num_hidden_layers": 4,
                                      "layer_types": ["conv", "conv", "full_attention", "conv"]});
        let cfg = ModelConfig::from_value(&json);
        let v = Vars::new(&cfg, Some(&json));
        assert_eq!(v.layer_set("conv_layers"), vec![0, 1, 3]);
        assert_eq!(v.layer_set("full_attention_layers"), vec![2]);
        assert!(v.layer_set("linear_attention_layers").is_empty());
    }

    #[test]
    fn a_list_value_is_read_by_index() {
        let json = serde_json::json!({"vision_config": {"image_size": [448, 336], "patch_size": [14, 14]}});
        let cfg = ModelConfig::from_value(&json);
        let v = Vars::new(&cfg, Some(&json));
        assert_eq!(v.get("vision_config.image_size.1"), Some(336));
        assert_eq!(
            v.eval("(vision_config.image_size.0/vision_config.patch_size.0)*(vision_config.image_size.1/vision_config.patch_size.1)+1"),
            Some(32 * 24 + 1)
        );
        assert_eq!(v.get("vision_config.image_size.2"), None);
        assert_eq!(v.get("vision_config.image_size"), None, "a list is no number");
    }
}
