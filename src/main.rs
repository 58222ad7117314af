//! The `ckptkit` command: parse arguments, call the library, render, set the exit status.
//!
//! Exit status: 0 no error findings, 1 error findings, 2 usage error, 3 input missing or unreadable.

use ckptkit::{audit, manifest, render, Checkpoint};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ckptkit",
    version,
    about = "Pre-flight checks for Hugging Face checkpoints headed for vLLM / vLLM-Ascend (vLLM 0.33.0 rules)"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Audit a checkpoint: headers, index, config, structure, quantization.
    Audit {
        /// A checkpoint directory, a single .safetensors file, or a cached Hugging Face repo id org/name[@revision].
        model: String,
        /// Print the versioned JSON report instead of the human one.
        #[arg(long)]
        json: bool,
        /// Also write a blake3 manifest of every file to this path (check it later with `ckptkit verify`).
        #[arg(long, value_name = "MANIFEST")]
        checksum: Option<PathBuf>,
    },
    /// Convert an fp8 checkpoint to bf16 (f16, f32): every fp8 weight dequantized with its scale,
    /// scales dropped, everything else copied bit for bit; streaming, resumable, splittable.
    Dequant {
        model: String,
        /// Output directory (created; must not be the input).
        #[arg(long)]
        out: PathBuf,
        #[arg(long, default_value = "bf16")]
        dtype: String,
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
        /// Print the summary as JSON.
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
        /// Tensor-parallel sizes to plan.
        #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16")]
        tp: Vec<u64>,
        /// Expert parallelism (--enable-expert-parallel): `--ep` alone means on; `both` plans each TP with and without.
        #[arg(long, num_args = 0..=1, default_missing_value = "on", default_value = "off", value_parser = ["on", "off", "both"])]
        ep: String,
        /// Data-parallel size (the MoE layers' TP is TP×DP without EP).
        #[arg(long, default_value_t = 1)]
        dp: u64,
        /// Pipeline-parallel size.
        #[arg(long, default_value_t = 1)]
        pp: u64,
        #[arg(long, default_value = "vllm", value_parser = ["vllm", "vllm-ascend"])]
        target: String,
        /// A device preset (h100, h200, a100, h20, ascend-a2, ascend-a2-32g, ascend-a3). Default: h100 for vllm, ascend-a2 for vllm-ascend.
        #[arg(long, conflicts_with = "device_memory")]
        device: Option<String>,
        /// Device memory instead of a preset, e.g. 64GiB.
        #[arg(long)]
        device_memory: Option<String>,
        #[arg(long, default_value_t = 0.9)]
        gpu_memory_utilization: f64,
        /// Context length for the capacity check (default 131072, capped at the model's own limit).
        #[arg(long)]
        max_model_len: Option<u64>,
        #[arg(long, default_value_t = 16)]
        max_num_seqs: u64,
        #[arg(long, default_value = "auto", value_parser = ["auto", "fp8", "fp8_e4m3", "fp8_e5m2"])]
        kv_cache_dtype: String,
        /// Memory kept for activations, CUDA/ACL graphs and the runtime, per device.
        #[arg(long, default_value = "4GiB")]
        activation_reserve: String,
        #[arg(long)]
        json: bool,
    },
    /// Every checkpoint tensor to its vLLM parameter (shard id, expert id, TP slice), and the reverse check.
    Remap {
        model: String,
        /// The TP size whose per-rank slices to show.
        #[arg(long, default_value_t = 1)]
        tp: u64,
        /// Expert parallelism: each expert's tensors go whole to the rank that owns the expert.
        #[arg(long)]
        ep: bool,
        /// vllm-ascend: fp8 weights are dequantized at load (their scales consumed).
        #[arg(long, default_value = "vllm", value_parser = ["vllm", "vllm-ascend"])]
        target: String,
        /// An extra rule file (a family added or replaced); may be repeated.
        #[arg(long = "rules", value_name = "FILE")]
        rules: Vec<PathBuf>,
        #[arg(long, conflicts_with_all = ["csv", "md"])]
        json: bool,
        #[arg(long, conflicts_with = "md")]
        csv: bool,
        #[arg(long)]
        md: bool,
        /// Write the matched (or inferred) family's rule file here, for completing an unknown architecture.
        #[arg(long, value_name = "FILE")]
        emit_rules: Option<PathBuf>,
    },
    /// vLLM adapter code, its mapping module and the serve-validation kit, generated from the remap.
    Stub {
        model: String,
        #[arg(long)]
        out: PathBuf,
        /// Model name for files and classes (default: the checkpoint directory's name).
        #[arg(long)]
        name: Option<String>,
        #[arg(long, default_value = "plugin", value_parser = ["in-tree", "plugin"])]
        layout: String,
        /// TP for the serve scripts (default: the smallest `ckptkit plan` finds feasible).
        #[arg(long)]
        tp: Option<u64>,
        #[arg(long, default_value = "zh", value_parser = ["zh", "en"])]
        lang: String,
        #[arg(long, default_value = "vllm-ascend", value_parser = ["vllm", "vllm-ascend"])]
        target: String,
        #[arg(long = "rules", value_name = "FILE")]
        rules: Vec<PathBuf>,
    },
    /// Check a checkpoint against a manifest written by `audit --checksum`.
    Verify {
        manifest: PathBuf,
        /// The checkpoint directory (default: the root recorded in the manifest).
        #[arg(long)]
        model: Option<PathBuf>,
        #[arg(long)]
        json: bool,
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
        #[arg(long, default_value_t = 9)]
        reps: usize,
        #[arg(long, default_value = "bf16")]
        dtype: String,
        #[arg(long)]
        json: bool,
    },
}

