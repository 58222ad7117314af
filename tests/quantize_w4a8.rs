//! `ckptpilot quantize --to w4a8-dynamic` end to end, against checkpoints msModelSlim 26.1.0 itself
//! wrote with the MoE recipe (../shared/recipes/modelslim/w4a8_dynamic_moe.yaml) from the same
//! inputs (tools/fixtures_modelslim.sh, pinned versions): a Qwen3-MoE (routed experts W4A8_DYNAMIC,
//! attention W8A8_DYNAMIC) and a dense Llama (no experts: everything W8A8_DYNAMIC). Every file
//! msModelSlim derives from the weights equal byte for byte; then what the output is to the rest of
//! ckptpilot, and the streaming machinery's promises for the new target.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

fn quantize(model: &Path, out: &Path, extra: &[&str]) -> Run {
    quantize_to("w4a8-dynamic", model, out, extra)
}

fn assert_equals_msmodelslim(input: &str, reference: &str, extra: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let r = quantize(&fixture(input), &out, extra);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert_same_files_as_msmodelslim(&out, &fixture(reference), input);
}

#[test]
fn qwen3_moe_equals_msmodelslim_bit_for_bit() {
    // Experts: int4 codes packed two rows to a byte (I8 [N/2, K]), weight_scale, weight_offset and
    // scale_bias ([N, 1] gate/up, [N, 16] down); attention W8A8_DYNAMIC; router and norms FLOAT.
    // 1,852 of the 147,456 codes are ties after the bf16 division: rounding half away from zero
    // instead of to even changes every expert.
    assert_equals_msmodelslim("qwen3-moe", "modelslim-qwen3-moe-w4a8-dynamic", &["--verify"]);
    // The fixture really holds what the test claims.
    let t = tensors(&fixture("modelslim-qwen3-moe-w4a8-dynamic"));
    let e = "model.layers.0.mlp.experts.0";
    assert_eq!(t[&format!("{e}.gate_proj.weight")].1, serde_json::json!([16, 64]));
    assert_eq!(t[&format!("{e}.down_proj.scale_bias")].1, serde_json::json!([64, 16]));
    assert_eq!(t["model.layers.0.self_attn.q_proj.weight"].1, serde_json::json!([64, 64]));
}

#[test]
fn a_dense_model_equals_msmodelslim_bit_for_bit() {
    // The MoE recipe on Llama: no experts, every decoder linear W8A8_DYNAMIC; msModelSlim's files are
    // those of its w8a8-dynamic run (only its recipe echo, default_best_practice.yaml, says w_bit 4).
    assert_equals_msmodelslim("llama", "modelslim-llama-w4a8-dynamic", &["--verify"]);
    assert_eq!(
        msmodelslim_files(&fixture("modelslim-llama-w4a8-dynamic")),
        msmodelslim_files(&fixture("modelslim-llama-w8a8-dynamic"))
    );
}

#[test]
fn the_output_is_a_clean_modelslim_checkpoint_for_vllm_ascend() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    assert_eq!(quantize(&fixture("qwen3-moe"), &out, &[]).code, 0);
    assert_clean_for_vllm_ascend(&out);
    // The audit does read the experts as W4A8_DYNAMIC: a scale_bias of the wrong shape is an error.
    let c = tmp.path().join("bad");
    std::fs::create_dir(&c).unwrap();
    for (name, bytes) in outputs(&out) {
        std::fs::write(c.join(name), bytes).unwrap();
    }
    let shard = c.join("quant_model_weights-00001-of-00001.safetensors");
    edit_header(&shard, |h| {
        h["model.layers.1.mlp.experts.3.down_proj.scale_bias"]["shape"] = serde_json::json!([128, 8]);
    });
    let (_, v) = audit_json_for(&c, "vllm-ascend");
    expect(&v, "modelslim-companion", "error");
}

/// All output files but ckptpilot's own records.
fn checkpoint_files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    outputs(dir).into_iter().filter(|(n, _)| !n.starts_with(".ckptpilot")).collect()
}

#[test]
fn parts_and_finalize_equal_a_single_run() {
    // 16 KiB parts: ~25 files, companions often in another file than their weight (each part is
    // made on its own: a weight_scale or scale_bias without its weight quantizes the weight again).
    let tmp = tempfile::tempdir().unwrap();
    let (single, split) = (tmp.path().join("single"), tmp.path().join("split"));
    let size = ["--part-file-size", "16KiB"];
    assert_eq!(quantize(&fixture("qwen3-moe"), &single, &size).code, 0);
    for k in ["1/3", "3/3", "2/3"] {
        let r = quantize(&fixture("qwen3-moe"), &split, &[&size[..], &["--part", k]].concat());
        assert_eq!(r.code, 0, "--part {k}: {}", r.stderr);
    }
    let r = quantize(&fixture("qwen3-moe"), &split, &[&size[..], &["--finalize"]].concat());
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (a, b) = (checkpoint_files(&single), checkpoint_files(&split));
    assert!(a.keys().filter(|n| n.ends_with(".safetensors")).count() > 10, "{:?}", a.keys());
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (name, bytes) in &a {
        assert!(b[name] == *bytes, "{name} differs between --part and a single run");
    }
    // Split or not, the same tensors as msModelSlim's single file.
    assert_eq!(tensors(&single), tensors(&fixture("modelslim-qwen3-moe-w4a8-dynamic")));
}

