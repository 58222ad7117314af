//! `ckptpilot stub`: the vLLM adapter, its pure-Python mapping module, load-time fp8 dequantization,
//! registration, the serve-validation kit and the delivery skeletons — all generated from the remap
//! table, the plan and the audit's view of the config, so nothing the checkpoint says is typed by hand.

mod delivery;
mod python;

use crate::arch::rules::RuleSet;
use crate::checkpoint::Checkpoint;
use crate::plan::{PlanInput, PlanOptions, Target};
use crate::quant::scheme::QuantScheme;
use crate::remap::{RemapOptions, RemapReport};
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Files to drop into a vLLM tree, and the registry line to add.
    InTree,
    /// A pip-installable package registering the model through `vllm.general_plugins`.
    Plugin,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lang {
    Zh,
    En,
}

#[derive(Debug, Clone)]
pub struct StubOptions {
    pub out: PathBuf,
    /// The model's display / class name (default: the checkpoint directory's name).
    pub name: Option<String>,
    pub layout: Layout,
    /// TP for the serve scripts (default: the smallest the plan finds feasible).
    pub tp: Option<u64>,
    pub lang: Lang,
    pub target: Target,
    /// Write into a non-empty `out` (edited files are kept, see [`generate`]).
    pub force: bool,
    /// Write the kit even where `ckptpilot plan` predicts that vLLM fails at its configuration (the
    /// kit then says so in every script and in the report).
    pub allow_infeasible: bool,
    /// For an architecture no family names: the family to adapt (`none`: the module skeleton;
    /// absent: the closest, when it explains at least [`ADAPT_MIN_SCORE`] of the checkpoint).
    pub like: Option<String>,
}

/// Below this match score the closest family explains too little to start an adapter from: the
/// stub writes the module skeleton instead (and says so).
pub const ADAPT_MIN_SCORE: f64 = 0.5;

/// What the distinct architecture name adds to the architecture's own (`DeepseekV3ForCausalLM` is
/// also registered as `DeepseekV3ForCausalLM` + this): serving under it leaves vLLM's own class for
/// every other model. The one place the word is written.
pub const ALIAS_SUFFIX: &str = "Ckptpilot";

