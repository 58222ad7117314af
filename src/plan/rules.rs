//! The feasibility rules: each takes the model and one parallel configuration and says pass, caveat,
//! fail or not applicable, with the numbers, the error vLLM 0.33.0 would raise and the fix.

use super::shape::{ModelShape, Param};
use super::{Check, Parallel, Remedy, Rule, Status, Target};
use crate::arch::{FamilyParallel, Partition, QkNorm};
use crate::checkpoint::config::ModelConfig;
use crate::model::MoeBlocks;
use crate::quant::scheme::{QuantScheme, ScaleLayout};

/// What every rule sees.
pub struct Ctx<'a> {
    pub cfg: &'a ModelConfig,
    pub fam: &'a FamilyParallel,
    pub shape: &'a ModelShape,
    pub quant: Option<&'a QuantScheme>,
    pub target: Target,
    pub fp8_device: bool,
    /// The Ascend hardware family (None: a GPU).
    pub npu: Option<crate::target::Npu>,
    /// The parameters vLLM builds, where a family describes the architecture.
    pub spec: Option<&'a crate::model::ModelSpec>,
    /// vLLM's refusal of the architecture (message, fix), from [`crate::arch::registry::refusal`].
    pub refusal: Option<&'a (String, String)>,
}

/// Rule ids, in matrix column order (memory rules are added by the planner).
pub const RULES: &[Rule] = &[
    Rule::Config,
    Rule::Heads,
    Rule::KvHeads,
    Rule::QkNorm,
    Rule::Mlp,
    Rule::Moe,
    Rule::Fp8Block,
    Rule::ScaleLoad,
    Rule::Vocab,
    Rule::Pp,
    Rule::Target,
];

fn pass(rule: Rule, short: impl Into<String>) -> Check {
    Check { rule, status: Status::Pass, short: short.into(), message: String::new(), fix: None, remedies: Vec::new() }
}
fn na(rule: Rule, why: impl Into<String>) -> Check {
    Check {
        rule,
        status: Status::NotApplicable,
        short: "-".into(),
        message: why.into(),
        fix: None,
        remedies: Vec::new(),
    }
}
fn fail(rule: Rule, short: impl Into<String>, message: impl Into<String>, fix: impl Into<String>) -> Check {
    let fix = fix.into();
    // The rule's own words stay the remedy until the planner checks something better.
    Check {
        rule,
        status: Status::Fail,
        short: short.into(),
        message: message.into(),
        remedies: vec![Remedy::manual(fix.clone())],
        fix: Some(fix),
    }
}
fn caveat(rule: Rule, short: impl Into<String>, message: impl Into<String>) -> Check {
    Check {
        rule,
        status: Status::Caveat,
        short: short.into(),
        message: message.into(),
        fix: None,
        remedies: Vec::new(),
    }
}

/// The TP sizes up to 64 at which `pred` holds, for fix suggestions.
fn good_tps(pred: impl Fn(u64) -> bool) -> String {
    let v: Vec<String> = [1u64, 2, 4, 8, 16, 32, 64].iter().filter(|&&t| pred(t)).map(|t| t.to_string()).collect();
    if v.is_empty() {
        "none up to 64".into()
    } else {
        v.join(", ")
    }
}

pub fn evaluate(ctx: &Ctx<'_>, par: &Parallel) -> Vec<Check> {
    if let Err(why) = ctx.cfg.sizes_in_range() {
        // Nothing else can be computed from sizes no real model has.
        let mut v = vec![fail(Rule::Config, "invalid", format!("config.json: {why}"), "fix config.json")];
        v.extend(RULES[1..].iter().map(|&r| na(r, "config invalid")));
        return v;
    }
    let mut checks = vec![
        config(ctx),
        heads(ctx, par),
        kv_heads(ctx, par),
        qk_norm(ctx, par),
        mlp(ctx, par),
        moe(ctx, par),
        fp8_block(ctx, par),
        vocab(ctx, par),
        pp(ctx, par),
        target(ctx, par),
    ];
    // Loading comes after building: a model vLLM cannot build never reaches its scales.
    let built = !checks.iter().any(|c| c.status == Status::Fail && c.rule.is_layout());
    let load =
        if built { scale_load(ctx, par) } else { na(Rule::ScaleLoad, "not reached: vLLM fails to build the model") };
    checks.insert(7, load);
    checks
}

