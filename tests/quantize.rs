//! `ckptpilot quantize --to w8a8-dynamic` end to end, against checkpoints msModelSlim 26.1.0 itself
//! wrote from the same inputs (tools/fixtures_modelslim.sh, pinned versions): every file msModelSlim
//! wrote from the weights — the parts, the index, the description, config.json — equal byte for
//! byte. Then what the output is to the rest of ckptpilot (a clean ModelSlim checkpoint), and the
//! streaming machinery's promises (refusals that write nothing, resume, parts, verify).

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;

fn quantize(model: &Path, out: &Path, extra: &[&str]) -> Run {
    quantize_to("w8a8-dynamic", model, out, extra)
}

fn assert_equals_msmodelslim(input: &str, reference: &str) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let r = quantize(&fixture(input), &out, &["--verify"]);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let want = msmodelslim_files(&fixture(reference));
    let got = msmodelslim_files(&out);
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{input}: file names");
    for (name, bytes) in &want {
        if name == "config.json" && input.ends_with("-fp8") {
            // msModelSlim read a config the fixture script wrote (Python's JSON formatting); the
            // content must agree: the same config without quantization_config.
            let v = |b: &[u8]| serde_json::from_slice::<Value>(b).unwrap();
            assert_eq!(v(&got[name]), v(bytes), "{input}: config.json");
            continue;
        }
        if got[name] != *bytes {
            // Name the first tensor that differs, for a useful failure.
            let detail = if name.ends_with(".safetensors") {
                let (a, b) = (read_st(&out.join(name)), read_st(&fixture(reference).join(name)));
                let first = b.header.iter().find(|(k, v)| {
                    let range = |st: &St, v: &Value| {
                        let o = v["data_offsets"].as_array().unwrap();
                        st.data[o[0].as_u64().unwrap() as usize..o[1].as_u64().unwrap() as usize].to_vec()
                    };
                    *k != "__metadata__"
                        && a.header.get(*k).map(|av| (av != *v, range(&a, av) != range(&b, v))) != Some((false, false))
                });
                format!("first differing tensor: {:?}", first.map(|(k, _)| k))
            } else {
                String::from_utf8_lossy(&got[name]).chars().take(400).collect()
            };
            panic!("{input}: {name} differs from msModelSlim's: {detail}");
        }
    }
}

#[test]
fn llama_equals_msmodelslim_bit_for_bit() {
    assert_equals_msmodelslim("llama", "modelslim-llama-w8a8-dynamic");
}

#[test]
fn qwen3_moe_equals_msmodelslim_bit_for_bit() {
    // The router (mlp.gate) and the QK-norms stay FLOAT; every expert is quantized.
    assert_equals_msmodelslim("qwen3-moe", "modelslim-qwen3-moe-w8a8-dynamic");
}

#[test]
fn qwen2_biases_are_written_as_float_f32_like_msmodelslim() {
    // A quantized linear's bias: FLOAT in the description, widened to F32 (on_w8a8_dynamic_per_channel).
    assert_equals_msmodelslim("qwen2", "modelslim-qwen2-w8a8-dynamic");
}

#[test]
fn fp8_input_equals_msmodelslim_on_pytorch_dequantized_weights() {
    // msModelSlim quantized the bf16 checkpoint made of PyTorch's reference dequantization of the
    // fp8 weights (tools/fixtures_modelslim_fp8ref.py); ckptpilot reads the fp8 checkpoint itself.
    assert_equals_msmodelslim("qwen3-dense-fp8", "modelslim-qwen3-dense-fp8-w8a8-dynamic");
}

#[test]
fn the_output_is_a_clean_modelslim_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    assert_eq!(quantize(&fixture("qwen3-moe"), &out, &[]).code, 0);
    assert_clean_for_vllm_ascend(&out);
}

