//! What changes between two versions of an entity definition, and which changes touch data.

use serde::Serialize;

use super::definition::{CompositeIndex, EntityDefinition, FieldDefinition, FieldType};
use super::record_schema::field_schema;
use super::validation::Problem;

/// One change between two definitions.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "change", rename_all = "snake_case")]
pub enum Change {
    /// Labels or description of the entity.
    EntityDescribed,
    /// A new field: no record is rewritten.
    FieldAdded {
        field: String,
    },
    /// Labels, description or `required`: no data is checked.
    FieldDescribed {
        field: String,
    },
    /// The field's type or constraints changed: every value is converted and checked.
    FieldRetyped {
        field: String,
        from: String,
        to: String,
    },
    IndexAdded {
        field: String,
        unique: bool,
    },
    IndexRemoved {
        field: String,
        unique: bool,
    },
    FieldDeactivated {
        field: String,
    },
    FieldReactivated {
        field: String,
    },
    CompositeIndexAdded {
        fields: Vec<String>,
    },
    CompositeIndexRemoved {
        fields: Vec<String>,
    },
}

impl Change {
    /// The field whose values must be converted and checked, if any.
    pub fn retyped_field(&self) -> Option<&str> {
        match self {
            Change::FieldRetyped { field, .. } => Some(field),
            _ => None,
        }
    }
}

fn describe_type(field: &FieldDefinition) -> String {
    let mut text = field.field_type.as_str().to_owned();
    if field.is_computed() {
        text = format!("computed {}", field.value_type().as_str());
    }
    if field.multiple {
        text.push_str(" (multiple)");
    }
    text
}

