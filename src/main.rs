//! The `ckptkit` command: parse arguments, call the library, render, set the exit status.
//!
//! Exit status: 0 no error findings, 1 error findings, 2 usage error, 3 input missing or unreadable.

use ckptkit::{audit, manifest, render, Checkpoint};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(name = "ckptkit", version, about = "Pre-flight checks for Hugging Face checkpoints headed for vLLM / vLLM-Ascend (vLLM 0.33.0 rules)")]
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

const EXIT_FINDINGS: u8 = 1;
const EXIT_INPUT: u8 = 3;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Audit { model, json, checksum } => run_audit(&model, json, checksum),
        Cmd::Verify { manifest, model, json } => run_verify(&manifest, model, json),
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
