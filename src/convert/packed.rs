//! `ckptpilot dequant` for 4-bit checkpoints: which tensors are read together and what they become.
//!
//! - **MXFP4, gpt-oss** (`quant_method: mxfp4`): `<p>_blocks` U8 [E, N, G, 16] with `<p>_scales` U8
//!   (e8m0) [E, N, G] become `<p>` bf16 [E, G·32, N] — transformers' name and its [E, in, out]
//!   layout, what `transformers.integrations.mxfp4.convert_moe_packed_tensors` returns and what
//!   vLLM's gpt-oss loader takes for unquantized experts (vllm/model_executor/models/gpt_oss.py).
//! - **NVFP4, compressed-tensors `nvfp4-pack-quantized`**: `<m>.weight_packed` U8 [N, K/2],
//!   `<m>.weight_scale` F8_E4M3 [N, K/16], `<m>.weight_global_scale` F32 [1] → `<m>.weight` bf16 [N, K]
//!   (compressed_tensors/compressors/quantized_compressors/fp4_quantized.py).
//! - **INT4 `pack-quantized`** (W4A16): `<m>.weight_packed` I32 [N, ⌈K/8⌉], `<m>.weight_shape` I64 [2],
//!   `<m>.weight_scale` [N, G], optional `<m>.weight_zero_point` I32 [⌈N/8⌉, G] (packed along N) →
//!   `<m>.weight` bf16 [N, K] (compressed_tensors/compressors/quantized_compressors/pack_quantized.py).
//!
//! The companions are dropped; everything else is copied. The arithmetic is [`crate::quant::fp4`].

use super::{as_bytes, grow, Bufs, ConvertError, Item, Opened, BAND_BYTES};
use crate::checkpoint::{Checkpoint, Dtype, TensorRef};
use crate::quant::fp8::{scales_to_f32, KernelError};
use crate::quant::scheme::QuantMethod;
use crate::quant::QuantScheme;
use std::collections::{HashMap, HashSet};

/// A 4-bit format with per-group scales along the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Packed4 {
    /// e2m1 codes, e4m3 group scales of 16 divided by a global f32 scale.
    Nvfp4,
    /// Signed int4 (`nibble - 8`), group scales, optional zero points.
    Int4 { group: u64 },
}

/// What dequant makes of a 4-bit checkpoint: for each primary tensor (blocks / weight_packed),
/// the output tensor's name, shape and how it is made; and the companions to drop.
pub(super) struct Plan4<'a> {
    pub primary: HashMap<String, (String, Vec<u64>, Item<'a>)>,
    pub drop: HashSet<String>,
}

/// The compressed-tensors format every config group agrees on, if the checkpoint has one.
fn ct_format(ck: &Checkpoint, scheme: &QuantScheme) -> Option<String> {
    scheme.format.clone().or_else(|| {
        let q = ck.config_json.as_ref()?.get("quantization_config")?;
        let mut formats = q.get("config_groups")?.as_object()?.values().filter_map(|g| g.get("format")?.as_str());
        let first = formats.next()?;
        formats.all(|f| f == first).then(|| first.to_string())
    })
}

/// `num_bits` of the weights of every config group (None when they differ or are absent).
fn ct_bits(ck: &Checkpoint) -> Option<u64> {
    let q = ck.config_json.as_ref()?.get("quantization_config")?;
    let mut bits = q
        .get("config_groups")?
        .as_object()?
        .values()
        .map(|g| g.get("weights").and_then(|w| w.get("num_bits")).and_then(|b| b.as_u64()));
    let first = bits.next()??;
    bits.all(|b| b == Some(first)).then_some(first)
}

/// The 4-bit plan, `Ok(None)` when the checkpoint is not one of these formats. Weights of another
/// format left beside them (fp8 tensors in an MXFP4 checkpoint) are refused, never copied quantized.
pub(super) fn plan<'a>(ck: &'a Checkpoint, scheme: &QuantScheme) -> Result<Option<Plan4<'a>>, ConvertError> {
    let p = plan_format(ck, scheme)?;
    if let Some(p) = &p {
        let stray: Vec<String> = ck
            .tensors()
            .filter(|t| t.entry.dtype.is_fp8_weight() && !p.drop.contains(&t.entry.name))
            .take(3)
            .map(|t| {
                format!(
                    "{}: {} weight in a {} checkpoint, which this conversion does not read",
                    t.entry.name, t.entry.dtype, scheme.method
                )
            })
            .collect();
        if !stray.is_empty() {
            return Err(refuse(stray));
        }
    }
    Ok(p)
}

