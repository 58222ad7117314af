//! Whole-checkpoint conversions, streaming: one engine, two [`Task`]s.
//!
//! - `ckptpilot dequant`: every fp8 weight dequantized with its scale to bf16 (f16, f32), its scale
//!   tensors (and `input_scale`) dropped; 4-bit checkpoints (MXFP4, NVFP4, INT4) to bf16
//!   (`packed`); every other tensor copied bit for bit. The output mirrors the input's shards.
//! - `ckptpilot quantize`: a ModelSlim W8A8_DYNAMIC (or W4A8_DYNAMIC-experts) checkpoint as
//!   msModelSlim writes it ([`quantize`]); its output files are msModelSlim's parts, each made from
//!   any input shards.
//!
//! **Nothing lost.** `--out` must be empty, or hold an earlier run of the same conversion (its
//! state file, [`state`]), unless `--force`. One process writes an output at a time (an `flock` on
//! `OUT/.ckptpilot-dequant.lock`; `--part` runs share it and each holds its own part lock). Each shard
//! is written to a unique temporary file (`O_EXCL|O_NOFOLLOW`), hashed (blake3) as it is written,
//! renamed into place when complete and then recorded in the state file; a failed run removes its
//! temporary file. A rerun keeps a shard only when it still has the recorded size and hash
//! (`--trust-existing`: size and header only).
//!
//! **Inputs that change.** Inputs are read with positional reads, never mapped: a shard truncated,
//! rewritten or replaced during the run ends it with an error naming the shard, not a SIGBUS.
//! Memory: one reused input band and one output band of at most [`BAND_BYTES`] (`quantize`: of
//! [`QUANT_BAND_BYTES`] per worker thread, each making its own tensors).
//!
//! `--part K/N` converts a disjoint, byte-balanced share of the shards; `--finalize` then writes the
//! index, config.json without `quantization_config`, and the other files.

mod int4;
mod mxfp8;
mod packed;
mod pyorder;
pub mod quantize;
pub mod state;
pub mod writer;

use crate::arch::audit_rules;
use crate::checkpoint::shard::{DataError, ShardData};
use crate::checkpoint::{Checkpoint, Dtype, Shard, TensorRef};
use crate::findings::{Code, Finding, Severity};
use crate::fsutil::{self, LockError, TempFile};
use crate::quant::fp8::{dequantize, scales_to_f32, Fp8Format, KernelError, OutDtype, Output, Scales};
use crate::quant::int8::{self, Compute, Rows};
use crate::quant::{pair_fp8, ScaleLayout};
use quantize::Codes;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;
use writer::OutTensor;

#[cfg(target_endian = "big")]
compile_error!("ckptpilot writes little-endian tensor data straight from memory");

/// The largest dequantized band held in memory at once.
pub const BAND_BYTES: usize = 64 << 20;
/// A quantized weight's bands, at 4 bytes an element: small enough that the rows read stay in
/// the cache for the kernel and the codes for the write (bands do not change what is computed).
const QUANT_BAND_BYTES: usize = 4 << 20;
/// Copies go through a buffer of this size.
const COPY_CHUNK: usize = 8 << 20;

/// What a conversion makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// `ckptpilot dequant`: fp8 weights to this dtype, one output shard per input shard.
    Dequant(OutDtype),
    /// `ckptpilot quantize`: a ModelSlim checkpoint as msModelSlim writes it, in parts of at most
    /// `part_bytes` (0: one file).
    Quantize { to: quantize::Target, part_bytes: u64 },
}

impl Task {
    /// The command, for state files and messages.
    fn command(self) -> &'static str {
        match self {
            Task::Dequant(_) => "dequant",
            Task::Quantize { .. } => "quantize",
        }
    }

    /// The dtype fp8 weights are dequantized to (quantize reads them as bf16).
    fn dequant_dtype(self) -> OutDtype {
        match self {
            Task::Dequant(d) => d,
            Task::Quantize { .. } => OutDtype::BF16,
        }
    }

    /// What the output is, in words (the state file's `dtype`).
    fn output(self) -> String {
        match self {
            Task::Dequant(d) => format!("{d:?}").to_lowercase(),
            Task::Quantize { to, .. } => to.as_str().into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Options {
    pub out: PathBuf,
    pub task: Task,
    /// Convert only part K of N (1-based K).
    pub part: Option<(usize, usize)>,
    /// Only check that every shard is done, then write the index, config and other files.
    pub finalize_only: bool,
    /// Re-read every output shard and compare it with the input.
    pub verify: bool,
    /// Show a progress bar (only honoured on a terminal).
    pub progress: bool,
    /// Write into a non-empty `--out` that is not an earlier run of this conversion.
    pub force: bool,
    /// On a rerun, keep a recorded shard whose size and header match without re-hashing it.
    pub trust_existing: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            out: PathBuf::new(),
            task: Task::Dequant(OutDtype::BF16),
            part: None,
            finalize_only: false,
            verify: false,
            progress: false,
            force: false,
            trust_existing: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("refusing to convert (nothing was written):\n{}", reasons.iter().map(|r| format!("  - {r}")).collect::<Vec<_>>().join("\n"))]
    Refused { reasons: Vec<String> },
    #[error(
        "quantization scheme {scheme} is not supported by `ckptpilot {command}` ({accepted}); nothing was written"
    )]
    Unsupported { scheme: String, command: &'static str, accepted: &'static str },
    #[error("the output directory is the input directory ({0}); choose another --out")]
    OutputIsInput(PathBuf),
    #[error("{} is not empty and is not an earlier ckptpilot conversion of this checkpoint: it holds {} ({} entries); nothing was written", out.display(), sample.join(", "), count)]
    OutNotEmpty { out: PathBuf, sample: Vec<String>, count: usize },
    #[error("{} holds another conversion ({}): {why}; nothing was written", out.display(), state.display())]
    OtherConversion { out: PathBuf, state: PathBuf, why: String },
    #[error("{} is not a directory", .0.display())]
    OutNotDir(PathBuf),
    #[error("another ckptpilot is writing this output: {holder}")]
    Locked { holder: String },
    #[error("{}: cannot take the output's lock: {source}", path.display())]
    LockIo { path: PathBuf, source: std::io::Error },
    #[error("cannot finalize: {} shard(s) are not converted yet: {}", missing.len(), missing.join(", "))]
    NotReady { missing: Vec<String> },
    #[error("--part {k}/{n}: {}", match shards { Some(s) => format!("N is more than the {s} shard(s) there are to share"), None => "K must be between 1 and N".into() })]
    BadPart { k: usize, n: usize, shards: Option<usize> },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("input {0}")]
    Input(#[from] DataError),
    #[error("{tensor}: {source}")]
    Kernel { tensor: String, source: KernelError },
    #[error("{file}: tensor {tensor}: {source}; nothing was written for it")]
    NonFinite { file: String, tensor: String, source: int8::NonFinite },
    #[error("verification failed: {file}: {detail}")]
    Verify { file: String, detail: String },
}

