//! Remote pre-flight (issue 14) against a local Hub: `tools/hub_server.py` serves fixture repos at
//! the Hub's paths (`/api/models/{repo}/revision/{rev}`, `/{repo}/resolve/{rev}/{file}` with Range
//! and 206), counts every request and body byte, and can be gated, flaky, range-deaf or
//! redirecting — or hostile (issue 21: stalled, one byte at a time, endless bodies, file://
//! redirects, names no Hub lists). No test touches the network, every run of ckptpilot is killed
//! after a bound, and every server stops by itself. Needs python3 (standard library only).

mod common;

use common::{bin, fixture};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running hub_server.py over a root of repos; killed on drop.
struct Hub {
    child: Child,
    port: u16,
    _tmp: tempfile::TempDir,
    home: PathBuf,
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Repo `test-org/NAME` for each fixture NAME (symlinked), plus `.hub.json` files given as
/// (repo name, JSON) in a copy of the fixture.
fn hub(repos: &[&str], hub_json: &[(&str, &str)], flags: &[&str]) -> Hub {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let org = root.join("test-org");
    std::fs::create_dir_all(&org).unwrap();
    for r in repos {
        let dir = org.join(r);
        match hub_json.iter().find(|(n, _)| n == r) {
            Some((_, j)) => {
                std::fs::create_dir_all(&dir).unwrap();
                for e in std::fs::read_dir(fixture(r)).unwrap() {
                    let e = e.unwrap();
                    std::os::unix::fs::symlink(e.path(), dir.join(e.file_name())).unwrap();
                }
                std::fs::write(dir.join(".hub.json"), j).unwrap();
            }
            None => std::os::unix::fs::symlink(fixture(r), &dir).unwrap(),
        }
    }
    start(tmp, root, flags)
}

fn start(tmp: tempfile::TempDir, root: PathBuf, flags: &[&str]) -> Hub {
    let port_file = tmp.path().join("port");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tools/hub_server.py");
    let child = Command::new("python3")
        .arg(&script)
        .arg(&root)
        .arg("--port-file")
        .arg(&port_file)
        .args(["--lifetime", "600"])
        .args(flags)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("python3 runs tools/hub_server.py (the remote tests need python3)");
    let t0 = Instant::now();
    let port = loop {
        if let Ok(s) = std::fs::read_to_string(&port_file) {
            if let Ok(p) = s.trim().parse::<u16>() {
                break p;
            }
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "hub_server.py did not start");
        std::thread::sleep(Duration::from_millis(50));
    };
    let home = tmp.path().join("hf-home");
    std::fs::create_dir_all(&home).unwrap();
    Hub { child, port, _tmp: tmp, home }
}

struct Out {
    code: i32,
    stdout: String,
    stderr: String,
    elapsed: Duration,
}

/// A ckptpilot run may take this long before it is killed and the test fails.
const RUN_LIMIT: Duration = Duration::from_secs(120);

impl Hub {
    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The environment ckptpilot runs with: only this hub's (no token, not offline, an empty local
    /// cache), then `env`.
    fn env(&self, env: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v = vec![
            ("HF_ENDPOINT".to_string(), self.endpoint()),
            ("HF_HOME".to_string(), self.home.to_string_lossy().into_owned()),
            ("HF_HUB_CACHE".to_string(), self.home.join("hub").to_string_lossy().into_owned()),
        ];
        v.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        v
    }

    fn run(&self, args: &[&str], env: &[(&str, &str)]) -> Out {
        self.run_for(args, env, RUN_LIMIT)
    }

    /// ckptpilot with [`Hub::env`], killed (and the test failed) after `limit`.
    fn run_for(&self, args: &[&str], env: &[(&str, &str)], limit: Duration) -> Out {
        let out = tempfile::tempdir_in(self._tmp.path()).unwrap();
        let (o, e) = (out.path().join("stdout"), out.path().join("stderr"));
        let mut c = Command::new(bin());
        c.args(args).env_clear().envs(self.env(env));
        c.stdin(Stdio::null());
        c.stdout(std::fs::File::create(&o).unwrap()).stderr(std::fs::File::create(&e).unwrap());
        let t0 = Instant::now();
        let mut child = c.spawn().unwrap();
        let status = loop {
            if let Some(s) = child.try_wait().unwrap() {
                break Some(s);
            }
            if t0.elapsed() > limit {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let r = Out {
            code: status.and_then(|s| s.code()).unwrap_or(-1),
            stdout: String::from_utf8_lossy(&std::fs::read(&o).unwrap()).into_owned(),
            stderr: String::from_utf8_lossy(&std::fs::read(&e).unwrap()).into_owned(),
            elapsed: t0.elapsed(),
        };
        assert!(status.is_some(), "ckptpilot {args:?} still running after {limit:?}, killed; stderr: {}", r.stderr);
        r
    }

    fn stats(&self, reset: bool) -> Value {
        let q = if reset { "?reset=1" } else { "" };
        let o = Command::new("python3")
            .arg("-c")
            .arg(format!(
                "import urllib.request,sys;sys.stdout.write(urllib.request.urlopen('{}/_stats{q}').read().decode())",
                self.endpoint()
            ))
            .output()
            .unwrap();
        serde_json::from_slice(&o.stdout)
            .unwrap_or_else(|e| panic!("stats: {e}: {}", String::from_utf8_lossy(&o.stderr)))
    }
}

/// The report without where it came from (and with the model's name made neutral).
fn neutral(mut v: Value, names: &[&str]) -> Value {
    fn walk(v: &mut Value, names: &[&str]) {
        match v {
            Value::Object(m) => {
                for k in ["source", "model", "input", "checkpoint"] {
                    m.remove(k);
                }
                m.values_mut().for_each(|x| walk(x, names));
            }
            Value::Array(a) => a.iter_mut().for_each(|x| walk(x, names)),
            Value::String(s) => {
                for n in names {
                    *s = s.replace(n, "MODEL");
                }
            }
            _ => {}
        }
    }
    walk(&mut v, names);
    v
}

fn json(o: &Out) -> Value {
    serde_json::from_str(&o.stdout).unwrap_or_else(|e| panic!("bad JSON ({e}): {}\nstderr: {}", o.stdout, o.stderr))
}

/// The first Range of a shard (`hub::SPECULATIVE`, huggingface_hub's 100,000 bytes): a header that
/// fits comes in one request, with at most this many bytes in all.
const SPECULATIVE: u64 = 100_000;

/// (name, 8 + N, file length) of each shard of a local fixture.
fn shard_lens(name: &str) -> Vec<(String, u64, u64)> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "safetensors") {
            let b = std::fs::read(&p).unwrap();
            let n = u64::from_le_bytes(b[..8].try_into().unwrap());
            v.push((p.file_name().unwrap().to_string_lossy().into_owned(), 8 + n, b.len() as u64));
        }
    }
    v.sort();
    v
}

