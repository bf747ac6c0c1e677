//! The demo tenant: entity definitions from `schemas/demo/` and a few sample records, so that a
//! fresh server has something to show.

use serde_json::{Value, json};

use crate::api::AppState;
use crate::auth::Principal;

/// The demo entity definitions, as files an admin would keep in git.
pub const DEFINITIONS: [(&str, &str); 4] = [
    (
        "account.json",
        include_str!("../../schemas/demo/account.json"),
    ),
    (
        "contact.json",
        include_str!("../../schemas/demo/contact.json"),
    ),
    (
        "opportunity.json",
        include_str!("../../schemas/demo/opportunity.json"),
    ),
    ("case.json", include_str!("../../schemas/demo/case.json")),
];

/// The bundled plugins the demo tenant gets enabled, by crate: their manifests are compiled in,
/// their components come from the plugins' build (`scripts/plugins`).
const PLUGINS: [(&str, &str); 2] = [
    (
        "credit_terms",
        include_str!("../../plugins/credit-terms/manifest.json"),
    ),
    (
        "complaint_sla",
        include_str!("../../plugins/complaint-sla/manifest.json"),
    ),
];

pub const TENANT: &str = "demo";

/// Creates the demo tenant with its entities and records unless it exists; returns a new admin
/// token for it either way.
pub async fn ensure(state: &AppState) -> anyhow::Result<String> {
    if state.store.tenant_id(TENANT).await?.is_some() {
        let token = state.store.issue_token(TENANT, "admin").await?;
        return token.ok_or_else(|| anyhow::anyhow!("the demo tenant has no `admin` user"));
    }
    let created = state
        .store
        .create_tenant(TENANT)
        .await?
        .expect("the tenant did not exist");
    let principal = state
        .store
        .principal_for_token_hash(&crate::auth::hash_token(&created.token))
        .await?
        .expect("the new token resolves");
    let definitions: Vec<(String, Value)> = DEFINITIONS
        .iter()
        .map(|(file, text)| Ok(((*file).to_owned(), serde_json::from_str(text)?)))
        .collect::<Result<_, serde_json::Error>>()?;
    state
        .metadata
        .apply_all(
            &principal.tenant,
            Some(&principal.user),
            &definitions,
            false,
        )
        .await?;
    install_plugins(state, &principal).await?;
    seed_records(state, &principal).await?;
    Ok(created.token)
}

/// Installs and enables the bundled plugins whose components are built; says which are not.
async fn install_plugins(state: &AppState, principal: &Principal) -> anyhow::Result<()> {
    let dir = std::env::var_os("RAPPORT_PLUGINS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("target/wasm32-wasip2/release"));
    for (name, manifest) in PLUGINS {
        let path = dir.join(format!("{name}.wasm"));
        let Ok(bytes) = std::fs::read(&path) else {
            eprintln!(
                "demo: plugin {} is not built (run scripts/plugins); skipped",
                path.display()
            );
            continue;
        };
        let manifest: Value = serde_json::from_str(manifest)?;
        let installed = state.plugins.install(principal, &manifest, &bytes).await?;
        state
            .plugins
            .set_enabled(principal, &installed.plugin.id, true)
            .await?;
    }
    Ok(())
}

async fn seed_records(state: &AppState, principal: &Principal) -> anyhow::Result<()> {
    let industries = [
        "manufacturing",
        "retail",
        "services",
        "technology",
        "exhibitions",
        "real_estate",
    ];
    let sizes = ["small", "medium", "large"];
    let accounts: Vec<Value> = (0..12)
        .map(|i| {
            let name = ["Acme", "Globex", "Initech", "Umbrella", "Hooli", "Stark"][i % 6];
            let kind = ["Trading", "Holdings"][i % 2];
            json!({
                "name": format!("{name} {kind}"),
                "industry": industries[i % industries.len()],
                "size": sizes[i % 3],
                "website": format!("https://example{i}.com"),
                "annual_revenue": {"amount": 100_000 * (i + 1), "currency": "EUR"},
                "active": i % 5 != 0,
                "payment_record": if i % 4 == 3 { "poor" } else { "good" }
            })
        })
        .collect();
    let response = state
        .records
        .create_batch(principal, "account", accounts, None)
        .await?;
    let created: Value = serde_json::from_str(&response.body)?;
    let account_ids: Vec<String> = created["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect();
    let first = [
        "Ada", "Alan", "Grace", "Linus", "Margaret", "Dennis", "Barbara", "Ken", "Frances",
        "Edsger",
    ];
    let last = [
        "Lovelace", "Turing", "Hopper", "Torvalds", "Hamilton", "Ritchie", "Liskov", "Thompson",
        "Allen", "Dijkstra",
    ];
    let stages = ["lead", "customer", "churned"];
    let contacts: Vec<Value> = (0..60)
        .map(|i| {
            json!({
                "first_name": first[i % 10],
                "last_name": last[(i / 10 + i) % 10],
                "email": format!("{}.{}{i}@example.com", first[i % 10].to_lowercase(), last[(i / 10 + i) % 10].to_lowercase()),
                "phone": format!("+33 1 55 00 {:02} {:02}", i / 100, i % 100),
                "stage": stages[i % 3],
                "annual_value": (i * 7919 % 100_000) as f64 / 10.0,
                "channels": if i % 2 == 0 { json!(["email"]) } else { json!(["phone", "sms"]) },
                "account": account_ids[i % account_ids.len()],
            })
        })
        .collect();
    state
        .records
        .create_batch(principal, "contact", contacts, None)
        .await?;
    let opportunities: Vec<Value> = account_ids
        .iter()
        .enumerate()
        .map(|(i, account)| {
            let stage = [
                "prospecting",
                "qualification",
                "proposal",
                "negotiation",
                "won",
                "lost",
            ][i % 6];
            json!({
                "title": format!("Renewal {}", 2027 + i % 2),
                "account": account,
                "stage": stage,
                "probability": (i * 17) % 100,
                "amount": {"amount": 5_000 * (i + 1), "currency": "EUR"},
                "expected_close": format!("2027-{:02}-15", i % 12 + 1)
            })
        })
        .collect();
    state
        .records
        .create_batch(principal, "opportunity", opportunities, None)
        .await?;
    let cases: Vec<Value> = (0..8)
        .map(|i| {
            let subject = [
                "Late delivery",
                "Wrong invoice",
                "Broken part",
                "Login fails",
            ][i % 4];
            let priority = ["urgent", "ordinary", "high", "low"][i % 4];
            json!({
                "subject": subject,
                "account": account_ids[i % account_ids.len()],
                "type": "complaint",
                "priority": priority,
                "status": "open"
            })
        })
        .collect();
    state
        .records
        .create_batch(principal, "case", cases, None)
        .await?;
    Ok(())
}
