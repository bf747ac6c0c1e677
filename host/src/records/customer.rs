//! The customer 360 view: a record's timeline (every record of every entity that references it,
//! and its own history, newest first, paged) and the screen pop (the contact or account a phone
//! number or email belongs to, with its open records and latest activity). Both read as the
//! caller: entities and reference fields they may not read are left out, record scopes apply,
//! hidden fields are dropped.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::access::Sight;
use super::{RecordError, RecordView, Records, bad, parse_id, view};
use crate::auth::Principal;
use crate::metadata::CompiledEntity;
use crate::metadata::definition::{EntityDefinition, FieldDefinition, FieldType};
use crate::metadata::values::canonical_phone;
use crate::store::records::{ListQuery, StoredRecord, tagged_columns};
use crate::store::sql::QueryBuilder;
use crate::store::{Scoped, SqlValue};

/// The default and the largest page of a timeline.
pub const DEFAULT_TIMELINE_PAGE: i64 = 50;
pub const MAX_TIMELINE_PAGE: i64 = 200;
/// How many records the screen pop returns per matching record and related entity.
pub const LOOKUP_RELATED: i64 = 5;
/// The most records a lookup matches.
pub const LOOKUP_MATCHES: i64 = 10;

/// Where a timeline page ends: the time and id of its last item.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct TimelineCursor {
    t: String,
    id: String,
}

impl TimelineCursor {
    fn encode(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(self).expect("cursors serialize"))
    }

    fn decode(text: &str) -> Result<(OffsetDateTime, String), RecordError> {
        base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(text)
            .ok()
            .and_then(|bytes| serde_json::from_slice::<TimelineCursor>(&bytes).ok())
            .and_then(|cursor| {
                OffsetDateTime::parse(&cursor.t, &Rfc3339)
                    .ok()
                    .map(|t| (t, cursor.id))
            })
            .ok_or_else(|| bad("`cursor` is not a cursor returned by this timeline"))
    }
}

/// An entity whose reference fields point at a target entity, as `principal` sees it: borrowed
/// from the tenant's compiled entities, so that a request copies no definition it only reads.
struct Referrer<'a> {
    compiled: &'a CompiledEntity,
    /// The entity as the principal sees it (fields they may not read are inactive).
    sight: Cow<'a, EntityDefinition>,
    /// Which of `sight`'s fields point at the target (indices into its fields).
    fields: Vec<usize>,
    owners: Option<Vec<String>>,
}

impl Referrer<'_> {
    /// Its active reference fields that point at the target.
    fn fields(&self) -> impl Iterator<Item = &FieldDefinition> {
        self.fields.iter().map(|&index| &self.sight.fields[index])
    }

    /// Its records that point at the record bound as `id` through any of its reference
    /// fields, within the caller's read scope.
    fn condition(&self, id: &str, builder: &mut QueryBuilder) -> String {
        let references: Vec<String> = self
            .fields()
            .map(|field| format!("{} = {id}", builder.dialect.field_expr(field)))
            .collect();
        let mut condition = format!("({})", references.join(" OR "));
        if let Some(owners) = &self.owners {
            let owned = super::owner_condition(owners, builder);
            condition.push_str(&format!(" AND {owned}"));
        }
        condition
    }
}

fn referrers<'a>(
    principal: &Principal,
    all: &'a [Arc<CompiledEntity>],
    target: &str,
) -> Vec<Referrer<'a>> {
    all.iter()
        .filter_map(|compiled| {
            let sight = Sight::of(principal, compiled);
            if sight.grant.read == crate::auth::Scope::None {
                return None;
            }
            let fields: Vec<usize> = sight
                .definition
                .fields
                .iter()
                .enumerate()
                .filter(|(_, field)| {
                    field.active
                        && field.field_type == FieldType::Reference
                        && field.entity.as_ref().is_some_and(|e| e.as_str() == target)
                })
                .map(|(index, _)| index)
                .collect();
            (!fields.is_empty()).then(|| Referrer {
                compiled: compiled.as_ref(),
                owners: principal.owners(sight.grant.read),
                sight: sight.definition,
                fields,
            })
        })
        .collect()
}

