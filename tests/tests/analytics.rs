//! Analytics over HTTP: aggregations (groups, buckets, references, measures, scope and field
//! security); on SQLite and PostgreSQL.

use rapport_tests::{TestApp, on_both_backends};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_both_backends!(
    aggregations_group_bucket_and_measure,
    aggregations_follow_references_and_currencies,
    aggregations_refuse_bad_input_by_name,
    aggregations_respect_scope_and_field_security,
    reports_are_saved_checked_and_run_as_the_caller,
    dashboards_compute_kpis_charts_and_tables,
    the_timeline_pages_through_every_related_record_and_the_history,
    the_screen_pop_finds_a_caller_by_any_phone_format,
    segmentation_clusters_customers_and_writes_their_segments,
);

async fn define_sales(app: &TestApp) {
    app.define(json!({"name": "account", "fields": [
        {"name": "name", "type": "text", "required": true},
        {"name": "size", "type": "picklist", "options": ["small", "large"]}
    ]}))
    .await;
    app.define(json!({"name": "deal", "fields": [
        {"name": "title", "type": "text", "required": true},
        {"name": "stage", "type": "picklist", "options": ["open", "won", "lost"]},
        {"name": "amount", "type": "currency"},
        {"name": "probability", "type": "integer"},
        {"name": "weight", "type": "decimal"},
        {"name": "close_on", "type": "date"},
        {"name": "closed_at", "type": "datetime"},
        {"name": "tags", "type": "picklist", "multiple": true, "options": ["a", "b"]},
        {"name": "won", "type": "boolean"},
        {"name": "account", "type": "reference", "entity": "account"}
    ]}))
    .await;
}

fn eur(amount: f64) -> Value {
    json!({"amount": amount, "currency": "EUR"})
}

async fn aggregate(app: &TestApp, entity: &str, query: &str) -> Value {
    let reply = app
        .get(&format!("/api/v1/records/{entity}/aggregate?{query}"))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{query}: {:?}", reply.body);
    reply.body
}

/// Creates `role` (a role definition) and a user holding it; returns the user's token.
async fn user_with_role(app: &TestApp, role: Value) -> String {
    let name = role["name"].as_str().expect("a role name").to_owned();
    let reply = app.post("/api/v1/roles", role).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    app.user_with_roles(&name, &[&name]).await.0
}

/// The rows of an aggregation as (group values, the rest) pairs, for compact assertions.
fn rows(body: &Value) -> Vec<Value> {
    body["data"].as_array().expect("data").clone()
}

async fn seed(app: &TestApp) -> (String, String) {
    define_sales(app).await;
    let small = app
        .create("account", json!({"name": "Small Co", "size": "small"}))
        .await;
    let large = app
        .create("account", json!({"name": "Large Co", "size": "large"}))
        .await;
    let deals = [
        ("a", "open", 100.0, 10, "2026-01-15", None, &small),
        ("b", "open", 300.0, 50, "2026-02-20", None, &large),
        (
            "c",
            "won",
            1000.0,
            100,
            "2026-02-03",
            Some("2026-03-31T20:00:00Z"),
            &large,
        ),
        (
            "d",
            "won",
            500.0,
            100,
            "2026-04-01",
            Some("2026-04-01T08:00:00Z"),
            &small,
        ),
        ("e", "lost", 700.0, 0, "2026-05-30", None, &large),
    ];
    for (title, stage, amount, probability, close_on, closed_at, account) in deals {
        let mut data = json!({"title": title, "stage": stage, "amount": eur(amount),
                              "probability": probability, "weight": probability as f64 / 100.0,
                              "close_on": close_on, "won": stage == "won", "account": account});
        if let Some(closed_at) = closed_at {
            data["closed_at"] = json!(closed_at);
        }
        app.create("deal", data).await;
    }
    // A deal without stage or amount: grouped as null, not counted in sums.
    app.create("deal", json!({"title": "f"})).await;
    (small, large)
}

