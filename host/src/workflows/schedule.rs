//! Fires the timers of workflows that start on time: schedules (cron) and date triggers.
//!
//! Each timed, enabled workflow has one timer row (`workflow_timers`). When it falls due, one
//! transaction claims it (moves it on to its next time, fenced by the time it was due), finds
//! the records the firing is about, and inserts their runs: a firing happens exactly once
//! however many hosts look, and a host that dies mid-firing leaves the timer due.
//!
//! A date trigger keeps a watermark: the moments up to it have been handled. A firing handles
//! the moments in `(watermark, now]`: for a date field, the local dates whose `at` time lies in
//! that window (for `yearly`, their month and day); for a datetime field, the instants in it,
//! both shifted by the offset. The moments that came round while no server ran are handled by
//! the next firing (yearly catch-up is bounded by [`YEARLY_CATCH_UP_DAYS`]).

use serde_json::json;
use time::format_description::well_known::Rfc3339;
use time::{Duration, OffsetDateTime};

use super::definition::{Trigger, parse_duration};
use super::{Compiled, Workflows, timers};
use crate::domain::TenantId;
use crate::metadata::definition::FieldType;
use crate::records::{RecordError, Records};
use crate::store::workflows::{DueTimer, NewRun};
use crate::store::{Scoped, StoreError, Tx};

/// How many due timers one pass fires.
const TIMERS_PER_PASS: i64 = 20;
/// Records of a fan-out read per query.
const PAGE: i64 = 500;
/// The most runs one firing starts (one transaction): a schedule over a whole large entity is
/// stopped there, with a warning, rather than holding the database for minutes.
const MAX_RUNS_PER_FIRING: usize = 100_000;
/// How often a datetime trigger looks for moments at the latest (records written since the last
/// look may bring nearer ones).
const DATETIME_RESCAN: Duration = Duration::seconds(60);
/// How many days of missed birthdays a yearly trigger makes up for after downtime.
const YEARLY_CATCH_UP_DAYS: i64 = 7;

/// Fires every due timer; answers how many runs were started.
pub(super) async fn fire_due(workflows: &Workflows, records: &Records) -> usize {
    let now = crate::store::now();
    let due = match workflows.store().due_timers(now, TIMERS_PER_PASS).await {
        Ok(due) => due,
        Err(error) => {
            tracing::error!(%error, "cannot read the workflow timers");
            return 0;
        }
    };
    let mut started = 0;
    for timer in due {
        let (workflows_, records_, timer_) = (workflows.clone(), records.clone(), timer.clone());
        let result = workflows
            .store()
            .write(move |tx: &mut Tx| {
                Box::pin(async move { fire(&workflows_, &records_, tx, &timer_).await })
            })
            .await;
        match result {
            Ok(count) => started += count,
            Err(error) => {
                tracing::error!(workflow = %timer.workflow_id, %error, "a workflow timer did not fire; it is tried again in a minute");
                postpone(workflows, timer).await;
            }
        }
    }
    if started > 0 {
        workflows.mark_started();
    }
    started
}

/// Moves a timer that failed to fire a minute on, keeping its watermark (nothing is skipped).
async fn postpone(workflows: &Workflows, timer: DueTimer) {
    let result = workflows
        .store()
        .write(move |tx: &mut Tx| {
            Box::pin(async move {
                let tenant = TenantId::from_stored(timer.tenant_id.clone());
                tx.scoped(&tenant)
                    .advance_timer(
                        &timer.workflow_id,
                        timer.next_at,
                        crate::store::now() + Duration::minutes(1),
                        timer.watermark,
                    )
                    .await
            })
        })
        .await;
    if let Err(error) = result {
        tracing::error!(%error, "cannot postpone a workflow timer");
    }
}

