//! `ckptpilot dequant` end to end: bit-exact against PyTorch's dequantization (references written by
//! fixtures/generate.py), refusals that write nothing, resume after a kill, parts + finalize.

mod common;
use ckptpilot::checkpoint::Checkpoint;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

fn dequant(model: &Path, out: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["dequant", model.to_str().unwrap(), "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    run(&args)
}

/// name → (dtype, shape, bytes) for every tensor of a checkpoint, read with ckptpilot's reader.
fn tensors(dir: &Path) -> BTreeMap<String, (String, Vec<u64>, Vec<u8>)> {
    let (ck, f) = Checkpoint::open(dir.to_str().unwrap()).unwrap();
    assert!(f.iter().all(|f| f.severity != ckptpilot::Severity::Error), "{f:?}");
    ck.tensors()
        .map(|t| (t.entry.name.clone(), (t.entry.dtype.to_string(), t.entry.shape.to_vec(), t.read().unwrap())))
        .collect()
}

/// The files of an output directory, ckptpilot's own bookkeeping left out.
fn files(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    outputs(dir)
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> =
        std::fs::read_dir(dir).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    v.sort();
    v
}

fn bf16_nan_class_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len()
        && a.chunks_exact(2).zip(b.chunks_exact(2)).all(|(x, y)| {
            let (x, y) = (u16::from_le_bytes([x[0], x[1]]), u16::from_le_bytes([y[0], y[1]]));
            x == y || ((x & 0x7FFF) > 0x7F80 && (y & 0x7FFF) > 0x7F80)
        })
}

