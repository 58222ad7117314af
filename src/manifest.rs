//! Integrity manifests: a blake3 hash of every file of a checkpoint, and a check against one.
//!
//! Files are hashed in parallel; each is read in 16 MiB chunks (never mapped: a file truncated
//! while hashed is an error, not a SIGBUS) and hashed with blake3's own multi-threaded tree hash,
//! so memory stays bounded by the chunk size, never by the checkpoint size.

use crate::checkpoint::Checkpoint;
use crate::error::CheckpointError;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

pub const MANIFEST_SCHEMA: &str = "ckptpilot.manifest/1";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct FileHash {
    pub file: String,
    pub bytes: u64,
    pub blake3: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: String,
    /// The checkpoint directory, absolute.
    pub root: String,
    /// Made from a single .safetensors file: `verify` then reports no new files.
    #[serde(default)]
    pub single_file: bool,
    /// Every file, relative to `root`, `/`-separated, sorted.
    pub files: Vec<FileHash>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: not a ckptpilot manifest: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
}

/// blake3 and length of a file, read in large chunks (never mapped: a file truncated while hashed
/// is an error, not a SIGBUS), each chunk hashed with blake3's multi-threaded tree hash.
pub fn hash_file(path: &Path) -> std::io::Result<(u64, String)> {
    let (mut f, _) = crate::fsutil::open_regular(path).map_err(|e| std::io::Error::other(e.to_string()))?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 16 << 20];
    let mut len = 0u64;
    loop {
        let n = match std::io::Read::read(&mut f, &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update_rayon(&buf[..n]);
        len += n as u64;
    }
    Ok((len, h.finalize().to_hex().to_string()))
}

/// A path that is there but is no regular file, and what it is.
type OddFile = (String, &'static str);

/// Directories a manifest does not descend into: version control and download-tool metadata.
const SKIP_DIRS: &[&str] = &[".git", ".cache", ".huggingface"];

/// Every file under `root` (following symlinks to files, as the Hugging Face cache links blobs),
/// as `/`-separated paths relative to it, sorted; `exclude` (the manifest itself) and ckptpilot's
/// own files (state records, locks, temporary files: [`crate::fsutil::is_own_file`]) left out, so a
/// rerun that only touches them does not change the checkpoint. FIFOs, devices and sockets are listed with their kind.
fn list_files(root: &Path, exclude: Option<&Path>) -> std::io::Result<(Vec<String>, Vec<OddFile>)> {
    let exclude = exclude.and_then(|p| std::fs::canonicalize(p).ok());
    let mut files = Vec::new();
    let mut odd = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new(), 0usize)];
    while let Some((dir, rel, depth)) = stack.pop() {
        for e in std::fs::read_dir(&dir)? {
            let e = e?;
            let name = e.file_name().to_string_lossy().into_owned();
            let relname = if rel.is_empty() { name.clone() } else { format!("{rel}/{name}") };
            let path = e.path();
            if crate::fsutil::is_own_file(&name) {
                continue;
            }
            let Ok(md) = std::fs::metadata(&path) else {
                odd.push((relname, "a dangling symbolic link"));
                continue;
            };
            if md.is_dir() {
                // Symlinked directories are not followed (a loop would never end); depth is bounded.
                let is_link = e.file_type().map(|t| t.is_symlink()).unwrap_or(false);
                if !SKIP_DIRS.contains(&name.as_str()) && !is_link && depth < 32 {
                    stack.push((path, relname, depth + 1));
                }
            } else if md.is_file() {
                if exclude.is_some() && std::fs::canonicalize(&path).ok() == exclude {
                    continue;
                }
                files.push(relname);
            } else {
                odd.push((relname, crate::fsutil::kind_of(md.file_type())));
            }
        }
    }
    files.sort();
    odd.sort();
    Ok((files, odd))
}

/// A manifest of every file of the checkpoint directory (a single-file input: that file and the
/// config beside it), with the directory's absolute path so `verify` works from anywhere.
/// `exclude` is the manifest's own path, when it is written inside the checkpoint.
pub fn build(ck: &Checkpoint, exclude: Option<&Path>) -> Result<Manifest, ManifestError> {
    let root = std::fs::canonicalize(&ck.source.root)
        .map_err(|source| ManifestError::Io { path: ck.source.root.clone(), source })?;
    let files: Vec<String> = match &ck.source.single_file {
        Some(f) => std::iter::once(f.clone())
            .chain(root.join("config.json").is_file().then(|| "config.json".to_string()))
            .collect(),
        None => list_files(&root, exclude).map_err(|source| ManifestError::Io { path: root.clone(), source })?.0,
    };
    let hashed: Result<Vec<FileHash>, ManifestError> = files
        .par_iter()
        .map(|f| {
            let p = root.join(f);
            let (bytes, blake3) = hash_file(&p).map_err(|source| ManifestError::Io { path: p.clone(), source })?;
            Ok(FileHash { file: f.clone(), bytes, blake3 })
        })
        .collect();
    Ok(Manifest {
        schema: MANIFEST_SCHEMA.into(),
        root: root.display().to_string(),
        single_file: ck.source.single_file.is_some(),
        files: hashed?,
    })
}

