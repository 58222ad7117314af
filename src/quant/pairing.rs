//! fp8 weight ↔ scale pairing across the whole checkpoint (a pair may straddle shards), with the
//! shape and dtype each scheme requires. The converter uses the same pairing, so what the audit
//! accepts is exactly what `dequant` converts.

use super::ceil_div;
use super::scheme::{QuantMethod, QuantScheme, ScaleLayout};
use crate::arch::AuditRules;
use crate::checkpoint::{Checkpoint, Dtype, TensorId, TensorRef};
use crate::findings::{Code, Finding, Severity};
use serde::Serialize;
use std::collections::BTreeMap;

/// One fp8 weight and its scale tensor, as positions in the checkpoint paired (no name copied).
#[derive(Debug, Clone)]
pub struct Fp8Pair {
    pub weight: TensorId,
    pub scale: TensorId,
    pub layout: ScaleLayout,
}

impl Fp8Pair {
    /// The weight's name in `ck` (the checkpoint that was paired).
    pub fn weight<'c>(&self, ck: &'c Checkpoint) -> &'c str {
        &ck.tensor_by_id(self.weight).entry.name
    }
    /// The scale's name in `ck` (the checkpoint that was paired).
    pub fn scale<'c>(&self, ck: &'c Checkpoint) -> &'c str {
        &ck.tensor_by_id(self.scale).entry.name
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Pairing {
    pub fp8_weights: usize,
    pub paired: usize,
    pub scale_tensors: usize,
    /// KV-cache scale tensors by suffix.
    pub kv_scales: BTreeMap<String, usize>,
    #[serde(skip)]
    pub pairs: Vec<Fp8Pair>,
}

/// The scale names that may accompany a weight `w` (`….weight` → `….weight_scale_inv`, `….weight_scale`).
fn scale_candidates(weight: &str) -> [String; 2] {
    [format!("{weight}_scale_inv"), format!("{weight}_scale")]
}

/// The weight a scale tensor belongs to, if the name is a weight-scale name.
fn weight_of_scale(name: &str) -> Option<&str> {
    name.strip_suffix("_scale_inv")
        .or_else(|| name.strip_suffix("_scale").filter(|w| w.ends_with("weight") || w.ends_with("proj")))
}

/// The scale shapes a weight of shape `w` accepts under `layout` (a leading expert dimension, when
/// present, carries over). Returns whether `got` is one of them; `want` describes them for a message.
fn scale_shape_ok(layout: ScaleLayout, w: &[u64], got: &[u64]) -> bool {
    if w.len() < 2 {
        return false;
    }
    let (lead, n, k) = (&w[..w.len() - 2], w[w.len() - 2], w[w.len() - 1]);
    let tail_is =
        |tail: &[u64]| got.len() == lead.len() + tail.len() && got[..lead.len()] == *lead && got[lead.len()..] == *tail;
    match layout {
        ScaleLayout::Block { n: bn, k: bk } => tail_is(&[ceil_div(n, bn), ceil_div(k, bk)]),
        ScaleLayout::Channel => tail_is(&[n, 1]) || tail_is(&[n]),
        ScaleLayout::Tensor => tail_is(&[]) || tail_is(&[1]) || tail_is(&[1, 1]) || (lead.is_empty() && got.is_empty()),
    }
}

fn expected_scale_shape(layout: ScaleLayout, w: &[u64]) -> Vec<Vec<u64>> {
    let (lead, nk) = match w.len() {
        0 | 1 => return vec![],
        2 => (&w[..0], w),
        _ => (&w[..w.len() - 2], &w[w.len() - 2..]),
    };
    let (n, k) = (nk[0], nk[1]);
    let with = |tail: &[u64]| lead.iter().chain(tail).copied().collect::<Vec<u64>>();
    match layout {
        ScaleLayout::Block { n: bn, k: bk } => vec![with(&[ceil_div(n, bn), ceil_div(k, bk)])],
        ScaleLayout::Channel => vec![with(&[n, 1]), with(&[n])],
        ScaleLayout::Tensor => {
            if lead.is_empty() {
                vec![vec![], vec![1]]
            } else {
                vec![lead.to_vec(), with(&[1]), with(&[1, 1])]
            }
        }
    }
}

