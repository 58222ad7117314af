//! Finding a tensor by name. Every name is hashed once, while the header that holds it is still in
//! cache; each shard small enough to stay in cache has a table of its own, and the checkpoint one
//! of all its tensors.
//!
//! A lookup for a name usually stored beside another (a weight's scale, a scale's weight) asks the
//! shard's table first: it is a few kilobytes the caller has just read, where a probe of the whole
//! checkpoint's table is a cache miss (on a 90k-tensor checkpoint, `pair_fp8`'s 92k lookups spent
//! most of their time waiting for the table's buckets).

use super::{Shard, TensorEntry};
use hashbrown::hash_table::Entry;
use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use std::hash::BuildHasher;

pub(crate) fn name_hash(name: &str) -> u64 {
    FxBuildHasher.hash_one(name)
}

/// A shard's names: their hashes in header order, and, when the shard has at most
/// [`ShardNames::LOCAL_MAX`] tensors, their positions by name.
#[derive(Debug, Default)]
pub(crate) struct ShardNames {
    hashes: Box<[u64]>,
    /// `None` for a larger shard (its table would not stay in cache: the checkpoint's is asked),
    /// and for a header that names a tensor twice (which of the two a lookup meant is not known).
    table: Option<HashTable<u32>>,
}

/// What a shard's own table says about a name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Local {
    /// At this position of the shard's header.
    At(u32),
    /// Not in the shard.
    Absent,
    /// The shard has no table: ask the checkpoint's.
    Unknown,
}

impl ShardNames {
    /// The largest shard given a table of its own: 8,192 positions and their control bytes are
    /// about 40 KB, as is the header text of that many names.
    pub const LOCAL_MAX: usize = 8192;

    pub fn of(shard: &Shard) -> ShardNames {
        let tensors = shard.tensors();
        let hashes: Box<[u64]> = tensors.iter().map(|t| name_hash(&t.name)).collect();
        let table = (tensors.len() <= Self::LOCAL_MAX)
            .then(|| {
                let mut table = HashTable::with_capacity(tensors.len());
                for (i, &h) in hashes.iter().enumerate() {
                    match table.entry(
                        h,
                        |&j: &u32| tensors[j as usize].name == tensors[i].name,
                        |&j| hashes[j as usize],
                    ) {
                        Entry::Vacant(v) => {
                            v.insert(i as u32);
                        }
                        Entry::Occupied(_) => return None,
                    }
                }
                Some(table)
            })
            .flatten();
        ShardNames { hashes, table }
    }

    /// Whether [`ShardNames::find`] ever answers [`Local::Unknown`] (it does not when this holds).
    pub fn has_table(&self) -> bool {
        self.table.is_some()
    }

    /// The hash of the name at `i` in the shard's header.
    pub fn hash(&self, i: usize) -> u64 {
        self.hashes[i]
    }

    /// Where `name` (whose hash is `h`) is in `tensors`, the shard's header.
    pub fn find(&self, tensors: &[TensorEntry], h: u64, name: &str) -> Local {
        match &self.table {
            None => Local::Unknown,
            Some(t) => match t.find(h, |&j| tensors[j as usize].name == name) {
                Some(&j) => Local::At(j),
                None => Local::Absent,
            },
        }
    }
}

/// Tensor positions by name, in two tables split by the top bit of the name's hash: each is built
/// on its own thread (a table of ~90k entries is built by cache misses more than by work, and the
/// build sits between reading the headers and everything else).
#[derive(Debug)]
pub(crate) struct NameTable([HashTable<(u32, u32)>; 2]);

/// A name stored twice: its load-order position, and where the copy the loader kept until then is.
pub(crate) type Twice = (usize, (u32, u32));

impl NameTable {
    fn half(h: u64) -> usize {
        (h >> 63) as usize
    }

    /// Where the copy a loader keeps of `name` (whose hash is `h`) is in `shards`: (shard, entry).
    pub fn get(&self, shards: &[Shard], h: u64, name: &str) -> Option<(u32, u32)> {
        self.0[Self::half(h)].find(h, |&(a, b)| shards[a as usize].tensors()[b as usize].name == name).copied()
    }

