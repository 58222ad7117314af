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

/// `weight_map` as parsed, in document order: each tensor name with the position of its shard in
/// [`Index::shards`]. The names share one buffer (no allocation per name), so the index text need
/// not be kept, nor read whole (see [`stream`]). Transient: it lives for the cross-check.
///
/// Each name is kept as what follows the part it shares with the name before it: an index lists
/// names sorted (or in header order), neighbours share most of their text
/// (`…experts.12.up_proj.weight`, `…experts.12.up_proj.weight_scale_inv`), and DeepSeek-V3's 92k
/// names take 1.2 MB instead of 4.8 MB (fresh pages cost ~0.5 ms a megabyte on a small VM).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Entries {
    tails: String,
    /// Per name: the bytes it shares with the name before it, where its tail ends in `tails`, and
    /// its shard. (Text is under [`crate::fsutil::INDEX_CAP`], 1 GiB: positions fit in a u32.)
    meta: Vec<(u32, u32, u32)>,
    /// The name pushed last.
    last: String,
}

/// How many leading bytes `a` and `b` share, eight at a time.
fn shared_prefix(a: &[u8], b: &[u8]) -> usize {
    let n = a.len().min(b.len());
    let mut i = 0;
    while i + 8 <= n {
        let x = u64::from_le_bytes(a[i..i + 8].try_into().expect("8 bytes"))
            ^ u64::from_le_bytes(b[i..i + 8].try_into().expect("8 bytes"));
        if x != 0 {
            return i + (x.trailing_zeros() / 8) as usize;
        }
        i += 8;
    }
    i + a[i..n].iter().zip(&b[i..n]).take_while(|(x, y)| x == y).count()
}

impl Entries {
    fn with_capacity(n: usize, names: usize) -> Entries {
        Entries { tails: String::with_capacity(names), meta: Vec::with_capacity(n), last: String::new() }
    }
    fn push(&mut self, name: &str, shard: u32) {
        // Back to a character boundary of `name`: the bytes before it are the same in both names,
        // so it is one of the last name too.
        let mut shared = shared_prefix(self.last.as_bytes(), name.as_bytes());
        while !name.is_char_boundary(shared) {
            shared -= 1;
        }
        self.tails.push_str(&name[shared..]);
        self.meta.push((shared as u32, self.tails.len() as u32, shard));
        self.last.truncate(shared);
        self.last.push_str(&name[shared..]);
    }
    pub fn len(&self) -> usize {
        self.meta.len()
    }
    pub fn is_empty(&self) -> bool {
        self.meta.is_empty()
    }
    /// `f(name, shard position)` for each entry, in document order.
    pub fn for_each(&self, mut f: impl FnMut(&str, u32)) {
        let mut name = String::new();
        let mut start = 0;
        for &(shared, end, shard) in &self.meta {
            name.truncate(shared as usize);
            name.push_str(&self.tails[start..end as usize]);
            start = end as usize;
            f(&name, shard);
        }
    }
}

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

pub fn parse(text: &str, out: &mut Vec<Finding>) -> Option<(Index, Entries)> {
    // The usual index (string names and file names, no escapes) in one hand-written pass straight
    // into the entries; anything else through serde, which names the problem exactly. Both give
    // the same result where the first accepts (the index fuzz target checks it).
    match scan::index(&mut scan::Whole(text), text.len()) {
        Ok(Some((meta, b))) => Some(finish(meta.as_deref(), Some(Some(b)), out)),
        _ => parse_serde(text, out),
    }
}

/// Whether `text` has the usual shape the hand-written pass reads (for the fuzz target).
#[doc(hidden)]
pub fn scans(text: &str) -> bool {
    matches!(scan::index(&mut scan::Whole(text), text.len()), Ok(Some(_)))
}

/// Bytes read at a time by [`stream`].
pub const STREAM_CHUNK: usize = 1 << 18;

