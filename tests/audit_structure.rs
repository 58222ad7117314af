//! Structural and quantization cross-checks on broken copies of real fixtures.

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::Path;

fn audit_copy(name: &str, f: impl FnOnce(&Path)) -> (i32, Value) {
    let c = copy_fixture(name);
    f(&c.dir);
    audit_json(&c.dir)
}

fn msg(f: &Value) -> &str {
    f["message"].as_str().unwrap()
}

fn config(d: &Path) -> std::path::PathBuf {
    d.join("config.json")
}

#[test]
fn missing_decoder_layer() {
    let (code, r) = audit_copy("qwen3-dense", |d| {
        assert!(drop_tensors(d, |n| n.starts_with("model.layers.2.")) > 5);
    });
    assert_eq!(code, 1);
    let f = expect(&r, "layer-missing", "error");
    assert!(msg(f).contains("model.layers.{2}") && msg(f).contains("1 of 4"), "{f}");
}

#[test]
fn one_tensor_missing_from_one_layer() {
    let (code, r) = audit_copy("qwen3-dense", |d| {
        drop_tensors(d, |n| n == "model.layers.1.self_attn.k_proj.weight");
    });
    assert_eq!(code, 1);
    let f = expect(&r, "layer-missing", "error");
    assert_eq!(f["tensor"], "model.layers.1.self_attn.k_proj.weight", "{f}");
}

#[test]
fn layers_beyond_num_hidden_layers() {
    let (code, r) = audit_copy("qwen3-dense", |d| edit_json(&config(d), |c| c["num_hidden_layers"] = json!(3)));
    assert_eq!(code, 0);
    assert!(msg(expect(&r, "layer-extra", "warning")).contains("model.layers.{3}"));
}

#[test]
fn missing_expert_and_missing_expert_projection() {
    let (code, r) = audit_copy("qwen3-moe", |d| {
        drop_tensors(d, |n| {
            n.starts_with("model.layers.1.mlp.experts.5.") || n == "model.layers.2.mlp.experts.3.up_proj.weight"
        });
    });
    assert_eq!(code, 1);
    let e = expect(&r, "expert-missing", "error");
    assert!(msg(e).contains("model.layers.1.mlp.experts.{5}") && msg(e).contains("1 of 8"), "{e}");
    let p = expect(&r, "expert-projection-missing", "error");
    assert_eq!(p["tensor"], "model.layers.2.mlp.experts.3.up_proj.weight");
}

#[test]
fn moe_placement_disagrees_with_config() {
    let (_, r) = audit_copy("qwen3-moe", |d| edit_json(&config(d), |c| c["mlp_only_layers"] = json!([0])));
    assert!(msg(expect(&r, "moe-layer-mismatch", "warning")).contains("model.layers.0 has experts"));
}

#[test]
fn mtp_declared_but_missing() {
    let (code, r) = audit_copy("deepseek-v3-mla", |d| {
        drop_tensors(d, |n| n.starts_with("model.layers.3."));
    });
    assert_eq!(code, 0, "the main model still loads: {:?}", codes(&r));
    let f = expect(&r, "mtp-missing", "warning");
    assert!(msg(f).contains("model.layers.3"), "{f}");
    assert_eq!(r["model"]["mtp"]["present"], 0);
}

#[test]
fn mtp_present_but_undeclared() {
    let (_, r) = audit_copy("deepseek-v3-mla", |d| edit_json(&config(d), |c| c["num_nextn_predict_layers"] = json!(0)));
    let f = expect(&r, "mtp-undeclared", "warning");
    assert!(msg(f).contains("model.layers.{3}"), "{f}");
    assert!(findings_with(&r, "layer-extra").is_empty());
}

#[test]
fn untied_model_without_lm_head() {
    let (code, r) = audit_copy("qwen3-dense", |d| {
        drop_tensors(d, |n| n == "lm_head.weight");
    });
    assert_eq!(code, 1);
    expect(&r, "lm-head-missing", "error");
}

#[test]
fn tied_model_with_lm_head_is_ignored_by_vllm() {
    let (code, r) = audit_copy("qwen3-dense", |d| edit_json(&config(d), |c| c["tie_word_embeddings"] = json!(true)));
    assert_eq!(code, 0);
    assert_eq!(expect(&r, "lm-head-ignored-tied", "warning")["tensor"], "lm_head.weight");
}

#[test]
fn embedding_rows_must_equal_vocab() {
    let (code, r) = audit_copy("qwen3-dense", |d| edit_json(&config(d), |c| c["vocab_size"] = json!(600)));
    assert_eq!(code, 1);
    let f = findings_with(&r, "embedding-rows-mismatch");
    assert_eq!(f.len(), 2, "embedding and lm_head");
    assert!(msg(f[0]).contains("512 rows but vocab_size is 600"));
}

#[test]
fn architectures_only_in_text_config() {
    let (_, r) = audit_copy("qwen3-dense", |d| {
        edit_json(&config(d), |c| {
            let a = c.as_object_mut().unwrap().remove("architectures").unwrap();
            c["text_config"] = json!({"architectures": a});
        })
    });
    assert_eq!(r["model"]["architecture"], "Qwen3ForCausalLM");
    assert_eq!(r["model"]["architecture_source"], "text_config.architectures");
    expect(&r, "config-field", "warning");
}

