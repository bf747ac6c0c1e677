//! Plugins in the write path: validators and hooks of the stages `validate`, `before` and
//! `after` run inside the write's transaction, in plugin id order. A rejection becomes 422 with
//! field errors; a fault (trap, timeout, exhausted fuel, an error) rolls everything back and
//! names the plugin, its version and the reason. Record access from a plugin is served by the
//! same transaction, as the user who made the write; writes made by a hook run their own hooks,
//! one level deeper, up to [`MAX_DEPTH`].

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::{Map, Value};
use tokio::sync::mpsc;

use super::{
    BatchUpdate, CompiledEntity, ListParams, RecordError, Records, StoredRecord, changes,
    check_keys, validate,
};
use crate::auth::Principal;
use crate::metadata::definition::FieldType;
use crate::metadata::record_schema::FieldErrors;
use crate::plugins::Active;
use crate::plugins::host::{HostCall, HostState, OutboxMessage};
use crate::plugins::manifest::Capabilities;
use crate::plugins::runtime::{
    Fault, HostError, Operation, Outcome, Record, RecordEvent, Stage, Usage,
};
use crate::store::outbox::NewMessage;
use crate::store::plugins::NewRun;
use crate::store::{Scoped, SqlValue};

/// How deep hooks may nest: a client's write is depth 0, a write made by one of its hooks 1…
pub const MAX_DEPTH: u32 = 4;

/// Who writes, and how deep in hooks.
#[derive(Debug, Clone)]
pub struct WriteContext {
    pub principal: Principal,
    pub depth: u32,
    /// 0 for a client's write; for a workflow step's, one more than its run's depth (runs this
    /// write starts get this depth).
    pub workflow_depth: i64,
    /// The time of the write, RFC 3339 UTC, as plugins see it.
    pub at: String,
    /// For a client's create: the validators and hooks already run before the transaction
    /// (see [`Records::run_pure_hooks`]).
    pub pre_run: Option<PreRun>,
    /// Writes that start no workflow run: a pack's sample records and data migrations (an
    /// upgrade must not send the tenant's workflow emails for records it converts).
    pub quiet: bool,
}

/// The validators and hooks a create ran before its transaction: the first `steps` calls of the
/// stages `validate` and `before` over `active`, the tenant's enabled plugins as they were then
/// (the transaction runs the rest over the same list).
#[derive(Debug, Clone)]
pub struct PreRun {
    active: Arc<Vec<Active>>,
    steps: usize,
}

impl PreRun {
    /// The enabled plugins the calls were run from.
    pub fn active(&self) -> &Arc<Vec<Active>> {
        &self.active
    }

    /// Whether every plugin call of a create of `entity` ran before the transaction: no
    /// validator or hook is left for inside it, and none runs after the write.
    pub fn covers_create(&self, entity: &str) -> bool {
        let calls = |stages: &[Stage]| -> usize {
            self.active
                .iter()
                .flat_map(|plugin| {
                    stages
                        .iter()
                        .flat_map(move |stage| calls_for(plugin, entity, Operation::Create, *stage))
                })
                .count()
        };
        calls(&[Stage::Validate, Stage::Before]) == self.steps && calls(&[Stage::After]) == 0
    }
}

/// Which calls of a write's plugins to run.
struct Steps<'a> {
    active: &'a [Active],
    /// Calls already run.
    skip: usize,
    /// The last call to run.
    until: usize,
}

impl WriteContext {
    /// The context of a write that this write causes (by a hook, or a roll-up): one level
    /// deeper; refused past [`MAX_DEPTH`].
    pub fn deeper(&self) -> Result<WriteContext, String> {
        if self.depth + 1 > MAX_DEPTH {
            return Err(format!(
                "writes nested more than {MAX_DEPTH} deep (a hook or roll-up writing a record whose hooks or roll-ups write a record…)"
            ));
        }
        Ok(WriteContext {
            depth: self.depth + 1,
            pre_run: None,
            ..self.clone()
        })
    }