/// The changes from `old` to `new`. Dropping a field from the definition is refused: fields are
/// removed in two phases (deactivate, then purge).
pub fn diff(old: &EntityDefinition, new: &EntityDefinition) -> Result<Vec<Change>, Vec<Problem>> {
    let mut problems = Vec::new();
    for field in &old.fields {
        if new.field(field.name.as_str()).is_none() {
            problems.push(Problem::new(
                "/fields",
                format!(
                    "field `{}` is missing: to remove a field, first deactivate it (`\"active\": false`), then purge it with \
                     `DELETE /api/v1/entities/{}/fields/{}`",
                    field.name, old.name, field.name
                ),
            ));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut problems = Vec::new();
    let mut changes = Vec::new();
    if (
        &old.label,
        &old.plural_label,
        &old.description,
        &old.labels,
        &old.plural_labels,
    ) != (
        &new.label,
        &new.plural_label,
        &new.description,
        &new.labels,
        &new.plural_labels,
    ) {
        changes.push(Change::EntityDescribed);
    }
    for field in &new.fields {
        let name = field.name.to_string();
        let Some(before) = old.field(field.name.as_str()) else {
            changes.push(Change::FieldAdded {
                field: name.clone(),
            });
            if field.needs_index() {
                changes.push(Change::IndexAdded {
                    field: name,
                    unique: field.unique,
                });
            }
            continue;
        };
        if field.field_type == FieldType::AutoNumber && before.field_type != FieldType::AutoNumber {
            problems.push(Problem::new(
                "/fields",
                format!("field `{name}` cannot become an auto-number: add a new auto-number field instead"),
            ));
            continue;
        }
        if before.active && !field.active {
            changes.push(Change::FieldDeactivated {
                field: name.clone(),
            });
        }
        if !before.active && field.active {
            changes.push(Change::FieldReactivated {
                field: name.clone(),
            });
        }
        let retyped = before.field_type != field.field_type
            || before.multiple != field.multiple
            || before.entity != field.entity
            || field_schema(&comparable(before, field)) != field_schema(&strip_labels(field));
        if retyped {
            changes.push(Change::FieldRetyped {
                field: name.clone(),
                from: describe_type(before),
                to: describe_type(field),
            });
        } else if (
            &before.label,
            &before.labels,
            &before.description,
            before.required,
        ) != (
            &field.label,
            &field.labels,
            &field.description,
            field.required,
        ) || before.options != field.options
            || (before.prefix.as_ref(), before.digits) != (field.prefix.as_ref(), field.digits)
        {
            changes.push(Change::FieldDescribed {
                field: name.clone(),
            });
        }
        let index_before = before.needs_index().then_some(before.unique);
        let index_after = field.needs_index().then_some(field.unique);
        // A retyped field's index is rebuilt: the SQL expression of its value may have changed.
        if index_before != index_after || (retyped && index_before.is_some()) {
            if let Some(unique) = index_before {
                changes.push(Change::IndexRemoved {
                    field: name.clone(),
                    unique,
                });
            }
            if let Some(unique) = index_after {
                changes.push(Change::IndexAdded {
                    field: name,
                    unique,
                });
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    // Composite indexes: gone, new, or rebuilt because one of their fields was retyped.
    let retyped: Vec<&str> = changes.iter().filter_map(Change::retyped_field).collect();
    let names = |index: &CompositeIndex| {
        index
            .fields
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    let mut index_changes = Vec::new();
    for index in &old.indexes {
        let kept = new.indexes.contains(index);
        let rebuilt = kept
            && index
                .fields
                .iter()
                .any(|field| retyped.contains(&field.as_str()));
        if !kept || rebuilt {
            index_changes.push(Change::CompositeIndexRemoved {
                fields: names(index),
            });
        }
        if rebuilt {
            index_changes.push(Change::CompositeIndexAdded {
                fields: names(index),
            });
        }
    }
    for index in new
        .indexes
        .iter()
        .filter(|index| !old.indexes.contains(index))
    {
        index_changes.push(Change::CompositeIndexAdded {
            fields: names(index),
        });
    }
    changes.extend(index_changes);
    Ok(changes)
}

/// `before` as it compares with `after`: labels ignored, and options that were only added
/// (every old value still allowed) need no check of the data.
fn comparable(before: &FieldDefinition, after: &FieldDefinition) -> FieldDefinition {
    let mut field = strip_labels(before);
    let new_values = after.option_values();
    if before
        .option_values()
        .iter()
        .all(|value| new_values.contains(value))
    {
        field.options = after.options.clone();
    }
    field
}

/// The field without what does not affect its values (labels), to compare value schemas.
fn strip_labels(field: &FieldDefinition) -> FieldDefinition {
    FieldDefinition {
        label: None,
        labels: Default::default(),
        description: None,
        // How numbers written later are read: stored values stay as they are.
        region: None,
        ..field.clone()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::metadata::validation::parse_definition;

    fn definition(fields: serde_json::Value) -> EntityDefinition {
        parse_definition(&json!({"name": "deal", "fields": fields})).unwrap()
    }

    #[test]
    fn adding_a_field_and_an_index_is_reported() {
        let old = definition(json!([{"name": "a", "type": "text"}]));
        let new = definition(
            json!([{"name": "a", "type": "text", "label": "A"}, {"name": "b", "type": "integer", "indexed": true}]),
        );
        assert_eq!(
            diff(&old, &new).unwrap(),
            vec![
                Change::FieldDescribed { field: "a".into() },
                Change::FieldAdded { field: "b".into() },
                Change::IndexAdded {
                    field: "b".into(),
                    unique: false
                },
            ]
        );
    }

    #[test]
    fn a_type_change_rebuilds_the_index() {
        let old = definition(json!([{"name": "a", "type": "text", "unique": true}]));
        let new = definition(json!([{"name": "a", "type": "integer", "unique": true}]));
        assert_eq!(
            diff(&old, &new).unwrap(),
            vec![
                Change::FieldRetyped {
                    field: "a".into(),
                    from: "text".into(),
                    to: "integer".into()
                },
                Change::IndexRemoved {
                    field: "a".into(),
                    unique: true
                },
                Change::IndexAdded {
                    field: "a".into(),
                    unique: true
                },
            ]
        );
    }

    #[test]
    fn narrowing_options_is_a_change_of_values() {
        let old = definition(json!([{"name": "s", "type": "picklist", "options": ["a", "b"]}]));
        let new = definition(json!([{"name": "s", "type": "picklist", "options": ["a"]}]));
        assert_eq!(diff(&old, &new).unwrap()[0].retyped_field(), Some("s"));
    }

    #[test]
    fn adding_options_needs_no_check_of_the_data() {
        let old = definition(json!([{"name": "s", "type": "picklist", "options": ["a"]}]));
        let new = definition(
            json!([{"name": "s", "type": "picklist", "options": ["a", {"value": "b", "label": "B"}]}]),
        );
        assert_eq!(
            diff(&old, &new).unwrap(),
            vec![Change::FieldDescribed { field: "s".into() }]
        );
    }

    #[test]
    fn a_field_cannot_become_an_auto_number() {
        let old = definition(json!([{"name": "n", "type": "text"}]));
        let new = definition(json!([{"name": "n", "type": "auto_number"}]));
        assert!(
            diff(&old, &new).unwrap_err()[0]
                .message
                .contains("auto-number")
        );
    }

    #[test]
    fn composite_indexes_are_added_removed_and_rebuilt_with_their_fields() {
        let with_index = |kind: &str, indexes: serde_json::Value| {
            parse_definition(&json!({"name": "deal", "fields": [
                {"name": "a", "type": "text"}, {"name": "b", "type": kind}
            ], "indexes": indexes}))
            .unwrap()
        };
        let none = with_index("integer", json!([]));
        let ab = with_index("integer", json!([{"fields": ["a", "b"]}]));
        let added = Change::CompositeIndexAdded {
            fields: vec!["a".into(), "b".into()],
        };
        let removed = Change::CompositeIndexRemoved {
            fields: vec!["a".into(), "b".into()],
        };
        assert_eq!(diff(&none, &ab).unwrap(), vec![added.clone()]);
        assert_eq!(diff(&ab, &none).unwrap(), vec![removed.clone()]);
        let retyped = diff(&ab, &with_index("decimal", json!([{"fields": ["a", "b"]}]))).unwrap();
        assert_eq!(retyped[1..], [removed, added]);
    }

    #[test]
    fn dropping_a_field_is_refused_with_the_two_phase_procedure() {
        let old = definition(json!([{"name": "a", "type": "text"}]));
        let new = definition(json!([]));
        let problems = diff(&old, &new).unwrap_err();
        assert!(problems[0].message.contains("deactivate"), "{problems:?}");
    }
}
