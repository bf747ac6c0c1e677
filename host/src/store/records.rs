//! Records, their history, auto-number counters and idempotency keys.

use std::borrow::Cow;

use time::OffsetDateTime;

use super::sql::QueryBuilder;
use super::{Exec, Scoped, SqlValue, StoreError, bind_all, bind_all_as, on};
use crate::domain::UserId;
use crate::metadata::definition::FieldDefinition;

/// A record row as stored; `data` is the JSON body as text.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredRecord {
    pub id: String,
    pub version: i64,
    pub data: String,
    pub owner_id: String,
    pub created_at: OffsetDateTime,
    pub created_by: String,
    pub updated_at: OffsetDateTime,
    pub updated_by: String,
    pub deleted_at: Option<OffsetDateTime>,
}

/// A page of records as the backend returns it.
#[derive(Debug)]
pub enum Listed {
    Sqlite(SqlitePage),
    Rows(Vec<StoredRecord>),
}

/// A row of a record's history.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct HistoryRow {
    pub version: i64,
    pub operation: String,
    pub changed_at: OffsetDateTime,
    pub changed_by: String,
    pub changes: String,
}

/// A remembered response to a request with an `Idempotency-Key`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IdempotentResponse {
    pub request_hash: String,
    pub status: i64,
    pub response: String,
}

/// A record about to be inserted.
#[derive(Debug)]
pub struct NewRecord<'a> {
    pub id: &'a str,
    pub data: &'a str,
    pub owner: &'a UserId,
    pub user: &'a UserId,
    pub now: OffsetDateTime,
}

/// A dynamic list query: conditions and order built by the records layer. Placeholders start at
/// `$2`; `$1` is the tenant, bound here.
#[derive(Debug)]
pub struct ListQuery {
    pub condition: String,
    pub order: String,
    pub binds: Vec<SqlValue>,
    pub limit: i64,
}

impl ListQuery {
    /// A builder whose first placeholder is reserved for the tenant.
    pub fn builder(dialect: super::Dialect) -> QueryBuilder {
        let mut builder = QueryBuilder::new(dialect);
        builder.binds.push(SqlValue::Null);
        builder
    }
}

fn columns(dialect: super::Dialect) -> String {
    format!(
        "id, version, {} AS data, owner_id, created_at, created_by, updated_at, updated_by, deleted_at",
        dialect.data_column()
    )
}

/// The columns of a record as stored (the body in SQLite's binary JSON), for an inner `SELECT`
/// that [`sqlite_records`] wraps.
const STORED_COLUMNS: &str =
    "id, version, data, owner_id, created_at, created_by, updated_at, updated_by, deleted_at";

/// The columns a `SELECT` of several records names: as stored on SQLite, for
/// [`sqlite_records`] to wrap; as [`columns`] on PostgreSQL, which returns rows.
fn page_columns(dialect: super::Dialect) -> String {
    match dialect {
        super::Dialect::Sqlite => STORED_COLUMNS.to_owned(),
        super::Dialect::Postgres => columns(dialect),
    }
}

/// SQLite: the records `select` (of [`STORED_COLUMNS`]) yields, in `order`, fetched as **one**
/// value: a JSON array of one array per record, built by SQLite.
///
/// sqlx hands each row from its SQLite thread to the request's task as a message of its own,
/// every column value copied and allocated on the way; a page of 50 records was 50 such
/// messages and several thread wake-ups. One row crosses here, and the bodies are copied out of
/// the JSON text as they are (`RawValue`), not parsed.
async fn sqlite_page(
    c: &mut sqlx::SqliteConnection,
    select: &str,
    order: &str,
    binds: &[SqlValue],
) -> Result<SqlitePage, StoreError> {
    let sql = format!(
        "SELECT json_group_array(json_array(id, version, json(data), owner_id, created_at, \
         created_by, updated_at, updated_by, deleted_at) ORDER BY {order}) FROM ({select})"
    );
    let (text,): (String,) = bind_all_as(sqlx::query_as(&sql), binds)
        .fetch_one(c)
        .await?;
    Ok(SqlitePage(text))
}

async fn sqlite_records(
    c: &mut sqlx::SqliteConnection,
    select: &str,
    order: &str,
    binds: &[SqlValue],
) -> Result<Vec<StoredRecord>, StoreError> {
    sqlite_page(c, select, order, binds).await?.stored()
}

