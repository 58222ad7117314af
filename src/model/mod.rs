//! The one model of the checkpoint: every parameter vLLM 0.33.0 builds for it, from the family's
//! rule file, the config and the quantization scheme, with the per-rank shape each takes under a
//! parallel layout. `plan` counts its memory here; `remap` routes tensors into the same parameter
//! set ([`expected::expected_params`] is the expansion both use).
//!
//! Per-rank shapes follow vLLM's layers (`linear.py`, `vocab_parallel_embedding.py`,
//! `fused_moe/layer.py`, `quantization/fp8.py`); the family file says which layer each parameter is
//! (its `partition`), so nothing here knows an architecture.

pub mod expected;
pub mod layout;
pub mod parallel;

use crate::arch::rules::{Family, NoSplit, TpDim};
use crate::arch::Partition;
use crate::checkpoint::config::ModelConfig;
use crate::quant::scheme::{QuantScheme, ScaleLayout};
use expected::{expected_params, Expected, Role, Vars};
use layout::{padded_vocab, pp_partition, stage_of, RankWeights};
use parallel::Parallel;
use serde_json::Value;

/// vLLM's parameters for one checkpoint (or a lone config) and one family.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// The family file it was built from.
    pub family: String,
    /// Every parameter, MTP layers included (their role says so).
    pub params: Vec<Expected>,
    /// Bytes per element of the model dtype (vLLM allocates unquantized parameters in it).
    pub elem: u64,
    /// Total KV heads of the text model (k/v shards of QKV layers split by min(TP, this)).
    pub kv_heads: u64,
    /// Total attention heads and head size of the text model (a fused qkv tensor's rows).
    pub heads: u64,
    pub head_dim: u64,
    pub layers: u64,
    pub tied: bool,
    /// The family's TP behaviour beyond partitions (its file's `parallel`).
    pub parallel: crate::arch::FamilyParallel,
    /// The quantization's weight scales are blocks (`weight_block_size`).
    pub block_quantized: bool,
    /// Their block, `[block_n, block_k]`.
    pub block: Option<(u64, u64)>,
    /// The routed experts carry biases (gpt-oss): vLLM will not pad their fp8 TP shards.
    pub expert_bias: bool,
    /// Weights whose quantization companion is in `params` (stored as fp8).
    quantized: std::collections::HashSet<String>,
    /// The MTP draft model, where the family describes it and the config declares spec layers.
    pub draft: Option<Box<DraftSpec>>,
}

/// How vLLM 0.33.0 lays out the block-fp8 scales of routed experts whose per-rank intermediate
/// is `ispp` (fused_moe/oracle/fp8.py :: resolve_fp8_moe_weight_block_shape).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MoeBlocks {
    /// The checkpoint's blocks, whole on every rank (or not: the fp8-block rule says what vLLM raises).
    Checkpoint,
    /// Scales refined to `r`x`r` blocks at load (refine_fp8_moe_block_shape): Triton kernels only.
    Refined(u64),
    /// An explicit backend that cannot take refined blocks: each rank's shard is padded to whole
    /// blocks, `ispp` → this many rows (pad_tp_shard_to_weight_blocks).
    Padded(u64),
    /// Padding is needed but not allowed (global dimensions not whole blocks, EP, or expert biases):
    /// `ValueError: Block-aligned FP8 TP sharding requires …`.
    PadRefused,
    /// Refined blocks with an explicit backend that cannot take them: backend selection raises.
    BackendRefused(u64),
}

