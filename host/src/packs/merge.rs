//! How an upgrade (or taking back a removed pack's entity) combines three definitions of an
//! entity: the pack's previous version, its new version and the tenant's current one.
//!
//! The rule, field by field: the pack's change wins; where the pack did not change a field, the
//! tenant's version of it stays (a label, an option, `active: false`); what is not the pack's
//! stays as it is; a field the pack drops is deactivated, its data kept; a field the tenant
//! purged stays purged. The entity's labels and description follow the same rule.

use std::collections::BTreeMap;

use serde_json::Value;

/// A definition's `name`.
pub fn name_of(json: &Value) -> String {
    json.get("name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

/// The definition without `version` (applied without an expected version: the pack's
/// transaction is the check).
pub fn without_version(mut json: Value) -> Value {
    if let Some(object) = json.as_object_mut() {
        object.remove("version");
    }
    json
}

pub fn has_field(definition: &Value, name: &str) -> bool {
    definition["fields"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|field| field["name"] == name)
}

pub fn set_active(definition: &mut Value, names: &[String], active: bool) {
    for field in definition["fields"].as_array_mut().into_iter().flatten() {
        if field["name"]
            .as_str()
            .is_some_and(|name| names.iter().any(|n| n == name))
        {
            field["active"] = Value::Bool(active);
        }
    }
}

fn fields_by_name(definition: Option<&Value>) -> BTreeMap<String, Value> {
    definition
        .and_then(|definition| definition["fields"].as_array())
        .into_iter()
        .flatten()
        .map(|field| (name_of(field), field.clone()))
        .collect()
}

fn inactive(field: &Value) -> bool {
    field["active"].as_bool() == Some(false)
}

/// One field of the pack's new version, against the pack's previous one and the tenant's. In
/// `Mode::Adopt` (a removed pack installed again) the pack's field wins.
fn merge_field(
    previous: Option<&Value>,
    next: &Value,
    tenant: Option<&Value>,
    mode: Mode,
) -> Value {
    if mode == Mode::Adopt {
        return next.clone();
    }
    match (previous, tenant) {
        // The pack did not change it: the tenant's stays.
        (Some(previous), Some(tenant)) if previous == next => tenant.clone(),
        // The pack changed it: the pack's, still deactivated if the tenant deactivated it.
        (Some(_), Some(tenant)) if inactive(tenant) => {
            let mut field = next.clone();
            field["active"] = Value::Bool(false);
            field
        }
        _ => next.clone(),
    }
}

/// How the tenant's version of a pack's field counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// An upgrade: what the tenant changed that the pack did not stays.
    Upgrade,
    /// Taking back what a removal kept: the pack's fields win (the removal deactivated some).
    Adopt,
}

/// What a merge gives: the definition to apply, the fields it adds and those it deactivates.
#[derive(Debug, Clone, PartialEq)]
pub struct Merged {
    pub definition: Value,
    pub added: Vec<String>,
    pub deactivated: Vec<String>,
}

/// A pack's entity: `old` the pack's previous definition of it (the installed version's, or the
/// removed one's), `new` the version being applied, `current` the tenant's.
pub fn merge_entity(old: Option<&Value>, new: &Value, current: &Value, mode: Mode) -> Merged {
    let before = fields_by_name(old);
    let now = fields_by_name(Some(current));
    let offered = fields_by_name(Some(new));
    let mut fields = Vec::new();
    let mut added = Vec::new();
    let mut deactivated = Vec::new();
    for field in new["fields"].as_array().into_iter().flatten() {
        let name = name_of(field);
        let tenant = now.get(&name);
        if tenant.is_none() && before.contains_key(&name) && mode == Mode::Upgrade {
            continue; // purged by the tenant
        }
        if tenant.is_none() {
            added.push(name.clone());
        }
        fields.push(merge_field(before.get(&name), field, tenant, mode));
    }
    for field in current["fields"].as_array().into_iter().flatten() {
        let name = name_of(field);
        if offered.contains_key(&name) {
            continue;
        }
        let mut field = field.clone();
        if before.contains_key(&name) && !inactive(&field) {
            field["active"] = Value::Bool(false);
            deactivated.push(name);
        }
        fields.push(field);
    }
    let mut merged = new.clone();
    for key in ["label", "plural_label", "description"] {
        let unchanged =
            mode == Mode::Upgrade && old.is_some_and(|old| old.get(key) == new.get(key));
        match current.get(key) {
            Some(tenant) if unchanged => merged[key] = tenant.clone(),
            None if unchanged => {
                if let Some(object) = merged.as_object_mut() {
                    object.remove(key);
                }
            }
            _ => {}
        }
    }
    merged["fields"] = Value::Array(fields);
    let old_indexes: Vec<Value> = old
        .and_then(|old| old["indexes"].as_array().cloned())
        .unwrap_or_default();
    let mut indexes: Vec<Value> = new["indexes"].as_array().cloned().unwrap_or_default();
    for index in current["indexes"].as_array().into_iter().flatten() {
        if !old_indexes.contains(index) && !indexes.contains(index) {
            indexes.push(index.clone());
        }
    }
    if let Some(object) = merged.as_object_mut() {
        object.remove("indexes");
        if !indexes.is_empty() {
            object.insert("indexes".to_owned(), Value::Array(indexes));
        }
    }
    Merged {
        definition: without_version(merged),
        added,
        deactivated,
    }
}

/// Another pack's entity with a pack's fields merged the same way: `old` the fields the
/// installed version added to it, `new` those of the version being applied.
pub fn merge_extension(old: &[Value], new: &[Value], current: &Value, mode: Mode) -> Merged {
    let before: BTreeMap<String, &Value> = old.iter().map(|f| (name_of(f), f)).collect();
    let offered: BTreeMap<String, &Value> = new.iter().map(|f| (name_of(f), f)).collect();
    let mut merged = current.clone();
    let mut added = Vec::new();
    let mut deactivated = Vec::new();
    let mut fields = Vec::new();
    for field in current["fields"].as_array().into_iter().flatten() {
        let name = name_of(field);
        match (before.get(&name), offered.get(&name)) {
            (previous, Some(next)) => {
                fields.push(merge_field(previous.copied(), next, Some(field), mode))
            }
            (Some(_), None) => {
                let mut field = field.clone();
                if !inactive(&field) {
                    field["active"] = Value::Bool(false);
                    deactivated.push(name);
                }
                fields.push(field);
            }
            (None, None) => fields.push(field.clone()),
        }
    }
    for field in new {
        let name = name_of(field);
        if !has_field(current, &name) && (mode == Mode::Adopt || !before.contains_key(&name)) {
            added.push(name);
            fields.push(field.clone());
        }
    }
    merged["fields"] = Value::Array(fields);
    Merged {
        definition: without_version(merged),
        added,
        deactivated,
    }
}

/// The definition an upgrade with data migrations applies first: the tenant's current one, with
/// each picklist also accepting the new version's options, and the new version's new fields (not
/// required yet). Records then hold old and new values alike while the migrations run; the
/// merged definition applies after them and converts what changed type.
pub fn interim(merged: &Value, current: Option<&Value>) -> Value {
    let Some(current) = current else {
        return merged.clone();
    };
    let offered = fields_by_name(Some(merged));
    let mut interim = current.clone();
    let value_of = |option: &Value| {
        option
            .get("value")
            .cloned()
            .unwrap_or_else(|| option.clone())
    };
    for field in interim["fields"].as_array_mut().into_iter().flatten() {
        let Some(next) = offered.get(&name_of(field)) else {
            continue;
        };
        if let (Some(options), Some(new_options)) = (
            field.get("options").and_then(Value::as_array).cloned(),
            next.get("options").and_then(Value::as_array),
        ) {
            let mut all = options.clone();
            for option in new_options {
                if !options.iter().any(|o| value_of(o) == value_of(option)) {
                    all.push(option.clone());
                }
            }
            field["options"] = Value::Array(all);
        }
    }
    let fields = interim["fields"]
        .as_array_mut()
        .expect("definitions have fields");
    for field in merged["fields"].as_array().into_iter().flatten() {
        if !has_field(current, &name_of(field)) {
            let mut field = field.clone();
            field["required"] = Value::Bool(false);
            fields.push(field);
        }
    }
    without_version(interim)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn field<'v>(definition: &'v Value, name: &str) -> &'v Value {
        definition["fields"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .unwrap_or_else(|| panic!("no field {name} in {definition:#}"))
    }

    #[test]
    fn an_upgrade_keeps_the_tenants_edits_of_what_the_pack_did_not_change() {
        let old = json!({"name": "booth", "label": "Booth", "fields": [
            {"name": "number", "type": "text"},
            {"name": "status", "type": "picklist", "options": ["free", "sold"]},
            {"name": "colour", "type": "text"},
            {"name": "size", "type": "text"},
            {"name": "hall", "type": "text"}]});
        let new = json!({"name": "booth", "label": "Booth", "fields": [
            {"name": "number", "type": "text"},
            {"name": "status", "type": "picklist", "options": ["free", "reserved", "sold"]},
            {"name": "area", "type": "decimal"},
            {"name": "size", "type": "decimal"},
            {"name": "hall", "type": "text"}]});
        let current = json!({"name": "booth", "label": "Stand", "fields": [
            {"name": "number", "type": "text", "label": "Booth no."},
            {"name": "status", "type": "picklist", "options": ["free", "sold"]},
            {"name": "colour", "type": "text"},
            {"name": "size", "type": "text", "active": false},
            {"name": "notes", "type": "long_text"}]});
        let merged = merge_entity(Some(&old), &new, &current, Mode::Upgrade);
        let definition = &merged.definition;
        assert_eq!(
            definition["label"], "Stand",
            "the pack did not change the label"
        );
        assert_eq!(field(definition, "number")["label"], "Booth no.");
        assert_eq!(
            field(definition, "status")["options"],
            json!(["free", "reserved", "sold"]),
            "the pack's change wins"
        );
        assert_eq!(field(definition, "size")["type"], "decimal");
        assert_eq!(
            field(definition, "size")["active"],
            false,
            "still deactivated by the tenant"
        );
        assert_eq!(
            field(definition, "colour")["active"],
            false,
            "dropped: deactivated"
        );
        assert!(
            field(definition, "notes").get("active").is_none(),
            "the tenant's own"
        );
        assert!(
            !has_field(definition, "hall"),
            "purged by the tenant, stays purged"
        );
        assert_eq!(merged.added, ["area"]);
        assert_eq!(merged.deactivated, ["colour"]);

        let between = interim(definition, Some(&current));
        assert_eq!(
            field(&between, "status")["options"],
            json!(["free", "sold", "reserved"]),
            "old and new values are accepted while migrations run"
        );
        assert_eq!(
            field(&between, "size")["type"],
            "text",
            "retyped after the migrations"
        );
        assert!(
            field(&between, "colour").get("active").is_none(),
            "still active"
        );
        assert_eq!(field(&between, "area")["required"], false);
    }

    #[test]
    fn an_extension_changes_only_its_own_fields() {
        let old = [
            json!({"name": "fleet_size", "type": "integer"}),
            json!({"name": "fleet_note", "type": "text"}),
        ];
        let new = [
            json!({"name": "fleet_size", "type": "decimal"}),
            json!({"name": "fleet_contact", "type": "email"}),
        ];
        let current = json!({"name": "account", "fields": [
            {"name": "name", "type": "text"},
            {"name": "fleet_size", "type": "integer"},
            {"name": "fleet_note", "type": "text"}]});
        let merged = merge_extension(&old, &new, &current, Mode::Upgrade);
        let definition = &merged.definition;
        assert_eq!(
            field(definition, "name"),
            &json!({"name": "name", "type": "text"})
        );
        assert_eq!(field(definition, "fleet_size")["type"], "decimal");
        assert_eq!(field(definition, "fleet_note")["active"], false);
        assert_eq!(merged.added, ["fleet_contact"]);
        assert_eq!(merged.deactivated, ["fleet_note"]);
    }
}
