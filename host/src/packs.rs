//! Packs: versioned bundles that give a tenant a whole CRM or an industry's part of one —
//! entity definitions, fields added to other packs' entities, plugins, workflows, roles, saved
//! views and sample data (`schemas/pack.schema.json`).
//!
//! - [`manifest`]: the manifest's typed form and the install order of dependencies;
//! - [`catalog`]: the bundled packs and packs read from directories;
//! - `check`: what is checked before a transaction (files, plugins, names the tenant uses);
//! - [`merge`]: the three-way merge of definitions an upgrade applies;
//! - `apply`: what each operation does in its transaction;
//! - [`Packs`]: install (dependencies first, one transaction), upgrade (a diff first, a
//!   three-way merge of definitions, data migrations), remove (data kept unless purged).
//!
//! Every change of one operation happens in one transaction: all of it or none. What a pack
//! installed is recorded with it (`installed_packs.contents`), so that an upgrade knows which
//! fields are the pack's and which an administrator added, and a removal what to undo.

mod apply;
pub mod catalog;
mod check;
pub mod manifest;
pub mod merge;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

use semver::Version;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::Principal;
use crate::metadata::evolution::Change;
use crate::metadata::validation::Problem;
use crate::metadata::{FieldCheck, Metadata};
use crate::plugins::Plugins;
use crate::records::Records;
use crate::store::packs::StoredPack;
use crate::store::{Store, StoreError, Tx};
use crate::workflows::Workflows;
use catalog::{Pack, PluginSource};
use check::{TenantState, clashes, extension_targets};
use manifest::{PackManifest, install_order};
use merge::name_of;

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

/// What a pack owns in a tenant, recorded with it: what it installed (plugins an administrator or
/// another pack installed first are not its), and entities it dropped.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Contents {
    /// The pack's entity definitions (normalized), by name.
    #[serde(default)]
    pub entities: BTreeMap<String, Value>,
    /// Entities an earlier version had and a later one dropped: kept with their records, still
    /// the pack's (a purge deletes them, a later version may bring them back).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dropped: BTreeMap<String, Value>,
    /// Fields added to other entities (normalized), by entity.
    #[serde(default)]
    pub extends: BTreeMap<String, Vec<Value>>,
    /// Fields an earlier version added to other entities and a later one dropped: deactivated,
    /// still the pack's.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub dropped_extends: BTreeMap<String, Vec<Value>>,
    #[serde(default)]
    pub workflows: BTreeMap<String, Value>,
    /// The plugins it installed.
    #[serde(default)]
    pub plugins: BTreeMap<String, PluginEntry>,
    /// Every plugin it lists, installed by it or not: a plugin an installed pack uses is not
    /// removed with another pack.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub uses: BTreeSet<String>,
    #[serde(default)]
    pub roles: BTreeMap<String, Value>,
    #[serde(default)]
    pub views: BTreeMap<String, Value>,
}

