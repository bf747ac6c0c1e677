//! Test support: a real Rapport server on port 0 with a fresh database (a SQLite file, or a new
//! PostgreSQL database), and an HTTP client for it.

pub mod browser;

use std::path::PathBuf;

use rapport::api::{self, AppState};
use rapport::store::{Durability, Store};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::oneshot;

/// The environment variable that points the tests at PostgreSQL (a database the tests may
/// create databases from, e.g. `postgres://postgres@127.0.0.1:5432/postgres`).
pub const POSTGRES_URL_VAR: &str = "RAPPORT_TEST_POSTGRES_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A running server with one tenant, whose admin token is `token`.
pub struct TestApp {
    pub base: String,
    pub client: reqwest::Client,
    pub token: String,
    pub store: Store,
    pub database_url: String,
    /// The server's pack service (for installing pack directories, which the API does not).
    pub packs: rapport::packs::Packs,
    /// The server's plugin service (to write its recorded runs now, as at shut-down).
    pub plugins: rapport::plugins::Plugins,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    cleanup: Cleanup,
}

enum Cleanup {
    Directory(PathBuf),
    Database { admin_url: String, name: String },
}

/// The PostgreSQL URL for tests, or `None` (with a note on stderr) when it is not set. In CI
/// (`CI=true`) a missing URL is a failure: CI never skips the PostgreSQL half.
pub fn postgres_url() -> Option<String> {
    match std::env::var(POSTGRES_URL_VAR) {
        Ok(url) if !url.is_empty() => Some(url),
        _ if std::env::var("CI").is_ok_and(|ci| ci == "true") => {
            panic!("{POSTGRES_URL_VAR} is not set, and CI must run the PostgreSQL tests")
        }
        _ => {
            eprintln!("SKIPPED on PostgreSQL: set {POSTGRES_URL_VAR} to run this test there too");
            None
        }
    }
}

/// A fresh, empty database for tests that drive the `rapport` binary.
pub struct TestDatabase {
    pub url: String,
    cleanup: Cleanup,
}

impl TestDatabase {
    pub async fn create(backend: Backend) -> Option<Self> {
        let (url, cleanup) = fresh_database(backend).await?;
        Some(Self { url, cleanup })
    }

    pub async fn remove(self) {
        self.cleanup.run().await;
    }
}

impl Cleanup {
    async fn run(&self) {
        match self {
            Cleanup::Directory(dir) => {
                let _ = std::fs::remove_dir_all(dir);
            }
            Cleanup::Database { admin_url, name } => {
                if let Ok(pool) = sqlx::PgPool::connect(admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&pool)
                        .await;
                    pool.close().await;
                }
            }
        }
    }
}

/// The `rapport` binary of this build (the test command builds it first).
pub fn rapport_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target directory");
    let binary = dir.join(format!("rapport{}", std::env::consts::EXE_SUFFIX));
    assert!(
        binary.exists(),
        "`{}` is missing: run `cargo build -p rapport` first",
        binary.display()
    );
    binary
}

/// A fresh, empty database URL for `backend` and how to remove it afterwards.
async fn fresh_database(backend: Backend) -> Option<(String, Cleanup)> {
    let unique = uuid::Uuid::now_v7().simple().to_string();
    match backend {
        Backend::Sqlite => {
            let dir = std::env::temp_dir().join(format!("rapport-test-{unique}"));
            std::fs::create_dir_all(&dir).expect("temp dir");
            let url = format!("sqlite:{}", dir.join("rapport.db").display());
            Some((url, Cleanup::Directory(dir)))
        }
        Backend::Postgres => {
            let admin_url = postgres_url()?;
            let name = format!("rapport_test_{unique}");
            let pool = sqlx::PgPool::connect(&admin_url)
                .await
                .expect("connect to PostgreSQL");
            sqlx::query(&format!("CREATE DATABASE {name}"))
                .execute(&pool)
                .await
                .expect("create test database");
            pool.close().await;
            let base = admin_url
                .rsplit_once('/')
                .map_or(admin_url.as_str(), |(base, _)| base);
            Some((
                format!("{base}/{name}"),
                Cleanup::Database { admin_url, name },
            ))
        }
    }
}

/// A pool on a SQLite database that a test reads directly. SQLite's allocator is set once per
/// process, before SQLite's first use (`store::sqlite_malloc`); this sets it first, as the
/// server does, whichever test of the process opens SQLite first.
pub async fn open_sqlite(url: &str, connections: u32) -> sqlx::SqlitePool {
    rapport::store::sqlite_malloc::use_mimalloc();
    sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(connections)
        .connect(url)
        .await
        .expect("open the SQLite database")
}

