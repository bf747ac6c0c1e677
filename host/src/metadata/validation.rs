//! Checks an entity definition: first against `schemas/entity.schema.json`, then the rules a
//! schema cannot express. Every problem names the JSON path it is about.

use std::collections::HashSet;
use std::sync::LazyLock;

use jsonschema::error::ValidationErrorKind;
use serde::Serialize;
use serde_json::Value;

use super::definition::{EntityDefinition, FieldDefinition, FieldType, is_reserved_field_name};

/// The JSON Schema of entity definitions, shipped in `schemas/`.
pub const ENTITY_SCHEMA: &str = include_str!("../../../schemas/entity.schema.json");

static ENTITY_VALIDATOR: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    let schema: Value = serde_json::from_str(ENTITY_SCHEMA).expect("entity.schema.json is JSON");
    jsonschema::validator_for(&schema).expect("entity.schema.json is a valid JSON Schema")
});

/// One problem in a definition, at a JSON pointer into it (`/fields/2/name`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl Problem {
    pub fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            message: message.into(),
        }
    }
}

/// A JSON Schema shipped in `schemas/`, compiled (once, in a `LazyLock`).
pub fn shipped_schema(name: &str, text: &str) -> jsonschema::Validator {
    let schema: Value =
        serde_json::from_str(text).unwrap_or_else(|error| panic!("{name} is not JSON: {error}"));
    jsonschema::validator_for(&schema)
        .unwrap_or_else(|error| panic!("{name} is not a valid JSON Schema: {error}"))
}

/// Every problem `validator` finds in `json`, each at its JSON path (`/` for the whole).
pub fn schema_problems(validator: &jsonschema::Validator, json: &Value) -> Vec<Problem> {
    validator
        .iter_errors(json)
        .map(|error| {
            let path = match error.instance_path().as_str() {
                "" => "/".to_owned(),
                path => path.to_owned(),
            };
            Problem::new(path, error.to_string())
        })
        .collect()
}