impl crate::ui::Help for ConvertError {
    fn help(&self) -> String {
        match self {
            ConvertError::Refused { .. } => "fix the checkpoint (`ckptpilot audit MODEL` explains each finding), then rerun".into(),
            ConvertError::Unsupported { .. } => "for what this checkpoint holds see `ckptpilot audit MODEL`".into(),
            ConvertError::OutputIsInput(_) => "pass an empty or new directory as --out".into(),
            ConvertError::OutNotEmpty { .. } => {
                "choose an empty or new --out, or pass --force to write into it anyway (files with the shard, index and config names are replaced)".into()
            }
            ConvertError::OtherConversion { .. } => {
                "choose another --out, or pass --force to replace that conversion".into()
            }
            ConvertError::OutNotDir(_) => "pass a directory (new or empty) as --out".into(),
            ConvertError::Locked { .. } => {
                "wait for it to finish; the system releases the lock of a process that has died".into()
            }
            ConvertError::LockIo { .. } => {
                "the output's file system may not support flock (Lustre needs -o flock; some NFS setups lack it): write to a local or flock-capable directory".into()
            }
            ConvertError::NotReady { .. } => "run the missing --part jobs (or a run without --part), then --finalize".into(),
            ConvertError::BadPart { .. } => {
                "use --part K/N with 1 <= K <= N and N at most the number of shards, e.g. --part 3/8".into()
            }
            ConvertError::Io { .. } => "check the path, its permissions and the free space on its file system".into(),
            ConvertError::Input(_) => {
                "the input changed while it was read; rerun when nothing writes to it (finished shards are kept)".into()
            }
            ConvertError::Kernel { .. } => "the tensor and its scale disagree; `ckptpilot audit MODEL` names the pair".into(),
            ConvertError::NonFinite { .. } => {
                "the weight holds a NaN or an infinity (a broken download or an overflowed training step): fix or replace that shard; msModelSlim would write garbage for the whole row".into()
            }
            ConvertError::Verify { .. } => "rerun: the shard named was removed and is made again".into(),
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ConvertError + '_ {
    move |source| ConvertError::Io { path: path.to_path_buf(), source }
}

#[derive(Debug, Default, Serialize)]
pub struct Summary {
    pub schema: &'static str,
    pub out: String,
    pub out_dtype: String,
    pub part: Option<String>,
    pub shards_total: usize,
    pub shards_written: usize,
    pub shards_kept: usize,
    pub tensors_dequantized: usize,
    /// `quantize`: linear weights quantized (each written with its scale and offset).
    pub tensors_quantized: usize,
    pub tensors_copied: usize,
    pub tensors_dropped: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub seconds: f64,
    pub finalized: bool,
    pub verified: bool,
    /// The state file this run recorded its shards in.
    pub state_file: String,
    /// Files in the output that someone changed since ckptpilot wrote them: kept, the new version
    /// written beside them as `FILE.new`; and input files not copied, with why.
    pub kept_files: Vec<String>,
    pub skipped_files: Vec<String>,
}

/// A weight to quantize: a bf16/f16/f32 tensor, or an fp8 one with its scale (read as the bf16
/// that `dequant` makes of it).
#[derive(Clone, Copy)]
struct Src<'a> {
    weight: TensorRef<'a>,
    fp8: Option<(TensorRef<'a>, ScaleLayout, Fp8Format)>,
}

impl<'a> Src<'a> {
    fn compute(&self) -> Compute {
        match self.fp8 {
            Some(_) => Compute::BF16,
            None => Compute::of(self.weight.entry.dtype).expect("planned for float weights only"),
        }
    }

    fn as_dequant(&self) -> Option<Item<'a>> {
        self.fp8.map(|(scale, layout, fmt)| Item::Dequant { weight: self.weight, scale, layout, fmt })
    }
}

/// What one output tensor is made from.
#[derive(Clone, Copy)]
enum Item<'a> {
    Copy(TensorRef<'a>),
    Dequant {
        weight: TensorRef<'a>,
        scale: TensorRef<'a>,
        layout: ScaleLayout,
        fmt: Fp8Format,
    },
    /// A bf16/f16 tensor widened to f32 (a quantized layer's bias, which msModelSlim saves in f32).
    Widen(TensorRef<'a>),
    /// The per-row scales of a weight to quantize, f32 [N, 1].
    Scale(Src<'a>, Codes),
    /// `n` f32 zeros (the symmetric scheme's `weight_offset`).
    Zeros(u64),
    /// A weight quantized to int8, or to int4 packed two rows to a byte.
    Quant(Src<'a>, Codes),
    /// An int4 weight's `scale_bias`, f32 [N, chunks].
    ScaleBias(Src<'a>, usize),
    /// 4-bit packed rows (NVFP4 U8 [N, K/2], INT4 I32 [N, K/8]) to bf16 [N, K]; `extra` is the
    /// NVFP4 global scale or the INT4 zero points.
    Packed4 {
        packed: TensorRef<'a>,
        scale: TensorRef<'a>,
        extra: Option<TensorRef<'a>>,
        kind: packed::Packed4,
        n: u64,
        k: u64,
    },
    /// MXFP4 expert blocks [E, N, G, 16] with e8m0 scales [E, N, G] to bf16 [E, G*32, N].
    Mx {
        blocks: TensorRef<'a>,
        scales: TensorRef<'a>,
    },
}

impl<'a> Item<'a> {
    /// The input shards this item reads.
    fn shards(&self) -> Vec<&'a Shard> {
        match *self {
            Item::Copy(t) | Item::Widen(t) => vec![t.shard],
            Item::Dequant { weight, scale, .. } => vec![weight.shard, scale.shard],
            Item::Scale(s, _) | Item::Quant(s, _) | Item::ScaleBias(s, _) => {
                let mut v = vec![s.weight.shard];
                v.extend(s.fp8.map(|(sc, _, _)| sc.shard));
                v
            }
            Item::Zeros(_) => Vec::new(),
            Item::Packed4 { packed, scale, extra, .. } => {
                let mut v = vec![packed.shard, scale.shard];
                v.extend(extra.map(|e| e.shard));
                v
            }
            Item::Mx { blocks, scales } => vec![blocks.shard, scales.shard],
        }
    }

    /// Input bytes this item reads (for progress and the summary).
    fn input_bytes(&self) -> u64 {
        match *self {
            Item::Copy(t) | Item::Widen(t) => t.entry.nbytes(),
            Item::Dequant { weight, .. } => weight.entry.nbytes(),
            Item::Scale(..) | Item::Zeros(_) | Item::ScaleBias(..) => 0,
            Item::Quant(s, _) => s.weight.entry.nbytes(),
            Item::Packed4 { packed, .. } => packed.entry.nbytes(),
            Item::Mx { blocks, .. } => blocks.entry.nbytes(),
        }
    }
}

struct ShardPlan<'a> {
    /// The output file, relative to `--out`.
    name: String,
    /// Every input shard its items read.
    inputs: Vec<&'a Shard>,
    items: Vec<Item<'a>>,
    out: Vec<OutTensor>,
    header: Vec<u8>,
    len: u64,
    in_bytes: u64,
}

struct Plan<'a> {
    shards: Vec<ShardPlan<'a>>,
    dropped: usize,
    /// `quantize`: the description's entries (tensor, scheme) in write order.
    description: Option<Vec<(String, &'static str)>>,
    /// `quantize`: the description's `model_quant_type`.
    quant_type: &'static str,
}

fn refuse_codes() -> [Code; 5] {
    [Code::Fp8ScaleMissing, Code::Fp8ScaleOrphan, Code::Fp8ScaleShape, Code::Fp8WithoutQuantConfig, Code::Fp8ScaleDtype]
}

/// Check everything and build the plan; nothing is written here.
fn plan<'a>(ck: &'a Checkpoint, open_findings: &[Finding], task: Task) -> Result<Plan<'a>, ConvertError> {
    let mut reasons: Vec<String> = open_findings
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| {
            format!(
                "{} {}{}",
                f.code.as_str(),
                f.file.as_ref().map(|x| format!("{x}: ")).unwrap_or_default(),
                f.message
            )
        })
        .collect();
    let scheme = ck.quant_scheme().cloned();
    let p4 = match (&scheme, task) {
        (Some(s), Task::Dequant(_)) => packed::plan(ck, s)?,
        _ => None,
    };
    if let Some(p4) = p4 {
        if !reasons.is_empty() {
            return Err(ConvertError::Refused { reasons });
        }
        return plan4(ck, task, p4);
    }
    let fp8_count = ck.tensors().filter(|t| t.entry.dtype.is_fp8_weight()).count();
    match &scheme {
        Some(s) if s.fp8_scale.is_none() => return Err(ConvertError::Unsupported {
            scheme: format!(
                "{:?}{}",
                s.method.as_str(),
                s.format.as_ref().map(|f| format!(" ({f})")).unwrap_or_default()
            ),
            command: task.command(),
            accepted: match task {
                Task::Dequant(_) => "fp8 with block, per-channel or per-tensor scales is",
                Task::Quantize { .. } => {
                    "it reads bf16, f16 or f32 checkpoints, and fp8 ones with block, per-channel or per-tensor scales"
                }
            },
        }),
        None if fp8_count == 0 && matches!(task, Task::Dequant(_)) => {
            reasons.push(
                "the checkpoint has no fp8 weights and no quantization_config: there is nothing to dequantize".into(),
            );
        }
        _ => {}
    }
    for t in ck.tensors().filter(|t| t.entry.dtype.is_fp8_weight()) {
        if Fp8Format::of(t.entry.dtype).is_none() {
            reasons
                .push(format!("{}: dtype {} is not supported (F8_E4M3 and F8_E5M2 are)", t.entry.name, t.entry.dtype));
        }
    }
    let mut pf = Vec::new();
    let pairing = pair_fp8(ck, scheme.as_ref(), audit_rules(), &mut pf);
    for f in pf.iter().filter(|f| refuse_codes().contains(&f.code)) {
        reasons.push(format!("{} {}", f.code.as_str(), f.message));
    }
    if !reasons.is_empty() {
        return Err(ConvertError::Refused { reasons });
    }

    let mut pairs: BTreeMap<&str, (&str, ScaleLayout)> = BTreeMap::new();
    for p in &pairing.pairs {
        pairs.insert(p.weight(ck), (p.scale(ck), p.layout));
    }
    let mut to_drop: HashSet<String> = pairing.pairs.iter().map(|p| p.scale(ck).to_string()).collect();
    for p in &pairing.pairs {
        let weight = p.weight(ck);
        let module = weight.strip_suffix(".weight").unwrap_or(weight);
        let input_scale = format!("{module}.input_scale");
        if ck.get(&input_scale).is_some() {
            to_drop.insert(input_scale);
        }
    }
    if let Task::Quantize { to, part_bytes } = task {
        return quantize::plan(ck, to, part_bytes, &pairs, &to_drop);
    }
    let dtype = task.dequant_dtype();
    let mut shards = Vec::with_capacity(ck.shards.len());
    let mut dropped = 0;
    for s in &ck.shards {
        let mut items = Vec::new();
        let mut out = Vec::new();
        for e in s.tensors() {
            let t = TensorRef { shard: s, entry: e };
            if to_drop.contains(&e.name) {
                dropped += 1;
                continue;
            }
            match pairs.get(e.name.as_str()) {
                Some(&(scale, layout)) => {
                    let scale = ck.get(scale).expect("paired scale exists");
                    let fmt = Fp8Format::of(e.dtype).expect("checked above");
                    let n = e.numel() * dtype.bytes() as u64;
                    out.push(OutTensor {
                        name: e.name.clone(),
                        dtype: dtype.dtype(),
                        shape: e.shape.to_vec(),
                        nbytes: n,
                    });
                    items.push(Item::Dequant { weight: t, scale, layout, fmt });
                }
                None => {
                    out.push(OutTensor {
                        name: e.name.clone(),
                        dtype: e.dtype,
                        shape: e.shape.to_vec(),
                        nbytes: e.nbytes(),
                    });
                    items.push(Item::Copy(t));
                }
            }
        }
        shards.push(mirrored(s, items, out));
    }
    Ok(Plan { shards, dropped, description: None, quant_type: "" })
}

/// The output shard that mirrors input shard `s` (same name, its metadata kept).
fn mirrored<'a>(s: &'a Shard, items: Vec<Item<'a>>, out: Vec<OutTensor>) -> ShardPlan<'a> {
    let meta = s.header.metadata.clone().unwrap_or_default();
    let header = writer::header_bytes(&out, &meta);
    let len = writer::file_len(&header, &out);
    let inputs = inputs_of(Some(s), &items);
    ShardPlan { name: s.name.clone(), inputs, items, out, header, len, in_bytes: s.file_len }
}

