//! What every API request passes on its way in and out: the caller's token is resolved (once:
//! handlers find the principal in the request's extensions), each token gets a rate limit
//! (429 with `Retry-After`), and each change an administrator route makes is written to the
//! audit trail, as is each refused attempt to change something.

use std::num::NonZeroU32;
use std::sync::Arc;

use axum::extract::{FromRequestParts, MatchedPath, Request, State};
use axum::http::{Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use serde_json::json;

use super::AppState;
use super::error::ApiError;
use crate::auth::{Principal, hash_token};

/// Requests per token: a sustained rate and a burst.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

impl Default for RateLimit {
    /// 100 requests a second, bursts of 200: far above what a person or an ordinary
    /// integration sends, low enough that one runaway client cannot starve the others.
    fn default() -> Self {
        Self {
            per_second: 100,
            burst: 200,
        }
    }
}

/// The rate limiter of a server; `None` inside when limits are off.
#[derive(Debug, Clone, Default)]
pub struct Limiter(Option<Arc<DefaultKeyedRateLimiter<String>>>);

impl Limiter {
    /// A limiter per token; `None` (or a zero rate) turns limits off.
    pub fn new(limit: Option<RateLimit>) -> Self {
        let quota = limit.and_then(|limit| {
            let rate = NonZeroU32::new(limit.per_second)?;
            let burst = NonZeroU32::new(limit.burst.max(limit.per_second))?;
            Some(Quota::per_second(rate).allow_burst(burst))
        });
        Self(quota.map(|quota| Arc::new(RateLimiter::keyed(quota))))
    }

    /// A limiter of `count` a minute per key, all of which may come at once.
    pub fn per_minute(count: u32) -> Self {
        let count = NonZeroU32::new(count.max(1)).expect("at least one");
        Self(Some(Arc::new(RateLimiter::keyed(Quota::per_minute(count)))))
    }

    /// `Err(seconds to wait)` when the key is over its limit.
    pub fn check(&self, key: &str) -> Result<(), u64> {
        let Some(limiter) = &self.0 else {
            return Ok(());
        };
        if limiter.len() > 100_000 {
            limiter.retain_recent();
        }
        limiter.check_key(&key.to_owned()).map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

/// The routes only administrators may use: method and route below `/api/v1`. The guard refuses
/// everyone else here, before a handler reads a body, and the OpenAPI document marks these
/// operations `x-rapport-admin`. (Routes where a user acts on themselves — their own user,
/// password and tokens — check inside.)
pub const ADMIN_ROUTES: &[(&str, &str)] = &[
    ("POST", "/entities"),
    ("PUT", "/entities/{name}"),
    ("DELETE", "/entities/{name}"),
    ("DELETE", "/entities/{name}/fields/{field}"),
    ("POST", "/records/{entity}/recompute"),
    ("GET", "/plugins"),
    ("POST", "/plugins"),
    ("GET", "/plugins/{id}"),
    ("DELETE", "/plugins/{id}"),
    ("POST", "/plugins/{id}/enable"),
    ("POST", "/plugins/{id}/disable"),
    ("PUT", "/plugins/{id}/config"),
    ("GET", "/plugins/{id}/runs"),
    ("POST", "/packs/{id}/install"),
    ("POST", "/packs/{id}/upgrade"),
    ("DELETE", "/packs/{id}"),
    ("PATCH", "/tenant"),
    ("GET", "/outbox"),
    ("POST", "/outbox/{id}/redeliver"),
    ("GET", "/webhooks"),
    ("POST", "/webhooks"),
    ("GET", "/webhooks/{name}"),
    ("PUT", "/webhooks/{name}"),
    ("DELETE", "/webhooks/{name}"),
    ("POST", "/webhooks/{name}/rotate-secret"),
    ("GET", "/webhooks/{name}/deliveries"),
    ("GET", "/workflows"),
    ("POST", "/workflows"),
    ("GET", "/workflows/{name}"),
    ("PUT", "/workflows/{name}"),
    ("DELETE", "/workflows/{name}"),
    ("POST", "/workflows/{name}/enable"),
    ("POST", "/workflows/{name}/disable"),
    ("GET", "/workflows/{name}/runs"),
    ("POST", "/workflows/{name}/runs"),
    ("GET", "/workflows/{name}/runs/{id}"),
    ("POST", "/workflows/{name}/runs/{id}/retry"),
    ("GET", "/users"),
    ("POST", "/users"),
    ("PATCH", "/users/{id}"),
    ("GET", "/roles"),
    ("POST", "/roles"),
    ("GET", "/roles/{name}"),
    ("PUT", "/roles/{name}"),
    ("DELETE", "/roles/{name}"),
    ("POST", "/teams"),
    ("PUT", "/teams/{name}"),
    ("DELETE", "/teams/{name}"),
    ("GET", "/audit"),
    ("POST", "/reports"),
    ("PUT", "/reports/{name}"),
    ("DELETE", "/reports/{name}"),
    ("POST", "/dashboards"),
    ("PUT", "/dashboards/{name}"),
    ("DELETE", "/dashboards/{name}"),
];

/// Whether a route (method and template below `/api/v1`) is for administrators only.
pub fn admin_only(method: &Method, template: &str) -> bool {
    let template = template.strip_prefix("/api/v1").unwrap_or(template);
    // HEAD is answered by the GET route.
    let method = if *method == Method::HEAD {
        "GET"
    } else {
        method.as_str()
    };
    ADMIN_ROUTES
        .iter()
        .any(|(m, t)| *m == method && *t == template)
}

/// The middleware of every `/api/v1` route.
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let method = request.method().clone();
    let template = request
        .extensions()
        .get::<MatchedPath>()
        .map(|matched| matched.as_str().to_owned())
        .unwrap_or_default();
    let path = request.uri().path().to_owned();
    let query = request.uri().query().unwrap_or_default().to_owned();
    let (mut parts, body) = request.into_parts();
    let mut principal = None;
    if parts.headers.contains_key(header::AUTHORIZATION) {
        let token_hash = match super::extract::bearer(&parts.headers) {
            Ok(token) => hash_token(token),
            Err(error) => return error.into_response(),
        };
        if let Err(seconds) = state.limiter.check(&token_hash) {
            return too_many(seconds);
        }
        parts
            .extensions
            .insert(super::extract::TokenHash(token_hash));
        match Principal::from_request_parts(&mut parts, &state).await {
            Ok(found) => principal = Some(found),
            Err(error) => return error.into_response(),
        }
    }
    let response = match &principal {
        Some(someone) if !someone.is_admin() && admin_only(&method, &template) => {
            // The body is read (and dropped) first: answering before a client has sent all of
            // it would close the connection under it (a plugin upload, say).
            let _ = axum::body::to_bytes(body, super::plugins::MAX_UPLOAD_BODY).await;
            ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "`{method} {}` is for administrators; your roles are {}",
                    template.strip_prefix("/api/v1").unwrap_or(&template),
                    someone.access.role_names().join(", ")
                ),
            )
            .into_response()
        }
        _ => next.run(Request::from_parts(parts, body)).await,
    };
    if let Some(principal) = principal {
        let status = response.status();
        if let Some((action, target)) = audited(&method, &template, &path, &query, status) {
            let detail = json!({
                "method": method.as_str(),
                "path": path,
                "query": query,
                "status": status.as_u16(),
            });
            if let Err(error) = write_audit(&state, &principal, &action, &target, &detail).await {
                tracing::error!(%error, action, "could not write an audit entry");
            }
        }
    }
    response
}

