//! Workflow definitions and their versions, runs and their steps, and in-app notifications.
//!
//! Everything a tenant sees goes through [`Scoped`]. The engine's claim of due runs is the one
//! query across tenants ([`Store::claim_runs`]): it only leases runs, and all work on a claimed
//! run goes through [`Scoped`] for the run's tenant.

use time::OffsetDateTime;

use super::records::{Param, build_inserts};
use super::{Dialect, Scoped, SqlValue, Store, StoreError, Timestamp, Tx, bind_all, on};

/// A workflow as stored: its current definition (JSON) and state.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredWorkflow {
    pub id: String,
    pub name: String,
    pub version: i64,
    pub enabled: bool,
    pub definition: String,
    pub created_at: OffsetDateTime,
    pub created_by: String,
    pub updated_at: OffsetDateTime,
    pub updated_by: String,
    /// When a timed workflow fires next (its timer).
    pub next_run_at: Option<OffsetDateTime>,
}

const WORKFLOW_COLUMNS: &str = "id, name, version, enabled, definition, created_at, created_by, updated_at, updated_by, \
     (SELECT next_at FROM workflow_timers t WHERE t.workflow_id = workflows.id) AS next_run_at";

/// A timer that has fallen due, with the workflow it fires.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DueTimer {
    pub workflow_id: String,
    pub tenant_id: String,
    pub next_at: OffsetDateTime,
    pub watermark: OffsetDateTime,
    pub version: i64,
    pub updated_by: String,
}

/// A run as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredRun {
    pub id: String,
    pub tenant_id: String,
    pub workflow_id: String,
    pub version: i64,
    pub status: String,
    pub depth: i64,
    pub event: String,
    pub entity: Option<String>,
    pub record_id: Option<String>,
    pub run_as: String,
    pub trigger_data: String,
    pub context: String,
    pub next_step: Option<String>,
    pub attempt: i64,
    pub next_at: OffsetDateTime,
    pub lease_owner: Option<String>,
    pub lease_until: Option<OffsetDateTime>,
    pub error: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
}

const RUN_COLUMNS: &str = "id, tenant_id, workflow_id, version, status, depth, event, entity, \
     record_id, run_as, trigger_data, context, next_step, attempt, next_at, lease_owner, \
     lease_until, error, created_at, updated_at, finished_at";

/// A run about to be inserted.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub id: String,
    pub workflow_id: String,
    pub version: i64,
    pub status: &'static str,
    pub depth: i64,
    pub event: &'static str,
    pub entity: Option<String>,
    pub record_id: Option<String>,
    pub run_as: String,
    pub trigger_data: String,
    pub next_step: Option<String>,
    pub error: Option<String>,
    pub now: OffsetDateTime,
}

/// One step of a run as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredStep {
    pub seq: i64,
    pub step_id: String,
    #[sqlx(rename = "type")]
    pub step_type: String,
    pub status: String,
    pub attempts: i64,
    pub input: Option<String>,
    pub output: Option<String>,
    pub error: Option<String>,
    pub started_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
}

/// A step's state to store (inserted, or replacing the step's row of the same `seq`).
#[derive(Debug, Clone)]
pub struct StepState<'a> {
    pub seq: i64,
    pub step_id: &'a str,
    pub step_type: &'a str,
    pub status: &'a str,
    pub attempts: i64,
    pub input: Option<String>,
    pub output: Option<String>,
    pub error: Option<String>,
    pub started_at: OffsetDateTime,
    pub finished_at: Option<OffsetDateTime>,
}

/// Where a run goes after a step.
#[derive(Debug, Clone)]
pub struct RunUpdate<'a> {
    pub status: &'a str,
    pub context: &'a str,
    pub next_step: Option<&'a str>,
    pub attempt: i64,
    pub next_at: OffsetDateTime,
    pub error: Option<&'a str>,
    pub finished: bool,
    /// Keep the lease (the engine goes on with the run at once) or give it up.
    pub keep_lease: bool,
}

/// An in-app notification.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Notification {
    pub id: String,
    pub user_id: String,
    pub message: String,
    pub entity: Option<String>,
    pub record_id: Option<String>,
    pub workflow: Option<String>,
    pub run_id: Option<String>,
    pub created_at: OffsetDateTime,
    pub read_at: Option<OffsetDateTime>,
}

