//! Which known family explains a checkpoint best, and exactly how it differs from it (issue 24):
//! `ckptpilot match`, and `audit`'s note when the architecture has no family of its own.
//!
//! Each family is tried with the remap it would do ([`crate::remap::remap_with`]): the share of
//! tensors it routes (to a parameter, or to a skip it names), the share of its parameters the
//! checkpoint fills, and the share of routed tensors whose shapes match what the family expects
//! from the config. The difference against a family lists the tensor patterns no rule explains,
//! the parameters left empty, the shapes that differ, the config keys the family reads that the
//! config lacks, and — where the difference is only naming — the renames that make the family fit,
//! verified by remapping again with them.

use crate::arch::rules::{Family, RuleSet};
use crate::checkpoint::names::pattern;
use crate::checkpoint::Checkpoint;
use crate::model::expected::Vars;
use crate::remap::{remap_with, Action, RemapOptions, RemapReport};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet, HashMap};

pub const SCHEMA: &str = "ckptpilot.match/1";

/// How well one family explains the checkpoint.
#[derive(Debug, Clone, Serialize)]
pub struct Candidate {
    pub family: String,
    /// The vLLM class the family mirrors.
    pub vllm_class: String,
    /// (routed tensors of the expected shape ÷ tensors) × (parameters filled so ÷ parameters),
    /// × 0.98 per rename it needs: in [0, 1].
    pub score: f64,
    pub tensors: usize,
    /// Tensors a rule routes to a parameter or skips on purpose.
    pub routed: usize,
    /// Parameters the family builds that must be filled, and how many the checkpoint fills.
    pub params: usize,
    pub filled: usize,
    /// Routed tensors whose shape differs from what the family expects from the config.
    pub shape_mismatches: usize,
    /// The family lists the config's model type.
    pub model_type_match: bool,
    /// The family lists the config's architecture (it is the family vLLM would use).
    pub architecture_match: bool,
    /// The family's parameter rules (ties go to the simpler family).
    #[serde(skip)]
    pub rule_count: usize,
    /// The figures are with these renames applied (the difference is partly naming).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub renames: Vec<Rename>,
}

/// A pattern (digits as `*`) with how many names share it and one of them.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PatternCount {
    pub pattern: String,
    pub count: usize,
    pub example: String,
}

/// Where a rename applies (the WeightsMapper list it joins).
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum RenameKind {
    /// The start of the name.
    Prefix,
    /// One segment inside the name.
    Substr,
}

impl std::fmt::Display for RenameKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RenameKind::Prefix => "prefix",
            RenameKind::Substr => "substr",
        })
    }
}

/// A rename that would make unexplained tensors reach the family's empty parameters.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Rename {
    pub kind: RenameKind,
    pub from: String,
    pub to: String,
    /// Unexplained tensors it sends to an empty parameter.
    pub tensors: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShapeDifference {
    pub pattern: String,
    pub count: usize,
    pub example: String,
    pub checkpoint: Vec<u64>,
    pub expected: Vec<u64>,
}

/// The renames applied to the family, as a rule file `--rules` accepts, and what the remap says
/// with it.
#[derive(Debug, Clone, Serialize)]
pub struct DerivedRules {
    pub rules: serde_json::Value,
    /// After the renames: tensors still unexplained and parameters still empty.
    pub unexplained_after: usize,
    pub unfilled_after: usize,
    pub shape_mismatches_after: usize,
}

/// Exactly what separates the checkpoint from one family.
#[derive(Debug, Clone, Serialize)]
pub struct Difference {
    pub family: String,
    pub unexplained: Vec<PatternCount>,
    pub unfilled: Vec<PatternCount>,
    pub renames: Vec<Rename>,
    pub shape_differences: Vec<ShapeDifference>,
    /// Config keys the family's rules read that this config does not define.
    pub config_keys_missing: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub derived: Option<DerivedRules>,
}

