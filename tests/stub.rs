//! `ckptpilot stub`: generated Python compiles, the pure mapping module reproduces the Rust remap
//! table on every fixture, scripts pass `bash -n`, smoke.py is exercised against local HTTP servers,
//! the delivery YAML and tutorial have what vllm-ascend requires. Needs python3 (CI has it); tests
//! print a visible SKIP line and return where it is absent.

mod common;
use common::*;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

fn python() -> Option<&'static str> {
    let ok = Command::new("python3").arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIP: python3 is not installed; the generated-Python checks did not run");
    }
    ok.then_some("python3")
}

fn stub(fixture_name: &str, extra: &[&str]) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let mut a: Vec<String> = vec![
        "stub".into(),
        fixture(fixture_name).to_str().unwrap().to_string(),
        "--out".into(),
        out.to_str().unwrap().to_string(),
    ];
    a.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = a.iter().map(String::as_str).collect();
    let mut r = run(&args);
    if r.code == 1 && r.stderr.contains("plan finds no feasible configuration") && !extra.contains(&"--target") {
        // `ckptpilot plan` finds no configuration of this fp8 fixture that vLLM serves on GPUs
        // (deepseek-fp8: fp8 blocks that do not divide its MLP; qwen3-*-fp8, ct-fp8-block: block
        // scales that do not load), so stub writes no vllm kit; the vllm-ascend one (dequantized at
        // load) is feasible.
        let mut a = args.clone();
        a.extend(["--target", "vllm-ascend"]);
        r = run(&a);
    }
    assert_eq!(r.code, 0, "{fixture_name}: {}", r.stderr);
    (tmp, out)
}

fn files_with(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == ext) {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

const FAMILIES: &[&str] = &[
    "llama",
    "mistral",
    "qwen2",
    "qwen3-dense",
    "qwen3-moe",
    "qwen3-moe-fp8",
    "mixtral",
    "deepseek-v3-mla",
    "deepseek-fp8",
    "glm4-moe",
    "olmo2",
    "gpt-oss",
    "qwen3-next",
    "qwen2.5-vl",
    "qwen2.5-vl-new",
    "qwen3-vl",
    "qwen3-vl-legacy",
    "gemma3-tied",
    "gemma3-mm",
];

#[test]
fn mapping_module_reproduces_the_remap_table_on_every_fixture() {
    let Some(py) = python() else { return };
    for f in FAMILIES {
        // The TP the plan picks: vLLM refuses some fixtures at a fixed one (the mapping module does
        // not depend on the TP).
        let (_tmp, out) = stub(f, &[]);
        for p in files_with(&out, "py") {
            let o = Command::new(py).args(["-m", "py_compile"]).arg(&p).output().unwrap();
            assert!(o.status.success(), "{}: {}", p.display(), String::from_utf8_lossy(&o.stderr));
        }
        let mapping =
            files_with(&out, "py").into_iter().find(|p| p.to_string_lossy().ends_with("_mapping.py")).unwrap();
        let mut rust = run(&["remap", fixture(f).to_str().unwrap(), "--json"]);
        let mut dequantize = false;
        if rust.code == 1 {
            // vLLM cannot build it on GPUs at any TP (deepseek-fp8: fp8 blocks that do not divide the
            // MLP); on vllm-ascend its fp8 weights are dequantized at load and it builds.
            rust = run(&["remap", fixture(f).to_str().unwrap(), "--json", "--target", "vllm-ascend"]);
            dequantize = true;
        }
        let rust: Value = serde_json::from_str(&rust.stdout).unwrap_or_else(|e| panic!("{f}: {e}: {}", rust.stderr));
        let names: Vec<&str> =
            rust["rows"].as_array().unwrap().iter().map(|r| r["checkpoint_name"].as_str().unwrap()).collect();
        let o = if dequantize {
            // remap(names, dtypes, dequantize_fp8=True): the table as the adapter loads it there.
            let dtypes: Vec<&str> =
                rust["rows"].as_array().unwrap().iter().map(|r| r["dtype"].as_str().unwrap()).collect();
            let args = serde_json::json!([names, dtypes]).to_string();
            Command::new(py)
                .arg("-c")
                .arg("import importlib.util, json, sys\nspec = importlib.util.spec_from_file_location('m', sys.argv[1])\nm = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(m)\nnames, dtypes = json.loads(sys.argv[2])\nprint(json.dumps(m.remap(names, dtypes, dequantize_fp8=True)))")
                .arg(&mapping)
                .arg(&args)
                .output()
                .unwrap()
        } else {
            let input = names.join("\n");
            let mut child = Command::new(py)
                .arg(&mapping)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap();
            use std::io::Write;
            child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
            child.wait_with_output().unwrap()
        };
        assert!(o.status.success(), "{f}: {}", String::from_utf8_lossy(&o.stderr));
        let python_rows: Value = serde_json::from_slice(&o.stdout).unwrap();
        let python_rows = python_rows.as_array().unwrap();
        assert_eq!(python_rows.len(), names.len());
        for (r, p) in rust["rows"].as_array().unwrap().iter().zip(python_rows) {
            for k in ["checkpoint_name", "param", "shard_id", "expert_id", "action", "reason", "routed_to"] {
                assert_eq!(r[k], p[k], "{f}: {} field {k}", r["checkpoint_name"]);
            }
        }
    }
}

#[test]
fn adapter_subclasses_the_vllm_class_and_plugin_registers_it() {
    let (_tmp, out) = stub("deepseek-fp8", &["--layout", "plugin", "--target", "vllm-ascend"]);
    let pkg = out.join("deepseek_fp8_vllm");
    let adapter = std::fs::read_to_string(pkg.join("deepseek_fp8.py")).unwrap();
    assert!(adapter.contains("from vllm.model_executor.models.deepseek_v2 import DeepseekV3ForCausalLM as _Base"));
    // The class takes the architecture's name (issue 11.3; it was `DeepseekFp8ForCausalLM`).
    assert!(adapter.contains("class DeepseekV3ForCausalLM(_Base):"));
    assert!(adapter.contains("\"fused_qkv_a_proj\": [\"q_a_proj\", \"kv_a_proj_with_mqa\"]"));
    assert!(adapter.contains("DEQUANTIZE_FP8 = True"), "fp8 on vllm-ascend dequantizes at load");
    assert!(adapter.contains("raise ValueError("), "unmapped names raise, once");
    assert!(pkg.join("fp8_dequant.py").exists());
    let init = std::fs::read_to_string(pkg.join("__init__.py")).unwrap();
    assert!(init.contains("ModelRegistry.register_model(\"DeepseekV3ForCausalLM\", \"deepseek_fp8_vllm.deepseek_fp8:DeepseekV3ForCausalLM\")"));
    let toml = std::fs::read_to_string(out.join("pyproject.toml")).unwrap();
    assert!(toml.contains("[project.entry-points.\"vllm.general_plugins\"]"));
    assert!(toml.contains("deepseek_fp8_vllm = \"deepseek_fp8_vllm:register\""));
    // In-tree: the registry line instead of a package.
    let (_tmp2, out2) = stub("qwen3-moe", &["--layout", "in-tree", "--name", "MyQwenMoe"]);
    let reg = std::fs::read_to_string(out2.join("REGISTRY.md")).unwrap();
    assert!(reg.contains("\"Qwen3MoeForCausalLM\": (\"my_qwen_moe\", \"Qwen3MoeForCausalLM\"),"), "{reg}");
    assert!(!out2.join("pyproject.toml").exists());
    // On plain vLLM (fp8 hardware) nothing is dequantized.
    let (_tmp3, out3) = stub("qwen3-moe-fp8", &["--target", "vllm", "--allow-infeasible"]);
    assert!(std::fs::read_to_string(out3.join("qwen3_moe_fp8_vllm/qwen3_moe_fp8.py"))
        .unwrap()
        .contains("DEQUANTIZE_FP8 = False"));
}

/// An architecture vLLM 0.33.0 does not register by name but converts (Qwen2ForSequenceClassification:
/// `adapters.as_seq_cls_model(Qwen2ForCausalLM)`, recorded as `as_seq_cls_model.<locals>`): the adapter
/// wraps the registered base itself, since `<locals>` is no module to import from (the plugin check
/// failed at vLLM's registry inspection with a SyntaxError before this).
#[test]
fn converted_architecture_adapter_wraps_the_registered_base() {
    let (_tmp, out) = stub("families/qwen2-seqcls", &["--layout", "plugin", "--tp", "1"]);
    let adapter = std::fs::read_to_string(out.join("qwen2_seqcls_vllm/qwen2_seqcls.py")).unwrap();
    assert!(!adapter.contains("<locals>"), "{adapter}");
    assert!(adapter.contains("from vllm.model_executor.models.adapters import as_seq_cls_model\n"), "{adapter}");
    assert!(adapter.contains("from vllm.model_executor.models.qwen2 import Qwen2ForCausalLM\n"), "{adapter}");
    assert!(adapter
        .contains("\n\n_Base = as_seq_cls_model(Qwen2ForCausalLM)\n\n\nclass Qwen2ForSequenceClassification(_Base):"));
}

#[test]
fn unknown_architecture_gets_a_skeleton_with_todo_forward() {
    let c = copy_fixture("qwen3-dense");
    edit_config(&c.dir, |cfg| cfg["architectures"] = serde_json::json!(["BrandNewForCausalLM"]));
    let out = c.tmp.path().join("out");
    // (`--like none`: the skeleton, not the closest family's class; see the test after this one)
    let r =
        run(&["stub", c.dir.to_str().unwrap(), "--out", out.to_str().unwrap(), "--name", "BrandNew", "--like", "none"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let adapter = std::fs::read_to_string(out.join("brand_new_vllm/brand_new.py")).unwrap();
    assert!(adapter.contains("class BrandNewDecoderLayer(nn.Module):"));
    // Built as the mapping routes: q/k/v into qkv_proj, gate/up into gate_up_proj (issue 11.4; the
    // skeleton built q_proj, which its own mapping never loads).
    assert!(adapter.contains("self.self_attn.qkv_proj = QKVParallelLinear(64, 16, 4, 2, bias=False"), "{adapter}");
    assert!(adapter.contains("self.mlp.gate_up_proj = MergedColumnParallelLinear(64, [128, 128], bias=False"));
    assert!(!adapter.contains("q_proj = "));
    assert!(adapter.contains("self.self_attn.o_proj = RowParallelLinear(64, 64"));
    assert!(adapter.contains("self.self_attn.q_norm = RMSNorm(16)"));
    assert!(adapter.contains("self.model.embed_tokens = VocabParallelEmbedding(512, 64"));
    assert!(adapter.contains("class BrandNewForCausalLM(nn.Module):"));
    assert_eq!(
        adapter.matches("raise NotImplementedError(\"TODO").count(),
        3,
        "only forward / compute_logits are left"
    );
    if let Some(py) = python() {
        let o =
            Command::new(py).args(["-m", "py_compile"]).arg(out.join("brand_new_vllm/brand_new.py")).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    }
}

#[test]
fn serve_scripts_and_feature_matrix() {
    let (_tmp, out) = stub("deepseek-v3-mla", &["--tp", "2"]);
    for s in ["serve_stage_a.sh", "serve_stage_b.sh"] {
        let o = Command::new("bash").arg("-n").arg(out.join("validation").join(s)).output().unwrap();
        assert!(o.status.success(), "{s}: {}", String::from_utf8_lossy(&o.stderr));
    }
    let a = std::fs::read_to_string(out.join("validation/serve_stage_a.sh")).unwrap();
    assert!(a.contains("WORKSPACE=\"${WORKSPACE:-/workspace}\"\n") && a.contains("cd \"$WORKSPACE\""));
    // The model's own limit (max_position_embeddings 256), not 131072 (issue 11.6).
    assert!(a.contains("--tensor-parallel-size 2 --max-model-len 256 --max-num-seqs 16 --port \"$PORT\" --enable-expert-parallel --load-format dummy"));
    assert!(a.contains("mtp) ARGS+=(--speculative-config '{\"method\": \"mtp\", \"num_speculative_tokens\": 1}')"));
    assert!(a.contains("eager) ARGS+=(--enforce-eager)"));
    assert!(a.contains("TORCHDYNAMO_DISABLE=1"));
    let b = std::fs::read_to_string(out.join("validation/serve_stage_b.sh")).unwrap();
    assert!(!b.contains("--load-format dummy"));
    let f: Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("validation/features.json")).unwrap()).unwrap();
    let status =
        |k: &str| f["features"].as_array().unwrap().iter().find(|x| x["feature"] == k).unwrap()["status"].clone();
    assert_eq!(status("mtp"), "applicable");
    assert_eq!(status("ep"), "applicable");
    assert_eq!(status("multimodal"), "not-applicable");
    // MTP declared but its weights removed: checkpoint-missing.
    let c = copy_fixture("deepseek-v3-mla");
    drop_tensors(&c.dir, |n| n.starts_with("model.layers.3."));
    let out2 = c.tmp.path().join("out");
    assert_eq!(run(&["stub", c.dir.to_str().unwrap(), "--out", out2.to_str().unwrap(), "--tp", "2"]).code, 0);
    let f: Value =
        serde_json::from_str(&std::fs::read_to_string(out2.join("validation/features.json")).unwrap()).unwrap();
    assert_eq!(
        f["features"].as_array().unwrap().iter().find(|x| x["feature"] == "mtp").unwrap()["status"],
        "checkpoint-missing"
    );
    // A dense text model: no EP, and the VL variant of text-only isolation is absent.
    let (_tmp3, out3) = stub("llama", &[]);
    let a = std::fs::read_to_string(out3.join("validation/serve_stage_a.sh")).unwrap();
    assert!(!a.contains("ep) ARGS+="));
    let (_tmp4, out4) = stub("qwen2.5-vl", &[]);
    let a = std::fs::read_to_string(out4.join("validation/serve_stage_a.sh")).unwrap();
    assert!(a.contains("--limit-mm-per-prompt '{\"image\": 0, \"video\": 0, \"audio\": 0}'"));
}

#[test]
fn delivery_yaml_tutorial_and_report() {
    let (_tmp, out) = stub("qwen3-moe", &["--tp", "2"]);
    let y = std::fs::read_to_string(out.join("delivery/tests/e2e/models/configs/qwen3-moe.yaml")).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&y).unwrap();
    let d = &docs[0];
    assert_eq!(d["model_name"].as_str(), Some("qwen3-moe"));
    assert!(d["hardware"].as_str().is_some());
    assert_eq!(d["serve"]["tensor_parallel_size"].as_i64(), Some(2));
    assert!(!d["serve"]["enable_expert_parallel"].is_badvalue());
    assert_eq!(d["num_fewshot"].as_i64(), Some(5));
    let task = &d["tasks"][0];
    assert!(task["name"].as_str().is_some());
    assert!(task["metrics"][0]["name"].as_str().is_some());
    assert!(task["metrics"][0]["value"].is_null(), "metric values are left to fill from evaluation");
    let t = std::fs::read_to_string(out.join("delivery/docs/source/tutorials/models/qwen3-moe.md")).unwrap();
    for h in [
        "## Introduction",
        "## Supported Features",
        "## Environment Preparation",
        "## Deployment",
        "## Functional Verification",
        "## Accuracy Evaluation",
        "## Performance",
    ] {
        assert!(t.contains(&format!("\n{h}\n")), "tutorial lacks {h}");
    }
    assert!(out.join("delivery/docs/source/tutorials/models/index_entry.md").exists());
    let (_tmp1, out1) = stub("qwen3-moe", &["--tp", "2", "--lang", "zh"]);
    let zh = std::fs::read_to_string(out1.join("delivery/report.zh.md")).unwrap();
    assert!(zh.contains("特性矩阵") && zh.contains("运行手册") && zh.contains("Dummy 与真实权重验证证据"));
    let (_tmp2, out2) = stub("qwen3-moe", &["--target", "vllm-ascend", "--lang", "en"]);
    let en = std::fs::read_to_string(out2.join("delivery/report.en.md")).unwrap();
    assert!(en.contains("Feature matrix") && en.contains("Dummy vs real-weight evidence"));
    // VL: model_type vllm-vlm.
    let (_tmp3, out3) = stub("qwen3-vl", &[]);
    let y = std::fs::read_to_string(out3.join("delivery/tests/e2e/models/configs/qwen3-vl.yaml")).unwrap();
    assert_eq!(yaml_rust2::YamlLoader::load_from_str(&y).unwrap()[0]["model_type"].as_str(), Some("vllm-vlm"));
}

