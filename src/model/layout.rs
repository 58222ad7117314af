//! How vLLM lays a model over ranks, as pure arithmetic: the padded vocabulary, the pipeline
//! stages, and the per-rank weight bytes the spec sums.

use serde::Serialize;

/// vLLM's `DEFAULT_VOCAB_PADDING_SIZE`.
pub const VOCAB_PADDING: u64 = 64;

pub fn padded_vocab(v: u64) -> u64 {
    v.div_ceil(VOCAB_PADDING).saturating_mul(VOCAB_PADDING)
}

/// vLLM's `get_pp_indices`: `layers // pp` each, the remainder given one by one to the stages
/// before the last (the last stage also holds the lm_head).
pub fn pp_partition(layers: u64, pp: u64) -> Vec<u64> {
    let pp = pp.max(1);
    let mut parts = vec![layers / pp; pp as usize];
    let rem = (layers % pp) as usize;
    for i in 2..rem + 2 {
        let at = parts.len() - i;
        parts[at] += 1;
    }
    parts
}

/// The pipeline stage holding decoder layer `layer` under `parts` (layers per stage); layers beyond
/// the last stage's end (none in a valid config) go to the last.
pub fn stage_of(layer: u64, parts: &[u64]) -> usize {
    let mut end = 0u64;
    for (s, n) in parts.iter().enumerate() {
        end = end.saturating_add(*n);
        if layer < end {
            return s;
        }
    }
    parts.len().saturating_sub(1)
}

/// The weight bytes on the most loaded rank.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct RankWeights {
    /// As stored in the checkpoint (fp8 with scales where it is fp8).
    pub stored: u64,
    /// With fp8 weights as bf16 and scales dropped.
    pub bf16: u64,
}
