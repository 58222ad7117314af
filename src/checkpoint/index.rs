//! `model.safetensors.index.json`: which tensor lives in which shard.

use super::header::{error_offset, parse_object_entries};
use crate::findings::{Code, Finding};
use std::collections::BTreeMap;
use std::path::{Component, Path};

pub const INDEX_NAME: &str = "model.safetensors.index.json";

#[derive(Debug, Default)]
pub struct Index {
    /// tensor name → shard file name, as written.
    pub weight_map: BTreeMap<String, String>,
    pub total_size: Option<u64>,
    /// Shard file names in first-mention order, each once, path-safe ones only.
    pub shards: Vec<String>,
}

/// Parse the index text. Problems become findings; what could be read is returned.
pub fn parse(text: &str, out: &mut Vec<Finding>) -> Option<Index> {
    let entries = match parse_object_entries(text) {
        Ok(e) => e,
        Err(e) => {
            out.push(
                Finding::new(Code::IndexNotJson, format!("byte {}: {e}", error_offset(text, &e))).file(INDEX_NAME),
            );
            return None;
        }
    };
    let mut idx = Index::default();
    let mut have_map = false;
    for (k, v) in &entries {
        match k.as_str() {
            "metadata" => {
                if let Some(ts) = v.get("total_size") {
                    match ts.as_u64().or_else(|| ts.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64)) {
                        Some(n) => idx.total_size = Some(n),
                        None => out.push(
                            Finding::new(Code::IndexInvalid, format!("`metadata.total_size` is {ts}, not a byte count"))
                                .file(INDEX_NAME)
                                .severity(crate::findings::Severity::Warning),
                        ),
                    }
                }
            }
            "weight_map" => {
                have_map = true;
                let raw = serde_json::to_string(v).unwrap_or_default();
                let wm = match parse_object_entries(&raw) {
                    Ok(wm) => wm,
                    Err(_) => {
                        out.push(Finding::new(Code::IndexInvalid, format!("`weight_map` is {v:.60}, not an object")).file(INDEX_NAME));
                        continue;
                    }
                };
                for (name, file) in wm {
                    let Some(file) = file.as_str() else {
                        out.push(
                            Finding::new(Code::IndexInvalid, format!("`weight_map[{name:?}]` is {file}, not a file name"))
                                .file(INDEX_NAME)
                                .tensor(name),
                        );
                        continue;
                    };
                    if !is_safe_relative(file) {
                        out.push(
                            Finding::new(Code::IndexPathEscape, format!("shard path {file:?} for {name:?} escapes the checkpoint directory"))
                                .file(INDEX_NAME)
                                .tensor(name),
                        );
                        continue;
                    }
                    if !idx.shards.iter().any(|s| s == file) {
                        idx.shards.push(file.to_string());
                    }
                    if let Some(prev) = idx.weight_map.insert(name.clone(), file.to_string()) {
                        if prev != file {
                            out.push(
                                Finding::new(
                                    Code::TensorInTwoShards,
                                    format!("the index lists {name:?} twice: in {prev} and in {file}"),
                                )
                                .file(INDEX_NAME)
                                .tensor(name),
                            );
                        }
                    }
                }
            }
            _ => {}
        }
    }
    if !have_map {
        out.push(Finding::new(Code::IndexInvalid, "the index has no `weight_map`").file(INDEX_NAME));
    }
    Some(idx)
}

/// A relative path with no `..`, root or prefix component.
pub fn is_safe_relative(p: &str) -> bool {
    !p.is_empty()
        && !p.contains('\\')
        && Path::new(p).components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_safety() {
        assert!(is_safe_relative("model-00001-of-00002.safetensors"));
        assert!(is_safe_relative("sub/model.safetensors"));
        assert!(!is_safe_relative("../x.safetensors"));
        assert!(!is_safe_relative("/etc/passwd"));
        assert!(!is_safe_relative("a/../../b"));
    }
}
