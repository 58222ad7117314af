//! `ckptkit stub`: the vLLM adapter, its pure-Python mapping module, load-time fp8 dequantization,
//! registration, the serve-validation kit and the delivery skeletons — all generated from the remap
//! table, the plan and the audit's view of the config, so nothing the checkpoint says is typed by hand.

mod delivery;
mod python;

use crate::checkpoint::Checkpoint;
use crate::plan::{PlanInput, PlanOptions, Target};
use crate::quant::scheme::QuantScheme;
use crate::remap::rules::RuleSet;
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
}

#[derive(Debug, thiserror::Error)]
pub enum StubError {
    #[error("{}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Plan(#[from] crate::plan::PlanError),
    #[error("{0}")]
    Unsupported(String),
    #[error("{} is not empty: it holds {} ({count} entries); nothing was written", out.display(), sample.join(", "))]
    OutNotEmpty { out: PathBuf, sample: Vec<String>, count: usize },
    #[error("{message}; nothing was written")]
    Infeasible { message: String },
    #[error("{} cannot serve {model} as stored: {reason}; nothing was written", target.as_str())]
    NotServable { model: String, target: Target, reason: String },
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

/// Write `text` to `dir/rel` through a temporary file renamed into place: no partial files.
/// The record of what `stub` wrote into its output directory: relative path → blake3 of the bytes
/// written, so a later `--force` run can tell the files a person edited from its own.
const STATE_FILE: &str = ".ckptkit-stub.json";

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
    /// Files a person changed since ckptkit wrote them: (kept file, where the new version went).
    pub kept: Vec<(PathBuf, PathBuf)>,
}

fn blake3_hex(b: &[u8]) -> String {
    blake3::hash(b).to_hex().to_string()
}

