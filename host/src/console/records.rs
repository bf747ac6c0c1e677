//! Record pages generated from metadata: a list (columns, filter, sort, search, pages), a
//! detail view (fields, related lists, the 360 timeline, history) and create/edit forms with an
//! input suited to each field type, showing the server's field errors next to the fields.

use std::collections::BTreeMap;

use axum::Json;
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::i18n::Lang;
use super::{Chrome, document, encode, error_page, respond};
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::auth::{FieldAccess, Grant, Principal, Scope};
use crate::metadata::definition::{EntityDefinition, FieldDefinition, FieldType, translated};
use crate::records::access::Sight;
use crate::records::{BatchUpdate, Deleted, ListParams, RecordView, Shape};

/// Rows on a list page.
pub const PAGE_ROWS: i64 = 50;
/// Columns a list shows at most.
const LIST_COLUMNS: usize = 6;
/// Records per related list on a detail page.
const RELATED_ROWS: i64 = 10;

/// An entity's label: its plural label for navigation and lists, else its label, else its name.
/// In the user's language when the definition has a translation (`labels`, `plural_labels`).
pub fn entity_label(lang: Lang, definition: &EntityDefinition, plural: bool) -> String {
    let name = definition.name.as_str();
    let tag = lang.tag();
    let singular = translated(&definition.labels, tag)
        .map(str::to_owned)
        .or_else(|| definition.label.clone())
        .unwrap_or_else(|| humanize(name));
    if plural {
        translated(&definition.plural_labels, tag)
            .map(str::to_owned)
            .or_else(|| definition.plural_label.clone())
            .unwrap_or(singular)
    } else {
        singular
    }
}

/// In the user's language when the field has a translation (`labels`).
pub fn field_label(lang: Lang, field: &FieldDefinition) -> String {
    translated(&field.labels, lang.tag())
        .map(str::to_owned)
        .or_else(|| field.label.clone())
        .unwrap_or_else(|| humanize(field.name.as_str()))
}

/// `annual_value` → `Annual value`.
fn humanize(name: &str) -> String {
    let mut text = name.replace('_', " ");
    if let Some(first) = text.get(0..1) {
        let upper = first.to_uppercase();
        text.replace_range(0..1, &upper);
    }
    text
}

/// What a record is called on a page: its name, title or subject, a person's names, else its
/// first text field, else its id.
pub fn display_name(definition: &EntityDefinition, id: &str, data: &Map<String, Value>) -> String {
    let text = |name: &str| {
        data.get(name)
            .and_then(Value::as_str)
            .filter(|text| !text.is_empty())
    };
    for name in ["name", "title", "subject", "number", "code"] {
        if let Some(found) = text(name) {
            return found.to_owned();
        }
    }
    let person: Vec<&str> = ["first_name", "last_name"]
        .into_iter()
        .filter_map(text)
        .collect();
    if !person.is_empty() {
        return person.join(" ");
    }
    definition
        .active_fields()
        .filter(|field| field.value_type() == FieldType::Text)
        .find_map(|field| text(field.name.as_str()))
        .map(str::to_owned)
        .unwrap_or_else(|| id.to_owned())
}

/// The fields a list shows: the first readable ones, leaving out long texts and JSON.
fn list_columns(definition: &EntityDefinition) -> Vec<&FieldDefinition> {
    definition
        .active_fields()
        .filter(|field| !matches!(field.value_type(), FieldType::LongText | FieldType::Json))
        .take(LIST_COLUMNS)
        .collect()
}

fn references(fields: &[&FieldDefinition]) -> Option<String> {
    let names: Vec<&str> = fields
        .iter()
        .filter(|field| field.value_type() == FieldType::Reference && !field.multiple)
        .map(|field| field.name.as_str())
        .collect();
    (!names.is_empty()).then(|| names.join(","))
}

fn data_of(record: &RecordView) -> Map<String, Value> {
    serde_json::from_str(record.data.get()).unwrap_or_default()
}

/// The compiled entity and how the principal sees it; a page error when it cannot.
async fn sight_of(
    state: &AppState,
    principal: &Principal,
    entity: &str,
) -> Result<
    (
        std::sync::Arc<crate::metadata::CompiledEntity>,
        EntityDefinition,
        Grant,
    ),
    ApiError,
> {
    let mut conn = state.store.reader().await?;
    let mut scoped = conn.scoped(&principal.tenant);
    let compiled = state.metadata.compiled(&mut scoped, entity).await?;
    let sight = Sight::of(principal, &compiled);
    if sight.grant.read == Scope::None {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("your roles do not let you read `{entity}` records"),
        ));
    }
    let definition = sight.definition.into_owned();
    let grant = sight.grant;
    Ok((compiled, definition, grant))
}

