//! Per-channel symmetric int4 weight quantization and packing, bit for bit as msModelSlim 26.1.0
//! writes a W4A8_DYNAMIC layer (`ir/api/impl/int_quantization.py` with `QDType.INT4`: max_bound 7,
//! clamp to [-8, 7]; `save/utils/pack.py`: `w4a8_pack_int4`, `process_scale`). The arithmetic is
//! [`crate::quant::int8`]'s with 7 for 127, in the weight's own dtype with PyTorch's rounding after
//! every operation:
//!
//! ```text
//! scale = max(round_d(amax / 7), round_d(f32::EPSILON))
//! q     = clamp(round_half_even(round_d(w / scale)), -8, 7)       (ties are frequent: w / scale is
//!                                                                   rounded to bf16 first)
//! byte  = (q[2j+1][k] << 4) | (q[2j][k] & 0xF)                    rows 2j, 2j+1 → packed row j
//! ```
//!
//! `scale_bias` is `8 * Σ q·scale` over a row, or over each of its equal column chunks. msModelSlim
//! sums the f32 products `q·scale` with torch's reduction; every product and partial sum of a bf16
//! scale (8 significant bits) is exact while a chunk has fewer than 8192 columns (|Σq| ≤ 8·cols),
//! so any summation order gives `8·scale·Σq` exactly, which is what is computed here from the
//! integer sums. (f16 scales: exact below 1024 columns; f32: torch's own rounding may differ in the
//! last bit.)

#[cfg(test)]
use crate::quant::fp8::f32_to_bf16;
use crate::quant::fp8::f32_to_f16;
use crate::quant::int8::{has_avx2, Compute, NonFinite, Rows};

const QMAX: f32 = 7.0;
/// 1.5 · 2^23: `v + MAGIC` holds round_half_even(v) in its low mantissa bits for |v| < 2^22.
const MAGIC: f32 = 12_582_912.0;
/// Elements per parallel task.
const TASK_ELEMS: usize = 1 << 16;

#[inline(always)]
fn val(c: Compute, b: u16) -> f32 {
    match c {
        Compute::BF16 => f32::from_bits((b as u32) << 16),
        _ => half::f16::from_bits(b).to_f32(),
    }
}

/// `round_d(x)`: the f32 rounded to the compute dtype (exact as an f32). bf16: round to nearest
/// even on the bits, as [`crate::quant::fp8::f32_to_bf16`] without its NaN case: every value rounded here is finite
/// (a finite weight over a scale of at least f32::EPSILON, or a finite maximum over 7), and the
/// select it saves is a tenth of the loop.
#[inline(always)]
fn round_d(c: Compute, x: f32) -> f32 {
    match c {
        Compute::BF16 => {
            let b = x.to_bits();
            f32::from_bits(b.wrapping_add(0x7FFF + ((b >> 16) & 1)) & 0xFFFF_0000)
        }
        Compute::F16 => half::f16::from_bits(f32_to_f16(x)).to_f32(),
        Compute::F32 => x,
    }
}

#[inline(always)]
fn scale_of(c: Compute, amax: f32) -> f32 {
    let s = round_d(c, amax / QMAX);
    let eps = round_d(c, f32::EPSILON);
    if s < eps {
        eps
    } else {
        s
    }
}

#[inline(always)]
fn code(c: Compute, x: f32, s: f32) -> i8 {
    code_of(round_d(c, x / s))
}

/// The clamped code of a quotient already rounded to the compute dtype.
#[inline(always)]
fn code_of(v: f32) -> i8 {
    let i = ((v + MAGIC).to_bits() as i32).wrapping_sub(MAGIC.to_bits() as i32);
    i.clamp(-8, 7) as i8
}

/// One row in its dtype.
#[derive(Clone, Copy)]
enum Row<'a> {
    Half(&'a [u16], Compute),
    F32(&'a [f32]),
}

impl Row<'_> {
    /// The row's scale; the column of its first non-finite element otherwise.
    #[inline(always)]
    fn scale(self) -> Result<f32, usize> {
        match self {
            Row::Half(r, c) => {
                let inf = if c == Compute::BF16 { 0x7F80 } else { 0x7C00 };
                // Magnitudes compare as integers once the sign is cleared (NaN and inf above all).
                let m = r.iter().fold(0u16, |m, &b| m.max(b & 0x7FFF));
                if m >= inf {
                    return Err(r.iter().position(|&b| b & 0x7FFF >= inf).unwrap_or(0));
                }
                Ok(scale_of(c, val(c, m)))
            }
            Row::F32(r) => {
                let m = r.iter().fold(0u32, |m, &x| m.max(x.to_bits() & 0x7FFF_FFFF));
                if m >= 0x7F80_0000 {
                    return Err(r.iter().position(|x| !x.is_finite()).unwrap_or(0));
                }
                Ok(scale_of(Compute::F32, f32::from_bits(m)))
            }
        }
    }

    /// The row's codes into `q` (one loop per dtype, so each compiles to straight vector code).
    #[inline(always)]
    fn codes(self, s: f32, q: &mut [i8]) {
        match self {
            Row::Half(r, Compute::BF16) => {
                // A multiply for the division: the same code (see crate::quant::int8's quant_16).
                let inv = 1.0 / s;
                for (o, &b) in q.iter_mut().zip(r) {
                    *o = code_of(round_d(Compute::BF16, val(Compute::BF16, b) * inv));
                }
            }
            Row::Half(r, _) => {
                for (o, &b) in q.iter_mut().zip(r) {
                    *o = code(Compute::F16, val(Compute::F16, b), s);
                }
            }
            Row::F32(r) => {
                for (o, &x) in q.iter_mut().zip(r) {
                    *o = code(Compute::F32, x, s);
                }
            }
        }
    }
}

