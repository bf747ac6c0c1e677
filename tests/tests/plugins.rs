//! Plugins end to end: real components from `plugins/` uploaded through the API into a real
//! server, running in record writes; hostile ones stopped while the server keeps serving; on
//! SQLite and PostgreSQL.

use rapport_tests::{TestApp, on_both_backends, plugin_upload};
use reqwest::StatusCode;
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

on_both_backends!(
    complaint_sla_sets_the_due_date_from_the_priority,
    credit_terms_decide_discounts_and_refuse_orders_of_stopped_accounts,
    the_registry_installs_upgrades_configures_disables_and_removes,
    components_and_manifests_are_checked_at_upload,
    an_endless_plugin_is_stopped_and_its_write_rolled_back,
    a_hook_that_retriggers_itself_stops_at_the_depth_cap,
    plugins_cannot_reach_other_tenants_or_entities_outside_their_capabilities,
    only_administrators_manage_plugins,
    a_plugin_without_capabilities_runs_once_with_the_same_outcomes_before_the_transaction,
    outbox_messages_exist_exactly_when_their_write_commits,
    runs_are_written_at_once_when_flushed,
);

/// Runs are written in batches (at most every 100 ms); at shut-down the server flushes them, so
/// the run of the last request before a stop is stored.
async fn runs_are_written_at_once_when_flushed(app: &TestApp) {
    app.install_panicking_plugin().await;
    for round in 1..=3 {
        app.refused_by_plugin().await;
        app.plugins.flush_runs().await;
        let failures = app.get("/api/v1/plugins/hostile/runs?failures=true").await;
        let failures = failures.body["data"].as_array().unwrap();
        assert_eq!(failures.len(), round, "{failures:?}");
        assert_eq!(failures[0]["outcome"], "trap", "{failures:?}");
    }
}

