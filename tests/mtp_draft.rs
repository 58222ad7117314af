//! The MTP draft model, as vLLM 0.33.0 builds it beside the main model when speculative decoding is
//! on, recorded by the oracle (fixtures/oracle/mtp/):
//!
//! ```text
//! ~/vllm-oracle-venv/bin/python ../shared/tools/vllm-oracle/oracle.py fixtures/deepseek-v3-mla --tp 1|2 \
//!   --max-model-len 128 \
//!   --hf-overrides '{"architectures":["DeepSeekMTPModel"],"model_type":"deepseek_mtp","n_predict":1}' \
//!   --engine-arg 'speculative_config={"method":"mtp","num_speculative_tokens":1}'
//! ~/vllm-oracle-venv/bin/python ../shared/tools/vllm-oracle/oracle.py fixtures/glm4-moe --tp 1|2 \
//!   --max-model-len 128 \
//!   --hf-overrides '{"architectures":["Glm4MoeMTPModel"],"model_type":"glm4_moe_mtp","n_predict":1}' \
//!   --engine-arg 'speculative_config={"method":"mtp","num_speculative_tokens":1}'
//! ```
//!
//! (the overrides are what vllm/config/speculative.py :: hf_config_override makes of a deepseek_v3 /
//! glm4_moe config; the speculative config is what the predictor layers assert). vLLM built
//! `DeepSeekMTP` / `Glm4MoeMTP` and loaded them (process_weights_after_loading then fails on this CPU
//! build's missing MoE prepack op, after the load). At TP 2 the records are rank 0's (both ranks built
//! the same parameters and loaded the same tensors).
//!
//! What ckptpilot says of those tensors today: the main model skips them as MTP weights "loaded by
//! the draft". That claim must name exactly the tensors the draft loads, no fewer (an MTP weight
//! the draft needs would otherwise go unchecked) and no more.

mod common;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// (fixture, draft architecture, vLLM class) of each recorded draft.
const DRAFTS: [(&str, &str, &str); 2] = [
    ("deepseek-v3-mla", "DeepSeekMTPModel", "vllm.model_executor.models.deepseek_mtp.DeepSeekMTP"),
    ("glm4-moe", "Glm4MoeMTPModel", "vllm.model_executor.models.glm4_moe_mtp.Glm4MoeMTP"),
];

fn record(fixture_name: &str, arch: &str, tp: u64) -> Value {
    let path = fixture("oracle").join("mtp").join(format!("{fixture_name}.{arch}.tp{tp}.json"));
    let rec: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    assert_eq!(rec["tp"], tp);
    assert_eq!(rec["stages"]["load_weights"], true);
    rec
}

#[test]
fn the_tensors_remap_leaves_to_the_mtp_draft_are_those_the_draft_loads() {
    for (fx, arch, class) in DRAFTS {
        // TP 1 and TP 2 (rank 0): the draft loads the same tensors at both.
        let mut loads: Vec<BTreeSet<String>> = Vec::new();
        for tp in [1, 2] {
            let rec = record(fx, arch, tp);
            assert_eq!(rec["model_class"], class);
            loads.push(
                rec["trace"].as_array().unwrap().iter().map(|t| t["ckpt_name"].as_str().unwrap().to_string()).collect(),
            );
        }
        assert_eq!(loads[0], loads[1], "{fx}");
        let draft = loads.swap_remove(0);

        let r = run(&["remap", fixture(fx).to_str().unwrap(), "--json"]);
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
        assert!(!left_to_draft.is_empty(), "{fx}");
        // Every tensor the main model leaves to the draft, the draft loads.
        let not_loaded: Vec<&String> = left_to_draft.difference(&draft).collect();
        assert!(not_loaded.is_empty(), "{fx}: left to the draft but not loaded by it: {not_loaded:?}");
        // Every tensor the draft loads is either left to it or shared with the main model (the
        // embedding, which the draft loads as well).
        let unaccounted: Vec<&String> =
            draft.iter().filter(|n| !left_to_draft.contains(*n) && !main_loads.contains(*n)).collect();
        assert!(unaccounted.is_empty(), "{fx}: the draft loads these, remap accounts for none: {unaccounted:?}");
        assert!(draft.contains("model.embed_tokens.weight") && main_loads.contains("model.embed_tokens.weight"));
    }
}

