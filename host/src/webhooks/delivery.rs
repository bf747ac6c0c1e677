//! The delivery worker: claims due webhook messages (and, with an SMTP relay, emails) from the outbox (a lease, `SKIP LOCKED` on
//! PostgreSQL so servers share the work), signs and sends each, logs the attempt and settles the
//! message in one transaction: delivered, retried after a backoff, or dead-lettered (`failed`)
//! after its last attempt or when its target is refused.
//!
//! Delivery is at least once: a server that dies after sending and before settling sends again
//! when the lease runs out. Receivers deduplicate by the `Rapport-Webhook-Id` header.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use serde::Deserialize;
use serde_json::Value;
use sha2::Sha256;
use time::OffsetDateTime;
use tokio::task::JoinSet;

use super::Webhooks;
use super::guard::{GuardedResolver, Refused};
use crate::domain::TenantId;
use crate::store::Tx;
use crate::store::webhooks::{ClaimedMessage, Delivery, Settled};

/// The outbox kind of webhook calls.
pub const KIND: &str = "webhook";
/// How many deliveries one server makes at a time.
const CONCURRENT: usize = 8;
/// How long a claim holds a message: longer than a request may take.
const LEASE: Duration = Duration::from_secs(60);
/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(10);
/// How often the worker looks for due messages.
const POLL: Duration = Duration::from_millis(250);

/// The outbox kind of emails (`send_email` steps, plugins).
pub const EMAIL: &str = "email";
/// How emails are retried: attempts, and the first wait (doubling).
const EMAIL_POLICY: (i64, f64) = (10, 30.0);

/// An SMTP relay the outbox's emails go through.
pub struct Mailer {
    transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    from: lettre::message::Mailbox,
    /// The relay without credentials, for the delivery log.
    label: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("relay", &self.label)
            .finish()
    }
}

impl Mailer {
    /// A relay from a URL: `smtps://user:pass@host:465` (TLS), `smtp://user:pass@host:587?tls=required`
    /// (STARTTLS), or `smtp://host:25` (plain, for a relay on the same host); `from` is the
    /// sender (`Rapport <crm@example.com>`).
    pub fn new(url: &str, from: &str) -> Result<Self, String> {
        let parsed = reqwest::Url::parse(url)
            .map_err(|error| format!("the SMTP URL is invalid: {error}"))?;
        let label = format!(
            "{}://{}:{}",
            parsed.scheme(),
            parsed.host_str().unwrap_or_default(),
            parsed
                .port()
                .map_or("default".to_owned(), |port| port.to_string())
        );
        let encrypted = parsed.scheme() == "smtps"
            || parsed
                .query_pairs()
                .any(|(key, value)| key == "tls" && value == "required");
        let local = parsed
            .host_str()
            .is_some_and(|host| matches!(host, "localhost" | "127.0.0.1" | "[::1]"));
        if (!parsed.username().is_empty() || parsed.password().is_some()) && !encrypted && !local {
            return Err(
                "the SMTP URL sends credentials without TLS: use `smtps://` or `?tls=required`"
                    .to_owned(),
            );
        }
        let transport = lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(url)
            .map_err(|error| format!("the SMTP URL is invalid: {error}"))?
            .timeout(Some(TIMEOUT))
            .build();
        let from = from
            .parse()
            .map_err(|error| format!("`{from}` is not a sender address: {error}"))?;
        Ok(Self {
            transport,
            from,
            label,
        })
    }

    async fn send(&self, message_id: &str, payload: &str) -> Outcome {
        use lettre::AsyncTransport as _;
        #[derive(Deserialize)]
        struct Email {
            to: String,
            subject: String,
            body: String,
        }
        let email: Email = match serde_json::from_str(payload) {
            Ok(email) => email,
            Err(error) => return Outcome::Dead(format!("the message is not an email: {error}")),
        };
        let to: lettre::message::Mailbox = match email.to.parse() {
            Ok(to) => to,
            Err(error) => {
                return Outcome::Dead(format!("`{}` is not an address: {error}", email.to));
            }
        };
        let message = lettre::Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(email.subject)
            .message_id(Some(format!("<{message_id}@rapport>")))
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(email.body);
        let message = match message {
            Ok(message) => message,
            Err(error) => return Outcome::Dead(format!("the email cannot be built: {error}")),
        };
        match self.transport.send(message).await {
            Ok(response) => Outcome::Delivered(u16::from(response.code())),
            Err(error) if error.is_permanent() => {
                Outcome::Dead(format!("the relay refused it: {}", describe(&error)))
            }
            Err(error) => Outcome::Failed(None, format!("the relay failed: {}", describe(&error))),
        }
    }
}

/// What a `webhook` step enqueues.
#[derive(Debug, Deserialize)]
struct Payload {
    /// The webhook's id (its name may be reused after a delete).
    webhook: String,
    body: Value,
}

/// The signature headers of a delivery: `t` is the Unix time in seconds and `v1` the hex
/// HMAC-SHA256, keyed by the webhook's secret, of `"{t}.{body}"`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let hex: String = digest.iter().map(|byte| format!("{byte:02x}")).collect();
    format!("t={timestamp},v1={hex}")
}

