//! Users, roles, teams, API tokens, sign-in and the audit trail: who may act in a tenant and
//! what they did. Every change is audited in its own transaction; administrators alone manage
//! other users, roles and teams, while every user manages their own tokens and password.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::auth::role::{ADMINISTRATOR, MEMBER};
use crate::auth::{Principal, PrincipalCache, RoleDefinition};
use crate::domain::{TenantId, UserId};
use crate::metadata::validation::Problem;
use crate::store::tenants::{AuditFilter, StoredRole, StoredTeam, StoredToken, StoredUser};
use crate::store::{Scoped, Store, StoreError};

/// Consecutive failed sign-ins that lock a user.
pub const LOCK_AFTER: i64 = 5;
/// How long a lock lasts.
pub const LOCK_FOR: time::Duration = time::Duration::minutes(15);
/// How long a console session lasts.
pub const SESSION_LENGTH: time::Duration = time::Duration::hours(12);
/// The longest an API token may live when it expires at all (a year).
pub const MAX_TOKEN_DAYS: i64 = 366;
/// How long every failed sign-in waits before it is answered.
pub const FAILURE_DELAY: Duration = Duration::from_millis(300);
/// Sign-in attempts per tenant and user name a minute.
pub const SIGN_INS_PER_MINUTE: u32 = 10;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Invalid(String, Vec<Problem>),
    #[error("{0}")]
    Conflict(String),
    #[error("the tenant, user name or password is wrong")]
    SignInFailed,
    #[error("too many failed sign-ins: the user is locked until {0}")]
    Locked(String),
    #[error("too many sign-in attempts for this user: retry in {0} s")]
    TooManyAttempts(u64),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(path: &str, message: impl Into<String>) -> UserError {
    let message = message.into();
    UserError::Invalid(message.clone(), vec![Problem::new(path, message)])
}

fn admin_only(principal: &Principal, what: &str) -> Result<(), UserError> {
    if principal.is_admin() {
        Ok(())
    } else {
        Err(UserError::Forbidden(format!(
            "{what} needs an administrator's role"
        )))
    }
}

fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .expect("times format")
}

/// A user as the API shows them.
#[derive(Debug, Clone, Serialize)]
pub struct UserView {
    pub id: String,
    pub name: String,
    pub email: Option<String>,
    pub roles: Vec<String>,
    pub teams: Vec<String>,
    pub disabled: bool,
    pub has_password: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub locked_until: Option<String>,
    pub created_at: String,
    /// The console language the user chose, if any (a BCP 47 tag).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub language: Option<String>,
}

/// A token as the API lists it; `token` only in the answer that creates it.
#[derive(Debug, Clone, Serialize)]
pub struct TokenView {
    pub id: String,
    pub user: String,
    pub name: Option<String>,
    pub kind: String,
    pub created_at: String,
    pub expires_at: Option<String>,
    pub revoked_at: Option<String>,
    pub last_used_at: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

fn token_view(token: StoredToken) -> TokenView {
    TokenView {
        id: token.id,
        user: token.user_id,
        name: token.name,
        kind: token.kind,
        created_at: rfc3339(token.created_at),
        expires_at: token.expires_at.map(rfc3339),
        revoked_at: token.revoked_at.map(rfc3339),
        last_used_at: token.last_used_at.map(rfc3339),
        token: None,
    }
}

/// A new user, as an administrator creates them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUserBody {
    pub name: String,
    #[serde(default)]
    pub email: Option<String>,
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    #[serde(default)]
    pub password: Option<String>,
}

/// A change to a user; members left out stay as they are.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserPatch {
    #[serde(default)]
    pub email: Option<Option<String>>,
    #[serde(default)]
    pub roles: Option<Vec<String>>,
    #[serde(default)]
    pub disabled: Option<bool>,
}

/// A team as created, replaced and shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TeamBody {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// The manager's user id (escalations go to them).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub manager: Option<String>,
    /// Member user ids.
    #[serde(default)]
    pub members: Vec<String>,
}

/// A token to create.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTokenBody {
    #[serde(default)]
    pub name: Option<String>,
    /// Days until it expires (at most [`MAX_TOKEN_DAYS`]); never, when left out.
    #[serde(default)]
    pub expires_in_days: Option<i64>,
    /// An administrator may create a token for another user (by id).
    #[serde(default)]
    pub user: Option<String>,
}

