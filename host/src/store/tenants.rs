//! Tenants, users, their roles and teams, API tokens and the audit trail.

use std::sync::Arc;

use serde::Serialize;
use time::OffsetDateTime;

use super::{Store, StoreError, Timestamp, on};
use crate::auth::role::ADMINISTRATOR;
use crate::auth::{Access, Principal, RoleDefinition, generate_token, hash_token};
use crate::domain::{TenantId, UserId};

/// A tenant just created, with the token of its first admin.
#[derive(Debug, Clone, Serialize)]
pub struct NewTenant {
    pub tenant: String,
    pub tenant_id: String,
    pub user: String,
    pub token: String,
}

/// A user just created, with their first API token.
#[derive(Debug, Clone, Serialize)]
pub struct NewUser {
    pub tenant: String,
    pub user: String,
    pub user_id: String,
    pub roles: Vec<String>,
    pub token: String,
}

/// A user as stored (never the password hash).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredUser {
    pub id: String,
    pub name: String,
    pub email: Option<String>,
    pub has_password: bool,
    pub disabled_at: Option<OffsetDateTime>,
    pub failed_sign_ins: i64,
    pub locked_until: Option<OffsetDateTime>,
    pub created_at: OffsetDateTime,
    /// The console language the user chose (a BCP 47 tag).
    pub language: Option<String>,
}

/// A stored role.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredRole {
    pub name: String,
    pub definition: String,
    pub pack_id: Option<String>,
    pub created_at: OffsetDateTime,
    pub updated_at: OffsetDateTime,
}

/// A stored team.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredTeam {
    pub name: String,
    pub label: Option<String>,
    pub manager_id: Option<String>,
}

/// A token as listed: never the token, nor its hash.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct StoredToken {
    pub id: String,
    pub user_id: String,
    pub name: Option<String>,
    pub kind: String,
    pub created_at: OffsetDateTime,
    pub expires_at: Option<OffsetDateTime>,
    pub revoked_at: Option<OffsetDateTime>,
    pub last_used_at: Option<OffsetDateTime>,
}

/// A token resolved for a request.
#[derive(Debug, Clone)]
pub struct TokenUse {
    pub principal: Principal,
    pub token_id: String,
    pub expires_at: Option<OffsetDateTime>,
    pub last_used_at: Option<OffsetDateTime>,
}

/// What the sign-in check reads of a user.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SignInRow {
    pub id: String,
    pub tenant_id: String,
    pub password_hash: Option<String>,
    pub disabled_at: Option<OffsetDateTime>,
    pub failed_sign_ins: i64,
    pub locked_until: Option<OffsetDateTime>,
}

/// An entry of the audit trail.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AuditRow {
    pub id: i64,
    pub at: OffsetDateTime,
    pub actor: Option<String>,
    pub action: String,
    pub target: Option<String>,
    pub detail: String,
}

/// The public id of a token: the first 16 hex digits of its hash.
pub fn token_id(hash: &str) -> String {
    hash[..16].to_owned()
}

