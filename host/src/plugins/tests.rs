//! The sandbox against real components from `plugins/` (built by `scripts/plugins`, which the
//! test command runs first): first-party plugins work, hostile ones are stopped.

use std::path::PathBuf;
use std::sync::LazyLock;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::host::{HostCall, HostState};
use super::manifest::{Capabilities, Limits, Manifest};
use super::runtime::{
    Fault, LoadError, LoadedComponent, Operation, Outcome, Record, RecordEvent, Runtime, Stage,
};

static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| Runtime::new(None).expect("an engine"));

fn plugins_dir() -> PathBuf {
    std::env::var_os("RAPPORT_PLUGINS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"))
}

fn bytes(name: &str) -> Vec<u8> {
    let path = plugins_dir().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|error| {
        panic!(
            "{}: {error}; build the plugins first with scripts/plugins",
            path.display()
        )
    })
}

fn load(name: &str) -> LoadedComponent {
    RUNTIME.load(&bytes(name)).expect("the component loads")
}

fn manifest(crate_dir: &str) -> Manifest {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins")
        .join(crate_dir)
        .join("manifest.json");
    let value: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    Manifest::parse(&value).expect("the manifest is valid")
}

fn event(entity: &str, id: &str, data: Value, changed: &[&str]) -> RecordEvent {
    RecordEvent {
        entity: entity.into(),
        operation: if id.is_empty() {
            Operation::Create
        } else {
            Operation::Update
        },
        stage: Stage::Before,
        record: Record {
            entity: entity.into(),
            id: id.into(),
            version: i64::from(!id.is_empty()),
            data: data.to_string(),
        },
        previous: None,
        changed: changed.iter().map(|field| (*field).to_owned()).collect(),
        user_id: "user".into(),
        at: "2026-11-29T10:00:00Z".into(),
        depth: 0,
    }
}

/// Serves record host calls from nothing: every get finds nothing, every query is empty.
fn empty_records() -> mpsc::Sender<HostCall> {
    let (calls, mut requests) = mpsc::channel(1);
    tokio::spawn(async move {
        while let Some(call) = requests.recv().await {
            match call {
                HostCall::Get { reply, .. } => drop(reply.send(Ok(None))),
                HostCall::Query { reply, .. } => drop(reply.send(Ok(Vec::new()))),
                HostCall::Scan { reply, .. } => drop(reply.send(Ok(Vec::new()))),
                HostCall::Create { reply, .. } | HostCall::Update { reply, .. } => {
                    drop(reply.send(Err(super::runtime::HostError::Failed("read-only".into()))))
                }
            }
        }
    });
    calls
}

async fn hostile(attack: &str) -> (Result<Outcome, Fault>, HostState) {
    hostile_with(attack, manifest("hostile").limits()).await
}

async fn hostile_with(attack: &str, limits: Limits) -> (Result<Outcome, Fault>, HostState) {
    let manifest = manifest("hostile");
    let state = HostState::new(
        json!({"attack": attack, "id": "0190-foreign"}).to_string(),
        manifest.capabilities.clone(),
        limits,
        Some(empty_records()),
    );
    let component = load("hostile");
    let (result, _, state) = RUNTIME
        .handle(
            &component,
            state,
            &limits,
            event("target", "", json!({"name": "a"}), &["name"]),
        )
        .await;
    (result, state)
}

/// A component built for one world (`hook-plugin`: hooks only, no std, no imports) loads and
/// runs; asking it for an export it lacks is a fault, not a crash.
#[tokio::test]
async fn a_component_built_for_one_world_loads_and_runs() {
    let component = load("minimal");
    let limits = manifest("hostile").limits();
    let state = || HostState::new("{}".into(), Capabilities::default(), limits, None);
    let (result, usage, _) = RUNTIME
        .handle(
            &component,
            state(),
            &limits,
            event("target", "", json!({"name": "a"}), &["name"]),
        )
        .await;
    assert!(matches!(result, Ok(Outcome::Proceed)), "{result:?}");
    assert!(usage.fuel > 0);
    // An event larger than the heap its initial memory leaves: the allocator grows the memory.
    let big = "x".repeat(256 << 10);
    let (result, _, _) = RUNTIME
        .handle(
            &component,
            state(),
            &limits,
            event("target", "", json!({ "name": big }), &["name"]),
        )
        .await;
    assert!(matches!(result, Ok(Outcome::Proceed)), "{result:?}");
    let (result, _, _) = RUNTIME
        .validate(
            &component,
            state(),
            &limits,
            event("target", "", json!({"name": "a"}), &["name"]),
        )
        .await;
    assert!(
        matches!(result, Err(Fault::Missing("validator"))),
        "{result:?}"
    );
}

