//! The checkpoint on disk: resolution of the input, vLLM's file selection, shards read (never mapped) with
//! validated headers, the index checked both ways, and the config.

pub mod config;
pub mod dtype;
pub mod header;
pub mod index;
pub(crate) mod json;
mod lookup;
pub mod names;
pub mod resolve;
pub mod shard;

pub use config::ModelConfig;
pub use dtype::Dtype;
pub use header::{Shape, TensorEntry};
pub use index::Index;
pub use resolve::Source;
pub use shard::Shard;

use crate::error::CheckpointError;
use crate::findings::{Code, Finding};
use lookup::{name_hash, Local, NameTable, ShardNames};
use rayon::prelude::*;
use serde_json::Value;
use std::path::Path;

/// A checkpoint with every shard's header read and validated.
#[derive(Debug)]
pub struct Checkpoint {
    pub source: Source,
    pub shards: Vec<Shard>,
    pub index: Option<Index>,
    pub config_json: Option<Value>,
    pub config: Option<ModelConfig>,
    /// Why `config` is `None`, as the finding said it (missing, a FIFO, invalid JSON at byte N, …).
    pub config_problem: Option<String>,
    /// `hf_quant_config.json` (older ModelOpt exports), when present.
    pub hf_quant_config: Option<Value>,
    /// A ModelSlim description (`quant_model_description*.json`), when present.
    pub modelslim: Option<crate::quant::modelslim::Description>,
    /// Every tensor a loader would see, by name: (shard, entry) positions, so no name is copied.
    /// When a name is in two shards (itself a finding), the later shard in load order wins, as in vLLM.
    by_name: NameTable,
    /// Each shard's names (hashed, and by name where the shard is small), as `shards` is ordered.
    names: Vec<ShardNames>,
    /// No name is stored in two shards: a name found in a shard is the copy a loader keeps.
    unique: bool,
    /// Tensors are in load order: shards in natural order, header order within a shard. This is
    /// the load-order position of each shard's first tensor (no list of all ~90k positions).
    starts: Vec<usize>,
    count: usize,
    /// The quantization scheme config.json (or hf_quant_config.json) declares, read once.
    quant: std::sync::OnceLock<Option<crate::quant::QuantScheme>>,
}

/// Where a tensor is in its checkpoint (shard, entry): a name's stand-in that copies nothing.
/// Meaningful only for the checkpoint that gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TensorId {
    shard: u32,
    entry: u32,
}

impl TensorId {
    /// The position of the tensor's shard in [`Checkpoint::shards`].
    pub fn shard_index(self) -> usize {
        self.shard as usize
    }
}

/// A tensor and the shard it is in.
#[derive(Debug, Clone, Copy)]
pub struct TensorRef<'a> {
    pub shard: &'a Shard,
    pub entry: &'a TensorEntry,
}

impl TensorRef<'_> {
    /// The tensor's bytes, read from its shard (checked to be the file whose header was read).
    pub fn read(&self) -> Result<Vec<u8>, shard::DataError> {
        let d = self.shard.open_data()?;
        let v = d.read_all(self.entry)?;
        d.still_same()?;
        Ok(v)
    }
}