#[test]
fn stub_refuses_a_missing_model_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let r = run(&["stub", "/nonexistent/model", "--out", out.to_str().unwrap()]);
    assert_eq!(r.code, 3);
    assert!(!out.exists());
}

/// A local OpenAI-like server in Python (standard library), in one of several behaviours.
const SERVER: &str = r#"
import http.server, json, sys, threading, time, os
mode, port_file = sys.argv[1], sys.argv[2]
state = {"requests": 0, "first_get": None}
class H(http.server.BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def send(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code); self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def do_GET(self):
        if state["first_get"] is None:
            state["first_get"] = time.time()
        # slow-ready: "loading" for 1.5 s from the first poll.
        if mode == "slow-ready" and time.time() - state["first_get"] < 1.5:
            return self.send(503, {"error": "loading"})
        self.send(200, {"data": [{"id": "m"}]})
    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0)); req = json.loads(self.rfile.read(n))
        state["requests"] += 1
        if mode == "false-ready":
            self.send(500, {"error": "RuntimeError: NPU out of memory"})
            threading.Thread(target=lambda: (time.sleep(0.1), os._exit(0))).start()
            return
        content = "" if mode == "empty" else "Hello there."
        if mode == "vl":
            parts = req["messages"][0]["content"]
            if isinstance(parts, list):
                img = [p for p in parts if p.get("type") == "image_url"]
                ok = img and img[0]["image_url"]["url"].startswith("data:image/png;base64,")
                content = "An image." if ok else ""
        self.send(200, {"choices": [{"message": {"role": "assistant", "content": content}}]})
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
open(port_file, "w").write(str(srv.server_address[1]))
srv.serve_forever()
"#;

