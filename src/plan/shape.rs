//! The parameters a plan reasons about: derived from config.json alone, or read from the real tensors
//! when weights are present. Each carries its global shape, bytes, layer and TP partition.

use crate::arch::{parallel_rules, Partition};
use crate::audit::names::{pattern, split_layer};
use crate::checkpoint::config::ModelConfig;
use crate::checkpoint::Checkpoint;
use crate::quant::scheme::{QuantScheme, ScaleLayout};

/// What part of the model a parameter belongs to, for pipeline-stage placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// In decoder layer `n`.
    Layer(u64),
    /// The input embedding (first stage).
    Embed,
    /// lm_head and the final norm (last stage).
    Head,
    /// MTP / speculative layers: not part of the main model's memory.
    Mtp,
    /// Vision or audio towers (replicated on every rank that runs the tower; first stage).
    Tower,
}

/// One parameter, or a group of identical ones (all experts of a projection in one layer).
#[derive(Debug, Clone)]
pub struct Param {
    /// Module path with layer and expert indices replaced by `*` (e.g. `model.layers.*.mlp.down_proj`).
    pub module: String,
    pub partition: Partition,
    /// Global `[out, in]` of one member (1-D tensors: `[len, 1]`).
    pub out: u64,
    pub inp: u64,
    pub role: Role,
    /// Bytes as stored (weights plus their quantization scales), all members together.
    pub bytes: u64,
    /// Bytes once fp8 members are bf16 and their scales dropped.
    pub bf16_bytes: u64,
    /// A block-fp8 weight (its scale is a separate, scale-only Param).
    pub fp8_block: bool,
    /// A weight, not a bias/scale/norm: only weights are checked for fp8 block shapes.
    pub is_weight: bool,
}

/// The parameter set and where it came from.
#[derive(Debug, Clone)]
pub struct ModelShape {
    pub params: Vec<Param>,
    /// `"weights"` (real tensors) or `"config"` (derived from config.json).
    pub source: &'static str,
    pub notes: Vec<String>,
}

pub(crate) fn dtype_bytes(torch_dtype: Option<&str>) -> u64 {
    match torch_dtype {
        Some("float32") | Some("fp32") => 4,
        _ => 2,
    }
}

impl ModelShape {
    /// From the real tensors: every tensor a loader would see, classified by its leaf module.
    pub fn from_checkpoint(ck: &Checkpoint, cfg: &ModelConfig) -> ModelShape {
        let rules = parallel_rules();
        let audit = crate::arch::audit_rules();
        let n_layers = cfg.num_layers.unwrap_or(u64::MAX);
        let mut params = Vec::with_capacity(ck.tensor_count());
        for t in ck.tensors() {
            let e = t.entry;
            let name = e.name.as_str();
            let leaf = name.rsplit('.').next().unwrap_or("");
            let module = name.rsplit_once('.').map_or(name, |(m, _)| m);
            let is_tower =
                audit.non_text_prefixes.iter().any(|p| name.starts_with(p.as_str()) && !p.starts_with("mtp"));
            let role = if name.starts_with("mtp.") {
                Role::Mtp
            } else if is_tower {
                Role::Tower
            } else if let Some(l) = split_layer(name, audit).map(|l| l.layer) {
                if l >= n_layers {
                    Role::Mtp
                } else {
                    Role::Layer(l)
                }
            } else if audit.embedding_suffixes.iter().any(|s| name.ends_with(s.as_str())) {
                Role::Embed
            } else {
                Role::Head
            };
            let mut partition = rules.partition_of(name);
            if cfg.mla.is_some() && partition == Partition::QkvQ {
                partition = Partition::Column;
            }
            let (out, inp) = match e.shape.as_slice() {
                [] => (1, 1),
                [n] => (*n, 1),
                [n, k] => (*n, *k),
                // Fused expert tensors [E, N, K]: one member's shape.
                [_, n, k, ..] => (*n, *k),
            };
            let fp8 = e.dtype.is_fp8_weight();
            let is_scale = leaf.contains("scale");
            let bytes = e.nbytes();
            let bf16_bytes = if fp8 {
                e.numel().saturating_mul(2)
            } else if is_scale && is_fp8_scale(ck, module) {
                0
            } else {
                bytes
            };
            params.push(Param {
                module: pattern(module),
                partition,
                out,
                inp,
                role,
                bytes,
                bf16_bytes,
                fp8_block: fp8 && leaf == "weight",
                is_weight: leaf == "weight" && e.shape.len() >= 2,
            });
        }
        ModelShape { params, source: "weights", notes: Vec::new() }
    }

