//! MXFP4 fused experts as vLLM allocates them (`mxfp4.json`, citing the vLLM files): the checkpoint
//! shapes of the packed blocks and their e8m0 scales, over the unquantized parameter's shape.

use serde::Deserialize;
use std::sync::OnceLock;

#[derive(Debug, Deserialize)]
pub struct Tensor {
    pub param: String,
    pub shape: Vec<String>,
    pub tp_dim: usize,
}

#[derive(Debug, Deserialize)]
pub struct Expert {
    pub param: String,
    pub shape: Vec<String>,
    pub tp_dim: usize,
    pub scale: Tensor,
}

#[derive(Debug, Deserialize)]
struct Contracts {
    experts: Vec<Expert>,
}

fn contracts() -> &'static [Expert] {
    static C: OnceLock<Contracts> = OnceLock::new();
    &C.get_or_init(|| serde_json::from_str(include_str!("mxfp4.json")).expect("embedded mxfp4.json is valid")).experts
}

/// The contract of a fused expert parameter (`…w13_weight`), if MXFP4 packs it.
pub fn expert(param: &str) -> Option<&'static Expert> {
    contracts().iter().find(|e| param.ends_with(&format!(".{}", e.param)))
}

/// A checkpoint shape over the unquantized parameter's [E, K, N].
pub fn shape(dims: &[String], unquantized: &[u64]) -> Option<Vec<u64>> {
    let [e, k, n] = unquantized else { return None };
    dims.iter()
        .map(|d| match d.as_str() {
            "E" => Some(*e),
            "N" => Some(*n),
            "K/32" => Some(k.div_ceil(32)),
            lit => lit.parse().ok(),
        })
        .collect()
}
