//! Hook invocation: a fresh instance from the pre-instantiated component, one call, the result
//! back — the cost every record write pays per hook. `small` is the smallest hook the SDK builds
//! (`hostile` with `attack: none`: reads its configuration and proceeds) and measures the
//! SDK's fixed cost; `minimal` (a `no_std` hook with no imports and one core instance) is the
//! floor of the sandbox itself on this engine; `complaint-sla` adds real guest work (JSON record and configuration,
//! date arithmetic, a patch back), once as `scripts/plugins` builds it (`wasm32-unknown-unknown`,
//! no WASI imports) and once built for `wasm32-wasip2`. Also what fuel and epoch interruption
//! each add. Needs the plugins built (`scripts/plugins`).
//!
//! `cargo bench -p rapport --bench plugins`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use rapport::plugins::host::HostState;
use rapport::plugins::manifest::{Capabilities, Limits};
use rapport::plugins::runtime::{
    LoadedComponent, Meters, Operation, Record, RecordEvent, Runtime, Stage,
};

/// The server's allocator (`host/src/main.rs`), so that the invocations allocate as they do
/// there.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn component(runtime: &Runtime, file: &str) -> LoadedComponent {
    let dir = std::env::var_os("RAPPORT_PLUGINS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/plugins"));
    let path = dir.join(file);
    let bytes = std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run scripts/plugins", path.display()));
    runtime.load(&bytes).expect("the component loads")
}

fn event() -> RecordEvent {
    RecordEvent {
        entity: "case".into(),
        operation: Operation::Create,
        stage: Stage::Before,
        record: Record {
            entity: "case".into(),
            id: String::new(),
            version: 0,
            data: r#"{"subject":"Broken invoice","priority":"urgent"}"#.into(),
        },
        previous: None,
        changed: vec!["subject".into(), "priority".into()],
        user_id: "user".into(),
        at: "2026-11-22T10:00:00.000Z".into(),
        depth: 0,
    }
}

const SLA_CONFIG: &str =
    r#"{"priority_field":"priority","due_field":"sla_due_at","days":{"urgent":2,"ordinary":5}}"#;

const SMALL_CONFIG: &str = r#"{"attack":"none"}"#;

/// One invocation with `config`; returns the fuel it used.
async fn call(runtime: &Runtime, component: &LoadedComponent, config: &str) -> u64 {
    let limits = Limits::MAX;
    let state = HostState::new(config.into(), Capabilities::default(), limits, None);
    let (result, usage, _) = runtime.handle(component, state, &limits, event()).await;
    assert!(result.is_ok(), "{result:?}");
    usage.fuel
}

fn invocation(c: &mut Criterion) {
    let tokio = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("hook");
    {
        let runtime = Runtime::new(None).expect("an engine");
        let small = component(&runtime, "hostile.wasm");
        group.bench_function("small, fuel+epoch", |b| {
            b.to_async(&tokio)
                .iter(|| call(&runtime, &small, SMALL_CONFIG));
        });
        let minimal = component(&runtime, "minimal.wasm");
        group.bench_function("minimal (no std, no imports), fuel+epoch", |b| {
            b.to_async(&tokio)
                .iter(|| call(&runtime, &minimal, SMALL_CONFIG));
        });
        // The same plugin built for `wasm32-wasip2`: what the WASI imports of Rust's standard
        // library cost per invocation (the bundled plugins are built without them).
        let wasip2 = component(&runtime, "complaint_sla_wasip2.wasm");
        group.bench_function("complaint-sla built for wasm32-wasip2, fuel+epoch", |b| {
            b.to_async(&tokio)
                .iter(|| call(&runtime, &wasip2, SLA_CONFIG));
        });
    }
    for (name, meters) in [
        ("fuel+epoch", Meters::BOTH),
        (
            "fuel",
            Meters {
                fuel: true,
                epoch: false,
            },
        ),
        (
            "epoch",
            Meters {
                fuel: false,
                epoch: true,
            },
        ),
        (
            "none",
            Meters {
                fuel: false,
                epoch: false,
            },
        ),
    ] {
        let runtime = Runtime::with_meters(None, meters).expect("an engine");
        let component = component(&runtime, "complaint_sla.wasm");
        group.bench_function(format!("complaint-sla, {name}"), |b| {
            b.to_async(&tokio)
                .iter(|| call(&runtime, &component, SLA_CONFIG));
        });
    }
    group.finish();

    // Criterion reports means and medians; the tail comes from timing calls one by one.
    let runtime = Runtime::new(None).expect("an engine");
    for (name, file, config) in [
        ("minimal", "minimal.wasm", SMALL_CONFIG),
        ("small", "hostile.wasm", SMALL_CONFIG),
        ("complaint-sla", "complaint_sla.wasm", SLA_CONFIG),
    ] {
        let component = component(&runtime, file);
        let (mut times, fuel) = tokio.block_on(async {
            let mut times: Vec<Duration> = Vec::with_capacity(20_000);
            let mut fuel = 0;
            for _ in 0..20_000 {
                let started = Instant::now();
                fuel = call(&runtime, &component, config).await;
                times.push(started.elapsed());
            }
            (times, fuel)
        });
        times.sort();
        let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
        println!(
            "hook/{name}, fuel+epoch, 20,000 calls one by one: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}; {fuel} fuel (wasm instructions) per call",
            at(0.50),
            at(0.90),
            at(0.99),
            times[times.len() - 1]
        );
    }
}

criterion_group!(benches, invocation);
criterion_main!(benches);