/// The keys every other rule needs; a config without them (DeepSeek's own inference configs, for one)
/// cannot be planned, and saying "feasible" would be a lie.
fn config(ctx: &Ctx<'_>) -> Check {
    let c = ctx.cfg;
    let missing: Vec<&str> = [
        // An attention-free family (Mamba) has no attention heads to need.
        ("num_attention_heads", c.num_heads.is_none() && !ctx.fam.attention_free),
        ("hidden_size", c.hidden_size.is_none()),
        ("num_hidden_layers", c.num_layers.is_none()),
        ("vocab_size", c.vocab_size.is_none()),
    ]
    .into_iter()
    .filter_map(|(k, m)| m.then_some(k))
    .collect();
    if missing.is_empty() {
        return match c.sizes_in_range() {
            Ok(()) => pass(Rule::Config, "ok"),
            Err(why) => fail(Rule::Config, "invalid", format!("config.json: {why}"), "fix config.json"),
        };
    }
    fail(
        Rule::Config,
        format!("no {}", missing[0]),
        format!(
            "config.json lacks {}: not a Hugging Face model config, so vLLM cannot build the model from it",
            missing.join(", ")
        ),
        "point plan at the model's Hugging Face config.json",
    )
}

fn heads(ctx: &Ctx<'_>, par: &Parallel) -> Check {
    let Some(n) = ctx.cfg.num_heads.filter(|&n| n > 0) else {
        return na(Rule::Heads, "config has no num_attention_heads");
    };
    let tp = par.tp;
    if n % tp != 0 {
        let why = if tp > n { format!("TP {tp} > {n} heads") } else { format!("{n}%{tp}") };
        return fail(
            Rule::Heads,
            why,
            format!(
                "ValueError: Total number of attention heads ({n}) must be divisible by tensor parallel size ({tp})."
            ),
            format!("use a TP that divides {n}: {}", good_tps(|t| n % t == 0)),
        )
        .with(vec![Remedy::layout()]);
    }
    // Other attention in the model (vision towers) whose heads the family file names.
    if let Some((name, h)) = ctx.spec.and_then(|s| {
        s.params
            .iter()
            .filter_map(|p| p.heads.filter(|h| *h > 0).map(|h| (p.name.as_str(), h)))
            .find(|(_, h)| h % tp != 0)
    }) {
        return fail(
            Rule::Heads,
            format!("tower {h}%{tp}"),
            format!("AssertionError: {h} is not divisible by {tp} ({name}: {h} heads)"),
            format!("use a TP that divides {h} (and {n}): {}", good_tps(|t| n % t == 0 && h % t == 0)),
        )
        .with(vec![Remedy::layout()]);
    }
    pass(Rule::Heads, (n / tp).to_string())
}