async fn aggregations_group_bucket_and_measure(app: &TestApp) {
    seed(app).await;

    // No group: one row over every record.
    let total = aggregate(app, "deal", "measures=count,sum:probability,avg:weight").await;
    assert_eq!(
        rows(&total),
        vec![
            json!({"group": {}, "count": 6, "sum": {"probability": 260}, "avg": {"weight": 0.52}})
        ]
    );
    assert_eq!(total["truncated"], json!(false));

    // By stage: nulls first, then in order; integer sums stay integers, min/max of dates.
    let by_stage = aggregate(
        app,
        "deal",
        "group_by=stage&measures=count,sum:probability,min:close_on,max:close_on",
    )
    .await;
    assert_eq!(
        rows(&by_stage),
        vec![
            json!({"group": {"stage": null}, "count": 1, "sum": {"probability": null},
                   "min": {"close_on": null}, "max": {"close_on": null}}),
            json!({"group": {"stage": "lost"}, "count": 1, "sum": {"probability": 0},
                   "min": {"close_on": "2026-05-30"}, "max": {"close_on": "2026-05-30"}}),
            json!({"group": {"stage": "open"}, "count": 2, "sum": {"probability": 60},
                   "min": {"close_on": "2026-01-15"}, "max": {"close_on": "2026-02-20"}}),
            json!({"group": {"stage": "won"}, "count": 2, "sum": {"probability": 200},
                   "min": {"close_on": "2026-02-03"}, "max": {"close_on": "2026-04-01"}}),
        ]
    );

    // The same filters as lists; sort by a measure, descending; limit and truncation.
    let top = aggregate(
        app,
        "deal",
        "group_by=stage&filter=stage%20ne%20'lost'&sort=-count,stage&limit=2",
    )
    .await;
    assert_eq!(
        rows(&top),
        vec![
            json!({"group": {"stage": "open"}, "count": 2}),
            json!({"group": {"stage": "won"}, "count": 2}),
        ]
    );
    assert_eq!(top["truncated"], json!(true));

    // Date buckets.
    let by_month = aggregate(
        app,
        "deal",
        "group_by=close_on:month&filter=close_on%20is%20not%20null",
    )
    .await;
    let months: Vec<(Value, Value)> = rows(&by_month)
        .iter()
        .map(|row| (row["group"]["close_on:month"].clone(), row["count"].clone()))
        .collect();
    assert_eq!(
        months,
        vec![
            (json!("2026-01"), json!(1)),
            (json!("2026-02"), json!(2)),
            (json!("2026-04"), json!(1)),
            (json!("2026-05"), json!(1)),
        ]
    );
    let by_quarter = aggregate(
        app,
        "deal",
        "group_by=close_on:quarter,stage&filter=stage%20eq%20'won'",
    )
    .await;
    assert_eq!(
        rows(&by_quarter),
        vec![
            json!({"group": {"close_on:quarter": "2026-Q1", "stage": "won"}, "count": 1}),
            json!({"group": {"close_on:quarter": "2026-Q2", "stage": "won"}, "count": 1}),
        ]
    );
    // 2026-02-20 is a Friday: its week starts on Monday the 16th.
    let by_week = aggregate(
        app,
        "deal",
        "group_by=close_on:week,close_on:year&filter=title%20eq%20'b'",
    )
    .await;
    assert_eq!(
        rows(&by_week),
        vec![
            json!({"group": {"close_on:week": "2026-02-16", "close_on:year": "2026"}, "count": 1})
        ]
    );

    // System timestamps bucket too, and booleans group as booleans.
    let created = aggregate(app, "deal", "group_by=_created_at:year,won").await;
    let listed = app.get("/api/v1/records/deal?limit=1").await;
    let year = &listed.body["data"][0]["created_at"].as_str().unwrap()[..4];
    for row in rows(&created) {
        assert_eq!(row["group"]["_created_at:year"], json!(year), "{row}");
    }
    let wins: Vec<Value> = rows(&created)
        .iter()
        .map(|row| row["group"]["won"].clone())
        .collect();
    assert!(
        wins.contains(&json!(true)) && wins.contains(&json!(false)),
        "{wins:?}"
    );
    // Datetimes are bucketed in the tenant's time zone: 2026-03-31T20:00Z is April 1st in
    // Shanghai.
    let utc = aggregate(
        app,
        "deal",
        "group_by=closed_at:month&filter=closed_at%20is%20not%20null",
    )
    .await;
    assert_eq!(
        rows(&utc),
        vec![
            json!({"group": {"closed_at:month": "2026-03"}, "count": 1}),
            json!({"group": {"closed_at:month": "2026-04"}, "count": 1}),
        ]
    );
    let zone = app
        .patch("/api/v1/tenant", json!({"time_zone": "Asia/Shanghai"}))
        .await;
    assert_eq!(zone.status, StatusCode::OK, "{:?}", zone.body);
    let shanghai = aggregate(
        app,
        "deal",
        "group_by=closed_at:day&filter=closed_at%20is%20not%20null",
    )
    .await;
    assert_eq!(
        rows(&shanghai),
        vec![json!({"group": {"closed_at:day": "2026-04-01"}, "count": 2})]
    );
}

async fn aggregations_follow_references_and_currencies(app: &TestApp) {
    seed(app).await;
    // Through the reference: deals by their account's size; distinct accounts.
    let by_size = aggregate(
        app,
        "deal",
        "group_by=account.size&measures=count,sum:amount,count_distinct:account&filter=account%20is%20not%20null",
    )
    .await;
    assert_eq!(
        rows(&by_size),
        vec![
            json!({"group": {"account.size": "large"}, "count": 3, "sum": {"amount": eur(2000.0)},
                   "count_distinct": {"account": 1}}),
            json!({"group": {"account.size": "small"}, "count": 2, "sum": {"amount": eur(600.0)},
                   "count_distinct": {"account": 1}}),
        ]
    );

    // A second currency: summing across currencies is refused, by currency it is not.
    app.create(
        "deal",
        json!({"title": "g", "stage": "won", "amount": {"amount": 50, "currency": "USD"}}),
    )
    .await;
    let mixed = app
        .get("/api/v1/records/deal/aggregate?group_by=stage&measures=sum:amount")
        .await;
    assert_eq!(mixed.status, StatusCode::BAD_REQUEST, "{:?}", mixed.body);
    let message = mixed.body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("mixes currencies (EUR to USD)") && message.contains("amount.currency"),
        "{message}"
    );
    let by_currency = aggregate(
        app,
        "deal",
        "group_by=stage,amount.currency&measures=sum:amount,max:amount&filter=stage%20eq%20'won'",
    )
    .await;
    assert_eq!(
        rows(&by_currency),
        vec![
            json!({"group": {"stage": "won", "amount.currency": "EUR"},
                   "sum": {"amount": eur(1500.0)}, "max": {"amount": eur(1000.0)}}),
            json!({"group": {"stage": "won", "amount.currency": "USD"},
                   "sum": {"amount": {"amount": 50.0, "currency": "USD"}},
                   "max": {"amount": {"amount": 50.0, "currency": "USD"}}}),
        ]
    );
}