fn plan_format<'a>(ck: &'a Checkpoint, scheme: &QuantScheme) -> Result<Option<Plan4<'a>>, ConvertError> {
    match scheme.method {
        QuantMethod::Mxfp4 => mxfp4(ck).map(Some),
        QuantMethod::CompressedTensors => match ct_format(ck, scheme).as_deref() {
            Some("nvfp4-pack-quantized") => packed(ck, Packed4::Nvfp4).map(Some),
            Some("pack-quantized") => match ct_bits(ck) {
                Some(4) => packed(ck, Packed4::Int4 { group: 0 }).map(Some),
                b => Err(ConvertError::Unsupported {
                    scheme: format!(
                        "compressed-tensors pack-quantized with {} bits",
                        b.map_or("mixed or unstated".into(), |b| b.to_string())
                    ),
                    command: "dequant",
                    accepted: "pack-quantized is read with 4-bit weights",
                }),
            },
            _ => Ok(None),
        },
        _ => Ok(None),
    }
}

fn refuse(reasons: Vec<String>) -> ConvertError {
    ConvertError::Refused { reasons }
}

fn mxfp4(ck: &Checkpoint) -> Result<Plan4<'_>, ConvertError> {
    let mut p = Plan4 { primary: HashMap::new(), drop: HashSet::new() };
    let mut reasons = Vec::new();
    for t in ck.tensors() {
        let Some(base) = t.entry.name.strip_suffix("_blocks") else { continue };
        let sh = &t.entry.shape;
        let scales_name = format!("{base}_scales");
        let Some(scales) = ck.get(&scales_name) else {
            reasons.push(format!("{}: its e8m0 scales {scales_name} are not in the checkpoint", t.entry.name));
            continue;
        };
        if t.entry.dtype != Dtype::U8 || sh.len() != 4 || sh[3] != 16 {
            reasons.push(format!(
                "{}: MXFP4 blocks are U8 [E, N, G, 16], this is {} {:?}",
                t.entry.name, t.entry.dtype, sh
            ));
            continue;
        }
        if scales.entry.dtype != Dtype::U8 || scales.entry.shape != sh[..3] {
            reasons.push(format!(
                "{scales_name}: e8m0 scales are U8 {:?} for blocks {:?}, this is {} {:?}",
                &sh[..3],
                sh,
                scales.entry.dtype,
                scales.entry.shape
            ));
            continue;
        }
        let out = vec![sh[0], sh[2].saturating_mul(32), sh[1]];
        p.primary.insert(t.entry.name.clone(), (base.to_string(), out, Item::Mx { blocks: t, scales }));
        p.drop.insert(scales_name);
    }
    for t in ck.tensors() {
        if let Some(base) = t.entry.name.strip_suffix("_scales") {
            if t.entry.dtype == Dtype::U8 && ck.get(&format!("{base}_blocks")).is_none() {
                reasons.push(format!("{}: e8m0 scales without their {base}_blocks", t.entry.name));
            }
        }
    }
    if p.primary.is_empty() {
        reasons.push("quant_method mxfp4, but no `*_blocks` tensor: nothing to dequantize".into());
    }
    if !reasons.is_empty() {
        return Err(refuse(reasons));
    }
    Ok(p)
}