fn row(rows: Rows<'_>, k: usize, i: usize) -> Row<'_> {
    match rows {
        Rows::Half(r, c) => Row::Half(&r[i * k..(i + 1) * k], c),
        Rows::F32(r) => Row::F32(&r[i * k..(i + 1) * k]),
    }
}

/// Rows `[0, 2·pairs)` of `rows`: scales (unless `have`), packed codes, the code sums of each row's
/// `chunks` column chunks. Row numbers in the error count from `rows`' start.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pairs_serial(
    rows: Rows<'_>,
    k: usize,
    chunks: usize,
    have: bool,
    scales: &mut [f32],
    sums: &mut [i32],
    out: &mut [u8],
    row0: usize,
) -> Result<(), NonFinite> {
    let (mut qa, mut qb) = (vec![0i8; k], vec![0i8; k]);
    let cw = k / chunks;
    for (j, o) in out.chunks_exact_mut(k).enumerate() {
        let (a, b) = (2 * j, 2 * j + 1);
        if let Rows::Half(r, Compute::BF16) = rows {
            // bf16 (the usual weights): codes, packing and sums in one pass over the pair.
            let (ra, rb) = (row(rows, k, row0 + a), row(rows, k, row0 + b));
            if !have {
                scales[a] = ra.scale().map_err(|col| NonFinite { row: row0 + a, col })?;
                scales[b] = rb.scale().map_err(|col| NonFinite { row: row0 + b, col })?;
            }
            let (xa, xb) = (&r[(row0 + a) * k..(row0 + a + 1) * k], &r[(row0 + b) * k..(row0 + b + 1) * k]);
            let (sa, sb) = sums[a * chunks..(b + 1) * chunks].split_at_mut(chunks);
            pack_pair_bf16(xa, xb, 1.0 / scales[a], 1.0 / scales[b], cw, o, sa, sb);
            continue;
        }
        for (i, q) in [(a, &mut qa), (b, &mut qb)] {
            let r = row(rows, k, row0 + i);
            if !have {
                scales[i] = r.scale().map_err(|col| NonFinite { row: row0 + i, col })?;
            }
            r.codes(scales[i], q);
        }
        // Pack the pair and sum each row's chunks in one pass over the codes.
        for (c, ((o, qa), qb)) in o.chunks_exact_mut(cw).zip(qa.chunks_exact(cw)).zip(qb.chunks_exact(cw)).enumerate() {
            let (mut sa, mut sb) = (0i32, 0i32);
            for ((o, &x), &y) in o.iter_mut().zip(qa).zip(qb) {
                *o = ((y as u8) << 4) | (x as u8 & 0x0F);
                sa += x as i32;
                sb += y as i32;
            }
            sums[a * chunks + c] = sa;
            sums[b * chunks + c] = sb;
        }
    }
    Ok(())
}

