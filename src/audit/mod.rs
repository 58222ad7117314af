//! `ckptpilot audit`: everything a vLLM bring-up needs to know about a checkpoint, from headers alone.

pub use crate::checkpoint::names;
pub mod structure;
pub mod tree;

use crate::arch::audit_rules;
use crate::arch::rules::RuleSet;
use crate::checkpoint::{Checkpoint, ModelConfig};
use crate::findings::{Finding, Tally};
use crate::quant::{pair_fp8, Pairing, QuantScheme};
use serde::Serialize;
use std::collections::BTreeMap;

/// The version of the `--json` schema. Bump on any incompatible change.
pub const SCHEMA: &str = "ckptpilot.audit/1";
/// The vLLM release whose loading rules ckptpilot reproduces.
pub use crate::target::VLLM_REFERENCE;

#[derive(Debug, Serialize)]
pub struct ToolInfo {
    pub name: &'static str,
    pub version: &'static str,
    pub vllm_reference: &'static str,
    /// The serving stack the report is for (`--target`).
    pub target: &'static str,
}

impl ToolInfo {
    pub fn current() -> Self {
        ToolInfo {
            name: "ckptpilot",
            version: env!("CARGO_PKG_VERSION"),
            vllm_reference: VLLM_REFERENCE,
            target: crate::target::Target::default().as_str(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct SourceInfo {
    pub input: String,
    pub root: String,
    pub hf_repo: Option<String>,
    pub single_file: Option<String>,
    /// Present when the checkpoint was read from the Hub (headers only): repo, revision, commit,
    /// endpoint, and the requests and bytes it took. `root` is then the local cache of its small files.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub remote: Option<crate::hub::Remote>,
}

#[derive(Debug, Serialize)]
pub struct ShardSummary {
    pub file: String,
    pub tensors: usize,
    /// Tensor data bytes.
    pub bytes: u64,
    pub file_bytes: u64,
}

#[derive(Debug, Serialize)]
pub struct ModelSummary {
    pub architecture: Option<String>,
    pub architecture_source: Option<&'static str>,
    pub model_type: Option<String>,
    pub num_layers: Option<u64>,
    pub layers_present: usize,
    pub num_heads: Option<u64>,
    pub num_kv_heads: Option<u64>,
    pub head_dim: Option<u64>,
    pub head_dim_derived: bool,
    pub hidden_size: Option<u64>,
    pub intermediate_size: Option<u64>,
    pub vocab_size: Option<u64>,
    pub tie_word_embeddings: Option<bool>,
    pub tie_source: Option<String>,
    /// Routed experts; null when dense.
    pub num_experts: Option<u64>,
    pub moe: Option<crate::checkpoint::config::MoeConfig>,
    pub expert_layout: Option<&'static str>,
    pub moe_layers_present: usize,
    pub mla: Option<crate::checkpoint::config::MlaConfig>,
    pub mtp: structure::MtpStatus,
    pub vision: bool,
    pub audio: bool,
    pub qk_norm: Option<String>,
    pub main_stack: Option<String>,
    pub other_stacks: BTreeMap<String, usize>,
}

#[derive(Debug, Serialize)]
pub struct QuantSummary {
    /// `quant_method`, or null when the checkpoint declares none.
    pub method: Option<String>,
    pub scheme: Option<QuantScheme>,
    #[serde(flatten)]
    pub pairing: Pairing,
}

#[derive(Debug, Serialize)]
pub struct AuditReport {
    pub schema: &'static str,
    pub tool: ToolInfo,
    pub source: SourceInfo,
    pub tensors: usize,
    pub tensor_bytes: u64,
    pub dtypes: BTreeMap<String, usize>,
    pub shards: Vec<ShardSummary>,
    pub model: ModelSummary,
    pub quantization: QuantSummary,
    pub tree: Vec<tree::TreeRow>,
    pub findings: Vec<Finding>,
    pub summary: Tally,
}

impl AuditReport {
    pub fn has_errors(&self) -> bool {
        self.summary.errors > 0
    }
}

/// The report's totals, counted in one walk over the tensors beside the checks (not after them,
/// with both cores but one idle): tensors per dtype (named once each, not a String per tensor)
/// and each shard's tensor bytes.
struct Counts {
    per_dtype: [usize; crate::checkpoint::Dtype::ALL.len()],
    shard_bytes: Vec<u64>,
}

impl Counts {
    fn of(ck: &Checkpoint) -> Counts {
        let mut per_dtype = [0usize; crate::checkpoint::Dtype::ALL.len()];
        let shard_bytes = ck
            .shards
            .iter()
            .map(|s| {
                let mut bytes = 0u64;
                for t in s.tensors() {
                    if let Some(i) = crate::checkpoint::Dtype::ALL.iter().position(|&d| d == t.dtype) {
                        per_dtype[i] += 1;
                    }
                    bytes += t.nbytes();
                }
                bytes
            })
            .collect();
        Counts { per_dtype, shard_bytes }
    }
}

/// Run every check over an opened checkpoint. `open_findings` are those the reader produced.
/// The remap's reverse check, when the architecture has built-in rules (unknown architectures are
/// left to `ckptpilot remap`, which infers a family and says how sure it is).
fn remap_check(input: &str, ck: &Checkpoint, rules: &RuleSet, target: crate::target::Target) -> Vec<Finding> {
    let Some(family) =
        ck.config.as_ref().and_then(|c| c.architecture.as_deref()).and_then(|a| rules.for_architecture(a))
    else {
        return Vec::new();
    };
    let opts = crate::remap::RemapOptions { rows: false, target, ..Default::default() };
    // The MTP draft vLLM builds from the same checkpoint with speculative decoding on: a pass of
    // its own, which a core done with the other passes takes up.
    let (mut findings, draft) = rayon::join(
        || crate::remap::remap_with(ck, input, family, "architecture", None, &opts).findings,
        || crate::remap::draft::check(ck, family),
    );
    findings.extend(draft);
    findings
}

/// One defect, one error: the reverse check's findings that are consequences of a defect already
/// reported are folded under it. Parameters left unfilled because a shard cannot be read become one
/// info line (the shard's own error says why); a missing lm_head is `lm-head-missing` alone.
fn fold_consequences(
    ck: &Checkpoint,
    rules: &crate::arch::AuditRules,
    reported: &[Finding],
    remap: Vec<Finding>,
) -> Vec<Finding> {
    use crate::findings::{Code, Severity};
    let unreadable = ck.unreadable();
    let lm_head_missing = reported.iter().any(|f| f.code == Code::LmHeadMissing);
    // A ModelSlim layer whose companions are missing or wrong is reported by its contract check;
    // the parameters they would fill are that defect again.
    let modelslim_reported =
        reported.iter().any(|f| matches!(f.code, Code::ModelslimMissing | Code::ModelslimCompanion));
    let companion = |t: &str| crate::quant::modelslim::companion_suffixes().any(|s| t.ends_with(s));
    // Pickle weights only: vLLM loads them, ckptpilot cannot look: nothing is known to be missing.
    let pickles_only = reported.iter().any(|f| f.code == Code::PickleWeightsOnly);
    let mut folded = 0usize;
    let mut out: Vec<Finding> = remap
        .into_iter()
        .filter(|f| {
            let consequence = f.code == Code::RemapUnfilled
                && (!unreadable.is_empty()
                    || pickles_only
                    || (modelslim_reported && f.tensor.as_deref().is_some_and(companion))
                    || (lm_head_missing
                        && f.tensor
                            .as_deref()
                            .is_some_and(|t| rules.lm_head_suffixes.iter().any(|s| t.ends_with(s.as_str())))));
            folded += usize::from(consequence);
            !consequence
        })
        .collect();
    if folded > 0 && pickles_only {
        out.push(
            Finding::new(
                Code::RemapUnfilled,
                format!("{folded} parameter group(s) not checked for their tensors: the weights are pickles (see pickle-weights-only)"),
            )
            .severity(Severity::Info),
        );
    } else if folded > 0 && !unreadable.is_empty() {
        out.push(
            Finding::new(
                Code::RemapUnfilled,
                format!(
                    "{folded} parameter group(s) not checked for their tensors: {} cannot be read (its own error above says why)",
                    unreadable.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                ),
            )
            .severity(Severity::Info),
        );
    }
    out
}

pub fn audit(input: &str, ck: &Checkpoint, open_findings: Vec<Finding>) -> AuditReport {
    audit_with(input, ck, open_findings, RuleSet::builtin())
}

/// [`audit`] with a rule set of the user's (`--rules`): a family described by a user file is
/// checked exactly like a built-in one.
pub fn audit_with(input: &str, ck: &Checkpoint, open_findings: Vec<Finding>, family_rules: &RuleSet) -> AuditReport {
    audit_for(input, ck, open_findings, family_rules, crate::target::Target::default())
}

/// [`audit_with`] for a target (`--target`): whether the target serves the checkpoint's
/// quantization at all is checked as `plan` checks it, on the target's default device, and the
/// reverse check maps names as that target loads them.
pub fn audit_for(
    input: &str,
    ck: &Checkpoint,
    open_findings: Vec<Finding>,
    family_rules: &RuleSet,
    target: crate::target::Target,
) -> AuditReport {
    audit_on(input, ck, open_findings, family_rules, target, None)
}

/// The hardware `audit --device` names: whether it runs native fp8, and the Ascend NPU family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hardware {
    pub fp8: bool,
    pub npu: Option<crate::target::Npu>,
}

/// [`audit_for`] on a given device (None: the target's default, an H100 for vLLM and an Ascend
/// A2 for vLLM-Ascend).
pub fn audit_on(
    input: &str,
    ck: &Checkpoint,
    open_findings: Vec<Finding>,
    family_rules: &RuleSet,
    target: crate::target::Target,
    device: Option<Hardware>,
) -> AuditReport {
    let mut findings = open_findings;
    let cfg: Option<&ModelConfig> = ck.config.as_ref();
    // The structural checks read the family's spec where the architecture has one, the generic
    // naming conventions otherwise.
    let family = cfg.and_then(|c| c.architecture.as_deref()).and_then(|a| family_rules.for_architecture(a));
    let spec_rules = family.map(|f| audit_rules().for_family(f));
    let rules = spec_rules.as_ref().unwrap_or_else(|| audit_rules());
    let scheme = ck.quant_scheme().cloned();
    // The passes read the checkpoint independently: run them side by side. The remap's reverse
    // check is the longest (a routing per tensor): it starts at once on this thread, and the others
    // are stolen as one job, so on two cores it runs beside the rest instead of after a part of it.
    let (remap_findings, ((st, st_findings), ((pairing, q_findings), (tree, counts)))) = rayon::join(
        || remap_check(input, ck, family_rules, target),
        || {
            rayon::join(
                || {
                    let mut f = Vec::new();
                    (structure::check(ck, cfg, rules, &mut f), f)
                },
                || {
                    rayon::join(
                        || {
                            let mut f = Vec::new();
                            let pairing = pair_fp8(ck, scheme.as_ref(), rules, &mut f);
                            if let Some(d) = &ck.modelslim {
                                crate::quant::modelslim::check(ck, d, &mut f);
                            }
                            (pairing, f)
                        },
                        || rayon::join(|| tree::fold(ck), || Counts::of(ck)),
                    )
                },
            )
        },
    );
    findings.extend(st_findings);
    if let Some(s) = &scheme {
        findings.push(crate::findings::Finding::new(
            crate::findings::Code::QuantScheme,
            format!(
                "{} (from {}){}{}{}",
                s.method,
                s.source,
                s.fp8_scale
                    .map(|l| format!(", fp8 scales {l} as `{}`", s.scale_suffix.unwrap_or("?")))
                    .unwrap_or_default(),
                if s.not_converted.is_empty() {
                    String::new()
                } else {
                    format!(", {} modules not converted", s.not_converted.len())
                },
                match &s.modelslim {
                    Some(d) => format!(
                        ", model_quant_type {}; weights by scheme: {}",
                        d.model_quant_type.as_deref().unwrap_or("(none)"),
                        d.weight_schemes()
                    ),
                    None => String::new(),
                }
            ),
        ));
    }
    if let Some(s) = &scheme {
        use crate::quant::serve::{support, Support};
        // The target's default device: H100 (fp8 units) for vLLM, Ascend A2/A3 (none) for vLLM-Ascend.
        let hw = device.unwrap_or(Hardware {
            fp8: target == crate::target::Target::Vllm,
            npu: (target == crate::target::Target::VllmAscend).then_some(crate::target::Npu::A2),
        });
        if let Support::Unsupported { message, fix, .. } = support(s, target, hw.fp8, hw.npu) {
            findings.push(
                crate::findings::Finding::new(
                    crate::findings::Code::TargetUnsupported,
                    format!("{}: {message}", target.as_str()),
                )
                .hint(format!("{}{}", fix[..1].to_uppercase(), &fix[1..])),
            );
        }
    }
    if let Some(c) = cfg {
        use crate::arch::registry::{refusal, serving, Serving};
        use crate::findings::{Code, Finding};
        if let Some((message, fix)) = refusal(family_rules, &c.architectures, c.model_type.as_deref(), c.remote_config)
        {
            findings.push(
                Finding::new(Code::ArchitectureUnsupported, format!("{}: {message}", target.as_str())).hint(format!(
                    "{}{}",
                    fix[..1].to_uppercase(),
                    &fix[1..]
                )),
            );
        } else if let Serving::RemoteCode { model_type } =
            serving(&c.architectures, c.model_type.as_deref(), c.remote_config)
        {
            findings.push(Finding::new(
                Code::ArchitectureRemoteCode,
                format!(
                    "model type `{model_type}` is not in transformers {}; `auto_map` names the config's own code, which vLLM runs only with --trust-remote-code",
                    crate::arch::registry::registry().transformers_version
                ),
            ));
        }
    }
    // An architecture no family names: which known one it is closest to.
    if let Some(c) =
        cfg.filter(|c| c.architecture.as_deref().is_some_and(|a| family_rules.for_architecture(a).is_none()))
    {
        // A large checkpoint: the name patterns only (a full ranking remaps it once per family,
        // seconds at 90k tensors: `ckptpilot match` does that).
        if !crate::matching::fully_ranked(ck) {
            let types: Vec<&str> = c.model_type.as_deref().into_iter().collect();
            if let Some((share, _, f)) = crate::matching::pattern_scores(ck, family_rules, &types)
                .into_iter()
                .max_by(|a, b| a.0.partial_cmp(&b.0).unwrap_or(std::cmp::Ordering::Equal))
                .filter(|s| s.0 > 0.0)
            {
                findings.push(crate::findings::Finding::new(
                    crate::findings::Code::FamilyClosest,
                    format!(
                        "closest known family by tensor-name patterns: `{}` ({}), {:.0}% of the patterns routed; `ckptpilot match` scores the candidates in full and shows the difference",
                        f.family,
                        if f.class.is_empty() { "generic decoder" } else { f.class.as_str() },
                        share * 100.0
                    ),
                ));
            }
        } else if let Some(best) = crate::matching::rank(ck, family_rules).into_iter().next().filter(|b| b.score > 0.0)
        {
            use crate::arch::registry::{serving, Serving};
            let vllm = match serving(&c.architectures, c.model_type.as_deref(), c.remote_config) {
                s @ (Serving::Native { .. } | Serving::AsBase { .. } | Serving::TransformersBackend { .. }) => {
                    format!("; vLLM 0.33 {}", s.summary())
                }
                _ => String::new(),
            };
            let renames = best
                .renames
                .iter()
                .map(|r| format!("{} `{}` → `{}`", r.kind, r.from, r.to))
                .collect::<Vec<_>>()
                .join(", ");
            findings.push(crate::findings::Finding::new(
                crate::findings::Code::FamilyClosest,
                format!(
                    "closest known family: `{}` ({}), {:.0}% ({}/{} tensors routed, {}/{} parameters filled{}){vllm}; `ckptpilot match` shows the difference",
                    best.family,
                    if best.vllm_class.is_empty() { "generic decoder" } else { best.vllm_class.as_str() },
                    best.score * 100.0,
                    best.routed - best.shape_mismatches,
                    best.tensors,
                    best.filled,
                    best.params,
                    if renames.is_empty() { String::new() } else { format!(", after {renames}") }
                ),
            ));
        }
    }
    findings.extend(q_findings);
    findings.extend(fold_consequences(ck, rules, &findings, remap_findings));

    let dtypes: BTreeMap<String, usize> = crate::checkpoint::Dtype::ALL
        .iter()
        .zip(counts.per_dtype)
        .filter(|&(_, n)| n > 0)
        .map(|(d, n)| (d.as_str().to_string(), n))
        .collect();
    findings.sort_by_key(|f| std::cmp::Reverse(f.severity));
    let summary = Tally::of(&findings);
    let c = cfg.cloned().unwrap_or_default();
    AuditReport {
        schema: SCHEMA,
        tool: ToolInfo::current(),
        source: SourceInfo {
            input: input.to_string(),
            root: ck.source.root.display().to_string(),
            hf_repo: ck.source.hf_repo.clone(),
            single_file: ck.source.single_file.clone(),
            remote: ck.source.remote.as_deref().cloned(),
        },
        tensors: ck.tensor_count(),
        tensor_bytes: counts.shard_bytes.iter().sum(),
        dtypes,
        shards: ck
            .shards
            .iter()
            .zip(&counts.shard_bytes)
            .map(|(s, &bytes)| ShardSummary {
                file: s.name.clone(),
                tensors: s.tensors().len(),
                bytes,
                file_bytes: s.file_len,
            })
            .collect(),
        model: ModelSummary {
            architecture: c.architecture.clone(),
            architecture_source: c.architecture_source,
            model_type: c.model_type.clone(),
            num_layers: c.num_layers,
            layers_present: st.layers_present,
            num_heads: c.num_heads,
            num_kv_heads: c.num_kv_heads,
            head_dim: c.head_dim,
            head_dim_derived: c.head_dim_derived,
            hidden_size: c.hidden_size,
            intermediate_size: c.intermediate_size,
            vocab_size: c.vocab_size,
            tie_word_embeddings: st.tie_word_embeddings,
            tie_source: st.tie_source.clone(),
            num_experts: c.moe.as_ref().map(|m| m.num_experts),
            moe: c.moe.clone(),
            expert_layout: st.expert_layout,
            moe_layers_present: st.moe_layers_present,
            mla: c.mla.clone(),
            mtp: st.mtp.clone(),
            vision: c.has_vision || st.other_stacks.keys().any(|k| k.contains("visual") || k.contains("vision")),
            audio: c.has_audio,
            qk_norm: st.qk_norm.clone(),
            main_stack: st.main_stack.clone(),
            other_stacks: st.other_stacks.clone(),
        },
        quantization: QuantSummary { method: scheme.as_ref().map(|s| s.method.to_string()), scheme, pairing },
        tree,
        findings,
        summary,
    }
}
