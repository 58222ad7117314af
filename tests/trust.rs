//! Trust, round 2: hostile names never reach a terminal raw, one lock per output directory for
//! every command that writes there, bounded threads, interrupts that clean up, and messages that
//! state what is true. Each test failed on the code before the fix.

mod common;
use common::*;
use serde_json::Value;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// No control character but the newline reaches a stream, and every line holds one record.
fn assert_no_raw_controls(what: &str, text: &str) {
    for (i, line) in text.lines().enumerate() {
        assert!(
            !line.chars().any(|c| c.is_control() && c != '\t'),
            "{what}: line {i} carries a raw control character: {line:?}"
        );
    }
    assert!(!text.contains('\r'), "{what}: a carriage return");
}

const HOSTILE: &str = "\u{1b}]0;PWNED\u{7}\u{1b}[2J";

#[test]
fn hostile_names_are_escaped_in_every_human_output() {
    let c = copy_fixture("llama");
    let victim = all_tensor_names(&c.dir).into_iter().find(|n| n.ends_with("mlp.down_proj.weight")).unwrap();
    let hostile_name = format!("model.layers.0.{HOSTILE}\r\nfake line.weight");
    rename_tensors(&c.dir, |n| if n == victim { hostile_name.clone() } else { n.to_string() });
    edit_config(&c.dir, |v| {
        v["architectures"] = serde_json::json!([format!("Llama{HOSTILE}ForCausalLM")]);
        v["model_type"] = serde_json::json!(format!("llama\u{9b}31m\n"));
    });
    let dir = c.dir.to_str().unwrap();
    for args in [
        vec!["audit", dir],
        vec!["remap", dir],
        vec!["remap", dir, "--csv"],
        vec!["remap", dir, "--md"],
        vec!["plan", dir, "--tp", "1"],
        vec!["stub", dir, "--out", "/nonexistent/never-written"],
    ] {
        let r = run(&args);
        assert_no_raw_controls(&format!("{args:?} stdout"), &r.stdout);
        assert_no_raw_controls(&format!("{args:?} stderr"), &r.stderr);
    }
    // The name is still there, visibly escaped, on one line.
    let r = run(&["audit", dir]);
    assert!(r.stdout.contains("\\u{1b}]0;PWNED\\u{7}"), "{}", r.stdout);
    assert!(
        r.stdout.lines().any(|l| l.contains("PWNED") && l.contains("\\r\\nfake line")),
        "the record stays on one line: {}",
        r.stdout
    );
    // --json keeps the raw name (JSON escapes it).
    let (_, report) = audit_json(&c.dir);
    assert!(report.to_string().contains("\\u001b]0;PWNED"), "raw name in --json");
}

#[test]
fn threads_are_bounded_with_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let model = fixture("deepseek-fp8");
    for t in ["100000", "0"] {
        let r = run(&["dequant", model.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", t]);
        assert_eq!(r.code, 2, "--threads {t}: {}", r.stderr);
        assert!(r.stderr.contains("must be between 1 and"), "{}", r.stderr);
        assert!(!out.exists(), "nothing written for a refused --threads");
    }
    let r = run(&["bench", "dequant", "--shape", "256,256", "--threads", "100000", "--reps", "1"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("must be between 1 and"), "{}", r.stderr);
}

fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.contains(".ckptpilot-tmp."))
                .collect()
        })
        .unwrap_or_default()
}

