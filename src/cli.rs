//! The `ckptpilot` command: parse arguments, call the library, render, set the exit status. The
//! binary (`src/main.rs`) and the Python package's `ckptpilot` entry point both run [`main_with`].
//!
//! Exit status (one place, [`Exit`]): 0 success / no error findings, 1 error findings or a refusal
//! of the checkpoint, 2 usage error, 3 an input or output that cannot be read or written.
//! Every error ckptpilot prints itself is an `error:` line and a `help:` line with the fix.

use crate::arch::rules::RuleSet;
use crate::plan::Target;
use crate::ui::{self, ColorChoice, Help};
use crate::{manifest, render, Checkpoint};
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;

#[derive(Parser)]
#[command(
    name = "ckptpilot",
    version,
    about = "Pre-flight checks for Hugging Face checkpoints headed for vLLM / vLLM-Ascend (vLLM 0.33.0 rules)",
    after_help = "vLLM's own flag names work where they mean the same: -tp/--tensor-parallel-size, -pp, -dp, \
                  -ep/--enable-expert-parallel, --max-model-len 32k, --gpu-memory-utilization, --kv-cache-dtype."
)]
struct Cli {
    /// The serving stack the answers are for; one default for every command.
    #[arg(long, global = true, value_enum, env = "CKPTPILOT_TARGET", default_value = "vllm")]
    target: Target,
    /// When to colour what ckptpilot prints (NO_COLOR is honoured by auto).
    #[arg(long, global = true, value_enum, default_value = "auto")]
    color: ColorChoice,
    /// An extra family rule file (a family added or replaced) for audit, plan, remap and stub; may be repeated.
    #[arg(long = "rules", global = true, value_name = "FILE")]
    rules: Vec<PathBuf>,
    /// Never read from the Hub: a repo id must be in the local cache (as HF_HUB_OFFLINE=1).
    #[arg(long, global = true)]
    offline: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, ValueEnum)]
enum QuantizeTo {
    /// ModelSlim W8A8_DYNAMIC (vLLM-Ascend `--quantization ascend`): int8 weights, per-channel f32 scales.
    W8a8Dynamic,
    /// msModelSlim's MoE recipe: routed experts W4A8_DYNAMIC (int4 weights packed two rows to a byte,
    /// with their scale_bias), the other linear layers W8A8_DYNAMIC.
    W4a8Dynamic,
    /// msModelSlim's data-free converter, FLOAT → W8A8_MXFP8 (Ascend 950): the decoder's attention
    /// and MLP / expert linears as float8_e4m3 weights with an E8M0 scale per 32 input columns.
    #[value(name = "w8a8-mxfp8")]
    W8a8Mxfp8,
}