#[derive(Debug, Clone, Serialize)]
pub struct MatchReport {
    pub schema: &'static str,
    pub vllm_reference: &'static str,
    pub model: String,
    pub architecture: Option<String>,
    pub model_type: Option<String>,
    /// How vLLM 0.33 itself resolves the architecture (registered class, Transformers backend, or
    /// its refusal).
    pub vllm: String,
    /// Every family, best first.
    pub candidates: Vec<Candidate>,
    /// Against the best candidate.
    pub difference: Option<Difference>,
}

fn opts() -> RemapOptions {
    RemapOptions { tp: 1, ep: false, target: crate::target::Target::Vllm, rows: true }
}

/// Parameters (by name) the remap expects to be filled, and those some row fills with the shape
/// the family expects (a tensor of another shape explains nothing).
/// A stacked parameter counts as filled only when every shard it lists is (a fused gate_up whose gate
/// is missing is not filled by its up).
fn fill_sets(r: &RemapReport) -> (BTreeSet<&str>, BTreeSet<&str>) {
    let expected: BTreeSet<&str> = r.params.iter().filter(|p| !p.optional).map(|p| p.name.as_str()).collect();
    let mut shards: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for row in r.rows.iter().filter(|row| row.expected_shape.is_none()) {
        if let Some(p) = row.param.as_deref() {
            let key = match &row.shard_id {
                None => String::new(),
                Some(serde_json::Value::String(s)) => s.clone(),
                Some(v) => v.to_string(),
            };
            shards.entry(p).or_default().insert(key);
        }
    }
    let filled: BTreeSet<&str> = r
        .params
        .iter()
        .filter(|p| shards.get(p.name.as_str()).is_some_and(|seen| p.shards.iter().all(|k| seen.contains(k))))
        .map(|p| p.name.as_str())
        .collect();
    (expected, filled)
}

fn candidate(ck: &Checkpoint, f: &Family, model_types: &[&str]) -> (Candidate, RemapReport) {
    let r = remap_with(ck, "", f, "inferred", None, &opts());
    let tensors = r.rows.len();
    let routed = r.rows.iter().filter(|row| row.action != Action::Unmapped).count();
    let (expected, filled) = fill_sets(&r);
    let filled_n = expected.iter().filter(|p| filled.contains(*p)).count();
    let shape_mismatches = r.rows.iter().filter(|row| row.expected_shape.is_some()).count();
    let share = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
    // A routed tensor of the wrong shape is not explained.
    let score = share(routed - shape_mismatches, tensors)
        * (if expected.is_empty() { 0.0 } else { share(filled_n, expected.len()) });
    let c = Candidate {
        family: f.family.clone(),
        vllm_class: f.class.clone(),
        score,
        tensors,
        routed,
        params: expected.len(),
        filled: filled_n,
        shape_mismatches,
        model_type_match: model_types.iter().any(|t| f.model_types.iter().any(|m| m == t)),
        architecture_match: ck
            .config
            .as_ref()
            .is_some_and(|c| c.architectures.iter().any(|a| f.architectures.iter().any(|x| x == a))),
        rule_count: f.params.len() + usize::from(f.architectures.is_empty()) * 10_000,
        renames: Vec::new(),
    };
    (c, r)
}

/// The score kept per rename a family needs to explain the checkpoint.
const RENAME_PENALTY: f64 = 0.98;

/// The renames a remap's unexplained rows and empty parameters suggest.
fn suggested(r: &RemapReport) -> Vec<Rename> {
    let (expected, filled) = fill_sets(r);
    let unfilled: BTreeSet<&str> = expected.iter().copied().filter(|p| !filled.contains(p)).collect();
    let routed_to: Vec<&str> = r
        .rows
        .iter()
        .filter(|row| row.action == Action::Unmapped)
        .map(|row| row.routed_to.as_deref().unwrap_or(&row.checkpoint_name))
        .collect();
    renames(&routed_to, &unfilled)
}

