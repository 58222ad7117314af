//! plan = vLLM, to the byte: the per-rank weight bytes `ckptkit plan` reports equal the bytes of
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
            assert_eq!(c["feasible"], false, "{stem}: vLLM did not build it");
            let said: Vec<&str> =
                c["failures"].as_array().unwrap().iter().filter_map(|f| f["message"].as_str()).collect();
            assert!(said.iter().any(|m| m.contains(err)), "{stem}: {err:?} not in {said:?}");
            checked += 1;
            continue;
        }
        let vllm = v["max_rank_bytes"].as_u64().unwrap();
        let ours = c["per_rank_weight_bytes"].as_u64().unwrap();
        if vllm != ours {
            mismatches.push(format!("{stem}: vLLM {vllm}, plan {ours}"));
        }
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} recorded configurations");
    // The one known gap: vLLM refines this fixture's expert block scales (more scale elements
    // than the checkpoint's), which plan does not count yet. Any other difference is a bug.
    assert_eq!(mismatches, ["qwen3-moe-fp8.tp1: vLLM 320176, plan 319888"], "{mismatches:#?}");
}
