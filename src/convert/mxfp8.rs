//! MXFP8 (W8A8_MXFP8) weight quantization, bit for bit as msModelSlim 26.1.0's data-free converter
//! writes it (`processor/convert/mxfp8_quant.py` → `ir/api/impl/mx_quantization.py`
//! `calculate_mx_qparam` / `mxfp_per_block_quantize`, saved by `ascendv1.py ::
//! on_w8a8_mx_dynamic_per_block`). The converter first casts every weight to bf16
//! (`_materialize_linear`), so the input here is bf16 bits (f16 / f32 rows are rounded to bf16,
//! nearest even, as `tensor.to(torch.bfloat16)` does). Per row, per block of 32 columns (the last
//! block of a row whose K is not a multiple of 32 is padded with zeros, which change no amax):
//!
//! ```text
//! amax   = max |w| over the block                                   (a bf16 value)
//! shared = floor(bf16(log2(amax or 2^-126))) - 8, at least -127     (log2 of a bf16 tensor is
//!          rounded to bf16: amax 7.96875 gives 3, not 2.99)
//! scale  = shared + 127 as u8                                        (E8M0)
//! v      = w / 2^shared in f32 (exact but for f32 underflow: then v = +0)
//! p      = max(floor(log2 |v|), -6)
//! q      = sign(v) · floor(|v| / 2^(p-3) + 0.5) · 2^(p-3), clamped to ±448   (half away from zero)
//! byte   = q as float8_e4m3fn (a negative v that rounds to 0 gives -0, 0x80)
//! ```
//!
//! Everything below but the shared exponent's log2 is integer work on the bf16 bits; the log2
//! (f64, rounded to f32 then to bf16) is checked against msModelSlim's for every finite bf16 amax
//! (`testdata/mxfp8_exp.bin`), the element encoding against every bf16 pattern
//! (`testdata/mxfp8_e4m3_e*.bin`, tools: `testdata/mxfp8_tables.py`).

use crate::quant::fp8::f32_to_bf16;
use crate::quant::int8::{has_avx2, Compute, NonFinite, Rows};

/// Columns sharing one exponent.
pub const BLOCK: usize = 32;
/// e4m3's largest exponent (`mx_finfo.emax`).
const EMAX: i32 = 8;

/// The scale columns of a row of `k` values.
pub fn scale_cols(k: usize) -> usize {
    k.div_ceil(BLOCK)
}

/// msModelSlim's shared exponent of a block whose largest magnitude has the bf16 bits `amax`
/// (finite, sign clear).
pub fn shared_exp(amax: u16) -> i32 {
    let x = if amax == 0 { 2f32.powi(-126) } else { f32::from_bits((amax as u32) << 16) };
    // torch's bf16 log2: computed in f32, rounded to bf16 (nearest even).
    let l = (x as f64).log2() as f32;
    let l = f32::from_bits((f32_to_bf16(l) as u32) << 16);
    (l.floor() as i32 - EMAX).max(-127)
}

/// The float8_e4m3fn byte of the bf16 value `w` (finite) quantized with shared exponent `e`.
pub fn encode(w: u16, e: i32) -> u8 {
    let neg = w & 0x8000 != 0;
    let exp = ((w >> 7) & 0xFF) as i32;
    let man = (w & 0x7F) as u32;
    if exp == 0 && man == 0 {
        return 0; // ±0: torch.where(inp == 0, 0, ...) gives +0
    }
    // |w| = m · 2^t, m < 256.
    let (m, t) = if exp == 0 { (man, -133) } else { (man | 0x80, exp - 134) };
    let t = t - e; // |v| = m · 2^t
    let msb = 31 - m.leading_zeros() as i32;
    let p = t + msb; // floor(log2 |v|)
                     // f32 division underflows to +0 below 2^-150 (2^-150 itself ties to even, 0).
    if p < -150 || (p == -150 && m.is_power_of_two()) {
        return 0;
    }
    let sign = if neg { 0x80 } else { 0 };
    if p >= 128 {
        // f32 overflow: inf, kept by _clamp_out, NaN (0x7F) as e4m3fn. Unreachable from a block
        // (|w| / 2^shared < 2^9), but msModelSlim's function does it.
        return sign | 0x7F;
    }
    let mut pc = p.max(-6);
    // n = round_half_away(m · 2^(t - (pc - 3)))
    let shift = t - (pc - 3);
    let mut n = if shift >= 0 {
        if shift > 8 {
            return sign | 0x7E; // far beyond 448: clamped
        }
        m << shift
    } else if -shift >= 32 {
        0
    } else {
        let s = (-shift) as u32;
        (m + (1 << (s - 1))) >> s
    };
    if n >= 16 {
        n >>= 1;
        pc += 1;
    }
    if n == 0 {
        return sign;
    }
    if pc > 8 || (pc == 8 && n > 14) {
        return sign | 0x7E; // ±448
    }
    if pc == -6 && n < 8 {
        return sign | n as u8; // subnormal
    }
    sign | (((pc + 7) as u8) << 3) | (n - 8) as u8
}