#[test]
fn fp8_input_is_dequantized_on_the_fly_exactly_as_dequant_does() {
    // quantize(fp8) must equal quantize(dequant(fp8)): one streaming pass, the same bf16 in between.
    let tmp = tempfile::tempdir().unwrap();
    let bf16 = tmp.path().join("bf16");
    let r = run(&["dequant", fixture("qwen3-dense-fp8").to_str().unwrap(), "--out", bf16.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    assert_eq!(quantize(&fixture("qwen3-dense-fp8"), &a, &["--verify"]).code, 0);
    assert_eq!(quantize(&bf16, &b, &[]).code, 0);
    let (fa, fb) = (msmodelslim_files(&a), msmodelslim_files(&b));
    for name in fa.keys().filter(|n| n.starts_with("quant_model_")) {
        assert_eq!(fa[name], fb[name], "{name}");
    }
    // The fp8 input's quantization_config is gone from config.json, the rest kept.
    let cfg: Value = serde_json::from_slice(&fa["config.json"]).unwrap();
    assert!(cfg.get("quantization_config").is_none());
    assert_eq!(cfg["architectures"][0], "Qwen3ForCausalLM");
}

#[test]
fn parts_follow_msmodelslim_rule() {
    // BufferedSafetensorsWriter: a new part when the bytes waiting plus the next tensor reach the
    // limit. Checked here through the library with a small limit (the CLI takes whole GiB).
    use ckptpilot::convert::{quantize::Target, run as convert, Options, Task};
    let tmp = tempfile::tempdir().unwrap();
    let (ck, findings) = ckptpilot::checkpoint::Checkpoint::open(fixture("llama").to_str().unwrap()).unwrap();
    let limit = 20_000u64;
    let out = tmp.path().join("parts");
    let opts = Options {
        out: out.clone(),
        task: Task::Quantize { to: Target::W8A8Dynamic, part_bytes: limit },
        ..Default::default()
    };
    let s = convert(&ck, &findings, &opts).unwrap();
    assert!(s.shards_total > 3, "{}", s.shards_total);
    let single = tmp.path().join("single");
    let opts = Options {
        out: single.clone(),
        task: Task::Quantize { to: Target::W8A8Dynamic, part_bytes: 0 },
        ..Default::default()
    };
    convert(&ck, &findings, &opts).unwrap();
    assert!(!single.join("quant_model_weights.safetensors.index.json").exists(), "one file, no index");

    // Same tensors, same bytes, in the description's order, each part within the rule.
    let whole = read_st(&single.join("quant_model_weights.safetensors"));
    // The description's keys in file order (serde_json's map would sort them).
    let desc = std::fs::read_to_string(out.join("quant_model_description.json")).unwrap();
    let keys: Vec<String> =
        desc.lines().filter_map(|l| l.strip_prefix("    \"")?.split_once("\": ").map(|(k, _)| k.to_string())).collect();
    let index: Value =
        serde_json::from_slice(&std::fs::read(out.join("quant_model_weights.safetensors.index.json")).unwrap())
            .unwrap();
    let wm = index["weight_map"].as_object().unwrap();
    let order: Vec<&String> = keys.iter().filter(|k| wm.contains_key(*k)).collect();
    assert_eq!(order.len(), whole.header.len());
    let n = s.shards_total;
    let mut part_bytes: BTreeMap<String, u64> = BTreeMap::new();
    let mut prev_part = String::new();
    let mut sizes_in_order: Vec<(String, u64)> = Vec::new();
    for name in &order {
        let file = wm[*name].as_str().unwrap().to_string();
        assert!(file >= prev_part, "parts are filled in write order");
        prev_part = file.clone();
        let part = read_st(&out.join(&file));
        let (pv, wv) = (&part.header[*name], &whole.header[*name]);
        let bytes = |st: &St, v: &Value| {
            let o = v["data_offsets"].as_array().unwrap();
            st.data[o[0].as_u64().unwrap() as usize..o[1].as_u64().unwrap() as usize].to_vec()
        };
        assert_eq!(bytes(&part, pv), bytes(&whole, wv), "{name}");
        let len = bytes(&whole, wv).len() as u64;
        *part_bytes.entry(file.clone()).or_default() += len;
        sizes_in_order.push((file, len));
    }
    assert_eq!(part_bytes.len(), n);
    for (i, f) in part_bytes.keys().enumerate() {
        assert_eq!(f, &format!("quant_model_weights-{:05}-of-{n:05}.safetensors", i + 1));
    }
    // Each part but the last: its bytes plus the first tensor of the next part reach the limit,
    // and its bytes before its own last tensor did not.
    for w in sizes_in_order.windows(2) {
        let ((fa, _), (fb, lb)) = (&w[0], &w[1]);
        if fa != fb {
            assert!(part_bytes[fa] + lb >= limit, "{fa} closed early");
        }
    }
    for (f, total) in &part_bytes {
        let last = sizes_in_order.iter().rev().find(|(g, _)| g == f).unwrap().1;
        assert!(total - last < limit, "{f} kept filling past the limit");
    }
    assert_eq!(index["metadata"]["total_size"], part_bytes.values().sum::<u64>());
}

#[test]
fn a_rerun_keeps_finished_files_and_refuses_another_conversion() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    assert_eq!(quantize(&fixture("llama"), &out, &[]).code, 0);
    let digest = |d: &Path| -> BTreeMap<String, String> {
        outputs(d).into_iter().map(|(n, b)| (n, blake3::hash(&b).to_hex().to_string())).collect()
    };
    let first = digest(&out);
    let r = quantize(&fixture("llama"), &out, &["--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(s["schema"], "ckptpilot.quantize/1");
    assert_eq!((s["shards_kept"].as_u64(), s["shards_written"].as_u64()), (Some(1), Some(0)));
    assert_eq!(digest(&out), first);
    // A dequant into a quantize output is another conversion, refused without --force.
    let r = run(&["dequant", fixture("qwen3-dense-fp8").to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("another conversion"), "{}", r.stderr);
    assert_eq!(digest(&out), first);
}

#[test]
fn refusals_write_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let nothing = |out: &Path| !out.exists() || std::fs::read_dir(out).unwrap().next().is_none();
    // Already quantized, in a scheme quantize does not read.
    let mx = copy_fixture("qwen3-dense");
    edit_json(&mx.dir.join("config.json"), |v| v["quantization_config"] = serde_json::json!({"quant_method": "mxfp4"}));
    for (model, scheme) in [(fixture("modelslim-llama-w8a8-dynamic"), "\"ascend\""), (mx.dir.clone(), "\"mxfp4\"")] {
        let r = quantize(&model, &out, &[]);
        assert_eq!(r.code, 1, "{}: {}", model.display(), r.stderr);
        assert!(
            r.stderr.contains(scheme) && r.stderr.contains("not supported by `ckptpilot quantize`"),
            "{}",
            r.stderr
        );
        assert!(nothing(&out), "{}", model.display());
    }
    // A NaN in a weight: named with its row and column, no file left behind.
    let c = copy_fixture("llama");
    let shard = std::fs::read_dir(&c.dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "safetensors")
                && read_st(p).header.contains_key("model.layers.1.self_attn.k_proj.weight")
        })
        .unwrap();
    let mut st = read_st(&shard);
    let begin = st.header["model.layers.1.self_attn.k_proj.weight"]["data_offsets"][0].as_u64().unwrap() as usize;
    let k = 64;
    let at = begin + (3 * k + 5) * 2;
    st.data[at..at + 2].copy_from_slice(&0x7FC0u16.to_le_bytes());
    write_st(&shard, &st);
    let out = c.tmp.path().join("out");
    let r = quantize(&c.dir, &out, &[]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("model.layers.1.self_attn.k_proj.weight") && r.stderr.contains("[3, 5]"), "{}", r.stderr);
    let left: Vec<String> = std::fs::read_dir(&out)
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    assert!(!left.iter().any(|n| n.ends_with(".safetensors") || n.contains("tmp")), "{left:?}");
}

#[test]
fn verify_catches_a_corrupted_part() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    assert_eq!(quantize(&fixture("llama"), &out, &[]).code, 0);
    let p = out.join("quant_model_weights-00001-of-00001.safetensors");
    let mut b = std::fs::read(&p).unwrap();
    let last = b.len() - 1;
    b[last] ^= 1;
    std::fs::write(&p, &b).unwrap();
    let r = quantize(&fixture("llama"), &out, &["--verify", "--trust-existing"]);
    assert_eq!(r.code, 1);
    assert!(r.stderr.contains("verification failed") && r.stderr.contains("differs"), "{}", r.stderr);
}

/// `--part-file-size` takes msModelSlim's whole GiB, or a size with a unit for parts smaller than
/// msModelSlim writes (the Slurm test splits a fixture so); anything else is a usage error.
#[test]
fn part_file_size_takes_gib_or_a_size() {
    let tmp = tempfile::tempdir().unwrap();
    let count = |d: &Path| {
        std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".safetensors"))
            .count()
    };
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    assert_eq!(quantize(&fixture("llama"), &a, &["--part-file-size", "1"]).code, 0);
    assert_eq!(count(&a), 1, "a 300 KB model in 1 GiB parts is one file");
    let r = quantize(&fixture("llama"), &b, &["--part-file-size", "16KiB"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(count(&b) >= 2, "16 KiB parts: {} file(s)", count(&b));
    for bad in ["16 parsecs", "1.5", "0KiB"] {
        let r = quantize(&fixture("llama"), &tmp.path().join("c"), &["--part-file-size", bad]);
        assert_eq!(r.code, 2, "{bad}: {}", r.stderr);
        assert!(r.stderr.contains("not a size"), "{}", r.stderr);
    }
}