/// `--name`: a model name, not a path — ASCII letters, digits, `-`, `_` and `.`, starting with a
/// letter or digit, no `..`, at most 100 characters. It becomes file names (the delivery YAML and
/// tutorial), the Python package and the YAML's `model_name`, so nothing else may pass.
pub fn check_name(name: &str) -> Result<(), String> {
    let shown = one_line(name);
    if name.is_empty() {
        return Err("--name is empty".into());
    }
    if let Some(c) = name.chars().find(|c| c.is_control()) {
        return Err(format!("--name \"{shown}\" holds a control character ({})", one_line(&c.to_string())));
    }
    if name.contains(['/', '\\']) {
        return Err(format!("--name \"{shown}\" is a path; it takes a name (the kit goes under --out)"));
    }
    if name.contains("..") {
        return Err(format!("--name \"{shown}\" contains `..`"));
    }
    if name.starts_with('.') {
        return Err(format!("--name \"{shown}\" starts with a dot (a hidden file name)"));
    }
    if name.chars().count() > 100 {
        return Err(format!("--name is {} characters long; at most 100", name.chars().count()));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(format!("--name \"{shown}\" must start with a letter or a digit"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        return Err(format!("--name \"{shown}\" contains {:?}; use ASCII letters, digits, `-`, `_` and `.`", c));
    }
    Ok(())
}

/// The default name, from a directory name: what [`check_name`] accepts (other characters become
/// `-`), or `None` when nothing is left.
fn name_from(dir: &str) -> Option<String> {
    let mut out = String::new();
    for c in dir.chars() {
        let c = if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') { c } else { '-' };
        if (c == '.' && out.ends_with('.')) || (c == '-' && out.ends_with('-')) {
            continue;
        }
        out.push(c);
    }
    let t: String = out.trim_start_matches(|c: char| !c.is_ascii_alphanumeric()).chars().take(100).collect();
    let t = t.trim_end_matches(['.', '-']).to_string();
    check_name(&t).is_ok().then_some(t)
}

/// `s` on one line for a terminal, a shell comment or a table cell: control characters (ESC, BEL,
/// CR, newlines, DEL, C1) and bidirectional overrides become visible escapes (`\u{1b}`, `\n`), as
/// everywhere in ckptpilot's human output ([`crate::ui::field`]).
pub fn one_line(s: &str) -> String {
    crate::ui::field(s).into_owned()
}

/// A message of several lines (plan's failures quote each error vLLM raises) on one line: its lines
/// escaped with [`one_line`] and joined with ` / `.
pub fn flat(s: &str) -> String {
    s.split('\n').map(|l| l.trim_matches(' ')).filter(|l| !l.is_empty()).map(one_line).collect::<Vec<_>>().join(" / ")
}

/// As [`one_line`], keeping the line breaks (and tabs) ckptpilot lays a message out with ([`crate::ui::text`]).
pub fn printable(s: &str) -> String {
    crate::ui::text(s).into_owned()
}

/// `s` as one shell word: as it is when it needs no quoting, else single-quoted.
pub fn sh_quote(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "_./:=@%+,-".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StubError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    #[error("{0}")]
    Unsupported(String),
    /// config.json is missing, not a regular file, not JSON or not an object: which one.
    #[error("{model}: {reason}; a stub needs the model's config")]
    Config { model: String, reason: String },
    /// `--name` is not a name (a path, `..`, control characters, …).
    #[error("{0}")]
    BadName(String),
    /// A path the stub would write is not under `--out` (never for the names it makes; checked anyway).
    #[error("{} is not under {}; nothing was written there", rel, out.display())]
    OutsideOut { out: PathBuf, rel: String },
    #[error("another ckptpilot is writing {}: {holder}; nothing was written", out.display())]
    Locked { out: PathBuf, holder: String },
    #[error("{} is not empty: it holds {} ({count} entries); nothing was written", out.display(), sample.join(", "))]
    OutNotEmpty { out: PathBuf, sample: Vec<String>, count: usize },
    /// `ckptpilot plan` predicts that vLLM fails at the configuration the kit would serve.
    #[error("{message}; nothing was written")]
    Infeasible { message: String, help: String },
    #[error("{} cannot serve {model} as stored: {reason}; nothing was written", target.as_str())]
    NotServable { model: String, target: Target, reason: String, help: String },
}

/// What every generator reads.
pub struct Context<'a> {
    pub model_path: &'a str,
    pub ck: &'a Checkpoint,
    pub remap: &'a RemapReport,
    pub rules: &'a RuleSet,
    pub quant: Option<QuantScheme>,
    /// Display name, e.g. `DeepSeek-V3` (file names of the delivery skeletons).
    pub name: String,
    /// Python identifier stem, e.g. `deepseek_v3` (the package is `<snake>_vllm`).
    pub snake: String,
    /// The adapter's module stem: `snake`, or `<snake>_ckpt` in the in-tree layout where `snake` is
    /// already a module of `vllm/model_executor/models/` (copying it there would replace vLLM's own).
    pub module: String,
    /// The mapping module's stem.
    pub mapping_module: String,
    /// The adapter class: the architecture's own name (the registry maps the architecture to it).
    pub class: String,
    pub architecture: String,
    /// The architecture is named only in `text_config.architectures`: vLLM reads the top-level
    /// `architectures`, so the serve scripts pass it with `--hf-overrides`.
    pub architecture_in_text_config_only: bool,
    pub tp: u64,
    pub ep: bool,
    /// Why this TP / EP (from the plan), for the scripts and the report, in English and Chinese.
    pub tp_reason: String,
    pub tp_reason_zh: String,
    /// The plan the TP came from: the device, and the `max_model_len` vLLM accepts for this model.
    pub plan: crate::plan::PlanReport,
    pub opts: &'a StubOptions,
    /// fp8 weights that the target cannot serve natively: dequantized at load.
    pub dequant_at_load: bool,
    pub mtp_declared: bool,
    pub mtp_present: bool,
    /// What `ckptpilot plan` predicts vLLM raises at (tp, ep): empty when feasible; otherwise the
    /// kit was written with `--allow-infeasible` and says so everywhere.
    pub failures: Vec<crate::plan::Failure>,
    /// The smallest configuration plan finds feasible, (tp, ep), if any.
    pub feasible: Option<(u64, bool)>,
    /// vLLM has its own class for the architecture (the adapter subclasses it), so registering the
    /// adapter under the architecture's name replaces vLLM's class for every such model.
    pub replaces_vllm_class: bool,
    /// An architecture no family names, adapted from the closest family (`ckptpilot match`): that
    /// family's name and score.
    pub adapted_from: Option<(String, f64)>,
    /// The config's model type transformers does not know, and the known model type whose config
    /// class the plugin registers it as (vLLM reads the config before any model code runs).
    pub register_config: Option<(String, String)>,
    /// The distinct architecture name the adapter is also registered under (`<Arch>` + [`ALIAS_SUFFIX`]).
    pub alias: String,
}

impl Context<'_> {
    pub fn is_moe(&self) -> bool {
        self.ck.config.as_ref().is_some_and(|c| c.moe.is_some())
    }
    pub fn is_vl(&self) -> bool {
        self.ck.config.as_ref().is_some_and(|c| c.has_vision)
    }
    pub fn package(&self) -> String {
        format!("{}_vllm", self.snake)
    }
    /// The plugin's switch: `0` registers the adapter only under [`Context::alias`].
    pub fn replace_env(&self) -> String {
        format!("{}_REPLACE_ARCHITECTURE", self.package().to_ascii_uppercase())
    }
    /// `TP 2 with EP` / `TP 1`.
    pub fn layout_en(&self) -> String {
        format!("TP {}{}", self.tp, if self.ep { " with EP" } else { "" })
    }
    pub fn layout_zh(&self) -> String {
        format!("TP {}{}", self.tp, if self.ep { "（开启 EP）" } else { "" })
    }
}