/// A sign-in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignIn {
    pub tenant: String,
    pub user: String,
    pub password: String,
}

/// Users, roles, teams, tokens and the audit trail of every tenant.
#[derive(Debug, Clone)]
pub struct Users {
    store: Store,
    principals: Arc<PrincipalCache>,
    /// Sign-in attempts by tenant and user name.
    attempts: crate::api::guard::Limiter,
    /// Password hashes computed at once.
    hashing: Arc<tokio::sync::Semaphore>,
}

impl Users {
    pub fn new(store: Store, principals: Arc<PrincipalCache>) -> Self {
        let attempts = crate::api::guard::Limiter::per_minute(SIGN_INS_PER_MINUTE);
        Self {
            store,
            principals,
            attempts,
            hashing: Arc::new(tokio::sync::Semaphore::new(2)),
        }
    }

    /// Every user of the tenant.
    pub async fn list(&self, principal: &Principal) -> Result<Vec<UserView>, UserError> {
        admin_only(principal, "listing users")?;
        let mut conn = self.store.reader().await?;
        let mut scoped = conn.scoped(&principal.tenant);
        let users = scoped.users().await?;
        let (roles, teams) = memberships(&mut scoped).await?;
        Ok(users
            .into_iter()
            .map(|user| user_view(user, &roles, &teams))
            .collect())
    }

    /// One user: administrators see anyone, others themselves.
    pub async fn get(&self, principal: &Principal, id: &str) -> Result<UserView, UserError> {
        let id = self_or_id(principal, id);
        if id != principal.user.as_str() {
            admin_only(principal, "reading another user")?;
        }
        let mut conn = self.store.reader().await?;
        let mut scoped = conn.scoped(&principal.tenant);
        let user = scoped.user(&id).await?.ok_or_else(|| no_user(&id))?;
        let (roles, teams) = memberships(&mut scoped).await?;
        Ok(user_view(user, &roles, &teams))
    }