/// Delivers webhook messages until `shutdown` resolves; deliveries in flight finish first.
pub async fn run(webhooks: Webhooks, shutdown: impl std::future::Future<Output = ()>) {
    let client = match reqwest::Client::builder()
        .dns_resolver(Arc::new(GuardedResolver(webhooks.guard().clone())))
        .redirect(reqwest::redirect::Policy::none())
        // A proxy would resolve and connect on its own, past the guard.
        .no_proxy()
        .timeout(TIMEOUT)
        .user_agent(concat!("Rapport-Webhooks/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(error) => {
            tracing::error!(%error, "cannot build the webhook client: webhooks are not delivered");
            return;
        }
    };
    let kinds = if webhooks.mailer().is_some() {
        vec![KIND, EMAIL]
    } else {
        vec![KIND]
    };
    let worker = Arc::new(Worker {
        webhooks,
        client,
        kinds,
    });
    let mut working: JoinSet<()> = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        while working.try_join_next().is_some() {}
        let free = CONCURRENT - working.len();
        let now = crate::store::now();
        let due = free > 0
            && worker
                .webhooks
                .store()
                .messages_due(&worker.kinds, now)
                .await
                .unwrap_or(true);
        if due {
            match worker
                .webhooks
                .store()
                .claim_messages(&worker.kinds, now, now + LEASE, free as i64)
                .await
            {
                Ok(claimed) => {
                    for message in claimed {
                        let worker = worker.clone();
                        let leased_until = now + LEASE;
                        working.spawn(async move { worker.deliver(message, leased_until).await });
                    }
                }
                Err(error) => tracing::error!(%error, "cannot claim webhook messages"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(POLL) => {}
            () = &mut shutdown => break,
        }
    }
    while working.join_next().await.is_some() {}
}

struct Worker {
    webhooks: Webhooks,
    client: reqwest::Client,
    /// The outbox kinds this worker delivers.
    kinds: Vec<&'static str>,
}

/// One attempt, for the log.
struct Attempt {
    outcome: Outcome,
    url: String,
    webhook_id: Option<String>,
    /// Attempts in all, and the first wait.
    policy: (i64, f64),
    started_at: OffsetDateTime,
    clock: Instant,
}

/// How an attempt ended.
enum Outcome {
    Delivered(u16),
    /// Worth trying again: an error status, a timeout, a connection failure.
    Failed(Option<u16>, String),
    /// Not worth trying again: the target is refused, or the webhook is gone.
    Dead(String),
}

impl Worker {
    async fn deliver(&self, message: ClaimedMessage, leased_until: OffsetDateTime) {
        let tenant = TenantId::from_stored(message.tenant_id.clone());
        let started_at = crate::store::now();
        let clock = Instant::now();
        let (outcome, url, webhook_id, policy) = match self.webhooks.mailer() {
            Some(mailer) if message.kind == EMAIL => (
                mailer.send(&message.id, &message.payload).await,
                mailer.label.clone(),
                None,
                EMAIL_POLICY,
            ),
            _ => self.call(&tenant, &message).await,
        };
        let attempt = Attempt {
            outcome,
            url,
            webhook_id,
            policy,
            started_at,
            clock,
        };
        self.settle(tenant, &message, attempt, leased_until).await;
    }

    /// Calls the webhook a message is for.
    async fn call(
        &self,
        tenant: &TenantId,
        message: &ClaimedMessage,
    ) -> (Outcome, String, Option<String>, (i64, f64)) {
        let payload: Result<Payload, _> = serde_json::from_str(&message.payload);
        let webhook = match &payload {
            Ok(payload) => match self.webhook(tenant, &payload.webhook).await {
                Ok(found) => found,
                Err(error) => {
                    // Not the message's fault: tried again like a failed call.
                    let outcome =
                        Outcome::Failed(None, format!("cannot read the webhook: {error}"));
                    return (
                        outcome,
                        String::new(),
                        Some(payload.webhook.clone()),
                        (i64::MAX, 30.0),
                    );
                }
            },
            Err(_) => None,
        };
        match (&payload, &webhook) {
            (Err(error), _) => (
                Outcome::Dead(format!("the message is not a webhook call: {error}")),
                String::new(),
                None,
                (1, 1.0),
            ),
            (Ok(payload), None) => (
                Outcome::Dead("the webhook was deleted".to_owned()),
                String::new(),
                Some(payload.webhook.clone()),
                (1, 1.0),
            ),
            (Ok(payload), Some(webhook)) => (
                self.send(&message.id, &webhook.url, &webhook.secret, &payload.body)
                    .await,
                webhook.url.clone(),
                Some(webhook.id.clone()),
                (webhook.max_attempts, webhook.backoff_seconds),
            ),
        }
    }

    /// Logs the attempt and settles the message: delivered, retried after a backoff, or
    /// dead-lettered.
    async fn settle(
        &self,
        tenant: TenantId,
        message: &ClaimedMessage,
        done: Attempt,
        leased_until: OffsetDateTime,
    ) {
        let Attempt {
            outcome,
            url,
            webhook_id,
            policy,
            started_at,
            clock,
        } = done;
        let attempt = message.attempts + 1;
        let now = crate::store::now();
        let (status, status_code, error, next_at) = match &outcome {
            Outcome::Delivered(code) => ("delivered", Some(*code), None, None),
            Outcome::Failed(code, error) if attempt < policy.0 => {
                let factor = 2f64.powi((attempt - 1).min(20) as i32);
                let wait = (policy.1 * factor).min(3600.0);
                (
                    "pending",
                    *code,
                    Some(error.clone()),
                    Some(now + time::Duration::seconds_f64(wait)),
                )
            }
            Outcome::Failed(code, error) => ("failed", *code, Some(error.clone()), None),
            Outcome::Dead(error) => ("failed", None, Some(error.clone()), None),
        };
        if status == "failed" {
            tracing::warn!(message = %message.id, error = ?error, "a webhook delivery was dead-lettered");
        }
        let delivery = Delivery {
            id: 0,
            message_id: message.id.clone(),
            webhook_id,
            attempt,
            url,
            status_code: status_code.map(i64::from),
            error,
            duration_ms: clock.elapsed().as_millis() as i64,
            started_at,
        };
        let result = self
            .webhooks
            .store()
            .write(move |tx: &mut Tx| {
                Box::pin(async move {
                    let settled = Settled {
                        status,
                        attempts: attempt,
                        next_at,
                        error: delivery.error.as_deref(),
                        now,
                    };
                    tx.scoped(&tenant)
                        .settle_delivery(&delivery, &settled, leased_until)
                        .await
                })
            })
            .await;
        match result {
            Ok(true) => {}
            Ok(false) => tracing::warn!(
                message = %message.id,
                "a delivery outlasted its lease and another server took the message over"
            ),
            // The lease runs out and the message is sent again: at least once.
            Err(error) => {
                tracing::error!(message = %message.id, %error, "cannot record a delivery")
            }
        }
    }

    /// The webhook a message names: by id (workflow steps), or by name (plugins with the
    /// `outbox webhook` capability).
    async fn webhook(
        &self,
        tenant: &TenantId,
        key: &str,
    ) -> Result<Option<crate::store::webhooks::StoredWebhook>, crate::store::StoreError> {
        let mut conn = self.webhooks.store().reader().await?;
        let mut scoped = conn.scoped(tenant);
        match scoped.webhook_by_id(key).await? {
            Some(found) => Ok(Some(found)),
            None => scoped.webhook(key).await,
        }
    }

    async fn send(&self, message_id: &str, url: &str, secret: &str, body: &Value) -> Outcome {
        let url = match reqwest::Url::parse(url) {
            Ok(url) => url,
            Err(error) => return Outcome::Dead(format!("`{url}` is not a URL: {error}")),
        };
        if let Err(refused) = self.webhooks.guard().check_url(&url) {
            return Outcome::Dead(format!("refused: {refused}"));
        }
        let body = serde_json::to_vec(body).unwrap_or_default();
        let timestamp = OffsetDateTime::now_utc().unix_timestamp();
        let request = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Rapport-Webhook-Id", message_id)
            .header("Rapport-Timestamp", timestamp.to_string())
            .header("Rapport-Signature", signature(secret, timestamp, &body))
            .body(body);
        match request.send().await {
            Ok(response) if response.status().is_success() => {
                Outcome::Delivered(response.status().as_u16())
            }
            Ok(response) => {
                let status = response.status();
                Outcome::Failed(
                    Some(status.as_u16()),
                    format!("the target answered {status}"),
                )
            }
            Err(error) => match refusal(&error) {
                Some(refused) => Outcome::Dead(format!("refused: {refused}")),
                None if error.is_timeout() => {
                    Outcome::Failed(None, format!("no answer within {} s", TIMEOUT.as_secs()))
                }
                None => Outcome::Failed(None, describe(&error)),
            },
        }
    }
}

/// The guard's refusal inside a client error, if that is what it is.
fn refusal(error: &(dyn std::error::Error + 'static)) -> Option<Refused> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(refused) = current.downcast_ref::<Refused>() {
            return Some(refused.clone());
        }
        source = current.source();
    }
    None
}

/// An error with its causes, on one line.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_the_hmac_of_the_timestamp_and_the_body() {
        // The digest computed independently, with Python's hmac module:
        // hmac.new(b"whsec_test", b'1700000000.{"a":1}', "sha256").hexdigest()
        let signed = signature("whsec_test", 1_700_000_000, br#"{"a":1}"#);
        assert_eq!(
            signed,
            "t=1700000000,v1=38877139021993b830af32feea6e18a8da83eb2f6e49ee50bd9e4cf4ca4d3789"
        );
        assert_ne!(
            signed,
            signature("whsec_other", 1_700_000_000, br#"{"a":1}"#),
            "the secret keys it"
        );
        assert_ne!(
            signed,
            signature("whsec_test", 1_700_000_001, br#"{"a":1}"#),
            "the timestamp is signed"
        );
    }
}