/// The index against the headers, both ways. `by_name` is the checkpoint's table; without it
/// (every shard has a table of its own) a finding that a name is not in the shard the index
/// names does not say where else it is yet: its position in `out` and the shard's are returned.
fn cross_check_index(
    shards: &[Shard],
    starts: &[usize],
    names: &[ShardNames],
    by_name: Option<&NameTable>,
    idx: &Index,
    entries: &index::Entries,
    out: &mut Vec<Finding>,
) -> Vec<(usize, usize)> {
    let mut later = Vec::new();
    // Index shard id → opened shard position.
    let pos: Vec<Option<usize>> = idx.shards.iter().map(|f| shards.iter().position(|s| &s.name == f)).collect();
    let mut indexed = vec![false; shards.iter().map(|s| s.tensors().len()).sum()];
    // Each shard's entry after the last one the index named: an index listing a shard's tensors
    // in its header's order finds each where the previous one left off, with no hash lookup.
    let mut next = vec![0usize; shards.len()];
    entries.for_each(|name, id| {
        let Some(si) = pos[id as usize] else { return }; // missing shard: reported once
        let s = &shards[si];
        if !s.header.parsed {
            return; // the header itself is broken: reported by the header checks
        }
        // The name's position in the shard (names are unique within a header's tensors).
        let here = match s.tensors().get(next[si]) {
            Some(t) if t.name == name => Some(next[si]),
            _ => {
                let h = name_hash(name);
                match names[si].find(s.tensors(), h, name) {
                    Local::At(ti) => Some(ti as usize),
                    Local::Absent => None,
                    Local::Unknown => match by_name.and_then(|t| t.get(shards, h, name)) {
                        Some((a, b)) if a as usize == si => Some(b as usize),
                        // Stored in two shards: the copy in the one the index names.
                        _ => s.tensors().iter().position(|t| t.name == name),
                    },
                }
            }
        };
        if let Some(ti) = here {
            next[si] = ti + 1;
        }
        match here {
            Some(ti) if indexed[starts[si] + ti] => out.push(
                Finding::new(Code::IndexDuplicateKey, format!("the index lists {name:?} more than once"))
                    .file(index::INDEX_NAME)
                    .tensor(name.to_string()),
            ),
            Some(ti) => indexed[starts[si] + ti] = true,
            None => match by_name {
                Some(t) => {
                    let there = t.get(shards, name_hash(name), name);
                    out.push(not_in_shard(name, s, there.map(|(a, _)| shards[a as usize].name.as_str())));
                }
                None => {
                    later.push((out.len(), si));
                    out.push(not_in_shard(name, s, None));
                }
            },
        }
    });
    for (si, s) in shards.iter().enumerate() {
        for (ti, t) in s.tensors().iter().enumerate() {
            if !indexed[starts[si] + ti] {
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
                    format!(
                        "metadata.total_size is {total} but the shards hold {sum} bytes of tensor data (difference {})",
                        sum as i128 - total as i128
                    ),
                )
                .file(index::INDEX_NAME),
            );
        }
    }
    later
}

/// A name the index puts in shard `s`, whose header does not have it; `elsewhere` is the shard
/// that does, if one does.
fn not_in_shard(name: &str, s: &Shard, elsewhere: Option<&str>) -> Finding {
    let elsewhere = elsewhere.map(|e| format!(" (it is in {e})")).unwrap_or_default();
    Finding::new(
        Code::IndexKeyNotInShard,
        format!("the index puts {name:?} in {}, whose header does not have it{elsewhere}", s.name),
    )
    .file(s.name.clone())
    .tensor(name.to_string())
}

/// The (shard, entry) of load-order position `i`, given each shard's first position: the last
/// shard that starts at or before `i` (an empty shard starts where the next one does, and comes
/// before it).
fn position(starts: &[usize], i: usize) -> (u32, u32) {
    let s = starts.partition_point(|&b| b <= i) - 1;
    (s as u32, (i - starts[s]) as u32)
}

/// What is in a checkpoint directory, sorted as vLLM sorts it.
#[derive(Default)]
struct Listing {
    safetensors: Vec<String>,
    consolidated: Vec<String>,
    pickles: Vec<String>,
}

