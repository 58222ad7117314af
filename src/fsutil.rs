//! File-system primitives every reader and writer goes through, so the rules hold everywhere:
//!
//! - **Bounded reads**: a JSON input is read only when it is a regular file under a size cap; it is
//!   opened non-blocking (a FIFO does not hang the open) and checked on the open descriptor, so a
//!   device or a FIFO is refused before a byte is read, and no read is sized by anything but the cap.
//! - **Identity**: a file is remembered by (device, inode, length, mtime) when it is opened, so a
//!   reader can tell that it was truncated, rewritten or replaced underneath it.
//! - **Writes that follow nothing**: temporary files are created `O_CREAT|O_EXCL|O_NOFOLLOW` under a
//!   unique name, removed if the write fails, and renamed into place (a rename replaces a planted
//!   symlink instead of writing through it).
//! - **Locks**: `flock` on a lock file that records the holder's PID.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// config.json, hf_quant_config.json, quantization descriptions, rule files, manifests: real ones
/// are kilobytes; this leaves room for any model while refusing a runaway file.
pub const JSON_CAP: u64 = 64 << 20;
/// model.safetensors.index.json: ~9 MB for DeepSeek-V3's 92k tensors; room for ten million names.
pub const INDEX_CAP: u64 = 1 << 30;

/// Why a bounded read refused a file.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{} is {kind}, not a regular file", path.display())]
    NotRegular { path: PathBuf, kind: &'static str },
    #[error("{} is {len} bytes, above the {cap}-byte cap for this kind of file", path.display())]
    TooLarge { path: PathBuf, len: u64, cap: u64 },
}

impl ReadError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// What a non-regular file is, in words.
pub fn kind_of(ft: std::fs::FileType) -> &'static str {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_dir() {
        "a directory"
    } else if ft.is_fifo() {
        "a FIFO (named pipe)"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else {
        "a regular file"
    }
}

/// Open `path` for reading without blocking on a FIFO, following symlinks (the Hugging Face cache
/// links every file to its blob), and refuse anything that is not a regular file.
pub fn open_regular(path: &Path) -> Result<(File, std::fs::Metadata), ReadError> {
    let io = |source| ReadError::Io { path: path.to_path_buf(), source };
    let f = OpenOptions::new().read(true).custom_flags(libc::O_NONBLOCK).open(path).map_err(io)?;
    let md = f.metadata().map_err(io)?;
    if !md.file_type().is_file() {
        return Err(ReadError::NotRegular { path: path.to_path_buf(), kind: kind_of(md.file_type()) });
    }
    // A regular file: back to blocking reads (FUSE file systems pass O_NONBLOCK through and may
    // answer EAGAIN).
    let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
    // SAFETY: fcntl on a descriptor we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags & !libc::O_NONBLOCK);
        }
    }
    Ok((f, md))
}

/// The whole file as bytes, when it is a regular file of at most `cap` bytes. The read stops at
/// `cap + 1` bytes whatever the file claims, so a file that grows while read is refused too.
pub fn read_bounded(path: &Path, cap: u64) -> Result<Vec<u8>, ReadError> {
    let (f, md) = open_regular(path)?;
    if md.len() > cap {
        return Err(ReadError::TooLarge { path: path.to_path_buf(), len: md.len(), cap });
    }
    let mut buf = Vec::with_capacity(md.len() as usize);
    f.take(cap.saturating_add(1))
        .read_to_end(&mut buf)
        .map_err(|source| ReadError::Io { path: path.to_path_buf(), source })?;
    if buf.len() as u64 > cap {
        return Err(ReadError::TooLarge { path: path.to_path_buf(), len: buf.len() as u64, cap });
    }
    Ok(buf)
}

