//! A family's routing rules compiled once per remap: each `when` evaluated against the config up
//! front (it cannot change from tensor to tensor), each substring needle a prebuilt SIMD searcher,
//! the MTP layer bound read once. Routing then runs once per tensor (~92k for DeepSeek-V3) with
//! no rule condition, config lookup or searcher construction in the loop.

use super::{apply_mapper_into, Routed, ShardRef, Vars};
use crate::arch::rules::{Experts, Family, Skip, Stacked};
use crate::checkpoint::names::ends_with;
use memchr::memmem::Finder;
use std::borrow::Cow;

/// A skip or buffer rule whose `when` holds for this config.
struct NameRule<'f> {
    prefix: Option<&'f str>,
    substr: Option<Finder<'f>>,
    suffix: Option<&'f str>,
    reason: &'f str,
}

impl<'f> NameRule<'f> {
    fn compile(rules: &'f [Skip], vars: &Vars<'_>) -> Vec<NameRule<'f>> {
        rules
            .iter()
            .filter(|s| vars.truthy(&s.when))
            .map(|s| NameRule {
                prefix: s.prefix.as_deref(),
                substr: s.substr.as_deref().map(Finder::new),
                suffix: s.suffix.as_deref(),
                reason: s.reason.as_str(),
            })
            .collect()
    }

    fn hit(&self, n: &str) -> bool {
        self.prefix.is_some_and(|p| n.starts_with(p))
            || self.substr.as_ref().is_some_and(|f| f.find(n.as_bytes()).is_some())
            || self.suffix.is_some_and(|p| ends_with(n, p))
    }
}

/// Which names are MTP layers the main model skips.
enum MtpTest<'f> {
    /// Names under this prefix.
    Prefix(&'f str),
    /// `*.layers.{i}.*` with i ≥ num_hidden_layers.
    FromLayer(i64),
    Never,
}

/// A family's routing for one config (see [`Router::route_into`]).
pub(super) struct Router<'f> {
    family: &'f Family,
    mtp: MtpTest<'f>,
    mtp_draft: &'f str,
    skip: Vec<NameRule<'f>>,
    buffers: Vec<NameRule<'f>>,
    experts: Option<(&'f Experts, Finder<'static>)>,
    /// Stacked rules whose `when` holds, with their shard searcher.
    stacked: Vec<(&'f Stacked, Finder<'f>)>,
    aliases: Vec<(Finder<'f>, &'f str)>,
}

