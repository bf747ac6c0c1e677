//! Workflows: definitions as data (versioned), the triggers that start runs inside the writes
//! that cause them, and the engine ([`engine`]) that runs them durably.
//!
//! A record write that matches an enabled workflow inserts the run in its own transaction, so
//! a run exists exactly when its write committed. The engine then claims due runs with a lease
//! and runs one step per transaction: a step's effects (records written, notifications, outbox
//! messages) commit together with the step's state, so a host that dies mid-step leaves no
//! trace of it, and the host that takes the run over does the step once.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use tokio::sync::Notify;

use crate::auth::Principal;
use crate::domain::TenantId;
use crate::metadata::Metadata;
use crate::metadata::validation::Problem;
use crate::plugins::Plugins;
use crate::records::filter::{self, Filter};
use crate::store::workflows::{NewRun, RunFilter, StoredRun, StoredStep, StoredWorkflow};
use crate::store::{Scoped, Store, StoreError, Tx};

pub mod condition;
pub mod definition;
pub mod engine;
mod schedule;
pub mod template;
pub mod timers;

use definition::{Event, Plan, RunAs, Trigger, WorkflowDefinition};

/// How deep runs may start runs: a run whose writes start a run of depth [`MAX_DEPTH`] is a
/// loop (or close enough), and that run fails at once with an error saying so.
pub const MAX_DEPTH: i64 = 8;

/// How long a tenant's enabled workflows are cached. A change made on this host clears them at
/// once; other hosts (PostgreSQL scale-out) see it within this time.
const ENABLED_TTL: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum WorkflowError {
    #[error("only administrators may change workflows")]
    Forbidden,
    #[error("the workflow definition is invalid")]
    Invalid(Vec<Problem>),
    #[error("workflow `{0}` does not exist")]
    Unknown(String),
    #[error("workflow `{0}` already exists")]
    AlreadyExists(String),
    #[error(
        "workflow `{name}` is at version {current}, not {expected}: reload it and apply your change again"
    )]
    VersionMismatch {
        name: String,
        expected: i64,
        current: i64,
    },
    #[error("workflow `{workflow}` has no run `{run}`")]
    UnknownRun { workflow: String, run: String },
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A definition ready to run: parsed, with its plan and parsed trigger condition.
#[derive(Debug)]
pub struct Compiled {
    pub id: String,
    pub name: String,
    pub version: i64,
    /// Who last saved it (whom runs with `run_as: owner` act as); empty when not known.
    pub owner: String,
    pub definition: WorkflowDefinition,
    pub plan: Plan,
    condition: Option<Filter>,
}

impl Compiled {
    fn new(id: String, version: i64, definition: WorkflowDefinition) -> Result<Self, StoreError> {
        let condition = match &definition.trigger {
            Trigger::Record {
                condition: Some(text),
                ..
            } => Some(filter::parse(text).map_err(|error| {
                StoreError::Corrupt(format!("stored workflow condition: {error}"))
            })?),
            _ => None,
        };
        Ok(Self {
            id,
            name: definition.name.clone(),
            version,
            owner: String::new(),
            plan: Plan::new(&definition.steps),
            definition,
            condition,
        })
    }

    fn from_stored(id: &str, version: i64, text: &str) -> Result<Self, StoreError> {
        let definition: WorkflowDefinition = serde_json::from_str(text)
            .map_err(|error| StoreError::Corrupt(format!("stored workflow: {error}")))?;
        Self::new(id.to_owned(), version, definition)
    }
}

/// A workflow as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct WorkflowView {
    #[serde(flatten)]
    pub definition: Value,
    pub version: i64,
    pub enabled: bool,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    /// A schedule or date trigger: when it fires next.
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_run_at: Option<OffsetDateTime>,
}

/// A write gave a record of a datetime trigger's entity a moment (the field plus the offset)
/// sooner than the trigger's next look: the timer is brought forward to it, so the moment fires
/// on time. (Date fields need nothing: their timer is due at each day's `at` already.)
async fn pull_date_timer(
    scoped: &mut Scoped<'_>,
    workflow: &Compiled,
    event: &RecordEvent<'_>,
    field: &str,
    offset: Option<&str>,
    now: OffsetDateTime,
) -> Result<(), StoreError> {
    if event.event == Event::Deleted {
        return Ok(());
    }
    let value = event.body.get(field).and_then(Value::as_str);
    if value.is_none()
        || value
            == event
                .before
                .and_then(|b| b.get(field))
                .and_then(Value::as_str)
    {
        return Ok(());
    }
    let Some(moment) = value.and_then(|text| {
        OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()
    }) else {
        return Ok(());
    };
    let moment = moment
        + offset
            .and_then(definition::parse_duration)
            .unwrap_or_default();
    if moment > now {
        scoped.pull_timer(&workflow.id, moment).await?;
    }
    Ok(())
}

