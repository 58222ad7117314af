//! Remote pre-flight: a Hugging Face Hub repo read without downloading it. The file list and the
//! commit come from the Hub API, the JSON files the checks read (config.json, the index,
//! hf_quant_config.json, the ModelSlim description) whole, and each `.safetensors` shard's header by
//! HTTP Range: one request per shard whose header fits the first range, a second for the rest of a
//! longer one. Weight bytes are never parsed or cached: what comes past a header is dropped as it is
//! read, at most `first range − (8 + N)` bytes per shard (below), and a server that ignores Range is
//! cut off at the bytes asked for.
//!
//! The first range is 100,000 bytes ([`SPECULATIVE`], what huggingface_hub's
//! `get_safetensors_metadata` asks for), grown to 9/8 of the longest header read so far this run
//! (rounded up to 4 KiB, at most 1 MiB) once one was longer. Why not the exact two-step read (the
//! 8-byte length, then exactly the header)? Every shard then costs two round trips one after the
//! other; on the DeepSeek-V3 layout (160 shards) behind a 100 ms round trip that was 323 requests
//! and 1.65 s for the whole audit, against 163 requests and 1.05 s now (README, Speed). Why not
//! learn a smaller first range from the first shard (its 8 + N plus a margin)? The other shards
//! would wait for it, and shards of one checkpoint need not have similar headers: one cut by bytes
//! (DeepSeek-V3's 4-5 GB shards) puts the embedding and the dense layers, few large tensors, in its
//! first shard and hundreds of small experts' tensors in each of the others, so a range learned from
//! the first would miss for nearly all the others and cost each a second round trip. What a fixed
//! 100,000 costs instead is small: on the benchmark layout (`benches/make_layout.py`, headers of
//! 73-75 kB) 25-27 kB past each header, 4.1 MB in all beside the 8.8 MB index, of a 0.7 TB
//! checkpoint; a range learned from the first header (+1/8, 86 kB) would have saved 2.2 MB of it
//! (computed from the layout's header lengths, not run).
//!
//! Requests run [`CONCURRENCY`] at a time on one ureq agent, whose pool keeps a connection per worker
//! alive across the shards (a redirect's short body is read to its end so that its connection is kept
//! too); `tests/remote.rs` counts the server's connections and checks that the round trips overlap.
//!
//! The server is not trusted: a file read whole is capped (a longer one is refused before its body
//! when its length is announced, and never cached), the run's bytes are capped, every request has a
//! deadline for all of it and the run has one too, redirects go only to http(s), a listed name that
//! could not be a plain file name here is skipped with a warning, and server text in messages has
//! its control characters escaped.
//!
//! Everything fetched is cached by commit and file under `$HF_HOME/ckptpilot/remote/` (a commit's
//! files never change), so a second run of any command on the same commit makes no file request;
//! a branch or tag costs one API request to learn its commit, a full commit sha none.
//!
//! The environment is `hf`'s: `HF_ENDPOINT`, `HF_TOKEN` (else the token file `HF_TOKEN_PATH` or
//! `$HF_HOME/token`, read through hf-hub's `Cache`), `HF_HOME`, `HF_HUB_OFFLINE`,
//! `HF_HUB_ETAG_TIMEOUT`, `HF_HUB_DOWNLOAD_TIMEOUT`; and ckptpilot's own `CKPTPILOT_HUB_RUN_TIMEOUT`,
//! `CKPTPILOT_HUB_MAX_BYTES`.

mod http;

use crate::fsutil;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Default endpoint, as huggingface_hub's `constants.ENDPOINT`.
pub const DEFAULT_ENDPOINT: &str = "https://huggingface.co";
/// Files fetched whole are capped (a DeepSeek-size index is a few MiB), as a local read of them is.
const SMALL_FILE_CAP: u64 = fsutil::JSON_CAP;
/// Requests in flight at once.
const CONCURRENCY: usize = 32;
/// The first Range of a shard, bytes: huggingface_hub's size (`get_safetensors_metadata` asks for
/// 100,000), which holds the header of a shard of a few hundred tensors (DeepSeek-V3's ~75 kB).
const SPECULATIVE: u64 = 100_000;
/// The most a first Range grows to after longer headers (see [`speculative_len`]).
const SPECULATIVE_MAX: u64 = 1 << 20;
const SNAPSHOT_SCHEMA: &str = "ckptpilot.remote-snapshot/1";

