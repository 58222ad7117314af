//! The order in which msModelSlim 26.1.0's data-free converter (`modelslim_convert`) writes a
//! checkpoint's tensors, and so the key order of its `quant_model_description.json` and index.
//!
//! That order comes from Python `set` iteration: `VirtualModelTreeBuilder.build` makes
//! `set(catalog.keys())` of the input's tensor names (in the index's weight_map order), installs
//! each `linears` rule's modules in the set's iteration order (`_candidate_module_paths`), then
//! every other tensor as a passthrough module, grouped by parent, again in set order
//! (`_attach_preserve_all_catalog`); the saver walks the tree's `named_modules()`. Set iteration
//! order is that of CPython 3.11's hash table: string hashes (SipHash-1-3) with the key that
//! `PYTHONHASHSEED=0` gives (all zero), linear probing then perturbation, resizes at 3/5 full.
//! Under any other hash seed msModelSlim's order is different on every run; this reproduces the
//! `PYTHONHASHSEED=0` one, which is what its reference outputs were made with.

use crate::quant::scheme::glob_match;
use std::collections::HashMap;

/// CPython's `str` hash for a string, under PYTHONHASHSEED=0 (SipHash-1-3, zero key, over the
/// string's compact representation: 1, 2 or 4 bytes per code point by its widest one).
pub fn py_str_hash(s: &str) -> i64 {
    let max = s.chars().map(|c| c as u32).max().unwrap_or(0);
    let bytes: Vec<u8> = if max < 0x100 {
        s.chars().map(|c| c as u8).collect()
    } else if max < 0x10000 {
        s.chars().flat_map(|c| (c as u16).to_le_bytes()).collect()
    } else {
        s.chars().flat_map(|c| (c as u32).to_le_bytes()).collect()
    };
    if bytes.is_empty() {
        return 0;
    }
    let h = siphash13(0, 0, &bytes) as i64;
    if h == -1 {
        -2
    } else {
        h
    }
}

fn siphash13(k0: u64, k1: u64, src: &[u8]) -> u64 {
    let mut v0 = k0 ^ 0x736f6d6570736575;
    let mut v1 = k1 ^ 0x646f72616e646f6d;
    let mut v2 = k0 ^ 0x6c7967656e657261;
    let mut v3 = k1 ^ 0x7465646279746573;
    let round = |v0: &mut u64, v1: &mut u64, v2: &mut u64, v3: &mut u64| {
        *v0 = v0.wrapping_add(*v1);
        *v2 = v2.wrapping_add(*v3);
        *v1 = v1.rotate_left(13) ^ *v0;
        *v3 = v3.rotate_left(16) ^ *v2;
        *v0 = v0.rotate_left(32);
        *v2 = v2.wrapping_add(*v1);
        *v0 = v0.wrapping_add(*v3);
        *v1 = v1.rotate_left(17) ^ *v2;
        *v3 = v3.rotate_left(21) ^ *v0;
        *v2 = v2.rotate_left(32);
    };
    let mut chunks = src.chunks_exact(8);
    for c in &mut chunks {
        let m = u64::from_le_bytes(c.try_into().expect("8 bytes"));
        v3 ^= m;
        round(&mut v0, &mut v1, &mut v2, &mut v3);
        v0 ^= m;
    }
    let mut t = [0u8; 8];
    let rest = chunks.remainder();
    t[..rest.len()].copy_from_slice(rest);
    let b = ((src.len() as u64) << 56) | u64::from_le_bytes(t);
    v3 ^= b;
    round(&mut v0, &mut v1, &mut v2, &mut v3);
    v0 ^= b;
    v2 ^= 0xff;
    for _ in 0..3 {
        round(&mut v0, &mut v1, &mut v2, &mut v3);
    }
    (v0 ^ v1) ^ (v2 ^ v3)
}