/// (name, bytes a read of its header takes) for each shard of a local fixture: every fixture header
/// fits the first Range, so that is exactly the file's first [`SPECULATIVE`] bytes (all of a shorter
/// file) — the header and at most `SPECULATIVE - (8 + N)` bytes past it, in one request.
fn header_reads(name: &str) -> Vec<(String, u64)> {
    shard_lens(name)
        .into_iter()
        .map(|(f, h, size)| {
            assert!(h <= SPECULATIVE, "{name}/{f}: a fixture header longer than the first Range");
            (f, size.min(SPECULATIVE))
        })
        .collect()
}

#[test]
fn audit_plan_remap_answer_as_on_the_local_copy() {
    let h = hub(&["llama", "qwen3-moe", "qwen3-dense-fp8", "llama-w4a16"], &[], &[]);
    for m in ["llama", "qwen3-moe", "qwen3-dense-fp8", "llama-w4a16"] {
        let local = fixture(m);
        let local = local.to_str().unwrap();
        let remote = format!("test-org/{m}");
        for cmd in [
            vec!["audit", "--json"],
            vec!["plan", "--json", "--tp", "1,2"],
            vec!["plan", "--json", "--tp", "1,2", "--target", "vllm-ascend"],
            vec!["remap", "--json", "--tp", "2"],
        ] {
            let l = h.run(&[cmd.clone(), vec![local]].concat(), &[]);
            let r = h.run(&[cmd.clone(), vec![remote.as_str()]].concat(), &[]);
            assert_eq!(l.code, r.code, "{m} {cmd:?}: {}\n{}", l.stderr, r.stderr);
            if l.stdout.trim().is_empty() {
                continue; // refused (e.g. TP 2 on vllm for an fp8 block model): same exit, same words
            }
            assert_eq!(
                neutral(json(&l), &[local, &remote]),
                neutral(json(&r), &[local, &remote]),
                "{m} {cmd:?}: remote and local answers differ"
            );
            assert!(r.stderr.contains(&format!("remote: {remote}@main = commit ")), "{m}: {}", r.stderr);
        }
        // The report says where the headers came from.
        let a = json(&h.run(&["audit", "--json", &remote], &[]));
        let src = &a["source"]["remote"];
        assert_eq!(src["repo"], remote.as_str());
        assert_eq!(src["endpoint"], h.endpoint().as_str());
        assert_eq!(src["commit"].as_str().unwrap().len(), 40);
    }
}

