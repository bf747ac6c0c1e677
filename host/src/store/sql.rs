//! SQL fragments that differ between SQLite and PostgreSQL, and a builder for dynamic queries.
//! Field values live in a JSON body; the expression that extracts a field is the same in
//! queries and in the expression indexes built for indexed and unique fields, so the planner
//! uses those indexes.

use crate::metadata::definition::{FieldDefinition, FieldType};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// A value bound to a dynamic query.
#[derive(Debug, Clone, PartialEq)]
pub enum SqlValue {
    Text(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Timestamp(time::OffsetDateTime),
    /// NULL bound as text (what most columns take).
    Null,
    /// NULL bound as a timestamp: PostgreSQL does not assign a text NULL to `timestamptz`.
    NullTimestamp,
}

impl SqlValue {
    /// Text, or NULL.
    pub fn text_or_null(value: Option<&str>) -> Self {
        value.map_or(SqlValue::Null, |text| SqlValue::Text(text.to_owned()))
    }

    /// A point in time, or a timestamp NULL.
    pub fn timestamp_or_null(value: Option<time::OffsetDateTime>) -> Self {
        value.map_or(SqlValue::NullTimestamp, SqlValue::Timestamp)
    }
}

/// How a field's value is compared in SQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SqlKind {
    Text,
    Integer,
    Decimal,
    Boolean,
    /// Arrays and objects: only null checks and membership.
    Json,
}

pub fn sql_kind(field: &FieldDefinition) -> SqlKind {
    match field.value_type() {
        FieldType::Integer => SqlKind::Integer,
        FieldType::Decimal | FieldType::Currency => SqlKind::Decimal,
        FieldType::Boolean => SqlKind::Boolean,
        FieldType::Json => SqlKind::Json,
        FieldType::Picklist if field.multiple => SqlKind::Json,
        _ => SqlKind::Text,
    }
}

impl Dialect {
    /// Reads the JSON body as text.
    pub fn data_column(self) -> &'static str {
        match self {
            Dialect::Sqlite => "json(data)",
            Dialect::Postgres => "data::text",
        }
    }

    /// A placeholder for a record body given as JSON text. Both backends store bodies in their
    /// binary JSON form, parsed once on write instead of on every extraction by an index.
    pub fn body_param(self, placeholder: &str) -> String {
        match self {
            Dialect::Sqlite => format!("jsonb({placeholder})"),
            Dialect::Postgres => format!("{placeholder}::jsonb"),
        }
    }

    /// A placeholder for a JSON text parameter.
    pub fn json_param(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("${n}"),
            Dialect::Postgres => format!("${n}::jsonb"),
        }
    }

    /// The SQL expression of a field's value, typed for comparison and sorting. Field names are
    /// validated identifiers, so they are safe to inline. On PostgreSQL the casts are guarded by
    /// the JSON type: an index build also evaluates dead row versions, which may still hold a
    /// value of the field's previous type, and an unguarded cast would fail on them.
    pub fn field_expr(self, field: &FieldDefinition) -> String {
        self.field_expr_of("data", field)
    }

    /// The currency code of a currency field's value (the amount is [`Dialect::field_expr`]).
    pub fn currency_code(self, name: &str) -> String {
        match self {
            Dialect::Sqlite => format!("(data ->> '$.{name}.currency')"),
            Dialect::Postgres => format!("(data->'{name}'->>'currency')"),
        }
    }

    /// [`Dialect::field_expr`] over the body column `data` of a named table or alias
    /// (`records.data` in a correlated subquery).
    pub fn field_expr_of(self, data: &str, field: &FieldDefinition) -> String {
        let name = field.name.as_str();
        let currency = field.value_type() == FieldType::Currency;
        let (value, text) = if currency {
            (
                format!("{data}->'{name}'->'amount'"),
                format!("{data}->'{name}'->>'amount'"),
            )
        } else {
            (format!("{data}->'{name}'"), format!("{data}->>'{name}'"))
        };
        match self {
            // `->>`, not `json_extract`: the same value for every scalar, but without a JSON
            // subtype, so that SQLite reads it from an index entry instead of the record.
            Dialect::Sqlite if currency => format!("({data} ->> '$.{name}.amount')"),
            Dialect::Sqlite => format!("({data} ->> '$.{name}')"),
            Dialect::Postgres => match sql_kind(field) {
                SqlKind::Text => format!("({text})"),
                SqlKind::Integer | SqlKind::Decimal => {
                    format!(
                        "(CASE WHEN jsonb_typeof({value}) = 'number' THEN ({text})::numeric END)"
                    )
                }
                SqlKind::Boolean => {
                    format!(
                        "(CASE WHEN jsonb_typeof({value}) = 'boolean' THEN ({text})::boolean END)"
                    )
                }
                SqlKind::Json => format!("({value})"),
            },
        }
    }

    /// Wraps a placeholder so that it compares with [`Dialect::field_expr`] of this kind.
    pub fn typed_param(self, kind: SqlKind, placeholder: &str) -> String {
        match (self, kind) {
            (Dialect::Postgres, SqlKind::Integer | SqlKind::Decimal) => {
                format!("CAST({placeholder} AS numeric)")
            }
            _ => placeholder.to_owned(),
        }
    }

    /// A condition that the JSON array in `field` holds the text parameter.
    pub fn array_contains(self, field: &FieldDefinition, placeholder: &str) -> String {
        let name = field.name.as_str();
        match self {
            Dialect::Sqlite => format!(
                "EXISTS (SELECT 1 FROM json_each(records.data, '$.{name}') WHERE json_each.value = {placeholder})"
            ),
            Dialect::Postgres => {
                format!("(data->'{name}') @> jsonb_build_array(CAST({placeholder} AS text))")
            }
        }
    }

    /// Case-insensitive `LIKE`.
    pub fn like(self) -> &'static str {
        match self {
            // SQLite's LIKE is case-insensitive for ASCII.
            Dialect::Sqlite => "LIKE",
            Dialect::Postgres => "ILIKE",
        }
    }

    /// Null placement that matches SQLite's (nulls sort first ascending, last descending), so both
    /// backends page identically and PostgreSQL still uses the indexes built with `NULLS FIRST`.
    pub fn nulls(self, descending: bool) -> &'static str {
        match (self, descending) {
            (Dialect::Sqlite, _) => "",
            (Dialect::Postgres, false) => " NULLS FIRST",
            (Dialect::Postgres, true) => " NULLS LAST",
        }
    }

    /// Removes a key from every JSON body of an entity.
    pub fn remove_key(self, name: &str) -> String {
        match self {
            Dialect::Sqlite => format!("jsonb_remove(data, '$.{name}')"),
            Dialect::Postgres => format!("data - '{name}'"),
        }
    }
}

