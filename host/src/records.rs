//! Records of metadata-defined entities: validated writes with history, reads, lists with
//! filters, sorts, keyset pagination, field selection, expansion and search.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::auth::Principal;
use crate::domain::{RecordId, UserId};
use crate::metadata::definition::{EntityDefinition, FieldDefinition, FieldType};
use crate::metadata::record_schema::FieldErrors;
use crate::metadata::{CompiledEntity, Metadata, MetadataError, values};
use crate::store::direct::Direct;
use crate::store::records::{
    IdempotentResponse, ListQuery, Listed, NewHistory, NewRecord, RecordText, StoredRecord,
};
use crate::store::{Dialect, Scoped, SqlValue, Store, StoreError, Tx};
use crate::workflows::Workflows;
use crate::workflows::definition::Event;

pub mod access;
pub mod aggregate;
mod computed;
mod customer;
pub mod filter;
pub mod hooks;
pub mod query;
pub mod steps;

use crate::plugins::runtime::{Operation, Stage};
use crate::plugins::{PluginError, Plugins};
pub use access::Sight;
use computed::Change;
pub use customer::Lookup;
use hooks::{PluginFailure, WriteContext};

/// The most records one batch request may hold.
pub const MAX_BATCH: usize = 1000;

/// Errors of the records layer.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("no `{entity}` record has id `{id}`")]
    NotFound { entity: String, id: String },
    #[error("the record is invalid")]
    Invalid(FieldErrors),
    #[error("the record conflicts with existing records")]
    Conflict(FieldErrors),
    #[error(
        "the record is at version {current}, not {expected}: reload it and apply your change again"
    )]
    VersionMismatch { expected: i64, current: i64 },
    #[error("{0}")]
    BadRequest(String),
    #[error("`Idempotency-Key` `{0}` was already used for a different request")]
    IdempotencyMismatch(String),
    #[error("{0}")]
    Plugin(Box<PluginFailure>),
    #[error(
        "field `{field}` of `{entity}` is computed by function `{function}` of plugin `{plugin}`, which is not enabled in this tenant (or does not provide that function): enable the plugin, or deactivate the field"
    )]
    ComputedUnavailable {
        entity: String,
        field: String,
        plugin: String,
        function: String,
    },
    #[error("{0}")]
    DepthExceeded(String),
    #[error("{0}")]
    Forbidden(String),
    #[error(transparent)]
    Plugins(#[from] PluginError),
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn bad(message: impl Into<String>) -> RecordError {
    RecordError::BadRequest(message.into())
}

/// The records of a batch as the API answers them, `{"data": [...]}`: serialized straight from
/// the views (through a `json!` value, each record's raw JSON was parsed into a tree again).
#[derive(Serialize)]
struct Batch<'a> {
    data: &'a [RecordView],
}

/// A record as the API shows it.
#[derive(Debug, Serialize)]
pub struct RecordView {
    pub id: String,
    pub version: i64,
    pub owner: String,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: OffsetDateTime,
    pub created_by: String,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
    pub updated_by: String,
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub deleted_at: Option<OffsetDateTime>,
    pub data: Box<RawValue>,
    /// Referenced records, by reference field, when asked for with `expand`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expanded: Option<BTreeMap<String, Option<RecordView>>>,
}

/// A page of a list.
#[derive(Debug, Serialize)]
pub struct Page {
    pub data: Vec<RecordView>,
    /// Pass as `cursor` to get the next page; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// A response body with its status, as remembered for `Idempotency-Key` replays.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// An `Idempotency-Key` and the hash of the request it came with.
#[derive(Debug, Clone)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: String,
}

impl Idempotency {
    pub fn new(key: String, method: &str, path: &str, body: &[u8]) -> Self {
        let mut hasher = Sha256::new();
        hasher.update(method.as_bytes());
        hasher.update(b"\n");
        hasher.update(path.as_bytes());
        hasher.update(b"\n");
        hasher.update(body);
        let request_hash = hasher
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect();
        Self { key, request_hash }
    }
}

/// Which records a list shows, by deletion state.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Deleted {
    #[default]
    Exclude,
    Include,
    Only,
}

/// How records are shown: which fields and which references expanded.
#[derive(Debug, Clone, Default)]
pub struct Shape {
    pub fields: Option<String>,
    pub expand: Option<String>,
}

/// Parameters of a list.
#[derive(Debug, Clone, Default)]
pub struct ListParams {
    pub filter: Option<String>,
    pub sort: Option<String>,
    pub limit: Option<i64>,
    pub cursor: Option<String>,
    pub q: Option<String>,
    pub deleted: Deleted,
    pub shape: Shape,
}

/// An update in a batch.
#[derive(Debug, Clone)]
pub struct BatchUpdate {
    pub id: String,
    pub version: Option<i64>,
    pub data: Value,
}

/// Which fields the constraint checks look at, and which stored record they ignore (the one being
/// updated or restored).
struct Checked<'a> {
    fields: Option<&'a [&'a String]>,
    except: Option<&'a str>,
}

impl Checked<'_> {
    fn covers(&self, field: &FieldDefinition) -> bool {
        self.fields.is_none_or(|names| {
            names
                .iter()
                .any(|name| name.as_str() == field.name.as_str())
        })
    }
}

/// Records of every entity of every tenant.
#[derive(Debug, Clone)]
pub struct Records {
    store: Store,
    metadata: Arc<Metadata>,
    plugins: Plugins,
    workflows: Workflows,
}

fn parse_id(entity: &str, id: &str) -> Result<RecordId, RecordError> {
    RecordId::parse(id).ok_or_else(|| RecordError::NotFound {
        entity: entity.to_owned(),
        id: id.to_owned(),
    })
}

fn to_sql_value(value: &Value) -> Option<SqlValue> {
    match value {
        Value::String(text) => Some(SqlValue::Text(text.clone())),
        Value::Bool(boolean) => Some(SqlValue::Bool(*boolean)),
        Value::Number(number) => number
            .as_i64()
            .map(SqlValue::Int)
            .or_else(|| number.as_f64().map(SqlValue::Float)),
        Value::Object(object) => object.get("amount").and_then(to_sql_value),
        _ => None,
    }
}

fn json_text(value: &Value) -> String {
    match value {
        Value::String(text) => text.clone(),
        other => other.to_string(),
    }
}

/// Checks the keys a client sent: every one must be an active, writable field.
fn check_keys(entity: &CompiledEntity, body: &Map<String, Value>, errors: &mut FieldErrors) {
    for key in body.keys() {
        let message = match entity.definition.field(key) {
            None => format!("`{key}` is not a field of `{}`", entity.name()),
            Some(field) if !field.active => format!("field `{key}` is deactivated"),
            Some(field) if field.is_read_only() => {
                format!("field `{key}` is read-only: the server sets it")
            }
            Some(_) => continue,
        };
        errors.entry(key.clone()).or_default().push(message);
    }
}

/// The part of a stored body a client could have written: active, writable fields.
fn writable_part(entity: &CompiledEntity, data: &Map<String, Value>) -> Map<String, Value> {
    data.iter()
        .filter(|(key, _)| {
            entity
                .definition
                .field(key)
                .is_some_and(|field| field.active && !field.is_read_only())
        })
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

fn validate(
    entity: &CompiledEntity,
    writable: Map<String, Value>,
) -> Result<Map<String, Value>, FieldErrors> {
    let mut body = Value::Object(writable);
    let mut errors = entity.check(&body);
    if errors.is_empty() {
        let object = body.as_object_mut().expect("an object");
        for (key, value) in object.iter_mut() {
            let field = entity
                .definition
                .field(key)
                .expect("validated keys are fields");
            if let Err(message) = values::normalize(field, value) {
                errors.entry(key.clone()).or_default().push(message);
            }
        }
    }
    if errors.is_empty() {
        let Value::Object(object) = body else {
            unreachable!("built as an object")
        };
        Ok(object)
    } else {
        Err(errors)
    }
}

fn parse_body(record: &StoredRecord) -> Result<Map<String, Value>, StoreError> {
    serde_json::from_str(&record.data)
        .map_err(|error| StoreError::Corrupt(format!("record `{}`: {error}", record.id)))
}

/// The changes between two bodies: `{field: {"from": …, "to": …}}`.
fn changes(before: &Map<String, Value>, after: &Map<String, Value>) -> Map<String, Value> {
    let mut changes = Map::new();
    for key in before.keys().chain(after.keys()) {
        let (from, to) = (before.get(key), after.get(key));
        if from != to && !changes.contains_key(key) {
            changes.insert(key.clone(), json!({"from": from, "to": to}));
        }
    }
    changes
}

/// A new record's history entry, as [`changes`] from nothing gives it (`{field: {"from": null,
/// "to": value}}`), serialized without copying the record's values: a bulk import writes a
/// thousand of them per request.
struct Created<'a>(&'a Map<String, Value>);

/// Why a direct create ([`Records::create_direct`]) did not write.
enum Redo {
    /// The general path should write instead: the definition changed, or the insert failed
    /// (the general path says why).
    Again,
    /// The write failed in a way that writing again would not mend.
    Failed(StoreError),
}

impl From<StoreError> for Redo {
    fn from(error: StoreError) -> Self {
        Redo::Failed(error)
    }
}

