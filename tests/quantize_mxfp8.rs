//! `ckptpilot quantize --to w8a8-mxfp8` end to end, against what msModelSlim 26.1.0's data-free
//! converter (`apiversion: modelslim_convert`, FLOAT → W8A8_MXFP8) wrote from the same inputs
//! (tools/fixtures_modelslim_mx.sh; the edge-case checkpoints: src/convert/testdata/edge/make_edge.py,
//! run through the same converter YAML).
//!
//! Byte for byte: every quant_model_weights safetensors file, config.json, the description and the
//! index. The two JSON files' key order is msModelSlim's tree order, which comes from Python `set`
//! iteration (string hashes): the fixtures were made with PYTHONHASHSEED=0, which
//! src/convert/pyorder.rs reproduces (under any other seed msModelSlim's own order changes from run
//! to run). `<model_type>_best_practice.yaml` is not written: it is msModelSlim's echo of its input
//! YAML (config_id, match patterns; no paths or timestamps) named after its `--model_type`
//! argument, nothing in the checkpoint. The tokenizer files in the references were added by the
//! fixture script's prep step, not by the converter; ckptpilot copies the input's other files.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn testdata(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src/convert/testdata/edge").join(name)
}

fn quantize(model: &Path, out: &Path, extra: &[&str]) -> Run {
    quantize_to("w8a8-mxfp8", model, out, extra)
}

fn assert_equals_msmodelslim(input: &Path, reference: &Path) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let r = quantize(input, &out, &["--verify"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_same_files_as_msmodelslim(&out, reference, &format!("{input:?}"));
}

#[test]
fn llama_equals_msmodelslim_bit_for_bit() {
    assert_equals_msmodelslim(&fixture("llama"), &fixture("modelslim-llama-w8a8-mxfp8-convert"));
    let t = tensors(&fixture("modelslim-llama-w8a8-mxfp8-convert"));
    assert_eq!(t["model.layers.0.mlp.down_proj.weight"].0, "F8_E4M3");
    assert_eq!(t["model.layers.0.mlp.down_proj.weight_scale"].1, serde_json::json!([64, 4]));
    assert_eq!(t["lm_head.weight"].0, "BF16", "lm_head and embed_tokens stay as stored");
}

#[test]
fn qwen3_moe_equals_msmodelslim_bit_for_bit() {
    assert_equals_msmodelslim(&fixture("qwen3-moe"), &fixture("modelslim-qwen3-moe-w8a8-mxfp8-convert"));
    let t = tensors(&fixture("modelslim-qwen3-moe-w8a8-mxfp8-convert"));
    assert_eq!(t["model.layers.0.mlp.experts.7.down_proj.weight"].0, "F8_E4M3");
    assert_eq!(t["model.layers.0.mlp.gate.weight"].0, "BF16", "the router stays FLOAT");
}

#[test]
fn an_fp8_block_checkpoint_equals_msmodelslim_bit_for_bit() {
    // Dequantized (128x128 blocks) to bf16, then converted; weight_scale_inv and the config's
    // quantization_config dropped (config.json rewritten as Python's json.dump writes it: 1e-06).
    assert_equals_msmodelslim(&fixture("qwen3-dense-fp8"), &fixture("modelslim-qwen3-dense-fp8-w8a8-mxfp8-convert"));
}

#[test]
fn edge_cases_equal_msmodelslim_bit_for_bit() {
    // K = 48 and 80 (a short last block, scale [N, 2] / [N, 3]), all-zero rows (scale byte 0),
    // an amax of 7.96875 (bf16 log2 rounds it to 3), e4m3 subnormals, exact ties, negative values
    // that round to -0 (0x80); and the same from f16 weights (rounded to bf16 first).
    for d in ["bf16", "f16"] {
        assert_equals_msmodelslim(&testdata(&format!("in-{d}")), &testdata(&format!("modelslim-{d}")));
    }
    // The reference really holds those cases.
    let t = tensors(&testdata("modelslim-bf16"));
    let (_, shape, scale) = &t["model.layers.0.self_attn.q_proj.weight_scale"];
    assert_eq!(shape, &serde_json::json!([48, 2]));
    assert_eq!(&scale[..2], &[0, 0], "an all-zero row: shared exponent -127");
    assert_eq!(scale[2], 127 - 5, "row 1: amax 7.96875 is 2^3 to msModelSlim, exponent 3 - 8");
    assert!(t["model.layers.0.self_attn.q_proj.weight"].2.contains(&0x80), "a -0 code");
    assert_eq!(t["model.layers.0.mlp.down_proj.weight_scale"].1, serde_json::json!([48, 3]));
    assert_eq!(tensors(&testdata("modelslim-f16"))["model.norm.weight"].0, "F16");
}

#[test]
fn the_output_is_a_clean_modelslim_checkpoint_for_vllm_ascend() {
    let tmp = tempfile::tempdir().unwrap();
    let codes_of = |v: &Value| -> Vec<(String, String)> {
        let mut c: Vec<(String, String)> = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| (f["code"].as_str().unwrap().to_string(), f["severity"].as_str().unwrap().to_string()))
            .collect();
        c.sort();
        c
    };
    for (m, reference) in
        [("qwen3-moe", "modelslim-qwen3-moe-w8a8-mxfp8-convert"), ("llama", "modelslim-llama-w8a8-mxfp8-convert")]
    {
        let out = tmp.path().join(m);
        assert_eq!(quantize(&fixture(m), &out, &[]).code, 0);
        let (_, v) = audit_json_for(&out, "vllm-ascend");
        let modelslim: Vec<&Value> = v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["code"].as_str().unwrap().starts_with("modelslim-") && f["severity"] != "info")
            .collect();
        assert!(modelslim.is_empty(), "{m}: {modelslim:#?}");
        // The one error, as for msModelSlim's own output: audit's vLLM-Ascend device is A2, and the
        // MX kernels exist on Ascend 950 only.
        let errors: Vec<&Value> =
            v["findings"].as_array().unwrap().iter().filter(|f| f["severity"] == "error").collect();
        assert_eq!(errors.len(), 1, "{m}: {errors:#?}");
        assert_eq!(errors[0]["code"], "target-unsupported");
        assert!(errors[0]["message"].as_str().unwrap().contains("W8A8_MXFP8"));
        // Everything audit says of it, it says of msModelSlim's.
        let (_, r) = audit_json_for(&fixture(reference), "vllm-ascend");
        assert_eq!(codes_of(&v), codes_of(&r), "{m}");
        assert_eq!(v["quantization"]["method"], "ascend");
        let rm = run(&["remap", out.to_str().unwrap(), "--target", "vllm-ascend", "--json"]);
        let rv: Value = serde_json::from_str(&rm.stdout).unwrap();
        let unmapped: Vec<&Value> =
            rv["rows"].as_array().unwrap().iter().filter(|r| r["action"] == "unmapped").collect();
        assert!(unmapped.is_empty(), "{m}: {unmapped:#?}");
    }
    // The description says W8A8_MXFP8 with group_size 32.
    let d: Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("llama/quant_model_description.json")).unwrap()).unwrap();
    assert_eq!((d["model_quant_type"].as_str(), d["group_size"].as_u64()), (Some("W8A8_MXFP8"), Some(32)));
}

