//! `/api/v1/reports` and `/api/v1/dashboards`: saved reports and dashboards (administrators
//! write them; every user reads them and runs them as themselves). Both kinds have the same
//! routes, built by [`routes`].

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{MethodRouter, get};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::JsonBody;
use crate::analytics::Kind;
use crate::auth::Principal;

/// The routes of one kind: the collection (`GET`, `POST`), one item (`GET`, `PUT`, `DELETE`)
/// and its data (`GET`: the report run, or every widget computed, as the caller).
pub fn routes(
    kind: Kind,
) -> (
    MethodRouter<AppState>,
    MethodRouter<AppState>,
    MethodRouter<AppState>,
) {
    let collection = get(
        move |State(state): State<AppState>, principal: Principal| async move {
            Ok::<_, ApiError>(Json(
                json!({ "data": state.analytics.list(&principal, kind).await? }),
            ))
        },
    )
    .post(
        move |State(state): State<AppState>, principal: Principal, body: JsonBody| async move {
            let (saved, _) = state
                .analytics
                .put(&principal, kind, None, body.value)
                .await?;
            Ok::<_, ApiError>((StatusCode::CREATED, Json(json!(saved))))
        },
    );
    let item = get(
        move |State(state): State<AppState>, principal: Principal, Path(name): Path<String>| async move {
            Ok::<_, ApiError>(Json(json!(
                state.analytics.get(&principal, kind, &name).await?
            )))
        },
    )
    .put(
        move |State(state): State<AppState>,
              principal: Principal,
              Path(name): Path<String>,
              body: JsonBody| async move {
            let (saved, _) = state
                .analytics
                .put(&principal, kind, Some(&name), body.value)
                .await?;
            Ok::<_, ApiError>(Json(json!(saved)))
        },
    )
    .delete(
        move |State(state): State<AppState>, principal: Principal, Path(name): Path<String>| async move {
            state.analytics.delete(&principal, kind, &name).await?;
            Ok::<_, ApiError>(StatusCode::NO_CONTENT)
        },
    );
    let data = get(
        move |State(state): State<AppState>, principal: Principal, Path(name): Path<String>| async move {
            let data: Value = match kind {
                Kind::Dashboard => state.analytics.dashboard_data(&principal, &name).await?,
                _ => state.analytics.report_data(&principal, &name).await?,
            };
            Ok::<_, ApiError>(Json(data))
        },
    );
    (collection, item, data)
}