/// As [`read_bounded`], as UTF-8 text (invalid UTF-8 is an `InvalidData` I/O error naming the byte).
pub fn read_bounded_string(path: &Path, cap: u64) -> Result<String, ReadError> {
    let b = read_bounded(path, cap)?;
    String::from_utf8(b).map_err(|e| ReadError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("byte {} is not valid UTF-8", e.utf8_error().valid_up_to()),
        ),
    })
}

/// Who a file is: enough to tell that it changed or was replaced since it was opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileIdent {
    pub dev: u64,
    pub ino: u64,
    pub len: u64,
    pub mtime_ns: i128,
}

impl FileIdent {
    pub fn of(md: &std::fs::Metadata) -> FileIdent {
        FileIdent {
            dev: md.dev(),
            ino: md.ino(),
            len: md.len(),
            mtime_ns: i128::from(md.mtime()) * 1_000_000_000 + i128::from(md.mtime_nsec()),
        }
    }

    /// How `now` differs from `self`, in words; None when it is the same file, unchanged.
    pub fn change(&self, now: &FileIdent) -> Option<String> {
        if (now.dev, now.ino) != (self.dev, self.ino) {
            Some("was replaced by another file".into())
        } else if now.len != self.len {
            Some(format!("changed size from {} to {} bytes", self.len, now.len))
        } else if now.mtime_ns != self.mtime_ns {
            Some("was modified (its modification time changed)".into())
        } else {
            None
        }
    }
}

/// Read exactly `buf.len()` bytes at `offset`; a short read (the file was truncated) is an
/// `UnexpectedEof` error that says where the file now ends.
pub fn read_exact_at(f: &File, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
    let mut done = 0usize;
    while done < buf.len() {
        match f.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => {
                // Where the file ends now (it may have shrunk further since the read): not where
                // this read stopped, which is only a lower bound.
                let now = f.metadata().map(|m| format!("the file is now {} bytes long", m.len()));
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "{}, but {} bytes were expected at offset {offset} (up to byte {})",
                        now.unwrap_or_else(|_| format!("the file ended before byte {}", offset + done as u64)),
                        buf.len(),
                        offset + buf.len() as u64
                    ),
                ));
            }
            Ok(n) => done += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

static TMP_SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The marker every temporary file ckptpilot writes carries in its name.
pub const TMP_MARK: &str = ".ckptpilot-tmp.";

/// Every file ckptpilot keeps for itself beside what it writes (state records, locks, the stub's
/// record) starts with this.
pub const OWN_PREFIX: &str = ".ckptpilot-";

/// The one lock of an output directory, whatever command writes there (`dequant`, `quantize`,
/// `stub`): exclusive for a whole run, `--finalize` and `stub`, shared by `--part` runs. A lock per
/// command would let `quantize --force` into a directory `dequant` is writing.
pub const DIR_LOCK: &str = ".ckptpilot-dir.lock";

/// Whether a directory entry is ckptpilot's own bookkeeping (state, locks, records, temporary
/// files), never part of a checkpoint: manifests leave such files out, conversions skip them.
pub fn is_own_file(name: &str) -> bool {
    name.starts_with(OWN_PREFIX) || name.contains(TMP_MARK)
}

/// A file being written under a unique temporary name beside its destination. Dropped without
/// [`TempFile::commit`] (an error, a panic, a full disk), it removes itself.
pub struct TempFile {
    path: PathBuf,
    file: Option<File>,
}

