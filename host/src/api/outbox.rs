//! `/api/v1/outbox`: the messages plugins enqueued in committed writes, newest first, for
//! administrators. Delivery (email, webhooks) reads the same table.

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::Params;
use crate::auth::Principal;
use crate::store::outbox::MessageFilter;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboxParams {
    kind: Option<String>,
    /// `pending`, `delivered` or `failed`.
    status: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    100
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Params(params): Params<OutboxParams>,
) -> Result<Json<Value>, ApiError> {
    ApiError::unless_admin(&principal, "reading the outbox")?;
    if !(1..=1000).contains(&params.limit) {
        return Err(ApiError::bad_request("`limit` must be between 1 and 1000"));
    }
    if let Some(status) = &params.status
        && !["pending", "delivered", "failed"].contains(&status.as_str())
    {
        return Err(ApiError::bad_request(format!(
            "`status` must be `pending`, `delivered` or `failed`, not `{status}`"
        )));
    }
    if let Some(cursor) = &params.cursor
        && uuid::Uuid::parse_str(cursor).is_err()
    {
        return Err(ApiError::bad_request(
            "`cursor` must be the `next_cursor` of a previous page",
        ));
    }
    let filter = MessageFilter {
        kind: params.kind,
        status: params.status,
        before: params.cursor,
        // One more than asked, to know whether there is a next page.
        limit: params.limit + 1,
    };
    let mut conn = state.store.reader().await?;
    let mut messages = conn.scoped(&principal.tenant).outbox(&filter).await?;
    let next_cursor =
        crate::store::next_page(&mut messages, params.limit, |stored| &stored.message.id);
    let data: Vec<Value> = messages
        .into_iter()
        .map(|stored| {
            let message = stored.message;
            json!({
                "id": message.id,
                "kind": message.kind,
                "payload": serde_json::from_str::<Value>(&message.payload).unwrap_or(Value::Null),
                "plugin": message.plugin_id,
                "plugin_version": message.plugin_version,
                "entity": message.entity,
                "record_id": message.record_id,
                "run_id": message.run_id,
                "created_by": message.created_by,
                "created_at": message.created_at.format(&time::format_description::well_known::Rfc3339).ok(),
                "status": stored.status,
                "attempts": stored.attempts,
                "last_error": stored.last_error,
                "next_attempt_at": stored.next_at.filter(|_| stored.status == "pending")
                    .and_then(|at| at.format(&time::format_description::well_known::Rfc3339).ok()),
                "delivered_at": stored.delivered_at
                    .and_then(|at| at.format(&time::format_description::well_known::Rfc3339).ok()),
            })
        })
        .collect();
    Ok(Json(json!({ "data": data, "next_cursor": next_cursor })))
}
