//! The web console: server-rendered pages for admins and end users, generated from metadata,
//! served by `rapport serve` at `/` (no separate front end, no Node.js).
//!
//! Pages call the same services as the API (`Records`, `Metadata`, …) as the signed-in user, so
//! roles, field-level security and record scope apply exactly as they do to the API: a hidden
//! field never reaches the page. A session is the token of a password sign-in
//! (`Users::sign_in`), kept in an `HttpOnly`, `SameSite=Lax` cookie; the API itself never
//! accepts the cookie (it wants `Authorization`), so a cross-site page cannot drive it. Console
//! forms that change something are `POST`s whose `Origin`, when the browser sends one, must be
//! this server.

use axum::Router;
use axum::extract::{Form, Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{DOCTYPE, Markup, html};
use serde::Deserialize;

use crate::api::AppState;
use crate::api::error::ApiError;
use crate::auth::Principal;

pub mod admin;
pub mod dashboards;
pub mod i18n;
pub mod packs;
pub mod plugins;
pub mod records;
pub mod schema;
pub mod views;
pub mod workflows;

use i18n::Lang;

/// The session cookie: the token of a password sign-in.
pub const SESSION_COOKIE: &str = "rapport_session";
/// The language cookie (`en`, `zh-CN`).
pub const LANG_COOKIE: &str = "rapport_lang";

const CSS: &str = include_str!("console/assets/console.css");
const JS: &str = include_str!("console/assets/console.js");

/// The console's routes. Every page but the sign-in page and the assets needs a session.
pub fn routes(state: AppState) -> Router<AppState> {
    let signed_in =
        Router::new()
            .route("/", get(home))
            .route("/r/{entity}", get(records::list))
            .route(
                "/r/{entity}/new",
                get(records::new_form).post(records::create),
            )
            .route("/r/{entity}/{id}", get(records::detail))
            .route(
                "/r/{entity}/{id}/edit",
                get(records::edit_form).post(records::update),
            )
            .route("/r/{entity}/options", get(records::options))
            .route("/v/{name}", get(views::show))
            .route(
                "/p",
                get(plugins::list).post(plugins::upload).layer(
                    axum::extract::DefaultBodyLimit::max(crate::api::plugins::MAX_UPLOAD_BODY),
                ),
            )
            .route("/p/{id}", get(plugins::show))
            .route("/p/{id}/enable", post(plugins::enable))
            .route("/p/{id}/disable", post(plugins::disable))
            .route("/p/{id}/config", post(plugins::configure))
            .route("/s", get(schema::entities).post(schema::create_entity))
            .route(
                "/s/{entity}",
                get(schema::entity).post(schema::update_entity),
            )
            .route("/s/{entity}/delete", post(schema::delete_entity))
            .route(
                "/s/{entity}/fields/new",
                get(schema::new_field).post(schema::create_field),
            )
            .route(
                "/s/{entity}/fields/{field}",
                get(schema::edit_field).post(schema::update_field),
            )
            .route(
                "/s/{entity}/fields/{field}/deactivate",
                post(schema::deactivate_field),
            )
            .route(
                "/s/{entity}/fields/{field}/reactivate",
                post(schema::reactivate_field),
            )
            .route(
                "/s/{entity}/fields/{field}/purge",
                post(schema::purge_field),
            )
            .route("/k", get(packs::list))
            .route("/k/{id}", get(packs::show))
            .route("/k/{id}/install", post(packs::install))
            .route("/k/{id}/upgrade", post(packs::upgrade))
            .route("/k/{id}/remove", post(packs::remove))
            .route("/w", get(workflows::list))
            .route("/w/new", get(workflows::new_form).post(workflows::create))
            .route("/w/{name}", get(workflows::show).post(workflows::update))
            .route("/w/{name}/enable", post(workflows::enable))
            .route("/w/{name}/disable", post(workflows::disable))
            .route("/w/{name}/runs/{id}", get(workflows::run))
            .route("/w/{name}/runs/{id}/retry", post(workflows::retry))
            .route("/a", get(workflows::approvals))
            .route("/a/{id}", post(workflows::decide))
            .route("/u", get(admin::users).post(admin::create_user))
            .route("/u/{id}", get(admin::user).post(admin::update_user))
            .route("/u/{id}/password", post(admin::set_password))
            .route("/roles", get(admin::roles))
            .route("/roles/{name}", get(admin::role).post(admin::save_role))
            .route("/audit", get(admin::audit))
            .route("/d", get(dashboards::list))
            .route("/d/{name}", get(dashboards::show))
            .route("/sign-out", post(sign_out))
            .route_layer(axum::middleware::from_fn_with_state(state, session));
    Router::new()
        .route("/sign-in", get(sign_in_form).post(sign_in))
        .route("/language", post(language))
        .route("/assets/console.css", get(css))
        .route("/assets/console.js", get(js))
        .merge(signed_in)
        .route_layer(axum::middleware::from_fn(refuse_cross_site))
}

/// Every console `POST` whose `Origin` names another site is refused, before anything else.
async fn refuse_cross_site(request: Request, next: Next) -> Response {
    if request.method() == Method::POST && !same_origin(request.headers()) {
        return (StatusCode::FORBIDDEN, "cross-site request refused").into_response();
    }
    next.run(request).await
}

/// The `Set-Cookie` that ends a session in the browser.
const CLEAR_SESSION: HeaderValue =
    HeaderValue::from_static("rapport_session=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax");

/// The value of a cookie of the request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(cookie::Cookie::split_parse_encoded)
        .filter_map(Result::ok)
        .find(|cookie| cookie.name() == name)
        .map(|cookie| cookie.value().to_owned())
}

