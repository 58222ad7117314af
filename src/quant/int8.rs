//! Per-channel symmetric int8 weight quantization, bit for bit as msModelSlim's min-max pipeline
//! computes it (msmodelslim 26.1.0, `ir/api/impl/int_quantization.py`: `calculate_int_qparam`,
//! `int_quantize`), in the weight's own dtype with PyTorch's rounding after every operation:
//!
//! ```text
//! amax  = max(-min(row.min(), 0), max(row.max(), 0))          exact: a max of magnitudes
//! scale = max(round_d(amax / 127), round_d(f32::EPSILON))     division in f32, rounded to dtype d
//! q     = clamp(round_half_even(round_d(w / scale)), -128, 127)
//! ```
//!
//! `d` is bf16, f16 or f32 (PyTorch computes a bf16 or f16 division in f32 and rounds the quotient
//! once). The saved `weight_scale` is `scale` widened to f32, `weight_offset` is zero. Computing the
//! division in f32 without the rounding to bf16 changes about one weight in ten by ±1: the
//! intermediate rounding is the contract, not a detail.

use super::fp8::{f32_to_bf16, f32_to_f16};

/// The dtype the arithmetic runs in: the weight's own.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compute {
    BF16,
    F16,
    F32,
}

/// A weight that cannot be quantized: the first non-finite element (row, column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("element [{row}, {col}] is not finite (NaN or infinity): no scale over it (per row, or per 32-value block) would be meaningful")]
pub struct NonFinite {
    pub row: usize,
    pub col: usize,
}

const QMAX: f32 = 127.0;
/// `round_half_even(v)` for |v| < 2^22: adding and removing 1.5 · 2^23 leaves exactly the
/// nearest integer, ties to even, in the default rounding mode (no SSE4.1 `roundps` needed).
const MAGIC: f32 = 12_582_912.0;

#[inline(always)]
fn bf16_val(b: u16) -> f32 {
    f32::from_bits((b as u32) << 16)
}

#[inline(always)]
fn f16_val(b: u16) -> f32 {
    half::f16::from_bits(b).to_f32()
}

impl Compute {
    pub fn of(d: crate::checkpoint::Dtype) -> Option<Compute> {
        use crate::checkpoint::Dtype;
        match d {
            Dtype::BF16 => Some(Compute::BF16),
            Dtype::F16 => Some(Compute::F16),
            Dtype::F32 => Some(Compute::F32),
            _ => None,
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            Compute::F32 => 4,
            _ => 2,
        }
    }

    /// `round_d(x)` as an f32 (exact: every bf16 and f16 value is an f32).
    #[inline(always)]
    fn round(self, x: f32) -> f32 {
        match self {
            Compute::BF16 => bf16_val(f32_to_bf16(x)),
            Compute::F16 => f16_val(f32_to_f16(x)),
            Compute::F32 => x,
        }
    }

    /// The scale for a row whose largest magnitude is `amax` (finite, in dtype `self`).
    #[inline(always)]
    fn scale(self, amax: f32) -> f32 {
        let s = self.round(amax / QMAX);
        let eps = self.round(f32::EPSILON);
        if s < eps {
            eps
        } else {
            s
        }
    }
}

/// The scale of each row of a bf16/f16 matrix (`rows.len()` a multiple of `k`).
#[inline(always)]
fn scales_16(rows: &[u16], k: usize, c: Compute, out: &mut [f32]) -> Result<(), NonFinite> {
    let (inf, val): (u16, fn(u16) -> f32) = match c {
        Compute::BF16 => (0x7F80, bf16_val),
        _ => (0x7C00, f16_val),
    };
    for (r, (row, o)) in rows.chunks_exact(k).zip(out.iter_mut()).enumerate() {
        // Magnitudes compare as integers once the sign is cleared (NaN and inf sort above all).
        let m = row.iter().fold(0u16, |m, &b| m.max(b & 0x7FFF));
        if m >= inf {
            let col = row.iter().position(|&b| b & 0x7FFF >= inf).unwrap_or(0);
            return Err(NonFinite { row: r, col });
        }
        *o = c.scale(val(m));
    }
    Ok(())
}