    /// The one model's parameters as the rules read them: one entry per shard (an expert shard's
    /// module ends in its FusedMoE shard id, `w1` / `w2` / `w3`), global shapes from the config.
    pub fn from_spec(spec: &crate::model::ModelSpec, source: &'static str) -> ModelShape {
        use crate::remap::Role as SpecRole;
        let mut params = Vec::with_capacity(spec.params.len());
        for p in spec.params.iter().filter(|p| p.scale_of.is_none()) {
            let (module, leaf) = p.name.rsplit_once('.').unwrap_or((p.name.as_str(), ""));
            let module = pattern(module);
            let role = match p.role {
                SpecRole::Layer(l) => Role::Layer(l),
                SpecRole::Embed => Role::Embed,
                SpecRole::Head => Role::Head,
                SpecRole::Tower => Role::Tower,
                SpecRole::Mtp => Role::Mtp,
            };
            let fp8 = spec.is_quantized(&p.name);
            for (id, shape) in &p.shards {
                let shape = shape.clone().unwrap_or_default();
                let (out, inp) = match shape.as_slice() {
                    [] => (1, 1),
                    [n] => (*n, 1),
                    [n, k] => (*n, *k),
                    [_, n, k, ..] => (*n, *k),
                };
                let partition = match (p.partition, id.as_str()) {
                    (Partition::QkvKv, "q") => Partition::QkvQ,
                    (part, _) => part,
                };
                let module = if p.partition == Partition::Expert && !id.is_empty() {
                    format!("{module}.{id}")
                } else {
                    module.clone()
                };
                let n = out.saturating_mul(inp);
                params.push(Param {
                    module,
                    partition,
                    out,
                    inp,
                    role,
                    bytes: n.saturating_mul(if fp8 { 1 } else { spec.elem }),
                    bf16_bytes: n.saturating_mul(2),
                    fp8_block: fp8 && spec.block_quantized,
                    is_weight: leaf.ends_with("weight") && shape.len() >= 2,
                });
            }
        }
        ModelShape { params, source, notes: Vec::new() }
    }