/// Every input shard the items read, each once (`first`, the mirrored shard, first).
fn inputs_of<'a>(first: Option<&'a Shard>, items: &[Item<'a>]) -> Vec<&'a Shard> {
    let mut inputs: Vec<&'a Shard> = first.into_iter().collect();
    for x in items.iter().flat_map(Item::shards) {
        if !inputs.iter().any(|y| std::ptr::eq(*y, x)) {
            inputs.push(x);
        }
    }
    inputs
}

/// The plan of a 4-bit checkpoint's dequantization: each input shard mirrored, its packed weights
/// (and MXFP4 blocks) made bf16 under their unquantized names, their companions dropped.
fn plan4<'a>(ck: &'a Checkpoint, task: Task, p4: packed::Plan4<'a>) -> Result<Plan<'a>, ConvertError> {
    if task != Task::Dequant(OutDtype::BF16) {
        return Err(ConvertError::Unsupported {
            scheme: format!("{} (4-bit)", ck.quant_scheme().map(|s| s.method.to_string()).unwrap_or_default()),
            command: task.command(),
            accepted:
                "4-bit checkpoints are dequantized to bf16 only (--dtype bf16), as their producers' references do",
        });
    }
    let mut shards = Vec::with_capacity(ck.shards.len());
    let mut dropped = 0;
    for s in &ck.shards {
        let mut items = Vec::new();
        let mut out = Vec::new();
        for e in s.tensors() {
            if p4.drop.contains(&e.name) {
                dropped += 1;
                continue;
            }
            match p4.primary.get(&e.name) {
                Some((name, shape, item)) => {
                    let nbytes = shape.iter().product::<u64>().saturating_mul(2);
                    out.push(OutTensor { name: name.clone(), dtype: Dtype::BF16, shape: shape.clone(), nbytes });
                    items.push(*item);
                }
                None => {
                    out.push(OutTensor {
                        name: e.name.clone(),
                        dtype: e.dtype,
                        shape: e.shape.to_vec(),
                        nbytes: e.nbytes(),
                    });
                    items.push(Item::Copy(TensorRef { shard: s, entry: e }));
                }
            }
        }
        shards.push(mirrored(s, items, out));
    }
    Ok(Plan { shards, dropped, description: None, quant_type: "" })
}

/// Shards of part `k` (1-based) of `n`: greedy by size, largest first, onto the lightest part.
fn part_of(plan: &Plan<'_>, k: usize, n: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..plan.shards.len()).collect();
    order.sort_by(|&a, &b| plan.shards[b].in_bytes.cmp(&plan.shards[a].in_bytes).then(a.cmp(&b)));
    let mut load = vec![0u64; n];
    let mut mine = Vec::new();
    for i in order {
        let p = (0..n).min_by_key(|&p| (load[p], p)).expect("n > 0");
        load[p] += plan.shards[i].in_bytes.max(1);
        if p + 1 == k {
            mine.push(i);
        }
    }
    mine.sort();
    mine
}

/// The conversion's identity (see [`state::State::conversion`]).
fn conversion_id(ck: &Checkpoint, plan: &Plan<'_>, task: Task) -> String {
    let mut h = blake3::Hasher::new();
    h.update(format!("{task:?}\n").as_bytes());
    // The scale layout and format come from here; the values they give depend on it.
    let quant = ck.config_json.as_ref().and_then(|c| {
        c.get("quantization_config").or_else(|| c.get("text_config").and_then(|t| t.get("quantization_config")))
    });
    h.update(quant.map(|q| q.to_string()).unwrap_or_default().as_bytes());
    h.update(ck.hf_quant_config.as_ref().map(|q| q.to_string()).unwrap_or_default().as_bytes());
    for sp in &plan.shards {
        h.update(sp.name.as_bytes());
        h.update(&[0]);
        for i in &sp.inputs {
            h.update(i.name.as_bytes());
            h.update(&[0]);
        }
        h.update(blake3::hash(&sp.header).as_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// The input shards an output shard is made from, as they are now.
fn input_ident(sp: &ShardPlan<'_>) -> BTreeMap<String, state::InputIdent> {
    sp.inputs
        .iter()
        .map(|s| {
            let i = s.ident;
            let id =
                state::InputIdent { len: i.map(|i| i.len).unwrap_or(0), mtime_ns: i.map(|i| i.mtime_ns).unwrap_or(0) };
            (s.name.clone(), id)
        })
        .collect()
}

const TOOL: &str = concat!("ckptpilot ", env!("CARGO_PKG_VERSION"));

/// The output directory, locked for this run, with what earlier runs of the same conversion finished.
struct OutDir {
    _locks: Vec<fsutil::Lock>,
    state_path: PathBuf,
    state: state::State,
    /// Shards recorded finished by any state file of this conversion.
    done: BTreeMap<String, state::Done>,
    /// Other files recorded as written by runs of this conversion.
    files: BTreeMap<String, String>,
}

/// What is in an output directory.
#[derive(Default)]
struct Scan {
    /// State files (names).
    states: Vec<String>,
    /// Entries that are not ckptpilot's bookkeeping: how many, and a few names.
    foreign: usize,
    sample: Vec<String>,
}

fn scan(out: &Path) -> Result<Scan, ConvertError> {
    let mut sc = Scan::default();
    let rd = match std::fs::read_dir(out) {
        Ok(rd) => rd,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(sc),
        Err(e) => return Err(ConvertError::Io { path: out.to_path_buf(), source: e }),
    };
    for e in rd {
        let e = e.map_err(io(out))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if state::is_state_file(&name) {
            sc.states.push(name);
        } else if !state::is_bookkeeping(&name) {
            sc.foreign += 1;
            sc.sample.push(name);
        }
    }
    sc.sample.sort();
    sc.sample.truncate(5);
    sc.states.sort();
    Ok(sc)
}

/// Check `--out` is empty or this conversion's (before anything is written there), then create it,
/// take the locks, and read what earlier runs finished.
fn prepare_out(ck: &Checkpoint, plan: &Plan<'_>, mine: &[usize], opts: &Options) -> Result<OutDir, ConvertError> {
    let out = &opts.out;
    match std::fs::metadata(out) {
        Ok(md) if !md.is_dir() => return Err(ConvertError::OutNotDir(out.clone())),
        Ok(_) | Err(_) => {}
    }
    let id = conversion_id(ck, plan, opts.task);
    let cmd = opts.task.command();
    // Refuse before creating anything in a directory that is not ours: not even a lock file.
    let check = |sc: &Scan| -> Result<BTreeMap<String, state::State>, ConvertError> {
        let mut ours = BTreeMap::new();
        for name in &sc.states {
            let path = out.join(name);
            let why = match state::State::read(&path) {
                Ok(s) if s.conversion == id => {
                    ours.insert(name.clone(), s);
                    continue;
                }
                Ok(s) => {
                    format!(
                        "it converted {} to {} with another command, layout, dtype or quantization config",
                        s.input, s.dtype
                    )
                }
                Err(why) => why,
            };
            if !opts.force {
                return Err(ConvertError::OtherConversion { out: out.clone(), state: path, why });
            }
        }
        if sc.foreign > 0 && ours.is_empty() && !opts.force {
            return Err(ConvertError::OutNotEmpty { out: out.clone(), sample: sc.sample.clone(), count: sc.foreign });
        }
        Ok(ours)
    };
    let dir_lock = out.join(state::DIR_LOCK);
    // Another ckptpilot writing here is said first, whatever the directory holds (a probe: nothing
    // is created): its half-written files are not this run's business, with or without --force.
    if let Some(holder) = fsutil::Lock::holder(&dir_lock) {
        return Err(locked(out, LockError::Held { path: dir_lock, holder: Some(holder) }));
    }
    check(&scan(out)?)?;
    std::fs::create_dir_all(out).map_err(io(out))?;
    let whole = opts.part.is_none() || opts.finalize_only;
    let what = format!("ckptpilot {cmd}");
    // A part with --force replaces what is there: it must be alone when it does, so it takes the
    // directory exclusively first and only then shares it with the other parts.
    let exclusive_first = whole || opts.force;
    let first = fsutil::Lock::try_acquire_as(&dir_lock, exclusive_first, &what).map_err(|e| locked(out, e))?;
    let mut locks = vec![if exclusive_first && !whole {
        drop(first);
        fsutil::Lock::try_acquire_as(&dir_lock, false, &what).map_err(|e| locked(out, e))?
    } else {
        first
    }];
    if let (Some((k, n)), false) = (opts.part, opts.finalize_only) {
        locks.push(
            fsutil::Lock::try_acquire_as(&out.join(state::part_lock(cmd, k, n)), true, &what)
                .map_err(|e| locked(out, e))?,
        );
        // Parts share the directory lock, so a part of another command would share it too: the
        // part locks it holds say whose the directory is.
        if let Some(other) = held_parts(out).into_iter().find(|(c, _)| c != cmd) {
            return Err(ConvertError::Locked { holder: format!("ckptpilot {} --part {}", other.0, other.1) });
        }
    }
    // Now that nobody else writes here, look again: that scan is the one that counts.
    let sc = scan(out)?;
    let ours = check(&sc)?;
    if opts.force {
        for name in sc.states.iter().filter(|n| !ours.contains_key(*n)) {
            // --force: that conversion is being replaced; its record no longer describes the directory.
            let path = out.join(name);
            std::fs::remove_file(&path).map_err(io(&path))?;
        }
    }
    let mut done = BTreeMap::new();
    let mut files = BTreeMap::new();
    for s in ours.values() {
        done.extend(s.shards.clone());
        files.extend(s.files.clone());
    }
    // Temporary files of runs that died. This run's lock says nobody else writes these shards: a
    // whole run (or --finalize) holds the directory alone, a part its own shards.
    let mut dirs: BTreeMap<PathBuf, Vec<String>> = BTreeMap::new();
    for &i in mine {
        let rel = Path::new(&plan.shards[i].name);
        let dir = out.join(rel.parent().unwrap_or(Path::new("")));
        let base = rel.file_name().map(|b| b.to_string_lossy().into_owned()).unwrap_or_default();
        dirs.entry(dir).or_default().push(base);
    }
    if whole {
        dirs.entry(out.clone())
            .or_default()
            .extend(["config.json".into(), crate::checkpoint::index::INDEX_NAME.into()]);
        // (a whole run removes every temporary file in the output's top directory)
    }
    for (dir, bases) in &dirs {
        let Ok(rd) = std::fs::read_dir(dir) else { continue };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.contains(fsutil::TMP_MARK) && (whole || bases.iter().any(|b| fsutil::is_tmp_of(&name, b))) {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    let state_name = state::file_name(cmd, if opts.finalize_only { None } else { opts.part });
    let state_path = out.join(&state_name);
    let mut st = match ours.get(&state_name) {
        Some(s) => s.clone(),
        None => state::State::new(id, ck.source.root.display().to_string(), opts.task.output()),
    };
    st.shards.retain(|name, _| plan.shards.iter().any(|sp| &sp.name == name));
    // Recorded before the first shard, so a part starting beside this one sees whose directory it is.
    st.write(&state_path).map_err(io(&state_path))?;
    Ok(OutDir { _locks: locks, state_path, state: st, done, files })
}

/// The part runs of any command holding their part lock in `out` right now: (command, "K/N (PID …)").
fn held_parts(out: &Path) -> Vec<(String, String)> {
    let mut parts: Vec<(String, String)> = std::fs::read_dir(out)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let (cmd, part) = state::parse_part_lock(&name)?;
            let (cmd, part) = (cmd.to_string(), part.replace("-of-", "/"));
            fsutil::Lock::holder(&e.path()).map(|h| (cmd, format!("{part} ({h})")))
        })
        .collect();
    parts.sort();
    parts
}

/// The lock error, naming who holds it: the exclusive holder, or the `--part` runs holding it shared.
fn locked(out: &Path, e: LockError) -> ConvertError {
    match e {
        LockError::Held { holder: Some(h), .. } if !h.ends_with("a ckptpilot process") => {
            ConvertError::Locked { holder: h }
        }
        LockError::Held { .. } => {
            let parts = held_parts(out);
            ConvertError::Locked {
                holder: if parts.is_empty() {
                    "a ckptpilot process".into()
                } else {
                    format!(
                        "--part runs: {}",
                        parts.iter().map(|(c, p)| format!("ckptpilot {c} part {p}")).collect::<Vec<_>>().join(", ")
                    )
                },
            }
        }
        LockError::Io { path, source } => ConvertError::LockIo { path, source },
    }
}

/// Whether `path` still holds the finished shard `sp` as recorded: same size, same planned
/// header, made from the same input by this ckptpilot, and — unless `trust` — the same bytes.
fn is_kept(path: &Path, sp: &ShardPlan<'_>, done: Option<&state::Done>, trust: bool) -> Result<bool, ConvertError> {
    let Some(done) = done else { return Ok(false) };
    let Ok(md) = std::fs::symlink_metadata(path) else { return Ok(false) };
    if !md.file_type().is_file() || md.len() != sp.len || done.len != sp.len {
        return Ok(false);
    }
    if done.header_blake3 != blake3::hash(&sp.header).to_hex().as_str()
        || done.inputs != input_ident(sp)
        || done.tool != TOOL
    {
        return Ok(false);
    }
    if trust {
        let mut head = vec![0u8; sp.header.len()];
        let f = std::fs::File::open(path).map_err(io(path))?;
        return Ok(fsutil::read_exact_at(&f, &mut head, 0).is_ok() && head == sp.header);
    }
    Ok(digest_file(path, sp)? == done.digest)
}

/// blake3 of a whole file, read (not mapped: it may change under us) in large chunks.
fn hash_file(path: &Path) -> Result<String, ConvertError> {
    let (mut f, _) = fsutil::open_regular(path)
        .map_err(|e| ConvertError::Io { path: path.to_path_buf(), source: std::io::Error::other(e.to_string()) })?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; COPY_CHUNK];
    loop {
        let n = match std::io::Read::read(&mut f, &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ConvertError::Io { path: path.to_path_buf(), source: e }),
        };
        h.update_rayon(&buf[..n]);
    }
    Ok(h.finalize().to_hex().to_string())
}

pub fn run(ck: &Checkpoint, open_findings: &[Finding], opts: &Options) -> Result<Summary, ConvertError> {
    let t0 = std::time::Instant::now();
    let root = &ck.source.root;
    if same_dir(root, &opts.out) {
        return Err(ConvertError::OutputIsInput(opts.out.clone()));
    }
    if let Some((k, n)) = opts.part {
        if n == 0 || k == 0 || k > n {
            return Err(ConvertError::BadPart { k, n, shards: None });
        }
    }
    let plan = plan(ck, open_findings, opts.task)?;
    if let Some((k, n)) = opts.part {
        if n > plan.shards.len() {
            return Err(ConvertError::BadPart { k, n, shards: Some(plan.shards.len()) });
        }
    }
    let mine: Vec<usize> = match opts.part {
        Some((k, n)) if !opts.finalize_only => part_of(&plan, k, n),
        _ => (0..plan.shards.len()).collect(),
    };
    let mut out = prepare_out(ck, &plan, &mine, opts)?;
    let mut sum = Summary {
        schema: match opts.task {
            Task::Dequant(_) => "ckptpilot.dequant/1",
            Task::Quantize { .. } => "ckptpilot.quantize/1",
        },
        out: opts.out.display().to_string(),
        out_dtype: opts.task.output(),
        part: opts.part.map(|(k, n)| format!("{k}/{n}")),
        shards_total: plan.shards.len(),
        state_file: out.state_path.display().to_string(),
        ..Summary::default()
    };
    if !opts.finalize_only {
        let total: u64 = mine.iter().map(|&i| plan.shards[i].in_bytes).sum();
        let bar = progress_bar(opts.progress, total);
        // Quantize runs its jobs on every worker thread, each with its own buffers; dequant one at a
        // time, its kernels across the threads.
        let workers = match opts.task {
            Task::Quantize { .. } => rayon::current_num_threads().max(1),
            Task::Dequant(_) => 1,
        };
        let mut bufs: Vec<Bufs> = (0..workers).map(|_| Bufs::new(opts.task.dequant_dtype())).collect();
        let abort_after: Option<usize> =
            std::env::var("CKPTPILOT_FAULT_ABORT_AFTER_SHARDS").ok().and_then(|v| v.parse().ok());
        let mut written = 0usize;
        for &i in &mine {
            let sp = &plan.shards[i];
            let dst = opts.out.join(&sp.name);
            if is_kept(&dst, sp, out.done.get(&sp.name), opts.trust_existing)? {
                sum.shards_kept += 1;
                out.state.shards.insert(sp.name.clone(), out.done[&sp.name].clone());
            } else {
                out.state.shards.remove(&sp.name);
                let fault = abort_after == Some(written);
                let done = write_shard(sp, &opts.out, &dst, &mut bufs, fault)?;
                out.state.shards.insert(sp.name.clone(), done);
                out.state.write(&out.state_path).map_err(io(&out.state_path))?;
                written += 1;
                sum.shards_written += 1;
                sum.bytes_read += sp.in_bytes;
                sum.bytes_written += sp.len;
            }
            for it in &sp.items {
                match it {
                    Item::Copy(_) | Item::Widen(_) => sum.tensors_copied += 1,
                    Item::Dequant { .. } | Item::Packed4 { .. } | Item::Mx { .. } => sum.tensors_dequantized += 1,
                    Item::Quant(..) => sum.tensors_quantized += 1,
                    Item::Scale(..) | Item::Zeros(_) | Item::ScaleBias(..) => {}
                }
            }
            if let Some(b) = &bar {
                b.inc(sp.in_bytes);
            }
        }
        out.state.write(&out.state_path).map_err(io(&out.state_path))?;
        if let Some(b) = bar {
            b.finish_and_clear();
        }
    }
    sum.tensors_dropped = plan.dropped;
    if opts.verify {
        let mut buf = Bufs::new(opts.task.dequant_dtype());
        for &i in &mine {
            let sp = &plan.shards[i];
            let path = opts.out.join(&sp.name);
            if let Err(e) = verify_shard(sp, &path, &mut buf) {
                // A shard that fails verification is not finished: forget it and remove it, so the
                // next run makes it again instead of keeping it by its (matching) hash.
                if matches!(e, ConvertError::Verify { .. }) {
                    out.state.shards.remove(&sp.name);
                    out.state.write(&out.state_path).map_err(io(&out.state_path))?;
                    let _ = std::fs::remove_file(&path);
                }
                return Err(e);
            }
        }
        sum.verified = true;
    }
    if opts.part.is_none() || opts.finalize_only {
        // Every shard recorded by some run of this conversion, still as recorded (its bytes
        // re-hashed unless --trust-existing).
        let mut all = out.done.clone();
        all.extend(out.state.shards.clone());
        let mut missing = Vec::new();
        for sp in &plan.shards {
            let path = opts.out.join(&sp.name);
            // A whole run has just written or checked each of its shards; --finalize checks them now.
            let ready = if opts.finalize_only {
                is_kept(&path, sp, all.get(&sp.name), opts.trust_existing)?
            } else {
                all.contains_key(&sp.name)
            };
            if !ready {
                missing.push(sp.name.clone());
            }
        }
        if !missing.is_empty() {
            return Err(ConvertError::NotReady { missing });
        }
        let mut files = out.files.clone();
        files.extend(out.state.files.clone());
        (sum.kept_files, sum.skipped_files) = finalize(ck, &plan, opts, &mut files)?;
        out.state.files = files;
        out.state.write(&out.state_path).map_err(io(&out.state_path))?;
        sum.finalized = true;
    }
    sum.seconds = t0.elapsed().as_secs_f64();
    Ok(sum)
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (std::fs::canonicalize(a), std::fs::canonicalize(b)) {
        (Ok(x), Ok(y)) => x == y,
        _ => false,
    }
}

fn progress_bar(wanted: bool, total: u64) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if !wanted || !std::io::stderr().is_terminal() {
        return None;
    }
    let b = indicatif::ProgressBar::new(total);
    b.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}")
            .expect("static template"),
    );
    Some(b)
}

