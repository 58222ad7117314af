//! `ckptpilot quantize --to w8a8-dynamic | w4a8-dynamic`: the plan of a ModelSlim checkpoint as
//! msModelSlim's min-max pipeline writes it (which tensors, in which scheme, in which order, in
//! which part file), made from a bf16/f16/f32 checkpoint or from an fp8 one dequantized on the fly.
//! What msModelSlim does is data: `modelslim_writer.json` (each target's recipe, the scale_bias
//! rule, the description's fields), with the files it was read from. The arithmetic is
//! [`crate::quant::int8`] and [`super::int4`]; the streaming, atomic, resumable writing is the rest
//! of [`super`].

use super::{writer, ConvertError, Item, Plan, ShardPlan, Src};
use crate::checkpoint::{Checkpoint, Dtype, TensorRef};
use crate::quant::fp8::Fp8Format;
use crate::quant::int8::Compute;
use crate::quant::scheme::glob_match;
use crate::quant::ScaleLayout;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::OnceLock;
use writer::OutTensor;

/// What `quantize` writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// ModelSlim W8A8_DYNAMIC: int8 weights with a per-channel f32 scale, int8 activations per token.
    W8A8Dynamic,
    /// msModelSlim's MoE recipe: routed experts W4A8_DYNAMIC (per-channel int4 weights, packed,
    /// with their `scale_bias`), the other linear layers of the decoder W8A8_DYNAMIC.
    W4A8Dynamic,
    /// msModelSlim's data-free converter (`modelslim_convert`, FLOAT → W8A8_MXFP8): the decoder's
    /// attention and MLP / expert linears as e4m3 weights with an E8M0 scale per 32 columns.
    W8A8Mxfp8,
}

impl Target {
    pub fn as_str(self) -> &'static str {
        match self {
            Target::W8A8Dynamic => "w8a8-dynamic",
            Target::W4A8Dynamic => "w4a8-dynamic",
            Target::W8A8Mxfp8 => "w8a8-mxfp8",
        }
    }

    /// Which scheme the recipe gives a linear module of a decoder layer (None: it stays FLOAT).
    fn scheme_of(self, module: &str) -> Option<Scheme> {
        let recipe = rules().recipes.get(self.as_str()).expect("every target has a recipe in modelslim_writer.json");
        let hit = |ps: &[String]| ps.iter().any(|p| glob_match(p, module));
        recipe.iter().find(|r| hit(&r.include) && !hit(&r.exclude)).map(|r| r.scheme)
    }
}

/// A quantized layer's scheme, as the description names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
pub enum Scheme {
    #[serde(rename = "W8A8_DYNAMIC")]
    W8A8Dynamic,
    #[serde(rename = "W4A8_DYNAMIC")]
    W4A8Dynamic,
    #[serde(rename = "W8A8_MXFP8")]
    W8A8Mxfp8,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::W8A8Dynamic => "W8A8_DYNAMIC",
            Scheme::W4A8Dynamic => "W4A8_DYNAMIC",
            Scheme::W8A8Mxfp8 => "W8A8_MXFP8",
        }
    }
}

/// How a quantized weight's codes are stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Codes {
    /// One int8 code per element.
    I8,
    /// int4 codes, two output rows to a byte; the code sums of `chunks` equal column chunks of each
    /// row make its `scale_bias`.
    I4 { chunks: usize },
    /// MXFP8: one float8_e4m3fn byte per element, an E8M0 (u8) scale per 32 columns.
    Mx8,
}

pub const DESCRIPTION: &str = "quant_model_description.json";
pub const INDEX: &str = "quant_model_weights.safetensors.index.json";
const STEM: &str = "quant_model_weights";
const FLOAT: &str = "FLOAT";

#[derive(Debug, Deserialize)]
struct WriterRules {
    layer_prefixes: Vec<String>,
    recipes: HashMap<String, Vec<RecipeStep>>,
    scale_bias: ScaleBiasRule,
    model_quant_type_priority: Vec<String>,
    module_order: Vec<String>,
    part_file_size_gib: u64,
    version: String,
}

/// One `linear_quant` step of a recipe.
#[derive(Debug, Deserialize)]
struct RecipeStep {
    scheme: Scheme,
    include: Vec<String>,
    exclude: Vec<String>,
}

