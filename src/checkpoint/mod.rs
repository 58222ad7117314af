//! The checkpoint on disk: resolution of the input, vLLM's file selection, memory-mapped shards with
//! validated headers, the index checked both ways, and the config.

pub mod config;
pub mod dtype;
pub mod header;
pub mod index;
pub mod resolve;
pub mod shard;

pub use config::ModelConfig;
pub use dtype::Dtype;
pub use header::TensorEntry;
pub use index::Index;
pub use resolve::Source;
pub use shard::Shard;

use crate::error::CheckpointError;
use crate::findings::{Code, Finding};
use rayon::prelude::*;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;

/// A checkpoint with every shard mapped and every header validated.
#[derive(Debug)]
pub struct Checkpoint {
    pub source: Source,
    pub shards: Vec<Shard>,
    pub index: Option<Index>,
    pub config_json: Option<Value>,
    pub config: Option<ModelConfig>,
    /// `hf_quant_config.json` (older ModelOpt exports), when present.
    pub hf_quant_config: Option<Value>,
    /// Every tensor a loader would see: name → (shard index, entry index). When a name is in two
    /// shards (itself a finding), the later shard in load order wins, as in vLLM.
    by_name: HashMap<String, (usize, usize)>,
    /// Tensor names in load order (shards in natural order, header order within a shard).
    order: Vec<(usize, usize)>,
}

/// A tensor and the shard it is in.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    pub shard: &'a Shard,
    pub entry: &'a TensorEntry,
}

impl Checkpoint {
    /// Resolve `input` and open it. Errors only when the input itself is missing or unreadable;
    /// everything wrong inside the checkpoint is returned as findings.
    pub fn open(input: &str) -> Result<(Checkpoint, Vec<Finding>), CheckpointError> {
        let source = resolve::resolve(input)?;
        Checkpoint::open_source(source)
    }

    pub fn open_source(source: Source) -> Result<(Checkpoint, Vec<Finding>), CheckpointError> {
        let mut findings = Vec::new();
        let root = source.root.clone();
        let (config_json, config) = read_config(&root, &mut findings);
        let hf_quant_config = std::fs::read_to_string(root.join("hf_quant_config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<Value>(&t).ok());

        let mut index = None;
        let shard_names: Vec<String> = match &source.single_file {
            Some(f) => vec![f.clone()],
            None => select_files(&root, &mut index, &mut findings)?,
        };

        let opened: Vec<(Shard, Vec<Finding>)> =
            shard_names.par_iter().map(|name| Shard::open(&root.join(name), name.clone())).collect();
        let mut shards = Vec::with_capacity(opened.len());
        for (s, f) in opened {
            findings.extend(f);
            shards.push(s);
        }

        let mut by_name: HashMap<String, (usize, usize)> = HashMap::new();
        let mut order = Vec::new();
        let mut first_shard: HashMap<&str, usize> = HashMap::new();
        for (si, s) in shards.iter().enumerate() {
            for (ti, t) in s.tensors().iter().enumerate() {
                if let Some(&prev) = first_shard.get(t.name.as_str()) {
                    findings.push(
                        Finding::new(
                            Code::TensorInTwoShards,
                            format!("{:?} is stored in {} and again in {}", t.name, shards[prev].name, s.name),
                        )
                        .file(s.name.clone())
                        .tensor(t.name.clone()),
                    );
                } else {
                    first_shard.insert(&t.name, si);
                }
                by_name.insert(t.name.clone(), (si, ti));
                order.push((si, ti));
            }
        }
        if let Some(idx) = &index {
            cross_check_index(idx, &shards, &by_name, &mut findings);
        }
        let ck = Checkpoint { source, shards, index, config_json, config, hf_quant_config, by_name, order };
        Ok((ck, findings))
    }

    pub fn get(&self, name: &str) -> Option<TensorRef<'_>> {
        self.by_name.get(name).map(|&(s, t)| TensorRef { shard: &self.shards[s], entry: &self.shards[s].tensors()[t] })
    }

    /// Every tensor in load order.
    pub fn tensors(&self) -> impl Iterator<Item = TensorRef<'_>> + '_ {
        self.order.iter().map(|&(s, t)| TensorRef { shard: &self.shards[s], entry: &self.shards[s].tensors()[t] })
    }

    pub fn tensor_count(&self) -> usize {
        self.order.len()
    }

    pub fn tensor_bytes(&self) -> u64 {
        self.tensors().map(|t| t.entry.nbytes()).sum()
    }
}

fn read_config(root: &Path, out: &mut Vec<Finding>) -> (Option<Value>, Option<ModelConfig>) {
    let path = root.join("config.json");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            out.push(Finding::new(Code::ConfigMissing, format!("no config.json in {}", root.display())).file("config.json"));
            return (None, None);
        }
        Err(e) => {
            out.push(Finding::new(Code::ConfigInvalid, format!("cannot read config.json: {e}")).file("config.json"));
            return (None, None);
        }
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(v) if v.is_object() => {
            let c = ModelConfig::from_value(&v);
            (Some(v), Some(c))
        }
        Ok(_) => {
            out.push(Finding::new(Code::ConfigInvalid, "config.json is not a JSON object").file("config.json"));
            (None, None)
        }
        Err(e) => {
            out.push(
                Finding::new(Code::ConfigInvalid, format!("config.json byte {}: {e}", header::error_offset(&text, &e)))
                    .file("config.json"),
            );
            (None, None)
        }
    }
}