/// [`MoeBlocks`] for block `bn`x`bk`, global intermediate `i` and hidden `h` at `par`.
pub fn moe_blocks(bn: u64, bk: u64, i: u64, h: u64, has_bias: bool, par: &Parallel) -> MoeBlocks {
    let tp = par.moe_tp().max(1);
    let ispp = i.div_ceil(tp);
    let refined = match moe_scale_block(bn, bk, ispp, h, tp) {
        (n, _) if n != bn => Some(n),
        _ => None,
    };
    let backend = par.moe_backend;
    if backend != parallel::MoeBackend::Auto {
        let can_refine = refined.is_some() && backend.takes_refined_blocks();
        if !can_refine && bn == bk && tp > 1 && ispp % bn.max(1) != 0 {
            if i % bn.max(1) != 0 || h % bn.max(1) != 0 || par.ep_size() != 1 || has_bias {
                return MoeBlocks::PadRefused;
            }
            return MoeBlocks::Padded(ispp.div_ceil(bn.max(1)).saturating_mul(bn));
        }
        if let Some(r) = refined.filter(|_| !backend.takes_refined_blocks()) {
            return MoeBlocks::BackendRefused(r);
        }
    }
    refined.map_or(MoeBlocks::Checkpoint, MoeBlocks::Refined)
}

/// One parameter's size on one rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankParam {
    pub name: String,
    pub numel: u64,
    /// Bytes per element as vLLM allocates it.
    pub elem: u64,
    /// Bytes per element once fp8 weights are bf16 (0: a scale the dequantized model drops).
    pub bf16_elem: u64,
    pub role: Role,
}

/// The MTP draft model vLLM builds beside the main one with speculative decoding on.
#[derive(Debug, Clone)]
pub struct DraftSpec {
    /// The draft class (`DeepSeekMTP`).
    pub class: String,
    /// The recorded evidence its rules follow.
    pub verified: String,
    /// Its parameters, named as vLLM names them (`model.layers.61.mtp_block.…`).
    pub spec: ModelSpec,
}

impl DraftSpec {
    /// Every draft parameter on the first rank at `par` (the draft is not pipeline-split).
    pub fn rank_params(&self, par: &Parallel) -> Vec<RankParam> {
        self.spec.params.iter().map(|p| self.spec.rank_param(p, par)).collect()
    }
}

impl ModelSpec {
    /// The MTP draft's parameters, where the family describes its draft model and the config
    /// declares spec layers: each spec layer's decoder block from the main family's layer rules
    /// (named under the draft's `block`), its own modules, and the shared embedding.
    pub fn build_draft(
        cfg: &ModelConfig,
        json: Option<&Value>,
        family: &Family,
        quant: Option<&QuantScheme>,
    ) -> Option<DraftSpec> {
        let draft = family.mtp.as_ref()?.draft_model.as_ref()?;
        if cfg.mtp_layers == 0 {
            return None;
        }
        let mut fam = family.clone();
        fam.params = family
            .params
            .iter()
            .filter_map(|r| {
                let body = r.repeat.iter().find(|(_, set)| crate::arch::rules::LAYER_SETS.contains(&set.as_str()));
                match body {
                    Some((_, set)) if set == "mtp_layers" => None,
                    Some((var, _)) => {
                        let mut r = r.clone();
                        let at = format!("{{{var}}}.");
                        r.name = r.name.replacen(&at, &format!("{at}{}", draft.block), 1);
                        Some(r)
                    }
                    None => (r.role == Some(crate::arch::rules::ParamRole::Embed)).then(|| r.clone()),
                }
            })
            .chain(draft.params.iter().cloned())
            .collect();
        let spec = ModelSpec::build_with(cfg, &Vars::for_draft(cfg, json), &fam, quant);
        Some(DraftSpec { class: draft.class.clone(), verified: draft.verified.clone(), spec })
    }

    /// Build the parameter set from the config, its JSON and the family's rules.
    pub fn build(cfg: &ModelConfig, json: Option<&Value>, family: &Family, quant: Option<&QuantScheme>) -> ModelSpec {
        let mut spec = ModelSpec::build_with(cfg, &Vars::new(cfg, json), family, quant);
        spec.draft = ModelSpec::build_draft(cfg, json, family, quant).map(Box::new);
        spec
    }