/// huggingface_hub's timeouts (`constants.HF_HUB_ETAG_TIMEOUT`, `HF_HUB_DOWNLOAD_TIMEOUT`): whole
/// seconds, 10 by default (unset or 0 is the default). There they bound each wait for a byte; here
/// each whole request, so that a server sending one byte a second cannot hold a run for days.
pub const ETAG_VAR: &str = "HF_HUB_ETAG_TIMEOUT";
pub const DOWNLOAD_VAR: &str = "HF_HUB_DOWNLOAD_TIMEOUT";
const DEFAULT_ETAG_TIMEOUT: u64 = 10;
const DEFAULT_DOWNLOAD_TIMEOUT: u64 = 10;
/// ckptpilot's own: the deadline for a whole remote read (retries and backoff included), seconds.
pub const RUN_VAR: &str = "CKPTPILOT_HUB_RUN_TIMEOUT";
const DEFAULT_RUN_TIMEOUT: u64 = 120;
/// ckptpilot's own: the bytes one remote read may receive in all (`256M` style, as `--max-model-len`).
pub const MAX_BYTES_VAR: &str = "CKPTPILOT_HUB_MAX_BYTES";
const DEFAULT_MAX_BYTES: u64 = 256 << 20;
/// A terminal hears from a remote read that takes longer than this.
const PROGRESS_AFTER: Duration = Duration::from_secs(2);

/// Every message escapes its text: much of it (names, the Hub's error headers, URLs after a
/// redirect) comes from the server, and a terminal must not run its control sequences.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    #[error(
        "{}: the Hub answered HTTP {status}{}{}: the repo is gated or private, or the token was refused",
        esc(what),
        paren(hub_code),
        colon(hub_message)
    )]
    Denied { what: String, status: u16, hub_code: String, hub_message: String },
    #[error("{}: not found on the Hub{}{}", esc(what), paren(hub_code), colon(hub_message))]
    NotFound { what: String, hub_code: String, hub_message: String },
    #[error("{}: HTTP {status}", esc(url))]
    Status { url: String, status: u16 },
    #[error("{}: {}", esc(url), esc(message))]
    Transport { url: String, message: String },
    #[error("{}: no answer after {attempts} attempts with backoff (last: {})", esc(what), esc(last))]
    GaveUp { what: String, attempts: u32, last: String },
    #[error("{}: timed out after {secs} s waiting for {} ({var})", esc(what), esc(url))]
    TimedOut { what: String, url: String, secs: u64, var: &'static str },
    #[error(
        "{}: timed out after {secs} s, the deadline for the whole remote read ({RUN_VAR}): {}",
        esc(what),
        esc(detail)
    )]
    RunTimedOut { what: String, secs: u64, detail: String },
    #[error("{}: unexpected answer: {}", esc(url), esc(message))]
    BadResponse { url: String, message: String },
    #[error("{}: {size}, over the {cap}-byte cap for a file read whole", esc(what))]
    TooLarge { what: String, size: String, cap: u64 },
    #[error(
        "{}: reading it would pass {cap} bytes received in this run, the cap for one remote read ({MAX_BYTES_VAR})",
        esc(what)
    )]
    RunTooLarge { what: String, cap: u64 },
    #[error("{var}={}: {why}", esc(&format!("{value:?}")))]
    BadSetting { var: &'static str, value: String, why: &'static str },
    #[error("{}: {}", path.display(), esc(&source.to_string()))]
    Cache { path: PathBuf, source: std::io::Error },
    /// Another request failed first; this one stopped (never reported when the other is).
    #[error("cancelled after another request failed")]
    Cancelled,
}

fn paren(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(" ({})", esc(s))
    }
}

fn colon(s: &str) -> String {
    if s.is_empty() {
        String::new()
    } else {
        format!(": {}", esc(s))
    }
}

/// Characters a terminal would act on instead of showing: C0 and C1 controls (ESC starts colour
/// and cursor sequences), DEL, and the invisible format characters that reorder or hide text (bidi
/// overrides and isolates, zero-width ones, the BOM).
fn unsafe_char(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{2069}' | '\u{FEFF}')
}

/// `s` with every [`unsafe_char`] written as Rust writes it in a string literal (`\0`, `\n`,
/// `\u{1b}`, `\u{202e}`), fit for a terminal line. Text without them is returned as it is.
pub fn esc(s: &str) -> String {
    if !s.chars().any(unsafe_char) {
        return s.to_string();
    }
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            o.extend(c.escape_debug());
        } else {
            o.push(c);
        }
    }
    o
}

