//! Emails in the outbox are delivered through an SMTP relay when the server has one: a real
//! server on SQLite and PostgreSQL, a `send_email` workflow step, and an SMTP relay in the test
//! that speaks the protocol over TCP (and refuses one recipient, as relays do).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rapport::webhooks::delivery::Mailer;
use rapport_tests::{Backend, TestApp, spawn_app_with};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emails_go_through_the_smtp_relay_on_sqlite() {
    emails_go_through_the_smtp_relay(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emails_go_through_the_smtp_relay_on_postgres() {
    emails_go_through_the_smtp_relay(Backend::Postgres).await;
}

/// The messages the relay accepted: envelope recipients and the data.
type Accepted = Arc<Mutex<Vec<(Vec<String>, String)>>>;

/// A minimal SMTP relay on loopback: accepts every recipient but `bounce@…` (550).
async fn relay() -> (u16, Accepted) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted: Accepted = Arc::default();
    let log = accepted.clone();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let log = log.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                write.write_all(b"220 relay.test ESMTP\r\n").await.unwrap();
                let mut recipients = Vec::new();
                while let Ok(Some(line)) = lines.next_line().await {
                    let verb = line.to_ascii_uppercase();
                    let reply: &[u8] = if verb.starts_with("EHLO") || verb.starts_with("HELO") {
                        b"250 relay.test\r\n"
                    } else if verb.starts_with("MAIL FROM") {
                        recipients.clear();
                        b"250 OK\r\n"
                    } else if verb.starts_with("RCPT TO") {
                        if verb.contains("BOUNCE@") {
                            b"550 5.1.1 no such user\r\n"
                        } else {
                            recipients.push(line[8..].trim().to_owned());
                            b"250 OK\r\n"
                        }
                    } else if verb == "DATA" {
                        write.write_all(b"354 go on\r\n").await.unwrap();
                        let mut data = String::new();
                        while let Ok(Some(line)) = lines.next_line().await {
                            if line == "." {
                                break;
                            }
                            data.push_str(&line);
                            data.push('\n');
                        }
                        log.lock()
                            .unwrap()
                            .push((std::mem::take(&mut recipients), data));
                        b"250 queued\r\n"
                    } else if verb == "QUIT" {
                        let _ = write.write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        b"250 OK\r\n"
                    };
                    if write.write_all(reply).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, accepted)
}

async fn email_with_status(app: &TestApp, to: &str, status: &str) -> Value {
    for _ in 0..200 {
        let reply = app.get("/api/v1/outbox?kind=email").await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        if let Some(found) = reply.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|message| message["payload"]["to"] == to && message["status"] == status)
        {
            return found.clone();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "no email to {to} is {status}: {:#?}",
        app.get("/api/v1/outbox?kind=email").await.body
    );
}

async fn emails_go_through_the_smtp_relay(backend: Backend) {
    let (port, accepted) = relay().await;
    let mailer = Mailer::new(
        &format!("smtp://127.0.0.1:{port}"),
        "Rapport CRM <crm@example.com>",
    )
    .unwrap();
    let Some(app) = spawn_app_with(backend, move |state| {
        state.webhooks = state.webhooks.clone().with_mailer(mailer);
    })
    .await
    else {
        return;
    };
    app.define(json!({"name": "contact", "fields": [
        {"name": "first_name", "type": "text", "required": true},
        {"name": "email", "type": "email"}
    ]}))
    .await;
    let reply = app
        .post(
            "/api/v1/workflows",
            json!({"name": "welcome",
                   "trigger": {"type": "record", "entity": "contact", "events": ["created"]},
                   "steps": [{"id": "mail", "type": "send_email", "to": "{{record.email}}",
                              "subject": "Welcome, {{record.first_name}}",
                              "body": "Dear {{record.first_name}}, welcome aboard."}]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    app.create(
        "contact",
        json!({"first_name": "Ann", "email": "ann@example.com"}),
    )
    .await;
    let sent = email_with_status(&app, "ann@example.com", "delivered").await;
    assert_eq!(sent["attempts"], 1);
    let messages = accepted.lock().unwrap().clone();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let (recipients, data) = &messages[0];
    assert_eq!(recipients, &vec!["<ann@example.com>".to_owned()]);
    assert!(data.contains("Subject: Welcome, Ann"), "{data}");
    assert!(
        data.contains("From: \"Rapport CRM\" <crm@example.com>"),
        "{data}"
    );
    assert!(data.contains("Dear Ann, welcome aboard."), "{data}");
    let id = sent["id"].as_str().unwrap();
    assert!(
        data.contains(&format!("Message-ID: <{id}@rapport>")),
        "receivers can tell a resent email by its id: {data}"
    );
    // A recipient the relay refuses for good is dead-lettered at once, with the relay's answer.
    app.create(
        "contact",
        json!({"first_name": "Bo", "email": "bounce@example.com"}),
    )
    .await;
    let dead = email_with_status(&app, "bounce@example.com", "failed").await;
    assert_eq!(dead["attempts"], 1);
    let error = dead["last_error"].as_str().unwrap();
    assert!(
        error.contains("550") || error.contains("no such user"),
        "{error}"
    );
    assert_eq!(accepted.lock().unwrap().len(), 1);
    app.stop().await;
}
