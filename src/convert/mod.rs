//! `ckptkit dequant`: a whole fp8 checkpoint to bf16 (f16, f32), streaming.
//!
//! Every fp8 weight is dequantized with its scale, its scale tensors (and `input_scale`) dropped,
//! every other tensor copied bit for bit. The output mirrors the input's shards; each is written to
//! a temporary file and renamed into place only when complete, so an interrupted run leaves only
//! whole shards, and a rerun keeps those whose header and length match the plan. Memory: inputs are
//! memory-mapped, dequantization goes through one reused buffer of at most [`BAND_BYTES`].
//! `--part K/N` converts a disjoint, byte-balanced share of the shards; `--finalize` then writes the
//! index, config.json without `quantization_config`, and the other files.

pub mod writer;

use crate::arch::audit_rules;
use crate::checkpoint::{Checkpoint, Shard, TensorRef};
use crate::findings::{Code, Finding, Severity};
use crate::quant::fp8::{dequantize, scales_to_f32, Fp8Format, KernelError, OutDtype, Output, Scales};
use crate::quant::{pair_fp8, QuantScheme, ScaleLayout};
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::io::Write;
use std::path::{Path, PathBuf};
use writer::OutTensor;

#[cfg(target_endian = "big")]
compile_error!("ckptkit writes little-endian tensor data straight from memory");

/// The largest dequantized band held in memory at once.
pub const BAND_BYTES: usize = 64 << 20;
const TMP_SUFFIX: &str = ".tmp-ckptkit";

#[derive(Debug, Clone)]
pub struct Options {
    pub out: PathBuf,
    pub dtype: OutDtype,
    /// Convert only part K of N (1-based K).
    pub part: Option<(usize, usize)>,
    /// Only check that every shard is done, then write the index, config and other files.
    pub finalize_only: bool,
    /// Re-read every output shard and compare it with the input.
    pub verify: bool,
    /// Show a progress bar (only honoured on a terminal).
    pub progress: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ConvertError {
    #[error("refusing to convert (nothing was written):\n{}", reasons.iter().map(|r| format!("  - {r}")).collect::<Vec<_>>().join("\n"))]
    Refused { reasons: Vec<String> },
    #[error("quantization scheme {0} is not supported by `ckptkit dequant` (fp8 with block, per-channel or per-tensor scales is); nothing was written")]
    Unsupported(String),
    #[error("the output directory is the input directory ({0}); choose another --out")]
    OutputIsInput(PathBuf),
    #[error("cannot finalize: {} shard(s) are not converted yet: {}", missing.len(), missing.join(", "))]
    NotReady { missing: Vec<String> },
    #[error("--part {k}/{n}: K must be between 1 and N")]
    BadPart { k: usize, n: usize },
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{tensor}: {source}")]
    Kernel { tensor: String, source: KernelError },
    #[error("verification failed: {file}: {detail}")]
    Verify { file: String, detail: String },
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
    pub tensors_copied: usize,
    pub tensors_dropped: usize,
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub seconds: f64,
    pub finalized: bool,
    pub verified: bool,
}

/// What one output tensor is made from.
#[derive(Clone, Copy)]
enum Item<'a> {
    Copy(TensorRef<'a>),
    Dequant { weight: TensorRef<'a>, scale: TensorRef<'a>, layout: ScaleLayout, fmt: Fp8Format },
}

struct ShardPlan<'a> {
    input: &'a Shard,
    items: Vec<Item<'a>>,
    out: Vec<OutTensor>,
    header: Vec<u8>,
    len: u64,
    in_bytes: u64,
}

struct Plan<'a> {
    shards: Vec<ShardPlan<'a>>,
    dropped: usize,
}

fn refuse_codes() -> [Code; 5] {
    [Code::Fp8ScaleMissing, Code::Fp8ScaleOrphan, Code::Fp8ScaleShape, Code::Fp8WithoutQuantConfig, Code::Fp8ScaleDtype]
}