impl crate::ui::Help for HubError {
    fn help(&self) -> String {
        match self {
            HubError::Denied { .. } => "accept the licence on the model page (gated repos) and set HF_TOKEN, or log in with `hf auth login`; a private repo needs a token that may read it".into(),
            HubError::NotFound { .. } => "check the repo id and the revision (branch, tag or commit); a private repo answers like a missing one without HF_TOKEN".into(),
            HubError::Status { .. } | HubError::BadResponse { .. } => {
                "check HF_ENDPOINT (a mirror must serve the Hub's API and `resolve` paths with Range)".into()
            }
            HubError::Transport { .. } | HubError::GaveUp { .. } | HubError::Cancelled => {
                "check the network or HF_ENDPOINT and retry; HF_HUB_OFFLINE=1 uses only what is cached".into()
            }
            HubError::TimedOut { var, .. } => format!(
                "raise {var} (seconds, default 10) if the server is only slow; else check the network or HF_ENDPOINT"
            ),
            HubError::RunTimedOut { .. } => format!(
                "raise {RUN_VAR} (seconds, default {DEFAULT_RUN_TIMEOUT}) for a very large repo or a slow link; else check the network or HF_ENDPOINT"
            ),
            HubError::TooLarge { .. } => "download the repo and run on the local copy".into(),
            HubError::RunTooLarge { .. } => format!(
                "raise {MAX_BYTES_VAR} (e.g. 1G; default 256M) for a repo this large, or download it and run on the local copy"
            ),
            HubError::BadSetting { var, .. } => format!("fix or unset {var}"),
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
    /// A progress line on stderr when a remote read takes more than 2 s (the binary sets it on a
    /// terminal).
    pub progress: bool,
    pub limits: Limits,
    /// A variable above that could not be read: reported when the Hub is asked, not before.
    pub bad_env: Option<(&'static str, String, &'static str)>,
}

/// What one remote read may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Each API request, all of it (`HF_HUB_ETAG_TIMEOUT`).
    pub etag: Duration,
    /// Each file or header read, all of it (`HF_HUB_DOWNLOAD_TIMEOUT`).
    pub download: Duration,
    /// The whole read, retries included (`CKPTPILOT_HUB_RUN_TIMEOUT`).
    pub run: Duration,
    /// Body bytes received in all (`CKPTPILOT_HUB_MAX_BYTES`).
    pub max_bytes: u64,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            etag: Duration::from_secs(DEFAULT_ETAG_TIMEOUT),
            download: Duration::from_secs(DEFAULT_DOWNLOAD_TIMEOUT),
            run: Duration::from_secs(DEFAULT_RUN_TIMEOUT),
            max_bytes: DEFAULT_MAX_BYTES,
        }
    }
}

/// Seconds as huggingface_hub reads its timeouts (`int(value) or DEFAULT`): a whole number, 0 is
/// the default. An empty value counts as unset. At most a year (a deadline must stay an instant).
fn parse_secs(v: &str) -> Result<Option<Duration>, &'static str> {
    match v.trim().parse::<u64>() {
        Ok(0) => Ok(None),
        Ok(n) => Ok(Some(Duration::from_secs(n.min(365 * 86_400)))),
        Err(_) => Err("not a whole number of seconds (0 or unset: the default)"),
    }
}

impl Limits {
    /// From `HF_HUB_ETAG_TIMEOUT`, `HF_HUB_DOWNLOAD_TIMEOUT`, `CKPTPILOT_HUB_RUN_TIMEOUT`,
    /// `CKPTPILOT_HUB_MAX_BYTES` as `var` reads them; the first value that cannot be read is returned
    /// beside the defaults.
    fn from_vars(var: impl Fn(&str) -> Option<String>) -> (Limits, Option<(&'static str, String, &'static str)>) {
        let mut l = Limits::default();
        let mut bad = None;
        for (name, slot) in [(ETAG_VAR, &mut l.etag), (DOWNLOAD_VAR, &mut l.download), (RUN_VAR, &mut l.run)] {
            if let Some(v) = var(name) {
                match parse_secs(&v) {
                    Ok(Some(d)) => *slot = d,
                    Ok(None) => {}
                    Err(why) => {
                        bad = bad.or(Some((name, v, why)));
                    }
                }
            }
        }
        if let Some(v) = var(MAX_BYTES_VAR) {
            match crate::ui::parse_human_int(v.trim()) {
                Ok(0) => {}
                Ok(n) => l.max_bytes = n,
                Err(_) => bad = bad.or(Some((MAX_BYTES_VAR, v, "not a byte count (e.g. 512M, 2G; 0 or unset: 256M)"))),
            }
        }
        (l, bad)
    }
}

