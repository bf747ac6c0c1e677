//! Entity definitions over HTTP: create, validate, evolve, delete; on SQLite and PostgreSQL.

use rapport_tests::{TestApp, on_both_backends, open_sqlite};
use reqwest::{Method, StatusCode};
use serde_json::json;

on_both_backends!(
    invalid_definitions_are_refused_with_the_json_path_of_each_problem,
    an_entity_is_created_listed_read_and_updated_with_optimistic_concurrency,
    only_administrators_may_change_metadata,
    adding_a_field_keeps_existing_records_and_new_writes_use_it,
    a_field_becomes_unique_only_when_existing_data_allows_it,
    a_type_change_is_dry_run_first_and_never_drops_a_value,
    a_field_is_removed_in_two_phases_deactivate_then_purge,
    an_entity_that_others_reference_is_deleted_only_when_forced,
    the_openapi_document_describes_the_tenants_entities,
    composite_indexes_are_built_changed_and_checked,
    a_definition_changed_by_another_host_reaches_writes_at_once_and_reads_within_a_second,
);

fn contact() -> serde_json::Value {
    json!({"name": "contact", "label": "Contact", "fields": [
        {"name": "first_name", "type": "text", "required": true, "max_length": 100},
        {"name": "email", "type": "email", "unique": true},
        {"name": "phone", "type": "phone", "indexed": true},
        {"name": "stage", "type": "picklist", "options": ["lead", "customer", "churned"]},
        {"name": "annual_value", "type": "decimal"}
    ]})
}

