//! safetensors header validation: the one place that decides whether a header can be trusted.
//!
//! Unlike the reference parser, which stops at the first problem (and reports a duplicate name as
//! an offset error), this reports every problem it can see, each as a [`Finding`] naming the file,
//! the tensor and the byte offsets. Nothing here allocates from an unchecked header field: the
//! header length is checked against the cap and the file length before the header is looked at,
//! and every size is computed with checked arithmetic.

use super::dtype::Dtype;
use crate::findings::{Code, Finding};
use rustc_hash::FxHashMap;
use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::Deserialize as DeriveDeserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::fmt;

/// The header cap every mainstream loader enforces (safetensors `MAX_HEADER_SIZE`).
pub const MAX_HEADER_LEN: u64 = 100_000_000;

/// One tensor entry that passed validation. Offsets are relative to the data section.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub name: String,
    pub dtype: Dtype,
    pub shape: Shape,
    pub begin: u64,
    pub end: u64,
}

/// A tensor's dimensions: inline up to [`Shape::INLINE`] of them (every weight, scale and bias of
/// a transformer checkpoint), on the heap beyond. Reads as a `[u64]`; prints as a list.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Shape(ShapeRepr);

#[derive(Clone, PartialEq, Eq, Hash)]
enum ShapeRepr {
    Inline { len: u8, dims: [u64; Shape::INLINE] },
    Heap(Box<[u64]>),
}

impl Shape {
    pub const INLINE: usize = 4;

    pub fn new(dims: &[u64]) -> Shape {
        if dims.len() <= Self::INLINE {
            let mut inline = [0u64; Self::INLINE];
            inline[..dims.len()].copy_from_slice(dims);
            Shape(ShapeRepr::Inline { len: dims.len() as u8, dims: inline })
        } else {
            Shape(ShapeRepr::Heap(dims.into()))
        }
    }

    pub fn as_slice(&self) -> &[u64] {
        match &self.0 {
            ShapeRepr::Inline { len, dims } => &dims[..*len as usize],
            ShapeRepr::Heap(d) => d,
        }
    }
}

impl Default for Shape {
    fn default() -> Shape {
        Shape::new(&[])
    }
}

impl std::ops::Deref for Shape {
    type Target = [u64];
    fn deref(&self) -> &[u64] {
        self.as_slice()
    }
}

impl fmt::Debug for Shape {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        fmt::Debug::fmt(self.as_slice(), f)
    }
}

impl From<Vec<u64>> for Shape {
    fn from(v: Vec<u64>) -> Shape {
        Shape::new(&v)
    }
}

impl From<&[u64]> for Shape {
    fn from(v: &[u64]) -> Shape {
        Shape::new(v)
    }
}

impl From<Shape> for Vec<u64> {
    fn from(s: Shape) -> Vec<u64> {
        s.to_vec()
    }
}

impl<'a> IntoIterator for &'a Shape {
    type Item = &'a u64;
    type IntoIter = std::slice::Iter<'a, u64>;
    fn into_iter(self) -> Self::IntoIter {
        self.as_slice().iter()
    }
}

impl PartialEq<[u64]> for Shape {
    fn eq(&self, o: &[u64]) -> bool {
        self.as_slice() == o
    }
}

impl<const N: usize> PartialEq<[u64; N]> for Shape {
    fn eq(&self, o: &[u64; N]) -> bool {
        self.as_slice() == o.as_slice()
    }
}

impl PartialEq<Vec<u64>> for Shape {
    fn eq(&self, o: &Vec<u64>) -> bool {
        self.as_slice() == o.as_slice()
    }
}

impl PartialEq<Shape> for Vec<u64> {
    fn eq(&self, o: &Shape) -> bool {
        self.as_slice() == o.as_slice()
    }
}

impl PartialEq<Shape> for [u64] {
    fn eq(&self, o: &Shape) -> bool {
        self == o.as_slice()
    }
}

impl TensorEntry {
    pub fn nbytes(&self) -> u64 {
        self.end - self.begin
    }
    pub fn numel(&self) -> u64 {
        self.shape.iter().product()
    }
}

/// What a header yielded. `tensors` holds the entries a loader would see (for a duplicated
/// name, the last occurrence, as serde-based loaders keep), in header order.
#[derive(Debug, Default)]
pub struct Header {
    pub header_len: u64,
    /// Absolute file offset of the data section (8 + header_len).
    pub data_start: u64,
    pub tensors: Vec<TensorEntry>,
    pub metadata: Option<BTreeMap<String, String>>,
    /// False when the header could not be parsed at all (then `tensors` is empty).
    pub parsed: bool,
}

/// JSON object entries in document order, duplicates kept (serde_json's own map keeps only the
/// last). Values stay raw JSON text borrowed from the header: nothing is built for them until a
/// check needs it.
struct Entries<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Entries<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Entries<'a>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Entries<'a>, A::Error> {
                let mut v = Vec::with_capacity(m.size_hint().unwrap_or(0).min(4096));
                while let Some(k) = m.next_key::<Cow<'de, str>>()? {
                    let val: &'de RawValue = m.next_value()?;
                    v.push((k, val));
                }
                Ok(Entries(v))
            }
        }
        d.deserialize_map(V(std::marker::PhantomData))
    }
}

