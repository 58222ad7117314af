//! Every command answers from the same view of the checkpoint: no slices for a layout vLLM refuses,
//! no answers from a checkpoint that cannot be read, one error per defect (issue "One model").

mod common;
use common::*;
use std::path::Path;

/// vLLM refuses TP 3 for qwen3-dense (4 heads, 2 KV heads); remap used to print q_proj 63 of 64
/// rows and k_proj 48 of 32 and exit 0.
#[test]
fn remap_and_stub_refuse_a_tp_vllm_refuses() {
    let m = fixture("qwen3-dense");
    let m = m.to_str().unwrap();
    let r = run(&["remap", m, "--tp", "3"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stdout.is_empty(), "no table: {}", r.stdout);
    assert!(
        r.stderr.contains("Total number of attention heads (4) must be divisible by tensor parallel size (3)"),
        "plan's own failure text: {}",
        r.stderr
    );
    assert!(r.stderr.contains("\nhelp: "), "{}", r.stderr);
    assert_eq!(run(&["remap", m, "--tp", "2"]).code, 0);

    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("stub");
    let r = run(&["stub", m, "--out", out.to_str().unwrap(), "--tp", "3"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("must be divisible by tensor parallel size (3)"), "{}", r.stderr);
    assert!(!out.exists(), "nothing written");
}

/// A text file named model.safetensors: audit reports the header error (and no cascade of
/// unfilled parameters); plan, remap and stub say the checkpoint cannot be read and exit 3.
#[test]
fn an_unreadable_checkpoint_is_one_error_and_no_answers() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("txt");
    std::fs::create_dir(&d).unwrap();
    std::fs::copy(fixture("llama").join("config.json"), d.join("config.json")).unwrap();
    std::fs::write(d.join("model.safetensors"), "hello text\n".repeat(2000)).unwrap();
    let (code, v) = audit_json(&d);
    assert_eq!(code, 1);
    assert_eq!(errors(&v), 1, "{:#?}", v["findings"]);
    expect(&v, "header-too-large", "error");
    let unfilled = findings_with(&v, "remap-unfilled");
    assert_eq!(unfilled.len(), 1);
    assert_eq!(unfilled[0]["severity"], "info", "folded under the unreadable shard");

    let dir = d.to_str().unwrap();
    let stub_out = tmp.path().join("stub");
    let stub_out = stub_out.to_str().unwrap();
    for args in [vec!["plan", dir], vec!["remap", dir], vec!["stub", dir, "--out", stub_out]] {
        let r = run(&args);
        assert_eq!(r.code, 3, "{args:?}: {}", r.stderr);
        assert!(r.stderr.contains("cannot be read") && r.stderr.contains("model.safetensors"), "{}", r.stderr);
        assert!(r.stdout.is_empty(), "{args:?}: {}", r.stdout);
    }
    assert!(!Path::new(stub_out).exists(), "no stub written");
}

/// A deleted lm_head.weight is one error (`lm-head-missing`), not also `remap-unfilled`.
#[test]
fn a_missing_lm_head_is_one_finding() {
    let c = copy_fixture("qwen3-dense");
    assert_eq!(drop_tensors(&c.dir, |n| n == "lm_head.weight"), 1);
    fix_total_size(&c.dir);
    let (code, v) = audit_json(&c.dir);
    assert_eq!(code, 1);
    expect(&v, "lm-head-missing", "error");
    assert_eq!(errors(&v), 1, "{:#?}", v["findings"]);
    assert!(findings_with(&v, "remap-unfilled").is_empty());
}

/// A model vLLM builds at no TP (native fp8 whose 72-wide expert gate/up are not whole 128-blocks:
/// vLLM's own build error, fixtures/oracle/deepseek-fp8.tp1.json) gets no kit with a made-up TP;
/// loaded dequantized on vLLM-Ascend it does.
#[test]
fn stub_refuses_a_model_vllm_builds_at_no_tp() {
    let tmp = tempfile::tempdir().unwrap();
    let m = fixture("deepseek-fp8");
    let out = tmp.path().join("vllm");
    let r = run(&["stub", m.to_str().unwrap(), "--out", out.to_str().unwrap(), "--target", "vllm"]);
    assert_eq!(r.code, 1, "{}", r.stderr);
    assert!(r.stderr.contains("gate's and up's weight = 72"), "{}", r.stderr);
    assert!(!out.exists());
    let out = tmp.path().join("ascend");
    let r = run(&["stub", m.to_str().unwrap(), "--out", out.to_str().unwrap(), "--target", "vllm-ascend"]);
    assert_eq!(r.code, 0, "{}", r.stderr);
}
