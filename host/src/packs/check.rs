//! What is checked of a pack before its transaction: its files, one by one (the same validation
//! the API applies to each kind), its plugins (resolved, validated, compiled), and the pack
//! against the tenant (names another pack or the administrator owns, fields it would add that
//! exist, entities it extends that are not its dependencies'). Every problem is collected, with
//! `<pack>/<file>#<JSON path>`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use semver::VersionReq;
use serde_json::{Value, json};

use super::catalog::{Pack, PluginSource};
use super::manifest::PackManifest;
use super::merge::{name_of, without_version};
use super::{Contents, Packs};
use crate::metadata::validation::{self, Problem};
use crate::plugins::{PluginError, Prepared};
use crate::store::packs::StoredPack;
use crate::store::{Scoped, StoreError};

/// The most sample records one pack may bring.
pub const MAX_SAMPLE_RECORDS: usize = 100_000;

/// Everything read and checked from a pack before its transaction.
pub(super) struct Checked<'p> {
    pub pack: &'p Pack,
    /// Entity definitions, normalized (what the store holds), by file.
    pub entities: Vec<(String, Value)>,
    /// Fields added to other packs' entities (normalized), by entity.
    pub extends: BTreeMap<String, Vec<Value>>,
    pub workflows: Vec<(String, Value)>,
    pub plugins: Vec<(PluginSource, Prepared)>,
    pub roles: BTreeMap<String, Value>,
    pub views: Vec<(String, Value)>,
    pub sample: Vec<(String, Value)>,
    pub migrations: Vec<(String, Value)>,
}

impl Checked<'_> {
    pub fn id(&self) -> &str {
        &self.pack.manifest.id
    }

    pub fn entity_names(&self) -> impl Iterator<Item = String> + '_ {
        self.entities.iter().map(|(_, json)| name_of(json))
    }
}

/// What the tenant has that a pack operation must not trample on (read before the transaction,
/// and its packs read again inside it: see [`TenantState::same_packs`]).
pub(super) struct TenantState {
    pub stored: Vec<StoredPack>,
    /// Each entity's field names.
    pub entities: BTreeMap<String, BTreeSet<String>>,
    pub workflows: BTreeSet<String>,
    /// Each view with the pack that installed it.
    pub views: BTreeMap<String, Option<String>>,
}