#[test]
fn config_missing_or_invalid() {
    let (_, r) = audit_copy("qwen3-dense", |d| std::fs::remove_file(config(d)).unwrap());
    expect(&r, "config-missing", "warning");
    let (code, r) = audit_copy("qwen3-dense", |d| std::fs::write(config(d), "{\"a\": ").unwrap());
    assert_eq!(code, 1);
    expect(&r, "config-invalid", "error");
}

// --- fp8 pairing ------------------------------------------------------------------------------

const W: &str = "model.layers.0.mlp.down_proj.weight";

#[test]
fn fp8_weight_without_scale() {
    let (code, r) = audit_copy("deepseek-fp8", |d| {
        drop_tensors(d, |n| n == "model.layers.0.mlp.down_proj.weight_scale_inv");
    });
    assert_eq!(code, 1);
    let f = expect(&r, "fp8-scale-missing", "error");
    assert_eq!(f["tensor"], W);
    assert_eq!(r["quantization"]["paired"].as_u64().unwrap() + 1, r["quantization"]["fp8_weights"].as_u64().unwrap());
}

#[test]
fn scale_without_weight() {
    let (code, r) = audit_copy("deepseek-fp8", |d| {
        drop_tensors(d, |n| n == W);
    });
    assert_eq!(code, 1);
    assert_eq!(expect(&r, "fp8-scale-orphan", "error")["tensor"], "model.layers.0.mlp.down_proj.weight_scale_inv");
}

#[test]
fn scale_grid_of_the_wrong_shape() {
    let (code, r) = audit_copy("deepseek-fp8", |d| {
        // kv_a_proj_with_mqa is [kv_lora 72 + rope 16 = 88, hidden 136]: grid [1, 2]. Transposed: same bytes, wrong grid.
        let s = "model.layers.0.self_attn.kv_a_proj_with_mqa.weight_scale_inv";
        edit_header(&shard_of(d, s), |h| {
            assert_eq!(h[s]["shape"], json!([1, 2]));
            h[s]["shape"] = json!([2, 1]);
        });
    });
    assert_eq!(code, 1);
    let f = expect(&r, "fp8-scale-shape", "error");
    assert!(msg(f).contains("is [2, 1]") && msg(f).contains("needs [1, 2]"), "{f}");
}

#[test]
fn scale_dtype_unexpected() {
    let (_, r) = audit_copy("deepseek-fp8", |d| {
        let s = "model.layers.0.mlp.down_proj.weight_scale_inv";
        edit_header(&shard_of(d, s), |h| h[s]["dtype"] = json!("I32"));
    });
    assert_eq!(expect(&r, "fp8-scale-dtype", "warning")["tensor"], "model.layers.0.mlp.down_proj.weight_scale_inv");
}

#[test]
fn wrong_scale_suffix_for_the_scheme() {
    // compressed-tensors scales are `weight_scale`; declaring native fp8 makes them the wrong name.
    let (code, r) = audit_copy("ct-fp8-block", |d| {
        edit_json(&config(d), |c| {
            c["quantization_config"] =
                json!({"quant_method": "fp8", "activation_scheme": "dynamic", "weight_block_size": [128, 128]})
        })
    });
    assert_eq!(code, 1);
    assert!(msg(expect(&r, "fp8-scale-missing", "error")).contains("expects the suffix `weight_scale_inv`"));
}

#[test]
fn fp8_tensors_without_quantization_config() {
    let (code, r) = audit_copy("deepseek-fp8", |d| {
        edit_json(&config(d), |c| {
            c.as_object_mut().unwrap().remove("quantization_config");
        })
    });
    assert_eq!(code, 1);
    expect(&r, "fp8-without-quant-config", "error");
    assert_eq!(r["quantization"]["method"], Value::Null);
}

#[test]
fn module_listed_as_not_converted_holds_fp8() {
    let (code, r) = audit_copy("deepseek-fp8", |d| {
        edit_json(&config(d), |c| {
            c["quantization_config"]["modules_to_not_convert"] = json!(["lm_head", "model.layers.0.mlp.down_proj"])
        })
    });
    assert_eq!(code, 1);
    assert_eq!(expect(&r, "ignored-module-quantized", "error")["tensor"], W);
}

#[test]
fn kv_cache_scales_recognised_and_incomplete_pairs_flagged() {
    let (_, r) = audit_copy("qwen3-dense", |d| {
        add_f32_tensor(d, "model-00004-of-00004.safetensors", "model.layers.3.self_attn.k_scale", &[]);
    });
    assert!(msg(expect(&r, "kv-scales", "info")).contains("1 x k_scale"));
    assert!(msg(expect(&r, "kv-scale-incomplete", "warning")).contains("has k_scale but not v_scale"));
}

#[test]
fn scale_beside_an_unquantized_weight() {
    let (_, r) = audit_copy("qwen3-dense", |d| {
        add_f32_tensor(d, "model-00004-of-00004.safetensors", "model.layers.3.mlp.down_proj.weight_scale", &[1]);
    });
    assert!(msg(expect(&r, "scale-on-unquantized", "warning")).contains("BF16"));
}
