//! The schema editor for administrators: entities and their fields of every type, picklist
//! options, references, indexes and labels, through the same metadata service as
//! `/api/v1/entities`. A change that touches data — a type change, a field's deactivation or
//! purge, an entity's deletion — first shows its dry run: what changes, how many records would
//! not convert (with samples), and what depends on the field (`crate::dependents`); it is made
//! only when the admin confirms. Every change is written to the audit trail, as the API's are.

use std::collections::BTreeMap;

use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::i18n::Lang;
use super::{
    Chrome, admin_only, audit, audited_redirect, document, error_page, refused_status, respond,
};
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::auth::Principal;
use crate::dependents::Dependent;
use crate::metadata::evolution::Change;
use crate::metadata::{Applied, FieldCheck, MetadataError};

/// What these pages are, in a refusal.
const PAGES: &str = "the schema editor";

/// The field types an admin can pick (a computed field names a plugin: it is defined in JSON).
const TYPES: &[&str] = &[
    "text",
    "long_text",
    "integer",
    "decimal",
    "currency",
    "boolean",
    "date",
    "datetime",
    "email",
    "phone",
    "url",
    "picklist",
    "reference",
    "json",
    "auto_number",
];

/// The settings of the field form, each with the types it applies to (empty: every type).
const SETTINGS: &[(&str, &[&str])] = &[
    ("max_length", &["text", "long_text"]),
    ("min", &["integer", "decimal", "currency"]),
    ("max", &["integer", "decimal", "currency"]),
    ("options", &["picklist"]),
    ("multiple", &["picklist"]),
    ("entity", &["reference"]),
    ("region", &["phone"]),
    ("prefix", &["auto_number"]),
    ("digits", &["auto_number"]),
    ("start", &["auto_number"]),
];

/// Keys only a computed field carries; they stay as they are while it stays computed.
const COMPUTED_KEYS: &[&str] = &["returns", "plugin", "function", "depends_on", "related"];

/// A submitted form: every name's values, in order.
#[derive(Debug, Default, Clone)]
pub(super) struct Posted(BTreeMap<String, Vec<String>>);

impl Posted {
    pub(super) fn of(pairs: Vec<(String, String)>) -> Self {
        let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in pairs {
            values.entry(name).or_default().push(value);
        }
        Self(values)
    }

    pub(super) fn get(&self, name: &str) -> &str {
        self.0
            .get(name)
            .and_then(|values| values.last())
            .map(String::as_str)
            .unwrap_or_default()
    }

    /// Every value of `name` (checkboxes of one name), empty ones left out.
    pub(super) fn all(&self, name: &str) -> Vec<String> {
        self.0
            .get(name)
            .into_iter()
            .flatten()
            .filter(|value| !value.trim().is_empty())
            .cloned()
            .collect()
    }

    pub(super) fn has(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    fn version(&self) -> Option<i64> {
        self.get("_version").parse().ok()
    }

    fn pairs(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0
            .iter()
            .filter(|(name, _)| name.as_str() != "_confirm")
            .flat_map(|(name, values)| values.iter().map(move |v| (name.as_str(), v.as_str())))
    }
}

/// Errors of a form, by input name, and what belongs to no input.
#[derive(Debug, Default)]
pub(super) struct Errors {
    pub(super) at: BTreeMap<String, Vec<String>>,
    pub(super) summary: Option<String>,
}

impl Errors {
    /// Places the server's problems (keyed by JSON path) at the inputs they name: `/label`, or
    /// `/fields/<index>/<key>` of the field being edited. A problem of the whole field that
    /// quotes a setting (`"options" is a required property`) goes to that setting.
    pub(super) fn of(
        lang: Lang,
        error: &ApiError,
        field_index: Option<usize>,
        inputs: &[&str],
    ) -> Self {
        let mut errors = Self::default();
        let mut elsewhere = Vec::new();
        // Values used more than once, for a field that is to become unique: at the checkbox.
        if error.code == "duplicate_values" && inputs.contains(&"unique") {
            for duplicates in error
                .fields
                .iter()
                .flat_map(Value::as_object)
                .flat_map(|f| f.values())
            {
                for duplicate in duplicates.as_array().into_iter().flatten() {
                    errors
                        .at
                        .entry("unique".to_owned())
                        .or_default()
                        .push(format!(
                            "`{}`: {} {}",
                            text(&duplicate["value"]),
                            duplicate["records"],
                            lang.t("records_share_value")
                        ));
                }
            }
            errors.summary = Some(error.message.clone());
            return errors;
        }
        let prefix = field_index.map(|index| format!("/fields/{index}"));
        for (path, messages) in error.fields.iter().flat_map(|f| f.as_object()).flatten() {
            let messages: Vec<String> = match messages {
                Value::Array(items) => items.iter().map(text).collect(),
                other => vec![text(other)],
            };
            let rest = match &prefix {
                Some(prefix) => path
                    .strip_prefix(prefix.as_str())
                    .filter(|rest| rest.is_empty() || rest.starts_with('/')),
                None => Some(path.as_str()),
            };
            let key = rest.and_then(|rest| {
                let key = rest.trim_start_matches('/').split('/').next()?;
                if inputs.contains(&key) {
                    return Some(key.to_owned());
                }
                // `"options" is a required property`: the setting that is missing.
                messages.iter().find_map(|message| {
                    inputs
                        .iter()
                        .find(|input| {
                            message.starts_with(&format!("\"{input}\" is a required property"))
                        })
                        .map(|input| (*input).to_owned())
                })
            });
            match key {
                Some(key) => errors.at.entry(key).or_default().extend(messages),
                None => elsewhere.push(format!("{path}: {}", messages.join("; "))),
            }
        }
        let mut summary = if error.status == StatusCode::PRECONDITION_FAILED {
            lang.t("schema_stale").to_owned()
        } else {
            error.message.clone()
        };
        if !elsewhere.is_empty() {
            summary = format!("{summary} ({})", elsewhere.join(", "));
        }
        errors.summary = Some(summary);
        errors
    }

    pub(super) fn field(&self, name: &str) -> Markup {
        html! {
            @for error in self.at.get(name).into_iter().flatten() {
                p.field-error id={ "f-" (name) "-error" } role="alert" { (error) }
            }
        }
    }

    pub(super) fn invalid(&self, name: &str) -> Option<&'static str> {
        self.at.contains_key(name).then_some("true")
    }
}

fn text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