    /// From config.json alone: the generic decoder (GQA or MLA attention; dense, MoE and shared-expert
    /// MLPs) at the config's sizes and dtype; fp8 linear weights where the quantization config says so.
    /// `fam`: the family's TP behaviour (its q/k norms).
    pub fn from_config(
        cfg: &ModelConfig,
        quant: Option<&QuantScheme>,
        fam: &crate::arch::FamilyParallel,
    ) -> ModelShape {
        if let Err(why) = cfg.sizes_in_range() {
            return ModelShape {
                params: Vec::new(),
                source: "config",
                notes: vec![format!("config.json: {why}; no parameters derived")],
            };
        }
        let mut b = Builder::new(cfg, quant);
        let h = cfg.hidden_size.unwrap_or(0);
        let nh = cfg.num_heads.unwrap_or(0);
        let nkv = cfg.num_kv_heads.unwrap_or(nh);
        let hd = cfg.head_dim.unwrap_or(0);
        for l in 0..cfg.num_layers.unwrap_or(0) {
            let r = Role::Layer(l);
            let p = |m: &str| format!("model.layers.*.{m}");
            b.norm(&p("input_layernorm"), h, r);
            b.norm(&p("post_attention_layernorm"), h, r);
            if let Some(mla) = &cfg.mla {
                let rope = mla.qk_rope_head_dim.unwrap_or(0);
                let nope = mla.qk_nope_head_dim.unwrap_or(0);
                let v = mla.v_head_dim.unwrap_or(0);
                if let Some(ql) = mla.q_lora_rank {
                    b.linear(&p("self_attn.q_a_proj"), Partition::Replicated, ql, h, r);
                    b.norm(&p("self_attn.q_a_layernorm"), ql, r);
                    b.linear(
                        &p("self_attn.q_b_proj"),
                        Partition::Column,
                        nh.saturating_mul(nope.saturating_add(rope)),
                        ql,
                        r,
                    );
                } else {
                    b.linear(
                        &p("self_attn.q_proj"),
                        Partition::Column,
                        nh.saturating_mul(nope.saturating_add(rope)),
                        h,
                        r,
                    );
                }
                b.linear(
                    &p("self_attn.kv_a_proj_with_mqa"),
                    Partition::Replicated,
                    mla.kv_lora_rank.saturating_add(rope),
                    h,
                    r,
                );
                b.norm(&p("self_attn.kv_a_layernorm"), mla.kv_lora_rank, r);
                b.linear(
                    &p("self_attn.kv_b_proj"),
                    Partition::Column,
                    nh.saturating_mul(nope.saturating_add(v)),
                    mla.kv_lora_rank,
                    r,
                );
                b.linear(&p("self_attn.o_proj"), Partition::Row, h, nh.saturating_mul(v), r);
            } else {
                b.linear(&p("self_attn.q_proj"), Partition::QkvQ, nh.saturating_mul(hd), h, r);
                b.linear(&p("self_attn.k_proj"), Partition::QkvKv, nkv.saturating_mul(hd), h, r);
                b.linear(&p("self_attn.v_proj"), Partition::QkvKv, nkv.saturating_mul(hd), h, r);
                b.linear(&p("self_attn.o_proj"), Partition::Row, h, nh.saturating_mul(hd), r);
                match fam.qk_norm {
                    Some(crate::arch::QkNorm::PerHead) => {
                        b.norm(&p("self_attn.q_norm"), hd, r);
                        b.norm(&p("self_attn.k_norm"), hd, r);
                    }
                    Some(_) => {
                        b.norm(&p("self_attn.q_norm"), nh.saturating_mul(hd), r);
                        b.norm(&p("self_attn.k_norm"), nkv.saturating_mul(hd), r);
                    }
                    None => {}
                }
            }
            match &cfg.moe {
                Some(moe) if moe.is_moe_layer(l) => {
                    let e = moe.num_experts;
                    let im = moe.moe_intermediate_size.or(cfg.intermediate_size).unwrap_or(0);
                    b.linear(&p("mlp.gate"), Partition::Replicated, e, h, r);
                    b.experts(&p("mlp.experts.*.gate_proj"), e, im, h, r);
                    b.experts(&p("mlp.experts.*.up_proj"), e, im, h, r);
                    b.experts(&p("mlp.experts.*.down_proj"), e, h, im, r);
                    let shared = match (moe.shared_experts, moe.shared_expert_intermediate_size) {
                        (Some(n), _) if n > 0 => Some(("mlp.shared_experts", n.saturating_mul(im))),
                        (_, Some(si)) if si > 0 => Some(("mlp.shared_expert", si)),
                        _ => None,
                    };
                    if let Some((m, si)) = shared {
                        b.mlp(&p(m), si, h, r);
                    }
                }
                _ => {
                    let i = cfg.dense_intermediate_size.or(cfg.intermediate_size).unwrap_or(0);
                    b.mlp(&p("mlp"), i, h, r);
                }
            }
        }
        let v = cfg.vocab_size.unwrap_or(0);
        b.unquantized("model.embed_tokens", Partition::Vocab, v, h, Role::Embed);
        b.norm("model.norm", h, Role::Head);
        if cfg.tie_word_embeddings != Some(true) {
            b.unquantized("lm_head", Partition::Vocab, v, h, Role::Head);
        }
        let mut notes = vec!["weights derived from config.json (no safetensors present): the generic decoder's parameters at the config's sizes".to_string()];
        if cfg.has_vision || cfg.has_audio {
            notes.push("vision/audio towers are not counted from a config alone".to_string());
        }
        if cfg.layer_types.as_ref().is_some_and(|t| t.iter().any(|x| x.contains("linear"))) {
            notes.push(
                "linear-attention layers are counted as full attention (an upper bound) from a config alone"
                    .to_string(),
            );
        }
        if let Some(q) = quant {
            if q.fp8_scale.is_none() {
                notes.push(format!(
                    "quantization `{}` is not modelled from a config alone: weight bytes assume {}",
                    q.method,
                    cfg.torch_dtype.as_deref().unwrap_or("bfloat16")
                ));
            }
        }
        ModelShape { params: b.params, source: "config", notes }
    }
}