/// Fires one timer in the caller's transaction.
async fn fire(
    workflows: &Workflows,
    records: &Records,
    tx: &mut Tx,
    timer: &DueTimer,
) -> Result<usize, StoreError> {
    let tenant = TenantId::from_stored(timer.tenant_id.clone());
    let mut scoped = tx.scoped(&tenant);
    let compiled = workflows
        .compiled(&mut scoped, &timer.workflow_id, timer.version)
        .await?;
    let now = crate::store::now();
    let firing = match &compiled.definition.trigger {
        Trigger::Schedule {
            cron,
            time_zone,
            entity,
            condition,
        } => {
            let zone = super::zone(&mut scoped, time_zone.as_deref()).await?;
            let cron = timers::parse_cron(cron).map_err(StoreError::Corrupt)?;
            // Times missed while no server ran collapse into this one firing, which is for the
            // latest of them.
            let next = timers::next_cron(&cron, zone, now).unwrap_or(now + Duration::days(3650));
            let scheduled_for = timers::previous_cron(&cron, zone, now).unwrap_or(timer.next_at);
            let filters = entity.as_ref().map(|_| {
                vec![
                    condition
                        .clone()
                        .unwrap_or_else(|| "_id is not null".to_owned()),
                ]
            });
            Firing {
                next,
                entity: entity.as_deref(),
                filters,
                data: json!({ "scheduled_for": rfc3339(scheduled_for) }),
            }
        }
        Trigger::Date {
            entity,
            field,
            offset,
            at,
            yearly,
            condition,
            time_zone,
        } => {
            let zone = super::zone(&mut scoped, time_zone.as_deref()).await?;
            let offset = offset
                .as_deref()
                .and_then(parse_duration)
                .unwrap_or_default();
            let entity_definition = workflows
                .inner
                .metadata
                .compiled(&mut scoped, entity)
                .await
                .map_err(|error| StoreError::Corrupt(error.to_string()))?;
            let is_date = match entity_definition.definition.field(field) {
                Some(f) if f.active && f.value_type() == FieldType::Date => true,
                Some(f) if f.active && f.value_type() == FieldType::Datetime => false,
                _ => {
                    // The field was deactivated or changed type after the workflow was saved:
                    // nothing can come round until the workflow is saved again.
                    tracing::error!(
                        workflow = %compiled.name,
                        "field `{field}` of `{entity}` is no longer an active date or datetime field: the date trigger stops until the workflow is saved again"
                    );
                    scoped.drop_timer(&timer.workflow_id).await?;
                    return Ok(0);
                }
            };
            let window = (timer.watermark, now);
            let (filters, next) = if is_date {
                let at = at.as_deref().and_then(timers::parse_at).unwrap_or_default();
                let filters = date_filters(zone, at, offset, *yearly, field, window);
                (filters, timers::next_moment(zone, at, now))
            } else {
                let filters = vec![format!(
                    "{field} gt '{}' and {field} le '{}'",
                    millis(window.0 - offset),
                    millis(window.1 - offset)
                )];
                let upcoming = format!("{field} gt '{}'", millis(now - offset));
                let earliest = records
                    .step_earliest(&mut scoped, entity, field, &with(&upcoming, condition))
                    .await
                    .map_err(store_error)?
                    .and_then(|text| OffsetDateTime::parse(&text, &Rfc3339).ok())
                    .map(|moment| moment + offset);
                let rescan = now + DATETIME_RESCAN;
                (filters, earliest.map_or(rescan, |at| at.min(rescan)))
            };
            let filters = filters.iter().map(|f| with(f, condition)).collect();
            Firing {
                next,
                entity: Some(entity),
                filters: Some(filters),
                data: json!({ "window": [rfc3339(window.0), rfc3339(window.1)] }),
            }
        }
        Trigger::Record { .. } | Trigger::Manual { .. } => {
            scoped.drop_timer(&timer.workflow_id).await?;
            return Ok(0);
        }
    };
    if !scoped
        .advance_timer(&timer.workflow_id, timer.next_at, firing.next, now)
        .await?
    {
        // Another host fired it, or the workflow changed since it was read.
        return Ok(0);
    }
    let run_as = run_as(&mut scoped, &timer.updated_by).await?;
    let run = |entity: Option<&str>, record: Option<String>| NewRun {
        id: uuid::Uuid::now_v7().to_string(),
        workflow_id: compiled.id.clone(),
        version: compiled.version,
        status: "pending",
        depth: 0,
        event: compiled.definition.trigger.kind(),
        entity: entity.map(str::to_owned),
        record_id: record,
        run_as: run_as.clone(),
        trigger_data: firing.data.to_string(),
        next_step: first_step(&compiled),
        error: None,
        now,
    };
    let (Some(entity), Some(filters)) = (firing.entity, &firing.filters) else {
        scoped.insert_runs(&[run(None, None)]).await?;
        return Ok(1);
    };
    let mut started = 0;
    for filter in filters {
        let mut after: Option<String> = None;
        loop {
            let ids = records
                .step_matching(&mut scoped, entity, filter, after.as_deref(), PAGE)
                .await
                .map_err(store_error)?;
            let Some(last) = ids.last().cloned() else {
                break;
            };
            let runs: Vec<NewRun> = ids
                .into_iter()
                .map(|id| run(Some(entity), Some(id)))
                .collect();
            scoped.insert_runs(&runs).await?;
            started += runs.len();
            if (runs.len() as i64) < PAGE {
                break;
            }
            if started >= MAX_RUNS_PER_FIRING {
                tracing::warn!(
                    workflow = %compiled.name,
                    "a firing stopped at {MAX_RUNS_PER_FIRING} runs: narrow the trigger's condition"
                );
                return Ok(started);
            }
            after = Some(last);
        }
    }
    Ok(started)
}

