//! Embeds every family rule file in `src/arch/families/` (found by listing the directory, so a new
//! family is one new file): writes `$OUT_DIR/families.rs` with `_blocks.json` first, then the
//! families by file name.

use std::path::Path;

fn main() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/arch/families");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("src/arch/families is readable")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    files.sort_by_key(|n| (n != "_blocks.json", n.clone()));
    assert_eq!(files.first().map(String::as_str), Some("_blocks.json"), "src/arch/families/_blocks.json is missing");
    let mut out = String::from("&[\n");
    for f in &files {
        let path = dir.join(f);
        println!("cargo:rerun-if-changed={}", path.display());
        out.push_str(&format!("    ({f:?}, include_str!({:?})),\n", path.display().to_string()));
    }
    out.push_str("]\n");
    let dest = Path::new(&std::env::var("OUT_DIR").expect("OUT_DIR")).join("families.rs");
    std::fs::write(dest, out).expect("write families.rs");
}
