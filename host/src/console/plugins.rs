//! Plugin pages for administrators: the tenant's plugins with their versions and the
//! capabilities they request, and one plugin's configuration, limits and runs — failures first
//! if asked, each with its error.

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::Value;

use super::i18n::Lang;
use super::{Chrome, document, respond};
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
    let result = async {
        let chrome = Chrome::load(&state, &principal, "").await?;
        let plugins = state.plugins.list(&principal).await.map_err(ApiError::from)?;
        let body = html! {
            main {
                h1 { (lang.t("plugins")) }
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
        Ok::<_, ApiError>(document(lang, lang.t("plugins"), Some(&chrome), body))
    }
    .await;
    respond(lang, result)
}

/// `2026-12-05 02:57:29` (UTC).
fn when(at: time::OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .map(|text| text.get(..19).unwrap_or(&text).replace('T', " "))
        .unwrap_or_default()
}

#[derive(Debug, Default, Deserialize)]
pub struct RunsQuery {
    failures: Option<String>,
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
    let result = async {
        let chrome = Chrome::load(&state, &principal, "").await?;
        let plugin = state.plugins.show(&principal, &id).await.map_err(ApiError::from)?;
        let runs = state
            .plugins
            .runs(&principal, &id, failures, RUNS)
            .await
            .map_err(ApiError::from)?;
        let provides = serde_json::to_string_pretty(&plugin.provides).unwrap_or_default();
        let limits = serde_json::to_value(plugin.limits).unwrap_or_default();
        let body = html! {
            main {
                p.crumbs { a href="/p" { (lang.t("plugins")) } }
                h1 { (plugin.id) " " small { (plugin.version) } }
                @if let Some(description) = &plugin.description { p { (description) } }
                section.card {
                    dl.fields {
                        dt { (lang.t("enabled")) } dd { (if plugin.enabled { lang.t("yes") } else { lang.t("no") }) }
                        dt { (lang.t("capabilities")) } dd { (capabilities(lang, &serde_json::to_value(&plugin.capabilities).unwrap_or_default())) }
                        dt { (lang.t("provides")) } dd { pre { (provides) } }
                        dt { (lang.t("limits")) } dd {
                            @for (name, value) in limits.as_object().into_iter().flatten() { span.tag { (name) " " (value.to_string()) } " " }
                        }
                        dt { (lang.t("configuration")) } dd { pre { (serde_json::to_string_pretty(&plugin.config).unwrap_or_default()) } }
                    }
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
        Ok::<_, ApiError>(document(lang, &plugin.id, Some(&chrome), body))
    }
    .await;
    respond(lang, result)
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
