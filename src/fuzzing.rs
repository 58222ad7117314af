//! Entry points shared by the cargo-fuzz targets in `fuzz/` and by `tests/fuzz_regressions.rs`,
//! which replays every input that ever crashed or hung on stable. Not a stable API.
//!
//! Each function takes arbitrary bytes and drives the library the way a user's file would: it never
//! panics on purpose, so any panic, hang or runaway allocation under one of them is a bug in the
//! library (or in this harness). Files go to a fresh directory under `/dev/shm` (or the system temp
//! directory where there is none) that is removed when the call returns, so millions of executions
//! do not touch the disk.

use crate::arch::rules::RuleSet;
use crate::checkpoint::{self, Checkpoint, ModelConfig};
use crate::plan::device::Device;
use crate::plan::{self, PlanInput, PlanOptions, Target};
use crate::quant::fp8::OutDtype;
use crate::quant::scheme::QuantScheme;
use crate::remap::RemapOptions;
use crate::render;
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// Separates the files of one directory input (`audit_dir`, `dequant_dir`): config.json, then
/// model.safetensors.index.json, then up to [`MAX_SHARDS`] shards. An empty config or index part
/// means the file is absent. `fuzz/make_seeds.py` writes seeds in this form.
pub const SEP: &[u8] = b"~~FILE~~";
/// Shards a directory input may hold; further parts join the last shard.
pub const MAX_SHARDS: usize = 4;

/// The config.json beside every `audit_file` input: the one-layer Qwen3 fp8 (128x128 blocks) that
/// `fuzz/make_seeds.py` builds its `qwen3-fp8-block` seed for, so that a valid seed is clean.
pub const AUDIT_FILE_CONFIG: &str = r#"{"architectures":["Qwen3ForCausalLM"],"attention_bias":false,"attention_dropout":0.0,"dtype":"bfloat16","head_dim":16,"hidden_act":"silu","hidden_size":32,"initializer_range":0.02,"intermediate_size":32,"layer_types":["full_attention"],"max_position_embeddings":64,"max_window_layers":28,"model_type":"qwen3","num_attention_heads":2,"num_hidden_layers":1,"num_key_value_heads":1,"rms_norm_eps":1e-06,"rope_scaling":null,"rope_theta":10000.0,"sliding_window":null,"tie_word_embeddings":false,"transformers_version":"4.57.1","use_cache":true,"use_sliding_window":false,"vocab_size":16,"quantization_config":{"quant_method":"fp8","fmt":"e4m3","activation_scheme":"dynamic","weight_block_size":[128,128]}}"#;

/// A safetensors file image through header validation, then every accessor of what passed.
pub fn header(data: &[u8]) {
    let mut findings = Vec::new();
    let h = checkpoint::header::validate(data, "fuzz.safetensors", &mut findings);
    let mut total = 0u64;
    for t in &h.tensors {
        total = total.wrapping_add(t.nbytes()).wrapping_add(t.numel());
        let _ = t.dtype.to_string();
    }
    std::hint::black_box((total, h.data_start, h.header_len, &h.metadata, h.parsed));
    touch_findings(&findings);
}

/// model.safetensors.index.json text through the index parser.
pub fn index(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let mut findings = Vec::new();
    let parsed = checkpoint::index::parse(&text, &mut findings);
    if let Some((idx, entries)) = &parsed {
        std::hint::black_box((idx, entries));
    }
    touch_findings(&findings);
    // The hand-written pass and serde agree wherever the first accepts.
    let mut serde_findings = Vec::new();
    let by_serde = checkpoint::index::parse_serde(&text, &mut serde_findings);
    assert_eq!(format!("{parsed:?}"), format!("{by_serde:?}"), "index scan and serde disagree");
    assert_eq!(format!("{findings:?}"), format!("{serde_findings:?}"), "index scan and serde disagree");
    // Streamed from the raw bytes in small pieces (the size from the input): where the stream
    // gives a result it is the whole text's; where it gives none, the text is not UTF-8 or the
    // whole-text scan hands it to serde too.
    let chunk = 1 + data.first().map_or(0, |&b| usize::from(b % 13));
    let mut streamed_findings = Vec::new();
    let len = data.len() as u64;
    match checkpoint::index::stream(data, len, len, chunk, &mut streamed_findings) {
        Some(s) => {
            assert!(std::str::from_utf8(data).is_ok(), "index stream accepted bytes that are not UTF-8");
            assert_eq!(format!("{:?}", Some(s)), format!("{parsed:?}"), "index stream and scan disagree");
            assert_eq!(format!("{streamed_findings:?}"), format!("{findings:?}"), "index stream and scan disagree");
        }
        None => assert!(
            std::str::from_utf8(data).is_err() || !checkpoint::index::scans(&text),
            "index stream refused what the scan reads"
        ),
    }
}

