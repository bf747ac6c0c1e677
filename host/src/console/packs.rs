//! Packs for administrators: the gallery of the packs this server offers and the tenant's, one
//! pack with what it brings and the capabilities its plugins request, and install, upgrade and
//! remove — each shown first as its dry run (what it adds, changes, converts and removes), made
//! only when the admin confirms, and written to the audit trail.

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::json;

use super::i18n::Lang;
use super::{Chrome, Done, admin_only, audited_redirect, document, error_page, problems, respond};
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::auth::Principal;
use crate::packs::{PackError, Report, Source};

/// What these pages are, in a refusal.
const PAGES: &str = "installing and removing packs";

fn status_label(lang: Lang, status: &str) -> &'static str {
    match status {
        "installed" => lang.t("pack_installed"),
        "removed" => lang.t("pack_removed"),
        _ => lang.t("pack_available"),
    }
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
        let packs = state.packs.list(&principal).await?;
        let body = html! {
            main {
                h1 { (lang.t("packs")) }
                ul.gallery {
                    @for pack in &packs {
                        li.card data-pack=(pack.id) data-status=(pack.status) {
                            h2 { a href={ "/k/" (pack.id) } { (pack.label.as_deref().unwrap_or(&pack.id)) } }
                            p { span.tag { (status_label(lang, pack.status)) } " "
                                @if let Some(version) = &pack.installed_version { (lang.t("version")) " " (version) }
                                @else if let Some(version) = &pack.available_version { (lang.t("version")) " " (version) }
                            }
                            p.hint { (pack.description) }
                            @if !pack.depends.is_empty() {
                                p.hint { (lang.t("depends_on")) ": "
                                    @for (id, range) in &pack.depends { code { (id) " " (range) } " " }
                                }
                            }
                        }
                    }
                }
            }
        };
        Ok::<_, ApiError>(document(lang, lang.t("packs"), Some(&chrome), body))
    }
    .await;
    respond(lang, result)
}

pub async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    Query(done): Query<Done>,
) -> Response {
    let lang = Lang::of(&headers);
    let result = async {
        admin_only(&principal, PAGES)?;
        let chrome = Chrome::load(lang, &state, &principal, "").await?;
        let pack = state.packs.show(&principal, &id).await?;
        let summary = &pack.summary;
        let upgradable = summary.status == "installed"
            && summary.available_version.is_some()
            && summary.available_version != summary.installed_version;
        let list = |items: &[String]| {
            html! {
                @if items.is_empty() { span.empty { (lang.t("none")) } }
                @else { @for item in items { code { (item) } " " } }
            }
        };
        let body = html! {
            main {
                p.crumbs { a href="/k" { (lang.t("packs")) } }
                h1 { (summary.label.as_deref().unwrap_or(&summary.id)) " "
                    small { (status_label(lang, summary.status)) " "
                        (summary.installed_version.as_deref().or(summary.available_version.as_deref()).unwrap_or_default()) } }
                @if let Some(done) = &done.done { p.notice role="status" { (lang.t("done")) ": " (done) } }
                p { (summary.description) }
                section.card {
                    dl.fields {
                        dt { (lang.t("entity_types")) } dd { (list(&pack.entities)) }
                        dt { (lang.t("extends")) } dd {
                            @if pack.extends.is_empty() { span.empty { (lang.t("none")) } }
                            @for (entity, fields) in &pack.extends { code { (entity) } ": " (fields.join(", ")) br; }
                        }
                        dt { (lang.t("workflows")) } dd { (list(&pack.workflows)) }
                        dt { (lang.t("views")) } dd { (list(&pack.views)) }
                        dt { (lang.t("roles")) } dd { (list(&pack.roles)) }
                        dt { (lang.t("plugins")) } dd {
                            @if pack.plugins.is_empty() { span.empty { (lang.t("none")) } }
                            ul.capabilities {
                                @for plugin in &pack.plugins {
                                    li data-plugin=(plugin.crate_name) {
                                        strong { (plugin.crate_name) } " " (plugin.version) ": "
                                        @if plugin.capabilities.is_empty() { (lang.t("none")) }
                                        @else { (plugin.capabilities.join(", ")) }
                                    }
                                }
                            }
                        }
                    }
                }
                section.card.actions-card {
                    @match summary.status {
                        "installed" => {
                            @if upgradable {
                                form method="post" action={ "/k/" (summary.id) "/upgrade" } {
                                    button type="submit" { (lang.t("preview_upgrade")) " → " (summary.available_version.as_deref().unwrap_or_default()) }
                                }
                            }
                            form method="post" action={ "/k/" (summary.id) "/remove" } {
                                label { input type="checkbox" name="purge" value="true"; " " (lang.t("purge_pack")) }
                                button.danger type="submit" { (lang.t("preview_remove")) }
                            }
                        },
                        _ => {
                            form method="post" action={ "/k/" (summary.id) "/install" } {
                                label { input type="checkbox" name="sample" value="true"; " " (lang.t("with_sample")) }
                                button type="submit" { (lang.t("preview_install")) }
                            }
                        },
                    }
                }
            }
        };
        Ok::<_, ApiError>(document(lang, &summary.id, Some(&chrome), body))
    }
    .await;
    respond(lang, result)
}