impl QuantizeTo {
    fn target(self) -> crate::convert::quantize::Target {
        match self {
            QuantizeTo::W8a8Dynamic => crate::convert::quantize::Target::W8A8Dynamic,
            QuantizeTo::W4a8Dynamic => crate::convert::quantize::Target::W4A8Dynamic,
            QuantizeTo::W8a8Mxfp8 => crate::convert::quantize::Target::W8A8Mxfp8,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum DtypeArg {
    Bf16,
    F16,
    F32,
}

impl DtypeArg {
    fn out(self) -> crate::quant::fp8::OutDtype {
        use crate::quant::fp8::OutDtype;
        match self {
            DtypeArg::Bf16 => OutDtype::BF16,
            DtypeArg::F16 => OutDtype::F16,
            DtypeArg::F32 => OutDtype::F32,
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum EpArg {
    On,
    Off,
    Both,
}

#[derive(Clone, Copy, ValueEnum)]
enum LayoutArg {
    /// A pip-installable plugin package registered through `vllm.general_plugins`.
    Plugin,
    /// Files to drop into a vLLM source tree, with the registry line to add.
    InTree,
}

#[derive(Clone, Copy, ValueEnum)]
enum LangArg {
    Zh,
    En,
}

#[derive(Clone, Copy, ValueEnum)]
enum KvDtypeArg {
    Auto,
    Fp8,
    #[value(name = "fp8_e4m3")]
    Fp8E4m3,
    #[value(name = "fp8_e5m2")]
    Fp8E5m2,
}

impl KvDtypeArg {
    fn as_str(self) -> &'static str {
        match self {
            KvDtypeArg::Auto => "auto",
            KvDtypeArg::Fp8 => "fp8",
            KvDtypeArg::Fp8E4m3 => "fp8_e4m3",
            KvDtypeArg::Fp8E5m2 => "fp8_e5m2",
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Audit a checkpoint: headers, index, config, structure, quantization.
    Audit {
        /// A checkpoint directory, a single .safetensors file, or a cached Hugging Face repo id org/name[@revision].
        model: String,
        /// Print the versioned JSON report (ckptpilot.audit/1) instead of the human one.
        #[arg(long)]
        json: bool,
        /// Also write a blake3 manifest of every file of the checkpoint to this path (check it later with `ckptpilot verify`).
        #[arg(long, value_name = "MANIFEST")]
        checksum: Option<PathBuf>,
        /// The device it will serve on, as `plan --device` names presets (ascend-310p, ascend-950pr, h20, …): whether the target serves the quantization is judged there. Default: h100 for vllm, ascend-a2 for vllm-ascend.
        #[arg(long, value_name = "PRESET")]
        device: Option<String>,
    },
    /// Convert an fp8 checkpoint to bf16 (f16, f32): every fp8 weight dequantized with its scale,
    /// scales dropped, everything else copied bit for bit; streaming, resumable, splittable.
    Dequant {
        /// The fp8 checkpoint (directory, .safetensors file or cached repo id).
        model: String,
        /// Output directory: new, empty, or an earlier run of this same conversion (resumed).
        #[arg(long)]
        out: PathBuf,
        /// Output dtype of the dequantized weights.
        #[arg(long, value_enum, default_value = "bf16")]
        dtype: DtypeArg,
        /// Worker threads for the kernels (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Re-read every written shard and compare it with a fresh dequantization of the input.
        #[arg(long)]
        verify: bool,
        /// Convert only part K of N of the shards (for N jobs of a scheduler); then run --finalize.
        #[arg(long, value_name = "K/N", conflicts_with = "finalize")]
        part: Option<String>,
        /// Check that all parts are done, then write the index, config.json and the other files.
        #[arg(long)]
        finalize: bool,
        /// Write into a non-empty --out that is not an earlier run of this conversion (same-named files are replaced).
        #[arg(long)]
        force: bool,
        /// On a rerun, keep a finished shard whose size and header match without re-hashing its bytes.
        #[arg(long)]
        trust_existing: bool,
        /// Print the summary as JSON (ckptpilot.dequant/1).
        #[arg(long)]
        json: bool,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Quantize a bf16/f16/f32 (or fp8) checkpoint to vLLM-Ascend's ModelSlim format, bit for bit
    /// what msModelSlim's min-max pipeline writes, without calibration data; streaming, resumable, splittable.
    Quantize {
        /// The checkpoint (directory, .safetensors file or cached repo id); fp8 weights are dequantized on the fly.
        model: String,
        /// The ModelSlim scheme to write.
        #[arg(long, value_enum)]
        to: QuantizeTo,
        /// Output directory: new, empty, or an earlier run of this same conversion (resumed).
        #[arg(long)]
        out: PathBuf,
        /// Size of each quant_model_weights part: a whole number is GiB, as msModelSlim's
        /// part_file_size (0: one file, no index); a size with a unit (e.g. 64MiB) makes parts
        /// smaller than msModelSlim can (tests, and --part K/N on small models).
        #[arg(long, value_name = "GIB|SIZE", default_value = "4")]
        part_file_size: String,
        /// Worker threads for the kernels (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Re-read every written part and compare it with a fresh quantization of the input.
        #[arg(long)]
        verify: bool,
        /// Write only part K of N of the output files (for N jobs of a scheduler); then run --finalize.
        #[arg(long, value_name = "K/N", conflicts_with = "finalize")]
        part: Option<String>,
        /// Check that all parts are done, then write the description, index, config.json and the other files.
        #[arg(long)]
        finalize: bool,
        /// Write into a non-empty --out that is not an earlier run of this conversion (same-named files are replaced).
        #[arg(long)]
        force: bool,
        /// On a rerun, keep a finished file whose size and header match without re-hashing its bytes.
        #[arg(long)]
        trust_existing: bool,
        /// Print the summary as JSON (ckptpilot.quantize/1).
        #[arg(long)]
        json: bool,
        /// No progress bar.
        #[arg(long, short)]
        quiet: bool,
    },
    /// Benchmarks measured against this machine's own ceilings in the same run.
    Bench {
        #[command(subcommand)]
        what: BenchCmd,
    },
    /// Which TP / EP / DP / PP configurations vLLM will accept, per-rank memory and KV-cache capacity.
    ///
    /// Exit status 0 when at least one configuration is feasible, 1 when none is.
    Plan {
        /// A checkpoint (directory, .safetensors file, cached repo id) or a lone config.json.
        model: String,
        /// Tensor-parallel sizes to plan, e.g. 1,2,4,8.
        #[arg(long, visible_alias = "tensor-parallel-size", value_delimiter = ',', default_value = "1,2,4,8,16")]
        tp: Vec<u64>,
        /// Expert parallelism: on, off, or both (each TP planned with EP and without it); `--ep` alone means on.
        #[arg(
            long,
            visible_alias = "enable-expert-parallel",
            value_enum,
            num_args = 0..=1,
            require_equals = true,
            default_missing_value = "on",
            default_value = "off"
        )]
        ep: EpArg,
        /// Data-parallel size (the MoE layers' TP is TP×DP without EP).
        #[arg(long, visible_alias = "data-parallel-size", default_value_t = 1)]
        dp: u64,
        /// Pipeline-parallel size.
        #[arg(long, visible_alias = "pipeline-parallel-size", default_value_t = 1)]
        pp: u64,
        /// A device preset (h100, h200, a100, h20, ascend-a2, ascend-a2-32g, ascend-a3, ascend-950pr, ascend-950dt). Default: h100 for vllm, ascend-a2 for vllm-ascend.
        #[arg(long)]
        device: Option<String>,
        /// Device memory instead of a preset's, e.g. 64GiB (with --device: that preset's kind with this memory).
        #[arg(long)]
        device_memory: Option<String>,
        /// The share of device memory vLLM may use, as vLLM's flag.
        #[arg(long, default_value_t = 0.9)]
        gpu_memory_utilization: f64,
        /// Context length for the capacity check, vLLM's forms accepted (131072, 128k, 128K); default 131072, capped at the model's limit.
        #[arg(long, value_parser = ui::parse_human_int)]
        max_model_len: Option<u64>,
        /// Concurrent sequences the KV cache must hold.
        #[arg(long, default_value_t = 16)]
        max_num_seqs: u64,
        /// KV-cache dtype, as vLLM's flag.
        #[arg(long, value_enum, default_value = "auto")]
        kv_cache_dtype: KvDtypeArg,
        /// Memory kept for activations, CUDA/ACL graphs and the runtime, per device.
        #[arg(long, default_value = "4GiB")]
        activation_reserve: String,
        /// vLLM's --moe-backend: with an explicit backend that cannot take refined fp8 blocks, vLLM pads expert shards instead of refining their scales.
        #[arg(long, value_enum, default_value = "auto")]
        moe_backend: crate::plan::MoeBackend,
        /// Print the versioned JSON report (ckptpilot.plan/1).
        #[arg(long)]
        json: bool,
    },
    /// Every checkpoint tensor to its vLLM parameter (shard id, expert id, TP slice), and the reverse check.
    Remap {
        /// A checkpoint directory, a single .safetensors file, or a cached repo id.
        model: String,
        /// The TP size whose per-rank slices to show.
        #[arg(long, visible_alias = "tensor-parallel-size", default_value_t = 1)]
        tp: u64,
        /// Expert parallelism: each expert's tensors go whole to the rank that owns the expert.
        #[arg(long, visible_alias = "enable-expert-parallel")]
        ep: bool,
        /// Print the versioned JSON table (ckptpilot.remap/1).
        #[arg(long, conflicts_with_all = ["csv", "md"])]
        json: bool,
        /// Print the table as CSV.
        #[arg(long, conflicts_with = "md")]
        csv: bool,
        /// Print the table as Markdown.
        #[arg(long)]
        md: bool,
        /// Write the matched (or inferred) family's rule file here, for completing an unknown architecture.
        #[arg(long, value_name = "FILE")]
        emit_rules: Option<PathBuf>,
    },
    /// Which known family explains a checkpoint best (every family scored by the tensors it routes,
    /// the parameters it fills and the shapes that agree), and exactly how it differs from the best.
    Match {
        /// A checkpoint directory, a single .safetensors file, or a cached repo id.
        model: String,
        /// How many candidates to print (--json has all).
        #[arg(long, default_value_t = 5)]
        top: usize,
        /// Print the versioned JSON (ckptpilot.match/1).
        #[arg(long)]
        json: bool,
        /// Write the best family with the derived renames as a rule file (`--rules` reads it).
        #[arg(long, value_name = "FILE")]
        emit_rules: Option<PathBuf>,
    },
    /// What differs between two checkpoints, from their headers alone: tensors only in one (by
    /// pattern, with the layers), shapes and dtypes, quantization and config.json.
    ///
    /// Exit status 0 when they are the same, 1 when they differ (as diff(1)).
    Diff {
        /// The first checkpoint (A): a directory, a single .safetensors file, or a repo id.
        a: String,
        /// The second checkpoint (B), the same kinds.
        b: String,
        /// Print the versioned JSON (ckptpilot.diff/1).
        #[arg(long)]
        json: bool,
    },
    /// vLLM adapter code, its mapping module and the serve-validation kit, generated from the remap.
    Stub {
        /// A checkpoint directory, a single .safetensors file, or a cached repo id.
        model: String,
        /// Output directory: new or empty (see --force).
        #[arg(long)]
        out: PathBuf,
        /// Write into a non-empty --out; files you changed since ckptpilot wrote them are kept and the new version goes to FILE.new.
        #[arg(long)]
        force: bool,
        /// Model name for files and classes (default: the checkpoint directory's name).
        #[arg(long)]
        name: Option<String>,
        /// How the adapter is registered with vLLM.
        #[arg(long, value_enum, default_value = "plugin")]
        layout: LayoutArg,
        /// TP for the serve scripts (default: the smallest `ckptpilot plan` finds feasible).
        #[arg(long, visible_alias = "tensor-parallel-size")]
        tp: Option<u64>,
        /// Write the kit even where `ckptpilot plan` predicts that vLLM fails at its TP (the kit says so).
        #[arg(long)]
        allow_infeasible: bool,
        /// Language of the report, the plugin README and the next steps (default: en for --target vllm, zh for vllm-ascend).
        #[arg(long, value_enum)]
        lang: Option<LangArg>,
        /// For an architecture no family names: the family to start from (a name `ckptpilot match`
        /// lists; default: the closest), or `none` for a module skeleton with the forward left to write.
        #[arg(long, value_name = "FAMILY|none")]
        like: Option<String>,
    },
    /// Check a checkpoint against a manifest written by `audit --checksum`.
    Verify {
        /// The manifest file.
        manifest: PathBuf,
        /// The checkpoint directory (default: the absolute root recorded in the manifest).
        #[arg(long)]
        model: Option<PathBuf>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The architectures ckptpilot knows: each one's family, vLLM class, the TP sizes a recorded vLLM
    /// run verifies, and the vLLM version (check here first).
    Families {
        /// The versioned JSON (ckptpilot.families/1).
        #[arg(long, conflicts_with = "md")]
        json: bool,
        /// A Markdown table (the README's coverage table is this).
        #[arg(long)]
        md: bool,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) to stdout, or write one page per command into a directory.
    Man {
        /// Write ckptpilot.1 and ckptpilot-COMMAND.1 here instead.
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BenchCmd {
    /// fp8 -> bf16/f16/f32 throughput against the widen (u8->u16) ceiling and memcpy.
    Dequant {
        /// A synthetic e4m3 tensor of this shape with 128x128 block scales.
        #[arg(long, value_name = "N,K", conflicts_with = "tensor")]
        shape: Option<String>,
        /// A real fp8 tensor: MODEL:TENSOR_NAME.
        #[arg(long, value_name = "MODEL:NAME")]
        tensor: Option<String>,
        /// Thread counts to measure, e.g. 1,2,16 (default: 1 and all cores).
        #[arg(long, value_delimiter = ',')]
        threads: Vec<usize>,
        /// Repetitions per measurement (the median is reported).
        #[arg(long, default_value_t = 9)]
        reps: usize,
        /// Output dtype of the kernel.
        #[arg(long, value_enum, default_value = "bf16")]
        dtype: DtypeArg,
        /// A 4-bit format instead of fp8 (synthetic [N,K] input, bf16 out, against the same 1:4 table expansion with one fixed table).
        #[arg(long, value_enum, conflicts_with = "tensor")]
        format: Option<Format4Arg>,
        /// Print the versioned JSON report.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format4Arg {
    Mxfp4,
    Nvfp4,
    Int4,
}

/// The largest TP / DP / PP accepted: far beyond any deployment, small enough to list per rank.
const MAX_PARALLEL: u64 = 4096;

/// How a command ends. Mapped to the process status in one place ([`Exit::code`]).
enum Exit {
    Ok,
    /// Error findings, an infeasible plan, a refusal of the checkpoint, a failed verification.
    Findings,
    Usage(String, String),
    Input(String, String),
    /// A refusal that is the checkpoint's or the layout's (exit 1), with its fix.
    Refused(String, String),
}

impl Exit {
    fn usage(msg: impl Into<String>, help: impl Into<String>) -> Exit {
        Exit::Usage(msg.into(), help.into())
    }
    fn input(e: &(impl std::fmt::Display + Help)) -> Exit {
        Exit::Input(e.to_string(), e.help())
    }
    fn code(self, color: bool) -> u8 {
        match self {
            Exit::Ok => 0,
            Exit::Findings => 1,
            Exit::Usage(msg, help) => {
                ui::report(color, &msg, &help);
                2
            }
            Exit::Input(msg, help) => {
                ui::report(color, &msg, &help);
                3
            }
            Exit::Refused(msg, help) => {
                ui::report(color, &msg, &help);
                1
            }
        }
    }
}

/// A `note:` line on stderr; a closed stderr is not worth a panic.
fn note(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "note: {}", ui::text(msg));
}

/// Write a report to stdout; a closed pipe stops the output quietly with the status the command
/// would have had anyway.
fn emit(text: &str) -> Result<(), Exit> {
    ui::emit(text).map(drop).map_err(stdout_error)
}

/// [`emit`] for a JSON report, streamed to stdout.
fn emit_json<T: serde::Serialize>(value: &T) -> Result<(), Exit> {
    ui::emit_json(value).map(drop).map_err(stdout_error)
}

fn stdout_error(e: std::io::Error) -> Exit {
    Exit::Input(format!("cannot write to stdout: {e}"), "check where the output goes".into())
}

/// vLLM's single-dash spellings (`-tp 8`, `-pp=2`, `-ep`) as the long flags clap knows; and for
/// `plan`, `--ep both` (a value after a flag that may stand alone) as `--ep=both`.
fn vllm_spellings(args: impl Iterator<Item = std::ffi::OsString>, cmd: &clap::Command) -> Vec<std::ffi::OsString> {
    let args: Vec<std::ffi::OsString> = args.collect();
    let subcommand = args
        .iter()
        .skip(1)
        .map(|a| a.to_string_lossy())
        .find(|a| cmd.get_subcommands().any(|c| c.get_name() == a.as_ref()));
    let is_plan = subcommand.as_deref() == Some("plan");
    let mut out = Vec::new();
    let mut rest = false;
    let mut it = args.into_iter().peekable();
    while let Some(a) = it.next() {
        if rest {
            out.push(a);
            continue;
        }
        let s = a.to_string_lossy();
        if s == "--" {
            rest = true;
            out.push(a);
            continue;
        }
        let (flag, value) = match s.split_once('=') {
            Some((f, v)) => (f.to_string(), Some(v.to_string())),
            None => (s.to_string(), None),
        };
        let long = match flag.as_str() {
            "-tp" => Some("--tensor-parallel-size"),
            "-pp" => Some("--pipeline-parallel-size"),
            "-dp" => Some("--data-parallel-size"),
            "-ep" => Some("--enable-expert-parallel"),
            _ => None,
        };
        let ep_flag = matches!(long.unwrap_or(flag.as_str()), "--ep" | "--enable-expert-parallel");
        let next_is_mode =
            it.peek().map(|n| n.to_string_lossy()).is_some_and(|n| matches!(n.as_ref(), "on" | "off" | "both"));
        if is_plan && ep_flag && value.is_none() && next_is_mode {
            let mode = it.next().expect("peeked").to_string_lossy().into_owned();
            out.push(format!("{}={mode}", long.unwrap_or(flag.as_str())).into());
            continue;
        }
        match (long, value) {
            (Some(l), Some(v)) => out.push(format!("{l}={v}").into()),
            (Some(l), None) => out.push(l.into()),
            (None, _) => out.push(a),
        }
    }
    out
}

/// [`main_with`], with the report and the errors returned instead of printed (see [`ui::capture`]).
pub fn run_captured(args: impl IntoIterator<Item = std::ffi::OsString>) -> (u8, ui::Captured) {
    ui::capture(|| main_with(args))
}

/// Set by the binary, which owns its process: the header-only commands may then change settings
/// of the whole process (see [`crate::fsutil::no_huge_pages`]). The Python module leaves it unset.
static OWN_PROCESS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Called by the binary before [`main_with`].
pub fn own_process() {
    OWN_PROCESS.store(true, std::sync::atomic::Ordering::Relaxed);
}

/// Run the command line `args` (the program name first) and return the exit status.
pub fn main_with(args: impl IntoIterator<Item = std::ffi::OsString>) -> u8 {
    // The command tree is built once (building it is most of the start-up before the work).
    let cmd = Cli::command();
    let args = vllm_spellings(args.into_iter(), &cmd);
    // --color decides clap's colours too, so look for it before clap parses.
    let color = args
        .iter()
        .map(|a| a.to_string_lossy())
        .collect::<Vec<_>>()
        .windows(2)
        .find_map(|w| {
            if let Some(v) = w[1].strip_prefix("--color=") {
                return ColorChoice::from_str(v, true).ok();
            }
            (w[0] == "--color").then(|| ColorChoice::from_str(&w[1], true).ok()).flatten()
        })
        .unwrap_or_default();
    let cmd = cmd.color(color.clap());
    let cli = match cmd.try_get_matches_from(&args).and_then(|m| Cli::from_arg_matches(&m)) {
        Ok(c) => c,
        Err(e) => {
            // --help / --version print to stdout (exit 0); usage errors to stderr (exit 2). A
            // closed stdout is not an error worth a word.
            if ui::capturing() {
                ui::report(false, e.render().to_string().trim_start_matches("error: ").trim_end(), "");
            } else {
                let _ = e.print();
            }
            return e.exit_code().clamp(0, 255) as u8;
        }
    };
    let color_err = cli.color.stderr();
    run(cli).code(color_err)
}

fn run(cli: Cli) -> Exit {
    let target = cli.target;
    // Commands that open a checkpoint before they read the families have them parsed meanwhile.
    let early = matches!(
        cli.cmd,
        Cmd::Audit { .. } | Cmd::Plan { .. } | Cmd::Remap { .. } | Cmd::Match { .. } | Cmd::Stub { .. }
    );
    if early && OWN_PROCESS.load(std::sync::atomic::Ordering::Relaxed) {
        crate::fsutil::no_huge_pages();
    }
    let rules = match Rules::load(&cli.rules, early) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let rules = &rules;
    // A repo id the local cache lacks is read from the Hub (headers only) by audit, plan, remap
    // and stub; dequant and quantize need the weights and refuse it.
    let hub = crate::hub::Settings {
        progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
        ..crate::hub::Settings::from_env(cli.offline)
    };
    let hub = &hub;
    let r = match cli.cmd {
        Cmd::Audit { model, json, checksum, device } => {
            let device = match device.as_deref() {
                None => None,
                Some(d) => match crate::plan::device::Device::preset(d) {
                    Some(p) if p.npu.is_some() != (target == Target::VllmAscend) => {
                        return Exit::Usage(
                            format!("--device {d}: {} is not a device of --target {}", p.name, target.as_str()),
                            format!(
                                "name a {} preset, or set --target {}",
                                if target == Target::VllmAscend { "Ascend" } else { "GPU" },
                                if p.npu.is_some() { "vllm-ascend" } else { "vllm" }
                            ),
                        )
                    }
                    Some(p) => Some(crate::audit::Hardware { fp8: p.fp8, npu: p.npu }),
                    None => {
                        return Exit::Usage(
                            format!("--device {d}: unknown preset"),
                            format!("use one of {}", crate::plan::device::Device::preset_names()),
                        )
                    }
                },
            };
            run_audit(&model, target, json, checksum, device, rules, hub)
        }
        Cmd::Verify { manifest, model, json } => run_verify(&manifest, model, json),
        Cmd::Stub { model, out, force, name, layout, tp, allow_infeasible, lang, like } => {
            use crate::stub::{Lang, Layout, StubOptions};
            if tp.is_some_and(|t| t == 0 || t > MAX_PARALLEL) {
                return Exit::usage(
                    format!("--tp must be 1 to {MAX_PARALLEL}"),
                    "pass a TP size vLLM could use, e.g. --tp 8",
                );
            }
            if let Some(Err(e)) = name.as_deref().map(crate::stub::check_name) {
                let help = "--name takes a model name such as `DeepSeek-V3` (letters, digits, `-`, `_`, `.`); the kit goes under --out";
                return Exit::usage(e, help);
            }
            let opts = StubOptions {
                out,
                name,
                layout: match layout {
                    LayoutArg::InTree => Layout::InTree,
                    LayoutArg::Plugin => Layout::Plugin,
                },
                tp,
                lang: match (lang, target) {
                    (Some(LangArg::En), _) | (None, Target::Vllm) => Lang::En,
                    (Some(LangArg::Zh), _) | (None, Target::VllmAscend) => Lang::Zh,
                },
                target,
                force,
                allow_infeasible,
                like,
            };
            run_stub(&model, &opts, rules, hub)
        }
        Cmd::Remap { model, tp, ep, json, csv, md, emit_rules } => {
            if tp == 0 || tp > MAX_PARALLEL {
                return Exit::usage(
                    format!("--tp must be 1 to {MAX_PARALLEL}"),
                    "pass a TP size vLLM could use, e.g. --tp 8",
                );
            }
            let format = if json {
                render::TableFormat::Json
            } else if csv {
                render::TableFormat::Csv
            } else if md {
                render::TableFormat::Markdown
            } else {
                render::TableFormat::Human
            };
            run_remap(&model, crate::remap::RemapOptions { tp, ep, target, rows: true }, rules, format, emit_rules, hub)
        }
        Cmd::Plan {
            model,
            tp,
            ep,
            dp,
            pp,
            device,
            device_memory,
            gpu_memory_utilization,
            max_model_len,
            max_num_seqs,
            kv_cache_dtype,
            activation_reserve,
            moe_backend,
            json,
        } => {
            use crate::plan::{device::parse_size, device::Device, PlanOptions};
            let preset = match device.as_deref().map(|d| (d, Device::preset(d))) {
                Some((_, Some(p))) => Some(p),
                Some((d, None)) => {
                    return Exit::usage(
                        format!("--device {d}: unknown preset"),
                        format!("use one of {}, or --device-memory SIZE", Device::preset_names()),
                    )
                }
                None => None,
            };
            let device = match (preset, device_memory) {
                (preset, Some(m)) => match parse_size(&m) {
                    Some(b) if b > 0 => Some(match preset {
                        // The preset's kind, with the total the user's npu-smi / nvidia-smi reports.
                        Some(mut p) => {
                            p.description =
                                format!("{} — memory {} (--device-memory)", p.description, crate::ui::bytes(b));
                            p.memory_bytes = b;
                            p
                        }
                        None => Device::custom(b, target == Target::Vllm, None),
                    }),
                    _ => {
                        let bare = m.trim().parse::<f64>().is_ok();
                        return Exit::usage(
                            if bare {
                                format!("--device-memory {m}: a size needs a unit")
                            } else {
                                format!("--device-memory {m}: not a size")
                            },
                            format!("write it with a unit: {}GiB (binary) or {}GB (decimal)", m.trim(), m.trim()),
                        );
                    }
                },
                (preset, None) => preset,
            };
            let Some(reserve) = parse_size(&activation_reserve) else {
                return Exit::usage(
                    format!("--activation-reserve {activation_reserve}: not a size with a unit"),
                    "write it as 4GiB",
                );
            };
            if tp.contains(&0) || dp == 0 || pp == 0 {
                return Exit::usage("--tp, --dp and --pp must be at least 1", "e.g. --tp 1,2,4,8 --dp 1 --pp 1");
            }
            if tp.iter().chain([&dp, &pp]).any(|&x| x > MAX_PARALLEL) {
                return Exit::usage(
                    format!("--tp, --dp and --pp are at most {MAX_PARALLEL}"),
                    "pass sizes a cluster can have",
                );
            }
            if max_model_len == Some(0) || max_num_seqs == 0 {
                return Exit::usage(
                    "--max-model-len and --max-num-seqs must be at least 1",
                    "e.g. --max-model-len 32k",
                );
            }
            if !(gpu_memory_utilization > 0.0 && gpu_memory_utilization <= 1.0) {
                return Exit::usage("--gpu-memory-utilization must be in (0, 1]", "vLLM's default is 0.9");
            }
            let opts = PlanOptions {
                tp,
                ep: match ep {
                    EpArg::On => vec![true],
                    EpArg::Both => vec![false, true],
                    EpArg::Off => vec![false],
                },
                dp,
                pp,
                target,
                device,
                gpu_memory_utilization,
                max_model_len,
                max_num_seqs,
                kv_cache_dtype: kv_cache_dtype.as_str().to_string(),
                activation_reserve_bytes: reserve,
                moe_backend,
            };
            run_plan(&model, &opts, json, rules, hub)
        }
        Cmd::Dequant { model, out, dtype, threads, verify, part, finalize, force, trust_existing, json, quiet } => {
            let part = match parse_part(part.as_deref()) {
                Ok(p) => p,
                Err(e) => return e,
            };
            let opts = crate::convert::Options {
                out,
                task: crate::convert::Task::Dequant(dtype.out()),
                part,
                finalize_only: finalize,
                verify,
                progress: !quiet && !json,
                force,
                trust_existing,
            };
            run_convert(&model, &opts, threads, json)
        }
        Cmd::Quantize {
            model,
            to,
            out,
            part_file_size,
            threads,
            verify,
            part,
            finalize,
            force,
            trust_existing,
            json,
            quiet,
        } => {
            let part = match parse_part(part.as_deref()) {
                Ok(p) => p,
                Err(e) => return e,
            };
            let part_bytes = match part_file_size.trim().parse::<u64>() {
                Ok(gib) => gib.checked_mul(1 << 30),
                Err(_) => crate::plan::device::parse_size(&part_file_size).filter(|&b| b > 0),
            };
            let Some(part_bytes) = part_bytes else {
                return Exit::usage(
                    format!("--part-file-size {}: not a size", crate::ui::field(&part_file_size)),
                    "pass whole GiB, e.g. 4 (msModelSlim's default), or a size with a unit, e.g. 64MiB",
                );
            };
            let opts = crate::convert::Options {
                out,
                task: crate::convert::Task::Quantize { to: to.target(), part_bytes },
                part,
                finalize_only: finalize,
                verify,
                progress: !quiet && !json,
                force,
                trust_existing,
            };
            run_convert(&model, &opts, threads, json)
        }
        Cmd::Bench { what: BenchCmd::Dequant { shape, tensor, threads, reps, dtype, format: Some(f), json } } => {
            let _ = (tensor, dtype);
            run_bench4(f, shape, threads, reps, json)
        }
        Cmd::Bench { what: BenchCmd::Dequant { shape, tensor, threads, reps, dtype, format: None, json } } => {
            run_bench(shape, tensor, threads, reps, dtype, json)
        }
        Cmd::Match { model, top, json, emit_rules } => run_match(&model, top, json, emit_rules, rules, hub),
        Cmd::Diff { a, b, json } => run_diff(&a, &b, json, hub),
        Cmd::Families { json, md } => {
            let c = crate::arch::coverage::coverage(rules);
            if json {
                emit_json(&c).map(|()| Exit::Ok)
            } else {
                emit(&render::families(&c, md)).map(|()| Exit::Ok)
            }
        }
        Cmd::Completions { shell } => {
            let mut buf = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "ckptpilot", &mut buf);
            emit(&String::from_utf8_lossy(&buf)).map(|()| Exit::Ok)
        }
        Cmd::Man { out } => run_man(out),
    };
    r.unwrap_or_else(|e| e)
}

/// The most workers `--threads` may ask for: four per core (a worker blocked on I/O leaves its
/// core to another), 1,024 at most. 100,000 would start threads until the system stops it.
pub fn max_threads() -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    cores.saturating_mul(4).clamp(4, 1024)
}

/// `--threads N` is within 1..=[`max_threads`], or a usage error that says the bound.
fn check_threads(t: usize) -> Result<(), Exit> {
    let max = max_threads();
    if t == 0 || t > max {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        return Err(Exit::usage(
            format!(
                "--threads {t}: must be between 1 and {max} on this machine ({cores} cores, at most 4 workers each)"
            ),
            format!("pass --threads {cores}, or leave it out to use every core"),
        ));
    }
    Ok(())
}

fn set_threads(threads: Option<usize>) -> Result<(), Exit> {
    if let Some(t) = threads {
        check_threads(t)?;
        if rayon::ThreadPoolBuilder::new().num_threads(t).build_global().is_err() {
            return Err(Exit::usage(
                format!("--threads {t}: cannot start that many workers"),
                "pass fewer, at most the cores you have",
            ));
        }
    }
    Ok(())
}

/// `--part K/N`.
fn parse_part(part: Option<&str>) -> Result<Option<(usize, usize)>, Exit> {
    match part.map(|p| p.split_once('/').and_then(|(k, n)| Some((k.parse::<usize>().ok()?, n.parse::<usize>().ok()?))))
    {
        None => Ok(None),
        Some(Some(kn)) => Ok(Some(kn)),
        Some(None) => Err(Exit::usage("--part expects K/N", "e.g. --part 3/8 for the third of eight jobs")),
    }
}

fn run_convert(model: &str, opts: &crate::convert::Options, threads: Option<usize>, json: bool) -> Result<Exit, Exit> {
    use crate::convert::{self, ConvertError};
    set_threads(threads)?;
    let (ck, findings) = Checkpoint::open(model).map_err(|e| Exit::input(&e))?;
    let s = match convert::run(&ck, &findings, opts) {
        Ok(s) => s,
        Err(e) => {
            return Err(match e {
                ConvertError::BadPart { .. }
                | ConvertError::OutNotEmpty { .. }
                | ConvertError::OtherConversion { .. }
                | ConvertError::OutNotDir(_)
                | ConvertError::OutputIsInput(_) => Exit::Usage(e.to_string(), e.help()),
                ConvertError::Io { .. }
                | ConvertError::Locked { .. }
                | ConvertError::LockIo { .. }
                | ConvertError::Input(_) => Exit::input(&e),
                _ => Exit::Refused(e.to_string(), e.help()),
            })
        }
    };
    for f in &s.kept_files {
        note(&format!("kept {f}"));
    }
    for f in &s.skipped_files {
        note(&format!("not copied: {f}"));
    }
    if json {
        emit(&(serde_json::to_string_pretty(&s).expect("summary serializes") + "\n"))?;
    } else {
        let quantized = if s.tensors_quantized > 0 {
            format!(", {} linear weights quantized (each with its scale tensors)", s.tensors_quantized)
        } else {
            String::new()
        };
        let command = if s.schema.starts_with("ckptpilot.quantize") { "quantize" } else { "dequant" };
        emit(&format!(
            "ckptpilot {command} -> {} ({}){}: {} file(s) written, {} kept, {} tensors dequantized{quantized}, {} copied, {} scale/companion tensors dropped\n  {:.2} GB read, {:.2} GB written in {:.2} s{}{}\n",
            s.out,
            s.out_dtype,
            s.part.as_ref().map(|p| format!(", part {p}")).unwrap_or_default(),
            s.shards_written,
            s.shards_kept,
            s.tensors_dequantized,
            s.tensors_copied,
            s.tensors_dropped,
            s.bytes_read as f64 / 1e9,
            s.bytes_written as f64 / 1e9,
            s.seconds,
            if s.verified { "; verified against the input" } else { "" },
            if s.finalized { "; index, config.json and other files written" } else { "; run --finalize when every part is done" }
        ))?;
    }
    Ok(Exit::Ok)
}

fn run_bench4(
    f: Format4Arg,
    shape: Option<String>,
    threads: Vec<usize>,
    reps: usize,
    json: bool,
) -> Result<Exit, Exit> {
    use crate::bench::Format4;
    if reps == 0 {
        return Err(Exit::usage("--reps must be positive", "e.g. --threads 1,2 --reps 9"));
    }
    threads.iter().try_for_each(|&t| check_threads(t))?;
    let s = shape.unwrap_or_else(|| "18432,7168".into());
    let Some((n, k)) =
        s.split_once(',').and_then(|(n, k)| Some((n.trim().parse::<usize>().ok()?, k.trim().parse::<usize>().ok()?)))
    else {
        return Err(Exit::usage(format!("--shape {s}: expected N,K"), "e.g. --shape 18432,7168"));
    };
    if n == 0 || k == 0 || n.saturating_mul(k) > 1 << 31 {
        return Err(Exit::usage(format!("--shape {s}: N and K positive, N*K at most 2^31"), "e.g. --shape 18432,7168"));
    }
    let threads = if threads.is_empty() {
        let all = rayon::current_num_threads();
        if all > 1 {
            vec![1, all]
        } else {
            vec![1]
        }
    } else {
        threads
    };
    let format = match f {
        Format4Arg::Mxfp4 => Format4::Mxfp4,
        Format4Arg::Nvfp4 => Format4::Nvfp4,
        Format4Arg::Int4 => Format4::Int4,
    };
    let r = crate::bench::dequant4(format, n, k, &threads, reps);
    if json {
        emit(&(serde_json::to_string_pretty(&r).expect("report serializes") + "\n"))?;
    } else {
        emit(&crate::bench::render4(&r))?;
    }
    Ok(Exit::Ok)
}

fn run_bench(
    shape: Option<String>,
    tensor: Option<String>,
    threads: Vec<usize>,
    reps: usize,
    dtype: DtypeArg,
    json: bool,
) -> Result<Exit, Exit> {
    use crate::bench::{Input, InputError};
    if reps == 0 {
        return Err(Exit::usage("--reps must be positive", "e.g. --threads 1,2 --reps 9"));
    }
    threads.iter().try_for_each(|&t| check_threads(t))?;
    let input = match (shape, tensor) {
        (_, Some(t)) => match t.rsplit_once(':') {
            Some((model, name)) if !model.is_empty() && !name.is_empty() => match Input::from_checkpoint(model, name) {
                Ok(i) => i,
                Err(InputError::Checkpoint(e)) => return Err(Exit::input(&e)),
                Err(e @ InputError::Tensor(_)) => return Err(Exit::Usage(e.to_string(), e.help())),
            },
            _ => {
                return Err(Exit::usage(
                    format!("--tensor {t}: expected MODEL:TENSOR_NAME"),
                    "e.g. --tensor fixtures/deepseek-fp8:model.layers.0.mlp.down_proj.weight",
                ))
            }
        },
        (s, None) => {
            let s = s.unwrap_or_else(|| "18432,7168".into());
            match s
                .split_once(',')
                .and_then(|(a, b)| Some((a.trim().parse::<usize>().ok()?, b.trim().parse::<usize>().ok()?)))
            {
                Some((n, k)) if n > 0 && k > 0 && n.checked_mul(k).is_some_and(|x| x <= 1 << 34) => {
                    Input::synthetic(n, k)
                }
                _ => {
                    return Err(Exit::usage(
                        format!("--shape {s}: expected N,K, both positive, at most 2^34 elements"),
                        "e.g. --shape 18432,7168",
                    ))
                }
            }
        }
    };
    let threads = if threads.is_empty() {
        let all = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        if all > 1 {
            vec![1, all]
        } else {
            vec![1]
        }
    } else {
        threads
    };
    let r = crate::bench::dequant(&input, dtype.out(), &threads, reps);
    if json {
        emit(&(serde_json::to_string_pretty(&r).expect("bench report serializes") + "\n"))?;
    } else {
        emit(&crate::bench::render(&r))?;
    }
    Ok(Exit::Ok)
}

/// The built-in families plus the `--rules` files (a user family replaces a built-in of its name).
/// The families a command reads: the built-in ones on first use (with `early`, parsed on a thread
/// of their own from the start, while the command opens its checkpoint); `--rules` files are read
/// at once, so an error in one is reported before anything else is done.
enum Rules {
    Builtin,
    With(RuleSet),
}

impl Rules {
    fn load(files: &[PathBuf], early: bool) -> Result<Rules, Exit> {
        if files.is_empty() {
            if early {
                std::thread::spawn(RuleSet::builtin);
            }
            return Ok(Rules::Builtin);
        }
        let paths: Vec<&std::path::Path> = files.iter().map(PathBuf::as_path).collect();
        RuleSet::load(&paths).map(Rules::With).map_err(|e| Exit::input(&e))
    }
}

impl std::ops::Deref for Rules {
    type Target = RuleSet;
    fn deref(&self) -> &RuleSet {
        match self {
            Rules::Builtin => RuleSet::builtin(),
            Rules::With(r) => r,
        }
    }
}

/// The opened checkpoint, which must be readable throughout.
fn readable_checkpoint(model: &str, hub: &crate::hub::Settings) -> Result<Checkpoint, Exit> {
    let (ck, _) = open_checkpoint(model, hub)?;
    // A table or an adapter for tensors nobody could read would be made up.
    ck.require_readable().map_err(|e| Exit::input(&e))?;
    Ok(ck)
}

/// Open `model` for a command that reads no tensor data: a repo id the local cache lacks is read
/// from the Hub, and where its headers came from is said on stderr.
fn open_checkpoint(
    model: &str,
    hub: &crate::hub::Settings,
) -> Result<(Checkpoint, Vec<crate::findings::Finding>), Exit> {
    let (ck, findings) = Checkpoint::open_with(model, hub).map_err(|e| Exit::input(&e))?;
    if let Some(r) = &ck.source.remote {
        for w in &r.warnings {
            eprintln!("warning: {}", ui::text(w));
        }
        eprintln!("{}", ui::text(&render::remote_source(r)));
    }
    Ok((ck, findings))
}

fn run_stub(
    model: &str,
    opts: &crate::stub::StubOptions,
    rules: &RuleSet,
    hub: &crate::hub::Settings,
) -> Result<Exit, Exit> {
    use crate::stub::{printable, StubError};
    // Names in messages come from the checkpoint (tensor names, architectures, quant methods):
    // no control character reaches the terminal.
    let clean = |e: Exit| match e {
        Exit::Usage(m, h) => Exit::Usage(printable(&m), printable(&h)),
        Exit::Input(m, h) => Exit::Input(printable(&m), printable(&h)),
        Exit::Refused(m, h) => Exit::Refused(printable(&m), printable(&h)),
        other => other,
    };
    let ck = readable_checkpoint(model, hub).map_err(clean)?;
    // The same refusal as plan and remap, saying what is true of config.json.
    ck.require_config().map_err(|e| clean(Exit::input(&e)))?;
    // Plan's verdict at the TP the kit serves (layout, scale loading, target, memory) is stub's own.
    let written = match crate::stub::generate(model, &ck, rules, opts) {
        Ok(w) => w,
        Err(e @ (StubError::OutNotEmpty { .. } | StubError::BadName(_) | StubError::OutsideOut { .. })) => {
            return Err(clean(Exit::Usage(e.to_string(), e.help())))
        }
        Err(e @ (StubError::Infeasible { .. } | StubError::NotServable { .. })) => {
            return Err(clean(Exit::Refused(e.to_string(), e.help())))
        }
        Err(e) => return Err(clean(Exit::input(&e))),
    };
    let mut text = String::new();
    for f in &written.files {
        text.push_str(&format!("{}\n", printable(&f.display().to_string())));
    }
    text.push('\n');
    text.push_str(&printable(&written.next_steps));
    emit(&text)?;
    for (kept, new) in &written.kept {
        note(&printable(&format!(
            "{} was changed since ckptpilot wrote it; kept as it is, the new version is {}",
            kept.display(),
            new.display()
        )));
    }
    for w in &written.warnings {
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "warning: {}", printable(w));
    }
    Ok(Exit::Ok)
}

/// No per-rank slices for a layout vLLM refuses to build: exit 1 with `plan`'s failure.
fn refuse_layout(ck: &Checkpoint, model: &str, tp: u64, ep: bool, target: Target, rules: &RuleSet) -> Result<(), Exit> {
    let failures = crate::plan::layout_failures(ck, model, tp, ep, target, rules);
    if failures.is_empty() {
        return Ok(());
    }
    let why: Vec<String> = failures.iter().map(|f| format!("{}: {}", f.rule, f.message)).collect();
    let fix: Vec<String> = failures.iter().filter_map(|f| f.fix.clone()).collect();
    Err(Exit::Refused(
        format!(
            "vLLM {} refuses TP {tp}{} for this model, so there are no slices to show:\n  {}",
            crate::target::VLLM_REFERENCE,
            if ep { " with EP" } else { "" },
            why.join("\n  ")
        ),
        format!("{} (`ckptpilot plan {model}` lists the sizes that work)", fix.join("; ")),
    ))
}

fn run_remap(
    model: &str,
    opts: crate::remap::RemapOptions,
    rules: &RuleSet,
    format: render::TableFormat,
    emit_rules: Option<PathBuf>,
    hub: &crate::hub::Settings,
) -> Result<Exit, Exit> {
    let ck = readable_checkpoint(model, hub)?;
    // No config, no family and no shapes: a table guessed from tensor names would be made up.
    ck.require_config().map_err(|e| Exit::input(&e))?;
    refuse_layout(&ck, model, opts.tp, opts.ep, opts.target, rules)?;
    let report = crate::matching::remap_closest(&ck, model, rules, &opts);
    if let Some(path) = emit_rules {
        let text = crate::remap::emit_rules(&report, rules, ck.config.as_ref());
        crate::fsutil::write_atomic(&path, text.as_bytes()).map_err(|e| {
            Exit::Input(format!("{}: {e}", path.display()), "check that the directory exists and is writable".into())
        })?;
        note(&format!("wrote {}", path.display()));
    }
    match format {
        render::TableFormat::Json => {
            ui::emit_json_with(|w| crate::remap::json::write_report(&report, w)).map_err(stdout_error)?;
        }
        _ => emit(&render::remap(&report, format))?,
    }
    let errors = report.findings.iter().any(|f| f.severity == crate::Severity::Error);
    // The process ends here: tearing down ~100k rows would only cost time.
    std::mem::forget(report);
    std::mem::forget(ck);
    Ok(if errors { Exit::Findings } else { Exit::Ok })
}

fn run_match(
    model: &str,
    top: usize,
    json: bool,
    emit_rules: Option<PathBuf>,
    rules: &RuleSet,
    hub: &crate::hub::Settings,
) -> Result<Exit, Exit> {
    let ck = readable_checkpoint(model, hub)?;
    ck.require_config().map_err(|e| Exit::input(&e))?;
    let report = crate::matching::match_checkpoint(&ck, model, rules);
    if let Some(path) = emit_rules {
        let Some(d) = report.difference.as_ref().and_then(|d| d.derived.as_ref()) else {
            return Err(Exit::Refused(
                "no rule file written: the difference against the best family is not a rename".into(),
                "read the difference `ckptpilot match` prints; `ckptpilot remap MODEL --emit-rules FILE` writes the family to complete by hand".into(),
            ));
        };
        let text = serde_json::to_string_pretty(&d.rules).unwrap_or_default() + "\n";
        crate::fsutil::write_atomic(&path, text.as_bytes()).map_err(|e| {
            Exit::Input(format!("{}: {e}", path.display()), "check that the directory exists and is writable".into())
        })?;
        note(&format!("wrote {}", path.display()));
    }
    if json {
        emit_json(&report)?;
    } else {
        emit(&render::matching(&report, top))?;
    }
    Ok(Exit::Ok)
}

fn run_plan(
    model: &str,
    opts: &crate::plan::PlanOptions,
    json: bool,
    rules: &RuleSet,
    hub: &crate::hub::Settings,
) -> Result<Exit, Exit> {
    let input = match crate::plan::PlanInput::open(model, rules) {
        Err(crate::plan::PlanError::Checkpoint(crate::error::CheckpointError::NotCached { .. })) => {
            let (ck, _) = open_checkpoint(model, hub)?;
            crate::plan::PlanInput::from_checkpoint(&ck, model, rules)
        }
        other => other,
    }
    .map_err(|e| Exit::input(&e))?;
    let report = crate::plan::plan(&input, opts);
    if json {
        emit_json(&report)?;
    } else {
        emit(&render::plan(&report))?;
    }
    Ok(if report.configs.iter().any(|c| c.feasible) { Exit::Ok } else { Exit::Findings })
}

fn run_audit(
    model: &str,
    target: Target,
    json: bool,
    checksum: Option<PathBuf>,
    device: Option<crate::audit::Hardware>,
    rules: &Rules,
    hub: &crate::hub::Settings,
) -> Result<Exit, Exit> {
    // (the built-in families are parsed meanwhile)
    let (ck, findings) = open_checkpoint(model, hub)?;
    let mut report = crate::audit::audit_on(model, &ck, findings, rules, target, device);
    report.tool.target = target.as_str();
    if let (Some(_), Some(r)) = (&checksum, &ck.source.remote) {
        // A manifest hashes every byte of every file; only the headers were read.
        return Err(Exit::Input(
            format!("--checksum: {} was read from the Hub, headers only; there are no files here to hash", r.repo),
            format!(
                "download it (`hf download {}`) and run `ckptpilot audit DIR --checksum MANIFEST` on the copy",
                r.repo
            ),
        ));
    }
    if let Some(path) = checksum {
        let m = manifest::build(&ck, Some(&path))
            .and_then(|m| manifest::write(&m, &path).map(|_| m))
            .map_err(|e| Exit::Input(format!("cannot write the manifest: {e}"), e.help()))?;
        report.findings.push(crate::Finding::new(
            crate::Code::ChecksumWritten,
            format!("{} files hashed into {}", m.files.len(), path.display()),
        ));
        report.summary = crate::findings::Tally::of(&report.findings);
    }
    let code = if report.has_errors() { Exit::Findings } else { Exit::Ok };
    if json {
        emit_json(&report)?;
    } else {
        emit(&render::audit(&report))?;
    }
    // The process ends here: tearing down maps of ~100k names would only cost time.
    std::mem::forget(report);
    std::mem::forget(ck);
    Ok(code)
}

fn run_verify(path: &std::path::Path, model: Option<PathBuf>, json: bool) -> Result<Exit, Exit> {
    let m = manifest::read(path).map_err(|e| Exit::input(&e))?;
    let root = model.unwrap_or_else(|| PathBuf::from(&m.root));
    if !root.is_dir() {
        return Err(Exit::Input(
            format!("{}: not a directory", root.display()),
            "pass the checkpoint directory with --model DIR".into(),
        ));
    }
    let v = manifest::verify(&m, &root, Some(path));
    if json {
        emit(&(serde_json::to_string_pretty(&v).expect("verification serializes") + "\n"))?;
    } else {
        emit(&render::verification(&v))?;
    }
    Ok(if v.ok { Exit::Ok } else { Exit::Findings })
}

fn run_man(out: Option<PathBuf>) -> Result<Exit, Exit> {
    let cmd = Cli::command();
    let render = |c: clap::Command| -> Vec<u8> {
        let mut buf = Vec::new();
        clap_mangen::Man::new(c).render(&mut buf).expect("writing to memory");
        buf
    };
    match out {
        None => emit(&String::from_utf8_lossy(&render(cmd)))?,
        Some(dir) => {
            let fail = |e: std::io::Error, p: &std::path::Path| {
                Exit::Input(format!("{}: {e}", p.display()), "check that the directory is writable".into())
            };
            std::fs::create_dir_all(&dir).map_err(|e| fail(e, &dir))?;
            let mut pages = vec![("ckptpilot.1".to_string(), cmd.clone())];
            for sub in cmd.get_subcommands() {
                let name = format!("ckptpilot-{}", sub.get_name());
                pages.push((format!("{name}.1"), sub.clone().name(name)));
            }
            for (file, c) in pages {
                let p = dir.join(&file);
                crate::fsutil::write_atomic(&p, &render(c)).map_err(|e| fail(e, &p))?;
                note(&format!("wrote {}", p.display()));
            }
        }
    }
    Ok(Exit::Ok)
}

/// Both checkpoints opened as `remap` opens one (a repo id through the Hub, headers only); exit 1
/// when they differ, as diff(1).
fn run_diff(a: &str, b: &str, json: bool, hub: &crate::hub::Settings) -> Result<Exit, Exit> {
    let (ca, cb) = (readable_checkpoint(a, hub)?, readable_checkpoint(b, hub)?);
    let report = crate::diff::diff(&ca, a, &cb, b);
    if json {
        emit_json(&report)?;
    } else {
        emit(&crate::diff::render(&report))?;
    }
    Ok(if report.same { Exit::Ok } else { Exit::Findings })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every argument of every command says what it is for (`--help`, completions, the man page).
    #[test]
    fn every_flag_has_help() {
        fn walk(c: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in c.get_arguments() {
                let id = a.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                if a.get_help().is_none() && a.get_long_help().is_none() {
                    missing.push(format!("{path} {id}"));
                }
            }
            for s in c.get_subcommands() {
                if s.get_about().is_none() {
                    missing.push(format!("{path} {} (command)", s.get_name()));
                }
                walk(s, &format!("{path} {}", s.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "ckptpilot", &mut missing);
        assert!(missing.is_empty(), "without help text: {missing:?}");
        Cli::command().debug_assert();
    }

    #[test]
    fn vllm_single_dash_flags_become_long_flags() {
        let a: Vec<std::ffi::OsString> =
            ["ckptpilot", "plan", "-tp", "8", "-pp=2", "-ep", "-dp", "1", "--", "-tp"].iter().map(Into::into).collect();
        let got: Vec<String> =
            vllm_spellings(a.into_iter(), &Cli::command()).iter().map(|s| s.to_string_lossy().into_owned()).collect();
        assert_eq!(
            got,
            [
                "ckptpilot",
                "plan",
                "--tensor-parallel-size",
                "8",
                "--pipeline-parallel-size=2",
                "--enable-expert-parallel",
                "--data-parallel-size",
                "1",
                "--",
                "-tp"
            ]
        );
    }
}