/// Which runs to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct RunFilter {
    pub status: Option<String>,
    /// Only runs older than this id (the cursor of the previous page).
    pub before: Option<String>,
    pub limit: i64,
}

impl Store {
    /// Leases up to `limit` runs that are due and not leased by a live host, for `owner` until
    /// `until`, across tenants. On PostgreSQL, hosts claiming at the same time skip each other's
    /// rows (`FOR UPDATE SKIP LOCKED`), so a run is never claimed twice.
    pub async fn claim_runs(
        &self,
        owner: &str,
        now: OffsetDateTime,
        until: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<StoredRun>, StoreError> {
        let skip_locked = match self.dialect() {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        };
        let sql = format!(
            "UPDATE workflow_runs SET lease_owner = $1, lease_until = $2, status = 'running' \
             WHERE id IN (SELECT id FROM workflow_runs \
               WHERE status IN ('pending', 'running', 'waiting') AND next_at <= $3 \
               AND (lease_until IS NULL OR lease_until < $3) \
               ORDER BY next_at LIMIT $4{skip_locked}) \
             RETURNING {RUN_COLUMNS}"
        );
        let owner = owner.to_owned();
        self.write(move |tx: &mut Tx| {
            Box::pin(async move {
                Ok(on!(tx.exec().await?, c => sqlx::query_as(&sql)
                    .bind(&owner)
                    .bind(Timestamp(until))
                    .bind(Timestamp(now))
                    .bind(limit)
                    .fetch_all(&mut *c)
                    .await?))
            })
        })
        .await
    }

    /// When the next run not leased by a live host falls due, if any is waiting.
    pub async fn next_due_run(&self) -> Result<Option<OffsetDateTime>, StoreError> {
        let mut conn = self.reader().await?;
        let next: Option<Option<OffsetDateTime>> = on!(conn.exec(), c => sqlx::query_scalar(
            "SELECT next_at FROM workflow_runs WHERE status IN ('pending', 'running', 'waiting') \
             AND (lease_until IS NULL OR lease_until < $1) ORDER BY next_at LIMIT 1",
        )
        .bind(Timestamp(super::now()))
        .fetch_optional(&mut *c)
        .await?);
        Ok(next.flatten())
    }

    /// Timers due at `now`, soonest first, with their workflow's current definition. Only reads:
    /// a timer is claimed by [`Scoped::advance_timer`] in the transaction that starts its runs.
    pub async fn due_timers(
        &self,
        now: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<DueTimer>, StoreError> {
        let mut conn = self.reader().await?;
        Ok(on!(conn.exec(), c => sqlx::query_as(
            "SELECT t.workflow_id, t.tenant_id, t.next_at, t.watermark, w.version, w.updated_by FROM workflow_timers t JOIN workflows w ON w.id = t.workflow_id \
             WHERE t.next_at <= $1 AND w.enabled AND w.deleted_at IS NULL \
             ORDER BY t.next_at LIMIT $2",
        )
        .bind(Timestamp(now))
        .bind(limit)
        .fetch_all(&mut *c)
        .await?))
    }

    /// Gives up every lease: at the start of a server on SQLite, which is the only host of its
    /// database, leases held by a process that died cannot be held by anyone alive.
    pub async fn release_all_leases(&self) -> Result<u64, StoreError> {
        self.write(move |tx: &mut Tx| {
            Box::pin(async move {
                Ok(on!(tx.exec().await?, c => sqlx::query(
                    "UPDATE workflow_runs SET lease_owner = NULL, lease_until = NULL \
                     WHERE lease_owner IS NOT NULL",
                )
                .execute(&mut *c)
                .await?
                .rows_affected()))
            })
        })
        .await
    }
}

impl Scoped<'_> {
    pub async fn workflows(&mut self) -> Result<Vec<StoredWorkflow>, StoreError> {
        let sql = format!(
            "SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE tenant_id = $1 AND deleted_at IS NULL \
             ORDER BY name"
        );
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(&sql)
            .bind(tenant)
            .fetch_all(&mut **c)
            .await?))
    }

    pub async fn workflow(&mut self, name: &str) -> Result<Option<StoredWorkflow>, StoreError> {
        let sql = format!(
            "SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE tenant_id = $1 AND name = $2 \
             AND deleted_at IS NULL"
        );
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(&sql)
            .bind(tenant)
            .bind(name)
            .fetch_optional(&mut **c)
            .await?))
    }

    /// A workflow by id, deleted or not (runs outlive deletion).
    pub async fn workflow_by_id(&mut self, id: &str) -> Result<Option<StoredWorkflow>, StoreError> {
        let sql =
            format!("SELECT {WORKFLOW_COLUMNS} FROM workflows WHERE tenant_id = $1 AND id = $2");
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(&sql)
            .bind(tenant)
            .bind(id)
            .fetch_optional(&mut **c)
            .await?))
    }

    /// The definition a workflow had at `version`.
    pub async fn workflow_version(
        &mut self,
        workflow_id: &str,
        version: i64,
    ) -> Result<Option<String>, StoreError> {
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_scalar(
            "SELECT v.definition FROM workflow_versions v JOIN workflows w ON w.id = v.workflow_id \
             WHERE w.tenant_id = $1 AND v.workflow_id = $2 AND v.version = $3",
        )
        .bind(tenant)
        .bind(workflow_id)
        .bind(version)
        .fetch_optional(&mut **c)
        .await?))
    }

    /// Stores a new workflow (version 1).
    pub async fn insert_workflow(
        &mut self,
        id: &str,
        name: &str,
        enabled: bool,
        definition: &str,
        user: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let tenant = self.tenant.as_str();
        on!(self.entered().await?, c => sqlx::query(
            "INSERT INTO workflows (id, tenant_id, name, version, enabled, definition, created_at, \
             created_by, updated_at, updated_by) VALUES ($1, $2, $3, 1, $4, $5, $6, $7, $6, $7)",
        )
        .bind(id)
        .bind(tenant)
        .bind(name)
        .bind(enabled)
        .bind(definition)
        .bind(Timestamp(now))
        .bind(user)
        .execute(&mut **c)
        .await
        .map(drop)?);
        self.insert_workflow_version(id, 1, definition, user, now)
            .await
    }

    async fn insert_workflow_version(
        &mut self,
        id: &str,
        version: i64,
        definition: &str,
        user: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        on!(self.entered().await?, c => sqlx::query(
            "INSERT INTO workflow_versions (workflow_id, version, definition, created_at, created_by) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(id)
        .bind(version)
        .bind(definition)
        .bind(Timestamp(now))
        .bind(user)
        .execute(&mut **c)
        .await
        .map(drop)?);
        Ok(())
    }

    /// Replaces the definition of version `from` with version `from + 1`; `false` if the
    /// workflow is no longer at `from`.
    pub async fn update_workflow(
        &mut self,
        id: &str,
        from: i64,
        enabled: bool,
        definition: &str,
        user: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let tenant = self.tenant.as_str();
        let updated = on!(self.entered().await?, c => sqlx::query(
            "UPDATE workflows SET version = version + 1, enabled = $1, definition = $2, \
             updated_at = $3, updated_by = $4 \
             WHERE tenant_id = $5 AND id = $6 AND version = $7 AND deleted_at IS NULL",
        )
        .bind(enabled)
        .bind(definition)
        .bind(Timestamp(now))
        .bind(user)
        .bind(tenant)
        .bind(id)
        .bind(from)
        .execute(&mut **c)
        .await?
        .rows_affected());
        if updated == 0 {
            return Ok(false);
        }
        self.insert_workflow_version(id, from + 1, definition, user, now)
            .await?;
        Ok(true)
    }

    pub async fn set_workflow_enabled(
        &mut self,
        id: &str,
        enabled: bool,
        user: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let tenant = self.tenant.as_str();
        on!(self.entered().await?, c => sqlx::query(
            "UPDATE workflows SET enabled = $1, updated_at = $2, updated_by = $3 \
             WHERE tenant_id = $4 AND id = $5",
        )
        .bind(enabled)
        .bind(Timestamp(now))
        .bind(user)
        .bind(tenant)
        .bind(id)
        .execute(&mut **c)
        .await
        .map(drop)?);
        Ok(())
    }

    /// Deletes a workflow (its versions and runs stay readable) and cancels its unfinished runs;
    /// answers how many were cancelled.
    pub async fn delete_workflow(
        &mut self,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<u64, StoreError> {
        let tenant = self.tenant.as_str();
        on!(self.entered().await?, c => sqlx::query(
            "UPDATE workflows SET deleted_at = $1, enabled = $2 WHERE tenant_id = $3 AND id = $4",
        )
        .bind(Timestamp(now))
        .bind(false)
        .bind(tenant)
        .bind(id)
        .execute(&mut **c)
        .await
        .map(drop)?);
        let cancelled = on!(self.entered().await?, c => sqlx::query(
            "UPDATE workflow_runs SET status = 'cancelled', next_step = NULL, finished_at = $1, \
             updated_at = $1, error = 'the workflow was deleted', lease_owner = NULL, lease_until = NULL \
             WHERE tenant_id = $2 AND workflow_id = $3 AND status IN ('pending', 'running', 'waiting')",
        )
        .bind(Timestamp(now))
        .bind(tenant)
        .bind(id)
        .execute(&mut **c)
        .await?
        .rows_affected());
        on!(self.entered().await?, c => sqlx::query(
            "UPDATE approvals SET status = 'cancelled', decided_at = $1 \
             WHERE tenant_id = $2 AND status = 'pending' AND run_id IN \
             (SELECT id FROM workflow_runs WHERE tenant_id = $2 AND workflow_id = $3 AND status = 'cancelled')",
        )
        .bind(Timestamp(now))
        .bind(tenant)
        .bind(id)
        .execute(&mut **c)
        .await
        .map(drop)?);
        Ok(cancelled)
    }

    /// Sets the timer of a timed workflow to fire at `next_at`, its watermark (date triggers:
    /// the moments handled so far) at `now`. A timer that is already due is left as it is: its
    /// firing (with the workflow's new definition) is not lost, and the moments it has to handle
    /// stay those after its own watermark. One that is not due has no moment left to handle
    /// before `now`, so moving its watermark there cannot skip one, and it keeps a change of
    /// time zone or time of day from handling a date twice.
    pub async fn set_timer(
        &mut self,
        workflow_id: &str,
        next_at: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let tenant = self.tenant.as_str();
        on!(self.entered().await?, c => sqlx::query(
            "INSERT INTO workflow_timers (workflow_id, tenant_id, next_at, watermark) \
             VALUES ($1, $2, $3, $4) ON CONFLICT (workflow_id) DO UPDATE SET \
               next_at = CASE WHEN workflow_timers.next_at <= $4 THEN workflow_timers.next_at \
                 ELSE excluded.next_at END, \
               watermark = CASE WHEN workflow_timers.next_at <= $4 THEN workflow_timers.watermark \
                 ELSE excluded.watermark END \
             WHERE workflow_timers.tenant_id = excluded.tenant_id",
        )
        .bind(workflow_id)
        .bind(tenant)
        .bind(Timestamp(next_at))
        .bind(Timestamp(now))
        .execute(&mut **c)
        .await
        .map(drop)?);
        Ok(())
    }

    /// Brings a timer forward to `at` if it is due later: a record was written whose moment
    /// comes before the timer's next look.
    pub async fn pull_timer(
        &mut self,
        workflow_id: &str,
        at: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let tenant = self.tenant.as_str();
        on!(self.entered().await?, c => sqlx::query(
            "UPDATE workflow_timers SET next_at = $1 \
             WHERE tenant_id = $2 AND workflow_id = $3 AND next_at > $1",
        )
        .bind(Timestamp(at))
        .bind(tenant)
        .bind(workflow_id)
        .execute(&mut **c)
        .await
        .map(drop)?);
        Ok(())
    }

    /// Removes a workflow's timer (it is disabled, deleted or no longer timed).
    pub async fn drop_timer(&mut self, workflow_id: &str) -> Result<(), StoreError> {
        let tenant = self.tenant.as_str();
        on!(self.entered().await?, c => sqlx::query(
            "DELETE FROM workflow_timers WHERE tenant_id = $1 AND workflow_id = $2",
        )
        .bind(tenant)
        .bind(workflow_id)
        .execute(&mut **c)
        .await
        .map(drop)?);
        Ok(())
    }

    /// Claims a due timer: moves it from `due` to `next_at` with a new watermark, only if it is
    /// still at `due` (another host, or a change of the workflow, did not move it first). Its
    /// runs are inserted in the same transaction, so a firing happens exactly once.
    pub async fn advance_timer(
        &mut self,
        workflow_id: &str,
        due: OffsetDateTime,
        next_at: OffsetDateTime,
        watermark: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let tenant = self.tenant.as_str();
        let moved = on!(self.entered().await?, c => sqlx::query(
            "UPDATE workflow_timers SET next_at = $1, watermark = $2 \
             WHERE tenant_id = $3 AND workflow_id = $4 AND next_at = $5",
        )
        .bind(Timestamp(next_at))
        .bind(Timestamp(watermark))
        .bind(tenant)
        .bind(workflow_id)
        .bind(Timestamp(due))
        .execute(&mut **c)
        .await?
        .rows_affected());
        Ok(moved == 1)
    }

    /// Inserts runs, in the current transaction.
    pub async fn insert_runs(&mut self, runs: &[NewRun]) -> Result<(), StoreError> {
        let tenant = self.tenant.as_str().to_owned();
        let rows = runs.iter().map(|run| {
            let finished = (run.status == "failed").then_some(run.now);
            [
                SqlValue::Text(run.id.clone()),
                SqlValue::Text(tenant.clone()),
                SqlValue::Text(run.workflow_id.clone()),
                SqlValue::Int(run.version),
                SqlValue::Text(run.status.to_owned()),
                SqlValue::Int(run.depth),
                SqlValue::Text(run.event.to_owned()),
                SqlValue::text_or_null(run.entity.as_deref()),
                SqlValue::text_or_null(run.record_id.as_deref()),
                SqlValue::Text(run.run_as.clone()),
                SqlValue::Text(run.trigger_data.clone()),
                SqlValue::text_or_null(run.next_step.as_deref()),
                SqlValue::Timestamp(run.now),
                SqlValue::text_or_null(run.error.as_deref()),
                SqlValue::Timestamp(run.now),
                SqlValue::Timestamp(run.now),
                SqlValue::timestamp_or_null(finished),
            ]
            .map(Param::Value)
        });
        let statements = build_inserts(
            self.dialect(),
            "INSERT INTO workflow_runs (id, tenant_id, workflow_id, version, status, depth, event, \
             entity, record_id, run_as, trigger_data, next_step, next_at, error, created_at, \
             updated_at, finished_at, context, attempt) VALUES ",
            "'{}', 0",
            rows,
        );
        for (sql, binds) in &statements {
            on!(self.entered().await?, c => bind_all(sqlx::query(sql), binds)
                .execute(&mut **c)
                .await
                .map(drop)?);
        }
        Ok(())
    }

    pub async fn run(&mut self, id: &str) -> Result<Option<StoredRun>, StoreError> {
        let sql =
            format!("SELECT {RUN_COLUMNS} FROM workflow_runs WHERE tenant_id = $1 AND id = $2");
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(&sql)
            .bind(tenant)
            .bind(id)
            .fetch_optional(&mut **c)
            .await?))
    }

    /// A workflow's runs, newest first.
    pub async fn runs(
        &mut self,
        workflow_id: &str,
        filter: &RunFilter,
    ) -> Result<Vec<StoredRun>, StoreError> {
        let mut sql = format!(
            "SELECT {RUN_COLUMNS} FROM workflow_runs WHERE tenant_id = $1 AND workflow_id = $2"
        );
        let mut binds = vec![
            SqlValue::Text(self.tenant.as_str().to_owned()),
            SqlValue::Text(workflow_id.to_owned()),
        ];
        super::newest_first(
            &mut sql,
            &mut binds,
            &[
                ("status = ", filter.status.as_deref()),
                ("id < ", filter.before.as_deref()),
            ],
            filter.limit,
        );
        Ok(
            on!(self.entered().await?, c => super::bind_all_as(sqlx::query_as(&sql), &binds)
            .fetch_all(&mut **c)
            .await?),
        )
    }

    /// The steps of a run, in the order they ran.
    pub async fn run_steps(&mut self, run_id: &str) -> Result<Vec<StoredStep>, StoreError> {
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(
            "SELECT s.seq, s.step_id, s.type, s.status, s.attempts, s.input, s.output, s.error, \
             s.started_at, s.finished_at FROM workflow_steps s JOIN workflow_runs r ON r.id = s.run_id \
             WHERE r.tenant_id = $1 AND r.id = $2 AND s.run_id = $2 ORDER BY s.seq",
        )
        .bind(tenant)
        .bind(run_id)
        .fetch_all(&mut **c)
        .await?))
    }

    /// Moves a run on, if `owner` still holds its lease and it is still at `at_step`: the fence
    /// that keeps a host whose lease ran out from finishing a step another host took over.
    /// `false` when the run has moved on without this host (nothing is changed then).
    pub async fn advance_run(
        &mut self,
        run_id: &str,
        owner: &str,
        at_step: Option<&str>,
        update: &RunUpdate<'_>,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let tenant = self.tenant.as_str();
        let binds = [
            SqlValue::Text(update.status.to_owned()),
            SqlValue::Text(update.context.to_owned()),
            SqlValue::text_or_null(update.next_step),
            SqlValue::Int(update.attempt),
            SqlValue::Timestamp(update.next_at),
            SqlValue::text_or_null(update.error),
            SqlValue::Timestamp(now),
            SqlValue::timestamp_or_null(update.finished.then_some(now)),
            SqlValue::Text(tenant.to_owned()),
            SqlValue::Text(run_id.to_owned()),
            SqlValue::Text(owner.to_owned()),
            SqlValue::text_or_null(at_step),
        ];
        let release = if update.keep_lease {
            ""
        } else {
            ", lease_owner = NULL, lease_until = NULL"
        };
        let sql = format!(
            "UPDATE workflow_runs SET status = $1, context = $2, next_step = $3, attempt = $4, \
             next_at = $5, error = $6, updated_at = $7, finished_at = $8{release} \
             WHERE tenant_id = $9 AND id = $10 AND lease_owner = $11 \
             AND ((next_step IS NULL AND $12 IS NULL) OR next_step = $12)"
        );
        let changed = on!(self.entered().await?, c => bind_all(sqlx::query(&sql), &binds)
            .execute(&mut **c)
            .await?
            .rows_affected());
        Ok(changed == 1)
    }

    /// Extends a lease this host holds.
    pub async fn renew_lease(
        &mut self,
        run_id: &str,
        owner: &str,
        until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let tenant = self.tenant.as_str();
        let changed = on!(self.entered().await?, c => sqlx::query(
            "UPDATE workflow_runs SET lease_until = $1 WHERE tenant_id = $2 AND id = $3 AND lease_owner = $4",
        )
        .bind(Timestamp(until))
        .bind(tenant)
        .bind(run_id)
        .bind(owner)
        .execute(&mut **c)
        .await?
        .rows_affected());
        Ok(changed == 1)
    }

    /// Stores a step's state: a new row, or the row of the same `seq` replaced.
    pub async fn put_step(&mut self, run_id: &str, step: &StepState<'_>) -> Result<(), StoreError> {
        let binds = [
            SqlValue::Text(run_id.to_owned()),
            SqlValue::Int(step.seq),
            SqlValue::Text(step.step_id.to_owned()),
            SqlValue::Text(step.step_type.to_owned()),
            SqlValue::Text(step.status.to_owned()),
            SqlValue::Int(step.attempts),
            SqlValue::text_or_null(step.input.as_deref()),
            SqlValue::text_or_null(step.output.as_deref()),
            SqlValue::text_or_null(step.error.as_deref()),
            SqlValue::Timestamp(step.started_at),
            SqlValue::timestamp_or_null(step.finished_at),
        ];
        on!(self.entered().await?, c => bind_all(sqlx::query(
            "INSERT INTO workflow_steps (run_id, seq, step_id, type, status, attempts, input, output, \
             error, started_at, finished_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) \
             ON CONFLICT (run_id, seq) DO UPDATE SET status = excluded.status, \
             attempts = excluded.attempts, input = excluded.input, output = excluded.output, \
             error = excluded.error, finished_at = excluded.finished_at",
        ), &binds)
        .execute(&mut **c)
        .await
        .map(drop)?);
        Ok(())
    }

    /// The last step row of a run (the one a resumed or retried run goes on with).
    pub async fn last_step(&mut self, run_id: &str) -> Result<Option<StoredStep>, StoreError> {
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(
            "SELECT s.seq, s.step_id, s.type, s.status, s.attempts, s.input, s.output, s.error, \
             s.started_at, s.finished_at FROM workflow_steps s JOIN workflow_runs r ON r.id = s.run_id \
             WHERE r.tenant_id = $1 AND r.id = $2 AND s.run_id = $2 ORDER BY s.seq DESC LIMIT 1",
        )
        .bind(tenant)
        .bind(run_id)
        .fetch_optional(&mut **c)
        .await?))
    }

    /// Puts a failed run back in the queue at its failed step; `false` if it is not failed.
    pub async fn retry_run(
        &mut self,
        run_id: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let tenant = self.tenant.as_str();
        let changed = on!(self.entered().await?, c => sqlx::query(
            "UPDATE workflow_runs SET status = 'pending', attempt = 0, next_at = $1, error = NULL, \
             finished_at = NULL, updated_at = $1, lease_owner = NULL, lease_until = NULL \
             WHERE tenant_id = $2 AND id = $3 AND status = 'failed' AND next_step IS NOT NULL",
        )
        .bind(Timestamp(now))
        .bind(tenant)
        .bind(run_id)
        .execute(&mut **c)
        .await?
        .rows_affected());
        Ok(changed == 1)
    }

    pub async fn insert_notification(&mut self, note: &Notification) -> Result<(), StoreError> {
        let binds = [
            SqlValue::Text(note.id.clone()),
            SqlValue::Text(self.tenant.as_str().to_owned()),
            SqlValue::Text(note.user_id.clone()),
            SqlValue::Text(note.message.clone()),
            SqlValue::text_or_null(note.entity.as_deref()),
            SqlValue::text_or_null(note.record_id.as_deref()),
            SqlValue::text_or_null(note.workflow.as_deref()),
            SqlValue::text_or_null(note.run_id.as_deref()),
            SqlValue::Timestamp(note.created_at),
        ];
        on!(self.entered().await?, c => bind_all(sqlx::query(
            "INSERT INTO notifications (id, tenant_id, user_id, message, entity, record_id, workflow, \
             run_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        ), &binds)
        .execute(&mut **c)
        .await
        .map(drop)?);
        Ok(())
    }

    /// A user's notifications, newest first.
    pub async fn notifications(
        &mut self,
        user: &str,
        unread: bool,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Notification>, StoreError> {
        let mut sql = String::from(
            "SELECT id, user_id, message, entity, record_id, workflow, run_id, created_at, read_at \
             FROM notifications WHERE tenant_id = $1 AND user_id = $2",
        );
        let mut binds = vec![
            SqlValue::Text(self.tenant.as_str().to_owned()),
            SqlValue::Text(user.to_owned()),
        ];
        if unread {
            sql.push_str(" AND read_at IS NULL");
        }
        super::newest_first(&mut sql, &mut binds, &[("id < ", before)], limit);
        Ok(
            on!(self.entered().await?, c => super::bind_all_as(sqlx::query_as(&sql), &binds)
            .fetch_all(&mut **c)
            .await?),
        )
    }

    /// Marks a user's notification read; `false` if the user has no such notification.
    pub async fn mark_notification_read(
        &mut self,
        user: &str,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let tenant = self.tenant.as_str();
        let changed = on!(self.entered().await?, c => sqlx::query(
            "UPDATE notifications SET read_at = COALESCE(read_at, $1) \
             WHERE tenant_id = $2 AND user_id = $3 AND id = $4",
        )
        .bind(Timestamp(now))
        .bind(tenant)
        .bind(user)
        .bind(id)
        .execute(&mut **c)
        .await?
        .rows_affected());
        Ok(changed == 1)
    }
}

/// An approval asked by an `approval` step.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Approval {
    pub id: String,
    pub run_id: String,
    pub step_id: String,
    pub workflow: String,
    pub entity: Option<String>,
    pub record_id: Option<String>,
    /// JSON array of user ids.
    pub approvers: String,
    pub message: String,
    pub status: String,
    pub decided_by: Option<String>,
    pub comment: Option<String>,
    pub created_at: OffsetDateTime,
    pub decided_at: Option<OffsetDateTime>,
}

const APPROVAL_COLUMNS: &str = "id, run_id, step_id, workflow, entity, record_id, approvers, \
     message, status, decided_by, comment, created_at, decided_at";

impl Scoped<'_> {
    pub async fn insert_approval(&mut self, approval: &Approval) -> Result<(), StoreError> {
        let binds = [
            SqlValue::Text(approval.id.clone()),
            SqlValue::Text(self.tenant.as_str().to_owned()),
            SqlValue::Text(approval.run_id.clone()),
            SqlValue::Text(approval.step_id.clone()),
            SqlValue::Text(approval.workflow.clone()),
            SqlValue::text_or_null(approval.entity.as_deref()),
            SqlValue::text_or_null(approval.record_id.as_deref()),
            SqlValue::Text(approval.approvers.clone()),
            SqlValue::Text(approval.message.clone()),
            SqlValue::Timestamp(approval.created_at),
        ];
        on!(self.entered().await?, c => bind_all(sqlx::query(
            "INSERT INTO approvals (id, tenant_id, run_id, step_id, workflow, entity, record_id, \
             approvers, message, status, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'pending', $10)",
        ), &binds)
        .execute(&mut **c)
        .await
        .map(drop)?);
        Ok(())
    }

    pub async fn approval(&mut self, id: &str) -> Result<Option<Approval>, StoreError> {
        let sql =
            format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE tenant_id = $1 AND id = $2");
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(&sql)
            .bind(tenant)
            .bind(id)
            .fetch_optional(&mut **c)
            .await?))
    }

    /// Approvals, newest first; `status` filters, and `approver` keeps those a user may decide.
    pub async fn approvals(
        &mut self,
        approver: Option<&str>,
        status: Option<&str>,
        before: Option<&str>,
        limit: i64,
    ) -> Result<Vec<Approval>, StoreError> {
        let mut sql = format!("SELECT {APPROVAL_COLUMNS} FROM approvals WHERE tenant_id = $1");
        let mut binds = vec![SqlValue::Text(self.tenant.as_str().to_owned())];
        if let Some(user) = approver {
            // User ids are UUIDs: no `%` or `_` to escape.
            binds.push(SqlValue::Text(format!("%\"{user}\"%")));
            sql.push_str(&format!(" AND approvers LIKE ${}", binds.len()));
        }
        super::newest_first(
            &mut sql,
            &mut binds,
            &[("status = ", status), ("id < ", before)],
            limit,
        );
        Ok(
            on!(self.entered().await?, c => super::bind_all_as(sqlx::query_as(&sql), &binds)
            .fetch_all(&mut **c)
            .await?),
        )
    }

    /// Decides a pending approval; `false` if it is no longer pending (nothing changes then).
    pub async fn decide_approval(
        &mut self,
        id: &str,
        status: &str,
        user: Option<&str>,
        comment: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let binds = [
            SqlValue::Text(status.to_owned()),
            SqlValue::text_or_null(user),
            SqlValue::text_or_null(comment),
            SqlValue::Timestamp(now),
            SqlValue::Text(self.tenant.as_str().to_owned()),
            SqlValue::Text(id.to_owned()),
        ];
        let changed = on!(self.entered().await?, c => bind_all(sqlx::query(
            "UPDATE approvals SET status = $1, decided_by = $2, comment = $3, decided_at = $4 \
             WHERE tenant_id = $5 AND id = $6 AND status = 'pending'",
        ), &binds)
        .execute(&mut **c)
        .await?
        .rows_affected());
        Ok(changed == 1)
    }

    /// Makes a run waiting at `step_id` due now (an approval was decided).
    pub async fn wake_run(
        &mut self,
        run_id: &str,
        step_id: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let tenant = self.tenant.as_str();
        let changed = on!(self.entered().await?, c => sqlx::query(
            "UPDATE workflow_runs SET next_at = $1, updated_at = $1 \
             WHERE tenant_id = $2 AND id = $3 AND next_step = $4 AND status = 'waiting'",
        )
        .bind(Timestamp(now))
        .bind(tenant)
        .bind(run_id)
        .bind(step_id)
        .execute(&mut **c)
        .await?
        .rows_affected());
        Ok(changed == 1)
    }
}

impl Scoped<'_> {
    /// Counts one more turn of a workflow step's round robin and answers the count (1, 2, …).
    pub async fn next_turn(&mut self, workflow_id: &str, step_id: &str) -> Result<i64, StoreError> {
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_scalar(
            "INSERT INTO workflow_counters (tenant_id, workflow_id, step_id, value) VALUES ($1, $2, $3, 1) \
             ON CONFLICT (workflow_id, step_id) DO UPDATE SET value = workflow_counters.value + 1 \
             RETURNING value",
        )
        .bind(tenant)
        .bind(workflow_id)
        .bind(step_id)
        .fetch_one(&mut **c)
        .await?))
    }
}