#[test]
fn one_request_per_shard_at_most_the_first_range_and_a_second_run_fetches_nothing() {
    let h = hub(&["llama"], &[], &[]);
    h.stats(true);
    let r = h.run(&["audit", "test-org/llama"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s = h.stats(true);
    let by_path = s["by_path"].as_object().unwrap();
    let mut shard_requests = 0;
    for (file, want) in header_reads("llama") {
        let (path, v) = by_path
            .iter()
            .find(|(p, _)| p.ends_with(&format!("/{file}")))
            .unwrap_or_else(|| panic!("{file} never requested: {by_path:?}"));
        assert_eq!(v["body_bytes"].as_u64(), Some(want), "{path}: the file's first {SPECULATIVE} bytes at most");
        assert_eq!(v["requests"].as_u64(), Some(1), "{path}: the header fits the first Range");
        shard_requests += v["requests"].as_u64().unwrap();
    }
    assert_eq!(shard_requests, header_reads("llama").len() as u64, "one request per shard");
    // The requests share kept-alive connections: the API's, then at most one per worker.
    let c = s["connections"].as_u64().unwrap();
    assert!(c >= 1 && c < s["requests"].as_u64().unwrap(), "{s}");
    // Nothing else was read but the API and the small JSON files.
    for p in by_path.keys() {
        assert!(p.ends_with(".json") || p.ends_with(".safetensors") || p.contains("/api/models/"), "{p}");
    }
    let total: u64 = by_path.values().map(|v| v["body_bytes"].as_u64().unwrap()).sum();
    assert_eq!(s["body_bytes"].as_u64(), Some(total));

    // Again: the branch costs one API request; every file comes from the cache.
    let r = h.run(&["plan", "test-org/llama", "--tp", "1"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let s = h.stats(true);
    assert_eq!(s["requests"], 1, "only the revision lookup: {s}");
    assert!(s["by_path"].as_object().unwrap().keys().all(|p| p.contains("/api/models/")), "{s}");
    assert!(r.stderr.contains("from the cache"), "{}", r.stderr);
    // By commit: no request at all.
    let commit = json(&h.run(&["audit", "--json", "test-org/llama"], &[]))["source"]["remote"]["commit"]
        .as_str()
        .unwrap()
        .to_string();
    h.stats(true);
    let r = h.run(&["remap", &format!("test-org/llama@{commit}"), "--tp", "2"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert_eq!(h.stats(false)["requests"], 0);
    assert!(r.stderr.contains("no request"), "{}", r.stderr);
}

#[test]
fn revisions_resolve_to_their_commit_and_a_missing_one_is_exit_3() {
    let sha = "0123456789abcdef0123456789abcdef01234567";
    let h = hub(&["llama"], &[("llama", &format!(r#"{{"sha": "{sha}", "refs": {{"v1.0": "{sha}"}}}}"#))], &[]);
    for rev in ["main", "v1.0", sha] {
        let r = h.run(&["audit", "--json", &format!("test-org/llama@{rev}")], &[]);
        assert_eq!(r.code, 0, "{rev}: {}", r.stderr);
        let src = &json(&r)["source"]["remote"];
        assert_eq!(src["revision"], rev);
        assert_eq!(src["commit"], sha);
        assert!(r.stderr.contains(&format!("@{rev} = commit {sha}")), "{}", r.stderr);
    }
    let r = h.run(&["audit", "test-org/llama@nope"], &[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("not found on the Hub") && r.stderr.contains("RevisionNotFound"), "{}", r.stderr);
    let r = h.run(&["plan", "test-org/missing"], &[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("not found on the Hub") && r.stderr.contains("help: check the repo id"), "{}", r.stderr);
}

#[test]
fn gated_repo_needs_the_token_from_hf_token_or_the_token_file() {
    let h = hub(&["llama"], &[("llama", r#"{"token": "s3cret", "gated": true}"#)], &[]);
    let r = h.run(&["audit", "test-org/llama"], &[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("HTTP 401") && r.stderr.contains("gated or private"), "{}", r.stderr);
    assert!(r.stderr.contains("help: accept the licence") && r.stderr.contains("HF_TOKEN"), "{}", r.stderr);
    let r = h.run(&["audit", "test-org/llama"], &[("HF_TOKEN", "wrong")]);
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("HTTP 403"), "{}", r.stderr);
    let r = h.run(&["audit", "test-org/llama"], &[("HF_TOKEN", "s3cret")]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    // `hf auth login` writes $HF_HOME/token.
    std::fs::write(h.home.join("token"), "s3cret\n").unwrap();
    let r = h.run(&["plan", "test-org/llama@main", "--tp", "1"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn offline_never_asks_and_dequant_refuses_a_remote_repo() {
    let h = hub(&["llama"], &[], &[]);
    h.stats(true);
    for (args, env) in [
        (vec!["audit", "test-org/llama"], vec![("HF_HUB_OFFLINE", "1")]),
        (vec!["audit", "--offline", "test-org/llama"], vec![]),
    ] {
        let r = h.run(&args, &env);
        assert_eq!(r.code, 3, "{}", r.stderr);
        assert!(r.stderr.contains("offline"), "{}", r.stderr);
    }
    let out = h.home.join("out");
    for cmd in ["dequant", "quantize"] {
        let mut args = vec![cmd, "test-org/llama", "--out", out.to_str().unwrap()];
        if cmd == "quantize" {
            args.extend(["--to", "w8a8-dynamic"]);
        }
        let r = h.run(&args, &[]);
        assert_eq!(r.code, 3, "{cmd}: {}", r.stderr);
        assert!(r.stderr.contains("reads tensor data") && r.stderr.contains("help: download it first"), "{}", r.stderr);
        assert!(!out.exists());
    }
    assert_eq!(h.stats(false)["requests"], 0, "nothing asked the Hub");
    // A manifest hashes whole files, which a remote pre-flight never has.
    let manifest = h.home.join("m.json");
    let r = h.run(&["audit", "test-org/llama", "--checksum", manifest.to_str().unwrap()], &[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("headers only") && r.stderr.contains("help: download it"), "{}", r.stderr);
    assert!(!manifest.exists());
}

#[test]
fn busy_server_is_retried_with_backoff_then_a_clear_error() {
    let tmp_ok = hub(&["llama"], &[], &["--fail-first", "2", "--fail-status", "429"]);
    let r = tmp_ok.run(&["audit", "test-org/llama"], &[]);
    assert_eq!(r.code, 0, "two 429s then answers: {}", r.stderr);
    let bad = hub(&["llama"], &[], &["--fail-first", "1000", "--fail-status", "503"]);
    let t0 = Instant::now();
    let r = bad.run(&["audit", "test-org/llama"], &[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("no answer after 5 attempts") && r.stderr.contains("HTTP 503"), "{}", r.stderr);
    assert!(t0.elapsed() < Duration::from_secs(30), "bounded");
    assert_eq!(bad.stats(false)["requests"], 5);
}

#[test]
fn redirects_to_a_cdn_are_followed_with_the_range() {
    let h = hub(&["qwen3-moe"], &[], &["--redirect"]);
    let l = h.run(&["audit", "--json", fixture("qwen3-moe").to_str().unwrap()], &[]);
    let r = h.run(&["audit", "--json", "test-org/qwen3-moe"], &[]);
    assert_eq!(r.code, l.code, "{}", r.stderr);
    let names = [fixture("qwen3-moe").to_string_lossy().into_owned(), "test-org/qwen3-moe".to_string()];
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    assert_eq!(neutral(json(&l), &names), neutral(json(&r), &names));
    let s = h.stats(false);
    let blobs: u64 = s["by_path"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(p, _)| p.starts_with("/_blobs/"))
        .map(|(_, v)| v["body_bytes"].as_u64().unwrap())
        .sum();
    let want: u64 = header_reads("qwen3-moe").iter().map(|(_, n)| n).sum();
    assert_eq!(blobs, want, "each shard's first Range, through the redirect");

    // A gated repo whose CDN is another host: the token goes to the Hub, never to the CDN.
    let h = hub(
        &["qwen3-moe"],
        &[("qwen3-moe", r#"{"token": "s3cret", "gated": true}"#)],
        &["--redirect", "--redirect-host", "localhost"],
    );
    let r = h.run(&["audit", "--json", "test-org/qwen3-moe"], &[("HF_TOKEN", "s3cret")]);
    assert_eq!(r.code, l.code, "{}", r.stderr);
    let s = h.stats(false);
    assert_eq!(s["blob_requests_with_authorization"], 0, "{s}");
    assert!(s["by_path"].as_object().unwrap().keys().any(|p| p.starts_with("/_blobs/")), "{s}");
}

/// A 1 GiB shard (sparse) whose server ignores Range: the header is read, the rest never.
#[test]
fn a_server_that_ignores_range_is_cut_off_after_the_header() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let repo = root.join("test-org").join("big");
    std::fs::create_dir_all(&repo).unwrap();
    std::fs::copy(fixture("llama").join("config.json"), repo.join("config.json")).unwrap();
    let n: u64 = 1 << 30;
    let header = format!(r#"{{"model.embed_tokens.weight":{{"dtype":"U8","shape":[{n}],"data_offsets":[0,{n}]}}}}"#);
    let f = std::fs::File::create(repo.join("model.safetensors")).unwrap();
    use std::io::Write;
    let mut w = std::io::BufWriter::new(&f);
    w.write_all(&(header.len() as u64).to_le_bytes()).unwrap();
    w.write_all(header.as_bytes()).unwrap();
    drop(w);
    f.set_len(8 + header.len() as u64 + n).unwrap();
    let h = start(tmp, root, &["--ignore-range"]);
    let t0 = Instant::now();
    let r = h.run(&["audit", "--json", "test-org/big"], &[]);
    assert!(r.code == 0 || r.code == 1, "{}", r.stderr);
    let a = json(&r);
    assert_eq!(a["shards"][0]["file_bytes"].as_u64(), Some(8 + header.len() as u64 + n));
    let served = h.stats(false)["body_bytes"].as_u64().unwrap();
    assert!(served < 64 << 20, "{served} bytes served of a 1 GiB file");
    assert!(t0.elapsed() < Duration::from_secs(60));
}

#[test]
fn stub_writes_a_kit_for_a_remote_repo() {
    let h = hub(&["qwen3-moe"], &[], &[]);
    let out = h.home.join("kit");
    let r = h.run(&["stub", "test-org/qwen3-moe", "--out", out.to_str().unwrap(), "--tp", "2"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let serve = std::fs::read_to_string(out.join("validation/serve_stage_a.sh")).unwrap();
    assert!(serve.contains("MODEL=\"${MODEL:-test-org/qwen3-moe}\""), "the kit serves the repo id: {serve}");
    let commit = r.stderr.split("= commit ").nth(1).unwrap().split(' ').next().unwrap();
    assert!(serve.contains(&format!("ARGS+=(--revision {commit})")), "at the commit checked: {serve}");
    // The same mapping module as for the local copy.
    let local_out = h.home.join("kit-local");
    let l = h.run(
        &[
            "stub",
            fixture("qwen3-moe").to_str().unwrap(),
            "--out",
            local_out.to_str().unwrap(),
            "--tp",
            "2",
            "--name",
            "qwen3-moe",
        ],
        &[],
    );
    assert_eq!(l.code, 0, "{}", l.stderr);
    let find = |d: &Path| {
        walk(d).into_iter().find(|p| p.to_string_lossy().ends_with("_mapping.py")).expect("a mapping module")
    };
    let strip = |p: PathBuf| {
        std::fs::read_to_string(p)
            .unwrap()
            .lines()
            .filter(|l| !l.contains("qwen3-moe") && !l.contains("Generated by"))
            .collect::<Vec<_>>()
            .join("\n")
    };
    assert_eq!(strip(find(&out)), strip(find(&local_out)));
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(d).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            v.extend(walk(&p));
        } else {
            v.push(p);
        }
    }
    v
}

// ---- Hostile or broken servers (issue 21) ----------------------------------------------------

/// A hub over repos that `make` writes into the `test-org` directory.
fn custom(make: impl FnOnce(&Path), flags: &[&str]) -> Hub {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    let org = root.join("test-org");
    std::fs::create_dir_all(&org).unwrap();
    make(&org);
    start(tmp, root, flags)
}

/// `dir` with a symlink to each file of fixture `name` but those in `except`.
fn link_fixture(name: &str, dir: &Path, except: &[&str]) {
    std::fs::create_dir_all(dir).unwrap();
    for e in std::fs::read_dir(fixture(name)).unwrap() {
        let e = e.unwrap();
        if !except.iter().any(|x| e.file_name() == *x) {
            std::os::unix::fs::symlink(e.path(), dir.join(e.file_name())).unwrap();
        }
    }
}

/// (requests, body bytes) the server counted for the paths that contain `part`.
fn served(s: &Value, part: &str) -> (u64, u64) {
    s["by_path"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(p, _)| p.contains(part))
        .fold((0, 0), |(r, b), (_, v)| (r + v["requests"].as_u64().unwrap(), b + v["body_bytes"].as_u64().unwrap()))
}

/// Every file under ckptpilot's remote cache.
fn cached_files(h: &Hub) -> Vec<PathBuf> {
    let d = h.home.join("ckptpilot");
    if d.exists() {
        walk(&d)
    } else {
        Vec::new()
    }
}

/// The cap on a file read whole (`fsutil::JSON_CAP`).
const FILE_CAP: u64 = 64 << 20;

#[test]
fn only_the_json_files_the_checks_read_are_fetched() {
    // Endless bodies for every JSON file no check reads: asking for any of them would show.
    let h = custom(
        |org| {
            let d = org.join("llama");
            link_fixture("llama", &d, &[]);
            for n in ["extra_0.json", "extra_1.json", "generation_config.json", "tokenizer_config.json"] {
                std::fs::write(d.join(n), "{}").unwrap();
            }
            link_fixture("modelslim-llama-w8a8", &org.join("modelslim-llama-w8a8"), &[]);
            link_fixture("modelslim-llama-w8a8-dynamic-v0", &org.join("modelslim-llama-w8a8-dynamic-v0"), &[]);
        },
        &["--endless", "extra_", "--endless", "generation_config", "--endless", "tokenizer", "--endless", "special_"],
    );
    for m in ["llama", "modelslim-llama-w8a8", "modelslim-llama-w8a8-dynamic-v0"] {
        let local = fixture(m);
        let local = local.to_str().unwrap();
        let remote = format!("test-org/{m}");
        let l = h.run(&["audit", "--json", local], &[]);
        let r = h.run(&["audit", "--json", &remote], &[]);
        assert_eq!(l.code, r.code, "{m}: {}", r.stderr);
        assert_eq!(neutral(json(&l), &[local, &remote]), neutral(json(&r), &[local, &remote]), "{m}");
    }
    let s = h.stats(false);
    for never in
        ["extra_", "generation_config", "tokenizer", "special_tokens_map", "quant_model_weights.safetensors.index"]
    {
        assert_eq!(served(&s, never).0, 0, "{never} was asked for: {s}");
    }
    // What was read: the listing, config.json, the index, the ModelSlim descriptions, the headers.
    assert!(served(&s, "quant_model_description.json").0 == 1, "{s}");
    assert!(served(&s, "quant_model_description_w8a8_dynamic.json").0 == 1, "{s}");
    assert!(s["body_bytes"].as_u64().unwrap() < 1 << 20, "{s}");
}

#[test]
fn an_endless_body_is_cut_at_the_cap_and_never_cached() {
    let h = hub(&["llama"], &[], &["--endless", "config.json"]);
    let r = h.run(&["audit", "test-org/llama"], &[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains(&format!("config.json: more than {FILE_CAP} bytes sent, over the {FILE_CAP}-byte cap")),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("help: download the repo"), "{}", r.stderr);
    let (_, bytes) = served(&h.stats(false), "/config.json");
    assert!(bytes < FILE_CAP + (16 << 20), "{bytes} bytes served for an endless config.json");
    let left: Vec<PathBuf> = cached_files(&h)
        .into_iter()
        .filter(|p| p.ends_with("config.json") || p.to_string_lossy().contains(".ckptpilot-tmp"))
        .collect();
    assert!(left.is_empty(), "a partial file was kept: {left:?}");
}

#[test]
fn a_length_over_the_cap_is_refused_before_the_body() {
    // Listed over the cap: not even asked for.
    let h = custom(
        |org| {
            let d = org.join("big-config");
            link_fixture("llama", &d, &["config.json"]);
            let f = std::fs::File::create(d.join("config.json")).unwrap();
            f.set_len(100 << 20).unwrap();
        },
        &[],
    );
    let r = h.run(&["audit", "test-org/big-config"], &[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains(&format!("config.json: {} bytes listed, over the", 100u64 << 20)), "{}", r.stderr);
    assert_eq!(served(&h.stats(false), "/config.json").0, 0, "asked for a file listed over the cap");

    // Announced over the cap (a 1 TB Content-Length): refused after the headers, before the body.
    let h = hub(&["llama"], &[], &["--huge-length", "model.safetensors.index.json"]);
    let r = h.run(&["audit", "test-org/llama"], &[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("model.safetensors.index.json: 1000000000000 bytes announced (Content-Length), over the"),
        "{}",
        r.stderr
    );
    let (_, bytes) = served(&h.stats(false), "/model.safetensors.index.json");
    // Only what the sockets' buffers took before ckptpilot hung up.
    assert!(bytes < 16 << 20, "{bytes} bytes served of a body refused by its length");
    assert!(cached_files(&h).iter().all(|p| !p.ends_with("model.safetensors.index.json")));
}

#[test]
fn the_run_has_a_byte_cap_and_bad_settings_are_refused() {
    let h = hub(&["llama"], &[], &[]);
    let r = h.run(&["audit", "test-org/llama"], &[("CKPTPILOT_HUB_MAX_BYTES", "3000")]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("the cap for one remote read (CKPTPILOT_HUB_MAX_BYTES)"), "{}", r.stderr);
    assert!(r.stderr.contains("help: raise CKPTPILOT_HUB_MAX_BYTES"), "{}", r.stderr);
    assert!(h.stats(true)["body_bytes"].as_u64().unwrap() <= 3000);
    // The same repo fits the default cap.
    let r = h.run(&["audit", "test-org/llama"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);

    let h = hub(&["llama"], &[], &[]);
    for (var, value, why) in [
        ("HF_HUB_ETAG_TIMEOUT", "1.5", "not a whole number of seconds"),
        ("HF_HUB_DOWNLOAD_TIMEOUT", "soon", "not a whole number of seconds"),
        ("CKPTPILOT_HUB_RUN_TIMEOUT", "-1", "not a whole number of seconds"),
        ("CKPTPILOT_HUB_MAX_BYTES", "lots", "not a byte count"),
        ("HF_ENDPOINT", "file:///etc", "not an http:// or https:// URL"),
    ] {
        let r = h.run(&["audit", "test-org/llama"], &[(var, value)]);
        assert_eq!(r.code, 3, "{var}: {}", r.stderr);
        assert!(r.stderr.contains(&format!("{var}=\"{value}\": {why}")), "{}", r.stderr);
        assert!(r.stderr.contains(&format!("help: fix or unset {var}")), "{}", r.stderr);
    }
    assert_eq!(h.stats(false)["requests"], 0);
}

#[test]
fn a_stalled_server_times_out_by_the_hub_timeouts_without_retrying() {
    // Accepts and never answers the API: HF_HUB_ETAG_TIMEOUT bounds it.
    let h = hub(&["llama"], &[], &["--stall", "/api/models/"]);
    let r = h.run_for(&["audit", "test-org/llama"], &[("HF_HUB_ETAG_TIMEOUT", "1")], Duration::from_secs(30));
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("test-org/llama@main: timed out after 1 s waiting for http://127.0.0.1:")
            && r.stderr.contains("/api/models/test-org/llama/revision/main?blobs=true (HF_HUB_ETAG_TIMEOUT)"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("help: raise HF_HUB_ETAG_TIMEOUT"), "{}", r.stderr);
    assert!(r.elapsed >= Duration::from_secs(1) && r.elapsed < Duration::from_secs(10), "{:?}", r.elapsed);
    assert_eq!(h.stats(false)["requests"], 1, "a timed-out request is not retried");
    // Not a terminal: no progress line.
    assert!(!r.stderr.contains("waiting for the file list"), "{}", r.stderr);

    // Never answers for config.json: HF_HUB_DOWNLOAD_TIMEOUT bounds the file.
    let h = hub(&["llama"], &[], &["--stall", "/config.json"]);
    let r = h.run_for(&["audit", "test-org/llama"], &[("HF_HUB_DOWNLOAD_TIMEOUT", "1")], Duration::from_secs(30));
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("test-org/llama: config.json: timed out after 1 s")
            && r.stderr.contains("(HF_HUB_DOWNLOAD_TIMEOUT)"),
        "{}",
        r.stderr
    );
    assert!(r.elapsed < Duration::from_secs(10), "{:?}", r.elapsed);
    assert_eq!(served(&h.stats(false), "/config.json").0, 1);
    assert!(cached_files(&h).iter().all(|p| !p.ends_with("config.json")));
}

#[test]
fn one_byte_at_a_time_is_cut_off_by_the_request_deadline() {
    // config.json at 10 bytes a second would take a minute: the deadline is for the whole body,
    // not for each wait between bytes.
    let h = hub(&["llama"], &[], &["--slow-bytes", "/config.json", "--byte-interval-ms", "100"]);
    let r = h.run_for(&["audit", "test-org/llama"], &[("HF_HUB_DOWNLOAD_TIMEOUT", "2")], Duration::from_secs(30));
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("config.json: timed out after 2 s"), "{}", r.stderr);
    assert!(r.elapsed >= Duration::from_secs(2) && r.elapsed < Duration::from_secs(10), "{:?}", r.elapsed);
    let (requests, bytes) = served(&h.stats(false), "/config.json");
    assert_eq!(requests, 1);
    assert!(bytes < 100, "{bytes} bytes of config.json trickled in");
}

#[test]
fn the_whole_run_has_a_deadline() {
    // Each request may take a minute, the run only 2 s.
    let h = hub(&["llama"], &[], &["--slow-bytes", "/config.json", "--byte-interval-ms", "100"]);
    let env = [("HF_HUB_DOWNLOAD_TIMEOUT", "60"), ("CKPTPILOT_HUB_RUN_TIMEOUT", "2")];
    let r = h.run_for(&["audit", "test-org/llama"], &env, Duration::from_secs(30));
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("timed out after 2 s, the deadline for the whole remote read (CKPTPILOT_HUB_RUN_TIMEOUT)"),
        "{}",
        r.stderr
    );
    assert!(r.stderr.contains("help: raise CKPTPILOT_HUB_RUN_TIMEOUT"), "{}", r.stderr);
    assert!(r.elapsed < Duration::from_secs(10), "{:?}", r.elapsed);

    // A server that asks to come back in 30 s, again and again: no retry past the run's deadline.
    let h = hub(&["llama"], &[], &["--fail-first", "1000", "--fail-status", "429", "--retry-after", "30"]);
    let r = h.run_for(&["audit", "test-org/llama"], &[("CKPTPILOT_HUB_RUN_TIMEOUT", "3")], Duration::from_secs(30));
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("(CKPTPILOT_HUB_RUN_TIMEOUT)") && r.stderr.contains("HTTP 429"), "{}", r.stderr);
    assert!(r.elapsed < Duration::from_secs(10), "{:?}", r.elapsed);
    assert_eq!(h.stats(false)["requests"], 1);
}

#[test]
fn a_redirect_off_http_is_refused_at_once() {
    let h = hub(&["llama"], &[], &["--file-redirect", "model-00001-of"]);
    let r = h.run_for(&["audit", "test-org/llama"], &[], Duration::from_secs(30));
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(
        r.stderr.contains("redirected to file:///etc/passwd: only http and https redirects are followed"),
        "{}",
        r.stderr
    );
    assert_eq!(served(&h.stats(false), "model-00001-of").0, 1, "refused, not retried");
    assert!(r.elapsed < Duration::from_secs(10), "{:?}", r.elapsed);
}

#[test]
fn hostile_listed_names_are_skipped_with_an_escaped_warning() {
    // JSON string literals: NUL cannot be passed on a command line otherwise.
    let hostile = [
        r#""bad\u0000name.json""#,
        r#""../escape.json""#,
        r#""/etc/passwd""#,
        r#""sub/../../up.safetensors""#,
        r#""esc\u001b[2J.safetensors""#,
        r#""rtl\u202enosj.json""#,
        r#""back\\slash.json""#,
        r#""..""#,
    ];
    let mut flags = Vec::new();
    for n in hostile.iter().chain(&[r#""original/params.json""#]) {
        flags.extend(["--extra-sibling", n]);
    }
    let h = hub(&["llama"], &[], &flags);
    let local = fixture("llama");
    let local = local.to_str().unwrap();
    let l = h.run(&["audit", "--json", local], &[]);
    let r = h.run(&["audit", "--json", "test-org/llama"], &[]);
    assert_eq!(r.code, l.code, "the rest is read: {}", r.stderr);
    assert_eq!(neutral(json(&l), &[local, "test-org/llama"]), neutral(json(&r), &[local, "test-org/llama"]));
    let warned: Vec<&str> = r.stderr.lines().filter(|l| l.starts_with("warning: test-org/llama: skipped")).collect();
    assert_eq!(warned.len(), 8, "{}", r.stderr);
    for shown in [r"bad\0name.json", r"esc\u{1b}[2J.safetensors", r"rtl\u{202e}nosj.json", "../escape.json"] {
        assert!(r.stderr.contains(&format!("\"{shown}\"")), "{shown}: {}", r.stderr);
    }
    assert!(!r.stderr.contains(['\0', '\x1b', '\u{202e}']), "raw control characters: {:?}", r.stderr);
    assert!(!r.stderr.contains("original/params.json"), "a subfolder is not hostile: {}", r.stderr);
    let s = h.stats(false);
    for p in s["by_path"].as_object().unwrap().keys() {
        assert!(!p.contains("%00") && !p.contains("escape") && !p.contains("passwd") && !p.contains("up."), "{p}");
    }
    // Nothing was written outside the cache's directories.
    for p in walk(h._tmp.path()) {
        let n = p.file_name().unwrap().to_string_lossy().into_owned();
        assert!(!["escape.json", "up.safetensors", "passwd"].contains(&n.as_str()), "{}", p.display());
    }
}

#[test]
fn server_text_in_messages_is_escaped() {
    // A listed name made of terminal control sequences: the warning names it escaped (before, it
    // was asked for, and the error printed it raw: the terminal cleared, red, a bell).
    let h = hub(&["llama"], &[], &["--extra-sibling", r#""\u001b[2J\u001b[31mpwned\u0007.json""#]);
    let r = h.run(&["audit", "test-org/llama"], &[]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stderr.contains(r#""\u{1b}[2J\u{1b}[31mpwned\u{7}.json" (it holds control"#), "{}", r.stderr);
    assert!(!r.stderr.contains(['\x1b', '\x07']), "{:?}", r.stderr);
    // The Hub's error text: ureq drops a header holding control characters, and what is kept is
    // escaped all the same (unit-tested in hub::tests).
    let h = hub(&["llama"], &[("llama", r#"{"token": "s3cret", "message": "\u001b[2Jpwned\u0007"}"#)], &[]);
    let r = h.run(&["audit", "test-org/llama"], &[]);
    assert_eq!(r.code, 3, "{}", r.stderr);
    assert!(r.stderr.contains("HTTP 401 (GatedRepo)"), "{}", r.stderr);
    assert!(!r.stderr.contains(['\x1b', '\x07']), "{:?}", r.stderr);
}

/// ckptpilot with stderr on a pseudo-terminal (python's `pty`), killed after 30 s: (exit status,
/// what the terminal showed).
fn run_on_a_terminal(h: &Hub, args: &[&str], env: &[(&str, &str)]) -> (i32, String) {
    const PTY: &str = r#"
import fcntl, json, os, pty, select, struct, subprocess, sys, termios, time
env, argv = json.loads(sys.argv[1]), sys.argv[2:]
m, s = pty.openpty()
fcntl.ioctl(s, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
p = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=s)
os.close(s)
out, t0 = b"", time.time()
while True:
    if time.time() - t0 > 30:
        p.kill()
    r, _, _ = select.select([m], [], [], 0.2)
    if r:
        try:
            d = os.read(m, 65536)
        except OSError:
            d = b""
        if not d:
            break
        out += d
    elif p.poll() is not None:
        break
p.wait()
sys.stdout.write(json.dumps({"code": p.returncode, "tty": out.decode("utf-8", "replace")}))
"#;
    let mut env: serde_json::Map<String, Value> = h.env(env).into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    env.insert("TERM".into(), "xterm".into());
    let o = Command::new("python3")
        .arg("-c")
        .arg(PTY)
        .arg(Value::Object(env).to_string())
        .arg(bin())
        .args(args)
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("pty helper: {e}: {}", String::from_utf8_lossy(&o.stderr)));
    (v["code"].as_i64().unwrap() as i32, v["tty"].as_str().unwrap().to_string())
}

#[test]
fn a_slow_remote_read_shows_progress_on_a_terminal() {
    let h = hub(&["llama"], &[], &["--stall", "/api/models/"]);
    let (code, tty) = run_on_a_terminal(&h, &["audit", "test-org/llama"], &[("HF_HUB_ETAG_TIMEOUT", "4")]);
    assert_eq!(code, 3, "{tty}");
    assert!(tty.contains("remote: test-org/llama@main: waiting for the file list, 0 B, 2 s"), "{tty:?}");
    assert!(tty.contains("timed out after 4 s"), "{tty:?}");
}

#[test]
fn diff_reads_two_remote_repos_by_their_headers_and_answers_as_on_local_copies() {
    let h = hub(&["qwen3-dense", "qwen3-dense-fp8"], &[], &[]);
    let (a, b) = (fixture("qwen3-dense"), fixture("qwen3-dense-fp8"));
    let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
    let l = h.run(&["diff", "--json", a, b], &[]);
    h.stats(true);
    let r = h.run(&["diff", "--json", "test-org/qwen3-dense", "test-org/qwen3-dense-fp8"], &[]);
    assert_eq!((l.code, r.code), (1, 1), "{}\n{}", l.stderr, r.stderr);
    let strip = |mut v: Value| {
        for s in ["a", "b"] {
            v[s].as_object_mut().unwrap().remove("model");
        }
        v
    };
    assert_eq!(strip(json(&l)), strip(json(&r)), "remote and local answers differ");
    // Headers only: each shard gave its first Range (the header and at most SPECULATIVE - (8 + N)
    // bytes past it), in one request.
    let s = h.stats(false);
    let by_path = s["by_path"].as_object().unwrap();
    for (repo, fx) in [("qwen3-dense", "qwen3-dense"), ("qwen3-dense-fp8", "qwen3-dense-fp8")] {
        for (file, want) in header_reads(fx) {
            let (path, v) = by_path
                .iter()
                .find(|(p, _)| p.contains(&format!("/test-org/{repo}/")) && p.ends_with(&format!("/{file}")))
                .unwrap_or_else(|| panic!("{repo}/{file} never requested: {by_path:?}"));
            assert_eq!(v["body_bytes"].as_u64(), Some(want), "{path}");
            assert_eq!(v["requests"].as_u64(), Some(1), "{path}");
        }
    }
    // Identical remote and local copies are the same (exit 0).
    let r = h.run(&["diff", "test-org/qwen3-dense", a], &[]);
    assert_eq!(r.code, 0, "{}\n{}", r.stdout, r.stderr);
    assert!(r.stdout.contains("same tensors, same shapes and dtypes"), "{}", r.stdout);
}

/// A safetensors file of one-byte U8 tensors named `names`.
fn write_shard(path: &Path, names: impl Iterator<Item = String>) {
    let mut header = String::from("{");
    let mut n = 0u64;
    for name in names {
        if n > 0 {
            header.push(',');
        }
        header.push_str(&format!(r#""{name}":{{"dtype":"U8","shape":[1],"data_offsets":[{n},{}]}}"#, n + 1));
        n += 1;
    }
    header.push('}');
    let mut b = (header.len() as u64).to_le_bytes().to_vec();
    b.extend_from_slice(header.as_bytes());
    b.resize(b.len() + n as usize, 7);
    std::fs::write(path, b).unwrap();
}

#[test]
fn a_header_longer_than_the_first_range_takes_a_second_request_for_the_rest_only() {
    let h = custom(
        |org| {
            let d = org.join("long");
            std::fs::create_dir_all(&d).unwrap();
            std::fs::copy(fixture("llama").join("config.json"), d.join("config.json")).unwrap();
            // ~170 kB of header: longer than the first Range.
            write_shard(
                &d.join("model-00001-of-00002.safetensors"),
                (0..2000).map(|e| format!("model.layers.0.mlp.experts.{e}.gate_up_proj.weight")),
            );
            write_shard(&d.join("model-00002-of-00002.safetensors"), std::iter::once("lm_head.weight".to_string()));
        },
        &[],
    );
    let local = h.home.parent().unwrap().join("root/test-org/long");
    let local = local.to_str().unwrap();
    let l = h.run(&["audit", "--json", local], &[]);
    h.stats(true);
    let r = h.run(&["audit", "--json", "test-org/long"], &[]);
    assert_eq!(l.code, r.code, "{}\n{}", l.stderr, r.stderr);
    assert_eq!(neutral(json(&l), &[local, "test-org/long"]), neutral(json(&r), &[local, "test-org/long"]));
    let s = h.stats(false);
    let dir = Path::new(local);
    let head = |f: &str| {
        let b = std::fs::read(dir.join(f)).unwrap();
        (8 + u64::from_le_bytes(b[..8].try_into().unwrap()), b.len() as u64)
    };
    let (h1, _) = head("model-00001-of-00002.safetensors");
    assert!(h1 > SPECULATIVE, "{h1}");
    // The first Range, then exactly the rest of the header: not one byte past it.
    assert_eq!(served(&s, "/model-00001-of-00002.safetensors"), (2, h1), "{s}");
    // A short file: one request, all of it.
    let (_, size2) = head("model-00002-of-00002.safetensors");
    assert_eq!(served(&s, "/model-00002-of-00002.safetensors"), (1, size2), "{s}");
}

#[test]
fn requests_overlap_on_kept_alive_connections() {
    // 96 shards (3 per worker) behind a 100 ms round trip: one after another they would take 9.7 s
    // (19.3 s through a redirect).
    let shards = 96;
    for (flags, per_shard) in [(&[][..], 1), (&["--redirect"][..], 2)] {
        let h = custom(
            |org| {
                let d = org.join("many");
                std::fs::create_dir_all(&d).unwrap();
                std::fs::copy(fixture("llama").join("config.json"), d.join("config.json")).unwrap();
                for i in 0..shards {
                    write_shard(
                        &d.join(format!("model-{:05}-of-{shards:05}.safetensors", i + 1)),
                        std::iter::once(format!("model.layers.{i}.input_layernorm.weight")),
                    );
                }
            },
            &[&["--latency-ms", "100"][..], flags].concat(),
        );
        let r = h.run(&["audit", "--json", "test-org/many"], &[]);
        assert!(r.code == 0 || r.code == 1, "{flags:?}: {}", r.stderr);
        let s = h.stats(false);
        let requests = s["requests"].as_u64().unwrap();
        // The listing, config.json and one request per shard (the redirect and the CDN's answer).
        assert_eq!(requests, 2 + per_shard * shards, "{flags:?}: {s}");
        // At most one connection per worker (32), each carrying several requests: a redirect's
        // connection goes back to the pool too.
        let c = s["connections"].as_u64().unwrap();
        assert!(c <= 33, "{flags:?}: {c} connections for {requests} requests: not kept alive");
        // 1 round trip for the listing and 4 waves of 32: ~0.5 s (~0.9 s through the redirect).
        assert!(r.elapsed < Duration::from_secs(5), "{flags:?}: {:?}: the round trips were not overlapped", r.elapsed);
    }
}
