//! The library's layers point one way: the checkpoint on disk and the architecture data at the
//! bottom, the model spec above them, the commands that ask it questions (remap, plan, then audit),
//! and their renderings and generators on top. A module may use only modules of a lower layer (the
//! bottom layer's modules may use each other). Read from the source: every `crate::NAME` outside a
//! comment is an edge.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each top-level module's layer.
const LAYERS: &[(&str, u32)] = &[
    // The checkpoint on disk, the family and scheme data, and the utilities under everything.
    ("fsutil", 0),
    ("ui", 0),
    ("findings", 0),
    ("target", 0),
    ("error", 0),
    ("hub", 0),
    ("checkpoint", 0),
    ("quant", 0),
    ("arch", 0),
    // The model spec: family data + config + scheme → the parameters vLLM builds, per rank.
    ("model", 1),
    ("manifest", 1),
    // The commands that ask the spec questions.
    ("remap", 2),
    ("plan", 2),
    ("convert", 2),
    ("bench", 2),
    // Which family explains a checkpoint, and how it differs (asks remap); how two checkpoints differ.
    ("matching", 3),
    ("diff", 3),
    ("audit", 4),
    // What people read and what the tool writes for them.
    ("render", 5),
    ("stub", 5),
    ("cli", 6),
    ("fuzzing", 6),
];

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// module → the modules it uses (code only: comment lines are skipped).
fn edges() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for f in files {
        let rel = f.strip_prefix(&src).unwrap();
        let top = rel.components().next().unwrap().as_os_str().to_string_lossy().trim_end_matches(".rs").to_string();
        if top == "lib" || top == "main" {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
            let mut rest = line;
            while let Some(i) = rest.find("crate::") {
                rest = &rest[i + "crate::".len()..];
                let name: String = rest.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
                if !name.is_empty() && name != top {
                    out.entry(top.clone()).or_default().insert(name);
                }
            }
        }
    }
    out
}

#[test]
fn modules_use_only_lower_layers() {
    let layer: BTreeMap<&str, u32> = LAYERS.iter().copied().collect();
    let mut wrong = Vec::new();
    for (from, tos) in edges() {
        let Some(&lf) = layer.get(from.as_str()) else {
            wrong.push(format!("{from}: a module with no layer (add it to LAYERS)"));
            continue;
        };
        for to in tos {
            let Some(&lt) = layer.get(to.as_str()) else { continue };
            if lt > lf || (lt == lf && lf != 0) {
                wrong.push(format!("{from} (layer {lf}) uses {to} (layer {lt})"));
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layering:\n{}", wrong.join("\n"));
}

#[test]
fn the_model_spec_uses_no_command() {
    let e = edges();
    let model = e.get("model").cloned().unwrap_or_default();
    for cmd in ["plan", "remap", "audit", "render", "stub", "cli"] {
        assert!(!model.contains(cmd), "src/model uses crate::{cmd}: {model:?}");
    }
}