/// A value as a page shows it.
fn show_value(
    lang: Lang,
    field: &FieldDefinition,
    value: Option<&Value>,
    expanded: Option<&Option<RecordView>>,
    targets: &BTreeMap<String, EntityDefinition>,
) -> Markup {
    let Some(value) = value.filter(|value| !value.is_null()) else {
        return html! { span.empty { (lang.t("none")) } };
    };
    match field.value_type() {
        FieldType::Boolean => {
            html! { (if value.as_bool() == Some(true) { lang.t("yes") } else { lang.t("no") }) }
        }
        FieldType::Picklist => {
            let label = |code: &Value| {
                let code = code.as_str().unwrap_or_default();
                field
                    .options
                    .iter()
                    .flatten()
                    .find(|option| option.value() == code)
                    .and_then(|option| match option {
                        crate::metadata::definition::PicklistOption::Labelled { label, .. } => {
                            label.clone()
                        }
                        _ => None,
                    })
                    .unwrap_or_else(|| code.to_owned())
            };
            match value {
                Value::Array(items) => {
                    html! { @for item in items { span.tag { (label(item)) } " " } }
                }
                other => {
                    html! { span.tag data-value=(other.as_str().unwrap_or_default()) { (label(other)) } }
                }
            }
        }
        FieldType::Currency => {
            let amount = value
                .get("amount")
                .map(Value::to_string)
                .unwrap_or_default();
            let currency = value
                .get("currency")
                .and_then(Value::as_str)
                .unwrap_or_default();
            html! { (amount) " " (currency) }
        }
        FieldType::Reference => {
            let target = field
                .entity
                .as_ref()
                .map(|e| e.as_str())
                .unwrap_or_default();
            let ids: Vec<&str> = match value {
                Value::Array(items) => items.iter().filter_map(Value::as_str).collect(),
                other => other.as_str().into_iter().collect(),
            };
            html! {
                @for id in ids {
                    @let name = expanded
                        .and_then(|found| found.as_ref())
                        .filter(|found| found.id == id)
                        .and_then(|found| targets.get(target).map(|definition| display_name(definition, id, &data_of(found))))
                        .unwrap_or_else(|| id.to_owned());
                    a href={ "/r/" (target) "/" (id) } { (name) } " "
                }
            }
        }
        FieldType::Url => {
            let text = value.as_str().unwrap_or_default();
            let safe = text.starts_with("https://") || text.starts_with("http://");
            html! { @if safe { a href=(text) rel="noopener noreferrer" { (text) } } @else { (text) } }
        }
        FieldType::Email => {
            let text = value.as_str().unwrap_or_default();
            html! { a href={ "mailto:" (text) } { (text) } }
        }
        FieldType::Json => {
            html! { pre { (serde_json::to_string_pretty(value).unwrap_or_default()) } }
        }
        _ => match value {
            Value::String(text) => html! { (text) },
            other => html! { (other.to_string()) },
        },
    }
}

/// The definitions of the entities `definition`'s reference fields point at (for display names).
async fn targets_of(
    state: &AppState,
    principal: &Principal,
    definition: &EntityDefinition,
) -> BTreeMap<String, EntityDefinition> {
    let mut targets = BTreeMap::new();
    let Ok(mut conn) = state.store.reader().await else {
        return targets;
    };
    let mut scoped = conn.scoped(&principal.tenant);
    for field in definition.active_fields() {
        if let Some(target) = field.entity.as_ref()
            && !targets.contains_key(target.as_str())
            && let Ok(compiled) = state.metadata.compiled(&mut scoped, target.as_str()).await
        {
            targets.insert(
                target.as_str().to_owned(),
                Sight::of(principal, &compiled).definition.into_owned(),
            );
        }
    }
    targets
}

#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    q: Option<String>,
    filter: Option<String>,
    sort: Option<String>,
    cursor: Option<String>,
    /// The simple filter row: field, operator, value.
    ff: Option<String>,
    fo: Option<String>,
    fv: Option<String>,
}

impl ListQuery {
    /// The filter expression of the list: the simple row and the typed expression, both.
    fn filter(&self, definition: &EntityDefinition) -> Option<String> {
        let mut parts = Vec::new();
        if let (Some(field), Some(op)) = (
            self.ff.as_deref().filter(|f| !f.is_empty()),
            self.fo.as_deref(),
        ) {
            let value = self.fv.clone().unwrap_or_default();
            let numeric = definition.field(field).is_some_and(|field| {
                matches!(
                    field.value_type(),
                    FieldType::Integer | FieldType::Decimal | FieldType::Currency
                )
            }) && value.parse::<f64>().is_ok();
            let literal = if numeric {
                value.clone()
            } else {
                format!("'{}'", value.replace('\'', "''"))
            };
            let op = match op {
                "eq" | "ne" | "gt" | "lt" | "contains" => Some(op),
                "null" => None,
                _ => Some("eq"),
            };
            parts.push(match op {
                Some(op) => format!("{field} {op} {literal}"),
                None => format!("{field} is null"),
            });
        }
        if let Some(filter) = self
            .filter
            .as_deref()
            .map(str::trim)
            .filter(|f| !f.is_empty())
        {
            parts.push(format!("({filter})"));
        }
        (!parts.is_empty()).then(|| parts.join(" and "))
    }