/// The index from `reader` (`len` bytes as far as known, at most `cap`) a piece of `chunk` bytes
/// at a time, never held whole, when it has the usual shape; None for anything else (the caller
/// reads it whole for [`parse`], which words the problem) and when the reader fails, gives more
/// than `cap` bytes, or the text is not UTF-8. Where it gives a result, it is [`parse`]'s on the
/// same text (the fuzz target checks it).
pub fn stream(
    reader: impl std::io::Read,
    len: u64,
    cap: u64,
    chunk: usize,
    out: &mut Vec<Finding>,
) -> Option<(Index, Entries)> {
    let mut w = scan::Stream::new(reader, chunk, cap);
    match scan::index(&mut w, usize::try_from(len).unwrap_or(usize::MAX)) {
        Ok(Some((meta, b))) => Some(finish(meta.as_deref(), Some(Some(b)), out)),
        Ok(None) | Err(scan::Stop) => None,
    }
}

/// [`parse`] through serde alone (public for the fuzz target's comparison).
#[doc(hidden)]
pub fn parse_serde(text: &str, out: &mut Vec<Finding>) -> Option<(Index, Entries)> {
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
            let mut b = Builder::with_capacity(w.len(), w.iter().map(|e| e.0.len()).sum());
            for (name, file) in w {
                b.push(&name, file.as_deref().map_err(String::clone));
            }
            b
        })
    });
    Some(finish(metadata.map(serde_json::value::RawValue::get), wm, out))
}

/// The index from its `metadata` text and its `weight_map` (None: absent; Some(None): present
/// but not an object, already reported).
fn finish(metadata: Option<&str>, wm: Option<Option<Builder>>, out: &mut Vec<Finding>) -> (Index, Entries) {
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
            return (idx, Entries::default());
        }
        Some(None) => return (idx, Entries::default()),
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
struct Builder {
    shards: Vec<String>,
    tensors_per_shard: Vec<usize>,
    shard_ids: FxHashMap<String, u32>,
    /// Shard names repeat in runs: compare with the previous one before hashing.
    last: Option<u32>,
    entries: Entries,
    found: Vec<Finding>,
}

impl Builder {
    /// Room for `n` entries whose names take `names` bytes.
    fn with_capacity(n: usize, names: usize) -> Builder {
        Builder {
            shards: Vec::new(),
            tensors_per_shard: Vec::new(),
            shard_ids: FxHashMap::default(),
            last: None,
            entries: Entries::with_capacity(n, names),
            found: Vec::new(),
        }
    }

    fn push(&mut self, name: &str, file: Result<&str, String>) {
        let file = match file {
            Ok(f) => f,
            Err(v) => {
                self.found.push(
                    Finding::new(Code::IndexInvalid, format!("`weight_map[{name:?}]` is {v}, not a file name"))
                        .file(INDEX_NAME)
                        .tensor(name),
                );
                return;
            }
        };
        let id = match self.last {
            Some(id) if self.shards[id as usize] == file => id,
            _ => {
                let id = match self.shard_ids.get(file) {
                    Some(&id) => id,
                    None => {
                        if !is_safe_relative(file) {
                            self.found.push(
                                Finding::new(
                                    Code::IndexPathEscape,
                                    format!("shard path {file:?} for {name:?} escapes the checkpoint directory"),
                                )
                                .file(INDEX_NAME)
                                .tensor(name),
                            );
                            return;
                        }
                        let id = self.shards.len() as u32;
                        self.shards.push(file.to_string());
                        self.tensors_per_shard.push(0);
                        self.shard_ids.insert(file.to_string(), id);
                        id
                    }
                };
                self.last = Some(id);
                id
            }
        };
        self.tensors_per_shard[id as usize] += 1;
        self.entries.push(name, id);
    }
}

/// The hand-written pass: strict JSON for the shape every index has (an object whose
/// `weight_map` maps names to file names, strings with no escape), None for anything else. It
/// reads the text a piece at a time (see [`scan::Window`]): a file need not be held whole.
mod scan {
    use super::Builder;
    use crate::checkpoint::json::Cur;

    /// A read that failed, or text that is not UTF-8: the whole-text path names the problem.
    pub(super) struct Stop;

    /// Text the pass reads from the front, arriving in pieces.
    pub(super) trait Window {
        /// The text not consumed yet, as far as it has arrived.
        fn rest(&self) -> &str;
        fn consume(&mut self, n: usize);
        /// Append more text; false when there is none.
        fn more(&mut self) -> Result<bool, Stop>;
    }