/// Starts a server on a fresh database, with one tenant `acme`. `None` when the backend is not
/// available here (PostgreSQL outside CI without its URL).
pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    spawn_app_with(backend, |_| {}).await
}

/// [`spawn_app`], with the server's state adjusted by `configure` before it starts (an SMTP
/// relay, say).
pub async fn spawn_app_with(
    backend: Backend,
    configure: impl FnOnce(&mut AppState),
) -> Option<TestApp> {
    let (database_url, cleanup) = fresh_database(backend).await?;
    let store = Store::connect(&database_url, Durability::Normal)
        .await
        .expect("open the test database");
    let token = store
        .create_tenant("acme", "UTC")
        .await
        .expect("create tenant")
        .expect("new tenant")
        .token;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind port 0");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (shutdown, signal) = oneshot::channel::<()>();
    let mut state = AppState::new(store.clone(), None).expect("the server state");
    // Tests receive webhooks on loopback: the operator's allow-list lets that one address in.
    state.webhooks = rapport::webhooks::Webhooks::new(
        store.clone(),
        rapport::webhooks::Guard::new(["127.0.0.1".to_owned()]),
    );
    state.packs.plugins_dir = plugins_dir();
    // Tests send requests faster than any person: the rate limit has its own test.
    state.limiter = rapport::api::guard::Limiter::new(None);
    configure(&mut state);
    let packs = state.packs.clone();
    let plugins = state.plugins.clone();
    let server = tokio::spawn(async move {
        api::serve(listener, state, async {
            let _ = signal.await;
        })
        .await
        .expect("server runs");
    });
    Some(TestApp {
        base,
        client: reqwest::Client::new(),
        token,
        store,
        database_url,
        packs,
        plugins,
        shutdown: Some(shutdown),
        server: Some(server),
        cleanup,
    })
}

/// A response: status, headers and JSON body (`Value::Null` when empty).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Reply {
    /// The `error.fields` of an error body.
    pub fn fields(&self) -> &Value {
        &self.body["error"]["fields"]
    }
}

impl TestApp {
    /// Sends a request as `token`, with an optional JSON body and extra headers.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        token: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(body);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("body");
        let body = if text.is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).unwrap_or(Value::String(text))
        };
        Reply {
            status,
            headers,
            body,
        }
    }

    /// `GET` as the user of `token`.
    pub async fn get_as(&self, token: &str, path: &str) -> Reply {
        self.send(Method::GET, path, token, None, &[]).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(Method::GET, path, &self.token, None, &[]).await
    }

    pub async fn post(&self, path: &str, body: Value) -> Reply {
        self.send(Method::POST, path, &self.token, Some(&body), &[])
            .await
    }

    pub async fn put(&self, path: &str, body: Value) -> Reply {
        self.send(Method::PUT, path, &self.token, Some(&body), &[])
            .await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Reply {
        self.send(Method::PATCH, path, &self.token, Some(&body), &[])
            .await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(Method::DELETE, path, &self.token, None, &[])
            .await
    }

    /// A plugin's runs (`GET /api/v1/plugins/{plugin}/runs?{query}`, newest first) once `done`
    /// holds for them. Runs are recorded in the background, batched (at most every 100 ms), so
    /// a run shows a little after the write that made it; after 5 s the runs are returned as
    /// they are, for the caller's assertion to name them.
    pub async fn plugin_runs(
        &self,
        plugin: &str,
        query: &str,
        done: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let path = format!("/api/v1/plugins/{plugin}/runs?{query}");
        let mut runs = Vec::new();
        for _ in 0..100 {
            let reply = self.get(&path).await;
            assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
            runs = reply.body["data"].as_array().cloned().unwrap_or_default();
            if done(&runs) {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        runs
    }

    /// Creates an entity and asserts it was created.
    pub async fn define(&self, definition: Value) {
        let reply = self.post("/api/v1/entities", definition).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    }

    /// Creates a record and returns its id.
    pub async fn create(&self, entity: &str, data: Value) -> String {
        let reply = self
            .post(
                &format!("/api/v1/records/{entity}"),
                serde_json::json!({ "data": data }),
            )
            .await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        reply.body["id"].as_str().expect("an id").to_owned()
    }

    /// The test tenant's administrator, as the services see them.
    pub async fn admin(&self) -> rapport::auth::Principal {
        self.store
            .principal_for_token_hash(&rapport::auth::hash_token(&self.token))
            .await
            .expect("read the principal")
            .expect("the admin token resolves")
    }

    /// Creates a member (not an administrator) of the test tenant and returns their token.
    pub async fn member(&self, name: &str) -> String {
        self.store
            .create_user("acme", name, &["member".to_owned()])
            .await
            .expect("create user")
            .expect("a new user")
            .token
    }

    /// Creates a user of the test tenant holding `roles`; returns their token and user id.
    pub async fn user_with_roles(&self, name: &str, roles: &[&str]) -> (String, String) {
        let roles: Vec<String> = roles.iter().map(|role| (*role).to_owned()).collect();
        let user = self
            .store
            .create_user("acme", name, &roles)
            .await
            .expect("create user")
            .expect("a new user");
        (user.token, user.user_id)
    }

    /// Creates a member of the test tenant and returns their token and user id.
    pub async fn member_with_id(&self, name: &str) -> (String, String) {
        let user = self
            .store
            .create_user("acme", name, &["member".to_owned()])
            .await
            .expect("create user")
            .expect("a new user");
        (user.token, user.user_id)
    }

    /// Creates another tenant and returns its admin token.
    pub async fn other_tenant(&self, name: &str) -> String {
        self.store
            .create_tenant(name, "UTC")
            .await
            .expect("create tenant")
            .expect("new tenant")
            .token
    }

    /// Stops the server gracefully and removes the database.
    pub async fn stop(mut self) {
        self.shutdown_server().await;
        self.store.close().await;
        self.cleanup.run().await;
    }

    async fn shutdown_server(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            let _ = server.await;
        }
    }
}

/// Generates one `#[tokio::test]` per backend for each named async test function taking a
/// [`TestApp`].
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let app = $crate::spawn_app($crate::Backend::Sqlite).await.expect("SQLite is always available");
                    super::$name(&app).await;
                    app.stop().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(app) = $crate::spawn_app($crate::Backend::Postgres).await else { return };
                    super::$name(&app).await;
                    app.stop().await;
                }
            )*
        }
    };
}

