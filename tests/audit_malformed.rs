//! One test per malformed-input class: each breaks a copy of a real fixture in one way and asserts
//! the finding's code, severity, file, tensor and the numbers in its message; exit status 1.

mod common;
use common::*;
use serde_json::{json, Value};
use std::path::Path;

const SHARD: &str = "model-00002-of-00004.safetensors";
const T: &str = "model.layers.1.mlp.down_proj.weight";

fn broken(f: impl FnOnce(&Path)) -> Value {
    let c = copy_fixture("qwen3-dense");
    f(&c.dir);
    let (code, r) = audit_json(&c.dir);
    assert_eq!(code, 1, "error findings must exit 1: {:?}", codes(&r));
    r
}

fn shard(dir: &Path) -> std::path::PathBuf {
    dir.join(SHARD)
}

fn msg(f: &Value) -> &str {
    f["message"].as_str().unwrap()
}

#[test]
fn empty_file() {
    let r = broken(|d| std::fs::write(shard(d), b"").unwrap());
    let f = expect(&r, "file-empty", "error");
    assert_eq!(f["file"], SHARD);
}

#[test]
fn shorter_than_eight_bytes() {
    let r = broken(|d| std::fs::write(shard(d), b"\x05\0\0").unwrap());
    assert!(msg(expect(&r, "header-too-small", "error")).contains("3 bytes"));
}

#[test]
fn git_lfs_pointer() {
    let r = broken(|d| {
        std::fs::write(shard(d), "version https://git-lfs.github.com/spec/v1\noid sha256:4d7a2146\nsize 81920\n")
            .unwrap()
    });
    let f = expect(&r, "lfs-pointer", "error");
    assert!(msg(f).contains("download is incomplete"), "{f}");
    assert!(msg(f).contains("sha256:4d7a2146"));
}

#[test]
fn header_length_over_the_cap() {
    let r = broken(|d| {
        let mut b = std::fs::read(shard(d)).unwrap();
        b[..8].copy_from_slice(&200_000_000u64.to_le_bytes());
        std::fs::write(shard(d), b).unwrap();
    });
    assert!(msg(expect(&r, "header-too-large", "error")).contains("200000000"));
}

#[test]
fn header_length_past_end_of_file() {
    let r = broken(|d| {
        let mut b = std::fs::read(shard(d)).unwrap();
        let len = b.len() as u64;
        b[..8].copy_from_slice(&len.to_le_bytes());
        std::fs::write(shard(d), b).unwrap();
    });
    assert!(msg(expect(&r, "header-past-eof", "error")).contains("past the end"));
}

#[test]
fn header_not_utf8() {
    let r = broken(|d| {
        let mut b = std::fs::read(shard(d)).unwrap();
        b[8 + 20] = 0xFF;
        std::fs::write(shard(d), b).unwrap();
    });
    let f = expect(&r, "header-not-utf8", "error");
    assert!(msg(f).contains("header byte 20 (file offset 28)"), "{f}");
}

#[test]
fn header_not_json() {
    let r = broken(|d| edit_header_text(&shard(d), |t| t.replacen("\"dtype\":", "\"dtype\";", 1)));
    let f = expect(&r, "header-not-json", "error");
    assert!(msg(f).contains("header at byte"), "{f}");
}

#[test]
fn header_not_an_object() {
    let r = broken(|d| {
        let st = read_st(&shard(d));
        write_raw(&shard(d), "[1, 2, 3]", &st.data);
    });
    expect(&r, "header-not-object", "error");
}

#[test]
fn duplicate_tensor_name_names_both_entries() {
    // k_proj and v_proj names have the same length: renaming one makes a true duplicate.
    let r = broken(|d| {
        edit_header_text(&shard(d), |t| {
            t.replace("model.layers.1.self_attn.v_proj.weight", "model.layers.1.self_attn.k_proj.weight")
        })
    });
    let f = expect(&r, "duplicate-tensor", "error");
    assert_eq!(f["tensor"], "model.layers.1.self_attn.k_proj.weight");
    assert!(msg(f).contains("appears twice"), "{f}");
    // Both occurrences keep their byte ranges: no spurious hole or overlap is reported.
    assert!(
        findings_with(&r, "data-hole").is_empty() && findings_with(&r, "tensor-overlap").is_empty(),
        "{:?}",
        codes(&r)
    );
}

#[test]
fn metadata_not_string_map() {
    let r = broken(|d| edit_header(&shard(d), |h| h["__metadata__"] = json!({"format": "pt", "step": 3})));
    assert!(msg(expect(&r, "metadata-invalid", "error")).contains("\"step\""));
}

