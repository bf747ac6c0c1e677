//! Build script: rebuilds the crate when a migration is added or changed (`sqlx::migrate!` embeds
//! the files it found at compile time, and a new file alone would not trigger a rebuild), and
//! embeds the bundled packs (`schemas/packs/`) and the bundled plugins' manifests
//! (`plugins/*/manifest.json`), so that every server has them without extra files.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-changed=migrations");
    let root =
        PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets it")).join("..");
    let packs = root.join("schemas/packs");
    let plugins = root.join("plugins");
    println!("cargo:rerun-if-changed={}", packs.display());

    let mut files = Vec::new();
    if packs.is_dir() {
        walk(&packs, &mut files);
    }
    files.sort();
    let mut out =
        String::from("/// Every file of the bundled packs, by path under `schemas/packs/`.\n");
    out.push_str("pub const PACK_FILES: &[(&str, &str)] = &[\n");
    for file in &files {
        let relative = file.strip_prefix(&packs).expect("under packs");
        let relative = relative.to_string_lossy().replace('\\', "/");
        writeln!(
            out,
            "    ({relative:?}, include_str!({:?})),",
            file.display().to_string()
        )
        .unwrap();
        println!("cargo:rerun-if-changed={}", file.display());
    }
    out.push_str(
        "];\n\n/// The manifests of the bundled plugins, by crate directory under `plugins/`.\n",
    );
    out.push_str("pub const PLUGIN_MANIFESTS: &[(&str, &str)] = &[\n");
    let mut manifests: Vec<(String, PathBuf)> = std::fs::read_dir(&plugins)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|dir| dir.join("manifest.json").is_file())
                .map(|dir| {
                    let name = dir
                        .file_name()
                        .unwrap_or_default()
                        .to_string_lossy()
                        .into_owned();
                    (name, dir.join("manifest.json"))
                })
                .collect()
        })
        .unwrap_or_default();
    manifests.sort();
    for (name, path) in &manifests {
        writeln!(
            out,
            "    ({name:?}, include_str!({:?})),",
            path.display().to_string()
        )
        .unwrap();
        println!("cargo:rerun-if-changed={}", path.display());
    }
    out.push_str("];\n");
    let target = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets it")).join("bundled.rs");
    std::fs::write(target, out).expect("OUT_DIR is writable");
}

fn walk(dir: &Path, files: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if path.is_dir() {
            walk(&path, files);
        } else if path.extension().is_some_and(|ext| ext == "json") {
            files.push(path);
        }
    }
}