/// Reused buffers: the fp8 codes of one band (read from the input) and its dequantized output.
struct BandBuf {
    dtype: OutDtype,
    codes: Vec<u8>,
    b16: Vec<u16>,
    b32: Vec<f32>,
}

impl BandBuf {
    fn new(dtype: OutDtype) -> Self {
        BandBuf { dtype, codes: Vec::new(), b16: Vec::new(), b32: Vec::new() }
    }

    /// Read and dequantize rows `[r0, r0+nrows)` of matrix `m` into the buffer; returns its bytes.
    fn band(
        &mut self,
        item: &Item<'_>,
        data: &ShardData<'_>,
        scales: &[f32],
        m: usize,
        r0: usize,
        nrows: usize,
    ) -> Result<&[u8], ConvertError> {
        let Item::Dequant { weight, layout, fmt, .. } = *item else { unreachable!("only dequant items have bands") };
        let shape = &weight.entry.shape;
        let (n, k) = (shape[shape.len() - 2] as usize, shape[shape.len() - 1] as usize);
        let mats = (weight.entry.numel() as usize) / (n * k).max(1);
        let len = nrows * k;
        if self.codes.len() < len {
            self.codes.resize(len, 0);
        }
        data.read_par(weight.entry, ((m * n + r0) * k) as u64, &mut self.codes[..len])?;
        let codes = &self.codes[..len];
        let sc: &[f32] = match layout {
            ScaleLayout::Block { n: bn, k: bk } => {
                let (bn, gk) = (bn as usize, k.div_ceil(bk as usize));
                let gn = n.div_ceil(bn);
                let (g0, g1) = (r0 / bn, (r0 + nrows).div_ceil(bn));
                &scales[(m * gn + g0) * gk..(m * gn + g1) * gk]
            }
            ScaleLayout::Channel => &scales[m * n + r0..m * n + r0 + nrows],
            ScaleLayout::Tensor => {
                if scales.len() == 1 || mats == 1 {
                    &scales[..1]
                } else {
                    &scales[m..m + 1]
                }
            }
        };
        let sh = [nrows as u64, k as u64];
        let s = Scales { values: sc, layout };
        let err = |source| ConvertError::Kernel { tensor: weight.entry.name.clone(), source };
        Ok(match self.dtype {
            OutDtype::F32 => {
                if self.b32.len() < len {
                    self.b32.resize(len, 0.0);
                }
                dequantize(codes, &sh, fmt, s, Output::F32(&mut self.b32[..len])).map_err(err)?;
                as_bytes(&self.b32[..len])
            }
            d => {
                if self.b16.len() < len {
                    self.b16.resize(len, 0);
                }
                let o = &mut self.b16[..len];
                let out = if d == OutDtype::BF16 { Output::BF16(o) } else { Output::F16(o) };
                dequantize(codes, &sh, fmt, s, out).map_err(err)?;
                as_bytes(&self.b16[..len])
            }
        })
    }
}

