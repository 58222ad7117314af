//! Issue 24 item 1, no false green: a checkpoint whose architecture vLLM 0.33 neither registers nor
//! serves through its Transformers backend is an `architecture-unsupported` error in `audit` and
//! fails every `plan` row, with vLLM's own message (recorded by the oracle: "The checkpoint you are
//! trying to load has model type `acme_moe` but Transformers does not recognize this architecture").
//! Both read one resolution (src/arch/registry.rs, data from tools/oracle/registry.py).

mod common;
use common::*;
use serde_json::Value;

fn republished(arch: &str, model_type: &str) -> Copy {
    let c = copy_fixture("qwen3-moe");
    edit_json(&c.dir.join("config.json"), |v| {
        v["architectures"] = serde_json::json!([arch]);
        v["model_type"] = Value::from(model_type);
    });
    c
}

fn plan_rows(dir: &str) -> (i32, Vec<Value>) {
    let p = run(&["plan", dir, "--tp", "1,2", "--json"]);
    let v: Value = serde_json::from_str(&p.stdout).unwrap_or_else(|e| panic!("{e}: {}", p.stderr));
    (p.code, v["configs"].as_array().unwrap().clone())
}

#[test]
fn an_unknown_model_type_stops_at_the_config_in_audit_and_plan() {
    let c = republished("AcmeMoeForCausalLM", "acme_moe");
    let (code, report) = audit_json(&c.dir);
    assert_eq!(code, 1);
    let f = findings_with(&report, "architecture-unsupported");
    assert_eq!(f.len(), 1, "{report}");
    let msg = f[0]["message"].as_str().unwrap();
    assert!(msg.contains("model type `acme_moe` but Transformers does not recognize this architecture"), "{msg}");
    let (code, rows) = plan_rows(c.dir.to_str().unwrap());
    assert_eq!(code, 1);
    for r in &rows {
        assert_eq!(r["feasible"], false, "{r}");
        let target = r["checks"].as_array().unwrap().iter().find(|k| k["rule"] == "target").unwrap();
        assert_eq!(target["status"], "fail", "{target}");
        assert!(target["message"].as_str().unwrap().contains("acme_moe"), "{target}");
    }
}

#[test]
fn an_unregistered_name_over_a_known_model_type_is_refused_with_vllms_words() {
    let c = republished("AcmeMoeForCausalLM", "qwen3_moe");
    let (_, report) = audit_json(&c.dir);
    let f = findings_with(&report, "architecture-unsupported");
    assert_eq!(f.len(), 1, "{report}");
    let msg = f[0]["message"].as_str().unwrap();
    assert!(msg.contains("Model architectures ['AcmeMoeForCausalLM'] are not supported for now"), "{msg}");
    assert!(f[0]["hint"].as_str().unwrap().contains("stub"), "{}", f[0]);
    let (code, rows) = plan_rows(c.dir.to_str().unwrap());
    assert_eq!(code, 1);
    assert!(rows.iter().all(|r| r["feasible"] == false));
}

#[test]
fn registered_architectures_and_user_plugins_are_not_flagged() {
    // The same weights under their own name: nothing to say.
    let (_, report) = audit_json(&fixture("qwen3-moe"));
    assert!(findings_with(&report, "architecture-unsupported").is_empty(), "{report}");
    // A renamed pooling variant of a registered base resolves to it (vLLM's _normalize_arch).
    let c = republished("Qwen3MoeForRewardModeling", "qwen3_moe");
    let (_, report) = audit_json(&c.dir);
    assert!(findings_with(&report, "architecture-unsupported").is_empty(), "{report}");
    // A --rules file that lists the architecture stands for the plugin that registers it.
    let c = republished("AcmeMoeForCausalLM", "qwen3_moe");
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/arch/families/qwen3_moe.json");
    let mut fam: Value = serde_json::from_str(&std::fs::read_to_string(src).unwrap()).unwrap();
    fam["family"] = Value::from("acme_moe");
    fam["architectures"] = serde_json::json!(["AcmeMoeForCausalLM"]);
    let rules = c.tmp.path().join("acme.json");
    std::fs::write(&rules, fam.to_string()).unwrap();
    let r = run(&["--rules", rules.to_str().unwrap(), "audit", c.dir.to_str().unwrap(), "--json"]);
    let report: Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(findings_with(&report, "architecture-unsupported").is_empty(), "{report}");
    // Remote code: a warning that vLLM needs --trust-remote-code, not a refusal.
    let c = republished("InternLM2ForCausalLM", "internlm2");
    edit_json(&c.dir.join("config.json"), |v| {
        v["auto_map"] = serde_json::json!({"AutoConfig": "configuration_internlm2.InternLM2Config"});
    });
    let (_, report) = audit_json(&c.dir);
    assert!(findings_with(&report, "architecture-unsupported").is_empty(), "{report}");
    assert_eq!(findings_with(&report, "architecture-remote-code").len(), 1, "{report}");
}

/// vLLM 0.33's own words, recorded by the oracle on the disguised copies
/// (fixtures/oracle/unregistered.json): audit's message starts as vLLM's does, up to the point
/// where vLLM lists its 415 architectures or explains how to upgrade transformers.
#[test]
fn the_message_is_the_one_vllm_recorded() {
    let recs: Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("oracle/unregistered.json")).unwrap()).unwrap();
    for case in recs["cases"].as_array().unwrap() {
        let c = copy_fixture(case["fixture"].as_str().unwrap());
        edit_json(&c.dir.join("config.json"), |v| {
            v["architectures"] = case["architectures"].clone();
            if let Some(mt) = case["model_type"].as_str() {
                v["model_type"] = Value::from(mt);
            }
        });
        let want = case["vllm_error"].as_str().unwrap();
        // vLLM's text up to its list of architectures / its upgrade advice.
        let head = want.split(" Supported architectures").next().unwrap().split(". This could be").next().unwrap();
        let (_, report) = audit_json(&c.dir);
        let f = findings_with(&report, "architecture-unsupported");
        assert_eq!(f.len(), 1, "{case}");
        assert!(f[0]["message"].as_str().unwrap().contains(head), "vLLM said {head:?}; audit: {}", f[0]["message"]);
    }
}
