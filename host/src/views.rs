//! Saved views (`schemas/view.schema.json`): a named list over one entity, with parameters that
//! become quoted literals of its filter. Packs ship them (the exhibition pack's booth map); the
//! records API runs them with its own rules.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::auth::Principal;
use crate::metadata::validation::{self, Problem};
use crate::metadata::{Metadata, MetadataError};
use crate::records::{ListParams, Page, RecordError, Records, Shape};
use crate::store::packs::StoredView;
use crate::store::{Scoped, Store, StoreError};
use crate::workflows::template::{Scope, Template};

pub const VIEW_SCHEMA: &str = include_str!("../../schemas/view.schema.json");

static VIEW_VALIDATOR: LazyLock<jsonschema::Validator> =
    LazyLock::new(|| validation::shipped_schema("view.schema.json", VIEW_SCHEMA));

/// A saved view's definition.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ViewDefinition {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub entity: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub params: BTreeMap<String, Value>,
}

/// A saved view as the API shows it.
#[derive(Debug, Serialize)]
pub struct View {
    #[serde(flatten)]
    pub definition: ViewDefinition,
    /// The pack that installed it, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pack: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: time::OffsetDateTime,
}

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error("no view `{0}`")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Records(#[from] RecordError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Parses a view: the JSON Schema, then the filter's templates (only `input.<param>` of a
/// declared parameter), every problem with its path.
pub fn parse(json: &Value) -> Result<ViewDefinition, Vec<Problem>> {
    let mut problems = validation::schema_problems(&VIEW_VALIDATOR, json);
    if !problems.is_empty() {
        return Err(problems);
    }
    let view: ViewDefinition = serde_json::from_value(json.clone())
        .map_err(|error| vec![Problem::new("/", error.to_string())])?;
    if let Some(filter) = &view.filter {
        if template_in_quotes(filter) {
            problems.push(Problem::new(
                "/filter",
                "a parameter must stand alone (`status eq {{input.status}}`), not inside a quoted text: it becomes a quoted literal itself",
            ));
        }
        match Template::parse(filter) {
            Ok(template) => {
                for path in template.paths() {
                    let named = path.to_string();
                    let declared = named
                        .strip_prefix("input.")
                        .is_some_and(|param| view.params.contains_key(param));
                    if !declared {
                        problems.push(Problem::new(
                            "/filter",
                            format!(
                                "`{{{{ {named} }}}}`: a view's filter may only name its parameters, as `{{{{ input.<param> }}}}` with the parameter declared in `params`"
                            ),
                        ));
                    }
                }
            }
            Err(message) => problems.push(Problem::new("/filter", message)),
        }
    }
    if problems.is_empty() {
        Ok(view)
    } else {
        Err(problems)
    }
}

/// Whether a `{{` opens inside a quoted literal of the filter language (`'…'`, `''` escaping a
/// quote): rendered there, a parameter's quotes would end the literal.
fn template_in_quotes(filter: &str) -> bool {
    let mut quoted = false;
    let mut chars = filter.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\'' => quoted = !quoted,
            '{' if quoted && chars.peek() == Some(&'{') => return true,
            _ => {}
        }
    }
    false
}