/// Plain numbers as their little-endian bytes (the target is little-endian: checked at compile time).
fn as_bytes<T: Copy>(v: &[T]) -> &[u8] {
    // SAFETY: T is a plain number type (u16, f32, i8) with no padding; any bytes are valid u8.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// A buffer of plain numbers as writable bytes.
fn as_bytes_mut<T: Copy>(v: &mut [T]) -> &mut [u8] {
    // SAFETY: as above; every bit pattern is a valid u16 / f32 / i8.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast::<u8>(), std::mem::size_of_val(v)) }
}

/// Row bands of a weight: (matrix, first row, rows), each at most BAND_BYTES at `out_bytes` per
/// element and, for block scales, whole block rows; a multiple of `unit` rows but the last.
fn bands(
    weight: TensorRef<'_>,
    layout: Option<ScaleLayout>,
    out_bytes: usize,
    unit: usize,
    limit: usize,
) -> Vec<(usize, usize, usize)> {
    let shape = &weight.entry.shape;
    if shape.len() < 2 {
        return Vec::new();
    }
    let (n, k) = (shape[shape.len() - 2] as usize, shape[shape.len() - 1] as usize);
    if n == 0 || k == 0 {
        return Vec::new();
    }
    let mats = weight.entry.numel() as usize / (n * k);
    let mut rows = (limit / (k * out_bytes)).max(1);
    let mut unit = unit;
    if let Some(ScaleLayout::Block { n: bn, .. }) = layout {
        unit = lcm(unit, bn as usize);
    }
    rows = (rows / unit).max(1) * unit;
    let mut v = Vec::new();
    for m in 0..mats {
        let mut r = 0;
        while r < n {
            let nr = rows.min(n - r);
            v.push((m, r, nr));
            r += nr;
        }
    }
    v
}

fn lcm(a: usize, b: usize) -> usize {
    let gcd = |mut a: usize, mut b: usize| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    a / gcd(a, b).max(1) * b
}

/// An fp8 weight's scales as f32, read from their shard.
fn fp8_scales(scale: TensorRef<'_>, open: &Opened<'_>) -> Result<Vec<f32>, ConvertError> {
    let bytes = open.of(scale.shard).read_all(scale.entry)?;
    scales_to_f32(&bytes, scale.entry.dtype)
        .map_err(|source| ConvertError::Kernel { tensor: scale.entry.name.clone(), source })
}

/// `total` bytes as (offset, length) pieces of at most [`COPY_CHUNK`].
fn pieces(total: u64) -> impl Iterator<Item = (u64, usize)> {
    let chunk = COPY_CHUNK as u64;
    (0..total.div_ceil(chunk)).map(move |i| (i * chunk, (total - i * chunk).min(chunk) as usize))
}

/// The input shards one output shard reads, open (and checked unchanged when it is done).
struct Opened<'a> {
    data: Vec<ShardData<'a>>,
}

impl<'a> Opened<'a> {
    fn open(sp: &ShardPlan<'a>) -> Result<Self, ConvertError> {
        Ok(Opened { data: sp.inputs.iter().map(|s| s.open_data()).collect::<Result<_, _>>()? })
    }

    fn of(&self, s: &Shard) -> &ShardData<'a> {
        self.data.iter().find(|d| std::ptr::eq(d.shard(), s)).expect("every input an item reads is planned")
    }

    /// Everything read came from the files whose headers were planned, unchanged to the last read.
    fn still_same(&self) -> Result<(), ConvertError> {
        for d in &self.data {
            d.still_same()?;
        }
        Ok(())
    }
}

/// Buffers reused across the items of a run.
struct Bufs {
    band: BandBuf,
    chunk: Vec<u8>,
    r16: Vec<u16>,
    r32: Vec<f32>,
    q: Vec<i8>,
    /// Row scales of the weights quantized in the current output shard (its scales come first in
    /// the file, its weights last).
    row_scales: HashMap<String, Vec<f32>>,
    /// The int4 code sums of each row's chunks, for `scale_bias`, of the same weights.
    code_sums: HashMap<String, Vec<i32>>,
    /// The E8M0 scales of the MXFP8 weights quantized in the current output shard.
    mx_scales: HashMap<String, Vec<u8>>,
    packed: Vec<u8>,
}

impl Bufs {
    /// Before making `item`: a quantized weight's pass starts afresh, its predecessor's scales and
    /// sums (used by the tensors made right after it) are dropped.
    fn start(&mut self, item: &Item<'_>) {
        if matches!(item, Item::Quant(..)) {
            self.row_scales.clear();
            self.code_sums.clear();
            self.mx_scales.clear();
        }
    }

    fn new(dtype: OutDtype) -> Self {
        Bufs {
            band: BandBuf::new(dtype),
            chunk: Vec::new(),
            r16: Vec::new(),
            r32: Vec::new(),
            q: Vec::new(),
            row_scales: HashMap::new(),
            code_sums: HashMap::new(),
            mx_scales: HashMap::new(),
            packed: Vec::new(),
        }
    }
}

/// At least `len` elements (a reused buffer only grows: shrinking and growing again would zero
/// the same memory over and over).
fn grow<T: Copy + Default>(v: &mut Vec<T>, len: usize) {
    if v.len() < len {
        v.resize(len, T::default());
    }
}

/// Rows `[r0, r0+nr)` of a weight to quantize, in its compute dtype (fp8: dequantized to bf16).
#[allow(clippy::too_many_arguments)]
fn load_rows<'b>(
    src: &Src<'_>,
    open: &Opened<'_>,
    fp8: &[f32],
    band: &'b mut BandBuf,
    r16: &'b mut Vec<u16>,
    r32: &'b mut Vec<f32>,
    r0: usize,
    nr: usize,
) -> Result<Rows<'b>, ConvertError> {
    let k = src.weight.entry.shape[1] as usize;
    let len = nr * k;
    let data = open.of(src.weight.shard);
    if let Some(item) = src.as_dequant() {
        band.band(&item, data, fp8, 0, r0, nr)?;
        return Ok(Rows::Half(&band.b16[..len], Compute::BF16));
    }
    let c = src.compute();
    let skip = (r0 * k * c.bytes()) as u64;
    Ok(match c {
        Compute::F32 => {
            grow(r32, len);
            data.read_par(src.weight.entry, skip, as_bytes_mut(&mut r32[..len]))?;
            Rows::F32(&r32[..len])
        }
        c => {
            grow(r16, len);
            data.read_par(src.weight.entry, skip, as_bytes_mut(&mut r16[..len]))?;
            Rows::Half(&r16[..len], c)
        }
    })
}

/// Rows per band when quantizing a weight with `k` columns (fp8 sources: whole scale blocks;
/// int4: whole row pairs).
fn quant_bands(src: &Src<'_>, codes: Codes) -> Vec<(usize, usize, usize)> {
    let pair = if matches!(codes, Codes::I4 { .. }) { 2 } else { 1 };
    bands(src.weight, src.fp8.map(|(_, l, _)| l), 4, pair, QUANT_BAND_BYTES)
}

fn non_finite(src: &Src<'_>, r0: usize, e: int8::NonFinite) -> ConvertError {
    ConvertError::NonFinite {
        file: src.weight.shard.name.clone(),
        tensor: src.weight.entry.name.clone(),
        source: int8::NonFinite { row: e.row + r0, col: e.col },
    }
}

/// Where an item's bytes go, in order.
type Sink<'s> = dyn FnMut(&[u8]) -> Result<(), ConvertError> + 's;