    fn build_with(cfg: &ModelConfig, vars: &Vars<'_>, family: &Family, quant: Option<&QuantScheme>) -> ModelSpec {
        let params = if cfg.sizes_in_range().is_ok() { expected_params(family, vars, quant) } else { Vec::new() };
        let expert_bias = params.iter().any(|p| p.partition == Partition::Expert && p.name.ends_with("bias"));
        let quantized = params
            .iter()
            .filter(|p| p.scale_of.as_ref().is_some_and(|s| !s.input))
            .filter_map(|p| scaled_weight(&p.name, quant))
            .collect();
        ModelSpec {
            family: family.family.clone(),
            elem: crate::checkpoint::dtype::model_dtype_bytes(cfg.torch_dtype.as_deref()),
            kv_heads: vars.get("num_key_value_heads").and_then(|v| u64::try_from(v).ok()).unwrap_or(1).max(1),
            heads: cfg.num_heads.unwrap_or(0),
            head_dim: cfg.head_dim.unwrap_or(0),
            layers: cfg.num_layers.unwrap_or(0),
            tied: vars.get("tie_word_embeddings") == Some(1),
            parallel: family.parallel.clone().unwrap_or_default(),
            block_quantized: matches!(quant.and_then(|q| q.fp8_scale), Some(ScaleLayout::Block { .. })),
            block: match quant.and_then(|q| q.fp8_scale) {
                Some(ScaleLayout::Block { n, k }) => Some((n, k)),
                _ => None,
            },
            expert_bias,
            params,
            quantized,
            draft: None,
        }
    }

    /// The block layout of a block-fp8 routed-expert parameter (or its scale) at `par`; None for
    /// anything else.
    pub fn expert_blocks(&self, p: &Expected, par: &Parallel) -> Option<MoeBlocks> {
        if p.partition != Partition::Expert || p.fused_experts {
            return None;
        }
        let of_scale = p.scale_of.as_ref().is_some_and(|of| !of.input);
        if !of_scale && !self.quantized.contains(&p.name) {
            return None;
        }
        let shards = match &p.scale_of {
            Some(of) => &of.weight_shards,
            None => &p.shards,
        };
        let (bn, bk) = self.block?;
        let (i, h) = shards.iter().find_map(|(id, s)| match s.as_deref()? {
            [h, i] if id == "w2" => Some((*i, *h)),
            [i, h] => Some((*i, *h)),
            _ => None,
        })?;
        Some(moe_blocks(bn, bk, i, h, self.expert_bias, par))
    }

    /// Whether vLLM holds parameter `name` in fp8 (a weight with a scale companion).
    pub fn is_quantized(&self, name: &str) -> bool {
        self.quantized.contains(name)
    }

    /// The size of `p` on the most loaded rank of its stage at `par` (rank 0: every split rounds up).
    pub fn rank_param(&self, p: &Expected, par: &Parallel) -> RankParam {
        let local_experts = p.experts.map(|e| e.div_ceil(par.ep_size().max(1)));
        let shards: Vec<(&str, Vec<u64>)> =
            p.shards.iter().map(|(id, s)| (id.as_str(), s.clone().unwrap_or_default())).collect();
        let (numel, elem, bf16_elem) = match &p.scale_of {
            Some(of) => {
                let weight: Vec<(&str, Vec<u64>)> =
                    of.weight_shards.iter().map(|(id, s)| (id.as_str(), s.clone().unwrap_or_default())).collect();
                (self.scale_numel(p, of.layout, of.input, &weight, local_experts, par), 4, 0)
            }
            None => {
                let per: u64 = shards.iter().map(|(id, s)| numel(&self.rank_shape(p, id, s, par))).sum();
                let n = match (local_experts, p.fused_experts) {
                    (Some(e), false) => per.saturating_mul(e),
                    _ => per,
                };
                let elem = p.dtype.map_or(self.elem, |d| d.bytes());
                if self.quantized.contains(&p.name) {
                    (n, 1, 2)
                } else {
                    (n, elem, elem)
                }
            }
        };
        RankParam { name: p.name.clone(), numel, elem, bf16_elem, role: p.role }
    }

    /// Every parameter the main model builds on the first rank of the first stage (pp = 1).
    pub fn rank_params(&self, par: &Parallel) -> Vec<RankParam> {
        self.params.iter().filter(|p| p.role != Role::Mtp).map(|p| self.rank_param(p, par)).collect()
    }