/// Resolves the session cookie to the signed-in user (as the API does a bearer token). Without
/// a valid session a page sends the browser to sign in, and back afterwards.
async fn session(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let back = request
        .uri()
        .path_and_query()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "/".to_owned());
    let (mut parts, body) = request.into_parts();
    if !with_session_token(&mut parts) {
        return signed_out(&parts, body, &back, false).await;
    }
    use axum::extract::FromRequestParts;
    match Principal::from_request_parts(&mut parts, &state).await {
        Ok(_) => next.run(Request::from_parts(parts, body)).await,
        Err(_) => signed_out(&parts, body, &back, true).await,
    }
}

/// Puts the hash of the session cookie's token where the principal extractor looks for a
/// bearer token's; `false` without a session cookie.
fn with_session_token(parts: &mut axum::http::request::Parts) -> bool {
    let Some(token) = cookie(&parts.headers, SESSION_COOKIE) else {
        return false;
    };
    parts
        .extensions
        .insert(crate::api::extract::TokenHash(crate::auth::hash_token(
            &token,
        )));
    true
}

/// The largest form a sign-in carries over to send after it.
const MAX_REPLAY: usize = 256 * 1024;

/// Without a session: a page is sent to sign in and back; a submitted form is kept, as the
/// sign-in page's hidden `replay`, to be sent again once signed in (nothing typed is lost).
async fn signed_out(
    parts: &axum::http::request::Parts,
    body: axum::body::Body,
    back: &str,
    expired: bool,
) -> Response {
    let form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if parts.method != Method::POST || !form {
        return to_sign_in(back, expired);
    }
    let Ok(bytes) = axum::body::to_bytes(body, MAX_REPLAY).await else {
        return to_sign_in(back, expired);
    };
    // A confirmation is not carried over: a change that asked for one shows its dry run again.
    let pairs: Vec<(String, String)> = form_urlencoded::parse(&bytes)
        .into_owned()
        .filter(|(name, _)| name != "_confirm")
        .collect();
    let replay = serde_json::to_string(&pairs).unwrap_or_default();
    let lang = Lang::of(&parts.headers);
    let notice = lang.t("session_expired_form");
    let mut response = (
        StatusCode::UNAUTHORIZED,
        sign_in_page(lang, back, Some(notice), None, None, Some(&replay)),
    )
        .into_response();
    if expired {
        response
            .headers_mut()
            .append(header::SET_COOKIE, CLEAR_SESSION);
    }
    response
}

/// A `POST` from a page of another site carries that site's `Origin`; browsers send it on
/// every cross-origin `POST`. Missing (older clients, tests with plain HTTP clients) passes:
/// the `SameSite=Lax` cookie already stays home on cross-site posts.
fn same_origin(headers: &HeaderMap) -> bool {
    let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    origin
        .split_once("://")
        .is_some_and(|(_, rest)| rest.trim_end_matches('/') == host)
}