/// `f` scored as is, and with the renames its difference suggests when they explain more: a
/// family that differs only in names is the closest one.
fn best_candidate(ck: &Checkpoint, f: &Family, model_types: &[&str]) -> Candidate {
    let (c, r) = candidate(ck, f, model_types);
    let renames = suggested(&r);
    if renames.is_empty() {
        return c;
    }
    let g = renamed(ck, f, &renames);
    let (mut c2, _) = candidate(ck, &g, model_types);
    // Each rename is a guess about names: a family that needs fewer explains the checkpoint better.
    c2.score *= RENAME_PENALTY.powi(renames.len() as i32);
    if c2.score > c.score {
        c2.family = c.family;
        c2.vllm_class = c.vllm_class;
        c2.model_type_match = c.model_type_match;
        c2.architecture_match = c.architecture_match;
        c2.rule_count = c.rule_count;
        c2.renames = renames;
        c2
    } else {
        c
    }
}

/// Every family, best first: by score; among equals (within 1% of the best), the one listing the config's architecture,
/// then its model type, then the fewest parameters left empty, then the simplest (fewest parameter
/// rules; the generic decoder last), then by name.
pub fn rank(ck: &Checkpoint, rules: &RuleSet) -> Vec<Candidate> {
    let cfg = ck.config.as_ref();
    let types: Vec<&str> = [cfg.and_then(|c| c.text_model_type.as_deref()), cfg.and_then(|c| c.model_type.as_deref())]
        .into_iter()
        .flatten()
        .collect();
    let families = shortlist(ck, rules, &types);
    let mut out: Vec<Candidate> = families.into_iter().map(|f| best_candidate(ck, f, &types)).collect();
    let ties = |a: &Candidate, b: &Candidate| {
        b.architecture_match
            .cmp(&a.architecture_match)
            .then(b.model_type_match.cmp(&a.model_type_match))
            .then((a.params - a.filled).cmp(&(b.params - b.filled)))
            .then(a.renames.len().cmp(&b.renames.len()))
            .then(a.rule_count.cmp(&b.rule_count))
            .then(a.family.cmp(&b.family))
    };
    out.sort_by(|a, b| b.score.partial_cmp(&a.score).unwrap_or(std::cmp::Ordering::Equal).then(ties(a, b)));
    // Within TIE_TOLERANCE of the best, the scores say nothing more (a family with one more
    // parameter loses less to the same missing tensor): the tie-breaks decide the first place.
    let best = out.first().map_or(0.0, |c| c.score);
    let top = out.iter().take_while(|c| c.score >= best - TIE_TOLERANCE).count();
    out[..top].sort_by(ties);
    out
}

/// Checkpoints up to this many tensors are scored against every family; larger ones (a full remap
/// per family costs ~0.2 s at 90k tensors) against a shortlist.
const FULL_RANK_TENSORS: usize = 5_000;
/// How many families the shortlist keeps (besides those naming the architecture or model type).
const SHORTLIST: usize = 8;

/// The families worth a full remap. Small checkpoints: all. Large ones: those naming the
/// architecture or the model type, and the best [`SHORTLIST`] by the share of tensor-name patterns
/// (digits as `*`, one representative each) whose routed name has the pattern of one of the
/// family's parameter rules (`{L}` as `*`) or that the family skips or loads into a buffer.
fn shortlist<'r>(ck: &Checkpoint, rules: &'r RuleSet, types: &[&str]) -> Vec<&'r Family> {
    if ck.tensor_count() <= FULL_RANK_TENSORS {
        return rules.families.iter().collect();
    }
    let scored = pattern_scores(ck, rules, types);
    let named = scored.iter().filter(|s| s.1).count();
    scored.into_iter().take(named + SHORTLIST).map(|s| s.2).collect()
}

/// Whether the checkpoint is small enough for [`rank`] to try every family (audit's note then
/// comes from the full ranking, else from [`pattern_scores`]).
pub fn fully_ranked(ck: &Checkpoint) -> bool {
    ck.tensor_count() <= FULL_RANK_TENSORS
}

