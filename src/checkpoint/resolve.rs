//! Turning what the user typed into files on disk: a directory, a single `.safetensors` file, or a
//! Hugging Face repo id resolved offline from the local cache.

use crate::error::CheckpointError;
use std::path::{Path, PathBuf};

/// Where a checkpoint came from, and the directory its files live in.
#[derive(Debug, Clone)]
pub struct Source {
    pub root: PathBuf,
    /// Set when the input was a single `.safetensors` file (its name relative to `root`).
    pub single_file: Option<String>,
    /// Set when the input was resolved from the Hugging Face cache.
    pub hf_repo: Option<String>,
    /// Set when the input was read from the Hub (headers only): `root` then holds its small files.
    pub remote: Option<Box<crate::hub::Remote>>,
}

impl Source {
    fn local(root: PathBuf, single_file: Option<String>, hf_repo: Option<String>) -> Source {
        Source { root, single_file, hf_repo, remote: None }
    }

    /// A repo read from the Hub.
    pub fn remote(r: crate::hub::Remote) -> Source {
        Source {
            root: r.root.clone(),
            single_file: None,
            hf_repo: Some(format!("{}@{}", r.repo, r.revision)),
            remote: Some(Box::new(r)),
        }
    }

    /// Where the files are, for messages: the directory, or `repo@commit` on the Hub.
    pub fn place(&self) -> String {
        match &self.remote {
            Some(r) => format!("{}@{} on {}", r.repo, &r.commit[..r.commit.len().min(12)], r.endpoint),
            None => self.root.display().to_string(),
        }
    }
}

pub fn resolve(input: &str) -> Result<Source, CheckpointError> {
    let p = Path::new(input);
    if p.is_dir() {
        return Ok(Source::local(p.to_path_buf(), None, None));
    }
    if p.is_file() {
        if p.extension().and_then(|e| e.to_str()) != Some("safetensors") {
            if p.file_name().and_then(|n| n.to_str()) == Some("config.json") {
                let root = p.parent().map(Path::to_path_buf).unwrap_or_else(|| PathBuf::from("."));
                return Ok(Source::local(root, None, None));
            }
            return Err(CheckpointError::NotACheckpoint { path: p.to_path_buf() });
        }
        let root = match p.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let name = p.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        return Ok(Source::local(root, Some(name), None));
    }
    if std::fs::metadata(p).is_ok() {
        // There, but a FIFO, a device or a socket.
        return Err(CheckpointError::NotACheckpoint { path: p.to_path_buf() });
    }
    if let Some((repo, rev)) = parse_repo_id(input) {
        // `fixtures/lama` is a legal repo id, but with a `fixtures/` directory here it is a
        // mistyped path: say so, instead of asking the Hub for it.
        let org = repo.split('/').next().unwrap_or_default();
        if Path::new(org).is_dir() {
            return Err(CheckpointError::LocalNotFound { path: input.to_string(), parent: format!("{org}/") });
        }
        let cache = hf_cache_root();
        return match snapshot_dir(&cache, &repo, rev.as_deref()) {
            Some(root) => Ok(Source::local(root, None, Some(input.to_string()))),
            None => Err(CheckpointError::NotCached { repo, revision: rev, cache }),
        };
    }
    Err(CheckpointError::NotFound { path: input.to_string() })
}

/// `org/name` or `org/name@revision`, with Hub-legal characters only.
pub fn parse_repo_id(s: &str) -> Option<(String, Option<String>)> {
    let (id, rev) = match s.split_once('@') {
        Some((id, rev)) if !rev.is_empty() => (id, Some(rev.to_string())),
        Some(_) => return None,
        None => (s, None),
    };
    let (org, name) = id.split_once('/')?;
    let legal = |x: &str| {
        !x.is_empty()
            && !x.starts_with('.')
            && x.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    (legal(org) && legal(name)).then(|| (id.to_string(), rev))
}

/// The hub cache directory, in huggingface_hub's precedence order.
pub fn hf_cache_root() -> PathBuf {
    let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty()).map(PathBuf::from);
    if let Some(p) = var("HF_HUB_CACHE").or_else(|| var("HUGGINGFACE_HUB_CACHE")) {
        return p;
    }
    if let Some(h) = var("HF_HOME") {
        return h.join("hub");
    }
    if let Some(x) = var("XDG_CACHE_HOME") {
        return x.join("huggingface").join("hub");
    }
    var("HOME").unwrap_or_else(|| PathBuf::from("/")).join(".cache").join("huggingface").join("hub")
}

/// The snapshot directory of `repo` at `revision` (a branch, tag or commit hash), if cached.
fn snapshot_dir(cache: &Path, repo: &str, revision: Option<&str>) -> Option<PathBuf> {
    let rev = revision.unwrap_or("main").to_string();
    let hub_repo = hf_hub::Repo::with_revision(repo.to_string(), hf_hub::RepoType::Model, rev.clone());
    let folder = cache.join(hub_repo.folder_name());
    // A commit hash names the snapshot directly; refs only hold branch and tag names.
    let direct = folder.join("snapshots").join(&rev);
    if rev.len() == 40 && rev.chars().all(|c| c.is_ascii_hexdigit()) && direct.is_dir() {
        return Some(direct);
    }
    let cached = hf_hub::Cache::new(cache.to_path_buf()).repo(hub_repo);
    for probe in ["config.json", "model.safetensors.index.json", "model.safetensors"] {
        if let Some(p) = cached.get(probe) {
            return p.parent().map(Path::to_path_buf);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repo_ids() {
        assert_eq!(parse_repo_id("Qwen/Qwen3-8B"), Some(("Qwen/Qwen3-8B".into(), None)));
        assert_eq!(parse_repo_id("a/b@v1.0"), Some(("a/b".into(), Some("v1.0".into()))));
        assert_eq!(parse_repo_id("a/b/c"), None);
        assert_eq!(parse_repo_id("../x"), None);
        assert_eq!(parse_repo_id("a/b@"), None);
    }
}