#[test]
fn one_tensor_per_part_still_equals_msmodelslim() {
    // A 1-byte part size puts every tensor in its own file: each weight_scale and scale_bias is
    // made without its weight, from a pass of its own.
    use ckptpilot::convert::{quantize::Target, run as convert, Options, Task};
    let tmp = tempfile::tempdir().unwrap();
    let (ck, findings) = ckptpilot::checkpoint::Checkpoint::open(fixture("qwen3-moe").to_str().unwrap()).unwrap();
    let out = tmp.path().join("out");
    let opts = Options {
        out: out.clone(),
        task: Task::Quantize { to: Target::W4A8Dynamic, part_bytes: 1 },
        verify: true,
        ..Default::default()
    };
    let s = convert(&ck, &findings, &opts).unwrap();
    let want = tensors(&fixture("modelslim-qwen3-moe-w4a8-dynamic"));
    assert_eq!(s.shards_total, want.len());
    assert_eq!(tensors(&out), want);
}

#[test]
fn a_rerun_keeps_its_files_and_another_target_is_another_conversion() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    assert_eq!(quantize(&fixture("qwen3-moe"), &out, &[]).code, 0);
    let first = checkpoint_files(&out);
    let r = quantize(&fixture("qwen3-moe"), &out, &["--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!((s["shards_kept"].as_u64(), s["shards_written"].as_u64()), (Some(1), Some(0)));
    let r = run(&[
        "quantize",
        fixture("qwen3-moe").to_str().unwrap(),
        "--to",
        "w8a8-dynamic",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("another conversion"), "{}", r.stderr);
    assert_eq!(checkpoint_files(&out), first);
}

#[test]
fn experts_msmodelslim_cannot_pack_are_refused_naming_them() {
    // An odd number of output rows (msModelSlim: "n dimension should be even") and a down_proj
    // whose columns do not split into 16 chunks: refused before anything is written.
    let c = copy_fixture("qwen3-moe");
    let up = "model.layers.2.mlp.experts.5.up_proj.weight";
    let down = "model.layers.1.mlp.experts.0.down_proj.weight";
    transform_tensors(&c.dir, |name, v, bytes| {
        let mut v = v.clone();
        let (shape, len) = match name {
            n if n == up => (serde_json::json!([31, 64]), 31 * 64 * 2),
            n if n == down => (serde_json::json!([64, 24]), 64 * 24 * 2),
            _ => (v["shape"].clone(), bytes.len()),
        };
        v["shape"] = shape;
        vec![(name.to_string(), v, bytes[..len].to_vec())]
    });
    let out = c.tmp.path().join("out");
    let r = quantize(&c.dir, &out, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains(up) && r.stderr.contains("31 output rows"), "{}", r.stderr);
    assert!(r.stderr.contains("experts.0.down_proj") && r.stderr.contains("24 input columns"), "{}", r.stderr);
    assert!(!out.exists() || std::fs::read_dir(&out).unwrap().next().is_none());
}

#[test]
fn a_nan_in_an_expert_is_named_with_its_row_and_column() {
    let c = copy_fixture("qwen3-moe");
    let name = "model.layers.1.mlp.experts.6.down_proj.weight";
    transform_tensors(&c.dir, |n, v, bytes| {
        let mut b = bytes.to_vec();
        if n == name {
            let at = (5 * 32 + 7) * 2; // row 5, column 7 of [64, 32] bf16
            b[at..at + 2].copy_from_slice(&0x7FC0u16.to_le_bytes());
        }
        vec![(n.to_string(), v.clone(), b)]
    });
    let out = c.tmp.path().join("out");
    let r = quantize(&c.dir, &out, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains(name) && r.stderr.contains("[5, 7]"), "{}", r.stderr);
}

#[test]
fn fp8_experts_are_dequantized_on_the_fly_exactly_as_dequant_does() {
    // quantize(fp8) must equal quantize(dequant(fp8)): int4 bands are whole scale blocks and whole
    // row pairs at once.
    let tmp = tempfile::tempdir().unwrap();
    let bf16 = tmp.path().join("bf16");
    let r = run(&["dequant", fixture("qwen3-moe-fp8").to_str().unwrap(), "--out", bf16.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    assert_eq!(quantize(&fixture("qwen3-moe-fp8"), &a, &["--verify"]).code, 0);
    assert_eq!(quantize(&bf16, &b, &[]).code, 0);
    let (fa, fb) = (msmodelslim_files(&a), msmodelslim_files(&b));
    let desc = String::from_utf8_lossy(&fa["quant_model_description.json"]).into_owned();
    assert!(desc.contains("\"W4A8_DYNAMIC\""), "{desc}");
    for name in fa.keys().filter(|n| n.starts_with("quant_model_")) {
        assert!(fa[name] == fb[name], "{name}");
    }
}
