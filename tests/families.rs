//! Every architecture the family compiler verified, replayed without vLLM: for each record in
//! fixtures/oracle/families/ (NAME.tpN.json, written by tools/oracle/compile_family.py from the
//! vllm-oracle run of vLLM 0.33.0 on fixtures/families/NAME at TP N), the built-in families must
//! give what vLLM did:
//! - `ckptpilot remap --json --tp N`: each checkpoint tensor vLLM loaded goes to the same (param,
//!   shard id, expert id); each tensor vLLM never loaded is skip or unmapped; the parameter sets are
//!   equal; an error finding exactly where vLLM raised while loading;
//! - `ckptpilot plan --json --tp N`: per-rank weight bytes equal the bytes of the parameters vLLM
//!   allocated on its most loaded rank (from the checkpoint and from config.json alone), and rank 0's
//!   parameters equal vLLM's name by name, byte by byte (tests/model_spec.rs's comparison);
//! - a TP vLLM refused to build is infeasible in plan.

mod common;
use ckptpilot::model::ModelSpec;
use ckptpilot::plan::Parallel;
use ckptpilot::quant::scheme::QuantScheme;
use ckptpilot::remap::rules::RuleSet;
use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};

fn shard(v: &Value) -> Value {
    match v {
        Value::Number(n) => Value::from(n.to_string()),
        other => other.clone(),
    }
}

fn dtype_bytes(d: &str) -> u64 {
    match d {
        "float64" | "int64" => 8,
        "float32" | "int32" => 4,
        "bfloat16" | "float16" => 2,
        "float8_e4m3fn" | "float8_e5m2" | "uint8" | "int8" | "bool" => 1,
        other => panic!("dtype {other} not in the recordings"),
    }
}

fn records() -> Vec<(String, String, u64, Value)> {
    let dir = fixture("oracle").join("families");
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.path()).collect();
    files.sort();
    files
        .into_iter()
        .filter(|f| f.extension().is_some_and(|e| e == "json"))
        .map(|f| {
            let v: Value = serde_json::from_str(&std::fs::read_to_string(&f).unwrap()).unwrap();
            let stem = f.file_stem().unwrap().to_str().unwrap().to_string();
            let (name, tp) = stem.rsplit_once(".tp").unwrap();
            (stem.clone(), name.to_string(), tp.parse().unwrap(), v)
        })
        .collect()
}

