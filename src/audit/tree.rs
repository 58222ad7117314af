//! The key-prefix tree: tensor names with layer and expert indices folded into ranges, e.g.
//! `model.layers.{3..60}.mlp.experts.{0..255}.down_proj.weight`, with counts and bytes.

use super::names::ranges;
use crate::checkpoint::Checkpoint;
use rayon::slice::ParallelSliceMut;
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::fmt::Write as _;

#[derive(Debug, Clone, Serialize)]
pub struct TreeRow {
    pub pattern: String,
    pub count: usize,
    pub bytes: u64,
    pub dtypes: Vec<String>,
}

#[derive(Default)]
struct Acc {
    count: usize,
    bytes: u64,
    /// Bit `i`: `Dtype::ALL[i]` occurs.
    dtypes: u64,
    /// The values each index position takes.
    indices: Vec<IndexSet>,
}

/// The distinct values of one index position: a bitmap for the small numbers layer and expert
/// indices are (no sort: a pattern folding 15k expert tensors sees each value ~58 times), a list
/// for the rest, sorted and deduplicated at the end.
#[derive(Default)]
struct IndexSet {
    bits: Vec<u64>,
    /// Values from [`IndexSet::BITMAP_LIMIT`] up, as seen (consecutive repeats dropped).
    large: Vec<u64>,
}

impl IndexSet {
    /// At most 512 bytes of bitmap per index position, however large a name's number.
    const BITMAP_LIMIT: u64 = 4096;

    fn insert(&mut self, n: u64) {
        if n < Self::BITMAP_LIMIT {
            let w = (n / 64) as usize;
            if w >= self.bits.len() {
                self.bits.resize(w + 1, 0);
            }
            self.bits[w] |= 1 << (n % 64);
        } else if self.large.last() != Some(&n) {
            self.large.push(n);
        }
    }

    /// Every value once, ascending.
    fn into_sorted(mut self) -> Vec<u64> {
        let mut out: Vec<u64> = Vec::new();
        for (w, &word) in self.bits.iter().enumerate() {
            let mut word = word;
            while word != 0 {
                out.push(w as u64 * 64 + u64::from(word.trailing_zeros()));
                word &= word - 1;
            }
        }
        self.large.sort_unstable();
        self.large.dedup();
        out.extend(self.large);
        out
    }
}

/// A name segment that is a plain decimal index (`0`, `12`; not `012`, `+1` or `1e3`).
fn index_segment(seg: &str) -> Option<u64> {
    let b = seg.as_bytes();
    if b.is_empty() || (b.len() > 1 && b[0] == b'0') {
        return None;
    }
    // Digits only, read as they are checked (None past u64, as `parse` gives).
    b.iter().try_fold(0u64, |v, &c| match c {
        b'0'..=b'9' => v.checked_mul(10)?.checked_add(u64::from(c - b'0')),
        _ => None,
    })
}

impl IndexSet {
    /// The values of both.
    fn merge(&mut self, other: IndexSet) {
        if other.bits.len() > self.bits.len() {
            self.bits.resize(other.bits.len(), 0);
        }
        for (a, b) in self.bits.iter_mut().zip(&other.bits) {
            *a |= b;
        }
        self.large.extend(other.large);
    }
}

impl Acc {
    /// Both groups of one pattern as one.
    fn merge(&mut self, other: Acc) {
        self.count += other.count;
        self.bytes += other.bytes;
        self.dtypes |= other.dtypes;
        if other.indices.len() > self.indices.len() {
            self.indices.resize_with(other.indices.len(), IndexSet::default);
        }
        for (a, b) in self.indices.iter_mut().zip(other.indices) {
            a.merge(b);
        }
    }
}

pub fn fold(ck: &Checkpoint) -> Vec<TreeRow> {
    // The shards in two halves of about as many tensors, folded side by side and merged (the
    // rows are sorted at the end, so the groups' order does not matter): the fold is one of the
    // audit's passes, and a pass that cannot be split is what the other core waits for at the end.
    let half = ck.tensor_count() / 2;
    let mut seen = 0;
    let split = ck
        .shards
        .iter()
        .position(|s| {
            seen += s.tensors().len();
            seen > half
        })
        .map_or(ck.shards.len(), |i| i + 1);
    let (mut groups, other) = rayon::join(|| fold_shards(&ck.shards[..split]), || fold_shards(&ck.shards[split..]));
    merge(&mut groups, other);
    rows(groups)
}

