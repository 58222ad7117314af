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
    // The layer is the first segment after a stack segment that reads as a u64: one that starts
    // with a digit or a `+` (which `parse` takes too). Only the segments before such a byte are
    // compared with the stack names.
    let b = name.as_bytes();
    let mut from = 0;
    while let Some(d) = next_digit::<true>(b, from) {
        if d > 0 && b[d - 1] == b'.' {
            let mut p = d - 1;
            while p > 0 && b[p - 1] != b'.' {
                p -= 1;
            }
            if rules.stack_segments.iter().any(|s| s.as_bytes() == &b[p..d - 1]) {
                let mut end = d + 1;
                while end < b.len() && b[end] != b'.' {
                    end += 1;
                }
                // (`.` and the digits and `+` are ASCII: character boundaries)
                if let Ok(layer) = name[d..end].parse::<u64>() {
                    let rest = if end < name.len() { &name[end + 1..] } else { "" };
                    return Some(LayerName { stack: &name[..d - 1], layer, rest });
                }
            }
        }
        from = d + 1;
    }
    None
}

/// The name with every all-digit segment replaced by `*`: the pattern all layers / experts share
/// (`model.layers.12.mlp.experts.7.w1` → `model.layers.*.mlp.experts.*.w1`).
pub fn pattern(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    pattern_into(name, &mut out);
    out
}

/// [`pattern`] into a buffer the caller reuses (no allocation once it is large enough).
pub fn pattern_into(name: &str, out: &mut String) {
    out.clear();
    let mut copied = 0;
    for (i, j) in digit_segments(name) {
        out.push_str(&name[copied..i]);
        out.push('*');
        copied = j;
    }
    out.push_str(&name[copied..]);
}

/// The byte ranges of `name`'s all-digit segments (`model.layers.12.w1` → 13..15), in order. Names
/// hold a few digit runs among long words: the runs are found eight bytes a step and kept when
/// they are whole segments (a memchr or a split per segment costs more than the segment).
pub fn digit_segments(name: &str) -> impl Iterator<Item = (usize, usize)> + '_ {
    let b = name.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || loop {
        i = next_digit::<false>(b, i)?;
        let start = i;
        let mut j = i + 1;
        while j < b.len() && b[j].is_ascii_digit() {
            j += 1;
        }
        i = j;
        if (start == 0 || b[start - 1] == b'.') && (j == b.len() || b[j] == b'.') {
            return Some((start, j));
        }
    })
}

/// The position of the first ASCII digit (or `+` too, with `PLUS`) in `b` at or after `from`.
fn next_digit<const PLUS: bool>(b: &[u8], from: usize) -> Option<usize> {
    use super::json::{equal, HIGH, ONES};
    const LOW7: u64 = ONES * 0x7f;
    let mut i = from;
    while let Some(chunk) = b.get(i..i + 8) {
        let v = u64::from_le_bytes(chunk.try_into().expect("8 bytes"));
        // The high bit of each byte in b'0'..=b'9': below 0x3a, at least 0x30, and ASCII. The
        // seven-bit sums never carry into the next byte, so every byte is tested exactly.
        let x = v & LOW7;
        let mut hit = (ONES * (0x7f + 0x3a) - x) & !v & (x + ONES * (0x7f - 0x2f)) & HIGH;
        if PLUS {
            // (exact up to the first `+`: only the lowest hit is used)
            hit |= equal(v, b'+');
        }
        if hit != 0 {
            return Some(i + (hit.trailing_zeros() / 8) as usize);
        }
        i += 8;
    }
    b.get(i..)?.iter().position(|&c| c.is_ascii_digit() || (PLUS && c == b'+')).map(|p| i + p)
}

/// The first byte offset of `needle` in `hay`, for the short strings tensor names are: each place
/// it could start, tested on its first and last byte before a compare (no searcher to build per
/// call, as `str::find` has; names repeat the letters needles start with, so a memchr per
/// candidate and a memcmp per first-byte hit cost more than the plain loop).
pub fn find(hay: &str, needle: &str) -> Option<usize> {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    let Some((&first, rest)) = n.split_first() else { return Some(0) };
    let last_start = h.len().checked_sub(n.len())?;
    let last = n[n.len() - 1];
    // Candidate starts and the bytes where the needle would end, side by side: no bounds checks.
    let (starts, ends) = (&h[..=last_start], &h[n.len() - 1..]);
    let mut i = 0;
    while let Some(p) = starts[i..].iter().zip(&ends[i..]).position(|(&a, &b)| a == first && b == last) {
        let at = i + p;
        if h[at + 1..at + n.len()] == *rest {
            return Some(at);
        }
        i = at + 1;
    }
    None
}

