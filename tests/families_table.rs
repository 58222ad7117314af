//! `ckptpilot families` says only what was recorded: every architecture it calls verified has a
//! recorded vLLM oracle run per TP size it lists (the records the replay tests compare against), no
//! record is left out, and the README's coverage table is the command's own `--md`.

mod common;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

/// (architecture, vLLM class) → TP sizes → fixtures, from the records themselves.
fn recorded() -> BTreeMap<String, (String, BTreeSet<u64>, BTreeSet<String>)> {
    let mut out: BTreeMap<String, (String, BTreeSet<u64>, BTreeSet<String>)> = BTreeMap::new();
    for sub in ["", "params", "families"] {
        let dir = fixture("oracle").join(sub);
        let Ok(rd) = std::fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(stem) = name.strip_suffix(".json") else { continue };
            let Some((fx, tp)) = stem.rsplit_once(".tp") else { continue };
            let Ok(tp) = tp.parse::<u64>() else { continue };
            let rec: Value = serde_json::from_str(&std::fs::read_to_string(e.path()).unwrap()).unwrap();
            let Some(class) = rec["model_class"].as_str() else { continue };
            let arch = match rec["architecture"].as_str() {
                Some(a) => a.to_string(),
                None => {
                    let cfg = [fixture(fx), fixture("families").join(fx)]
                        .into_iter()
                        .map(|d| d.join("config.json"))
                        .find(|p| p.is_file())
                        .unwrap_or_else(|| panic!("{name}: no fixture {fx} with a config.json"));
                    let v: Value = serde_json::from_str(&std::fs::read_to_string(cfg).unwrap()).unwrap();
                    let a = v["architectures"].get(0).or_else(|| v["text_config"]["architectures"].get(0));
                    a.and_then(Value::as_str).unwrap().to_string()
                }
            };
            assert_eq!(rec["vllm_version"], "0.33.0", "{name}");
            let e = out.entry(arch).or_insert_with(|| (class.to_string(), BTreeSet::new(), BTreeSet::new()));
            e.1.insert(tp);
            e.2.insert(fx.to_string());
        }
    }
    out
}

fn families_json() -> Value {
    let r = run(&["families", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    serde_json::from_str(&r.stdout).unwrap()
}

#[test]
fn every_verified_architecture_is_recorded_and_every_record_counted() {
    let rec = recorded();
    let v = families_json();
    let listed: BTreeMap<String, &Value> = v["architectures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["architecture"].as_str().unwrap().to_string(), k))
        .collect();
    for (arch, (class, tps, fixtures)) in &rec {
        let k = listed.get(arch).unwrap_or_else(|| panic!("{arch} has records but no family file names it"));
        assert_eq!(k["verified"], true, "{arch}");
        assert_eq!(k["vllm_class"], class.as_str(), "{arch}");
        let got: BTreeSet<u64> = k["tp_verified"].as_array().unwrap().iter().map(|t| t.as_u64().unwrap()).collect();
        assert_eq!(&got, tps, "{arch}: TP sizes (run python3 tools/oracle/evidence.py)");
        let fx: BTreeSet<String> =
            k["fixtures"].as_array().unwrap().iter().map(|t| t.as_str().unwrap().to_string()).collect();
        assert_eq!(&fx, fixtures, "{arch}");
    }
    for (arch, k) in &listed {
        if k["verified"] == true {
            assert!(rec.contains_key(arch), "{arch} is called verified with no record");
        } else {
            assert_eq!(k["tp_verified"], serde_json::json!([]), "{arch}");
        }
    }
    assert_eq!(v["verified"].as_u64().unwrap() as usize, rec.len());
}

#[test]
fn the_readme_table_is_the_command_s_own() {
    let r = run(&["families", "--md"]);
    assert_eq!(r.code, 0);
    let readme = std::fs::read_to_string(fixture("..").join("README.md")).unwrap();
    let (begin, end) = ("<!-- families:begin (ckptpilot families --md) -->\n", "<!-- families:end -->");
    let a = readme.find(begin).expect("README has the families markers") + begin.len();
    let b = readme[a..].find(end).expect("end marker") + a;
    assert_eq!(&readme[a..b], r.stdout, "README coverage table is stale: paste `ckptpilot families --md`");
}

/// An architecture no recorded run verifies still gets the generic decoder, but every figure and
/// every remap row derived from it says it is unverified; a verified one says nothing of the kind.
#[test]
fn the_fallback_marks_what_it_guessed() {
    let c = copy_fixture("llama");
    edit_config(&c.dir, |v| {
        v["architectures"] = serde_json::json!(["SomethingNewForCausalLM"]);
        v["model_type"] = serde_json::json!("something_new");
    });
    let dir = c.dir.to_str().unwrap();
    let p = run(&["plan", dir, "--tp", "1,2", "--json"]);
    // vLLM 0.33 cannot read the config (issue 24: no false green), and plan says so on every row.
    assert_eq!(p.code, 1, "{}", p.stderr);
    let v: Value = serde_json::from_str(&p.stdout).unwrap();
    assert_eq!(v["family"]["verified"], false);
    for cfg in v["configs"].as_array().unwrap() {
        assert_eq!(cfg["feasible"], false, "{cfg}");
        assert!(cfg.to_string().contains("model type `something_new` but Transformers does not recognize"), "{cfg}");
    }
    for cfg in v["configs"].as_array().unwrap() {
        let fields: Vec<&str> = cfg["unverified"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
        for want in ["per_rank_weight_bytes", "kv_bytes_per_token", "checks.weights", "checks.kv-cache"] {
            assert!(fields.contains(&want), "{want} not marked: {fields:?}");
        }
    }
    let human = run(&["plan", dir, "--tp", "1"]);
    assert!(human.stdout.contains("UNVERIFIED"), "{}", human.stdout);
    assert!(human.stdout.contains("~"), "estimates are marked: {}", human.stdout);
    // (remap's exit status here is the inferred family's reverse check, issue 24's business.)
    let r = run(&["remap", dir, "--json"]);
    let rv: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{e}: {}", r.stderr));
    assert_eq!(rv["family"]["recorded"], false);
    assert!(rv["rows"].as_array().unwrap().iter().all(|row| row["unverified"] == true));

    // The same weights as the verified architecture: nothing is marked.
    let p = run(&["plan", fixture("llama").to_str().unwrap(), "--tp", "1", "--json"]);
    let v: Value = serde_json::from_str(&p.stdout).unwrap();
    assert_eq!(v["family"]["verified"], true);
    assert!(v["configs"][0].get("unverified").is_none());
    let r = run(&["remap", fixture("llama").to_str().unwrap(), "--json"]);
    let rv: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(rv["family"]["recorded"], true);
    assert!(rv["rows"].as_array().unwrap().iter().all(|row| row.get("unverified").is_none()));
}
