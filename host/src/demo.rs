//! The demo tenant: the `core` pack (the CRM itself) with its sample data, so that a fresh
//! server has something to show.

use crate::api::AppState;
use crate::packs::{PackError, Source};

pub const TENANT: &str = "demo";

/// Creates the demo tenant with the `core` pack and its sample records unless it exists;
/// returns a new admin token for it either way.
pub async fn ensure(state: &AppState) -> anyhow::Result<String> {
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