fn str_of<'a>(object: &'a Value, key: &str) -> &'a str {
    object.get(key).and_then(Value::as_str).unwrap_or_default()
}

/// A labelled text input with its errors.
pub(super) fn text_input(
    label: &str,
    name: &str,
    kind: &str,
    value: &str,
    errors: &Errors,
    extra: Markup,
) -> Markup {
    let id = format!("f-{name}");
    html! {
        div.field.invalid[errors.invalid(name).is_some()] data-field=(name) {
            label for=(id) { (label) }
            input id=(id) name=(name) type=(kind) value=(value) aria-invalid=[errors.invalid(name)];
            (extra)
            (errors.field(name))
        }
    }
}

/// The languages a label can be translated into here (the console's, but English, which is
/// what `label` holds).
fn translation_langs() -> impl Iterator<Item = Lang> {
    Lang::ALL.into_iter().filter(|lang| *lang != Lang::En)
}

/// An input per language for the translations of `key` (`labels`, `plural_labels`) of
/// `object`, named `<key>.<tag>`; `typed` when the form comes back.
fn translation_inputs(
    word: &str,
    key: &str,
    object: &Value,
    typed: Option<&Posted>,
    errors: &Errors,
) -> Markup {
    html! {
        @for other in translation_langs() {
            @let name = format!("{key}.{}", other.tag());
            @let value = match typed {
                Some(typed) => typed.get(&name).to_owned(),
                None => str_of(&object[key], other.tag()).to_owned(),
            };
            (text_input(&format!("{word} ({})", other.name()), &name, "text", &value, errors, html! {}))
        }
    }
}

/// Sets the translations of `key` the form has inputs for; other languages stay.
fn set_translations(object: &mut Map<String, Value>, key: &str, posted: &Posted) {
    let mut map = object
        .get(key)
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let mut touched = false;
    for other in translation_langs() {
        let name = format!("{key}.{}", other.tag());
        if !posted.has(&name) {
            continue;
        }
        touched = true;
        match posted.get(&name).trim() {
            "" => map.remove(other.tag()),
            typed => map.insert(other.tag().to_owned(), json!(typed)),
        };
    }
    if !touched {
        return;
    }
    if map.is_empty() {
        object.remove(key);
    } else {
        object.insert(key.to_owned(), Value::Object(map));
    }
}

// ---------------------------------------------------------------------------------------------
// Entities

#[derive(Debug, Default, Deserialize)]
pub struct Notice {
    saved: Option<String>,
}

pub async fn entities(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
) -> Response {
    let lang = Lang::of(&headers);
    let page = entities_page(
        &state,
        &principal,
        lang,
        &Posted::default(),
        &Errors::default(),
    )
    .await;
    respond(lang, page)
}

async fn entities_page(
    state: &AppState,
    principal: &Principal,
    lang: Lang,
    typed: &Posted,
    errors: &Errors,
) -> Result<Markup, ApiError> {
    admin_only(principal, PAGES)?;
    let chrome = Chrome::load(lang, state, principal, "").await?;
    let entities = state.metadata.list(&principal.tenant).await?;
    let body = html! {
        main {
            h1 { (lang.t("schema")) }
            div.table-wrap {
                table.records.entities {
                    thead { tr {
                        th scope="col" { (lang.t("entity")) }
                        th scope="col" { (lang.t("label")) }
                        th scope="col" { (lang.t("fields")) }
                        th scope="col" { (lang.t("version")) }
                    } }
                    tbody {
                        @for entity in &entities {
                            @let name = str_of(&entity.definition, "name");
                            tr data-entity=(name) {
                                td data-label=(lang.t("entity")) { a href={ "/s/" (name) } { code { (name) } } }
                                td data-label=(lang.t("label")) { (str_of(&entity.definition, "label")) }
                                td data-label=(lang.t("fields")) { (entity.definition["fields"].as_array().map_or(0, Vec::len)) }
                                td data-label=(lang.t("version")) { (entity.version) }
                            }
                        }
                    }
                }
            }
            section.card {
                h2 { (lang.t("new_entity")) }
                @if let Some(summary) = &errors.summary { p.error-summary role="alert" { (summary) } }
                form.schema method="post" action="/s" novalidate {
                    (text_input(lang.t("api_name"), "name", "text", typed.get("name"), errors, html! { small.hint { (lang.t("api_name_hint")) } }))
                    (text_input(lang.t("label"), "label", "text", typed.get("label"), errors, html! {}))
                    (text_input(lang.t("plural_label"), "plural_label", "text", typed.get("plural_label"), errors, html! {}))
                    div.actions { button type="submit" { (lang.t("create_entity")) } }
                }
            }
        }
    };
    Ok(document(lang, lang.t("schema"), Some(&chrome), body))
}

/// Sets `key` to the typed text, or removes it when nothing was typed.
fn set_text(object: &mut Map<String, Value>, key: &str, typed: &str) {
    let typed = typed.trim();
    if typed.is_empty() {
        object.remove(key);
    } else {
        object.insert(key.to_owned(), json!(typed));
    }
}

pub async fn create_entity(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let lang = Lang::of(&headers);
    let posted = Posted::of(pairs);
    let mut definition = Map::new();
    definition.insert("name".into(), json!(posted.get("name").trim()));
    for key in ["label", "plural_label"] {
        set_text(&mut definition, key, posted.get(key));
    }
    definition.insert("fields".into(), json!([]));
    let result = match admin_only(&principal, PAGES) {
        Ok(()) => state
            .metadata
            .create(&principal, &Value::Object(definition))
            .await
            .map_err(ApiError::from),
        Err(error) => Err(error),
    };
    match result {
        Ok(entity) => {
            let name = str_of(&entity.definition, "name").to_owned();
            audited_redirect(
                &state,
                &principal,
                "entity.create",
                &name,
                json!({}),
                &format!("/s/{name}"),
            )
            .await
        }
        Err(error) if error.status == StatusCode::FORBIDDEN => error_page(lang, error),
        Err(error) => {
            let errors = Errors::of(lang, &error, None, &["name", "label", "plural_label"]);
            let page = entities_page(&state, &principal, lang, &posted, &errors).await;
            (refused_status(&error), respond(lang, page)).into_response()
        }
    }
}

