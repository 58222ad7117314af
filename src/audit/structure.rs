//! Structural cross-checks of the tensor set against the config: layers, experts, MTP, tied
//! embeddings, embedding rows, QK-norm shape.

use super::names::{ranges, split_expert, split_layer, ExpertName};
use crate::arch::AuditRules;
use crate::checkpoint::{Checkpoint, ModelConfig, TensorRef};
use crate::findings::{Code, Finding, Severity};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

#[derive(Debug, Clone, Serialize, Default)]
pub struct Structure {
    /// The decoder stack holding the language model's layers, e.g. `model.layers`.
    pub main_stack: Option<String>,
    pub layers_present: usize,
    pub mtp: MtpStatus,
    pub tie_word_embeddings: Option<bool>,
    /// How the tie value was decided: `config`, or a sentence when the key is absent.
    pub tie_source: Option<String>,
    pub lm_head: Option<String>,
    pub embedding: Option<String>,
    /// `per-expert` (one tensor per expert and projection) or `fused` (3-D tensors), when MoE.
    pub expert_layout: Option<&'static str>,
    pub moe_layers_present: usize,
    pub qk_norm: Option<String>,
    /// Other layer stacks (vision towers, MTP blocks) with their layer counts.
    pub other_stacks: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Serialize, Default)]
pub struct MtpStatus {
    pub declared: u64,
    pub present: u64,
    /// `layers` (DeepSeek/GLM: layers after num_hidden_layers) or a prefix such as `mtp.`.
    pub location: Option<String>,
}

/// A layer's per-expert tensors: each (expert, projection) once, sorted by expert then by
/// projection name, the projection as its position in `projs` (the layer's projection names,
/// sorted). Two flat vectors, where a map of one vector per expert made ~15k allocations on
/// DeepSeek-V3.
#[derive(Default)]
struct ExpertSet<'a> {
    pairs: Vec<(u64, u32)>,
    projs: Vec<&'a str>,
}

impl<'a> ExpertSet<'a> {
    fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Each expert's pairs, by expert.
    fn by_expert(&self) -> impl Iterator<Item = &[(u64, u32)]> + '_ {
        self.pairs.chunk_by(|a, b| a.0 == b.0)
    }

    /// The expert ids, ascending.
    fn ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.by_expert().map(|c| c[0].0)
    }

    fn contains(&self, expert: u64) -> bool {
        self.pairs.binary_search_by_key(&expert, |p| p.0).is_ok()
    }

    /// The projections some expert has (each at least one's).
    fn projections(&self) -> &[&'a str] {
        &self.projs
    }

    /// The experts without projection `proj`, ascending.
    fn lacking(&self, proj: &str) -> Vec<u64> {
        let r = self.projs.binary_search(&proj).ok().map(|r| r as u32);
        self.by_expert().filter(|c| r.is_none_or(|r| !c.iter().any(|p| p.1 == r))).map(|c| c[0].0).collect()
    }
}

struct LayerInfo<'a> {
    suffixes: BTreeSet<&'a str>,
    experts: ExpertSet<'a>,
    expert_module: Option<&'a str>,
    fused_experts: Vec<(&'a str, &'a [u64])>,
    tensors: usize,
}