const EXIT_USAGE: u8 = 2;
/// The largest TP / DP / PP accepted: far beyond any deployment, small enough to list per rank.
const MAX_PARALLEL: u64 = 4096;
const EXIT_FINDINGS: u8 = 1;
const EXIT_INPUT: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Audit { model, json, checksum } => run_audit(&model, json, checksum),
        Cmd::Verify { manifest, model, json } => run_verify(&manifest, model, json),
        Cmd::Stub { model, out, name, layout, tp, lang, target, rules } => {
            use ckptkit::stub::{Lang, Layout, StubOptions};
            if tp.is_some_and(|t| t == 0 || t > MAX_PARALLEL) {
                return usage(&format!("--tp must be 1 to {MAX_PARALLEL}"));
            }
            let opts = StubOptions {
                out,
                name,
                layout: if layout == "in-tree" { Layout::InTree } else { Layout::Plugin },
                tp,
                lang: if lang == "en" { Lang::En } else { Lang::Zh },
                target: if target == "vllm" { ckptkit::plan::Target::Vllm } else { ckptkit::plan::Target::VllmAscend },
            };
            run_stub(&model, &opts, &rules)
        }
        Cmd::Remap { model, tp, ep, target, rules, json, csv, md, emit_rules } => {
            if tp == 0 || tp > MAX_PARALLEL {
                return usage(&format!("--tp must be 1 to {MAX_PARALLEL}"));
            }
            let target =
                if target == "vllm-ascend" { ckptkit::plan::Target::VllmAscend } else { ckptkit::plan::Target::Vllm };
            let format = if json {
                render::TableFormat::Json
            } else if csv {
                render::TableFormat::Csv
            } else if md {
                render::TableFormat::Markdown
            } else {
                render::TableFormat::Human
            };
            run_remap(&model, ckptkit::remap::RemapOptions { tp, ep, target, rows: true }, &rules, format, emit_rules)
        }
        Cmd::Plan {
            model,
            tp,
            ep,
            dp,
            pp,
            target,
            device,
            device_memory,
            gpu_memory_utilization,
            max_model_len,
            max_num_seqs,
            kv_cache_dtype,
            activation_reserve,
            json,
        } => {
            use ckptkit::plan::{device::parse_size, device::Device, PlanOptions, Target};
            let target = if target == "vllm-ascend" { Target::VllmAscend } else { Target::Vllm };
            let device = match (device, device_memory) {
                (Some(d), _) => match Device::preset(&d) {
                    Some(d) => Some(d),
                    None => return usage(&format!("--device {d}: unknown preset (known: {})", Device::preset_names())),
                },
                (None, Some(m)) => match parse_size(&m) {
                    Some(b) if b > 0 => Some(Device::custom(b, target == Target::Vllm)),
                    _ => return usage(&format!("--device-memory {m}: expected a size such as 64GiB or 80GB")),
                },
                (None, None) => None,
            };
            let Some(reserve) = parse_size(&activation_reserve) else {
                return usage(&format!("--activation-reserve {activation_reserve}: expected a size such as 4GiB"));
            };
            if tp.contains(&0) || dp == 0 || pp == 0 {
                return usage("--tp, --dp and --pp must be at least 1");
            }
            if tp.iter().chain([&dp, &pp]).any(|&x| x > MAX_PARALLEL) {
                return usage(&format!("--tp, --dp and --pp are at most {MAX_PARALLEL}"));
            }
            if max_model_len == Some(0) || max_num_seqs == 0 {
                return usage("--max-model-len and --max-num-seqs must be at least 1");
            }
            if !(gpu_memory_utilization > 0.0 && gpu_memory_utilization <= 1.0) {
                return usage("--gpu-memory-utilization must be in (0, 1]");
            }
            let opts = PlanOptions {
                tp,
                ep: match ep.as_str() {
                    "on" => vec![true],
                    "both" => vec![false, true],
                    _ => vec![false],
                },
                dp,
                pp,
                target,
                device,
                gpu_memory_utilization,
                max_model_len,
                max_num_seqs,
                kv_cache_dtype,
                activation_reserve_bytes: reserve,
            };
            run_plan(&model, &opts, json)
        }
        Cmd::Dequant { model, out, dtype, threads, verify, part, finalize, json, quiet } => {
            run_dequant(&model, out, &dtype, threads, verify, part, finalize, json, quiet)
        }
        Cmd::Bench { what: BenchCmd::Dequant { shape, tensor, threads, reps, dtype, json } } => {
            run_bench(shape, tensor, threads, reps, &dtype, json)
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn run_dequant(
    model: &str,
    out: PathBuf,
    dtype: &str,
    threads: Option<usize>,
    verify: bool,
    part: Option<String>,
    finalize: bool,
    json: bool,
    quiet: bool,
) -> ExitCode {
    use ckptkit::convert::{self, ConvertError};
    let Some(dtype) = ckptkit::quant::fp8::OutDtype::parse(dtype) else {
        eprintln!("error: --dtype {dtype}: use bf16, f16 or f32");
        return ExitCode::from(EXIT_USAGE);
    };
    let part = match part
        .as_deref()
        .map(|p| p.split_once('/').and_then(|(k, n)| Some((k.parse::<usize>().ok()?, n.parse::<usize>().ok()?))))
    {
        None => None,
        Some(Some(kn)) => Some(kn),
        Some(None) => {
            eprintln!("error: --part expects K/N, e.g. 3/8");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Some(t) = threads {
        if t == 0 || rayon::ThreadPoolBuilder::new().num_threads(t).build_global().is_err() {
            eprintln!("error: --threads {t}: cannot start that many workers");
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let (ck, findings) = match Checkpoint::open(model) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INPUT);
        }
    };
    let opts = convert::Options { out, dtype, part, finalize_only: finalize, verify, progress: !quiet && !json };
    match convert::run(&ck, &findings, &opts) {
        Ok(s) => {
            if json {
                println!("{}", serde_json::to_string_pretty(&s).expect("summary serializes"));
            } else {
                println!(
                    "ckptkit dequant -> {} ({}){}: {} shard(s) written, {} kept, {} tensors dequantized, {} copied, {} scale/companion tensors dropped",
                    s.out,
                    s.out_dtype,
                    s.part.as_ref().map(|p| format!(", part {p}")).unwrap_or_default(),
                    s.shards_written,
                    s.shards_kept,
                    s.tensors_dequantized,
                    s.tensors_copied,
                    s.tensors_dropped
                );
                println!(
                    "  {:.2} GB read, {:.2} GB written in {:.2} s{}{}",
                    s.bytes_read as f64 / 1e9,
                    s.bytes_written as f64 / 1e9,
                    s.seconds,
                    if s.verified { "; verified against the input" } else { "" },
                    if s.finalized {
                        "; index, config.json and other files written"
                    } else {
                        "; run --finalize when every part is done"
                    }
                );
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(match e {
                ConvertError::BadPart { .. } => EXIT_USAGE,
                ConvertError::Io { .. } => EXIT_INPUT,
                _ => EXIT_FINDINGS,
            })
        }
    }
}

fn run_bench(
    shape: Option<String>,
    tensor: Option<String>,
    threads: Vec<usize>,
    reps: usize,
    dtype: &str,
    json: bool,
) -> ExitCode {
    let Some(out) = ckptkit::quant::fp8::OutDtype::parse(dtype) else {
        eprintln!("error: --dtype {dtype}: use bf16, f16 or f32");
        return ExitCode::from(EXIT_USAGE);
    };
    let input = match (shape, tensor) {
        (_, Some(t)) => match t.rsplit_once(':') {
            Some((model, name)) => ckptkit::bench::Input::from_checkpoint(model, name),
            None => Err(format!("--tensor {t}: expected MODEL:TENSOR_NAME")),
        },
        (s, None) => {
            let s = s.unwrap_or_else(|| "18432,7168".into());
            match s
                .split_once(',')
                .and_then(|(a, b)| Some((a.trim().parse::<usize>().ok()?, b.trim().parse::<usize>().ok()?)))
            {
                Some((n, k)) if n > 0 && k > 0 && n.checked_mul(k).is_some_and(|x| x <= 1 << 34) => {
                    Ok(ckptkit::bench::Input::synthetic(n, k))
                }
                _ => Err(format!("--shape {s}: expected N,K (positive, at most 2^34 elements)")),
            }
        }
    };
    let input = match input {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INPUT);
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
    if threads.contains(&0) || reps == 0 {
        eprintln!("error: --threads and --reps must be positive");
        return ExitCode::from(EXIT_USAGE);
    }
    let r = ckptkit::bench::dequant(&input, out, &threads, reps);
    if json {
        println!("{}", serde_json::to_string_pretty(&r).expect("bench report serializes"));
    } else {
        print!("{}", ckptkit::bench::render(&r));
    }
    ExitCode::SUCCESS
}

fn usage(msg: &str) -> ExitCode {
    eprintln!("error: {msg}");
    ExitCode::from(EXIT_USAGE)
}

/// The rule set (built-ins plus `--rules` files) and the opened checkpoint, or the exit code.
fn rules_and_checkpoint(
    model: &str,
    rule_files: &[PathBuf],
) -> Result<(ckptkit::remap::rules::RuleSet, Checkpoint), ExitCode> {
    let paths: Vec<&std::path::Path> = rule_files.iter().map(PathBuf::as_path).collect();
    let input_error = |e: &dyn std::fmt::Display| {
        eprintln!("error: {e}");
        ExitCode::from(EXIT_INPUT)
    };
    let rules = ckptkit::remap::rules::RuleSet::load(&paths).map_err(|e| input_error(&e))?;
    let (ck, _) = Checkpoint::open(model).map_err(|e| input_error(&e))?;
    Ok((rules, ck))
}

fn run_stub(model: &str, opts: &ckptkit::stub::StubOptions, rule_files: &[PathBuf]) -> ExitCode {
    let (rules, ck) = match rules_and_checkpoint(model, rule_files) {
        Ok(x) => x,
        Err(code) => return code,
    };
    match ckptkit::stub::generate(model, &ck, &rules, opts) {
        Ok(files) => {
            for f in files {
                println!("{}", f.display());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_INPUT)
        }
    }
}

fn run_remap(
    model: &str,
    opts: ckptkit::remap::RemapOptions,
    rule_files: &[PathBuf],
    format: render::TableFormat,
    emit: Option<PathBuf>,
) -> ExitCode {
    let (rules, ck) = match rules_and_checkpoint(model, rule_files) {
        Ok(x) => x,
        Err(code) => return code,
    };
    let report = ckptkit::remap::remap(&ck, model, &rules, &opts);
    if let Some(path) = emit {
        let text = ckptkit::remap::emit_rules(&report, &rules, ck.config.as_ref());
        if let Err(e) = std::fs::write(&path, text) {
            eprintln!("error: {}: {e}", path.display());
            return ExitCode::from(EXIT_INPUT);
        }
        eprintln!("wrote {}", path.display());
    }
    print!("{}", render::remap(&report, format));
    let errors = report.findings.iter().any(|f| f.severity == ckptkit::Severity::Error);
    if errors {
        ExitCode::from(EXIT_FINDINGS)
    } else {
        ExitCode::SUCCESS
    }
}

fn run_plan(model: &str, opts: &ckptkit::plan::PlanOptions, json: bool) -> ExitCode {
    let input = match ckptkit::plan::PlanInput::open(model) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INPUT);
        }
    };
    let report = ckptkit::plan::plan(&input, opts);
    if json {
        println!("{}", serde_json::to_string_pretty(&report).expect("plan serializes"));
    } else {
        print!("{}", render::plan(&report));
    }
    if report.configs.iter().any(|c| c.feasible) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FINDINGS)
    }
}

