//! What workflows need of records: the trigger side (runs started in the write's transaction)
//! and the reads and writes a workflow step makes inside its own transaction. Step writes go
//! through the same validation, plugins, computed fields and history as a client's.

use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;

use super::hooks::WriteContext;
use super::{RecordError, Records, bad, parse_body};
use crate::metadata::CompiledEntity;
use crate::records::query;
use crate::store::records::{ListQuery, StoredRecord};
use crate::store::{Scoped, SqlValue};
use crate::workflows::RecordEvent;
use crate::workflows::definition::Event;

/// A record's field values with its system fields (`_id`, `_owner`, `_version`, …), as
/// conditions and templates see it.
pub fn with_system_fields(record: &StoredRecord, body: &Map<String, Value>) -> Map<String, Value> {
    let mut all = body.clone();
    let time =
        |moment: time::OffsetDateTime| Value::String(moment.format(&Rfc3339).unwrap_or_default());
    all.insert("_id".into(), Value::String(record.id.clone()));
    all.insert("_version".into(), Value::from(record.version));
    all.insert("_owner".into(), Value::String(record.owner_id.clone()));
    all.insert("_created_at".into(), time(record.created_at));
    all.insert(
        "_created_by".into(),
        Value::String(record.created_by.clone()),
    );
    all.insert("_updated_at".into(), time(record.updated_at));
    all.insert(
        "_updated_by".into(),
        Value::String(record.updated_by.clone()),
    );
    all
}

impl Records {
    /// Starts the workflow runs a write triggers, in its transaction.
    #[expect(clippy::too_many_arguments, reason = "the parts of one record event")]
    pub(super) async fn fire(
        &self,
        scoped: &mut Scoped<'_>,
        context: &WriteContext,
        entity: &CompiledEntity,
        event: Event,
        record: &StoredRecord,
        body: &Map<String, Value>,
        before: Option<&Map<String, Value>>,
    ) -> Result<(), RecordError> {
        if context.quiet {
            return Ok(());
        }
        self.workflows
            .fire(
                scoped,
                &RecordEvent {
                    event,
                    entity: entity.name(),
                    stored: record,
                    body,
                    before,
                    user: context.principal.user.as_str(),
                    depth: context.workflow_depth,
                },
            )
            .await?;
        Ok(())
    }

    /// A live record with its system fields, or `None`.
    pub(crate) async fn step_record(
        &self,
        scoped: &mut Scoped<'_>,
        principal: &crate::auth::Principal,
        entity: &str,
        id: &str,
    ) -> Result<Option<Map<String, Value>>, RecordError> {
        let compiled = self.metadata.compiled_for_write(scoped, entity).await?;
        let Some(stored) = scoped
            .get_record(compiled.id, id)
            .await?
            .filter(|record| record.deleted_at.is_none())
        else {
            return Ok(None);
        };
        let body = parse_body(&stored)?;
        // The run sees what the user it acts as may read.
        let sight = super::Sight::of(principal, &compiled);
        Ok(Some(with_system_fields(
            &stored,
            &active(&sight.definition, body),
        )))
    }

    /// Updates one record as a step does (a partial update; `null` clears a field).
    pub(crate) async fn step_update(
        &self,
        scoped: &mut Scoped<'_>,
        context: &WriteContext,
        entity: &str,
        id: &str,
        values: Map<String, Value>,
    ) -> Result<StoredRecord, RecordError> {
        let compiled = self.metadata.compiled_for_write(scoped, entity).await?;
        let update = super::BatchUpdate {
            id: id.to_owned(),
            version: None,
            data: Value::Object(values),
        };
        let now = crate::store::now();
        self.update_one(scoped, context, &compiled, update, now, &[])
            .await
    }