/// Check everything and build the plan; nothing is written here.
fn plan<'a>(ck: &'a Checkpoint, open_findings: &[Finding], dtype: OutDtype) -> Result<Plan<'a>, ConvertError> {
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
    let scheme = QuantScheme::detect(ck.config_json.as_ref(), ck.hf_quant_config.as_ref());
    let fp8_count = ck.tensors().filter(|t| t.entry.dtype.is_fp8_weight()).count();
    match &scheme {
        Some(s) if s.fp8_scale.is_none() => {
            return Err(ConvertError::Unsupported(format!(
                "{:?}{}",
                s.method,
                s.format.as_ref().map(|f| format!(" ({f})")).unwrap_or_default()
            )))
        }
        None if fp8_count == 0 => {
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
        pairs.insert(p.weight.as_str(), (p.scale.as_str(), p.layout));
    }
    let mut to_drop: HashSet<String> = pairing.pairs.iter().map(|p| p.scale.clone()).collect();
    for p in &pairing.pairs {
        let module = p.weight.strip_suffix(".weight").unwrap_or(&p.weight);
        let input_scale = format!("{module}.input_scale");
        if ck.get(&input_scale).is_some() {
            to_drop.insert(input_scale);
        }
    }
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
                        shape: e.shape.clone(),
                        nbytes: n,
                    });
                    items.push(Item::Dequant { weight: t, scale, layout, fmt });
                }
                None => {
                    out.push(OutTensor {
                        name: e.name.clone(),
                        dtype: e.dtype,
                        shape: e.shape.clone(),
                        nbytes: e.nbytes(),
                    });
                    items.push(Item::Copy(t));
                }
            }
        }
        let meta = s.header.metadata.clone().unwrap_or_default();
        let header = writer::header_bytes(&out, &meta);
        let len = writer::file_len(&header, &out);
        shards.push(ShardPlan { input: s, items, out, header, len, in_bytes: s.file_len });
    }
    Ok(Plan { shards, dropped })
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

/// Whether `path` already holds exactly the planned shard.
fn is_complete(path: &Path, sp: &ShardPlan<'_>) -> bool {
    let Ok(md) = std::fs::metadata(path) else { return false };
    if md.len() != sp.len {
        return false;
    }
    let mut head = vec![0u8; sp.header.len()];
    match std::fs::File::open(path) {
        Ok(mut f) => std::io::Read::read_exact(&mut f, &mut head).is_ok() && head == sp.header,
        Err(_) => false,
    }
}

