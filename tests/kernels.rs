//! Bit-exactness of the fp8 kernels against references computed by PyTorch
//! (`fixtures/fp8-edge/fp8_edge.safetensors`, written by `fixtures/generate.py`), for every
//! instruction-set version this CPU runs and for 1 and 2 threads. NaN is compared as a class
//! (PyTorch writes 0xFFFF for every bf16 NaN; ckptpilot writes a quiet NaN with the sign kept).

mod common;
use ckptpilot::checkpoint::{Checkpoint, Dtype};
use ckptpilot::quant::fp8::{dequantize_with, scales_to_f32, Fp8Format, Kernels, Output, Scales};
use ckptpilot::quant::ScaleLayout;
use common::fixture;

struct Edge {
    // Checkpoint holds memory maps; shared read-only across the test's threads.
    ck: Checkpoint,
}

impl Edge {
    fn open() -> Edge {
        let (ck, findings) =
            Checkpoint::open(fixture("fp8-edge").join("fp8_edge.safetensors").to_str().unwrap()).unwrap();
        assert!(findings.iter().all(|f| f.severity != ckptpilot::Severity::Error), "{findings:?}");
        Edge { ck }
    }
    fn raw(&self, name: &str) -> (Vec<u8>, Dtype, Vec<u64>) {
        let t = self.ck.get(name).unwrap_or_else(|| panic!("{name} missing"));
        (t.read().unwrap(), t.entry.dtype, t.entry.shape.to_vec())
    }
    fn u16s(&self, name: &str) -> Vec<u16> {
        self.raw(name).0.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect()
    }
    fn f32s(&self, name: &str) -> Vec<f32> {
        let (b, d, _) = self.raw(name);
        scales_to_f32(&b, d).unwrap()
    }
}

fn same16(a: u16, b: u16, nan_above: u16) -> bool {
    a == b || ((a & 0x7FFF) > nan_above && (b & 0x7FFF) > nan_above)
}

/// Fail with the first mismatch, printed by `show`.
fn assert_all(cfg: &str, refname: &str, n: usize, same: impl Fn(usize) -> bool, show: impl Fn(usize) -> String) {
    let bad: Vec<usize> = (0..n).filter(|&i| !same(i)).collect();
    assert!(
        bad.is_empty(),
        "{cfg} {refname}: {} mismatches, first at {}: {}",
        bad.len(),
        bad.first().copied().unwrap_or(0),
        show(bad[0])
    );
}