pub fn check(ck: &Checkpoint, cfg: Option<&ModelConfig>, rules: &AuditRules, out: &mut Vec<Finding>) -> Structure {
    let mut st = Structure::default();

    // Group layer tensors by stack and layer. Flat vectors first (tensors of one layer are mostly
    // consecutive, so a one-entry cache skips most lookups), ordered sets built once at the end.
    #[derive(Default)]
    struct Acc<'a> {
        suffixes: Vec<&'a str>,
        /// (expert, projection as its position in `projs`): sorted as integers, not strings.
        experts: Vec<(u64, u32)>,
        /// The layer's distinct expert projections (a handful), in first-seen order.
        projs: Vec<&'a str>,
        expert_module: Option<&'a str>,
        fused: Vec<(&'a str, &'a [u64])>,
        tensors: usize,
    }
    impl<'a> Acc<'a> {
        /// `proj`'s position in `projs`, added when new. Tensors of one expert come in the same
        /// order expert after expert, so the projection after the last one is tried first.
        fn proj_id(&mut self, proj: &'a str, last: &mut usize) -> u32 {
            let n = self.projs.len();
            let next = if *last + 1 < n { *last + 1 } else { 0 };
            let i = if n > 0 && self.projs[next] == proj {
                next
            } else {
                match self.projs.iter().position(|&p| p == proj) {
                    Some(i) => i,
                    None => {
                        self.projs.push(proj);
                        n
                    }
                }
            };
            *last = i;
            i as u32
        }
    }
    let mut slots: rustc_hash::FxHashMap<(&str, u64), usize> = Default::default();
    let mut accs: Vec<((&str, u64), Acc<'_>)> = Vec::new();
    let mut last: Option<((&str, u64), usize)> = None;
    let mut last_proj = 0usize;
    let mut prefix_mtp: BTreeSet<String> = BTreeSet::new();
    let mut lm_head = None;
    let mut embed = None;
    for t in ck.tensors() {
        let name = t.entry.name.as_str();
        if let Some(p) = rules.mtp_prefixes.iter().find(|p| name.starts_with(p.as_str())) {
            prefix_mtp.insert(p.clone());
        }
        let Some(l) = split_layer(name, rules) else {
            // Outside any layer stack: the embedding and the output head live here.
            if !rules.non_text_prefixes.iter().any(|p| name.starts_with(p.as_str())) {
                if lm_head.is_none() && rules.lm_head_suffixes.iter().any(|s| name.ends_with(s.as_str())) {
                    lm_head = Some(t);
                } else if embed.is_none() && rules.embedding_suffixes.iter().any(|s| name.ends_with(s.as_str())) {
                    embed = Some(t);
                }
            }
            continue;
        };
        let key = (l.stack, l.layer);
        let slot = match last {
            Some((k, i)) if k == key => i,
            _ => {
                let i = *slots.entry(key).or_insert_with(|| {
                    accs.push((key, Acc::default()));
                    accs.len() - 1
                });
                last = Some((key, i));
                i
            }
        };
        let acc = &mut accs[slot].1;
        acc.tensors += 1;
        match split_expert(l.rest, rules) {
            Some(ExpertName::PerExpert { module, expert, proj }) => {
                acc.expert_module.get_or_insert(module);
                let id = acc.proj_id(proj, &mut last_proj);
                acc.experts.push((expert, id));
            }
            Some(ExpertName::Fused { module, proj }) => {
                acc.expert_module.get_or_insert(module);
                acc.fused.push((proj, &t.entry.shape));
            }
            None => acc.suffixes.push(l.rest),
        }
    }
    let mut stacks: BTreeMap<&str, BTreeMap<u64, LayerInfo<'_>>> = BTreeMap::new();
    for ((stack, layer), mut a) in accs {
        // Projection ids renumbered in string order: sorting (expert, id) pairs as integers then
        // orders them as (expert, projection name) would, with no string compared.
        let mut by_name: Vec<u32> = (0..a.projs.len() as u32).collect();
        by_name.sort_unstable_by_key(|&i| a.projs[i as usize]);
        let mut rank = vec![0u32; a.projs.len()];
        for (r, &i) in by_name.iter().enumerate() {
            rank[i as usize] = r as u32;
        }
        for x in &mut a.experts {
            x.1 = rank[x.1 as usize];
        }
        a.experts.sort_unstable();
        a.experts.dedup();
        let projs = by_name.iter().map(|&i| a.projs[i as usize]).collect();
        let experts = ExpertSet { pairs: a.experts, projs };
        stacks.entry(stack).or_default().insert(
            layer,
            LayerInfo {
                suffixes: a.suffixes.into_iter().collect(),
                experts,
                expert_module: a.expert_module,
                fused_experts: a.fused,
                tensors: a.tensors,
            },
        );
    }
    let is_text = |stack: &str| {
        let s = format!("{stack}.");
        !rules.non_text_prefixes.iter().any(|p| s.starts_with(p.as_str()))
    };
    let main = stacks
        .iter()
        .filter(|(k, _)| is_text(k) && k.rsplit('.').next() == Some("layers"))
        .max_by_key(|(_, v)| v.values().map(|l| l.tensors).sum::<usize>())
        .or_else(|| stacks.iter().filter(|(k, _)| is_text(k)).max_by_key(|(_, v)| v.len()))
        .map(|(k, _)| *k);
    for (k, v) in &stacks {
        if Some(*k) != main {
            st.other_stacks.insert(k.to_string(), v.len());
        }
    }
    st.main_stack = main.map(str::to_string);
    let layers = main.and_then(|m| stacks.get(m));

    // A layer count beyond any real model is reported, not iterated over.
    let declared_layers = match cfg.and_then(|c| c.num_layers) {
        Some(n) if n > 1 << 16 => {
            out.push(Finding::new(
                Code::ConfigField,
                format!(
                    "config.json: num_hidden_layers = {n} is beyond any real model (limit 65536); layer checks skipped"
                ),
            ));
            None
        }
        n => n,
    };
    let mtp_declared = cfg.map(|c| c.mtp_layers).unwrap_or(0);
    st.mtp.declared = mtp_declared;

    if let (Some(layers), Some(n)) = (layers, declared_layers) {
        let stack = main.unwrap_or_default();
        st.layers_present = layers.keys().filter(|&&i| i < n).count();
        let missing: Vec<u64> = (0..n).filter(|i| !layers.contains_key(i)).collect();
        if !missing.is_empty() {
            out.push(Finding::new(
                Code::LayerMissing,
                format!(
                    "num_hidden_layers is {n} but {stack}.{{{}}} have no tensors ({} of {n} layers missing)",
                    ranges(&missing),
                    missing.len()
                ),
            ));
        }
        // Layers past num_hidden_layers: declared MTP, undeclared MTP, or plain extras.
        let beyond: Vec<u64> = layers.keys().copied().filter(|&i| i >= n).collect();
        let (mtp_range, extra): (Vec<u64>, Vec<u64>) = beyond.iter().partition(|&&i| i < n + mtp_declared);
        if mtp_declared > 0 && prefix_mtp.is_empty() {
            st.mtp.present = mtp_range.len() as u64;
            st.mtp.location = Some(if mtp_declared == 1 {
                format!("{stack}.{n}")
            } else {
                format!("{stack}.{{{n}..{}}}", n + mtp_declared - 1)
            });
        }
        if !extra.is_empty() {
            let looks_mtp = extra.iter().any(|i| {
                layers[i].suffixes.iter().any(|s| rules.mtp_markers.iter().any(|m| s.starts_with(m.as_str())))
            });
            if looks_mtp && mtp_declared == 0 {
                out.push(Finding::new(
                    Code::MtpUndeclared,
                    format!(
                        "{stack}.{{{}}} hold MTP weights ({}) but the config declares no MTP layers (num_nextn_predict_layers is absent or 0)",
                        ranges(&extra),
                        rules.mtp_markers.join("/")
                    ),
                ));
                st.mtp.present = extra.len() as u64;
                st.mtp.location = Some(format!("{stack}.{{{}}}", ranges(&extra)));
            } else {
                out.push(Finding::new(
                    Code::LayerExtra,
                    format!(
                        "{stack}.{{{}}} exist but num_hidden_layers is {n}{}",
                        ranges(&extra),
                        if mtp_declared > 0 {
                            format!(" and MTP covers only {n}..{}", n + mtp_declared - 1)
                        } else {
                            String::new()
                        }
                    ),
                ));
            }
        }
        incomplete_layers(stack, layers, n, cfg, out);
    } else if let Some(layers) = layers {
        st.layers_present = layers.len();
    }

    // Prefix-style MTP (Qwen3-Next `mtp.*`).
    if !prefix_mtp.is_empty() {
        let p = prefix_mtp.iter().next().cloned().unwrap_or_default();
        let mtp_stack_layers =
            stacks.iter().filter(|(k, _)| k.starts_with(p.as_str())).map(|(_, v)| v.len() as u64).max();
        st.mtp.present = mtp_stack_layers.unwrap_or(1).max(1);
        st.mtp.location = Some(format!("{p}*"));
        if mtp_declared == 0 {
            out.push(Finding::new(
                Code::MtpUndeclared,
                format!("tensors under `{p}` are MTP weights but the config declares no MTP layers"),
            ));
        }
    }
    if mtp_declared > 0 && st.mtp.present < mtp_declared {
        let where_ = match (declared_layers, main) {
            (Some(n), Some(m)) if prefix_mtp.is_empty() => {
                let idx: Vec<u64> = (n..n + mtp_declared).collect();
                if idx.len() == 1 {
                    format!("{m}.{n}")
                } else {
                    format!("{m}.{{{}}}", ranges(&idx))
                }
            }
            _ => rules.mtp_prefixes.join(" / "),
        };
        out.push(Finding::new(
            Code::MtpMissing,
            format!(
                "the config declares {mtp_declared} MTP layer(s) but {} found; expected at {where_}",
                if st.mtp.present == 0 { "none are".to_string() } else { format!("only {} are", st.mtp.present) }
            ),
        ));
    }

    // Experts.
    if let Some(layers) = layers {
        experts(main.unwrap_or_default(), layers, declared_layers, cfg, &mut st, out);
    }

    tie_and_embeddings(lm_head, embed, cfg, rules, &mut st, out);
    qk_norm(ck, cfg, rules, main, &mut st, out);
    if let Some(c) = cfg {
        if c.architecture_source == Some("text_config.architectures") {
            out.push(
                Finding::new(
                    Code::ConfigField,
                    "`architectures` is only inside text_config; vLLM reads the top level and may build the wrong class (an embedding model that silently drops lm_head.weight)",
                )
                .file("config.json")
                .hint("Copy `architectures` to the top level of config.json."),
            );
        }
    }
    st
}