fn list_dir(root: &Path) -> Result<Listing, CheckpointError> {
    let mut names = Vec::new();
    let rd = std::fs::read_dir(root).map_err(|e| CheckpointError::io(root, e))?;
    for entry in rd {
        let entry = entry.map_err(|e| CheckpointError::io(root, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // A FIFO, device or directory named like a shard is kept: opening it reports what it is
        // (`not-a-regular-file`) instead of the checkpoint looking empty.
        if !entry.path().is_file() && !name.ends_with(".safetensors") {
            continue;
        }
        names.push(name);
    }
    Ok(Listing::of(names))
}

impl Listing {
    /// The top-level file names of a checkpoint, sorted into what vLLM would consider.
    fn of(names: impl IntoIterator<Item = String>) -> Listing {
        let mut l = Listing::default();
        for name in names {
            if name.ends_with(".safetensors") {
                if name.starts_with("consolidated") {
                    l.consolidated.push(name);
                } else {
                    l.safetensors.push(name);
                }
            } else if (name.ends_with(".bin") || name.ends_with(".pt") || name.ends_with(".pth"))
                && !matches!(
                    name.as_str(),
                    "training_args.bin" | "optimizer.bin" | "optimizer.pt" | "scheduler.pt" | "scaler.pt"
                )
            {
                l.pickles.push(name);
            }
        }
        l.safetensors.sort_by(|a, b| natural_cmp(a, b));
        l.consolidated.sort();
        l.pickles.sort();
        l
    }
}

impl Checkpoint {
    /// The quantization scheme the checkpoint declares (config.json's `quantization_config` or
    /// `compression_config`, or hf_quant_config.json), detected once for every command.
    pub fn quant_scheme(&self) -> Option<&crate::quant::QuantScheme> {
        self.quant
            .get_or_init(|| {
                crate::quant::QuantScheme::detect(self.config_json.as_ref(), self.hf_quant_config.as_ref())
                    .or_else(|| self.modelslim.as_ref().map(crate::quant::QuantScheme::from_modelslim))
            })
            .as_ref()
    }

    /// Resolve `input` and open it. Errors only when the input itself is missing or unreadable;
    /// everything wrong inside the checkpoint is returned as findings.
    pub fn open(input: &str) -> Result<(Checkpoint, Vec<Finding>), CheckpointError> {
        let source = resolve::resolve(input)?;
        Checkpoint::open_source(source)
    }

    /// As [`Checkpoint::open`], and a repo id the local cache does not hold is read from the Hub
    /// (headers and small files only) unless `hub` is offline. For commands that need no tensor data.
    pub fn open_with(input: &str, hub: &crate::hub::Settings) -> Result<(Checkpoint, Vec<Finding>), CheckpointError> {
        let source = match resolve::resolve(input) {
            Err(CheckpointError::NotCached { repo, revision, cache }) => {
                if hub.offline {
                    return Err(CheckpointError::Offline { repo, revision, cache });
                }
                Source::remote(crate::hub::fetch(&repo, revision.as_deref(), hub)?)
            }
            other => other?,
        };
        Checkpoint::open_source(source)
    }

    pub fn open_source(source: Source) -> Result<(Checkpoint, Vec<Finding>), CheckpointError> {
        let mut findings = Vec::new();
        let root = source.root.clone();
        let (config_json, config) = read_config(&root, &mut findings);
        let config_problem = config.is_none().then(|| findings.last().map(|f| f.message.clone())).flatten();
        let hf_quant_config = read_side_json(&root, "hf_quant_config.json", &mut findings);
        let modelslim = crate::quant::modelslim::Description::find(&root).and_then(|name| {
            let v = read_side_json(&root, &name, &mut findings)?;
            crate::quant::modelslim::Description::from_value(&name, &v)
        });

        let listing = match (&source.single_file, &source.remote) {
            (Some(f), _) => Listing { safetensors: vec![f.clone()], ..Listing::default() },
            (None, Some(r)) => Listing::of(r.files.iter().cloned()),
            (None, None) => list_dir(&root)?,
        };
        // A shard on the Hub is its cached header; a local one is the file.
        let remote_shards: Option<std::collections::HashMap<&str, &crate::hub::RemoteShard>> =
            source.remote.as_ref().map(|r| r.shards.iter().map(|s| (s.name.as_str(), s)).collect());
        // Each shard's names are hashed on the thread that read its header, while they are in cache.
        let open_shard = |name: &String| {
            let (shard, findings) = match &remote_shards {
                Some(m) => match m.get(name.as_str()) {
                    Some(r) => Shard::open_remote(&r.header_path, name.clone(), r.size),
                    None => Shard::open(&root.join(name), name.clone()),
                },
                None => Shard::open(&root.join(name), name.clone()),
            };
            let names = ShardNames::of(&shard);
            (shard, findings, names)
        };
        let present = |f: &str| match &source.remote {
            Some(r) => r.files.iter().any(|n| n == f),
            None => std::fs::metadata(root.join(f)).is_ok(),
        };
        let place = source.place();
        let index_path = root.join(index::INDEX_NAME);
        // Read while the shard headers are: every listed shard is opened on speculation; the index
        // then decides which of them vLLM would read.
        let single = source.single_file.is_some();
        let (index_read, opened) = rayon::join(
            || (!single).then(|| read_index(&index_path)),
            || listing.safetensors.par_iter().map(open_shard).collect::<Vec<(Shard, Vec<Finding>, ShardNames)>>(),
        );
        let (had_index_file, index, entries) = match index_read {
            Some(IndexRead { present, parsed, findings: f }) => {
                findings.extend(f);
                match parsed {
                    Some((i, e)) => (present, Some(i), e),
                    None => (present, None, index::Entries::default()),
                }
            }
            // One file named on the command line: an index beside it still counts as there.
            None => (std::fs::symlink_metadata(&index_path).is_ok(), None, index::Entries::default()),
        };
        let selected = select(&present, &place, &listing, index.as_ref(), had_index_file, &mut findings);

        let mut by_file: std::collections::HashMap<String, (Shard, Vec<Finding>, ShardNames)> =
            opened.into_iter().map(|(s, f, n)| (s.name.clone(), (s, f, n))).collect();
        let late: Vec<(Shard, Vec<Finding>, ShardNames)> =
            selected.par_iter().filter(|n| !by_file.contains_key(n.as_str())).map(open_shard).collect();
        for (s, f, n) in late {
            by_file.insert(s.name.clone(), (s, f, n));
        }
        let mut shards = Vec::with_capacity(selected.len());
        let mut names = Vec::with_capacity(selected.len());
        for n in &selected {
            if let Some((s, f, sn)) = by_file.remove(n) {
                findings.extend(f);
                shards.push(s);
                names.push(sn);
            }
        }

        let mut starts = Vec::with_capacity(shards.len());
        let mut count = 0usize;
        for s in &shards {
            starts.push(count);
            count += s.tensors().len();
        }
        // The index is checked against the headers while the checkpoint's table is built, when
        // every shard has a table of its own (then no position needs the checkpoint's; where else
        // a misplaced name is, is added to its finding once the table is there).
        let overlap = names.iter().all(ShardNames::has_table);
        let mut index_findings = Vec::new();
        let ((by_name, twice), later) = rayon::join(
            || NameTable::build(&shards, &names),
            || match &index {
                Some(idx) if overlap => {
                    cross_check_index(&shards, &starts, &names, None, idx, &entries, &mut index_findings)
                }
                _ => Vec::new(),
            },
        );
        if let (Some(idx), false) = (&index, overlap) {
            cross_check_index(&shards, &starts, &names, Some(&by_name), idx, &entries, &mut index_findings);
        }
        for (at, si) in later {
            let name = index_findings[at].tensor.as_deref().unwrap_or_default();
            let there = by_name.get(&shards, name_hash(name), name);
            index_findings[at] = not_in_shard(name, &shards[si], there.map(|(a, _)| shards[a as usize].name.as_str()));
        }
        drop(entries);
        let unique = twice.is_empty();
        for (pos, prev) in twice {
            let (si, ti) = position(&starts, pos);
            let (s, t) = (&shards[si as usize], &shards[si as usize].tensors()[ti as usize]);
            findings.push(
                Finding::new(
                    Code::TensorInTwoShards,
                    format!("{:?} is stored in {} and again in {}", t.name, shards[prev.0 as usize].name, s.name),
                )
                .file(s.name.clone())
                .tensor(t.name.clone()),
            );
        }
        findings.extend(index_findings);
        Ok((
            Checkpoint {
                source,
                shards,
                index,
                config_json,
                config,
                config_problem,
                hf_quant_config,
                modelslim,
                by_name,
                names,
                unique,
                starts,
                count,
                quant: std::sync::OnceLock::new(),
            },
            findings,
        ))
    }

    pub fn get(&self, name: &str) -> Option<TensorRef<'_>> {
        self.id_of(name).map(|id| self.tensor_by_id(id))
    }

    /// Where the tensor a loader would see under `name` is.
    pub fn id_of(&self, name: &str) -> Option<TensorId> {
        self.id_hashed(name_hash(name), name)
    }

    fn id_hashed(&self, h: u64, name: &str) -> Option<TensorId> {
        self.by_name.get(&self.shards, h, name).map(|(shard, entry)| TensorId { shard, entry })
    }

    /// [`Checkpoint::id_of`] for a name likely stored in the same shard as `near` (a weight's
    /// scale, a scale's weight): that shard's own table is asked first. The same answer, found
    /// without a cache miss when the guess is right.
    pub fn id_near(&self, name: &str, near: TensorId) -> Option<TensorId> {
        let h = name_hash(name);
        if self.unique {
            let s = near.shard as usize;
            if let Local::At(entry) = self.names[s].find(self.shards[s].tensors(), h, name) {
                return Some(TensorId { shard: near.shard, entry });
            }
        }
        self.id_hashed(h, name)
    }

    /// The tensor at `id` (from this checkpoint).
    pub fn tensor_by_id(&self, id: TensorId) -> TensorRef<'_> {
        self.at(id.shard, id.entry)
    }

    /// [`Checkpoint::tensors`] with where each is.
    pub fn tensors_with_ids(&self) -> impl Iterator<Item = (TensorId, TensorRef<'_>)> + '_ {
        self.shards.iter().enumerate().flat_map(|(s, shard)| {
            shard
                .tensors()
                .iter()
                .enumerate()
                .map(move |(t, entry)| (TensorId { shard: s as u32, entry: t as u32 }, TensorRef { shard, entry }))
        })
    }

    fn at(&self, s: u32, t: u32) -> TensorRef<'_> {
        let shard = &self.shards[s as usize];
        TensorRef { shard, entry: &shard.tensors()[t as usize] }
    }

    /// The tensor at position `i` of [`Checkpoint::tensors`].
    pub fn tensor_at(&self, i: usize) -> TensorRef<'_> {
        let (s, t) = position(&self.starts, i);
        self.at(s, t)
    }

    /// Every tensor in load order.
    pub fn tensors(&self) -> impl Iterator<Item = TensorRef<'_>> + '_ {
        self.shards.iter().flat_map(|shard| shard.tensors().iter().map(move |entry| TensorRef { shard, entry }))
    }

    /// The shards whose header could not be read at all, with why: such a checkpoint cannot be
    /// planned, remapped or given an adapter (`audit` still reports everything it can).
    pub fn unreadable(&self) -> Vec<(&str, &str)> {
        self.shards.iter().filter_map(|s| s.unreadable.as_deref().map(|why| (s.name.as_str(), why))).collect()
    }

    /// The model's config, or the error every command that needs it gives (`plan`, `remap`,
    /// `stub` alike), saying what is true of config.json: missing, not a regular file, invalid.
    pub fn require_config(&self) -> Result<&ModelConfig, CheckpointError> {
        self.config.as_ref().ok_or_else(|| CheckpointError::NoConfig {
            root: self.source.root.clone(),
            why: self.config_problem.clone().unwrap_or_else(|| "config.json could not be read".into()),
        })
    }

    /// [`Checkpoint::unreadable`] as the error the commands that need every tensor give.
    pub fn require_readable(&self) -> Result<(), CheckpointError> {
        let bad = self.unreadable();
        if bad.is_empty() {
            return Ok(());
        }
        Err(CheckpointError::Unreadable {
            root: self.source.root.clone(),
            shards: bad.iter().map(|(n, why)| format!("{n} ({why})")).collect(),
        })
    }

    pub fn tensor_count(&self) -> usize {
        self.count
    }

    pub fn tensor_bytes(&self) -> u64 {
        self.tensors().map(|t| t.entry.nbytes()).sum()
    }
}