impl Store {
    /// Creates a tenant with its built-in roles, its `admin` user and an API token for that
    /// user, in one transaction. `None` if the name is taken.
    pub async fn create_tenant(
        &self,
        name: &str,
        time_zone: &str,
    ) -> Result<Option<NewTenant>, StoreError> {
        let tenant = TenantId::generate();
        let now = super::now();
        let mut tx = self.begin().await?;
        let inserted = on!(tx.exec().await?, c => sqlx::query(
            "INSERT INTO tenants (id, name, time_zone, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(name)
        .bind(time_zone)
        .bind(Timestamp(now))
        .execute(&mut *c)
        .await?
        .rows_affected());
        if inserted == 0 {
            return Ok(None);
        }
        let mut scoped = tx.scoped(&tenant);
        for role in [RoleDefinition::administrator(), RoleDefinition::member()] {
            scoped
                .put_role(&role.name, &role.to_json().to_string(), None)
                .await?;
        }
        let user = scoped
            .insert_user("admin", None, &[ADMINISTRATOR.to_owned()], None)
            .await?;
        let (token, _) = scoped.insert_token(&user, None, "api", None).await?;
        tx.commit().await?;
        Ok(Some(NewTenant {
            tenant: name.to_owned(),
            tenant_id: tenant.to_string(),
            user: user.to_string(),
            token,
        }))
    }

    /// Creates a user holding `roles` in the tenant named `tenant_name`, with an API token.
    /// `None` when the tenant does not exist; an error when a role does not.
    pub async fn create_user(
        &self,
        tenant_name: &str,
        user_name: &str,
        roles: &[String],
    ) -> Result<Option<NewUser>, StoreError> {
        let Some(tenant) = self.tenant_id(tenant_name).await? else {
            return Ok(None);
        };
        let mut tx = self.begin().await?;
        let mut scoped = tx.scoped(&tenant);
        let known = scoped.role_names().await?;
        if let Some(unknown) = roles.iter().find(|role| !known.contains(role)) {
            return Err(StoreError::Refused(format!(
                "no role `{unknown}` in tenant `{tenant_name}` (roles: {})",
                known.join(", ")
            )));
        }
        let user = scoped.insert_user(user_name, None, roles, None).await?;
        let (token, _) = scoped.insert_token(&user, None, "api", None).await?;
        tx.commit().await?;
        Ok(Some(NewUser {
            tenant: tenant_name.to_owned(),
            user: user_name.to_owned(),
            user_id: user.to_string(),
            roles: roles.to_vec(),
            token,
        }))
    }

    /// Issues a new API token for an existing user; `None` when tenant or user do not exist.
    pub async fn issue_token(
        &self,
        tenant_name: &str,
        user_name: &str,
    ) -> Result<Option<String>, StoreError> {
        let Some(tenant) = self.tenant_id(tenant_name).await? else {
            return Ok(None);
        };
        let mut tx = self.begin().await?;
        let mut scoped = tx.scoped(&tenant);
        let Some(user) = scoped.user_by_name(user_name).await? else {
            return Ok(None);
        };
        let (token, _) = scoped
            .insert_token(&UserId::from_stored(user.id), None, "api", None)
            .await?;
        tx.commit().await?;
        Ok(Some(token))
    }

    /// The principal of a user named in a tenant named, for the command line; `None` if either
    /// does not exist.
    pub async fn principal_of(
        &self,
        tenant_name: &str,
        user_name: &str,
    ) -> Result<Option<Principal>, StoreError> {
        let Some(tenant) = self.tenant_id(tenant_name).await? else {
            return Ok(None);
        };
        let mut conn = self.reader().await?;
        let mut scoped = conn.scoped(&tenant);
        let Some(user) = scoped.user_by_name(user_name).await? else {
            return Ok(None);
        };
        scoped.user_principal(&user.id).await
    }

    /// Resolves the hash of an API token to its principal; `None` for a token that is unknown,
    /// revoked or expired, or whose user is disabled.
    pub async fn principal_for_token_hash(
        &self,
        hash: &str,
    ) -> Result<Option<Principal>, StoreError> {
        Ok(self.token_use(hash).await?.map(|found| found.principal))
    }

    /// Resolves the hash of a live token: its principal, id, expiry and last use.
    pub async fn token_use(&self, hash: &str) -> Result<Option<TokenUse>, StoreError> {
        type Row = (
            String,
            String,
            String,
            Option<OffsetDateTime>,
            Option<OffsetDateTime>,
        );
        let mut conn = self.reader().await?;
        let row: Option<Row> = on!(conn.exec(), c => sqlx::query_as(
            "SELECT t.tenant_id, t.user_id, t.id, t.expires_at, t.last_used_at FROM api_tokens t \
             JOIN users u ON u.id = t.user_id AND u.tenant_id = t.tenant_id \
             WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND u.disabled_at IS NULL \
             AND (t.expires_at IS NULL OR t.expires_at > $2)",
        )
        .bind(hash)
        .bind(Timestamp(super::now()))
        .fetch_optional(&mut *c)
        .await?);
        let Some((tenant, user, token_id, expires_at, last_used_at)) = row else {
            return Ok(None);
        };
        let tenant = TenantId::from_stored(tenant);
        let mut scoped = conn.scoped(&tenant);
        let Some(principal) = scoped.user_principal(&user).await? else {
            return Ok(None);
        };
        Ok(Some(TokenUse {
            principal,
            token_id,
            expires_at,
            last_used_at,
        }))
    }

    /// The id of a tenant by name.
    pub async fn tenant_id(&self, name: &str) -> Result<Option<TenantId>, StoreError> {
        let mut conn = self.reader().await?;
        let id: Option<String> = on!(conn.exec(), c =>
            sqlx::query_scalar("SELECT id FROM tenants WHERE name = $1")
                .bind(name)
                .fetch_optional(&mut *c)
                .await?);
        Ok(id.map(TenantId::from_stored))
    }
}

const USER_COLUMNS: &str = "id, name, email, password_hash IS NOT NULL AS has_password, \
     disabled_at, failed_sign_ins, locked_until, created_at, language";

impl super::Scoped<'_> {
    /// The principal of a user of this tenant by id, with their roles and teams; `None` if the
    /// tenant has no such user, or the user is disabled.
    pub async fn user_principal(&mut self, user_id: &str) -> Result<Option<Principal>, StoreError> {
        let tenant = self.tenant.as_str();
        let found: Option<String> = on!(self.entered().await?, c => sqlx::query_scalar(
            "SELECT id FROM users WHERE tenant_id = $1 AND id = $2 AND disabled_at IS NULL",
        )
        .bind(tenant)
        .bind(user_id)
        .fetch_optional(&mut **c)
        .await?);
        let Some(user) = found.map(UserId::from_stored) else {
            return Ok(None);
        };
        let definitions: Vec<(String, String)> = on!(self.entered().await?, c => sqlx::query_as(
            "SELECT r.name, r.definition FROM user_roles u JOIN roles r \
             ON r.tenant_id = u.tenant_id AND r.name = u.role \
             WHERE u.tenant_id = $1 AND u.user_id = $2 ORDER BY r.name",
        )
        .bind(tenant)
        .bind(user.as_str())
        .fetch_all(&mut **c)
        .await?);
        let mut roles = Vec::with_capacity(definitions.len());
        for (name, definition) in definitions {
            // The administrator role is the code's, whatever is stored.
            let role = if name == ADMINISTRATOR {
                RoleDefinition::administrator()
            } else {
                serde_json::from_str(&definition).map_err(|error| {
                    StoreError::Corrupt(format!("role `{name}` is not a valid role: {error}"))
                })?
            };
            roles.push(role);
        }
        let team: Vec<String> = on!(self.entered().await?, c => sqlx::query_scalar(
            "SELECT DISTINCT o.user_id FROM team_members m JOIN team_members o \
             ON o.tenant_id = m.tenant_id AND o.team = m.team \
             WHERE m.tenant_id = $1 AND m.user_id = $2",
        )
        .bind(tenant)
        .bind(user.as_str())
        .fetch_all(&mut **c)
        .await?);
        let access = Access::new(roles, team, &user);
        Ok(Some(Principal {
            tenant: self.tenant.clone(),
            user,
            access: Arc::new(access),
        }))
    }