/// A writing command held by the test hook (CKPTPILOT_FAULT_PAUSE_MS) just after it created its
/// temporary file, with stderr captured for [`wait_child`].
fn paused(args: &[&str], pause_ms: u64) -> std::process::Child {
    Command::new(bin())
        .args(args)
        .env("CKPTPILOT_FAULT_PAUSE_MS", pause_ms.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(t0.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn wait_child(mut child: std::process::Child) -> (Option<i32>, String) {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            let mut err = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
            return (st.code(), err);
        }
        if t0.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the child did not end");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn an_interrupt_removes_the_temporary_files_and_exits_128_plus_the_signal() {
    for (sig, code) in [(libc_sig::SIGINT, 130), (libc_sig::SIGTERM, 143)] {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let model = fixture("deepseek-fp8");
        let child = paused(&["dequant", model.to_str().unwrap(), "--out", out.to_str().unwrap()], 20000);
        wait_for(Duration::from_secs(30), "the temporary shard", || !temp_files(&out).is_empty());
        let pid = child.id() as i32;
        let st = Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status().unwrap();
        assert!(st.success());
        let (status, err) = wait_child(child);
        assert_eq!(status, Some(code), "signal {sig}: {err}");
        assert!(err.contains("interrupted"), "{err}");
        assert_eq!(temp_files(&out), Vec::<String>::new(), "signal {sig}: temporary files left behind");
    }
}

/// Signal numbers (Linux) without a libc dependency in the tests.
mod libc_sig {
    pub const SIGINT: i32 = 2;
    pub const SIGTERM: i32 = 15;
}

#[test]
fn one_lock_per_output_directory_across_commands() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let quantize_in = fixture("llama");
    let dequant_in = fixture("deepseek-fp8");
    let first = paused(
        &["quantize", quantize_in.to_str().unwrap(), "--to", "w8a8-dynamic", "--out", out.to_str().unwrap()],
        3000,
    );
    let pid = first.id();
    wait_for(Duration::from_secs(30), "quantize's temporary file", || !temp_files(&out).is_empty());
    for extra in [&["--force"][..], &[][..]] {
        let mut args = vec!["dequant", dequant_in.to_str().unwrap(), "--out", out.to_str().unwrap()];
        args.extend_from_slice(extra);
        let r = run(&args);
        assert_eq!(r.code, 3, "dequant {extra:?} while quantize writes: {}", r.stderr);
        assert!(r.stderr.contains(&format!("PID {pid}")), "names the holder: {}", r.stderr);
        assert!(r.stderr.contains("ckptpilot quantize"), "names the command: {}", r.stderr);
        assert!(!r.stderr.contains("No such file"), "{}", r.stderr);
    }
    // dequant's files are model-*.safetensors; quantize writes quant_model_weights*: none of the
    // second command's files (final or temporary) appeared.
    let names: Vec<String> =
        std::fs::read_dir(&out).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(!names.iter().any(|n| n.contains("model-0000")), "the second command wrote: {names:?}");
    let (code, err) = wait_child(first);
    assert_eq!(code, Some(0), "the first run finishes whole: {err}");
    // Released: the lock file is left empty and the directory is the first run's.
    assert_eq!(std::fs::read(out.join(".ckptpilot-dir.lock")).unwrap(), b"");
}

#[test]
fn config_nonsense_is_a_config_error_in_every_command() {
    for (key, value, says) in [
        ("hidden_size", serde_json::json!("64"), "hidden_size is \"64\" (a string)"),
        ("num_attention_heads", serde_json::json!(0), "num_attention_heads is 0"),
    ] {
        let c = copy_fixture("llama");
        edit_config(&c.dir, |v| v[key] = value.clone());
        let dir = c.dir.to_str().unwrap();
        let (code, report) = audit_json(&c.dir);
        assert_eq!(code, 1, "{key}");
        let f = expect(&report, "config-invalid", "error");
        assert!(f["message"].as_str().unwrap().contains(says), "{f}");
        let p = run(&["plan", dir, "--tp", "1"]);
        assert_eq!(p.code, 1, "plan {key}: {}", p.stdout);
        assert!(p.stdout.contains(says), "{}", p.stdout);
        assert!(!p.stdout.contains("lacks"), "not reported as missing: {}", p.stdout);
    }
}

#[test]
fn a_truncated_shard_is_reported_with_its_real_length() {
    let c = copy_fixture("deepseek-fp8");
    let out = c.tmp.path().join("out");
    let child = paused(&["dequant", c.dir.to_str().unwrap(), "--out", out.to_str().unwrap()], 1500);
    wait_for(Duration::from_secs(30), "the temporary shard", || !temp_files(&out).is_empty());
    let shard = c.dir.join("model-00001-of-00004.safetensors");
    let len = std::fs::metadata(&shard).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&shard).unwrap().set_len(len / 2).unwrap();
    let (code, err) = wait_child(child);
    assert_eq!(code, Some(3), "{err}");
    // Whichever read notices first (the size check or a short read), the length it names is the
    // file's real one, not where a read stopped.
    assert!(err.contains(&format!(" {} bytes", len / 2)), "{err}");
    assert!(!err.contains("ends at byte"), "{err}");
}

