//! Users, roles, teams, API tokens, sign-in (`/api/v1/sessions`), `/api/v1/me` and the audit
//! trail (`/api/v1/audit`).

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::extract::{JsonBody, Params};
use crate::auth::Principal;
use crate::store::tenants::AuditFilter;
use crate::users::{NewTokenBody, NewUserBody, SignIn, TeamBody, UserPatch};

/// Parses a JSON body into `T`, with a 400 naming what is wrong.
fn body<T: serde::de::DeserializeOwned>(body: JsonBody, what: &str) -> Result<T, ApiError> {
    serde_json::from_value(body.value)
        .map_err(|error| ApiError::bad_request(format!("invalid {what}: {error}")))
}

pub async fn me(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    let user = state.users.get(&principal, "me").await?;
    let mut entities = serde_json::Map::new();
    for entity in state.metadata.list(&principal.tenant).await? {
        let Some(name) = entity.definition.get("name").and_then(Value::as_str) else {
            continue;
        };
        let grant = principal.access.grant(name);
        if !grant.is_empty() {
            entities.insert(name.to_owned(), json!(grant));
        }
    }
    Ok(Json(json!({
        "user": user,
        "admin": principal.is_admin(),
        "reassign": principal.access.may_reassign(),
        "permissions": entities,
    })))
}

pub async fn list_users(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({ "data": state.users.list(&principal).await? })))
}

pub async fn create_user(
    State(state): State<AppState>,
    principal: Principal,
    json: JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let new: NewUserBody = body(json, "user")?;
    let user = state.users.create(&principal, new).await?;
    Ok((StatusCode::CREATED, Json(json!(user))))
}

pub async fn get_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(state.users.get(&principal, &id).await?)))
}

pub async fn update_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    json: JsonBody,
) -> Result<Json<Value>, ApiError> {
    let patch: UserPatch = body(json, "user change")?;
    Ok(Json(json!(
        state.users.update(&principal, &id, patch).await?
    )))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PasswordBody {
    password: String,
    #[serde(default)]
    current_password: Option<String>,
}

pub async fn set_password(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    json: JsonBody,
) -> Result<StatusCode, ApiError> {
    let change: PasswordBody = body(json, "password change")?;
    state
        .users
        .set_password(
            &principal,
            &id,
            &change.password,
            change.current_password.as_deref(),
        )
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

pub async fn list_roles(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "data": state.users.roles(&principal).await? }),
    ))
}

pub async fn create_role(
    State(state): State<AppState>,
    principal: Principal,
    json: JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let name = json
        .value
        .get("name")
        .and_then(Value::as_str)
        .map(str::to_owned);
    if let Some(name) = &name {
        let mut conn = state.store.reader().await?;
        if conn.scoped(&principal.tenant).role(name).await?.is_some() && principal.is_admin() {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "already_exists",
                format!("role `{name}` already exists: change it with PUT /api/v1/roles/{name}"),
            ));
        }
    }
    let (role, _) = state.users.put_role(&principal, None, &json.value).await?;
    Ok((StatusCode::CREATED, Json(role)))
}

pub async fn get_role(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(state.users.role(&principal, &name).await?))
}

pub async fn put_role(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    json: JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (role, created) = state
        .users
        .put_role(&principal, Some(&name), &json.value)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(role)))
}

pub async fn delete_role(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.users.delete_role(&principal, &name).await?;
    Ok(Json(json!({ "deleted": name })))
}

pub async fn list_teams(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        json!({ "data": state.users.teams(&principal).await? }),
    ))
}

pub async fn create_team(
    State(state): State<AppState>,
    principal: Principal,
    json: JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let team: TeamBody = body(json, "team")?;
    if principal.is_admin() && state.users.team(&principal, &team.name).await.is_ok() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_exists",
            format!(
                "team `{}` already exists: change it with PUT /api/v1/teams/{}",
                team.name, team.name
            ),
        ));
    }
    let (team, _) = state.users.put_team(&principal, None, team).await?;
    Ok((StatusCode::CREATED, Json(json!(team))))
}

pub async fn get_team(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!(state.users.team(&principal, &name).await?)))
}

pub async fn put_team(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    json: JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let team: TeamBody = body(json, "team")?;
    let (team, created) = state.users.put_team(&principal, Some(&name), team).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!(team))))
}

pub async fn delete_team(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.users.delete_team(&principal, &name).await?;
    Ok(Json(json!({ "deleted": name })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenParams {
    /// A user id, `me`, or `*` (administrators: everyone's).
    user: Option<String>,
}

pub async fn list_tokens(
    State(state): State<AppState>,
    principal: Principal,
    Params(params): Params<TokenParams>,
) -> Result<Json<Value>, ApiError> {
    let tokens = state
        .users
        .tokens(&principal, params.user.as_deref())
        .await?;
    Ok(Json(json!({ "data": tokens })))
}

pub async fn create_token(
    State(state): State<AppState>,
    principal: Principal,
    json: JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let new: NewTokenBody = if json.value.is_null() {
        NewTokenBody::default()
    } else {
        body(json, "token")?
    };
    let token = state.users.create_token(&principal, new).await?;
    Ok((StatusCode::CREATED, Json(json!(token))))
}

pub async fn revoke_token(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    state.users.revoke_token(&principal, &id).await?;
    Ok(Json(json!({ "revoked": id })))
}

/// Signs in with a password; no token needed. The answer holds a session token.
pub async fn sign_in(
    State(state): State<AppState>,
    json: JsonBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let sign_in: SignIn = body(json, "sign-in")?;
    let (principal, token) = state.users.sign_in(&sign_in).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "token": token.token,
            "expires_at": token.expires_at,
            "id": token.id,
            "user": principal.user.as_str(),
            "roles": principal.access.role_names(),
        })),
    ))
}

/// Signs out: revokes the token the request came with.
pub async fn sign_out(
    State(state): State<AppState>,
    principal: Principal,
    headers: axum::http::HeaderMap,
) -> Result<StatusCode, ApiError> {
    let token = super::extract::bearer(&headers)?;
    let id = crate::store::tenants::token_id(&crate::auth::hash_token(token));
    state.users.revoke_token(&principal, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditParams {
    actor: Option<String>,
    action: Option<String>,
    target: Option<String>,
    since: Option<String>,
    until: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

fn time_param(name: &str, value: Option<&str>) -> Result<Option<time::OffsetDateTime>, ApiError> {
    value
        .map(|text| {
            time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
                .map_err(|_| {
                    ApiError::bad_request(format!(
                        "`{name}` must be an RFC 3339 time such as `2026-01-31T00:00:00Z`, not `{text}`"
                    ))
                })
        })
        .transpose()
}

pub async fn audit(
    State(state): State<AppState>,
    principal: Principal,
    Params(params): Params<AuditParams>,
) -> Result<Json<Value>, ApiError> {
    let limit = params.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "`limit` must be between 1 and 500, not {limit}"
        )));
    }
    let before = params
        .cursor
        .as_deref()
        .map(|cursor| {
            cursor
                .parse::<i64>()
                .map_err(|_| ApiError::bad_request(format!("`cursor` `{cursor}` is not a cursor")))
        })
        .transpose()?;
    let filter = AuditFilter {
        actor: params.actor.as_deref(),
        action: params.action.as_deref(),
        target: params.target.as_deref(),
        since: time_param("since", params.since.as_deref())?,
        until: time_param("until", params.until.as_deref())?,
        before,
    };
    Ok(Json(state.users.audit(&principal, &filter, limit).await?))
}