async fn aggregations_refuse_bad_input_by_name(app: &TestApp) {
    seed(app).await;
    for (query, expected) in [
        ("group_by=nope", "`nope` is not a field of `deal`"),
        (
            "group_by=stage:month",
            "a bucket applies to date and datetime fields",
        ),
        ("group_by=tags", "holds arrays or json"),
        (
            "group_by=stage:fortnight",
            "`fortnight` is not a date bucket",
        ),
        ("group_by=title.name", "is a text field, not a reference"),
        (
            "group_by=account.nope",
            "`nope` is not a field of `account`",
        ),
        ("group_by=a,b,c,d", "at most 3"),
        (
            "measures=sum:title",
            "sum applies to number and currency fields, and `title` is a text field",
        ),
        (
            "measures=avg:stage",
            "avg applies to number and currency fields",
        ),
        (
            "measures=min:won",
            "min applies to number, currency, date and datetime fields",
        ),
        ("measures=median:amount", "`median` is not a measure"),
        ("measures=sum", "needs a field"),
        (
            "measures=count_distinct:tags",
            "count_distinct applies to fields holding single values",
        ),
        ("measures=sum:account.size", "a field of the entity itself"),
        (
            "group_by=stage&sort=-sum:amount",
            "neither a group nor a measure",
        ),
        ("filter=stage%20eq%201", "`stage` takes a quoted string"),
        ("limit=0", "`limit` must be between 1 and 10000"),
        ("unknown=1", "unknown"),
    ] {
        let reply = app
            .get(&format!("/api/v1/records/deal/aggregate?{query}"))
            .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{query}: {:?}",
            reply.body
        );
        let message = reply.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(expected), "{query}: {message}");
    }
    let missing = app.get("/api/v1/records/nothing/aggregate").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{:?}", missing.body);
}

async fn aggregations_respect_scope_and_field_security(app: &TestApp) {
    let (small, _) = seed(app).await;
    let rep = user_with_role(
        app,
        json!({"name": "rep", "entities": {
            "deal": {"create": true, "read": "own", "update": "own",
                     "fields": {"probability": "none"}},
            "account": {"read": "all", "fields": {"size": "none"}}
        }}),
    )
    .await;
    let rep = rep.as_str();
    let as_rep = |query: &str| {
        let path = format!("/api/v1/records/deal/aggregate?{query}");
        async move { app.get_as(rep, &path).await }
    };
    // Records out of scope are not counted: the rep owns none yet, then one.
    let none = as_rep("measures=count").await;
    assert_eq!(
        none.body["data"],
        json!([{"group": {}, "count": 0}]),
        "{:?}",
        none.body
    );
    let created = app
        .send(
            Method::POST,
            "/api/v1/records/deal",
            rep,
            Some(&json!({"data": {"title": "mine", "stage": "open", "account": small}})),
            &[],
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let mine = as_rep("group_by=stage").await;
    assert_eq!(
        mine.body["data"],
        json!([{"group": {"stage": "open"}, "count": 1}])
    );
    // Hidden fields are not fields, to group, measure or filter by — here or through a reference.
    for query in [
        "group_by=probability",
        "measures=sum:probability",
        "filter=probability%20gt%200",
        "group_by=account.size",
    ] {
        let reply = as_rep(query).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{query}: {:?}",
            reply.body
        );
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("is not a field of"),
            "{query}: {:?}",
            reply.body
        );
    }
    // The administrator sees every record.
    let all = aggregate(app, "deal", "measures=count").await;
    assert_eq!(all["data"][0]["count"], json!(7));
}