/// The recorded draft parameters: name → (numel, bytes per element).
fn recorded_params(rec: &Value) -> BTreeMap<String, (u64, u64)> {
    rec["params"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, p)| {
            let numel = p["shape"].as_array().unwrap().iter().map(|d| d.as_u64().unwrap()).product();
            let elem = match p["dtype"].as_str().unwrap() {
                "bfloat16" | "float16" => 2,
                "float32" => 4,
                other => panic!("dtype {other}"),
            };
            (name.clone(), (numel, elem))
        })
        .collect()
}

#[test]
fn plan_counts_the_draft_parameters_vllm_builds_at_each_tp() {
    for (fx, arch, class) in DRAFTS {
        let r = run(&["plan", fixture(fx).to_str().unwrap(), "--tp", "1,2", "--json"]);
        let v: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}{}", r.stdout, r.stderr));
        for tp in [1u64, 2] {
            let c = v["configs"].as_array().unwrap().iter().find(|c| c["tp"] == tp && c["ep"] == false).unwrap();
            let d = &c["mtp_draft"];
            assert_eq!(d["class"], d_class(class));
            let ours: BTreeMap<String, (u64, u64)> = d["params"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| {
                    let (numel, bytes) = (p["numel"].as_u64().unwrap(), p["bytes"].as_u64().unwrap());
                    (p["name"].as_str().unwrap().to_string(), (numel, bytes / numel.max(1)))
                })
                .collect();
            let recorded = recorded_params(&record(fx, arch, tp));
            assert_eq!(ours, recorded, "{fx} TP {tp}: the draft's parameters and per-rank sizes");
            let total: u64 = recorded.values().map(|(n, e)| n * e).sum();
            assert_eq!(d["weight_bytes"].as_u64(), Some(total), "{fx} TP {tp}");
            // The main model's figures do not include the draft.
            assert!(c["per_rank_weight_bytes"].as_u64().unwrap() > 0);
        }
        let human = run(&["plan", fixture(fx).to_str().unwrap(), "--tp", "1"]);
        assert!(human.stdout.contains(d_class(class)), "{}", human.stdout);
    }
}

/// `DeepSeekMTP` of `vllm.model_executor.models.deepseek_mtp.DeepSeekMTP`.
fn d_class(class: &str) -> &str {
    class.rsplit('.').next().unwrap()
}

fn draft_warnings(dir: &std::path::Path) -> Vec<Value> {
    let (code, v) = audit_json(dir);
    assert_eq!(code, 0, "draft findings are warnings: {v}");
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["code"].as_str().is_some_and(|c| c.starts_with("mtp-draft")))
        .inspect(|f| assert_eq!(f["severity"], "warning", "{f}"))
        .cloned()
        .collect()
}

#[test]
fn the_published_layout_gives_the_draft_nothing_to_say() {
    let c = copy_fixture("deepseek-v3-mla");
    assert!(draft_warnings(&c.dir).is_empty());
}

#[test]
fn a_spec_layer_tensor_missing_leaves_its_draft_parameter_unfilled() {
    let c = copy_fixture("deepseek-v3-mla");
    assert_eq!(
        drop_tensors(&c.dir, |n| n == "model.layers.3.enorm.weight"
            || n == "model.layers.3.mlp.experts.5.up_proj.weight"),
        2
    );
    let w = draft_warnings(&c.dir);
    let msgs: Vec<&str> = w.iter().map(|f| f["message"].as_str().unwrap()).collect();
    assert_eq!(w.len(), 2, "{msgs:?}");
    assert!(w.iter().all(|f| f["code"] == "mtp-draft-unfilled"));
    assert!(msgs.iter().any(|m| m.starts_with("DeepSeekMTP's model.layers.3.enorm.weight:")), "{msgs:?}");
    assert!(
        msgs.iter().any(|m| m.starts_with(
            "DeepSeekMTP's model.layers.3.mtp_block.mlp.experts.routed_experts.w13_weight (shard w3 expert 5):"
        )),
        "{msgs:?}"
    );
    // The main model loads none of them: no error, and its own reverse check has nothing to add.
    let (_, v) = audit_json(&c.dir);
    assert_eq!(errors(&v), 0, "{v}");
    assert!(codes(&v).iter().all(|c| !c.starts_with("remap-") || c == "remap-family"), "{v}");
    // The structural check still names the layer's missing expert projection, as a warning.
    let f = expect(&v, "expert-projection-missing", "warning");
    assert!(f["message"]
        .as_str()
        .unwrap()
        .ends_with("(an MTP layer: only the draft model loads it, with --speculative-config)"));
}

