//! `ckptkit bench dequant`: the kernels against the machine's own ceilings, measured in one run on
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

pub const BENCH_SCHEMA: &str = "ckptkit.bench.dequant/1";

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
        "ckptkit bench dequant: {} -> {}, kernels {}, median of {} interleaved repetitions\n\
         {:>7}  {:>10}  {:>11}  {:>12}  {:>8}  {:>9}  {:>12}\n",
        r.tensor,
        r.out_dtype,
        r.isa,
        r.reps,
        "threads",
        "widen GB/s",
        "memcpy GB/s",
        "dequant GB/s",
        "vs widen",
        "vs memcpy",
        "fresh buf GB/s"
    );
    for t in &r.results {
        s.push_str(&format!(
            "{:>7}  {:>10.2}  {:>11.2}  {:>12.2}  {:>7.2}x  {:>8.2}x  {:>12.2}\n",
            t.threads,
            t.widen_gbps,
            t.memcpy_gbps,
            t.gbps_fp8_in,
            t.ratio_to_widen,
            t.ratio_to_memcpy,
            t.fresh_buffer_gbps
        ));
    }
    s.push_str("GB/s = 1e9 bytes of fp8 input per second; widen = u8->u16 with ordinary stores (the memory traffic of fp8->bf16).\n");
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
            let (mut w, mut m, mut d, mut rw, mut rm) = (vec![], vec![], vec![], vec![], vec![]);
            for _ in 0..reps {
                let t0 = Instant::now();
                widen_par(k, &inp.codes, &mut wide);
                let tw = t0.elapsed().as_secs_f64();
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
        gbps_fp8_in: last.map_or(f64::NAN, |r| r.gbps_fp8_in),
        results,
    }
}

impl crate::ui::Help for InputError {
    fn help(&self) -> String {
        match self {
            InputError::Checkpoint(e) => crate::ui::Help::help(e),
            InputError::Tensor(_) => {
                "name a 2-D fp8 weight that has a scale, e.g. MODEL:model.layers.0.mlp.down_proj.weight (`ckptkit audit MODEL` lists them)"
                    .into()
            }
        }
    }
}