/// Quantize an int4 weight band by band: each packed band to `sink` (None: only the scales and
/// sums, for a `weight_scale` or `scale_bias` written before its weight). Row scales and code sums
/// are left in `b` for the weight's other tensors.
fn quant4(
    src: &Src<'_>,
    chunks: usize,
    open: &Opened<'_>,
    b: &mut Bufs,
    mut sink: Option<&mut Sink<'_>>,
) -> Result<(), ConvertError> {
    let name = &src.weight.entry.name;
    let (n, k) = (src.weight.entry.shape[0] as usize, src.weight.entry.shape[1] as usize);
    let known = b.row_scales.remove(name);
    let have = known.is_some();
    let mut scales = known.unwrap_or_else(|| vec![0f32; n]);
    let mut sums = vec![0i32; n * chunks];
    let fp8 = match src.fp8 {
        Some((scale, _, _)) => fp8_scales(scale, open)?,
        None => Vec::new(),
    };
    for (_, r0, nr) in quant_bands(src, Codes::I4 { chunks }) {
        let rows = load_rows(src, open, &fp8, &mut b.band, &mut b.r16, &mut b.r32, r0, nr)?;
        grow(&mut b.packed, nr / 2 * k);
        let out = &mut b.packed[..nr / 2 * k];
        let (s, m) = (&mut scales[r0..r0 + nr], &mut sums[r0 * chunks..(r0 + nr) * chunks]);
        int4::quantize_pack(rows, k, chunks, have, s, m, out).map_err(|e| non_finite(src, r0, e))?;
        if let Some(sink) = sink.as_mut() {
            sink(out)?;
        }
    }
    if k == 0 && !have {
        int8::row_scales(Rows::F32(&[]), 0, &mut scales).expect("no elements, nothing non-finite");
    }
    b.row_scales.insert(name.clone(), scales);
    b.code_sums.insert(name.clone(), sums);
    Ok(())
}

/// Quantize an MXFP8 weight band by band: each band's e4m3 bytes to `sink` (None: only the scales,
/// for a `weight_scale` without its weight in this output shard). The scales are left in `b`.
fn quant_mx8(
    src: &Src<'_>,
    open: &Opened<'_>,
    b: &mut Bufs,
    mut sink: Option<&mut Sink<'_>>,
) -> Result<(), ConvertError> {
    let name = &src.weight.entry.name;
    let (n, k) = (src.weight.entry.shape[0] as usize, src.weight.entry.shape[1] as usize);
    let sc = mxfp8::scale_cols(k);
    let mut scales = vec![0u8; n * sc];
    let fp8 = match src.fp8 {
        Some((scale, _, _)) => fp8_scales(scale, open)?,
        None => Vec::new(),
    };
    for (_, r0, nr) in quant_bands(src, Codes::Mx8) {
        let rows = load_rows(src, open, &fp8, &mut b.band, &mut b.r16, &mut b.r32, r0, nr)?;
        grow(&mut b.packed, nr * k);
        let out = &mut b.packed[..nr * k];
        mxfp8::quantize_rows(rows, k, out, &mut scales[r0 * sc..(r0 + nr) * sc]).map_err(|e| non_finite(src, r0, e))?;
        if let Some(sink) = sink.as_mut() {
            sink(out)?;
        }
    }
    b.mx_scales.insert(name.clone(), scales);
    Ok(())
}

/// The per-row scales of a weight to quantize (computed once per output shard).
fn row_scales_of(src: &Src<'_>, codes: Codes, open: &Opened<'_>, b: &mut Bufs) -> Result<Vec<f32>, ConvertError> {
    if let Some(s) = b.row_scales.get(&src.weight.entry.name) {
        return Ok(s.clone());
    }
    if let Codes::I4 { chunks } = codes {
        quant4(src, chunks, open, b, None)?;
        return Ok(b.row_scales[&src.weight.entry.name].clone());
    }
    let n = src.weight.entry.shape[0] as usize;
    let k = src.weight.entry.shape[1] as usize;
    let fp8 = match src.fp8 {
        Some((scale, _, _)) => fp8_scales(scale, open)?,
        None => Vec::new(),
    };
    let mut out = vec![0f32; n];
    for (_, r0, nr) in quant_bands(src, codes) {
        let rows = load_rows(src, open, &fp8, &mut b.band, &mut b.r16, &mut b.r32, r0, nr)?;
        int8::row_scales(rows, k, &mut out[r0..r0 + nr]).map_err(|e| non_finite(src, r0, e))?;
    }
    if k == 0 {
        int8::row_scales(Rows::F32(&[]), 0, &mut out).expect("no elements, nothing non-finite");
    }
    b.row_scales.insert(src.weight.entry.name.clone(), out.clone());
    Ok(out)
}

/// Produce one output tensor's bytes, in order, into `sink`.
fn emit(
    item: &Item<'_>,
    open: &Opened<'_>,
    b: &mut Bufs,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), ConvertError>,
) -> Result<(), ConvertError> {
    match *item {
        Item::Copy(t) => {
            let d = open.of(t.shard);
            for (off, n) in pieces(t.entry.nbytes()) {
                grow(&mut b.chunk, n);
                d.read_par(t.entry, off, &mut b.chunk[..n])?;
                sink(&b.chunk[..n])?;
            }
        }
        Item::Widen(t) => {
            let d = open.of(t.shard);
            for (off, n) in pieces(t.entry.nbytes()) {
                b.r16.resize(n / 2, 0);
                d.read(t.entry, off, as_bytes_mut(&mut b.r16))?;
                b.r32.clear();
                match t.entry.dtype {
                    Dtype::BF16 => b.r32.extend(b.r16.iter().map(|&x| f32::from_bits((x as u32) << 16))),
                    _ => b.r32.extend(b.r16.iter().map(|&x| half::f16::from_bits(x).to_f32())),
                }
                sink(as_bytes(&b.r32))?;
            }
        }
        Item::Dequant { weight, scale, layout, .. } => {
            let scales = fp8_scales(scale, open)?;
            let d = open.of(weight.shard);
            for (m, r0, nr) in bands(weight, Some(layout), b.band.dtype.bytes(), 1, BAND_BYTES) {
                let bytes = b.band.band(item, d, &scales, m, r0, nr)?;
                sink(bytes)?;
            }
        }
        Item::Zeros(n) => {
            let zeros = vec![0u8; (n * 4).min(COPY_CHUNK as u64) as usize];
            for (_, len) in pieces(n * 4) {
                sink(&zeros[..len])?;
            }
        }
        Item::Scale(src, Codes::Mx8) => {
            let name = &src.weight.entry.name;
            if !b.mx_scales.contains_key(name) {
                quant_mx8(&src, open, b, None)?;
            }
            sink(&b.mx_scales[name])?;
        }
        Item::Quant(src, Codes::Mx8) => quant_mx8(&src, open, b, Some(sink))?,
        Item::Scale(src, codes) => {
            let s = row_scales_of(&src, codes, open, b)?;
            sink(as_bytes(&s))?;
        }
        Item::ScaleBias(src, chunks) => {
            let name = &src.weight.entry.name;
            if !b.code_sums.contains_key(name) {
                quant4(&src, chunks, open, b, None)?;
            }
            sink(as_bytes(&int4::scale_bias(&b.row_scales[name], &b.code_sums[name], chunks)))?;
        }
        Item::Quant(src, Codes::I4 { chunks }) => quant4(&src, chunks, open, b, Some(sink))?,
        Item::Packed4 { packed, scale, extra, kind, n, k } => {
            packed::emit_packed4(packed, scale, extra, kind, n, k, open, b, sink)?
        }
        Item::Mx { blocks, scales } => packed::emit_mx(blocks, scales, open, b, sink)?,
        Item::Quant(src, Codes::I8) => {
            // One pass: each band's row scales are computed from the rows just read, then used.
            let name = &src.weight.entry.name;
            let (n, k) = (src.weight.entry.shape[0] as usize, src.weight.entry.shape[1] as usize);
            let known = b.row_scales.remove(name);
            let have = known.is_some();
            let mut scales = known.unwrap_or_else(|| vec![0f32; n]);
            if !have && k == 0 {
                int8::row_scales(Rows::F32(&[]), 0, &mut scales).expect("no elements, nothing non-finite");
            }
            let fp8 = match src.fp8 {
                Some((scale, _, _)) => fp8_scales(scale, open)?,
                None => Vec::new(),
            };
            for (_, r0, nr) in quant_bands(&src, Codes::I8) {
                let rows = load_rows(&src, open, &fp8, &mut b.band, &mut b.r16, &mut b.r32, r0, nr)?;
                grow(&mut b.q, nr * k);
                let q = &mut b.q[..nr * k];
                if have {
                    int8::quantize_rows(rows, k, &scales[r0..r0 + nr], q);
                } else {
                    int8::scale_and_quantize(rows, k, &mut scales[r0..r0 + nr], q)
                        .map_err(|e| non_finite(&src, r0, e))?;
                }
                sink(as_bytes(q))?;
            }
            b.row_scales.insert(name.clone(), scales);
        }
    }
    Ok(())
}

/// The hash of one tensor's bytes in a shard digest: XXH3-128. The digest tells a finished shard
/// from one changed since (a flipped byte, a truncation, another conversion's file); nothing
/// adversarial is guarded against (whoever can write the shard can write the state file too),
/// and at 15+ GB/s per core it costs a conversion a few percent, where blake3 cost 20-30 % of a
/// quantize and of a 4-bit dequant, whose outputs are 2x-4x their input (measured with perf).
type TensorHash = xxhash_rust::xxh3::Xxh3;

/// Hash `bytes` and write them at `pos`: a large buffer is hashed on another core while the write
/// system call copies it into the page cache.
fn put_at(file: &std::fs::File, hash: &mut TensorHash, bytes: &[u8], pos: u64) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    if bytes.len() >= 1 << 20 {
        let ((), written) = rayon::join(|| hash.update(bytes), || file.write_all_at(bytes, pos));
        written
    } else {
        hash.update(bytes);
        file.write_all_at(bytes, pos)
    }
}