/// One answer across commands: a ModelSlim checkpoint on vLLM for GPUs fails as vLLM 0.33 fails
/// (`ascend` is registered only by the vLLM-Ascend plugin), in audit and plan alike; an fp8
/// checkpoint on vLLM-Ascend is refused by audit as plan refuses it, and both name the load-time
/// dequantization `stub` writes.
#[test]
fn audit_and_plan_agree_on_what_the_target_serves() {
    let ms = fixture("modelslim-llama-w8a8-dynamic");
    let (code, v) = audit_json_for(&ms, "vllm");
    assert_eq!(code, 1);
    let f = expect(&v, "target-unsupported", "error");
    assert!(f["message"]
        .as_str()
        .unwrap()
        .contains("ValueError: Unknown quantization method: ascend. Must be one of ["));
    let p = run(&["plan", ms.to_str().unwrap(), "--tp", "1"]);
    assert_eq!(p.code, 1, "{}", p.stdout);
    assert!(p.stdout.contains("Unknown quantization method: ascend"), "{}", p.stdout);
    let (code, v) = audit_json_for(&ms, "vllm-ascend");
    assert_eq!((code, errors(&v)), (0, 0), "{:#}", v["findings"]);

    let fp8 = fixture("deepseek-fp8");
    let (code, v) = audit_json_for(&fp8, "vllm-ascend");
    assert_eq!(code, 1);
    let f = expect(&v, "target-unsupported", "error");
    assert!(f["message"].as_str().unwrap().contains("AscendFp8Config"), "{f}");
    assert!(f["hint"].as_str().unwrap().contains("ckptpilot stub MODEL --target vllm-ascend"), "{f}");
    let p = run(&["plan", fp8.to_str().unwrap(), "--tp", "1", "--target", "vllm-ascend"]);
    assert_eq!(p.code, 1, "{}", p.stdout);
    assert!(p.stdout.contains("dequantizes fp8 to bf16 at load time"), "{}", p.stdout);
    let (code, _) = audit_json_for(&fp8, "vllm");
    assert_eq!(code, 0, "fp8 on H100 is native");
}

/// Overlapping tensors: safetensors refuses to open the shard, so every command does.
#[test]
fn a_shard_safetensors_refuses_is_refused_by_every_command() {
    let c = copy_fixture("llama");
    let shard = shard_of(&c.dir, "model.embed_tokens.weight");
    edit_header(&shard, |h| {
        let first = h["model.embed_tokens.weight"]["data_offsets"].clone();
        let other = h.keys().find(|k| *k != "model.embed_tokens.weight" && *k != "__metadata__").unwrap().clone();
        let len = {
            let o = &h[&other]["data_offsets"];
            o[1].as_u64().unwrap() - o[0].as_u64().unwrap()
        };
        let start = first[0].as_u64().unwrap();
        h[&other]["data_offsets"] = serde_json::json!([start, start + len]);
    });
    let dir = c.dir.to_str().unwrap();
    let (code, v) = audit_json(&c.dir);
    assert_eq!(code, 1);
    assert!(!findings_with(&v, "tensor-overlap").is_empty(), "{:#}", v["findings"]);
    let out = c.tmp.path().join("kit");
    for args in [vec!["plan", dir], vec!["remap", dir], vec!["stub", dir, "--out", out.to_str().unwrap()]] {
        let r = run(&args);
        assert_eq!(r.code, 3, "{args:?}: {}{}", r.stdout, r.stderr);
        assert!(r.stderr.contains("safetensors refuses to open it: tensor-overlap"), "{args:?}: {}", r.stderr);
    }
    assert!(!out.exists(), "no kit for a checkpoint that cannot be opened");
}

