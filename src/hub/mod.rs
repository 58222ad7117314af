//! Remote pre-flight: a Hugging Face Hub repo read without downloading it. The file list and the
//! commit come from the Hub API, the small JSON files (config, index, generation and tokenizer
//! configs, quantization descriptions) whole, and each `.safetensors` shard's header by HTTP Range
//! — its 8-byte length, then exactly the header. Never a weight byte: a server that ignores Range is
//! cut off at the bytes asked for.
//!
//! Everything fetched is cached by commit and file under `$HF_HOME/ckptkit/remote/` (a commit's
//! files never change), so a second run of any command on the same commit makes no file request;
//! a branch or tag costs one API request to learn its commit, a full commit sha none.
//!
//! The environment is `hf`'s: `HF_ENDPOINT`, `HF_TOKEN` (else the token file `HF_TOKEN_PATH` or
//! `$HF_HOME/token`, read through hf-hub's `Cache`), `HF_HOME`, `HF_HUB_OFFLINE`.

mod http;

use crate::fsutil;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

/// Default endpoint, as huggingface_hub's `constants.ENDPOINT`.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Files fetched whole are capped (a DeepSeek-size index is a few MiB).
const SMALL_FILE_CAP: u64 = fsutil::JSON_CAP;
/// Requests in flight at once.
const CONCURRENCY: usize = 32;
const SNAPSHOT_SCHEMA: &str = "ckptkit.remote-snapshot/1";

#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(
        "{what}: the Hub answered HTTP {status}{}{}: the repo is gated or private, or the token was refused",
        paren(hub_code),
        colon(hub_message)
    )]
    Denied { what: String, status: u16, hub_code: String, hub_message: String },
    #[error("{what}: not found on the Hub{}{}", paren(hub_code), colon(hub_message))]
    NotFound { what: String, hub_code: String, hub_message: String },
    #[error("{url}: HTTP {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: {message}")]
    Transport { url: String, message: String },
    #[error("{what}: no answer after {attempts} attempts with backoff (last: {last})")]
    GaveUp { what: String, attempts: u32, last: String },
    #[error("{url}: unexpected answer: {message}")]
    BadResponse { url: String, message: String },
    #[error("{what}: {size} bytes, over the {cap}-byte cap for a file read whole")]
    TooLarge { what: String, size: u64, cap: u64 },
    #[error("{}: {source}", path.display())]
    Cache { path: PathBuf, source: std::io::Error },
}

fn paren(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(" ({s})")
    }
}

fn colon(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(": {s}")
    }
}

impl crate::ui::Help for HubError {
    fn help(&self) -> String {
        match self {
            HubError::Denied { .. } => "accept the licence on the model page (gated repos) and set HF_TOKEN, or log in with `hf auth login`; a private repo needs a token that may read it".into(),
            HubError::NotFound { .. } => "check the repo id and the revision (branch, tag or commit); a private repo answers like a missing one without HF_TOKEN".into(),
            HubError::Status { .. } | HubError::BadResponse { .. } => {
                "check HF_ENDPOINT (a mirror must serve the Hub's API and `resolve` paths with Range)".into()
            }
            HubError::Transport { .. } | HubError::GaveUp { .. } => {
                "check the network or HF_ENDPOINT and retry; HF_HUB_OFFLINE=1 uses only what is cached".into()
            }
            HubError::TooLarge { .. } => "download the repo and run on the local copy".into(),
            HubError::Cache { .. } => "check that $HF_HOME (or ~/.cache/huggingface) is writable".into(),
        }
    }
}

/// Where and how to reach the Hub, from the environment `hf` uses.
#[derive(Debug, Clone)]
pub struct Settings {
    pub endpoint: String,
    pub token: Option<String>,
    pub offline: bool,
    /// `$HF_HOME` (else `$XDG_CACHE_HOME/huggingface`, else `~/.cache/huggingface`).
    pub hf_home: PathBuf,
    pub concurrency: usize,
    /// A progress line on stderr while shard headers arrive (the binary sets it on a terminal).
    pub progress: bool,
}

