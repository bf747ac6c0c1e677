//! Packs end to end, in a real server on SQLite and PostgreSQL: the bundled `core` pack through
//! the API; a test pack (`tests/fixtures/packs/fleet-v1`, `fleet-v2`) installed from
//! directories, upgraded with a diff first and its records migrated, removed with and without
//! purge; bad packs refused with every problem and nothing changed.

use std::path::PathBuf;
use std::time::Duration;

use rapport::packs::{PackError, Report, Source};
use rapport_tests::{TestApp, on_both_backends};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(
    core_installs_with_its_plugins_workflows_and_sample_data,
    a_pack_upgrades_with_a_diff_first_and_migrates_its_records,
    removing_keeps_the_data_unless_purged_and_waits_for_dependents,
    a_bad_pack_is_refused_with_every_problem_and_nothing_changes,
    an_upgrade_that_drops_an_entity_and_a_plugin_keeps_the_data,
    names_the_tenant_uses_are_not_taken_over,
);

fn fixture(name: &str) -> Source {
    Source::Directory(
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures/packs")
            .join(name),
    )
}

async fn install_core(app: &TestApp, sample: bool) -> Value {
    let reply = app
        .post(
            &format!("/api/v1/packs/core/install?sample={sample}"),
            Value::Null,
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    reply.body
}

async fn install(app: &TestApp, source: &Source, sample: bool) -> Report {
    app.packs
        .install(&app.admin().await, source, sample, false)
        .await
        .unwrap_or_else(|error| panic!("{error}: {error:?}"))
}

fn changes<'r>(report: &'r Report, pack: &str) -> &'r rapport::packs::PackChanges {
    report
        .packs
        .iter()
        .find(|changes| changes.id == pack)
        .unwrap_or_else(|| panic!("no changes of `{pack}` in {report:#?}"))
}

/// Installs the pack in `dir`, without sample data.
async fn install_dir(app: &TestApp, dir: &std::path::Path) -> Result<Report, PackError> {
    app.packs
        .install(
            &app.admin().await,
            &Source::Directory(dir.to_path_buf()),
            false,
            false,
        )
        .await
}

