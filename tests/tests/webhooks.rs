//! Webhooks end to end, in a real server on SQLite and PostgreSQL, delivering to a real HTTP
//! receiver: signed bodies, the delivery log, retries with backoff, dead letters and their
//! redelivery, and targets on the server's own network refused after DNS.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use rapport_tests::{TestApp, on_both_backends};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use sha2::Sha256;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

on_both_backends!(
    a_webhook_step_posts_a_signed_body_and_the_delivery_is_logged,
    failing_deliveries_are_retried_with_backoff_then_dead_lettered_and_can_be_redelivered,
    targets_on_the_servers_own_network_are_refused,
);

/// What the receiver got: headers and body of each request.
type Received = Arc<Mutex<Vec<(HeaderMap, Vec<u8>)>>>;

/// An HTTP server on loopback that records every request and answers with `status`.
struct Receiver {
    port: u16,
    received: Received,
    status: Arc<AtomicU16>,
}

impl Receiver {
    async fn start(status: u16) -> Receiver {
        let received: Received = Arc::default();
        let status = Arc::new(AtomicU16::new(status));
        let (log, answer) = (received.clone(), status.clone());
        let app =
            axum::Router::new().fallback(move |headers: HeaderMap, body: axum::body::Bytes| {
                let (log, answer) = (log.clone(), answer.clone());
                async move {
                    log.lock().unwrap().push((headers, body.to_vec()));
                    axum::http::StatusCode::from_u16(answer.load(Ordering::SeqCst)).unwrap()
                }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            port,
            received,
            status,
        }
    }

    fn count(&self) -> usize {
        self.received.lock().unwrap().len()
    }

    async fn wait_for(&self, count: usize) -> Vec<(HeaderMap, Vec<u8>)> {
        for _ in 0..200 {
            if self.count() >= count {
                return self.received.lock().unwrap().clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the receiver got {} requests, not {count}", self.count());
    }
}

async fn define_complaints(app: &TestApp) {
    app.define(json!({"name": "complaint", "fields": [
        {"name": "title", "type": "text", "required": true},
        {"name": "priority", "type": "picklist", "options": ["urgent", "ordinary"]}
    ]}))
    .await;
}

async fn register(app: &TestApp, definition: Value) -> Value {
    let reply = app.post("/api/v1/webhooks", definition).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    reply.body
}

async fn on_new_complaints(app: &TestApp, step: Value) {
    let reply = app
        .post(
            "/api/v1/workflows",
            json!({"name": "tell_erp",
                   "trigger": {"type": "record", "entity": "complaint", "events": ["created"]},
                   "steps": [step]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
}

/// The webhook messages of the outbox, newest first.
async fn messages(app: &TestApp) -> Vec<Value> {
    let reply = app.get("/api/v1/outbox?kind=webhook").await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.body["data"].as_array().unwrap().clone()
}

/// Waits until the newest webhook message has `status`.
async fn message_with_status(app: &TestApp, status: &str) -> Value {
    for _ in 0..200 {
        if let Some(message) = messages(app).await.first()
            && message["status"] == status
        {
            return message.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("no webhook message is {status}: {:#?}", messages(app).await);
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> &'h str {
    headers
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

/// Checks a delivery's signature as a receiver would: HMAC-SHA256 of `"{t}.{body}"`.
fn verify(secret: &str, headers: &HeaderMap, body: &[u8]) {
    let signature = header(headers, "rapport-signature");
    let (t, v1) = signature
        .split_once(',')
        .and_then(|(t, v1)| Some((t.strip_prefix("t=")?, v1.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("not a signature: {signature}"));
    assert_eq!(t, header(headers, "rapport-timestamp"));
    let sent = t.parse::<i64>().unwrap();
    assert!(
        (OffsetDateTime::now_utc().unix_timestamp() - sent).abs() < 60,
        "fresh timestamp"
    );
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let expected: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect();
    assert_eq!(
        v1, expected,
        "the signature matches the body and the secret"
    );
}

async fn a_webhook_step_posts_a_signed_body_and_the_delivery_is_logged(app: &TestApp) {
    let receiver = Receiver::start(200).await;
    define_complaints(app).await;
    let created = register(
        app,
        json!({"name": "erp", "url": format!("http://127.0.0.1:{}/hooks/rapport", receiver.port),
               "description": "the ERP's complaint inbox"}),
    )
    .await;
    let secret = created["secret"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("whsec_"), "{created}");
    let shown = app.get("/api/v1/webhooks/erp").await;
    assert_eq!(shown.status, StatusCode::OK);
    assert!(
        shown.body.get("secret").is_none(),
        "the secret is shown once: {:?}",
        shown.body
    );
    assert_eq!(shown.body["retry"]["max_attempts"], 10);
    on_new_complaints(
        app,
        json!({"id": "tell", "type": "webhook", "webhook": "erp",
               "body": {"complaint": "{{record._id}}", "title": "{{record.title}}", "source": "rapport"}}),
    )
    .await;
    let id = app
        .create(
            "complaint",
            json!({"title": "Pump broken", "priority": "urgent"}),
        )
        .await;
    let received = receiver.wait_for(1).await;
    let (headers, body) = &received[0];
    assert_eq!(header(headers, "content-type"), "application/json");
    verify(&secret, headers, body);
    let sent: Value = serde_json::from_slice(body).unwrap();
    assert_eq!(
        sent,
        json!({"complaint": id, "title": "Pump broken", "source": "rapport"})
    );
    let message = message_with_status(app, "delivered").await;
    assert_eq!(header(headers, "rapport-webhook-id"), message["id"]);
    assert_eq!(message["attempts"], 1);
    assert!(message["delivered_at"].is_string());
    let log = app.get("/api/v1/webhooks/erp/deliveries").await;
    assert_eq!(log.status, StatusCode::OK, "{:?}", log.body);
    let attempts = log.body["data"].as_array().unwrap();
    assert_eq!(attempts.len(), 1, "{:?}", log.body);
    assert_eq!(attempts[0]["status_code"], 200);
    assert_eq!(attempts[0]["message_id"], message["id"]);
    assert!(attempts[0]["error"].is_null());

    // A rotated secret signs the next delivery; the old one no longer does.
    let rotated = app
        .post("/api/v1/webhooks/erp/rotate-secret", json!({}))
        .await;
    assert_eq!(rotated.status, StatusCode::OK, "{:?}", rotated.body);
    let new_secret = rotated.body["secret"].as_str().unwrap().to_owned();
    assert_ne!(new_secret, secret);
    app.create("complaint", json!({"title": "Leak"})).await;
    let received = receiver.wait_for(2).await;
    verify(&new_secret, &received[1].0, &received[1].1);
}

async fn failing_deliveries_are_retried_with_backoff_then_dead_lettered_and_can_be_redelivered(
    app: &TestApp,
) {
    let receiver = Receiver::start(503).await;
    define_complaints(app).await;
    register(
        app,
        json!({"name": "erp", "url": format!("http://127.0.0.1:{}/in", receiver.port),
               "retry": {"max_attempts": 3, "backoff_seconds": 0.3}}),
    )
    .await;
    // Without a body, the step sends the record, the event and the run.
    on_new_complaints(
        app,
        json!({"id": "tell", "type": "webhook", "webhook": "erp"}),
    )
    .await;
    let id = app.create("complaint", json!({"title": "No answer"})).await;
    let dead = message_with_status(app, "failed").await;
    assert_eq!(dead["attempts"], 3);
    assert!(
        dead["last_error"].as_str().unwrap().contains("503"),
        "{dead}"
    );
    let received = receiver.wait_for(3).await;
    assert_eq!(received.len(), 3, "three attempts, then no more");
    let ids: Vec<&str> = received
        .iter()
        .map(|(headers, _)| header(headers, "rapport-webhook-id"))
        .collect();
    assert!(
        ids.iter().all(|one| *one == dead["id"]),
        "one message id: {ids:?}"
    );
    let sent: Value = serde_json::from_slice(&received[0].1).unwrap();
    assert_eq!(sent["workflow"], "tell_erp");
    assert_eq!(sent["event"], "created");
    assert_eq!(sent["record"]["_id"], id.as_str());
    assert_eq!(sent["record"]["title"], "No answer");
    // The log shows each attempt, the waits between them doubling.
    let log = app.get("/api/v1/webhooks/erp/deliveries").await.body["data"].clone();
    let mut attempts = log.as_array().unwrap().clone();
    attempts.reverse();
    assert_eq!(attempts.len(), 3, "{log}");
    let started: Vec<OffsetDateTime> = attempts
        .iter()
        .map(|a| OffsetDateTime::parse(a["started_at"].as_str().unwrap(), &Rfc3339).unwrap())
        .collect();
    for (index, attempt) in attempts.iter().enumerate() {
        assert_eq!(attempt["attempt"], index as i64 + 1);
        assert_eq!(attempt["status_code"], 503);
    }
    assert!(
        started[1] - started[0] >= time::Duration::milliseconds(300),
        "{started:?}"
    );
    assert!(
        started[2] - started[1] >= time::Duration::milliseconds(600),
        "{started:?}"
    );
    // Dead letters are listed, and an administrator sends one again once the target is back.
    let listed = app.get("/api/v1/outbox?kind=webhook&status=failed").await;
    assert_eq!(listed.body["data"][0]["id"], dead["id"]);
    receiver.status.store(204, Ordering::SeqCst);
    let member = app.member("mo").await;
    let path = format!("/api/v1/outbox/{}/redeliver", dead["id"].as_str().unwrap());
    let refused = app.send(Method::POST, &path, &member, None, &[]).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN);
    let reply = app.post(&path, json!({})).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let delivered = message_with_status(app, "delivered").await;
    assert_eq!(delivered["id"], dead["id"]);
    assert_eq!(receiver.count(), 4);
    let again = app.post(&path, json!({})).await;
    assert_eq!(
        again.status,
        StatusCode::CONFLICT,
        "only a dead letter is redelivered"
    );
}

async fn targets_on_the_servers_own_network_are_refused(app: &TestApp) {
    let receiver = Receiver::start(200).await;
    define_complaints(app).await;
    for (url, message) in [
        ("http://10.0.0.1/hook", "a private address"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),
        ("http://[::1]:9/", "loopback"),
        ("ftp://example.com/", "http or https"),
        ("https://user:pw@example.com/", "credentials"),
        ("not a url", "is not a URL"),
    ] {
        let reply = app
            .post("/api/v1/webhooks", json!({"name": "bad", "url": url}))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{url}: {:?}",
            reply.body
        );
        assert!(
            reply.body["error"]["fields"]["/url"]
                .to_string()
                .contains(message),
            "{url}: {:?}",
            reply.body
        );
    }
    let reply = app
        .post(
            "/api/v1/webhooks",
            json!({"name": "bad", "url": "https://example.com/", "secret": "mine"}),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        reply.body
    );
    assert!(
        reply.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("secret")
    );
    let member = app.member("max").await;
    let reply = app
        .send(Method::GET, "/api/v1/webhooks", &member, None, &[])
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    // A workflow may only call a registered webhook.
    let reply = app
        .post(
            "/api/v1/workflows",
            json!({"name": "nowhere",
                   "trigger": {"type": "record", "entity": "complaint", "events": ["created"]},
                   "steps": [{"id": "call", "type": "webhook", "webhook": "ghost"}]}),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        reply.body
    );
    assert!(
        reply.body["error"]["fields"]["/steps/0/webhook"]
            .to_string()
            .contains("does not exist"),
        "{:?}",
        reply.body
    );
    // A name is only known after DNS: `localhost` is not allow-listed (127.0.0.1 is), and it
    // resolves to loopback, so the delivery is refused and dead-lettered at once.
    register(
        app,
        json!({"name": "sneaky", "url": format!("http://localhost:{}/in", receiver.port)}),
    )
    .await;
    on_new_complaints(
        app,
        json!({"id": "tell", "type": "webhook", "webhook": "sneaky"}),
    )
    .await;
    app.create("complaint", json!({"title": "Probe"})).await;
    let dead = message_with_status(app, "failed").await;
    let error = dead["last_error"].as_str().unwrap();
    assert!(error.contains("`localhost` resolves to"), "{error}");
    assert!(error.contains("loopback"), "{error}");
    assert_eq!(dead["attempts"], 1, "a refused target is not retried");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.count(), 0, "nothing reached the receiver");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_listed_name_is_resolved_and_delivered_to_on_sqlite() {
    an_allow_listed_name_is_resolved_and_delivered_to(rapport_tests::Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allow_listed_name_is_resolved_and_delivered_to_on_postgres() {
    an_allow_listed_name_is_resolved_and_delivered_to(rapport_tests::Backend::Postgres).await;
}

/// A name goes through the guard's resolver, which hands the client the addresses it checked:
/// with `localhost` allow-listed by the operator, the delivery reaches the receiver.
async fn an_allow_listed_name_is_resolved_and_delivered_to(backend: rapport_tests::Backend) {
    let Some(app) = rapport_tests::spawn_app_with(backend, |state| {
        state.webhooks = rapport::webhooks::Webhooks::new(
            state.store.clone(),
            rapport::webhooks::Guard::new(["localhost".to_owned()]),
        );
    })
    .await
    else {
        return;
    };
    let receiver = Receiver::start(200).await;
    define_complaints(&app).await;
    register(
        &app,
        json!({"name": "erp", "url": format!("http://localhost:{}/in", receiver.port)}),
    )
    .await;
    on_new_complaints(
        &app,
        json!({"id": "tell", "type": "webhook", "webhook": "erp"}),
    )
    .await;
    app.create("complaint", json!({"title": "By name"})).await;
    let delivered = message_with_status(&app, "delivered").await;
    assert_eq!(delivered["attempts"], 1, "{delivered}");
    assert_eq!(receiver.count(), 1);
    // The allow-list names hosts: the address literal of the same host is still refused.
    let reply = app
        .post(
            "/api/v1/webhooks",
            json!({"name": "literal", "url": format!("http://127.0.0.1:{}/in", receiver.port)}),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        reply.body
    );
    app.stop().await;
}
