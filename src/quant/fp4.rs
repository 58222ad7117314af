//! 4-bit weights to bf16: MXFP4 (gpt-oss), NVFP4 (compressed-tensors `nvfp4-pack-quantized`) and
//! INT4 `pack-quantized` (W4A16). All three store two 4-bit codes per byte, the **low nibble first**
//! (element 2i in the low nibble of byte i; an I32 `pack-quantized` word holds elements 8w..8w+7
//! from its least significant nibble up, which on a little-endian file is the same byte order),
//! and one scale per group of 32 (MX) or 16 (NV) or `group_size` (INT4) elements along the row.
//!
//! Within a group every element's value depends only on its code and the group's scale, so a
//! group is decoded through a 16-entry table computed with the producer's own arithmetic:
//!
//! - MXFP4 (`transformers.integrations.mxfp4.convert_moe_packed_tensors`): `lut[code]` in bf16, then
//!   `torch.ldexp(x, s - 127)`: an exact scaling by a power of two (every e2m1 value times `2^-127 ..
//!   2^128` is a bf16 number or overflows), so `e2m1 × 2^(s-127)` exactly, `±inf` past the bf16
//!   range. Byte 0xFF is `2^128`, not the OCP MX spec's NaN: `0.5 · 2^128 = 2^127` stays finite, zero
//!   stays zero, larger codes overflow to `±inf` — what the reference gives (fixtures/mxfp4-edge).
//! - NVFP4 (compressed-tensors `NVFP4PackedCompressor.decompress_weight` → `dequantize`): group scale
//!   `f32(weight_scale as e4m3) / weight_global_scale` in f32, then `bf16(e2m1(code) * scale)`.
//! - INT4 (compressed-tensors `PackedQuantizationCompressor` → `dequantize`): `q = nibble - 8`,
//!   `bf16((q - zero_point) * scale)` in the scale's precision (exact in f32, one rounding).

pub use super::fp8::e4m3_to_f32;
use super::fp8::f32_to_bf16;

/// The 16 e2m1 values (OCP MX), code order.
pub const E2M1: [f32; 16] = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0];

/// One group's 16 output values (bf16 bits), indexed by code, stored split: the 16 low bytes, then
/// the 16 high bytes — the form the byte-shuffle kernel looks them up in, so a table made once
/// (per scale byte) is used as it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C, align(16))]
pub struct Table([u8; 32]);

impl Table {
    pub fn new(values: [u16; 16]) -> Table {
        let mut b = [0u8; 32];
        for (c, v) in values.iter().enumerate() {
            b[c] = *v as u8;
            b[16 + c] = (*v >> 8) as u8;
        }
        Table(b)
    }

    /// The value of code `c` (bf16 bits).
    #[inline(always)]
    pub fn get(&self, c: usize) -> u16 {
        u16::from_le_bytes([self.0[c & 15], self.0[16 + (c & 15)]])
    }
}

/// The table of an MXFP4 group with e8m0 scale byte `s`: `e2m1 × 2^(s - 127)` exactly (ldexp),
/// `±inf` on overflow. `2^128` is not an f32, so byte 0xFF scales by `2^127` and then by 2.
pub fn mx_table(s: u8) -> Table {
    let mut t = [0u16; 16];
    for (o, v) in t.iter_mut().zip(E2M1) {
        let x = if s == 255 { (v * super::fp8::e8m0(254)) * 2.0 } else { v * super::fp8::e8m0(s) };
        *o = f32_to_bf16(x);
    }
    Table::new(t)
}

/// The table of a group whose scale is `scale` (an f32 already in the producer's precision):
/// `bf16(e2m1[code] * scale)`.
pub fn fp4_table(scale: f32) -> Table {
    let mut t = [0u16; 16];
    for (o, v) in t.iter_mut().zip(E2M1) {
        *o = f32_to_bf16(v * scale);
    }
    Table::new(t)
}

/// The 256 MXFP4 tables, one per e8m0 scale byte (made once).
pub fn mx_tables() -> &'static [Table; 256] {
    static T: std::sync::OnceLock<[Table; 256]> = std::sync::OnceLock::new();
    T.get_or_init(|| std::array::from_fn(|s| mx_table(s as u8)))
}

/// The table of an INT4 group: `bf16((nibble - 8 - zero) * scale)`.
pub fn int4_table(scale: f32, zero: f32) -> Table {
    let mut t = [0u16; 16];
    for (c, o) in t.iter_mut().enumerate() {
        *o = f32_to_bf16(((c as f32 - 8.0) - zero) * scale);
    }
    Table::new(t)
}

