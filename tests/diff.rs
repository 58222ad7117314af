//! `ckptpilot diff A B`: two checkpoints compared by their headers, quantization and config.json.

mod common;
use common::*;
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::Path;

fn diff_json(a: &Path, b: &Path) -> (i32, Value) {
    let r = run(&["diff", "--json", a.to_str().unwrap(), b.to_str().unwrap()]);
    let v: Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {}\n{}", r.stdout, r.stderr));
    assert_eq!(v["schema"], "ckptpilot.diff/1");
    (r.code, v)
}

fn diff_human(a: &Path, b: &Path) -> Run {
    run(&["diff", a.to_str().unwrap(), b.to_str().unwrap()])
}

fn list<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
    v[key].as_array().unwrap_or_else(|| panic!("{key}: {v}"))
}

fn patterns(v: &Value, key: &str) -> BTreeSet<String> {
    list(v, key).iter().map(|x| x["pattern"].as_str().unwrap().to_string()).collect()
}

fn count(v: &Value, key: &str) -> u64 {
    list(v, key).iter().map(|x| x["count"].as_u64().unwrap()).sum()
}

/// The names a checkpoint's shards hold with digits as `*`, as the diff collapses them.
fn pattern(name: &str) -> String {
    name.split('.').map(|s| if s.bytes().all(|b| b.is_ascii_digit()) { "*" } else { s }).collect::<Vec<_>>().join(".")
}

#[test]
fn identical_copies_are_the_same_and_exit_0() {
    let c = copy_fixture("qwen3-dense");
    let r = diff_human(&fixture("qwen3-dense"), &c.dir);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("same tensors, same shapes and dtypes"), "{}", r.stdout);
    let (code, v) = diff_json(&fixture("qwen3-dense"), &c.dir);
    assert_eq!(code, 0);
    assert_eq!((v["same"].as_bool(), v["differences"].as_u64()), (Some(true), Some(0)));
    for k in ["only_in_a", "only_in_b", "layers", "changed"] {
        assert!(list(&v, k).is_empty(), "{k}: {}", v[k]);
    }
    assert!(v["config"]["changes"].as_array().unwrap().is_empty());
    assert_eq!(v["a"]["tensors"], 47);
    assert_eq!(v["a"]["tensors"], v["b"]["tensors"]);
}

#[test]
fn a_dropped_layer_is_one_line_per_pattern_with_its_index() {
    let c = copy_fixture("qwen3-dense");
    let layer3: BTreeSet<String> = all_tensor_names(&c.dir)
        .into_iter()
        .filter(|n| n.starts_with("model.layers.3."))
        .map(|n| pattern(&n))
        .collect();
    let dropped = drop_tensors(&c.dir, |n| n.starts_with("model.layers.3."));
    assert!(dropped >= 9, "{dropped}");
    edit_config(&c.dir, |v| v["num_hidden_layers"] = json!(3));

    let (code, v) = diff_json(&fixture("qwen3-dense"), &c.dir);
    assert_eq!(code, 1);
    assert_eq!(patterns(&v, "only_in_a"), layer3);
    assert_eq!(count(&v, "only_in_a"), dropped as u64);
    for x in list(&v, "only_in_a") {
        assert_eq!((x["count"].as_u64(), x["layers"].as_str()), (Some(1), Some("3")), "{x}");
        assert!(x["example"].as_str().unwrap().starts_with("model.layers.3."), "{x}");
    }
    assert!(list(&v, "only_in_b").is_empty());
    assert!(list(&v, "changed").is_empty());
    // Every pattern of the dropped layer is still in layers 0..2 of B.
    assert_eq!(patterns(&v, "layers"), layer3);
    for x in list(&v, "layers") {
        assert_eq!((x["a"].as_str(), x["b"].as_str()), (Some("0..3"), Some("0..2")), "{x}");
    }
    assert_eq!(v["config"]["changes"], json!([{"path": "num_hidden_layers", "kind": "changed", "a": 4, "b": 3}]));
    assert_eq!(v["differences"], layer3.len() + 1);

    let r = diff_human(&fixture("qwen3-dense"), &c.dir);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("A layers 0..3, B layers 0..2"), "{}", r.stdout);
    let q_norm = r.stdout.lines().find(|l| l.starts_with("  model.layers.*.self_attn.q_norm.weight ")).unwrap();
    assert_eq!(q_norm.split_whitespace().collect::<Vec<_>>()[1..], ["×1", "layers", "3"], "{q_norm}");
    assert!(r.stdout.contains("  ~ num_hidden_layers: 4 → 3"), "{}", r.stdout);
    assert!(
        r.stdout.contains(&format!("{} differences: {dropped} tensors only in A, 1 config key", layer3.len() + 1)),
        "{}",
        r.stdout
    );
}