/// `other`'s groups into `groups`.
fn merge(groups: &mut FxHashMap<String, Acc>, other: FxHashMap<String, Acc>) {
    for (key, acc) in other {
        match groups.get_mut(key.as_str()) {
            Some(a) => a.merge(acc),
            None => {
                groups.insert(key, acc);
            }
        }
    }
}

/// Each pattern's tensors in `shards`.
fn fold_shards(shards: &[crate::checkpoint::Shard]) -> FxHashMap<String, Acc> {
    use crate::checkpoint::Dtype;
    let mut groups: FxHashMap<String, Acc> = FxHashMap::default();
    let mut key = String::new();
    let mut idx: Vec<u64> = Vec::new();
    for t in shards.iter().flat_map(|s| s.tensors()) {
        key.clear();
        idx.clear();
        // The name with each index segment as `{}`.
        let name = t.name.as_str();
        let mut copied = 0;
        for (i, j) in crate::checkpoint::names::digit_segments(name) {
            if let Some(n) = index_segment(&name[i..j]) {
                key.push_str(&name[copied..i]);
                key.push_str("{}");
                idx.push(n);
                copied = j;
            }
        }
        key.push_str(&name[copied..]);
        let acc = match groups.get_mut(key.as_str()) {
            Some(a) => a,
            None => groups.entry(key.clone()).or_default(),
        };
        acc.count += 1;
        acc.bytes += t.nbytes();
        acc.dtypes |= Dtype::ALL.iter().position(|&d| d == t.dtype).map_or(0, |i| 1u64 << i);
        if acc.indices.len() < idx.len() {
            acc.indices.resize_with(idx.len(), IndexSet::default);
        }
        for (slot, &n) in acc.indices.iter_mut().zip(idx.iter()) {
            slot.insert(n);
        }
    }
    groups
}

/// The rows of the folded groups, in natural order of their patterns.
fn rows(groups: FxHashMap<String, Acc>) -> Vec<TreeRow> {
    use crate::checkpoint::Dtype;
    let mut rows: Vec<TreeRow> = groups
        .into_iter()
        .map(|(key, acc)| {
            let indices: Vec<Vec<u64>> = acc.indices.into_iter().map(IndexSet::into_sorted).collect();
            let mut pattern = String::with_capacity(key.len() + 16);
            let mut slots = indices.iter();
            let mut rest = key.as_str();
            while let Some(p) = rest.find("{}") {
                pattern.push_str(&rest[..p]);
                let set: &[u64] = slots.next().map_or(&[], Vec::as_slice);
                if set.len() == 1 {
                    pattern.push_str(&set[0].to_string());
                } else {
                    pattern.push('{');
                    pattern.push_str(&ranges(set));
                    pattern.push('}');
                }
                rest = &rest[p + 2..];
            }
            pattern.push_str(rest);
            // In name order, as the set of names this replaced gave them.
            let mut dtypes: Vec<&str> = Dtype::ALL
                .iter()
                .enumerate()
                .filter(|(i, _)| acc.dtypes & (1 << i) != 0)
                .map(|(_, d)| d.as_str())
                .collect();
            dtypes.sort_unstable();
            TreeRow {
                pattern,
                count: acc.count,
                bytes: acc.bytes,
                dtypes: dtypes.into_iter().map(str::to_string).collect(),
            }
        })
        .collect();
    // Patterns are distinct: an unstable sort gives the same order with no extra buffer.
    rows.par_sort_unstable_by(|a, b| crate::checkpoint::natural_cmp(&a.pattern, &b.pattern));
    rows
}

/// The deepest the human tree goes; real names have fewer than 12 segments.
const MAX_DEPTH: usize = 32;

