//! Turns list parameters (filter, sort, cursor, search) into SQL against one entity, checking
//! every field name and value type against the entity's definition.

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::filter::{self, Comparison, Filter, Literal};
use crate::metadata::definition::{EntityDefinition, FieldDefinition, FieldType};
use crate::metadata::values::canonical_datetime;
use crate::store::records::StoredRecord;
use crate::store::sql::{QueryBuilder, SqlKind, escape_like, sql_kind};
use crate::store::{Dialect, SqlValue};

/// The default and the largest page size.
pub const DEFAULT_PAGE_SIZE: i64 = 50;
pub const MAX_PAGE_SIZE: i64 = 500;

/// A field a filter or sort can name: a system column or an active field of the entity.
#[derive(Debug, Clone)]
pub enum Target<'d> {
    System {
        column: &'static str,
        kind: SystemKind,
    },
    Field(&'d FieldDefinition),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SystemKind {
    Text,
    Integer,
    Timestamp,
}

const SYSTEM_FIELDS: [(&str, &str, SystemKind); 7] = [
    ("_id", "id", SystemKind::Text),
    ("_version", "version", SystemKind::Integer),
    ("_owner", "owner_id", SystemKind::Text),
    ("_created_at", "created_at", SystemKind::Timestamp),
    ("_created_by", "created_by", SystemKind::Text),
    ("_updated_at", "updated_at", SystemKind::Timestamp),
    ("_updated_by", "updated_by", SystemKind::Text),
];

/// Whether `name` is a system field (`_id`, `_owner`, …) every record has.
pub fn is_system_field(name: &str) -> bool {
    SYSTEM_FIELDS.iter().any(|(system, _, _)| *system == name)
}

