//! Compiles an entity definition into the JSON Schema that validates record writes, and turns
//! the validator's findings into per-field messages.

use std::collections::BTreeMap;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use serde_json::{Map, Value, json};

use super::definition::{EntityDefinition, FieldDefinition, FieldType};

/// The largest integer a JSON client can hold exactly (2^53 - 1).
pub const MAX_SAFE_INTEGER: i64 = 9_007_199_254_740_991;

/// What the schema describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// What a client may write: active, writable fields only, no unknown keys.
    Input,
    /// What a client reads back: read-only fields included and marked so.
    Output,
}

/// The JSON Schema of one field's value.
pub fn field_schema(field: &FieldDefinition) -> Value {
    let mut schema = match field.value_type() {
        FieldType::Text | FieldType::LongText => {
            json!({"type": "string", "maxLength": field.max_length()})
        }
        FieldType::Email => json!({"type": "string", "format": "email", "maxLength": 320}),
        FieldType::Phone => json!({"type": "string", "pattern": "^\\+?[0-9(][0-9 ()./x-]{2,39}$"}),
        FieldType::Url => {
            json!({"type": "string", "format": "uri", "pattern": "^https?://", "maxLength": 2048})
        }
        FieldType::Integer => {
            let minimum = field.min.map_or(json!(-MAX_SAFE_INTEGER), |min| json!(min));
            let maximum = field.max.map_or(json!(MAX_SAFE_INTEGER), |max| json!(max));
            json!({"type": "integer", "minimum": minimum, "maximum": maximum})
        }
        FieldType::Decimal => number_schema(field),
        FieldType::Currency => json!({
            "type": "object",
            "additionalProperties": false,
            "required": ["amount", "currency"],
            "properties": {
                "amount": number_schema(field),
                "currency": {"type": "string", "pattern": "^[A-Z]{3}$", "description": "ISO 4217 code"}
            }
        }),
        FieldType::Boolean => json!({"type": "boolean"}),
        FieldType::Date => json!({"type": "string", "format": "date"}),
        FieldType::Datetime => json!({"type": "string", "format": "date-time"}),
        FieldType::Picklist if field.multiple => json!({
            "type": "array",
            "uniqueItems": true,
            "items": {"enum": field.option_values()}
        }),
        FieldType::Picklist => json!({"type": "string", "enum": field.option_values()}),
        FieldType::Reference => json!({"type": "string", "format": "uuid"}),
        FieldType::Json => json!({}),
        FieldType::AutoNumber => json!({"type": "string"}),
        // `value_type` never answers `computed`: a computed field has the schema of what it returns.
        FieldType::Computed => json!({}),
    };
    let object = schema.as_object_mut().expect("field schemas are objects");
    if let Some(label) = &field.label {
        object.insert("title".into(), json!(label));
    }
    if let Some(description) = &field.description {
        object.insert("description".into(), json!(description));
    }
    schema
}

fn number_schema(field: &FieldDefinition) -> Value {
    let mut schema = json!({"type": "number"});
    if let Some(min) = field.min {
        schema["minimum"] = json!(min);
    }
    if let Some(max) = field.max {
        schema["maximum"] = json!(max);
    }
    schema
}

/// The JSON Schema of a record body of this entity.
pub fn record_schema(definition: &EntityDefinition, purpose: Purpose) -> Value {
    let mut properties = Map::new();
    let mut required = Vec::new();
    for field in definition.active_fields() {
        if purpose == Purpose::Input && field.is_read_only() {
            continue;
        }
        let mut schema = field_schema(field);
        if purpose == Purpose::Output && field.is_read_only() {
            schema["readOnly"] = json!(true);
        }
        if field.required && !field.is_read_only() {
            required.push(json!(field.name.as_str()));
        }
        properties.insert(field.name.to_string(), schema);
    }
    let mut schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": definition.label.clone().unwrap_or_else(|| definition.name.to_string()),
        "type": "object",
        "properties": properties,
        "required": required,
    });
    if purpose == Purpose::Input {
        schema["additionalProperties"] = json!(false);
    }
    schema
}

/// Builds the validator of a record schema.
pub fn validator(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options()
        .should_validate_formats(true)
        .build(schema)
        .map_err(|error| error.to_string())
}

/// Problems found in a record body, by field name.
pub type FieldErrors = BTreeMap<String, Vec<String>>;

/// Validates a record body and returns every problem, by field.
pub fn check(validator: &jsonschema::Validator, body: &Value) -> FieldErrors {
    let mut errors = FieldErrors::new();
    for error in validator.iter_errors(body) {
        let path = error.instance_path().as_str().to_owned();
        let mut segments = path.trim_start_matches('/').splitn(2, '/');
        let field = segments.next().unwrap_or_default().to_owned();
        let rest = segments
            .next()
            .map(|rest| format!(" (at `{rest}`)"))
            .unwrap_or_default();
        let (field, message) = match error.kind() {
            ValidationErrorKind::Required { property } if field.is_empty() => (
                property.as_str().unwrap_or_default().to_owned(),
                "is required".to_owned(),
            ),
            ValidationErrorKind::AdditionalProperties { unexpected } if field.is_empty() => {
                for name in unexpected {
                    errors
                        .entry(name.clone())
                        .or_default()
                        .push("is not a field of this entity".to_owned());
                }
                continue;
            }
            ValidationErrorKind::Type { kind } => {
                let expected = match kind {
                    TypeKind::Single(expected) => expected.to_string(),
                    TypeKind::Multiple(expected) => format!("{expected:?}"),
                };
                (
                    field,
                    format!(
                        "expected {expected}, got {}{rest}",
                        json_type(error.instance())
                    ),
                )
            }
            ValidationErrorKind::Enum { options } => (
                field,
                format!(
                    "{} is not one of the options {}{rest}",
                    error.instance(),
                    options
                ),
            ),
            ValidationErrorKind::Format { format } => (
                field,
                format!("{} is not a valid {format}{rest}", error.instance()),
            ),
            ValidationErrorKind::Pattern { .. } if rest.contains("currency") => (
                field,
                format!(
                    "{} is not an ISO 4217 currency code{rest}",
                    error.instance()
                ),
            ),
            ValidationErrorKind::Pattern { pattern } => (
                field,
                format!("{} does not match `{pattern}`{rest}", error.instance()),
            ),
            ValidationErrorKind::MaxLength { limit } => {
                (field, format!("is longer than {limit} characters{rest}"))
            }
            _ => (field, format!("{error}{rest}")),
        };
        errors.entry(field).or_default().push(message);
    }
    errors
}

