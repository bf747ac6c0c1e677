//! The demo tenant: the `core` pack (the CRM itself) with its sample data, so that a fresh
//! server has something to show.

use crate::api::AppState;
use crate::packs::{PackError, Source};

pub const TENANT: &str = "demo";

/// How to get into the demo tenant: an API token and a console password of its `admin`.
#[derive(Debug)]
pub struct Access {
    pub token: String,
    pub password: String,
}

/// Creates the demo tenant unless it exists, and installs the `core` pack with its sample records
/// unless the tenant ever had it; gives its `admin` a new API token and a new console password
/// either way.
pub async fn ensure(state: &AppState) -> anyhow::Result<Access> {
    let token = create(state).await?;
    let password = new_password(state).await?;
    Ok(Access { token, password })
}

/// A fresh random password for the demo's `admin` (printed at start-up, like the token).
async fn new_password(state: &AppState) -> anyhow::Result<String> {
    use rand::Rng;
    let password: String = rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(16)
        .map(char::from)
        .collect();
    let tenant = state
        .store
        .tenant_id(TENANT)
        .await?
        .ok_or_else(|| anyhow::anyhow!("the demo tenant is missing"))?;
    let mut tx = state.store.begin().await?;
    let mut scoped = tx.scoped(&tenant);
    let user = scoped
        .user_by_name("admin")
        .await?
        .ok_or_else(|| anyhow::anyhow!("the demo tenant has no `admin` user"))?;
    scoped
        .set_password(&user.id, Some(&crate::auth::hash_password(&password)))
        .await?;
    tx.commit().await?;
    Ok(password)
}

async fn create(state: &AppState) -> anyhow::Result<String> {
    let token = match state.store.tenant_id(TENANT).await? {
        Some(_) => state
            .store
            .issue_token(TENANT, "admin")
            .await?
            .ok_or_else(|| anyhow::anyhow!("the demo tenant has no `admin` user"))?,
        None => {
            state
                .store
                .create_tenant(TENANT, "UTC")
                .await?
                .expect("the tenant did not exist")
                .token
        }
    };
    let principal = state
        .store
        .principal_for_token_hash(&crate::auth::hash_token(&token))
        .await?
        .expect("the new token resolves");
    // A start that could not install the pack (its plugins not built yet, say) left the tenant
    // without it: it is installed now. A pack the admin removed stays removed.
    let never_installed = state
        .packs
        .list(&principal)
        .await?
        .iter()
        .any(|pack| pack.id == "core" && pack.status == "available");
    if !never_installed {
        return Ok(token);
    }
    match state
        .packs
        .install(&principal, &Source::Bundled("core".to_owned()), true, false)
        .await
    {
        Ok(_) => Ok(token),
        Err(PackError::Refused(problems)) => Err(anyhow::anyhow!(
            "the demo tenant cannot install the `core` pack:{}",
            problems
                .iter()
                .map(|p| format!("\n  {}: {}", p.path, p.message))
                .collect::<String>()
        )),
        Err(error) => Err(error.into()),
    }
}