/// New records before their insert: a fresh id, the stored JSON and the `create` history's
/// changes of each body.
struct NewRecords {
    ids: Vec<RecordId>,
    texts: Vec<String>,
    changes: Vec<String>,
}

impl NewRecords {
    fn of(bodies: &[Map<String, Value>]) -> Self {
        fn json(value: &impl Serialize) -> String {
            serde_json::to_string(value).expect("a JSON object serializes")
        }
        NewRecords {
            ids: bodies.iter().map(|_| RecordId::generate()).collect(),
            texts: bodies.iter().map(json).collect(),
            changes: bodies.iter().map(|body| json(&Created(body))).collect(),
        }
    }

    /// The rows that insert them (version 1) and their `create` history.
    fn rows<'a>(
        &'a self,
        user: &'a UserId,
        now: OffsetDateTime,
    ) -> (Vec<NewRecord<'a>>, Vec<NewHistory<'a>>) {
        self.ids
            .iter()
            .zip(&self.texts)
            .zip(&self.changes)
            .map(|((id, data), changes)| {
                let record = NewRecord {
                    id: id.as_str(),
                    data,
                    owner: user,
                    user,
                    now,
                };
                let history = NewHistory {
                    record_id: id.as_str(),
                    version: 1,
                    operation: "create",
                    user,
                    now,
                    changes: changes.clone(),
                };
                (record, history)
            })
            .unzip()
    }

    /// The records as stored: version 1, owned by their creator.
    fn stored(&self, user: &UserId, now: OffsetDateTime) -> Vec<StoredRecord> {
        self.ids
            .iter()
            .zip(&self.texts)
            .map(|(id, data)| StoredRecord {
                id: id.to_string(),
                version: 1,
                data: data.clone(),
                owner_id: user.to_string(),
                created_at: now,
                created_by: user.to_string(),
                updated_at: now,
                updated_by: user.to_string(),
                deleted_at: None,
            })
            .collect()
    }
}

impl Serialize for Created<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Change<'a> {
            from: (),
            to: &'a Value,
        }
        serializer.collect_map(self.0.iter().map(|(field, value)| {
            (
                field,
                Change {
                    from: (),
                    to: value,
                },
            )
        }))
    }
}

impl Records {
    pub fn new(
        store: Store,
        metadata: Arc<Metadata>,
        plugins: Plugins,
        workflows: Workflows,
    ) -> Self {
        Self {
            store,
            metadata,
            plugins,
            workflows,
        }
    }

    /// Checks uniqueness and references of the fields in `changed` before a write; with
    /// `stored`, also whether stored records hold its unique values (see
    /// [`unique_after_write`]).
    async fn check_constraints(
        &self,
        scoped: &mut Scoped<'_>,
        entity: &CompiledEntity,
        data: &Map<String, Value>,
        changed: &[&String],
        record_id: &str,
        stored: bool,
    ) -> Result<(), RecordError> {
        let checked = Checked {
            fields: Some(changed),
            except: Some(record_id),
        };
        let bodies = std::slice::from_ref(data);
        let key = |_: usize, field: &str| field.to_owned();
        self.check_references(scoped, entity, bodies, &key, &checked)
            .await?;
        self.check_unique(scoped, entity, bodies, &key, &checked, stored)
            .await
    }

    /// The answer to a write the database refused. When a unique index refused it and the
    /// stored holders of its values were left to the index ([`unique_after_write`]), they are
    /// looked up now, in the same transaction, so that the answer names every offending field
    /// and value as the check before a write does.
    async fn refused_write(
        &self,
        scoped: &mut Scoped<'_>,
        entity: &CompiledEntity,
        bodies: &[Map<String, Value>],
        key: &impl Fn(usize, &str) -> String,
        checked: &Checked<'_>,
        error: StoreError,
    ) -> RecordError {
        if unique_after_write(scoped)
            && error.violated_unique_index().is_some()
            && let Err(refusal) = self
                .check_unique(scoped, entity, bodies, key, checked, true)
                .await
        {
            return refusal;
        }
        unique_violation(entity, bodies, key, error)
    }

    /// Checks the bodies of new records against the entity's schema (keys, types, required
    /// fields, normalization), without touching the database. With `batch`, field errors are
    /// keyed `records[i].field`.
    fn prepare_new(
        principal: &Principal,
        entity: &CompiledEntity,
        inputs: &[Value],
        batch: bool,
    ) -> Result<Vec<Map<String, Value>>, RecordError> {
        access::authorize_create(principal, entity, inputs)?;
        let key = |index: usize, field: &str| batch_key(batch, index, field);
        let mut invalid = FieldErrors::new();
        let mut bodies = Vec::with_capacity(inputs.len());
        for (index, input) in inputs.iter().enumerate() {
            let Value::Object(body) = input else {
                invalid
                    .entry(key(index, ""))
                    .or_default()
                    .push("`data` must be an object of field values".to_owned());
                continue;
            };
            let mut errors = FieldErrors::new();
            check_keys(entity, body, &mut errors);
            let body: Map<String, Value> = body
                .iter()
                .filter(|(key, value)| !value.is_null() && !errors.contains_key(*key))
                .map(|(key, value)| (key.clone(), value.clone()))
                .collect();
            match validate(entity, body) {
                Ok(body) if errors.is_empty() => bodies.push(body),
                Ok(_) => {}
                Err(more) => errors.extend(more),
            }
            for (field, messages) in errors {
                invalid
                    .entry(key(index, &field))
                    .or_default()
                    .extend(messages);
            }
        }
        if invalid.is_empty() {
            Ok(bodies)
        } else {
            Err(RecordError::Invalid(invalid))
        }
    }

    /// Writes new records whose bodies passed [`Records::prepare_new`]: checks uniqueness within
    /// the set and against stored records and references, then writes all with a few multi-row
    /// statements.
    async fn insert_many(
        &self,
        scoped: &mut Scoped<'_>,
        context: &WriteContext,
        entity: &CompiledEntity,
        bodies: Vec<Map<String, Value>>,
        batch: bool,
        now: OffsetDateTime,
    ) -> Result<Vec<StoredRecord>, RecordError> {
        let user = &context.principal.user;
        let key = |index: usize, field: &str| batch_key(batch, index, field);
        let mut hooked = Vec::with_capacity(bodies.len());
        for (index, body) in bodies.into_iter().enumerate() {
            let body = self
                .run_hooks(
                    scoped,
                    context,
                    entity,
                    Operation::Create,
                    &[Stage::Validate, Stage::Before],
                    body,
                    None,
                    None,
                )
                .await
                .map_err(|error| in_batch(batch, index, error))?;
            let body = self
                .compute_fields(scoped, context, entity, body, None, None, &[])
                .await
                .map_err(|error| in_batch(batch, index, error))?;
            hooked.push(body);
        }
        let mut bodies = hooked;
        let checked = Checked {
            fields: None,
            except: None,
        };
        self.check_references(scoped, entity, &bodies, &key, &checked)
            .await?;
        let stored = !unique_after_write(scoped);
        self.check_unique(scoped, entity, &bodies, &key, &checked, stored)
            .await?;
        let count = bodies.len() as i64;
        for field in entity
            .definition
            .active_fields()
            .filter(|field| field.field_type == FieldType::AutoNumber)
        {
            let first = scoped
                .reserve_auto_numbers(entity.id, field.name.as_str(), count)
                .await?;
            for (offset, body) in bodies.iter_mut().enumerate() {
                body.insert(
                    field.name.to_string(),
                    Value::from(field.format_auto_number(first + offset as i64)),
                );
            }
        }
        let new = NewRecords::of(&bodies);
        let (rows, history) = new.rows(user, now);
        if let Err(error) = scoped
            .insert_records_with_history(entity.id, &rows, &history)
            .await
        {
            return Err(self
                .refused_write(scoped, entity, &bodies, &key, &checked, error)
                .await);
        }
        let stored = new.stored(user, now);
        let mut written = Vec::with_capacity(bodies.len());
        for (index, (record, body)) in stored.iter().zip(bodies).enumerate() {
            let body = self
                .run_hooks(
                    scoped,
                    context,
                    entity,
                    Operation::Create,
                    &[Stage::After],
                    body,
                    Some(record),
                    None,
                )
                .await
                .map_err(|error| in_batch(batch, index, error))?;
            self.fire(scoped, context, entity, Event::Created, record, &body, None)
                .await?;
            written.push(body);
        }
        let writes: Vec<Change<'_>> = written
            .iter()
            .map(|body| Change {
                before: None,
                after: Some(body),
            })
            .collect();
        self.roll_up(scoped, context, entity, &writes, now).await?;
        Ok(stored)
    }

