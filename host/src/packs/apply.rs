//! What an install, upgrade or removal does inside its one transaction, through the services'
//! `_in` functions that take the caller's transaction.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use semver::{Version, VersionReq};
use serde_json::{Map, Value};

use super::check::{Checked, TenantState, prefixed};
use super::merge::{
    Mode, has_field, interim, merge_entity, merge_extension, name_of, set_active, without_version,
};
use super::{
    Contents, EntityChange, ItemChange, PackChanges, PackError, Packs, PluginChange, PluginEntry,
    SAMPLE_BATCH, contents_of, entity_change, refused,
};
use crate::auth::Principal;
use crate::metadata::{Applied, MetadataError};
use crate::plugins::PluginError;
use crate::records::RecordError;
use crate::records::hooks::WriteContext;
use crate::store::Tx;
use crate::store::packs::StoredPack;
use crate::workflows::WorkflowError;
use crate::workflows::template::{Scope, Template};

impl Packs {
    pub(super) async fn install_in(
        &self,
        tx: &mut Tx,
        principal: &Principal,
        checked: &[Checked<'_>],
        state: &TenantState,
        sample: bool,
    ) -> Result<Vec<PackChanges>, PackError> {
        let tenant = &principal.tenant;
        let mut reports = Vec::new();
        let mut owned_plugins = Vec::new();
        // What each pack had when it was removed (its data kept), if it was.
        let removed: Vec<Contents> = checked
            .iter()
            .map(|pack| {
                state
                    .pack(pack.id(), "removed")
                    .map(contents_of)
                    .transpose()
                    .map(Option::unwrap_or_default)
            })
            .collect::<Result<_, _>>()?;
        // Definitions and plugins of every pack, dependencies first…
        for (pack, removed) in checked.iter().zip(&removed) {
            let id = pack.id();
            let mut report = PackChanges {
                id: id.to_owned(),
                to_version: Some(pack.pack.manifest.version.to_string()),
                ..PackChanges::default()
            };
            // An entity kept when the pack was removed is taken back, with the pack's fields.
            let mut batch =
                entity_batch(tx, principal, pack, removed, Mode::Adopt, &mut report).await?;
            for (entity, fields) in &pack.extends {
                let Some(current) = current_definition(tx, principal, entity).await? else {
                    return Err(refused(
                        format!("{id}/pack.json#/extends"),
                        format!("`{id}` adds fields to entity `{entity}`, which does not exist"),
                    ));
                };
                let before = removed.extends.get(entity).cloned().unwrap_or_default();
                let merged = merge_extension(&before, fields, &current, Mode::Adopt);
                batch.push((format!("{id}/extends/{entity}"), merged.definition));
                report.entities.push(entity_change(
                    entity,
                    "extended",
                    merged.added,
                    merged.deactivated,
                ));
            }
            let applied = self
                .metadata
                .apply_all_in(tx, tenant, Some(&principal.user), &batch)
                .await
                .map_err(|error| metadata_problems(id, error))?;
            describe_applied(&mut report.entities, &applied);
            owned_plugins.push(
                self.install_plugins(tx, principal, pack, removed, &mut report)
                    .await?,
            );
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
        for (((pack, report), plugins), removed) in checked
            .iter()
            .zip(&mut reports)
            .zip(owned_plugins)
            .zip(&removed)
        {
            self.put_views(tx, principal, pack, None, report).await?;
            report.roles = put_roles(tx, principal, pack.id(), &pack.roles, None).await?;
            let applied = self
                .workflows
                .apply_in(tx, tenant, principal.user.as_str(), &pack.workflows)
                .await
                .map_err(workflow_problems)?;
            report.workflows = applied
                .iter()
                .map(|(view, _)| ItemChange {
                    name: name_of(&view.definition),
                    change: "added",
                })
                .collect();
            // What the removed version had and this one lacks stays the pack's.
            let dropped = dropped_after(removed, pack);
            self.record_pack(tx, principal, pack, plugins, dropped)
                .await?;
        }
        Ok(reports)
    }

    pub(super) async fn upgrade_in(
        &self,
        tx: &mut Tx,
        principal: &Principal,
        checked: &Checked<'_>,
        old: &Contents,
        from: &Version,
        state: &TenantState,
    ) -> Result<PackChanges, PackError> {
        let tenant = &principal.tenant;
        let id = checked.id();
        let mut report = PackChanges {
            id: id.to_owned(),
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
        let mut batch =
            entity_batch(tx, principal, checked, old, Mode::Upgrade, &mut report).await?;
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
            let merged = merge_extension(&before, &after, &current, Mode::Upgrade);
            batch.push((format!("{id}/extends/{entity}"), merged.definition));
            report.entities.push(entity_change(
                entity,
                "extended",
                merged.added,
                merged.deactivated,
            ));
        }
        // Entities the new version no longer has stay, with their records, and stay the pack's
        // (a purge deletes them; a later version may bring them back).
        for name in old.entities.keys() {
            if !checked.entity_names().any(|own| &own == name) {
                report
                    .entities
                    .push(entity_change(name, "dropped", Vec::new(), Vec::new()));
            }
        }
        let dropped = dropped_after(old, checked);

        // Plugins first: the migrations write records, whose computed fields may need them.
        let plugins = self
            .install_plugins(tx, principal, checked, old, &mut report)
            .await?;
        // With data migrations to run, the records must still accept both the old values and
        // the new ones meanwhile: an interim definition first (see `merge::interim`), then the
        // migrations, then the final definitions (which check that every record converts).
        if !migrations.is_empty() {
            let mut between = Vec::new();
            for (file, merged) in &batch {
                let current = current_definition(tx, principal, &name_of(merged)).await?;
                between.push((file.clone(), interim(merged, current.as_ref())));
            }
            let applied = self
                .metadata
                .apply_all_in(tx, tenant, Some(&principal.user), &between)
                .await
                .map_err(|error| metadata_problems(id, error))?;
            describe_applied(&mut report.entities, &applied);
            for migration in migrations {
                report.migrated_records += self.migrate(tx, principal, migration).await?;
            }
        }
        let applied = self
            .metadata
            .apply_all_in(tx, tenant, Some(&principal.user), &batch)
            .await
            .map_err(|error| metadata_problems(id, error))?;
        describe_applied(&mut report.entities, &applied);
        // Plugins the new version no longer has go (unless another pack uses them), and the
        // computed fields that used them are deactivated.
        let still_used = plugins_used_by_others(&state.stored, id)?;
        let mut gone = BTreeSet::new();
        for plugin in old.plugins.keys() {
            if checked
                .plugins
                .iter()
                .any(|(_, prepared)| &prepared.manifest.id == plugin)
            {
                continue;
            }
            let change = self
                .drop_plugin(tx, principal, plugin, old, &still_used)
                .await?;
            if change.change == "removed" {
                gone.insert(plugin.clone());
            }
            report.plugins.push(change);
        }
        self.deactivate_computed(tx, principal, &gone, &mut report, None)
            .await?;
        self.put_views(tx, principal, checked, Some(old), &mut report)
            .await?;
        report.roles = put_roles(tx, principal, id, &checked.roles, Some(&old.roles)).await?;
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
        self.record_pack(tx, principal, checked, plugins, dropped)
            .await?;
        Ok(report)
    }

    pub(super) async fn remove_in(
        &self,
        tx: &mut Tx,
        principal: &Principal,
        current: &StoredPack,
        contents: &Contents,
        state: &TenantState,
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
                if scoped.delete_pack_view(name, id).await? {
                    report.views.push(ItemChange {
                        name: name.clone(),
                        change: "removed",
                    });
                }
            }
        }
        report.roles =
            put_roles(tx, principal, id, &BTreeMap::new(), Some(&contents.roles)).await?;
        let still_used = plugins_used_by_others(&state.stored, id)?;
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
        // Computed fields whose plugin is gone would refuse every write of their records, so
        // they are deactivated (their values kept).
        self.deactivate_computed(
            tx,
            principal,
            &gone,
            &mut report,
            (!purge).then_some(contents),
        )
        .await?;
        if !purge {
            tx.scoped(tenant).remove_pack(id, false).await?;
            return Ok(report);
        }
        let mut scoped = tx.scoped(tenant);
        let mut own_fields = contents.extends.clone();
        for (entity, fields) in &contents.dropped_extends {
            own_fields
                .entry(entity.clone())
                .or_default()
                .extend(fields.iter().cloned());
        }
        for (entity, fields) in &own_fields {
            let Some(mut definition) = scoped
                .get_entity(entity)
                .await?
                .map(|entity| entity.definition)
            else {
                continue;
            };
            let present: Vec<String> = fields
                .iter()
                .map(name_of)
                .filter(|name| has_field(&definition, name))
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
                .map_err(|error| metadata_problems(id, error))?;
            scoped = tx.scoped(tenant);
            for field in &present {
                self.metadata
                    .purge_field_in(&mut scoped, &principal.user, entity, field)
                    .await
                    .map_err(|error| metadata_problems(id, error))?;
            }
            report.entities.push(EntityChange {
                fields_removed: present,
                ..entity_change(entity, "extended", Vec::new(), Vec::new())
            });
        }
        for entity in contents.entities.keys().chain(contents.dropped.keys()) {
            if scoped.get_entity(entity).await?.is_some() {
                let referrers = self
                    .metadata
                    .delete_in(&mut scoped, &principal.user, entity, true)
                    .await
                    .map_err(|error| metadata_problems(id, error))?;
                report.entities.push(EntityChange {
                    references_deactivated: referrers,
                    ..entity_change(entity, "deleted", Vec::new(), Vec::new())
                });
            }
        }
        scoped.remove_pack(id, true).await?;
        Ok(report)
    }

