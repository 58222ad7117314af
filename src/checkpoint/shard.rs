//! One safetensors file: its header read once (never mapped) and validated.
//!
//! Nothing here maps the file: a shard truncated or replaced while ckptpilot reads it gives a clear
//! error from `read`, never a SIGBUS from a mapped page that no longer exists. Tensor data is read
//! with [`Shard::open_data`] and positional reads, which check that the file is still the one whose
//! header was validated.

use super::header::{self, Header, TensorEntry};
use crate::findings::{Code, Finding};
use crate::fsutil::{self, FileIdent, ReadError};
use std::fs::File;
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct Shard {
    /// Path relative to the checkpoint root, `/`-separated: the name the index uses.
    pub name: String,
    pub path: PathBuf,
    pub file_len: u64,
    pub header: Header,
    /// The file as it was when its header was read.
    pub ident: Option<FileIdent>,
    /// Why the header could not be read at all (the first error found), when it could not.
    pub unreadable: Option<String>,
    /// Only the header is here (read from the Hub): the tensor data is not.
    pub remote: bool,
}

/// Why a shard's tensor data cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{file}: {source}")]
    Io { file: String, source: std::io::Error },
    #[error("{file} {what} since its header was read; rerun on a stable copy")]
    Changed { file: String, what: String },
    #[error("{file}: tensor {tensor:?} [{begin}, {end}) lies outside the data section")]
    OutOfRange { file: String, tensor: String, begin: u64, end: u64 },
    #[error("{file}: only its header was read from the Hub; the tensor data is not here")]
    HeaderOnly { file: String },
}

/// An open shard for reading tensor data.
pub struct ShardData<'a> {
    shard: &'a Shard,
    file: File,
}

impl Shard {
    /// Read and validate the header. Never fails: an unreadable file becomes a finding and an
    /// empty shard.
    pub fn open(path: &Path, name: String) -> (Shard, Vec<Finding>) {
        let (mut shard, out) = Self::read_header(path, name);
        shard.note_unreadable(&out);
        (shard, out)
    }

    /// A header that did not parse, or one the safetensors loader vLLM uses refuses (overlapping
    /// tensors, holes, offsets past the end, a size that disagrees with the shape: every error the
    /// header validation reports): why, from the first error found. Such a shard is unreadable for
    /// every command, so `plan` and `stub` never call a checkpoint feasible that `audit` and
    /// `remap` refuse.
    fn note_unreadable(&mut self, out: &[Finding]) {
        let first_error = out.iter().find(|f| f.severity == crate::findings::Severity::Error);
        if !self.header.parsed {
            self.unreadable = Some(
                first_error
                    .map(|f| format!("{}: {}", f.code.as_str(), f.message))
                    .unwrap_or_else(|| "the header could not be read".into()),
            );
        } else if let Some(f) = first_error {
            self.unreadable = Some(format!("safetensors refuses to open it: {}: {}", f.code.as_str(), f.message));
        }
    }

    /// A shard on the Hub: its header prefix as fetched (cached at `header_path`) and the file's
    /// length there. Validated as a local header is; its data cannot be opened.
    pub fn open_remote(header_path: &Path, name: String, file_len: u64) -> (Shard, Vec<Finding>) {
        let mut out = Vec::new();
        let mut shard = Shard {
            name,
            path: header_path.to_path_buf(),
            file_len,
            header: Header::default(),
            ident: None,
            unreadable: None,
            remote: true,
        };
        match fsutil::read_bounded(header_path, header::MAX_HEADER_LEN + 8) {
            Ok(buf) => shard.header = header::validate_prefix(&buf, file_len, &shard.name, &mut out),
            Err(e) => out.push(
                Finding::new(Code::ShardUnreadable, format!("cannot read the cached header: {e}")).file(&shard.name),
            ),
        }
        shard.note_unreadable(&out);
        (shard, out)
    }

    fn read_header(path: &Path, name: String) -> (Shard, Vec<Finding>) {
        let mut out = Vec::new();
        let mut shard = Shard {
            name,
            path: path.to_path_buf(),
            file_len: 0,
            header: Header::default(),
            ident: None,
            unreadable: None,
            remote: false,
        };
        let unreadable = |shard: &Shard, out: &mut Vec<Finding>, msg: String| {
            out.push(Finding::new(Code::ShardUnreadable, msg).file(&shard.name));
        };
        let (file, md) = match fsutil::open_regular(path) {
            Ok(x) => x,
            Err(ReadError::NotRegular { kind, .. }) => {
                out.push(
                    Finding::new(Code::NotRegularFile, format!("{} is {kind}, not a regular file", path.display()))
                        .file(&shard.name),
                );
                return (shard, out);
            }
            Err(e) => {
                unreadable(&shard, &mut out, format!("cannot open {e}"));
                return (shard, out);
            }
        };
        shard.file_len = md.len();
        shard.ident = Some(FileIdent::of(&md));
        if shard.file_len == 0 {
            shard.header = header::validate(&[], &shard.name, &mut out);
            return (shard, out);
        }
        // The first 8 bytes say how long the header is; read exactly that much (bounded by the cap
        // and by the file's length before anything is allocated).
        let mut first = vec![0u8; 8.min(shard.file_len) as usize];
        if let Err(e) = fsutil::read_exact_at(&file, &mut first, 0) {
            unreadable(&shard, &mut out, format!("cannot read {}: {e}", path.display()));
            return (shard, out);
        }
        let want = header::prefix_len(&first, shard.file_len) as usize;
        let mut buf = first;
        if want > buf.len() {
            let have = buf.len();
            buf.resize(want, 0);
            if let Err(e) = fsutil::read_exact_at(&file, &mut buf[have..], have as u64) {
                unreadable(&shard, &mut out, format!("cannot read the header of {}: {e}", path.display()));
                return (shard, out);
            }
        }
        shard.header = header::validate_prefix(&buf, shard.file_len, &shard.name, &mut out);
        (shard, out)
    }