/// An entity's definition as stored (without the version) and its version.
async fn definition_of(
    state: &AppState,
    principal: &Principal,
    entity: &str,
) -> Result<(Value, i64), ApiError> {
    let view = state.metadata.get(&principal.tenant, entity).await?;
    let mut definition = view.definition;
    if let Some(object) = definition.as_object_mut() {
        object.remove("version");
    }
    Ok((definition, view.version))
}

fn type_summary(field: &Value) -> String {
    let kind = str_of(field, "type");
    match kind {
        "reference" => format!("reference → {}", str_of(field, "entity")),
        "picklist" if field["multiple"] == json!(true) => "picklist (multiple)".to_owned(),
        "computed" => format!(
            "computed {} ({})",
            str_of(field, "returns"),
            str_of(field, "plugin")
        ),
        other => other.to_owned(),
    }
}

pub async fn entity(
    State(state): State<AppState>,
    principal: Principal,
    Path(entity): Path<String>,
    headers: HeaderMap,
    Query(notice): Query<Notice>,
) -> Response {
    let lang = Lang::of(&headers);
    let page = entity_page(
        &state,
        &principal,
        lang,
        &entity,
        None,
        &Errors::default(),
        notice.saved.as_deref(),
    )
    .await;
    respond(lang, page)
}

async fn entity_page(
    state: &AppState,
    principal: &Principal,
    lang: Lang,
    entity: &str,
    typed: Option<&Posted>,
    errors: &Errors,
    saved: Option<&str>,
) -> Result<Markup, ApiError> {
    admin_only(principal, PAGES)?;
    let chrome = Chrome::load(lang, state, principal, entity).await?;
    let (definition, version) = definition_of(state, principal, entity).await?;
    let value = |key: &str| match typed {
        Some(typed) => typed.get(key).to_owned(),
        None => str_of(&definition, key).to_owned(),
    };
    let fields = definition["fields"].as_array().cloned().unwrap_or_default();
    let title = format!("{} · {}", lang.t("schema"), entity);
    let body = html! {
        main {
            p.crumbs { a href="/s" { (lang.t("schema")) } " · " a href={ "/r/" (entity) } { (lang.t("open_records")) } }
            h1 { code { (entity) } " " small { (lang.t("version")) " " (version) } }
            @if let Some(saved) = saved { p.notice role="status" { (lang.t("saved")) " " code { (saved) } } }
            section.card {
                h2 { (lang.t("fields")) }
                div.table-wrap {
                    table.records.schema-fields {
                        thead { tr {
                            th scope="col" { (lang.t("api_name")) }
                            th scope="col" { (lang.t("label")) }
                            th scope="col" { (lang.t("type")) }
                            th scope="col" { (lang.t("settings")) }
                            th scope="col" {}
                        } }
                        tbody {
                            @for field in &fields {
                                @let name = str_of(field, "name");
                                @let active = field["active"] != json!(false);
                                tr.inactive[!active] data-field=(name) {
                                    td data-label=(lang.t("api_name")) { code { (name) } }
                                    td data-label=(lang.t("label")) { (str_of(field, "label")) }
                                    td data-label=(lang.t("type")) { (type_summary(field)) }
                                    td data-label=(lang.t("settings")) {
                                        @for flag in ["required", "unique", "indexed"] {
                                            @if field[flag] == json!(true) { span.tag { (lang.t(flag)) } " " }
                                        }
                                        @if !active { span.tag.warn { (lang.t("deactivated")) } }
                                    }
                                    td { div.row-actions {
                                        @if active {
                                            a href={ "/s/" (entity) "/fields/" (name) } { (lang.t("edit")) }
                                        } @else {
                                            form method="post" action={ "/s/" (entity) "/fields/" (name) "/reactivate" } {
                                                input type="hidden" name="_version" value=(version);
                                                button.secondary type="submit" { (lang.t("reactivate")) }
                                            }
                                            form method="post" action={ "/s/" (entity) "/fields/" (name) "/purge" } {
                                                input type="hidden" name="_version" value=(version);
                                                button.danger type="submit" { (lang.t("purge")) }
                                            }
                                        }
                                    } }
                                }
                            }
                        }
                    }
                }
                p { a.button href={ "/s/" (entity) "/fields/new" } { (lang.t("add_field")) } }
            }
            section.card {
                h2 { (lang.t("entity_settings")) }
                @if let Some(summary) = &errors.summary { p.error-summary role="alert" { (summary) } }
                form.schema method="post" action={ "/s/" (entity) } novalidate {
                    input type="hidden" name="_version" value=(version);
                    (text_input(lang.t("label"), "label", "text", &value("label"), errors, html! {}))
                    (translation_inputs(lang.t("label"), "labels", &definition, typed, errors))
                    (text_input(lang.t("plural_label"), "plural_label", "text", &value("plural_label"), errors, html! {}))
                    (translation_inputs(lang.t("plural_label"), "plural_labels", &definition, typed, errors))
                    div.field.invalid[errors.invalid("description").is_some()] data-field="description" {
                        label for="f-description" { (lang.t("description")) }
                        textarea id="f-description" name="description" rows="2" { (value("description")) }
                        (errors.field("description"))
                    }
                    div.actions { button type="submit" { (lang.t("save")) } }
                }
            }
            section.card.danger-zone {
                h2 { (lang.t("delete_entity")) }
                form method="post" action={ "/s/" (entity) "/delete" } {
                    label { input type="checkbox" name="force" value="true"; " " (lang.t("force_delete")) }
                    button.danger type="submit" { (lang.t("delete_entity")) }
                }
            }
        }
    };
    Ok(document(lang, &title, Some(&chrome), body))
}