impl TenantState {
    pub async fn read(scoped: &mut Scoped<'_>) -> Result<Self, StoreError> {
        let stored = scoped.packs().await?;
        let entities = scoped
            .list_entities()
            .await?
            .into_iter()
            .map(|entity| {
                let fields = entity.definition["fields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(name_of)
                    .collect();
                (name_of(&entity.definition), fields)
            })
            .collect();
        let workflows = scoped
            .workflows()
            .await?
            .into_iter()
            .map(|workflow| workflow.name)
            .collect();
        let views = scoped
            .views()
            .await?
            .into_iter()
            .map(|view| (view.name, view.pack_id))
            .collect();
        Ok(Self {
            stored,
            entities,
            workflows,
            views,
        })
    }

    /// Whether `other` has the same packs in the same versions and states.
    pub fn same_packs(&self, other: &[StoredPack]) -> bool {
        let signature = |packs: &[StoredPack]| -> Vec<(String, String, String)> {
            packs
                .iter()
                .map(|p| (p.pack_id.clone(), p.version.clone(), p.status.clone()))
                .collect()
        };
        signature(&self.stored) == signature(other)
    }

    pub fn pack(&self, id: &str, status: &str) -> Option<&StoredPack> {
        self.stored
            .iter()
            .find(|pack| pack.pack_id == id && pack.status == status)
    }

    /// Which pack owns each entity (its own or dropped by a later version), with its status.
    pub fn owners(&self) -> BTreeMap<String, (String, String)> {
        let mut owners = BTreeMap::new();
        for pack in &self.stored {
            if let Ok(contents) = super::contents_of(pack) {
                for entity in contents.entities.keys().chain(contents.dropped.keys()) {
                    owners.insert(entity.clone(), (pack.pack_id.clone(), pack.status.clone()));
                }
            }
        }
        owners
    }
}

impl Packs {
    /// Reads and checks everything of a pack that needs no transaction: every file parses and
    /// has its shape, entity and workflow definitions and views validate, plugins resolve,
    /// validate and compile (their components' bytes are stored by hash).
    pub(super) async fn check<'p>(&self, pack: &'p Pack) -> (Checked<'p>, Vec<Problem>) {
        let manifest = &pack.manifest;
        let mut problems = Vec::new();
        let mut take = |result: Result<Vec<(String, Value)>, Vec<Problem>>| match result {
            Ok(found) => found,
            Err(found) => {
                problems.extend(found);
                Vec::new()
            }
        };
        let mut entities = take(pack.all_json(&manifest.entities));
        let extend_files = take(pack.all_json(&manifest.extends));
        let workflows = take(pack.all_json(&manifest.workflows));
        let role_files = take(pack.all_json(&manifest.roles));
        let view_files = take(pack.all_json(&manifest.views));
        let sample = take(pack.all_json(&manifest.sample));
        let migrations = take(pack.all_json(&manifest.migrations));

        let mut names = BTreeSet::new();
        for (file, json) in &mut entities {
            match validation::parse_definition(json) {
                Ok(definition) => {
                    if !names.insert(definition.name.to_string()) {
                        problems.push(Problem::new(
                            format!("{file}#/name"),
                            format!("two files define entity `{}`", definition.name),
                        ));
                    }
                    // Normalized, so that what an upgrade compares is what the store holds.
                    *json = without_version(crate::metadata::definition::to_json(&definition));
                }
                Err(found) => problems.extend(prefixed(file, found)),
            }
        }
        let (extends, found) = extensions(&extend_files, &names);
        problems.extend(found);
        for (file, json) in &workflows {
            if let Err(found) = crate::workflows::definition::parse(json) {
                problems.extend(prefixed(file, found));
            }
        }
        let mut roles = BTreeMap::new();
        for (file, json) in role_files {
            match crate::auth::RoleDefinition::parse(&json) {
                Ok(role) if role.name == crate::auth::role::ADMINISTRATOR => {
                    problems.push(Problem::new(
                        format!("{file}#/name"),
                        "`administrator` is built in: a pack cannot ship it",
                    ));
                }
                Ok(role) if role.admin => problems.push(Problem::new(
                    format!("{file}#/admin"),
                    "a pack's role cannot be an administrator's: a tenant's administrators are its own",
                )),
                Ok(role) => {
                    if roles.insert(role.name.clone(), role.to_json()).is_some() {
                        problems.push(Problem::new(
                            format!("{file}#/name"),
                            format!("two files define role `{}`", role.name),
                        ));
                    }
                }
                Err(found) => problems.extend(prefixed(&file, found)),
            }
        }
        let mut views = Vec::new();
        for (file, json) in view_files {
            match crate::analytics::parse_any(&json) {
                Ok(_) => views.push((file, json)),
                Err(found) => problems.extend(prefixed(&file, found)),
            }
        }
        let mut records = 0;
        for (file, json) in &sample {
            let entity_ok = json.get("entity").and_then(Value::as_str).is_some();
            match json.get("records").and_then(Value::as_array) {
                Some(list) if entity_ok => records += list.len(),
                _ => problems.push(Problem::new(
                    format!("{file}#/"),
                    "sample data is `{\"entity\": name, \"records\": [record bodies]}`",
                )),
            }
        }
        if records > MAX_SAMPLE_RECORDS {
            problems.push(Problem::new(
                format!("{}/pack.json#/sample", manifest.id),
                format!(
                    "{records} sample records; a pack brings at most {MAX_SAMPLE_RECORDS} (import more through the records API)"
                ),
            ));
        }
        for (file, json) in &migrations {
            problems.extend(check_migration(file, json));
        }
        let (plugins, found) = self.check_plugins(pack).await;
        problems.extend(found);
        let checked = Checked {
            pack,
            entities,
            extends,
            workflows,
            plugins,
            roles,
            views,
            sample,
            migrations,
        };
        (checked, problems)
    }