#[test]
fn the_first_layer_missing_from_one_pattern_is_named() {
    // A re-export that dropped layer 0's gate: A layers 0..1, B layer 1 (as issue 24's example).
    let c = copy_fixture("llama");
    assert_eq!(drop_tensors(&c.dir, |n| n == "model.layers.0.mlp.gate_proj.weight"), 1);
    let (code, v) = diff_json(&fixture("llama"), &c.dir);
    assert_eq!(code, 1);
    assert_eq!(
        v["layers"],
        json!([{"pattern": "model.layers.*.mlp.gate_proj.weight", "a": "0..1", "b": "1"}]),
        "{}",
        v["layers"]
    );
    assert_eq!(
        v["only_in_a"],
        json!([{"pattern": "model.layers.*.mlp.gate_proj.weight", "count": 1,
                "example": "model.layers.0.mlp.gate_proj.weight", "layers": "0"}])
    );
}

#[test]
fn an_added_tensor_and_shape_and_dtype_changes_are_listed_exactly() {
    let c = copy_fixture("llama");
    add_f32_tensor(&c.dir, "model-00003-of-00003.safetensors", "model.extra_scale", &[1]);
    let shape_of = |h: &serde_json::Map<String, Value>, n: &str| -> Vec<u64> {
        h[n]["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).collect()
    };
    let (mut gate, mut q, mut down, mut head) = (vec![], vec![], vec![], vec![]);
    // dtype only (same bytes), shape only (flattened), both, and a cast to a quantized dtype.
    edit_header(&shard_of(&c.dir, "model.layers.0.mlp.gate_proj.weight"), |h| {
        gate = shape_of(h, "model.layers.0.mlp.gate_proj.weight");
        h["model.layers.0.mlp.gate_proj.weight"]["dtype"] = json!("F16");
    });
    edit_header(&shard_of(&c.dir, "model.layers.1.self_attn.q_proj.weight"), |h| {
        q = shape_of(h, "model.layers.1.self_attn.q_proj.weight");
        h["model.layers.1.self_attn.q_proj.weight"]["shape"] = json!([q[0] * q[1]]);
    });
    edit_header(&shard_of(&c.dir, "model.layers.1.mlp.down_proj.weight"), |h| {
        down = shape_of(h, "model.layers.1.mlp.down_proj.weight");
        h["model.layers.1.mlp.down_proj.weight"]["dtype"] = json!("I8");
        h["model.layers.1.mlp.down_proj.weight"]["shape"] = json!([down[0], down[1] * 2]);
    });
    edit_header(&shard_of(&c.dir, "lm_head.weight"), |h| {
        head = shape_of(h, "lm_head.weight");
        h["lm_head.weight"]["dtype"] = json!("F32");
        h["lm_head.weight"]["shape"] = json!([head[0], head[1] / 2]);
    });

    let (code, v) = diff_json(&fixture("llama"), &c.dir);
    assert_eq!(code, 1);
    assert!(list(&v, "only_in_a").is_empty());
    assert_eq!(v["only_in_b"], json!([{"pattern": "model.extra_scale", "count": 1, "example": "model.extra_scale"}]));
    let sig = |d: &str, s: &[u64]| json!({"dtype": d, "shape": s});
    assert_eq!(
        v["changed"],
        json!([
            {"pattern": "lm_head.weight", "count": 1, "example": "lm_head.weight",
             "a": sig("BF16", &head), "b": sig("F32", &[head[0], head[1] / 2]), "quantization": false},
            {"pattern": "model.layers.*.mlp.down_proj.weight", "count": 1, "example": "model.layers.1.mlp.down_proj.weight",
             "a": sig("BF16", &down), "b": sig("I8", &[down[0], down[1] * 2]), "quantization": true},
            {"pattern": "model.layers.*.mlp.gate_proj.weight", "count": 1, "example": "model.layers.0.mlp.gate_proj.weight",
             "a": sig("BF16", &gate), "b": sig("F16", &gate), "quantization": false},
            {"pattern": "model.layers.*.self_attn.q_proj.weight", "count": 1, "example": "model.layers.1.self_attn.q_proj.weight",
             "a": sig("BF16", &q), "b": sig("BF16", &[q[0] * q[1]]), "quantization": false},
        ]),
        "{}",
        serde_json::to_string_pretty(&v["changed"]).unwrap()
    );
    // Neither declares a scheme; the int8 tensor is still counted as a quantization change.
    assert_eq!(v["quantization"]["same"], true);
    assert_eq!(v["quantization"]["tensors"], 1);
    assert_eq!(v["differences"], 5);

    let r = diff_human(&fixture("llama"), &c.dir);
    assert_eq!(r.code, 1);
    let line = |p: &str| {
        r.stdout.lines().find(|l| l.trim_start().starts_with(p)).unwrap_or_else(|| panic!("{p}: {}", r.stdout))
    };
    assert!(line("model.extra_scale").ends_with("×1"), "{}", r.stdout);
    assert!(
        line("model.layers.*.mlp.down_proj.weight")
            .ends_with(&format!("BF16 {down:?} → I8 {:?}  (quantization)", [down[0], down[1] * 2])),
        "{}",
        r.stdout
    );
    assert!(line("model.layers.*.mlp.gate_proj.weight").ends_with(&format!("BF16 {gate:?} → F16 {gate:?}")));
    assert!(
        r.stdout.contains("5 differences: 1 tensor only in B, 4 tensors changed in shape or dtype"),
        "{}",
        r.stdout
    );
}

#[test]
fn config_keys_are_compared_by_dotted_path() {
    let c = copy_fixture("qwen2.5-vl");
    edit_config(&c.dir, |v| {
        let t = &mut v["text_config"];
        t["rope_scaling"]["mrope_section"] = json!([2, 2, 8]);
        t["rope_scaling"]["factor"] = json!(4.0);
        // The same number written as an integer is no change.
        t["rope_theta"] = json!(1000000);
        t["long_list"] = Value::Array((0..500).map(Value::from).collect());
        v.as_object_mut().unwrap().remove("video_token_id");
    });
    let (code, v) = diff_json(&fixture("qwen2.5-vl"), &c.dir);
    assert_eq!(code, 1);
    let changes = v["config"]["changes"].as_array().unwrap();
    let got: Vec<(&str, &str)> =
        changes.iter().map(|k| (k["path"].as_str().unwrap(), k["kind"].as_str().unwrap())).collect();
    assert_eq!(
        got,
        [
            ("text_config.long_list", "added"),
            ("text_config.rope_scaling.factor", "added"),
            ("text_config.rope_scaling.mrope_section", "changed"),
            ("video_token_id", "removed"),
        ]
    );
    assert_eq!((&changes[2]["a"], &changes[2]["b"]), (&json!([2, 2, 4]), &json!([2, 2, 8])));
    assert_eq!(changes[3]["a"], 151656);
    // --json keeps the whole value.
    assert_eq!(changes[0]["b"].as_array().unwrap().len(), 500);
    assert!(list(&v, "changed").is_empty() && list(&v, "only_in_a").is_empty());

    let r = diff_human(&fixture("qwen2.5-vl"), &c.dir);
    assert_eq!(r.code, 1);
    assert!(r.stdout.contains("config.json: 4 keys differ"), "{}", r.stdout);
    assert!(r.stdout.contains("  ~ text_config.rope_scaling.mrope_section: [2,2,4] → [2,2,8]"), "{}", r.stdout);
    assert!(r.stdout.contains("  + text_config.rope_scaling.factor = 4.0"), "{}", r.stdout);
    assert!(r.stdout.contains("  - video_token_id = 151656"), "{}", r.stdout);
    // A long value is abbreviated: its first items and its length.
    let long = r.stdout.lines().find(|l| l.contains("text_config.long_list")).unwrap();
    assert!(long.starts_with("  + text_config.long_list = [0, 1, 2") && long.ends_with("… 500 items]"), "{long}");
    assert!(long.len() < 100 && !long.contains("499"), "{long}");
    assert!(!r.stdout.contains("rope_theta"), "{}", r.stdout);
}

/// fp8 tensors of a checkpoint, by name.
fn fp8_names(dir: &Path) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        if e.path().extension().is_some_and(|x| x == "safetensors") {
            let st = read_st(&e.path());
            out.extend(st.header.iter().filter(|(_, v)| v["dtype"] == "F8_E4M3").map(|(k, _)| k.clone()));
        }
    }
    out
}