/// A shard's digest, as the state file records it: blake3 over the XXH3-128 of its header and of
/// each tensor's bytes, in file order. Each part can be hashed as it is made, in any order (a
/// quantized weight before the scales that precede it in the file), and a rerun recomputes it
/// from the file alone.
fn digest(header: u128, tensors: &[u128]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(&header.to_le_bytes());
    for t in tensors {
        h.update(&t.to_le_bytes());
    }
    h.finalize().to_hex().to_string()
}

/// The digest of a finished shard file, read back (not mapped: it may change under us).
fn digest_file(path: &Path, sp: &ShardPlan<'_>) -> Result<String, ConvertError> {
    use std::os::unix::fs::FileExt;
    let (f, _) = fsutil::open_regular(path)
        .map_err(|e| ConvertError::Io { path: path.to_path_buf(), source: std::io::Error::other(e.to_string()) })?;
    let mut buf = vec![0u8; COPY_CHUNK];
    let mut hash_range = |begin: u64, len: u64| -> Result<u128, ConvertError> {
        let mut h = TensorHash::new();
        for (off, n) in pieces(len) {
            f.read_exact_at(&mut buf[..n], begin + off).map_err(io(path))?;
            h.update(&buf[..n]);
        }
        Ok(h.digest128())
    };
    let header = hash_range(0, sp.header.len() as u64)?;
    let mut pos = sp.header.len() as u64;
    let mut tensors = Vec::with_capacity(sp.out.len());
    for t in &sp.out {
        tensors.push(hash_range(pos, t.nbytes)?);
        pos += t.nbytes;
    }
    Ok(digest(header, &tensors))
}

/// The weight a quantized item is made from (its weight, `weight_scale` or `scale_bias`).
fn weight_of<'x>(it: &Item<'x>) -> Option<&'x str> {
    match *it {
        Item::Quant(s, _) | Item::Scale(s, _) | Item::ScaleBias(s, _) => Some(s.weight.entry.name.as_str()),
        _ => None,
    }
}

/// The order items are made in: each quantized weight, then the tensors its pass yields (its
/// `weight_scale` and `scale_bias`, earlier in the file, need no second read), then the rest in
/// file order. One weight's scales and code sums are held at a time ([`Bufs::start`]).
fn production_order(sp: &ShardPlan<'_>) -> Vec<usize> {
    let quant_at: HashMap<&str, usize> = sp
        .items
        .iter()
        .enumerate()
        .filter(|(_, it)| matches!(it, Item::Quant(..)))
        .filter_map(|(i, it)| Some((weight_of(it)?, i)))
        .collect();
    let mut order: Vec<usize> = (0..sp.items.len()).collect();
    order.sort_by_key(|&i| match weight_of(&sp.items[i]).and_then(|w| quant_at.get(w)) {
        Some(&q) => (0, q, !matches!(sp.items[i], Item::Quant(..))),
        None => (1, i, false),
    });
    order
}

/// The jobs of a shard, in [`production_order`]: the items made from one weight to quantize
/// (its pass, then the scales and sums it leaves in the job's buffers), any other item alone.
/// Jobs share nothing but the input files and the output file, each tensor written at its own
/// offset, so they run on several cores at once.
fn jobs(sp: &ShardPlan<'_>) -> Vec<Vec<usize>> {
    let mut jobs: Vec<Vec<usize>> = Vec::new();
    let mut of_weight: HashMap<&str, usize> = HashMap::new();
    for i in production_order(sp) {
        match weight_of(&sp.items[i]) {
            Some(w) => match of_weight.get(w) {
                Some(&j) => jobs[j].push(i),
                None => {
                    of_weight.insert(w, jobs.len());
                    jobs.push(vec![i]);
                }
            },
            None => jobs.push(vec![i]),
        }
    }
    jobs
}

/// What the jobs of one output shard share.
struct ShardJobs<'s, 'a> {
    sp: &'s ShardPlan<'a>,
    open: &'s Opened<'a>,
    file: &'s std::fs::File,
    tmp_path: &'s Path,
    offsets: &'s [u64],
    /// Items started so far (the abort test hook).
    started: std::sync::atomic::AtomicUsize,
    fault: bool,
}

impl ShardJobs<'_, '_> {
    /// Make one job's items into the file; their tensor hashes, by item.
    fn run(&self, job: &[usize], b: &mut Bufs) -> Result<Vec<(usize, u128)>, ConvertError> {
        use std::sync::atomic::Ordering;
        let sp = self.sp;
        b.row_scales.clear();
        b.code_sums.clear();
        b.mx_scales.clear();
        let mut hashes = Vec::with_capacity(job.len());
        for &i in job {
            b.start(&sp.items[i]);
            if self.fault && self.started.fetch_add(1, Ordering::SeqCst) * 2 >= sp.items.len() {
                // Test hook (CKPTPILOT_FAULT_ABORT_AFTER_SHARDS): die half-way through a shard, as a kill would.
                std::process::abort();
            }
            let mut h = TensorHash::new();
            let mut at = self.offsets[i];
            emit(&sp.items[i], self.open, b, &mut |bytes| {
                put_at(self.file, &mut h, bytes, at).map_err(io(self.tmp_path))?;
                at += bytes.len() as u64;
                Ok(())
            })?;
            if at - self.offsets[i] != sp.out[i].nbytes {
                return Err(ConvertError::Verify {
                    file: sp.name.clone(),
                    detail: format!(
                        "{}: made {} bytes, planned {}",
                        sp.out[i].name,
                        at - self.offsets[i],
                        sp.out[i].nbytes
                    ),
                });
            }
            hashes.push((i, h.digest128()));
        }
        Ok(hashes)
    }

    /// Run every job, on `bufs.len()` workers at once (each with its own buffers and a pool of one
    /// thread, so a job's kernels and reads run on its worker); the hash of each item. Jobs start in
    /// order and a failure stops new ones, so the error is the first job's in order, as one worker
    /// would have met it.
    fn run_all(&self, jobs: &[Vec<usize>], bufs: &mut [Bufs]) -> Result<Vec<u128>, ConvertError> {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Mutex;
        let mut hashes = vec![0u128; self.sp.items.len()];
        if bufs.len() <= 1 || jobs.len() <= 1 {
            // On a worker of the pool: the kernels' and reads' parallel loops then start there, not
            // by handing each one over from this thread (with one thread, a context switch per band).
            return rayon::scope(|_| {
                for job in jobs {
                    for (i, h) in self.run(job, &mut bufs[0])? {
                        hashes[i] = h;
                    }
                }
                Ok(hashes)
            });
        }
        let next = AtomicUsize::new(0);
        let failed = AtomicUsize::new(usize::MAX);
        let done: Mutex<Vec<(usize, u128)>> = Mutex::new(Vec::with_capacity(hashes.len()));
        let errors: Mutex<Vec<(usize, ConvertError)>> = Mutex::new(Vec::new());
        std::thread::scope(|s| {
            for b in bufs.iter_mut() {
                let (next, failed, done, errors) = (&next, &failed, &done, &errors);
                s.spawn(move || {
                    let mut work = || loop {
                        let j = next.fetch_add(1, Ordering::SeqCst);
                        if j >= jobs.len() || j > failed.load(Ordering::SeqCst) {
                            return;
                        }
                        match self.run(&jobs[j], b) {
                            Ok(h) => done.lock().expect("no worker panics holding it").extend(h),
                            Err(e) => {
                                failed.fetch_min(j, Ordering::SeqCst);
                                errors.lock().expect("no worker panics holding it").push((j, e));
                            }
                        }
                    };
                    match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
                        Ok(pool) => pool.install(work),
                        Err(_) => work(),
                    }
                });
            }
        });
        let mut errors = errors.into_inner().expect("no worker panicked");
        if !errors.is_empty() {
            errors.sort_by_key(|(j, _)| *j);
            return Err(errors.swap_remove(0).1);
        }
        for (i, h) in done.into_inner().expect("no worker panicked") {
            hashes[i] = h;
        }
        Ok(hashes)
    }
}

/// Write one shard through a temporary file; returns what the state file records for it. Each
/// tensor is written at its offset in the planned layout, so the items can be made in any order,
/// by [`jobs`] on `bufs.len()` workers.
fn write_shard(
    sp: &ShardPlan<'_>,
    out: &Path,
    dst: &Path,
    bufs: &mut [Bufs],
    fault: bool,
) -> Result<state::Done, ConvertError> {
    if let Some(parent) = Path::new(&sp.name).parent().filter(|p| !p.as_os_str().is_empty()) {
        fsutil::create_dirs_below(out, parent).map_err(io(&out.join(parent)))?;
    }
    let mut tmp = TempFile::beside(dst).map_err(io(dst))?;
    let tmp_path = tmp.path().to_path_buf();
    let open = Opened::open(sp)?;
    if let Some(p) = std::env::var("CKPTPILOT_FAULT_PAUSE_MS").ok().and_then(|v| v.parse().ok()) {
        // Test hook: hold the lock, the open input and the temporary file while a test changes
        // the input under the reads or starts a second writer.
        std::thread::sleep(Duration::from_millis(p));
    }
    let file: &std::fs::File = tmp.file();
    file.set_len(sp.len).map_err(io(&tmp_path))?;
    let mut hh = TensorHash::new();
    put_at(file, &mut hh, &sp.header, 0).map_err(io(&tmp_path))?;
    let header_hash = hh.digest128();
    let mut offsets = Vec::with_capacity(sp.out.len());
    let mut pos = sp.header.len() as u64;
    for t in &sp.out {
        offsets.push(pos);
        pos += t.nbytes;
    }
    let shared =
        ShardJobs { sp, open: &open, file, tmp_path: &tmp_path, offsets: &offsets, started: Default::default(), fault };
    let hashes = shared.run_all(&jobs(sp), bufs)?;
    open.still_same()?;
    let len = file.metadata().map_err(io(&tmp_path))?.len();
    if len != sp.len {
        return Err(ConvertError::Verify {
            file: sp.name.clone(),
            detail: format!("wrote {len} bytes, planned {}", sp.len),
        });
    }
    // On disk before it is recorded: a recorded shard survives a power cut, not only a kill.
    tmp.commit(dst).map_err(io(dst))?;
    Ok(state::Done {
        len,
        header_blake3: blake3::hash(&sp.header).to_hex().to_string(),
        digest: digest(header_hash, &hashes),
        inputs: input_ident(sp),
        tool: TOOL.into(),
    })
}

