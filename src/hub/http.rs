//! The few HTTP requests remote pre-flight makes, with the Hub's conventions: a bearer token,
//! redirects followed by hand (the Range header is kept; the token is never sent to another host,
//! as huggingface_hub does for its CDN redirects), bounded retries with backoff for 429 / 5xx and
//! transport errors, and reads that stop at a byte cap whatever the server sends.

use super::HubError;
use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Attempts per request: the first and up to four retries.
const ATTEMPTS: u32 = 5;
/// Backoff before retry k (1-based): BASE × 2^(k−1), capped; a `Retry-After` the server sends is
/// honoured up to [`RETRY_AFTER_CAP`].
const BACKOFF_BASE: Duration = Duration::from_millis(250);
const BACKOFF_CAP: Duration = Duration::from_secs(4);
const RETRY_AFTER_CAP: Duration = Duration::from_secs(30);
const MAX_REDIRECTS: usize = 5;

pub struct Client {
    agent: ureq::Agent,
    token: Option<String>,
    /// The endpoint's scheme, host and port: the only place the token is sent.
    token_host: Option<String>,
    /// Requests sent (retries and redirect hops included) and body bytes received.
    pub requests: AtomicU64,
    pub bytes: AtomicU64,
}

/// A response body read up to a cap, and what the headers said.
pub struct Body {
    pub bytes: Vec<u8>,
    /// The file's whole length: `Content-Range: bytes a-b/TOTAL` of a 206, `Content-Length` of a 200.
    pub total: Option<u64>,
    pub etag: Option<String>,
    /// The URL that answered, after redirects: a second range of the same file goes straight there.
    pub url: String,
}

impl Client {
    pub fn new(token: Option<String>, endpoint: &str) -> Client {
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(20))
            .timeout_read(Duration::from_secs(60))
            .redirects(0)
            .max_idle_connections_per_host(64)
            .user_agent(concat!("ckptkit/", env!("CARGO_PKG_VERSION")))
            .build();
        Client { agent, token, token_host: host_of(endpoint), requests: AtomicU64::new(0), bytes: AtomicU64::new(0) }
    }

    /// GET `url`, with `range` as `(first byte, length)` when given, reading at most `cap` bytes of
    /// the body (a server that ignores Range and sends the whole file is cut off there). `what`
    /// names the file in errors.
    pub fn get(&self, url: &str, range: Option<(u64, u64)>, cap: u64, what: &str) -> Result<Body, HubError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.get_once(url, range, cap, what) {
                Ok(b) => return Ok(b),
                Err(Retry::No(e)) => return Err(e),
                Err(Retry::After(e, wait)) => {
                    if attempt >= ATTEMPTS {
                        return Err(HubError::GaveUp {
                            what: what.to_string(),
                            attempts: attempt,
                            last: e.to_string(),
                        });
                    }
                    let backoff = (BACKOFF_BASE * 2u32.pow(attempt - 1)).min(BACKOFF_CAP);
                    std::thread::sleep(wait.map(|w| w.min(RETRY_AFTER_CAP)).unwrap_or(backoff));
                }
            }
        }
    }

    fn get_once(&self, url: &str, range: Option<(u64, u64)>, cap: u64, what: &str) -> Result<Body, Retry> {
        let mut url = url.to_string();
        let mut linked_etag = None;
        for _ in 0..=MAX_REDIRECTS {
            let mut req = self.agent.get(&url);
            if let Some((start, len)) = range {
                req = req.set("Range", &format!("bytes={}-{}", start, start + len.max(1) - 1));
            }
            if let Some(t) = &self.token {
                // Never to another host (a CDN the Hub redirects to gets signed URLs, not the token).
                if self.token_host.is_some() && host_of(&url) == self.token_host {
                    req = req.set("Authorization", &format!("Bearer {t}"));
                }
            }
            self.requests.fetch_add(1, Ordering::Relaxed);
            let resp = match req.call() {
                Ok(r) => r,
                Err(ureq::Error::Status(code, r)) => return Err(status_error(code, &r, &url, what)),
                Err(ureq::Error::Transport(t)) => {
                    let message = match t.message() {
                        Some(m) => format!("{}: {m}", t.kind()),
                        None => t.kind().to_string(),
                    };
                    let e = HubError::Transport { url: url.clone(), message };
                    // A name that does not resolve will not resolve in a second either.
                    return Err(if t.kind() == ureq::ErrorKind::Dns { Retry::No(e) } else { Retry::After(e, None) });
                }
            };
            linked_etag = linked_etag.or_else(|| resp.header("X-Linked-Etag").map(str::to_string));
            let status = resp.status();
            if (300..400).contains(&status) {
                let Some(loc) = resp.header("Location") else {
                    return Err(Retry::No(HubError::BadResponse {
                        url,
                        message: format!("HTTP {status} without a Location"),
                    }));
                };
                url = join(&url, loc)
                    .map_err(|message| Retry::No(HubError::BadResponse { url: url.clone(), message }))?;
                continue;
            }
            let total = match status {
                206 => resp
                    .header("Content-Range")
                    .and_then(|v| v.rsplit_once('/'))
                    .and_then(|(_, t)| t.trim().parse::<u64>().ok()),
                _ => resp.header("Content-Length").and_then(|v| v.trim().parse::<u64>().ok()),
            };
            if range.is_some() && status == 206 && total.is_none() {
                return Err(Retry::No(HubError::BadResponse {
                    url,
                    message: "206 without a `Content-Range: bytes a-b/TOTAL` header".into(),
                }));
            }
            let etag = linked_etag.clone().or_else(|| resp.header("ETag").map(str::to_string));
            // A 200 to a ranged request carries the whole file from byte 0: keep reading from its
            // start, up to the cap, and hang up. Never the whole file.
            let (skip, want) = match (range, status) {
                (Some((start, len)), 200) => (start, len),
                (Some((_, len)), _) => (0, len),
                (None, _) => (0, cap),
            };
            let mut reader = resp.into_reader().take(skip.saturating_add(want.min(cap)));
            let mut bytes = Vec::new();
            if skip > 0 {
                let n = std::io::copy(&mut (&mut reader).take(skip), &mut std::io::sink()).map_err(|e| {
                    Retry::After(HubError::Transport { url: url.clone(), message: e.to_string() }, None)
                })?;
                self.bytes.fetch_add(n, Ordering::Relaxed);
            }
            reader
                .read_to_end(&mut bytes)
                .map_err(|e| Retry::After(HubError::Transport { url: url.clone(), message: e.to_string() }, None))?;
            self.bytes.fetch_add(bytes.len() as u64, Ordering::Relaxed);
            if range.is_none() && total.is_some_and(|t| t > cap) {
                return Err(Retry::No(HubError::TooLarge { what: what.to_string(), size: total.unwrap_or(0), cap }));
            }
            return Ok(Body { bytes, total, etag, url });
        }
        Err(Retry::No(HubError::BadResponse { url, message: format!("more than {MAX_REDIRECTS} redirects") }))
    }
}