/// Parse a JSON object keeping duplicate keys, values as borrowed raw JSON.
pub(crate) fn parse_object_entries(text: &str) -> Result<Vec<(Cow<'_, str>, &RawValue)>, serde_json::Error> {
    serde_json::from_str::<Entries>(text).map(|e| e.0)
}

/// The shape of a well-formed entry: parsed directly, with no intermediate JSON tree. Anything it
/// rejects goes through [`check_entry`], which says exactly what is wrong.
#[derive(DeriveDeserialize)]
#[serde(deny_unknown_fields)]
struct FastEntry<'a> {
    #[serde(borrow)]
    dtype: Cow<'a, str>,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
}

/// One scan over a well-formed header, building the entries directly: typed values, known dtypes,
/// a string→string `__metadata__`. Any deviation (including an unknown dtype) fails the whole
/// parse, and [`validate`] falls back to the diagnostic path, which says exactly what is wrong.
struct Fast {
    entries: Vec<TensorEntry>,
    metadata: Option<BTreeMap<String, String>>,
}

impl<'de> Deserialize<'de> for Fast {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fast;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a safetensors header")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Fast, A::Error> {
                let mut entries = Vec::with_capacity(m.size_hint().unwrap_or(0).min(4096));
                let mut metadata = None;
                while let Some(k) = m.next_key::<Cow<'de, str>>()? {
                    if k == "__metadata__" {
                        metadata = Some(m.next_value::<BTreeMap<String, String>>()?);
                        continue;
                    }
                    let e: FastEntry<'de> = m.next_value()?;
                    let dtype = Dtype::parse(&e.dtype).ok_or_else(|| serde::de::Error::custom("unknown dtype"))?;
                    let (begin, end) = e.data_offsets;
                    entries.push(TensorEntry { name: k.into_owned(), dtype, shape: e.shape.into(), begin, end });
                }
                Ok(Fast { entries, metadata })
            }
        }
        d.deserialize_map(V)
    }
}

/// A direct scan of the header as safetensors writers emit it: one object of
/// `"name": {"dtype": "…", "shape": [..], "data_offsets": [b, e]}` entries (keys in any order, JSON
/// whitespace anywhere) and an optional string→string `__metadata__`. It accepts a strict subset of
/// what the serde path ([`Fast`]) accepts and builds the same entries; on anything else (an escape
/// in a string, a number with a sign, exponent or leading zero, a number past u64, an unknown or
/// repeated field, an unknown dtype, trailing text) it returns None and the serde path decides.
mod scan {
    use super::{Dtype, Fast, Shape, TensorEntry};
    use crate::checkpoint::json::Cur;
    use std::collections::BTreeMap;

    /// Dimensions as scanned: inline up to [`Shape::INLINE`], a vector beyond (rare).
    #[derive(Default)]
    struct SmallDims {
        len: usize,
        inline: [u64; Shape::INLINE],
        spill: Vec<u64>,
    }

    impl SmallDims {
        fn clear(&mut self) {
            self.len = 0;
            self.spill.clear();
        }
        fn push(&mut self, d: u64) {
            if self.len < Shape::INLINE {
                self.inline[self.len] = d;
            } else {
                if self.len == Shape::INLINE {
                    self.spill.extend_from_slice(&self.inline);
                }
                self.spill.push(d);
            }
            self.len += 1;
        }
        fn as_slice(&self) -> &[u64] {
            if self.len <= Shape::INLINE {
                &self.inline[..self.len]
            } else {
                &self.spill
            }
        }
    }