    /// Gives a live record another owner (a user of the tenant, checked by the caller), with
    /// history; triggers see an update whose `_owner` changed. The same owner changes nothing.
    pub(crate) async fn step_assign(
        &self,
        scoped: &mut Scoped<'_>,
        context: &WriteContext,
        entity: &str,
        id: &str,
        owner: &str,
    ) -> Result<StoredRecord, RecordError> {
        let compiled = self.metadata.compiled_for_write(scoped, entity).await?;
        let stored = scoped
            .get_record(compiled.id, id)
            .await?
            .filter(|record| record.deleted_at.is_none())
            .ok_or_else(|| RecordError::NotFound {
                entity: entity.to_owned(),
                id: id.to_owned(),
            })?;
        super::access::authorize_reassign(&context.principal, &compiled, &stored)?;
        if stored.owner_id == owner {
            return Ok(stored);
        }
        let now = crate::store::now();
        let user = &context.principal.user;
        let changes = serde_json::json!({"_owner": {"from": stored.owner_id, "to": owner}});
        if !scoped
            .set_owner(
                compiled.id,
                id,
                stored.version,
                owner,
                user,
                now,
                &changes.to_string(),
            )
            .await?
        {
            return Err(RecordError::VersionMismatch {
                expected: stored.version,
                current: stored.version + 1,
            });
        }
        let body = parse_body(&stored)?;
        let mut before = with_system_fields(&stored, &body);
        before.retain(|key, _| !key.starts_with('_') || key == "_owner");
        let updated = StoredRecord {
            version: stored.version + 1,
            owner_id: owner.to_owned(),
            updated_at: now,
            updated_by: user.to_string(),
            ..stored
        };
        let mut after = body.clone();
        after.insert("_owner".into(), Value::String(owner.to_owned()));
        self.fire(
            scoped,
            context,
            &compiled,
            Event::Updated,
            &updated,
            &after,
            Some(&before),
        )
        .await?;
        Ok(updated)
    }

    /// Runs a plugin's workflow step in the step's transaction: the tenant's enabled plugin
    /// `plugin_id` must provide `step`; `input` is checked against the step's input schema; the
    /// plugin's record access is served from the transaction as the run's user, within its
    /// capabilities, and the messages it enqueues are stored with the step. `Err(text)` fails
    /// the step.
    #[expect(clippy::too_many_arguments, reason = "the parts of one step")]
    pub(crate) async fn step_plugin(
        &self,
        scoped: &mut Scoped<'_>,
        context: &WriteContext,
        plugin_id: &str,
        step: &str,
        input: &Value,
        record: (Option<&str>, Option<&str>),
        run_id: &str,
    ) -> Result<Result<Value, String>, RecordError> {
        let active = self
            .plugins
            .active_in(scoped)
            .await
            .map_err(|error| bad(error.to_string()))?;
        let Some(plugin) = active.iter().find(|plugin| plugin.id == plugin_id) else {
            return Ok(Err(format!(
                "plugin `{plugin_id}` is not installed and enabled in this tenant"
            )));
        };
        let Some(declared) = plugin
            .manifest
            .provides
            .workflow_steps
            .iter()
            .find(|declared| declared.step == step)
        else {
            return Ok(Err(format!(
                "plugin `{plugin_id}` {} provides no workflow step `{step}`",
                plugin.version
            )));
        };
        if let Some(schema) = &declared.input_schema
            && let Ok(validator) = jsonschema::validator_for(schema)
        {
            let problems: Vec<String> = validator
                .iter_errors(input)
                .map(|error| format!("input{}: {error}", error.instance_path().as_str()))
                .collect();
            if !problems.is_empty() {
                return Ok(Err(problems.join("; ")));
            }
        }
        let (state, requests) = super::hooks::host_state_with(plugin, plugin.job_limits, None);
        let runtime = self.plugins.runtime().clone();
        let text = input.to_string();
        let started_at = crate::store::now();
        let invocation = async {
            let (result, usage, state) = runtime
                .run_step(&plugin.component, state, &plugin.job_limits, step, &text)
                .await;
            (result.map(|output| (output, state.outbox)), usage)
        };
        let (result, usage) = self
            .serving(&mut *scoped, context, None, invocation, requests)
            .await;
        let (entity, record_id) = record;
        let result = result.and_then(|(output, messages)| {
            serde_json::from_str::<Value>(&output)
                .map(|output| (output, messages))
                .map_err(|error| {
                    crate::plugins::runtime::Fault::InvalidResult(format!(
                        "a step output that is not JSON: {error}"
                    ))
                })
        });
        let run = super::hooks::Run {
            plugin,
            stage: "workflow_step",
            entity: entity.unwrap_or(""),
            record_id: record_id.map(str::to_owned),
            started_at,
        };
        self.record_run(context, run, usage, result.as_ref().map(|_| "ok"));
        match result {
            Ok((output, messages)) => {
                let mut stored = self.outbox_messages(
                    context,
                    plugin,
                    entity.unwrap_or(""),
                    &record_id.map(str::to_owned),
                    messages,
                );
                for message in &mut stored {
                    message.run_id = Some(run_id.to_owned());
                    if entity.is_none() {
                        message.entity = None;
                    }
                }
                scoped.enqueue(&stored).await?;
                Ok(Ok(output))
            }
            Err(fault) => Ok(Err(format!(
                "plugin `{plugin_id}` {} failed in step `{step}`: {fault}",
                plugin.version
            ))),
        }
    }