    /// Sets the caller's own console language (`None`: the browser's). A preference, not a
    /// permission: not audited.
    pub async fn set_language(
        &self,
        principal: &Principal,
        language: Option<&str>,
    ) -> Result<(), UserError> {
        if let Some(tag) = language {
            let valid = tag.len() <= 35
                && tag.split('-').enumerate().all(|(index, part)| {
                    let length_ok = if index == 0 {
                        (2..=3).contains(&part.len())
                    } else {
                        (2..=8).contains(&part.len())
                    };
                    length_ok && part.chars().all(|c| c.is_ascii_alphanumeric())
                });
            if !valid {
                return Err(invalid(
                    "/language",
                    format!("`{tag}` is not a language tag such as `zh-CN`"),
                ));
            }
        }
        let mut tx = self.store.begin().await?;
        tx.scoped(&principal.tenant)
            .set_user_language(principal.user.as_str(), language)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn create(
        &self,
        principal: &Principal,
        body: NewUserBody,
    ) -> Result<UserView, UserError> {
        admin_only(principal, "creating users")?;
        check_user_name(&body.name)?;
        if let Some(email) = &body.email {
            check_email(email)?;
        }
        let hash = match &body.password {
            Some(password) => {
                crate::auth::check_password(password).map_err(|m| invalid("/password", m))?;
                Some(self.hash(password).await)
            }
            None => None,
        };
        let roles = body.roles.unwrap_or_else(|| vec![MEMBER.to_owned()]);
        let mut tx = self.store.begin().await?;
        let mut scoped = tx.scoped(&principal.tenant);
        check_roles(&mut scoped, &roles).await?;
        if scoped.user_by_name(&body.name).await?.is_some() {
            return Err(UserError::Conflict(format!(
                "a user named `{}` already exists",
                body.name
            )));
        }
        let id = scoped
            .insert_user(&body.name, body.email.as_deref(), &roles, hash.as_deref())
            .await?;
        scoped
            .audit(
                Some(principal.user.as_str()),
                "user.create",
                Some(id.as_str()),
                &json!({"name": body.name, "roles": roles}),
            )
            .await?;
        let user = scoped
            .user(id.as_str())
            .await?
            .ok_or_else(|| no_user(id.as_str()))?;
        let (roles, teams) = memberships(&mut scoped).await?;
        tx.commit().await?;
        Ok(user_view(user, &roles, &teams))
    }

    /// Changes a user's email, roles or disabled state. The tenant keeps at least one enabled
    /// administrator.
    pub async fn update(
        &self,
        principal: &Principal,
        id: &str,
        patch: UserPatch,
    ) -> Result<UserView, UserError> {
        admin_only(principal, "changing users")?;
        let id = self_or_id(principal, id);
        if let Some(Some(email)) = &patch.email {
            check_email(email)?;
        }
        let mut tx = self.store.begin().await?;
        let mut scoped = tx.scoped(&principal.tenant);
        let user = scoped.user(&id).await?.ok_or_else(|| no_user(&id))?;
        if let Some(roles) = &patch.roles {
            check_roles(&mut scoped, roles).await?;
            scoped.set_user_roles(&id, roles).await?;
        }
        let email = match &patch.email {
            Some(email) => email.clone(),
            None => user.email.clone(),
        };
        let disabled_at = match patch.disabled {
            Some(true) => user.disabled_at.or_else(|| Some(crate::store::now())),
            Some(false) => None,
            None => user.disabled_at,
        };
        scoped
            .update_user(&id, email.as_deref(), disabled_at)
            .await?;
        if patch.disabled == Some(true) {
            scoped.revoke_tokens(None, Some(&id)).await?;
        }
        keep_an_administrator(&mut scoped).await?;
        scoped
            .audit(
                Some(principal.user.as_str()),
                "user.update",
                Some(&id),
                &json!({"email": patch.email, "roles": patch.roles, "disabled": patch.disabled}),
            )
            .await?;
        let user = scoped.user(&id).await?.ok_or_else(|| no_user(&id))?;
        let (roles, teams) = memberships(&mut scoped).await?;
        tx.commit().await?;
        self.principals.clear();
        Ok(user_view(user, &roles, &teams))
    }

    /// Sets a password: an administrator for anyone; a user for themselves, with their current
    /// password when they have one.
    pub async fn set_password(
        &self,
        principal: &Principal,
        id: &str,
        password: &str,
        current: Option<&str>,
    ) -> Result<(), UserError> {
        let id = self_or_id(principal, id);
        let own = id == principal.user.as_str();
        if !own {
            admin_only(principal, "setting another user's password")?;
        }
        crate::auth::check_password(password).map_err(|m| invalid("/password", m))?;
        let mut tx = self.store.begin().await?;
        let mut scoped = tx.scoped(&principal.tenant);
        let user = scoped.user(&id).await?.ok_or_else(|| no_user(&id))?;
        if own && user.has_password && !principal.is_admin() {
            let row = scoped
                .sign_in_row(&user.name)
                .await?
                .ok_or_else(|| no_user(&id))?;
            let current = current.ok_or_else(|| {
                invalid(
                    "/current_password",
                    "give your current password to change it",
                )
            })?;
            if !self.verify(row.password_hash.clone(), current).await {
                return Err(invalid(
                    "/current_password",
                    "the current password is wrong",
                ));
            }
        }
        let hash = self.hash(password).await;
        scoped.set_password(&id, Some(&hash)).await?;
        // Sessions signed in with the old password end.
        scoped.revoke_sessions(&id).await?;
        scoped
            .audit(
                Some(principal.user.as_str()),
                "user.password",
                Some(&id),
                &json!({}),
            )
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Signs in with a password: a session token that expires after [`SESSION_LENGTH`].
    /// Every failure is audited and answered alike, after the same [`FAILURE_DELAY`];
    /// [`LOCK_AFTER`] failures in a row lock the user for [`LOCK_FOR`] (counted in one
    /// statement, so concurrent guesses cannot slip past the count), and each tenant and user
    /// name gets at most [`SIGN_INS_PER_MINUTE`] attempts a minute, whether the user exists or
    /// not. Password hashing runs off the async workers, a few at a time.
    pub async fn sign_in(&self, sign_in: &SignIn) -> Result<(Principal, TokenView), UserError> {
        if sign_in.tenant.len() > 100 || sign_in.user.len() > 100 {
            return Err(invalid(
                "/user",
                "tenant and user names have at most 100 characters",
            ));
        }
        if sign_in.password.len() > crate::auth::MAX_PASSWORD {
            return Err(invalid("/password", "a password has at most 256 bytes"));
        }
        let key = format!("{}\n{}", sign_in.tenant, sign_in.user.to_lowercase());
        if let Err(seconds) = self.attempts.check(&key) {
            return Err(UserError::TooManyAttempts(seconds));
        }
        let outcome = self.try_sign_in(sign_in).await;
        if matches!(outcome, Err(UserError::SignInFailed | UserError::Locked(_))) {
            tokio::time::sleep(FAILURE_DELAY).await;
        }
        outcome
    }

    async fn try_sign_in(&self, sign_in: &SignIn) -> Result<(Principal, TokenView), UserError> {
        let tenant = self.store.tenant_id(&sign_in.tenant).await?;
        let Some(tenant) = tenant else {
            self.verify(None, &sign_in.password).await;
            return Err(UserError::SignInFailed);
        };
        let now = crate::store::now();
        let row = {
            let mut conn = self.store.reader().await?;
            conn.scoped(&tenant).sign_in_row(&sign_in.user).await?
        };
        let Some(row) = row else {
            self.verify(None, &sign_in.password).await;
            self.audit_failed_sign_in(&tenant, None, &sign_in.user, "unknown user")
                .await?;
            return Err(UserError::SignInFailed);
        };
        if let Some(until) = row.locked_until.filter(|until| *until > now) {
            self.audit_failed_sign_in(&tenant, Some(&row.id), &sign_in.user, "locked")
                .await?;
            return Err(UserError::Locked(rfc3339(until)));
        }
        let matches = self
            .verify(row.password_hash.clone(), &sign_in.password)
            .await;
        let mut tx = self.store.begin().await?;
        let mut scoped = tx.scoped(&tenant);
        if !matches || row.disabled_at.is_some() {
            let locked_until = scoped
                .fail_sign_in(&row.id, LOCK_AFTER, now + LOCK_FOR)
                .await?
                .filter(|until| *until > now);
            let reason = if row.disabled_at.is_some() {
                "disabled"
            } else if locked_until.is_some() {
                "wrong password; locked"
            } else {
                "wrong password"
            };
            scoped
                .audit(
                    Some(&row.id),
                    "user.sign_in_failed",
                    Some(&row.id),
                    &json!({"user": sign_in.user, "reason": reason}),
                )
                .await?;
            tx.commit().await?;
            return Err(UserError::SignInFailed);
        }
        // A lock set meanwhile by concurrent failures wins over this guess.
        if !scoped.succeed_sign_in(&row.id, now).await? {
            drop(tx);
            return Err(UserError::SignInFailed);
        }
        let user = UserId::from_stored(row.id.clone());
        let expires_at = now + SESSION_LENGTH;
        let (token, id) = scoped
            .insert_token(&user, Some("console session"), "session", Some(expires_at))
            .await?;
        scoped
            .audit(
                Some(&row.id),
                "user.sign_in",
                Some(&row.id),
                &json!({"user": sign_in.user, "token": id}),
            )
            .await?;
        let principal = scoped
            .user_principal(&row.id)
            .await?
            .ok_or_else(|| no_user(&row.id))?;
        let stored = scoped.token(&id).await?.ok_or_else(|| no_token(&id))?;
        tx.commit().await?;
        let mut view = token_view(stored);
        view.token = Some(token);
        Ok((principal, view))
    }

    /// Checks a password against its hash on a blocking thread, a few at a time (argon2 takes
    /// tens of milliseconds and 19 MiB each).
    async fn verify(&self, hash: Option<String>, password: &str) -> bool {
        let Ok(_permit) = self.hashing.acquire().await else {
            return false;
        };
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || {
            crate::auth::verify_password(hash.as_deref(), &password)
        })
        .await
        .unwrap_or(false)
    }

    /// Hashes a new password on a blocking thread, a few at a time.
    async fn hash(&self, password: &str) -> String {
        let _permit = self
            .hashing
            .acquire()
            .await
            .expect("the semaphore is never closed");
        let password = password.to_owned();
        tokio::task::spawn_blocking(move || crate::auth::hash_password(&password))
            .await
            .expect("hashing does not panic")
    }

    /// Audits a sign-in refused before any password was checked against the user's.
    async fn audit_failed_sign_in(
        &self,
        tenant: &TenantId,
        user: Option<&str>,
        name: &str,
        reason: &str,
    ) -> Result<(), UserError> {
        let mut tx = self.store.begin().await?;
        let detail = json!({"user": name, "reason": reason});
        tx.scoped(tenant)
            .audit(user, "user.sign_in_failed", user, &detail)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// The caller's tokens; an administrator may ask for another user's, or everyone's
    /// (`user` = `*`).
    pub async fn tokens(
        &self,
        principal: &Principal,
        user: Option<&str>,
    ) -> Result<Vec<TokenView>, UserError> {
        let user = match user {
            None => Some(principal.user.to_string()),
            Some("*") => {
                admin_only(principal, "listing every user's tokens")?;
                None
            }
            Some(id) => {
                let id = self_or_id(principal, id);
                if id != principal.user.as_str() {
                    admin_only(principal, "listing another user's tokens")?;
                }
                Some(id)
            }
        };
        let mut conn = self.store.reader().await?;
        let tokens = conn
            .scoped(&principal.tenant)
            .tokens(user.as_deref())
            .await?;
        Ok(tokens.into_iter().map(token_view).collect())
    }

    /// Creates an API token for the caller (or, for an administrator, another user); the
    /// answer is the one time the token is shown.
    pub async fn create_token(
        &self,
        principal: &Principal,
        body: NewTokenBody,
    ) -> Result<TokenView, UserError> {
        let user = body
            .user
            .as_deref()
            .map(|id| self_or_id(principal, id))
            .unwrap_or_else(|| principal.user.to_string());
        if user != principal.user.as_str() {
            admin_only(principal, "creating a token for another user")?;
        }
        if let Some(name) = &body.name
            && (name.is_empty() || name.chars().count() > 200)
        {
            return Err(invalid("/name", "a token's name has 1 to 200 characters"));
        }
        let expires_at = match body.expires_in_days {
            None => None,
            Some(days) if (1..=MAX_TOKEN_DAYS).contains(&days) => {
                Some(crate::store::now() + time::Duration::days(days))
            }
            Some(days) => {
                return Err(invalid(
                    "/expires_in_days",
                    format!("`expires_in_days` is between 1 and {MAX_TOKEN_DAYS}, not {days}"),
                ));
            }
        };
        let mut tx = self.store.begin().await?;
        let mut scoped = tx.scoped(&principal.tenant);
        scoped.user(&user).await?.ok_or_else(|| no_user(&user))?;
        let (token, id) = scoped
            .insert_token(
                &UserId::from_stored(user.clone()),
                body.name.as_deref(),
                "api",
                expires_at,
            )
            .await?;
        scoped
            .audit(
                Some(principal.user.as_str()),
                "token.create",
                Some(&id),
                &json!({"user": user, "name": body.name, "expires_at": expires_at.map(rfc3339)}),
            )
            .await?;
        let stored = scoped.token(&id).await?.ok_or_else(|| no_token(&id))?;
        tx.commit().await?;
        let mut view = token_view(stored);
        view.token = Some(token);
        Ok(view)
    }

    /// Revokes a token: one's own, or (an administrator) anyone's.
    pub async fn revoke_token(&self, principal: &Principal, id: &str) -> Result<(), UserError> {
        let mut tx = self.store.begin().await?;
        let mut scoped = tx.scoped(&principal.tenant);
        let token = scoped.token(id).await?.ok_or_else(|| no_token(id))?;
        if token.user_id != principal.user.as_str() && !principal.is_admin() {
            // Another user's token is not there for this caller.
            return Err(no_token(id));
        }
        scoped.revoke_tokens(Some(id), None).await?;
        scoped
            .audit(
                Some(principal.user.as_str()),
                "token.revoke",
                Some(id),
                &json!({"user": token.user_id}),
            )
            .await?;
        tx.commit().await?;
        self.principals.clear();
        Ok(())
    }

    /// Notes a token's use: its last use, and an audit entry (at most hourly per token).
    pub async fn token_used(&self, principal: &Principal, id: &str) -> Result<(), UserError> {
        let mut tx = self.store.begin().await?;
        let mut scoped = tx.scoped(&principal.tenant);
        scoped.touch_token(id).await?;
        scoped
            .audit(
                Some(principal.user.as_str()),
                "token.use",
                Some(id),
                &json!({}),
            )
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn roles(&self, principal: &Principal) -> Result<Vec<Value>, UserError> {
        admin_only(principal, "listing roles")?;
        let mut conn = self.store.reader().await?;
        let roles = conn.scoped(&principal.tenant).roles().await?;
        roles.into_iter().map(role_view).collect()
    }

    pub async fn role(&self, principal: &Principal, name: &str) -> Result<Value, UserError> {
        admin_only(principal, "reading roles")?;
        let mut conn = self.store.reader().await?;
        let role = conn.scoped(&principal.tenant).role(name).await?;
        role_view(role.ok_or_else(|| no_role(name))?)
    }

    /// Creates or replaces a role (`name`, when given, must match the definition's).
    pub async fn put_role(
        &self,
        principal: &Principal,
        name: Option<&str>,
        json: &Value,
    ) -> Result<(Value, bool), UserError> {
        admin_only(principal, "changing roles")?;
        // What a GET adds may come back in a PUT.
        let mut json = json.clone();
        if let Value::Object(object) = &mut json {
            for shown in ["built_in", "pack", "created_at", "updated_at"] {
                object.remove(shown);
            }
        }
        let role = RoleDefinition::parse(&json)
            .map_err(|problems| UserError::Invalid("the role is invalid".to_owned(), problems))?;
        if let Some(name) = name
            && name != role.name
        {
            return Err(invalid(
                "/name",
                format!("the path names role `{name}`, the body `{}`", role.name),
            ));
        }
        if role.name == ADMINISTRATOR {
            return Err(UserError::Conflict(
                "the `administrator` role is built in and cannot be changed".to_owned(),
            ));
        }
        let mut tx = self.store.begin().await?;
        let mut scoped = tx.scoped(&principal.tenant);
        let created = self.put_role_in(&mut scoped, principal, &role).await?;
        let stored = scoped
            .role(&role.name)
            .await?
            .ok_or_else(|| no_role(&role.name))?;
        tx.commit().await?;
        self.principals.clear();
        Ok((role_view(stored)?, created))
    }

    /// Writes a role in the caller's transaction, audited; a pack's role stays the pack's.
    async fn put_role_in(
        &self,
        scoped: &mut Scoped<'_>,
        principal: &Principal,
        role: &RoleDefinition,
    ) -> Result<bool, UserError> {
        let existing = scoped.role(&role.name).await?;
        let created = existing.is_none();
        let pack = existing.and_then(|stored| stored.pack_id);
        scoped
            .put_role(&role.name, &role.to_json().to_string(), pack.as_deref())
            .await?;
        let action = if created {
            "role.create"
        } else {
            "role.update"
        };
        scoped
            .audit(
                Some(principal.user.as_str()),
                action,
                Some(&role.name),
                &json!({"definition": role.to_json(), "pack": pack}),
            )
            .await?;
        Ok(created)
    }

    /// Deletes a role that no user holds.
    pub async fn delete_role(&self, principal: &Principal, name: &str) -> Result<(), UserError> {
        admin_only(principal, "deleting roles")?;
        if name == ADMINISTRATOR {
            return Err(UserError::Conflict(
                "the `administrator` role is built in and cannot be deleted".to_owned(),
            ));
        }
        let mut tx = self.store.begin().await?;
        let mut scoped = tx.scoped(&principal.tenant);
        scoped.role(name).await?.ok_or_else(|| no_role(name))?;
        let holders = scoped.role_holders(name).await?;
        if holders > 0 {
            return Err(UserError::Conflict(format!(
                "role `{name}` is held by {holders} user(s): take it from them first"
            )));
        }
        scoped.delete_role(name).await?;
        scoped
            .audit(
                Some(principal.user.as_str()),
                "role.delete",
                Some(name),
                &json!({}),
            )
            .await?;
        tx.commit().await?;
        self.principals.clear();
        Ok(())
    }

    pub async fn teams(&self, principal: &Principal) -> Result<Vec<TeamBody>, UserError> {
        let mut conn = self.store.reader().await?;
        let mut scoped = conn.scoped(&principal.tenant);
        let teams = scoped.teams().await?;
        let members = scoped.team_members().await?;
        Ok(teams
            .into_iter()
            .map(|team| team_view(team, &members))
            .collect())
    }

    pub async fn team(&self, principal: &Principal, name: &str) -> Result<TeamBody, UserError> {
        let mut conn = self.store.reader().await?;
        let mut scoped = conn.scoped(&principal.tenant);
        let team = scoped.team(name).await?.ok_or_else(|| no_team(name))?;
        let members = scoped.team_members().await?;
        Ok(team_view(team, &members))
    }

    /// Creates or replaces a team with its members.
    pub async fn put_team(
        &self,
        principal: &Principal,
        name: Option<&str>,
        body: TeamBody,
    ) -> Result<(TeamBody, bool), UserError> {
        admin_only(principal, "changing teams")?;
        if crate::domain::EntityName::parse(&body.name).is_err() {
            return Err(invalid(
                "/name",
                format!(
                    "`{}` is not a valid team name: lowercase letters, digits and `_`, starting with a letter",
                    body.name
                ),
            ));
        }
        if let Some(name) = name
            && name != body.name
        {
            return Err(invalid(
                "/name",
                format!("the path names team `{name}`, the body `{}`", body.name),
            ));
        }
        let mut tx = self.store.begin().await?;
        let mut scoped = tx.scoped(&principal.tenant);
        let members: BTreeSet<String> = body.members.iter().cloned().collect();
        for (index, member) in body.members.iter().enumerate() {
            if scoped.user(member).await?.is_none() {
                return Err(invalid(
                    &format!("/members/{index}"),
                    format!("no user has id `{member}`"),
                ));
            }
        }
        if let Some(manager) = &body.manager
            && scoped.user(manager).await?.is_none()
        {
            return Err(invalid("/manager", format!("no user has id `{manager}`")));
        }
        let created = scoped.team(&body.name).await?.is_none();
        let members: Vec<String> = members.into_iter().collect();
        scoped
            .put_team(
                &body.name,
                body.label.as_deref(),
                body.manager.as_deref(),
                &members,
            )
            .await?;
        let action = if created {
            "team.create"
        } else {
            "team.update"
        };
        scoped
            .audit(
                Some(principal.user.as_str()),
                action,
                Some(&body.name),
                &json!({"members": members, "manager": body.manager}),
            )
            .await?;
        let team = scoped
            .team(&body.name)
            .await?
            .ok_or_else(|| no_team(&body.name))?;
        let all = scoped.team_members().await?;
        tx.commit().await?;
        self.principals.clear();
        Ok((team_view(team, &all), created))
    }

    pub async fn delete_team(&self, principal: &Principal, name: &str) -> Result<(), UserError> {
        admin_only(principal, "deleting teams")?;
        let mut tx = self.store.begin().await?;
        let mut scoped = tx.scoped(&principal.tenant);
        if !scoped.delete_team(name).await? {
            return Err(no_team(name));
        }
        scoped
            .audit(
                Some(principal.user.as_str()),
                "team.delete",
                Some(name),
                &json!({}),
            )
            .await?;
        tx.commit().await?;
        self.principals.clear();
        Ok(())
    }

    /// Audit entries, newest first: `{data, next_cursor}`.
    pub async fn audit(
        &self,
        principal: &Principal,
        filter: &AuditFilter<'_>,
        limit: i64,
    ) -> Result<Value, UserError> {
        admin_only(principal, "reading the audit trail")?;
        let mut conn = self.store.reader().await?;
        let mut rows = conn
            .scoped(&principal.tenant)
            .audit_entries(filter, limit + 1)
            .await?;
        let next = if rows.len() as i64 > limit {
            rows.truncate(limit as usize);
            rows.last().map(|row| row.id.to_string())
        } else {
            None
        };
        let data: Vec<Value> = rows
            .into_iter()
            .map(|row| {
                json!({
                    "id": row.id,
                    "at": rfc3339(row.at),
                    "actor": row.actor,
                    "action": row.action,
                    "target": row.target,
                    "detail": serde_json::from_str::<Value>(&row.detail).unwrap_or(Value::Null),
                })
            })
            .collect();
        Ok(json!({"data": data, "next_cursor": next}))
    }
}

/// `me` names the caller.
fn self_or_id(principal: &Principal, id: &str) -> String {
    if id == "me" {
        principal.user.to_string()
    } else {
        id.to_owned()
    }
}

fn no_user(id: &str) -> UserError {
    UserError::NotFound(format!("no user has id `{id}`"))
}

fn no_token(id: &str) -> UserError {
    UserError::NotFound(format!("no token has id `{id}`"))
}

fn no_role(name: &str) -> UserError {
    UserError::NotFound(format!("no role is named `{name}`"))
}

fn no_team(name: &str) -> UserError {
    UserError::NotFound(format!("no team is named `{name}`"))
}

fn check_user_name(name: &str) -> Result<(), UserError> {
    let ok = !name.is_empty()
        && name.len() <= 100
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "/name",
            format!(
                "`{name}` is not a valid user name: 1 to 100 of letters, digits, `.`, `_`, `-` and `@`"
            ),
        ))
    }
}

