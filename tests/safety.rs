//! Safe by construction: each case here lost data, crashed or hung before (issue "Safe by
//! construction"); each test names the case it pins down.

mod common;
use common::*;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn dequant_args<'a>(model: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut a = vec!["dequant", model, "--out", out];
    a.extend_from_slice(extra);
    a
}

fn clean_output() -> (tempfile::TempDir, BTreeMap<String, Vec<u8>>) {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("clean");
    let model = fixture("deepseek-fp8");
    let r = run(&dequant_args(model.to_str().unwrap(), out.to_str().unwrap(), &[]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let o = outputs(&out);
    (tmp, o)
}

/// Wait for a child with a bound: a hang fails the test instead of blocking CI.
fn wait_bounded(mut child: std::process::Child, limit: Duration) -> (i32, Option<i32>, String) {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            use std::os::unix::process::ExitStatusExt;
            let mut err = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return (st.code().unwrap_or(-1), st.signal(), err);
        }
        if t0.elapsed() > limit {
            let _ = child.kill();
            panic!("ckptpilot did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A pipe whose write end goes to the child's stdout: (read end, write end).
fn pipe(capacity: Option<i32>) -> (std::os::fd::OwnedFd, std::os::fd::OwnedFd) {
    use std::os::fd::FromRawFd;
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 fills two descriptors we then own.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    if let Some(c) = capacity {
        // SAFETY: fcntl on a descriptor we own.
        assert!(unsafe { libc::fcntl(fds[1], libc::F_SETPIPE_SZ, c) } >= c);
    }
    // SAFETY: fresh descriptors from pipe2, owned once each.
    unsafe { (std::os::fd::OwnedFd::from_raw_fd(fds[0]), std::os::fd::OwnedFd::from_raw_fd(fds[1])) }
}

/// `audit --json DIR` that must finish (a FIFO must not hang it) and find errors.
fn audit_bounded(dir: &Path) -> Value {
    let mut child = Command::new(bin())
        .args(["audit", "--json", dir.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = String::new();
    child.stdout.take().unwrap().read_to_string(&mut stdout).unwrap();
    let (code, _, err) = wait_bounded(child, Duration::from_secs(30));
    assert_eq!(code, 1, "{err}");
    serde_json::from_str(&stdout).unwrap()
}

// 1. A reader that goes away: `ckptpilot remap … --json | head -c1`, `ckptpilot audit … | true`.
#[test]
fn a_closed_stdout_ends_quietly() {
    let ds = fixture("deepseek-fp8");
    let ds = ds.to_str().unwrap();
    let next = fixture("qwen3-next");
    let next = next.to_str().unwrap();
    // Every output here is larger than the 4 KiB pipe below, so the reader closes mid-output.
    for args in [
        vec!["remap", ds, "--json", "--target", "vllm-ascend"],
        vec!["remap", next],
        vec!["audit", next],
        vec!["audit", ds, "--json"],
        vec!["plan", ds, "--json"],
        vec!["completions", "bash"],
    ] {
        // head -c1: read one byte, then close.
        let (r, w) = pipe(Some(4096));
        let child = Command::new(bin()).args(&args).stdout(Stdio::from(w)).stderr(Stdio::piped()).spawn().unwrap();
        let mut reader = std::fs::File::from(r);
        let mut one = [0u8; 1];
        reader.read_exact(&mut one).unwrap();
        drop(reader);
        let (code, signal, err) = wait_bounded(child, Duration::from_secs(60));
        assert!(err.is_empty(), "{args:?}: {err}");
        assert!(code == 0 || code == 1, "{args:?}: exit {code}");
        assert_eq!(signal, None, "{args:?}");
    }
    for args in [vec!["audit", ds], vec!["man"], vec!["plan", ds], vec!["remap", next, "--csv"]] {
        // | true: closed before the first write.
        let (r, w) = pipe(None);
        drop(r);
        let child = Command::new(bin()).args(&args).stdout(Stdio::from(w)).stderr(Stdio::piped()).spawn().unwrap();
        let (code, signal, err) = wait_bounded(child, Duration::from_secs(60));
        assert!(err.is_empty(), "{args:?}: {err}");
        assert!(code == 0 || code == 1, "{args:?}: exit {code}");
        assert_eq!(signal, None);
    }
    // stderr closed too (`2>&1 | true`): notes on stderr do not panic either.
    let tmp = tempfile::tempdir().unwrap();
    let (r, w) = pipe(None);
    drop(r);
    let w2 = w.try_clone().unwrap();
    let st = Command::new(bin())
        .args(["man", "--out", tmp.path().to_str().unwrap()])
        .stdout(Stdio::from(w))
        .stderr(Stdio::from(w2))
        .status()
        .unwrap();
    assert_eq!(st.code(), Some(0));
    assert!(tmp.path().join("ckptpilot-verify.1").exists(), "every page written");
}

// 2. `dequant --out D` where D holds something else: refused, nothing touched; --force writes.
#[test]
fn dequant_refuses_an_output_directory_it_does_not_own() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("other");
    std::fs::create_dir(&out).unwrap();
    std::fs::write(out.join("config.json"), b"{\"mine\": true}").unwrap();
    std::fs::write(out.join("model-00001-of-00004.safetensors"), b"precious").unwrap();
    let model = fixture("deepseek-fp8");
    let r = run(&dequant_args(model.to_str().unwrap(), out.to_str().unwrap(), &[]));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("is not empty") && r.stderr.contains("config.json"), "{}", r.stderr);
    assert!(r.stderr.contains("help: ") && r.stderr.contains("--force"), "{}", r.stderr);
    assert_eq!(std::fs::read(out.join("config.json")).unwrap(), b"{\"mine\": true}");
    assert_eq!(std::fs::read(out.join("model-00001-of-00004.safetensors")).unwrap(), b"precious");
    assert_eq!(std::fs::read_dir(&out).unwrap().count(), 2, "a refusal writes nothing, not even a lock file");

    let r = run(&dequant_args(model.to_str().unwrap(), out.to_str().unwrap(), &["--force"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let (_t, clean) = clean_output();
    assert_eq!(outputs(&out), clean);

    // An earlier run of another conversion (f32 instead of bf16) is refused too.
    let r = run(&dequant_args(model.to_str().unwrap(), out.to_str().unwrap(), &["--dtype", "f32"]));
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("holds another conversion"), "{}", r.stderr);
}

// 3. Two runs with the same --out: the second exits at once naming the first's PID.
#[test]
fn a_second_writer_is_refused_while_the_first_runs() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let model = fixture("deepseek-fp8");
    let first = Command::new(bin())
        .args(dequant_args(model.to_str().unwrap(), out.to_str().unwrap(), &[]))
        .env("CKPTPILOT_FAULT_PAUSE_MS", "1000")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = first.id();
    // Wait until the first run holds the lock (it writes its state file right after).
    let t0 = Instant::now();
    while !out.join(".ckptpilot-dequant.json").exists() {
        assert!(t0.elapsed() < Duration::from_secs(30), "the first run never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = run(&dequant_args(model.to_str().unwrap(), out.to_str().unwrap(), &[]));
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains(&format!("PID {pid}")), "{}", r.stderr);
    let (code, _, err) = wait_bounded(first, Duration::from_secs(120));
    assert_eq!(code, 0, "{err}");
    let (_t, clean) = clean_output();
    assert_eq!(outputs(&out), clean, "the first run's output is whole");
}

// 4. A symlink planted where ckptpilot writes is never followed.
#[test]
fn planted_symlinks_are_replaced_not_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"do not touch").unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    for name in ["model-00001-of-00004.safetensors", "model-00001-of-00004.safetensors.tmp-ckptpilot", "config.json"] {
        std::os::unix::fs::symlink(&victim, out.join(name)).unwrap();
    }
    let model = fixture("deepseek-fp8");
    let r = run(&dequant_args(model.to_str().unwrap(), out.to_str().unwrap(), &["--force"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(std::fs::read(&victim).unwrap(), b"do not touch");
    for name in ["model-00001-of-00004.safetensors", "config.json"] {
        let md = std::fs::symlink_metadata(out.join(name)).unwrap();
        assert!(md.file_type().is_file(), "{name} is a regular file, not a link");
    }
    // The same on a resumed run: a finished shard swapped for a link is rewritten, not followed.
    std::fs::remove_file(out.join("model-00002-of-00004.safetensors")).unwrap();
    std::os::unix::fs::symlink(&victim, out.join("model-00002-of-00004.safetensors")).unwrap();
    let r = run(&dequant_args(model.to_str().unwrap(), out.to_str().unwrap(), &["--json"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(s["shards_written"], 1);
    assert_eq!(std::fs::read(&victim).unwrap(), b"do not touch");
    let mut got = outputs(&out);
    got.remove("model-00001-of-00004.safetensors.tmp-ckptpilot");
    let (_t, clean) = clean_output();
    assert_eq!(got, clean);
}

/// A link planted at the lock file is not followed (nor written through): the run stops.
#[test]
fn a_planted_lock_link_stops_the_run() {
    let tmp = tempfile::tempdir().unwrap();
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"do not touch").unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::os::unix::fs::symlink(&victim, out.join(".ckptpilot-dir.lock")).unwrap();
    let model = fixture("deepseek-fp8");
    let r = run(&dequant_args(model.to_str().unwrap(), out.to_str().unwrap(), &[]));
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains(".ckptpilot-dir.lock"), "{}", r.stderr);
    assert_eq!(std::fs::read(&victim).unwrap(), b"do not touch");
}

// 6. An input shard truncated while dequant runs: a clear error naming it, never SIGBUS.
#[test]
fn an_input_truncated_during_dequant_is_an_error_not_a_sigbus() {
    let c = copy_fixture("deepseek-fp8");
    let out = c.tmp.path().join("out");
    let child = Command::new(bin())
        .args(dequant_args(c.dir.to_str().unwrap(), out.to_str().unwrap(), &[]))
        .env("CKPTPILOT_FAULT_PAUSE_MS", "1500")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The hook pauses after the shard is opened and checked, before its data is read: wait for the
    // temporary output file (made just before), then truncate under the reads.
    let t0 = Instant::now();
    let tmp_exists = || {
        out.exists()
            && std::fs::read_dir(&out)
                .unwrap()
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains(".ckptpilot-tmp."))
    };
    while !tmp_exists() {
        assert!(t0.elapsed() < Duration::from_secs(30), "the run never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    std::thread::sleep(Duration::from_millis(200));
    let shard = c.dir.join("model-00001-of-00004.safetensors");
    let len = std::fs::metadata(&shard).unwrap().len();
    std::fs::OpenOptions::new().write(true).open(&shard).unwrap().set_len(len / 2).unwrap();
    let (code, signal, err) = wait_bounded(child, Duration::from_secs(60));
    assert_eq!(signal, None, "killed by a signal: {err}");
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("model-00001-of-00004.safetensors"), "{err}");
    assert!(err.contains("was truncated while being read"), "{err}");
    let left: Vec<String> =
        std::fs::read_dir(&out).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    assert!(!left.iter().any(|f| f.ends_with(".safetensors")), "no shard from a changing input: {left:?}");
    assert!(!left.iter().any(|f| f.contains(".ckptpilot-tmp.")), "the temporary file is removed: {left:?}");
}

// 7. A FIFO, a device or a directory where a file should be: a named finding, no hang, no OOM.
#[test]
fn special_files_are_named_not_read() {
    fn mkfifo(p: &Path) {
        let st = Command::new("mkfifo").arg(p).status().unwrap();
        assert!(st.success());
    }
    let c = copy_fixture("qwen3-dense");
    std::fs::remove_file(c.dir.join("config.json")).unwrap();
    mkfifo(&c.dir.join("config.json"));
    std::os::unix::fs::symlink("/dev/zero", c.dir.join("hf_quant_config.json")).unwrap();
    let v = audit_bounded(&c.dir);
    let odd: Vec<&str> = findings_with(&v, "not-a-regular-file").iter().map(|f| f["file"].as_str().unwrap()).collect();
    assert!(odd.contains(&"config.json") && odd.contains(&"hf_quant_config.json"), "{odd:?}");
    assert!(findings_with(&v, "not-a-regular-file")[0]["message"].as_str().unwrap().contains("FIFO"));

    // A shard that is a FIFO is named as such, not "no *.safetensors".
    let c = copy_fixture("gemma3-tied");
    let shard = std::fs::read_dir(&c.dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|x| x == "safetensors"))
        .unwrap();
    std::fs::remove_file(&shard).unwrap();
    mkfifo(&shard);
    let v = audit_bounded(&c.dir);
    let f = expect(&v, "not-a-regular-file", "error");
    assert_eq!(f["file"], shard.file_name().unwrap().to_str().unwrap());
    assert!(findings_with(&v, "no-weights").is_empty());
}

// 10. `stub --out` into an existing directory never overwrites a person's edits.
#[test]
fn stub_keeps_edited_files() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let model = fixture("llama");
    let args = ["stub", model.to_str().unwrap(), "--out", out.to_str().unwrap(), "--target", "vllm"];
    let r = run(&args);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let adapter = out.join("llama_vllm/llama.py");
    let generated = std::fs::read_to_string(&adapter).unwrap();
    let smoke = out.join("validation/smoke.py");
    let smoke_text = std::fs::read(&smoke).unwrap();

    // Without --force a non-empty directory is refused, nothing written.
    std::fs::write(&adapter, "# my edits\n").unwrap();
    let r = run(&args);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("--force"), "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(&adapter).unwrap(), "# my edits\n");

    // With --force the edited file is kept and the new one written beside it; untouched files
    // are rewritten in place.
    let mut a = args.to_vec();
    a.push("--force");
    let r = run(&a);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(&adapter).unwrap(), "# my edits\n");
    assert_eq!(std::fs::read_to_string(out.join("llama_vllm/llama.py.new")).unwrap(), generated);
    assert!(r.stderr.contains("llama.py.new"), "{}", r.stderr);
    assert_eq!(std::fs::read(&smoke).unwrap(), smoke_text);
    assert!(!out.join("validation/smoke.py.new").exists());
}

// 11. The manifest covers every file; verify works from any directory.
#[test]
fn manifest_covers_every_file_and_verifies_from_anywhere() {
    let c = copy_fixture("qwen3-dense");
    std::fs::write(c.dir.join("tokenizer.json"), b"{\"v\": 1}").unwrap();
    std::fs::create_dir(c.dir.join("sub")).unwrap();
    std::fs::write(c.dir.join("sub/notes.txt"), b"a").unwrap();
    let manifest = c.tmp.path().join("m.json");
    // Written from a relative path, in another working directory.
    let r = Command::new(bin())
        .current_dir(c.tmp.path())
        .args(["audit", "qwen3-dense", "--checksum", "m.json"])
        .output()
        .unwrap();
    assert!(r.status.code() == Some(0) || r.status.code() == Some(1), "{}", String::from_utf8_lossy(&r.stderr));
    std::fs::write(c.dir.join("tokenizer.json"), b"{\"v\": 2}").unwrap();
    std::fs::remove_file(c.dir.join("sub/notes.txt")).unwrap();
    std::fs::write(c.dir.join("extra.txt"), b"new").unwrap();
    let elsewhere = tempfile::tempdir().unwrap();
    let o = Command::new(bin())
        .current_dir(elsewhere.path())
        .args(["verify", manifest.to_str().unwrap(), "--json"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "{}", String::from_utf8_lossy(&o.stderr));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let status = |f: &str| {
        v["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["file"] == f)
            .map(|x| x["status"].as_str().unwrap().to_string())
    };
    assert_eq!(status("tokenizer.json").as_deref(), Some("changed"));
    assert_eq!(status("sub/notes.txt").as_deref(), Some("missing"));
    assert_eq!(status("extra.txt").as_deref(), Some("new"));
    assert_eq!(status("config.json").as_deref(), Some("ok"));
}

// 12 and the CLI: usage errors exit 2; those ckptpilot prints itself carry error: and help: lines.
#[test]
fn usage_errors_exit_2_with_help() {
    for args in [
        vec!["bench", "dequant", "--shape", "0,0"],
        vec!["bench", "dequant", "--tensor", "fixtures/deepseek-fp8"],
        vec!["plan", "fixtures/configs/qwen3-0.6b", "--device", "tpu"],
        vec!["remap", "fixtures/qwen3-dense", "--tp", "0"],
        vec!["dequant", "fixtures/deepseek-fp8", "--out", "/nonexistent/x", "--part", "1/18446744073709551615"],
    ] {
        let r = run(&args);
        assert_eq!(r.code, 2, "{args:?}: {}", r.stderr);
        assert!(r.stderr.starts_with("error: ") && r.stderr.contains("\nhelp: "), "{args:?}: {}", r.stderr);
        assert!(!r.stderr.contains("\x1b["), "no colour when piped: {:?}", r.stderr);
    }
    assert!(!Path::new("/nonexistent/x").exists());
    // clap's own parse errors: exit 2 and its error line.
    let r = run(&["plan", "fixtures/configs/qwen3-0.6b", "--max-model-len", "1.5K"]);
    assert_eq!(r.code, 2, "{}", r.stderr);
    assert!(r.stderr.contains("error:") && r.stderr.contains("decimals are only allowed"), "{}", r.stderr);
    // Errors ckptpilot prints itself always carry a help line.
    let r = run(&["audit", "/nonexistent/model"]);
    assert_eq!(r.code, 3);
    assert!(r.stderr.starts_with("error: ") && r.stderr.contains("\nhelp: "), "{}", r.stderr);
    let r = run(&["audit", "/nonexistent/model", "--color", "always"]);
    assert!(r.stderr.contains("\x1b[1;31merror\x1b[0m: "), "{:?}", r.stderr);
}

#[test]
fn vllm_flag_names_are_accepted() {
    let cfg = fixture("configs").join("qwen3-30b-a3b-fp8");
    let cfg = cfg.to_str().unwrap();
    let plan = |extra: &[&str]| -> Value {
        let mut a = vec!["plan", "--json"];
        a.extend_from_slice(extra);
        let r = run(&a);
        assert!(r.code == 0 || r.code == 1, "{extra:?}: {}", r.stderr);
        serde_json::from_str(&r.stdout).unwrap()
    };
    // `--ep MODEL` no longer takes MODEL as the EP mode.
    let v = plan(&["--ep", cfg, "--tp", "2"]);
    assert_eq!(v["configs"][0]["ep"], true);
    let v = plan(&[cfg, "-tp", "4", "-ep", "--max-model-len", "32k"]);
    assert_eq!(v["configs"][0]["tp"], 4);
    assert_eq!(v["configs"][0]["ep"], true);
    assert_eq!(v["max_model_len"], 32000);
    let v = plan(&[cfg, "--tensor-parallel-size", "2", "--enable-expert-parallel", "--max-model-len", "32K"]);
    assert_eq!(v["configs"][0]["tp"], 2);
    assert_eq!(v["max_model_len"], 32768);
    let v = plan(&[cfg, "--tp", "2", "-pp", "2", "--data-parallel-size", "2", "--ep=both"]);
    assert_eq!(v["configs"].as_array().unwrap().len(), 2);
    assert_eq!(v["configs"][0]["pp"], 2);
    assert_eq!(v["configs"][0]["dp"], 2);
}

#[test]
fn one_target_default_printed_everywhere() {
    let m = fixture("qwen3-dense");
    let m = m.to_str().unwrap();
    let r = run(&["audit", m]);
    assert!(r.stdout.lines().next().unwrap().contains("target vllm"), "{}", r.stdout);
    let r = run(&["remap", m]);
    assert!(r.stdout.lines().next().unwrap().contains("target vllm"), "{}", r.stdout);
    let r = run_env(&["audit", m, "--json"], &[("CKPTPILOT_TARGET", "vllm-ascend")]);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["tool"]["target"], "vllm-ascend");
    let r = run_env(&["plan", m, "--json"], &[("CKPTPILOT_TARGET", "vllm-ascend")]);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["target"], "vllm-ascend");
    let r = run(&["plan", m, "--json", "--target", "vllm-ascend"]);
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["target"], "vllm-ascend");
}

#[test]
fn completions_and_man_page() {
    for shell in ["bash", "zsh", "fish"] {
        let r = run(&["completions", shell]);
        assert_eq!(r.code, 0);
        assert!(r.stdout.contains("dequant") && r.stdout.contains("trust-existing"), "{shell}");
    }
    let r = run(&["man"]);
    assert_eq!(r.code, 0);
    assert!(
        r.stdout.starts_with(".ie") || r.stdout.contains(".TH ckptpilot"),
        "{}",
        &r.stdout[..200.min(r.stdout.len())]
    );
    let d = tempfile::tempdir().unwrap();
    let r = run(&["man", "--out", d.path().to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let page = std::fs::read_to_string(d.path().join("ckptpilot-dequant.1")).unwrap();
    assert!(page.contains("trust\\-existing"), "{page}");
}

/// A rerun does not overwrite a file someone edited in the output since ckptpilot wrote it: the new
/// version goes beside it as FILE.new, and the run says so.
#[test]
fn dequant_keeps_an_edited_output_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let model = fixture("deepseek-fp8");
    let m = model.to_str().unwrap();
    assert_eq!(run(&dequant_args(m, out.to_str().unwrap(), &[])).code, 0);
    let generated = std::fs::read_to_string(out.join("config.json")).unwrap();
    std::fs::write(out.join("config.json"), "{\"edited\": true}\n").unwrap();
    let r = run(&dequant_args(m, out.to_str().unwrap(), &["--verify"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(std::fs::read_to_string(out.join("config.json")).unwrap(), "{\"edited\": true}\n");
    assert_eq!(std::fs::read_to_string(out.join("config.json.new")).unwrap(), generated);
    assert!(r.stderr.contains("kept config.json"), "{}", r.stderr);
}

/// A `--part` run removes the temporary files of its own shards only: another part's are live.
#[test]
fn a_part_leaves_other_parts_temporary_files_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    std::fs::create_dir(&out).unwrap();
    let shards: Vec<String> = (1..=4).map(|i| format!("model-0000{i}-of-00004.safetensors")).collect();
    // An earlier run of this conversion left its state (so the directory is ours) …
    let model = fixture("deepseek-fp8");
    let m = model.to_str().unwrap();
    assert_eq!(run(&dequant_args(m, out.to_str().unwrap(), &["--part", "1/2"])).code, 0);
    let mine: Vec<&String> = shards.iter().filter(|s| out.join(s).exists()).collect();
    assert!(!mine.is_empty() && mine.len() < 4);
    // … and another part, on another host, is writing its shards now.
    for s in &shards {
        std::fs::write(out.join(format!(".{s}.ckptpilot-tmp.7@elsewhere.0")), b"partial").unwrap();
    }
    let r = run(&dequant_args(m, out.to_str().unwrap(), &["--part", "1/2"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    for s in &shards {
        let t = out.join(format!(".{s}.ckptpilot-tmp.7@elsewhere.0"));
        assert_eq!(t.exists(), !mine.contains(&s), "{s}");
    }
}

/// The lock names who holds it now: the --part runs, not the PID of a whole run long gone.
#[test]
fn the_lock_names_the_part_runs_that_hold_it() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let model = fixture("deepseek-fp8");
    let m = model.to_str().unwrap();
    assert_eq!(run(&dequant_args(m, out.to_str().unwrap(), &["--part", "2/2"])).code, 0);
    let part = Command::new(bin())
        .args(dequant_args(m, out.to_str().unwrap(), &["--part", "1/2"]))
        .env("CKPTPILOT_FAULT_PAUSE_MS", "1500")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = part.id();
    let t0 = Instant::now();
    while !std::fs::read_dir(&out)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().contains(".ckptpilot-tmp."))
    {
        assert!(t0.elapsed() < Duration::from_secs(30), "the part never started");
        std::thread::sleep(Duration::from_millis(10));
    }
    let r = run(&dequant_args(m, out.to_str().unwrap(), &[]));
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("part 1/2") && r.stderr.contains(&format!("PID {pid}@")), "{}", r.stderr);
    let (code, _, err) = wait_bounded(part, Duration::from_secs(120));
    assert_eq!(code, 0, "{err}");
    assert_eq!(run(&dequant_args(m, out.to_str().unwrap(), &["--finalize"])).code, 0);
    let (_t, clean) = clean_output();
    assert_eq!(outputs(&out), clean);
}

/// A shard that fails --verify is removed and forgotten: the next run makes it again.
#[test]
fn a_shard_failing_verification_is_made_again() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let model = fixture("deepseek-fp8");
    let m = model.to_str().unwrap();
    assert_eq!(run(&dequant_args(m, out.to_str().unwrap(), &[])).code, 0);
    let p = out.join("model-00002-of-00004.safetensors");
    let mut b = std::fs::read(&p).unwrap();
    let n = b.len();
    b[n - 5] ^= 1;
    std::fs::write(&p, &b).unwrap();
    let r = run(&dequant_args(m, out.to_str().unwrap(), &["--trust-existing", "--verify"]));
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(!p.exists(), "the failed shard is removed");
    let r = run(&dequant_args(m, out.to_str().unwrap(), &["--json"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(s["shards_written"], 1);
    let (_t, clean) = clean_output();
    assert_eq!(outputs(&out), clean);
}

/// Touching (or re-downloading) one input shard redoes that shard only; the directory is still
/// this conversion's.
#[test]
fn a_touched_input_redoes_its_shard_only() {
    let c = copy_fixture("deepseek-fp8");
    let out = c.tmp.path().join("out");
    let m = c.dir.to_str().unwrap();
    assert_eq!(run(&dequant_args(m, out.to_str().unwrap(), &[])).code, 0);
    let shard = c.dir.join("model-00003-of-00004.safetensors");
    let f = std::fs::OpenOptions::new().write(true).open(&shard).unwrap();
    f.set_modified(std::time::SystemTime::now() + Duration::from_secs(60)).unwrap();
    drop(f);
    let r = run(&dequant_args(m, out.to_str().unwrap(), &["--json"]));
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s: Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(s["shards_written"], 1, "{s}");
    assert_eq!(s["shards_kept"], 3);
}
