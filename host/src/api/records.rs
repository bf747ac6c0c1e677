//! `/api/v1/records/{entity}`: records of one entity.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, Params, if_match};
use crate::auth::Principal;
use crate::records::aggregate::{AggregateParams, Aggregation};
use crate::records::{BatchUpdate, Deleted, Idempotency, ListParams, Page, RecordView, Shape};

/// `Idempotency-Key`, at most 255 visible ASCII characters.
fn idempotency(
    headers: &HeaderMap,
    path: &str,
    body: &JsonBody,
) -> Result<Option<Idempotency>, ApiError> {
    let Some(key) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = key
        .to_str()
        .ok()
        .filter(|key| !key.is_empty() && key.len() <= 255)
        .ok_or_else(|| {
            ApiError::bad_request("`Idempotency-Key` must be 1 to 255 visible ASCII characters")
        })?;
    Ok(Some(Idempotency::new(
        key.to_owned(),
        "POST",
        path,
        &body.bytes,
    )))
}

fn json_response(status: u16, body: String) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    (
        status,
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        body,
    )
        .into_response()
}

fn with_etag(view: RecordView) -> Response {
    let etag =
        HeaderValue::from_str(&format!("\"{}\"", view.version)).expect("digits are a valid header");
    ([(header::ETAG, etag)], Json(view)).into_response()
}

