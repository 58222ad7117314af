//! `ckptpilot audit` over the clean fixtures: counts, detections and a clean bill of health. Expected
//! numbers are computed here from the files (index, config), not copied from ckptpilot's output.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;

/// Count tensors and dtypes straight from the headers, independently of ckptpilot.
fn census(dir: &std::path::Path) -> (usize, u64, BTreeMap<String, u64>) {
    let mut n = 0;
    let mut bytes = 0;
    let mut dtypes = BTreeMap::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "safetensors"))
        .collect();
    files.sort();
    for f in files {
        for (k, v) in read_st(&f).header {
            if k == "__metadata__" {
                continue;
            }
            n += 1;
            bytes += v["data_offsets"][1].as_u64().unwrap() - v["data_offsets"][0].as_u64().unwrap();
            *dtypes.entry(v["dtype"].as_str().unwrap().to_string()).or_default() += 1;
        }
    }
    (n, bytes, dtypes)
}

fn config(dir: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("config.json")).unwrap()).unwrap()
}

fn check_counts(name: &str) -> Value {
    let dir = fixture(name);
    let (code, r) = audit_json(&dir);
    assert_eq!(code, 0, "{name}: {:?}", codes(&r));
    assert_eq!(errors(&r), 0);
    assert_eq!(r["schema"], "ckptpilot.audit/1");
    assert_eq!(r["tool"]["vllm_reference"], "0.33.0");
    let (n, bytes, dtypes) = census(&dir);
    assert_eq!(r["tensors"].as_u64().unwrap() as usize, n, "{name}");
    assert_eq!(r["tensor_bytes"].as_u64().unwrap(), bytes, "{name}");
    let got: BTreeMap<String, u64> =
        r["dtypes"].as_object().unwrap().iter().map(|(k, v)| (k.clone(), v.as_u64().unwrap())).collect();
    assert_eq!(got, dtypes, "{name}");
    let shard_sum: u64 = r["shards"].as_array().unwrap().iter().map(|s| s["tensors"].as_u64().unwrap()).sum();
    assert_eq!(shard_sum as usize, n);
    if dir.join("model.safetensors.index.json").exists() {
        let idx = index(&dir);
        assert_eq!(idx["weight_map"].as_object().unwrap().len(), n);
        assert_eq!(idx["metadata"]["total_size"].as_u64().unwrap(), bytes);
    }
    let c = config(&dir);
    assert_eq!(r["model"]["num_layers"], c["num_hidden_layers"]);
    assert_eq!(r["model"]["architecture"], c["architectures"][0]);
    assert_eq!(r["model"]["layers_present"], c["num_hidden_layers"]);
    r
}

#[test]
fn dense_gqa_with_per_head_qk_norm() {
    let r = check_counts("qwen3-dense");
    let m = &r["model"];
    assert_eq!(m["num_heads"], 4);
    assert_eq!(m["num_kv_heads"], 2);
    assert_eq!(m["head_dim"], 16);
    assert_eq!(m["num_experts"], Value::Null);
    assert_eq!(m["tie_word_embeddings"], false);
    assert_eq!(m["qk_norm"], "per-head");
    assert_eq!(m["mtp"]["declared"], 0);
    assert_eq!(r["quantization"]["method"], Value::Null);
    assert!(r["shards"].as_array().unwrap().len() >= 3, "fixture must be sharded");
    // The folded tree names every layer range.
    let patterns: Vec<&str> = r["tree"].as_array().unwrap().iter().map(|t| t["pattern"].as_str().unwrap()).collect();
    assert!(patterns.contains(&"model.layers.{0..3}.self_attn.q_proj.weight"), "{patterns:?}");
}

#[test]
fn per_expert_moe() {
    let r = check_counts("qwen3-moe");
    let m = &r["model"];
    assert_eq!(m["num_experts"], 8);
    assert_eq!(m["expert_layout"], "per-expert");
    assert_eq!(m["moe_layers_present"], 3);
    assert_eq!(m["moe"]["experts_key"], "num_experts");
    let patterns: Vec<&str> = r["tree"].as_array().unwrap().iter().map(|t| t["pattern"].as_str().unwrap()).collect();
    assert!(patterns.contains(&"model.layers.{0..2}.mlp.experts.{0..7}.down_proj.weight"), "{patterns:?}");
    let row = r["tree"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["pattern"] == "model.layers.{0..2}.mlp.experts.{0..7}.down_proj.weight")
        .unwrap();
    assert_eq!(row["count"], 24);
}

