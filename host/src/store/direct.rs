//! Writes that run on the SQLite write connection's own handle, on the group-commit writer's
//! thread.
//!
//! sqlx runs every command of a SQLite connection on that connection's thread: each statement is
//! a hand-off there and back, two thread wake-ups, and on the write path those hand-offs were
//! most of a create's CPU (BENCHMARKS, session 25). sqlx lends the connection's handle
//! (`SqliteConnection::lock_handle`, one hand-off), and while it is lent its thread touches
//! nothing; a [`Direct`] runs statements on it through rusqlite, on the calling thread.
//!
//! Only the hottest writes come here (a plain create); everything else keeps sqlx. The SQL is
//! the same as sqlx's path builds ([`super::records::record_inserts`]), and it stays
//! tenant-scoped the same way: through [`DirectScoped`], bound to one tenant.

use rusqlite::types::{ToSqlOutput, Value, ValueRef};
use rusqlite::{OptionalExtension, ToSql};
use sqlx::sqlite::LockedSqliteHandle;

use super::records::{NewHistory, NewRecord, record_inserts};
use super::{Dialect, EntityVersions, SqlValue, StoreError, Timestamp};
use crate::domain::TenantId;

/// The write connection's handle, lent by sqlx for a run of direct jobs of one group commit.
pub struct Direct<'c> {
    db: rusqlite::Connection,
    entity_versions: &'c mut EntityVersions,
}

impl<'c> Direct<'c> {
    /// Wraps the locked handle. The rusqlite connection does not own the handle (dropping it
    /// finalizes its own statements and leaves the connection open), and it must be dropped
    /// before `locked` is: the borrow ties it to it.
    #[allow(unsafe_code)]
    pub(super) fn new(
        locked: &'c mut LockedSqliteHandle<'_>,
        entity_versions: &'c mut EntityVersions,
    ) -> Result<Self, rusqlite::Error> {
        // SAFETY: while `locked` lives, sqlx's thread makes no call on this handle, and the
        // returned value borrows `locked`, so it cannot outlive the lock. `from_handle` does
        // not take ownership: the handle stays sqlx's, which closes it.
        let db = unsafe { rusqlite::Connection::from_handle(locked.as_raw_handle().as_ptr())? };
        Ok(Direct {
            db,
            entity_versions,
        })
    }

    /// Runs SQL without parameters (transactions and savepoints).
    pub(super) fn execute_batch(&self, sql: &str) -> Result<(), rusqlite::Error> {
        self.db.execute_batch(sql)
    }

    /// Whether no transaction is open.
    pub(super) fn is_autocommit(&self) -> bool {
        self.db.is_autocommit()
    }

    /// Inserts a tenant row named `name` (for the group-commit tests).
    #[cfg(test)]
    pub(super) fn insert_tenant_row(&self, name: &str) -> Result<(), StoreError> {
        self.db
            .execute(
                "INSERT INTO tenants (id, name, created_at) VALUES (?1, ?1, 'now')",
                [name],
            )
            .map(|_| ())
            .map_err(direct_error)
    }

    /// Scopes this connection to one tenant.
    pub fn scoped<'s>(&'s mut self, tenant: &'s TenantId) -> DirectScoped<'s> {
        DirectScoped {
            db: &self.db,
            tenant,
            entity_versions: self.entity_versions,
        }
    }
}

/// A [`Direct`] bound to one tenant: the only way direct work reaches tenant data.
pub struct DirectScoped<'s> {
    db: &'s rusqlite::Connection,
    tenant: &'s TenantId,
    entity_versions: &'s mut EntityVersions,
}

impl DirectScoped<'_> {
    /// An entity's id and version, read once per group commit (see [`super::Tx::Group`]).
    pub fn entity_version(&mut self, name: &str) -> Result<Option<(i64, i64)>, StoreError> {
        let key = (self.tenant.to_string(), name.to_owned());
        if let Some(seen) = self.entity_versions.get(&key) {
            return Ok(*seen);
        }
        let found = self
            .db
            .prepare_cached("SELECT id, version FROM entities WHERE tenant_id = ?1 AND name = ?2")
            .and_then(|mut statement| {
                statement
                    .query_row((self.tenant.as_str(), name), |row| {
                        Ok((row.get(0)?, row.get(1)?))
                    })
                    .optional()
            })
            .map_err(direct_error)?;
        self.entity_versions.insert(key, found);
        Ok(found)
    }

    /// New records and their history rows, as [`super::Scoped::insert_records_with_history`].
    pub fn insert_records_with_history(
        &mut self,
        entity_id: i64,
        records: &[NewRecord<'_>],
        history: &[NewHistory<'_>],
    ) -> Result<(), StoreError> {
        let statements = record_inserts(Dialect::Sqlite, self.tenant, entity_id, records, history);
        for (sql, binds) in &statements {
            self.db
                .prepare_cached(sql)
                .and_then(|mut statement| statement.execute(rusqlite::params_from_iter(binds)))
                .map_err(direct_error)?;
        }
        Ok(())
    }
}

impl ToSql for SqlValue {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            SqlValue::Text(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            SqlValue::Int(int) => ToSqlOutput::Owned(Value::Integer(*int)),
            SqlValue::Float(float) => ToSqlOutput::Owned(Value::Real(*float)),
            SqlValue::Bool(boolean) => ToSqlOutput::Owned(Value::Integer(i64::from(*boolean))),
            SqlValue::Timestamp(at) => {
                ToSqlOutput::Owned(Value::Text(Timestamp(*at).sqlite_text()))
            }
            SqlValue::Null | SqlValue::NullTimestamp => ToSqlOutput::Owned(Value::Null),
        })
    }
}

/// A rusqlite error as the store reports it.
fn direct_error(error: rusqlite::Error) -> StoreError {
    StoreError::Direct(error.to_string())
}