/// huggingface_hub's truthy strings for boolean environment variables.
fn truthy(v: &str) -> bool {
    matches!(v.trim().to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE")
}

impl Settings {
    /// `HF_ENDPOINT`, `HF_TOKEN` / `HF_TOKEN_PATH` / `$HF_HOME/token`, `HF_HOME`, `HF_HUB_OFFLINE`;
    /// `offline` (the `--offline` flag) forces offline.
    pub fn from_env(offline: bool) -> Settings {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let hf_home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from("/"))
                .join("huggingface")
        });
        let token = var("HF_TOKEN")
            .or_else(|| var("HUGGING_FACE_HUB_TOKEN"))
            .map(|t| t.trim().to_string())
            .or_else(|| {
                var("HF_TOKEN_PATH")
                    .and_then(|p| std::fs::read_to_string(p).ok())
                    .map(|t| t.trim().to_string())
                    .filter(|t| !t.is_empty())
            })
            .or_else(|| hf_hub::Cache::new(hf_home.join("hub")).token());
        Settings {
            endpoint: var("HF_ENDPOINT").unwrap_or_else(|| DEFAULT_ENDPOINT.into()).trim_end_matches('/').to_string(),
            token,
            offline: offline || var("HF_HUB_OFFLINE").is_some_and(|v| truthy(&v)),
            hf_home,
            concurrency: CONCURRENCY,
            progress: false,
        }
    }

    fn cache_dir(&self, repo: &str) -> PathBuf {
        // One tree per endpoint (a mirror may serve different commits under the same name).
        let host: String = self
            .endpoint
            .split("://")
            .nth(1)
            .unwrap_or(&self.endpoint)
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
            .collect();
        self.hf_home.join("ckptkit").join("remote").join(host).join(repo.replace('/', "--"))
    }
}

/// A repo as read from the Hub: where its small files and shard headers are cached, and what
/// reading it cost.
#[derive(Debug, Clone, Serialize)]
pub struct Remote {
    pub repo: String,
    /// The revision asked for (branch, tag or commit), `main` by default.
    pub revision: String,
    /// The commit it resolved to.
    pub commit: String,
    pub endpoint: String,
    /// The directory holding the small files (config.json, the index, …).
    #[serde(skip)]
    pub root: PathBuf,
    /// Every top-level file of the repo at that commit.
    #[serde(skip)]
    pub files: Vec<String>,
    /// Each top-level `.safetensors` file: its name, its cached header prefix and its length.
    #[serde(skip)]
    pub shards: Vec<RemoteShard>,
    /// HTTP requests made this run (0 when everything was cached and the revision is a commit).
    pub requests: u64,
    /// Response body bytes received this run.
    pub bytes_fetched: u64,
    /// Files read this run, and files found in the cache.
    pub files_fetched: usize,
    pub files_cached: usize,
}

#[derive(Debug, Clone)]
pub struct RemoteShard {
    pub name: String,
    pub header_path: PathBuf,
    pub size: u64,
}

#[derive(Serialize, Deserialize)]
struct SnapshotFile {
    schema: String,
    repo: String,
    commit: String,
    files: Vec<Sibling>,
}

#[derive(Serialize, Deserialize, Clone)]
struct Sibling {
    #[serde(rename = "rfilename")]
    name: String,
    #[serde(default)]
    size: Option<u64>,
}

#[derive(Deserialize)]
struct ModelInfo {
    sha: Option<String>,
    #[serde(default)]
    siblings: Vec<Sibling>,
}

/// What is kept of a shard besides its header bytes.
#[derive(Serialize, Deserialize)]
struct HeaderMeta {
    size: u64,
    etag: Option<String>,
}