/// Two bf16 rows `xa`, `xb` (multiplied by their scales' reciprocals `ia`, `ib`: the same code as the
/// division, see crate::quant::int8's quant_16) to packed int4 bytes, `xa` low, with each row's code
/// sums per `cw`-column chunk. One loop per chunk, so it compiles to straight vector code.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn pack_pair_bf16(xa: &[u16], xb: &[u16], ia: f32, ib: f32, cw: usize, o: &mut [u8], sa: &mut [i32], sb: &mut [i32]) {
    let code = |x: u16, inv: f32| code_of(round_d(Compute::BF16, val(Compute::BF16, x) * inv)) as i32;
    for ((((o, xa), xb), sa), sb) in
        o.chunks_exact_mut(cw).zip(xa.chunks_exact(cw)).zip(xb.chunks_exact(cw)).zip(sa.iter_mut()).zip(sb.iter_mut())
    {
        let (mut ta, mut tb) = (0i32, 0i32);
        for ((o, &x), &y) in o.iter_mut().zip(xa).zip(xb) {
            let (qa, qb) = (code(x, ia), code(y, ib));
            *o = ((qb << 4) | (qa & 0x0F)) as u8;
            ta += qa;
            tb += qb;
        }
        *sa = ta;
        *sb = tb;
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
#[allow(clippy::too_many_arguments)]
unsafe fn pairs_avx2(
    rows: Rows<'_>,
    k: usize,
    chunks: usize,
    have: bool,
    scales: &mut [f32],
    sums: &mut [i32],
    out: &mut [u8],
    row0: usize,
) -> Result<(), NonFinite> {
    pairs_serial(rows, k, chunks, have, scales, sums, out, row0)
}

/// Quantize an even number of rows (`k` columns each) to int4 and pack them, in parallel:
/// `scales` one per row (computed unless `have`), `sums` `chunks` per row (`chunks` divides `k`),
/// `out` `rows / 2 · k` bytes. The error names the first non-finite element (row from the band's start).
pub fn quantize_pack(
    rows: Rows<'_>,
    k: usize,
    chunks: usize,
    have: bool,
    scales: &mut [f32],
    sums: &mut [i32],
    out: &mut [u8],
) -> Result<(), NonFinite> {
    use rayon::prelude::*;
    let n = scales.len();
    let len = match rows {
        Rows::Half(r, _) => r.len(),
        Rows::F32(r) => r.len(),
    };
    assert!(n % 2 == 0 && len == n * k && out.len() == n / 2 * k, "rows, scales and output disagree");
    assert!(chunks > 0 && k % chunks == 0 && sums.len() == n * chunks, "chunks must divide the row");
    if k == 0 {
        scales.iter_mut().for_each(|s| *s = scale_of(Compute::F32, 0.0));
        return Ok(());
    }
    let pairs = (TASK_ELEMS / (2 * k)).max(1);
    out.par_chunks_mut(pairs * k)
        .zip(scales.par_chunks_mut(2 * pairs))
        .zip(sums.par_chunks_mut(2 * pairs * chunks))
        .enumerate()
        .try_for_each(|(t, ((o, s), m))| {
            let row0 = t * 2 * pairs;
            if has_avx2() {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: the CPU has the features (checked above).
                unsafe {
                    return pairs_avx2(rows, k, chunks, have, s, m, o, row0);
                }
            }
            pairs_serial(rows, k, chunks, have, s, m, o, row0)
        })
}

/// `scale_bias`: `8 · scale · Σq` for each row's chunk (see the module doc for why this is exact).
pub fn scale_bias(scales: &[f32], sums: &[i32], chunks: usize) -> Vec<f32> {
    sums.iter().enumerate().map(|(i, &s)| (8 * s) as f32 * scales[i / chunks]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bf(x: f32) -> u16 {
        f32_to_bf16(x)
    }

    #[test]
    fn bf16_rounding_equals_the_shared_one_on_every_non_nan() {
        for i in 0..1u32 << 20 {
            let x = f32::from_bits(i.wrapping_mul(0x9E37_79B9) ^ (i >> 3));
            if !x.is_nan() {
                assert_eq!(round_d(Compute::BF16, x).to_bits() >> 16, f32_to_bf16(x) as u32, "{x:e}");
            }
        }
    }

    #[test]
    fn two_rows_pack_into_one_with_the_odd_row_high() {
        // Row 0 → low nibbles, row 1 → high; -1 is 0xF, 7 is 0x7, -8 is 0x8.
        let r = [7.0f32, -7.0, 1.0, 0.0, 0.0, -8.0];
        let (mut s, mut m, mut o) = ([0f32; 2], [0i32; 2], [0u8; 3]);
        quantize_pack(Rows::F32(&r), 3, 1, false, &mut s, &mut m, &mut o).unwrap();
        assert_eq!(s, [1.0, 8.0 / 7.0]);
        // Row 1 / (8/7): [0, 0, -7] → -7 = 0x9.
        assert_eq!(o, [0x07, 0x09, 0x91]);
        assert_eq!(m, [1, -7]);
        assert_eq!(scale_bias(&s, &m, 1), [8.0, -64.0]);
    }

    #[test]
    fn ties_go_to_even_and_codes_clamp_to_minus_8() {
        let r = [2.5f32, 3.5, -0.5, 7.0, -1000.0, 0.0, 0.0, 0.0, 0.0, 0.0];
        let (mut s, mut m, mut o) = ([1.0f32, 1.0], [0i32; 10], [0u8; 5]);
        quantize_pack(Rows::F32(&r), 5, 5, true, &mut s, &mut m, &mut o).unwrap();
        assert_eq!(o.map(|b| (b << 4) as i8 >> 4), [2, 4, 0, 7, -8]);
        assert_eq!(&m[..5], &[2, 4, 0, 7, -8]);
    }

    #[test]
    fn the_scale_is_rounded_to_bf16_and_floored_at_epsilon() {
        // amax 1.0: 1/7 = 0.142857… → bf16 0.142578125; an all-zero row gets f32::EPSILON.
        let w = [bf(1.0), bf(-0.5), 0, 0x8000];
        let (mut s, mut m, mut o) = ([0f32; 2], [0i32; 2], [0u8; 2]);
        quantize_pack(Rows::Half(&w, Compute::BF16), 2, 1, false, &mut s, &mut m, &mut o).unwrap();
        assert_eq!(s, [73.0 / 512.0, f32::EPSILON], "0.142578125");
        // -0.5 / 0.142578125 = -3.5068… → -4; 1.0 / 0.142578125 = 7.0137… → 7.
        assert_eq!(o, [0x07, 0x0C]);
    }

    #[test]
    fn non_finite_weights_are_refused_with_their_position() {
        let w = [bf(1.0), bf(2.0), bf(3.0), 0x7FC0];
        let (mut s, mut m, mut o) = ([0f32; 2], [0i32; 2], [0u8; 2]);
        let e = quantize_pack(Rows::Half(&w, Compute::BF16), 2, 1, false, &mut s, &mut m, &mut o).unwrap_err();
        assert_eq!(e, NonFinite { row: 1, col: 1 });
    }

    /// The module doc's formulas one element at a time, in f32 division (no reciprocal, no fusion).
    fn reference(w: &[u16], k: usize, chunks: usize) -> (Vec<f32>, Vec<i32>, Vec<u8>) {
        let n = w.len() / k;
        let scales: Vec<f32> = (0..n)
            .map(|i| {
                let amax = w[i * k..(i + 1) * k].iter().map(|&b| val(Compute::BF16, b).abs()).fold(0.0, f32::max);
                scale_of(Compute::BF16, amax)
            })
            .collect();
        let sc = scales.clone();
        let q = move |i: usize, c: usize| code(Compute::BF16, val(Compute::BF16, w[i * k + c]), sc[i]);
        let mut sums = vec![0i32; n * chunks];
        for i in 0..n {
            for c in 0..k {
                sums[i * chunks + c / (k / chunks)] += q(i, c) as i32;
            }
        }
        let out = (0..n / 2)
            .flat_map(|j| (0..k).map(move |c| (j, c)))
            .map(|(j, c)| ((q(2 * j + 1, c) as u8) << 4) | (q(2 * j, c) as u8 & 0x0F));
        (scales, sums, out.collect())
    }

    #[test]
    fn the_fused_bf16_pass_equals_the_formulas_element_by_element() {
        // Values around the code boundaries and exact ties (w / s with .5 fractions), every sign.
        for (k, chunks) in [(48, 16), (7, 1), (64, 4), (160, 16)] {
            let n = 6;
            let w: Vec<u16> = (0..n * k)
                .map(|i| {
                    let r = (i as u32).wrapping_mul(2654435761);
                    let x = match r % 4 {
                        0 => (r >> 8) as f32 / 1e7 - 0.8,
                        1 => ((r >> 20) as f32 - 2048.0) / 128.0,
                        2 => ((r >> 24) as f32 - 128.0) * 0.5,
                        _ => -((r >> 16) as f32) / 3e3,
                    };
                    bf(x)
                })
                .collect();
            let (mut s, mut m, mut o) = (vec![0f32; n], vec![0i32; n * chunks], vec![0u8; n / 2 * k]);
            quantize_pack(Rows::Half(&w, Compute::BF16), k, chunks, false, &mut s, &mut m, &mut o).unwrap();
            assert_eq!((s, m, o), reference(&w, k, chunks), "k {k}, chunks {chunks}");
        }
    }

    #[test]
    fn parallel_tasks_equal_one_pass() {
        let k = 48;
        let n = 2 * (TASK_ELEMS / (2 * k)) * 3 + 4;
        let w: Vec<u16> =
            (0..n * k).map(|i| bf(((i as u32).wrapping_mul(2654435761) >> 8) as f32 / 1e7 - 0.8)).collect();
        let (mut s1, mut m1, mut o1) = (vec![0f32; n], vec![0i32; n * 16], vec![0u8; n / 2 * k]);
        quantize_pack(Rows::Half(&w, Compute::BF16), k, 16, false, &mut s1, &mut m1, &mut o1).unwrap();
        let (mut s2, mut m2, mut o2) = (vec![0f32; n], vec![0i32; n * 16], vec![0u8; n / 2 * k]);
        pairs_serial(Rows::Half(&w, Compute::BF16), k, 16, false, &mut s2, &mut m2, &mut o2, 0).unwrap();
        assert_eq!((s1, m1, o1), (s2, m2, o2));
    }
}
