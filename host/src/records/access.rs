//! What a principal may do with records: the one place where roles meet records. Reads see an
//! entity through a [`Sight`] (the fields the principal may not read are inactive in it, so
//! every read path — get, list, filter, sort, search, selection, expansion, history — treats
//! them as absent); writes are checked here before anything is written.

use std::borrow::Cow;

use serde_json::{Map, Value};

use super::{RecordError, StoredRecord};
use crate::auth::{FieldAccess, Grant, Principal, Scope};
use crate::metadata::CompiledEntity;
use crate::metadata::definition::EntityDefinition;

/// An entity as a principal sees it.
#[derive(Debug)]
pub struct Sight<'a> {
    pub grant: Grant,
    /// The definition with every field the principal may not read made inactive.
    pub definition: Cow<'a, EntityDefinition>,
}

impl<'a> Sight<'a> {
    /// How `principal` sees `entity` (whatever they may do with it).
    pub fn of(principal: &Principal, entity: &'a CompiledEntity) -> Self {
        let grant = principal.access.grant(entity.name());
        let hidden =
            |name: &str| grant.read == Scope::None || grant.field(name) == FieldAccess::None;
        let definition = if entity
            .definition
            .fields
            .iter()
            .any(|field| field.active && hidden(field.name.as_str()))
        {
            let mut definition = entity.definition.clone();
            for field in &mut definition.fields {
                if hidden(field.name.as_str()) {
                    field.active = false;
                }
            }
            Cow::Owned(definition)
        } else {
            Cow::Borrowed(&entity.definition)
        };
        Self { grant, definition }
    }

    /// How `principal` sees `entity`, refused unless they may read some of its records.
    pub fn readable(
        principal: &Principal,
        entity: &'a CompiledEntity,
    ) -> Result<Self, RecordError> {
        let sight = Self::of(principal, entity);
        if sight.grant.read == Scope::None {
            return Err(forbidden(principal, "read", entity.name()));
        }
        Ok(sight)
    }
}

/// 403: the principal's roles do not allow `what` on records of `entity`.
pub fn forbidden(principal: &Principal, what: &str, entity: &str) -> RecordError {
    RecordError::Forbidden(format!(
        "your roles ({}) may not {what} `{entity}` records",
        principal.access.role_names().join(", ")
    ))
}

/// Checks that every field a client sends may be written by the principal: 403 naming the
/// first that may not.
fn check_fields<'k>(
    principal: &Principal,
    grant: &Grant,
    entity: &str,
    creating: bool,
    keys: impl Iterator<Item = &'k String>,
) -> Result<(), RecordError> {
    for key in keys {
        match principal.access.may_write(entity, key, creating) {
            true => {}
            false => {
                let why = if grant.read != Scope::None && grant.field(key) != FieldAccess::None {
                    "is read-only"
                } else {
                    "is not accessible"
                };
                return Err(RecordError::Forbidden(format!(
                    "field `{key}` of `{entity}` {why} for your roles ({}): it may not be written",
                    principal.access.role_names().join(", ")
                )));
            }
        }
    }
    Ok(())
}

/// May `principal` create records of `entity` with these bodies?
pub fn authorize_create(
    principal: &Principal,
    entity: &CompiledEntity,
    inputs: &[Value],
) -> Result<(), RecordError> {
    let grant = principal.access.grant(entity.name());
    if !grant.create {
        return Err(forbidden(principal, "create", entity.name()));
    }
    for input in inputs {
        if let Value::Object(body) = input {
            check_fields(principal, &grant, entity.name(), true, body.keys())?;
        }
    }
    Ok(())
}

/// May `principal` change the fields in `patch` of the stored record? A record they may not
/// even read is not found; one they may read but not update is forbidden.
pub fn authorize_update(
    principal: &Principal,
    entity: &CompiledEntity,
    stored: &StoredRecord,
    patch: &Map<String, Value>,
) -> Result<(), RecordError> {
    let grant = principal.access.grant(entity.name());
    authorize_scope(principal, &grant, grant.update, "update", entity, stored)?;
    check_fields(principal, &grant, entity.name(), false, patch.keys())
}

/// May `principal` delete (or restore) the stored record?
pub fn authorize_delete(
    principal: &Principal,
    entity: &CompiledEntity,
    stored: &StoredRecord,
) -> Result<(), RecordError> {
    let grant = principal.access.grant(entity.name());
    authorize_scope(principal, &grant, grant.delete, "delete", entity, stored)
}

/// May `principal` give the stored record another owner?
pub fn authorize_reassign(
    principal: &Principal,
    entity: &CompiledEntity,
    stored: &StoredRecord,
) -> Result<(), RecordError> {
    let grant = principal.access.grant(entity.name());
    authorize_scope(principal, &grant, grant.update, "update", entity, stored)?;
    if !principal.access.may_reassign() {
        return Err(forbidden(principal, "reassign", entity.name()));
    }
    Ok(())
}

/// Whether `principal` may read the stored record at all.
pub fn can_read(principal: &Principal, grant: &Grant, stored: &StoredRecord) -> bool {
    principal.covers(grant.read, &stored.owner_id)
}

fn authorize_scope(
    principal: &Principal,
    grant: &Grant,
    scope: Scope,
    what: &str,
    entity: &CompiledEntity,
    stored: &StoredRecord,
) -> Result<(), RecordError> {
    if principal.covers(scope, &stored.owner_id) {
        return Ok(());
    }
    if can_read(principal, grant, stored) {
        let whose = match scope {
            Scope::None => String::new(),
            Scope::Own => " (only their own)".to_owned(),
            Scope::Team => " (only their team's)".to_owned(),
            Scope::All => unreachable!("all covers every record"),
        };
        return Err(RecordError::Forbidden(format!(
            "your roles ({}) may not {what} this `{}` record{whose}",
            principal.access.role_names().join(", "),
            entity.name()
        )));
    }
    Err(RecordError::NotFound {
        entity: entity.name().to_owned(),
        id: stored.id.clone(),
    })
}