    /// This list's address with `changes` applied (`None` drops a parameter).
    fn link(&self, entity: &str, changes: &[(&str, Option<&str>)]) -> String {
        let mut params: Vec<(&str, Option<&str>)> = vec![
            ("q", self.q.as_deref()),
            ("filter", self.filter.as_deref()),
            ("sort", self.sort.as_deref()),
            ("ff", self.ff.as_deref()),
            ("fo", self.fo.as_deref()),
            ("fv", self.fv.as_deref()),
            ("cursor", None),
        ];
        for (name, value) in changes {
            if let Some(entry) = params.iter_mut().find(|(n, _)| n == name) {
                entry.1 = *value;
            }
        }
        let query: Vec<String> = params
            .into_iter()
            .filter_map(|(name, value)| {
                value
                    .filter(|v| !v.is_empty())
                    .map(|v| format!("{name}={}", encode(v)))
            })
            .collect();
        if query.is_empty() {
            format!("/r/{entity}")
        } else {
            format!("/r/{entity}?{}", query.join("&"))
        }
    }
}

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    Path(entity): Path<String>,
    headers: HeaderMap,
    Query(query): Query<ListQuery>,
) -> Response {
    let lang = Lang::of(&headers);
    respond(
        lang,
        list_page(&state, &principal, &entity, lang, &query).await,
    )
}

