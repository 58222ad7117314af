//! `model.safetensors.index.json`: which tensor lives in which shard.

use super::header::error_offset;
use crate::findings::{Code, Finding};
use rustc_hash::FxHashMap;
use serde_json::Value;
use std::borrow::Cow;
use std::path::{Component, Path};

pub const INDEX_NAME: &str = "model.safetensors.index.json";

#[derive(Debug, Default)]
pub struct Index {
    pub total_size: Option<u64>,
    /// Shard file names in first-mention order, each once, path-safe ones only.
    pub shards: Vec<String>,
    /// How many tensors the index places in each of `shards`.
    pub tensors_per_shard: Vec<usize>,
    /// Number of entries in `weight_map`.
    pub tensors: usize,
}

/// `weight_map` as parsed: (tensor name, position of its shard in [`Index::shards`]), names
/// borrowed from the index text where JSON allows. Transient: it lives for the cross-check.
pub type Entries<'a> = Vec<(Cow<'a, str>, u32)>;

/// The top level of an index: only `metadata` and `weight_map` matter; values stay raw.
#[derive(serde::Deserialize)]
struct RawIndex<'a> {
    #[serde(borrow, default)]
    metadata: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    weight_map: Option<&'a serde_json::value::RawValue>,
}

/// One `weight_map` entry as streamed: the name, and the shard name when it is a string.
type MapEntry<'a> = (Cow<'a, str>, Result<Cow<'a, str>, String>);

/// Streams `weight_map` entries in document order (duplicates kept), borrowing where JSON allows.
/// `strict` expects every value to be a string (one scan); otherwise values go through RawValue
/// so a non-string can be reported instead of failing the parse.
struct WeightMap<'a, const STRICT: bool>(Vec<MapEntry<'a>>);

impl<'de: 'a, 'a, const STRICT: bool> serde::Deserialize<'de> for WeightMap<'a, STRICT> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a, const S: bool>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a, const S: bool> serde::de::Visitor<'de> for V<'a, S> {
            type Value = WeightMap<'a, S>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an object mapping tensor names to shard file names")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<WeightMap<'a, S>, A::Error> {
                // serde_json gives no size hint: the caller's estimate from the text length avoids
                // growing (and first-touching) the vector through every doubling.
                let hint = m.size_hint().unwrap_or_else(|| CAPACITY_HINT.with(std::cell::Cell::get));
                let mut v = Vec::with_capacity(hint.min(1 << 22));
                // Keys through BorrowedStr: serde's own `Cow<str>` always copies.
                while let Some(BorrowedStr(k)) = m.next_key::<BorrowedStr<'de>>()? {
                    let file = if S {
                        Ok(m.next_value::<BorrowedStr<'de>>()?.0)
                    } else {
                        let raw: &'de serde_json::value::RawValue = m.next_value()?;
                        serde_json::from_str::<BorrowedStr<'de>>(raw.get())
                            .map(|b| b.0)
                            .map_err(|_| raw.get().to_string())
                    };
                    v.push((k, file));
                }
                Ok(WeightMap(v))
            }
        }
        d.deserialize_map(V::<STRICT>(std::marker::PhantomData))
    }
}

thread_local! {
    /// Entries the `weight_map` being parsed may hold (an upper estimate; 0 when unknown).
    static CAPACITY_HINT: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// A JSON string, borrowed from the input unless it has escapes.
struct BorrowedStr<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> serde::Deserialize<'de> for BorrowedStr<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for V<'a> {
            type Value = BorrowedStr<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<BorrowedStr<'a>, E> {
                Ok(BorrowedStr(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<BorrowedStr<'a>, E> {
                Ok(BorrowedStr(Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V(std::marker::PhantomData))
    }
}

/// Parse the index text. Problems become findings; what could be read is returned.
/// The common case in one scan: `weight_map` parsed while the top level is read.
#[derive(serde::Deserialize)]
struct FastIndex<'a> {
    #[serde(borrow, default)]
    metadata: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    weight_map: Option<WeightMap<'a, true>>,
}

/// `weight_map` entries, or None (with a finding) when it cannot be read as an object.
fn weight_map_of<'a>(raw: &'a serde_json::value::RawValue, out: &mut Vec<Finding>) -> Option<Vec<MapEntry<'a>>> {
    match serde_json::from_str::<WeightMap<true>>(raw.get())
        .map(|w| w.0)
        .or_else(|_| serde_json::from_str::<WeightMap<false>>(raw.get()).map(|w| w.0))
    {
        Ok(wm) => Some(wm),
        Err(_) => {
            out.push(
                Finding::new(Code::IndexInvalid, format!("`weight_map` is {:.60}, not an object", raw.get()))
                    .file(INDEX_NAME),
            );
            None
        }
    }
}