/// One arm of a union: `SELECT * FROM (SELECT … WHERE … ORDER BY … LIMIT n) AS tN`, over the
/// records `rows` selects (`Scoped::entity_rows`).
fn arm(
    builder: &QueryBuilder,
    index: usize,
    rows: &str,
    condition: &str,
    order: &str,
    limit: i64,
) -> String {
    format!(
        "SELECT * FROM (SELECT {} FROM records WHERE {rows} AND deleted_at IS NULL AND {condition} ORDER BY {order} LIMIT {limit}) AS t{index}",
        tagged_columns(builder.dialect, index),
    )
}

impl Records {
    /// Every record that references the record `id` of `entity` through a reference field, and
    /// the record's own history, newest first (records by creation, history by change).
    pub async fn timeline(
        &self,
        principal: &Principal,
        entity: &str,
        id: &str,
        limit: Option<i64>,
        cursor: Option<&str>,
    ) -> Result<Value, RecordError> {
        let limit = limit.unwrap_or(DEFAULT_TIMELINE_PAGE);
        if !(1..=MAX_TIMELINE_PAGE).contains(&limit) {
            return Err(bad(format!(
                "`limit` must be between 1 and {MAX_TIMELINE_PAGE}, not {limit}"
            )));
        }
        let after = cursor.map(TimelineCursor::decode).transpose()?;
        let record_id = parse_id(entity, id)?;
        let mut conn = self.store.reader().await?;
        let mut scoped = conn.scoped(&principal.tenant);
        let target = self.metadata.compiled(&mut scoped, entity).await?;
        let sight = Sight::readable(principal, &target)?;
        super::live_readable(&mut scoped, principal, &target, &sight, &record_id, id).await?;
        let all = self.metadata.all_current(&mut scoped).await?;
        let referrers = referrers(principal, &all, entity);

        // One statement: per referring entity, its newest `limit + 1` records after the cursor.
        let mut items: Vec<(OffsetDateTime, String, Value)> = Vec::new();
        if !referrers.is_empty() {
            let mut builder = ListQuery::builder(scoped.dialect());
            let id_placeholder = builder.bind(SqlValue::Text(record_id.to_string()));
            let seek = match &after {
                Some((time, last)) => {
                    let t = builder.bind(SqlValue::Timestamp(*time));
                    let i = builder.bind(SqlValue::Text(last.clone()));
                    format!(" AND (created_at < {t} OR (created_at = {t} AND id < {i}))")
                }
                None => String::new(),
            };
            let mut arms = Vec::new();
            for (index, referrer) in referrers.iter().enumerate() {
                let condition = format!(
                    "{}{seek}",
                    referrer.condition(&id_placeholder, &mut builder)
                );
                arms.push(arm(
                    &builder,
                    index,
                    &scoped.entity_rows(referrer.compiled.id),
                    &condition,
                    "created_at DESC, id DESC",
                    limit + 1,
                ));
            }
            let sql = format!(
                "{} ORDER BY created_at DESC, id DESC LIMIT {}",
                arms.join(" UNION ALL "),
                limit + 1
            );
            let dialect = scoped.dialect();
            for row in scoped.tagged_records(&sql, builder.binds).await? {
                let referrer = &referrers[row.arm as usize];
                let record = view(&row.record, &referrer.sight, dialect, None)?;
                let body: Map<String, Value> =
                    serde_json::from_str(&row.record.data).unwrap_or_default();
                let via: Vec<&str> = referrer
                    .fields()
                    .filter(|field| {
                        body.get(field.name.as_str()).and_then(Value::as_str)
                            == Some(record_id.as_str())
                    })
                    .map(|field| field.name.as_str())
                    .collect();
                items.push((
                    row.record.created_at,
                    row.record.id.clone(),
                    json!({
                        "kind": "record",
                        "at": format_time(row.record.created_at),
                        "entity": referrer.compiled.definition.name.as_str(),
                        "via": via,
                        "record": record,
                    }),
                ));
            }
        }
        // The record's own history, as history reads it.
        let history = super::history_entries(&mut scoped, &target, &sight, &record_id).await?;
        for entry in &history {
            let Some(at) = entry["changed_at"]
                .as_str()
                .and_then(|text| OffsetDateTime::parse(text, &Rfc3339).ok())
            else {
                continue;
            };
            // History items sort after records of the same instant: `~` follows every id.
            let key = format!("~{:012}", entry["version"].as_i64().unwrap_or_default());
            if let Some((time, last)) = &after
                && !(at < *time || (at == *time && key < *last))
            {
                continue;
            }
            items.push((
                at,
                key,
                json!({
                    "kind": "history",
                    "at": format_time(at),
                    "entity": entity,
                    "history": entry,
                }),
            ));
        }
        items.sort_by(|a, b| (b.0, &b.1).cmp(&(a.0, &a.1)));
        let more = items.len() as i64 > limit;
        items.truncate(limit as usize);
        let next_cursor = more.then(|| {
            let (time, key, _) = items.last().expect("a full page");
            TimelineCursor {
                t: time.format(&Rfc3339).unwrap_or_default(),
                id: key.clone(),
            }
            .encode()
        });
        Ok(json!({
            "data": items.into_iter().map(|(_, _, item)| item).collect::<Vec<_>>(),
            "next_cursor": next_cursor,
        }))
    }

