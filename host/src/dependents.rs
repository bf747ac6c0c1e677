//! What depends on a field: the computed fields, plugins, workflows, views, reports and
//! dashboards of a tenant that read it. Shown before a field changes type or is removed (the
//! entity API's dry run and the console's schema editor), so an admin sees what may break.
//!
//! Computed fields and plugin bindings are exact (they name their entity and fields). Workflows,
//! views, reports and dashboards are found by the field names they mention where their
//! definitions name fields: conditions and filters (`stage eq 'won'`), templates
//! (`{{record.stage}}`), `values` written, and field lists (`fields`, `group_by`, `sort`,
//! measures) — within the parts of a definition about the field's entity.

use serde::Serialize;
use serde_json::Value;

use crate::api::Services;
use crate::api::error::ApiError;
use crate::auth::Principal;
use crate::metadata::evolution::Change;

/// One thing that depends on a field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Dependent {
    /// The field depended on.
    pub field: String,
    /// `computed_field`, `plugin`, `workflow`, `view`, `report` or `dashboard`.
    pub kind: &'static str,
    /// Its name (`account.churn_risk` for a computed field, a plugin's id, …).
    pub name: String,
    /// How it depends on the field.
    pub how: String,
}

/// What depends on each field that `changes` retype or deactivate.
pub async fn of_changes(
    state: &Services,
    principal: &Principal,
    entity: &str,
    changes: &[Change],
) -> Result<Vec<Dependent>, ApiError> {
    let fields: Vec<&str> = changes
        .iter()
        .filter_map(|change| match change {
            Change::FieldRetyped { field, .. } | Change::FieldDeactivated { field } => {
                Some(field.as_str())
            }
            _ => None,
        })
        .collect();
    if fields.is_empty() {
        return Ok(Vec::new());
    }
    let found = Found::load(state, principal).await?;
    Ok(fields
        .into_iter()
        .flat_map(|field| found.on(entity, field))
        .collect())
}

/// What depends on one field of `entity`.
pub async fn of_field(
    state: &Services,
    principal: &Principal,
    entity: &str,
    field: &str,
) -> Result<Vec<Dependent>, ApiError> {
    Ok(Found::load(state, principal).await?.on(entity, field))
}

/// What depends on an entity as a whole (before it is deleted): other entities' reference
/// fields that point at it, roll-ups over it, plugins bound to it, and the workflows, views,
/// reports and dashboards about it.
pub async fn of_entity(
    state: &Services,
    principal: &Principal,
    entity: &str,
) -> Result<Vec<Dependent>, ApiError> {
    let found = Found::load(state, principal).await?;
    let mut dependents = Vec::new();
    let mut add = |kind, name: String, how: String| {
        dependents.push(Dependent {
            field: String::new(),
            kind,
            name,
            how,
        })
    };
    for definition in &found.entities {
        if definition.name.as_str() == entity {
            continue;
        }
        for field in definition.active_fields() {
            if field
                .entity
                .as_ref()
                .is_some_and(|target| target.as_str() == entity)
            {
                add(
                    "reference_field",
                    format!("{}.{}", definition.name, field.name),
                    format!("points at `{entity}` records"),
                );
            }
            if field
                .related
                .iter()
                .any(|related| related.entity.as_str() == entity)
            {
                add(
                    "computed_field",
                    format!("{}.{}", definition.name, field.name),
                    format!("rolls up `{entity}` records"),
                );
            }
        }
    }
    for (id, provides) in &found.plugins {
        let bound = provides.validators.iter().any(|b| b.entity == entity)
            || provides.hooks.iter().any(|h| h.entity == entity);
        if bound {
            add("plugin", id.clone(), format!("runs on `{entity}` writes"));
        }
    }
    for (name, definition) in &found.workflows {
        if about_entity(definition, entity) {
            add("workflow", name.clone(), format!("works on `{entity}`"));
        }
    }
    for (name, definition) in &found.views {
        if about_entity(definition, entity) {
            let kind = crate::analytics::Kind::of(definition).noun();
            add(kind, name.clone(), format!("reads `{entity}`"));
        }
    }
    Ok(dependents)
}

/// Whether some part of a definition is about `entity` (`"entity": "<entity>"`).
fn about_entity(json: &Value, entity: &str) -> bool {
    match json {
        Value::Array(items) => items.iter().any(|item| about_entity(item, entity)),
        Value::Object(object) => {
            object.get("entity").and_then(Value::as_str) == Some(entity)
                || object.values().any(|value| about_entity(value, entity))
        }
        _ => false,
    }
}

/// The tenant's definitions that may depend on fields.
struct Found {
    entities: Vec<crate::metadata::definition::EntityDefinition>,
    plugins: Vec<(String, crate::plugins::manifest::Provides)>,
    workflows: Vec<(String, Value)>,
    views: Vec<(String, Value)>,
}

