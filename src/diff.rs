//! What changed between two checkpoints, from their headers alone (issue 24): `ckptpilot diff A B`,
//! the check before swapping a fine-tune or a re-quantized copy into a running deployment.
//!
//! Names are compared as patterns (digits as `*`), so a dropped layer or expert is one line with the
//! indices it lost, not a thousand names. Tensors both sides have are compared by shape and dtype;
//! the declared quantization schemes and config.json key by key. No tensor data is read.

use crate::arch::audit_rules;
use crate::checkpoint::names::{pattern, ranges, split_expert, split_layer, ExpertName};
use crate::checkpoint::{natural_cmp, Checkpoint, Dtype, TensorEntry};
use crate::quant::QuantScheme;
use serde::Serialize;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

pub const SCHEMA: &str = "ckptpilot.diff/1";

/// One checkpoint of the two.
#[derive(Debug, Clone, Serialize)]
pub struct Side {
    /// As given on the command line.
    pub model: String,
    /// config.json's `architectures[0]`.
    pub architecture: Option<String>,
    pub tensors: usize,
    pub tensor_bytes: u64,
    pub shards: usize,
    /// Whether config.json could be read.
    pub config: bool,
    /// The declared scheme (`Checkpoint::quant_scheme`), as `audit --json` shows it.
    pub quantization: Option<QuantScheme>,
    /// The scheme in one line; `none` without one.
    pub quantization_summary: String,
}

/// Tensors only one side has, sharing a pattern.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OnlyIn {
    pub pattern: String,
    pub count: usize,
    /// The first of them in natural order.
    pub example: String,
    /// Their layer indices, compact (`0..2,5`), where the names have them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub layers: Option<String>,
    /// Their expert indices, compact, where the names have them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub experts: Option<String>,
}

/// A pattern both sides have, in different layers.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct LayerDifference {
    pub pattern: String,
    /// The layers each side has it in, compact (`0..47`).
    pub a: String,
    pub b: String,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Signature {
    pub dtype: Dtype,
    pub shape: Vec<u64>,
}

impl Signature {
    fn of(e: &TensorEntry) -> Signature {
        Signature { dtype: e.dtype, shape: e.shape.to_vec() }
    }
}

/// Tensors both sides have, with a different shape or dtype, sharing a pattern and the change.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Changed {
    pub pattern: String,
    pub count: usize,
    pub example: String,
    pub a: Signature,
    pub b: Signature,
    /// The dtype changed to or from a quantized one (fp8, fp4/fp6, int8, packed int4): a
    /// re-quantization, not a cast.
    pub quantization: bool,
}

/// How a value differs: added in B, removed from A, or changed.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ChangeKind {
    Added,
    Removed,
    Changed,
}

/// One key of a JSON document that differs, as a dotted path (`text_config.rope_scaling.factor`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct KeyChange {
    pub path: String,
    pub kind: ChangeKind,
    /// A's value (absent when added), B's value (absent when removed), raw.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub a: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub b: Option<Value>,
}

