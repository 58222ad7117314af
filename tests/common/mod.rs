//! Test helpers: copy a real fixture into a temporary directory and break it in one precise way.
#![allow(dead_code)]

use serde_json::{json, Map, Value};
use std::path::{Path, PathBuf};
use std::process::Command;

pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

/// A temporary copy of fixture `name`; the directory is `tmp.path().join(name)`.
pub struct Copy {
    pub tmp: tempfile::TempDir,
    pub dir: PathBuf,
}

pub fn copy_fixture(name: &str) -> Copy {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    Copy { tmp, dir }
}

/// A safetensors file split into its header object and its data section.
pub struct St {
    pub header: Map<String, Value>,
    pub data: Vec<u8>,
}

pub fn read_st(path: &Path) -> St {
    let b = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let header: Map<String, Value> = serde_json::from_slice(&b[8..8 + n]).unwrap();
    St { header, data: b[8 + n..].to_vec() }
}

pub fn write_raw(path: &Path, header: &str, data: &[u8]) {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    std::fs::write(path, v).unwrap();
}

pub fn write_st(path: &Path, st: &St) {
    write_raw(path, &serde_json::to_string(&st.header).unwrap(), &st.data);
}

/// Rewrite a shard's header with `f` (data untouched).
pub fn edit_header(path: &Path, f: impl FnOnce(&mut Map<String, Value>)) {
    let mut st = read_st(path);
    f(&mut st.header);
    write_st(path, &st);
}

/// Rewrite the header text itself (for things serde_json cannot express, such as duplicate keys).
pub fn edit_header_text(path: &Path, f: impl FnOnce(String) -> String) {
    let st = read_st(path);
    let text = f(serde_json::to_string(&st.header).unwrap());
    write_raw(path, &text, &st.data);
}

pub fn edit_json(path: &Path, f: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
}

/// The checkpoint's index file: `model.safetensors.index.json`, else the one other
/// `*.safetensors.index.json` (ModelSlim's `quant_model_weights.safetensors.index.json`).
pub fn index_path(dir: &Path) -> PathBuf {
    let main = dir.join("model.safetensors.index.json");
    if main.exists() {
        return main;
    }
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_str().is_some_and(|n| n.ends_with(".safetensors.index.json")))
        .unwrap_or(main)
}

pub fn index(dir: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(index_path(dir)).unwrap()).unwrap()
}

/// The shard holding `tensor`, per the index.
pub fn shard_of(dir: &Path, tensor: &str) -> PathBuf {
    dir.join(index(dir)["weight_map"][tensor].as_str().unwrap_or_else(|| panic!("{tensor} not in index")))
}

/// Remove every tensor whose name matches `pred` from the shards and the index, keeping each shard
/// a valid, contiguous safetensors file.
pub fn drop_tensors(dir: &Path, pred: impl Fn(&str) -> bool) -> usize {
    let dropped = std::cell::Cell::new(0);
    transform_tensors(dir, |n, v, b| {
        if pred(n) {
            dropped.set(dropped.get() + 1);
            Vec::new()
        } else {
            vec![(n.to_string(), v.clone(), b.to_vec())]
        }
    });
    dropped.get()
}

/// Append a one-value F32 tensor `name` of `shape` ([] or [1]) to `shard`, and list it in the index.
pub fn add_f32_tensor(dir: &Path, shard: &str, name: &str, shape: &[u64]) {
    let p = dir.join(shard);
    let mut st = read_st(&p);
    let at = st.data.len() as u64;
    st.data.extend_from_slice(&1.0f32.to_le_bytes());
    st.header.insert(name.into(), json!({"dtype": "F32", "shape": shape, "data_offsets": [at, at + 4]}));
    write_st(&p, &st);
    edit_json(&dir.join("model.safetensors.index.json"), |v| v["weight_map"][name] = json!(shard));
    fix_total_size(dir);
}

