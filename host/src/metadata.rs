//! Metadata: entity definitions that admins create and change at runtime, compiled into JSON
//! Schemas (cached per entity version) that validate every record write.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;
use time::OffsetDateTime;

use crate::auth::Principal;
use crate::domain::{TenantId, UserId};
use crate::store::entities::EntityLock;
use crate::store::{Scoped, Store, StoreError, Tx};

pub mod definition;
pub mod evolution;
pub mod record_schema;
pub mod validation;
pub mod values;

use definition::{CompositeIndex, EntityDefinition, FieldDefinition, FieldType};
use evolution::Change;
use record_schema::{FieldErrors, Purpose};
use validation::Problem;

/// Errors of the metadata layer.
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    #[error("only administrators may change metadata")]
    Forbidden,
    #[error("the entity definition is invalid")]
    Invalid(Vec<Problem>),
    #[error("entity `{0}` does not exist")]
    UnknownEntity(String),
    #[error("entity `{0}` already exists")]
    AlreadyExists(String),
    #[error(
        "entity `{entity}` is at version {current}, not {expected}: reload it and apply your change again"
    )]
    VersionMismatch {
        entity: String,
        expected: i64,
        current: i64,
    },
    #[error("entity `{entity}` is referenced by {}; delete with `force=true` to deactivate those fields", referrers.join(", "))]
    Referenced {
        entity: String,
        referrers: Vec<String>,
    },
    #[error("field `{field}` cannot be unique: {} values are used more than once", duplicates.len())]
    Duplicates {
        field: String,
        duplicates: Vec<Duplicate>,
    },
    #[error("the change would not convert every record; nothing was changed")]
    Unconvertible(Vec<FieldCheck>),
    #[error("{0}")]
    Refused(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// A value held by several records of a field that is to become unique.
#[derive(Debug, Clone, Serialize)]
pub struct Duplicate {
    pub value: String,
    pub records: i64,
}

/// The result of converting one field's values to its new definition.
#[derive(Debug, Clone, Serialize)]
pub struct FieldCheck {
    pub field: String,
    pub records_with_value: u64,
    pub failures: u64,
    /// Up to ten records that would not convert, with why.
    pub samples: Vec<Failure>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Failure {
    pub record: String,
    pub value: Value,
    pub reason: String,
}

/// An entity definition compiled for record writes, for one version.
#[derive(Debug)]
pub struct CompiledEntity {
    pub id: i64,
    pub version: i64,
    pub definition: EntityDefinition,
    validator: jsonschema::Validator,
    /// The active computed fields, each after those it depends on, with the validator of the
    /// values their plugins return.
    computed: Vec<(usize, jsonschema::Validator)>,
}

impl CompiledEntity {
    fn compile(id: i64, version: i64, definition: EntityDefinition) -> Result<Self, MetadataError> {
        let invalid = |error| MetadataError::Invalid(vec![Problem::new("/", error)]);
        let schema = record_schema::record_schema(&definition, Purpose::Input);
        let validator = record_schema::validator(&schema).map_err(invalid)?;
        let mut computed = Vec::new();
        let order = validation::computed_order(&definition).ok_or_else(|| {
            invalid("computed fields depend on each other in a circle".to_owned())
        })?;
        for field in order.into_iter().filter(|field| field.active) {
            let index = definition
                .fields
                .iter()
                .position(|candidate| candidate.name == field.name)
                .expect("ordered fields are fields of the definition");
            let schema = record_schema::field_schema(field);
            computed.push((index, record_schema::validator(&schema).map_err(invalid)?));
        }
        Ok(Self {
            id,
            version,
            definition,
            validator,
            computed,
        })
    }

    /// The active computed fields, each after the computed fields it depends on.
    pub fn computed_fields(&self) -> impl Iterator<Item = &FieldDefinition> {
        self.computed
            .iter()
            .map(|(index, _)| &self.definition.fields[*index])
    }

    /// Checks and normalizes a value a plugin computed for `field`.
    pub fn check_computed(&self, field: &FieldDefinition, value: &mut Value) -> Result<(), String> {
        let (_, validator) = self
            .computed
            .iter()
            .find(|(index, _)| self.definition.fields[*index].name == field.name)
            .ok_or_else(|| format!("`{}` is not an active computed field", field.name))?;
        if let Some(error) = validator.iter_errors(value).next() {
            return Err(error.to_string());
        }
        values::normalize(field, value)
    }

    pub fn name(&self) -> &str {
        self.definition.name.as_str()
    }

    /// Checks a full record body (what a client may write) against the schema.
    pub fn check(&self, body: &Value) -> FieldErrors {
        record_schema::check(&self.validator, body)
    }
}

/// An entity definition as the API shows it.
#[derive(Debug, Clone, Serialize)]
pub struct EntityView {
    #[serde(flatten)]
    pub definition: Value,
    pub version: i64,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

/// What applying a definition did (or, in a dry run, would do).
#[derive(Debug, Clone, Serialize)]
pub struct Applied {
    pub entity: String,
    pub created: bool,
    pub version: i64,
    pub changes: Vec<Change>,
    pub conversions: Vec<FieldCheck>,
}

/// Entity definitions of every tenant, with compiled schemas cached per entity version.
#[derive(Debug)]
pub struct Metadata {
    store: Store,
    cache: RwLock<HashMap<(TenantId, String), Cached>>,
    roll_ups: RwLock<HashMap<TenantId, (Instant, Arc<RollUps>)>>,
    /// Every compiled definition of a tenant, for the reads that look at all of them (the
    /// timeline, the screen pop), cached like the roll-ups.
    entity_lists: RwLock<HashMap<TenantId, (Instant, EntityList)>>,
    /// Tenants whose definitions are not cached now (see [`Metadata::uncached`]).
    uncached: crate::domain::Uncached,
}

/// A compiled definition, and when a query last found it current.
#[derive(Debug)]
struct Cached {
    compiled: Arc<CompiledEntity>,
    /// `None` once a change to the tenant's definitions was made here.
    confirmed: Option<Instant>,
}

/// How long a read outside a transaction takes a definition found current as current, without
/// asking the database again. A change made on this host is seen at once (it clears the
/// confirmations); one made by another process (another host on PostgreSQL, the CLI) is seen by
/// reads within this time, and by writes at once: a write's transaction always reads the entity's
/// version ([`Metadata::compiled_for_write`]).
const READ_CONFIRMED_FOR: Duration = Duration::from_secs(1);

/// How long the roll-up dependencies of a tenant are cached. A change made on this host
/// clears them at once; other hosts (PostgreSQL scale-out) see it within this time.
const ROLL_UPS_TTL: Duration = Duration::from_secs(5);

/// Every compiled definition of a tenant.
pub type EntityList = Arc<Vec<Arc<CompiledEntity>>>;

/// Computed fields that roll up records of another entity, by that entity.
pub type RollUps = HashMap<String, Vec<RollUp>>;

/// The computed fields of `target` that depend on records whose reference `via` points at a
/// `target` record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RollUp {
    pub target: String,
    pub via: String,
    /// Fields of the related records the computed fields depend on (empty: any).
    pub fields: Vec<String>,
    /// The computed fields to refresh.
    pub computed: Vec<String>,
}

fn roll_ups_of(definitions: &[EntityDefinition]) -> RollUps {
    let mut roll_ups: RollUps = HashMap::new();
    for definition in definitions {
        for field in definition
            .active_fields()
            .filter(|field| field.is_computed())
        {
            for related in &field.related {
                let list = roll_ups.entry(related.entity.to_string()).or_default();
                let fields: Vec<String> = related.fields.iter().map(ToString::to_string).collect();
                let existing = list.iter_mut().find(|roll_up| {
                    roll_up.target == definition.name.as_str()
                        && roll_up.via == related.via.as_str()
                        && roll_up.fields == fields
                });
                match existing {
                    Some(roll_up) => roll_up.computed.push(field.name.to_string()),
                    None => list.push(RollUp {
                        target: definition.name.to_string(),
                        via: related.via.to_string(),
                        fields,
                        computed: vec![field.name.to_string()],
                    }),
                }
            }
        }
    }
    roll_ups
}

fn require_admin(principal: &Principal) -> Result<(), MetadataError> {
    if principal.is_admin() {
        Ok(())
    } else {
        Err(MetadataError::Forbidden)
    }
}

fn parse(json: &Value) -> Result<EntityDefinition, MetadataError> {
    validation::parse_definition(json).map_err(MetadataError::Invalid)
}

fn stored_definition(json: &Value) -> Result<EntityDefinition, MetadataError> {
    definition::from_json(json)
        .map_err(|error| StoreError::Corrupt(format!("entity definition: {error}")).into())
}

impl Metadata {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            cache: RwLock::new(HashMap::new()),
            roll_ups: RwLock::new(HashMap::new()),
            entity_lists: RwLock::new(HashMap::new()),
            uncached: Default::default(),
        }
    }

    /// The computed fields of other entities that roll up records of `entity`.
    pub async fn roll_ups(
        &self,
        scoped: &mut Scoped<'_>,
        entity: &str,
    ) -> Result<Vec<RollUp>, MetadataError> {
        let tenant = scoped.tenant().clone();
        let uncached = self.uncached.contains(&tenant);
        let cached = self
            .roll_ups
            .read()
            .expect("roll-ups lock")
            .get(&tenant)
            .filter(|(at, _)| !uncached && at.elapsed() < ROLL_UPS_TTL)
            .map(|(_, roll_ups)| roll_ups.clone());
        let roll_ups = match cached {
            Some(roll_ups) => roll_ups,
            None => {
                let mut definitions = Vec::new();
                for stored in scoped.list_entities().await? {
                    definitions.push(stored_definition(&stored.definition)?);
                }
                let roll_ups = Arc::new(roll_ups_of(&definitions));
                if !uncached {
                    self.roll_ups
                        .write()
                        .expect("roll-ups lock")
                        .insert(tenant, (Instant::now(), roll_ups.clone()));
                }
                roll_ups
            }
        };
        Ok(roll_ups.get(entity).cloned().unwrap_or_default())
    }

    /// Forgets what a change to a tenant's definitions made here makes stale: what is derived
    /// from all of them (roll-ups, the entity list) and which definitions reads may take as
    /// current ([`READ_CONFIRMED_FOR`]).
    fn forget_changed(&self, tenant: &TenantId) {
        for (_, cached) in self
            .cache
            .write()
            .expect("metadata cache lock")
            .iter_mut()
            .filter(|((cached, _), _)| cached == tenant)
        {
            cached.confirmed = None;
        }
        self.roll_ups.write().expect("roll-ups lock").remove(tenant);
        self.entity_lists
            .write()
            .expect("entity lists lock")
            .remove(tenant);
    }

    /// While the guard lives, the tenant's definitions and roll-ups are read through each
    /// caller's connection and never cached: a pack's transaction changes several definitions
    /// and writes records under them before it commits (or rolls back).
    pub fn uncached(&self, tenant: &TenantId) -> crate::domain::UncachedGuard {
        self.forget_tenant(tenant);
        self.uncached.enter(tenant)
    }

    /// Forgets everything cached about a tenant's definitions: after a transaction that changed
    /// several of them, committed or rolled back (a rolled-back entity's id may be used again).
    pub fn forget_tenant(&self, tenant: &TenantId) {
        self.forget_changed(tenant);
        self.cache
            .write()
            .expect("metadata cache lock")
            .retain(|(cached, _), _| cached != tenant);
    }

    /// The compiled definition of an entity, current as of this connection's view; for a read
    /// outside a transaction, one found current within [`READ_CONFIRMED_FOR`] (which saves a
    /// query per read).
    pub async fn compiled(
        &self,
        scoped: &mut Scoped<'_>,
        name: &str,
    ) -> Result<Arc<CompiledEntity>, MetadataError> {
        if !scoped.in_transaction()
            && let Some(compiled) = self.recently_confirmed(scoped.tenant(), name)
        {
            return Ok(compiled);
        }
        self.compiled_locked(scoped, name, EntityLock::None).await
    }

    /// The compiled definition of an entity, current as of this connection's view: always asks
    /// the database (unlike [`Metadata::compiled`] for reads).
    pub async fn confirmed(
        &self,
        scoped: &mut Scoped<'_>,
        name: &str,
    ) -> Result<Arc<CompiledEntity>, MetadataError> {
        self.compiled_locked(scoped, name, EntityLock::None).await
    }

    fn recently_confirmed(&self, tenant: &TenantId, name: &str) -> Option<Arc<CompiledEntity>> {
        if self.uncached.contains(tenant) {
            return None;
        }
        self.cached_if(tenant, name, |cached| {
            cached
                .confirmed
                .is_some_and(|at| at.elapsed() < READ_CONFIRMED_FOR)
        })
    }

    /// The cached definition of `name` if it is the one with this id and version, noted as
    /// found current now (a write that read the version itself calls it).
    pub fn confirm(
        &self,
        tenant: &TenantId,
        name: &str,
        id: i64,
        version: i64,
    ) -> Option<Arc<CompiledEntity>> {
        let mut cache = self.cache.write().expect("metadata cache lock");
        let cached = cache
            .get_mut(&(tenant.clone(), name.to_owned()))
            .filter(|cached| cached.compiled.id == id && cached.compiled.version == version)?;
        cached.confirmed = Some(Instant::now());
        Some(cached.compiled.clone())
    }

    /// The compiled definition last seen for an entity, without asking the database: good for
    /// preparing a write, which [`Metadata::compiled_for_write`] then confirms is current.
    pub fn cached(&self, tenant: &TenantId, name: &str) -> Option<Arc<CompiledEntity>> {
        self.cached_if(tenant, name, |_| true)
    }

    fn cached_if(
        &self,
        tenant: &TenantId,
        name: &str,
        keep: impl FnOnce(&Cached) -> bool,
    ) -> Option<Arc<CompiledEntity>> {
        self.cache
            .read()
            .expect("metadata cache lock")
            .get(&(tenant.clone(), name.to_owned()))
            .filter(|cached| keep(cached))
            .map(|cached| cached.compiled.clone())
    }

    /// The compiled definition for a record write: the definition cannot change until the write's
    /// transaction ends.
    pub async fn compiled_for_write(
        &self,
        scoped: &mut Scoped<'_>,
        name: &str,
    ) -> Result<Arc<CompiledEntity>, MetadataError> {
        self.compiled_locked(scoped, name, EntityLock::Share).await
    }

    async fn compiled_locked(
        &self,
        scoped: &mut Scoped<'_>,
        name: &str,
        lock: EntityLock,
    ) -> Result<Arc<CompiledEntity>, MetadataError> {
        let Some((id, version)) = scoped.entity_version_locked(name, lock).await? else {
            return Err(MetadataError::UnknownEntity(name.to_owned()));
        };
        let key = (scoped.tenant().clone(), name.to_owned());
        let uncached = self.uncached.contains(&key.0);
        if !uncached && let Some(compiled) = self.confirm(&key.0, name, id, version) {
            return Ok(compiled);
        }
        let stored = scoped
            .get_entity(name)
            .await?
            .ok_or_else(|| MetadataError::UnknownEntity(name.to_owned()))?;
        let compiled = Arc::new(CompiledEntity::compile(
            stored.id,
            stored.version,
            stored_definition(&stored.definition)?,
        )?);
        if !uncached {
            self.cache.write().expect("metadata cache lock").insert(
                key,
                Cached {
                    compiled: compiled.clone(),
                    confirmed: Some(Instant::now()),
                },
            );
        }
        Ok(compiled)
    }

    /// Compiled definitions of every entity in the tenant, from the cache where it is current
    /// (one query when it all is); the list itself is kept [`ROLL_UPS_TTL`] and forgotten on a
    /// change made here.
    pub async fn all_current(&self, scoped: &mut Scoped<'_>) -> Result<EntityList, MetadataError> {
        let tenant = scoped.tenant().clone();
        let uncached = self.uncached.contains(&tenant);
        if !uncached
            && let Some((_, list)) = self
                .entity_lists
                .read()
                .expect("entity lists lock")
                .get(&tenant)
                .filter(|(at, _)| at.elapsed() < ROLL_UPS_TTL)
        {
            return Ok(list.clone());
        }
        let mut all = Vec::new();
        for (name, id, version) in scoped.entity_names().await? {
            let cached = self
                .cached(scoped.tenant(), &name)
                .filter(|cached| cached.id == id && cached.version == version);
            match cached {
                Some(cached) => all.push(cached),
                None => all.push(self.compiled(scoped, &name).await?),
            }
        }
        let all = Arc::new(all);
        if !uncached {
            self.entity_lists
                .write()
                .expect("entity lists lock")
                .insert(tenant, (Instant::now(), all.clone()));
        }
        Ok(all)
    }

    /// Compiled definitions of every entity in the tenant.
    pub async fn all_compiled(
        &self,
        scoped: &mut Scoped<'_>,
    ) -> Result<Vec<Arc<CompiledEntity>>, MetadataError> {
        let mut all = Vec::new();
        for stored in scoped.list_entities().await? {
            let definition = stored_definition(&stored.definition)?;
            all.push(Arc::new(CompiledEntity::compile(
                stored.id,
                stored.version,
                definition,
            )?));
        }
        Ok(all)
    }

    pub async fn list(&self, tenant: &TenantId) -> Result<Vec<EntityView>, MetadataError> {
        let mut conn = self.store.reader().await?;
        let stored = conn.scoped(tenant).list_entities().await?;
        Ok(stored
            .into_iter()
            .map(|entity| EntityView {
                definition: entity.definition,
                version: entity.version,
                updated_at: entity.updated_at,
            })
            .collect())
    }

    pub async fn get(&self, tenant: &TenantId, name: &str) -> Result<EntityView, MetadataError> {
        let mut conn = self.store.reader().await?;
        let entity = conn
            .scoped(tenant)
            .get_entity(name)
            .await?
            .ok_or_else(|| MetadataError::UnknownEntity(name.to_owned()))?;
        Ok(EntityView {
            definition: entity.definition,
            version: entity.version,
            updated_at: entity.updated_at,
        })
    }

    /// Creates an entity; refused if one of that name exists.
    pub async fn create(
        &self,
        principal: &Principal,
        json: &Value,
    ) -> Result<EntityView, MetadataError> {
        require_admin(principal)?;
        let definition = parse(json)?;
        let name = definition.name.to_string();
        let mut tx = self.store.begin().await?;
        if tx
            .scoped(&principal.tenant)
            .entity_version(&name)
            .await?
            .is_some()
        {
            return Err(MetadataError::AlreadyExists(name));
        }
        apply_in(
            &mut tx,
            &principal.tenant,
            Some(&principal.user),
            definition,
            &BTreeSet::new(),
        )
        .await?;
        tx.commit().await?;
        self.forget_changed(&principal.tenant);
        self.get(&principal.tenant, &name).await
    }

    /// Replaces an entity's definition, converting data where types change; with `dry_run`,
    /// reports what would happen and changes nothing.
    pub async fn update(
        &self,
        principal: &Principal,
        name: &str,
        json: &Value,
        dry_run: bool,
    ) -> Result<Applied, MetadataError> {
        require_admin(principal)?;
        let definition = parse(json)?;
        if definition.name.as_str() != name {
            return Err(MetadataError::Invalid(vec![Problem::new(
                "/name",
                format!(
                    "the name of an entity cannot change (`{name}` → `{}`)",
                    definition.name
                ),
            )]));
        }
        let mut tx = self.store.begin().await?;
        if tx
            .scoped(&principal.tenant)
            .entity_version(name)
            .await?
            .is_none()
        {
            return Err(MetadataError::UnknownEntity(name.to_owned()));
        }
        let applied = apply_in(
            &mut tx,
            &principal.tenant,
            Some(&principal.user),
            definition,
            &BTreeSet::new(),
        )
        .await?;
        if !dry_run {
            tx.commit().await?;
            self.forget_changed(&principal.tenant);
        }
        Ok(applied)
    }

    /// Applies a set of definitions (metadata as code) in one transaction: each entity is created
    /// or updated; all succeed or nothing changes.
    pub async fn apply_all(
        &self,
        tenant: &TenantId,
        user: Option<&UserId>,
        jsons: &[(String, Value)],
        dry_run: bool,
    ) -> Result<Vec<Applied>, MetadataError> {
        let mut tx = self.store.begin().await?;
        let applied = self.apply_all_in(&mut tx, tenant, user, jsons).await?;
        if !dry_run {
            tx.commit().await?;
            self.forget_changed(tenant);
        }
        Ok(applied)
    }

    /// [`Metadata::apply_all`] inside a transaction of the caller's (who commits it and then
    /// calls [`Metadata::applied`]): for `schema apply`, which applies workflows in the same
    /// transaction.
    pub async fn apply_all_in(
        &self,
        tx: &mut Tx,
        tenant: &TenantId,
        user: Option<&UserId>,
        jsons: &[(String, Value)],
    ) -> Result<Vec<Applied>, MetadataError> {
        let mut definitions = Vec::new();
        let mut problems = Vec::new();
        for (source, json) in jsons {
            match validation::parse_definition(json) {
                Ok(definition) => definitions.push(definition),
                Err(found) => problems.extend(found.into_iter().map(|problem| {
                    Problem::new(format!("{source}#{}", problem.path), problem.message)
                })),
            }
        }
        if !problems.is_empty() {
            return Err(MetadataError::Invalid(problems));
        }
        let batch: BTreeSet<String> = definitions
            .iter()
            .map(|definition| definition.name.to_string())
            .collect();
        if batch.len() != definitions.len() {
            return Err(MetadataError::Refused(
                "two files define the same entity".to_owned(),
            ));
        }
        self.apply_parsed(tx, tenant, user, definitions, &batch)
            .await
    }

    /// Drops what is cached about a tenant's definitions after a commit of `apply_all_in`.
    pub fn applied(&self, tenant: &TenantId) {
        self.forget_changed(tenant);
    }

    async fn apply_parsed(
        &self,
        tx: &mut Tx,
        tenant: &TenantId,
        user: Option<&UserId>,
        definitions: Vec<EntityDefinition>,
        batch: &BTreeSet<String>,
    ) -> Result<Vec<Applied>, MetadataError> {
        let mut applied = Vec::new();
        for definition in definitions {
            applied.push(apply_in(tx, tenant, user, definition, batch).await?);
        }
        Ok(applied)
    }

    /// Deletes an entity and its records. Refused while other entities' reference fields point at
    /// it, unless `force`, which deactivates those fields (their data is kept).
    pub async fn delete(
        &self,
        principal: &Principal,
        name: &str,
        force: bool,
    ) -> Result<Vec<String>, MetadataError> {
        require_admin(principal)?;
        let mut tx = self.store.begin().await?;
        let referrers = self
            .delete_in(
                &mut tx.scoped(&principal.tenant),
                &principal.user,
                name,
                force,
            )
            .await?;
        tx.commit().await?;
        self.deleted(&principal.tenant, name);
        Ok(referrers)
    }

    /// [`Metadata::delete`] in the caller's transaction; the caller commits, then calls
    /// [`Metadata::deleted`].
    pub async fn delete_in(
        &self,
        scoped: &mut Scoped<'_>,
        user: &UserId,
        name: &str,
        force: bool,
    ) -> Result<Vec<String>, MetadataError> {
        let target = scoped
            .get_entity(name)
            .await?
            .ok_or_else(|| MetadataError::UnknownEntity(name.to_owned()))?;
        let target_definition = stored_definition(&target.definition)?;
        let mut referrers = Vec::new();
        let mut to_deactivate = Vec::new();
        for other in scoped.list_entities().await? {
            if other.id == target.id {
                continue;
            }
            let mut definition = stored_definition(&other.definition)?;
            let mut changed = false;
            for field in &mut definition.fields {
                if field.active
                    && field
                        .entity
                        .as_ref()
                        .is_some_and(|entity| entity.as_str() == name)
                {
                    referrers.push(format!("`{}.{}`", definition.name, field.name));
                    field.active = false;
                    changed = true;
                }
            }
            if changed {
                to_deactivate.push((other, definition));
            }
        }
        if !referrers.is_empty() && !force {
            return Err(MetadataError::Referenced {
                entity: name.to_owned(),
                referrers,
            });
        }
        for (other, mut definition) in to_deactivate {
            let old = stored_definition(&other.definition)?;
            // Composite indexes over a deactivated field go with it.
            let (kept, dropped): (Vec<_>, Vec<_>) = std::mem::take(&mut definition.indexes)
                .into_iter()
                .partition(|index| {
                    index.fields.iter().all(|name| {
                        definition
                            .field(name.as_str())
                            .is_some_and(|field| field.active)
                    })
                });
            definition.indexes = kept;
            for index in &dropped {
                scoped.drop_composite_index(other.id, index).await?;
            }
            for field in old.fields.iter().filter(|field| field.needs_index()) {
                if !definition
                    .field(field.name.as_str())
                    .is_some_and(|f| f.needs_index())
                {
                    scoped.drop_field_index(other.id, field).await?;
                }
            }
            scoped
                .update_entity(
                    other.id,
                    other.version + 1,
                    &definition::to_json(&definition),
                    Some(user),
                )
                .await?;
        }
        scoped.delete_entity(target.id, &target_definition).await?;
        Ok(referrers)
    }

    /// Drops what is cached about a deleted entity after the commit of `delete_in`.
    pub fn deleted(&self, tenant: &TenantId, name: &str) {
        self.forget_changed(tenant);
        self.cache
            .write()
            .expect("metadata cache lock")
            .remove(&(tenant.clone(), name.to_owned()));
    }

    /// Second phase of removing a field: deletes its values from every record and the field from
    /// the definition. The field must have been deactivated first.
    pub async fn purge_field(
        &self,
        principal: &Principal,
        name: &str,
        field: &str,
    ) -> Result<EntityView, MetadataError> {
        require_admin(principal)?;
        let mut tx = self.store.begin().await?;
        self.purge_field_in(
            &mut tx.scoped(&principal.tenant),
            &principal.user,
            name,
            field,
        )
        .await?;
        tx.commit().await?;
        self.forget_changed(&principal.tenant);
        self.get(&principal.tenant, name).await
    }

    /// [`Metadata::purge_field`] in the caller's transaction; the caller commits, then calls
    /// [`Metadata::applied`].
    pub async fn purge_field_in(
        &self,
        scoped: &mut Scoped<'_>,
        user: &UserId,
        name: &str,
        field: &str,
    ) -> Result<(), MetadataError> {
        let stored = scoped
            .get_entity(name)
            .await?
            .ok_or_else(|| MetadataError::UnknownEntity(name.to_owned()))?;
        let mut definition = stored_definition(&stored.definition)?;
        let Some(position) = definition
            .fields
            .iter()
            .position(|f| f.name.as_str() == field)
        else {
            return Err(MetadataError::Refused(format!(
                "entity `{name}` has no field `{field}`"
            )));
        };
        if definition.fields[position].active {
            return Err(MetadataError::Refused(format!(
                "field `{field}` is active: deactivate it first (`\"active\": false`), then purge it"
            )));
        }
        let removed = definition.fields.remove(position);
        scoped.drop_field_index(stored.id, &removed).await?;
        scoped.purge_field_values(stored.id, field).await?;
        scoped
            .update_entity(
                stored.id,
                stored.version + 1,
                &definition::to_json(&definition),
                Some(user),
            )
            .await?;
        Ok(())
    }
}

