//! ModelSlim attention schemes (FAKQuant, INT8_DYNAMIC: vllm_ascend/quantization/methods/kv_c8.py,
//! vLLM-Ascend 182b75ea84) and the 310P-only linear schemes (W8A8S, W8A8SC).
//!
//! No reference writer produces these checkpoints here (modelslim.json's `fixture` fields give the
//! reasons: FA3 and the indexer need msModelSlim's MLA adapters, calibration and an NPU; W8A8S the
//! older API's sparse run; W8A8SC a native compressor). So each test builds one by editing a real
//! msModelSlim fixture: it adds the tensors msModelSlim's saver writes (ascendv1.py ::
//! _save_activation_per_head: scale F32 [heads, 1], offset int8 [heads, 1]; the indexer's rotation
//! matrices [index_head_dim, index_head_dim]) and the description keys, and asserts audit / plan
//! outcomes computed here from kv_c8.py's shapes, never read from ckptpilot.

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::Path;

const SHARD: &str = "quant_model_weights-00001-of-00001.safetensors";
/// fixtures/modelslim-llama-w8a8-dynamic/config.json: 4 heads, 2 KV heads, 2 layers, bfloat16.
const HEADS: u64 = 4;
const KV_HEADS: u64 = 2;
const LAYERS: u64 = 2;

fn audit_ascend(path: &Path) -> (i32, Value) {
    audit_json_for(path, "vllm-ascend")
}

fn plan(path: &Path, tp: u64, device: &str) -> Value {
    let tp = tp.to_string();
    let r =
        run(&["plan", path.to_str().unwrap(), "--target", "vllm-ascend", "--tp", &tp, "--device", device, "--json"]);
    serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}{}", r.stdout, r.stderr))
}

fn rank_bytes(path: &Path, tp: u64) -> u64 {
    plan(path, tp, "ascend-a2")["configs"][0]["per_rank_weight_bytes"].as_u64().unwrap()
}

fn check<'a>(cfg: &'a Value, rule: &str) -> &'a Value {
    cfg["checks"].as_array().unwrap().iter().find(|k| k["rule"] == rule).unwrap()
}

/// The errors other than remap's: vLLM-Ascend's cache-scale mapper renames `.fa_q.scale` to
/// `.mla_attn.mla_attn.fa_q.scale` (modelslim_config.py :: get_cache_scale_mapper lines 622-655), a
/// module only MLA attention has, so on this Llama the renamed names are parameters the model lacks:
/// its `remap-unmapped` on exactly the added tensors is checked apart.
fn non_remap_errors(v: &Value) -> Vec<String> {
    error_codes(v).into_iter().filter(|c| c != "remap-unmapped").collect()
}

fn unmapped_tensors(v: &Value) -> Vec<String> {
    let mut t: Vec<String> =
        findings_with(v, "remap-unmapped").iter().map(|f| f["tensor"].as_str().unwrap().to_string()).collect();
    t.sort();
    t
}

fn messages(v: &Value, code: &str) -> Vec<String> {
    findings_with(v, code).iter().map(|f| f["message"].as_str().unwrap().to_string()).collect()
}

/// Append a tensor of `dtype` / `shape` (zero bytes) to the single shard and list it in the index.
fn add_tensor(dir: &Path, name: &str, dtype: &str, shape: &[u64]) {
    add_tensor_to(dir, SHARD, name, dtype, shape)
}

/// Append a tensor (zero bytes) to shard `shard` and list it in the index.
fn add_tensor_to(dir: &Path, shard: &str, name: &str, dtype: &str, shape: &[u64]) {
    let p = dir.join(shard);
    let mut st = read_st(&p);
    let size = match dtype {
        "F32" | "I32" => 4,
        "BF16" | "F16" => 2,
        "I64" => 8,
        _ => 1,
    };
    let n = shape.iter().product::<u64>() * size;
    let at = st.data.len() as u64;
    st.data.extend(std::iter::repeat_n(0u8, n as usize));
    st.header.insert(name.into(), json!({"dtype": dtype, "shape": shape, "data_offsets": [at, at + n]}));
    write_st(&p, &st);
    edit_json(&index_path(dir), |v| v["weight_map"][name] = json!(shard));
    fix_total_size(dir);
}

fn describe(dir: &Path, f: impl FnOnce(&mut serde_json::Map<String, Value>)) {
    edit_json(&dir.join("quant_model_description.json"), |d| f(d.as_object_mut().unwrap()));
}