/// Whether `module`'s weight is fp8 (so its scale disappears when converted to bf16).
fn is_fp8_scale(ck: &Checkpoint, module: &str) -> bool {
    ck.get(&format!("{module}.weight")).is_some_and(|t| t.entry.dtype.is_fp8_weight())
}

struct Builder<'a> {
    params: Vec<Param>,
    elem: u64,
    quant: Option<&'a QuantScheme>,
}

impl<'a> Builder<'a> {
    fn new(cfg: &ModelConfig, quant: Option<&'a QuantScheme>) -> Self {
        Builder { params: Vec::new(), elem: dtype_bytes(cfg.torch_dtype.as_deref()), quant }
    }

    #[allow(clippy::too_many_arguments)]
    fn push(&mut self, module: &str, partition: Partition, out: u64, inp: u64, role: Role, count: u64, quantize: bool) {
        let n = out.saturating_mul(inp).saturating_mul(count);
        let fp8 = quantize && self.fp8_layout(module).is_some();
        let (bytes, bf16) = if fp8 {
            // Config sizes are the user's file: saturate, never overflow (a fuzzed config found it).
            let scale = match self.fp8_layout(module) {
                Some(ScaleLayout::Block { n: bn, k: bk }) => {
                    out.div_ceil(bn.max(1)).saturating_mul(inp.div_ceil(bk.max(1))).saturating_mul(4)
                }
                Some(ScaleLayout::Channel) => out.saturating_mul(4),
                _ => 4,
            };
            (n.saturating_add(scale.saturating_mul(count)), n.saturating_mul(2))
        } else {
            (n.saturating_mul(self.elem), n.saturating_mul(self.elem))
        };
        self.params.push(Param {
            module: module.to_string(),
            partition,
            out,
            inp,
            role,
            bytes,
            bf16_bytes: bf16,
            fp8_block: fp8 && matches!(self.fp8_layout(module), Some(ScaleLayout::Block { .. })),
            is_weight: true,
        });
    }

    fn fp8_layout(&self, module: &str) -> Option<ScaleLayout> {
        let q = self.quant?;
        let layout = q.fp8_scale?;
        if q.is_not_converted(module) == Some(true) {
            return None;
        }
        Some(layout)
    }

    fn linear(&mut self, module: &str, partition: Partition, out: u64, inp: u64, role: Role) {
        self.push(module, partition, out, inp, role, 1, true);
    }
    fn unquantized(&mut self, module: &str, partition: Partition, out: u64, inp: u64, role: Role) {
        self.push(module, partition, out, inp, role, 1, false);
    }
    fn experts(&mut self, module: &str, e: u64, out: u64, inp: u64, role: Role) {
        self.push(module, Partition::Expert, out, inp, role, e, true);
    }
    fn mlp(&mut self, prefix: &str, i: u64, h: u64, role: Role) {
        self.linear(&format!("{prefix}.gate_proj"), Partition::Merged, i, h, role);
        self.linear(&format!("{prefix}.up_proj"), Partition::Merged, i, h, role);
        self.linear(&format!("{prefix}.down_proj"), Partition::Row, h, i, role);
    }
    fn norm(&mut self, module: &str, len: u64, role: Role) {
        let bytes = len.saturating_mul(self.elem);
        self.params.push(Param {
            module: module.to_string(),
            partition: Partition::Replicated,
            out: len,
            inp: 1,
            role,
            bytes,
            bf16_bytes: bytes,
            fp8_block: false,
            is_weight: false,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_and_layers() {
        assert_eq!(pattern("model.layers.12.mlp.experts.7.w1"), "model.layers.*.mlp.experts.*.w1");
    }
}