/// A page of records as SQLite wrote it (see [`sqlite_page`]): read in place with
/// [`SqlitePage::records`], or as owned rows with [`SqlitePage::stored`].
#[derive(Debug)]
pub struct SqlitePage(String);

impl SqlitePage {
    /// The page's records, borrowing their text from the page.
    pub fn records(&self) -> Result<Vec<RecordText<'_>>, StoreError> {
        serde_json::from_str(&self.0).map_err(|error| page_error(error.to_string()))
    }

    pub fn stored(&self) -> Result<Vec<StoredRecord>, StoreError> {
        self.records()?.iter().map(RecordText::stored).collect()
    }
}

fn page_error(error: String) -> StoreError {
    StoreError::Corrupt(format!("a page of records: {error}"))
}

/// One record of a [`SqlitePage`]: its [`STORED_COLUMNS`] in order, as JSON text. Strings
/// borrow from the page unless they hold escapes; timestamps are as stored.
#[derive(Debug, serde::Deserialize)]
pub struct RecordText<'a> {
    #[serde(borrow)]
    pub id: Cow<'a, str>,
    pub version: i64,
    #[serde(borrow)]
    pub data: &'a serde_json::value::RawValue,
    #[serde(borrow)]
    pub owner_id: Cow<'a, str>,
    #[serde(borrow)]
    pub created_at: Cow<'a, str>,
    #[serde(borrow)]
    pub created_by: Cow<'a, str>,
    #[serde(borrow)]
    pub updated_at: Cow<'a, str>,
    #[serde(borrow)]
    pub updated_by: Cow<'a, str>,
    #[serde(borrow)]
    pub deleted_at: Option<Cow<'a, str>>,
}

impl RecordText<'_> {
    pub fn stored(&self) -> Result<StoredRecord, StoreError> {
        let time = |text: &str| sqlite_timestamp(text).map_err(page_error);
        Ok(StoredRecord {
            id: self.id.to_string(),
            version: self.version,
            data: self.data.get().to_owned(),
            owner_id: self.owner_id.to_string(),
            created_at: time(&self.created_at)?,
            created_by: self.created_by.to_string(),
            updated_at: time(&self.updated_at)?,
            updated_by: self.updated_by.to_string(),
            deleted_at: self.deleted_at.as_deref().map(time).transpose()?,
        })
    }
}

#[cfg(test)]
fn parse_sqlite_records(text: &str) -> Result<Vec<StoredRecord>, StoreError> {
    SqlitePage(text.to_owned()).stored()
}

/// A timestamp as SQLite holds it: RFC 3339 as [`super::Timestamp`] writes it, or SQLite's own
/// `YYYY-MM-DD HH:MM:SS[.fff]` (UTC), as sqlx reads both.
pub fn sqlite_timestamp(text: &str) -> Result<OffsetDateTime, String> {
    use time::format_description::well_known::Rfc3339;
    if let Ok(at) = OffsetDateTime::parse(text, &Rfc3339) {
        return Ok(at);
    }
    let sqlite = time::macros::format_description!(
        "[year]-[month]-[day] [hour]:[minute]:[second][optional [.[subsecond]]]"
    );
    time::PrimitiveDateTime::parse(text, &sqlite)
        .map(time::PrimitiveDateTime::assume_utc)
        .map_err(|_| format!("`{text}` is not a timestamp"))
}

