//! Who is calling: API tokens and the [`Principal`] they resolve to, and what a principal may do.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use rand::RngCore;
use sha2::{Digest, Sha256};

use crate::domain::{TenantId, UserId};

pub mod role;

pub use role::{FieldAccess, Grant, RoleDefinition, Scope};

/// What a user may do, from the roles they hold and the teams they are in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Access {
    /// The user's roles; permissions are their union.
    pub roles: Vec<RoleDefinition>,
    /// Users who share a team with this user, the user included, sorted (the `team` scope).
    pub team: Vec<String>,
}

impl Access {
    pub fn new(roles: Vec<RoleDefinition>, mut team: Vec<String>, user: &UserId) -> Self {
        team.push(user.to_string());
        team.sort();
        team.dedup();
        Self { roles, team }
    }

    /// The access of the built-in administrator role: the server's own work (pack sample data,
    /// migrations) runs with it.
    pub fn administrator(user: &UserId) -> Self {
        Self::new(vec![RoleDefinition::administrator()], Vec::new(), user)
    }

    /// Whether one of the roles is an administrator's.
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|role| role.admin)
    }

    /// Whether the user may give records another owner.
    pub fn may_reassign(&self) -> bool {
        self.roles.iter().any(|role| role.admin || role.reassign)
    }

    /// The permissions on an entity: each scope the widest of the roles'; a field is visible
    /// if a role that reads the entity shows it (`fields` holds the visibility: `none`,
    /// `read`, or `write` when a reading role also lets it be written). Which fields a write
    /// may set is [`Access::may_write`]'s answer.
    pub fn grant(&self, entity: &str) -> Grant {
        if self.is_admin() {
            return Grant::full();
        }
        let grants: Vec<Grant> = self.roles.iter().map(|role| role.grant(entity)).collect();
        let mut sum = Grant {
            create: grants.iter().any(|grant| grant.create),
            read: grants
                .iter()
                .map(|grant| grant.read)
                .max()
                .unwrap_or_default(),
            update: grants
                .iter()
                .map(|grant| grant.update)
                .max()
                .unwrap_or_default(),
            delete: grants
                .iter()
                .map(|grant| grant.delete)
                .max()
                .unwrap_or_default(),
            fields: Default::default(),
        };
        // Only roles that read the entity decide what is shown: a role that may only create
        // records does not un-hide what a reading role hides.
        let readers: Vec<&Grant> = grants
            .iter()
            .filter(|grant| grant.read != Scope::None)
            .collect();
        let named: std::collections::BTreeSet<&String> = grants
            .iter()
            .flat_map(|grant| grant.fields.keys())
            .collect();
        for name in named {
            let access = readers
                .iter()
                .map(|grant| grant.field(name))
                .max()
                .unwrap_or(FieldAccess::None);
            if access != FieldAccess::Write {
                sum.fields.insert(name.clone(), access);
            }
        }
        sum
    }

    /// Whether a create (`creating`) or an update may set `field` of `entity`: some role that
    /// allows that operation lets the field be written.
    pub fn may_write(&self, entity: &str, field: &str, creating: bool) -> bool {
        if self.is_admin() {
            return true;
        }
        self.roles.iter().any(|role| {
            let grant = role.grant(entity);
            let allowed = if creating {
                grant.create
            } else {
                grant.update != Scope::None
            };
            allowed && grant.field(field) == FieldAccess::Write
        })
    }

    /// The names of the roles.
    pub fn role_names(&self) -> Vec<&str> {
        self.roles.iter().map(|role| role.name.as_str()).collect()
    }
}

/// The authenticated caller of a request: one user of one tenant, and what they may do.
#[derive(Debug, Clone)]
pub struct Principal {
    pub tenant: TenantId,
    pub user: UserId,
    pub access: Arc<Access>,
}

impl Principal {
    pub fn is_admin(&self) -> bool {
        self.access.is_admin()
    }

    /// Whether `scope` covers a record owned by `owner`.
    pub fn covers(&self, scope: Scope, owner: &str) -> bool {
        match scope {
            Scope::None => false,
            Scope::Own => self.user.as_str() == owner,
            Scope::Team => self
                .access
                .team
                .binary_search_by(|m| m.as_str().cmp(owner))
                .is_ok(),
            Scope::All => true,
        }
    }

