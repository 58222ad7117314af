//! The state file a conversion keeps in its output directory: which conversion the directory holds
//! (an identity of the input and the options) and, for each finished shard, the size and the blake3
//! of the bytes written (hashed while writing). A rerun keeps a shard only if the file still has
//! them; a run for another input or dtype refuses the directory unless `--force`.
//!
//! A whole run records in `.ckptpilot-<command>.json` (`dequant`, `quantize`); `--part K/N` in
//! `.ckptpilot-<command>.part-K-of-N.json` (parts run at once on other machines and never write the
//! same file). Every state file in the directory is read on a rerun and by `--finalize`; one that
//! another command wrote is another conversion.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

pub const SCHEMA: &str = "ckptpilot.convert-state/3";
/// Every file ckptpilot keeps in the output directory for itself starts with this.
const PREFIX: &str = crate::fsutil::OWN_PREFIX;

/// The prefix of one command's bookkeeping files (`.ckptpilot-dequant`).
pub fn prefix(command: &str) -> String {
    format!("{PREFIX}{command}")
}

pub use crate::fsutil::DIR_LOCK;

/// The state file of a whole run or of one part.
pub fn file_name(command: &str, part: Option<(usize, usize)>) -> String {
    match part {
        Some((k, n)) => format!("{}.part-{k}-of-{n}.json", prefix(command)),
        None => format!("{}.json", prefix(command)),
    }
}

/// The lock one part holds exclusively.
pub fn part_lock(command: &str, k: usize, n: usize) -> String {
    format!("{}.part-{k}-of-{n}.lock", prefix(command))
}

/// Whether a directory entry is ckptpilot's own bookkeeping (state, locks, temporary files).
pub fn is_bookkeeping(name: &str) -> bool {
    crate::fsutil::is_own_file(name)
}

/// The command and part of a part lock file name (`.ckptpilot-dequant.part-2-of-4.lock`).
pub fn parse_part_lock(name: &str) -> Option<(&str, &str)> {
    let rest = name.strip_prefix(PREFIX)?.strip_suffix(".lock")?;
    rest.split_once(".part-")
}

/// Whether a directory entry is a state file (of any command).
pub fn is_state_file(name: &str) -> bool {
    name.starts_with(PREFIX) && name.ends_with(".json")
}

/// One finished shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Done {
    /// File length in bytes.
    pub len: u64,
    /// blake3 of the planned header (the layout this shard was written for).
    pub header_blake3: String,
    /// The shard's digest (see `convert::digest`): blake3 over the XXH3-128 of the header and of
    /// each tensor, computed while it was written.
    pub digest: String,
    /// The input shards it was made from, as they were then: a shard whose inputs have changed
    /// since is made again, the others are kept.
    pub inputs: BTreeMap<String, InputIdent>,
    /// The ckptpilot that wrote it: a shard written by another version is made again.
    pub tool: String,
}

/// An input shard as a conversion saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InputIdent {
    pub len: u64,
    pub mtime_ns: i128,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct State {
    pub schema: String,
    /// The conversion's identity: blake3 over the output dtype, the quantization config and the
    /// planned output headers (names, shapes, dtypes, order). The same layout converted again —
    /// after an input was touched or re-downloaded, on another node's copy — is the same
    /// conversion; each shard's own input identity decides whether it is made again.
    pub conversion: String,
    /// For messages: where the input was and what it became.
    pub input: String,
    pub dtype: String,
    pub shards: BTreeMap<String, Done>,
    /// The other files a run wrote into the directory (index, config.json, tokenizer …) → blake3
    /// of what it wrote: a file whose content differs now was changed by someone else and is not
    /// overwritten.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
}

impl State {
    pub fn new(conversion: String, input: String, dtype: String) -> State {
        State { schema: SCHEMA.into(), conversion, input, dtype, shards: BTreeMap::new(), files: BTreeMap::new() }
    }

    /// A state file, bounded like every JSON input. Errors are in words for the refusal message.
    pub fn read(path: &Path) -> Result<State, String> {
        let b = crate::fsutil::read_bounded(path, crate::fsutil::JSON_CAP).map_err(|e| e.to_string())?;
        let s: State = serde_json::from_slice(&b).map_err(|e| format!("not a ckptpilot state file: {e}"))?;
        if s.schema != SCHEMA {
            return Err(format!("state schema {:?}, this ckptpilot writes {SCHEMA:?}", s.schema));
        }
        Ok(s)
    }

    /// Replace the file atomically (a reader sees the old state or the new one).
    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = serde_json::to_string_pretty(self).expect("state serializes") + "\n";
        crate::fsutil::write_atomic(path, text.as_bytes())
    }
}
