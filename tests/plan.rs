//! `ckptpilot plan` on real model configs (fixtures/configs, copied unmodified from public repos) and on
//! real weight fixtures: the outcomes real deployments hit, through the CLI and its JSON.

mod common;
use common::*;
use serde_json::Value;

fn plan(args: &[&str]) -> (i32, Value) {
    let mut a = vec!["plan"];
    a.extend_from_slice(args);
    a.push("--json");
    let r = run(&a);
    let v: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {} {}", r.stdout, r.stderr));
    (r.code, v)
}

fn cfg(name: &str) -> String {
    fixture("configs").join(name).join("config.json").to_string_lossy().into_owned()
}

fn config(v: &Value, tp: u64, ep: bool) -> &Value {
    v["configs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["tp"] == tp && c["ep"] == ep)
        .unwrap_or_else(|| panic!("no tp={tp} ep={ep}"))
}

fn failed_rules(c: &Value) -> Vec<&str> {
    c["failures"].as_array().unwrap().iter().map(|f| f["rule"].as_str().unwrap()).collect()
}

fn status<'a>(c: &'a Value, rule: &str) -> &'a str {
    c["checks"].as_array().unwrap().iter().find(|k| k["rule"] == rule).unwrap()["status"].as_str().unwrap()
}

fn failure<'a>(c: &'a Value, rule: &str) -> &'a str {
    c["failures"].as_array().unwrap().iter().find(|f| f["rule"] == rule).unwrap()["message"].as_str().unwrap()
}

#[test]
fn deepseek_v3_tp32_fails_on_dense_down_proj_blocks() {
    // sglang#3345: 18432 / 32 = 576 is not a multiple of 128. 8 × H200 and 16 × H100-class both load.
    let (code, v) = plan(&[&cfg("deepseek-v3"), "--tp", "8,16,32", "--device", "h200"]);
    assert_eq!(code, 0);
    assert_eq!(v["schema"], "ckptpilot.plan/1");
    assert_eq!(v["vllm_reference"], "0.33.0");
    assert_eq!(v["source"], "config");
    let c32 = config(&v, 32, false);
    assert_eq!(c32["feasible"], false);
    assert_eq!(failed_rules(c32), ["fp8-block"]);
    assert!(failure(c32, "fp8-block").starts_with(
        "ValueError: Weight input_size_per_partition = 576 is not divisible by weight quantization block_k = 128."
    ));
    for tp in [8, 16] {
        let c = config(&v, tp, false);
        assert_eq!(c["feasible"], true, "tp={tp}: {c}");
        assert!(c["max_seqs_at_max_model_len"].as_u64().unwrap() > 0);
    }
    // MLA: the latent cache, 61 layers × (512 + 64) × 2 bytes, the same on every rank.
    assert_eq!(config(&v, 8, false)["kv_bytes_per_token"], 61 * 576 * 2);
    assert_eq!(config(&v, 32, false)["kv_bytes_per_token"], 61 * 576 * 2);
}

#[test]
fn qwen3_30b_a3b_fp8_moe_intermediate_per_rank() {
    let (_, v) = plan(&[&cfg("qwen3-30b-a3b-fp8"), "--tp", "2,4,8", "--ep=both"]);
    // 768 / 8 = 96 is not a multiple of 128. vLLM 0.33.0 refines the expert scales to
    // gcd(128, 128, 96, 2048) = 32 (refine_fp8_moe_block_shape) instead of raising, so the load
    // succeeds on the Triton MoE kernels: a caveat, not the ValueError older vLLM raised.
    let c = config(&v, 8, false);
    assert_eq!(c["verdict"], "feasible-with-caveats");
    let fp8 = c["checks"].as_array().unwrap().iter().find(|k| k["rule"] == "fp8-block").unwrap();
    assert_eq!(fp8["status"], "caveat");
    assert!(fp8["message"].as_str().unwrap().contains("96"));
    assert_eq!(
        config(&v, 8, false)["checks"].as_array().unwrap().iter().find(|k| k["rule"] == "moe").unwrap()["short"],
        "I 96"
    );
    // With EP the experts are whole: 768 fills six blocks; 128 experts / 8 ranks.
    let e = config(&v, 8, true);
    let fp8 = e["checks"].as_array().unwrap().iter().find(|k| k["rule"] == "fp8-block").unwrap();
    assert_eq!(fp8["status"], "pass");
    assert_eq!(e["checks"].as_array().unwrap().iter().find(|k| k["rule"] == "moe").unwrap()["short"], "16 exp");
    // Its context limit is 40960: the capacity is computed there, and said.
    assert_eq!(v["max_model_len"], 40960);
}