/// huggingface_hub's truthy strings for boolean environment variables.
fn truthy(v: &str) -> bool {
    matches!(v.trim().to_ascii_uppercase().as_str(), "1" | "ON" | "YES" | "TRUE")
}

impl Settings {
    /// `HF_ENDPOINT`, `HF_TOKEN` / `HF_TOKEN_PATH` / `$HF_HOME/token`, `HF_HOME`, `HF_HUB_OFFLINE`,
    /// and the [`Limits`] variables; `offline` (the `--offline` flag) forces offline.
    pub fn from_env(offline: bool) -> Settings {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let hf_home = var("HF_HOME").map(PathBuf::from).unwrap_or_else(|| {
            var("XDG_CACHE_HOME")
                .map(PathBuf::from)
                .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".cache")))
                .unwrap_or_else(|| PathBuf::from("/"))
                .join("huggingface")
        });
        let (limits, bad_env) = Limits::from_vars(var);
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
            limits,
            bad_env,
        }
    }

    fn cache_dir(&self, repo: &str) -> Result<PathBuf, HubError> {
        // One tree per endpoint (a mirror may serve different commits under the same name).
        let host: String = self
            .endpoint
            .split("://")
            .nth(1)
            .unwrap_or(&self.endpoint)
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || c == '.' || c == '-' { c } else { '_' })
            .collect();
        under(&under(&self.hf_home.join("ckptpilot").join("remote"), &host)?, &repo.replace('/', "--"))
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
    /// Every top-level file of the repo at that commit (names that are plain file names only).
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
    /// What was skipped and why (listed names that cannot be file names here), escaped.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
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

/// What a listed name is to this reader.
#[derive(Debug, PartialEq, Eq)]
enum Name {
    /// A plain name of the repo's top level: usable as a file name here.
    Top,
    /// A well-formed path in a subfolder (`original/params.json`): not read, nothing to say.
    Nested,
    /// Something no Hub lists: skipped, with why.
    Hostile(&'static str),
}

fn check_name(n: &str) -> Name {
    if n.is_empty() {
        return Name::Hostile("an empty name");
    }
    if n.chars().any(unsafe_char) {
        return Name::Hostile("it holds control or invisible characters");
    }
    if n.contains('\\') {
        return Name::Hostile("it holds a backslash");
    }
    if n.starts_with('/') {
        return Name::Hostile("an absolute path");
    }
    if n.split('/').any(|p| p.is_empty() || p == "." || p == "..") {
        return Name::Hostile("it holds an empty, `.` or `..` path segment");
    }
    if n.contains('/') {
        return Name::Nested;
    }
    if n.len() > 255 {
        return Name::Hostile("longer than a file name may be (255 bytes)");
    }
    if n.starts_with(".ckptpilot") {
        return Name::Hostile("the name of ckptpilot's own working files");
    }
    Name::Top
}

/// `root/name` for a name that is exactly one plain path component, checked again after joining:
/// nothing the server names is ever written outside the cache.
fn under(root: &Path, name: &str) -> Result<PathBuf, HubError> {
    let mut parts = Path::new(name).components();
    let one = matches!((parts.next(), parts.next()), (Some(Component::Normal(_)), None));
    let p = root.join(name);
    if one && p.parent() == Some(root) && p.starts_with(root) {
        Ok(p)
    } else {
        Err(HubError::Cache {
            path: root.to_path_buf(),
            source: std::io::Error::other(format!("refused {:?} as a file name: it would leave this directory", name)),
        })
    }
}

/// The JSON files read whole: those the checkpoint model reads (config.json, the index,
/// hf_quant_config.json, and the ModelSlim description `Description::find` would pick) — nothing
/// else, whatever else the repo holds.
fn wanted_whole(files: &[String]) -> Vec<&str> {
    use crate::quant::modelslim::DESCRIPTION;
    let mut v: Vec<&str> = files
        .iter()
        .map(String::as_str)
        .filter(|n| matches!(*n, "config.json" | "hf_quant_config.json" | crate::checkpoint::index::INDEX_NAME))
        .collect();
    if files.iter().any(|n| n == DESCRIPTION) {
        v.push(DESCRIPTION);
    } else if let Some(older) =
        files.iter().filter(|n| n.starts_with("quant_model_description_") && n.ends_with(".json")).min()
    {
        v.push(older);
    }
    v
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

/// How far a remote read is, for the progress line.
#[derive(Default)]
struct Progress {
    /// 0: asking for the file list; 1: reading files and headers.
    phase: AtomicU8,
    done: AtomicUsize,
    total: AtomicUsize,
}

/// After [`PROGRESS_AFTER`] without `stop`, a line on stderr (a terminal: indicatif draws nothing
/// elsewhere) that says what the read is waiting for, until `stop` ends.
fn watch(label: &str, p: &Progress, client: &http::Client, stop: std::sync::mpsc::Receiver<()>) {
    use std::sync::mpsc::RecvTimeoutError::Timeout;
    let t0 = Instant::now();
    if !matches!(stop.recv_timeout(PROGRESS_AFTER), Err(Timeout)) {
        return;
    }
    let bar = indicatif::ProgressBar::new_spinner();
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} {wide_msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
    );
    loop {
        let what = match p.phase.load(Ordering::Relaxed) {
            0 => "waiting for the file list".to_string(),
            _ => format!("{}/{} files", p.done.load(Ordering::Relaxed), p.total.load(Ordering::Relaxed)),
        };
        bar.set_message(format!(
            "remote: {label}: {what}, {}, {} s",
            indicatif::HumanBytes(client.bytes.load(Ordering::Relaxed)),
            t0.elapsed().as_secs()
        ));
        bar.tick();
        if !matches!(stop.recv_timeout(Duration::from_millis(250)), Err(Timeout)) {
            break;
        }
    }
    bar.finish_and_clear();
}

/// Read `repo` at `revision` (default `main`) from the Hub, or from the cache where it holds the
/// commit's files.
pub fn fetch(repo: &str, revision: Option<&str>, s: &Settings) -> Result<Remote, HubError> {
    if let Some((var, value, why)) = &s.bad_env {
        return Err(HubError::BadSetting { var, value: value.clone(), why });
    }
    if !url::Url::parse(&s.endpoint).is_ok_and(|u| matches!(u.scheme(), "http" | "https") && u.has_host()) {
        return Err(HubError::BadSetting {
            var: "HF_ENDPOINT",
            value: s.endpoint.clone(),
            why: "not an http:// or https:// URL with a host",
        });
    }
    let revision = revision.unwrap_or("main").to_string();
    let client = http::Client::new(s.token.clone(), &s.endpoint, s.limits);
    let progress = Progress::default();
    let label = esc(&format!("{repo}@{revision}"));
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|scope| {
        if s.progress {
            let (label, progress, client) = (&label, &progress, &client);
            scope.spawn(move || watch(label, progress, client, rx));
        }
        let r = fetch_with(&client, &progress, repo, revision.clone(), s);
        drop(tx);
        r
    })
}