fn run_audit(model: &str, json: bool, checksum: Option<PathBuf>) -> ExitCode {
    let (ck, findings) = match Checkpoint::open(model) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INPUT);
        }
    };
    let mut report = audit(model, &ck, findings);
    if let Some(path) = checksum {
        match manifest::build(&ck).and_then(|m| manifest::write(&m, &path).map(|_| m)) {
            Ok(m) => {
                report.findings.push(ckptkit::Finding::new(
                    ckptkit::Code::ChecksumWritten,
                    format!("{} files hashed into {}", m.files.len(), path.display()),
                ));
                report.summary = ckptkit::findings::Tally::of(&report.findings);
            }
            Err(e) => {
                eprintln!("error: cannot write the manifest: {e}");
                return ExitCode::from(EXIT_INPUT);
            }
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&report).expect("report serializes"));
    } else {
        print!("{}", render::audit(&report));
    }
    let code = if report.has_errors() { ExitCode::from(EXIT_FINDINGS) } else { ExitCode::SUCCESS };
    // The process ends here: tearing down maps of ~100k names would only cost time.
    std::mem::forget(report);
    std::mem::forget(ck);
    code
}

fn run_verify(path: &std::path::Path, model: Option<PathBuf>, json: bool) -> ExitCode {
    let m = match manifest::read(path) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_INPUT);
        }
    };
    let root = model.unwrap_or_else(|| PathBuf::from(&m.root));
    if !root.is_dir() {
        eprintln!("error: {}: not a directory", root.display());
        return ExitCode::from(EXIT_INPUT);
    }
    let v = manifest::verify(&m, &root);
    if json {
        println!("{}", serde_json::to_string_pretty(&v).expect("verification serializes"));
    } else {
        print!("{}", render::verification(&v));
    }
    if v.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_FINDINGS)
    }
}

// The audit builds many small strings and tables and drops them at once; mimalloc reuses freed
// pages instead of faulting fresh ones in (measured in the commit that added it).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
