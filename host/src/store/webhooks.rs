//! Webhooks (endpoints with their secrets), the delivery state of outbox messages, and the log of
//! delivery attempts. The delivery worker claims messages across tenants
//! ([`Store::claim_messages`]); all else goes through [`Scoped`].

use time::OffsetDateTime;

use super::{Dialect, Scoped, Store, StoreError, Timestamp, Tx, on};

/// A webhook as stored. Its `Debug` leaves the secret out.
#[derive(Clone, sqlx::FromRow)]
pub struct StoredWebhook {
    pub id: String,
    pub name: String,
    pub url: String,
    pub secret: String,
    pub description: Option<String>,
    pub max_attempts: i64,
    pub backoff_seconds: f64,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

impl std::fmt::Debug for StoredWebhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredWebhook")
            .field("id", &self.id)
            .field("name", &self.name)
            .field("url", &self.url)
            .field("secret", &"<redacted>")
            .finish_non_exhaustive()
    }
}

const WEBHOOK_COLUMNS: &str = "id, name, url, secret, description, max_attempts, backoff_seconds, \
     created_at, updated_at";

/// A message claimed for delivery.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ClaimedMessage {
    pub id: String,
    pub tenant_id: String,
    pub kind: String,
    pub payload: String,
    pub attempts: i64,
}

/// One attempt to deliver a message.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Delivery {
    pub id: i64,
    pub message_id: String,
    pub webhook_id: Option<String>,
    pub attempt: i64,
    pub url: String,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
    pub started_at: OffsetDateTime,
}

/// Where a message stands after an attempt.
#[derive(Debug, Clone)]
pub struct Settled<'a> {
    /// `delivered`, `pending` (tried again at `next_at`) or `failed` (dead-lettered).
    pub status: &'a str,
    pub attempts: i64,
    pub next_at: Option<OffsetDateTime>,
    pub error: Option<&'a str>,
    pub now: OffsetDateTime,
}

impl Store {
    /// Whether a pending message of `kinds` is due and not leased: a read, so that an idle
    /// worker does not take the writer to find nothing.
    pub async fn messages_due(
        &self,
        kinds: &[&str],
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let kinds_list: Vec<String> = (0..kinds.len()).map(|i| format!("${}", i + 2)).collect();
        let sql = format!(
            "SELECT 1 FROM outbox WHERE status = 'pending' AND kind IN ({}) AND next_at <= $1 \
             AND (lease_until IS NULL OR lease_until < $1) LIMIT 1",
            kinds_list.join(", ")
        );
        let mut conn = self.reader().await?;
        let found: Option<i32> = on!(conn.exec(), c => {
            let mut query = sqlx::query_scalar(&sql).bind(Timestamp(now));
            for kind in kinds {
                query = query.bind(*kind);
            }
            query.fetch_optional(&mut *c).await?
        });
        Ok(found.is_some())
    }

    /// Leases up to `limit` pending messages of `kinds` that are due, until `until`.
    pub async fn claim_messages(
        &self,
        kinds: &[&str],
        now: OffsetDateTime,
        until: OffsetDateTime,
        limit: i64,
    ) -> Result<Vec<ClaimedMessage>, StoreError> {
        if kinds.is_empty() {
            return Ok(Vec::new());
        }
        let skip_locked = match self.dialect() {
            Dialect::Sqlite => "",
            Dialect::Postgres => " FOR UPDATE SKIP LOCKED",
        };
        let kinds_list: Vec<String> = (0..kinds.len()).map(|i| format!("${}", i + 4)).collect();
        let sql = format!(
            "UPDATE outbox SET lease_until = $1 WHERE id IN (SELECT id FROM outbox \
               WHERE status = 'pending' AND kind IN ({}) AND next_at <= $2 \
               AND (lease_until IS NULL OR lease_until < $2) \
               ORDER BY next_at LIMIT $3{skip_locked}) \
             RETURNING id, tenant_id, kind, payload, attempts",
            kinds_list.join(", ")
        );
        let kinds: Vec<String> = kinds.iter().map(|kind| (*kind).to_owned()).collect();
        self.write(move |tx: &mut Tx| {
            Box::pin(async move {
                Ok(on!(tx.exec().await?, c => {
                    let mut query = sqlx::query_as(&sql)
                        .bind(Timestamp(until))
                        .bind(Timestamp(now))
                        .bind(limit);
                    for kind in &kinds {
                        query = query.bind(kind);
                    }
                    query.fetch_all(&mut *c).await?
                }))
            })
        })
        .await
    }
}

