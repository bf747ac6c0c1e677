//! `rapport plugin`: scaffold a plugin crate, build it, run it against a fixture event without a
//! server, and install it into a tenant.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Subcommand;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::plugins::host::{HostCall, HostState};
use crate::plugins::manifest::{Capabilities, Limits, Manifest};
use crate::plugins::runtime::{
    ComputeRequest, FieldError, HostError, Operation, Outcome, Record, RecordEvent, Runtime, Stage,
};

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Creates a plugin crate that builds: `Cargo.toml`, `.cargo/config.toml`, `manifest.json`,
    /// `src/lib.rs`.
    New {
        /// The plugin's id (lower-case letters, digits, dashes); also the crate's directory.
        name: String,
        /// Where to create it (default: `./<name>`).
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The `rapport-sdk` crate to depend on (default: `plugins/sdk` of this repository).
        #[arg(long, env = "RAPPORT_SDK")]
        sdk: Option<PathBuf>,
    },
    /// Builds a plugin crate as a component: `cargo build --release --target
    /// wasm32-unknown-unknown`, linked by `wasm-component-ld` (it ships with rustc).
    Build {
        #[arg(default_value = ".")]
        dir: PathBuf,
    },
    /// Runs a component against a fixture event, without a server: prints its result, the fuel
    /// it used and its time.
    Test {
        component: PathBuf,
        /// The fixture: `{"entity", "operation", "stage", "record": {...}, "previous", "records"}`
        /// (see docs/PLUGINS.md).
        #[arg(long)]
        event: PathBuf,
        /// The manifest (its limits, capabilities and default configuration apply).
        #[arg(long)]
        manifest: Option<PathBuf>,
        /// A configuration (JSON object) instead of the manifest's default.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Installs or upgrades a plugin in a tenant (as its `admin`), like `POST /api/v1/plugins`.
    Install {
        manifest: PathBuf,
        component: PathBuf,
        #[arg(long, env = "RAPPORT_TENANT")]
        tenant: String,
        /// Also enables it.
        #[arg(long)]
        enable: bool,
    },
}

/// Commands that need no database.
pub fn run_offline(command: &PluginCommand) -> Option<anyhow::Result<()>> {
    match command {
        PluginCommand::New { name, dir, sdk } => {
            Some(scaffold(name, dir.as_deref(), sdk.as_deref()))
        }
        PluginCommand::Build { dir } => Some(build(dir)),
        PluginCommand::Test { .. } | PluginCommand::Install { .. } => None,
    }
}

fn scaffold(name: &str, dir: Option<&Path>, sdk: Option<&Path>) -> anyhow::Result<()> {
    let valid = name.len() >= 3
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !valid {
        bail!(
            "`{name}` is not a plugin id: use 3 to 64 lower-case letters, digits and dashes, starting with a letter"
        );
    }
    let dir = dir.map_or_else(|| PathBuf::from(name), Path::to_path_buf);
    if dir.exists() {
        bail!("`{}` already exists", dir.display());
    }
    let sdk = match sdk {
        Some(sdk) => sdk.to_path_buf(),
        None => PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins/sdk"),
    };
    let sdk = sdk
        .canonicalize()
        .with_context(|| format!("the SDK is not at `{}`: pass --sdk", sdk.display()))?;
    std::fs::create_dir_all(dir.join("src"))
        .with_context(|| format!("cannot create `{}`", dir.display()))?;
    std::fs::write(
        dir.join("Cargo.toml"),
        format!(
            r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
rapport-sdk = {{ path = "{sdk}" }}
serde_json = "1"

# A hook runs on every record write: optimise for speed, one codegen unit, abort on panic.
[profile.release]
opt-level = 3
lto = true
codegen-units = 1
strip = true
panic = "abort"

# Not part of an enclosing workspace.
[workspace]
"#,
            sdk = sdk.display()
        ),
    )?;
    std::fs::create_dir_all(dir.join(".cargo"))?;
    std::fs::write(
        dir.join(".cargo/config.toml"),
        "# `cargo build --release --target wasm32-unknown-unknown` links a component (what\n\
         # `rapport plugin build` does).\n\
         [target.wasm32-unknown-unknown]\n\
         linker = \"wasm-component-ld\"\n",
    )?;
    std::fs::write(
        dir.join("manifest.json"),
        serde_json::to_string_pretty(&json!({
            "id": name,
            "version": "0.1.0",
            "contract": "0.1.0",
            "description": "Describe what the plugin does.",
            "provides": {"hooks": [{"entity": "contact", "stage": "before", "operations": ["create", "update"]}]},
            "capabilities": {"read": [], "write": [], "outbox": []},
            "limits": {"fuel": 10_000_000, "memory_mb": 16, "timeout_ms": 100},
            "config_schema": {"type": "object", "properties": {}},
            "default_config": {}
        }))? + "\n",
    )?;
    std::fs::write(
        dir.join("src/lib.rs"),
        format!(
            r#"//! `{name}`: a Rapport plugin.

use rapport_sdk::{{Event, Outcome, Plugin}};

pub struct {type_name};

impl Plugin for {type_name} {{
    /// A `before` hook on contacts (see manifest.json): patch the record before it is stored.
    fn hook(event: Event) -> Result<Outcome, String> {{
        let name = event.record.get_str("first_name").unwrap_or("there");
        rapport_sdk::log::info(&format!("hello, {{name}}"));
        Ok(Outcome::Proceed)
    }}
}}

rapport_sdk::plugin!({type_name});

#[cfg(test)]
mod tests {{
    #[test]
    fn the_logic_can_be_unit_tested_natively() {{
        assert_eq!(rapport_sdk::CONTRACT, "0.1.0");
        let _ = rapport_sdk::json!({{}});
    }}
}}
"#,
            type_name = type_name(name),
        ),
    )?;
    println!(
        "created {dir}: edit src/lib.rs and manifest.json, then\n  rapport plugin build {dir}\n  rapport plugin test {dir}/target/wasm32-unknown-unknown/release/{crate_name}.wasm --event event.json --manifest {dir}/manifest.json",
        dir = dir.display(),
        crate_name = name.replace('-', "_"),
    );
    Ok(())
}