/// Every family with the share of the checkpoint's name patterns it routes (see [`shortlist`])
/// and whether it names the architecture or model type; named first, then best share.
pub fn pattern_scores<'r>(ck: &Checkpoint, rules: &'r RuleSet, types: &[&str]) -> Vec<(f64, bool, &'r Family)> {
    let cfg = ck.config.clone().unwrap_or_default();
    let vars = Vars::new(&cfg, ck.config_json.as_ref());
    let mut reps: BTreeMap<String, &str> = BTreeMap::new();
    // (quantization companions are parameters the scheme adds, not the family's rules)
    for t in ck.tensors().filter(|t| !t.entry.name.rsplit('.').next().unwrap_or("").contains("scale")) {
        reps.entry(pattern(&t.entry.name)).or_insert(t.entry.name.as_str());
    }
    let placeholder = |n: &str| -> String {
        let mut out = String::with_capacity(n.len());
        let mut inside = false;
        for ch in n.chars() {
            match ch {
                '{' => {
                    inside = true;
                    out.push('*');
                }
                '}' => inside = false,
                _ if inside => {}
                _ => out.push(ch),
            }
        }
        pattern(&out)
    };
    let arch = cfg.architecture.clone().unwrap_or_default();
    let mut scored: Vec<(f64, bool, &Family)> = rules
        .families
        .iter()
        .map(|f| {
            let expected: std::collections::HashSet<String> = f.params.iter().map(|p| placeholder(&p.name)).collect();
            let hit = reps
                .values()
                .filter(|n| match crate::remap::route(f, &vars, n) {
                    crate::remap::Route::Param { name, .. } => expected.contains(&pattern(&name)),
                    _ => true,
                })
                .count();
            let named = f.architectures.contains(&arch) || types.iter().any(|t| f.model_types.iter().any(|m| m == t));
            (hit as f64 / reps.len().max(1) as f64, named, f)
        })
        .collect();
    scored.sort_by(|a, b| b.1.cmp(&a.1).then(b.0.partial_cmp(&a.0).unwrap_or(std::cmp::Ordering::Equal)));
    scored
}

/// Scores this close to the best count as a tie for the first place.
const TIE_TOLERANCE: f64 = 0.01;

fn count_patterns<'a>(names: impl Iterator<Item = &'a str>) -> Vec<PatternCount> {
    let mut m: BTreeMap<String, (usize, &str)> = BTreeMap::new();
    for n in names {
        let e = m.entry(pattern(n)).or_insert((0, n));
        e.0 += 1;
    }
    m.into_iter()
        .map(|(pattern, (count, example))| PatternCount { pattern, count, example: example.to_string() })
        .collect()
}