fn fetch_with(
    client: &http::Client,
    progress: &Progress,
    repo: &str,
    revision: String,
    s: &Settings,
) -> Result<Remote, HubError> {
    let base = s.cache_dir(repo)?;
    let listing = listing(client, repo, &revision, &base, s)?;
    progress.phase.store(1, Ordering::Relaxed);
    let dir = under(&base, &listing.commit)?;
    let root = dir.join("files");
    let headers = dir.join("headers");
    for d in [&root, &headers] {
        std::fs::create_dir_all(d).map_err(cache_err(d))?;
    }
    let mut warnings = Vec::new();
    let mut files: Vec<String> = Vec::new();
    let mut sizes: BTreeMap<&str, Option<u64>> = BTreeMap::new();
    let mut seen = BTreeSet::new();
    for f in &listing.files {
        match check_name(&f.name) {
            Name::Top => {
                if seen.insert(f.name.as_str()) {
                    files.push(f.name.clone());
                    sizes.insert(f.name.as_str(), f.size);
                }
            }
            Name::Nested => {}
            Name::Hostile(why) => warnings.push(format!(
                "{}: skipped the listed file name \"{}\" ({why}); the rest is read",
                esc(repo),
                esc(&f.name)
            )),
        }
    }

    enum Job<'a> {
        Whole(&'a str),
        Header(&'a str),
    }
    let mut jobs = Vec::new();
    let mut cached = 0usize;
    let mut listed_whole = 0u64;
    for n in wanted_whole(&files) {
        let what = format!("{repo}: {n}");
        let listed = sizes.get(n).copied().flatten();
        // A length the listing announces over the cap is refused before any request for the file.
        if let Some(sz) = listed.filter(|&sz| sz > SMALL_FILE_CAP) {
            return Err(HubError::TooLarge { what, size: format!("{sz} bytes listed"), cap: SMALL_FILE_CAP });
        }
        if under(&root, n)?.is_file() {
            cached += 1;
        } else {
            listed_whole += listed.unwrap_or(0);
            jobs.push(Job::Whole(n));
        }
    }
    client.budget(listed_whole, &format!("{repo}: the JSON files"))?;
    for n in files.iter().filter(|n| n.ends_with(".safetensors")) {
        if under(&headers, &format!("{n}.meta.json"))?.is_file() && under(&headers, n)?.is_file() {
            cached += 1;
        } else {
            jobs.push(Job::Header(n));
        }
    }
    progress.total.store(jobs.len(), Ordering::Relaxed);
    let file_url =
        |n: &str| format!("{}/{repo}/resolve/{}/{}", s.endpoint, encode_segment(&listing.commit), encode_segment(n));
    // The longest 8 + N read so far: the first Range of the shards after it covers that much.
    let longest = AtomicU64::new(0);
    let run = |i: usize| -> Result<(), HubError> {
        match &jobs[i] {
            Job::Whole(n) => {
                let body =
                    client.get(&file_url(n), None, SMALL_FILE_CAP, &format!("{repo}: {n}"), http::Kind::Download)?;
                // Written only once whole: an error above leaves nothing in the cache.
                let p = under(&root, n)?;
                fsutil::write_atomic(&p, &body.bytes).map_err(cache_err(&p))
            }
            Job::Header(n) => {
                let (prefix, size, etag) = read_header(
                    client,
                    &file_url(n),
                    sizes.get(n).copied().flatten(),
                    &format!("{repo}: {n}"),
                    &longest,
                )?;
                let p = under(&headers, n)?;
                fsutil::write_atomic(&p, &prefix).map_err(cache_err(&p))?;
                let m = under(&headers, &format!("{n}.meta.json"))?;
                let meta = serde_json::to_vec(&HeaderMeta { size, etag }).expect("meta serializes");
                fsutil::write_atomic(&m, &meta).map_err(cache_err(&m))
            }
        }
    };
    in_pool(jobs.len(), s.concurrency, |i| {
        let r = run(i);
        match &r {
            Ok(()) => {
                progress.done.fetch_add(1, Ordering::Relaxed);
            }
            // The others stop at their next read: one refusal ends the run, not 32 downloads later.
            Err(_) => client.cancel(),
        }
        r
    })?;
    let (files_fetched, requests, bytes_fetched) =
        (jobs.len(), client.requests.load(Ordering::Relaxed), client.bytes.load(Ordering::Relaxed));
    drop(jobs);
    let mut shards = Vec::new();
    for n in files.iter().filter(|n| n.ends_with(".safetensors")) {
        let m = under(&headers, &format!("{n}.meta.json"))?;
        let meta: HeaderMeta =
            fsutil::read_bounded(&m, 1 << 20).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or_else(|| {
                HubError::Cache { path: m.clone(), source: std::io::Error::other("unreadable cache entry") }
            })?;
        shards.push(RemoteShard { name: n.clone(), header_path: under(&headers, n)?, size: meta.size });
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
        warnings,
    })
}