/// Read a tiny I64 tensor (`weight_shape`).
fn read_i64s(t: TensorRef<'_>) -> Result<Vec<i64>, ConvertError> {
    if t.entry.dtype != Dtype::I64 || t.entry.nbytes() > 64 {
        return Err(refuse(vec![format!(
            "{}: expected a small I64 tensor, found {} {:?}",
            t.entry.name, t.entry.dtype, t.entry.shape
        )]));
    }
    let b = t.read()?;
    Ok(b.chunks_exact(8).map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes"))).collect())
}

fn packed(ck: &Checkpoint, kind: Packed4) -> Result<Plan4<'_>, ConvertError> {
    let mut p = Plan4 { primary: HashMap::new(), drop: HashSet::new() };
    let mut reasons = Vec::new();
    for t in ck.tensors() {
        let Some(m) = t.entry.name.strip_suffix(".weight_packed") else { continue };
        let get = |s: &str| ck.get(&format!("{m}.{s}"));
        let sh = &t.entry.shape;
        if sh.len() != 2 {
            reasons.push(format!("{}: packed weights are 2-D, this is {:?}", t.entry.name, sh));
            continue;
        }
        let Some(scale) = get("weight_scale") else {
            reasons.push(format!("{}: {m}.weight_scale is not in the checkpoint", t.entry.name));
            continue;
        };
        let n = sh[0];
        let (k, extra, kind) = match kind {
            Packed4::Nvfp4 => {
                let Some(global) = get("weight_global_scale") else {
                    reasons.push(format!("{}: {m}.weight_global_scale is not in the checkpoint", t.entry.name));
                    continue;
                };
                let k = sh[1].saturating_mul(2);
                let ok = t.entry.dtype == Dtype::U8
                    && scale.entry.dtype == Dtype::F8_E4M3
                    && scale.entry.shape == [n, k.div_ceil(16)]
                    && global.entry.dtype == Dtype::F32
                    && global.entry.numel() == 1;
                if !ok {
                    reasons.push(format!(
                        "{m}: NVFP4 wants weight_packed U8 [N, K/2], weight_scale F8_E4M3 [N, K/16], weight_global_scale F32 [1]; found {} {:?}, {} {:?}, {} {:?}",
                        t.entry.dtype, sh, scale.entry.dtype, scale.entry.shape, global.entry.dtype, global.entry.shape
                    ));
                    continue;
                }
                p.drop.insert(global.entry.name.clone());
                (k, Some(global), Packed4::Nvfp4)
            }
            Packed4::Int4 { .. } => {
                let Some(shape_t) = get("weight_shape") else {
                    reasons.push(format!("{}: {m}.weight_shape is not in the checkpoint", t.entry.name));
                    continue;
                };
                let dims = read_i64s(shape_t)?;
                let k = match dims.as_slice() {
                    [dn, dk] if *dn as u64 == n && *dk > 0 && (*dk as u64).div_ceil(8) == sh[1] => *dk as u64,
                    _ => {
                        reasons.push(format!(
                            "{m}: weight_shape {dims:?} does not match weight_packed {:?} (I32, 8 int4 values per word)",
                            sh
                        ));
                        continue;
                    }
                };
                let g = scale.entry.shape.get(1).copied().unwrap_or(0);
                let float_scale = matches!(scale.entry.dtype, Dtype::BF16 | Dtype::F16 | Dtype::F32);
                if t.entry.dtype != Dtype::I32
                    || !float_scale
                    || scale.entry.shape.len() != 2
                    || scale.entry.shape[0] != n
                    || g == 0
                {
                    reasons.push(format!(
                        "{m}: pack-quantized wants weight_packed I32 [N, K/8] and weight_scale [N, groups] (bf16/f16/f32); found {} {:?}, {} {:?}",
                        t.entry.dtype, sh, scale.entry.dtype, scale.entry.shape
                    ));
                    continue;
                }
                let group = k.div_ceil(g);
                if group % 2 != 0 || k.div_ceil(group) != g {
                    reasons.push(format!("{m}: {g} scale groups over K = {k} is not a whole, even group size"));
                    continue;
                }
                if get("weight_g_idx").is_some() {
                    reasons.push(format!("{m}: activation-ordered groups (weight_g_idx) are not supported yet"));
                    continue;
                }
                let zp = get("weight_zero_point");
                if let Some(z) = zp {
                    if z.entry.dtype != Dtype::I32 || z.entry.shape != [n.div_ceil(8), g] {
                        reasons.push(format!(
                            "{m}: weight_zero_point should be I32 [{}, {g}] (packed along N), found {} {:?}",
                            n.div_ceil(8),
                            z.entry.dtype,
                            z.entry.shape
                        ));
                        continue;
                    }
                    p.drop.insert(z.entry.name.clone());
                }
                p.drop.insert(shape_t.entry.name.clone());
                (k, zp, Packed4::Int4 { group })
            }
        };
        p.drop.insert(scale.entry.name.clone());
        let item = Item::Packed4 { packed: t, scale, extra, kind, n, k };
        p.primary.insert(t.entry.name.clone(), (format!("{m}.weight"), vec![n, k], item));
    }
    if !reasons.is_empty() {
        return Err(refuse(reasons));
    }
    if p.primary.is_empty() {
        return Err(refuse(vec!["no .weight_packed tensor: nothing to dequantize".into()]));
    }
    Ok(p)
}

