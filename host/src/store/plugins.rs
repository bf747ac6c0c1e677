//! Plugin components (by content hash), the plugins installed in each tenant, and their runs.

use time::OffsetDateTime;

use super::records::{Param, build_inserts};
use super::{Scoped, SqlValue, Store, StoreError, Timestamp, bind_all, on};
use crate::domain::UserId;

/// A plugin as a tenant has it installed.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredPlugin {
    pub plugin_id: String,
    pub version: String,
    pub manifest: String,
    pub component: String,
    pub enabled: bool,
    pub config: Option<String>,
    pub installed_at: OffsetDateTime,
    pub installed_by: Option<String>,
    pub updated_at: OffsetDateTime,
}

/// One invocation of a plugin.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PluginRun {
    pub id: i64,
    pub plugin_id: String,
    pub version: String,
    pub stage: String,
    pub entity: Option<String>,
    pub record_id: Option<String>,
    pub started_at: OffsetDateTime,
    pub duration_us: i64,
    pub fuel_used: i64,
    pub outcome: String,
    pub error: Option<String>,
}

/// A run about to be recorded.
#[derive(Debug, Clone)]
pub struct NewRun {
    pub tenant_id: String,
    pub plugin_id: String,
    pub version: String,
    pub stage: String,
    pub entity: Option<String>,
    pub record_id: Option<String>,
    pub started_at: OffsetDateTime,
    pub duration_us: i64,
    pub fuel_used: i64,
    pub outcome: String,
    pub error: Option<String>,
}

const PLUGIN_COLUMNS: &str = "plugin_id, version, manifest, component, enabled, config, installed_at, installed_by, updated_at";

impl Store {
    /// Stores a component's bytes under their hash (once).
    pub async fn put_component(&self, sha256: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let mut tx = self.begin().await?;
        on!(tx.exec().await?, c => sqlx::query(
            "INSERT INTO plugin_components (sha256, bytes, size, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (sha256) DO NOTHING",
        )
        .bind(sha256)
        .bind(bytes)
        .bind(bytes.len() as i64)
        .bind(Timestamp(super::now()))
        .execute(&mut *c)
        .await
        .map(drop)?);
        tx.commit().await
    }

    /// The bytes of a stored component.
    pub async fn component_bytes(&self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let mut conn = self.reader().await?;
        Ok(on!(conn.exec(), c => sqlx::query_scalar(
            "SELECT bytes FROM plugin_components WHERE sha256 = $1",
        )
        .bind(sha256)
        .fetch_optional(&mut *c)
        .await?))
    }

    /// Records plugin runs (written apart from the requests they ran in, but through the group
    /// commit: on SQLite they share the fsync of the record writes around them).
    pub async fn insert_runs(&self, runs: Vec<NewRun>) -> Result<(), StoreError> {
        if runs.is_empty() {
            return Ok(());
        }
        // One multi-row INSERT per 400 runs: on SQLite a statement is a round trip to the
        // writer's worker thread, and runs come as often as hooked writes.
        self.write(move |tx: &mut super::Tx| {
            Box::pin(async move {
                let rows = runs.iter().map(|run| {
                    let text = |value: &Option<String>| {
                        value.clone().map_or(SqlValue::Null, SqlValue::Text)
                    };
                    [
                        Param::Value(SqlValue::Text(run.tenant_id.clone())),
                        Param::Value(SqlValue::Text(run.plugin_id.clone())),
                        Param::Value(SqlValue::Text(run.version.clone())),
                        Param::Value(SqlValue::Text(run.stage.clone())),
                        Param::Value(text(&run.entity)),
                        Param::Value(text(&run.record_id)),
                        Param::Value(SqlValue::Timestamp(run.started_at)),
                        Param::Value(SqlValue::Int(run.duration_us)),
                        Param::Value(SqlValue::Int(run.fuel_used)),
                        Param::Value(SqlValue::Text(run.outcome.clone())),
                        Param::Value(text(&run.error)),
                    ]
                });
                let statements = build_inserts(
                    tx.dialect(),
                    "INSERT INTO plugin_runs (tenant_id, plugin_id, version, stage, entity, record_id, \
                     started_at, duration_us, fuel_used, outcome, error) VALUES ",
                    "",
                    rows,
                );
                for (sql, binds) in &statements {
                    on!(tx.exec().await?, c => bind_all(sqlx::query(sql), binds)
                        .execute(&mut *c)
                        .await
                        .map(drop)?);
                }
                Ok(())
            })
        })
        .await
    }
}