/// Write atomically: a temporary file renamed into place.
pub fn write(m: &Manifest, path: &Path) -> Result<(), ManifestError> {
    let text = serde_json::to_string_pretty(m).expect("manifest serializes");
    crate::fsutil::write_atomic(path, (text + "\n").as_bytes())
        .map_err(|source| ManifestError::Io { path: path.to_path_buf(), source })
}

pub fn read(path: &Path) -> Result<Manifest, ManifestError> {
    let text = crate::fsutil::read_bounded(path, crate::fsutil::INDEX_CAP)
        .map_err(|e| ManifestError::Io { path: path.to_path_buf(), source: std::io::Error::other(e.to_string()) })?;
    let m: Manifest = serde_json::from_slice(&text)
        .map_err(|e| ManifestError::Invalid { path: path.to_path_buf(), reason: e.to_string() })?;
    if let Some(f) = m.files.iter().find(|f| !crate::checkpoint::index::is_safe_relative(&f.file)) {
        return Err(ManifestError::Invalid {
            path: path.to_path_buf(),
            reason: format!("{:?} is not a path inside the checkpoint", f.file),
        });
    }
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
    /// On disk but not in the manifest.
    New {
        file: String,
    },
    /// There but cannot be read.
    Unreadable {
        file: String,
        error: String,
    },
    /// A FIFO, device, socket or dangling link where a file could be.
    NotRegular {
        file: String,
        kind: &'static str,
    },
}

#[derive(Debug, Serialize)]
pub struct Verification {
    pub schema: &'static str,
    pub root: String,
    pub files: Vec<FileCheck>,
    pub ok: bool,
}

/// Check the checkpoint at `root` against `m`: every file changed, resized, missing or added
/// (`exclude`: the manifest's own path, when it lies inside the checkpoint).
pub fn verify(m: &Manifest, root: &Path, exclude: Option<&Path>) -> Verification {
    let mut checks: Vec<FileCheck> = m
        .files
        .par_iter()
        .map(|f| {
            let p = root.join(&f.file);
            match std::fs::metadata(&p) {
                Err(_) => FileCheck::Missing { file: f.file.clone() },
                Ok(md) if !md.is_file() => {
                    FileCheck::NotRegular { file: f.file.clone(), kind: crate::fsutil::kind_of(md.file_type()) }
                }
                Ok(md) if md.len() != f.bytes => {
                    FileCheck::Resized { file: f.file.clone(), expected_bytes: f.bytes, actual_bytes: md.len() }
                }
                Ok(_) => match hash_file(&p) {
                    Ok((_, h)) if h == f.blake3 => FileCheck::Ok { file: f.file.clone() },
                    Ok((_, h)) => FileCheck::Changed { file: f.file.clone(), expected: f.blake3.clone(), actual: h },
                    Err(e) => FileCheck::Unreadable { file: f.file.clone(), error: e.to_string() },
                },
            }
        })
        .collect();
    if !m.single_file {
        match list_files(root, exclude) {
            Ok((files, odd)) => {
                let known: std::collections::HashSet<&str> = m.files.iter().map(|f| f.file.as_str()).collect();
                checks.extend(
                    files.into_iter().filter(|f| !known.contains(f.as_str())).map(|file| FileCheck::New { file }),
                );
                checks.extend(
                    odd.into_iter()
                        .filter(|(f, _)| !known.contains(f.as_str()))
                        .map(|(file, kind)| FileCheck::NotRegular { file, kind }),
                );
            }
            Err(e) => checks.push(FileCheck::Unreadable { file: ".".into(), error: e.to_string() }),
        }
    }
    let ok = checks.iter().all(|c| matches!(c, FileCheck::Ok { .. }));
    Verification { schema: "ckptpilot.verify/1", root: root.display().to_string(), files: checks, ok }
}

impl crate::ui::Help for ManifestError {
    fn help(&self) -> String {
        match self {
            ManifestError::Io { .. } => "check the manifest path and that you may read (or write) it".into(),
            ManifestError::Invalid { .. } => {
                "pass a manifest written by `ckptpilot audit MODEL --checksum FILE`".into()
            }
            ManifestError::Checkpoint(e) => crate::ui::Help::help(e),
        }
    }
}