    /// Resolves, validates and compiles a pack's plugins; checks the configurations it gives.
    async fn check_plugins(&self, pack: &Pack) -> (Vec<(PluginSource, Prepared)>, Vec<Problem>) {
        let (sources, mut problems) = pack.plugins(&self.plugins_dir);
        let mut plugins = Vec::new();
        for source in sources {
            let path = format!("{}/pack.json#/plugins/{}", pack.manifest.id, source.index);
            let bytes = match read_limited(&source.component) {
                Ok(bytes) => bytes,
                Err(message) => {
                    problems.push(Problem::new(path, message));
                    continue;
                }
            };
            match self.plugins.prepare(&source.manifest, &bytes).await {
                Ok(prepared) => {
                    if let Some(config) = &source.config
                        && let Err(found) = prepared.manifest.check_config(config)
                    {
                        problems.extend(found.into_iter().map(|problem| {
                            Problem::new(format!("{path}/config{}", problem.path), problem.message)
                        }));
                    }
                    plugins.push((source, prepared));
                }
                Err(PluginError::InvalidManifest(found)) => {
                    problems.extend(found.into_iter().map(|problem| {
                        Problem::new(
                            format!(
                                "{path} (plugin `{}` manifest{})",
                                source.crate_name, problem.path
                            ),
                            problem.message,
                        )
                    }));
                }
                Err(error) => problems.push(Problem::new(
                    path,
                    format!("plugin `{}`: {error}", source.crate_name),
                )),
            }
        }
        (plugins, problems)
    }
}