    /// Refuses references to records that do not exist (one query per reference field).
    async fn check_references(
        &self,
        scoped: &mut Scoped<'_>,
        entity: &CompiledEntity,
        bodies: &[Map<String, Value>],
        key: &impl Fn(usize, &str) -> String,
        checked: &Checked<'_>,
    ) -> Result<(), RecordError> {
        let mut invalid = FieldErrors::new();
        for field in entity
            .definition
            .active_fields()
            .filter(|field| field.field_type == FieldType::Reference && checked.covers(field))
        {
            let name = field.name.as_str();
            let mut ids: Vec<String> = bodies
                .iter()
                .filter_map(|body| body.get(name).and_then(Value::as_str).map(str::to_owned))
                .collect();
            if ids.is_empty() {
                continue;
            }
            ids.sort();
            ids.dedup();
            let target = field.entity.as_ref().expect("references name an entity");
            let existing: HashSet<String> = match scoped.entity_version(target.as_str()).await? {
                Some((target_id, _)) => {
                    let mut existing = HashSet::new();
                    for chunk in ids.chunks(500) {
                        existing.extend(scoped.existing_ids(target_id, chunk).await?);
                    }
                    existing
                }
                None => HashSet::new(),
            };
            for (index, body) in bodies.iter().enumerate() {
                if let Some(id) = body.get(name).and_then(Value::as_str)
                    && !existing.contains(id)
                {
                    invalid
                        .entry(key(index, name))
                        .or_default()
                        .push(format!("no `{target}` record has id `{id}`"));
                }
            }
        }
        if invalid.is_empty() {
            Ok(())
        } else {
            Err(RecordError::Invalid(invalid))
        }
    }

    /// Refuses values of unique fields that repeat within `bodies` or, with `stored`, that live
    /// records hold.
    async fn check_unique(
        &self,
        scoped: &mut Scoped<'_>,
        entity: &CompiledEntity,
        bodies: &[Map<String, Value>],
        key: &impl Fn(usize, &str) -> String,
        checked: &Checked<'_>,
        stored: bool,
    ) -> Result<(), RecordError> {
        let mut conflicts = FieldErrors::new();
        for field in entity
            .definition
            .active_fields()
            .filter(|field| field.unique && checked.covers(field))
        {
            let name = field.name.as_str();
            let mut first_at: HashMap<String, usize> = HashMap::new();
            let mut values = Vec::new();
            for (index, body) in bodies.iter().enumerate() {
                let Some(value) = body.get(name) else {
                    continue;
                };
                let text = json_text(value);
                if let Some(first) = first_at.get(&text) {
                    conflicts.entry(key(index, name)).or_default().push(format!(
                        "field `{name}` must be unique: `{text}` is also in record {first} of this batch"
                    ));
                    continue;
                }
                first_at.insert(text, index);
                values.extend(to_sql_value(value));
            }
            if values.is_empty() || !stored {
                continue;
            }
            for (value, holder) in scoped
                .unique_holders(entity.id, field, &values, checked.except)
                .await?
            {
                let index = first_at.get(&value).copied();
                let at = index.map_or_else(|| key(0, name), |index| key(index, name));
                conflicts.entry(at).or_default().push(format!(
                    "field `{name}` must be unique: `{value}` is already used by {} `{holder}`",
                    entity.name()
                ));
            }
        }
        if conflicts.is_empty() {
            Ok(())
        } else {
            Err(RecordError::Conflict(conflicts))
        }
    }

    async fn update_one(
        &self,
        scoped: &mut Scoped<'_>,
        context: &WriteContext,
        entity: &CompiledEntity,
        update: BatchUpdate,
        now: OffsetDateTime,
        recompute: &[String],
    ) -> Result<StoredRecord, RecordError> {
        let user = &context.principal.user;
        let not_found = || RecordError::NotFound {
            entity: entity.name().to_owned(),
            id: update.id.clone(),
        };
        let id = RecordId::parse(&update.id).ok_or_else(not_found)?;
        let stored = scoped
            .get_record(entity.id, id.as_str())
            .await?
            .filter(|r| r.deleted_at.is_none())
            .ok_or_else(not_found)?;
        let Value::Object(patch) = update.data else {
            return Err(RecordError::Invalid(FieldErrors::from([(
                String::new(),
                vec!["`data` must be an object of field values".to_owned()],
            )])));
        };
        // A refresh of computed fields (a roll-up, a recompute) writes nothing a client could:
        // it is not limited by the role of whoever caused it.
        if recompute.is_empty() || !patch.is_empty() {
            access::authorize_update(&context.principal, entity, &stored, &patch)?;
        }
        if let Some(expected) = update.version
            && expected != stored.version
        {
            return Err(RecordError::VersionMismatch {
                expected,
                current: stored.version,
            });
        }
        let mut errors = FieldErrors::new();
        check_keys(entity, &patch, &mut errors);
        let before = parse_body(&stored)?;
        let mut writable = writable_part(entity, &before);
        for (key, value) in patch.iter().filter(|(key, _)| !errors.contains_key(*key)) {
            if value.is_null() {
                writable.remove(key);
            } else {
                writable.insert(key.clone(), value.clone());
            }
        }
        let writable = match validate(entity, writable) {
            Ok(writable) if errors.is_empty() => writable,
            Ok(_) => return Err(RecordError::Invalid(errors)),
            Err(more) => {
                errors.extend(more);
                return Err(RecordError::Invalid(errors));
            }
        };
        let mut after = before.clone();
        for key in patch.keys() {
            match writable.get(key) {
                Some(value) => after.insert(key.clone(), value.clone()),
                None => after.remove(key),
            };
        }
        let after = self
            .run_hooks(
                scoped,
                context,
                entity,
                Operation::Update,
                &[Stage::Validate, Stage::Before],
                after,
                Some(&stored),
                Some(&before),
            )
            .await?;
        let after = self
            .compute_fields(
                scoped,
                context,
                entity,
                after,
                Some(&stored),
                Some(&before),
                recompute,
            )
            .await?;
        let history = changes(&before, &after);
        if history.is_empty() {
            return Ok(stored);
        }
        let changed: Vec<&String> = history.keys().collect();
        let against_stored = !unique_after_write(scoped);
        self.check_constraints(
            scoped,
            entity,
            &after,
            &changed,
            id.as_str(),
            against_stored,
        )
        .await?;
        let text = serde_json::to_string(&after).expect("a JSON object serializes");
        let changes = serde_json::to_string(&history).expect("a JSON object serializes");
        let written = scoped
            .update_record(
                entity.id,
                id.as_str(),
                stored.version,
                &text,
                user,
                now,
                &changes,
            )
            .await;
        let updated = match written {
            Ok(updated) => updated,
            Err(error) => {
                let checked = Checked {
                    fields: Some(&changed),
                    except: Some(id.as_str()),
                };
                let key = |_: usize, field: &str| field.to_owned();
                let bodies = std::slice::from_ref(&after);
                return Err(self
                    .refused_write(scoped, entity, bodies, &key, &checked, error)
                    .await);
            }
        };
        if !updated {
            let current = scoped
                .get_record(entity.id, id.as_str())
                .await?
                .map_or(stored.version + 1, |r| r.version);
            return Err(RecordError::VersionMismatch {
                expected: stored.version,
                current,
            });
        }
        let version = stored.version + 1;
        let updated = StoredRecord {
            version,
            data: text,
            updated_at: now,
            updated_by: user.to_string(),
            ..stored
        };
        let after = self
            .run_hooks(
                scoped,
                context,
                entity,
                Operation::Update,
                &[Stage::After],
                after,
                Some(&updated),
                Some(&before),
            )
            .await?;
        self.fire(
            scoped,
            context,
            entity,
            Event::Updated,
            &updated,
            &after,
            Some(&before),
        )
        .await?;
        let write = Change {
            before: Some(&before),
            after: Some(&after),
        };
        self.roll_up(scoped, context, entity, &[write], now).await?;
        Ok(updated)
    }

    /// Creates a record; answers 201 with the record.
    pub async fn create(
        &self,
        principal: &Principal,
        entity: &str,
        data: Value,
        idempotency: Option<&Idempotency>,
    ) -> Result<Response, RecordError> {
        self.create_many(principal, entity, vec![data], false, idempotency)
            .await
    }

    /// Creates up to [`MAX_BATCH`] records in one transaction: all or none.
    pub async fn create_batch(
        &self,
        principal: &Principal,
        entity: &str,
        records: Vec<Value>,
        idempotency: Option<&Idempotency>,
    ) -> Result<Response, RecordError> {
        check_batch_size(records.len())?;
        self.create_many(principal, entity, records, true, idempotency)
            .await
    }

