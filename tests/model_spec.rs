//! The one model against vLLM itself: for every fixture and TP size the vllm-oracle recorded
//! (fixtures/oracle/params/, from tools/oracle/export_params.py), the parameters ckptpilot's
//! [`ModelSpec`] says rank 0 holds are the parameters vLLM 0.33.0 allocated on rank 0 — the same
//! names, and for each the same bytes (elements × the dtype vLLM allocates it in).

mod common;
use ckptpilot::arch::rules::RuleSet;
use ckptpilot::model::ModelSpec;
use ckptpilot::plan::Parallel;
use ckptpilot::quant::scheme::QuantScheme;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;

fn dtype_bytes(d: &str) -> u64 {
    match d {
        "float32" => 4,
        "bfloat16" | "float16" => 2,
        "float8_e4m3fn" | "float8_e5m2" | "uint8" | "int8" => 1,
        other => panic!("dtype {other} not in the recordings"),
    }
}

#[test]
fn every_rank0_parameter_equals_what_vllm_allocates() {
    let rules = RuleSet::load(&[]).unwrap();
    let dir = fixture("oracle").join("params");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    let mut problems = Vec::new();
    let mut compared = 0;
    for f in files {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let stem = f.file_stem().unwrap().to_str().unwrap().to_string();
        let (name, tp) = stem.rsplit_once(".tp").unwrap();
        let Some(rank0) = v["ranks"].as_array().and_then(|r| r.first()) else { continue };
        let (ck, _) = ckptpilot::Checkpoint::open(fixture(name).to_str().unwrap()).unwrap();
        let cfg = ck.config.clone().unwrap();
        let family = rules.for_architecture(cfg.architecture.as_deref().unwrap()).unwrap();
        let quant = QuantScheme::detect(ck.config_json.as_ref(), ck.hf_quant_config.as_ref());
        let spec = ModelSpec::build(&cfg, ck.config_json.as_ref(), family, quant.as_ref());
        let par = Parallel { tp: tp.parse().unwrap(), ep: false, dp: 1, pp: 1, moe_backend: Default::default() };
        // vLLM's names for parameters registered twice (an alias → the name load_weights uses).
        let aliases: BTreeMap<String, String> = serde_json::from_value(v["param_aliases"].clone()).unwrap_or_default();
        let mut vllm: BTreeMap<String, u64> = BTreeMap::new();
        for (n, p) in rank0["params"].as_object().unwrap() {
            let n = aliases.get(n).cloned().unwrap_or_else(|| n.clone());
            let numel: u64 = p[0].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).product();
            vllm.insert(n, numel * dtype_bytes(p[1].as_str().unwrap()));
        }
        let ours: BTreeMap<String, u64> =
            spec.rank_params(&par).into_iter().map(|r| (r.name, r.numel * r.elem)).collect();
        for (n, b) in &vllm {
            match ours.get(n) {
                None => problems.push(format!("{stem}: vLLM has {n} ({b} B), the model does not")),
                Some(o) if o != b => problems.push(format!("{stem}: {n}: vLLM {b} B, model {o} B")),
                _ => {}
            }
        }
        for (n, b) in &ours {
            if !vllm.contains_key(n) {
                problems.push(format!("{stem}: the model has {n} ({b} B), vLLM does not"));
            }
        }
        compared += 1;
    }
    assert!(compared >= 30, "only {compared} recordings with parameters");
    assert!(problems.is_empty(), "{} differences:\n{}", problems.len(), problems.join("\n"));
}

/// Audit's structural checks take their naming from the family's spec where the architecture has
/// one: HunYuan's q / k norms are `query_layernorm` / `key_layernorm` (hunyuan_dense.json's params
/// marked `qk_norm`), names the generic conventions (`q_norm`, `k_norm`) do not know, so the
/// qk-norm check ran only because the spec said which tensors they are.
#[test]
fn audit_reads_the_qk_norms_the_family_spec_names() {
    for fx in ["hunyuan-dense", "hunyuan-moe"] {
        let (_, v) = audit_json(&fixture("families").join(fx));
        let f = expect(&v, "qk-norm-shape", "info");
        let msg = f["message"].as_str().unwrap();
        assert!(msg.starts_with("per-head: q_norm and k_norm are [32] (head_dim)"), "{fx}: {msg}");
        let cfg: Value =
            serde_json::from_str(&std::fs::read_to_string(fixture("families").join(fx).join("config.json")).unwrap())
                .unwrap();
        let head_dim = cfg["head_dim"]
            .as_u64()
            .unwrap_or_else(|| cfg["hidden_size"].as_u64().unwrap() / cfg["num_attention_heads"].as_u64().unwrap());
        assert_eq!(head_dim, 32, "{fx}: the fixture's head_dim the message names");
        let names = all_tensor_names(&fixture("families").join(fx));
        assert!(names.iter().any(|n| n.ends_with("self_attn.query_layernorm.weight")));
        assert!(!names.iter().any(|n| n.ends_with("q_norm.weight")));
    }
}