/// The same plugin built for `wasm32-unknown-unknown` (no WASI imports, how `scripts/plugins`
/// builds every plugin) and for `wasm32-wasip2` (Rust's standard library then imports WASI's
/// CLI interfaces, which the host links to nothing): both run.
#[tokio::test]
async fn complaint_sla_sets_the_due_date_from_the_priority_for_either_target() {
    let manifest = manifest("complaint-sla");
    for file in ["complaint_sla", "complaint_sla_wasip2"] {
        let component = load(file);
        let config = manifest.default_config.clone().unwrap().to_string();
        let state = HostState::new(config, Capabilities::default(), manifest.limits(), None);
        let (result, usage, _) = RUNTIME
            .handle(
                &component,
                state,
                &manifest.limits(),
                event("case", "", json!({"priority": "urgent"}), &["priority"]),
            )
            .await;
        let Ok(Outcome::Patch(patch)) = result else {
            panic!("{file}: expected a patch, got {result:?}");
        };
        let patch: Value = serde_json::from_str(&patch).unwrap();
        assert_eq!(
            patch,
            json!({"sla_due_at": "2026-12-01T10:00:00Z"}),
            "{file}"
        );
        assert!(usage.fuel > 0, "{file}");
    }
}

#[test]
fn complaint_sla_imports_no_wasi_unless_built_for_wasip2() {
    let imports = |file: &str| load(file).imports();
    let bundled = imports("complaint_sla");
    assert!(
        bundled
            .iter()
            .all(|name| name.starts_with("rapport:plugin/")),
        "{bundled:?}"
    );
    let wasip2 = imports("complaint_sla_wasip2");
    assert!(
        wasip2.iter().any(|name| name.starts_with("wasi:cli/")),
        "{wasip2:?}"
    );
}

#[tokio::test]
async fn an_infinite_loop_is_stopped_at_the_deadline() {
    // Fuel for far longer than the deadline: the wall clock stops it.
    let limits = Limits {
        fuel: 1 << 50,
        timeout_ms: 50,
        ..manifest("hostile").limits()
    };
    let (result, _) = hostile_with("loop", limits).await;
    assert_eq!(result.unwrap_err(), Fault::Timeout(50));
}

#[tokio::test]
async fn an_infinite_loop_runs_out_of_fuel_deterministically() {
    // A deadline far away: the instruction budget stops it, the same way on any machine.
    let limits = Limits {
        fuel: 1_000_000,
        timeout_ms: 60_000,
        ..manifest("hostile").limits()
    };
    let (result, _) = hostile_with("loop", limits).await;
    assert_eq!(result.unwrap_err(), Fault::OutOfFuel(1_000_000));
}

#[tokio::test]
async fn a_memory_bomb_traps_at_the_cap() {
    let (result, _) = hostile("memory").await;
    let fault = result.unwrap_err();
    assert!(matches!(fault, Fault::Trap(_)), "{fault:?}");
}

#[tokio::test]
async fn unbounded_recursion_traps_without_taking_the_host_down() {
    let (result, _) = hostile("recursion").await;
    let fault = result.unwrap_err();
    assert!(matches!(fault, Fault::Trap(_)), "{fault:?}");
    // The engine still runs plugins after the overflow.
    let (result, _) = hostile("none").await;
    assert!(matches!(result, Ok(Outcome::Proceed)), "{result:?}");
}

#[tokio::test]
async fn an_enormous_result_is_refused() {
    let (result, _) = hostile("huge").await;
    let fault = result.unwrap_err();
    assert!(matches!(fault, Fault::InvalidResult(_)), "{fault:?}");
}

#[tokio::test]
async fn a_host_call_flood_stops_at_the_cap() {
    let (result, state) = hostile("flood").await;
    let Err(Fault::Failed(message)) = result else {
        panic!("expected the plugin's own failure, got {result:?}");
    };
    assert!(message.contains("LimitExceeded"), "{message}");
    assert!(message.contains("50 host calls"), "{message}");
    drop(state);
}

#[tokio::test]
async fn writing_an_entity_outside_the_capabilities_is_denied() {
    let (result, _) = hostile("write_other").await;
    let Err(Fault::Failed(message)) = result else {
        panic!("expected the denial to surface, got {result:?}");
    };
    assert!(message.contains("Denied"), "{message}");
    assert!(message.contains("writing `secret`"), "{message}");
}

#[tokio::test]
async fn a_panic_is_a_trap() {
    let (result, _) = hostile("panic").await;
    assert!(matches!(result, Err(Fault::Trap(_))), "{result:?}");
}

#[test]
fn a_component_importing_the_filesystem_is_refused_naming_the_import() {
    let error = RUNTIME.load(&bytes("hostile_fs")).unwrap_err();
    let LoadError::ForbiddenImport(imports) = &error else {
        panic!("expected a forbidden import, got {error}");
    };
    let filesystem = imports
        .iter()
        .find(|import| import.starts_with("wasi:filesystem/"))
        .unwrap_or_else(|| panic!("{imports:?}"));
    assert!(error.to_string().contains(filesystem.as_str()));
}

#[test]
fn bytes_that_are_not_a_component_are_refused() {
    let error = RUNTIME.load(b"\0asm not really").unwrap_err();
    assert!(matches!(error, LoadError::NotAComponent(_)), "{error}");
}

#[test]
fn the_limits_of_the_manifest_apply() {
    assert_eq!(manifest("hostile").limits().timeout_ms, 200);
    assert!(manifest("hostile").limits().fuel <= Limits::MAX.fuel);
}
