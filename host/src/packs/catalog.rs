//! Where packs come from: the bundled ones (`schemas/packs/`, compiled into the binary, with the
//! bundled plugins' manifests) and pack directories on disk. A pack's plugins are built from
//! crates under `plugins/`; their components are read from the plugins directory
//! (`--plugins-dir`, where `scripts/plugins` builds them) or from the pack's own directory.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::LazyLock;

use serde_json::Value;

use super::manifest::{PackManifest, parse_manifest};
use crate::metadata::validation::Problem;

mod bundled {
    include!(concat!(env!("OUT_DIR"), "/bundled.rs"));
}

/// Where a pack was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    Bundled,
    Directory(PathBuf),
}

/// A pack read from its source: the manifest and the text of every file it lists.
#[derive(Debug, Clone)]
pub struct Pack {
    pub manifest: PackManifest,
    pub origin: Origin,
    /// File text by path relative to the pack's directory.
    files: BTreeMap<String, String>,
}

/// A plugin of a pack, resolved: its manifest and where its component is.
#[derive(Debug, Clone)]
pub struct PluginSource {
    /// Its place in the manifest's `plugins`.
    pub index: usize,
    pub crate_name: String,
    pub manifest: Value,
    pub component: PathBuf,
    pub config: Option<Value>,
}

impl Pack {
    /// A listed file as JSON, or the problem with it (named `<pack>/<file>`).
    pub fn json(&self, file: &str) -> Result<Value, Problem> {
        let path = format!("{}/{file}", self.manifest.id);
        let text = self
            .files
            .get(file)
            .ok_or_else(|| Problem::new(path.clone(), "the file is missing"))?;
        serde_json::from_str(text).map_err(|error| Problem::new(path, format!("not JSON: {error}")))
    }

    /// The listed files of one kind as JSON, with every problem.
    pub fn all_json(&self, files: &[String]) -> Result<Vec<(String, Value)>, Vec<Problem>> {
        let mut parsed = Vec::new();
        let mut problems = Vec::new();
        for file in files {
            match self.json(file) {
                Ok(value) => parsed.push((format!("{}/{file}", self.manifest.id), value)),
                Err(problem) => problems.push(problem),
            }
        }
        if problems.is_empty() {
            Ok(parsed)
        } else {
            Err(problems)
        }
    }

    /// The pack's plugins with their manifests and components: from the pack's directory
    /// (`plugins/<crate>/manifest.json`, `plugins/<crate>/component.wasm`) when it has them,
    /// otherwise the bundled plugin of that crate, whose component is in `plugins_dir`.
    pub fn plugins(&self, plugins_dir: &Path) -> (Vec<PluginSource>, Vec<Problem>) {
        let mut sources = Vec::new();
        let mut problems = Vec::new();
        for (index, plugin) in self.manifest.plugins.iter().enumerate() {
            let name = &plugin.crate_name;
            let path = format!("{}/pack.json#/plugins/{index}", self.manifest.id);
            let built = plugins_dir.join(format!("{}.wasm", name.replace('-', "_")));
            let own = match &self.origin {
                Origin::Directory(dir) => Some(dir.join("plugins").join(name)),
                Origin::Bundled => None,
            };
            let manifest = match own.as_ref().map(|dir| dir.join("manifest.json")) {
                Some(file) if file.is_file() => std::fs::read_to_string(&file)
                    .map_err(|error| format!("cannot read {}: {error}", file.display()))
                    .and_then(|text| {
                        serde_json::from_str(&text)
                            .map_err(|error| format!("{} is not JSON: {error}", file.display()))
                    }),
                _ => bundled_plugin_manifest(name).ok_or_else(|| {
                    format!(
                        "no plugin crate `{name}`: neither the pack's plugins/{name}/manifest.json nor a bundled plugin"
                    )
                }),
            };
            let component = match own.map(|dir| dir.join("component.wasm")) {
                Some(file) if file.is_file() => file,
                _ => built,
            };
            match manifest {
                Ok(manifest) if component.is_file() => sources.push(PluginSource {
                    index,
                    crate_name: name.clone(),
                    manifest,
                    component,
                    config: plugin.config.clone(),
                }),
                Ok(_) => problems.push(Problem::new(
                    path,
                    format!(
                        "the component of plugin `{name}` is missing at {}: build the bundled plugins with scripts/plugins, or point --plugins-dir (RAPPORT_PLUGINS_DIR) at them",
                        component.display()
                    ),
                )),
                Err(message) => problems.push(Problem::new(path, message)),
            }
        }
        (sources, problems)
    }
}

/// The manifest of a bundled plugin, by crate directory.
pub fn bundled_plugin_manifest(crate_name: &str) -> Option<Value> {
    bundled::PLUGIN_MANIFESTS
        .iter()
        .find(|(name, _)| *name == crate_name)
        .map(|(_, text)| serde_json::from_str(text).expect("bundled plugin manifests are JSON"))
}