/// A plugin a pack installed (or, in a pack's description, would install).
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
    /// A purge: the reference fields of other entities that pointed at this one, deactivated.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub references_deactivated: Vec<String>,
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
        .unwrap_or_else(|| PathBuf::from("target/plugins"))
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

    fn load(&self, source: &Source) -> Result<Pack, PackError> {
        match source {
            Source::Bundled(id) => catalog::bundled()
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

    /// The installed pack that brought each of the tenant's entities, by entity name (the
    /// console groups its navigation by it). Entities an administrator made are not in it.
    pub async fn entity_owners(
        &self,
        scoped: &mut crate::store::Scoped<'_>,
    ) -> Result<BTreeMap<String, String>, PackError> {
        let mut owners = BTreeMap::new();
        for pack in scoped.packs().await? {
            if pack.status != "installed" {
                continue;
            }
            for entity in contents_of(&pack)?.entities.into_keys() {
                owners.insert(entity, pack.pack_id.clone());
            }
        }
        Ok(owners)
    }

    /// The bundled packs and the tenant's packs (installed, or removed with data kept).
    pub async fn list(&self, principal: &Principal) -> Result<Vec<PackSummary>, PackError> {
        let stored = self.stored(principal).await?;
        let bundled = catalog::bundled();
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
        if let Some(pack) = catalog::bundled().get(id) {
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
    /// in one transaction; with `sample`, their sample records too. Every problem the checks
    /// before the transaction find is reported at once; one found inside it (a workflow naming
    /// a field that does not exist, say) is reported alone. Either way nothing changes.
    pub async fn install(
        &self,
        principal: &Principal,
        source: &Source,
        sample: bool,
        dry_run: bool,
    ) -> Result<Report, PackError> {
        admin(principal)?;
        let target = self.load(source)?;
        let state = self.state(principal).await?;
        if let Some(existing) = state.pack(&target.manifest.id, "installed") {
            return Err(refused(
                format!("{}/pack.json#/id", target.manifest.id),
                format!(
                    "pack `{}` {} is installed: upgrade it instead",
                    existing.pack_id, existing.version
                ),
            ));
        }
        let mut packs: HashMap<String, Pack> = catalog::bundled().clone();
        packs.insert(target.manifest.id.clone(), target.clone());
        let available: HashMap<String, PackManifest> = packs
            .iter()
            .map(|(id, pack)| (id.clone(), pack.manifest.clone()))
            .collect();
        let installed = installed_versions(&state.stored)?;
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
        problems.extend(clashes(&checked, &state, None));
        problems.extend(extension_targets(
            &checked,
            &state,
            &self.manifests(&state, &available)?,
        ));
        if !problems.is_empty() {
            return Err(PackError::Refused(problems));
        }

        let (mut tx, _uncached) = self.open(principal, &state, &checked, None).await?;
        let result = self
            .install_in(&mut tx, principal, &checked, &state, sample)
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
    /// the difference in one transaction. Definitions merge three ways (see [`merge`]): the
    /// pack's changes win, what the administrator changed that the pack did not stays, fields
    /// the new version drops are deactivated (their data kept), and so are entities. Records are
    /// converted where field types change, and the pack's data migrations run.
    pub async fn upgrade(
        &self,
        principal: &Principal,
        id: &str,
        source: &Source,
        dry_run: bool,
    ) -> Result<Report, PackError> {
        admin(principal)?;
        let state = self.state(principal).await?;
        let current = state
            .pack(id, "installed")
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
        let installed = installed_versions(&state.stored)?;
        for (dependency, range) in &pack.manifest.depends {
            let problem = match installed.get(dependency) {
                Some(version) if range.matches(version) => continue,
                Some(version) => format!(
                    "`{id}` {} needs `{dependency}` {range}, and version {version} is installed: upgrade `{dependency}` first",
                    pack.manifest.version
                ),
                None => format!(
                    "`{id}` {} needs `{dependency}` {range}, which is not installed: install it first",
                    pack.manifest.version
                ),
            };
            problems.push(Problem::new(
                format!("{id}/pack.json#/depends/{dependency}"),
                problem,
            ));
        }
        for other in state
            .stored
            .iter()
            .filter(|other| other.status == "installed")
        {
            if let Some(range) = manifest_of(other)?.depends.get(id)
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
        let checked = [checked];
        problems.extend(clashes(&checked, &state, Some(&old)));
        let available = HashMap::from([(id.to_owned(), pack.manifest.clone())]);
        problems.extend(extension_targets(
            &checked,
            &state,
            &self.manifests(&state, &available)?,
        ));
        if !problems.is_empty() {
            return Err(PackError::Refused(problems));
        }

        let (mut tx, _uncached) = self.open(principal, &state, &checked, Some(&old)).await?;
        let result = self
            .upgrade_in(&mut tx, principal, &checked[0], &old, &from, &state)
            .await
            .map(|changes| vec![changes]);
        self.finish(tx, principal, result, dry_run, "upgrade", id)
            .await
    }

    /// Removes an installed pack: its workflows, views and plugins (those it installed and no
    /// other installed pack uses) go; its entities, their records and the fields it added to
    /// other entities stay (computed fields whose plugin goes are deactivated), unless `purge`,
    /// which deletes them. Refused while another installed pack depends on it.
    pub async fn remove(
        &self,
        principal: &Principal,
        id: &str,
        purge: bool,
        dry_run: bool,
    ) -> Result<Report, PackError> {
        admin(principal)?;
        let state = self.state(principal).await?;
        let current = state
            .pack(id, "installed")
            .ok_or_else(|| PackError::NotInstalled(id.to_owned()))?;
        let mut dependents = Vec::new();
        for other in state
            .stored
            .iter()
            .filter(|other| other.status == "installed")
        {
            if manifest_of(other)?.depends.contains_key(id) {
                dependents.push(format!("`{}`", other.pack_id));
            }
        }
        if !dependents.is_empty() {
            let many = dependents.len() > 1;
            return Err(refused(
                format!("{id}/pack.json#/id"),
                format!(
                    "installed pack{} {} depend{} on `{id}`: remove {} first",
                    if many { "s" } else { "" },
                    dependents.join(", "),
                    if many { "" } else { "s" },
                    if many { "them" } else { "it" }
                ),
            ));
        }
        let contents = contents_of(current)?;
        let (mut tx, _uncached) = self.open(principal, &state, &[], None).await?;
        let result = self
            .remove_in(&mut tx, principal, current, &contents, &state, purge)
            .await
            .map(|changes| vec![changes]);
        self.finish(tx, principal, result, dry_run, "remove", id)
            .await
    }

    /// What the tenant has, read before an operation's transaction.
    async fn state(&self, principal: &Principal) -> Result<TenantState, PackError> {
        let mut conn = self.store.reader().await?;
        Ok(TenantState::read(&mut conn.scoped(&principal.tenant)).await?)
    }

    /// Opens an operation's transaction, with the tenant's caches bypassed until the guards
    /// drop. Inside it: serializes pack operations of the tenant, refuses when its packs changed
    /// since the checks read them (another operation committed meanwhile), and checks again, on
    /// what the tenant has now, that the packs take no name someone else uses. A refusal drops
    /// the transaction: nothing was written.
    async fn open(
        &self,
        principal: &Principal,
        state: &TenantState,
        checked: &[check::Checked<'_>],
        own: Option<&Contents>,
    ) -> Result<(Tx, [crate::domain::UncachedGuard; 2]), PackError> {
        let guards = self.uncached(principal);
        let mut tx = self.store.begin().await?;
        let mut scoped = tx.scoped(&principal.tenant);
        scoped.lock_packs().await?;
        let now = TenantState::read(&mut scoped).await?;
        if !state.same_packs(&now.stored) {
            return Err(refused(
                "/",
                "the tenant's packs changed while this operation was checked: run it again",
            ));
        }
        let problems = clashes(checked, &now, own);
        if !problems.is_empty() {
            return Err(PackError::Refused(problems));
        }
        Ok((tx, guards))
    }

    /// The manifests of the packs an operation may meet: the tenant's and `available`.
    fn manifests(
        &self,
        state: &TenantState,
        available: &HashMap<String, PackManifest>,
    ) -> Result<HashMap<String, PackManifest>, PackError> {
        let mut manifests = available.clone();
        for pack in &state.stored {
            if !manifests.contains_key(&pack.pack_id) {
                manifests.insert(pack.pack_id.clone(), manifest_of(pack)?);
            }
        }
        Ok(manifests)
    }

    /// Keeps the tenant's definitions and plugins uncached while an operation's transaction is
    /// open (what it reads through it is uncommitted).
    fn uncached(&self, principal: &Principal) -> [crate::domain::UncachedGuard; 2] {
        [
            self.metadata.uncached(&principal.tenant),
            self.plugins.uncached(&principal.tenant),
        ]
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
}

fn admin(principal: &Principal) -> Result<(), PackError> {
    if principal.is_admin() {
        Ok(())
    } else {
        Err(PackError::Forbidden)
    }
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
        references_deactivated: Vec::new(),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bundled_packs_are_valid() {
        assert_eq!(catalog::bundled_problems(), &[] as &[Problem]);
        let packs = catalog::bundled();
        assert!(packs.contains_key("core"), "{:?}", packs.keys());
    }
}
