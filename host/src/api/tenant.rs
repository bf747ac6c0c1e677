//! `/api/v1/tenant`: the caller's tenant and its settings (its time zone, which schedules and
//! date triggers read the wall clock in).

use axum::Json;
use axum::extract::State;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::JsonBody;
use crate::auth::Principal;
use crate::workflows::timers;

pub async fn show(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    let mut conn = state.store.reader().await?;
    let (name, time_zone) = conn.scoped(&principal.tenant).tenant_settings().await?;
    Ok(Json(json!({ "name": name, "time_zone": time_zone })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    time_zone: Option<String>,
}

/// Changes settings; administrators only. Schedules that follow the tenant's time zone are
/// moved to their next time on the new wall clock, in the same transaction.
pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    ApiError::unless_admin(&principal, "changing the tenant's settings")?;
    let settings: Settings = serde_json::from_value(body.value)
        .map_err(|error| ApiError::bad_request(format!("invalid settings: {error}")))?;
    let mut tx = state.store.begin().await?;
    let mut scoped = tx.scoped(&principal.tenant);
    if let Some(time_zone) = &settings.time_zone {
        timers::parse_time_zone(time_zone).map_err(|message| {
            ApiError::bad_request(message.clone()).with_fields(json!({ "time_zone": [message] }))
        })?;
        scoped.set_time_zone(time_zone).await?;
        state.workflows.resync_timers(&mut scoped).await?;
    }
    let (name, time_zone) = scoped.tenant_settings().await?;
    tx.commit().await?;
    Ok(Json(json!({ "name": name, "time_zone": time_zone })))
}
