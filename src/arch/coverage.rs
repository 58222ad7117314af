//! What ckptpilot knows, architecture by architecture: the family whose rules serve it, the vLLM
//! class, and the TP sizes at which a recorded vLLM oracle run verifies it (`evidence.json`, written
//! by `tools/oracle/evidence.py` from fixtures/oracle and checked against the records by
//! tests/families_table.rs). `ckptpilot families` prints it; the README's coverage table is its `--md`.

use super::rules::RuleSet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

pub const SCHEMA: &str = "ckptpilot.families/1";

#[derive(Debug, Deserialize)]
struct Evidence {
    vllm: Vec<String>,
    architectures: BTreeMap<String, Recorded>,
}

#[derive(Debug, Deserialize)]
struct Recorded {
    vllm_class: String,
    tp: Vec<u64>,
    fixtures: Vec<String>,
}

fn evidence() -> &'static Evidence {
    static E: std::sync::OnceLock<Evidence> = std::sync::OnceLock::new();
    E.get_or_init(|| {
        serde_json::from_str(include_str!("evidence.json")).expect("evidence.json is valid (tests/families_table.rs)")
    })
}

/// One architecture a family file names.
#[derive(Debug, Clone, Serialize)]
pub struct Known {
    pub architecture: String,
    pub family: String,
    /// The class vLLM builds (from the recorded run where there is one, else the family file's).
    pub vllm_class: Option<String>,
    /// TP sizes a recorded oracle run verifies; empty: rules only, not verified.
    pub tp_verified: Vec<u64>,
    /// The vLLM version of those runs.
    pub vllm: Option<String>,
    /// The fixtures the runs loaded.
    pub fixtures: Vec<String>,
    pub verified: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct Coverage {
    pub schema: &'static str,
    pub architectures: Vec<Known>,
    pub verified: usize,
}

/// Every architecture the rule set names (the generic decoder's own entries excepted), verified
/// ones first, each group by name.
pub fn coverage(rules: &RuleSet) -> Coverage {
    let ev = evidence();
    let mut out: Vec<Known> = Vec::new();
    for f in rules.families.iter().filter(|f| f.family != "generic") {
        for a in &f.architectures {
            if out.iter().any(|k| &k.architecture == a) {
                continue;
            }
            let rec = ev.architectures.get(a);
            out.push(Known {
                architecture: a.clone(),
                family: f.family.clone(),
                vllm_class: rec
                    .map(|r| r.vllm_class.clone())
                    .or_else(|| f.vllm_classes.get(a).map(|c| c.replace(':', "."))),
                tp_verified: rec.map(|r| r.tp.clone()).unwrap_or_default(),
                vllm: rec.and(ev.vllm.first().cloned()),
                fixtures: rec.map(|r| r.fixtures.clone()).unwrap_or_default(),
                verified: rec.is_some(),
            });
        }
    }
    out.sort_by(|a, b| (!a.verified, &a.architecture).cmp(&(!b.verified, &b.architecture)));
    let verified = out.iter().filter(|k| k.verified).count();
    Coverage { schema: SCHEMA, architectures: out, verified }
}

/// The architectures with recorded evidence (what tests/families_table.rs checks).
pub fn recorded_architectures() -> Vec<String> {
    evidence().architectures.keys().cloned().collect()
}

/// The TP sizes a recorded vLLM run verifies `architecture` at; `None`: no record, the rules (or
/// the generic decoder) are not verified for it.
pub fn verified_tps(architecture: &str) -> Option<&'static [u64]> {
    evidence().architectures.get(architecture).map(|r| r.tp.as_slice())
}