    /// Weight bytes on the most loaded rank: each stage's rank 0, the heaviest stage.
    pub fn rank_weights(&self, par: &Parallel) -> RankWeights {
        let parts = pp_partition(self.layers, par.pp);
        let stages = parts.len();
        let mut per_stage = vec![RankWeights::default(); stages];
        let mut add = |stage: usize, r: &RankParam| {
            let w = &mut per_stage[stage];
            w.stored = w.stored.saturating_add(r.numel.saturating_mul(r.elem));
            w.bf16 = w.bf16.saturating_add(r.numel.saturating_mul(r.bf16_elem));
        };
        for p in &self.params {
            let stage = match p.role {
                Role::Layer(l) => stage_of(l, &parts),
                Role::Embed | Role::Tower => 0,
                Role::Head => stages - 1,
                Role::Mtp => continue,
            };
            let r = self.rank_param(p, par);
            add(stage, &r);
            // With PP and tied embeddings the last stage builds its own embedding-sized lm_head.
            if stages > 1 && self.tied && p.role == Role::Embed {
                add(stages - 1, &r);
            }
        }
        per_stage.into_iter().max_by_key(|w| w.stored).unwrap_or_default()
    }

    /// The shape one rank holds of a checkpoint-shaped shard `shape` of `p` (per expert for
    /// expert parameters that are not fused; a fused tensor's expert dimension becomes the local count).
    fn rank_shape(&self, p: &Expected, shard: &str, shape: &[u64], par: &Parallel) -> Vec<u64> {
        let tp = par.tp.max(1);
        let mut s = shape.to_vec();
        let split = |s: &mut Vec<u64>, dim: Option<usize>, by: u64| {
            if let Some(x) = dim.and_then(|d| s.get_mut(d)) {
                *x = x.div_ceil(by.max(1));
            }
        };
        let default_dim = match p.partition {
            Partition::Replicated => None,
            Partition::Row | Partition::Expert if shard == "w2" || p.partition == Partition::Row => {
                (s.len() >= 2).then(|| s.len() - 1)
            }
            _ => (!s.is_empty()).then_some(0),
        };
        let dim = match p.tp_dim {
            Some(TpDim::Dim(d)) => Some(d),
            Some(TpDim::Named(NoSplit::None)) => None,
            None => default_dim,
        };
        match p.partition {
            Partition::Replicated => {}
            Partition::Vocab => {
                if let Some(rows) = s.first_mut() {
                    *rows = padded_vocab(*rows).div_ceil(tp);
                }
            }
            Partition::QkvKv if shard != "q" => {
                // k / v: whole heads per rank, one replicated head when TP exceeds the KV heads.
                if let Some(rows) = dim.and_then(|d| s.get_mut(d)) {
                    let nkv = self.kv_heads;
                    *rows = (*rows / nkv).saturating_mul((nkv / tp).max(1));
                }
            }
            Partition::Qkv => {
                // One fused q|k|v tensor (QKVParallelLinear loaded whole): each rank holds heads / TP
                // query heads and max(1, kv / TP) key and value heads (KV replicated when TP exceeds
                // them); a tensor that is not (heads + 2 kv) × head_dim rows splits evenly.
                let (nh, nkv, hd) = (self.heads, self.kv_heads, self.head_dim);
                match dim.and_then(|d| s.get_mut(d)) {
                    Some(rows) if matches!(p.role, Role::Layer(_)) && hd > 0 && *rows == (nh + 2 * nkv) * hd => {
                        *rows = (nh / tp + 2 * (nkv / tp).max(1)) * hd;
                    }
                    Some(rows) => *rows = rows.div_ceil(tp),
                    None => {}
                }
            }
            Partition::Expert => {
                split(&mut s, dim, par.moe_tp());
                if let (Some(d), Some(MoeBlocks::Padded(rows))) = (dim, self.expert_blocks(p, par)) {
                    if let Some(x) = s.get_mut(d) {
                        *x = rows;
                    }
                }
                if p.fused_experts {
                    if let (Some(e), Some(first)) = (p.experts, s.first_mut()) {
                        *first = e.div_ceil(par.ep_size().max(1));
                    }
                }
            }
            _ => split(&mut s, dim, tp),
        }
        s
    }

