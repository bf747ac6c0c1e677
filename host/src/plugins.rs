//! Plugins: WebAssembly components that customize Rapport (validators, record hooks, computed
//! fields, workflow steps), run in a sandbox with hard limits.
//!
//! - [`manifest`]: what a plugin is, provides, may do and within which limits;
//! - [`runtime`]: the engine, component checks and compilation (cached on disk), and one fresh,
//!   limited instance per invocation;
//! - [`host`]: the host interfaces a plugin imports, each treating its input as hostile;
//! - [`Plugins`]: the registry (install, upgrade, enable, configure, remove per tenant), the
//!   compiled components in memory, and the record of every run.

pub mod host;
pub mod manifest;
pub mod runtime;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::auth::Principal;
use crate::domain::TenantId;
use crate::store::plugins::{NewRun, PluginRun, StoredPlugin};
use crate::store::{Scoped, Store, StoreError};
use manifest::{Capabilities, Limits, Manifest, ManifestProblem};
use runtime::{LoadError, LoadedComponent, Runtime};

/// How long a tenant's list of enabled plugins is trusted before it is read again: changes made
/// through this server apply at once; changes made by another process (`rapport plugin
/// install`, another server on the same PostgreSQL) within this time.
const ACTIVE_TTL: Duration = Duration::from_secs(5);

/// A tenant's enabled plugins and when they were read.
type ActiveEntry = (Instant, Arc<Vec<Active>>);

/// The largest component accepted (bytes).
pub const MAX_COMPONENT: usize = 16 << 20;

/// Errors of the plugin registry.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("only administrators see and manage plugins")]
    Forbidden,
    #[error("no plugin `{0}` is installed")]
    NotFound(String),
    #[error("the manifest is invalid")]
    InvalidManifest(Vec<ManifestProblem>),
    #[error("the configuration does not match the plugin's configuration schema")]
    InvalidConfig(Vec<ManifestProblem>),
    #[error("{0}")]
    InvalidComponent(#[from] LoadError),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A plugin enabled in a tenant, ready to run.
#[derive(Debug)]
pub struct Active {
    pub id: String,
    pub version: String,
    pub manifest: Manifest,
    pub limits: Limits,
    /// The limits of its workflow steps.
    pub job_limits: Limits,
    /// The effective configuration (JSON object text): the tenant's, or the manifest's default.
    pub config: String,
    pub component: Arc<LoadedComponent>,
}

/// A plugin as the API shows it.
#[derive(Debug, Serialize)]
pub struct PluginView {
    pub id: String,
    pub version: String,
    pub enabled: bool,
    pub description: Option<String>,
    pub contract: String,
    pub provides: manifest::Provides,
    pub capabilities: Capabilities,
    pub limits: Limits,
    pub job_limits: Limits,
    pub config: Value,
    pub config_schema: Option<Value>,
    pub component_sha256: String,
    #[serde(with = "time::serde::rfc3339")]
    pub installed_at: time::OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: time::OffsetDateTime,
}

/// What an install or upgrade did.
#[derive(Debug, Serialize)]
pub struct Installed {
    pub plugin: PluginView,
    /// The version replaced by this upload, if any.
    pub previous_version: Option<String>,
    /// Capabilities this version requests that the previous one did not (all on a first install).
    pub capabilities_added: Vec<String>,
    /// Capabilities the previous version requested that this one does not.
    pub capabilities_removed: Vec<String>,
}

/// How often run records are written, at most: a run shows in `/plugins/{id}/runs` within
/// about this time.
const RUNS_EVERY: Duration = Duration::from_millis(100);
/// The most runs written at once.
const BATCH: usize = 500;

/// What the run recorder receives: a run, or a request to write what it holds now.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "nearly every message is a run; boxing it would allocate for each"
)]
enum ToRecorder {
    Run(NewRun),
    Flush(oneshot::Sender<()>),
}

/// The plugins of every tenant: registry, compiled components and run records.
#[derive(Debug, Clone)]
pub struct Plugins {
    store: Store,
    runtime: Runtime,
    loaded: Arc<RwLock<HashMap<String, Arc<LoadedComponent>>>>,
    active: Arc<RwLock<HashMap<TenantId, ActiveEntry>>>,
    /// Tenants whose plugin list is not cached now (see [`Plugins::uncached`]).
    uncached: crate::domain::Uncached,
    runs: mpsc::Sender<ToRecorder>,
}

