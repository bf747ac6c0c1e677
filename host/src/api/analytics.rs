//! `/api/v1/reports` and `/api/v1/dashboards`: saved reports and dashboards (administrators
//! write them; every user reads them and runs them as themselves).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::JsonBody;
use crate::analytics::Kind;
use crate::auth::Principal;

async fn list(
    state: &AppState,
    principal: &Principal,
    kind: Kind,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "data": state.analytics.list(principal, kind).await? }),
    ))
}

pub async fn list_reports(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    list(&state, &principal, Kind::Report).await
}

pub async fn list_dashboards(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    list(&state, &principal, Kind::Dashboard).await
}

pub async fn create_report(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (saved, _) = state
        .analytics
        .put(&principal, Kind::Report, None, body.value)
        .await?;
    Ok((StatusCode::CREATED, Json(json!(saved))))
}

pub async fn create_dashboard(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (saved, _) = state
        .analytics
        .put(&principal, Kind::Dashboard, None, body.value)
        .await?;
    Ok((StatusCode::CREATED, Json(json!(saved))))
}

pub async fn show_report(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(
        state.analytics.get(&principal, Kind::Report, &name).await?
    )))
}

pub async fn show_dashboard(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(
        state
            .analytics
            .get(&principal, Kind::Dashboard, &name)
            .await?
    )))
}

pub async fn replace_report(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    let (saved, _) = state
        .analytics
        .put(&principal, Kind::Report, Some(&name), body.value)
        .await?;
    Ok(Json(json!(saved)))
}

pub async fn replace_dashboard(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    let (saved, _) = state
        .analytics
        .put(&principal, Kind::Dashboard, Some(&name), body.value)
        .await?;
    Ok(Json(json!(saved)))
}

pub async fn delete_report(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .analytics
        .delete(&principal, Kind::Report, &name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn delete_dashboard(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    state
        .analytics
        .delete(&principal, Kind::Dashboard, &name)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Runs a report as the caller.
pub async fn report_data(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.analytics.report_data(&principal, &name).await?))
}

/// Every widget of a dashboard, computed as the caller.
pub async fn dashboard_data(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        state.analytics.dashboard_data(&principal, &name).await?,
    ))
}