/// What one firing does: when the timer is due next, and which records get a run.
struct Firing<'a> {
    next: OffsetDateTime,
    entity: Option<&'a str>,
    /// One run per record matching any of these (each record matches at most one); `None`:
    /// one run without a record.
    filters: Option<Vec<String>>,
    data: serde_json::Value,
}

/// The filters that pick the records of a date field whose moment lies in `window`.
fn date_filters(
    zone: chrono_tz::Tz,
    at: chrono::NaiveTime,
    offset: Duration,
    yearly: bool,
    field: &str,
    window: (OffsetDateTime, OffsetDateTime),
) -> Vec<String> {
    let Some((mut first, last)) = timers::dates_in(zone, at, window.0, window.1) else {
        return Vec::new();
    };
    if !yearly {
        // The record's date is the day the moment falls on, less the offset.
        return vec![format!(
            "{field} ge '{}' and {field} le '{}'",
            first - offset,
            last - offset
        )];
    }
    let earliest = last - Duration::days(YEARLY_CATCH_UP_DAYS - 1);
    if first < earliest {
        tracing::warn!(
            %first, %earliest,
            "a yearly date trigger was not fired for a while: only the last {YEARLY_CATCH_UP_DAYS} days are made up for"
        );
        first = earliest;
    }
    let mut filters = Vec::new();
    let mut day = first;
    while day <= last {
        let anniversaries: Vec<String> = timers::anniversaries(day - offset)
            .iter()
            .map(|suffix| format!("{field} contains '{suffix}'"))
            .collect();
        filters.push(anniversaries.join(" or "));
        match day.next_day() {
            Some(next) => day = next,
            None => break,
        }
    }
    filters
}

/// `filter` and, if there is one, the trigger's condition.
fn with(filter: &str, condition: &Option<String>) -> String {
    match condition {
        Some(condition) => format!("({filter}) and ({condition})"),
        None => filter.to_owned(),
    }
}

fn first_step(compiled: &Compiled) -> Option<String> {
    compiled
        .plan
        .first()
        .map(|i| compiled.plan.nodes[i].step.id.clone())
}

/// Whom a timed run acts as: the user who last saved the workflow, or (saved by `schema apply`,
/// or since removed) the tenant's first administrator.
pub(super) async fn run_as(scoped: &mut Scoped<'_>, saved_by: &str) -> Result<String, StoreError> {
    if let Some(principal) = scoped.user_principal(saved_by).await? {
        return Ok(principal.user.to_string());
    }
    scoped
        .first_admin()
        .await?
        .map(|principal| principal.user.to_string())
        .ok_or_else(|| StoreError::Corrupt("the tenant has no administrator to run as".into()))
}

fn rfc3339(moment: OffsetDateTime) -> String {
    moment.format(&Rfc3339).expect("timestamps format")
}

/// A moment as datetime fields hold it, to the millisecond (cut, not rounded: consecutive
/// windows cut at the same place, so none falls between two of them).
fn millis(moment: OffsetDateTime) -> String {
    crate::metadata::values::datetime_text(moment).expect("timestamps format")
}

fn store_error(error: RecordError) -> StoreError {
    match error {
        RecordError::Store(error) => error,
        other => StoreError::Corrupt(other.to_string()),
    }
}