/// Expand one row of packed codes: `codes` holds `out.len() / 2` bytes, `group` elements (even)
/// share `tables[g]`.
#[inline(always)]
fn expand_body<'t>(codes: &[u8], group: usize, tables: impl Iterator<Item = &'t Table>, out: &mut [u16]) {
    let gb = group / 2;
    for ((c, o), t) in codes.chunks(gb).zip(out.chunks_mut(group)).zip(tables) {
        for (pair, &b) in o.chunks_exact_mut(2).zip(c) {
            pair[0] = t.get((b & 15) as usize);
            pair[1] = t.get((b >> 4) as usize);
        }
    }
}

/// The table lookup with byte shuffles: a group's low-byte and high-byte tables, 8 code bytes'
/// nibbles interleaved into 16 indices (low nibble first), each looked up in both tables
/// (`pshufb`), the bytes zipped back into bf16. 8 code bytes per step,
/// so groups of 16 elements (NVFP4) and any multiple of 16 (MXFP4's 32, INT4's 32 / 64 / 128) fit.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "ssse3")]
unsafe fn expand_ssse3<'t>(codes: &[u8], group: usize, tables: impl Iterator<Item = &'t Table>, out: &mut [u16]) {
    use std::arch::x86_64::*;
    let gb = group / 2;
    let mask = _mm_set1_epi8(0x0F);
    for ((c, o), t) in codes.chunks_exact(gb).zip(out.chunks_exact_mut(group)).zip(tables) {
        let lo_t = _mm_load_si128(t.0.as_ptr().cast()); // byte 0 of entries 0..16 (16-byte aligned)
        let hi_t = _mm_load_si128(t.0.as_ptr().add(16).cast()); // byte 1
        for (c8, o16) in c.chunks_exact(8).zip(o.chunks_exact_mut(16)) {
            let b = _mm_loadl_epi64(c8.as_ptr().cast());
            let lo = _mm_and_si128(b, mask);
            let hi = _mm_and_si128(_mm_srli_epi16(b, 4), mask);
            let idx = _mm_unpacklo_epi8(lo, hi); // 16 codes, element order
            let vl = _mm_shuffle_epi8(lo_t, idx);
            let vh = _mm_shuffle_epi8(hi_t, idx);
            _mm_storeu_si128(o16.as_mut_ptr().cast(), _mm_unpacklo_epi8(vl, vh));
            _mm_storeu_si128(o16.as_mut_ptr().add(8).cast(), _mm_unpackhi_epi8(vl, vh));
        }
    }
}

/// Expand packed codes to bf16 through per-group tables. `out.len()` elements, `codes` half as
/// many bytes, `tables` one per `group` elements (the last group may be short).
pub fn expand(codes: &[u8], group: usize, tables: &[Table], out: &mut [u16]) {
    assert_eq!(tables.len(), out.len().div_ceil(group), "one table per group");
    expand_with(codes, group, |g| &tables[g], out)
}

/// As [`expand`], group `g`'s table given by `table(g)` (a shared table per scale byte, say).
pub fn expand_with<'t>(codes: &[u8], group: usize, table: impl Fn(usize) -> &'t Table, out: &mut [u16]) {
    assert!(group >= 2 && group % 2 == 0, "groups hold whole bytes");
    assert_eq!(codes.len() * 2, out.len(), "two codes per byte");
    let groups = out.len().div_ceil(group);
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    if group % 16 == 0 && simd() {
        let whole = out.len() / group * group;
        let g = whole / group;
        // SAFETY: the CPU has the instructions (`simd`); every slice is in bounds (whole groups only).
        unsafe { expand_simd(&codes[..whole / 2], group, (0..g).map(&table), &mut out[..whole]) };
        expand_body(&codes[whole / 2..], group, (g..groups).map(&table), &mut out[whole..]);
        return;
    }
    expand_body(codes, group, (0..groups).map(table), out)
}

/// Whether the byte-shuffle lookup runs: SSSE3 on x86-64 (detected once), NEON on aarch64 (always
/// there); `CKPTPILOT_ISA=portable` forces the scalar loop, as for the fp8 kernels.
#[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
fn simd() -> bool {
    static OK: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *OK.get_or_init(|| {
        let allowed = std::env::var_os("CKPTPILOT_ISA").is_none_or(|v| v != "portable");
        #[cfg(target_arch = "x86_64")]
        let has = std::arch::is_x86_feature_detected!("ssse3");
        #[cfg(target_arch = "aarch64")]
        let has = true;
        allowed && has
    })
}

#[cfg(target_arch = "x86_64")]
use expand_ssse3 as expand_simd;

