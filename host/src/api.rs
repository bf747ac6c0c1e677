//! The HTTP API: routes, shared state, and the server loop with graceful shutdown.

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{delete, get, post, put};
use tokio::net::TcpListener;

use crate::auth::PrincipalCache;
use crate::metadata::Metadata;
use crate::plugins::Plugins;
use crate::records::Records;
use crate::store::Store;
use crate::workflows::Workflows;

pub mod analytics;
pub mod entities;
pub mod error;
pub mod extract;
pub mod guard;
pub mod openapi;
pub mod outbox;
pub mod packs;
pub mod plugins;
pub mod records;
pub mod tenant;
pub mod users;
pub mod webhooks;
pub mod workflows;

use error::ApiError;

/// The largest body of a single-record or metadata request.
pub const MAX_BODY: usize = 1024 * 1024;
/// The largest body of a batch request (1,000 records).
pub const MAX_BATCH_BODY: usize = 32 * 1024 * 1024;

/// What every handler shares: one allocation, so that handing it to a request is one reference
/// count (axum clones the state for every extractor that asks for it). Fields are reached
/// through `Deref`; changing one (before serving) copies the services once.
#[derive(Debug, Clone)]
pub struct AppState(Arc<Services>);

impl std::ops::Deref for AppState {
    type Target = Services;

    fn deref(&self) -> &Services {
        &self.0
    }
}

impl std::ops::DerefMut for AppState {
    fn deref_mut(&mut self) -> &mut Services {
        Arc::make_mut(&mut self.0)
    }
}

/// The services of a server.
#[derive(Debug, Clone)]
pub struct Services {
    pub store: Store,
    pub metadata: Arc<Metadata>,
    pub records: Records,
    pub principals: Arc<PrincipalCache>,
    pub plugins: Plugins,
    pub workflows: Workflows,
    /// Webhook endpoints and the guard their deliveries pass (set the operator's allow-list
    /// with [`Webhooks::new`]).
    pub webhooks: crate::webhooks::Webhooks,
    /// How the workflow engine of [`serve`] runs.
    pub engine: crate::workflows::engine::EngineConfig,
    pub packs: crate::packs::Packs,
    pub views: crate::views::Views,
    pub analytics: crate::analytics::Analytics,
    pub users: crate::users::Users,
    /// The per-token rate limit of the API (set with [`guard::Limiter::new`]).
    pub limiter: guard::Limiter,
}

impl AppState {
    /// The state of a server; compiled plugin components are cached under `cache_dir`.
    pub fn new(store: Store, cache_dir: Option<std::path::PathBuf>) -> anyhow::Result<Self> {
        let metadata = Arc::new(Metadata::new(store.clone()));
        let plugins = Plugins::new(store.clone(), cache_dir)?;
        let workflows = Workflows::new(store.clone(), metadata.clone(), plugins.clone());
        let records = Records::new(
            store.clone(),
            metadata.clone(),
            plugins.clone(),
            workflows.clone(),
        );
        let packs = crate::packs::Packs::new(
            store.clone(),
            metadata.clone(),
            records.clone(),
            plugins.clone(),
            workflows.clone(),
        );
        let views = crate::views::Views::new(store.clone(), records.clone());
        let analytics =
            crate::analytics::Analytics::new(store.clone(), metadata.clone(), records.clone());
        let principals: Arc<PrincipalCache> = Arc::default();
        Ok(Self(Arc::new(Services {
            users: crate::users::Users::new(store.clone(), principals.clone()),
            limiter: guard::Limiter::new(Some(guard::RateLimit::default())),
            webhooks: crate::webhooks::Webhooks::new(store.clone(), Default::default()),
            packs,
            views,
            analytics,
            store,
            metadata,
            records,
            principals,
            plugins,
            workflows,
            engine: Default::default(),
        })))
    }
}