fn same32(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Run `f` for every kernel version and for 1 and 2 threads.
fn each_config(f: impl Fn(&Kernels, &str) + Send + Sync) {
    for k in Kernels::available() {
        for threads in [1, 2] {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
            pool.install(|| f(&k, &format!("{} x{threads}", k.isa)));
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn check(
    e: &Edge,
    k: &Kernels,
    cfg: &str,
    codes: &[u8],
    shape: &[u64],
    fmt: Fp8Format,
    scales: Scales<'_>,
    base: &str,
    out_kinds: &[&str],
) {
    for kind in out_kinds {
        let refname = format!("{base}{kind}");
        if e.ck.get(&refname).is_none() {
            continue;
        }
        let n = codes.len();
        match *kind {
            "bf16" | "ref_bf16" => {
                let mut o = vec![0u16; n];
                dequantize_with(k, codes, shape, fmt, scales, Output::BF16(&mut o)).unwrap();
                let r = e.u16s(&refname);
                assert_all(
                    cfg,
                    &refname,
                    n,
                    |i| same16(o[i], r[i], 0x7F80),
                    |i| format!("{:#06x} vs torch {:#06x}", o[i], r[i]),
                );
            }
            "f16" | "ref_f16" => {
                let mut o = vec![0u16; n];
                dequantize_with(k, codes, shape, fmt, scales, Output::F16(&mut o)).unwrap();
                let r = e.u16s(&refname);
                assert_all(
                    cfg,
                    &refname,
                    n,
                    |i| same16(o[i], r[i], 0x7C00),
                    |i| format!("{:#06x} vs torch {:#06x}", o[i], r[i]),
                );
            }
            _ => {
                let mut o = vec![0f32; n];
                dequantize_with(k, codes, shape, fmt, scales, Output::F32(&mut o)).unwrap();
                let r = e.f32s(&refname);
                assert_all(cfg, &refname, n, |i| same32(o[i], r[i]), |i| format!("{} vs torch {}", o[i], r[i]));
            }
        }
    }
}

#[test]
fn all_256_codes_of_both_formats() {
    let e = Edge::open();
    each_config(|k, cfg| {
        for (fmt, name) in [(Fp8Format::E4M3, "e4m3"), (Fp8Format::E5M2, "e5m2")] {
            let (codes, dtype, shape) = e.raw(&format!("{name}.codes"));
            assert_eq!(Fp8Format::of(dtype), Some(fmt));
            assert_eq!(codes.len(), 256);
            let shape2 = [1, shape[0]];
            let one = Scales { values: &[1.0], layout: ScaleLayout::Tensor };
            check(&e, k, cfg, &codes, &shape2, fmt, one, &format!("{name}."), &["f32", "bf16", "f16"]);
        }
    });
}

#[test]
fn rounding_probes_ties_subnormals_overflow() {
    let e = Edge::open();
    each_config(|k, cfg| {
        for (fmt, name) in [(Fp8Format::E4M3, "e4m3"), (Fp8Format::E5M2, "e5m2")] {
            let (codes, _, _) = e.raw(&format!("{name}.codes"));
            let probes = e.f32s(&format!("{name}.probe_scales"));
            // The reference is [probes, 256]: the same codes, one row per probe scale (per-channel).
            let tiled: Vec<u8> = probes.iter().flat_map(|_| codes.iter().copied()).collect();
            let shape = [probes.len() as u64, 256];
            let sc = Scales { values: &probes, layout: ScaleLayout::Channel };
            check(&e, k, cfg, &tiled, &shape, fmt, sc, &format!("{name}.probe."), &["bf16", "f16", "f32"]);
        }
    });
}

#[test]
fn block_scaled_odd_shapes_with_partial_blocks() {
    let e = Edge::open();
    let shapes = ["1x1", "1x129", "129x1", "257x385", "200x300"];
    each_config(|k, cfg| {
        for s in shapes {
            let base = format!("block.{s}");
            let (codes, _, shape) = e.raw(&format!("{base}.weight"));
            let sv = e.f32s(&format!("{base}.weight_scale_inv"));
            let sc = Scales { values: &sv, layout: ScaleLayout::Block { n: 128, k: 128 } };
            check(
                &e,
                k,
                cfg,
                &codes,
                &shape,
                Fp8Format::E4M3,
                sc,
                &format!("{base}."),
                &["ref_bf16", "ref_f16", "ref_f32"],
            );
        }
    });
}

#[test]
fn e5m2_blocks_ue8m0_channel_and_tensor_scales() {
    let e = Edge::open();
    each_config(|k, cfg| {
        type Case = (&'static str, Fp8Format, fn(&[u64]) -> ScaleLayout, &'static str);
        let cases: [Case; 4] = [
            ("e5m2block.130x260", Fp8Format::E5M2, |_| ScaleLayout::Block { n: 128, k: 128 }, "weight_scale_inv"),
            ("ue8m0.200x300", Fp8Format::E4M3, |_| ScaleLayout::Block { n: 128, k: 128 }, "weight_scale_inv"),
            ("channel.129x70", Fp8Format::E4M3, |_| ScaleLayout::Channel, "weight_scale"),
            ("tensor.129x70", Fp8Format::E4M3, |_| ScaleLayout::Tensor, "weight_scale"),
        ];
        for (base, fmt, layout, sname) in cases {
            let (codes, _, shape) = e.raw(&format!("{base}.weight"));
            let (_, sdt, _) = e.raw(&format!("{base}.{sname}"));
            let sv = e.f32s(&format!("{base}.{sname}"));
            if base.starts_with("ue8m0") {
                assert_eq!(sdt, Dtype::F8_E8M0);
            }
            if base.starts_with("channel") {
                assert_eq!(sdt, Dtype::BF16);
            }
            let sc = Scales { values: &sv, layout: layout(&shape) };
            check(&e, k, cfg, &codes, &shape, fmt, sc, &format!("{base}."), &["ref_bf16"]);
        }
    });
}