/// `run(0..n)` on at most `workers` threads, each taking the next index; after a failure no new
/// index starts, and the error of the lowest failed index is returned — a request that only
/// stopped because another failed ([`HubError::Cancelled`]) does not count as failed.
fn in_pool(n: usize, workers: usize, run: impl Fn(usize) -> Result<(), HubError> + Sync) -> Result<(), HubError> {
    let next = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let first_err: Mutex<Option<(usize, HubError)>> = Mutex::new(None);
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
                        let rank = |j: usize, e: &HubError| (matches!(e, HubError::Cancelled), j);
                        let mut g = first_err.lock().unwrap_or_else(|p| p.into_inner());
                        if g.as_ref().is_none_or(|(j, old)| rank(i, &e) < rank(*j, old)) {
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
            let body = client.get(&url, None, SMALL_FILE_CAP, &what, http::Kind::Meta)?;
            let info: ModelInfo = serde_json::from_slice(&body.bytes).map_err(|e| HubError::BadResponse {
                url: url.clone(),
                message: format!("not the model-info JSON: {e}"),
            })?;
            let commit = info.sha.filter(|c| is_commit(c)).ok_or_else(|| HubError::BadResponse {
                url: url.clone(),
                message: "no 40-hex `sha` (commit) in the model info".into(),
            })?;
            let l = SnapshotFile { schema: SNAPSHOT_SCHEMA.into(), repo: repo.into(), commit, files: info.siblings };
            let dir = under(base, &l.commit)?;
            std::fs::create_dir_all(&dir).map_err(cache_err(&dir))?;
            let p = dir.join("snapshot.json");
            let text = serde_json::to_vec_pretty(&l).expect("snapshot serializes");
            fsutil::write_atomic(&p, &text).map_err(cache_err(&p))?;
            Ok(l)
        }
    }
}

