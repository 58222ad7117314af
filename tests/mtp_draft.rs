//! The MTP draft model, as vLLM 0.33.0 builds it beside the main model when speculative decoding is
//! on, recorded by the oracle (fixtures/oracle/mtp/):
//!
//! ```text
//! ~/vllm-oracle-venv/bin/python ../shared/tools/vllm-oracle/oracle.py fixtures/deepseek-v3-mla --tp 1|2 \
//!   --max-model-len 128 \
//!   --hf-overrides '{"architectures":["DeepSeekMTPModel"],"model_type":"deepseek_mtp","n_predict":1}' \
//!   --engine-arg 'speculative_config={"method":"mtp","num_speculative_tokens":1}'
//! ```
//!
//! (the overrides are what vllm/config/speculative.py :: hf_config_override makes of a deepseek_v3
//! config; the speculative config is what DeepSeekMultiTokenPredictorLayer asserts). vLLM built
//! `DeepSeekMTP` and loaded it (process_weights_after_loading then fails on this CPU build's missing
//! MoE prepack op, after the load).
//!
//! What ckptpilot says of those tensors today: the main model skips them as MTP weights "loaded by
//! the draft". That claim must name exactly the tensors the draft loads, no fewer (an MTP weight
//! the draft needs would otherwise go unchecked) and no more.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;

#[test]
fn the_tensors_remap_leaves_to_the_mtp_draft_are_those_the_draft_loads() {
    // TP 1 and TP 2 (rank 0): the draft loads the same tensors at both.
    let mut loads: Vec<BTreeSet<String>> = Vec::new();
    for tp in [1, 2] {
        let path = fixture("oracle").join("mtp").join(format!("deepseek-v3-mla.DeepSeekMTPModel.tp{tp}.json"));
        let rec: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(rec["tp"], tp);
        assert_eq!(rec["model_class"], "vllm.model_executor.models.deepseek_mtp.DeepSeekMTP");
        assert_eq!(rec["stages"]["load_weights"], true);
        loads.push(
            rec["trace"].as_array().unwrap().iter().map(|t| t["ckpt_name"].as_str().unwrap().to_string()).collect(),
        );
    }
    assert_eq!(loads[0], loads[1]);
    let draft = loads.swap_remove(0);

    let r = run(&["remap", fixture("deepseek-v3-mla").to_str().unwrap(), "--json"]);
    let v: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}{}", r.stdout, r.stderr));
    let rows = v["rows"].as_array().unwrap();
    let left_to_draft: BTreeSet<String> = rows
        .iter()
        .filter(|x| x["reason"].as_str().is_some_and(|s| s.starts_with("MTP layer")))
        .map(|x| x["checkpoint_name"].as_str().unwrap().to_string())
        .collect();
    let main_loads: BTreeSet<String> = rows
        .iter()
        .filter(|x| x["param"].is_string())
        .map(|x| x["checkpoint_name"].as_str().unwrap().to_string())
        .collect();
    assert!(!left_to_draft.is_empty());
    // Every tensor the main model leaves to the draft, the draft loads.
    let not_loaded: Vec<&String> = left_to_draft.difference(&draft).collect();
    assert!(not_loaded.is_empty(), "left to the draft but not loaded by it: {not_loaded:?}");
    // Every tensor the draft loads is either left to it or shared with the main model (the
    // embedding, which DeepSeekMTP loads as well).
    let unaccounted: Vec<&String> =
        draft.iter().filter(|n| !left_to_draft.contains(*n) && !main_loads.contains(*n)).collect();
    assert!(unaccounted.is_empty(), "the draft loads these, remap accounts for none: {unaccounted:?}");
    assert!(draft.contains("model.embed_tokens.weight") && main_loads.contains("model.embed_tokens.weight"));
}