#[derive(Debug, Clone, Serialize)]
pub struct QuantDifference {
    pub same: bool,
    /// `same: …`, or A's scheme → B's in one line each.
    pub summary: String,
    /// Field by field, where both sides declare a scheme.
    pub fields: Vec<KeyChange>,
    /// Tensors in both whose dtype changed to or from a quantized one.
    pub tensors: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ConfigDifference {
    /// Whether each side has a readable config.json.
    pub a: bool,
    pub b: bool,
    /// Where both have one.
    pub changes: Vec<KeyChange>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DiffReport {
    pub schema: &'static str,
    pub a: Side,
    pub b: Side,
    pub only_in_a: Vec<OnlyIn>,
    pub only_in_b: Vec<OnlyIn>,
    /// Patterns both have in different layers (the tensors are also in `only_in_*`).
    pub layers: Vec<LayerDifference>,
    pub changed: Vec<Changed>,
    pub quantization: QuantDifference,
    pub config: ConfigDifference,
    /// Entries of `only_in_a`, `only_in_b`, `changed` and `config.changes`, plus one for a
    /// config.json only one side has and one for a different quantization scheme.
    pub differences: usize,
    /// No difference at all: same names, shapes, dtypes, scheme and config.
    pub same: bool,
    pub verdict: String,
}

/// Floats a model computes in; anything 8-bit or smaller (fp8, fp4, fp6, int8, uint8 codes, e8m0
/// scales) or the int32 words GPTQ / AWQ pack int4 into is a quantized storage format.
fn quantized(d: Dtype) -> bool {
    (d.bits() <= 8 && d != Dtype::BOOL) || matches!(d, Dtype::I32 | Dtype::U32)
}

fn side(ck: &Checkpoint, model: &str) -> Side {
    let q = ck.quant_scheme();
    Side {
        model: model.to_string(),
        architecture: ck
            .config_json
            .as_ref()
            .and_then(|c| c.get("architectures")?.get(0)?.as_str())
            .map(str::to_string),
        tensors: ck.tensor_count(),
        tensor_bytes: ck.tensor_bytes(),
        shards: ck.shards.len(),
        config: ck.config_json.is_some(),
        quantization: q.cloned(),
        quantization_summary: q.map_or_else(|| "none".to_string(), scheme_line),
    }
}

/// A scheme in one line: method, where it is declared, and what shapes its tensors.
pub fn scheme_line(s: &QuantScheme) -> String {
    let mut parts = vec![if s.method.as_str().is_empty() { "unnamed".to_string() } else { s.method.to_string() }];
    if let Some(f) = &s.format {
        parts.push(f.clone());
    }
    if let Some(l) = s.fp8_scale {
        parts.push(format!("{l} scales `{}`", s.scale_suffix.unwrap_or("?")));
    }
    if let Some(f) = &s.fmt {
        parts.push(f.clone());
    }
    if let Some(f) = &s.scale_fmt {
        parts.push(format!("scale_fmt {f}"));
    }
    if let Some(b) = s.bits {
        parts.push(format!("{b}-bit"));
    }
    if let Some(g) = s.group_size {
        parts.push(format!("group {g}"));
    }
    if s.symmetric == Some(false) {
        parts.push("asymmetric".into());
    }
    if let Some(a) = &s.activation_scheme {
        parts.push(format!("{a} activations"));
    }
    if s.input_quantized == Some(true) {
        parts.push("activations quantized".into());
    }
    if let Some(k) = &s.kv_cache_scheme {
        parts.push(format!("kv cache {k}"));
    }
    if let Some(d) = &s.modelslim {
        parts.push(format!("weights {}", d.weight_schemes()));
    }
    if !s.not_converted.is_empty() {
        parts.push(format!("{} modules not converted", s.not_converted.len()));
    }
    format!("{} (from {})", parts.join(", "), s.source)
}

/// Equal as JSON, except that numbers compare by value (`10000` and `10000.0` are one rope_theta).
fn equal(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            // Two integers compare exactly (u64 beyond 2^53 would collide as f64).
            x == y || ((x.is_f64() || y.is_f64()) && x.as_f64() == y.as_f64())
        }
        (Value::Array(x), Value::Array(y)) => x.len() == y.len() && x.iter().zip(y).all(|(p, q)| equal(p, q)),
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| equal(v, w)))
        }
        _ => a == b,
    }
}

/// Objects key by key, recursively (dotted paths); anything else (arrays included) as a whole value.
fn diff_json(path: &str, a: &Value, b: &Value, out: &mut Vec<KeyChange>) {
    let (Value::Object(x), Value::Object(y)) = (a, b) else {
        if !equal(a, b) {
            out.push(KeyChange {
                path: path.to_string(),
                kind: ChangeKind::Changed,
                a: Some(a.clone()),
                b: Some(b.clone()),
            });
        }
        return;
    };
    let keys: BTreeSet<&String> = x.keys().chain(y.keys()).collect();
    for k in keys {
        let p = if path.is_empty() { k.clone() } else { format!("{path}.{k}") };
        match (x.get(k), y.get(k)) {
            (Some(va), Some(vb)) => diff_json(&p, va, vb, out),
            (Some(va), None) => {
                out.push(KeyChange { path: p, kind: ChangeKind::Removed, a: Some(va.clone()), b: None })
            }
            (None, Some(vb)) => out.push(KeyChange { path: p, kind: ChangeKind::Added, a: None, b: Some(vb.clone()) }),
            (None, None) => {}
        }
    }
}

