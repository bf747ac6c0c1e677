//! The sandbox: one wasmtime engine, components checked and compiled once (cached on disk by
//! content hash and engine), and invocations that each get a fresh store with a memory cap, a
//! wall-clock deadline (epoch interruption), a fuel budget and caps on host calls.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasData, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, StoreLimits,
    StoreLimitsBuilder, Trap,
};
use wasmtime_wasi::cli::{WasiCli, WasiCliCtxView, WasiCliView};

use super::host::HostState;
use super::manifest::Limits;

/// The bindings of the contract, generated in this one place.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit/v0.1.0",
        world: "plugin",
        imports: { default: async },
        exports: { default: async },
    });
}

use bindings::exports::rapport::plugin as exports;
pub use bindings::rapport::plugin::types::{
    FieldError, HostError, Operation, Record, RecordEvent, Stage,
};
pub use exports::computed::ComputeRequest;
pub use exports::hooks::Outcome;

/// The milliseconds of one epoch tick: deadlines are counted in them.
const TICK: Duration = Duration::from_millis(1);

/// Hard ceilings of the sandbox; a manifest's limits may only lower them.
pub const MAX_MEMORY: usize = 64 << 20;
/// The largest result a plugin may return (a patch, a computed value, a step's output).
pub const MAX_RESULT: usize = 1 << 20;
/// Bytes of each memory slot kept resident between instances (see `Runtime::with_meters`).
const KEEP_RESIDENT: usize = 1 << 20;
/// Concurrent instances the pooling allocator holds slots for.
const POOL_INSTANCES: u32 = 256;

/// What a component may import besides the contract: the parts of WASI that Rust's standard
/// library links for printing and exiting when a plugin is built for `wasm32-wasip2` (built for
/// `wasm32-unknown-unknown`, as `rapport plugin build` does, it imports none). Filesystem,
/// sockets, HTTP, clocks and randomness are not provided.
const ALLOWED_WASI: &[&str] = &[
    "wasi:cli/environment",
    "wasi:cli/exit",
    "wasi:cli/stdin",
    "wasi:cli/stdout",
    "wasi:cli/stderr",
    "wasi:cli/terminal-input",
    "wasi:cli/terminal-output",
    "wasi:cli/terminal-stdin",
    "wasi:cli/terminal-stdout",
    "wasi:cli/terminal-stderr",
    "wasi:io/error",
    "wasi:io/poll",
    "wasi:io/streams",
];

/// Why a component cannot be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the bytes are not a WebAssembly component: {0}")]
    NotAComponent(String),
    #[error(
        "the component imports {}, which Rapport does not provide: plugins get no filesystem, sockets, HTTP, clocks or randomness; use the `rapport:plugin` host interfaces",
        .0.iter().map(|name| format!("`{name}`")).collect::<Vec<_>>().join(", ")
    )]
    ForbiddenImport(Vec<String>),
    #[error("the component does not fit the contract rapport:plugin@0.1.0: {0}")]
    Contract(String),
}

/// How an invocation failed. Rejections are not failures: they are the plugin's answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Fault {
    #[error("ran past its deadline of {0} ms")]
    Timeout(u64),
    #[error("used up its fuel budget of {0}")]
    OutOfFuel(u64),
    #[error("trapped: {0}")]
    Trap(String),
    #[error("failed: {0}")]
    Failed(String),
    #[error("returned an invalid result: {0}")]
    InvalidResult(String),
    #[error("does not provide `{0}`")]
    Missing(&'static str),
}

impl Fault {
    /// A short name for run records: `timeout`, `out_of_fuel`, `trap`, `failed`, `invalid_result`.
    pub fn kind(&self) -> &'static str {
        match self {
            Fault::Timeout(_) => "timeout",
            Fault::OutOfFuel(_) => "out_of_fuel",
            Fault::Trap(_) => "trap",
            Fault::Failed(_) => "failed",
            Fault::InvalidResult(_) => "invalid_result",
            Fault::Missing(_) => "missing",
        }
    }
}

/// The measurements of one invocation.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    pub duration: Duration,
    pub fuel: u64,
}

/// A component ready to be instantiated: checked, compiled and linked.
pub struct LoadedComponent {
    pub sha256: String,
    pre: wasmtime::component::InstancePre<HostState>,
    hooks: Option<exports::hooks::GuestIndices>,
    validator: Option<exports::validator::GuestIndices>,
    computed: Option<exports::computed::GuestIndices>,
    workflow_step: Option<exports::workflow_step::GuestIndices>,
}

impl LoadedComponent {
    /// The names of what the component imports (interfaces with their versions).
    pub fn imports(&self) -> Vec<String> {
        import_names(self.pre.component())
    }
}

