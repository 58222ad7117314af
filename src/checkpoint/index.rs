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
    // The usual index (string names and file names, no escapes) in one hand-written pass straight
    // into the entries; anything else through serde, which names the problem exactly. Both give
    // the same result where the first accepts (the index fuzz target checks it).
    match scan::index(text) {
        Some((meta, wm)) => Some(finish(meta, Some(Some(wm)), out)),
        None => parse_serde(text, out),
    }
}

/// [`parse`] through serde alone (public for the fuzz target's comparison).
#[doc(hidden)]
pub fn parse_serde<'a>(text: &'a str, out: &mut Vec<Finding>) -> Option<(Index, Entries<'a>)> {
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
    let wm = wm.map(|w| {
        w.map(|w| {
            let mut b = Builder::with_capacity(w.len());
            for (name, file) in w {
                b.push(name, file);
            }
            b
        })
    });
    Some(finish(metadata.map(serde_json::value::RawValue::get), wm, out))
}

/// The index from its `metadata` text and its `weight_map` (None: absent; Some(None): present
/// but not an object, already reported).
fn finish<'a>(metadata: Option<&str>, wm: Option<Option<Builder<'a>>>, out: &mut Vec<Finding>) -> (Index, Entries<'a>) {
    let mut idx = Index::default();
    if let Some(meta) = metadata {
        let meta: Value = serde_json::from_str(meta).unwrap_or(Value::Null);
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
    let b = match wm {
        None => {
            out.push(Finding::new(Code::IndexInvalid, "the index has no `weight_map`").file(INDEX_NAME));
            return (idx, Vec::new());
        }
        Some(None) => return (idx, Vec::new()),
        Some(Some(b)) => b,
    };
    out.extend(b.found);
    idx.shards = b.shards;
    idx.tensors_per_shard = b.tensors_per_shard;
    // Duplicate names are found by the cross-check, which visits every entry anyway.
    idx.tensors = b.entries.len();
    (idx, b.entries)
}

/// `weight_map` entries in document order, each shard file named once.
struct Builder<'a> {
    shards: Vec<String>,
    tensors_per_shard: Vec<usize>,
    shard_ids: FxHashMap<Cow<'a, str>, u32>,
    /// Shard names repeat in runs: compare with the previous one before hashing.
    last: Option<(Cow<'a, str>, u32)>,
    entries: Entries<'a>,
    found: Vec<Finding>,
}

impl<'a> Builder<'a> {
    fn with_capacity(n: usize) -> Builder<'a> {
        Builder {
            shards: Vec::new(),
            tensors_per_shard: Vec::new(),
            shard_ids: FxHashMap::default(),
            last: None,
            entries: Vec::with_capacity(n),
            found: Vec::new(),
        }
    }

    fn push(&mut self, name: Cow<'a, str>, file: Result<Cow<'a, str>, String>) {
        let file = match file {
            Ok(f) => f,
            Err(v) => {
                self.found.push(
                    Finding::new(Code::IndexInvalid, format!("`weight_map[{name:?}]` is {v}, not a file name"))
                        .file(INDEX_NAME)
                        .tensor(name.into_owned()),
                );
                return;
            }
        };
        let id = match &self.last {
            Some((f, id)) if *f == file => *id,
            _ => {
                let id = match self.shard_ids.get(&file) {
                    Some(&id) => id,
                    None => {
                        if !is_safe_relative(&file) {
                            self.found.push(
                                Finding::new(
                                    Code::IndexPathEscape,
                                    format!("shard path {file:?} for {name:?} escapes the checkpoint directory"),
                                )
                                .file(INDEX_NAME)
                                .tensor(name.into_owned()),
                            );
                            return;
                        }
                        let id = self.shards.len() as u32;
                        self.shards.push(file.to_string());
                        self.tensors_per_shard.push(0);
                        self.shard_ids.insert(file.clone(), id);
                        id
                    }
                };
                self.last = Some((file, id));
                id
            }
        };
        self.tensors_per_shard[id as usize] += 1;
        self.entries.push((name, id));
    }
}

/// The hand-written pass: strict JSON for the shape every index has (an object whose
/// `weight_map` maps names to file names, strings with no escape), None for anything else.
mod scan {
    use super::Builder;
    use crate::checkpoint::json::Cur;
    use std::borrow::Cow;