async fn reports_are_saved_checked_and_run_as_the_caller(app: &TestApp) {
    seed(app).await;
    let report = json!({"name": "by_stage", "label": "Deals by stage", "entity": "deal",
                        "group_by": ["stage"], "measures": ["count", "sum:probability"],
                        "filter": "stage is not null and close_on le {{today + 3650d}}"});
    let created = app.post("/api/v1/reports", report.clone()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(created.body["kind"], json!("report"));
    let again = app.post("/api/v1/reports", report.clone()).await;
    assert_eq!(again.status, StatusCode::CONFLICT, "{:?}", again.body);
    // Templates compare as typed values: a datetime with `{{now}}`.
    let overdue = app
        .post("/api/v1/reports", json!({"name": "closed_before_now", "entity": "deal", "type": "list",
                                        "filter": "closed_at lt {{now - 1h}}", "fields": ["title"]}))
        .await;
    assert_eq!(overdue.status, StatusCode::CREATED, "{:?}", overdue.body);
    let closed = app.get("/api/v1/reports/closed_before_now/data").await;
    assert_eq!(
        closed.body["data"].as_array().unwrap().len(),
        2,
        "{:?}",
        closed.body
    );
    assert_eq!(
        app.delete("/api/v1/reports/closed_before_now").await.status,
        StatusCode::NO_CONTENT
    );
    let listed = app.get("/api/v1/reports").await;
    assert_eq!(listed.body["data"][0]["name"], json!("by_stage"));
    // Reports are not views.
    let views = app.get("/api/v1/views").await;
    assert_eq!(views.body["data"], json!([]), "{:?}", views.body);
    let data = app.get("/api/v1/reports/by_stage/data").await;
    assert_eq!(data.status, StatusCode::OK, "{:?}", data.body);
    assert_eq!(
        data.body["data"],
        json!([
            {"group": {"stage": "lost"}, "count": 1, "sum": {"probability": 0}},
            {"group": {"stage": "open"}, "count": 2, "sum": {"probability": 60}},
            {"group": {"stage": "won"}, "count": 2, "sum": {"probability": 200}}
        ])
    );

    // Checked against the entity: every problem named by its path.
    for (body, path, expected) in [
        (
            json!({"name": "r1", "entity": "nothing"}),
            "/entity",
            "entity `nothing` does not exist",
        ),
        (
            json!({"name": "r2", "entity": "deal", "group_by": ["title:month"]}),
            "/",
            "a bucket applies to date and datetime fields",
        ),
        (
            json!({"name": "r3", "entity": "deal", "measures": ["sum:title"]}),
            "/",
            "sum applies to number and currency fields",
        ),
        (
            json!({"name": "r4", "entity": "deal", "filter": "stage eq {{record.x}}"}),
            "/filter",
            "may name `now`, `today` and `user`",
        ),
        (
            json!({"name": "r5", "entity": "deal", "type": "list", "fields": ["nope"]}),
            "/fields/0",
            "has no field `nope`",
        ),
        (
            json!({"name": "r6", "entity": "deal", "colour": "red"}),
            "/",
            "colour",
        ),
    ] {
        let reply = app.post("/api/v1/reports", body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {:?}",
            reply.body
        );
        let messages = reply.fields()[path].to_string();
        assert!(messages.contains(expected), "{body}: {:?}", reply.body);
    }

    // A member may run it, over their own records only, but not change it.
    let rep = user_with_role(
        app,
        json!({"name": "rep", "entities": {"deal": {"create": true, "read": "own"}}}),
    )
    .await;
    let theirs = app.get_as(&rep, "/api/v1/reports/by_stage/data").await;
    assert_eq!(theirs.body["data"], json!([]), "{:?}", theirs.body);
    let edit = app
        .send(
            Method::PUT,
            "/api/v1/reports/by_stage",
            &rep,
            Some(&report),
            &[],
        )
        .await;
    assert_eq!(edit.status, StatusCode::FORBIDDEN, "{:?}", edit.body);

    // Replaced, then deleted.
    let mut changed = report.clone();
    changed["measures"] = json!(["count"]);
    let replaced = app.put("/api/v1/reports/by_stage", changed).await;
    assert_eq!(replaced.status, StatusCode::OK, "{:?}", replaced.body);
    let renamed = app
        .put(
            "/api/v1/reports/by_stage",
            json!({"name": "other", "entity": "deal"}),
        )
        .await;
    assert_eq!(
        renamed.status,
        StatusCode::BAD_REQUEST,
        "{:?}",
        renamed.body
    );
    assert_eq!(
        app.delete("/api/v1/reports/by_stage").await.status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get("/api/v1/reports/by_stage").await.status,
        StatusCode::NOT_FOUND
    );
}

async fn dashboards_compute_kpis_charts_and_tables(app: &TestApp) {
    seed(app).await;
    let today = &app.get("/api/v1/records/deal?limit=1").await.body["data"][0]["created_at"]
        .as_str()
        .unwrap()[..10]
        .to_owned();
    // Two deals closing today (in UTC, the tenant's zone).
    app.create(
        "deal",
        json!({"title": "t1", "stage": "won", "amount": eur(400.0), "close_on": today}),
    )
    .await;
    app.create(
        "deal",
        json!({"title": "t2", "stage": "won", "amount": eur(200.0), "close_on": today}),
    )
    .await;
    let report = app
        .post(
            "/api/v1/reports",
            json!({"name": "won_amount", "entity": "deal",
            "filter": "stage eq 'won'", "measures": ["sum:amount", "count"]}),
        )
        .await;
    assert_eq!(report.status, StatusCode::CREATED, "{:?}", report.body);
    let dashboard = json!({"name": "sales", "label": "Sales", "widgets": [
        {"id": "won_today", "title": "Won today", "type": "kpi", "report": "won_amount",
         "period": "day", "date_field": "close_on", "target": 1200, "format": "currency"},
        {"id": "created_this_year", "type": "kpi", "query": {"entity": "deal"},
         "period": "year", "date_field": "_created_at"},
        {"id": "win_rate", "type": "kpi", "query": {"entity": "deal", "filter": "stage eq 'won'"},
         "divide_by": {"query": {"entity": "deal", "filter": "stage in ('won', 'lost')"}}, "format": "percent"},
        {"id": "by_stage_target", "type": "kpi", "query": {"entity": "deal", "group_by": ["stage"],
         "filter": "stage is not null"}, "target": 2, "targets": {"won": 8}},
        {"id": "pipeline", "type": "chart", "chart": "funnel",
         "query": {"entity": "deal", "group_by": ["stage"], "measures": ["sum:probability"]}},
        {"id": "top_accounts", "type": "chart", "chart": "pareto",
         "query": {"entity": "deal", "group_by": ["account"], "measures": ["sum:probability"],
                   "filter": "account is not null"}},
        {"id": "latest", "type": "table", "query": {"entity": "deal", "type": "list",
         "fields": ["title", "stage"], "sort": "title", "limit": 2}},
        {"id": "accounts", "type": "chart", "query": {"entity": "account", "group_by": ["size"]}}
    ]});
    let created = app.post("/api/v1/dashboards", dashboard.clone()).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);

    let data = app.get("/api/v1/dashboards/sales/data").await;
    assert_eq!(data.status, StatusCode::OK, "{:?}", data.body);
    let widget = |id: &str| {
        data.body["widgets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|w| w["id"] == json!(id))
            .unwrap()
            .clone()
    };
    for computed in data.body["widgets"].as_array().unwrap() {
        assert!(
            computed["ms"].as_f64().is_some(),
            "each widget says its time: {computed}"
        );
    }
    let won_today = widget("won_today");
    assert_eq!(won_today["value"], json!(600.0), "{won_today}");
    assert_eq!(won_today["currency"], json!("EUR"));
    assert_eq!(won_today["target"], json!(1200.0));
    assert_eq!(won_today["progress"], json!(0.5));
    assert_eq!(won_today["previous"], json!(0.0));
    assert_eq!(won_today["period"]["start"], json!(today));
    let created_this_year = widget("created_this_year");
    assert_eq!(
        created_this_year["value"],
        json!(8.0),
        "{created_this_year}"
    );
    let win_rate = widget("win_rate");
    // Four won (two seeded, two today) of five won or lost.
    assert_eq!(win_rate["value"], json!(0.8), "{win_rate}");
    let by_stage = widget("by_stage_target");
    assert_eq!(
        by_stage["groups"],
        json!([
            {"group": {"stage": "lost"}, "value": 1.0, "target": 2.0, "progress": 0.5, "previous": null, "change": null},
            {"group": {"stage": "open"}, "value": 2.0, "target": 2.0, "progress": 1.0, "previous": null, "change": null},
            {"group": {"stage": "won"}, "value": 4.0, "target": 8.0, "progress": 0.5, "previous": null, "change": null}
        ]),
        "{by_stage}"
    );
    let pipeline = widget("pipeline");
    assert_eq!(pipeline["chart"], json!("funnel"));
    assert_eq!(pipeline["data"].as_array().unwrap().len(), 4, "{pipeline}");
    let pareto = widget("top_accounts");
    // Large Co: 150 of 260.
    assert_eq!(pareto["pareto"]["groups"], json!(2), "{pareto}");
    assert_eq!(
        pareto["pareto"]["groups_for_80_percent"],
        json!(2),
        "{pareto}"
    );
    assert_eq!(pareto["data"][0]["share"], json!(0.5769), "{pareto}");
    let latest = widget("latest");
    assert_eq!(latest["data"][0]["data"]["title"], json!("a"), "{latest}");
    assert!(latest["next_cursor"].is_string(), "{latest}");

    // A member who may read deals but not accounts sees that widget's error in its place.
    let rep = user_with_role(
        app,
        json!({"name": "rep", "entities": {"deal": {"read": "all"}}}),
    )
    .await;
    let theirs = app.get_as(&rep, "/api/v1/dashboards/sales/data").await;
    assert_eq!(theirs.status, StatusCode::OK, "{:?}", theirs.body);
    let accounts = theirs.body["widgets"]
        .as_array()
        .unwrap()
        .last()
        .unwrap()
        .clone();
    assert_eq!(accounts["error"]["code"], json!("forbidden"), "{accounts}");
    assert_eq!(theirs.body["widgets"][0]["value"], json!(600.0));

    // Checked: a report that does not exist, a KPI's date field that is not a date, a list drawn
    // as a chart.
    let bad = app
        .post("/api/v1/dashboards", json!({"name": "bad", "widgets": [
            {"id": "a", "type": "kpi", "report": "nothing"},
            {"id": "b", "type": "kpi", "query": {"entity": "deal"}, "period": "month", "date_field": "title"},
            {"id": "c", "type": "chart", "chart": "bar", "query": {"entity": "deal", "type": "list"}},
            {"id": "d", "type": "kpi", "report": "won_amount", "measure": "avg:amount"}
        ]}))
        .await;
    assert_eq!(
        bad.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        bad.body
    );
    let fields = bad.fields().to_string();
    for expected in [
        "no report `nothing`",
        "`title` is not a date, datetime or system timestamp",
        "a list report can only be shown as a table",
        "`avg:amount` is not a measure of the report",
    ] {
        assert!(fields.contains(expected), "{expected}: {fields}");
    }
}

async fn the_timeline_pages_through_every_related_record_and_the_history(app: &TestApp) {
    let (small, large) = seed(app).await;
    app.define(json!({"name": "note", "fields": [
        {"name": "text", "type": "text"},
        {"name": "about", "type": "reference", "entity": "account"},
        {"name": "also", "type": "reference", "entity": "account"}
    ]}))
    .await;
    app.create(
        "note",
        json!({"text": "both", "about": large, "also": large}),
    )
    .await;
    app.create("note", json!({"text": "elsewhere", "about": small}))
        .await;
    let renamed = app
        .patch(
            &format!("/api/v1/records/account/{large}"),
            json!({"data": {"name": "Larger Co"}}),
        )
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{:?}", renamed.body);

    // Large Co: three deals, one note (through two fields), two history entries.
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(cursor) => {
                format!("/api/v1/records/account/{large}/timeline?limit=2&cursor={cursor}")
            }
            None => format!("/api/v1/records/account/{large}/timeline?limit=2"),
        };
        let page = app.get(&path).await;
        assert_eq!(page.status, StatusCode::OK, "{:?}", page.body);
        let items = page.body["data"].as_array().unwrap().clone();
        assert!(items.len() <= 2);
        seen.extend(items);
        match page.body["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let kinds: Vec<String> = seen
        .iter()
        .map(|item| match item["kind"].as_str().unwrap() {
            "record" => format!(
                "{}:{}",
                item["entity"].as_str().unwrap(),
                item["record"]["data"]["title"]
                    .as_str()
                    .or(item["record"]["data"]["text"].as_str())
                    .unwrap()
            ),
            _ => format!("history:{}", item["history"]["operation"].as_str().unwrap()),
        })
        .collect();
    assert_eq!(kinds.len(), 6, "{kinds:?}");
    // Newest first: the rename, then the note, then the deals newest first, then the creation.
    assert_eq!(kinds[0], "history:update", "{kinds:?}");
    assert_eq!(kinds[1], "note:both", "{kinds:?}");
    assert_eq!(&kinds[2..5], ["deal:e", "deal:c", "deal:b"], "{kinds:?}");
    assert_eq!(kinds[5], "history:create", "{kinds:?}");
    assert_eq!(seen[1]["via"], json!(["about", "also"]));
    let times: Vec<&str> = seen
        .iter()
        .map(|item| item["at"].as_str().unwrap())
        .collect();
    assert!(times.windows(2).all(|pair| pair[0] >= pair[1]), "{times:?}");

    // As a rep who may read accounts but not notes, and only their own deals.
    let rep = user_with_role(
        app,
        json!({"name": "rep", "entities": {
            "account": {"read": "all"}, "deal": {"read": "own"}}}),
    )
    .await;
    let theirs = app
        .get_as(&rep, &format!("/api/v1/records/account/{large}/timeline"))
        .await;
    assert_eq!(theirs.status, StatusCode::OK, "{:?}", theirs.body);
    let entities: Vec<&str> = theirs.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["entity"].as_str().unwrap())
        .collect();
    assert_eq!(entities, ["account", "account"], "{:?}", theirs.body);

    for (path, status) in [
        (
            format!("/api/v1/records/account/{large}/timeline?limit=0"),
            StatusCode::BAD_REQUEST,
        ),
        (
            format!("/api/v1/records/account/{large}/timeline?cursor=nope"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "/api/v1/records/account/0190a5b2-0000-7000-8000-000000000000/timeline".to_owned(),
            StatusCode::NOT_FOUND,
        ),
        (
            format!("/api/v1/records/nothing/{large}/timeline"),
            StatusCode::NOT_FOUND,
        ),
    ] {
        let reply = app.get(&path).await;
        assert_eq!(reply.status, status, "{path}: {:?}", reply.body);
    }
}

async fn the_screen_pop_finds_a_caller_by_any_phone_format(app: &TestApp) {
    app.define(json!({"name": "contact", "fields": [
        {"name": "name", "type": "text"},
        {"name": "phone", "type": "phone", "region": "FR", "indexed": true},
        {"name": "email", "type": "email"}
    ]}))
    .await;
    app.define(json!({"name": "case", "fields": [
        {"name": "subject", "type": "text"},
        {"name": "status", "type": "picklist",
         "options": ["open", {"value": "closed", "closed": true}]},
        {"name": "contact", "type": "reference", "entity": "contact"}
    ]}))
    .await;
    app.define(json!({"name": "call", "fields": [
        {"name": "notes", "type": "text"},
        {"name": "contact", "type": "reference", "entity": "contact"}
    ]}))
    .await;
    let ada = app
        .create(
            "contact",
            json!({"name": "Ada", "phone": "01 44 00 00 00", "email": "Ada@Example.com"}),
        )
        .await;
    app.create(
        "contact",
        json!({"name": "Bob", "phone": "+33 6 12 34 56 78"}),
    )
    .await;
    // Stored in E.164.
    let stored = app.get(&format!("/api/v1/records/contact/{ada}")).await;
    assert_eq!(stored.body["data"]["phone"], json!("+33144000000"));
    app.create(
        "case",
        json!({"subject": "broken", "status": "open", "contact": ada}),
    )
    .await;
    app.create(
        "case",
        json!({"subject": "old", "status": "closed", "contact": ada}),
    )
    .await;
    app.create("call", json!({"notes": "first call", "contact": ada}))
        .await;

    for phone in [
        "+33144000000",
        "0033 1 44 00 00 00",
        "%2B33%201%2044%2000%2000%2000",
        "01.44.00.00.00",
    ] {
        let reply = app.get(&format!("/api/v1/lookup?phone={phone}")).await;
        assert_eq!(reply.status, StatusCode::OK, "{phone}: {:?}", reply.body);
        let matches = reply.body["matches"].as_array().unwrap();
        assert_eq!(matches.len(), 1, "{phone}: {:?}", reply.body);
        assert_eq!(matches[0]["entity"], json!("contact"));
        assert_eq!(matches[0]["record"]["data"]["name"], json!("Ada"));
        let cases = &matches[0]["related"]["case"];
        let open: Vec<&str> = cases["open"]
            .as_array()
            .unwrap()
            .iter()
            .map(|case| case["data"]["subject"].as_str().unwrap())
            .collect();
        assert_eq!(open, ["broken"], "{phone}: {cases}");
        assert_eq!(cases["latest"].as_array().unwrap().len(), 2);
        // An entity without a state picklist has its latest records only.
        let calls = &matches[0]["related"]["call"];
        assert!(calls.get("open").is_none(), "{calls}");
        assert_eq!(calls["latest"][0]["data"]["notes"], json!("first call"));
    }
    assert_eq!(stored.body["data"]["email"], json!("ada@example.com"));
    let by_email = app.get("/api/v1/lookup?email=ADA@example.com").await;
    assert_eq!(
        by_email.body["matches"][0]["record"]["data"]["name"],
        json!("Ada"),
        "{:?}",
        by_email.body
    );
    let nobody = app
        .get("/api/v1/lookup?phone=%2B1%20212%20555%200100")
        .await;
    assert_eq!(nobody.body["matches"], json!([]));
    for query in ["", "phone=1&email=a@b.c", "name=x"] {
        let reply = app.get(&format!("/api/v1/lookup?{query}")).await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{query}: {:?}",
            reply.body
        );
    }
    // A user who may not read contacts finds nobody.
    let agent = user_with_role(
        app,
        json!({"name": "cases_only", "entities": {"case": {"read": "all"}}}),
    )
    .await;
    let theirs = app
        .get_as(&agent, "/api/v1/lookup?phone=%2B33144000000")
        .await;
    assert_eq!(theirs.body["matches"], json!([]), "{:?}", theirs.body);
    // Field-level security: a user who may not read contacts' emails nor cases' subjects, nor
    // calls at all, finds Ada without her email, her cases without their subjects, no calls.
    let clerk = user_with_role(
        app,
        json!({"name": "clerk", "entities": {
            "contact": {"read": "all", "fields": {"email": "none"}},
            "case": {"read": "all", "fields": {"subject": "none"}}}}),
    )
    .await;
    let seen = app
        .get_as(&clerk, "/api/v1/lookup?phone=%2B33144000000")
        .await;
    assert_eq!(seen.status, StatusCode::OK, "{:?}", seen.body);
    let found = &seen.body["matches"][0];
    assert_eq!(found["record"]["data"]["name"], json!("Ada"), "{found}");
    assert!(found["record"]["data"].get("email").is_none(), "{found}");
    let cases = &found["related"]["case"];
    assert_eq!(cases["latest"].as_array().unwrap().len(), 2, "{cases}");
    assert_eq!(cases["open"][0]["data"]["status"], json!("open"), "{cases}");
    for case in cases["latest"].as_array().unwrap() {
        assert!(case["data"].get("subject").is_none(), "{case}");
    }
    assert!(found["related"].get("call").is_none(), "{found}");
}