/// The directory of the built plugin components (`scripts/plugins`); `RAPPORT_PLUGINS_DIR`
/// overrides it.
pub fn plugins_dir() -> PathBuf {
    std::env::var_os("RAPPORT_PLUGINS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"))
}

/// The upload body of a bundled plugin: its `manifest.json` and its built component, base64.
pub fn plugin_upload(crate_dir: &str) -> Value {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let manifest_path = root.join(crate_dir).join("manifest.json");
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(&manifest_path)
            .unwrap_or_else(|error| panic!("{}: {error}", manifest_path.display())),
    )
    .expect("manifest JSON");
    serde_json::json!({"manifest": manifest, "component": component_base64(crate_dir)})
}

/// A bundled plugin's built component, base64 (as uploads carry it).
pub fn component_base64(crate_dir: &str) -> String {
    use base64::Engine as _;
    let wasm = plugins_dir().join(format!("{}.wasm", crate_dir.replace('-', "_")));
    let bytes = std::fs::read(&wasm).unwrap_or_else(|error| {
        panic!(
            "{}: {error}; build the plugins first with scripts/plugins",
            wasm.display()
        )
    });
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl TestApp {
    /// Uploads a bundled plugin as the tenant admin, enables it and optionally configures it.
    pub async fn install_plugin(&self, crate_dir: &str, config: Option<Value>) {
        let reply = self.post("/api/v1/plugins", plugin_upload(crate_dir)).await;
        assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
        let id = reply.body["plugin"]["id"]
            .as_str()
            .expect("an id")
            .to_owned();
        if let Some(config) = config {
            let reply = self
                .put(&format!("/api/v1/plugins/{id}/config"), config)
                .await;
            assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
        }
        let reply = self
            .post(&format!("/api/v1/plugins/{id}/enable"), Value::Null)
            .await;
        assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    }

    /// An entity `target` and the `hostile` test plugin set to panic on it: every write to
    /// `target` fails (see [`TestApp::refused_by_plugin`]) and is recorded as a failed run.
    pub async fn install_panicking_plugin(&self) {
        self.define(
            serde_json::json!({"name": "target", "fields": [{"name": "name", "type": "text"}]}),
        )
        .await;
        self.install_plugin("hostile", Some(serde_json::json!({"attack": "panic"})))
            .await;
    }

    /// Creates a `target` record, which the panicking plugin refuses (424, plugin fault).
    pub async fn refused_by_plugin(&self) {
        let refused = self
            .post(
                "/api/v1/records/target",
                serde_json::json!({"data": {"name": "boom"}}),
            )
            .await;
        assert_eq!(
            refused.status,
            StatusCode::FAILED_DEPENDENCY,
            "{:?}",
            refused.body
        );
    }
}