fn json_type(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(number) if number.is_i64() || number.is_u64() => "an integer",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::metadata::validation::parse_definition;

    /// A field definition of any type, with a value it accepts and one it refuses.
    fn field() -> impl Strategy<Value = (Value, Value, Value)> {
        let text = (1u32..50).prop_map(|max| {
            (
                json!({"type": "text", "max_length": max}),
                json!("a".repeat(max as usize)),
                json!("a".repeat(max as usize + 1)),
            )
        });
        let integer = (-1000i64..1000, 0i64..1000).prop_map(|(min, span)| {
            (
                json!({"type": "integer", "min": min, "max": min + span}),
                json!(min + span),
                json!(min - 1),
            )
        });
        let decimal = any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(|value| {
                (
                    json!({"type": "decimal"}),
                    json!(value),
                    json!(value.to_string()),
                )
            });
        let picklist = prop::collection::btree_set("[a-z]{1,8}", 1..6).prop_map(|options| {
            let options: Vec<String> = options.into_iter().collect();
            let first = options[0].clone();
            (
                json!({"type": "picklist", "options": options}),
                json!(first),
                json!("NOT-AN-OPTION"),
            )
        });
        let multiple = prop::collection::btree_set("[a-z]{1,8}", 2..6).prop_map(|options| {
            let options: Vec<String> = options.into_iter().collect();
            let both = json!([options[0], options[1]]);
            let twice = json!([options[0], options[0]]);
            (
                json!({"type": "picklist", "multiple": true, "options": options}),
                both,
                twice,
            )
        });
        let fixed = prop_oneof![
            Just((json!({"type": "boolean"}), json!(true), json!("true"))),
            Just((
                json!({"type": "date"}),
                json!("2026-02-28"),
                json!("2026-02-30")
            )),
            Just((
                json!({"type": "datetime"}),
                json!("2026-02-28T10:00:00Z"),
                json!("noon")
            )),
            Just((
                json!({"type": "email"}),
                json!("a@example.com"),
                json!("not an email")
            )),
            Just((
                json!({"type": "url"}),
                json!("https://example.com"),
                json!("ftp://example.com")
            )),
            Just((
                json!({"type": "phone"}),
                json!("+33 1 23 45 67 89"),
                json!("call me")
            )),
            Just((
                json!({"type": "currency"}),
                json!({"amount": 1.5, "currency": "EUR"}),
                json!({"amount": 1.5})
            )),
            Just((
                json!({"type": "reference", "entity": "other"}),
                json!("01a2026d-7296-77d8-ae34-2eb46a99032f"),
                json!(42)
            )),
        ];
        prop_oneof![text, integer, decimal, picklist, multiple, fixed]
    }

    proptest! {
        /// Whatever the definition, the compiled schema builds, accepts a valid record, and
        /// refuses — naming the field — a record with one wrong value or an unknown field.
        #[test]
        fn compiled_schemas_accept_valid_records_and_name_the_wrong_field(
            fields in prop::collection::vec(field(), 1..6),
            required in any::<bool>(),
        ) {
            let mut definitions = Vec::new();
            let mut valid = serde_json::Map::new();
            for (index, (mut definition, good, _)) in fields.iter().cloned().enumerate() {
                definition["name"] = json!(format!("f{index}"));
                definition["required"] = json!(required && index == 0);
                definitions.push(definition);
                valid.insert(format!("f{index}"), good);
            }
            let entity = parse_definition(&json!({"name": "thing", "fields": definitions})).unwrap();
            let validator = validator(&record_schema(&entity, Purpose::Input)).unwrap();
            prop_assert!(check(&validator, &Value::Object(valid.clone())).is_empty());

            for (index, (_, _, bad)) in fields.iter().enumerate() {
                let mut invalid = valid.clone();
                invalid.insert(format!("f{index}"), bad.clone());
                let errors = check(&validator, &Value::Object(invalid));
                prop_assert_eq!(errors.keys().cloned().collect::<Vec<_>>(), vec![format!("f{index}")]);
            }
            let mut unknown = valid.clone();
            unknown.insert("zz".into(), json!(1));
            prop_assert!(check(&validator, &Value::Object(unknown)).contains_key("zz"));
            if required {
                let mut missing = valid;
                missing.remove("f0");
                let errors = check(&validator, &Value::Object(missing));
                prop_assert_eq!(errors.get("f0"), Some(&vec!["is required".to_owned()]));
            }
        }
    }
}