/// How many bytes the first Range of a shard asks for: [`SPECULATIVE`], or more once a longer header
/// was read this run (`longest`: the largest 8 + N so far) — 9/8 of it rounded up to 4 KiB, at most
/// [`SPECULATIVE_MAX`] — so that the shards after it take one request each too.
fn speculative_len(longest: u64) -> u64 {
    let learned = longest.saturating_add(longest / 8).div_ceil(4096).saturating_mul(4096);
    learned.clamp(SPECULATIVE, SPECULATIVE_MAX)
}

/// One shard's header by Range: its first [`speculative_len`] bytes (the header's length and, as a
/// rule, the whole header; the file's length from `Content-Range`, else `listed`), then, only when
/// the header is longer, the rest of it from where the first range was answered (the CDN after a
/// redirect). The bytes past the header are dropped here, never parsed or cached. A length that
/// cannot be (over the cap, past the file) is not read further: the header checks say why from the
/// 8 bytes. A rest that would pass the run's byte cap is refused before it is asked for, and a
/// header cut short is an error, never cached. `longest` is raised to this header's 8 + N.
/// Returns (prefix, file length, ETag).
fn read_header(
    client: &http::Client,
    url: &str,
    listed: Option<u64>,
    what: &str,
    longest: &AtomicU64,
) -> Result<(Vec<u8>, u64, Option<String>), HubError> {
    let ask = speculative_len(longest.load(Ordering::Relaxed));
    let first = client.get(url, Some((0, ask)), ask, what, http::Kind::Download)?;
    let size = first.total.or(listed).ok_or_else(|| HubError::BadResponse {
        url: first.url.clone(),
        message: "no file length (Content-Range or the listing's size)".into(),
    })?;
    let mut prefix = first.bytes;
    prefix.truncate(ask.min(size) as usize);
    if (prefix.len() as u64) < size.min(8) {
        return Err(HubError::BadResponse {
            url: first.url,
            message: format!("{} bytes where the file's first {} were asked for", prefix.len(), size.min(8)),
        });
    }
    let want = match <[u8; 8]>::try_from(&prefix[..8.min(prefix.len())]).map(u64::from_le_bytes) {
        Ok(n) if n <= crate::checkpoint::header::MAX_HEADER_LEN && n.saturating_add(8) <= size => 8 + n,
        _ => 8.min(prefix.len() as u64),
    };
    longest.fetch_max(want, Ordering::Relaxed);
    // What came past the header (weight bytes, as a rule) is dropped before anything reads it.
    prefix.truncate(want.min(prefix.len() as u64) as usize);
    if want > prefix.len() as u64 {
        let have = prefix.len() as u64;
        client.budget(want - have, what)?;
        let rest = client.get(&first.url, Some((have, want - have)), want - have, what, http::Kind::Download)?;
        if (rest.bytes.len() as u64) < want - have {
            return Err(HubError::BadResponse {
                url: rest.url,
                message: format!("{} header bytes where {} were asked for", rest.bytes.len(), want - have),
            });
        }
        prefix.extend_from_slice(&rest.bytes[..(want - have) as usize]);
    }
    Ok((prefix, size, first.etag))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_range_grows_only_past_huggingface_hubs_size_and_to_a_cap() {
        // Headers (8 + N) up to 87,382 bytes leave it as it is: 9/8 of them fits 100,000.
        for longest in [0, 8, 74_680, 87_382] {
            assert_eq!(speculative_len(longest), 100_000, "{longest}");
        }
        assert_eq!(speculative_len(87_383), 102_400);
        // A longer header: 9/8 of it, rounded up to 4 KiB, for the shards after it.
        assert_eq!(speculative_len(150_000), 172_032);
        assert!(speculative_len(150_000) >= 150_000 + 150_000 / 8);
        // A huge one is not fetched again and again past its own header.
        assert_eq!(speculative_len(50 << 20), 1 << 20);
        assert_eq!(speculative_len(u64::MAX), 1 << 20);
    }

    #[test]
    fn revisions_are_one_path_segment() {
        assert_eq!(encode_segment("main"), "main");
        assert_eq!(encode_segment("refs/pr/1"), "refs%2Fpr%2F1");
        assert_eq!(encode_segment("v1.0"), "v1.0");
    }

    #[test]
    fn only_the_json_files_the_checks_read() {
        let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let files = names(&[
            "config.json",
            "generation_config.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "model.safetensors.index.json",
            "extra_0.json",
            "hf_quant_config.json",
            "quant_model_description_w8a8_dynamic.json",
            "quant_model_description_a.json",
            "model.safetensors",
        ]);
        assert_eq!(
            wanted_whole(&files),
            ["config.json", "model.safetensors.index.json", "hf_quant_config.json", "quant_model_description_a.json"]
        );
        // The current name wins over the older API's, as `Description::find` picks it.
        let files = names(&["quant_model_description_a.json", "quant_model_description.json"]);
        assert_eq!(wanted_whole(&files), ["quant_model_description.json"]);
        assert!(truthy("yes") && truthy(" 1") && !truthy("0") && !truthy("off"));
    }

    #[test]
    fn listed_names_that_cannot_be_file_names_here() {
        assert_eq!(check_name("config.json"), Name::Top);
        assert_eq!(check_name("model-00001-of-00002 (copy).safetensors"), Name::Top);
        assert_eq!(check_name("modèle.json"), Name::Top);
        assert_eq!(check_name("original/params.json"), Name::Nested);
        for bad in [
            "",
            ".",
            "..",
            "../escape.json",
            "a/../../b.json",
            "/etc/passwd",
            "a//b",
            "a\\b.json",
            "nul\0.json",
            "esc\x1b[2J.json",
            "bell\x07",
            "line\nbreak",
            "c1\u{85}",
            "rtl\u{202e}nosj.exe",
            "zero\u{200b}width",
            ".ckptpilot-tmp.x",
        ] {
            assert!(matches!(check_name(bad), Name::Hostile(_)), "{bad:?}");
        }
        assert!(matches!(check_name(&"a".repeat(256)), Name::Hostile(_)));
    }

    #[test]
    fn cache_paths_stay_under_their_root() {
        let root = Path::new("/cache/root");
        assert_eq!(under(root, "config.json").unwrap(), root.join("config.json"));
        for bad in ["..", ".", "", "../x", "a/b", "/etc/passwd", "./x"] {
            assert!(under(root, bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn server_text_is_escaped_for_a_terminal() {
        assert_eq!(esc("plain text / é ✓"), "plain text / é ✓");
        assert_eq!(esc("a\0b"), "a\\0b");
        assert_eq!(esc("\x1b[31mred"), "\\u{1b}[31mred");
        assert_eq!(esc("x\ny\tz\r"), "x\\ny\\tz\\r");
        assert_eq!(esc("\u{202e}\u{85}\u{7f}"), "\\u{202e}\\u{85}\\u{7f}");
        // Escaping twice changes nothing more: no control character is left to escape.
        assert_eq!(esc(&esc("\x1b\0")), esc("\x1b\0"));
        let e = HubError::Denied {
            what: "o/n".into(),
            status: 401,
            hub_code: "Gated\x1b[2J".into(),
            hub_message: "go \x07away\u{9b}".into(),
        };
        let m = e.to_string();
        assert!(!m.chars().any(unsafe_char), "{m:?}");
        assert!(m.contains("Gated\\u{1b}[2J") && m.contains("go \\u{7}away\\u{9b}"), "{m}");
    }

    #[test]
    fn timeouts_read_as_huggingface_hub_reads_them() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
        };
        let (l, bad) = Limits::from_vars(env(&[]));
        assert!(bad.is_none());
        assert_eq!(
            (l.etag, l.download, l.run),
            (Duration::from_secs(10), Duration::from_secs(10), Duration::from_secs(120))
        );
        assert_eq!(l.max_bytes, 256 << 20);
        let (l, bad) = Limits::from_vars(env(&[
            ("HF_HUB_ETAG_TIMEOUT", "3"),
            ("HF_HUB_DOWNLOAD_TIMEOUT", "0"),
            ("CKPTPILOT_HUB_RUN_TIMEOUT", " 30 "),
            ("CKPTPILOT_HUB_MAX_BYTES", "1G"),
        ]));
        assert!(bad.is_none());
        assert_eq!(
            (l.etag, l.download, l.run),
            (Duration::from_secs(3), Duration::from_secs(10), Duration::from_secs(30))
        );
        assert_eq!(l.max_bytes, 1 << 30);
        let (l, bad) = Limits::from_vars(env(&[("HF_HUB_ETAG_TIMEOUT", "1.5"), ("HF_HUB_DOWNLOAD_TIMEOUT", "abc")]));
        assert_eq!(bad.map(|b| b.0), Some("HF_HUB_ETAG_TIMEOUT"));
        assert_eq!(l.etag, Duration::from_secs(10));
        let (l, _) = Limits::from_vars(env(&[("HF_HUB_ETAG_TIMEOUT", "99999999999999999")]));
        assert!(Instant::now().checked_add(l.etag).is_some());
    }
}