    /// Elements of a quantization companion on one rank: block scales over the rank's whole
    /// (merged) output, refined for experts whose shard is not whole blocks; one per output row for
    /// channel scales; one per shard for per-tensor scales.
    fn scale_numel(
        &self,
        p: &Expected,
        layout: ScaleLayout,
        input: bool,
        weight: &[(&str, Vec<u64>)],
        local_experts: Option<u64>,
        par: &Parallel,
    ) -> u64 {
        let per_expert = local_experts.unwrap_or(1);
        if input {
            return local_experts.unwrap_or(weight.len() as u64);
        }
        let shapes: Vec<Vec<u64>> = weight.iter().map(|(id, s)| self.rank_shape(p, id, s, par)).collect();
        let rows: u64 = shapes.iter().map(|s| s.first().copied().unwrap_or(1)).sum();
        let cols = shapes.first().and_then(|s| s.get(1)).copied().unwrap_or(1);
        let n = match layout {
            ScaleLayout::Block { n: bn, k: bk } => {
                let (bn, bk) = match self.expert_blocks(p, par) {
                    Some(MoeBlocks::Refined(r)) => (r, r),
                    _ => (bn, bk),
                };
                rows.div_ceil(bn.max(1)).saturating_mul(cols.div_ceil(bk.max(1)))
            }
            ScaleLayout::Channel => rows,
            ScaleLayout::Tensor => weight.len().max(1) as u64,
        };
        n.saturating_mul(per_expert)
    }
}

/// A merged layer whose block scales vLLM cannot load: shard `shard`'s scale rows
/// `[start, start + len)` do not fit in the `dim` rows allocated for the whole output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleOverflow {
    pub param: String,
    pub shard: String,
    pub start: u64,
    pub len: u64,
    pub dim: u64,
}

impl ModelSpec {
    /// The first merged block-fp8 layer (QKV, gate_up, fused_qkv_a) whose sub-shards are not whole
    /// blocks on a rank. vLLM 0.33.0 allocates the scale for the whole output,
    /// ceil(Σ shard rows / block_n) rows, and loads each shard's scale at row ceil(offset / block_n)
    /// with ceil(rows / block_n) rows (`linear.py` weight_loader_v2 → `BlockQuantScaleParameter`
    /// shard offsets rounded up to blocks); a shard that starts inside a block runs past the end:
    /// `RuntimeError: start (S) + length (L) exceeds dimension size (D).` at load (oracle:
    /// fixtures/qwen3-dense-fp8 at TP 1, 64 + 32 + 32 rows in one 128-row block).
    pub fn merged_scale_overflow(&self, par: &Parallel) -> Option<ScaleOverflow> {
        for p in self.params.iter().filter(|p| p.role != Role::Mtp && p.partition != Partition::Expert) {
            let Some(of) = p.scale_of.as_ref().filter(|of| !of.input && of.weight_shards.len() > 1) else { continue };
            let ScaleLayout::Block { n: bn, .. } = of.layout else { continue };
            let bn = bn.max(1);
            let mut shards: Vec<(&str, u64)> = of
                .weight_shards
                .iter()
                .map(|(id, s)| {
                    let rows = self.rank_shape(p, id, s.as_deref().unwrap_or_default(), par).first().copied();
                    (id.as_str(), rows.unwrap_or(0))
                })
                .collect();
            // vLLM's shard order: q, k, v; numbered shards by number.
            shards.sort_by_key(|(id, _)| match *id {
                "q" => 0,
                "k" => 1,
                "v" => 2,
                n => 3 + n.parse::<u64>().unwrap_or(u64::MAX - 3),
            });
            let dim = shards.iter().map(|(_, r)| r).sum::<u64>().div_ceil(bn);
            let mut offset = 0u64;
            for (id, rows) in shards {
                let (start, len) = (offset.div_ceil(bn), rows.div_ceil(bn));
                if start.saturating_add(len) > dim {
                    return Some(ScaleOverflow { param: p.name.clone(), shard: id.to_string(), start, len, dim });
                }
                offset = offset.saturating_add(rows);
            }
        }
        None
    }
}