/// msModelSlim's `process_scale`: which modules sum whole rows, which sum `tp_num` column chunks.
#[derive(Debug, Deserialize)]
struct ScaleBiasRule {
    tp_num: usize,
    row_sum: Vec<String>,
    tp_chunks: Vec<String>,
}

/// The column chunks of an int4 weight's `scale_bias` (`k` columns), or why msModelSlim fails on it.
fn scale_bias_chunks(module: &str, k: u64) -> Result<usize, String> {
    let r = &rules().scale_bias;
    let has = |subs: &[String]| subs.iter().any(|s| module.contains(s.as_str()));
    if has(&r.row_sum) {
        return Ok(1);
    }
    if !has(&r.tp_chunks) {
        return Err(format!(
            "{module}: an int4 expert whose name contains none of {:?}: msModelSlim would save its dequantized weight as scale_bias, which vLLM-Ascend does not load",
            [&r.row_sum[..], &r.tp_chunks[..]].concat()
        ));
    }
    // process_scale sums chunks of K // tp_num columns: tp_num of them only when tp_num divides K
    // (else msModelSlim fails on a reshape or writes more columns than vLLM-Ascend's [N, 16]).
    let tp = r.tp_num as u64;
    if k == 0 || k % tp != 0 {
        return Err(format!(
            "{module}: {k} input columns are not a multiple of {tp}: msModelSlim's scale_bias would not have the [N, {tp}] vLLM-Ascend loads"
        ));
    }
    Ok(r.tp_num)
}

fn rules() -> &'static WriterRules {
    static R: OnceLock<WriterRules> = OnceLock::new();
    R.get_or_init(|| {
        serde_json::from_str(include_str!("modelslim_writer.json")).expect("embedded modelslim_writer.json is valid")
    })
}

/// msModelSlim's default part size (`part_file_size`, GiB).
pub fn default_part_bytes() -> u64 {
    rules().part_file_size_gib << 30
}

/// The decoder layer a tensor is in (prefix matched, index below the text model's layer count):
/// MTP layers past the last decoder layer and vision towers are not.
fn layer_of(name: &str, layers: u64) -> Option<u64> {
    rules().layer_prefixes.iter().find_map(|p| {
        let rest = name.strip_prefix(p.as_str())?;
        let (n, _) = rest.split_once('.')?;
        n.parse::<u64>().ok().filter(|&n| n < layers)
    })
}

/// The write-order key of a name: (in a decoder layer first, its index), then each dotted part
/// by its rank in `module_order` (numbers by value, unknown parts after, by name).
fn order_key(name: &str, layers: u64) -> (u8, u64, Vec<(usize, u64, String)>) {
    let order = &rules().module_order;
    let parts = name
        .split('.')
        .map(|p| match p.parse::<u64>() {
            Ok(n) => (0, n, String::new()),
            Err(_) => match order.iter().position(|o| o == p) {
                Some(i) => (1 + i, 0, String::new()),
                None => (1 + order.len(), 0, p.to_string()),
            },
        })
        .collect();
    match layer_of(name, layers) {
        Some(l) => (0, l, parts),
        None => (1, 0, parts),
    }
}

fn text_layers(ck: &Checkpoint) -> u64 {
    let cfg = ck.config_json.as_ref();
    let get = |c: Option<&serde_json::Value>| c.and_then(|c| c.get("num_hidden_layers")).and_then(|v| v.as_u64());
    get(cfg.and_then(|c| c.get("text_config"))).or_else(|| get(cfg)).unwrap_or(0)
}

/// One input tensor as quantize sees it: fp8 weights are their bf16 dequantization.
#[derive(Clone, Copy)]
struct Logical<'a> {
    src: Src<'a>,
    dtype: Dtype,
}

