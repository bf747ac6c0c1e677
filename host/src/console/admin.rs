//! Users, roles and the audit trail, for administrators: users with their roles (create, edit,
//! disable, set a password), roles as a matrix of entity permissions with field access, and the
//! audit trail with filters. The users service checks and audits every change itself, in the
//! change's transaction, as it does for the API.

use std::collections::BTreeMap;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::i18n::Lang;
use super::schema::{Errors, Posted, entity_names, text_input};
use super::{Chrome, Done, admin_only, document, encode, error_page, refused_status, respond};
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::auth::Principal;
use crate::users::{NewUserBody, UserPatch, UserView};

/// What these pages are, in a refusal.
const PAGES: &str = "users, roles and the audit trail";

async fn role_names(state: &AppState, principal: &Principal) -> Result<Vec<String>, ApiError> {
    Ok(state
        .users
        .roles(principal)
        .await?
        .iter()
        .filter_map(|role| role["name"].as_str().map(str::to_owned))
        .collect())
}

/// A checkbox per role, `chosen` ticked.
fn role_boxes(roles: &[String], chosen: &[String], errors: &Errors) -> Markup {
    html! {
        fieldset.roles.invalid[errors.invalid("roles").is_some()] data-field="roles" {
            @for role in roles {
                label.inline { input type="checkbox" name="roles" value=(role) checked[chosen.contains(role)]; " " (role) }
            }
            (errors.field("roles"))
        }
    }
}