fn to_sign_in(back: &str, expired: bool) -> Response {
    let mut target = format!("/sign-in?next={}", encode(back));
    if expired {
        target.push_str("&expired=1");
    }
    let mut response = Redirect::to(&target).into_response();
    if expired {
        response
            .headers_mut()
            .append(header::SET_COOKIE, CLEAR_SESSION);
    }
    response
}

/// Percent-encodes a query parameter's value.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(byte as char)
            }
            _ => out.push_str(&format!("%{byte:02X}")),
        }
    }
    out
}

/// Only a path of this site is a place to go back to (not `//evil.example` or `https://…`).
fn local_path(next: Option<&str>) -> String {
    match next {
        // Browsers drop tabs and line breaks from URLs (`/\t/evil.example` is `//evil.example`
        // to them): no control character or space is part of a place to go back to.
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && !path.contains('\\')
                && !path.bytes().any(|byte| byte <= 0x20 || byte == 0x7f) =>
        {
            path.to_owned()
        }
        _ => "/".to_owned(),
    }
}

#[derive(Debug, Deserialize)]
struct SignInQuery {
    next: Option<String>,
    expired: Option<String>,
}

async fn sign_in_form(headers: HeaderMap, Query(query): Query<SignInQuery>) -> Markup {
    let lang = Lang::of(&headers);
    let notice = query
        .expired
        .is_some()
        .then(|| lang.t("session_expired").to_owned());
    sign_in_page(
        lang,
        &local_path(query.next.as_deref()),
        notice.as_deref(),
        None,
        None,
        None,
    )
}

fn sign_in_page(
    lang: Lang,
    next: &str,
    notice: Option<&str>,
    error: Option<&str>,
    typed: Option<(&str, &str)>,
    replay: Option<&str>,
) -> Markup {
    let (tenant, user) = typed.unwrap_or_default();
    let body = html! {
        main.narrow {
            h1 { (lang.t("sign_in")) }
            @if let Some(notice) = notice { p.notice role="status" { (notice) } }
            @if let Some(error) = error { p.error-summary role="alert" { (lang.t("sign_in_failed")) ": " (error) } }
            form method="post" action="/sign-in" {
                input type="hidden" name="next" value=(next);
                @if let Some(replay) = replay { input type="hidden" name="replay" value=(replay); }
                label { (lang.t("tenant")) input name="tenant" value=(tenant) required autocomplete="organization"; }
                label { (lang.t("user")) input name="user" value=(user) required autocomplete="username"; }
                label { (lang.t("password")) input name="password" type="password" required autocomplete="current-password"; }
                button type="submit" { (lang.t("sign_in")) }
            }
            (language_switch(lang, next))
        }
    };
    document(lang, lang.t("sign_in"), None, body)
}

#[derive(Debug, Deserialize)]
struct SignInForm {
    tenant: String,
    user: String,
    password: String,
    next: Option<String>,
    /// A form submitted when the session had ended (JSON pairs), sent again after sign-in.
    replay: Option<String>,
}

