//! Ascend 950 (MX / FP8) ModelSlim checkpoints written by msModelSlim 26.1.0 itself, on the CPU
//! (tools/fixtures_modelslim_mx.sh, pinned versions): what `src/quant/modelslim.json` says each
//! scheme loads is what msModelSlim writes, audit raises no contract error on them, plan counts
//! their stored bytes on an Ascend 950 and refuses them on A2.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;

/// (fixture, scheme, vLLM-Ascend method file the target error names).
const FIXTURES: &[(&str, &str, &str)] = &[
    ("modelslim-llama-w8a8-mxfp8", "W8A8_MXFP8", "w8a8_mxfp8.py"),
    ("modelslim-llama-w4a4-mxfp4", "W4A4_MXFP4", "w4a4_mxfp4.py"),
    ("modelslim-llama-w4a8-mxfp", "W4A8_MXFP", "w4a8_mxfp4.py"),
    ("modelslim-qwen3-moe-w8a8-mxfp8", "W8A8_MXFP8", "w8a8_mxfp8.py"),
    ("modelslim-qwen3-moe-w4a4-mxfp4", "W4A4_MXFP4", "w4a4_mxfp4.py"),
    ("modelslim-qwen3-moe-w4a8-mxfp", "W4A8_MXFP", "w4a8_mxfp4.py"),
    // msModelSlim's data-free converter (`apiversion: modelslim_convert`, FLOAT -> W8A8_MXFP8).
    ("modelslim-llama-w8a8-mxfp8-convert", "W8A8_MXFP8", "w8a8_mxfp8.py"),
    ("modelslim-qwen3-moe-w8a8-mxfp8-convert", "W8A8_MXFP8", "w8a8_mxfp8.py"),
    // The converter's FP8_BLOCK -> FLOAT -> W8A8_MXFP8 route, from a 128x128-block fp8 checkpoint.
    ("modelslim-qwen3-dense-fp8-w8a8-mxfp8-convert", "W8A8_MXFP8", "w8a8_mxfp8.py"),
];

/// The contract's own findings: any of them on a checkpoint msModelSlim wrote is a wrong contract.
const CONTRACT_CODES: &[&str] = &[
    "modelslim-companion",
    "modelslim-scheme",
    "modelslim-undescribed",
    "modelslim-missing",
    "modelslim-description-name",
];

fn audit_ascend(path: &Path) -> (i32, Value) {
    audit_json_for(path, "vllm-ascend")
}

fn plan(path: &Path, device: &[&str]) -> Value {
    let mut args = vec!["plan", path.to_str().unwrap(), "--target", "vllm-ascend", "--tp", "1", "--json"];
    args.extend_from_slice(device);
    let r = run(&args);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}{}", r.stdout, r.stderr))
}

fn check<'a>(cfg: &'a Value, rule: &str) -> &'a Value {
    cfg["checks"].as_array().unwrap().iter().find(|k| k["rule"] == rule).unwrap()
}

/// The bytes the checkpoint's safetensors store (headers excluded).
fn stored_bytes(dir: &Path) -> u64 {
    let mut saved = 0u64;
    for p in std::fs::read_dir(dir).unwrap().flatten().map(|e| e.path()) {
        if p.extension().is_some_and(|x| x == "safetensors") {
            saved += read_st(&p).data.len() as u64;
        }
    }
    assert!(saved > 0, "{}", dir.display());
    saved
}

fn description(dir: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(dir.join("quant_model_description.json")).unwrap()).unwrap()
}

#[test]
fn msmodelslim_mx_checkpoints_meet_the_contract() {
    for (name, scheme, method) in FIXTURES {
        let dir = fixture(name);
        let d = description(&dir);
        assert_eq!(d["model_quant_type"], *scheme, "{name}");
        assert_eq!(d["group_size"], 32, "{name}");

        let (code, v) = audit_ascend(&dir);
        for c in CONTRACT_CODES {
            assert!(findings_with(&v, c).is_empty(), "{name}: {c}: {:#?}", v["findings"]);
        }
        // The one error: audit's vLLM-Ascend device is A2, and the MX kernels exist on A5 only.
        assert_eq!(error_codes(&v), vec!["target-unsupported".to_string()], "{name}: {:#?}", v["findings"]);
        assert_eq!(code, 1, "{name}");
        let m = expect(&v, "target-unsupported", "error")["message"].as_str().unwrap().to_string();
        assert!(m.contains(scheme) && m.contains("Ascend A5") && m.contains(method), "{name}: {m}");
        let q = expect(&v, "quant-scheme", "info")["message"].as_str().unwrap().to_string();
        assert!(q.starts_with("ascend (from quant_model_description.json)"), "{name}: {q}");
        assert!(q.contains(&format!("{scheme} ")), "{name}: {q}");

        // Every saved tensor reaches a vLLM parameter (the uint8 scales included).
        let r = run(&["remap", dir.to_str().unwrap(), "--target", "vllm-ascend", "--json"]);
        let rv: Value = serde_json::from_str(&r.stdout).unwrap();
        let unmapped: Vec<&Value> =
            rv["rows"].as_array().unwrap().iter().filter(|r| r["action"] == "unmapped").collect();
        assert!(unmapped.is_empty(), "{name}: {unmapped:#?}");
    }
}

