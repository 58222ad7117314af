//! `ckptpilot dequant` of 4-bit checkpoints, bit-exact against the producers' own code (references
//! written by tools/fixtures_fp4.py with pinned versions): MXFP4 gpt-oss experts against
//! transformers' `convert_moe_packed_tensors`, NVFP4 and INT4 pack-quantized (symmetric and with
//! zero points) against compressed-tensors' decompressors; and the edge files (every e8m0 byte,
//! every e4m3 group-scale byte, global scales 0 / tiny / huge / inf / NaN).

mod common;
use ckptpilot::checkpoint::Checkpoint;
use ckptpilot::quant::fp8::OutDtype;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

/// name → (dtype, shape, bytes) of tensors.
type Tensors = BTreeMap<String, (String, Vec<u64>, Vec<u8>)>;

/// Every tensor of a checkpoint directory or file.
fn tensors(path: &Path) -> Tensors {
    let (ck, _) = Checkpoint::open(path.to_str().unwrap()).unwrap();
    ck.tensors()
        .map(|t| (t.entry.name.clone(), (t.entry.dtype.to_string(), t.entry.shape.to_vec(), t.read().unwrap())))
        .collect()
}

/// bf16 bit patterns equal, any NaN equal to any NaN.
fn bf16_eq(a: &[u8], b: &[u8]) -> Option<usize> {
    if a.len() != b.len() {
        return Some(0);
    }
    a.chunks_exact(2).zip(b.chunks_exact(2)).position(|(x, y)| {
        let (x, y) = (u16::from_le_bytes([x[0], x[1]]), u16::from_le_bytes([y[0], y[1]]));
        x != y && !((x & 0x7FFF) > 0x7F80 && (y & 0x7FFF) > 0x7F80)
    })
}

/// Dequantize fixture `name` with the binary, compare every tensor of its reference; returns the
/// output's tensors.
fn check(name: &str, dropped: &[&str]) -> Tensors {
    check_env(name, dropped, &[])
}

fn check_env(name: &str, dropped: &[&str], env: &[(&str, &str)]) -> Tensors {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let r = run_env(
        &["dequant", fixture(name).to_str().unwrap(), "--out", out.to_str().unwrap(), "--verify", "--json"],
        env,
    );
    assert_eq!(r.code, 0, "{name}: {}{}", r.stdout, r.stderr);
    compare(name, &out, dropped)
}

