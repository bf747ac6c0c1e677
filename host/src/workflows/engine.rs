//! The engine: claims due runs with a lease and runs their steps, one transaction per step.
//!
//! Exactly once for what a step does in the database: a step's effects and the run's move to
//! the next step commit together, fenced by the lease (the commit only counts if this host
//! still holds the run at that step). A host that dies mid-step commits nothing; when its lease
//! runs out another host (or the same one, restarted) claims the run and does the step. What
//! leaves the database (emails, webhooks) goes through the outbox, committed with the step.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use tokio::task::JoinSet;

use super::definition::{self, Action, Node, parse_duration};
use super::template::{self, Scope, Template};
use super::{Compiled, Workflows, condition};
use crate::records::filter;
use crate::records::hooks::WriteContext;
use crate::records::{RecordError, Records};
use crate::store::outbox::NewMessage;
use crate::store::workflows::{
    Approval, Notification, RunUpdate, StepState, StoredRun, StoredStep,
};
use crate::store::{Dialect, Scoped, StoreError, Tx};

/// How many runs one host works on at a time. On SQLite steps queue for the one writer and
/// share its group commits, so more at once means fuller groups; on PostgreSQL each step holds
/// a connection of the pool (16) for its transaction, and the API needs the rest.
fn concurrent_runs(dialect: Dialect) -> usize {
    match dialect {
        Dialect::Sqlite => 32,
        Dialect::Postgres => 6,
    }
}
/// How many steps one claim of a run may take before the run goes back to the queue (so that
/// a long run does not starve the others).
const STEPS_PER_CLAIM: usize = 50;
/// How often the engine looks for due runs when nothing woke it (runs started by another host).
const POLL: Duration = Duration::from_millis(500);

/// How often the engine looks for due timers (schedules and date triggers).
const TIMER_TICK: Duration = Duration::from_secs(1);

/// The engine's settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// How long a claim holds a run; a host that dies loses its runs after this time.
    pub lease: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(30),
        }
    }
}

/// Runs workflows until `shutdown` resolves; a step in progress finishes first.
pub async fn run(
    workflows: Workflows,
    records: Records,
    config: EngineConfig,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let engine = Arc::new(Engine {
        owner: uuid::Uuid::now_v7().to_string(),
        workflows,
        records,
        config,
    });
    if engine.workflows.store().dialect() == Dialect::Sqlite {
        // A SQLite database has one server: leases held by a process that died are void.
        match engine.workflows.store().release_all_leases().await {
            Ok(0) => {}
            Ok(released) => tracing::info!(released, "took over the runs of a previous process"),
            Err(error) => tracing::error!(%error, "cannot release old workflow leases"),
        }
    }
    let limit = concurrent_runs(engine.workflows.store().dialect());
    let mut working: JoinSet<()> = JoinSet::new();
    tokio::pin!(shutdown);
    // Timed workflows (schedules, dates) start their runs on a task of their own, once a
    // second, so a large firing does not hold up the runs.
    let (stop_timers, mut timers_stopped) = tokio::sync::watch::channel(false);
    let timers = {
        let engine = engine.clone();
        tokio::spawn(async move {
            loop {
                if super::schedule::fire_due(&engine.workflows, &engine.records).await > 0 {
                    engine.workflows.wake();
                }
                tokio::select! {
                    () = tokio::time::sleep(TIMER_TICK) => {}
                    _ = timers_stopped.changed() => break,
                }
            }
        })
    };
    loop {
        while let Some(done) = working.try_join_next() {
            reap(done);
        }
        // Claim as many runs as there are free places; each is driven on its own task, and a
        // place is refilled as soon as its run is done (no batch waits for its slowest run).
        let free = limit - working.len();
        let mut more_due = false;
        if free > 0 && engine.any_due().await {
            let claimed = engine.claim(free).await;
            more_due = claimed.len() == free;
            for run in claimed {
                let engine = engine.clone();
                working.spawn(async move { engine.drive(run).await });
            }
        }
        let wait = if more_due || working.len() == limit {
            POLL
        } else {
            engine.until_next_due().await
        };
        tokio::select! {
            () = engine.workflows.woken() => {}
            () = tokio::time::sleep(wait) => {}
            Some(done) = working.join_next(), if !working.is_empty() => reap(done),
            () = &mut shutdown => break,
        }
    }
    // The firing and the steps in flight finish (each is one transaction); then the engine stops.
    let _ = stop_timers.send(true);
    if let Err(error) = timers.await {
        tracing::error!(%error, "the workflow timers panicked");
    }
    while let Some(done) = working.join_next().await {
        reap(done);
    }
}