/// Set the index's total_size to the tensor bytes actually stored.
pub fn fix_total_size(dir: &Path) {
    let idx = index(dir);
    let shards: std::collections::BTreeSet<String> =
        idx["weight_map"].as_object().unwrap().values().map(|v| v.as_str().unwrap().to_string()).collect();
    let mut total = 0u64;
    for s in shards {
        if std::fs::metadata(dir.join(&s)).is_ok() {
            let st = read_st(&dir.join(&s));
            for (k, v) in &st.header {
                if k != "__metadata__" {
                    total += v["data_offsets"][1].as_u64().unwrap() - v["data_offsets"][0].as_u64().unwrap();
                }
            }
        }
    }
    edit_json(&index_path(dir), |v| v["metadata"]["total_size"] = json!(total));
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_ckptpilot")
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

pub fn run(args: &[&str]) -> Run {
    run_env(args, &[])
}

pub fn run_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut c = Command::new(bin());
    c.args(args);
    // The tests state their target; a developer's own default must not change them.
    c.env_remove("CKPTPILOT_TARGET");
    // No test touches the network: a repo id outside the cache is never read from the Hub here
    // (tests/remote.rs runs its own local Hub).
    c.env("HF_HUB_OFFLINE", "1");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    Run {
        code: o.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

/// `ckptpilot audit --json PATH` → (exit code, report).
pub fn audit_json(path: &Path) -> (i32, Value) {
    audit_json_for(path, "vllm")
}

/// `ckptpilot audit --json PATH --target TARGET` → (exit code, report).
pub fn audit_json_for(path: &Path, target: &str) -> (i32, Value) {
    let r = run(&["audit", "--json", path.to_str().unwrap(), "--target", target]);
    assert!(r.stderr.is_empty() || r.code != 0, "stderr: {}", r.stderr);
    let v: Value =
        serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {}\n{}", r.stdout, r.stderr));
    (r.code, v)
}

pub fn codes(report: &Value) -> Vec<String> {
    report["findings"].as_array().unwrap().iter().map(|f| f["code"].as_str().unwrap().to_string()).collect()
}

pub fn findings_with<'a>(report: &'a Value, code: &str) -> Vec<&'a Value> {
    report["findings"].as_array().unwrap().iter().filter(|f| f["code"] == code).collect()
}

/// Assert the report has a finding `code` with `severity`, and return the first.
pub fn expect<'a>(report: &'a Value, code: &str, severity: &str) -> &'a Value {
    let f = findings_with(report, code);
    assert!(!f.is_empty(), "no {code} finding; got {:?}", codes(report));
    assert_eq!(f[0]["severity"], severity, "{code}: {}", f[0]);
    f[0]
}

/// The codes of a report's error findings, in report order.
pub fn error_codes(v: &Value) -> Vec<String> {
    v["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| f["severity"] == "error")
        .map(|f| f["code"].as_str().unwrap().to_string())
        .collect()
}

pub fn errors(report: &Value) -> u64 {
    report["summary"]["errors"].as_u64().unwrap()
}

/// Rebuild every shard (and the index) with `f` mapping each tensor `(name, header entry, bytes)` to
/// zero or more tensors; shards stay valid and contiguous.
pub fn transform_tensors(dir: &Path, f: impl Fn(&str, &Value, &[u8]) -> Vec<(String, Value, Vec<u8>)>) {
    let has_index = index_path(dir).exists();
    let shards: Vec<String> = if has_index {
        let idx = index(dir);
        let s: std::collections::BTreeSet<String> =
            idx["weight_map"].as_object().unwrap().values().map(|v| v.as_str().unwrap().to_string()).collect();
        s.into_iter().collect()
    } else {
        vec!["model.safetensors".to_string()]
    };
    let mut weight_map = Map::new();
    for s in shards {
        let p = dir.join(&s);
        let st = read_st(&p);
        let mut entries: Vec<(String, Value)> = st
            .header
            .iter()
            .filter(|(k, _)| k.as_str() != "__metadata__")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        entries.sort_by_key(|(_, v)| v["data_offsets"][0].as_u64().unwrap());
        let mut header = Map::new();
        if let Some(m) = st.header.get("__metadata__") {
            header.insert("__metadata__".into(), m.clone());
        }
        let mut data = Vec::new();
        for (k, v) in entries {
            let (b, e) =
                (v["data_offsets"][0].as_u64().unwrap() as usize, v["data_offsets"][1].as_u64().unwrap() as usize);
            for (name, mut meta, bytes) in f(&k, &v, &st.data[b..e]) {
                let start = data.len();
                data.extend_from_slice(&bytes);
                meta["data_offsets"] = json!([start, data.len()]);
                weight_map.insert(name.clone(), Value::from(s.clone()));
                header.insert(name, meta);
            }
        }
        write_st(&p, &St { header, data });
    }
    if has_index {
        edit_json(&index_path(dir), |v| v["weight_map"] = Value::Object(weight_map));
        fix_total_size(dir);
    }
}

pub fn rename_tensors(dir: &Path, f: impl Fn(&str) -> String) {
    transform_tensors(dir, |n, v, b| vec![(f(n), v.clone(), b.to_vec())]);
}

/// Add a copy of `src` under the name `copy`.
pub fn duplicate_tensor(dir: &Path, src: &str, copy: &str) {
    transform_tensors(dir, |n, v, b| {
        let mut out = vec![(n.to_string(), v.clone(), b.to_vec())];
        if n == src {
            out.push((copy.to_string(), v.clone(), b.to_vec()));
        }
        out
    });
}

/// Replace `name` with a zero tensor of `shape` (same dtype) under `new_name`.
pub fn reshape_tensor(dir: &Path, name: &str, shape: &[u64], new_name: &str) {
    transform_tensors(dir, |n, v, b| {
        if n != name {
            return vec![(n.to_string(), v.clone(), b.to_vec())];
        }
        let numel: u64 = v["shape"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap()).product();
        let elem = b.len() as u64 / numel.max(1);
        let mut meta = v.clone();
        meta["shape"] = json!(shape);
        vec![(new_name.to_string(), meta, vec![0u8; (shape.iter().product::<u64>() * elem) as usize])]
    });
}

/// Every tensor name in the checkpoint's shards.
pub fn all_tensor_names(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "safetensors") {
            out.extend(read_st(&p).header.keys().filter(|k| k.as_str() != "__metadata__").cloned());
        }
    }
    out
}

