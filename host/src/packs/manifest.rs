//! The pack manifest (`pack.json`, `schemas/pack.schema.json`): its typed form, its checks,
//! and the order a pack and the packs it depends on install in (dependencies first, version
//! ranges checked).

use std::collections::{BTreeMap, HashMap};
use std::sync::LazyLock;

use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::metadata::validation::{self, Problem};

/// The JSON Schema of pack manifests, shipped in `schemas/`.
pub const PACK_SCHEMA: &str = include_str!("../../../schemas/pack.schema.json");

static PACK_VALIDATOR: LazyLock<jsonschema::Validator> =
    LazyLock::new(|| validation::shipped_schema("pack.schema.json", PACK_SCHEMA));

/// A pack manifest (`pack.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackManifest {
    pub id: String,
    pub version: Version,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub description: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub depends: BTreeMap<String, VersionReq>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub entities: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extends: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workflows: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub plugins: Vec<PackPlugin>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub views: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sample: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub migrations: Vec<String>,
}

/// A plugin a pack installs: the crate it is built from, and its configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackPlugin {
    #[serde(rename = "crate")]
    pub crate_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<Value>,
}

impl PackManifest {
    /// Every file the manifest lists, for reading the pack's directory.
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.entities
            .iter()
            .chain(&self.extends)
            .chain(&self.workflows)
            .chain(&self.roles)
            .chain(&self.views)
            .chain(&self.sample)
            .chain(&self.migrations)
            .map(String::as_str)
    }
}

/// Parses a manifest: the JSON Schema, then the typed form (the versions and version ranges),
/// every problem with its JSON path.
pub fn parse_manifest(json: &Value) -> Result<PackManifest, Vec<Problem>> {
    let mut problems = validation::schema_problems(&PACK_VALIDATOR, json);
    if let Some(depends) = json.get("depends").and_then(Value::as_object) {
        for (id, range) in depends {
            if let Some(text) = range.as_str()
                && let Err(error) = VersionReq::parse(text)
            {
                problems.push(Problem::new(
                    format!("/depends/{id}"),
                    format!("`{text}` is not a version range: {error}"),
                ));
            }
        }
    }
    if let (Some(id), Some(depends)) = (
        json.get("id").and_then(Value::as_str),
        json.get("depends").and_then(Value::as_object),
    ) && depends.contains_key(id)
    {
        problems.push(Problem::new("/depends", "a pack cannot depend on itself"));
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    serde_json::from_value(json.clone()).map_err(|error| vec![Problem::new("/", error.to_string())])
}

/// The packs to install, dependencies first, for installing `target` into a tenant that has
/// `installed` (id → version): every dependency must be available (`available`, by id) or
/// installed, in a version its range accepts; a cycle is refused. Installed packs are not
/// installed again. Every problem is reported, each naming the packs it is about.
pub fn install_order<'a>(
    target: &str,
    available: &'a HashMap<String, PackManifest>,
    installed: &HashMap<String, Version>,
) -> Result<Vec<&'a PackManifest>, Vec<String>> {
    let mut order = Vec::new();
    let mut problems = Vec::new();
    let mut state: HashMap<&str, bool> = HashMap::new(); // false: visiting, true: done
    let mut path = Vec::new();
    visit(
        target,
        None,
        available,
        installed,
        &mut state,
        &mut path,
        &mut order,
        &mut problems,
    );
    if problems.is_empty() {
        Ok(order)
    } else {
        Err(problems)
    }
}