#[test]
fn qwen3_235b_tp5_heads() {
    let (code, v) = plan(&[&cfg("qwen3-235b-a22b"), "--tp", "5"]);
    assert_eq!(code, 1, "no feasible configuration: exit 1");
    let c = config(&v, 5, false);
    assert_eq!(c["feasible"], false);
    assert_eq!(
        failure(c, "heads"),
        "ValueError: Total number of attention heads (64) must be divisible by tensor parallel size (5)."
    );
}

#[test]
fn eight_kv_heads_replicate_at_16_and_fail_at_12() {
    let (_, v) = plan(&[&cfg("llama-3.1-70b"), "--tp", "12,16"]);
    let c16 = config(&v, 16, false);
    assert_eq!(c16["feasible"], true);
    let kv = c16["checks"].as_array().unwrap().iter().find(|k| k["rule"] == "kv-heads").unwrap();
    assert_eq!(kv["short"], "1 ×2", "each KV head replicated twice");
    // One KV head per rank: 80 layers × 2 × 128 × 2 bytes.
    assert_eq!(c16["kv_bytes_per_token"], 80 * 2 * 128 * 2);
    let c12 = config(&v, 12, false);
    assert_eq!(c12["feasible"], false);
    assert!(failed_rules(c12).contains(&"kv-heads"));
    // vLLM 0.33.0 raises the attention's bare assert first (checked with the oracle on a 3-KV-head model at TP 2).
    assert!(failure(c12, "kv-heads").starts_with("AssertionError (bare"));
    assert!(failure(c12, "kv-heads").contains("12 is not divisible by 8"));
}

#[test]
fn tp_above_heads_is_infeasible() {
    let (_, v) = plan(&[&cfg("qwen3-0.6b"), "--tp", "16,32"]);
    assert_eq!(config(&v, 16, false)["feasible"], true);
    let c = config(&v, 32, false);
    assert_eq!(c["feasible"], false);
    assert!(failure(c, "heads").contains("(16) must be divisible by tensor parallel size (32)"));
}

#[test]
fn ascend_target_refuses_native_fp8_and_counts_bf16() {
    let (_, v) = plan(&[&cfg("deepseek-v3"), "--tp", "16", "--target", "vllm-ascend", "--device", "ascend-a3"]);
    assert_eq!(v["device"]["name"], "ascend-a3");
    let c = config(&v, 16, false);
    assert_eq!(c["feasible"], false);
    assert!(failure(c, "target").starts_with("NotImplementedError"));
    assert!(c["failures"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["fix"].as_str().unwrap_or("").contains("ckptpilot dequant")));
    let w = &c["per_rank_weights"];
    assert_eq!(c["per_rank_weight_bytes"], w["bf16"]);
    assert!(w["bf16"].as_u64().unwrap() > w["stored"].as_u64().unwrap() * 3 / 2);
}

#[test]
fn every_fixture_config_plans_without_error() {
    for e in std::fs::read_dir(fixture("configs")).unwrap() {
        let p = e.unwrap().path();
        if !p.is_dir() {
            continue;
        }
        let r = run(&["plan", p.to_str().unwrap(), "--tp", "1,2,4,8,16,32", "--ep=both"]);
        assert!(r.code == 0 || r.code == 1, "{}: {}", p.display(), r.stderr);
        assert!(r.stdout.contains("What vLLM would say") || r.stdout.contains("✔ ok"), "{}", r.stdout);
        let (_, v) = plan(&[p.to_str().unwrap(), "--tp", "1,8", "--target", "vllm-ascend"]);
        assert_eq!(v["configs"].as_array().unwrap().len(), 2);
    }
}

#[test]
fn gpt_oss_sliding_layers_and_no_kv_replication() {
    let (_, v) = plan(&[&cfg("gpt-oss-20b"), "--tp", "8,16"]);
    // 24 layers alternate sliding (window 128) and full; 8 KV heads of 64.
    let c8 = config(&v, 8, false);
    let per_layer = 2 * 64 * 2;
    assert_eq!(c8["kv_bytes_per_token"], 24 * per_layer);
    assert_eq!(c8["kv_bytes_per_seq"], 12 * per_layer * 131072 + 12 * per_layer * 128);
    let c16 = config(&v, 16, false);
    assert!(failure(c16, "kv-heads").starts_with("ZeroDivisionError"));
}