#[inline(always)]
fn scales_32(rows: &[f32], k: usize, out: &mut [f32]) -> Result<(), NonFinite> {
    for (r, (row, o)) in rows.chunks_exact(k).zip(out.iter_mut()).enumerate() {
        let m = row.iter().fold(0u32, |m, &x| m.max(x.to_bits() & 0x7FFF_FFFF));
        if m >= 0x7F80_0000 {
            let col = row.iter().position(|x| !x.is_finite()).unwrap_or(0);
            return Err(NonFinite { row: r, col });
        }
        *o = Compute::F32.scale(f32::from_bits(m));
    }
    Ok(())
}

#[inline(always)]
fn q(c: Compute, x: f32, s: f32) -> i8 {
    q_of(c.round(x / s), 127)
}

/// The code of a quotient already rounded to the compute dtype, clamped to `[-qmax-1, qmax]`.
#[inline(always)]
pub(crate) fn q_of(v: f32, qmax: i32) -> i8 {
    // v + 1.5·2^23 holds round_half_even(v) in its low mantissa bits (|v| < 2^22, see MAGIC):
    // read it as an integer there, then clamp and narrow in integers (all of it vectorizes; a
    // float clamp and `as i8` would not).
    let i = ((v + MAGIC).to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    i.clamp(-qmax - 1, qmax) as i8
}

// bf16 rows are divided by their scale as a multiply by the scale's f32 reciprocal:
// `round_bf16(x * (1/s)) == round_bf16(x / s)` for every finite bf16 `x` and bf16 scale
// `s >= f32::EPSILON` (every scale here: the floor is `round_bf16(f32::EPSILON)`). Both have at
// most 8 significant bits, so `x / s` is never within 2^-17 (relative) of a bf16 rounding midpoint
// (that would need odd(x) = M · odd(s) with M a 9-bit odd significand, more than 255), while the
// f32 reciprocal and product are within 2^-22 of it: no rounding boundary lies between the two.
// `vdivps` was the int4 kernel's bottleneck. Checked for every pair by the ignored test
// `bf16_reciprocal_equals_division_for_every_pair`, on a sample by the test before it.
#[inline(always)]
fn quant_16(rows: &[u16], k: usize, c: Compute, scales: &[f32], out: &mut [i8]) {
    // One loop per dtype, so each compiles to straight vector code.
    for ((row, o), &s) in rows.chunks_exact(k).zip(out.chunks_exact_mut(k)).zip(scales) {
        if c == Compute::BF16 {
            // A multiply for the division, the same codes (see above).
            let inv = 1.0 / s;
            for (o, &b) in o.iter_mut().zip(row) {
                *o = q_of(Compute::BF16.round(bf16_val(b) * inv), 127);
            }
        } else {
            for (o, &b) in o.iter_mut().zip(row) {
                *o = q(Compute::F16, f16_val(b), s);
            }
        }
    }
}

#[inline(always)]
fn quant_32(rows: &[f32], k: usize, scales: &[f32], out: &mut [i8]) {
    for ((row, o), &s) in rows.chunks_exact(k).zip(out.chunks_exact_mut(k)).zip(scales) {
        for (o, &x) in o.iter_mut().zip(row) {
            *o = q(Compute::F32, x, s);
        }
    }
}

/// A band of rows in the weight's dtype.
#[derive(Clone, Copy)]
pub enum Rows<'a> {
    Half(&'a [u16], Compute),
    F32(&'a [f32]),
}

impl Rows<'_> {
    fn len(&self) -> usize {
        match self {
            Rows::Half(r, _) => r.len(),
            Rows::F32(r) => r.len(),
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::*;
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn scales(rows: Rows<'_>, k: usize, out: &mut [f32]) -> Result<(), NonFinite> {
        match rows {
            Rows::Half(r, c) => scales_16(r, k, c, out),
            Rows::F32(r) => scales_32(r, k, out),
        }
    }
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn quantize(rows: Rows<'_>, k: usize, scales: &[f32], out: &mut [i8]) {
        match rows {
            Rows::Half(r, c) => quant_16(r, k, c, scales, out),
            Rows::F32(r) => quant_32(r, k, scales, out),
        }
    }
}

/// Whether this CPU runs the AVX2 + FMA + F16C kernels (checked once; the int4 packer shares it).
pub(crate) fn has_avx2() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        *OK.get_or_init(|| {
            std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

/// Rows per parallel task: enough work to amortize the task, few enough to spread a band.
const TASK_ELEMS: usize = 1 << 16;

/// The scale of each of the `out.len()` rows of `rows` (`k` columns each), in parallel.
/// The error names the first non-finite element, its row counted from the band's start.
pub fn row_scales(rows: Rows<'_>, k: usize, out: &mut [f32]) -> Result<(), NonFinite> {
    use rayon::prelude::*;
    assert_eq!(rows.len(), out.len() * k, "rows and scales disagree");
    if k == 0 {
        out.fill(Compute::F32.scale(0.0));
        return Ok(());
    }
    let per = (TASK_ELEMS / k).max(1);
    out.par_chunks_mut(per).enumerate().try_for_each(|(t, o)| {
        let r0 = t * per;
        let sub = match rows {
            Rows::Half(r, c) => Rows::Half(&r[r0 * k..(r0 + o.len()) * k], c),
            Rows::F32(r) => Rows::F32(&r[r0 * k..(r0 + o.len()) * k]),
        };
        let res = if has_avx2() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has the features (checked above).
            unsafe {
                avx2::scales(sub, k, o)
            }
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!()
        } else {
            match sub {
                Rows::Half(r, c) => scales_16(r, k, c, o),
                Rows::F32(r) => scales_32(r, k, o),
            }
        };
        res.map_err(|e| NonFinite { row: e.row + r0, col: e.col })
    })
}

/// Quantize `rows` (`k` columns each) with one scale per row into `out`, in parallel.
pub fn quantize_rows(rows: Rows<'_>, k: usize, scales: &[f32], out: &mut [i8]) {
    use rayon::prelude::*;
    assert_eq!(rows.len(), out.len(), "rows and output disagree");
    assert_eq!(rows.len(), scales.len() * k, "rows and scales disagree");
    if k == 0 {
        return;
    }
    let per = (TASK_ELEMS / k).max(1);
    out.par_chunks_mut(per * k).zip(scales.par_chunks(per)).enumerate().for_each(|(t, (o, s))| {
        let r0 = t * per * k;
        let sub = match rows {
            Rows::Half(r, c) => Rows::Half(&r[r0..r0 + o.len()], c),
            Rows::F32(r) => Rows::F32(&r[r0..r0 + o.len()]),
        };
        if has_avx2() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has the features (checked above).
            unsafe {
                avx2::quantize(sub, k, s, o)
            }
        } else {
            match sub {
                Rows::Half(r, c) => quant_16(r, k, c, s, o),
                Rows::F32(r) => quant_32(r, k, s, o),
            }
        }
    });
}

/// [`row_scales`] and [`quantize_rows`] in one pass: each task computes its rows' scales and
/// quantizes those rows while they are still in cache (one read of the band from memory, not two).
pub fn scale_and_quantize(rows: Rows<'_>, k: usize, scales: &mut [f32], out: &mut [i8]) -> Result<(), NonFinite> {
    use rayon::prelude::*;
    assert_eq!(rows.len(), out.len(), "rows and output disagree");
    assert_eq!(rows.len(), scales.len() * k, "rows and scales disagree");
    if k == 0 {
        return row_scales(rows, 0, scales);
    }
    let per = (TASK_ELEMS / k).max(1);
    out.par_chunks_mut(per * k).zip(scales.par_chunks_mut(per)).enumerate().try_for_each(|(t, (o, s))| {
        let r0 = t * per;
        let sub = match rows {
            Rows::Half(r, c) => Rows::Half(&r[r0 * k..r0 * k + o.len()], c),
            Rows::F32(r) => Rows::F32(&r[r0 * k..r0 * k + o.len()]),
        };
        let res = if has_avx2() {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: the CPU has the features (checked above).
            unsafe {
                avx2::scales(sub, k, s).map(|()| avx2::quantize(sub, k, s, o))
            }
            #[cfg(not(target_arch = "x86_64"))]
            unreachable!()
        } else {
            match sub {
                Rows::Half(r, c) => scales_16(r, k, c, s).map(|()| quant_16(r, k, c, s, o)),
                Rows::F32(r) => scales_32(r, k, s).map(|()| quant_32(r, k, s, o)),
            }
        };
        res.map_err(|e| NonFinite { row: e.row + r0, col: e.col })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bf16 reciprocal rule (see quant_16) for every finite bf16 x and the bf16 scales `s0, s0 + step, …`.
    fn reciprocal_equals_division(step: usize) {
        let r = |x: f32| f32_to_bf16(x);
        for sb in ((f32::EPSILON.to_bits() >> 16) as u16..0x7F80).step_by(step) {
            let s = bf16_val(sb);
            let inv = 1.0 / s;
            for xb in 0..=u16::MAX {
                let x = bf16_val(xb);
                if x.is_finite() && (x / s).is_finite() {
                    assert_eq!(r(x * inv), r(x / s), "x {x:e}, s {s:e}");
                }
            }
        }
    }

    #[test]
    fn bf16_reciprocal_equals_division_on_a_sample() {
        reciprocal_equals_division(211);
    }

    #[test]
    #[ignore = "1.26 billion pairs: run with --ignored in release"]
    fn bf16_reciprocal_equals_division_for_every_pair() {
        reciprocal_equals_division(1);
    }

    fn bf(x: f32) -> u16 {
        f32_to_bf16(x)
    }

    #[test]
    fn scale_is_rounded_to_the_dtype_and_floored_at_epsilon() {
        // 1.0 / 127 = 0.007874… → bf16 0.00787353515625.
        let rows = [bf(1.0), bf(-0.5)];
        let mut s = [0.0];
        row_scales(Rows::Half(&rows, Compute::BF16), 2, &mut s).unwrap();
        assert_eq!(s[0], bf16_val(bf(1.0 / 127.0)));
        assert_ne!(s[0], 1.0 / 127.0);
        // An all-zero row gets the epsilon floor, not a division by zero.
        let zeros = [0u16, 0x8000];
        row_scales(Rows::Half(&zeros, Compute::BF16), 2, &mut s).unwrap();
        assert_eq!(s[0], f32::EPSILON);
    }

    #[test]
    fn the_largest_magnitude_maps_to_127_and_ties_go_to_even() {
        let rows = [bf(-2.0), bf(1.0), bf(0.0), bf(2.0)];
        let mut s = [0.0];
        row_scales(Rows::Half(&rows, Compute::BF16), 4, &mut s).unwrap();
        let mut out = [0i8; 4];
        quantize_rows(Rows::Half(&rows, Compute::BF16), 4, &s, &mut out);
        assert_eq!(out[0], -127);
        assert_eq!(out[3], 127);
        assert_eq!(out[2], 0);
        // Half-way values round to even: 2.5 → 2, 3.5 → 4, -0.5 → 0 with scale 1.
        let r = [2.5f32, 3.5, -0.5, 127.0, -1000.0];
        let mut o = [0i8; 5];
        quantize_rows(Rows::F32(&r), 5, &[1.0], &mut o);
        assert_eq!(o, [2, 4, 0, 127, -128]);
    }

    #[test]
    fn the_fused_pass_equals_the_two_passes() {
        let rows: Vec<u16> =
            (0..300u32 * 37).map(|i| bf(((i.wrapping_mul(2654435761) >> 8) as f32 / 1e7) - 200.0)).collect();
        let k = 37;
        let (mut s1, mut s2) = (vec![0f32; 300], vec![0f32; 300]);
        let (mut q1, mut q2) = (vec![0i8; rows.len()], vec![0i8; rows.len()]);
        row_scales(Rows::Half(&rows, Compute::BF16), k, &mut s1).unwrap();
        quantize_rows(Rows::Half(&rows, Compute::BF16), k, &s1, &mut q1);
        scale_and_quantize(Rows::Half(&rows, Compute::BF16), k, &mut s2, &mut q2).unwrap();
        assert_eq!((s1, q1), (s2, q2));
    }

    #[test]
    fn non_finite_weights_are_refused_with_their_position() {
        let rows = [bf(1.0), bf(2.0), bf(3.0), 0x7FC0];
        let mut s = [0.0; 2];
        let e = row_scales(Rows::Half(&rows, Compute::BF16), 2, &mut s).unwrap_err();
        assert_eq!(e, NonFinite { row: 1, col: 1 });
        let r = [1.0f32, f32::NEG_INFINITY];
        let e = row_scales(Rows::F32(&r), 2, &mut s[..1]).unwrap_err();
        assert_eq!(e, NonFinite { row: 0, col: 1 });
    }
}