enum Retry {
    No(HubError),
    After(HubError, Option<Duration>),
}

fn status_error(code: u16, r: &ureq::Response, url: &str, what: &str) -> Retry {
    let hub_code = r.header("X-Error-Code").unwrap_or("").to_string();
    let hub_message = r.header("X-Error-Message").unwrap_or("").to_string();
    match code {
        // Without a token the Hub answers 401 for a repo that is missing or private alike.
        401 | 404 if hub_code.ends_with("NotFound") => {
            Retry::No(HubError::NotFound { what: what.to_string(), hub_code, hub_message })
        }
        401 | 403 => Retry::No(HubError::Denied { what: what.to_string(), status: code, hub_code, hub_message }),
        404 => Retry::No(HubError::NotFound { what: what.to_string(), hub_code, hub_message }),
        429 | 500 | 502 | 503 | 504 => {
            let wait = r.header("Retry-After").and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs);
            Retry::After(HubError::Status { url: url.to_string(), status: code }, wait)
        }
        _ => Retry::No(HubError::Status { url: url.to_string(), status: code }),
    }
}

fn host_of(url: &str) -> Option<String> {
    url::Url::parse(url)
        .ok()
        .map(|u| format!("{}://{}:{}", u.scheme(), u.host_str().unwrap_or(""), u.port_or_known_default().unwrap_or(0)))
}

/// A `Location` (absolute, or relative to the URL that sent it).
fn join(base: &str, loc: &str) -> Result<String, String> {
    let base = url::Url::parse(base).map_err(|e| format!("bad URL: {e}"))?;
    base.join(loc).map(|u| u.to_string()).map_err(|e| format!("bad redirect Location {loc:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_resolve_against_the_sender() {
        assert_eq!(join("http://h:1/a/b/c", "/x/y").unwrap(), "http://h:1/x/y");
        assert_eq!(join("http://h:1/a/b/c", "https://cdn/z?sig=1").unwrap(), "https://cdn/z?sig=1");
        assert_eq!(host_of("https://huggingface.co/x"), host_of("https://huggingface.co:443/y"));
        assert_ne!(host_of("https://huggingface.co/x"), host_of("https://cdn-lfs.hf.co/y"));
    }
}