impl Scoped<'_> {
    pub async fn get_record(
        &mut self,
        entity_id: i64,
        id: &str,
    ) -> Result<Option<StoredRecord>, StoreError> {
        let sql = format!(
            "SELECT {} FROM records WHERE tenant_id = $1 AND entity_id = $2 AND id = $3",
            columns(self.dialect())
        );
        // Often a write's first statement (an update reads the record it changes).
        let sql = self.after_savepoint(sql);
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(&sql)
            .bind(tenant)
            .bind(entity_id)
            .bind(id)
            .fetch_optional(&mut **c)
            .await?))
    }

    /// Live records of an entity among `ids`.
    pub async fn get_records(
        &mut self,
        entity_id: i64,
        ids: &[String],
    ) -> Result<Vec<StoredRecord>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT {} FROM records WHERE {} AND deleted_at IS NULL AND id IN ({})",
            page_columns(self.dialect()),
            self.entity_rows(entity_id),
            placeholders.join(", ")
        );
        let binds: Vec<SqlValue> = std::iter::once(SqlValue::Text(self.tenant.to_string()))
            .chain(ids.iter().map(|id| SqlValue::Text(id.clone())))
            .collect();
        match self.entered().await? {
            Exec::Sqlite(c) => sqlite_records(c, &sql, "id", &binds).await,
            Exec::Postgres(c) => Ok(bind_all_as(sqlx::query_as(&sql), &binds)
                .fetch_all(&mut **c)
                .await?),
        }
    }

    /// Which of `ids` are live records of the entity.
    pub async fn existing_ids(
        &mut self,
        entity_id: i64,
        ids: &[String],
    ) -> Result<Vec<String>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let placeholders: Vec<String> = (0..ids.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT id FROM records WHERE {} AND deleted_at IS NULL AND id IN ({})",
            self.entity_rows(entity_id),
            placeholders.join(", ")
        );
        let binds: Vec<SqlValue> = std::iter::once(SqlValue::Text(self.tenant.to_string()))
            .chain(ids.iter().map(|id| SqlValue::Text(id.clone())))
            .collect();
        Ok(on!(self.entered().await?, c => {
            let query = bind_all_as::<_, (String,)>(sqlx::query_as(&sql), &binds);
            query.fetch_all(&mut **c).await?.into_iter().map(|(id,)| id).collect()
        }))
    }

    pub async fn list_records(
        &mut self,
        entity_id: i64,
        query: ListQuery,
    ) -> Result<Vec<StoredRecord>, StoreError> {
        match self.list_page(entity_id, query).await? {
            Listed::Sqlite(page) => page.stored(),
            Listed::Rows(rows) => Ok(rows),
        }
    }

    /// [`Self::list_records`], with SQLite's page as it comes (see [`SqlitePage`]).
    pub async fn list_page(
        &mut self,
        entity_id: i64,
        query: ListQuery,
    ) -> Result<Listed, StoreError> {
        let sql = format!(
            "SELECT {} FROM records WHERE {} AND ({}) ORDER BY {} LIMIT {}",
            page_columns(self.dialect()),
            self.entity_rows(entity_id),
            query.condition,
            query.order,
            query.limit
        );
        let mut binds = query.binds;
        binds[0] = SqlValue::Text(self.tenant.to_string());
        match self.entered().await? {
            Exec::Sqlite(c) => Ok(Listed::Sqlite(
                sqlite_page(c, &sql, &query.order, &binds).await?,
            )),
            Exec::Postgres(c) => Ok(Listed::Rows(
                bind_all_as(sqlx::query_as(&sql), &binds)
                    .fetch_all(&mut **c)
                    .await?,
            )),
        }
    }

    /// Replaces a live record's body if it is still at `version`; false when it is not.
    /// Writes a new body at `version` (bumping it) and its history row; false if the record is
    /// not at `version` any more (nothing is written then). One round trip on SQLite.
    #[expect(clippy::too_many_arguments, reason = "one column each")]
    pub async fn update_record(
        &mut self,
        entity_id: i64,
        id: &str,
        version: i64,
        data: &str,
        user: &UserId,
        now: OffsetDateTime,
        changes: &str,
    ) -> Result<bool, StoreError> {
        let update = format!(
            "UPDATE records SET data = {}, version = version + 1, updated_at = $5, updated_by = $6 \
             WHERE tenant_id = $1 AND entity_id = $2 AND id = $3 AND version = $7 AND deleted_at IS NULL",
            self.dialect().body_param("$4")
        );
        let tenant = self.tenant.as_str();
        macro_rules! query {
            ($sql:expr) => {
                sqlx::query($sql)
                    .bind(tenant)
                    .bind(entity_id)
                    .bind(id)
                    .bind(data)
                    .bind(super::Timestamp(now))
                    .bind(user.as_str())
                    .bind(version)
            };
        }
        match self.entered().await? {
            Exec::Sqlite(c) => {
                // The history row is written only if the update changed the record (`changes()`).
                let sql = format!(
                    "{update};\nINSERT INTO record_history (tenant_id, entity_id, record_id, version, operation, changed_at, changed_by, changes) \
                     SELECT $1, $2, $3, $7 + 1, 'update', $5, $6, $8 WHERE changes() = 1"
                );
                let affected = query!(&sql)
                    .bind(changes)
                    .execute(&mut **c)
                    .await?
                    .rows_affected();
                Ok(affected == 2)
            }
            Exec::Postgres(c) => {
                let affected = query!(&update).execute(&mut **c).await?.rows_affected();
                if affected == 1 {
                    self.insert_history(entity_id, id, version + 1, "update", user, now, changes)
                        .await?;
                }
                Ok(affected == 1)
            }
        }
    }

    /// Gives a live record at `version` another owner, bumping its version, with a history row
    /// (`{"_owner": {"from", "to"}}`); false if the record is not at `version` any more.
    #[expect(clippy::too_many_arguments, reason = "one column each")]
    pub async fn set_owner(
        &mut self,
        entity_id: i64,
        id: &str,
        version: i64,
        owner: &str,
        user: &UserId,
        now: OffsetDateTime,
        changes: &str,
    ) -> Result<bool, StoreError> {
        let tenant = self.tenant.as_str();
        let affected = on!(self.entered().await?, c => sqlx::query(
            "UPDATE records SET owner_id = $4, version = version + 1, updated_at = $5, updated_by = $6 \
             WHERE tenant_id = $1 AND entity_id = $2 AND id = $3 AND version = $7 AND deleted_at IS NULL",
        )
        .bind(tenant)
        .bind(entity_id)
        .bind(id)
        .bind(owner)
        .bind(super::Timestamp(now))
        .bind(user.as_str())
        .bind(version)
        .execute(&mut **c)
        .await?
        .rows_affected());
        if affected == 1 {
            self.insert_history(entity_id, id, version + 1, "update", user, now, changes)
                .await?;
        }
        Ok(affected == 1)
    }

    /// Soft-deletes (`deleted_at` set) or restores (`None`) a record at `version`, bumping it.
    pub async fn set_deleted(
        &mut self,
        entity_id: i64,
        id: &str,
        version: i64,
        deleted_at: Option<OffsetDateTime>,
        user: &UserId,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let tenant = self.tenant.as_str();
        let affected = on!(self.entered().await?, c => sqlx::query(
            "UPDATE records SET deleted_at = $4, version = version + 1, updated_at = $5, updated_by = $6 \
             WHERE tenant_id = $1 AND entity_id = $2 AND id = $3 AND version = $7",
        )
        .bind(tenant)
        .bind(entity_id)
        .bind(id)
        .bind(deleted_at.map(super::Timestamp))
        .bind(super::Timestamp(now))
        .bind(user.as_str())
        .bind(version)
        .execute(&mut **c)
        .await?
        .rows_affected());
        Ok(affected == 1)
    }

    /// Deletes a record and its history for good.
    pub async fn purge_record(&mut self, entity_id: i64, id: &str) -> Result<bool, StoreError> {
        let tenant = self.tenant.as_str();
        let affected = on!(self.entered().await?, c => {
            sqlx::query("DELETE FROM record_history WHERE tenant_id = $1 AND entity_id = $2 AND record_id = $3")
                .bind(tenant)
                .bind(entity_id)
                .bind(id)
                .execute(&mut **c)
                .await?;
            sqlx::query("DELETE FROM records WHERE tenant_id = $1 AND entity_id = $2 AND id = $3")
                .bind(tenant)
                .bind(entity_id)
                .bind(id)
                .execute(&mut **c)
                .await?
                .rows_affected()
        });
        Ok(affected == 1)
    }

    #[expect(clippy::too_many_arguments, reason = "one column each")]
    pub async fn insert_history(
        &mut self,
        entity_id: i64,
        record_id: &str,
        version: i64,
        operation: &str,
        user: &UserId,
        now: OffsetDateTime,
        changes: &str,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO record_history (tenant_id, entity_id, record_id, version, operation, changed_at, changed_by, changes) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, {})",
            self.dialect().json_param(8)
        );
        let tenant = self.tenant.as_str();
        on!(self.entered().await?, c => sqlx::query(&sql)
            .bind(tenant)
            .bind(entity_id)
            .bind(record_id)
            .bind(version)
            .bind(operation)
            .bind(super::Timestamp(now))
            .bind(user.as_str())
            .bind(changes)
            .execute(&mut **c)
            .await.map(drop)?);
        Ok(())
    }

    pub async fn history(
        &mut self,
        entity_id: i64,
        record_id: &str,
    ) -> Result<Vec<HistoryRow>, StoreError> {
        let changes = match self.dialect() {
            super::Dialect::Sqlite => "changes",
            super::Dialect::Postgres => "changes::text",
        };
        let sql = format!(
            "SELECT version, operation, changed_at, changed_by, {changes} AS changes FROM record_history \
             WHERE tenant_id = $1 AND entity_id = $2 AND record_id = $3 ORDER BY id"
        );
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(&sql)
            .bind(tenant)
            .bind(entity_id)
            .bind(record_id)
            .fetch_all(&mut **c)
            .await?))
    }

    /// Every record of an entity, deleted ones too, as (id, version, body): for conversions.
    pub async fn all_record_bodies(
        &mut self,
        entity_id: i64,
    ) -> Result<Vec<(String, i64, String)>, StoreError> {
        let sql = format!(
            "SELECT id, version, {} AS data FROM records WHERE tenant_id = $1 AND entity_id = $2 ORDER BY id",
            self.dialect().data_column()
        );
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c =>
            sqlx::query_as(&sql).bind(tenant).bind(entity_id).fetch_all(&mut **c).await?))
    }

    /// Rewrites a record's body in a schema migration (type conversion), bumping its version.
    pub async fn rewrite_record(
        &mut self,
        entity_id: i64,
        id: &str,
        data: &str,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "UPDATE records SET data = {}, version = version + 1 WHERE tenant_id = $1 AND entity_id = $2 AND id = $3",
            self.dialect().body_param("$4")
        );
        let tenant = self.tenant.as_str();
        on!(self.entered().await?, c => sqlx::query(&sql)
            .bind(tenant)
            .bind(entity_id)
            .bind(id)
            .bind(data)
            .execute(&mut **c)
            .await.map(drop)?);
        Ok(())
    }

    /// Whether any live record of other entities references one of this entity's records
    /// through `expr` (a reference field's expression on `referencing_entity`).
    pub async fn has_references(
        &mut self,
        referencing_entity: i64,
        expr: &str,
    ) -> Result<bool, StoreError> {
        let sql = format!(
            "SELECT 1 FROM records WHERE {} AND {expr} IS NOT NULL LIMIT 1",
            self.entity_rows(referencing_entity)
        );
        let tenant = self.tenant.as_str();
        let found: Option<i32> = on!(self.entered().await?, c => sqlx::query_scalar(&sql).bind(tenant).fetch_optional(&mut **c).await?);
        Ok(found.is_some())
    }

    pub async fn idempotent_response(
        &mut self,
        user: &UserId,
        key: &str,
    ) -> Result<Option<IdempotentResponse>, StoreError> {
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(
            "SELECT request_hash, status, response FROM idempotency_keys WHERE tenant_id = $1 AND user_id = $2 AND key = $3",
        )
        .bind(tenant)
        .bind(user.as_str())
        .bind(key)
        .fetch_optional(&mut **c)
        .await?))
    }

    pub async fn save_idempotent_response(
        &mut self,
        user: &UserId,
        key: &str,
        request_hash: &str,
        status: u16,
        response: &str,
    ) -> Result<(), StoreError> {
        let tenant = self.tenant.as_str();
        on!(self.entered().await?, c => sqlx::query(
            "INSERT INTO idempotency_keys (tenant_id, user_id, key, request_hash, status, response, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(tenant)
        .bind(user.as_str())
        .bind(key)
        .bind(request_hash)
        .bind(i64::from(status))
        .bind(response)
        .bind(super::Timestamp(super::now()))
        .execute(&mut **c)
        .await.map(drop)?);
        Ok(())
    }
}

