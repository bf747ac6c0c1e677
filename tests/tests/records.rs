//! Records over HTTP: writes, validation, concurrency, tenancy, lists, batches, idempotency and
//! history; on SQLite and PostgreSQL.

use std::collections::HashSet;

use rapport_tests::{TestApp, on_both_backends};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_both_backends!(
    a_record_is_created_read_updated_and_versioned,
    a_stale_if_match_is_refused_and_changes_nothing,
    bad_input_lists_every_offending_field_and_writes_nothing,
    unique_fields_are_enforced_and_name_the_holder,
    concurrent_creates_refused_for_a_duplicate_leave_the_others_written,
    a_record_of_another_tenant_is_not_found,
    requests_without_a_valid_token_are_refused,
    filters_cover_comparisons_in_contains_null_and_boolean_logic,
    pages_walk_every_record_once_in_sort_order,
    references_are_checked_expanded_and_listed_from_both_sides,
    a_batch_is_all_or_nothing,
    an_idempotency_key_replays_the_first_response,
    every_change_is_in_the_history,
    delete_is_soft_and_can_be_restored_or_purged,
    field_types_are_validated_and_stored_canonically,
    text_search_and_field_selection,
    oversized_bodies_and_pages_are_refused,
);

async fn define_contacts(app: &TestApp) {
    app.define(json!({"name": "account", "fields": [
        {"name": "name", "type": "text", "required": true},
        {"name": "number", "type": "auto_number", "prefix": "A-", "digits": 4}
    ]}))
    .await;
    app.define(json!({"name": "contact", "fields": [
        {"name": "first_name", "type": "text", "required": true, "max_length": 20},
        {"name": "email", "type": "email", "unique": true},
        {"name": "phone", "type": "phone", "indexed": true},
        {"name": "stage", "type": "picklist", "options": ["lead", "customer", "churned"], "indexed": true},
        {"name": "annual_value", "type": "decimal", "indexed": true},
        {"name": "vip", "type": "boolean"},
        {"name": "tags", "type": "picklist", "multiple": true, "options": ["a", "b", "c"]},
        {"name": "account", "type": "reference", "entity": "account"}
    ]}))
    .await;
}

