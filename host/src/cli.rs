//! The `rapport` command line: the server, migrations, tenants and users, metadata as code.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::{Args, Parser, Subcommand};
use serde_json::Value;
use tokio::net::TcpListener;

mod plugin;

pub use plugin::PluginCommand;

use crate::api::{self, AppState};
use crate::metadata::MetadataError;
use crate::store::{Durability, Store};
use crate::workflows::WorkflowError;

#[derive(Debug, Parser)]
#[command(
    name = "rapport",
    version,
    about = "Rapport: a CRM host with metadata-defined entities"
)]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct Global {
    /// `sqlite:<path>` (created if missing) or `postgres://user@host/db`.
    #[arg(
        long,
        global = true,
        env = "RAPPORT_DATABASE_URL",
        default_value = "sqlite:data/rapport.db"
    )]
    pub database_url: String,
    /// SQLite durability: `full` survives a power cut, `normal` only a crash of the process.
    #[arg(
        long,
        global = true,
        env = "RAPPORT_DURABILITY",
        value_enum,
        default_value = "full"
    )]
    pub durability: Durability,
    /// Where compiled plugin components are cached (by content hash and engine).
    #[arg(
        long,
        global = true,
        env = "RAPPORT_CACHE_DIR",
        default_value = "data/cache"
    )]
    pub cache_dir: PathBuf,
    /// Where the bundled plugins' components are (built by `scripts/plugins`): packs install
    /// their plugins from here.
    #[arg(
        long,
        global = true,
        env = "RAPPORT_PLUGINS_DIR",
        default_value = "target/plugins"
    )]
    pub plugins_dir: PathBuf,
    /// MiB of the SQLite database file each read connection maps into memory instead of
    /// reading it into its page cache (0 turns it off). An I/O error on a mapped page ends the
    /// process instead of failing one request.
    #[arg(
        long,
        global = true,
        env = "RAPPORT_SQLITE_MMAP_MIB",
        default_value_t = crate::store::READER_MMAP_MIB
    )]
    pub sqlite_mmap_mib: u64,
    /// Log lines as `text` or `json`.
    #[arg(
        long,
        global = true,
        env = "RAPPORT_LOG_FORMAT",
        default_value = "text"
    )]
    pub log_format: LogFormat,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs the HTTP server (migrates the database first).
    Serve(ServeArgs),
    /// Brings the database schema up to date and exits.
    Migrate,
    /// Manages tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Manages users.
    #[command(subcommand)]
    User(UserCommand),
    /// Metadata as code: entity definitions as JSON files.
    #[command(subcommand)]
    Schema(SchemaCommand),
    /// Plugins: scaffold, build, test against a fixture without a server, install.
    #[command(subcommand)]
    Plugin(PluginCommand),
    /// Packs: list, show, install, upgrade and remove bundled packs or pack directories.
    #[command(subcommand)]
    Pack(PackCommand),
}