/// The iteration order of CPython 3.11's `set(iterable)` of distinct strings inserted in `keys`
/// order (Objects/setobject.c: set_add_entry, set_table_resize, set_insert_clean).
pub fn py_set_order<'a>(keys: &[&'a str]) -> Vec<&'a str> {
    const LINEAR_PROBES: usize = 9;
    const PERTURB_SHIFT: u32 = 5;
    fn insert_clean(table: &mut [Option<(usize, i64)>], mask: usize, idx: usize, hash: i64) {
        let mut perturb = hash as u64 as usize;
        let mut i = hash as u64 as usize & mask;
        loop {
            if table[i].is_none() {
                table[i] = Some((idx, hash));
                return;
            }
            if i + LINEAR_PROBES <= mask {
                for j in 1..=LINEAR_PROBES {
                    if table[i + j].is_none() {
                        table[i + j] = Some((idx, hash));
                        return;
                    }
                }
            }
            perturb >>= PERTURB_SHIFT;
            i = (i.wrapping_mul(5).wrapping_add(1).wrapping_add(perturb)) & mask;
        }
    }
    let mut table: Vec<Option<(usize, i64)>> = vec![None; 8];
    let mut used = 0usize;
    for (idx, k) in keys.iter().enumerate() {
        let hash = py_str_hash(k);
        let mask = table.len() - 1;
        // set_add_entry for a key not present (names are distinct; no dummies: nothing is removed).
        let mut perturb = hash as u64 as usize;
        let mut i = hash as u64 as usize & mask;
        let slot = 'found: loop {
            let probes = if i + LINEAR_PROBES <= mask { LINEAR_PROBES } else { 0 };
            for j in 0..=probes {
                if table[i + j].is_none() {
                    break 'found i + j;
                }
            }
            perturb >>= PERTURB_SHIFT;
            i = (i.wrapping_mul(5).wrapping_add(1).wrapping_add(perturb)) & mask;
        };
        table[slot] = Some((idx, hash));
        used += 1;
        if used * 5 >= mask * 3 {
            let minused = if used > 50000 { used * 2 } else { used * 4 };
            let mut size = 8;
            while size <= minused {
                size <<= 1;
            }
            let mut new: Vec<Option<(usize, i64)>> = vec![None; size];
            for (idx, hash) in table.iter().flatten() {
                insert_clean(&mut new, size - 1, *idx, *hash);
            }
            table = new;
        }
    }
    table.iter().flatten().map(|(idx, _)| keys[*idx]).collect()
}