fn ids(reply: &Value) -> Vec<String> {
    reply["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap().to_owned())
        .collect()
}

async fn a_record_is_created_read_updated_and_versioned(app: &TestApp) {
    define_contacts(app).await;
    let created = app
        .post(
            "/api/v1/records/contact",
            json!({"data": {"first_name": "Ada", "stage": "lead"}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    assert_eq!(created.body["version"], 1);
    let id = created.body["id"].as_str().unwrap();
    let read = app.get(&format!("/api/v1/records/contact/{id}")).await;
    assert_eq!(read.headers["etag"], "\"1\"");
    assert_eq!(
        read.body["data"],
        json!({"first_name": "Ada", "stage": "lead"})
    );
    let updated = app
        .send(
            Method::PATCH,
            &format!("/api/v1/records/contact/{id}"),
            &app.token,
            Some(&json!({"data": {"stage": "customer", "vip": true}})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    assert_eq!(updated.headers["etag"], "\"2\"");
    assert_eq!(
        updated.body["data"],
        json!({"first_name": "Ada", "stage": "customer", "vip": true})
    );
    // null clears a field; a no-op patch does not bump the version.
    let cleared = app
        .patch(
            &format!("/api/v1/records/contact/{id}"),
            json!({"data": {"vip": null}}),
        )
        .await;
    assert_eq!(cleared.body["version"], 3);
    assert_eq!(
        cleared.body["data"],
        json!({"first_name": "Ada", "stage": "customer"})
    );
    let same = app
        .patch(
            &format!("/api/v1/records/contact/{id}"),
            json!({"data": {"stage": "customer"}}),
        )
        .await;
    assert_eq!(same.body["version"], 3);
    // Auto-numbers are assigned in order and are read-only.
    let first = app
        .post("/api/v1/records/account", json!({"data": {"name": "Acme"}}))
        .await;
    let second = app
        .post(
            "/api/v1/records/account",
            json!({"data": {"name": "Globex"}}),
        )
        .await;
    assert_eq!(first.body["data"]["number"], "A-0001");
    assert_eq!(second.body["data"]["number"], "A-0002");
    let write = app
        .post(
            "/api/v1/records/account",
            json!({"data": {"name": "X", "number": "A-9"}}),
        )
        .await;
    assert_eq!(write.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        write.fields()["number"][0]
            .as_str()
            .unwrap()
            .contains("read-only")
    );
}

async fn a_stale_if_match_is_refused_and_changes_nothing(app: &TestApp) {
    define_contacts(app).await;
    let id = app.create("contact", json!({"first_name": "Ada"})).await;
    app.patch(
        &format!("/api/v1/records/contact/{id}"),
        json!({"data": {"first_name": "Ada L."}}),
    )
    .await;
    let stale = app
        .send(
            Method::PATCH,
            &format!("/api/v1/records/contact/{id}"),
            &app.token,
            Some(&json!({"data": {"first_name": "Lost"}})),
            &[("if-match", "\"1\"")],
        )
        .await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(stale.body["error"]["code"], "version_mismatch");
    let read = app.get(&format!("/api/v1/records/contact/{id}")).await;
    assert_eq!(read.body["data"]["first_name"], "Ada L.");
    assert_eq!(read.body["version"], 2);
}

async fn bad_input_lists_every_offending_field_and_writes_nothing(app: &TestApp) {
    define_contacts(app).await;
    let reply = app
        .post(
            "/api/v1/records/contact",
            json!({"data": {
                "email": "not-an-email", "stage": "prospect", "annual_value": "lots",
                "first_name": "a name that is far too long for this field", "nickname": "x"
            }}),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        reply.body
    );
    assert_eq!(reply.body["error"]["code"], "validation_failed");
    let fields = reply.fields().as_object().unwrap();
    let mut names: Vec<&str> = fields.keys().map(String::as_str).collect();
    names.sort();
    assert_eq!(
        names,
        ["annual_value", "email", "first_name", "nickname", "stage"]
    );
    assert!(
        fields["stage"][0]
            .as_str()
            .unwrap()
            .contains("not one of the options")
    );
    assert!(
        fields["nickname"][0]
            .as_str()
            .unwrap()
            .contains("not a field")
    );
    let missing = app
        .post(
            "/api/v1/records/contact",
            json!({"data": {"stage": "lead"}}),
        )
        .await;
    assert_eq!(missing.fields()["first_name"], json!(["is required"]));
    let malformed = app
        .send(
            Method::POST,
            "/api/v1/records/contact",
            &app.token,
            None,
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(malformed.status, StatusCode::BAD_REQUEST);
    let not_wrapped = app
        .post("/api/v1/records/contact", json!({"first_name": "Ada"}))
        .await;
    assert_eq!(not_wrapped.status, StatusCode::BAD_REQUEST);
    let unknown = app
        .post("/api/v1/records/nothing", json!({"data": {}}))
        .await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
    assert_eq!(unknown.body["error"]["code"], "unknown_entity");
    assert_eq!(
        app.get("/api/v1/records/contact").await.body["data"],
        json!([]),
        "nothing was written"
    );
}

/// Concurrent creates, some of them duplicates of each other's unique email: on SQLite they
/// share group commits, where a refused create rolls back alone. Exactly one create of each
/// duplicate pair is written, every other create is written whole (record and history), and
/// no refused create is listed.
async fn concurrent_creates_refused_for_a_duplicate_leave_the_others_written(app: &TestApp) {
    define_contacts(app).await;
    const PAIRS: usize = 24;
    const SINGLES: usize = 24;
    let email = |n: usize| {
        if n < 2 * PAIRS {
            format!("pair{}@example.com", n / 2)
        } else {
            format!("single{n}@example.com")
        }
    };
    let mut creates = tokio::task::JoinSet::new();
    for n in 0..2 * PAIRS + SINGLES {
        let (client, base, token) = (app.client.clone(), app.base.clone(), app.token.clone());
        let body = json!({"data": {"first_name": format!("c{n}"), "email": email(n)}});
        creates.spawn(async move {
            let response = client
                .post(format!("{base}/api/v1/records/contact"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .expect("request sent");
            let status = response.status();
            let body: Value = response.json().await.expect("a JSON body");
            (n, status, body)
        });
    }
    let mut written = std::collections::BTreeMap::new();
    let mut refused = Vec::new();
    while let Some(done) = creates.join_next().await {
        let (n, status, body) = done.unwrap();
        match status {
            StatusCode::CREATED => {
                written.insert(n, body["id"].as_str().unwrap().to_owned());
            }
            StatusCode::CONFLICT => {
                // The value is named, and so is its holder when it had committed before the
                // create looked (always on SQLite, whose writes are serial; a create that raced
                // its duplicate on PostgreSQL learns of it from the unique index).
                let message = body["error"]["fields"]["email"][0].as_str().unwrap();
                assert!(message.contains("must be unique"), "{message}");
                assert!(message.contains(&email(n)), "{message}");
                refused.push(n);
            }
            other => panic!("create {n}: {other} {body}"),
        }
    }
    for pair in 0..PAIRS {
        let kept = [2 * pair, 2 * pair + 1]
            .iter()
            .filter(|n| written.contains_key(n))
            .count();
        assert_eq!(
            kept, 1,
            "pair {pair}: written {written:?}, refused {refused:?}"
        );
    }
    assert!((2 * PAIRS..2 * PAIRS + SINGLES).all(|n| written.contains_key(&n)));
    let listed = app.get("/api/v1/records/contact?limit=200").await;
    let mut names: Vec<String> = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|record| record["data"]["first_name"].as_str().unwrap().to_owned())
        .collect();
    names.sort();
    let mut expected: Vec<String> = written.keys().map(|n| format!("c{n}")).collect();
    expected.sort();
    assert_eq!(names, expected);
    for (n, id) in &written {
        let history = app
            .get(&format!("/api/v1/records/contact/{id}/history"))
            .await;
        let entries = history.body["data"].as_array().unwrap();
        assert_eq!(entries.len(), 1, "create {n}: {}", history.body);
        assert_eq!(entries[0]["operation"], "create");
    }
}

async fn unique_fields_are_enforced_and_name_the_holder(app: &TestApp) {
    define_contacts(app).await;
    let holder = app
        .create(
            "contact",
            json!({"first_name": "Ada", "email": "ada@example.com"}),
        )
        .await;
    let reply = app
        .post(
            "/api/v1/records/contact",
            json!({"data": {"first_name": "Eve", "email": "ada@example.com"}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    let message = reply.fields()["email"][0].as_str().unwrap();
    assert!(
        message.contains("`ada@example.com`") && message.contains(&holder),
        "{message}"
    );
    // An update to a held value, and a batch with one held value, are refused the same way,
    // naming the record of the batch; nothing of them is written.
    let other = app.create("contact", json!({"first_name": "Eve"})).await;
    let taken = app
        .patch(
            &format!("/api/v1/records/contact/{other}"),
            json!({"data": {"email": "ada@example.com", "stage": "lead"}}),
        )
        .await;
    assert_eq!(taken.status, StatusCode::CONFLICT, "{:?}", taken.body);
    let message = taken.fields()["email"][0].as_str().unwrap();
    assert!(message.contains(&holder), "{message}");
    let batch = json!({"records": [
        {"first_name": "Bo", "email": "bo@example.com"},
        {"first_name": "Cy", "email": "cy@example.com"},
        {"first_name": "Di", "email": "ADA@example.com"}
    ]});
    let reply = app.post("/api/v1/records/contact/batch", batch).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{:?}", reply.body);
    let fields = reply.fields().as_object().unwrap();
    assert_eq!(
        fields.keys().collect::<Vec<_>>(),
        ["records[2].email"],
        "{:?}",
        reply.body
    );
    let listed = app.get("/api/v1/records/contact?limit=100").await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 2);
    let after = app.get(&format!("/api/v1/records/contact/{other}")).await;
    assert_eq!(after.body["version"], json!(1), "{:?}", after.body);
    assert_eq!(
        app.get(&format!("/api/v1/records/contact/{other}/history"))
            .await
            .body["data"]
            .as_array()
            .unwrap()
            .len(),
        1,
        "only the create is in the history"
    );
    // Every unique field a write breaks is listed, each with its holder.
    app.define(json!({"name": "badge", "fields": [
        {"name": "code", "type": "text", "unique": true},
        {"name": "email", "type": "email", "unique": true},
        {"name": "label", "type": "text"}
    ]}))
    .await;
    let first = app
        .create("badge", json!({"code": "B-1", "email": "one@example.com"}))
        .await;
    let second = app
        .create("badge", json!({"code": "B-2", "email": "two@example.com"}))
        .await;
    let reply = app
        .post(
            "/api/v1/records/badge",
            json!({"data": {"code": "B-1", "email": "two@example.com", "label": "x"}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{:?}", reply.body);
    let code = reply.fields()["code"][0].as_str().unwrap();
    let email = reply.fields()["email"][0].as_str().unwrap();
    assert!(code.contains(&first), "{code}");
    assert!(email.contains(&second), "{email}");
    let reply = app
        .patch(
            &format!("/api/v1/records/badge/{second}"),
            json!({"data": {"code": "B-1", "email": "one@example.com"}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{:?}", reply.body);
    assert_eq!(
        reply.fields().as_object().unwrap().len(),
        2,
        "{:?}",
        reply.body
    );
    // Another record may take the value once the holder lets it go.
    app.patch(
        &format!("/api/v1/records/contact/{holder}"),
        json!({"data": {"email": "ada@new.example"}}),
    )
    .await;
    let taken = app
        .patch(
            &format!("/api/v1/records/contact/{other}"),
            json!({"data": {"email": "ada@example.com"}}),
        )
        .await;
    assert_eq!(taken.status, StatusCode::OK, "{:?}", taken.body);
}

async fn a_record_of_another_tenant_is_not_found(app: &TestApp) {
    define_contacts(app).await;
    let id = app
        .create(
            "contact",
            json!({"first_name": "Ada", "email": "ada@example.com"}),
        )
        .await;
    let other = app.other_tenant("globex").await;
    // The other tenant has no such entity at all…
    let reply = app
        .send(
            Method::GET,
            &format!("/api/v1/records/contact/{id}"),
            &other,
            None,
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    // …and with an entity of the same name, still never sees or touches the record.
    let definition = json!({"name": "contact", "fields": [{"name": "first_name", "type": "text"}, {"name": "email", "type": "email", "unique": true}]});
    assert_eq!(
        app.send(
            Method::POST,
            "/api/v1/entities",
            &other,
            Some(&definition),
            &[]
        )
        .await
        .status,
        StatusCode::CREATED
    );
    for (method, body) in [
        (Method::GET, None),
        (Method::PATCH, Some(json!({"data": {"first_name": "X"}}))),
        (Method::DELETE, None),
    ] {
        let reply = app
            .send(
                method.clone(),
                &format!("/api/v1/records/contact/{id}"),
                &other,
                body.as_ref(),
                &[],
            )
            .await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{method}");
        assert!(!reply.body.to_string().contains("ada@example.com"));
    }
    let list = app
        .send(Method::GET, "/api/v1/records/contact", &other, None, &[])
        .await;
    assert_eq!(list.body["data"], json!([]));
    // Unique values are per tenant.
    let reply = app
        .send(
            Method::POST,
            "/api/v1/records/contact",
            &other,
            Some(&json!({"data": {"email": "ada@example.com"}})),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    assert_eq!(
        app.get(&format!("/api/v1/records/contact/{id}")).await.body["data"]["first_name"],
        "Ada"
    );
}

async fn requests_without_a_valid_token_are_refused(app: &TestApp) {
    let reply = app
        .send(Method::GET, "/api/v1/entities", "rpt_wrong", None, &[])
        .await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    assert_eq!(reply.headers["www-authenticate"], "Bearer");
    let anonymous = app
        .client
        .get(format!("{}/api/v1/entities", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let health = app
        .client
        .get(format!("{}/healthz", app.base))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
}

async fn seed(app: &TestApp) -> Vec<String> {
    let records: Vec<Value> = (0..30)
        .map(|i| {
            let stage = ["lead", "customer", "churned"][i % 3];
            let tags = [json!(["a"]), json!(["b"]), json!(["a", "c"])][i % 3].clone();
            let mut data = json!({
                "first_name": format!("P{i:02}"),
                "stage": stage,
                "annual_value": (i * 37 % 100) as f64 + 0.5,
                "vip": i % 4 == 0,
                "tags": tags,
            });
            if i % 5 != 0 {
                data["email"] = json!(format!("p{i}@example.com"));
            }
            data
        })
        .collect();
    let reply = app
        .post("/api/v1/records/contact/batch", json!({"records": records}))
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    ids(&reply.body)
}

async fn count(app: &TestApp, filter: &str) -> usize {
    let path = format!(
        "/api/v1/records/contact?limit=500&filter={}",
        urlencode(filter)
    );
    let reply = app.get(&path).await;
    assert_eq!(reply.status, StatusCode::OK, "{filter}: {:?}", reply.body);
    reply.body["data"].as_array().unwrap().len()
}

fn urlencode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

async fn filters_cover_comparisons_in_contains_null_and_boolean_logic(app: &TestApp) {
    define_contacts(app).await;
    seed(app).await;
    assert_eq!(count(app, "stage eq 'customer'").await, 10);
    assert_eq!(count(app, "stage ne 'customer'").await, 20);
    assert_eq!(count(app, "stage in ('lead', 'churned')").await, 20);
    let expected = (0..30)
        .filter(|i| (i * 37 % 100) as f64 + 0.5 >= 50.0)
        .count();
    assert_eq!(count(app, "annual_value ge 50").await, expected);
    assert_eq!(count(app, "email is null").await, 6);
    assert_eq!(
        count(app, "email is not null and vip eq true").await,
        (0..30).filter(|i| i % 5 != 0 && i % 4 == 0).count()
    );
    assert_eq!(count(app, "tags contains 'a'").await, 20);
    assert_eq!(count(app, "first_name startswith 'P1'").await, 10);
    assert_eq!(count(app, "first_name contains '2'").await, 12);
    assert_eq!(
        count(app, "not (stage eq 'lead' or stage eq 'churned')").await,
        10
    );
    assert_eq!(
        count(
            app,
            "_version eq 1 and _created_at gt '2000-01-01T00:00:00Z'"
        )
        .await,
        30
    );
    // Bad filters are 400s that say what is wrong.
    for (filter, needle) in [
        ("nope eq 1", "`nope` is not a field"),
        ("annual_value eq 'x'", "takes a number"),
        ("stage eq", "expected a value"),
        ("tags eq 'a'", "does not apply"),
    ] {
        let reply = app
            .get(&format!(
                "/api/v1/records/contact?filter={}",
                urlencode(filter)
            ))
            .await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{filter}");
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(needle),
            "{filter}: {:?}",
            reply.body
        );
    }
}

async fn pages_walk_every_record_once_in_sort_order(app: &TestApp) {
    define_contacts(app).await;
    seed(app).await;
    for sort in [
        "-annual_value",
        "email",
        "stage,-first_name",
        "-email,annual_value",
        "",
        "-_id",
    ] {
        let mut seen = Vec::new();
        let mut values = Vec::new();
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/api/v1/records/contact?limit=7&sort={}", urlencode(sort));
            if let Some(cursor) = &cursor {
                path.push_str(&format!("&cursor={cursor}"));
            }
            let page = app.get(&path).await;
            assert_eq!(page.status, StatusCode::OK, "{sort}: {:?}", page.body);
            for record in page.body["data"].as_array().unwrap() {
                seen.push(record["id"].as_str().unwrap().to_owned());
                values.push(record["data"].clone());
            }
            match page.body["next_cursor"].as_str() {
                Some(next) => cursor = Some(next.to_owned()),
                None => break,
            }
        }
        assert_eq!(seen.len(), 30, "{sort}");
        assert_eq!(
            seen.iter().collect::<HashSet<_>>().len(),
            30,
            "{sort}: a record came twice"
        );
        if sort == "-annual_value" {
            let numbers: Vec<f64> = values
                .iter()
                .map(|v| v["annual_value"].as_f64().unwrap())
                .collect();
            assert!(numbers.windows(2).all(|w| w[0] >= w[1]), "{numbers:?}");
        }
        if sort == "-_id" {
            assert!(seen.windows(2).all(|w| w[0] > w[1]), "ids descending");
        }
        if sort == "email" {
            // Records without a value come first, then values ascending.
            let emails: Vec<Option<&str>> = values.iter().map(|v| v["email"].as_str()).collect();
            assert!(emails[..6].iter().all(Option::is_none), "{emails:?}");
            assert!(emails[6..].windows(2).all(|w| w[0] <= w[1]), "{emails:?}");
        }
    }
    let reply = app.get("/api/v1/records/contact?limit=7&sort=email").await;
    let cursor = reply.body["next_cursor"].as_str().unwrap();
    let misuse = app
        .get(&format!(
            "/api/v1/records/contact?sort=stage&cursor={cursor}"
        ))
        .await;
    assert_eq!(misuse.status, StatusCode::BAD_REQUEST);
    let garbage = app.get("/api/v1/records/contact?cursor=garbage").await;
    assert_eq!(garbage.status, StatusCode::BAD_REQUEST);
}

async fn references_are_checked_expanded_and_listed_from_both_sides(app: &TestApp) {
    define_contacts(app).await;
    app.define(json!({"name": "campaign", "fields": [{"name": "name", "type": "text"}]}))
        .await;
    app.define(json!({"name": "campaign_member", "fields": [
        {"name": "campaign", "type": "reference", "entity": "campaign", "required": true},
        {"name": "contact", "type": "reference", "entity": "contact", "required": true}
    ]}))
    .await;
    let account = app.create("account", json!({"name": "Acme"})).await;
    let ada = app
        .create("contact", json!({"first_name": "Ada", "account": account}))
        .await;
    let bob = app.create("contact", json!({"first_name": "Bob"})).await;
    let dangling = app
        .post(
            "/api/v1/records/contact",
            json!({"data": {"first_name": "X", "account": bob}}),
        )
        .await;
    assert_eq!(
        dangling.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "a contact id is not an account"
    );
    assert!(
        dangling.fields()["account"][0]
            .as_str()
            .unwrap()
            .contains("no `account` record")
    );

    let read = app
        .get(&format!("/api/v1/records/contact/{ada}?expand=account"))
        .await;
    assert_eq!(read.body["expanded"]["account"]["data"]["name"], "Acme");
    let bad = app
        .get(&format!("/api/v1/records/contact/{ada}?expand=first_name"))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);

    let spring = app.create("campaign", json!({"name": "Spring"})).await;
    let autumn = app.create("campaign", json!({"name": "Autumn"})).await;
    for (campaign, contact) in [(&spring, &ada), (&spring, &bob), (&autumn, &ada)] {
        app.create(
            "campaign_member",
            json!({"campaign": campaign, "contact": contact}),
        )
        .await;
    }
    let of_ada = app
        .get(&format!(
            "/api/v1/records/contact/{ada}/related/campaign_member?expand=campaign"
        ))
        .await;
    let mut names: Vec<&str> = of_ada.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["expanded"]["campaign"]["data"]["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["Autumn", "Spring"]);
    let of_spring = app
        .get(&format!(
            "/api/v1/records/campaign/{spring}/related/campaign_member?expand=contact"
        ))
        .await;
    let mut people: Vec<&str> = of_spring.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            m["expanded"]["contact"]["data"]["first_name"]
                .as_str()
                .unwrap()
        })
        .collect();
    people.sort();
    assert_eq!(people, ["Ada", "Bob"]);
    let account_contacts = app
        .get(&format!(
            "/api/v1/records/account/{account}/related/contact"
        ))
        .await;
    assert_eq!(ids(&account_contacts.body), [ada]);
}

async fn a_batch_is_all_or_nothing(app: &TestApp) {
    define_contacts(app).await;
    let records = json!({"records": [
        {"first_name": "A", "email": "a@example.com"},
        {"first_name": "B", "stage": "bogus"},
        {"first_name": "C", "email": "a@example.com"}
    ]});
    let reply = app.post("/api/v1/records/contact/batch", records).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        reply.body
    );
    assert!(
        reply.fields()["records[1].stage"].is_array(),
        "{:?}",
        reply.body
    );
    assert_eq!(
        app.get("/api/v1/records/contact").await.body["data"],
        json!([]),
        "nothing was created"
    );
    let duplicate = json!({"records": [{"first_name": "A", "email": "a@example.com"}, {"first_name": "C", "email": "a@example.com"}]});
    let reply = app.post("/api/v1/records/contact/batch", duplicate).await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
    assert!(reply.fields()["records[1].email"].is_array());
    assert_eq!(
        app.get("/api/v1/records/contact").await.body["data"],
        json!([])
    );

    let created = app
        .post(
            "/api/v1/records/contact/batch",
            json!({"records": [{"first_name": "A"}, {"first_name": "B"}]}),
        )
        .await;
    let created_ids = ids(&created.body);
    let updates = json!({"records": [
        {"id": created_ids[0], "data": {"stage": "lead"}},
        {"id": created_ids[1], "version": 9, "data": {"stage": "lead"}}
    ]});
    let reply = app.patch("/api/v1/records/contact/batch", updates).await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{:?}", reply.body);
    assert!(
        app.get(&format!("/api/v1/records/contact/{}", created_ids[0]))
            .await
            .body["data"]
            .get("stage")
            .is_none()
    );
    let too_many: Vec<Value> = (0..1001)
        .map(|i| json!({"first_name": format!("n{i}")}))
        .collect();
    let reply = app
        .post(
            "/api/v1/records/contact/batch",
            json!({"records": too_many}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

async fn an_idempotency_key_replays_the_first_response(app: &TestApp) {
    define_contacts(app).await;
    let body = json!({"data": {"first_name": "Ada"}});
    let key = [("idempotency-key", "order-42")];
    let first = app
        .send(
            Method::POST,
            "/api/v1/records/contact",
            &app.token,
            Some(&body),
            &key,
        )
        .await;
    let retry = app
        .send(
            Method::POST,
            "/api/v1/records/contact",
            &app.token,
            Some(&body),
            &key,
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    assert_eq!(retry.status, StatusCode::CREATED);
    assert_eq!(first.body, retry.body);
    let different = json!({"data": {"first_name": "Bob"}});
    let misuse = app
        .send(
            Method::POST,
            "/api/v1/records/contact",
            &app.token,
            Some(&different),
            &key,
        )
        .await;
    assert_eq!(misuse.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        app.get("/api/v1/records/contact").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

async fn every_change_is_in_the_history(app: &TestApp) {
    define_contacts(app).await;
    let id = app
        .create("contact", json!({"first_name": "Ada", "stage": "lead"}))
        .await;
    app.patch(
        &format!("/api/v1/records/contact/{id}"),
        json!({"data": {"stage": "customer"}}),
    )
    .await;
    app.delete(&format!("/api/v1/records/contact/{id}")).await;
    let history = app
        .get(&format!("/api/v1/records/contact/{id}/history"))
        .await;
    let entries = history.body["data"].as_array().unwrap();
    let operations: Vec<&str> = entries
        .iter()
        .map(|e| e["operation"].as_str().unwrap())
        .collect();
    assert_eq!(operations, ["create", "update", "delete"]);
    assert_eq!(
        entries[1]["changes"],
        json!({"stage": {"from": "lead", "to": "customer"}})
    );
    assert_eq!(entries[1]["version"], 2);
    assert!(entries[0]["changed_by"].is_string());
}

async fn delete_is_soft_and_can_be_restored_or_purged(app: &TestApp) {
    define_contacts(app).await;
    let id = app
        .create(
            "contact",
            json!({"first_name": "Ada", "email": "ada@example.com"}),
        )
        .await;
    assert_eq!(
        app.delete(&format!("/api/v1/records/contact/{id}"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.get(&format!("/api/v1/records/contact/{id}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        ids(&app.get("/api/v1/records/contact?deleted=only").await.body),
        std::slice::from_ref(&id)
    );
    assert_eq!(
        app.get(&format!(
            "/api/v1/records/contact/{id}?include_deleted=true"
        ))
        .await
        .status,
        StatusCode::OK
    );
    // Its unique value is free while it is deleted; restoring then conflicts.
    let taker = app
        .create(
            "contact",
            json!({"first_name": "Eve", "email": "ada@example.com"}),
        )
        .await;
    let restore = app
        .post(
            &format!("/api/v1/records/contact/{id}/restore"),
            json!(null),
        )
        .await;
    assert_eq!(restore.status, StatusCode::CONFLICT, "{:?}", restore.body);
    app.delete(&format!("/api/v1/records/contact/{taker}?purge=true"))
        .await;
    let restore = app
        .post(
            &format!("/api/v1/records/contact/{id}/restore"),
            json!(null),
        )
        .await;
    assert_eq!(restore.status, StatusCode::OK, "{:?}", restore.body);
    assert_eq!(
        app.get(&format!("/api/v1/records/contact/{id}"))
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        app.delete(&format!("/api/v1/records/contact/{id}?purge=true"))
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        app.get(&format!(
            "/api/v1/records/contact/{id}?include_deleted=true"
        ))
        .await
        .status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&format!("/api/v1/records/contact/{id}/history"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
}

async fn field_types_are_validated_and_stored_canonically(app: &TestApp) {
    app.define(json!({"name": "thing", "fields": [
        {"name": "price", "type": "currency"},
        {"name": "at", "type": "datetime", "indexed": true},
        {"name": "on", "type": "date"},
        {"name": "site", "type": "url"},
        {"name": "count", "type": "integer", "min": 0},
        {"name": "extra", "type": "json"},
        {"name": "body", "type": "long_text"}
    ]}))
    .await;
    let good = app
        .post("/api/v1/records/thing", json!({"data": {
            "price": {"amount": 12.5, "currency": "EUR"}, "at": "2026-03-01T10:00:00+01:00", "on": "2026-03-01",
            "site": "https://example.com/x", "count": 3, "extra": {"any": ["thing"]}, "body": "long ".repeat(1000)
        }}))
        .await;
    assert_eq!(good.status, StatusCode::CREATED, "{:?}", good.body);
    assert_eq!(
        good.body["data"]["at"], "2026-03-01T09:00:00.000Z",
        "datetimes are stored in UTC"
    );
    let bad = app
        .post(
            "/api/v1/records/thing",
            json!({"data": {
                "price": {"amount": 1, "currency": "euro"}, "at": "tomorrow", "on": "2026-02-30",
                "site": "ftp://x", "count": -1
            }}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
    let mut names: Vec<&String> = bad.fields().as_object().unwrap().keys().collect();
    names.sort();
    assert_eq!(names, ["at", "count", "on", "price", "site"]);
    let found = app
        .get("/api/v1/records/thing?filter=at%20lt%20%272026-03-01T09%3A30%3A00%2B00%3A00%27")
        .await;
    assert_eq!(
        found.body["data"].as_array().unwrap().len(),
        1,
        "datetime filters compare instants"
    );
    let sorted = app
        .get("/api/v1/records/thing?filter=price%20gt%2010")
        .await;
    assert_eq!(
        sorted.body["data"].as_array().unwrap().len(),
        1,
        "currency compares by amount"
    );
}

async fn text_search_and_field_selection(app: &TestApp) {
    define_contacts(app).await;
    app.create(
        "contact",
        json!({"first_name": "Grace", "email": "grace@navy.mil", "phone": "+1 555 0100"}),
    )
    .await;
    app.create(
        "contact",
        json!({"first_name": "Linus", "email": "linus@kernel.org"}),
    )
    .await;
    let found = app.get("/api/v1/records/contact?q=NAVY").await;
    assert_eq!(found.body["data"].as_array().unwrap().len(), 1);
    assert_eq!(found.body["data"][0]["data"]["first_name"], "Grace");
    let by_phone = app
        .get(
            "/api/v1/records/contact?filter=phone%20eq%20%27%2B1%20555%200100%27&fields=first_name",
        )
        .await;
    assert_eq!(
        by_phone.body["data"][0]["data"],
        json!({"first_name": "Grace"})
    );
    let percent = app.get("/api/v1/records/contact?q=%25").await;
    assert_eq!(percent.body["data"], json!([]), "`%` is searched literally");
    let unknown = app.get("/api/v1/records/contact?fields=nope").await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    let unknown_param = app.get("/api/v1/records/contact?colour=red").await;
    assert_eq!(unknown_param.status, StatusCode::BAD_REQUEST);
}

async fn oversized_bodies_and_pages_are_refused(app: &TestApp) {
    define_contacts(app).await;
    let huge = json!({"data": {"first_name": "x".repeat(2 * 1024 * 1024)}});
    // Its own client: the server answers 413 without reading the body and closes that
    // connection, which a pooled client could otherwise reuse for the next request.
    let response = reqwest::Client::new()
        .post(format!("{}/api/v1/records/contact", app.base))
        .bearer_auth(&app.token)
        .json(&huge)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "body_too_large");
    let page = app.get("/api/v1/records/contact?limit=100000").await;
    assert_eq!(page.status, StatusCode::BAD_REQUEST);
    assert!(
        page.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("500")
    );
    let form = app
        .client
        .post(format!("{}/api/v1/records/contact", app.base))
        .bearer_auth(&app.token)
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
}