pub fn router(state: AppState) -> Router {
    let (reports, report, report_data) = analytics::routes(crate::analytics::Kind::Report);
    let (dashboards, dashboard, dashboard_data) =
        analytics::routes(crate::analytics::Kind::Dashboard);
    let api = Router::new()
        .route("/openapi.json", get(openapi::document))
        .route("/entities", get(entities::list).post(entities::create))
        .route(
            "/entities/{name}",
            get(entities::get)
                .put(entities::update)
                .delete(entities::delete),
        )
        .route(
            "/entities/{name}/fields/{field}",
            delete(entities::purge_field),
        )
        .route(
            "/plugins",
            get(plugins::list)
                .post(plugins::upload)
                .layer(DefaultBodyLimit::max(plugins::MAX_UPLOAD_BODY)),
        )
        .route("/plugins/{id}", get(plugins::show).delete(plugins::remove))
        .route("/plugins/{id}/enable", post(plugins::enable))
        .route("/plugins/{id}/disable", post(plugins::disable))
        .route("/plugins/{id}/config", put(plugins::configure))
        .route("/plugins/{id}/runs", get(plugins::runs))
        .route("/packs", get(packs::list))
        .route("/packs/{id}", get(packs::show).delete(packs::remove))
        .route("/packs/{id}/install", post(packs::install))
        .route("/packs/{id}/upgrade", post(packs::upgrade))
        .route("/views", get(packs::views))
        .route("/views/{name}", get(packs::view))
        .route("/views/{name}/records", get(packs::view_records))
        .route("/reports", reports)
        .route("/reports/{name}", report)
        .route("/reports/{name}/data", report_data)
        .route("/dashboards", dashboards)
        .route("/dashboards/{name}", dashboard)
        .route("/dashboards/{name}/data", dashboard_data)
        .route("/tenant", get(tenant::show).patch(tenant::update))
        .route("/me", get(users::me))
        .route("/users", get(users::list_users).post(users::create_user))
        .route(
            "/users/{id}",
            get(users::get_user).patch(users::update_user),
        )
        .route("/users/{id}/password", put(users::set_password))
        .route("/roles", get(users::list_roles).post(users::create_role))
        .route(
            "/roles/{name}",
            get(users::get_role)
                .put(users::put_role)
                .delete(users::delete_role),
        )
        .route("/teams", get(users::list_teams).post(users::create_team))
        .route(
            "/teams/{name}",
            get(users::get_team)
                .put(users::put_team)
                .delete(users::delete_team),
        )
        .route("/tokens", get(users::list_tokens).post(users::create_token))
        .route("/tokens/{id}", delete(users::revoke_token))
        .route("/sessions", post(users::sign_in))
        .route("/sessions/current", delete(users::sign_out))
        .route("/audit", get(users::audit))
        .route("/outbox", get(outbox::list))
        .route("/outbox/{id}/redeliver", post(webhooks::redeliver))
        .route("/webhooks", get(webhooks::list).post(webhooks::create))
        .route(
            "/webhooks/{name}",
            get(webhooks::get)
                .put(webhooks::update)
                .delete(webhooks::delete),
        )
        .route(
            "/webhooks/{name}/rotate-secret",
            post(webhooks::rotate_secret),
        )
        .route("/webhooks/{name}/deliveries", get(webhooks::deliveries))
        .route("/notifications", get(workflows::notifications))
        .route(
            "/notifications/{id}/read",
            post(workflows::read_notification),
        )
        .route("/workflows", get(workflows::list).post(workflows::create))
        .route(
            "/workflows/{name}",
            get(workflows::get)
                .put(workflows::update)
                .delete(workflows::delete),
        )
        .route("/workflows/{name}/enable", post(workflows::enable))
        .route("/workflows/{name}/disable", post(workflows::disable))
        .route(
            "/workflows/{name}/runs",
            get(workflows::runs).post(workflows::start),
        )
        .route("/workflows/{name}/runs/{id}", get(workflows::run))
        .route("/workflows/{name}/runs/{id}/retry", post(workflows::retry))
        .route("/approvals", get(workflows::approvals))
        .route("/approvals/{id}/approve", post(workflows::approve))
        .route("/approvals/{id}/reject", post(workflows::reject))
        .route(
            "/records/{entity}",
            get(records::list).post(records::create),
        )
        .route(
            "/records/{entity}/batch",
            post(records::create_batch)
                .patch(records::update_batch)
                .layer(DefaultBodyLimit::max(MAX_BATCH_BODY)),
        )
        .route(
            "/records/{entity}/{id}",
            get(records::get)
                .patch(records::update)
                .delete(records::delete),
        )
        .route("/records/{entity}/recompute", post(records::recompute))
        .route("/records/{entity}/aggregate", get(records::aggregate))
        .route("/records/{entity}/{id}/restore", post(records::restore))
        .route("/records/{entity}/{id}/assign", post(records::assign))
        .route("/records/{entity}/{id}/history", get(records::history))
        .route("/records/{entity}/{id}/timeline", get(records::timeline))
        .route("/lookup", get(records::lookup))
        .route(
            "/records/{entity}/{id}/related/{source}",
            get(records::related),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            guard::guard,
        ));
    Router::new()
        .route("/healthz", get(healthz))
        .nest("/api/v1", api)
        .merge(crate::console::routes(state.clone()))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for `{}`", uri.path()))
}

/// Serves until `shutdown` resolves, then finishes in-flight requests and closes the database:
/// every acknowledged write has been committed before its response was sent.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let store = state.store.clone();
    let plugins = state.plugins.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let engine = tokio::spawn(crate::workflows::engine::run(
        state.workflows.clone(),
        state.records.clone(),
        state.engine.clone(),
        async {
            let _ = stopped.await;
        },
    ));
    // Planner statistics follow the records table as it grows (SQLite; checked every minute).
    let statistics = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut analyzed = 0;
            loop {
                match store.refresh_statistics(analyzed).await {
                    Ok(Some(rows)) => {
                        tracing::info!(rows, "planner statistics refreshed");
                        analyzed = rows;
                    }
                    Ok(None) => {}
                    Err(error) => tracing::warn!(%error, "planner statistics not refreshed"),
                }
                tokio::time::sleep(std::time::Duration::from_secs(60)).await;
            }
        })
    };
    let (stop_delivery, delivery_stopped) = tokio::sync::oneshot::channel::<()>();
    let delivery = tokio::spawn(crate::webhooks::delivery::run(
        state.webhooks.clone(),
        async {
            let _ = delivery_stopped.await;
        },
    ));
    let served = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    // The engine finishes the step it is on and deliveries in flight are settled; then the
    // database closes.
    statistics.abort();
    let _ = stop.send(());
    let _ = stop_delivery.send(());
    if let Err(error) = engine.await {
        tracing::error!(%error, "the workflow engine panicked");
    }
    if let Err(error) = delivery.await {
        tracing::error!(%error, "the webhook delivery worker panicked");
    }
    // The plugin runs of the last requests and steps, before the database closes.
    plugins.flush_runs().await;
    store.close().await;
    served
}
