//! Never a panic, whatever the input: byte-level mutations of a real shard's header and random
//! bytes, through the library's validator and the whole audit.

mod common;
use ckptpilot::checkpoint::header;
use common::*;

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545F4914F6CDD1D)
    }
}

#[test]
fn mutated_headers_never_panic() {
    let real = std::fs::read(fixture("qwen3-dense").join("model-00002-of-00004.safetensors")).unwrap();
    let hlen = u64::from_le_bytes(real[..8].try_into().unwrap()) as usize;
    let mut rng = Rng(0x9E3779B97F4A7C15);
    let interesting = [b'{', b'}', b'[', b']', b'"', b',', b':', b'-', b'0', b'9', 0xFF, 0x00, b'e', b' '];
    let mut findings_seen = 0;
    for i in 0..4000 {
        let mut b = real.clone();
        for _ in 0..(1 + rng.next() % 4) {
            let pos = (rng.next() as usize) % (8 + hlen);
            b[pos] = if rng.next() % 2 == 0 {
                interesting[(rng.next() as usize) % interesting.len()]
            } else {
                rng.next() as u8
            };
        }
        if i % 10 == 0 {
            let cut = (rng.next() as usize) % b.len();
            b.truncate(cut);
        }
        let mut out = Vec::new();
        let _ = header::validate(&b, "mutant", &mut out);
        findings_seen += out.len();
    }
    assert!(findings_seen > 1000, "mutations should mostly be caught ({findings_seen})");
}

#[test]
fn random_files_never_panic_the_audit() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = Rng(42);
    for i in 0..50 {
        let len = (rng.next() % 300) as usize;
        let mut b: Vec<u8> = (0..len).map(|_| rng.next() as u8).collect();
        if i % 2 == 0 && len >= 8 {
            b[..8].copy_from_slice(&((len as u64).saturating_sub(8 + (rng.next() % 8))).to_le_bytes());
        }
        std::fs::write(tmp.path().join(format!("f{i}.safetensors")), b).unwrap();
    }
    let r = run(&["audit", "--json", tmp.path().to_str().unwrap()]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"));
}

/// Sizes no real model has must give a clear finding, never a hang, an overflow or an allocation
/// sized by them: plan, remap, audit and stub on a config claiming 10^12 layers and experts.
#[test]
fn absurd_config_sizes_are_refused_not_iterated() {
    let c = copy_fixture("qwen3-moe");
    edit_json(&c.dir.join("config.json"), |cfg| {
        cfg["num_hidden_layers"] = serde_json::json!(1_000_000_000_000u64);
        cfg["num_experts"] = serde_json::json!(100_000_000_000u64);
        cfg["head_dim"] = serde_json::json!(4_294_967_296u64);
        cfg["vocab_size"] = serde_json::json!(u64::MAX);
    });
    let dir = c.dir.to_str().unwrap();
    let r = run(&["plan", dir, "--tp", "8", "--json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    let v: serde_json::Value = serde_json::from_str(&r.stdout).unwrap();
    assert!(v["configs"][0]["failures"][0]["message"].as_str().unwrap().contains("beyond any real model"));
    let r = run(&["remap", dir, "--json"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("beyond any real model"), "{}", r.stderr);
    let r = run(&["audit", dir, "--json"]);
    assert!(r.stdout.contains("beyond any real model"), "{}", r.stderr);
    let out = c.tmp.path().join("stub");
    let r = run(&["stub", dir, "--out", out.to_str().unwrap()]);
    assert_eq!(r.code, 1, "refused, no panic: {}", r.stderr);
    assert!(r.stderr.contains("beyond any real model"), "{}", r.stderr);
    assert!(!r.stderr.contains("panicked"), "{}", r.stderr);
}
