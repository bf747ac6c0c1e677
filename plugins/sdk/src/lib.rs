//! Write Rapport plugins in Rust.
//!
//! Implement [`Plugin`] for a type, overriding the functions your manifest says you provide,
//! and call [`plugin!`] once:
//!
//! ```
//! use rapport_sdk::{Event, Outcome, Plugin, json};
//!
//! struct Greeter;
//!
//! impl Plugin for Greeter {
//!     fn hook(event: Event) -> Result<Outcome, String> {
//!         let name = event.record.get_str("name").unwrap_or_default();
//!         Ok(Outcome::patch(json!({"greeting": format!("Hello, {name}")})))
//!     }
//! }
//!
//! rapport_sdk::plugin!(Greeter);
//! ```
//!
//! Build with `rapport plugin build` (`cargo build --release --target wasm32-unknown-unknown`,
//! linked by `wasm-component-ld`; `wasm32-wasip2` works too, with WASI imports): the
//! result is a component for the contract `rapport:plugin@0.1.0` in `wit/v0.1.0`.

#[cfg(any(test, all(target_arch = "wasm32", feature = "arena")))]
mod arena;

/// Small allocations from a static arena, the rest from the standard allocator (see `arena`).
#[cfg(all(target_arch = "wasm32", feature = "arena"))]
#[global_allocator]
static ALLOCATOR: arena::Arena = arena::Arena::new();

use serde_json::Map;

pub use serde_json::{Value, json};

/// The bindings generated from the WIT contract. Plugins use the wrappers of this crate; the
/// raw bindings are public for the [`plugin!`] macro.
#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit/v0.1.0",
        world: "plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin",
        default_bindings_module: "rapport_sdk::bindings",
    });
}

use bindings::exports::rapport::plugin as exported;
use bindings::rapport::plugin::types as wit;

pub use wit::{HostError, Operation, Stage};

/// The contract version this SDK builds against; manifests name it as `contract`.
pub const CONTRACT: &str = "0.1.0";

/// A problem with one field, reported to the client like the API's own validation errors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field; empty for the record as a whole.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A record: entity, id (empty before creation), version and field values.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub entity: String,
    pub id: String,
    pub version: i64,
    pub data: Map<String, Value>,
}

impl Record {
    /// A field's value; `None` when the field is empty.
    pub fn get(&self, field: &str) -> Option<&Value> {
        self.data.get(field).filter(|value| !value.is_null())
    }

    pub fn get_str(&self, field: &str) -> Option<&str> {
        self.get(field).and_then(Value::as_str)
    }

    pub fn get_i64(&self, field: &str) -> Option<i64> {
        self.get(field).and_then(Value::as_i64)
    }

    /// A number, or the amount of a currency value.
    pub fn get_f64(&self, field: &str) -> Option<f64> {
        match self.get(field)? {
            Value::Object(money) => money.get("amount").and_then(Value::as_f64),
            value => value.as_f64(),
        }
    }

    pub fn get_bool(&self, field: &str) -> Option<bool> {
        self.get(field).and_then(Value::as_bool)
    }

    fn from_wit(record: wit::Record) -> Self {
        Self {
            entity: record.entity,
            id: record.id,
            version: record.version,
            data: parse_object(&record.data),
        }
    }
}

/// A record write a validator or hook is asked about.
#[derive(Debug, Clone)]
pub struct Event {
    pub entity: String,
    pub operation: Operation,
    pub stage: Stage,
    /// The record as it will be stored (create, update) or as it was (delete).
    pub record: Record,
    /// The stored record before this write (update, delete).
    pub previous: Option<Record>,
    /// The fields this write changes.
    pub changed: Vec<String>,
    /// The user on whose behalf the write happens.
    pub user_id: String,
    /// The time of the write, RFC 3339 in UTC: plugins have no clock of their own.
    pub at: String,
    /// 0 for a client's write, +1 for each hook in between.
    pub depth: u32,
}

impl Event {
    /// Whether this write changes `field`.
    pub fn changes(&self, field: &str) -> bool {
        self.changed.iter().any(|changed| changed == field)
    }

    fn from_wit(event: wit::RecordEvent) -> Self {
        Self {
            entity: event.entity,
            operation: event.operation,
            stage: event.stage,
            record: Record::from_wit(event.record),
            previous: event.previous.map(Record::from_wit),
            changed: event.changed,
            user_id: event.user_id,
            at: event.at,
            depth: event.depth,
        }
    }
}

/// A computed value asked of a plugin.
#[derive(Debug, Clone)]
pub struct Compute {
    /// The function, as the manifest lists it under `provides.computed`.
    pub function: String,
    /// The field being computed, as the entity definition names it.
    pub field: String,
    /// The record as it will be stored (its id is empty while it is being created).
    pub record: Record,
    /// The time of the write, RFC 3339 in UTC: compute time-dependent values as of this time.
    pub at: String,
}

