//! The key-prefix tree: tensor names with layer and expert indices folded into ranges, e.g.
//! `model.layers.{3..60}.mlp.experts.{0..255}.down_proj.weight`, with counts and bytes.

use super::names::ranges;
use crate::checkpoint::Checkpoint;
use rustc_hash::FxHashMap;
use serde::Serialize;
use std::collections::BTreeSet;

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
    dtypes: BTreeSet<&'static str>,
    indices: Vec<BTreeSet<u64>>,
}

pub fn fold(ck: &Checkpoint) -> Vec<TreeRow> {
    let mut groups: FxHashMap<String, Acc> = FxHashMap::default();
    let mut key = String::new();
    let mut idx: Vec<u64> = Vec::new();
    for t in ck.tensors() {
        key.clear();
        idx.clear();
        for (i, seg) in t.entry.name.split('.').enumerate() {
            if i > 0 {
                key.push('.');
            }
            match seg.parse::<u64>() {
                Ok(n) if !seg.is_empty() && (seg == "0" || !seg.starts_with('0')) && !seg.starts_with('+') => {
                    key.push_str("{}");
                    idx.push(n);
                }
                _ => key.push_str(seg),
            }
        }
        let acc = match groups.get_mut(key.as_str()) {
            Some(a) => a,
            None => groups.entry(key.clone()).or_default(),
        };
        acc.count += 1;
        acc.bytes += t.entry.nbytes();
        acc.dtypes.insert(t.entry.dtype.as_str());
        if acc.indices.len() < idx.len() {
            acc.indices.resize_with(idx.len(), BTreeSet::new);
        }
        for (slot, n) in acc.indices.iter_mut().zip(idx.iter()) {
            slot.insert(*n);
        }
    }
    let mut rows: Vec<TreeRow> = groups
        .into_iter()
        .map(|(key, acc)| {
            let mut pattern = String::with_capacity(key.len() + 16);
            let mut slots = acc.indices.iter();
            let mut rest = key.as_str();
            while let Some(p) = rest.find("{}") {
                pattern.push_str(&rest[..p]);
                let set: Vec<u64> = slots.next().map(|s| s.iter().copied().collect()).unwrap_or_default();
                if set.len() == 1 {
                    pattern.push_str(&set[0].to_string());
                } else {
                    pattern.push('{');
                    pattern.push_str(&ranges(&set));
                    pattern.push('}');
                }
                rest = &rest[p + 2..];
            }
            pattern.push_str(rest);
            TreeRow {
                pattern,
                count: acc.count,
                bytes: acc.bytes,
                dtypes: acc.dtypes.into_iter().map(str::to_string).collect(),
            }
        })
        .collect();
    rows.sort_by(|a, b| crate::checkpoint::natural_cmp(&a.pattern, &b.pattern));
    rows
}

/// The deepest the human tree goes; real names have fewer than 12 segments.
const MAX_DEPTH: usize = 32;

/// A human tree over the folded rows: shared prefixes become parents with summed counts and
/// bytes; single-child chains are joined so the tree stays short.
pub fn render(rows: &[TreeRow], fmt_bytes: impl Fn(u64) -> String) -> String {
    #[derive(Default)]
    struct Node {
        count: usize,
        bytes: u64,
        dtypes: BTreeSet<&'static str>,
        children: Vec<(String, Node)>,
        /// Child position by name: a lookup per segment keeps the tree linear in the names.
        index: FxHashMap<String, usize>,
    }
    fn add(node: &mut Node, row: &TreeRow) {
        node.count += row.count;
        node.bytes += row.bytes;
        for d in &row.dtypes {
            node.dtypes.insert(crate::checkpoint::Dtype::parse(d).map(|d| d.as_str()).unwrap_or("?"));
        }
    }
    fn insert(root: &mut Node, segs: &[&str], row: &TreeRow) {
        let mut node = root;
        for seg in segs {
            add(node, row);
            let i = match node.index.get(*seg) {
                Some(&i) => i,
                None => {
                    node.children.push((seg.to_string(), Node::default()));
                    node.index.insert(seg.to_string(), node.children.len() - 1);
                    node.children.len() - 1
                }
            };
            node = &mut node.children[i].1;
        }
        add(node, row);
    }
    fn walk(label: String, node: &Node, depth: usize, out: &mut String, fb: &dyn Fn(u64) -> String) {
        let (mut label, mut node) = (label, node);
        while node.children.len() == 1 {
            let (k, c) = &node.children[0];
            label = format!("{label}.{k}");
            node = c;
        }
        // Children that are all leaves (weight, weight_scale_inv, bias, …) print on this line.
        let inline = node.children.len() > 1 && node.children.iter().all(|(_, c)| c.children.is_empty());
        if inline {
            let names: Vec<&str> = node.children.iter().map(|(k, _)| k.as_str()).collect();
            label = format!("{label}.{{{}}}", names.join(", "));
        }
        let dt = if node.dtypes.len() <= 3 {
            node.dtypes.iter().copied().collect::<Vec<_>>().join(",")
        } else {
            "mixed".into()
        };
        out.push_str(&format!(
            "{:indent$}{label}  [{} tensors, {}, {dt}]\n",
            "",
            node.count,
            fb(node.bytes),
            indent = depth * 2
        ));
        if inline {
            return;
        }
        for (k, c) in &node.children {
            walk(k.clone(), c, depth + 1, out, fb);
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
        insert(&mut root, &segs, r);
    }
    let mut out = String::new();
    for (k, c) in &root.children {
        walk(k.clone(), c, 0, &mut out, &fmt_bytes);
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
