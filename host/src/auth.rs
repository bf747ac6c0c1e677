//! Who is calling: API tokens and the [`Principal`] they resolve to, and what a principal may do.

use std::collections::HashMap;
use std::sync::RwLock;
use std::time::{Duration, Instant};

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::domain::{TenantId, UserId};

/// What a user may do in their tenant.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, clap::ValueEnum,
)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Manages metadata and works with every record.
    Admin,
    /// Works with records.
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        match value {
            "admin" => Some(Role::Admin),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

/// The authenticated caller of a request: one user of one tenant.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: TenantId,
    pub user: UserId,
    pub role: Role,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }
}

/// Principals of recently used tokens, so that a request does not ask the database who is
/// calling. An entry lives [`PrincipalCache::TTL`]: a token revoked or a role changed by another
/// process (the CLI, another server on the same PostgreSQL) takes effect within that time;
/// changes made through this server call [`PrincipalCache::clear`] and take effect at once.
#[derive(Debug)]
pub struct PrincipalCache {
    entries: RwLock<HashMap<String, (Principal, Instant)>>,
    ttl: Duration,
}

impl Default for PrincipalCache {
    fn default() -> Self {
        Self::new(Self::TTL)
    }
}

impl PrincipalCache {
    pub const TTL: Duration = Duration::from_secs(5);

    pub fn new(ttl: Duration) -> Self {
        Self {
            entries: RwLock::default(),
            ttl,
        }
    }

    /// Beyond this many tokens the cache starts again from empty: a bound on memory.
    const CAPACITY: usize = 10_000;

    /// The cached principal of a token hash, if it is fresh.
    pub fn get(&self, token_hash: &str) -> Option<Principal> {
        let entries = self.entries.read().expect("principal cache lock");
        let (principal, at) = entries.get(token_hash)?;
        (at.elapsed() < self.ttl).then(|| principal.clone())
    }

    pub fn insert(&self, token_hash: String, principal: Principal) {
        let mut entries = self.entries.write().expect("principal cache lock");
        if entries.len() >= Self::CAPACITY {
            entries.retain(|_, (_, at)| at.elapsed() < self.ttl);
            if entries.len() >= Self::CAPACITY {
                entries.clear();
            }
        }
        entries.insert(token_hash, (principal, Instant::now()));
    }

    /// Forgets every principal: after a change to tokens, users or roles.
    pub fn clear(&self) {
        self.entries.write().expect("principal cache lock").clear();
    }
}

/// Every token starts with this, so that secret scanners recognise leaked ones.
pub const TOKEN_PREFIX: &str = "rpt_";

/// A new API token: 256 random bits.
pub fn generate_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    )
}

/// What is stored of a token: its SHA-256, hex encoded. Tokens carry 256 bits of entropy, so a
/// slow password hash would add cost without adding safety.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal() -> Principal {
        Principal {
            tenant: TenantId::generate(),
            user: UserId::generate(),
            role: Role::Member,
        }
    }

    #[test]
    fn cached_principals_expire_and_can_be_forgotten() {
        let cache = PrincipalCache::default();
        let someone = principal();
        cache.insert("hash".into(), someone.clone());
        assert_eq!(cache.get("hash").map(|p| p.user), Some(someone.user));
        assert!(cache.get("other").is_none());
        cache.clear();
        assert!(cache.get("hash").is_none());

        let expired = PrincipalCache::new(Duration::ZERO);
        expired.insert("hash".into(), principal());
        assert!(expired.get("hash").is_none());
    }

    #[test]
    fn tokens_are_random_and_hashed_deterministically() {
        let a = generate_token();
        let b = generate_token();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(hash_token(&a), hash_token(&a));
        assert_ne!(hash_token(&a), hash_token(&b));
        assert_eq!(hash_token(&a).len(), 64);
    }
}