pub async fn update_entity(
    State(state): State<AppState>,
    principal: Principal,
    Path(entity): Path<String>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let lang = Lang::of(&headers);
    let posted = Posted::of(pairs);
    let result = async {
        admin_only(&principal, PAGES)?;
        let (mut definition, version) = definition_of(&state, &principal, &entity).await?;
        let object = definition
            .as_object_mut()
            .expect("a definition is an object");
        for key in ["label", "plural_label", "description"] {
            set_text(object, key, posted.get(key));
        }
        set_translations(object, "labels", &posted);
        set_translations(object, "plural_labels", &posted);
        object.insert("version".into(), json!(posted.version().unwrap_or(version)));
        state
            .metadata
            .update(&principal, &entity, &definition, false)
            .await
            .map_err(ApiError::from)
    }
    .await;
    match result {
        Ok(applied) => {
            audited_redirect(
                &state,
                &principal,
                "entity.update",
                &entity,
                json!({"changes": applied.changes}),
                &format!("/s/{entity}?saved={entity}"),
            )
            .await
        }
        Err(error) if matches!(error.status, StatusCode::FORBIDDEN | StatusCode::NOT_FOUND) => {
            error_page(lang, error)
        }
        Err(error) => {
            let errors = Errors::of(
                lang,
                &error,
                None,
                &["label", "plural_label", "description"],
            );
            let page = entity_page(
                &state,
                &principal,
                lang,
                &entity,
                Some(&posted),
                &errors,
                None,
            );
            (refused_status(&error), respond(lang, page.await)).into_response()
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Fields

/// One option as a line of the form: `value`, or `value | label [| closed]`.
fn option_line(option: &Value) -> String {
    match option {
        Value::String(value) => value.clone(),
        object => {
            let mut line = str_of(object, "value").to_owned();
            let label = str_of(object, "label");
            let closed = object["closed"] == json!(true);
            if !label.is_empty() || closed {
                line.push_str(&format!(" | {label}"));
            }
            if closed {
                line.push_str(" | closed");
            }
            line
        }
    }
}

/// Options as the form shows them: one per line, `value | label | closed`.
fn options_text(field: &Value) -> String {
    field["options"]
        .as_array()
        .into_iter()
        .flatten()
        .map(option_line)
        .collect::<Vec<_>>()
        .join("\n")
}

/// The options of the form's text: a bare value, or `value | label [| closed]`. A line that
/// reads exactly as an existing option stays that option (a value may hold a `|`).
fn parse_options(text: &str, existing: &Value) -> Vec<Value> {
    let kept: Vec<(String, &Value)> = existing
        .as_array()
        .into_iter()
        .flatten()
        .map(|option| (option_line(option), option))
        .collect();
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(|line| {
            if let Some((_, option)) = kept.iter().find(|(shown, _)| shown == line) {
                return (*option).clone();
            }
            let parts: Vec<&str> = line.split('|').map(str::trim).collect();
            let closed = parts.get(2).is_some_and(|flag| *flag == "closed");
            let label = parts.get(1).copied().unwrap_or_default();
            if label.is_empty() && !closed {
                json!(parts[0])
            } else {
                let mut option = json!({"value": parts[0]});
                if !label.is_empty() {
                    option["label"] = json!(label);
                }
                if closed {
                    option["closed"] = json!(true);
                }
                option
            }
        })
        .collect()
}

/// A number typed into the form; a text that is no number goes as typed, so that the server's
/// error names the setting.
fn number(text: &str) -> Option<Value> {
    let text = text.trim();
    if text.is_empty() {
        return None;
    }
    Some(
        serde_json::from_str::<serde_json::Number>(text)
            .map(Value::Number)
            .unwrap_or_else(|_| json!(text)),
    )
}

/// The field's definition after the form: the existing one (when editing) with what the form
/// sets, and without the settings its type does not take.
fn field_json(existing: Option<&Value>, name: &str, posted: &Posted) -> Value {
    let mut field = existing
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let kind = posted.get("type").trim().to_owned();
    field.insert("name".into(), json!(name));
    field.insert("type".into(), json!(kind));
    for key in ["label", "description", "prefix", "entity"] {
        set_text(&mut field, key, posted.get(key));
    }
    set_translations(&mut field, "labels", posted);
    set_text(&mut field, "region", &posted.get("region").to_uppercase());
    for flag in ["required", "unique", "indexed", "multiple"] {
        if posted.get(flag) == "true" {
            field.insert(flag.into(), json!(true));
        } else {
            field.remove(flag);
        }
    }
    for key in ["max_length", "min", "max", "digits", "start"] {
        match number(posted.get(key)) {
            Some(value) => field.insert(key.into(), value),
            None => field.remove(key),
        };
    }
    let options = parse_options(
        posted.get("options"),
        &field.get("options").cloned().unwrap_or_default(),
    );
    if options.is_empty() {
        field.remove("options");
    } else {
        field.insert("options".into(), json!(options));
    }
    let computed = kind == "computed";
    let takes = |key: &str| match SETTINGS.iter().find(|(setting, _)| *setting == key) {
        Some((_, types)) => {
            types.contains(&kind.as_str())
                || computed
                    && matches!(key, "options" | "multiple")
                    && field.get("returns") == Some(&json!("picklist"))
        }
        None => computed || !COMPUTED_KEYS.contains(&key),
    };
    let drop: Vec<String> = field.keys().filter(|key| !takes(key)).cloned().collect();
    for key in drop {
        field.remove(&key);
    }
    Value::Object(field)
}

#[derive(Debug, Clone, Copy)]
enum FieldTarget<'a> {
    New,
    Existing(&'a str),
}

impl FieldTarget<'_> {
    fn action(self, entity: &str) -> String {
        match self {
            FieldTarget::New => format!("/s/{entity}/fields/new"),
            FieldTarget::Existing(field) => format!("/s/{entity}/fields/{field}"),
        }
    }
}

/// The inputs of the field form: what errors can be placed at.
const FIELD_INPUTS: &[&str] = &[
    "name",
    "label",
    "description",
    "type",
    "required",
    "unique",
    "indexed",
    "max_length",
    "min",
    "max",
    "options",
    "multiple",
    "entity",
    "region",
    "prefix",
    "digits",
    "start",
];

#[allow(clippy::too_many_arguments)]
fn field_page(
    lang: Lang,
    chrome: &Chrome,
    entity: &str,
    target: FieldTarget<'_>,
    version: i64,
    field: &Value,
    entities: &[String],
    errors: &Errors,
) -> Markup {
    let kind = str_of(field, "type");
    let value = |key: &str| match &field[key] {
        Value::Null => String::new(),
        other => text(other),
    };
    let flag = |key: &str| field[key] == json!(true);
    let applies = |key: &str| {
        SETTINGS
            .iter()
            .find(|(setting, _)| *setting == key)
            .map(|(_, types)| types.join(" "))
            .unwrap_or_default()
    };
    let title = match target {
        FieldTarget::New => format!("{} · {entity}", lang.t("add_field")),
        FieldTarget::Existing(name) => format!("{} · {entity}.{name}", lang.t("edit_field")),
    };
    let checkbox = |key: &'static str, hint: &'static str| {
        html! {
            div.field.check data-field=(key) data-types=[(!applies(key).is_empty()).then(|| applies(key))] {
                label { input type="checkbox" name=(key) value="true" checked[flag(key)]; " " (lang.t(key)) }
                small.hint { (lang.t(hint)) }
                (errors.field(key))
            }
        }
    };
    let setting = |key: &'static str, input_type: &'static str| {
        let id = format!("f-{key}");
        html! {
            div.field.invalid[errors.invalid(key).is_some()] data-field=(key) data-types=(applies(key)) {
                label for=(id) { (lang.t(key)) }
                input id=(id) name=(key) type=(input_type) value=(value(key)) aria-invalid=[errors.invalid(key)];
                (errors.field(key))
            }
        }
    };
    let body = html! {
        main {
            p.crumbs { a href="/s" { (lang.t("schema")) } " · " a href={ "/s/" (entity) } { (entity) } }
            h1 { (title) }
            @if let Some(summary) = &errors.summary { p.error-summary role="alert" { (summary) } }
            form.record.schema-field method="post" action=(target.action(entity)) novalidate {
                input type="hidden" name="_version" value=(version);
                @match target {
                    FieldTarget::New => (text_input(lang.t("api_name"), "name", "text", &value("name"), errors, html! { small.hint { (lang.t("api_name_hint")) } })),
                    FieldTarget::Existing(name) => {
                        div.field { label { (lang.t("api_name")) } code { (name) } }
                    },
                }
                (text_input(lang.t("label"), "label", "text", &value("label"), errors, html! {}))
                (translation_inputs(lang.t("label"), "labels", field, None, errors))
                div.field.invalid[errors.invalid("type").is_some()] data-field="type" {
                    label for="f-type" { (lang.t("type")) }
                    select id="f-type" name="type" aria-invalid=[errors.invalid("type")] {
                        @for option in TYPES {
                            option value=(option) selected[kind == *option] { (option) }
                        }
                        @if kind == "computed" { option value="computed" selected { "computed" } }
                    }
                    @if matches!(target, FieldTarget::Existing(_)) { small.hint { (lang.t("type_change_hint")) } }
                    (errors.field("type"))
                }
                (checkbox("required", "required_hint"))
                (checkbox("unique", "unique_hint"))
                (checkbox("indexed", "indexed_hint"))
                div.field.invalid[errors.invalid("options").is_some()] data-field="options" data-types=(applies("options")) {
                    label for="f-options" { (lang.t("options")) }
                    textarea id="f-options" name="options" rows="5" aria-invalid=[errors.invalid("options")] { (options_text(field)) }
                    small.hint { (lang.t("options_hint")) }
                    (errors.field("options"))
                }
                (checkbox("multiple", "multiple_hint"))
                div.field.invalid[errors.invalid("entity").is_some()] data-field="entity" data-types=(applies("entity")) {
                    label for="f-entity" { (lang.t("references")) }
                    select id="f-entity" name="entity" aria-invalid=[errors.invalid("entity")] {
                        option value="" { (lang.t("none")) }
                        @let referenced = str_of(field, "entity");
                        @if !referenced.is_empty() && !entities.iter().any(|name| name == referenced) {
                            option value=(referenced) selected { (referenced) }
                        }
                        @for name in entities {
                            option value=(name) selected[str_of(field, "entity") == name] { (name) }
                        }
                    }
                    (errors.field("entity"))
                }
                (setting("max_length", "number"))
                (setting("min", "number"))
                (setting("max", "number"))
                (setting("region", "text"))
                (setting("prefix", "text"))
                (setting("digits", "number"))
                (setting("start", "number"))
                div.field.invalid[errors.invalid("description").is_some()] data-field="description" {
                    label for="f-description" { (lang.t("description")) }
                    textarea id="f-description" name="description" rows="2" { (value("description")) }
                    (errors.field("description"))
                }
                div.actions {
                    button type="submit" { (lang.t("save")) }
                    a href={ "/s/" (entity) } { (lang.t("cancel")) }
                }
            }
            @if let FieldTarget::Existing(name) = target {
                @if field["active"] != json!(false) {
                    section.card.danger-zone {
                        h2 { (lang.t("deactivate")) }
                        p.hint { (lang.t("deactivate_hint")) }
                        form method="post" action={ "/s/" (entity) "/fields/" (name) "/deactivate" } {
                            input type="hidden" name="_version" value=(version);
                            button.danger type="submit" { (lang.t("deactivate")) }
                        }
                    }
                }
            }
        }
    };
    document(lang, &title, Some(chrome), body)
}

pub(super) async fn entity_names(
    state: &AppState,
    principal: &Principal,
) -> Result<Vec<String>, ApiError> {
    Ok(state
        .metadata
        .list(&principal.tenant)
        .await?
        .iter()
        .map(|entity| str_of(&entity.definition, "name").to_owned())
        .collect())
}

pub async fn new_field(
    State(state): State<AppState>,
    principal: Principal,
    Path(entity): Path<String>,
    headers: HeaderMap,
) -> Response {
    let lang = Lang::of(&headers);
    let result = async {
        admin_only(&principal, PAGES)?;
        let chrome = Chrome::load(lang, &state, &principal, &entity).await?;
        let (_, version) = definition_of(&state, &principal, &entity).await?;
        let entities = entity_names(&state, &principal).await?;
        Ok(field_page(
            lang,
            &chrome,
            &entity,
            FieldTarget::New,
            version,
            &json!({"type": "text"}),
            &entities,
            &Errors::default(),
        ))
    }
    .await;
    respond(lang, result)
}

pub async fn edit_field(
    State(state): State<AppState>,
    principal: Principal,
    Path((entity, field)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    let lang = Lang::of(&headers);
    let result = async {
        admin_only(&principal, PAGES)?;
        let chrome = Chrome::load(lang, &state, &principal, &entity).await?;
        let (definition, version) = definition_of(&state, &principal, &entity).await?;
        let (_, existing) = find_field(&definition, &entity, &field)?;
        let entities = entity_names(&state, &principal).await?;
        Ok(field_page(
            lang,
            &chrome,
            &entity,
            FieldTarget::Existing(&field),
            version,
            existing,
            &entities,
            &Errors::default(),
        ))
    }
    .await;
    respond(lang, result)
}

fn find_field<'a>(
    definition: &'a Value,
    entity: &str,
    field: &str,
) -> Result<(usize, &'a Value), ApiError> {
    definition["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
        .find(|(_, candidate)| str_of(candidate, "name") == field)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "unknown_field",
                format!("entity `{entity}` has no field `{field}`"),
            )
        })
}

