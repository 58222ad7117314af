//! `ckptpilot remap` against what vLLM 0.33.0 itself did with the same fixtures: `fixtures/oracle/*.json`
//! are compacted traces of the vLLM oracle (every weight_loader call, every parameter, every load
//! error) recorded by `tools/oracle/export_trace.py`. Plus broken copies, each with the right finding.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeSet;

fn remap(dir: &std::path::Path, extra: &[&str]) -> (i32, Value) {
    let mut a = vec!["remap", dir.to_str().unwrap(), "--json"];
    a.extend_from_slice(extra);
    let r = run(&a);
    let v = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {} {}", r.stdout, r.stderr));
    (r.code, v)
}

fn shard(v: &Value) -> Value {
    match v {
        Value::Number(n) => Value::from(n.to_string()),
        other => other.clone(),
    }
}

/// Every tensor vLLM loaded goes to the same (param, shard, expert) in the remap; every tensor vLLM
/// never loaded is skipped or unmapped; the parameter sets are equal.
fn equals_oracle(fixture_name: &str, tp: u64, check_errors: bool) {
    let oracle: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture(&format!("oracle/{fixture_name}.tp{tp}.json"))).unwrap())
            .unwrap();
    assert_eq!(oracle["vllm_version"], "0.33.0");
    assert_eq!(oracle["stages"]["build"], true, "{fixture_name}: the oracle built the model");
    let (_, v) = remap(&fixture(fixture_name), &["--tp", &tp.to_string()]);
    let trace = oracle["trace"].as_object().unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(
        rows.len(),
        trace.len() + oracle["not_loaded"].as_array().unwrap().len(),
        "{fixture_name}: tensor count"
    );
    for r in rows {
        let name = r["checkpoint_name"].as_str().unwrap();
        let action = r["action"].as_str().unwrap();
        match trace.get(name) {
            Some(t) => {
                assert!(
                    action != "skip" && action != "unmapped",
                    "{fixture_name}: {name} is loaded by vLLM, remap says {action}"
                );
                let got = (r["param"].clone(), shard(&r["shard_id"]), r["expert_id"].clone());
                let want = (t[0].clone(), shard(&t[1]), t[2].clone());
                assert_eq!(got, want, "{fixture_name}: {name}");
            }
            None => assert!(
                action == "skip" || action == "unmapped",
                "{fixture_name}: vLLM never loads {name}; remap: {action}"
            ),
        }
    }
    let vllm: BTreeSet<&str> = oracle["params"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    let ours: BTreeSet<&str> = v["params"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(ours, vllm, "{fixture_name}: parameter set");
    // Where vLLM raised while loading, the remap reports an error finding; where it did not, none.
    let errors: Vec<&Value> = v["findings"].as_array().unwrap().iter().filter(|f| f["severity"] == "error").collect();
    if check_errors {
        assert_eq!(
            errors.is_empty(),
            oracle["load_errors"].as_array().unwrap().is_empty(),
            "{fixture_name}: {errors:?}"
        );
    }
}

macro_rules! oracle_tests {
    ($($test:ident => $fixture:literal at $tp:literal $(, $mapping_only:ident)?;)*) => {
        $( #[test] fn $test() { equals_oracle($fixture, $tp, oracle_tests!(@errors $($mapping_only)?)); } )*
    };
    (@errors) => { true };
    (@errors mapping_only) => { false };
}

oracle_tests! {
    llama_equals_vllm => "llama" at 2;
    mistral_equals_vllm => "mistral" at 2;
    qwen2_equals_vllm => "qwen2" at 2;
    qwen3_equals_vllm => "qwen3-dense" at 2;
    qwen3_moe_equals_vllm => "qwen3-moe" at 2;
    // vLLM refines this fixture's expert scales (intermediate 32 < block 128) and then fails to copy
    // the upsampled [4, 4] grids into its [2, 1] parameters: a loader limit for experts narrower than
    // a block, not a naming problem; the mapping itself is compared.
    qwen3_moe_fp8_equals_vllm => "qwen3-moe-fp8" at 1, mapping_only;
    mixtral_equals_vllm => "mixtral" at 2;
    deepseek_v3_equals_vllm => "deepseek-v3-mla" at 2;
    glm4_moe_equals_vllm => "glm4-moe" at 2;
    olmo2_equals_vllm => "olmo2" at 2;
    gpt_oss_equals_vllm => "gpt-oss" at 2;
    qwen3_next_equals_vllm => "qwen3-next" at 2;
    qwen2_5_vl_equals_vllm => "qwen2.5-vl" at 2;
    qwen2_5_vl_new_layout_equals_vllm => "qwen2.5-vl-new" at 2;
    qwen3_vl_equals_vllm => "qwen3-vl" at 2;
    qwen3_vl_legacy_layout_equals_vllm => "qwen3-vl-legacy" at 2;
    gemma3_equals_vllm => "gemma3-tied" at 2;
    gemma3_mm_equals_vllm => "gemma3-mm" at 2;
}

fn found(v: &Value) -> Vec<(String, String)> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["code"].as_str().unwrap().to_string(), f["message"].as_str().unwrap().to_string()))
        .collect()
}