fn snake(s: &str) -> String {
    let mut out = String::new();
    let mut prev_lower = false;
    for c in s.chars() {
        if c.is_ascii_uppercase() {
            if prev_lower {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
            prev_lower = false;
        } else if c.is_ascii_alphanumeric() {
            out.push(c);
            prev_lower = c.is_ascii_lowercase() || c.is_ascii_digit();
        } else {
            if !out.ends_with('_') && !out.is_empty() {
                out.push('_');
            }
            prev_lower = false;
        }
    }
    let t = out.trim_matches('_').to_string();
    if t.is_empty() || t.starts_with(|c: char| c.is_ascii_digit()) {
        format!("m_{t}")
    } else {
        t
    }
}

fn camel(s: &str) -> String {
    snake(s).split('_').filter(|p| !p.is_empty()).map(|p| p[..1].to_ascii_uppercase() + &p[1..]).collect()
}

/// The record of what `stub` wrote into its output directory: relative path → blake3 of the bytes
/// written, so a later `--force` run can tell the files a person edited from its own.
const STATE_FILE: &str = ".ckptpilot-stub.json";

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct StubState {
    schema: String,
    files: std::collections::BTreeMap<String, String>,
}

/// What a generation wrote.
#[derive(Debug, Default)]
pub struct Written {
    /// Every file written (or left as it already was, byte-identical).
    pub files: Vec<PathBuf>,
    /// Files a person changed since ckptpilot wrote them: (kept file, where the new version went).
    pub kept: Vec<(PathBuf, PathBuf)>,
    /// What to do next (install, stage A, stage B), in the kit's language, for the terminal.
    pub next_steps: String,
    /// Said on stderr: the configuration is predicted to fail (`--allow-infeasible`).
    pub warnings: Vec<String>,
}

fn blake3_hex(b: &[u8]) -> String {
    blake3::hash(b).to_hex().to_string()
}

/// `out/rel`, when `rel` stays under `out`: relative, every component a plain name (no `..`, `.`,
/// root or prefix) free of control characters. Every path the stub writes goes through here.
fn under(out: &Path, rel: &str) -> Result<PathBuf, StubError> {
    use std::path::Component;
    let outside = || StubError::OutsideOut { out: out.to_path_buf(), rel: one_line(rel) };
    let p = Path::new(rel);
    let plain = !rel.is_empty()
        && crate::ui::field(rel) == rel
        && p.components().all(|c| matches!(c, Component::Normal(n) if !n.is_empty()))
        && !rel.split('/').any(|seg| seg.is_empty() || seg == "." || seg == "..");
    if !plain {
        return Err(outside());
    }
    let path = out.join(p);
    if !path.starts_with(out) {
        return Err(outside());
    }
    Ok(path)
}

/// Write one generated file. A file that exists and is not exactly what ckptpilot last wrote there
/// (a person edited it, or ckptpilot never wrote it) is kept; the new text goes to `FILE.new`.
fn write(dir: &Path, rel: &str, text: &str, state: &mut StubState, done: &mut Written) -> Result<(), StubError> {
    let path = under(dir, rel)?;
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| StubError::Io { path: p, source }
    };
    if let Some(parent) = Path::new(rel).parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::fsutil::create_dirs_below(dir, parent).map_err(io(&dir.join(parent)))?;
    }
    let new_hash = blake3_hex(text.as_bytes());
    let mut dest = path.clone();
    match std::fs::symlink_metadata(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(StubError::Io { path, source: e }),
        Ok(md) => {
            let current = if md.file_type().is_file() {
                crate::fsutil::read_bounded(&path, crate::fsutil::JSON_CAP).ok().map(|b| blake3_hex(&b))
            } else {
                None // a symlink, a directory, a FIFO: never ours, never written through
            };
            if current.as_deref() == Some(new_hash.as_str()) {
                state.files.insert(rel.to_string(), new_hash);
                done.files.push(path);
                return Ok(());
            }
            if current.is_none() || current != state.files.get(rel).cloned() {
                dest = PathBuf::from(format!("{}.new", path.display()));
                done.kept.push((path.clone(), dest.clone()));
            }
        }
    }
    let mut t = crate::fsutil::TempFile::beside(&dest).map_err(io(&dest))?;
    std::io::Write::write_all(t.file(), text.as_bytes()).map_err(io(t.path()))?;
    #[cfg(unix)]
    if rel.ends_with(".sh") || rel.ends_with("smoke.py") {
        use std::os::unix::fs::PermissionsExt;
        let _ = t.file().set_permissions(std::fs::Permissions::from_mode(0o755));
    }
    t.commit(&dest).map_err(io(&dest))?;
    if dest == path {
        state.files.insert(rel.to_string(), new_hash);
    }
    done.files.push(dest);
    Ok(())
}