#[test]
fn no_config_is_refused_alike_and_says_what_is_wrong() {
    let c = copy_fixture("llama");
    let cfg = c.dir.join("config.json");
    let dir = c.dir.to_str().unwrap();
    let out = c.tmp.path().join("kit");
    for (setup, says) in [(0, "no config.json in"), (1, "not a JSON object"), (2, "is a directory, not a regular file")]
    {
        let _ = std::fs::remove_file(&cfg);
        let _ = std::fs::remove_dir(&cfg);
        match setup {
            1 => std::fs::write(&cfg, "[1, 2]").unwrap(),
            2 => std::fs::create_dir(&cfg).unwrap(),
            _ => {}
        }
        for args in [vec!["remap", dir], vec!["stub", dir, "--out", out.to_str().unwrap()]] {
            let r = run(&args);
            assert_eq!(r.code, 3, "{args:?}: {}{}", r.stdout, r.stderr);
            assert!(r.stderr.contains("no usable config.json"), "{args:?}: {}", r.stderr);
            assert!(r.stderr.contains(says), "{args:?} ({says}): {}", r.stderr);
            assert!(!r.stderr.contains("is missing") || setup == 0, "{args:?}: {}", r.stderr);
        }
    }
}

#[test]
fn a_mistyped_local_path_is_named_not_looked_up_on_the_hub() {
    let r = run_env(&["audit", "fixtures/lama"], &[("HF_ENDPOINT", "http://127.0.0.1:9")]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("fixtures/lama: no such file or directory"), "{}", r.stderr);
    assert!(!r.stderr.contains("127.0.0.1"), "no Hub request: {}", r.stderr);
}