/// A plugin checked and compiled for an install (see [`Plugins::prepare`]).
#[derive(Debug, Clone)]
pub struct Prepared {
    pub manifest: Manifest,
    pub sha256: String,
}

impl Plugins {
    /// The plugin service; compiled components are cached under `cache_dir`. Runs are recorded
    /// by a background task, apart from the requests they ran in.
    pub fn new(store: Store, cache_dir: Option<std::path::PathBuf>) -> anyhow::Result<Self> {
        let runtime = Runtime::new(cache_dir)
            .map_err(|error| anyhow::anyhow!("cannot start the plugin engine: {error:#}"))?;
        let (runs, mut pending) = mpsc::channel::<ToRecorder>(10_000);
        let recorder = store.clone();
        tokio::spawn(async move {
            let mut batch = Vec::new();
            loop {
                let received = pending.recv_many(&mut batch, BATCH).await;
                if received == 0 {
                    break;
                }
                let started = tokio::time::Instant::now();
                let mut flushed = Vec::new();
                let runs: Vec<NewRun> = batch
                    .drain(..)
                    .filter_map(|message| match message {
                        ToRecorder::Run(run) => Some(run),
                        ToRecorder::Flush(done) => {
                            flushed.push(done);
                            None
                        }
                    })
                    .collect();
                let count = runs.len();
                if let Err(error) = recorder.insert_runs(runs).await {
                    tracing::warn!(%error, runs = count, "cannot record plugin runs");
                }
                if !flushed.is_empty() {
                    for done in flushed {
                        let _ = done.send(());
                    }
                    continue;
                }
                // At most one write of runs per `RUNS_EVERY`: written as soon as they came, the
                // runs of each hooked write were a write of their own, and on SQLite the next
                // write waited for its commit (one more fsync per hooked create). A full batch
                // means more are waiting: those are written at once.
                if received < BATCH {
                    tokio::time::sleep_until(started + RUNS_EVERY).await;
                }
            }
        });
        Ok(Self {
            store,
            runtime,
            loaded: Arc::default(),
            active: Arc::default(),
            uncached: Default::default(),
            runs,
        })
    }

    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// Records a run; dropped with a warning if the recorder is far behind.
    pub fn record(&self, run: NewRun) {
        if self.runs.try_send(ToRecorder::Run(run)).is_err() {
            tracing::warn!("plugin run records are behind; one was dropped");
        }
    }

    /// Writes the runs recorded so far now, without waiting for the next batch; returns once
    /// they are stored (at shut-down, so that the last runs are not lost).
    pub async fn flush_runs(&self) {
        let (done, flushed) = oneshot::channel();
        if self.runs.send(ToRecorder::Flush(done)).await.is_ok() {
            let _ = flushed.await;
        }
    }

    fn admin(principal: &Principal) -> Result<(), PluginError> {
        if principal.is_admin() {
            Ok(())
        } else {
            Err(PluginError::Forbidden)
        }
    }

    /// Checks, compiles, stores and installs (or upgrades) a plugin in the caller's tenant. The
    /// upload is refused as a whole if the manifest, the component or its imports are wrong.
    pub async fn install(
        &self,
        principal: &Principal,
        manifest: &Value,
        component: &[u8],
    ) -> Result<Installed, PluginError> {
        Self::admin(principal)?;
        let prepared = self.prepare(manifest, component).await?;
        let mut tx = self.store.begin().await?;
        let installed = self
            .install_in(
                &mut tx.scoped(&principal.tenant),
                &prepared,
                &principal.user,
            )
            .await?;
        tx.commit().await?;
        self.forget(&principal.tenant);
        Ok(installed)
    }