    /// Creates records, remembering the response under an `Idempotency-Key`: a retry with the
    /// same key gets the first response and changes nothing. The bodies are validated before the
    /// write against the cached definition; the write confirms that definition is still current
    /// (and validates again if it is not).
    async fn create_many(
        &self,
        principal: &Principal,
        entity: &str,
        inputs: Vec<Value>,
        batch: bool,
        idempotency: Option<&Idempotency>,
    ) -> Result<Response, RecordError> {
        let now = crate::store::now();
        let mut context = WriteContext::new(principal, now);
        let prepared = match self.metadata.cached(&principal.tenant, entity) {
            Some(compiled) => match Self::prepare_new(principal, &compiled, &inputs, batch) {
                Ok(bodies) => {
                    let (bodies, pre_run) = self
                        .run_pure_hooks(&context, &compiled, bodies, batch)
                        .await?;
                    context.pre_run = Some(pre_run);
                    Some((compiled, bodies))
                }
                // Refused by a definition another host may have changed since (a field added
                // there): if so, the write's transaction validates against the current one.
                Err(refusal) => {
                    let mut conn = self.store.reader().await?;
                    let current = self
                        .metadata
                        .confirmed(&mut conn.scoped(&principal.tenant), entity)
                        .await?;
                    if current.id == compiled.id && current.version == compiled.version {
                        return Err(refusal);
                    }
                    None
                }
            },
            None => None,
        };
        if let Some((compiled, bodies)) = &prepared
            && !batch
            && idempotency.is_none()
            && self.plain_create(&context, compiled)
        {
            match self.create_direct(&context, compiled, bodies, now).await {
                Some(Ok(response)) => return Ok(response),
                Some(Err(Redo::Failed(error))) => return Err(error.into()),
                // The definition changed, or the insert failed: the general path below
                // writes again, and says why if it fails.
                Some(Err(Redo::Again)) | None => {}
            }
        }
        let this = self.clone();
        let (tenant, user) = (principal.tenant.clone(), principal.user.clone());
        let name = entity.to_owned();
        let idempotency = idempotency.cloned();
        let key = idempotency.clone();
        let result = self
            .store
            .write(move |tx: &mut Tx| {
                Box::pin(async move {
                    let mut scoped = tx.scoped(&tenant);
                    if let Some(idempotency) = &idempotency
                        && let Some(previous) =
                            scoped.idempotent_response(&user, &idempotency.key).await?
                    {
                        return replay(idempotency, previous);
                    }
                    let compiled = this.metadata.compiled_for_write(&mut scoped, &name).await?;
                    let bodies = match prepared {
                        Some((seen, bodies))
                            if seen.id == compiled.id && seen.version == compiled.version =>
                        {
                            bodies
                        }
                        // The definition changed meanwhile: every hook runs again, in here.
                        _ => {
                            context.pre_run = None;
                            Self::prepare_new(&context.principal, &compiled, &inputs, batch)?
                        }
                    };
                    let stored = this
                        .insert_many(&mut scoped, &context, &compiled, bodies, batch, now)
                        .await?;
                    let sight = Sight::of(&context.principal, &compiled);
                    let views = stored
                        .iter()
                        .map(|record| view(record, &sight.definition, scoped.dialect(), None))
                        .collect::<Result<Vec<_>, _>>()?;
                    let body = if batch {
                        serde_json::to_string(&Batch { data: &views })
                    } else {
                        serde_json::to_string(&views[0])
                    }
                    .expect("views serialize");
                    let response = Response { status: 201, body };
                    if let Some(idempotency) = &idempotency {
                        scoped
                            .save_idempotent_response(
                                &user,
                                &idempotency.key,
                                &idempotency.request_hash,
                                response.status,
                                &response.body,
                            )
                            .await?;
                    }
                    Ok(response)
                })
            })
            .await;
        if result.is_ok() {
            self.workflows.wake();
        }
        match (result, key) {
            // A concurrent request with the same key committed first (PostgreSQL): this one
            // rolled back, and the first response is the answer.
            (Err(RecordError::Store(error)), Some(idempotency))
                if error
                    .violated_unique_index()
                    .is_some_and(|index| index.starts_with("idempotency_keys")) =>
            {
                let mut conn = self.store.reader().await?;
                let previous = conn
                    .scoped(&principal.tenant)
                    .idempotent_response(&principal.user, &idempotency.key)
                    .await?
                    .ok_or(RecordError::Store(error))?;
                replay(&idempotency, previous)
            }
            (result, _) => result,
        }
    }

    /// Whether a create of `entity` is an insert and nothing more once its bodies are prepared:
    /// every plugin call ran before the transaction, and no computed field, reference,
    /// auto-number or workflow needs the database inside it.
    fn plain_create(&self, context: &WriteContext, entity: &CompiledEntity) -> bool {
        self.store.dialect() == Dialect::Sqlite
            && context
                .pre_run
                .as_ref()
                .is_some_and(|pre_run| pre_run.covers_create(entity.name()))
            && entity.computed_fields().next().is_none()
            && !entity.definition.active_fields().any(|field| {
                matches!(
                    field.field_type,
                    FieldType::Reference | FieldType::AutoNumber
                )
            })
            && (context.quiet
                || self
                    .workflows
                    .surely_idle_on(&context.principal.tenant, entity.name()))
    }