    /// The tenant's first administrator: whom work that no user started acts as.
    pub async fn first_admin(&mut self) -> Result<Option<Principal>, StoreError> {
        let tenant = self.tenant.as_str();
        let found: Option<String> = on!(self.entered().await?, c => sqlx::query_scalar(
            "SELECT u.id FROM users u JOIN user_roles r ON r.tenant_id = u.tenant_id \
             AND r.user_id = u.id AND r.role = $2 \
             WHERE u.tenant_id = $1 AND u.disabled_at IS NULL ORDER BY u.created_at, u.id LIMIT 1",
        )
        .bind(tenant)
        .bind(ADMINISTRATOR)
        .fetch_optional(&mut **c)
        .await?);
        match found {
            Some(id) => self.user_principal(&id).await,
            None => Ok(None),
        }
    }

    /// The tenant's name and IANA time zone.
    pub async fn tenant_settings(&mut self) -> Result<(String, String), StoreError> {
        let tenant = self.tenant.as_str();
        let found: Option<(String, String)> = on!(self.entered().await?, c => sqlx::query_as(
            "SELECT name, time_zone FROM tenants WHERE id = $1",
        )
        .bind(tenant)
        .fetch_optional(&mut **c)
        .await?);
        found.ok_or_else(|| StoreError::Corrupt(format!("tenant {tenant} has no row")))
    }

