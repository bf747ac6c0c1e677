//! Entity definitions, their versions, and the per-entity indexes on `records`.

use serde_json::Value;
use time::OffsetDateTime;

use super::{Scoped, StoreError, on};
use crate::domain::UserId;
use crate::metadata::definition::{CompositeIndex, EntityDefinition, FieldDefinition, FieldType};

/// A row lock on an entity definition (PostgreSQL only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntityLock {
    None,
    Share,
    Update,
}

/// An entity definition as stored.
#[derive(Debug, Clone)]
pub struct StoredEntity {
    pub id: i64,
    pub version: i64,
    pub definition: Value,
    pub updated_at: OffsetDateTime,
}

#[derive(sqlx::FromRow)]
struct EntityRow {
    id: i64,
    version: i64,
    definition: String,
    updated_at: OffsetDateTime,
}

impl TryFrom<EntityRow> for StoredEntity {
    type Error = StoreError;
    fn try_from(row: EntityRow) -> Result<Self, StoreError> {
        let definition = serde_json::from_str(&row.definition).map_err(|error| {
            StoreError::Corrupt(format!("entity definition {}: {error}", row.id))
        })?;
        Ok(StoredEntity {
            id: row.id,
            version: row.version,
            definition,
            updated_at: row.updated_at,
        })
    }
}

/// The name of the index of a field. Entity ids are global and field names validated
/// identifiers, so the name is unique and safe to inline.
pub fn index_name(entity_id: i64, field: &str, unique: bool) -> String {
    format!("{}_{entity_id}_{field}", if unique { "ru" } else { "rx" })
}

/// The columns every SQLite index on `records` carries after its keys, and the condition of its
/// part of the table. With them an index *covers* a count, a grouping or a filter on its keys
/// for live records: the entity, the tenant and the deletion are fixed by the index's `WHERE`,
/// which SQLite reads as constants, and the owner (row-level security) is in the entry, so SQLite
/// never reads the record's row (it reads the indexed values from the entry too, since the
/// expressions are `->>`, which carries no JSON subtype; see `Dialect::field_expr`).
/// Soft-deleted records are outside these indexes: only the trash reads them. A currency
/// field's code comes last, so that a sum can check that it adds one currency.
///
/// The keys come first and the record id right after them (a list sorted by the keys pages by
/// `(keys, id)`). The tenant is in the `WHERE`, not in the entries: an entity belongs to one
/// tenant, so the column would repeat one value in every entry — 36 bytes of each, and a string
/// comparison per entry in every scan (a million contacts grouped by stage: 150 ms with it, 70 ms
/// without, same run). Statements reach these indexes through `sql::entity_rows`, which names
/// the tenant as the literal SQLite needs to match the `WHERE`.
fn sqlite_cover(fields: &[&FieldDefinition]) -> String {
    let mut columns = vec!["id, owner_id".to_owned()];
    columns.extend(
        fields
            .iter()
            .filter(|field| field.value_type() == FieldType::Currency)
            .map(|field| super::Dialect::Sqlite.currency_code(field.name.as_str())),
    );
    columns.join(", ")
}

/// The part of `records` an SQLite index on an entity's fields holds: its tenant's live records.
fn sqlite_part(tenant: &str, entity_id: i64) -> String {
    format!(
        "WHERE entity_id = {entity_id} AND tenant_id = {} AND deleted_at IS NULL",
        super::sql::text_literal(tenant)
    )
}

/// The `CREATE INDEX` of an indexed or unique field of an entity of `tenant`.
pub fn field_index_sql(
    dialect: super::Dialect,
    tenant: &str,
    entity_id: i64,
    field: &FieldDefinition,
) -> String {
    let expr = dialect.field_expr(field);
    let name = index_name(entity_id, field.name.as_str(), field.unique);
    match (dialect, field.unique) {
        (_, true) => format!(
            "CREATE UNIQUE INDEX IF NOT EXISTS {name} ON records (({expr})) WHERE entity_id = {entity_id} AND deleted_at IS NULL"
        ),
        (super::Dialect::Sqlite, false) => format!(
            "CREATE INDEX IF NOT EXISTS {name} ON records (({expr}), {}) {}",
            sqlite_cover(&[field]),
            sqlite_part(tenant, entity_id)
        ),
        (super::Dialect::Postgres, false) => format!(
            "CREATE INDEX IF NOT EXISTS {name} ON records (({expr}){}, id) WHERE entity_id = {entity_id}",
            dialect.nulls(false)
        ),
    }
}