/// Per pattern: how many tensors, the first name in natural order, and their layer / expert indices.
#[derive(Default)]
struct Group<'a> {
    count: usize,
    example: Option<&'a str>,
    layers: BTreeSet<u64>,
    experts: BTreeSet<u64>,
}

impl<'a> Group<'a> {
    fn add(&mut self, name: &'a str) {
        self.count += 1;
        if self.example.is_none_or(|e| natural_cmp(name, e).is_lt()) {
            self.example = Some(name);
        }
        let rules = audit_rules();
        if let Some(l) = split_layer(name, rules) {
            self.layers.insert(l.layer);
            if let Some(ExpertName::PerExpert { expert, .. }) = split_expert(l.rest, rules) {
                self.experts.insert(expert);
            }
        }
    }
}

fn compact_ranges(set: &BTreeSet<u64>) -> Option<String> {
    (!set.is_empty()).then(|| ranges(&set.iter().copied().collect::<Vec<_>>()))
}

/// Every pattern of a checkpoint with its group.
fn patterns(ck: &Checkpoint) -> BTreeMap<String, Group<'_>> {
    let mut out: BTreeMap<String, Group<'_>> = BTreeMap::new();
    for t in ck.tensors() {
        out.entry(pattern(&t.entry.name)).or_default().add(&t.entry.name);
    }
    out
}

/// The tensors of `x` that `y` lacks, by pattern.
fn only_in(x: &Checkpoint, y: &Checkpoint) -> Vec<OnlyIn> {
    let mut groups: BTreeMap<String, Group<'_>> = BTreeMap::new();
    for t in x.tensors().filter(|t| y.get(&t.entry.name).is_none()) {
        groups.entry(pattern(&t.entry.name)).or_default().add(&t.entry.name);
    }
    groups
        .into_iter()
        .map(|(pattern, g)| OnlyIn {
            pattern,
            count: g.count,
            example: g.example.unwrap_or_default().to_string(),
            layers: compact_ranges(&g.layers),
            experts: compact_ranges(&g.experts),
        })
        .collect()
}

/// Compare two opened checkpoints by their headers, config.json and declared schemes.
pub fn diff(a: &Checkpoint, a_model: &str, b: &Checkpoint, b_model: &str) -> DiffReport {
    let only_in_a = only_in(a, b);
    let only_in_b = only_in(b, a);

    let (pa, pb) = (patterns(a), patterns(b));
    let layers: Vec<LayerDifference> = pa
        .iter()
        .filter_map(|(p, ga)| {
            let gb = pb.get(p)?;
            (!ga.layers.is_empty() && !gb.layers.is_empty() && ga.layers != gb.layers).then(|| LayerDifference {
                pattern: p.clone(),
                a: compact_ranges(&ga.layers).unwrap_or_default(),
                b: compact_ranges(&gb.layers).unwrap_or_default(),
            })
        })
        .collect();

    let mut changes: BTreeMap<(String, Signature, Signature), (usize, &str)> = BTreeMap::new();
    for t in a.tensors() {
        let Some(u) = b.get(&t.entry.name) else { continue };
        if t.entry.dtype == u.entry.dtype && t.entry.shape == u.entry.shape {
            continue;
        }
        let key = (pattern(&t.entry.name), Signature::of(t.entry), Signature::of(u.entry));
        let slot = changes.entry(key).or_insert((0, &t.entry.name));
        slot.0 += 1;
        if natural_cmp(&t.entry.name, slot.1).is_lt() {
            slot.1 = &t.entry.name;
        }
    }
    let changed: Vec<Changed> = changes
        .into_iter()
        .map(|((pattern, sa, sb), (count, example))| Changed {
            quantization: sa.dtype != sb.dtype && (quantized(sa.dtype) || quantized(sb.dtype)),
            pattern,
            count,
            example: example.to_string(),
            a: sa,
            b: sb,
        })
        .collect();

    let (side_a, side_b) = (side(a, a_model), side(b, b_model));
    let quantization = quant_difference(&side_a, &side_b, &changed);

    let mut config_changes = Vec::new();
    if let (Some(x), Some(y)) = (&a.config_json, &b.config_json) {
        diff_json("", x, y, &mut config_changes);
    }
    let config = ConfigDifference { a: side_a.config, b: side_b.config, changes: config_changes };

    let config_presence = usize::from(config.a != config.b);
    let differences = only_in_a.len()
        + only_in_b.len()
        + changed.len()
        + config.changes.len()
        + config_presence
        + usize::from(!quantization.same);
    let verdict = verdict(&only_in_a, &only_in_b, &changed, &quantization, &config, differences);
    DiffReport {
        schema: SCHEMA,
        a: side_a,
        b: side_b,
        only_in_a,
        only_in_b,
        layers,
        changed,
        quantization,
        config,
        differences,
        same: differences == 0,
        verdict,
    }
}