pub async fn create_field(
    State(state): State<AppState>,
    principal: Principal,
    Path(entity): Path<String>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    save_field(state, principal, entity, None, headers, pairs).await
}

pub async fn update_field(
    State(state): State<AppState>,
    principal: Principal,
    Path((entity, field)): Path<(String, String)>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    save_field(state, principal, entity, Some(field), headers, pairs).await
}

/// Whether a plan touches data, so that the admin confirms it after seeing its dry run.
fn needs_confirmation(changes: &[Change]) -> bool {
    changes.iter().any(|change| {
        matches!(
            change,
            Change::FieldRetyped { .. } | Change::FieldDeactivated { .. }
        )
    })
}

/// A field form's submission: its dry run, shown for confirmation when it touches data, then
/// the change.
async fn save_field(
    state: AppState,
    principal: Principal,
    entity: String,
    field: Option<String>,
    headers: HeaderMap,
    pairs: Vec<(String, String)>,
) -> Response {
    let lang = Lang::of(&headers);
    let posted = Posted::of(pairs);
    let prepared = async {
        admin_only(&principal, PAGES)?;
        let chrome = Chrome::load(lang, &state, &principal, &entity).await?;
        let (definition, version) = definition_of(&state, &principal, &entity).await?;
        let entities = entity_names(&state, &principal).await?;
        Ok::<_, ApiError>((chrome, definition, version, entities))
    }
    .await;
    let (chrome, mut definition, version, entities) = match prepared {
        Ok(prepared) => prepared,
        Err(error) => return error_page(lang, error),
    };
    let (index, name, existing) = match &field {
        Some(name) => match find_field(&definition, &entity, name) {
            Ok((index, existing)) => (index, name.clone(), Some(existing.clone())),
            Err(error) => return error_page(lang, error),
        },
        None => (
            definition["fields"].as_array().map_or(0, Vec::len),
            posted.get("name").trim().to_owned(),
            None,
        ),
    };
    let new_field = field_json(existing.as_ref(), &name, &posted);
    let fields = definition["fields"]
        .as_array_mut()
        .expect("a definition has fields");
    if existing.is_some() {
        fields[index] = new_field.clone();
    } else {
        fields.push(new_field.clone());
    }
    definition["version"] = json!(posted.version().unwrap_or(version));
    let target = match &field {
        Some(name) => FieldTarget::Existing(name),
        None => FieldTarget::New,
    };
    // An existing field's name is shown, not an input: its problems go to the summary.
    let inputs: Vec<&str> = FIELD_INPUTS
        .iter()
        .copied()
        .filter(|input| *input != "name" || field.is_none())
        .collect();
    let refused = |error: ApiError| {
        let errors = Errors::of(lang, &error, Some(index), &inputs);
        let page = field_page(
            lang,
            &chrome,
            &entity,
            target,
            posted.version().unwrap_or(version),
            &new_field,
            &entities,
            &errors,
        );
        let status = refused_status(&error);
        (status, page).into_response()
    };
    let title = match target {
        FieldTarget::New => format!("{} · {entity}", lang.t("add_field")),
        FieldTarget::Existing(name) => format!("{} · {entity}.{name}", lang.t("edit_field")),
    };
    change_with_dry_run(
        &state,
        &principal,
        lang,
        &chrome,
        &entity,
        &definition,
        &posted,
        &target.action(&entity),
        &title,
        &name,
        refused,
    )
    .await
}