#[derive(Debug, Subcommand)]
pub enum PackCommand {
    /// The packs this binary bundles and those the tenant has.
    List {
        #[arg(long, env = "RAPPORT_TENANT")]
        tenant: String,
        /// Prints JSON.
        #[arg(long)]
        json: bool,
    },
    /// One pack: what it brings, the capabilities its plugins request, what the tenant has.
    Show {
        /// A bundled pack's id.
        pack: String,
        #[arg(long, env = "RAPPORT_TENANT")]
        tenant: String,
        #[arg(long)]
        json: bool,
    },
    /// Installs a pack (a bundled pack's id, or a pack directory) and the packs it depends on,
    /// in one transaction.
    Install {
        /// A bundled pack's id, or a directory holding a `pack.json`.
        pack: String,
        #[arg(long, env = "RAPPORT_TENANT")]
        tenant: String,
        /// Also installs the packs' sample records.
        #[arg(long)]
        sample: bool,
        /// Shows what would change without changing anything.
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
    /// Upgrades an installed pack to the bundled version (or a pack directory's). Shows the
    /// diff and changes nothing, unless `--yes`: then applies it in one transaction.
    Upgrade {
        /// A bundled pack's id, or a directory holding a `pack.json`.
        pack: String,
        #[arg(long, env = "RAPPORT_TENANT")]
        tenant: String,
        /// Applies the upgrade (after reading its diff).
        #[arg(long)]
        yes: bool,
        #[arg(long)]
        json: bool,
    },
    /// Removes an installed pack; its entities and records stay unless `--purge`.
    Remove {
        pack: String,
        #[arg(long, env = "RAPPORT_TENANT")]
        tenant: String,
        /// Deletes the pack's entities, their records, and the fields it added elsewhere.
        #[arg(long)]
        purge: bool,
        #[arg(long)]
        dry_run: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "RAPPORT_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Creates the `demo` tenant with sample entities and records if missing, and prints an
    /// admin token for it.
    #[arg(long, env = "RAPPORT_DEMO")]
    pub demo: bool,
    /// How long, in seconds, this server holds a workflow run it works on: when a server dies,
    /// another (or this one, restarted) takes its runs over after this time.
    #[arg(long, env = "RAPPORT_WORKFLOW_LEASE", default_value_t = 30.0, value_parser = lease_seconds)]
    pub workflow_lease: f64,
    /// A host webhooks may reach although it is (or resolves to) a loopback, private or
    /// link-local address, e.g. an ERP on the same network; repeat it, or separate hosts with
    /// commas in the variable.
    #[arg(
        long = "webhook-allow-host",
        env = "RAPPORT_WEBHOOK_ALLOW_HOSTS",
        value_delimiter = ','
    )]
    pub webhook_allow_hosts: Vec<String>,
    /// The SMTP relay emails in the outbox are sent through: `smtps://user:pass@host:465`,
    /// `smtp://user:pass@host:587?tls=required` (STARTTLS) or `smtp://host:25`. Without it,
    /// emails stay in the outbox, readable at /api/v1/outbox.
    #[arg(long, env = "RAPPORT_SMTP_URL", hide_env_values = true)]
    pub smtp_url: Option<String>,
    /// The sender of those emails.
    #[arg(
        long,
        env = "RAPPORT_SMTP_FROM",
        default_value = "Rapport <rapport@localhost>"
    )]
    pub smtp_from: String,
    /// Requests per second each API token may send on average; 0 turns the limit off.
    #[arg(long, env = "RAPPORT_RATE_LIMIT", default_value_t = 100)]
    pub rate_limit: u32,
    /// Requests each API token may send at once above that rate.
    #[arg(long, env = "RAPPORT_RATE_BURST", default_value_t = 200)]
    pub rate_burst: u32,
}

fn lease_seconds(text: &str) -> Result<f64, String> {
    let seconds: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number of seconds"))?;
    if (0.1..=3600.0).contains(&seconds) {
        Ok(seconds)
    } else {
        Err(format!(
            "the lease must be between 0.1 and 3600 seconds, not {seconds}"
        ))
    }
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Creates a tenant and its `admin` user; prints the admin's API token.
    Create {
        name: String,
        /// The IANA time zone schedules and date triggers read the wall clock in
        /// (`Europe/Istanbul`); changeable later through `PATCH /api/v1/tenant`.
        #[arg(long, default_value = "UTC", value_parser = time_zone)]
        time_zone: String,
        /// Prints `{"tenant": ..., "token": ...}`.
        #[arg(long)]
        json: bool,
    },
}

fn time_zone(name: &str) -> Result<String, String> {
    crate::workflows::timers::parse_time_zone(name).map(|_| name.to_owned())
}

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Creates a user in a tenant; prints their API token.
    Create {
        tenant: String,
        name: String,
        /// A role the user holds (repeat for several): `administrator`, `member`, or one the
        /// tenant defined (`admin` is short for `administrator`).
        #[arg(long = "role", default_values_t = ["member".to_owned()])]
        roles: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Sets a user's password (for signing in to the console) from the first line of
    /// standard input.
    Password { tenant: String, name: String },
}