#[test]
fn clean_fixtures_have_a_clean_reverse_check() {
    // deepseek-fp8 on vllm-ascend: fp8 dequantized at load, the layout vLLM builds (below).
    for (f, extra) in [
        ("llama", &[][..]),
        ("qwen3-moe", &[]),
        ("deepseek-fp8", &["--target", "vllm-ascend"]),
        ("gpt-oss", &[]),
        ("qwen3-next", &[]),
        ("qwen2.5-vl-new", &[]),
    ] {
        let (code, v) = remap(&fixture(f), extra);
        assert_eq!(code, 0, "{f}: {:?}", found(&v));
        assert_eq!(v["schema"], "ckptpilot.remap/1");
        assert_eq!(v["vllm_reference"], "0.33.0");
        assert_eq!(v["family"]["matched_by"], "architecture");
    }
}

/// vLLM 0.33.0 does not build deepseek-fp8 at TP 1 with native fp8 (fixtures/oracle/deepseek-fp8.tp1.json
/// holds its build error): remap shows no table for it, and says what vLLM says.
#[test]
fn no_table_for_a_layout_vllm_does_not_build() {
    let oracle: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("oracle").join("deepseek-fp8.tp1.json")).unwrap())
            .unwrap();
    let vllm_says = oracle["build_errors"][0].as_str().unwrap();
    let r = run(&["remap", fixture("deepseek-fp8").to_str().unwrap(), "--json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stdout.is_empty());
    assert!(r.stderr.contains(vllm_says), "{vllm_says:?} not in {}", r.stderr);
}

#[test]
fn missing_expert_projection_is_an_unfilled_slot() {
    let c = copy_fixture("qwen3-moe");
    drop_tensors(&c.dir, |n| n == "model.layers.1.mlp.experts.3.up_proj.weight");
    let (code, v) = remap(&c.dir, &[]);
    assert_eq!(code, 1);
    let found = found(&v);
    assert!(
        found.iter().any(|(c, m)| c == "remap-unfilled"
            && m.starts_with("model.layers.1.mlp.experts.routed_experts.w13_weight (shard w3 expert 3)")),
        "{found:?}"
    );
}

#[test]
fn renamed_prefix_reaches_no_module() {
    let c = copy_fixture("llama");
    rename_tensors(&c.dir, |n| n.replacen("model.", "transformer.", 1));
    let (code, v) = remap(&c.dir, &[]);
    assert_eq!(code, 1);
    let found = found(&v);
    assert!(found.iter().any(|(c, m)| c == "remap-unmapped"
        && m.contains("ValueError: There is no module or parameter named 'transformer' in LlamaForCausalLM")));
    // The row has no parameter; where the routing went is kept apart.
    let row = v["rows"].as_array().unwrap().iter().find(|r| r["checkpoint_name"] == "transformer.norm.weight").unwrap();
    assert!(row["param"].is_null());
    assert_eq!(row["routed_to"], "transformer.norm.weight");
    assert_eq!(row["action"], "unmapped");
    // …and everything the model needs is then unfilled.
    assert!(found.iter().any(|(c, m)| c == "remap-unfilled" && m.starts_with("model.embed_tokens.weight")));
}

#[test]
fn extra_wrapper_prefix_reaches_no_module() {
    // torch.compile's `_orig_mod.` wrapper (vllm#12783).
    let c = copy_fixture("qwen3-dense");
    rename_tensors(&c.dir, |n| format!("_orig_mod.{n}"));
    let (_, v) = remap(&c.dir, &[]);
    assert!(found(&v)
        .iter()
        .any(|(c, m)| c == "remap-unmapped" && m.contains("There is no module or parameter named '_orig_mod'")));
}

#[test]
fn untied_model_without_lm_head() {
    let c = copy_fixture("llama");
    drop_tensors(&c.dir, |n| n == "lm_head.weight");
    let (code, v) = remap(&c.dir, &[]);
    assert_eq!(code, 1);
    assert!(found(&v).iter().any(|(c, m)| c == "remap-unfilled" && m.starts_with("lm_head.weight")));
}

#[test]
fn mtp_declared_but_missing_is_an_audit_finding() {
    let c = copy_fixture("deepseek-v3-mla");
    let layers = 3;
    let prefix = format!("model.layers.{layers}.");
    assert!(all_tensor_names(&c.dir).iter().any(|n| n.starts_with(&prefix)));
    assert!(drop_tensors(&c.dir, |n| n.starts_with(&prefix)) > 0);
    let (_, v) = audit_json(&c.dir);
    assert!(!findings_with(&v, "mtp-missing").is_empty());
    // The main model still loads: the remap has no error.
    let (code, _) = remap(&c.dir, &[]);
    assert_eq!(code, 0);
}

#[test]
fn mtp_rows_name_the_draft_and_duplicates_and_shapes_are_caught() {
    let (_, v) = remap(&fixture("deepseek-v3-mla"), &[]);
    let mtp =
        v["rows"].as_array().unwrap().iter().find(|r| r["checkpoint_name"] == "model.layers.3.eh_proj.weight").unwrap();
    assert_eq!(mtp["action"], "skip");
    assert!(mtp["reason"].as_str().unwrap().contains("DeepSeekMTP"));
    // A second copy of q_proj under another name that routes to the same slot.
    let c = copy_fixture("llama");
    duplicate_tensor(
        &c.dir,
        "model.layers.0.self_attn.q_proj.weight",
        "model.layers.0.self_attn.q_proj.weight.q_proj.weight",
    );
    let (_, v) = remap(&c.dir, &[]);
    assert!(found(&v).iter().any(|(c, _)| c == "remap-unmapped" || c == "remap-duplicate"));
    // A wrong shape: k_proj with one head too many.
    let c = copy_fixture("qwen3-dense");
    reshape_tensor(
        &c.dir,
        "model.layers.0.self_attn.k_proj.weight",
        &[16, 64],
        "model.layers.0.self_attn.k_proj.weight",
    );
    let (_, v) = remap(&c.dir, &[]);
    assert!(found(&v).iter().any(|(c, m)| c == "remap-shape" && m.contains("shard k")), "{:?}", found(&v));
}

#[test]
fn tp_slices_follow_vllm_sharding() {
    let (_, v) = remap(&fixture("llama"), &["--tp", "4"]);
    let row = |n: &str| v["rows"].as_array().unwrap().iter().find(|r| r["checkpoint_name"] == n).unwrap().clone();
    // 2 KV heads of 16 at TP 4: each head on two ranks.
    let k = row("model.layers.0.self_attn.k_proj.weight");
    let starts: Vec<u64> = k["tp"]["slices"].as_array().unwrap().iter().map(|s| s["start"].as_u64().unwrap()).collect();
    assert_eq!(starts, [0, 0, 16, 16]);
    // o_proj is split on its input (dim 1).
    let o = row("model.layers.0.self_attn.o_proj.weight");
    assert_eq!(o["tp"]["slices"][0]["dim"], 1);
    assert_eq!(o["tp"]["slices"][3]["end"], 64);
    // The vocabulary: 512 rows padded to 512, 128 a rank.
    assert_eq!(row("lm_head.weight")["tp"]["slices"][1]["start"], 128);
    // Norms are replicated.
    assert_eq!(row("model.norm.weight")["tp"]["kind"], "replicated");
    // Experts under EP go whole to their owner: 8 experts over 4 ranks, expert 5 on rank 2.
    let (_, v) = remap(&fixture("qwen3-moe"), &["--tp", "4", "--ep"]);
    let e = v["rows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["checkpoint_name"] == "model.layers.0.mlp.experts.5.down_proj.weight")
        .unwrap();
    assert_eq!(e["tp"], serde_json::json!({"kind": "expert-owner", "rank": 2}));
}

#[test]
fn ascend_target_dequantizes_fp8_at_load() {
    let (_, v) = remap(&fixture("deepseek-fp8"), &["--target", "vllm-ascend"]);
    let rows = v["rows"].as_array().unwrap();
    let w = rows.iter().find(|r| r["checkpoint_name"] == "model.layers.0.self_attn.kv_b_proj.weight").unwrap();
    assert_eq!(w["action"], "dequantize-then-load");
    let s =
        rows.iter().find(|r| r["checkpoint_name"] == "model.layers.0.self_attn.kv_b_proj.weight_scale_inv").unwrap();
    assert_eq!(s["action"], "skip");
}

#[test]
fn formats_csv_md_and_human() {
    let r = run(&["remap", fixture("mixtral").to_str().unwrap(), "--csv"]);
    let mut lines = r.stdout.lines();
    assert_eq!(
        lines.next().unwrap(),
        "checkpoint_name,shard_file,dtype,shape,param,shard_id,expert_id,partition,tp_slice,action"
    );
    assert_eq!(r.stdout.lines().count(), 1 + 41);
    assert!(r.stdout.contains("model.layers.0.block_sparse_moe.experts.2.w3.weight,model.safetensors,BF16,\"[64, 64]\",model.layers.0.block_sparse_moe.experts.routed_experts.w13_weight,w3,2,expert,all,expert"));
    let md = run(&["remap", fixture("mixtral").to_str().unwrap(), "--md"]);
    assert!(md.stdout.starts_with("| checkpoint_name | shard_file |"));
    let h = run(&["remap", fixture("deepseek-v3-mla").to_str().unwrap(), "--tp", "2"]);
    assert!(h.stdout.contains("rules of vLLM 0.33.0"));
    assert!(h.stdout.contains("model.layers.*.self_attn.fused_qkv_a_proj.weight"));
}

#[test]
fn unknown_architecture_is_inferred_and_rules_can_be_emitted() {
    let c = copy_fixture("qwen3-dense");
    edit_config(&c.dir, |cfg| {
        cfg["architectures"] = serde_json::json!(["MyQwenishForCausalLM"]);
    });
    let (_, v) = remap(&c.dir, &[]);
    assert_eq!(v["family"]["matched_by"], "inferred");
    assert_eq!(v["family"]["family"], "qwen3");
    assert!(v["family"]["confidence"].as_f64().unwrap() > 0.99);
    assert_eq!(v["findings"][0]["code"], "remap-family-inferred");
    let out = c.tmp.path().join("rules.json");
    let r = run(&["remap", c.dir.to_str().unwrap(), "--emit-rules", out.to_str().unwrap()]);
    assert!(r.stderr.contains("wrote"));
    let emitted: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    assert_eq!(emitted["architectures"][0], "MyQwenishForCausalLM");
    // The emitted file loads as a user rule file and now matches by architecture.
    let (_, v) = remap(&c.dir, &["--rules", out.to_str().unwrap()]);
    assert_eq!(v["family"]["matched_by"], "architecture");
    assert_eq!(v["family"]["family"], "qwen3-custom");
    // A broken user file is refused with its path and the field.
    std::fs::write(&out, "{\"family\": 3}").unwrap();
    let r = run(&["remap", c.dir.to_str().unwrap(), "--rules", out.to_str().unwrap()]);
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("rules.json"), "{}", r.stderr);
}

#[test]
fn emitted_rules_list_the_unmapped_tensors_to_complete() {
    let c = copy_fixture("llama");
    rename_tensors(&c.dir, |n| n.replace("mlp.down_proj", "mlp.wo"));
    edit_config(&c.dir, |cfg| cfg["architectures"] = serde_json::json!(["MyLlamaForCausalLM"]));
    let out = c.tmp.path().join("rules.json");
    run(&["remap", c.dir.to_str().unwrap(), "--emit-rules", out.to_str().unwrap()]);
    let emitted: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
    let todo: Vec<&str> = emitted["_todo"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(todo.len(), 2, "{todo:?}");
    assert!(todo[0].starts_with("model.layers.0.mlp.wo.weight (model.layers.0.mlp.wo.weight): KeyError"), "{todo:?}");
}

#[test]
fn audit_shows_the_reverse_check() {
    let c = copy_fixture("llama");
    drop_tensors(&c.dir, |n| n == "model.layers.1.mlp.down_proj.weight");
    let (code, v) = audit_json(&c.dir);
    assert_eq!(code, 1);
    assert_eq!(findings_with(&v, "remap-family").len(), 1);
    assert!(findings_with(&v, "remap-unfilled")[0]["message"]
        .as_str()
        .unwrap()
        .starts_with("model.layers.1.mlp.down_proj.weight"));
}

#[test]
fn fp8_router_not_listed_as_unconverted_gets_an_unfilled_scale() {
    // Qwen3-MoE's router is a quantized GateLinear unless modules_to_not_convert lists it; a bf16
    // router then loads into an fp8 parameter whose scale nothing fills.
    let c = copy_fixture("qwen3-moe-fp8");
    edit_config(&c.dir, |cfg| {
        cfg["quantization_config"].as_object_mut().unwrap().remove("modules_to_not_convert");
    });
    let (code, v) = remap(&c.dir, &[]);
    assert_eq!(code, 1);
    assert!(found(&v)
        .iter()
        .any(|(c, m)| c == "remap-unfilled" && m.starts_with("model.layers.0.mlp.gate.weight_scale_inv")));
    let (code, _) = remap(&fixture("qwen3-moe-fp8"), &[]);
    assert_eq!(code, 0);
}

/// Add scalar f32 tensors beside `next_to` (in its shard), index and total_size updated.
fn add_scalars(dir: &std::path::Path, next_to: &str, names: &[&str]) {
    let shard = index(dir)["weight_map"][next_to].as_str().unwrap().to_string();
    for n in names {
        add_f32_tensor(dir, &shard, n, &[]);
    }
    fix_total_size(dir);
}

fn row_of(v: &Value, name: &str) -> Value {
    v["rows"].as_array().unwrap().iter().find(|r| r["checkpoint_name"] == name).unwrap().clone()
}

#[test]
fn kv_cache_scales_are_renamed_as_vllm_renames_them() {
    // fp8 model: vLLM builds self_attn.attn.{k,v}_scale; ModelOpt-style k_proj.k_scale lands there
    // (checked with the oracle).
    let c = copy_fixture("qwen3-dense-fp8");
    add_scalars(
        &c.dir,
        "model.layers.0.self_attn.k_proj.weight",
        &["model.layers.0.self_attn.k_proj.k_scale", "model.layers.0.self_attn.v_scale"],
    );
    let (code, v) = remap(&c.dir, &[]);
    assert_eq!(code, 0, "{:?}", found(&v));
    assert_eq!(row_of(&v, "model.layers.0.self_attn.k_proj.k_scale")["param"], "model.layers.0.self_attn.attn.k_scale");
    assert_eq!(row_of(&v, "model.layers.0.self_attn.v_scale")["param"], "model.layers.0.self_attn.attn.v_scale");
    // Without fp8 there is no such parameter: vLLM drops it with a warning.
    let c = copy_fixture("qwen3-dense");
    add_scalars(&c.dir, "model.layers.0.self_attn.k_proj.weight", &["model.layers.0.self_attn.k_proj.k_scale"]);
    let (_, v) = remap(&c.dir, &[]);
    let r = row_of(&v, "model.layers.0.self_attn.k_proj.k_scale");
    assert_eq!(r["action"], "skip");
    assert!(r["reason"].as_str().unwrap().contains("not loaded"));
}

#[test]
fn static_activation_scales_are_expected_and_stacked() {
    let c = copy_fixture("qwen3-dense-fp8");
    edit_config(&c.dir, |cfg| cfg["quantization_config"]["activation_scheme"] = serde_json::json!("static"));
    let (code, v) = remap(&c.dir, &[]);
    assert_eq!(code, 1);
    assert!(
        found(&v).iter().any(|(c, m)| c == "remap-unfilled"
            && m.starts_with("model.layers.0.self_attn.qkv_proj.input_scale (shard k, shard q, shard v)")),
        "{:?}",
        found(&v)
    );
    add_scalars(&c.dir, "model.layers.0.self_attn.q_proj.weight", &["model.layers.0.self_attn.q_proj.input_scale"]);
    let (_, v) = remap(&c.dir, &[]);
    let r = row_of(&v, "model.layers.0.self_attn.q_proj.input_scale");
    assert_eq!(
        (r["param"].as_str().unwrap(), r["shard_id"].as_str().unwrap()),
        ("model.layers.0.self_attn.qkv_proj.input_scale", "q")
    );
}