#[test]
fn missing_extra_and_mistyped_fields() {
    let r = broken(|d| {
        edit_header(&shard(d), |h| {
            h[T].as_object_mut().unwrap().remove("dtype");
            h["model.layers.1.input_layernorm.weight"]["checksum"] = json!("abc");
            h["model.layers.1.mlp.up_proj.weight"]["shape"] = json!("128x64");
        })
    });
    assert_eq!(expect(&r, "tensor-field-missing", "error")["tensor"], T);
    expect(&r, "tensor-field-unknown", "warning");
    assert!(msg(expect(&r, "tensor-field-type", "error")).contains("`shape` is a string"));
}

#[test]
fn data_offsets_arity() {
    let r = broken(|d| edit_header(&shard(d), |h| h[T]["data_offsets"] = json!([0, 1, 2])));
    assert!(msg(expect(&r, "data-offsets-arity", "error")).contains("3 elements"));
}

#[test]
fn unknown_dtype_lists_the_known_ones() {
    let r = broken(|d| edit_header(&shard(d), |h| h[T]["dtype"] = json!("BF17")));
    let m = msg(expect(&r, "dtype-unknown", "error")).to_string();
    assert!(m.contains("BF17") && m.contains("F8_E4M3") && m.contains("BF16"), "{m}");
}

#[test]
fn negative_and_fractional_dimensions() {
    let r = broken(|d| {
        edit_header(&shard(d), |h| {
            h[T]["shape"] = json!([-64, 128]);
            h["model.layers.1.mlp.up_proj.weight"]["shape"] = json!([128, 64.5]);
        })
    });
    let f = findings_with(&r, "shape-invalid");
    assert_eq!(f.len(), 2, "{:?}", codes(&r));
    assert!(f.iter().any(|f| msg(f).contains("negative")));
    assert!(f.iter().any(|f| msg(f).contains("not an integer")));
}

#[test]
fn shape_overflow() {
    let r = broken(|d| edit_header(&shard(d), |h| h[T]["shape"] = json!([4194305u64, 4194305u64, 211106198978564u64])));
    assert!(msg(expect(&r, "size-overflow", "error")).contains("overflows 64 bits"));
}

#[test]
fn end_before_begin() {
    let r = broken(|d| {
        edit_header(&shard(d), |h| {
            let (b, e) = (h[T]["data_offsets"][0].clone(), h[T]["data_offsets"][1].clone());
            h[T]["data_offsets"] = json!([e, b]);
        })
    });
    expect(&r, "offsets-reversed", "error");
}

#[test]
fn size_mismatch_gives_both_numbers() {
    let r = broken(|d| edit_header(&shard(d), |h| h[T]["shape"] = json!([64, 127])));
    let m = msg(expect(&r, "size-mismatch", "error")).to_string();
    assert!(m.contains("hold 16384 bytes") && m.contains("needs 16256"), "{m}");
}

#[test]
fn overlapping_tensors_name_both() {
    let r = broken(|d| {
        edit_header(&shard(d), |h| {
            let b = h[T]["data_offsets"][0].as_u64().unwrap();
            // Shift the up_proj range onto down_proj's start (same size, so only the overlap is wrong).
            let up = "model.layers.1.mlp.up_proj.weight";
            let len = h[up]["data_offsets"][1].as_u64().unwrap() - h[up]["data_offsets"][0].as_u64().unwrap();
            h[up]["data_offsets"] = json!([b + 64, b + 64 + len]);
        })
    });
    let f = expect(&r, "tensor-overlap", "error");
    assert!(msg(f).contains(T) && msg(f).contains("up_proj"), "{f}");
}

#[test]
fn hole_gives_the_byte_range() {
    let r = broken(|d| {
        let mut st = read_st(&shard(d));
        // Insert 32 unused bytes in front of the data: every offset moves up by 32.
        for (k, v) in st.header.iter_mut() {
            if k != "__metadata__" {
                let (b, e) = (v["data_offsets"][0].as_u64().unwrap(), v["data_offsets"][1].as_u64().unwrap());
                v["data_offsets"] = json!([b + 32, e + 32]);
            }
        }
        let mut data = vec![0u8; 32];
        data.extend_from_slice(&st.data);
        st.data = data;
        write_st(&shard(d), &st);
    });
    assert!(msg(expect(&r, "data-hole", "error")).starts_with("data bytes [0, 32)"));
}

