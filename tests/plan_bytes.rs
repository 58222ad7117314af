//! plan = vLLM, to the byte: the per-rank weight bytes `ckptpilot plan` reports equal the bytes of
//! the parameters vLLM 0.33.0 allocated on its most loaded rank, as the vllm-oracle recorded them
//! (fixtures/oracle/params/, written by tools/oracle/export_params.py); where vLLM refused to build
//! the model, plan calls the configuration infeasible with vLLM's own error text.

mod common;
use common::*;
use serde_json::Value;

#[test]
fn per_rank_bytes_equal_what_vllm_allocates() {
    let dir = fixture("oracle").join("params");
    let mut checked = 0;
    let mut mismatches = Vec::new();
    let mut load_misses = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    for f in files {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let stem = f.file_stem().unwrap().to_str().unwrap().to_string();
        let (name, tp) = stem.rsplit_once(".tp").unwrap();
        let r = run(&["plan", fixture(name).to_str().unwrap(), "--tp", tp, "--json"]);
        let p: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{stem}: {e}: {}", r.stderr));
        let c = &p["configs"][0];
        let build_errors = v["build_errors"].as_array().cloned().unwrap_or_default();
        if let Some(err) = build_errors.first().and_then(Value::as_str) {
            let said: Vec<&str> =
                c["failures"].as_array().unwrap().iter().filter_map(|f| f["message"].as_str()).collect();
            if c["feasible"] == true || !said.iter().any(|m| m.contains(err)) {
                mismatches.push(format!("{stem}: vLLM refuses ({err}), plan does not"));
            }
            checked += 1;
            continue;
        }
        // vLLM built the model but could not load the checkpoint into it: plan must say so too.
        let said: Vec<&str> = c["failures"].as_array().unwrap().iter().filter_map(|f| f["message"].as_str()).collect();
        for err in v["load_errors"].as_array().into_iter().flatten().filter_map(Value::as_str) {
            if !said.iter().any(|m| m.contains(err)) {
                load_misses.push(format!("{stem}: vLLM fails to load ({err}), plan does not say so"));
            }
        }
        let vllm = v["max_rank_bytes"].as_u64().unwrap();
        let ours = c["per_rank_weight_bytes"].as_u64().unwrap();
        if vllm != ours {
            mismatches.push(format!("{stem}: vLLM {vllm}, plan {ours}"));
        }
        // The same model from config.json alone (before any weight is downloaded).
        let cfg = fixture(name).join("config.json");
        let r = run(&["plan", cfg.to_str().unwrap(), "--tp", tp, "--json"]);
        let p: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{stem}: {e}: {}", r.stderr));
        let from_config = p["configs"][0]["per_rank_weight_bytes"].as_u64().unwrap();
        if vllm != from_config {
            mismatches.push(format!("{stem}: vLLM {vllm}, plan of config.json alone {from_config}"));
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} recorded configurations");
    assert!(mismatches.is_empty(), "plan differs from vLLM: {mismatches:#?}");
    assert!(load_misses.is_empty(), "load errors plan does not predict: {load_misses:#?}");
}

/// `--moe-backend`: vLLM 0.33.0 with an explicit backend that cannot take refined fp8 blocks pads
/// each rank's expert shard to whole blocks and allocates the padding; plan counts what the oracle
/// recorded (fixtures/oracle/params-moe-backend/NAME.tpN.BACKEND.json). On the CPU vLLM refuses
/// DeepGEMM and Triton kernels at kernel selection ("kernel does not support current device cpu"),
/// after it has decided to pad and allocated; those recordings come from the oracle with that
/// device check forced (each file says so under `workarounds_triggered`), the padding decision
/// itself untouched.
#[test]
fn per_rank_bytes_with_an_explicit_moe_backend() {
    let dir = fixture("oracle").join("params-moe-backend");
    let (mut checked, mut padded) = (0, 0);
    for f in std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()) {
        let v: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
        let stem = f.file_stem().unwrap().to_str().unwrap().to_string();
        let (rest, backend) = stem.rsplit_once('.').unwrap();
        let (name, tp) = rest.rsplit_once(".tp").unwrap();
        assert_eq!(v["engine_args"]["moe_backend"], backend, "{stem}");
        let r = run(&["plan", fixture(name).to_str().unwrap(), "--tp", tp, "--moe-backend", backend, "--json"]);
        let p: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{stem}: {e}: {}", r.stderr));
        let c = &p["configs"][0];
        let fp8 = c["checks"].as_array().unwrap().iter().find(|k| k["rule"] == "fp8-block").unwrap();
        if backend == "triton" && fp8["short"].as_str().unwrap().starts_with("MoE scales→") {
            // Triton takes refined blocks only where the platform has fp8 (TritonExperts.
            // _supports_quant_scheme: current_platform.supports_fp8()): plan predicts an fp8 GPU,
            // which refines; the oracle runs on a CPU, which has no fp8 and pads instead.
            assert!(c["per_rank_weight_bytes"].as_u64() < v["max_rank_bytes"].as_u64(), "{stem}");
            continue;
        }
        assert_eq!(c["per_rank_weight_bytes"], v["max_rank_bytes"], "{stem}");
        // Where the shard is not whole blocks, the default backend refines instead, and allocates less.
        let auto = run(&["plan", fixture(name).to_str().unwrap(), "--tp", tp, "--json"]);
        let a: Value = serde_json::from_str(&auto.stdout).unwrap();
        if a["configs"][0]["per_rank_weight_bytes"] != c["per_rank_weight_bytes"] {
            assert!(fp8["short"].as_str().unwrap().starts_with("MoE padded"), "{stem}: {fp8}");
            assert!(a["configs"][0]["per_rank_weight_bytes"].as_u64() < c["per_rank_weight_bytes"].as_u64());
            padded += 1;
        }
        checked += 1;
    }
    assert!(checked >= 1 && padded >= 1, "{checked} recordings, {padded} padded");
}
