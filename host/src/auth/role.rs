//! Roles: what the users holding one may do, as data (`schemas/role.schema.json`).

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::metadata::validation::{Problem, schema_problems, shipped_schema};

/// Which records a permission covers, from none to all; a wider scope includes the narrower.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    #[default]
    None,
    /// Records the user owns.
    Own,
    /// Records owned by a member of one of the user's teams (the user included).
    Team,
    All,
}

impl Scope {
    fn is_none(&self) -> bool {
        *self == Scope::None
    }
}

/// What a user may do with one field of the records they may read.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum FieldAccess {
    /// Hidden everywhere.
    None,
    /// Shown, never written.
    Read,
    /// Shown, and written where the record may be written.
    #[default]
    Write,
}

/// The permissions of a role on one entity.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub create: bool,
    #[serde(default, skip_serializing_if = "Scope::is_none")]
    pub read: Scope,
    #[serde(default, skip_serializing_if = "Scope::is_none")]
    pub update: Scope,
    #[serde(default, skip_serializing_if = "Scope::is_none")]
    pub delete: Scope,
    /// Fields not named are [`FieldAccess::Write`].
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub fields: BTreeMap<String, FieldAccess>,
}

impl Grant {
    /// Everything, on every record and field.
    pub fn full() -> Self {
        Self {
            create: true,
            read: Scope::All,
            update: Scope::All,
            delete: Scope::All,
            fields: BTreeMap::new(),
        }
    }

    /// Whether the grant gives anything at all.
    pub fn is_empty(&self) -> bool {
        !self.create
            && self.read == Scope::None
            && self.update == Scope::None
            && self.delete == Scope::None
    }

    /// The access to a field.
    pub fn field(&self, name: &str) -> FieldAccess {
        self.fields.get(name).copied().unwrap_or_default()
    }
}

/// A role as stored and served.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleDefinition {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub admin: bool,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reassign: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub entities: BTreeMap<String, Grant>,
}

/// `schemas/role.schema.json`.
pub const ROLE_SCHEMA: &str = include_str!("../../../schemas/role.schema.json");

/// The role every tenant has, which may do everything; it cannot be changed or deleted.
pub const ADMINISTRATOR: &str = "administrator";
/// The role every tenant starts with for its other users: every record of every entity, and
/// nothing of the administration. Tenants may change or delete it.
pub const MEMBER: &str = "member";

impl RoleDefinition {
    /// The role's permissions on an entity: its own, else those of `*`, else none.
    pub fn grant(&self, entity: &str) -> Grant {
        if self.admin {
            return Grant::full();
        }
        self.entities
            .get(entity)
            .or_else(|| self.entities.get("*"))
            .cloned()
            .unwrap_or_default()
    }

    pub fn administrator() -> Self {
        Self {
            name: ADMINISTRATOR.to_owned(),
            label: Some("Administrator".to_owned()),
            description: Some(
                "Manages the tenant: metadata, plugins, packs, workflows, users and roles; works with every record."
                    .to_owned(),
            ),
            admin: true,
            reassign: true,
            entities: BTreeMap::new(),
        }
    }

    pub fn member() -> Self {
        Self {
            name: MEMBER.to_owned(),
            label: Some("Member".to_owned()),
            description: Some(
                "Works with every record of every entity; manages nothing.".to_owned(),
            ),
            admin: false,
            reassign: false,
            entities: BTreeMap::from([("*".to_owned(), Grant::full())]),
        }
    }

    /// Parses and checks a role against `schemas/role.schema.json`.
    pub fn parse(json: &Value) -> Result<Self, Vec<Problem>> {
        static SCHEMA: LazyLock<jsonschema::Validator> =
            LazyLock::new(|| shipped_schema("role.schema.json", ROLE_SCHEMA));
        let problems = schema_problems(&SCHEMA, json);
        if !problems.is_empty() {
            return Err(problems);
        }
        serde_json::from_value(json.clone())
            .map_err(|error| vec![Problem::new("/", error.to_string())])
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).expect("roles serialise")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn grants_fall_back_to_the_wildcard() {
        let rep = RoleDefinition::parse(&json!({
            "name": "sales_rep",
            "entities": {
                "*": {"read": "all"},
                "account": {"create": true, "read": "all", "update": "own",
                            "fields": {"credit_limit": "read", "margin": "none"}}
            }
        }))
        .expect("a valid role");
        assert_eq!(rep.grant("contact").read, Scope::All);
        assert!(!rep.grant("contact").create);
        let account = rep.grant("account");
        assert_eq!(account.update, Scope::Own);
        assert_eq!(account.field("credit_limit"), FieldAccess::Read);
        assert_eq!(account.field("margin"), FieldAccess::None);
        assert_eq!(account.field("name"), FieldAccess::Write);
    }

    #[test]
    fn invalid_roles_are_refused_at_their_path() {
        let problems = RoleDefinition::parse(&json!({
            "name": "Bad Name",
            "entities": {"account": {"read": "some"}}
        }))
        .expect_err("invalid");
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert!(paths.contains(&"/name"), "{problems:?}");
        assert!(paths.contains(&"/entities/account/read"), "{problems:?}");
    }
}