async fn invalid_definitions_are_refused_with_the_json_path_of_each_problem(app: &TestApp) {
    let reply = app
        .post(
            "/api/v1/entities",
            json!({"name": "Bad Name", "fields": [
            {"name": "ok", "type": "text"},
            {"name": "x", "type": "no_such_type"},
            {"name": "p", "type": "picklist"},
            {"name": "r", "type": "reference", "entity": "ghost"},
            {"name": "ok", "type": "integer"}
        ], "colour": "red"}),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        reply.body
    );
    assert_eq!(reply.body["error"]["code"], "invalid_definition");
    let fields = reply.fields().as_object().unwrap();
    for path in ["/", "/name", "/fields/1/type", "/fields/2"] {
        assert!(
            fields.contains_key(path),
            "no problem at {path}: {fields:?}"
        );
    }
    // Rules past the schema: duplicate names, unknown reference targets.
    let reply = app
        .post(
            "/api/v1/entities",
            json!({"name": "deal", "fields": [
                {"name": "a", "type": "text"}, {"name": "a", "type": "integer"},
                {"name": "r", "type": "reference", "entity": "ghost"}
            ]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        reply.fields()["/fields/1/name"][0]
            .as_str()
            .unwrap()
            .contains("twice")
    );
    // Reference targets are checked once the definition itself is sound.
    let reply = app
        .post("/api/v1/entities", json!({"name": "deal", "fields": [{"name": "r", "type": "reference", "entity": "ghost"}]}))
        .await;
    assert_eq!(reply.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(
        reply.fields()["/fields/0/entity"][0],
        "entity `ghost` does not exist"
    );
    // Nothing was created.
    assert_eq!(app.get("/api/v1/entities").await.body["data"], json!([]));
    // Malformed JSON is a 400, not a 422.
    let reply = app
        .send(
            Method::POST,
            "/api/v1/entities",
            &app.token,
            None,
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
}

async fn an_entity_is_created_listed_read_and_updated_with_optimistic_concurrency(app: &TestApp) {
    app.define(contact()).await;
    let again = app.post("/api/v1/entities", contact()).await;
    assert_eq!(again.status, StatusCode::CONFLICT);
    let list = app.get("/api/v1/entities").await;
    assert_eq!(list.body["data"][0]["name"], "contact");
    let got = app.get("/api/v1/entities/contact").await;
    assert_eq!(got.body["version"], 1);
    assert_eq!(got.body["fields"].as_array().unwrap().len(), 5);

    let mut changed = got.body.clone();
    changed.as_object_mut().unwrap().remove("updated_at");
    changed["label"] = json!("Person");
    let reply = app.put("/api/v1/entities/contact", changed.clone()).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["entity"]["version"], 2);
    assert_eq!(
        reply.body["changes"],
        json!([{"change": "entity_described"}])
    );
    // Sending the definition read at version 1 again is a stale write.
    let stale = app.put("/api/v1/entities/contact", changed).await;
    assert_eq!(
        stale.status,
        StatusCode::PRECONDITION_FAILED,
        "{:?}",
        stale.body
    );
    assert_eq!(
        app.get("/api/v1/entities/nope").await.status,
        StatusCode::NOT_FOUND
    );
}

async fn only_administrators_may_change_metadata(app: &TestApp) {
    let member = app.member("sam").await;
    let reply = app
        .send(
            Method::POST,
            "/api/v1/entities",
            &member,
            Some(&contact()),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    app.define(contact()).await;
    // Members work with records and read definitions.
    let reply = app
        .send(
            Method::POST,
            "/api/v1/records/contact",
            &member,
            Some(&json!({"data": {"first_name": "Ann"}})),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED);
    assert_eq!(
        app.send(Method::GET, "/api/v1/entities/contact", &member, None, &[])
            .await
            .status,
        StatusCode::OK
    );
    let reply = app
        .send(
            Method::DELETE,
            "/api/v1/entities/contact",
            &member,
            None,
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
}

async fn adding_a_field_keeps_existing_records_and_new_writes_use_it(app: &TestApp) {
    app.define(contact()).await;
    let id = app.create("contact", json!({"first_name": "Ann"})).await;
    let mut definition = contact();
    definition["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "score", "type": "integer", "indexed": true}));
    let reply = app.put("/api/v1/entities/contact", definition).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(
        reply.body["changes"],
        json!([{"change": "field_added", "field": "score"}, {"change": "index_added", "field": "score", "unique": false}])
    );
    let old = app.get(&format!("/api/v1/records/contact/{id}")).await;
    assert_eq!(old.body["data"], json!({"first_name": "Ann"}));
    assert_eq!(old.body["version"], 1, "adding a field rewrites no record");
    app.create("contact", json!({"first_name": "Bob", "score": 7}))
        .await;
    let list = app
        .get("/api/v1/records/contact?filter=score%20ge%205")
        .await;
    assert_eq!(list.body["data"].as_array().unwrap().len(), 1);
    let bad = app
        .post(
            "/api/v1/records/contact",
            json!({"data": {"first_name": "C", "score": "high"}}),
        )
        .await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY);
}

async fn a_field_becomes_unique_only_when_existing_data_allows_it(app: &TestApp) {
    app.define(contact()).await;
    for name in ["Ann", "Ann", "Bob"] {
        app.create("contact", json!({"first_name": name})).await;
    }
    let mut definition = contact();
    definition["fields"][0]["unique"] = json!(true);
    let reply = app
        .put("/api/v1/entities/contact", definition.clone())
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT, "{:?}", reply.body);
    assert_eq!(reply.body["error"]["code"], "duplicate_values");
    assert_eq!(
        reply.fields()["first_name"],
        json!([{"value": "Ann", "records": 2}])
    );
    assert_eq!(
        app.get("/api/v1/entities/contact").await.body["version"],
        1,
        "nothing changed"
    );
    // Once the duplicate is gone, the index is built and enforced by the database.
    let page = app
        .get("/api/v1/records/contact?filter=first_name%20eq%20%27Ann%27")
        .await;
    let duplicate = page.body["data"][0]["id"].as_str().unwrap();
    app.patch(
        &format!("/api/v1/records/contact/{duplicate}"),
        json!({"data": {"first_name": "Anna"}}),
    )
    .await;
    let reply = app.put("/api/v1/entities/contact", definition).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let reply = app
        .post(
            "/api/v1/records/contact",
            json!({"data": {"first_name": "Bob"}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CONFLICT);
}

async fn a_type_change_is_dry_run_first_and_never_drops_a_value(app: &TestApp) {
    app.define(
        json!({"name": "deal", "fields": [{"name": "size", "type": "text", "indexed": true}]}),
    )
    .await;
    let good = app.create("deal", json!({"size": "42"})).await;
    let bad = app.create("deal", json!({"size": "big"})).await;
    app.create("deal", json!({})).await;
    let to_integer =
        json!({"name": "deal", "fields": [{"name": "size", "type": "integer", "indexed": true}]});
    let plan = app
        .put("/api/v1/entities/deal?dry_run=true", to_integer.clone())
        .await;
    assert_eq!(plan.status, StatusCode::CONFLICT, "{:?}", plan.body);
    let report = &plan.fields()["size"];
    assert_eq!(report["records_with_value"], 2);
    assert_eq!(report["failures"], 1);
    assert_eq!(report["samples"][0]["record"], bad.as_str());
    // Refused for real too, and nothing changed.
    assert_eq!(
        app.put("/api/v1/entities/deal", to_integer.clone())
            .await
            .status,
        StatusCode::CONFLICT
    );
    assert_eq!(
        app.get(&format!("/api/v1/records/deal/{bad}")).await.body["data"]["size"],
        "big"
    );
    // Fix the value, dry-run again (a plan, no change), then convert.
    app.patch(
        &format!("/api/v1/records/deal/{bad}"),
        json!({"data": {"size": "7"}}),
    )
    .await;
    let plan = app
        .put("/api/v1/entities/deal?dry_run=true", to_integer.clone())
        .await;
    assert_eq!(plan.status, StatusCode::OK, "{:?}", plan.body);
    assert_eq!(plan.body["plan"]["conversions"][0]["failures"], 0);
    assert_eq!(
        app.get(&format!("/api/v1/records/deal/{good}")).await.body["data"]["size"],
        "42"
    );
    let applied = app.put("/api/v1/entities/deal", to_integer).await;
    assert_eq!(applied.status, StatusCode::OK, "{:?}", applied.body);
    assert_eq!(
        app.get(&format!("/api/v1/records/deal/{good}")).await.body["data"]["size"],
        42
    );
    let sorted = app
        .get("/api/v1/records/deal?sort=-size&filter=size%20gt%205")
        .await;
    let sizes: Vec<_> = sorted.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["data"]["size"].clone())
        .collect();
    assert_eq!(sizes, [json!(42), json!(7)], "compared as numbers now");
}

async fn a_field_is_removed_in_two_phases_deactivate_then_purge(app: &TestApp) {
    app.define(contact()).await;
    let id = app
        .create(
            "contact",
            json!({"first_name": "Ann", "phone": "+1 555 0100"}),
        )
        .await;
    let mut definition = contact();
    definition["fields"].as_array_mut().unwrap().remove(2);
    let reply = app.put("/api/v1/entities/contact", definition).await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "dropping a field outright is refused"
    );
    assert!(
        reply.fields()["/fields"][0]
            .as_str()
            .unwrap()
            .contains("deactivate")
    );
    assert_eq!(
        app.delete("/api/v1/entities/contact/fields/phone")
            .await
            .status,
        StatusCode::CONFLICT,
        "still active"
    );

    let mut definition = contact();
    definition["fields"][2]["active"] = json!(false);
    assert_eq!(
        app.put("/api/v1/entities/contact", definition.clone())
            .await
            .status,
        StatusCode::OK
    );
    let record = app.get(&format!("/api/v1/records/contact/{id}")).await;
    assert_eq!(
        record.body["data"],
        json!({"first_name": "Ann"}),
        "hidden while deactivated"
    );
    let write = app
        .patch(
            &format!("/api/v1/records/contact/{id}"),
            json!({"data": {"phone": "+1 555 0199"}}),
        )
        .await;
    assert_eq!(write.status, StatusCode::UNPROCESSABLE_ENTITY);
    // Reactivating brings the kept data back.
    definition["fields"][2]["active"] = json!(true);
    assert_eq!(
        app.put("/api/v1/entities/contact", definition.clone())
            .await
            .status,
        StatusCode::OK
    );
    // Stored in E.164, as it was written back then.
    assert_eq!(
        app.get(&format!("/api/v1/records/contact/{id}")).await.body["data"]["phone"],
        "+15550100"
    );
    // Deactivate again, then purge: the data is gone for good.
    definition["fields"][2]["active"] = json!(false);
    assert_eq!(
        app.put("/api/v1/entities/contact", definition).await.status,
        StatusCode::OK
    );
    let purged = app.delete("/api/v1/entities/contact/fields/phone").await;
    assert_eq!(purged.status, StatusCode::OK, "{:?}", purged.body);
    assert!(
        purged.body["fields"]
            .as_array()
            .unwrap()
            .iter()
            .all(|f| f["name"] != "phone")
    );
    let mut with_phone = contact();
    with_phone["fields"][2]["indexed"] = json!(false);
    assert_eq!(
        app.put("/api/v1/entities/contact", with_phone).await.status,
        StatusCode::OK
    );
    assert_eq!(
        app.get(&format!("/api/v1/records/contact/{id}")).await.body["data"],
        json!({"first_name": "Ann"})
    );
}

async fn an_entity_that_others_reference_is_deleted_only_when_forced(app: &TestApp) {
    app.define(json!({"name": "account", "fields": [{"name": "name", "type": "text"}]}))
        .await;
    app.define(json!({"name": "person", "fields": [{"name": "account", "type": "reference", "entity": "account"}]})).await;
    let account = app.create("account", json!({"name": "Acme"})).await;
    app.create("person", json!({"account": account})).await;
    let refused = app.delete("/api/v1/entities/account").await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(
        refused.fields()["referenced_by"],
        json!(["`person.account`"])
    );
    let forced = app.delete("/api/v1/entities/account?force=true").await;
    assert_eq!(forced.status, StatusCode::OK, "{:?}", forced.body);
    assert_eq!(
        app.get("/api/v1/entities/account").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get(&format!("/api/v1/records/account/{account}"))
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let person = app.get("/api/v1/entities/person").await;
    assert_eq!(
        person.body["fields"][0]["active"], false,
        "the reference field is deactivated, its data kept"
    );
    // A new entity of the same name starts afresh: new definition, no old records.
    app.define(json!({"name": "account", "fields": [{"name": "code", "type": "integer", "required": true}]})).await;
    let old_shape = app
        .post("/api/v1/records/account", json!({"data": {"name": "Acme"}}))
        .await;
    assert_eq!(
        old_shape.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        old_shape.body
    );
    app.create("account", json!({"code": 7})).await;
    assert_eq!(
        app.get("/api/v1/records/account").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

async fn the_openapi_document_describes_the_tenants_entities(app: &TestApp) {
    app.define(contact()).await;
    let other = app.other_tenant("globex").await;
    let document = app.get("/api/v1/openapi.json").await;
    assert_eq!(document.status, StatusCode::OK);
    assert_eq!(document.body["openapi"], "3.1.0");
    assert!(document.body["paths"]["/api/v1/records/contact"]["post"].is_object());
    for (path, method) in [
        ("/api/v1/entities", "post"),
        ("/api/v1/records/{entity}/batch", "patch"),
        ("/api/v1/records/{entity}/recompute", "post"),
        ("/api/v1/plugins/{id}/runs", "get"),
        ("/api/v1/outbox", "get"),
        ("/api/v1/workflows", "post"),
        ("/api/v1/workflows/{name}/runs/{id}/retry", "post"),
        ("/api/v1/notifications", "get"),
        ("/api/v1/packs", "get"),
        ("/api/v1/packs/{id}/install", "post"),
        ("/api/v1/packs/{id}/upgrade", "post"),
        ("/api/v1/packs/{id}", "delete"),
        ("/api/v1/views/{name}/records", "get"),
    ] {
        assert!(
            document.body["paths"][path][method].is_object(),
            "{method} {path} is described"
        );
    }
    let steps = &document.body["components"]["schemas"]["workflow_steps"];
    assert_eq!(steps["items"]["$ref"], "#/components/schemas/workflow_step");
    let data = &document.body["components"]["schemas"]["contact_data"];
    assert_eq!(
        data["properties"]["stage"]["enum"],
        json!(["lead", "customer", "churned"])
    );
    assert_eq!(data["required"], json!(["first_name"]));
    let theirs = app
        .send(Method::GET, "/api/v1/openapi.json", &other, None, &[])
        .await;
    assert!(
        theirs.body["paths"]
            .get("/api/v1/records/contact")
            .is_none(),
        "another tenant's entities are not shown"
    );
}

/// The composite indexes in the database catalog.
async fn index_names(app: &TestApp) -> Vec<String> {
    if app.database_url.starts_with("sqlite:") {
        let pool = open_sqlite(&app.database_url, 1).await;
        let sql =
            "SELECT name FROM sqlite_master WHERE type = 'index' AND substr(name, 1, 3) = 'rc_'";
        sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap()
    } else {
        let pool = sqlx::PgPool::connect(&app.database_url).await.unwrap();
        let sql = "SELECT indexname::text FROM pg_indexes WHERE substr(indexname, 1, 3) = 'rc_'";
        sqlx::query_scalar(sql).fetch_all(&pool).await.unwrap()
    }
}

async fn composite_indexes_are_built_changed_and_checked(app: &TestApp) {
    let mut definition = contact();
    definition["indexes"] =
        json!([{"fields": ["stage", "nope"]}, {"fields": ["stage", "annual_value"]}]);
    let refused = app.post("/api/v1/entities", definition.clone()).await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        refused.fields()["/indexes/0/fields/1"][0]
            .as_str()
            .unwrap()
            .contains("not a field")
    );

    definition["indexes"] = json!([{"fields": ["stage", "annual_value"]}]);
    app.define(definition.clone()).await;
    assert_eq!(index_names(app).await.len(), 1);
    for (stage, value) in [
        ("lead", 5.0),
        ("customer", 10.0),
        ("customer", 30.0),
        ("customer", 20.0),
    ] {
        app.create(
            "contact",
            json!({"first_name": "x", "stage": stage, "annual_value": value}),
        )
        .await;
    }
    let page = app
        .get("/api/v1/records/contact?filter=stage%20eq%20%27customer%27&sort=-annual_value")
        .await;
    let values: Vec<f64> = page.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["data"]["annual_value"].as_f64().unwrap())
        .collect();
    assert_eq!(values, [30.0, 20.0, 10.0]);

    // Retyping a field rebuilds the indexes over it; removing the index drops it.
    definition["fields"][4]["type"] = json!("integer");
    let retyped = app
        .put("/api/v1/entities/contact", definition.clone())
        .await;
    assert_eq!(retyped.status, StatusCode::OK, "{:?}", retyped.body);
    let changes = retyped.body["changes"].as_array().unwrap();
    assert!(
        changes.contains(
            &json!({"change": "composite_index_added", "fields": ["stage", "annual_value"]})
        ),
        "{changes:?}"
    );
    assert_eq!(index_names(app).await.len(), 1);
    definition["indexes"] = json!([]);
    assert_eq!(
        app.put("/api/v1/entities/contact", definition).await.status,
        StatusCode::OK
    );
    assert!(index_names(app).await.is_empty());
}

/// Reads outside a transaction take a definition found current in the last second as current
/// (one query fewer per read); a change made by this server is seen at once (the
/// `adding_a_field…` test filters on a field right after adding it). A change made elsewhere —
/// another host on the same database, with a cache of its own — reaches writes at once, since a
/// write reads the entity's version in its transaction, and reads within about a second.
async fn a_definition_changed_by_another_host_reaches_writes_at_once_and_reads_within_a_second(
    app: &TestApp,
) {
    app.define(contact()).await;
    app.create("contact", json!({"first_name": "Ann"})).await;
    let reply = app
        .get("/api/v1/records/contact?filter=first_name%20eq%20%27Ann%27")
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let elsewhere = rapport::metadata::Metadata::new(app.store.clone());
    let mut definition = contact();
    definition["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "score", "type": "integer"}));
    elsewhere
        .update(&app.admin().await, "contact", &definition, false)
        .await
        .unwrap();
    let reply = app
        .post(
            "/api/v1/records/contact",
            json!({"data": {"first_name": "Bob", "score": 7}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let started = std::time::Instant::now();
    loop {
        let reply = app
            .get("/api/v1/records/contact?filter=score%20eq%207")
            .await;
        if reply.status == StatusCode::OK {
            let data = reply.body["data"].as_array().unwrap();
            assert_eq!(data.len(), 1);
            assert_eq!(data[0]["data"]["first_name"], "Bob");
            break;
        }
        // Until then, the read knows the definition without the field.
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.body);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "reads still do not know the field added elsewhere: {:?}",
            reply.body
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