#[test]
fn truncated_file_says_by_how_much() {
    let r = broken(|d| {
        let b = std::fs::read(shard(d)).unwrap();
        std::fs::write(shard(d), &b[..b.len() - 1000]).unwrap();
    });
    let f = expect(&r, "file-truncated", "error");
    assert!(msg(f).contains("truncated by 1000 bytes"), "{f}");
    assert!(findings_with(&r, "trailing-bytes").is_empty());
}

#[test]
fn trailing_bytes_are_not_truncation() {
    let r = broken(|d| {
        let mut b = std::fs::read(shard(d)).unwrap();
        b.extend_from_slice(&[7u8; 48]);
        std::fs::write(shard(d), b).unwrap();
    });
    assert!(msg(expect(&r, "trailing-bytes", "error")).starts_with("48 trailing bytes"));
    assert!(findings_with(&r, "file-truncated").is_empty());
}

#[test]
fn index_not_json() {
    let r = broken(|d| std::fs::write(d.join("model.safetensors.index.json"), "{\"weight_map\": {").unwrap());
    expect(&r, "index-not-json", "error");
}

#[test]
fn index_names_a_missing_shard() {
    let r = broken(|d| std::fs::remove_file(shard(d)).unwrap());
    let f = expect(&r, "index-shard-missing", "error");
    assert_eq!(f["file"], SHARD);
    assert!(msg(f).contains("17 tensors"), "{f}");
    // The missing shard's tensors are not also reported one by one.
    assert!(findings_with(&r, "index-key-not-in-shard").is_empty());
}

#[test]
fn index_key_absent_from_its_shard() {
    let r = broken(|d| {
        edit_json(&d.join("model.safetensors.index.json"), |v| {
            v["weight_map"]["model.layers.9.mlp.gate_proj.weight"] = json!(SHARD)
        })
    });
    let f = expect(&r, "index-key-not-in-shard", "error");
    assert_eq!(f["tensor"], "model.layers.9.mlp.gate_proj.weight");
    // In no shard at all: the message names none.
    assert_eq!(
        msg(f),
        format!("the index puts \"model.layers.9.mlp.gate_proj.weight\" in {SHARD}, whose header does not have it")
    );
}

#[test]
fn index_key_in_another_shard() {
    // Where the tensor really is is found once every header is in (the index is checked while
    // the checkpoint's name table is built).
    let other = "model-00001-of-00004.safetensors";
    let r = broken(|d| edit_json(&d.join("model.safetensors.index.json"), |v| v["weight_map"][T] = json!(other)));
    let f = expect(&r, "index-key-not-in-shard", "error");
    assert_eq!(f["file"], other);
    assert_eq!(msg(f), format!("the index puts \"{T}\" in {other}, whose header does not have it (it is in {SHARD})"));
}

#[test]
fn shard_tensor_absent_from_index() {
    // vLLM reads every key of a selected shard, so the tensor still loads: a warning, exit 0.
    let c = copy_fixture("qwen3-dense");
    edit_json(&c.dir.join("model.safetensors.index.json"), |v| {
        v["weight_map"].as_object_mut().unwrap().remove(T);
    });
    let (code, r) = audit_json(&c.dir);
    assert_eq!(code, 0);
    let f = expect(&r, "tensor-not-in-index", "warning");
    assert_eq!(f["tensor"], T);
    assert_eq!(f["file"], SHARD);
}

#[test]
fn one_tensor_in_two_shards() {
    let r = broken(|d| {
        // A copy of shard 2 under a new name, listed by the index for one of its tensors.
        std::fs::copy(shard(d), d.join("model-extra.safetensors")).unwrap();
        edit_json(&d.join("model.safetensors.index.json"), |v| v["weight_map"][T] = json!("model-extra.safetensors"));
    });
    let f = findings_with(&r, "tensor-in-two-shards");
    assert_eq!(f.len(), 17, "every tensor of the copied shard is stored twice");
    assert!(f.iter().any(|f| f["tensor"] == T));
}