fn check_email(email: &str) -> Result<(), UserError> {
    let valid = email.len() <= 254
        && email
            .split_once('@')
            .is_some_and(|(local, domain)| !local.is_empty() && domain.contains('.'));
    if valid {
        Ok(())
    } else {
        Err(invalid(
            "/email",
            format!("`{email}` is not an email address"),
        ))
    }
}

async fn check_roles(scoped: &mut Scoped<'_>, roles: &[String]) -> Result<(), UserError> {
    let known = scoped.role_names().await?;
    for (index, role) in roles.iter().enumerate() {
        if !known.contains(role) {
            return Err(invalid(
                &format!("/roles/{index}"),
                format!("no role is named `{role}` (roles: {})", known.join(", ")),
            ));
        }
    }
    Ok(())
}

/// Refuses a change that leaves the tenant without an enabled administrator.
async fn keep_an_administrator(scoped: &mut Scoped<'_>) -> Result<(), UserError> {
    if scoped.first_admin().await?.is_none() {
        return Err(UserError::Conflict(
            "the tenant must keep an enabled user with the `administrator` role".to_owned(),
        ));
    }
    Ok(())
}

type Memberships = (BTreeMap<String, Vec<String>>, BTreeMap<String, Vec<String>>);

/// The roles and the teams of every user, by user id.
async fn memberships(scoped: &mut Scoped<'_>) -> Result<Memberships, UserError> {
    let mut roles: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (user, role) in scoped.user_roles().await? {
        roles.entry(user).or_default().push(role);
    }
    let mut teams: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (team, user) in scoped.team_members().await? {
        teams.entry(user).or_default().push(team);
    }
    Ok((roles, teams))
}