impl Found {
    async fn load(state: &Services, principal: &Principal) -> Result<Self, ApiError> {
        let mut conn = state.store.reader().await?;
        let mut scoped = conn.scoped(&principal.tenant);
        let entities = state
            .metadata
            .all_current(&mut scoped)
            .await?
            .iter()
            .map(|compiled| compiled.definition.clone())
            .collect();
        let views = scoped
            .views()
            .await?
            .into_iter()
            .filter_map(|stored| {
                serde_json::from_str(&stored.definition)
                    .ok()
                    .map(|json| (stored.name, json))
            })
            .collect();
        drop(conn);
        let plugins = state
            .plugins
            .list(principal)
            .await
            .map_err(ApiError::from)?
            .into_iter()
            .map(|plugin| (plugin.id, plugin.provides))
            .collect();
        let workflows = state
            .workflows
            .list(&principal.tenant)
            .await
            .map_err(ApiError::from)?
            .into_iter()
            .map(|workflow| {
                let name = workflow.definition["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                (name, workflow.definition)
            })
            .collect();
        Ok(Self {
            entities,
            plugins,
            workflows,
            views,
        })
    }

    fn on(&self, entity: &str, field: &str) -> Vec<Dependent> {
        let mut found = Vec::new();
        let mut add = |kind, name: String, how: String| {
            found.push(Dependent {
                field: field.to_owned(),
                kind,
                name,
                how,
            })
        };
        for definition in &self.entities {
            for computed in definition.active_fields().filter(|f| f.is_computed()) {
                let plugin = computed.plugin.as_deref().unwrap_or("?");
                let name = format!("{}.{}", definition.name, computed.name);
                if definition.name.as_str() == entity && computed.name.as_str() != field {
                    let named = computed.depends_on.iter().any(|f| f.as_str() == field);
                    if named || (computed.depends_on.is_empty() && computed.related.is_empty()) {
                        let how = if named {
                            format!("computed by plugin `{plugin}` from `{field}`")
                        } else {
                            format!("computed by plugin `{plugin}` from every field")
                        };
                        add("computed_field", name.clone(), how);
                    }
                }
                for related in &computed.related {
                    if related.entity.as_str() != entity {
                        continue;
                    }
                    if related.via.as_str() == field {
                        add(
                            "computed_field",
                            name.clone(),
                            format!("rolls up `{entity}` records through `{field}`"),
                        );
                    } else if related.fields.is_empty()
                        || related.fields.iter().any(|f| f.as_str() == field)
                    {
                        add(
                            "computed_field",
                            name.clone(),
                            format!("rolls up `{entity}`.`{field}` (plugin `{plugin}`)"),
                        );
                    }
                }
            }
        }
        for (id, provides) in &self.plugins {
            let stages: Vec<String> = provides
                .validators
                .iter()
                .filter(|binding| binding.entity == entity)
                .map(|_| "validate".to_owned())
                .chain(
                    provides
                        .hooks
                        .iter()
                        .filter(|hook| hook.entity == entity)
                        .map(|hook| hook.stage.clone()),
                )
                .collect();
            if !stages.is_empty() {
                add(
                    "plugin",
                    id.clone(),
                    format!(
                        "sees every `{entity}` write ({}) and may read `{field}`",
                        stages.join(", ")
                    ),
                );
            }
        }
        for (name, definition) in &self.workflows {
            let trigger = definition["trigger"]["entity"].as_str();
            if mentions(definition, trigger, trigger, entity, field) {
                add("workflow", name.clone(), format!("mentions `{field}`"));
            }
        }
        for (name, definition) in &self.views {
            if mentions(definition, None, None, entity, field) {
                let kind = crate::analytics::Kind::of(definition).noun();
                add(kind, name.clone(), format!("mentions `{field}`"));
            }
        }
        found
    }
}

/// Whether `json` names `field` of `entity` where a definition names fields. `about` is the
/// entity the current part is about (a nested `entity` changes it for its object); `trigger` is
/// the entity of a workflow's trigger, whose record templates read anywhere (`{{record.f}}`).
fn mentions(
    json: &Value,
    about: Option<&str>,
    trigger: Option<&str>,
    entity: &str,
    field: &str,
) -> bool {
    let reads_record = trigger == Some(entity);
    match json {
        Value::Array(items) => items
            .iter()
            .any(|item| mentions(item, about, trigger, entity, field)),
        Value::String(_) => reads_record && template_mentions(json, field),
        Value::Object(object) => {
            let about = object.get("entity").and_then(Value::as_str).or(about);
            let here = about == Some(entity);
            object.iter().any(|(key, value)| {
                let named = here
                    && match (key.as_str(), value) {
                        ("if" | "condition" | "filter" | "having", Value::String(text)) => {
                            condition_names(text).any(|name| name == field)
                        }
                        ("values" | "targets", Value::Object(values)) => values.contains_key(field),
                        ("fields" | "group_by" | "depends_on", Value::Array(items)) => {
                            items.iter().any(|item| field_names(item).contains(&field))
                        }
                        ("measures", Value::Array(items)) => items.iter().any(|item| {
                            item.as_str()
                                .and_then(|text| text.split_once(':'))
                                .is_some_and(|(_, name)| name == field)
                                || item.is_object() && field_names(item).contains(&field)
                        }),
                        (
                            "field" | "sort" | "order_by" | "date_field" | "via" | "divide_by",
                            value,
                        ) => field_names(value).contains(&field),
                        _ => false,
                    };
                named || mentions(value, about, trigger, entity, field)
            })
        }
        _ => false,
    }
}

/// The fields a name, a field list or a sort stands for: `-amount, name` names `amount` and
/// `name`; `account.size` names `account`; a measure `{"field": "amount"}` names `amount`.
fn field_names(value: &Value) -> Vec<&str> {
    match value {
        Value::String(text) => text
            .split(',')
            .map(|item| item.trim().trim_start_matches(['-', '+']))
            .filter_map(|name| name.split(['.', ' ', ':']).next())
            .filter(|name| !name.is_empty())
            .collect(),
        Value::Object(object) => object.get("field").map(field_names).unwrap_or_default(),
        _ => Vec::new(),
    }
}

/// Whether a template string reads `record.<field>` (`{{record.stage}}`).
fn template_mentions(value: &Value, field: &str) -> bool {
    let Value::String(text) = value else {
        return false;
    };
    text.split("{{").skip(1).any(|inside| {
        let inside = inside.split("}}").next().unwrap_or_default();
        identifiers(inside)
            .collect::<Vec<_>>()
            .windows(2)
            .any(|pair| pair[0] == "record" && pair[1] == field)
    })
}

/// The identifiers of a condition outside its quoted literals and templates: the field names
/// it compares (and its operators, which are no field's name).
fn condition_names(text: &str) -> impl Iterator<Item = &str> {
    let mut outside = Vec::new();
    let mut quoted = false;
    let mut start = 0;
    for (index, char) in text.char_indices() {
        if char == '\'' {
            if !quoted {
                outside.push(&text[start..index]);
            }
            quoted = !quoted;
            start = index + 1;
        }
    }
    if !quoted {
        outside.push(&text[start..]);
    }
    outside.into_iter().flat_map(identifiers)
}

fn identifiers(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with(|c: char| c.is_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn workflows_mention_fields_in_conditions_templates_and_values() {
        let workflow = json!({
            "name": "w",
            "trigger": {"type": "record", "entity": "case", "condition": "type eq 'priority' and sla_due_at is not null"},
            "steps": [
                {"id": "wait", "type": "wait", "until": "{{record.sla_due_at}}"},
                {"id": "mark", "type": "set_fields", "values": {"status": "in_progress"}},
                {"id": "tell", "type": "notify", "message": "Case {{record.subject}} is late"},
                {"id": "other", "type": "create_record", "entity": "task", "values": {"title": "{{record.owner_note}}"}}
            ]
        });
        let trigger = workflow["trigger"]["entity"].as_str();
        let on = |field| mentions(&workflow, trigger, trigger, "case", field);
        assert!(on("type"), "a condition's field");
        assert!(on("sla_due_at"), "a condition and a template");
        assert!(on("status"), "a value written");
        assert!(on("subject"), "a message's template");
        assert!(!on("priority"), "a quoted literal is no field");
        assert!(!on("title"), "a value of another entity's record");
        assert!(
            on("owner_note"),
            "the trigger's record read in a step about another entity"
        );
        assert!(
            !mentions(&workflow, trigger, trigger, "task", "subject"),
            "fields of the trigger's record are not the other entity's"
        );
        assert!(mentions(&workflow, trigger, trigger, "task", "title"));
    }

    #[test]
    fn views_reports_and_dashboards_mention_fields_in_lists_sorts_and_measures() {
        let dashboard = json!({
            "kind": "dashboard",
            "widgets": [
                {"report": {"entity": "opportunity", "group_by": ["stage", "close_date:month"],
                            "measures": ["sum:amount", {"fn": "avg", "field": "probability"}], "filter": "owner is not null"}},
                {"report": {"entity": "case", "sort": "priority,-opened_at"}}
            ]
        });
        let on = |entity, field| mentions(&dashboard, None, None, entity, field);
        assert!(on("opportunity", "stage"));
        assert!(on("opportunity", "close_date"));
        assert!(on("opportunity", "amount"));
        assert!(on("opportunity", "owner"));
        assert!(on("opportunity", "probability"));
        assert!(!on("opportunity", "sum"));
        assert!(on("case", "opened_at"));
        assert!(!on("opportunity", "opened_at"));
        assert!(!on("lead", "stage"));
    }
}