impl Scoped<'_> {
    /// The bytes of a stored component, through this connection. Components are stored by
    /// content hash and shared by every tenant that installed the same bytes.
    pub async fn component_bytes(&mut self, sha256: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(on!(self.entered().await?, c => sqlx::query_scalar(
            "SELECT bytes FROM plugin_components WHERE sha256 = $1",
        )
        .bind(sha256)
        .fetch_optional(&mut **c)
        .await?))
    }

    pub async fn plugins(&mut self) -> Result<Vec<StoredPlugin>, StoreError> {
        let sql =
            format!("SELECT {PLUGIN_COLUMNS} FROM plugins WHERE tenant_id = $1 ORDER BY plugin_id");
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(&sql)
            .bind(tenant)
            .fetch_all(&mut **c)
            .await?))
    }

    pub async fn plugin(&mut self, plugin_id: &str) -> Result<Option<StoredPlugin>, StoreError> {
        let sql =
            format!("SELECT {PLUGIN_COLUMNS} FROM plugins WHERE tenant_id = $1 AND plugin_id = $2");
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(&sql)
            .bind(tenant)
            .bind(plugin_id)
            .fetch_optional(&mut **c)
            .await?))
    }

    /// Installs a plugin or replaces its version (keeping whether it is enabled and its
    /// configuration).
    pub async fn put_plugin(
        &mut self,
        plugin_id: &str,
        version: &str,
        manifest: &str,
        component: &str,
        user: &UserId,
    ) -> Result<(), StoreError> {
        let tenant = self.tenant.as_str();
        let now = Timestamp(super::now());
        on!(self.entered().await?, c => sqlx::query(
            "INSERT INTO plugins (tenant_id, plugin_id, version, manifest, component, enabled, config, installed_at, installed_by, updated_at) \
             VALUES ($1, $2, $3, $4, $5, FALSE, NULL, $6, $7, $6) \
             ON CONFLICT (tenant_id, plugin_id) DO UPDATE SET version = excluded.version, \
             manifest = excluded.manifest, component = excluded.component, updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(plugin_id)
        .bind(version)
        .bind(manifest)
        .bind(component)
        .bind(now)
        .bind(user.as_str())
        .execute(&mut **c)
        .await
        .map(drop)?);
        Ok(())
    }

    pub async fn set_plugin_enabled(
        &mut self,
        plugin_id: &str,
        enabled: bool,
    ) -> Result<bool, StoreError> {
        let tenant = self.tenant.as_str();
        let affected = on!(self.entered().await?, c => sqlx::query(
            "UPDATE plugins SET enabled = $3, updated_at = $4 WHERE tenant_id = $1 AND plugin_id = $2",
        )
        .bind(tenant)
        .bind(plugin_id)
        .bind(enabled)
        .bind(Timestamp(super::now()))
        .execute(&mut **c)
        .await?
        .rows_affected());
        Ok(affected == 1)
    }

    pub async fn set_plugin_config(
        &mut self,
        plugin_id: &str,
        config: &str,
    ) -> Result<bool, StoreError> {
        let tenant = self.tenant.as_str();
        let affected = on!(self.entered().await?, c => sqlx::query(
            "UPDATE plugins SET config = $3, updated_at = $4 WHERE tenant_id = $1 AND plugin_id = $2",
        )
        .bind(tenant)
        .bind(plugin_id)
        .bind(config)
        .bind(Timestamp(super::now()))
        .execute(&mut **c)
        .await?
        .rows_affected());
        Ok(affected == 1)
    }

    pub async fn remove_plugin(&mut self, plugin_id: &str) -> Result<bool, StoreError> {
        let tenant = self.tenant.as_str();
        let affected = on!(self.entered().await?, c => sqlx::query(
            "DELETE FROM plugins WHERE tenant_id = $1 AND plugin_id = $2",
        )
        .bind(tenant)
        .bind(plugin_id)
        .execute(&mut **c)
        .await?
        .rows_affected());
        Ok(affected == 1)
    }

    /// The latest runs of a plugin, newest first; with `failures`, only those that failed.
    pub async fn plugin_runs(
        &mut self,
        plugin_id: &str,
        failures: bool,
        limit: i64,
    ) -> Result<Vec<PluginRun>, StoreError> {
        let filter = if failures {
            " AND outcome NOT IN ('ok', 'rejected')"
        } else {
            ""
        };
        let sql = format!(
            "SELECT id, plugin_id, version, stage, entity, record_id, started_at, duration_us, \
             fuel_used, outcome, error FROM plugin_runs \
             WHERE tenant_id = $1 AND plugin_id = $2{filter} ORDER BY id DESC LIMIT $3"
        );
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(&sql)
            .bind(tenant)
            .bind(plugin_id)
            .bind(limit)
            .fetch_all(&mut **c)
            .await?))
    }
}