/// One record against the built-in families; the differences found.
fn compare(stem: &str, name: &str, tp: u64, oracle: &Value, rules: &RuleSet) -> Vec<String> {
    let mut d = Vec::new();
    assert_eq!(oracle["vllm_version"], "0.33.0", "{stem}");
    let dir = fixture("families").join(name);
    let tps = tp.to_string();
    let r = run(&["plan", dir.to_str().unwrap(), "--tp", &tps, "--json"]);
    let p: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{stem}: plan: {e}: {}", r.stderr));
    let c = &p["configs"][0];
    if let Some(err) = oracle["build_errors"].as_array().and_then(|e| e.first()).and_then(Value::as_str) {
        if c["feasible"] == true {
            d.push(format!("{stem}: vLLM refuses ({err}), plan calls it feasible"));
        }
        return d;
    }
    // remap, row by row
    let r = run(&["remap", dir.to_str().unwrap(), "--tp", &tps, "--json"]);
    let v: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{stem}: remap: {e}: {}", r.stderr));
    if v["family"]["matched_by"] != "architecture" {
        d.push(format!(
            "{stem}: no family lists {} (matched_by {})",
            oracle["architecture"], v["family"]["matched_by"]
        ));
    }
    let trace = oracle["trace"].as_object().unwrap();
    let rows = v["rows"].as_array().unwrap();
    let not_loaded = oracle["not_loaded"].as_array().unwrap().len();
    if rows.len() != trace.len() + not_loaded {
        d.push(format!("{stem}: {} rows; vLLM loaded {} and never loaded {not_loaded}", rows.len(), trace.len()));
    }
    for row in rows {
        let n = row["checkpoint_name"].as_str().unwrap();
        let action = row["action"].as_str().unwrap();
        match trace.get(n) {
            Some(t) => {
                let got = (row["param"].clone(), shard(&row["shard_id"]), row["expert_id"].clone());
                let want = (t[0].clone(), shard(&t[1]), t[2].clone());
                if action == "skip" || action == "unmapped" || got != want {
                    d.push(format!("{stem}: {n}: remap {action} {got:?}, vLLM {want:?}"));
                }
            }
            None if action != "skip" && action != "unmapped" => {
                d.push(format!("{stem}: vLLM never loads {n}; remap: {action} into {}", row["param"]))
            }
            None => {}
        }
    }
    let vllm: BTreeSet<&str> = oracle["params"].as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    let ours: BTreeSet<&str> = v["params"].as_array().unwrap().iter().map(|p| p["name"].as_str().unwrap()).collect();
    for p in vllm.difference(&ours) {
        d.push(format!("{stem}: vLLM has parameter {p}, remap does not"));
    }
    for p in ours.difference(&vllm) {
        d.push(format!("{stem}: remap has parameter {p}, vLLM does not"));
    }
    let errors = v["findings"].as_array().unwrap().iter().filter(|f| f["severity"] == "error").count();
    let load_errors = oracle["load_errors"].as_array().map_or(0, Vec::len);
    if (errors == 0) != (load_errors == 0) {
        d.push(format!("{stem}: remap has {errors} error findings, vLLM {load_errors} load errors"));
    }
    // plan, to the byte
    let vllm_bytes = oracle["max_rank_bytes"].as_u64().unwrap();
    if c["per_rank_weight_bytes"].as_u64() != Some(vllm_bytes) {
        d.push(format!("{stem}: plan {} B per rank, vLLM {vllm_bytes}", c["per_rank_weight_bytes"]));
    }
    let cfg_path = dir.join("config.json");
    let r = run(&["plan", cfg_path.to_str().unwrap(), "--tp", &tps, "--json"]);
    let p: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{stem}: plan config: {e}: {}", r.stderr));
    if p["configs"][0]["per_rank_weight_bytes"].as_u64() != Some(vllm_bytes) {
        d.push(format!(
            "{stem}: plan of config.json alone {} B per rank, vLLM {vllm_bytes}",
            p["configs"][0]["per_rank_weight_bytes"]
        ));
    }
    // rank 0, parameter by parameter
    let Some(rank0) = oracle["ranks"].as_array().and_then(|r| r.first()) else {
        d.push(format!("{stem}: no parameters recorded"));
        return d;
    };
    let (ck, _) = ckptpilot::Checkpoint::open(dir.to_str().unwrap()).unwrap();
    let cfg = ck.config.clone().unwrap();
    let Some(family) = rules.for_architecture(cfg.architecture.as_deref().unwrap_or("")) else { return d };
    let quant = QuantScheme::detect(ck.config_json.as_ref(), ck.hf_quant_config.as_ref());
    let spec = ModelSpec::build(&cfg, ck.config_json.as_ref(), family, quant.as_ref());
    let par = Parallel { tp, ep: false, dp: 1, pp: 1, moe_backend: Default::default() };
    let aliases: BTreeMap<String, String> = serde_json::from_value(oracle["param_aliases"].clone()).unwrap_or_default();
    let mut theirs: BTreeMap<String, u64> = BTreeMap::new();
    for (n, p) in rank0["params"].as_object().unwrap() {
        let n = aliases.get(n).cloned().unwrap_or_else(|| n.clone());
        let numel: u64 = p[0].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).product();
        theirs.insert(n, numel * dtype_bytes(p[1].as_str().unwrap()));
    }
    let mine: BTreeMap<String, u64> = spec.rank_params(&par).into_iter().map(|r| (r.name, r.numel * r.elem)).collect();
    for (n, b) in &theirs {
        match mine.get(n) {
            Some(o) if o != b => d.push(format!("{stem}: rank 0 {n}: vLLM {b} B, ckptpilot {o} B")),
            None => d.push(format!("{stem}: rank 0: vLLM has {n} ({b} B), ckptpilot's model does not")),
            _ => {}
        }
    }
    d
}

#[test]
fn every_compiled_family_equals_vllm() {
    let rules = RuleSet::load(&[]).unwrap();
    let recs = records();
    let mut problems = Vec::new();
    for (stem, name, tp, v) in &recs {
        problems.extend(compare(stem, name, *tp, v, &rules));
    }
    assert!(!recs.is_empty(), "no records in fixtures/oracle/families/");
    assert!(problems.is_empty(), "{} differences from vLLM:\n{}", problems.len(), problems.join("\n"));
}

/// Every fixture has records, every record its fixture, and tools/oracle/families.tsv counts as
/// verified only architectures with a record here (the table cannot claim what no test replays).
#[test]
fn fixtures_records_and_the_table_agree() {
    let recs = records();
    let recorded: BTreeSet<String> = recs.iter().map(|(_, n, _, _)| n.clone()).collect();
    for n in &recorded {
        assert!(fixture("families").join(n).join("config.json").is_file(), "{n}: record without a fixture");
    }
    for e in std::fs::read_dir(fixture("families")).unwrap().flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        assert!(recorded.contains(&n), "fixtures/families/{n} has no record in fixtures/oracle/families/");
    }
    let table = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tools").join("oracle").join("families.tsv"),
    )
    .unwrap();
    let mut verified = 0;
    for line in table.lines().skip(1).filter(|l| !l.is_empty()) {
        let cols: Vec<&str> = line.split('\t').collect();
        if cols[2] == "verified" {
            assert!(recorded.contains(cols[0]), "families.tsv: {} verified without a record", cols[0]);
            verified += 1;
        }
    }
    assert!(verified >= 1);
}