/// A suffix that most layers of the same kind have but a minority lacks. Layers are grouped by
/// what the config says makes them differ (MoE vs dense, `layer_types`, `full_attention_interval`),
/// so architectural variety is not mistaken for damage.
fn incomplete_layers(
    stack: &str,
    layers: &BTreeMap<u64, LayerInfo<'_>>,
    n: u64,
    cfg: Option<&ModelConfig>,
    out: &mut Vec<Finding>,
) {
    let moe = cfg.and_then(|c| c.moe.as_ref());
    let kind = |i: u64| -> (bool, String) {
        let is_moe = moe.map(|m| m.is_moe_layer(i)).unwrap_or(false);
        let lt = cfg
            .and_then(|c| c.layer_types.as_ref())
            .and_then(|t| t.get(i as usize).cloned())
            .or_else(|| {
                cfg.and_then(|c| c.full_attention_interval).map(|k| {
                    if (i + 1) % k.max(1) == 0 {
                        "full".into()
                    } else {
                        "linear".into()
                    }
                })
            })
            .unwrap_or_default();
        (is_moe, lt)
    };
    let mut groups: BTreeMap<(bool, String), Vec<(&u64, &LayerInfo<'_>)>> = BTreeMap::new();
    for (i, l) in layers.iter().filter(|(i, _)| **i < n) {
        groups.entry(kind(*i)).or_default().push((i, l));
    }
    for group in groups.values() {
        if group.len() < 3 {
            continue;
        }
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, l) in group {
            for s in &l.suffixes {
                *counts.entry(s).or_default() += 1;
            }
        }
        for (suffix, c) in counts {
            let lacking = group.len() - c;
            if lacking > 0 && lacking * 2 < group.len() {
                let missing: Vec<u64> =
                    group.iter().filter(|(_, l)| !l.suffixes.contains(suffix)).map(|(i, _)| **i).collect();
                out.push(
                    Finding::new(
                        Code::LayerMissing,
                        format!(
                            "{stack}.{{{}}}.{suffix} is missing ({c} of {} such layers have it)",
                            ranges(&missing),
                            group.len()
                        ),
                    )
                    .tensor(format!("{stack}.{}.{suffix}", missing[0])),
                );
            }
        }
    }
}