/// `--out` must be new or empty unless `--force`; returns the record of an earlier generation.
/// `--out` must be new or empty unless `--force`, and no other ckptpilot may be writing there (the
/// directory's one lock, `fsutil::DIR_LOCK`, held exclusively while the kit is written); returns
/// the record of an earlier generation and the lock.
fn prepare_out(out: &Path, force: bool) -> Result<(StubState, crate::fsutil::Lock), StubError> {
    use crate::fsutil::{Lock, LockError, DIR_LOCK};
    let io = |source| StubError::Io { path: out.to_path_buf(), source };
    let lock_path = out.join(DIR_LOCK);
    let locked = |holder: String| StubError::Locked { out: out.to_path_buf(), holder };
    // Another ckptpilot writing here is said first, with or without --force (a probe: nothing is created).
    if let Some(h) = Lock::holder(&lock_path) {
        return Err(locked(h));
    }
    let check = |out: &Path| -> Result<(), StubError> {
        let mut names: Vec<String> = std::fs::read_dir(out)
            .map_err(io)?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            // The lock a finished run leaves, and temporary files: ckptpilot's, not content.
            .filter(|n| n != DIR_LOCK && !n.contains(crate::fsutil::TMP_MARK))
            .collect();
        if !names.is_empty() && !force {
            names.sort();
            let count = names.len();
            names.truncate(5);
            return Err(StubError::OutNotEmpty { out: out.to_path_buf(), sample: names, count });
        }
        Ok(())
    };
    match std::fs::metadata(out) {
        Ok(md) if !md.is_dir() => {
            return Err(StubError::Io {
                path: out.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "exists and is not a directory"),
            })
        }
        Ok(_) => check(out)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(out).map_err(io)?,
        Err(e) => return Err(io(e)),
    }
    let lock = Lock::try_acquire_as(&lock_path, true, "ckptpilot stub").map_err(|e| match e {
        LockError::Held { holder, .. } => locked(holder.unwrap_or_else(|| "a ckptpilot process".into())),
        LockError::Io { path, source } => StubError::Io { path, source },
    })?;
    // Now that nobody else writes here, look again: that look is the one that counts.
    check(out)?;
    let state = crate::fsutil::read_bounded(&out.join(STATE_FILE), crate::fsutil::JSON_CAP)
        .ok()
        .and_then(|b| serde_json::from_slice::<StubState>(&b).ok())
        .unwrap_or_default();
    Ok((state, lock))
}

/// The configuration the serve scripts run, and `ckptpilot plan`'s verdict on it.
struct Choice {
    tp: u64,
    ep: bool,
    reason: String,
    reason_zh: String,
    plan: crate::plan::PlanReport,
    /// Plan's failures at (tp, ep): empty when feasible.
    failures: Vec<crate::plan::Failure>,
    /// The smallest feasible configuration, if any.
    feasible: Option<(u64, bool)>,
}