    /// The screen pop: records with a phone field (`phone`, in any common format) or an email
    /// field (`email`) holding the value, each with, for every entity that references it, its
    /// open records (those whose state picklist is not at a `closed` option) and latest records.
    pub async fn lookup(
        &self,
        principal: &Principal,
        phone: Option<&str>,
        email: Option<&str>,
    ) -> Result<Lookup, RecordError> {
        let (field_type, value) = match (phone, email) {
            (Some(phone), None) => (FieldType::Phone, phone.trim()),
            (None, Some(email)) => (FieldType::Email, email.trim()),
            _ => return Err(bad("give exactly one of `phone` and `email`")),
        };
        if value.is_empty() || value.len() > 254 {
            return Err(bad("the value to look up must be 1 to 254 characters"));
        }
        let query = LookupQuery {
            phone: phone.map(|_| value.to_owned()),
            email: email.map(|_| value.to_owned()),
        };
        let mut conn = self.store.reader().await?;
        let mut scoped = conn.scoped(&principal.tenant);
        let all = self.metadata.all_current(&mut scoped).await?;

        // Every readable entity with a field of that type: one statement.
        let mut builder = ListQuery::builder(scoped.dialect());
        let mut arms = Vec::new();
        let mut entities: Vec<(&CompiledEntity, Cow<EntityDefinition>)> = Vec::new();
        for compiled in all.iter() {
            let sight = Sight::of(principal, compiled);
            if sight.grant.read == crate::auth::Scope::None {
                continue;
            }
            let fields: Vec<&FieldDefinition> = sight
                .definition
                .active_fields()
                .filter(|field| field.field_type == field_type)
                .collect();
            if fields.is_empty() {
                continue;
            }
            let mut alternatives = Vec::new();
            for field in &fields {
                let mut candidates = vec![value.to_owned()];
                match field_type {
                    FieldType::Phone => {
                        candidates.push(canonical_phone(value, field.region.as_deref()))
                    }
                    _ => candidates.push(value.to_lowercase()),
                }
                candidates.sort();
                candidates.dedup();
                let placeholders: Vec<String> = candidates
                    .into_iter()
                    .map(|candidate| builder.bind(SqlValue::Text(candidate)))
                    .collect();
                alternatives.push(format!(
                    "{} IN ({})",
                    builder.dialect.field_expr(field),
                    placeholders.join(", ")
                ));
            }
            let mut condition = format!("({})", alternatives.join(" OR "));
            if let Some(owners) = principal.owners(sight.grant.read) {
                let owned = super::owner_condition(&owners, &mut builder);
                condition.push_str(&format!(" AND {owned}"));
            }
            arms.push(arm(
                &builder,
                entities.len(),
                &scoped.entity_rows(compiled.id),
                &condition,
                "updated_at DESC, id DESC",
                LOOKUP_MATCHES,
            ));
            entities.push((compiled.as_ref(), sight.definition));
        }
        let mut matches = Vec::new();
        if !arms.is_empty() {
            let sql = format!("{} LIMIT {LOOKUP_MATCHES}", arms.join(" UNION ALL "));
            let rows = scoped.tagged_records(&sql, builder.binds).await?;
            for row in rows {
                let (compiled, definition) = &entities[row.arm as usize];
                let related = self
                    .related_summary(&mut scoped, principal, &all, compiled, &row.record)
                    .await?;
                matches.push(LookupMatch {
                    entity: compiled.definition.name.to_string(),
                    record: view(&row.record, definition, scoped.dialect(), None)?,
                    related,
                });
            }
        }
        Ok(Lookup { matches, query })
    }