fn experts(
    stack: &str,
    layers: &BTreeMap<u64, LayerInfo<'_>>,
    n: Option<u64>,
    cfg: Option<&ModelConfig>,
    st: &mut Structure,
    out: &mut Vec<Finding>,
) {
    let moe = cfg.and_then(|c| c.moe.as_ref());
    let with_experts: Vec<u64> =
        layers.iter().filter(|(_, l)| !l.experts.is_empty() || !l.fused_experts.is_empty()).map(|(i, _)| *i).collect();
    st.moe_layers_present = with_experts.iter().filter(|&&i| n.is_none_or(|n| i < n)).count();
    if with_experts.is_empty() {
        if let (Some(m), Some(n)) = (moe, n) {
            let expected: Vec<u64> = (0..n).filter(|&i| m.is_moe_layer(i)).collect();
            if !expected.is_empty() && layers.keys().any(|i| *i < n) {
                out.push(Finding::new(
                    Code::ExpertMissing,
                    format!(
                        "the config declares {} experts ({}) but no layer of {stack} has expert tensors",
                        m.num_experts, m.experts_key
                    ),
                ));
            }
        }
        return;
    }
    let fused = layers.values().any(|l| !l.fused_experts.is_empty());
    st.expert_layout = Some(if fused { "fused" } else { "per-expert" });
    // Projections every expert must have: the union of `.weight` projections over all experts.
    let mut required: BTreeSet<&str> = BTreeSet::new();
    for l in layers.values() {
        required.extend(l.experts.projections().iter().copied().filter(|p| p.ends_with("weight")));
    }
    // An expert count beyond any real model is reported, not iterated over.
    let num_experts = match moe.map(|m| m.num_experts) {
        Some(e) if e > 1 << 16 => {
            out.push(Finding::new(
                Code::ConfigField,
                format!(
                    "config.json: {} = {e} is beyond any real model (limit 65536); expert checks skipped",
                    moe.map_or("num_experts", |m| m.experts_key)
                ),
            ));
            None
        }
        e => e,
    };
    // Where the findings of the spec (MTP) layer just checked start.
    let mut spec_from: Option<usize> = None;
    for (&i, l) in layers {
        demote_spec_layer(out, spec_from.take());
        let is_mtp = n.is_some_and(|n| i >= n);
        if is_mtp {
            spec_from = Some(out.len());
        }
        if let (Some(m), Some(nl)) = (moe, n) {
            if !is_mtp {
                let expected = m.is_moe_layer(i);
                let has = !l.experts.is_empty() || !l.fused_experts.is_empty();
                if expected != has && i < nl {
                    out.push(Finding::new(
                        Code::MoeLayerMismatch,
                        format!(
                            "{stack}.{i} {} experts but the config's placement (first_k_dense_replace={:?}, moe_layer_freq={:?}, decoder_sparse_step={:?}, mlp_only_layers={:?}) says it is {}",
                            if has { "has" } else { "has no" },
                            m.first_k_dense_replace,
                            m.moe_layer_freq,
                            m.decoder_sparse_step,
                            m.mlp_only_layers,
                            if expected { "an MoE layer" } else { "dense" }
                        ),
                    ));
                }
            }
        }
        if l.experts.is_empty() {
            for (proj, shape) in &l.fused_experts {
                if let (Some(e), Some(first)) = (num_experts, shape.first()) {
                    if shape.len() >= 2 && *first != e && proj.ends_with("proj") {
                        out.push(Finding::new(
                            Code::ExpertMissing,
                            format!(
                                "{stack}.{i}.{}.{proj} stacks {first} experts but the config declares {e}",
                                l.expert_module.unwrap_or("experts")
                            ),
                        ));
                    }
                }
            }
            continue;
        }
        let module = l.expert_module.unwrap_or("experts");
        if let Some(e) = num_experts {
            let missing: Vec<u64> = (0..e).filter(|&x| !l.experts.contains(x)).collect();
            if !missing.is_empty() {
                out.push(
                    Finding::new(
                        Code::ExpertMissing,
                        format!(
                            "{stack}.{i}.{module}.{{{}}} are missing ({} of {e} experts)",
                            ranges(&missing),
                            missing.len()
                        ),
                    )
                    .tensor(format!("{stack}.{i}.{module}.{}", missing[0])),
                );
            }
            let extra: Vec<u64> = l.experts.ids().filter(|&x| x >= e).collect();
            if !extra.is_empty() {
                out.push(
                    Finding::new(
                        Code::ExpertMissing,
                        format!(
                            "{stack}.{i}.{module}.{{{}}} exist but the config declares {e} experts",
                            ranges(&extra)
                        ),
                    )
                    .severity(Severity::Warning)
                    .hint("Experts past the declared count are never loaded; check n_routed_experts / num_experts."),
                );
            }
        }
        for proj in &required {
            let lacking = l.experts.lacking(proj);
            if !lacking.is_empty() {
                out.push(
                    Finding::new(
                        Code::ExpertProjectionMissing,
                        format!("{stack}.{i}.{module}.{{{}}}.{proj} is missing", ranges(&lacking)),
                    )
                    .tensor(format!("{stack}.{i}.{module}.{}.{proj}", lacking[0])),
                );
            }
        }
    }
    demote_spec_layer(out, spec_from);
}

