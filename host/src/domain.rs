//! Identifiers of the domain, parsed once at the edge: a value of one of these types is known to
//! be well formed, so the layers below never check it again.

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{value}` is not a valid {what}: {reason}")]
pub struct InvalidName {
    pub what: &'static str,
    pub value: String,
    pub reason: &'static str,
}

/// The longest entity or field name: fits PostgreSQL identifiers once prefixed for index names.
pub const MAX_NAME_LENGTH: usize = 48;

fn check_identifier(what: &'static str, value: &str) -> Result<(), InvalidName> {
    let invalid = |reason| InvalidName {
        what,
        value: value.to_owned(),
        reason,
    };
    let mut chars = value.chars();
    match chars.next() {
        None => return Err(invalid("it is empty")),
        Some(c) if !c.is_ascii_lowercase() => {
            return Err(invalid("it must start with a lowercase letter a-z"));
        }
        Some(_) => {}
    }
    if value.len() > MAX_NAME_LENGTH {
        return Err(invalid("it is longer than 48 characters"));
    }
    if !chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_') {
        return Err(invalid(
            "only lowercase letters a-z, digits and `_` are allowed",
        ));
    }
    Ok(())
}

macro_rules! identifier {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// Parses a name: lowercase ASCII letters, digits and `_`, starting with a letter.
            pub fn parse(value: &str) -> Result<Self, InvalidName> {
                check_identifier($what, value)?;
                Ok(Self(value.to_owned()))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let value = String::deserialize(deserializer)?;
                Self::parse(&value).map_err(serde::de::Error::custom)
            }
        }
    };
}

identifier!(
    /// The API name of an entity (`contact`), unique within a tenant.
    EntityName,
    "entity name"
);
identifier!(
    /// The API name of a field (`first_name`), unique within an entity.
    FieldName,
    "field name"
);

macro_rules! opaque_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// A new, time-ordered identifier (UUID v7).
            pub fn generate() -> Self {
                Self(uuid::Uuid::now_v7().to_string())
            }

            /// Parses an identifier; anything but a UUID is refused.
            pub fn parse(value: &str) -> Option<Self> {
                uuid::Uuid::try_parse(value).ok().map(|id| Self(id.hyphenated().to_string()))
            }

            /// Wraps a value read back from the database, where only valid ids are stored.
            pub fn from_stored(value: String) -> Self {
                Self(value)
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

opaque_id!(
    /// A tenant (a company).
    TenantId
);
opaque_id!(
    /// A user of one tenant.
    UserId
);
opaque_id!(
    /// A record of any entity.
    RecordId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lowercase_identifiers() {
        assert!(EntityName::parse("contact").is_ok());
        assert!(FieldName::parse("first_name2").is_ok());
        assert!(FieldName::parse("First").is_err());
        assert!(FieldName::parse("_id").is_err());
        assert!(FieldName::parse("").is_err());
        assert!(FieldName::parse("a-b").is_err());
        assert!(FieldName::parse(&"a".repeat(49)).is_err());
    }

    #[test]
    fn record_ids_are_uuids_in_canonical_form() {
        let id = RecordId::generate();
        assert_eq!(RecordId::parse(id.as_str()), Some(id));
        assert!(RecordId::parse("1; DROP TABLE records").is_none());
        let upper = "0192F3A4-0000-7000-8000-000000000000";
        assert_eq!(
            RecordId::parse(upper).unwrap().as_str(),
            upper.to_lowercase()
        );
    }
}

/// Tenants whose caches must not be used now, with a count of who asks: while a pack
/// operation's transaction is open, what a service reads through it is uncommitted and must not
/// be cached for others (nor what others cached used inside it).
#[derive(Debug, Clone, Default)]
pub struct Uncached(std::sync::Arc<std::sync::Mutex<std::collections::HashMap<TenantId, usize>>>);

impl Uncached {
    /// Marks the tenant uncached until the guard is dropped.
    pub fn enter(&self, tenant: &TenantId) -> UncachedGuard {
        *self
            .0
            .lock()
            .expect("uncached lock")
            .entry(tenant.clone())
            .or_default() += 1;
        UncachedGuard {
            registry: self.clone(),
            tenant: tenant.clone(),
        }
    }

    pub fn contains(&self, tenant: &TenantId) -> bool {
        self.0.lock().expect("uncached lock").contains_key(tenant)
    }
}

/// Keeps a tenant uncached until dropped (see [`Uncached::enter`]).
#[derive(Debug)]
pub struct UncachedGuard {
    registry: Uncached,
    tenant: TenantId,
}

impl Drop for UncachedGuard {
    fn drop(&mut self) {
        let mut tenants = self.registry.0.lock().expect("uncached lock");
        if let Some(count) = tenants.get_mut(&self.tenant) {
            *count -= 1;
            if *count == 0 {
                tenants.remove(&self.tenant);
            }
        }
    }
}