/// A dynamic query under construction: SQL text and the values bound to its placeholders.
#[derive(Debug)]
pub struct QueryBuilder {
    pub dialect: Dialect,
    pub sql: String,
    pub binds: Vec<SqlValue>,
}

impl QueryBuilder {
    pub fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            sql: String::with_capacity(256),
            binds: Vec::new(),
        }
    }

    /// Binds a value and returns its placeholder.
    pub fn bind(&mut self, value: SqlValue) -> String {
        self.binds.push(value);
        format!("${}", self.binds.len())
    }

    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.sql.push_str(sql);
        self
    }
}

/// `text` as an SQL string literal (quotes doubled; backslashes are not special in either
/// dialect).
pub fn text_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// The condition that selects the records of one entity of one tenant, for the statements that
/// name an entity.
///
/// On SQLite the tenant is a literal, not the bound `$1` of other statements (which these bind
/// too, unused). The per-entity indexes hold one tenant's entries (`tenant_id = '…'` in their
/// `WHERE`, see `store::entities::sqlite_part`), and SQLite uses a partial index only if the
/// statement's condition implies the index's when it plans the statement, before any value is
/// bound. Given a bound tenant, it looks at the value when it can and marks the statement to
/// be planned again whenever the value is bound anew: sqlx binds on every execution, so a
/// screen pop was planned again each time (2.6 times slower). PostgreSQL binds the tenant.
pub fn entity_rows(dialect: Dialect, tenant: &str, entity_id: i64) -> String {
    let tenant = match dialect {
        Dialect::Sqlite => text_literal(tenant),
        Dialect::Postgres => "$1".to_owned(),
    };
    format!("tenant_id = {tenant} AND entity_id = {entity_id}")
}

/// Escapes `%`, `_` and `\` for a `LIKE … ESCAPE '\'` pattern.
pub fn escape_like(text: &str) -> String {
    let mut escaped = String::with_capacity(text.len() + 2);
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}