fn kv_heads(ctx: &Ctx<'_>, par: &Parallel) -> Check {
    if ctx.cfg.mla.is_some() {
        return pass(Rule::KvHeads, "latent");
    }
    let Some(kv) = ctx.cfg.num_kv_heads.filter(|&n| n > 0) else { return na(Rule::KvHeads, "config has no KV heads") };
    let tp = par.tp;
    if tp > kv && !ctx.fam.kv_replication {
        return fail(
            Rule::KvHeads,
            format!("{kv} kv < TP {tp}"),
            format!("ZeroDivisionError: integer modulo by zero (this family's attention has no KV-head replication: {kv} KV heads // TP {tp} = 0)"),
            format!("use TP ≤ {kv}: {}", good_tps(|t| t <= kv && kv % t == 0)),
        ).with(vec![Remedy::layout()]);
    }
    if tp >= kv {
        if tp % kv != 0 {
            return fail(
                Rule::KvHeads,
                format!("TP {tp}%{kv} kv"),
                format!("AssertionError (bare: the attention's `tp_size % total_num_kv_heads == 0` assert; QKVParallelLinear's own check reads \"{tp} is not divisible by {kv}\"): TP ≥ KV heads must be a multiple of them to replicate each"),
                format!("use a TP that divides or is a multiple of {kv}: {}", good_tps(|t| if t >= kv { t % kv == 0 } else { kv % t == 0 })),
            ).with(vec![Remedy::layout()]);
        }
        if tp > kv {
            return pass(Rule::KvHeads, format!("1 ×{}", tp / kv));
        }
        return pass(Rule::KvHeads, "1");
    }
    if kv % tp != 0 {
        return fail(
            Rule::KvHeads,
            format!("{kv}%{tp}"),
            format!("AssertionError (bare: the attention's `total_num_kv_heads % tp_size == 0` assert; QKVParallelLinear's own check reads \"{kv} is not divisible by {tp}\")"),
            format!(
                "use a TP that divides or is a multiple of {kv}: {}",
                good_tps(|t| if t >= kv { t % kv == 0 } else { kv % t == 0 })
            ),
        ).with(vec![Remedy::layout()]);
    }
    pass(Rule::KvHeads, (kv / tp).to_string())
}

/// The first q/k norm weight of the real checkpoint (or the config-derived one).
fn qk_norm(ctx: &Ctx<'_>, par: &Parallel) -> Check {
    let (Some(hd), Some(nh)) = (ctx.cfg.head_dim, ctx.cfg.num_heads) else { return na(Rule::QkNorm, "no head_dim") };
    let nkv = ctx.cfg.num_kv_heads.unwrap_or(nh);
    // The model's k_norm; where the family file does not describe the norms (an architecture
    // planned by model_type), the width its TP behaviour implies.
    let implied = match ctx.fam.qk_norm {
        Some(QkNorm::PerHead) => Some(hd),
        Some(_) => Some(nkv.saturating_mul(hd)),
        None => None,
    };
    let k_norm = ctx.spec.and_then(|s| {
        s.params
            .iter()
            .find(|p| p.qk_norm == Some(crate::arch::rules::QkSide::K))
            .and_then(|p| p.shards.first()?.1.as_ref()?.first().copied())
    });
    let Some(k_len) = k_norm.or(implied) else {
        return na(Rule::QkNorm, "no q/k norm weights");
    };
    let tp = par.tp;
    let in_ckpt = if k_len == hd {
        QkNorm::PerHead
    } else if k_len == nkv * hd {
        ctx.fam.qk_norm.filter(|k| *k != QkNorm::PerHead).unwrap_or(QkNorm::FullGather)
    } else {
        return fail(
            Rule::QkNorm,
            format!("k_norm [{k_len}]?"),
            format!("k_norm weight has {k_len} elements: neither head_dim {hd} nor kv_heads×head_dim {}; AssertionError at load (parameter shape)", nkv * hd),
            "check head_dim and num_key_value_heads in config.json against the checkpoint",
        );
    };
    match (ctx.fam.qk_norm, in_ckpt) {
        (Some(QkNorm::PerHead), QkNorm::PerHead) | (None, QkNorm::PerHead) => pass(Rule::QkNorm, "per-head"),
        (Some(QkNorm::PerHead), _) => fail(
            Rule::QkNorm,
            format!("[{k_len}] vs [{hd}]"),
            format!("the vLLM model builds RMSNorm(head_dim={hd}) but the checkpoint's k_norm is full width [{k_len}]: AssertionError at load"),
            "use a model class with full-width QK-norm (Olmo2-style gather or MiniMax-style sharded norm)",
        ),
        (Some(QkNorm::FullGather), _) => pass(Rule::QkNorm, "full, gathered"),
        (Some(QkNorm::FullSharded), _) => {
            if nkv == 0 {
                // A fuzzed config found the division below; the kv-heads rule says what is wrong.
                na(Rule::QkNorm, "config has no KV heads")
            } else if nkv % tp != 0 && tp % nkv != 0 {
                fail(
                    Rule::QkNorm,
                    format!("k_norm {nkv} heads/{tp}"),
                    format!("k_norm [{k_len}] is sharded by KV head; {nkv} KV heads cannot be split or replicated across TP {tp}"),
                    "choose a TP that divides or is a multiple of the KV heads",
                ).with(vec![Remedy::layout()])
            } else if tp > nkv {
                let msg = format!("k_norm [{k_len}] is sharded by KV replica: rank r holds KV head r // {} (weight_shard_world_size = {nkv}); q_norm [{}] is split {tp} ways", tp / nkv, nh * hd);
                if ctx.target == Target::VllmAscend {
                    caveat(Rule::QkNorm, "k_norm per replica", format!("{msg}. vllm-ascend replaces this attention with the fused split_qkv_tp_rmsnorm_rope op, reported to fail with shape mismatches (`128 vs 64`) when TP > KV heads"))
                } else {
                    pass(Rule::QkNorm, "k_norm per replica")
                }
            } else {
                pass(Rule::QkNorm, format!("full, /{tp}"))
            }
        }
        (None, _) => caveat(
            Rule::QkNorm,
            "full width, unknown",
            format!("k_norm is full width [{k_len}] and this family's TP handling is not in the rule table: vLLM's Olmo2 gathers q/k before the norm, MiniMax shards the weight; a plain per-rank norm over a shard normalises over the wrong width with no error"),
        ),
    }
}