pub fn resolve<'d>(definition: &'d EntityDefinition, name: &str) -> Result<Target<'d>, String> {
    if let Some((_, column, kind)) = SYSTEM_FIELDS.iter().find(|(system, _, _)| *system == name) {
        return Ok(Target::System {
            column,
            kind: *kind,
        });
    }
    match definition.field(name) {
        Some(field) if field.active => Ok(Target::Field(field)),
        _ => {
            let known: Vec<&str> = definition
                .active_fields()
                .map(|field| field.name.as_str())
                .collect();
            Err(format!(
                "`{name}` is not a field of `{}` (fields: {}; system fields: {})",
                definition.name,
                known.join(", "),
                SYSTEM_FIELDS
                    .iter()
                    .map(|(name, _, _)| *name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        }
    }
}

impl Target<'_> {
    fn expr(&self, dialect: Dialect) -> String {
        match self {
            Target::System { column, .. } => (*column).to_owned(),
            Target::Field(field) => dialect.field_expr(field),
        }
    }

    fn name(&self) -> String {
        match self {
            Target::System { column, .. } => format!("_{column}"),
            Target::Field(field) => field.name.to_string(),
        }
    }

    fn kind(&self) -> SqlKind {
        match self {
            Target::System {
                kind: SystemKind::Integer,
                ..
            } => SqlKind::Integer,
            Target::System { .. } => SqlKind::Text,
            Target::Field(field) => sql_kind(field),
        }
    }

    /// Binds a literal compared with this target, checking its type.
    fn bind(&self, builder: &mut QueryBuilder, literal: &Literal) -> Result<String, String> {
        let value = match (self.sql_value(literal)?, builder.dialect, self.kind()) {
            // A float parameter cast to numeric keeps only 15 digits on PostgreSQL: bind its text.
            (SqlValue::Float(float), Dialect::Postgres, SqlKind::Integer | SqlKind::Decimal) => {
                SqlValue::Text(float.to_string())
            }
            (value, _, _) => value,
        };
        let placeholder = builder.bind(value);
        Ok(builder.dialect.typed_param(self.kind(), &placeholder))
    }

    fn sql_value(&self, literal: &Literal) -> Result<SqlValue, String> {
        let mismatch =
            |expected: &str| format!("`{}` takes {expected}, not {literal}", self.name());
        match self {
            Target::System {
                kind: SystemKind::Timestamp,
                ..
            } => match literal {
                Literal::Text(text) => OffsetDateTime::parse(text, &Rfc3339)
                    .map(SqlValue::Timestamp)
                    .map_err(|_| mismatch("an RFC 3339 datetime")),
                _ => Err(mismatch("an RFC 3339 datetime in quotes")),
            },
            Target::System {
                kind: SystemKind::Integer,
                ..
            } => match literal {
                Literal::Int(int) => Ok(SqlValue::Int(*int)),
                _ => Err(mismatch("an integer")),
            },
            Target::System { .. } => match literal {
                Literal::Text(text) => Ok(SqlValue::Text(text.clone())),
                _ => Err(mismatch("a quoted string")),
            },
            Target::Field(field) => match (field.value_type(), literal) {
                (FieldType::Datetime, Literal::Text(text)) => {
                    canonical_datetime(text).map(SqlValue::Text)
                }
                // Compared as stored: E.164 when it parses, emails in lower case.
                (FieldType::Phone, Literal::Text(text)) => Ok(SqlValue::Text(
                    crate::metadata::values::canonical_phone(text, field.region.as_deref()),
                )),
                (FieldType::Email, Literal::Text(text)) => Ok(SqlValue::Text(text.to_lowercase())),
                (FieldType::Integer, Literal::Int(int)) => Ok(SqlValue::Int(*int)),
                (FieldType::Integer, Literal::Float(float)) => Ok(SqlValue::Float(*float)),
                (FieldType::Decimal | FieldType::Currency, Literal::Int(int)) => {
                    Ok(SqlValue::Int(*int))
                }
                (FieldType::Decimal | FieldType::Currency, Literal::Float(float)) => {
                    Ok(SqlValue::Float(*float))
                }
                (FieldType::Boolean, Literal::Bool(boolean)) => Ok(SqlValue::Bool(*boolean)),
                (FieldType::Integer | FieldType::Decimal | FieldType::Currency, _) => {
                    Err(mismatch("a number"))
                }
                (FieldType::Boolean, _) => Err(mismatch("true or false")),
                (FieldType::Json, _) => Err(format!(
                    "`{}` is a json field: only `is null` applies",
                    field.name
                )),
                (_, Literal::Text(text)) => Ok(SqlValue::Text(text.clone())),
                _ => Err(mismatch("a quoted string")),
            },
        }
    }
}

/// Compiles a parsed filter into a SQL condition.
pub fn compile_filter(
    definition: &EntityDefinition,
    filter: &Filter,
    builder: &mut QueryBuilder,
) -> Result<String, String> {
    let dialect = builder.dialect;
    Ok(match filter {
        Filter::And(left, right) => {
            format!(
                "({} AND {})",
                compile_filter(definition, left, builder)?,
                compile_filter(definition, right, builder)?
            )
        }
        Filter::Or(left, right) => {
            format!(
                "({} OR {})",
                compile_filter(definition, left, builder)?,
                compile_filter(definition, right, builder)?
            )
        }
        Filter::Not(inner) => format!("(NOT {})", compile_filter(definition, inner, builder)?),
        Filter::IsNull { field, negated } => {
            let target = resolve(definition, field)?;
            format!(
                "({} IS {}NULL)",
                target.expr(dialect),
                if *negated { "NOT " } else { "" }
            )
        }
        Filter::Compare { field, op, value } => {
            let target = resolve(definition, field)?;
            reject_json(&target, op.keyword())?;
            let expr = target.expr(dialect);
            let placeholder = target.bind(builder, value)?;
            if *op == Comparison::Ne {
                // Like OData: a record without a value is "not equal" to any value.
                format!("({expr} IS NULL OR {expr} <> {placeholder})")
            } else {
                format!("({expr} {} {placeholder})", op.sql())
            }
        }
        Filter::In { field, values } => {
            let target = resolve(definition, field)?;
            reject_json(&target, "in")?;
            let placeholders = values
                .iter()
                .map(|value| target.bind(builder, value))
                .collect::<Result<Vec<_>, _>>()?;
            format!(
                "({} IN ({}))",
                target.expr(dialect),
                placeholders.join(", ")
            )
        }
        Filter::Contains { field, value } | Filter::StartsWith { field, value } => {
            let target = resolve(definition, field)?;
            let Literal::Text(text) = value else {
                return Err(format!(
                    "`{field}`: contains and startswith take a quoted string"
                ));
            };
            if let Target::Field(definition_field) = &target
                && sql_kind(definition_field) == SqlKind::Json
            {
                if !matches!(filter, Filter::Contains { .. })
                    || definition_field.value_type() != FieldType::Picklist
                {
                    return Err(format!(
                        "`{field}`: only a multi-select picklist supports `contains` on its values"
                    ));
                }
                let placeholder = builder.bind(SqlValue::Text(text.clone()));
                return Ok(dialect.array_contains(definition_field, &placeholder));
            }
            if target.kind() != SqlKind::Text {
                return Err(format!(
                    "`{field}`: contains and startswith apply to text fields"
                ));
            }
            let pattern = match filter {
                Filter::Contains { .. } => format!("%{}%", escape_like(text)),
                _ => format!("{}%", escape_like(text)),
            };
            let placeholder = builder.bind(SqlValue::Text(pattern));
            format!(
                "({} {} {placeholder} ESCAPE '\\')",
                target.expr(dialect),
                dialect.like()
            )
        }
    })
}

fn reject_json(target: &Target<'_>, operator: &str) -> Result<(), String> {
    if target.kind() == SqlKind::Json {
        return Err(format!(
            "`{}`: `{operator}` does not apply to arrays and json values",
            target.name()
        ));
    }
    Ok(())
}

/// A sort key: a target and its direction.
#[derive(Debug, Clone)]
pub struct SortKey<'d> {
    pub target: Target<'d>,
    pub descending: bool,
}