    /// The table of `shards`' tensors (`names` holds their hashes), and the names stored twice:
    /// (load-order position, where the copy the loader keeps was stored before), in load order.
    /// The later copy wins.
    pub fn build(shards: &[Shard], names: &[ShardNames]) -> (NameTable, Vec<Twice>) {
        let count: usize = shards.iter().map(|s| s.tensors().len()).sum();
        let half = |which: usize| {
            // A hash's top bit splits the names about evenly: room for a little more than half.
            let mut table: HashTable<(u32, u32)> = HashTable::with_capacity(count / 2 + count / 32 + 16);
            let mut twice = Vec::new();
            let mut pos = 0usize;
            for (si, s) in shards.iter().enumerate() {
                for (ti, t) in s.tensors().iter().enumerate() {
                    let h = names[si].hash(ti);
                    if Self::half(h) == which {
                        let slot = (si as u32, ti as u32);
                        match table.find_mut(h, |&(a, b)| shards[a as usize].tensors()[b as usize].name == t.name) {
                            Some(prev) => {
                                twice.push((pos, *prev));
                                *prev = slot;
                            }
                            None => {
                                table.insert_unique(h, slot, |&(a, b)| names[a as usize].hash(b as usize));
                            }
                        }
                    }
                    pos += 1;
                }
            }
            (table, twice)
        };
        let ((t0, mut twice), (t1, twice1)) = rayon::join(|| half(0), || half(1));
        twice.extend(twice1);
        twice.sort_unstable_by_key(|&(pos, _)| pos);
        (NameTable([t0, t1]), twice)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::header::Header;
    use crate::checkpoint::{Dtype, Shape};

    fn shard(names: &[String]) -> Shard {
        let tensors = names
            .iter()
            .map(|n| TensorEntry { name: n.clone(), dtype: Dtype::BF16, shape: Shape::new(&[1]), begin: 0, end: 2 })
            .collect();
        Shard {
            name: "s.safetensors".into(),
            path: "s.safetensors".into(),
            file_len: 0,
            header: Header { tensors, parsed: true, ..Header::default() },
            ident: None,
            unreadable: None,
            remote: false,
        }
    }

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("model.layers.{}.mlp.experts.{}.w{}.weight", i / 300, i % 100, i % 3)).collect()
    }

    #[test]
    fn every_name_at_its_position_and_no_other() {
        let v = names(1000);
        let s = shard(&v);
        let sn = ShardNames::of(&s);
        for (i, n) in v.iter().enumerate() {
            assert_eq!(sn.hash(i), name_hash(n));
            assert_eq!(sn.find(s.tensors(), name_hash(n), n), Local::At(i as u32), "{n}");
        }
        for n in ["model.layers.0.mlp.experts.0.w0.weight_scale_inv", "", "model"] {
            assert_eq!(sn.find(s.tensors(), name_hash(n), n), Local::Absent, "{n}");
        }
    }

    #[test]
    fn a_large_shard_or_a_repeated_name_defers_to_the_checkpoint() {
        let v = names(ShardNames::LOCAL_MAX + 1);
        let s = shard(&v);
        let sn = ShardNames::of(&s);
        assert_eq!(sn.find(s.tensors(), name_hash(&v[5]), &v[5]), Local::Unknown);
        assert_eq!(sn.hash(5), name_hash(&v[5]));
        // At the limit it still has a table.
        let v = names(ShardNames::LOCAL_MAX);
        let s = shard(&v);
        assert_eq!(ShardNames::of(&s).find(s.tensors(), name_hash(&v[7]), &v[7]), Local::At(7));
        // A name twice in one header: which copy a lookup meant is not the table's to say.
        let mut v = names(10);
        v.push(v[3].clone());
        let s = shard(&v);
        let sn = ShardNames::of(&s);
        for n in [&v[3], &v[0], &"absent".to_string()] {
            assert_eq!(sn.find(s.tensors(), name_hash(n), n), Local::Unknown);
        }
    }
}