/// A spec (MTP) layer is loaded by the draft model only, with speculative decoding on
/// (deepseek_mtp.py: DeepSeekMTP.load_weights): what it lacks breaks the draft, not the model, so
/// its errors from `from` on are warnings.
fn demote_spec_layer(out: &mut [Finding], from: Option<usize>) {
    let Some(from) = from else { return };
    for f in out.iter_mut().skip(from).filter(|f| f.severity == Severity::Error) {
        f.severity = Severity::Warning;
        f.message.push_str(" (an MTP layer: only the draft model loads it, with --speculative-config)");
    }
}

fn tie_and_embeddings(
    lm_head: Option<TensorRef<'_>>,
    embed: Option<TensorRef<'_>>,
    cfg: Option<&ModelConfig>,
    rules: &AuditRules,
    st: &mut Structure,
    out: &mut Vec<Finding>,
) {
    st.lm_head = lm_head.map(|t| t.entry.name.clone());
    st.embedding = embed.map(|t| t.entry.name.clone());
    let Some(cfg) = cfg else { return };

    let (tie, source) = match cfg.tie_word_embeddings {
        Some(b) => (b, "config".to_string()),
        None => {
            let (default, whose) = match rules.tie_default(&[cfg.text_model_type.as_deref(), cfg.model_type.as_deref()])
            {
                (d, Some(mt)) => (d, format!("transformers' default for model_type {mt}")),
                (d, None) => (d, "PretrainedConfig's default (model_type unknown to ckptpilot)".to_string()),
            };
            let how = format!(
                "absent from config.json; {whose} is {default}; the checkpoint {} lm_head.weight",
                if lm_head.is_some() { "has" } else { "has no" }
            );
            out.push(
                Finding::new(Code::TieResolved, format!("tie_word_embeddings {how} → resolved {default}"))
                    .file("config.json"),
            );
            (default, how)
        }
    };
    st.tie_word_embeddings = Some(tie);
    st.tie_source = Some(source);
    match (tie, lm_head) {
        (true, Some(h)) => {
            let same = embed.is_some_and(|e| e.entry.shape == h.entry.shape);
            out.push(
                Finding::new(
                    Code::LmHeadIgnoredTied,
                    format!(
                        "embeddings are tied, so vLLM skips {} ({}); {}",
                        h.entry.name,
                        h.shard.name,
                        if same { "it must equal the embedding" } else { "its shape differs from the embedding" }
                    ),
                )
                .file(h.shard.name.clone())
                .tensor(h.entry.name.clone()),
            );
        }
        (false, None) if embed.is_some() => {
            out.push(Finding::new(
                Code::LmHeadMissing,
                "tie_word_embeddings is false but no shard holds lm_head.weight".to_string(),
            ));
        }
        _ => {}
    }
    if let Some(vocab) = cfg.vocab_size {
        for t in [embed, if tie { None } else { lm_head }].into_iter().flatten() {
            if let Some(&rows) = t.entry.shape.first() {
                if rows != vocab {
                    out.push(
                        Finding::new(
                            Code::EmbeddingRowsMismatch,
                            format!("{} has {rows} rows but vocab_size is {vocab}", t.entry.name),
                        )
                        .file(t.shard.name.clone())
                        .tensor(t.entry.name.clone()),
                    );
                }
            }
        }
    }
}