/// Applies a new definition of `entity`: a dry run first; when it touches data and the form was
/// not confirmed, the confirmation page; else the change, audited, and back to the entity.
#[allow(clippy::too_many_arguments)]
async fn change_with_dry_run(
    state: &AppState,
    principal: &Principal,
    lang: Lang,
    chrome: &Chrome,
    entity: &str,
    definition: &Value,
    posted: &Posted,
    action: &str,
    title: &str,
    field: &str,
    refused: impl FnOnce(ApiError) -> Response,
) -> Response {
    let dry_run = state
        .metadata
        .update(principal, entity, definition, true)
        .await;
    let plan = match dry_run {
        Ok(plan) => plan,
        Err(MetadataError::Unconvertible(checks)) => {
            let dependents = dependents_of(state, principal, entity, field).await;
            let page = confirm_page(
                lang,
                chrome,
                title,
                entity,
                Plan {
                    changes: &[],
                    conversions: &checks,
                    dependents: &dependents,
                },
                None,
            );
            return (StatusCode::CONFLICT, page).into_response();
        }
        Err(error) => return refused(ApiError::from(error)),
    };
    if needs_confirmation(&plan.changes) && !posted.has("_confirm") {
        let dependents =
            match crate::dependents::of_changes(state, principal, entity, &plan.changes).await {
                Ok(dependents) => dependents,
                Err(error) => return error_page(lang, error),
            };
        return confirm_page(
            lang,
            chrome,
            title,
            entity,
            Plan {
                changes: &plan.changes,
                conversions: &plan.conversions,
                dependents: &dependents,
            },
            Some((action, posted)),
        )
        .into_response();
    }
    match state
        .metadata
        .update(principal, entity, definition, false)
        .await
    {
        Ok(applied) => {
            audited(state, principal, entity, &applied).await;
            Redirect::to(&format!("/s/{entity}?saved={field}")).into_response()
        }
        Err(MetadataError::Unconvertible(checks)) => {
            let page = confirm_page(
                lang,
                chrome,
                title,
                entity,
                Plan {
                    changes: &[],
                    conversions: &checks,
                    dependents: &[],
                },
                None,
            );
            (StatusCode::CONFLICT, page).into_response()
        }
        Err(error) => refused(ApiError::from(error)),
    }
}

async fn audited(state: &AppState, principal: &Principal, entity: &str, applied: &Applied) {
    audit(
        state,
        principal,
        "entity.update",
        entity,
        json!({"changes": applied.changes, "version": applied.version}),
    )
    .await;
}

async fn dependents_of(
    state: &AppState,
    principal: &Principal,
    entity: &str,
    field: &str,
) -> Vec<Dependent> {
    listed(
        crate::dependents::of_field(state, principal, entity, field).await,
        "a field",
    )
}

