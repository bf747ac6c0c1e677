//! Workflows for administrators — the list, an editor for definitions whose problems are shown
//! at the step that has them, the runs with each step's status, input, output and error, retry
//! of a failed run — and, for everyone, the approvals waiting for them with approve and reject.
//! Changes go through the workflow service as the API's do and are written to the audit trail.

use std::collections::BTreeMap;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Value, json};

use super::i18n::Lang;
use super::{
    Chrome, Done, admin_only, audited_redirect, document, error_page, refused_status, respond, when,
};
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::auth::Principal;
use crate::store::workflows::RunFilter;
use crate::workflows::WorkflowView;

/// What these pages are, in a refusal.
const PAGES: &str = "editing workflows";

/// Runs a workflow's page lists.
const RUNS: i64 = 50;

fn name_of(workflow: &WorkflowView) -> &str {
    workflow.definition["name"].as_str().unwrap_or_default()
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
) -> Response {
    let lang = Lang::of(&headers);
    let result = async {
        admin_only(&principal, PAGES)?;
        let chrome = Chrome::load(lang, &state, &principal, "").await?;
        let workflows = state.workflows.list(&principal.tenant).await?;
        let body = html! {
            main {
                div.heading {
                    h1 { (lang.t("workflows")) }
                    a.button href="/w/new" { (lang.t("new_workflow")) }
                }
                @if workflows.is_empty() { p.empty { (lang.t("no_workflows")) } }
                @else {
                    div.table-wrap {
                        table.records.workflows {
                            thead { tr {
                                th scope="col" { (lang.t("workflow")) }
                                th scope="col" { (lang.t("trigger")) }
                                th scope="col" { (lang.t("enabled")) }
                                th scope="col" { (lang.t("version")) }
                            } }
                            tbody {
                                @for workflow in &workflows {
                                    @let name = name_of(workflow);
                                    tr data-workflow=(name) {
                                        td data-label=(lang.t("workflow")) {
                                            a href={ "/w/" (name) } { code { (name) } }
                                            @if let Some(label) = workflow.definition["label"].as_str() { br; small.hint { (label) } }
                                        }
                                        td data-label=(lang.t("trigger")) {
                                            (workflow.definition["trigger"]["type"].as_str().unwrap_or_default()) " "
                                            @if let Some(entity) = workflow.definition["trigger"]["entity"].as_str() { code { (entity) } }
                                        }
                                        td data-label=(lang.t("enabled")) { (if workflow.enabled { lang.t("yes") } else { lang.t("no") }) }
                                        td data-label=(lang.t("version")) { (workflow.version) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        };
        Ok::<_, ApiError>(document(lang, lang.t("workflows"), Some(&chrome), body))
    }
    .await;
    respond(lang, result)
}

/// Problems of a definition, by the path of the step they belong to (`/steps/0/then/1`;
/// `""` for the trigger and the rest of the definition).
fn problems_by_step(error: &ApiError) -> BTreeMap<String, Vec<String>> {
    let mut found: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (path, messages) in error.fields.iter().flat_map(Value::as_object).flatten() {
        let step = step_of(path);
        let rest = path.strip_prefix(&step).unwrap_or(path);
        let rest = if rest.is_empty() { "" } else { rest };
        for message in messages.as_array().into_iter().flatten() {
            let message = message
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| message.to_string());
            let located = if rest.is_empty() {
                message
            } else {
                format!("{rest}: {message}")
            };
            found.entry(step.clone()).or_default().push(located);
        }
    }
    found
}

/// The path of the deepest step a problem's path is in: `/steps/0/then/1/values/x` →
/// `/steps/0/then/1`.
fn step_of(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let mut step = String::new();
    let mut at = 0;
    while at + 1 < segments.len() {
        let (list, index) = (segments[at], segments[at + 1]);
        if matches!(list, "steps" | "then" | "else") && index.parse::<usize>().is_ok() {
            let prefix: Vec<&str> = segments[..at + 2].to_vec();
            step = format!("/{}", prefix.join("/"));
            at += 2;
        } else {
            at += 1;
        }
    }
    step
}

/// The definition's steps as an outline, each with its problems in place.
fn outline(
    lang: Lang,
    steps: &Value,
    path: &str,
    problems: &BTreeMap<String, Vec<String>>,
) -> Markup {
    html! {
        ol.steps {
            @for (index, step) in steps.as_array().into_iter().flatten().enumerate() {
                @let here = format!("{path}/{index}");
                @let wrong = problems.get(&here);
                li.step.invalid[wrong.is_some()] data-step=(step["id"].as_str().unwrap_or_default()) data-path=(here) {
                    code { (step["id"].as_str().unwrap_or("?")) } " " span.tag { (step["type"].as_str().unwrap_or("?")) }
                    @if let Some(condition) = step["if"].as_str() { " " (lang.t("if")) " " code { (condition) } }
                    @for problem in wrong.into_iter().flatten() { p.field-error role="alert" { (problem) } }
                    @for branch in ["then", "else"] {
                        @if step.get(branch).is_some_and(Value::is_array) {
                            div.branch { span.kind { (branch) } (outline(lang, &step[branch], &format!("{here}/{branch}"), problems)) }
                        }
                    }
                }
            }
        }
    }
}

/// A new workflow's starting point.
fn template() -> Value {
    json!({
        "name": "",
        "label": "",
        "trigger": {"type": "record", "entity": "", "events": ["created"]},
        "steps": [
            {"id": "tell_owner", "type": "notify", "user": "{{record._owner}}", "message": "A new record"}
        ]
    })
}

/// The definition a workflow's editor shows: what can be written, with its version.
fn editable(workflow: &WorkflowView) -> Value {
    let mut definition = workflow.definition.clone();
    if let Some(object) = definition.as_object_mut() {
        object.insert("version".into(), json!(workflow.version));
    }
    definition
}

#[allow(clippy::too_many_arguments)]
async fn editor_page(
    state: &AppState,
    principal: &Principal,
    lang: Lang,
    name: Option<&str>,
    text: &str,
    error: Option<&ApiError>,
    done: Option<&str>,
) -> Result<Markup, ApiError> {
    admin_only(principal, PAGES)?;
    let chrome = Chrome::load(lang, state, principal, "").await?;
    let workflow = match name {
        Some(name) => Some(state.workflows.get(&principal.tenant, name).await?),
        None => None,
    };
    let runs = match name {
        Some(name) => {
            state
                .workflows
                .runs(
                    principal,
                    name,
                    RunFilter {
                        status: None,
                        before: None,
                        limit: RUNS,
                    },
                )
                .await?
                .0
        }
        None => Vec::new(),
    };
    let problems = error.map(problems_by_step).unwrap_or_default();
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    let action = match name {
        Some(name) => format!("/w/{name}"),
        None => "/w/new".to_owned(),
    };
    let title = match name {
        Some(name) => format!("{} · {name}", lang.t("workflow")),
        None => lang.t("new_workflow").to_owned(),
    };
    let body = html! {
        main {
            p.crumbs { a href="/w" { (lang.t("workflows")) } }
            h1 { (title) }
            @if let Some(done) = done { p.notice role="status" { (lang.t("done")) ": " (done) } }
            @if let Some(workflow) = &workflow {
                form.toggle method="post" action={ "/w/" (name_of(workflow)) "/" (if workflow.enabled { "disable" } else { "enable" }) } {
                    (if workflow.enabled { lang.t("enabled") } else { lang.t("disabled") }) " "
                    @if workflow.enabled { button.secondary type="submit" { (lang.t("disable")) } }
                    @else { button type="submit" { (lang.t("enable")) } }
                }
            }
            @if let Some(error) = error { p.error-summary role="alert" { (lang.t("workflow_invalid")) " " (error.message) } }
            section.card {
                h2 { (lang.t("steps")) }
                @if let Some(parsed) = &parsed {
                    @if let Some(trigger_problems) = problems.get("") {
                        div.trigger.invalid { @for problem in trigger_problems { p.field-error role="alert" { (problem) } } }
                    }
                    (outline(lang, &parsed["steps"], "/steps", &problems))
                }
            }
            form.record.workflow method="post" action=(action) novalidate {
                div.field.invalid[error.is_some()] data-field="definition" {
                    label for="f-definition" { (lang.t("definition")) " (JSON)" }
                    textarea.code id="f-definition" name="definition" rows="24" spellcheck="false" { (text) }
                    small.hint { (lang.t("definition_hint")) }
                }
                div.actions {
                    button type="submit" { (lang.t("save")) }
                    a href="/w" { (lang.t("cancel")) }
                }
            }
            @if workflow.is_some() {
                section.card {
                    h2 { (lang.t("runs")) }
                    @if runs.is_empty() { p.empty { (lang.t("no_runs")) } }
                    @else {
                        div.table-wrap {
                            table.records.runs {
                                thead { tr {
                                    th scope="col" { (lang.t("when")) }
                                    th scope="col" { (lang.t("status")) }
                                    th scope="col" { (lang.t("record")) }
                                    th scope="col" { (lang.t("error_column")) }
                                } }
                                tbody {
                                    @for run in &runs {
                                        tr.failed[run.status == "failed"] data-status=(run.status) {
                                            td data-label=(lang.t("when")) { a href={ "/w/" (run.workflow) "/runs/" (run.id) } { (when(run.created_at)) } }
                                            td data-label=(lang.t("status")) { span.tag { (run.status) } }
                                            td data-label=(lang.t("record")) {
                                                @match (&run.entity, &run.record_id) {
                                                    (Some(entity), Some(record)) => a href={ "/r/" (entity) "/" (record) } { (entity) },
                                                    _ => (lang.t("none")),
                                                }
                                            }
                                            td data-label=(lang.t("error_column")) { @if let Some(error) = &run.error { span.field-error { (error) } } }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(document(lang, &title, Some(&chrome), body))
}

pub async fn new_form(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
) -> Response {
    let lang = Lang::of(&headers);
    let text = serde_json::to_string_pretty(&template()).unwrap_or_default();
    respond(
        lang,
        editor_page(&state, &principal, lang, None, &text, None, None).await,
    )
}

pub async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(done): Query<Done>,
) -> Response {
    let lang = Lang::of(&headers);
    let text = match state.workflows.get(&principal.tenant, &name).await {
        Ok(workflow) if principal.is_admin() => {
            serde_json::to_string_pretty(&editable(&workflow)).unwrap_or_default()
        }
        Ok(_) => String::new(),
        Err(error) => return error_page(lang, ApiError::from(error)),
    };
    let page = editor_page(
        &state,
        &principal,
        lang,
        Some(&name),
        &text,
        None,
        done.done.as_deref(),
    )
    .await;
    respond(lang, page)
}

#[derive(Debug, Deserialize)]
pub struct DefinitionForm {
    definition: String,
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    Form(form): Form<DefinitionForm>,
) -> Response {
    save(state, principal, None, headers, form.definition).await
}

pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    headers: HeaderMap,
    Form(form): Form<DefinitionForm>,
) -> Response {
    save(state, principal, Some(name), headers, form.definition).await
}

async fn save(
    state: AppState,
    principal: Principal,
    name: Option<String>,
    headers: HeaderMap,
    text: String,
) -> Response {
    let lang = Lang::of(&headers);
    if let Err(error) = admin_only(&principal, PAGES) {
        return error_page(lang, error);
    }
    let saved = match serde_json::from_str::<Value>(&text) {
        Err(error) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!(
                "the definition is not JSON: {error} (line {}, column {})",
                error.line(),
                error.column()
            ),
        )),
        Ok(json) => match &name {
            Some(name) => state.workflows.update(&principal, name, &json).await,
            None => state.workflows.create(&principal, &json).await,
        }
        .map_err(ApiError::from),
    };
    match saved {
        Ok(workflow) => {
            let saved_name = name_of(&workflow).to_owned();
            let action = if name.is_some() {
                "workflow.update"
            } else {
                "workflow.create"
            };
            audited_redirect(
                &state,
                &principal,
                action,
                &saved_name,
                json!({"version": workflow.version}),
                &format!("/w/{saved_name}?done=saved"),
            )
            .await
        }
        Err(error) if error.status == StatusCode::NOT_FOUND => error_page(lang, error),
        Err(error) => {
            let page = editor_page(
                &state,
                &principal,
                lang,
                name.as_deref(),
                &text,
                Some(&error),
                None,
            )
            .await;
            let status = refused_status(&error);
            (status, respond(lang, page)).into_response()
        }
    }
}

pub async fn enable(
    state: State<AppState>,
    principal: Principal,
    name: Path<String>,
    headers: HeaderMap,
) -> Response {
    set_enabled(state, principal, name, headers, true).await
}

pub async fn disable(
    state: State<AppState>,
    principal: Principal,
    name: Path<String>,
    headers: HeaderMap,
) -> Response {
    set_enabled(state, principal, name, headers, false).await
}

async fn set_enabled(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    headers: HeaderMap,
    enabled: bool,
) -> Response {
    let lang = Lang::of(&headers);
    match state
        .workflows
        .set_enabled(&principal, &name, enabled)
        .await
    {
        Ok(_) => {
            let verb = if enabled { "enable" } else { "disable" };
            audited_redirect(
                &state,
                &principal,
                &format!("workflow.{verb}"),
                &name,
                json!({}),
                &format!("/w/{name}?done={verb}d"),
            )
            .await
        }
        Err(error) => error_page(lang, ApiError::from(error)),
    }
}

fn json_block(value: &Value) -> Markup {
    html! {
        @if !value.is_null() { pre { (serde_json::to_string_pretty(value).unwrap_or_default()) } }
    }
}

pub async fn run(
    State(state): State<AppState>,
    principal: Principal,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
    Query(done): Query<Done>,
) -> Response {
    let lang = Lang::of(&headers);
    let result = async {
        admin_only(&principal, PAGES)?;
        let chrome = Chrome::load(lang, &state, &principal, "").await?;
        let run = state.workflows.run_for(&principal, &name, &id).await?;
        let title = format!("{} · {name}", lang.t("run"));
        let body = html! {
            main {
                p.crumbs { a href="/w" { (lang.t("workflows")) } " · " a href={ "/w/" (name) } { (name) } }
                h1 { (title) " " small { (run.id) } }
                @if let Some(done) = &done.done { p.notice role="status" { (lang.t("done")) ": " (done) } }
                section.card {
                    dl.fields {
                        dt { (lang.t("status")) } dd { span.tag data-status=(run.status) { (run.status) } }
                        dt { (lang.t("trigger")) } dd { (run.event) }
                        @if let (Some(entity), Some(record)) = (&run.entity, &run.record_id) {
                            dt { (lang.t("record")) } dd { a href={ "/r/" (entity) "/" (record) } { (entity) " " (record) } }
                        }
                        dt { (lang.t("when")) } dd { (when(run.created_at)) }
                        @if let Some(error) = &run.error { dt { (lang.t("error_column")) } dd { span.field-error { (error) } } }
                    }
                    @if run.status == "failed" && run.next_step.is_some() {
                        form method="post" action={ "/w/" (name) "/runs/" (run.id) "/retry" } {
                            button type="submit" { (lang.t("retry")) }
                        }
                    }
                }
                section.card {
                    h2 { (lang.t("steps")) }
                    div.table-wrap {
                        table.records.run-steps {
                            thead { tr {
                                th scope="col" { "#" }
                                th scope="col" { (lang.t("step")) }
                                th scope="col" { (lang.t("status")) }
                                th scope="col" { (lang.t("input")) }
                                th scope="col" { (lang.t("output")) }
                                th scope="col" { (lang.t("error_column")) }
                                th scope="col" { "ms" }
                            } }
                            tbody {
                                @for step in run.steps.iter().flatten() {
                                    tr.failed[step.status == "failed"] data-step=(step.step) data-status=(step.status) {
                                        td data-label="#" { (step.seq) }
                                        td data-label=(lang.t("step")) { code { (step.step) } " " span.kind { (step.step_type) } }
                                        td data-label=(lang.t("status")) { span.tag { (step.status) } @if step.attempts > 1 { " ×" (step.attempts) } }
                                        td data-label=(lang.t("input")) { (json_block(&step.input)) }
                                        td data-label=(lang.t("output")) { (json_block(&step.output)) }
                                        td data-label=(lang.t("error_column")) { @if let Some(error) = &step.error { span.field-error { (error) } } }
                                        td data-label="ms" { (step.duration_ms.map(|ms| format!("{ms:.1}")).unwrap_or_default()) }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        };
        Ok::<_, ApiError>(document(lang, &title, Some(&chrome), body))
    }
    .await;
    respond(lang, result)
}

pub async fn retry(
    State(state): State<AppState>,
    principal: Principal,
    Path((name, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let lang = Lang::of(&headers);
    match state.workflows.retry(&principal, &name, &id).await {
        Ok(_) => {
            audited_redirect(
                &state,
                &principal,
                "workflow.retry",
                &name,
                json!({"run": id}),
                &format!("/w/{name}/runs/{id}?done=retried"),
            )
            .await
        }
        Err(error) => error_page(lang, ApiError::from(error)),
    }
}

/// The approvals waiting for the user (an administrator: all of the tenant's), then the last
/// ones decided.
pub async fn approvals(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    Query(done): Query<Done>,
) -> Response {
    let lang = Lang::of(&headers);
    let result = async {
        let chrome = Chrome::load(lang, &state, &principal, "").await?;
        let (pending, _) =
            crate::api::workflows::approvals_of(&state, &principal, Some("pending"), None, 100)
                .await?;
        let (recent, _) =
            crate::api::workflows::approvals_of(&state, &principal, None, None, 20).await?;
        let decided: Vec<&Value> = recent
            .iter()
            .filter(|approval| approval["status"] != "pending")
            .collect();
        let body = html! {
            main {
                h1 { (lang.t("approvals")) }
                @if let Some(done) = &done.done { p.notice role="status" { (lang.t("done")) ": " (done) } }
                @if pending.is_empty() { p.empty { (lang.t("no_approvals")) } }
                ul.approvals {
                    @for approval in &pending {
                        @let id = approval["id"].as_str().unwrap_or_default();
                        li.card data-approval=(id) {
                            p { strong { (approval["message"].as_str().unwrap_or_default()) } }
                            p.hint {
                                code { (approval["workflow"].as_str().unwrap_or_default()) } " · " (approval["created_at"].as_str().unwrap_or_default())
                                @if let (Some(entity), Some(record)) = (approval["entity"].as_str(), approval["record_id"].as_str()) {
                                    " · " a href={ "/r/" (entity) "/" (record) } { (entity) }
                                }
                            }
                            form.decide method="post" action={ "/a/" (id) } {
                                label { (lang.t("comment")) input name="comment" maxlength="2000"; }
                                div.actions {
                                    button type="submit" name="decision" value="approved" { (lang.t("approve")) }
                                    button.danger type="submit" name="decision" value="rejected" { (lang.t("reject")) }
                                }
                            }
                        }
                    }
                }
                @if !decided.is_empty() {
                    h2 { (lang.t("decided")) }
                    ul.decided {
                        @for approval in decided {
                            li data-approval=(approval["id"].as_str().unwrap_or_default()) {
                                span.tag { (approval["status"].as_str().unwrap_or_default()) } " "
                                (approval["message"].as_str().unwrap_or_default())
                                @if let Some(comment) = approval["comment"].as_str() { " — " em { (comment) } }
                            }
                        }
                    }
                }
            }
        };
        Ok::<_, ApiError>(document(lang, lang.t("approvals"), Some(&chrome), body))
    }
    .await;
    respond(lang, result)
}

#[derive(Debug, Deserialize)]
pub struct DecisionForm {
    decision: String,
    #[serde(default)]
    comment: String,
}

pub async fn decide(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    Form(form): Form<DecisionForm>,
) -> Response {
    let lang = Lang::of(&headers);
    let decision = match form.decision.as_str() {
        "approved" => "approved",
        "rejected" => "rejected",
        other => {
            return error_page(
                lang,
                ApiError::bad_request(format!(
                    "a decision is `approved` or `rejected`, not `{other}`"
                )),
            );
        }
    };
    let comment = Some(form.comment.trim().to_owned()).filter(|c| !c.is_empty());
    match crate::api::workflows::decide_approval(&state, &principal, &id, decision, comment).await {
        Ok(_) => {
            let verb = if decision == "approved" {
                "approve"
            } else {
                "reject"
            };
            audited_redirect(
                &state,
                &principal,
                &format!("approval.{verb}"),
                &id,
                json!({}),
                &format!("/a?done={decision}"),
            )
            .await
        }
        Err(error) => error_page(lang, error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn problems_belong_to_the_deepest_step_of_their_path() {
        assert_eq!(step_of("/steps/0/then/1/values/x"), "/steps/0/then/1");
        assert_eq!(step_of("/steps/2/id"), "/steps/2");
        assert_eq!(step_of("/trigger/entity"), "");
        assert_eq!(step_of("/steps/1/else/0"), "/steps/1/else/0");
        let error = ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", "invalid")
            .with_fields(json!({
                "/steps/0/then/1/values/x": ["no field `x`"],
                "/trigger/entity": ["entity `nope` does not exist"],
            }));
        let found = problems_by_step(&error);
        assert_eq!(found["/steps/0/then/1"], ["/values/x: no field `x`"]);
        assert_eq!(found[""], ["/trigger/entity: entity `nope` does not exist"]);
    }
}