fn type_name(id: &str) -> String {
    id.split('-')
        .map(|part| {
            let mut chars = part.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// Links a `wasm32-unknown-unknown` cdylib straight into a component: `wasm-component-ld` ships
/// with rustc (it is `wasm32-wasip2`'s linker). That target links no WASI, so the component
/// imports only the `rapport:plugin` interfaces, and each invocation links fewer imports.
const LINKER_CONFIG: &str = r#"target.wasm32-unknown-unknown.linker="wasm-component-ld""#;

fn build(dir: &Path) -> anyhow::Result<()> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.exists() {
        bail!("`{}` has no Cargo.toml", dir.display());
    }
    let status = Process::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args([
            "build",
            "--release",
            "--target",
            "wasm32-unknown-unknown",
            "--config",
            LINKER_CONFIG,
            "--manifest-path",
        ])
        .arg(&manifest)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        bail!(
            "the build failed (is the target installed? `rustup target add wasm32-unknown-unknown`)"
        );
    }
    Ok(())
}

/// A fixture for `rapport plugin test`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Fixture {
    /// `hook` (default), `validator`, `compute` or `step`.
    #[serde(default = "default_kind")]
    kind: String,
    #[serde(default)]
    entity: String,
    #[serde(default)]
    operation: Option<String>,
    #[serde(default)]
    stage: Option<String>,
    #[serde(default)]
    record: Option<FixtureRecord>,
    #[serde(default)]
    previous: Option<FixtureRecord>,
    #[serde(default)]
    changed: Option<Vec<String>>,
    #[serde(default)]
    at: Option<String>,
    /// For `compute`: the function; for `step`: the step.
    #[serde(default)]
    function: Option<String>,
    /// For `compute`: the field being computed (default: the function's name).
    #[serde(default)]
    field: Option<String>,
    #[serde(default)]
    input: Option<Value>,
    /// Records the plugin can read, by entity (`records.get` by id, `records.query` returns
    /// them all: filters are not evaluated here).
    #[serde(default)]
    records: BTreeMap<String, Vec<FixtureRecord>>,
}

fn default_kind() -> String {
    "hook".into()
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct FixtureRecord {
    #[serde(default)]
    id: String,
    #[serde(default)]
    version: i64,
    #[serde(default)]
    data: serde_json::Map<String, Value>,
}

impl FixtureRecord {
    fn to_record(&self, entity: &str) -> Record {
        Record {
            entity: entity.to_owned(),
            id: self.id.clone(),
            version: self.version,
            data: Value::Object(self.data.clone()).to_string(),
        }
    }
}

fn read_json(path: &Path) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read `{}`", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("`{}` is not JSON", path.display()))
}