fn quant_difference(a: &Side, b: &Side, changed: &[Changed]) -> QuantDifference {
    let tensors = changed.iter().filter(|c| c.quantization).map(|c| c.count).sum();
    let mut fields = Vec::new();
    if let (Some(x), Some(y)) = (&a.quantization, &b.quantization) {
        let json = |s: &QuantScheme| serde_json::to_value(s).unwrap_or(Value::Null);
        diff_json("", &json(x), &json(y), &mut fields);
        // The ModelSlim description (each tensor's scheme) is not in the scheme's JSON.
        let weights = |s: &QuantScheme| s.modelslim.as_ref().map(|d| Value::String(d.weight_schemes()));
        match (weights(x), weights(y)) {
            (Some(p), Some(q)) if p != q => fields.push(KeyChange {
                path: "modelslim.weights".into(),
                kind: ChangeKind::Changed,
                a: Some(p),
                b: Some(q),
            }),
            _ => {}
        }
    }
    let same = match (&a.quantization, &b.quantization) {
        (None, None) => true,
        (Some(_), Some(_)) => fields.is_empty(),
        _ => false,
    };
    let summary = match (&a.quantization, &b.quantization) {
        (None, None) => "none declared on either side".to_string(),
        _ if same => format!("same: {}", a.quantization_summary),
        _ => format!("A {} → B {}", a.quantization_summary, b.quantization_summary),
    };
    QuantDifference { same, summary, fields, tensors }
}