/// The bundled packs that read, by id, and the problems of those that do not (a bundled pack
/// with a problem is left out; a unit test keeps the list empty).
type Bundled = (HashMap<String, Pack>, Vec<Problem>);

static BUNDLED: LazyLock<Bundled> = LazyLock::new(|| {
    let mut by_pack: BTreeMap<&str, BTreeMap<String, String>> = BTreeMap::new();
    for (path, text) in bundled::PACK_FILES {
        if let Some((pack, file)) = path.split_once('/') {
            by_pack
                .entry(pack)
                .or_default()
                .insert(file.to_owned(), (*text).to_owned());
        }
    }
    let mut packs = HashMap::new();
    let mut problems = Vec::new();
    for (directory, files) in by_pack {
        match from_files(directory, files, Origin::Bundled) {
            Ok(pack) => {
                packs.insert(pack.manifest.id.clone(), pack);
            }
            Err(found) => {
                for problem in &found {
                    tracing::error!(path = %problem.path, problem = %problem.message, "a bundled pack is broken and left out");
                }
                problems.extend(found);
            }
        }
    }
    (packs, problems)
});

/// The packs compiled into this binary, by id.
pub fn bundled() -> &'static HashMap<String, Pack> {
    &BUNDLED.0
}

/// The problems of bundled packs that were left out.
pub fn bundled_problems() -> &'static [Problem] {
    &BUNDLED.1
}

/// Reads a pack from a directory: `pack.json` and the files it lists.
pub fn load_dir(dir: &Path) -> Result<Pack, Vec<Problem>> {
    let name = dir
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_else(|| dir.display().to_string());
    let manifest_path = dir.join("pack.json");
    let text = read_text(&manifest_path).map_err(|message| {
        vec![Problem::new(
            format!("{name}/pack.json"),
            message.unwrap_or_else(|| format!("{} does not exist", manifest_path.display())),
        )]
    })?;
    let mut files = BTreeMap::from([("pack.json".to_owned(), text)]);
    let mut problems = Vec::new();
    if let Ok(value) = serde_json::from_str::<Value>(&files["pack.json"])
        && let Ok(manifest) = parse_manifest(&value)
    {
        for file in manifest.files() {
            let path = dir.join(file);
            match read_text(&path) {
                Ok(text) => {
                    files.insert(file.to_owned(), text);
                }
                // A missing file is reported with the others the manifest lists.
                Err(None) => {}
                Err(Some(message)) => {
                    problems.push(Problem::new(format!("{}/{file}", manifest.id), message))
                }
            }
        }
    }
    let pack = from_files(&name, files, Origin::Directory(dir.to_path_buf()));
    match pack {
        Ok(pack) if problems.is_empty() => Ok(pack),
        Ok(_) => Err(problems),
        Err(mut found) => {
            found.extend(problems);
            Err(found)
        }
    }
}

/// The largest file of a pack directory read.
const MAX_FILE: u64 = 16 << 20;

/// A pack file's text; `Err(None)` when it does not exist, `Err(Some(why))` when it cannot be
/// read or is too large.
fn read_text(path: &Path) -> Result<String, Option<String>> {
    let size = match std::fs::metadata(path) {
        Ok(metadata) => metadata.len(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Err(None),
        Err(error) => return Err(Some(format!("cannot read {}: {error}", path.display()))),
    };
    if size > MAX_FILE {
        return Err(Some(format!(
            "{} is {size} bytes; a pack file is at most {MAX_FILE} bytes",
            path.display()
        )));
    }
    std::fs::read_to_string(path)
        .map_err(|error| Some(format!("cannot read {}: {error}", path.display())))
}

fn from_files(
    directory: &str,
    files: BTreeMap<String, String>,
    origin: Origin,
) -> Result<Pack, Vec<Problem>> {
    let path = format!("{directory}/pack.json");
    let Some(text) = files.get("pack.json") else {
        return Err(vec![Problem::new(path, "the pack has no pack.json")]);
    };
    let value: Value = serde_json::from_str(text)
        .map_err(|error| vec![Problem::new(path.clone(), format!("not JSON: {error}"))])?;
    let manifest = parse_manifest(&value).map_err(|problems| {
        problems
            .into_iter()
            .map(|problem| Problem::new(format!("{path}#{}", problem.path), problem.message))
            .collect::<Vec<_>>()
    })?;
    let mut problems = Vec::new();
    if origin == Origin::Bundled && manifest.id != directory {
        problems.push(Problem::new(
            format!("{path}#/id"),
            format!(
                "a bundled pack's id must be its directory's name, `{directory}`, not `{}`",
                manifest.id
            ),
        ));
    }
    for file in manifest.files() {
        if !files.contains_key(file) {
            problems.push(Problem::new(
                format!("{}/{file}", manifest.id),
                "the manifest lists this file, and the pack has no such file",
            ));
        }
    }
    if problems.is_empty() {
        Ok(Pack {
            manifest,
            origin,
            files,
        })
    } else {
        Err(problems)
    }
}
