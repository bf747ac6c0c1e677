//! Conditions of triggers and branches: the filter language of lists, evaluated against one
//! record in memory with the semantics the SQL of lists has (an empty field matches no
//! comparison; `contains` and `startswith` ignore case; `contains` on a list looks for a member).

use serde_json::{Map, Value};

use super::definition::FieldChange;
use crate::records::filter::{Comparison, Filter, Literal};

/// Whether `filter` holds for `record` (field values plus system fields `_id`, `_owner`, …).
pub fn holds(filter: &Filter, record: &Map<String, Value>) -> bool {
    match filter {
        Filter::And(left, right) => holds(left, record) && holds(right, record),
        Filter::Or(left, right) => holds(left, record) || holds(right, record),
        Filter::Not(inner) => !holds(inner, record),
        Filter::Compare { field, op, value } => match record.get(field) {
            None | Some(Value::Null) => false,
            Some(actual) => compare(actual, value).is_some_and(|ordering| match op {
                Comparison::Eq => ordering.is_eq(),
                Comparison::Ne => ordering.is_ne(),
                Comparison::Gt => ordering.is_gt(),
                Comparison::Ge => ordering.is_ge(),
                Comparison::Lt => ordering.is_lt(),
                Comparison::Le => ordering.is_le(),
            }),
        },
        Filter::In { field, values } => record.get(field).is_some_and(|actual| {
            values
                .iter()
                .any(|value| compare(actual, value).is_some_and(|o| o.is_eq()))
        }),
        Filter::Contains { field, value } => {
            let Literal::Text(needle) = value else {
                return false;
            };
            match record.get(field) {
                Some(Value::String(text)) => text.to_lowercase().contains(&needle.to_lowercase()),
                Some(Value::Array(items)) => items.iter().any(|item| item.as_str() == Some(needle)),
                _ => false,
            }
        }
        Filter::StartsWith { field, value } => match (record.get(field), value) {
            (Some(Value::String(text)), Literal::Text(prefix)) => {
                text.to_lowercase().starts_with(&prefix.to_lowercase())
            }
            _ => false,
        },
        Filter::IsNull { field, negated } => {
            let empty = matches!(record.get(field), None | Some(Value::Null));
            empty != *negated
        }
    }
}

/// Orders a stored value against a literal; `None` when they are of different kinds.
fn compare(actual: &Value, literal: &Literal) -> Option<std::cmp::Ordering> {
    match (actual, literal) {
        (Value::String(text), Literal::Text(other)) => Some(text.as_str().cmp(other)),
        (Value::Number(number), Literal::Int(other)) => {
            number.as_f64()?.partial_cmp(&(*other as f64))
        }
        (Value::Number(number), Literal::Float(other)) => number.as_f64()?.partial_cmp(other),
        (Value::Bool(boolean), Literal::Bool(other)) => Some(boolean.cmp(other)),
        // Decimal fields may be stored as text of a number.
        (Value::String(text), Literal::Int(_) | Literal::Float(_)) => {
            let number: f64 = text.parse().ok()?;
            let other = match literal {
                Literal::Int(int) => *int as f64,
                Literal::Float(float) => *float,
                _ => unreachable!(),
            };
            number.partial_cmp(&other)
        }
        _ => None,
    }
}

/// Whether every change holds between `before` and `after`.
pub fn changed(
    changes: &[FieldChange],
    before: &Map<String, Value>,
    after: &Map<String, Value>,
) -> bool {
    let value =
        |map: &Map<String, Value>, field: &str| map.get(field).cloned().unwrap_or(Value::Null);
    changes.iter().all(|change| {
        let old = value(before, &change.field);
        let new = value(after, &change.field);
        old != new
            && change.from.as_ref().is_none_or(|from| *from == old)
            && change.to.as_ref().is_none_or(|to| *to == new)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::records::filter::parse;
    use serde_json::json;

    fn record(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn conditions_follow_the_semantics_of_list_filters() {
        let r = record(json!({
            "priority": "urgent", "amount": 120, "tags": ["vip", "b2b"], "name": "Ada Lovelace",
            "active": true
        }));
        let check = |text: &str| holds(&parse(text).unwrap(), &r);
        assert!(check("priority eq 'urgent' and amount gt 100"));
        assert!(!check("priority eq 'ordinary' or amount lt 100"));
        assert!(check("not (priority eq 'ordinary')"));
        assert!(check("priority in ('low', 'urgent')"));
        assert!(check("tags contains 'vip'"));
        assert!(check("name contains 'LOVE' and name startswith 'ada'"));
        assert!(check("resolved_at is null and priority is not null"));
        assert!(check("active eq true"));
        // An empty field matches no comparison, not even `ne`.
        assert!(!check("resolved_at ne 'x'"));
        assert!(!check("resolved_at eq 'x'"));
        // Kinds that differ never match.
        assert!(!check("amount eq 'x'"));
    }

    #[test]
    fn changes_compare_before_and_after() {
        let before = record(json!({"status": "open", "owner": "a"}));
        let after = record(json!({"status": "escalated", "owner": "a"}));
        let change = |value: Value| -> Vec<FieldChange> { serde_json::from_value(value).unwrap() };
        assert!(changed(
            &change(json!([{"field": "status"}])),
            &before,
            &after
        ));
        assert!(!changed(
            &change(json!([{"field": "owner"}])),
            &before,
            &after
        ));
        assert!(changed(
            &change(json!([{"field": "status", "from": "open", "to": "escalated"}])),
            &before,
            &after
        ));
        assert!(!changed(
            &change(json!([{"field": "status", "from": "closed"}])),
            &before,
            &after
        ));
        assert!(changed(
            &change(json!([{"field": "closed_at", "from": null}])),
            &before,
            &record(json!({"closed_at": "2026-01-01"}))
        ));
    }
}