/// 4-bit packed rows to bf16, a band of rows at a time, through one 16-entry table per group.
#[allow(clippy::too_many_arguments)]
pub(super) fn emit_packed4(
    packed: TensorRef<'_>,
    scale: TensorRef<'_>,
    extra: Option<TensorRef<'_>>,
    kind: Packed4,
    n: u64,
    k: u64,
    open: &Opened<'_>,
    b: &mut Bufs,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), ConvertError>,
) -> Result<(), ConvertError> {
    use crate::quant::fp4;
    let (n, k) = (n as usize, k as usize);
    let row_bytes = (packed.entry.shape[1] * packed.entry.dtype.bits() / 8) as usize;
    let (group, g) = match kind {
        Packed4::Nvfp4 => (16, k.div_ceil(16)),
        Packed4::Int4 { group } => (group as usize, scale.entry.shape[1] as usize),
    };
    let global = match (kind, extra) {
        (Packed4::Nvfp4, Some(gs)) => {
            let v = open.of(gs.shard).read_all(gs.entry)?;
            f32::from_le_bytes(v[..4].try_into().expect("checked F32 [1]"))
        }
        _ => 1.0,
    };
    // INT4 zero points, packed along N: row r's value is nibble r % 8 of word [r / 8, g].
    let zeros: Vec<u8> = match (kind, extra) {
        (Packed4::Int4 { .. }, Some(z)) => open.of(z.shard).read_all(z.entry)?,
        _ => Vec::new(),
    };
    let scale_width = (scale.entry.dtype.bits() / 8) as usize;
    let rows = (BAND_BYTES / (k * 2).max(1)).max(1);
    let padded = row_bytes * 2;
    let want = padded.div_ceil(group);
    let mut r0 = 0;
    while r0 < n {
        let nr = rows.min(n - r0);
        grow(&mut b.chunk, nr * row_bytes);
        open.of(packed.shard).read_par(packed.entry, (r0 * row_bytes) as u64, &mut b.chunk[..nr * row_bytes])?;
        let mut raw = vec![0u8; nr * g * scale_width];
        open.of(scale.shard).read(scale.entry, (r0 * g * scale_width) as u64, &mut raw)?;
        // NVFP4 group scales are single e4m3 bytes: their 256 tables are made once per band.
        let sc = match kind {
            Packed4::Nvfp4 => Vec::new(),
            _ => scales_to_f32_any(&raw, scale.entry.dtype)
                .map_err(|source| ConvertError::Kernel { tensor: scale.entry.name.clone(), source })?,
        };
        let nv: Vec<fp4::Table> = match kind {
            Packed4::Nvfp4 => (0..=255u8).map(|c| fp4::fp4_table(fp4::e4m3_to_f32(c) / global)).collect(),
            _ => Vec::new(),
        };
        grow(&mut b.r16, nr * k);
        // Rows in parallel: each builds its groups' tables and expands its codes.
        use rayon::prelude::*;
        let codes = &b.chunk[..nr * row_bytes];
        b.r16[..nr * k].par_chunks_mut(k).enumerate().for_each_init(
            || (Vec::<fp4::Table>::with_capacity(want), vec![0u16; if padded == k { 0 } else { padded }]),
            |(tables, row16), (r, out_row)| {
                let c = &codes[r * row_bytes..(r + 1) * row_bytes];
                if kind == Packed4::Nvfp4 && padded == k {
                    // One shared table per scale byte: no per-group table is made or copied.
                    let bytes = &raw[r * g..(r + 1) * g];
                    fp4::expand_with(c, group, |gi| &nv[bytes[gi] as usize], out_row);
                    return;
                }
                tables.clear();
                for gi in 0..g {
                    tables.push(match kind {
                        Packed4::Nvfp4 => nv[raw[r * g + gi] as usize],
                        Packed4::Int4 { .. } => {
                            let s = sc[r * g + gi];
                            let zp = if zeros.is_empty() {
                                0.0
                            } else {
                                let row = r0 + r;
                                let at = ((row / 8) * g + gi) * 4;
                                let word = u32::from_le_bytes(zeros[at..at + 4].try_into().expect("4 bytes"));
                                ((word >> (4 * (row % 8))) & 15) as f32 - 8.0
                            };
                            fp4::int4_table(s, zp)
                        }
                    });
                }
                // The packed row may hold padding past K (INT4 words of 8): its codes decode against
                // the last group's table and are cut off.
                while tables.len() < want {
                    let last = *tables.last().expect("at least one group");
                    tables.push(last);
                }
                if padded == k {
                    fp4::expand(c, group, tables, out_row);
                } else {
                    fp4::expand(c, group, tables, row16);
                    out_row.copy_from_slice(&row16[..k]);
                }
            },
        );
        sink(as_bytes(&b.r16[..nr * k]))?;
        r0 += nr;
    }
    Ok(())
}