/// The converter's write order of the input tensors `catalog` (in the index's weight_map order),
/// with the rule patterns `patterns` (in the YAML's order): each name's position. Tensors under
/// a rule module come in its binding order (`weight`, then the others as found).
pub fn convert_write_order(catalog: &[&str], patterns: &[String]) -> HashMap<String, usize> {
    const SCALE_INV: &str = ".weight_scale_inv";
    let set = py_set_order(catalog);
    // The virtual tree: nodes with their children in insertion order and their tensors.
    struct Node {
        children: Vec<(String, usize)>,
        tensors: Vec<String>,
    }
    let mut nodes = vec![Node { children: Vec::new(), tensors: Vec::new() }];
    fn node_at(nodes: &mut Vec<Node>, path: &str, create: bool) -> Option<usize> {
        let mut cur = 0;
        for part in path.split('.') {
            match nodes[cur].children.iter().find(|(n, _)| n == part) {
                Some(&(_, c)) => cur = c,
                None if create => {
                    nodes.push(Node { children: Vec::new(), tensors: Vec::new() });
                    let id = nodes.len() - 1;
                    nodes[cur].children.push((part.to_string(), id));
                    cur = id;
                }
                None => return None,
            }
        }
        Some(cur)
    }
    // setattr of a fresh module at `path` (an existing attribute keeps its place, loses its children).
    fn install(nodes: &mut Vec<Node>, path: &str, tensors: Vec<String>) {
        let id = node_at(nodes, path, true).expect("created");
        nodes[id].children.clear();
        nodes[id].tensors = tensors;
    }
    let in_catalog: std::collections::HashSet<&str> = catalog.iter().copied().collect();
    let mut rule_paths: std::collections::HashSet<String> = std::collections::HashSet::new();
    let mut handled: std::collections::HashSet<String> = std::collections::HashSet::new();
    for pattern in patterns {
        for key in &set {
            if key.ends_with(SCALE_INV) {
                continue;
            }
            let Some(path) = key.strip_suffix(".weight") else { continue };
            if rule_paths.contains(path) || !glob_match(pattern, path) {
                continue;
            }
            rule_paths.insert(path.to_string());
            let mut t = vec![key.to_string()];
            for suffix in [".weight_packed", ".weight_scale", ".weight_shape", ".bias", SCALE_INV] {
                let k = format!("{path}{suffix}");
                if in_catalog.contains(k.as_str()) {
                    t.push(k);
                }
            }
            handled.extend(t.iter().cloned());
            install(&mut nodes, path, t);
        }
    }
    // The rest, grouped by parent in order of first appearance.
    let mut groups: Vec<(String, Vec<String>)> = Vec::new();
    let mut group_of: HashMap<String, usize> = HashMap::new();
    for key in &set {
        if handled.contains(*key) || key.ends_with(SCALE_INV) {
            continue;
        }
        let parent = key.rsplit_once('.').map_or(*key, |(p, _)| p).to_string();
        let g = *group_of.entry(parent.clone()).or_insert_with(|| {
            groups.push((parent, Vec::new()));
            groups.len() - 1
        });
        groups[g].1.push(key.to_string());
    }
    for (parent, keys) in groups {
        let has_leaves = node_at(&mut nodes, &parent, false).is_some_and(|n| !nodes[n].children.is_empty());
        if has_leaves {
            for k in keys {
                install(&mut nodes, &k, vec![k.clone()]);
            }
        } else if rule_paths.contains(&parent) {
            let id = node_at(&mut nodes, &parent, false).expect("a rule module");
            nodes[id].tensors.extend(keys);
        } else {
            install(&mut nodes, &parent, keys);
        }
    }
    // named_modules(): preorder.
    let mut order = HashMap::new();
    let mut stack = vec![0usize];
    while let Some(n) = stack.pop() {
        for t in &nodes[n].tensors {
            let len = order.len();
            order.entry(t.clone()).or_insert(len);
        }
        for &(_, c) in nodes[n].children.iter().rev() {
            stack.push(c);
        }
    }
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str_hashes_are_cpython_311s_under_pythonhashseed_0() {
        // PYTHONHASHSEED=0 python3.11 -c 'print(hash("abc"))', and so on.
        assert_eq!(py_str_hash("abc"), -4594863902769663758);
        assert_eq!(py_str_hash("model.layers.0.mlp.down_proj.weight"), -7321058267131241724);
        assert_eq!(py_str_hash(""), 0);
        assert_eq!(py_str_hash("aaaaaaaa"), -4250921761727411054);
        assert_eq!(py_str_hash("lm_head.weight"), -5755117783569963938);
    }

    #[test]
    fn set_order_is_cpython_311s() {
        let keys: Vec<String> = (0..30).map(|i| format!("k{i}")).collect();
        let refs: Vec<&str> = keys.iter().map(|s| s.as_str()).collect();
        // PYTHONHASHSEED=0 python3.11 -c 'print(list(set("k%d" % i for i in range(30))))'
        let want = "k1 k28 k25 k8 k14 k18 k7 k29 k15 k9 k3 k0 k10 k5 k20 k24 k19 k22 k17 k6 k16 k11 k12 k23 k21 k2 k26 k27 k13 k4";
        assert_eq!(py_set_order(&refs).join(" "), want);
    }
}