/// `str::ends_with`, the suffix's last and first bytes compared first: a name mostly differs from
/// the suffixes of a rule list there, and then no compare call is made.
pub fn ends_with(n: &str, suffix: &str) -> bool {
    let (n, s) = (n.as_bytes(), suffix.as_bytes());
    match (s.first(), s.last()) {
        (Some(&first), Some(&last)) => {
            n.len() >= s.len() && n[n.len() - 1] == last && n[n.len() - s.len()] == first && n.ends_with(s)
        }
        _ => true,
    }
}

/// Whether `hay` contains `needle` ([`find`]).
pub fn has(hay: &str, needle: &str) -> bool {
    find(hay, needle).is_some()
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
    // The first segment (not the last) that is an expert segment: each expert name searched for
    // as a whole segment, the earliest kept.
    let b = rest.as_bytes();
    let mut first: Option<(usize, usize)> = None;
    for s in &rules.expert_segments {
        let mut from = 0;
        while let Some(p) = rest.get(from..).and_then(|h| find(h, s)) {
            let (start, end) = (from + p, from + p + s.len());
            if first.is_some_and(|(f, _)| f <= start) {
                break;
            }
            if (start == 0 || b[start - 1] == b'.') && end < b.len() && b[end] == b'.' {
                first = Some((start, end));
                break;
            }
            from = start + 1;
        }
    }
    let (_, end) = first?;
    let module = &rest[..end];
    let after = &rest[end + 1..];
    let id_end = memchr::memchr(b'.', after.as_bytes()).unwrap_or(after.len());
    if let Ok(expert) = after[..id_end].parse::<u64>() {
        let proj = if id_end < after.len() { &after[id_end + 1..] } else { "" };
        return Some(ExpertName::PerExpert { module, expert, proj });
    }
    Some(ExpertName::Fused { module, proj: after })
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

    /// [`split_layer`] segment by segment, as it was written first: the reference.
    fn split_layer_by_segments<'a>(name: &'a str, rules: &AuditRules) -> Option<LayerName<'a>> {
        // Segments by a byte loop ('.' is ASCII: never inside a multi-byte character).
        let b = name.as_bytes();
        let (mut start, mut i) = (0, 0);
        let mut prev_is_stack = false;
        loop {
            while i < b.len() && b[i] != b'.' {
                i += 1;
            }
            let seg = &name[start..i];
            if prev_is_stack {
                if let Ok(layer) = seg.parse::<u64>() {
                    let rest = if i < name.len() { &name[i + 1..] } else { "" };
                    return Some(LayerName { stack: &name[..start - 1], layer, rest });
                }
            }
            if i >= b.len() {
                return None;
            }
            prev_is_stack = rules.stack_segments.iter().any(|s| s == seg);
            start = i + 1;
            i += 1;
        }
    }

    /// [`split_expert`] segment by segment, as it was written first: the reference.
    fn split_expert_by_segments<'a>(rest: &'a str, rules: &AuditRules) -> Option<ExpertName<'a>> {
        let b = rest.as_bytes();
        let mut start = 0;
        while start < rest.len() {
            let end = b[start..].iter().position(|&c| c == b'.').map_or(rest.len(), |i| start + i);
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

    /// The layer and expert readers against their segment-by-segment definitions, on names built
    /// from every kind of segment around the stack and expert names (digits, `+`, leading zeros,
    /// overflow, empty segments, near misses), and with two expert names that overlap.
    #[test]
    fn layer_and_expert_as_segments() {
        let mut rules = audit_rules().clone();
        let parts = [
            "model",
            "layers",
            "layer",
            "h",
            "blocks",
            "3",
            "012",
            "+4",
            "99999999999999999999",
            "",
            "x1",
            "1x",
            "experts",
            "shared_experts",
            "experts_x",
            "7",
            "w1",
            "layersx",
            "é",
        ];
        let check = |rules: &AuditRules| {
            for a in parts {
                for b2 in parts {
                    for c in parts {
                        for d in ["", "5", "experts", "layers"] {
                            let n = format!("{a}.{b2}.{c}.{d}");
                            let n = n.trim_end_matches('.');
                            assert_eq!(split_layer(n, rules), split_layer_by_segments(n, rules), "{n:?}");
                            assert_eq!(split_expert(n, rules), split_expert_by_segments(n, rules), "{n:?}");
                        }
                    }
                }
            }
        };
        check(&rules);
        rules.expert_segments = vec!["shared_experts".into(), "experts".into(), "x1".into()];
        check(&rules);
    }

    #[test]
    fn ends_with_as_std() {
        let names = ["a.k_scale", "a.weight", "", "x", "é", "ké", "xé", "a.v_scale", "k_proj.output_scale", "ab"];
        let suffixes = [".k_scale", "", "x", "é", "é", "_scale", "a.k_scale", "b", "ab", "kab"];
        for n in names {
            for s in suffixes {
                assert_eq!(ends_with(n, s), n.ends_with(s), "{n:?} {s:?}");
            }
        }
    }

    #[test]
    fn range_folding() {
        assert_eq!(ranges(&[0, 1, 2, 5, 7, 8]), "0..2,5,7..8");
        assert_eq!(ranges(&[4]), "4");
        assert_eq!(ranges(&[]), "");
    }

    #[test]
    fn patterns_and_search_agree_with_std() {
        for name in [
            "model.layers.12.mlp.experts.7.w1",
            "12",
            "",
            ".",
            "a..b",
            "layers.0.",
            ".0.x",
            "model.layers.01a.x",
            "lm_head.weight",
        ] {
            let want = name
                .split('.')
                .map(|s| if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) { "*" } else { s })
                .collect::<Vec<_>>()
                .join(".");
            assert_eq!(pattern(name), want, "{name:?}");
            for needle in ["experts.", "e", ".", "", "w1", "xx", "model.layers.12.mlp.experts.7.w1x", "ee"] {
                assert_eq!(find(name, needle), name.find(needle), "{name:?} {needle:?}");
            }
        }
        assert_eq!(find("aab", "ab"), Some(1));
    }

    /// The eight-bytes-a-step digit search against the byte loop: every byte value at every
    /// position of short and long names, and digit runs at every offset around the steps.
    #[test]
    fn digit_search_as_byte_loop() {
        let slow =
            |b: &[u8], from: usize| b.iter().enumerate().skip(from).find(|(_, c)| c.is_ascii_digit()).map(|x| x.0);
        for len in 0..20 {
            for at in 0..len {
                for c in 0..=255u8 {
                    let mut b = vec![b'a'; len];
                    b[at] = c;
                    for from in [0, 1, at, at + 1] {
                        assert_eq!(next_digit::<false>(&b, from), slow(&b, from), "{b:?} from {from}");
                        let with_plus = b
                            .iter()
                            .enumerate()
                            .skip(from)
                            .find(|(_, &x)| x.is_ascii_digit() || x == b'+')
                            .map(|x| x.0);
                        assert_eq!(next_digit::<true>(&b, from), with_plus, "{b:?} from {from}");
                    }
                }
            }
        }
        let slow_segments = |n: &str| -> Vec<(usize, usize)> {
            let mut out = Vec::new();
            let mut start = 0;
            for seg in n.split('.') {
                if !seg.is_empty() && seg.bytes().all(|c| c.is_ascii_digit()) {
                    out.push((start, start + seg.len()));
                }
                start += seg.len() + 1;
            }
            out
        };
        for pre in 0..18 {
            for name in ["{}.x", "x.{}", "x.{}.y.{}", "{}", "a{}.b", "x.{}b.y", "é.{}.ü9", "x.{}{}.9"] {
                for digits in ["0", "12", "123456789012"] {
                    let n = format!("{}{}", "m".repeat(pre), name.replace("{}", digits));
                    assert_eq!(digit_segments(&n).collect::<Vec<_>>(), slow_segments(&n), "{n:?}");
                }
            }
        }
        assert_eq!(find("mlp.eexperts.", "experts."), Some(5));
    }
}