/// The TP (and EP) for the serve scripts, from `ckptpilot plan` of the model as the scripts serve it:
/// with `dequant_at_load` the fp8 weights become bf16 at load and the scripts build the model
/// unquantized, so the plan is of the unquantized model (its `target` rule then holds and memory is
/// counted in bf16). Every TP up to 32 is planned (and `given`), with and without EP for an MoE
/// model. With `given` the scripts run that TP (EP on for an MoE model beyond TP 1 unless only the
/// other setting is feasible); without it the smallest feasible configuration, else (for
/// `--allow-infeasible`) the smallest vLLM builds, else TP 1. Plan's verdict on that configuration
/// (the whole plan: layout, scale loading, target, memory) comes back with it.
fn choose(
    ck: &Checkpoint,
    model: &str,
    rules: &RuleSet,
    target: Target,
    given: Option<u64>,
    dequant_at_load: bool,
) -> Result<Choice, StubError> {
    // As `ckptpilot plan` reads it: a directory with only a config.json is planned from the config.
    let mut input = if ck.tensor_count() == 0 {
        PlanInput::open(model, rules).or_else(|_| PlanInput::from_checkpoint(ck, model, rules))?
    } else {
        PlanInput::from_checkpoint(ck, model, rules)?
    };
    if dequant_at_load {
        input.without_quantization(ck.config_json.as_ref(), rules);
    }
    // The kit's plugin registers the architecture, so vLLM's refusal of the name does not apply to
    // it; a config vLLM cannot read (an unknown model type) still stops vLLM before the plugin matters.
    let config_readable = input
        .config
        .model_type
        .as_deref()
        .is_some_and(|mt| crate::arch::registry::registry().knows_model_type(mt) || input.config.remote_config);
    if config_readable {
        input.refusal = None;
    }
    let moe = input.config.moe.is_some();
    let mut tps = vec![1, 2, 4, 8, 16, 32];
    if let Some(t) = given.map(|t| t.max(1)).filter(|t| !tps.contains(t)) {
        tps.push(t);
        tps.sort_unstable();
    }
    let opts =
        PlanOptions { tp: tps, ep: if moe { vec![false, true] } else { vec![false] }, target, ..Default::default() };
    let report = crate::plan::plan(&input, &opts);
    let served =
        if dequant_at_load { ", of the model as served (fp8 dequantized to bf16 at load, unquantized)" } else { "" };
    let served_zh = if dequant_at_load {
        "（按实际服务方式规划：fp8 权重在加载时反量化为 bf16，模型以非量化方式构建）"
    } else {
        ""
    };
    let dev = report.device.name.clone();
    let find = |t: u64, e: bool| report.configs.iter().find(|c| c.tp == t && c.ep == e);
    let feasible = report.configs.iter().filter(|c| c.feasible).min_by_key(|c| (c.tp, c.ep));
    let chosen = match given {
        Some(t) => {
            let t = t.max(1);
            let preferred = moe && t > 1;
            let first = find(t, preferred);
            let other = if moe { find(t, !preferred) } else { None };
            first.filter(|c| c.feasible).or(other.filter(|c| c.feasible)).or(first)
        }
        None => feasible
            .or_else(|| {
                report
                    .configs
                    .iter()
                    .filter(|c| c.failures.iter().all(|f| !f.rule.is_layout()))
                    .min_by_key(|c| (c.tp, c.ep))
            })
            .or_else(|| report.configs.iter().min_by_key(|c| (c.tp, c.ep))),
    };
    let Some(c) = chosen else {
        return Err(StubError::Unsupported(format!("{}: plan returned no configuration", one_line(model))));
    };
    let (tp, ep) = (c.tp, c.ep);
    let with_ep = if ep { " with EP" } else { "" };
    let with_ep_zh = if ep { "（开启 EP）" } else { "" };
    let t = target.as_str();
    let rules_failed = c.failures.iter().map(|f| f.rule.to_string()).collect::<Vec<_>>().join(", ");
    let (reason, reason_zh) = match (given, c.feasible) {
        (Some(_), true) => (
            format!("--tp {tp} given; `ckptpilot plan --target {t}`{served} finds TP {tp}{with_ep} feasible on {dev}"),
            format!("指定了 --tp {tp}；`ckptpilot plan --target {t}`{served_zh}判定 TP {tp}{with_ep_zh} 在 {dev} 上可行"),
        ),
        (None, true) => (
            format!(
                "`ckptpilot plan --target {t}`{served}: TP {tp}{with_ep} is the smallest feasible configuration on {dev} ({} of weights per rank, {} sequences of {} tokens)",
                crate::ui::bytes(c.per_rank_weight_bytes),
                c.max_seqs_at_max_model_len,
                report.max_model_len
            ),
            format!(
                "`ckptpilot plan --target {t}`{served_zh}：TP {tp}{with_ep_zh} 是 {dev} 上最小的可行配置（每卡权重 {}，可容纳 {} 条 {} token 的序列）",
                crate::ui::bytes(c.per_rank_weight_bytes),
                c.max_seqs_at_max_model_len,
                report.max_model_len
            ),
        ),
        (_, false) => (
            format!(
                "{}; `ckptpilot plan --target {t}`{served} predicts that vLLM fails at TP {tp}{with_ep} on {dev} ({rules_failed}); written with --allow-infeasible",
                if given.is_some() { format!("--tp {tp} given") } else { "no feasible configuration".into() }
            ),
            format!(
                "{}；`ckptpilot plan --target {t}`{served_zh}预测 vLLM 在 {dev} 上以 TP {tp}{with_ep_zh} 运行会失败（{rules_failed}）；因指定了 --allow-infeasible 仍生成",
                if given.is_some() { format!("指定了 --tp {tp}") } else { "没有可行配置".into() }
            ),
        ),
    };
    Ok(Choice {
        tp,
        ep,
        reason,
        reason_zh,
        failures: c.failures.clone(),
        feasible: feasible.map(|c| (c.tp, c.ep)),
        plan: report,
    })
}