/// `encode(w, 0)` for every bf16 pattern, and the weight_scale byte of every bf16 amax.
struct Tables {
    enc: Vec<u8>,
    scale: Vec<u8>,
}

fn tables() -> &'static Tables {
    static T: std::sync::OnceLock<Tables> = std::sync::OnceLock::new();
    T.get_or_init(|| Tables {
        enc: (0..=0xFFFFu16).map(|b| if b & 0x7FFF >= 0x7F80 { 0 } else { encode(b, 0) }).collect(),
        scale: (0..0x8000u16).map(|b| if b >= 0x7F80 { 0 } else { (shared_exp(b) + 127) as u8 }).collect(),
    })
}

/// [`encode`] through the table: w / 2^e is w with its exponent field lowered by e, exactly,
/// when both are normal bf16; the rest (subnormal input, a quotient below bf16's normals, which
/// rounds to ±0 with msModelSlim's f32 underflow rule) takes the bit-level path.
#[inline(always)]
fn encode_fast(enc: &[u8], w: u16, e: i32) -> u8 {
    let ef = ((w >> 7) & 0xFF) as i32;
    let ef2 = ef - e;
    if ef >= 1 && (1..=254).contains(&ef2) {
        enc[((w as i32) - (e << 7)) as u16 as usize]
    } else {
        encode(w, e)
    }
}

/// [`encode`]`(w, 0)` of a normal bf16 `w` (exponent field 1..=254) in integer arithmetic without
/// branches or lookups, so a block compiles to vector code (the table's gather was most of an
/// MXFP8 quantize). |w| = m · 2^(p-7), m = 0x80 | mantissa: e4m3 keeps 3 of m's 7 fraction bits,
/// half away from zero (a carry into the exponent is the next code), clamped to 448 (0x7E); below
/// 2^-6 it is a subnormal, n = round_half_away(m · 2^(p+2)) units of 2^-9 (0 from p = -15 down,
/// with the sign kept: -0 is 0x80).
#[inline(always)]
fn encode_normal(w: u16) -> u8 {
    let w = w as i32;
    let sign = (w >> 8) & 0x80;
    let ef = (w >> 7) & 0xFF;
    let m = (w & 0x7F) | 0x80;
    let normal = (((ef - 120) << 3) + ((m + 8) >> 4) - 8).min(0x7E);
    // Shifts past 9 give 0 as 9 does (m < 2^8).
    let s = (-2 - (ef - 127)).clamp(5, 9);
    let sub = (m + (1 << (s - 1))) >> s;
    (sign | if ef >= 121 { normal } else { sub }) as u8
}

/// [`encode_normal`] of a `w` whose exponent field is 121..=254 (|w| >= 2^-6: a normal e4m3 code or
/// the 448 clamp): `(ef - 120) << 3` plus the rounded top 3 fraction bits minus 8 is
/// `((|w| bits + 0x88) >> 4) - 968` (ef << 7 is a multiple of 16), all of it in 16 bits.
#[inline(always)]
fn encode_e4m3_normal(w: u16) -> u8 {
    let code = (((w & 0x7FFF) + 0x88) >> 4).wrapping_sub(968).min(0x7E);
    (((w >> 8) & 0x80) | code) as u8
}

