//! Extractors: who is calling ([`Principal`] from a bearer token), JSON bodies and query
//! parameters with errors in the API's one shape.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Query, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::AppState;
use super::error::ApiError;
use crate::auth::{Principal, hash_token};

/// The token of `Authorization: Bearer <token>`.
pub fn bearer(headers: &axum::http::HeaderMap) -> Result<&str, ApiError> {
    let header = headers
        .get(header::AUTHORIZATION)
        .ok_or_else(|| ApiError::unauthorized("missing `Authorization: Bearer <token>` header"))?;
    header
        .to_str()
        .ok()
        .and_then(|value| value.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|token| !token.is_empty() && token.len() <= 256)
        .ok_or_else(|| {
            ApiError::unauthorized("the `Authorization` header must be `Bearer <token>`")
        })
}

/// The hash of the request's token, when the guard already computed it.
#[derive(Debug, Clone)]
pub struct TokenHash(pub String);

/// How often a token's use is written down (its `last_used_at`, and a `token.use` audit
/// entry): at most once per this many seconds per token.
const TOKEN_USE_EVERY: i64 = 3600;

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        if let Some(principal) = parts.extensions.get::<Principal>() {
            return Ok(principal.clone());
        }
        let hash = match parts.extensions.get::<TokenHash>() {
            Some(TokenHash(hash)) => hash.clone(),
            None => hash_token(bearer(&parts.headers)?),
        };
        if let Some(principal) = state.principals.get(&hash) {
            parts.extensions.insert(principal.clone());
            return Ok(principal);
        }
        let found = state.store.token_use(&hash).await?.ok_or_else(|| {
            ApiError::unauthorized("the API token is unknown, expired or revoked")
        })?;
        let stale = found
            .last_used_at
            .is_none_or(|at| (crate::store::now() - at).whole_seconds() >= TOKEN_USE_EVERY);
        if stale {
            // Written after the request's own work, off its path; a failure only logs.
            let users = state.users.clone();
            let (principal, id) = (found.principal.clone(), found.token_id.clone());
            tokio::spawn(async move {
                if let Err(error) = users.token_used(&principal, &id).await {
                    tracing::warn!(%error, "could not record a token's use");
                }
            });
        }
        state
            .principals
            .insert(hash, found.principal.clone(), found.expires_at);
        parts.extensions.insert(found.principal.clone());
        Ok(found.principal)
    }
}

/// A JSON body, parsed with errors that say where the JSON is broken; keeps the raw bytes.
#[derive(Debug)]
pub struct JsonBody {
    pub value: Value,
    pub bytes: Bytes,
}

impl<S: Send + Sync> FromRequest<S> for JsonBody {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        if let Some(content_type) = request.headers().get(header::CONTENT_TYPE) {
            let content_type = content_type.to_str().unwrap_or_default();
            let essence = content_type.split(';').next().unwrap_or_default().trim();
            if !(essence.eq_ignore_ascii_case("application/json") || essence.ends_with("+json")) {
                return Err(ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    format!("the body must be `application/json`, not `{content_type}`"),
                ));
            }
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "body_too_large",
                        "the request body is larger than this endpoint accepts",
                    )
                } else {
                    ApiError::bad_request(format!("cannot read the request body: {rejection}"))
                }
            })?;
        let value = serde_json::from_slice(&bytes).map_err(|error| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "malformed_json",
                format!("the body is not valid JSON: {error}"),
            )
        })?;
        Ok(Self { value, bytes })
    }
}

/// Query parameters; unknown or malformed ones get a 400 naming them.
#[derive(Debug)]
pub struct Params<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Params<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Params(value))
            .map_err(|rejection| ApiError::bad_request(rejection.body_text()))
    }
}

/// Parses `If-Match`: `"3"`, `W/"3"` or `3`; `*` or no header means any version.
pub fn if_match(headers: &axum::http::HeaderMap) -> Result<Option<i64>, ApiError> {
    let Some(value) = headers.get(header::IF_MATCH) else {
        return Ok(None);
    };
    let text = value.to_str().unwrap_or_default().trim();
    if text == "*" {
        return Ok(None);
    }
    text.trim_start_matches("W/")
        .trim_matches('"')
        .parse::<i64>()
        .map(Some)
        .map_err(|_| {
            ApiError::bad_request(format!(
                "`If-Match` must be a version ETag such as `\"3\"`, not `{text}`"
            ))
        })
}
