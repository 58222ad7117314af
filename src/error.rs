//! Errors of the checkpoint layer: the input itself cannot be found or read. Problems *inside* a
//! checkpoint are findings, not errors.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{path}: no such file or directory, and not a Hugging Face repo id (org/name[@revision])")]
    NotFound { path: String },
    #[error("{}: no usable config.json ({why}); this command needs the model's config", root.display())]
    NoConfig { root: PathBuf, why: String },
    #[error("{path}: no such file or directory (`{parent}` is a directory here, so this is read as a local path, not a Hugging Face repo id)")]
    LocalNotFound { path: String, parent: String },
    #[error(
        "{repo}{}: not in the local Hugging Face cache at {}; this command reads tensor data, which is never fetched from the Hub",
        revision.as_deref().map(|r| format!("@{r}")).unwrap_or_default(),
        cache.display()
    )]
    NotCached { repo: String, revision: Option<String>, cache: PathBuf },
    #[error(
        "{repo}{}: not in the local Hugging Face cache at {}, and offline (HF_HUB_OFFLINE or --offline) forbids reading its headers from the Hub",
        revision.as_deref().map(|r| format!("@{r}")).unwrap_or_default(),
        cache.display()
    )]
    Offline { repo: String, revision: Option<String>, cache: PathBuf },
    #[error(transparent)]
    Hub(#[from] crate::hub::HubError),
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{}: not a .safetensors file or a checkpoint directory", path.display())]
    NotACheckpoint { path: PathBuf },
    #[error(transparent)]
    Read(#[from] crate::fsutil::ReadError),
    #[error("{}: {} shard(s) cannot be read, so its tensors are unknown: {}", root.display(), shards.len(), shards.join("; "))]
    Unreadable { root: PathBuf, shards: Vec<String> },
}

impl CheckpointError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        CheckpointError::Io { path: path.into(), source }
    }
}

impl crate::ui::Help for CheckpointError {
    fn help(&self) -> String {
        match self {
            CheckpointError::NoConfig { .. } => {
                "put the model's config.json (a regular file with a JSON object) beside the weights".into()
            }
            CheckpointError::LocalNotFound { .. } => {
                "check the spelling of the path; to read a Hub repo whose org has the same name as that directory, run from another directory".into()
            }
            CheckpointError::NotFound { .. } => {
                "pass a checkpoint directory, a .safetensors file, or a Hugging Face repo id such as deepseek-ai/DeepSeek-V3"
                    .into()
            }
            CheckpointError::NotCached { repo, .. } => format!(
                "download it first (`hf download {repo}`), or point HF_HUB_CACHE / HF_HOME at the cache that holds it"
            ),
            CheckpointError::Offline { repo, .. } => format!(
                "unset HF_HUB_OFFLINE and drop --offline to read it from the Hub (headers only), or download it (`hf download {repo}`)"
            ),
            CheckpointError::Hub(e) => e.help(),
            CheckpointError::Io { .. } => "check that the path exists and that you may read it".into(),
            CheckpointError::Read(crate::fsutil::ReadError::Io { .. }) => {
                "check that the path exists and that you may read it".into()
            }
            CheckpointError::Read(_) => "replace it with the real file (a regular file under the size cap)".into(),
            CheckpointError::Unreadable { .. } => {
                "download the named shards again; `ckptpilot audit MODEL` lists every problem it can see".into()
            }
            CheckpointError::NotACheckpoint { .. } => {
                "pass the checkpoint directory (the one with config.json and the *.safetensors shards)".into()
            }
        }
    }
}