fn is_commit(s: &str) -> bool {
    s.len() == 40 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A name of the repo's top level that is safe to use as a file name here.
fn plain_name(n: &str) -> bool {
    !n.is_empty() && !n.contains('/') && !n.contains('\\') && n != "." && n != ".." && !n.starts_with(".ckptkit")
}

/// The small files read whole: top-level JSON the checkpoint model reads (config, index,
/// generation / tokenizer / processor configs, hf_quant_config, ModelSlim descriptions), not the
/// tokenizer's vocabulary.
fn wanted_whole(n: &str) -> bool {
    plain_name(n) && n.ends_with(".json") && !matches!(n, "tokenizer.json" | "vocab.json")
}

/// Percent-encode a path segment (a revision such as `refs/pr/1` becomes one segment).
fn encode_segment(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            o.push(b as char);
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

fn cache_err(path: &Path) -> impl FnOnce(std::io::Error) -> HubError + '_ {
    move |source| HubError::Cache { path: path.to_path_buf(), source }
}

/// Read `repo` at `revision` (default `main`) from the Hub, or from the cache where it holds the
/// commit's files.
pub fn fetch(repo: &str, revision: Option<&str>, s: &Settings) -> Result<Remote, HubError> {
    let revision = revision.unwrap_or("main").to_string();
    let client = http::Client::new(s.token.clone(), &s.endpoint);
    let base = s.cache_dir(repo);
    let listing = listing(&client, repo, &revision, &base, s)?;
    let dir = base.join(&listing.commit);
    let root = dir.join("files");
    let headers = dir.join("headers");
    for d in [&root, &headers] {
        std::fs::create_dir_all(d).map_err(cache_err(d))?;
    }
    let files: Vec<String> = listing.files.iter().map(|f| f.name.clone()).filter(|n| plain_name(n)).collect();
    let sizes: BTreeMap<&str, Option<u64>> = listing.files.iter().map(|f| (f.name.as_str(), f.size)).collect();

    enum Job<'a> {
        Whole(&'a str),
        Header(&'a str),
    }
    let mut jobs = Vec::new();
    let mut cached = 0usize;
    for n in &files {
        if wanted_whole(n) {
            if sizes.get(n.as_str()).copied().flatten().is_some_and(|sz| sz > SMALL_FILE_CAP) {
                continue; // named in the listing only; read it locally if it matters
            }
            if root.join(n).is_file() {
                cached += 1;
            } else {
                jobs.push(Job::Whole(n));
            }
        } else if n.ends_with(".safetensors") {
            if headers.join(format!("{n}.meta.json")).is_file() && headers.join(n).is_file() {
                cached += 1;
            } else {
                jobs.push(Job::Header(n));
            }
        }
    }
    let file_url =
        |n: &str| format!("{}/{repo}/resolve/{}/{}", s.endpoint, encode_segment(&listing.commit), encode_segment(n));
    let n_headers = jobs.iter().filter(|j| matches!(j, Job::Header(_))).count();
    let bar = (s.progress && n_headers >= 8).then(|| {
        let b = indicatif::ProgressBar::new(n_headers as u64);
        b.set_style(
            indicatif::ProgressStyle::with_template("{prefix} {pos}/{len} shard headers {elapsed}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
        );
        b.set_prefix(format!("{repo}@{}", &listing.commit[..12]));
        b
    });
    let run = |i: usize| -> Result<(), HubError> {
        match &jobs[i] {
            Job::Whole(n) => {
                let body = client.get(&file_url(n), None, SMALL_FILE_CAP, &format!("{repo}: {n}"))?;
                let p = root.join(n);
                fsutil::write_atomic(&p, &body.bytes).map_err(cache_err(&p))
            }
            Job::Header(n) => {
                let (prefix, size, etag) =
                    read_header(&client, &file_url(n), sizes.get(n).copied().flatten(), &format!("{repo}: {n}"))?;
                let p = headers.join(n);
                fsutil::write_atomic(&p, &prefix).map_err(cache_err(&p))?;
                let m = headers.join(format!("{n}.meta.json"));
                let meta = serde_json::to_vec(&HeaderMeta { size, etag }).expect("meta serializes");
                fsutil::write_atomic(&m, &meta).map_err(cache_err(&m))?;
                if let Some(b) = &bar {
                    b.inc(1);
                }
                Ok(())
            }
        }
    };
    let done = in_pool(jobs.len(), s.concurrency, run);
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    done?;
    let (files_fetched, requests, bytes_fetched) =
        (jobs.len(), client.requests.load(Ordering::Relaxed), client.bytes.load(Ordering::Relaxed));
    drop(jobs);
    let mut shards = Vec::new();
    for n in files.iter().filter(|n| n.ends_with(".safetensors")) {
        let m = headers.join(format!("{n}.meta.json"));
        let meta: HeaderMeta =
            fsutil::read_bounded(&m, 1 << 20).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or_else(|| {
                HubError::Cache { path: m.clone(), source: std::io::Error::other("unreadable cache entry") }
            })?;
        shards.push(RemoteShard { name: n.clone(), header_path: headers.join(n), size: meta.size });
    }
    Ok(Remote {
        repo: repo.to_string(),
        revision,
        commit: listing.commit.clone(),
        endpoint: s.endpoint.clone(),
        root,
        files,
        shards,
        requests,
        bytes_fetched,
        files_fetched,
        files_cached: cached,
    })
}

/// `run(0..n)` on at most `workers` threads, each taking the next index; after a failure no new
/// index starts, and the error of the lowest failed index is returned.
fn in_pool<E: Send>(n: usize, workers: usize, run: impl Fn(usize) -> Result<(), E> + Sync) -> Result<(), E> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first_err: Mutex<Option<(usize, E)>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..workers.max(1).min(n) {
            scope.spawn(|| {
                while !stop.load(Ordering::Relaxed) {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    if i >= n {
                        break;
                    }
                    if let Err(e) = run(i) {
                        stop.store(true, Ordering::Relaxed);
                        let mut g = first_err.lock().unwrap_or_else(|p| p.into_inner());
                        if g.as_ref().is_none_or(|(j, _)| i < *j) {
                            *g = Some((i, e));
                        }
                    }
                }
            });
        }
    });
    match first_err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some((_, e)) => Err(e),
        None => Ok(()),
    }
}

