//! Webhooks: endpoints an administrator registers (a name, a URL, a secret), called by `webhook`
//! workflow steps. A step enqueues its call in the outbox, in the step's transaction; the
//! delivery worker ([`delivery`]) signs and sends it, retries with backoff, and dead-letters it
//! after its last attempt. Targets on the server's own network are refused ([`guard`]). The same
//! worker hands the outbox's emails to an SMTP relay when the server has one (`--smtp-url`).

use std::sync::Arc;

use base64::Engine as _;
use rand::RngCore as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

use crate::auth::Principal;
use crate::metadata::validation::Problem;
use crate::store::webhooks::{Delivery, StoredWebhook};
use crate::store::{Scoped, Store, StoreError};

pub mod delivery;
pub mod guard;

pub use guard::Guard;

/// The default and the largest number of attempts of one delivery.
const DEFAULT_ATTEMPTS: i64 = 10;
const MAX_ATTEMPTS: i64 = 20;
/// The wait before the first retry (it doubles after each, up to an hour).
const DEFAULT_BACKOFF: f64 = 30.0;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("only administrators may manage webhooks")]
    Forbidden,
    #[error("the webhook is invalid")]
    Invalid(Vec<Problem>),
    #[error("webhook `{0}` does not exist")]
    Unknown(String),
    #[error("webhook `{0}` already exists")]
    AlreadyExists(String),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A webhook as an administrator writes it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct WebhookInput {
    name: String,
    url: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    retry: RetryInput,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RetryInput {
    max_attempts: Option<i64>,
    backoff_seconds: Option<f64>,
}

/// A webhook as the API shows it; the secret only when it is created or rotated.
#[derive(Debug, Clone, Serialize)]
pub struct WebhookView {
    pub name: String,
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub retry: RetryView,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

#[derive(Debug, Clone, Serialize)]
pub struct RetryView {
    pub max_attempts: i64,
    pub backoff_seconds: f64,
}

fn view(stored: &StoredWebhook, with_secret: bool) -> WebhookView {
    WebhookView {
        name: stored.name.clone(),
        url: stored.url.clone(),
        description: stored.description.clone(),
        retry: RetryView {
            max_attempts: stored.max_attempts,
            backoff_seconds: stored.backoff_seconds,
        },
        secret: with_secret.then(|| stored.secret.clone()),
        created_at: stored.created_at,
        updated_at: stored.updated_at,
    }
}

/// A delivery attempt as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryView {
    pub id: i64,
    pub message_id: String,
    pub attempt: i64,
    pub url: String,
    pub status_code: Option<i64>,
    pub error: Option<String>,
    pub duration_ms: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
}

impl From<Delivery> for DeliveryView {
    fn from(delivery: Delivery) -> Self {
        Self {
            id: delivery.id,
            message_id: delivery.message_id,
            attempt: delivery.attempt,
            url: delivery.url,
            status_code: delivery.status_code,
            error: delivery.error,
            duration_ms: delivery.duration_ms,
            started_at: delivery.started_at,
        }
    }
}

/// A new signing secret: 256 random bits.
fn new_secret() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "whsec_{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// The webhook service: definitions, the guard deliveries go through, and the SMTP relay the
/// same worker hands emails to when one is configured.
#[derive(Debug, Clone)]
pub struct Webhooks {
    store: Store,
    guard: Arc<Guard>,
    mailer: Option<Arc<delivery::Mailer>>,
}

impl Webhooks {
    pub fn new(store: Store, guard: Guard) -> Self {
        Self {
            store,
            guard: Arc::new(guard),
            mailer: None,
        }
    }

    /// Delivers the outbox's emails through `mailer` too.
    pub fn with_mailer(mut self, mailer: delivery::Mailer) -> Self {
        self.mailer = Some(Arc::new(mailer));
        self
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn guard(&self) -> &Arc<Guard> {
        &self.guard
    }

    pub fn mailer(&self) -> Option<&Arc<delivery::Mailer>> {
        self.mailer.as_ref()
    }

    /// Parses and checks an administrator's definition.
    fn checked(&self, json: &Value) -> Result<(WebhookInput, i64, f64), WebhookError> {
        let input: WebhookInput = serde_json::from_value(json.clone())
            .map_err(|error| WebhookError::Invalid(vec![Problem::new("/", error.to_string())]))?;
        let mut problems = Vec::new();
        let name_ok = input.name.len() <= 63
            && input.name.starts_with(|c: char| c.is_ascii_lowercase())
            && input
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !name_ok {
            problems.push(Problem::new(
                "/name",
                format!(
                    "`{}` is not a name: lowercase letters, digits and `_`, starting with a letter",
                    input.name
                ),
            ));
        }
        if input.url.len() > 2000 {
            problems.push(Problem::new(
                "/url",
                "the URL is longer than 2000 characters",
            ));
        } else {
            match reqwest::Url::parse(&input.url) {
                Err(error) => problems.push(Problem::new(
                    "/url",
                    format!("`{}` is not a URL: {error}", input.url),
                )),
                Ok(url) => {
                    if let Err(refused) = self.guard.check_url(&url) {
                        problems.push(Problem::new("/url", refused.0));
                    }
                }
            }
        }
        if input.description.as_ref().is_some_and(|d| d.len() > 2000) {
            problems.push(Problem::new(
                "/description",
                "the description is longer than 2000 characters",
            ));
        }
        let attempts = input.retry.max_attempts.unwrap_or(DEFAULT_ATTEMPTS);
        if !(1..=MAX_ATTEMPTS).contains(&attempts) {
            problems.push(Problem::new(
                "/retry/max_attempts",
                format!("must be between 1 and {MAX_ATTEMPTS}, not {attempts}"),
            ));
        }
        let backoff = input.retry.backoff_seconds.unwrap_or(DEFAULT_BACKOFF);
        if !(0.1..=3600.0).contains(&backoff) {
            problems.push(Problem::new(
                "/retry/backoff_seconds",
                format!("must be between 0.1 and 3600, not {backoff}"),
            ));
        }
        if problems.is_empty() {
            Ok((input, attempts, backoff))
        } else {
            Err(WebhookError::Invalid(problems))
        }
    }

    pub async fn create(
        &self,
        principal: &Principal,
        json: &Value,
    ) -> Result<WebhookView, WebhookError> {
        admin(principal)?;
        let (input, attempts, backoff) = self.checked(json)?;
        let mut tx = self.store.begin().await?;
        let mut scoped = tx.scoped(&principal.tenant);
        if scoped.webhook(&input.name).await?.is_some() {
            return Err(WebhookError::AlreadyExists(input.name));
        }
        let id = uuid::Uuid::now_v7().to_string();
        let inserted = scoped
            .insert_webhook(
                &id,
                &input.name,
                &input.url,
                &new_secret(),
                input.description.as_deref(),
                attempts,
                backoff,
                crate::store::now(),
            )
            .await;
        match inserted {
            // Another request registered the name since the check.
            Err(error) if error.violated_unique_index().is_some() => {
                return Err(WebhookError::AlreadyExists(input.name));
            }
            other => other?,
        }
        let stored = found(scoped.webhook_by_id(&id).await?, &input.name)?;
        tx.commit().await?;
        Ok(view(&stored, true))
    }

    pub async fn list(&self, principal: &Principal) -> Result<Vec<WebhookView>, WebhookError> {
        admin(principal)?;
        let mut conn = self.store.reader().await?;
        let all = conn.scoped(&principal.tenant).webhooks().await?;
        Ok(all.iter().map(|stored| view(stored, false)).collect())
    }

    pub async fn get(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<WebhookView, WebhookError> {
        admin(principal)?;
        let mut conn = self.store.reader().await?;
        let stored = found(conn.scoped(&principal.tenant).webhook(name).await?, name)?;
        Ok(view(&stored, false))
    }

    /// Replaces the URL, description and retry policy; the name and secret stay.
    pub async fn update(
        &self,
        principal: &Principal,
        name: &str,
        json: &Value,
    ) -> Result<WebhookView, WebhookError> {
        admin(principal)?;
        let (input, attempts, backoff) = self.checked(json)?;
        if input.name != name {
            return Err(WebhookError::Invalid(vec![Problem::new(
                "/name",
                format!(
                    "the name `{}` differs from `{name}` in the path: a webhook is never renamed",
                    input.name
                ),
            )]));
        }
        let mut tx = self.store.begin().await?;
        let mut scoped = tx.scoped(&principal.tenant);
        let stored = found(scoped.webhook(name).await?, name)?;
        scoped
            .update_webhook(
                &stored.id,
                &input.url,
                input.description.as_deref(),
                attempts,
                backoff,
                crate::store::now(),
            )
            .await?;
        let stored = found(scoped.webhook(name).await?, name)?;
        tx.commit().await?;
        Ok(view(&stored, false))
    }

    /// Gives the webhook a new secret, shown once in the answer; deliveries from now on are
    /// signed with it.
    pub async fn rotate_secret(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<WebhookView, WebhookError> {
        admin(principal)?;
        let mut tx = self.store.begin().await?;
        let mut scoped = tx.scoped(&principal.tenant);
        let stored = found(scoped.webhook(name).await?, name)?;
        scoped
            .set_webhook_secret(&stored.id, &new_secret(), crate::store::now())
            .await?;
        let stored = found(scoped.webhook(name).await?, name)?;
        tx.commit().await?;
        Ok(view(&stored, true))
    }

    /// Deletes a webhook; its pending deliveries dead-letter when their turn comes.
    pub async fn delete(&self, principal: &Principal, name: &str) -> Result<(), WebhookError> {
        admin(principal)?;
        let mut tx = self.store.begin().await?;
        let mut scoped = tx.scoped(&principal.tenant);
        let stored = found(scoped.webhook(name).await?, name)?;
        scoped
            .delete_webhook(&stored.id, crate::store::now())
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// A webhook's delivery attempts, newest first, with a cursor for the next page.
    pub async fn deliveries(
        &self,
        principal: &Principal,
        name: &str,
        before: Option<i64>,
        limit: i64,
    ) -> Result<(Vec<DeliveryView>, Option<i64>), WebhookError> {
        admin(principal)?;
        let mut conn = self.store.reader().await?;
        let mut scoped = conn.scoped(&principal.tenant);
        let stored = found(scoped.webhook(name).await?, name)?;
        let mut rows = scoped.deliveries(&stored.id, before, limit + 1).await?;
        let next = (rows.len() as i64 > limit).then(|| {
            rows.truncate(limit as usize);
            rows.last().map(|row| row.id)
        });
        Ok((
            rows.into_iter().map(DeliveryView::from).collect(),
            next.flatten(),
        ))
    }
}

/// The names of a tenant's webhooks, for checking workflow definitions.
pub async fn names(scoped: &mut Scoped<'_>) -> Result<Vec<String>, StoreError> {
    scoped.webhook_names().await
}

fn admin(principal: &Principal) -> Result<(), WebhookError> {
    if principal.is_admin() {
        Ok(())
    } else {
        Err(WebhookError::Forbidden)
    }
}

fn found(stored: Option<StoredWebhook>, name: &str) -> Result<StoredWebhook, WebhookError> {
    stored.ok_or_else(|| WebhookError::Unknown(name.to_owned()))
}
