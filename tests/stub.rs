//! `ckptkit stub`: generated Python compiles, the pure mapping module reproduces the Rust remap
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
    let r = run(&args);
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
        let (_tmp, out) = stub(f, &["--tp", "2"]);
        for p in files_with(&out, "py") {
            let o = Command::new(py).args(["-m", "py_compile"]).arg(&p).output().unwrap();
            assert!(o.status.success(), "{}: {}", p.display(), String::from_utf8_lossy(&o.stderr));
        }
        let mapping =
            files_with(&out, "py").into_iter().find(|p| p.to_string_lossy().ends_with("_mapping.py")).unwrap();
        let rust = run(&["remap", fixture(f).to_str().unwrap(), "--json"]);
        let rust: Value = serde_json::from_str(&rust.stdout).unwrap();
        let names: Vec<&str> =
            rust["rows"].as_array().unwrap().iter().map(|r| r["checkpoint_name"].as_str().unwrap()).collect();
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
        let o = child.wait_with_output().unwrap();
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
    assert!(adapter.contains("class DeepseekFp8ForCausalLM(_Base):"));
    assert!(adapter.contains("\"fused_qkv_a_proj\": [\"q_a_proj\", \"kv_a_proj_with_mqa\"]"));
    assert!(adapter.contains("DEQUANTIZE_FP8 = True"), "fp8 on vllm-ascend dequantizes at load");
    assert!(adapter.contains("raise ValueError("), "unmapped names raise, once");
    assert!(pkg.join("fp8_dequant.py").exists());
    let init = std::fs::read_to_string(pkg.join("__init__.py")).unwrap();
    assert!(init.contains("ModelRegistry.register_model(\"DeepseekV3ForCausalLM\", \"deepseek_fp8_vllm.deepseek_fp8:DeepseekFp8ForCausalLM\")"));
    let toml = std::fs::read_to_string(out.join("pyproject.toml")).unwrap();
    assert!(toml.contains("[project.entry-points.\"vllm.general_plugins\"]"));
    assert!(toml.contains("deepseek_fp8_vllm = \"deepseek_fp8_vllm:register\""));
    // In-tree: the registry line instead of a package.
    let (_tmp2, out2) = stub("qwen3-moe", &["--layout", "in-tree", "--name", "MyQwenMoe"]);
    let reg = std::fs::read_to_string(out2.join("REGISTRY.md")).unwrap();
    assert!(reg.contains("\"Qwen3MoeForCausalLM\": (\"my_qwen_moe\", \"MyQwenMoeForCausalLM\"),"), "{reg}");
    assert!(!out2.join("pyproject.toml").exists());
    // On plain vLLM (fp8 hardware) nothing is dequantized.
    let (_tmp3, out3) = stub("deepseek-fp8", &["--target", "vllm"]);
    assert!(std::fs::read_to_string(out3.join("deepseek_fp8_vllm/deepseek_fp8.py"))
        .unwrap()
        .contains("DEQUANTIZE_FP8 = False"));
}

#[test]
fn unknown_architecture_gets_a_skeleton_with_todo_forward() {
    let c = copy_fixture("qwen3-dense");
    edit_config(&c.dir, |cfg| cfg["architectures"] = serde_json::json!(["BrandNewForCausalLM"]));
    let out = c.tmp.path().join("out");
    let r = run(&["stub", c.dir.to_str().unwrap(), "--out", out.to_str().unwrap(), "--name", "BrandNew"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let adapter = std::fs::read_to_string(out.join("brand_new_vllm/brand_new.py")).unwrap();
    assert!(adapter.contains("class BrandNewDecoderLayer(nn.Module):"));
    assert!(adapter.contains("self.self_attn.q_proj = ColumnParallelLinear(64, 64"));
    assert!(adapter.contains("self.self_attn.o_proj = RowParallelLinear(64, 64"));
    assert!(adapter.contains("self.self_attn.q_norm = RMSNorm(16)"));
    assert!(adapter.contains("self.model.embed_tokens = VocabParallelEmbedding(512, 64)"));
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
    assert!(a.contains("cd /workspace"));
    assert!(a.contains("--tensor-parallel-size 2 --max-model-len 131072 --max-num-seqs 16 --port \"$PORT\" --enable-expert-parallel --load-format dummy"));
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
    let zh = std::fs::read_to_string(out.join("delivery/report.zh.md")).unwrap();
    assert!(zh.contains("特性矩阵") && zh.contains("运行手册") && zh.contains("Dummy 与真实权重验证证据"));
    let (_tmp2, out2) = stub("qwen3-moe", &["--lang", "en"]);
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
