//! fp8 (e4m3fn, e5m2) → bf16 / f16 / f32 with block, per-channel or per-tensor scales, bit-exact
//! with PyTorch: decode exactly to f32, one f32 multiply by the scale, one round-to-nearest-even to
//! the output type. Subnormals are kept; NaN stays NaN; e4m3fn has no infinity, e5m2 has.
//!
//! The inner loops are plain, branch-free Rust that LLVM vectorizes. They are compiled three times
//! (x86-64 baseline, AVX2+F16C+FMA, AVX-512) and the best version is picked at run time, so one
//! portable binary runs at the speed of the machine it lands on. Threading lives around the
//! kernels (rayon over bands of rows), never inside them.

use super::ScaleLayout;
use crate::checkpoint::Dtype;
use rayon::prelude::*;
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fp8Format {
    /// OCP e4m3fn: bias 7, no infinity, NaN at 0x7F/0xFF.
    E4M3,
    /// e5m2: the top byte of an IEEE f16 (bias 15, ±inf, NaNs).
    E5M2,
}

impl Fp8Format {
    pub fn of(d: Dtype) -> Option<Fp8Format> {
        match d {
            Dtype::F8_E4M3 => Some(Fp8Format::E4M3),
            Dtype::F8_E5M2 => Some(Fp8Format::E5M2),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutDtype {
    BF16,
    F16,
    F32,
}

impl OutDtype {
    pub fn bytes(self) -> usize {
        match self {
            OutDtype::BF16 | OutDtype::F16 => 2,
            OutDtype::F32 => 4,
        }
    }
    pub fn dtype(self) -> Dtype {
        match self {
            OutDtype::BF16 => Dtype::BF16,
            OutDtype::F16 => Dtype::F16,
            OutDtype::F32 => Dtype::F32,
        }
    }
    pub fn parse(s: &str) -> Option<OutDtype> {
        match s.to_ascii_lowercase().as_str() {
            "bf16" | "bfloat16" => Some(OutDtype::BF16),
            "f16" | "fp16" | "float16" => Some(OutDtype::F16),
            "f32" | "fp32" | "float32" => Some(OutDtype::F32),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum KernelError {
    #[error("weight has {got} bytes but shape {shape:?} needs {want}")]
    WeightSize { shape: Vec<u64>, got: usize, want: usize },
    #[error("output has room for {got} elements, the weight has {want}")]
    OutputSize { got: usize, want: usize },
    #[error("weight shape {shape:?}: fp8 dequantization needs 2 or more dimensions")]
    Rank { shape: Vec<u64> },
    #[error("scale has {got} values but {layout} scales for weight {shape:?} need {want}")]
    ScaleSize { layout: String, shape: Vec<u64>, got: usize, want: usize },
    #[error("scale dtype {0} is not supported (F32, BF16, F16 or F8_E8M0)")]
    ScaleDtype(Dtype),
    #[error("scale data has {got} bytes, {want} expected")]
    ScaleBytes { got: usize, want: usize },
}

/// Scale values as f32 from their stored bytes (little-endian).
pub fn scales_to_f32(bytes: &[u8], dtype: Dtype) -> Result<Vec<f32>, KernelError> {
    let width = match dtype {
        Dtype::F32 => 4,
        Dtype::BF16 | Dtype::F16 => 2,
        Dtype::F8_E8M0 => 1,
        d => return Err(KernelError::ScaleDtype(d)),
    };
    if bytes.len() % width != 0 {
        return Err(KernelError::ScaleBytes { got: bytes.len(), want: bytes.len() / width * width });
    }
    Ok(match dtype {
        Dtype::F32 => bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::BF16 => {
            bytes.chunks_exact(2).map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16)).collect()
        }
        Dtype::F16 => {
            bytes.chunks_exact(2).map(|c| half::f16::from_bits(u16::from_le_bytes([c[0], c[1]])).to_f32()).collect()
        }
        // ue8m0: 2^(code - 127); 0xFF is NaN. 2^-127 is an f32 subnormal, still exact.
        _ => bytes.iter().map(|&c| if c == 0xFF { f32::NAN } else { e8m0(c) }).collect(),
    })
}

/// One e4m3 code as f32, exactly (0x7F / 0xFF are NaN).
pub fn e4m3_to_f32(b: u8) -> f32 {
    decode::<E4M3>(b)
}

/// `2^(c - 127)` for an e8m0 code below 0xFF (`2^-127` is an f32 subnormal, still exact).
pub(crate) fn e8m0(c: u8) -> f32 {
    if c == 0 {
        f32::from_bits(0x0040_0000)
    } else {
        f32::from_bits((c as u32) << 23)
    }
}

// --- the element conversions (branch-free; `if` on values compiles to selects) --------------------

const E4M3: u8 = 0;
const E5M2: u8 = 1;

/// Exact decode of one fp8 code to f32.
#[inline(always)]
fn decode<const F: u8>(b: u8) -> f32 {
    let b = b as u32;
    let sign = (b & 0x80) << 24;
    let em = b & 0x7F;
    let mag = if F == E4M3 {
        // Normal: rebias the 4-bit exponent 7 → 127. Subnormal (exponent 0): m · 2^-9, exact.
        let normal = (em << 20).wrapping_add(120 << 23);
        let sub = ((em as f32) * (1.0 / 512.0)).to_bits();
        let v = if em < 8 { sub } else { normal };
        if em == 0x7F {
            0x7FC0_0000
        } else {
            v
        }
    } else {
        // Normal: rebias 15 → 127. Subnormal: m · 2^-16. Exponent 31: inf (m = 0) or a quiet NaN.
        let normal = (em << 21).wrapping_add(112 << 23);
        let sub = ((em as f32) * (1.0 / 65536.0)).to_bits();
        let m = em & 3;
        let special = 0x7F80_0000 | (m << 21) | if m != 0 { 0x0040_0000 } else { 0 };
        let v = if em < 4 { sub } else { normal };
        if em >= 0x7C {
            special
        } else {
            v
        }
    };
    f32::from_bits(mag | sign)
}

/// f32 → bf16, round to nearest even on the bits (what PyTorch does); NaN stays a quiet NaN.
#[inline(always)]
pub fn f32_to_bf16(x: f32) -> u16 {
    let b = x.to_bits();
    let rounded = b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16;
    if (b & 0x7FFF_FFFF) > 0x7F80_0000 {
        ((b >> 16) | 0x40) as u16
    } else {
        rounded as u16
    }
}

/// f32 → f16, IEEE round to nearest even (what PyTorch does), subnormals kept, overflow to inf.
#[inline(always)]
pub fn f32_to_f16(x: f32) -> u16 {
    let b = x.to_bits();
    let sign = (b >> 16) & 0x8000;
    let a = b & 0x7FFF_FFFF;
    // Normal f16 range: rebias 127 → 15 and round at mantissa bit 13.
    let r = a.wrapping_sub(112 << 23);
    let normal = r.wrapping_add(0xFFF + ((r >> 13) & 1)) >> 13;
    // Below 2^-14: let an f32 add do the rounding at 2^-24 (0.5 has that ulp).
    let sub = (f32::from_bits(a) + 0.5).to_bits().wrapping_sub(0x3F00_0000);
    let v = if a < 0x3880_0000 { sub } else { normal };
    let v = if a >= 0x477F_F000 { 0x7C00 } else { v };
    let v = if a > 0x7F80_0000 { 0x7E00 | ((a >> 13) & 0x1FF) } else { v };
    (sign | v) as u16
}

// --- the fast path: exponent rebias folded into the scale ---------------------------------------
//
// Reading the code's exponent+mantissa bits straight into f32 position (e4m3: bits 20..26,
// e5m2: bits 21..27) gives x = x_true · 2^-120 (e4m3) or · 2^-112 (e5m2) exactly, normal or (for
// subnormal codes) an f32 denormal. With S = s · 2^120 (exact: a power-of-two scaling), x · S is
// the same real number as x_true · s, so its one rounding is the same: bit-identical results with a
// sign-extend, a shift, a mask and one multiply. Valid while S is finite; `fast_ok` says when.

const E4M3_PRE: f32 = 1.329_228e36; // 2^120
const E5M2_PRE: f32 = 5.192_297e33; // 2^112

#[inline(always)]
fn fast_ok<const F: u8>(s: f32) -> bool {
    // False for NaN scales too: those take the exact path, whose rounding handles any NaN payload.
    s.abs() < if F == E4M3 { 128.0 } else { 32768.0 }
}

#[inline(always)]
fn prescale<const F: u8>(s: f32) -> f32 {
    s * if F == E4M3 { E4M3_PRE } else { E5M2_PRE }
}

/// Whether a run of codes holds only codes the fast path decodes exactly and fast: no NaN or
/// infinity codes, no subnormal codes (those would be f32 denormals, slow on some CPUs). Zero is
/// fine. Real weights almost never hold either, so nearly every segment takes the fast path.
#[inline(always)]
fn plain_codes<const F: u8>(c: &[u8]) -> bool {
    let mut bad = 0u8;
    for &b in c {
        let em = b & 0x7F;
        let odd = if F == E4M3 { (em == 0x7F) | ((em < 8) & (em != 0)) } else { (em >= 0x7C) | ((em < 4) & (em != 0)) };
        bad |= odd as u8;
    }
    bad == 0
}

/// x_true · 2^-120 (e4m3) or · 2^-112 (e5m2), exactly, for plain codes (see [`plain_codes`]).
#[inline(always)]
fn decode_raw<const F: u8>(b: u8) -> f32 {
    let w = (b as i8) as i32;
    if F == E4M3 {
        f32::from_bits(((w << 20) as u32) & 0x87F0_0000)
    } else {
        f32::from_bits(((w << 21) as u32) & 0x8FE0_0000)
    }
}

/// f32 → bf16 RNE for values produced by a multiply: any NaN is quiet and (here) canonical, so
/// adding the rounding bias cannot carry a NaN into the sign.
#[inline(always)]
fn bf16_rne_arith(x: f32) -> u16 {
    let b = x.to_bits();
    (b.wrapping_add(0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

// --- row kernels: one row, one scale per `bk` columns ----------------------------------------------
//
// Every segment is walked in fixed chunks of 128 codes (the block size of every fp8 checkpoint in
// the wild): a `[u8; 128]` chunk compiles to straight-line vector code with no tail handling, and a
// rare odd code (NaN, subnormal) sends only its own chunk to the exact general path.

const CHUNK: usize = 128;

/// One output element type: how to store a product computed on the fast or the general path.
trait Sink: Copy + Default {
    /// A product from the fast path (any NaN is quiet and canonical).
    fn fast(x: f32) -> Self;
    /// A product from the exact path (any NaN at all).
    #[inline(always)]
    fn exact(x: f32) -> Self {
        Self::fast(x)
    }
}

#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct Bf16(u16);
#[derive(Clone, Copy, Default)]
#[repr(transparent)]
struct F16(u16);

impl Sink for Bf16 {
    #[inline(always)]
    fn fast(x: f32) -> Self {
        Bf16(bf16_rne_arith(x))
    }
    #[inline(always)]
    fn exact(x: f32) -> Self {
        Bf16(f32_to_bf16(x))
    }
}

impl Sink for F16 {
    #[inline(always)]
    fn fast(x: f32) -> Self {
        F16(f32_to_f16(x))
    }
}

impl Sink for f32 {
    #[inline(always)]
    fn fast(x: f32) -> Self {
        x
    }
}

#[inline(always)]
fn chunk_fast<const F: u8, T: Sink>(c: &[u8; CHUNK], big: f32, o: &mut [T; CHUNK]) {
    for i in 0..CHUNK {
        o[i] = T::fast(decode_raw::<F>(c[i]) * big);
    }
}

/// 64-byte aligned scratch for one chunk's results.
#[repr(C, align(64))]
struct Tile<T>([T; CHUNK]);

/// Copy `len` bytes (a multiple of 16) with non-temporal stores. `dst` must be 16-byte aligned.
/// The caller issues the store fence once the row is done.
#[inline(always)]
unsafe fn stream_copy(dst: *mut u8, src: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{__m128i, _mm_load_si128, _mm_stream_si128};
        let mut i = 0;
        while i < len {
            _mm_stream_si128(dst.add(i).cast::<__m128i>(), _mm_load_si128(src.add(i).cast::<__m128i>()));
            i += 16;
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    std::ptr::copy_nonoverlapping(src, dst, len);
}

#[inline(always)]
fn store_fence() {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: sfence has no preconditions (SSE, part of the x86-64 baseline).
    unsafe {
        std::arch::x86_64::_mm_sfence()
    }
}

/// The fast chunk, written with streaming stores when the destination allows it.
#[inline(always)]
fn chunk_fast_nt<const F: u8, T: Sink>(c: &[u8; CHUNK], big: f32, o: &mut [T; CHUNK]) {
    let bytes = std::mem::size_of::<[T; CHUNK]>();
    if cfg!(target_arch = "x86_64") && (o.as_ptr() as usize) % 16 == 0 && bytes % 16 == 0 {
        let mut tile = Tile([T::default(); CHUNK]);
        chunk_fast::<F, T>(c, big, &mut tile.0);
        // SAFETY: `o` is exactly `bytes` long and 16-byte aligned; the tile is 64-byte aligned.
        unsafe { stream_copy(o.as_mut_ptr().cast::<u8>(), tile.0.as_ptr().cast::<u8>(), bytes) }
    } else {
        chunk_fast::<F, T>(c, big, o);
    }
}

#[inline(always)]
fn run_exact<const F: u8, T: Sink>(c: &[u8], s: f32, o: &mut [T]) {
    for (o, &c) in o.iter_mut().zip(c) {
        *o = T::exact(decode::<F>(c) * s);
    }
}

#[inline(always)]
fn run_fast<const F: u8, T: Sink>(c: &[u8], big: f32, o: &mut [T]) {
    for (o, &c) in o.iter_mut().zip(c) {
        *o = T::fast(decode_raw::<F>(c) * big);
    }
}

/// One run of codes sharing scale `s`; `nt` asks for streaming stores.
#[inline(always)]
fn segment<const F: u8, T: Sink>(c: &[u8], s: f32, o: &mut [T], nt: bool) {
    segment_with::<F, T>(c, s, o, nt, |_, _| false)
}

/// As [`segment`], offering each full chunk to `special` first (it returns whether it wrote it);
/// the table path plugs in here.
#[inline(always)]
fn segment_with<const F: u8, T: Sink>(
    c: &[u8],
    s: f32,
    o: &mut [T],
    nt: bool,
    mut special: impl FnMut(&[u8; CHUNK], &mut [T; CHUNK]) -> bool,
) {
    let fast = fast_ok::<F>(s);
    let big = prescale::<F>(s);
    let mut cc = c.chunks_exact(CHUNK);
    let mut oc = o.chunks_exact_mut(CHUNK);
    for (c, o) in (&mut cc).zip(&mut oc) {
        let c: &[u8; CHUNK] = c.try_into().expect("exact chunk");
        let o: &mut [T; CHUNK] = o.try_into().expect("exact chunk");
        if special(c, o) {
            continue;
        }
        if fast && plain_codes::<F>(c) {
            if nt {
                chunk_fast_nt::<F, T>(c, big, o);
            } else {
                chunk_fast::<F, T>(c, big, o);
            }
        } else {
            run_exact::<F, T>(c, s, o);
        }
    }
    let (c, o) = (cc.remainder(), oc.into_remainder());
    if fast && plain_codes::<F>(c) {
        run_fast::<F, T>(c, big, o);
    } else {
        run_exact::<F, T>(c, s, o);
    }
}

/// `c` and `o` hold whole rows of `cols` elements that all share `scales` (one per `bk` columns).
#[inline(always)]
fn rows<const F: u8, T: Sink>(c: &[u8], cols: usize, scales: &[f32], bk: usize, o: &mut [T], nt: bool) {
    for (c, o) in c.chunks(cols).zip(o.chunks_mut(cols)) {
        for ((c, o), &s) in c.chunks(bk).zip(o.chunks_mut(bk)).zip(scales) {
            segment::<F, T>(c, s, o, nt);
        }
    }
    if nt {
        store_fence();
    }
}

// The element types are plain u16 / f32 on the outside; these views are layout-identical.
#[inline(always)]
fn as_bf16(o: &mut [u16]) -> &mut [Bf16] {
    // SAFETY: Bf16 is #[repr(transparent)] over u16: same size, alignment and validity.
    unsafe { std::slice::from_raw_parts_mut(o.as_mut_ptr().cast(), o.len()) }
}

#[inline(always)]
fn as_f16(o: &mut [u16]) -> &mut [F16] {
    // SAFETY: as for `as_bf16`.
    unsafe { std::slice::from_raw_parts_mut(o.as_mut_ptr().cast(), o.len()) }
}

#[inline(always)]
fn row_bf16<const F: u8>(c: &[u8], cols: usize, scales: &[f32], bk: usize, o: &mut [u16], nt: bool) {
    rows::<F, Bf16>(c, cols, scales, bk, as_bf16(o), nt)
}

#[inline(always)]
fn row_f16<const F: u8>(c: &[u8], cols: usize, scales: &[f32], bk: usize, o: &mut [u16], nt: bool) {
    rows::<F, F16>(c, cols, scales, bk, as_f16(o), nt)
}

#[inline(always)]
fn row_f32<const F: u8>(c: &[u8], cols: usize, scales: &[f32], bk: usize, o: &mut [f32], nt: bool) {
    rows::<F, f32>(c, cols, scales, bk, o, nt)
}

/// The widen ceiling: u8 → u16 with ordinary stores, the memory traffic of fp8 → bf16.
#[inline(always)]
fn widen_body(c: &[u8], o: &mut [u16]) {
    for (o, &c) in o.iter_mut().zip(c) {
        *o = c as u16;
    }
}

// --- e4m3 → bf16 through a mantissa table (x86-64, AVX2 and up) ----------------------------------
//
// For a fixed scale s and a normal code (exponent field e ≥ 1, mantissa m), x·s = 2^(e-1)·(x₁(m)·s)
// where x₁(m) is the code with e = 1. Scaling by a power of two commutes with rounding while every
// value stays normal, so bf16(x·s) = bf16(x₁(m)·s) + ((e-1) << 7), with the code's sign XORed in.
// T[m] = bf16(f32(x₁(m)·s)) is computed with the reference arithmetic itself; an 8-entry u16 table
// is one `pshufb`. Valid for 2^-119 ≤ |s| ≤ 2^117 (all 15·8 products then normal and finite);
// chunks holding zero, subnormal or NaN codes take the other paths.

#[cfg(target_arch = "x86_64")]
mod lut {
    use super::*;
    use std::arch::x86_64::*;

    #[inline(always)]
    pub fn scale_ok(s: f32) -> bool {
        let a = s.abs();
        (f32::from_bits(0x0400_0000)..=f32::from_bits(0x7A00_0000)).contains(&a)
        // 2^-119 ..= 2^117; false for NaN
    }

    /// No zero, subnormal or NaN code: every code has exponent field 1..15 and is not 0x7F/0xFF.
    #[inline(always)]
    pub fn table_codes(c: &[u8]) -> bool {
        !c.iter().fold(false, |bad, &b| {
            let em = b & 0x7F;
            bad | (em < 8) | (em == 0x7F)
        })
    }

    /// T[m] - 0x80 (one exponent step, so that adding e << 7 adds e - 1), as 16 table bytes.
    #[inline(always)]
    pub fn table(s: f32) -> [u16; 8] {
        let mut t = [0u16; 8];
        for (m, t) in t.iter_mut().enumerate() {
            *t = f32_to_bf16(decode::<E4M3>(0x08 | m as u8) * s).wrapping_sub(0x80);
        }
        t
    }

    /// 128 codes through the table. `o` gets the bf16 bits.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub unsafe fn chunk(c: &[u8; CHUNK], t: &[u16; 8], o: &mut [u16; CHUNK], nt: bool) {
        let tbl = _mm256_broadcastsi128_si256(_mm_loadu_si128(t.as_ptr().cast()));
        let (m7, m78, sgn) = (_mm256_set1_epi16(7), _mm256_set1_epi16(0x78), _mm256_set1_epi16(0x8000u16 as i16));
        let (mul, add) = (_mm256_set1_epi16(0x0202), _mm256_set1_epi16(0x0100));
        let z = _mm256_setzero_si256();
        let aligned = nt && (o.as_ptr() as usize) % 32 == 0;
        let mut i = 0;
        while i < CHUNK {
            let v = _mm256_loadu_si256(c.as_ptr().add(i).cast());
            let f = |w: __m256i| {
                // pshufb byte indices (2m, 2m+1) pick entry m of the table.
                let idx = _mm256_add_epi16(_mm256_mullo_epi16(_mm256_and_si256(w, m7), mul), add);
                let base = _mm256_shuffle_epi8(tbl, idx);
                let e7 = _mm256_slli_epi16(_mm256_and_si256(w, m78), 4);
                let sg = _mm256_and_si256(_mm256_slli_epi16(w, 8), sgn);
                _mm256_xor_si256(_mm256_add_epi16(base, e7), sg)
            };
            // Bytes widen to words within each 128-bit lane; the two permutes restore the order.
            let a = f(_mm256_unpacklo_epi8(v, z));
            let b = f(_mm256_unpackhi_epi8(v, z));
            let lo = _mm256_permute2x128_si256(a, b, 0x20);
            let hi = _mm256_permute2x128_si256(a, b, 0x31);
            let dst = o.as_mut_ptr().add(i).cast::<__m256i>();
            if aligned {
                _mm256_stream_si256(dst, lo);
                _mm256_stream_si256(dst.add(1), hi);
            } else {
                _mm256_storeu_si256(dst, lo);
                _mm256_storeu_si256(dst.add(1), hi);
            }
            i += 32;
        }
    }

    /// Rows of e4m3 codes to bf16 that share `scales`: each segment's table is built once for all
    /// the rows (a block row of 128 rows shares one scale row), then the table path runs where it
    /// applies and the other paths elsewhere.
    #[inline]
    #[target_feature(enable = "avx2")]
    pub unsafe fn rows_bf16_e4m3(c: &[u8], cols: usize, scales: &[f32], bk: usize, o: &mut [u16], nt: bool) {
        let tables: Vec<Option<[u16; 8]>> = scales.iter().map(|&s| scale_ok(s).then(|| table(s))).collect();
        // Common case (DeepSeek-style 128-wide blocks, rows a whole number of chunks, every scale in
        // the table's range): walk each row chunk by chunk, one table per chunk, with no per-segment
        // set-up. Chunks with zero / subnormal / NaN codes take the general path one by one.
        if bk % CHUNK == 0 && cols % CHUNK == 0 && tables.iter().all(Option::is_some) {
            let per = bk / CHUNK;
            for (c, o) in c.chunks_exact(cols).zip(o.chunks_exact_mut(cols)) {
                for (j, (c, o)) in c.chunks_exact(CHUNK).zip(o.chunks_exact_mut(CHUNK)).enumerate() {
                    let (c, o): (&[u8; CHUNK], &mut [u16; CHUNK]) = (c.try_into().unwrap(), o.try_into().unwrap());
                    match &tables[j / per] {
                        Some(t) if table_codes(c) => chunk(c, t, o, nt),
                        _ => segment::<E4M3, Bf16>(c, scales[j / per], as_bf16(o), nt),
                    }
                }
            }
            if nt {
                store_fence();
            }
            return;
        }
        let o = as_bf16(o);
        for (c, o) in c.chunks(cols).zip(o.chunks_mut(cols)) {
            for (((c, o), &s), t) in c.chunks(bk).zip(o.chunks_mut(bk)).zip(scales).zip(&tables) {
                match t {
                    None => segment::<E4M3, Bf16>(c, s, o, nt),
                    Some(t) => segment_with::<E4M3, Bf16>(c, s, o, nt, |c, o| {
                        table_codes(c) && {
                            // SAFETY: AVX2 is enabled for this function (the only caller checks the
                            // CPU); Bf16 is #[repr(transparent)] over u16.
                            unsafe { chunk(c, t, &mut *(o as *mut [Bf16; CHUNK]).cast::<[u16; CHUNK]>(), nt) };
                            true
                        }
                    }),
                }
            }
        }
        if nt {
            store_fence();
        }
    }
}

type Seg16 = unsafe fn(&[u8], usize, &[f32], usize, &mut [u16], bool);
type Seg32 = unsafe fn(&[u8], usize, &[f32], usize, &mut [f32], bool);
type Widen = unsafe fn(&[u8], &mut [u16]);

/// Outputs at least this large are written with streaming stores (when the version allows).
pub const NT_MIN_BYTES: usize = 4 << 20;

/// One instruction-set version of every kernel.
#[derive(Clone, Copy)]
pub struct Kernels {
    pub isa: &'static str,
    /// Whether large outputs use streaming stores (`CKPTPILOT_NT=0` turns them off, for comparison).
    pub stream: bool,
    bf16: [Seg16; 2],
    f16: [Seg16; 2],
    f32: [Seg32; 2],
    widen: Widen,
}

macro_rules! version {
    ($modname:ident, $isa:literal $(, $feat:literal)?) => {
        mod $modname {
            use super::*;
            $(#[target_feature(enable = $feat)])? pub unsafe fn bf16_e4m3(c: &[u8], cols: usize, s: &[f32], bk: usize, o: &mut [u16], nt: bool) { row_bf16::<E4M3>(c, cols, s, bk, o, nt) }
            $(#[target_feature(enable = $feat)])? pub unsafe fn bf16_e5m2(c: &[u8], cols: usize, s: &[f32], bk: usize, o: &mut [u16], nt: bool) { row_bf16::<E5M2>(c, cols, s, bk, o, nt) }
            $(#[target_feature(enable = $feat)])? pub unsafe fn f16_e4m3(c: &[u8], cols: usize, s: &[f32], bk: usize, o: &mut [u16], nt: bool) { row_f16::<E4M3>(c, cols, s, bk, o, nt) }
            $(#[target_feature(enable = $feat)])? pub unsafe fn f16_e5m2(c: &[u8], cols: usize, s: &[f32], bk: usize, o: &mut [u16], nt: bool) { row_f16::<E5M2>(c, cols, s, bk, o, nt) }
            $(#[target_feature(enable = $feat)])? pub unsafe fn f32_e4m3(c: &[u8], cols: usize, s: &[f32], bk: usize, o: &mut [f32], nt: bool) { row_f32::<E4M3>(c, cols, s, bk, o, nt) }
            $(#[target_feature(enable = $feat)])? pub unsafe fn f32_e5m2(c: &[u8], cols: usize, s: &[f32], bk: usize, o: &mut [f32], nt: bool) { row_f32::<E5M2>(c, cols, s, bk, o, nt) }
            $(#[target_feature(enable = $feat)])? pub unsafe fn widen(c: &[u8], o: &mut [u16]) { widen_body(c, o) }
            pub const KERNELS: Kernels = Kernels {
                isa: $isa,
                stream: cfg!(target_arch = "x86_64"),
                bf16: [bf16_e4m3, bf16_e5m2],
                f16: [f16_e4m3, f16_e5m2],
                f32: [f32_e4m3, f32_e5m2],
                widen,
            };
        }
    };
}

version!(portable, "portable");
#[cfg(target_arch = "x86_64")]
version!(avx2, "avx2", "avx2,fma,f16c,bmi2");
#[cfg(target_arch = "x86_64")]
version!(avx512, "avx512", "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi2");

/// The AVX2-and-up versions route e4m3 → bf16 through the mantissa table.
#[cfg(target_arch = "x86_64")]
mod with_table {
    use super::*;
    #[target_feature(enable = "avx2,fma,f16c,bmi2")]
    pub unsafe fn bf16_e4m3_avx2(c: &[u8], cols: usize, s: &[f32], bk: usize, o: &mut [u16], nt: bool) {
        lut::rows_bf16_e4m3(c, cols, s, bk, o, nt)
    }
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c,bmi2")]
    pub unsafe fn bf16_e4m3_avx512(c: &[u8], cols: usize, s: &[f32], bk: usize, o: &mut [u16], nt: bool) {
        lut::rows_bf16_e4m3(c, cols, s, bk, o, nt)
    }
    pub const AVX2: Kernels = Kernels { bf16: [bf16_e4m3_avx2, avx2::KERNELS.bf16[1]], ..avx2::KERNELS };
    pub const AVX512: Kernels = Kernels { bf16: [bf16_e4m3_avx512, avx512::KERNELS.bf16[1]], ..avx512::KERNELS };
}

impl Kernels {
    /// The best version this CPU runs, chosen once. `CKPTPILOT_ISA=portable|avx2|avx512` lowers it
    /// (for benchmarks and tests of the other paths); it never raises it past what the CPU has.
    pub fn best() -> &'static Kernels {
        static K: OnceLock<Kernels> = OnceLock::new();
        K.get_or_init(|| {
            let want = std::env::var("CKPTPILOT_ISA").unwrap_or_default();
            let mut k = Kernels::available()
                .into_iter()
                .rev()
                .find(|k| want.is_empty() || k.isa == want)
                .unwrap_or(portable::KERNELS);
            if std::env::var("CKPTPILOT_NT").as_deref() == Ok("0") {
                k.stream = false;
            }
            k
        })
    }

    /// Every version this CPU can run, slowest first.
    pub fn available() -> Vec<Kernels> {
        #[cfg_attr(not(target_arch = "x86_64"), allow(unused_mut))] // elsewhere only the portable one
        let mut v = vec![portable::KERNELS];
        #[cfg(target_arch = "x86_64")]
        {
            let x = |f: &str| match f {
                "avx2" => std::arch::is_x86_feature_detected!("avx2"),
                "fma" => std::arch::is_x86_feature_detected!("fma"),
                "f16c" => std::arch::is_x86_feature_detected!("f16c"),
                "bmi2" => std::arch::is_x86_feature_detected!("bmi2"),
                "avx512f" => std::arch::is_x86_feature_detected!("avx512f"),
                "avx512bw" => std::arch::is_x86_feature_detected!("avx512bw"),
                "avx512vl" => std::arch::is_x86_feature_detected!("avx512vl"),
                "avx512dq" => std::arch::is_x86_feature_detected!("avx512dq"),
                _ => false,
            };
            if ["avx2", "fma", "f16c", "bmi2"].iter().all(|f| x(f)) {
                v.push(with_table::AVX2);
                if ["avx512f", "avx512bw", "avx512vl", "avx512dq"].iter().all(|f| x(f)) {
                    v.push(with_table::AVX512);
                }
            }
        }
        v
    }

    /// Whole rows of `cols` sharing one scale vector: `scales[j]` applies to columns `j*bk ..`.
    #[allow(clippy::too_many_arguments)] // mirrors the kernel signature it dispatches to
    fn rows(&self, fmt: Fp8Format, c: &[u8], cols: usize, scales: &[f32], bk: usize, out: OutRow<'_>, nt: bool) {
        let f = fmt as usize;
        debug_assert!(scales.len() >= cols.div_ceil(bk.max(1)));
        // SAFETY: `self` came from `available()`, which only lists versions whose target features
        // this CPU reports; the kernels themselves are safe code.
        unsafe {
            match out {
                OutRow::BF16(o) => (self.bf16[f])(c, cols, scales, bk, o, nt),
                OutRow::F16(o) => (self.f16[f])(c, cols, scales, bk, o, nt),
                OutRow::F32(o) => (self.f32[f])(c, cols, scales, bk, o, nt),
            }
        }
    }

    /// The widen ceiling kernel, compiled for the same instruction set.
    pub fn widen(&self, c: &[u8], o: &mut [u16]) {
        // SAFETY: as in `seg`.
        unsafe { (self.widen)(c, o) }
    }
}

/// A typed output buffer.
pub enum Output<'a> {
    BF16(&'a mut [u16]),
    F16(&'a mut [u16]),
    F32(&'a mut [f32]),
}

enum OutRow<'a> {
    BF16(&'a mut [u16]),
    F16(&'a mut [u16]),
    F32(&'a mut [f32]),
}

impl Output<'_> {
    fn len(&self) -> usize {
        match self {
            Output::BF16(o) | Output::F16(o) => o.len(),
            Output::F32(o) => o.len(),
        }
    }
}

/// Scales resolved to f32 with their layout.
#[derive(Debug, Clone, Copy)]
pub struct Scales<'a> {
    pub values: &'a [f32],
    pub layout: ScaleLayout,
}

/// How many scale values a weight of `shape` needs under `layout` (leading dims multiply).
pub fn scale_count(layout: ScaleLayout, shape: &[u64]) -> Option<usize> {
    if shape.len() < 2 {
        return None;
    }
    let (lead, n, k) = (&shape[..shape.len() - 2], shape[shape.len() - 2], shape[shape.len() - 1]);
    let l: u64 = lead.iter().product();
    let per = match layout {
        ScaleLayout::Block { n: bn, k: bk } => n.div_ceil(bn) * k.div_ceil(bk),
        ScaleLayout::Channel => n,
        ScaleLayout::Tensor => 1,
    };
    usize::try_from(l.checked_mul(per)?).ok()
}

/// Dequantize a whole fp8 tensor of `shape` (`[..., N, K]`, leading dims are stacked matrices,
/// e.g. fused experts) into `out`, using the current rayon pool for bands of rows.
/// A per-tensor layout with one value per leading matrix is accepted too.
pub fn dequantize(
    codes: &[u8],
    shape: &[u64],
    fmt: Fp8Format,
    scales: Scales<'_>,
    out: Output<'_>,
) -> Result<(), KernelError> {
    dequantize_with(Kernels::best(), codes, shape, fmt, scales, out)
}

/// A dequantized tensor in its output type, owned: what [`dequantize_new`] returns.
pub enum Dequantized {
    /// bf16 or f16 bits.
    U16(Vec<u16>),
    F32(Vec<f32>),
}

impl Dequantized {
    /// The values as little-endian bytes (the layout of a safetensors tensor or a numpy array).
    #[cfg(target_endian = "little")]
    pub fn as_le_bytes(&self) -> &[u8] {
        let (ptr, len) = match self {
            Dequantized::U16(v) => (v.as_ptr().cast::<u8>(), v.len() * 2),
            Dequantized::F32(v) => (v.as_ptr().cast::<u8>(), v.len() * 4),
        };
        // SAFETY: u16 and f32 have no padding and every byte of them is initialized; the slice
        // borrows `self`, so the vector outlives it.
        unsafe { std::slice::from_raw_parts(ptr, len) }
    }
}

/// [`dequantize`] into a new buffer of `out` (for callers without one, such as the Python API).
pub fn dequantize_new(
    codes: &[u8],
    shape: &[u64],
    fmt: Fp8Format,
    scales: Scales<'_>,
    out: OutDtype,
) -> Result<Dequantized, KernelError> {
    let n = codes.len();
    Ok(match out {
        OutDtype::F32 => {
            let mut o = vec![0f32; n];
            dequantize(codes, shape, fmt, scales, Output::F32(&mut o))?;
            Dequantized::F32(o)
        }
        OutDtype::BF16 | OutDtype::F16 => {
            let mut o = vec![0u16; n];
            let typed = if out == OutDtype::BF16 { Output::BF16(&mut o) } else { Output::F16(&mut o) };
            dequantize(codes, shape, fmt, scales, typed)?;
            Dequantized::U16(o)
        }
    })
}

pub fn dequantize_with(
    k: &Kernels,
    codes: &[u8],
    shape: &[u64],
    fmt: Fp8Format,
    scales: Scales<'_>,
    out: Output<'_>,
) -> Result<(), KernelError> {
    if shape.len() < 2 {
        return Err(KernelError::Rank { shape: shape.to_vec() });
    }
    let numel = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(usize::try_from(d).ok()?));
    let numel =
        numel.ok_or_else(|| KernelError::WeightSize { shape: shape.to_vec(), got: codes.len(), want: usize::MAX })?;
    if codes.len() != numel {
        return Err(KernelError::WeightSize { shape: shape.to_vec(), got: codes.len(), want: numel });
    }
    if out.len() != numel {
        return Err(KernelError::OutputSize { got: out.len(), want: numel });
    }
    let n = shape[shape.len() - 2] as usize;
    let kcols = shape[shape.len() - 1] as usize;
    let mats = numel.checked_div(n * kcols).unwrap_or(0);
    let want = scale_count(scales.layout, shape).unwrap_or(usize::MAX);
    // Per-tensor scales may also be one per stacked matrix ([E] or [E,1]); a single value serves all.
    let per_tensor_single = matches!(scales.layout, ScaleLayout::Tensor) && scales.values.len() == 1;
    if scales.values.len() != want && !per_tensor_single {
        return Err(KernelError::ScaleSize {
            layout: scales.layout.to_string(),
            shape: shape.to_vec(),
            got: scales.values.len(),
            want,
        });
    }
    if numel == 0 {
        return Ok(());
    }
    let is_bf16 = matches!(out, Output::BF16(_));
    // Streaming stores once the output outgrows the caches: it will not be read back soon, and
    // they skip the read-for-ownership of every destination line. Measured on [18432, 7168]
    // (AVX2 EPYC, alternating runs): 1 thread 0.69-0.91x of widen vs 0.65-0.73x with ordinary
    // stores; 2 threads 1.12-1.34x vs 1.05-1.12x.
    let out_bytes = numel * if matches!(out, Output::F32(_)) { 4 } else { 2 };
    let nt = k.stream && out_bytes >= NT_MIN_BYTES;
    // Bands of rows: one block row for block scales (the scale row is shared), else ~1 MiB of codes.
    let band = match scales.layout {
        ScaleLayout::Block { n: bn, .. } => (bn as usize).max(1),
        _ => ((1 << 20) / kcols.max(1)).clamp(1, 4096),
    };
    let s = scales.values;
    // Bands never straddle two stacked matrices, so block rows stay aligned to each matrix, and a
    // band of a block layout is one block row: all its rows share one row of scales.
    let band_rows = band.min(n.max(1));
    let bands_per_mat = n.div_ceil(band_rows);
    let work = |b: usize, c: &[u8], mut o: OutRow<'_>| {
        let (m, bi) = (b / bands_per_mat, b % bands_per_mat);
        let rn0 = bi * band_rows;
        let nrows = band_rows.min(n - rn0);
        match scales.layout {
            ScaleLayout::Block { n: bn, k: bk } => {
                let (bn, bk) = (bn as usize, bk as usize);
                let gk = kcols.div_ceil(bk);
                let base = m * n.div_ceil(bn) * gk + (rn0 / bn) * gk;
                k.rows(fmt, c, kcols, &s[base..base + gk], bk, o, nt);
            }
            ScaleLayout::Tensor => {
                k.rows(fmt, c, kcols, if per_tensor_single { &s[..1] } else { &s[m..m + 1] }, kcols, o, nt)
            }
            ScaleLayout::Channel => {
                for i in 0..nrows {
                    let (cs, ce) = (i * kcols, (i + 1) * kcols);
                    let row = match &mut o {
                        OutRow::BF16(x) => OutRow::BF16(&mut x[cs..ce]),
                        OutRow::F16(x) => OutRow::F16(&mut x[cs..ce]),
                        OutRow::F32(x) => OutRow::F32(&mut x[cs..ce]),
                    };
                    k.rows(fmt, &c[cs..ce], kcols, &s[m * n + rn0 + i..][..1], kcols, row, nt);
                }
            }
        }
    };
    let band_spans: Vec<(usize, usize)> = (0..mats * bands_per_mat)
        .map(|b| {
            let (m, bi) = (b / bands_per_mat, b % bands_per_mat);
            let r0 = m * n + bi * band_rows;
            let nrows = band_rows.min(n - bi * band_rows);
            (r0 * kcols, (r0 + nrows) * kcols)
        })
        .collect();
    match out {
        Output::BF16(o) | Output::F16(o) => {
            let wrap: fn(&mut [u16]) -> OutRow<'_> = if is_bf16 { |p| OutRow::BF16(p) } else { |p| OutRow::F16(p) };
            split_spans(o, &band_spans).into_par_iter().enumerate().for_each(|(b, piece)| {
                let (cs, ce) = band_spans[b];
                work(b, &codes[cs..ce], wrap(piece));
            });
        }
        Output::F32(o) => {
            split_spans(o, &band_spans).into_par_iter().enumerate().for_each(|(b, piece)| {
                let (cs, ce) = band_spans[b];
                work(b, &codes[cs..ce], OutRow::F32(piece));
            });
        }
    }
    Ok(())
}

/// Cut `buf` into the consecutive spans (which tile it from 0).
fn split_spans<'a, T>(mut buf: &'a mut [T], spans: &[(usize, usize)]) -> Vec<&'a mut [T]> {
    let mut v = Vec::with_capacity(spans.len());
    for &(s, e) in spans {
        let (head, tail) = std::mem::take(&mut buf).split_at_mut(e - s);
        v.push(head);
        buf = tail;
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_known_values() {
        assert_eq!(decode::<E4M3>(0x7E), 448.0);
        assert_eq!(decode::<E4M3>(0xFE), -448.0);
        assert_eq!(decode::<E4M3>(0x01), 2f32.powi(-9));
        assert_eq!(decode::<E4M3>(0x08), 2f32.powi(-6));
        assert!(decode::<E4M3>(0x7F).is_nan() && decode::<E4M3>(0xFF).is_nan());
        assert_eq!(decode::<E4M3>(0x80).to_bits(), 0x8000_0000);
        assert_eq!(decode::<E5M2>(0x7B), 57344.0);
        assert_eq!(decode::<E5M2>(0x7C), f32::INFINITY);
        assert_eq!(decode::<E5M2>(0xFC), f32::NEG_INFINITY);
        assert!(decode::<E5M2>(0x7D).is_nan());
        assert_eq!(decode::<E5M2>(0x01), 2f32.powi(-16));
    }

    #[test]
    fn rounding_ties_and_subnormals() {
        assert_eq!(f32_to_bf16(1.0 + 2f32.powi(-8)), 0x3F80);
        assert_eq!(f32_to_bf16(1.0 + 3.0 * 2f32.powi(-8)), 0x3F82);
        assert_eq!(f32_to_bf16(1e-40), 0x0001);
        assert_eq!(f32_to_bf16(f32::MAX), 0x7F80);
        for x in [1.0f32, 65504.0, 65520.0, 1e-5, 6e-8, 3e-8, 2.9e-8, -0.0, 1e-40, f32::INFINITY, 0.1, 1234.567] {
            assert_eq!(f32_to_f16(x), half::f16::from_f32(x).to_bits(), "{x}");
        }
    }

    #[test]
    fn f16_matches_half_on_many_values() {
        let mut x = 0x0000_0001u32;
        while x < 0x7F80_0000 {
            let f = f32::from_bits(x);
            assert_eq!(f32_to_f16(f), half::f16::from_f32(f).to_bits(), "{x:#x}");
            x = x.wrapping_mul(3).wrapping_add(0x0123_4567) & 0x7FFF_FFFF;
            if x % 7 == 0 {
                x = (x >> 3) | 1;
            }
            if x == 1 {
                break;
            }
        }
    }

    #[test]
    fn every_version_agrees_on_every_code() {
        let codes: Vec<u8> = (0..=255u8).collect();
        let shape = [1u64, 256];
        for fmt in [Fp8Format::E4M3, Fp8Format::E5M2] {
            let mut reference: Option<Vec<u16>> = None;
            for k in Kernels::available() {
                let mut o = vec![0u16; 256];
                dequantize_with(
                    &k,
                    &codes,
                    &shape,
                    fmt,
                    Scales { values: &[0.37], layout: ScaleLayout::Tensor },
                    Output::BF16(&mut o),
                )
                .unwrap();
                match &reference {
                    None => reference = Some(o),
                    Some(r) => assert_eq!(r, &o, "{} differs", k.isa),
                }
            }
        }
    }

    #[test]
    fn stacked_matrices_use_their_own_scales() {
        // Fused experts: [E=2, N=130, K=3] with block scales [2, 2, 1]; each matrix must equal its
        // own 2-D dequantization.
        let codes: Vec<u8> = (0..2 * 130 * 3).map(|i| (i * 37 % 251) as u8 & 0x7E).collect();
        let scales = [0.5f32, 2.0, 0.25, 4.0];
        let mut all = vec![0u16; codes.len()];
        let lay = ScaleLayout::Block { n: 128, k: 128 };
        dequantize(
            &codes,
            &[2, 130, 3],
            Fp8Format::E4M3,
            Scales { values: &scales, layout: lay },
            Output::BF16(&mut all),
        )
        .unwrap();
        for m in 0..2 {
            let mut one = vec![0u16; 390];
            let c = &codes[m * 390..(m + 1) * 390];
            dequantize(
                c,
                &[130, 3],
                Fp8Format::E4M3,
                Scales { values: &scales[m * 2..m * 2 + 2], layout: lay },
                Output::BF16(&mut one),
            )
            .unwrap();
            assert_eq!(&all[m * 390..(m + 1) * 390], &one[..]);
        }
    }

    #[test]
    fn shape_errors_are_reported() {
        let mut o = vec![0u16; 4];
        let e = dequantize(
            &[0; 3],
            &[2, 2],
            Fp8Format::E4M3,
            Scales { values: &[1.0], layout: ScaleLayout::Tensor },
            Output::BF16(&mut o),
        );
        assert!(matches!(e, Err(KernelError::WeightSize { .. })));
        let e = dequantize(
            &[0; 4],
            &[2, 2],
            Fp8Format::E4M3,
            Scales { values: &[1.0, 2.0], layout: ScaleLayout::Block { n: 1, k: 1 } },
            Output::BF16(&mut o),
        );
        assert!(matches!(e, Err(KernelError::ScaleSize { .. })));
    }
}