fn scale_dtype_ok(scheme: &QuantScheme, d: Dtype) -> bool {
    match scheme.method {
        QuantMethod::CompressedTensors => matches!(d, Dtype::F32 | Dtype::BF16 | Dtype::F16),
        _ if scheme.scale_fmt.as_deref() == Some("ue8m0") => matches!(d, Dtype::F32 | Dtype::F8_E8M0),
        _ => matches!(d, Dtype::F32 | Dtype::F8_E8M0),
    }
}

pub fn pair_fp8(ck: &Checkpoint, scheme: Option<&QuantScheme>, rules: &AuditRules, out: &mut Vec<Finding>) -> Pairing {
    let mut p = Pairing::default();
    // One walk over every tensor gathers what the checks below read, each in load order: the fp8
    // tensors, the weight-scale names (with their weight's name) and the KV-scale candidates
    // (every KV-scale suffix ends with `scale`). Room for every tensor in each: capacity never
    // written costs no page, where growing by doubling would write each element up to twice (the
    // same for `pairs`).
    let n = ck.tensor_count();
    let (mut fp8, mut scales, mut kv) = (Vec::with_capacity(n), Vec::with_capacity(n), Vec::with_capacity(n));
    let mut any_packed = false;
    for (id, t) in ck.tensors_with_ids() {
        let name = t.entry.name.as_str();
        any_packed |= name.ends_with("_packed");
        if t.entry.dtype.is_fp8_weight() {
            fp8.push((id, t));
        }
        if name.ends_with("scale") {
            kv.push(t);
        }
        if let Some(w) = weight_of_scale(name) {
            scales.push((id, t, w));
        }
    }
    // fp8 tensors that are not a packed 4-bit weight's group scales (NVFP4 `weight_scale` is e4m3).
    // A packed 4-bit weight is named `…_packed`: when no tensor is, no scale is one's group scale
    // and the lookups of `<weight>_packed` (one per scale tensor) are not made.
    if any_packed {
        fp8.retain(|(_, t)| weight_of_scale(&t.entry.name).is_none_or(|w| ck.get(&format!("{w}_packed")).is_none()));
    }
    p.fp8_weights = fp8.len();
    p.pairs.reserve_exact(fp8.len());
    let layout = scheme.and_then(|s| s.fp8_scale);

    // A ModelSlim checkpoint's fp8 weights (W8A8_MXFP8, W8A8FP8_DYNAMIC) are its description's:
    // their scales are checked against the scheme's contract (modelslim::check), not paired here.
    let modelslim = scheme.is_some_and(|s| s.modelslim.is_some());
    if !fp8.is_empty() && layout.is_none() && !modelslim {
        let what = match scheme {
            None => "no quantization_config".to_string(),
            Some(s) => format!("quant_method {:?}, which has no fp8 weight scales", s.method.as_str()),
        };
        out.push(
            Finding::new(
                Code::Fp8WithoutQuantConfig,
                format!("{} fp8 tensors (e.g. {:?}) but {what}", fp8.len(), fp8[0].1.entry.name),
            )
            .file(fp8[0].1.shard.name.clone())
            .tensor(fp8[0].1.entry.name.clone())
            .severity(if scheme.is_some() { Severity::Warning } else { Severity::Error }),
        );
    }

    let mut cand = String::new();
    if let (Some(layout), Some(scheme)) = (layout, scheme) {
        let want = scheme.scale_suffix.unwrap_or("weight_scale_inv");
        for &(wid, t) in &fp8 {
            let name = &t.entry.name;
            let module = name.strip_suffix(".weight").unwrap_or(name);
            if scheme.is_not_converted(module) == Some(true) {
                out.push(
                    Finding::new(
                        Code::IgnoredModuleQuantized,
                        format!(
                            "{name} is {} but {module} is listed in {}",
                            t.entry.dtype,
                            scheme.not_converted_key.unwrap_or("the ignore list")
                        ),
                    )
                    .file(t.shard.name.clone())
                    .tensor(name.clone()),
                );
            }
            // Try `<weight>_scale_inv`, then `<weight>_scale`, in one reused buffer.
            let mut found = None;
            for sfx in ["_scale_inv", "_scale"] {
                cand.clear();
                cand.push_str(name);
                cand.push_str(sfx);
                if let Some(id) = ck.id_near(&cand, wid) {
                    found = Some((id, ck.tensor_by_id(id)));
                    break;
                }
            }
            let Some((sid, s)) = found else {
                let [inv, plain] = scale_candidates(name);
                out.push(
                    Finding::new(
                        Code::Fp8ScaleMissing,
                        format!(
                            "{name} {:?} is {} with no {}",
                            t.entry.shape,
                            t.entry.dtype,
                            if want == "weight_scale_inv" { inv } else { plain }
                        ),
                    )
                    .file(t.shard.name.clone())
                    .tensor(name.clone()),
                );
                continue;
            };
            let scale_name = &s.entry.name;
            if !scale_name.ends_with(want) {
                out.push(
                    Finding::new(
                        Code::Fp8ScaleMissing,
                        format!("{name} has {scale_name} but {} (quant_method {}) expects the suffix `{want}`", scheme.source, scheme.method),
                    )
                    .file(s.shard.name.clone())
                    .tensor(name.clone())
                    .hint("vLLM's loader only fills the parameter it created; rename the scale tensors or fix quantization_config (vllm#43564)."),
                );
                continue;
            }
            if !scale_shape_ok(layout, &t.entry.shape, &s.entry.shape) {
                let shapes = expected_scale_shape(layout, &t.entry.shape);
                out.push(
                    Finding::new(
                        Code::Fp8ScaleShape,
                        format!(
                            "{scale_name} is {:?} but weight {:?} with {layout} scales needs {}",
                            s.entry.shape,
                            t.entry.shape,
                            shapes.iter().map(|s| format!("{s:?}")).collect::<Vec<_>>().join(" or ")
                        ),
                    )
                    .file(s.shard.name.clone())
                    .tensor(scale_name.clone()),
                );
                continue;
            }
            if !scale_dtype_ok(scheme, s.entry.dtype) {
                out.push(
                    Finding::new(
                        Code::Fp8ScaleDtype,
                        format!(
                            "{scale_name} is {}; {} scales are F32{}",
                            s.entry.dtype,
                            scheme.method,
                            if scheme.method == QuantMethod::CompressedTensors {
                                ", BF16 or F16"
                            } else {
                                " (or F8_E8M0)"
                            }
                        ),
                    )
                    .file(s.shard.name.clone())
                    .tensor(scale_name.clone()),
                );
            }
            p.paired += 1;
            p.pairs.push(Fp8Pair { weight: wid, scale: sid, layout });
        }
    }

    // Every weight scale has its weight.
    for &(id, t, w) in &scales {
        let name = &t.entry.name;
        if rules.kv_scale_suffixes.iter().any(|s| crate::checkpoint::names::ends_with(name, s)) {
            continue;
        }
        // A packed 4-bit weight's group scale (compressed-tensors `weight_packed` + `weight_scale`),
        // not an fp8 one: its contract is checked with the packed weight.
        if any_packed {
            cand.clear();
            cand.push_str(w);
            cand.push_str("_packed");
            if ck.id_near(&cand, id).is_some() {
                continue;
            }
        }
        p.scale_tensors += 1;
        match ck.id_near(w, id).map(|w| ck.tensor_by_id(w)) {
            None => out.push(
                Finding::new(Code::Fp8ScaleOrphan, format!("{name} ({}) has no weight {w}", t.shard.name))
                    .file(t.shard.name.clone())
                    .tensor(name.clone()),
            ),
            Some(wt) if matches!(wt.entry.dtype, Dtype::BF16 | Dtype::F16 | Dtype::F32) => out.push(
                Finding::new(
                    Code::ScaleOnUnquantized,
                    format!("{name} accompanies {w}, which is {} (not fp8)", wt.entry.dtype),
                )
                .file(t.shard.name.clone())
                .tensor(name.clone()),
            ),
            Some(_) => {}
        }
    }

    kv_scales(&kv, rules, &mut p, out);
    companions(ck, scheme, out);
    p
}

