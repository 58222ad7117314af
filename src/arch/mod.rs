//! Architecture knowledge as data. `audit.json` holds the naming conventions the audit relies on;
//! it is embedded in the binary so the tool works offline and alone.

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

pub fn audit_rules() -> &'static AuditRules {
    static RULES: OnceLock<AuditRules> = OnceLock::new();
    RULES.get_or_init(|| serde_json::from_str(include_str!("audit.json")).expect("embedded arch/audit.json is valid"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn embedded_rules_parse() {
        let r = super::audit_rules();
        assert_eq!(r.tie_defaults.get("gemma3"), Some(&true));
        assert_eq!(r.tie_defaults.get("qwen2_5_vl_text"), Some(&false));
    }
}