fn reap(done: Result<(), tokio::task::JoinError>) {
    if let Err(error) = done {
        tracing::error!(%error, "a workflow run panicked; its lease will run out");
    }
}

struct Engine {
    owner: String,
    workflows: Workflows,
    records: Records,
    config: EngineConfig,
}

/// Why a step did not complete.
#[derive(Debug)]
enum StepError {
    /// The step failed; it is retried or fails the run.
    Failed(String),
    /// Another host holds the run now: this host's work on it is void.
    Lost,
    Store(StoreError),
}

impl From<StoreError> for StepError {
    fn from(error: StoreError) -> Self {
        StepError::Store(error)
    }
}

impl From<RecordError> for StepError {
    fn from(error: RecordError) -> Self {
        match error {
            RecordError::Store(error) => StepError::Store(error),
            other => StepError::Failed(describe(&other)),
        }
    }
}

fn describe(error: &RecordError) -> String {
    match error {
        RecordError::Invalid(fields) | RecordError::Conflict(fields) => {
            let details: Vec<String> = fields
                .iter()
                .map(|(field, messages)| {
                    if field.is_empty() {
                        messages.join("; ")
                    } else {
                        format!("{field}: {}", messages.join("; "))
                    }
                })
                .collect();
            format!("{error}: {}", details.join(", "))
        }
        other => other.to_string(),
    }
}

/// What a step did.
enum Outcome {
    /// Done; the run goes on (or ends) at once.
    Next,
    /// The run waits (a `wait` step) until its `next_at`.
    Waiting,
    /// The run ended.
    Finished,
}

impl Engine {
    /// Leases up to `limit` due runs for this host.
    async fn claim(&self, limit: usize) -> Vec<StoredRun> {
        let now = crate::store::now();
        let until = now + self.config.lease;
        match self
            .workflows
            .store()
            .claim_runs(&self.owner, now, until, limit as i64)
            .await
        {
            Ok(claimed) => claimed,
            Err(error) => {
                tracing::error!(%error, "cannot claim workflow runs");
                Vec::new()
            }
        }
    }

    /// Whether a run is due now: a read, so that an idle engine does not take the writer (on
    /// SQLite) to claim nothing. A failed read says yes, and the claim reports the error.
    async fn any_due(&self) -> bool {
        match self.workflows.store().next_due_run().await {
            Ok(Some(at)) => at <= crate::store::now(),
            Ok(None) => false,
            Err(_) => true,
        }
    }

    async fn until_next_due(&self) -> Duration {
        match self.workflows.store().next_due_run().await {
            Ok(Some(at)) => {
                let left = at - OffsetDateTime::now_utc();
                Duration::try_from(left).unwrap_or(Duration::ZERO).min(POLL)
            }
            Ok(None) => POLL,
            Err(error) => {
                tracing::error!(%error, "cannot read when workflow runs are due");
                POLL
            }
        }
    }

    /// Works on one claimed run: its steps, one transaction each, until it waits, ends, fails
    /// or has taken its share.
    async fn drive(&self, mut run: StoredRun) {
        for _ in 0..STEPS_PER_CLAIM {
            match self.step(&run).await {
                Ok((Outcome::Next, next)) => run = next,
                Ok((Outcome::Waiting | Outcome::Finished, _)) => return,
                Err(StepError::Lost) => {
                    tracing::warn!(run = %run.id, "another host took the run over");
                    return;
                }
                Err(StepError::Failed(message)) => {
                    self.fail(&run, &message).await;
                    return;
                }
                Err(StepError::Store(error)) => {
                    // The database is unwell: the lease runs out and the run is claimed again.
                    tracing::error!(run = %run.id, %error, "a workflow step could not be stored");
                    return;
                }
            }
        }
        self.release(&run).await;
    }