/// The `CREATE INDEX` of a composite index over `fields` (then the record id).
pub fn composite_index_sql(
    dialect: super::Dialect,
    tenant: &str,
    entity_id: i64,
    index: &CompositeIndex,
    fields: &[&FieldDefinition],
) -> String {
    let columns: Vec<String> = fields
        .iter()
        .map(|field| format!("({}){}", dialect.field_expr(field), dialect.nulls(false)))
        .collect();
    let name = index.index_name(entity_id);
    let columns = columns.join(", ");
    match dialect {
        super::Dialect::Sqlite => format!(
            "CREATE INDEX IF NOT EXISTS {name} ON records ({columns}, {}) {}",
            sqlite_cover(fields),
            sqlite_part(tenant, entity_id)
        ),
        super::Dialect::Postgres => format!(
            "CREATE INDEX IF NOT EXISTS {name} ON records ({columns}, id) WHERE entity_id = {entity_id}"
        ),
    }
}

/// Every index `definition` asks for, by name: its active indexed or unique fields and its
/// composite indexes.
pub fn entity_index_sql(
    dialect: super::Dialect,
    tenant: &str,
    entity_id: i64,
    definition: &EntityDefinition,
) -> Vec<(String, String)> {
    let mut indexes: Vec<(String, String)> = definition
        .fields
        .iter()
        .filter(|field| field.needs_index())
        .map(|field| {
            (
                index_name(entity_id, field.name.as_str(), field.unique),
                field_index_sql(dialect, tenant, entity_id, field),
            )
        })
        .collect();
    for index in &definition.indexes {
        let fields: Option<Vec<&FieldDefinition>> = index
            .fields
            .iter()
            .map(|name| definition.field(name.as_str()))
            .collect();
        if let Some(fields) = fields {
            indexes.push((
                index.index_name(entity_id),
                composite_index_sql(dialect, tenant, entity_id, index, &fields),
            ));
        }
    }
    indexes
}