    /// The checks of an install that need no transaction: the manifest, the component's size,
    /// imports and exports, and its compilation; the component's bytes are stored (by content
    /// hash: storing them again changes nothing).
    pub async fn prepare(
        &self,
        manifest: &Value,
        component: &[u8],
    ) -> Result<Prepared, PluginError> {
        let manifest = Manifest::parse(manifest).map_err(PluginError::InvalidManifest)?;
        if component.len() > MAX_COMPONENT {
            return Err(PluginError::BadRequest(format!(
                "the component is {} bytes; at most {MAX_COMPONENT} are accepted",
                component.len()
            )));
        }
        let loaded = self.load(component.to_vec()).await?;
        self.store.put_component(&loaded.sha256, component).await?;
        Ok(Prepared {
            manifest,
            sha256: loaded.sha256.clone(),
        })
    }

    /// Installs (or upgrades) a prepared plugin in the caller's transaction, keeping whether it
    /// is enabled and its configuration. The caller commits, then calls [`Plugins::changed`].
    pub async fn install_in(
        &self,
        scoped: &mut Scoped<'_>,
        prepared: &Prepared,
        user: &crate::domain::UserId,
    ) -> Result<Installed, PluginError> {
        let manifest = &prepared.manifest;
        let previous = scoped.plugin(&manifest.id).await?;
        let previous_manifest = previous
            .as_ref()
            .map(|stored| parse_stored(&stored.manifest))
            .transpose()?;
        scoped
            .put_plugin(
                &manifest.id,
                &manifest.version,
                &serde_json::to_string(manifest).expect("manifests serialize"),
                &prepared.sha256,
                user,
            )
            .await?;
        let stored = scoped
            .plugin(&manifest.id)
            .await?
            .ok_or_else(|| PluginError::NotFound(manifest.id.clone()))?;
        let empty = Capabilities::default();
        let before = previous_manifest
            .as_ref()
            .map_or(&empty, |previous| &previous.capabilities);
        Ok(Installed {
            capabilities_added: manifest.capabilities.missing_from(before),
            capabilities_removed: before.missing_from(&manifest.capabilities),
            previous_version: previous.map(|stored| stored.version),
            plugin: view(&stored)?,
        })
    }

    /// Enables or disables a plugin and sets its configuration (checked against its schema;
    /// `None` keeps it), in the caller's transaction.
    pub async fn configure_in(
        &self,
        scoped: &mut Scoped<'_>,
        id: &str,
        enabled: bool,
        config: Option<&Value>,
    ) -> Result<(), PluginError> {
        let stored = scoped
            .plugin(id)
            .await?
            .ok_or_else(|| PluginError::NotFound(id.to_owned()))?;
        if let Some(config) = config {
            let manifest = parse_stored(&stored.manifest)?;
            manifest
                .check_config(config)
                .map_err(PluginError::InvalidConfig)?;
            scoped.set_plugin_config(id, &config.to_string()).await?;
        }
        scoped.set_plugin_enabled(id, enabled).await?;
        Ok(())
    }

    /// After a transaction that changed the tenant's plugins (`install_in`, `configure_in`):
    /// they are read again.
    pub fn changed(&self, tenant: &TenantId) {
        self.forget(tenant);
    }

    /// While the guard lives, the tenant's enabled plugins are read through each caller's
    /// transaction and never cached: a pack's install writes sample records with the plugins it
    /// installs in the same, uncommitted transaction, and nobody else may see them before it
    /// commits (or ever, if it rolls back).
    pub fn uncached(&self, tenant: &TenantId) -> crate::domain::UncachedGuard {
        self.forget(tenant);
        self.uncached.enter(tenant)
    }

    fn is_uncached(&self, tenant: &TenantId) -> bool {
        self.uncached.contains(tenant)
    }

    /// Compiles a component (on a blocking thread: compilation takes a while), or takes it from
    /// the in-memory cache.
    async fn load(&self, bytes: Vec<u8>) -> Result<Arc<LoadedComponent>, PluginError> {
        let runtime = self.runtime.clone();
        let loaded = tokio::task::spawn_blocking(move || runtime.load(&bytes))
            .await
            .map_err(|error| PluginError::BadRequest(format!("compilation failed: {error}")))??;
        let loaded = Arc::new(loaded);
        self.loaded
            .write()
            .expect("plugin cache lock")
            .insert(loaded.sha256.clone(), loaded.clone());
        Ok(loaded)
    }