/// The list page (public for the benchmark of its rendering).
pub async fn list_page(
    state: &AppState,
    principal: &Principal,
    entity: &str,
    lang: Lang,
    query: &ListQuery,
) -> Result<Markup, ApiError> {
    let (_, definition, grant) = sight_of(state, principal, entity).await?;
    let chrome = Chrome::load(lang, state, principal, entity).await?;
    let columns = list_columns(&definition);
    let params = ListParams {
        filter: query.filter(&definition),
        sort: query.sort.clone(),
        limit: Some(PAGE_ROWS),
        cursor: query.cursor.clone(),
        q: query.q.clone().filter(|q| !q.trim().is_empty()),
        deleted: Deleted::Exclude,
        shape: Shape {
            fields: None,
            expand: references(&columns),
        },
    };
    let (page, problem) = match state.records.list(principal, entity, &params).await {
        Ok(page) => (Some(page), None),
        Err(error) => {
            let error = ApiError::from(error);
            if error.status == StatusCode::BAD_REQUEST {
                (None, Some(error.message))
            } else {
                return Err(error);
            }
        }
    };
    let targets = targets_of(state, principal, &definition).await;
    let title = entity_label(lang, &definition, true);
    let sorted = query.sort.as_deref().unwrap_or_default();
    let body = html! {
        main {
            div.heading {
                h1 { (title) }
                @if grant.create {
                    a.button href={ "/r/" (entity) "/new" } { (lang.t("new")) }
                }
            }
            form.filters method="get" action={ "/r/" (entity) } {
                input type="search" name="q" value=[query.q.as_deref()] placeholder=(lang.t("search")) aria-label=(lang.t("search"));
                select name="ff" aria-label=(lang.t("any_field")) {
                    option value="" { (lang.t("any_field")) }
                    @for field in definition.active_fields() {
                        option value=(field.name.as_str()) selected[query.ff.as_deref() == Some(field.name.as_str())] { (field_label(lang, field)) }
                    }
                }
                select name="fo" aria-label=(lang.t("filter")) {
                    @for (op, word) in [("eq", "equals"), ("ne", "not_equals"), ("contains", "contains"), ("gt", "greater"), ("lt", "less"), ("null", "is_empty")] {
                        option value=(op) selected[query.fo.as_deref() == Some(op)] { (lang.t(word)) }
                    }
                }
                input name="fv" value=[query.fv.as_deref()] aria-label=(lang.t("filter"));
                @if let Some(sort) = query.sort.as_deref() { input type="hidden" name="sort" value=(sort); }
                details.advanced open[query.filter.as_deref().is_some_and(|f| !f.is_empty())] {
                    summary { (lang.t("filter")) }
                    input.wide name="filter" value=[query.filter.as_deref()] placeholder="stage eq 'customer' and annual_value gt 1000";
                }
                button type="submit" { (lang.t("apply")) }
                a href={ "/r/" (entity) } { (lang.t("clear")) }
            }
            @if let Some(problem) = &problem {
                p.error-summary role="alert" { (problem) }
            }
            @if let Some(page) = &page {
                @if page.data.is_empty() {
                    p.empty { (lang.t("no_records")) }
                } @else {
                    div.table-wrap {
                        table.records {
                            thead { tr {
                                @for field in &columns {
                                    @let name = field.name.as_str();
                                    @let next = if sorted == name { format!("-{name}") } else { name.to_owned() };
                                    th scope="col" aria-sort=[(sorted == name).then_some("ascending").or((sorted.strip_prefix('-') == Some(name)).then_some("descending"))] {
                                        a href=(query.link(entity, &[("sort", Some(&next))])) { (field_label(lang, field)) }
                                    }
                                }
                            } }
                            tbody {
                                @for record in &page.data {
                                    @let data = data_of(record);
                                    tr {
                                        @for (index, field) in columns.iter().enumerate() {
                                            @let value = show_value(lang, field, data.get(field.name.as_str()), record.expanded.as_ref().and_then(|e| e.get(field.name.as_str())), &targets);
                                            td data-label=(field_label(lang, field)) {
                                                @if index == 0 {
                                                    a href={ "/r/" (entity) "/" (record.id) } { (value) }
                                                } @else { (value) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                nav.pages {
                    @if query.cursor.is_some() { a href=(query.link(entity, &[])) { (lang.t("first_page")) } }
                    @if let Some(cursor) = &page.next_cursor {
                        a rel="next" href={ (query.link(entity, &[])) (if query.link(entity, &[]).contains('?') { "&" } else { "?" }) "cursor=" (encode(cursor)) } { (lang.t("next_page")) }
                    }
                }
            }
        }
    };
    Ok(document(lang, &title, Some(&chrome), body))
}

pub async fn detail(
    State(state): State<AppState>,
    principal: Principal,
    Path((entity, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let lang = Lang::of(&headers);
    respond(
        lang,
        detail_page(&state, &principal, &entity, &id, lang, None).await,
    )
}

async fn detail_page(
    state: &AppState,
    principal: &Principal,
    entity: &str,
    id: &str,
    lang: Lang,
    notice: Option<&str>,
) -> Result<Markup, ApiError> {
    let (_, definition, grant) = sight_of(state, principal, entity).await?;
    let fields: Vec<&FieldDefinition> = definition.active_fields().collect();
    let shape = Shape {
        fields: None,
        expand: references(&fields),
    };
    let record = state
        .records
        .get(principal, entity, id, &shape, false)
        .await?;
    let data = data_of(&record);
    let chrome = Chrome::load(lang, state, principal, entity).await?;
    let targets = targets_of(state, principal, &definition).await;
    let name = display_name(&definition, &record.id, &data);
    let related = related_lists(lang, state, principal, entity, id).await;
    let timeline = state
        .records
        .timeline(principal, entity, id, Some(20), None)
        .await
        .ok();
    let history = state.records.history(principal, entity, id).await.ok();
    let views = super::views::views_for(state, principal, entity).await;
    let writable = principal.covers(grant.update, &record.owner);
    let body = html! {
        main {
            p.crumbs { a href={ "/r/" (entity) } { (entity_label(lang, &definition, true)) } }
            div.heading {
                h1 { (name) }
                @if writable { a.button href={ "/r/" (entity) "/" (record.id) "/edit" } { (lang.t("edit")) } }
            }
            @if let Some(notice) = notice { p.notice role="status" { (notice) } }
            @if !views.is_empty() {
                nav.views {
                    @for (name, label, param) in &views {
                        a.button href={ "/v/" (name) "?" (param) "=" (super::encode(&record.id)) } { (label) }
                    }
                }
            }
            section.card {
                h2 { (lang.t("details")) }
                dl.fields {
                    @for field in &fields {
                        dt { (field_label(lang, field)) }
                        dd data-field=(field.name.as_str()) { (show_value(lang, field, data.get(field.name.as_str()), record.expanded.as_ref().and_then(|e| e.get(field.name.as_str())), &targets)) }
                    }
                    dt { (lang.t("updated")) } dd { (record.updated_at.date().to_string()) }
                    dt { (lang.t("version")) } dd { (record.version) }
                }
            }
            @for (label, source, rows) in &related {
                section.card.related {
                    h2 { (label) }
                    ul { @for (rid, rname) in rows { li { a href={ "/r/" (source) "/" (rid) } { (rname) } } } }
                }
            }
            @if let Some(timeline) = &timeline {
                section.card {
                    h2 { (lang.t("timeline")) }
                    ol.timeline {
                        @for item in timeline["data"].as_array().into_iter().flatten() {
                            li {
                                time { (item["at"].as_str().unwrap_or_default().get(..16).unwrap_or_default().replace('T', " ")) }
                                " "
                                @if item["kind"] == "record" {
                                    @let source = item["entity"].as_str().unwrap_or_default();
                                    @let rid = item["record"]["id"].as_str().unwrap_or_default();
                                    span.kind { (source) } " "
                                    a href={ "/r/" (source) "/" (rid) } { (timeline_name(&item["record"])) }
                                } @else {
                                    span.kind { (lang.t("history")) } " "
                                    (item["history"]["operation"].as_str().unwrap_or_default()) " "
                                    (changed_fields(&item["history"]))
                                }
                            }
                        }
                    }
                }
            }
            @if let Some(history) = &history {
                section.card {
                    h2 { (lang.t("history")) }
                    ol.history {
                        @for entry in history["data"].as_array().into_iter().flatten() {
                            li {
                                "v" (entry["version"].to_string()) " · " (entry["operation"].as_str().unwrap_or_default()) " · "
                                (entry["changed_at"].as_str().unwrap_or_default().get(..16).unwrap_or_default().replace('T', " "))
                                " · " (changed_fields(entry))
                            }
                        }
                    }
                }
            }
        }
    };
    Ok(document(lang, &name, Some(&chrome), body))
}

fn timeline_name(record: &Value) -> String {
    let data = record["data"].as_object().cloned().unwrap_or_default();
    for name in ["name", "title", "subject", "number", "first_name"] {
        if let Some(text) = data.get(name).and_then(Value::as_str) {
            return text.to_owned();
        }
    }
    record["id"].as_str().unwrap_or_default().to_owned()
}

fn changed_fields(entry: &Value) -> String {
    entry["changes"]
        .as_object()
        .map(|changes| changes.keys().cloned().collect::<Vec<_>>().join(", "))
        .unwrap_or_default()
}

/// For every readable entity with a reference field to `entity`: its latest records that point
/// at this one.
async fn related_lists(
    lang: Lang,
    state: &AppState,
    principal: &Principal,
    entity: &str,
    id: &str,
) -> Vec<(String, String, Vec<(String, String)>)> {
    let mut lists = Vec::new();
    let Ok(mut conn) = state.store.reader().await else {
        return lists;
    };
    let mut scoped = conn.scoped(&principal.tenant);
    let Ok(all) = state.metadata.all_current(&mut scoped).await else {
        return lists;
    };
    drop(conn);
    for compiled in all.iter() {
        let sight = Sight::of(principal, compiled);
        if sight.grant.read == Scope::None {
            continue;
        }
        for field in sight.definition.active_fields() {
            if field.value_type() != FieldType::Reference
                || field.entity.as_ref().map(|e| e.as_str()) != Some(entity)
            {
                continue;
            }
            let params = ListParams {
                limit: Some(RELATED_ROWS),
                sort: Some("-_created_at".to_owned()),
                ..Default::default()
            };
            let source = compiled.definition.name.as_str();
            if let Ok(page) = state
                .records
                .related(
                    principal,
                    entity,
                    id,
                    source,
                    Some(field.name.as_str()),
                    &params,
                )
                .await
                && !page.data.is_empty()
            {
                let rows = page
                    .data
                    .iter()
                    .map(|record| {
                        (
                            record.id.clone(),
                            display_name(&sight.definition, &record.id, &data_of(record)),
                        )
                    })
                    .collect();
                let label = format!(
                    "{} ({})",
                    entity_label(lang, &sight.definition, true),
                    field_label(lang, field)
                );
                lists.push((label, source.to_owned(), rows));
            }
        }
    }
    lists
}

/// What a form shows: each field's typed text and its errors.
#[derive(Debug, Default)]
struct FormState {
    values: BTreeMap<String, Vec<String>>,
    errors: BTreeMap<String, Vec<String>>,
    summary: Option<String>,
    version: Option<i64>,
}

impl FormState {
    fn from_record(definition: &EntityDefinition, data: &Map<String, Value>, version: i64) -> Self {
        let mut values = BTreeMap::new();
        for field in definition.active_fields() {
            let name = field.name.as_str();
            let Some(value) = data.get(name).filter(|v| !v.is_null()) else {
                continue;
            };
            let texts = match (field.value_type(), value) {
                (FieldType::Currency, value) => {
                    values.insert(
                        format!("{name}.currency"),
                        vec![value["currency"].as_str().unwrap_or_default().to_owned()],
                    );
                    vec![
                        value
                            .get("amount")
                            .map(Value::to_string)
                            .unwrap_or_default(),
                    ]
                }
                (FieldType::Json, value) => {
                    vec![serde_json::to_string_pretty(value).unwrap_or_default()]
                }
                (_, Value::Array(items)) => items.iter().map(text_of).collect(),
                (FieldType::Datetime, Value::String(text)) => {
                    vec![text.get(..16).unwrap_or(text).to_owned()]
                }
                (_, value) => vec![text_of(value)],
            };
            values.insert(name.to_owned(), texts);
        }
        Self {
            values,
            version: Some(version),
            ..Default::default()
        }
    }

    fn first(&self, name: &str) -> &str {
        self.values
            .get(name)
            .and_then(|texts| texts.last())
            .map(String::as_str)
            .unwrap_or_default()
    }
}

fn text_of(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// The fields a user can type into: active, not computed, and writable for them.
fn editable<'a>(definition: &'a EntityDefinition, grant: &Grant) -> Vec<&'a FieldDefinition> {
    definition
        .active_fields()
        .filter(|field| {
            !field.is_read_only() && grant.field(field.name.as_str()) == FieldAccess::Write
        })
        .collect()
}

/// The JSON body of a submitted form: each field's text read as its type. A text that is not
/// of the type goes as typed, so that the server's error names the field and the text stays.
fn body_of(
    fields: &[&FieldDefinition],
    form: &BTreeMap<String, Vec<String>>,
    creating: bool,
) -> Value {
    let mut body = Map::new();
    for field in fields {
        let name = field.name.as_str();
        let texts: Vec<&str> = form
            .get(name)
            .map(|texts| texts.iter().map(String::as_str).collect())
            .unwrap_or_default();
        let last = texts.last().copied().unwrap_or_default().trim();
        let value = match field.value_type() {
            FieldType::Boolean => Value::Bool(last == "true"),
            FieldType::Picklist if field.multiple => Value::Array(
                texts
                    .iter()
                    .filter(|t| !t.is_empty())
                    .map(|t| json!(t))
                    .collect(),
            ),
            FieldType::Reference if field.multiple => Value::Array(
                last.split(',')
                    .map(str::trim)
                    .filter(|t| !t.is_empty())
                    .map(|t| json!(t))
                    .collect(),
            ),
            _ if last.is_empty() => Value::Null,
            FieldType::Integer => last
                .parse::<i64>()
                .map(Value::from)
                .unwrap_or_else(|_| json!(last)),
            FieldType::Decimal => serde_json::from_str::<serde_json::Number>(last)
                .map(Value::Number)
                .unwrap_or_else(|_| json!(last)),
            FieldType::Currency => {
                let amount = serde_json::from_str::<serde_json::Number>(last)
                    .map(Value::Number)
                    .unwrap_or_else(|_| json!(last));
                let currency = form
                    .get(&format!("{name}.currency"))
                    .and_then(|texts| texts.last())
                    .map(|text| text.trim().to_uppercase())
                    .unwrap_or_default();
                json!({"amount": amount, "currency": currency})
            }
            FieldType::Datetime if last.len() == 16 => json!(format!("{last}:00Z")),
            FieldType::Json => serde_json::from_str(last).unwrap_or_else(|_| json!(last)),
            _ => json!(last),
        };
        let empty = value.is_null() || value.as_array().is_some_and(Vec::is_empty);
        if creating && empty {
            continue;
        }
        body.insert(name.to_owned(), value);
    }
    Value::Object(body)
}

fn gather(pairs: Vec<(String, String)>) -> (BTreeMap<String, Vec<String>>, Option<i64>) {
    let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut version = None;
    for (name, value) in pairs {
        if name == "_version" {
            version = value.parse().ok();
            continue;
        }
        values.entry(name).or_default().push(value);
    }
    (values, version)
}

/// One field's input, its label, its hint and its errors.
fn input(lang: Lang, field: &FieldDefinition, form: &FormState) -> Markup {
    let name = field.name.as_str();
    let id = format!("f-{name}");
    let errors = form.errors.get(name);
    let invalid = errors.is_some_and(|e| !e.is_empty());
    let described = format!("{id}-error");
    let value = form.first(name);
    let control = match field.value_type() {
        FieldType::LongText => html! {
            textarea id=(id) name=(name) rows="4" required[field.required] aria-invalid=[invalid.then_some("true")] aria-describedby=[invalid.then_some(&described)] { (value) }
        },
        FieldType::Json => html! {
            textarea.code id=(id) name=(name) rows="4" aria-invalid=[invalid.then_some("true")] aria-describedby=[invalid.then_some(&described)] { (value) }
        },
        FieldType::Boolean => html! {
            input type="hidden" name=(name) value="false";
            input type="checkbox" id=(id) name=(name) value="true" checked[value == "true"] aria-invalid=[invalid.then_some("true")];
        },
        FieldType::Picklist => {
            let chosen: Vec<&str> = form
                .values
                .get(name)
                .map(|v| v.iter().map(String::as_str).collect())
                .unwrap_or_default();
            html! {
                select id=(id) name=(name) multiple[field.multiple] required[field.required && !field.multiple] aria-invalid=[invalid.then_some("true")] aria-describedby=[invalid.then_some(&described)] {
                    @if !field.multiple { option value="" { (lang.t("none")) } }
                    @for option in field.options.iter().flatten() {
                        @let label = match option {
                            crate::metadata::definition::PicklistOption::Labelled { label: Some(label), .. } => label.clone(),
                            other => other.value().to_owned(),
                        };
                        option value=(option.value()) selected[chosen.contains(&option.value())] { (label) }
                    }
                }
            }
        }
        FieldType::Currency => html! {
            span.currency {
                input id=(id) name=(name) type="number" step="any" value=(value) required[field.required] aria-invalid=[invalid.then_some("true")] aria-describedby=[invalid.then_some(&described)];
                input name={ (name) ".currency" } value=(form.first(&format!("{name}.currency"))) maxlength="3" size="3" placeholder="EUR" aria-label="currency";
            }
        },
        FieldType::Reference => {
            let target = field
                .entity
                .as_ref()
                .map(|e| e.as_str())
                .unwrap_or_default();
            html! {
                input id=(id) name=(name) value=(value) data-reference=(target) list={ (id) "-options" } autocomplete="off" placeholder=(lang.t("search_reference")) required[field.required] aria-invalid=[invalid.then_some("true")] aria-describedby=[invalid.then_some(&described)];
                datalist id={ (id) "-options" } {}
            }
        }
        other => {
            let kind = match other {
                FieldType::Integer => "number",
                FieldType::Decimal => "number",
                FieldType::Email => "email",
                FieldType::Phone => "tel",
                FieldType::Url => "url",
                FieldType::Date => "date",
                FieldType::Datetime => "datetime-local",
                _ => "text",
            };
            let step = match other {
                FieldType::Integer => Some("1"),
                FieldType::Decimal => Some("any"),
                _ => None,
            };
            html! {
                input id=(id) name=(name) type=(kind) step=[step] value=(value) required[field.required] maxlength=[field.max_length.filter(|_| kind == "text")] aria-invalid=[invalid.then_some("true")] aria-describedby=[invalid.then_some(&described)];
            }
        }
    };
    html! {
        div.field.invalid[invalid] data-field=(name) {
            label for=(id) { (field_label(lang, field)) @if field.required { span.required aria-hidden="true" { " *" } } }
            (control)
            @if let Some(description) = &field.description { small.hint { (description) } }
            @if let Some(errors) = errors {
                @for error in errors { p.field-error id=(described) role="alert" { (error) } }
            }
        }
    }
}

/// Where a form posts, where its cancel link goes, and its title.
struct Target {
    action: String,
    cancel: String,
    title: String,
}

impl Target {
    /// The new-record form of `entity`, or the edit form of its record `id`.
    fn of(entity: &str, id: Option<&str>, title: String) -> Self {
        match id {
            Some(id) => Self {
                action: format!("/r/{entity}/{id}/edit"),
                cancel: format!("/r/{entity}/{id}"),
                title,
            },
            None => Self {
                action: format!("/r/{entity}/new"),
                cancel: format!("/r/{entity}"),
                title,
            },
        }
    }
}

fn form_page(
    lang: Lang,
    chrome: &Chrome,
    definition: &EntityDefinition,
    fields: &[&FieldDefinition],
    target: &Target,
    form: &FormState,
) -> Markup {
    let Target {
        action,
        cancel,
        title,
    } = target;
    let body = html! {
        main {
            p.crumbs { a href={ "/r/" (definition.name.as_str()) } { (entity_label(lang, definition, true)) } }
            h1 { (title) }
            @if let Some(summary) = &form.summary { p.error-summary role="alert" { (summary) } }
            form.record method="post" action=(action) novalidate {
                @if let Some(version) = form.version { input type="hidden" name="_version" value=(version); }
                @for field in fields { (input(lang, field, form)) }
                div.actions {
                    button type="submit" { (lang.t("save")) }
                    a href=(cancel) { (lang.t("cancel")) }
                }
            }
        }
    };
    document(lang, title, Some(chrome), body)
}

pub async fn new_form(
    State(state): State<AppState>,
    principal: Principal,
    Path(entity): Path<String>,
    headers: HeaderMap,
) -> Response {
    let lang = Lang::of(&headers);
    let result = async {
        let (_, definition, grant) = sight_of(&state, &principal, &entity).await?;
        let chrome = Chrome::load(lang, &state, &principal, &entity).await?;
        let fields = editable(&definition, &grant);
        let title = format!(
            "{} · {}",
            lang.t("new"),
            entity_label(lang, &definition, false)
        );
        let target = Target::of(&entity, None, title);
        Ok::<_, ApiError>(form_page(
            lang,
            &chrome,
            &definition,
            &fields,
            &target,
            &FormState::default(),
        ))
    }
    .await;
    respond(lang, result)
}

pub async fn create(
    State(state): State<AppState>,
    principal: Principal,
    Path(entity): Path<String>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let lang = Lang::of(&headers);
    let (definition, grant) = match sight_of(&state, &principal, &entity).await {
        Ok((_, definition, grant)) => (definition, grant),
        Err(error) => return error_page(lang, error),
    };
    let fields = editable(&definition, &grant);
    let (values, _) = gather(pairs);
    let body = body_of(&fields, &values, true);
    match state.records.create(&principal, &entity, body, None).await {
        Ok(response) => {
            let id = serde_json::from_str::<Value>(&response.body)
                .ok()
                .and_then(|body| body["id"].as_str().map(str::to_owned))
                .unwrap_or_default();
            Redirect::to(&format!("/r/{entity}/{id}")).into_response()
        }
        Err(error) => {
            let error = ApiError::from(error);
            refill(
                &state,
                &principal,
                lang,
                &entity,
                &definition,
                &fields,
                values,
                None,
                error,
            )
            .await
        }
    }
}

/// The form again after the server refused it: what was typed, the server's errors at their
/// fields, and its message on top.
#[allow(clippy::too_many_arguments)]
async fn refill(
    state: &AppState,
    principal: &Principal,
    lang: Lang,
    entity: &str,
    definition: &EntityDefinition,
    fields: &[&FieldDefinition],
    values: BTreeMap<String, Vec<String>>,
    version: Option<(String, i64)>,
    error: ApiError,
) -> Response {
    let chrome = match Chrome::load(lang, state, principal, entity).await {
        Ok(chrome) => chrome,
        Err(error) => return error_page(lang, error),
    };
    let mut errors: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(Value::Object(fields)) = &error.fields {
        for (name, messages) in fields {
            let messages = match messages {
                Value::Array(items) => items.iter().map(text_of).collect(),
                other => vec![text_of(other)],
            };
            errors.insert(name.clone(), messages);
        }
    }
    let on_form = |name: &str| fields.iter().any(|field| field.name.as_str() == name);
    let elsewhere: Vec<String> = errors
        .iter()
        .filter(|(name, _)| !on_form(name))
        .map(|(name, messages)| format!("{name}: {}", messages.join("; ")))
        .collect();
    let summary = if error.status == StatusCode::PRECONDITION_FAILED {
        lang.t("stale").to_owned()
    } else if errors.is_empty() || !elsewhere.is_empty() {
        let mut text = error.message.clone();
        if !elsewhere.is_empty() {
            text = format!("{text} ({})", elsewhere.join(", "));
        }
        text
    } else {
        lang.t("fix_errors").to_owned()
    };
    let form = FormState {
        values,
        errors,
        summary: Some(summary),
        version: version.as_ref().map(|(_, v)| *v),
    };
    let verb = if version.is_some() { "edit" } else { "new" };
    let target = Target::of(
        entity,
        version.as_ref().map(|(id, _)| id.as_str()),
        format!(
            "{} · {}",
            lang.t(verb),
            entity_label(lang, definition, false)
        ),
    );
    let status = super::refused_status(&error);
    (
        status,
        form_page(lang, &chrome, definition, fields, &target, &form),
    )
        .into_response()
}

pub async fn edit_form(
    State(state): State<AppState>,
    principal: Principal,
    Path((entity, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let lang = Lang::of(&headers);
    let result = async {
        let (_, definition, grant) = sight_of(&state, &principal, &entity).await?;
        let record = state
            .records
            .get(&principal, &entity, &id, &Shape::default(), false)
            .await?;
        let chrome = Chrome::load(lang, &state, &principal, &entity).await?;
        let fields = editable(&definition, &grant);
        let data = data_of(&record);
        let form = FormState::from_record(&definition, &data, record.version);
        let title = format!(
            "{} · {}",
            lang.t("edit"),
            display_name(&definition, &id, &data)
        );
        let target = Target::of(&entity, Some(&id), title);
        Ok::<_, ApiError>(form_page(
            lang,
            &chrome,
            &definition,
            &fields,
            &target,
            &form,
        ))
    }
    .await;
    respond(lang, result)
}

pub async fn update(
    State(state): State<AppState>,
    principal: Principal,
    Path((entity, id)): Path<(String, String)>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let lang = Lang::of(&headers);
    let (definition, grant) = match sight_of(&state, &principal, &entity).await {
        Ok((_, definition, grant)) => (definition, grant),
        Err(error) => return error_page(lang, error),
    };
    let fields = editable(&definition, &grant);
    let (values, version) = gather(pairs);
    let data = body_of(&fields, &values, false);
    let update = BatchUpdate {
        id: id.clone(),
        version,
        data,
    };
    match state.records.update(&principal, &entity, update).await {
        Ok(_) => Redirect::to(&format!("/r/{entity}/{id}")).into_response(),
        Err(error) => {
            let error = ApiError::from(error);
            let version = version.unwrap_or_default();
            refill(
                &state,
                &principal,
                lang,
                &entity,
                &definition,
                &fields,
                values,
                Some((id, version)),
                error,
            )
            .await
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct OptionsQuery {
    q: Option<String>,
}

/// Records of an entity matching a search, as `{id, name}` pairs for a reference input.
pub async fn options(
    State(state): State<AppState>,
    principal: Principal,
    Path(entity): Path<String>,
    Query(query): Query<OptionsQuery>,
) -> Result<Json<Value>, ApiError> {
    let (_, definition, _) = sight_of(&state, &principal, &entity).await?;
    let params = ListParams {
        q: query.q.filter(|q| !q.trim().is_empty()),
        limit: Some(20),
        ..Default::default()
    };
    let page = state.records.list(&principal, &entity, &params).await?;
    let options: Vec<Value> = page
        .data
        .iter()
        .map(|record| json!({"id": record.id, "name": display_name(&definition, &record.id, &data_of(record))}))
        .collect();
    Ok(Json(json!({ "data": options })))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn definition() -> EntityDefinition {
        serde_json::from_value(json!({"name": "deal", "fields": [
            {"name": "title", "type": "text", "required": true},
            {"name": "amount", "type": "currency"},
            {"name": "seats", "type": "integer"},
            {"name": "tags", "type": "picklist", "options": ["a", "b"], "multiple": true},
            {"name": "active", "type": "boolean"},
            {"name": "closes_at", "type": "datetime"}]}))
        .unwrap()
    }

    #[test]
    fn a_form_becomes_a_typed_body_and_a_wrong_text_stays_as_typed() {
        let definition = definition();
        let fields: Vec<&FieldDefinition> = definition.active_fields().collect();
        let (form, _) = gather(vec![
            ("title".into(), "Big deal".into()),
            ("amount".into(), "1200.50".into()),
            ("amount.currency".into(), "eur".into()),
            ("seats".into(), "twelve".into()),
            ("tags".into(), "a".into()),
            ("tags".into(), "b".into()),
            ("active".into(), "false".into()),
            ("active".into(), "true".into()),
            ("closes_at".into(), "2026-12-05T10:30".into()),
        ]);
        let body = body_of(&fields, &form, true);
        assert_eq!(
            body,
            json!({"title": "Big deal", "amount": {"amount": 1200.50, "currency": "EUR"},
                   "seats": "twelve", "tags": ["a", "b"], "active": true,
                   "closes_at": "2026-12-05T10:30:00Z"})
        );
        // An update clears what was emptied; a create leaves it out.
        let (form, _) = gather(vec![
            ("title".into(), "".into()),
            ("active".into(), "false".into()),
        ]);
        assert_eq!(body_of(&fields, &form, false)["title"], Value::Null);
        assert!(body_of(&fields, &form, true).get("title").is_none());
    }

    #[test]
    fn the_simple_filter_row_quotes_its_value() {
        let definition = definition();
        let query = ListQuery {
            ff: Some("title".into()),
            fo: Some("contains".into()),
            fv: Some("O'Neil".into()),
            filter: Some("seats gt 3".into()),
            ..Default::default()
        };
        assert_eq!(
            query.filter(&definition).unwrap(),
            "title contains 'O''Neil' and (seats gt 3)"
        );
        let numeric = ListQuery {
            ff: Some("seats".into()),
            fo: Some("gt".into()),
            fv: Some("3".into()),
            ..Default::default()
        };
        assert_eq!(numeric.filter(&definition).unwrap(), "seats gt 3");
    }

    #[test]
    fn records_are_named_by_their_name_title_or_person() {
        let definition = definition();
        let data = json!({"first_name": "Ada", "last_name": "Lovelace"});
        assert_eq!(
            display_name(&definition, "x", data.as_object().unwrap()),
            "Ada Lovelace"
        );
        let data = json!({"title": "Big deal"});
        assert_eq!(
            display_name(&definition, "x", data.as_object().unwrap()),
            "Big deal"
        );
        assert_eq!(display_name(&definition, "x", &Map::new()), "x");
    }
}
