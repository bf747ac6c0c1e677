//! Packs: versioned bundles that give a tenant a whole CRM or an industry's part of one —
//! entity definitions, fields added to other packs' entities, plugins, workflows, roles, saved
//! views and sample data (`schemas/pack.schema.json`).
//!
//! - [`manifest`]: the manifest's typed form and the install order of dependencies;
//! - [`catalog`]: the bundled packs and packs read from directories;
//! - [`Packs`]: install (dependencies first, one transaction), upgrade (a diff first, a
//!   three-way merge of definitions, data migrations), remove (data kept unless purged).
//!
//! Every change of one operation happens in one transaction: all of it or none. What a pack
//! installed is recorded with it (`installed_packs.contents`), so that an upgrade knows which
//! fields are the pack's and which an administrator added, and a removal what to undo.

pub mod catalog;
pub mod manifest;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use semver::{Version, VersionReq};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::auth::Principal;
use crate::metadata::evolution::Change;
use crate::metadata::validation::{self, Problem};
use crate::metadata::{Applied, FieldCheck, Metadata, MetadataError};
use crate::plugins::{PluginError, Plugins, Prepared};
use crate::records::hooks::WriteContext;
use crate::records::{RecordError, Records};
use crate::store::packs::StoredPack;
use crate::store::{Store, StoreError, Tx};
use crate::workflows::template::{Scope, Template};
use crate::workflows::{WorkflowError, Workflows};
use catalog::{Pack, PluginSource};
use manifest::{PackManifest, install_order};

/// Sample records are written in batches of this many.
const SAMPLE_BATCH: usize = 500;

#[derive(Debug, thiserror::Error)]
pub enum PackError {
    #[error("only administrators manage packs")]
    Forbidden,
    #[error("no pack `{0}`")]
    NotFound(String),
    #[error("pack `{0}` is not installed")]
    NotInstalled(String),
    /// Every problem found; nothing was changed.
    #[error("the pack was refused; nothing was changed")]
    Refused(Vec<Problem>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn refused(path: impl Into<String>, message: impl Into<String>) -> PackError {
    PackError::Refused(vec![Problem::new(path, message)])
}

/// Where the pack of an install or upgrade comes from.
#[derive(Debug, Clone)]
pub enum Source {
    /// A bundled pack, by id.
    Bundled(String),
    /// A pack directory on the server's disk (the CLI's `rapport pack install <dir>`).
    Directory(PathBuf),
}

/// What a pack installed in a tenant, recorded with it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Contents {
    /// The pack's entity definitions (normalized), by name.
    #[serde(default)]
    pub entities: BTreeMap<String, Value>,
    /// Fields added to other entities (normalized), by entity.
    #[serde(default)]
    pub extends: BTreeMap<String, Vec<Value>>,
    #[serde(default)]
    pub workflows: BTreeMap<String, Value>,
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginEntry>,
    #[serde(default)]
    pub roles: BTreeMap<String, Value>,
    #[serde(default)]
    pub views: BTreeMap<String, Value>,
}

/// A plugin a pack installed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginEntry {
    #[serde(rename = "crate")]
    pub crate_name: String,
    pub version: String,
    /// What it may do, as `read contact`, `outbox email`…
    pub capabilities: Vec<String>,
}

/// What an operation did (or, in a dry run, would do), pack by pack.
#[derive(Debug, Serialize)]
pub struct Report {
    pub action: &'static str,
    pub pack: String,
    pub dry_run: bool,
    pub packs: Vec<PackChanges>,
}

/// The changes to one pack's part of the tenant.
#[derive(Debug, Default, Serialize)]
pub struct PackChanges {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_version: Option<String>,
    pub entities: Vec<EntityChange>,
    pub workflows: Vec<ItemChange>,
    pub plugins: Vec<PluginChange>,
    pub views: Vec<ItemChange>,
    pub roles: Vec<ItemChange>,
    pub sample_records: usize,
    pub migrated_records: usize,
}

/// What happened to one entity: `added`, `extended` (fields added to another pack's entity),
/// `changed`, `unchanged`, `adopted` (kept from an earlier removal, taken back), `dropped` (no
/// longer in the pack: kept with its records), `kept` (removal without purge), `deleted` (purge).
#[derive(Debug, Serialize)]
pub struct EntityChange {
    pub entity: String,
    pub change: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields_added: Vec<String>,
    /// Fields the pack no longer has: deactivated, their data kept.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub fields_removed: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<Change>,
    /// Fields whose values are converted, with how many records hold one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub conversions: Vec<FieldCheck>,
}

#[derive(Debug, Serialize)]
pub struct ItemChange {
    pub name: String,
    /// `added`, `updated`, `unchanged`, `removed`.
    pub change: &'static str,
}

#[derive(Debug, Serialize)]
pub struct PluginChange {
    pub id: String,
    /// `added`, `upgraded`, `unchanged`, `removed`, `kept` (another installed pack uses it).
    pub change: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to_version: Option<String>,
    pub capabilities_added: Vec<String>,
    pub capabilities_removed: Vec<String>,
}

/// A pack as the API lists it: what is available and what the tenant has.
#[derive(Debug, Serialize)]
pub struct PackSummary {
    pub id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub description: String,
    /// The version this server offers (bundled), if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub available_version: Option<String>,
    /// The version the tenant has, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installed_version: Option<String>,
    /// `available`, `installed`, or `removed` (its data kept).
    pub status: &'static str,
    pub depends: BTreeMap<String, String>,
}

/// One pack in full: its manifest, what it brings, the capabilities its plugins request, and
/// what the tenant has of it.
#[derive(Debug, Serialize)]
pub struct PackDetail {
    #[serde(flatten)]
    pub summary: PackSummary,
    pub entities: Vec<String>,
    pub extends: BTreeMap<String, Vec<String>>,
    pub workflows: Vec<String>,
    pub plugins: Vec<PluginEntry>,
    pub roles: Vec<String>,
    pub views: Vec<String>,
    pub sample_files: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub installed: Option<Contents>,
}

/// Everything read and checked from a pack before its transaction.
struct Checked<'p> {
    pack: &'p Pack,
    entities: Vec<(String, Value)>,
    extends: BTreeMap<String, Vec<Value>>,
    workflows: Vec<(String, Value)>,
    plugins: Vec<(PluginSource, Prepared)>,
    roles: BTreeMap<String, Value>,
    views: Vec<(String, Value)>,
    sample: Vec<(String, Value)>,
    migrations: Vec<(String, Value)>,
}

impl Checked<'_> {
    fn contents(&self) -> Contents {
        Contents {
            entities: self
                .entities
                .iter()
                .map(|(_, json)| (entity_name(json), json.clone()))
                .collect(),
            extends: self.extends.clone(),
            workflows: self
                .workflows
                .iter()
                .map(|(_, json)| (name_of(json), json.clone()))
                .collect(),
            plugins: self
                .plugins
                .iter()
                .map(|(source, prepared)| {
                    (
                        prepared.manifest.id.clone(),
                        PluginEntry {
                            crate_name: source.crate_name.clone(),
                            version: prepared.manifest.version.clone(),
                            capabilities: prepared
                                .manifest
                                .capabilities
                                .missing_from(&Default::default()),
                        },
                    )
                })
                .collect(),
            roles: self.roles.clone(),
            views: self
                .views
                .iter()
                .map(|(_, json)| (name_of(json), json.clone()))
                .collect(),
        }
    }
}

fn name_of(json: &Value) -> String {
    json.get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn entity_name(json: &Value) -> String {
    name_of(json)
}

/// The packs of every tenant.
#[derive(Debug, Clone)]
pub struct Packs {
    store: Store,
    metadata: Arc<Metadata>,
    records: Records,
    plugins: Plugins,
    workflows: Workflows,
    /// Where the bundled plugins' components are (`scripts/plugins` builds them there).
    pub plugins_dir: PathBuf,
}

/// The plugins directory when none is configured: where `scripts/plugins` builds them.
pub fn default_plugins_dir() -> PathBuf {
    std::env::var_os("RAPPORT_PLUGINS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/wasm32-wasip2/release"))
}