    /// Deactivates the active computed fields of every entity whose plugin is in `gone` (their
    /// values kept); with `kept`, also reports the pack's entities as kept.
    async fn deactivate_computed(
        &self,
        tx: &mut Tx,
        principal: &Principal,
        gone: &BTreeSet<String>,
        report: &mut PackChanges,
        kept: Option<&Contents>,
    ) -> Result<(), PackError> {
        let tenant = &principal.tenant;
        let mut batch = Vec::new();
        let entities = tx.scoped(tenant).list_entities().await?;
        for entity in entities {
            let mut definition = entity.definition;
            let name = name_of(&definition);
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
            let own = kept.is_some_and(|kept| {
                kept.entities.contains_key(&name) || kept.dropped.contains_key(&name)
            });
            if own || !stale.is_empty() {
                report.entities.push(EntityChange {
                    fields_removed: stale.clone(),
                    ..entity_change(
                        &name,
                        if own { "kept" } else { "changed" },
                        Vec::new(),
                        Vec::new(),
                    )
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
                .map_err(|error| metadata_problems("/entities", error))?;
        }
        Ok(())
    }

    /// Installs (or upgrades) a pack's plugins and enables them; a plugin new to the tenant
    /// gets the pack's configuration, one it had keeps its state and configuration. Returns the
    /// plugins that are the pack's: those it installed, now or in `before` (what the pack had),
    /// not those an administrator or another pack installed first.
    async fn install_plugins(
        &self,
        tx: &mut Tx,
        principal: &Principal,
        pack: &Checked<'_>,
        before: &Contents,
        report: &mut PackChanges,
    ) -> Result<BTreeMap<String, PluginEntry>, PackError> {
        let mut scoped = tx.scoped(&principal.tenant);
        let mut owned = BTreeMap::new();
        for (source, prepared) in &pack.plugins {
            let id = prepared.manifest.id.clone();
            let existing = scoped.plugin(&id).await?;
            let mine = existing.is_none() || before.plugins.contains_key(&id);
            // The same version of someone else's plugin with other code is not replaced.
            if let Some(existing) = &existing
                && !mine
                && existing.version == prepared.manifest.version
                && existing.component != prepared.sha256
            {
                return Err(refused(
                    format!("{}/pack.json#/plugins/{}", pack.id(), source.index),
                    format!(
                        "plugin `{id}` {} is installed with another component than this pack's: remove it, or give the pack's a new version",
                        existing.version
                    ),
                ));
            }
            // A newer version another pack (or an administrator) installed is kept.
            if let Some(existing) = &existing
                && let (Ok(have), Ok(offered)) = (
                    Version::parse(&existing.version),
                    Version::parse(&prepared.manifest.version),
                )
                && have > offered
            {
                if let Some(entry) = before.plugins.get(&id) {
                    owned.insert(id.clone(), entry.clone());
                }
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
                .map_err(|error| {
                    plugin_problem(pack.id(), source.index, &source.crate_name, error)
                })?;
            // A plugin the tenant had keeps whether the administrator disabled it, and its
            // configuration; a new one is enabled with the pack's.
            let (enabled, config) = match &existing {
                Some(existing) => (existing.enabled, None),
                None => (true, source.config.as_ref()),
            };
            self.plugins
                .configure_in(&mut scoped, &id, enabled, config)
                .await
                .map_err(|error| {
                    plugin_problem(pack.id(), source.index, &source.crate_name, error)
                })?;
            let change = match &installed.previous_version {
                None => "added",
                Some(previous) if previous == &prepared.manifest.version => "unchanged",
                Some(_) => "upgraded",
            };
            if mine {
                owned.insert(
                    id.clone(),
                    PluginEntry {
                        crate_name: source.crate_name.clone(),
                        version: prepared.manifest.version.clone(),
                        capabilities: prepared
                            .manifest
                            .capabilities
                            .missing_from(&Default::default()),
                    },
                );
            }
            report.plugins.push(PluginChange {
                id,
                change,
                from_version: installed.previous_version.clone(),
                to_version: Some(prepared.manifest.version.clone()),
                capabilities_added: installed.capabilities_added,
                capabilities_removed: installed.capabilities_removed,
            });
        }
        Ok(owned)
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
        tx.scoped(&principal.tenant).remove_plugin(plugin).await?;
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
        let id = pack.id();
        let mut scoped = tx.scoped(&principal.tenant);
        // Views, reports and dashboards; a dashboard may show a report of the same pack.
        let reports: BTreeMap<String, Value> = pack
            .views
            .iter()
            .filter(|(_, json)| crate::analytics::Kind::of(json) == crate::analytics::Kind::Report)
            .map(|(_, json)| (name_of(json), json.clone()))
            .collect();
        for (file, json) in &pack.views {
            let name = crate::analytics::parse_any(json)
                .map_err(|found| PackError::Refused(prefixed(file, found)))?;
            crate::analytics::check_in(&self.records, &self.metadata, &mut scoped, json, &reports)
                .await
                .map_err(|found| PackError::Refused(prefixed(file, found)))?;
            let change = match old.and_then(|old| old.views.get(&name)) {
                None => "added",
                Some(before) if before == json => "unchanged",
                Some(_) => "updated",
            };
            scoped.put_view(&name, &json.to_string(), Some(id)).await?;
            report.views.push(ItemChange { name, change });
        }
        for name in old.map(|old| old.views.keys()).into_iter().flatten() {
            if !pack.views.iter().any(|(_, json)| &name_of(json) == name)
                && scoped.delete_pack_view(name, id).await?
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
        plugins: BTreeMap<String, PluginEntry>,
        dropped: Dropped,
    ) -> Result<(), PackError> {
        let manifest = &pack.pack.manifest;
        let contents = Contents {
            entities: pack
                .entities
                .iter()
                .map(|(_, json)| (name_of(json), json.clone()))
                .collect(),
            dropped: dropped.entities,
            extends: pack.extends.clone(),
            dropped_extends: dropped.fields,
            uses: pack
                .plugins
                .iter()
                .map(|(_, prepared)| prepared.manifest.id.clone())
                .collect(),
            workflows: pack
                .workflows
                .iter()
                .map(|(_, json)| (name_of(json), json.clone()))
                .collect(),
            plugins,
            roles: pack.roles.clone(),
            views: pack
                .views
                .iter()
                .map(|(_, json)| (name_of(json), json.clone()))
                .collect(),
        };
        tx.scoped(&principal.tenant)
            .put_pack(
                &manifest.id,
                &manifest.version.to_string(),
                &serde_json::to_string(manifest).expect("manifests serialize"),
                &serde_json::to_string(&contents).expect("contents serialize"),
                &principal.user,
            )
            .await?;
        Ok(())
    }

    /// Writes sample records file by file: `$key` names a record for later references,
    /// `{"$key": k}` refers to one, a value that is exactly `{{today - 30d}}` is rendered.
    /// Returns how many.
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
            for (chunk_index, chunk) in records.chunks(SAMPLE_BATCH).enumerate() {
                let start = chunk_index * SAMPLE_BATCH;
                let mut bodies = Vec::with_capacity(chunk.len());
                let mut chunk_keys = Vec::with_capacity(chunk.len());
                for (offset, record) in chunk.iter().enumerate() {
                    let path = format!("{file}#/records/{}", start + offset);
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
                    .map_err(|error| sample_problem(file, start, error))?;
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
        const PAGE: i64 = 500;
        let mut scoped = tx.scoped(&principal.tenant);
        let mut context = WriteContext::new(principal, crate::store::now());
        context.quiet = true;
        let mut count = 0;
        for update in migration["updates"].as_array().into_iter().flatten() {
            let entity = update["entity"].as_str().unwrap_or_default();
            let filter = update["filter"].as_str().unwrap_or("_id is not null");
            let values: Map<String, Value> = update["set"].as_object().cloned().unwrap_or_default();
            let mut after: Option<String> = None;
            loop {
                let ids = self
                    .records
                    .step_matching(&mut scoped, entity, filter, after.as_deref(), PAGE)
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
                    Some(last) if ids.len() as i64 == PAGE => after = Some(last.clone()),
                    _ => break,
                }
            }
        }
        Ok(count)
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
            if entry.change == "changed"
                && entry.changes.is_empty()
                && entry.fields_added.is_empty()
                && entry.fields_removed.is_empty()
            {
                entry.change = "unchanged";
            }
        }
    }
}

/// Writes a pack's roles (`new`), and deletes those of its previous contents (`old`) that it
/// no longer has, unless users still hold them (those stay, as the tenant's). A role of the
/// same name that is not the pack's refuses the operation.
async fn put_roles(
    tx: &mut Tx,
    principal: &Principal,
    id: &str,
    new: &BTreeMap<String, Value>,
    old: Option<&BTreeMap<String, Value>>,
) -> Result<Vec<ItemChange>, PackError> {
    let mut scoped = tx.scoped(&principal.tenant);
    let mut changes = Vec::new();
    for (name, role) in new {
        let existing = scoped.role(name).await?;
        if let Some(existing) = &existing
            && existing.pack_id.as_deref() != Some(id)
        {
            let owner = existing
                .pack_id
                .as_deref()
                .map_or("the tenant".to_owned(), |pack| format!("pack `{pack}`"));
            return Err(refused(
                format!("{id}/pack.json#/roles"),
                format!("role `{name}` already exists and belongs to {owner}"),
            ));
        }
        let stored: Option<Value> = existing
            .as_ref()
            .and_then(|existing| serde_json::from_str(&existing.definition).ok());
        let change = match (&stored, old.and_then(|old| old.get(name))) {
            (None, _) => "added",
            (Some(before), _) if before == role => "unchanged",
            _ => "updated",
        };
        scoped.put_role(name, &role.to_string(), Some(id)).await?;
        changes.push(ItemChange {
            name: name.clone(),
            change,
        });
    }
    for name in old
        .into_iter()
        .flat_map(|old| old.keys())
        .filter(|name| !new.contains_key(*name))
    {
        let Some(existing) = scoped.role(name).await? else {
            continue;
        };
        if existing.pack_id.as_deref() != Some(id) {
            continue;
        }
        let change = if scoped.role_holders(name).await? > 0 {
            "kept (users hold it)"
        } else {
            scoped.delete_role(name).await?;
            "removed"
        };
        changes.push(ItemChange {
            name: name.clone(),
            change,
        });
    }
    Ok(changes)
}

/// The plugins other installed packs installed or use.
fn plugins_used_by_others(stored: &[StoredPack], id: &str) -> Result<BTreeSet<String>, PackError> {
    let mut used = BTreeSet::new();
    for other in stored
        .iter()
        .filter(|other| other.pack_id != id && other.status == "installed")
    {
        let contents = contents_of(other)?;
        used.extend(contents.plugins.into_keys());
        used.extend(contents.uses);
    }
    Ok(used)
}

/// What a pack had (`old`) and the version being applied lacks, which stays the pack's: its
/// entities (kept with their records) and the fields it added to other entities (deactivated).
struct Dropped {
    entities: BTreeMap<String, Value>,
    fields: BTreeMap<String, Vec<Value>>,
}

fn dropped_after(old: &Contents, pack: &Checked<'_>) -> Dropped {
    let mut entities = old.dropped.clone();
    for (name, definition) in &old.entities {
        entities.insert(name.clone(), definition.clone());
    }
    entities.retain(|name, _| !pack.entity_names().any(|own| &own == name));
    let mut fields = old.dropped_extends.clone();
    for (entity, added) in &old.extends {
        let target = fields.entry(entity.clone()).or_default();
        for field in added {
            if !target.iter().any(|f| name_of(f) == name_of(field)) {
                target.push(field.clone());
            }
        }
    }
    for (entity, target) in &mut fields {
        let offered = pack.extends.get(entity);
        target.retain(|field| {
            !offered.is_some_and(|offered| offered.iter().any(|f| name_of(f) == name_of(field)))
        });
    }
    fields.retain(|_, target| !target.is_empty());
    Dropped { entities, fields }
}

/// A sample value with references and date templates resolved. Only a string that is exactly
/// one template is rendered; any other text (an email template with placeholders, say) is kept.
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
        Value::String(text)
            if text.starts_with("{{")
                && text.ends_with("}}")
                && text.matches("{{").count() == 1 =>
        {
            Template::parse(text)?.render(&Scope {
                now: Some(now),
                ..Scope::default()
            })?
        }
        other => other.clone(),
    })
}

/// The definitions of a pack's entities to apply: new ones as they are, existing ones merged
/// with the tenant's (`old` what the pack had), each reported.
async fn entity_batch(
    tx: &mut Tx,
    principal: &Principal,
    pack: &Checked<'_>,
    old: &Contents,
    mode: Mode,
    report: &mut PackChanges,
) -> Result<Vec<(String, Value)>, PackError> {
    let mut batch = Vec::new();
    for (file, json) in &pack.entities {
        let name = name_of(json);
        let Some(current) = current_definition(tx, principal, &name).await? else {
            batch.push((file.clone(), json.clone()));
            report
                .entities
                .push(entity_change(&name, "added", Vec::new(), Vec::new()));
            continue;
        };
        let before = old.entities.get(&name).or(old.dropped.get(&name));
        let merged = merge_entity(before, json, &current, mode);
        batch.push((file.clone(), merged.definition));
        report.entities.push(entity_change(
            &name,
            if mode == Mode::Adopt {
                "adopted"
            } else {
                "changed"
            },
            merged.added,
            merged.deactivated,
        ));
    }
    Ok(batch)
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

fn metadata_problems(context: &str, error: MetadataError) -> PackError {
    match error {
        MetadataError::Store(error) => PackError::Store(error),
        MetadataError::Invalid(problems) => PackError::Refused(problems),
        MetadataError::Unconvertible(checks) => PackError::Refused(
            checks
                .into_iter()
                .map(|check| {
                    crate::metadata::validation::Problem::new(
                        format!("{context}#/fields/{}", check.field),
                        format!(
                            "{} of {} values of `{}` would not convert: add a migration, or change the records first",
                            check.failures, check.records_with_value, check.field
                        ),
                    )
                })
                .collect(),
        ),
        other => refused(context, other.to_string()),
    }
}

fn workflow_problems(error: WorkflowError) -> PackError {
    match error {
        WorkflowError::Store(error) => PackError::Store(error),
        WorkflowError::Invalid(problems) => PackError::Refused(problems),
        other => refused("/workflows", other.to_string()),
    }
}

fn plugin_problem(pack: &str, index: usize, crate_name: &str, error: PluginError) -> PackError {
    match error {
        PluginError::Store(error) => PackError::Store(error),
        other => refused(
            format!("{pack}/pack.json#/plugins/{index}"),
            format!("plugin `{crate_name}`: {other}"),
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
                    crate::metadata::validation::Problem::new(
                        format!("{path}/{field}"),
                        messages.join("; "),
                    )
                })
                .collect(),
        ),
        other => refused(path, other.to_string()),
    }
}

