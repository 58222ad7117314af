//! fp8 → bf16 kernels against their ceilings and a peer, on the same tensor in the same run:
//!
//! - `widen`: u8 → u16 with ordinary stores (the memory traffic of fp8 → bf16), same ISA version;
//! - `ckptpilot_reused`: ckptpilot into a reused, pre-faulted buffer (how `ckptpilot dequant` runs);
//! - `ckptpilot_fresh`: ckptpilot into a new buffer per call (page faults included, as the peer pays);
//! - `anamnesis`: the anamnesis crate's fine-grained fp8 → bf16 (allocates its output per call).
//!
//! Thread count: rayon's default (all cores); set RAYON_NUM_THREADS=1 for one thread.

use ckptpilot::bench::Input;
use ckptpilot::quant::fp8::{dequantize, Kernels, Output, Scales};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rayon::prelude::*;
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let (rows, cols) = (4096, 7168);
    let inp = Input::synthetic(rows, cols);
    let n = rows * cols;
    let shape = [rows as u64, cols as u64];
    let scales = Scales { values: &inp.scales, layout: inp.layout };
    let scale_bytes: Vec<u8> = inp.scales.iter().flat_map(|s| s.to_le_bytes()).collect();
    let k = Kernels::best();

    // Same output, checked once: the peer and ckptpilot agree bit for bit on this input.
    let mut mine = vec![0u16; n];
    dequantize(&inp.codes, &shape, inp.fmt, scales, Output::BF16(&mut mine)).unwrap();
    let theirs =
        anamnesis::dequantize_fp8_to_bf16(&inp.codes, &scale_bytes, rows, cols, anamnesis::Dtype::F32).unwrap();
    let mine_bytes: Vec<u8> = mine.iter().flat_map(|x| x.to_le_bytes()).collect();
    assert!(mine_bytes == theirs, "anamnesis and ckptpilot disagree");

    let mut g = c.benchmark_group(format!("fp8_to_bf16_{rows}x{cols}_{}", k.isa));
    g.throughput(Throughput::Bytes(n as u64));
    g.sample_size(20);
    let mut wide = vec![0u16; n];
    g.bench_function("widen", |b| {
        b.iter(|| inp.codes.par_chunks(1 << 20).zip(wide.par_chunks_mut(1 << 20)).for_each(|(s, d)| k.widen(s, d)))
    });
    let mut out = vec![0u16; n];
    g.bench_function("ckptpilot_reused", |b| {
        b.iter(|| dequant_into(&inp, &shape, &mut out));
    });
    g.bench_function("ckptpilot_fresh", |b| {
        b.iter(|| {
            let mut o = vec![0u16; n];
            dequant_into(&inp, &shape, &mut o);
            black_box(o)
        })
    });
    g.bench_function("anamnesis", |b| {
        b.iter(|| {
            black_box(
                anamnesis::dequantize_fp8_to_bf16(&inp.codes, &scale_bytes, rows, cols, anamnesis::Dtype::F32).unwrap(),
            )
        })
    });
    g.finish();
}

fn dequant_into(inp: &Input, shape: &[u64], out: &mut [u16]) {
    let s = Scales { values: &inp.scales, layout: inp.layout };
    dequantize(&inp.codes, shape, inp.fmt, s, Output::BF16(out)).unwrap();
}

criterion_group!(benches, bench);
criterion_main!(benches);