#[test]
fn one_tensor_in_three_shards_in_load_order() {
    // Two copies of shard 2, each named by the index for one tensor (so vLLM reads both): every
    // tensor is stored three times, and each copy after the first is reported against the one
    // before it, copy after copy, tensor after tensor in header order.
    let r = broken(|d| {
        std::fs::copy(shard(d), d.join("model-extra.safetensors")).unwrap();
        std::fs::copy(shard(d), d.join("model-extra2.safetensors")).unwrap();
        edit_json(&d.join("model.safetensors.index.json"), |v| {
            let other = v["weight_map"]
                .as_object()
                .unwrap()
                .iter()
                .find(|(k, f)| k.as_str() != T && f.as_str() == Some(SHARD))
                .map(|(k, _)| k.clone())
                .unwrap();
            v["weight_map"][T] = json!("model-extra.safetensors");
            v["weight_map"][other] = json!("model-extra2.safetensors");
        });
    });
    let f = findings_with(&r, "tensor-in-two-shards");
    assert_eq!(f.len(), 34);
    // The copies in load order (as the report lists the shards).
    let loaded: Vec<&str> = r["shards"].as_array().unwrap().iter().map(|s| s["file"].as_str().unwrap()).collect();
    let at = |n: &str| loaded.iter().position(|&f| f == n).unwrap();
    let (a, b) = if at("model-extra.safetensors") < at("model-extra2.safetensors") {
        ("model-extra.safetensors", "model-extra2.safetensors")
    } else {
        ("model-extra2.safetensors", "model-extra.safetensors")
    };
    assert!(at(SHARD) < at(a));
    let (first, second) = f.split_at(17);
    for x in first {
        assert!(msg(x).ends_with(&format!("stored in {SHARD} and again in {a}")), "{}", msg(x));
    }
    for x in second {
        assert!(msg(x).ends_with(&format!("stored in {a} and again in {b}")), "{}", msg(x));
    }
    let names = |xs: &[&Value]| xs.iter().map(|x| x["tensor"].as_str().unwrap().to_string()).collect::<Vec<_>>();
    assert_eq!(names(first), names(second), "both copies in the shard's own order");
}

#[test]
fn shard_path_escaping_the_directory() {
    let r = broken(|d| {
        edit_json(&d.join("model.safetensors.index.json"), |v| v["weight_map"][T] = json!("../evil.safetensors"))
    });
    let f = expect(&r, "index-path-escape", "error");
    assert!(msg(f).contains("../evil.safetensors"));
}

#[test]
fn total_size_disagrees() {
    let c = copy_fixture("qwen3-dense");
    edit_json(&c.dir.join("model.safetensors.index.json"), |v| v["metadata"]["total_size"] = json!(12345));
    let (code, r) = audit_json(&c.dir);
    assert_eq!(code, 0, "a stale total_size is a warning");
    assert!(msg(expect(&r, "total-size-mismatch", "warning")).contains("total_size is 12345"));
}

#[test]
fn stray_files_vllm_would_ignore_or_misread() {
    let c = copy_fixture("qwen3-dense");
    std::fs::copy(c.dir.join(SHARD), c.dir.join("consolidated.safetensors")).unwrap();
    std::fs::copy(c.dir.join(SHARD), c.dir.join("leftover.safetensors")).unwrap();
    std::fs::write(c.dir.join("pytorch_model.bin"), b"pickle").unwrap();
    let (code, r) = audit_json(&c.dir);
    assert_eq!(code, 0, "{:?}", codes(&r));
    expect(&r, "stray-consolidated", "warning");
    assert_eq!(expect(&r, "unindexed-safetensors", "warning")["file"], "leftover.safetensors");
    expect(&r, "bin-ignored", "warning");
    // Files outside the index are not read: the tensor count is unchanged.
    assert_eq!(r["shards"].as_array().unwrap().len(), 4);
}

#[test]
fn no_weights_at_all() {
    let c = copy_fixture("qwen3-dense");
    for e in std::fs::read_dir(&c.dir).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap() != "config.json" {
            std::fs::remove_file(p).unwrap();
        }
    }
    let (code, r) = audit_json(&c.dir);
    assert_eq!(code, 1);
    expect(&r, "no-weights", "error");
}

#[test]
fn every_problem_is_reported_not_the_first() {
    let r = broken(|d| {
        std::fs::write(d.join("model-00001-of-00004.safetensors"), b"").unwrap();
        edit_header(&shard(d), |h| h[T]["dtype"] = json!("Q4"));
        let p = d.join("model-00003-of-00004.safetensors");
        let b = std::fs::read(&p).unwrap();
        std::fs::write(&p, &b[..b.len() - 10]).unwrap();
    });
    for c in ["file-empty", "dtype-unknown", "file-truncated"] {
        expect(&r, c, "error");
    }
}

#[test]
fn duplicate_key_in_the_index() {
    let c = copy_fixture("qwen3-dense");
    let p = c.dir.join("model.safetensors.index.json");
    let text = std::fs::read_to_string(&p).unwrap();
    let line = format!("    \"{T}\": \"{SHARD}\",\n");
    assert!(text.contains(&line));
    std::fs::write(&p, text.replacen(&line, &format!("{line}{line}"), 1)).unwrap();
    let (_, r) = audit_json(&c.dir);
    assert_eq!(expect(&r, "index-duplicate-key", "warning")["tensor"], T);
}