/// Renames (in parameter space) that send unexplained names to empty parameters: the differing
/// leading segments where the rest is equal (`transformer.` → `model.`), or one differing segment
/// inside (`.attention.` → `.self_attn.`). Most tensors first.
fn renames(unexplained: &[&str], unfilled: &BTreeSet<&str>) -> Vec<Rename> {
    // Every proper suffix (on segment boundaries) of every empty parameter → its prefix.
    let mut by_suffix: HashMap<&str, &str> = HashMap::new();
    for u in unfilled {
        for (i, _) in u.match_indices('.') {
            by_suffix.entry(&u[i + 1..]).or_insert(&u[..i + 1]);
        }
    }
    let mut votes: BTreeMap<(RenameKind, String, String), usize> = BTreeMap::new();
    for r in unexplained {
        // The longest common suffix first.
        // (at least two segments in common: a bare `weight` says nothing)
        let found = r
            .match_indices('.')
            .filter(|(i, _)| r[i + 1..].contains('.'))
            .find_map(|(i, _)| by_suffix.get(&r[i + 1..]).map(|to| (&r[..i + 1], *to)));
        if let Some((from, to)) = found {
            if from != to {
                *votes.entry((RenameKind::Prefix, from.to_string(), to.to_string())).or_default() += 1;
                continue;
            }
        }
        // One segment differs.
        let segs: Vec<&str> = r.split('.').collect();
        let mut hit = None;
        for u in unfilled.iter().filter(|u| u.matches('.').count() == segs.len() - 1) {
            let us: Vec<&str> = u.split('.').collect();
            let diff: Vec<usize> = (0..segs.len()).filter(|&i| segs[i] != us[i]).collect();
            if let [i] = diff[..] {
                if !segs[i].bytes().all(|b| b.is_ascii_digit()) {
                    hit = Some((format!(".{}.", segs[i]), format!(".{}.", us[i])));
                    break;
                }
            }
        }
        if let Some((from, to)) = hit {
            *votes.entry((RenameKind::Substr, from, to)).or_default() += 1;
        }
    }
    let mut out: Vec<Rename> =
        votes.into_iter().map(|((kind, from, to), tensors)| Rename { kind, from, to, tensors }).collect();
    out.sort_by(|a, b| b.tensors.cmp(&a.tensors).then(a.from.cmp(&b.from)));
    out
}

/// Config keys `f`'s rules read that the config does not define.
fn missing_keys(ck: &Checkpoint, f: &Family) -> Vec<String> {
    let cfg = ck.config.clone().unwrap_or_default();
    let vars = Vars::new(&cfg, ck.config_json.as_ref());
    let mut exprs: Vec<&str> = Vec::new();
    // A parameter's sizes, where its condition holds here (a `when` over an absent key is the
    // family saying the parameter does not exist, not a key the config lacks).
    for p in f.params.iter().filter(|p| vars.truthy(&p.when)) {
        exprs.extend(p.shape.iter().flatten().map(String::as_str));
        exprs.extend(p.shards.values().flatten().map(String::as_str));
        exprs.extend(p.experts.as_deref());
        exprs.extend(p.heads.as_deref());
        exprs.extend(p.repeat.values().map(String::as_str).filter(|v| !crate::model::expected::LAYER_SETS.contains(v)));
    }
    let mut keys = Vec::new();
    for e in exprs {
        if let Ok(x) = crate::arch::expr::Expr::parse(e) {
            x.vars(&mut keys);
        }
    }
    let mut out: Vec<String> = keys
        .into_iter()
        .filter(|k| vars.get(k).is_none() && vars.lookup(k).is_none())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    out.retain(|k| k != "tie_word_embeddings");
    out
}

/// The difference between the checkpoint and family `f`, with renames derived and verified.
pub fn difference(ck: &Checkpoint, f: &Family) -> Difference {
    let (_, r) = candidate(ck, f, &[]);
    let (expected, filled) = fill_sets(&r);
    let unfilled: BTreeSet<&str> = expected.iter().copied().filter(|p| !filled.contains(p)).collect();
    let unexplained_rows: Vec<&crate::remap::Row> =
        r.rows.iter().filter(|row| row.action == Action::Unmapped).collect();
    // In parameter space: what the family's own renames and stacking made of each name.
    let renames = suggested(&r);
    let mut shapes: BTreeMap<String, ShapeDifference> = BTreeMap::new();
    for row in &r.rows {
        if let Some(want) = &row.expected_shape {
            let e = shapes.entry(pattern(&row.checkpoint_name)).or_insert_with(|| ShapeDifference {
                pattern: pattern(&row.checkpoint_name),
                count: 0,
                example: row.checkpoint_name.clone(),
                checkpoint: row.shape.to_vec(),
                expected: want.to_vec(),
            });
            e.count += 1;
        }
    }
    let (renames, derived) = best_renames(ck, f, &r, renames);
    Difference {
        family: f.family.clone(),
        unexplained: count_patterns(unexplained_rows.iter().map(|row| row.checkpoint_name.as_str())),
        unfilled: count_patterns(unfilled.iter().copied()),
        renames,
        shape_differences: shapes.into_values().collect(),
        config_keys_missing: missing_keys(ck, f),
        derived,
    }
}

