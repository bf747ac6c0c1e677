//! Computed fields end to end: the bundled `rfm-score` and `lifecycle-stage` plugins compute an
//! account's scores, value tier and lifecycle stage over its orders, in a real server, on SQLite
//! and PostgreSQL; computed values are stored, filtered, sorted and indexed like any field.

use rapport_tests::{TestApp, on_both_backends};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use time::{Date, Duration, OffsetDateTime};

on_both_backends!(
    rfm_scores_value_tiers_and_lifecycle_stages_follow_the_orders_of_an_account,
    a_computed_field_without_its_plugin_refuses_the_write_and_writes_nothing,
    recompute_fills_a_new_computed_field_for_existing_records,
    a_computed_value_of_the_wrong_type_is_a_plugin_fault,
    computed_field_definitions_are_checked,
    churn_risk_follows_orders_complaints_and_spending,
);

/// Where a roll-up over orders recomputes the account.
fn over_orders(fields: &[&str]) -> Value {
    json!([{"entity": "order", "via": "account", "fields": fields}])
}

/// The account's computed fields, as the demo defines them.
fn computed_fields() -> Vec<Value> {
    let scores = ["ordered_on", "amount", "status"];
    vec![
        json!({"name": "rfm_recency", "type": "computed", "returns": "integer",
               "plugin": "rfm-score", "function": "recency", "related": over_orders(&scores)}),
        json!({"name": "rfm_frequency", "type": "computed", "returns": "integer",
               "plugin": "rfm-score", "function": "frequency", "related": over_orders(&scores)}),
        json!({"name": "rfm_monetary", "type": "computed", "returns": "integer", "indexed": true,
               "plugin": "rfm-score", "function": "monetary", "related": over_orders(&scores)}),
        json!({"name": "value_tier", "type": "computed", "returns": "picklist",
               "options": ["key", "important", "ordinary", "small"], "indexed": true,
               "plugin": "rfm-score", "function": "value_tier",
               "depends_on": ["rfm_recency", "rfm_frequency", "rfm_monetary"]}),
        json!({"name": "lifecycle_stage", "type": "computed", "returns": "picklist",
               "options": ["potential", "new", "satisfied", "retained", "loyal"],
               "plugin": "lifecycle-stage", "function": "stage",
               "related": over_orders(&["ordered_on", "status"])}),
    ]
}