/// The repo's files at `revision` and the commit it names: from the cache for a commit sha already
/// listed, else from the Hub API (and then cached).
fn listing(
    client: &http::Client,
    repo: &str,
    revision: &str,
    base: &Path,
    s: &Settings,
) -> Result<SnapshotFile, HubError> {
    // A commit sha whose listing is cached needs no request at all.
    let cached_listing = is_commit(revision)
        .then(|| base.join(revision).join("snapshot.json"))
        .and_then(|p| fsutil::read_bounded(&p, SMALL_FILE_CAP).ok())
        .and_then(|b| serde_json::from_slice::<SnapshotFile>(&b).ok())
        .filter(|f| f.schema == SNAPSHOT_SCHEMA && f.commit == revision);
    match cached_listing {
        Some(l) => Ok(l),
        None => {
            let url = format!("{}/api/models/{repo}/revision/{}?blobs=true", s.endpoint, encode_segment(revision));
            let what = format!("{repo}@{revision}");
            let body = client.get(&url, None, SMALL_FILE_CAP, &what)?;
            let info: ModelInfo = serde_json::from_slice(&body.bytes).map_err(|e| HubError::BadResponse {
                url: url.clone(),
                message: format!("not the model-info JSON: {e}"),
            })?;
            let commit = info.sha.filter(|c| is_commit(c)).ok_or_else(|| HubError::BadResponse {
                url: url.clone(),
                message: "no 40-hex `sha` (commit) in the model info".into(),
            })?;
            let l = SnapshotFile { schema: SNAPSHOT_SCHEMA.into(), repo: repo.into(), commit, files: info.siblings };
            let dir = base.join(&l.commit);
            std::fs::create_dir_all(&dir).map_err(cache_err(&dir))?;
            let p = dir.join("snapshot.json");
            let text = serde_json::to_vec_pretty(&l).expect("snapshot serializes");
            fsutil::write_atomic(&p, &text).map_err(cache_err(&p))?;
            Ok(l)
        }
    }
}

/// One shard's header by Range: its first 8 bytes (the header's length; the file's from
/// `Content-Range`, else `listed`), then exactly the header, from where the first range was answered
/// (the CDN after a redirect). A length that cannot be (over the cap, past the file) is not read
/// further: the header checks say why from the 8 bytes. Returns (prefix, file length, ETag).
fn read_header(
    client: &http::Client,
    url: &str,
    listed: Option<u64>,
    what: &str,
) -> Result<(Vec<u8>, u64, Option<String>), HubError> {
    let first = client.get(url, Some((0, 8)), 8, what)?;
    let size = first.total.or(listed).ok_or_else(|| HubError::BadResponse {
        url: first.url.clone(),
        message: "no file length (Content-Range or the listing's size)".into(),
    })?;
    let mut prefix = first.bytes;
    prefix.truncate(8);
    let want = match <[u8; 8]>::try_from(prefix.as_slice()).map(u64::from_le_bytes) {
        Ok(n) if n <= crate::checkpoint::header::MAX_HEADER_LEN && n.saturating_add(8) <= size => 8 + n,
        _ => prefix.len() as u64,
    };
    if want > prefix.len() as u64 {
        let have = prefix.len() as u64;
        let rest = client.get(&first.url, Some((have, want - have)), want - have, what)?;
        prefix.extend_from_slice(&rest.bytes[..rest.bytes.len().min((want - have) as usize)]);
    }
    Ok((prefix, size, first.etag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_are_one_path_segment() {
        assert_eq!(encode_segment("main"), "main");
        assert_eq!(encode_segment("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(encode_segment("v1.0"), "v1.0");
    }

    #[test]
    fn only_top_level_plain_names() {
        assert!(wanted_whole("config.json"));
        assert!(wanted_whole("quant_model_description_w8a8_dynamic.json"));
        assert!(!wanted_whole("tokenizer.json"));
        assert!(!wanted_whole("sub/config.json"));
        assert!(!plain_name(".."));
        assert!(truthy("yes") && truthy(" 1") && !truthy("0") && !truthy("off"));
    }
}