impl<'f> Router<'f> {
    pub(super) fn new(family: &'f Family, vars: &Vars<'_>) -> Router<'f> {
        let mtp = match &family.mtp {
            None => MtpTest::Never,
            Some(m) if m.style == "prefix" => m.prefix.as_deref().map_or(MtpTest::Never, MtpTest::Prefix),
            Some(_) => vars.get("num_hidden_layers").map_or(MtpTest::Never, MtpTest::FromLayer),
        };
        Router {
            family,
            mtp,
            mtp_draft: family.mtp.as_ref().map_or("", |m| m.draft.as_str()),
            skip: NameRule::compile(&family.skip, vars),
            buffers: NameRule::compile(&family.buffers, vars),
            experts: family.experts.as_ref().map(|ex| (ex, Finder::new("experts."))),
            stacked: family
                .stacked
                .iter()
                .filter(|s| vars.truthy(&s.when))
                .map(|s| (s, Finder::new(s.shard.as_str())))
                .collect(),
            aliases: family.aliases.iter().map(|(from, to)| (Finder::new(from.as_str()), to.as_str())).collect(),
        }
    }

    /// The routing of `name` as the family's `load_weights` does it, into `buf.0`, reused from name
    /// to name (`buf.1` is scratch): no allocation per tensor once they are large enough.
    pub(super) fn route_into(&self, name: &str, buf: &mut (String, String)) -> Routed<'f> {
        let (n, tmp) = (&mut buf.0, &mut buf.1);
        let r = self.route_raw(name, n, tmp);
        if let Routed::Param { .. } = r {
            for (from, to) in &self.aliases {
                replace_first(n, from, to);
            }
        }
        r
    }

    fn route_raw(&self, name: &str, n: &mut String, tmp: &mut String) -> Routed<'f> {
        let family = self.family;
        if !apply_mapper_into(&family.mapper, name, n) {
            return Routed::Skip(Cow::Borrowed("dropped by hf_to_vllm_mapper"));
        }
        let is_mtp = match self.mtp {
            MtpTest::Prefix(p) => n.starts_with(p),
            MtpTest::FromLayer(layers) => layer_index(n).is_some_and(|l| l as i64 >= layers),
            MtpTest::Never => false,
        };
        if is_mtp {
            return Routed::Skip(Cow::Owned(format!(
                "MTP layer: the main model skips it; {} loads it with --speculative-config",
                self.mtp_draft
            )));
        }
        for (from, to) in &family.kv_scale_renames {
            if ends_with(n, from) {
                n.truncate(n.len() - from.len());
                n.push_str(to);
                return Routed::KvScale;
            }
        }
        if let Some(s) = self.skip.iter().find(|s| s.hit(n)) {
            return Routed::Skip(Cow::Borrowed(s.reason));
        }
        if let Some(b) = self.buffers.iter().find(|b| b.hit(n)) {
            return Routed::Buffer(b.reason);
        }
        if let Some((ex, experts_dot)) = &self.experts {
            if let Some(pos) = experts_dot.find(n.as_bytes()) {
                let rest = &n[pos + "experts.".len()..];
                let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
                if digits > 0 && rest.as_bytes().get(digits) == Some(&b'.') {
                    let e: u64 = rest[..digits].parse().unwrap_or(0);
                    let after = &rest[digits + 1..];
                    for (ckpt, shard, param) in
                        [(&ex.gate, "w1", "w13_"), (&ex.down, "w2", "w2_"), (&ex.up, "w3", "w13_")]
                    {
                        if let Some(tail) = after.strip_prefix(ckpt.as_str()).and_then(|t| t.strip_prefix('.')) {
                            // `{before}experts.{e}.{ckpt}.{tail}` → `{before}{ex.param}{param}{tail}`,
                            // through the second buffer (four copies; `replace_range` costs more).
                            let tail_at = n.len() - tail.len();
                            tmp.clear();
                            for part in [&n[..pos], ex.param.as_str(), param, &n[tail_at..]] {
                                tmp.push_str(part);
                            }
                            std::mem::swap(n, tmp);
                            return Routed::Param {
                                shard: Some(ShardRef::Expert(shard)),
                                expert: Some(e),
                                stacked: false,
                            };
                        }
                    }
                }
            }
        }
        for (s, shard) in &self.stacked {
            if s.within.as_deref().is_some_and(|w| !n.starts_with(w)) {
                continue;
            }
            if replace_first(n, shard, &s.param) {
                return Routed::Param { shard: Some(ShardRef::Rule(&s.id)), expert: None, stacked: true };
            }
        }
        Routed::Param { shard: None, expert: None, stacked: false }
    }
}

/// `s.replacen(from, to, 1)` in place; whether `from` occurred.
fn replace_first(n: &mut String, from: &Finder<'_>, to: &str) -> bool {
    // A match of a UTF-8 needle in UTF-8 text starts and ends on character boundaries.
    match from.find(n.as_bytes()) {
        Some(at) => {
            n.replace_range(at..at + from.needle().len(), to);
            true
        }
        None => false,
    }
}

/// The index after the first `layers` segment, when it is a number (`model.layers.61.x` → 61).
pub(super) fn layer_index(name: &str) -> Option<u64> {
    // Segments by a byte loop; '.' is ASCII, so the segments are str slices as they are.
    let b = name.as_bytes();
    let mut start = 0;
    loop {
        let mut end = start;
        while end < b.len() && b[end] != b'.' {
            end += 1;
        }
        if &b[start..end] == b"layers" {
            let next = name.get(end + 1..)?;
            let seg_end = next.bytes().position(|c| c == b'.').unwrap_or(next.len());
            return next[..seg_end].parse().ok();
        }
        if end == b.len() {
            return None;
        }
        start = end + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::layer_index;

    #[test]
    fn layer_index_as_split() {
        let reference = |name: &str| -> Option<u64> {
            let mut segs = name.split('.');
            while let Some(s) = segs.next() {
                if s == "layers" {
                    return segs.next().and_then(|n| n.parse().ok());
                }
            }
            None
        };
        for n in [
            "model.layers.61.mlp.w",
            "layers.3",
            "layers",
            "model.layers.x.layers.2",
            "model.layers.+4.w",
            "model.layers..w",
            "a.layers.é.w",
            "",
            "layers.18446744073709551616",
            "xlayers.3.layers.4",
            "model.layersx.1.layers.2",
            "model.mylayers.layers.5",
            "layers.",
            "a.layers",
            "layerslayers.layers.7.x",
        ] {
            assert_eq!(layer_index(n), reference(n), "{n:?}");
        }
    }
}
