//! How the command talks to a person: `error:` / `help:` lines on stderr (coloured on a terminal,
//! plain when piped or when `NO_COLOR` is set), and stdout writes that stop quietly when the reader
//! goes away (`ckptpilot audit … | head`), as ripgrep and cargo do, instead of panicking.

use std::io::{IsTerminal, Write};

/// `--color`: when to colour what ckptpilot prints itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    /// Colour when the stream is a terminal and `NO_COLOR` is not set.
    #[default]
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// Whether to colour stderr.
    pub fn stderr(self) -> bool {
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => no_color_unset() && std::io::stderr().is_terminal(),
        }
    }

    /// The same decision for clap's own messages.
    pub fn clap(self) -> clap::ColorChoice {
        match self {
            ColorChoice::Always => clap::ColorChoice::Always,
            ColorChoice::Never => clap::ColorChoice::Never,
            ColorChoice::Auto if !no_color_unset() => clap::ColorChoice::Never,
            ColorChoice::Auto => clap::ColorChoice::Auto,
        }
    }
}

/// <https://no-color.org>: set to any non-empty value, it turns colour off.
fn no_color_unset() -> bool {
    std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// An error the user can act on: what went wrong and what to do about it.
pub trait Help {
    /// The `help:` line: the fix, in one sentence.
    fn help(&self) -> String;
}

/// Whether `c` may not reach a terminal raw: C0 controls (ESC, BEL, CR, backspace, …), DEL, C1
/// controls (U+009B is a CSI on some terminals) and the bidirectional overrides that reorder what
/// is shown ("Trojan source").
fn is_hostile(c: char) -> bool {
    c.is_control() || matches!(c, '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn escape_if(s: &str, hostile: impl Fn(char) -> bool) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(&hostile) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if hostile(c) {
            match c {
                '\n' => out.push_str("\\n"),
                '\r' => out.push_str("\\r"),
                '\t' => out.push_str("\\t"),
                _ => {
                    use std::fmt::Write;
                    let _ = write!(out, "\\u{{{:x}}}", c as u32);
                }
            }
        } else {
            out.push(c);
        }
    }
    std::borrow::Cow::Owned(out)
}

/// One field of one record, as shown to a person: every control character (newlines included)
/// becomes a visible escape (`\u{1b}`, `\n`), so a tensor, shard or architecture name can neither
/// drive the terminal nor split its record over two lines. `--json` keeps the raw text.
pub fn field(s: &str) -> std::borrow::Cow<'_, str> {
    escape_if(s, is_hostile)
}

/// A whole human text at the last step before a stream: the same escapes, except that the
/// newlines and tabs that lay the text out are kept. The layer under [`field`], for what a
/// rendering missed.
pub fn text(s: &str) -> std::borrow::Cow<'_, str> {
    escape_if(s, |c| c != '\n' && c != '\t' && is_hostile(c))
}

/// Print `error: MSG` and `help: FIX` to stderr, the way clap prints its own usage errors.
pub fn report(color: bool, msg: &str, help: &str) {
    // An error caused by the interrupt's own cleanup is not the command's to tell.
    crate::fsutil::wait_if_interrupted();
    if with_capture(|c| c.errors.push((msg.to_string(), help.to_string()))).is_some() {
        return;
    }
    let (msg, help) = (text(msg), text(help));
    let (red, cyan, reset) = if color { ("\x1b[1;31m", "\x1b[1;36m", "\x1b[0m") } else { ("", "", "") };
    let mut e = std::io::stderr().lock();
    // stderr closed too: nothing left to tell anyone.
    let _ = writeln!(e, "{red}error{reset}: {msg}");
    if !help.is_empty() {
        let _ = writeln!(e, "{cyan}help{reset}: {help}");
    }
}

/// Write `text` to stdout. `Ok(false)` when the reader has gone (a closed pipe): the caller stops
/// writing and exits with the status it would have had; any other error is returned.
pub fn emit(text: &str) -> std::io::Result<bool> {
    if with_capture(|c| c.stdout.extend_from_slice(text.as_bytes())).is_some() {
        return Ok(true);
    }
    let text = self::text(text);
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e),
    }
}

/// [`emit`] for a JSON document, streamed (pretty, then a newline) instead of built in memory: a
/// remap of ~90k tensors is ~90 MB of JSON.
pub fn emit_json<T: serde::Serialize>(value: &T) -> std::io::Result<bool> {
    emit_json_with(|w| serde_json::to_writer_pretty(w, value).map_err(std::io::Error::from))
}

/// [`emit_json`] for a document `write` writes itself (pretty JSON, no final newline).
pub fn emit_json_with(write: impl FnOnce(&mut dyn Write) -> std::io::Result<()>) -> std::io::Result<bool> {
    let mut write = Some(write);
    if let Some(r) = with_capture(|c| {
        (write.take().expect("once"))(&mut c.stdout)?;
        c.stdout.push(b'\n');
        Ok(true)
    }) {
        return r;
    }
    let write = write.take().expect("not captured");
    let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
    let written = write(&mut out).and_then(|()| out.write_all(b"\n")).and_then(|()| out.flush());
    match written {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(e) => Err(e),
    }
}