/// Keeps a workflow's timer in step with its definition: a timed, enabled workflow has one, due
/// at the schedule's next time (a date trigger looks at once, and then at the next moment).
async fn sync_timer(
    scoped: &mut Scoped<'_>,
    workflow_id: &str,
    enabled: bool,
    trigger: &Trigger,
    now: OffsetDateTime,
) -> Result<(), WorkflowError> {
    let next = match trigger {
        _ if !enabled => None,
        Trigger::Schedule {
            cron, time_zone, ..
        } => {
            let zone = zone(scoped, time_zone.as_deref()).await?;
            let cron = timers::parse_cron(cron).map_err(WorkflowError::Refused)?;
            timers::next_cron(&cron, zone, now)
        }
        Trigger::Date { .. } => Some(now),
        Trigger::Record { .. } | Trigger::Manual { .. } => None,
    };
    match next {
        Some(next) => scoped.set_timer(workflow_id, next, now).await?,
        None => scoped.drop_timer(workflow_id).await?,
    }
    Ok(())
}

/// The time zone a timed trigger reads the clock in: its own, else the tenant's.
pub(crate) async fn zone(
    scoped: &mut Scoped<'_>,
    explicit: Option<&str>,
) -> Result<chrono_tz::Tz, StoreError> {
    let name = match explicit {
        Some(name) => name.to_owned(),
        None => scoped.tenant_settings().await?.1,
    };
    timers::parse_time_zone(&name).map_err(StoreError::Corrupt)
}

fn view(stored: &StoredWorkflow) -> Result<WorkflowView, WorkflowError> {
    let mut definition: Value = serde_json::from_str(&stored.definition)
        .map_err(|error| StoreError::Corrupt(format!("stored workflow: {error}")))?;
    if let Some(object) = definition.as_object_mut() {
        object.remove("enabled");
        object.remove("version");
    }
    Ok(WorkflowView {
        definition,
        version: stored.version,
        enabled: stored.enabled,
        created_at: stored.created_at,
        updated_at: stored.updated_at,
        next_run_at: stored.next_run_at,
    })
}

/// A tenant's enabled workflows.
type Enabled = Arc<Vec<Arc<Compiled>>>;

/// What happened to a record, as triggers see it.
pub struct RecordEvent<'a> {
    pub event: Event,
    pub entity: &'a str,
    /// The record after the change (for `deleted`: as it was): its row and its field values.
    /// Conditions see the values with the system fields (`_id`, `_owner`, …), built only when a
    /// workflow triggers on this entity and event.
    pub stored: &'a crate::store::records::StoredRecord,
    pub body: &'a Map<String, Value>,
    /// Before an update.
    pub before: Option<&'a Map<String, Value>>,
    pub user: &'a str,
    /// The workflow depth of the write: 0 for a client, run depth + 1 for a run's step.
    pub depth: i64,
}

/// Workflow definitions of every tenant, the triggers, and the engine's wake-up signal.
#[derive(Debug, Clone)]
pub struct Workflows {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    store: Store,
    metadata: Arc<Metadata>,
    plugins: Plugins,
    enabled: Mutex<HashMap<TenantId, (Instant, Enabled)>>,
    versions: Mutex<HashMap<(String, i64), Arc<Compiled>>>,
    wake: Notify,
    started: AtomicBool,
}