fn import_names(component: &Component) -> Vec<String> {
    component
        .component_type()
        .imports(component.engine())
        .map(|(name, _)| name.to_owned())
        .collect()
}

impl std::fmt::Debug for LoadedComponent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedComponent")
            .field("sha256", &self.sha256)
            .finish_non_exhaustive()
    }
}

/// Which of the two execution limits the engine enforces. A server always runs with both;
/// the benchmarks turn them off one at a time to measure what each costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meters {
    /// Fuel: a deterministic instruction budget (counted in the generated code).
    pub fuel: bool,
    /// Epoch interruption: a wall-clock deadline (checked at loop heads and calls).
    pub epoch: bool,
}

impl Meters {
    pub const BOTH: Meters = Meters {
        fuel: true,
        epoch: true,
    };
}

/// The plugin engine of a server.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<HostState>>,
    cache_dir: Option<PathBuf>,
    engine_key: String,
    meters: Meters,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("cache_dir", &self.cache_dir)
            .finish_non_exhaustive()
    }
}

struct Io;

impl HasData for Io {
    type Data<'a> = &'a mut ResourceTable;
}

impl Runtime {
    /// An engine with the pooling allocator, fuel and epoch interruption, and a thread that
    /// advances the epoch every millisecond. Compiled components are cached under `cache_dir`.
    pub fn new(cache_dir: Option<PathBuf>) -> wasmtime::Result<Self> {
        Self::with_meters(cache_dir, Meters::BOTH)
    }

    /// An engine enforcing only some limits: for measurements, never for serving.
    pub fn with_meters(cache_dir: Option<PathBuf>, meters: Meters) -> wasmtime::Result<Self> {
        let mut pooling = PoolingAllocationConfig::default();
        pooling
            .total_component_instances(POOL_INSTANCES)
            .total_core_instances(POOL_INSTANCES * 4)
            .total_memories(POOL_INSTANCES * 2)
            .total_tables(POOL_INSTANCES * 4)
            .total_stacks(POOL_INSTANCES)
            .max_memory_size(MAX_MEMORY)
            // A fresh instance per call would otherwise fault in every page it touches again:
            // keep the first pages of each slot resident and reset them in place.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(64 << 10)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .consume_fuel(meters.fuel)
            .epoch_interruption(meters.epoch)
            .max_wasm_stack(512 << 10)
            .memory_reservation(MAX_MEMORY as u64)
            .memory_guard_size(2 << 20)
            .allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
        let engine = Engine::new(&config)?;
        let mut linker = Linker::new(&engine);
        bindings::Plugin::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |state| {
            state
        })?;
        add_wasi_subset(&mut linker)?;
        let mut hasher = DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        // The hasher is only stable within one build of Rapport; the wasmtime version is in the
        // key as well, and an unusable cached artifact is compiled again anyway.
        let engine_key = format!("wasmtime-48-{:016x}", hasher.finish());
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("rapport-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })?;
        Ok(Self {
            engine,
            linker: Arc::new(linker),
            cache_dir,
            engine_key,
            meters,
        })
    }