    /// A whole text, there from the start.
    pub(super) struct Whole<'t>(pub(super) &'t str);

    impl Window for Whole<'_> {
        fn rest(&self) -> &str {
            self.0
        }
        fn consume(&mut self, n: usize) {
            self.0 = &self.0[n..];
        }
        fn more(&mut self) -> Result<bool, Stop> {
            Ok(false)
        }
    }

    /// A reader's bytes as they arrive, `chunk` at a time, checked as UTF-8 once each; the consumed
    /// front is dropped as more is appended, so only what one step spans is ever held.
    pub(super) struct Stream<R> {
        reader: R,
        chunk: usize,
        /// Bytes the reader may give; one more is an error (the file grew past its cap).
        cap: u64,
        read: u64,
        text: String,
        start: usize,
        /// Where the reader's bytes land (zeroed once, reused); its first `carry` bytes are a
        /// character the last read cut in two.
        raw: Vec<u8>,
        carry: usize,
    }

    impl<R: std::io::Read> Stream<R> {
        pub(super) fn new(reader: R, chunk: usize, cap: u64) -> Stream<R> {
            Stream {
                reader,
                chunk: chunk.max(1),
                cap,
                read: 0,
                text: String::new(),
                start: 0,
                raw: Vec::new(),
                carry: 0,
            }
        }
    }

    impl<R: std::io::Read> Window for Stream<R> {
        fn rest(&self) -> &str {
            &self.text[self.start..]
        }
        fn consume(&mut self, n: usize) {
            self.start += n;
        }
        fn more(&mut self) -> Result<bool, Stop> {
            if self.start > 0 {
                self.text.drain(..self.start);
                self.start = 0;
            }
            // At least what is held already: a value longer than a piece is rescanned from its
            // start each time, so the window doubles (linear time, not quadratic).
            let want = self.carry + self.chunk.max(self.text.len());
            if self.raw.len() < want {
                self.raw.resize(want, 0);
            }
            let n = loop {
                match self.reader.read(&mut self.raw[self.carry..want]) {
                    Ok(n) => break n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => return Err(Stop),
                }
            };
            self.read += n as u64;
            if self.read > self.cap {
                return Err(Stop);
            }
            let got = &self.raw[..self.carry + n];
            if n == 0 {
                // A character cut off by the end of the file is not UTF-8.
                return if got.is_empty() { Ok(false) } else { Err(Stop) };
            }
            let (valid, cut) = match std::str::from_utf8(got) {
                Ok(t) => (t, 0),
                // Cut at the end of this piece: the rest of the character comes with the next.
                Err(e) if e.error_len().is_none() => {
                    let t = std::str::from_utf8(&got[..e.valid_up_to()]).map_err(|_| Stop)?;
                    (t, got.len() - e.valid_up_to())
                }
                Err(_) => return Err(Stop),
            };
            self.text.push_str(valid);
            let end = got.len();
            self.raw.copy_within(end - cut..end, 0);
            self.carry = cut;
            Ok(true)
        }
    }

    /// Run `f` on the text from the front until it succeeds, with more text each time it runs
    /// out; consume what it read. None when it fails on the whole rest of the text: not the usual
    /// shape. `f` must change nothing outside itself until it succeeds (it is rerun).
    fn step<W: Window, T>(w: &mut W, mut f: impl FnMut(&mut Cur<'_>) -> Option<T>) -> Result<Option<T>, Stop> {
        loop {
            let mut c = Cur::new(w.rest());
            if let Some(v) = f(&mut c) {
                let n = c.i;
                w.consume(n);
                return Ok(Some(v));
            }
            if !w.more()? {
                return Ok(None);
            }
        }
    }

    /// What follows a member or an entry.
    #[derive(Clone, Copy, PartialEq)]
    enum Next {
        More,
        End,
    }

    impl Cur<'_> {
        /// An object's `{`, and whether its `}` follows at once (also consumed then).
        fn open(&mut self) -> Option<bool> {
            self.eat(b'{')?;
            let empty = self.peek()? == b'}';
            if empty {
                self.i += 1;
            }
            Some(empty)
        }
        fn next(&mut self) -> Option<Next> {
            match self.peek()? {
                b',' => {
                    self.i += 1;
                    Some(Next::More)
                }
                b'}' => {
                    self.i += 1;
                    Some(Next::End)
                }
                _ => None,
            }
        }
        /// Any JSON value, skipped: its text, which serde then checks (it is kept or ignored,
        /// never trusted unread).
        fn value(&mut self) -> Option<&str> {
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
    }

    /// `weight_map`'s object, its `{` to its `}`, into `b`.
    fn weight_map<W: Window>(w: &mut W, b: &mut Builder) -> Result<Option<()>, Stop> {
        match step(w, |c| c.open())? {
            None => return Ok(None),
            Some(true) => return Ok(Some(())),
            Some(false) => {}
        }
        loop {
            // One entry and what follows it, pushed only once all of it has been read.
            let next = step(w, |c| {
                let name = c.string()?;
                c.eat(b':')?;
                let file = c.string()?;
                let next = c.next()?;
                b.push(name, Ok(file));
                Some(next)
            })?;
            match next {
                None => return Ok(None),
                Some(Next::End) => return Ok(Some(())),
                Some(Next::More) => {}
            }
        }
    }

    /// The usual index from `w`: (`metadata`'s text, `weight_map`), None for any other shape;
    /// `len` is the text's length as far as known (for reserving).
    pub(super) fn index<W: Window>(w: &mut W, len: usize) -> Result<Option<(Option<String>, Builder)>, Stop> {
        // Real entries take ~90 bytes of text: reserved for one per 64, and the names for the
        // whole text (they are part of it). Capacity never written costs no page; growing by
        // copying would touch twice the memory.
        let mut b = Builder::with_capacity(len / 64, len);
        let Some(empty) = step(w, |c| c.open())? else {
            return Ok(None);
        };
        let (mut metadata, mut wm) = (None, false);
        if !empty {
            loop {
                #[derive(Clone, Copy)]
                enum Key {
                    WeightMap,
                    Metadata,
                    Other,
                }
                let Some(key) = step(w, |c| {
                    let key = match c.string()? {
                        "weight_map" => Key::WeightMap,
                        "metadata" => Key::Metadata,
                        _ => Key::Other,
                    };
                    c.eat(b':')?;
                    Some(key)
                })?
                else {
                    return Ok(None);
                };
                let read = match key {
                    // A repeated field is serde's error to word.
                    Key::WeightMap if wm => None,
                    Key::Metadata if metadata.is_some() => None,
                    Key::WeightMap => {
                        wm = true;
                        weight_map(w, &mut b)?
                    }
                    Key::Metadata => step(w, |c| c.value().map(str::to_string))?.map(|m| metadata = Some(m)),
                    Key::Other => step(w, |c| c.value().map(drop))?,
                };
                if read.is_none() {
                    return Ok(None);
                }
                match step(w, |c| c.next())? {
                    Some(Next::More) => {}
                    Some(Next::End) => break,
                    None => return Ok(None),
                }
            }
        }
        // Nothing but white space after the object, to the end of the text.
        loop {
            let mut c = Cur::new(w.rest());
            c.ws();
            let (n, all) = (c.i, c.i == c.b.len());
            if !all {
                return Ok(None);
            }
            w.consume(n);
            if !w.more()? {
                break;
            }
        }
        // No weight_map: serde's path reports it.
        Ok(wm.then_some((metadata, b)))
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

    /// Names kept as tails of their neighbours come back as they went in: shared prefixes,
    /// names that are prefixes of each other, repeats, empty names, and names that part in the
    /// middle of a multi-byte character.
    #[test]
    fn entries_give_back_every_name() {
        let names = [
            "model.layers.0.mlp.experts.12.up_proj.weight",
            "model.layers.0.mlp.experts.12.up_proj.weight_scale_inv",
            "model.layers.0.mlp.experts.12.up_proj.weight",
            "model.layers.0.mlp.experts.12.up_proj.weight",
            "model.layers.0.mlp",
            "",
            "",
            "model.layers.0.mlp",
            "模型.层.é",
            "模型.层.è",
            "模型.层",
            "模型.屋",
            "a",
            "model.layers.10.self_attn.q_proj.weight",
            "model.layers.1.self_attn.q_proj.weight",
        ];
        let mut e = Entries::with_capacity(0, 0);
        for (i, n) in names.iter().enumerate() {
            e.push(n, i as u32 % 3);
        }
        let mut back = Vec::new();
        e.for_each(|n, s| back.push((n.to_string(), s)));
        let want: Vec<(String, u32)> = names.iter().enumerate().map(|(i, n)| (n.to_string(), i as u32 % 3)).collect();
        assert_eq!(back, want);
        assert_eq!(e.len(), names.len());
        // Only what differs is stored: the second name adds its suffix alone.
        assert_eq!(e.meta[1].0 as usize, names[0].len());
        assert!(e.tails.len() < names.iter().map(|n| n.len()).sum::<usize>() / 2);
    }

    #[test]
    fn shared_prefix_as_byte_loop() {
        let slow = |a: &[u8], b: &[u8]| a.iter().zip(b).take_while(|(x, y)| x == y).count();
        let base: Vec<u8> = (0..40u8).map(|i| b'a' + i % 26).collect();
        for len_a in 0..base.len() {
            for len_b in 0..base.len() {
                for diff in 0..len_a.min(len_b).max(1) {
                    let a = &base[..len_a];
                    let mut b = base[..len_b].to_vec();
                    if diff < b.len() {
                        b[diff] ^= 0x20;
                    }
                    assert_eq!(shared_prefix(a, &b), slow(a, &b), "{len_a} {len_b} {diff}");
                }
            }
        }
    }

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
        let usual = |t: &str| matches!(scan::index(&mut scan::Whole(t), t.len()), Ok(Some(_)));
        for text in cases {
            let (mut a, mut b) = (Vec::new(), Vec::new());
            let fast = parse(text, &mut a);
            let slow = parse_serde(text, &mut b);
            assert_eq!(format!("{fast:?}"), format!("{slow:?}"), "{text}");
            assert_eq!(format!("{a:?}"), format!("{b:?}"), "{text}");
            // Streamed in pieces of every small size: the whole-text result where the shape is
            // the usual one, none otherwise (the caller then reads it whole).
            for chunk in [1, 2, 3, 5, 8, 1 << 18] {
                let mut c = Vec::new();
                let streamed = stream(text.as_bytes(), text.len() as u64, text.len() as u64, chunk, &mut c);
                match usual(text) {
                    true => {
                        assert_eq!(format!("{streamed:?}"), format!("{fast:?}"), "{text} by {chunk}");
                        assert_eq!(format!("{c:?}"), format!("{a:?}"), "{text} by {chunk}");
                    }
                    false => assert!(streamed.is_none() && c.is_empty(), "{text} by {chunk}"),
                }
            }
        }
        // The usual shape is the hand-written pass's (not handed over).
        assert!(usual(cases[0]) && usual(cases[1]) && usual(cases[3]));
        assert!(!usual(cases[4]) && !usual(cases[6]) && !usual(cases[8]));
    }

    /// A stream gives up (and the whole-text path takes over) on text that is not UTF-8, also when
    /// a piece ends inside a character, and on a reader that gives more than its cap; a character
    /// cut by a piece's end is joined with the next.
    #[test]
    fn stream_edges() {
        let text = "{\"weight_map\": {\"caf\u{e9}.weight\": \"m\u{e9}.safetensors\"}}";
        let whole = parse(text, &mut Vec::new());
        assert!(whole.is_some());
        for chunk in 1..8 {
            let s = stream(text.as_bytes(), 0, 1 << 20, chunk, &mut Vec::new());
            assert_eq!(format!("{s:?}"), format!("{whole:?}"), "by {chunk}");
        }
        let mut bad = text.as_bytes().to_vec();
        let at = text.find('\u{e9}').unwrap();
        bad[at + 1] = b'x'; // a lead byte with no continuation
        let mut cut = text.as_bytes().to_vec();
        cut.truncate(text.len() - 1);
        cut.extend_from_slice(b"}\xc3"); // the whole object, then a character cut off by the end
        for chunk in 1..8 {
            assert!(stream(&bad[..], 0, 1 << 20, chunk, &mut Vec::new()).is_none());
            assert!(stream(&cut[..], 0, 1 << 20, chunk, &mut Vec::new()).is_none());
        }
        // One byte past the cap: refused, as a bounded read refuses it.
        assert!(stream(text.as_bytes(), 0, text.len() as u64 - 1, 4, &mut Vec::new()).is_none());
        assert!(stream(text.as_bytes(), 0, text.len() as u64, 4, &mut Vec::new()).is_some());
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