/// fixtures/modelslim-llama-w8a8-dynamic with msModelSlim's FA3 per-head INT8 output on every
/// layer: fa_q/fa_k/fa_v .scale F32 and .offset I8, [heads, 1] (q: 4 heads, k / v: 2 KV heads),
/// described as `FAQuant`, `<attn>.quant_type` INT8 and `fa_quant_type` FAKQuant (ascendv1.py ::
/// _save_activation_per_head / update_fa_quant_type / update_global_fa_quant_type).
fn fakquant_copy() -> Copy {
    let c = copy_fixture("modelslim-llama-w8a8-dynamic");
    for l in 0..LAYERS {
        let attn = format!("model.layers.{l}.self_attn");
        for (t, rows) in [("fa_q", HEADS), ("fa_k", KV_HEADS), ("fa_v", KV_HEADS)] {
            add_tensor(&c.dir, &format!("{attn}.{t}.scale"), "F32", &[rows, 1]);
            add_tensor(&c.dir, &format!("{attn}.{t}.offset"), "I8", &[rows, 1]);
        }
    }
    describe(&c.dir, |d| {
        for l in 0..LAYERS {
            let attn = format!("model.layers.{l}.self_attn");
            for t in ["fa_q", "fa_k", "fa_v"] {
                d.insert(format!("{attn}.{t}.scale"), json!("FAQuant"));
                d.insert(format!("{attn}.{t}.offset"), json!("FAQuant"));
            }
            d.insert(format!("{attn}.quant_type"), json!("INT8"));
        }
        d.insert("fa_quant_type".into(), json!("FAKQuant"));
    });
    c
}

/// The layout audits as the plain fixture does, and plan counts what
/// AscendFAQuantAttentionMethod.create_weights registers per rank (kv_c8.py lines 44-49): scale in
/// the model dtype (bf16, 2 B) and offset int8 (1 B), q [heads / TP, 1], k and v [KV heads / TP, 1].
#[test]
fn fakquant_audits_clean_and_plan_counts_its_parameters() {
    let base = fixture("modelslim-llama-w8a8-dynamic");
    let c = fakquant_copy();
    let (_, plain) = audit_ascend(&base);
    let (_, v) = audit_ascend(&c.dir);
    assert_eq!(non_remap_errors(&v), error_codes(&plain), "{:#?}", v["findings"]);
    assert!(unmapped_tensors(&plain).is_empty());
    // One finding per tensor pattern (layer 0's name stands for both layers).
    let mut added: Vec<String> =
        ["fa_k.offset", "fa_k.scale", "fa_q.offset", "fa_q.scale", "fa_v.offset", "fa_v.scale"]
            .iter()
            .map(|s| format!("model.layers.0.self_attn.{s}"))
            .collect();
    added.sort();
    assert_eq!(unmapped_tensors(&v), added);
    assert!(messages(&v, "modelslim-companion").is_empty(), "{:#?}", v["findings"]);
    assert!(messages(&v, "modelslim-missing").is_empty(), "{:#?}", v["findings"]);
    assert!(messages(&v, "modelslim-scheme").is_empty(), "{:#?}", v["findings"]);

    // TP 1: (4 + 2 + 2) rows x (2 + 1) bytes per layer; TP 2: (2 + 1 + 1) x 3.
    assert_eq!(rank_bytes(&c.dir, 1) - rank_bytes(&base, 1), LAYERS * (4 + 2 + 2) * 3);
    assert_eq!(rank_bytes(&c.dir, 2) - rank_bytes(&base, 2), LAYERS * (2 + 1 + 1) * 3);
    let cfg = &plan(&c.dir, 2, "ascend-a2")["configs"][0];
    assert_eq!(check(cfg, "target")["status"], "pass", "{cfg}");
}

/// A missing parameter keeps torch.empty's bytes (vLLM does not report a quantized model's
/// unloaded parameters); a 1-D scale trips _fa_quant_weight_loader's assertion (kv_c8.py lines
/// 21-25: [4] into [4, 1]).
#[test]
fn fakquant_missing_or_misshapen_tensors_are_errors() {
    let c = fakquant_copy();
    let gone = "model.layers.1.self_attn.fa_v.offset";
    drop_tensors(&c.dir, |n| n == gone);
    describe(&c.dir, |d| {
        d.remove(gone);
    });
    reshape_tensor(&c.dir, "model.layers.0.self_attn.fa_q.scale", &[4], "model.layers.0.self_attn.fa_q.scale");
    let (code, v) = audit_ascend(&c.dir);
    assert_eq!(code, 1);
    let m = messages(&v, "modelslim-companion");
    assert_eq!(m.len(), 2, "{:#?}", v["findings"]);
    assert!(
        m.iter().any(|m| m.starts_with(&format!("{gone} is missing: vLLM-Ascend's FAKQuant attention method"))),
        "{m:#?}"
    );
    assert!(
        m.iter().any(|m| m.contains("AssertionError: [vllm-ascend/FAKQuant] Attempted to load weight (torch.Size([4])) into parameter (torch.Size([4, 1])) when TP size is 1 and TP rank is 0.")),
        "{m:#?}"
    );
}