pub fn run(ck: &Checkpoint, open_findings: &[Finding], opts: &Options) -> Result<Summary, ConvertError> {
    let t0 = std::time::Instant::now();
    let root = &ck.source.root;
    if same_dir(root, &opts.out) {
        return Err(ConvertError::OutputIsInput(opts.out.clone()));
    }
    if let Some((k, n)) = opts.part {
        if n == 0 || k == 0 || k > n {
            return Err(ConvertError::BadPart { k, n });
        }
    }
    let plan = plan(ck, open_findings, opts.dtype)?;
    let mut sum = Summary {
        schema: "ckptkit.dequant/1",
        out: opts.out.display().to_string(),
        out_dtype: format!("{:?}", opts.dtype).to_lowercase(),
        part: opts.part.map(|(k, n)| format!("{k}/{n}")),
        shards_total: plan.shards.len(),
        ..Summary::default()
    };
    std::fs::create_dir_all(&opts.out).map_err(io(&opts.out))?;
    let mine: Vec<usize> = match opts.part {
        Some((k, n)) => part_of(&plan, k, n),
        None => (0..plan.shards.len()).collect(),
    };
    if !opts.finalize_only {
        let total: u64 = mine.iter().map(|&i| plan.shards[i].in_bytes).sum();
        let bar = progress_bar(opts.progress, total);
        let mut buf = BandBuf::new(opts.dtype);
        let abort_after: Option<usize> =
            std::env::var("CKPTKIT_FAULT_ABORT_AFTER_SHARDS").ok().and_then(|v| v.parse().ok());
        let mut written = 0usize;
        for &i in &mine {
            let sp = &plan.shards[i];
            let dst = opts.out.join(&sp.input.name);
            if is_complete(&dst, sp) {
                sum.shards_kept += 1;
            } else {
                let fault = abort_after == Some(written);
                write_shard(sp, &dst, &mut buf, fault)?;
                release_inputs(sp);
                written += 1;
                sum.shards_written += 1;
                sum.bytes_read += sp.in_bytes;
                sum.bytes_written += sp.len;
            }
            for it in &sp.items {
                match it {
                    Item::Copy(_) => sum.tensors_copied += 1,
                    Item::Dequant { .. } => sum.tensors_dequantized += 1,
                }
            }
            if let Some(b) = &bar {
                b.inc(sp.in_bytes);
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
    }
    sum.tensors_dropped = plan.dropped;
    if opts.verify {
        let mut buf = BandBuf::new(opts.dtype);
        for &i in &mine {
            verify_shard(&plan.shards[i], &opts.out.join(&plan.shards[i].input.name), &mut buf)?;
            release_inputs(&plan.shards[i]);
        }
        sum.verified = true;
    }
    if opts.part.is_none() || opts.finalize_only {
        let missing: Vec<String> = plan
            .shards
            .iter()
            .filter(|sp| !is_complete(&opts.out.join(&sp.input.name), sp))
            .map(|sp| sp.input.name.clone())
            .collect();
        if !missing.is_empty() {
            return Err(ConvertError::NotReady { missing });
        }
        finalize(ck, &plan, opts)?;
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

/// One reused output buffer for dequantized bands.
struct BandBuf {
    dtype: OutDtype,
    b16: Vec<u16>,
    b32: Vec<f32>,
}

impl BandBuf {
    fn new(dtype: OutDtype) -> Self {
        BandBuf { dtype, b16: Vec::new(), b32: Vec::new() }
    }

    /// Dequantize rows `[r0, r0+nrows)` of matrix `m` into the buffer; returns its bytes.
    fn band(
        &mut self,
        item: &Item<'_>,
        scales: &[f32],
        m: usize,
        r0: usize,
        nrows: usize,
    ) -> Result<&[u8], ConvertError> {
        let Item::Dequant { weight, layout, fmt, .. } = *item else { unreachable!("only dequant items have bands") };
        let shape = &weight.entry.shape;
        let (n, k) = (shape[shape.len() - 2] as usize, shape[shape.len() - 1] as usize);
        let mats = (weight.entry.numel() as usize) / (n * k).max(1);
        let codes = weight.shard.data(weight.entry).ok_or_else(|| ConvertError::Verify {
            file: weight.shard.name.clone(),
            detail: format!("{}: data outside the file", weight.entry.name),
        })?;
        let codes = &codes[(m * n + r0) * k..(m * n + r0 + nrows) * k];
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
        let len = nrows * k;
        Ok(match self.dtype {
            OutDtype::F32 => {
                if self.b32.len() < len {
                    self.b32.resize(len, 0.0);
                }
                dequantize(codes, &sh, fmt, s, Output::F32(&mut self.b32[..len])).map_err(err)?;
                // SAFETY: f32 → bytes, little-endian target (checked at compile time).
                unsafe { std::slice::from_raw_parts(self.b32.as_ptr().cast::<u8>(), len * 4) }
            }
            d => {
                if self.b16.len() < len {
                    self.b16.resize(len, 0);
                }
                let o = &mut self.b16[..len];
                let out = if d == OutDtype::BF16 { Output::BF16(o) } else { Output::F16(o) };
                dequantize(codes, &sh, fmt, s, out).map_err(err)?;
                // SAFETY: u16 → bytes, little-endian target (checked at compile time).
                unsafe { std::slice::from_raw_parts(self.b16.as_ptr().cast::<u8>(), len * 2) }
            }
        })
    }
}

/// Bands of a dequant item: (matrix, first row, rows), each at most BAND_BYTES of output and,
/// for block scales, whole block rows.
fn bands(item: &Item<'_>, out_bytes: usize) -> Vec<(usize, usize, usize)> {
    let Item::Dequant { weight, layout, .. } = *item else { return Vec::new() };
    let shape = &weight.entry.shape;
    let (n, k) = (shape[shape.len() - 2] as usize, shape[shape.len() - 1] as usize);
    if n == 0 || k == 0 {
        return Vec::new();
    }
    let mats = weight.entry.numel() as usize / (n * k);
    let mut rows = (BAND_BYTES / (k * out_bytes)).max(1);
    if let ScaleLayout::Block { n: bn, .. } = layout {
        let bn = bn as usize;
        rows = (rows / bn).max(1) * bn;
    }
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

fn scales_of(item: &Item<'_>) -> Result<Vec<f32>, ConvertError> {
    let Item::Dequant { scale, .. } = *item else { return Ok(Vec::new()) };
    let bytes = scale.shard.data(scale.entry).ok_or_else(|| ConvertError::Verify {
        file: scale.shard.name.clone(),
        detail: format!("{}: data outside the file", scale.entry.name),
    })?;
    scales_to_f32(bytes, scale.entry.dtype)
        .map_err(|source| ConvertError::Kernel { tensor: scale.entry.name.clone(), source })
}

/// Release the pages of every input shard this output shard read from.
fn release_inputs(sp: &ShardPlan<'_>) {
    sp.input.release();
    for it in &sp.items {
        if let Item::Dequant { scale, weight, .. } = it {
            if !std::ptr::eq(scale.shard, sp.input) {
                scale.shard.release();
            }
            if !std::ptr::eq(weight.shard, sp.input) {
                weight.shard.release();
            }
        }
    }
}

fn write_shard(sp: &ShardPlan<'_>, dst: &Path, buf: &mut BandBuf, fault: bool) -> Result<(), ConvertError> {
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let tmp = PathBuf::from(format!("{}{TMP_SUFFIX}", dst.display()));
    let file = std::fs::File::create(&tmp).map_err(io(&tmp))?;
    let mut w = std::io::BufWriter::with_capacity(8 << 20, file);
    w.write_all(&sp.header).map_err(io(&tmp))?;
    for (i, it) in sp.items.iter().enumerate() {
        if fault && i * 2 >= sp.items.len() {
            // Test hook (CKPTKIT_FAULT_ABORT_AFTER_SHARDS): die half-way through a shard, as a kill would.
            w.flush().map_err(io(&tmp))?;
            std::process::abort();
        }
        match it {
            Item::Copy(t) => {
                let d = t.shard.data(t.entry).ok_or_else(|| ConvertError::Verify {
                    file: t.shard.name.clone(),
                    detail: format!("{}: data outside the file", t.entry.name),
                })?;
                w.write_all(d).map_err(io(&tmp))?;
                t.shard.release_tensor(t.entry);
            }
            Item::Dequant { weight, .. } => {
                let scales = scales_of(it)?;
                for (m, r0, nr) in bands(it, buf.dtype.bytes()) {
                    let bytes = buf.band(it, &scales, m, r0, nr)?;
                    w.write_all(bytes).map_err(io(&tmp))?;
                }
                weight.shard.release_tensor(weight.entry);
            }
        }
    }
    let file = w.into_inner().map_err(|e| ConvertError::Io { path: tmp.clone(), source: e.into_error() })?;
    drop(file);
    std::fs::rename(&tmp, dst).map_err(io(dst))
}

fn verify_shard(sp: &ShardPlan<'_>, path: &Path, buf: &mut BandBuf) -> Result<(), ConvertError> {
    let name = path.display().to_string();
    let (out, findings) = Shard::open(path, sp.input.name.clone());
    if let Some(f) = findings.first() {
        return Err(ConvertError::Verify { file: name, detail: format!("{}: {}", f.code.as_str(), f.message) });
    }
    if out.tensors().len() != sp.out.len() {
        return Err(ConvertError::Verify {
            file: name,
            detail: format!("{} tensors, {} planned", out.tensors().len(), sp.out.len()),
        });
    }
    for ((e, plan), it) in out.tensors().iter().zip(&sp.out).zip(&sp.items) {
        if e.name != plan.name || e.dtype != plan.dtype || e.shape != plan.shape {
            return Err(ConvertError::Verify { file: name, detail: format!("{} differs from the plan", e.name) });
        }
        let got = out
            .data(e)
            .ok_or_else(|| ConvertError::Verify { file: name.clone(), detail: format!("{}: truncated", e.name) })?;
        match it {
            Item::Copy(t) => {
                if t.shard.data(t.entry) != Some(got) {
                    return Err(ConvertError::Verify {
                        file: name,
                        detail: format!("{} is not a bit-for-bit copy", e.name),
                    });
                }
            }
            Item::Dequant { .. } => {
                let scales = scales_of(it)?;
                let mut off = 0;
                for (m, r0, nr) in bands(it, buf.dtype.bytes()) {
                    let want = buf.band(it, &scales, m, r0, nr)?;
                    if &got[off..off + want.len()] != want {
                        return Err(ConvertError::Verify {
                            file: name,
                            detail: format!("{} differs from its dequantization", e.name),
                        });
                    }
                    off += want.len();
                }
            }
        }
    }
    Ok(())
}

fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ConvertError> {
    let tmp = PathBuf::from(format!("{}{TMP_SUFFIX}", path.display()));
    std::fs::write(&tmp, bytes).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
}

/// The index, config.json without quantization, and every other file of the checkpoint.
fn finalize(ck: &Checkpoint, plan: &Plan<'_>, opts: &Options) -> Result<(), ConvertError> {
    let mut weight_map = BTreeMap::new();
    let mut total = 0u64;
    for sp in &plan.shards {
        for t in &sp.out {
            weight_map.insert(t.name.clone(), sp.input.name.clone());
            total += t.nbytes;
        }
    }
    let index = serde_json::json!({ "metadata": { "total_size": total }, "weight_map": weight_map });
    write_atomic(
        &opts.out.join(crate::checkpoint::index::INDEX_NAME),
        (serde_json::to_string_pretty(&index).expect("index serializes") + "\n").as_bytes(),
    )?;
    if let Some(cfg) = &ck.config_json {
        let mut cfg = cfg.clone();
        if let Some(o) = cfg.as_object_mut() {
            o.remove("quantization_config");
            o.remove("compression_config");
            if let Some(t) = o.get_mut("text_config").and_then(|t| t.as_object_mut()) {
                t.remove("quantization_config");
            }
            let torch_name = match opts.dtype {
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
        write_atomic(
            &opts.out.join("config.json"),
            (serde_json::to_string_pretty(&cfg).expect("config serializes") + "\n").as_bytes(),
        )?;
    }
    let root = &ck.source.root;
    let skip = |n: &str| {
        n.ends_with(".safetensors")
            || n.ends_with(TMP_SUFFIX)
            || n.ends_with(".bin")
            || n.ends_with(".pt")
            || n.ends_with(".pth")
            || matches!(n, "config.json" | "hf_quant_config.json" | crate::checkpoint::index::INDEX_NAME)
    };
    if ck.source.single_file.is_none() {
        for e in std::fs::read_dir(root).map_err(io(root))? {
            let e = e.map_err(io(root))?;
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path().is_file() && !skip(&name) {
                std::fs::copy(e.path(), opts.out.join(&name)).map_err(io(&e.path()))?;
            }
        }
    }
    Ok(())
}