impl Scoped<'_> {
    fn definition_column(&self) -> &'static str {
        match self.dialect() {
            super::Dialect::Sqlite => "definition",
            super::Dialect::Postgres => "definition::text",
        }
    }

    pub async fn list_entities(&mut self) -> Result<Vec<StoredEntity>, StoreError> {
        let sql = format!(
            "SELECT id, version, {} AS definition, updated_at FROM entities WHERE tenant_id = $1 ORDER BY name",
            self.definition_column()
        );
        let tenant = self.tenant.as_str();
        let rows: Vec<EntityRow> = on!(self.entered().await?, c => sqlx::query_as(&sql).bind(tenant).fetch_all(&mut **c).await?);
        rows.into_iter().map(StoredEntity::try_from).collect()
    }

    /// The name, id and version of every entity of the tenant.
    pub async fn entity_names(&mut self) -> Result<Vec<(String, i64, i64)>, StoreError> {
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(
            "SELECT name, id, version FROM entities WHERE tenant_id = $1 ORDER BY name",
        )
        .bind(tenant)
        .fetch_all(&mut **c)
        .await?))
    }

    pub async fn get_entity(&mut self, name: &str) -> Result<Option<StoredEntity>, StoreError> {
        let sql = format!(
            "SELECT id, version, {} AS definition, updated_at FROM entities WHERE tenant_id = $1 AND name = $2",
            self.definition_column()
        );
        let tenant = self.tenant.as_str();
        let row: Option<EntityRow> = on!(self.entered().await?, c =>
            sqlx::query_as(&sql).bind(tenant).bind(name).fetch_optional(&mut **c).await?);
        row.map(StoredEntity::try_from).transpose()
    }

    /// The id and version of an entity: what decides whether a cached compilation is current.
    pub async fn entity_version(&mut self, name: &str) -> Result<Option<(i64, i64)>, StoreError> {
        self.entity_version_locked(name, EntityLock::None).await
    }

    /// Like [`Scoped::entity_version`], locking the entity's row until the transaction ends on
    /// PostgreSQL: record writes take a shared lock, definition changes an exclusive one, so a
    /// conversion never races a write validated against the old definition. (SQLite has one
    /// writer at a time: its transactions are serialised anyway.)
    pub async fn entity_version_locked(
        &mut self,
        name: &str,
        lock: EntityLock,
    ) -> Result<Option<(i64, i64)>, StoreError> {
        let clause = match (self.dialect(), lock) {
            (super::Dialect::Postgres, EntityLock::Share) => " FOR SHARE",
            (super::Dialect::Postgres, EntityLock::Update) => " FOR UPDATE",
            _ => "",
        };
        let key = (self.tenant.to_string(), name.to_owned());
        if lock != EntityLock::Update
            && let Some(seen) = self
                .entity_versions
                .as_ref()
                .and_then(|memo| memo.get(&key))
        {
            return Ok(*seen);
        }
        let sql =
            format!("SELECT id, version FROM entities WHERE tenant_id = $1 AND name = $2{clause}");
        let tenant = self.tenant.as_str();
        let found: Option<(i64, i64)> = on!(self.entered().await?, c => sqlx::query_as(&sql)
        .bind(tenant)
        .bind(name)
        .fetch_optional(&mut **c)
        .await?);
        if let Some(memo) = self.entity_versions.as_mut() {
            memo.insert(key, found);
        }
        Ok(found)
    }

    /// Inserts a new entity at version 1 and returns its id.
    pub async fn insert_entity(
        &mut self,
        name: &str,
        definition: &Value,
        user: Option<&UserId>,
    ) -> Result<i64, StoreError> {
        let now = super::now();
        let sql = format!(
            "INSERT INTO entities (tenant_id, name, version, definition, created_at, updated_at) \
             VALUES ($1, $2, 1, {}, $4, $4) RETURNING id",
            self.dialect().json_param(3)
        );
        let tenant = self.tenant.as_str();
        let text = definition.to_string();
        let id: i64 = on!(self.entered().await?, c => sqlx::query_scalar(&sql)
            .bind(tenant)
            .bind(name)
            .bind(&text)
            .bind(super::Timestamp(now))
            .fetch_one(&mut **c)
            .await?);
        self.insert_entity_version(id, 1, &text, user, now).await?;
        Ok(id)
    }

    /// Stores a new version of an entity's definition.
    pub async fn update_entity(
        &mut self,
        id: i64,
        version: i64,
        definition: &Value,
        user: Option<&UserId>,
    ) -> Result<(), StoreError> {
        let now = super::now();
        let sql = format!(
            "UPDATE entities SET version = $3, definition = {}, updated_at = $5 WHERE tenant_id = $1 AND id = $2",
            self.dialect().json_param(4)
        );
        let tenant = self.tenant.as_str();
        let text = definition.to_string();
        on!(self.entered().await?, c => sqlx::query(&sql)
            .bind(tenant)
            .bind(id)
            .bind(version)
            .bind(&text)
            .bind(super::Timestamp(now))
            .execute(&mut **c)
            .await.map(drop)?);
        self.insert_entity_version(id, version, &text, user, now)
            .await
    }

    async fn insert_entity_version(
        &mut self,
        id: i64,
        version: i64,
        text: &str,
        user: Option<&UserId>,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let sql = format!(
            "INSERT INTO entity_versions (entity_id, tenant_id, version, definition, changed_at, changed_by) \
             VALUES ($1, $2, $3, {}, $5, $6)",
            self.dialect().json_param(4)
        );
        let tenant = self.tenant.as_str();
        let user = user.map(|user| user.as_str().to_owned());
        on!(self.entered().await?, c => sqlx::query(&sql)
            .bind(id)
            .bind(tenant)
            .bind(version)
            .bind(text)
            .bind(super::Timestamp(now))
            .bind(user)
            .execute(&mut **c)
            .await.map(drop)?);
        Ok(())
    }

    /// Deletes an entity with all its records, history, counters and indexes.
    pub async fn delete_entity(
        &mut self,
        id: i64,
        definition: &EntityDefinition,
    ) -> Result<(), StoreError> {
        for field in definition
            .fields
            .iter()
            .filter(|field| field.indexed || field.unique)
        {
            self.drop_field_index(id, field).await?;
        }
        for index in &definition.indexes {
            self.drop_composite_index(id, index).await?;
        }
        let tenant = self.tenant.as_str();
        for sql in [
            "DELETE FROM record_history WHERE tenant_id = $1 AND entity_id = $2",
            "DELETE FROM records WHERE tenant_id = $1 AND entity_id = $2",
            "DELETE FROM auto_numbers WHERE entity_id = $2 AND entity_id IN (SELECT id FROM entities WHERE tenant_id = $1)",
            "DELETE FROM entity_versions WHERE tenant_id = $1 AND entity_id = $2",
            "DELETE FROM entities WHERE tenant_id = $1 AND id = $2",
        ] {
            on!(self.entered().await?, c => sqlx::query(sql).bind(tenant).bind(id).execute(&mut **c).await.map(drop)?);
        }
        Ok(())
    }

    /// Builds the expression index of an indexed or unique field.
    pub async fn create_field_index(
        &mut self,
        entity_id: i64,
        field: &FieldDefinition,
    ) -> Result<(), StoreError> {
        let sql = field_index_sql(self.dialect(), self.tenant.as_str(), entity_id, field);
        self.as_owner(&sql).await?;
        Ok(())
    }

    /// Builds a composite index over several fields (then the record id).
    pub async fn create_composite_index(
        &mut self,
        entity_id: i64,
        index: &CompositeIndex,
        fields: &[&FieldDefinition],
    ) -> Result<(), StoreError> {
        let sql = composite_index_sql(
            self.dialect(),
            self.tenant.as_str(),
            entity_id,
            index,
            fields,
        );
        self.as_owner(&sql).await?;
        Ok(())
    }

    pub async fn drop_composite_index(
        &mut self,
        entity_id: i64,
        index: &CompositeIndex,
    ) -> Result<(), StoreError> {
        let sql = format!("DROP INDEX IF EXISTS {}", index.index_name(entity_id));
        self.as_owner(&sql).await?;
        Ok(())
    }

    pub async fn drop_field_index(
        &mut self,
        entity_id: i64,
        field: &FieldDefinition,
    ) -> Result<(), StoreError> {
        for unique in [true, false] {
            let sql = format!(
                "DROP INDEX IF EXISTS {}",
                index_name(entity_id, field.name.as_str(), unique)
            );
            self.as_owner(&sql).await?;
        }
        Ok(())
    }

    /// Values of `field` held by more than one live record, with how often (at most `limit`).
    pub async fn duplicate_values(
        &mut self,
        entity_id: i64,
        field: &FieldDefinition,
        limit: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        let dialect = self.dialect();
        let expr = dialect.field_expr(field);
        let sql = format!(
            "SELECT CAST({expr} AS TEXT) AS value, COUNT(*) AS n FROM records \
             WHERE {} AND deleted_at IS NULL AND {expr} IS NOT NULL \
             GROUP BY {expr} HAVING COUNT(*) > 1 ORDER BY n DESC, value LIMIT $2",
            self.entity_rows(entity_id)
        );
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c =>
            sqlx::query_as(&sql).bind(tenant).bind(limit).fetch_all(&mut **c).await?))
    }

    /// Deletes a field's values from every record of an entity (the purge of a removed field).
    pub async fn purge_field_values(
        &mut self,
        entity_id: i64,
        field: &str,
    ) -> Result<u64, StoreError> {
        let dialect = self.dialect();
        let sql = format!(
            "UPDATE records SET data = {} WHERE tenant_id = $1 AND entity_id = $2",
            dialect.remove_key(field)
        );
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c =>
            sqlx::query(&sql).bind(tenant).bind(entity_id).execute(&mut **c).await?.rows_affected()))
    }

    /// Starts the auto-number counter of a field, if it has none.
    pub async fn init_auto_number(
        &mut self,
        entity_id: i64,
        field: &str,
        start: i64,
    ) -> Result<(), StoreError> {
        on!(self.entered().await?, c => sqlx::query(
            "INSERT INTO auto_numbers (entity_id, field, next_value) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(entity_id)
        .bind(field)
        .bind(start)
        .execute(&mut **c)
        .await.map(drop)?);
        Ok(())
    }
}