    /// Gives a run back to the queue without changing it (it has had its share of steps).
    async fn release(&self, run: &StoredRun) {
        let (run, owner) = (run.clone(), self.owner.clone());
        let result = self
            .workflows
            .store()
            .write(move |tx: &mut Tx| {
                Box::pin(async move {
                    let tenant = crate::domain::TenantId::from_stored(run.tenant_id.clone());
                    let update = RunUpdate {
                        status: "pending",
                        context: &run.context,
                        next_step: run.next_step.as_deref(),
                        attempt: run.attempt,
                        next_at: crate::store::now(),
                        error: None,
                        finished: false,
                        keep_lease: false,
                    };
                    tx.scoped(&tenant)
                        .advance_run(
                            &run.id,
                            &owner,
                            run.next_step.as_deref(),
                            &update,
                            crate::store::now(),
                        )
                        .await
                })
            })
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "cannot give a workflow run back to the queue");
        }
        self.workflows.wake_now();
    }

    /// Runs the run's next step in one transaction.
    async fn step(&self, run: &StoredRun) -> Result<(Outcome, StoredRun), StepError> {
        let records = self.records.clone();
        let workflows = self.workflows.clone();
        let owner = self.owner.clone();
        let run = run.clone();
        let result = self
            .workflows
            .store()
            .write(move |tx: &mut Tx| {
                Box::pin(async move {
                    let tenant = crate::domain::TenantId::from_stored(run.tenant_id.clone());
                    let mut scoped = tx.scoped(&tenant);
                    let compiled = workflows
                        .compiled(&mut scoped, &run.workflow_id, run.version)
                        .await?;
                    let mut step = StepRun {
                        records: &records,
                        compiled: &compiled,
                        run: &run,
                        owner: &owner,
                    };
                    step.execute(&mut scoped).await
                })
            })
            .await;
        if result.is_ok() {
            // Only when the step's writes started runs (the engine goes on with this one).
            self.workflows.wake();
        }
        result
    }

    /// Records a failed attempt: the run retries the step after a backoff, or fails.
    async fn fail(&self, run: &StoredRun, message: &str) {
        let workflows = self.workflows.clone();
        let (run, owner, message) = (run.clone(), self.owner.clone(), message.to_owned());
        let result = self
            .workflows
            .store()
            .write(move |tx: &mut Tx| {
                Box::pin(async move {
                    let tenant = crate::domain::TenantId::from_stored(run.tenant_id.clone());
                    let mut scoped = tx.scoped(&tenant);
                    let compiled = workflows
                        .compiled(&mut scoped, &run.workflow_id, run.version)
                        .await?;
                    let retry = compiled.definition.retry;
                    let attempts = run.attempt + 1;
                    let gives_up = attempts >= i64::from(retry.max_attempts);
                    let now = crate::store::now();
                    let Some(step_id) = run.next_step.as_deref() else {
                        return Ok(());
                    };
                    let node = compiled.plan.position(step_id).map(|i| &compiled.plan.nodes[i]);
                    let (seq, last) = step_row(&mut scoped, &run, step_id).await?;
                    let started = last.map_or(now, |last| last.started_at);
                    scoped
                        .put_step(
                            &run.id,
                            &StepState {
                                seq,
                                step_id,
                                step_type: node.map_or("unknown", |n| n.step.action.kind()),
                                status: if gives_up { "failed" } else { "retrying" },
                                attempts,
                                input: None,
                                output: None,
                                error: Some(message.clone()),
                                started_at: started,
                                finished_at: Some(now),
                            },
                        )
                        .await?;
                    let error = if gives_up {
                        format!("step `{step_id}` failed after {attempts} attempt(s): {message}")
                    } else {
                        format!("step `{step_id}` failed (attempt {attempts} of {}), retrying: {message}", retry.max_attempts)
                    };
                    let update = RunUpdate {
                        status: if gives_up { "failed" } else { "pending" },
                        context: &run.context,
                        next_step: Some(step_id),
                        attempt: attempts,
                        next_at: if gives_up {
                            now
                        } else {
                            now + retry.delay(attempts as u32)
                        },
                        error: Some(&error),
                        finished: gives_up,
                        keep_lease: false,
                    };
                    scoped
                        .advance_run(&run.id, &owner, Some(step_id), &update, now)
                        .await?;
                    if gives_up {
                        tracing::warn!(run = %run.id, workflow = %compiled.name, %error, "a workflow run failed");
                    }
                    Ok::<_, StoreError>(())
                })
            })
            .await;
        if let Err(error) = result {
            tracing::error!(%error, "cannot record a failed workflow step");
        }
    }
}