/// The refusal for a configuration plan finds infeasible: what vLLM would raise, a TP plan finds
/// feasible (or that none is), and the fixes. `None` when `--allow-infeasible` lets it through.
fn refusal(
    model: &str,
    ctx_quant: Option<&QuantScheme>,
    opts: &StubOptions,
    ch: &Choice,
    dequant_at_load: bool,
) -> Option<StubError> {
    use crate::plan::Rule;
    if ch.failures.is_empty() {
        return None;
    }
    // A config that is no model (missing keys, sizes beyond any real model): nothing to write a kit for.
    let no_model = ch.failures.iter().any(|f| f.rule == Rule::Config);
    if opts.allow_infeasible && !no_model {
        return None;
    }
    let model_shown = one_line(model);
    let target = opts.target;
    let mut fixes: Vec<String> = Vec::new();
    for f in &ch.failures {
        if let Some(fix) = f.fix.as_ref().map(|x| flat(x)) {
            if !fixes.contains(&fix) {
                fixes.push(fix);
            }
        }
    }
    let allow = if no_model { "" } else { "; --allow-infeasible writes the kit anyway, marked as predicted to fail" };
    if let Some(f) = ch.failures.iter().find(|f| f.rule == Rule::Target).filter(|_| !no_model) {
        // The target has no method for the checkpoint's weight format (NVFP4 or MXFP4 on
        // vLLM-Ascend, ModelSlim on vLLM): it raises while building the model at every TP, and
        // load-time dequantization covers fp8 only.
        let modelslim = ctx_quant.is_some_and(|q| q.modelslim.is_some());
        let modelslim_on_gpu = target == Target::Vllm && modelslim;
        let help = if target == Target::VllmAscend && modelslim {
            // A scheme vLLM-Ascend has no method for, or one whose kernels need an Ascend 950 (the
            // kit's plan assumes A2/A3): dequant reads no ModelSlim format.
            format!(
                "{}; on an Ascend 950, --allow-infeasible writes the kit (its plan assumes an A2/A3)",
                fixes
                    .first()
                    .map(String::as_str)
                    .unwrap_or("quantize the bf16 checkpoint to a scheme vLLM-Ascend serves")
            )
        } else if modelslim_on_gpu {
            format!(
                "a ModelSlim checkpoint is served by vLLM-Ascend (`--quantization ascend`): `ckptpilot stub {} --out DIR --target vllm-ascend`{}{allow}",
                sh_quote(&model_shown),
                fixes.first().map(|f| format!("; plan: {f}")).unwrap_or_default()
            )
        } else {
            format!(
                "convert it first, then stub the copy: `ckptpilot dequant {m} --out DIR` and `ckptpilot stub DIR --target {}`{allow}",
                target.as_str(),
                m = sh_quote(&model_shown)
            )
        };
        return Some(StubError::NotServable { model: model_shown, target, reason: flat(&f.message), help });
    }
    let layout = ch.failures.iter().any(|f| f.rule.is_layout());
    let at = format!(
        "TP {}{} on --target {} ({}{})",
        ch.tp,
        if ch.ep { " with EP" } else { "" },
        target.as_str(),
        ch.plan.device.name,
        if dequant_at_load { "; the model as served: fp8 dequantized to bf16 at load" } else { "" }
    );
    let head = if layout {
        format!(
            "vLLM {} refuses to build {model_shown} at {at}, as `ckptpilot plan` predicts",
            crate::target::VLLM_REFERENCE
        )
    } else {
        format!(
            "`ckptpilot plan` predicts that vLLM {} fails with {model_shown} at {at}",
            crate::target::VLLM_REFERENCE
        )
    };
    let why: Vec<String> = ch
        .failures
        .iter()
        .map(|f| format!("{}: {}", f.rule, f.message.split('\n').map(one_line).collect::<Vec<_>>().join("\n      ")))
        .collect();
    let alt = match ch.feasible {
        Some((t, e)) => format!("plan finds TP {t}{} feasible", if e { " with EP" } else { "" }),
        None => format!("plan finds no feasible configuration at any TP up to 32 on {}", ch.plan.device.name),
    };
    let mut help = fixes;
    if let Some((t, _)) = ch.feasible {
        help.push(format!("`--tp {t}` is feasible"));
    }
    help.push(format!(
        "`ckptpilot plan {} --target {}` shows every rule{allow}",
        sh_quote(&model_shown),
        target.as_str()
    ));
    let help = help.join("; ");
    Some(StubError::Infeasible { message: format!("{head}:\n  {}\n{alt}", why.join("\n  ")), help })
}

/// Why a checkpoint has no config: config.json missing, not a regular file, too large, not JSON
/// (line and column), or not a JSON object — what is true, read again for the message.
fn config_problem(ck: &Checkpoint) -> String {
    use crate::fsutil::ReadError;
    let path = ck.source.root.join("config.json");
    match crate::fsutil::read_bounded_string(&path, crate::fsutil::JSON_CAP) {
        Err(e) if e.is_not_found() => {
            format!("there is no config.json in {}", one_line(&ck.source.root.display().to_string()))
        }
        Err(ReadError::NotRegular { kind, .. }) => format!("config.json is {kind}, not a regular file"),
        Err(ReadError::TooLarge { len, cap, .. }) => {
            format!("config.json is {len} bytes, above the {cap}-byte cap: not a model config")
        }
        Err(e) => format!("config.json cannot be read: {}", one_line(&e.to_string())),
        Ok(text) => match serde_json::from_str::<serde_json::Value>(&text) {
            Err(e) => format!(
                "config.json is not valid JSON at line {}:{}: {}",
                e.line(),
                e.column(),
                one_line(&e.to_string())
            ),
            Ok(v) if !v.is_object() => "config.json is valid JSON but not an object".into(),
            Ok(_) => "config.json could not be read as the model's config".into(),
        },
    }
}

