//! Per-rank weight bytes and KV-cache bytes, as vLLM lays them out at a parallel configuration.

use super::Parallel;
use crate::arch::FamilyParallel;
use crate::checkpoint::config::ModelConfig;
use serde::Serialize;

pub use crate::model::layout::{padded_vocab, pp_partition, stage_of, RankWeights, VOCAB_PADDING};

/// What one rank's KV cache holds per token and per sequence.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct KvCache {
    /// Bytes per token over every attention layer, as if each kept the whole context (an upper bound
    /// for sliding-window layers).
    pub bytes_per_token: u64,
    /// Bytes one sequence of `max_model_len` tokens needs: sliding-window layers capped at their
    /// window, linear-attention layers as their constant state.
    pub bytes_per_seq: u64,
    pub full_layers: u64,
    pub sliding_layers: u64,
    pub linear_layers: u64,
    /// Latent (MLA) cache: one vector of kv_lora_rank + qk_rope_head_dim per token and layer, on every rank.
    pub mla: bool,
    /// Layers whose cache is int8 (ModelSlim C8), counted at one byte per element.
    pub int8_layers: u64,
}

#[derive(Clone, Copy, PartialEq)]
enum LayerKind {
    Full,
    Sliding(u64),
    Linear,
}

fn layer_kinds(cfg: &ModelConfig) -> Vec<LayerKind> {
    let n = if cfg.sizes_in_range().is_ok() { cfg.num_layers.unwrap_or(0) as usize } else { 0 };
    let window = cfg.sliding_window.filter(|&w| w > 0);
    if let Some(types) = &cfg.layer_types {
        return (0..n)
            .map(|i| match types.get(i).map(String::as_str) {
                Some(t) if t.contains("linear") => LayerKind::Linear,
                Some(t) if t.contains("sliding") => window.map_or(LayerKind::Full, LayerKind::Sliding),
                _ => LayerKind::Full,
            })
            .collect();
    }
    if let Some(k) = cfg.full_attention_interval.filter(|&k| k > 0) {
        if cfg.linear_attention.is_some() {
            return (0..n as u64).map(|i| if (i + 1) % k == 0 { LayerKind::Full } else { LayerKind::Linear }).collect();
        }
    }
    match window {
        Some(w) if cfg.use_sliding_window != Some(false) => vec![LayerKind::Sliding(w); n],
        _ => vec![LayerKind::Full; n],
    }
}

/// `int8_layers`: decoder layers whose KV cache is int8 whatever `elem` is (ModelSlim C8 on
/// vLLM-Ascend: [`crate::quant::modelslim::Description::c8_layers`]).
pub fn kv_cache(
    cfg: &ModelConfig,
    fam: &FamilyParallel,
    par: &Parallel,
    elem: u64,
    max_model_len: u64,
    int8_layers: &std::collections::BTreeSet<u64>,
) -> KvCache {
    let tp = par.tp.max(1);
    let kinds = layer_kinds(cfg);
    let per_layer_token = if let Some(mla) = &cfg.mla {
        // Config sizes are the user's file: saturate, never overflow (a fuzzed config found it).
        let mut b = mla.kv_lora_rank.saturating_add(mla.qk_rope_head_dim.unwrap_or(0)).saturating_mul(elem);
        if cfg.index_topk.is_some() {
            // DeepSeek sparse attention's indexer keys: 128 fp8 values and one f32 scale per token.
            b = b.saturating_add(128 + 4);
        }
        b
    } else {
        let nkv = cfg.num_kv_heads.or(cfg.num_heads).unwrap_or(0);
        let per_rank = if fam.kv_replication && tp >= nkv { 1.min(nkv) } else { nkv / tp };
        per_rank.saturating_mul(2).saturating_mul(cfg.head_dim.unwrap_or(0)).saturating_mul(elem)
    };
    let linear_state = cfg.linear_attention.as_ref().map_or(0, |la| {
        let ssm = (la.num_value_heads / tp).saturating_mul(la.key_head_dim).saturating_mul(la.value_head_dim);
        let conv = la.conv_kernel_dim.saturating_sub(1).saturating_mul(
            la.num_key_heads
                .saturating_mul(2)
                .saturating_mul(la.key_head_dim)
                .saturating_add(la.num_value_heads.saturating_mul(la.value_head_dim)),
        ) / tp;
        ssm.saturating_add(conv).saturating_mul(elem)
    });
    let mut kv = KvCache { mla: cfg.mla.is_some(), int8_layers: 0, ..Default::default() };
    // One element's bytes scale a layer's token: an int8 (C8) layer holds per_layer_token / elem * 1.
    let int8_token = per_layer_token.checked_div(elem.max(1)).unwrap_or(0);
    for (i, k) in kinds.into_iter().enumerate() {
        let per_layer_token = if int8_layers.contains(&(i as u64)) && !matches!(k, LayerKind::Linear) {
            kv.int8_layers += 1;
            int8_token
        } else {
            per_layer_token
        };
        match k {
            LayerKind::Full => {
                kv.full_layers += 1;
                kv.bytes_per_token = kv.bytes_per_token.saturating_add(per_layer_token);
                kv.bytes_per_seq = kv.bytes_per_seq.saturating_add(per_layer_token.saturating_mul(max_model_len));
            }
            LayerKind::Sliding(w) => {
                kv.sliding_layers += 1;
                kv.bytes_per_token = kv.bytes_per_token.saturating_add(per_layer_token);
                kv.bytes_per_seq =
                    kv.bytes_per_seq.saturating_add(per_layer_token.saturating_mul(max_model_len.min(w)));
            }
            LayerKind::Linear => {
                kv.linear_layers += 1;
                kv.bytes_per_seq = kv.bytes_per_seq.saturating_add(linear_state);
            }
        }
    }
    kv
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pp_partition_matches_vllm() {
        // get_pp_indices(61, ·, 4): 15 each, remainder 1 to the stage before the last.
        assert_eq!(pp_partition(61, 4), vec![15, 15, 16, 15]);
        assert_eq!(pp_partition(62, 4), vec![15, 16, 16, 15]);
        assert_eq!(pp_partition(8, 1), vec![8]);
        assert_eq!(stage_of(30, &[15, 15, 16, 15]), 2);
    }

    #[test]
    fn padded_vocab_is_multiple_of_64() {
        assert_eq!(padded_vocab(129_280), 129_280);
        assert_eq!(padded_vocab(151_936), 151_936);
        assert_eq!(padded_vocab(32_001), 32_064);
    }
}