/// All output files but ckptpilot's own records.
fn checkpoint_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    outputs(dir).into_iter().filter(|(n, _)| !n.starts_with(".ckptpilot")).collect()
}

#[test]
fn parts_and_finalize_equal_a_single_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (single, split) = (tmp.path().join("single"), tmp.path().join("split"));
    let size = ["--part-file-size", "64KiB"];
    assert_eq!(quantize(&fixture("qwen3-moe"), &single, &size).code, 0);
    for k in ["2/2", "1/2"] {
        let r = quantize(&fixture("qwen3-moe"), &split, &[&size[..], &["--part", k]].concat());
        assert_eq!(r.code, 0, "--part {k}: {}", r.stderr);
    }
    let r = quantize(&fixture("qwen3-moe"), &split, &[&size[..], &["--finalize"]].concat());
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (a, b) = (checkpoint_files(&single), checkpoint_files(&split));
    assert!(a.keys().filter(|n| n.ends_with(".safetensors")).count() >= 3, "{:?}", a.keys());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, bytes) in &a {
        assert!(b[name] == *bytes, "{name} differs between --part and a single run");
    }
    // Split or not, the same tensors as msModelSlim's single file.
    assert_eq!(tensors(&single), tensors(&fixture("modelslim-qwen3-moe-w8a8-mxfp8-convert")));
}

#[test]
fn a_nan_weight_is_refused_with_tensor_and_position() {
    let c = copy_fixture("llama");
    let name = "model.layers.1.mlp.up_proj.weight"; // bf16 [128, 64]
    let shard = shard_of(&c.dir, name);
    let mut st = read_st(&shard);
    let off = st.header[name]["data_offsets"][0].as_u64().unwrap() as usize;
    let at = off + (3 * 64 + 40) * 2; // [3, 40]
    st.data[at..at + 2].copy_from_slice(&0x7FC0u16.to_le_bytes());
    write_st(&shard, &st);
    let tmp = tempfile::tempdir().unwrap();
    let r = quantize(&c.dir, &tmp.path().join("out"), &[]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains(name) && r.stderr.contains("[3, 40]"), "{}", r.stderr);
}
