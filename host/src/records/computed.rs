//! Computed fields: values that a plugin computes from a record (and, through its host calls,
//! from related records), stored with the record so that they can be filtered, sorted and
//! indexed like any field.
//!
//! A write recomputes the computed fields whose dependencies it changed, after the `before`
//! hooks and inside the write's transaction. A write of a record that others roll up (an order
//! of an account whose value tier depends on its orders) then recomputes those records, one
//! level deeper, as an update by the same user.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use serde_json::{Map, Value, json};

use super::hooks::{BoxFuture, Run, WriteContext, host_state};
use super::{BatchUpdate, CompiledEntity, RecordError, Records, StoredRecord, changes};
use crate::plugins::runtime::{ComputeRequest, Fault, Record};
use crate::store::Scoped;

/// How a record changed, for the roll-ups of other entities.
pub(super) struct Change<'a> {
    /// The body before the write; `None` for a created record.
    pub before: Option<&'a Map<String, Value>>,
    /// The body after the write; `None` for a deleted record.
    pub after: Option<&'a Map<String, Value>>,
}

impl Records {
    /// Recomputes the computed fields of `entity` that this write makes due: all of them when
    /// creating (`previous` is `None`), those named in `forced`, and those depending on a field
    /// the write changed (a computed field without `depends_on` depends on every field that is
    /// not computed, unless it has `related` records: then on those alone). Fields come in
    /// dependency order, so a computed field that depends on another sees its new value.
    #[expect(clippy::too_many_arguments, reason = "the parts of a record write")]
    pub(super) async fn compute_fields(
        &self,
        scoped: &mut Scoped<'_>,
        context: &WriteContext,
        entity: &CompiledEntity,
        mut body: Map<String, Value>,
        stored: Option<&StoredRecord>,
        previous: Option<&Map<String, Value>>,
        forced: &[String],
    ) -> Result<Map<String, Value>, RecordError> {
        let mut fields = entity.computed_fields().peekable();
        if fields.peek().is_none() {
            return Ok(body);
        }
        let is_computed = |name: &str| {
            entity
                .definition
                .field(name)
                .is_some_and(|field| field.is_computed())
        };
        let mut changed: HashSet<String> = match previous {
            Some(previous) => changes(previous, &body).keys().cloned().collect(),
            None => body.keys().cloned().collect(),
        };
        let active = self.plugins.active_in(scoped).await?;
        for field in fields {
            let name = field.name.as_str();
            let due = previous.is_none()
                || forced.iter().any(|forced| forced == name)
                || if field.depends_on.is_empty() {
                    // A roll-up without `depends_on` depends on its related records alone.
                    field.related.is_empty() && changed.iter().any(|changed| !is_computed(changed))
                } else {
                    field
                        .depends_on
                        .iter()
                        .any(|dependency| changed.contains(dependency.as_str()))
                };
            if !due {
                continue;
            }
            let plugin_id = field.plugin.as_deref().unwrap_or_default();
            let function = field.function.as_deref().unwrap_or_default();
            let Some(plugin) = active.iter().find(|plugin| {
                plugin.id == plugin_id
                    && plugin
                        .manifest
                        .provides
                        .computed
                        .iter()
                        .any(|provided| provided.function == function)
            }) else {
                return Err(RecordError::ComputedUnavailable {
                    entity: entity.name().to_owned(),
                    field: name.to_owned(),
                    plugin: plugin_id.to_owned(),
                    function: function.to_owned(),
                });
            };
            let request = ComputeRequest {
                function: function.to_owned(),
                field: name.to_owned(),
                record: Record {
                    entity: entity.name().to_owned(),
                    id: stored.map(|s| s.id.clone()).unwrap_or_default(),
                    version: stored.map_or(0, |s| s.version),
                    data: Value::Object(body.clone()).to_string(),
                },
                at: context.at.clone(),
            };
            let (state, requests) = host_state(plugin, Some("computed fields"));
            let runtime = self.plugins.runtime().clone();
            let started_at = crate::store::now();
            let invocation = async {
                let (result, usage, _) = runtime
                    .compute(&plugin.component, state, &plugin.limits, request)
                    .await;
                (result, usage)
            };
            let (result, usage) = self
                .serving(
                    scoped,
                    context,
                    Some("computed fields"),
                    invocation,
                    requests,
                )
                .await;
            let result = result.and_then(|text| {
                let mut value: Value = serde_json::from_str(&text).map_err(|error| {
                    Fault::InvalidResult(format!("a value for `{name}` that is not JSON: {error}"))
                })?;
                if !value.is_null() {
                    entity.check_computed(field, &mut value).map_err(|error| {
                        Fault::InvalidResult(format!(
                            "a value for `{name}` that is not a valid {}: {error}",
                            field.value_type().as_str()
                        ))
                    })?;
                }
                Ok(value)
            });
            let run = Run {
                plugin,
                stage: "compute",
                entity: entity.name(),
                record_id: stored.map(|s| s.id.clone()),
                started_at,
            };
            self.record_run(context, run, usage, result.as_ref().map(|_| "ok"));
            let value =
                result.map_err(|fault| self.failure(plugin, "compute", entity.name(), fault))?;
            let current = body.get(name);
            if value.is_null() {
                if current.is_some() {
                    body.remove(name);
                    changed.insert(name.to_owned());
                }
            } else if current != Some(&value) {
                body.insert(name.to_owned(), value);
                changed.insert(name.to_owned());
            }
        }
        Ok(body)
    }