/// vLLM's `_prepare_weights` for a directory: the shards named by the index when there is one,
/// otherwise every `*.safetensors`; stray and ignored files become findings.
fn select_files(root: &Path, index: &mut Option<Index>, out: &mut Vec<Finding>) -> Result<Vec<String>, CheckpointError> {
    let mut safetensors = Vec::new();
    let mut consolidated = Vec::new();
    let mut pickles = Vec::new();
    let rd = std::fs::read_dir(root).map_err(|e| CheckpointError::io(root, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| CheckpointError::io(root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !entry.path().is_file() {
            continue;
        }
        if name.ends_with(".safetensors") {
            if name.starts_with("consolidated") {
                consolidated.push(name);
            } else {
                safetensors.push(name);
            }
        } else if (name.ends_with(".bin") || name.ends_with(".pt") || name.ends_with(".pth"))
            && !matches!(name.as_str(), "training_args.bin" | "optimizer.bin" | "optimizer.pt" | "scheduler.pt" | "scaler.pt")
        {
            pickles.push(name);
        }
    }
    safetensors.sort_by(|a, b| natural_cmp(a, b));
    consolidated.sort();
    pickles.sort();

    let index_path = root.join(index::INDEX_NAME);
    let selected: Vec<String> = if index_path.is_file() {
        let text = std::fs::read_to_string(&index_path).map_err(|e| CheckpointError::io(&index_path, e))?;
        *index = index::parse(&text, out);
        let named = index.as_ref().map(|i| i.shards.clone()).unwrap_or_default();
        let mut present = Vec::new();
        for f in &named {
            if root.join(f).is_file() {
                present.push(f.clone());
            } else {
                let n = index.as_ref().map(|i| i.weight_map.values().filter(|v| *v == f).count()).unwrap_or(0);
                out.push(
                    Finding::new(
                        Code::IndexShardMissing,
                        format!("the index names {f} ({n} tensors) but it is not in {}", root.display()),
                    )
                    .file(f.clone()),
                );
            }
        }
        for f in &safetensors {
            if !named.contains(f) {
                out.push(
                    Finding::new(Code::UnindexedSafetensors, format!("{f} is not named by {}; vLLM will not read it", index::INDEX_NAME))
                        .file(f.clone()),
                );
            }
        }
        if index.is_none() {
            // An unreadable index: audit what is on disk so the header checks still run.
            safetensors.clone()
        } else {
            present.sort_by(|a, b| natural_cmp(a, b));
            present
        }
    } else {
        safetensors.clone()
    };
    if !consolidated.is_empty() {
        if safetensors.is_empty() && index.is_none() {
            // A Mistral-format checkpoint only: audit it as it is.
            return Ok(consolidated);
        }
        out.push(
            Finding::new(
                Code::StrayConsolidated,
                format!("{} beside the Hugging Face shards", consolidated.join(", ")),
            )
            .file(consolidated[0].clone()),
        );
    }
    if !pickles.is_empty() {
        if selected.is_empty() && index.is_none() {
            out.push(Finding::new(
                Code::NoWeights,
                format!("no *.safetensors, only {} (pickle weights are not audited; convert them to safetensors)", pickles.join(", ")),
            ));
        } else {
            out.push(Finding::new(Code::BinIgnored, format!("ignored by vLLM: {}", pickles.join(", "))).file(pickles[0].clone()));
        }
    } else if selected.is_empty() && index.is_none() {
        out.push(Finding::new(Code::NoWeights, format!("no *.safetensors in {}", root.display())));
    }
    Ok(selected)
}

fn cross_check_index(idx: &Index, shards: &[Shard], by_name: &HashMap<String, (usize, usize)>, out: &mut Vec<Finding>) {
    let shard_pos: HashMap<&str, usize> = shards.iter().enumerate().map(|(i, s)| (s.name.as_str(), i)).collect();
    for (name, file) in &idx.weight_map {
        let Some(&si) = shard_pos.get(file.as_str()) else { continue }; // missing shard: reported once
        let s = &shards[si];
        if !s.header.parsed {
            continue; // the header itself is broken: reported by the header checks
        }
        if s.find(name).is_none() {
            let elsewhere = by_name.get(name).map(|&(o, _)| format!(" (it is in {})", shards[o].name)).unwrap_or_default();
            out.push(
                Finding::new(Code::IndexKeyNotInShard, format!("the index puts {name:?} in {file}, whose header does not have it{elsewhere}"))
                    .file(file.clone())
                    .tensor(name.clone()),
            );
        }
    }
    for s in shards {
        for t in s.tensors() {
            if !idx.weight_map.contains_key(&t.name) {
                out.push(
                    Finding::new(Code::TensorNotInIndex, format!("{:?} is in {} but not in the index", t.name, s.name))
                        .file(s.name.clone())
                        .tensor(t.name.clone()),
                );
            }
        }
    }
    if let Some(total) = idx.total_size {
        let all_parsed = shards.iter().all(|s| s.header.parsed) && shards.len() == idx.shards.len();
        let sum: u64 = shards.iter().map(Shard::tensor_bytes).sum();
        if all_parsed && sum != total {
            out.push(
                Finding::new(
                    Code::TotalSizeMismatch,
                    format!("metadata.total_size is {total} but the shards hold {sum} bytes of tensor data (difference {})", sum as i128 - total as i128),
                )
                .file(index::INDEX_NAME),
            );
        }
    }
}

/// Natural order ("model-2" before "model-10"), as vLLM's `_natural_sort_key`.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    fn chunks(s: &str) -> Vec<(bool, &str)> {
        let mut v = Vec::new();
        let mut start = 0;
        let bytes = s.as_bytes();
        for i in 1..=bytes.len() {
            if i == bytes.len() || bytes[i].is_ascii_digit() != bytes[start].is_ascii_digit() {
                v.push((bytes[start].is_ascii_digit(), &s[start..i]));
                start = i;
            }
        }
        v
    }
    let (ca, cb) = (chunks(a), chunks(b));
    for (x, y) in ca.iter().zip(cb.iter()) {
        let o = match (x.0, y.0) {
            (true, true) => {
                let (tx, ty) = (x.1.trim_start_matches('0'), y.1.trim_start_matches('0'));
                tx.len().cmp(&ty.len()).then_with(|| tx.cmp(ty))
            }
            _ => x.1.cmp(y.1),
        };
        if o != std::cmp::Ordering::Equal {
            return o;
        }
    }
    ca.len().cmp(&cb.len())
}

#[cfg(test)]
mod tests {
    use super::natural_cmp;
    #[test]
    fn natural_order() {
        let mut v = vec!["m-10.safetensors", "m-2.safetensors", "m-1.safetensors"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["m-1.safetensors", "m-2.safetensors", "m-10.safetensors"]);
    }
}
