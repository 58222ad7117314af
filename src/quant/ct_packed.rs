//! compressed-tensors packed formats (`pack-quantized` INT4/INT8, `nvfp4-pack-quantized`): what vLLM
//! allocates beside each quantized linear, as data (`ct_packed.json`, citing the vLLM files).

use super::QuantScheme;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::OnceLock;

#[derive(Debug, Deserialize)]
pub struct Tensor {
    pub suffix: String,
    /// safetensors dtype; null: the model's dtype.
    pub dtype: Option<String>,
    pub shape: Vec<String>,
    #[serde(default)]
    pub replicated: bool,
    #[serde(default)]
    pub optional: bool,
    /// `asymmetric`: only when the weights are not symmetric; `input_quantized`: only when the
    /// activations are quantized too.
    #[serde(default)]
    pub when: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Contract {
    pub weight: Tensor,
    pub companions: Vec<Tensor>,
}

#[derive(Debug, Deserialize)]
struct Contracts {
    formats: BTreeMap<String, Contract>,
}

fn contracts() -> &'static BTreeMap<String, Contract> {
    static C: OnceLock<Contracts> = OnceLock::new();
    &C.get_or_init(|| serde_json::from_str(include_str!("ct_packed.json")).expect("embedded ct_packed.json is valid"))
        .formats
}

/// The packed contract a compressed-tensors checkpoint's weights follow, if they are packed.
pub fn contract(q: &QuantScheme) -> Option<&'static Contract> {
    if q.method != super::scheme::QuantMethod::CompressedTensors {
        return None;
    }
    contracts().get(q.format.as_deref()?)
}

/// A shape over a weight [N, K] (`None` for a dimension it cannot tell).
pub fn shape(dims: &[String], weight: &[u64], q: &QuantScheme) -> Vec<Option<u64>> {
    let (n, k) = (weight.first().copied().unwrap_or(0), weight.get(1).copied().unwrap_or(0));
    let bits = q.bits.unwrap_or(4).max(1);
    let group = match q.group_size {
        Some(g) if g > 0 => g as u64,
        _ => k.max(1),
    };
    dims.iter()
        .map(|d| match d.as_str() {
            "N" => Some(n),
            "K/2" => Some(k.div_ceil(2)),
            "K/16" => Some(k.div_ceil(16)),
            "K/G" => Some(k.div_ceil(group)),
            "K*bits/32" => Some((k * bits).div_ceil(32)),
            "N*bits/32" => Some((n * bits).div_ceil(32)),
            lit => lit.parse().ok(),
        })
        .collect()
}

/// Whether a companion applies to this scheme.
pub fn applies(t: &Tensor, q: &QuantScheme) -> bool {
    match t.when.as_deref() {
        Some("asymmetric") => q.symmetric == Some(false),
        Some("input_quantized") => q.input_quantized == Some(true),
        _ => true,
    }
}
