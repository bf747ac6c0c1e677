//! The `rapport` binary: tenants, metadata as code, and a graceful shutdown that loses no
//! acknowledged write.

use std::process::{Command, Output, Stdio};
use std::time::Duration;

use rapport_tests::{Backend, TestDatabase, open_sqlite, rapport_binary};
use serde_json::{Value, json};

fn rapport(database_url: &str, args: &[&str]) -> Output {
    Command::new(rapport_binary())
        .args(args)
        .env("RAPPORT_DATABASE_URL", database_url)
        .env("RAPPORT_LOG", "warn")
        .env("RAPPORT_PLUGINS_DIR", rapport_tests::plugins_dir())
        // Compiled components go to the build's directory, not into the source tree.
        .env(
            "RAPPORT_CACHE_DIR",
            std::env::temp_dir().join("rapport-cli-tests-cache"),
        )
        .output()
        .expect("rapport runs")
}

/// A port nothing listens on, for a server started as a process.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "rapport failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["tenant", "create", "--help"],
        vec!["schema", "apply", "--help"],
        vec!["plugin", "test", "--help"],
        vec!["plugin", "install", "--help"],
        vec!["pack", "--help"],
        vec!["pack", "install", "--help"],
        vec!["pack", "upgrade", "--help"],
        vec!["pack", "remove", "--help"],
    ] {
        let output = Command::new(rapport_binary()).args(&args).output().unwrap();
        let text = stdout(&output);
        assert!(text.contains("Usage:"), "{args:?}: {text}");
    }
    let help = stdout(
        &Command::new(rapport_binary())
            .args(["serve", "--help"])
            .output()
            .unwrap(),
    );
    assert!(
        help.contains("RAPPORT_DATABASE_URL") && help.contains("RAPPORT_LISTEN"),
        "{help}"
    );
}