/// A plugin that requests no capabilities runs before the write's transaction (it cannot tell):
/// its faults, rejections and patches must still decide the write, and a plugin that does need
/// records must still run, once, inside.
async fn a_plugin_without_capabilities_runs_once_with_the_same_outcomes_before_the_transaction(
    app: &TestApp,
) {
    define_targets(app, &app.token).await;
    let mut upload = plugin_upload("hostile");
    upload["manifest"]["id"] = json!("calm");
    upload["manifest"]["capabilities"] = json!({});
    let reply = app.post("/api/v1/plugins", upload).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let reply = app.post("/api/v1/plugins/calm/enable", Value::Null).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);

    for (attack, reason) in [("panic", "trap"), ("huge", "invalid_result")] {
        let reply = app
            .put("/api/v1/plugins/calm/config", json!({"attack": attack}))
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        let single = app
            .post("/api/v1/records/target", json!({"data": {"name": attack}}))
            .await;
        assert_eq!(
            single.status,
            StatusCode::FAILED_DEPENDENCY,
            "{:?}",
            single.body
        );
        assert_eq!(single.fields()["plugin"], "calm");
        assert_eq!(single.fields()["stage"], "before");
        assert_eq!(single.fields()["reason"], reason, "{:?}", single.body);
        let batch = app
            .post(
                "/api/v1/records/target/batch",
                json!({"records": [{"name": "a"}, {"name": "b"}]}),
            )
            .await;
        assert_eq!(
            batch.status,
            StatusCode::FAILED_DEPENDENCY,
            "{:?}",
            batch.body
        );
    }
    let listed = app.get("/api/v1/records/target").await;
    assert_eq!(listed.body["data"], json!([]), "nothing was written");

    // Harmless, next to a plugin with record capabilities (`hostile`, after `calm` in id
    // order): `calm`'s validator runs before the transaction, then `hostile`'s validator and
    // both `before` hooks inside it — each once.
    let reply = app
        .put("/api/v1/plugins/calm/config", json!({"attack": "none"}))
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    app.install_plugin("hostile", Some(json!({"attack": "none"})))
        .await;
    let ok_runs = |body: Value| {
        body["data"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|run| run["outcome"] == "ok")
            .count()
    };
    // Run records are written in the background: wait until a count holds still.
    let settled = |plugin: &'static str, at_least: usize| async move {
        let mut last = usize::MAX;
        for _ in 0..100 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let now = ok_runs(
                app.get(&format!("/api/v1/plugins/{plugin}/runs"))
                    .await
                    .body,
            );
            if now >= at_least && now == last {
                return now;
            }
            last = now;
        }
        last
    };
    // The validator of `calm` went through in the failed writes above.
    let calm_before = settled("calm", 0).await;
    let created = app
        .post("/api/v1/records/target", json!({"data": {"name": "fine"}}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(
        settled("calm", calm_before + 2).await,
        calm_before + 2,
        "calm's validator and hook ran once each"
    );
    assert_eq!(
        settled("hostile", 2).await,
        2,
        "hostile's validator and hook ran once each"
    );
}

async fn only_administrators_manage_plugins(app: &TestApp) {
    let member = app.member("sam").await;
    let upload = plugin_upload("complaint-sla");
    let reply = app
        .send(
            reqwest::Method::POST,
            "/api/v1/plugins",
            &member,
            Some(&upload),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{:?}", reply.body);
    let installed = app.post("/api/v1/plugins", upload).await;
    assert_eq!(installed.status, StatusCode::CREATED);
    for (method, path, body) in [
        (
            reqwest::Method::POST,
            "/api/v1/plugins/complaint-sla/enable",
            None,
        ),
        (
            reqwest::Method::PUT,
            "/api/v1/plugins/complaint-sla/config",
            Some(json!({})),
        ),
        (
            reqwest::Method::DELETE,
            "/api/v1/plugins/complaint-sla",
            None,
        ),
    ] {
        let reply = app.send(method, path, &member, body.as_ref(), &[]).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{path}: {:?}",
            reply.body
        );
    }
    let shown = app.get("/api/v1/plugins/complaint-sla").await;
    assert_eq!(shown.body["enabled"], false, "the member changed nothing");
}

fn time(value: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(value.as_str().expect("a time"), &Rfc3339).expect("RFC 3339")
}

/// A time at the precision plugins see (milliseconds).
fn millis(value: &Value) -> OffsetDateTime {
    let at = time(value);
    at.replace_nanosecond(at.nanosecond() / 1_000_000 * 1_000_000)
        .unwrap()
}

async fn complaint_sla_sets_the_due_date_from_the_priority(app: &TestApp) {
    app.define(json!({"name": "case", "fields": [
        {"name": "subject", "type": "text", "required": true},
        {"name": "priority", "type": "picklist", "options": ["urgent", "high", "ordinary", "low"]},
        {"name": "sla_due_at", "type": "datetime"}
    ]}))
    .await;
    app.install_plugin("complaint-sla", None).await;

    let created = app
        .post(
            "/api/v1/records/case",
            json!({"data": {"subject": "Broken invoice", "priority": "urgent"}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let due = time(&created.body["data"]["sla_due_at"]);
    let at = millis(&created.body["created_at"]);
    assert_eq!(due - at, time::Duration::days(2), "{:?}", created.body);

    // A change of priority moves the due date; other changes leave it alone.
    let id = created.body["id"].as_str().unwrap();
    let updated = app
        .patch(
            &format!("/api/v1/records/case/{id}"),
            json!({"data": {"priority": "ordinary"}}),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    let due = time(&updated.body["data"]["sla_due_at"]);
    let at = millis(&updated.body["updated_at"]);
    assert_eq!(due - at, time::Duration::days(5));
    let renamed = app
        .patch(
            &format!("/api/v1/records/case/{id}"),
            json!({"data": {"subject": "Broken invoice, again"}}),
        )
        .await;
    assert_eq!(
        renamed.body["data"]["sla_due_at"],
        updated.body["data"]["sla_due_at"]
    );

    // The tenant's configuration changes the rule.
    let reply = app
        .put(
            "/api/v1/plugins/complaint-sla/config",
            json!({"days": {"urgent": 1}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let created = app
        .post(
            "/api/v1/records/case",
            json!({"data": {"subject": "Outage", "priority": "urgent"}}),
        )
        .await;
    let due = time(&created.body["data"]["sla_due_at"]);
    let at = millis(&created.body["created_at"]);
    assert_eq!(due - at, time::Duration::days(1));

    // Every invocation is recorded.
    let runs = app
        .plugin_runs("complaint-sla", "", |runs| runs.len() >= 4)
        .await;
    assert_eq!(runs.len(), 4, "{runs:?}");
    assert!(runs.iter().all(|run| run["outcome"] == "ok"
        && run["stage"] == "before"
        && run["fuel_used"].as_i64() > Some(0)));
}

async fn define_accounts_and_orders(app: &TestApp) {
    app.define(json!({"name": "account", "fields": [
        {"name": "name", "type": "text", "required": true},
        {"name": "size", "type": "picklist", "options": ["small", "large", "enterprise"]},
        {"name": "payment_record", "type": "picklist", "options": ["good", "poor"]},
        {"name": "discount_pct", "type": "decimal"},
        {"name": "payment_terms", "type": "text"},
        {"name": "credit_status", "type": "text"}
    ]}))
    .await;
    app.define(json!({"name": "order", "fields": [
        {"name": "account", "type": "reference", "entity": "account", "required": true},
        {"name": "amount", "type": "decimal"}
    ]}))
    .await;
}

async fn credit_terms_decide_discounts_and_refuse_orders_of_stopped_accounts(app: &TestApp) {
    define_accounts_and_orders(app).await;
    app.install_plugin("credit-terms", None).await;

    let big_good = app
        .post(
            "/api/v1/records/account",
            json!({"data": {"name": "Acme", "size": "large", "payment_record": "good"}}),
        )
        .await;
    assert_eq!(big_good.status, StatusCode::CREATED, "{:?}", big_good.body);
    let data = &big_good.body["data"];
    assert_eq!(data["discount_pct"].as_f64(), Some(10.0));
    assert_eq!(data["payment_terms"], "net 60");
    assert_eq!(data["credit_status"], "ok");

    let small_poor = app
        .create(
            "account",
            json!({"name": "Corner shop", "size": "small", "payment_record": "poor"}),
        )
        .await;
    let stored = app
        .get(&format!("/api/v1/records/account/{small_poor}"))
        .await;
    assert_eq!(stored.body["data"]["credit_status"], "stop");
    assert_eq!(stored.body["data"]["payment_terms"], "prepayment");

    // Orders of a stopped account are refused with the plugin named; nothing is written.
    let refused = app
        .post(
            "/api/v1/records/order",
            json!({"data": {"account": small_poor, "amount": 100}}),
        )
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    let message = refused.fields()["account"][0].as_str().unwrap();
    assert!(message.contains("stopped"), "{message}");
    assert!(message.contains("credit-terms"), "{message}");
    let orders = app.get("/api/v1/records/order").await;
    assert_eq!(orders.body["data"], json!([]));

    let accepted = app
        .post(
            "/api/v1/records/order",
            json!({"data": {"account": big_good.body["id"], "amount": 100}}),
        )
        .await;
    assert_eq!(accepted.status, StatusCode::CREATED, "{:?}", accepted.body);

    // A better payment record lifts the stop.
    let reply = app
        .patch(
            &format!("/api/v1/records/account/{small_poor}"),
            json!({"data": {"payment_record": "good"}}),
        )
        .await;
    assert_eq!(reply.body["data"]["credit_status"], "ok");
    assert_eq!(reply.body["data"]["discount_pct"].as_f64(), Some(5.0));
}

async fn the_registry_installs_upgrades_configures_disables_and_removes(app: &TestApp) {
    app.define(json!({"name": "case", "fields": [
        {"name": "priority", "type": "text"},
        {"name": "sla_due_at", "type": "datetime"}
    ]}))
    .await;
    let installed = app
        .post("/api/v1/plugins", plugin_upload("complaint-sla"))
        .await;
    assert_eq!(
        installed.status,
        StatusCode::CREATED,
        "{:?}",
        installed.body
    );
    assert_eq!(installed.body["plugin"]["enabled"], false);
    assert_eq!(installed.body["previous_version"], Value::Null);

    // Installed but not enabled: no effect.
    let case = app
        .post(
            "/api/v1/records/case",
            json!({"data": {"priority": "urgent"}}),
        )
        .await;
    assert_eq!(case.body["data"].get("sla_due_at"), None);

    let listed = app.get("/api/v1/plugins").await;
    assert_eq!(listed.body["data"][0]["id"], "complaint-sla");
    let shown = app.get("/api/v1/plugins/complaint-sla").await;
    assert_eq!(
        shown.body["capabilities"],
        json!({"read": [], "write": [], "outbox": []})
    );
    assert_eq!(shown.body["limits"]["timeout_ms"], 50);

    // A configuration that does not fit the schema is refused with its path.
    let bad = app
        .put(
            "/api/v1/plugins/complaint-sla/config",
            json!({"days": {"urgent": "two"}}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad.body["error"]["code"], "invalid_config");
    assert!(bad.fields().get("/days/urgent").is_some(), "{:?}", bad.body);

    // An upgrade reports the capabilities it adds.
    let mut upgrade = plugin_upload("complaint-sla");
    upgrade["manifest"]["version"] = json!("0.2.0");
    upgrade["manifest"]["capabilities"] = json!({"read": ["case"], "outbox": ["email"]});
    let upgraded = app.post("/api/v1/plugins", upgrade).await;
    assert_eq!(upgraded.status, StatusCode::OK, "{:?}", upgraded.body);
    assert_eq!(upgraded.body["previous_version"], "0.1.0");
    assert_eq!(
        upgraded.body["capabilities_added"],
        json!(["read case", "outbox email"])
    );
    assert_eq!(upgraded.body["plugin"]["version"], "0.2.0");

    let enabled = app
        .post("/api/v1/plugins/complaint-sla/enable", Value::Null)
        .await;
    assert_eq!(enabled.body["enabled"], true);
    let case = app
        .post(
            "/api/v1/records/case",
            json!({"data": {"priority": "urgent"}}),
        )
        .await;
    assert!(
        case.body["data"]["sla_due_at"].is_string(),
        "{:?}",
        case.body
    );

    let disabled = app
        .post("/api/v1/plugins/complaint-sla/disable", Value::Null)
        .await;
    assert_eq!(disabled.body["enabled"], false);
    let case = app
        .post(
            "/api/v1/records/case",
            json!({"data": {"priority": "urgent"}}),
        )
        .await;
    assert_eq!(case.body["data"].get("sla_due_at"), None);

    let removed = app.delete("/api/v1/plugins/complaint-sla").await;
    assert_eq!(removed.status, StatusCode::NO_CONTENT);
    let gone = app.get("/api/v1/plugins/complaint-sla").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);
    assert_eq!(gone.body["error"]["code"], "unknown_plugin");
}

async fn components_and_manifests_are_checked_at_upload(app: &TestApp) {
    // hostile-fs reads files: its component imports wasi:filesystem (with a valid manifest).
    let upload = plugin_upload_with_manifest("hostile-fs", "complaint-sla");
    let reply = app.post("/api/v1/plugins", upload).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        reply.body
    );
    assert_eq!(reply.body["error"]["code"], "invalid_component");
    let message = reply.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("wasi:filesystem/"), "{message}");

    let mut not_wasm = plugin_upload("complaint-sla");
    not_wasm["component"] = json!("bm90IGEgY29tcG9uZW50");
    let reply = app.post("/api/v1/plugins", not_wasm).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.body["error"]["code"], "invalid_component");

    let mut bad_manifest = plugin_upload("complaint-sla");
    bad_manifest["manifest"]["id"] = json!("Bad Id");
    bad_manifest["manifest"]["limits"] = json!({"fuel": "lots"});
    let reply = app.post("/api/v1/plugins", bad_manifest).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(reply.body["error"]["code"], "invalid_manifest");
    assert!(reply.fields().get("/id").is_some(), "{:?}", reply.body);
    assert!(
        reply.fields().get("/limits/fuel").is_some(),
        "{:?}",
        reply.body
    );

    let listed = app.get("/api/v1/plugins").await;
    assert_eq!(listed.body["data"], json!([]), "nothing was installed");
}

/// The upload of one crate's component with another crate's manifest.
fn plugin_upload_with_manifest(component_crate: &str, manifest_crate: &str) -> Value {
    let mut upload = plugin_upload(manifest_crate);
    upload["component"] = json!(rapport_tests::component_base64(component_crate));
    upload
}

async fn define_targets(app: &TestApp, token: &str) {
    let reply = app
        .send(
            reqwest::Method::POST,
            "/api/v1/entities",
            token,
            Some(&json!({"name": "target", "fields": [
                {"name": "name", "type": "text"},
                {"name": "n", "type": "integer"}
            ]})),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
}

async fn an_endless_plugin_is_stopped_and_its_write_rolled_back(app: &TestApp) {
    define_targets(app, &app.token).await;
    let other = app.other_tenant("globex").await;
    define_targets(app, &other).await;
    app.install_plugin("hostile", Some(json!({"attack": "loop"})))
        .await;

    let reply = app
        .post("/api/v1/records/target", json!({"data": {"name": "x"}}))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::FAILED_DEPENDENCY,
        "{:?}",
        reply.body
    );
    assert_eq!(reply.body["error"]["code"], "plugin_fault");
    assert_eq!(reply.fields()["plugin"], "hostile");
    assert_eq!(reply.fields()["version"], "0.1.0");
    // Whichever comes first of its deadline (200 ms) and its fuel stops it; the sandbox's unit
    // tests pin each one down separately.
    let reason = reply.fields()["reason"].as_str().unwrap();
    assert!(["timeout", "out_of_fuel"].contains(&reason), "{reason}");
    let listed = app.get("/api/v1/records/target").await;
    assert_eq!(listed.body["data"], json!([]), "the write was rolled back");

    // The other tenant is served meanwhile and after.
    let served = app
        .send(
            reqwest::Method::POST,
            "/api/v1/records/target",
            &other,
            Some(&json!({"data": {"name": "fine"}})),
            &[],
        )
        .await;
    assert_eq!(served.status, StatusCode::CREATED, "{:?}", served.body);

    for (attack, reason) in [
        ("memory", "trap"),
        ("recursion", "trap"),
        ("huge", "invalid_result"),
        ("panic", "trap"),
    ] {
        let reply = app
            .put("/api/v1/plugins/hostile/config", json!({"attack": attack}))
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        let reply = app
            .post("/api/v1/records/target", json!({"data": {"name": attack}}))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::FAILED_DEPENDENCY,
            "{attack}: {:?}",
            reply.body
        );
        assert_eq!(
            reply.fields()["reason"],
            reason,
            "{attack}: {:?}",
            reply.body
        );
    }
    let listed = app.get("/api/v1/records/target").await;
    assert_eq!(listed.body["data"], json!([]));

    // Failures are listed.
    let failures = app
        .plugin_runs("hostile", "failures=true", |runs| runs.len() >= 5)
        .await;
    let outcomes: Vec<&str> = failures
        .iter()
        .map(|run| run["outcome"].as_str().unwrap())
        .collect();
    assert!(
        outcomes.contains(&"timeout") || outcomes.contains(&"out_of_fuel"),
        "{outcomes:?}"
    );
    assert!(outcomes.contains(&"trap"), "{outcomes:?}");
    assert!(outcomes.contains(&"invalid_result"), "{outcomes:?}");
}

async fn a_hook_that_retriggers_itself_stops_at_the_depth_cap(app: &TestApp) {
    define_targets(app, &app.token).await;
    let id = app.create("target", json!({"name": "loop", "n": 0})).await;
    app.install_plugin("hostile", Some(json!({"attack": "reenter"})))
        .await;
    let reply = app
        .patch(
            &format!("/api/v1/records/target/{id}"),
            json!({"data": {"name": "again"}}),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::FAILED_DEPENDENCY,
        "{:?}",
        reply.body
    );
    let message = reply.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("nested more than"), "{message}");
    let stored = app.get(&format!("/api/v1/records/target/{id}")).await;
    assert_eq!(stored.body["version"], 1, "nothing was written");
    assert_eq!(stored.body["data"]["name"], "loop");

    // The host-call flood stops at the cap too.
    app.put("/api/v1/plugins/hostile/config", json!({"attack": "flood"}))
        .await;
    let reply = app
        .post("/api/v1/records/target", json!({"data": {"name": "flood"}}))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::FAILED_DEPENDENCY,
        "{:?}",
        reply.body
    );
    let message = reply.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("50 host calls"), "{message}");
}

async fn plugins_cannot_reach_other_tenants_or_entities_outside_their_capabilities(app: &TestApp) {
    define_targets(app, &app.token).await;
    let other = app.other_tenant("globex").await;
    define_targets(app, &other).await;
    let foreign = app
        .send(
            reqwest::Method::POST,
            "/api/v1/records/target",
            &other,
            Some(&json!({"data": {"name": "globex secret"}})),
            &[],
        )
        .await;
    let foreign_id = foreign.body["id"].as_str().unwrap();
    app.install_plugin(
        "hostile",
        Some(json!({"attack": "foreign", "id": foreign_id})),
    )
    .await;
    let reply = app
        .post("/api/v1/records/target", json!({"data": {"name": "probe"}}))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    assert_eq!(reply.body["data"]["name"], "foreign record not found");

    app.define(json!({"name": "secret", "fields": [{"name": "name", "type": "text"}]}))
        .await;
    app.put(
        "/api/v1/plugins/hostile/config",
        json!({"attack": "write_other"}),
    )
    .await;
    let reply = app
        .post("/api/v1/records/target", json!({"data": {"name": "probe"}}))
        .await;
    assert_eq!(
        reply.status,
        StatusCode::FAILED_DEPENDENCY,
        "{:?}",
        reply.body
    );
    let message = reply.body["error"]["message"].as_str().unwrap();
    assert!(message.contains("writing `secret`"), "{message}");
    let secrets = app.get("/api/v1/records/secret").await;
    assert_eq!(secrets.body["data"], json!([]));
}

/// Outbox messages a hook enqueues are stored in the write's transaction: listed after the write
/// commits, gone with it when it rolls back; kinds outside the manifest and messages from
/// validators are refused; only administrators read the outbox, and only their tenant's.
async fn outbox_messages_exist_exactly_when_their_write_commits(app: &TestApp) {
    define_targets(app, &app.token).await;
    let other = app.other_tenant("globex").await;
    app.install_plugin("hostile", Some(json!({"attack": "notify"})))
        .await;
    let first = app.create("target", json!({"name": "alpha"})).await;
    let second = app.create("target", json!({"name": "beta"})).await;
    assert_ne!(first, second);

    let listed = app.get("/api/v1/outbox").await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
    let messages = listed.body["data"].as_array().unwrap();
    assert_eq!(messages.len(), 2, "{messages:?}");
    // Newest first.
    assert_eq!(
        messages[0]["payload"],
        json!({"to": "ops@example.com", "subject": "New target beta"})
    );
    assert_eq!(messages[1]["payload"]["subject"], "New target alpha");
    for message in messages {
        assert_eq!(message["kind"], "email");
        assert_eq!(message["status"], "pending");
        assert_eq!(message["plugin"], "hostile");
        assert_eq!(message["plugin_version"], "0.1.0");
        assert_eq!(message["entity"], "target");
    }
    assert_eq!(listed.body["next_cursor"], Value::Null);

    // Pages: one at a time, then the rest.
    let page = app
        .get("/api/v1/outbox?limit=1&kind=email&status=pending")
        .await;
    assert_eq!(page.body["data"].as_array().unwrap().len(), 1);
    let cursor = page.body["next_cursor"].as_str().expect("a next page");
    let rest = app
        .get(&format!("/api/v1/outbox?limit=1&cursor={cursor}"))
        .await;
    assert_eq!(
        rest.body["data"][0]["payload"]["subject"],
        "New target alpha"
    );
    assert_eq!(rest.body["next_cursor"], Value::Null);
    let none = app.get("/api/v1/outbox?kind=sms").await;
    assert_eq!(none.body["data"], json!([]));

    // A hook that enqueues and then fails: the write and its message roll back together.
    for (attack, status) in [
        ("notify_then_fail", StatusCode::FAILED_DEPENDENCY),
        ("notify_sms", StatusCode::FAILED_DEPENDENCY),
        ("notify_in_validator", StatusCode::UNPROCESSABLE_ENTITY),
    ] {
        let reply = app
            .put("/api/v1/plugins/hostile/config", json!({"attack": attack}))
            .await;
        assert_eq!(reply.status, StatusCode::OK);
        let reply = app
            .post("/api/v1/records/target", json!({"data": {"name": attack}}))
            .await;
        assert_eq!(reply.status, status, "{attack}: {:?}", reply.body);
        let text = reply.body.to_string();
        match attack {
            "notify_sms" => assert!(
                text.contains("does not request outbox messages of kind `sms`"),
                "{text}"
            ),
            "notify_in_validator" => {
                assert!(text.contains("may not enqueue outbox messages"), "{text}")
            }
            _ => {}
        }
    }
    // A hook that enqueues and lets the write go on, and the write then fails after it (a
    // unique value taken twice in one batch): the message rolls back with the write.
    let reply = app
        .put(
            "/api/v1/plugins/hostile/config",
            json!({"attack": "notify"}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let mut definition = app.get("/api/v1/entities/target").await.body;
    definition.as_object_mut().unwrap().remove("updated_at");
    definition["fields"][0]["unique"] = json!(true);
    let reply = app.put("/api/v1/entities/target", definition).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let reply = app
        .post(
            "/api/v1/records/target/batch",
            json!({"records": [{"name": "gamma"}, {"name": "gamma"}]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{:?}", reply.body);
    // The hook did run for both records (and enqueued) before the conflict was found.
    let before = |run: &&Value| run["stage"] == "before" && run["outcome"] == "ok";
    let runs = app
        .plugin_runs("hostile", "limit=1000", |runs| {
            runs.iter().filter(before).count() >= 4
        })
        .await;
    let ran = runs.iter().filter(before).count();
    assert_eq!(ran, 4, "alpha, beta and both gammas ran their hook");

    let listed = app.get("/api/v1/outbox").await;
    assert_eq!(
        listed.body["data"].as_array().unwrap().len(),
        2,
        "{:?}",
        listed.body
    );
    let records = app.get("/api/v1/records/target").await;
    assert_eq!(records.body["data"].as_array().unwrap().len(), 2);

    // Bad parameters are named.
    for query in ["limit=0", "status=sent", "cursor=nope", "colour=red"] {
        let reply = app.get(&format!("/api/v1/outbox?{query}")).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{query}: {:?}",
            reply.body
        );
    }

    // Another tenant sees none of them; a member may not read the outbox.
    let foreign = app
        .send(reqwest::Method::GET, "/api/v1/outbox", &other, None, &[])
        .await;
    assert_eq!(foreign.status, StatusCode::OK);
    assert_eq!(foreign.body["data"], json!([]));
    let member = app.member("sam").await;
    let reply = app
        .send(reqwest::Method::GET, "/api/v1/outbox", &member, None, &[])
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{:?}", reply.body);
}