impl TempFile {
    /// Create `.NAME.ckptpilot-tmp.PID@HOST.SEQ` beside `dest`: `O_EXCL|O_NOFOLLOW`, so nothing planted
    /// at that name (a symlink, a file) is ever opened, let alone written through.
    pub fn beside(dest: &Path) -> std::io::Result<TempFile> {
        let dir = dest.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let name = dest.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        loop {
            let seq = TMP_SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let path = dir.join(format!(".{name}{TMP_MARK}{}.{seq}", whoami().replace('/', "_")));
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
                .mode(0o644)
                .open(&path)
            {
                Ok(file) => {
                    live_temp_files().insert(path.clone());
                    return Ok(TempFile { path, file: Some(file) });
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(e),
            }
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn file(&mut self) -> &mut File {
        self.file.as_mut().expect("open until committed")
    }

    /// Flush to disk and rename over `dest` (replacing whatever is there, a symlink included,
    /// without following it): the file is whole and on disk before anyone can see it.
    pub fn commit(mut self, dest: &Path) -> std::io::Result<()> {
        let f = self.file.take().expect("committed once");
        f.sync_data()?;
        drop(f);
        std::fs::rename(&self.path, dest)?;
        live_temp_files().remove(&std::mem::take(&mut self.path));
        Ok(())
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.path.as_os_str().is_empty() {
            self.file.take();
            let _ = std::fs::remove_file(&self.path);
            live_temp_files().remove(&self.path);
        }
    }
}

/// The temporary files this process has open: what an interrupt removes before the process ends
/// (a `TempFile` cleans up after itself when dropped, but a signal ends the process without
/// dropping anything).
fn live_temp_files() -> std::sync::MutexGuard<'static, std::collections::BTreeSet<PathBuf>> {
    static LIVE: std::sync::Mutex<std::collections::BTreeSet<PathBuf>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    LIVE.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Remove every temporary file this process has open; returns how many there were. Called once, by
/// the signal thread, just before the process exits.
pub fn remove_live_temp_files() -> usize {
    let live = std::mem::take(&mut *live_temp_files());
    for p in &live {
        let _ = std::fs::remove_file(p);
    }
    live.len()
}

/// End the process cleanly on SIGINT, SIGTERM and SIGHUP: the signals are blocked in this thread
/// (and so in every thread it starts later) and taken by one thread of their own, which removes
/// the temporary files and exits with 128 + the signal (130 for SIGINT, 143 for SIGTERM), as a
/// shell reports a process a signal ended. Locks go with the process. Call it first thing in
/// `main`, before any other thread exists; the library never calls it (Python keeps its own
/// handlers for the API).
/// Set by the signal thread before it removes the temporary files: the command's own threads may
/// then fail on files that just vanished, and must not exit (or report that) before it does.
static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// When a signal is being handled: block this thread until the signal thread ends the process with
/// 128 + the signal (a failure caused by the cleanup is not the command's result). Otherwise return.
pub fn wait_if_interrupted() {
    if INTERRUPTED.load(std::sync::atomic::Ordering::SeqCst) {
        loop {
            std::thread::park();
        }
    }
}

/// No transparent huge pages for the rest of this process (and the children it starts). For the
/// short commands that read headers only: their heap (~40 MB at DeepSeek-V3's size) is faulted in
/// once and dropped at exit, and a 2 MiB page the kernel must first compact memory for can stall
/// the whole command for hundreds of milliseconds, where 4 KiB faults cost a few. Only the binary
/// calls it (through [`crate::cli::own_process`]): a Python process that imports the module keeps
/// its own setting. Best effort: a kernel without the option leaves things as they are.
pub fn no_huge_pages() {
    // SAFETY: prctl with integer arguments only; it changes a flag of this process.
    unsafe {
        libc::prctl(
            libc::PR_SET_THP_DISABLE,
            1 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        );
    }
}

pub fn exit_cleanly_on_signals() {
    // SAFETY: sigset manipulation on a set we own; pthread_sigmask on the calling thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            libc::sigaddset(&mut set, sig);
        }
        if libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return;
        }
        let spawned = std::thread::Builder::new().name("signals".into()).spawn(move || loop {
            let mut sig: libc::c_int = 0;
            if libc::sigwait(&set, &mut sig) != 0 {
                continue;
            }
            INTERRUPTED.store(true, std::sync::atomic::Ordering::SeqCst);
            let n = remove_live_temp_files();
            let name = match sig {
                libc::SIGINT => "SIGINT",
                libc::SIGTERM => "SIGTERM",
                _ => "SIGHUP",
            };
            let msg = format!(
                "\nckptpilot: interrupted ({name}); {n} temporary file{} removed, finished files kept\n",
                if n == 1 { "" } else { "s" }
            );
            let _ = std::io::Write::write_all(&mut std::io::stderr(), msg.as_bytes());
            libc::_exit(128 + sig);
        });
        if spawned.is_err() {
            // No thread to take them: let the signals act as before.
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
        }
    }
}