/// `1 tensor`, `2 tensors`.
fn plural(n: usize, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

fn verdict(
    only_a: &[OnlyIn],
    only_b: &[OnlyIn],
    changed: &[Changed],
    q: &QuantDifference,
    c: &ConfigDifference,
    n: usize,
) -> String {
    if n == 0 {
        return "same tensors, same shapes and dtypes; same quantization and config.json".into();
    }
    let tensors = |v: &[OnlyIn]| v.iter().map(|o| o.count).sum::<usize>();
    let mut parts = Vec::new();
    if !only_a.is_empty() {
        parts.push(format!("{} only in A", plural(tensors(only_a), "tensor", "tensors")));
    }
    if !only_b.is_empty() {
        parts.push(format!("{} only in B", plural(tensors(only_b), "tensor", "tensors")));
    }
    if !changed.is_empty() {
        let n: usize = changed.iter().map(|c| c.count).sum();
        parts.push(format!("{} changed in shape or dtype", plural(n, "tensor", "tensors")));
    }
    if !q.same {
        parts.push("quantization scheme".into());
    }
    match (c.a, c.b) {
        (true, false) => parts.push("config.json only in A".into()),
        (false, true) => parts.push("config.json only in B".into()),
        _ if !c.changes.is_empty() => parts.push(plural(c.changes.len(), "config key", "config keys")),
        _ => {}
    }
    format!("{}: {}", plural(n, "difference", "differences"), parts.join(", "))
}

/// A JSON value in at most about `max` characters: long arrays keep their first items and say how
/// many there are, long objects their first keys.
fn compact(v: &Value, max: usize) -> String {
    let s = v.to_string();
    if s.chars().count() <= max {
        return s;
    }
    let fit = |items: Vec<String>, total: usize, what: &str, open: &str, close: &str| {
        let mut out = String::from(open);
        for (i, it) in items.iter().enumerate() {
            if out.chars().count() + it.chars().count() > max.saturating_sub(16) && i > 0 {
                break;
            }
            if i > 0 {
                out.push_str(", ");
            }
            out.push_str(it);
        }
        format!("{out}, … {total} {what}{close}")
    };
    match v {
        Value::Array(a) => fit(a.iter().map(|x| compact(x, max / 2)).collect(), a.len(), "items", "[", "]"),
        Value::Object(o) => {
            fit(o.keys().map(|k| Value::String(k.clone()).to_string()).collect(), o.len(), "keys", "{", "}")
        }
        _ => s.chars().take(max).collect::<String>() + "…",
    }
}

/// Lines per section in the human output (`--json` has every entry).
const SHOWN: usize = 30;

/// The human report. Every name, key and value from either checkpoint goes through
/// [`crate::ui::field`]: a tensor name is hostile input.
pub fn render(r: &DiffReport) -> String {
    use crate::ui::{bytes, field as f};
    use std::fmt::Write;
    let mut o = String::new();
    for (tag, s) in [("A", &r.a), ("B", &r.b)] {
        let _ = writeln!(
            o,
            "{tag}  {}  ({}, {} tensors, {}, {} shard{})",
            f(&s.model),
            f(s.architecture.as_deref().unwrap_or("no architecture")),
            s.tensors,
            bytes(s.tensor_bytes),
            s.shards,
            if s.shards == 1 { "" } else { "s" }
        );
    }
    let more = |o: &mut String, n: usize| {
        if n > SHOWN {
            let _ = writeln!(o, "  … and {} more (all are in --json)", n - SHOWN);
        }
    };
    for (tag, list) in [("A", &r.only_in_a), ("B", &r.only_in_b)] {
        let _ = writeln!(o);
        if list.is_empty() {
            let _ = writeln!(o, "only in {tag}: none");
            continue;
        }
        let n: usize = list.iter().map(|x| x.count).sum();
        let _ = writeln!(
            o,
            "only in {tag}: {}, {}",
            plural(n, "tensor", "tensors"),
            plural(list.len(), "pattern", "patterns")
        );
        let w = list.iter().take(SHOWN).map(|x| f(&x.pattern).chars().count()).max().unwrap_or(0).min(64);
        for x in list.iter().take(SHOWN) {
            let mut line = format!("  {:<w$}  ×{}", f(&x.pattern), x.count);
            if let Some(l) = &x.layers {
                let _ = write!(line, "  layers {l}");
            }
            if let Some(e) = &x.experts {
                let _ = write!(line, "  experts {e}");
            }
            // The pattern and the indices name the tensors; an example where they do not.
            if x.layers.is_none() && x.example != x.pattern {
                let _ = write!(line, "  e.g. {}", f(&x.example));
            }
            let _ = writeln!(o, "{line}");
        }
        more(&mut o, list.len());
    }
    if !r.layers.is_empty() {
        let _ = writeln!(o, "\nin both, in different layers: {}", plural(r.layers.len(), "pattern", "patterns"));
        let mut last: Option<(&str, &str)> = None;
        for d in r.layers.iter().take(SHOWN) {
            if last != Some((&d.a, &d.b)) {
                let _ = writeln!(o, "  A layers {}, B layers {}", d.a, d.b);
                last = Some((&d.a, &d.b));
            }
            let _ = writeln!(o, "    {}", f(&d.pattern));
        }
        more(&mut o, r.layers.len());
    }
    let _ = writeln!(o);
    if r.changed.is_empty() {
        let _ = writeln!(o, "shape or dtype changed: none");
    } else {
        let n: usize = r.changed.iter().map(|c| c.count).sum();
        let _ = writeln!(
            o,
            "shape or dtype changed: {}, {}",
            plural(n, "tensor", "tensors"),
            plural(r.changed.len(), "pattern", "patterns")
        );
        let w = r.changed.iter().take(SHOWN).map(|x| f(&x.pattern).chars().count()).max().unwrap_or(0).min(64);
        for c in r.changed.iter().take(SHOWN) {
            let _ = writeln!(
                o,
                "  {:<w$}  ×{}  {} {:?} → {} {:?}{}",
                f(&c.pattern),
                c.count,
                c.a.dtype,
                c.a.shape,
                c.b.dtype,
                c.b.shape,
                if c.quantization { "  (quantization)" } else { "" }
            );
        }
        more(&mut o, r.changed.len());
    }
    let q = &r.quantization;
    let _ = writeln!(o, "\nquantization: {}", f(&q.summary));
    for k in q.fields.iter().take(SHOWN) {
        let _ = writeln!(o, "{}", key_line(k));
    }
    if q.tensors > 0 {
        let n = plural(q.tensors, "tensor", "tensors");
        let _ = writeln!(o, "  {n} changed dtype to or from a quantized one");
    }
    let c = &r.config;
    match (c.a, c.b) {
        (false, false) => {
            let _ = writeln!(o, "\nconfig.json: on neither side");
        }
        (true, false) | (false, true) => {
            let _ = writeln!(o, "\nconfig.json: only in {}", if c.a { "A" } else { "B" });
        }
        _ if c.changes.is_empty() => {
            let _ = writeln!(o, "\nconfig.json: same");
        }
        _ => {
            let _ = writeln!(o, "\nconfig.json: {}", plural(c.changes.len(), "key differs", "keys differ"));
            for k in c.changes.iter().take(SHOWN) {
                let _ = writeln!(o, "{}", key_line(k));
            }
            more(&mut o, c.changes.len());
        }
    }
    let _ = writeln!(o, "\n{}", r.verdict);
    o
}

/// `  ~ path: a → b`, `  + path = b`, `  - path = a`, values compact and escaped.
fn key_line(k: &KeyChange) -> String {
    use crate::ui::field as f;
    let v = |x: &Option<Value>| x.as_ref().map(|x| f(&compact(x, 60)).into_owned()).unwrap_or_default();
    match k.kind {
        ChangeKind::Changed => format!("  ~ {}: {} → {}", f(&k.path), v(&k.a), v(&k.b)),
        ChangeKind::Added => format!("  + {} = {}", f(&k.path), v(&k.b)),
        ChangeKind::Removed => format!("  - {} = {}", f(&k.path), v(&k.a)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn json_keys_by_dotted_path() {
        let a = json!({"x": 1, "t": {"r": {"factor": 4.0, "type": "yarn"}}, "gone": [1, 2], "arch": ["A"]});
        let b = json!({"x": 1.0, "t": {"r": {"factor": 8.0, "type": "yarn"}}, "new": null, "arch": ["B"]});
        let mut out = Vec::new();
        diff_json("", &a, &b, &mut out);
        let got: Vec<(&str, ChangeKind)> = out.iter().map(|k| (k.path.as_str(), k.kind)).collect();
        assert_eq!(
            got,
            [
                ("arch", ChangeKind::Changed),
                ("gone", ChangeKind::Removed),
                ("new", ChangeKind::Added),
                ("t.r.factor", ChangeKind::Changed),
            ]
        );
    }

    #[test]
    fn long_values_are_abbreviated() {
        let v = Value::Array((0..500).map(Value::from).collect());
        let s = compact(&v, 60);
        assert!(s.starts_with("[0, 1, 2") && s.ends_with("… 500 items]") && s.chars().count() < 80, "{s}");
        let o = json!({"alpha": vec![0; 100], "beta": 1});
        assert_eq!(compact(&o, 20), "{\"alpha\", … 2 keys}");
        assert_eq!(compact(&json!(7), 60), "7");
    }

    #[test]
    fn quantized_dtypes() {
        assert!(quantized(Dtype::F8_E4M3) && quantized(Dtype::I32) && quantized(Dtype::U8) && quantized(Dtype::F4));
        assert!(!quantized(Dtype::BF16) && !quantized(Dtype::F32) && !quantized(Dtype::BOOL));
    }
}