impl Workflows {
    pub fn new(store: Store, metadata: Arc<Metadata>, plugins: Plugins) -> Self {
        Self {
            inner: Arc::new(Inner {
                store,
                metadata,
                plugins,
                enabled: Mutex::default(),
                versions: Mutex::default(),
                wake: Notify::new(),
                started: AtomicBool::new(false),
            }),
        }
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// Tells the engine that runs may be due (after a commit that started some).
    pub fn wake(&self) {
        if self.inner.started.swap(false, Ordering::AcqRel) {
            self.inner.wake.notify_one();
        }
    }

    /// Notes that runs were inserted outside a record write (timers), for [`Workflows::wake`].
    fn mark_started(&self) {
        self.inner.started.store(true, Ordering::Release);
    }

    pub(crate) async fn woken(&self) {
        self.inner.wake.notified().await;
    }

    fn forget(&self, tenant: &TenantId) {
        self.inner
            .enabled
            .lock()
            .expect("the workflow cache is not poisoned")
            .remove(tenant);
    }

    /// The tenant's enabled workflows.
    /// Whether no enabled workflow of the tenant reacts to a record of `entity` being written,
    /// as far as the cache knows: `false` when the cache has nothing fresh to say, so that the
    /// caller takes the path that reads the workflows (as [`Workflows::fire`] does).
    pub fn surely_idle_on(&self, tenant: &TenantId, entity: &str) -> bool {
        let Some(enabled) = self.cached_enabled(tenant) else {
            return false;
        };
        enabled
            .iter()
            .all(|workflow| match &workflow.definition.trigger {
                Trigger::Date { entity: on, .. } | Trigger::Record { entity: on, .. } => {
                    on != entity
                }
                _ => true,
            })
    }

    /// The tenant's enabled workflows as cached, if read within [`ENABLED_TTL`].
    fn cached_enabled(&self, tenant: &TenantId) -> Option<Enabled> {
        self.inner
            .enabled
            .lock()
            .expect("the workflow cache is not poisoned")
            .get(tenant)
            .filter(|(at, _)| at.elapsed() < ENABLED_TTL)
            .map(|(_, enabled)| enabled.clone())
    }

    async fn enabled(&self, scoped: &mut Scoped<'_>) -> Result<Enabled, StoreError> {
        if let Some(cached) = self.cached_enabled(scoped.tenant()) {
            return Ok(cached);
        }
        let mut all = Vec::new();
        for stored in scoped.workflows().await? {
            if stored.enabled {
                let mut compiled =
                    Compiled::from_stored(&stored.id, stored.version, &stored.definition)?;
                compiled.owner = stored.updated_by.clone();
                all.push(Arc::new(compiled));
            }
        }
        let all = Arc::new(all);
        self.inner
            .enabled
            .lock()
            .expect("the workflow cache is not poisoned")
            .insert(scoped.tenant().clone(), (Instant::now(), all.clone()));
        Ok(all)
    }

    /// The definition a run follows.
    pub async fn compiled(
        &self,
        scoped: &mut Scoped<'_>,
        workflow_id: &str,
        version: i64,
    ) -> Result<Arc<Compiled>, StoreError> {
        let key = (workflow_id.to_owned(), version);
        if let Some(found) = self
            .inner
            .versions
            .lock()
            .expect("the workflow cache is not poisoned")
            .get(&key)
        {
            return Ok(found.clone());
        }
        let text = scoped
            .workflow_version(workflow_id, version)
            .await?
            .ok_or_else(|| {
                StoreError::Corrupt(format!("workflow {workflow_id} has no version {version}"))
            })?;
        let compiled = Arc::new(Compiled::from_stored(workflow_id, version, &text)?);
        let mut versions = self
            .inner
            .versions
            .lock()
            .expect("the workflow cache is not poisoned");
        if versions.len() > 10_000 {
            versions.clear();
        }
        versions.insert(key, compiled.clone());
        Ok(compiled)
    }

    /// Starts the runs of every enabled workflow that `event` triggers, in the write's
    /// transaction. A run that would start too deep is stored as failed, saying why.
    pub async fn fire(
        &self,
        scoped: &mut Scoped<'_>,
        event: &RecordEvent<'_>,
    ) -> Result<usize, StoreError> {
        let enabled = self.enabled(scoped).await?;
        if enabled.is_empty() {
            return Ok(0);
        }
        let now = crate::store::now();
        let mut runs = Vec::new();
        let mut record = None;
        for workflow in enabled.iter() {
            if let Trigger::Date {
                entity,
                field,
                offset,
                ..
            } = &workflow.definition.trigger
                && entity == event.entity
            {
                pull_date_timer(scoped, workflow, event, field, offset.as_deref(), now).await?;
                continue;
            }
            let Trigger::Record {
                entity,
                events,
                changes,
                ..
            } = &workflow.definition.trigger
            else {
                continue;
            };
            if entity != event.entity || !events.contains(&event.event) {
                continue;
            }
            let record = record.get_or_insert_with(|| {
                crate::records::steps::with_system_fields(event.stored, event.body)
            });
            if let Some(condition) = &workflow.condition
                && !condition::holds(condition, record)
            {
                continue;
            }
            if !changes.is_empty() {
                let Some(before) = event.before else {
                    continue;
                };
                if !condition::changed(changes, before, record) {
                    continue;
                }
            }
            let too_deep = event.depth >= MAX_DEPTH;
            let run_as = match workflow.definition.run_as {
                RunAs::Trigger => event.user.to_owned(),
                RunAs::Owner => schedule::run_as(scoped, &workflow.owner).await?,
            };
            runs.push(NewRun {
                id: uuid::Uuid::now_v7().to_string(),
                workflow_id: workflow.id.clone(),
                version: workflow.version,
                status: if too_deep { "failed" } else { "pending" },
                depth: event.depth,
                event: event.event.as_str(),
                entity: Some(event.entity.to_owned()),
                record_id: Some(event.stored.id.clone()),
                run_as,
                trigger_data: json!({ "old": event.before }).to_string(),
                next_step: workflow.plan.first().map(|i| workflow.plan.nodes[i].step.id.clone()),
                error: too_deep.then(|| {
                    format!(
                        "stopped: runs started by the writes of other runs reached the depth cap of {MAX_DEPTH} (does a step of `{}` write a record that triggers it again?)",
                        workflow.name
                    )
                }),
                now,
            });
        }
        if !runs.is_empty() {
            scoped.insert_runs(&runs).await?;
            self.inner.started.store(true, Ordering::Release);
        }
        Ok(runs.len())
    }

    async fn entities(
        &self,
        scoped: &mut Scoped<'_>,
    ) -> Result<definition::Entities, WorkflowError> {
        let all = self
            .inner
            .metadata
            .all_compiled(scoped)
            .await
            .map_err(|error| WorkflowError::Refused(error.to_string()))?;
        Ok(all
            .iter()
            .map(|compiled| (compiled.name().to_owned(), compiled.definition.clone()))
            .collect())
    }

    /// The workflow steps of the tenant's enabled plugins.
    async fn plugin_steps(
        &self,
        scoped: &mut Scoped<'_>,
    ) -> Result<definition::PluginSteps, WorkflowError> {
        let active = self
            .inner
            .plugins
            .active_in(scoped)
            .await
            .map_err(|error| WorkflowError::Refused(error.to_string()))?;
        Ok(active
            .iter()
            .map(|plugin| {
                let steps = plugin
                    .manifest
                    .provides
                    .workflow_steps
                    .iter()
                    .map(|step| step.step.clone())
                    .collect();
                (plugin.id.clone(), steps)
            })
            .collect())
    }

    /// Parses and checks a definition against the tenant's entities.
    async fn checked(
        &self,
        scoped: &mut Scoped<'_>,
        json: &Value,
    ) -> Result<WorkflowDefinition, WorkflowError> {
        let definition = definition::parse(json).map_err(WorkflowError::Invalid)?;
        let entities = self.entities(scoped).await?;
        let steps = self.plugin_steps(scoped).await?;
        let webhooks = crate::webhooks::names(scoped).await?;
        let problems = definition::check(&definition, &entities, &steps, &webhooks);
        if problems.is_empty() {
            Ok(definition)
        } else {
            Err(WorkflowError::Invalid(problems))
        }
    }

    pub async fn list(&self, tenant: &TenantId) -> Result<Vec<WorkflowView>, WorkflowError> {
        let mut conn = self.inner.store.reader().await?;
        let stored = conn.scoped(tenant).workflows().await?;
        stored.iter().map(view).collect()
    }

    pub async fn get(&self, tenant: &TenantId, name: &str) -> Result<WorkflowView, WorkflowError> {
        let mut conn = self.inner.store.reader().await?;
        let stored = conn
            .scoped(tenant)
            .workflow(name)
            .await?
            .ok_or_else(|| WorkflowError::Unknown(name.to_owned()))?;
        view(&stored)
    }

    /// Creates a workflow (version 1), or with `replace` gives an existing one a new version;
    /// what `schema apply` and the API share.
    async fn save(
        &self,
        principal: &Principal,
        json: &Value,
        name_in_path: Option<&str>,
        replace: bool,
    ) -> Result<WorkflowView, WorkflowError> {
        if !principal.is_admin() {
            return Err(WorkflowError::Forbidden);
        }
        let mut tx = self.inner.store.begin().await?;
        let mut scoped = tx.scoped(&principal.tenant);
        let definition = self.checked(&mut scoped, json).await?;
        let (view, _) = self
            .save_in(
                &mut scoped,
                principal.user.as_str(),
                definition,
                name_in_path,
                replace,
            )
            .await?;
        tx.commit().await?;
        self.forget(&principal.tenant);
        Ok(view)
    }

    /// Saves a checked definition in the caller's transaction; says whether it was created,
    /// updated or unchanged.
    async fn save_in(
        &self,
        scoped: &mut Scoped<'_>,
        user: &str,
        definition: WorkflowDefinition,
        name_in_path: Option<&str>,
        replace: bool,
    ) -> Result<(WorkflowView, &'static str), WorkflowError> {
        if let Some(name) = name_in_path
            && name != definition.name
        {
            return Err(WorkflowError::Invalid(vec![Problem::new(
                "/name",
                format!(
                    "the name `{}` differs from `{name}` in the path: a workflow is never renamed",
                    definition.name
                ),
            )]));
        }
        let now = crate::store::now();
        let text = stored_text(&definition);
        let (verb, id) = match scoped.workflow(&definition.name).await? {
            None if name_in_path.is_some() => {
                return Err(WorkflowError::Unknown(definition.name.clone()));
            }
            None => {
                let id = uuid::Uuid::now_v7().to_string();
                scoped
                    .insert_workflow(&id, &definition.name, definition.enabled, &text, user, now)
                    .await?;
                ("create", id)
            }
            Some(_) if !replace => {
                return Err(WorkflowError::AlreadyExists(definition.name.clone()));
            }
            Some(existing) => {
                if let Some(expected) = definition.version
                    && expected != existing.version
                {
                    return Err(WorkflowError::VersionMismatch {
                        name: definition.name.clone(),
                        expected,
                        current: existing.version,
                    });
                }
                let unchanged = serde_json::from_str::<WorkflowDefinition>(&existing.definition)
                    .is_ok_and(|mut old| {
                        old.version = None;
                        let mut new = definition.clone();
                        new.version = None;
                        old == new
                    });
                if unchanged && existing.enabled == definition.enabled {
                    return Ok((view(&existing)?, "unchanged"));
                }
                if !scoped
                    .update_workflow(
                        &existing.id,
                        existing.version,
                        definition.enabled,
                        &text,
                        user,
                        now,
                    )
                    .await?
                {
                    return Err(WorkflowError::VersionMismatch {
                        name: definition.name.clone(),
                        expected: existing.version,
                        current: existing.version + 1,
                    });
                }
                ("update", existing.id)
            }
        };
        sync_timer(scoped, &id, definition.enabled, &definition.trigger, now).await?;
        let stored = scoped
            .workflow(&definition.name)
            .await?
            .ok_or_else(|| WorkflowError::Unknown(definition.name.clone()))?;
        Ok((view(&stored)?, verb))
    }

    /// Checks and saves (creates or updates) definitions in the caller's transaction, for
    /// `schema apply`: entities applied earlier in the same transaction are seen. Problems are
    /// reported for every file, with the file in the path. The caller commits and then calls
    /// [`Workflows::applied`].
    pub async fn apply_in(
        &self,
        tx: &mut Tx,
        tenant: &TenantId,
        user: &str,
        jsons: &[(String, Value)],
    ) -> Result<Vec<(WorkflowView, &'static str)>, WorkflowError> {
        let mut scoped = tx.scoped(tenant);
        let mut definitions = Vec::new();
        let mut problems = Vec::new();
        let entities = self.entities(&mut scoped).await?;
        let steps = self.plugin_steps(&mut scoped).await?;
        let webhooks = crate::webhooks::names(&mut scoped).await?;
        for (source, json) in jsons {
            let checked = definition::parse(json).and_then(|definition| {
                let found = definition::check(&definition, &entities, &steps, &webhooks);
                if found.is_empty() {
                    Ok(definition)
                } else {
                    Err(found)
                }
            });
            match checked {
                Ok(definition) => definitions.push(definition),
                Err(found) => problems.extend(found.into_iter().map(|problem| {
                    Problem::new(format!("{source}#{}", problem.path), problem.message)
                })),
            }
        }
        if !problems.is_empty() {
            return Err(WorkflowError::Invalid(problems));
        }
        let mut saved = Vec::new();
        for definition in definitions {
            saved.push(
                self.save_in(&mut scoped, user, definition, None, true)
                    .await?,
            );
        }
        Ok(saved)
    }

    /// Brings the timers of every timed workflow in step with the tenant's settings (after a
    /// change of its time zone), in the caller's transaction.
    pub async fn resync_timers(&self, scoped: &mut Scoped<'_>) -> Result<(), WorkflowError> {
        let now = crate::store::now();
        for stored in scoped.workflows().await? {
            let compiled = Compiled::from_stored(&stored.id, stored.version, &stored.definition)?;
            if compiled.definition.trigger.is_timed() {
                sync_timer(
                    scoped,
                    &stored.id,
                    stored.enabled,
                    &compiled.definition.trigger,
                    now,
                )
                .await?;
            }
        }
        Ok(())
    }

    /// Drops what is cached about a tenant's workflows after a commit of `apply_in`.
    pub fn applied(&self, tenant: &TenantId) {
        self.forget(tenant);
    }

    pub async fn create(
        &self,
        principal: &Principal,
        json: &Value,
    ) -> Result<WorkflowView, WorkflowError> {
        self.save(principal, json, None, false).await
    }

    /// Replaces a workflow's definition with a new version; runs in flight finish on theirs.
    pub async fn update(
        &self,
        principal: &Principal,
        name: &str,
        json: &Value,
    ) -> Result<WorkflowView, WorkflowError> {
        self.save(principal, json, Some(name), true).await
    }

    pub async fn set_enabled(
        &self,
        principal: &Principal,
        name: &str,
        enabled: bool,
    ) -> Result<WorkflowView, WorkflowError> {
        if !principal.is_admin() {
            return Err(WorkflowError::Forbidden);
        }
        let mut tx = self.inner.store.begin().await?;
        let mut scoped = tx.scoped(&principal.tenant);
        let stored = scoped
            .workflow(name)
            .await?
            .ok_or_else(|| WorkflowError::Unknown(name.to_owned()))?;
        let now = crate::store::now();
        scoped
            .set_workflow_enabled(&stored.id, enabled, principal.user.as_str(), now)
            .await?;
        let compiled = Compiled::from_stored(&stored.id, stored.version, &stored.definition)?;
        sync_timer(
            &mut scoped,
            &stored.id,
            enabled,
            &compiled.definition.trigger,
            now,
        )
        .await?;
        let stored = scoped
            .workflow(name)
            .await?
            .ok_or_else(|| WorkflowError::Unknown(name.to_owned()))?;
        tx.commit().await?;
        self.forget(&principal.tenant);
        view(&stored)
    }

    /// Deletes a workflow; its unfinished runs are cancelled, its finished runs stay readable.
    pub async fn delete(&self, principal: &Principal, name: &str) -> Result<u64, WorkflowError> {
        if !principal.is_admin() {
            return Err(WorkflowError::Forbidden);
        }
        let mut tx = self.inner.store.begin().await?;
        let cancelled = self
            .delete_in(&mut tx.scoped(&principal.tenant), name)
            .await?;
        tx.commit().await?;
        self.forget(&principal.tenant);
        Ok(cancelled)
    }

    /// [`Workflows::delete`] in the caller's transaction; the caller commits, then calls
    /// [`Workflows::applied`].
    pub async fn delete_in(
        &self,
        scoped: &mut Scoped<'_>,
        name: &str,
    ) -> Result<u64, WorkflowError> {
        let stored = scoped
            .workflow(name)
            .await?
            .ok_or_else(|| WorkflowError::Unknown(name.to_owned()))?;
        let cancelled = scoped
            .delete_workflow(&stored.id, crate::store::now())
            .await?;
        scoped.drop_timer(&stored.id).await?;
        Ok(cancelled)
    }

    /// Starts a run of a workflow with a manual trigger: on one record of its entity, if it
    /// names one, with `input` checked against its input schema.
    pub async fn start(
        &self,
        principal: &Principal,
        name: &str,
        record: Option<&str>,
        input: Value,
    ) -> Result<RunView, WorkflowError> {
        if !principal.is_admin() {
            return Err(WorkflowError::Forbidden);
        }
        let stored = self.stored(&principal.tenant, name).await?;
        let compiled = Compiled::from_stored(&stored.id, stored.version, &stored.definition)?;
        let Trigger::Manual {
            entity,
            input: schema,
        } = &compiled.definition.trigger
        else {
            return Err(WorkflowError::Refused(format!(
                "workflow `{name}` starts on its {} trigger, not by hand",
                compiled.definition.trigger.kind()
            )));
        };
        if !stored.enabled {
            return Err(WorkflowError::Refused(format!(
                "workflow `{name}` is disabled"
            )));
        }
        if !input.is_object() {
            return Err(WorkflowError::Invalid(vec![Problem::new(
                "/input",
                "`input` must be an object",
            )]));
        }
        if let Some(schema) = schema {
            let validator = jsonschema::validator_for(schema)
                .map_err(|error| StoreError::Corrupt(error.to_string()))?;
            let problems: Vec<Problem> = validator
                .iter_errors(&input)
                .map(|error| {
                    Problem::new(
                        format!("/input{}", error.instance_path().as_str()),
                        error.to_string(),
                    )
                })
                .collect();
            if !problems.is_empty() {
                return Err(WorkflowError::Invalid(problems));
            }
        }
        let (entity, record_id) = match (entity, record) {
            (Some(entity), Some(id)) => {
                let mut conn = self.inner.store.reader().await?;
                let mut scoped = conn.scoped(&principal.tenant);
                let compiled_entity = self
                    .inner
                    .metadata
                    .compiled(&mut scoped, entity)
                    .await
                    .map_err(|error| WorkflowError::Refused(error.to_string()))?;
                let found = scoped
                    .get_record(compiled_entity.id, id)
                    .await?
                    .filter(|record| record.deleted_at.is_none());
                if found.is_none() {
                    return Err(WorkflowError::Refused(format!(
                        "no `{entity}` record has id `{id}`"
                    )));
                }
                (Some(entity.clone()), Some(id.to_owned()))
            }
            (Some(entity), None) => {
                return Err(WorkflowError::Invalid(vec![Problem::new(
                    "/record",
                    format!(
                        "workflow `{name}` runs on a `{entity}` record: name its id in `record`"
                    ),
                )]));
            }
            (None, Some(_)) => {
                return Err(WorkflowError::Invalid(vec![Problem::new(
                    "/record",
                    format!("workflow `{name}` does not run on a record"),
                )]));
            }
            (None, None) => (None, None),
        };
        let run_as = match compiled.definition.run_as {
            RunAs::Trigger => principal.user.to_string(),
            RunAs::Owner => {
                let mut conn = self.inner.store.reader().await?;
                schedule::run_as(&mut conn.scoped(&principal.tenant), &stored.updated_by).await?
            }
        };
        let run = NewRun {
            id: uuid::Uuid::now_v7().to_string(),
            workflow_id: stored.id.clone(),
            version: stored.version,
            status: "pending",
            depth: 0,
            event: "manual",
            entity,
            record_id,
            run_as,
            trigger_data: json!({ "input": input }).to_string(),
            next_step: compiled
                .plan
                .first()
                .map(|i| compiled.plan.nodes[i].step.id.clone()),
            error: None,
            now: crate::store::now(),
        };
        let id = run.id.clone();
        let tenant = principal.tenant.clone();
        self.inner
            .store
            .write(move |tx: &mut Tx| {
                Box::pin(async move {
                    tx.scoped(&tenant).insert_runs(&[run]).await?;
                    Ok::<_, StoreError>(())
                })
            })
            .await?;
        self.inner.started.store(true, Ordering::Release);
        self.wake();
        self.run(&principal.tenant, name, &id).await
    }

    async fn stored(&self, tenant: &TenantId, name: &str) -> Result<StoredWorkflow, WorkflowError> {
        let mut conn = self.inner.store.reader().await?;
        conn.scoped(tenant)
            .workflow(name)
            .await?
            .ok_or_else(|| WorkflowError::Unknown(name.to_owned()))
    }

    /// A workflow's runs, newest first, with a cursor for the next page.
    pub async fn runs(
        &self,
        principal: &Principal,
        name: &str,
        mut filter: RunFilter,
    ) -> Result<(Vec<RunView>, Option<String>), WorkflowError> {
        if !principal.is_admin() {
            return Err(WorkflowError::Forbidden);
        }
        let stored = self.stored(&principal.tenant, name).await?;
        let limit = filter.limit;
        filter.limit += 1;
        let mut conn = self.inner.store.reader().await?;
        let mut runs = conn
            .scoped(&principal.tenant)
            .runs(&stored.id, &filter)
            .await?;
        let next = crate::store::next_page(&mut runs, limit, |run| &run.id);
        Ok((
            runs.iter().map(|run| run_view(name, run, None)).collect(),
            next,
        ))
    }

    /// One run with its steps.
    pub async fn run(
        &self,
        tenant: &TenantId,
        name: &str,
        id: &str,
    ) -> Result<RunView, WorkflowError> {
        let stored = self.stored(tenant, name).await?;
        let mut conn = self.inner.store.reader().await?;
        let mut scoped = conn.scoped(tenant);
        let run = scoped
            .run(id)
            .await?
            .filter(|run| run.workflow_id == stored.id)
            .ok_or_else(|| WorkflowError::UnknownRun {
                workflow: name.to_owned(),
                run: id.to_owned(),
            })?;
        let steps = scoped.run_steps(id).await?;
        Ok(run_view(name, &run, Some(&steps)))
    }

    pub async fn run_for(
        &self,
        principal: &Principal,
        name: &str,
        id: &str,
    ) -> Result<RunView, WorkflowError> {
        if !principal.is_admin() {
            return Err(WorkflowError::Forbidden);
        }
        self.run(&principal.tenant, name, id).await
    }

    /// Puts a failed run back in the queue: it goes on from the step that failed.
    pub async fn retry(
        &self,
        principal: &Principal,
        name: &str,
        id: &str,
    ) -> Result<RunView, WorkflowError> {
        let run = self.run_for(principal, name, id).await?;
        if run.status != "failed" || run.next_step.is_none() {
            return Err(WorkflowError::Refused(format!(
                "run `{id}` is {}: only a failed run that has a step left can be retried",
                run.status
            )));
        }
        let tenant = principal.tenant.clone();
        let run_id = id.to_owned();
        let retried = self
            .inner
            .store
            .write(move |tx: &mut Tx| {
                Box::pin(async move {
                    tx.scoped(&tenant)
                        .retry_run(&run_id, crate::store::now())
                        .await
                })
            })
            .await?;
        if !retried {
            return Err(WorkflowError::Refused(format!(
                "run `{id}` changed meanwhile and is no longer failed"
            )));
        }
        self.inner.started.store(true, Ordering::Release);
        self.wake();
        self.run(&principal.tenant, name, id).await
    }
}

/// The stored form of a definition: without the client's `version`.
fn stored_text(definition: &WorkflowDefinition) -> String {
    let mut definition = definition.clone();
    definition.version = None;
    serde_json::to_string(&definition).expect("definitions serialize")
}

/// A run as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct RunView {
    pub id: String,
    pub workflow: String,
    pub version: i64,
    pub status: String,
    pub event: String,
    pub entity: Option<String>,
    pub record_id: Option<String>,
    pub run_as: String,
    pub depth: i64,
    /// What started it: the record before an update (`old`), a manual run's `input`, the time a
    /// schedule fired for (`scheduled_for`), a date trigger's `window`.
    pub trigger: Value,
    pub next_step: Option<String>,
    pub attempt: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub next_at: OffsetDateTime,
    pub error: Option<String>,
    pub output: Value,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub steps: Option<Vec<StepView>>,
}