/// A byte count for people: `512 B`, `1.5 KiB`, `78.2 GiB`.
pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// An integer as vLLM's `human_readable_int` reads it (`--max-model-len 32k`): lowercase
/// suffixes are decimal and may carry a fraction (`25.6k` = 25,600), uppercase ones binary and
/// integral (`32K` = 32,768); a bare integer is itself.
pub fn parse_human_int(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let bad = || format!("{s:?} is not an integer (vLLM's forms: 131072, 128k = 128,000, 128K = 131,072, 1m, 1M)");
    let Some(last) = s.chars().last() else { return Err(bad()) };
    let (num, mult, decimal): (&str, u64, bool) = match last {
        'k' => (&s[..s.len() - 1], 1_000, true),
        'm' => (&s[..s.len() - 1], 1_000_000, true),
        'g' => (&s[..s.len() - 1], 1_000_000_000, true),
        't' => (&s[..s.len() - 1], 1_000_000_000_000, true),
        'K' => (&s[..s.len() - 1], 1 << 10, false),
        'M' => (&s[..s.len() - 1], 1 << 20, false),
        'G' => (&s[..s.len() - 1], 1 << 30, false),
        'T' => (&s[..s.len() - 1], 1 << 40, false),
        _ => (s, 1, false),
    };
    let (int, frac) = match num.split_once('.') {
        Some((i, f)) if decimal && mult > 1 => (i, f),
        Some(_) if mult > 1 => {
            return Err(format!(
                "{s:?}: decimals are only allowed with decimal suffixes (k, m, g, t), as in vLLM; did you mean {}{}?",
                num,
                last.to_ascii_lowercase()
            ))
        }
        Some(_) => return Err(bad()),
        None => (num, ""),
    };
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|b| b.is_ascii_digit());
    if !digits(int) || !(frac.is_empty() || digits(frac)) || (num.contains('.') && frac.is_empty()) {
        return Err(bad());
    }
    if decimal && mult > 1 {
        // int(float(number) * mult), as vLLM computes it: a double, truncated ("1.001k" is 1000).
        let x: f64 = num.parse().map_err(|_| bad())?;
        let v = x * mult as f64;
        if !(0.0..1.8e19).contains(&v) {
            return Err(bad());
        }
        return Ok(v as u64);
    }
    let whole: u64 = int.parse().map_err(|_| bad())?;
    whole.checked_mul(mult).ok_or_else(bad)
}

#[cfg(test)]
mod tests {
    use super::parse_human_int as p;

    #[test]
    fn vllm_human_ints() {
        assert_eq!(p("131072"), Ok(131_072));
        assert_eq!(p("32k"), Ok(32_000));
        assert_eq!(p("32K"), Ok(32_768));
        assert_eq!(p("128K"), Ok(131_072));
        assert_eq!(p("1m"), Ok(1_000_000));
        assert_eq!(p("1M"), Ok(1_048_576));
        assert_eq!(p("25.6k"), Ok(25_600));
        assert_eq!(p("1.001k"), Ok(1_000), "Python: int(float('1.001') * 1000) == 1000");
        assert_eq!(p(" 2g "), Ok(2_000_000_000));
        for bad in ["", "k", "1.5K", "1.k", "-1", "1x", "1kk", "99999999999999999999", "1.2.3k"] {
            assert!(p(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn control_characters_become_visible_escapes() {
        use super::{field, text};
        let hostile = "\x1b]0;PWNED\x07\x1b[2J.weight\r\nx\u{9b}1m\u{202e}txt\x7f";
        let f = field(hostile);
        assert_eq!(f, "\\u{1b}]0;PWNED\\u{7}\\u{1b}[2J.weight\\r\\nx\\u{9b}1m\\u{202e}txt\\u{7f}");
        assert!(!f.chars().any(|c| c.is_control()));
        assert_eq!(text("a\tb\nc\x1b"), "a\tb\nc\\u{1b}");
        assert!(matches!(field("model.layers.0.weight"), std::borrow::Cow::Borrowed(_)));
    }
}

/// What a command run under [`capture`] would have printed: its report, and its `error:` /
/// `help:` pairs. Notes and progress still go to stderr.
#[derive(Debug, Default)]
pub struct Captured {
    pub stdout: Vec<u8>,
    pub errors: Vec<(String, String)>,
}

thread_local! {
    static CAPTURE: std::cell::RefCell<Option<Captured>> = const { std::cell::RefCell::new(None) };
}

/// Whether this thread's output is being captured.
pub fn capturing() -> bool {
    CAPTURE.with(|c| c.borrow().is_some())
}

fn with_capture<R>(f: impl FnOnce(&mut Captured) -> R) -> Option<R> {
    CAPTURE.with(|c| c.borrow_mut().as_mut().map(f))
}

/// Run `f` with [`emit`], [`emit_json`] and [`report`] writing into a buffer on this thread
/// instead of stdout / stderr (the Python API returns a command's `--json` this way, the very
/// bytes the command prints).
pub fn capture<R>(f: impl FnOnce() -> R) -> (R, Captured) {
    let before = CAPTURE.with(|c| c.borrow_mut().replace(Captured::default()));
    let r = f();
    let got = CAPTURE.with(|c| std::mem::replace(&mut *c.borrow_mut(), before)).unwrap_or_default();
    (r, got)
}