    /// Checks a component's imports, compiles it (or loads it from the cache) and links it.
    pub fn load(&self, bytes: &[u8]) -> Result<LoadedComponent, LoadError> {
        let sha256 = hex(&Sha256::digest(bytes));
        let component = self.compile(bytes, &sha256)?;
        let forbidden: Vec<String> = import_names(&component)
            .into_iter()
            .filter(|name| {
                let interface = name.split('@').next().unwrap_or(name);
                !(interface.starts_with("rapport:plugin/") || ALLOWED_WASI.contains(&interface))
            })
            .collect();
        if !forbidden.is_empty() {
            return Err(LoadError::ForbiddenImport(forbidden));
        }
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|error| LoadError::Contract(format!("{error:#}")))?;
        let hooks = exports::hooks::GuestIndices::new(&instance_pre).ok();
        let validator = exports::validator::GuestIndices::new(&instance_pre).ok();
        let computed = exports::computed::GuestIndices::new(&instance_pre).ok();
        let workflow_step = exports::workflow_step::GuestIndices::new(&instance_pre).ok();
        if hooks.is_none() && validator.is_none() && computed.is_none() && workflow_step.is_none() {
            return Err(LoadError::Contract(
                "it exports none of `rapport:plugin/hooks`, `validator`, `computed` or `workflow-step` at version 0.1.0".into(),
            ));
        }
        // Only the exports it has: a component built for one world (`hook-plugin`, …) is as
        // good as one built for `plugin`, which exports all four.
        Ok(LoadedComponent {
            sha256,
            pre: instance_pre,
            hooks,
            validator,
            computed,
            workflow_step,
        })
    }

    fn compile(&self, bytes: &[u8], sha256: &str) -> Result<Component, LoadError> {
        let cached = self
            .cache_dir
            .as_ref()
            .map(|dir| dir.join(&self.engine_key).join(format!("{sha256}.cwasm")));
        if let Some(path) = &cached
            && let Some(component) = self.deserialize(path)
        {
            return Ok(component);
        }
        let compiled = self
            .engine
            .precompile_component(bytes)
            .map_err(|error| LoadError::NotAComponent(format!("{error:#}")))?;
        if let Some(path) = &cached {
            // A failed cache write costs a compile next time, nothing else.
            if let Some(parent) = path.parent()
                && std::fs::create_dir_all(parent).is_ok()
            {
                let temporary = path.with_extension("tmp");
                if std::fs::write(&temporary, &compiled).is_ok() {
                    let _ = std::fs::rename(&temporary, path);
                }
            }
        }
        self.deserialize_bytes(&compiled)
            .map_err(|error| LoadError::NotAComponent(format!("{error:#}")))
    }

    /// A compiled component from the cache; `None` (compile again) if it is missing or unusable.
    fn deserialize(&self, path: &Path) -> Option<Component> {
        let bytes = std::fs::read(path).ok()?;
        self.deserialize_bytes(&bytes).ok()
    }

    #[allow(unsafe_code)]
    fn deserialize_bytes(&self, compiled: &[u8]) -> wasmtime::Result<Component> {
        // SAFETY: wasmtime requires that the bytes come from `precompile_component` of a
        // compatible engine. They do: this runtime wrote them, under a directory named by the
        // engine's compatibility hash, in the server's own data directory, and wasmtime checks
        // the header (engine version and settings) again before using them.
        unsafe { Component::deserialize(&self.engine, compiled) }
    }

    fn store(&self, state: HostState, limits: &Limits) -> Store<HostState> {
        let mut store = Store::new(&self.engine, state);
        store.data_mut().limits = StoreLimitsBuilder::new()
            .memory_size(limits.memory_bytes())
            .instances(16)
            .tables(16)
            .memories(4)
            .trap_on_grow_failure(true)
            .build();
        store.limiter(|state| &mut state.limits);
        if self.meters.fuel {
            store
                .set_fuel(limits.fuel)
                .expect("fuel is enabled on this engine");
        }
        if self.meters.epoch {
            store.set_epoch_deadline(limits.timeout_ms.max(1));
            store.epoch_deadline_trap();
        }
        store
    }

    /// Runs a record hook.
    pub async fn handle(
        &self,
        component: &LoadedComponent,
        state: HostState,
        limits: &Limits,
        event: RecordEvent,
    ) -> (Result<Outcome, Fault>, Usage, HostState) {
        let Some(indices) = &component.hooks else {
            return missing("hooks", state);
        };
        self.invoke(component, state, limits, async |store, instance| {
            let guest = indices.load(&mut *store, instance)?;
            guest.call_handle(&mut *store, &event).await
        })
        .await
        .map_fault(|result| match result {
            Ok(Outcome::Patch(patch)) if patch.len() > MAX_RESULT => Err(too_large(patch.len())),
            Ok(Outcome::Reject(errors)) if errors.len() > 1_000 => Err(Fault::InvalidResult(
                format!("{} field errors", errors.len()),
            )),
            Ok(outcome) => Ok(outcome),
            Err(message) => Err(Fault::Failed(message)),
        })
    }

    /// Runs a validator.
    pub async fn validate(
        &self,
        component: &LoadedComponent,
        state: HostState,
        limits: &Limits,
        event: RecordEvent,
    ) -> (Result<Vec<FieldError>, Fault>, Usage, HostState) {
        let Some(indices) = &component.validator else {
            return missing("validator", state);
        };
        self.invoke(component, state, limits, async |store, instance| {
            let guest = indices.load(&mut *store, instance)?;
            guest.call_validate(&mut *store, &event).await
        })
        .await
        .map_fault(Ok)
    }

    /// Computes a value (JSON text).
    pub async fn compute(
        &self,
        component: &LoadedComponent,
        state: HostState,
        limits: &Limits,
        request: ComputeRequest,
    ) -> (Result<String, Fault>, Usage, HostState) {
        let Some(indices) = &component.computed else {
            return missing("computed", state);
        };
        self.invoke(component, state, limits, async |store, instance| {
            let guest = indices.load(&mut *store, instance)?;
            guest.call_compute(&mut *store, &request).await
        })
        .await
        .map_fault(|result| match result {
            Ok(value) if value.len() > MAX_RESULT => Err(too_large(value.len())),
            Ok(value) => Ok(value),
            Err(message) => Err(Fault::Failed(message)),
        })
    }

    /// Runs a workflow step with JSON input; returns its JSON output.
    pub async fn run_step(
        &self,
        component: &LoadedComponent,
        state: HostState,
        limits: &Limits,
        step: &str,
        input: &str,
    ) -> (Result<String, Fault>, Usage, HostState) {
        let Some(indices) = &component.workflow_step else {
            return missing("workflow-step", state);
        };
        self.invoke(component, state, limits, async |store, instance| {
            let guest = indices.load(&mut *store, instance)?;
            guest.call_run(&mut *store, step, input).await
        })
        .await
        .map_fault(|result| match result {
            Ok(output) if output.len() > MAX_RESULT => Err(too_large(output.len())),
            Ok(output) => Ok(output),
            Err(message) => Err(Fault::Failed(message)),
        })
    }

    /// Instantiates a fresh instance and runs `call` in it, turning traps into faults.
    async fn invoke<R>(
        &self,
        component: &LoadedComponent,
        state: HostState,
        limits: &Limits,
        call: impl AsyncFnOnce(
            &mut Store<HostState>,
            &wasmtime::component::Instance,
        ) -> wasmtime::Result<R>,
    ) -> Invoked<R> {
        let started = Instant::now();
        let mut store = self.store(state, limits);
        let result = async {
            let instance = component.pre.instantiate_async(&mut store).await?;
            call(&mut store, &instance).await
        }
        .await;
        let fuel = match store.get_fuel() {
            Ok(left) => limits.fuel.saturating_sub(left),
            Err(_) => 0, // fuel is off (benchmarks only)
        };
        let usage = Usage {
            duration: started.elapsed(),
            fuel,
        };
        let result = result.map_err(|error| fault(&error, limits));
        Invoked {
            result,
            usage,
            state: store.into_data(),
        }
    }
}

