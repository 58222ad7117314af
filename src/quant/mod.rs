//! Quantization: scheme detection, weight ↔ scale pairing across the whole checkpoint, and the fp8
//! kernels.

pub mod ct_packed;
pub mod fp4;
pub mod fp8;
pub mod int8;
pub mod modelslim;
pub mod mxfp4;
pub mod pairing;
pub mod scheme;
pub mod serve;

pub use pairing::{pair_fp8, Fp8Pair, Pairing};
pub use scheme::{QuantScheme, ScaleLayout};

/// ceil(a / b) for b > 0.
pub fn ceil_div(a: u64, b: u64) -> u64 {
    a.div_ceil(b)
}