#[derive(Debug, Subcommand)]
pub enum SchemaCommand {
    /// Writes every entity definition of a tenant as `<dir>/<entity>.json`, every workflow as
    /// `<dir>/workflows/<workflow>.json`, every role (but the built-in `administrator`) as
    /// `<dir>/roles/<role>.json` and every saved view, report and dashboard as
    /// `<dir>/views/<name>.json`.
    Export {
        dir: PathBuf,
        #[arg(long, env = "RAPPORT_TENANT")]
        tenant: String,
    },
    /// Applies every `<dir>/*.json` entity definition, every `<dir>/workflows/*.json` workflow,
    /// every `<dir>/roles/*.json` role and every `<dir>/views/*.json` view, report or dashboard
    /// in one transaction: shows the changes, then applies them all or none.
    Apply {
        dir: PathBuf,
        #[arg(long, env = "RAPPORT_TENANT")]
        tenant: String,
        /// Shows the changes and conversions without applying them.
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn init_tracing(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RAPPORT_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Command::Plugin(command) = &cli.command {
        if let Some(done) = plugin::run_offline(command) {
            return done;
        }
        if let PluginCommand::Test {
            component,
            event,
            manifest,
            config,
        } = command
        {
            return plugin::test(component, event, manifest.as_deref(), config.as_deref()).await;
        }
    }
    let store = Store::connect_with(
        &cli.global.database_url,
        cli.global.durability,
        cli.global.sqlite_mmap_mib,
    )
    .await
    .with_context(|| {
        format!(
            "cannot open the database `{}`",
            redact(&cli.global.database_url)
        )
    })?;
    // Every command ends by closing the database, as `serve` does on its way out, whether it
    // succeeded or not: SQLite then copies the WAL into the database file and removes it, so
    // that the file alone holds what the command wrote (a copy of it is a backup).
    let done = command(store.clone(), cli).await;
    store.close().await;
    done
}

/// Runs a command that needs the database.
async fn command(store: Store, cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(args) => {
            serve(
                store,
                cli.global.cache_dir.clone(),
                cli.global.plugins_dir.clone(),
                args,
            )
            .await
        }
        Command::Migrate => {
            println!("database is up to date");
            Ok(())
        }
        Command::Tenant(TenantCommand::Create {
            name,
            time_zone,
            json,
        }) => {
            let Some(created) = store.create_tenant(&name, &time_zone).await? else {
                bail!("tenant `{name}` already exists");
            };
            if json {
                println!(
                    "{}",
                    serde_json::json!({"tenant": created.tenant, "token": created.token})
                );
            } else {
                println!(
                    "tenant `{}` created; admin token:\n{}",
                    created.tenant, created.token
                );
            }
            Ok(())
        }
        Command::User(UserCommand::Create {
            tenant,
            name,
            roles,
            json,
        }) => {
            let roles: Vec<String> = roles
                .into_iter()
                .map(|role| match role.as_str() {
                    "admin" => crate::auth::role::ADMINISTRATOR.to_owned(),
                    _ => role,
                })
                .collect();
            let Some(created) = store.create_user(&tenant, &name, &roles).await? else {
                bail!("tenant `{tenant}` does not exist");
            };
            if let Some(tenant_id) = store.tenant_id(&tenant).await? {
                let mut tx = store.begin().await?;
                let detail = serde_json::json!({"by": "cli", "name": name, "roles": roles});
                tx.scoped(&tenant_id)
                    .audit(None, "user.create", Some(&created.user_id), &detail)
                    .await?;
                tx.commit().await?;
            }
            if json {
                println!("{}", serde_json::to_string(&created)?);
            } else {
                println!(
                    "user `{}` ({}) created in `{}`; token:\n{}",
                    created.user,
                    created.roles.join(", "),
                    tenant,
                    created.token
                );
            }
            Ok(())
        }
        Command::User(UserCommand::Password { tenant, name }) => {
            let mut password = String::new();
            std::io::stdin().read_line(&mut password)?;
            let password = password.trim_end_matches(['\r', '\n']);
            crate::auth::check_password(password).map_err(anyhow::Error::msg)?;
            let Some(tenant_id) = store.tenant_id(&tenant).await? else {
                bail!("tenant `{tenant}` does not exist");
            };
            let mut tx = store.begin().await?;
            let mut scoped = tx.scoped(&tenant_id);
            let Some(user) = scoped.user_by_name(&name).await? else {
                bail!("tenant `{tenant}` has no user `{name}`");
            };
            let hash = crate::auth::hash_password(password);
            scoped.set_password(&user.id, Some(&hash)).await?;
            scoped
                .audit(
                    None,
                    "user.password",
                    Some(&user.id),
                    &serde_json::json!({"by": "cli"}),
                )
                .await?;
            tx.commit().await?;
            println!("password of `{name}` in `{tenant}` set");
            Ok(())
        }
        Command::Schema(command) => schema(store, command).await,
        Command::Pack(command) => pack(store, &cli.global, command).await,
        Command::Plugin(PluginCommand::Install {
            manifest,
            component,
            tenant,
            enable,
        }) => install_plugin(store, &manifest, &component, &tenant, enable).await,
        Command::Plugin(_) => unreachable!("handled without a database"),
    }
}

async fn install_plugin(
    store: Store,
    manifest: &Path,
    component: &Path,
    tenant: &str,
    enable: bool,
) -> anyhow::Result<()> {
    let principal = store
        .principal_of(tenant, "admin")
        .await?
        .with_context(|| format!("tenant `{tenant}` (or its `admin` user) does not exist"))?;
    let manifest: Value = serde_json::from_str(
        &std::fs::read_to_string(manifest)
            .with_context(|| format!("cannot read `{}`", manifest.display()))?,
    )
    .with_context(|| format!("`{}` is not JSON", manifest.display()))?;
    let bytes = std::fs::read(component)
        .with_context(|| format!("cannot read `{}`", component.display()))?;
    let state = AppState::new(store, None)?;
    let installed = match state.plugins.install(&principal, &manifest, &bytes).await {
        Ok(installed) => installed,
        Err(crate::plugins::PluginError::InvalidManifest(problems)) => {
            for problem in problems {
                eprintln!("manifest{}: {}", problem.path, problem.message);
            }
            bail!("the manifest is invalid; nothing was installed");
        }
        Err(error) => bail!("{error}; nothing was installed"),
    };
    let id = &installed.plugin.id;
    match &installed.previous_version {
        Some(previous) => println!("upgraded `{id}` {previous} → {}", installed.plugin.version),
        None => println!("installed `{id}` {}", installed.plugin.version),
    }
    for added in &installed.capabilities_added {
        println!("  + {added}");
    }
    for removed in &installed.capabilities_removed {
        println!("  - {removed}");
    }
    if enable {
        state.plugins.set_enabled(&principal, id, true).await?;
        println!("enabled in `{tenant}`");
    }
    let detail = serde_json::json!({"by": "cli", "version": installed.plugin.version,
        "previous_version": installed.previous_version, "enabled": enable});
    audit_cli(&state.store, &principal, "plugin.create", id, detail).await
}

/// Writes a change made from the command line to the tenant's audit trail, as the user the
/// command acted as.
async fn audit_cli(
    store: &Store,
    principal: &crate::auth::Principal,
    action: &str,
    target: &str,
    detail: Value,
) -> anyhow::Result<()> {
    let mut tx = store.begin().await?;
    tx.scoped(&principal.tenant)
        .audit(Some(principal.user.as_str()), action, Some(target), &detail)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// Hides the password of a database URL.
fn redact(url: &str) -> String {
    match (url.find("://"), url.find('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.find(':') {
                Some(colon) => format!(
                    "{}{}:***{}",
                    &url[..scheme + 3],
                    &credentials[..colon],
                    &url[at..]
                ),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

async fn serve(
    store: Store,
    cache_dir: PathBuf,
    plugins_dir: PathBuf,
    args: ServeArgs,
) -> anyhow::Result<()> {
    let mut state = AppState::new(store, Some(cache_dir.join("plugins")))?;
    state.packs.plugins_dir = plugins_dir;
    state.engine.lease = std::time::Duration::from_secs_f64(args.workflow_lease);
    state.limiter = crate::api::guard::Limiter::new(Some(crate::api::guard::RateLimit {
        per_second: args.rate_limit,
        burst: args.rate_burst,
    }));
    state.webhooks = crate::webhooks::Webhooks::new(
        state.store.clone(),
        crate::webhooks::Guard::new(args.webhook_allow_hosts.clone()),
    );
    if let Some(url) = &args.smtp_url {
        let mailer = crate::webhooks::delivery::Mailer::new(url, &args.smtp_from)
            .map_err(anyhow::Error::msg)?;
        tracing::info!(relay = ?mailer, "emails in the outbox are delivered by SMTP");
        state.webhooks = state.webhooks.clone().with_mailer(mailer);
    }
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    if args.demo {
        let access = crate::demo::ensure(&state)
            .await
            .context("cannot create the demo tenant")?;
        let token = &access.token;
        println!("Rapport is running at http://{address}");
        println!(
            "console: http://{address}/ (company `demo`, user `admin`, password `{}`)",
            access.password
        );
        println!("demo tenant admin token: {token}");
        println!(
            "try: curl -H 'Authorization: Bearer {token}' http://{address}/api/v1/records/contact?limit=5"
        );
    }
    tracing::info!(%address, "listening");
    api::serve(listener, state, shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let interrupt = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {},
        () = terminate => {},
    }
    tracing::info!("shutting down: finishing in-flight requests");
}

async fn schema(store: Store, command: SchemaCommand) -> anyhow::Result<()> {
    let state = AppState::new(store, None)?;
    match command {
        SchemaCommand::Export { dir, tenant } => {
            let tenant_id = state
                .store
                .tenant_id(&tenant)
                .await?
                .with_context(|| format!("tenant `{tenant}` does not exist"))?;
            std::fs::create_dir_all(&dir)
                .with_context(|| format!("cannot create `{}`", dir.display()))?;
            let entities = state.metadata.list(&tenant_id).await?;
            for entity in &entities {
                let name = entity.definition["name"].as_str().unwrap_or("entity");
                let path = dir.join(format!("{name}.json"));
                std::fs::write(
                    &path,
                    serde_json::to_string_pretty(&entity.definition)? + "\n",
                )
                .with_context(|| format!("cannot write `{}`", path.display()))?;
                println!("wrote {}", path.display());
            }
            println!("{} entities exported", entities.len());
            let workflows = state.workflows.list(&tenant_id).await?;
            if !workflows.is_empty() {
                let dir = dir.join("workflows");
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create `{}`", dir.display()))?;
                for workflow in &workflows {
                    let mut definition = workflow.definition.clone();
                    definition["enabled"] = Value::Bool(workflow.enabled);
                    let name = definition["name"].as_str().unwrap_or("workflow").to_owned();
                    let path = dir.join(format!("{name}.json"));
                    std::fs::write(&path, serde_json::to_string_pretty(&definition)? + "\n")
                        .with_context(|| format!("cannot write `{}`", path.display()))?;
                    println!("wrote {}", path.display());
                }
            }
            println!("{} workflows exported", workflows.len());
            let roles = {
                let mut conn = state.store.reader().await?;
                conn.scoped(&tenant_id).roles().await?
            };
            let roles: Vec<_> = roles
                .into_iter()
                .filter(|role| role.name != crate::auth::role::ADMINISTRATOR)
                .collect();
            if !roles.is_empty() {
                let dir = dir.join("roles");
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create `{}`", dir.display()))?;
                for role in &roles {
                    let definition: Value = serde_json::from_str(&role.definition)?;
                    let path = dir.join(format!("{}.json", role.name));
                    std::fs::write(&path, serde_json::to_string_pretty(&definition)? + "\n")
                        .with_context(|| format!("cannot write `{}`", path.display()))?;
                    println!("wrote {}", path.display());
                }
            }
            println!("{} roles exported", roles.len());
            // Saved views, reports and dashboards (told apart by `kind`).
            let views = {
                let mut conn = state.store.reader().await?;
                conn.scoped(&tenant_id).views().await?
            };
            if !views.is_empty() {
                let dir = dir.join("views");
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("cannot create `{}`", dir.display()))?;
                for view in &views {
                    let definition: Value = serde_json::from_str(&view.definition)?;
                    let path = dir.join(format!("{}.json", view.name));
                    std::fs::write(&path, serde_json::to_string_pretty(&definition)? + "\n")
                        .with_context(|| format!("cannot write `{}`", path.display()))?;
                    println!("wrote {}", path.display());
                }
            }
            println!("{} views, reports and dashboards exported", views.len());
            Ok(())
        }
        SchemaCommand::Apply {
            dir,
            tenant,
            dry_run,
        } => {
            let tenant_id = state
                .store
                .tenant_id(&tenant)
                .await?
                .with_context(|| format!("tenant `{tenant}` does not exist"))?;
            let files = read_definitions(&dir)?;
            let workflow_dir = dir.join("workflows");
            let workflow_files = if workflow_dir.is_dir() {
                read_definitions(&workflow_dir)?
            } else {
                Vec::new()
            };
            let role_dir = dir.join("roles");
            let mut roles = Vec::new();
            if role_dir.is_dir() {
                for (file, json) in read_definitions(&role_dir)? {
                    let role = crate::auth::RoleDefinition::parse(&json).map_err(|problems| {
                        anyhow::anyhow!(
                            "a role is invalid:{}\nnothing was changed",
                            problems
                                .iter()
                                .map(|p| format!("\n  roles/{file}#{}: {}", p.path, p.message))
                                .collect::<String>()
                        )
                    })?;
                    if role.name == crate::auth::role::ADMINISTRATOR {
                        bail!(
                            "roles/{file}: `administrator` is built in and cannot be changed\nnothing was changed"
                        );
                    }
                    roles.push(role);
                }
            }
            let view_dir = dir.join("views");
            let mut views = Vec::new();
            if view_dir.is_dir() {
                for (file, json) in read_definitions(&view_dir)? {
                    let name = crate::analytics::parse_any(&json).map_err(|problems| {
                        anyhow::anyhow!(
                            "a view, report or dashboard is invalid:{}\nnothing was changed",
                            problems
                                .iter()
                                .map(|p| format!("\n  views/{file}#{}: {}", p.path, p.message))
                                .collect::<String>()
                        )
                    })?;
                    views.push((file, name, json));
                }
            }
            // Entities and workflows in one transaction: a workflow may use a field this apply
            // adds, and a bad workflow leaves the entities unchanged too.
            let mut tx = state.store.begin().await?;
            let applied = state
                .metadata
                .apply_all_in(&mut tx, &tenant_id, None, &files)
                .await;
            let applied = match applied {
                Ok(applied) => {
                    let workflows = state
                        .workflows
                        .apply_in(&mut tx, &tenant_id, "schema-apply", &workflow_files)
                        .await;
                    match workflows {
                        Ok(workflows) => Ok((applied, workflows)),
                        Err(WorkflowError::Invalid(problems)) => bail!(
                            "a workflow definition is invalid:{}\nnothing was changed",
                            problems
                                .iter()
                                .map(|p| format!("\n  workflows/{}: {}", p.path, p.message))
                                .collect::<String>()
                        ),
                        Err(error) => bail!("{error}\nnothing was changed"),
                    }
                }
                Err(error) => Err(error),
            };
            // Roles, in the same transaction.
            let mut role_changes = Vec::new();
            if applied.is_ok() {
                let mut scoped = tx.scoped(&tenant_id);
                for role in &roles {
                    let existing = scoped.role(&role.name).await?;
                    let verb = match &existing {
                        None => "create",
                        Some(stored)
                            if serde_json::from_str::<Value>(&stored.definition).ok()
                                == Some(role.to_json()) =>
                        {
                            "unchanged"
                        }
                        Some(_) => "update",
                    };
                    let pack = existing.as_ref().and_then(|stored| stored.pack_id.clone());
                    scoped
                        .put_role(&role.name, &role.to_json().to_string(), pack.as_deref())
                        .await?;
                    role_changes.push(format!("{} {verb}", role.name));
                }
            }
            // Views, reports and dashboards, in the same transaction, checked against the
            // entities as this apply leaves them.
            let mut view_changes = Vec::new();
            if applied.is_ok() && !views.is_empty() {
                let reports: std::collections::BTreeMap<String, Value> = views
                    .iter()
                    .filter(|(_, _, json)| {
                        crate::analytics::Kind::of(json) == crate::analytics::Kind::Report
                    })
                    .map(|(_, name, json)| (name.clone(), json.clone()))
                    .collect();
                let _uncached = state.metadata.uncached(&tenant_id);
                let mut scoped = tx.scoped(&tenant_id);
                for (file, name, json) in &views {
                    crate::analytics::check_in(
                        &state.records,
                        &state.metadata,
                        &mut scoped,
                        json,
                        &reports,
                    )
                    .await
                    .map_err(|problems| {
                        anyhow::anyhow!(
                            "a view, report or dashboard does not fit the entities:{}\nnothing was changed",
                            problems
                                .iter()
                                .map(|p| format!("\n  views/{file}#{}: {}", p.path, p.message))
                                .collect::<String>()
                        )
                    })?;
                    let existing = scoped.view(name).await?;
                    let verb = match &existing {
                        None => "create",
                        Some(stored)
                            if serde_json::from_str::<Value>(&stored.definition)
                                .ok()
                                .as_ref()
                                == Some(json) =>
                        {
                            "unchanged"
                        }
                        Some(_) => "update",
                    };
                    let pack = existing.as_ref().and_then(|stored| stored.pack_id.clone());
                    scoped
                        .put_view(name, &json.to_string(), pack.as_deref())
                        .await?;
                    view_changes.push(format!(
                        "{} {name} {verb}",
                        crate::analytics::Kind::of(json).noun()
                    ));
                }
            }
            if let Ok((entities, workflows)) = &applied
                && !dry_run
            {
                let detail = serde_json::json!({
                    "by": "cli",
                    "dir": dir.display().to_string(),
                    "entities": entities.iter().map(|e| &e.entity).collect::<Vec<_>>(),
                    "workflows": workflows
                        .iter()
                        .map(|(w, verb)| format!("{} {verb}", w.definition["name"].as_str().unwrap_or_default()))
                        .collect::<Vec<_>>(),
                    "roles": role_changes,
                    "views": view_changes,
                });
                tx.scoped(&tenant_id)
                    .audit(None, "schema.apply", Some(&tenant), &detail)
                    .await?;
                tx.commit().await?;
                state.metadata.applied(&tenant_id);
                state.workflows.applied(&tenant_id);
            }
            match applied {
                Ok((applied, workflows)) => {
                    for change in &role_changes {
                        let (name, verb) = change.split_once(' ').unwrap_or((change, ""));
                        println!("role {name}: {verb}");
                    }
                    for change in &view_changes {
                        let mut parts = change.splitn(3, ' ');
                        let (kind, name, verb) = (
                            parts.next().unwrap_or_default(),
                            parts.next().unwrap_or_default(),
                            parts.next().unwrap_or_default(),
                        );
                        println!("{kind} {name}: {verb}");
                    }
                    for (workflow, verb) in &workflows {
                        println!(
                            "workflow {}: {verb} (version {})",
                            workflow.definition["name"].as_str().unwrap_or_default(),
                            workflow.version
                        );
                    }
                    for entity in &applied {
                        let verb = if entity.created {
                            "create"
                        } else if entity.changes.is_empty() {
                            "unchanged"
                        } else {
                            "update"
                        };
                        println!("{}: {verb} (version {})", entity.entity, entity.version);
                        for change in &entity.changes {
                            println!("  {}", serde_json::to_string(change)?);
                        }
                        for conversion in &entity.conversions {
                            println!(
                                "  converts {} values of `{}`",
                                conversion.records_with_value, conversion.field
                            );
                        }
                    }
                    println!(
                        "{}",
                        if dry_run {
                            "dry run: nothing was changed"
                        } else {
                            "applied in one transaction"
                        }
                    );
                    Ok(())
                }
                Err(error) => {
                    let details = match &error {
                        MetadataError::Invalid(problems) => problems
                            .iter()
                            .map(|p| format!("\n  {}: {}", p.path, p.message))
                            .collect::<String>(),
                        MetadataError::Unconvertible(checks) => checks
                            .iter()
                            .map(|c| {
                                format!(
                                    "\n  `{}`: {} of {} values do not convert",
                                    c.field, c.failures, c.records_with_value
                                )
                            })
                            .collect(),
                        _ => String::new(),
                    };
                    bail!("{error}{details}\nnothing was changed")
                }
            }
        }
    }
}

fn read_definitions(dir: &Path) -> anyhow::Result<Vec<(String, Value)>> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("cannot read `{}`", dir.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path)
                .with_context(|| format!("cannot read `{}`", path.display()))?;
            let value = serde_json::from_str(&text)
                .with_context(|| format!("`{}` is not valid JSON", path.display()))?;
            Ok((
                path.file_name()
                    .unwrap_or_default()
                    .to_string_lossy()
                    .into_owned(),
                value,
            ))
        })
        .collect()
}

async fn pack(store: Store, global: &Global, command: PackCommand) -> anyhow::Result<()> {
    use crate::packs::{PackError, Report, Source};
    let tenant = match &command {
        PackCommand::List { tenant, .. }
        | PackCommand::Show { tenant, .. }
        | PackCommand::Install { tenant, .. }
        | PackCommand::Upgrade { tenant, .. }
        | PackCommand::Remove { tenant, .. } => tenant.clone(),
    };
    let principal = store
        .principal_of(&tenant, "admin")
        .await?
        .with_context(|| format!("tenant `{tenant}` (or its `admin` user) does not exist"))?;
    // Components compiled here are cached where the server finds them.
    let mut state = AppState::new(store, Some(global.cache_dir.join("plugins")))?;
    state.packs.plugins_dir = global.plugins_dir.clone();
    let source = |pack: &str| {
        let path = Path::new(pack);
        if pack.contains('/') || path.join("pack.json").is_file() {
            Source::Directory(path.to_path_buf())
        } else {
            Source::Bundled(pack.to_owned())
        }
    };
    let report = |result: Result<Report, PackError>, json: bool| -> anyhow::Result<()> {
        match result {
            Ok(report) if json => {
                println!("{}", serde_json::to_string_pretty(&report)?);
                Ok(())
            }
            Ok(report) => {
                print_report(&report);
                Ok(())
            }
            Err(PackError::Refused(problems)) => {
                for problem in &problems {
                    eprintln!("  {}: {}", problem.path, problem.message);
                }
                bail!(
                    "the pack was refused ({} problem{}); nothing was changed",
                    problems.len(),
                    if problems.len() == 1 { "" } else { "s" }
                )
            }
            Err(error) => bail!("{error}; nothing was changed"),
        }
    };
    match command {
        PackCommand::List { json, .. } => {
            let packs = state.packs.list(&principal).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&packs)?);
            } else {
                for pack in packs {
                    println!(
                        "{:<14} {:<10} {:<10} {}",
                        pack.id,
                        pack.available_version.as_deref().unwrap_or("-"),
                        match (pack.status, &pack.installed_version) {
                            ("available", _) => "-".to_owned(),
                            (status, Some(version)) => format!("{status} {version}"),
                            (status, None) => status.to_owned(),
                        },
                        pack.label.as_deref().unwrap_or(&pack.description)
                    );
                }
            }
            Ok(())
        }
        PackCommand::Show { pack, json, .. } => {
            let detail = state.packs.show(&principal, &pack).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&detail)?);
            } else {
                let summary = &detail.summary;
                println!(
                    "{} {} — {}",
                    summary.id,
                    summary.available_version.as_deref().unwrap_or("-"),
                    summary.label.as_deref().unwrap_or_default()
                );
                println!("{}", summary.description);
                for (id, range) in &summary.depends {
                    println!("depends on {id} {range}");
                }
                println!("entities: {}", detail.entities.join(", "));
                for (entity, fields) in &detail.extends {
                    println!("adds to {entity}: {}", fields.join(", "));
                }
                println!("workflows: {}", detail.workflows.join(", "));
                for plugin in &detail.plugins {
                    println!(
                        "plugin {} {} requests: {}",
                        plugin.crate_name,
                        plugin.version,
                        if plugin.capabilities.is_empty() {
                            "nothing".to_owned()
                        } else {
                            plugin.capabilities.join(", ")
                        }
                    );
                }
                if !detail.views.is_empty() {
                    println!("views: {}", detail.views.join(", "));
                }
                if !detail.roles.is_empty() {
                    println!("roles: {}", detail.roles.join(", "));
                }
                println!(
                    "in `{tenant}`: {}",
                    match (&summary.installed_version, summary.status) {
                        (Some(version), status) => format!("{status} ({version})"),
                        (None, _) => "not installed".to_owned(),
                    }
                );
            }
            Ok(())
        }
        PackCommand::Install {
            pack,
            sample,
            dry_run,
            json,
            ..
        } => {
            let result = state
                .packs
                .install(&principal, &source(&pack), sample, dry_run)
                .await;
            if result.is_ok() && !dry_run {
                let detail = serde_json::json!({"by": "cli", "sample": sample});
                audit_cli(&state.store, &principal, "pack.install", &pack, detail).await?;
            }
            report(result, json)
        }
        PackCommand::Upgrade {
            pack, yes, json, ..
        } => {
            let dry_run = !yes;
            let source = source(&pack);
            let id = match &source {
                Source::Bundled(id) => Ok(id.clone()),
                Source::Directory(dir) => crate::packs::catalog::load_dir(dir)
                    .map(|pack| pack.manifest.id)
                    .map_err(PackError::Refused),
            };
            let result = match id {
                Ok(id) => state.packs.upgrade(&principal, &id, &source, dry_run).await,
                Err(error) => Err(error),
            };
            if result.is_ok() && !dry_run {
                let detail = serde_json::json!({"by": "cli"});
                audit_cli(&state.store, &principal, "pack.upgrade", &pack, detail).await?;
            }
            let shown = report(result, json);
            if shown.is_ok() && dry_run && !json {
                println!("run it again with --yes to apply it");
            }
            shown
        }
        PackCommand::Remove {
            pack,
            purge,
            dry_run,
            json,
            ..
        } => {
            let result = state.packs.remove(&principal, &pack, purge, dry_run).await;
            if result.is_ok() && !dry_run {
                let detail = serde_json::json!({"by": "cli", "purge": purge});
                audit_cli(&state.store, &principal, "pack.delete", &pack, detail).await?;
            }
            report(result, json)
        }
    }
}