/// A finding for a JSON side file that a bounded read refused.
fn read_finding(e: &crate::fsutil::ReadError, file: &str) -> Finding {
    use crate::fsutil::ReadError;
    let code = match e {
        ReadError::NotRegular { .. } => Code::NotRegularFile,
        ReadError::TooLarge { .. } => Code::FileTooLarge,
        ReadError::Io { .. } if file == index::INDEX_NAME => Code::IndexNotJson,
        ReadError::Io { .. } => Code::ConfigInvalid,
    };
    Finding::new(code, e.to_string()).file(file)
}

/// The index as read: whether a file (or link) is there, what parsed, and the problems in order.
struct IndexRead {
    present: bool,
    parsed: Option<(Index, index::Entries)>,
    findings: Vec<Finding>,
}

/// Read and parse `model.safetensors.index.json`. The usual index is streamed through the
/// hand-written pass, a piece at a time: never held whole (DeepSeek-size indexes are several
/// megabytes). Anything else, or a read that fails, is read again whole (bounded) for the serde
/// path, which names the problem.
fn read_index(path: &Path) -> IndexRead {
    let mut findings = Vec::new();
    if let Ok((f, md)) = crate::fsutil::open_regular(path) {
        if md.len() <= crate::fsutil::INDEX_CAP {
            // (one that grows past the cap while read fails the stream; read_bounded refuses it)
            let (cap, chunk) = (crate::fsutil::INDEX_CAP, index::STREAM_CHUNK);
            let reader = std::io::Read::take(f, cap + 1);
            let streamed = index::stream(reader, md.len(), cap, chunk, &mut findings);
            if streamed.is_some() {
                return IndexRead { present: true, parsed: streamed, findings };
            }
        }
    }
    let bytes = match crate::fsutil::read_bounded(path, crate::fsutil::INDEX_CAP) {
        Ok(b) => Some(b),
        Err(e) if e.is_not_found() => None,
        Err(e) => {
            findings.push(read_finding(&e, index::INDEX_NAME));
            None
        }
    };
    let present = bytes.is_some() || std::fs::symlink_metadata(path).is_ok();
    let text = match bytes.map(String::from_utf8) {
        Some(Ok(t)) => Some(t),
        Some(Err(e)) => {
            let at = e.utf8_error().valid_up_to();
            findings.push(
                Finding::new(Code::IndexNotJson, format!("byte {at} is not valid UTF-8")).file(index::INDEX_NAME),
            );
            None
        }
        None => None,
    };
    let parsed = text.and_then(|t| index::parse(&t, &mut findings));
    IndexRead { present, parsed, findings }
}