fn is_attention(p: &Param) -> bool {
    p.module.contains("attn") || p.module.contains("attention")
}

fn mlp(ctx: &Ctx<'_>, par: &Parallel) -> Check {
    let tp = par.tp;
    let mut widths: Vec<(String, u64)> = Vec::new();
    for p in ctx.shape.params.iter().filter(|p| p.is_weight && !is_attention(p)) {
        let split = match p.partition {
            Partition::Column | Partition::Merged => p.out,
            Partition::Row => p.inp,
            _ => continue,
        };
        if !widths.iter().any(|(_, w)| *w == split) {
            widths.push((p.module.clone(), split));
        }
    }
    if widths.is_empty() {
        return na(Rule::Mlp, "no dense MLP");
    }
    if let Some((m, w)) = widths.iter().find(|(_, w)| w % tp != 0) {
        return fail(
            Rule::Mlp,
            format!("{w}%{tp}"),
            format!("AssertionError: {w} is not divisible by {tp} ({m})"),
            format!("use a TP that divides {w}: {}", good_tps(|t| widths.iter().all(|(_, w)| w % t == 0))),
        )
        .with(vec![Remedy::layout()]);
    }
    let w = widths.iter().map(|(_, w)| *w).max().unwrap_or(0);
    pass(Rule::Mlp, (w / tp).to_string())
}

fn moe(ctx: &Ctx<'_>, par: &Parallel) -> Check {
    let Some(m) = &ctx.cfg.moe else {
        if par.ep {
            return fail(
                Rule::Moe,
                "EP on dense",
                "ValueError: Number of experts in the model must be greater than 0 when expert parallelism is enabled.",
                "drop --enable-expert-parallel",
            )
            .with(vec![Remedy::NoEp]);
        }
        return na(Rule::Moe, "dense model");
    };
    let e = m.num_experts;
    let tp = par.tp;
    if ctx.fam.tp_le_experts && tp > e {
        return fail(
            Rule::Moe,
            format!("TP {tp} > {e} experts"),
            format!("ValueError: Tensor parallel size {tp} is greater than the number of experts {e}."),
            format!("use TP ≤ {e}"),
        )
        .with(vec![Remedy::layout()]);
    }
    let im = m.moe_intermediate_size.or(ctx.cfg.intermediate_size).unwrap_or(0);
    if par.ep {
        let ep = par.ep_size();
        if e < ep {
            return fail(
                Rule::Moe,
                format!("{e} experts < EP {ep}"),
                format!("{e} experts cannot be placed on {ep} expert-parallel ranks (determine_expert_map gives some ranks none)"),
                format!("use TP×DP ≤ {e} with EP"),
            ).with(vec![Remedy::layout()]);
        }
        if e % ep != 0 {
            let base = e / ep;
            return caveat(
                Rule::Moe,
                format!("{}-{base} exp", base + 1),
                format!("{e} experts over {ep} EP ranks: the first {} ranks hold {} experts, the rest {base}; allowed, but not with EPLB (\"EPLB currently only supports even distribution of experts across ranks.\")", e % ep, base + 1),
            );
        }
        return pass(Rule::Moe, format!("{} exp", e / ep));
    }
    let moe_tp = par.moe_tp();
    if im % moe_tp != 0 {
        return fail(
            Rule::Moe,
            format!("I {im}%{moe_tp}"),
            format!("AssertionError: {im} is not divisible by {moe_tp} (FusedMoE: moe_intermediate_size % (TP×DP))"),
            "enable expert parallelism (--enable-expert-parallel), or a TP×DP that divides moe_intermediate_size",
        )
        .with(vec![Remedy::layout()]);
    }
    pass(Rule::Moe, format!("I {}", im / moe_tp))
}

