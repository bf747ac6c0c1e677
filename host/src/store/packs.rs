//! The packs installed in each tenant, and saved views.

use time::OffsetDateTime;

use super::{Scoped, StoreError, Timestamp, on};
use crate::domain::UserId;

/// A pack as a tenant has it (installed, or removed with its data kept).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredPack {
    pub pack_id: String,
    pub version: String,
    pub status: String,
    pub manifest: String,
    pub contents: String,
    pub installed_at: OffsetDateTime,
    pub installed_by: Option<String>,
    pub updated_at: OffsetDateTime,
}

/// A saved view.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredView {
    pub name: String,
    pub definition: String,
    pub pack_id: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

const PACK_COLUMNS: &str =
    "pack_id, version, status, manifest, contents, installed_at, installed_by, updated_at";

impl Scoped<'_> {
    /// Every pack the tenant has or had (removed ones with their data kept), by id.
    pub async fn packs(&mut self) -> Result<Vec<StoredPack>, StoreError> {
        let sql = format!(
            "SELECT {PACK_COLUMNS} FROM installed_packs WHERE tenant_id = $1 ORDER BY pack_id"
        );
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(&sql)
            .bind(tenant)
            .fetch_all(&mut **c)
            .await?))
    }

    /// Records a pack's installed version (a first install, a reinstall or an upgrade).
    pub async fn put_pack(
        &mut self,
        pack_id: &str,
        version: &str,
        manifest: &str,
        contents: &str,
        user: &UserId,
    ) -> Result<(), StoreError> {
        let tenant = self.tenant.as_str();
        let now = Timestamp(super::now());
        on!(self.entered().await?, c => sqlx::query(
            "INSERT INTO installed_packs (tenant_id, pack_id, version, status, manifest, contents, installed_at, installed_by, updated_at) \
             VALUES ($1, $2, $3, 'installed', $4, $5, $6, $7, $6) \
             ON CONFLICT (tenant_id, pack_id) DO UPDATE SET version = excluded.version, status = 'installed', \
             manifest = excluded.manifest, contents = excluded.contents, installed_by = excluded.installed_by, \
             updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(pack_id)
        .bind(version)
        .bind(manifest)
        .bind(contents)
        .bind(now)
        .bind(user.as_str())
        .execute(&mut **c)
        .await
        .map(drop)?);
        Ok(())
    }

    /// Marks a pack removed (its data kept), or forgets it (`purged`).
    pub async fn remove_pack(&mut self, pack_id: &str, purged: bool) -> Result<(), StoreError> {
        let tenant = self.tenant.as_str();
        if purged {
            on!(self.entered().await?, c => sqlx::query(
                "DELETE FROM installed_packs WHERE tenant_id = $1 AND pack_id = $2",
            )
            .bind(tenant)
            .bind(pack_id)
            .execute(&mut **c)
            .await
            .map(drop)?);
        } else {
            on!(self.entered().await?, c => sqlx::query(
                "UPDATE installed_packs SET status = 'removed', updated_at = $3 \
                 WHERE tenant_id = $1 AND pack_id = $2",
            )
            .bind(tenant)
            .bind(pack_id)
            .bind(Timestamp(super::now()))
            .execute(&mut **c)
            .await
            .map(drop)?);
        }
        Ok(())
    }

    pub async fn views(&mut self) -> Result<Vec<StoredView>, StoreError> {
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(
            "SELECT name, definition, pack_id, created_at, updated_at FROM saved_views \
             WHERE tenant_id = $1 ORDER BY name",
        )
        .bind(tenant)
        .fetch_all(&mut **c)
        .await?))
    }

    pub async fn view(&mut self, name: &str) -> Result<Option<StoredView>, StoreError> {
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(
            "SELECT name, definition, pack_id, created_at, updated_at FROM saved_views \
             WHERE tenant_id = $1 AND name = $2",
        )
        .bind(tenant)
        .bind(name)
        .fetch_optional(&mut **c)
        .await?))
    }

    /// Creates or replaces a saved view.
    pub async fn put_view(
        &mut self,
        name: &str,
        definition: &str,
        pack_id: Option<&str>,
    ) -> Result<(), StoreError> {
        let tenant = self.tenant.as_str();
        let now = Timestamp(super::now());
        on!(self.entered().await?, c => sqlx::query(
            "INSERT INTO saved_views (tenant_id, name, definition, pack_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) \
             ON CONFLICT (tenant_id, name) DO UPDATE SET definition = excluded.definition, \
             pack_id = excluded.pack_id, updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(name)
        .bind(definition)
        .bind(pack_id)
        .bind(now)
        .execute(&mut **c)
        .await
        .map(drop)?);
        Ok(())
    }

    /// Deletes a saved view, report or dashboard.
    pub async fn delete_view(&mut self, name: &str) -> Result<bool, StoreError> {
        let tenant = self.tenant.as_str();
        let affected = on!(self.entered().await?, c => sqlx::query(
            "DELETE FROM saved_views WHERE tenant_id = $1 AND name = $2",
        )
        .bind(tenant)
        .bind(name)
        .execute(&mut **c)
        .await?
        .rows_affected());
        Ok(affected == 1)
    }

    /// Deletes a view a pack installed (not one of the same name someone else made).
    pub async fn delete_pack_view(
        &mut self,
        name: &str,
        pack_id: &str,
    ) -> Result<bool, StoreError> {
        let tenant = self.tenant.as_str();
        let affected = on!(self.entered().await?, c => sqlx::query(
            "DELETE FROM saved_views WHERE tenant_id = $1 AND name = $2 AND pack_id = $3",
        )
        .bind(tenant)
        .bind(name)
        .bind(pack_id)
        .execute(&mut **c)
        .await?
        .rows_affected());
        Ok(affected == 1)
    }

    /// Serializes the pack operations of the tenant until the transaction ends: on PostgreSQL a
    /// transaction-scoped advisory lock of its own (not a row lock: the tenant's row is what
    /// every foreign key of its data checks, and its writes must not wait for a pack
    /// operation); on SQLite the one writer already serializes them.
    pub async fn lock_packs(&mut self) -> Result<(), StoreError> {
        let key = format!("rapport:packs:{}", self.tenant.as_str());
        if let super::Exec::Postgres(c) = self.entered().await? {
            sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
                .bind(key)
                .execute(&mut **c)
                .await?;
        }
        Ok(())
    }
}