#[test]
fn weights_present_use_real_tensor_bytes() {
    // deepseek-fp8: real fp8 weights with scales, an MTP layer (not counted), dims that leave partial blocks.
    let dir = fixture("deepseek-fp8");
    let mut total = 0u64;
    let mut mtp = 0u64;
    let layers = {
        let c: Value = serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap();
        c["num_hidden_layers"].as_u64().unwrap()
    };
    for e in std::fs::read_dir(&dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "safetensors") {
            for (name, t) in read_st(&p).header.iter().filter(|(k, _)| *k != "__metadata__") {
                let off = t["data_offsets"].as_array().unwrap();
                let mut n = off[1].as_u64().unwrap() - off[0].as_u64().unwrap();
                if name.ends_with("e_score_correction_bias") && t["dtype"] != "F32" {
                    // vLLM allocates it in float32 whatever the checkpoint holds (deepseek_v2.py).
                    n *= 4 / 2;
                }
                total += n;
                if name.starts_with(&format!("model.layers.{layers}.")) {
                    mtp += n;
                }
            }
        }
    }
    assert!(mtp > 0);
    // vLLM fuses q_a_proj and kv_a_proj_with_mqa into one fused_qkv_a_proj whose block scales are
    // allocated for the whole output, ceil((136 + 88) / 128) = 2 rows, where the checkpoint holds
    // ceil(136/128) + ceil(88/128) = 3; × ceil(136/128) = 2 columns of f32, in each of 2 layers.
    let (ckpt_rows, vllm_rows, cols, f32, layers) = (3, 2, 2, 4, 2);
    let merged_scale_rows_saved = (ckpt_rows - vllm_rows) * cols * f32 * layers;
    let (_, v) = plan(&[dir.to_str().unwrap(), "--tp", "1"]);
    assert_eq!(v["source"], "weights");
    assert_eq!(config(&v, 1, false)["per_rank_weights"]["stored"], total - mtp - merged_scale_rows_saved);
    assert!(v["notes"].as_array().unwrap().iter().any(|n| n.as_str().unwrap().contains("MTP")));
}

#[test]
fn fixture_fp8_moe_even_at_tp1_refines_and_dense_fp8_row_fails_at_tp2() {
    // qwen3-moe-fp8: moe_intermediate 32 < 128 already at TP 1 (the vLLM oracle builds it with refined scales).
    let (_, v) = plan(&[fixture("qwen3-moe-fp8").to_str().unwrap(), "--tp", "1"]);
    let c = config(&v, 1, false);
    let fp8 = c["checks"].as_array().unwrap().iter().find(|k| k["rule"] == "fp8-block").unwrap();
    assert_eq!(fp8["status"], "caveat");
    // qwen3-dense-fp8: intermediate 128; down_proj input per rank at TP 2 is 64.
    let (_, v) = plan(&[fixture("qwen3-dense-fp8").to_str().unwrap(), "--tp", "1,2"]);
    // TP 1 builds, but q (64) + k (32) + v (32) share one 128-row scale block: k's scale is loaded
    // at row ceil(64 / 128) = 1 of a 1-row parameter. The oracle recorded vLLM's load error.
    let oracle: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("oracle/params/qwen3-dense-fp8.tp1.json")).unwrap())
            .unwrap();
    let vllm = oracle["load_errors"][0].as_str().unwrap();
    assert_eq!(vllm, "RuntimeError: start (1) + length (1) exceeds dimension size (1).");
    assert_eq!(config(&v, 1, false)["feasible"], false);
    assert!(failure(config(&v, 1, false), "scale-load").starts_with(vllm));
    assert_eq!(status(config(&v, 1, false), "fp8-block"), "pass");
    // o_proj (4 heads × 16 / 2 = 32) and down_proj (128 / 2 = 64) are row layers; both are named.
    let msg = failure(config(&v, 2, false), "fp8-block");
    assert!(msg.contains("ValueError: Weight input_size_per_partition = 32 is not divisible by weight quantization block_k = 128. (model.layers.*.self_attn.o_proj)"), "{msg}");
    assert!(msg.contains("ValueError: Weight input_size_per_partition = 64 is not divisible by weight quantization block_k = 128. (model.layers.*.mlp.down_proj)"), "{msg}");
}

