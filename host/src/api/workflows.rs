//! `/api/v1/workflows`: definitions (admins only), their runs, manual starts and retries; and
//! `/api/v1/notifications`, the in-app notifications of the calling user.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, Params};
use crate::auth::Principal;
use crate::store::workflows::RunFilter;

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    admin(&principal)?;
    let workflows = state.workflows.list(&principal.tenant).await?;
    Ok(Json(json!({ "data": workflows })))
}

fn admin(principal: &Principal) -> Result<(), ApiError> {
    ApiError::unless_admin(principal, "reading and changing workflows")
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let workflow = state.workflows.create(&principal, &body.value).await?;
    Ok((StatusCode::CREATED, Json(json!(workflow))))
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    admin(&principal)?;
    Ok(Json(json!(
        state.workflows.get(&principal.tenant, &name).await?
    )))
}

/// Replaces a definition with a new version; runs in flight finish on their version.
pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(
        state
            .workflows
            .update(&principal, &name, &body.value)
            .await?
    )))
}

pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let cancelled = state.workflows.delete(&principal, &name).await?;
    Ok(Json(
        json!({ "deleted": name, "cancelled_runs": cancelled }),
    ))
}

pub async fn enable(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(
        state.workflows.set_enabled(&principal, &name, true).await?
    )))
}