/// Generate everything into `opts.out`: new or empty, or with `force` a directory whose files a
/// person changed are kept (the new versions beside them as `FILE.new`). Nothing is written when
/// `ckptpilot plan` predicts that vLLM fails at the configuration the kit would serve, unless
/// `opts.allow_infeasible`.
pub fn generate(model: &str, ck: &Checkpoint, rules: &RuleSet, opts: &StubOptions) -> Result<Written, StubError> {
    if let Some(n) = &opts.name {
        check_name(n).map_err(StubError::BadName)?;
    }
    let Some(cfg) = ck.config.as_ref() else {
        return Err(StubError::Config { model: one_line(model), reason: config_problem(ck) });
    };
    let architecture = cfg.architecture.clone().unwrap_or_else(|| "UnknownForCausalLM".into());
    if !architecture.starts_with(|c: char| c.is_ascii_alphabetic())
        || !architecture.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(StubError::Unsupported(format!(
            "{}: architecture {architecture:?} is not a Python class name; the adapter class takes the architecture's name",
            one_line(model)
        )));
    }
    // An architecture no family names: the closest family, adapted (its renames applied), stands in.
    let adapted = match opts.like.as_deref() {
        Some("none") => None,
        Some(family) => match crate::matching::adapted_family(ck, rules, Some(family)) {
            Some(a) => Some(a),
            None if rules.families.iter().any(|f| f.family == family) => None, // the architecture has its own
            None => {
                return Err(StubError::Unsupported(format!(
                    "--like {}: no such family (`ckptpilot match MODEL` lists them)",
                    one_line(family)
                )))
            }
        },
        None => crate::matching::adapted_family(ck, rules, None).filter(|(_, b)| b.score >= ADAPT_MIN_SCORE),
    };
    let adapted_rules;
    let rules: &RuleSet = match &adapted {
        Some((family, _)) => {
            adapted_rules = rules.with(family.clone());
            &adapted_rules
        }
        None => rules,
    };
    let register_config = adapted.as_ref().and_then(|(_, best)| {
        let mt = cfg.model_type.clone()?;
        let reg = crate::arch::registry::registry();
        if reg.knows_model_type(&mt) || cfg.remote_config {
            return None;
        }
        let base = rules.families.iter().find(|f| f.family == best.family)?;
        let base_type = base.model_types.iter().find(|t| reg.knows_model_type(t))?.clone();
        Some((mt, base_type))
    });
    let quant = ck.quant_scheme().cloned();
    let fp8 = quant.as_ref().is_some_and(|q| q.fp8_scale.is_some());
    let dequant_at_load = fp8 && opts.target == Target::VllmAscend;
    let choice = choose(ck, model, rules, opts.target, opts.tp, dequant_at_load)?;
    if let Some(e) = refusal(model, quant.as_ref(), opts, &choice, dequant_at_load) {
        return Err(e);
    }
    let Choice { tp, ep, reason: tp_reason, reason_zh: tp_reason_zh, plan, failures, feasible } = choice;
    let remap = crate::remap::remap(ck, model, rules, &RemapOptions { tp, ep, target: opts.target, rows: true });
    // The checkpoint's directory (a single file's directory): the default name (and so the scripts'
    // default `MODEL`, `/models/<name>`).
    let dir = if ck.source.single_file.is_some() { ck.source.root.as_path() } else { Path::new(model) };
    let dir_name = dir.file_name().and_then(|s| name_from(&s.to_string_lossy()));
    let name = opts.name.clone().or(dir_name).unwrap_or_else(|| architecture.clone());
    let snake = snake(&name);
    let taken = if opts.layout == Layout::InTree { python::vllm_module_names(rules) } else { Default::default() };
    let free = |stem: String| if taken.contains(&stem) { format!("{stem}_ckpt") } else { stem };
    let module = free(snake.clone());
    let mapping_module = free(format!("{module}_mapping"));
    let mtp_present = remap.rows.iter().any(|r| r.reason.as_deref().is_some_and(|x| x.starts_with("MTP layer")));
    // (an adapted family names a class to subclass, but vLLM registers nothing under this name)
    let replaces_vllm_class = python::vllm_base(&remap, rules, &architecture).is_some()
        && crate::arch::registry::registry().registered.contains_key(&architecture);
    let ctx = Context {
        model_path: model,
        ck,
        remap: &remap,
        rules,
        snake,
        module,
        mapping_module,
        class: architecture.clone(),
        name,
        architecture_in_text_config_only: cfg.architecture_source == Some("text_config.architectures"),
        alias: format!("{architecture}{ALIAS_SUFFIX}"),
        architecture,
        tp,
        ep,
        tp_reason,
        tp_reason_zh,
        plan,
        opts,
        dequant_at_load,
        mtp_declared: cfg.mtp_layers > 0,
        mtp_present,
        quant,
        failures,
        feasible,
        replaces_vllm_class,
        adapted_from: adapted.as_ref().map(|(_, b)| (b.family.clone(), b.score)),
        register_config,
    };
    let files: Vec<(String, String)> = python::files(&ctx).into_iter().chain(delivery::files(&ctx)).collect();
    // Every destination is checked before the first byte is written.
    for (rel, _) in &files {
        under(&opts.out, rel)?;
    }
    let state_path = under(&opts.out, STATE_FILE)?;
    let (mut state, _lock) = prepare_out(&opts.out, opts.force)?;
    state.schema = "ckptpilot.stub-state/1".into();
    let mut written = Written::default();
    for (rel, text) in &files {
        write(&opts.out, rel, text, &mut state, &mut written)?;
    }
    let text = serde_json::to_string_pretty(&state).expect("state serializes") + "\n";
    crate::fsutil::write_atomic(&state_path, text.as_bytes())
        .map_err(|source| StubError::Io { path: state_path, source })?;
    written.next_steps = delivery::next_steps(&ctx);
    if let Some(w) = delivery::predicted_failure(&ctx, false, false) {
        written.warnings.push(w);
    }
    Ok(written)
}