fn fp8_block(ctx: &Ctx<'_>, par: &Parallel) -> Check {
    let Some(ScaleLayout::Block { n: bn, k: bk }) = ctx.quant.and_then(|q| q.fp8_scale) else {
        return na(Rule::Fp8Block, "not block-quantized fp8");
    };
    if ctx.target == Target::VllmAscend && !ctx.fp8_device {
        return na(Rule::Fp8Block, "fp8 not served natively on this target (see target)");
    }
    let tp = par.tp;
    let moe_tp = par.moe_tp();
    // ((after attention, row layer): vLLM's build order, short, message)
    let mut failures: Vec<((bool, bool), String, String)> = Vec::new();
    let mut refined: Vec<(u64, u64)> = Vec::new();
    // (per-rank intermediate, padded to)
    let mut padded: Vec<(u64, u64)> = Vec::new();
    let mut seen: std::collections::HashSet<(&str, u64, u64)> = std::collections::HashSet::new();
    for p in ctx.shape.params.iter().filter(|p| p.fp8_block && p.is_weight) {
        if !seen.insert((p.module.as_str(), p.out, p.inp)) {
            continue;
        }
        let order = (!is_attention(p), p.partition == Partition::Row);
        let leaf = p.module.rsplit('.').next().unwrap_or("");
        match p.partition {
            Partition::Column if tp > 1 && p.out % tp == 0 => {
                let n = p.out / tp;
                if n % bn != 0 {
                    failures.push((
                        order,
                        format!("{leaf} {n}%{bn}"),
                        format!("ValueError: Weight output_partition_size = {n} is not divisible by weight quantization block_n = {bn}. ({})", p.module),
                    ));
                }
            }
            Partition::Row if tp > 1 && p.inp % tp == 0 => {
                let k = p.inp / tp;
                if k % bk != 0 {
                    failures.push((
                        order,
                        format!("{leaf} {k}%{bk}"),
                        format!("ValueError: Weight input_size_per_partition = {k} is not divisible by weight quantization block_k = {bk}. ({})", p.module),
                    ));
                }
            }
            Partition::Expert => {
                let down = leaf == "w2";
                let i_full = if down { p.inp } else { p.out };
                let hidden = if down { p.out } else { p.inp };
                if !par.ep && i_full % moe_tp != 0 {
                    continue; // the moe rule reports it
                }
                let i = if par.ep { i_full } else { i_full / moe_tp };
                match crate::model::moe_blocks(bn, bk, i_full, hidden, ctx.spec.is_some_and(|s| s.expert_bias), par) {
                    MoeBlocks::Refined(r) => {
                        if !refined.iter().any(|(x, _)| *x == r) {
                            refined.push((r, i));
                        }
                    }
                    MoeBlocks::Padded(rows) => {
                        if !padded.iter().any(|(_, x)| *x == rows) {
                            padded.push((i, rows));
                        }
                    }
                    MoeBlocks::PadRefused => failures.push((
                        order,
                        format!("experts pad {i}%{bn}"),
                        format!("ValueError: Block-aligned FP8 TP sharding requires {bn}-aligned global expert dimensions, pure TP, and no LoRA or expert bias. (--moe-backend {} cannot take refined blocks, so vLLM pads each rank's {i}-wide expert shard to whole blocks; moe_intermediate_size {i_full} and hidden {hidden} must then be multiples of {bn})", par.moe_backend.as_str()),
                    )),
                    MoeBlocks::BackendRefused(r) => failures.push((
                        order,
                        format!("{} no {r}x{r}", par.moe_backend.as_str()),
                        format!("ValueError: FP8 MoE backend {} does not support the deployment configuration since … (--moe-backend {}: the experts' scales are refined to {r}x{r} blocks, which only the Triton kernels take, and vLLM pads only TP shards)", par.moe_backend.fp8_kernels(), par.moe_backend.as_str()),
                    )),
                    MoeBlocks::Checkpoint => {
                        let aligned = i % bn == 0 && (moe_tp == 1 || i % bk == 0);
                        if aligned {
                            continue;
                        }
                        if i % bn != 0 {
                            failures.push((
                                order,
                                format!("experts gate/up {i}%{bn}"),
                                format!("ValueError: The output_size of gate's and up's weight = {i} is not divisible by weight quantization block_n = {bn}."),
                            ));
                        } else if tp > 1 && i % bk != 0 {
                            failures.push((
                                order,
                                format!("experts down {i}%{bk}"),
                                format!("ValueError: The input_size of down's weight = {i} is not divisible by weight quantization block_k = {bk}."),
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    // vLLM builds attention before the MLP in every layer, so its first error is an attention one;
    // within a layer the column-parallel layers (q_b_proj, kv_b_proj) come before the row one (o_proj).
    failures.sort_by_key(|(order, _, _)| *order);
    failures.dedup_by(|a, b| a.1 == b.1);
    if let Some((_, short, _)) = failures.first() {
        let all = failures.iter().map(|(_, _, m)| m.as_str()).collect::<Vec<_>>().join("\n");
        let fix = if ctx.cfg.moe.is_some() && !par.ep {
            "a smaller TP, --enable-expert-parallel for the routed experts, or bf16 weights (`ckptpilot dequant`)"
        } else {
            "a smaller TP, or bf16 weights (`ckptpilot dequant`)"
        };
        return fail(Rule::Fp8Block, short.clone(), all, fix)
            .with(vec![Remedy::layout(), Remedy::bf16("bf16 weights (`ckptpilot dequant`)")]);
    }
    if let Some((i, rows)) = padded.first() {
        return caveat(
            Rule::Fp8Block,
            format!("MoE padded {i}→{rows}"),
            format!("--moe-backend {} cannot take refined blocks: vLLM pads each rank's expert shard from {i} to {rows} rows of whole {bn}x{bk} blocks (pad_tp_shard_to_weight_blocks) and allocates the padding; --moe-backend triton (or auto) refines the scales instead", par.moe_backend.as_str()),
        );
    }
    if let Some((r, i)) = refined.first() {
        return caveat(
            Rule::Fp8Block,
            format!("MoE scales→{r}x{r}"),
            format!("the experts' intermediate per rank ({i}) does not fill whole {bn}x{bk} blocks: vLLM refines their scales to {r}x{r} blocks at load (refine_fp8_moe_block_shape), which only the Triton fused-MoE kernels accept (DeepGEMM / CUTLASS need {bn}x{bk}); --enable-expert-parallel keeps whole blocks"),
        );
    }
    pass(Rule::Fp8Block, "ok")
}

fn vocab(ctx: &Ctx<'_>, par: &Parallel) -> Check {
    let Some(v) = ctx.cfg.vocab_size.filter(|&v| v > 0) else { return na(Rule::Vocab, "no vocab_size") };
    let padded = super::memory::padded_vocab(v);
    if padded % par.tp != 0 {
        return fail(
            Rule::Vocab,
            format!("{padded}%{}", par.tp),
            format!("AssertionError: {padded} is not divisible by {} (vocab {v} padded to a multiple of 64)", par.tp),
            "use a power-of-two TP",
        )
        .with(vec![Remedy::layout()]);
    }
    pass(Rule::Vocab, (padded / par.tp).to_string())
}

fn pp(ctx: &Ctx<'_>, par: &Parallel) -> Check {
    if par.pp <= 1 {
        return pass(Rule::Pp, "-");
    }
    let layers = ctx.cfg.num_layers.unwrap_or(0);
    if par.pp > layers {
        return fail(
            Rule::Pp,
            format!("PP {} > {layers} layers", par.pp),
            format!(
                "{layers} decoder layers cannot fill {} pipeline stages (get_pp_indices gives some stages none)",
                par.pp
            ),
            format!("use PP ≤ {layers}"),
        );
    }
    let parts = super::memory::pp_partition(layers, par.pp);
    let (lo, hi) = (parts.iter().min().copied().unwrap_or(0), parts.iter().max().copied().unwrap_or(0));
    pass(Rule::Pp, if lo == hi { format!("{lo} layers") } else { format!("{lo}-{hi} layers") })
}

/// A ModelSlim scheme whose method refuses a TP above a description value (the contract's
/// `tp_limit`: W4A4_MXFP4_FLATQUANT's `max_supported_tp`, default 4), with the method's own text.
fn scheme_tp_limit(ctx: &Ctx<'_>, par: &Parallel) -> Option<Check> {
    let d = ctx.quant.and_then(|q| q.modelslim.as_ref()).filter(|_| ctx.target == Target::VllmAscend)?;
    let schemes: std::collections::BTreeSet<&str> = d.types.values().map(String::as_str).collect();
    schemes.into_iter().find_map(|s| {
        let c = crate::quant::modelslim::contract(s)?;
        let lim = c.tp_limit.as_ref()?;
        let max = d.numbers.get(&lim.key).copied().unwrap_or(lim.default);
        (par.tp > max).then(|| {
            fail(
                Rule::Target,
                format!("{s}: TP <= {max}"),
                format!(
                    "{} ({})",
                    lim.error.replace("{tp}", &par.tp.to_string()).replace("{max}", &max.to_string()),
                    c.source
                ),
                format!("TP {max} or less (more replicas with --dp), or a description with a larger `{}`", lim.key),
            )
        })
    })
}

fn target(ctx: &Ctx<'_>, par: &Parallel) -> Check {
    use crate::quant::serve::{support, Support};
    // An architecture vLLM does not serve stops it before any layout matters (audit's
    // `architecture-unsupported`, from the same resolution).
    if let Some((message, fix)) = ctx.refusal {
        return fail(Rule::Target, "no arch", message.clone(), fix.clone());
    }
    let Some(q) = ctx.quant else { return pass(Rule::Target, "bf16") };
    match support(q, ctx.target, ctx.fp8_device, ctx.npu) {
        Support::Native(label) => match scheme_tp_limit(ctx, par) {
            Some(limited) => limited,
            None => pass(Rule::Target, label),
        },
        Support::Caveat { short, message } => caveat(Rule::Target, short, message),
        Support::Unsupported { short, message, fix } => {
            let remedy = Remedy::bf16(fix.clone());
            fail(Rule::Target, short, message, fix).with(vec![remedy])
        }
    }
}

/// A ModelSlim scheme whose experts' down-projection `scale_bias` columns are split by the experts'
/// TP (the contract's `expert_tp_columns`, W4A8_DYNAMIC's 16): vLLM-Ascend refuses more TP than
/// columns, and a TP that does not divide them loads columns // tp per rank and never the rest, with
/// no error. The experts' TP is 1 under EP.
fn expert_tp_columns(ctx: &Ctx<'_>, par: &Parallel) -> Option<Check> {
    let d = ctx.quant.and_then(|q| q.modelslim.as_ref())?;
    if ctx.target != Target::VllmAscend {
        return None;
    }
    let schemes: std::collections::BTreeSet<&str> = d.types.values().map(String::as_str).collect();
    let (scheme, k, source) = schemes.into_iter().find_map(|s| {
        let c = crate::quant::modelslim::contract(s)?;
        c.expert_tp_columns.map(|k| (s, k.max(1), c.expert_tp_source.as_str()))
    })?;
    let tp = if par.ep { 1 } else { par.tp.max(1) };
    let divisors: Vec<String> = (1..=k).filter(|t| k % t == 0).map(|t| t.to_string()).collect();
    let fix =
        format!("TP {} for the experts, or EP (--enable-expert-parallel: the experts' TP is 1)", divisors.join(", "));
    if tp > k {
        return Some(
            fail(
                Rule::ScaleLoad,
                format!("{} TP {tp} > {k}", scheme.to_lowercase()),
                format!("ValueError: The current weight does not support moe part tp>{k}. ({source})"),
                fix,
            )
            .with(vec![Remedy::layout()]),
        );
    }
    if k % tp != 0 {
        return Some(
            fail(
                Rule::ScaleLoad,
                format!("{} {k} % {tp}", scheme.to_lowercase()),
                format!(
                    "no error, wrong output: each rank's w2_scale_bias holds {k} // {tp} = {} of the checkpoint's {k} down-projection scale_bias columns ({scheme}), so {} are never loaded ({source})",
                    k / tp,
                    k - tp * (k / tp)
                ),
                fix,
            )
            .with(vec![Remedy::layout()]),
        );
    }
    None
}

/// vLLM builds the model, then cannot load a merged layer's block scales (see
/// [`crate::model::ModelSpec::merged_scale_overflow`]).
fn scale_load(ctx: &Ctx<'_>, par: &Parallel) -> Check {
    if let Some(c) = expert_tp_columns(ctx, par) {
        return c;
    }
    let Some(ScaleLayout::Block { n: bn, .. }) = ctx.quant.and_then(|q| q.fp8_scale) else {
        return na(Rule::ScaleLoad, "no block scales");
    };
    if ctx.target == Target::VllmAscend && !ctx.fp8_device {
        return na(Rule::ScaleLoad, "fp8 not served natively on this target (see target)");
    }
    let Some(spec) = ctx.spec else { return na(Rule::ScaleLoad, "no family rules for this architecture") };
    let refined = spec.refined_scale_load_errors(par);
    if !refined.is_empty() {
        let mut message = refined.join("\n");
        message.push_str("\n(at load: the experts' scales were refined to finer blocks, and the checkpoint's block scales, upsampled, do not fit them because moe_intermediate_size or hidden_size is not whole checkpoint blocks)");
        if let Some(o) = spec.merged_scale_overflow(par) {
            message = format!(
                "RuntimeError: start ({}) + length ({}) exceeds dimension size ({}).\n{message}",
                o.start, o.len, o.dim
            );
        }
        return fail(
            Rule::ScaleLoad,
            "expert scales",
            message,
            "a layout whose expert shards are whole blocks (more TP, or EP), or bf16 weights (`ckptpilot dequant`)",
        )
        .with(vec![Remedy::layout(), Remedy::bf16("bf16 weights (`ckptpilot dequant`)")]);
    }
    if let Some(o) = spec.merged_scale_overflow(par) {
        let module = crate::checkpoint::names::pattern(o.param.rsplit_once('.').map_or(o.param.as_str(), |(m, _)| m));
        return fail(
            Rule::ScaleLoad,
            format!("{} scale rows", module.rsplit('.').next().unwrap_or("")),
            format!(
                "RuntimeError: start ({}) + length ({}) exceeds dimension size ({}). (at load: {module} is merged from shards that are not whole {bn}-row blocks on a rank; its scale has {} rows for the whole output, and shard `{}` is loaded at row ceil(offset / {bn}) = {})",
                o.start, o.len, o.dim, o.dim, o.shard, o.start
            ),
            "a TP at which every merged shard is whole blocks, or bf16 weights (`ckptpilot dequant`, or --target vllm-ascend's load-time dequant)",
        ).with(vec![Remedy::layout(), Remedy::bf16("bf16 weights (`ckptpilot dequant`, or --target vllm-ascend's load-time dequantization)")]);
    }
    pass(Rule::ScaleLoad, "ok")
}