/// Build the plan: every tensor of the checkpoint (fp8 scales aside) written once, the decoder
/// layers' linear weights quantized, in msModelSlim's order and parts.
pub(super) fn plan<'a>(
    ck: &'a Checkpoint,
    target: Target,
    part_bytes: u64,
    pairs: &BTreeMap<&str, (&str, ScaleLayout)>,
    to_drop: &HashSet<String>,
) -> Result<Plan<'a>, ConvertError> {
    let layers = text_layers(ck);
    let mut logical: Vec<(String, Logical<'a>)> = Vec::new();
    let mut dropped = 0;
    for t in ck.tensors() {
        let name = &t.entry.name;
        if to_drop.contains(name) {
            dropped += 1;
            continue;
        }
        let l = match pairs.get(name.as_str()) {
            Some(&(scale, layout)) => {
                let scale = ck.get(scale).expect("paired scale exists");
                let fmt = Fp8Format::of(t.entry.dtype).expect("paired weights are fp8");
                Logical { src: Src { weight: t, fp8: Some((scale, layout, fmt)) }, dtype: Dtype::BF16 }
            }
            None => Logical { src: Src { weight: t, fp8: None }, dtype: t.entry.dtype },
        };
        logical.push((name.clone(), l));
    }
    let by_name: HashMap<&str, Logical<'a>> = logical.iter().map(|(n, l)| (n.as_str(), *l)).collect();
    // The linear weights of the decoder layers, in the scheme the target's recipe gives them.
    let scheme_of = |name: &str, l: &Logical<'_>| -> Option<Scheme> {
        let module = name.strip_suffix(".weight")?;
        let linear = l.src.weight.entry.shape.len() == 2 && Compute::of(l.dtype).is_some();
        (linear && layer_of(name, layers).is_some()).then(|| target.scheme_of(module)).flatten()
    };
    // The biases of quantized layers are written with them (as FLOAT f32), not on their own.
    let mut bias_of: HashMap<&str, TensorRef<'a>> = HashMap::new();
    for (name, l) in &logical {
        if scheme_of(name, l).is_some() {
            let module = name.strip_suffix(".weight").expect("quantized names end in .weight");
            if let Some(b) = by_name.get(format!("{module}.bias").as_str()) {
                bias_of.insert(name.as_str(), b.src.weight);
            }
        }
    }
    let taken: HashSet<String> = bias_of.values().map(|b| b.entry.name.clone()).collect();
    let mut order: Vec<&(String, Logical<'a>)> = logical.iter().filter(|(n, _)| !taken.contains(n)).collect();
    order.sort_by_cached_key(|(n, _)| order_key(n, layers));
    if target == Target::W8A8Mxfp8 {
        // msModelSlim's converter writes in the order of its virtual tree, built from Python set
        // iteration (see pyorder), whose layout depends on the insertion order: its catalog is
        // the index's weight_map in file order (json.load), or a single file's names sorted
        // (safe_open().keys()).
        let index_text = ck
            .index
            .as_ref()
            .and_then(|_| std::fs::read_to_string(ck.source.root.join(crate::checkpoint::index::INDEX_NAME)).ok());
        let mut names: Vec<String> =
            match index_text.as_deref().and_then(|t| crate::checkpoint::index::parse(t, &mut Vec::new())) {
                Some((_, entries)) => {
                    let mut seen = HashSet::new();
                    let mut names = Vec::with_capacity(entries.len());
                    entries.for_each(|n, _| {
                        if seen.insert(n.to_string()) {
                            names.push(n.to_string());
                        }
                    });
                    names
                }
                None => {
                    let mut v: Vec<String> = ck.tensors().map(|t| t.entry.name.clone()).collect();
                    v.sort_unstable();
                    v.dedup();
                    v
                }
            };
        // A name the index lacks but a shard has (audit's finding) would not be in msModelSlim's
        // catalog at all; it is placed last here.
        let known: HashSet<String> = names.iter().cloned().collect();
        names.extend(ck.tensors().map(|t| t.entry.name.clone()).filter(|n| !known.contains(n)));
        let names: Vec<&str> = names.iter().map(|s| s.as_str()).collect();
        let recipe = rules().recipes.get(target.as_str()).expect("every target has a recipe");
        let patterns: Vec<String> = recipe.iter().flat_map(|r| r.include.iter().cloned()).collect();
        let pos = super::pyorder::convert_write_order(&names, &patterns);
        order.sort_by_key(|(n, _)| pos.get(n.as_str()).copied().unwrap_or(usize::MAX));
    }

    // (name, description scheme, layout, how it is made), in msModelSlim's write order.
    let mut seq: Vec<(OutTensor, &'static str, Item<'a>)> = Vec::new();
    let mut schemes: HashSet<Scheme> = HashSet::new();
    let mut reasons = Vec::new();
    for (name, l) in order {
        let shape = l.src.weight.entry.shape.to_vec();
        let bytes = |d: Dtype, numel: u64| numel.saturating_mul(d.bits()) / 8;
        let numel = l.src.weight.entry.numel();
        if let Some(scheme) = scheme_of(name, l) {
            schemes.insert(scheme);
            let module = name.strip_suffix(".weight").expect("quantized names end in .weight");
            let (n, k) = (shape[0], shape[1]);
            let t = |suffix: &str, dtype: Dtype, shape: Vec<u64>, numel: u64| OutTensor {
                name: format!("{module}.{suffix}"),
                dtype,
                shape,
                nbytes: bytes(dtype, numel),
            };
            let codes = match scheme {
                Scheme::W8A8Dynamic => Codes::I8,
                Scheme::W8A8Mxfp8 => Codes::Mx8,
                Scheme::W4A8Dynamic => {
                    if n % 2 != 0 {
                        // msModelSlim: AssertionError("n dimension should be even") in _pack_int4.
                        reasons.push(format!("{name}: {n} output rows do not pack two int4 rows to a byte"));
                    }
                    match scale_bias_chunks(module, k) {
                        Ok(chunks) => Codes::I4 { chunks },
                        Err(why) => {
                            reasons.push(why);
                            Codes::I4 { chunks: 1 }
                        }
                    }
                }
            };
            let s = scheme.as_str();
            let weight = match codes {
                Codes::I8 => t("weight", Dtype::I8, shape.clone(), numel),
                Codes::I4 { .. } => t("weight", Dtype::I8, vec![n / 2, k], n / 2 * k),
                Codes::Mx8 => t("weight", Dtype::F8_E4M3, shape.clone(), numel),
            };
            seq.push((weight, s, Item::Quant(l.src, codes)));
            if codes == Codes::Mx8 {
                // on_w8a8_mx_dynamic_per_block: weight, weight_scale (shared exponent + 127, u8
                // [N, ceil(K/32)]), bias; no weight_offset.
                let sc = super::mxfp8::scale_cols(k as usize) as u64;
                seq.push((t("weight_scale", Dtype::U8, vec![n, sc], n * sc), s, Item::Scale(l.src, codes)));
            } else {
                seq.push((t("weight_scale", Dtype::F32, vec![n, 1], n), s, Item::Scale(l.src, codes)));
                seq.push((t("weight_offset", Dtype::F32, vec![n, 1], n), s, Item::Zeros(n)));
            }
            if let Codes::I4 { chunks } = codes {
                let c = chunks as u64;
                seq.push((t("scale_bias", Dtype::F32, vec![n, c], n * c), s, Item::ScaleBias(l.src, chunks)));
            }
            if let Some(b) = bias_of.get(name.as_str()) {
                if codes == Codes::Mx8 && b.entry.dtype != Dtype::BF16 {
                    // _materialize_linear rounds the bias to bf16 before saving it as f32.
                    reasons.push(format!(
                        "{}: a {} bias of an MXFP8 layer (msModelSlim rounds it through bf16; not implemented)",
                        b.entry.name,
                        b.entry.dtype.as_str()
                    ));
                }
                let item = if b.entry.dtype == Dtype::F32 { Item::Copy(*b) } else { Item::Widen(*b) };
                let bshape = b.entry.shape.to_vec();
                seq.push((t("bias", Dtype::F32, bshape, b.entry.numel()), FLOAT, item));
            }
        } else {
            let item = match l.src.fp8 {
                Some((scale, layout, fmt)) => Item::Dequant { weight: l.src.weight, scale, layout, fmt },
                None => Item::Copy(l.src.weight),
            };
            let out = OutTensor { name: name.clone(), dtype: l.dtype, shape, nbytes: bytes(l.dtype, numel) };
            seq.push((out, FLOAT, item));
        }
    }
    if schemes.is_empty() {
        return Err(ConvertError::Refused {
            reasons: vec![format!(
                "no linear weight to quantize: none is a 2-D bf16/f16/f32/fp8 `.weight` in a decoder layer (under {}, layers 0..{layers}) that the {} recipe selects",
                rules().layer_prefixes.join(" or "),
                target.as_str()
            )],
        });
    }
    if !reasons.is_empty() {
        return Err(ConvertError::Refused { reasons });
    }
    let mut seen = HashSet::new();
    for (t, _, _) in &seq {
        if !seen.insert(t.name.as_str()) {
            return Err(ConvertError::Refused {
                reasons: vec![format!(
                    "{}: the checkpoint already has a tensor of this name, which quantize writes for a quantized layer",
                    t.name
                )],
            });
        }
    }

    // Parts: a new one when the bytes waiting plus the next tensor reach the part size.
    let mut parts: Vec<Vec<usize>> = vec![Vec::new()];
    let mut waiting = 0u64;
    for (i, (t, _, _)) in seq.iter().enumerate() {
        let cur = parts.last_mut().expect("one part");
        if part_bytes > 0 && !cur.is_empty() && waiting.saturating_add(t.nbytes) >= part_bytes {
            parts.push(Vec::new());
            waiting = 0;
        }
        parts.last_mut().expect("one part").push(i);
        waiting = waiting.saturating_add(t.nbytes);
    }
    let nparts = parts.len();
    let part_name = |i: usize| {
        if part_bytes == 0 {
            format!("{STEM}.safetensors")
        } else if nparts <= 99_999 {
            format!("{STEM}-{:05}-of-{nparts:05}.safetensors", i + 1)
        } else {
            format!("{STEM}-{}-of-{nparts}.safetensors", i + 1)
        }
    };
    let mut shards = Vec::with_capacity(nparts);
    for (pi, members) in parts.iter().enumerate() {
        // safetensors' save_file: larger dtypes first (its Dtype order), then by name.
        let mut sorted = members.clone();
        sorted.sort_by(|&a, &b| {
            let (ta, tb) = (&seq[a].0, &seq[b].0);
            dtype_rank(tb.dtype).cmp(&dtype_rank(ta.dtype)).then_with(|| ta.name.cmp(&tb.name))
        });
        let out: Vec<OutTensor> = sorted.iter().map(|&i| seq[i].0.clone()).collect();
        let items: Vec<Item<'a>> = sorted.iter().map(|&i| seq[i].2).collect();
        let inputs = super::inputs_of(None, &items);
        let in_bytes = items.iter().map(|it| it.input_bytes()).sum();
        let header = writer::header_bytes(&out, &BTreeMap::new());
        let len = writer::file_len(&header, &out);
        shards.push(ShardPlan { name: part_name(pi), inputs, items, out, header, len, in_bytes });
    }
    let description = seq.iter().map(|(t, s, _)| (t.name.clone(), *s)).collect();
    Ok(Plan { shards, dropped, description: Some(description), quant_type: model_quant_type(&schemes) })
}