async fn sign_in(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<SignInForm>,
) -> Response {
    let lang = Lang::of(&headers);
    let next = local_path(form.next.as_deref());
    let request = crate::users::SignIn {
        tenant: form.tenant.clone(),
        user: form.user.clone(),
        password: form.password,
    };
    match state.users.sign_in(&request).await {
        Ok((principal, view)) => {
            let Some(token) = view.token else {
                return server_error(lang, "the sign-in returned no token");
            };
            let max_age = view
                .expires_at
                .as_deref()
                .and_then(|at| {
                    time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .map(|at| (at - crate::store::now()).whole_seconds().max(0))
                .unwrap_or(8 * 3600);
            let cookie = format!(
                "{SESSION_COOKIE}={token}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Lax"
            );
            let replay: Option<Vec<(String, String)>> = form
                .replay
                .as_deref()
                .and_then(|text| serde_json::from_str::<Vec<(String, String)>>(text).ok())
                .map(|pairs| {
                    pairs
                        .into_iter()
                        .filter(|(name, _)| name != "_confirm")
                        .collect()
                });
            let mut response = match replay {
                Some(pairs) => replay_page(lang, &next, &pairs).into_response(),
                None => Redirect::to(&next).into_response(),
            };
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
            // The language the user chose before, on any browser.
            let chosen = state
                .users
                .get(&principal, "me")
                .await
                .ok()
                .and_then(|user| user.language)
                .and_then(|tag| Lang::parse(&tag));
            if let Some(chosen) = chosen {
                response
                    .headers_mut()
                    .append(header::SET_COOKIE, language_cookie(chosen));
            }
            response
        }
        Err(error) => {
            let error = ApiError::from(error);
            let status = error.status;
            (
                status,
                sign_in_page(
                    lang,
                    &next,
                    None,
                    Some(&error.message),
                    Some((&form.tenant, &form.user)),
                    form.replay.as_deref(),
                ),
            )
                .into_response()
        }
    }
}

/// After a sign-in that carried a form: the form, as it was typed, sent again to where it was
/// going (at once with JavaScript; with a button without). The page it answers with shows the
/// outcome, errors at their fields included.
fn replay_page(lang: Lang, action: &str, pairs: &[(String, String)]) -> Markup {
    let body = html! {
        main.narrow {
            h1 { (lang.t("signed_in")) }
            form.replay method="post" action=(action) data-autosubmit {
                @for (name, value) in pairs {
                    input type="hidden" name=(name) value=(value);
                }
                p { (lang.t("replay_hint")) }
                button type="submit" { (lang.t("continue")) }
            }
        }
    };
    document(lang, lang.t("signed_in"), None, body)
}

async fn sign_out(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
) -> Response {
    if let Some(token) = cookie(&headers, SESSION_COOKIE) {
        let id = crate::store::tenants::token_id(&crate::auth::hash_token(&token));
        if let Err(error) = state.users.revoke_token(&principal, &id).await {
            tracing::warn!(%error, "could not revoke a console session");
        }
    }
    let mut response = Redirect::to("/sign-in").into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, CLEAR_SESSION);
    response
}

#[derive(Debug, Deserialize)]
struct LanguageForm {
    lang: String,
    next: Option<String>,
}

/// Chooses the console's language: a cookie for this browser and, when someone is signed in,
/// their own setting, which their next sign-in anywhere brings back.
async fn language(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(form): Form<LanguageForm>,
) -> Response {
    let lang = Lang::parse(&form.lang).unwrap_or(Lang::En);
    if let Some(principal) = signed_in(&state, &headers).await
        && let Err(error) = state.users.set_language(&principal, Some(lang.tag())).await
    {
        tracing::warn!(%error, "could not keep a user's language");
    }
    let mut response = Redirect::to(&local_path(form.next.as_deref())).into_response();
    response
        .headers_mut()
        .append(header::SET_COOKIE, language_cookie(lang));
    response
}

fn language_cookie(lang: Lang) -> HeaderValue {
    HeaderValue::from_str(&format!(
        "{LANG_COOKIE}={}; Path=/; Max-Age=31536000; SameSite=Lax",
        lang.tag()
    ))
    .expect("a language tag is a header value")
}

/// The user of the request's session, if it has a valid one.
async fn signed_in(state: &AppState, headers: &HeaderMap) -> Option<Principal> {
    use axum::extract::FromRequestParts;
    let (mut parts, ()) = axum::http::Request::new(()).into_parts();
    parts.headers = headers.clone();
    if !with_session_token(&mut parts) {
        return None;
    }
    Principal::from_request_parts(&mut parts, state).await.ok()
}

fn language_switch(lang: Lang, next: &str) -> Markup {
    html! {
        form.language method="post" action="/language" {
            input type="hidden" name="next" value=(next);
            label {
                (lang.t("language")) " "
                select name="lang" onchange="this.form.submit()" {
                    @for other in Lang::ALL {
                        option value=(other.tag()) selected[other == lang] { (other.name()) }
                    }
                }
            }
            noscript { button type="submit" { (lang.t("apply")) } }
        }
    }
}

async fn css() -> Response {
    asset(CSS, "text/css; charset=utf-8")
}

async fn js() -> Response {
    asset(JS, "text/javascript; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        body,
    )
        .into_response()
}

/// What every signed-in page shows around its content: the navigation (the tenant's readable
/// entities, grouped by the pack that brought them) and the user's menu.
#[derive(Debug, Clone)]
pub struct Chrome {
    pub groups: Vec<(String, Vec<(String, String)>)>,
    pub here: String,
    /// Whether the user administers the tenant (the administration links).
    pub admin: bool,
}

impl Chrome {
    pub async fn load(
        lang: Lang,
        state: &AppState,
        principal: &Principal,
        here: &str,
    ) -> Result<Self, ApiError> {
        let mut conn = state.store.reader().await?;
        let mut scoped = conn.scoped(&principal.tenant);
        let all = state.metadata.all_current(&mut scoped).await?;
        let owners = state
            .packs
            .entity_owners(&mut scoped)
            .await
            .map_err(ApiError::from)?;
        let mut groups: Vec<(String, Vec<(String, String)>)> = Vec::new();
        for compiled in all.iter() {
            let sight = crate::records::access::Sight::of(principal, compiled);
            if sight.grant.read == crate::auth::Scope::None {
                continue;
            }
            let name = compiled.definition.name.as_str().to_owned();
            let label = records::entity_label(lang, &compiled.definition, true);
            let group = owners.get(&name).cloned().unwrap_or_default();
            match groups.iter_mut().find(|(pack, _)| *pack == group) {
                Some((_, entries)) => entries.push((name, label)),
                None => groups.push((group, vec![(name, label)])),
            }
        }
        groups.sort_by(|a, b| (a.0.is_empty(), &a.0).cmp(&(b.0.is_empty(), &b.0)));
        for (_, entries) in &mut groups {
            entries.sort_by(|a, b| a.1.cmp(&b.1));
        }
        Ok(Self {
            groups,
            here: here.to_owned(),
            admin: principal.is_admin(),
        })
    }
}

/// A whole page: the document, the navigation when signed in, and `body`.
pub fn document(lang: Lang, title: &str, chrome: Option<&Chrome>, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang=(lang.tag()) {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · " (lang.t("app")) }
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/console.js" defer {}
            }
            body {
                @if let Some(chrome) = chrome {
                    header.top {
                        a.brand href="/" { (lang.t("app")) }
                        a.nav href="/d" { (lang.t("dashboards")) }
                        a.nav href="/a" { (lang.t("approvals")) }
                        @if chrome.admin {
                            a.nav href="/w" { (lang.t("workflows")) }
                            a.nav href="/s" { (lang.t("schema")) }
                            a.nav href="/k" { (lang.t("packs")) }
                            a.nav href="/p" { (lang.t("plugins")) }
                            a.nav href="/u" { (lang.t("users")) }
                        }
                        details.menu {
                            summary { (lang.t("entities")) }
                            nav {
                                @for (pack, entries) in &chrome.groups {
                                    section {
                                        h2 { @if pack.is_empty() { (lang.t("other")) } @else { (pack) } }
                                        ul {
                                            @for (name, label) in entries {
                                                li { a href={ "/r/" (name) } aria-current=[(chrome.here == *name).then_some("page")] { (label) } }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                        (language_switch(lang, "/"))
                        form.sign-out method="post" action="/sign-out" {
                            button type="submit" { (lang.t("sign_out")) }
                        }
                    }
                }
                (body)
            }
        }
    }
}

async fn home(State(state): State<AppState>, principal: Principal, headers: HeaderMap) -> Response {
    let lang = Lang::of(&headers);
    let chrome = match Chrome::load(lang, &state, &principal, "").await {
        Ok(chrome) => chrome,
        Err(error) => return error_page(lang, error),
    };
    let body = html! {
        main {
            h1 { (lang.t("entities_heading")) }
            @for (pack, entries) in &chrome.groups {
                section.group {
                    h2 { @if pack.is_empty() { (lang.t("other")) } @else { (pack) } }
                    ul.cards {
                        @for (name, label) in entries {
                            li { a href={ "/r/" (name) } { (label) } }
                        }
                    }
                }
            }
        }
    };
    document(lang, lang.t("home"), Some(&chrome), body).into_response()
}

/// A page for an error of a service: not found, forbidden, or the server's fault.
pub fn error_page(lang: Lang, error: ApiError) -> Response {
    let title = match error.status {
        StatusCode::NOT_FOUND => lang.t("not_found"),
        StatusCode::FORBIDDEN => lang.t("forbidden"),
        _ => lang.t("error"),
    };
    let body = html! {
        main.narrow {
            h1 { (title) }
            p.error-summary role="alert" { (error.message) }
            p { a href="/" { (lang.t("home")) } }
        }
    };
    (error.status, document(lang, title, None, body)).into_response()
}

fn server_error(lang: Lang, message: &str) -> Response {
    error_page(
        lang,
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message),
    )
}

/// Writes a change made through the console to the audit trail, as the API's guard does for
/// the API's administrator routes (`detail` says it came from the console).
pub async fn audit(
    state: &AppState,
    principal: &Principal,
    action: &str,
    target: &str,
    mut detail: serde_json::Value,
) {
    detail["via"] = serde_json::json!("console");
    if let Err(error) =
        crate::api::guard::write_audit(state, principal, action, target, &detail).await
    {
        tracing::error!(%error, action, "could not write an audit entry");
    }
}

/// Refuses anyone but an administrator of the tenant, as the API does: `what` names the pages
/// ("the schema editor", "packs"…). The services check again.
pub fn admin_only(principal: &Principal, what: &str) -> Result<(), ApiError> {
    ApiError::unless_admin(principal, what)
}

/// The status of a page that shows a refused change again: 422, or the server's own failure.
pub fn refused_status(error: &ApiError) -> StatusCode {
    if error.status.is_server_error() {
        error.status
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    }
}

/// A change made: written to the audit trail, then the browser goes to `location`.
pub async fn audited_redirect(
    state: &AppState,
    principal: &Principal,
    action: &str,
    target: &str,
    detail: serde_json::Value,
    location: &str,
) -> Response {
    audit(state, principal, action, target, detail).await;
    Redirect::to(location).into_response()
}

/// `?done=…`: what a page's last change did, shown as a notice.
#[derive(Debug, Default, Deserialize)]
pub struct Done {
    pub done: Option<String>,
}

/// `2026-12-05 02:57:29` (UTC).
pub fn when(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .map(|text| text.get(..19).unwrap_or(&text).replace('T', " "))
        .unwrap_or_default()
}

/// The problems of a refused change, each with where it was found.
pub fn problems(error: &ApiError) -> Markup {
    html! {
        @if let Some(fields) = error.fields.as_ref().and_then(serde_json::Value::as_object) {
            ul.problems {
                @for (path, messages) in fields {
                    li { code { (path) } ": "
                        @for message in messages.as_array().into_iter().flatten() {
                            (message.as_str().map(str::to_owned).unwrap_or_else(|| message.to_string())) " "
                        }
                    }
                }
            }
        }
    }
}

/// A page, or the page of its error.
pub fn respond(lang: Lang, page: Result<Markup, ApiError>) -> Response {
    match page {
        Ok(page) => page.into_response(),
        Err(error) => error_page(lang, error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_paths_are_places_to_go_back_to() {
        assert_eq!(local_path(Some("/r/contact?q=x")), "/r/contact?q=x");
        assert_eq!(local_path(Some("//evil.example/")), "/");
        assert_eq!(local_path(Some("https://evil.example/")), "/");
        assert_eq!(local_path(Some("/\\evil.example")), "/");
        assert_eq!(local_path(Some("/\t/evil.example")), "/");
        assert_eq!(local_path(Some("/\n")), "/");
        assert_eq!(local_path(None), "/");
    }

    #[test]
    fn a_post_from_another_site_is_refused() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, "127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&headers));
        headers.insert(header::ORIGIN, "http://127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&headers));
        headers.insert(header::ORIGIN, "https://evil.example".parse().unwrap());
        assert!(!same_origin(&headers));
    }

    #[test]
    fn cookies_are_read_by_name() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "a=1; rapport_session=rps_abc; rapport_lang=zh-CN"
                .parse()
                .unwrap(),
        );
        assert_eq!(cookie(&headers, SESSION_COOKIE).as_deref(), Some("rps_abc"));
        assert_eq!(cookie(&headers, "missing"), None);
    }
}
