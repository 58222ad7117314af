//! `--rules` on every command: an architecture described by a user rule file is treated exactly
//! like the built-in family the file was written from. A copy of fixtures/qwen3-moe renamed to an
//! architecture and model type ckptpilot has never heard of, with a rule file copied from the
//! built-in qwen3_moe.json, must give the same audit, plan, remap and stub as the original.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;

const ARCH: &str = "MyMoeForCausalLM";
const MODEL_TYPE: &str = "my_moe";

/// What the user writes: the built-in file under new names.
fn user_rule_file(dir: &Path) -> std::path::PathBuf {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/arch/families/qwen3_moe.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(src).unwrap()).unwrap();
    v["family"] = Value::from(MODEL_TYPE);
    v["architectures"] = serde_json::json!([ARCH]);
    v["model_types"] = serde_json::json!([MODEL_TYPE]);
    v["class"] = Value::from(ARCH);
    v["vllm_classes"] = serde_json::json!({ ARCH: "vllm.model_executor.models.qwen3_moe:Qwen3MoeForCausalLM" });
    let p = dir.join("my_moe.json");
    std::fs::write(&p, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    p
}

/// The renamed checkpoint: same tensors, config naming the new architecture and model type.
fn renamed_checkpoint(dir: &Path) -> std::path::PathBuf {
    let out = dir.join("ckpt");
    std::fs::create_dir_all(&out).unwrap();
    for e in std::fs::read_dir(fixture("qwen3-moe")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), out.join(e.file_name())).unwrap();
    }
    let cfg = out.join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&cfg).unwrap()).unwrap();
    v["architectures"] = serde_json::json!([ARCH]);
    v["model_type"] = Value::from(MODEL_TYPE);
    std::fs::write(&cfg, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    out
}

/// Output with the names that legitimately differ mapped back to the built-in ones.
fn normal(text: &str, model: &Path, original: &Path) -> String {
    text.replace(model.to_str().unwrap(), original.to_str().unwrap())
        .replace(ARCH, "Qwen3MoeForCausalLM")
        .replace(MODEL_TYPE, "qwen3_moe")
}

fn files(dir: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.file_name().unwrap() != ".ckptpilot-stub.json" {
                let rel = p.strip_prefix(dir).unwrap().to_string_lossy().into_owned();
                out.push((rel, std::fs::read_to_string(&p).unwrap_or_default()));
            }
        }
    }
    out.sort();
    out
}

/// The same figures, whatever vouches for them: a user's rule file has no recorded vLLM run behind
/// it (its figures are marked unverified, tested in tests/families_table.rs), the built-in it copies
/// has; everything else must be equal.
fn without_provenance(mut v: Value) -> Value {
    if let Some(o) = v.as_object_mut() {
        if o.get("schema").and_then(Value::as_str).is_some_and(|s| s.starts_with("ckptpilot.plan")) {
            o.remove("family");
        }
        if let Some(f) = o.get_mut("family").and_then(Value::as_object_mut) {
            f.remove("recorded");
        }
        if let Some(n) = o.get_mut("notes").and_then(Value::as_array_mut) {
            n.retain(|x| !x.as_str().is_some_and(|s| s.starts_with("UNVERIFIED")));
        }
        for key in ["configs", "rows"] {
            if let Some(a) = o.get_mut(key).and_then(Value::as_array_mut) {
                for x in a.iter_mut().filter_map(Value::as_object_mut) {
                    x.remove("unverified");
                }
            }
        }
    }
    v
}

#[test]
fn a_user_family_is_treated_like_the_builtin_it_copies() {
    let tmp = tempfile::tempdir().unwrap();
    let rules = user_rule_file(tmp.path());
    let model = renamed_checkpoint(tmp.path());
    let original = fixture("qwen3-moe");
    let (m, o, r) = (model.to_str().unwrap(), original.to_str().unwrap(), rules.to_str().unwrap());

    // Without the rule file ckptpilot does not know the architecture: plan counts a generic
    // decoder and remap has to guess, so the rule file is what makes them equal below.
    let guess = run(&["remap", m, "--json"]);
    let g: Value = serde_json::from_str(&guess.stdout).unwrap();
    assert_eq!(g["family"]["matched_by"], "inferred", "{}", guess.stdout);

    for args in [
        vec!["audit", "--json"],
        vec!["plan", "--tp", "1,2,4", "--json"],
        vec!["plan", "--tp", "2", "--target", "vllm-ascend", "--json"],
        vec!["remap", "--tp", "2", "--json"],
        vec!["remap", "--tp", "4", "--ep", "--json"],
    ] {
        let mut with_user = args.clone();
        with_user.insert(1, m);
        with_user.extend(["--rules", r]);
        let mut builtin = args.clone();
        builtin.insert(1, o);
        let (u, b) = (run(&with_user), run(&builtin));
        assert_eq!(u.code, b.code, "{args:?}: exit {} vs {}: {}", u.code, b.code, u.stderr);
        let uv = without_provenance(serde_json::from_str(&normal(&u.stdout, &model, &original)).unwrap());
        let bv = without_provenance(serde_json::from_str(&b.stdout).unwrap());
        assert!(uv == bv, "{args:?} differs:\nuser rules: {}\nbuilt-in:   {}", u.stdout, b.stdout);
    }

    // An infeasible layout is refused the same way (TP 8 > 8 experts is fine; heads 4 % 8 is not).
    let (u, b) = (run(&["remap", m, "--tp", "8", "--rules", r]), run(&["remap", o, "--tp", "8"]));
    assert_eq!((u.code, b.code), (1, 1), "{}", u.stderr);
    assert_eq!(normal(&u.stderr, &model, &original), b.stderr);

    let (su, sb) = (tmp.path().join("stub-user"), tmp.path().join("stub-builtin"));
    let u = run(&["stub", m, "--out", su.to_str().unwrap(), "--name", "demo", "--rules", r]);
    let b = run(&["stub", o, "--out", sb.to_str().unwrap(), "--name", "demo"]);
    assert_eq!((u.code, b.code), (0, 0), "{}{}", u.stderr, b.stderr);
    let (fu, fb) = (files(&su), files(&sb));
    assert_eq!(fu.iter().map(|f| &f.0).collect::<Vec<_>>(), fb.iter().map(|f| &f.0).collect::<Vec<_>>());
    // vLLM registers the built-in's architecture and not the user's: the built-in's plugin replaces
    // vLLM's class (and adds a distinct name beside it), the user's replaces nothing. Every other
    // file is the same.
    let mut replacing = Vec::new();
    for ((name, tu), (_, tb)) in fu.iter().zip(&fb) {
        if tb.contains(ckptpilot::stub::ALIAS_SUFFIX) {
            assert!(!tu.contains(ckptpilot::stub::ALIAS_SUFFIX), "{name}: the user's plugin claims an alias: {tu}");
            replacing.push(name.as_str());
            continue;
        }
        assert_eq!(normal(tu, &model, &original), *tb, "stub file {name} differs");
    }
    assert!(replacing.iter().any(|n| n.ends_with("__init__.py")), "{replacing:?}");
    let init = &fu.iter().find(|f| f.0.ends_with("__init__.py")).unwrap().1;
    assert!(init.contains("registering the adapter replaces nothing"), "{init}");
}