    /// A plain create ([`Records::plain_create`]) on SQLite's write connection's handle, without
    /// a round trip to sqlx's thread ([`crate::store::direct`]). Everything but the insert is
    /// done before: the record's id, its stored JSON and history, the response. `None` on
    /// PostgreSQL.
    async fn create_direct(
        &self,
        context: &WriteContext,
        compiled: &Arc<CompiledEntity>,
        bodies: &[Map<String, Value>],
        now: OffsetDateTime,
    ) -> Option<Result<Response, Redo>> {
        let user = context.principal.user.clone();
        let new = NewRecords::of(bodies);
        let stored = new.stored(&user, now);
        let sight = Sight::of(&context.principal, compiled);
        let body = match view(&stored[0], &sight.definition, Dialect::Sqlite, None) {
            Ok(view) => serde_json::to_string(&view).expect("views serialize"),
            Err(error) => return Some(Err(Redo::Failed(error))),
        };
        let tenant = context.principal.tenant.clone();
        let (name, entity_id, version) =
            (compiled.name().to_owned(), compiled.id, compiled.version);
        let metadata = self.metadata.clone();
        let (plugins, workflows) = (self.plugins.clone(), self.workflows.clone());
        let active = context
            .pre_run
            .as_ref()
            .map(|pre_run| pre_run.active().clone());
        let quiet = context.quiet;
        let written = self
            .store
            .write_direct(move |direct: &mut Direct<'_>| {
                // What made this create plain is checked again here, in its transaction, where
                // the general path reads it: a plugin or workflow enabled meanwhile sends it
                // there.
                if !active.is_some_and(|active| plugins.still_active(&tenant, &active))
                    || !(quiet || workflows.surely_idle_on(&tenant, &name))
                {
                    return Err(Redo::Again);
                }
                let mut scoped = direct.scoped(&tenant);
                if scoped.entity_version(&name)? != Some((entity_id, version)) {
                    return Err(Redo::Again);
                }
                metadata.confirm(&tenant, &name, entity_id, version);
                let (rows, history) = new.rows(&user, now);
                scoped
                    .insert_records_with_history(entity_id, &rows, &history)
                    .map_err(|_| Redo::Again)
            })
            .await?;
        Some(written.map(|()| {
            self.workflows.wake();
            Response { status: 201, body }
        }))
    }

    /// Applies a partial update (`null` clears a field), honouring an expected version.
    pub async fn update(
        &self,
        principal: &Principal,
        entity: &str,
        update: BatchUpdate,
    ) -> Result<RecordView, RecordError> {
        let mut views = self
            .update_many(principal, entity, vec![update], false)
            .await?;
        Ok(views.pop().expect("one update in, one record out"))
    }

    /// Updates up to [`MAX_BATCH`] records in one transaction: all or none.
    pub async fn update_batch(
        &self,
        principal: &Principal,
        entity: &str,
        updates: Vec<BatchUpdate>,
    ) -> Result<Vec<RecordView>, RecordError> {
        check_batch_size(updates.len())?;
        self.update_many(principal, entity, updates, true).await
    }

    /// Updates records in one write; with `batch`, errors name `records[i]`.
    async fn update_many(
        &self,
        principal: &Principal,
        entity: &str,
        updates: Vec<BatchUpdate>,
        batch: bool,
    ) -> Result<Vec<RecordView>, RecordError> {
        let this = self.clone();
        let principal = principal.clone();
        let entity = entity.to_owned();
        let result = self
            .store
            .write(move |tx: &mut Tx| {
                Box::pin(async move {
                    let mut scoped = tx.scoped(&principal.tenant);
                    let compiled = this
                        .metadata
                        .compiled_for_write(&mut scoped, &entity)
                        .await?;
                    let now = crate::store::now();
                    let context = WriteContext::new(&principal, now);
                    let sight = Sight::of(&principal, &compiled);
                    let mut views = Vec::with_capacity(updates.len());
                    for (index, update) in updates.into_iter().enumerate() {
                        let stored = this
                            .update_one(&mut scoped, &context, &compiled, update, now, &[])
                            .await
                            .map_err(|error| in_batch(batch, index, error))?;
                        views.push(view(&stored, &sight.definition, scoped.dialect(), None)?);
                    }
                    Ok(views)
                })
            })
            .await;
        if result.is_ok() {
            self.workflows.wake();
        }
        result
    }

    /// Soft-deletes (`restore == false`) or restores a record.
    pub async fn set_deleted(
        &self,
        principal: &Principal,
        entity: &str,
        id: &str,
        expected: Option<i64>,
        restore: bool,
    ) -> Result<RecordView, RecordError> {
        let record_id = parse_id(entity, id)?;
        let id = id.to_owned();
        let this = self.clone();
        let principal = principal.clone();
        let entity = entity.to_owned();
        let result = self
            .store
            .write(move |tx: &mut Tx| {
                Box::pin(async move {
                    let entity = entity.as_str();
                    let mut scoped = tx.scoped(&principal.tenant);
                    let compiled = this
                        .metadata
                        .compiled_for_write(&mut scoped, entity)
                        .await?;
                    let not_found = || RecordError::NotFound {
                        entity: entity.to_owned(),
                        id: id.to_owned(),
                    };
                    let stored = scoped
                        .get_record(compiled.id, record_id.as_str())
                        .await?
                        .ok_or_else(not_found)?;
                    access::authorize_delete(&principal, &compiled, &stored)?;
                    if let Some(expected) = expected
                        && expected != stored.version
                    {
                        return Err(RecordError::VersionMismatch {
                            expected,
                            current: stored.version,
                        });
                    }
                    if stored.deleted_at.is_some() != restore {
                        return Err(bad(if restore {
                            "the record is not deleted"
                        } else {
                            "the record is already deleted"
                        }));
                    }
                    let now = crate::store::now();
                    let context = WriteContext::new(&principal, now);
                    let body = parse_body(&stored)?;
                    if !restore {
                        this.run_hooks(
                            &mut scoped,
                            &context,
                            &compiled,
                            Operation::Delete,
                            &[Stage::Validate, Stage::Before],
                            body.clone(),
                            Some(&stored),
                            Some(&body),
                        )
                        .await?;
                    } else {
                        // A value taken by another record meanwhile would break uniqueness.
                        let keys: Vec<&String> = body
                            .keys()
                            .filter(|key| {
                                compiled
                                    .definition
                                    .field(key)
                                    .is_some_and(|field| field.active)
                            })
                            .collect();
                        this.check_constraints(
                            &mut scoped,
                            &compiled,
                            &body,
                            &keys,
                            record_id.as_str(),
                            true,
                        )
                        .await?;
                    }
                    let deleted_at = (!restore).then_some(now);
                    if !scoped
                        .set_deleted(
                            compiled.id,
                            record_id.as_str(),
                            stored.version,
                            deleted_at,
                            &principal.user,
                            now,
                        )
                        .await?
                    {
                        return Err(RecordError::VersionMismatch {
                            expected: stored.version,
                            current: stored.version + 1,
                        });
                    }
                    let version = stored.version + 1;
                    let operation = if restore { "restore" } else { "delete" };
                    scoped
                        .insert_history(
                            compiled.id,
                            record_id.as_str(),
                            version,
                            operation,
                            &principal.user,
                            now,
                            "{}",
                        )
                        .await?;
                    let stored = StoredRecord {
                        version,
                        deleted_at,
                        updated_at: now,
                        updated_by: principal.user.to_string(),
                        ..stored
                    };
                    if !restore {
                        this.run_hooks(
                            &mut scoped,
                            &context,
                            &compiled,
                            Operation::Delete,
                            &[Stage::After],
                            body.clone(),
                            Some(&stored),
                            Some(&body),
                        )
                        .await?;
                        this.fire(
                            &mut scoped,
                            &context,
                            &compiled,
                            Event::Deleted,
                            &stored,
                            &body,
                            None,
                        )
                        .await?;
                    }
                    let write = if restore {
                        Change {
                            before: None,
                            after: Some(&body),
                        }
                    } else {
                        Change {
                            before: Some(&body),
                            after: None,
                        }
                    };
                    this.roll_up(&mut scoped, &context, &compiled, &[write], now)
                        .await?;
                    let sight = Sight::of(&principal, &compiled);
                    let view = view(&stored, &sight.definition, scoped.dialect(), None)?;
                    Ok(view)
                })
            })
            .await;
        if result.is_ok() {
            self.workflows.wake();
        }
        result
    }

    /// Gives a record another owner (a user of the tenant): the caller's roles must allow
    /// updating the record and reassigning.
    pub async fn assign(
        &self,
        principal: &Principal,
        entity: &str,
        id: &str,
        owner: &str,
    ) -> Result<RecordView, RecordError> {
        let record_id = parse_id(entity, id)?;
        let this = self.clone();
        let principal = principal.clone();
        let entity = entity.to_owned();
        let owner = owner.to_owned();
        let result = self
            .store
            .write(move |tx: &mut Tx| {
                Box::pin(async move {
                    let mut scoped = tx.scoped(&principal.tenant);
                    if scoped.user_principal(&owner).await?.is_none() {
                        return Err(RecordError::Invalid(FieldErrors::from([(
                            "owner".to_owned(),
                            vec![format!("no enabled user of the tenant has id `{owner}`")],
                        )])));
                    }
                    let context = WriteContext::new(&principal, crate::store::now());
                    let stored = this
                        .step_assign(&mut scoped, &context, &entity, record_id.as_str(), &owner)
                        .await?;
                    let compiled = this
                        .metadata
                        .compiled_for_write(&mut scoped, &entity)
                        .await?;
                    let sight = Sight::of(&principal, &compiled);
                    Ok(view(&stored, &sight.definition, scoped.dialect(), None)?)
                })
            })
            .await;
        if result.is_ok() {
            self.workflows.wake();
        }
        result
    }

    /// Deletes a record and its history for good.
    pub async fn purge(
        &self,
        principal: &Principal,
        entity: &str,
        id: &str,
    ) -> Result<(), RecordError> {
        // Gone for good, history and all: an administrator's decision, and audited.
        if !principal.is_admin() {
            return Err(RecordError::Forbidden(
                "purging a record (deleting it and its history for good) needs an administrator's role; delete it instead".to_owned(),
            ));
        }
        let record_id = parse_id(entity, id)?;
        let id = id.to_owned();
        let this = self.clone();
        let principal = principal.clone();
        let entity = entity.to_owned();
        self.store
            .write(move |tx: &mut Tx| {
                Box::pin(async move {
                    let entity = entity.as_str();
                    let mut scoped = tx.scoped(&principal.tenant);
                    let compiled = this
                        .metadata
                        .compiled_for_write(&mut scoped, entity)
                        .await?;
                    if !scoped.purge_record(compiled.id, record_id.as_str()).await? {
                        return Err(RecordError::NotFound {
                            entity: entity.to_owned(),
                            id: id.to_owned(),
                        });
                    }
                    scoped
                        .audit(
                            Some(principal.user.as_str()),
                            "record.purge",
                            Some(&format!("{entity}/{id}")),
                            &json!({}),
                        )
                        .await?;
                    Ok(())
                })
            })
            .await
    }

    pub async fn get(
        &self,
        principal: &Principal,
        entity: &str,
        id: &str,
        shape: &Shape,
        include_deleted: bool,
    ) -> Result<RecordView, RecordError> {
        let record_id = parse_id(entity, id)?;
        let mut conn = self.store.reader().await?;
        let mut scoped = conn.scoped(&principal.tenant);
        let compiled = self.metadata.compiled(&mut scoped, entity).await?;
        let sight = Sight::readable(principal, &compiled)?;
        let selection = selection(&sight.definition, shape.fields.as_deref())?;
        let expand = expansions(&sight.definition, shape.expand.as_deref())?;
        let stored = scoped
            .get_record(compiled.id, record_id.as_str())
            .await?
            .filter(|record| include_deleted || record.deleted_at.is_none())
            .filter(|record| access::can_read(principal, &sight.grant, record))
            .ok_or_else(|| RecordError::NotFound {
                entity: entity.to_owned(),
                id: id.to_owned(),
            })?;
        let mut views = vec![view(
            &stored,
            &sight.definition,
            scoped.dialect(),
            selection.as_deref(),
        )?];
        self.expand(
            &mut scoped,
            principal,
            &expand,
            std::slice::from_ref(&stored),
            &mut views,
        )
        .await?;
        Ok(views.pop().expect("one view"))
    }

    pub async fn list(
        &self,
        principal: &Principal,
        entity: &str,
        params: &ListParams,
    ) -> Result<Page, RecordError> {
        Ok(self
            .list_entity(principal, entity, params, Output::Page)
            .await?
            .page())
    }

    /// [`Self::list`] as the JSON body of the API's answer, written straight from SQLite's
    /// page where it can be (see [`write_page`]).
    pub async fn list_body(
        &self,
        principal: &Principal,
        entity: &str,
        params: &ListParams,
    ) -> Result<String, RecordError> {
        Ok(self
            .list_entity(principal, entity, params, Output::Body)
            .await?
            .body())
    }

    async fn list_entity(
        &self,
        principal: &Principal,
        entity: &str,
        params: &ListParams,
        output: Output,
    ) -> Result<ListOutput, RecordError> {
        let mut conn = self.store.reader().await?;
        let mut scoped = conn.scoped(&principal.tenant);
        let compiled = self.metadata.compiled(&mut scoped, entity).await?;
        self.list_as(&mut scoped, principal, &compiled, params, None, output)
            .await
    }

    /// Groups and measures over the records of `entity` the principal may read (see
    /// [`aggregate`]).
    pub async fn aggregate(
        &self,
        principal: &Principal,
        entity: &str,
        params: &aggregate::AggregateParams,
    ) -> Result<aggregate::Aggregation, RecordError> {
        let mut conn = self.store.reader().await?;
        let mut scoped = conn.scoped(&principal.tenant);
        let plan = self
            .plan_aggregate(&mut scoped, Some(principal), entity, params)
            .await?;
        let rows = scoped
            .aggregate_rows(
                &plan.sql,
                plan.apart.as_deref(),
                plan.binds.clone(),
                plan.kinds(),
            )
            .await?;
        plan.result(rows)
    }

    /// Compiles an aggregation: as `principal` sees the entities, or (`None`, for checking a
    /// saved report) as they are.
    pub async fn plan_aggregate(
        &self,
        scoped: &mut Scoped<'_>,
        principal: Option<&Principal>,
        entity: &str,
        params: &aggregate::AggregateParams,
    ) -> Result<aggregate::Plan, RecordError> {
        let groups = aggregate::parse_groups(params.group_by.as_deref()).map_err(bad)?;
        let measures = aggregate::parse_measures(params.measures.as_deref()).map_err(bad)?;
        let compiled = self.metadata.compiled(scoped, entity).await?;
        let sight = |compiled: &Arc<CompiledEntity>| -> Result<(EntityDefinition, Option<Vec<String>>), RecordError> {
            match principal {
                Some(principal) => {
                    let sight = Sight::readable(principal, compiled)?;
                    Ok((
                        sight.definition.into_owned(),
                        principal.owners(sight.grant.read),
                    ))
                }
                None => Ok((compiled.definition.clone(), None)),
            }
        };
        let (definition, owners) = sight(&compiled)?;
        // The referenced entities groups reach through, as the caller sees them.
        let mut targets: Vec<(String, i64, EntityDefinition, Option<Vec<String>>)> = Vec::new();
        for group in groups.iter().filter(|group| group.sub.is_some()) {
            let Some(reference) = definition.field(&group.field).filter(|field| field.active)
            else {
                continue;
            };
            if let Some(target) = &reference.entity
                && !targets
                    .iter()
                    .any(|(name, ..)| name == reference.name.as_str())
            {
                let target = self.metadata.compiled(scoped, target.as_str()).await?;
                let (target_definition, target_owners) = sight(&target)?;
                targets.push((
                    reference.name.to_string(),
                    target.id,
                    target_definition,
                    target_owners,
                ));
            }
        }
        let through = targets
            .iter()
            .map(|(field, entity_id, target_definition, target_owners)| {
                (
                    field.clone(),
                    aggregate::Through {
                        reference: definition.field(field).expect("found above"),
                        entity_id: *entity_id,
                        definition: target_definition,
                        owners: target_owners.clone(),
                    },
                )
            })
            .collect();
        let offset = if groups.iter().any(|group| group.bucket.is_some()) {
            let (_, zone) = scoped.tenant_settings().await?;
            crate::workflows::timers::utc_offset_minutes(&zone)
        } else {
            0
        };
        aggregate::Compile {
            dialect: scoped.dialect(),
            tenant: scoped.tenant().as_str(),
            entity_id: compiled.id,
            definition: &definition,
            owners,
            params,
            groups,
            measures,
            through,
            offset,
        }
        .plan()
    }

    /// Records of `source` whose reference field points at the record `id` of `entity` (for a
    /// link entity, one side of a many-to-many relation).
    pub async fn related(
        &self,
        principal: &Principal,
        entity: &str,
        id: &str,
        source: &str,
        field: Option<&str>,
        params: &ListParams,
    ) -> Result<Page, RecordError> {
        let record_id = parse_id(entity, id)?;
        let mut conn = self.store.reader().await?;
        let mut scoped = conn.scoped(&principal.tenant);
        let target = self.metadata.compiled(&mut scoped, entity).await?;
        let target_sight = Sight::readable(principal, &target)?;
        live_readable(
            &mut scoped,
            principal,
            &target,
            &target_sight,
            &record_id,
            id,
        )
        .await?;
        let compiled = self.metadata.compiled(&mut scoped, source).await?;
        // Only reference fields the caller may read: listing by a hidden one would tell its
        // values.
        let sight = Sight::readable(principal, &compiled)?;
        let references: Vec<&FieldDefinition> = sight
            .definition
            .active_fields()
            .filter(|f| f.entity.as_ref().is_some_and(|e| e.as_str() == entity))
            .filter(|f| field.is_none_or(|name| f.name.as_str() == name))
            .collect();
        let reference = match references.as_slice() {
            [one] => *one,
            [] => {
                return Err(bad(format!(
                    "`{source}` has no reference field to `{entity}`{}",
                    field.map(|f| format!(" named `{f}`")).unwrap_or_default()
                )));
            }
            _ => {
                return Err(bad(format!(
                    "`{source}` has several reference fields to `{entity}`: name one with `field=`"
                )));
            }
        };
        let condition = (reference.clone(), record_id.to_string());
        self.list_in(&mut scoped, principal, &compiled, params, Some(condition))
            .await
    }

    async fn list_in(
        &self,
        scoped: &mut Scoped<'_>,
        principal: &Principal,
        compiled: &CompiledEntity,
        params: &ListParams,
        reference: Option<(FieldDefinition, String)>,
    ) -> Result<Page, RecordError> {
        Ok(self
            .list_as(scoped, principal, compiled, params, reference, Output::Page)
            .await?
            .page())
    }

    /// A page of records, as [`Page`] or, when `output` allows, as the API's JSON body written
    /// straight from SQLite's page (see [`write_page`]).
    async fn list_as(
        &self,
        scoped: &mut Scoped<'_>,
        principal: &Principal,
        compiled: &CompiledEntity,
        params: &ListParams,
        reference: Option<(FieldDefinition, String)>,
        output: Output,
    ) -> Result<ListOutput, RecordError> {
        let sight = Sight::readable(principal, compiled)?;
        let limit = params.limit.unwrap_or(query::DEFAULT_PAGE_SIZE);
        if !(1..=query::MAX_PAGE_SIZE).contains(&limit) {
            return Err(bad(format!(
                "`limit` must be between 1 and {}, not {limit}",
                query::MAX_PAGE_SIZE
            )));
        }
        let definition = sight.definition.as_ref();
        let selection = selection(definition, params.shape.fields.as_deref())?;
        let expand = expansions(definition, params.shape.expand.as_deref())?;
        let mut builder = ListQuery::builder(scoped.dialect());
        let mut conditions = vec![match params.deleted {
            Deleted::Exclude => "deleted_at IS NULL".to_owned(),
            Deleted::Include => "1 = 1".to_owned(),
            Deleted::Only => "deleted_at IS NOT NULL".to_owned(),
        }];
        if let Some(owners) = principal.owners(sight.grant.read) {
            conditions.push(owner_condition(&owners, &mut builder));
        }
        if let Some((field, id)) = &reference {
            let placeholder = builder.bind(SqlValue::Text(id.clone()));
            conditions.push(format!(
                "{} = {placeholder}",
                builder.dialect.field_expr(field)
            ));
        }
        if let Some(filter) = params.filter.as_deref().filter(|f| !f.trim().is_empty()) {
            conditions
                .push(query::filter_condition(definition, filter, &mut builder).map_err(bad)?);
        }
        if let Some(q) = params.q.as_deref().filter(|q| !q.is_empty()) {
            conditions.push(query::search(definition, q, &mut builder));
        }
        let sort_text = params.sort.clone().unwrap_or_default();
        let sort = query::parse_sort(definition, &sort_text).map_err(bad)?;
        let cursor = params
            .cursor
            .as_deref()
            .map(query::Cursor::decode)
            .transpose()
            .map_err(bad)?;
        if let Some(cursor) = &cursor
            && cursor.s != sort_text
        {
            return Err(bad(
                "`cursor` belongs to another sort: keep the `sort` of the first page",
            ));
        }
        let (order, seek) =
            query::order_and_seek(&sort, cursor.as_ref(), &mut builder).map_err(bad)?;
        conditions.extend(seek);
        let listed = scoped
            .list_page(
                compiled.id,
                ListQuery {
                    condition: conditions.join(" AND "),
                    order,
                    binds: builder.binds,
                    limit: limit + 1,
                },
            )
            .await?;
        let cursor_after = |last: &StoredRecord| -> Result<String, RecordError> {
            let data: Value =
                serde_json::from_str(&last.data).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            Ok(query::Cursor::after(&sort_text, &sort.keys, last, &data).encode())
        };
        let whole_records = selection.is_none()
            && expand.is_empty()
            && definition.fields.iter().all(|field| field.active);
        let mut rows = match listed {
            Listed::Sqlite(page) if output == Output::Body && whole_records => {
                let records = page.records()?;
                let next_cursor = match records.get(limit as usize) {
                    Some(_) => Some(cursor_after(&records[limit as usize - 1].stored()?)?),
                    None => None,
                };
                let shown = records.len().min(limit as usize);
                return Ok(ListOutput::Body(write_page(
                    &records[..shown],
                    next_cursor.as_deref(),
                )?));
            }
            Listed::Sqlite(page) => page.stored()?,
            Listed::Rows(rows) => rows,
        };
        let next_cursor = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            Some(cursor_after(rows.last().expect("a full page"))?)
        } else {
            None
        };
        let dialect = scoped.dialect();
        let mut views = rows
            .iter()
            .map(|row| view(row, definition, dialect, selection.as_deref()))
            .collect::<Result<Vec<_>, _>>()?;
        self.expand(scoped, principal, &expand, &rows, &mut views)
            .await?;
        Ok(ListOutput::Page(Page {
            data: views,
            next_cursor,
        }))
    }

    /// Fills `expanded` of each view with the records its reference fields point at.
    async fn expand(
        &self,
        scoped: &mut Scoped<'_>,
        principal: &Principal,
        fields: &[FieldDefinition],
        rows: &[StoredRecord],
        views: &mut [RecordView],
    ) -> Result<(), RecordError> {
        if fields.is_empty() {
            return Ok(());
        }
        let bodies: Vec<Map<String, Value>> =
            rows.iter().map(parse_body).collect::<Result<_, _>>()?;
        for view in views.iter_mut() {
            view.expanded = Some(BTreeMap::new());
        }
        for field in fields {
            let target_name = field.entity.as_ref().expect("expansions are references");
            let target = self.metadata.compiled(scoped, target_name.as_str()).await?;
            let sight = Sight::readable(principal, &target).map_err(|_| {
                access::forbidden(
                    principal,
                    &format!("expand `{}`: read", field.name),
                    target.name(),
                )
            })?;
            let mut ids: Vec<String> = bodies
                .iter()
                .filter_map(|body| {
                    body.get(field.name.as_str())
                        .and_then(Value::as_str)
                        .map(str::to_owned)
                })
                .collect();
            ids.sort();
            ids.dedup();
            let mut found: HashMap<String, StoredRecord> = HashMap::new();
            for chunk in ids.chunks(500) {
                for record in scoped.get_records(target.id, chunk).await? {
                    if access::can_read(principal, &sight.grant, &record) {
                        found.insert(record.id.clone(), record);
                    }
                }
            }
            for (view, body) in views.iter_mut().zip(&bodies) {
                let referenced = body
                    .get(field.name.as_str())
                    .and_then(Value::as_str)
                    .and_then(|id| found.get(id))
                    .map(|record| self::view(record, &sight.definition, scoped.dialect(), None))
                    .transpose()?;
                view.expanded
                    .as_mut()
                    .expect("set above")
                    .insert(field.name.to_string(), referenced);
            }
        }
        Ok(())
    }

    pub async fn history(
        &self,
        principal: &Principal,
        entity: &str,
        id: &str,
    ) -> Result<Value, RecordError> {
        let record_id = parse_id(entity, id)?;
        let mut conn = self.store.reader().await?;
        let mut scoped = conn.scoped(&principal.tenant);
        let compiled = self.metadata.compiled(&mut scoped, entity).await?;
        let sight = Sight::readable(principal, &compiled)?;
        let not_found = || RecordError::NotFound {
            entity: entity.to_owned(),
            id: id.to_owned(),
        };
        // A purged record has history no more; a record has no history without its row.
        let stored = scoped
            .get_record(compiled.id, record_id.as_str())
            .await?
            .ok_or_else(not_found)?;
        if !access::can_read(principal, &sight.grant, &stored) {
            return Err(not_found());
        }
        let entries = history_entries(&mut scoped, &compiled, &sight, &record_id).await?;
        if entries.is_empty() {
            return Err(not_found());
        }
        Ok(json!({"data": entries}))
    }
}

