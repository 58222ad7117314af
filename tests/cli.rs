//! The command line: exit statuses, Hugging Face cache resolution, checksum manifests.

mod common;
use common::*;

#[test]
fn usage_error_exits_2() {
    assert_eq!(run(&["audit"]).code, 2);
    assert_eq!(run(&["frobnicate"]).code, 2);
}

#[test]
fn missing_input_exits_3_with_a_clear_message() {
    let r = run(&["audit", "/nonexistent/checkpoint"]);
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("/nonexistent/checkpoint") && r.stderr.contains("no such file"), "{}", r.stderr);
    assert!(r.stdout.is_empty());
}

#[test]
fn not_a_checkpoint_file_exits_3() {
    let r = run(&["audit", fixture("generate.py").to_str().unwrap()]);
    assert_eq!(r.code, 3);
    assert!(r.stderr.contains("not a .safetensors file"), "{}", r.stderr);
}

/// A Hugging Face hub cache laid out as huggingface_hub writes it: blobs, a ref, a snapshot of links.
fn fake_hf_cache(root: &std::path::Path, repo: &str, commit: &str) {
    let folder = root.join(format!("models--{}", repo.replace('/', "--")));
    std::fs::create_dir_all(folder.join("refs")).unwrap();
    std::fs::write(folder.join("refs").join("main"), commit).unwrap();
    let snap = folder.join("snapshots").join(commit);
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(folder.join("blobs")).unwrap();
    for e in std::fs::read_dir(fixture("qwen3-dense")).unwrap() {
        let e = e.unwrap();
        let blob = folder.join("blobs").join(e.file_name());
        std::fs::copy(e.path(), &blob).unwrap();
        std::os::unix::fs::symlink(&blob, snap.join(e.file_name())).unwrap();
    }
}

#[test]
fn hf_repo_id_resolves_from_the_local_cache_offline() {
    let tmp = tempfile::tempdir().unwrap();
    let commit = "0123456789abcdef0123456789abcdef01234567";
    fake_hf_cache(tmp.path(), "tiny-org/qwen3-dense", commit);
    let cache = tmp.path().to_str().unwrap();
    for id in ["tiny-org/qwen3-dense", &format!("tiny-org/qwen3-dense@{commit}"), "tiny-org/qwen3-dense@main"] {
        let r = run_env(&["audit", "--json", id], &[("HF_HUB_CACHE", cache)]);
        assert_eq!(r.code, 0, "{id}: {}", r.stderr);
        let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
        assert_eq!(v["source"]["hf_repo"], id);
        assert_eq!(v["model"]["architecture"], "Qwen3ForCausalLM");
    }
    // HF_HOME/hub is the fallback when HF_HUB_CACHE is unset.
    let home = tempfile::tempdir().unwrap();
    fake_hf_cache(&home.path().join("hub"), "tiny-org/qwen3-dense", commit);
    let r = run_env(
        &["audit", "tiny-org/qwen3-dense"],
        &[("HF_HOME", home.path().to_str().unwrap()), ("HF_HUB_CACHE", "")],
    );
    assert_eq!(r.code, 0, "{}", r.stderr);
}

#[test]
fn hf_repo_id_not_cached_exits_3() {
    let tmp = tempfile::tempdir().unwrap();
    let r = run_env(&["audit", "nobody/nothing@v2"], &[("HF_HUB_CACHE", tmp.path().to_str().unwrap())]);
    assert_eq!(r.code, 3);
    assert!(
        r.stderr.contains("nobody/nothing@v2") && r.stderr.contains("not in the local Hugging Face cache"),
        "{}",
        r.stderr
    );
}

#[test]
fn checksum_manifest_then_verify_names_what_changed() {
    let c = copy_fixture("qwen3-dense");
    let manifest = c.tmp.path().join("manifest.json");
    let r = run(&["audit", "--json", "--checksum", manifest.to_str().unwrap(), c.dir.to_str().unwrap()]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let m: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&manifest).unwrap()).unwrap();
    assert_eq!(m["schema"], "ckptpilot.manifest/1");
    let files = m["files"].as_array().unwrap();
    assert_eq!(files.len(), 6, "4 shards + index + config");
    // The hash is blake3 of the file bytes, checked here with the blake3 crate directly.
    let shard = c.dir.join("model-00001-of-00004.safetensors");
    let want = blake3::hash(&std::fs::read(&shard).unwrap()).to_hex().to_string();
    assert!(files.iter().any(|f| f["file"] == "model-00001-of-00004.safetensors" && f["blake3"] == want.as_str()));

    let ok = run(&["verify", manifest.to_str().unwrap()]);
    assert_eq!(ok.code, 0, "{}", ok.stdout);

    // Flip one byte of tensor data, drop a shard, add a stray one.
    let mut b = std::fs::read(&shard).unwrap();
    let last = b.len() - 1;
    b[last] ^= 1;
    std::fs::write(&shard, b).unwrap();
    std::fs::remove_file(c.dir.join("model-00004-of-00004.safetensors")).unwrap();
    std::fs::write(c.dir.join("new.safetensors"), b"x").unwrap();
    let bad = run(&["verify", "--json", manifest.to_str().unwrap()]);
    assert_eq!(bad.code, 1);
    let v: serde_json::Value = serde_json::from_str(&bad.stdout).unwrap();
    let status = |file: &str| {
        v["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["file"] == file)
            .map(|f| f["status"].as_str().unwrap().to_string())
    };
    assert_eq!(status("model-00001-of-00004.safetensors").as_deref(), Some("changed"));
    assert_eq!(status("model-00004-of-00004.safetensors").as_deref(), Some("missing"));
    assert_eq!(status("new.safetensors").as_deref(), Some("new"));
    assert_eq!(status("config.json").as_deref(), Some("ok"));
}

#[test]
fn readme_documents_every_finding_code_and_starts_with_the_two_commands() {
    let readme = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    for c in ckptpilot::findings::CODES {
        assert!(readme.contains(&format!("| `{}` |", c.code)), "README lacks finding code {}", c.code);
    }
    let first_block: Vec<&str> = readme.split("```").nth(1).unwrap().lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(first_block, ["cargo run --release -- audit fixtures/deepseek-fp8", "cargo test"]);
    let ci = std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(".ci/run")).unwrap();
    assert!(ci.contains("cargo test"), "CI runs the README's test command");
}

#[test]
fn bench_dequant_reports_ratios_as_json() {
    let r = run(&["bench", "dequant", "--shape", "256,384", "--reps", "2", "--threads", "1", "--json"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert_eq!(v["schema"], "ckptpilot.bench.dequant/1");
    for k in ["ratio_to_widen", "gbps_fp8_in"] {
        assert!(v[k].as_f64().is_some_and(|x| x > 0.0), "{k}: {}", v[k]);
    }
    assert_eq!(v["results"][0]["threads"], 1);
    // A real tensor of a fixture, with its scale found as the audit pairs it.
    let t = format!("{}:model.layers.0.mlp.down_proj.weight", fixture("deepseek-fp8").display());
    let r = run(&["bench", "dequant", "--tensor", &t, "--reps", "1", "--threads", "1"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
    assert!(r.stdout.contains("down_proj.weight") && r.stdout.contains("vs widen"), "{}", r.stdout);
    let r = run(&["bench", "dequant", "--tensor", &format!("{}:model.norm.weight", fixture("deepseek-fp8").display())]);
    assert_eq!(r.code, 2, "a tensor that is not an fp8 weight is a usage error");
    assert!(r.stderr.contains("not an fp8 format"), "{}", r.stderr);
}