/// A sample batch's error, each problem at `<file>#/records/<index>/<field>` (the batch names
/// fields `records[<i>].<field>`, counted from the batch's first record, `start`).
fn sample_problem(file: &str, start: usize, error: RecordError) -> PackError {
    let place = |key: &str| -> String {
        let parsed = key.strip_prefix("records[").and_then(|rest| {
            let (index, field) = rest.split_once(']')?;
            Some((index.parse::<usize>().ok()?, field.trim_start_matches('.')))
        });
        match parsed {
            Some((index, "")) => format!("{file}#/records/{}", start + index),
            Some((index, field)) => format!("{file}#/records/{}/{field}", start + index),
            None => format!("{file}#/records/{key}"),
        }
    };
    match error {
        RecordError::Store(error) => PackError::Store(error),
        RecordError::Invalid(fields) | RecordError::Conflict(fields) => PackError::Refused(
            fields
                .into_iter()
                .map(|(key, messages)| {
                    crate::metadata::validation::Problem::new(place(&key), messages.join("; "))
                })
                .collect(),
        ),
        other => refused(format!("{file}#/records"), other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn sample_values_resolve_keys_and_dates_and_keep_other_text() {
        let keys = HashMap::from([("acme".to_owned(), "0190-id".to_owned())]);
        let now = time::macros::datetime!(2026-12-02 10:00 UTC);
        let resolved = resolve_sample(
            &json!({"account": {"$key": "acme"}, "ordered_on": "{{today - 30d}}", "n": 3,
                    "body": "Dear {{contact_name}}, see you on {{starts_on}}"}),
            &keys,
            now,
        )
        .unwrap();
        assert_eq!(
            resolved,
            json!({"account": "0190-id", "ordered_on": "2026-11-02", "n": 3,
                   "body": "Dear {{contact_name}}, see you on {{starts_on}}"})
        );
        let error = resolve_sample(&json!({"account": {"$key": "nope"}}), &keys, now).unwrap_err();
        assert!(error.contains("nope"), "{error}");
    }

    #[test]
    fn a_sample_batchs_problems_name_the_record_in_the_file() {
        let error = sample_problem(
            "core/sample/01_account.json",
            500,
            RecordError::Invalid(
                [("records[3].name".to_owned(), vec!["required".to_owned()])].into(),
            ),
        );
        let PackError::Refused(problems) = error else {
            panic!("{error:?}")
        };
        assert_eq!(
            problems[0].path,
            "core/sample/01_account.json#/records/503/name"
        );
    }
}