/// Write `bytes` to `dest` through a [`TempFile`]: readers see the old file or the new one, never
/// a part, and a symlink at `dest` is replaced, not followed.
pub fn write_atomic(dest: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut t = TempFile::beside(dest)?;
    t.file().write_all(bytes)?;
    t.commit(dest)
}

/// Whether `name` is a temporary file ckptpilot writes beside `dest_name` (any process, any host).
pub fn is_tmp_of(name: &str, dest_name: &str) -> bool {
    name.strip_prefix('.').and_then(|n| n.strip_prefix(dest_name)).is_some_and(|rest| rest.starts_with(TMP_MARK))
}

/// This process, for lock files and messages: `PID@HOST`.
pub fn whoami() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most buf.len() bytes into a buffer we own.
    let host = if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
        let n = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..n]).into_owned()
    } else {
        "?".into()
    };
    format!("{}@{host}", std::process::id())
}

/// Create the directories of `path` below `root` that are missing, refusing any component that
/// exists as a symlink (a planted link would send the writes elsewhere).
pub fn create_dirs_below(root: &Path, rel_dir: &Path) -> std::io::Result<()> {
    let mut cur = root.to_path_buf();
    for c in rel_dir.components() {
        cur.push(c);
        match std::fs::symlink_metadata(&cur) {
            Ok(md) if md.file_type().is_dir() => {}
            Ok(md) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    format!(
                        "{} is {}, not a directory; ckptpilot does not write through it",
                        cur.display(),
                        kind_of(md.file_type())
                    ),
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir(&cur)?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// An exclusive (or shared) `flock` held for as long as this value lives.
#[derive(Debug)]
pub struct Lock {
    file: File,
    exclusive: bool,
}

impl Drop for Lock {
    /// An exclusive holder takes its name out of the file as it lets go: a finished run leaves
    /// an empty lock file, the same whoever wrote the directory.
    fn drop(&mut self) {
        if self.exclusive {
            let _ = self.file.set_len(0);
        }
    }
}

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{} is locked by another ckptpilot process{}", path.display(), holder.as_ref().map(|p| format!(" ({p})")).unwrap_or_default())]
    Held { path: PathBuf, holder: Option<String> },
    #[error("{}: cannot lock it: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
}

impl Lock {
    /// Take the lock on `path` (created if missing) without waiting. The holder writes
    /// `PID@HOST` into the file, so the next process can name it; a shared holder clears what an
    /// earlier exclusive holder left (it has gone: its lock would conflict).
    pub fn try_acquire(path: &Path, exclusive: bool) -> Result<Lock, LockError> {
        Self::try_acquire_as(path, exclusive, "")
    }

    /// [`Lock::try_acquire`], the holder also saying what it is doing (`ckptpilot quantize`), so the
    /// process that waits is told which command to wait for.
    pub fn try_acquire_as(path: &Path, exclusive: bool, what: &str) -> Result<Lock, LockError> {
        let io = |source| LockError::Io { path: path.to_path_buf(), source };
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
            .mode(0o644)
            .open(path)
            .map_err(io)?;
        // Only a small regular file of its own is ever truncated or written: never a planted hard
        // link to something else, a FIFO or a device.
        let md = f.metadata().map_err(io)?;
        if !md.file_type().is_file() || md.nlink() != 1 || md.len() > 4096 {
            return Err(io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!(
                    "not a lock file ckptpilot made ({}, {} links, {} bytes)",
                    kind_of(md.file_type()),
                    md.nlink(),
                    md.len()
                ),
            )));
        }
        let op = if exclusive { libc::LOCK_EX } else { libc::LOCK_SH } | libc::LOCK_NB;
        // SAFETY: flock on a descriptor we own.
        if unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), op) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut buf = [0u8; 256];
                let n = f.read_at(&mut buf, 0).unwrap_or(0);
                let holder = String::from_utf8_lossy(&buf[..n]).trim().to_string();
                return Err(LockError::Held {
                    path: path.to_path_buf(),
                    holder: (!holder.is_empty()).then(|| format!("PID {holder}")),
                });
            }
            return Err(io(e));
        }
        f.set_len(0).map_err(io)?;
        if exclusive {
            let line = if what.is_empty() { whoami() } else { format!("{} {what}", whoami()) };
            f.write_all_at(format!("{line}\n").as_bytes(), 0).map_err(io)?;
        }
        Ok(Lock { file: f, exclusive })
    }

    /// Who holds the lock at `path` right now, if anyone does and says so (a probe that never
    /// blocks and leaves nothing behind: the file is not created).
    pub fn holder(path: &Path) -> Option<String> {
        let f = OpenOptions::new().read(true).custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK).open(path).ok()?;
        // SAFETY: flock on a descriptor we own; released when `f` closes.
        let free = unsafe { libc::flock(std::os::fd::AsRawFd::as_raw_fd(&f), libc::LOCK_SH | libc::LOCK_NB) } == 0;
        if free {
            return None;
        }
        let mut buf = [0u8; 256];
        let n = f.read_at(&mut buf, 0).unwrap_or(0);
        let h = String::from_utf8_lossy(&buf[..n]).trim().to_string();
        Some(if h.is_empty() { "a ckptpilot process".into() } else { format!("PID {h}") })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fifo_and_device_are_refused_without_blocking() {
        let d = tempfile::tempdir().unwrap();
        let fifo = d.path().join("config.json");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a path we own.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
        let e = read_bounded(&fifo, JSON_CAP).unwrap_err();
        assert!(matches!(e, ReadError::NotRegular { kind: "a FIFO (named pipe)", .. }), "{e}");
        let e = read_bounded(Path::new("/dev/zero"), JSON_CAP).unwrap_err();
        assert!(matches!(e, ReadError::NotRegular { kind: "a character device", .. }), "{e}");
        let big = d.path().join("big.json");
        std::fs::write(&big, vec![b' '; 100]).unwrap();
        assert!(matches!(read_bounded(&big, 99), Err(ReadError::TooLarge { len: 100, cap: 99, .. })));
        assert_eq!(read_bounded(&big, 100).unwrap().len(), 100);
    }

    #[test]
    fn temp_files_never_follow_a_planted_link_and_vanish_on_failure() {
        let d = tempfile::tempdir().unwrap();
        let victim = d.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let dest = d.path().join("out.bin");
        std::os::unix::fs::symlink(&victim, &dest).unwrap();
        write_atomic(&dest, b"new").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert!(!std::fs::symlink_metadata(&dest).unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read(&dest).unwrap(), b"new");
        let t = TempFile::beside(&dest).unwrap();
        let p = t.path().to_path_buf();
        assert!(p.exists());
        drop(t);
        assert!(!p.exists(), "an uncommitted temporary file is removed");
    }

    #[test]
    fn a_second_exclusive_lock_names_the_holder() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(".lock");
        let _a = Lock::try_acquire(&p, true).unwrap();
        match Lock::try_acquire(&p, true) {
            Err(LockError::Held { holder, .. }) => assert_eq!(holder, Some(format!("PID {}", whoami()))),
            other => panic!("{other:?}"),
        }
        assert!(Lock::try_acquire(&p, false).is_err(), "shared waits for exclusive");
    }
}