/// Parses and checks a definition on its own (references to other entities are checked by the
/// caller, who knows the tenant's entities).
pub fn parse_definition(json: &Value) -> Result<EntityDefinition, Vec<Problem>> {
    let problems: Vec<Problem> = ENTITY_VALIDATOR
        .iter_errors(json)
        .map(|error| {
            let path = match error.instance_path().as_str() {
                "" => "/".to_owned(),
                path => path.to_owned(),
            };
            let message = match error.kind() {
                ValidationErrorKind::Not { .. } => {
                    let field_type = error
                        .instance()
                        .get("type")
                        .and_then(Value::as_str)
                        .unwrap_or("this");
                    format!("has a property that a field of type `{field_type}` does not take")
                }
                ValidationErrorKind::AdditionalProperties { unexpected } => {
                    format!(
                        "unknown propert{} {}",
                        if unexpected.len() == 1 { "y" } else { "ies" },
                        quoted(unexpected)
                    )
                }
                ValidationErrorKind::Pattern { .. } => {
                    format!(
                        "{} must start with a lowercase letter and hold only a-z, 0-9 and `_`",
                        error.instance()
                    )
                }
                _ => error.to_string(),
            };
            Problem { path, message }
        })
        .collect();
    if !problems.is_empty() {
        return Err(problems);
    }
    let definition: EntityDefinition = serde_json::from_value(json.clone())
        .map_err(|error| vec![Problem::new("/", error.to_string())])?;
    let problems = check_rules(&definition);
    if problems.is_empty() {
        Ok(definition)
    } else {
        Err(problems)
    }
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|name| format!("`{name}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn check_rules(definition: &EntityDefinition) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut names = HashSet::new();
    for (index, field) in definition.fields.iter().enumerate() {
        let at = |property: &str| format!("/fields/{index}/{property}");
        let name = field.name.as_str();
        if !names.insert(name) {
            problems.push(Problem::new(
                at("name"),
                format!("field `{name}` is defined twice"),
            ));
        }
        if is_reserved_field_name(name) {
            problems.push(Problem::new(
                at("name"),
                format!("`{name}` is a reserved word of the filter language"),
            ));
        }
        if (field.unique || field.indexed) && !field.is_indexable() {
            let flag = if field.unique { "unique" } else { "indexed" };
            problems.push(Problem::new(
                at(flag),
                format!(
                    "a field of type `{}` cannot be {flag}",
                    describe_type(field.field_type, field.multiple)
                ),
            ));
        }
        if field.field_type == FieldType::AutoNumber && field.required {
            problems.push(Problem::new(
                at("required"),
                "an auto-number is always set by the server",
            ));
        }
        if field.is_computed() {
            check_computed(definition, index, field, &mut problems);
        }
        if let (Some(min), Some(max)) = (field.min, field.max)
            && min > max
        {
            problems.push(Problem::new(
                at("min"),
                format!("`min` ({min}) is greater than `max` ({max})"),
            ));
        }
        let mut values = HashSet::new();
        for (option_index, value) in field.option_values().into_iter().enumerate() {
            if !values.insert(value) {
                problems.push(Problem::new(
                    format!("/fields/{index}/options/{option_index}"),
                    format!("option `{value}` is listed twice"),
                ));
            }
        }
    }
    check_computed_cycles(definition, &mut problems);
    let mut seen = HashSet::new();
    for (index, composite) in definition.indexes.iter().enumerate() {
        if !seen.insert(&composite.fields) {
            problems.push(Problem::new(
                format!("/indexes/{index}"),
                format!("index {} is defined twice", composite.describe()),
            ));
        }
        for (position, name) in composite.fields.iter().enumerate() {
            let at = format!("/indexes/{index}/fields/{position}");
            match definition.field(name.as_str()) {
                None => problems.push(Problem::new(
                    at,
                    format!("`{name}` is not a field of this entity"),
                )),
                Some(field) if !field.active => problems.push(Problem::new(
                    at,
                    format!("field `{name}` is deactivated: remove it from the index first"),
                )),
                Some(field) if !field.is_indexable() => problems.push(Problem::new(
                    at,
                    format!(
                        "a field of type `{}` cannot be indexed",
                        describe_type(field.field_type, field.multiple)
                    ),
                )),
                Some(_) => {}
            }
        }
    }
    problems
}

fn check_computed(
    definition: &EntityDefinition,
    index: usize,
    field: &FieldDefinition,
    problems: &mut Vec<Problem>,
) {
    let at = |property: &str| format!("/fields/{index}/{property}");
    if field.required {
        problems.push(Problem::new(
            at("required"),
            "a computed field is always set by its plugin",
        ));
    }
    if field.unique {
        problems.push(Problem::new(
            at("unique"),
            "a computed field cannot be unique (mark it `indexed` to filter and sort fast)",
        ));
    }
    for (position, name) in field.depends_on.iter().enumerate() {
        let at = format!("/fields/{index}/depends_on/{position}");
        if *name == field.name {
            problems.push(Problem::new(at, "a computed field cannot depend on itself"));
        } else if definition.field(name.as_str()).is_none() {
            problems.push(Problem::new(
                at,
                format!("`{name}` is not a field of this entity"),
            ));
        }
    }
    for (position, related) in field.related.iter().enumerate() {
        if related.entity == definition.name {
            problems.push(Problem::new(
                format!("/fields/{index}/related/{position}/entity"),
                "a roll-up over records of the same entity is not supported",
            ));
        }
    }
}

/// Computed fields may depend on other computed fields, but not in a circle.
fn check_computed_cycles(definition: &EntityDefinition, problems: &mut Vec<Problem>) {
    if computed_order(definition).is_none() {
        problems.push(Problem::new(
            "/fields",
            "computed fields depend on each other in a circle (see their `depends_on`)",
        ));
    }
}

/// The computed fields of `definition` in an order where each comes after the computed fields it
/// depends on; `None` when they depend on each other in a circle. A computed field with no
/// `depends_on` depends on every field that is not computed.
pub fn computed_order(definition: &EntityDefinition) -> Option<Vec<&FieldDefinition>> {
    let computed: Vec<&FieldDefinition> = definition
        .fields
        .iter()
        .filter(|field| field.is_computed())
        .collect();
    let mut ordered: Vec<&FieldDefinition> = Vec::with_capacity(computed.len());
    let mut placed: HashSet<&str> = HashSet::new();
    while ordered.len() < computed.len() {
        let ready = computed.iter().find(|field| {
            !placed.contains(field.name.as_str())
                && field.depends_on.iter().all(|name| {
                    // Depending on itself is reported on its own (`check_computed`).
                    *name == field.name
                        || placed.contains(name.as_str())
                        || !definition
                            .field(name.as_str())
                            .is_some_and(FieldDefinition::is_computed)
                })
        })?;
        placed.insert(ready.name.as_str());
        ordered.push(ready);
    }
    Some(ordered)
}

fn describe_type(field_type: FieldType, multiple: bool) -> String {
    if multiple {
        "picklist (multiple)".to_owned()
    } else {
        field_type.as_str().to_owned()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn problems(json: Value) -> Vec<Problem> {
        parse_definition(&json).expect_err("definition should be refused")
    }

    #[test]
    fn the_example_of_the_documentation_is_accepted() {
        let definition =
            parse_definition(&json!({"name": "contact", "label": "Contact", "fields": [
                {"name": "first_name", "type": "text", "required": true, "max_length": 100},
                {"name": "email", "type": "email", "unique": true},
                {"name": "phone", "type": "phone", "indexed": true},
                {"name": "stage", "type": "picklist", "options": ["lead", "customer", "churned"]},
                {"name": "annual_value", "type": "decimal"},
                {"name": "account", "type": "reference", "entity": "account"}
            ]}))
            .unwrap();
        assert_eq!(definition.fields.len(), 6);
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let found = problems(json!({"name": "Contact", "fields": [
            {"name": "a", "type": "text"},
            {"name": "b", "type": "colour"},
            {"name": "c", "type": "picklist"}
        ]}));
        let paths: Vec<&str> = found.iter().map(|p| p.path.as_str()).collect();
        assert!(paths.contains(&"/name"), "{found:?}");
        assert!(paths.contains(&"/fields/1/type"), "{found:?}");
        assert!(paths.contains(&"/fields/2"), "{found:?}");
    }

    #[test]
    fn properties_that_do_not_fit_the_type_are_refused() {
        let found = problems(
            json!({"name": "x", "fields": [{"name": "a", "type": "text", "entity": "y"}]}),
        );
        assert_eq!(found[0].path, "/fields/0");
        assert!(found[0].message.contains("`text`"), "{found:?}");
    }

    #[test]
    fn duplicate_fields_and_options_are_refused() {
        let found = problems(json!({"name": "x", "fields": [
            {"name": "a", "type": "text"},
            {"name": "a", "type": "picklist", "options": ["p", "q", "p"]},
            {"name": "j", "type": "json", "unique": true}
        ]}));
        let paths: Vec<&str> = found.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            ["/fields/1/name", "/fields/1/options/2", "/fields/2/unique"],
            "{found:?}"
        );
    }

    #[test]
    fn computed_fields_come_after_the_computed_fields_they_depend_on() {
        let definition = parse_definition(&json!({"name": "account", "fields": [
            {"name": "tier", "type": "computed", "returns": "text", "plugin": "p", "function": "tier",
             "depends_on": ["score", "size"]},
            {"name": "size", "type": "integer"},
            {"name": "score", "type": "computed", "returns": "integer", "plugin": "p", "function": "score"}
        ]}))
        .expect("a valid definition");
        let order: Vec<&str> = computed_order(&definition)
            .expect("no circle")
            .iter()
            .map(|field| field.name.as_str())
            .collect();
        assert_eq!(order, ["score", "tier"]);
    }

    #[test]
    fn computed_fields_that_depend_on_each_other_in_a_circle_are_refused() {
        let found = problems(json!({"name": "x", "fields": [
            {"name": "a", "type": "computed", "returns": "integer", "plugin": "p", "function": "f", "depends_on": ["c"]},
            {"name": "b", "type": "computed", "returns": "integer", "plugin": "p", "function": "f", "depends_on": ["a"]},
            {"name": "c", "type": "computed", "returns": "integer", "plugin": "p", "function": "f", "depends_on": ["b"]}
        ]}));
        assert_eq!(found.len(), 1, "{found:?}");
        assert!(found[0].message.contains("circle"), "{found:?}");
    }

    #[test]
    fn computed_fields_are_neither_required_nor_unique_nor_self_dependent() {
        let found = problems(json!({"name": "x", "fields": [
            {"name": "a", "type": "computed", "returns": "integer", "plugin": "p", "function": "f",
             "required": true, "unique": true, "depends_on": ["a"]}
        ]}));
        let paths: Vec<&str> = found.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/fields/0/required",
                "/fields/0/unique",
                "/fields/0/depends_on/0"
            ],
            "{found:?}"
        );
    }
}