/// The renames that explain the most, with their verification: those derived in parameter space,
/// or — where they leave tensors unexplained — one checkpoint-space rename of the unexplained names'
/// leading segment to a leading segment the family's own mapper reads (`acmenet.` → `model.`, after
/// which the mapper's `model.multi_modal_projector.linear_1.` → `audio_tower.proj1.` applies: a
/// rename whose target no parameter name shares).
fn best_renames(
    ck: &Checkpoint,
    f: &Family,
    r: &crate::remap::RemapReport,
    renames: Vec<Rename>,
) -> (Vec<Rename>, Option<DerivedRules>) {
    let derived = (!renames.is_empty()).then(|| derive(ck, f, &renames));
    let left = |d: &DerivedRules| d.unexplained_after + d.unfilled_after + d.shape_mismatches_after;
    if derived.as_ref().is_some_and(|d| left(d) == 0) {
        return (renames, derived);
    }
    let lead = |n: &str| n.split_once('.').map(|(a, _)| format!("{a}."));
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for row in r.rows.iter().filter(|row| row.action == Action::Unmapped) {
        if let Some(l) = lead(&row.checkpoint_name) {
            *counts.entry(l).or_default() += 1;
        }
    }
    let Some((from, tensors)) = counts.into_iter().max_by_key(|(_, n)| *n) else { return (renames, derived) };
    let targets: BTreeSet<String> = f.mapper.prefix.iter().filter_map(|(src, _)| lead(src)).collect();
    let mut best = (renames, derived);
    for to in targets.into_iter().filter(|t| *t != from) {
        let cand = vec![Rename { kind: RenameKind::Prefix, from: from.clone(), to, tensors }];
        let d = derive(ck, f, &cand);
        if best.1.as_ref().is_none_or(|b| left(&d) < left(b)) {
            best = (cand, Some(d));
        }
    }
    best
}

/// `f` with `renames` applied first (a rename's output is a parameter-space name), under the
/// checkpoint's architecture, and the remap it gives.
fn derive(ck: &Checkpoint, f: &Family, renames: &[Rename]) -> DerivedRules {
    let g = renamed(ck, f, renames);
    let after = remap_with(ck, "", &g, "architecture", None, &opts());
    let (expected, filled) = fill_sets(&after);
    DerivedRules {
        rules: serde_json::to_value(&g).unwrap_or(serde_json::Value::Null),
        unexplained_after: after.rows.iter().filter(|row| row.action == Action::Unmapped).count(),
        unfilled_after: expected.iter().filter(|p| !filled.contains(*p)).count(),
        shape_mismatches_after: after.rows.iter().filter(|row| row.expected_shape.is_some()).count(),
    }
}

/// `f` under the checkpoint's architecture with `renames` applied before its own mapper.
fn renamed(ck: &Checkpoint, f: &Family, renames: &[Rename]) -> Family {
    let mut g = f.clone();
    let arch = ck.config.as_ref().and_then(|c| c.architecture.clone()).unwrap_or_else(|| "UnknownForCausalLM".into());
    g.family = format!("{}_from_{}", arch.to_lowercase(), f.family);
    g.architectures = vec![arch.clone()];
    if let Some(mt) = ck.config.as_ref().and_then(|c| c.model_type.clone()) {
        g.model_types = vec![mt];
    }
    g.vllm_classes.clear();
    g.verified = format!(
        "derived by `ckptpilot match` from family `{}` ({}): renames only; check with the vLLM oracle",
        f.family, f.verified
    );
    let mut prefix: Vec<(String, Option<String>)> = Vec::new();
    let mut substr: Vec<(String, Option<String>)> = Vec::new();
    for r in renames {
        match r.kind {
            RenameKind::Prefix => prefix.push((r.from.clone(), Some(r.to.clone()))),
            RenameKind::Substr => substr.push((r.from.clone(), Some(r.to.clone()))),
        }
    }
    prefix.append(&mut g.mapper.prefix);
    substr.append(&mut g.mapper.substr);
    g.mapper.prefix = prefix;
    g.mapper.substr = substr;
    g
}