/// A human tree over the folded rows: shared prefixes become parents with summed counts and
/// bytes; single-child chains are joined so the tree stays short.
pub fn render(rows: &[TreeRow], fmt_bytes: impl Fn(u64) -> String) -> String {
    use crate::checkpoint::Dtype;
    use hashbrown::HashTable;
    use std::hash::BuildHasher;
    /// Nodes borrow their names from the rows and keep dtypes as a bit set: a million distinct
    /// names make two million nodes, so each is kept small.
    #[derive(Default)]
    struct Node<'a> {
        count: usize,
        bytes: u64,
        /// Bit `i` set: `Dtype::ALL[i]` occurs below; bit 63: a dtype this build does not know.
        dtypes: u64,
        children: Vec<(&'a str, Node<'a>)>,
        /// Child position by name, built once a node has many children: a hash lookup per
        /// segment keeps the tree linear in the names.
        index: Option<Box<HashTable<u32>>>,
    }
    const INDEX_FROM: usize = 16;
    let hash = |k: &str| rustc_hash::FxBuildHasher.hash_one(k);
    let masks: Vec<(String, u64)> = {
        let mut seen: Vec<&str> = rows.iter().flat_map(|r| r.dtypes.iter().map(String::as_str)).collect();
        seen.sort_unstable();
        seen.dedup();
        seen.iter()
            .map(|d| {
                let bit = Dtype::parse(d).and_then(|x| Dtype::ALL.iter().position(|&a| a == x)).unwrap_or(63);
                (d.to_string(), 1u64 << bit)
            })
            .collect()
    };
    let mask_of = |row: &TreeRow| -> u64 {
        row.dtypes
            .iter()
            .map(|d| masks.iter().find(|(n, _)| n == d).map(|m| m.1).unwrap_or(1 << 63))
            .fold(0, |a, b| a | b)
    };
    // Names of the set bits, in the order a sorted set of names would give.
    let mut order: Vec<(&'static str, u64)> =
        Dtype::ALL.iter().enumerate().map(|(i, d)| (d.as_str(), 1u64 << i)).collect();
    order.push(("?", 1 << 63));
    order.sort_unstable();

    fn insert<'a>(root: &mut Node<'a>, segs: &[&'a str], row: &TreeRow, mask: u64, hash: &dyn Fn(&str) -> u64) {
        let mut node = root;
        for &seg in segs {
            node.count += row.count;
            node.bytes += row.bytes;
            node.dtypes |= mask;
            let found = match &node.index {
                Some(ix) => ix.find(hash(seg), |&i| node.children[i as usize].0 == seg).map(|&i| i as usize),
                None => node.children.iter().position(|(k, _)| *k == seg),
            };
            let i = match found {
                Some(i) => i,
                None => {
                    if node.children.is_empty() {
                        // Most nodes have one child: no room for four.
                        node.children.reserve_exact(1);
                    }
                    node.children.push((seg, Node::default()));
                    let i = node.children.len() - 1;
                    if let Some(ix) = &mut node.index {
                        let ch = &node.children;
                        ix.insert_unique(hash(seg), i as u32, |&j| hash(ch[j as usize].0));
                    } else if node.children.len() > INDEX_FROM {
                        let mut ix = HashTable::with_capacity(node.children.len() * 2);
                        for (j, (k, _)) in node.children.iter().enumerate() {
                            ix.insert_unique(hash(k), j as u32, |_| unreachable!("capacity reserved"));
                        }
                        node.index = Some(Box::new(ix));
                    }
                    i
                }
            };
            node = &mut node.children[i].1;
        }
        node.count += row.count;
        node.bytes += row.bytes;
        node.dtypes |= mask;
    }
    fn walk(
        label: String,
        node: &Node<'_>,
        depth: usize,
        out: &mut String,
        fb: &dyn Fn(u64) -> String,
        order: &[(&'static str, u64)],
    ) {
        let (mut label, mut node) = (label, node);
        while node.children.len() == 1 {
            let (k, c) = &node.children[0];
            label = format!("{label}.{}", crate::ui::field(k));
            node = c;
        }
        // Children that are all leaves (weight, weight_scale_inv, bias, …) print on this line.
        let inline = node.children.len() > 1 && node.children.iter().all(|(_, c)| c.children.is_empty());
        if inline {
            let names: Vec<std::borrow::Cow<'_, str>> =
                node.children.iter().map(|(k, _)| crate::ui::field(k)).collect();
            label = format!("{label}.{{{}}}", names.join(", "));
        }
        let names: Vec<&str> = order.iter().filter(|(_, m)| node.dtypes & m != 0).map(|(n, _)| *n).collect();
        let dt = if names.len() <= 3 { names.join(",") } else { "mixed".into() };
        let _ = writeln!(
            out,
            "{:indent$}{label}  [{} tensors, {}, {dt}]",
            "",
            node.count,
            fb(node.bytes),
            indent = depth * 2
        );
        if inline {
            return;
        }
        for (k, c) in &node.children {
            walk(crate::ui::field(k).into_owned(), c, depth + 1, out, fb, order);
        }
    }
    let mut root = Node::default();
    for r in rows {
        let mut segs = split_outside_braces(&r.pattern);
        // The tree is at most MAX_DEPTH deep (the walk recurses): deeper names end in one label.
        if segs.len() > MAX_DEPTH {
            let start = segs[MAX_DEPTH - 1].as_ptr() as usize - r.pattern.as_ptr() as usize;
            segs.truncate(MAX_DEPTH - 1);
            segs.push(&r.pattern[start..]);
        }
        insert(&mut root, &segs, r, mask_of(r), &hash);
    }
    let mut out = String::new();
    for (k, c) in &root.children {
        walk(crate::ui::field(k).into_owned(), c, 0, &mut out, &fmt_bytes, &order);
    }
    out
}

/// Split on `.` except inside `{…}` (ranges such as `{0..2,4..60}` contain dots).
fn split_outside_braces(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            '.' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Folded in two halves and merged, or in one go: the same rows (counts, bytes, dtypes and
    /// every index range), on checkpoints whose patterns span both halves.
    #[test]
    fn halves_merge_to_the_whole() {
        for name in ["deepseek-fp8", "qwen3-moe", "qwen3-moe-fp8-experts", "gemma3-mm"] {
            let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name);
            let (ck, _) = Checkpoint::open(dir.to_str().unwrap()).unwrap();
            assert!(ck.shards.len() > 1, "{name}");
            let whole = rows(fold_shards(&ck.shards));
            assert_eq!(format!("{:?}", fold(&ck)), format!("{whole:?}"), "{name}");
            // And at every split point, not only the middle one.
            for at in 0..=ck.shards.len() {
                let mut g = fold_shards(&ck.shards[..at]);
                merge(&mut g, fold_shards(&ck.shards[at..]));
                assert_eq!(format!("{:?}", rows(g)), format!("{whole:?}"), "{name} split at {at}");
            }
        }
    }

    /// The set gives what sorting and deduplicating the values gave, on both sides of the bitmap's
    /// limit, in any order and with repeats.
    #[test]
    fn index_set_is_sort_and_dedup() {
        let cases: [&[u64]; 5] = [
            &[],
            &[3, 1, 2, 1, 3, 0],
            &[10, 2, 100, 1, 0, 63, 64, 65, 127, 128],
            &[IndexSet::BITMAP_LIMIT + 5, 7, IndexSet::BITMAP_LIMIT - 1, u64::MAX, 7, IndexSet::BITMAP_LIMIT + 5],
            &[u64::MAX, IndexSet::BITMAP_LIMIT, u64::MAX, IndexSet::BITMAP_LIMIT],
        ];
        for values in cases {
            let mut set = IndexSet::default();
            for &v in values {
                set.insert(v);
            }
            let mut want = values.to_vec();
            want.sort_unstable();
            want.dedup();
            assert_eq!(set.into_sorted(), want, "{values:?}");
        }
    }

    #[test]
    fn index_segments_as_parse() {
        for seg in ["0", "7", "12", "012", "", "1a", "+1", "18446744073709551615", "18446744073709551616"] {
            let want = (!seg.is_empty()
                && seg.bytes().all(|b| b.is_ascii_digit())
                && !(seg.len() > 1 && seg.starts_with('0')))
            .then(|| seg.parse::<u64>().ok())
            .flatten();
            assert_eq!(index_segment(seg), want, "{seg:?}");
        }
    }

    #[test]
    fn braces_keep_their_dots() {
        assert_eq!(super::split_outside_braces("a.{0..2,4}.b"), vec!["a", "{0..2,4}", "b"]);
    }

    /// 200k distinct names under one parent (once quadratic: a linear scan per insert) and one
    /// name 10k segments deep (a recursion as deep as the name) both render, with every name counted.
    #[test]
    fn wide_and_deep_trees_render() {
        let row = |p: String| TreeRow { pattern: p, count: 1, bytes: 2, dtypes: vec!["BF16".into()] };
        let mut rows: Vec<TreeRow> = (0..200_000).map(|i| row(format!("m.w{i}.x.weight"))).collect();
        rows.push(row(vec!["d"; 10_000].join(".")));
        let out = render(&rows, |b| format!("{b} B"));
        assert!(out.starts_with("m  [200000 tensors, 400000 B, BF16]"), "{}", &out[..80]);
        // The deep name is one chain: one line, its 10k segments all there.
        assert_eq!(out.lines().count(), 200_000 + 2);
        assert!(out.lines().last().unwrap().starts_with(&vec!["d"; 10_000].join(".")));
    }
}
