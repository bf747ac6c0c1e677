//! Tenants, users and API tokens.

use serde::Serialize;
use time::OffsetDateTime;

use super::{Store, StoreError, on};
use crate::auth::{Principal, Role, generate_token, hash_token};
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
    pub role: Role,
    pub token: String,
}

impl Store {
    /// Creates a tenant, its `admin` user and an API token for that user, in one transaction.
    pub async fn create_tenant(
        &self,
        name: &str,
        time_zone: &str,
    ) -> Result<Option<NewTenant>, StoreError> {
        let tenant = TenantId::generate();
        let now = super::now();
        let mut tx = self.begin().await?;
        let inserted = on!(tx.exec(), c => sqlx::query(
            "INSERT INTO tenants (id, name, time_zone, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(tenant.as_str())
        .bind(name)
        .bind(time_zone)
        .bind(super::Timestamp(now))
        .execute(&mut *c)
        .await?
        .rows_affected());
        if inserted == 0 {
            return Ok(None);
        }
        let (user, token) = insert_user(&mut tx, &tenant, "admin", Role::Admin, now).await?;
        tx.commit().await?;
        Ok(Some(NewTenant {
            tenant: name.to_owned(),
            tenant_id: tenant.to_string(),
            user: user.to_string(),
            token,
        }))
    }

    /// Creates a user in the tenant named `tenant_name`, with an API token. `None` when the tenant
    /// does not exist.
    pub async fn create_user(
        &self,
        tenant_name: &str,
        user_name: &str,
        role: Role,
    ) -> Result<Option<NewUser>, StoreError> {
        let mut tx = self.begin().await?;
        let tenant: Option<String> = on!(tx.exec(), c =>
            sqlx::query_scalar("SELECT id FROM tenants WHERE name = $1")
                .bind(tenant_name)
                .fetch_optional(&mut *c)
                .await?);
        let Some(tenant) = tenant.map(TenantId::from_stored) else {
            return Ok(None);
        };
        let (user, token) = insert_user(&mut tx, &tenant, user_name, role, super::now()).await?;
        tx.commit().await?;
        Ok(Some(NewUser {
            tenant: tenant_name.to_owned(),
            user: user_name.to_owned(),
            user_id: user.to_string(),
            role,
            token,
        }))
    }

    /// Issues a new API token for an existing user; `None` when tenant or user do not exist.
    pub async fn issue_token(
        &self,
        tenant_name: &str,
        user_name: &str,
    ) -> Result<Option<String>, StoreError> {
        let mut tx = self.begin().await?;
        let found: Option<(String, String)> = on!(tx.exec(), c => sqlx::query_as(
            "SELECT t.id, u.id FROM tenants t JOIN users u ON u.tenant_id = t.id WHERE t.name = $1 AND u.name = $2",
        )
        .bind(tenant_name)
        .bind(user_name)
        .fetch_optional(&mut *c)
        .await?);
        let Some((tenant, user)) = found else {
            return Ok(None);
        };
        let token = generate_token();
        on!(tx.exec(), c => sqlx::query(
            "INSERT INTO api_tokens (token_hash, tenant_id, user_id, created_at) VALUES ($1, $2, $3, $4)",
        )
        .bind(hash_token(&token))
        .bind(&tenant)
        .bind(&user)
        .bind(super::Timestamp(super::now()))
        .execute(&mut *c)
        .await.map(drop)?);
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
        let mut conn = self.reader().await?;
        let found: Option<(String, String, String)> = on!(conn.exec(), c => sqlx::query_as(
            "SELECT t.id, u.id, u.role FROM tenants t JOIN users u ON u.tenant_id = t.id \
             WHERE t.name = $1 AND u.name = $2",
        )
        .bind(tenant_name)
        .bind(user_name)
        .fetch_optional(&mut *c)
        .await?);
        found.map(principal).transpose()
    }

    /// Resolves the hash of an API token to its principal; `None` for an unknown token.
    pub async fn principal_for_token_hash(
        &self,
        hash: &str,
    ) -> Result<Option<Principal>, StoreError> {
        let mut conn = self.reader().await?;
        let row: Option<(String, String, String)> = on!(conn.exec(), c => sqlx::query_as(
            "SELECT t.tenant_id, t.user_id, u.role FROM api_tokens t \
             JOIN users u ON u.id = t.user_id WHERE t.token_hash = $1",
        )
        .bind(hash)
        .fetch_optional(&mut *c)
        .await?);
        row.map(principal).transpose()
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

async fn insert_user(
    tx: &mut super::Tx,
    tenant: &TenantId,
    name: &str,
    role: Role,
    now: OffsetDateTime,
) -> Result<(UserId, String), StoreError> {
    let user = UserId::generate();
    let token = generate_token();
    on!(tx.exec(), c => {
        sqlx::query("INSERT INTO users (id, tenant_id, name, role, created_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(user.as_str())
            .bind(tenant.as_str())
            .bind(name)
            .bind(role.as_str())
            .bind(super::Timestamp(now))
            .execute(&mut *c)
            .await?;
        sqlx::query("INSERT INTO api_tokens (token_hash, tenant_id, user_id, created_at) VALUES ($1, $2, $3, $4)")
            .bind(hash_token(&token))
            .bind(tenant.as_str())
            .bind(user.as_str())
            .bind(super::Timestamp(now))
            .execute(&mut *c)
            .await?;
    });
    Ok((user, token))
}

/// A principal from a stored (tenant id, user id, role) row.
fn principal((tenant, user, role): (String, String, String)) -> Result<Principal, StoreError> {
    let role =
        Role::parse(&role).ok_or_else(|| StoreError::Corrupt(format!("unknown role `{role}`")))?;
    Ok(Principal {
        tenant: TenantId::from_stored(tenant),
        user: UserId::from_stored(user),
        role,
    })
}

impl super::Scoped<'_> {
    /// The principal of a user of this tenant by id; `None` if the tenant has no such user.
    pub async fn user_principal(&mut self, user_id: &str) -> Result<Option<Principal>, StoreError> {
        let tenant = self.tenant.as_str();
        let found: Option<(String, String, String)> = on!(&mut self.exec, c => sqlx::query_as(
            "SELECT tenant_id, id, role FROM users WHERE tenant_id = $1 AND id = $2",
        )
        .bind(tenant)
        .bind(user_id)
        .fetch_optional(&mut **c)
        .await?);
        found.map(principal).transpose()
    }

    /// The tenant's first administrator: whom work that no user started acts as.
    pub async fn first_admin(&mut self) -> Result<Option<Principal>, StoreError> {
        let tenant = self.tenant.as_str();
        let found: Option<(String, String, String)> = on!(&mut self.exec, c => sqlx::query_as(
            "SELECT tenant_id, id, role FROM users WHERE tenant_id = $1 AND role = 'admin' \
             ORDER BY created_at, id LIMIT 1",
        )
        .bind(tenant)
        .fetch_optional(&mut **c)
        .await?);
        found.map(principal).transpose()
    }

    /// The tenant's name and IANA time zone.
    pub async fn tenant_settings(&mut self) -> Result<(String, String), StoreError> {
        let tenant = self.tenant.as_str();
        let found: Option<(String, String)> = on!(&mut self.exec, c => sqlx::query_as(
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
        on!(&mut self.exec, c => sqlx::query("UPDATE tenants SET time_zone = $1 WHERE id = $2")
            .bind(time_zone)
            .bind(tenant)
            .execute(&mut **c)
            .await
            .map(drop)?);
        Ok(())
    }
}