#[test]
fn human_matrix_and_bad_arguments() {
    let r = run(&["plan", &cfg("deepseek-v3"), "--tp", "1,2,4,8,16,32", "--device", "h200"]);
    assert!(r.stdout.contains("rules of vLLM 0.33.0"));
    assert!(r.stdout.contains("tp=32"));
    assert!(r.stdout.contains("✘ down_proj 576%128"));
    assert!(r.stdout.contains("fix:"));
    // Every line of the matrix fits a wide terminal.
    let matrix: Vec<&str> = r.stdout.lines().filter(|l| l.starts_with("tp=")).collect();
    assert_eq!(matrix.len(), 6);
    assert!(matrix.iter().all(|l| l.chars().count() <= 160), "{matrix:?}");
    let bad = run(&["plan", &cfg("deepseek-v3"), "--device", "tpu-v9"]);
    assert_eq!(bad.code, 2);
    assert!(bad.stderr.contains("unknown preset"));
    let bad = run(&["plan", &cfg("deepseek-v3"), "--tp", "0"]);
    assert_eq!(bad.code, 2);
    let bad = run(&["plan", &cfg("deepseek-v3"), "--tp", "1000000000"]);
    assert_eq!(bad.code, 2);
    let bad = run(&["remap", fixture("llama").to_str().unwrap(), "--tp", "1000000000"]);
    assert_eq!(bad.code, 2);
    let bad = run(&["plan", &cfg("deepseek-v3"), "--max-model-len", "0"]);
    assert_eq!(bad.code, 2);
    let missing = run(&["plan", "/nonexistent/config.json"]);
    assert_eq!(missing.code, 3);
    let tmp = tempfile::tempdir().unwrap();
    let broken = tmp.path().join("config.json");
    std::fs::write(&broken, "{\"num_attention_heads\": 8,").unwrap();
    let r = run(&["plan", broken.to_str().unwrap()]);
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("config.json:1:"), "{}", r.stderr);
}

/// vLLM's own build errors (the oracle, compacted in fixtures/oracle) are the first failure plan names.
#[test]
fn plan_predicts_the_error_vllm_raised_building_the_fixtures() {
    for (name, tp) in [("deepseek-fp8", 1), ("deepseek-fp8", 2), ("qwen3-moe-fp8", 2)] {
        let oracle: Value =
            serde_json::from_str(&std::fs::read_to_string(fixture(&format!("oracle/{name}.tp{tp}.json"))).unwrap())
                .unwrap();
        assert_eq!(oracle["stages"]["build"], false);
        let vllm = oracle["build_errors"][0].as_str().unwrap();
        let (_, v) = plan(&[fixture(name).to_str().unwrap(), "--tp", &tp.to_string(), "--max-model-len", "256"]);
        let c = config(&v, tp, false);
        assert_eq!(c["feasible"], false);
        let first = c["failures"][0]["message"].as_str().unwrap().lines().next().unwrap();
        assert!(first.starts_with(vllm), "{name} tp {tp}: vLLM `{vllm}`, plan `{first}`");
    }
    // Where vLLM built the model, plan finds no build failure; the load failure that followed is
    // its own rule (scale-load), and remap still shows the routing vLLM performed.
    let oracle: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("oracle/qwen3-moe-fp8.tp1.json")).unwrap()).unwrap();
    assert_eq!(oracle["stages"]["build"], true);
    let (_, v) = plan(&[fixture("qwen3-moe-fp8").to_str().unwrap(), "--tp", "1", "--max-model-len", "256"]);
    let c = config(&v, 1, false);
    let rules: Vec<&str> = c["failures"].as_array().unwrap().iter().map(|f| f["rule"].as_str().unwrap()).collect();
    assert_eq!(rules, ["scale-load"]);
    let r = run(&["remap", fixture("qwen3-moe-fp8").to_str().unwrap(), "--tp", "1", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn a_config_without_the_hf_keys_is_not_called_feasible() {
    let tmp = tempfile::tempdir().unwrap();
    let p = tmp.path().join("config.json");
    // DeepSeek's inference config (github repo) names its sizes dim / n_heads / n_layers.
    std::fs::write(&p, r#"{"vocab_size": 129280, "dim": 7168, "inter_dim": 18432, "n_layers": 61, "n_heads": 128}"#)
        .unwrap();
    let (code, v) = plan(&[p.to_str().unwrap(), "--tp", "8"]);
    assert_eq!(code, 1);
    let c = config(&v, 8, false);
    assert!(
        failure(c, "config").contains("num_attention_heads") || failure(c, "config").contains("hidden_size"),
        "{c}"
    );
}