#[allow(clippy::too_many_arguments)]
fn visit<'a>(
    id: &str,
    required: Option<(&str, &VersionReq)>,
    available: &'a HashMap<String, PackManifest>,
    installed: &HashMap<String, Version>,
    state: &mut HashMap<&'a str, bool>,
    path: &mut Vec<String>,
    order: &mut Vec<&'a PackManifest>,
    problems: &mut Vec<String>,
) {
    if let Some(version) = installed.get(id) {
        if let Some((by, range)) = required
            && !range.matches(version)
        {
            problems.push(format!(
                "`{by}` needs `{id}` {range}, and version {version} is installed: upgrade `{id}` first"
            ));
        }
        return;
    }
    let Some(manifest) = available.get(id) else {
        problems.push(match required {
            Some((by, range)) => format!("`{by}` needs `{id}` {range}, which is not available"),
            None => format!("pack `{id}` is not available"),
        });
        return;
    };
    if let Some((by, range)) = required
        && !range.matches(&manifest.version)
    {
        problems.push(format!(
            "`{by}` needs `{id}` {range}, and the available version is {}",
            manifest.version
        ));
        return;
    }
    match state.get(manifest.id.as_str()) {
        Some(true) => return,
        Some(false) => {
            problems.push(format!(
                "packs depend on each other in a cycle: {} → {id}",
                path.join(" → ")
            ));
            return;
        }
        None => {}
    }
    state.insert(&manifest.id, false);
    path.push(id.to_owned());
    for (dependency, range) in &manifest.depends {
        visit(
            dependency,
            Some((id, range)),
            available,
            installed,
            state,
            path,
            order,
            problems,
        );
    }
    path.pop();
    state.insert(&manifest.id, true);
    order.push(manifest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn manifest(id: &str, version: &str, depends: Value) -> PackManifest {
        parse_manifest(
            &json!({"id": id, "version": version, "description": "test", "depends": depends}),
        )
        .unwrap()
    }

    fn available(packs: &[PackManifest]) -> HashMap<String, PackManifest> {
        packs.iter().map(|p| (p.id.clone(), p.clone())).collect()
    }

    fn ids(order: &[&PackManifest]) -> Vec<String> {
        order.iter().map(|p| p.id.clone()).collect()
    }

    #[test]
    fn dependencies_install_first_and_installed_ones_are_skipped() {
        let packs = available(&[
            manifest("core", "1.2.0", json!({})),
            manifest("events", "0.3.0", json!({"core": "^1.0"})),
            manifest(
                "exhibition",
                "1.0.0",
                json!({"core": "^1.1", "events": ">=0.3, <1"}),
            ),
        ]);
        let order = install_order("exhibition", &packs, &HashMap::new()).unwrap();
        assert_eq!(ids(&order), ["core", "events", "exhibition"]);
        let installed = HashMap::from([("core".to_owned(), Version::new(1, 1, 5))]);
        let order = install_order("exhibition", &packs, &installed).unwrap();
        assert_eq!(ids(&order), ["events", "exhibition"]);
    }

    #[test]
    fn missing_and_mismatched_dependencies_are_each_reported() {
        let packs = available(&[
            manifest("core", "2.0.0", json!({})),
            manifest("exhibition", "1.0.0", json!({"core": "^1", "maps": "^1"})),
        ]);
        let problems = install_order("exhibition", &packs, &HashMap::new()).unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0]
                .contains("`exhibition` needs `core` ^1, and the available version is 2.0.0"),
            "{problems:?}"
        );
        assert!(
            problems[1].contains("needs `maps` ^1, which is not available"),
            "{problems:?}"
        );
        let installed = HashMap::from([("core".to_owned(), Version::new(0, 9, 0))]);
        let problems = install_order("exhibition", &packs, &installed).unwrap_err();
        assert!(
            problems[0].contains("version 0.9.0 is installed: upgrade `core` first"),
            "{problems:?}"
        );
        let problems = install_order("nothing", &packs, &HashMap::new()).unwrap_err();
        assert_eq!(problems, ["pack `nothing` is not available"]);
    }

    #[test]
    fn a_cycle_is_refused_with_its_path() {
        let packs = available(&[
            manifest("a", "1.0.0", json!({"b": "*"})),
            manifest("b", "1.0.0", json!({"c": "*"})),
            manifest("c", "1.0.0", json!({"a": "*"})),
        ]);
        let problems = install_order("a", &packs, &HashMap::new()).unwrap_err();
        assert_eq!(
            problems,
            ["packs depend on each other in a cycle: a → b → c → a"]
        );
    }

    #[test]
    fn malformed_manifests_are_refused_with_the_path_of_each_problem() {
        let problems = parse_manifest(&json!({
            "id": "Bad Id", "version": "1.0", "description": "x",
            "depends": {"core": "not a range", "bad": "^1"},
            "entities": ["../etc/passwd.json", "ok.json"],
            "colour": "red"
        }))
        .unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        for expected in ["/id", "/version", "/depends/core", "/entities/0", "/"] {
            assert!(
                paths.contains(&expected),
                "{expected} missing in {problems:?}"
            );
        }
        let problems = parse_manifest(&json!({
            "id": "core", "version": "1.0.0", "description": "x", "depends": {"core": "^1"}
        }))
        .unwrap_err();
        assert!(
            problems.iter().any(|p| p.message.contains("itself")),
            "{problems:?}"
        );
    }

    #[test]
    fn a_manifest_lists_its_files() {
        let parsed = parse_manifest(&json!({
            "id": "exhibition", "version": "1.0.0", "description": "Exhibitions",
            "entities": ["entities/booth.json"], "workflows": ["workflows/invite.json"],
            "sample": ["sample/booths.json"],
            "plugins": [{"crate": "booth-guard", "config": {"strict": true}}]
        }))
        .unwrap();
        assert_eq!(
            parsed.files().collect::<Vec<_>>(),
            [
                "entities/booth.json",
                "workflows/invite.json",
                "sample/booths.json"
            ]
        );
        assert_eq!(parsed.plugins[0].crate_name, "booth-guard");
        assert_eq!(parsed.version, Version::new(1, 0, 0));
    }
}
