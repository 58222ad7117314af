//! Replays, on stable, every input the fuzz targets in `fuzz/` ever crashed, hung or ran out of
//! memory on (`fuzz/regressions/<target>/`), and every seed (`fuzz/seeds/<target>/`), through the
//! same `ckptpilot::fuzzing` entry point the target calls. A panic fails the test naming the file; so
//! does a call that does not return within `LIMIT` (it runs on its own thread, so a hang fails the
//! test instead of blocking CI).
//!
//! `fuzz/regressions/<target>/open/` holds inputs that still crash, whose fix belongs to code the
//! fuzzing work does not own: `cargo test` skips them (so it stays green), `cargo test --test
//! fuzz_regressions -- --ignored` replays them and fails until they are fixed; then `git mv` them one
//! level up, where every `cargo test` replays them.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const LIMIT: Duration = Duration::from_secs(20);

type Target = fn(&[u8]);

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.flatten().map(|e| e.path()).filter(|p| p.is_file()).collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

/// Runs `f` on every file under fuzz/<kind>/<target>/; returns how many it ran.
fn replay(kind: &str, target: &str, f: Target) -> usize {
    replay_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz").join(kind).join(target), target, f)
}

/// Runs `f` (the `target` function) on every file directly in `dir`; returns how many it ran.
fn replay_dir(dir: &Path, target: &str, f: Target) -> usize {
    let list = files(dir);
    for path in &list {
        let data = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let (tx, rx) = mpsc::channel();
        let start = Instant::now();
        let worker = std::thread::Builder::new()
            .name(format!("{target}:{}", path.display()))
            .spawn(move || {
                let ok = std::panic::catch_unwind(|| f(&data)).is_ok();
                let _ = tx.send(ok);
            })
            .expect("spawn a replay thread");
        match rx.recv_timeout(LIMIT) {
            Ok(true) => {
                let _ = worker.join();
            }
            Ok(false) => panic!(
                "fuzz regression: ckptpilot::fuzzing::{target} panicked on {} (see the message above)",
                path.display()
            ),
            Err(_) => panic!(
                "fuzz regression: ckptpilot::fuzzing::{target} did not return within {:?} on {} (a hang); \
                 the worker thread is left running",
                start.elapsed(),
                path.display()
            ),
        }
    }
    list.len()
}

fn check(target: &str, f: Target, need_regressions: bool) {
    let regressions = replay("regressions", target, f);
    let seeds = replay("seeds", target, f);
    if need_regressions {
        assert!(regressions > 0, "fuzz/regressions/{target}/ is empty or missing: this test would pass on nothing");
    }
    assert!(seeds > 0, "fuzz/seeds/{target}/ is empty or missing");
    eprintln!("{target}: {regressions} regression input(s), {seeds} seed(s) replayed");
}

#[test]
fn header() {
    check("header", ckptpilot::fuzzing::header, true);
}

#[test]
fn index() {
    check("index", ckptpilot::fuzzing::index, false);
}

#[test]
fn config() {
    check("config", ckptpilot::fuzzing::config, false);
}

#[test]
fn audit_file() {
    check("audit_file", ckptpilot::fuzzing::audit_file, true);
}

#[test]
fn audit_dir() {
    check("audit_dir", ckptpilot::fuzzing::audit_dir, false);
}

#[test]
fn dequant_dir() {
    check("dequant_dir", ckptpilot::fuzzing::dequant_dir, false);
}

/// Inputs that still crash (see the module comment): fails, naming the first, until they are fixed.
#[test]
#[ignore = "open bugs: fuzz/regressions/<target>/open/ still crash; run with --ignored"]
fn open_bugs() {
    let targets: [(&str, Target); 6] = [
        ("header", ckptpilot::fuzzing::header),
        ("index", ckptpilot::fuzzing::index),
        ("config", ckptpilot::fuzzing::config),
        ("audit_file", ckptpilot::fuzzing::audit_file),
        ("audit_dir", ckptpilot::fuzzing::audit_dir),
        ("dequant_dir", ckptpilot::fuzzing::dequant_dir),
    ];
    for (target, f) in targets {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions").join(target).join("open");
        replay_dir(&dir, target, f);
    }
}

/// The known bug a hand-made file found and the fuzzer missed (data_offsets near 2^64 overflowed
/// `data_start + begin` in the header's layout check) stays a regression input of both targets.
#[test]
fn offsets_near_2p64_stay_regressions() {
    for target in ["header", "audit_file"] {
        let p = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/regressions")
            .join(target)
            .join("offsets-near-2p64-check-layout-overflow");
        let data = std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
        assert!(
            data.windows(20).any(|w| w == b"18446744073709551610"),
            "{} no longer declares an offset near 2^64",
            p.display()
        );
    }
}