#[test]
fn deepseek_mla_moe_with_mtp() {
    let r = check_counts("deepseek-v3-mla");
    let m = &r["model"];
    let c = config(&fixture("deepseek-v3-mla"));
    assert_eq!(m["mla"]["kv_lora_rank"], c["kv_lora_rank"]);
    assert_eq!(m["mla"]["q_lora_rank"], c["q_lora_rank"]);
    assert_eq!(m["num_experts"], c["n_routed_experts"]);
    assert_eq!(m["moe"]["first_k_dense_replace"], 1);
    // layer 0 dense, layers 1..2 MoE; the MTP layer 3 is not counted as a decoder layer.
    assert_eq!(m["moe_layers_present"], 2);
    assert_eq!(m["mtp"]["declared"], 1);
    assert_eq!(m["mtp"]["present"], 1);
    assert_eq!(m["mtp"]["location"], "model.layers.3");
    for d in ["hidden_size", "intermediate_size", "moe_intermediate_size", "kv_lora_rank", "q_lora_rank"] {
        assert_ne!(c[d].as_u64().unwrap() % 128, 0, "{d} must not be a multiple of 128");
    }
}

#[test]
fn tied_single_file_resolves_absent_key() {
    let dir = fixture("gemma3-tied");
    let c = config(&dir);
    assert!(c.get("tie_word_embeddings").is_none(), "fixture must omit the key");
    let (code, r) = audit_json(&dir.join("model.safetensors"));
    assert_eq!(code, 0, "{:?}", codes(&r));
    assert_eq!(r["shards"].as_array().unwrap().len(), 1);
    assert_eq!(r["model"]["tie_word_embeddings"], true);
    let f = expect(&r, "tie-resolved", "info");
    assert!(f["message"].as_str().unwrap().contains("gemma3_text"), "{f}");
    assert_eq!(r["model"]["architecture"], "Gemma3ForCausalLM");
    assert!(r["source"]["single_file"] == "model.safetensors");
}

#[test]
fn deepseek_fp8_block_pairs_every_weight() {
    let r = check_counts("deepseek-fp8");
    let q = &r["quantization"];
    assert_eq!(q["method"], "fp8");
    assert_eq!(q["scheme"]["fp8_scale"]["kind"], "block");
    assert_eq!(q["scheme"]["fp8_scale"]["n"], 128);
    let fp8 = r["dtypes"]["F8_E4M3"].as_u64().unwrap();
    assert!(fp8 > 20);
    assert_eq!(q["fp8_weights"].as_u64().unwrap(), fp8);
    assert_eq!(q["paired"].as_u64().unwrap(), fp8);
    // Pairs straddle shards in this fixture: at least one weight's scale lives in another file.
    let idx = index(&fixture("deepseek-fp8"));
    let wm = idx["weight_map"].as_object().unwrap();
    let straddle =
        wm.iter().filter(|(k, _)| k.ends_with("_scale_inv")).any(|(k, v)| wm[k.trim_end_matches("_scale_inv")] != *v);
    assert!(straddle, "fixture should have a weight/scale pair across shards");
}

#[test]
fn compressed_tensors_fp8_schemes() {
    for (name, kind) in [("ct-fp8-channel", "channel"), ("ct-fp8-block", "block")] {
        let r = check_counts(name);
        let q = &r["quantization"];
        assert_eq!(q["method"], "compressed-tensors");
        assert_eq!(q["scheme"]["fp8_scale"]["kind"], kind);
        assert_eq!(q["scheme"]["scale_suffix"], "weight_scale");
        assert_eq!(q["paired"], q["fp8_weights"]);
    }
}

#[test]
fn human_report_has_the_sections() {
    let r = run(&["audit", fixture("qwen3-moe").to_str().unwrap()]);
    assert_eq!(r.code, 0);
    for needle in
        ["vLLM 0.33.0", "Qwen3MoeForCausalLM", "MoE: 8 experts", "shards", "tensors", "findings", "experts.{0..7}"]
    {
        assert!(r.stdout.contains(needle), "missing {needle:?} in\n{}", r.stdout);
    }
}