pub async fn disable(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(
        state
            .workflows
            .set_enabled(&principal, &name, false)
            .await?
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunParams {
    status: Option<String>,
    cursor: Option<String>,
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    50
}

const RUN_STATUSES: [&str; 6] = [
    "pending",
    "running",
    "waiting",
    "succeeded",
    "failed",
    "cancelled",
];

pub async fn runs(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    Params(params): Params<RunParams>,
) -> Result<Json<Value>, ApiError> {
    if !(1..=1000).contains(&params.limit) {
        return Err(ApiError::bad_request("`limit` must be between 1 and 1000"));
    }
    if let Some(status) = &params.status
        && !RUN_STATUSES.contains(&status.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "`status` must be one of {}, not `{status}`",
            RUN_STATUSES.join(", ")
        )));
    }
    if let Some(cursor) = &params.cursor
        && uuid::Uuid::parse_str(cursor).is_err()
    {
        return Err(ApiError::bad_request(format!(
            "`cursor` is not a run id: `{cursor}`"
        )));
    }
    let filter = RunFilter {
        status: params.status,
        before: params.cursor,
        limit: params.limit,
    };
    let (runs, next) = state.workflows.runs(&principal, &name, filter).await?;
    Ok(Json(json!({ "data": runs, "next_cursor": next })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Start {
    /// The record the run is about (for a manual workflow on an entity).
    record: Option<String>,
    #[serde(default = "empty_object")]
    input: Value,
}

fn empty_object() -> Value {
    json!({})
}

/// Starts a run of a manual workflow: 202, the run is queued.
pub async fn start(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    body: JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let start: Start = serde_json::from_value(body.value)
        .map_err(|error| ApiError::bad_request(format!("the run body: {error}")))?;
    let run = state
        .workflows
        .start(&principal, &name, start.record.as_deref(), start.input)
        .await?;
    Ok((StatusCode::ACCEPTED, Json(json!(run))))
}

pub async fn run(
    State(state): State<AppState>,
    principal: Principal,
    Path((name, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(
        state.workflows.run_for(&principal, &name, &id).await?
    )))
}

/// Puts a failed run back in the queue from its failed step.
pub async fn retry(
    State(state): State<AppState>,
    principal: Principal,
    Path((name, id)): Path<(String, String)>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let run = state.workflows.retry(&principal, &name, &id).await?;
    Ok((StatusCode::ACCEPTED, Json(json!(run))))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NotificationParams {
    #[serde(default)]
    unread: bool,
    cursor: Option<String>,
    #[serde(default = "default_limit")]
    limit: i64,
}

/// The calling user's notifications, newest first.
pub async fn notifications(
    State(state): State<AppState>,
    principal: Principal,
    Params(params): Params<NotificationParams>,
) -> Result<Json<Value>, ApiError> {
    if !(1..=1000).contains(&params.limit) {
        return Err(ApiError::bad_request("`limit` must be between 1 and 1000"));
    }
    let mut conn = state.store.reader().await?;
    let mut found = conn
        .scoped(&principal.tenant)
        .notifications(
            principal.user.as_str(),
            params.unread,
            params.cursor.as_deref(),
            params.limit + 1,
        )
        .await?;
    let next = crate::store::next_page(&mut found, params.limit, |n| &n.id);
    let rfc3339 = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    };
    let data: Vec<Value> = found
        .into_iter()
        .map(|n| {
            json!({
                "id": n.id, "message": n.message, "entity": n.entity, "record_id": n.record_id,
                "workflow": n.workflow, "run_id": n.run_id, "created_at": rfc3339(n.created_at),
                "read_at": n.read_at.and_then(rfc3339),
            })
        })
        .collect();
    Ok(Json(json!({ "data": data, "next_cursor": next })))
}

pub async fn read_notification(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tenant = principal.tenant.clone();
    let user = principal.user.to_string();
    let note = id.clone();
    let marked = state
        .store
        .write(move |tx: &mut crate::store::Tx| {
            Box::pin(async move {
                tx.scoped(&tenant)
                    .mark_notification_read(&user, &note, crate::store::now())
                    .await
            })
        })
        .await?;
    if !marked {
        return Err(ApiError::not_found(format!(
            "you have no notification `{id}`"
        )));
    }
    Ok(Json(json!({ "id": id, "read": true })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApprovalParams {
    status: Option<String>,
    cursor: Option<String>,
    #[serde(default = "default_limit")]
    limit: i64,
}

const APPROVAL_STATUSES: [&str; 5] = ["pending", "approved", "rejected", "expired", "cancelled"];

fn approval_view(approval: crate::store::workflows::Approval) -> Value {
    let rfc3339 = |t: time::OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    };
    json!({
        "id": approval.id, "workflow": approval.workflow, "run_id": approval.run_id,
        "step": approval.step_id, "entity": approval.entity, "record_id": approval.record_id,
        "approvers": serde_json::from_str::<Value>(&approval.approvers).unwrap_or(Value::Null),
        "message": approval.message, "status": approval.status,
        "decided_by": approval.decided_by, "comment": approval.comment,
        "created_at": rfc3339(approval.created_at),
        "decided_at": approval.decided_at.and_then(rfc3339),
    })
}

/// Approvals the caller may decide (an administrator: all of the tenant's), newest first.
pub async fn approvals(
    State(state): State<AppState>,
    principal: Principal,
    Params(params): Params<ApprovalParams>,
) -> Result<Json<Value>, ApiError> {
    if !(1..=1000).contains(&params.limit) {
        return Err(ApiError::bad_request("`limit` must be between 1 and 1000"));
    }
    if let Some(status) = &params.status
        && !APPROVAL_STATUSES.contains(&status.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "`status` must be one of {}, not `{status}`",
            APPROVAL_STATUSES.join(", ")
        )));
    }
    let (data, next) = approvals_of(
        &state,
        &principal,
        params.status.as_deref(),
        params.cursor.as_deref(),
        params.limit,
    )
    .await?;
    Ok(Json(json!({ "data": data, "next_cursor": next })))
}

/// Approvals `principal` may decide (an administrator: all of the tenant's), newest first, in
/// `status` if given; with the cursor of the next page.
pub async fn approvals_of(
    state: &AppState,
    principal: &Principal,
    status: Option<&str>,
    cursor: Option<&str>,
    limit: i64,
) -> Result<(Vec<Value>, Option<String>), ApiError> {
    let approver = (!principal.is_admin()).then(|| principal.user.to_string());
    let mut conn = state.store.reader().await?;
    let mut found = conn
        .scoped(&principal.tenant)
        .approvals(approver.as_deref(), status, cursor, limit + 1)
        .await?;
    let next = crate::store::next_page(&mut found, limit, |a| &a.id);
    Ok((found.into_iter().map(approval_view).collect(), next))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Decision {
    comment: Option<String>,
}

pub async fn approve(
    state: State<AppState>,
    principal: Principal,
    id: Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    decide(state, principal, id, body, "approved").await
}

pub async fn reject(
    state: State<AppState>,
    principal: Principal,
    id: Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    decide(state, principal, id, body, "rejected").await
}

/// Decides an approval as one of its approvers (or an administrator); the run goes on.
async fn decide(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: axum::body::Bytes,
    decision: &'static str,
) -> Result<Json<Value>, ApiError> {
    // The body is optional: `{"comment": "…"}`.
    let decision_body: Decision = if body.iter().all(u8::is_ascii_whitespace) {
        Decision::default()
    } else {
        serde_json::from_slice(&body)
            .map_err(|error| ApiError::bad_request(format!("the decision body: {error}")))?
    };
    Ok(Json(
        decide_approval(&state, &principal, &id, decision, decision_body.comment).await?,
    ))
}

/// Decides an approval (`approved` or `rejected`) as one of its approvers or an administrator,
/// and wakes its run; the approval as decided.
pub async fn decide_approval(
    state: &AppState,
    principal: &Principal,
    id: &str,
    decision: &'static str,
    comment: Option<String>,
) -> Result<Value, ApiError> {
    if comment.as_ref().is_some_and(|comment| comment.len() > 2000) {
        return Err(ApiError::bad_request(
            "`comment` is longer than 2,000 bytes",
        ));
    }
    let tenant = principal.tenant.clone();
    let user = principal.user.to_string();
    let admin = principal.is_admin();
    let approval_id = id.to_owned();
    let decided = state
        .store
        .write(move |tx: &mut crate::store::Tx| {
            Box::pin(async move {
                let mut scoped = tx.scoped(&tenant);
                let Some(approval) = scoped.approval(&approval_id).await? else {
                    return Err(ApiError::not_found(format!(
                        "there is no approval `{approval_id}`"
                    )));
                };
                let approvers: Vec<String> =
                    serde_json::from_str(&approval.approvers).unwrap_or_default();
                if !admin && !approvers.contains(&user) {
                    return Err(ApiError::new(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        "you are not an approver of this approval",
                    ));
                }
                let now = crate::store::now();
                if !scoped
                    .decide_approval(&approval_id, decision, Some(&user), comment.as_deref(), now)
                    .await?
                {
                    return Err(ApiError::new(
                        StatusCode::CONFLICT,
                        "refused",
                        format!("the approval is {}, not pending", approval.status),
                    ));
                }
                scoped
                    .wake_run(&approval.run_id, &approval.step_id, now)
                    .await?;
                let decided = scoped.approval(&approval_id).await?.ok_or_else(|| {
                    crate::store::StoreError::Corrupt("a decided approval vanished".into())
                })?;
                Ok(decided)
            })
        })
        .await?;
    state.workflows.wake_now();
    Ok(approval_view(decided))
}