    /// Sets the tenant's time zone (checked by the caller).
    pub async fn set_time_zone(&mut self, time_zone: &str) -> Result<(), StoreError> {
        let tenant = self.tenant.as_str();
        on!(self.entered().await?, c => sqlx::query("UPDATE tenants SET time_zone = $1 WHERE id = $2")
            .bind(time_zone)
            .bind(tenant)
            .execute(&mut **c)
            .await
            .map(drop)?);
        Ok(())
    }

    /// Inserts a user holding `roles` (which must exist).
    pub async fn insert_user(
        &mut self,
        name: &str,
        email: Option<&str>,
        roles: &[String],
        password_hash: Option<&str>,
    ) -> Result<UserId, StoreError> {
        let tenant = self.tenant.as_str();
        let user = UserId::generate();
        let legacy = if roles.iter().any(|role| role == ADMINISTRATOR) {
            "admin"
        } else {
            "member"
        };
        on!(self.entered().await?, c => sqlx::query(
            "INSERT INTO users (id, tenant_id, name, role, email, password_hash, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(user.as_str())
        .bind(tenant)
        .bind(name)
        .bind(legacy)
        .bind(email)
        .bind(password_hash)
        .bind(Timestamp(super::now()))
        .execute(&mut **c)
        .await
        .map(drop)?);
        self.set_user_roles(user.as_str(), roles).await?;
        Ok(user)
    }

    /// Replaces the roles of a user (the roles must exist).
    pub async fn set_user_roles(
        &mut self,
        user_id: &str,
        roles: &[String],
    ) -> Result<(), StoreError> {
        let tenant = self.tenant.as_str();
        let legacy = if roles.iter().any(|role| role == ADMINISTRATOR) {
            "admin"
        } else {
            "member"
        };
        on!(self.entered().await?, c => {
            sqlx::query("DELETE FROM user_roles WHERE tenant_id = $1 AND user_id = $2")
                .bind(tenant)
                .bind(user_id)
                .execute(&mut **c)
                .await?;
            for role in roles {
                sqlx::query("INSERT INTO user_roles (tenant_id, user_id, role) VALUES ($1, $2, $3)")
                    .bind(tenant)
                    .bind(user_id)
                    .bind(role)
                    .execute(&mut **c)
                    .await?;
            }
            sqlx::query("UPDATE users SET role = $3 WHERE tenant_id = $1 AND id = $2")
                .bind(tenant)
                .bind(user_id)
                .bind(legacy)
                .execute(&mut **c)
                .await?;
        });
        Ok(())
    }

    pub async fn users(&mut self) -> Result<Vec<StoredUser>, StoreError> {
        let tenant = self.tenant.as_str();
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 ORDER BY name");
        Ok(on!(self.entered().await?, c => sqlx::query_as(&sql)
            .bind(tenant)
            .fetch_all(&mut **c)
            .await?))
    }

    pub async fn user(&mut self, id: &str) -> Result<Option<StoredUser>, StoreError> {
        let tenant = self.tenant.as_str();
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND id = $2");
        Ok(on!(self.entered().await?, c => sqlx::query_as(&sql)
            .bind(tenant)
            .bind(id)
            .fetch_optional(&mut **c)
            .await?))
    }

    pub async fn user_by_name(&mut self, name: &str) -> Result<Option<StoredUser>, StoreError> {
        let tenant = self.tenant.as_str();
        let sql = format!("SELECT {USER_COLUMNS} FROM users WHERE tenant_id = $1 AND name = $2");
        Ok(on!(self.entered().await?, c => sqlx::query_as(&sql)
            .bind(tenant)
            .bind(name)
            .fetch_optional(&mut **c)
            .await?))
    }

    /// The role names of each user, as `(user id, role)` pairs.
    pub async fn user_roles(&mut self) -> Result<Vec<(String, String)>, StoreError> {
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(
            "SELECT user_id, role FROM user_roles WHERE tenant_id = $1 ORDER BY user_id, role",
        )
        .bind(tenant)
        .fetch_all(&mut **c)
        .await?))
    }

    /// Sets the console language a user chose (`None`: the browser's).
    pub async fn set_user_language(
        &mut self,
        id: &str,
        language: Option<&str>,
    ) -> Result<bool, StoreError> {
        let tenant = self.tenant.as_str();
        let done = on!(self.entered().await?, c => sqlx::query(
            "UPDATE users SET language = $3 WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(id)
        .bind(language)
        .execute(&mut **c)
        .await
        .map(|result| result.rows_affected())?);
        Ok(done == 1)
    }

    /// Sets a user's email and whether they are disabled.
    pub async fn update_user(
        &mut self,
        id: &str,
        email: Option<&str>,
        disabled_at: Option<OffsetDateTime>,
    ) -> Result<(), StoreError> {
        let tenant = self.tenant.as_str();
        on!(self.entered().await?, c => sqlx::query(
            "UPDATE users SET email = $3, disabled_at = $4 WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(id)
        .bind(email)
        .bind(disabled_at.map(Timestamp))
        .execute(&mut **c)
        .await
        .map(drop)?);
        Ok(())
    }

    /// Sets (or, with `None`, removes) a user's password hash and clears their lock.
    pub async fn set_password(&mut self, id: &str, hash: Option<&str>) -> Result<(), StoreError> {
        let tenant = self.tenant.as_str();
        on!(self.entered().await?, c => sqlx::query(
            "UPDATE users SET password_hash = $3, failed_sign_ins = 0, locked_until = NULL \
             WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(id)
        .bind(hash)
        .execute(&mut **c)
        .await
        .map(drop)?);
        Ok(())
    }

    /// What a sign-in checks of the user named `name`.
    pub async fn sign_in_row(&mut self, name: &str) -> Result<Option<SignInRow>, StoreError> {
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(
            "SELECT id, tenant_id, password_hash, disabled_at, failed_sign_ins, locked_until \
             FROM users WHERE tenant_id = $1 AND name = $2",
        )
        .bind(tenant)
        .bind(name)
        .fetch_optional(&mut **c)
        .await?))
    }

    /// Counts a failed sign-in in one statement (concurrent failures all count); the
    /// `lock_after`th in a row locks the user until `until` and starts the count again.
    /// Returns the user's lock.
    pub async fn fail_sign_in(
        &mut self,
        id: &str,
        lock_after: i64,
        until: OffsetDateTime,
    ) -> Result<Option<OffsetDateTime>, StoreError> {
        let tenant = self.tenant.as_str();
        let locked: Option<Option<OffsetDateTime>> = on!(self.entered().await?, c => sqlx::query_scalar(
            "UPDATE users SET \
             locked_until = CASE WHEN failed_sign_ins + 1 >= $3 THEN $4 ELSE locked_until END, \
             failed_sign_ins = CASE WHEN failed_sign_ins + 1 >= $3 THEN 0 ELSE failed_sign_ins + 1 END \
             WHERE tenant_id = $1 AND id = $2 RETURNING locked_until",
        )
        .bind(tenant)
        .bind(id)
        .bind(lock_after)
        .bind(Timestamp(until))
        .fetch_optional(&mut **c)
        .await?);
        Ok(locked.flatten())
    }

    /// Notes a successful sign-in (the failure count starts again), unless the user was
    /// locked meanwhile: `false` then.
    pub async fn succeed_sign_in(
        &mut self,
        id: &str,
        now: OffsetDateTime,
    ) -> Result<bool, StoreError> {
        let tenant = self.tenant.as_str();
        let updated = on!(self.entered().await?, c => sqlx::query(
            "UPDATE users SET failed_sign_ins = 0 WHERE tenant_id = $1 AND id = $2 \
             AND (locked_until IS NULL OR locked_until <= $3)",
        )
        .bind(tenant)
        .bind(id)
        .bind(Timestamp(now))
        .execute(&mut **c)
        .await?
        .rows_affected());
        Ok(updated == 1)
    }

    /// Revokes the console sessions of a user (after a password change).
    pub async fn revoke_sessions(&mut self, user: &str) -> Result<u64, StoreError> {
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query(
            "UPDATE api_tokens SET revoked_at = $3 WHERE tenant_id = $1 AND user_id = $2 \
             AND kind = 'session' AND revoked_at IS NULL",
        )
        .bind(tenant)
        .bind(user)
        .bind(Timestamp(super::now()))
        .execute(&mut **c)
        .await?
        .rows_affected()))
    }

    pub async fn roles(&mut self) -> Result<Vec<StoredRole>, StoreError> {
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(
            "SELECT name, definition, pack_id, created_at, updated_at FROM roles \
             WHERE tenant_id = $1 ORDER BY name",
        )
        .bind(tenant)
        .fetch_all(&mut **c)
        .await?))
    }

    pub async fn role(&mut self, name: &str) -> Result<Option<StoredRole>, StoreError> {
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(
            "SELECT name, definition, pack_id, created_at, updated_at FROM roles \
             WHERE tenant_id = $1 AND name = $2",
        )
        .bind(tenant)
        .bind(name)
        .fetch_optional(&mut **c)
        .await?))
    }

    pub async fn role_names(&mut self) -> Result<Vec<String>, StoreError> {
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_scalar(
            "SELECT name FROM roles WHERE tenant_id = $1 ORDER BY name",
        )
        .bind(tenant)
        .fetch_all(&mut **c)
        .await?))
    }

    /// Creates or replaces a role.
    pub async fn put_role(
        &mut self,
        name: &str,
        definition: &str,
        pack_id: Option<&str>,
    ) -> Result<(), StoreError> {
        let tenant = self.tenant.as_str();
        on!(self.entered().await?, c => sqlx::query(
            "INSERT INTO roles (tenant_id, name, definition, pack_id, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $5) \
             ON CONFLICT (tenant_id, name) DO UPDATE SET definition = excluded.definition, \
             pack_id = excluded.pack_id, updated_at = excluded.updated_at",
        )
        .bind(tenant)
        .bind(name)
        .bind(definition)
        .bind(pack_id)
        .bind(Timestamp(super::now()))
        .execute(&mut **c)
        .await
        .map(drop)?);
        Ok(())
    }

    /// How many users hold a role.
    pub async fn role_holders(&mut self, name: &str) -> Result<i64, StoreError> {
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_scalar(
            "SELECT COUNT(*) FROM user_roles WHERE tenant_id = $1 AND role = $2",
        )
        .bind(tenant)
        .bind(name)
        .fetch_one(&mut **c)
        .await?))
    }

    pub async fn delete_role(&mut self, name: &str) -> Result<bool, StoreError> {
        let tenant = self.tenant.as_str();
        let affected = on!(self.entered().await?, c => sqlx::query(
            "DELETE FROM roles WHERE tenant_id = $1 AND name = $2",
        )
        .bind(tenant)
        .bind(name)
        .execute(&mut **c)
        .await?
        .rows_affected());
        Ok(affected == 1)
    }

    pub async fn teams(&mut self) -> Result<Vec<StoredTeam>, StoreError> {
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(
            "SELECT name, label, manager_id FROM teams WHERE tenant_id = $1 ORDER BY name",
        )
        .bind(tenant)
        .fetch_all(&mut **c)
        .await?))
    }

    pub async fn team(&mut self, name: &str) -> Result<Option<StoredTeam>, StoreError> {
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(
            "SELECT name, label, manager_id FROM teams WHERE tenant_id = $1 AND name = $2",
        )
        .bind(tenant)
        .bind(name)
        .fetch_optional(&mut **c)
        .await?))
    }

    /// The enabled users holding a role, in id order; `None` when the role does not exist.
    pub async fn users_with_role(&mut self, role: &str) -> Result<Option<Vec<String>>, StoreError> {
        if self.role(role).await?.is_none() {
            return Ok(None);
        }
        let tenant = self.tenant.as_str();
        Ok(Some(on!(self.entered().await?, c => sqlx::query_scalar(
            "SELECT u.id FROM users u JOIN user_roles r ON r.tenant_id = u.tenant_id \
             AND r.user_id = u.id WHERE u.tenant_id = $1 AND r.role = $2 AND u.disabled_at IS NULL \
             ORDER BY u.id",
        )
        .bind(tenant)
        .bind(role)
        .fetch_all(&mut **c)
        .await?)))
    }

    /// The enabled members of a team, in id order; `None` when the team does not exist.
    pub async fn members_of(&mut self, team: &str) -> Result<Option<Vec<String>>, StoreError> {
        if self.team(team).await?.is_none() {
            return Ok(None);
        }
        let tenant = self.tenant.as_str();
        Ok(Some(on!(self.entered().await?, c => sqlx::query_scalar(
            "SELECT u.id FROM users u JOIN team_members m ON m.tenant_id = u.tenant_id \
             AND m.user_id = u.id WHERE u.tenant_id = $1 AND m.team = $2 AND u.disabled_at IS NULL \
             ORDER BY u.id",
        )
        .bind(tenant)
        .bind(team)
        .fetch_all(&mut **c)
        .await?)))
    }

    /// The members of every team, as `(team, user id)` pairs.
    pub async fn team_members(&mut self) -> Result<Vec<(String, String)>, StoreError> {
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(
            "SELECT team, user_id FROM team_members WHERE tenant_id = $1 ORDER BY team, user_id",
        )
        .bind(tenant)
        .fetch_all(&mut **c)
        .await?))
    }

    /// Creates or replaces a team with its members (users of the tenant, checked by the caller).
    pub async fn put_team(
        &mut self,
        name: &str,
        label: Option<&str>,
        manager_id: Option<&str>,
        members: &[String],
    ) -> Result<(), StoreError> {
        let tenant = self.tenant.as_str();
        on!(self.entered().await?, c => {
            sqlx::query(
                "INSERT INTO teams (tenant_id, name, label, manager_id, created_at) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (tenant_id, name) DO UPDATE SET label = excluded.label, \
                 manager_id = excluded.manager_id",
            )
            .bind(tenant)
            .bind(name)
            .bind(label)
            .bind(manager_id)
            .bind(Timestamp(super::now()))
            .execute(&mut **c)
            .await?;
            sqlx::query("DELETE FROM team_members WHERE tenant_id = $1 AND team = $2")
                .bind(tenant)
                .bind(name)
                .execute(&mut **c)
                .await?;
            for member in members {
                sqlx::query("INSERT INTO team_members (tenant_id, team, user_id) VALUES ($1, $2, $3)")
                    .bind(tenant)
                    .bind(name)
                    .bind(member)
                    .execute(&mut **c)
                    .await?;
            }
        });
        Ok(())
    }

    pub async fn delete_team(&mut self, name: &str) -> Result<bool, StoreError> {
        let tenant = self.tenant.as_str();
        let affected = on!(self.entered().await?, c => {
            sqlx::query("DELETE FROM team_members WHERE tenant_id = $1 AND team = $2")
                .bind(tenant)
                .bind(name)
                .execute(&mut **c)
                .await?;
            sqlx::query("DELETE FROM teams WHERE tenant_id = $1 AND name = $2")
                .bind(tenant)
                .bind(name)
                .execute(&mut **c)
                .await?
                .rows_affected()
        });
        Ok(affected == 1)
    }

    /// Inserts a token for a user of this tenant; returns the token and its public id.
    pub async fn insert_token(
        &mut self,
        user: &UserId,
        name: Option<&str>,
        kind: &str,
        expires_at: Option<OffsetDateTime>,
    ) -> Result<(String, String), StoreError> {
        let tenant = self.tenant.as_str();
        let token = generate_token();
        let hash = hash_token(&token);
        let id = token_id(&hash);
        on!(self.entered().await?, c => sqlx::query(
            "INSERT INTO api_tokens (token_hash, id, tenant_id, user_id, name, kind, created_at, expires_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&hash)
        .bind(&id)
        .bind(tenant)
        .bind(user.as_str())
        .bind(name)
        .bind(kind)
        .bind(Timestamp(super::now()))
        .bind(expires_at.map(Timestamp))
        .execute(&mut **c)
        .await
        .map(drop)?);
        Ok((token, id))
    }

    /// The tokens of the tenant, or of one user, newest first.
    pub async fn tokens(&mut self, user: Option<&str>) -> Result<Vec<StoredToken>, StoreError> {
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(
            "SELECT id, user_id, name, kind, created_at, expires_at, revoked_at, last_used_at \
             FROM api_tokens WHERE tenant_id = $1 AND ($2 IS NULL OR user_id = $2) \
             ORDER BY created_at DESC, id",
        )
        .bind(tenant)
        .bind(user)
        .fetch_all(&mut **c)
        .await?))
    }

    pub async fn token(&mut self, id: &str) -> Result<Option<StoredToken>, StoreError> {
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(
            "SELECT id, user_id, name, kind, created_at, expires_at, revoked_at, last_used_at \
             FROM api_tokens WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(id)
        .fetch_optional(&mut **c)
        .await?))
    }

    /// Revokes a token, or every live token of a user (`id` `None`); returns how many.
    pub async fn revoke_tokens(
        &mut self,
        id: Option<&str>,
        user: Option<&str>,
    ) -> Result<u64, StoreError> {
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query(
            "UPDATE api_tokens SET revoked_at = $4 WHERE tenant_id = $1 AND revoked_at IS NULL \
             AND ($2 IS NULL OR id = $2) AND ($3 IS NULL OR user_id = $3)",
        )
        .bind(tenant)
        .bind(id)
        .bind(user)
        .bind(Timestamp(super::now()))
        .execute(&mut **c)
        .await?
        .rows_affected()))
    }

    /// Notes that a token was used now.
    pub async fn touch_token(&mut self, id: &str) -> Result<(), StoreError> {
        let tenant = self.tenant.as_str();
        on!(self.entered().await?, c => sqlx::query(
            "UPDATE api_tokens SET last_used_at = $3 WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(id)
        .bind(Timestamp(super::now()))
        .execute(&mut **c)
        .await
        .map(drop)?);
        Ok(())
    }

    /// Appends to the audit trail.
    pub async fn audit(
        &mut self,
        actor: Option<&str>,
        action: &str,
        target: Option<&str>,
        detail: &serde_json::Value,
    ) -> Result<(), StoreError> {
        let tenant = self.tenant.as_str();
        on!(self.entered().await?, c => sqlx::query(
            "INSERT INTO audit_log (tenant_id, at, actor, action, target, detail) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(tenant)
        .bind(Timestamp(super::now()))
        .bind(actor)
        .bind(action)
        .bind(target)
        .bind(detail.to_string())
        .execute(&mut **c)
        .await
        .map(drop)?);
        Ok(())
    }

    /// Entries of the audit trail, newest first, filtered; `before` is an entry id (the cursor).
    pub async fn audit_entries(
        &mut self,
        filter: &AuditFilter<'_>,
        limit: i64,
    ) -> Result<Vec<AuditRow>, StoreError> {
        let tenant = self.tenant.as_str();
        Ok(on!(self.entered().await?, c => sqlx::query_as(
            "SELECT id, at, actor, action, target, detail FROM audit_log WHERE tenant_id = $1 \
             AND ($2 IS NULL OR actor = $2) \
             AND ($3 IS NULL OR action = $3 OR action LIKE $4) \
             AND ($5 IS NULL OR target = $5) \
             AND ($6 IS NULL OR at >= $6) AND ($7 IS NULL OR at < $7) \
             AND ($8 IS NULL OR id < $8) \
             ORDER BY id DESC LIMIT $9",
        )
        .bind(tenant)
        .bind(filter.actor)
        .bind(filter.action)
        .bind(filter.action.map(|action| format!("{action}.%")))
        .bind(filter.target)
        .bind(filter.since.map(Timestamp))
        .bind(filter.until.map(Timestamp))
        .bind(filter.before)
        .bind(limit)
        .fetch_all(&mut **c)
        .await?))
    }
}

/// Which audit entries to list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter<'a> {
    pub actor: Option<&'a str>,
    /// An action (`entity.update`), or a subject (`entity`: every action on entities).
    pub action: Option<&'a str>,
    pub target: Option<&'a str>,
    pub since: Option<OffsetDateTime>,
    pub until: Option<OffsetDateTime>,
    pub before: Option<i64>,
}