    /// For each entity referencing `record`: its open records (when it has a state picklist
    /// with `closed` options) and its latest records, in one statement.
    async fn related_summary(
        &self,
        scoped: &mut Scoped<'_>,
        principal: &Principal,
        all: &[Arc<CompiledEntity>],
        target: &CompiledEntity,
        record: &StoredRecord,
    ) -> Result<BTreeMap<String, Related>, RecordError> {
        let referrers = referrers(principal, all, target.definition.name.as_str());
        if referrers.is_empty() {
            return Ok(BTreeMap::new());
        }
        // Each referrer's lists, in the order of `referrers`.
        let mut related: Vec<Related> = Vec::with_capacity(referrers.len());
        let mut builder = ListQuery::builder(scoped.dialect());
        let id_placeholder = builder.bind(SqlValue::Text(record.id.clone()));
        let mut arms = Vec::new();
        // (referrer, open?) of each arm.
        let mut kinds: Vec<(usize, bool)> = Vec::new();
        for (index, referrer) in referrers.iter().enumerate() {
            let condition = referrer.condition(&id_placeholder, &mut builder);
            // The picklists with closed options: open means at none of them.
            let mut open = Vec::new();
            for field in referrer.sight.active_fields() {
                let closed: Vec<&str> = field
                    .options
                    .iter()
                    .flatten()
                    .filter(|option| option.closed())
                    .map(|option| option.value())
                    .collect();
                if closed.is_empty() || field.multiple {
                    continue;
                }
                let placeholders: Vec<String> = closed
                    .iter()
                    .map(|value| builder.bind(SqlValue::Text((*value).to_owned())))
                    .collect();
                let expr = builder.dialect.field_expr(field);
                open.push(format!(
                    "({expr} IS NULL OR {expr} NOT IN ({}))",
                    placeholders.join(", ")
                ));
            }
            related.push(Related {
                latest: Vec::new(),
                open: (!open.is_empty()).then(Vec::new),
            });
            if !open.is_empty() {
                arms.push(arm(
                    &builder,
                    arms.len(),
                    &scoped.entity_rows(referrer.compiled.id),
                    &format!("{condition} AND {}", open.join(" AND ")),
                    "updated_at DESC, id DESC",
                    LOOKUP_RELATED,
                ));
                kinds.push((index, true));
            }
            arms.push(arm(
                &builder,
                arms.len(),
                &scoped.entity_rows(referrer.compiled.id),
                &condition,
                "created_at DESC, id DESC",
                LOOKUP_RELATED,
            ));
            kinds.push((index, false));
        }
        let sql = arms.join(" UNION ALL ");
        let rows = scoped.tagged_records(&sql, builder.binds).await?;
        for row in rows {
            let (index, open) = kinds[row.arm as usize];
            let shown = view(&row.record, &referrers[index].sight, scoped.dialect(), None)?;
            let entry = &mut related[index];
            match (open, entry.open.as_mut()) {
                (true, Some(list)) => list.push(shown),
                _ => entry.latest.push(shown),
            }
        }
        Ok(referrers
            .iter()
            .map(|referrer| referrer.compiled.definition.name.to_string())
            .zip(related)
            .collect())
    }
}

/// The screen pop's answer: what was looked up, and every record it matched.
#[derive(Debug, Serialize)]
pub struct Lookup {
    pub matches: Vec<LookupMatch>,
    pub query: LookupQuery,
}

/// The value a screen pop looked for: its phone number or its email address, as given.
#[derive(Debug, Serialize)]
pub struct LookupQuery {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
}

/// A record a screen pop matched, with the records of each entity that references it.
#[derive(Debug, Serialize)]
pub struct LookupMatch {
    pub entity: String,
    pub record: RecordView,
    /// By referring entity.
    pub related: BTreeMap<String, Related>,
}

/// The records of one entity that reference a screen pop's match.
#[derive(Debug, Serialize)]
pub struct Related {
    /// Its newest records.
    pub latest: Vec<RecordView>,
    /// Its newest open records; absent when the entity has no picklist with closed options.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub open: Option<Vec<RecordView>>,
}

fn format_time(moment: OffsetDateTime) -> String {
    crate::metadata::values::datetime_text(moment).unwrap_or_default()
}