#[test]
fn plan_counts_the_stored_bytes_on_an_ascend_950_and_refuses_a2() {
    for (name, scheme, _) in FIXTURES {
        let dir = fixture(name);
        let a5 = plan(&dir, &["--device", "ascend-950pr"]);
        let cfg = &a5["configs"][0];
        assert_eq!(check(cfg, "target")["status"], "pass", "{name}: {cfg}");
        assert_eq!(cfg["feasible"], true, "{name}: {cfg}");
        assert_eq!(cfg["per_rank_weight_bytes"].as_u64(), Some(stored_bytes(&dir)), "{name} ({scheme})");

        for device in [&[][..], &["--device", "ascend-a2"][..]] {
            let a2 = plan(&dir, device);
            let k = check(&a2["configs"][0], "target");
            assert_eq!(k["status"], "fail", "{name} {device:?}: {k}");
            let m = k["message"].as_str().unwrap();
            assert!(m.contains(scheme) && m.contains("this device is A2"), "{name} {device:?}: {m}");
            assert_eq!(a2["configs"][0]["feasible"], false, "{name} {device:?}");
        }
    }
}

/// The layout is checked, not just the scheme names: one scale with the wrong dtype (int8 where
/// vLLM-Ascend allocates uint8) or one packed fp4 weight with its logical K (not K / 2) is a
/// `modelslim-companion` error on the tensor.
#[test]
fn a_changed_mx_tensor_breaks_the_contract() {
    let c = copy_fixture("modelslim-llama-w8a8-mxfp8");
    transform_tensors(&c.dir, |name, meta, bytes| {
        let mut m = meta.clone();
        if name == "model.layers.0.self_attn.o_proj.weight_scale" {
            assert_eq!(m["dtype"], "U8");
            m["dtype"] = Value::from("I8");
        }
        vec![(name.to_string(), m, bytes.to_vec())]
    });
    let (_, v) = audit_ascend(&c.dir);
    let f = findings_with(&v, "modelslim-companion");
    assert!(
        f.iter().any(|f| f.to_string().contains("model.layers.0.self_attn.o_proj.weight_scale")),
        "{:#?}",
        v["findings"]
    );

    let c = copy_fixture("modelslim-llama-w4a4-mxfp4");
    transform_tensors(&c.dir, |name, meta, bytes| {
        let mut m = meta.clone();
        let mut b = bytes.to_vec();
        if name == "model.layers.1.mlp.down_proj.weight" {
            // [N, K/2] two fp4 per byte -> [N, K] one per byte.
            let (n, k2) = (m["shape"][0].as_u64().unwrap(), m["shape"][1].as_u64().unwrap());
            m["shape"] = serde_json::json!([n, k2 * 2]);
            b = bytes.iter().flat_map(|x| [x & 0xf, x >> 4]).collect();
        }
        vec![(name.to_string(), m, b)]
    });
    let (_, v) = audit_ascend(&c.dir);
    let f = findings_with(&v, "modelslim-companion");
    assert!(f.iter().any(|f| f.to_string().contains("model.layers.1.mlp.down_proj.weight")), "{:#?}", v["findings"]);
}

/// The data-free converter writes, for the same linears, exactly what the calibrated
/// modelslim_v1 min-max pipeline writes: the same safetensors file, byte for byte, and the same
/// description (only the index lists the tensors in another order).
#[test]
fn the_converter_writes_what_linear_quant_writes() {
    for model in ["llama", "qwen3-moe"] {
        let q = fixture(&format!("modelslim-{model}-w8a8-mxfp8"));
        let c = fixture(&format!("modelslim-{model}-w8a8-mxfp8-convert"));
        let shard = "quant_model_weights-00001-of-00001.safetensors";
        assert!(std::fs::read(q.join(shard)).unwrap() == std::fs::read(c.join(shard)).unwrap(), "{model}");
        assert_eq!(description(&q), description(&c), "{model}");
        let idx = |d: &Path| -> Value {
            serde_json::from_slice(&std::fs::read(d.join("quant_model_weights.safetensors.index.json")).unwrap())
                .unwrap()
        };
        assert_eq!(idx(&q), idx(&c), "{model}");
    }
}