    impl<'a> Cur<'a> {
        /// Any JSON value, skipped: its text, which serde then checks (it is kept or ignored,
        /// never trusted unread).
        fn value(&mut self) -> Option<&'a str> {
            self.ws();
            let start = self.i;
            let mut depth = 0usize;
            loop {
                match *self.b.get(self.i)? {
                    b'"' => {
                        self.i += 1;
                        loop {
                            // (past the end after a final backslash: the text ends inside a string)
                            let at = self.i + memchr::memchr2(b'"', b'\\', self.b.get(self.i..)?)?;
                            self.i = at + 1;
                            if self.b[at] == b'"' {
                                break;
                            }
                            self.i += 1; // the escaped character
                        }
                    }
                    b'{' | b'[' => {
                        depth += 1;
                        self.i += 1;
                    }
                    b'}' | b']' if depth > 0 => {
                        depth -= 1;
                        self.i += 1;
                    }
                    b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r' if depth == 0 => break,
                    _ => self.i += 1,
                }
            }
            let v = self.text.get(start..self.i)?;
            serde_json::from_str::<serde::de::IgnoredAny>(v).ok()?;
            Some(v)
        }
        fn weight_map(&mut self) -> Option<Builder<'a>> {
            self.eat(b'{')?;
            // Real entries take ~90 bytes of text: reserved for one per 48 (untouched capacity
            // costs no page), so the vector never grows by copying.
            let mut b = Builder::with_capacity((self.b.len() - self.i) / 48);
            if self.peek()? == b'}' {
                self.i += 1;
                return Some(b);
            }
            loop {
                let name = self.string()?;
                self.eat(b':')?;
                let file = self.string()?;
                b.push(Cow::Borrowed(name), Ok(Cow::Borrowed(file)));
                match self.peek()? {
                    b',' => self.i += 1,
                    b'}' => {
                        self.i += 1;
                        return Some(b);
                    }
                    _ => return None,
                }
            }
        }
    }

    /// (`metadata`'s text, `weight_map`) of an index in the usual shape; None otherwise.
    pub(super) fn index(text: &str) -> Option<(Option<&str>, Builder<'_>)> {
        let mut c = Cur::new(text);
        c.eat(b'{')?;
        let (mut metadata, mut wm) = (None, None);
        if c.peek()? != b'}' {
            loop {
                let key = c.string()?;
                c.eat(b':')?;
                match key {
                    "weight_map" if wm.is_none() => wm = Some(c.weight_map()?),
                    "metadata" if metadata.is_none() => metadata = Some(c.value()?),
                    // A repeated field is serde's error to word.
                    "weight_map" | "metadata" => return None,
                    _ => {
                        c.value()?;
                    }
                }
                match c.peek()? {
                    b',' => c.i += 1,
                    b'}' => break,
                    _ => return None,
                }
            }
        }
        c.i += 1;
        c.ws();
        // No weight_map: serde's path reports it.
        (c.i == c.b.len()).then_some(())?;
        Some((metadata, wm?))
    }
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

    /// The hand-written pass gives exactly what serde gives (result and findings), on the usual
    /// shape and on every shape it hands over to serde.
    #[test]
    fn scan_agrees_with_serde() {
        let cases = [
            r#"{"metadata": {"total_size": 12}, "weight_map": {"a.weight": "m1.safetensors", "b.weight": "m2.safetensors", "c": "m1.safetensors"}}"#,
            r#"{"weight_map": {"a": "m.safetensors"}, "metadata": {"total_size": 3.0, "x": [1, {"y": "}"}]}}"#,
            r#"{"metadata": {"total_size": "big"}, "weight_map": {}}"#,
            r#"{"metadata": null, "format": "pt", "weight_map": {"a": "m.safetensors"}}"#,
            r#"{"weight_map": {"a\u0041": "m.safetensors"}}"#,
            r#"{"weight_map": {"a": "m\"x.safetensors"}}"#,
            r#"{"weight_map": {"a": 3, "b": "m.safetensors"}}"#,
            r#"{"weight_map": {"a": "../up.safetensors", "b": "m.safetensors", "a": "m.safetensors"}}"#,
            r#"{"weight_map": {"a": "m.safetensors"}, "weight_map": {}}"#,
            r#"{"metadata": {}, "metadata": {}, "weight_map": {}}"#,
            r#"{"metadata": {"total_size": 1}}"#,
            r#"{}"#,
            r#"{"weight_map": []}"#,
            r#"{"weight_map": {"a": "m.safetensors"}} x"#,
            r#"{"weight_map": {"a": "m.safetensors",}}"#,
            r#"{"extra": tru, "weight_map": {}}"#,
            r#"{"extra": {"unclosed": [1, 2}, "weight_map": {}}"#,
            "{\"weight_map\": {\"a\tb\": \"m.safetensors\"}}",
            " \n{ \"weight_map\" :{ \"a\" : \"m.safetensors\" } } \n",
            r#"[1]"#,
            "",
            // (the fuzzer's: a skipped value whose text ends on a backslash inside a string)
            r#"{"x": ["\"#,
        ];
        for text in cases {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let fast = parse(text, &mut a);
            let slow = parse_serde(text, &mut b);
            assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{text}");
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "{text}");
        }
        // The usual shape is the hand-written pass's (not handed over).
        assert!(scan::index(cases[0]).is_some() && scan::index(cases[1]).is_some() && scan::index(cases[3]).is_some());
        assert!(scan::index(cases[4]).is_none() && scan::index(cases[6]).is_none() && scan::index(cases[8]).is_none());
    }

    #[test]
    fn path_safety() {
        assert!(is_safe_relative("model-00001-of-00002.safetensors"));
        assert!(is_safe_relative("sub/model.safetensors"));
        assert!(!is_safe_relative("../x.safetensors"));
        assert!(!is_safe_relative("/etc/passwd"));
        assert!(!is_safe_relative("a/../../b"));
    }
}