/// Quantize `rows` (each `k` values) to e4m3 bytes `out` [rows·k] and E8M0 scales `scales`
/// [rows·scale_cols(k)]. A NaN or infinity (also an f32 / f16 value that bf16 rounds to infinity)
/// is refused: msModelSlim would write a NaN exponent and NaN codes.
pub fn quantize_rows(rows: Rows<'_>, k: usize, out: &mut [u8], scales: &mut [u8]) -> Result<(), NonFinite> {
    use rayon::prelude::*;
    if k == 0 {
        return Ok(());
    }
    let nrows = match rows {
        Rows::Half(r, _) => r.len() / k,
        Rows::F32(r) => r.len() / k,
    };
    let t = tables();
    let sc = scale_cols(k);
    let per_task = (1usize << 16).div_ceil(k).max(1);
    out[..nrows * k]
        .par_chunks_mut(per_task * k)
        .zip(scales[..nrows * sc].par_chunks_mut(per_task * sc))
        .enumerate()
        .try_for_each(|(ti, (o, s))| {
            let mut buf = Vec::new();
            let r0 = ti * per_task;
            for (ri, (orow, srow)) in o.chunks_mut(k).zip(s.chunks_mut(sc)).enumerate() {
                let row = r0 + ri;
                let bf: &[u16] = match rows {
                    Rows::Half(r, Compute::BF16) => &r[row * k..(row + 1) * k],
                    Rows::Half(r, _) => {
                        buf.clear();
                        buf.extend(
                            r[row * k..(row + 1) * k].iter().map(|&x| f32_to_bf16(half::f16::from_bits(x).to_f32())),
                        );
                        &buf
                    }
                    Rows::F32(r) => {
                        buf.clear();
                        buf.extend(r[row * k..(row + 1) * k].iter().map(|&x| f32_to_bf16(x)));
                        &buf
                    }
                };
                let res = if has_avx2() {
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: the CPU has the features (checked above).
                    unsafe {
                        quantize_row_avx2(t, bf, orow, srow)
                    }
                    #[cfg(not(target_arch = "x86_64"))]
                    unreachable!()
                } else {
                    quantize_row(t, bf, orow, srow)
                };
                res.map_err(|col| NonFinite { row, col })?;
            }
            Ok(())
        })
}

/// [`quantize_row`] compiled for AVX2 (its variable shifts and selects are single instructions).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma,f16c")]
unsafe fn quantize_row_avx2(t: &Tables, row: &[u16], out: &mut [u8], scales: &mut [u8]) -> Result<(), usize> {
    quantize_row(t, row, out, scales)
}