/// A parsed sort: keys, then the record id as the tie-breaker.
#[derive(Debug, Clone)]
pub struct Sort<'d> {
    pub keys: Vec<SortKey<'d>>,
    /// The direction of the id: as asked with `_id`, else that of the last key, so that an index
    /// on (value, id) serves the whole order.
    pub id_descending: bool,
}

/// Parses `sort=-annual_value,first_name`; `_id` ends the list (ids are unique).
pub fn parse_sort<'d>(definition: &'d EntityDefinition, sort: &str) -> Result<Sort<'d>, String> {
    let mut keys: Vec<SortKey<'d>> = Vec::new();
    let mut id_descending = None;
    for part in sort
        .split(',')
        .map(str::trim)
        .filter(|part| !part.is_empty())
    {
        let (name, descending) = match part.strip_prefix('-') {
            Some(name) => (name, true),
            None => (part.strip_prefix('+').unwrap_or(part), false),
        };
        let target = resolve(definition, name)?;
        if target.kind() == SqlKind::Json {
            return Err(format!(
                "`{name}` cannot be sorted on: it holds arrays or json"
            ));
        }
        if matches!(target, Target::System { column: "id", .. }) {
            id_descending = Some(descending);
            break;
        }
        keys.push(SortKey { target, descending });
    }
    if keys.len() > 3 {
        return Err("sort on at most 3 fields".to_owned());
    }
    let id_descending =
        id_descending.unwrap_or_else(|| keys.last().is_some_and(|key| key.descending));
    Ok(Sort {
        keys,
        id_descending,
    })
}

/// The position after the last record of a page.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Cursor {
    /// The sort the cursor belongs to.
    pub s: String,
    /// The last record's sort values, then its id.
    pub v: Vec<Value>,
    pub id: String,
}

impl Cursor {
    pub fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(self).expect("cursors serialize"))
    }

    pub fn decode(text: &str) -> Result<Self, String> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .ok_or_else(|| "`cursor` is not a cursor returned by this API".to_owned())
    }

    /// The cursor after `record` for these sort keys.
    pub fn after(sort: &str, keys: &[SortKey<'_>], record: &StoredRecord, data: &Value) -> Self {
        let v = keys
            .iter()
            .map(|key| match &key.target {
                Target::System { column, .. } => match *column {
                    "version" => Value::from(record.version),
                    "owner_id" => Value::from(record.owner_id.clone()),
                    "created_by" => Value::from(record.created_by.clone()),
                    "updated_by" => Value::from(record.updated_by.clone()),
                    "created_at" => {
                        Value::from(record.created_at.format(&Rfc3339).unwrap_or_default())
                    }
                    _ => Value::from(record.updated_at.format(&Rfc3339).unwrap_or_default()),
                },
                Target::Field(field) => {
                    let value = data
                        .get(field.name.as_str())
                        .cloned()
                        .unwrap_or(Value::Null);
                    if field.value_type() == FieldType::Currency {
                        value.get("amount").cloned().unwrap_or(Value::Null)
                    } else {
                        value
                    }
                }
            })
            .collect();
        Cursor {
            s: sort.to_owned(),
            v,
            id: record.id.clone(),
        }
    }
}