    /// The owners whose records `scope` covers; `None` for all.
    pub fn owners(&self, scope: Scope) -> Option<Vec<String>> {
        match scope {
            Scope::None => Some(Vec::new()),
            Scope::Own => Some(vec![self.user.to_string()]),
            Scope::Team => Some(self.access.team.clone()),
            Scope::All => None,
        }
    }
}

/// Principals of recently used tokens, so that a request does not ask the database who is
/// calling. An entry lives [`PrincipalCache::TTL`]: a token revoked or a role changed by another
/// process (the CLI, another server on the same PostgreSQL) takes effect within that time;
/// changes made through this server call [`PrincipalCache::clear`] and take effect at once.
#[derive(Debug)]
pub struct PrincipalCache {
    entries: RwLock<HashMap<String, Cached>>,
    ttl: Duration,
}

impl Default for PrincipalCache {
    fn default() -> Self {
        Self::new(Self::TTL)
    }
}

/// A cached principal: when it was read, and when its token expires.
#[derive(Debug)]
struct Cached {
    principal: Principal,
    at: Instant,
    expires_at: Option<time::OffsetDateTime>,
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
        let cached = entries.get(token_hash)?;
        let live = cached
            .expires_at
            .is_none_or(|expires| time::OffsetDateTime::now_utc() < expires);
        (live && cached.at.elapsed() < self.ttl).then(|| cached.principal.clone())
    }

    /// Remembers the principal of a token, which expires at `expires_at` (if ever).
    pub fn insert(
        &self,
        token_hash: String,
        principal: Principal,
        expires_at: Option<time::OffsetDateTime>,
    ) {
        let mut entries = self.entries.write().expect("principal cache lock");
        if entries.len() >= Self::CAPACITY {
            entries.retain(|_, cached| cached.at.elapsed() < self.ttl);
            if entries.len() >= Self::CAPACITY {
                entries.clear();
            }
        }
        let cached = Cached {
            principal,
            at: Instant::now(),
            expires_at,
        };
        entries.insert(token_hash, cached);
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
    use std::fmt::Write;
    let digest = Sha256::digest(token.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest {
        write!(hex, "{byte:02x}").expect("writing to a String cannot fail");
    }
    hex
}

/// The shortest password accepted.
pub const MIN_PASSWORD: usize = 10;
/// The longest password accepted (argon2 hashes anything, but a megabyte is an attack).
pub const MAX_PASSWORD: usize = 256;

/// Checks a new password's length; the message names the rule.
pub fn check_password(password: &str) -> Result<(), String> {
    let length = password.chars().count();
    if length < MIN_PASSWORD {
        return Err(format!(
            "a password has at least {MIN_PASSWORD} characters, not {length}"
        ));
    }
    if password.len() > MAX_PASSWORD {
        return Err(format!("a password has at most {MAX_PASSWORD} bytes"));
    }
    Ok(())
}

/// The PHC string of a password: argon2id with the crate's default (OWASP) parameters and a
/// random salt.
pub fn hash_password(password: &str) -> String {
    use argon2::password_hash::{PasswordHasher, SaltString, rand_core::OsRng};
    let salt = SaltString::generate(&mut OsRng);
    argon2::Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 hashes any password of bounded length")
        .to_string()
}

/// Whether `password` matches a PHC string made by [`hash_password`]. With `None` (no such user,
/// or no password set) a dummy hash is checked, so that the time taken does not tell.
pub fn verify_password(stored: Option<&str>, password: &str) -> bool {
    use argon2::password_hash::{PasswordHash, PasswordVerifier};
    static DUMMY: std::sync::LazyLock<String> =
        std::sync::LazyLock::new(|| hash_password("not the password of anyone"));
    let (phc, real) = match stored {
        Some(phc) => (phc, true),
        None => (DUMMY.as_str(), false),
    };
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    let matches = argon2::Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok();
    real && matches
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal() -> Principal {
        let user = UserId::generate();
        Principal {
            tenant: TenantId::generate(),
            access: Arc::new(Access::new(
                vec![RoleDefinition::member()],
                Vec::new(),
                &user,
            )),
            user,
        }
    }

    #[test]
    fn cached_principals_expire_and_can_be_forgotten() {
        let cache = PrincipalCache::default();
        let someone = principal();
        cache.insert("hash".into(), someone.clone(), None);
        assert_eq!(cache.get("hash").map(|p| p.user), Some(someone.user));
        assert!(cache.get("other").is_none());
        cache.clear();
        assert!(cache.get("hash").is_none());

        let expired = PrincipalCache::new(Duration::ZERO);
        expired.insert("hash".into(), principal(), None);
        assert!(expired.get("hash").is_none());

        let past = time::OffsetDateTime::now_utc() - time::Duration::seconds(1);
        cache.insert("old".into(), principal(), Some(past));
        assert!(
            cache.get("old").is_none(),
            "an expired token is not served from the cache"
        );
    }

    #[test]
    fn passwords_verify_against_their_hash_only() {
        let hash = hash_password("correct horse battery");
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(Some(&hash), "correct horse battery"));
        assert!(!verify_password(Some(&hash), "correct horse batterY"));
        assert!(!verify_password(None, "correct horse battery"));
        assert!(!verify_password(Some("garbage"), "x"));
        assert!(check_password("short").is_err());
        assert!(check_password("long enough!").is_ok());
    }

    #[test]
    fn roles_add_up_but_a_role_that_cannot_read_does_not_unhide() {
        let user = UserId::generate();
        let parse = |json: serde_json::Value| RoleDefinition::parse(&json).expect("a role");
        let agent = parse(
            serde_json::json!({"name": "agent", "entities": {"account": {
            "read": "all", "update": "own", "fields": {"revenue": "none", "terms": "read"}}}}),
        );
        let intake =
            parse(serde_json::json!({"name": "intake", "entities": {"account": {"create": true}}}));
        let manager = parse(
            serde_json::json!({"name": "manager", "entities": {"account": {
            "read": "team", "update": "team", "fields": {"revenue": "read"}}}}),
        );
        let both = Access::new(vec![agent.clone(), intake.clone()], Vec::new(), &user);
        let grant = both.grant("account");
        assert!(grant.create);
        assert_eq!(grant.read, Scope::All);
        assert_eq!(
            grant.field("revenue"),
            FieldAccess::None,
            "intake does not un-hide"
        );
        assert_eq!(grant.field("terms"), FieldAccess::Read);
        assert!(
            both.may_write("account", "revenue", true),
            "intake creates with any field"
        );
        assert!(
            !both.may_write("account", "revenue", false),
            "but only agent updates"
        );
        assert!(!both.may_write("account", "terms", false));
        assert!(both.may_write("account", "name", false));

        let widened = Access::new(vec![agent, manager], Vec::new(), &user);
        let grant = widened.grant("account");
        assert_eq!(grant.update, Scope::Team);
        assert_eq!(
            grant.field("revenue"),
            FieldAccess::Read,
            "the manager sees it"
        );
        assert_eq!(grant.field("terms"), FieldAccess::Write, "and may write it");
        assert!(widened.may_write("account", "terms", false));
        assert!(!widened.may_write("account", "revenue", false));

        let alone = Access::new(vec![intake], Vec::new(), &user);
        assert_eq!(alone.grant("account").read, Scope::None);
        assert!(alone.may_write("account", "anything", true));
        assert!(
            Access::new(Vec::new(), Vec::new(), &user)
                .grant("account")
                .is_empty()
        );
    }

    #[test]
    fn scopes_cover_owners() {
        let someone = principal();
        let mate = UserId::generate();
        let access = Access::new(vec![], vec![mate.to_string()], &someone.user);
        let teamed = Principal {
            access: Arc::new(access),
            ..someone.clone()
        };
        let me = someone.user.as_str();
        assert!(teamed.covers(Scope::Own, me));
        assert!(!teamed.covers(Scope::Own, mate.as_str()));
        assert!(teamed.covers(Scope::Team, mate.as_str()));
        assert!(!teamed.covers(Scope::Team, "stranger"));
        assert!(teamed.covers(Scope::All, "stranger"));
        assert!(!teamed.covers(Scope::None, me));
        assert_eq!(teamed.owners(Scope::Team).map(|o| o.len()), Some(2));
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