fn user_view(
    user: StoredUser,
    roles: &BTreeMap<String, Vec<String>>,
    teams: &BTreeMap<String, Vec<String>>,
) -> UserView {
    UserView {
        roles: roles.get(&user.id).cloned().unwrap_or_default(),
        teams: teams.get(&user.id).cloned().unwrap_or_default(),
        id: user.id,
        name: user.name,
        email: user.email,
        disabled: user.disabled_at.is_some(),
        has_password: user.has_password,
        locked_until: user
            .locked_until
            .filter(|until| *until > crate::store::now())
            .map(rfc3339),
        created_at: rfc3339(user.created_at),
        language: user.language,
    }
}

fn role_view(role: StoredRole) -> Result<Value, UserError> {
    let mut definition: Value = serde_json::from_str(&role.definition)
        .map_err(|error| StoreError::Corrupt(format!("role `{}`: {error}", role.name)))?;
    if role.name == ADMINISTRATOR {
        definition = RoleDefinition::administrator().to_json();
    }
    if let Value::Object(object) = &mut definition {
        object.insert("built_in".into(), json!(role.name == ADMINISTRATOR));
        object.insert("pack".into(), json!(role.pack_id));
        object.insert("created_at".into(), json!(rfc3339(role.created_at)));
        object.insert("updated_at".into(), json!(rfc3339(role.updated_at)));
    }
    Ok(definition)
}

fn team_view(team: StoredTeam, members: &[(String, String)]) -> TeamBody {
    TeamBody {
        members: members
            .iter()
            .filter(|(name, _)| *name == team.name)
            .map(|(_, user)| user.clone())
            .collect(),
        name: team.name,
        label: team.label,
        manager: team.manager_id,
    }
}