/// tools/oracle/ascend_supported.tsv (issue 22: every architecture of vLLM-Ascend's supported list that
/// vLLM 0.33 registers is verified, or a line says why not) agrees with `ckptpilot families`, with
/// tools/oracle/families.tsv and vLLM 0.33.0's recorded registry, and the README block is the table
/// tools/oracle/ascend_table.py renders from it (rendered again here, so a hand edit to either side fails).
#[test]
fn ascend_supported_list_agrees_with_families_and_the_readme() {
    const STATUSES: [&str; 6] =
        ["verified", "failed", "drafted-needs-person", "not-registered", "not-attempted", "being-recorded"];
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |p: &[&str]| std::fs::read_to_string(p.iter().fold(root.to_path_buf(), |a, s| a.join(s))).unwrap();

    let tsv = read(&["tools", "oracle", "ascend_supported.tsv"]);
    let mut lines = tsv.lines().filter(|l| !l.trim().is_empty() && !l.starts_with('#'));
    assert_eq!(lines.next(), Some("vllm_ascend_model\tarchitecture\tstatus\treason_or_family"));
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split('\t').collect()).collect();
    assert!(!rows.is_empty());

    let out = run(&["families", "--json"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let fam: Value = serde_json::from_str(&out.stdout).unwrap();
    let families: BTreeMap<String, (String, bool)> = fam["architectures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| {
            let name = a["architecture"].as_str().unwrap().to_string();
            (name, (a["family"].as_str().unwrap().to_string(), a["verified"].as_bool().unwrap()))
        })
        .collect();

    // families.tsv: name → (architecture, status)
    let ftsv = read(&["tools", "oracle", "families.tsv"]);
    let specs: BTreeMap<&str, (&str, &str)> = ftsv
        .lines()
        .skip(1)
        .filter(|l| !l.is_empty())
        .map(|l| {
            let c: Vec<&str> = l.split('\t').collect();
            (c[0], (c[1], c[2]))
        })
        .collect();
    let registry: Value = serde_json::from_str(&read(&["src", "arch", "vllm_registry.json"])).unwrap();

    let mut status_of: BTreeMap<&str, &str> = BTreeMap::new();
    for r in &rows {
        assert_eq!(r.len(), 4, "ascend_supported.tsv: not four columns: {r:?}");
        let (model, arch, status, reason) = (r[0], r[1], r[2], r[3]);
        assert!(!model.trim().is_empty() && !arch.trim().is_empty(), "{r:?}");
        assert!(STATUSES.contains(&status), "{model} / {arch}: unknown status {status}");
        assert!(!reason.trim().is_empty(), "{model} / {arch}: {status} without a reason or family");
        let prev = status_of.insert(arch, status);
        assert!(prev.is_none() || prev == Some(status), "{arch}: two statuses, {prev:?} and {status}");
        let known = families.get(arch);
        if status == "verified" {
            let (family, verified) =
                known.unwrap_or_else(|| panic!("{model}: {arch} marked verified, unknown to families"));
            assert!(*verified, "{model}: {arch} marked verified, `ckptpilot families` does not verify it");
            let named = reason.split([' ', ';']).next().unwrap();
            assert_eq!(named, family, "{model}: {arch} names family {named}, families says {family}");
        } else {
            assert!(
                !known.is_some_and(|(_, v)| *v),
                "{model}: {arch} is verified by `ckptpilot families` but marked {status} (stale row)"
            );
        }
        if status == "failed" || status == "drafted-needs-person" {
            let spec =
                reason.strip_prefix("families.tsv ").and_then(|s| s.split_once(": ")).map(|(n, _)| n).unwrap_or_else(
                    || panic!("{model}: {arch} {status}: the reason must quote `families.tsv NAME: note`"),
                );
            assert_eq!(specs.get(spec), Some(&(arch, status)), "{model}: families.tsv {spec} is not {arch} {status}");
        }
        if status == "not-registered" {
            assert!(registry["registered"].get(arch).is_none(), "{model}: vLLM 0.33.0 registers {arch}");
        }
    }

    // The README block is the table of the TSV.
    let cell = |s: &str| s.replace('|', "\\|");
    let mut table = String::from(
        "| vLLM-Ascend model | architecture | status | family, or why not verified |\n|---|---|---|---|\n",
    );
    for r in &rows {
        table += &format!("| {} | `{}` | {} | {} |\n", cell(r[0]), r[1], r[2], cell(r[3]));
    }
    let counts: Vec<String> = STATUSES
        .iter()
        .map(|st| (status_of.values().filter(|s| *s == st).count(), st))
        .filter(|(n, _)| *n > 0)
        .map(|(n, st)| format!("{n} {st}"))
        .collect();
    table += &format!("\n{} rows, {} architectures: {}.\n", rows.len(), status_of.len(), counts.join(", "));
    let readme = read(&["README.md"]);
    let begin = "<!-- ascend:begin (python3 tools/oracle/ascend_table.py) -->\n";
    let start = readme.find(begin).expect("README has no ascend:begin marker") + begin.len();
    let end = start + readme[start..].find("<!-- ascend:end -->").expect("README has no ascend:end marker");
    assert_eq!(
        &readme[start..end],
        table,
        "README's vLLM-Ascend block differs from tools/oracle/ascend_supported.tsv (python3 tools/oracle/ascend_table.py --write)"
    );
}