pub fn edit_config(dir: &Path, f: impl FnOnce(&mut Value)) {
    edit_json(&dir.join("config.json"), f);
}

/// The files of a `dequant` output directory, ckptpilot's own bookkeeping (state file, lock) left out.
pub fn outputs(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .filter(|(n, _)| !n.starts_with(".ckptpilot-"))
        .map(|(n, p)| (n, std::fs::read(p).unwrap()))
        .collect()
}

/// `ckptpilot quantize MODEL --to TARGET --out OUT EXTRA…`.
pub fn quantize_to(target: &str, model: &Path, out: &Path, extra: &[&str]) -> Run {
    let mut args = vec!["quantize", model.to_str().unwrap(), "--to", target, "--out", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    run(&args)
}

/// The files msModelSlim derives from the weights and config (its tokenizer copies and the recipe
/// YAML come from its own inputs, not from the checkpoint quantized).
pub fn msmodelslim_files(dir: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    outputs(dir).into_iter().filter(|(n, _)| n.starts_with("quant_model_") || n == "config.json").collect()
}

/// Every tensor of a directory's safetensors files: name → (dtype, shape, bytes).
pub fn tensors(dir: &Path) -> std::collections::BTreeMap<String, (Value, Value, Vec<u8>)> {
    let mut m = std::collections::BTreeMap::new();
    for (name, _) in outputs(dir).into_iter().filter(|(n, _)| n.ends_with(".safetensors")) {
        let st = read_st(&dir.join(&name));
        for (k, v) in st.header.iter().filter(|(k, _)| *k != "__metadata__") {
            let o = v["data_offsets"].as_array().unwrap();
            let bytes = st.data[o[0].as_u64().unwrap() as usize..o[1].as_u64().unwrap() as usize].to_vec();
            m.insert(k.clone(), (v["dtype"].clone(), v["shape"].clone(), bytes));
        }
    }
    m
}

/// `out`'s msModelSlim-derived files equal `reference`'s byte for byte; a difference names the
/// first differing tensor (or shows the text).
pub fn assert_same_files_as_msmodelslim(out: &Path, reference: &Path, label: &str) {
    let want = msmodelslim_files(reference);
    let got = msmodelslim_files(out);
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{label}: file names");
    for (name, bytes) in &want {
        if got[name] != *bytes {
            let detail = if name.ends_with(".safetensors") {
                let (a, b) = (tensors(out), tensors(reference));
                format!("first differing tensor: {:?}", b.iter().find(|(k, v)| a.get(*k) != Some(v)).map(|(k, _)| k))
            } else {
                String::from_utf8_lossy(&got[name]).chars().take(400).collect()
            };
            panic!("{label}: {name} differs from msModelSlim's: {detail}");
        }
    }
}

/// A quantized output is a clean ModelSlim checkpoint for vLLM-Ascend: audit without errors, the
/// `ascend` method, no tensor remap leaves unmapped. Returns the audit report.
pub fn assert_clean_for_vllm_ascend(out: &Path) -> Value {
    let (code, v) = audit_json_for(out, "vllm-ascend");
    assert_eq!(errors(&v), 0, "{:#?}", v["findings"]);
    assert_eq!(code, 0);
    assert_eq!(v["quantization"]["method"], "ascend");
    let r = run(&["remap", out.to_str().unwrap(), "--target", "vllm-ascend", "--json"]);
    let rv: Value = serde_json::from_str(&r.stdout).unwrap();
    let unmapped: Vec<&Value> = rv["rows"].as_array().unwrap().iter().filter(|r| r["action"] == "unmapped").collect();
    assert!(unmapped.is_empty(), "{unmapped:#?}");
    v
}