/// safetensors orders a file's tensors by its Dtype enum, largest first (checked with
/// safetensors 0.8.0 `save_file`: I64, F64, F32, I32, BF16, F16, I16, F8_E4M3, F8_E5M2, I8, U8, BOOL).
fn dtype_rank(d: Dtype) -> usize {
    Dtype::ALL.iter().position(|&x| x == d).unwrap_or(0)
}

/// The description's `model_quant_type`: the scheme of highest rank in msModelSlim's priority list
/// among the layers written. W4A8_DYNAMIC is not in that list: a model whose only quantized layers
/// are int4 experts gets FLOAT, from its router and lm_head (unquantized nn.Linear layers).
fn model_quant_type(schemes: &HashSet<Scheme>) -> &'static str {
    let prio = &rules().model_quant_type_priority;
    let rank = |s: &str| prio.iter().position(|p| p == s);
    schemes.iter().map(|s| s.as_str()).filter(|s| rank(s).is_some()).max_by_key(|s| rank(s)).unwrap_or(FLOAT)
}

/// `quant_model_description.json` as msModelSlim's JsonWriter writes it (Python's `json.dump`
/// with indent 4): keys in write order, then the fixed fields.
pub(super) fn description_json(entries: &[(String, &'static str)], quant_type: &str) -> String {
    let q = |s: &str| serde_json::to_string(s).expect("strings serialize");
    let mut lines: Vec<String> = entries.iter().map(|(n, s)| format!("    {}: {}", q(n), q(s))).collect();
    lines.push(format!("    \"version\": {}", q(&rules().version)));
    lines.push(format!("    \"model_quant_type\": {}", q(quant_type)));
    lines.push("    \"metadata\": {}".into());
    // ascendv1.py sets group_size 32 when it writes an MXFP8 layer.
    let group = if entries.iter().any(|(_, s)| *s == Scheme::W8A8Mxfp8.as_str()) { 32 } else { 0 };
    lines.push(format!("    \"group_size\": {group}"));
    lines.push("    \"optional\": {}".into());
    format!("{{\n{}\n}}", lines.join(",\n"))
}

/// `value` as Python's `json.dump(value, f, indent=indent)` writes it (msModelSlim's
/// json_safe_dump of config.json): ensure_ascii escapes, `": "` after keys, floats as Python's
/// repr (`1e-06`, `10000.0`), no final newline. Keys stay in the order serde_json holds them.
pub(super) fn python_json(value: &serde_json::Value, indent: usize) -> String {
    fn float(x: f64) -> String {
        if x.is_nan() {
            return "NaN".into();
        }
        if x.is_infinite() {
            return if x > 0.0 { "Infinity" } else { "-Infinity" }.into();
        }
        let sci = format!("{x:e}");
        let (mant, exp) = sci.split_once('e').expect("{:e} has an exponent");
        let exp: i32 = exp.parse().expect("integer exponent");
        if (-4..16).contains(&exp) {
            let s = format!("{x}");
            if s.contains('.') {
                s
            } else {
                format!("{s}.0")
            }
        } else {
            format!("{mant}e{}{:02}", if exp < 0 { '-' } else { '+' }, exp.abs())
        }
    }
    fn string(s: &str, out: &mut String) {
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                c if (c as u32) < 0x20 || (c as u32) > 0x7E => {
                    let mut buf = [0u16; 2];
                    for u in c.encode_utf16(&mut buf) {
                        out.push_str(&format!("\\u{u:04x}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }
    fn go(v: &serde_json::Value, indent: usize, depth: usize, out: &mut String) {
        use serde_json::Value as V;
        let pad = |d: usize| " ".repeat(indent * d);
        match v {
            V::Null => out.push_str("null"),
            V::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            V::Number(n) if n.is_f64() => out.push_str(&float(n.as_f64().expect("f64"))),
            V::Number(n) => out.push_str(&n.to_string()),
            V::String(s) => string(s, out),
            V::Array(a) if a.is_empty() => out.push_str("[]"),
            V::Object(o) if o.is_empty() => out.push_str("{}"),
            V::Array(a) => {
                out.push('[');
                for (i, x) in a.iter().enumerate() {
                    out.push_str(if i == 0 { "\n" } else { ",\n" });
                    out.push_str(&pad(depth + 1));
                    go(x, indent, depth + 1, out);
                }
                out.push('\n');
                out.push_str(&pad(depth));
                out.push(']');
            }
            V::Object(o) => {
                out.push('{');
                for (i, (k, x)) in o.iter().enumerate() {
                    out.push_str(if i == 0 { "\n" } else { ",\n" });
                    out.push_str(&pad(depth + 1));
                    string(k, out);
                    out.push_str(": ");
                    go(x, indent, depth + 1, out);
                }
                out.push('\n');
                out.push_str(&pad(depth));
                out.push('}');
            }
        }
    }
    let mut out = String::new();
    go(value, indent, 0, &mut out);
    out
}

/// The index, as msModelSlim writes it (indent 2, names in write order).
pub(super) fn index_json(plan: &Plan<'_>) -> String {
    let q = |s: &str| serde_json::to_string(s).expect("strings serialize");
    let file_of: HashMap<&str, &str> =
        plan.shards.iter().flat_map(|s| s.out.iter().map(move |t| (t.name.as_str(), s.name.as_str()))).collect();
    let total: u64 = plan.shards.iter().flat_map(|s| s.out.iter().map(|t| t.nbytes)).sum();
    let map: Vec<String> = plan
        .description
        .as_deref()
        .unwrap_or_default()
        .iter()
        .map(|(n, _)| format!("    {}: {}", q(n), q(file_of[n.as_str()])))
        .collect();
    format!(
        "{{\n  \"metadata\": {{\n    \"total_size\": {total}\n  }},\n  \"weight_map\": {{\n{}\n  }}\n}}",
        map.join(",\n")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_json_writes_floats_and_escapes_like_json_dump() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"a": 1e-06, "b": 10000.0, "c": [1, 2.5, 1e16, 0.0001], "d": {}, "e": "\u00e9\"", "f": null}"#,
        )
        .unwrap();
        assert_eq!(
            python_json(&v, 2),
            "{\n  \"a\": 1e-06,\n  \"b\": 10000.0,\n  \"c\": [\n    1,\n    2.5,\n    1e+16,\n    0.0001\n  ],\n  \"d\": {},\n  \"e\": \"\\u00e9\\\"\",\n  \"f\": null\n}"
        );
    }

    #[test]
    fn globs_match_like_the_recipe() {
        // The recipe's patterns are fnmatch globs with `*` only: the scheme module's matcher.
        assert!(glob_match("*mlp.gate", "model.layers.0.mlp.gate"));
        assert!(!glob_match("*mlp.gate", "model.layers.0.mlp.gate_proj"));
        assert!(glob_match("*mlp.experts.*", "model.layers.3.mlp.experts.7.up_proj"));
        assert!(!glob_match("*mlp.experts.*", "model.layers.3.mlp.shared_expert.up_proj"));
    }

    #[test]
    fn the_w4a8_recipe_sends_routed_experts_to_int4_and_the_rest_to_int8() {
        let t = Target::W4A8Dynamic;
        assert_eq!(t.scheme_of("model.layers.0.self_attn.q_proj"), Some(Scheme::W8A8Dynamic));
        assert_eq!(t.scheme_of("model.layers.0.mlp.experts.7.down_proj"), Some(Scheme::W4A8Dynamic));
        assert_eq!(t.scheme_of("model.layers.0.mlp.shared_expert.up_proj"), Some(Scheme::W8A8Dynamic));
        assert_eq!(t.scheme_of("model.layers.0.mlp.gate_proj"), Some(Scheme::W8A8Dynamic), "a dense MLP");
        assert_eq!(t.scheme_of("model.layers.0.mlp.gate"), None, "the router stays FLOAT");
        assert_eq!(Target::W8A8Dynamic.scheme_of("model.layers.0.mlp.experts.7.down_proj"), Some(Scheme::W8A8Dynamic));
        assert_eq!(Target::W8A8Dynamic.scheme_of("model.layers.0.mlp.gate"), None);
    }

    #[test]
    fn scale_bias_sums_rows_or_sixteen_chunks_by_name_like_process_scale() {
        assert_eq!(scale_bias_chunks("model.layers.0.mlp.experts.0.gate_proj", 64), Ok(1));
        assert_eq!(scale_bias_chunks("model.layers.0.mlp.experts.0.down_proj", 32), Ok(16));
        assert_eq!(scale_bias_chunks("model.layers.0.block_sparse_moe.experts.0.w2", 1536), Ok(16));
        // msModelSlim would write [N, 20] for K = 40 (chunks of 40 // 16 = 2), fail for K = 8 or 50.
        for k in [40, 8, 50, 0] {
            assert!(scale_bias_chunks("m.experts.0.down_proj", k).is_err(), "{k}");
        }
        assert!(scale_bias_chunks("m.experts.0.fc1", 64).is_err(), "no scale_bias vLLM-Ascend loads");
    }

    #[test]
    fn model_quant_type_follows_msmodelslim_priority() {
        let set = |v: &[Scheme]| v.iter().copied().collect::<HashSet<_>>();
        assert_eq!(model_quant_type(&set(&[Scheme::W4A8Dynamic, Scheme::W8A8Dynamic])), "W8A8_DYNAMIC");
        assert_eq!(model_quant_type(&set(&[Scheme::W4A8Dynamic])), "FLOAT");
    }

    #[test]
    fn layers_past_the_text_model_are_not_decoder_layers() {
        assert_eq!(layer_of("model.layers.3.mlp.up_proj.weight", 4), Some(3));
        assert_eq!(layer_of("model.layers.4.mlp.up_proj.weight", 4), None, "an MTP layer");
        assert_eq!(layer_of("visual.blocks.0.attn.qkv.weight", 4), None);
    }
}
