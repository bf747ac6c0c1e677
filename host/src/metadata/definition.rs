//! The typed form of an entity definition, as admins write it (`schemas/entity.schema.json`).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::domain::{EntityName, FieldName};

/// An entity type: its API name, labels and fields.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntityDefinition {
    pub name: EntityName,
    /// Only in API bodies: the version a client read (checked on update) or is shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plural_label: Option<String>,
    /// The label in other languages, by BCP 47 tag (`zh-CN`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub plural_labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub fields: Vec<FieldDefinition>,
    /// Composite indexes over several fields.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub indexes: Vec<CompositeIndex>,
}

/// An index over several fields, in order: equality filters on the first ones and a sort on
/// the next one are served by the index alone.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompositeIndex {
    pub fields: Vec<FieldName>,
}

impl CompositeIndex {
    /// A stable name for the database index: the entity id and a digest of the field list.
    pub fn index_name(&self, entity_id: i64) -> String {
        use sha2::{Digest, Sha256};
        let names: Vec<&str> = self.fields.iter().map(FieldName::as_str).collect();
        let digest = Sha256::digest(names.join(",").as_bytes());
        let short: String = digest[..6]
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        format!("rc_{entity_id}_{short}")
    }

    pub fn describe(&self) -> String {
        let names: Vec<String> = self
            .fields
            .iter()
            .map(|field| format!("`{field}`"))
            .collect();
        format!("({})", names.join(", "))
    }
}

impl EntityDefinition {
    pub fn field(&self, name: &str) -> Option<&FieldDefinition> {
        self.fields.iter().find(|field| field.name.as_str() == name)
    }

    pub fn active_fields(&self) -> impl Iterator<Item = &FieldDefinition> {
        self.fields.iter().filter(|field| field.active)
    }

    /// The entities this one points at through reference fields.
    pub fn referenced_entities(&self) -> impl Iterator<Item = &EntityName> {
        self.fields.iter().filter_map(|field| field.entity.as_ref())
    }
}

/// The type of a field; decides its JSON representation, validation and SQL expression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldType {
    Text,
    LongText,
    Integer,
    Decimal,
    Currency,
    Boolean,
    Date,
    Datetime,
    Email,
    Phone,
    Url,
    Picklist,
    Reference,
    Json,
    AutoNumber,
    /// A value a plugin computes from other fields (`returns` says its type).
    Computed,
}

impl FieldType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Text => "text",
            Self::LongText => "long_text",
            Self::Integer => "integer",
            Self::Decimal => "decimal",
            Self::Currency => "currency",
            Self::Boolean => "boolean",
            Self::Date => "date",
            Self::Datetime => "datetime",
            Self::Email => "email",
            Self::Phone => "phone",
            Self::Url => "url",
            Self::Picklist => "picklist",
            Self::Reference => "reference",
            Self::Json => "json",
            Self::AutoNumber => "auto_number",
            Self::Computed => "computed",
        }
    }

    /// Types whose values are strings searched by `q=` (text search).
    pub fn is_searchable_text(self) -> bool {
        matches!(
            self,
            Self::Text | Self::LongText | Self::Email | Self::Phone | Self::Url | Self::AutoNumber
        )
    }
}

/// A picklist option: a bare value, or a value with a label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PicklistOption {
    Value(String),
    Labelled {
        value: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        label: Option<String>,
        /// The record is finished in this state (a case `closed`, an opportunity `won`): lists
        /// of "open" records, such as the screen pop's, leave it out.
        #[serde(default, skip_serializing_if = "is_false")]
        closed: bool,
    },
}

impl PicklistOption {
    pub fn value(&self) -> &str {
        match self {
            Self::Value(value) | Self::Labelled { value, .. } => value,
        }
    }

    pub fn closed(&self) -> bool {
        matches!(self, Self::Labelled { closed: true, .. })
    }
}

fn is_false(value: &bool) -> bool {
    !*value
}

fn is_true(value: &bool) -> bool {
    *value
}

fn yes() -> bool {
    true
}