    pub fn tensors(&self) -> &[TensorEntry] {
        &self.header.tensors
    }

    pub fn tensor_bytes(&self) -> u64 {
        self.header.tensors.iter().map(|t| t.nbytes()).sum()
    }

    pub fn find(&self, name: &str) -> Option<&TensorEntry> {
        self.header.tensors.iter().find(|t| t.name == name)
    }

    /// Open the file for reading tensor data, checking it is still the file whose header was read.
    pub fn open_data(&self) -> Result<ShardData<'_>, DataError> {
        if self.remote {
            return Err(DataError::HeaderOnly { file: self.name.clone() });
        }
        let (file, md) = fsutil::open_regular(&self.path)
            .map_err(|e| DataError::Io { file: self.name.clone(), source: std::io::Error::other(e.to_string()) })?;
        let d = ShardData { shard: self, file };
        d.check_ident(&FileIdent::of(&md))?;
        Ok(d)
    }
}

impl ShardData<'_> {
    /// The shard this reads.
    pub fn shard(&self) -> &Shard {
        self.shard
    }

    fn check_ident(&self, now: &FileIdent) -> Result<(), DataError> {
        match self.shard.ident.as_ref().and_then(|was| was.change(now)) {
            Some(what) => Err(DataError::Changed { file: self.shard.name.clone(), what }),
            None => Ok(()),
        }
    }

    /// Check that neither the open file nor the name has changed since the header was read: call
    /// after the last read, so a shard rewritten in place or renamed over is never taken as read.
    pub fn still_same(&self) -> Result<(), DataError> {
        let io = |source| DataError::Io { file: self.shard.name.clone(), source };
        self.check_ident(&FileIdent::of(&self.file.metadata().map_err(io)?))?;
        let by_name = std::fs::metadata(&self.shard.path).map_err(io)?;
        self.check_ident(&FileIdent::of(&by_name))
    }

    /// Read `buf.len()` bytes of tensor `t` starting `skip` bytes into it.
    pub fn read(&self, t: &TensorEntry, skip: u64, buf: &mut [u8]) -> Result<(), DataError> {
        let h = &self.shard.header;
        let begin = h.data_start.checked_add(t.begin).and_then(|b| b.checked_add(skip));
        let end = begin.and_then(|b| b.checked_add(buf.len() as u64));
        let (Some(begin), Some(end)) = (begin, end) else {
            return Err(self.out_of_range(t));
        };
        if end > h.data_start.saturating_add(t.end) {
            return Err(self.out_of_range(t));
        }
        fsutil::read_exact_at(&self.file, buf, begin).map_err(|e| {
            let what = if e.kind() == std::io::ErrorKind::UnexpectedEof {
                format!("was truncated while being read (tensor {:?}: {e})", t.name)
            } else {
                format!("could not be read (tensor {:?} at file offset {begin}: {e})", t.name)
            };
            DataError::Changed { file: self.shard.name.clone(), what }
        })
    }

    /// As [`ShardData::read`], with the copy out of the page cache split across the thread pool:
    /// a positional read costs one memory copy, which a map did not, and in parallel that copy
    /// stays off the critical path of a conversion.
    pub fn read_par(&self, t: &TensorEntry, skip: u64, buf: &mut [u8]) -> Result<(), DataError> {
        use rayon::prelude::*;
        const PIECE: usize = 4 << 20;
        if buf.len() <= PIECE {
            return self.read(t, skip, buf);
        }
        buf.par_chunks_mut(PIECE).enumerate().try_for_each(|(i, c)| self.read(t, skip + (i * PIECE) as u64, c))
    }

    /// The whole tensor as a new vector (scales, small tensors).
    pub fn read_all(&self, t: &TensorEntry) -> Result<Vec<u8>, DataError> {
        let n = usize::try_from(t.nbytes()).map_err(|_| self.out_of_range(t))?;
        if t.end > self.shard.file_len.saturating_sub(self.shard.header.data_start) {
            return Err(self.out_of_range(t));
        }
        let mut v = vec![0u8; n];
        self.read(t, 0, &mut v)?;
        Ok(v)
    }

    fn out_of_range(&self, t: &TensorEntry) -> DataError {
        DataError::OutOfRange { file: self.shard.name.clone(), tensor: t.name.clone(), begin: t.begin, end: t.end }
    }
}