    async fn component(
        &self,
        scoped: &mut Scoped<'_>,
        sha256: &str,
    ) -> Result<Arc<LoadedComponent>, PluginError> {
        if let Some(loaded) = self.loaded.read().expect("plugin cache lock").get(sha256) {
            return Ok(loaded.clone());
        }
        let bytes = scoped.component_bytes(sha256).await?.ok_or_else(|| {
            PluginError::Store(StoreError::Corrupt(format!(
                "component {sha256} is missing"
            )))
        })?;
        self.load(bytes).await
    }

    /// Forgets the tenant's enabled plugins: the next request reads them again.
    fn forget(&self, tenant: &TenantId) {
        self.active
            .write()
            .expect("active plugins lock")
            .remove(tenant);
    }

    /// The plugins enabled in a tenant, loaded and ready to run (read with a connection of its
    /// own when not cached: not for use inside a transaction, see [`Plugins::active_in`]).
    pub async fn active(&self, tenant: &TenantId) -> Result<Arc<Vec<Active>>, PluginError> {
        if !self.is_uncached(tenant)
            && let Some(active) = self.cached_active(tenant)
        {
            return Ok(active);
        }
        let mut conn = self.store.reader().await?;
        self.active_in(&mut conn.scoped(tenant)).await
    }

    /// [`Plugins::active`] through the caller's connection or transaction: a write that holds a
    /// connection never waits for a second one (with every connection of the pool held by
    /// writes waiting for another, none would finish).
    pub async fn active_in(
        &self,
        scoped: &mut Scoped<'_>,
    ) -> Result<Arc<Vec<Active>>, PluginError> {
        let tenant = scoped.tenant().clone();
        let uncached = self.is_uncached(&tenant);
        if !uncached && let Some(active) = self.cached_active(&tenant) {
            return Ok(active);
        }
        let stored = scoped.plugins().await?;
        let mut active = Vec::new();
        for plugin in stored.into_iter().filter(|plugin| plugin.enabled) {
            let manifest = parse_stored(&plugin.manifest)?;
            let config = effective_config(&plugin, &manifest).to_string();
            active.push(Active {
                id: plugin.plugin_id,
                version: plugin.version,
                limits: manifest.limits(),
                job_limits: manifest.job_limits(),
                manifest,
                config,
                component: self.component(scoped, &plugin.component).await?,
            });
        }
        let active = Arc::new(active);
        if !uncached {
            self.active
                .write()
                .expect("active plugins lock")
                .insert(tenant, (Instant::now(), active.clone()));
        }
        Ok(active)
    }

    /// Whether `active` is still the tenant's cached list of enabled plugins (nothing was
    /// enabled, disabled or reconfigured since it was read, as far as this server knows).
    pub fn still_active(&self, tenant: &TenantId, active: &Arc<Vec<Active>>) -> bool {
        !self.is_uncached(tenant)
            && self
                .cached_active(tenant)
                .is_some_and(|now| Arc::ptr_eq(&now, active))
    }

    fn cached_active(&self, tenant: &TenantId) -> Option<Arc<Vec<Active>>> {
        self.active
            .read()
            .expect("active plugins lock")
            .get(tenant)
            .filter(|(read_at, _)| read_at.elapsed() < ACTIVE_TTL)
            .map(|(_, active)| active.clone())
    }

    /// The tenant's plugins (administrators: configurations may hold secrets).
    pub async fn list(&self, principal: &Principal) -> Result<Vec<PluginView>, PluginError> {
        Self::admin(principal)?;
        let mut conn = self.store.reader().await?;
        let stored = conn.scoped(&principal.tenant).plugins().await?;
        stored.iter().map(view).collect()
    }

    pub async fn show(&self, principal: &Principal, id: &str) -> Result<PluginView, PluginError> {
        Self::admin(principal)?;
        let mut conn = self.store.reader().await?;
        let stored = conn
            .scoped(&principal.tenant)
            .plugin(id)
            .await?
            .ok_or_else(|| PluginError::NotFound(id.to_owned()))?;
        view(&stored)
    }

