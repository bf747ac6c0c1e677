//! Workflows end to end, in a real server on SQLite and PostgreSQL: definitions checked at save
//! time, runs started by record events in the write's transaction, steps with their effects,
//! waits, retries, loop protection, manual runs and versions.

use std::time::Duration;

use rapport_tests::{TestApp, on_both_backends};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_both_backends!(
    definitions_with_problems_are_refused_with_the_path_of_each,
    an_urgent_complaint_runs_every_step_and_each_effect_is_visible,
    update_triggers_see_which_fields_changed_and_from_what,
    a_failing_step_is_retried_then_fails_visibly_and_can_be_retried,
    a_workflow_that_retriggers_itself_stops_at_the_depth_cap,
    a_wait_step_parks_the_run_until_its_time,
    manual_runs_check_their_input_and_who_starts_them,
    runs_in_flight_finish_on_their_version,
    an_approval_waits_for_a_decision_and_the_run_follows_it,
    new_leads_are_assigned_round_robin_and_their_owner_gets_a_task_for_tomorrow,
    a_plugin_step_runs_in_the_sandbox_and_its_output_feeds_the_next_step,
    the_demo_workflows_of_the_documents_run_on_the_demo_entities,
);

async fn define_complaints(app: &TestApp) {
    app.define(json!({"name": "complaint", "fields": [
        {"name": "title", "type": "text", "required": true},
        {"name": "priority", "type": "picklist", "options": ["urgent", "ordinary"], "required": true},
        {"name": "status", "type": "picklist", "options": ["open", "escalated", "resolved", "closed"]},
        {"name": "next_status", "type": "text"},
        {"name": "contact_email", "type": "email"},
        {"name": "note", "type": "text"},
        {"name": "touches", "type": "text"}
    ]}))
    .await;
    app.define(json!({"name": "task", "fields": [
        {"name": "subject", "type": "text", "required": true},
        {"name": "due", "type": "date"},
        {"name": "complaint", "type": "reference", "entity": "complaint"}
    ]}))
    .await;
}

async fn save(app: &TestApp, definition: Value) {
    let reply = app.post("/api/v1/workflows", definition).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
}

/// The runs of a workflow, newest first.
async fn runs(app: &TestApp, workflow: &str) -> Vec<Value> {
    let reply = app
        .get(&format!("/api/v1/workflows/{workflow}/runs?limit=100"))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.body["data"].as_array().unwrap().clone()
}