/// From an fp8 checkpoint the converter drops `weight_scale_inv` and the config's
/// `quantization_config` (vLLM-Ascend would otherwise see `fp8`, not `ascend`), and quantizes the
/// same linears as from bf16.
#[test]
fn the_converter_from_fp8_leaves_no_fp8_trace() {
    let dir = fixture("modelslim-qwen3-dense-fp8-w8a8-mxfp8-convert");
    let cfg: Value = serde_json::from_slice(&std::fs::read(dir.join("config.json")).unwrap()).unwrap();
    assert!(cfg.get("quantization_config").is_none(), "{cfg}");
    let st = read_st(&dir.join("quant_model_weights-00001-of-00001.safetensors"));
    assert!(!st.header.keys().any(|k| k.contains("scale_inv")));
    let d = description(&dir);
    // Every fp8 weight of the source is a W8A8_MXFP8 weight here.
    let mut fp8_source = Vec::new();
    for p in std::fs::read_dir(fixture("qwen3-dense-fp8")).unwrap().flatten().map(|e| e.path()) {
        if p.extension().is_some_and(|x| x == "safetensors") {
            let h = read_st(&p).header;
            fp8_source.extend(h.iter().filter(|(_, m)| m["dtype"] == "F8_E4M3").map(|(k, _)| k.clone()));
        }
    }
    assert_eq!(fp8_source.len(), 28);
    for k in &fp8_source {
        assert_eq!(d[k.as_str()], "W8A8_MXFP8", "{k}");
        assert_eq!(st.header[k.as_str()]["dtype"], "F8_E4M3", "{k}");
        assert_eq!(st.header[format!("{}_scale", k).as_str()]["dtype"], "U8", "{k}");
    }
    let (_, v) = audit_ascend(&dir);
    assert_eq!(v["quantization"]["method"], "ascend");
}

/// msModelSlim names its fp8 (per-channel weight, per-token activation) scheme WFP8AFP8_DYNAMIC,
/// which vLLM-Ascend registers no method for: audit reports vLLM-Ascend's NotImplementedError on
/// every layer. Named W8A8FP8_DYNAMIC, the same tensors are what that method loads.
#[test]
fn msmodelslim_fp8_dynamic_is_named_wfp8afp8_and_refused() {
    let dir = fixture("modelslim-llama-wfp8afp8-dynamic");
    assert_eq!(description(&dir)["model_quant_type"], "WFP8AFP8_DYNAMIC");
    let (code, v) = audit_ascend(&dir);
    assert_eq!(code, 1);
    let f = findings_with(&v, "modelslim-scheme");
    // 7 linears x 2 layers.
    assert_eq!(f.len(), 14, "{:#?}", v["findings"]);
    for f in &f {
        assert!(
            f["message"].as_str().unwrap().contains(
                "NotImplementedError: Currently, vLLM Ascend doesn't support quant_type=WFP8AFP8_DYNAMIC for layer_type=linear"
            ),
            "{f}"
        );
    }

    let c = copy_fixture("modelslim-llama-wfp8afp8-dynamic");
    edit_json(&c.dir.join("quant_model_description.json"), |d| {
        for (_, v) in d.as_object_mut().unwrap().iter_mut() {
            if v == "WFP8AFP8_DYNAMIC" {
                *v = Value::from("W8A8FP8_DYNAMIC");
            }
        }
    });
    let (_, v) = audit_ascend(&c.dir);
    for code in CONTRACT_CODES {
        assert!(findings_with(&v, code).is_empty(), "{code}: {:#?}", v["findings"]);
    }
    assert_eq!(error_codes(&v), vec!["target-unsupported".to_string()], "{:#?}", v["findings"]);
    let a5 = plan(&c.dir, &["--device", "ascend-950pr"]);
    let cfg = &a5["configs"][0];
    assert_eq!(check(cfg, "target")["status"], "pass", "{cfg}");
    // vLLM-Ascend allocates weight_offset in the model dtype (w8a8fp8_dynamic.py ::
    // get_perchannel_param, params_dtype): msModelSlim's F32 offsets take 2 bytes, not 4, per value.
    let shard = read_st(&c.dir.join("quant_model_weights-00001-of-00001.safetensors"));
    let offsets: u64 = shard
        .header
        .iter()
        .filter(|(k, _)| k.ends_with(".weight_offset"))
        .map(|(_, m)| {
            assert_eq!(m["dtype"], "F32");
            m["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).product::<u64>()
        })
        .sum();
    assert_eq!(offsets, 2 * (64 + 32 + 32 + 64 + 128 + 128 + 64));
    assert_eq!(cfg["per_rank_weight_bytes"].as_u64(), Some(stored_bytes(&c.dir) - 2 * offsets));
}
