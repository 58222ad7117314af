//! One safetensors file: memory-mapped, header validated once.

use super::header::{self, Header, TensorEntry};
use crate::findings::{Code, Finding};
use memmap2::Mmap;
use std::fs::File;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct Shard {
    /// Path relative to the checkpoint root, `/`-separated: the name the index uses.
    pub name: String,
    pub path: PathBuf,
    pub file_len: u64,
    pub header: Header,
    mmap: Option<Mmap>,
}

impl Shard {
    /// Map and validate. Never fails: an unreadable file becomes a finding and an empty shard.
    pub fn open(path: &Path, name: String) -> (Shard, Vec<Finding>) {
        let mut out = Vec::new();
        let mut shard = Shard { name, path: path.to_path_buf(), file_len: 0, header: Header::default(), mmap: None };
        let file = match File::open(path) {
            Ok(f) => f,
            Err(e) => {
                out.push(
                    Finding::new(Code::ShardUnreadable, format!("cannot open {}: {e}", path.display()))
                        .file(&shard.name),
                );
                return (shard, out);
            }
        };
        shard.file_len = match file.metadata() {
            Ok(m) => m.len(),
            Err(e) => {
                out.push(
                    Finding::new(Code::ShardUnreadable, format!("cannot stat {}: {e}", path.display()))
                        .file(&shard.name),
                );
                return (shard, out);
            }
        };
        if shard.file_len == 0 {
            shard.header = header::validate(&[], &shard.name, &mut out);
            return (shard, out);
        }
        // SAFETY: the map is read-only. A file truncated underneath us while mapped could fault;
        // that is the same contract every mmap-based safetensors loader has.
        let mmap = match unsafe { Mmap::map(&file) } {
            Ok(m) => m,
            Err(e) => {
                out.push(
                    Finding::new(Code::ShardUnreadable, format!("cannot map {}: {e}", path.display()))
                        .file(&shard.name),
                );
                return (shard, out);
            }
        };
        shard.header = header::validate(&mmap, &shard.name, &mut out);
        shard.mmap = Some(mmap);
        (shard, out)
    }

    pub fn tensors(&self) -> &[TensorEntry] {
        &self.header.tensors
    }

    pub fn tensor_bytes(&self) -> u64 {
        self.header.tensors.iter().map(|t| t.nbytes()).sum()
    }

    /// The bytes of one tensor, or None when they lie outside the file (a truncated shard).
    pub fn data(&self, t: &TensorEntry) -> Option<&[u8]> {
        let m = self.mmap.as_ref()?;
        let b = self.header.data_start.checked_add(t.begin)?;
        let e = self.header.data_start.checked_add(t.end)?;
        m.get(usize::try_from(b).ok()?..usize::try_from(e).ok()?)
    }

    /// Drop this process's mapping of the shard's pages (the page cache keeps them): streaming
    /// conversions call it after each shard so resident memory stays bounded by one shard's work,
    /// not the checkpoint. Later reads fault the pages back in from the file.
    pub fn release(&self) {
        if let Some(m) = &self.mmap {
            // SAFETY: the map is read-only and file-backed, so DONTNEED only discards this process's
            // page-table entries; the contents stay those of the file.
            let _ = unsafe { m.unchecked_advise(memmap2::UncheckedAdvice::DontNeed) };
        }
    }

    /// As [`Shard::release`], for the whole pages inside one tensor's bytes.
    pub fn release_tensor(&self, t: &TensorEntry) {
        let Some(m) = &self.mmap else { return };
        const PAGE: u64 = 4096;
        let b = (self.header.data_start + t.begin).div_ceil(PAGE) * PAGE;
        let e = ((self.header.data_start + t.end) / PAGE * PAGE).min(m.len() as u64);
        if e > b {
            // SAFETY: as in `release`: a read-only, file-backed map.
            let _ =
                unsafe { m.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, b as usize, (e - b) as usize) };
        }
    }

    pub fn find(&self, name: &str) -> Option<&TensorEntry> {
        self.header.tensors.iter().find(|t| t.name == name)
    }
}
