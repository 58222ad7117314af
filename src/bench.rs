//! `ckptpilot bench dequant`: the kernels against the machine's own ceilings, measured in one run on
//! the same buffers. The widen ceiling (u8 → u16 with ordinary stores) has exactly the memory
//! traffic of fp8 → bf16; memcpy of the fp8 bytes is the plain copy rate. Each repetition runs
//! widen, memcpy and the dequant back to back (A B C A B C …); ratios are taken per repetition and
//! the median is reported, because shared machines are noisy. Output buffers are reused and
//! pre-faulted: first-touch page faults would otherwise cost more than the kernel.

use crate::quant::fp8::{dequantize_with, Fp8Format, Kernels, OutDtype, Output, Scales};
use crate::quant::ScaleLayout;
use rayon::prelude::*;
use serde::Serialize;
use std::time::Instant;

pub const BENCH_SCHEMA: &str = "ckptpilot.bench.dequant/1";

/// A tensor to benchmark: codes, shape `[N, K]`, format and scales.
pub struct Input {
    pub name: String,
    pub codes: Vec<u8>,
    pub rows: usize,
    pub cols: usize,
    pub fmt: Fp8Format,
    pub scales: Vec<f32>,
    pub layout: ScaleLayout,
}

impl Input {
    /// Deterministic e4m3 codes distributed as in real checkpoints: Gaussian weights quantized
    /// with amax/448 scaling (almost no subnormal codes, no NaN), and 128x128 block scales.
    pub fn synthetic(rows: usize, cols: usize) -> Input {
        // Every finite non-negative e4m3 value, to round Gaussian samples to the nearest code.
        let table: Vec<(f32, u8)> = (0u8..0x7F).map(|c| (e4m3_value(c), c)).collect();
        let mut x = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut pool = Vec::with_capacity(1 << 16);
        while pool.len() < 1 << 16 {
            // Box-Muller; 4 sigma maps to 448.
            let u1 = ((next() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
            let u2 = (next() >> 11) as f64 / (1u64 << 53) as f64;
            let g = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
            let v = (g * 112.0).clamp(-448.0, 448.0) as f32;
            let i = table.partition_point(|&(t, _)| t < v.abs()).min(table.len() - 1);
            let i = if i > 0 && (table[i].0 - v.abs()) > (v.abs() - table[i - 1].0) { i - 1 } else { i };
            pool.push(table[i].1 | if v < 0.0 { 0x80 } else { 0 });
        }
        let codes = (0..rows * cols).map(|_| pool[(next() >> 48) as usize]).collect();
        let g = rows.div_ceil(128) * cols.div_ceil(128);
        let scales = (0..g).map(|i| 1e-3 * (1.0 + (i % 97) as f32 / 97.0)).collect();
        Input {
            name: format!("synthetic [{rows}, {cols}] F8_E4M3 (quantized Gaussian), 128x128 block scales"),
            codes,
            rows,
            cols,
            fmt: Fp8Format::E4M3,
            scales,
            layout: ScaleLayout::Block { n: 128, k: 128 },
        }
    }
}

impl Input {
    /// One fp8 tensor of a checkpoint, with its scale found the way the audit pairs them.
    /// A real fp8 tensor of a checkpoint. An unreadable checkpoint is [`InputError::Checkpoint`]; a
    /// tensor that is missing or not a 2-D fp8 weight with a scale is [`InputError::Tensor`] (a usage error).
    pub fn from_checkpoint(model: &str, tensor: &str) -> Result<Input, InputError> {
        let (ck, _) = crate::Checkpoint::open(model)?;
        Self::from_open(&ck, model, tensor).map_err(InputError::Tensor)
    }

    fn from_open(ck: &crate::Checkpoint, model: &str, tensor: &str) -> Result<Input, String> {
        let t = ck.get(tensor).ok_or_else(|| format!("{model}: no tensor {tensor:?}"))?;
        let fmt = Fp8Format::of(t.entry.dtype)
            .ok_or_else(|| format!("{tensor} is {}, not an fp8 format this benchmark converts", t.entry.dtype))?;
        if t.entry.shape.len() != 2 {
            return Err(format!("{tensor} has shape {:?}; the benchmark takes 2-D weights", t.entry.shape));
        }
        let scheme = ck.quant_scheme().cloned();
        let layout =
            scheme.as_ref().and_then(|s| s.fp8_scale).ok_or_else(|| format!("{model} declares no fp8 scale layout"))?;
        let s = [format!("{tensor}_scale_inv"), format!("{tensor}_scale")]
            .iter()
            .find_map(|n| ck.get(n))
            .ok_or_else(|| format!("{tensor} has no scale tensor"))?;
        let sbytes = s.shard.open_data().and_then(|d| d.read_all(s.entry)).map_err(|e| e.to_string())?;
        let scales = crate::quant::fp8::scales_to_f32(&sbytes, s.entry.dtype).map_err(|e| e.to_string())?;
        let codes = t.shard.open_data().and_then(|d| d.read_all(t.entry)).map_err(|e| e.to_string())?;
        Ok(Input {
            name: format!("{model}:{tensor} {:?} {}", t.entry.shape, t.entry.dtype),
            codes,
            rows: t.entry.shape[0] as usize,
            cols: t.entry.shape[1] as usize,
            fmt,
            scales,
            layout,
        })
    }
}

/// Why `--tensor MODEL:NAME` gives no input.
#[derive(Debug, thiserror::Error)]
pub enum InputError {
    #[error(transparent)]
    Checkpoint(#[from] crate::CheckpointError),
    #[error("{0}")]
    Tensor(String),
}

/// The human table.
pub fn render(r: &BenchReport) -> String {
    let mut s = format!(
        "ckptpilot bench dequant: {} -> {}, kernels {}, median of {} interleaved repetitions\n\
         {:>7}  {:>10}  {:>13}  {:>11}  {:>12}  {:>8}  {:>11}  {:>9}  {:>12}\n",
        r.tensor,
        r.out_dtype,
        r.isa,
        r.reps,
        "threads",
        "widen GB/s",
        "widen-nt GB/s",
        "memcpy GB/s",
        "dequant GB/s",
        "vs widen",
        "vs widen-nt",
        "vs memcpy",
        "fresh buf GB/s"
    );
    for t in &r.results {
        s.push_str(&format!(
            "{:>7}  {:>10.2}  {:>13.2}  {:>11.2}  {:>12.2}  {:>7.2}x  {:>10.2}x  {:>8.2}x  {:>12.2}\n",
            t.threads,
            t.widen_gbps,
            t.widen_nt_gbps,
            t.memcpy_gbps,
            t.gbps_fp8_in,
            t.ratio_to_widen,
            t.ratio_to_widen_nt,
            t.ratio_to_memcpy,
            t.fresh_buffer_gbps
        ));
    }
    s.push_str("GB/s = 1e9 bytes of fp8 input per second; widen = u8->u16 with ordinary stores (the memory traffic of fp8->bf16); widen-nt = the same with streaming stores (the limit of a 1:2 expansion).\n");
    s
}

/// The value of a non-negative e4m3fn code (for generating realistic inputs).
fn e4m3_value(c: u8) -> f32 {
    let (e, m) = ((c >> 3) as i32, (c & 7) as f32);
    if e == 0 {
        m / 8.0 * 2f32.powi(-6)
    } else {
        (1.0 + m / 8.0) * 2f32.powi(e - 7)
    }
}

#[derive(Debug, Serialize)]
pub struct ThreadResult {
    pub threads: usize,
    /// Median GB/s of fp8 input (1e9 bytes/s) for each kernel.
    pub widen_gbps: f64,
    pub memcpy_gbps: f64,
    pub gbps_fp8_in: f64,
    /// Median over repetitions of (dequant throughput / widen throughput) in the same repetition.
    pub ratio_to_widen: f64,
    /// The same against the widen with streaming stores (the true limit of a 1:2 expansion).
    pub widen_nt_gbps: f64,
    pub ratio_to_widen_nt: f64,
    pub ratio_to_memcpy: f64,
    /// The same dequant into a freshly allocated buffer each time (page faults included).
    pub fresh_buffer_gbps: f64,
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    pub schema: &'static str,
    pub tensor: String,
    pub shape: [usize; 2],
    pub out_dtype: String,
    pub isa: &'static str,
    pub reps: usize,
    pub results: Vec<ThreadResult>,
    /// `ratio_to_widen` at the largest thread count measured.
    pub ratio_to_widen: f64,
    /// `ratio_to_widen_nt` at the largest thread count measured.
    pub ratio_to_widen_nt: f64,
    /// `gbps_fp8_in` at the largest thread count measured.
    pub gbps_fp8_in: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    if v.is_empty() {
        return f64::NAN;
    }
    let m = v.len() / 2;
    if v.len() % 2 == 1 {
        v[m]
    } else {
        (v[m - 1] + v[m]) / 2.0
    }
}

const CHUNK: usize = 1 << 20;

fn widen_par(k: &Kernels, src: &[u8], dst: &mut [u16]) {
    src.par_chunks(CHUNK).zip(dst.par_chunks_mut(CHUNK)).for_each(|(s, d)| k.widen(s, d));
}

/// u8 → u16 with streaming (non-temporal) stores: the true limit of a 1:2 expansion that does not
/// read its output back. AVX2 at run time; elsewhere the ordinary widen stands in.
fn widen_nt_par(k: &Kernels, src: &[u8], dst: &mut [u16]) {
    src.par_chunks(CHUNK).zip(dst.par_chunks_mut(CHUNK)).for_each(|(s, d)| {
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present (checked just above).
            unsafe { widen_nt_avx2(s, d) };
            return;
        }
        k.widen(s, d)
    });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn widen_nt_avx2(src: &[u8], dst: &mut [u16]) {
    use std::arch::x86_64::*;
    let n = src.len().min(dst.len());
    // Scalar until the output is 32-byte aligned, then 16 elements per streaming store.
    let mut i = 0;
    while i < n && (dst.as_ptr().add(i) as usize) % 32 != 0 {
        dst[i] = src[i] as u16;
        i += 1;
    }
    while i + 16 <= n {
        let v = _mm256_cvtepu8_epi16(_mm_loadu_si128(src.as_ptr().add(i).cast()));
        _mm256_stream_si256(dst.as_mut_ptr().add(i).cast(), v);
        i += 16;
    }
    while i < n {
        dst[i] = src[i] as u16;
        i += 1;
    }
    _mm_sfence();
}

fn memcpy_par(src: &[u8], dst: &mut [u8]) {
    src.par_chunks(CHUNK).zip(dst.par_chunks_mut(CHUNK)).for_each(|(s, d)| d.copy_from_slice(s));
}

fn run(k: &Kernels, inp: &Input, out: OutDtype, o16: &mut [u16], o32: &mut [f32]) {
    let shape = [inp.rows as u64, inp.cols as u64];
    let sc = Scales { values: &inp.scales, layout: inp.layout };
    let r = match out {
        OutDtype::BF16 => dequantize_with(k, &inp.codes, &shape, inp.fmt, sc, Output::BF16(o16)),
        OutDtype::F16 => dequantize_with(k, &inp.codes, &shape, inp.fmt, sc, Output::F16(o16)),
        OutDtype::F32 => dequantize_with(k, &inp.codes, &shape, inp.fmt, sc, Output::F32(o32)),
    };
    r.expect("benchmark input is consistent");
}

pub fn dequant(inp: &Input, out: OutDtype, threads: &[usize], reps: usize) -> BenchReport {
    let k = Kernels::best();
    let n = inp.codes.len();
    let mut o16 = vec![0u16; if out == OutDtype::F32 { 0 } else { n }];
    let mut o32 = vec![0f32; if out == OutDtype::F32 { n } else { 0 }];
    let mut wide = vec![0u16; n];
    let mut copy = vec![0u8; n];
    let gb = n as f64 / 1e9;
    let mut results = Vec::new();
    for &t in threads {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().expect("thread pool");
        pool.install(|| {
            // Warm-up: touches every output page and the code path once.
            widen_par(k, &inp.codes, &mut wide);
            memcpy_par(&inp.codes, &mut copy);
            run(k, inp, out, &mut o16, &mut o32);
            widen_nt_par(k, &inp.codes, &mut wide);
            let (mut w, mut m, mut d, mut rw, mut rm) = (vec![], vec![], vec![], vec![], vec![]);
            let (mut wn, mut rwn) = (vec![], vec![]);
            for _ in 0..reps {
                let t0 = Instant::now();
                widen_par(k, &inp.codes, &mut wide);
                let tw = t0.elapsed().as_secs_f64();
                let t0 = Instant::now();
                widen_nt_par(k, &inp.codes, &mut wide);
                let twn = t0.elapsed().as_secs_f64();
                let t0 = Instant::now();
                memcpy_par(&inp.codes, &mut copy);
                let tm = t0.elapsed().as_secs_f64();
                let t0 = Instant::now();
                run(k, inp, out, &mut o16, &mut o32);
                let td = t0.elapsed().as_secs_f64();
                w.push(gb / tw);
                m.push(gb / tm);
                d.push(gb / td);
                rw.push(tw / td);
                rm.push(tm / td);
                wn.push(gb / twn);
                rwn.push(twn / td);
            }
            let mut fresh = vec![];
            for _ in 0..reps.clamp(1, 3) {
                let t0 = Instant::now();
                let mut f16 = if out == OutDtype::F32 { Vec::new() } else { vec![0u16; n] };
                let mut f32v = if out == OutDtype::F32 { vec![0f32; n] } else { Vec::new() };
                run(k, inp, out, &mut f16, &mut f32v);
                fresh.push(gb / t0.elapsed().as_secs_f64());
                std::hint::black_box((&f16, &f32v));
            }
            results.push(ThreadResult {
                threads: t,
                widen_gbps: median(w),
                memcpy_gbps: median(m),
                gbps_fp8_in: median(d),
                ratio_to_widen: median(rw),
                widen_nt_gbps: median(wn),
                ratio_to_widen_nt: median(rwn),
                ratio_to_memcpy: median(rm),
                fresh_buffer_gbps: median(fresh),
            });
        });
        std::hint::black_box((&wide, &copy, &o16, &o32));
    }
    let last = results.iter().max_by_key(|r| r.threads);
    BenchReport {
        schema: BENCH_SCHEMA,
        tensor: inp.name.clone(),
        shape: [inp.rows, inp.cols],
        out_dtype: format!("{out:?}").to_lowercase(),
        isa: k.isa,
        reps,
        ratio_to_widen: last.map_or(f64::NAN, |r| r.ratio_to_widen),
        ratio_to_widen_nt: last.map_or(f64::NAN, |r| r.ratio_to_widen_nt),
        gbps_fp8_in: last.map_or(f64::NAN, |r| r.gbps_fp8_in),
        results,
    }
}

impl crate::ui::Help for InputError {
    fn help(&self) -> String {
        match self {
            InputError::Checkpoint(e) => crate::ui::Help::help(e),
            InputError::Tensor(_) => {
                "name a 2-D fp8 weight that has a scale, e.g. MODEL:model.layers.0.mlp.down_proj.weight (`ckptpilot audit MODEL` lists them)"
                    .into()
            }
        }
    }
}

/// A 4-bit format for `bench dequant --format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format4 {
    Mxfp4,
    Nvfp4,
    Int4,
}

#[derive(Debug, Serialize)]
pub struct Result4 {
    pub threads: usize,
    /// Median GB/s of packed input (1e9 bytes/s).
    pub ceiling_gbps: f64,
    pub gbps_in: f64,
    /// Median over repetitions of (kernel throughput / ceiling throughput) in the same repetition.
    pub ratio_to_ceiling: f64,
}

#[derive(Debug, Serialize)]
pub struct Report4 {
    pub schema: &'static str,
    pub format: Format4,
    pub shape: [usize; 2],
    pub group: usize,
    pub reps: usize,
    /// What the ceiling is.
    pub ceiling: &'static str,
    pub results: Vec<Result4>,
}

pub const BENCH4_SCHEMA: &str = "ckptpilot.bench.dequant4/1";

/// The 4-bit kernels on a synthetic [N, K] weight against their ceiling, measured in the same run on
/// the same buffers: the same 1:4 expansion through one fixed 16-entry table (the same byte-shuffle
/// code, the same stores, no per-group table). The kernel measured is the one `dequant` runs: a
/// table per scale byte (MXFP4, NVFP4) or per group (INT4: scale and zero point), rows in parallel.
pub fn dequant4(format: Format4, rows: usize, cols: usize, threads: &[usize], reps: usize) -> Report4 {
    use crate::quant::fp4;
    let group = match format {
        Format4::Mxfp4 => 32,
        Format4::Nvfp4 => 16,
        Format4::Int4 => 128,
    };
    let cols = cols.div_ceil(group) * group;
    let g = cols / group;
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let codes: Vec<u8> = (0..rows * cols / 2).map(|_| next() as u8).collect();
    // Realistic scale bytes: e8m0 around 2^-6, e4m3 mid-range; INT4 bf16 scales around 1e-3.
    let scale_bytes: Vec<u8> = (0..rows * g)
        .map(|_| match format {
            Format4::Mxfp4 => 118 + (next() % 8) as u8,
            _ => 0x20 + (next() % 0x50) as u8,
        })
        .collect();
    let int4_scales: Vec<f32> = (0..rows * g).map(|_| 1e-3 * (1.0 + (next() % 1000) as f32 / 1000.0)).collect();
    let nv: Vec<fp4::Table> = (0..=255u8).map(|c| fp4::fp4_table(fp4::e4m3_to_f32(c) / 2000.0)).collect();
    let mx = fp4::mx_tables();
    let fixed = fp4::fp4_table(1.0);
    let mut out = vec![0u16; rows * cols];
    let mut ceil_out = vec![0u16; rows * cols];
    let kernel = |out: &mut [u16]| {
        out.par_chunks_mut(cols).enumerate().for_each_init(Vec::new, |tables: &mut Vec<fp4::Table>, (r, row)| {
            let c = &codes[r * cols / 2..(r + 1) * cols / 2];
            let sb = &scale_bytes[r * g..(r + 1) * g];
            match format {
                Format4::Mxfp4 => fp4::expand_with(c, group, |i| &mx[sb[i] as usize], row),
                Format4::Nvfp4 => fp4::expand_with(c, group, |i| &nv[sb[i] as usize], row),
                Format4::Int4 => {
                    tables.clear();
                    tables.extend(int4_scales[r * g..(r + 1) * g].iter().map(|&s| fp4::int4_table(s, 0.0)));
                    fp4::expand(c, group, tables, row);
                }
            }
        })
    };
    let ceiling = |out: &mut [u16]| {
        out.par_chunks_mut(cols)
            .enumerate()
            .for_each(|(r, row)| fp4::expand_with(&codes[r * cols / 2..(r + 1) * cols / 2], group, |_| &fixed, row))
    };
    let gb = codes.len() as f64 / 1e9;
    let mut results = Vec::new();
    for &t in threads {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(t).build().expect("thread pool");
        pool.install(|| {
            kernel(&mut out);
            ceiling(&mut ceil_out);
            let (mut c, mut d, mut r) = (vec![], vec![], vec![]);
            for _ in 0..reps {
                let t0 = Instant::now();
                ceiling(&mut ceil_out);
                let tc = t0.elapsed().as_secs_f64();
                let t0 = Instant::now();
                kernel(&mut out);
                let td = t0.elapsed().as_secs_f64();
                c.push(gb / tc);
                d.push(gb / td);
                r.push(tc / td);
            }
            results.push(Result4 {
                threads: t,
                ceiling_gbps: median(c),
                gbps_in: median(d),
                ratio_to_ceiling: median(r),
            });
        });
        std::hint::black_box((&out, &ceil_out));
    }
    Report4 {
        schema: BENCH4_SCHEMA,
        format,
        shape: [rows, cols],
        group,
        reps,
        ceiling: "the same 1:4 expansion (u8 -> 2 x u16) through one fixed 16-entry table, same kernel and stores",
        results,
    }
}

pub fn render4(r: &Report4) -> String {
    let mut s = format!(
        "ckptpilot bench dequant --format {:?} [{}, {}], group {}, median of {} reps\nceiling: {}\n",
        r.format, r.shape[0], r.shape[1], r.group, r.reps, r.ceiling
    )
    .to_lowercase();
    s.push_str("threads  ceiling GB/s  kernel GB/s (packed in)  kernel/ceiling\n");
    for x in &r.results {
        s.push_str(&format!(
            "{:>7}  {:>12.2}  {:>23.2}  {:>14.3}\n",
            x.threads, x.ceiling_gbps, x.gbps_in, x.ratio_to_ceiling
        ));
    }
    s
}
