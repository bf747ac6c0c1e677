//! `/api/v1/entities`: entity definitions (admins only for changes).

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
    let entities: Vec<_> = state
        .metadata
        .list(&principal.tenant)
        .await?
        .into_iter()
        .filter_map(|mut entity| visible(&principal, &mut entity.definition).then_some(entity))
        .collect();
    Ok(Json(json!({ "data": entities })))
}

/// Narrows a definition to what the principal may see: an entity they have no permission on
/// is not there (`false`), nor are the fields hidden from them.
fn visible(principal: &Principal, definition: &mut Value) -> bool {
    if principal.is_admin() {
        return true;
    }
    let name = definition
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let grant = principal.access.grant(name);
    if grant.is_empty() {
        return false;
    }
    if let Some(Value::Array(fields)) = definition.get_mut("fields") {
        fields.retain(|field| {
            let name = field
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default();
            grant.field(name) != crate::auth::FieldAccess::None
        });
    }
    true
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let entity = state.metadata.create(&principal, &body.value).await?;
    Ok((StatusCode::CREATED, Json(json!(entity))))
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let mut entity = state.metadata.get(&principal.tenant, &name).await?;
    if !visible(&principal, &mut entity.definition) {
        return Err(crate::metadata::MetadataError::UnknownEntity(name).into());
    }
    Ok(Json(json!(entity)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateParams {
    #[serde(default)]
    dry_run: bool,
}

/// Replaces a definition; `?dry_run=true` reports the changes and conversions without applying.
pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    Params(params): Params<UpdateParams>,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    let applied = state
        .metadata
        .update(&principal, &name, &body.value, params.dry_run)
        .await?;
    if params.dry_run {
        let dependents =
            crate::dependents::of_changes(&state, &principal, &name, &applied.changes).await?;
        return Ok(Json(
            json!({ "dry_run": true, "plan": applied, "dependents": dependents }),
        ));
    }
    let entity = state.metadata.get(&principal.tenant, &name).await?;
    Ok(Json(
        json!({ "entity": entity, "changes": applied.changes, "conversions": applied.conversions }),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    #[serde(default)]
    force: bool,
}

pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    Params(params): Params<DeleteParams>,
) -> Result<Json<Value>, ApiError> {
    let deactivated = state
        .metadata
        .delete(&principal, &name, params.force)
        .await?;
    Ok(Json(
        json!({ "deleted": name, "deactivated_fields": deactivated }),
    ))
}

/// Purges a deactivated field: its values are deleted from every record.
pub async fn purge_field(
    State(state): State<AppState>,
    principal: Principal,
    Path((name, field)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(
        state
            .metadata
            .purge_field(&principal, &name, &field)
            .await?
    )))
}