#[test]
fn a_misshaped_or_unknown_spec_layer_tensor_is_named() {
    let c = copy_fixture("deepseek-v3-mla");
    // eh_proj is Linear(2·hidden → hidden): [72, 144]. Written as [72, 72] (a hidden-only projection).
    reshape_tensor(&c.dir, "model.layers.3.eh_proj.weight", &[72, 72], "model.layers.3.eh_proj.weight");
    // A tensor of the spec layer the draft has no parameter for.
    reshape_tensor(&c.dir, "model.layers.3.hnorm.weight", &[72], "model.layers.3.mlp.extra_norm.weight");
    let w = draft_warnings(&c.dir);
    let get = |code: &str| -> Vec<String> {
        w.iter().filter(|f| f["code"] == code).map(|f| f["message"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(
        get("mtp-draft-shape"),
        ["model.layers.3.eh_proj.weight is [72, 72]; DeepSeekMTP's model.layers.3.eh_proj.weight expects [72, 144] from the config"]
    );
    assert_eq!(
        get("mtp-draft-unmapped"),
        ["model.layers.3.mlp.extra_norm.weight → model.layers.3.mtp_block.mlp.extra_norm.weight: DeepSeekMTP has no such parameter (KeyError: 'model.layers.3.mtp_block.mlp.extra_norm.weight' loading the draft)"]
    );
    // hnorm is gone (renamed away): unfilled.
    assert_eq!(get("mtp-draft-unfilled").len(), 1);
    assert!(get("mtp-draft-unfilled")[0].starts_with("DeepSeekMTP's model.layers.3.hnorm.weight:"));
}

#[test]
fn without_any_spec_layer_only_mtp_missing_is_said() {
    let c = copy_fixture("deepseek-v3-mla");
    assert!(drop_tensors(&c.dir, |n| n.starts_with("model.layers.3.")) > 0);
    assert!(draft_warnings(&c.dir).is_empty());
    let (_, v) = audit_json(&c.dir);
    assert!(codes(&v).contains(&"mtp-missing".to_string()), "{v}");
}

#[test]
fn a_draft_under_rules_no_run_verifies_for_the_architecture_is_marked_unverified() {
    // The same checkpoint under an architecture name vLLM's records do not cover: the family is
    // chosen by model_type, and the draft's figures are estimates like the main model's.
    let c = copy_fixture("deepseek-v3-mla");
    edit_config(&c.dir, |v| v["architectures"] = serde_json::json!(["AcmeForCausalLM"]));
    let r = run(&["plan", c.dir.to_str().unwrap(), "--tp", "2", "--json"]);
    let v: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}{}", r.stdout, r.stderr));
    assert_eq!(v["family"]["verified"], false);
    assert_eq!(v["configs"][0]["mtp_draft"]["unverified"], true);
    let note = v["notes"].as_array().unwrap().iter().filter_map(Value::as_str).find(|n| n.starts_with("MTP:")).unwrap();
    assert!(note.contains("UNVERIFIED for this architecture"), "{note}");
    // The recorded architecture: no mark.
    let r = run(&["plan", fixture("deepseek-v3-mla").to_str().unwrap(), "--tp", "2", "--json"]);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(v["configs"][0]["mtp_draft"].get("unverified").is_none());
}