impl Scoped<'_> {
    #[allow(clippy::too_many_arguments)]
    pub async fn insert_webhook(
        &mut self,
        id: &str,
        name: &str,
        url: &str,
        secret: &str,
        description: Option<&str>,
        max_attempts: i64,
        backoff_seconds: f64,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let tenant = self.tenant.as_str();
        on!(self.entered().await?, c => sqlx::query(
            "INSERT INTO webhooks (id, tenant_id, name, url, secret, description, max_attempts, \
             backoff_seconds, created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
        )
        .bind(id)
        .bind(tenant)
        .bind(name)
        .bind(url)
        .bind(secret)
        .bind(description)
        .bind(max_attempts)
        .bind(backoff_seconds)
        .bind(Timestamp(now))
        .execute(&mut **c)
        .await
        .map(drop)?);
        Ok(())
    }

    pub async fn webhooks(&mut self) -> Result<Vec<StoredWebhook>, StoreError> {
        let sql = format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant_id = $1 AND deleted_at IS NULL \
             ORDER BY name"
        );
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(&sql)
            .bind(tenant)
            .fetch_all(&mut **c)
            .await?))
    }

    /// A live webhook by name.
    pub async fn webhook(&mut self, name: &str) -> Result<Option<StoredWebhook>, StoreError> {
        self.webhook_where("name", name).await
    }

    /// A live webhook by id.
    pub async fn webhook_by_id(&mut self, id: &str) -> Result<Option<StoredWebhook>, StoreError> {
        self.webhook_where("id", id).await
    }

    /// The names of the live webhooks.
    pub async fn webhook_names(&mut self) -> Result<Vec<String>, StoreError> {
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_scalar(
            "SELECT name FROM webhooks WHERE tenant_id = $1 AND deleted_at IS NULL ORDER BY name",
        )
        .bind(tenant)
        .fetch_all(&mut **c)
        .await?))
    }

    async fn webhook_where(
        &mut self,
        column: &str,
        key: &str,
    ) -> Result<Option<StoredWebhook>, StoreError> {
        let sql = format!(
            "SELECT {WEBHOOK_COLUMNS} FROM webhooks WHERE tenant_id = $1 AND {column} = $2 \
             AND deleted_at IS NULL"
        );
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(&sql)
            .bind(tenant)
            .bind(key)
            .fetch_optional(&mut **c)
            .await?))
    }

    pub async fn update_webhook(
        &mut self,
        id: &str,
        url: &str,
        description: Option<&str>,
        max_attempts: i64,
        backoff_seconds: f64,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let tenant = self.tenant.as_str();
        on!(self.entered().await?, c => sqlx::query(
            "UPDATE webhooks SET url = $1, description = $2, max_attempts = $3, backoff_seconds = $4, \
             updated_at = $5 WHERE tenant_id = $6 AND id = $7",
        )
        .bind(url)
        .bind(description)
        .bind(max_attempts)
        .bind(backoff_seconds)
        .bind(Timestamp(now))
        .bind(tenant)
        .bind(id)
        .execute(&mut **c)
        .await
        .map(drop)?);
        Ok(())
    }

    pub async fn set_webhook_secret(
        &mut self,
        id: &str,
        secret: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let tenant = self.tenant.as_str();
        on!(self.entered().await?, c => sqlx::query(
            "UPDATE webhooks SET secret = $1, updated_at = $2 WHERE tenant_id = $3 AND id = $4",
        )
        .bind(secret)
        .bind(Timestamp(now))
        .bind(tenant)
        .bind(id)
        .execute(&mut **c)
        .await
        .map(drop)?);
        Ok(())
    }

    pub async fn delete_webhook(
        &mut self,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<(), StoreError> {
        let tenant = self.tenant.as_str();
        on!(self.entered().await?, c => sqlx::query(
            "UPDATE webhooks SET deleted_at = $1 WHERE tenant_id = $2 AND id = $3",
        )
        .bind(Timestamp(now))
        .bind(tenant)
        .bind(id)
        .execute(&mut **c)
        .await
        .map(drop)?);
        Ok(())
    }

    /// Settles a message after an attempt and logs the attempt, in one transaction, if this
    /// server still holds the message's lease (`leased_until`, as claimed); answers whether it
    /// did. A server whose lease ran out (another took the message over) changes nothing.
    pub async fn settle_delivery(
        &mut self,
        delivery: &Delivery,
        settled: &Settled<'_>,
        leased_until: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let tenant = self.tenant.as_str();
        let delivered = (settled.status == "delivered").then_some(settled.now);
        let held = on!(self.entered().await?, c => sqlx::query(
            "UPDATE outbox SET status = $1, attempts = $2, next_at = $3, last_error = $4, \
             delivered_at = $5, lease_until = NULL \
             WHERE tenant_id = $6 AND id = $7 AND lease_until = $8",
        )
        .bind(settled.status)
        .bind(settled.attempts)
        .bind(settled.next_at.map(Timestamp))
        .bind(settled.error)
        .bind(delivered.map(Timestamp))
        .bind(tenant)
        .bind(&delivery.message_id)
        .bind(Timestamp(leased_until))
        .execute(&mut **c)
        .await?
        .rows_affected());
        if held == 0 {
            return Ok(false);
        }
        on!(self.entered().await?, c => sqlx::query(
            "INSERT INTO deliveries (tenant_id, message_id, webhook_id, attempt, url, status_code, \
             error, duration_ms, started_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        )
        .bind(tenant)
        .bind(&delivery.message_id)
        .bind(&delivery.webhook_id)
        .bind(delivery.attempt)
        .bind(&delivery.url)
        .bind(delivery.status_code)
        .bind(&delivery.error)
        .bind(delivery.duration_ms)
        .bind(Timestamp(delivery.started_at))
        .execute(&mut **c)
        .await
        .map(drop)?);
        Ok(true)
    }

    /// Puts a dead-lettered message back in the queue, with its attempts reset; answers whether
    /// there was such a message.
    pub async fn redeliver(&mut self, id: &str, now: OffsetDateTime) -> Result<bool, StoreError> {
        let tenant = self.tenant.as_str();
        let moved = on!(self.entered().await?, c => sqlx::query(
            "UPDATE outbox SET status = 'pending', attempts = 0, next_at = $1, last_error = NULL, \
             lease_until = NULL WHERE tenant_id = $2 AND id = $3 AND status = 'failed'",
        )
        .bind(Timestamp(now))
        .bind(tenant)
        .bind(id)
        .execute(&mut **c)
        .await?
        .rows_affected());
        Ok(moved == 1)
    }

    /// A webhook's delivery attempts, newest first, before the attempt `before` if given.
    pub async fn deliveries(
        &mut self,
        webhook_id: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<Vec<Delivery>, StoreError> {
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(
            "SELECT id, message_id, webhook_id, attempt, url, status_code, error, duration_ms, \
             started_at FROM deliveries WHERE tenant_id = $1 AND webhook_id = $2 \
             AND ($3 IS NULL OR id < $3) ORDER BY id DESC LIMIT $4",
        )
        .bind(tenant)
        .bind(webhook_id)
        .bind(before)
        .bind(limit)
        .fetch_all(&mut **c)
        .await?))
    }
}
