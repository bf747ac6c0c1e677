//! The outbox: messages enqueued during a write, inserted in the write's own transaction (so a
//! message exists exactly when its write committed), and read back by administrators.

use time::OffsetDateTime;

use super::records::{Param, build_inserts};
use super::{Scoped, SqlValue, StoreError, bind_all, on};

/// A message: what is stored when it is enqueued.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct NewMessage {
    pub id: String,
    pub kind: String,
    /// JSON text, checked by whoever accepted it.
    pub payload: String,
    pub plugin_id: Option<String>,
    pub plugin_version: Option<String>,
    pub entity: Option<String>,
    pub record_id: Option<String>,
    /// The workflow run whose step enqueued it.
    pub run_id: Option<String>,
    pub created_by: String,
    pub created_at: OffsetDateTime,
}

/// A stored message and where its delivery stands.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredMessage {
    #[sqlx(flatten)]
    pub message: NewMessage,
    /// `pending`, `delivered` or `failed` (dead-lettered after its last attempt).
    pub status: String,
    pub attempts: i64,
    pub last_error: Option<String>,
    pub next_at: Option<OffsetDateTime>,
    pub delivered_at: Option<OffsetDateTime>,
}

/// Which messages to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct MessageFilter {
    pub kind: Option<String>,
    pub status: Option<String>,
    /// Only messages older than this id (the cursor of the previous page).
    pub before: Option<String>,
    pub limit: i64,
}

impl Scoped<'_> {
    /// Stores messages as pending, in the current transaction.
    pub async fn enqueue(&mut self, messages: &[NewMessage]) -> Result<(), StoreError> {
        if messages.is_empty() {
            return Ok(());
        }
        let text = |value: &Option<String>| SqlValue::text_or_null(value.as_deref());
        let tenant = self.tenant.as_str().to_owned();
        let rows = messages.iter().map(|message| {
            [
                Param::Value(SqlValue::Text(message.id.clone())),
                Param::Value(SqlValue::Text(tenant.clone())),
                Param::Value(SqlValue::Text(message.kind.clone())),
                Param::Value(SqlValue::Text(message.payload.clone())),
                Param::Value(text(&message.plugin_id)),
                Param::Value(text(&message.plugin_version)),
                Param::Value(text(&message.entity)),
                Param::Value(text(&message.record_id)),
                Param::Value(text(&message.run_id)),
                Param::Value(SqlValue::Text(message.created_by.clone())),
                Param::Value(SqlValue::Timestamp(message.created_at)),
                Param::Value(SqlValue::Timestamp(message.created_at)),
            ]
        });
        let statements = build_inserts(
            self.dialect(),
            "INSERT INTO outbox (id, tenant_id, kind, payload, plugin_id, plugin_version, entity, \
             record_id, run_id, created_by, created_at, next_at, status) VALUES ",
            "'pending'",
            rows,
        );
        for (sql, binds) in &statements {
            on!(self.entered().await?, c => bind_all(sqlx::query(sql), binds)
                .execute(&mut **c)
                .await
                .map(drop)?);
        }
        Ok(())
    }

    /// The tenant's messages, newest first.
    pub async fn outbox(
        &mut self,
        filter: &MessageFilter,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let mut sql = String::from(
            "SELECT id, kind, payload, plugin_id, plugin_version, entity, record_id, run_id, \
             created_by, created_at, status, attempts, last_error, next_at, delivered_at \
             FROM outbox WHERE tenant_id = $1",
        );
        let mut binds = vec![SqlValue::Text(self.tenant.as_str().to_owned())];
        super::newest_first(
            &mut sql,
            &mut binds,
            &[
                ("kind = ", filter.kind.as_deref()),
                ("status = ", filter.status.as_deref()),
                ("id < ", filter.before.as_deref()),
            ],
            filter.limit,
        );
        Ok(
            on!(self.entered().await?, c => super::bind_all_as(sqlx::query_as(&sql), &binds)
            .fetch_all(&mut **c)
            .await?),
        )
    }
}