impl crate::ui::Help for StubError {
    fn help(&self) -> String {
        match self {
            StubError::Locked { .. } => {
                "wait for it to finish, or write the kit to another --out; the system releases the lock of a process that has died".into()
            }
            StubError::Io { .. } => "check that --out is writable and on a file system with free space".into(),
            StubError::Plan(e) => crate::ui::Help::help(e),
            StubError::Unsupported(_) => "see `ckptpilot remap MODEL` for what the rules cover".into(),
            StubError::Config { .. } => {
                "put the model's config.json (a regular file holding a JSON object) beside the weights".into()
            }
            StubError::BadName(_) => {
                "--name takes a model name such as `DeepSeek-V3` (letters, digits, `-`, `_`, `.`); the kit goes under --out".into()
            }
            StubError::OutsideOut { .. } => "choose another --name".into(),
            StubError::Infeasible { help, .. } | StubError::NotServable { help, .. } => help.clone(),
            StubError::OutNotEmpty { .. } => {
                "choose a new --out, or pass --force (files you changed are kept; new versions go to FILE.new)".into()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(snake("DeepSeek-V3"), "deep_seek_v3");
        assert_eq!(snake("qwen3-moe-fp8"), "qwen3_moe_fp8");
        assert_eq!(snake("3b"), "m_3b");
        assert_eq!(camel("qwen3-moe-fp8"), "Qwen3MoeFp8");
    }

    #[test]
    fn a_name_is_not_a_path() {
        for ok in ["DeepSeek-V3", "qwen2.5-vl", "my_model", "3b", "a.b-c_d"] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "..",
            "../x",
            "a/b",
            "/abs",
            "a\\b",
            "a..b",
            ".hidden",
            "-x",
            "_x",
            "a b",
            "a\0b",
            "a\u{1b}b",
            "a\nb",
            "caf\u{e9}",
            "q\"uote",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        assert!(check_name(&"a".repeat(101)).is_err());
        let e = check_name("x\u{1b}[31m/y").unwrap_err();
        assert!(!e.contains('\u{1b}') && e.contains("\\u{1b}"), "{e}");
    }

    #[test]
    fn default_names_from_any_directory_name() {
        assert_eq!(name_from("qwen3-moe-fp8").as_deref(), Some("qwen3-moe-fp8"));
        assert_eq!(name_from("My Model (v2)").as_deref(), Some("My-Model-v2"));
        assert_eq!(name_from("..hidden..x").as_deref(), Some("hidden.x"));
        assert_eq!(name_from("a\u{1b}[31mb").as_deref(), Some("a-31mb"));
        assert_eq!(name_from("...").as_deref(), None);
        assert_eq!(name_from("模型").as_deref(), None);
    }

    #[test]
    fn every_path_written_stays_under_out() {
        let out = Path::new("/tmp/kit");
        assert_eq!(under(out, "a/b.py").unwrap(), Path::new("/tmp/kit/a/b.py"));
        assert_eq!(under(out, STATE_FILE).unwrap(), Path::new("/tmp/kit/.ckptpilot-stub.json"));
        for bad in ["", "../x", "a/../../x", "/etc/passwd", "a//b", "./a", "a/./b", "a/..", "a\u{1b}b", "a\nb"] {
            assert!(matches!(under(out, bad), Err(StubError::OutsideOut { .. })), "{bad:?}");
        }
    }

    #[test]
    fn terminal_text_has_no_control_characters() {
        assert_eq!(one_line("a\u{1b}[31mb\u{7}\r\nc\u{202e}"), "a\\u{1b}[31mb\\u{7}\\r\\nc\\u{202e}");
        assert_eq!(printable("a\nb\u{1b}"), "a\nb\\u{1b}");
        assert_eq!(flat("one\n  two \n\nthree\r"), "one / two / three\\r");
        assert_eq!(one_line("模型 ok"), "模型 ok");
        assert_eq!(sh_quote("/a/b-c.d"), "/a/b-c.d");
        assert_eq!(sh_quote("it's a path"), "'it'\\''s a path'");
    }
}