pub fn parse<'a>(text: &'a str, out: &mut Vec<Finding>) -> Option<(Index, Entries<'a>)> {
    // One scan when every weight_map value is a string; otherwise a second, raw reading of the
    // top level, so the problem can be named exactly.
    // A weight_map entry takes at least ~24 bytes of text (`"a.b.weight": "m.safetensors"`, real
    // ones ~90): reserving for that many touches no memory that is not used.
    CAPACITY_HINT.with(|h| h.set(text.len() / 24));
    let parsed = serde_json::from_str::<FastIndex>(text);
    CAPACITY_HINT.with(|h| h.set(0));
    let (metadata, wm) = match parsed {
        Ok(f) => (f.metadata, f.weight_map.map(|w| Some(w.0))),
        Err(_) => match serde_json::from_str::<RawIndex>(text) {
            Ok(r) => (r.metadata, r.weight_map.map(|raw| weight_map_of(raw, out))),
            Err(e) => {
                let code = if e.classify() == serde_json::error::Category::Data {
                    Code::IndexInvalid
                } else {
                    Code::IndexNotJson
                };
                out.push(Finding::new(code, format!("byte {}: {e}", error_offset(text, &e))).file(INDEX_NAME));
                return None;
            }
        },
    };
    let mut idx = Index::default();
    if let Some(meta) = metadata {
        let meta: Value = serde_json::from_str(meta.get()).unwrap_or(Value::Null);
        if let Some(ts) = meta.get("total_size") {
            match ts.as_u64().or_else(|| ts.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0).map(|f| f as u64)) {
                Some(n) => idx.total_size = Some(n),
                None => out.push(
                    Finding::new(Code::IndexInvalid, format!("`metadata.total_size` is {ts}, not a byte count"))
                        .file(INDEX_NAME)
                        .severity(crate::findings::Severity::Warning),
                ),
            }
        }
    }
    let wm = match wm {
        None => {
            out.push(Finding::new(Code::IndexInvalid, "the index has no `weight_map`").file(INDEX_NAME));
            return Some((idx, Vec::new()));
        }
        Some(None) => return Some((idx, Vec::new())),
        Some(Some(wm)) => wm,
    };
    let mut shard_ids: FxHashMap<Cow<str>, u32> = FxHashMap::default();
    let mut entries: Entries<'a> = Vec::with_capacity(wm.len());
    // Shard names repeat in runs: compare with the previous one before hashing.
    let mut last: Option<(Cow<'a, str>, u32)> = None;
    for (name, file) in wm {
        let file = match file {
            Ok(f) => f,
            Err(v) => {
                out.push(
                    Finding::new(Code::IndexInvalid, format!("`weight_map[{name:?}]` is {v}, not a file name"))
                        .file(INDEX_NAME)
                        .tensor(name.into_owned()),
                );
                continue;
            }
        };
        let id = match &last {
            Some((f, id)) if *f == file => *id,
            _ => {
                let id = match shard_ids.get(&file) {
                    Some(&id) => id,
                    None => {
                        if !is_safe_relative(&file) {
                            out.push(
                                Finding::new(
                                    Code::IndexPathEscape,
                                    format!("shard path {file:?} for {name:?} escapes the checkpoint directory"),
                                )
                                .file(INDEX_NAME)
                                .tensor(name.into_owned()),
                            );
                            continue;
                        }
                        let id = idx.shards.len() as u32;
                        idx.shards.push(file.to_string());
                        idx.tensors_per_shard.push(0);
                        shard_ids.insert(file.clone(), id);
                        id
                    }
                };
                last = Some((file, id));
                id
            }
        };
        idx.tensors_per_shard[id as usize] += 1;
        entries.push((name, id));
    }
    // Duplicate names are found by the cross-check, which visits every entry anyway.
    idx.tensors = entries.len();
    Some((idx, entries))
}

/// A relative path with no `..`, root or prefix component.
pub fn is_safe_relative(p: &str) -> bool {
    !p.is_empty()
        && !p.contains('\\')
        && Path::new(p).components().all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_safety() {
        assert!(is_safe_relative("model-00001-of-00002.safetensors"));
        assert!(is_safe_relative("sub/model.safetensors"));
        assert!(!is_safe_relative("../x.safetensors"));
        assert!(!is_safe_relative("/etc/passwd"));
        assert!(!is_safe_relative("a/../../b"));
    }
}