fn check_against_reference(name: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let r = dequant(&fixture(name), &out, &["--verify"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let got = tensors(&out);
    let src = tensors(&fixture(name));
    let reference = tensors(&fixture(&format!("{name}.reference")).join("dequant_bf16.safetensors"));
    assert!(!reference.is_empty());
    for (k, (dt, shape, bytes)) in &reference {
        let (gdt, gshape, gbytes) = got.get(k).unwrap_or_else(|| panic!("{k} missing from the output"));
        assert_eq!((gdt, gshape), (dt, shape), "{k}");
        assert!(bf16_nan_class_eq(gbytes, bytes), "{k} differs from PyTorch's dequantization");
    }
    // Everything else is a bit-for-bit copy; no scale tensor survives.
    for (k, v) in &got {
        if !reference.contains_key(k) {
            assert_eq!(Some(v), src.get(k), "{k} was not copied bit for bit");
        }
        assert!(!k.ends_with("_scale_inv") && !k.ends_with(".weight_scale"), "{k} should have been dropped");
        assert_ne!(v.0, "F8_E4M3");
    }
    let dropped = src.keys().filter(|k| !got.contains_key(*k)).count();
    assert_eq!(dropped, reference.len(), "one scale dropped per dequantized weight");
    // Index and config.
    let idx = index(&out);
    let total: u64 = got.values().map(|v| v.2.len() as u64).sum();
    assert_eq!(idx["metadata"]["total_size"].as_u64(), Some(total));
    assert_eq!(idx["weight_map"].as_object().unwrap().len(), got.len());
    let cfg: Value = serde_json::from_str(&std::fs::read_to_string(out.join("config.json")).unwrap()).unwrap();
    assert!(cfg.get("quantization_config").is_none());
    // The result audits clean.
    let (code, rep) = audit_json(&out);
    assert_eq!(code, 0, "{:?}", codes(&rep));
    assert_eq!(rep["quantization"]["fp8_weights"], 0);
}

#[test]
fn deepseek_fp8_block_with_partial_blocks_equals_pytorch() {
    check_against_reference("deepseek-fp8");
}

#[test]
fn dense_fp8_block_equals_pytorch() {
    check_against_reference("qwen3-dense-fp8");
}

#[test]
fn per_expert_moe_fp8_block_equals_pytorch() {
    check_against_reference("qwen3-moe-fp8");
}

#[test]
fn compressed_tensors_per_channel_equals_pytorch() {
    check_against_reference("ct-fp8-channel");
}

#[test]
fn compressed_tensors_block_equals_pytorch() {
    check_against_reference("ct-fp8-block");
}

#[test]
fn f32_output_rounds_to_the_bf16_reference() {
    // bf16(f32 product) is exactly PyTorch's reference, so the f32 output must round to it.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    assert_eq!(dequant(&fixture("deepseek-fp8"), &out, &["--dtype", "f32"]).code, 0);
    let got = tensors(&out);
    for (k, (_, _, bytes)) in tensors(&fixture("deepseek-fp8.reference").join("dequant_bf16.safetensors")) {
        let (dt, _, g) = &got[&k];
        assert_eq!(dt, "F32");
        let rounded: Vec<u8> = g
            .chunks_exact(4)
            .flat_map(|c| {
                ckptpilot::quant::fp8::f32_to_bf16(f32::from_le_bytes([c[0], c[1], c[2], c[3]])).to_le_bytes()
            })
            .collect();
        assert!(bf16_nan_class_eq(&rounded, &bytes), "{k}");
    }
}

fn assert_nothing_written(out: &Path) {
    assert!(!out.exists() || std::fs::read_dir(out).unwrap().next().is_none(), "output was written");
}

#[test]
fn refuses_a_weight_without_its_scale_and_writes_nothing() {
    let c = copy_fixture("deepseek-fp8");
    drop_tensors(&c.dir, |n| n == "model.layers.0.mlp.down_proj.weight_scale_inv");
    let out = c.tmp.path().join("out");
    let r = dequant(&c.dir, &out, &[]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("refusing") && r.stderr.contains("model.layers.0.mlp.down_proj.weight"), "{}", r.stderr);
    assert_nothing_written(&out);
}

#[test]
fn refuses_a_scale_without_its_weight() {
    let c = copy_fixture("deepseek-fp8");
    drop_tensors(&c.dir, |n| n == "model.layers.0.mlp.down_proj.weight");
    let out = c.tmp.path().join("out");
    let r = dequant(&c.dir, &out, &[]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("fp8-scale-orphan"), "{}", r.stderr);
    assert_nothing_written(&out);
}

#[test]
fn refuses_unsupported_schemes_by_name() {
    let c = copy_fixture("deepseek-fp8");
    edit_json(&c.dir.join("config.json"), |v| v["quantization_config"] = serde_json::json!({"quant_method": "gptq"}));
    let out = c.tmp.path().join("out");
    let r = dequant(&c.dir, &out, &[]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("\"gptq\"") && r.stderr.contains("not supported"), "{}", r.stderr);
    assert_nothing_written(&out);
    // mxfp4 is read, but an fp8 checkpoint that says mxfp4 has no blocks: refused, not copied.
    edit_json(&c.dir.join("config.json"), |v| v["quantization_config"] = serde_json::json!({"quant_method": "mxfp4"}));
    let r = dequant(&c.dir, &out, &[]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("no `*_blocks` tensor"), "{}", r.stderr);
    assert_nothing_written(&out);
    // A checkpoint with nothing to dequantize is refused too.
    let r = dequant(&fixture("qwen3-dense"), &out, &[]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("nothing to dequantize"), "{}", r.stderr);
    assert_nothing_written(&out);
}

#[test]
fn refuses_a_damaged_shard() {
    let c = copy_fixture("deepseek-fp8");
    let p = c.dir.join("model-00002-of-00004.safetensors");
    let b = std::fs::read(&p).unwrap();
    std::fs::write(&p, &b[..b.len() - 100]).unwrap();
    let out = c.tmp.path().join("out");
    let r = dequant(&c.dir, &out, &[]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("file-truncated"), "{}", r.stderr);
    assert_nothing_written(&out);
}

#[test]
fn refuses_to_write_into_the_input() {
    let c = copy_fixture("deepseek-fp8");
    let r = dequant(&c.dir, &c.dir, &[]);
    assert_eq!(r.code, 2, "choosing the input as --out is a usage error");
    assert!(r.stderr.contains("is the input directory"), "{}", r.stderr);
    assert!(r.stderr.contains("\nhelp: "), "{}", r.stderr);
}

#[test]
fn survives_a_kill_mid_conversion() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = tmp.path().join("clean");
    assert_eq!(dequant(&fixture("deepseek-fp8"), &clean, &[]).code, 0);

    let out = tmp.path().join("killed");
    let mut c = std::process::Command::new(bin());
    c.args(["dequant", fixture("deepseek-fp8").to_str().unwrap(), "--out", out.to_str().unwrap()]);
    c.env("CKPTPILOT_FAULT_ABORT_AFTER_SHARDS", "1");
    let st = c.output().unwrap().status;
    assert!(!st.success(), "the fault hook must kill the run");
    let left = names(&out);
    assert!(left.iter().any(|f| f.contains(".ckptpilot-tmp.")), "a partial shard stays a temporary file: {left:?}");
    assert!(!left.iter().any(|f| f == "model.safetensors.index.json"));

    let r = run(&["dequant", fixture("deepseek-fp8").to_str().unwrap(), "--out", out.to_str().unwrap(), "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(s["shards_kept"], 1, "the finished shard is kept");
    assert_eq!(s["shards_written"], 3);
    assert!(!names(&out).iter().any(|f| f.contains(".ckptpilot-tmp.")), "the dead run's temporary file is removed");
    assert_eq!(files(&out), files(&clean), "the resumed output equals an uninterrupted run");
}

#[test]
fn parts_then_finalize_equal_one_run() {
    let tmp = tempfile::tempdir().unwrap();
    let whole = tmp.path().join("whole");
    assert_eq!(dequant(&fixture("deepseek-fp8"), &whole, &[]).code, 0);
    let split = tmp.path().join("split");
    let r = dequant(&fixture("deepseek-fp8"), &split, &["--part", "1/3"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // Finalizing before every part is done names the missing shards.
    let r = dequant(&fixture("deepseek-fp8"), &split, &["--finalize"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("not converted yet"), "{}", r.stderr);
    for p in ["2/3", "3/3"] {
        assert_eq!(dequant(&fixture("deepseek-fp8"), &split, &["--part", p]).code, 0);
    }
    assert_eq!(dequant(&fixture("deepseek-fp8"), &split, &["--finalize"]).code, 0);
    assert_eq!(files(&split), files(&whole));
}

#[test]
fn parts_are_disjoint_and_cover_every_shard() {
    let tmp = tempfile::tempdir().unwrap();
    let mut seen: Vec<String> = Vec::new();
    for k in 1..=3 {
        let out: PathBuf = tmp.path().join(format!("p{k}"));
        assert_eq!(dequant(&fixture("deepseek-fp8"), &out, &["--part", &format!("{k}/3")]).code, 0);
        seen.extend(names(&out).into_iter().filter(|n| n.ends_with(".safetensors")));
    }
    seen.sort();
    let n = seen.len();
    seen.dedup();
    assert_eq!(seen.len(), n, "a shard was converted by two parts");
    assert_eq!(n, 4);
    assert_eq!(
        run(&["dequant", fixture("deepseek-fp8").to_str().unwrap(), "--out", "/tmp/x", "--part", "4/3"]).code,
        2
    );
}

#[test]
fn verify_catches_a_corrupted_output() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    assert_eq!(dequant(&fixture("deepseek-fp8"), &out, &[]).code, 0);
    let p = out.join("model-00001-of-00004.safetensors");
    let mut b = std::fs::read(&p).unwrap();
    let last = b.len() - 3;
    b[last] ^= 0x40;
    std::fs::write(&p, &b).unwrap();
    // --trust-existing keeps the shard on size and header alone; --verify still catches it.
    let r = dequant(&fixture("deepseek-fp8"), &out, &["--verify", "--trust-existing"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("verification failed"), "{}", r.stderr);
}

/// A finished shard changed afterwards (one flipped byte) is not "kept" on a rerun: its blake3 no
/// longer matches the state file, so it is written again.
#[test]
fn a_changed_finished_shard_is_rewritten_on_rerun() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    assert_eq!(dequant(&fixture("deepseek-fp8"), &out, &[]).code, 0);
    let clean = files(&out);
    let p = out.join("model-00001-of-00004.safetensors");
    let mut b = std::fs::read(&p).unwrap();
    let last = b.len() - 3;
    b[last] ^= 0x40;
    std::fs::write(&p, &b).unwrap();
    let r = run(&["dequant", fixture("deepseek-fp8").to_str().unwrap(), "--out", out.to_str().unwrap(), "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(s["shards_written"], 1, "{s}");
    assert_eq!(s["shards_kept"], 3);
    assert_eq!(files(&out), clean);
}