#[test]
fn device_memory_needs_a_unit_and_ep_takes_a_separate_value() {
    let m = fixture("qwen3-moe");
    let r = run(&["plan", m.to_str().unwrap(), "--device-memory", "24"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("a size needs a unit"), "{}", r.stderr);
    let r = run(&["plan", m.to_str().unwrap(), "--device-memory", "24GiB", "--tp", "2", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let both = run(&["plan", m.to_str().unwrap(), "--ep", "both", "--tp", "2", "--json"]);
    assert_eq!(both.code, 0, "{}", both.stderr);
    let v: serde_json::Value = serde_json::from_str(&both.stdout).unwrap();
    let eps: Vec<bool> = v["configs"].as_array().unwrap().iter().map(|c| c["ep"].as_bool().unwrap()).collect();
    assert_eq!(eps, [false, true]);
    // `--ep MODEL` still reads MODEL.
    let r = run(&["plan", "--ep", m.to_str().unwrap(), "--tp", "2", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn pickle_only_weights_load_in_vllm_and_are_said_to_be_unchecked() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(fixture("llama").join("config.json"), tmp.path().join("config.json")).unwrap();
    std::fs::write(tmp.path().join("pytorch_model.bin"), b"PK\x03\x04 not really read").unwrap();
    let (code, v) = audit_json(tmp.path());
    assert_eq!(code, 0, "{:#}", v["findings"]);
    expect(&v, "pickle-weights-only", "warning");
    assert!(findings_with(&v, "no-weights").is_empty(), "vLLM falls back to *.bin: {:#}", v["findings"]);
    assert_eq!(errors(&v), 0, "no cascade of unfilled parameters: {:#}", v["findings"]);
}

#[test]
fn a_manifest_leaves_ckptpilot_own_files_out() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let model = fixture("deepseek-fp8");
    let args = ["dequant", model.to_str().unwrap(), "--out", out.to_str().unwrap()];
    assert_eq!(run(&args).code, 0);
    let manifest = tmp.path().join("m.json");
    assert_eq!(run(&["audit", out.to_str().unwrap(), "--checksum", manifest.to_str().unwrap()]).code, 0);
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    assert!(!m.to_string().contains(".ckptpilot-"), "own files hashed: {m}");
    // A rerun rewrites the state and the lock; the checkpoint is unchanged.
    assert_eq!(run(&args).code, 0);
    let r = run(&["verify", manifest.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stdout);
    assert!(!r.stdout.contains(".ckptpilot-"), "{}", r.stdout);
}

/// stub takes the same directory lock: it never writes into a directory a conversion is writing,
/// even with --force, and a conversion never enters a directory stub holds.
#[test]
fn stub_shares_the_directory_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let model = fixture("deepseek-fp8");
    let first = paused(&["dequant", model.to_str().unwrap(), "--out", out.to_str().unwrap()], 3000);
    let pid = first.id();
    wait_for(Duration::from_secs(30), "dequant's temporary file", || !temp_files(&out).is_empty());
    let llama = fixture("llama");
    let r = run(&["stub", llama.to_str().unwrap(), "--out", out.to_str().unwrap(), "--force"]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains(&format!("PID {pid}")) && r.stderr.contains("ckptpilot dequant"), "{}", r.stderr);
    assert!(!out.join(".ckptpilot-stub.json").exists(), "stub wrote nothing");
    let (code, err) = wait_child(first);
    assert_eq!(code, Some(0), "{err}");
    // A finished run's empty lock file does not make a new directory "not empty" for stub.
    let kit = tmp.path().join("kit");
    std::fs::create_dir(&kit).unwrap();
    std::fs::write(kit.join(".ckptpilot-dir.lock"), b"").unwrap();
    let r = run(&["stub", llama.to_str().unwrap(), "--out", kit.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

/// Every layout a fix names is one `plan` itself finds feasible, and a shorter context it suggests
/// does make that configuration feasible: checked by planning each suggestion.
#[test]
fn every_suggested_fix_is_feasible_when_planned() {
    let mut checked = 0;
    let cases: &[(&str, &[&str])] = &[
        ("qwen3-moe-fp8", &["--ep=both"]),
        ("qwen3-dense-fp8", &["--ep=both"]),
        ("gpt-oss", &["--ep=both"]),
        ("deepseek-fp8", &["--ep=both"]),
        ("llama", &["--device-memory", "300KiB", "--activation-reserve", "0GiB", "--max-model-len", "256"]),
    ];
    for (name, extra) in cases {
        let m = fixture(name);
        let mut args = vec!["plan", m.to_str().unwrap(), "--json"];
        args.extend_from_slice(extra);
        let r = run(&args);
        let v: Value = serde_json::from_str(&r.stdout).unwrap_or_else(|e| panic!("{name}: {e} {}", r.stderr));
        let passthrough: Vec<&str> = extra.iter().copied().filter(|a| !a.starts_with("--ep")).collect();
        for c in v["configs"].as_array().unwrap() {
            for k in c["checks"].as_array().unwrap().iter().filter(|k| k["status"] == "fail") {
                let fix = k["fix"].as_str().unwrap_or_default();
                assert!(!fix.contains("a smaller TP") || c["tp"] != 1, "{name}: {fix}");
                assert!(!fix.contains("--max-model-len 0"), "{name}: {fix}");
                for remedy in k["remedies"].as_array().into_iter().flatten() {
                    match remedy["kind"].as_str().unwrap() {
                        "layout" => {
                            for l in remedy["layouts"].as_array().unwrap() {
                                // "TP 4", "TP 2 with EP", "TP 8 and PP 2"
                                let l = l.as_str().unwrap();
                                let words: Vec<&str> = l.split_whitespace().collect();
                                let tp = words[1];
                                let pp = words.iter().position(|w| *w == "PP").map(|i| words[i + 1]);
                                let mut a = vec!["plan", m.to_str().unwrap(), "--json", "--tp", tp];
                                if l.contains("with EP") {
                                    a.push("--ep");
                                }
                                if let Some(pp) = pp {
                                    a.extend(["--pp", pp]);
                                }
                                a.extend(passthrough.iter().copied());
                                let p = run(&a);
                                let pv: Value = serde_json::from_str(&p.stdout).unwrap();
                                assert_eq!(pv["configs"][0]["feasible"], true, "{name}: suggested {l} is not feasible");
                                checked += 1;
                            }
                        }
                        "max-model-len" => {
                            let len = remedy["len"].as_u64().unwrap().to_string();
                            let mut a = vec!["plan", m.to_str().unwrap(), "--json", "--tp"];
                            let tp = c["tp"].to_string();
                            a.push(&tp);
                            a.extend(passthrough.iter().copied().filter(|x| *x != "256" && *x != "--max-model-len"));
                            a.extend(["--max-model-len", &len]);
                            if c["ep"] == true {
                                a.push("--ep");
                            }
                            let p = run(&a);
                            let pv: Value = serde_json::from_str(&p.stdout).unwrap();
                            assert_eq!(pv["configs"][0]["feasible"], true, "{name}: --max-model-len {len}");
                            checked += 1;
                        }
                        _ => {}
                    }
                }
            }
        }
    }
    assert!(checked >= 10, "only {checked} suggestions checked");
}