/// What depends on a field or an entity, for a confirmation page: none, and a warning in the
/// log, when it cannot be listed (the page still confirms the change).
fn listed(found: Result<Vec<Dependent>, ApiError>, of: &str) -> Vec<Dependent> {
    found.unwrap_or_else(|error| {
        tracing::warn!(error = %error.message, "could not list what depends on {of}");
        Vec::new()
    })
}

/// The confirmation of a removal (purging a field, deleting an entity): no change to the
/// definition to list, only what depends on what goes.
fn confirm_removal(
    lang: Lang,
    chrome: &Chrome,
    title: &str,
    entity: &str,
    dependents: &[Dependent],
    action: &str,
    posted: &Posted,
) -> Response {
    let plan = Plan {
        changes: &[],
        conversions: &[],
        dependents,
    };
    confirm_page(lang, chrome, title, entity, plan, Some((action, posted))).into_response()
}

/// What a confirmation page shows.
struct Plan<'a> {
    changes: &'a [Change],
    conversions: &'a [FieldCheck],
    dependents: &'a [Dependent],
}

fn describe(lang: Lang, change: &Change) -> Markup {
    match change {
        Change::EntityDescribed => html! { (lang.t("change_entity_described")) },
        Change::FieldAdded { field } => {
            html! { (lang.t("change_field_added")) " " code { (field) } }
        }
        Change::FieldDescribed { field } => {
            html! { (lang.t("change_field_described")) " " code { (field) } }
        }
        Change::FieldRetyped { field, from, to } => html! {
            (lang.t("change_field_retyped")) " " code { (field) } ": " (from) " → " (to)
        },
        Change::IndexAdded { field, unique } => html! {
            (lang.t(if *unique { "change_unique_added" } else { "change_index_added" })) " " code { (field) }
        },
        Change::IndexRemoved { field, unique } => html! {
            (lang.t(if *unique { "change_unique_removed" } else { "change_index_removed" })) " " code { (field) }
        },
        Change::FieldDeactivated { field } => {
            html! { (lang.t("change_field_deactivated")) " " code { (field) } }
        }
        Change::FieldReactivated { field } => {
            html! { (lang.t("change_field_reactivated")) " " code { (field) } }
        }
        Change::CompositeIndexAdded { fields } => {
            html! { (lang.t("change_index_added")) " " code { (fields.join(", ")) } }
        }
        Change::CompositeIndexRemoved { fields } => {
            html! { (lang.t("change_index_removed")) " " code { (fields.join(", ")) } }
        }
    }
}

/// The dry run of a change and, when it can be made, the form that confirms it: the same
/// submission again with `_confirm`.
fn confirm_page(
    lang: Lang,
    chrome: &Chrome,
    title: &str,
    entity: &str,
    plan: Plan<'_>,
    confirm: Option<(&str, &Posted)>,
) -> Markup {
    let failing = plan.conversions.iter().any(|check| check.failures > 0);
    let body = html! {
        main {
            p.crumbs { a href="/s" { (lang.t("schema")) } " · " a href={ "/s/" (entity) } { (entity) } }
            h1 { (title) }
            @if failing {
                p.error-summary role="alert" { (lang.t("would_not_convert")) }
            } @else {
                p.notice role="status" { (lang.t("dry_run_notice")) }
            }
            section.card.dry-run {
                @if !plan.changes.is_empty() {
                    h2 { (lang.t("changes")) }
                    ul.changes { @for change in plan.changes { li { (describe(lang, change)) } } }
                }
                @if !plan.conversions.is_empty() {
                    h2 { (lang.t("conversion")) }
                    @for check in plan.conversions {
                        p.conversion data-field=(check.field) data-failures=(check.failures) {
                            code { (check.field) } ": "
                            (check.records_with_value) " " (lang.t("records_with_value")) ", "
                            strong { (check.failures) } " " (lang.t("would_not_convert_count"))
                        }
                        @if !check.samples.is_empty() {
                            ul.samples {
                                @for sample in &check.samples {
                                    li {
                                        a href={ "/r/" (entity) "/" (sample.record) } { (sample.record) } ": "
                                        code { (text(&sample.value)) } " — " (sample.reason)
                                    }
                                }
                            }
                        }
                    }
                }
                h2 { (lang.t("dependents")) }
                @if plan.dependents.is_empty() {
                    p.empty { (lang.t("no_dependents")) }
                } @else {
                    ul.dependents {
                        @for dependent in plan.dependents {
                            li data-kind=(dependent.kind) {
                                span.tag { (lang.t(dependent.kind)) } " " strong { (dependent.name) } " — " (dependent.how)
                            }
                        }
                    }
                }
            }
            @if let Some((action, posted)) = confirm {
                form.confirm method="post" action=(action) {
                    @for (name, value) in posted.pairs() {
                        input type="hidden" name=(name) value=(value);
                    }
                    input type="hidden" name="_confirm" value="1";
                    div.actions {
                        button.danger type="submit" { (lang.t("confirm")) }
                        a href={ "/s/" (entity) } { (lang.t("cancel")) }
                    }
                }
            } @else {
                p { a href={ "/s/" (entity) } { (lang.t("back")) } }
            }
        }
    };
    document(lang, title, Some(chrome), body)
}

/// The definition of `entity` with one field's `active` set, for deactivation and reactivation.
async fn with_active(
    lang: Lang,
    state: &AppState,
    principal: &Principal,
    entity: &str,
    field: &str,
    active: bool,
    posted: &Posted,
) -> Result<(Value, Chrome), ApiError> {
    admin_only(principal, PAGES)?;
    let chrome = Chrome::load(lang, state, principal, entity).await?;
    let (mut definition, version) = definition_of(state, principal, entity).await?;
    let (index, _) = find_field(&definition, entity, field)?;
    let object = definition["fields"][index]
        .as_object_mut()
        .expect("a field is an object");
    if active {
        object.remove("active");
    } else {
        object.insert("active".into(), json!(false));
    }
    definition["version"] = json!(posted.version().unwrap_or(version));
    Ok((definition, chrome))
}

pub async fn deactivate_field(
    State(state): State<AppState>,
    principal: Principal,
    Path((entity, field)): Path<(String, String)>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    set_active(state, principal, entity, field, false, headers, pairs).await
}

pub async fn reactivate_field(
    State(state): State<AppState>,
    principal: Principal,
    Path((entity, field)): Path<(String, String)>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    set_active(state, principal, entity, field, true, headers, pairs).await
}