/// The `data` member of a body: `{"data": {...}}`.
fn data_of(body: JsonBody) -> Result<Value, ApiError> {
    let Value::Object(mut object) = body.value else {
        return Err(ApiError::bad_request(
            "the body must be an object: `{\"data\": {...}}`",
        ));
    };
    let data = object
        .remove("data")
        .ok_or_else(|| ApiError::bad_request("the body must have `data`: `{\"data\": {...}}`"))?;
    if let Some(key) = object.keys().next() {
        return Err(ApiError::bad_request(format!(
            "unknown member `{key}`: the body is `{{\"data\": {{...}}}}`"
        )));
    }
    Ok(data)
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Path(entity): Path<String>,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let idempotency = idempotency(&headers, &format!("/records/{entity}"), &body)?;
    let data = data_of(body)?;
    let response = state
        .records
        .create(&principal, &entity, data, idempotency.as_ref())
        .await?;
    Ok(json_response(response.status, response.body))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody<T> {
    records: Vec<T>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchUpdateItem {
    id: String,
    #[serde(default)]
    version: Option<i64>,
    data: Value,
}

fn batch<T: serde::de::DeserializeOwned>(value: Value) -> Result<Vec<T>, ApiError> {
    serde_json::from_value::<BatchBody<T>>(value)
        .map(|body| body.records)
        .map_err(|error| {
            ApiError::bad_request(format!(
                "the body must be `{{\"records\": [...]}}`: {error}"
            ))
        })
}

pub async fn create_batch(
    State(state): State<AppState>,
    principal: Principal,
    Path(entity): Path<String>,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let idempotency = idempotency(&headers, &format!("/records/{entity}/batch"), &body)?;
    let records: Vec<Value> = batch(body.value)?;
    let response = state
        .records
        .create_batch(&principal, &entity, records, idempotency.as_ref())
        .await?;
    Ok(json_response(response.status, response.body))
}

pub async fn update_batch(
    State(state): State<AppState>,
    principal: Principal,
    Path(entity): Path<String>,
    body: JsonBody,
) -> Result<Json<Value>, ApiError> {
    let items: Vec<BatchUpdateItem> = batch(body.value)?;
    let updates = items
        .into_iter()
        .map(|item| BatchUpdate {
            id: item.id,
            version: item.version,
            data: item.data,
        })
        .collect();
    let views = state
        .records
        .update_batch(&principal, &entity, updates)
        .await?;
    Ok(Json(json!({ "data": views })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetParams {
    fields: Option<String>,
    expand: Option<String>,
    #[serde(default)]
    include_deleted: bool,
}

pub async fn get(
    State(state): State<AppState>,
    principal: Principal,
    Path((entity, id)): Path<(String, String)>,
    Params(params): Params<GetParams>,
) -> Result<Response, ApiError> {
    let shape = Shape {
        fields: params.fields,
        expand: params.expand,
    };
    let view = state
        .records
        .get(&principal, &entity, &id, &shape, params.include_deleted)
        .await?;
    Ok(with_etag(view))
}

pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path((entity, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let version = if_match(&headers)?;
    let data = data_of(body)?;
    let view = state
        .records
        .update(&principal, &entity, BatchUpdate { id, version, data })
        .await?;
    Ok(with_etag(view))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteParams {
    #[serde(default)]
    purge: bool,
}

/// Soft delete; `?purge=true` deletes the record and its history for good.
pub async fn delete(
    State(state): State<AppState>,
    principal: Principal,
    Path((entity, id)): Path<(String, String)>,
    Params(params): Params<DeleteParams>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    if params.purge {
        state.records.purge(&principal, &entity, &id).await?;
        return Ok(StatusCode::NO_CONTENT.into_response());
    }
    let view = state
        .records
        .set_deleted(&principal, &entity, &id, if_match(&headers)?, false)
        .await?;
    Ok(with_etag(view))
}

pub async fn restore(
    State(state): State<AppState>,
    principal: Principal,
    Path((entity, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let view = state
        .records
        .set_deleted(&principal, &entity, &id, if_match(&headers)?, true)
        .await?;
    Ok(with_etag(view))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssignBody {
    owner: String,
}

/// Gives a record another owner: `{"owner": "<user id>"}`.
pub async fn assign(
    State(state): State<AppState>,
    principal: Principal,
    Path((entity, id)): Path<(String, String)>,
    body: JsonBody,
) -> Result<Response, ApiError> {
    let body: AssignBody = serde_json::from_value(body.value).map_err(|error| {
        ApiError::bad_request(format!(
            "the body is `{{\"owner\": \"<user id>\"}}`: {error}"
        ))
    })?;
    let view = state
        .records
        .assign(&principal, &entity, &id, &body.owner)
        .await?;
    Ok(with_etag(view))
}

pub async fn history(
    State(state): State<AppState>,
    principal: Principal,
    Path((entity, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.records.history(&principal, &entity, &id).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQueryParams {
    filter: Option<String>,
    sort: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
    q: Option<String>,
    fields: Option<String>,
    expand: Option<String>,
    deleted: Option<String>,
    /// Only for `related`: the reference field of the listed entity.
    field: Option<String>,
}

impl ListQueryParams {
    fn into_params(self) -> Result<(ListParams, Option<String>), ApiError> {
        let deleted = match self.deleted.as_deref() {
            None | Some("exclude") => Deleted::Exclude,
            Some("include") => Deleted::Include,
            Some("only") => Deleted::Only,
            Some(other) => {
                return Err(ApiError::bad_request(format!(
                    "`deleted` is `exclude`, `include` or `only`, not `{other}`"
                )));
            }
        };
        let params = ListParams {
            filter: self.filter,
            sort: self.sort,
            limit: self.limit,
            cursor: self.cursor,
            q: self.q,
            deleted,
            shape: Shape {
                fields: self.fields,
                expand: self.expand,
            },
        };
        Ok((params, self.field))
    }
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Path(entity): Path<String>,
    Params(params): Params<ListQueryParams>,
) -> Result<Response, ApiError> {
    let (params, field) = params.into_params()?;
    if field.is_some() {
        return Err(ApiError::bad_request(
            "`field` applies only to `/related/` lists",
        ));
    }
    let body = state
        .records
        .list_body(&principal, &entity, &params)
        .await?;
    Ok(json_response(200, body))
}

pub async fn related(
    State(state): State<AppState>,
    principal: Principal,
    Path((entity, id, source)): Path<(String, String, String)>,
    Params(params): Params<ListQueryParams>,
) -> Result<Json<Page>, ApiError> {
    let (params, field) = params.into_params()?;
    let page = state
        .records
        .related(&principal, &entity, &id, &source, field.as_deref(), &params)
        .await?;
    Ok(Json(page))
}

/// The body of `POST /records/{entity}/recompute` (optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RecomputeBody {
    #[serde(default)]
    fields: Vec<String>,
}

/// Computes the computed fields of every record of the entity again (administrators).
pub async fn recompute(
    State(state): State<AppState>,
    principal: Principal,
    Path(entity): Path<String>,
    body: axum::body::Bytes,
) -> Result<Json<Value>, ApiError> {
    let body: RecomputeBody = if body.iter().all(u8::is_ascii_whitespace) {
        RecomputeBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|error| {
            ApiError::bad_request(format!(
                "the body must be `{{\"fields\": [\"name\", ...]}}` or empty: {error}"
            ))
        })?
    };
    let done = state
        .records
        .recompute(&principal, &entity, body.fields)
        .await?;
    Ok(Json(json!(done)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AggregateQueryParams {
    group_by: Option<String>,
    measures: Option<String>,
    filter: Option<String>,
    q: Option<String>,
    sort: Option<String>,
    limit: Option<i64>,
}

/// Groups and measures over an entity's records.
pub async fn aggregate(
    State(state): State<AppState>,
    principal: Principal,
    Path(entity): Path<String>,
    Params(params): Params<AggregateQueryParams>,
) -> Result<Json<Aggregation>, ApiError> {
    let params = AggregateParams {
        group_by: params.group_by,
        measures: params.measures,
        filter: params.filter,
        q: params.q,
        sort: params.sort,
        limit: params.limit,
    };
    Ok(Json(
        state
            .records
            .aggregate(&principal, &entity, &params)
            .await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimelineParams {
    limit: Option<i64>,
    cursor: Option<String>,
}

/// Every record that references this one, and its history, newest first.
pub async fn timeline(
    State(state): State<AppState>,
    principal: Principal,
    Path((entity, id)): Path<(String, String)>,
    Params(params): Params<TimelineParams>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        state
            .records
            .timeline(
                &principal,
                &entity,
                &id,
                params.limit,
                params.cursor.as_deref(),
            )
            .await?,
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LookupParams {
    phone: Option<String>,
    email: Option<String>,
}

/// The screen pop: who a phone number or email belongs to, with their open records.
pub async fn lookup(
    State(state): State<AppState>,
    principal: Principal,
    Params(params): Params<LookupParams>,
) -> Result<Json<crate::records::Lookup>, ApiError> {
    Ok(Json(
        state
            .records
            .lookup(&principal, params.phone.as_deref(), params.email.as_deref())
            .await?,
    ))
}