    /// A client's write (depth 0) by `principal` at `now`. Plugins see the time at the
    /// precision of datetime fields (milliseconds), so that they can store what they compute.
    pub fn new(principal: &Principal, now: time::OffsetDateTime) -> Self {
        let millis = now
            .replace_nanosecond(now.nanosecond() / 1_000_000 * 1_000_000)
            .expect("a valid nanosecond");
        let at = millis
            .format(&time::format_description::well_known::Rfc3339)
            .expect("times format");
        Self {
            principal: principal.clone(),
            depth: 0,
            workflow_depth: 0,
            at,
            pre_run: None,
            quiet: false,
        }
    }
}

/// A plugin's failure in a write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginFailure {
    pub plugin: String,
    pub version: String,
    pub stage: &'static str,
    pub entity: String,
    pub fault: Fault,
}

impl std::fmt::Display for PluginFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "plugin `{}` {} {} in stage `{}` on `{}`",
            self.plugin, self.version, self.fault, self.stage, self.entity
        )
    }
}

fn stage_name(stage: Stage) -> &'static str {
    match stage {
        Stage::Validate => "validate",
        Stage::Before => "before",
        Stage::After => "after",
    }
}

fn operation_name(operation: Operation) -> &'static str {
    match operation {
        Operation::Create => "create",
        Operation::Update => "update",
        Operation::Delete => "delete",
    }
}

/// What a plugin is asked to do for one stage.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Call {
    Validator,
    Hook(Stage),
}

/// The calls of `plugin` that apply to a write of `entity` at `stage`.
fn calls_for(plugin: &Active, entity: &str, operation: Operation, stage: Stage) -> Vec<Call> {
    let operation = operation_name(operation);
    let applies =
        |operations: &[String]| operations.is_empty() || operations.iter().any(|o| o == operation);
    let mut calls = Vec::new();
    let provides = &plugin.manifest.provides;
    if stage == Stage::Validate
        && provides
            .validators
            .iter()
            .any(|binding| binding.entity == entity && applies(&binding.operations))
    {
        calls.push(Call::Validator);
    }
    if provides.hooks.iter().any(|binding| {
        binding.entity == entity
            && binding.stage == stage_name(stage)
            && applies(&binding.operations)
    }) {
        calls.push(Call::Hook(stage));
    }
    calls
}

/// A record a plugin wrote, as the user it acts for may see it.
fn seen_record(
    principal: &Principal,
    entity: &CompiledEntity,
    stored: &StoredRecord,
    dialect: crate::store::Dialect,
) -> Result<Record, HostError> {
    let sight = super::Sight::of(principal, entity);
    let view = super::view(stored, &sight.definition, dialect, None)
        .map_err(|error| host_error(error.into()))?;
    Ok(Record {
        entity: entity.name().to_owned(),
        id: view.id,
        version: view.version,
        data: view.data.get().to_owned(),
    })
}

/// One invocation, as its run record names it.
pub(super) struct Run<'a> {
    pub plugin: &'a Active,
    /// `validator`, `validate`, `before`, `after` or `compute`.
    pub stage: &'static str,
    pub entity: &'a str,
    pub record_id: Option<String>,
    pub started_at: time::OffsetDateTime,
}

/// A fresh host state for one invocation of `plugin`, and the receiver of its record accesses.
/// `read_only` names the kind of invocation when it may cause no effects (no writes, no outbox).
pub(super) fn host_state(
    plugin: &Active,
    read_only: Option<&'static str>,
) -> (HostState, mpsc::Receiver<HostCall>) {
    host_state_with(plugin, plugin.limits, read_only)
}

/// A host state whose host calls are counted against `limits` (a workflow step's job limits).
pub(super) fn host_state_with(
    plugin: &Active,
    limits: crate::plugins::manifest::Limits,
    read_only: Option<&'static str>,
) -> (HostState, mpsc::Receiver<HostCall>) {
    let (calls, requests) = mpsc::channel(1);
    let mut state = HostState::new(
        plugin.config.clone(),
        plugin.manifest.capabilities.clone(),
        limits,
        Some(calls),
    );
    if let Some(who) = read_only {
        state = state.without_outbox(who);
    }
    (state, requests)
}

pub(super) type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