async fn set_active(
    state: AppState,
    principal: Principal,
    entity: String,
    field: String,
    active: bool,
    headers: HeaderMap,
    pairs: Vec<(String, String)>,
) -> Response {
    let lang = Lang::of(&headers);
    let posted = Posted::of(pairs);
    let (definition, chrome) =
        match with_active(lang, &state, &principal, &entity, &field, active, &posted).await {
            Ok(prepared) => prepared,
            Err(error) => return error_page(lang, error),
        };
    let verb = if active { "reactivate" } else { "deactivate" };
    let title = format!("{} · {entity}.{field}", lang.t(verb));
    let action = format!("/s/{entity}/fields/{field}/{verb}");
    change_with_dry_run(
        &state,
        &principal,
        lang,
        &chrome,
        &entity,
        &definition,
        &posted,
        &action,
        &title,
        &field,
        |error| error_page(lang, error),
    )
    .await
}

/// Purges a deactivated field (its values are deleted from every record), after confirmation.
pub async fn purge_field(
    State(state): State<AppState>,
    principal: Principal,
    Path((entity, field)): Path<(String, String)>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let lang = Lang::of(&headers);
    let posted = Posted::of(pairs);
    if let Err(error) = admin_only(&principal, PAGES) {
        return error_page(lang, error);
    }
    if !posted.has("_confirm") {
        let chrome = match Chrome::load(lang, &state, &principal, &entity).await {
            Ok(chrome) => chrome,
            Err(error) => return error_page(lang, error),
        };
        let dependents = dependents_of(&state, &principal, &entity, &field).await;
        let title = format!("{} · {entity}.{field}", lang.t("purge"));
        let action = format!("/s/{entity}/fields/{field}/purge");
        return confirm_removal(
            lang,
            &chrome,
            &title,
            &entity,
            &dependents,
            &action,
            &posted,
        );
    }
    match state
        .metadata
        .purge_field(&principal, &entity, &field)
        .await
    {
        Ok(_) => {
            audited_redirect(
                &state,
                &principal,
                "entity.purge_field",
                &entity,
                json!({"field": field}),
                &format!("/s/{entity}?saved={field}"),
            )
            .await
        }
        Err(error) => error_page(lang, ApiError::from(error)),
    }
}

/// Deletes an entity and its records, after confirmation; refused while references point at
/// it, unless forced (which deactivates them).
pub async fn delete_entity(
    State(state): State<AppState>,
    principal: Principal,
    Path(entity): Path<String>,
    headers: HeaderMap,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let lang = Lang::of(&headers);
    let posted = Posted::of(pairs);
    if let Err(error) = admin_only(&principal, PAGES) {
        return error_page(lang, error);
    }
    let chrome = match Chrome::load(lang, &state, &principal, &entity).await {
        Ok(chrome) => chrome,
        Err(error) => return error_page(lang, error),
    };
    let title = format!("{} · {entity}", lang.t("delete_entity"));
    if !posted.has("_confirm") {
        let dependents = listed(
            crate::dependents::of_entity(&state, &principal, &entity).await,
            "an entity",
        );
        let action = format!("/s/{entity}/delete");
        return confirm_removal(
            lang,
            &chrome,
            &title,
            &entity,
            &dependents,
            &action,
            &posted,
        );
    }
    let force = posted.get("force") == "true";
    match state.metadata.delete(&principal, &entity, force).await {
        Ok(deactivated) => {
            audited_redirect(
                &state,
                &principal,
                "entity.delete",
                &entity,
                json!({"force": force, "deactivated_fields": deactivated}),
                "/s",
            )
            .await
        }
        Err(error) => error_page(lang, ApiError::from(error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn posted(pairs: &[(&str, &str)]) -> Posted {
        Posted::of(
            pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn options_round_trip_through_their_text() {
        let field = json!({"options": ["new", {"value": "won", "label": "Won", "closed": true}, {"value": "lost", "closed": true}]});
        let text = options_text(&field);
        assert_eq!(text, "new\nwon | Won | closed\nlost |  | closed");
        assert_eq!(
            Value::Array(parse_options(&text, &Value::Null)),
            field["options"]
        );
        // A value with a `|` stays as it was when its line is unchanged.
        let piped = json!(["A|B", "c"]);
        assert_eq!(
            Value::Array(parse_options("A|B\nc\nd", &piped)),
            json!(["A|B", "c", "d"])
        );
    }

    #[test]
    fn a_field_keeps_only_the_settings_of_its_type() {
        let existing = json!({"name": "stage", "type": "picklist", "options": ["a", "b"], "multiple": true, "indexed": true, "label": "Stage"});
        let form = posted(&[
            ("type", "text"),
            ("label", "Stage"),
            ("options", "a\nb"),
            ("max_length", "40"),
            ("indexed", "true"),
        ]);
        assert_eq!(
            field_json(Some(&existing), "stage", &form),
            json!({"name": "stage", "type": "text", "label": "Stage", "max_length": 40, "indexed": true})
        );
        let wrong = posted(&[("type", "integer"), ("min", "ten")]);
        assert_eq!(
            field_json(None, "count", &wrong),
            json!({"name": "count", "type": "integer", "min": "ten"}),
            "a text that is no number goes as typed, for the server to name"
        );
        let computed = json!({"name": "tier", "type": "computed", "returns": "picklist", "plugin": "rfm-score", "function": "tier", "options": ["key"]});
        let form = posted(&[
            ("type", "computed"),
            ("label", "Tier"),
            ("options", "key\nsmall"),
        ]);
        assert_eq!(
            field_json(Some(&computed), "tier", &form),
            json!({"name": "tier", "type": "computed", "returns": "picklist", "plugin": "rfm-score", "function": "tier", "label": "Tier", "options": ["key", "small"]})
        );
    }

    #[test]
    fn problems_go_to_the_inputs_they_name() {
        let error = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_definition",
            "invalid",
        )
        .with_fields(json!({
            "/fields/2/max_length": ["must be at least 1"],
            "/fields/2": ["\"options\" is a required property"],
            "/fields/0/name": ["not this field"],
        }));
        let errors = Errors::of(Lang::En, &error, Some(2), FIELD_INPUTS);
        assert_eq!(errors.at["max_length"], ["must be at least 1"]);
        assert_eq!(errors.at["options"], ["\"options\" is a required property"]);
        assert!(!errors.at.contains_key("name"));
        assert!(errors.summary.unwrap().contains("/fields/0/name"));
    }
}