/// Defines `account` and `order`, then gives accounts `computed` fields (a roll-up needs its
/// related entity to exist).
async fn define_accounts_and_orders(app: &TestApp, computed: Vec<Value>) {
    app.define(json!({"name": "account", "fields": [
        {"name": "name", "type": "text", "required": true}
    ]}))
    .await;
    app.define(json!({"name": "order", "fields": [
        {"name": "account", "type": "reference", "entity": "account", "required": true},
        {"name": "ordered_on", "type": "date", "required": true},
        {"name": "amount", "type": "currency", "required": true},
        {"name": "status", "type": "picklist", "options": ["open", "paid", "cancelled"]}
    ], "indexes": [{"fields": ["account", "ordered_on"]}]}))
        .await;
    let mut fields = vec![json!({"name": "name", "type": "text", "required": true})];
    fields.extend(computed);
    let reply = app
        .put(
            "/api/v1/entities/account",
            json!({"name": "account", "fields": fields}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
}

fn days_ago(days: i64) -> String {
    let today: Date = OffsetDateTime::now_utc().date();
    (today - Duration::days(days)).to_string()
}

fn order(account: &str, days: i64, amount: u64) -> Value {
    json!({"account": account, "ordered_on": days_ago(days),
           "amount": {"amount": amount, "currency": "EUR"}, "status": "paid"})
}

async fn account(app: &TestApp, id: &str) -> Value {
    let reply = app.get(&format!("/api/v1/records/account/{id}")).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.body
}

/// recency, frequency, monetary, value tier, lifecycle stage.
fn summary(account: &Value) -> (Value, Value, Value, Value, Value) {
    let data = &account["data"];
    (
        data["rfm_recency"].clone(),
        data["rfm_frequency"].clone(),
        data["rfm_monetary"].clone(),
        data["value_tier"].clone(),
        data["lifecycle_stage"].clone(),
    )
}

async fn rfm_scores_value_tiers_and_lifecycle_stages_follow_the_orders_of_an_account(
    app: &TestApp,
) {
    define_accounts_and_orders(app, computed_fields()).await;
    app.install_plugin("rfm-score", None).await;
    app.install_plugin("lifecycle-stage", None).await;

    // A new account has no orders: lowest scores, a small potential customer.
    let acme = app.create("account", json!({"name": "Acme"})).await;
    let globex = app.create("account", json!({"name": "Globex"})).await;
    assert_eq!(
        summary(&account(app, &acme).await),
        (
            json!(1),
            json!(1),
            json!(1),
            json!("small"),
            json!("potential")
        )
    );

    // A first order, today, for 2,000: recent (5), one order (1), 1,000+ (2) → 8: ordinary.
    let first = app.create("order", order(&acme, 0, 2_000)).await;
    let after_first = account(app, &acme).await;
    assert_eq!(
        summary(&after_first),
        (
            json!(5),
            json!(1),
            json!(2),
            json!("ordinary"),
            json!("new")
        )
    );
    assert_eq!(after_first["version"], 2, "one update for every field");

    // Three older orders in one batch (one of them 400 days ago, outside the one-year window):
    // three orders in the window (2), 7,000 (3) → 10: important; buying for over a year and
    // still: retained.
    let batch = app
        .post(
            "/api/v1/records/order/batch",
            json!({"records": [order(&acme, 400, 50_000), order(&acme, 200, 3_000), order(&acme, 100, 2_000)]}),
        )
        .await;
    assert_eq!(batch.status, StatusCode::CREATED, "{:?}", batch.body);
    let after_batch = account(app, &acme).await;
    assert_eq!(
        summary(&after_batch),
        (
            json!(5),
            json!(2),
            json!(3),
            json!("important"),
            json!("retained")
        )
    );
    assert_eq!(
        after_batch["version"], 3,
        "a batch recomputes each account once"
    );
    // Globex, untouched by Acme's orders, is not rewritten.
    assert_eq!(account(app, &globex).await["version"], 1);

    // Cancelling today's order: the last counted order is 100 days old (recency 3), two in the
    // window (2), 5,000 (3).
    let cancelled = app
        .patch(
            &format!("/api/v1/records/order/{first}"),
            json!({"data": {"status": "cancelled"}}),
        )
        .await;
    assert_eq!(cancelled.status, StatusCode::OK, "{:?}", cancelled.body);
    assert_eq!(
        summary(&account(app, &acme).await),
        (
            json!(3),
            json!(2),
            json!(3),
            json!("ordinary"),
            json!("retained")
        )
    );

    // Moving an order to another account recomputes both.
    let moved = app
        .patch(
            &format!("/api/v1/records/order/{first}"),
            json!({"data": {"account": globex, "status": "paid", "amount": {"amount": 150_000, "currency": "EUR"}}}),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{:?}", moved.body);
    assert_eq!(
        summary(&account(app, &globex).await),
        (
            json!(5),
            json!(1),
            json!(5),
            json!("important"),
            json!("new")
        )
    );
    assert_eq!(account(app, &acme).await["data"]["rfm_recency"], 3);

    // Deleting it takes Globex back to a potential customer.
    let deleted = app.delete(&format!("/api/v1/records/order/{first}")).await;
    assert_eq!(deleted.status, StatusCode::OK, "{:?}", deleted.body);
    assert_eq!(
        summary(&account(app, &globex).await),
        (
            json!(1),
            json!(1),
            json!(1),
            json!("small"),
            json!("potential")
        )
    );

    // Computed values filter and sort like any field.
    let ordinary = app
        .get("/api/v1/records/account?filter=value_tier%20eq%20'ordinary'")
        .await;
    let names: Vec<&Value> = ordinary.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| &record["data"]["name"])
        .collect();
    assert_eq!(names, [&json!("Acme")], "{:?}", ordinary.body);
    let sorted = app.get("/api/v1/records/account?sort=-rfm_monetary").await;
    assert_eq!(sorted.body["data"][0]["data"]["name"], "Acme");

    // Nobody writes a computed field.
    let forged = app
        .patch(
            &format!("/api/v1/records/account/{globex}"),
            json!({"data": {"value_tier": "key"}}),
        )
        .await;
    assert_eq!(forged.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        forged.fields()["value_tier"][0]
            .as_str()
            .unwrap()
            .contains("read-only"),
        "{:?}",
        forged.body
    );

    // The account's history shows what the roll-ups changed, by whom.
    let history = app
        .get(&format!("/api/v1/records/account/{acme}/history"))
        .await;
    let second = &history.body["data"][1];
    assert_eq!(second["operation"], "update", "{:?}", history.body);
    assert_eq!(second["changes"]["lifecycle_stage"]["to"], "new");
    assert_eq!(second["changes"]["rfm_recency"]["to"], 5);

    // Every computation is a run of its plugin.
    let computed = |run: &Value| run["stage"] == "compute" && run["outcome"] == "ok";
    let runs = app
        .plugin_runs("rfm-score", "", |runs| runs.iter().any(computed))
        .await;
    assert!(runs.iter().any(computed), "{runs:?}");
}

async fn a_computed_field_without_its_plugin_refuses_the_write_and_writes_nothing(app: &TestApp) {
    define_accounts_and_orders(app, computed_fields()).await;
    app.install_plugin("rfm-score", None).await;
    // `lifecycle-stage` is not installed.
    let refused = app
        .post("/api/v1/records/account", json!({"data": {"name": "Acme"}}))
        .await;
    assert_eq!(refused.status, StatusCode::FAILED_DEPENDENCY);
    assert_eq!(refused.body["error"]["code"], "plugin_unavailable");
    assert_eq!(refused.fields()["field"], "lifecycle_stage");
    assert_eq!(refused.fields()["plugin"], "lifecycle-stage");
    let listed = app.get("/api/v1/records/account").await;
    assert_eq!(listed.body["data"], json!([]), "nothing was written");

    // Installed but disabled is the same; enabled, the write goes through.
    app.install_plugin("lifecycle-stage", None).await;
    let acme = app.create("account", json!({"name": "Acme"})).await;
    let disabled = app
        .post("/api/v1/plugins/lifecycle-stage/disable", Value::Null)
        .await;
    assert_eq!(disabled.status, StatusCode::OK, "{:?}", disabled.body);
    let refused = app
        .post(
            "/api/v1/records/order",
            json!({"data": order(&acme, 0, 10)}),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::FAILED_DEPENDENCY,
        "the order's roll-up needs the plugin: {:?}",
        refused.body
    );
    let orders = app.get("/api/v1/records/order").await;
    assert_eq!(
        orders.body["data"],
        json!([]),
        "the order rolled back with its roll-up"
    );
}

async fn recompute_fills_a_new_computed_field_for_existing_records(app: &TestApp) {
    define_accounts_and_orders(app, Vec::new()).await;
    app.install_plugin("lifecycle-stage", None).await;
    let acme = app.create("account", json!({"name": "Acme"})).await;
    let _globex = app.create("account", json!({"name": "Globex"})).await;
    app.create("order", order(&acme, 3, 100)).await;

    // Adding the field is a metadata change: existing records have no value yet.
    let mut fields = vec![json!({"name": "name", "type": "text", "required": true})];
    fields.push(computed_fields().pop().unwrap());
    let reply = app
        .put(
            "/api/v1/entities/account",
            json!({"name": "account", "fields": fields}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(
        account(app, &acme).await["data"]["lifecycle_stage"],
        Value::Null
    );

    let member = app.member("sam").await;
    let forbidden = app
        .send(
            Method::POST,
            "/api/v1/records/account/recompute",
            &member,
            None,
            &[],
        )
        .await;
    assert_eq!(forbidden.status, StatusCode::FORBIDDEN);

    let unknown = app
        .post(
            "/api/v1/records/account/recompute",
            json!({"fields": ["name"]}),
        )
        .await;
    assert_eq!(
        unknown.status,
        StatusCode::BAD_REQUEST,
        "{:?}",
        unknown.body
    );

    let done = app
        .post("/api/v1/records/account/recompute", json!({}))
        .await;
    assert_eq!(done.status, StatusCode::OK, "{:?}", done.body);
    assert_eq!(done.body, json!({"records": 2, "changed": 2}));
    assert_eq!(account(app, &acme).await["data"]["lifecycle_stage"], "new");
    let potential = app
        .get("/api/v1/records/account?filter=lifecycle_stage%20eq%20'potential'")
        .await;
    assert_eq!(potential.body["data"][0]["data"]["name"], "Globex");

    // Again: nothing changes, nothing is rewritten.
    let again = app
        .post("/api/v1/records/account/recompute", json!({}))
        .await;
    assert_eq!(again.body, json!({"records": 2, "changed": 0}));
    assert_eq!(account(app, &acme).await["version"], 2);
}

async fn a_computed_value_of_the_wrong_type_is_a_plugin_fault(app: &TestApp) {
    // `recency` answers a score; declared as a date, the value is refused.
    define_accounts_and_orders(
        app,
        vec![
            json!({"name": "score", "type": "computed", "returns": "date",
                    "plugin": "rfm-score", "function": "recency"}),
        ],
    )
    .await;
    app.install_plugin("rfm-score", None).await;
    let refused = app
        .post("/api/v1/records/account", json!({"data": {"name": "Acme"}}))
        .await;
    assert_eq!(
        refused.status,
        StatusCode::FAILED_DEPENDENCY,
        "{:?}",
        refused.body
    );
    assert_eq!(refused.body["error"]["code"], "plugin_fault");
    assert_eq!(refused.fields()["plugin"], "rfm-score");
    assert_eq!(refused.fields()["stage"], "compute");
    assert_eq!(refused.fields()["reason"], "invalid_result");
    let listed = app.get("/api/v1/records/account").await;
    assert_eq!(listed.body["data"], json!([]));
}

async fn computed_field_definitions_are_checked(app: &TestApp) {
    define_accounts_and_orders(app, Vec::new()).await;
    let cases = [
        (
            json!({"name": "score", "type": "computed", "plugin": "rfm-score", "function": "recency"}),
            "/fields/1",
            "returns",
        ),
        (
            json!({"name": "score", "type": "computed", "returns": "integer", "plugin": "rfm-score",
                   "function": "recency", "required": true}),
            "/fields/1/required",
            "always set by its plugin",
        ),
        (
            json!({"name": "score", "type": "computed", "returns": "integer", "plugin": "rfm-score",
                   "function": "recency", "depends_on": ["nothing"]}),
            "/fields/1/depends_on/0",
            "not a field",
        ),
        (
            json!({"name": "score", "type": "computed", "returns": "integer", "plugin": "rfm-score",
                   "function": "recency", "related": [{"entity": "order", "via": "status"}]}),
            "/fields/1/related/0/via",
            "not a reference field",
        ),
        (
            json!({"name": "score", "type": "computed", "returns": "integer", "plugin": "rfm-score",
                   "function": "recency", "related": [{"entity": "invoice", "via": "account"}]}),
            "/fields/1/related/0/entity",
            "does not exist",
        ),
        (
            json!({"name": "score", "type": "integer", "plugin": "rfm-score"}),
            "/fields/1",
            "does not take",
        ),
    ];
    for (field, path, expected) in cases {
        let definition = json!({"name": "account", "fields": [
            {"name": "name", "type": "text", "required": true}, field
        ]});
        let reply = app.put("/api/v1/entities/account", definition).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{path}: {:?}",
            reply.body
        );
        let messages = reply.fields()[path].to_string();
        assert!(
            messages.contains(expected),
            "{path}: wanted `{expected}` in {:?}",
            reply.body
        );
    }
    // Two computed fields that depend on each other.
    let circle = json!({"name": "account", "fields": [
        {"name": "name", "type": "text"},
        {"name": "a", "type": "computed", "returns": "integer", "plugin": "p", "function": "f", "depends_on": ["b"]},
        {"name": "b", "type": "computed", "returns": "integer", "plugin": "p", "function": "f", "depends_on": ["a"]}
    ]});
    let reply = app.put("/api/v1/entities/account", circle).await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        reply.fields()["/fields"].to_string().contains("circle"),
        "{:?}",
        reply.body
    );
}

async fn churn_risk_follows_orders_complaints_and_spending(app: &TestApp) {
    define_accounts_and_orders(app, Vec::new()).await;
    app.define(json!({"name": "case", "fields": [
        {"name": "subject", "type": "text"},
        {"name": "type", "type": "picklist", "options": ["complaint", "question"]},
        {"name": "account", "type": "reference", "entity": "account"}
    ]}))
    .await;
    let reply = app
        .put(
            "/api/v1/entities/account",
            json!({"name": "account", "fields": [
                {"name": "name", "type": "text", "required": true},
                {"name": "churn_risk", "type": "computed", "returns": "integer",
                 "plugin": "churn-risk", "function": "churn_risk",
                 "related": [{"entity": "order", "via": "account", "fields": ["ordered_on", "amount", "status"]},
                             {"entity": "case", "via": "account", "fields": ["type"]}]}
            ]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    app.install_plugin("churn-risk", None).await;
    let risk = |body: Value| body["data"]["churn_risk"].clone();

    // Never ordered: recency at its worst (0.5 of the weight), nothing else.
    let acme = app.create("account", json!({"name": "Acme"})).await;
    assert_eq!(risk(account(app, &acme).await), json!(50));
    // An order today, and a bigger one than the half-year before: safe.
    app.create("order", order(&acme, 300, 1_000)).await;
    app.create("order", order(&acme, 0, 2_000)).await;
    assert_eq!(risk(account(app, &acme).await), json!(0));
    // Three complaints: the complaints signal is full (0.25); a question does not count.
    for kind in ["complaint", "complaint", "question", "complaint"] {
        app.create(
            "case",
            json!({"subject": "x", "type": kind, "account": acme}),
        )
        .await;
    }
    assert_eq!(risk(account(app, &acme).await), json!(25));

    // Another customer who went quiet four months ago after spending more before: recency
    // 120/365 × 0.5 and a full drop of spending × 0.25.
    let globex = app.create("account", json!({"name": "Globex"})).await;
    app.create("order", order(&globex, 300, 5_000)).await;
    app.create("order", order(&globex, 200, 5_000)).await;
    let before = risk(account(app, &globex).await).as_i64().unwrap();
    app.create("order", order(&globex, 120, 1_000)).await;
    let after = risk(account(app, &globex).await).as_i64().unwrap();
    // 120/365 × 0.5 = 0.164; spending 1,000 against 10,000: a 90% drop × 0.25 = 0.225.
    assert_eq!(after, 39, "before the last order it was {before}");
    // The scores are stored: filter and sort on them.
    let risky = app
        .get("/api/v1/records/account?filter=churn_risk%20ge%2030&fields=name")
        .await;
    let names: Vec<&str> = risky.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["data"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["Globex"], "{:?}", risky.body);
}