fn cursor_literal(value: &Value) -> Option<Literal> {
    match value {
        Value::String(text) => Some(Literal::Text(text.clone())),
        Value::Bool(boolean) => Some(Literal::Bool(*boolean)),
        Value::Number(number) => number
            .as_i64()
            .map(Literal::Int)
            .or_else(|| number.as_f64().map(Literal::Float)),
        _ => None,
    }
}

/// The ORDER BY clause and, for a cursor, the condition "after the cursor" (keyset pagination).
/// Ties are broken by id, in the direction of the last key, so that an index on (value, id)
/// serves the whole order.
pub fn order_and_seek(
    sort: &Sort<'_>,
    cursor: Option<&Cursor>,
    builder: &mut QueryBuilder,
) -> Result<(String, Option<String>), String> {
    let dialect = builder.dialect;
    let (keys, id_descending) = (&sort.keys, sort.id_descending);
    let mut order: Vec<String> = keys
        .iter()
        .map(|key| {
            format!(
                "{} {}{}",
                key.target.expr(dialect),
                if key.descending { "DESC" } else { "ASC" },
                dialect.nulls(key.descending)
            )
        })
        .collect();
    order.push(format!("id {}", if id_descending { "DESC" } else { "ASC" }));
    let Some(cursor) = cursor else {
        return Ok((order.join(", "), None));
    };
    if cursor.v.len() != keys.len() {
        return Err("`cursor` belongs to another sort".to_owned());
    }
    let mut alternatives = Vec::new();
    let mut equal_so_far: Vec<String> = Vec::new();
    for (key, value) in keys.iter().zip(&cursor.v) {
        let expr = key.target.expr(dialect);
        let literal = if value.is_null() {
            None
        } else {
            Some(cursor_literal(value).ok_or("`cursor` is damaged")?)
        };
        let (after, equal) = match literal {
            None if key.descending => ("(1 = 0)".to_owned(), format!("({expr} IS NULL)")),
            None => (format!("({expr} IS NOT NULL)"), format!("({expr} IS NULL)")),
            Some(literal) => {
                let placeholder = key.target.bind(builder, &literal)?;
                if key.descending {
                    (
                        format!("({expr} < {placeholder} OR {expr} IS NULL)"),
                        format!("({expr} = {placeholder})"),
                    )
                } else {
                    (
                        format!("({expr} > {placeholder})"),
                        format!("({expr} = {placeholder})"),
                    )
                }
            }
        };
        alternatives.push(conjunction(&equal_so_far, &after));
        equal_so_far.push(equal);
    }
    let id = builder.bind(SqlValue::Text(cursor.id.clone()));
    alternatives.push(conjunction(
        &equal_so_far,
        &format!("(id {} {id})", if id_descending { "<" } else { ">" }),
    ));
    Ok((
        order.join(", "),
        Some(format!("({})", alternatives.join(" OR "))),
    ))
}

fn conjunction(equal: &[String], last: &str) -> String {
    if equal.is_empty() {
        last.to_owned()
    } else {
        format!("({} AND {last})", equal.join(" AND "))
    }
}

/// A condition matching `q` in any searchable text field (case-insensitive substring).
pub fn search(definition: &EntityDefinition, q: &str, builder: &mut QueryBuilder) -> String {
    let dialect = builder.dialect;
    let fields: Vec<&FieldDefinition> = definition
        .active_fields()
        .filter(|field| field.value_type().is_searchable_text())
        .collect();
    if fields.is_empty() {
        return "(1 = 0)".to_owned();
    }
    let placeholder = builder.bind(SqlValue::Text(format!("%{}%", escape_like(q))));
    let conditions: Vec<String> = fields
        .iter()
        .map(|field| {
            format!(
                "{} {} {placeholder} ESCAPE '\\'",
                dialect.field_expr(field),
                dialect.like()
            )
        })
        .collect();
    format!("({})", conditions.join(" OR "))
}

/// Parses a filter and compiles it for the entity.
pub fn filter_condition(
    definition: &EntityDefinition,
    text: &str,
    builder: &mut QueryBuilder,
) -> Result<String, String> {
    let parsed = filter::parse(text).map_err(|error| error.to_string())?;
    compile_filter(definition, &parsed, builder)
}
