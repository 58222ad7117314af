//! The parameters the plan rules reason about: a view of the one model ([`crate::model::ModelSpec`]),
//! one entry per shard with its global shape, layer and TP partition.

use crate::arch::Partition;
use crate::checkpoint::names::pattern;

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

/// One shard of a parameter as the rules read it (memory is counted by the model itself).
#[derive(Debug, Clone)]
pub struct Param {
    /// Module path with layer and expert indices replaced by `*` (e.g. `model.layers.*.mlp.down_proj`).
    pub module: String,
    pub partition: Partition,
    /// Global `[out, in]` of one member (1-D tensors: `[len, 1]`).
    pub out: u64,
    pub inp: u64,
    pub role: Role,
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

pub(crate) use crate::checkpoint::dtype::model_dtype_bytes as dtype_bytes;

impl ModelShape {
    /// The rules' view of the one model, with the notes of how it was found (none without a model:
    /// sizes out of range, or a rule set without the generic family).
    pub fn of(spec: Option<&crate::model::ModelSpec>, source: &'static str, notes: Vec<String>) -> ModelShape {
        let mut shape = match spec {
            Some(s) => ModelShape::from_spec(s, source),
            None => ModelShape { params: Vec::new(), source, notes: Vec::new() },
        };
        shape.notes = notes;
        shape
    }

    /// The one model's parameters as the rules read them: one entry per shard (an expert shard's
    /// module ends in its FusedMoE shard id, `w1` / `w2` / `w3`), global shapes from the config.
    pub fn from_spec(spec: &crate::model::ModelSpec, source: &'static str) -> ModelShape {
        use crate::model::expected::Role as SpecRole;
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
                    // Routed experts: [experts, out, in].
                    [_, n, k, ..] if p.partition == Partition::Expert => (*n, *k),
                    // Any other 3-D+ weight splits on dim 0 like a linear layer's output (Mamba's conv1d,
                    // [intermediate, 1, kernel]: vllm/model_executor/layers/mamba/mamba_mixer.py,
                    // MambaMixer.__init__, a ColumnParallelLinear whose weight is unsqueezed to 3-D).
                    [n, rest @ ..] => (*n, rest.iter().product()),
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
                params.push(Param {
                    module,
                    partition,
                    out,
                    inp,
                    role,
                    fp8_block: fp8 && spec.block_quantized,
                    is_weight: leaf.ends_with("weight") && shape.len() >= 2,
                });
            }
        }
        ModelShape { params, source, notes: Vec::new() }
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