fn smoke(mode: &str, extra: &[&str]) -> (i32, Value) {
    let py = "python3";
    let (_tmp, out) = stub("llama", &[]);
    let dir = tempfile::tempdir().unwrap();
    let server = dir.path().join("server.py");
    std::fs::write(&server, SERVER).unwrap();
    let port_file = dir.path().join("port");
    let mut child = Command::new(py).arg(&server).arg(mode).arg(&port_file).spawn().unwrap();
    let mut port = String::new();
    for _ in 0..400 {
        if let Ok(p) = std::fs::read_to_string(&port_file) {
            if !p.is_empty() {
                port = p;
                break;
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let evidence = dir.path().join("ev.json");
    let mut args = vec![
        out.join("validation/smoke.py").to_string_lossy().into_owned(),
        "--stage".into(),
        "B".into(),
        "--base-url".into(),
        format!("http://127.0.0.1:{port}"),
        "--poll".into(),
        "0.2".into(),
        "--ready-timeout".into(),
        "20".into(),
        "--request-timeout".into(),
        "10".into(),
        "--alive-wait".into(),
        "1".into(),
        "--out".into(),
        evidence.to_string_lossy().into_owned(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    let o = Command::new(py).args(&args).output().unwrap();
    let _ = child.kill();
    let _ = child.wait();
    let ev: Value = serde_json::from_str(&std::fs::read_to_string(&evidence).unwrap()).unwrap();
    (o.status.code().unwrap_or(-1), ev)
}

#[test]
fn smoke_ready_and_slow_ready_pass() {
    if python().is_none() {
        return;
    }
    let (code, ev) = smoke("ready", &[]);
    assert_eq!(code, 0, "{ev}");
    assert_eq!(ev["verdict"], "pass");
    assert_eq!(ev["stage"], "B");
    assert_eq!(ev["model"], "m");
    assert_eq!(ev["requests"][0]["status"], 200);
    assert!(ev["requests"][0]["content_chars"].as_u64().unwrap() > 0);
    let (code, ev) = smoke("slow-ready", &[]);
    assert_eq!(code, 0, "{ev}");
    assert!(ev["ready_after_s"].as_f64().unwrap() >= 1.0, "polled until ready: {ev}");
}

#[test]
fn smoke_detects_false_ready_and_empty_content() {
    if python().is_none() {
        return;
    }
    let (code, ev) = smoke("false-ready", &[]);
    assert_eq!(code, 1);
    assert_eq!(ev["failure"]["kind"], "false-ready");
    assert!(ev["failure"]["signature"].as_str().unwrap().contains("HTTP 500"), "{ev}");
    assert_eq!(ev["alive_after_requests"], false);
    let (code, ev) = smoke("empty", &[]);
    assert_eq!(code, 1);
    assert_eq!(ev["failure"]["kind"], "empty-content");
}

#[test]
fn smoke_vl_sends_an_image() {
    if python().is_none() {
        return;
    }
    let (code, ev) = smoke("vl", &["--vl"]);
    assert_eq!(code, 0, "{ev}");
    assert_eq!(ev["requests"][1]["kind"], "text+image");
    assert!(ev["requests"][1]["content_chars"].as_u64().unwrap() > 0);
}

// ---- issue 11, item 7: generated code a vLLM maintainer would merge ---------------------------

/// Every fixture directory with a config.json (the `fixtures/configs/*` ones included).
fn all_fixtures() -> Vec<String> {
    let mut out = Vec::new();
    for base in ["", "configs/"] {
        for e in std::fs::read_dir(fixture(base.trim_end_matches('/'))).unwrap() {
            let p = e.unwrap().path();
            if p.join("config.json").is_file() {
                out.push(format!("{base}{}", p.file_name().unwrap().to_string_lossy()));
            }
        }
    }
    out.sort();
    out
}

/// Names a Python file uses without defining or importing them, and names it imports without using
/// (Python's own `symtable`, so the check needs no linter): `{"undefined": [...], "unused": [...]}`.
const NAMES_CHECK: &str = r#"
import builtins, json, symtable, sys
result = {}
for path in sys.argv[1:]:
    src = open(path, encoding="utf-8").read()
    top = symtable.symtable(src, path, "exec")
    defined = {s.get_name() for s in top.get_symbols() if s.is_assigned() or s.is_imported()}
    defined |= set(dir(builtins)) | {"__file__", "__name__", "__doc__"}
    imported = {s.get_name() for s in top.get_symbols() if s.is_imported()}
    used, undefined = set(), set()
    def walk(t):
        for s in t.get_symbols():
            if s.is_referenced():
                used.add(s.get_name())
                if (t is top or s.is_global()) and s.get_name() not in defined:
                    undefined.add(s.get_name())
        for c in t.get_children():
            walk(c)
    walk(top)
    result[path] = {"undefined": sorted(undefined), "unused": sorted(imported - used)}
print(json.dumps(result))
"#;

fn names_check(py: &str, files: &[PathBuf]) -> Value {
    let o = Command::new(py).arg("-c").arg(NAMES_CHECK).args(files).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

fn adapter_of(out: &Path) -> PathBuf {
    files_with(out, "py")
        .into_iter()
        .find(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            p.parent().unwrap().to_string_lossy().ends_with("_vllm")
                && !n.ends_with("_mapping.py")
                && n != "fp8_dequant.py"
                && n != "__init__.py"
        })
        .unwrap()
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

#[test]
fn vllm_adapters_import_the_dequantize_pairs_they_call() {
    // Issue 11.1: every fp8 adapter called dequantize_pairs without importing it.
    for f in ["deepseek-fp8", "qwen3-moe-fp8", "qwen3-dense-fp8", "ct-fp8-block", "ct-fp8-channel"] {
        for target in ["vllm", "vllm-ascend"] {
            // On GPUs plan finds no feasible configuration of most of them (fp8 blocks or scales
            // that do not fit the fixtures' tiny shapes): the kit written anyway is checked.
            let (_tmp, out) = stub(f, &["--target", target, "--allow-infeasible"]);
            let a = read(&adapter_of(&out));
            assert!(a.contains("dequantize_pairs(weights"), "{f} {target}");
            assert!(a.contains("\nfrom .fp8_dequant import dequantize_pairs\n"), "{f} {target}:\n{a}");
            assert!(a.contains("\nBLOCK_SIZE = "), "{f} {target}");
            if let Some(py) = python() {
                let r = names_check(py, &[adapter_of(&out)]);
                let r = r.as_object().unwrap().values().next().unwrap();
                assert_eq!(r["undefined"], serde_json::json!([]), "{f} {target}");
            }
        }
    }
    // A checkpoint without fp8 neither calls nor imports it.
    let (_tmp, out) = stub("llama", &[]);
    let a = read(&adapter_of(&out));
    assert!(!a.contains("dequantize_pairs") && !a.contains("DEQUANTIZE_FP8"), "{a}");
}

#[test]
fn adapters_import_no_unused_names() {
    // Issue 11.2: every adapter imported WeightsMapper, used or not.
    let py = python();
    for f in FAMILIES {
        let (_tmp, out) = stub(f, &[]);
        let a = read(&adapter_of(&out));
        assert_eq!(
            a.contains("WeightsMapper"),
            a.contains("hf_to_vllm_mapper = WeightsMapper("),
            "{f}: WeightsMapper imported only where the class sets hf_to_vllm_mapper"
        );
        if let Some(py) = py {
            let r = names_check(py, &files_with(&out, "py"));
            for (file, v) in r.as_object().unwrap() {
                assert_eq!(v["unused"], serde_json::json!([]), "{f}: {file}");
                assert_eq!(v["undefined"], serde_json::json!([]), "{f}: {file}");
            }
        }
    }
    let (_tmp, out) = stub("llama", &[]);
    assert!(!read(&adapter_of(&out)).contains("WeightsMapper"), "llama has no hf_to_vllm_mapper");
}

#[test]
fn adapter_class_takes_the_architecture_name() {
    // Issue 11.3: `--name LlamaForCausalLM` gave `class LlamaForCausalLmForCausalLM`.
    for name in ["LlamaForCausalLM", "llama", "my-llama"] {
        let (_tmp, out) = stub("llama", &["--name", name]);
        let a = read(&adapter_of(&out));
        assert!(a.contains("from vllm.model_executor.models.llama import LlamaForCausalLM as _Base\n"), "{name}:\n{a}");
        assert!(a.contains("\nclass LlamaForCausalLM(_Base):\n"), "{name}:\n{a}");
        assert!(!a.contains("ForCausalLmForCausalLM") && !a.contains("MyLlamaForCausalLM"), "{name}");
        let init = read(&files_with(&out, "py").into_iter().find(|p| p.ends_with("__init__.py")).unwrap());
        assert!(init.contains(":LlamaForCausalLM\")"), "{name}: {init}");
    }
    // A vision-language architecture: its own name too, not `…ForCausalLM`.
    let (_tmp, out) = stub("qwen2.5-vl", &["--layout", "in-tree"]);
    let a = read(&adapter_of(&out));
    assert!(a.contains("\nclass Qwen2_5_VLForConditionalGeneration(_Base):\n"), "{a}");
    let reg = read(&out.join("REGISTRY.md"));
    assert!(
        reg.contains(
            "\"Qwen2_5_VLForConditionalGeneration\": (\"qwen2_5_vl_ckpt\", \"Qwen2_5_VLForConditionalGeneration\")"
        ) || reg.contains(
            "\"Qwen2_5_VLForConditionalGeneration\": (\"qwen2_5_vl\", \"Qwen2_5_VLForConditionalGeneration\")"
        ),
        "{reg}"
    );
}

/// Issue 24 item 5: a known family under a new architecture name, model type and module prefix.
/// The adapter subclasses the closest family's vLLM class, the mapping carries the rename that
/// makes it fit, the plugin registers the architecture and the unknown model type's config; an
/// extra tensor in every layer becomes a named TODO that load_weights raises on.
#[test]
fn an_unknown_architecture_starts_from_the_closest_family() {
    let c = copy_fixture("llama");
    edit_config(&c.dir, |cfg| {
        cfg["architectures"] = serde_json::json!(["AcmeForCausalLM"]);
        cfg["model_type"] = serde_json::json!("acme");
    });
    transform_tensors(&c.dir, |n, v, b| {
        vec![(n.strip_prefix("model.").map_or(n.to_string(), |r| format!("transformer.{r}")), v.clone(), b.to_vec())]
    });
    let out = c.tmp.path().join("out");
    let r = run(&["stub", c.dir.to_str().unwrap(), "--out", out.to_str().unwrap(), "--name", "Acme"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let adapter = read(&out.join("acme_vllm/acme.py"));
    assert!(adapter.contains("from vllm.model_executor.models.llama import LlamaForCausalLM as _Base"), "{adapter}");
    assert!(adapter.contains("class AcmeForCausalLM(_Base):"), "{adapter}");
    let mapping = read(&out.join("acme_vllm/acme_mapping.py"));
    assert!(mapping.contains(r#"MAPPER = {"prefix": [["transformer.", "model."]]"#), "{mapping}");
    assert!(mapping.contains("TODO_UNEXPLAINED = []"), "{mapping}");
    assert!(mapping.contains("family `llama`"), "{mapping}");
    let init = read(&out.join("acme_vllm/__init__.py"));
    assert!(init.contains(r#"MODEL_TYPE = "acme""#) && init.contains(r#"BASE_MODEL_TYPE = "llama""#), "{init}");
    assert!(init.contains("_register_config()") && init.contains(r#"register_model("AcmeForCausalLM""#), "{init}");
    assert!(!init.contains("Ckptpilot"), "nothing of vLLM's is replaced: {init}");
    // --like names another family; --like with no such family is refused.
    let out2 = c.tmp.path().join("out2");
    let r = run(&["stub", c.dir.to_str().unwrap(), "--out", out2.to_str().unwrap(), "--like", "qwen2"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(read(&adapter_of(&out2)).contains("Qwen2ForCausalLM as _Base"));
    let r =
        run(&["stub", c.dir.to_str().unwrap(), "--out", c.tmp.path().join("o3").to_str().unwrap(), "--like", "nope"]);
    assert_ne!(r.code, 0);
    assert!(r.stderr.contains("--like nope: no such family"), "{}", r.stderr);
    // An extra tensor in every layer: a named TODO.
    let shard =
        index(&c.dir)["weight_map"]["transformer.layers.0.input_layernorm.weight"].as_str().unwrap().to_string();
    for l in 0..2 {
        add_f32_tensor(&c.dir, &shard, &format!("transformer.layers.{l}.acme_gate.weight"), &[1]);
    }
    let out4 = c.tmp.path().join("out4");
    let r = run(&["stub", c.dir.to_str().unwrap(), "--out", out4.to_str().unwrap(), "--name", "Acme"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let mapping = read(&out4.join("acme_vllm/acme_mapping.py"));
    assert!(mapping.contains(r#"TODO_UNEXPLAINED = ["transformer.layers.*.acme_gate.weight"]"#), "{mapping}");
}

#[test]
fn skeleton_builds_what_its_own_mapping_routes_to() {
    // Issue 11.4: the skeleton used undefined DEQUANTIZE_FP8 / BLOCK_SIZE and built q_proj while its
    // mapping routes q_proj to qkv_proj.
    for (fixture_name, target) in [("qwen3-dense", "vllm"), ("qwen3-dense-fp8", "vllm-ascend"), ("qwen3-moe", "vllm")] {
        let c = copy_fixture(fixture_name);
        edit_config(&c.dir, |cfg| cfg["architectures"] = serde_json::json!(["BrandNewForCausalLM"]));
        let out = c.tmp.path().join("out");
        let r = run(&[
            "stub",
            c.dir.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--target",
            target,
            "--tp",
            "1",
            "--like",
            "none",
        ]);
        assert_eq!(r.code, 0, "{}", r.stderr);
        let adapter = adapter_of(&out);
        let a = read(&adapter);
        assert!(a.contains("class BrandNewForCausalLM(nn.Module):"), "{a}");
        let Some(py) = python() else { continue };
        let r = names_check(py, std::slice::from_ref(&adapter));
        let r = r.as_object().unwrap().values().next().unwrap();
        assert_eq!(r["undefined"], serde_json::json!([]), "{fixture_name}: {a}");
        assert_eq!(r["unused"], serde_json::json!([]), "{fixture_name}: {a}");
        // Every module the mapping's PARAMS names (layer 0 and outside the layers) is built.
        let mapping =
            files_with(&out, "py").into_iter().find(|p| p.to_string_lossy().ends_with("_mapping.py")).unwrap();
        let o = Command::new(py)
            .arg("-c")
            .arg("import importlib.util, json, sys\nspec = importlib.util.spec_from_file_location('m', sys.argv[1])\nm = importlib.util.module_from_spec(spec)\nspec.loader.exec_module(m)\nprint(json.dumps(sorted(m.PARAMS)))")
            .arg(&mapping)
            .output()
            .unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let params: Vec<String> = serde_json::from_slice(&o.stdout).unwrap();
        for p in &params {
            if p.contains("scale") {
                continue; // created by the quantization method
            }
            let module = if let Some((m, _)) = p.rsplit_once(".w13_").or_else(|| p.rsplit_once(".w2_")) {
                m.to_string()
            } else {
                p.rsplit_once('.').unwrap().0.to_string()
            };
            let path = match module.split_once(".layers.") {
                Some((_, rest)) if rest.starts_with("0.") => rest[2..].to_string(),
                Some(_) => continue,
                None => module.clone(),
            };
            assert!(
                a.contains(&format!("self.{path} = ")),
                "{fixture_name}: `{p}` is routed to but `{path}` is not built:\n{a}"
            );
        }
        assert!(params.iter().any(|p| p.ends_with("qkv_proj.weight")));
    }
}

/// vLLM 0.33's model module names the family rule files cite.
fn vllm_modules() -> std::collections::BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/arch/families");
    let mut names = std::collections::BTreeSet::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_none_or(|x| x != "json") {
            continue;
        }
        let v: Value = serde_json::from_str(&read(&p)).unwrap();
        if let Some(classes) = v["vllm_classes"].as_object() {
            for t in classes.values() {
                let module = t.as_str().unwrap().split(':').next().unwrap();
                names.insert(module.rsplit('.').next().unwrap().to_string());
            }
        }
        if let Some(src) = v["vllm_source"].as_str() {
            for w in src.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '/')) {
                if let Some(stem) = w.strip_suffix(".py") {
                    names.insert(stem.rsplit('/').next().unwrap().to_string());
                }
            }
        }
    }
    assert!(names.contains("llama") && names.contains("qwen2"));
    names
}

#[test]
fn in_tree_layout_never_reuses_a_vllm_module_name() {
    // Issue 11.5: `--layout in-tree --name llama` told the user to copy llama.py over vLLM's own.
    let taken = vllm_modules();
    let check = |out: &Path, what: &str| {
        for p in files_with(out, "py") {
            if p.parent().unwrap().to_string_lossy().ends_with("_vllm") && !p.ends_with("__init__.py") {
                let stem = p.file_stem().unwrap().to_string_lossy().into_owned();
                assert!(!taken.contains(&stem), "{what}: {} would replace vLLM's own module", p.display());
            }
        }
        let reg = read(&out.join("REGISTRY.md"));
        for m in &taken {
            assert!(!reg.contains(&format!("`{m}.py`")) && !reg.contains(&format!("(\"{m}\", ")), "{what}: {reg}");
        }
        reg
    };
    let (_tmp, out) = stub("llama", &["--layout", "in-tree", "--name", "llama"]);
    let reg = check(&out, "llama");
    assert!(out.join("llama_vllm/llama_ckpt.py").is_file());
    assert!(!out.join("llama_vllm/llama.py").exists());
    assert!(reg.contains("\"LlamaForCausalLM\": (\"llama_ckpt\", \"LlamaForCausalLM\"),"), "{reg}");
    assert!(reg.contains("`llama_vllm/llama_ckpt.py`"), "{reg}");
    let a = read(&out.join("llama_vllm/llama_ckpt.py"));
    assert!(a.contains("from . import llama_ckpt_mapping as M"), "{a}");
    for f in FAMILIES {
        let (_tmp, out) = stub(f, &["--layout", "in-tree"]);
        check(&out, f);
    }
    // The plugin layout's package-relative modules keep the plain name.
    let (_tmp, out) = stub("llama", &["--name", "llama"]);
    assert!(out.join("llama_vllm/llama.py").is_file());
}

#[test]
fn serve_scripts_use_the_max_model_len_plan_derives() {
    // Issue 11.6: the scripts always passed --max-model-len 131072 (vLLM: "User-specified
    // max_model_len (131072) is greater than the derived max_model_len …").
    for (f, target) in [
        ("llama", "vllm"),
        ("qwen3-moe", "vllm-ascend"),
        ("configs/qwen3-0.6b", "vllm"),
        ("configs/llama-3.1-70b", "vllm"),
    ] {
        let plan = run(&["plan", fixture(f).to_str().unwrap(), "--target", target, "--json"]);
        let plan: Value = serde_json::from_str(&plan.stdout).unwrap_or_else(|e| panic!("{f}: {e}: {}", plan.stderr));
        let len = plan["max_model_len"].as_u64().unwrap();
        let (_tmp, out) = stub(f, &["--target", target]);
        for s in ["serve_stage_a.sh", "serve_stage_b.sh"] {
            let text = read(&out.join("validation").join(s));
            let args = text.lines().find(|l| l.starts_with("ARGS=(")).unwrap();
            assert!(args.contains(&format!("--max-model-len {len} ")), "{f}: {args}");
            if len < 131072 {
                assert!(!args.contains("131072"), "{f}: {args}");
                assert!(text.contains(&format!("# --max-model-len {len}: the model's own limit")), "{f}");
            }
        }
        let t = files_with(&out.join("delivery"), "md")
            .into_iter()
            .find(|p| !p.ends_with("index_entry.md") && !p.to_string_lossy().contains("report."))
            .unwrap();
        assert!(read(&t).contains(&format!("--max-model-len {len} ")), "{f}: tutorial");
        let y = read(&files_with(&out.join("delivery"), "yaml")[0]);
        let y = &yaml_rust2::YamlLoader::load_from_str(&y).unwrap()[0];
        assert!(y["serve"]["max_model_len"].as_i64().unwrap() as u64 <= len, "{f}: YAML");
    }
}

#[test]
fn architecture_only_in_text_config_is_passed_with_hf_overrides() {
    // Issue 11.7: vLLM reads the top-level `architectures`; without it vLLM builds another model.
    let c = copy_fixture("qwen2.5-vl");
    edit_config(&c.dir, |cfg| {
        cfg.as_object_mut().unwrap().remove("architectures");
    });
    let (_, audit) = audit_json(&c.dir);
    assert_eq!(audit["model"]["architecture_source"], "text_config.architectures");
    let out = c.tmp.path().join("out");
    let r = run(&["stub", c.dir.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let want = "--hf-overrides '{\"architectures\": [\"Qwen2_5_VLForConditionalGeneration\"]}'";
    for s in ["serve_stage_a.sh", "serve_stage_b.sh"] {
        let text = read(&out.join("validation").join(s));
        assert!(text.contains(want), "{s}:\n{text}");
        let o = Command::new("bash").arg("-n").arg(out.join("validation").join(s)).output().unwrap();
        assert!(o.status.success());
    }
    // Named at the top level: no override.
    let (_tmp, out) = stub("qwen2.5-vl", &[]);
    let call = serve(&out.join("validation/serve_stage_b.sh"), "default", &[]);
    assert!(call.all("--hf-overrides").is_empty(), "{:?}", call.argv);
    // With fp8 dequantized at load as well: one object carrying both (a second flag would replace it).
    let c = copy_fixture("qwen3-dense-fp8");
    edit_config(&c.dir, |cfg| {
        let arch = cfg["architectures"].clone();
        cfg.as_object_mut().unwrap().remove("architectures");
        cfg["text_config"] = serde_json::json!({"architectures": arch});
    });
    let out = c.tmp.path().join("out");
    let r = run(&["stub", c.dir.to_str().unwrap(), "--out", out.to_str().unwrap(), "--target", "vllm-ascend"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let b = read(&out.join("validation/serve_stage_b.sh"));
    assert!(
        b.contains("--hf-overrides '{\"architectures\": [\"Qwen3ForCausalLM\"], \"quantization_config\": null}'"),
        "{b}"
    );
    // Run: every variant passes exactly one --hf-overrides (a second would replace the first), the
    // `isolated` one with the distinct name in place of the architecture.
    for (variant, arch) in
        [("default", "Qwen3ForCausalLM"), ("eager", "Qwen3ForCausalLM"), ("isolated", "Qwen3ForCausalLMCkptpilot")]
    {
        let call = serve(&out.join("validation/serve_stage_b.sh"), variant, &[]);
        let overrides = call.all("--hf-overrides");
        assert_eq!(overrides.len(), 1, "{variant}: {:?}", call.argv);
        let v: Value = serde_json::from_str(&overrides[0]).unwrap();
        assert_eq!(v, serde_json::json!({"architectures": [arch], "quantization_config": null}), "{variant}");
    }
}

/// What a generated serve script ran: `vllm`'s arguments, its working directory and environment.
struct Served {
    argv: Vec<String>,
    cwd: String,
    env: serde_json::Map<String, Value>,
}

impl Served {
    /// The values that follow every `flag`.
    fn all(&self, flag: &str) -> Vec<String> {
        self.argv.windows(2).filter(|w| w[0] == flag).map(|w| w[1].clone()).collect()
    }
}

/// Run a generated serve script with `variant`, a stand-in `vllm` first on the PATH (it records what
/// it was given) and WORKSPACE a temporary directory unless `env` sets it.
fn serve(script: &Path, variant: &str, env: &[(&str, &str)]) -> Served {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let fake = bin.join("vllm");
    std::fs::write(
        &fake,
        "#!/usr/bin/env bash\nexec python3 -c 'import json, os, sys; json.dump({\"argv\": sys.argv[1:], \"cwd\": os.getcwd(), \"env\": dict(os.environ)}, open(os.environ[\"FAKE_VLLM_OUT\"], \"w\"))' \"$@\"\n",
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
    let ws = dir.path().join("ws");
    std::fs::create_dir(&ws).unwrap();
    let record = dir.path().join("vllm.json");
    let mut c = Command::new("bash");
    c.arg(script).arg(variant);
    c.env("PATH", format!("{}:{}", bin.display(), std::env::var("PATH").unwrap_or_default()));
    c.env("FAKE_VLLM_OUT", &record).env("WORKSPACE", &ws).env_remove("MODEL").env_remove("PORT");
    for (k, v) in env {
        c.env(k, v);
    }
    let o = c.output().unwrap();
    assert!(o.status.success(), "{} {variant}: {}", script.display(), String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_str(&read(&record)).unwrap();
    Served {
        argv: v["argv"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()).collect(),
        cwd: v["cwd"].as_str().unwrap().to_string(),
        env: v["env"].as_object().unwrap().clone(),
    }
}

#[test]
fn vllm_kits_list_no_ascend_features_and_name_a_gpu() {
    // Issue 11.8: `--target vllm` kits listed ACLGraph and flashcomm1 and wrote `hardware: Atlas A2`.
    let (_tmp, out) = stub("deepseek-v3-mla", &["--target", "vllm", "--tp", "2"]);
    let f: Value = serde_json::from_str(&read(&out.join("validation/features.json"))).unwrap();
    let keys: Vec<&str> = f["features"].as_array().unwrap().iter().map(|x| x["feature"].as_str().unwrap()).collect();
    assert!(!keys.contains(&"aclgraph") && !keys.contains(&"flashcomm1"), "{keys:?}");
    for p in files_with(&out, "sh").into_iter().chain(files_with(&out, "md")).chain(files_with(&out, "yaml")) {
        let t = read(&p).to_lowercase();
        assert!(!t.contains("aclgraph") && !t.contains("flashcomm") && !t.contains("atlas"), "{}", p.display());
    }
    let y = read(&out.join("delivery/tests/e2e/models/configs/deepseek-v3-mla.yaml"));
    let hw = yaml_rust2::YamlLoader::load_from_str(&y).unwrap()[0]["hardware"].as_str().unwrap().to_string();
    assert!(hw.starts_with("NVIDIA H100"), "{hw}");
    // vllm-ascend: both features, and an Atlas series.
    let (_tmp, out) = stub("deepseek-v3-mla", &["--target", "vllm-ascend", "--tp", "2"]);
    let f: Value = serde_json::from_str(&read(&out.join("validation/features.json"))).unwrap();
    let keys: Vec<&str> = f["features"].as_array().unwrap().iter().map(|x| x["feature"].as_str().unwrap()).collect();
    assert!(keys.contains(&"aclgraph") && keys.contains(&"flashcomm1"), "{keys:?}");
    assert!(read(&out.join("validation/serve_stage_a.sh")).contains("flashcomm1) ARGS+="));
    let y = read(&out.join("delivery/tests/e2e/models/configs/deepseek-v3-mla.yaml"));
    assert_eq!(yaml_rust2::YamlLoader::load_from_str(&y).unwrap()[0]["hardware"].as_str(), Some("Atlas A2 Series"));
}

#[test]
fn fp8_on_ascend_is_served_unquantized_at_a_tp_plan_finds_feasible() {
    // Issue 11.9: fp8 on vllm-ascend got TP 1 while `plan --target vllm-ascend` called every TP
    // infeasible. The adapter dequantizes at load and the scripts build the model unquantized, so
    // the TP is the smallest that `plan` finds feasible for the unquantized model.
    let f = "configs/qwen3-30b-a3b-fp8";
    let c = copy_fixture(f);
    edit_config(&c.dir, |cfg| {
        cfg.as_object_mut().unwrap().remove("quantization_config");
    });
    let plan = run(&["plan", c.dir.to_str().unwrap(), "--target", "vllm-ascend", "--json"]);
    let plan: Value = serde_json::from_str(&plan.stdout).unwrap_or_else(|e| panic!("{e}: {}", plan.stderr));
    let want =
        plan["configs"].as_array().unwrap().iter().find(|c| c["feasible"] == true).unwrap()["tp"].as_u64().unwrap();
    assert!(want > 1, "the bf16 model does not fit one A2 device");
    let (_tmp, out) = stub(f, &["--target", "vllm-ascend"]);
    for s in ["serve_stage_a.sh", "serve_stage_b.sh"] {
        let text = read(&out.join("validation").join(s));
        assert!(text.contains(&format!("ARGS=(--tensor-parallel-size {want} ")), "{s}:\n{text}");
        assert!(text.contains("--hf-overrides '{\"quantization_config\": null}'"), "{s}");
        assert!(text.contains("of the model as served (fp8 dequantized to bf16 at load, unquantized)"), "{s}");
    }
    let features: Value = serde_json::from_str(&read(&out.join("validation/features.json"))).unwrap();
    assert_eq!(features["tensor_parallel_size"].as_u64(), Some(want));
    // A checkpoint with tensors: the same rule (the quantized model's plan fails `target` everywhere).
    let (_tmp, out) = stub("deepseek-fp8", &["--target", "vllm-ascend"]);
    let b = read(&out.join("validation/serve_stage_b.sh"));
    assert!(b.contains("--hf-overrides '{\"quantization_config\": null}'"));
    assert!(!b.contains("placeholder"), "{b}");
    // On vLLM the fp8 model is planned (and served) as it is.
    let (_tmp, out) = stub(f, &["--target", "vllm"]);
    let b = read(&out.join("validation/serve_stage_b.sh"));
    assert!(!b.contains("quantization_config"), "{b}");
}

#[test]
fn generated_python_passes_ruff_on_every_fixture() {
    // Issue 11.10: `ruff check` clean on every generated .py, every fixture, both layouts, both
    // targets. Undefined and unused names are checked with Python's symtable even without ruff.
    let Some(py) = python() else { return };
    // The ruff installed for python3 (as .ci/run does), else one on the PATH.
    let ruff: Option<Vec<&str>> = [vec![py, "-m", "ruff"], vec!["ruff"]]
        .into_iter()
        .find(|c| Command::new(c[0]).args(&c[1..]).arg("--version").output().is_ok_and(|o| o.status.success()));
    if ruff.is_none() {
        eprintln!("SKIP: ruff is not installed (pip install ruff); only the symtable check ran");
    }
    let root = tempfile::tempdir().unwrap();
    for f in all_fixtures() {
        for target in ["vllm", "vllm-ascend"] {
            for layout in ["plugin", "in-tree"] {
                let out = root.path().join(format!("{}.{target}.{layout}", f.replace('/', "_")));
                let r = run(&[
                    "stub",
                    fixture(&f).to_str().unwrap(),
                    "--out",
                    out.to_str().unwrap(),
                    "--target",
                    target,
                    "--layout",
                    layout,
                ]);
                let cfg = std::fs::read_to_string(fixture(&f).join("config.json")).unwrap();
                let fp4 = cfg.contains("\"mxfp4\"") || cfg.contains("nvfp4-pack-quantized");
                if f.ends_with("-edge") {
                    // Kernel edge files (every scale byte), not models: no kit, and why — not even
                    // with --allow-infeasible.
                    assert_eq!(r.code, 1, "{f}: {}", r.stderr);
                    assert!(r.stderr.contains("not a Hugging Face model config"), "{f}: {}", r.stderr);
                    let again = run(&[
                        "stub",
                        fixture(&f).to_str().unwrap(),
                        "--out",
                        out.to_str().unwrap(),
                        "--target",
                        target,
                        "--allow-infeasible",
                    ]);
                    assert_eq!(again.code, 1, "{f}: {}", again.stderr);
                    assert!(!out.exists(), "{f}");
                    continue;
                }
                let r = if r.code == 1 {
                    // Plan predicts that vLLM fails at every TP (fp8 blocks or scales that do not
                    // fit a tiny fixture on GPUs), or the target has no method for the format (NVFP4,
                    // MXFP4 on vLLM-Ascend: convert first, tested below; no `ascend` quantization
                    // in vLLM for GPUs): refused, nothing written, and the kit written anyway with
                    // --allow-infeasible is checked all the same.
                    assert!(!out.exists(), "{f} {target}: nothing may be written");
                    // ModelSlim MX / FP8 schemes need an Ascend 950 (the kit's plan assumes A2/A3),
                    // and msModelSlim's WFP8AFP8_DYNAMIC has no vLLM-Ascend method.
                    if (target == "vllm-ascend" && (fp4 || f.starts_with("modelslim-")))
                        || (target == "vllm" && f.starts_with("modelslim-"))
                    {
                        assert!(r.stderr.contains("cannot serve"), "{f}: {}", r.stderr);
                    } else {
                        assert!(r.stderr.contains("`ckptpilot plan`"), "{f} {target}: {}", r.stderr);
                    }
                    run(&[
                        "stub",
                        fixture(&f).to_str().unwrap(),
                        "--out",
                        out.to_str().unwrap(),
                        "--target",
                        target,
                        "--layout",
                        layout,
                        "--allow-infeasible",
                    ])
                } else {
                    r
                };
                assert_eq!(r.code, 0, "{f} {target} {layout}: {}", r.stderr);
                let files = files_with(&out, "py");
                let r = names_check(py, &files);
                for (file, v) in r.as_object().unwrap() {
                    assert_eq!(v["undefined"], serde_json::json!([]), "{file}");
                    assert_eq!(v["unused"], serde_json::json!([]), "{file}");
                }
            }
        }
    }
    if let Some(ruff) = ruff {
        let o = Command::new(ruff[0]).args(&ruff[1..]).args(["check", "--no-cache"]).arg(root.path()).output().unwrap();
        assert!(o.status.success(), "{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    }
}

/// The English left in a Chinese text: runs of two or more lowercase ASCII words, and table cells
/// wholly in ASCII holding a lowercase word — outside code spans, which quote commands and messages.
fn english_in(text: &str) -> Vec<String> {
    let mut bad = Vec::new();
    for line in text.lines() {
        if line.starts_with("```") {
            continue;
        }
        // Drop code spans (`` … `` first, then ` … `).
        let mut plain = String::new();
        let mut rest = line;
        while let Some(i) = rest.find('`') {
            plain.push_str(&rest[..i]);
            let ticks = rest[i..].chars().take_while(|c| *c == '`').count();
            let fence = "`".repeat(ticks);
            match rest[i + ticks..].find(&fence) {
                Some(j) => rest = &rest[i + ticks + j + ticks..],
                None => {
                    rest = "";
                }
            }
            plain.push(' ');
        }
        plain.push_str(rest);
        let lower_word = |w: &str| w.len() >= 2 && w.chars().all(|c| c.is_ascii_lowercase());
        for frag in plain.split(|c: char| !(c.is_ascii_alphanumeric() || c == ' ')) {
            let words: Vec<&str> = frag.split_whitespace().collect();
            if words.windows(2).any(|w| lower_word(w[0]) && lower_word(w[1])) {
                bad.push(format!("{frag:?} in {line:?}"));
            }
        }
        if plain.trim_start().starts_with('|') {
            for cell in plain.split('|') {
                if cell.is_ascii() && cell.split(|c: char| !c.is_ascii_alphanumeric()).any(lower_word) {
                    bad.push(format!("cell {cell:?} in {line:?}"));
                }
            }
        }
    }
    bad
}

#[test]
fn chinese_report_is_chinese_throughout() {
    // Issue 11.11: the Chinese report left table labels, feature names and explanations in English.
    for (f, target) in [
        ("deepseek-v3-mla", "vllm-ascend"),
        ("qwen3-moe-fp8", "vllm-ascend"),
        ("qwen2.5-vl", "vllm"),
        ("llama", "vllm"),
    ] {
        let (_tmp, out) = stub(f, &["--target", target, "--tp", "1", "--lang", "zh"]);
        let zh = read(&out.join("delivery/report.zh.md"));
        let bad = english_in(&zh);
        assert!(bad.is_empty(), "{f} {target}: English in the Chinese report:\n{}\n\n{zh}", bad.join("\n"));
        for label in [
            "| architecture |",
            "| layers |",
            "to verify",
            "not-applicable",
            "checkpoint-missing",
            "Parallel configuration",
        ] {
            assert!(!zh.contains(label), "{f}: {label}");
        }
        let (_tmp, out) = stub(f, &["--target", target, "--tp", "1", "--lang", "en"]);
        let en = read(&out.join("delivery/report.en.md"));
        assert!(
            en.chars().all(|c| !('\u{4e00}'..='\u{9fff}').contains(&c)),
            "{f}: Chinese in the English report:\n{en}"
        );
        assert!(en.contains("| architecture |") && en.contains("Feature matrix"));
        assert!(!out.join("delivery/report.zh.md").exists());
    }
    // The detector itself: it finds what the report used to carry.
    assert!(!english_in("| layers | 3 |").is_empty());
    assert!(!english_in("| 专家并行 | 待验证 | dense model: vLLM refuses EP |").is_empty());
    assert!(english_in("| MoE | 8 个专家 |\n阶段 A：`bash validation/serve_stage_a.sh`").is_empty());
}

#[test]
fn four_bit_formats_ascend_cannot_serve_are_refused_with_convert_first_and_the_copy_stubs() {
    // Issue 13: vLLM-Ascend has no method for NVFP4 or MXFP4 (it raises while building the model),
    // and load-time dequantization covers fp8 only: no kit, exit 1, the error quotes vLLM-Ascend
    // and the help line names the conversion; the converted copy then gets a kit that builds it
    // unquantized. W4A16 (group-wise int) has an NPU method and gets its kit as stored.
    for (f, quoted) in [
        ("llama-nvfp4", "No compressed-tensors compatible quantization type was found"),
        ("gpt-oss-mxfp4", "mxfp4 quantization is currently not supported in npu"),
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("kit");
        let r = run(&["stub", fixture(f).to_str().unwrap(), "--out", out.to_str().unwrap(), "--target", "vllm-ascend"]);
        assert_eq!(r.code, 1, "{f}: {}", r.stderr);
        assert!(r.stderr.contains(quoted), "{f}: {}", r.stderr);
        assert!(
            r.stderr.contains("help: convert it first") && r.stderr.contains("ckptpilot dequant"),
            "{f}: {}",
            r.stderr
        );
        assert!(!out.exists(), "{f}: nothing may be written");
        // On GPUs vLLM serves both as stored.
        let (_t, _o) = stub(f, &["--target", "vllm"]);
        // The converted copy stubs for vllm-ascend, unquantized.
        let bf16 = tmp.path().join("bf16");
        let d = run(&["dequant", fixture(f).to_str().unwrap(), "--out", bf16.to_str().unwrap()]);
        assert_eq!(d.code, 0, "{f}: {}", d.stderr);
        let r = run(&["stub", bf16.to_str().unwrap(), "--out", out.to_str().unwrap(), "--target", "vllm-ascend"]);
        assert_eq!(r.code, 0, "{f} converted: {}", r.stderr);
        let a = read(&adapter_of(&out));
        assert!(!a.contains("DEQUANTIZE_FP8"), "{f}: the copy is bf16");
    }
    let (_t, out) = stub("llama-w4a16", &["--target", "vllm-ascend"]);
    assert!(out.join("validation").is_dir());
}

// ---- issue 21 ("Trust, round 2"): stub ----------------------------------------------------------

/// Every file under `dir`, relative to it.
fn tree(dir: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else { continue };
        for e in rd {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p.strip_prefix(dir).unwrap().to_string_lossy().into_owned());
            }
        }
    }
    out.sort();
    out
}

fn no_control(what: &str, text: &str) {
    let bad: Vec<char> = text.chars().filter(|c| c.is_control() && *c != '\n').collect();
    assert!(bad.is_empty(), "{what}: raw control characters {bad:?} in:\n{text}");
}

#[test]
fn name_is_a_name_not_a_path() {
    // Issue 21.1: `--name ../../../../tmp/x` wrote x.yaml and x.md outside --out (the delivery paths
    // joined the name unchecked).
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("a/b/c/out");
    for name in [
        "../../../../../escaped",
        "../../../../../../../../../../tmp/escaped",
        "a/b",
        "a\\b",
        "..",
        "a..b",
        ".hidden",
        "",
        "x\u{1b}[31mred",
        "bell\u{7}",
        "new\nline",
        "-flag",
        "with space",
        "quote\"d",
    ] {
        let arg = format!("--name={name}");
        let r = run(&["stub", fixture("llama").to_str().unwrap(), "--out", out.to_str().unwrap(), &arg]);
        assert_eq!(r.code, 2, "{name:?}: {}", r.stderr);
        assert!(r.stderr.contains("error: --name"), "{name:?}: {}", r.stderr);
        assert!(r.stderr.contains("help: --name takes a model name"), "{name:?}: {}", r.stderr);
        no_control(name, &r.stderr);
        assert!(!out.exists(), "{name:?}: nothing may be written");
    }
    assert!(tree(tmp.path()).is_empty(), "{:?}", tree(tmp.path()));
    assert!(!Path::new("/tmp/escaped.yaml").exists() && !Path::new("/tmp/escaped.md").exists());
    // Names people use pass, and every file stays under --out.
    for name in ["DeepSeek-V3.1", "qwen2.5-vl", "my_model", "Llama3"] {
        let (tmp, out) = stub("llama", &["--name", name]);
        let all = tree(tmp.path());
        assert!(all.iter().all(|p| p.starts_with("out/")), "{name}: {all:?}");
        assert!(out.join(format!("delivery/tests/e2e/models/configs/{name}.yaml")).is_file(), "{name}: {all:?}");
    }
}

#[test]
fn a_directory_name_that_is_no_name_becomes_one() {
    // Issue 21.1 / 21.9: the default name is the checkpoint directory's, which may hold anything.
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("My Model \u{1b}[31m(v2)\u{7}");
    std::fs::create_dir(&dir).unwrap();
    for e in std::fs::read_dir(fixture("llama")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), dir.join(e.file_name())).unwrap();
    }
    let out = tmp.path().join("out");
    let r = run(&["stub", dir.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    no_control("stdout", &r.stdout);
    no_control("stderr", &r.stderr);
    assert!(out.join("delivery/tests/e2e/models/configs/My-Model-31m-v2.yaml").is_file(), "{:?}", tree(&out));
    let b = read(&out.join("validation/serve_stage_b.sh"));
    assert!(b.contains("MODEL=\"${MODEL:-/models/My-Model-31m-v2}\""), "{b}");
    let y = read(&out.join("delivery/tests/e2e/models/configs/My-Model-31m-v2.yaml"));
    assert_eq!(yaml_rust2::YamlLoader::load_from_str(&y).unwrap()[0]["model_name"].as_str(), Some("My-Model-31m-v2"));
}

#[test]
fn stub_refuses_a_tp_plan_predicts_fails_unless_allowed() {
    // Issue 21.2: `stub fixtures/qwen3-moe-fp8` exited 0 with a TP 1 kit although `ckptpilot plan`
    // predicts a load error there (scale-load) and at every other TP.
    let tmp = tempfile::tempdir().unwrap();
    let m = fixture("qwen3-moe-fp8");
    let out = tmp.path().join("kit");
    let plan = run(&["plan", m.to_str().unwrap(), "--ep=both", "--tp", "1,2,4,8,16,32", "--json"]);
    let plan: Value = serde_json::from_str(&plan.stdout).unwrap();
    assert!(plan["configs"].as_array().unwrap().iter().all(|c| c["feasible"] == false), "the premise");
    let r = run(&["stub", m.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("at TP 1 on --target vllm"), "{}", r.stderr);
    assert!(r.stderr.contains("scale-load: RuntimeError"), "plan's own error: {}", r.stderr);
    assert!(r.stderr.contains("plan finds no feasible configuration at any TP up to 32"), "{}", r.stderr);
    assert!(r.stderr.contains("help: ") && r.stderr.contains("--allow-infeasible"), "{}", r.stderr);
    assert!(r.stdout.is_empty() && !out.exists(), "nothing written");
    // --allow-infeasible writes it, and says so on stderr, in the scripts, features.json and the report.
    let r = run(&["stub", m.to_str().unwrap(), "--out", out.to_str().unwrap(), "--allow-infeasible"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(
        r.stderr.contains("warning: `ckptpilot plan --target vllm` predicts that vLLM 0.33.0 fails at TP 1"),
        "{}",
        r.stderr
    );
    for s in ["serve_stage_a.sh", "serve_stage_b.sh"] {
        let text = read(&out.join("validation").join(s));
        assert!(
            text.contains("# WARNING: `ckptpilot plan --target vllm` predicts that vLLM 0.33.0 fails at TP 1"),
            "{s}"
        );
        assert!(text.contains("scale-load: RuntimeError"), "{s}");
        assert!(text.contains("\necho 'warning: "), "{s}: the script says it when run");
        let o = Command::new("bash").arg("-n").arg(out.join("validation").join(s)).output().unwrap();
        assert!(o.status.success(), "{s}");
    }
    let f: Value = serde_json::from_str(&read(&out.join("validation/features.json"))).unwrap();
    assert_eq!(f["plan"]["feasible"], false);
    assert_eq!(f["plan"]["predicted_failures"][0]["rule"], "scale-load");
    assert!(f["plan"]["smallest_feasible"].is_null());
    assert!(read(&out.join("delivery/report.en.md")).contains("> **Warning:** `ckptpilot plan --target vllm` predicts"));
    // A TP the plan refuses, with one it finds feasible named in the message and the fix.
    let out = tmp.path().join("tp8");
    let r = run(&["stub", fixture("qwen3-moe").to_str().unwrap(), "--out", out.to_str().unwrap(), "--tp", "8"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(
        r.stderr.contains("refuses to build") && r.stderr.contains("divisible by tensor parallel size (8)"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("plan finds TP 1 feasible"), "{}", r.stderr);
    assert!(r.stderr.contains("`--tp 1` is feasible"), "{}", r.stderr);
    assert!(!out.exists());
    // Not only layout: memory. Llama 3.1 70B in bf16 does not fit one H100.
    let m = fixture("configs/llama-3.1-70b");
    let r = run(&["stub", m.to_str().unwrap(), "--out", out.to_str().unwrap(), "--tp", "1"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("predicts that vLLM 0.33.0 fails") && r.stderr.contains("weights: "), "{}", r.stderr);
    let plan = run(&["plan", m.to_str().unwrap(), "--json"]);
    let plan: Value = serde_json::from_str(&plan.stdout).unwrap();
    let want =
        plan["configs"].as_array().unwrap().iter().find(|c| c["feasible"] == true).unwrap()["tp"].as_u64().unwrap();
    assert!(r.stderr.contains(&format!("plan finds TP {want} feasible")), "{}", r.stderr);
    // Without --tp: the smallest feasible one.
    let r = run(&["stub", m.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(read(&out.join("validation/serve_stage_b.sh")).contains(&format!("ARGS=(--tensor-parallel-size {want} ")));
    let f: Value = serde_json::from_str(&read(&out.join("validation/features.json"))).unwrap();
    assert_eq!(f["plan"]["feasible"], true);
}

#[test]
fn a_modelslim_kit_for_vllm_never_passes_quantization_ascend() {
    // Issue 21.2: vLLM on GPUs has no `ascend` quantization; a --target vllm kit of a ModelSlim
    // checkpoint wrote `--quantization ascend`.
    for f in ["modelslim-llama-w8a8-dynamic", "modelslim-qwen3-moe-w8a8-dynamic"] {
        let (_tmp, out) = stub(f, &["--target", "vllm", "--allow-infeasible"]);
        for p in files_with(&out, "sh").into_iter().chain(files_with(&out, "md")) {
            assert!(!read(&p).contains("--quantization ascend"), "{f}: {}", p.display());
        }
        // On vLLM-Ascend it does.
        let (_tmp, out) = stub(f, &["--target", "vllm-ascend"]);
        assert!(read(&out.join("validation/serve_stage_b.sh")).contains("ARGS+=(--quantization ascend)"));
    }
}

#[test]
fn a_modelslim_checkpoint_on_vllm_is_refused_as_plan_refuses_it() {
    // Issue 21.2, with the plan change of the same issue: `ckptpilot plan --target vllm` reports an
    // error for a ModelSlim checkpoint (vLLM on GPUs has no `ascend` quantization); stub inherits
    // it by consulting plan. Passes once plan says so.
    let tmp = tempfile::tempdir().unwrap();
    let m = fixture("modelslim-llama-w8a8-dynamic");
    let plan = run(&["plan", m.to_str().unwrap(), "--target", "vllm", "--json"]);
    assert_eq!(plan.code, 1, "plan refuses a ModelSlim checkpoint on vllm: {}", plan.stdout);
    let out = tmp.path().join("kit");
    let r = run(&["stub", m.to_str().unwrap(), "--out", out.to_str().unwrap(), "--target", "vllm"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("--target vllm-ascend"), "the way forward: {}", r.stderr);
    assert!(!out.exists());
}

#[test]
fn mtp_is_not_offered_where_fp8_is_dequantized_at_load() {
    // Issue 21.3: the vLLM-Ascend fp8 kit marked MTP applicable, but the load-time dequantization
    // wraps only the main model's load_weights; vLLM builds the MTP draft model separately and it
    // would get raw fp8 weights and scales with quantization_config null.
    let (_tmp, out) = stub("deepseek-fp8", &["--target", "vllm-ascend"]);
    let f: Value = serde_json::from_str(&read(&out.join("validation/features.json"))).unwrap();
    let mtp = f["features"].as_array().unwrap().iter().find(|x| x["feature"] == "mtp").unwrap().clone();
    assert_eq!(mtp["status"], "not-applicable", "{mtp}");
    assert!(mtp["reason"].as_str().unwrap().contains("draft model"), "{mtp}");
    for s in ["serve_stage_a.sh", "serve_stage_b.sh"] {
        let text = read(&out.join("validation").join(s));
        assert!(!text.contains("mtp) ARGS+="), "{s}: no MTP variant");
        assert!(text.contains("#   mtp: not-applicable (fp8 is dequantized at load"), "{s}");
        let usage = text.lines().find(|l| l.starts_with("# Usage:")).unwrap();
        assert!(!usage.contains("mtp"), "{usage}");
    }
    let zh = read(&out.join("delivery/report.zh.md"));
    let row = zh.lines().find(|l| l.starts_with("| MTP 投机解码")).unwrap();
    assert!(row.contains("| 不适用 |") && row.contains("DeepSeekMTP"), "{row}");
    // Without load-time dequantization MTP stays applicable: the bf16 model, and fp8 on GPUs.
    let (_tmp, out) = stub("deepseek-v3-mla", &["--target", "vllm-ascend", "--tp", "2"]);
    assert!(read(&out.join("validation/serve_stage_b.sh")).contains("mtp) ARGS+=(--speculative-config"));
    let (_tmp, out) = stub("deepseek-fp8", &["--target", "vllm", "--allow-infeasible"]);
    assert!(read(&out.join("validation/serve_stage_b.sh")).contains("mtp) ARGS+=(--speculative-config"));
}

#[test]
fn no_ep_variant_where_the_ep_size_is_one() {
    // Issue 21.4: an `ep` variant was offered at TP 1, where EP has size 1.
    let (_tmp, out) = stub("qwen3-moe", &["--tp", "1"]);
    let f: Value = serde_json::from_str(&read(&out.join("validation/features.json"))).unwrap();
    let ep = f["features"].as_array().unwrap().iter().find(|x| x["feature"] == "ep").unwrap().clone();
    assert_eq!(ep["status"], "not-applicable", "{ep}");
    assert!(ep["reason"].as_str().unwrap().contains("EP size is TP × DP = 1"), "{ep}");
    for s in ["serve_stage_a.sh", "serve_stage_b.sh"] {
        let text = read(&out.join("validation").join(s));
        assert!(!text.contains("ep) ARGS+=") && !text.contains("--enable-expert-parallel\""), "{s}");
        let call = serve(&out.join("validation").join(s), "default", &[]);
        assert!(!call.argv.contains(&"--enable-expert-parallel".to_string()), "{:?}", call.argv);
    }
    let ws = tempfile::tempdir().unwrap();
    let r = Command::new("bash")
        .arg(out.join("validation/serve_stage_b.sh"))
        .arg("ep")
        .env("WORKSPACE", ws.path())
        .output()
        .unwrap();
    assert_eq!(r.status.code(), Some(2), "`ep` is an unknown variant at TP 1");
    // At TP 2 the scripts run with EP (EP size 2): applicable, verified by the stages themselves.
    let (_tmp, out) = stub("qwen3-moe", &["--tp", "2"]);
    let f: Value = serde_json::from_str(&read(&out.join("validation/features.json"))).unwrap();
    let ep = f["features"].as_array().unwrap().iter().find(|x| x["feature"] == "ep").unwrap().clone();
    assert_eq!(ep["status"], "applicable", "{ep}");
    let call = serve(&out.join("validation/serve_stage_b.sh"), "default", &[]);
    assert_eq!(call.argv.iter().filter(|a| *a == "--enable-expert-parallel").count(), 1, "{:?}", call.argv);
}

#[test]
fn workspace_and_model_are_environment_overridable() {
    // Issue 21.5: `/workspace` and `/models/<dir>` were hard-coded in the scripts.
    let (_tmp, out) = stub("qwen3-moe", &["--name", "MyMoe"]);
    let b = out.join("validation/serve_stage_b.sh");
    let text = read(&b);
    assert!(text.contains("WORKSPACE=\"${WORKSPACE:-/workspace}\"\n"), "{text}");
    assert!(text.contains("MODEL=\"${MODEL:-/models/MyMoe}\"\n"), "{text}");
    assert!(!text.contains("cd /workspace"), "{text}");
    assert!(text.contains("# Environment: WORKSPACE (default /workspace)"), "documented: {text}");
    let ws = tempfile::tempdir().unwrap();
    let call = serve(&b, "default", &[("WORKSPACE", ws.path().to_str().unwrap()), ("MODEL", "/data/w")]);
    assert_eq!(Path::new(&call.cwd).canonicalize().unwrap(), ws.path().canonicalize().unwrap());
    assert_eq!(&call.argv[..2], ["serve", "/data/w"]);
    assert_eq!(call.all("--port"), ["8000"]);
    let call = serve(&b, "default", &[("PORT", "9001")]);
    assert_eq!(call.argv[1], "/models/MyMoe");
    assert_eq!(call.all("--port"), ["9001"]);
    // Documented in the report and the tutorial.
    let en = read(&out.join("delivery/report.en.md"));
    assert!(en.contains("`WORKSPACE` (default `/workspace`") && en.contains("`MODEL` (default `/models/MyMoe`)"));
    let t = read(&out.join("delivery/docs/source/tutorials/models/MyMoe.md"));
    assert!(t.contains("(`WORKSPACE`)") && t.contains("`MODEL`"), "{t}");
}

#[test]
fn stub_prints_the_next_steps_in_the_kits_language() {
    // Issue 21.6: stub printed a file list and no next step.
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("kit");
    let m = fixture("qwen3-moe");
    let r = run(&["stub", m.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let abs = out.canonicalize().unwrap();
    let model = m.canonicalize().unwrap();
    let steps = r.stdout.split("\nNext steps").nth(1).unwrap_or_else(|| panic!("{}", r.stdout));
    let want = [
        format!("pip install -e {}", abs.display()),
        format!("MODEL={} bash {}", model.display(), abs.join("validation/serve_stage_a.sh").display()),
        format!("python3 {} --stage A", abs.join("validation/smoke.py").display()),
        format!("MODEL={} bash {}", model.display(), abs.join("validation/serve_stage_b.sh").display()),
        format!("python3 {} --stage B", abs.join("validation/smoke.py").display()),
    ];
    let mut at = 0;
    for w in &want {
        let i = steps[at..].find(w.as_str()).unwrap_or_else(|| panic!("{w:?} (in order) in:\n{steps}"));
        at += i + w.len();
    }
    // The file list is still there, before them.
    assert!(r.stdout.lines().next().unwrap().starts_with(out.to_str().unwrap()));
    // Chinese on vllm-ascend; the in-tree layout points to REGISTRY.md.
    let out = tmp.path().join("kit-zh");
    let r = run(&[
        "stub",
        m.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--target",
        "vllm-ascend",
        "--layout",
        "in-tree",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("下一步") && r.stdout.contains("阶段 A") && r.stdout.contains("阶段 B"), "{}", r.stdout);
    assert!(r.stdout.contains(&out.canonicalize().unwrap().join("REGISTRY.md").display().to_string()), "{}", r.stdout);
    assert!(!r.stdout.contains("pip install"), "{}", r.stdout);
}

#[test]
fn the_language_follows_the_target_unless_given() {
    // Issue 21.7: the report was Chinese by default even for --target vllm.
    for (args, lang) in [
        (vec!["--target", "vllm"], "en"),
        (vec!["--target", "vllm-ascend"], "zh"),
        (vec!["--target", "vllm", "--lang", "zh"], "zh"),
        (vec!["--target", "vllm-ascend", "--lang", "en"], "en"),
    ] {
        let (_tmp, out) = stub("llama", &args);
        let other = if lang == "en" { "zh" } else { "en" };
        assert!(out.join(format!("delivery/report.{lang}.md")).is_file(), "{args:?}");
        assert!(!out.join(format!("delivery/report.{other}.md")).exists(), "{args:?}");
        let readme = read(&out.join("README.md"));
        let chinese = readme.chars().any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c));
        assert_eq!(chinese, lang == "zh", "{args:?}: the plugin README in the kit's language:\n{readme}");
        assert!(readme.contains("pip install -e ."), "{args:?}: the install step outside the report");
    }
}

#[test]
fn the_kit_says_the_plugin_replaces_vllms_class_and_serves_under_a_distinct_name() {
    // Issue 21.8: the plugin replaced vLLM's class for every model of the architecture in the
    // environment, and the kit did not say so.
    let Some(py) = python() else { return };
    let (_tmp, out) = stub("llama", &[]);
    let arch = "LlamaForCausalLM";
    let alias = format!("{arch}Ckptpilot");
    let env = "LLAMA_VLLM_REPLACE_ARCHITECTURE";
    let readme = read(&out.join("README.md"));
    assert!(
        readme.contains(&format!(
            "every `{arch}` model served from this Python environment gets the adapter instead of vLLM's own class"
        )),
        "{readme}"
    );
    assert!(
        readme.contains(&format!("{env}=0 vllm serve MODEL --hf-overrides '{{\"architectures\": [\"{alias}\"]}}'")),
        "{readme}"
    );
    let report = read(&out.join("delivery/report.en.md"));
    assert!(report.contains(&format!("registers the adapter as `{arch}`, so every `{arch}` model")), "{report}");
    let f: Value = serde_json::from_str(&read(&out.join("validation/features.json"))).unwrap();
    assert_eq!(f["architecture_alias"], alias.as_str());
    // The `isolated` variant: the distinct name, the replacement switched off.
    let b = out.join("validation/serve_stage_b.sh");
    let call = serve(&b, "isolated", &[]);
    assert_eq!(call.all("--hf-overrides"), [format!("{{\"architectures\": [\"{alias}\"]}}")]);
    assert_eq!(call.env.get(env).and_then(Value::as_str), Some("0"));
    let call = serve(&b, "default", &[]);
    assert!(call.all("--hf-overrides").is_empty() && !call.env.contains_key(env));
    // register() with a stand-in vllm: both names by default, only the distinct one with env=0.
    let fake = tempfile::tempdir().unwrap();
    std::fs::create_dir(fake.path().join("vllm")).unwrap();
    std::fs::write(
        fake.path().join("vllm/__init__.py"),
        "class ModelRegistry:\n    calls = []\n\n    @classmethod\n    def register_model(cls, arch, target):\n        cls.calls.append([arch, target])\n",
    )
    .unwrap();
    let script = "import json, sys\nsys.path[:0] = sys.argv[1:3]\nimport llama_vllm, vllm\nllama_vllm.register()\nprint(json.dumps(vllm.ModelRegistry.calls))";
    let registered = |env_val: Option<&str>| -> Vec<String> {
        let mut c = Command::new(py);
        c.args(["-c", script]).arg(fake.path()).arg(&out).env_remove(env);
        if let Some(v) = env_val {
            c.env(env, v);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        let calls: Vec<(String, String)> = serde_json::from_slice(&o.stdout).unwrap();
        assert!(calls.iter().all(|(_, t)| t == "llama_vllm.llama:LlamaForCausalLM"));
        calls.into_iter().map(|(a, _)| a).collect()
    };
    assert_eq!(registered(None), [alias.clone(), arch.to_string()]);
    assert_eq!(registered(Some("0")), std::slice::from_ref(&alias));
    // The next steps say it too.
    let tmp = tempfile::tempdir().unwrap();
    let o2 = tmp.path().join("k");
    let r = run(&["stub", fixture("llama").to_str().unwrap(), "--out", o2.to_str().unwrap()]);
    assert!(
        r.stdout
            .contains(&format!("every {arch} model served from that environment gets it instead of vLLM's own class")),
        "{}",
        r.stdout
    );
    // In-tree: REGISTRY.md offers the distinct entry, and says what changing vLLM's entry does.
    let (_tmp, out) = stub("llama", &["--layout", "in-tree"]);
    let reg = read(&out.join("REGISTRY.md"));
    assert!(reg.contains(&format!("\"{alias}\": (\"llama_ckpt\", \"{arch}\"),")), "{reg}");
    assert!(reg.contains("This replaces vLLM's own class for every"), "{reg}");
    // An architecture vLLM has no class for: nothing replaced, nothing claimed, no variant.
    let c = copy_fixture("qwen3-dense");
    edit_config(&c.dir, |cfg| cfg["architectures"] = serde_json::json!(["BrandNewForCausalLM"]));
    let out = c.tmp.path().join("out");
    let r = run(&["stub", c.dir.to_str().unwrap(), "--out", out.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(!read(&out.join("validation/serve_stage_b.sh")).contains("isolated)"));
    assert!(!r.stdout.contains("instead of vLLM's own class"));
    let init = read(&files_with(&out, "py").into_iter().find(|p| p.ends_with("__init__.py")).unwrap());
    assert!(init.contains("has no class of its own for BrandNewForCausalLM") && !init.contains("Ckptpilot"), "{init}");
}

#[test]
fn no_raw_control_characters_reach_the_terminal_or_the_scripts() {
    // Issue 21.9: names from the checkpoint (here quant_method) may hold ESC, BEL, CR, newlines.
    let c = copy_fixture("llama");
    let evil = "x\u{1b}[31mred\u{7}\r\n touch PWNED #";
    edit_config(&c.dir, |cfg| cfg["quantization_config"] = serde_json::json!({"quant_method": evil}));
    let out = c.tmp.path().join("out");
    // vLLM-Ascend has no such method: refused, quoting it escaped.
    let r = run(&["stub", c.dir.to_str().unwrap(), "--out", out.to_str().unwrap(), "--target", "vllm-ascend"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    no_control("stderr", &r.stderr);
    assert!(r.stderr.contains("x\\u{1b}[31mred\\u{7}\\r / touch PWNED #"), "{}", r.stderr);
    // Written anyway: the scripts carry it only escaped (a newline would end the comment and run
    // `touch`), and running them does not run it.
    let r = run(&[
        "stub",
        c.dir.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
        "--target",
        "vllm-ascend",
        "--allow-infeasible",
    ]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    no_control("stdout", &r.stdout);
    no_control("stderr", &r.stderr);
    for s in ["serve_stage_a.sh", "serve_stage_b.sh"] {
        let p = out.join("validation").join(s);
        no_control(s, &read(&p));
        let call = serve(&p, "default", &[]);
        assert!(!Path::new(&call.cwd).join("PWNED").exists(), "{s}");
    }
    for p in files_with(&out, "md").into_iter().chain(files_with(&out, "json")) {
        no_control(&p.display().to_string(), &read(&p));
    }
}

#[test]
fn a_config_json_that_is_no_file_or_no_json_is_named_for_what_it_is() {
    // Issue 21.10: a config.json that is a FIFO, a directory or invalid JSON was "missing".
    type Make<'a> = &'a dyn Fn(&Path);
    let cases: [(&str, Make, &str); 5] = [
        (
            "fifo",
            &|p: &Path| {
                std::fs::remove_file(p).unwrap();
                let c = std::ffi::CString::new(p.to_str().unwrap()).unwrap();
                // SAFETY: mkfifo on a path we own.
                assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
            },
            "config.json is a FIFO (named pipe), not a regular file",
        ),
        (
            "dir",
            &|p: &Path| {
                std::fs::remove_file(p).unwrap();
                std::fs::create_dir(p).unwrap();
            },
            "config.json is a directory, not a regular file",
        ),
        (
            "json",
            &|p: &Path| std::fs::write(p, "{\n  \"a\": 1,\n  oops}").unwrap(),
            "key must be a string at line 3 column 3",
        ),
        ("array", &|p: &Path| std::fs::write(p, "[1, 2]").unwrap(), "config.json is not a JSON object"),
        ("missing", &|p: &Path| std::fs::remove_file(p).unwrap(), "no config.json in"),
    ];
    for (what, make, want) in cases {
        let c = copy_fixture("llama");
        make(&c.dir.join("config.json"));
        let out = c.tmp.path().join("out");
        let r = run(&["stub", c.dir.to_str().unwrap(), "--out", out.to_str().unwrap()]);
        assert_eq!(r.code, 3, "{what}: {}", r.stderr);
        assert!(r.stderr.contains(want), "{what}: {}", r.stderr);
        assert!(what == "missing" || !r.stderr.contains("missing"), "{what}: {}", r.stderr);
        assert!(!out.exists(), "{what}");
    }
}