/// Checks a view against the tenant's entities (in the caller's transaction): the entity and
/// the fields it returns exist.
pub async fn check_in(
    metadata: &Metadata,
    scoped: &mut Scoped<'_>,
    view: &ViewDefinition,
) -> Result<(), Vec<Problem>> {
    let compiled = match metadata.compiled(scoped, &view.entity).await {
        Ok(compiled) => compiled,
        Err(MetadataError::UnknownEntity(name)) => {
            return Err(vec![Problem::new(
                "/entity",
                format!("entity `{name}` does not exist"),
            )]);
        }
        Err(error) => return Err(vec![Problem::new("/entity", error.to_string())]),
    };
    let mut problems: Vec<Problem> = view
        .fields
        .iter()
        .flatten()
        .enumerate()
        .filter(|(_, field)| {
            !field.starts_with('_') && compiled.definition.field(field.as_str()).is_none()
        })
        .map(|(index, field)| {
            Problem::new(
                format!("/fields/{index}"),
                format!("entity `{}` has no field `{field}`", view.entity),
            )
        })
        .collect();
    // The filter (each parameter as some text) and the sort compile against the entity.
    if let Some(filter) = &view.filter
        && let Ok(template) = Template::parse(filter)
    {
        let mut builder = crate::store::records::ListQuery::builder(scoped.dialect());
        if let Err(message) = crate::records::query::filter_condition(
            &compiled.definition,
            &template.placeholder_filter(),
            &mut builder,
        ) {
            problems.push(Problem::new("/filter", message));
        }
    }
    if let Some(sort) = &view.sort
        && let Err(message) = crate::records::query::parse_sort(&compiled.definition, sort)
    {
        problems.push(Problem::new("/sort", message));
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// Saved views of every tenant.
#[derive(Debug, Clone)]
pub struct Views {
    store: Store,
    records: Records,
}

impl Views {
    pub fn new(store: Store, records: Records) -> Self {
        Self { store, records }
    }

    pub async fn list(&self, principal: &Principal) -> Result<Vec<View>, ViewError> {
        let mut conn = self.store.reader().await?;
        let stored = conn.scoped(&principal.tenant).views().await?;
        // Reports and dashboards share the table and its names; they have their own API.
        stored
            .iter()
            .filter(|stored| {
                serde_json::from_str::<Value>(&stored.definition).is_ok_and(|json| {
                    crate::analytics::Kind::of(&json) == crate::analytics::Kind::View
                })
            })
            .map(view)
            .collect()
    }

    pub async fn get(&self, principal: &Principal, name: &str) -> Result<View, ViewError> {
        let mut conn = self.store.reader().await?;
        let stored = conn
            .scoped(&principal.tenant)
            .view(name)
            .await?
            .filter(|stored| {
                serde_json::from_str::<Value>(&stored.definition).is_ok_and(|json| {
                    crate::analytics::Kind::of(&json) == crate::analytics::Kind::View
                })
            })
            .ok_or_else(|| ViewError::NotFound(name.to_owned()))?;
        view(&stored)
    }

    /// Runs a view: its parameters from `params` (each required, as text), its filter and sort,
    /// through the records API's list (so everything a list checks applies). `cursor` pages.
    pub async fn records(
        &self,
        principal: &Principal,
        name: &str,
        mut params: BTreeMap<String, String>,
    ) -> Result<Page, ViewError> {
        let definition = self.get(principal, name).await?.definition;
        let cursor = params.remove("cursor");
        let limit = match params.remove("limit") {
            Some(text) => Some(text.parse::<i64>().map_err(|_| {
                ViewError::BadRequest(format!("`limit` must be a number, not `{text}`"))
            })?),
            None => definition.limit,
        };
        let unknown: Vec<&String> = params
            .keys()
            .filter(|key| !definition.params.contains_key(*key))
            .collect();
        if !unknown.is_empty() {
            return Err(ViewError::BadRequest(format!(
                "view `{name}` has no parameter {}; it takes {}",
                unknown
                    .iter()
                    .map(|key| format!("`{key}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                describe_params(&definition)
            )));
        }
        let missing: Vec<&String> = definition
            .params
            .keys()
            .filter(|key| !params.contains_key(*key))
            .collect();
        if !missing.is_empty() {
            return Err(ViewError::BadRequest(format!(
                "view `{name}` needs the parameter {}",
                missing
                    .iter()
                    .map(|key| format!("`{key}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )));
        }
        let input: Map<String, Value> = params
            .into_iter()
            .map(|(key, value)| (key, Value::String(value)))
            .collect();
        let filter = match &definition.filter {
            Some(filter) => {
                let template = Template::parse(filter).map_err(ViewError::BadRequest)?;
                let scope = Scope {
                    input: Some(&input),
                    ..Scope::default()
                };
                Some(
                    template
                        .render_filter(&scope)
                        .map_err(ViewError::BadRequest)?,
                )
            }
            None => None,
        };
        let list = ListParams {
            filter,
            sort: definition.sort.clone(),
            limit,
            cursor,
            shape: Shape {
                fields: definition.fields.as_ref().map(|fields| fields.join(",")),
                expand: None,
            },
            ..ListParams::default()
        };
        Ok(self
            .records
            .list(principal, &definition.entity, &list)
            .await?)
    }
}

fn describe_params(definition: &ViewDefinition) -> String {
    if definition.params.is_empty() {
        "none".to_owned()
    } else {
        definition
            .params
            .keys()
            .map(|key| format!("`{key}`"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn view(stored: &StoredView) -> Result<View, ViewError> {
    let value: Value = serde_json::from_str(&stored.definition)
        .map_err(|error| StoreError::Corrupt(format!("a stored view: {error}")))?;
    let definition = serde_json::from_value(value)
        .map_err(|error| StoreError::Corrupt(format!("a stored view: {error}")))?;
    Ok(View {
        definition,
        pack: stored.pack_id.clone(),
        updated_at: stored.updated_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_view_may_only_name_its_declared_parameters() {
        let parsed = parse(&json!({
            "name": "booth_map", "entity": "booth",
            "filter": "exhibition eq {{input.exhibition}}",
            "params": {"exhibition": {}}, "fields": ["number", "status"]
        }))
        .unwrap();
        assert_eq!(parsed.entity, "booth");
        let problems = parse(&json!({
            "name": "booth_map", "entity": "booth",
            "filter": "exhibition eq {{input.other}} and owner eq {{user}}",
            "params": {"exhibition": {}}
        }))
        .unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems.iter().all(|p| p.path == "/filter"));
        let problems = parse(&json!({
            "name": "booth_map", "entity": "booth",
            "filter": "number eq 'A-{{input.n}}'", "params": {"n": {}}
        }))
        .unwrap_err();
        assert!(problems[0].message.contains("stand alone"), "{problems:?}");
        let problems = parse(&json!({
            "name": "booth_map", "entity": "booth",
            "filter": "number eq 'it''s' and hall eq {{input.n}}", "params": {"n": {}}
        }));
        assert!(problems.is_ok(), "{problems:?}");
        let problems = parse(&json!({"name": "Bad", "entity": "booth", "colour": 1})).unwrap_err();
        assert!(problems.len() >= 2, "{problems:?}");
    }
}