/// Group scales as f32: the float dtypes exactly, F8_E4M3 decoded.
fn scales_to_f32_any(bytes: &[u8], dtype: Dtype) -> Result<Vec<f32>, KernelError> {
    match dtype {
        Dtype::F8_E4M3 => Ok(bytes.iter().map(|&c| crate::quant::fp4::e4m3_to_f32(c)).collect()),
        d => scales_to_f32(bytes, d),
    }
}

/// MXFP4 experts: each expert's [N, K] decoded, then written transposed as [K, N].
pub(super) fn emit_mx(
    blocks: TensorRef<'_>,
    scales: TensorRef<'_>,
    open: &Opened<'_>,
    b: &mut Bufs,
    sink: &mut dyn FnMut(&[u8]) -> Result<(), ConvertError>,
) -> Result<(), ConvertError> {
    use crate::quant::fp4;
    let sh = &blocks.entry.shape;
    let (e, n, g) = (sh[0] as usize, sh[1] as usize, sh[2] as usize);
    let k = g * 32;
    let mut sc = vec![0u8; n * g];
    let mut t = vec![0u16; n * k];
    for x in 0..e {
        grow(&mut b.chunk, n * k / 2);
        open.of(blocks.shard).read_par(blocks.entry, (x * n * k / 2) as u64, &mut b.chunk[..n * k / 2])?;
        open.of(scales.shard).read(scales.entry, (x * n * g) as u64, &mut sc)?;
        use rayon::prelude::*;
        grow(&mut b.r16, n * k);
        let codes = &b.chunk[..n * k / 2];
        // Rows in parallel (each its tables), then the transpose in parallel over output rows.
        let mx = fp4::mx_tables();
        b.r16[..n * k].par_chunks_mut(k).enumerate().for_each(|(r, row)| {
            let bytes = &sc[r * g..(r + 1) * g];
            fp4::expand_with(&codes[r * k / 2..(r + 1) * k / 2], 32, |gi| &mx[bytes[gi] as usize], row);
        });
        let src = &b.r16[..n * k];
        // [N, K] → [K, N], 32 output rows at a time, in tiles that stay in cache.
        const T: usize = 32;
        t.par_chunks_mut(T * n).enumerate().for_each(|(i, dst)| {
            let k0 = i * T;
            let rows = dst.len() / n;
            for n0 in (0..n).step_by(T) {
                for kk in 0..rows {
                    for nn in n0..(n0 + T).min(n) {
                        dst[kk * n + nn] = src[nn * k + k0 + kk];
                    }
                }
            }
        });
        sink(as_bytes(&t))?;
    }
    Ok(())
}