    /// Creates one record as a step does.
    pub(crate) async fn step_create(
        &self,
        scoped: &mut Scoped<'_>,
        context: &WriteContext,
        entity: &str,
        values: Map<String, Value>,
    ) -> Result<StoredRecord, RecordError> {
        let compiled = self.metadata.compiled_for_write(scoped, entity).await?;
        let bodies = Self::prepare_new(
            &context.principal,
            &compiled,
            &[Value::Object(values)],
            false,
        )?;
        let now = crate::store::now();
        let mut stored = self
            .insert_many(scoped, context, &compiled, bodies, false, now)
            .await?;
        stored
            .pop()
            .ok_or_else(|| bad("the record was not created"))
    }

    /// Creates records in the caller's transaction as a client's batch would (validation,
    /// plugins, computed fields, history), on behalf of `principal`, starting no workflow run: a
    /// pack's sample data.
    pub(crate) async fn import_in(
        &self,
        scoped: &mut Scoped<'_>,
        principal: &crate::auth::Principal,
        entity: &str,
        bodies: &[Value],
    ) -> Result<Vec<StoredRecord>, RecordError> {
        let compiled = self.metadata.compiled_for_write(scoped, entity).await?;
        let now = crate::store::now();
        let mut context = WriteContext::new(principal, now);
        context.quiet = true;
        let prepared = Self::prepare_new(principal, &compiled, bodies, true)?;
        self.insert_many(scoped, &context, &compiled, prepared, true, now)
            .await
    }

    /// The ids of live records of `entity` matching `filter`, at most `limit`, oldest first;
    /// with `after`, those after that id (the next page).
    pub(crate) async fn step_matching(
        &self,
        scoped: &mut Scoped<'_>,
        entity: &str,
        filter: &str,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<String>, RecordError> {
        let compiled = self.metadata.compiled_for_write(scoped, entity).await?;
        let mut builder = ListQuery::builder(scoped.dialect());
        let mut condition =
            query::filter_condition(&compiled.definition, filter, &mut builder).map_err(bad)?;
        if let Some(after) = after {
            let placeholder = builder.bind(SqlValue::Text(after.to_owned()));
            condition = format!("{condition} AND id > {placeholder}");
        }
        let rows = scoped
            .list_records(
                compiled.id,
                ListQuery {
                    condition: format!("deleted_at IS NULL AND {condition}"),
                    order: "id".to_owned(),
                    binds: builder.binds,
                    limit,
                },
            )
            .await?;
        Ok(rows.into_iter().map(|record| record.id).collect())
    }

    /// The smallest value of `field` among live records of `entity` matching `filter`, as the
    /// record holds it (for a datetime field, its canonical RFC 3339 text).
    pub(crate) async fn step_earliest(
        &self,
        scoped: &mut Scoped<'_>,
        entity: &str,
        field: &str,
        filter: &str,
    ) -> Result<Option<String>, RecordError> {
        let compiled = self.metadata.compiled_for_write(scoped, entity).await?;
        let definition = compiled
            .definition
            .field(field)
            .ok_or_else(|| bad(format!("entity `{entity}` has no field `{field}`")))?;
        let dialect = scoped.dialect();
        let mut builder = ListQuery::builder(dialect);
        let condition =
            query::filter_condition(&compiled.definition, filter, &mut builder).map_err(bad)?;
        let rows = scoped
            .list_records(
                compiled.id,
                ListQuery {
                    condition: format!("deleted_at IS NULL AND {condition}"),
                    order: format!("{}, id", dialect.field_expr(definition)),
                    binds: builder.binds,
                    limit: 1,
                },
            )
            .await?;
        Ok(rows.first().and_then(|record| {
            let data: Value = serde_json::from_str(&record.data).ok()?;
            data.get(field)?.as_str().map(str::to_owned)
        }))
    }
}

/// The fields a step sees: the active ones.
fn active(
    definition: &crate::metadata::definition::EntityDefinition,
    mut body: Map<String, Value>,
) -> Map<String, Value> {
    body.retain(|key, _| definition.field(key).is_some_and(|f| f.active));
    body
}