    pub async fn set_enabled(
        &self,
        principal: &Principal,
        id: &str,
        enabled: bool,
    ) -> Result<PluginView, PluginError> {
        Self::admin(principal)?;
        let mut tx = self.store.begin().await?;
        let mut scoped = tx.scoped(&principal.tenant);
        if !scoped.set_plugin_enabled(id, enabled).await? {
            return Err(PluginError::NotFound(id.to_owned()));
        }
        let stored = scoped
            .plugin(id)
            .await?
            .ok_or_else(|| PluginError::NotFound(id.to_owned()))?;
        tx.commit().await?;
        self.forget(&principal.tenant);
        view(&stored)
    }

    /// Sets the tenant's configuration of a plugin, validated against its configuration schema.
    pub async fn configure(
        &self,
        principal: &Principal,
        id: &str,
        config: &Value,
    ) -> Result<PluginView, PluginError> {
        Self::admin(principal)?;
        let mut tx = self.store.begin().await?;
        let mut scoped = tx.scoped(&principal.tenant);
        let stored = scoped
            .plugin(id)
            .await?
            .ok_or_else(|| PluginError::NotFound(id.to_owned()))?;
        let manifest = parse_stored(&stored.manifest)?;
        manifest
            .check_config(config)
            .map_err(PluginError::InvalidConfig)?;
        scoped.set_plugin_config(id, &config.to_string()).await?;
        let stored = scoped
            .plugin(id)
            .await?
            .ok_or_else(|| PluginError::NotFound(id.to_owned()))?;
        tx.commit().await?;
        self.forget(&principal.tenant);
        view(&stored)
    }

    pub async fn remove(&self, principal: &Principal, id: &str) -> Result<(), PluginError> {
        Self::admin(principal)?;
        let mut tx = self.store.begin().await?;
        if !tx.scoped(&principal.tenant).remove_plugin(id).await? {
            return Err(PluginError::NotFound(id.to_owned()));
        }
        tx.commit().await?;
        self.forget(&principal.tenant);
        Ok(())
    }

    pub async fn runs(
        &self,
        principal: &Principal,
        id: &str,
        failures: bool,
        limit: i64,
    ) -> Result<Vec<PluginRun>, PluginError> {
        Self::admin(principal)?;
        let mut conn = self.store.reader().await?;
        let mut scoped = conn.scoped(&principal.tenant);
        if scoped.plugin(id).await?.is_none() {
            return Err(PluginError::NotFound(id.to_owned()));
        }
        Ok(scoped.plugin_runs(id, failures, limit).await?)
    }
}

fn parse_stored(text: &str) -> Result<Manifest, PluginError> {
    let value: Value = serde_json::from_str(text)
        .map_err(|error| StoreError::Corrupt(format!("a stored manifest: {error}")))?;
    Manifest::parse(&value).map_err(|problems| {
        PluginError::Store(StoreError::Corrupt(format!(
            "a stored manifest no longer validates: {problems:?}"
        )))
    })
}

fn effective_config(plugin: &StoredPlugin, manifest: &Manifest) -> Value {
    plugin
        .config
        .as_deref()
        .and_then(|text| serde_json::from_str(text).ok())
        .or_else(|| manifest.default_config.clone())
        .unwrap_or_else(|| json!({}))
}

fn view(stored: &StoredPlugin) -> Result<PluginView, PluginError> {
    let manifest = parse_stored(&stored.manifest)?;
    Ok(PluginView {
        id: stored.plugin_id.clone(),
        version: stored.version.clone(),
        enabled: stored.enabled,
        config: effective_config(stored, &manifest),
        limits: manifest.limits(),
        job_limits: manifest.job_limits(),
        description: manifest.description,
        contract: manifest.contract,
        provides: manifest.provides,
        capabilities: manifest.capabilities,
        config_schema: manifest.config_schema,
        component_sha256: stored.component.clone(),
        installed_at: stored.installed_at,
        updated_at: stored.updated_at,
    })
}

/// Decodes a base64 component from an upload body.
pub fn decode_component(text: &str) -> Result<Vec<u8>, PluginError> {
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|error| PluginError::BadRequest(format!("`component` is not base64: {error}")))
}

#[cfg(test)]
mod tests;