/// What a hook decided.
#[derive(Debug, Clone)]
pub enum Outcome {
    /// Go on unchanged.
    Proceed,
    /// Go on with these field values merged into the record (`before` stage only).
    Patch(Map<String, Value>),
    /// Refuse the write with these field errors.
    Reject(Vec<FieldError>),
}

impl Outcome {
    /// A patch from a JSON object, e.g. `Outcome::patch(json!({"discount": 5}))`. Anything but
    /// an object patches nothing.
    pub fn patch(values: Value) -> Self {
        match values {
            Value::Object(values) => Outcome::Patch(values),
            _ => Outcome::Proceed,
        }
    }

    /// A rejection with one field error.
    pub fn reject(field: impl Into<String>, message: impl Into<String>) -> Self {
        Outcome::Reject(vec![FieldError::new(field, message)])
    }
}

/// What a plugin provides. Every function has a default that provides nothing; override those
/// your manifest lists under `provides`.
pub trait Plugin {
    /// A validator: an empty list accepts the record.
    fn validate(event: Event) -> Vec<FieldError> {
        let _ = event;
        Vec::new()
    }

    /// A record hook (stages `validate`, `before`, `after`). `Err` is a fault of the plugin,
    /// reported to the client with the plugin's name; use [`Outcome::Reject`] to refuse a write.
    fn hook(event: Event) -> Result<Outcome, String> {
        let _ = event;
        Ok(Outcome::Proceed)
    }

    /// The value of a computed field (`Value::Null` for none); `request.function` is the
    /// function the manifest lists under `provides.computed`.
    fn compute(request: Compute) -> Result<Value, String> {
        Err(format!("this plugin computes no `{}`", request.function))
    }

    /// Runs the workflow step `step` with its input.
    fn run_step(step: &str, input: Value) -> Result<Value, String> {
        let _ = input;
        Err(format!("this plugin has no workflow step `{step}`"))
    }
}

/// Registers a [`Plugin`] implementation as the component's exports. Call it once per crate.
#[macro_export]
macro_rules! plugin {
    ($plugin:ty) => {
        #[doc(hidden)]
        struct __RapportExports;
        impl $crate::Exports for __RapportExports {
            type Plugin = $plugin;
        }
        #[doc(hidden)]
        type __RapportGlue = $crate::Glue<__RapportExports>;
        // Exported on wasm only: native builds (unit tests of a plugin's logic) have no host.
        #[cfg(target_arch = "wasm32")]
        $crate::bindings::__export_plugin!(__RapportGlue);
    };
}

/// Connects a [`Plugin`] to the generated bindings; used by [`plugin!`].
#[doc(hidden)]
pub trait Exports {
    type Plugin: Plugin;
}

#[doc(hidden)]
pub struct Glue<E>(std::marker::PhantomData<E>);

impl<E: Exports> exported::validator::Guest for Glue<E> {
    fn validate(event: wit::RecordEvent) -> Vec<wit::FieldError> {
        E::Plugin::validate(Event::from_wit(event))
            .into_iter()
            .map(to_wit_error)
            .collect()
    }
}

impl<E: Exports> exported::hooks::Guest for Glue<E> {
    fn handle(event: wit::RecordEvent) -> Result<exported::hooks::Outcome, String> {
        Ok(match E::Plugin::hook(Event::from_wit(event))? {
            Outcome::Proceed => exported::hooks::Outcome::Proceed,
            Outcome::Patch(values) => {
                exported::hooks::Outcome::Patch(Value::Object(values).to_string())
            }
            Outcome::Reject(errors) => {
                exported::hooks::Outcome::Reject(errors.into_iter().map(to_wit_error).collect())
            }
        })
    }
}

impl<E: Exports> exported::computed::Guest for Glue<E> {
    fn compute(request: exported::computed::ComputeRequest) -> Result<String, String> {
        let request = Compute {
            function: request.function,
            field: request.field,
            record: Record::from_wit(request.record),
            at: request.at,
        };
        E::Plugin::compute(request).map(|value| value.to_string())
    }
}

impl<E: Exports> exported::workflow_step::Guest for Glue<E> {
    fn run(step: String, input: String) -> Result<String, String> {
        let input = serde_json::from_str(&input).unwrap_or(Value::Null);
        E::Plugin::run_step(&step, input).map(|value| value.to_string())
    }
}

fn to_wit_error(error: FieldError) -> wit::FieldError {
    wit::FieldError {
        field: error.field,
        message: error.message,
    }
}

fn parse_object(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(object)) => object,
        _ => Map::new(),
    }
}

/// Records of the tenant, as the triggering user and within the manifest's capabilities.
pub mod records {
    use super::{HostError, Record, Value};
    use crate::bindings::rapport::plugin::records as host;