fn too_many(seconds: u64) -> Response {
    let seconds = seconds.max(1);
    let mut error = ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        format!("too many requests with this token: retry in {seconds} s"),
    );
    error.retry_after = Some(seconds);
    error.into_response()
}

pub(crate) async fn write_audit(
    state: &AppState,
    principal: &Principal,
    action: &str,
    target: &str,
    detail: &serde_json::Value,
) -> Result<(), crate::store::StoreError> {
    let mut tx = state.store.begin().await?;
    tx.scoped(&principal.tenant)
        .audit(Some(principal.user.as_str()), action, Some(target), detail)
        .await?;
    tx.commit().await
}

/// The audit action and target of a request, if it is one the middleware writes down: a
/// change made (2xx) or refused (403) by a route other than records (their history is their
/// trail) and the services that audit their own changes in the change's transaction (users,
/// roles, teams, tokens, sessions). Dry runs change nothing and are not written.
pub fn audited(
    method: &Method,
    template: &str,
    path: &str,
    query: &str,
    status: StatusCode,
) -> Option<(String, String)> {
    if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return None;
    }
    if query
        .split('&')
        .any(|pair| matches!(pair, "dry_run" | "dry_run=true" | "dry_run=1"))
    {
        return None;
    }
    let template = template.strip_prefix("/api/v1").unwrap_or(template);
    let path = path.strip_prefix("/api/v1").unwrap_or(path);
    let shape: Vec<&str> = template.split('/').filter(|s| !s.is_empty()).collect();
    let values: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    let first = *shape.first()?;
    if status == StatusCode::FORBIDDEN {
        return Some(("access.denied".to_owned(), format!("{method} {path}")));
    }
    if !status.is_success()
        || matches!(
            first,
            "records" | "users" | "roles" | "teams" | "tokens" | "sessions" | "notifications"
        )
    {
        return None;
    }
    let subject = match first {
        "entities" => "entity",
        "tenant" => "tenant",
        other => other.strip_suffix('s').unwrap_or(other),
    };
    let target = shape
        .iter()
        .position(|segment| segment.starts_with('{'))
        .and_then(|index| values.get(index))
        .map_or_else(|| subject.to_owned(), |value| (*value).to_owned());
    let verb = match (method.as_str(), &shape[1..]) {
        ("POST", [_, "runs"]) => "start".to_owned(),
        ("DELETE", [_, "fields", _]) => "purge_field".to_owned(),
        (_, [.., last]) if !last.starts_with('{') => last.replace('-', "_"),
        ("POST", _) => "create".to_owned(),
        ("PUT" | "PATCH", _) => "update".to_owned(),
        ("DELETE", _) => "delete".to_owned(),
        (other, _) => other.to_lowercase(),
    };
    Some((format!("{subject}.{verb}"), target))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(method: Method, template: &str, path: &str, query: &str) -> Option<(String, String)> {
        audited(&method, template, path, query, StatusCode::OK)
    }

    #[test]
    fn changes_are_named_by_route() {
        let named = |m, t, p| action(m, t, p, "").map(|(a, t)| format!("{a} {t}"));
        assert_eq!(
            named(
                Method::PUT,
                "/api/v1/entities/{name}",
                "/api/v1/entities/account"
            ),
            Some("entity.update account".into())
        );
        assert_eq!(
            named(Method::POST, "/api/v1/entities", "/api/v1/entities"),
            Some("entity.create entity".into())
        );
        assert_eq!(
            named(
                Method::POST,
                "/api/v1/plugins/{id}/enable",
                "/api/v1/plugins/x/enable"
            ),
            Some("plugin.enable x".into())
        );
        assert_eq!(
            named(
                Method::POST,
                "/api/v1/workflows/{name}/runs",
                "/api/v1/workflows/w/runs"
            ),
            Some("workflow.start w".into())
        );
        assert_eq!(
            named(
                Method::DELETE,
                "/api/v1/entities/{name}/fields/{field}",
                "/api/v1/entities/a/fields/f"
            ),
            Some("entity.purge_field a".into())
        );
        assert_eq!(
            named(
                Method::POST,
                "/api/v1/webhooks/{name}/rotate-secret",
                "/api/v1/webhooks/h/rotate-secret"
            ),
            Some("webhook.rotate_secret h".into())
        );
        assert_eq!(
            named(Method::GET, "/api/v1/entities", "/api/v1/entities"),
            None
        );
        assert_eq!(
            named(
                Method::POST,
                "/api/v1/records/{entity}",
                "/api/v1/records/a"
            ),
            None
        );
        assert_eq!(
            action(
                Method::POST,
                "/api/v1/packs/{id}/install",
                "/api/v1/packs/core/install",
                "dry_run=true"
            ),
            None
        );
        let denied = audited(
            &Method::POST,
            "/api/v1/entities",
            "/api/v1/entities",
            "",
            StatusCode::FORBIDDEN,
        );
        assert_eq!(
            denied,
            Some(("access.denied".into(), "POST /entities".into()))
        );
    }

    #[test]
    fn the_limiter_refuses_past_the_burst_with_a_wait() {
        let limiter = Limiter::new(Some(RateLimit {
            per_second: 1,
            burst: 2,
        }));
        assert!(limiter.check("a").is_ok());
        assert!(limiter.check("a").is_ok());
        assert_eq!(limiter.check("a"), Err(1));
        assert!(limiter.check("b").is_ok(), "each token has its own budget");
        assert!(Limiter::new(None).check("a").is_ok());
    }
}