impl Workflows {
    /// Wakes the engine whether or not a trigger fired.
    pub(crate) fn wake_now(&self) {
        self.inner.wake.notify_one();
    }
}

/// The sequence number of the step row for `step_id`, and that row if it exists: the last row
/// again when the run goes on with that step (a wait ending, a retry), otherwise a new one.
async fn step_row(
    scoped: &mut Scoped<'_>,
    run: &StoredRun,
    step_id: &str,
) -> Result<(i64, Option<StoredStep>), StoreError> {
    Ok(match scoped.last_step(&run.id).await? {
        Some(last) if last.step_id == step_id && last.status != "succeeded" => {
            (last.seq, Some(last))
        }
        Some(last) => (last.seq + 1, None),
        None => (1, None),
    })
}

/// One step of one run, inside the step's transaction.
struct StepRun<'a> {
    records: &'a Records,
    compiled: &'a Compiled,
    run: &'a StoredRun,
    owner: &'a str,
}

impl StepRun<'_> {
    async fn execute(
        &mut self,
        scoped: &mut Scoped<'_>,
    ) -> Result<(Outcome, StoredRun), StepError> {
        let run = self.run;
        let now = crate::store::now();
        let Some(step_id) = run.next_step.clone() else {
            // Nothing left (a run whose definition has no steps): it succeeded.
            return self.finish(scoped, &run.context, now).await;
        };
        let index =
            self.compiled.plan.position(&step_id).ok_or_else(|| {
                StepError::Failed(format!("the workflow has no step `{step_id}`"))
            })?;
        let node = &self.compiled.plan.nodes[index];
        let principal = scoped.user_principal(&run.run_as).await?.ok_or_else(|| {
            StepError::Failed(format!(
                "user `{}`, whom the run acts as, no longer exists",
                run.run_as
            ))
        })?;
        let mut context = WriteContext::new(&principal, now);
        context.workflow_depth = run.depth + 1;
        let trigger: Value = serde_json::from_str(&run.trigger_data).unwrap_or(Value::Null);
        let mut outputs: Map<String, Value> =
            serde_json::from_str(&run.context).unwrap_or_default();
        let record = match (&run.entity, &run.record_id) {
            (Some(entity), Some(id)) => {
                self.records
                    .step_record(scoped, &principal, entity, id)
                    .await?
            }
            _ => None,
        };
        let scope = Scope {
            now: Some(now),
            user: &run.run_as,
            run: &run.id,
            record: record.as_ref(),
            old: trigger.get("old").and_then(Value::as_object),
            input: trigger.get("input").and_then(Value::as_object),
            steps: Some(&outputs),
        };
        let (seq, last) = step_row(scoped, run, &step_id).await?;
        let started_at = last.as_ref().map_or(now, |last| last.started_at);
        let record_needed = || {
            StepError::Failed(match (&run.entity, &run.record_id) {
                (Some(entity), Some(id)) => {
                    format!("the run's `{entity}` record `{id}` no longer exists")
                }
                _ => "this run has no record".to_owned(),
            })
        };
        let render = |text: &str| template::render_text(text, &scope).map_err(StepError::Failed);
        let mut next = node.next;
        let (input, output) = match &node.step.action {
            Action::SetFields { values } => {
                let values = template::render_values(values, &scope).map_err(StepError::Failed)?;
                let (entity, id) = match (&run.entity, &run.record_id, &record) {
                    (Some(entity), Some(id), Some(_)) => (entity, id),
                    _ => return Err(record_needed()),
                };
                let stored = self
                    .records
                    .step_update(scoped, &context, entity, id, values.clone())
                    .await?;
                (
                    Value::Object(values),
                    json!({ "id": stored.id, "version": stored.version }),
                )
            }
            Action::CreateRecord {
                entity,
                values,
                owner,
            } => {
                let values = template::render_values(values, &scope).map_err(StepError::Failed)?;
                let owner = owner.as_deref().map(render).transpose()?;
                if let Some(owner) = &owner
                    && scoped.user_principal(owner).await?.is_none()
                {
                    return Err(StepError::Failed(format!(
                        "`{owner}` is not an enabled user of this tenant"
                    )));
                }
                let stored = self
                    .records
                    .step_create(scoped, &context, entity, values.clone())
                    .await?;
                if let Some(owner) = &owner {
                    self.records
                        .step_assign(scoped, &context, entity, &stored.id, owner)
                        .await?;
                }
                let mut input = json!({ "values": values });
                if let Some(owner) = owner {
                    input["owner"] = Value::String(owner);
                }
                (input, json!({ "id": stored.id }))
            }
            Action::UpdateRecords {
                entity,
                filter,
                limit,
                values,
            } => {
                let filter = Template::parse(filter)
                    .and_then(|t| t.render_filter(&scope))
                    .map_err(StepError::Failed)?;
                let values = template::render_values(values, &scope).map_err(StepError::Failed)?;
                let ids = self
                    .records
                    .step_matching(
                        scoped,
                        entity,
                        &filter,
                        None,
                        i64::from(limit.unwrap_or(1000)),
                    )
                    .await?;
                for id in &ids {
                    self.records
                        .step_update(scoped, &context, entity, id, values.clone())
                        .await?;
                }
                (
                    json!({ "filter": filter, "values": values }),
                    json!({ "count": ids.len(), "ids": ids }),
                )
            }
            Action::Notify {
                user,
                role,
                team,
                message,
            } => {
                let message = render(message)?;
                if message.is_empty() {
                    return Err(StepError::Failed(
                        "the notification's message is empty".into(),
                    ));
                }
                let (users, to) = match (user, role, team) {
                    (Some(user), _, _) => {
                        let user = render(user)?;
                        if scoped.user_principal(&user).await?.is_none() {
                            return Err(StepError::Failed(format!(
                                "no user of this tenant has id `{user}`"
                            )));
                        }
                        (vec![user.clone()], json!({ "user": user }))
                    }
                    (None, Some(role), _) => {
                        let users = scoped.users_with_role(role).await?.ok_or_else(|| {
                            StepError::Failed(format!("the tenant has no role `{role}`"))
                        })?;
                        (users, json!({ "role": role }))
                    }
                    (None, None, Some(team)) => {
                        let users = scoped.members_of(team).await?.ok_or_else(|| {
                            StepError::Failed(format!("the tenant has no team `{team}`"))
                        })?;
                        (users, json!({ "team": team }))
                    }
                    (None, None, None) => {
                        return Err(StepError::Failed("the notification names no one".into()));
                    }
                };
                let mut ids = Vec::with_capacity(users.len());
                for user in &users {
                    let id = uuid::Uuid::now_v7().to_string();
                    scoped
                        .insert_notification(&Notification {
                            id: id.clone(),
                            user_id: user.clone(),
                            message: message.clone(),
                            entity: run.entity.clone(),
                            record_id: run.record_id.clone(),
                            workflow: Some(self.compiled.name.clone()),
                            run_id: Some(run.id.clone()),
                            created_at: now,
                            read_at: None,
                        })
                        .await?;
                    ids.push(id);
                }
                let mut input = to;
                input["message"] = Value::String(message);
                let first = ids.first().cloned();
                (input, json!({ "id": first, "ids": ids, "users": users }))
            }
            Action::SendEmail { to, subject, body } => {
                let to = render(to)?;
                let (subject, body) = (render(subject)?, render(body)?);
                if !looks_like_email(&to) {
                    return Err(StepError::Failed(format!("`{to}` is not an email address")));
                }
                let id = uuid::Uuid::now_v7().to_string();
                let payload = json!({ "to": to, "subject": subject, "body": body });
                scoped
                    .enqueue(&[NewMessage {
                        id: id.clone(),
                        kind: "email".to_owned(),
                        payload: payload.to_string(),
                        plugin_id: None,
                        plugin_version: None,
                        entity: run.entity.clone(),
                        record_id: run.record_id.clone(),
                        run_id: Some(run.id.clone()),
                        created_by: run.run_as.clone(),
                        created_at: now,
                    }])
                    .await?;
                (payload, json!({ "message_id": id }))
            }
            Action::Webhook { webhook, body } => {
                let target = scoped.webhook(webhook).await?.ok_or_else(|| {
                    StepError::Failed(format!("webhook `{webhook}` no longer exists"))
                })?;
                let body = match body {
                    Some(values) => Value::Object(
                        template::render_values(values, &scope).map_err(StepError::Failed)?,
                    ),
                    None => json!({
                        "workflow": self.compiled.name,
                        "run": run.id,
                        "event": run.event,
                        "entity": run.entity,
                        "record": record,
                    }),
                };
                let id = uuid::Uuid::now_v7().to_string();
                let payload = json!({ "webhook": target.id, "name": target.name, "body": body });
                scoped
                    .enqueue(&[NewMessage {
                        id: id.clone(),
                        kind: crate::webhooks::delivery::KIND.to_owned(),
                        payload: payload.to_string(),
                        plugin_id: None,
                        plugin_version: None,
                        entity: run.entity.clone(),
                        record_id: run.record_id.clone(),
                        run_id: Some(run.id.clone()),
                        created_by: run.run_as.clone(),
                        created_at: now,
                    }])
                    .await?;
                (
                    json!({ "webhook": target.name, "body": body }),
                    json!({ "message_id": id }),
                )
            }
            Action::Wait {
                duration,
                until,
                offset,
            } => {
                let waiting_until = last
                    .as_ref()
                    .filter(|last| last.status == "waiting")
                    .and_then(|last| last.output.as_deref())
                    .and_then(|output| serde_json::from_str::<Value>(output).ok())
                    .and_then(|output| output["until"].as_str().and_then(template::parse_moment));
                let until = match waiting_until {
                    Some(until) => until,
                    None => wake_time(
                        duration.as_deref(),
                        until.as_deref(),
                        offset.as_deref(),
                        &scope,
                        now,
                    )?,
                };
                let input = json!({ "until": template::format_time(until) });
                if until > now {
                    return self
                        .wait(scoped, node, seq, started_at, &input, until, now)
                        .await;
                }
                (input.clone(), input)
            }
            Action::Plugin {
                plugin,
                step,
                input,
            } => {
                let input = Value::Object(
                    template::render_values(input, &scope).map_err(StepError::Failed)?,
                );
                let output = self
                    .records
                    .step_plugin(
                        scoped,
                        &context,
                        plugin,
                        step,
                        &input,
                        (run.entity.as_deref(), run.record_id.as_deref()),
                        &run.id,
                    )
                    .await?
                    .map_err(StepError::Failed)?;
                (input, output)
            }
            Action::AssignOwner {
                user,
                round_robin,
                role,
                team,
            } => {
                let (entity, id) = match (&run.entity, &run.record_id, &record) {
                    (Some(entity), Some(id), Some(_)) => (entity, id),
                    _ => return Err(record_needed()),
                };
                let previous = record
                    .as_ref()
                    .and_then(|r| r.get("_owner").cloned())
                    .unwrap_or(Value::Null);
                let pool = match (role, team) {
                    (Some(role), _) => Some((
                        format!("role `{role}`"),
                        scoped.users_with_role(role).await?.ok_or_else(|| {
                            StepError::Failed(format!("the tenant has no role `{role}`"))
                        })?,
                    )),
                    (None, Some(team)) => Some((
                        format!("team `{team}`"),
                        scoped.members_of(team).await?.ok_or_else(|| {
                            StepError::Failed(format!("the tenant has no team `{team}`"))
                        })?,
                    )),
                    (None, None) => None,
                };
                let owner = match (user, &pool) {
                    (Some(user), _) => Some(render(user)?),
                    (None, Some((_, users))) if users.is_empty() => None,
                    (None, Some((_, users))) => {
                        let turn = scoped.next_turn(&run.workflow_id, &step_id).await?;
                        Some(users[(turn - 1).rem_euclid(users.len() as i64) as usize].clone())
                    }
                    (None, None) => {
                        let turn = scoped.next_turn(&run.workflow_id, &step_id).await?;
                        let index = (turn - 1).rem_euclid(round_robin.len() as i64) as usize;
                        Some(render(&round_robin[index])?)
                    }
                };
                match owner {
                    Some(owner) => {
                        if scoped.user_principal(&owner).await?.is_none() {
                            return Err(StepError::Failed(format!(
                                "`{owner}` is not a user of this tenant"
                            )));
                        }
                        self.records
                            .step_assign(scoped, &context, entity, id, &owner)
                            .await?;
                        (
                            json!({ "owner": owner }),
                            json!({ "owner": owner, "previous": previous }),
                        )
                    }
                    // Nobody to take it: the record keeps its owner, and the run says why.
                    None => {
                        let pool = pool.map(|(pool, _)| pool).unwrap_or_default();
                        let skipped = format!("no enabled user in {pool}: the owner is kept");
                        (
                            json!({ "pool": pool }),
                            json!({ "owner": previous, "previous": previous, "skipped": skipped }),
                        )
                    }
                }
            }
            Action::Approval {
                approvers,
                message,
                timeout,
                ..
            } => {
                let asked = last
                    .as_ref()
                    .filter(|last| last.status == "waiting")
                    .and_then(|last| last.output.as_deref())
                    .and_then(|output| serde_json::from_str::<Value>(output).ok());
                let Some(asked) = asked else {
                    // First time here: ask, and wait for a decision (or the timeout).
                    let mut users = Vec::with_capacity(approvers.len());
                    for approver in approvers {
                        let user = render(approver)?;
                        if scoped.user_principal(&user).await?.is_none() {
                            return Err(StepError::Failed(format!(
                                "approver `{user}` is not a user of this tenant"
                            )));
                        }
                        if !users.contains(&user) {
                            users.push(user);
                        }
                    }
                    let message = render(message)?;
                    let until = match timeout {
                        Some(timeout) => {
                            now + parse_duration(timeout).ok_or_else(|| {
                                StepError::Failed(format!("`{timeout}` is not a duration"))
                            })?
                        }
                        // No timeout: the run waits until someone decides.
                        None => now + time::Duration::days(36_500),
                    };
                    let id = uuid::Uuid::now_v7().to_string();
                    scoped
                        .insert_approval(&Approval {
                            id: id.clone(),
                            run_id: run.id.clone(),
                            step_id: step_id.clone(),
                            workflow: self.compiled.name.clone(),
                            entity: run.entity.clone(),
                            record_id: run.record_id.clone(),
                            approvers: json!(users).to_string(),
                            message: message.clone(),
                            status: "pending".to_owned(),
                            decided_by: None,
                            comment: None,
                            created_at: now,
                            decided_at: None,
                        })
                        .await?;
                    let state = json!({
                        "approval": id, "approvers": users, "message": message,
                        "until": template::format_time(until),
                    });
                    return self
                        .wait(scoped, node, seq, started_at, &state, until, now)
                        .await;
                };
                let id = asked["approval"].as_str().unwrap_or_default().to_owned();
                let until = asked["until"]
                    .as_str()
                    .and_then(template::parse_moment)
                    .unwrap_or(now);
                let approval = scoped.approval(&id).await?.ok_or_else(|| {
                    StepError::Store(StoreError::Corrupt(format!("approval {id} is missing")))
                })?;
                let decision = match approval.status.as_str() {
                    "pending" if now < until => {
                        // Woken before anyone decided: wait on.
                        return self
                            .wait(scoped, node, seq, started_at, &asked, until, now)
                            .await;
                    }
                    "pending" => {
                        scoped
                            .decide_approval(&id, "expired", None, None, now)
                            .await?;
                        "expired".to_owned()
                    }
                    other => other.to_owned(),
                };
                let approved = decision == "approved";
                next = if approved {
                    node.then_first.or(node.next)
                } else {
                    node.else_first.or(node.next)
                };
                (
                    asked.clone(),
                    json!({
                        "approval": id, "decision": decision,
                        "by": approval.decided_by, "comment": approval.comment,
                    }),
                )
            }
            Action::Branch { condition, .. } => {
                // The record's fields, and the outputs of earlier steps as `steps.<step>.<key>`.
                let mut subject = match &record {
                    Some(record) => record.clone(),
                    None if definition::on_steps_only(condition) => Map::new(),
                    None => return Err(record_needed()),
                };
                for (id, output) in &outputs {
                    for (key, value) in output.as_object().into_iter().flatten() {
                        subject.insert(format!("steps.{id}.{key}"), value.clone());
                    }
                }
                let text = Template::parse(condition)
                    .and_then(|t| t.render_filter(&scope))
                    .map_err(StepError::Failed)?;
                let parsed = filter::parse(&text).map_err(|e| StepError::Failed(e.to_string()))?;
                let taken = condition::holds(&parsed, &subject);
                next = if taken {
                    node.then_first.or(node.next)
                } else {
                    node.else_first.or(node.next)
                };
                (
                    json!({ "if": text }),
                    json!({ "taken": if taken { "then" } else { "else" } }),
                )
            }
        };
        scoped
            .put_step(
                &run.id,
                &StepState {
                    seq,
                    step_id: &step_id,
                    step_type: node.step.action.kind(),
                    status: "succeeded",
                    attempts: run.attempt + 1,
                    input: Some(input.to_string()),
                    output: Some(output.to_string()),
                    error: None,
                    started_at,
                    finished_at: Some(crate::store::now()),
                },
            )
            .await?;
        outputs.insert(step_id.clone(), output);
        let context_text = Value::Object(outputs).to_string();
        let Some(next) = next else {
            return self.finish(scoped, &context_text, now).await;
        };
        let next_step = self.compiled.plan.nodes[next].step.id.clone();
        let update = RunUpdate {
            status: "running",
            context: &context_text,
            next_step: Some(&next_step),
            attempt: 0,
            next_at: now,
            error: None,
            finished: false,
            keep_lease: true,
        };
        if !scoped
            .advance_run(&run.id, self.owner, Some(&step_id), &update, now)
            .await?
        {
            return Err(StepError::Lost);
        }
        Ok((
            Outcome::Next,
            StoredRun {
                status: "running".to_owned(),
                context: context_text,
                next_step: Some(next_step),
                attempt: 0,
                next_at: now,
                error: None,
                updated_at: now,
                ..run.clone()
            },
        ))
    }

    #[expect(
        clippy::too_many_arguments,
        reason = "the parts of a waiting step's state"
    )]
    async fn wait(
        &self,
        scoped: &mut Scoped<'_>,
        node: &Node,
        seq: i64,
        started_at: OffsetDateTime,
        input: &Value,
        until: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(Outcome, StoredRun), StepError> {
        let run = self.run;
        scoped
            .put_step(
                &run.id,
                &StepState {
                    seq,
                    step_id: &node.step.id,
                    step_type: node.step.action.kind(),
                    status: "waiting",
                    attempts: run.attempt + 1,
                    input: Some(input.to_string()),
                    output: Some(input.to_string()),
                    error: None,
                    started_at,
                    finished_at: None,
                },
            )
            .await?;
        let update = RunUpdate {
            status: "waiting",
            context: &run.context,
            next_step: Some(&node.step.id),
            attempt: run.attempt,
            next_at: until,
            error: None,
            finished: false,
            keep_lease: false,
        };
        if !scoped
            .advance_run(&run.id, self.owner, Some(&node.step.id), &update, now)
            .await?
        {
            return Err(StepError::Lost);
        }
        Ok((Outcome::Waiting, run.clone()))
    }

    async fn finish(
        &self,
        scoped: &mut Scoped<'_>,
        context: &str,
        now: OffsetDateTime,
    ) -> Result<(Outcome, StoredRun), StepError> {
        let run = self.run;
        let update = RunUpdate {
            status: "succeeded",
            context,
            next_step: None,
            attempt: 0,
            next_at: now,
            error: None,
            finished: true,
            keep_lease: false,
        };
        if !scoped
            .advance_run(&run.id, self.owner, run.next_step.as_deref(), &update, now)
            .await?
        {
            return Err(StepError::Lost);
        }
        Ok((Outcome::Finished, run.clone()))
    }
}

/// When a `wait` step ends.
fn wake_time(
    duration: Option<&str>,
    until: Option<&str>,
    offset: Option<&str>,
    scope: &Scope<'_>,
    now: OffsetDateTime,
) -> Result<OffsetDateTime, StepError> {
    if let Some(duration) = duration {
        let duration = parse_duration(duration)
            .ok_or_else(|| StepError::Failed(format!("`{duration}` is not a duration")))?;
        return Ok(now + duration);
    }
    let text = until.unwrap_or_default();
    let value = Template::parse(text)
        .and_then(|template| template.render(scope))
        .map_err(StepError::Failed)?;
    let Some(moment) = value.as_str().and_then(template::parse_moment) else {
        return Err(StepError::Failed(format!(
            "`until` is {value}, not a date or time to wait for"
        )));
    };
    let offset = offset
        .and_then(parse_duration)
        .unwrap_or(time::Duration::ZERO);
    Ok(moment + offset)
}

fn looks_like_email(text: &str) -> bool {
    let mut parts = text.split('@');
    matches!(
        (parts.next(), parts.next(), parts.next()),
        (Some(local), Some(domain), None)
            if !local.is_empty() && domain.contains('.') && !text.contains(char::is_whitespace)
    )
}