/// Runs `rapport plugin test`.
pub async fn test(
    component: &Path,
    event: &Path,
    manifest: Option<&Path>,
    config: Option<&Path>,
) -> anyhow::Result<()> {
    let fixture: Fixture = serde_json::from_value(read_json(event)?)
        .with_context(|| format!("`{}` is not a fixture", event.display()))?;
    let manifest = match manifest {
        Some(path) => Some(Manifest::parse(&read_json(path)?).map_err(|problems| {
            anyhow::anyhow!(
                "the manifest is invalid:\n{}",
                problems
                    .iter()
                    .map(|p| format!("  {}: {}", p.path, p.message))
                    .collect::<Vec<_>>()
                    .join("\n")
            )
        })?),
        None => None,
    };
    let config = match (config, &manifest) {
        (Some(path), _) => read_json(path)?,
        (None, Some(manifest)) => manifest.default_config.clone().unwrap_or_else(|| json!({})),
        (None, None) => json!({}),
    };
    if let Some(manifest) = &manifest {
        manifest.check_config(&config).map_err(|problems| {
            anyhow::anyhow!("the configuration does not fit the manifest: {problems:?}")
        })?;
    }
    let limits = manifest.as_ref().map_or(Limits::MAX, Manifest::limits);
    let capabilities = manifest
        .as_ref()
        .map_or_else(Capabilities::default, |m| m.capabilities.clone());
    let bytes = std::fs::read(component)
        .with_context(|| format!("cannot read `{}`", component.display()))?;
    let runtime = Runtime::new(None).map_err(|error| anyhow::anyhow!("{error:#}"))?;
    let loaded = runtime.load(&bytes)?;

    // Record access is served from the fixture; writes are echoed back and reported.
    let (calls, mut requests) = mpsc::channel(1);
    let fixtures = fixture.records.clone();
    let served = tokio::spawn(async move {
        let mut writes = Vec::new();
        while let Some(call) = requests.recv().await {
            match call {
                HostCall::Get { entity, id, reply } => {
                    let found = fixtures
                        .get(&entity)
                        .and_then(|records| records.iter().find(|r| r.id == id))
                        .map(|r| r.to_record(&entity));
                    let _ = reply.send(Ok(found));
                }
                HostCall::Query {
                    entity,
                    limit,
                    reply,
                    ..
                } => {
                    let found = fixtures
                        .get(&entity)
                        .map(|records| {
                            records
                                .iter()
                                .take(limit as usize)
                                .map(|r| r.to_record(&entity))
                                .collect()
                        })
                        .unwrap_or_default();
                    let _ = reply.send(Ok(found));
                }
                HostCall::Scan {
                    entity,
                    fields,
                    after,
                    limit,
                    reply,
                    ..
                } => {
                    // The fixture's records of the entity after `after`, in id order (the
                    // filter is not evaluated here).
                    let mut found: Vec<&FixtureRecord> = fixtures
                        .get(&entity)
                        .map(|records| records.iter().filter(|r| r.id > after).collect())
                        .unwrap_or_default();
                    found.sort_by(|a, b| a.id.cmp(&b.id));
                    let scanned = found
                        .into_iter()
                        .take(limit as usize)
                        .map(|r| {
                            crate::plugins::runtime::bindings::rapport::plugin::records::Scanned {
                                id: r.id.clone(),
                                values: fields
                                    .iter()
                                    .map(|field| match r.data.get(field) {
                                        Some(Value::Object(money)) => {
                                            money.get("amount").and_then(Value::as_f64)
                                        }
                                        Some(value) => value.as_f64(),
                                        None => None,
                                    })
                                    .collect(),
                            }
                        })
                        .collect();
                    let _ = reply.send(Ok(scanned));
                }
                HostCall::Create {
                    entity,
                    data,
                    reply,
                } => {
                    writes.push(json!({"create": entity, "data": serde_json::from_str::<Value>(&data).unwrap_or(Value::Null)}));
                    let _ = reply.send(Ok(Record {
                        entity,
                        id: uuid::Uuid::now_v7().to_string(),
                        version: 1,
                        data,
                    }));
                }
                HostCall::Update {
                    entity,
                    id,
                    patch,
                    reply,
                } => {
                    writes.push(json!({"update": entity, "id": id, "patch": serde_json::from_str::<Value>(&patch).unwrap_or(Value::Null)}));
                    let _ = reply.send(Err(HostError::Failed(
                        "`plugin test` does not apply updates; they are listed in `writes`".into(),
                    )));
                }
            }
        }
        writes
    });
    let state = HostState::new(config.to_string(), capabilities, limits, Some(calls));
    let started = Instant::now();
    let entity = fixture.entity.clone();
    let record = fixture.record.clone().unwrap_or(FixtureRecord {
        id: String::new(),
        version: 0,
        data: serde_json::Map::new(),
    });
    let at = fixture
        .at
        .clone()
        .unwrap_or_else(|| "2026-01-01T00:00:00.000Z".into());
    let event = || -> anyhow::Result<RecordEvent> {
        let operation = match fixture.operation.as_deref().unwrap_or("create") {
            "create" => Operation::Create,
            "update" => Operation::Update,
            "delete" => Operation::Delete,
            other => bail!("unknown operation `{other}`"),
        };
        let stage = match fixture.stage.as_deref().unwrap_or("before") {
            "validate" => Stage::Validate,
            "before" => Stage::Before,
            "after" => Stage::After,
            other => bail!("unknown stage `{other}`"),
        };
        Ok(RecordEvent {
            entity: entity.clone(),
            operation,
            stage,
            record: record.to_record(&entity),
            previous: fixture.previous.as_ref().map(|p| p.to_record(&entity)),
            changed: fixture
                .changed
                .clone()
                .unwrap_or_else(|| record.data.keys().cloned().collect()),
            user_id: "plugin-test".into(),
            at: at.clone(),
            depth: 0,
        })
    };
    let (result, usage, state) = match fixture.kind.as_str() {
        "hook" => {
            let (result, usage, state) = runtime.handle(&loaded, state, &limits, event()?).await;
            (result.map(outcome_json), usage, state)
        }
        "validator" => {
            let (result, usage, state) = runtime.validate(&loaded, state, &limits, event()?).await;
            (
                result.map(|errors| json!({"errors": errors_json(&errors)})),
                usage,
                state,
            )
        }
        "compute" => {
            let function = fixture.function.clone().unwrap_or_default();
            let (result, usage, state) = runtime
                .compute(
                    &loaded,
                    state,
                    &limits,
                    ComputeRequest {
                        field: fixture.field.clone().unwrap_or_else(|| function.clone()),
                        function,
                        record: record.to_record(&entity),
                        at: at.clone(),
                    },
                )
                .await;
            (
                result.map(|value| json!({"value": parse_or_text(&value)})),
                usage,
                state,
            )
        }
        "step" => {
            let step = fixture.function.clone().unwrap_or_default();
            let input = fixture.input.clone().unwrap_or(Value::Null).to_string();
            let (result, usage, state) = runtime
                .run_step(&loaded, state, &limits, &step, &input)
                .await;
            (
                result.map(|output| json!({"output": parse_or_text(&output)})),
                usage,
                state,
            )
        }
        other => bail!("unknown kind `{other}`: use hook, validator, compute or step"),
    };
    let elapsed = started.elapsed();
    let logs: Vec<Value> = state
        .logs
        .iter()
        .map(|line| json!({"level": line.level, "message": line.message}))
        .collect();
    let outbox: Vec<Value> = state
        .outbox
        .iter()
        .map(|m| json!({"kind": m.kind, "payload": parse_or_text(&m.payload)}))
        .collect();
    drop(state);
    let writes = served.await.unwrap_or_default();
    let report = json!({
        "result": match &result { Ok(value) => value.clone(), Err(_) => Value::Null },
        "fault": result.as_ref().err().map(|fault| json!({"kind": fault.kind(), "message": fault.to_string()})),
        "fuel": usage.fuel,
        "duration_us": usage.duration.as_micros() as u64,
        "wall_us": elapsed.as_micros() as u64,
        "logs": logs,
        "outbox": outbox,
        "writes": writes,
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    if result.is_err() {
        bail!("the plugin failed");
    }
    Ok(())
}

fn outcome_json(outcome: Outcome) -> Value {
    match outcome {
        Outcome::Proceed => json!({"outcome": "proceed"}),
        Outcome::Patch(patch) => json!({"outcome": "patch", "patch": parse_or_text(&patch)}),
        Outcome::Reject(errors) => json!({"outcome": "reject", "errors": errors_json(&errors)}),
    }
}

fn errors_json(errors: &[FieldError]) -> Value {
    Value::Array(
        errors
            .iter()
            .map(|e| json!({"field": e.field, "message": e.message}))
            .collect(),
    )
}

fn parse_or_text(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_owned()))
}