/// A live record the principal may read, or not found.
async fn live_readable(
    scoped: &mut Scoped<'_>,
    principal: &Principal,
    compiled: &CompiledEntity,
    sight: &Sight<'_>,
    record_id: &RecordId,
    id: &str,
) -> Result<StoredRecord, RecordError> {
    scoped
        .get_record(compiled.id, record_id.as_str())
        .await?
        .filter(|record| record.deleted_at.is_none())
        .filter(|record| access::can_read(principal, &sight.grant, record))
        .ok_or_else(|| RecordError::NotFound {
            entity: compiled.name().to_owned(),
            id: id.to_owned(),
        })
}

/// A record's history as the API shows it, newest last: deactivated and hidden fields left out
/// of every change.
async fn history_entries(
    scoped: &mut Scoped<'_>,
    compiled: &CompiledEntity,
    sight: &Sight<'_>,
    record_id: &RecordId,
) -> Result<Vec<Value>, RecordError> {
    let rows = scoped.history(compiled.id, record_id.as_str()).await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let mut changes: Map<String, Value> =
                serde_json::from_str(&row.changes).unwrap_or_default();
            // `_owner` is the one system field with history.
            changes.retain(|key, _| {
                key == "_owner" || sight.definition.field(key).is_some_and(|field| field.active)
            });
            json!({
                "version": row.version,
                "operation": row.operation,
                "changed_at": row.changed_at.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
                "changed_by": row.changed_by,
                "changes": changes,
            })
        })
        .collect())
}