/// Re-read a written shard and compare every tensor with what the plan makes of the input now.
fn verify_shard(sp: &ShardPlan<'_>, path: &Path, b: &mut Bufs) -> Result<(), ConvertError> {
    let name = path.display().to_string();
    let (out, findings) = Shard::open(path, sp.name.clone());
    if let Some(f) = findings.first() {
        return Err(ConvertError::Verify { file: name, detail: format!("{}: {}", f.code.as_str(), f.message) });
    }
    if out.tensors().len() != sp.out.len() {
        return Err(ConvertError::Verify {
            file: name,
            detail: format!("{} tensors, {} planned", out.tensors().len(), sp.out.len()),
        });
    }
    let got_data = out.open_data()?;
    let open = Opened::open(sp)?;
    b.row_scales.clear();
    b.code_sums.clear();
    let mut got = Vec::new();
    let tensors = out.tensors();
    for i in production_order(sp) {
        let (e, plan, it) = (&tensors[i], &sp.out[i], &sp.items[i]);
        b.start(it);
        if e.name != plan.name || e.dtype != plan.dtype || e.shape != plan.shape {
            return Err(ConvertError::Verify { file: name, detail: format!("{} differs from the plan", e.name) });
        }
        let mut off = 0u64;
        emit(it, &open, b, &mut |want| {
            got.resize(want.len(), 0);
            got_data.read(e, off, &mut got)?;
            if got.as_slice() != want {
                return Err(ConvertError::Verify {
                    file: name.clone(),
                    detail: format!("{} differs from what the input makes of it now", e.name),
                });
            }
            off += want.len() as u64;
            Ok(())
        })?;
    }
    open.still_same()?;
    Ok(())
}

/// Write a file the conversion owns (the index, config.json, a copied tokenizer file) into the
/// output through a temporary file. A file already there that ckptpilot did not write, or that has
/// changed since it did, is kept and the new version goes to `FILE.new` — unless `--force`
/// (a foreign file is then replaced). Returns the kept file's name, if one was kept.
fn put_file(
    out: &Path,
    name: &str,
    source: &mut dyn std::io::Read,
    files: &mut BTreeMap<String, String>,
    force: bool,
) -> Result<Option<String>, ConvertError> {
    let dest = out.join(name);
    let mut t = TempFile::beside(&dest).map_err(io(&dest))?;
    let mut h = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match source.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(ConvertError::Io { path: dest, source: e }),
        };
        h.update(&buf[..n]);
        t.file().write_all(&buf[..n]).map_err(io(&dest))?;
    }
    let new_hash = h.finalize().to_hex().to_string();
    let current = match std::fs::symlink_metadata(&dest) {
        Err(_) => None,
        Ok(md) if md.file_type().is_file() => Some(hash_file(&dest).unwrap_or_default()),
        Ok(_) => Some(String::new()), // a link, a FIFO, a directory: never ours
    };
    let ours = match &current {
        None => true,
        Some(c) => c == &new_hash || files.get(name) == Some(c) || force,
    };
    if ours {
        t.commit(&dest).map_err(io(&dest))?;
        files.insert(name.to_string(), new_hash);
        return Ok(None);
    }
    let side = out.join(format!("{name}.new"));
    t.commit(&side).map_err(io(&side))?;
    Ok(Some(format!("{name} (changed since ckptpilot wrote it; the new version is {name}.new)")))
}

/// Whether an input file may be copied: a regular file, or a link that resolves inside the
/// checkpoint (or, for a Hugging Face cache snapshot, inside that repository's cache folder, where
/// every file is a link to a blob). A link elsewhere (`tokenizer.json -> ~/.ssh/id_rsa`) is not.
fn copy_allowed(ck: &Checkpoint, path: &Path) -> Result<(), String> {
    let md = std::fs::symlink_metadata(path).map_err(|e| e.to_string())?;
    if !md.file_type().is_symlink() {
        return Ok(());
    }
    let target = std::fs::canonicalize(path).map_err(|e| format!("a link that does not resolve ({e})"))?;
    let root = std::fs::canonicalize(&ck.source.root).map_err(|e| e.to_string())?;
    // snapshots/<rev>/ → the repo folder holding blobs/.
    let repo = ck.source.hf_repo.as_ref().and_then(|_| root.parent()?.parent().map(Path::to_path_buf));
    if target.starts_with(&root) || repo.is_some_and(|r| target.starts_with(r)) {
        Ok(())
    } else {
        Err(format!("a link to {} outside the checkpoint", target.display()))
    }
}

/// The index, config.json without quantization, and every other file of the checkpoint. Returns
/// the output files kept because someone changed them.
fn finalize(
    ck: &Checkpoint,
    plan: &Plan<'_>,
    opts: &Options,
    files: &mut BTreeMap<String, String>,
) -> Result<(Vec<String>, Vec<String>), ConvertError> {
    let mut kept = Vec::new();
    let mut skipped = Vec::new();
    // config.json is copied as it is unless its quantization section has to go.
    let mut config_copied = false;
    if let Task::Quantize { part_bytes, .. } = opts.task {
        let desc = quantize::description_json(plan.description.as_deref().unwrap_or_default(), plan.quant_type);
        kept.extend(put_file(&opts.out, quantize::DESCRIPTION, &mut desc.as_bytes(), files, opts.force)?);
        if part_bytes > 0 {
            let index = quantize::index_json(plan);
            kept.extend(put_file(&opts.out, quantize::INDEX, &mut index.as_bytes(), files, opts.force)?);
        }
        // msModelSlim's remove_quantization_config: the section dropped, the rest as it was.
        let quant_keys = |c: &serde_json::Value| {
            c.get("quantization_config").is_some()
                || c.get("text_config").is_some_and(|t| t.get("quantization_config").is_some())
        };
        match &ck.config_json {
            Some(cfg) if quant_keys(cfg) => {
                let mut cfg = cfg.clone();
                if let Some(o) = cfg.as_object_mut() {
                    o.remove("quantization_config");
                    if let Some(t) = o.get_mut("text_config").and_then(|t| t.as_object_mut()) {
                        t.remove("quantization_config");
                    }
                }
                // ascendv1.py :: remove_quantization_config writes it back with json.dump(indent=2).
                let text = quantize::python_json(&cfg, 2);
                kept.extend(put_file(&opts.out, "config.json", &mut text.as_bytes(), files, opts.force)?);
            }
            _ => config_copied = true,
        }
    } else {
        let mut weight_map = BTreeMap::new();
        let mut total = 0u64;
        for sp in &plan.shards {
            for t in &sp.out {
                weight_map.insert(t.name.clone(), sp.name.clone());
                total += t.nbytes;
            }
        }
        let index = serde_json::json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
        let text = serde_json::to_string_pretty(&index).expect("index serializes") + "\n";
        kept.extend(put_file(
            &opts.out,
            crate::checkpoint::index::INDEX_NAME,
            &mut text.as_bytes(),
            files,
            opts.force,
        )?);
    }
    if let (Some(cfg), Task::Dequant(dtype)) = (&ck.config_json, opts.task) {
        let mut cfg = cfg.clone();
        if let Some(o) = cfg.as_object_mut() {
            o.remove("quantization_config");
            o.remove("compression_config");
            if let Some(t) = o.get_mut("text_config").and_then(|t| t.as_object_mut()) {
                t.remove("quantization_config");
            }
            let torch_name = match dtype {
                OutDtype::BF16 => "bfloat16",
                OutDtype::F16 => "float16",
                OutDtype::F32 => "float32",
            };
            for key in ["torch_dtype", "dtype"] {
                if o.contains_key(key) {
                    o.insert(key.into(), serde_json::Value::String(torch_name.into()));
                }
            }
        }
        let text = serde_json::to_string_pretty(&cfg).expect("config serializes") + "\n";
        kept.extend(put_file(&opts.out, "config.json", &mut text.as_bytes(), files, opts.force)?);
    }
    let root = &ck.source.root;
    let skip = |n: &str| {
        n.ends_with(".safetensors")
            || n.contains(fsutil::TMP_MARK)
            || n.ends_with(".bin")
            || n.ends_with(".pt")
            || n.ends_with(".pth")
            || n.ends_with(".new")
            || state::is_bookkeeping(n)
            || (n == "config.json" && !config_copied)
            || matches!(n, "hf_quant_config.json" | crate::checkpoint::index::INDEX_NAME)
    };
    if ck.source.single_file.is_none() {
        let mut names: Vec<(String, PathBuf)> = std::fs::read_dir(root)
            .map_err(io(root))?
            .map(|e| e.map(|e| (e.file_name().to_string_lossy().into_owned(), e.path())))
            .collect::<Result<_, _>>()
            .map_err(io(root))?;
        names.sort();
        for (name, path) in names {
            if skip(&name) || std::fs::metadata(&path).is_ok_and(|m| m.is_dir()) {
                continue;
            }
            if let Err(why) = copy_allowed(ck, &path) {
                skipped.push(format!("{name}: {why}"));
                continue;
            }
            // Regular files only (a FIFO or a device beside the weights is not copied).
            match fsutil::open_regular(&path) {
                Ok((mut src, _)) => kept.extend(put_file(&opts.out, &name, &mut src, files, opts.force)?),
                Err(e) => skipped.push(format!("{name}: {e}")),
            }
        }
    }
    Ok((kept, skipped))
}

#[cfg(test)]
mod tests {
    use super::{pieces, COPY_CHUNK};

    #[test]
    fn pieces_cover_every_byte_once() {
        let c = COPY_CHUNK as u64;
        assert_eq!(pieces(0).count(), 0);
        assert_eq!(pieces(5).collect::<Vec<_>>(), [(0, 5)]);
        assert_eq!(pieces(c).collect::<Vec<_>>(), [(0, COPY_CHUNK)]);
        assert_eq!(pieces(2 * c + 1).collect::<Vec<_>>(), [(0, COPY_CHUNK), (c, COPY_CHUNK), (2 * c, 1)]);
    }
}