/// The result of [`Runtime::invoke`] before the export's own error is folded in.
struct Invoked<R> {
    result: Result<R, Fault>,
    usage: Usage,
    state: HostState,
}

impl<R> Invoked<R> {
    fn map_fault<T>(
        self,
        fold: impl FnOnce(R) -> Result<T, Fault>,
    ) -> (Result<T, Fault>, Usage, HostState) {
        (self.result.and_then(fold), self.usage, self.state)
    }
}

fn too_large(bytes: usize) -> Fault {
    Fault::InvalidResult(format!(
        "{bytes} bytes, more than the {MAX_RESULT} a plugin may return"
    ))
}

fn missing<T>(export: &'static str, state: HostState) -> (Result<T, Fault>, Usage, HostState) {
    (
        Err(Fault::Missing(export)),
        Usage {
            duration: Duration::ZERO,
            fuel: 0,
        },
        state,
    )
}

/// What a wasmtime error means for the client.
fn fault(error: &wasmtime::Error, limits: &Limits) -> Fault {
    match error.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => Fault::Timeout(limits.timeout_ms),
        Some(Trap::OutOfFuel) => Fault::OutOfFuel(limits.fuel),
        Some(trap) => Fault::Trap(trap.to_string()),
        None => Fault::Trap(format!("{error:#}")),
    }
}

/// Links the allowed part of WASI: stdio (to nowhere, never the server's), environment (empty),
/// exit, and the I/O types they need.
fn add_wasi_subset(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    use wasmtime_wasi::p2::bindings::cli;
    use wasmtime_wasi_io::bindings::wasi::io;
    let l = linker;
    io::error::add_to_linker::<HostState, Io>(l, |state| &mut state.table)?;
    io::poll::add_to_linker::<HostState, Io>(l, |state| &mut state.table)?;
    io::streams::add_to_linker::<HostState, Io>(l, |state| &mut state.table)?;
    cli::exit::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::environment::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_input::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_output::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stdin::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stdout::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    cli::terminal_stderr::add_to_linker::<HostState, WasiCli>(l, HostState::cli)?;
    Ok(())
}

/// Only the CLI part of WASI: a full `WasiCtx` would also seed two random number generators
/// and box clocks for every invocation, for interfaces that are never linked.
impl WasiCliView for HostState {
    fn cli(&mut self) -> WasiCliCtxView<'_> {
        WasiCliCtxView {
            ctx: &mut self.cli,
            table: &mut self.table,
        }
    }
}

/// The limits every store starts from (replaced by the invocation's own).
pub fn no_limits() -> StoreLimits {
    StoreLimits::default()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}