/// A component's bytes, refused above the largest component accepted.
fn read_limited(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let size = std::fs::metadata(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?
        .len();
    if size > crate::plugins::MAX_COMPONENT as u64 {
        return Err(format!(
            "{} is {size} bytes; a component is at most {} bytes",
            path.display(),
            crate::plugins::MAX_COMPONENT
        ));
    }
    std::fs::read(path).map_err(|error| format!("cannot read {}: {error}", path.display()))
}

/// The fields each extension file adds, checked as an entity of their own would be.
fn extensions(
    files: &[(String, Value)],
    own: &BTreeSet<String>,
) -> (BTreeMap<String, Vec<Value>>, Vec<Problem>) {
    let mut extends: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut problems = Vec::new();
    for (file, json) in files {
        let Some(entity) = json.get("entity").and_then(Value::as_str) else {
            problems.push(Problem::new(
                format!("{file}#/entity"),
                "an extension names the `entity` it adds fields to",
            ));
            continue;
        };
        if own.contains(entity) {
            problems.push(Problem::new(
                format!("{file}#/entity"),
                format!("`{entity}` is this pack's own entity: define its fields there"),
            ));
            continue;
        }
        let extra: Vec<&str> = json
            .as_object()
            .into_iter()
            .flat_map(|object| object.keys())
            .map(String::as_str)
            .filter(|key| !matches!(*key, "entity" | "fields"))
            .collect();
        if !extra.is_empty() {
            problems.push(Problem::new(
                format!("{file}#/"),
                format!(
                    "an extension has `entity` and `fields` only, not {}",
                    extra.join(", ")
                ),
            ));
        }
        let fields = json.get("fields").cloned().unwrap_or(Value::Null);
        match validation::parse_definition(&json!({"name": entity, "fields": fields})) {
            Ok(definition) => {
                let target = extends.entry(entity.to_owned()).or_default();
                for field in &definition.fields {
                    if target.iter().any(|f| name_of(f) == field.name.as_str()) {
                        problems.push(Problem::new(
                            format!("{file}#/fields"),
                            format!("two extensions add field `{}` to `{entity}`", field.name),
                        ));
                    }
                    target.push(serde_json::to_value(field).expect("field definitions serialize"));
                }
            }
            Err(found) => problems.extend(prefixed(file, found)),
        }
    }
    (extends, problems)
}

/// Names a pack would take that the tenant already uses for something that is not the pack's:
/// entities (an entity belongs to one pack; one kept by this pack's removal is taken back),
/// fields it adds to other entities, workflows and views; and two packs of one install
/// defining the same entity. `own` is what the pack has now (an upgrade).
pub(super) fn clashes(
    checked: &[Checked<'_>],
    state: &TenantState,
    own: Option<&Contents>,
) -> Vec<Problem> {
    let owners = state.owners();
    let mut problems = Vec::new();
    let mut defined: BTreeMap<String, &str> = BTreeMap::new();
    for pack in checked {
        let id = pack.id();
        let removed = state
            .pack(id, "removed")
            .and_then(|pack| super::contents_of(pack).ok());
        let mine = own.or(removed.as_ref());
        for (file, json) in &pack.entities {
            let name = name_of(json);
            if let Some(first) = defined.insert(name.clone(), id) {
                problems.push(Problem::new(
                    format!("{file}#/name"),
                    format!("packs `{first}` and `{id}` both define entity `{name}`"),
                ));
                continue;
            }
            let Some(existing) = state.entities.get(&name) else {
                continue;
            };
            match owners.get(&name) {
                Some((owner, _)) if owner == id => {
                    // Its own entity: a field it would add that the tenant added meanwhile is
                    // the tenant's, not the pack's to retype.
                    let before = mine.and_then(|contents| {
                        contents
                            .entities
                            .get(&name)
                            .or(contents.dropped.get(&name))
                    });
                    let pack_fields: BTreeSet<String> = before
                        .and_then(|definition| definition["fields"].as_array())
                        .into_iter()
                        .flatten()
                        .map(name_of)
                        .collect();
                    for field in json["fields"].as_array().into_iter().flatten().map(name_of) {
                        if existing.contains(&field) && !pack_fields.contains(&field) {
                            problems.push(Problem::new(
                                format!("{file}#/fields"),
                                format!(
                                    "entity `{name}` already has a field `{field}` that is not `{id}`'s: rename or remove it first"
                                ),
                            ));
                        }
                    }
                }
                Some((owner, status)) if status == "removed" => problems.push(Problem::new(
                    format!("{file}#/name"),
                    format!(
                        "entity `{name}` exists in the tenant, kept from pack `{owner}` when it was removed: install `{owner}` again, or delete the entity first"
                    ),
                )),
                Some((owner, _)) => problems.push(Problem::new(
                    format!("{file}#/name"),
                    format!(
                        "entity `{name}` clashes with installed pack `{owner}`, which defines it"
                    ),
                )),
                None => problems.push(Problem::new(
                    format!("{file}#/name"),
                    format!(
                        "entity `{name}` already exists in the tenant (not from a pack): rename or delete it first"
                    ),
                )),
            }
        }
        for (entity, fields) in &pack.extends {
            let Some(existing) = state.entities.get(entity) else {
                continue;
            };
            let theirs: BTreeSet<String> = mine
                .into_iter()
                .flat_map(|contents| {
                    contents
                        .extends
                        .get(entity)
                        .into_iter()
                        .chain(contents.dropped_extends.get(entity))
                })
                .flatten()
                .map(name_of)
                .collect();
            for field in fields.iter().map(name_of) {
                if existing.contains(&field) && !theirs.contains(&field) {
                    problems.push(Problem::new(
                        format!("{id}/pack.json#/extends"),
                        format!(
                            "entity `{entity}` already has a field `{field}` that is not `{id}`'s"
                        ),
                    ));
                }
            }
        }
        for (file, json) in &pack.workflows {
            let name = name_of(json);
            let is_mine = own.is_some_and(|own| own.workflows.contains_key(&name));
            if state.workflows.contains(&name) && !is_mine {
                problems.push(Problem::new(
                    format!("{file}#/name"),
                    format!(
                        "workflow `{name}` already exists in the tenant, not from `{id}`: rename or delete it first"
                    ),
                ));
            }
        }
        for (file, json) in &pack.views {
            let name = name_of(json);
            match state.views.get(&name) {
                Some(Some(owner)) if owner == id => {}
                Some(owner) => problems.push(Problem::new(
                    format!("{file}#/name"),
                    format!(
                        "view `{name}` already exists in the tenant{}: rename or delete it first",
                        owner
                            .as_ref()
                            .map(|owner| format!(", from pack `{owner}`"))
                            .unwrap_or_default()
                    ),
                )),
                None => {}
            }
        }
    }
    problems
}

/// Each entity a pack adds fields to must be an entity of a pack it depends on (directly or
/// through others), installed or installed before it in the same operation.
pub(super) fn extension_targets(
    checked: &[Checked<'_>],
    state: &TenantState,
    manifests: &HashMap<String, PackManifest>,
) -> Vec<Problem> {
    let mut owners: BTreeMap<String, String> = state
        .owners()
        .into_iter()
        .filter(|(_, (_, status))| status == "installed")
        .map(|(entity, (pack, _))| (entity, pack))
        .collect();
    let mut problems = Vec::new();
    for pack in checked {
        let id = pack.id();
        for entity in pack.extends.keys() {
            let owner = owners.get(entity);
            let ok = owner.is_some_and(|owner| depends_on(id, owner, manifests));
            if !ok {
                problems.push(Problem::new(
                    format!("{id}/pack.json#/extends"),
                    match owner {
                        Some(owner) => format!(
                            "`{id}` adds fields to `{entity}` of pack `{owner}`, which `{id}` does not depend on"
                        ),
                        None => format!(
                            "`{id}` adds fields to `{entity}`, which is not an entity of a pack it depends on"
                        ),
                    },
                ));
            }
        }
        for entity in pack.entity_names() {
            owners.insert(entity, id.to_owned());
        }
    }
    problems
}

/// Whether `pack` depends on `other`, directly or through other packs.
fn depends_on(pack: &str, other: &str, manifests: &HashMap<String, PackManifest>) -> bool {
    let mut seen = BTreeSet::new();
    let mut queue = vec![pack.to_owned()];
    while let Some(next) = queue.pop() {
        let Some(manifest) = manifests.get(&next) else {
            continue;
        };
        for dependency in manifest.depends.keys() {
            if dependency == other {
                return true;
            }
            if seen.insert(dependency.clone()) {
                queue.push(dependency.clone());
            }
        }
    }
    false
}

pub(super) fn prefixed(file: &str, problems: Vec<Problem>) -> Vec<Problem> {
    problems
        .into_iter()
        .map(|problem| Problem::new(format!("{file}#{}", problem.path), problem.message))
        .collect()
}

fn check_migration(file: &str, json: &Value) -> Vec<Problem> {
    let mut problems = Vec::new();
    match json.get("from").and_then(Value::as_str) {
        Some(range) if VersionReq::parse(range).is_ok() => {}
        _ => problems.push(Problem::new(
            format!("{file}#/from"),
            "`from` is the version range of installed versions the migration applies to (`<2.0.0`)",
        )),
    }
    match json.get("updates").and_then(Value::as_array) {
        Some(updates) => {
            for (index, update) in updates.iter().enumerate() {
                let ok = update.get("entity").and_then(Value::as_str).is_some()
                    && update.get("filter").is_none_or(Value::is_string)
                    && update.get("set").and_then(Value::as_object).is_some();
                if !ok {
                    problems.push(Problem::new(
                        format!("{file}#/updates/{index}"),
                        "an update is `{\"entity\": name, \"filter\": filter, \"set\": {field: value}}`",
                    ));
                }
            }
        }
        None => problems.push(Problem::new(
            format!("{file}#/updates"),
            "`updates` lists the record updates to run",
        )),
    }
    problems
}