/// One field of an entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldDefinition {
    pub name: FieldName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The label in other languages, by BCP 47 tag (`zh-CN`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(rename = "type")]
    pub field_type: FieldType,
    #[serde(default, skip_serializing_if = "is_false")]
    pub required: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub unique: bool,
    #[serde(default, skip_serializing_if = "is_false")]
    pub indexed: bool,
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub active: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_length: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub options: Option<Vec<PicklistOption>>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub multiple: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entity: Option<EntityName>,
    /// phone: the country (ISO 3166 alpha-2, `CN`) of numbers written without a country code.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digits: Option<u8>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start: Option<i64>,
    /// computed: the type of the value (decides validation, filters, sorts and indexes).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub returns: Option<FieldType>,
    /// computed: the plugin that computes the value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
    /// computed: the function of the plugin's manifest (`provides.computed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub function: Option<String>,
    /// computed: the fields of this entity the value depends on (empty: any field that is not
    /// computed, or none when `related` is given).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<FieldName>,
    /// computed: records of other entities the value depends on (a roll-up).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub related: Vec<RelatedDependency>,
}

/// A computed field's dependency on the records of another entity that point at this one,
/// e.g. an account's value tier on the `order` records whose `account` is the account: a change
/// of `fields` (or of `via`) in such a record, its creation or deletion recomputes the field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelatedDependency {
    pub entity: EntityName,
    /// The reference field of `entity` that points at this entity.
    pub via: FieldName,
    /// The fields of `entity` the value depends on (empty: any field).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<FieldName>,
}

/// Text fields hold at most this many characters unless `max_length` says otherwise.
pub const DEFAULT_TEXT_LENGTH: u32 = 255;
/// Long text fields hold at most this many characters unless `max_length` says otherwise.
pub const DEFAULT_LONG_TEXT_LENGTH: u32 = 131_072;

impl FieldDefinition {
    /// Fields whose value the host computes; clients cannot write them.
    pub fn is_read_only(&self) -> bool {
        matches!(self.field_type, FieldType::AutoNumber | FieldType::Computed)
    }

    /// The type of the field's values: its own type, or what a computed field returns. Decides
    /// validation, normalization, filters, sorts and indexes.
    pub fn value_type(&self) -> FieldType {
        match (self.field_type, self.returns) {
            (FieldType::Computed, Some(returns)) => returns,
            (FieldType::Computed, None) => FieldType::Json,
            (field_type, _) => field_type,
        }
    }

    pub fn is_computed(&self) -> bool {
        self.field_type == FieldType::Computed
    }

    pub fn option_values(&self) -> Vec<&str> {
        self.options
            .iter()
            .flatten()
            .map(PicklistOption::value)
            .collect()
    }

    /// Whether the field can carry a database index (scalars only).
    pub fn is_indexable(&self) -> bool {
        let value_type = self.value_type();
        !(matches!(value_type, FieldType::Json | FieldType::LongText)
            || (value_type == FieldType::Picklist && self.multiple))
    }

    pub fn needs_index(&self) -> bool {
        self.active && (self.indexed || self.unique)
    }

    pub fn max_length(&self) -> u32 {
        self.max_length.unwrap_or(match self.value_type() {
            FieldType::LongText => DEFAULT_LONG_TEXT_LENGTH,
            _ => DEFAULT_TEXT_LENGTH,
        })
    }

    /// Formats the `n`th auto-number of this field.
    pub fn format_auto_number(&self, n: i64) -> String {
        let digits = usize::from(self.digits.unwrap_or(1));
        format!("{}{n:0digits$}", self.prefix.as_deref().unwrap_or(""))
    }
}

/// The translation of a label for a language tag: the tag itself (`zh-CN`), else one of its
/// language (`zh`, `zh-Hans`), else none.
pub fn translated<'a>(labels: &'a BTreeMap<String, String>, tag: &str) -> Option<&'a str> {
    if let Some(label) = labels.get(tag) {
        return Some(label);
    }
    let language = tag.split('-').next().unwrap_or(tag);
    labels
        .iter()
        .find(|(key, _)| key.split('-').next() == Some(language))
        .map(|(_, label)| label.as_str())
}

/// Names no field may take: they would clash with the system columns in filters and sorts.
pub fn is_reserved_field_name(name: &str) -> bool {
    matches!(
        name,
        "and"
            | "or"
            | "not"
            | "null"
            | "true"
            | "false"
            | "in"
            | "is"
            | "contains"
            | "startswith"
            | "eq"
            | "ne"
            | "gt"
            | "ge"
            | "lt"
            | "le"
    )
}

/// Parses JSON that already passed `schemas/entity.schema.json`.
pub fn from_json(value: &Value) -> Result<EntityDefinition, serde_json::Error> {
    serde_json::from_value(value.clone())
}

/// The definition as it is stored and exported.
pub fn to_json(definition: &EntityDefinition) -> Value {
    serde_json::to_value(definition).expect("entity definitions serialize")
}