impl Records {
    /// Runs the validators and hooks of `stages` for one record write; returns the record's body
    /// with the patches of `before` hooks merged and validated again.
    #[expect(clippy::too_many_arguments, reason = "the parts of a record event")]
    pub(super) async fn run_hooks(
        &self,
        scoped: &mut Scoped<'_>,
        context: &WriteContext,
        entity: &CompiledEntity,
        operation: Operation,
        stages: &[Stage],
        body: Map<String, Value>,
        stored: Option<&StoredRecord>,
        previous: Option<&Map<String, Value>>,
    ) -> Result<Map<String, Value>, RecordError> {
        let (active, done) = match &context.pre_run {
            Some(pre_run)
                if operation == Operation::Create && stages.first() == Some(&Stage::Validate) =>
            {
                (pre_run.active.clone(), pre_run.steps)
            }
            _ => (self.plugins.active_in(scoped).await?, 0),
        };
        let steps = Steps {
            active: &active,
            skip: done,
            until: usize::MAX,
        };
        self.run_steps(
            Some(scoped),
            context,
            entity,
            operation,
            stages,
            body,
            stored,
            previous,
            steps,
        )
        .await
    }

    /// Runs, before a create's transaction, the leading validators and hooks (stages `validate`
    /// and `before`) of plugins that can reach neither records nor the outbox: their outcome
    /// depends on the event alone, so it is the same outside the transaction, and on SQLite they
    /// then run in parallel instead of inside the one writer. Returns the patched bodies and
    /// what ran, for [`WriteContext::pre_run`]; the transaction runs the rest.
    pub(super) async fn run_pure_hooks(
        &self,
        context: &WriteContext,
        entity: &CompiledEntity,
        bodies: Vec<Map<String, Value>>,
        batch: bool,
    ) -> Result<(Vec<Map<String, Value>>, PreRun), RecordError> {
        let active = self.plugins.active(&context.principal.tenant).await?;
        let mut pure = 0;
        'steps: for stage in [Stage::Validate, Stage::Before] {
            for plugin in active.iter() {
                for _ in calls_for(plugin, entity.name(), Operation::Create, stage) {
                    if plugin.manifest.capabilities != Capabilities::default() {
                        break 'steps;
                    }
                    pure += 1;
                }
            }
        }
        let mut hooked = Vec::with_capacity(bodies.len());
        if pure == 0 {
            hooked = bodies;
        } else {
            for (index, body) in bodies.into_iter().enumerate() {
                let steps = Steps {
                    active: &active,
                    skip: 0,
                    until: pure,
                };
                let body = self
                    .run_steps(
                        None,
                        context,
                        entity,
                        Operation::Create,
                        &[Stage::Validate, Stage::Before],
                        body,
                        None,
                        None,
                        steps,
                    )
                    .await
                    .map_err(|error| super::in_batch(batch, index, error))?;
                hooked.push(body);
            }
        }
        Ok((
            hooked,
            PreRun {
                active,
                steps: pure,
            },
        ))
    }

    /// Runs the calls `steps.skip..steps.until` of `stages`, in order (stage, then plugin id).
    /// Without `scoped`, plugins get no record access.
    #[expect(clippy::too_many_arguments, reason = "the parts of a record event")]
    async fn run_steps(
        &self,
        mut scoped: Option<&mut Scoped<'_>>,
        context: &WriteContext,
        entity: &CompiledEntity,
        operation: Operation,
        stages: &[Stage],
        mut body: Map<String, Value>,
        stored: Option<&StoredRecord>,
        previous: Option<&Map<String, Value>>,
        steps: Steps<'_>,
    ) -> Result<Map<String, Value>, RecordError> {
        if steps.active.is_empty() {
            return Ok(body);
        }
        let name = entity.name();
        // Plugins run on the writer's behalf and see what the writer may read.
        let grant = context.principal.access.grant(name);
        let hidden = |field: &str| {
            grant.read == crate::auth::Scope::None
                || grant.field(field) == crate::auth::FieldAccess::None
        };
        let visible = |body: &Map<String, Value>| -> Value {
            Value::Object(
                body.iter()
                    .filter(|(key, _)| !hidden(key))
                    .map(|(key, value)| (key.clone(), value.clone()))
                    .collect(),
            )
        };
        let mut step = 0;
        for &stage in stages {
            for plugin in steps.active.iter() {
                for call in calls_for(plugin, name, operation, stage) {
                    step += 1;
                    if step <= steps.skip {
                        continue;
                    }
                    if step > steps.until {
                        return Ok(body);
                    }
                    let changed: Vec<String> = match previous {
                        Some(previous) => changes(previous, &body).keys().cloned().collect(),
                        None => body.keys().cloned().collect(),
                    };
                    let changed = changed.into_iter().filter(|key| !hidden(key)).collect();
                    let event = RecordEvent {
                        entity: name.to_owned(),
                        operation,
                        stage,
                        record: Record {
                            entity: name.to_owned(),
                            id: stored.map(|s| s.id.clone()).unwrap_or_default(),
                            version: stored.map_or(0, |s| s.version),
                            data: visible(&body).to_string(),
                        },
                        previous: previous.zip(stored).map(|(previous, stored)| Record {
                            entity: name.to_owned(),
                            id: stored.id.clone(),
                            version: stored.version,
                            data: visible(previous).to_string(),
                        }),
                        changed,
                        user_id: context.principal.user.to_string(),
                        at: context.at.clone(),
                        depth: context.depth,
                    };
                    let outcome = self
                        .invoke(scoped.as_deref_mut(), context, plugin, call, event, stage)
                        .await?;
                    match outcome {
                        Outcome::Proceed => {}
                        Outcome::Reject(errors) => {
                            return Err(RecordError::Invalid(rejection(&plugin.id, errors)));
                        }
                        Outcome::Patch(patch) if stage == Stage::Before => {
                            let Ok(Value::Object(patch)) = serde_json::from_str::<Value>(&patch)
                            else {
                                return Err(self.failure(
                                    plugin,
                                    stage_name(stage),
                                    name,
                                    Fault::InvalidResult(
                                        "a patch that is not a JSON object".into(),
                                    ),
                                ));
                            };
                            body = apply_patch(entity, &plugin.id, body, patch)?;
                        }
                        Outcome::Patch(_) => {
                            return Err(self.failure(
                                plugin,
                                stage_name(stage),
                                name,
                                Fault::InvalidResult(format!(
                                    "a patch in stage `{}`: only `before` hooks may patch",
                                    stage_name(stage)
                                )),
                            ));
                        }
                    }
                }
            }
        }
        Ok(body)
    }

    pub(super) fn failure(
        &self,
        plugin: &Active,
        stage: &'static str,
        entity: &str,
        fault: Fault,
    ) -> RecordError {
        RecordError::Plugin(Box::new(PluginFailure {
            plugin: plugin.id.clone(),
            version: plugin.version.clone(),
            stage,
            entity: entity.to_owned(),
            fault,
        }))
    }

    /// Runs one validator or hook, serving its record access from `scoped`, and records the run.
    async fn invoke(
        &self,
        scoped: Option<&mut Scoped<'_>>,
        context: &WriteContext,
        plugin: &Active,
        call: Call,
        event: RecordEvent,
        stage: Stage,
    ) -> Result<Outcome, RecordError> {
        let read_only = (stage == Stage::Validate).then_some("validators and `validate` hooks");
        let (state, requests) = host_state(plugin, read_only);
        let runtime = self.plugins.runtime().clone();
        let entity = event.entity.clone();
        let record_id = Some(event.record.id.clone()).filter(|id| !id.is_empty());
        let started_at = crate::store::now();
        let invocation = async {
            let (result, usage, state) = match call {
                Call::Validator => {
                    let (result, usage, state) = runtime
                        .validate(&plugin.component, state, &plugin.limits, event)
                        .await;
                    let result = result.map(|errors| {
                        if errors.is_empty() {
                            Outcome::Proceed
                        } else {
                            Outcome::Reject(errors)
                        }
                    });
                    (result, usage, state)
                }
                Call::Hook(_) => {
                    runtime
                        .handle(&plugin.component, state, &plugin.limits, event)
                        .await
                }
            };
            (result.map(|outcome| (outcome, state.outbox)), usage)
        };
        let mut enqueued = Ok(());
        let (result, usage) = match scoped {
            Some(scoped) => {
                let (result, usage) = self
                    .serving(&mut *scoped, context, read_only, invocation, requests)
                    .await;
                // The messages of a hook that lets the write go on are stored in the write's
                // transaction: they exist exactly when the write commits.
                let result = match result {
                    Ok((outcome, messages)) => {
                        if !messages.is_empty() && !matches!(outcome, Outcome::Reject(_)) {
                            let messages = self
                                .outbox_messages(context, plugin, &entity, &record_id, messages);
                            enqueued = scoped.enqueue(&messages).await;
                        }
                        Ok(outcome)
                    }
                    Err(fault) => Err(fault),
                };
                (result, usage)
            }
            // No record access: a host call finds the channel closed and fails (and plugins that
            // run here request no outbox kinds).
            None => {
                drop(requests);
                let (result, usage) = invocation.await;
                (result.map(|(outcome, _)| outcome), usage)
            }
        };
        let outcome = match &result {
            Ok(Outcome::Reject(_)) => Ok("rejected"),
            Ok(_) => Ok("ok"),
            Err(fault) => Err(fault),
        };
        let run = Run {
            plugin,
            stage: match call {
                Call::Validator => "validator",
                Call::Hook(stage) => stage_name(stage),
            },
            entity: &entity,
            record_id,
            started_at,
        };
        self.record_run(context, run, usage, outcome);
        // The run happened whatever became of its messages; a failed insert fails the write.
        enqueued?;
        result.map_err(|fault| self.failure(plugin, stage_name(stage), &entity, fault))
    }

    /// The messages a plugin enqueued in one invocation, as the outbox stores them.
    pub(super) fn outbox_messages(
        &self,
        context: &WriteContext,
        plugin: &Active,
        entity: &str,
        record_id: &Option<String>,
        messages: Vec<OutboxMessage>,
    ) -> Vec<NewMessage> {
        let now = crate::store::now();
        messages
            .into_iter()
            .map(|message| NewMessage {
                id: message.id,
                kind: message.kind,
                payload: message.payload,
                plugin_id: Some(plugin.id.clone()),
                plugin_version: Some(plugin.version.clone()),
                entity: Some(entity.to_owned()),
                record_id: record_id.clone(),
                run_id: None,
                created_by: context.principal.user.to_string(),
                created_at: now,
            })
            .collect()
    }

    /// Drives an invocation to its end while answering its host calls from `scoped`, in the
    /// write's transaction. `read_only` names the kind of invocation when it may not write.
    pub(super) async fn serving<T>(
        &self,
        scoped: &mut Scoped<'_>,
        context: &WriteContext,
        read_only: Option<&'static str>,
        invocation: impl Future<Output = (Result<T, Fault>, Usage)>,
        mut requests: mpsc::Receiver<HostCall>,
    ) -> (Result<T, Fault>, Usage) {
        tokio::pin!(invocation);
        loop {
            tokio::select! {
                biased;
                done = &mut invocation => break done,
                Some(request) = requests.recv() => {
                    self.serve(scoped, context, read_only, request).await;
                }
            }
        }
    }

    /// Records one invocation for `/api/v1/plugins/{id}/runs`.
    pub(super) fn record_run(
        &self,
        context: &WriteContext,
        run: Run<'_>,
        usage: Usage,
        outcome: Result<&str, &Fault>,
    ) {
        let (outcome, error) = match outcome {
            Ok(outcome) => (outcome, None),
            Err(fault) => (fault.kind(), Some(fault.to_string())),
        };
        self.plugins.record(NewRun {
            tenant_id: context.principal.tenant.to_string(),
            plugin_id: run.plugin.id.clone(),
            version: run.plugin.version.clone(),
            stage: run.stage.to_owned(),
            entity: Some(run.entity.to_owned()),
            record_id: run.record_id,
            started_at: run.started_at,
            duration_us: i64::try_from(usage.duration.as_micros()).unwrap_or(i64::MAX),
            fuel_used: i64::try_from(usage.fuel).unwrap_or(i64::MAX),
            outcome: outcome.to_owned(),
            error,
        });
    }

    /// Answers one record access of a plugin, within the write's transaction.
    async fn serve(
        &self,
        scoped: &mut Scoped<'_>,
        context: &WriteContext,
        read_only: Option<&'static str>,
        request: HostCall,
    ) {
        match request {
            HostCall::Get { entity, id, reply } => {
                let _ = reply.send(
                    self.plugin_get(scoped, &context.principal, &entity, &id)
                        .await,
                );
            }
            HostCall::Query {
                entity,
                filter,
                sort,
                limit,
                reply,
            } => {
                let _ = reply.send(
                    self.plugin_query(scoped, &context.principal, &entity, &filter, &sort, limit)
                        .await,
                );
            }
            HostCall::Scan {
                entity,
                filter,
                fields,
                after,
                limit,
                reply,
            } => {
                let _ = reply.send(
                    self.plugin_scan(
                        scoped,
                        &context.principal,
                        &entity,
                        &filter,
                        &fields,
                        &after,
                        limit,
                    )
                    .await,
                );
            }
            HostCall::Create {
                entity,
                data,
                reply,
            } => {
                let result = match self.nested(context, read_only) {
                    Ok(nested) => self.plugin_create(scoped, nested, entity, data).await,
                    Err(error) => Err(error),
                };
                let _ = reply.send(result);
            }
            HostCall::Update {
                entity,
                id,
                patch,
                reply,
            } => {
                let result = match self.nested(context, read_only) {
                    Ok(nested) => self.plugin_update(scoped, nested, entity, id, patch).await,
                    Err(error) => Err(error),
                };
                let _ = reply.send(result);
            }
        }
    }

    /// The context of a write made by a hook: one level deeper, refused past the cap and for
    /// `read_only` invocations (validators, `validate` hooks and computed fields).
    fn nested(
        &self,
        context: &WriteContext,
        read_only: Option<&'static str>,
    ) -> Result<WriteContext, HostError> {
        if let Some(who) = read_only {
            return Err(HostError::Denied(format!("{who} may not write records")));
        }
        context.deeper().map_err(HostError::LimitExceeded)
    }

    async fn plugin_get(
        &self,
        scoped: &mut Scoped<'_>,
        principal: &Principal,
        entity: &str,
        id: &str,
    ) -> Result<Option<Record>, HostError> {
        let compiled = self
            .metadata
            .compiled(scoped, entity)
            .await
            .map_err(|error| host_error(error.into()))?;
        let Some(id) = crate::domain::RecordId::parse(id) else {
            return Ok(None);
        };
        let sight = super::Sight::readable(principal, &compiled)
            .map_err(|error| HostError::Denied(error.to_string()))?;
        let stored = scoped
            .get_record(compiled.id, id.as_str())
            .await
            .map_err(|error| host_error(error.into()))?;
        let Some(stored) = stored
            .filter(|stored| stored.deleted_at.is_none())
            .filter(|stored| super::access::can_read(principal, &sight.grant, stored))
        else {
            return Ok(None);
        };
        let view = super::view(&stored, &sight.definition, scoped.dialect(), None)
            .map_err(|error| host_error(error.into()))?;
        Ok(Some(Record {
            entity: entity.to_owned(),
            id: view.id,
            version: view.version,
            data: view.data.get().to_owned(),
        }))
    }

    async fn plugin_query(
        &self,
        scoped: &mut Scoped<'_>,
        principal: &Principal,
        entity: &str,
        filter: &str,
        sort: &str,
        limit: u32,
    ) -> Result<Vec<Record>, HostError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let compiled = self
            .metadata
            .compiled(scoped, entity)
            .await
            .map_err(|error| host_error(error.into()))?;
        let params = ListParams {
            filter: Some(filter.to_owned()).filter(|f| !f.trim().is_empty()),
            sort: Some(sort.to_owned()).filter(|s| !s.trim().is_empty()),
            limit: Some(i64::from(limit.min(super::query::MAX_PAGE_SIZE as u32))),
            ..ListParams::default()
        };
        let page = self
            .list_in(scoped, principal, &compiled, &params, None)
            .await
            .map_err(host_error)?;
        Ok(page
            .data
            .into_iter()
            .map(|view| Record {
                entity: entity.to_owned(),
                id: view.id,
                version: view.version,
                data: view.data.get().to_owned(),
            })
            .collect())
    }

    /// `records.scan`: ids and numeric values of the records the principal may read, in id
    /// order after `after`, in one statement.
    #[expect(clippy::too_many_arguments, reason = "the host call's arguments")]
    async fn plugin_scan(
        &self,
        scoped: &mut Scoped<'_>,
        principal: &Principal,
        entity: &str,
        filter: &str,
        fields: &[String],
        after: &str,
        limit: u32,
    ) -> Result<Vec<crate::plugins::runtime::bindings::rapport::plugin::records::Scanned>, HostError>
    {
        use crate::plugins::runtime::bindings::rapport::plugin::records::Scanned;
        use crate::store::records::ColumnKind;
        if limit == 0 {
            return Ok(Vec::new());
        }
        let compiled = self
            .metadata
            .compiled(scoped, entity)
            .await
            .map_err(|error| host_error(error.into()))?;
        let sight = super::Sight::readable(principal, &compiled)
            .map_err(|error| HostError::Denied(error.to_string()))?;
        let definition = sight.definition.as_ref();
        let dialect = scoped.dialect();
        let mut builder = crate::store::records::ListQuery::builder(dialect);
        let mut columns = vec!["id".to_owned()];
        for name in fields {
            let field = definition
                .field(name)
                .filter(|field| field.active)
                .ok_or_else(|| {
                    HostError::Invalid(vec![crate::plugins::runtime::FieldError {
                        field: name.clone(),
                        message: format!("`{name}` is not a field of `{entity}`"),
                    }])
                })?;
            if !matches!(
                field.value_type(),
                FieldType::Integer | FieldType::Decimal | FieldType::Currency
            ) {
                return Err(HostError::Invalid(vec![
                    crate::plugins::runtime::FieldError {
                        field: name.clone(),
                        message: format!(
                            "`{name}` is a {} field: a scan reads numbers (integer, decimal, currency)",
                            field.value_type().as_str()
                        ),
                    },
                ]));
            }
            let expr = dialect.field_expr(field);
            columns.push(match dialect {
                crate::store::Dialect::Sqlite => format!("CAST({expr} AS REAL)"),
                crate::store::Dialect::Postgres => format!("CAST({expr} AS double precision)"),
            });
        }
        let mut conditions = vec!["deleted_at IS NULL".to_owned()];
        if let Some(owners) = principal.owners(sight.grant.read) {
            conditions.push(super::owner_condition(&owners, &mut builder));
        }
        if !filter.trim().is_empty() {
            conditions.push(
                super::query::filter_condition(definition, filter, &mut builder).map_err(
                    |message| {
                        HostError::Invalid(vec![crate::plugins::runtime::FieldError {
                            field: String::new(),
                            message,
                        }])
                    },
                )?,
            );
        }
        if !after.is_empty() {
            let placeholder = builder.bind(SqlValue::Text(after.to_owned()));
            conditions.push(format!("id > {placeholder}"));
        }
        let sql = format!(
            "SELECT {} FROM records WHERE {} AND {} ORDER BY id LIMIT {limit}",
            columns.join(", "),
            scoped.entity_rows(compiled.id),
            conditions.join(" AND ")
        );
        let mut kinds = vec![ColumnKind::Text];
        kinds.extend(std::iter::repeat_n(ColumnKind::Float, fields.len()));
        let rows = scoped
            .aggregate_rows(&sql, None, builder.binds, &kinds)
            .await
            .map_err(|error| host_error(error.into()))?;
        Ok(rows
            .into_iter()
            .map(|row| {
                let mut values = row.into_iter();
                Scanned {
                    id: values
                        .next()
                        .and_then(|id| id.as_str().map(str::to_owned))
                        .unwrap_or_default(),
                    values: values.map(|value| value.as_f64()).collect(),
                }
            })
            .collect())
    }

    fn plugin_create<'a>(
        &'a self,
        scoped: &'a mut Scoped<'_>,
        context: WriteContext,
        entity: String,
        data: String,
    ) -> BoxFuture<'a, Result<Record, HostError>> {
        Box::pin(async move {
            let value: Value = serde_json::from_str(&data)
                .map_err(|error| HostError::Failed(format!("the record is not JSON: {error}")))?;
            let compiled = self
                .metadata
                .compiled_for_write(scoped, &entity)
                .await
                .map_err(|error| host_error(error.into()))?;
            let bodies = Self::prepare_new(&context.principal, &compiled, &[value], false)
                .map_err(host_error)?;
            let now = crate::store::now();
            let mut stored = self
                .insert_many(scoped, &context, &compiled, bodies, false, now)
                .await
                .map_err(host_error)?;
            let stored = stored.pop().expect("one record in, one out");
            seen_record(&context.principal, &compiled, &stored, scoped.dialect())
        })
    }

    fn plugin_update<'a>(
        &'a self,
        scoped: &'a mut Scoped<'_>,
        context: WriteContext,
        entity: String,
        id: String,
        patch: String,
    ) -> BoxFuture<'a, Result<Record, HostError>> {
        Box::pin(async move {
            let data: Value = serde_json::from_str(&patch)
                .map_err(|error| HostError::Failed(format!("the patch is not JSON: {error}")))?;
            let compiled = self
                .metadata
                .compiled_for_write(scoped, &entity)
                .await
                .map_err(|error| host_error(error.into()))?;
            let update = BatchUpdate {
                id,
                version: None,
                data,
            };
            let now = crate::store::now();
            let stored = self
                .update_one(scoped, &context, &compiled, update, now, &[])
                .await
                .map_err(host_error)?;
            seen_record(&context.principal, &compiled, &stored, scoped.dialect())
        })
    }
}