/// KV-cache scales among `candidates` (the tensors whose names end with `scale`, in load order).
fn kv_scales(candidates: &[TensorRef<'_>], rules: &AuditRules, p: &mut Pairing, out: &mut Vec<Finding>) {
    let mut per_module: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for t in candidates {
        let name = &t.entry.name;
        let Some(sfx) = rules.kv_scale_suffixes.iter().find(|s| crate::checkpoint::names::ends_with(name, s)) else {
            continue;
        };
        *p.kv_scales.entry(sfx.trim_start_matches('.').to_string()).or_default() += 1;
        // Group k/v by attention module: strip the suffix and any k_proj / v_proj / qkv_proj leaf.
        let base = &name[..name.len() - sfx.len()];
        let module =
            base.trim_end_matches(".k_proj").trim_end_matches(".v_proj").trim_end_matches(".qkv_proj").to_string();
        let e = per_module.entry(module).or_default();
        let leaf = sfx.trim_start_matches('.');
        let (is_k, is_v) = match leaf {
            "kv_scale" => (true, true),
            l if l.starts_with("k_") => (true, false),
            l if l.starts_with("v_") => (false, true),
            _ => (false, false),
        };
        e.0 |= is_k;
        e.1 |= is_v;
    }
    if !p.kv_scales.is_empty() {
        out.push(Finding::new(
            Code::KvScales,
            format!(
                "{} ({} attention modules); vLLM's maybe_remap_kv_scale_name maps them to .attn.k_scale / .attn.v_scale",
                p.kv_scales.iter().map(|(k, v)| format!("{v} x {k}")).collect::<Vec<_>>().join(", "),
                per_module.len()
            ),
        ));
    }
    for (m, (k, v)) in per_module {
        if k != v {
            out.push(
                Finding::new(
                    Code::KvScaleIncomplete,
                    format!(
                        "{m} has {} but not {}",
                        if k { "k_scale" } else { "v_scale" },
                        if k { "v_scale" } else { "k_scale" }
                    ),
                )
                .tensor(m),
            );
        }
    }
}

/// Integer weight-only schemes: every packed weight needs its companions.
fn companions(ck: &Checkpoint, scheme: Option<&QuantScheme>, out: &mut Vec<Finding>) {
    let Some(s) = scheme else { return };
    let required: &[&str] = match &s.method {
        QuantMethod::Gptq | QuantMethod::Awq | QuantMethod::GptqMarlin | QuantMethod::AwqMarlin => {
            &["scales", "qzeros"]
        }
        QuantMethod::Fp8 | QuantMethod::CompressedTensors | QuantMethod::Unnamed => return,
        // ModelSlim: checked against its description (quant::modelslim).
        QuantMethod::Ascend if s.modelslim.is_some() => return,
        QuantMethod::Modelopt if s.fp8_scale.is_some() => return,
        other => {
            out.push(Finding::new(
                Code::QuantUnsupported,
                format!(
                    "quant_method {other:?}{}: its companion tensors are not checked",
                    s.format.as_deref().map(|f| format!(" ({f})")).unwrap_or_default()
                ),
            ));
            return;
        }
    };
    for t in ck.tensors() {
        let Some(m) = t.entry.name.strip_suffix(".qweight") else { continue };
        let missing: Vec<&str> = required.iter().copied().filter(|c| ck.get(&format!("{m}.{c}")).is_none()).collect();
        if !missing.is_empty() {
            out.push(
                Finding::new(
                    Code::QuantCompanionMissing,
                    format!(
                        "{m}.qweight has no {}",
                        missing.iter().map(|c| format!("{m}.{c}")).collect::<Vec<_>>().join(", ")
                    ),
                )
                .file(t.shard.name.clone())
                .tensor(t.entry.name.clone()),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_grid_uses_ceil() {
        let s = expected_scale_shape(ScaleLayout::Block { n: 128, k: 128 }, &[7168, 576]);
        assert_eq!(s, vec![vec![56, 5]]);
        let s = expected_scale_shape(ScaleLayout::Block { n: 128, k: 128 }, &[8, 129, 200]);
        assert_eq!(s, vec![vec![8, 2, 2]]);
        assert_eq!(expected_scale_shape(ScaleLayout::Channel, &[10, 4]), vec![vec![10, 1], vec![10]]);
        for (layout, w) in [
            (ScaleLayout::Block { n: 128, k: 128 }, vec![8u64, 129, 200]),
            (ScaleLayout::Channel, vec![10, 4]),
            (ScaleLayout::Tensor, vec![3, 4]),
        ] {
            for e in expected_scale_shape(layout, &w) {
                assert!(scale_shape_ok(layout, &w, &e), "{layout} {w:?} {e:?}");
            }
            assert!(!scale_shape_ok(layout, &w, &[7, 7, 7, 7]));
        }
    }

    #[test]
    fn scale_names() {
        assert_eq!(weight_of_scale("a.q_proj.weight_scale_inv"), Some("a.q_proj.weight"));
        assert_eq!(weight_of_scale("a.q_proj.weight_scale"), Some("a.q_proj.weight"));
        assert_eq!(weight_of_scale("a.attn.k_scale"), None);
    }
}