/// Starts a manual run of `workflow` and waits for it to end; returns the run.
async fn run_to_end(app: &TestApp, workflow: &str) -> Value {
    let started = app
        .post(&format!("/api/v1/workflows/{workflow}/runs"), json!({}))
        .await;
    assert!(started.status.is_success(), "{:?}", started.body);
    let id = started.body["id"].as_str().unwrap().to_owned();
    for _ in 0..600 {
        let run = app
            .get(&format!("/api/v1/workflows/{workflow}/runs/{id}"))
            .await
            .body;
        if ["succeeded", "failed"].contains(&run["status"].as_str().unwrap_or_default()) {
            return run;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("run {id} of `{workflow}` did not end");
}

async fn segmentation_clusters_customers_and_writes_their_segments(app: &TestApp) {
    app.define(json!({"name": "account", "fields": [
        {"name": "name", "type": "text", "required": true},
        {"name": "orders", "type": "integer"},
        {"name": "revenue", "type": "currency"},
        {"name": "segment", "type": "integer"}
    ]}))
    .await;
    // Three kinds of customer: 6 big ones, 10 middling, 14 small; one without revenue.
    let mut batch = Vec::new();
    for (kind, count, orders, revenue) in [
        ("big", 6, 40, 90_000),
        ("mid", 10, 12, 20_000),
        ("small", 14, 2, 1_000),
    ] {
        for i in 0..count {
            batch.push(
                json!({"name": format!("{kind}{i}"), "orders": orders + i % 3,
                              "revenue": {"amount": revenue + 100 * i, "currency": "EUR"}}),
            );
        }
    }
    batch.push(json!({"name": "unknown", "orders": 5}));
    let created = app
        .post("/api/v1/records/account/batch", json!({"records": batch}))
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    app.install_plugin(
        "segmentation",
        Some(json!({"entity": "account", "features": ["orders", "revenue"], "k": 3, "segment_field": "segment"})),
    )
    .await;
    let workflow = app
        .post("/api/v1/workflows", json!({"name": "segment_now", "trigger": {"type": "manual"}, "retry": {"max_attempts": 1},
            "steps": [{"id": "segment", "type": "plugin", "plugin": "segmentation", "step": "segment", "input": {}}]}))
        .await;
    assert_eq!(workflow.status, StatusCode::CREATED, "{:?}", workflow.body);

    let run = run_to_end(app, "segment_now").await;
    assert_eq!(run["status"], json!("succeeded"), "{run:#}");
    let output = run["steps"][0]["output"].clone();
    assert_eq!(output["customers"], json!(30), "{output:#}");
    assert_eq!(output["skipped"], json!(1));
    assert_eq!(output["converged"], json!(true));
    assert_eq!(output["written"], json!(30));
    let sizes: Vec<i64> = output["segments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|segment| segment["size"].as_i64().unwrap())
        .collect();
    assert_eq!(
        sizes,
        [6, 10, 14],
        "segment 1 is the highest-valued: {output:#}"
    );
    let big = &output["segments"][0]["centroid"];
    assert!(
        (big["orders"].as_f64().unwrap() - 41.0).abs() < 1.0,
        "{big}"
    );
    assert!(
        (big["revenue"].as_f64().unwrap() - 90_250.0).abs() < 1.0,
        "{big}"
    );
    // Each customer carries its segment.
    let by_segment = aggregate(app, "account", "group_by=segment&measures=count,min:orders").await;
    assert_eq!(
        rows(&by_segment),
        vec![
            json!({"group": {"segment": null}, "count": 1, "min": {"orders": 5}}),
            json!({"group": {"segment": 1}, "count": 6, "min": {"orders": 40}}),
            json!({"group": {"segment": 2}, "count": 10, "min": {"orders": 12}}),
            json!({"group": {"segment": 3}, "count": 14, "min": {"orders": 2}}),
        ]
    );
    // Run again: the same segments, nothing to write; the fuel it took is in the plugin's runs.
    let again = run_to_end(app, "segment_now").await;
    assert_eq!(
        again["steps"][0]["output"]["written"],
        json!(0),
        "{again:#}"
    );
    let runs = app
        .plugin_runs("segmentation", "", |runs| runs.len() >= 2)
        .await;
    let first = &runs[0];
    assert_eq!(first["outcome"], json!("ok"), "{first}");
    assert!(first["fuel_used"].as_i64().unwrap() > 0, "{first}");

    // More segments than customers, and a feature that is not a number: the run fails, saying why.
    let few = app
        .post("/api/v1/workflows", json!({"name": "segment_big_ones", "trigger": {"type": "manual"}, "retry": {"max_attempts": 1},
            "steps": [{"id": "segment", "type": "plugin", "plugin": "segmentation", "step": "segment",
                       "input": {"filter": "orders ge 40", "k": 10}}]}))
        .await;
    assert_eq!(few.status, StatusCode::CREATED, "{:?}", few.body);
    let too_many = run_to_end(app, "segment_big_ones").await;
    assert_eq!(too_many["status"], json!("failed"), "{too_many:#}");
    assert!(
        too_many["error"]
            .as_str()
            .unwrap_or_default()
            .contains("fewer than the 10 segments"),
        "{too_many:#}"
    );
    let configured = app
        .put(
            "/api/v1/plugins/segmentation/config",
            json!({"entity": "account", "features": ["name"], "k": 2}),
        )
        .await;
    assert_eq!(configured.status, StatusCode::OK, "{:?}", configured.body);
    let text = run_to_end(app, "segment_now").await;
    assert_eq!(text["status"], json!("failed"));
    assert!(
        text["error"]
            .as_str()
            .unwrap_or_default()
            .contains("a scan reads numbers"),
        "{text:#}"
    );
}