impl Scoped<'_> {
    /// The expression of a unique field and, on SQLite, a hint naming its unique index: with
    /// sampled statistics the planner can misjudge an entity's size and scan all its records.
    fn unique_lookup(&self, entity_id: i64, field: &FieldDefinition) -> (String, String) {
        let dialect = self.dialect();
        let hint = match dialect {
            super::Dialect::Sqlite => {
                format!(
                    " INDEXED BY {}",
                    super::entities::index_name(entity_id, field.name.as_str(), true)
                )
            }
            super::Dialect::Postgres => String::new(),
        };
        (dialect.field_expr(field), hint)
    }
}

/// A history row about to be written.
#[derive(Debug)]
pub struct NewHistory<'a> {
    pub record_id: &'a str,
    pub version: i64,
    pub operation: &'a str,
    pub user: &'a UserId,
    pub now: OffsetDateTime,
    pub changes: String,
}

/// A parameter of a multi-row INSERT: a value, JSON text (cast to `jsonb` on PostgreSQL), or a
/// record body (`jsonb` on both).
pub(super) enum Param {
    Value(SqlValue),
    Json(String),
    Body(String),
}

/// Rows per multi-row INSERT: well under both backends' limits on bound parameters.
pub(super) const ROWS_PER_INSERT: usize = 400;