fn qk_norm(
    ck: &Checkpoint,
    cfg: Option<&ModelConfig>,
    rules: &AuditRules,
    main: Option<&str>,
    st: &mut Structure,
    out: &mut Vec<Finding>,
) {
    let (Some(cfg), Some(main)) = (cfg, main) else { return };
    let Some(hd) = cfg.head_dim else { return };
    let find = |suffixes: &[String]| suffixes.iter().find_map(|s| ck.get(&format!("{main}.0.{s}")));
    let (Some(q), Some(k)) = (find(&rules.q_norm_suffixes), find(&rules.k_norm_suffixes)) else { return };
    let (qs, ks) = (q.entry.shape.first().copied(), k.entry.shape.first().copied());
    let heads = cfg.num_heads.unwrap_or(0);
    let kv = cfg.num_kv_heads.unwrap_or(heads);
    let desc = match (qs, ks) {
        (Some(a), Some(b)) if a == hd && b == hd => format!("per-head: q_norm and k_norm are [{hd}] (head_dim); they need no TP sharding"),
        (Some(a), Some(b)) if a == heads * hd && b == kv * hd => format!(
            "full-width: q_norm [{a}] = {heads} heads x {hd}, k_norm [{b}] = {kv} KV heads x {hd}; they shard with the heads under TP (check `ckptpilot plan`)"
        ),
        _ => {
            out.push(
                Finding::new(
                    Code::QkNormShape,
                    format!(
                        "q_norm {:?} / k_norm {:?} match neither head_dim {hd} nor heads x head_dim ({}/{})",
                        q.entry.shape,
                        k.entry.shape,
                        heads * hd,
                        kv * hd
                    ),
                )
                .severity(Severity::Warning)
                .tensor(q.entry.name.clone()),
            );
            st.qk_norm = Some("unrecognised".into());
            return;
        }
    };
    out.push(Finding::new(Code::QkNormShape, desc.clone()).tensor(q.entry.name.clone()));
    st.qk_norm = Some(if desc.starts_with("per-head") { "per-head".into() } else { "full-width".into() });
}