/// The key of a field error: `field`, or `records[i].field` in a batch.
fn batch_key(batch: bool, index: usize, field: &str) -> String {
    match (batch, field.is_empty()) {
        (false, _) => field.to_owned(),
        (true, true) => format!("records[{index}]"),
        (true, false) => format!("records[{index}].{field}"),
    }
}

/// The remembered response to an `Idempotency-Key`, if the retry is the same request.
fn replay(
    idempotency: &Idempotency,
    previous: IdempotentResponse,
) -> Result<Response, RecordError> {
    if previous.request_hash != idempotency.request_hash {
        return Err(RecordError::IdempotencyMismatch(idempotency.key.clone()));
    }
    Ok(Response {
        status: previous.status as u16,
        body: previous.response,
    })
}

fn check_batch_size(size: usize) -> Result<(), RecordError> {
    if size == 0 {
        return Err(bad("`records` is empty"));
    }
    if size > MAX_BATCH {
        return Err(bad(format!(
            "a batch holds at most {MAX_BATCH} records, not {size}"
        )));
    }
    Ok(())
}

/// Prefixes field errors with the position of the record in a batch.
fn in_batch(batch: bool, index: usize, error: RecordError) -> RecordError {
    if batch {
        labelled(&format!("records[{index}]"), error)
    } else {
        error
    }
}

/// Field errors of one record among several keyed `label.field` (`label` for the record).
fn labelled(label: &str, error: RecordError) -> RecordError {
    let prefix = |errors: FieldErrors| -> FieldErrors {
        errors
            .into_iter()
            .map(|(key, messages)| {
                let key = if key.is_empty() {
                    label.to_owned()
                } else {
                    format!("{label}.{key}")
                };
                (key, messages)
            })
            .collect()
    };
    match error {
        RecordError::Invalid(errors) => RecordError::Invalid(prefix(errors)),
        RecordError::Conflict(errors) => RecordError::Conflict(prefix(errors)),
        RecordError::NotFound { entity, id } => {
            RecordError::Invalid(prefix(FieldErrors::from([(
                String::new(),
                vec![format!("no `{entity}` record has id `{id}`")],
            )])))
        }
        RecordError::VersionMismatch { expected, current } => {
            RecordError::Conflict(prefix(FieldErrors::from([(
                String::new(),
                vec![format!(
                    "the record is at version {current}, not {expected}"
                )],
            )])))
        }
        other => other,
    }
}

/// Whether a write may leave uniqueness to the unique indexes and look up the holders of its
/// values only when one refuses it ([`Records::refused_write`]): one query, and on SQLite one
/// round trip to the writer thread, fewer per write. On SQLite a statement that breaks a unique
/// index fails alone and its transaction goes on. On PostgreSQL the failed statement would abort
/// the transaction, so the lookup comes before the write there.
fn unique_after_write(scoped: &Scoped<'_>) -> bool {
    scoped.dialect() == Dialect::Sqlite
}

/// Maps a unique index violation the lookup of holders could not explain (a race on PostgreSQL,
/// a deactivated field) to a field error: naming the value when one record was written.
fn unique_violation(
    entity: &CompiledEntity,
    bodies: &[Map<String, Value>],
    key: &impl Fn(usize, &str) -> String,
    error: StoreError,
) -> RecordError {
    let prefix = format!("ru_{}_", entity.id);
    let Some(field) = error
        .violated_unique_index()
        .as_deref()
        .and_then(|index| index.strip_prefix(&prefix))
        .map(str::to_owned)
    else {
        return RecordError::Store(error);
    };
    let (at, value) = match bodies {
        [body] => (key(0, &field), body.get(&field).map(json_text)),
        _ => (field.clone(), None),
    };
    let message = match value {
        Some(value) => format!(
            "field `{field}` must be unique: `{value}` is already used by another {}",
            entity.name()
        ),
        None => format!(
            "field `{field}` must be unique: the value is already used by another {}",
            entity.name()
        ),
    };
    RecordError::Conflict(FieldErrors::from([(at, vec![message])]))
}

/// `owner_id IN (…)`: the records of these owners (none: no record).
fn owner_condition(owners: &[String], builder: &mut crate::store::sql::QueryBuilder) -> String {
    owner_condition_on("owner_id", owners, builder)
}

/// `<column> IN (…)` of the owners a principal may see (`owner_id`, or `j.owner_id` of a
/// joined record); false for nobody.
pub(crate) fn owner_condition_on(
    column: &str,
    owners: &[String],
    builder: &mut crate::store::sql::QueryBuilder,
) -> String {
    if owners.is_empty() {
        return "1 = 0".to_owned();
    }
    let placeholders: Vec<String> = owners
        .iter()
        .map(|owner| builder.bind(SqlValue::Text(owner.clone())))
        .collect();
    format!("{column} IN ({})", placeholders.join(", "))
}