/// fa_quant_type names what attention layers get (get_quant_type_for_layer): msModelSlim's per-tensor
/// label `FAQuant` there is no attention scheme, and vLLM-Ascend raises create_scheme_for_layer's
/// NotImplementedError (modelslim_config.py lines 535-541).
#[test]
fn an_unregistered_attention_scheme_is_refused() {
    let c = fakquant_copy();
    describe(&c.dir, |d| {
        d.insert("fa_quant_type".into(), json!("FAQuant"));
    });
    let text =
        "NotImplementedError: Currently, vLLM Ascend doesn't support quant_type=FAQuant for layer_type=attention.";
    let (code, v) = audit_ascend(&c.dir);
    assert_eq!(code, 1);
    let m = messages(&v, "modelslim-scheme");
    assert_eq!(m.len(), LAYERS as usize, "{:#?}", v["findings"]);
    assert!(m.iter().all(|m| m.contains(text)), "{m:#?}");
    let cfg = &plan(&c.dir, 1, "ascend-a2")["configs"][0];
    let t = check(cfg, "target");
    assert_eq!(t["status"], "fail", "{cfg}");
    assert!(t["message"].as_str().unwrap().contains(text), "{t}");
}

/// DeepSeek sparse attention's indexer rotations (INT8_DYNAMIC, kv_c8.py lines 82-93): float32
/// [index_head_dim]^2 q_rot and k_rot on every rank, whatever the TP. Built on the Llama fixture with
/// `index_head_dim` 16 added to its config; msModelSlim writes them FLOAT (bf16), with
/// `<attn>.indexer.quant_type` and `indexer_quant_type` INT8_DYNAMIC (deepseek_v3_2/model_adapter.py).
#[test]
fn int8_dynamic_indexer_rotations() {
    const D: u64 = 16;
    let base = fixture("modelslim-llama-w8a8-dynamic");
    let c = copy_fixture("modelslim-llama-w8a8-dynamic");
    edit_json(&c.dir.join("config.json"), |v| v["index_head_dim"] = json!(D));
    for l in 0..LAYERS {
        for r in ["q_rot", "k_rot"] {
            add_tensor(&c.dir, &format!("model.layers.{l}.self_attn.indexer.{r}"), "BF16", &[D, D]);
        }
    }
    describe(&c.dir, |d| {
        for l in 0..LAYERS {
            for r in ["q_rot", "k_rot"] {
                d.insert(format!("model.layers.{l}.self_attn.indexer.{r}"), json!("FLOAT"));
            }
            d.insert(format!("model.layers.{l}.self_attn.indexer.quant_type"), json!("QK_INT8_DYNAMIC"));
        }
        d.insert("indexer_quant_type".into(), json!("INT8_DYNAMIC"));
    });
    let (_, plain) = audit_ascend(&base);
    let (_, v) = audit_ascend(&c.dir);
    assert_eq!(non_remap_errors(&v), error_codes(&plain), "{:#?}", v["findings"]);
    assert_eq!(
        unmapped_tensors(&v),
        ["model.layers.0.self_attn.indexer.k_rot", "model.layers.0.self_attn.indexer.q_rot"]
    );
    assert!(messages(&v, "modelslim-companion").is_empty(), "{:#?}", v["findings"]);
    // The description's `.quant_type` keys are values, not tensors a shard should hold.
    assert!(messages(&v, "modelslim-missing").is_empty(), "{:#?}", v["findings"]);
    let rot = LAYERS * 2 * D * D * 4;
    assert_eq!(rank_bytes(&c.dir, 1) - rank_bytes(&base, 1), rot);
    assert_eq!(rank_bytes(&c.dir, 2) - rank_bytes(&base, 2), rot);

    // A rotation of the wrong size: default_weight_loader's assertion.
    reshape_tensor(
        &c.dir,
        "model.layers.1.self_attn.indexer.k_rot",
        &[D, D / 2],
        "model.layers.1.self_attn.indexer.k_rot",
    );
    let (_, v) = audit_ascend(&c.dir);
    let m = messages(&v, "modelslim-companion");
    assert_eq!(m.len(), 1, "{:#?}", v["findings"]);
    assert!(
        m[0].contains(
            "AssertionError: Attempted to load weight (torch.Size([16, 8])) into parameter (torch.Size([16, 16]))"
        ),
        "{m:#?}"
    );
}