impl ModelSpec {
    /// The errors vLLM 0.33.0 raises loading the checkpoint's expert block scales into scales it
    /// refined to `r`x`r` ([`MoeBlocks::Refined`]). The loader (fused_moe/routed_experts.py ::
    /// weight_loader) upsamples the checkpoint's grid, ceil(I / block) × (block / r) per dimension,
    /// then takes rank 0's 1/TP of it; the grid only fits the refined parameter when the global
    /// intermediate and hidden sizes are whole checkpoint blocks. Otherwise `copy_` fails with
    /// torch's broadcast error, checked from the last dimension (oracle: qwen3-moe-fp8 at TP 1,
    /// intermediate 32 and hidden 64 with 128x128 blocks).
    pub fn refined_scale_load_errors(&self, par: &Parallel) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let Some((bn, bk)) = self.block else { return out };
        let tp = par.moe_tp().max(1);
        for p in self.params.iter().filter(|p| p.role != Role::Mtp && p.scale_of.as_ref().is_some_and(|of| !of.input)) {
            let Some(MoeBlocks::Refined(r)) = self.expert_blocks(p, par) else { continue };
            let Some(of) = &p.scale_of else { continue };
            for (id, shape) in &of.weight_shards {
                let Some([rows, cols]) = shape.as_deref().and_then(|s| <[u64; 2]>::try_from(s).ok()) else {
                    continue;
                };
                let r = r.max(1);
                // Checkpoint scale grid, upsampled to r-blocks; rank 0 narrows the TP-split dimension.
                let up_rows = rows.div_ceil(bn.max(1)).saturating_mul(bn / r);
                let up_cols = cols.div_ceil(bk.max(1)).saturating_mul(bk / r);
                let (dst, src) = if id == "w2" {
                    // [hidden, intermediate]: split on the input dimension.
                    ([rows.div_ceil(r), cols.div_ceil(tp).div_ceil(r)], [up_rows, (up_cols / tp).min(up_cols)])
                } else {
                    ([rows.div_ceil(tp).div_ceil(r), cols.div_ceil(r)], [(up_rows / tp).min(up_rows), up_cols])
                };
                for d in [1usize, 0] {
                    let (a, b) = (dst[d], src[d]);
                    if a != b && a != 1 && b != 1 {
                        let msg = format!(
                            "RuntimeError: The size of tensor a ({a}) must match the size of tensor b ({b}) at non-singleton dimension {d}"
                        );
                        if !out.contains(&msg) {
                            out.push(msg);
                        }
                        break;
                    }
                }
            }
        }
        out
    }
}

/// The weight a weight-scale companion belongs to (`….weight_scale_inv` → `….weight`).
fn scaled_weight(scale: &str, quant: Option<&QuantScheme>) -> Option<String> {
    let suffix = quant?.scale_suffix.unwrap_or("weight_scale_inv");
    Some(format!("{}weight", scale.strip_suffix(suffix)?))
}

fn numel(s: &[u64]) -> u64 {
    s.iter().fold(1u64, |a, &d| a.saturating_mul(d))
}

fn gcd(a: u64, b: u64) -> u64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}

/// The block an expert's fp8 scales use on a rank whose intermediate shard is `i` wide: vLLM
/// 0.33.0 (`fused_moe/oracle/fp8.py :: refine_fp8_moe_block_shape`) refines a shard that is not
/// whole blocks to gcd(bn, bk, i, hidden) when that is at least 32; otherwise keeps the
/// checkpoint's block (and the fp8-block rule says whether vLLM then refuses it).
pub fn moe_scale_block(bn: u64, bk: u64, i: u64, hidden: u64, moe_tp: u64) -> (u64, u64) {
    let aligned = i % bn.max(1) == 0 && (moe_tp == 1 || i % bk.max(1) == 0);
    if aligned {
        return (bn, bk);
    }
    let r = gcd(gcd(bn, bk), gcd(i, hidden));
    if r >= 32 {
        (r, r)
    } else {
        (bn, bk)
    }
}