impl Scoped<'_> {
    /// Inserts records and their history rows with as few statements as possible (one per 400
    /// rows of each); on SQLite all of them travel to the database in one round trip.
    pub async fn insert_records_with_history(
        &mut self,
        entity_id: i64,
        records: &[NewRecord<'_>],
        history: &[NewHistory<'_>],
    ) -> Result<(), StoreError> {
        let statements = record_inserts(self.dialect(), self.tenant, entity_id, records, history);
        // In a group commit, the statements that open this request's savepoint go in front.
        let savepoint = self.take_savepoint();
        match self.entered().await? {
            // SQLite runs every statement of one query string: one hop to its worker thread.
            Exec::Sqlite(c) => {
                let sql: Vec<&str> = savepoint
                    .into_iter()
                    .chain(statements.iter().map(|(sql, _)| sql.as_str()))
                    .collect();
                let sql = sql.join(";\n");
                let binds: Vec<SqlValue> = statements.into_iter().flat_map(|(_, b)| b).collect();
                bind_all(sqlx::query(&sql), &binds)
                    .execute(&mut **c)
                    .await?;
            }
            Exec::Postgres(c) => {
                for (sql, binds) in &statements {
                    bind_all(sqlx::query(sql), binds).execute(&mut **c).await?;
                }
            }
        }
        Ok(())
    }

    /// Live records of an entity whose value of a unique field is among `values`, as
    /// (value as text, record id), excluding the record `except`.
    pub async fn unique_holders(
        &mut self,
        entity_id: i64,
        field: &FieldDefinition,
        values: &[SqlValue],
        except: Option<&str>,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let (expr, hint) = self.unique_lookup(entity_id, field);
        let mut found = Vec::new();
        for chunk in values.chunks(ROWS_PER_INSERT) {
            let placeholders: Vec<String> =
                (0..chunk.len()).map(|i| format!("${}", i + 3)).collect();
            let sql = format!(
                "SELECT CAST({expr} AS TEXT), id FROM records{hint} WHERE {} \
                 AND deleted_at IS NULL AND id <> $2 AND {expr} IN ({})",
                self.entity_rows(entity_id),
                placeholders.join(", ")
            );
            let mut binds = vec![
                SqlValue::Text(self.tenant.to_string()),
                SqlValue::Text(except.unwrap_or_default().to_owned()),
            ];
            binds.extend(chunk.iter().cloned());
            let rows: Vec<(String, String)> = on!(self.entered().await?, c =>
                bind_all_as(sqlx::query_as(&sql), &binds).fetch_all(&mut **c).await?);
            found.extend(rows);
        }
        Ok(found)
    }

    /// Reserves `count` consecutive numbers of an auto-number field; returns the first.
    pub async fn reserve_auto_numbers(
        &mut self,
        entity_id: i64,
        field: &str,
        count: i64,
    ) -> Result<i64, StoreError> {
        let first: Option<i64> = on!(self.entered().await?, c => sqlx::query_scalar(
            "UPDATE auto_numbers SET next_value = next_value + $3 WHERE entity_id = $1 AND field = $2 RETURNING next_value - $3",
        )
        .bind(entity_id)
        .bind(field)
        .bind(count)
        .fetch_optional(&mut **c)
        .await?);
        first.ok_or_else(|| {
            StoreError::Corrupt(format!("no auto-number counter for field `{field}`"))
        })
    }
}

/// The statements that insert new records and their history rows (one multi-row `INSERT` per
/// table and [`ROWS_PER_INSERT`] rows), with their parameters.
pub(super) fn record_inserts(
    dialect: super::Dialect,
    tenant: &crate::domain::TenantId,
    entity_id: i64,
    records: &[NewRecord<'_>],
    history: &[NewHistory<'_>],
) -> Vec<(String, Vec<SqlValue>)> {
    let tenant = tenant.to_string();
    let record_rows = records.iter().map(|record| {
        [
            Param::Value(SqlValue::Text(record.id.to_owned())),
            Param::Value(SqlValue::Text(tenant.clone())),
            Param::Value(SqlValue::Int(entity_id)),
            Param::Body(record.data.to_owned()),
            Param::Value(SqlValue::Text(record.owner.to_string())),
            Param::Value(SqlValue::Timestamp(record.now)),
            Param::Value(SqlValue::Text(record.user.to_string())),
        ]
    });
    let mut statements = build_inserts(
        dialect,
        "INSERT INTO records (id, tenant_id, entity_id, data, owner_id, created_at, created_by, version, updated_at, updated_by) VALUES ",
        "1, {5}, {6}",
        record_rows,
    );
    let history_rows = history.iter().map(|row| {
        [
            Param::Value(SqlValue::Text(tenant.clone())),
            Param::Value(SqlValue::Int(entity_id)),
            Param::Value(SqlValue::Text(row.record_id.to_owned())),
            Param::Value(SqlValue::Int(row.version)),
            Param::Value(SqlValue::Text(row.operation.to_owned())),
            Param::Value(SqlValue::Timestamp(row.now)),
            Param::Value(SqlValue::Text(row.user.to_string())),
            Param::Json(row.changes.clone()),
        ]
    });
    statements.extend(build_inserts(
        dialect,
        "INSERT INTO record_history (tenant_id, entity_id, record_id, version, operation, changed_at, changed_by, changes) VALUES ",
        "",
        history_rows,
    ));
    statements
}

/// Builds multi-row INSERTs: `prefix`, then one tuple per row of its parameters, followed by
/// `tail` (literal SQL where `{n}` repeats the row's parameter n). SQLite gets anonymous `?`
/// placeholders: binding numbered ones costs time quadratic in their count.
pub(super) fn build_inserts<const N: usize>(
    dialect: super::Dialect,
    prefix: &str,
    tail: &str,
    rows: impl Iterator<Item = [Param; N]>,
) -> Vec<(String, Vec<SqlValue>)> {
    let rows: Vec<[Param; N]> = rows.collect();
    let mut statements = Vec::new();
    for chunk in rows.chunks(ROWS_PER_INSERT) {
        let mut sql = String::with_capacity(prefix.len() + chunk.len() * N * 8);
        sql.push_str(prefix);
        let mut binds = Vec::with_capacity(chunk.len() * (N + 2));
        for (row_index, row) in chunk.iter().enumerate() {
            sql.push_str(if row_index == 0 { "(" } else { ",(" });
            let placeholder = |param: &Param, binds: &mut Vec<SqlValue>| {
                let value = match param {
                    Param::Value(value) => value.clone(),
                    Param::Json(text) | Param::Body(text) => SqlValue::Text(text.clone()),
                };
                binds.push(value);
                match (dialect, param) {
                    (super::Dialect::Sqlite, Param::Body(_)) => dialect.body_param("?"),
                    (super::Dialect::Sqlite, _) => "?".to_owned(),
                    (super::Dialect::Postgres, Param::Value(_)) => format!("${}", binds.len()),
                    (super::Dialect::Postgres, _) => format!("${}::jsonb", binds.len()),
                }
            };
            let mut parts: Vec<String> = row
                .iter()
                .map(|param| placeholder(param, &mut binds))
                .collect();
            if !tail.is_empty() {
                let mut literal = tail.to_owned();
                for (n, param) in row.iter().enumerate() {
                    let marker = format!("{{{n}}}");
                    if literal.contains(&marker) {
                        literal = literal.replace(&marker, &placeholder(param, &mut binds));
                    }
                }
                parts.push(literal);
            }
            sql.push_str(&parts.join(", "));
            sql.push(')');
        }
        statements.push((sql, binds));
    }
    statements
}

/// How a column of a dynamic aggregate query is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Text,
    Int,
    Float,
    Bool,
}

/// Decodes the columns of one row by their kinds into JSON values (NULL as null).
fn decode_row<R>(row: &R, kinds: &[ColumnKind]) -> Result<Vec<serde_json::Value>, sqlx::Error>
where
    R: sqlx::Row,
    usize: sqlx::ColumnIndex<R>,
    for<'r> Option<String>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<i64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<f64>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    for<'r> Option<bool>: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
{
    use serde_json::Value;
    kinds
        .iter()
        .enumerate()
        .map(|(index, kind)| {
            Ok(match kind {
                ColumnKind::Text => row
                    .try_get::<Option<String>, _>(index)?
                    .map_or(Value::Null, Value::String),
                ColumnKind::Int => row
                    .try_get::<Option<i64>, _>(index)?
                    .map_or(Value::Null, Value::from),
                ColumnKind::Float => row
                    .try_get::<Option<f64>, _>(index)?
                    .map_or(Value::Null, Value::from),
                ColumnKind::Bool => row
                    .try_get::<Option<bool>, _>(index)?
                    .map_or(Value::Null, Value::Bool),
            })
        })
        .collect()
}

impl Scoped<'_> {
    /// Runs an aggregate query over records built by the records layer (`$1` is the tenant,
    /// bound here) and decodes each row's columns by `kinds`. On SQLite, `apart` replaces `sql`
    /// when SQLite's plan for `sql` groups by sorting (the records layer's
    /// `aggregate::Compile::plan` says why).
    pub async fn aggregate_rows(
        &mut self,
        sql: &str,
        apart: Option<&str>,
        mut binds: Vec<SqlValue>,
        kinds: &[ColumnKind],
    ) -> Result<Vec<Vec<serde_json::Value>>, StoreError> {
        binds[0] = SqlValue::Text(self.tenant.to_string());
        let sql = match (apart, &mut *self.entered().await?) {
            (Some(apart), Exec::Sqlite(c)) => {
                let plan: Vec<(i64, i64, i64, String)> =
                    bind_all_as(sqlx::query_as(&format!("EXPLAIN QUERY PLAN {sql}")), &binds)
                        .fetch_all(&mut **c)
                        .await?;
                if plan
                    .iter()
                    .any(|(.., detail)| detail.starts_with("USE TEMP B-TREE FOR GROUP BY"))
                {
                    apart
                } else {
                    sql
                }
            }
            _ => sql,
        };
        Ok(on!(self.entered().await?, c => {
            let rows = bind_all(sqlx::query(sql), &binds).fetch_all(&mut **c).await?;
            rows.iter()
                .map(|row| decode_row(row, kinds))
                .collect::<Result<Vec<_>, _>>()?
        }))
    }
}

/// A record of some entity, as a union over several entities returns it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TaggedRecord {
    /// Which part of the union returned it.
    pub arm: i64,
    #[sqlx(flatten)]
    pub record: StoredRecord,
}