/// A pack operation's report as lines a person reads.
fn print_report(report: &crate::packs::Report) {
    for pack in &report.packs {
        let versions = match (&pack.from_version, &pack.to_version) {
            (Some(from), Some(to)) => format!("{from} → {to}"),
            (None, Some(to)) => to.clone(),
            (Some(from), None) => from.clone(),
            (None, None) => String::new(),
        };
        println!("{} {} {versions}", report.action, pack.id);
        for entity in &pack.entities {
            println!("  entity {}: {}", entity.entity, entity.change);
            if !entity.fields_added.is_empty() {
                println!("    + fields {}", entity.fields_added.join(", "));
            }
            if !entity.fields_removed.is_empty() {
                println!(
                    "    - fields {} (deactivated, data kept)",
                    entity.fields_removed.join(", ")
                );
            }
            for change in &entity.changes {
                if let Ok(text) = serde_json::to_string(change) {
                    println!("    {text}");
                }
            }
            for conversion in &entity.conversions {
                println!(
                    "    converts {} values of `{}`",
                    conversion.records_with_value, conversion.field
                );
            }
        }
        for plugin in &pack.plugins {
            println!(
                "  plugin {}: {} {}",
                plugin.id,
                plugin.change,
                plugin.to_version.as_deref().unwrap_or_default()
            );
            for added in &plugin.capabilities_added {
                println!("    + may {added}");
            }
            for removed in &plugin.capabilities_removed {
                println!("    - may no longer {removed}");
            }
        }
        for workflow in &pack.workflows {
            println!("  workflow {}: {}", workflow.name, workflow.change);
        }
        for view in &pack.views {
            println!("  view {}: {}", view.name, view.change);
        }
        for role in &pack.roles {
            println!("  role {}: {}", role.name, role.change);
        }
        if pack.sample_records > 0 {
            println!("  {} sample records", pack.sample_records);
        }
        if pack.migrated_records > 0 {
            println!("  {} records migrated", pack.migrated_records);
        }
    }
    println!(
        "{}",
        if report.dry_run {
            "dry run: nothing was changed"
        } else {
            "done, in one transaction"
        }
    );
}
