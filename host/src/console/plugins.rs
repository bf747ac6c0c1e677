//! Plugin pages for administrators: the tenant's plugins with their versions and the
//! capabilities they request; upload (a component and its manifest, installed or upgraded with
//! the capabilities added and removed shown); one plugin's limits, enable/disable, a
//! configuration form generated from its configuration JSON Schema (the server's problems at
//! their inputs), and its runs — failures first if asked, each with its error. Every change is
//! written to the audit trail.

use axum::extract::{Form, Multipart, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::i18n::Lang;
use super::schema::{Errors, Posted};
use super::{
    Chrome, admin_only, audit, audited_redirect, document, error_page, problems, refused_status,
    respond, when,
};
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::auth::Principal;

/// Runs a plugin page shows.
const RUNS: i64 = 50;

/// What a plugin's capabilities request, as lines: `read: account, contact`.
fn capability_lines(capabilities: &Value) -> Vec<(String, String)> {
    capabilities
        .as_object()
        .map(|caps| {
            caps.iter()
                .filter_map(|(kind, value)| {
                    let items: Vec<String> = match value {
                        Value::Array(items) => items
                            .iter()
                            .map(|item| match item {
                                Value::String(text) => text.clone(),
                                other => other.to_string(),
                            })
                            .collect(),
                        Value::Null => Vec::new(),
                        other => vec![other.to_string()],
                    };
                    (!items.is_empty()).then(|| (kind.clone(), items.join(", ")))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn capabilities(lang: Lang, capabilities: &Value) -> Markup {
    let lines = capability_lines(capabilities);
    html! {
        @if lines.is_empty() { span.empty { (lang.t("none")) } }
        @else {
            ul.capabilities { @for (kind, items) in &lines { li { strong { (kind) } ": " (items) } } }
        }
    }
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
) -> Response {
    let lang = Lang::of(&headers);
    respond(lang, list_page(&state, &principal, lang, None).await)
}

async fn list_page(
    state: &AppState,
    principal: &Principal,
    lang: Lang,
    refused: Option<&ApiError>,
) -> Result<Markup, ApiError> {
    {
        let chrome = Chrome::load(lang, state, principal, "").await?;
        let plugins = state
            .plugins
            .list(principal)
            .await
            .map_err(ApiError::from)?;
        let body = html! {
            main {
                h1 { (lang.t("plugins")) }
                section.card {
                    h2 { (lang.t("upload_plugin")) }
                    p.hint { (lang.t("upload_hint")) }
                    @if let Some(error) = refused {
                        p.error-summary role="alert" { (error.message) }
                        (problems(error))
                    }
                    form.upload method="post" action="/p" enctype="multipart/form-data" {
                        label { (lang.t("manifest")) input type="file" name="manifest" accept=".json,application/json" required; }
                        label { (lang.t("component")) input type="file" name="component" accept=".wasm,application/wasm" required; }
                        div.actions { button type="submit" { (lang.t("upload")) } }
                    }
                }
                @if plugins.is_empty() { p.empty { (lang.t("no_plugins")) } }
                @else {
                    div.table-wrap {
                        table.records {
                            thead { tr {
                                th scope="col" { (lang.t("plugin")) }
                                th scope="col" { (lang.t("version")) }
                                th scope="col" { (lang.t("enabled")) }
                                th scope="col" { (lang.t("capabilities")) }
                            } }
                            tbody {
                                @for plugin in &plugins {
                                    tr data-plugin=(plugin.id) {
                                        td data-label=(lang.t("plugin")) {
                                            a href={ "/p/" (plugin.id) } { (plugin.id) }
                                            @if let Some(description) = &plugin.description { br; small.hint { (description) } }
                                        }
                                        td data-label=(lang.t("version")) { (plugin.version) }
                                        td data-label=(lang.t("enabled")) { (if plugin.enabled { lang.t("yes") } else { lang.t("no") }) }
                                        td data-label=(lang.t("capabilities")) { (capabilities(lang, &serde_json::to_value(&plugin.capabilities).unwrap_or_default())) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        };
        Ok(document(lang, lang.t("plugins"), Some(&chrome), body))
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct RunsQuery {
    failures: Option<String>,
    /// What was just done (`installed`, `configured`, …), shown as a notice.
    done: Option<String>,
}

pub async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(query): Query<RunsQuery>,
) -> Response {
    let lang = Lang::of(&headers);
    let failures = query.failures.is_some_and(|f| f == "1" || f == "true");
    let page = show_page(
        &state,
        &principal,
        lang,
        &id,
        failures,
        None,
        &Errors::default(),
        query.done.as_deref(),
    )
    .await;
    respond(lang, page)
}

#[allow(clippy::too_many_arguments)]
async fn show_page(
    state: &AppState,
    principal: &Principal,
    lang: Lang,
    id: &str,
    failures: bool,
    typed: Option<&Posted>,
    errors: &Errors,
    done: Option<&str>,
) -> Result<Markup, ApiError> {
    {
        let chrome = Chrome::load(lang, state, principal, "").await?;
        let plugin = state
            .plugins
            .show(principal, id)
            .await
            .map_err(ApiError::from)?;
        let runs = state
            .plugins
            .runs(principal, id, failures, RUNS)
            .await
            .map_err(ApiError::from)?;
        let provides = serde_json::to_string_pretty(&plugin.provides).unwrap_or_default();
        let limits = serde_json::to_value(plugin.limits).unwrap_or_default();
        let body = html! {
            main {
                p.crumbs { a href="/p" { (lang.t("plugins")) } }
                h1 { (plugin.id) " " small { (plugin.version) } }
                @if let Some(done) = done { p.notice role="status" { (lang.t("done")) ": " (done) } }
                @if let Some(description) = &plugin.description { p { (description) } }
                form.toggle method="post" action={ "/p/" (plugin.id) "/" (if plugin.enabled { "disable" } else { "enable" }) } {
                    @if plugin.enabled {
                        button.secondary type="submit" { (lang.t("disable")) }
                    } @else {
                        button type="submit" { (lang.t("enable")) }
                    }
                }
                section.card {
                    dl.fields {
                        dt { (lang.t("enabled")) } dd { (if plugin.enabled { lang.t("yes") } else { lang.t("no") }) }
                        dt { (lang.t("capabilities")) } dd { (capabilities(lang, &serde_json::to_value(&plugin.capabilities).unwrap_or_default())) }
                        dt { (lang.t("provides")) } dd { pre { (provides) } }
                        dt { (lang.t("limits")) } dd {
                            @for (name, value) in limits.as_object().into_iter().flatten() { span.tag { (name) " " (value.to_string()) } " " }
                        }
                    }
                }
                section.card {
                    h2 { (lang.t("configuration")) }
                    (config_form(lang, &plugin.id, plugin.config_schema.as_ref(), &plugin.config, typed, errors))
                }
                section.card {
                    div.heading {
                        h2 { (lang.t("runs")) }
                        @if failures {
                            a href={ "/p/" (plugin.id) } { (lang.t("all_runs")) }
                        } @else {
                            a href={ "/p/" (plugin.id) "?failures=1" } { (lang.t("failures_only")) }
                        }
                    }
                    @if runs.is_empty() { p.empty { (lang.t("no_runs")) } }
                    @else {
                        div.table-wrap {
                            table.records.runs {
                                thead { tr {
                                    th scope="col" { (lang.t("when")) }
                                    th scope="col" { (lang.t("stage")) }
                                    th scope="col" { (lang.t("record")) }
                                    th scope="col" { (lang.t("outcome")) }
                                    th scope="col" { "µs" }
                                    th scope="col" { (lang.t("fuel")) }
                                } }
                                tbody {
                                    @for run in &runs {
                                        @let failed = !matches!(run.outcome.as_str(), "ok" | "rejected");
                                        tr.failed[failed] data-outcome=(run.outcome) {
                                            td data-label=(lang.t("when")) { (when(run.started_at)) }
                                            td data-label=(lang.t("stage")) { (run.stage) }
                                            td data-label=(lang.t("record")) {
                                                @match (&run.entity, &run.record_id) {
                                                    (Some(entity), Some(record)) => a href={ "/r/" (entity) "/" (record) } { (entity) } ,
                                                    (Some(entity), None) => (entity),
                                                    _ => (lang.t("none")),
                                                }
                                            }
                                            td data-label=(lang.t("outcome")) {
                                                span.tag { (run.outcome) }
                                                @if let Some(error) = &run.error { p.field-error { (error) } }
                                            }
                                            td data-label="µs" { (run.duration_us) }
                                            td data-label=(lang.t("fuel")) { (run.fuel_used) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        };
        Ok(document(lang, &plugin.id, Some(&chrome), body))
    }
}

/// How a configuration property is typed into the form.
#[derive(Debug, Clone, PartialEq)]
enum Input {
    Choice(Vec<Value>),
    Boolean,
    Integer,
    Number,
    Text,
    /// An array of strings: one per line.
    Lines,
    /// Anything else, as JSON.
    Json,
}

/// A local `$ref` (`#/$defs/name`) resolved in `root`.
fn resolved<'a>(schema: &'a Value, root: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => reference
            .strip_prefix('#')
            .and_then(|pointer| root.pointer(pointer))
            .unwrap_or(schema),
        None => schema,
    }
}

fn input_of(schema: &Value, root: &Value) -> Input {
    let schema = resolved(schema, root);
    if let Some(Value::Array(choices)) = schema.get("enum") {
        return Input::Choice(choices.clone());
    }
    let kind = match schema.get("type") {
        Some(Value::String(kind)) => kind.as_str(),
        Some(Value::Array(kinds)) => kinds
            .iter()
            .filter_map(Value::as_str)
            .find(|kind| *kind != "null")
            .unwrap_or("null"),
        _ => "",
    };
    match kind {
        "boolean" => Input::Boolean,
        "integer" => Input::Integer,
        "number" => Input::Number,
        "string" => Input::Text,
        "array"
            if schema
                .get("items")
                .map(|items| resolved(items, root))
                .and_then(|items| items.get("type"))
                == Some(&json!("string")) =>
        {
            Input::Lines
        }
        _ => Input::Json,
    }
}

/// A value as the form shows it.
fn text_of(input: &Input, value: &Value) -> String {
    match (input, value) {
        (_, Value::Null) => String::new(),
        (Input::Lines, Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| item.to_string())
            })
            .collect::<Vec<_>>()
            .join("\n"),
        (Input::Json, value) => serde_json::to_string_pretty(value).unwrap_or_default(),
        (_, Value::String(text)) => text.clone(),
        (_, value) => value.to_string(),
    }
}

/// A typed text as a value; `None` when nothing was typed (the property is left out). A text
/// that is not of the type goes as typed, so that the schema's problem names the property.
fn value_of(input: &Input, text: &str) -> Option<Value> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return None;
    }
    Some(match input {
        Input::Choice(choices) => choices
            .iter()
            .find(|choice| text_of(input, choice) == trimmed)
            .cloned()
            .unwrap_or_else(|| json!(trimmed)),
        Input::Boolean => match trimmed {
            "true" => json!(true),
            "false" => json!(false),
            other => json!(other),
        },
        Input::Integer => trimmed
            .parse::<i64>()
            .map(Value::from)
            .unwrap_or_else(|_| json!(trimmed)),
        Input::Number => serde_json::from_str::<serde_json::Number>(trimmed)
            .map(Value::Number)
            .unwrap_or_else(|_| json!(trimmed)),
        Input::Text => json!(text),
        Input::Lines => Value::Array(
            text.lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .map(|line| json!(line))
                .collect(),
        ),
        Input::Json => serde_json::from_str(trimmed).unwrap_or_else(|_| json!(trimmed)),
    })
}

/// The configuration's properties and how each is typed; none without a schema that lists
/// them (the whole configuration is then one JSON input, `_json`).
fn properties(schema: Option<&Value>) -> Vec<(String, Input, Option<String>)> {
    let Some(root) = schema else {
        return Vec::new();
    };
    root.get("properties")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .map(|(name, property)| {
            let description = resolved(property, root)
                .get("description")
                .or_else(|| property.get("description"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            (name.clone(), input_of(property, root), description)
        })
        .collect()
}

/// The configuration a submitted form describes: the current configuration with each listed
/// property set from its input (or left out when empty); without listed properties, the JSON
/// typed as a whole.
fn config_of(schema: Option<&Value>, current: &Value, posted: &Posted) -> Value {
    let listed = properties(schema);
    if listed.is_empty() {
        let text = posted.get("_json").trim();
        return if text.is_empty() {
            json!({})
        } else {
            serde_json::from_str(text).unwrap_or_else(|_| json!(text))
        };
    }
    let mut config: Map<String, Value> = current.as_object().cloned().unwrap_or_default();
    for (name, input, _) in &listed {
        match value_of(input, posted.get(name)) {
            Some(value) => config.insert(name.clone(), value),
            None => config.remove(name),
        };
    }
    Value::Object(config)
}

fn config_form(
    lang: Lang,
    id: &str,
    schema: Option<&Value>,
    current: &Value,
    typed: Option<&Posted>,
    errors: &Errors,
) -> Markup {
    let listed = properties(schema);
    let text = |name: &str, input: &Input| match typed {
        Some(typed) => typed.get(name).to_owned(),
        None => text_of(input, current.get(name).unwrap_or(&Value::Null)),
    };
    html! {
        @if let Some(summary) = &errors.summary { p.error-summary role="alert" { (summary) } }
        form.record.config method="post" action={ "/p/" (id) "/config" } novalidate {
            @if listed.is_empty() {
                div.field data-field="_json" {
                    label for="f-_json" { (lang.t("configuration")) " (JSON)" }
                    textarea.code id="f-_json" name="_json" rows="8" {
                        (typed.map(|t| t.get("_json").to_owned()).unwrap_or_else(|| serde_json::to_string_pretty(current).unwrap_or_default()))
                    }
                    (errors.field("_json"))
                }
            }
            @for (name, input, description) in &listed {
                @let id = format!("f-{name}");
                @let value = text(name, input);
                div.field.invalid[errors.invalid(name).is_some()] data-field=(name) {
                    label for=(id) { code { (name) } }
                    @match input {
                        Input::Choice(choices) => {
                            select id=(id) name=(name) aria-invalid=[errors.invalid(name)] {
                                option value="" { (lang.t("default")) }
                                @for choice in choices {
                                    @let choice = text_of(input, choice);
                                    option value=(choice) selected[choice == value] { (choice) }
                                }
                            }
                        },
                        Input::Boolean => {
                            select id=(id) name=(name) aria-invalid=[errors.invalid(name)] {
                                option value="" { (lang.t("default")) }
                                option value="true" selected[value == "true"] { (lang.t("yes")) }
                                option value="false" selected[value == "false"] { (lang.t("no")) }
                            }
                        },
                        Input::Integer | Input::Number => {
                            input id=(id) name=(name) value=(value) inputmode="decimal" aria-invalid=[errors.invalid(name)];
                        },
                        Input::Text => {
                            input id=(id) name=(name) value=(value) aria-invalid=[errors.invalid(name)];
                        },
                        Input::Lines => {
                            textarea id=(id) name=(name) rows="3" aria-invalid=[errors.invalid(name)] { (value) }
                        },
                        Input::Json => {
                            textarea.code id=(id) name=(name) rows="4" aria-invalid=[errors.invalid(name)] { (value) }
                        },
                    }
                    @if let Some(description) = description { small.hint { (description) } }
                    @if *input == Input::Lines { small.hint { (lang.t("one_per_line")) } }
                    (errors.field(name))
                }
            }
            div.actions { button type="submit" { (lang.t("save")) } }
        }
    }
}

pub async fn configure(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let lang = Lang::of(&headers);
    let posted = Posted::of(pairs);
    let plugin = match state.plugins.show(&principal, &id).await {
        Ok(plugin) => plugin,
        Err(error) => return error_page(lang, ApiError::from(error)),
    };
    let config = config_of(plugin.config_schema.as_ref(), &plugin.config, &posted);
    match state.plugins.configure(&principal, &id, &config).await {
        Ok(_) => {
            audited_redirect(
                &state,
                &principal,
                "plugin.configure",
                &id,
                json!({}),
                &format!("/p/{id}?done=configured"),
            )
            .await
        }
        Err(error) => {
            let error = ApiError::from(error);
            let mut inputs: Vec<String> = properties(plugin.config_schema.as_ref())
                .into_iter()
                .map(|(name, _, _)| name)
                .collect();
            inputs.push("_json".to_owned());
            let inputs: Vec<&str> = inputs.iter().map(String::as_str).collect();
            let errors = Errors::of(lang, &error, None, &inputs);
            let page = show_page(
                &state,
                &principal,
                lang,
                &id,
                false,
                Some(&posted),
                &errors,
                None,
            )
            .await;
            (refused_status(&error), respond(lang, page)).into_response()
        }
    }
}

pub async fn enable(
    state: State<AppState>,
    principal: Principal,
    id: Path<String>,
    headers: HeaderMap,
) -> Response {
    set_enabled(state, principal, id, headers, true).await
}

pub async fn disable(
    state: State<AppState>,
    principal: Principal,
    id: Path<String>,
    headers: HeaderMap,
) -> Response {
    set_enabled(state, principal, id, headers, false).await
}

async fn set_enabled(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    enabled: bool,
) -> Response {
    let lang = Lang::of(&headers);
    match state.plugins.set_enabled(&principal, &id, enabled).await {
        Ok(_) => {
            let verb = if enabled { "enable" } else { "disable" };
            audited_redirect(
                &state,
                &principal,
                &format!("plugin.{verb}"),
                &id,
                json!({}),
                &format!("/p/{id}?done={verb}d"),
            )
            .await
        }
        Err(error) => error_page(lang, ApiError::from(error)),
    }
}

/// Installs or upgrades a plugin from its manifest and component files.
pub async fn upload(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    mut multipart: Multipart,
) -> Response {
    let lang = Lang::of(&headers);
    // Refused before the body is read: only administrators upload.
    if let Err(error) = admin_only(&principal, "uploading plugins") {
        return error_page(lang, error);
    }
    let mut manifest = None;
    let mut component = None;
    let read = async {
        while let Some(field) = multipart.next_field().await.map_err(bad_upload)? {
            let name = field.name().unwrap_or_default().to_owned();
            let bytes = field.bytes().await.map_err(bad_upload)?;
            match name.as_str() {
                "manifest" => manifest = Some(bytes),
                "component" => component = Some(bytes),
                _ => {}
            }
        }
        let manifest = manifest
            .filter(|bytes| !bytes.is_empty())
            .ok_or_else(|| ApiError::bad_request("choose the plugin's manifest (JSON)"))?;
        let component = component
            .filter(|bytes| !bytes.is_empty())
            .ok_or_else(|| ApiError::bad_request("choose the plugin's component (.wasm)"))?;
        let manifest: Value = serde_json::from_slice(&manifest)
            .map_err(|error| ApiError::bad_request(format!("the manifest is not JSON: {error}")))?;
        Ok::<_, ApiError>((manifest, component))
    };
    let installed = match read.await {
        Ok((manifest, component)) => state
            .plugins
            .install(&principal, &manifest, &component)
            .await
            .map_err(ApiError::from),
        Err(error) => Err(error),
    };
    match installed {
        Ok(installed) => {
            let id = installed.plugin.id.clone();
            audit(
                &state,
                &principal,
                "plugin.install",
                &id,
                json!({
                    "version": installed.plugin.version,
                    "previous_version": installed.previous_version,
                    "capabilities_added": installed.capabilities_added,
                    "capabilities_removed": installed.capabilities_removed,
                }),
            )
            .await;
            let done = match &installed.previous_version {
                Some(previous) => format!(
                    "{previous} → {}{}{}",
                    installed.plugin.version,
                    listed(" + ", &installed.capabilities_added),
                    listed(" − ", &installed.capabilities_removed),
                ),
                None => format!(
                    "{}{}",
                    installed.plugin.version,
                    listed(" + ", &installed.capabilities_added)
                ),
            };
            Redirect::to(&format!("/p/{id}?done={}", super::encode(&done))).into_response()
        }
        Err(error) if error.status == StatusCode::FORBIDDEN => error_page(lang, error),
        Err(error) => {
            let status = refused_status(&error);
            let page = list_page(&state, &principal, lang, Some(&error)).await;
            (status, respond(lang, page)).into_response()
        }
    }
}

fn listed(prefix: &str, items: &[String]) -> String {
    if items.is_empty() {
        String::new()
    } else {
        format!("{prefix}{}", items.join(", "))
    }
}

fn bad_upload(error: axum::extract::multipart::MultipartError) -> ApiError {
    ApiError::new(error.status(), "bad_upload", error.body_text())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn capabilities_read_as_lines() {
        let lines = capability_lines(
            &json!({"read": ["target", "account"], "write": [], "outbox": ["email"]}),
        );
        assert_eq!(
            lines,
            [
                ("outbox".to_owned(), "email".to_owned()),
                ("read".to_owned(), "target, account".to_owned())
            ]
        );
    }
}
