//! `/api/v1/packs`: the packs this server offers and the tenant's (list, show), install with
//! its dependencies, upgrade with a diff first (`dry_run=true`), remove (data kept unless
//! `purge=true`). And `/api/v1/views`: saved views, which packs ship, run with their parameters.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::Params;
use crate::auth::Principal;
use crate::packs::Source;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallParams {
    /// Also install the packs' sample records.
    #[serde(default)]
    sample: bool,
    /// Show what would change, change nothing.
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpgradeParams {
    #[serde(default)]
    dry_run: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoveParams {
    /// Delete the pack's entities, their records and the fields it added to other entities.
    #[serde(default)]
    purge: bool,
    #[serde(default)]
    dry_run: bool,
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "data": state.packs.list(&principal).await? })))
}

pub async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(state.packs.show(&principal, &id).await?)))
}

/// Installs a bundled pack with the packs it needs: 201 with what changed (200 for a dry run).
pub async fn install(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Params(params): Params<InstallParams>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let report = state
        .packs
        .install(
            &principal,
            &Source::Bundled(id),
            params.sample,
            params.dry_run,
        )
        .await?;
    let status = if params.dry_run {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(json!(report))))
}

/// Upgrades an installed pack to the version this server offers; `dry_run=true` shows the diff.
pub async fn upgrade(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Params(params): Params<UpgradeParams>,
) -> Result<Json<Value>, ApiError> {
    let report = state
        .packs
        .upgrade(
            &principal,
            &id,
            &Source::Bundled(id.clone()),
            params.dry_run,
        )
        .await?;
    Ok(Json(json!(report)))
}

pub async fn remove(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    Params(params): Params<RemoveParams>,
) -> Result<Json<Value>, ApiError> {
    let report = state
        .packs
        .remove(&principal, &id, params.purge, params.dry_run)
        .await?;
    Ok(Json(json!(report)))
}

pub async fn views(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "data": state.views.list(&principal).await? })))
}

pub async fn view(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(state.views.get(&principal, &name).await?)))
}

/// Runs a saved view: its parameters, `limit` and `cursor` as query parameters.
pub async fn view_records(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    Query(params): Query<BTreeMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    let page = state.views.records(&principal, &name, params).await?;
    Ok(Json(json!(page)))
}