impl Scoped<'_> {
    /// Runs `SELECT … UNION ALL …` built by the records layer over [`tagged_columns`] (`$1` is the
    /// tenant, bound here).
    pub async fn tagged_records(
        &mut self,
        sql: &str,
        mut binds: Vec<SqlValue>,
    ) -> Result<Vec<TaggedRecord>, StoreError> {
        binds[0] = SqlValue::Text(self.tenant.to_string());
        Ok(on!(self.entered().await?, c =>
            bind_all_as(sqlx::query_as(sql), &binds).fetch_all(&mut **c).await?))
    }
}

/// The columns of [`Scoped::tagged_records`]: an arm number, then a record's.
pub fn tagged_columns(dialect: super::Dialect, arm: usize) -> String {
    format!("CAST({arm} AS BIGINT) AS arm, {}", columns(dialect))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_from_sqlite_keeps_bodies_as_written_and_reads_both_timestamp_forms() {
        let text = r#"[["r1",2,{"name":"Ann \"A\"","n":1.50},"u1","2026-12-06T19:49:33.842781Z","u1","2026-12-06 19:50:00","u2",null],
                      ["r2",1,{},"u1","2026-12-06T19:49:33Z","u1","2026-12-06T19:49:33Z","u1","2026-12-07T00:00:00.5Z"]]"#;
        let records = parse_sqlite_records(text).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0].id, "r1");
        assert_eq!(records[0].version, 2);
        assert_eq!(records[0].data, r#"{"name":"Ann \"A\"","n":1.50}"#);
        assert_eq!(
            records[0].created_at,
            time::macros::datetime!(2026-12-06 19:49:33.842781 UTC)
        );
        assert_eq!(
            records[0].updated_at,
            time::macros::datetime!(2026-12-06 19:50:00 UTC)
        );
        assert_eq!(records[0].updated_by, "u2");
        assert_eq!(records[0].deleted_at, None);
        assert_eq!(
            records[1].deleted_at,
            Some(time::macros::datetime!(2026-12-07 00:00:00.5 UTC))
        );
        assert!(parse_sqlite_records("[]").unwrap().is_empty());
    }

    #[test]
    fn a_damaged_page_is_an_error_naming_what_is_wrong() {
        let bad_time = r#"[["r1",1,{},"u1","yesterday","u1","2026-12-06T19:49:33Z","u1",null]]"#;
        let error = parse_sqlite_records(bad_time).unwrap_err().to_string();
        assert!(error.contains("`yesterday` is not a timestamp"), "{error}");
        let short = r#"[["r1",1,{}]]"#;
        assert!(parse_sqlite_records(short).is_err());
    }
}