/// One step of a run as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct StepView {
    pub seq: i64,
    pub step: String,
    #[serde(rename = "type")]
    pub step_type: String,
    pub status: String,
    pub attempts: i64,
    pub input: Value,
    pub output: Value,
    pub error: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339::option")]
    pub finished_at: Option<OffsetDateTime>,
    pub duration_ms: Option<f64>,
}

fn parse_json(text: Option<&str>) -> Value {
    text.and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or(Value::Null)
}

fn run_view(workflow: &str, run: &StoredRun, steps: Option<&[StoredStep]>) -> RunView {
    RunView {
        id: run.id.clone(),
        workflow: workflow.to_owned(),
        version: run.version,
        status: run.status.clone(),
        event: run.event.clone(),
        entity: run.entity.clone(),
        record_id: run.record_id.clone(),
        run_as: run.run_as.clone(),
        depth: run.depth,
        trigger: parse_json(Some(&run.trigger_data)),
        next_step: run.next_step.clone(),
        attempt: run.attempt,
        next_at: run.next_at,
        error: run.error.clone(),
        output: parse_json(Some(&run.context)),
        created_at: run.created_at,
        updated_at: run.updated_at,
        finished_at: run.finished_at,
        steps: steps.map(|steps| {
            steps
                .iter()
                .map(|step| StepView {
                    seq: step.seq,
                    step: step.step_id.clone(),
                    step_type: step.step_type.clone(),
                    status: step.status.clone(),
                    attempts: step.attempts,
                    input: parse_json(step.input.as_deref()),
                    output: parse_json(step.output.as_deref()),
                    error: step.error.clone(),
                    started_at: step.started_at,
                    finished_at: step.finished_at,
                    duration_ms: step
                        .finished_at
                        .map(|end| (end - step.started_at).as_seconds_f64() * 1000.0),
                })
                .collect()
        }),
    }
}
