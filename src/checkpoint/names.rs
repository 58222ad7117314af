//! Reading structure out of tensor names: which layer stack and layer a tensor is in, and which
//! expert. Driven by the segment names in `arch/audit.json`, not by architecture.

use crate::arch::AuditRules;

/// `model.layers.3.mlp.experts.7.down_proj.weight` →
/// stack `model.layers`, layer 3, rest `mlp.experts.7.down_proj.weight`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LayerName<'a> {
    pub stack: &'a str,
    pub layer: u64,
    pub rest: &'a str,
}

pub fn split_layer<'a>(name: &'a str, rules: &AuditRules) -> Option<LayerName<'a>> {
    let mut start = 0;
    let mut prev: Option<(usize, usize)> = None; // (start, end) of the previous segment
    for (i, c) in name.char_indices().chain(std::iter::once((name.len(), '.'))) {
        if c != '.' {
            continue;
        }
        let seg = &name[start..i];
        if let Some((ps, pe)) = prev {
            if rules.stack_segments.iter().any(|s| s == &name[ps..pe]) {
                if let Ok(layer) = seg.parse::<u64>() {
                    let rest = if i < name.len() { &name[i + 1..] } else { "" };
                    return Some(LayerName { stack: &name[..pe], layer, rest });
                }
            }
        }
        prev = Some((start, i));
        start = i + 1;
    }
    None
}

/// The name with every all-digit segment replaced by `*`: the pattern all layers / experts share
/// (`model.layers.12.mlp.experts.7.w1` → `model.layers.*.mlp.experts.*.w1`).
pub fn pattern(name: &str) -> String {
    name.split('.')
        .map(|s| if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) { "*" } else { s })
        .collect::<Vec<_>>()
        .join(".")
}

/// Expert placement inside a layer's remainder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExpertName<'a> {
    /// `mlp.experts.7.down_proj.weight`: module `mlp.experts`, expert 7, projection `down_proj.weight`.
    PerExpert { module: &'a str, expert: u64, proj: &'a str },
    /// `mlp.experts.gate_up_proj` (3-D, all experts in one tensor).
    Fused { module: &'a str, proj: &'a str },
}

pub fn split_expert<'a>(rest: &'a str, rules: &AuditRules) -> Option<ExpertName<'a>> {
    let mut start = 0;
    while start < rest.len() {
        let end = rest[start..].find('.').map_or(rest.len(), |i| start + i);
        let seg = &rest[start..end];
        if end < rest.len() && rules.expert_segments.iter().any(|s| s == seg) {
            let module = &rest[..end];
            let after = &rest[end + 1..];
            let id_end = after.find('.').unwrap_or(after.len());
            if let Ok(expert) = after[..id_end].parse::<u64>() {
                let proj = if id_end < after.len() { &after[id_end + 1..] } else { "" };
                return Some(ExpertName::PerExpert { module, expert, proj });
            }
            return Some(ExpertName::Fused { module, proj: after });
        }
        start = end + 1;
    }
    None
}

/// Compact ranges: [0,1,2,5,7,8] → "0..2,5,7..8".
pub fn ranges(sorted: &[u64]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        if !out.is_empty() {
            out.push(',');
        }
        if j > i {
            out.push_str(&format!("{start}..{}", sorted[j]));
        } else {
            out.push_str(&start.to_string());
        }
        i = j + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::audit_rules;

    #[test]
    fn layer_and_expert() {
        let r = audit_rules();
        let l = split_layer("model.layers.3.mlp.experts.7.down_proj.weight", r).unwrap();
        assert_eq!((l.stack, l.layer, l.rest), ("model.layers", 3, "mlp.experts.7.down_proj.weight"));
        assert_eq!(
            split_expert(l.rest, r),
            Some(ExpertName::PerExpert { module: "mlp.experts", expert: 7, proj: "down_proj.weight" })
        );
        assert_eq!(
            split_expert("mlp.experts.gate_up_proj", r),
            Some(ExpertName::Fused { module: "mlp.experts", proj: "gate_up_proj" })
        );
        assert!(split_layer("model.embed_tokens.weight", r).is_none());
        let v = split_layer("model.visual.blocks.0.attn.qkv.weight", r).unwrap();
        assert_eq!(v.stack, "model.visual.blocks");
    }

    #[test]
    fn range_folding() {
        assert_eq!(ranges(&[0, 1, 2, 5, 7, 8]), "0..2,5,7..8");
        assert_eq!(ranges(&[4]), "4");
        assert_eq!(ranges(&[]), "");
    }
}