#[cfg(test)]
mod tests {
    use super::ExpertSet;
    use std::collections::BTreeMap;

    /// The flat set answers as the map of expert → sorted projections it replaced.
    #[test]
    fn expert_set_as_a_map() {
        let names = ["up_proj.weight", "down_proj.weight", "gate_proj.weight", "down_proj.weight_scale_inv"];
        // Expert e has projection p when (e * 7 + p) % 5 != 0, for experts 0..12 with gaps.
        let mut map: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
        let mut pairs = Vec::new();
        let mut projs: Vec<&str> = names.to_vec();
        projs.sort_unstable();
        for e in [0u64, 1, 2, 3, 5, 8, 9, 11] {
            for (p, name) in names.iter().enumerate() {
                if (e * 7 + p as u64) % 5 != 0 {
                    map.entry(e).or_default().push(name);
                    pairs.push((e, projs.binary_search(name).unwrap() as u32));
                }
            }
        }
        for v in map.values_mut() {
            v.sort_unstable();
        }
        pairs.sort_unstable();
        let set = ExpertSet { pairs, projs: projs.clone() };
        assert!(!set.is_empty() && ExpertSet::default().is_empty());
        assert_eq!(set.ids().collect::<Vec<_>>(), map.keys().copied().collect::<Vec<_>>());
        for x in 0..14 {
            assert_eq!(set.contains(x), map.contains_key(&x), "{x}");
        }
        for proj in names.iter().chain(&["absent.weight"]) {
            let want: Vec<u64> = map.iter().filter(|(_, p)| p.binary_search(proj).is_err()).map(|(x, _)| *x).collect();
            assert_eq!(set.lacking(proj), want, "{proj}");
        }
        let mut used: Vec<&str> = map.values().flatten().copied().collect();
        used.sort_unstable();
        used.dedup();
        assert_eq!(set.projections(), used.as_slice());
    }
}