/// Field errors of a rejection, each naming the plugin.
fn rejection(plugin: &str, errors: Vec<crate::plugins::runtime::FieldError>) -> FieldErrors {
    let mut fields = FieldErrors::new();
    for error in errors {
        fields
            .entry(error.field)
            .or_default()
            .push(format!("{} (plugin `{plugin}`)", error.message));
    }
    if fields.is_empty() {
        fields.insert(String::new(), vec![format!("refused by plugin `{plugin}`")]);
    }
    fields
}

/// Merges a `before` hook's patch (a JSON object; `null` clears) and validates the result.
fn apply_patch(
    entity: &CompiledEntity,
    plugin: &str,
    mut body: Map<String, Value>,
    patch: Map<String, Value>,
) -> Result<Map<String, Value>, RecordError> {
    let mut errors = FieldErrors::new();
    check_keys(entity, &patch, &mut errors);
    // Server-set fields (auto-numbers) are kept aside: the schema validates what can be written.
    let server_set: Map<String, Value> = body
        .iter()
        .filter(|(key, _)| {
            entity
                .definition
                .field(key)
                .is_some_and(|field| field.is_read_only())
        })
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    body.retain(|key, _| !server_set.contains_key(key));
    for (key, value) in patch {
        if errors.contains_key(&key) {
            continue;
        }
        if value.is_null() {
            body.remove(&key);
        } else {
            body.insert(key, value);
        }
    }
    let mut body = match validate(entity, body) {
        Ok(body) => body,
        Err(more) => {
            errors.extend(more);
            Map::new()
        }
    };
    if errors.is_empty() {
        body.extend(server_set);
        Ok(body)
    } else {
        let errors = errors
            .into_iter()
            .map(|(field, messages)| {
                let messages = messages
                    .into_iter()
                    .map(|m| format!("{m} (in the patch of plugin `{plugin}`)"))
                    .collect();
                (field, messages)
            })
            .collect();
        Err(RecordError::Invalid(errors))
    }
}

/// A records error as a plugin sees it.
fn host_error(error: RecordError) -> HostError {
    match error {
        RecordError::NotFound { .. } => HostError::NotFound(error.to_string()),
        RecordError::Invalid(fields) => HostError::Invalid(
            fields
                .into_iter()
                .flat_map(|(field, messages)| {
                    messages
                        .into_iter()
                        .map(move |message| crate::plugins::runtime::FieldError {
                            field: field.clone(),
                            message,
                        })
                })
                .collect(),
        ),
        RecordError::Conflict(_) | RecordError::VersionMismatch { .. } => {
            HostError::Conflict(error.to_string())
        }
        RecordError::Metadata(crate::metadata::MetadataError::UnknownEntity(_)) => {
            HostError::NotFound(error.to_string())
        }
        RecordError::Plugin(failure) => HostError::Failed(failure.to_string()),
        other => HostError::Failed(other.to_string()),
    }
}