/// The links between the users, roles and audit pages.
fn admin_nav(lang: Lang, here: &str) -> Markup {
    html! {
        nav.views {
            @for (key, href) in [("users", "/u"), ("roles", "/roles"), ("audit", "/audit")] {
                a href=(href) aria-current=[(key == here).then_some("page")] { (lang.t(key)) }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Users

pub async fn users(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
) -> Response {
    let lang = Lang::of(&headers);
    let page = users_page(&state, &principal, lang, None, &Errors::default()).await;
    respond(lang, page)
}

async fn users_page(
    state: &AppState,
    principal: &Principal,
    lang: Lang,
    typed: Option<&Posted>,
    errors: &Errors,
) -> Result<Markup, ApiError> {
    admin_only(principal, PAGES)?;
    let chrome = Chrome::load(lang, state, principal, "").await?;
    let users = state.users.list(principal).await?;
    let roles = role_names(state, principal).await?;
    let chosen: Vec<String> = match typed {
        Some(typed) => typed.all("roles"),
        None => vec!["member".to_owned()],
    };
    let typed_value = |name: &str| typed.map(|t| t.get(name).to_owned()).unwrap_or_default();
    let body = html! {
        main {
            (admin_nav(lang, "users"))
            h1 { (lang.t("users")) }
            div.table-wrap {
                table.records.users {
                    thead { tr {
                        th scope="col" { (lang.t("user")) }
                        th scope="col" { (lang.t("email")) }
                        th scope="col" { (lang.t("roles")) }
                        th scope="col" { (lang.t("status")) }
                    } }
                    tbody {
                        @for user in &users {
                            tr data-user=(user.name) {
                                td data-label=(lang.t("user")) { a href={ "/u/" (user.id) } { (user.name) } }
                                td data-label=(lang.t("email")) { (user.email.as_deref().unwrap_or_default()) }
                                td data-label=(lang.t("roles")) { @for role in &user.roles { span.tag { (role) } " " } }
                                td data-label=(lang.t("status")) {
                                    @if user.disabled { span.tag.warn { (lang.t("user_disabled")) } }
                                    @else if user.locked_until.is_some() { span.tag.warn { (lang.t("locked")) } }
                                    @else { (lang.t("active")) }
                                    @if !user.has_password { " · " (lang.t("no_password")) }
                                }
                            }
                        }
                    }
                }
            }
            section.card {
                h2 { (lang.t("new_user")) }
                @if let Some(summary) = &errors.summary { p.error-summary role="alert" { (summary) } }
                form.record method="post" action="/u" novalidate {
                    (text_input(lang.t("user"), "name", "text", &typed_value("name"), errors, html! {}))
                    (text_input(lang.t("email"), "email", "email", &typed_value("email"), errors, html! {}))
                    (text_input(lang.t("password"), "password", "password", "", errors, html! {}))
                    (role_boxes(&roles, &chosen, errors))
                    div.actions { button type="submit" { (lang.t("create_user")) } }
                }
            }
        }
    };
    Ok(document(lang, lang.t("users"), Some(&chrome), body))
}

fn optional(text: &str) -> Option<String> {
    Some(text.trim().to_owned()).filter(|text| !text.is_empty())
}

pub async fn create_user(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let lang = Lang::of(&headers);
    let posted = Posted::of(pairs);
    let body = NewUserBody {
        name: posted.get("name").trim().to_owned(),
        email: optional(posted.get("email")),
        roles: Some(posted.all("roles")),
        password: optional(posted.get("password")),
    };
    match state.users.create(&principal, body).await {
        Ok(user) => Redirect::to(&format!("/u/{}?done=created", user.id)).into_response(),
        Err(error) => {
            let error = ApiError::from(error);
            if error.status == StatusCode::FORBIDDEN {
                return error_page(lang, error);
            }
            let errors = Errors::of(lang, &error, None, &["name", "email", "password", "roles"]);
            let page = users_page(&state, &principal, lang, Some(&posted), &errors).await;
            (refused_status(&error), respond(lang, page)).into_response()
        }
    }
}

pub async fn user(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(done): Query<Done>,
) -> Response {
    let lang = Lang::of(&headers);
    let page = user_page(
        &state,
        &principal,
        lang,
        &id,
        None,
        &Errors::default(),
        done.done.as_deref(),
    )
    .await;
    respond(lang, page)
}

async fn user_page(
    state: &AppState,
    principal: &Principal,
    lang: Lang,
    id: &str,
    typed: Option<&Posted>,
    errors: &Errors,
    done: Option<&str>,
) -> Result<Markup, ApiError> {
    admin_only(principal, PAGES)?;
    let chrome = Chrome::load(lang, state, principal, "").await?;
    let user: UserView = state.users.get(principal, id).await?;
    let roles = role_names(state, principal).await?;
    let chosen = match typed {
        Some(typed) => typed.all("roles"),
        None => user.roles.clone(),
    };
    let email = match typed {
        Some(typed) => typed.get("email").to_owned(),
        None => user.email.clone().unwrap_or_default(),
    };
    let disabled = match typed {
        Some(typed) => typed.get("disabled") == "true",
        None => user.disabled,
    };
    let body = html! {
        main {
            p.crumbs { a href="/u" { (lang.t("users")) } }
            h1 { (user.name) }
            @if let Some(done) = done { p.notice role="status" { (lang.t("done")) ": " (done) } }
            section.card {
                @if let Some(summary) = &errors.summary { p.error-summary role="alert" { (summary) } }
                form.record method="post" action={ "/u/" (user.id) } novalidate {
                    (text_input(lang.t("email"), "email", "email", &email, errors, html! {}))
                    (role_boxes(&roles, &chosen, errors))
                    label.inline { input type="checkbox" name="disabled" value="true" checked[disabled]; " " (lang.t("user_disabled")) }
                    div.actions { button type="submit" { (lang.t("save")) } }
                }
            }
            section.card {
                h2 { (lang.t("set_password")) }
                form.record method="post" action={ "/u/" (user.id) "/password" } novalidate {
                    (text_input(lang.t("password"), "password", "password", "", errors, html! {}))
                    div.actions { button type="submit" { (lang.t("set_password")) } }
                }
            }
        }
    };
    Ok(document(lang, &user.name, Some(&chrome), body))
}

pub async fn update_user(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let lang = Lang::of(&headers);
    let posted = Posted::of(pairs);
    let patch = UserPatch {
        email: Some(optional(posted.get("email"))),
        roles: Some(posted.all("roles")),
        disabled: Some(posted.get("disabled") == "true"),
    };
    match state.users.update(&principal, &id, patch).await {
        Ok(_) => Redirect::to(&format!("/u/{id}?done=saved")).into_response(),
        Err(error) => {
            let error = ApiError::from(error);
            if matches!(error.status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND) {
                return error_page(lang, error);
            }
            let errors = Errors::of(lang, &error, None, &["email", "roles", "disabled"]);
            let page = user_page(&state, &principal, lang, &id, Some(&posted), &errors, None).await;
            (refused_status(&error), respond(lang, page)).into_response()
        }
    }
}

pub async fn set_password(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let lang = Lang::of(&headers);
    let posted = Posted::of(pairs);
    match state
        .users
        .set_password(&principal, &id, posted.get("password"), None)
        .await
    {
        Ok(()) => Redirect::to(&format!("/u/{id}?done=password")).into_response(),
        Err(error) => {
            let error = ApiError::from(error);
            if matches!(error.status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND) {
                return error_page(lang, error);
            }
            let errors = Errors::of(lang, &error, None, &["password"]);
            let page = user_page(&state, &principal, lang, &id, None, &errors, None).await;
            (refused_status(&error), respond(lang, page)).into_response()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Roles

/// Record scopes, with the word for each.
const SCOPES: &[(&str, &str)] = &[
    ("none", "scope_none"),
    ("own", "scope_own"),
    ("team", "scope_team"),
    ("all", "scope_all"),
];
const ACTIONS: &[&str] = &["read", "update", "delete"];

fn action_word(lang: Lang, action: &str) -> &'static str {
    match action {
        "read" => lang.t("grant_read"),
        "update" => lang.t("grant_update"),
        "delete" => lang.t("grant_delete"),
        _ => lang.t("grant_create"),
    }
}

pub async fn roles(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
) -> Response {
    let lang = Lang::of(&headers);
    let result = async {
        admin_only(&principal, PAGES)?;
        let chrome = Chrome::load(lang, &state, &principal, "").await?;
        let roles = state.users.roles(&principal).await?;
        let body = html! {
            main {
                (admin_nav(lang, "roles"))
                div.heading {
                    h1 { (lang.t("roles")) }
                    a.button href="/roles/new" { (lang.t("new_role")) }
                }
                ul.cards {
                    @for role in &roles {
                        @let name = role["name"].as_str().unwrap_or_default();
                        li data-role=(name) {
                            a href={ "/roles/" (name) } {
                                strong { (role["label"].as_str().unwrap_or(name)) } br;
                                small.hint { code { (name) }
                                    @if role["admin"] == json!(true) { " · " (lang.t("administers")) }
                                    @if let Some(pack) = role["pack"].as_str() { " · " (pack) } }
                            }
                        }
                    }
                }
            }
        };
        Ok::<_, ApiError>(document(lang, lang.t("roles"), Some(&chrome), body))
    }
    .await;
    respond(lang, result)
}

/// Field access as the form shows it: `name:read, other:none`.
fn fields_text(fields: &Value) -> String {
    fields
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, access)| format!("{name}:{}", access.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The grant a matrix row describes. Text that does not read as field access goes as typed,
/// so that the role's schema names it.
fn row_grant(entity: &str, posted: &Posted) -> Map<String, Value> {
    let mut grant = Map::new();
    if posted.get(&format!("e.{entity}.create")) == "true" {
        grant.insert("create".into(), json!(true));
    }
    for action in ACTIONS {
        let scope = posted.get(&format!("e.{entity}.{action}"));
        if !scope.is_empty() && scope != "none" {
            grant.insert((*action).into(), json!(scope));
        }
    }
    let fields = posted.get(&format!("e.{entity}.fields"));
    if !fields.trim().is_empty() {
        let mut access = Map::new();
        for pair in fields.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match pair.split_once(':') {
                Some((field, level)) => access.insert(field.trim().to_owned(), json!(level.trim())),
                None => access.insert(pair.to_owned(), json!("")),
            };
        }
        grant.insert("fields".into(), Value::Object(access));
    }
    grant
}

/// The role a submitted matrix describes. Its rows are `*` (every entity) and the tenant's
/// entities; an entity's row is written as its own grant only where it differs from the `*`
/// row (an explicit grant, even an empty one, replaces `*` for its entity), so saving a role
/// changes nothing it did not show. Grants of entities the matrix has no row for are kept.
fn role_json(name: &str, entities: &[String], posted: &Posted, existing: Option<&Value>) -> Value {
    let mut role = Map::new();
    role.insert("name".into(), json!(name));
    for key in ["label", "description"] {
        if let Some(text) = optional(posted.get(key)) {
            role.insert(key.into(), json!(text));
        }
    }
    for flag in ["admin", "reassign"] {
        if posted.get(flag) == "true" {
            role.insert(flag.into(), json!(true));
        }
    }
    let mut grants: Map<String, Value> = existing
        .and_then(|role| role["entities"].as_object())
        .cloned()
        .unwrap_or_default();
    let wildcard = row_grant("*", posted);
    grants.remove("*");
    if !wildcard.is_empty() {
        grants.insert("*".into(), Value::Object(wildcard.clone()));
    }
    for entity in entities {
        let grant = row_grant(entity, posted);
        if grant == wildcard {
            grants.remove(entity);
        } else {
            grants.insert(entity.clone(), Value::Object(grant));
        }
    }
    if !grants.is_empty() {
        role.insert("entities".into(), Value::Object(grants));
    }
    Value::Object(role)
}

/// The inputs a role's problem goes to: `/entities/contact/read` → `e.contact.read`.
fn role_errors(lang: Lang, error: &ApiError) -> Errors {
    let mut renamed = ApiError::new(error.status, error.code, error.message.clone());
    if let Some(Value::Object(fields)) = &error.fields {
        let mut moved = Map::new();
        for (path, messages) in fields {
            let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
            let input = match segments.as_slice() {
                ["entities", entity, action, ..] => format!("/e.{entity}.{action}"),
                ["entities", entity] => format!("/e.{entity}.read"),
                _ => path.clone(),
            };
            moved.insert(input, messages.clone());
        }
        renamed.fields = Some(Value::Object(moved));
    }
    let inputs: Vec<String> = renamed
        .fields
        .iter()
        .flat_map(Value::as_object)
        .flatten()
        .map(|(path, _)| path.trim_start_matches('/').to_owned())
        .chain(["name", "label", "description"].map(str::to_owned))
        .collect();
    let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
    Errors::of(lang, &renamed, None, &inputs)
}

pub async fn role(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(done): Query<Done>,
) -> Response {
    let lang = Lang::of(&headers);
    let existing = if name == "new" {
        None
    } else {
        match state.users.role(&principal, &name).await {
            Ok(role) => Some(role),
            Err(error) => return error_page(lang, ApiError::from(error)),
        }
    };
    let page = role_page(
        &state,
        &principal,
        lang,
        existing.as_ref(),
        None,
        &Errors::default(),
        done.done.as_deref(),
    )
    .await;
    respond(lang, page)
}

#[allow(clippy::too_many_arguments)]
async fn role_page(
    state: &AppState,
    principal: &Principal,
    lang: Lang,
    existing: Option<&Value>,
    typed: Option<&Posted>,
    errors: &Errors,
    done: Option<&str>,
) -> Result<Markup, ApiError> {
    admin_only(principal, PAGES)?;
    let chrome = Chrome::load(lang, state, principal, "").await?;
    let entities = entity_names(state, principal).await?;
    let name = existing
        .and_then(|role| role["name"].as_str())
        .map(str::to_owned);
    let built_in = existing.is_some_and(|role| role["built_in"] == json!(true));
    let value = |key: &str, stored: &dyn Fn(&Value) -> String| match typed {
        Some(typed) => typed.get(key).to_owned(),
        None => existing.map(stored).unwrap_or_default(),
    };
    let flag = |key: &str| match typed {
        Some(typed) => typed.get(key) == "true",
        None => existing.is_some_and(|role| role[key] == json!(true)),
    };
    // A row shows the entity's own grant, else what `*` gives it.
    let grant_of = |entity: &str| {
        existing
            .map(|role| {
                let grants = &role["entities"];
                match grants.get(entity) {
                    Some(grant) => grant.clone(),
                    None => grants.get("*").cloned().unwrap_or(Value::Null),
                }
            })
            .unwrap_or(Value::Null)
    };
    let rows: Vec<String> = std::iter::once("*".to_owned())
        .chain(entities.iter().cloned())
        .collect();
    let action = match &name {
        Some(name) => format!("/roles/{name}"),
        None => "/roles/new".to_owned(),
    };
    let title = name
        .clone()
        .unwrap_or_else(|| lang.t("new_role").to_owned());
    let body = html! {
        main {
            p.crumbs { a href="/roles" { (lang.t("roles")) } }
            h1 { (title) }
            @if let Some(done) = done { p.notice role="status" { (lang.t("done")) ": " (done) } }
            @if built_in { p.notice { (lang.t("built_in_role")) } }
            @if let Some(summary) = &errors.summary { p.error-summary role="alert" { (summary) } }
            form.record.role method="post" action=(action) novalidate {
                @if name.is_none() { (text_input(lang.t("api_name"), "name", "text", &value("name", &|_| String::new()), errors, html! {})) }
                (text_input(lang.t("label"), "label", "text", &value("label", &|role| role["label"].as_str().unwrap_or_default().to_owned()), errors, html! {}))
                (text_input(lang.t("description"), "description", "text", &value("description", &|role| role["description"].as_str().unwrap_or_default().to_owned()), errors, html! {}))
                label.inline { input type="checkbox" name="admin" value="true" checked[flag("admin")]; " " (lang.t("administers")) }
                label.inline { input type="checkbox" name="reassign" value="true" checked[flag("reassign")]; " " (lang.t("reassigns")) }
                div.table-wrap {
                    table.records.grants {
                        thead { tr {
                            th scope="col" { (lang.t("entity")) }
                            th scope="col" { (lang.t("grant_create")) }
                            @for action in ACTIONS { th scope="col" { (action_word(lang, action)) } }
                            th scope="col" { (lang.t("field_access")) }
                        } }
                        tbody {
                            @for entity in &rows {
                                @let grant = grant_of(entity);
                                tr data-entity=(entity) {
                                    th scope="row" {
                                        @if entity == "*" { (lang.t("every_entity")) " " code { "*" } }
                                        @else { code { (entity) } }
                                    }
                                    td data-label=(lang.t("grant_create")) {
                                        @let key = format!("e.{entity}.create");
                                        input type="checkbox" name=(key) value="true" aria-label={ (entity) " " (lang.t("grant_create")) }
                                            checked[match typed { Some(t) => t.get(&key) == "true", None => grant["create"] == json!(true) }];
                                    }
                                    @for action in ACTIONS {
                                        @let key = format!("e.{entity}.{action}");
                                        @let chosen = match typed { Some(t) => t.get(&key).to_owned(), None => grant[*action].as_str().unwrap_or("none").to_owned() };
                                        td data-label=(action_word(lang, action)) {
                                            select name=(key) aria-label={ (entity) " " (action_word(lang, action)) } aria-invalid=[errors.invalid(&key)] {
                                                @for (scope, word) in SCOPES { option value=(scope) selected[chosen == *scope] { (lang.t(word)) } }
                                            }
                                            (errors.field(&key))
                                        }
                                    }
                                    td data-label=(lang.t("field_access")) {
                                        @let key = format!("e.{entity}.fields");
                                        input name=(key) placeholder="field:read, other:none" aria-invalid=[errors.invalid(&key)]
                                            value=(match typed { Some(t) => t.get(&key).to_owned(), None => fields_text(&grant["fields"]) });
                                        (errors.field(&key))
                                    }
                                }
                            }
                        }
                    }
                }
                @if !built_in { div.actions { button type="submit" { (lang.t("save")) } a href="/roles" { (lang.t("cancel")) } } }
            }
        }
    };
    Ok(document(lang, &title, Some(&chrome), body))
}

pub async fn save_role(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let lang = Lang::of(&headers);
    let posted = Posted::of(pairs);
    if let Err(error) = admin_only(&principal, PAGES) {
        return error_page(lang, error);
    }
    let creating = name == "new";
    let role_name = if creating {
        posted.get("name").trim().to_owned()
    } else {
        name.clone()
    };
    let entities = match entity_names(&state, &principal).await {
        Ok(entities) => entities,
        Err(error) => return error_page(lang, error),
    };
    let existing = if creating {
        None
    } else {
        state.users.role(&principal, &name).await.ok()
    };
    let json = role_json(&role_name, &entities, &posted, existing.as_ref());
    let target = (!creating).then_some(name.as_str());
    match state.users.put_role(&principal, target, &json).await {
        Ok(_) => Redirect::to(&format!("/roles/{}?done=saved", encode(&role_name))).into_response(),
        Err(error) => {
            let error = ApiError::from(error);
            if matches!(error.status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND) {
                return error_page(lang, error);
            }
            let errors = role_errors(lang, &error);
            let page = role_page(
                &state,
                &principal,
                lang,
                existing.as_ref(),
                Some(&posted),
                &errors,
                None,
            )
            .await;
            (refused_status(&error), respond(lang, page)).into_response()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Audit

#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    action: Option<String>,
    actor: Option<String>,
    target: Option<String>,
    cursor: Option<String>,
}

pub async fn audit(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    Query(query): Query<AuditQuery>,
) -> Response {
    let lang = Lang::of(&headers);
    let result = async {
        admin_only(&principal, PAGES)?;
        let chrome = Chrome::load(lang, &state, &principal, "").await?;
        let users = state.users.list(&principal).await?;
        let names: BTreeMap<&str, &str> = users
            .iter()
            .map(|user| (user.id.as_str(), user.name.as_str()))
            .collect();
        let actor_id = query
            .actor
            .as_deref()
            .and_then(optional)
            .map(|actor| {
                users
                    .iter()
                    .find(|user| user.name == actor)
                    .map_or(actor.clone(), |user| user.id.clone())
            });
        let filter = crate::store::tenants::AuditFilter {
            actor: actor_id.as_deref(),
            action: query.action.as_deref().filter(|a| !a.is_empty()),
            target: query.target.as_deref().filter(|t| !t.is_empty()),
            since: None,
            until: None,
            before: query.cursor.as_deref().and_then(|c| c.parse().ok()),
        };
        let found = state.users.audit(&principal, &filter, 100).await?;
        let entries = found["data"].as_array().cloned().unwrap_or_default();
        let next = found["next_cursor"].as_str().map(|cursor| {
            let mut link = format!("/audit?cursor={cursor}");
            for (key, value) in [("action", &query.action), ("actor", &query.actor), ("target", &query.target)] {
                if let Some(value) = value.as_deref().filter(|v| !v.is_empty()) {
                    link.push_str(&format!("&{key}={}", encode(value)));
                }
            }
            link
        });
        let body = html! {
            main {
                (admin_nav(lang, "audit"))
                h1 { (lang.t("audit")) }
                form.filters method="get" action="/audit" {
                    input name="action" value=(query.action.as_deref().unwrap_or_default()) placeholder=(lang.t("audit_action")) aria-label=(lang.t("audit_action"));
                    input name="actor" value=(query.actor.as_deref().unwrap_or_default()) placeholder=(lang.t("user")) aria-label=(lang.t("user"));
                    input name="target" value=(query.target.as_deref().unwrap_or_default()) placeholder=(lang.t("audit_target")) aria-label=(lang.t("audit_target"));
                    button type="submit" { (lang.t("filter")) }
                }
                @if entries.is_empty() { p.empty { (lang.t("no_audit")) } }
                @else {
                    div.table-wrap {
                        table.records.audit {
                            thead { tr {
                                th scope="col" { (lang.t("when")) }
                                th scope="col" { (lang.t("user")) }
                                th scope="col" { (lang.t("audit_action")) }
                                th scope="col" { (lang.t("audit_target")) }
                                th scope="col" { (lang.t("details")) }
                            } }
                            tbody {
                                @for entry in &entries {
                                    @let actor = entry["actor"].as_str().unwrap_or_default();
                                    tr data-action=(entry["action"].as_str().unwrap_or_default()) {
                                        td data-label=(lang.t("when")) { (entry["at"].as_str().unwrap_or_default().get(..19).unwrap_or_default().replace('T', " ")) }
                                        td data-label=(lang.t("user")) { (names.get(actor).copied().unwrap_or(actor)) }
                                        td data-label=(lang.t("audit_action")) { code { (entry["action"].as_str().unwrap_or_default()) } }
                                        td data-label=(lang.t("audit_target")) { (entry["target"].as_str().unwrap_or_default()) }
                                        td data-label=(lang.t("details")) { small { code { (entry["detail"].to_string()) } } }
                                    }
                                }
                            }
                        }
                    }
                }
                @if let Some(next) = next { nav.pages { a href=(next) { (lang.t("next_page")) } } }
            }
        };
        Ok::<_, ApiError>(document(lang, lang.t("audit"), Some(&chrome), body))
    }
    .await;
    respond(lang, result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_matrix_becomes_a_role() {
        let posted = Posted::of(
            [
                ("label", "Sales"),
                ("e.contact.create", "true"),
                ("e.contact.read", "all"),
                ("e.contact.update", "own"),
                ("e.contact.delete", "none"),
                ("e.contact.fields", "salary:none, phone:read"),
                ("e.account.read", "none"),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
        );
        let role = role_json(
            "sales",
            &["contact".to_owned(), "account".to_owned()],
            &posted,
            None,
        );
        assert_eq!(
            role,
            json!({"name": "sales", "label": "Sales", "entities": {"contact": {
                "create": true, "read": "all", "update": "own",
                "fields": {"salary": "none", "phone": "read"}
            }}})
        );
        assert_eq!(
            fields_text(&role["entities"]["contact"]["fields"]),
            "phone:read, salary:none"
        );
    }

    #[test]
    fn saving_a_role_keeps_its_wildcard_and_what_the_matrix_does_not_show() {
        let existing = json!({"name": "member", "entities": {
            "*": {"create": true, "read": "all", "update": "own"},
            "secret": {},
            "gone": {"read": "all"}
        }});
        let row = |entity: &str, read: &str| {
            vec![
                (format!("e.{entity}.create"), "true".to_owned()),
                (format!("e.{entity}.read"), read.to_owned()),
                (format!("e.{entity}.update"), "own".to_owned()),
                (format!("e.{entity}.delete"), "none".to_owned()),
            ]
        };
        // The page as shown, saved with a new label: every row as `*` gives it, `secret` empty.
        let mut pairs = vec![("label".to_owned(), "Members".to_owned())];
        pairs.extend(row("*", "all"));
        pairs.extend(row("contact", "all"));
        pairs.extend([("e.secret.read".to_owned(), "none".to_owned())]);
        let role = role_json(
            "member",
            &["contact".to_owned(), "secret".to_owned()],
            &Posted::of(pairs),
            Some(&existing),
        );
        assert_eq!(
            role["entities"],
            json!({"*": {"create": true, "read": "all", "update": "own"}, "secret": {}, "gone": {"read": "all"}}),
            "the wildcard stays, the carve-out stays, an entity without a row keeps its grant"
        );
        assert_eq!(role["label"], "Members");
    }
}
