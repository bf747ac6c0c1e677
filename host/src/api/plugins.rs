//! `/api/v1/plugins`: upload (install or upgrade), list, show, enable/disable, configure,
//! remove, and the runs of each plugin. Changes need the admin role.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, Params};
use crate::auth::Principal;
use crate::plugins::decode_component;

/// The largest upload body: a 16 MiB component in base64, plus its manifest.
pub const MAX_UPLOAD_BODY: usize = 24 * 1024 * 1024;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Upload {
    manifest: Value,
    /// The component's bytes, base64.
    component: String,
}

/// Installs a plugin, or upgrades it when its id is installed: 201 on install, 200 on upgrade,
/// with the capabilities added and removed.
pub async fn upload(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let upload: Upload = serde_json::from_value(body.value)
        .map_err(|error| ApiError::bad_request(format!("the upload body: {error}")))?;
    let bytes = decode_component(&upload.component)?;
    let installed = state
        .plugins
        .install(&principal, &upload.manifest, &bytes)
        .await?;
    let status = if installed.previous_version.is_some() {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(json!(installed))))
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    let plugins = state.plugins.list(&principal).await?;
    Ok(Json(json!({ "data": plugins })))
}

pub async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(state.plugins.show(&principal, &id).await?)))
}

pub async fn enable(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(
        state.plugins.set_enabled(&principal, &id, true).await?
    )))
}

pub async fn disable(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(
        state.plugins.set_enabled(&principal, &id, false).await?
    )))
}

/// Replaces the tenant's configuration of a plugin (validated against its schema).
pub async fn configure(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(
        state
            .plugins
            .configure(&principal, &id, &body.value)
            .await?
    )))
}

pub async fn remove(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.plugins.remove(&principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunParams {
    /// Only failed runs (traps, timeouts, faults).
    #[serde(default)]
    failures: bool,
    #[serde(default = "default_runs")]
    limit: i64,
}

fn default_runs() -> i64 {
    100
}

/// The latest runs of a plugin, newest first.
pub async fn runs(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Params(params): Params<RunParams>,
) -> Result<Json<Value>, ApiError> {
    if !(1..=1000).contains(&params.limit) {
        return Err(ApiError::bad_request("`limit` must be between 1 and 1000"));
    }
    let runs = state
        .plugins
        .runs(&principal, &id, params.failures, params.limit)
        .await?;
    let data: Vec<Value> = runs
        .into_iter()
        .map(|run| {
            json!({
                "id": run.id,
                "plugin": run.plugin_id,
                "version": run.version,
                "stage": run.stage,
                "entity": run.entity,
                "record_id": run.record_id,
                "started_at": run.started_at.format(&time::format_description::well_known::Rfc3339).ok(),
                "duration_us": run.duration_us,
                "fuel_used": run.fuel_used,
                "outcome": run.outcome,
                "error": run.error,
            })
        })
        .collect();
    Ok(Json(json!({ "data": data })))
}