/// Waits until `workflow` has `count` runs that all reached a final state, and returns them
/// with their steps.
async fn settled(app: &TestApp, workflow: &str, count: usize) -> Vec<Value> {
    for _ in 0..400 {
        let all = runs(app, workflow).await;
        let done = all
            .iter()
            .filter(|run| {
                ["succeeded", "failed", "cancelled"].contains(&run["status"].as_str().unwrap())
            })
            .count();
        if all.len() >= count && done == all.len() {
            let mut detailed = Vec::new();
            for run in &all {
                let id = run["id"].as_str().unwrap();
                let reply = app
                    .get(&format!("/api/v1/workflows/{workflow}/runs/{id}"))
                    .await;
                assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
                detailed.push(reply.body);
            }
            return detailed;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "the runs of `{workflow}` did not settle: {:#?}",
        runs(app, workflow).await
    );
}

/// Waits until the newest run of `workflow` waits (a `wait` or `approval` step) and returns it.
async fn waiting_run(app: &TestApp, workflow: &str) -> Value {
    for _ in 0..200 {
        if let Some(run) = runs(app, workflow).await.first()
            && run["status"] == "waiting"
        {
            return run.clone();
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!(
        "no run of `{workflow}` waits: {:#?}",
        runs(app, workflow).await
    );
}

async fn record(app: &TestApp, entity: &str, id: &str) -> Value {
    let reply = app.get(&format!("/api/v1/records/{entity}/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.body
}

async fn definitions_with_problems_are_refused_with_the_path_of_each(app: &TestApp) {
    define_complaints(app).await;
    let cases = [
        (
            json!({"name": "w", "trigger": {"type": "record", "entity": "ticket", "events": ["created"]},
                   "steps": [{"id": "a", "type": "wait", "for": "1s"}]}),
            "/trigger/entity",
            "entity `ticket` does not exist",
        ),
        (
            json!({"name": "w", "trigger": {"type": "record", "entity": "complaint", "events": ["created"],
                   "condition": "severity eq 'high'"},
                   "steps": [{"id": "a", "type": "wait", "for": "1s"}]}),
            "/trigger/condition",
            "no field `severity`",
        ),
        (
            json!({"name": "w", "trigger": {"type": "record", "entity": "complaint", "events": ["created"],
                   "condition": "priority eq"},
                   "steps": [{"id": "a", "type": "wait", "for": "1s"}]}),
            "/trigger/condition",
            "filter:",
        ),
        (
            json!({"name": "w", "trigger": {"type": "record", "entity": "complaint", "events": ["created"]},
                   "steps": [{"id": "a", "type": "set_fields", "values": {"colour": "red"}}]}),
            "/steps/0/values/colour",
            "no field `colour`",
        ),
        (
            json!({"name": "w", "trigger": {"type": "record", "entity": "complaint", "events": ["created"]},
                   "steps": [{"id": "a", "type": "teleport"}]}),
            "/steps/0/type",
            "teleport",
        ),
        (
            json!({"name": "w", "trigger": {"type": "record", "entity": "complaint", "events": ["created"]},
                   "steps": [{"id": "a", "type": "wait", "for": "soon"}]}),
            "/steps/0/for",
            "soon",
        ),
        (
            json!({"name": "w", "trigger": {"type": "record", "entity": "complaint", "events": ["created"]},
                   "steps": [{"id": "a", "type": "notify", "user": "{{record._owner}}", "message": "{{steps.later.id}}"},
                             {"id": "later", "type": "create_record", "entity": "task", "values": {"subject": "x"}}]}),
            "/steps/0/message",
            "no step `later` comes before",
        ),
        (
            json!({"name": "w", "trigger": {"type": "record", "entity": "complaint", "events": ["created"]},
                   "steps": [{"id": "a", "type": "wait", "for": "1s"},
                             {"id": "b", "type": "branch", "if": "status eq 'open'",
                              "then": [{"id": "a", "type": "wait", "for": "1s"}]}]}),
            "/steps/1/then/0/id",
            "used twice",
        ),
        (
            json!({"name": "w", "trigger": {"type": "manual"},
                   "steps": [{"id": "a", "type": "set_fields", "values": {"status": "open"}}]}),
            "/steps/0/type",
            "needs a record",
        ),
        (
            json!({"name": "w", "trigger": {"type": "record", "entity": "complaint", "events": ["created"]},
                   "steps": [{"id": "ok", "type": "approval", "approvers": ["{{record._owner}}"], "message": "ok?",
                              "then": [{"id": "x", "type": "wait", "for": "1s"}],
                              "else": [{"id": "y", "type": "wait", "for": "1s"}]},
                             {"id": "y", "type": "wait", "for": "1s"}]}),
            "/steps/1/id",
            "used twice",
        ),
        (
            json!({"name": "w", "trigger": {"type": "record", "entity": "complaint", "events": ["created"]},
                   "steps": [{"id": "b", "type": "branch", "if": "steps.later.count gt 0",
                              "then": [{"id": "c", "type": "wait", "for": "1s"}]},
                             {"id": "later", "type": "wait", "for": "1s"}]}),
            "/steps/0/if",
            "no step `later` comes before",
        ),
        (
            json!({"name": "w", "trigger": {"type": "manual"},
                   "steps": [{"id": "a", "type": "wait", "for": "1s"},
                             {"id": "b", "type": "branch", "if": "steps.a.x eq 1 and status eq 'open'",
                              "then": [{"id": "c", "type": "wait", "for": "1s"}]}]}),
            "/steps/1/type",
            "needs a record",
        ),
        (
            json!({"name": "w", "trigger": {"type": "record", "entity": "complaint", "events": ["created"],
                   "changes": [{"field": "status"}]},
                   "steps": [{"id": "a", "type": "wait", "for": "1s"}]}),
            "/trigger/changes",
            "add `updated`",
        ),
    ];
    for (definition, path, message) in cases {
        let reply = app.post("/api/v1/workflows", definition.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{definition}: {:?}",
            reply.body
        );
        let problems = reply.fields()[path]
            .as_array()
            .unwrap_or_else(|| panic!("no problem at {path} for {definition}: {:?}", reply.body));
        assert!(
            problems
                .iter()
                .any(|p| p.as_str().unwrap().contains(message)),
            "{path}: {problems:?} should mention {message}"
        );
    }
    // Nothing was saved.
    let reply = app.get("/api/v1/workflows").await;
    assert_eq!(reply.body["data"], json!([]));
    // A member may neither read nor write workflows.
    let member = app.member("sam").await;
    for (method, path) in [
        (Method::GET, "/api/v1/workflows"),
        (Method::POST, "/api/v1/workflows"),
    ] {
        let reply = app.send(method, path, &member, Some(&json!({})), &[]).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{path}: {:?}",
            reply.body
        );
    }
}

async fn an_urgent_complaint_runs_every_step_and_each_effect_is_visible(app: &TestApp) {
    define_complaints(app).await;
    save(app, json!({
        "name": "escalate_urgent",
        "label": "Escalate urgent complaints",
        "trigger": {"type": "record", "entity": "complaint", "events": ["created"],
                    "condition": "priority eq 'urgent'"},
        "steps": [
            {"id": "follow_up", "type": "create_record", "entity": "task",
             "values": {"subject": "Call back about {{record.title}}", "due": "{{today + 1d}}",
                        "complaint": "{{record._id}}"}},
            {"id": "escalate", "type": "set_fields", "values": {"status": "escalated"}},
            {"id": "tell_owner", "type": "notify", "user": "{{record._owner}}",
             "message": "Urgent complaint {{record.title}}: task {{steps.follow_up.id}}"},
            {"id": "mail", "type": "send_email", "to": "{{record.contact_email}}",
             "subject": "We are on it", "body": "Dear customer, about {{record.title}}…"},
            {"id": "check", "type": "branch", "if": "status eq 'escalated'",
             "then": [{"id": "noted", "type": "set_fields", "values": {"note": "escalated by {{user}}"}}],
             "else": [{"id": "odd", "type": "set_fields", "values": {"note": "not escalated"}}]}
        ]
    }))
    .await;
    let urgent = app
        .create(
            "complaint",
            json!({"title": "Broken pump", "priority": "urgent", "status": "open",
                                     "contact_email": "ada@example.com"}),
        )
        .await;
    let ordinary = app
        .create(
            "complaint",
            json!({"title": "Late invoice", "priority": "ordinary", "status": "open"}),
        )
        .await;
    let runs = settled(app, "escalate_urgent", 1).await;
    assert_eq!(
        runs.len(),
        1,
        "only the urgent complaint starts a run: {runs:#?}"
    );
    let run = &runs[0];
    assert_eq!(run["status"], "succeeded", "{run:#?}");
    assert_eq!(run["record_id"], urgent.as_str());
    assert_eq!(run["event"], "created");
    let steps: Vec<&str> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps,
        [
            "follow_up",
            "escalate",
            "tell_owner",
            "mail",
            "check",
            "noted"
        ]
    );
    for step in run["steps"].as_array().unwrap() {
        assert_eq!(step["status"], "succeeded", "{step:#?}");
        assert!(step["finished_at"].is_string() && step["duration_ms"].is_number());
    }
    // The task exists, is due tomorrow and points at the complaint.
    let task_id = run["steps"][0]["output"]["id"].as_str().unwrap();
    let task = record(app, "task", task_id).await;
    let tomorrow = (time::OffsetDateTime::now_utc().date() + time::Duration::days(1)).to_string();
    assert_eq!(task["data"]["subject"], "Call back about Broken pump");
    assert_eq!(task["data"]["due"], tomorrow.as_str());
    assert_eq!(task["data"]["complaint"], urgent.as_str());
    // The complaint was escalated by the run, through the records path (with history).
    let complaint = record(app, "complaint", &urgent).await;
    assert_eq!(complaint["data"]["status"], "escalated");
    let admin = complaint["owner"].as_str().unwrap();
    assert_eq!(complaint["data"]["note"], format!("escalated by {admin}"));
    let history = app
        .get(&format!("/api/v1/records/complaint/{urgent}/history"))
        .await;
    assert!(
        history.body["data"].as_array().unwrap().len() >= 3,
        "{:?}",
        history.body
    );
    let untouched = record(app, "complaint", &ordinary).await;
    assert_eq!(untouched["data"]["status"], "open");
    // The owner was notified, and can mark it read.
    let notes = app.get("/api/v1/notifications?unread=true").await;
    let notes = notes.body["data"].as_array().unwrap().clone();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert_eq!(
        notes[0]["message"],
        format!("Urgent complaint Broken pump: task {task_id}")
    );
    assert_eq!(notes[0]["run_id"], run["id"]);
    let id = notes[0]["id"].as_str().unwrap();
    let reply = app
        .post(&format!("/api/v1/notifications/{id}/read"), json!({}))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let unread = app.get("/api/v1/notifications?unread=true").await;
    assert_eq!(unread.body["data"], json!([]));
    // Another user cannot read or mark it.
    let member = app.member("sam").await;
    let theirs = app
        .send(Method::GET, "/api/v1/notifications", &member, None, &[])
        .await;
    assert_eq!(theirs.body["data"], json!([]));
    let reply = app
        .send(
            Method::POST,
            &format!("/api/v1/notifications/{id}/read"),
            &member,
            Some(&json!({})),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    // The email is in the outbox, pending, tied to the run.
    let outbox = app.get("/api/v1/outbox?kind=email").await;
    let messages = outbox.body["data"].as_array().unwrap();
    assert_eq!(messages.len(), 1, "{messages:?}");
    assert_eq!(messages[0]["payload"]["to"], "ada@example.com");
    assert_eq!(
        messages[0]["payload"]["body"],
        "Dear customer, about Broken pump…"
    );
    assert_eq!(messages[0]["run_id"], run["id"]);
    assert_eq!(messages[0]["status"], "pending");
    // Another tenant sees none of it.
    let other = app.other_tenant("globex").await;
    let reply = app
        .send(
            Method::GET,
            "/api/v1/workflows/escalate_urgent/runs",
            &other,
            None,
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND, "{:?}", reply.body);
}

async fn update_triggers_see_which_fields_changed_and_from_what(app: &TestApp) {
    define_complaints(app).await;
    save(
        app,
        json!({
            "name": "on_resolve",
            "trigger": {"type": "record", "entity": "complaint", "events": ["updated"],
                        "changes": [{"field": "status", "from": "escalated", "to": "resolved"}]},
            "steps": [{"id": "close", "type": "set_fields",
                       "values": {"status": "closed", "note": "was {{old.status}}"}}]
        }),
    )
    .await;
    let id = app
        .create(
            "complaint",
            json!({"title": "A", "priority": "ordinary", "status": "open"}),
        )
        .await;
    let patch = |status: &str| json!({"data": {"status": status}});
    let path = format!("/api/v1/records/complaint/{id}");
    // open → resolved and an unrelated change do not match; escalated → resolved does.
    assert_eq!(
        app.patch(&path, patch("resolved")).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.patch(&path, json!({"data": {"note": "x"}}))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.patch(&path, patch("escalated")).await.status,
        StatusCode::OK
    );
    assert!(runs(app, "on_resolve").await.is_empty());
    assert_eq!(
        app.patch(&path, patch("resolved")).await.status,
        StatusCode::OK
    );
    let runs = settled(app, "on_resolve", 1).await;
    assert_eq!(runs.len(), 1, "{runs:#?}");
    assert_eq!(runs[0]["status"], "succeeded");
    assert_eq!(runs[0]["event"], "updated");
    let complaint = record(app, "complaint", &id).await;
    assert_eq!(complaint["data"]["status"], "closed");
    assert_eq!(complaint["data"]["note"], "was escalated");
}

async fn a_failing_step_is_retried_then_fails_visibly_and_can_be_retried(app: &TestApp) {
    define_complaints(app).await;
    save(app, json!({
        "name": "move_on",
        "retry": {"max_attempts": 2, "backoff_seconds": 0.1},
        "trigger": {"type": "record", "entity": "complaint", "events": ["created"]},
        "steps": [
            {"id": "first", "type": "create_record", "entity": "task", "values": {"subject": "once"}},
            {"id": "apply", "type": "set_fields", "values": {"status": "{{record.next_status}}"}},
            {"id": "after", "type": "set_fields", "values": {"note": "done"}}
        ]
    }))
    .await;
    let id = app
        .create(
            "complaint",
            json!({"title": "A", "priority": "ordinary", "next_status": "bogus"}),
        )
        .await;
    let runs = settled(app, "move_on", 1).await;
    let run = &runs[0];
    assert_eq!(run["status"], "failed", "{run:#?}");
    assert_eq!(run["next_step"], "apply");
    let error = run["error"].as_str().unwrap();
    assert!(
        error.contains("step `apply` failed after 2 attempt(s)") && error.contains("status"),
        "{error}"
    );
    let steps = run["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2, "{steps:#?}");
    assert_eq!(steps[1]["status"], "failed");
    assert_eq!(steps[1]["attempts"], 2);
    assert!(
        steps[1]["error"].as_str().unwrap().contains("bogus"),
        "{:?}",
        steps[1]
    );
    // Nothing of the failed step was written.
    assert!(
        record(app, "complaint", &id).await["data"]
            .get("status")
            .is_none()
    );
    // Only failed runs can be retried.
    let run_id = run["id"].as_str().unwrap();
    let retry = format!("/api/v1/workflows/move_on/runs/{run_id}/retry");
    // Fix the data; the retry goes on from the failed step, without redoing the first.
    let reply = app
        .patch(
            &format!("/api/v1/records/complaint/{id}"),
            json!({"data": {"next_status": "resolved"}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let reply = app.post(&retry, json!({})).await;
    assert_eq!(reply.status, StatusCode::ACCEPTED, "{:?}", reply.body);
    let runs = settled(app, "move_on", 1).await;
    assert_eq!(runs[0]["status"], "succeeded", "{:#?}", runs[0]);
    let complaint = record(app, "complaint", &id).await;
    assert_eq!(complaint["data"]["status"], "resolved");
    assert_eq!(complaint["data"]["note"], "done");
    let tasks = app.get("/api/v1/records/task").await;
    assert_eq!(
        tasks.body["data"].as_array().unwrap().len(),
        1,
        "the first step ran once"
    );
    let again = app.post(&retry, json!({})).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{:?}", again.body);
    let unknown = app
        .post(
            "/api/v1/workflows/move_on/runs/0190a5b2-0000-7000-8000-000000000000/retry",
            json!({}),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

async fn a_workflow_that_retriggers_itself_stops_at_the_depth_cap(app: &TestApp) {
    define_complaints(app).await;
    save(app, json!({
        "name": "echo",
        "trigger": {"type": "record", "entity": "complaint", "events": ["updated"],
                    "changes": [{"field": "touches"}]},
        "steps": [{"id": "touch", "type": "set_fields", "values": {"touches": "{{record.touches}}+"}}]
    }))
    .await;
    let id = app
        .create(
            "complaint",
            json!({"title": "A", "priority": "ordinary", "touches": ""}),
        )
        .await;
    let reply = app
        .patch(
            &format!("/api/v1/records/complaint/{id}"),
            json!({"data": {"touches": "+"}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let runs = settled(app, "echo", 9).await;
    assert_eq!(runs.len(), 9, "{runs:#?}");
    // Newest first: the last run is refused, the eight before it ran.
    assert_eq!(runs[0]["status"], "failed");
    assert_eq!(runs[0]["depth"], 8);
    assert!(
        runs[0]["error"]
            .as_str()
            .unwrap()
            .contains("depth cap of 8"),
        "{:?}",
        runs[0]
    );
    assert!(runs[1..].iter().all(|run| run["status"] == "succeeded"));
    let complaint = record(app, "complaint", &id).await;
    assert_eq!(complaint["data"]["touches"], "+".repeat(9));
}

async fn a_wait_step_parks_the_run_until_its_time(app: &TestApp) {
    define_complaints(app).await;
    save(
        app,
        json!({
            "name": "later",
            "trigger": {"type": "record", "entity": "complaint", "events": ["created"]},
            "steps": [
                {"id": "pause", "type": "wait", "for": "2s"},
                {"id": "mark", "type": "set_fields", "values": {"note": "after the wait"}}
            ]
        }),
    )
    .await;
    let id = app
        .create("complaint", json!({"title": "A", "priority": "ordinary"}))
        .await;
    let waiting = waiting_run(app, "later").await;
    assert_eq!(waiting["next_step"], "pause");
    assert!(
        record(app, "complaint", &id).await["data"]
            .get("note")
            .is_none()
    );
    let started = std::time::Instant::now();
    let runs = settled(app, "later", 1).await;
    assert_eq!(runs[0]["status"], "succeeded", "{:#?}", runs[0]);
    assert!(
        started.elapsed() > Duration::from_millis(500),
        "the wait was kept"
    );
    let steps = runs[0]["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 2);
    assert_eq!(steps[0]["step"], "pause");
    assert_eq!(steps[0]["status"], "succeeded");
    assert_eq!(
        record(app, "complaint", &id).await["data"]["note"],
        "after the wait"
    );
}

async fn manual_runs_check_their_input_and_who_starts_them(app: &TestApp) {
    define_complaints(app).await;
    save(app, json!({
        "name": "reach_out",
        "trigger": {"type": "manual", "entity": "complaint",
                    "input": {"type": "object", "required": ["channel"],
                              "properties": {"channel": {"enum": ["phone", "email"]}}}},
        "steps": [{"id": "note", "type": "set_fields", "values": {"note": "reach out by {{input.channel}}"}}]
    }))
    .await;
    let id = app
        .create("complaint", json!({"title": "A", "priority": "ordinary"}))
        .await;
    let path = "/api/v1/workflows/reach_out/runs";
    let bad = app
        .post(path, json!({"record": id, "input": {"channel": "pigeon"}}))
        .await;
    assert_eq!(
        bad.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        bad.body
    );
    assert!(bad.fields()["/input/channel"].is_array(), "{:?}", bad.body);
    let no_record = app.post(path, json!({"input": {"channel": "phone"}})).await;
    assert_eq!(
        no_record.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        no_record.body
    );
    let unknown = app
        .post(path, json!({"record": "0190a5b2-0000-7000-8000-000000000000", "input": {"channel": "phone"}}))
        .await;
    assert_eq!(unknown.status, StatusCode::CONFLICT, "{:?}", unknown.body);
    let extra = app.post(path, json!({"record": id, "inputs": {}})).await;
    assert_eq!(extra.status, StatusCode::BAD_REQUEST, "{:?}", extra.body);
    let member = app.member("sam").await;
    let reply = app
        .send(
            Method::POST,
            path,
            &member,
            Some(&json!({"record": id, "input": {"channel": "phone"}})),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    assert!(
        runs(app, "reach_out").await.is_empty(),
        "no refused start made a run"
    );
    let started = app
        .post(path, json!({"record": id, "input": {"channel": "phone"}}))
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{:?}", started.body);
    assert_eq!(started.body["event"], "manual");
    let runs = settled(app, "reach_out", 1).await;
    assert_eq!(runs[0]["status"], "succeeded", "{:#?}", runs[0]);
    assert_eq!(
        record(app, "complaint", &id).await["data"]["note"],
        "reach out by phone"
    );
    // A disabled workflow starts nothing.
    let reply = app
        .post("/api/v1/workflows/reach_out/disable", json!({}))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body["enabled"], false);
    let refused = app
        .post(path, json!({"record": id, "input": {"channel": "phone"}}))
        .await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{:?}", refused.body);
}

async fn runs_in_flight_finish_on_their_version(app: &TestApp) {
    define_complaints(app).await;
    let v1 = json!({
        "name": "versions",
        "trigger": {"type": "record", "entity": "complaint", "events": ["created"]},
        "steps": [
            {"id": "pause", "type": "wait", "for": "2s"},
            {"id": "mark", "type": "set_fields", "values": {"note": "version 1"}}
        ]
    });
    save(app, v1.clone()).await;
    let first = app
        .create("complaint", json!({"title": "A", "priority": "ordinary"}))
        .await;
    let mut v2 = v1.clone();
    v2["steps"][1]["values"]["note"] = json!("version 2");
    v2["steps"][0]["for"] = json!("1s");
    v2["version"] = json!(1);
    let reply = app.put("/api/v1/workflows/versions", v2.clone()).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["version"], 2);
    // The version a client read is checked.
    let stale = app.put("/api/v1/workflows/versions", v2.clone()).await;
    assert_eq!(
        stale.status,
        StatusCode::PRECONDITION_FAILED,
        "{:?}",
        stale.body
    );
    let second = app
        .create("complaint", json!({"title": "B", "priority": "ordinary"}))
        .await;
    let runs = settled(app, "versions", 2).await;
    assert!(
        runs.iter().all(|run| run["status"] == "succeeded"),
        "{runs:#?}"
    );
    assert_eq!(
        record(app, "complaint", &first).await["data"]["note"],
        "version 1"
    );
    assert_eq!(
        record(app, "complaint", &second).await["data"]["note"],
        "version 2"
    );
    // Deleting cancels nothing finished and leaves the runs readable until then.
    let reply = app.delete("/api/v1/workflows/versions").await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(
        app.get("/api/v1/workflows/versions").await.status,
        StatusCode::NOT_FOUND
    );
}

async fn an_approval_waits_for_a_decision_and_the_run_follows_it(app: &TestApp) {
    define_complaints(app).await;
    save(app, json!({
        "name": "refund",
        "trigger": {"type": "record", "entity": "complaint", "events": ["created"]},
        "steps": [
            {"id": "ok", "type": "approval", "approvers": ["{{record._owner}}"],
             "message": "Refund {{record.title}}?", "timeout": "{{TIMEOUT}}",
             "then": [{"id": "refunded", "type": "set_fields", "values": {"status": "resolved"}}],
             "else": [{"id": "refused", "type": "set_fields", "values": {"status": "closed"}}]},
            {"id": "tell", "type": "notify", "user": "{{record._owner}}",
             "message": "{{record.title}}: {{steps.ok.decision}}"}
        ]
    }).to_string().replace("{{TIMEOUT}}", "1h").parse::<Value>().unwrap())
    .await;
    let first = app
        .create("complaint", json!({"title": "A", "priority": "ordinary"}))
        .await;
    let second = app
        .create("complaint", json!({"title": "B", "priority": "ordinary"}))
        .await;
    // Both runs wait on a pending approval, which their approver sees.
    let mut pending = Vec::new();
    for _ in 0..200 {
        pending = app.get("/api/v1/approvals?status=pending").await.body["data"]
            .as_array()
            .unwrap()
            .clone();
        if pending.len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(pending.len(), 2, "{pending:?}");
    let approval_of = |record: &str| {
        pending.iter().find(|a| a["record_id"] == record).unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (yes, no) = (approval_of(&first), approval_of(&second));
    assert!(
        pending
            .iter()
            .all(|a| a["message"].as_str().unwrap().starts_with("Refund "))
    );
    assert!(
        runs(app, "refund")
            .await
            .iter()
            .all(|run| run["status"] == "waiting")
    );
    // Someone who is not an approver neither sees nor decides them.
    let member = app.member("sam").await;
    let theirs = app
        .send(Method::GET, "/api/v1/approvals", &member, None, &[])
        .await;
    assert_eq!(theirs.body["data"], json!([]));
    let refused = app
        .send(
            Method::POST,
            &format!("/api/v1/approvals/{yes}/approve"),
            &member,
            None,
            &[],
        )
        .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{:?}", refused.body);
    let bad = app
        .post(
            &format!("/api/v1/approvals/{yes}/approve"),
            json!({"note": "x"}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{:?}", bad.body);
    // Approve one, reject the other: each run takes its list of steps.
    let approved = app
        .post(
            &format!("/api/v1/approvals/{yes}/approve"),
            json!({"comment": "fine"}),
        )
        .await;
    assert_eq!(approved.status, StatusCode::OK, "{:?}", approved.body);
    assert_eq!(approved.body["status"], "approved");
    let rejected = app
        .post(&format!("/api/v1/approvals/{no}/reject"), json!({}))
        .await;
    assert_eq!(rejected.status, StatusCode::OK, "{:?}", rejected.body);
    let again = app
        .post(&format!("/api/v1/approvals/{yes}/reject"), json!({}))
        .await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{:?}", again.body);
    let runs = settled(app, "refund", 2).await;
    assert!(
        runs.iter().all(|run| run["status"] == "succeeded"),
        "{runs:#?}"
    );
    assert_eq!(
        record(app, "complaint", &first).await["data"]["status"],
        "resolved"
    );
    assert_eq!(
        record(app, "complaint", &second).await["data"]["status"],
        "closed"
    );
    let run = runs
        .iter()
        .find(|run| run["record_id"] == first.as_str())
        .unwrap();
    let steps: Vec<&str> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["ok", "refunded", "tell"]);
    assert_eq!(run["steps"][0]["output"]["decision"], "approved");
    assert_eq!(run["steps"][0]["output"]["comment"], "fine");
    let notes = app.get("/api/v1/notifications").await.body["data"].clone();
    let messages: Vec<&str> = notes
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["message"].as_str().unwrap())
        .collect();
    assert!(
        messages.contains(&"A: approved") && messages.contains(&"B: rejected"),
        "{messages:?}"
    );
    // Nobody decides within the timeout: the approval expires and `else` runs.
    let mut quick = app.get("/api/v1/workflows/refund").await.body;
    quick["steps"][0]["timeout"] = json!("1s");
    quick["version"] = json!(1);
    for key in ["enabled", "created_at", "updated_at"] {
        quick.as_object_mut().unwrap().remove(key);
    }
    let reply = app.put("/api/v1/workflows/refund", quick).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let third = app
        .create("complaint", json!({"title": "C", "priority": "ordinary"}))
        .await;
    let runs = settled(app, "refund", 3).await;
    let run = runs
        .iter()
        .find(|run| run["record_id"] == third.as_str())
        .unwrap();
    assert_eq!(run["steps"][0]["output"]["decision"], "expired", "{run:#?}");
    assert_eq!(
        record(app, "complaint", &third).await["data"]["status"],
        "closed"
    );
}

async fn new_leads_are_assigned_round_robin_and_their_owner_gets_a_task_for_tomorrow(
    app: &TestApp,
) {
    app.define(json!({"name": "lead", "fields": [
        {"name": "name", "type": "text", "required": true},
        {"name": "source", "type": "picklist", "options": ["web", "fair", "referral"]}
    ]}))
    .await;
    app.define(json!({"name": "task", "fields": [
        {"name": "subject", "type": "text", "required": true},
        {"name": "due", "type": "date"},
        {"name": "lead", "type": "reference", "entity": "lead"},
        {"name": "assignee", "type": "text"}
    ]}))
    .await;
    let mut reps = Vec::new();
    for name in ["ann", "bob", "cem"] {
        reps.push(app.member_with_id(name).await);
    }
    let ids: Vec<&str> = reps.iter().map(|(_, id)| id.as_str()).collect();
    save(app, json!({
        "name": "assign_leads",
        "trigger": {"type": "record", "entity": "lead", "events": ["created"]},
        "steps": [
            {"id": "assign", "type": "assign_owner", "round_robin": ids},
            {"id": "follow_up", "type": "create_record", "entity": "task",
             "values": {"subject": "Follow up {{record.name}}", "due": "{{today + 1d}}",
                        "lead": "{{record._id}}", "assignee": "{{record._owner}}"}},
            {"id": "tell", "type": "notify", "user": "{{record._owner}}", "message": "New lead {{record.name}}"}
        ]
    }))
    .await;
    // Someone who is not a user of the tenant cannot be assigned: the run fails, saying who.
    save(app, json!({
        "name": "assign_stranger",
        "retry": {"max_attempts": 1},
        "trigger": {"type": "record", "entity": "lead", "events": ["created"], "condition": "source eq 'fair'"},
        "steps": [{"id": "assign", "type": "assign_owner", "user": "0190a5b2-0000-7000-8000-000000000000"}]
    }))
    .await;
    let mut leads = Vec::new();
    for i in 0..6 {
        leads.push(
            app.create(
                "lead",
                json!({"name": format!("Lead {i}"), "source": "web"}),
            )
            .await,
        );
    }
    let runs = settled(app, "assign_leads", 6).await;
    assert!(
        runs.iter().all(|run| run["status"] == "succeeded"),
        "{runs:#?}"
    );
    let mut owned: std::collections::HashMap<String, usize> = Default::default();
    let tomorrow = (time::OffsetDateTime::now_utc().date() + time::Duration::days(1)).to_string();
    for run in &runs {
        let lead = record(app, "lead", run["record_id"].as_str().unwrap()).await;
        let owner = lead["owner"].as_str().unwrap().to_owned();
        assert!(ids.contains(&owner.as_str()), "{lead:?}");
        assert_eq!(run["steps"][0]["output"]["owner"], owner.as_str());
        let task = record(
            app,
            "task",
            run["steps"][1]["output"]["id"].as_str().unwrap(),
        )
        .await;
        assert_eq!(
            task["data"]["assignee"],
            owner.as_str(),
            "the task goes to the new owner"
        );
        assert_eq!(task["data"]["due"], tomorrow.as_str());
        *owned.entry(owner).or_default() += 1;
    }
    assert_eq!(owned.len(), 3, "{owned:?}");
    assert!(
        owned.values().all(|&n| n == 2),
        "each rep gets two of six: {owned:?}"
    );
    // The change of owner is in the record's history.
    let history = app
        .get(&format!("/api/v1/records/lead/{}/history", leads[0]))
        .await;
    let changes: Vec<&Value> = history.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| &h["changes"])
        .collect();
    assert!(
        changes.iter().any(|c| c.get("_owner").is_some()),
        "{changes:?}"
    );
    // Each rep is told about their own leads.
    let (token, _) = &reps[0];
    let notes = app
        .send(Method::GET, "/api/v1/notifications", token, None, &[])
        .await;
    assert_eq!(
        notes.body["data"].as_array().unwrap().len(),
        2,
        "{:?}",
        notes.body
    );
    app.create("lead", json!({"name": "Stranger", "source": "fair"}))
        .await;
    let failed = settled(app, "assign_stranger", 1).await;
    assert_eq!(failed[0]["status"], "failed");
    assert!(
        failed[0]["error"]
            .as_str()
            .unwrap()
            .contains("is not a user of this tenant"),
        "{:?}",
        failed[0]
    );
}

async fn a_plugin_step_runs_in_the_sandbox_and_its_output_feeds_the_next_step(app: &TestApp) {
    app.define(json!({"name": "prospect", "fields": [
        {"name": "name", "type": "text", "required": true},
        {"name": "size", "type": "picklist", "options": ["small", "large"]},
        {"name": "payment_record", "type": "picklist", "options": ["good", "poor"]},
        {"name": "proposed_terms", "type": "text"},
        {"name": "proposed_status", "type": "text"}
    ]}))
    .await;
    let workflow = |plugin: &str, step: &str| {
        json!({
            "name": "propose_terms",
            "retry": {"max_attempts": 1},
            "trigger": {"type": "record", "entity": "prospect", "events": ["created"]},
            "steps": [
                {"id": "review", "type": "plugin", "plugin": plugin, "step": step,
                 "input": {"size": "{{record.size}}", "payment_record": "{{record.payment_record}}"}},
                {"id": "apply", "type": "set_fields",
                 "values": {"proposed_terms": "{{steps.review.payment_terms}}",
                            "proposed_status": "{{steps.review.credit_status}}"}}
            ]
        })
    };
    // The plugin and its step must exist when the workflow is saved.
    let reply = app
        .post("/api/v1/workflows", workflow("credit-terms", "terms"))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        reply.body
    );
    assert!(
        reply.fields()["/steps/0/plugin"].is_array(),
        "{:?}",
        reply.body
    );
    app.install_plugin("credit-terms", None).await;
    let reply = app
        .post("/api/v1/workflows", workflow("credit-terms", "terms_v2"))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        reply.body
    );
    let problems = reply.fields()["/steps/0/step"].to_string();
    assert!(problems.contains("it provides: terms"), "{problems}");
    save(app, workflow("credit-terms", "terms")).await;

    let small_poor = app
        .create(
            "prospect",
            json!({"name": "Corner Shop", "size": "small", "payment_record": "poor"}),
        )
        .await;
    let large_good = app
        .create(
            "prospect",
            json!({"name": "Big Co", "size": "large", "payment_record": "good"}),
        )
        .await;
    // Without a size the step's input does not match its schema: the step fails, saying why.
    let unknown = app.create("prospect", json!({"name": "Nobody"})).await;
    let runs = settled(app, "propose_terms", 3).await;
    let of = |id: &str| {
        runs.iter()
            .find(|run| run["record_id"] == id)
            .unwrap()
            .clone()
    };
    assert_eq!(
        of(&small_poor)["status"],
        "succeeded",
        "{:#?}",
        of(&small_poor)
    );
    let shop = record(app, "prospect", &small_poor).await;
    assert_eq!(shop["data"]["proposed_status"], "stop");
    assert_eq!(shop["data"]["proposed_terms"], "prepayment");
    let big = record(app, "prospect", &large_good).await;
    assert_eq!(big["data"]["proposed_status"], "ok");
    assert_eq!(big["data"]["proposed_terms"], "net 60");
    assert_eq!(of(&large_good)["steps"][0]["output"]["discount_pct"], 10.0);
    let failed = of(&unknown);
    assert_eq!(failed["status"], "failed");
    let error = failed["error"].as_str().unwrap();
    assert!(
        error.contains("step `review`") && error.contains("input/size"),
        "{error}"
    );
    // Each invocation is in the plugin's runs, as a workflow step.
    let step = |run: &&Value| run["stage"] == "workflow_step";
    let runs = app
        .plugin_runs("credit-terms", "", |runs| {
            runs.iter().filter(step).count() >= 2
        })
        .await;
    let recorded: Vec<&Value> = runs.iter().filter(step).collect();
    assert_eq!(recorded.len(), 2, "{recorded:?}");
    assert!(recorded.iter().all(|run| run["outcome"] == "ok"));
}

async fn the_demo_workflows_of_the_documents_run_on_the_demo_entities(app: &TestApp) {
    // The `core` pack brings the entities, the plugins and the workflows of the documents.
    let reply = app.post("/api/v1/packs/core/install", Value::Null).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    // A customer's payment record turns poor: credit-terms tightens the terms in that write,
    // and the owner is told what they are now.
    let shop = app
        .create(
            "account",
            json!({"name": "Corner Shop", "size": "small", "payment_record": "good"}),
        )
        .await;
    let reply = app
        .patch(
            &format!("/api/v1/records/account/{shop}"),
            json!({"data": {"payment_record": "poor"}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let alerts = settled(app, "poor_payment_alert", 1).await;
    assert_eq!(alerts[0]["status"], "succeeded", "{:#?}", alerts[0]);
    let notes = app.get("/api/v1/notifications").await.body["data"].clone();
    assert_eq!(
        notes[0]["message"],
        "Corner Shop: the payment record is now poor; credit status stop, payment terms prepayment"
    );
    // An urgent complaint waits for its SLA due time (set by complaint-sla: two days), then is
    // escalated if still open.
    let case = app
        .create(
            "case",
            json!({"subject": "Pump broken", "type": "complaint", "priority": "urgent"}),
        )
        .await;
    let due = record(app, "case", &case).await["data"]["sla_due_at"]
        .as_str()
        .unwrap()
        .to_owned();
    let waiting = waiting_run(app, "complaint_sla").await;
    assert_eq!(waiting["next_step"], "until_due", "{waiting:#?}");
    let next_at = time::OffsetDateTime::parse(
        waiting["next_at"].as_str().unwrap(),
        &time::format_description::well_known::Rfc3339,
    )
    .unwrap();
    let due_at =
        time::OffsetDateTime::parse(&due, &time::format_description::well_known::Rfc3339).unwrap();
    assert_eq!(next_at, due_at, "the run wakes at the SLA due time");
    let in_two_days = time::OffsetDateTime::now_utc() + time::Duration::days(2);
    assert!(
        (due_at - in_two_days).abs() < time::Duration::minutes(1),
        "{due}"
    );
    // Two days pass (the run's wake-up is moved to now): the complaint is still open, so it is
    // escalated to the service supervisors, each notified.
    let (supervisor, _) = app.user_with_roles("sue", &["service_supervisor"]).await;
    let (_, other_supervisor) = app.user_with_roles("sid", &["service_supervisor"]).await;
    let run_id = waiting["id"].as_str().unwrap().to_owned();
    // The wait keeps the moment it computed in its step's output: both move to now.
    let now = rapport::store::now();
    let until =
        json!({"until": now.format(&time::format_description::well_known::Rfc3339).unwrap()})
            .to_string();
    let mut tx = app.store.begin().await.unwrap();
    let moved = match tx.exec().await.unwrap() {
        rapport::store::Exec::Sqlite(c) => {
            sqlx::query(
                "UPDATE workflow_steps SET output = $1 WHERE run_id = $2 AND step_id = 'until_due'",
            )
            .bind(&until)
            .bind(&run_id)
            .execute(&mut *c)
            .await
            .unwrap();
            sqlx::query("UPDATE workflow_runs SET next_at = $1 WHERE id = $2")
                .bind(rapport::store::Timestamp(now))
                .bind(&run_id)
                .execute(&mut *c)
                .await
                .unwrap()
                .rows_affected()
        }
        rapport::store::Exec::Postgres(c) => {
            sqlx::query(
                "UPDATE workflow_steps SET output = $1 WHERE run_id = $2 AND step_id = 'until_due'",
            )
            .bind(&until)
            .bind(&run_id)
            .execute(&mut *c)
            .await
            .unwrap();
            sqlx::query("UPDATE workflow_runs SET next_at = $1 WHERE id = $2")
                .bind(rapport::store::Timestamp(now))
                .bind(&run_id)
                .execute(&mut *c)
                .await
                .unwrap()
                .rows_affected()
        }
    };
    assert_eq!(moved, 1);
    tx.commit().await.unwrap();
    let escalations = settled(app, "complaint_sla", 1).await;
    assert_eq!(
        escalations[0]["status"], "succeeded",
        "{:#?}",
        escalations[0]
    );
    let case = record(app, "case", &case).await;
    assert_eq!(case["data"]["status"], "in_progress");
    let told = app
        .send(Method::GET, "/api/v1/notifications", &supervisor, None, &[])
        .await;
    let message = told.body["data"][0]["message"].as_str().unwrap_or_default();
    assert!(
        message.starts_with("Escalated to you: complaint Pump broken"),
        "{:?}",
        told.body
    );
    let tell = escalations[0]["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|step| step["step"] == "tell_supervisors")
        .unwrap();
    assert_eq!(
        tell["output"]["users"].as_array().unwrap().len(),
        2,
        "{tell:#}"
    );
    assert!(
        tell["output"]["users"]
            .to_string()
            .contains(&other_supervisor)
    );

    // New leads go to the sales reps in turn, and each owner gets a follow-up task for
    // tomorrow, whoever entered the lead.
    let (_, rita) = app.user_with_roles("rita", &["sales_rep"]).await;
    let (_, ray) = app.user_with_roles("ray", &["sales_rep"]).await;
    let marketer = app.user_with_roles("mo", &["marketing"]).await.0;
    let mut leads = Vec::new();
    for name in ["Grace", "Alan"] {
        let created = app
            .send(
                Method::POST,
                "/api/v1/records/lead",
                &marketer,
                Some(
                    &json!({"data": {"first_name": name, "last_name": "Tester", "status": "new"}}),
                ),
                &[],
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        leads.push(created.body["id"].as_str().unwrap().to_owned());
    }
    let assigned = settled(app, "lead_assignment", 2).await;
    assert!(
        assigned.iter().all(|run| run["status"] == "succeeded"),
        "{assigned:#?}"
    );
    let mut owners = Vec::new();
    for lead in &leads {
        let owner = record(app, "lead", lead).await["owner"]
            .as_str()
            .unwrap()
            .to_owned();
        let tasks = app
            .get(&format!(
                "/api/v1/records/activity?filter=lead%20eq%20'{lead}'"
            ))
            .await;
        let task = &tasks.body["data"][0];
        assert_eq!(task["owner"], json!(owner), "{:?}", tasks.body);
        let tomorrow = (time::OffsetDateTime::now_utc() + time::Duration::days(1)).date();
        assert_eq!(task["data"]["due_on"], json!(tomorrow.to_string()));
        owners.push(owner);
    }
    owners.sort();
    let mut reps = vec![rita, ray];
    reps.sort();
    assert_eq!(owners, reps, "one lead each, in turn");
}