#[test]
fn fp8_against_its_bf16_dequantization_is_a_quantization_change() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("bf16");
    let r = run(&["dequant", fixture("deepseek-fp8").to_str().unwrap(), "--out", out.to_str().unwrap(), "-q"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let fp8 = fp8_names(&fixture("deepseek-fp8"));
    assert_eq!(fp8.len(), 48);

    let (code, v) = diff_json(&fixture("deepseek-fp8"), &out);
    assert_eq!(code, 1);
    // Only the scales are gone: one per fp8 weight, beside it.
    let scales: BTreeSet<String> = fp8.iter().map(|n| pattern(&format!("{n}_scale_inv"))).collect();
    assert_eq!(patterns(&v, "only_in_a"), scales);
    assert_eq!(count(&v, "only_in_a"), 48);
    assert!(list(&v, "only_in_b").is_empty());
    // Every fp8 weight is now bf16, same shape, and nothing else changed.
    assert_eq!(patterns(&v, "changed"), fp8.iter().map(|n| pattern(n)).collect());
    assert_eq!(count(&v, "changed"), 48);
    for c in list(&v, "changed") {
        assert_eq!((c["a"]["dtype"].as_str(), c["b"]["dtype"].as_str()), (Some("F8_E4M3"), Some("BF16")), "{c}");
        assert_eq!(c["a"]["shape"], c["b"]["shape"]);
        assert_eq!(c["quantization"], true);
    }
    let q = &v["quantization"];
    assert_eq!((q["same"].as_bool(), q["tensors"].as_u64()), (Some(false), Some(48)));
    assert_eq!(v["a"]["quantization"]["method"], "fp8");
    assert_eq!(v["a"]["quantization"]["fp8_scale"], json!({"kind": "block", "n": 128, "k": 128}));
    assert!(v["b"]["quantization"].is_null());
    let changes = v["config"]["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(
        (changes[0]["path"].as_str(), changes[0]["kind"].as_str()),
        (Some("quantization_config"), Some("removed"))
    );
    assert_eq!(changes[0]["a"]["weight_block_size"], json!([128, 128]));

    let r = diff_human(&fixture("deepseek-fp8"), &out);
    assert!(
        r.stdout.contains(
            "quantization: A fp8, block 128x128 scales `weight_scale_inv`, e4m3, dynamic activations (from quantization_config) → B none"
        ),
        "{}",
        r.stdout
    );
    assert!(r.stdout.contains("F8_E4M3 [192, 136] → BF16 [192, 136]  (quantization)"), "{}", r.stdout);
    assert!(r.stdout.contains("  48 tensors changed dtype to or from a quantized one"), "{}", r.stdout);

    // The shipped reference (one file of the dequantized weights, no config.json) shows the same
    // 48 changes; everything it does not hold is only in A.
    let reference = fixture("deepseek-fp8.reference").join("dequant_bf16.safetensors");
    let (code, w) = diff_json(&fixture("deepseek-fp8"), &reference);
    assert_eq!(code, 1);
    assert_eq!(w["changed"], v["changed"]);
    assert_eq!((w["config"]["a"].as_bool(), w["config"]["b"].as_bool()), (Some(true), Some(false)));
    assert_eq!(count(&w, "only_in_a"), 121 - 48);
}

#[test]
fn two_modelslim_schemes_differ_field_by_field() {
    let (code, v) = diff_json(&fixture("modelslim-llama-w8a8"), &fixture("modelslim-llama-w8a8-dynamic"));
    assert_eq!(code, 1);
    assert_eq!(
        v["quantization"]["fields"],
        json!([
            {"path": "format", "kind": "changed", "a": "W8A8", "b": "W8A8_DYNAMIC"},
            {"path": "modelslim.weights", "kind": "changed", "a": "FLOAT 7, W8A8 14", "b": "FLOAT 7, W8A8_DYNAMIC 14"},
        ])
    );
    // Static W8A8 keeps activation quantization parameters; the dynamic scheme has weight scales.
    assert!(patterns(&v, "only_in_a").contains("model.layers.*.mlp.down_proj.input_scale"));
    assert!(patterns(&v, "only_in_b").contains("model.layers.*.mlp.down_proj.weight_scale"));
}

#[test]
fn names_from_the_files_are_escaped_in_the_human_output() {
    let c = copy_fixture("llama");
    let evil = "model.norm\u{1b}[2J\u{7}\nFAKE: same tensors.weight";
    rename_tensors(&c.dir, |n| if n == "model.norm.weight" { evil.to_string() } else { n.to_string() });
    edit_config(&c.dir, |v| v["bad\u{1b}]0;title\u{7}key"] = json!("x\u{9b}31m"));

    let r = diff_human(&fixture("llama"), &c.dir);
    assert_eq!(r.code, 1);
    for bad in ['\u{1b}', '\u{7}', '\u{9b}'] {
        assert!(!r.stdout.contains(bad), "{bad:?} reached the terminal: {}", r.stdout);
    }
    // One record, one line: the newline inside the name is shown, not obeyed.
    assert!(!r.stdout.lines().any(|l| l.starts_with("FAKE")), "{}", r.stdout);
    assert!(r.stdout.contains(r"model.norm\u{1b}[2J\u{7}\nFAKE: same tensors.weight"), "{}", r.stdout);
    assert!(r.stdout.contains(r#"  + bad\u{1b}]0;title\u{7}key = "x\u{9b}31m""#), "{}", r.stdout);

    // --json keeps the raw text.
    let (_, v) = diff_json(&fixture("llama"), &c.dir);
    assert_eq!(v["only_in_b"][0]["example"], evil);
}

/// A Hugging Face hub cache laid out as huggingface_hub writes it, holding `fixture`.
fn fake_hf_cache(root: &Path, repo: &str, fixture_name: &str) {
    let commit = "0123456789abcdef0123456789abcdef01234567";
    let folder = root.join(format!("models--{}", repo.replace('/', "--")));
    std::fs::create_dir_all(folder.join("refs")).unwrap();
    std::fs::write(folder.join("refs").join("main"), commit).unwrap();
    let snap = folder.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    for e in std::fs::read_dir(fixture(fixture_name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), snap.join(e.file_name())).unwrap();
    }
}

#[test]
fn repo_ids_are_read_as_the_other_commands_read_them() {
    let tmp = tempfile::tempdir().unwrap();
    fake_hf_cache(tmp.path(), "tiny-org/qwen3-dense", "qwen3-dense");
    fake_hf_cache(tmp.path(), "tiny-org/qwen3-dense-fp8", "qwen3-dense-fp8");
    let env = [("HF_HUB_CACHE", tmp.path().to_str().unwrap())];
    let r = run_env(&["diff", "--json", "tiny-org/qwen3-dense", fixture("qwen3-dense").to_str().unwrap()], &env);
    assert_eq!(r.code, 0, "{}{}", r.stdout, r.stderr);
    let r = run_env(&["diff", "--json", "tiny-org/qwen3-dense", "tiny-org/qwen3-dense-fp8"], &env);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(
        (v["a"]["model"].as_str(), v["b"]["model"].as_str()),
        (Some("tiny-org/qwen3-dense"), Some("tiny-org/qwen3-dense-fp8"))
    );
    assert_eq!(v["b"]["quantization"]["method"], "fp8");
    // Offline, a repo the cache lacks is an input error, as for audit.
    let r = run_env(&["diff", "tiny-org/qwen3-dense", "nobody/nothing"], &env);
    assert_eq!(r.code, 3);
    assert!(
        r.stderr.contains("nobody/nothing") && r.stderr.contains("not in the local Hugging Face cache"),
        "{}",
        r.stderr
    );
}

#[test]
fn a_missing_directory_is_an_input_error() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = tmp.path().join("no-such-checkpoint");
    for args in [[fixture("llama"), missing.clone()], [missing.clone(), fixture("llama")]] {
        let r = diff_human(&args[0], &args[1]);
        assert_eq!(r.code, 3, "{}", r.stderr);
        assert!(r.stdout.is_empty(), "{}", r.stdout);
        assert!(
            r.stderr.starts_with("error: ")
                && r.stderr.contains(&missing.display().to_string())
                && r.stderr.contains("no such file or directory")
                && r.stderr.contains("help: "),
            "{}",
            r.stderr
        );
    }
    let r = run(&["diff", fixture("llama").to_str().unwrap()]);
    assert_eq!(r.code, 2, "{}", r.stderr);
}