/// W8A8S is registered only in the 310P registry (_310p/quantization/methods/w8a8s.py line 28), with
/// w8a8_base.py's parameters, which are static W8A8's: fixtures/modelslim-llama-w8a8 relabelled is
/// its layout. On an A2 the main registry has no method (modelslim_config.py lines 535-541); on a
/// 310P it plans; a scheme the 310P registry lacks is refused there with its own text
/// (_310p/quantization/modelslim_config.py line 79).
#[test]
fn w8a8s_serves_only_on_a_310p() {
    let c = copy_fixture("modelslim-llama-w8a8");
    describe(&c.dir, |d| {
        for (_, v) in d.iter_mut() {
            if v == "W8A8" {
                *v = json!("W8A8S");
            }
        }
    });
    let (_, v) = audit_ascend(&c.dir);
    assert!(messages(&v, "modelslim-companion").is_empty(), "{:#?}", v["findings"]);
    let a2 = &plan(&c.dir, 1, "ascend-a2")["configs"][0];
    let t = check(a2, "target");
    assert_eq!(t["status"], "fail", "{a2}");
    assert!(
        t["message"].as_str().unwrap().contains(
            "NotImplementedError: Currently, vLLM Ascend doesn't support quant_type=W8A8S for layer_type=linear."
        ),
        "{t}"
    );
    let p310 = &plan(&c.dir, 1, "ascend-310p")["configs"][0];
    assert_eq!(check(p310, "target")["status"], "pass", "{p310}");

    // W8A16 has no 310P method.
    let w8a16 = &plan(&fixture("modelslim-llama-w8a16"), 1, "ascend-310p")["configs"][0];
    let t = check(w8a16, "target");
    assert_eq!(t["status"], "fail", "{w8a16}");
    assert!(
        t["message"]
            .as_str()
            .unwrap()
            .starts_with("NotImplementedError: Unsupported quant_type=W8A16 for layer_type=linear."),
        "{t}"
    );
    // W8A8_DYNAMIC has one.
    let dynamic = &plan(&fixture("modelslim-llama-w8a8-dynamic"), 1, "ascend-310p")["configs"][0];
    assert_eq!(check(dynamic, "target")["status"], "pass", "{dynamic}");

    // audit judges on the device it is told (`--device`), A2 by default.
    let unsupported = |v: &Value| messages(v, "target-unsupported");
    assert_eq!(unsupported(&v).len(), 1, "{:#?}", v["findings"]);
    assert!(unsupported(&v)[0].contains("quant_type=W8A8S for layer_type=linear"), "{:?}", unsupported(&v));
    let on = |dev: &str| {
        let r = run(&["audit", c.dir.to_str().unwrap(), "--target", "vllm-ascend", "--device", dev, "--json"]);
        (r.code, serde_json::from_str::<Value>(&r.stdout).unwrap_or(Value::Null), r.stderr)
    };
    let (_, v310, _) = on("ascend-310p");
    assert!(unsupported(&v310).is_empty(), "{:#?}", v310["findings"]);
    let (_, va3, _) = on("ascend-a3");
    assert_eq!(unsupported(&va3).len(), 1, "{:#?}", va3["findings"]);
    // A GPU is no device of vLLM-Ascend: a usage error, not a judgement.
    let (code, _, err) = on("h100");
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("--device h100"), "{err}");
}

