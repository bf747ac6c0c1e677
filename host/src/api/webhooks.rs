//! `/api/v1/webhooks`: endpoints workflow steps call (administrators only), their delivery log,
//! and `/api/v1/outbox/{id}/redeliver` for a dead-lettered message.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, Params};
use crate::auth::Principal;

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    let all = state.webhooks.list(&principal).await?;
    Ok(Json(json!({ "data": all })))
}

/// Registers a webhook; the answer holds its signing secret (shown again only on rotation).
pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let webhook = state.webhooks.create(&principal, &body.value).await?;
    Ok((StatusCode::CREATED, Json(json!(webhook))))
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(state.webhooks.get(&principal, &name).await?)))
}

pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    let webhook = state
        .webhooks
        .update(&principal, &name, &body.value)
        .await?;
    Ok(Json(json!(webhook)))
}

pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.webhooks.delete(&principal, &name).await?;
    Ok(Json(json!({ "deleted": name })))
}

pub async fn rotate_secret(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(
        state.webhooks.rotate_secret(&principal, &name).await?
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryParams {
    cursor: Option<i64>,
    #[serde(default = "default_limit")]
    limit: i64,
}

fn default_limit() -> i64 {
    100
}

/// Every attempt to deliver to a webhook, newest first.
pub async fn deliveries(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    Params(params): Params<DeliveryParams>,
) -> Result<Json<Value>, ApiError> {
    if !(1..=1000).contains(&params.limit) {
        return Err(ApiError::bad_request("`limit` must be between 1 and 1000"));
    }
    let (data, next) = state
        .webhooks
        .deliveries(&principal, &name, params.cursor, params.limit)
        .await?;
    Ok(Json(json!({ "data": data, "next_cursor": next })))
}

/// Puts a dead-lettered (`failed`) outbox message back in the queue with fresh attempts.
pub async fn redeliver(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    ApiError::unless_admin(&principal, "redelivering a message")?;
    let mut tx = state.store.begin().await?;
    let moved = tx
        .scoped(&principal.tenant)
        .redeliver(&id, crate::store::now())
        .await?;
    tx.commit().await?;
    if !moved {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "not_dead_lettered",
            format!("no dead-lettered (`failed`) outbox message has id `{id}`"),
        ));
    }
    Ok(Json(json!({ "id": id, "status": "pending" })))
}
