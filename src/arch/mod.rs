//! Architecture knowledge as data. `audit.json` holds the naming conventions the audit relies on;
//! it is embedded in the binary so the tool works offline and alone.

pub mod coverage;
pub mod expr;
pub mod registry;
pub mod rules;

use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::OnceLock;

#[derive(Debug, Deserialize)]
pub struct AuditRules {
    pub pretrained_tie_default: bool,
    pub tie_defaults: BTreeMap<String, bool>,
    pub stack_segments: Vec<String>,
    pub expert_segments: Vec<String>,
    pub non_text_prefixes: Vec<String>,
    pub mtp_prefixes: Vec<String>,
    pub mtp_markers: Vec<String>,
    pub embedding_suffixes: Vec<String>,
    pub lm_head_suffixes: Vec<String>,
    pub q_norm_suffixes: Vec<String>,
    pub k_norm_suffixes: Vec<String>,
    pub kv_scale_suffixes: Vec<String>,
}

impl AuditRules {
    /// `tie_word_embeddings` as transformers resolves it when config.json omits it: the model type's
    /// default, else PretrainedConfig's.
    pub fn tie_default(&self, model_types: &[Option<&str>]) -> (bool, Option<String>) {
        model_types
            .iter()
            .flatten()
            .find_map(|mt| self.tie_defaults.get(*mt).map(|d| (*d, Some(mt.to_string()))))
            .unwrap_or((self.pretrained_tie_default, None))
    }
}

pub fn audit_rules() -> &'static AuditRules {
    static RULES: OnceLock<AuditRules> = OnceLock::new();
    RULES.get_or_init(|| serde_json::from_str(include_str!("audit.json")).expect("embedded arch/audit.json is valid"))
}

/// How vLLM splits a module across tensor-parallel ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Partition {
    /// `ColumnParallelLinear` with one output: rows split by TP.
    Column,
    /// `RowParallelLinear`: columns (the input) split by TP.
    Row,
    /// `MergedColumnParallelLinear` (gate_up): several outputs, each split by TP.
    Merged,
    /// The q part of `QKVParallelLinear`: split by TP.
    QkvQ,
    /// The k or v part of `QKVParallelLinear`: split by min(TP, kv heads), replicated beyond.
    QkvKv,
    /// A fused qkv tensor in the checkpoint.
    Qkv,
    /// Every rank holds all of it.
    Replicated,
    /// `VocabParallelEmbedding` / `ParallelLMHead`: vocab padded to 64, then split by TP.
    Vocab,
    /// Routed experts (`FusedMoE`): split by TP×DP without EP, whole experts per rank with EP.
    Expert,
}

/// How a family's q/k norm weights behave under TP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum QkNorm {
    PerHead,
    FullGather,
    FullSharded,
}

#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyParallel {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qk_norm: Option<QkNorm>,
    #[serde(default = "yes")]
    pub kv_replication: bool,
    #[serde(default)]
    pub tp_le_experts: bool,
    /// The model has no attention layers (vLLM's `IsAttentionFree` interface,
    /// vllm/model_executor/models/interfaces.py: `is_attention_free = True`; MambaForCausalLM in
    /// mamba.py, Mamba2ForCausalLM in mamba2.py): its config has no `num_attention_heads`, and vLLM
    /// builds it without one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub attention_free: bool,
}

fn yes() -> bool {
    true
}

impl Default for FamilyParallel {
    fn default() -> Self {
        FamilyParallel { qk_norm: None, kv_replication: true, tp_le_experts: false, attention_free: false }
    }
}

#[derive(Debug, Deserialize)]
pub struct ParallelRules {
    pub families: BTreeMap<String, FamilyParallel>,
}

impl ParallelRules {
    /// The family entry for a model_type, or the generic decoder's.
    pub fn family(&self, model_type: Option<&str>) -> FamilyParallel {
        model_type.and_then(|m| self.families.get(m)).cloned().unwrap_or_default()
    }
}

pub fn parallel_rules() -> &'static ParallelRules {
    static RULES: OnceLock<ParallelRules> = OnceLock::new();
    RULES.get_or_init(|| {
        serde_json::from_str(include_str!("parallel.json")).expect("embedded arch/parallel.json is valid")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_types_without_a_family_file() {
        let r = parallel_rules();
        assert_eq!(r.family(Some("minimax_m2")).qk_norm, Some(QkNorm::FullSharded));
        assert!(r.family(Some("qwen2_moe")).tp_le_experts);
        assert!(r.family(Some("unknown")).kv_replication);
    }

    #[test]
    fn embedded_rules_parse() {
        let r = super::audit_rules();
        assert_eq!(r.tie_defaults.get("gemma3"), Some(&true));
        assert_eq!(r.tie_defaults.get("qwen2_5_vl_text"), Some(&false));
    }
}