/// C8 KV-cache scales as msModelSlim saves them (`<attn>.k_proj.kv_cache_scale` / `_offset`, the
/// same for v_proj) are renamed by vLLM-Ascend's cache-scale mapper to `<attn>.attn.k_cache_scale`
/// … (modelslim_config.py :: get_cache_scale_mapper lines 622-655) and loaded into the parameters
/// AscendC8KVCacheAttentionMethod.create_weights registers on the C8 layers (kv_c8.py, whose loader
/// takes any shape): no remap error on them. Without `kv_cache_type: C8` the mapper does not rename
/// them and the model has no such parameter.
#[test]
fn c8_kv_cache_scales_load_into_the_attention_method_parameters() {
    let c = copy_fixture("modelslim-llama-w8a8-dynamic");
    let mut added = Vec::new();
    for l in 0..LAYERS {
        for proj in ["k_proj", "v_proj"] {
            for what in ["kv_cache_scale", "kv_cache_offset"] {
                let name = format!("model.layers.{l}.self_attn.{proj}.{what}");
                add_tensor(&c.dir, &name, "F32", &[KV_HEADS * 16]);
                added.push(name);
            }
        }
    }
    added.sort();
    describe(&c.dir, |d| {
        for n in &added {
            d.insert(n.clone(), json!("W8A8_DYNAMIC"));
        }
    });
    // Not C8: the names reach the model unrenamed.
    let (_, plain) = audit_ascend(&c.dir);
    assert!(!unmapped_tensors(&plain).is_empty(), "{:#?}", plain["findings"]);
    describe(&c.dir, |d| {
        d.insert("kv_cache_type".into(), json!("C8"));
    });
    let (_, v) = audit_ascend(&c.dir);
    assert!(unmapped_tensors(&v).is_empty(), "{:#?}", v["findings"]);
    let r = run(&["remap", c.dir.to_str().unwrap(), "--target", "vllm-ascend", "--json"]);
    let remap: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}{}", r.stdout, r.stderr));
    let mut params: Vec<(String, String, String)> = remap["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| added.iter().any(|a| row["checkpoint_name"] == a.as_str()))
        .map(|row| {
            (
                row["checkpoint_name"].as_str().unwrap().to_string(),
                row["param"].as_str().unwrap_or("").to_string(),
                row["action"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    params.sort();
    let want: Vec<(String, String, String)> = added
        .iter()
        .map(|n| {
            let p = n.replace("k_proj.kv_cache_", "attn.k_cache_").replace("v_proj.kv_cache_", "attn.v_cache_");
            (n.clone(), p, "load".to_string())
        })
        .collect();
    assert_eq!(params, want);
}

/// FA3 alone on an MLA model (msModelSlim's FA3 processor takes only MLA adapters): the linear
/// weights stay FLOAT, every attention layer gets fa_q / fa_k / fa_v scale and offset (q: the 4
/// heads of fixtures/deepseek-v3-mla, k / v: MLA's one KV head). vLLM-Ascend's cache-scale mapper
/// renames them to `<attn>.mla_attn.mla_attn.fa_*`, the parameters the FAKQuant method registers
/// on MLA attention (modelslim_config.py :: get_cache_scale_mapper lines 622-655; kv_c8.py lines
/// 44-49): loaded, no remap error. The base checkpoint is written by transformers (tools/fixtures).
#[test]
fn fakquant_on_mla_loads_into_the_mla_attention_parameters() {
    let c = copy_fixture("deepseek-v3-mla");
    let shard = "model-00001-of-00003.safetensors";
    let names: Vec<String> =
        read_st(&c.dir.join(shard)).header.keys().filter(|k| *k != "__metadata__").cloned().collect();
    let index: Value = serde_json::from_str(&std::fs::read_to_string(index_path(&c.dir)).unwrap()).unwrap();
    let mut added = Vec::new();
    for l in 0..3 {
        let attn = format!("model.layers.{l}.self_attn");
        for (t, rows) in [("fa_q", 4), ("fa_k", 1), ("fa_v", 1)] {
            for (what, dtype) in [("scale", "F32"), ("offset", "I8")] {
                let name = format!("{attn}.{t}.{what}");
                add_tensor_to(&c.dir, shard, &name, dtype, &[rows, 1]);
                added.push(name);
            }
        }
    }
    added.sort();
    let mut d = serde_json::Map::new();
    d.insert("model_quant_type".into(), json!("FLOAT"));
    for n in index["weight_map"].as_object().unwrap().keys().chain(names.iter()) {
        d.insert(n.clone(), json!("FLOAT"));
    }
    for n in &added {
        d.insert(n.clone(), json!("FAQuant"));
    }
    for l in 0..3 {
        d.insert(format!("model.layers.{l}.self_attn.quant_type"), json!("INT8"));
    }
    d.insert("fa_quant_type".into(), json!("FAKQuant"));
    std::fs::write(c.dir.join("quant_model_description.json"), serde_json::to_string_pretty(&d).unwrap()).unwrap();

    let (_, v) = audit_ascend(&c.dir);
    assert_eq!(error_codes(&v), Vec::<String>::new(), "{:#?}", v["findings"]);
    let r = run(&["remap", c.dir.to_str().unwrap(), "--target", "vllm-ascend", "--json"]);
    let remap: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}{}", r.stdout, r.stderr));
    let mut got: Vec<(String, String)> = remap["rows"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|row| added.iter().any(|a| row["checkpoint_name"] == a.as_str()))
        .map(|row| (row["param"].as_str().unwrap_or("").to_string(), row["action"].as_str().unwrap().to_string()))
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> = added
        .iter()
        .map(|n| (n.replace(".self_attn.fa_", ".self_attn.mla_attn.mla_attn.fa_"), "load".to_string()))
        .collect();
    want.sort();
    assert_eq!(got, want);
}
