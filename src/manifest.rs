//! Integrity manifests: a blake3 hash of every file of a checkpoint, and a check against one.
//!
//! Files are hashed in parallel; each is memory-mapped and hashed with blake3's own multi-threaded
//! tree hash, so memory stays bounded by the page cache, never by the checkpoint size.

use crate::checkpoint::Checkpoint;
use crate::error::CheckpointError;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const MANIFEST_SCHEMA: &str = "ckptkit.manifest/1";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileHash {
    pub file: String,
    pub bytes: u64,
    pub blake3: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: String,
    pub root: String,
    pub files: Vec<FileHash>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: not a ckptkit manifest: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

pub fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let mut h = blake3::Hasher::new();
    h.update_mmap_rayon(path)?;
    let len = std::fs::metadata(path)?.len();
    Ok((len, h.finalize().to_hex().to_string()))
}

/// The files a manifest covers: the shards, the index, config.json and hf_quant_config.json.
fn covered_files(ck: &Checkpoint) -> Vec<String> {
    let mut files: Vec<String> = ck.shards.iter().map(|s| s.name.clone()).collect();
    for extra in [crate::checkpoint::index::INDEX_NAME, "config.json", "hf_quant_config.json"] {
        if ck.source.single_file.is_none() && ck.source.root.join(extra).is_file() {
            files.push(extra.to_string());
        }
    }
    files
}

pub fn build(ck: &Checkpoint) -> Result<Manifest, ManifestError> {
    let root = &ck.source.root;
    let files = covered_files(ck);
    let hashed: Result<Vec<FileHash>, ManifestError> = files
        .par_iter()
        .map(|f| {
            let p = root.join(f);
            let (bytes, blake3) = hash_file(&p).map_err(|source| ManifestError::Io { path: p.clone(), source })?;
            Ok(FileHash { file: f.clone(), bytes, blake3 })
        })
        .collect();
    Ok(Manifest { schema: MANIFEST_SCHEMA.into(), root: root.display().to_string(), files: hashed? })
}

/// Write atomically: a temporary file renamed into place.
pub fn write(m: &Manifest, path: &Path) -> Result<(), ManifestError> {
    let tmp = path.with_extension("tmp-ckptkit");
    let text = serde_json::to_string_pretty(m).expect("manifest serializes");
    std::fs::write(&tmp, text + "\n").map_err(|source| ManifestError::Io { path: tmp.clone(), source })?;
    std::fs::rename(&tmp, path).map_err(|source| ManifestError::Io { path: path.to_path_buf(), source })
}

pub fn read(path: &Path) -> Result<Manifest, ManifestError> {
    let text =
        std::fs::read_to_string(path).map_err(|source| ManifestError::Io { path: path.to_path_buf(), source })?;
    let m: Manifest = serde_json::from_str(&text)
        .map_err(|e| ManifestError::Invalid { path: path.to_path_buf(), reason: e.to_string() })?;
    if m.schema != MANIFEST_SCHEMA {
        return Err(ManifestError::Invalid {
            path: path.to_path_buf(),
            reason: format!("schema {:?}, expected {MANIFEST_SCHEMA:?}", m.schema),
        });
    }
    Ok(m)
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum FileCheck {
    Ok {
        file: String,
    },
    Changed {
        file: String,
        expected: String,
        actual: String,
    },
    Resized {
        file: String,
        expected_bytes: u64,
        actual_bytes: u64,
    },
    Missing {
        file: String,
    },
    /// On disk (a shard vLLM would read) but not in the manifest.
    New {
        file: String,
    },
}

#[derive(Debug, Serialize)]
pub struct Verification {
    pub schema: &'static str,
    pub root: String,
    pub files: Vec<FileCheck>,
    pub ok: bool,
}

/// Check the checkpoint at `root` against `m`.
pub fn verify(m: &Manifest, root: &Path) -> Verification {
    let mut checks: Vec<FileCheck> = m
        .files
        .par_iter()
        .map(|f| {
            let p = root.join(&f.file);
            match std::fs::metadata(&p) {
                Err(_) => FileCheck::Missing { file: f.file.clone() },
                Ok(md) if md.len() != f.bytes => {
                    FileCheck::Resized { file: f.file.clone(), expected_bytes: f.bytes, actual_bytes: md.len() }
                }
                Ok(_) => match hash_file(&p) {
                    Ok((_, h)) if h == f.blake3 => FileCheck::Ok { file: f.file.clone() },
                    Ok((_, h)) => FileCheck::Changed { file: f.file.clone(), expected: f.blake3.clone(), actual: h },
                    Err(_) => FileCheck::Missing { file: f.file.clone() },
                },
            }
        })
        .collect();
    if let Ok(rd) = std::fs::read_dir(root) {
        let mut new: Vec<String> = rd
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".safetensors") && !m.files.iter().any(|f| &f.file == n))
            .collect();
        new.sort();
        checks.extend(new.into_iter().map(|file| FileCheck::New { file }));
    }
    let ok = checks.iter().all(|c| matches!(c, FileCheck::Ok { .. }));
    Verification { schema: "ckptkit.verify/1", root: root.display().to_string(), files: checks, ok }
}