    /// Recomputes the computed fields of other entities that roll up the records of `entity`
    /// these writes touched: each record pointed at (before or after the write) once, as an
    /// update one level deeper.
    pub(super) fn roll_up<'a>(
        &'a self,
        scoped: &'a mut Scoped<'_>,
        context: &'a WriteContext,
        entity: &'a CompiledEntity,
        writes: &'a [Change<'a>],
        now: time::OffsetDateTime,
    ) -> BoxFuture<'a, Result<(), RecordError>> {
        Box::pin(async move { self.roll_up_now(scoped, context, entity, writes, now).await })
    }

    async fn roll_up_now(
        &self,
        scoped: &mut Scoped<'_>,
        context: &WriteContext,
        entity: &CompiledEntity,
        writes: &[Change<'_>],
        now: time::OffsetDateTime,
    ) -> Result<(), RecordError> {
        let roll_ups = self.metadata.roll_ups(scoped, entity.name()).await?;
        // Each record pointed at, with the computed fields to refresh: one update per record.
        let mut targets: BTreeMap<(&str, &str), BTreeSet<&str>> = BTreeMap::new();
        for roll_up in &roll_ups {
            for write in writes {
                let relevant = match (write.before, write.after) {
                    (Some(before), Some(after)) => {
                        let changed = changes(before, after);
                        changed.contains_key(&roll_up.via)
                            || if roll_up.fields.is_empty() {
                                !changed.is_empty()
                            } else {
                                roll_up.fields.iter().any(|f| changed.contains_key(f))
                            }
                    }
                    _ => true,
                };
                if !relevant {
                    continue;
                }
                for body in [write.before, write.after].into_iter().flatten() {
                    if let Some(id) = body.get(&roll_up.via).and_then(Value::as_str) {
                        targets
                            .entry((roll_up.target.as_str(), id))
                            .or_default()
                            .extend(roll_up.computed.iter().map(String::as_str));
                    }
                }
            }
        }
        if targets.is_empty() {
            return Ok(());
        }
        let nested = context.deeper().map_err(RecordError::DepthExceeded)?;
        for ((target, id), fields) in targets {
            let target = self.metadata.compiled_for_write(scoped, target).await?;
            let update = BatchUpdate {
                id: id.to_owned(),
                version: None,
                data: json!({}),
            };
            let fields: Vec<String> = fields.into_iter().map(str::to_owned).collect();
            match self
                .update_one(scoped, &nested, &target, update, now, &fields)
                .await
            {
                // The record pointed at was deleted: nothing to refresh.
                Ok(_) | Err(RecordError::NotFound { .. }) => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

/// Records recomputed per transaction by [`Records::recompute`].
const RECOMPUTE_CHUNK: i64 = 200;

/// What a recompute did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Recomputed {
    /// Live records whose computed fields were computed again.
    pub records: u64,
    /// Those of them whose values changed (each got a new version and a history row).
    pub changed: u64,
}

impl Records {
    /// Computes the computed fields of every live record of `entity` again — all of them, or
    /// those in `fields` — e.g. after adding a computed field, upgrading its plugin, or for
    /// values that depend on the time (recency). Administrators only. Runs in transactions of
    /// [`RECOMPUTE_CHUNK`] records, in id order: a failure stops it and names the record; the
    /// chunks before it stay recomputed, and running it again is harmless.
    pub async fn recompute(
        &self,
        principal: &crate::auth::Principal,
        entity: &str,
        fields: Vec<String>,
    ) -> Result<Recomputed, RecordError> {
        if !principal.is_admin() {
            return Err(RecordError::Forbidden(
                "only administrators may recompute computed fields".into(),
            ));
        }
        let compiled = {
            let mut conn = self.store.reader().await?;
            let mut scoped = conn.scoped(&principal.tenant);
            self.metadata.compiled(&mut scoped, entity).await?
        };
        let computed: Vec<String> = compiled
            .computed_fields()
            .map(|field| field.name.to_string())
            .collect();
        if computed.is_empty() {
            return Err(super::bad(format!("`{entity}` has no computed fields")));
        }
        for field in &fields {
            if !computed.contains(field) {
                return Err(super::bad(format!(
                    "`{field}` is not an active computed field of `{entity}` (those are: {})",
                    computed.join(", ")
                )));
            }
        }
        let forced = if fields.is_empty() { computed } else { fields };
        let mut done = Recomputed {
            records: 0,
            changed: 0,
        };
        let mut after: Option<String> = None;
        loop {
            let params = super::ListParams {
                filter: after.as_ref().map(|id| format!("_id gt '{id}'")),
                sort: Some("_id".to_owned()),
                limit: Some(RECOMPUTE_CHUNK),
                ..super::ListParams::default()
            };
            let ids: Vec<String> = {
                let mut conn = self.store.reader().await?;
                let mut scoped = conn.scoped(&principal.tenant);
                let page = self
                    .list_in(&mut scoped, principal, &compiled, &params, None)
                    .await?;
                page.data.into_iter().map(|view| view.id).collect()
            };
            let Some(last) = ids.last().cloned() else {
                break;
            };
            let this = self.clone();
            let principal_for_write = principal.clone();
            let entity = entity.to_owned();
            let forced = forced.clone();
            let chunk = self
                .store
                .write(move |tx: &mut crate::store::Tx| {
                    Box::pin(async move {
                        let mut scoped = tx.scoped(&principal_for_write.tenant);
                        let compiled = this
                            .metadata
                            .compiled_for_write(&mut scoped, &entity)
                            .await?;
                        let now = crate::store::now();
                        let context = WriteContext::new(&principal_for_write, now);
                        let mut chunk = Recomputed {
                            records: 0,
                            changed: 0,
                        };
                        for id in ids {
                            let update = BatchUpdate {
                                id: id.clone(),
                                version: None,
                                data: json!({}),
                            };
                            match this
                                .update_one(&mut scoped, &context, &compiled, update, now, &forced)
                                .await
                            {
                                Ok(stored) => {
                                    chunk.records += 1;
                                    // An unchanged record comes back as it was stored before.
                                    if stored.updated_at == now {
                                        chunk.changed += 1;
                                    }
                                }
                                Err(RecordError::NotFound { .. }) => {}
                                Err(error) => {
                                    return Err(super::labelled(&format!("record `{id}`"), error));
                                }
                            }
                        }
                        Ok(chunk)
                    })
                })
                .await?;
            done.records += chunk.records;
            done.changed += chunk.changed;
            after = Some(last);
        }
        Ok(done)
    }
}