/// Rank every family for the checkpoint and compare it with the best.
pub fn match_checkpoint(ck: &Checkpoint, model: &str, rules: &RuleSet) -> MatchReport {
    let candidates = rank(ck, rules);
    let difference = candidates
        .first()
        .and_then(|c| rules.families.iter().find(|f| f.family == c.family))
        .map(|f| difference(ck, f));
    let cfg = ck.config.as_ref();
    let vllm = match cfg {
        Some(c) => crate::arch::registry::serving(&c.architectures, c.model_type.as_deref(), c.remote_config).summary(),
        None => "no config.json".into(),
    };
    MatchReport {
        schema: SCHEMA,
        vllm_reference: crate::target::VLLM_REFERENCE,
        model: model.to_string(),
        architecture: cfg.and_then(|c| c.architecture.clone()),
        model_type: cfg.and_then(|c| c.model_type.clone()),
        vllm,
        candidates,
        difference,
    }
}

/// `remap` for any checkpoint: with the family that names its architecture, else with the closest
/// family by [`rank`] (its score is the confidence the report states).
pub fn remap_closest(ck: &Checkpoint, model: &str, rules: &RuleSet, opts: &RemapOptions) -> RemapReport {
    let arch = ck.config.as_ref().and_then(|c| c.architecture.as_deref());
    if let Some(f) = arch.and_then(|a| rules.for_architecture(a)) {
        return remap_with(ck, model, f, "architecture", None, opts);
    }
    let best = rank(ck, rules).into_iter().next();
    match best.as_ref().and_then(|b| rules.families.iter().find(|f| f.family == b.family).map(|f| (f, b.score))) {
        Some((f, score)) => remap_with(ck, model, f, "inferred", Some(score), opts),
        None => crate::remap::remap(ck, model, rules, opts),
    }
}

/// For a checkpoint whose architecture no family names: the closest family (or `like`) made its own — under the
/// checkpoint's architecture and model type, with the renames that make it fit applied first, and
/// vLLM's class of the base family as the class to subclass — with the base family and its score.
/// None when the architecture has a family, or nothing explains any of it.
pub fn adapted_family(ck: &Checkpoint, rules: &RuleSet, like: Option<&str>) -> Option<(Family, Candidate)> {
    let cfg = ck.config.as_ref()?;
    let arch = cfg.architecture.as_deref()?;
    if rules.for_architecture(arch).is_some() {
        return None;
    }
    let best = match like {
        Some(name) => {
            let f = rules.families.iter().find(|f| f.family == name)?;
            let types: Vec<&str> = cfg.model_type.as_deref().into_iter().collect();
            best_candidate(ck, f, &types)
        }
        None => rank(ck, rules).into_iter().next().filter(|b| b.score > 0.0)?,
    };
    let base = rules.families.iter().find(|f| f.family == best.family)?;
    // The class vLLM serves the base family's own architecture with.
    let class = base
        .architectures
        .iter()
        .find_map(|a| base.vllm_classes.get(a))
        .or_else(|| base.vllm_classes.values().next())
        .cloned();
    let mut g = renamed(ck, base, &best.renames);
    g.vllm_classes = class.map(|c| [(arch.to_string(), c)].into_iter().collect()).unwrap_or_default();
    g.verified = String::new();
    g.vllm_source = format!(
        "adapted from family `{}` ({}) by `ckptpilot match`: {:.0}% match{}",
        base.family,
        base.vllm_source,
        best.score * 100.0,
        if best.renames.is_empty() { String::new() } else { format!(", {} rename(s)", best.renames.len()) }
    );
    Some((g, best))
}
