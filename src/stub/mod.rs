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
    /// Python identifier stem, e.g. `deepseek_v3`.
    pub snake: String,
    /// The adapter class.
    pub class: String,
    pub architecture: String,
    pub tp: u64,
    pub ep: bool,
    /// Why this TP / EP (from the plan), for the report.
    pub tp_reason: String,
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

/// The smallest feasible TP (failures of the `target` rule aside: the stub dequantizes at load), and
/// whether it needs EP.
fn choose_tp(ck: &Checkpoint, model: &str, target: Target) -> Result<(u64, bool, String), StubError> {
    let input = PlanInput::from_checkpoint(ck, model)?;
    let opts = PlanOptions { tp: vec![1, 2, 4, 8, 16, 32], ep: vec![false, true], target, ..Default::default() };
    let report = crate::plan::plan(&input, &opts);
    let ok = |c: &&crate::plan::ConfigPlan| c.failures.iter().all(|f| f.rule == "target");
    let best = report.configs.iter().filter(ok).min_by_key(|c| (c.tp, c.ep));
    Ok(match best {
        Some(c) => (
            c.tp,
            c.ep,
            format!(
                "`ckptkit plan --target {}`: TP {}{} is the smallest configuration whose rules pass on {} ({} of weights per rank, {} sequences of {} tokens)",
                target.as_str(),
                c.tp,
                if c.ep { " with EP" } else { "" },
                report.device.name,
                crate::render::bytes(c.per_rank_weight_bytes),
                c.max_seqs_at_max_model_len,
                report.max_model_len
            ),
        ),
        None => (8, false, "no configuration up to TP 32 passes `ckptkit plan`; TP 8 is a placeholder — read the plan".into()),
    })
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
    let (tp, ep, tp_reason) = match opts.tp {
        Some(tp) => (tp, cfg.moe.is_some() && tp > 1, format!("--tp {tp} given")),
        None => choose_tp(ck, model, opts.target)?,
    };
    let remap = crate::remap::remap(ck, model, rules, &RemapOptions { tp, ep, target: opts.target, rows: true });
    let quant = QuantScheme::detect(ck.config_json.as_ref(), ck.hf_quant_config.as_ref());
    let dir_name = Path::new(model)
        .file_name()
        .map(|s| s.to_string_lossy().into_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| architecture.clone());
    let name = opts.name.clone().unwrap_or(dir_name);
    let fp8 = quant.as_ref().is_some_and(|q| q.fp8_scale.is_some());
    let mtp_present = remap.rows.iter().any(|r| r.reason.as_deref().is_some_and(|x| x.starts_with("MTP layer")));
    let ctx = Context {
        model_path: model,
        ck,
        remap: &remap,
        rules,
        snake: snake(&name),
        class: format!("{}ForCausalLM", camel(&name)).replace("ForCausalLMForCausalLM", "ForCausalLM"),
        name,
        architecture,
        tp,
        ep,
        tp_reason,
        opts,
        dequant_at_load: fp8 && opts.target == Target::VllmAscend,
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