/// Parses `fields=a,b`: the fields to show.
fn selection(
    entity: &EntityDefinition,
    fields: Option<&str>,
) -> Result<Option<Vec<String>>, RecordError> {
    let Some(fields) = fields.filter(|f| !f.trim().is_empty()) else {
        return Ok(None);
    };
    let names: Vec<String> = fields
        .split(',')
        .map(|name| name.trim().to_owned())
        .filter(|n| !n.is_empty())
        .collect();
    for name in &names {
        if !entity.field(name).is_some_and(|field| field.active) {
            return Err(bad(format!(
                "`fields`: `{name}` is not a field of `{}`",
                entity.name
            )));
        }
    }
    Ok(Some(names))
}

/// Parses `expand=a,b`: reference fields whose records to include.
fn expansions(
    entity: &EntityDefinition,
    expand: Option<&str>,
) -> Result<Vec<FieldDefinition>, RecordError> {
    let Some(expand) = expand.filter(|e| !e.trim().is_empty()) else {
        return Ok(Vec::new());
    };
    let mut fields = Vec::new();
    for name in expand.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match entity.field(name) {
            Some(field) if field.active && field.field_type == FieldType::Reference => {
                fields.push(field.clone())
            }
            _ => {
                return Err(bad(format!(
                    "`expand`: `{name}` is not a reference field of `{}`",
                    entity.name
                )));
            }
        }
    }
    if fields.len() > 10 {
        return Err(bad("`expand` takes at most 10 fields"));
    }
    Ok(fields)
}

/// What a list returns: a [`Page`] for callers inside the server, or the API's JSON body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Output {
    Page,
    Body,
}

enum ListOutput {
    Page(Page),
    Body(String),
}

impl ListOutput {
    /// The page of a list asked for with [`Output::Page`].
    fn page(self) -> Page {
        match self {
            Self::Page(page) => page,
            Self::Body(_) => unreachable!("only `Output::Body` lists answer with a body"),
        }
    }

    fn body(self) -> String {
        match self {
            Self::Body(body) => body,
            Self::Page(page) => serde_json::to_string(&page).expect("a page serialises"),
        }
    }
}

/// The JSON body of a [`Page`] of whole records (every field active, no `fields`, no
/// `expand`), written from SQLite's page as it is: byte for byte what serialising the records'
/// [`view`]s writes, without building them. Strings that SQLite's JSON held without escapes
/// need none (JSON text cannot hold a bare `"`, `\` or control character); the others are
/// escaped as serde_json escapes them. The bodies are copied as they are, as [`view`] does.
fn write_page(records: &[RecordText<'_>], next_cursor: Option<&str>) -> Result<String, StoreError> {
    use std::borrow::Cow;
    use std::fmt::Write;
    #[expect(
        clippy::ptr_arg,
        reason = "borrowed or owned tells whether the text held escapes"
    )]
    fn string(out: &mut String, text: &Cow<'_, str>) {
        match text {
            Cow::Borrowed(text) => {
                out.push('"');
                out.push_str(text);
                out.push('"');
            }
            Cow::Owned(text) => {
                out.push_str(&serde_json::to_string(text).expect("a string serialises"))
            }
        }
    }
    let size: usize = records.iter().map(|r| r.data.get().len() + 400).sum();
    let mut out = String::with_capacity(size + 64);
    out.push_str("{\"data\":[");
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str("{\"id\":");
        string(&mut out, &record.id);
        write!(out, ",\"version\":{},\"owner\":", record.version).expect("writes to a string");
        string(&mut out, &record.owner_id);
        out.push_str(",\"created_at\":");
        api_timestamp(&mut out, &record.created_at)?;
        out.push_str(",\"created_by\":");
        string(&mut out, &record.created_by);
        out.push_str(",\"updated_at\":");
        api_timestamp(&mut out, &record.updated_at)?;
        out.push_str(",\"updated_by\":");
        string(&mut out, &record.updated_by);
        if let Some(deleted_at) = &record.deleted_at {
            out.push_str(",\"deleted_at\":");
            api_timestamp(&mut out, deleted_at)?;
        }
        out.push_str(",\"data\":");
        out.push_str(record.data.get());
        out.push('}');
    }
    out.push_str("],\"next_cursor\":");
    out.push_str(&serde_json::to_string(&next_cursor).expect("a cursor serialises"));
    out.push('}');
    Ok(out)
}

/// A stored timestamp as the API writes it (RFC 3339, trailing zeros of the fraction dropped,
/// as `time` formats it). The form this server stores, `YYYY-MM-DDTHH:MM:SS.ffffffZ`, is
/// trimmed as text; any other goes through `time` as [`view`]'s does.
fn api_timestamp(out: &mut String, stored: &str) -> Result<(), StoreError> {
    let bytes = stored.as_bytes();
    let canonical = bytes.len() == 27
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            10 => *b == b'T',
            13 | 16 => *b == b':',
            19 => *b == b'.',
            26 => *b == b'Z',
            _ => b.is_ascii_digit(),
        });
    out.push('"');
    if canonical {
        out.push_str(stored[..26].trim_end_matches('0').trim_end_matches('.'));
        out.push('Z');
    } else {
        use time::format_description::well_known::Rfc3339;
        let at = crate::store::records::sqlite_timestamp(stored)
            .map_err(|error| StoreError::Corrupt(format!("a page of records: {error}")))?;
        out.push_str(
            &at.format(&Rfc3339)
                .map_err(|e| StoreError::Corrupt(e.to_string()))?,
        );
    }
    out.push('"');
    Ok(())
}

/// The API form of a stored record: inactive fields hidden (and, through a [`Sight`], those the
/// reader may not see), `selection` applied.
pub fn view(
    record: &StoredRecord,
    entity: &EntityDefinition,
    dialect: Dialect,
    selection: Option<&[String]>,
) -> Result<RecordView, StoreError> {
    let all_active = entity.fields.iter().all(|field| field.active);
    // SQLite returns the text this server wrote (canonical, keys sorted); PostgreSQL's jsonb
    // text is re-serialised so that both backends answer byte for byte alike.
    let data = if dialect == Dialect::Sqlite && all_active && selection.is_none() {
        RawValue::from_string(record.data.clone())
    } else {
        let mut body = parse_body(record)?;
        body.retain(|key, _| {
            entity.field(key).is_some_and(|field| field.active)
                && selection.is_none_or(|names| names.iter().any(|name| name == key))
        });
        RawValue::from_string(Value::Object(body).to_string())
    }
    .map_err(|error| StoreError::Corrupt(error.to_string()))?;
    Ok(RecordView {
        id: record.id.clone(),
        version: record.version,
        owner: record.owner_id.clone(),
        created_at: record.created_at,
        created_by: record.created_by.clone(),
        updated_at: record.updated_at,
        updated_by: record.updated_by.clone(),
        deleted_at: record.deleted_at,
        data,
        expanded: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// SQLite's page of records written as the API's body is what serialising their views is.
    #[test]
    fn a_page_written_from_sqlite_is_byte_for_byte_the_serialised_views() {
        let definition: EntityDefinition = serde_json::from_value(json!({
            "name": "contact",
            "fields": [{"name": "name", "type": "text"}, {"name": "tags", "type": "json"}]
        }))
        .unwrap();
        // As SQLite's json_group_array writes it: escapes in strings, a deleted record,
        // fractions with and without trailing zeros, none at all, and SQLite's own form.
        let text = r#"[
            ["a1",3,{"name":"Ada \"the first\"","tags":["ü","\u0001",1e3,-0.5]},"o1",
             "2026-12-06T22:51:26.605810Z","u\nx","2026-12-06T22:51:20.000000Z","u2",null],
            ["a2",1,{},"o\u00e9","2026-01-02T03:04:05.000001Z","u1",
             "2026-01-02 03:04:05","u1","2026-01-02T03:04:05.100000Z"],
            ["a3",7,{"name":"日本"},"o1","2026-01-02T03:04:05.123456Z","u1",
             "2026-01-02 03:04:05.250","u1",null]
        ]"#;
        let text: String = text.lines().map(str::trim).collect();
        let records: Vec<RecordText<'_>> = serde_json::from_str(&text).unwrap();
        for cursor in [None, Some("eyJzIjoiIn0")] {
            let views = records
                .iter()
                .map(|record| {
                    view(
                        &record.stored().unwrap(),
                        &definition,
                        Dialect::Sqlite,
                        None,
                    )
                })
                .collect::<Result<Vec<_>, _>>()
                .unwrap();
            let page = Page {
                data: views,
                next_cursor: cursor.map(str::to_owned),
            };
            let written = write_page(&records, cursor).unwrap();
            assert_eq!(written, serde_json::to_string(&page).unwrap());
        }
        assert!(
            write_page(&records, None)
                .unwrap()
                .contains(r#""updated_at":"2026-12-06T22:51:20Z""#)
        );
    }

    #[test]
    fn a_created_records_history_entry_is_its_changes_from_nothing() {
        let body = json!({
            "name": "Ada \"the first\"",
            "score": 3.5,
            "tags": ["a", "b"],
            "address": {"city": "London"},
            "active": false,
            "empty": null,
        });
        let body = body.as_object().expect("an object");
        let expected = Value::Object(changes(&Map::new(), body)).to_string();
        assert_eq!(serde_json::to_string(&Created(body)).unwrap(), expected);
        assert!(expected.contains(r#""score":{"from":null,"to":3.5}"#));
        let empty = Map::new();
        assert_eq!(serde_json::to_string(&Created(&empty)).unwrap(), "{}");
    }
}