/// Creates or updates one entity inside an open transaction. `batch` names entities created in
/// the same transaction, which references may point at.
async fn apply_in(
    tx: &mut Tx,
    tenant: &TenantId,
    user: Option<&UserId>,
    mut definition: EntityDefinition,
    batch: &BTreeSet<String>,
) -> Result<Applied, MetadataError> {
    let expected_version = definition.version.take();
    let name = definition.name.to_string();
    let mut scoped = tx.scoped(tenant);
    let mut problems = Vec::new();
    for (index, field) in definition.fields.iter().enumerate() {
        if let Some(target) = &field.entity
            && field.active
            && target.as_str() != name
            && !batch.contains(target.as_str())
            && scoped.entity_version(target.as_str()).await?.is_none()
        {
            problems.push(Problem::new(
                format!("/fields/{index}/entity"),
                format!("entity `{target}` does not exist"),
            ));
        }
    }
    for (index, field) in definition.fields.iter().enumerate() {
        for (position, related) in field.related.iter().enumerate() {
            let at = |property: &str| format!("/fields/{index}/related/{position}/{property}");
            let other = related.entity.as_str();
            if batch.contains(other) {
                continue;
            }
            let Some(stored) = scoped.get_entity(other).await? else {
                problems.push(Problem::new(
                    at("entity"),
                    format!("entity `{other}` does not exist"),
                ));
                continue;
            };
            let points_here = stored_definition(&stored.definition)?
                .field(related.via.as_str())
                .is_some_and(|via| {
                    via.field_type == FieldType::Reference
                        && via
                            .entity
                            .as_ref()
                            .is_some_and(|target| target.as_str() == name)
                });
            if !points_here {
                problems.push(Problem::new(
                    at("via"),
                    format!(
                        "`{}` is not a reference field of `{other}` pointing at `{name}`",
                        related.via
                    ),
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(MetadataError::Invalid(problems));
    }
    let json = definition::to_json(&definition);
    scoped
        .entity_version_locked(&name, EntityLock::Update)
        .await?;
    let existing = scoped.get_entity(&name).await?;
    let Some(existing) = existing else {
        let id = scoped.insert_entity(&name, &json, user).await?;
        let changes = evolution::diff(
            &EntityDefinition {
                fields: Vec::new(),
                indexes: Vec::new(),
                ..definition.clone()
            },
            &definition,
        )
        .map_err(MetadataError::Invalid)?;
        apply_changes(&mut scoped, id, &definition, &changes).await?;
        return Ok(Applied {
            entity: name,
            created: true,
            version: 1,
            changes,
            conversions: Vec::new(),
        });
    };
    if let Some(expected) = expected_version
        && expected != existing.version
    {
        return Err(MetadataError::VersionMismatch {
            entity: name,
            expected,
            current: existing.version,
        });
    }
    let old = stored_definition(&existing.definition)?;
    let changes = evolution::diff(&old, &definition).map_err(MetadataError::Invalid)?;
    if changes.is_empty() {
        return Ok(Applied {
            entity: name,
            created: false,
            version: existing.version,
            changes,
            conversions: Vec::new(),
        });
    }
    // Indexes go first: a retyped field's old index must not see the converted values.
    for change in &changes {
        match change {
            Change::IndexRemoved { field, .. } => {
                if let Some(field) = old.field(field) {
                    scoped.drop_field_index(existing.id, field).await?;
                }
            }
            Change::CompositeIndexRemoved { fields } => {
                if let Some(index) = old.indexes.iter().find(|index| same_fields(index, fields)) {
                    scoped.drop_composite_index(existing.id, index).await?;
                }
            }
            _ => {}
        }
    }
    let conversions = convert_records(&mut scoped, existing.id, &definition, &changes).await?;
    if conversions.iter().any(|check| check.failures > 0) {
        return Err(MetadataError::Unconvertible(conversions));
    }
    apply_changes(&mut scoped, existing.id, &definition, &changes).await?;
    let version = existing.version + 1;
    scoped
        .update_entity(existing.id, version, &json, user)
        .await?;
    Ok(Applied {
        entity: name,
        created: false,
        version,
        changes,
        conversions,
    })
}

fn same_fields(index: &CompositeIndex, names: &[String]) -> bool {
    index.fields.len() == names.len()
        && index
            .fields
            .iter()
            .zip(names)
            .all(|(field, name)| field.as_str() == name)
}

/// Builds new indexes (checking uniqueness first) and starts auto-number counters.
async fn apply_changes(
    scoped: &mut Scoped<'_>,
    entity_id: i64,
    definition: &EntityDefinition,
    changes: &[Change],
) -> Result<(), MetadataError> {
    for change in changes {
        match change {
            Change::IndexAdded { field, unique } => {
                let field = definition.field(field).expect("diff names existing fields");
                if *unique {
                    let duplicates = scoped.duplicate_values(entity_id, field, 50).await?;
                    if !duplicates.is_empty() {
                        return Err(MetadataError::Duplicates {
                            field: field.name.to_string(),
                            duplicates: duplicates
                                .into_iter()
                                .map(|(value, records)| Duplicate { value, records })
                                .collect(),
                        });
                    }
                }
                scoped.create_field_index(entity_id, field).await?;
            }
            Change::FieldAdded { field } => {
                let field = definition.field(field).expect("diff names existing fields");
                if field.field_type == FieldType::AutoNumber {
                    scoped
                        .init_auto_number(entity_id, field.name.as_str(), field.start.unwrap_or(1))
                        .await?;
                }
            }
            Change::CompositeIndexAdded { fields } => {
                let index = definition
                    .indexes
                    .iter()
                    .find(|index| same_fields(index, fields))
                    .expect("diff names existing indexes");
                let columns: Vec<&FieldDefinition> = index
                    .fields
                    .iter()
                    .map(|name| {
                        definition
                            .field(name.as_str())
                            .expect("validated index fields")
                    })
                    .collect();
                scoped
                    .create_composite_index(entity_id, index, &columns)
                    .await?;
            }
            Change::FieldReactivated { field } => {
                let field = definition.field(field).expect("diff names existing fields");
                if field.needs_index() {
                    scoped.create_field_index(entity_id, field).await?;
                }
            }
            _ => {}
        }
    }
    // Deactivated fields keep their data but lose their indexes.
    for change in changes {
        if let Change::FieldDeactivated { field } = change {
            let field = definition.field(field).expect("diff names existing fields");
            scoped.drop_field_index(entity_id, field).await?;
        }
    }
    Ok(())
}

/// Converts the values of every retyped field in every record (deleted ones too), in the open
/// transaction. Returns what happened per field; the caller refuses if anything failed.
async fn convert_records(
    scoped: &mut Scoped<'_>,
    entity_id: i64,
    definition: &EntityDefinition,
    changes: &[Change],
) -> Result<Vec<FieldCheck>, MetadataError> {
    let mut fields = Vec::new();
    for name in changes.iter().filter_map(Change::retyped_field) {
        let field = definition.field(name).expect("diff names existing fields");
        let schema = record_schema::field_schema(field);
        let validator = record_schema::validator(&schema)
            .map_err(|error| MetadataError::Invalid(vec![Problem::new("/", error)]))?;
        fields.push((
            field,
            validator,
            FieldCheck {
                field: name.to_owned(),
                records_with_value: 0,
                failures: 0,
                samples: Vec::new(),
            },
        ));
    }
    if fields.is_empty() {
        return Ok(Vec::new());
    }
    for (id, _version, body) in scoped.all_record_bodies(entity_id).await? {
        let mut data: Value = serde_json::from_str(&body)
            .map_err(|error| StoreError::Corrupt(format!("record `{id}`: {error}")))?;
        let mut changed = false;
        for (field, validator, check) in &mut fields {
            let Some(value) = data.get(field.name.as_str()).cloned() else {
                continue;
            };
            check.records_with_value += 1;
            let converted = values::convert(&value, field)
                .ok_or_else(|| format!("cannot be converted to {}", field.field_type.as_str()));
            let converted = converted.and_then(|mut converted| {
                let errors: Vec<String> = validator
                    .iter_errors(&converted)
                    .map(|error| error.to_string())
                    .collect();
                if errors.is_empty() {
                    values::normalize(field, &mut converted)?;
                    Ok(converted)
                } else {
                    Err(errors.join("; "))
                }
            });
            match converted {
                Ok(converted) => {
                    if converted != value {
                        data[field.name.as_str()] = converted;
                        changed = true;
                    }
                }
                Err(reason) => {
                    check.failures += 1;
                    if check.samples.len() < 10 {
                        check.samples.push(Failure {
                            record: id.clone(),
                            value,
                            reason,
                        });
                    }
                }
            }
        }
        if changed {
            scoped
                .rewrite_record(entity_id, &id, &data.to_string())
                .await?;
        }
    }
    Ok(fields.into_iter().map(|(_, _, check)| check).collect())
}