/// config.json bytes through the config reader and the quantization detector, then through
/// `plan` the way `ckptpilot plan DIR` reads it (a directory holding only config.json).
pub fn config(data: &[u8]) {
    let Ok(v) = serde_json::from_slice::<Value>(data) else { return };
    let cfg = ModelConfig::from_value(&v);
    std::hint::black_box((cfg.sizes_in_range().is_ok(), cfg.moe.as_ref().map(|m| m.is_moe_layer(1))));
    if let Some(q) = QuantScheme::detect(Some(&v), None) {
        std::hint::black_box((q.is_not_converted("model.layers.0.mlp.down_proj"), q.is_not_converted("lm_head")));
    }
    let dir = TempDir::new();
    if std::fs::write(dir.path().join("config.json"), data).is_err() {
        return;
    }
    // PlanInput::open runs from_value, detect and ModelShape::from_config (the costly part) once
    // more, as the CLI does; one plan per input keeps the target fast enough for millions of runs.
    if let Ok(input) = PlanInput::open(&dir.path().to_string_lossy(), RuleSet::builtin()) {
        run_plans(&input, data.len(), false);
    }
}

/// One `.safetensors` file (beside [`AUDIT_FILE_CONFIG`]) through `ckptpilot audit FILE`, plan and
/// remap.
pub fn audit_file(data: &[u8]) {
    let dir = TempDir::new();
    let p = dir.path();
    if std::fs::write(p.join("config.json"), AUDIT_FILE_CONFIG).is_err()
        || std::fs::write(p.join("model.safetensors"), data).is_err()
    {
        return;
    }
    audit_path(&p.join("model.safetensors").to_string_lossy(), data.len());
}

/// A checkpoint directory (see [`SEP`]) through `ckptpilot audit DIR`, plan and remap.
pub fn audit_dir(data: &[u8]) {
    let dir = TempDir::new();
    let model = dir.path().join("model");
    if write_dir(&model, data).is_err() {
        return;
    }
    audit_path(&model.to_string_lossy(), data.len());
}

/// A checkpoint directory (see [`SEP`]) through `ckptpilot dequant DIR --out OUT --verify` (or `quantize`).
pub fn dequant_dir(data: &[u8]) {
    let dir = TempDir::new();
    let model = dir.path().join("model");
    if write_dir(&model, data).is_err() {
        return;
    }
    let Ok((ck, findings)) = Checkpoint::open(&model.to_string_lossy()) else { return };
    use crate::convert::{quantize::Target, Task};
    // Every fourth input is quantized (small parts, so the part split is exercised too).
    let task = match data.len() % 4 {
        3 => Task::Quantize { to: Target::W8A8Dynamic, part_bytes: 1 << 12 },
        i => Task::Dequant([OutDtype::BF16, OutDtype::F16, OutDtype::F32][i]),
    };
    let opts = crate::convert::Options {
        out: dir.path().join("out"),
        task,
        part: None,
        finalize_only: false,
        verify: true,
        progress: false,
        ..Default::default()
    };
    match crate::convert::run(&ck, &findings, &opts) {
        Ok(s) => std::hint::black_box(serde_json::to_string(&s).map(|s| s.len()).unwrap_or(0)),
        Err(e) => std::hint::black_box(e.to_string().len()),
    };
}

fn audit_path(model: &str, salt: usize) {
    let Ok((ck, findings)) = Checkpoint::open(model) else { return };
    std::hint::black_box((ck.tensor_count(), ck.tensor_bytes(), ck.tensors().count()));
    let report = crate::audit(model, &ck, findings);
    std::hint::black_box(render::audit(&report).len());
    std::hint::black_box(serde_json::to_string(&report).map(|s| s.len()).unwrap_or(0));
    if let Ok(input) = PlanInput::from_checkpoint(&ck, model, RuleSet::builtin()) {
        run_plans(&input, salt, true);
    }
    if let Some(rules) = rules() {
        let tp = [1, 2, 4, 8][salt % 4];
        let opts = RemapOptions { tp, ep: salt % 5 == 1, target: Target::Vllm, rows: true };
        let report = crate::remap::remap(&ck, model, rules, &opts);
        std::hint::black_box(render::remap(&report, render::TableFormat::Human).len());
        std::hint::black_box(render::remap(&report, render::TableFormat::Json).len());
        std::hint::black_box(crate::remap::emit_rules(&report, rules, ck.config.as_ref()).len());
    }
}