/// What an install, upgrade or removal does (or did), pack by pack.
fn report(lang: Lang, report: &Report) -> Markup {
    html! {
        @for pack in &report.packs {
            section.card.report data-pack=(pack.id) {
                h2 { (pack.id) " "
                    small { (pack.from_version.as_deref().unwrap_or("—")) " → " (pack.to_version.as_deref().unwrap_or("—")) } }
                @if !pack.entities.is_empty() {
                    h3 { (lang.t("entity_types")) }
                    ul {
                        @for entity in &pack.entities {
                            li data-entity=(entity.entity) data-change=(entity.change) {
                                code { (entity.entity) } " " span.tag { (entity.change) }
                                @if !entity.fields_added.is_empty() { " + " (entity.fields_added.join(", ")) }
                                @if !entity.fields_removed.is_empty() { " − " (entity.fields_removed.join(", ")) }
                                @for check in &entity.conversions {
                                    br; (lang.t("conversion")) " " code { (check.field) } ": " (check.records_with_value) " " (lang.t("records_with_value"))
                                    @if check.failures > 0 { ", " strong { (check.failures) } " " (lang.t("would_not_convert_count")) }
                                }
                                @if !entity.references_deactivated.is_empty() {
                                    br; (lang.t("references_deactivated")) ": " (entity.references_deactivated.join(", "))
                                }
                            }
                        }
                    }
                }
                @if !pack.plugins.is_empty() {
                    h3 { (lang.t("plugins")) }
                    ul {
                        @for plugin in &pack.plugins {
                            li data-plugin=(plugin.id) data-change=(plugin.change) {
                                code { (plugin.id) } " " span.tag { (plugin.change) } " "
                                (plugin.from_version.as_deref().unwrap_or("")) @if plugin.from_version.is_some() && plugin.to_version.is_some() { " → " } (plugin.to_version.as_deref().unwrap_or(""))
                                @if !plugin.capabilities_added.is_empty() {
                                    br; strong { (lang.t("capabilities_added")) } ": " (plugin.capabilities_added.join(", "))
                                }
                                @if !plugin.capabilities_removed.is_empty() {
                                    br; (lang.t("capabilities_removed")) ": " (plugin.capabilities_removed.join(", "))
                                }
                            }
                        }
                    }
                }
                @for (title, items) in [(lang.t("workflows"), &pack.workflows), (lang.t("views"), &pack.views), (lang.t("roles"), &pack.roles)] {
                    @if !items.is_empty() {
                        h3 { (title) }
                        p { @for item in items { code { (item.name) } " " span.tag { (item.change) } " " } }
                    }
                }
                @if pack.sample_records > 0 { p { (lang.t("sample_records")) ": " (pack.sample_records) } }
                @if pack.migrated_records > 0 { p { (lang.t("migrated_records")) ": " (pack.migrated_records) } }
            }
        }
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct OperationForm {
    #[serde(default)]
    sample: Option<String>,
    #[serde(default)]
    purge: Option<String>,
    #[serde(default, rename = "_confirm")]
    confirm: Option<String>,
}

pub async fn install(
    state: State<AppState>,
    principal: Principal,
    id: Path<String>,
    headers: HeaderMap,
    Form(form): Form<OperationForm>,
) -> Response {
    operate(state, principal, id, headers, form, "install").await
}

pub async fn upgrade(
    state: State<AppState>,
    principal: Principal,
    id: Path<String>,
    headers: HeaderMap,
    Form(form): Form<OperationForm>,
) -> Response {
    operate(state, principal, id, headers, form, "upgrade").await
}

pub async fn remove(
    state: State<AppState>,
    principal: Principal,
    id: Path<String>,
    headers: HeaderMap,
    Form(form): Form<OperationForm>,
) -> Response {
    operate(state, principal, id, headers, form, "remove").await
}

/// An install, upgrade or removal: its dry run with a confirmation form, or, confirmed, the
/// operation itself.
async fn operate(
    State(state): State<AppState>,
    principal: Principal,
    Path(id): Path<String>,
    headers: HeaderMap,
    form: OperationForm,
    action: &'static str,
) -> Response {
    let lang = Lang::of(&headers);
    let sample = form.sample.as_deref() == Some("true");
    let purge = form.purge.as_deref() == Some("true");
    let dry_run = form.confirm.is_none();
    let packs = &state.packs;
    let result: Result<Report, PackError> = match action {
        "install" => {
            packs
                .install(&principal, &Source::Bundled(id.clone()), sample, dry_run)
                .await
        }
        "upgrade" => {
            packs
                .upgrade(&principal, &id, &Source::Bundled(id.clone()), dry_run)
                .await
        }
        _ => packs.remove(&principal, &id, purge, dry_run).await,
    };
    let done = match result {
        Ok(done) => done,
        Err(error) => return refused(&state, &principal, lang, &id, action, error).await,
    };
    if !dry_run {
        return audited_redirect(
            &state,
            &principal,
            &format!("pack.{action}"),
            &id,
            json!({"sample": sample, "purge": purge}),
            &format!("/k/{id}?done={action}"),
        )
        .await;
    }
    let page = async {
        let chrome = Chrome::load(lang, &state, &principal, "").await?;
        let title = format!("{} · {id}", lang.t(action));
        let body = html! {
            main {
                p.crumbs { a href="/k" { (lang.t("packs")) } " · " a href={ "/k/" (id) } { (id) } }
                h1 { (title) }
                p.notice role="status" { (lang.t("dry_run_notice")) }
                (report(lang, &done))
                form.confirm method="post" action={ "/k/" (id) "/" (action) } {
                    @if sample { input type="hidden" name="sample" value="true"; }
                    @if purge { input type="hidden" name="purge" value="true"; }
                    input type="hidden" name="_confirm" value="1";
                    div.actions {
                        button.danger[action == "remove"] type="submit" { (lang.t("confirm")) }
                        a href={ "/k/" (id) } { (lang.t("cancel")) }
                    }
                }
            }
        };
        Ok::<_, ApiError>(document(lang, &title, Some(&chrome), body))
    }
    .await;
    respond(lang, page)
}

/// A refused operation: its problems, each with where it was found.
async fn refused(
    state: &AppState,
    principal: &Principal,
    lang: Lang,
    id: &str,
    action: &'static str,
    error: PackError,
) -> Response {
    let error = ApiError::from(error);
    if matches!(error.status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND) {
        return error_page(lang, error);
    }
    let chrome = match Chrome::load(lang, state, principal, "").await {
        Ok(chrome) => chrome,
        Err(error) => return error_page(lang, error),
    };
    let title = format!("{} · {id}", lang.t(action));
    let body = html! {
        main {
            p.crumbs { a href="/k" { (lang.t("packs")) } " · " a href={ "/k/" (id) } { (id) } }
            h1 { (title) }
            p.error-summary role="alert" { (error.message) }
            (problems(&error))
            p { a href={ "/k/" (id) } { (lang.t("back")) } }
        }
    };
    let status = if error.status.is_server_error() {
        error.status
    } else {
        StatusCode::CONFLICT
    };
    (status, document(lang, &title, Some(&chrome), body)).into_response()
}