/// The problems of a refused pack operation.
fn refusal(result: Result<Report, PackError>) -> Vec<rapport::metadata::validation::Problem> {
    match result {
        Err(PackError::Refused(problems)) => problems,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

async fn records(app: &TestApp, entity: &str, query: &str) -> Vec<Value> {
    let reply = app
        .get(&format!("/api/v1/records/{entity}?limit=500{query}"))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.body["data"].as_array().unwrap().clone()
}

fn field_names(definition: &Value) -> Vec<String> {
    definition["fields"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|field| field["active"] != false)
        .map(|field| field["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn core_installs_with_its_plugins_workflows_and_sample_data(app: &TestApp) {
    let listed = app.get("/api/v1/packs").await;
    assert_eq!(listed.status, StatusCode::OK, "{:?}", listed.body);
    let core = listed.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|pack| pack["id"] == "core")
        .cloned()
        .expect("core is bundled");
    assert_eq!(core["status"], "available");
    // What it brings, and what its plugins may do, before installing.
    let shown = app.get("/api/v1/packs/core").await.body;
    for entity in [
        "account",
        "lead",
        "opportunity",
        "campaign",
        "invoice",
        "payment",
    ] {
        assert!(
            shown["entities"]
                .as_array()
                .unwrap()
                .contains(&json!(entity)),
            "{entity}: {shown:#?}"
        );
    }
    let rfm = shown["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|plugin| plugin["crate"] == "rfm-score")
        .expect("rfm-score is a plugin of core");
    assert!(
        rfm["capabilities"]
            .as_array()
            .unwrap()
            .contains(&json!("read order")),
        "{rfm}"
    );

    // Members may look, not install.
    let member = app.member("mia").await;
    let reply = app
        .send(
            reqwest::Method::POST,
            "/api/v1/packs/core/install",
            &member,
            None,
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN, "{:?}", reply.body);

    // A dry run says what would change and changes nothing.
    let dry = app
        .post(
            "/api/v1/packs/core/install?dry_run=true&sample=true",
            Value::Null,
        )
        .await;
    assert_eq!(dry.status, StatusCode::OK, "{:?}", dry.body);
    assert_eq!(dry.body["dry_run"], true);
    let planned = &dry.body["packs"][0];
    assert_eq!(planned["id"], "core");
    assert!(
        planned["sample_records"].as_u64().unwrap() > 100,
        "{planned}"
    );
    assert_eq!(app.get("/api/v1/entities").await.body["data"], json!([]));
    assert_eq!(app.get("/api/v1/plugins").await.body["data"], json!([]));

    let report = install_core(app, true).await;
    let installed = &report["packs"][0];
    assert_eq!(installed["to_version"], "1.1.0");
    let entities = app.get("/api/v1/entities").await.body["data"].clone();
    assert_eq!(
        entities.as_array().unwrap().len(),
        installed["entities"].as_array().unwrap().len()
    );
    let plugins = app.get("/api/v1/plugins").await.body["data"].clone();
    for id in [
        "credit-terms",
        "complaint-sla",
        "rfm-score",
        "lifecycle-stage",
        "churn-risk",
    ] {
        let plugin = plugins
            .as_array()
            .unwrap()
            .iter()
            .find(|plugin| plugin["id"] == id)
            .unwrap_or_else(|| panic!("{id} installed: {plugins:#?}"));
        assert_eq!(plugin["enabled"], true, "{plugin}");
    }
    let workflows = app.get("/api/v1/workflows").await.body["data"].clone();
    let names: Vec<&str> = workflows
        .as_array()
        .unwrap()
        .iter()
        .map(|workflow| workflow["name"].as_str().unwrap())
        .collect();
    for name in [
        "poor_payment_alert",
        "complaint_sla",
        "birthday_greeting",
        "convert_lead",
    ] {
        assert!(names.contains(&name), "{name}: {names:?}");
    }
    // The sample records went through the plugins: terms, SLA due dates, RFM value tiers.
    let accounts = records(app, "account", "").await;
    assert_eq!(accounts.len(), 12);
    assert!(
        accounts
            .iter()
            .all(|account| account["data"]["payment_terms"].is_string()),
        "credit-terms ran on every sample account"
    );
    let tiers: std::collections::BTreeSet<String> = accounts
        .iter()
        .filter_map(|account| account["data"]["value_tier"].as_str().map(str::to_owned))
        .collect();
    assert!(tiers.len() >= 2, "RFM tiers differ: {tiers:?}");
    let orders = records(app, "order", "").await;
    assert!(!orders.is_empty());
    assert!(
        records(app, "case", "")
            .await
            .iter()
            .all(|case| case["data"]["sla_due_at"].is_string()),
        "complaint-sla ran on every sample case"
    );
    // The weighted forecast: each opportunity's amount × its win probability (sales-metrics).
    let opportunities = records(app, "opportunity", "").await;
    assert!(!opportunities.is_empty());
    for opportunity in &opportunities {
        let data = &opportunity["data"];
        let (Some(amount), Some(probability)) = (
            data["amount"]["amount"].as_f64(),
            data["probability"].as_f64(),
        ) else {
            continue;
        };
        let weighted = data["weighted_amount"]["amount"].as_f64().unwrap();
        assert!(
            (weighted - amount * probability / 100.0).abs() < 0.01,
            "{data:#}"
        );
    }
    // Churn risk is computed for every sample account; segmentation on demand gives each a
    // segment, and the core dashboards compute over the sample data.
    let accounts = records(app, "account", "").await;
    assert!(
        accounts
            .iter()
            .all(|account| (0..=100).contains(&account["data"]["churn_risk"].as_i64().unwrap())),
        "churn-risk ran on every sample account"
    );
    let started = app
        .post("/api/v1/workflows/segment_customers_now/runs", json!({}))
        .await;
    assert!(started.status.is_success(), "{:?}", started.body);
    let run_id = started.body["id"].as_str().unwrap().to_owned();
    let run = wait_for(
        app,
        &format!("/api/v1/workflows/segment_customers_now/runs/{run_id}"),
        |run| run["status"] == "succeeded" || run["status"] == "failed",
    )
    .await;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let segments = run["steps"][0]["output"]["segments"].as_array().unwrap();
    assert_eq!(segments.len(), 4, "{run:#}");
    let sized: u64 = segments.iter().map(|s| s["size"].as_u64().unwrap()).sum();
    assert_eq!(sized as usize, accounts.len(), "{run:#}");
    let segmented = records(app, "account", "&filter=segment%20is%20not%20null").await;
    assert_eq!(segmented.len(), accounts.len());
    for dashboard in [
        "manager_daily",
        "sales_pipeline",
        "service",
        "marketing",
        "customer_value",
    ] {
        let data = app
            .get(&format!("/api/v1/dashboards/{dashboard}/data"))
            .await;
        assert_eq!(data.status, StatusCode::OK, "{dashboard}: {:?}", data.body);
        for widget in data.body["widgets"].as_array().unwrap() {
            assert!(widget.get("error").is_none(), "{dashboard}: {widget:#}");
        }
    }
    // A campaign's cost per response follows its members' responses (a roll-up).
    let campaign = records(app, "campaign", "&filter=budget%20is%20not%20null").await[0].clone();
    let campaign_id = campaign["id"].as_str().unwrap();
    let responses = campaign["data"]["responses"].as_u64().unwrap();
    let contact = records(app, "contact", "").await[0]["id"].clone();
    app.create(
        "campaign_member",
        json!({"campaign": campaign_id, "contact": contact, "status": "responded"}),
    )
    .await;
    let campaign = app
        .get(&format!("/api/v1/records/campaign/{campaign_id}"))
        .await
        .body;
    let data = &campaign["data"];
    assert_eq!(data["responses"].as_u64(), Some(responses + 1), "{data:#}");
    let cost = data["actual_cost"]["amount"]
        .as_f64()
        .or(data["budget"]["amount"].as_f64())
        .unwrap();
    let per_response = data["cost_per_response"]["amount"].as_f64().unwrap();
    assert!(
        (per_response - cost / (responses + 1) as f64).abs() < 0.01,
        "{data:#}"
    );
    // Sample records start no runs of the pack's own workflows.
    for name in ["complaint_sla", "lead_assignment"] {
        let runs = app.get(&format!("/api/v1/workflows/{name}/runs")).await;
        assert_eq!(runs.body["data"], json!([]), "{name}");
    }
    // The pack's workflows run on new records: converting a lead makes an account, a contact
    // and an opportunity.
    let lead = app
        .create(
            "lead",
            json!({"first_name": "Ada", "last_name": "Byron", "company": "Analytical Engines",
                   "email": "ada@analytical.example", "status": "qualified"}),
        )
        .await;
    let started = app
        .post(
            "/api/v1/workflows/convert_lead/runs",
            json!({"record": lead}),
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{:?}", started.body);
    let converted = wait_for(app, &format!("/api/v1/records/lead/{lead}"), |lead| {
        lead["data"]["status"] == "converted"
    })
    .await;
    let account = converted["data"]["converted_account"].as_str().unwrap();
    let account = app.get(&format!("/api/v1/records/account/{account}")).await;
    assert_eq!(account.body["data"]["name"], "Analytical Engines");

    let shown = app.get("/api/v1/packs/core").await.body;
    assert_eq!(shown["status"], "installed");
    assert_eq!(shown["installed_version"], "1.1.0");
    let again = app.post("/api/v1/packs/core/install", Value::Null).await;
    assert_eq!(again.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        again.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("upgrade it instead"),
        "{:?}",
        again.body
    );
    let unknown = app.post("/api/v1/packs/nothing/install", Value::Null).await;
    assert_eq!(unknown.status, StatusCode::NOT_FOUND);
}

/// Polls a GET until `done` holds (workflows run in the background).
async fn wait_for(app: &TestApp, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    for _ in 0..200 {
        let reply = app.get(path).await;
        if reply.status == StatusCode::OK && done(&reply.body) {
            return reply.body;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never got there: {:?}", app.get(path).await.body);
}

async fn a_pack_upgrades_with_a_diff_first_and_migrates_its_records(app: &TestApp) {
    install_core(app, false).await;
    let report = install(app, &fixture("fleet-v1"), true).await;
    assert_eq!(changes(&report, "fleet").sample_records, 3);
    // An administrator customizes the pack's entity: a label and a field of their own.
    let mut vehicle = app.get("/api/v1/entities/vehicle").await.body;
    vehicle.as_object_mut().unwrap().remove("updated_at");
    vehicle["fields"][0]["label"] = json!("Licence plate");
    vehicle["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "notes", "type": "long_text"}));
    let reply = app.put("/api/v1/entities/vehicle", vehicle).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let noted = records(app, "vehicle", "&filter=plate%20eq%20'AB-101'").await[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let reply = app
        .patch(
            &format!("/api/v1/records/vehicle/{noted}"),
            json!({"data": {"notes": "dent in the back door"}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);

    // The administrator disabled the pack's plugin, and has a workflow of their own on
    // vehicles: the upgrade keeps the one disabled and starts no run of the other.
    let reply = app
        .post("/api/v1/plugins/fleet-minimal/disable", Value::Null)
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let reply = app
        .post(
            "/api/v1/workflows",
            json!({"name": "vehicle_touched",
                   "trigger": {"type": "record", "entity": "vehicle", "events": ["updated"]},
                   "steps": [{"id": "later", "type": "wait", "for": "1h"}]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);

    // The diff first: nothing changes.
    let admin = app.admin().await;
    let dry = app
        .packs
        .upgrade(&admin, "fleet", &fixture("fleet-v2"), true)
        .await
        .unwrap_or_else(|error| panic!("{error:?}"));
    let diff = changes(&dry, "fleet");
    assert_eq!(diff.from_version.as_deref(), Some("1.0.0"));
    assert_eq!(diff.to_version.as_deref(), Some("2.0.0"));
    let entity = |name: &str| {
        diff.entities
            .iter()
            .find(|entity| entity.entity == name)
            .unwrap_or_else(|| panic!("{name} in {diff:#?}"))
    };
    assert_eq!(entity("vehicle").change, "changed");
    assert_eq!(entity("vehicle").fields_added, ["vin"]);
    assert_eq!(entity("vehicle").fields_removed, ["colour"]);
    let retyped = serde_json::to_value(&entity("vehicle").changes).unwrap();
    assert!(
        retyped
            .as_array()
            .unwrap()
            .iter()
            .any(|change| change["change"] == "field_retyped" && change["field"] == "mileage"),
        "{retyped:#}"
    );
    assert_eq!(entity("rental").change, "added");
    assert_eq!(entity("account").change, "extended");
    assert_eq!(entity("account").fields_added, ["fleet_contact"]);
    let plugin = &diff.plugins[0];
    assert_eq!(
        (plugin.id.as_str(), plugin.change),
        ("fleet-minimal", "upgraded")
    );
    assert_eq!(plugin.capabilities_added, ["read rental"]);
    let item = |items: &[rapport::packs::ItemChange], name: &str| {
        items
            .iter()
            .find(|item| item.name == name)
            .map(|item| item.change)
    };
    assert_eq!(item(&diff.workflows, "vehicle_broken"), Some("updated"));
    assert_eq!(item(&diff.workflows, "vehicle_returned"), Some("removed"));
    assert_eq!(item(&diff.views, "available_vehicles"), Some("added"));
    assert_eq!(item(&diff.views, "free_vehicles"), Some("removed"));
    assert_eq!(item(&diff.roles, "fleet_manager"), Some("updated"));
    assert_eq!(diff.migrated_records, 2, "two vehicles were `free`");
    assert_eq!(
        app.get("/api/v1/entities/rental").await.status,
        StatusCode::NOT_FOUND,
        "a dry run changes nothing"
    );
    assert_eq!(
        app.get("/api/v1/packs/fleet").await.body["installed_version"],
        "1.0.0"
    );
    assert_eq!(
        records(app, "vehicle", "&filter=status%20eq%20'free'")
            .await
            .len(),
        2
    );

    let upgraded = app
        .packs
        .upgrade(&admin, "fleet", &fixture("fleet-v2"), false)
        .await
        .unwrap_or_else(|error| panic!("{error:?}"));
    assert_eq!(changes(&upgraded, "fleet").migrated_records, 2);
    let vehicle = app.get("/api/v1/entities/vehicle").await.body;
    let fields = field_names(&vehicle);
    for expected in ["plate", "status", "mileage", "vin", "notes"] {
        assert!(
            fields.contains(&expected.to_owned()),
            "{expected}: {fields:?}"
        );
    }
    assert!(!fields.contains(&"colour".to_owned()), "{fields:?}");
    assert_eq!(
        vehicle["fields"][0]["label"], "Licence plate",
        "the administrator's label stays: the pack did not change that field"
    );
    let vehicles = records(app, "vehicle", "&sort=plate").await;
    let statuses: Vec<&str> = vehicles
        .iter()
        .map(|v| v["data"]["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["available", "available", "rented"]);
    assert_eq!(vehicles[0]["data"]["notes"], "dent in the back door");
    assert_eq!(vehicles[1]["data"]["mileage"].as_f64(), Some(56000.0));
    let account = app.get("/api/v1/entities/account").await.body;
    let fields = field_names(&account);
    assert!(
        fields.contains(&"fleet_size".to_owned()) && fields.contains(&"fleet_contact".to_owned()),
        "{fields:?}"
    );
    // The new view runs with its parameter, as a quoted literal.
    let view = app
        .get("/api/v1/views/available_vehicles/records?model=Kangoo")
        .await;
    assert_eq!(view.status, StatusCode::OK, "{:?}", view.body);
    assert_eq!(view.body["data"].as_array().unwrap().len(), 2);
    let injected = app
        .get("/api/v1/views/available_vehicles/records?model=x'%20or%20plate%20ne%20'")
        .await;
    assert_eq!(injected.body["data"], json!([]), "{:?}", injected.body);
    let missing = app.get("/api/v1/views/available_vehicles/records").await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        app.get("/api/v1/views/free_vehicles").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/api/v1/workflows/vehicle_returned").await.status,
        StatusCode::NOT_FOUND
    );
    let plugin = app.get("/api/v1/plugins/fleet-minimal").await.body;
    assert_eq!(plugin["version"], "0.2.0");
    assert_eq!(
        plugin["enabled"], false,
        "still disabled by the administrator"
    );
    assert_eq!(
        app.get("/api/v1/workflows/vehicle_touched/runs").await.body["data"],
        json!([]),
        "records the upgrade migrated start no runs"
    );
    assert_eq!(
        app.get("/api/v1/packs/fleet").await.body["installed_version"],
        "2.0.0"
    );
    // The upgraded workflow runs.
    let reply = app
        .patch(
            &format!("/api/v1/records/vehicle/{noted}"),
            json!({"data": {"status": "broken"}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let notes = wait_for(app, "/api/v1/notifications", |notes| {
        notes["data"].as_array().is_some_and(|n| !n.is_empty())
    })
    .await;
    assert_eq!(
        notes["data"][0]["message"],
        "Vehicle AB-101 (Kangoo) is broken"
    );
    // An older version is not installed over a newer one.
    let problems = refusal(
        app.packs
            .upgrade(&admin, "fleet", &fixture("fleet-v1"), false)
            .await,
    );
    assert!(
        problems[0].message.contains("not downgraded"),
        "{problems:?}"
    );
}

async fn removing_keeps_the_data_unless_purged_and_waits_for_dependents(app: &TestApp) {
    install_core(app, true).await;
    install(app, &fixture("fleet-v1"), true).await;
    let blocked = app.delete("/api/v1/packs/core").await;
    assert_eq!(
        blocked.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        blocked.body
    );
    assert!(
        blocked.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("`fleet` depends on `core`"),
        "{:?}",
        blocked.body
    );

    // Without purge: behaviour goes, data stays.
    let removed = app.delete("/api/v1/packs/fleet").await;
    assert_eq!(removed.status, StatusCode::OK, "{:?}", removed.body);
    assert_eq!(records(app, "vehicle", "").await.len(), 3);
    assert_eq!(
        app.get("/api/v1/workflows/vehicle_broken").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/api/v1/plugins/fleet-minimal").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/api/v1/packs/fleet").await.body["status"],
        "removed"
    );
    // Installed again, it takes its entity and records back.
    let again = install(app, &fixture("fleet-v1"), false).await;
    let vehicle = changes(&again, "fleet")
        .entities
        .iter()
        .find(|entity| entity.entity == "vehicle")
        .unwrap();
    assert_eq!(vehicle.change, "adopted");
    assert_eq!(records(app, "vehicle", "").await.len(), 3);

    // With purge: its entities, their records and its fields elsewhere go.
    let purged = app.delete("/api/v1/packs/fleet?purge=true").await;
    assert_eq!(purged.status, StatusCode::OK, "{:?}", purged.body);
    assert_eq!(
        app.get("/api/v1/entities/vehicle").await.status,
        StatusCode::NOT_FOUND
    );
    let account = app.get("/api/v1/entities/account").await.body;
    assert!(
        !account["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|field| field["name"] == "fleet_size"),
        "{account:#}"
    );
    assert_eq!(
        app.get("/api/v1/packs/fleet").await.status,
        StatusCode::NOT_FOUND
    );

    // Removing core keeps the CRM's records, and they stay writable: the computed fields of
    // its removed plugins are deactivated.
    let before = records(app, "account", "").await.len();
    let removed = app.delete("/api/v1/packs/core").await;
    assert_eq!(removed.status, StatusCode::OK, "{:?}", removed.body);
    assert_eq!(records(app, "account", "").await.len(), before);
    assert_eq!(app.get("/api/v1/plugins").await.body["data"], json!([]));
    app.create("account", json!({"name": "After core"})).await;
    let shown = app.get("/api/v1/packs/core").await.body;
    assert_eq!(shown["status"], "removed");
}

async fn a_bad_pack_is_refused_with_every_problem_and_nothing_changes(app: &TestApp) {
    install_core(app, false).await;
    let entities = app.get("/api/v1/entities").await.body;
    let problems = refusal(
        app.packs
            .install(&app.admin().await, &fixture("broken"), true, false)
            .await,
    );
    let text: Vec<String> = problems
        .iter()
        .map(|p| format!("{}: {}", p.path, p.message))
        .collect();
    let has = |needle: &str| text.iter().any(|line| line.contains(needle));
    assert!(
        has("needs `missing-pack` ^2, which is not available"),
        "{text:#?}"
    );
    assert!(
        has(
            "broken/entities/account.json#/name: entity `account` clashes with installed pack `core`"
        ),
        "{text:#?}"
    );
    assert!(has("broken/entities/gadget.json#/fields/0"), "{text:#?}");
    assert!(has("no plugin crate `no-such-plugin`"), "{text:#?}");
    assert!(has("/plugins/1/config"), "{text:#?}");
    assert_eq!(app.get("/api/v1/entities").await.body, entities);
    assert_eq!(
        app.get("/api/v1/packs/broken").await.status,
        StatusCode::NOT_FOUND
    );

    // A problem found only inside the transaction (a workflow naming a field that does not
    // exist) undoes everything the pack did before it.
    let dir = std::env::temp_dir().join(format!("rapport-pack-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(dir.join("workflows")).unwrap();
    std::fs::write(
        dir.join("pack.json"),
        json!({"id": "halfway", "version": "1.0.0", "description": "fails late",
               "entities": ["gizmo.json"], "workflows": ["workflows/bad.json"]})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("gizmo.json"),
        json!({"name": "gizmo", "fields": [{"name": "label", "type": "text"}]}).to_string(),
    )
    .unwrap();
    std::fs::write(
        dir.join("workflows/bad.json"),
        json!({"name": "bad", "trigger": {"type": "record", "entity": "gizmo", "events": ["created"]},
               "steps": [{"id": "s", "type": "set_fields", "values": {"colour": "red"}}]})
        .to_string(),
    )
    .unwrap();
    let problems = refusal(install_dir(app, &dir).await);
    assert!(
        problems
            .iter()
            .any(|p| p.path.starts_with("halfway/workflows/bad.json#/steps/0")),
        "{problems:?}"
    );
    assert_eq!(
        app.get("/api/v1/entities/gizmo").await.status,
        StatusCode::NOT_FOUND
    );
    // A manifest that is not one.
    std::fs::write(
        dir.join("pack.json"),
        json!({"id": "Bad Id", "version": "one", "description": "x", "colour": 1}).to_string(),
    )
    .unwrap();
    let problems = refusal(install_dir(app, &dir).await);
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert!(paths.iter().any(|p| p.ends_with("#/id")), "{paths:?}");
    assert!(paths.iter().any(|p| p.ends_with("#/version")), "{paths:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

async fn an_upgrade_that_drops_an_entity_and_a_plugin_keeps_the_data(app: &TestApp) {
    install_core(app, false).await;
    install(app, &fixture("fleet-v1"), true).await;
    let admin = app.admin().await;
    app.packs
        .upgrade(&admin, "fleet", &fixture("fleet-v2"), false)
        .await
        .unwrap_or_else(|error| panic!("{error:?}"));
    let vehicle = records(app, "vehicle", "").await[0]["id"].clone();
    app.create(
        "rental",
        json!({"vehicle": vehicle, "starts_on": "2026-12-01"}),
    )
    .await;

    // Version 3 no longer has rentals nor its own plugin, and uses core's credit-terms.
    let report = app
        .packs
        .upgrade(&admin, "fleet", &fixture("fleet-v3"), false)
        .await
        .unwrap_or_else(|error| panic!("{error:?}"));
    let fleet = changes(&report, "fleet");
    let rental = fleet
        .entities
        .iter()
        .find(|entity| entity.entity == "rental")
        .expect("rental in the report");
    assert_eq!(rental.change, "dropped");
    let plugin = |id: &str| {
        fleet
            .plugins
            .iter()
            .find(|plugin| plugin.id == id)
            .unwrap_or_else(|| panic!("{id} in {fleet:#?}"))
    };
    assert_eq!(plugin("fleet-minimal").change, "removed");
    assert_eq!(
        plugin("fleet-minimal").capabilities_removed,
        ["read rental"]
    );
    assert_eq!(plugin("credit-terms").change, "unchanged");
    assert_eq!(
        records(app, "rental", "").await.len(),
        1,
        "a dropped entity keeps its records"
    );
    assert_eq!(
        app.get("/api/v1/plugins/fleet-minimal").await.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        app.get("/api/v1/views/available_vehicles").await.status,
        StatusCode::NOT_FOUND
    );
    let shown = app.get("/api/v1/packs/fleet").await.body;
    assert!(
        shown["installed"]["dropped"]["rental"].is_object(),
        "{shown:#}"
    );
    assert!(
        shown["installed"]["plugins"].get("credit-terms").is_none(),
        "core installed credit-terms, not fleet: {shown:#}"
    );

    // A purge deletes what the pack owns, dropped entities included, and nothing of core's.
    let purged = app.delete("/api/v1/packs/fleet?purge=true").await;
    assert_eq!(purged.status, StatusCode::OK, "{:?}", purged.body);
    for entity in ["vehicle", "rental"] {
        assert_eq!(
            app.get(&format!("/api/v1/entities/{entity}")).await.status,
            StatusCode::NOT_FOUND,
            "{entity}"
        );
    }
    let deleted: Vec<&Value> = purged.body["packs"][0]["entities"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|entity| entity["change"] == "deleted")
        .collect();
    assert_eq!(deleted.len(), 2, "{:#}", purged.body);
    assert_eq!(
        app.get("/api/v1/plugins/credit-terms").await.body["enabled"],
        true,
        "core's plugin stays"
    );
}

async fn names_the_tenant_uses_are_not_taken_over(app: &TestApp) {
    install_core(app, false).await;
    // An administrator's own workflow of the same name as one of the pack's.
    app.define(json!({"name": "truck", "fields": [{"name": "plate", "type": "text"}]}))
        .await;
    let reply = app
        .post(
            "/api/v1/workflows",
            json!({"name": "vehicle_broken",
                   "trigger": {"type": "record", "entity": "truck", "events": ["created"]},
                   "steps": [{"id": "tell", "type": "notify", "user": "{{record._owner}}", "message": "truck"}]}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    let problems = refusal(
        app.packs
            .install(&app.admin().await, &fixture("fleet-v1"), false, false)
            .await,
    );
    assert!(
        problems
            .iter()
            .any(|p| p.path == "fleet/workflows/vehicle_broken.json#/name"
                && p.message.contains("already exists in the tenant")),
        "{problems:?}"
    );
    assert_eq!(
        app.delete("/api/v1/workflows/vehicle_broken").await.status,
        StatusCode::OK
    );
    install(app, &fixture("fleet-v1"), false).await;
    // An administrator's own field where version 2 would add one.
    let mut account = app.get("/api/v1/entities/account").await.body;
    account.as_object_mut().unwrap().remove("updated_at");
    account["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "fleet_contact", "type": "text"}));
    let reply = app.put("/api/v1/entities/account", account).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let problems = refusal(
        app.packs
            .upgrade(&app.admin().await, "fleet", &fixture("fleet-v2"), true)
            .await,
    );
    assert!(
        problems
            .iter()
            .any(|p| p.message.contains("already has a field `fleet_contact`")),
        "{problems:?}"
    );
}
