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

/// Creates the demo tenant with the `core` pack and its sample records unless it exists; gives
/// its `admin` a new API token and a new console password either way.
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
    if state.store.tenant_id(TENANT).await?.is_some() {
        let token = state.store.issue_token(TENANT, "admin").await?;
        return token.ok_or_else(|| anyhow::anyhow!("the demo tenant has no `admin` user"));
    }
    let created = state
        .store
        .create_tenant(TENANT, "UTC")
        .await?
        .expect("the tenant did not exist");
    let principal = state
        .store
        .principal_for_token_hash(&crate::auth::hash_token(&created.token))
        .await?
        .expect("the new token resolves");
    match state
        .packs
        .install(&principal, &Source::Bundled("core".to_owned()), true, false)
        .await
    {
        Ok(_) => Ok(created.token),
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