impl Packs {
    pub fn new(
        store: Store,
        metadata: Arc<Metadata>,
        records: Records,
        plugins: Plugins,
        workflows: Workflows,
    ) -> Self {
        Self {
            store,
            metadata,
            records,
            plugins,
            workflows,
            plugins_dir: default_plugins_dir(),
        }
    }

    fn bundled() -> Result<&'static HashMap<String, Pack>, PackError> {
        Ok(catalog::bundled())
    }

    fn load(&self, source: &Source) -> Result<Pack, PackError> {
        match source {
            Source::Bundled(id) => Self::bundled()?
                .get(id)
                .cloned()
                .ok_or_else(|| PackError::NotFound(id.clone())),
            Source::Directory(dir) => catalog::load_dir(dir).map_err(PackError::Refused),
        }
    }

    async fn stored(&self, principal: &Principal) -> Result<Vec<StoredPack>, PackError> {
        let mut conn = self.store.reader().await?;
        Ok(conn.scoped(&principal.tenant).packs().await?)
    }

    /// The bundled packs and the tenant's packs (installed, or removed with data kept).
    pub async fn list(&self, principal: &Principal) -> Result<Vec<PackSummary>, PackError> {
        let stored = self.stored(principal).await?;
        let bundled = Self::bundled()?;
        let mut ids: BTreeSet<&str> = bundled.keys().map(String::as_str).collect();
        ids.extend(stored.iter().map(|pack| pack.pack_id.as_str()));
        ids.into_iter()
            .map(|id| {
                summary(
                    bundled.get(id).map(|pack| &pack.manifest),
                    stored.iter().find(|pack| pack.pack_id == id),
                )
            })
            .collect()
    }

    /// One pack: the bundled one of that id (or the installed one, for a pack installed from a
    /// directory), with what the tenant has of it.
    pub async fn show(&self, principal: &Principal, id: &str) -> Result<PackDetail, PackError> {
        let stored = self.stored(principal).await?;
        let stored = stored.into_iter().find(|pack| pack.pack_id == id);
        let installed = stored.as_ref().map(contents_of).transpose()?;
        if let Some(pack) = Self::bundled()?.get(id) {
            let plugins = pack
                .plugins(&self.plugins_dir)
                .0
                .into_iter()
                .filter_map(|source| plugin_entry(&source))
                .collect();
            let extends = pack
                .all_json(&pack.manifest.extends)
                .unwrap_or_default()
                .into_iter()
                .map(|(_, json)| {
                    (
                        json["entity"].as_str().unwrap_or_default().to_owned(),
                        json["fields"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .map(name_of)
                            .collect(),
                    )
                })
                .collect();
            let names = |files: &[String]| -> Vec<String> {
                pack.all_json(files)
                    .unwrap_or_default()
                    .iter()
                    .map(|(_, json)| name_of(json))
                    .collect()
            };
            return Ok(PackDetail {
                summary: summary(Some(&pack.manifest), stored.as_ref())?,
                entities: names(&pack.manifest.entities),
                extends,
                workflows: names(&pack.manifest.workflows),
                plugins,
                roles: names(&pack.manifest.roles),
                views: names(&pack.manifest.views),
                sample_files: pack.manifest.sample.len(),
                installed,
            });
        }
        let stored = stored.ok_or_else(|| PackError::NotFound(id.to_owned()))?;
        let contents = installed.unwrap_or_default();
        Ok(PackDetail {
            summary: summary(None, Some(&stored))?,
            entities: contents.entities.keys().cloned().collect(),
            extends: contents
                .extends
                .iter()
                .map(|(entity, fields)| (entity.clone(), fields.iter().map(name_of).collect()))
                .collect(),
            workflows: contents.workflows.keys().cloned().collect(),
            plugins: contents.plugins.values().cloned().collect(),
            roles: contents.roles.keys().cloned().collect(),
            views: contents.views.keys().cloned().collect(),
            sample_files: 0,
            installed: Some(contents),
        })
    }

    /// Installs a pack and the packs it depends on that the tenant lacks, dependencies first,
    /// in one transaction; with `sample`, their sample records too. Every problem found before
    /// the transaction is reported at once, and nothing changes.
    pub async fn install(
        &self,
        principal: &Principal,
        source: &Source,
        sample: bool,
        dry_run: bool,
    ) -> Result<Report, PackError> {
        admin(principal)?;
        let target = self.load(source)?;
        let stored = self.stored(principal).await?;
        if let Some(existing) = stored
            .iter()
            .find(|pack| pack.pack_id == target.manifest.id && pack.status == "installed")
        {
            return Err(refused(
                format!("{}/pack.json#/id", target.manifest.id),
                format!(
                    "pack `{}` {} is installed: upgrade it instead",
                    existing.pack_id, existing.version
                ),
            ));
        }
        let mut packs: HashMap<String, Pack> = Self::bundled()?.clone();
        packs.insert(target.manifest.id.clone(), target.clone());
        let available: HashMap<String, PackManifest> = packs
            .iter()
            .map(|(id, pack)| (id.clone(), pack.manifest.clone()))
            .collect();
        let installed = installed_versions(&stored)?;
        // Everything that can be checked before the transaction, for every pack, at once; with
        // dependencies missing, the pack itself is still checked.
        let mut problems = Vec::new();
        let order: Vec<&Pack> = match install_order(&target.manifest.id, &available, &installed) {
            Ok(order) => order.iter().map(|manifest| &packs[&manifest.id]).collect(),
            Err(found) => {
                problems.extend(found.into_iter().map(|message| {
                    Problem::new(
                        format!("{}/pack.json#/depends", target.manifest.id),
                        message,
                    )
                }));
                vec![&target]
            }
        };
        let mut checked = Vec::new();
        for pack in &order {
            let (found, found_problems) = self.check(pack).await;
            checked.push(found);
            problems.extend(found_problems);
        }
        let existing = self.existing_entities(principal).await?;
        problems.extend(clashes(&checked, &stored, &existing, None));
        if !problems.is_empty() {
            return Err(PackError::Refused(problems));
        }

        let _uncached = self.plugins.uncached(&principal.tenant);
        let mut tx = self.store.begin().await?;
        let result = self
            .install_in(&mut tx, principal, &checked, &stored, sample)
            .await;
        self.finish(
            tx,
            principal,
            result,
            dry_run,
            "install",
            &target.manifest.id,
        )
        .await
    }

    /// Upgrades an installed pack to the version of `source`: shows (with `dry_run`) or applies
    /// the difference in one transaction. Entity definitions are merged three ways: a field the
    /// pack did not change keeps the administrator's edits, fields others added stay, fields the
    /// new version drops are deactivated (their data kept). Records are converted where field
    /// types change, and the pack's data migrations run.
    pub async fn upgrade(
        &self,
        principal: &Principal,
        id: &str,
        source: &Source,
        dry_run: bool,
    ) -> Result<Report, PackError> {
        admin(principal)?;
        let stored = self.stored(principal).await?;
        let current = stored
            .iter()
            .find(|pack| pack.pack_id == id && pack.status == "installed")
            .ok_or_else(|| PackError::NotInstalled(id.to_owned()))?;
        let pack = self.load(source)?;
        if pack.manifest.id != id {
            return Err(refused(
                format!("{}/pack.json#/id", pack.manifest.id),
                format!("this is pack `{}`, not `{id}`", pack.manifest.id),
            ));
        }
        let from = parse_version(current)?;
        let mut problems = Vec::new();
        if pack.manifest.version < from {
            problems.push(Problem::new(
                format!("{id}/pack.json#/version"),
                format!(
                    "version {} is older than the installed {from}: packs are not downgraded",
                    pack.manifest.version
                ),
            ));
        }
        let installed = installed_versions(&stored)?;
        for (dependency, range) in &pack.manifest.depends {
            match installed.get(dependency) {
                Some(version) if range.matches(version) => {}
                Some(version) => problems.push(Problem::new(
                    format!("{id}/pack.json#/depends/{dependency}"),
                    format!(
                        "`{id}` {} needs `{dependency}` {range}, and version {version} is installed: upgrade `{dependency}` first",
                        pack.manifest.version
                    ),
                )),
                None => problems.push(Problem::new(
                    format!("{id}/pack.json#/depends/{dependency}"),
                    format!(
                        "`{id}` {} needs `{dependency}` {range}, which is not installed: install it first",
                        pack.manifest.version
                    ),
                )),
            }
        }
        for other in stored.iter().filter(|other| other.status == "installed") {
            let manifest = manifest_of(other)?;
            if let Some(range) = manifest.depends.get(id)
                && !range.matches(&pack.manifest.version)
            {
                problems.push(Problem::new(
                    format!("{id}/pack.json#/version"),
                    format!(
                        "installed pack `{}` needs `{id}` {range}, which version {} is not",
                        other.pack_id, pack.manifest.version
                    ),
                ));
            }
        }
        let (checked, found) = self.check(&pack).await;
        problems.extend(found);
        let old = contents_of(current)?;
        let existing = self.existing_entities(principal).await?;
        problems.extend(clashes(
            std::slice::from_ref(&checked),
            &stored,
            &existing,
            Some(&old),
        ));
        if !problems.is_empty() {
            return Err(PackError::Refused(problems));
        }

        let _uncached = self.plugins.uncached(&principal.tenant);
        let mut tx = self.store.begin().await?;
        let result = self
            .upgrade_in(&mut tx, principal, &checked, &old, &from, &stored)
            .await;
        self.finish(
            tx,
            principal,
            result.map(|changes| vec![changes]),
            dry_run,
            "upgrade",
            id,
        )
        .await
    }

    /// Removes an installed pack: its workflows, views and plugins (those no other installed
    /// pack uses) go; its entities, their records and the fields it added to other entities
    /// stay (computed fields whose plugin goes are deactivated), unless `purge`, which deletes
    /// them. Refused while another installed pack depends on it.
    pub async fn remove(
        &self,
        principal: &Principal,
        id: &str,
        purge: bool,
        dry_run: bool,
    ) -> Result<Report, PackError> {
        admin(principal)?;
        let stored = self.stored(principal).await?;
        let current = stored
            .iter()
            .find(|pack| pack.pack_id == id && pack.status == "installed")
            .ok_or_else(|| PackError::NotInstalled(id.to_owned()))?;
        let mut dependents = Vec::new();
        for other in stored.iter().filter(|other| other.status == "installed") {
            if manifest_of(other)?.depends.contains_key(id) {
                dependents.push(format!("`{}`", other.pack_id));
            }
        }
        if !dependents.is_empty() {
            return Err(refused(
                format!("{id}/pack.json#/id"),
                format!(
                    "installed pack{} {} depend{} on `{id}`: remove {} first",
                    if dependents.len() > 1 { "s" } else { "" },
                    dependents.join(", "),
                    if dependents.len() > 1 { "" } else { "s" },
                    if dependents.len() > 1 { "them" } else { "it" }
                ),
            ));
        }
        let contents = contents_of(current)?;
        let _uncached = self.plugins.uncached(&principal.tenant);
        let mut tx = self.store.begin().await?;
        let result = self
            .remove_in(&mut tx, principal, current, &contents, &stored, purge)
            .await;
        self.finish(
            tx,
            principal,
            result.map(|changes| vec![changes]),
            dry_run,
            "remove",
            id,
        )
        .await
    }

    /// Commits (or, for a dry run or a failure, rolls back) and drops what is cached about the
    /// tenant's definitions, workflows and plugins either way.
    async fn finish(
        &self,
        tx: Tx,
        principal: &Principal,
        result: Result<Vec<PackChanges>, PackError>,
        dry_run: bool,
        action: &'static str,
        id: &str,
    ) -> Result<Report, PackError> {
        let outcome = match result {
            Ok(packs) if !dry_run => tx.commit().await.map(|()| packs).map_err(PackError::from),
            other => {
                drop(tx);
                other
            }
        };
        self.metadata.forget_tenant(&principal.tenant);
        self.workflows.applied(&principal.tenant);
        self.plugins.changed(&principal.tenant);
        if outcome.is_ok() && !dry_run {
            self.workflows.wake();
        }
        Ok(Report {
            action,
            pack: id.to_owned(),
            dry_run,
            packs: outcome?,
        })
    }

    /// The names of the tenant's entities (committed).
    async fn existing_entities(
        &self,
        principal: &Principal,
    ) -> Result<BTreeSet<String>, PackError> {
        let mut conn = self.store.reader().await?;
        let entities = conn.scoped(&principal.tenant).list_entities().await?;
        Ok(entities
            .iter()
            .map(|entity| entity_name(&entity.definition))
            .collect())
    }

    /// Reads and checks everything of a pack that needs no transaction: every file parses and
    /// has its shape, entity definitions validate, plugins resolve, validate and compile.
    async fn check<'p>(&self, pack: &'p Pack) -> (Checked<'p>, Vec<Problem>) {
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
        let mut extends: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for (file, json) in &extend_files {
            let Some(entity) = json.get("entity").and_then(Value::as_str) else {
                problems.push(Problem::new(
                    format!("{file}#/entity"),
                    "an extension names the `entity` it adds fields to",
                ));
                continue;
            };
            if names.contains(entity) {
                problems.push(Problem::new(
                    format!("{file}#/entity"),
                    format!("`{entity}` is this pack's own entity: define its fields there"),
                ));
                continue;
            }
            let fields = json.get("fields").cloned().unwrap_or(Value::Null);
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
            // The fields are checked as an entity of their own would be.
            match validation::parse_definition(&json!({"name": entity, "fields": fields})) {
                Ok(definition) => {
                    let target = extends.entry(entity.to_owned()).or_default();
                    for field in &definition.fields {
                        target.push(
                            serde_json::to_value(field).expect("field definitions serialize"),
                        );
                    }
                }
                Err(found) => problems.extend(prefixed(file, found)),
            }
        }
        let mut roles = BTreeMap::new();
        for (file, json) in role_files {
            match json.get("name").and_then(Value::as_str) {
                Some(name) if json.is_object() => {
                    roles.insert(name.to_owned(), json.clone());
                }
                _ => problems.push(Problem::new(
                    format!("{file}#/name"),
                    "a role is an object with a `name`",
                )),
            }
        }
        let mut views = Vec::new();
        for (file, json) in view_files {
            match crate::views::parse(&json) {
                Ok(_) => views.push((file, json)),
                Err(found) => problems.extend(prefixed(&file, found)),
            }
        }
        for (file, json) in &sample {
            let entity_ok = json.get("entity").and_then(Value::as_str).is_some();
            let records_ok = json.get("records").and_then(Value::as_array).is_some();
            if !entity_ok || !records_ok {
                problems.push(Problem::new(
                    format!("{file}#/"),
                    "sample data is `{\"entity\": name, \"records\": [record bodies]}`",
                ));
            }
        }
        for (file, json) in &migrations {
            problems.extend(check_migration(file, json));
        }
        let mut plugins = Vec::new();
        let (sources, found) = pack.plugins(&self.plugins_dir);
        problems.extend(found);
        for source in sources {
            let path = format!("{}/pack.json#/plugins/{}", manifest.id, source.index);
            let bytes = match std::fs::read(&source.component) {
                Ok(bytes) => bytes,
                Err(error) => {
                    problems.push(Problem::new(
                        path,
                        format!("cannot read {}: {error}", source.component.display()),
                    ));
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

    async fn install_in(
        &self,
        tx: &mut Tx,
        principal: &Principal,
        checked: &[Checked<'_>],
        stored: &[StoredPack],
        sample: bool,
    ) -> Result<Vec<PackChanges>, PackError> {
        let tenant = &principal.tenant;
        let mut reports = Vec::new();
        // Definitions and plugins of every pack, dependencies first…
        for pack in checked {
            let id = &pack.pack.manifest.id;
            let removed = stored
                .iter()
                .find(|stored| &stored.pack_id == id && stored.status == "removed")
                .map(contents_of)
                .transpose()?;
            let mut report = PackChanges {
                id: id.clone(),
                from_version: None,
                to_version: Some(pack.pack.manifest.version.to_string()),
                ..PackChanges::default()
            };
            let mut batch = Vec::new();
            for (file, json) in &pack.entities {
                let name = entity_name(json);
                let current = current_definition(tx, principal, &name).await?;
                match current {
                    // Kept when the pack was removed: taken back, with the pack's fields.
                    Some(current) => {
                        let (merged, added, removed_fields) = merge_entity(None, json, &current);
                        batch.push((file.clone(), merged));
                        report.entities.push(entity_change(
                            &name,
                            "adopted",
                            added,
                            removed_fields,
                        ));
                    }
                    None => {
                        batch.push((file.clone(), json.clone()));
                        report
                            .entities
                            .push(entity_change(&name, "added", Vec::new(), Vec::new()));
                    }
                }
            }
            let previous_extends = removed.as_ref().map(|contents| &contents.extends);
            for (entity, fields) in &pack.extends {
                let Some(current) = current_definition(tx, principal, entity).await? else {
                    return Err(refused(
                        format!("{id}/pack.json#/extends"),
                        format!("`{id}` adds fields to entity `{entity}`, which does not exist"),
                    ));
                };
                let before = previous_extends
                    .and_then(|extends| extends.get(entity))
                    .cloned()
                    .unwrap_or_default();
                let own: BTreeSet<String> = before.iter().map(name_of).collect();
                let clashing: Vec<String> = fields
                    .iter()
                    .map(name_of)
                    .filter(|name| has_field(&current, name) && !own.contains(name))
                    .collect();
                if !clashing.is_empty() {
                    return Err(refused(
                        format!("{id}/pack.json#/extends"),
                        format!(
                            "entity `{entity}` already has field{} {}",
                            if clashing.len() > 1 { "s" } else { "" },
                            clashing
                                .iter()
                                .map(|f| format!("`{f}`"))
                                .collect::<Vec<_>>()
                                .join(", ")
                        ),
                    ));
                }
                let (merged, added, _) = merge_extension(&[], fields, &current);
                batch.push((format!("{id}/extends/{entity}"), merged));
                report
                    .entities
                    .push(entity_change(entity, "extended", added, Vec::new()));
            }
            let applied = self
                .metadata
                .apply_all_in(tx, tenant, Some(&principal.user), &batch)
                .await
                .map_err(metadata_problems)?;
            describe_applied(&mut report.entities, &applied);
            self.install_plugins(tx, principal, pack, None, &mut report)
                .await?;
            reports.push(report);
        }
        // …then their sample records (before any workflow of theirs exists, so that sample
        // records start no runs of the packs being installed)…
        if sample {
            let mut keys = HashMap::new();
            for (pack, report) in checked.iter().zip(&mut reports) {
                report.sample_records = self
                    .import_sample(tx, principal, &pack.sample, &mut keys)
                    .await?;
            }
        }
        // …then views, workflows and the record of what each pack installed.
        for (pack, report) in checked.iter().zip(&mut reports) {
            self.put_views(tx, principal, pack, None, report).await?;
            report.roles = pack
                .roles
                .keys()
                .map(|name| ItemChange {
                    name: name.clone(),
                    change: "added",
                })
                .collect();
            let applied = self
                .workflows
                .apply_in(tx, tenant, principal.user.as_str(), &pack.workflows)
                .await
                .map_err(workflow_problems)?;
            report.workflows = applied
                .iter()
                .map(|(view, verb)| ItemChange {
                    name: name_of(&view.definition),
                    change: if *verb == "create" {
                        "added"
                    } else {
                        "updated"
                    },
                })
                .collect();
            self.record_pack(tx, principal, pack).await?;
        }
        Ok(reports)
    }

    async fn upgrade_in(
        &self,
        tx: &mut Tx,
        principal: &Principal,
        checked: &Checked<'_>,
        old: &Contents,
        from: &Version,
        stored: &[StoredPack],
    ) -> Result<PackChanges, PackError> {
        let tenant = &principal.tenant;
        let id = &checked.pack.manifest.id;
        let mut report = PackChanges {
            id: id.clone(),
            from_version: Some(from.to_string()),
            to_version: Some(checked.pack.manifest.version.to_string()),
            ..PackChanges::default()
        };
        let migrations: Vec<&Value> = checked
            .migrations
            .iter()
            .filter(|(_, json)| {
                json["from"]
                    .as_str()
                    .and_then(|range| VersionReq::parse(range).ok())
                    .is_some_and(|range| range.matches(from))
            })
            .map(|(_, json)| json)
            .collect();

        // The new definitions, merged with the tenant's.
        let mut batch = Vec::new();
        for (file, json) in &checked.entities {
            let name = entity_name(json);
            let current = current_definition(tx, principal, &name).await?;
            match current {
                Some(current) => {
                    let (merged, added, removed) =
                        merge_entity(old.entities.get(&name), json, &current);
                    batch.push((file.clone(), merged));
                    report
                        .entities
                        .push(entity_change(&name, "changed", added, removed));
                }
                None => {
                    batch.push((file.clone(), json.clone()));
                    report
                        .entities
                        .push(entity_change(&name, "added", Vec::new(), Vec::new()));
                }
            }
        }
        let mut targets: BTreeSet<&String> = checked.extends.keys().collect();
        targets.extend(old.extends.keys());
        for entity in targets {
            let Some(current) = current_definition(tx, principal, entity).await? else {
                if checked.extends.contains_key(entity) {
                    return Err(refused(
                        format!("{id}/pack.json#/extends"),
                        format!("`{id}` adds fields to entity `{entity}`, which does not exist"),
                    ));
                }
                continue;
            };
            let before = old.extends.get(entity).cloned().unwrap_or_default();
            let after = checked.extends.get(entity).cloned().unwrap_or_default();
            let (merged, added, removed) = merge_extension(&before, &after, &current);
            batch.push((format!("{id}/extends/{entity}"), merged));
            report
                .entities
                .push(entity_change(entity, "extended", added, removed));
        }
        for name in old.entities.keys() {
            if !checked
                .entities
                .iter()
                .any(|(_, json)| &entity_name(json) == name)
            {
                report
                    .entities
                    .push(entity_change(name, "dropped", Vec::new(), Vec::new()));
            }
        }
        // With data migrations to run, the records must still accept both the old values and
        // the new ones meanwhile: first every picklist keeps its old options and dropped fields
        // stay active, then the migrations run, then the final definitions apply (and check
        // that every record converts).
        if !migrations.is_empty() {
            let mut between = Vec::new();
            for (file, merged) in &batch {
                let name = entity_name(merged);
                let current = current_definition(tx, principal, &name).await?;
                between.push((file.clone(), interim(merged, current.as_ref())));
            }
            let applied = self
                .metadata
                .apply_all_in(tx, tenant, Some(&principal.user), &between)
                .await
                .map_err(metadata_problems)?;
            describe_applied(&mut report.entities, &applied);
        }
        self.install_plugins(tx, principal, checked, Some(old), &mut report)
            .await?;
        let still_used = plugins_used_by_others(stored, id)?;
        for (plugin, _) in old.plugins.iter().filter(|(plugin, _)| {
            !checked
                .plugins
                .iter()
                .any(|(_, p)| &p.manifest.id == *plugin)
        }) {
            report.plugins.push(
                self.drop_plugin(tx, principal, plugin, old, &still_used)
                    .await?,
            );
        }
        for migration in migrations {
            report.migrated_records += self.migrate(tx, principal, migration).await?;
        }
        let applied = self
            .metadata
            .apply_all_in(tx, tenant, Some(&principal.user), &batch)
            .await
            .map_err(metadata_problems)?;
        describe_applied(&mut report.entities, &applied);
        self.put_views(tx, principal, checked, Some(old), &mut report)
            .await?;
        report.roles = role_changes(&old.roles, &checked.roles);
        // Workflows: the new definitions (a workflow the administrator disabled stays
        // disabled), and those the new version no longer has deleted.
        let mut workflows = Vec::new();
        {
            let mut scoped = tx.scoped(tenant);
            for (file, json) in &checked.workflows {
                let mut json = json.clone();
                if let Some(existing) = scoped.workflow(&name_of(&json)).await? {
                    json["enabled"] = Value::Bool(existing.enabled);
                }
                workflows.push((file.clone(), json));
            }
        }
        let applied = self
            .workflows
            .apply_in(tx, tenant, principal.user.as_str(), &workflows)
            .await
            .map_err(workflow_problems)?;
        for (view, verb) in &applied {
            report.workflows.push(ItemChange {
                name: name_of(&view.definition),
                change: match *verb {
                    "create" => "added",
                    "unchanged" => "unchanged",
                    _ => "updated",
                },
            });
        }
        let mut scoped = tx.scoped(tenant);
        for name in old.workflows.keys() {
            if !checked
                .workflows
                .iter()
                .any(|(_, json)| &name_of(json) == name)
                && scoped.workflow(name).await?.is_some()
            {
                self.workflows
                    .delete_in(&mut scoped, name)
                    .await
                    .map_err(workflow_problems)?;
                report.workflows.push(ItemChange {
                    name: name.clone(),
                    change: "removed",
                });
            }
        }
        self.record_pack(tx, principal, checked).await?;
        Ok(report)
    }

    async fn remove_in(
        &self,
        tx: &mut Tx,
        principal: &Principal,
        current: &StoredPack,
        contents: &Contents,
        stored: &[StoredPack],
        purge: bool,
    ) -> Result<PackChanges, PackError> {
        let tenant = &principal.tenant;
        let id = &current.pack_id;
        let mut report = PackChanges {
            id: id.clone(),
            from_version: Some(current.version.clone()),
            ..PackChanges::default()
        };
        {
            let mut scoped = tx.scoped(tenant);
            for name in contents.workflows.keys() {
                if scoped.workflow(name).await?.is_some() {
                    self.workflows
                        .delete_in(&mut scoped, name)
                        .await
                        .map_err(workflow_problems)?;
                    report.workflows.push(ItemChange {
                        name: name.clone(),
                        change: "removed",
                    });
                }
            }
            for name in contents.views.keys() {
                if scoped.delete_view(name).await? {
                    report.views.push(ItemChange {
                        name: name.clone(),
                        change: "removed",
                    });
                }
            }
        }
        report.roles = role_changes(&contents.roles, &BTreeMap::new());
        let still_used = plugins_used_by_others(stored, id)?;
        let mut gone = BTreeSet::new();
        for plugin in contents.plugins.keys() {
            let change = self
                .drop_plugin(tx, principal, plugin, contents, &still_used)
                .await?;
            if change.change == "removed" {
                gone.insert(plugin.clone());
            }
            report.plugins.push(change);
        }
        if purge {
            let mut scoped = tx.scoped(tenant);
            for (entity, fields) in &contents.extends {
                if contents.entities.contains_key(entity) {
                    continue;
                }
                let Some(mut definition) = scoped.get_entity(entity).await?.map(|e| e.definition)
                else {
                    continue;
                };
                let names: Vec<String> = fields.iter().map(name_of).collect();
                let present: Vec<String> = names
                    .iter()
                    .filter(|name| has_field(&definition, name))
                    .cloned()
                    .collect();
                if present.is_empty() {
                    continue;
                }
                set_active(&mut definition, &present, false);
                self.metadata
                    .apply_all_in(
                        tx,
                        tenant,
                        Some(&principal.user),
                        &[(
                            format!("{id}/extends/{entity}"),
                            without_version(definition),
                        )],
                    )
                    .await
                    .map_err(metadata_problems)?;
                scoped = tx.scoped(tenant);
                for field in &present {
                    self.metadata
                        .purge_field_in(&mut scoped, &principal.user, entity, field)
                        .await
                        .map_err(metadata_problems)?;
                }
                report.entities.push(EntityChange {
                    fields_removed: present,
                    ..entity_change(entity, "extended", Vec::new(), Vec::new())
                });
            }
            for entity in contents.entities.keys() {
                if scoped.get_entity(entity).await?.is_some() {
                    self.metadata
                        .delete_in(&mut scoped, &principal.user, entity, true)
                        .await
                        .map_err(metadata_problems)?;
                    report
                        .entities
                        .push(entity_change(entity, "deleted", Vec::new(), Vec::new()));
                }
            }
            scoped.remove_pack(id, true).await?;
        } else {
            // The data stays; computed fields whose plugin is gone would refuse every write
            // of their records, so they are deactivated (their values kept).
            let mut batch = Vec::new();
            let entities = tx.scoped(tenant).list_entities().await?;
            for entity in entities {
                let mut definition = entity.definition;
                let name = entity_name(&definition);
                let stale: Vec<String> = definition["fields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter(|field| {
                        field["active"].as_bool() != Some(false)
                            && field["plugin"].as_str().is_some_and(|p| gone.contains(p))
                    })
                    .map(name_of)
                    .collect();
                if contents.entities.contains_key(&name) {
                    report.entities.push(EntityChange {
                        fields_removed: stale.clone(),
                        ..entity_change(&name, "kept", Vec::new(), Vec::new())
                    });
                } else if !stale.is_empty() {
                    report.entities.push(EntityChange {
                        fields_removed: stale.clone(),
                        ..entity_change(&name, "changed", Vec::new(), Vec::new())
                    });
                }
                if !stale.is_empty() {
                    set_active(&mut definition, &stale, false);
                    batch.push((format!("{name}.json"), without_version(definition)));
                }
            }
            if !batch.is_empty() {
                self.metadata
                    .apply_all_in(tx, tenant, Some(&principal.user), &batch)
                    .await
                    .map_err(metadata_problems)?;
            }
            tx.scoped(tenant).remove_pack(id, false).await?;
        }
        Ok(report)
    }

    /// Installs (or upgrades) a pack's plugins and enables them; a plugin new to the tenant
    /// gets the pack's configuration, one it had keeps its state and configuration.
    async fn install_plugins(
        &self,
        tx: &mut Tx,
        principal: &Principal,
        pack: &Checked<'_>,
        old: Option<&Contents>,
        report: &mut PackChanges,
    ) -> Result<(), PackError> {
        let mut scoped = tx.scoped(&principal.tenant);
        for (source, prepared) in &pack.plugins {
            let id = prepared.manifest.id.clone();
            let existing = scoped.plugin(&id).await?;
            // A newer version another pack (or an administrator) installed is kept.
            if let Some(existing) = &existing
                && let (Ok(have), Ok(offered)) = (
                    Version::parse(&existing.version),
                    Version::parse(&prepared.manifest.version),
                )
                && have > offered
            {
                report.plugins.push(PluginChange {
                    id,
                    change: "kept",
                    from_version: Some(existing.version.clone()),
                    to_version: Some(existing.version.clone()),
                    capabilities_added: Vec::new(),
                    capabilities_removed: Vec::new(),
                });
                continue;
            }
            let installed = self
                .plugins
                .install_in(&mut scoped, prepared, &principal.user)
                .await
                .map_err(|error| plugin_problem(&pack.pack.manifest.id, source, error))?;
            let (enabled, config) = match &existing {
                Some(existing) => (existing.enabled || old.is_none(), None),
                None => (true, source.config.as_ref()),
            };
            self.plugins
                .configure_in(&mut scoped, &id, enabled, config)
                .await
                .map_err(|error| plugin_problem(&pack.pack.manifest.id, source, error))?;
            let change = match &installed.previous_version {
                None => "added",
                Some(previous) if previous == &prepared.manifest.version => "unchanged",
                Some(_) => "upgraded",
            };
            report.plugins.push(PluginChange {
                id,
                change,
                from_version: installed.previous_version.clone(),
                to_version: Some(prepared.manifest.version.clone()),
                capabilities_added: installed.capabilities_added,
                capabilities_removed: installed.capabilities_removed,
            });
        }
        Ok(())
    }

    /// Removes a plugin a pack installed, unless another installed pack uses it.
    async fn drop_plugin(
        &self,
        tx: &mut Tx,
        principal: &Principal,
        plugin: &str,
        contents: &Contents,
        still_used: &BTreeSet<String>,
    ) -> Result<PluginChange, PackError> {
        let entry = &contents.plugins[plugin];
        if still_used.contains(plugin) {
            return Ok(PluginChange {
                id: plugin.to_owned(),
                change: "kept",
                from_version: Some(entry.version.clone()),
                to_version: Some(entry.version.clone()),
                capabilities_added: Vec::new(),
                capabilities_removed: Vec::new(),
            });
        }
        self.plugins
            .remove_in(&mut tx.scoped(&principal.tenant), plugin)
            .await
            .map_err(|error| refused("/plugins", format!("plugin `{plugin}`: {error}")))?;
        Ok(PluginChange {
            id: plugin.to_owned(),
            change: "removed",
            from_version: Some(entry.version.clone()),
            to_version: None,
            capabilities_added: Vec::new(),
            capabilities_removed: entry.capabilities.clone(),
        })
    }

    async fn put_views(
        &self,
        tx: &mut Tx,
        principal: &Principal,
        pack: &Checked<'_>,
        old: Option<&Contents>,
        report: &mut PackChanges,
    ) -> Result<(), PackError> {
        let id = &pack.pack.manifest.id;
        let mut scoped = tx.scoped(&principal.tenant);
        for (file, json) in &pack.views {
            let view = crate::views::parse(json)
                .map_err(|found| PackError::Refused(prefixed(file, found)))?;
            crate::views::check_in(&self.metadata, &mut scoped, &view)
                .await
                .map_err(|found| PackError::Refused(prefixed(file, found)))?;
            let change = match old.and_then(|old| old.views.get(&view.name)) {
                None => "added",
                Some(before) if before == json => "unchanged",
                Some(_) => "updated",
            };
            scoped
                .put_view(&view.name, &json.to_string(), Some(id))
                .await?;
            report.views.push(ItemChange {
                name: view.name,
                change,
            });
        }
        for name in old.map(|old| old.views.keys()).into_iter().flatten() {
            if !pack.views.iter().any(|(_, json)| &name_of(json) == name)
                && scoped.delete_view(name).await?
            {
                report.views.push(ItemChange {
                    name: name.clone(),
                    change: "removed",
                });
            }
        }
        Ok(())
    }

    async fn record_pack(
        &self,
        tx: &mut Tx,
        principal: &Principal,
        pack: &Checked<'_>,
    ) -> Result<(), PackError> {
        let manifest = &pack.pack.manifest;
        tx.scoped(&principal.tenant)
            .put_pack(
                &manifest.id,
                &manifest.version.to_string(),
                &serde_json::to_string(manifest).expect("manifests serialize"),
                &serde_json::to_string(&pack.contents()).expect("contents serialize"),
                &principal.user,
            )
            .await?;
        Ok(())
    }

    /// Writes sample records file by file: `$key` names a record for later references,
    /// `{"$key": k}` refers to one, `{{today - 30d}}` is rendered. Returns how many.
    async fn import_sample(
        &self,
        tx: &mut Tx,
        principal: &Principal,
        files: &[(String, Value)],
        keys: &mut HashMap<String, String>,
    ) -> Result<usize, PackError> {
        let now = crate::store::now();
        let mut count = 0;
        let mut scoped = tx.scoped(&principal.tenant);
        for (file, json) in files {
            let entity = json["entity"].as_str().unwrap_or_default();
            let records = json["records"]
                .as_array()
                .map(Vec::as_slice)
                .unwrap_or_default();
            for (start, chunk) in records.chunks(SAMPLE_BATCH).enumerate() {
                let mut bodies = Vec::with_capacity(chunk.len());
                let mut chunk_keys = Vec::with_capacity(chunk.len());
                for (offset, record) in chunk.iter().enumerate() {
                    let index = start * SAMPLE_BATCH + offset;
                    let path = format!("{file}#/records/{index}");
                    let mut record = record.clone();
                    let key = record
                        .as_object_mut()
                        .and_then(|object| object.remove("$key"))
                        .and_then(|key| key.as_str().map(str::to_owned));
                    let body = resolve_sample(&record, keys, now)
                        .map_err(|message| refused(path.clone(), message))?;
                    bodies.push(body);
                    chunk_keys.push(key);
                }
                let created = self
                    .records
                    .import_in(&mut scoped, principal, entity, &bodies)
                    .await
                    .map_err(|error| record_problem(&format!("{file}#/records"), error))?;
                for (record, key) in created.iter().zip(chunk_keys) {
                    if let Some(key) = key {
                        keys.insert(key, record.id.clone());
                    }
                }
                count += created.len();
            }
        }
        Ok(count)
    }

    /// Runs one data migration: each update sets its values on every live record its filter
    /// matches (through the records layer: validation, plugins, history). Returns how many.
    async fn migrate(
        &self,
        tx: &mut Tx,
        principal: &Principal,
        migration: &Value,
    ) -> Result<usize, PackError> {
        let mut scoped = tx.scoped(&principal.tenant);
        let context = WriteContext::new(principal, crate::store::now());
        let mut count = 0;
        for update in migration["updates"].as_array().into_iter().flatten() {
            let entity = update["entity"].as_str().unwrap_or_default();
            let filter = update["filter"].as_str().unwrap_or("_id is not null");
            let values: Map<String, Value> = update["set"].as_object().cloned().unwrap_or_default();
            let mut after: Option<String> = None;
            loop {
                let ids = self
                    .records
                    .step_matching(&mut scoped, entity, filter, after.as_deref(), 500)
                    .await
                    .map_err(|error| record_problem(&format!("migration of `{entity}`"), error))?;
                for id in &ids {
                    self.records
                        .step_update(&mut scoped, &context, entity, id, values.clone())
                        .await
                        .map_err(|error| {
                            record_problem(&format!("migration of `{entity}` record {id}"), error)
                        })?;
                }
                count += ids.len();
                match ids.last() {
                    Some(last) if ids.len() == 500 => after = Some(last.clone()),
                    _ => break,
                }
            }
        }
        Ok(count)
    }
}

fn admin(principal: &Principal) -> Result<(), PackError> {
    if principal.is_admin() {
        Ok(())
    } else {
        Err(PackError::Forbidden)
    }
}

fn prefixed(file: &str, problems: Vec<Problem>) -> Vec<Problem> {
    problems
        .into_iter()
        .map(|problem| Problem::new(format!("{file}#{}", problem.path), problem.message))
        .collect()
}

fn without_version(mut json: Value) -> Value {
    if let Some(object) = json.as_object_mut() {
        object.remove("version");
    }
    json
}

fn has_field(definition: &Value, name: &str) -> bool {
    definition["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|field| field["name"] == name)
}

fn set_active(definition: &mut Value, names: &[String], active: bool) {
    for field in definition["fields"].as_array_mut().into_iter().flatten() {
        if field["name"]
            .as_str()
            .is_some_and(|name| names.iter().any(|n| n == name))
        {
            field["active"] = Value::Bool(active);
        }
    }
}

fn fields_by_name(definition: Option<&Value>) -> BTreeMap<String, Value> {
    definition
        .and_then(|definition| definition["fields"].as_array())
        .into_iter()
        .flatten()
        .map(|field| (name_of(field), field.clone()))
        .collect()
}

/// The definition an upgrade applies to a pack's entity, merged three ways from the pack's
/// previous definition (`old`; `None` when taking back an entity kept by a removal: then the
/// pack's fields win), its new one and the tenant's current one: a field the pack did not
/// change keeps the tenant's edits; fields the tenant (or another pack) added stay; fields the
/// new version drops are deactivated. Returns the definition, the fields added and those
/// deactivated.
fn merge_entity(
    old: Option<&Value>,
    new: &Value,
    current: &Value,
) -> (Value, Vec<String>, Vec<String>) {
    let before = fields_by_name(old);
    let now = fields_by_name(Some(current));
    let mut fields = Vec::new();
    let mut added = Vec::new();
    let mut removed = Vec::new();
    for field in new["fields"].as_array().into_iter().flatten() {
        let name = name_of(field);
        let chosen = match (before.get(&name), now.get(&name)) {
            (Some(previous), Some(tenant)) if previous == field => tenant.clone(),
            _ => field.clone(),
        };
        if !now.contains_key(&name) {
            added.push(name);
        }
        fields.push(chosen);
    }
    for field in current["fields"].as_array().into_iter().flatten() {
        let name = name_of(field);
        if new["fields"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|f| f["name"] == name.as_str())
        {
            continue;
        }
        let mut field = field.clone();
        if before.contains_key(&name) && field["active"].as_bool() != Some(false) {
            field["active"] = Value::Bool(false);
            removed.push(name);
        }
        fields.push(field);
    }
    let mut merged = new.clone();
    merged["fields"] = Value::Array(fields);
    let old_indexes: Vec<Value> = old
        .and_then(|old| old["indexes"].as_array().cloned())
        .unwrap_or_default();
    let mut indexes: Vec<Value> = new["indexes"].as_array().cloned().unwrap_or_default();
    for index in current["indexes"].as_array().into_iter().flatten() {
        if !old_indexes.contains(index) && !indexes.contains(index) {
            indexes.push(index.clone());
        }
    }
    if let Some(object) = merged.as_object_mut() {
        object.remove("indexes");
        if !indexes.is_empty() {
            object.insert("indexes".to_owned(), Value::Array(indexes));
        }
    }
    (without_version(merged), added, removed)
}

/// The definition of another pack's entity with a pack's fields merged in the same way: `old`
/// the fields the installed version added, `new` those of the version being applied.
fn merge_extension(
    old: &[Value],
    new: &[Value],
    current: &Value,
) -> (Value, Vec<String>, Vec<String>) {
    let before: BTreeMap<String, &Value> = old.iter().map(|f| (name_of(f), f)).collect();
    let offered: BTreeMap<String, &Value> = new.iter().map(|f| (name_of(f), f)).collect();
    let mut merged = current.clone();
    let mut added = Vec::new();
    let mut removed = Vec::new();
    let mut fields = Vec::new();
    for field in current["fields"].as_array().into_iter().flatten() {
        let name = name_of(field);
        match (before.get(&name), offered.get(&name)) {
            (Some(previous), Some(next)) if *previous == *next => fields.push(field.clone()),
            (_, Some(next)) => fields.push((*next).clone()),
            (Some(_), None) => {
                let mut field = field.clone();
                if field["active"].as_bool() != Some(false) {
                    field["active"] = Value::Bool(false);
                    removed.push(name);
                }
                fields.push(field);
            }
            (None, None) => fields.push(field.clone()),
        }
    }
    for field in new {
        let name = name_of(field);
        if !has_field(current, &name) {
            added.push(name);
            fields.push(field.clone());
        }
    }
    merged["fields"] = Value::Array(fields);
    (without_version(merged), added, removed)
}

/// A definition an upgrade with data migrations applies first: the merged one, but each
/// picklist keeps the options it has now and fields about to be deactivated stay active, so
/// that records hold old and new values alike while the migrations run.
fn interim(merged: &Value, current: Option<&Value>) -> Value {
    let now = fields_by_name(current);
    let mut interim = merged.clone();
    for field in interim["fields"].as_array_mut().into_iter().flatten() {
        let Some(existing) = now.get(&name_of(field)) else {
            continue;
        };
        if existing["active"].as_bool() != Some(false) {
            field["active"] = Value::Bool(true);
        }
        if let (Some(options), Some(old_options)) = (
            field.get("options").and_then(Value::as_array).cloned(),
            existing.get("options").and_then(Value::as_array),
        ) {
            let value_of = |option: &Value| {
                option
                    .get("value")
                    .cloned()
                    .unwrap_or_else(|| option.clone())
            };
            let mut all = options.clone();
            for option in old_options {
                if !options.iter().any(|o| value_of(o) == value_of(option)) {
                    all.push(option.clone());
                }
            }
            field["options"] = Value::Array(all);
        }
    }
    interim
}

fn entity_change(
    entity: &str,
    change: &'static str,
    fields_added: Vec<String>,
    fields_removed: Vec<String>,
) -> EntityChange {
    EntityChange {
        entity: entity.to_owned(),
        change,
        fields_added,
        fields_removed,
        changes: Vec::new(),
        conversions: Vec::new(),
    }
}

/// Adds the evolution changes and conversions of what was applied (an upgrade with data
/// migrations applies twice: the changes of both, each once).
fn describe_applied(entities: &mut [EntityChange], applied: &[Applied]) {
    for applied in applied {
        if let Some(entry) = entities.iter_mut().find(|e| e.entity == applied.entity) {
            for change in &applied.changes {
                if !entry.changes.contains(change) {
                    entry.changes.push(change.clone());
                }
            }
            for conversion in &applied.conversions {
                entry.conversions.retain(|c| c.field != conversion.field);
                entry.conversions.push(conversion.clone());
            }
            entry.change = match entry.change {
                "changed" | "unchanged"
                    if entry.changes.is_empty()
                        && entry.fields_added.is_empty()
                        && entry.fields_removed.is_empty() =>
                {
                    "unchanged"
                }
                "unchanged" => "changed",
                other => other,
            };
        }
    }
}

fn role_changes(old: &BTreeMap<String, Value>, new: &BTreeMap<String, Value>) -> Vec<ItemChange> {
    let mut changes = Vec::new();
    for (name, role) in new {
        changes.push(ItemChange {
            name: name.clone(),
            change: match old.get(name) {
                None => "added",
                Some(before) if before == role => "unchanged",
                Some(_) => "updated",
            },
        });
    }
    for name in old.keys().filter(|name| !new.contains_key(*name)) {
        changes.push(ItemChange {
            name: name.clone(),
            change: "removed",
        });
    }
    changes
}

/// The plugin ids other installed packs installed.
fn plugins_used_by_others(stored: &[StoredPack], id: &str) -> Result<BTreeSet<String>, PackError> {
    let mut used = BTreeSet::new();
    for other in stored
        .iter()
        .filter(|other| other.pack_id != id && other.status == "installed")
    {
        used.extend(contents_of(other)?.plugins.into_keys());
    }
    Ok(used)
}

/// Entities a pack would define that the tenant already has from elsewhere, and two packs of
/// one install defining the same entity. An entity kept by the removal of the same pack is
/// taken back; in an upgrade, the pack's own entities (`own`) are its to change.
fn clashes(
    checked: &[Checked<'_>],
    stored: &[StoredPack],
    existing: &BTreeSet<String>,
    own: Option<&Contents>,
) -> Vec<Problem> {
    let mut owners: BTreeMap<String, (&str, &str)> = BTreeMap::new();
    for pack in stored {
        if let Ok(contents) = contents_of(pack) {
            for entity in contents.entities.keys() {
                owners.insert(
                    entity.clone(),
                    (pack.pack_id.as_str(), pack.status.as_str()),
                );
            }
        }
    }
    let mut problems = Vec::new();
    let mut defined: BTreeMap<String, &str> = BTreeMap::new();
    for pack in checked {
        let id = pack.pack.manifest.id.as_str();
        for (file, json) in &pack.entities {
            let name = entity_name(json);
            if let Some(first) = defined.insert(name.clone(), id) {
                problems.push(Problem::new(
                    format!("{file}#/name"),
                    format!("packs `{first}` and `{id}` both define entity `{name}`"),
                ));
                continue;
            }
            if own.is_some_and(|own| own.entities.contains_key(&name)) || !existing.contains(&name)
            {
                continue;
            }
            match owners.get(&name) {
                Some((owner, "removed")) if *owner == id => {}
                Some((owner, "removed")) => problems.push(Problem::new(
                    format!("{file}#/name"),
                    format!(
                        "entity `{name}` exists in the tenant, kept from pack `{owner}` when it was removed: purge it or rename it first"
                    ),
                )),
                Some((owner, _)) => problems.push(Problem::new(
                    format!("{file}#/name"),
                    format!("entity `{name}` clashes with installed pack `{owner}`, which defines it"),
                )),
                None => problems.push(Problem::new(
                    format!("{file}#/name"),
                    format!(
                        "entity `{name}` already exists in the tenant (not from a pack): rename or delete it first"
                    ),
                )),
            }
        }
    }
    problems
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

/// A sample value with references and date templates resolved.
fn resolve_sample(
    value: &Value,
    keys: &HashMap<String, String>,
    now: time::OffsetDateTime,
) -> Result<Value, String> {
    Ok(match value {
        Value::Object(object) if object.len() == 1 && object.contains_key("$key") => {
            let key = object["$key"].as_str().unwrap_or_default();
            Value::String(
                keys.get(key)
                    .cloned()
                    .ok_or_else(|| format!("no earlier sample record has `$key` `{key}`"))?,
            )
        }
        Value::Object(object) => Value::Object(
            object
                .iter()
                .map(|(name, value)| Ok((name.clone(), resolve_sample(value, keys, now)?)))
                .collect::<Result<_, String>>()?,
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| resolve_sample(item, keys, now))
                .collect::<Result<_, String>>()?,
        ),
        Value::String(text) if text.contains("{{") => {
            let template = Template::parse(text)?;
            template.render(&Scope {
                now: Some(now),
                ..Scope::default()
            })?
        }
        other => other.clone(),
    })
}

async fn current_definition(
    tx: &mut Tx,
    principal: &Principal,
    name: &str,
) -> Result<Option<Value>, PackError> {
    Ok(tx
        .scoped(&principal.tenant)
        .get_entity(name)
        .await?
        .map(|entity| without_version(entity.definition)))
}

fn installed_versions(stored: &[StoredPack]) -> Result<HashMap<String, Version>, PackError> {
    stored
        .iter()
        .filter(|pack| pack.status == "installed")
        .map(|pack| Ok((pack.pack_id.clone(), parse_version(pack)?)))
        .collect()
}

fn parse_version(pack: &StoredPack) -> Result<Version, PackError> {
    Version::parse(&pack.version).map_err(|error| {
        StoreError::Corrupt(format!("pack `{}` version: {error}", pack.pack_id)).into()
    })
}

fn manifest_of(pack: &StoredPack) -> Result<PackManifest, PackError> {
    serde_json::from_str(&pack.manifest).map_err(|error| {
        StoreError::Corrupt(format!("pack `{}` manifest: {error}", pack.pack_id)).into()
    })
}

fn contents_of(pack: &StoredPack) -> Result<Contents, PackError> {
    serde_json::from_str(&pack.contents).map_err(|error| {
        StoreError::Corrupt(format!("pack `{}` contents: {error}", pack.pack_id)).into()
    })
}

fn summary(
    available: Option<&PackManifest>,
    stored: Option<&StoredPack>,
) -> Result<PackSummary, PackError> {
    let stored_manifest = stored.map(manifest_of).transpose()?;
    let manifest = available
        .or(stored_manifest.as_ref())
        .expect("a pack is available or stored");
    Ok(PackSummary {
        id: manifest.id.clone(),
        label: manifest.label.clone(),
        description: manifest.description.clone(),
        available_version: available.map(|manifest| manifest.version.to_string()),
        installed_version: stored.map(|pack| pack.version.clone()),
        status: match stored.map(|pack| pack.status.as_str()) {
            Some("installed") => "installed",
            Some(_) => "removed",
            None => "available",
        },
        depends: manifest
            .depends
            .iter()
            .map(|(id, range)| (id.clone(), range.to_string()))
            .collect(),
    })
}

fn plugin_entry(source: &PluginSource) -> Option<PluginEntry> {
    let manifest = crate::plugins::manifest::Manifest::parse(&source.manifest).ok()?;
    Some(PluginEntry {
        crate_name: source.crate_name.clone(),
        version: manifest.version.clone(),
        capabilities: manifest.capabilities.missing_from(&Default::default()),
    })
}

fn metadata_problems(error: MetadataError) -> PackError {
    match error {
        MetadataError::Store(error) => PackError::Store(error),
        MetadataError::Invalid(problems) => PackError::Refused(problems),
        MetadataError::Unconvertible(checks) => PackError::Refused(
            checks
                .into_iter()
                .map(|check| {
                    Problem::new(
                        format!("/fields/{}", check.field),
                        format!(
                            "{} of {} values of `{}` would not convert: add a migration, or change the records first",
                            check.failures, check.records_with_value, check.field
                        ),
                    )
                })
                .collect(),
        ),
        other => refused("/entities", other.to_string()),
    }
}

fn workflow_problems(error: WorkflowError) -> PackError {
    match error {
        WorkflowError::Store(error) => PackError::Store(error),
        WorkflowError::Invalid(problems) => PackError::Refused(problems),
        other => refused("/workflows", other.to_string()),
    }
}

fn plugin_problem(pack: &str, source: &PluginSource, error: PluginError) -> PackError {
    match error {
        PluginError::Store(error) => PackError::Store(error),
        other => refused(
            format!("{pack}/pack.json#/plugins"),
            format!("plugin `{}`: {other}", source.crate_name),
        ),
    }
}

fn record_problem(path: &str, error: RecordError) -> PackError {
    match error {
        RecordError::Store(error) => PackError::Store(error),
        RecordError::Invalid(fields) | RecordError::Conflict(fields) => PackError::Refused(
            fields
                .into_iter()
                .map(|(field, messages)| {
                    Problem::new(format!("{path}/{field}"), messages.join("; "))
                })
                .collect(),
        ),
        other => refused(path, other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_packs_are_valid() {
        assert_eq!(catalog::bundled_problems(), &[] as &[Problem]);
        let packs = catalog::bundled();
        assert!(packs.contains_key("core"), "{:?}", packs.keys());
    }

    #[test]
    fn an_upgrade_keeps_the_tenants_edits_of_fields_the_pack_did_not_change() {
        let old = json!({"name": "booth", "fields": [
            {"name": "number", "type": "text"},
            {"name": "status", "type": "picklist", "options": ["free", "sold"]},
            {"name": "colour", "type": "text"}]});
        let new = json!({"name": "booth", "fields": [
            {"name": "number", "type": "text"},
            {"name": "status", "type": "picklist", "options": ["free", "reserved", "sold"]},
            {"name": "area", "type": "decimal"}]});
        let current = json!({"name": "booth", "fields": [
            {"name": "number", "type": "text", "label": "Booth no."},
            {"name": "status", "type": "picklist", "options": ["free", "sold"]},
            {"name": "colour", "type": "text"},
            {"name": "notes", "type": "long_text"}]});
        let (merged, added, removed) = merge_entity(Some(&old), &new, &current);
        let fields = merged["fields"].as_array().unwrap();
        assert_eq!(fields[0]["label"], "Booth no.", "the admin's label stays");
        assert_eq!(fields[1]["options"], json!(["free", "reserved", "sold"]));
        assert_eq!(fields[2]["name"], "area");
        let colour = fields.iter().find(|f| f["name"] == "colour").unwrap();
        assert_eq!(colour["active"], false, "dropped by the pack: deactivated");
        let notes = fields.iter().find(|f| f["name"] == "notes").unwrap();
        assert!(
            notes.get("active").is_none(),
            "the admin's field stays as it is"
        );
        assert_eq!(added, ["area"]);
        assert_eq!(removed, ["colour"]);
        let between = interim(&merged, Some(&current));
        let status = &between["fields"][1];
        assert_eq!(status["options"], json!(["free", "reserved", "sold"]));
        let colour = between["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == "colour")
            .unwrap();
        assert_eq!(colour["active"], true, "active while migrations run");
    }

    #[test]
    fn sample_values_resolve_keys_and_dates() {
        let keys = HashMap::from([("acme".to_owned(), "0190-id".to_owned())]);
        let now = time::macros::datetime!(2026-12-02 10:00 UTC);
        let resolved = resolve_sample(
            &json!({"account": {"$key": "acme"}, "ordered_on": "{{today - 30d}}", "n": 3}),
            &keys,
            now,
        )
        .unwrap();
        assert_eq!(
            resolved,
            json!({"account": "0190-id", "ordered_on": "2026-11-02", "n": 3})
        );
        let error = resolve_sample(&json!({"account": {"$key": "nope"}}), &keys, now).unwrap_err();
        assert!(error.contains("nope"), "{error}");
    }
}