/// An optional JSON side file (hf_quant_config.json): absent is fine; present but unreadable,
/// refused or not JSON is a finding, never a silent skip.
fn read_side_json(root: &Path, name: &str, out: &mut Vec<Finding>) -> Option<Value> {
    let path = root.join(name);
    match crate::fsutil::read_bounded(&path, crate::fsutil::JSON_CAP) {
        Ok(b) => match serde_json::from_slice::<Value>(&b) {
            Ok(v) if v.is_object() => Some(v),
            Ok(_) => {
                out.push(Finding::new(Code::ConfigInvalid, format!("{name} is not a JSON object")).file(name));
                None
            }
            Err(e) => {
                out.push(
                    Finding::new(Code::ConfigInvalid, format!("{name} line {} column {}: {e}", e.line(), e.column()))
                        .file(name),
                );
                None
            }
        },
        Err(e) if e.is_not_found() => None,
        Err(e) => {
            out.push(read_finding(&e, name));
            None
        }
    }
}

fn read_config(root: &Path, out: &mut Vec<Finding>) -> (Option<Value>, Option<ModelConfig>) {
    let path = root.join("config.json");
    let text = match crate::fsutil::read_bounded_string(&path, crate::fsutil::JSON_CAP) {
        Ok(t) => t,
        Err(e) if e.is_not_found() => {
            out.push(
                Finding::new(Code::ConfigMissing, format!("no config.json in {}", root.display())).file("config.json"),
            );
            return (None, None);
        }
        Err(e) => {
            out.push(read_finding(&e, "config.json"));
            return (None, None);
        }
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(v) if v.is_object() => {
            let c = ModelConfig::from_value(&v);
            for why in &c.invalid {
                out.push(Finding::new(Code::ConfigInvalid, format!("config.json: {why}")).file("config.json"));
            }
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
fn select(
    present: &(dyn Fn(&str) -> bool + Sync),
    place: &str,
    l: &Listing,
    index: Option<&Index>,
    had_index_file: bool,
    out: &mut Vec<Finding>,
) -> Vec<String> {
    let selected: Vec<String> = match index {
        Some(idx) => {
            let mut found = Vec::new();
            for (i, f) in idx.shards.iter().enumerate() {
                // There but a FIFO / device / directory: opening it names what it is.
                if present(f) {
                    found.push(f.clone());
                } else {
                    out.push(
                        Finding::new(
                            Code::IndexShardMissing,
                            format!(
                                "the index names {f} ({} tensors) but it is not in {place}",
                                idx.tensors_per_shard[i],
                            ),
                        )
                        .file(f.clone()),
                    );
                }
            }
            for f in &l.safetensors {
                if !idx.shards.contains(f) {
                    out.push(
                        Finding::new(
                            Code::UnindexedSafetensors,
                            format!("{f} is not named by {}; vLLM will not read it", index::INDEX_NAME),
                        )
                        .file(f.clone()),
                    );
                }
            }
            found.sort_by(|a, b| natural_cmp(a, b));
            found
        }
        // No index, or one that cannot be read: audit what is on disk so the header checks still run.
        None => l.safetensors.clone(),
    };
    if !l.consolidated.is_empty() {
        if l.safetensors.is_empty() && !had_index_file {
            // A Mistral-format checkpoint only: audit it as it is.
            return l.consolidated.clone();
        }
        out.push(
            Finding::new(
                Code::StrayConsolidated,
                format!("{} beside the Hugging Face shards", l.consolidated.join(", ")),
            )
            .file(l.consolidated[0].clone()),
        );
    }
    if !l.pickles.is_empty() {
        if selected.is_empty() && !had_index_file {
            // vLLM's _prepare_weights (load_format auto) falls back to `*.bin` / `*.pt` when no
            // safetensors are there: the model loads; only ckptpilot cannot look inside pickles.
            out.push(
                Finding::new(
                    Code::PickleWeightsOnly,
                    format!(
                        "no *.safetensors; vLLM loads {} through its *.bin / *.pt fallback; ckptpilot reads safetensors headers only, so no tensor was checked",
                        l.pickles.join(", ")
                    ),
                )
                .file(l.pickles[0].clone()),
            );
        } else {
            out.push(
                Finding::new(Code::BinIgnored, format!("ignored by vLLM: {}", l.pickles.join(", ")))
                    .file(l.pickles[0].clone()),
            );
        }
    } else if selected.is_empty() && !had_index_file {
        out.push(Finding::new(Code::NoWeights, format!("no *.safetensors in {place}")));
    }
    selected
}

/// Natural order ("model-2" before "model-10"), as vLLM's `_natural_sort_key`.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    /// Maximal runs of digits and of non-digits, lazily (sorting a million names compares tens of
    /// millions of pairs: no allocation per comparison).
    struct Chunks<'a>(&'a str);
    impl<'a> Iterator for Chunks<'a> {
        type Item = (bool, &'a str);
        fn next(&mut self) -> Option<(bool, &'a str)> {
            let b = self.0.as_bytes();
            let first = *b.first()?;
            let digit = first.is_ascii_digit();
            let end = b.iter().position(|c| c.is_ascii_digit() != digit).unwrap_or(b.len());
            let (head, rest) = self.0.split_at(end);
            self.0 = rest;
            Some((digit, head))
        }
    }
    // Chunks wholly inside the common prefix compare equal: start at the chunk holding its last
    // byte (a boundary both strings share), which gives the same answer without walking the
    // prefix. Tree patterns share long prefixes, so this is most of the work saved.
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let d = ab.iter().zip(bb).position(|(x, y)| x != y).unwrap_or(ab.len().min(bb.len()));
    let mut s = d.saturating_sub(1);
    while s > 0 && ab[s - 1].is_ascii_digit() == ab[s].is_ascii_digit() {
        s -= 1;
    }
    // s is 0 or a digit/non-digit boundary next to an ASCII digit: a char boundary in both.
    let (mut ca, mut cb) = (Chunks(&a[s..]), Chunks(&b[s..]));
    loop {
        let (x, y) = match (ca.next(), cb.next()) {
            (Some(x), Some(y)) => (x, y),
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
        };
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
}

#[cfg(test)]
mod tests {
    use super::{natural_cmp, position};
    #[test]
    fn load_order_position_skips_empty_shards() {
        // Shards of 0, 3, 0, 0, 2 and 1 tensors.
        let lens = [0usize, 3, 0, 0, 2, 1];
        let mut starts = Vec::new();
        let mut expect = Vec::new();
        let mut n = 0;
        for (s, &len) in lens.iter().enumerate() {
            starts.push(n);
            n += len;
            expect.extend((0..len).map(|t| (s as u32, t as u32)));
        }
        let got: Vec<(u32, u32)> = (0..n).map(|i| position(&starts, i)).collect();
        assert_eq!(got, expect);
    }

    #[test]
    fn natural_order() {
        let mut v = vec!["m-10.safetensors", "m-2.safetensors", "m-1.safetensors"];
        v.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(v, ["m-1.safetensors", "m-2.safetensors", "m-10.safetensors"]);
        use std::cmp::Ordering::*;
        assert_eq!(natural_cmp("", ""), Equal);
        assert_eq!(natural_cmp("a", ""), Greater);
        assert_eq!(natural_cmp("a1", "a01"), Equal);
        assert_eq!(natural_cmp("x.9.w", "x.10.w"), Less);
        assert_eq!(natural_cmp("x.10", "x.10.w"), Less);
        assert_eq!(natural_cmp("b", "a9"), Greater);
    }

    /// The prefix skip gives exactly the chunk-by-chunk answer (vLLM's `_natural_sort_key`).
    #[test]
    fn prefix_skip_equals_the_plain_comparison() {
        fn reference(a: &str, b: &str) -> std::cmp::Ordering {
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
        let alphabet = ["", "0", "1", "9", "00", "10", "a", "x", "-", ".", "é", "z9"];
        let mut words = Vec::new();
        for a in alphabet {
            for b in alphabet {
                for c in alphabet {
                    words.push(format!("{a}{b}{c}"));
                }
            }
        }
        for a in &words {
            for b in &words {
                assert_eq!(natural_cmp(a, b), reference(a, b), "{a:?} vs {b:?}");
            }
        }
    }
}