async fn metadata_as_code(backend: Backend) {
    let Some(database) = TestDatabase::create(backend).await else {
        return;
    };
    let url = database.url.clone();
    let created: Value = serde_json::from_str(&stdout(&rapport(
        &url,
        &["tenant", "create", "acme", "--json"],
    )))
    .unwrap();
    assert_eq!(created["tenant"], "acme");
    assert!(created["token"].as_str().unwrap().starts_with("rpt_"));
    let again = rapport(&url, &["tenant", "create", "acme"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    let source = std::env::temp_dir().join(format!("rapport-schema-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(
        source.join("account.json"),
        json!({"name": "account", "label": "Account", "fields": [
            {"name": "name", "type": "text", "required": true, "indexed": true},
            {"name": "size", "type": "picklist", "options": ["small", "medium", "large"]}]})
        .to_string(),
    )
    .unwrap();
    std::fs::write(
        source.join("contact.json"),
        json!({"name": "contact", "label": "Contact", "fields": [
            {"name": "first_name", "type": "text", "required": true, "max_length": 100},
            {"name": "email", "type": "email", "unique": true},
            {"name": "account", "type": "reference", "entity": "account"}]})
        .to_string(),
    )
    .unwrap();
    let dir = source.to_str().unwrap();
    let dry = stdout(&rapport(
        &url,
        &["schema", "apply", dir, "--tenant", "acme", "--dry-run"],
    ));
    assert!(
        dry.contains("contact: create") && dry.contains("dry run"),
        "{dry}"
    );
    let exported = std::env::temp_dir().join(format!("rapport-export-{}", uuid::Uuid::now_v7()));
    let out = exported.to_str().unwrap();
    assert!(
        stdout(&rapport(
            &url,
            &["schema", "export", out, "--tenant", "acme"]
        ))
        .contains("0 entities"),
        "a dry run applies nothing"
    );

    let applied = stdout(&rapport(
        &url,
        &["schema", "apply", dir, "--tenant", "acme"],
    ));
    assert!(
        applied.contains("account: create") && applied.contains("applied in one transaction"),
        "{applied}"
    );
    let unchanged = stdout(&rapport(
        &url,
        &["schema", "apply", dir, "--tenant", "acme"],
    ));
    assert!(unchanged.contains("contact: unchanged"), "{unchanged}");

    // A change shows its diff; a broken file refuses the whole set.
    let mut contact: Value =
        serde_json::from_str(&std::fs::read_to_string(source.join("contact.json")).unwrap())
            .unwrap();
    contact["fields"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "nickname", "type": "text"}));
    std::fs::write(source.join("contact.json"), contact.to_string()).unwrap();
    std::fs::write(
        source.join("zz_broken.json"),
        r#"{"name": "Broken", "fields": []}"#,
    )
    .unwrap();
    let refused = rapport(&url, &["schema", "apply", dir, "--tenant", "acme"]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("zz_broken.json#/name") && message.contains("nothing was changed"),
        "{message}"
    );
    std::fs::remove_file(source.join("zz_broken.json")).unwrap();
    // Workflows live beside the entities, in `workflows/`; one may use a field added by the
    // same apply, and a broken one refuses the entities' changes too.
    std::fs::create_dir_all(source.join("workflows")).unwrap();
    let workflow = json!({
        "name": "greet", "enabled": true,
        "trigger": {"type": "record", "entity": "contact", "events": ["created"],
                    "condition": "nickname is not null"},
        "retry": {"max_attempts": 2, "backoff_seconds": 2.5},
        "steps": [{"id": "hello", "type": "notify", "user": "{{record._owner}}",
                   "message": "Say hello to {{record.nickname}}"}]
    });
    let mut broken = workflow.clone();
    broken["name"] = json!("broken");
    broken["steps"][0]["message"] = json!("{{record.nick}}");
    std::fs::write(source.join("workflows/greet.json"), workflow.to_string()).unwrap();
    std::fs::write(source.join("workflows/broken.json"), broken.to_string()).unwrap();
    let refused = rapport(&url, &["schema", "apply", dir, "--tenant", "acme"]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("workflows/broken.json#/steps/0/message")
            && message.contains("no field `nick`")
            && message.contains("nothing was changed"),
        "{message}"
    );
    std::fs::remove_file(source.join("workflows/broken.json")).unwrap();
    // Roles live in `roles/`; a bad one refuses everything, the built-in one is not theirs.
    std::fs::create_dir_all(source.join("roles")).unwrap();
    let role = json!({"name": "auditor", "label": "Auditor",
        "entities": {"*": {"read": "all"}, "contact": {"read": "all", "fields": {"email": "none"}}}});
    std::fs::write(source.join("roles/auditor.json"), role.to_string()).unwrap();
    std::fs::write(
        source.join("roles/administrator.json"),
        json!({"name": "administrator"}).to_string(),
    )
    .unwrap();
    let refused = rapport(&url, &["schema", "apply", dir, "--tenant", "acme"]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("built in"), "{message}");
    std::fs::write(
        source.join("roles/administrator.json"),
        json!({"name": "boss", "entities": {"contact": {"read": "most"}}}).to_string(),
    )
    .unwrap();
    let refused = rapport(&url, &["schema", "apply", dir, "--tenant", "acme"]);
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("roles/administrator.json#/entities/contact/read"),
        "{message}"
    );
    std::fs::remove_file(source.join("roles/administrator.json")).unwrap();
    // Reports and dashboards live in `views/`, checked against the entities being applied.
    std::fs::create_dir_all(source.join("views")).unwrap();
    let report = json!({"kind": "report", "name": "by_size", "entity": "account",
                        "group_by": ["size"], "measures": ["count"]});
    std::fs::write(source.join("views/by_size.json"), report.to_string()).unwrap();
    std::fs::write(
        source.join("views/accounts.json"),
        json!({"kind": "dashboard", "name": "accounts",
               "widgets": [{"id": "sizes", "type": "chart", "chart": "pie", "report": "by_size"},
                           {"id": "nicknames", "type": "chart", "query": {"entity": "contact", "group_by": ["nope"]}}]})
        .to_string(),
    )
    .unwrap();
    let refused = rapport(&url, &["schema", "apply", dir, "--tenant", "acme"]);
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(
        message.contains("views/accounts.json") && message.contains("`nope` is not a field"),
        "{message}"
    );
    let dashboard = json!({"kind": "dashboard", "name": "accounts",
        "widgets": [{"id": "sizes", "type": "chart", "chart": "pie", "report": "by_size"}]});
    std::fs::write(source.join("views/accounts.json"), dashboard.to_string()).unwrap();
    let changed = stdout(&rapport(
        &url,
        &["schema", "apply", dir, "--tenant", "acme"],
    ));
    assert!(
        changed.contains("contact: update (version 2)")
            && changed.contains("\"field\":\"nickname\"")
            && changed.contains("workflow greet: create (version 1)")
            && changed.contains("role auditor: create")
            && changed.contains("report by_size: create")
            && changed.contains("dashboard accounts: create"),
        "{changed}"
    );

    stdout(&rapport(
        &url,
        &["schema", "export", out, "--tenant", "acme"],
    ));
    let round_trip: Value =
        serde_json::from_str(&std::fs::read_to_string(exported.join("contact.json")).unwrap())
            .unwrap();
    assert_eq!(round_trip, contact, "export gives back what was applied");
    let round_trip: Value = serde_json::from_str(
        &std::fs::read_to_string(exported.join("workflows/greet.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(round_trip, workflow, "workflows too");
    let round_trip: Value = serde_json::from_str(
        &std::fs::read_to_string(exported.join("roles/auditor.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(round_trip, role, "and roles");
    assert!(exported.join("roles/member.json").exists());
    let round_trip: Value = serde_json::from_str(
        &std::fs::read_to_string(exported.join("views/accounts.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(round_trip, dashboard, "and dashboards");
    assert!(!exported.join("roles/administrator.json").exists());
    let _ = std::fs::remove_dir_all(&source);
    let _ = std::fs::remove_dir_all(&exported);
    database.remove().await;
}

/// `rapport pack`: the bundled `core` and the test pack's directories, with a dry run, an
/// upgrade's diff and a removal that waits for the packs depending on it.
async fn packs_from_the_command_line(backend: Backend) {
    let Some(database) = TestDatabase::create(backend).await else {
        return;
    };
    let url = database.url.clone();
    stdout(&rapport(&url, &["tenant", "create", "acme"]));
    let fixtures = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/packs");
    let listed = stdout(&rapport(&url, &["pack", "list", "--tenant", "acme"]));
    assert!(
        listed.lines().any(|line| line.starts_with("core ")),
        "{listed}"
    );
    let dry = stdout(&rapport(
        &url,
        &["pack", "install", "core", "--tenant", "acme", "--dry-run"],
    ));
    assert!(
        dry.contains("install core 1.1.0")
            && dry.contains("plugin rfm-score: added")
            && dry.contains("dry run: nothing was changed"),
        "{dry}"
    );
    let installed = stdout(&rapport(
        &url,
        &["pack", "install", "core", "--tenant", "acme"],
    ));
    assert!(installed.contains("entity account: added"), "{installed}");
    let v1 = format!("{fixtures}/fleet-v1");
    let v2 = format!("{fixtures}/fleet-v2");
    stdout(&rapport(
        &url,
        &["pack", "install", &v1, "--tenant", "acme", "--sample"],
    ));
    let diff = stdout(&rapport(
        &url,
        &["pack", "upgrade", &v2, "--tenant", "acme"],
    ));
    for expected in [
        "upgrade fleet 1.0.0 → 2.0.0",
        "+ fields vin",
        "- fields colour (deactivated, data kept)",
        "+ may read rental",
        "workflow vehicle_returned: removed",
        "2 records migrated",
        "dry run: nothing was changed",
        "run it again with --yes",
    ] {
        assert!(diff.contains(expected), "{expected}: {diff}");
    }
    let blocked = rapport(&url, &["pack", "remove", "core", "--tenant", "acme"]);
    assert!(!blocked.status.success());
    let message = String::from_utf8_lossy(&blocked.stderr);
    assert!(message.contains("`fleet` depends on `core`"), "{message}");
    let shown = stdout(&rapport(
        &url,
        &["pack", "show", "fleet", "--tenant", "acme"],
    ));
    assert!(shown.contains("installed (1.0.0)"), "{shown}");
    let report: Value = serde_json::from_str(&stdout(&rapport(
        &url,
        &[
            "pack", "upgrade", &v2, "--tenant", "acme", "--yes", "--json",
        ],
    )))
    .unwrap();
    assert_eq!(report["packs"][0]["to_version"], "2.0.0");
    // What the command line changed is in the audit trail; dry runs and refusals are not.
    let store = rapport::store::Store::connect(&url, rapport::store::Durability::Normal)
        .await
        .unwrap();
    let tenant = store.tenant_id("acme").await.unwrap().unwrap();
    let mut conn = store.reader().await.unwrap();
    let entries = conn
        .scoped(&tenant)
        .audit_entries(&Default::default(), 100)
        .await
        .unwrap();
    let actions: Vec<String> = entries
        .iter()
        .rev()
        .map(|e| format!("{} {}", e.action, e.target.clone().unwrap_or_default()))
        .collect();
    assert_eq!(
        actions,
        vec![
            "pack.install core".to_owned(),
            format!("pack.install {v1}"),
            format!("pack.upgrade {v2}"),
        ]
    );
    drop(conn);
    store.close().await;
    database.remove().await;
}

#[tokio::test]
async fn packs_from_the_command_line_on_sqlite() {
    packs_from_the_command_line(Backend::Sqlite).await;
}

#[tokio::test]
async fn packs_from_the_command_line_on_postgres() {
    packs_from_the_command_line(Backend::Postgres).await;
}

#[tokio::test]
async fn metadata_as_code_round_trips_on_sqlite() {
    metadata_as_code(Backend::Sqlite).await;
}

#[tokio::test]
async fn metadata_as_code_round_trips_on_postgres() {
    metadata_as_code(Backend::Postgres).await;
}

/// SIGTERM while clients are writing: the server stops accepting, finishes what it started, and
/// every write it acknowledged is in the database afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_server_without_losing_an_acknowledged_write() {
    let database = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let url = database.url.clone();
    let token: Value = serde_json::from_str(&stdout(&rapport(
        &url,
        &["tenant", "create", "acme", "--json"],
    )))
    .unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    let port = free_port();
    let mut server = tokio::process::Command::new(rapport_binary())
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .env("RAPPORT_DATABASE_URL", &url)
        .env("RAPPORT_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..100 {
        if client.get(format!("{base}/healthz")).send().await.is_ok() {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the server did not start");
    let definition = json!({"name": "note", "fields": [{"name": "n", "type": "integer"}]});
    let created = client
        .post(format!("{base}/api/v1/entities"))
        .bearer_auth(&token)
        .json(&definition)
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);

    let mut writers = Vec::new();
    for writer in 0..8 {
        let (client, base, token) = (client.clone(), base.clone(), token.clone());
        writers.push(tokio::spawn(async move {
            let mut acknowledged = Vec::new();
            for i in 0..10_000 {
                let body = json!({"data": {"n": writer * 100_000 + i}});
                match client
                    .post(format!("{base}/api/v1/records/note"))
                    .bearer_auth(&token)
                    .json(&body)
                    .send()
                    .await
                {
                    Ok(response) if response.status() == 201 => {
                        acknowledged.push(writer * 100_000 + i)
                    }
                    _ => break,
                }
            }
            acknowledged
        }));
    }
    tokio::time::sleep(Duration::from_millis(400)).await;
    let pid = server.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let status = tokio::time::timeout(Duration::from_secs(20), server.wait())
        .await
        .expect("stops in time")
        .unwrap();
    assert!(status.success(), "exit status {status}");
    let mut acknowledged = Vec::new();
    for writer in writers {
        acknowledged.extend(writer.await.unwrap());
    }
    assert!(
        !acknowledged.is_empty(),
        "no write was acknowledged before the signal"
    );

    let pool = open_sqlite(&url, 10).await;
    let stored: Vec<i64> = sqlx::query_scalar("SELECT json_extract(data, '$.n') FROM records")
        .fetch_all(&pool)
        .await
        .unwrap();
    let stored: std::collections::HashSet<i64> = stored.into_iter().collect();
    let lost: Vec<_> = acknowledged
        .iter()
        .filter(|n| !stored.contains(n))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged writes are missing: {lost:?}",
        lost.len()
    );
    pool.close().await;
    database.remove().await;
}

/// A command ends as the server does: it closes the database, and SQLite copies the WAL into
/// the database file and removes it. The file alone (a copy, a backup) holds what the command
/// wrote.
#[tokio::test]
async fn a_command_leaves_what_it_wrote_in_the_database_file() {
    let database = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let url = database.url.clone();
    stdout(&rapport(&url, &["tenant", "create", "acme"]));
    let path = std::path::PathBuf::from(url.strip_prefix("sqlite:").unwrap());
    let wal = path.with_extension("db-wal");
    assert!(
        !wal.exists(),
        "`tenant create` left a WAL of {} bytes",
        std::fs::metadata(&wal).map_or(0, |meta| meta.len())
    );
    let copy = path.with_file_name("copy.db");
    std::fs::copy(&path, &copy).unwrap();
    let pool = open_sqlite(&format!("sqlite:{}", copy.display()), 1).await;
    let (tenants,): (i64,) = sqlx::query_as("SELECT count(*) FROM tenants WHERE name = 'acme'")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(tenants, 1, "the copied database file lacks the new tenant");
    pool.close().await;
    database.remove().await;
}

/// A database written by a build whose per-entity indexes had another shape (here: the
/// `json_extract` indexes before session 10, which the queries' `->>` no longer match) gets them
/// rebuilt by `migrate`, once; indexes no definition asks for are left alone.
#[tokio::test]
async fn migrate_rebuilds_record_indexes_of_an_older_layout() {
    let database = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let url = database.url.clone();
    stdout(&rapport(&url, &["tenant", "create", "acme"]));
    let source = std::env::temp_dir().join(format!("rapport-layout-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&source).unwrap();
    std::fs::write(
        source.join("deal.json"),
        json!({"name": "deal", "fields": [
            {"name": "stage", "type": "picklist", "options": ["open", "won"], "indexed": true},
            {"name": "amount", "type": "decimal"},
            {"name": "code", "type": "text", "unique": true}],
            "indexes": [{"fields": ["stage", "amount"]}]})
        .to_string(),
    )
    .unwrap();
    stdout(&rapport(
        &url,
        &[
            "schema",
            "apply",
            source.to_str().unwrap(),
            "--tenant",
            "acme",
        ],
    ));
    // One connection, so that each statement sees the schema the one before left.
    let pool = open_sqlite(&url, 1).await;
    let indexes = |pool: sqlx::SqlitePool| async move {
        let rows: Vec<(String, String, i64)> = sqlx::query_as(
            "SELECT name, sql, rootpage FROM sqlite_master WHERE type = 'index' AND tbl_name = 'records' \
             AND sql IS NOT NULL ORDER BY name",
        )
        .fetch_all(&pool)
        .await
        .unwrap();
        rows
    };
    let fresh = indexes(pool.clone()).await;
    let names: Vec<&str> = fresh.iter().map(|(name, ..)| name.as_str()).collect();
    assert_eq!(names.len(), 4, "{fresh:?}"); // the entity index, stage, code, (stage, amount)
    let stage = fresh
        .iter()
        .find(|(name, ..)| name.starts_with("rx_") && name.ends_with("_stage"))
        .expect("the stage index")
        .clone();
    assert!(
        stage.1.contains("->>") && stage.1.contains("deleted_at IS NULL"),
        "{}",
        stage.1
    );

    // Turn the stage index back into the old layout, and add an index of the operator's own.
    let entity: i64 = stage.0.split('_').nth(1).unwrap().parse().unwrap();
    sqlx::raw_sql(&format!(
        "DROP INDEX {name}; \
         CREATE INDEX {name} ON records ((json_extract(data, '$.stage')), id) WHERE entity_id = {entity}; \
         CREATE INDEX operators_own ON records (json_extract(data, '$.code'))",
        name = stage.0
    ))
    .execute(&pool)
    .await
    .unwrap();
    let tampered = indexes(pool.clone()).await;

    stdout(&rapport(&url, &["migrate"]));
    let migrated = indexes(pool.clone()).await;
    let find = |rows: &[(String, String, i64)], name: &str| {
        rows.iter()
            .find(|row| row.0 == name)
            .unwrap_or_else(|| panic!("{name} missing"))
            .clone()
    };
    assert_eq!(
        find(&migrated, &stage.0).1,
        stage.1,
        "rebuilt as a fresh build creates it"
    );
    assert_eq!(
        find(&migrated, "operators_own"),
        find(&tampered, "operators_own")
    );
    for (name, sql, page) in &tampered {
        if *name != stage.0 {
            assert_eq!(
                (sql, page),
                (&find(&migrated, name).1, &find(&migrated, name).2),
                "{name} untouched"
            );
        }
    }

    // Nothing left to rebuild: a second migrate leaves every index where it is.
    stdout(&rapport(&url, &["migrate"]));
    assert_eq!(indexes(pool.clone()).await, migrated);
    pool.close().await;
    database.remove().await;
}

fn plugin(args: &[&str]) -> Output {
    Command::new(rapport_binary())
        .args(args)
        .env("RAPPORT_LOG", "warn")
        .output()
        .expect("rapport runs")
}

#[test]
fn plugin_test_runs_a_component_against_a_fixture_without_a_server() {
    let dir = std::env::temp_dir().join(format!("rapport-fixture-{}", uuid::Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let event = dir.join("event.json");
    std::fs::write(
        &event,
        json!({"kind": "hook", "entity": "case", "operation": "create", "stage": "before",
               "record": {"data": {"priority": "urgent"}}, "at": "2026-02-27T08:00:00.000Z"})
        .to_string(),
    )
    .unwrap();
    let plugins = rapport_tests::plugins_dir();
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins/complaint-sla/manifest.json");
    let output = plugin(&[
        "plugin",
        "test",
        plugins.join("complaint_sla.wasm").to_str().unwrap(),
        "--event",
        event.to_str().unwrap(),
        "--manifest",
        manifest.to_str().unwrap(),
    ]);
    let report: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(
        report["result"],
        json!({"outcome": "patch", "patch": {"sla_due_at": "2026-03-01T08:00:00Z"}})
    );
    assert!(report["fuel"].as_u64() > Some(0), "{report}");

    // A component that reads files is refused, naming the imports.
    let output = plugin(&[
        "plugin",
        "test",
        plugins.join("hostile_fs.wasm").to_str().unwrap(),
        "--event",
        event.to_str().unwrap(),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("wasi:filesystem/"), "{stderr}");
    std::fs::remove_dir_all(dir).unwrap();
}

/// `serve --demo` that cannot install the `core` pack (its plugins not built) stops with the
/// reason, and the next start with the plugins installs it: the demo is never left empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_demo_whose_pack_could_not_be_installed_gets_it_on_the_next_start() {
    use tokio::io::AsyncBufReadExt;
    let database = TestDatabase::create(Backend::Sqlite).await.unwrap();
    let url = database.url.clone();
    let empty = std::env::temp_dir().join(format!("rapport-no-plugins-{}", std::process::id()));
    std::fs::create_dir_all(&empty).unwrap();
    let failed = Command::new(rapport_binary())
        .args(["serve", "--demo", "--listen", "127.0.0.1:0"])
        .env("RAPPORT_DATABASE_URL", &url)
        .env("RAPPORT_LOG", "warn")
        .env("RAPPORT_PLUGINS_DIR", &empty)
        .output()
        .unwrap();
    assert!(!failed.status.success());
    let stderr = String::from_utf8_lossy(&failed.stderr);
    assert!(
        stderr.contains("cannot install the `core` pack") && stderr.contains("is missing"),
        "{stderr}"
    );

    let port = free_port();
    let mut server = tokio::process::Command::new(rapport_binary())
        .args(["serve", "--demo", "--listen", &format!("127.0.0.1:{port}")])
        .env("RAPPORT_DATABASE_URL", &url)
        .env("RAPPORT_LOG", "warn")
        .env("RAPPORT_PLUGINS_DIR", rapport_tests::plugins_dir())
        .env(
            "RAPPORT_CACHE_DIR",
            std::env::temp_dir().join("rapport-cli-tests-cache"),
        )
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let token = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = lines.next_line().await.unwrap() {
            if let Some(token) = line.strip_prefix("demo tenant admin token: ") {
                return token.to_owned();
            }
        }
        panic!("the server ended without printing the demo token");
    })
    .await
    .expect("the demo starts in time");
    let client = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");
    let get = |path: String| {
        let (client, token, url) = (client.clone(), token.clone(), format!("{base}{path}"));
        async move {
            let reply = client.get(url).bearer_auth(token).send().await.unwrap();
            assert_eq!(reply.status(), 200, "{path}");
            reply.json::<Value>().await.unwrap()
        }
    };
    let entities = get("/api/v1/entities".into()).await;
    let names: Vec<&str> = entities["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|entity| entity["name"].as_str())
        .collect();
    assert!(names.contains(&"contact"), "{names:?}");
    let contacts = get("/api/v1/records/contact?limit=5".into()).await;
    assert!(
        !contacts["data"].as_array().unwrap().is_empty(),
        "the sample records are there"
    );
    server.kill().await.unwrap();
    std::fs::remove_dir_all(empty).ok();
}