#[cfg(target_arch = "aarch64")]
use expand_neon as expand_simd;

/// [`expand_ssse3`] in NEON: the two byte tables in `tbl` registers, 8 code bytes' nibbles zipped
/// into 16 indices, both bytes looked up (`tbl`), and `st2` interleaving them into 16 bf16.
#[cfg(target_arch = "aarch64")]
unsafe fn expand_neon<'t>(codes: &[u8], group: usize, tables: impl Iterator<Item = &'t Table>, out: &mut [u16]) {
    use std::arch::aarch64::*;
    let gb = group / 2;
    let mask = vdup_n_u8(0x0F);
    for ((c, o), t) in codes.chunks_exact(gb).zip(out.chunks_exact_mut(group)).zip(tables) {
        let lo_t = vld1q_u8(t.0.as_ptr()); // byte 0 of entries 0..16
        let hi_t = vld1q_u8(t.0.as_ptr().add(16)); // byte 1
        for (c8, o16) in c.chunks_exact(8).zip(o.chunks_exact_mut(16)) {
            let b = vld1_u8(c8.as_ptr());
            let lo = vand_u8(b, mask);
            let hi = vshr_n_u8::<4>(b);
            let idx = vcombine_u8(vzip1_u8(lo, hi), vzip2_u8(lo, hi)); // 16 codes, element order
            let v = uint8x16x2_t(vqtbl1q_u8(lo_t, idx), vqtbl1q_u8(hi_t, idx));
            vst2q_u8(o16.as_mut_ptr().cast::<u8>(), v); // low byte, high byte: little-endian u16
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mx_scales_are_exact_powers_of_two_with_ldexp_ends() {
        let v = |s: u8, c: usize| f32::from_bits((mx_table(s).get(c) as u32) << 16);
        assert_eq!(v(127, 7), 6.0);
        assert_eq!(v(128, 1), 1.0);
        assert_eq!(v(0, 1), f32::from_bits(1 << 21), "0.5 · 2^-127 = 2^-128, a subnormal");
        // 0xFF is 2^128: zero stays zero, 0.5 gives 2^127, 1.0 and up overflow.
        assert_eq!(mx_table(255).get(0), 0);
        assert_eq!(mx_table(255).get(8), 0x8000);
        assert_eq!(v(255, 1), 2f32.powi(127));
        assert_eq!(v(255, 2), f32::INFINITY);
        assert_eq!(v(255, 15), f32::NEG_INFINITY);
    }

    #[test]
    fn low_nibble_is_the_even_element() {
        let t = fp4_table(1.0);
        let mut out = [0u16; 4];
        // 0x71: low 1 (0.5), high 7 (6.0); 0x8F: low 15 (-6.0), high 8 (-0.0).
        expand(&[0x71, 0x8F], 4, &[t], &mut out);
        assert_eq!(out, [f32_to_bf16(0.5), f32_to_bf16(6.0), f32_to_bf16(-6.0), 0x8000]);
    }

    #[test]
    fn the_shuffle_kernel_equals_the_portable_one() {
        // Every byte value under distinct tables, groups of 16, 32 and 128, a short last group.
        let codes: Vec<u8> = (0..4096u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        for group in [16usize, 32, 128] {
            for len in [codes.len(), codes.len() - 3] {
                let c = &codes[..len];
                let n = len * 2;
                let tables: Vec<Table> = (0..n.div_ceil(group))
                    .map(|g| fp4_table(f32::from_bits(0x3F80_0000 + (g as u32) * 0x0001_2345)))
                    .collect();
                let (mut a, mut b) = (vec![0u16; n], vec![0u16; n]);
                expand(c, group, &tables, &mut a);
                expand_body(c, group, tables.iter(), &mut b);
                assert_eq!(a, b, "group {group}, {len} bytes");
            }
        }
    }

    #[test]
    fn int4_is_offset_by_eight() {
        let t = int4_table(0.5, 0.0);
        assert_eq!(t.get(8), 0);
        assert_eq!(t.get(0), f32_to_bf16(-4.0));
        assert_eq!(t.get(15), f32_to_bf16(3.5));
    }

    #[test]
    fn e4m3_decodes_exactly() {
        assert_eq!(e4m3_to_f32(0x7E), 448.0);
        assert_eq!(e4m3_to_f32(0x01), 2f32.powi(-9));
        assert_eq!(e4m3_to_f32(0x38), 1.0);
        assert!(e4m3_to_f32(0xFF).is_nan());
        assert_eq!(e4m3_to_f32(0x80), -0.0);
    }
}