/// One bf16 row; Err(column) of its first non-finite value.
#[inline(always)]
fn quantize_row(t: &Tables, row: &[u16], out: &mut [u8], scales: &mut [u8]) -> Result<(), usize> {
    for (bi, (blk, o)) in row.chunks(BLOCK).zip(out.chunks_mut(BLOCK)).enumerate() {
        // Finite bf16 magnitudes order as their bits; NaN and inf are the patterns >= 0x7F80.
        let amax = blk.iter().fold(0u16, |m, &w| m.max(w & 0x7FFF));
        if amax >= 0x7F80 {
            let j = blk.iter().position(|&w| w & 0x7FFF >= 0x7F80).expect("a non-finite value");
            return Err(bi * BLOCK + j);
        }
        let byte = t.scale[amax as usize];
        scales[bi] = byte;
        let e = byte as i32 - 127;
        // Smallest exponent field in the block: when every value and its quotient are normal
        // bf16 (the quotient's field is at most 8 + 127 above e's, never past 254), one lookup
        // each, without the per-element test.
        let min_ef = blk.iter().fold(0xFFu16, |m, &w| m.min((w >> 7) & 0xFF)) as i32;
        if min_ef >= 1 && min_ef - e >= 121 {
            // Every quotient is a normal e4m3 value (at least 2^-6): 16-bit lanes, no select.
            let shift = (e << 7) as u16;
            for (d, &w) in o.iter_mut().zip(blk) {
                *d = encode_e4m3_normal(w.wrapping_sub(shift));
            }
        } else if min_ef >= 1 && min_ef - e >= 1 {
            let shift = (e << 7) as u16;
            for (d, &w) in o.iter_mut().zip(blk) {
                *d = encode_normal(w.wrapping_sub(shift));
            }
        } else {
            for (d, &w) in o.iter_mut().zip(blk) {
                *d = encode_fast(&t.enc, w, e);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// msModelSlim's weight_scale byte for every finite non-negative bf16 amax.
    #[test]
    fn shared_exponent_equals_msmodelslim_for_every_bf16_amax() {
        let want = include_bytes!("testdata/mxfp8_exp.bin");
        assert_eq!(want.len(), 0x7F80);
        let mut bad = Vec::new();
        for b in 0..0x7F80u16 {
            let got = (shared_exp(b) + 127) as u8;
            if got != want[b as usize] {
                bad.push((b, got, want[b as usize]));
            }
        }
        assert!(bad.is_empty(), "{} differ, first {:x?}", bad.len(), &bad[..bad.len().min(8)]);
        // The bf16 log2 rounding is real: 7.96875 (0x40FF) is 2^3 to msModelSlim.
        assert_eq!(shared_exp(0x40FF), 3 - 8);
        assert_eq!(shared_exp(0x40FE), 2 - 8);
        assert_eq!(shared_exp(0), -127, "an all-zero block");
    }

    fn check_table(e: i32, want: &[u8]) {
        assert_eq!(want.len(), 0x10000);
        let mut bad = Vec::new();
        for b in 0..=0xFFFFu16 {
            if b & 0x7FFF >= 0x7F80 {
                continue; // NaN / inf: refused before encoding
            }
            let got = encode(b, e);
            if got != want[b as usize] {
                bad.push((b, got, want[b as usize]));
            }
        }
        assert!(bad.is_empty(), "e={e}: {} differ, first {:x?}", bad.len(), &bad[..bad.len().min(8)]);
    }

    /// Every bf16 bit pattern, at four shared exponents, against msModelSlim's own quantize.
    #[test]
    fn e4m3_encoding_equals_msmodelslim_for_every_bf16_pattern() {
        check_table(0, include_bytes!("testdata/mxfp8_e4m3_e0.bin"));
        check_table(-127, include_bytes!("testdata/mxfp8_e4m3_e-127.bin"));
        check_table(119, include_bytes!("testdata/mxfp8_e4m3_e119.bin"));
        check_table(-20, include_bytes!("testdata/mxfp8_e4m3_e-20.bin"));
    }

    /// The branch-free encoding equals the bit-level one for every normal bf16 pattern.
    #[test]
    fn the_normal_encoding_equals_encode() {
        for w in 0..=0xFFFFu16 {
            let ef = (w >> 7) & 0xFF;
            if (1..=254).contains(&ef) {
                assert_eq!(encode_normal(w), encode(w, 0), "{w:#06x}");
            }
            if (121..=254).contains(&ef) {
                assert_eq!(encode_e4m3_normal(w), encode(w, 0), "{w:#06x}");
            }
        }
    }

    /// The table path equals the bit-level one for every bf16 pattern at every reachable shared
    /// exponent (-127..=120; every 3rd, and the ends, to keep the debug build quick).
    #[test]
    fn the_table_path_equals_encode() {
        let t = tables();
        for e in (-127..=120).step_by(3).chain([-126, -1, 0, 1, 119, 120]) {
            for w in 0..=0xFFFFu16 {
                if w & 0x7FFF < 0x7F80 {
                    assert_eq!(encode_fast(&t.enc, w, e), encode(w, e), "w={w:#x} e={e}");
                }
            }
        }
        for b in 0..0x7F80u16 {
            assert_eq!(t.scale[b as usize] as i32 - 127, shared_exp(b));
        }
    }

    #[test]
    fn rounding_is_half_away_from_zero() {
        // 1.0625 = 1 + 1/16: halfway between e4m3 1.0 (0x38) and 1.125 (0x39).
        assert_eq!(encode(0x3F88, 0), 0x39);
        assert_eq!(encode(0xBF88, 0), 0xB9);
        // 1.1875: halfway between 1.125 and 1.25: away from zero, not to even.
        assert_eq!(encode(0x3F98, 0), 0x3A);
        // 2^-10, half the smallest subnormal: rounds up to 2^-9 (0x01); -2^-11 gives -0.
        assert_eq!(encode(0x3A80, 0), 0x01);
        assert_eq!(encode(0xBA00, 0), 0x80);
        assert_eq!(encode(0x43F0, 0), 0x7E, "480 clamps to 448");
    }

    #[test]
    fn non_finite_values_are_refused_with_their_column() {
        let mut row = vec![0x3F80u16; 40];
        row[35] = 0x7FC0;
        let (mut o, mut s) = (vec![0u8; 40], vec![0u8; 2]);
        let e = quantize_rows(Rows::Half(&row, Compute::BF16), 40, &mut o, &mut s).unwrap_err();
        assert_eq!((e.row, e.col), (0, 35));
        let f = [1.0f32, f32::MAX];
        let e = quantize_rows(Rows::F32(&f), 2, &mut [0; 2], &mut [0; 1]).unwrap_err();
        assert_eq!((e.row, e.col), (0, 1), "f32::MAX is infinity in bf16");
    }
}