/// Plans of one input, rendered as text and JSON: the CLI's defaults (with and without EP) and a
/// variant chosen by `salt` (EP, DP, PP, the Ascend target, a device, a context length, an fp8 KV
/// cache); without `both`, one of the two, chosen by `salt`.
fn run_plans(input: &PlanInput, salt: usize, both: bool) {
    let default = PlanOptions { ep: vec![false, true], ..PlanOptions::default() };
    let variant = PlanOptions {
        tp: vec![1, 2, 3, 8, 32],
        ep: vec![salt % 2 == 0],
        dp: 1 + (salt % 3) as u64,
        pp: 1 + (salt % 4) as u64,
        target: if salt % 2 == 1 { Target::VllmAscend } else { Target::Vllm },
        device: Device::preset(["h100", "h200", "a100", "h20", "ascend-a2", "ascend-a3"][salt % 6]),
        gpu_memory_utilization: 0.5,
        max_model_len: [None, Some(1), Some(4096), Some(u64::MAX)][salt % 4],
        max_num_seqs: [1, 16, 256][salt % 3],
        kv_cache_dtype: if salt % 2 == 0 { "fp8".into() } else { "auto".into() },
        activation_reserve_bytes: [0, 4 << 30][salt % 2],
        moe_backend: [
            crate::plan::MoeBackend::Auto,
            crate::plan::MoeBackend::Triton,
            crate::plan::MoeBackend::DeepGemm,
        ][salt % 3],
    };
    let list = if both {
        vec![default, variant]
    } else if salt % 3 == 0 {
        vec![default]
    } else {
        vec![variant]
    };
    for opts in list {
        let report = plan::plan(input, &opts);
        std::hint::black_box(render::plan(&report).len());
        std::hint::black_box(serde_json::to_string(&report).map(|s| s.len()).unwrap_or(0));
    }
}

/// The built-in rules, loaded once per process (as the CLI loads them once per run).
fn rules() -> Option<&'static RuleSet> {
    static RULES: OnceLock<Option<RuleSet>> = OnceLock::new();
    RULES.get_or_init(|| RuleSet::load(&[]).ok()).as_ref()
}

fn touch_findings(findings: &[crate::Finding]) {
    std::hint::black_box(render::findings(findings).len());
    std::hint::black_box(serde_json::to_string(findings).map(|s| s.len()).unwrap_or(0));
}

/// Splits a directory input into its files and writes them under `dir`.
fn write_dir(dir: &Path, data: &[u8]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut parts = split(data);
    let config = parts.next().unwrap_or_default();
    let index = parts.next().unwrap_or_default();
    let mut shards: Vec<Vec<u8>> = Vec::new();
    for p in parts {
        if shards.len() < MAX_SHARDS {
            shards.push(p.to_vec());
        } else if let Some(last) = shards.last_mut() {
            last.extend_from_slice(SEP);
            last.extend_from_slice(p);
        }
    }
    if !config.is_empty() {
        std::fs::write(dir.join("config.json"), config)?;
    }
    if !index.is_empty() {
        std::fs::write(dir.join("model.safetensors.index.json"), index)?;
    }
    let n = shards.len();
    for (i, s) in shards.iter().enumerate() {
        let name = if n == 1 && index.is_empty() {
            "model.safetensors".to_string()
        } else {
            format!("model-{:05}-of-{n:05}.safetensors", i + 1)
        };
        std::fs::write(dir.join(name), s)?;
    }
    Ok(())
}

fn split(data: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(data);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.windows(SEP.len()).position(|w| w == SEP) {
            Some(i) => {
                rest = Some(&r[i + SEP.len()..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

/// A directory unique to one call (process id and a counter), removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let shm = Path::new("/dev/shm");
        let base = if shm.is_dir() { shm.to_path_buf() } else { std::env::temp_dir() };
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let p = base.join(format!("ckptpilot-fuzz-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        let _ = std::fs::create_dir_all(&p);
        TempDir(p)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