    /// One record by id; `None` if it does not exist or is not visible.
    pub fn get(entity: &str, id: &str) -> Result<Option<Record>, HostError> {
        Ok(host::get(entity, id)?.map(Record::from_wit))
    }

    /// Records matching `filter` (the API's filter syntax; "" for all), sorted by `sort`
    /// ("" for the default order), at most `limit`.
    pub fn query(
        entity: &str,
        filter: &str,
        sort: &str,
        limit: u32,
    ) -> Result<Vec<Record>, HostError> {
        Ok(host::query(entity, filter, sort, limit)?
            .into_iter()
            .map(Record::from_wit)
            .collect())
    }

    /// A record's id and numeric values, as [`scan`] returns them.
    pub use crate::bindings::rapport::plugin::records::Scanned;

    /// The ids and numeric values (`fields`: integer, decimal or currency fields; `None` where a
    /// record has none) of the records matching `filter` ("" for all) with an id after `after`
    /// ("" to start), in id order, at most `limit` (the host caps a call at 10,000). One host
    /// call; the rows count against the invocation's row limit.
    pub fn scan(
        entity: &str,
        filter: &str,
        fields: &[&str],
        after: &str,
        limit: u32,
    ) -> Result<Vec<Scanned>, HostError> {
        let fields: Vec<String> = fields.iter().map(|field| (*field).to_owned()).collect();
        host::scan(entity, filter, &fields, after, limit)
    }

    /// Every record [`scan`] finds, page by page (`page` records a call), handed to `each` in id
    /// order; returns how many there were. Reads until a page comes back short, so nothing is
    /// left out silently: past the invocation's row limit it is an error.
    pub fn scan_each(
        entity: &str,
        filter: &str,
        fields: &[&str],
        page: u32,
        mut each: impl FnMut(Scanned),
    ) -> Result<usize, HostError> {
        let mut after = String::new();
        let mut count = 0;
        loop {
            let batch = scan(entity, filter, fields, &after, page.max(1))?;
            let full = batch.len() as u32 >= page.max(1);
            if let Some(last) = batch.last() {
                after = last.id.clone();
            }
            count += batch.len();
            for scanned in batch {
                each(scanned);
            }
            if !full {
                return Ok(count);
            }
        }
    }

    /// A text as a quoted literal of the filter language: `O'Brien` → `'O''Brien'`. Quote
    /// every value you put into a filter.
    pub fn quote(text: &str) -> String {
        format!("'{}'", text.replace('\'', "''"))
    }

    /// Every record of `entity` matching `filter` ("" for all), read page by page in id order
    /// (`page` records a call at most; the host may answer fewer), up to `max` records. It reads
    /// until a page comes back empty, so a result is never cut short silently: reading past the
    /// invocation's row limit is an error. Each page is one host call, counted against the
    /// plugin's limits of calls and rows.
    pub fn query_all(
        entity: &str,
        filter: &str,
        page: u32,
        max: usize,
    ) -> Result<Vec<Record>, HostError> {
        let filter = filter.trim();
        let mut found: Vec<Record> = Vec::new();
        while found.len() < max {
            let page_filter = match (found.last(), filter.is_empty()) {
                (Some(last), true) => format!("_id gt {}", quote(&last.id)),
                (Some(last), false) => format!("({filter}) and _id gt {}", quote(&last.id)),
                (None, _) => filter.to_owned(),
            };
            let room = u32::try_from(max - found.len()).unwrap_or(u32::MAX);
            let batch = query(entity, &page_filter, "_id", page.min(room).max(1))?;
            if batch.is_empty() {
                break;
            }
            found.extend(batch);
        }
        Ok(found)
    }

    /// Creates a record from a JSON object of field values.
    pub fn create(entity: &str, data: &Value) -> Result<Record, HostError> {
        host::create(entity, &data.to_string()).map(Record::from_wit)
    }

    /// Changes the given fields of a record (`null` clears a field).
    pub fn update(entity: &str, id: &str, patch: &Value) -> Result<Record, HostError> {
        host::update(entity, id, &patch.to_string()).map(Record::from_wit)
    }
}

/// The plugin's configuration for the current tenant (a JSON object, `{}` if none).
pub fn config() -> Map<String, Value> {
    parse_object(&bindings::rapport::plugin::config::get())
}

/// Log lines, kept with the invocation's run record.
pub mod log {
    use crate::bindings::rapport::plugin::log::{Level, write};

    pub fn debug(message: &str) {
        write(Level::Debug, message);
    }

    pub fn info(message: &str) {
        write(Level::Info, message);
    }

    pub fn warn(message: &str) {
        write(Level::Warn, message);
    }

    pub fn error(message: &str) {
        write(Level::Error, message);
    }
}

/// Enqueues an outbox message (sent after the write commits) of a kind the manifest requests.
pub fn enqueue(kind: &str, payload: &Value) -> Result<String, HostError> {
    bindings::rapport::plugin::outbox::enqueue(kind, &payload.to_string())
}
