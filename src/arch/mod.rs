//! Architecture knowledge as data. `audit.json` holds the naming conventions the audit relies on;
//! it is embedded in the binary so the tool works offline and alone.

pub mod coverage;
pub mod expr;
pub mod registry;
pub mod rules;

use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::OnceLock;

#[derive(Debug, Clone, Deserialize)]
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

impl AuditRules {
    /// The naming conventions for a checkpoint of `family`: what the family's spec says where it says
    /// it — its MTP layout (prefix-style stacks, the draft model's own modules as markers), its
    /// q / k norms, embedding and lm_head parameters — and these generic conventions for the rest
    /// (checkpoint names a family's mapper renames still match them).
    pub fn for_family(&self, family: &rules::Family) -> AuditRules {
        use rules::{ParamRole, QkSide};
        let mut r = self.clone();
        if let Some(mtp) = &family.mtp {
            r.mtp_prefixes = mtp.prefix.iter().cloned().collect();
            if let Some(d) = &mtp.draft_model {
                r.mtp_markers = d.own.clone();
            }
        }
        // A parameter's name after its layer index (`self_attn.q_norm.weight`), or its last two
        // segments for one outside the layers (`embed_tokens.weight`), as the checkpoint names it
        // (the family's hf_to_vllm_mapper undone: GPT-NeoX's `lm_head.weight` is `embed_out.weight`).
        let tail = |name: &str| -> String {
            let name = unmap(&family.mapper, name);
            match (name.split_once("}."), name.rmatch_indices('.').nth(1)) {
                (Some((_, t)), _) => t.to_string(),
                (None, Some((i, _))) => name[i + 1..].to_string(),
                (None, None) => name,
            }
        };
        let add = |list: &mut Vec<String>, name: &str| {
            let t = tail(name);
            if !list.contains(&t) {
                list.insert(0, t);
            }
        };
        for p in &family.params {
            match (p.qk_norm, p.role) {
                (Some(QkSide::Q), _) => add(&mut r.q_norm_suffixes, &p.name),
                (Some(QkSide::K), _) => add(&mut r.k_norm_suffixes, &p.name),
                (_, Some(ParamRole::Embed)) => add(&mut r.embedding_suffixes, &p.name),
                (_, Some(ParamRole::Head)) if p.partition == Partition::Vocab => add(&mut r.lm_head_suffixes, &p.name),
                _ => {}
            }
        }
        r
    }
}

/// A vLLM parameter name back to the checkpoint's, through `m`'s renames in reverse (suffix, prefix,
/// then substring rules; a rule that drops names has nothing to undo).
fn unmap(m: &rules::Mapper, name: &str) -> String {
    let mut n = name.to_string();
    for (from, to) in m.suffix.iter().rev() {
        if let Some(stem) = to.as_deref().and_then(|to| n.strip_suffix(to)) {
            n = format!("{stem}{from}");
        }
    }
    for (from, to) in m.prefix.iter().rev() {
        if let Some(rest) = to.as_deref().and_then(|to| n.strip_prefix(to)) {
            n = format!("{from}{rest}");
        }
    }
    for (from, to) in m.substr.iter().rev() {
        if let Some(to) = to.as_deref().filter(|to| !to.is_empty()) {
            n = n.replacen(to, from, 1);
        }
    }
    n
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

#[cfg(test)]
mod spec_naming_tests {
    use super::*;

    #[test]
    fn spec_names_are_taken_back_through_the_mapper() {
        let rules = rules::RuleSet::load(&[]).unwrap();
        let neox = rules.for_architecture("GPTNeoXForCausalLM").unwrap();
        // vLLM's `lm_head.weight` / `model.embed_in.weight` are GPT-NeoX's `embed_out.weight` /
        // `gpt_neox.embed_in.weight` (gpt_neox.py's hf_to_vllm_mapper).
        assert_eq!(unmap(&neox.mapper, "lm_head.weight"), "embed_out.weight");
        assert_eq!(unmap(&neox.mapper, "model.embed_in.weight"), "gpt_neox.embed_in.weight");
        let r = audit_rules().for_family(neox);
        assert_eq!(r.lm_head_suffixes[0], "embed_out.weight");
        assert_eq!(r.embedding_suffixes[0], "embed_in.weight");
        // The generic conventions stay behind the family's.
        assert!(r.lm_head_suffixes.contains(&"lm_head.weight".to_string()));
        let hunyuan = rules.for_architecture("HunYuanDenseV1ForCausalLM").unwrap();
        let r = audit_rules().for_family(hunyuan);
        assert_eq!(r.q_norm_suffixes[0], "self_attn.query_layernorm.weight");
        assert_eq!(r.k_norm_suffixes[0], "self_attn.key_layernorm.weight");
        // MTP: a family with layers-style MTP has no prefix stack; its draft's own modules mark it.
        let ds = rules.for_architecture("DeepseekV3ForCausalLM").unwrap();
        let r = audit_rules().for_family(ds);
        assert!(r.mtp_prefixes.is_empty());
        assert_eq!(r.mtp_markers, ["enorm", "hnorm", "eh_proj", "shared_head"]);
    }
}