/// Write one generated file. A file that exists and is not exactly what ckptkit last wrote there
/// (a person edited it, or ckptkit never wrote it) is kept; the new text goes to `FILE.new`.
fn write(dir: &Path, rel: &str, text: &str, state: &mut StubState, done: &mut Written) -> Result<(), StubError> {
    let path = dir.join(rel);
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
fn prepare_out(out: &Path, force: bool) -> Result<StubState, StubError> {
    let io = |source| StubError::Io { path: out.to_path_buf(), source };
    match std::fs::metadata(out) {
        Ok(md) if !md.is_dir() => {
            return Err(StubError::Io {
                path: out.to_path_buf(),
                source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "exists and is not a directory"),
            })
        }
        Ok(_) => {
            let mut names: Vec<String> = std::fs::read_dir(out)
                .map_err(io)?
                .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect();
            if !names.is_empty() && !force {
                names.sort();
                let count = names.len();
                names.truncate(5);
                return Err(StubError::OutNotEmpty { out: out.to_path_buf(), sample: names, count });
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::create_dir_all(out).map_err(io)?,
        Err(e) => return Err(io(e)),
    }
    Ok(crate::fsutil::read_bounded(&out.join(STATE_FILE), crate::fsutil::JSON_CAP)
        .ok()
        .and_then(|b| serde_json::from_slice::<StubState>(&b).ok())
        .unwrap_or_default())
}

/// The TP (and EP) for the serve scripts, from `ckptkit plan` of the model as the scripts serve it:
/// with `dequant_at_load` the fp8 weights become bf16 at load and the scripts build the model
/// unquantized, so the plan is of the unquantized model (its `target` rule then holds and memory is
/// counted in bf16). With `given` only that TP is planned. Returns (tp, ep, reason, reason in
/// Chinese, the plan: device and the `max_model_len` vLLM accepts).
fn choose_tp(
    ck: &Checkpoint,
    model: &str,
    rules: &RuleSet,
    target: Target,
    given: Option<u64>,
    dequant_at_load: bool,
) -> Result<(u64, bool, String, String, crate::plan::PlanReport), StubError> {
    // As `ckptkit plan` reads it: a directory with only a config.json is planned from the config.
    let mut input = if ck.tensor_count() == 0 {
        PlanInput::open(model, rules).or_else(|_| PlanInput::from_checkpoint(ck, model, rules))?
    } else {
        PlanInput::from_checkpoint(ck, model, rules)?
    };
    if dequant_at_load {
        input.without_quantization(ck.config_json.as_ref(), rules);
    }
    let moe = input.config.moe.is_some();
    let opts = PlanOptions {
        tp: given.map_or_else(|| vec![1, 2, 4, 8, 16, 32], |t| vec![t.max(1)]),
        ep: match given {
            Some(t) => vec![moe && t > 1],
            None => vec![false, true],
        },
        target,
        ..Default::default()
    };
    let report = crate::plan::plan(&input, &opts);
    let served =
        if dequant_at_load { ", of the model as served (fp8 dequantized to bf16 at load, unquantized)" } else { "" };
    let served_zh = if dequant_at_load {
        "（按实际服务方式规划：fp8 权重在加载时反量化为 bf16，模型以非量化方式构建）"
    } else {
        ""
    };
    let dev = report.device.name.clone();
    let why =
        |c: &crate::plan::ConfigPlan| c.failures.iter().map(|f| f.rule.to_string()).collect::<Vec<_>>().join(", ");
    // The target has no method for the checkpoint's weight format (NVFP4 or MXFP4 on vLLM-Ascend):
    // it raises while building the model at every TP, and load-time dequantization covers fp8 only.
    // A kit would never serve; the way forward is a converted copy, stubbed on its own.
    if let Some(f) = report.configs.iter().find_map(|c| c.failures.iter().find(|f| f.rule == crate::plan::Rule::Target))
    {
        return Err(StubError::NotServable { model: model.to_string(), target, reason: f.message.clone() });
    }
    let (tp, ep, en, zh) = if let Some(t) = given {
        let c = report.configs.first();
        let ep = c.is_some_and(|c| c.ep);
        match c.filter(|c| !c.feasible) {
            Some(c) => (
                t,
                ep,
                format!(
                    "--tp {t} given; `ckptkit plan --target {}`{served} finds it infeasible on {dev} ({})",
                    target.as_str(),
                    why(c)
                ),
                format!(
                    "指定了 --tp {t}；`ckptkit plan --target {}`{served_zh}判定其在 {dev} 上不可行（{}）",
                    target.as_str(),
                    why(c)
                ),
            ),
            None => (
                t,
                ep,
                format!(
                    "--tp {t} given; `ckptkit plan --target {}`{served} finds it feasible on {dev}",
                    target.as_str()
                ),
                format!("指定了 --tp {t}；`ckptkit plan --target {}`{served_zh}判定其在 {dev} 上可行", target.as_str()),
            ),
        }
    } else {
        match report.configs.iter().filter(|c| c.feasible).min_by_key(|c| (c.tp, c.ep)) {
            Some(c) => (
                c.tp,
                c.ep,
                format!(
                    "`ckptkit plan --target {}`{served}: TP {}{} is the smallest feasible configuration on {dev} ({} of weights per rank, {} sequences of {} tokens)",
                    target.as_str(),
                    c.tp,
                    if c.ep { " with EP" } else { "" },
                    crate::render::bytes(c.per_rank_weight_bytes),
                    c.max_seqs_at_max_model_len,
                    report.max_model_len
                ),
                format!(
                    "`ckptkit plan --target {}`{served_zh}：TP {}{} 是 {dev} 上最小的可行配置（每卡权重 {}，可容纳 {} 条 {} token 的序列）",
                    target.as_str(),
                    c.tp,
                    if c.ep { "（开启 EP）" } else { "" },
                    crate::render::bytes(c.per_rank_weight_bytes),
                    c.max_seqs_at_max_model_len,
                    report.max_model_len
                ),
            ),
            None => {
                // Nothing serves on this device (memory, or a load failure such as scale-load); a TP
                // vLLM can at least build is still a kit worth writing. A model vLLM builds at no TP
                // gets none.
                let buildable = report
                    .configs
                    .iter()
                    .filter(|c| c.failures.iter().all(|f| !f.rule.is_layout()))
                    .min_by_key(|c| (c.tp, c.ep));
                let Some(c) = buildable else {
                    let first = report.configs.first();
                    let failures: Vec<String> = first
                        .map(|c| {
                            c.failures.iter().filter(|f| f.rule.is_layout()).map(|f| format!("{}: {}", f.rule, f.message)).collect()
                        })
                        .unwrap_or_default();
                    return Err(StubError::Infeasible {
                        message: format!(
                            "vLLM {} builds {model} at no TP up to 32 on --target {}{served}; at TP {}: {}",
                            crate::audit::VLLM_REFERENCE,
                            target.as_str(),
                            first.map(|c| c.tp).unwrap_or(1),
                            failures.join("; ")
                        ),
                    });
                };
                (
                    c.tp,
                    c.ep,
                    format!(
                        "`ckptkit plan --target {}`{served}: vLLM builds TP {}{}, but plan finds no configuration that serves on {dev} ({}); read the plan before serving",
                        target.as_str(),
                        c.tp,
                        if c.ep { " with EP" } else { "" },
                        why(c)
                    ),
                    format!(
                        "`ckptkit plan --target {}`{served_zh}：vLLM 可以构建 TP {}{}，但规划认为在 {dev} 上没有可服务的配置（{}）；部署前请阅读规划结果",
                        target.as_str(),
                        c.tp,
                        if c.ep { "（开启 EP）" } else { "" },
                        why(c)
                    ),
                )
            }
        }
    };
    Ok((tp, ep, en, zh, report))
}

/// Generate everything into `opts.out`: new or empty, or with `force` a directory whose files a
/// person changed are kept (the new versions beside them as `FILE.new`).
pub fn generate(model: &str, ck: &Checkpoint, rules: &RuleSet, opts: &StubOptions) -> Result<Written, StubError> {
    let Some(cfg) = ck.config.as_ref() else {
        return Err(StubError::Unsupported(format!(
            "{model}: config.json is missing; a stub needs the model's config"
        )));
    };
    let architecture = cfg.architecture.clone().unwrap_or_else(|| "UnknownForCausalLM".into());
    if !architecture.starts_with(|c: char| c.is_ascii_alphabetic())
        || !architecture.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
    {
        return Err(StubError::Unsupported(format!(
            "{model}: architecture {architecture:?} is not a Python class name; the adapter class takes the architecture's name"
        )));
    }
    let quant = ck.quant_scheme().cloned();
    let fp8 = quant.as_ref().is_some_and(|q| q.fp8_scale.is_some());
    let dequant_at_load = fp8 && opts.target == Target::VllmAscend;
    let (tp, ep, tp_reason, tp_reason_zh, plan) = choose_tp(ck, model, rules, opts.target, opts.tp, dequant_at_load)?;
    let remap = crate::remap::remap(ck, model, rules, &RemapOptions { tp, ep, target: opts.target, rows: true });
    let dir_name = Path::new(model)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| architecture.clone());
    let name = opts.name.clone().unwrap_or(dir_name);
    let snake = snake(&name);
    let taken = if opts.layout == Layout::InTree { python::vllm_module_names(rules) } else { Default::default() };
    let free = |stem: String| if taken.contains(&stem) { format!("{stem}_ckpt") } else { stem };
    let module = free(snake.clone());
    let mapping_module = free(format!("{module}_mapping"));
    let mtp_present = remap.rows.iter().any(|r| r.reason.as_deref().is_some_and(|x| x.starts_with("MTP layer")));
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
    };
    let mut state = prepare_out(&opts.out, opts.force)?;
    state.schema = "ckptkit.stub-state/1".into();
    let mut written = Written::default();
    for (rel, text) in python::files(&ctx).into_iter().chain(delivery::files(&ctx)) {
        write(&opts.out, &rel, &text, &mut state, &mut written)?;
    }
    let state_path = opts.out.join(STATE_FILE);
    let text = serde_json::to_string_pretty(&state).expect("state serializes") + "\n";
    crate::fsutil::write_atomic(&state_path, text.as_bytes())
        .map_err(|source| StubError::Io { path: state_path, source })?;
    Ok(written)
}

impl crate::ui::Help for StubError {
    fn help(&self) -> String {
        match self {
            StubError::Io { .. } => "check that --out is writable and on a file system with free space".into(),
            StubError::Plan(e) => crate::ui::Help::help(e),
            StubError::Unsupported(_) => "see `ckptkit remap MODEL` for what the rules cover".into(),
            StubError::Infeasible { .. } => {
                "`ckptkit plan MODEL` shows each rule; for fp8 on a target that cannot build it, --target vllm-ascend loads it dequantized, or `ckptkit dequant` converts it".into()
            }
            StubError::NotServable { model, target, .. } => format!(
                "convert it first, then stub the copy: `ckptkit dequant {model} --out DIR` and `ckptkit stub DIR --target {}`", target.as_str()
            ),
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
}