/// As [`check`], in this process: the library call `ckptpilot dequant --verify` makes, no child
/// process. It runs where only the test binary does (aarch64 under qemu-user: tools/ci/aarch64.sh).
fn check_in_process(name: &str, dropped: &[&str]) -> Tensors {
    use ckptpilot::convert::{Options, Task};
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let (ck, findings) = Checkpoint::open(fixture(name).to_str().unwrap()).unwrap();
    let opts = Options { out: out.clone(), task: Task::Dequant(OutDtype::BF16), verify: true, ..Default::default() };
    ckptpilot::convert::run(&ck, &findings, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
    compare(name, &out, dropped)
}

/// Compare the dequantized checkpoint `out` with fixture `name`'s reference, tensor by tensor.
fn compare(name: &str, out: &Path, dropped: &[&str]) -> Tensors {
    let got = tensors(out);
    let reference = tensors(&fixture(&format!("{name}.reference")).join("dequant_bf16.safetensors"));
    assert!(!reference.is_empty());
    for (k, (dt, shape, bytes)) in &reference {
        let (gdt, gshape, gbytes) = got.get(k).unwrap_or_else(|| panic!("{name}: {k} missing from the output"));
        assert_eq!((gdt, gshape), (dt, shape), "{name}: {k}");
        if let Some(i) = bf16_eq(gbytes, bytes) {
            panic!("{name}: {k} differs from the reference at element {i}");
        }
    }
    for suffix in dropped {
        assert!(!got.keys().any(|k| k.ends_with(suffix)), "{name}: a {suffix} companion was kept");
    }
    let cfg: Value = serde_json::from_slice(&std::fs::read(out.join("config.json")).unwrap()).unwrap();
    assert!(cfg.get("quantization_config").is_none(), "{name}: quantization_config kept");
    got
}

#[test]
fn gpt_oss_mxfp4_equals_transformers_and_has_the_bf16_checkpoints_layout() {
    let got = check("gpt-oss-mxfp4", &["_blocks", "_scales"]);
    // The output is what vLLM's gpt-oss loader takes unquantized: the bf16 fixture's very tensor set
    // (names, dtypes, shapes), which the vLLM oracle loaded with every parameter filled.
    let bf16 = tensors(&fixture("gpt-oss"));
    let layout = |m: &Tensors| -> Vec<(String, String, Vec<u64>)> {
        m.iter().map(|(k, (d, s, _))| (k.clone(), d.clone(), s.clone())).collect()
    };
    assert_eq!(layout(&got), layout(&bf16));
    let (code, v) = audit_json(&fixture("gpt-oss-mxfp4"));
    assert_eq!(v["quantization"]["method"], "mxfp4");
    assert_eq!(code, 0, "{:#?}", v["findings"]);
}

#[test]
fn mxfp4_every_e8m0_byte_and_code_equals_transformers() {
    // Scale 0xFF is 2^128 in transformers (ldexp): 0.5 -> 2^127, larger codes -> inf, zero stays zero.
    check("mxfp4-edge", &["_blocks", "_scales"]);
}

#[test]
fn nvfp4_equals_compressed_tensors() {
    check("llama-nvfp4", &["weight_packed", "weight_scale", "weight_global_scale"]);
}

#[test]
fn nvfp4_every_group_scale_byte_and_global_scale_equals_compressed_tensors() {
    check("nvfp4-edge", &["weight_packed", "weight_scale", "weight_global_scale"]);
}

#[test]
fn int4_pack_quantized_equals_compressed_tensors() {
    check("llama-w4a16", &["weight_packed", "weight_scale", "weight_shape"]);
}

#[test]
fn int4_with_zero_points_equals_compressed_tensors() {
    check("llama-w4a16-asym", &["weight_packed", "weight_scale", "weight_shape", "weight_zero_point"]);
}

#[test]
fn in_process_dequant_of_every_4bit_fixture_equals_the_references() {
    // The fixtures above through the library in this process: the fp4 / int4 kernels' bit-exactness
    // on a target whose binary only runs under an emulator (the `in_process` tests need no spawn).
    let cases: [(&str, &[&str]); 6] = [
        ("gpt-oss-mxfp4", &["_blocks", "_scales"]),
        ("mxfp4-edge", &["_blocks", "_scales"]),
        ("llama-nvfp4", &["weight_packed", "weight_scale", "weight_global_scale"]),
        ("nvfp4-edge", &["weight_packed", "weight_scale", "weight_global_scale"]),
        ("llama-w4a16", &["weight_packed", "weight_scale", "weight_shape"]),
        ("llama-w4a16-asym", &["weight_packed", "weight_scale", "weight_shape", "weight_zero_point"]),
    ];
    for (name, dropped) in cases {
        check_in_process(name, dropped);
    }
}

#[test]
fn four_bit_refusals_name_what_is_wrong_and_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let nothing = |out: &Path| !out.exists() || std::fs::read_dir(out).unwrap().next().is_none();
    // Only bf16 output (the producers' references are bf16).
    let r =
        run(&["dequant", fixture("llama-nvfp4").to_str().unwrap(), "--out", out.to_str().unwrap(), "--dtype", "f16"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("bf16 only"), "{}", r.stderr);
    assert!(nothing(&out));
    // A packed weight without its scale.
    let c = copy_fixture("llama-w4a16");
    drop_tensors(&c.dir, |n| n == "model.layers.0.self_attn.q_proj.weight_scale");
    let r = run(&["dequant", c.dir.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("model.layers.0.self_attn.q_proj.weight_scale is not in the checkpoint"), "{}", r.stderr);
    assert!(nothing(&out));
    // MXFP4 blocks without their scales.
    let c = copy_fixture("gpt-oss-mxfp4");
    drop_tensors(&c.dir, |n| n == "model.layers.1.mlp.experts.down_proj_scales");
    let r = run(&["dequant", c.dir.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("down_proj_scales are not in the checkpoint"), "{}", r.stderr);
    assert!(nothing(&out));
}

/// The tensor bytes saved in a checkpoint directory's shards.
fn saved_bytes(dir: &Path) -> u64 {
    tensors(dir).values().map(|(_, _, b)| b.len() as u64).sum()
}

#[test]
fn packed_compressed_tensors_checkpoints_audit_clean_and_plan_their_stored_bytes() {
    // vLLM 0.33 allocates weight_packed / weight_scale / weight_shape (/ weight_zero_point) for
    // pack-quantized and weight_packed / weight_scale / weight_global_scale for NVFP4
    // (src/quant/ct_packed.json cites the files): no false alarm, every tensor routed, and plan's
    // TP 1 weights are exactly the saved tensor bytes.
    for name in ["llama-w4a16", "llama-w4a16-asym", "llama-nvfp4", "gpt-oss-mxfp4"] {
        let dir = fixture(name);
        let (code, v) = audit_json(&dir);
        assert_eq!(errors(&v), 0, "{name}: {:#?}", v["findings"]);
        let warnings = v["findings"].as_array().unwrap().iter().filter(|f| f["severity"] == "warning").count();
        assert_eq!(warnings, 0, "{name}: {:#?}", v["findings"]);
        assert_eq!(code, 0, "{name}");
        let r = run(&["remap", dir.to_str().unwrap(), "--json"]);
        let rv: Value = serde_json::from_str(&r.stdout).unwrap();
        let rows = rv["rows"].as_array().unwrap();
        assert!(rows.iter().all(|r| r["action"] != "unmapped"), "{name}");
        let (ckpt, param, shard) = if name == "gpt-oss-mxfp4" {
            (
                "model.layers.0.mlp.experts.gate_up_proj_scales",
                "model.layers.0.mlp.experts.routed_experts.w13_weight_scale",
                None,
            )
        } else {
            (
                "model.layers.0.self_attn.q_proj.weight_packed",
                "model.layers.0.self_attn.qkv_proj.weight_packed",
                Some("q"),
            )
        };
        let q = rows.iter().find(|r| r["checkpoint_name"] == ckpt).unwrap();
        assert_eq!(q["param"].as_str(), Some(param), "{name}");
        if shard.is_some() {
            assert_eq!(q["shard_id"].as_str(), shard, "{name}");
        }
        let p = run(&["plan", dir.to_str().unwrap(), "--tp", "1", "--json"]);
        let pv: Value = serde_json::from_str(&p.stdout).unwrap();
        let text = pv.to_string();
        assert!(!text.contains("is not modelled"), "{name}: {text}");
        // compressed-tensors also gives every attention layer placeholders vLLM initialises itself
        // (CompressedTensorsKVCacheMethod.create_weights): q/k/v_scale f32 [1], q/k/v_zero_point in
        // the model dtype [1].
        let placeholders = if name.starts_with("llama-") { 2 * (3 * 4 + 3 * 2) } else { 0 };
        let weights = pv["configs"][0]["per_rank_weight_bytes"].as_u64();
        assert_eq!(weights, Some(saved_bytes(&dir) + placeholders), "{name}: {}", pv["configs"][0]);
    }
}

#[test]
fn a_packed_weight_without_its_scale_is_an_error() {
    // vLLM does not track a quantized model's unfilled parameters: the scale would be garbage.
    let c = copy_fixture("llama-w4a16");
    drop_tensors(&c.dir, |n| n == "model.layers.0.self_attn.k_proj.weight_scale");
    let (code, v) = audit_json(&c.dir);
    assert_eq!(code, 1);
    let f = expect(&v, "remap-unfilled", "error");
    assert!(f["message"].as_str().unwrap().contains("qkv_proj.weight_scale (shard k)"), "{f}");
}

#[test]
fn the_portable_kernel_equals_the_references_too() {
    // CKPTPILOT_ISA=portable: the plain table loop instead of the byte-shuffle kernel.
    let env = [("CKPTPILOT_ISA", "portable")];
    check_env("mxfp4-edge", &["_blocks", "_scales"], &env);
    check_env("nvfp4-edge", &["weight_packed", "weight_scale", "weight_global_scale"], &env);
    check_env("llama-w4a16-asym", &["weight_packed", "weight_zero_point"], &env);
}

#[test]
fn vllm_loaded_the_dequantized_gpt_oss_as_it_loads_the_bf16_one() {
    // vLLM 0.33 (the oracle, CPU, TP 1) on `ckptpilot dequant fixtures/gpt-oss-mxfp4`: every parameter
    // allocated and filled as for the bf16 fixture's recording (same params, per-rank shapes, load
    // errors: none). Recorded by running
    // ../shared/tools/vllm-oracle/oracle.py on the output, exported with tools/oracle/export_params.py.
    let read = |p: &str| -> Value { serde_json::from_slice(&std::fs::read(fixture(p)).unwrap()).unwrap() };
    let dequantized = read("oracle/dequant/gpt-oss-mxfp4.tp1.json");
    let bf16 = read("oracle/params/gpt-oss.tp1.json");
    assert_eq!(dequantized["load_errors"], serde_json::json!([]));
    assert_eq!(dequantized, bf16);
}

#[test]
fn vllm_ascend_has_no_nvfp4_method_and_plan_says_so_with_the_fix() {
    // vllm_ascend/quantization/compressed_tensors_config.py :: _detect_quant_type: W4A16 (int, group)
    // has an NPU method, NVFP4 raises NotImplementedError; vLLM itself builds both.
    let target = |name: &str, t: &str| -> Value {
        let p = run(&["plan", fixture(name).to_str().unwrap(), "--tp", "1", "--target", t, "--json"]);
        let v: Value = serde_json::from_str(&p.stdout).unwrap();
        v["configs"][0]["checks"].as_array().unwrap().iter().find(|c| c["rule"] == "target").unwrap().clone()
    };
    let nv = target("llama-nvfp4", "vllm-ascend");
    assert_eq!(nv["status"], "fail", "{nv}");
    assert!(nv["message"].as_str().unwrap().starts_with("NotImplementedError"), "{nv}");
    assert!(nv["fix"].as_str().unwrap_or_default().contains("ckptpilot dequant"), "{nv}");
    assert_eq!(target("llama-w4a16", "vllm-ascend")["status"], "pass");
    assert_eq!(target("llama-nvfp4", "vllm")["status"], "pass");
}