    impl<'a> Cur<'a> {
        /// A JSON non-negative integer that fits u64 (no sign, fraction, exponent or leading zero).
        fn uint(&mut self) -> Option<u64> {
            self.ws();
            let start = self.i;
            let mut v: u64 = 0;
            while let Some(&c) = self.b.get(self.i).filter(|c| c.is_ascii_digit()) {
                v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
                self.i += 1;
            }
            let n = self.i - start;
            if n == 0 || (n > 1 && self.b[start] == b'0') {
                return None;
            }
            match self.b.get(self.i) {
                Some(b'.' | b'e' | b'E') => None,
                _ => Some(v),
            }
        }
        /// A JSON array of such integers into `v` (cleared first): no allocation for the usual
        /// handful of dimensions.
        fn uints(&mut self, v: &mut SmallDims) -> Option<()> {
            self.eat(b'[')?;
            v.clear();
            if self.peek()? == b']' {
                self.i += 1;
                return Some(());
            }
            loop {
                v.push(self.uint()?);
                match self.peek()? {
                    b',' => self.i += 1,
                    b']' => {
                        self.i += 1;
                        return Some(());
                    }
                    _ => return None,
                }
            }
        }
        /// An entry's field name: the three a safetensors entry has are matched in place (no
        /// search for the closing quote); anything else is read as [`Cur::string`] reads it.
        fn field(&mut self) -> Option<&'a str> {
            const FIELDS: [&str; 3] = ["\"dtype\"", "\"shape\"", "\"data_offsets\""];
            self.ws();
            let rest = &self.b[self.i..];
            match FIELDS.iter().find(|f| rest.starts_with(f.as_bytes())) {
                Some(f) => {
                    self.i += f.len();
                    Some(&f[1..f.len() - 1])
                }
                None => self.string(),
            }
        }
        fn entry(&mut self, name: &str) -> Option<TensorEntry> {
            let mut dims = SmallDims::default();
            self.eat(b'{')?;
            let (mut dtype, mut shape, mut offsets) = (None, None, None);
            loop {
                match self.field()? {
                    "dtype" if dtype.is_none() => dtype = Some(Dtype::parse(self.after_colon()?.string()?)?),
                    "shape" if shape.is_none() => {
                        self.after_colon()?.uints(&mut dims)?;
                        shape = Some(Shape::new(dims.as_slice()));
                    }
                    "data_offsets" if offsets.is_none() => {
                        self.after_colon()?.uints(&mut dims)?;
                        offsets = Some(match *dims.as_slice() {
                            [b, e] => (b, e),
                            _ => return None,
                        });
                    }
                    _ => return None,
                }
                match self.peek()? {
                    b',' => self.i += 1,
                    b'}' => {
                        self.i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
            let (begin, end) = offsets?;
            Some(TensorEntry { name: name.to_string(), dtype: dtype?, shape: shape?, begin, end })
        }
        fn after_colon(&mut self) -> Option<&mut Self> {
            self.eat(b':')?;
            Some(self)
        }
        fn metadata(&mut self) -> Option<BTreeMap<String, String>> {
            self.eat(b'{')?;
            let mut m = BTreeMap::new();
            if self.peek()? == b'}' {
                self.i += 1;
                return Some(m);
            }
            loop {
                let k = self.string()?;
                let v = self.after_colon()?.string()?;
                if m.insert(k.to_string(), v.to_string()).is_some() {
                    return None; // a repeated key: the serde path keeps the last; let it
                }
                match self.peek()? {
                    b',' => self.i += 1,
                    b'}' => {
                        self.i += 1;
                        return Some(m);
                    }
                    _ => return None,
                }
            }
        }
    }

    pub(super) fn header(text: &str) -> Option<Fast> {
        let mut c = Cur::new(text);
        c.eat(b'{')?;
        let mut entries = Vec::with_capacity(text.len() / 100);
        let mut metadata = None;
        if c.peek()? == b'}' {
            c.i += 1;
        } else {
            loop {
                let name = c.string()?;
                c.eat(b':')?;
                if name == "__metadata__" {
                    if metadata.is_some() {
                        return None;
                    }
                    metadata = Some(c.metadata()?);
                } else {
                    entries.push(c.entry(name)?);
                }
                match c.peek()? {
                    b',' => c.i += 1,
                    b'}' => {
                        c.i += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        c.ws();
        (c.i == c.b.len()).then_some(Fast { entries, metadata })
    }
}

/// Byte offset (0-based) in `text` of a serde_json error's line/column.
pub(crate) fn error_offset(text: &str, e: &serde_json::Error) -> usize {
    let (line, col) = (e.line(), e.column());
    if line == 0 {
        return 0;
    }
    let mut off = 0usize;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i + 1 == line {
            return off + col.saturating_sub(1).min(l.len());
        }
        off += l.len();
    }
    text.len()
}

const LFS_MAGIC: &[u8] = b"version https://git-lfs";

/// How many leading bytes [`validate_prefix`] needs to see of a file whose first 8 bytes are
/// `first8` and whose length is `file_len`: the whole header when its length is plausible, else
/// enough to recognise a Git LFS pointer. Never more than the header cap plus 8, nor the file.
pub fn prefix_len(first8: &[u8], file_len: u64) -> u64 {
    let lfs = 512.min(file_len);
    match first8.get(..8) {
        Some(b) => {
            let n = u64::from_le_bytes(b.try_into().expect("8 bytes"));
            if n <= MAX_HEADER_LEN && 8 + n <= file_len {
                (8 + n).max(lfs)
            } else {
                lfs
            }
        }
        None => lfs,
    }
}

/// Validate the whole file image `buf`. `file` names it in findings.
pub fn validate(buf: &[u8], file: &str, out: &mut Vec<Finding>) -> Header {
    validate_prefix(buf, buf.len() as u64, file, out)
}

/// Validate a file of `file_len` bytes from its first bytes `buf` (at least
/// [`prefix_len`] of them: the header; the data section is never needed).
pub fn validate_prefix(buf: &[u8], file_len: u64, file: &str, out: &mut Vec<Finding>) -> Header {
    let mut h = Header::default();
    let len = file_len;
    if len == 0 {
        out.push(Finding::new(Code::FileEmpty, format!("{file} is empty (0 bytes)")).file(file));
        return h;
    }
    if buf.starts_with(LFS_MAGIC) {
        let oid = std::str::from_utf8(&buf[..buf.len().min(512)])
            .ok()
            .and_then(|t| t.lines().find(|l| l.starts_with("oid ")).map(|l| l[4..].to_string()))
            .unwrap_or_default();
        out.push(
            Finding::new(
                Code::LfsPointer,
                format!(
                    "{file} is a Git LFS pointer file ({len} bytes{}), not safetensors data: the download is incomplete",
                    if oid.is_empty() { String::new() } else { format!(", {oid}") }
                ),
            )
            .file(file),
        );
        return h;
    }
    if len < 8 || buf.len() < 8 {
        out.push(
            Finding::new(
                Code::HeaderTooSmall,
                format!("{file} has {len} bytes; at least 8 are needed for the header length"),
            )
            .file(file),
        );
        return h;
    }
    let n = u64::from_le_bytes(buf[..8].try_into().expect("8 bytes"));
    if n > MAX_HEADER_LEN {
        out.push(
            Finding::new(
                Code::HeaderTooLarge,
                format!("header length at byte 0 is {n}, above the cap of {MAX_HEADER_LEN} (file is {len} bytes)"),
            )
            .file(file),
        );
        return h;
    }
    if 8 + n > len || 8 + n > buf.len() as u64 {
        out.push(
            Finding::new(
                Code::HeaderPastEof,
                format!("header length at byte 0 is {n}, so the header ends at byte {}, past the end of the {len}-byte file", 8 + n),
            )
            .file(file),
        );
        return h;
    }
    h.header_len = n;
    h.data_start = 8 + n;
    let raw = &buf[8..(8 + n) as usize];
    let text = match std::str::from_utf8(raw) {
        Ok(t) => t,
        Err(e) => {
            out.push(
                Finding::new(
                    Code::HeaderNotUtf8,
                    format!("header byte {} (file offset {}) is not valid UTF-8", e.valid_up_to(), 8 + e.valid_up_to()),
                )
                .file(file),
            );
            return h;
        }
    };
    if let Some(Fast { entries, metadata }) = scan::header(text).or_else(|| serde_json::from_str::<Fast>(text).ok()) {
        if let Some(h2) = validate_fast(entries, metadata, &h, len, file, out) {
            return h2;
        }
    }
    let entries = match parse_object_entries(text) {
        Ok(e) => e,
        Err(e) => {
            let off = error_offset(text, &e);
            let code = if e.classify() == serde_json::error::Category::Data {
                Code::HeaderNotObject
            } else {
                Code::HeaderNotJson
            };
            out.push(Finding::new(code, format!("header at byte {off} (file offset {}): {e}", 8 + off)).file(file));
            return h;
        }
    };
    h.parsed = true;

    // Duplicates: name both occurrences.
    let mut first_seen: FxHashMap<&str, usize> = FxHashMap::default();
    first_seen.reserve(entries.len());
    let mut dup_of: Vec<Option<usize>> = vec![None; entries.len()];
    for (i, (k, _)) in entries.iter().enumerate() {
        if let Some(&j) = first_seen.get(k.as_ref()) {
            dup_of[i] = Some(j);
        } else {
            first_seen.insert(k.as_ref(), i);
        }
    }

    // Every entry that describes a byte range, duplicates included, takes part in the layout walk.
    let mut ranged: Vec<TensorEntry> = Vec::with_capacity(entries.len());
    let any_dup = dup_of.iter().any(Option::is_some);
    let mut last_index: FxHashMap<&str, usize> = FxHashMap::default();
    for (i, (name, raw)) in entries.iter().enumerate() {
        let name: &str = name.as_ref();
        if name == "__metadata__" {
            h.metadata = check_metadata(&to_value(raw), file, out);
            continue;
        }
        if let Some(j) = dup_of[i] {
            out.push(
                Finding::new(
                    Code::DuplicateTensor,
                    format!(
                        "tensor {name:?} appears twice in the header: entry #{j} {} and entry #{i} {}; loaders keep only the last",
                        brief(&to_value(entries[j].1)),
                        brief(&to_value(raw))
                    ),
                )
                .file(file)
                .tensor(name),
            );
        }
        let entry = match serde_json::from_str::<FastEntry>(raw.get()) {
            Ok(e) => match Dtype::parse(&e.dtype) {
                Some(dtype) => check_sizes(name, dtype, &e.shape, e.data_offsets, file, out).then(|| TensorEntry {
                    name: name.to_string(),
                    dtype,
                    shape: e.shape.into(),
                    begin: e.data_offsets.0,
                    end: e.data_offsets.1,
                }),
                None => check_entry(name, &to_value(raw), file, out),
            },
            Err(_) => check_entry(name, &to_value(raw), file, out),
        };
        if let Some(t) = entry {
            if any_dup {
                last_index.insert(name, ranged.len());
            }
            ranged.push(t);
        }
    }
    check_layout(&ranged, len - h.data_start, h.data_start, file, out);

    // What a loader sees: the last occurrence of each name, in header order.
    h.tensors = if any_dup {
        ranged
            .iter()
            .enumerate()
            .filter(|(i, t)| last_index.get(t.name.as_str()) == Some(i))
            .map(|(_, t)| t.clone())
            .collect()
    } else {
        ranged
    };
    h
}

/// The common case: a header that parsed in one typed scan. Returns None (nothing reported) when
/// a name repeats, so the diagnostic path can describe the duplicate in full.
fn validate_fast(
    entries: Vec<TensorEntry>,
    metadata: Option<BTreeMap<String, String>>,
    h0: &Header,
    len: u64,
    file: &str,
    out: &mut Vec<Finding>,
) -> Option<Header> {
    let mut seen: FxHashMap<&str, ()> = FxHashMap::default();
    seen.reserve(entries.len());
    for t in &entries {
        if seen.insert(t.name.as_str(), ()).is_some() {
            return None;
        }
    }
    drop(seen);
    let mut found = Vec::new();
    let mut ranged = entries;
    ranged.retain(|t| check_sizes(&t.name, t.dtype, &t.shape, (t.begin, t.end), file, &mut found));
    check_layout(&ranged, len - h0.data_start, h0.data_start, file, &mut found);
    out.extend(found);
    Some(Header { header_len: h0.header_len, data_start: h0.data_start, tensors: ranged, metadata, parsed: true })
}

fn to_value(raw: &RawValue) -> serde_json::Value {
    serde_json::from_str(raw.get()).unwrap_or(serde_json::Value::Null)
}

fn brief(v: &serde_json::Value) -> String {
    let o = v.as_object();
    let get = |k: &str| o.and_then(|o| o.get(k)).map(|v| v.to_string()).unwrap_or_else(|| "?".into());
    format!("(dtype {}, shape {}, data_offsets {})", get("dtype"), get("shape"), get("data_offsets"))
}

fn check_metadata(v: &serde_json::Value, file: &str, out: &mut Vec<Finding>) -> Option<BTreeMap<String, String>> {
    let Some(obj) = v.as_object() else {
        out.push(
            Finding::new(Code::MetadataInvalid, format!("`__metadata__` is {}, not an object", kind(v))).file(file),
        );
        return None;
    };
    let mut m = BTreeMap::new();
    for (k, val) in obj {
        match val.as_str() {
            Some(s) => {
                m.insert(k.clone(), s.to_string());
            }
            None => out.push(
                Finding::new(
                    Code::MetadataInvalid,
                    format!("`__metadata__` key {k:?} holds {}, not a string", kind(val)),
                )
                .file(file),
            ),
        }
    }
    Some(m)
}

fn kind(v: &serde_json::Value) -> &'static str {
    match v {
        serde_json::Value::Null => "null",
        serde_json::Value::Bool(_) => "a boolean",
        serde_json::Value::Number(_) => "a number",
        serde_json::Value::String(_) => "a string",
        serde_json::Value::Array(_) => "an array",
        serde_json::Value::Object(_) => "an object",
    }
}

/// Read a non-negative integer that fits in u64.
fn as_u64(v: &serde_json::Value) -> Option<u64> {
    v.as_u64()
}

fn check_entry(name: &str, v: &serde_json::Value, file: &str, out: &mut Vec<Finding>) -> Option<TensorEntry> {
    let f = |code: Code, msg: String| Finding::new(code, msg).file(file).tensor(name);
    let Some(obj) = v.as_object() else {
        out.push(f(Code::TensorEntryInvalid, format!("entry for {name:?} is {}, not an object", kind(v))));
        return None;
    };
    let mut ok = true;
    for key in obj.keys() {
        if !matches!(key.as_str(), "dtype" | "shape" | "data_offsets") {
            out.push(f(Code::TensorFieldUnknown, format!("entry for {name:?} has an unknown field {key:?}")));
        }
    }
    for key in ["dtype", "shape", "data_offsets"] {
        if !obj.contains_key(key) {
            out.push(f(Code::TensorFieldMissing, format!("entry for {name:?} has no `{key}` field")));
            ok = false;
        }
    }
    let dtype = match obj.get("dtype") {
        None => None,
        Some(serde_json::Value::String(s)) => match Dtype::parse(s) {
            Some(d) => Some(d),
            None => {
                out.push(f(
                    Code::DtypeUnknown,
                    format!("{name:?} has unknown dtype {s:?}; known: {}", Dtype::known_list()),
                ));
                None
            }
        },
        Some(other) => {
            out.push(f(Code::TensorFieldType, format!("{name:?}: `dtype` is {}, not a string", kind(other))));
            None
        }
    };
    let shape: Option<Vec<u64>> = match obj.get("shape") {
        None => None,
        Some(serde_json::Value::Array(dims)) => {
            let mut s = Vec::with_capacity(dims.len());
            let mut good = true;
            for (i, d) in dims.iter().enumerate() {
                match as_u64(d) {
                    Some(x) => s.push(x),
                    None => {
                        let why = if d.as_i64().is_some_and(|x| x < 0) {
                            "negative".to_string()
                        } else if d.is_number() {
                            format!("not an integer that fits in 64 bits ({d})")
                        } else {
                            format!("{} ({d})", kind(d))
                        };
                        out.push(f(Code::ShapeInvalid, format!("{name:?}: shape dimension {i} is {why}")));
                        good = false;
                    }
                }
            }
            good.then_some(s)
        }
        Some(other) => {
            out.push(f(Code::TensorFieldType, format!("{name:?}: `shape` is {}, not an array", kind(other))));
            None
        }
    };
    let offsets: Option<(u64, u64)> = match obj.get("data_offsets") {
        None => None,
        Some(serde_json::Value::Array(a)) if a.len() != 2 => {
            out.push(f(Code::DataOffsetsArity, format!("{name:?}: `data_offsets` has {} elements, not 2", a.len())));
            None
        }
        Some(serde_json::Value::Array(a)) => match (as_u64(&a[0]), as_u64(&a[1])) {
            (Some(b), Some(e)) => Some((b, e)),
            _ => {
                out.push(f(
                    Code::TensorFieldType,
                    format!("{name:?}: `data_offsets` {} are not two non-negative 64-bit integers", v["data_offsets"]),
                ));
                None
            }
        },
        Some(other) => {
            out.push(f(Code::TensorFieldType, format!("{name:?}: `data_offsets` is {}, not an array", kind(other))));
            None
        }
    };
    match (dtype, shape, offsets) {
        (Some(d), Some(s), Some(o)) if ok => check_sizes(name, d, &s, o, file, out).then(|| TensorEntry {
            name: name.to_string(),
            dtype: d,
            shape: s.into(),
            begin: o.0,
            end: o.1,
        }),
        _ => None,
    }
}

/// The arithmetic half of entry validation: offsets order, overflow, sub-byte alignment, size.
/// False when the entry cannot take part in the layout (its range is unusable).
fn check_sizes(
    name: &str,
    dtype: Dtype,
    shape: &[u64],
    (begin, end): (u64, u64),
    file: &str,
    out: &mut Vec<Finding>,
) -> bool {
    let f = |code: Code, msg: String| Finding::new(code, msg).file(file).tensor(name);
    if end < begin {
        out.push(f(Code::OffsetsReversed, format!("{name:?}: data_offsets end {end} is before begin {begin}")));
        return false;
    }
    let numel = shape.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
    let bits = numel.and_then(|n| n.checked_mul(dtype.bits()));
    let Some(bits) = bits else {
        out.push(f(Code::SizeOverflow, format!("{name:?}: shape {shape:?} x {dtype} overflows 64 bits")));
        return false;
    };
    if bits % 8 != 0 {
        out.push(f(
            Code::SubByteMisaligned,
            format!("{name:?}: shape {shape:?} of {dtype} is {bits} bits, not a whole number of bytes"),
        ));
        return false;
    }
    let expected = bits / 8;
    if end - begin != expected {
        out.push(f(
            Code::SizeMismatch,
            format!(
                "{name:?}: data_offsets [{begin}, {end}) hold {} bytes but shape {shape:?} x {dtype} needs {expected}",
                end - begin
            ),
        ));
        // Keep the range: it still takes part in overlap and hole detection.
    }
    true
}

/// A data-section offset as a file offset. Declared offsets may be anywhere up to 2^64 - 1, so the
/// sum is taken in 128 bits: messages print the values as declared, never a wrapped number.
fn file_off(data_start: u64, off: u64) -> u128 {
    u128::from(data_start) + u128::from(off)
}

/// One walk over the ranges sorted by offset proves contiguity: no overlap, no hole, full coverage.
fn check_layout(ranged: &[TensorEntry], data_len: u64, data_start: u64, file: &str, out: &mut Vec<Finding>) {
    let mut order: Vec<usize> = (0..ranged.len()).collect();
    order.sort_by_key(|&i| (ranged[i].begin, ranged[i].end));
    let mut cursor = 0u64;
    let mut cursor_owner: Option<usize> = None;
    for &i in &order {
        let t = &ranged[i];
        if t.begin == t.end {
            // Empty tensors occupy no bytes; they may sit at any offset inside the buffer.
            continue;
        }
        if t.begin > cursor {
            out.push(
                Finding::new(
                    Code::DataHole,
                    format!(
                        "data bytes [{cursor}, {}) (file offsets [{}, {})) belong to no tensor (before {:?})",
                        t.begin,
                        file_off(data_start, cursor),
                        file_off(data_start, t.begin),
                        t.name
                    ),
                )
                .file(file)
                .tensor(t.name.clone()),
            );
        } else if t.begin < cursor {
            let other = cursor_owner.map(|o| ranged[o].name.as_str()).unwrap_or("?");
            out.push(
                Finding::new(
                    Code::TensorOverlap,
                    format!("{:?} [{}, {}) overlaps {other:?} which ends at {cursor}", t.name, t.begin, t.end),
                )
                .file(file)
                .tensor(t.name.clone()),
            );
        }
        if t.end > cursor {
            cursor = t.end;
            cursor_owner = Some(i);
        }
    }
    if cursor > data_len {
        let first_past = order.iter().map(|&i| &ranged[i]).find(|t| t.end > data_len);
        out.push(
            Finding::new(
                Code::FileTruncated,
                format!(
                    "file is truncated by {} bytes: tensors need data up to file offset {}, the file ends at {}{}",
                    cursor - data_len,
                    file_off(data_start, cursor),
                    file_off(data_start, data_len),
                    first_past.map(|t| format!("; first tensor past the end: {:?}", t.name)).unwrap_or_default()
                ),
            )
            .file(file),
        );
    } else if cursor < data_len {
        out.push(
            Finding::new(
                Code::TrailingBytes,
                format!(
                    "{} trailing bytes after the last tensor: file offsets [{}, {})",
                    data_len - cursor,
                    file_off(data_start, cursor),
                    file_off(data_start, data_len)
                ),
            )
            .file(file),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn summary(f: &Fast) -> Vec<(String, &'static str, Vec<u64>, u64, u64)> {
        f.entries.iter().map(|t| (t.name.clone(), t.dtype.as_str(), t.shape.to_vec(), t.begin, t.end)).collect()
    }

    /// The direct scan accepts only what the serde path accepts, and builds the same entries; what
    /// it declines (escapes, odd numbers, unknown fields) the serde path still decides.
    #[test]
    fn the_scan_agrees_with_serde_or_declines() {
        let e = r#""dtype":"F32","shape":[2,3],"data_offsets":[0,24]"#;
        let cases = [
            format!(r#"{{"a.weight":{{{e}}}}}"#),
            format!(" {{ \"a\" : {{ {e} }} ,\n\t\"b\":{{\"data_offsets\":[24,24],\"shape\":[0],\"dtype\":\"BF16\"}} }} \r\n"),
            format!(r#"{{"__metadata__":{{"format":"pt"}},"a":{{{e}}}}}"#),
            format!(r#"{{"__metadata__":{{}},"a":{{{e}}}}}"#),
            "{}".to_string(),
            r#"{"a":{"dtype":"F32","shape":[],"data_offsets":[0,4]}}"#.to_string(),
            // declined by the scan: escapes, leading zeros, signs, floats, extra or missing fields,
            // repeated fields, trailing text, an unknown dtype, a big number
            format!(r#"{{"a\u0041":{{{e}}}}}"#),
            r#"{"a":{"dtype":"F32","shape":[02],"data_offsets":[0,8]}}"#.to_string(),
            r#"{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}"#.to_string(),
            r#"{"a":{"dtype":"F32","shape":[2.0],"data_offsets":[0,8]}}"#.to_string(),
            r#"{"a":{"dtype":"F32","shape":[2e0],"data_offsets":[0,8]}}"#.to_string(),
            format!(r#"{{"a":{{{e},"x":1}}}}"#),
            r#"{"a":{"dtype":"F32","shape":[2]}}"#.to_string(),
            format!(r#"{{"a":{{{e},"dtype":"F32"}}}}"#),
            format!(r#"{{"a":{{{e}}}}} x"#),
            r#"{"a":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}"#.to_string(),
            r#"{"a":{"dtype":"F32","shape":[18446744073709551616],"data_offsets":[0,8]}}"#.to_string(),
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8,9]}}"#.to_string(),
            format!(r#"{{"__metadata__":{{"k":"v","k":"w"}},"a":{{{e}}}}}"#),
            format!(r#"{{"a":{{{e}}},}}"#),
            "{\"a\x01\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}".to_string(),
        ];
        let mut scanned = 0;
        for text in &cases {
            let serde = serde_json::from_str::<Fast>(text).ok();
            if let Some(f) = scan::header(text) {
                scanned += 1;
                let s = serde.unwrap_or_else(|| panic!("the scan accepted what serde rejects: {text}"));
                assert_eq!(summary(&f), summary(&s), "{text}");
                assert_eq!(f.metadata, s.metadata, "{text}");
            }
        }
        assert_eq!(scanned, 6, "the well-formed cases are scanned");
    }

    /// The same property on 40,000 deterministic one- and two-byte mutations of a real-looking
    /// header (a differential check beside the cargo-fuzz targets).
    #[test]
    fn mutated_headers_scan_only_as_serde_reads_them() {
        let base = r#"{"__metadata__":{"format":"pt"},"model.layers.0.mlp.experts.7.w1.weight":{"dtype":"F8_E4M3","shape":[2048,7168],"data_offsets":[0,14680064]},"b":{"shape":[1],"dtype":"F32","data_offsets":[14680064,14680068]}}"#;
        let alphabet: &[u8] = b"\"\\{}[]:,0123456789-+.eE \t\nabF\x01\x7f";
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let (mut scanned, mut declined) = (0, 0);
        for _ in 0..40_000 {
            let mut b = base.as_bytes().to_vec();
            for _ in 0..1 + next() % 2 {
                let at = (next() % b.len() as u64) as usize;
                let c = alphabet[(next() % alphabet.len() as u64) as usize];
                match next() % 3 {
                    0 => b[at] = c,
                    1 => b.insert(at, c),
                    _ => {
                        b.remove(at);
                    }
                }
            }
            let Ok(text) = std::str::from_utf8(&b) else { continue };
            match scan::header(text) {
                Some(f) => {
                    scanned += 1;
                    let s = serde_json::from_str::<Fast>(text)
                        .unwrap_or_else(|e| panic!("the scan accepted what serde rejects ({e}): {text}"));
                    assert_eq!(summary(&f), summary(&s), "{text}");
                    assert_eq!(f.metadata, s.metadata, "{text}");
                }
                None => declined += 1,
            }
        }
        assert!(scanned > 1000 && declined > 1000, "{scanned} scanned, {declined} declined");
    }

    fn file_with(header: &str, data_len: usize) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend(std::iter::repeat_n(0u8, data_len));
        v
    }

    fn codes(buf: &[u8]) -> Vec<&'static str> {
        let mut out = vec![];
        validate(buf, "f", &mut out);
        out.iter().map(|f| f.code.as_str()).collect()
    }

    #[test]
    fn valid_file_has_no_findings() {
        let b = file_with(
            r#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"BF16","shape":[],"data_offsets":[8,10]}}"#,
            10,
        );
        let mut out = vec![];
        let h = validate(&b, "f", &mut out);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(h.tensors.len(), 2);
        assert_eq!(h.tensors[1].shape, Vec::<u64>::new());
    }

    #[test]
    fn duplicate_names_are_named_not_misreported() {
        let b = file_with(
            r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"a":{"dtype":"U8","shape":[2],"data_offsets":[2,4]}}"#,
            4,
        );
        assert_eq!(codes(&b), vec!["duplicate-tensor"]);
    }

    #[test]
    fn many_problems_reported_together() {
        let b = file_with(
            r#"{"a":{"dtype":"X9","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[-1],"data_offsets":[2,4]},"c":{"dtype":"U8","shape":[3],"data_offsets":[4,6]},"d":{"dtype":"U8","shape":[2],"data_offsets":[9,7]}}"#,
            6,
        );
        let c = codes(&b);
        for want in ["dtype-unknown", "shape-invalid", "size-mismatch", "offsets-reversed"] {
            assert!(c.contains(&want), "{want} missing from {c:?}");
        }
    }

    #[test]
    fn shape_overflow_is_caught() {
        let b =
            file_with(r#"{"a":{"dtype":"F32","shape":[4194305,4194305,211106198978564],"data_offsets":[0,16]}}"#, 16);
        assert!(codes(&b).contains(&"size-overflow"));
    }

    #[test]
    fn sub_byte_must_be_whole_bytes() {
        let b = file_with(r#"{"a":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}"#, 2);
        assert_eq!(codes(&b), vec!["sub-byte-misaligned", "trailing-bytes"]);
    }

    #[test]
    fn header_length_guards() {
        assert_eq!(codes(&[]), vec!["file-empty"]);
        assert_eq!(codes(&[1, 2, 3]), vec!["header-too-small"]);
        let mut huge = (u64::MAX).to_le_bytes().to_vec();
        huge.extend_from_slice(b"{}");
        assert_eq!(codes(&huge), vec!["header-too-large"]);
        let mut past = 1000u64.to_le_bytes().to_vec();
        past.extend_from_slice(b"{}");
        assert_eq!(codes(&past), vec!["header-past-eof"]);
    }

    /// Offsets near 2^64 used to overflow `data_start + begin` (a panic in debug and fuzz builds, a
    /// wrapped "file offsets [99, 97)" in release). Now the declared values are printed.
    #[test]
    fn offsets_near_u64_max_are_reported_as_declared() {
        let b = file_with(
            r#"{"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},"b":{"dtype":"U8","shape":[4],"data_offsets":[18446744073709551610,18446744073709551614]}}"#,
            2,
        );
        let mut out = vec![];
        validate(&b, "f", &mut out);
        let all: String = out.iter().map(|f| format!("{}: {}\n", f.code.as_str(), f.message)).collect();
        assert!(all.contains("data-hole"), "{all}");
        assert!(all.contains("file-truncated"), "{all}");
        let declared = 18446744073709551610u128 + 8 + (b.len() as u128 - 8 - 2);
        assert!(all.contains(&declared.to_string()), "file offset printed unwrapped: {all}");
    }

    #[test]
    fn metadata_must_be_strings() {
        let b = file_with(r#"{"__metadata__":{"format":"pt","n":3}}"#, 0);
        assert_eq!(codes(&b), vec!["metadata-invalid"]);
    }

    #[test]
    fn header_padding_with_spaces_is_accepted() {
        let b = file_with("{}      ", 0);
        assert!(codes(&b).is_empty());
    }
}
