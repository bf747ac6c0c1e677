//! The demo tenant: entity definitions from `schemas/demo/` and a few sample records, so that a
//! fresh server has something to show.

use serde_json::{Value, json};

use crate::api::AppState;
use crate::auth::Principal;

/// The demo entity definitions, as files an admin would keep in git.
pub const DEFINITIONS: [(&str, &str); 5] = [
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
    ("order.json", include_str!("../../schemas/demo/order.json")),
];

/// The bundled plugins the demo tenant gets enabled, by crate: their manifests are compiled in,
/// their components come from the plugins' build (`scripts/plugins`).
const PLUGINS: [(&str, &str); 4] = [
    (
        "credit_terms",
        include_str!("../../plugins/credit-terms/manifest.json"),
    ),
    (
        "complaint_sla",
        include_str!("../../plugins/complaint-sla/manifest.json"),
    ),
    (
        "rfm_score",
        include_str!("../../plugins/rfm-score/manifest.json"),
    ),
    (
        "lifecycle_stage",
        include_str!("../../plugins/lifecycle-stage/manifest.json"),
    ),
];

/// The example workflows of the source documents that the demo tenant runs.
pub const WORKFLOWS: [(&str, &str); 3] = [
    (
        "poor_payment_alert.json",
        include_str!("../../schemas/demo/workflows/poor_payment_alert.json"),
    ),
    (
        "complaint_sla.json",
        include_str!("../../schemas/demo/workflows/complaint_sla.json"),
    ),
    (
        "birthday_greeting.json",
        include_str!("../../schemas/demo/workflows/birthday_greeting.json"),
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
        .create_tenant(TENANT, "UTC")
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
    // After the sample records, so that they start no runs.
    for (file, text) in WORKFLOWS {
        let definition: Value = serde_json::from_str(text)?;
        state
            .workflows
            .create(&principal, &definition)
            .await
            .map_err(|error| anyhow::anyhow!("demo workflow {file}: {error}"))?;
    }
    Ok(created.token)
}

/// Installs and enables the bundled plugins; the demo's computed fields need them built.
async fn install_plugins(state: &AppState, principal: &Principal) -> anyhow::Result<()> {
    let dir = std::env::var_os("RAPPORT_PLUGINS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("target/wasm32-wasip2/release"));
    for (name, manifest) in PLUGINS {
        let path = dir.join(format!("{name}.wasm"));
        let bytes = std::fs::read(&path).map_err(|error| {
            anyhow::anyhow!(
                "the demo needs the bundled plugins: cannot read {} ({error}); build them with scripts/plugins or set RAPPORT_PLUGINS_DIR",
                path.display()
            )
        })?;
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
        .await
        .map_err(|error| explain("account", error))?;
    let created: Value = serde_json::from_str(&response.body)?;
    let account_ids: Vec<String> = created["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["id"].as_str().map(str::to_owned))
        .collect();
    // `credit-terms` stops trading with small accounts with a poor payment record.
    let trading: Vec<bool> = created["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| r["data"]["credit_status"] != "stop")
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
        .await
        .map_err(|error| explain("contact", error))?;
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
        .await
        .map_err(|error| explain("opportunity", error))?;
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
        .await
        .map_err(|error| explain("case", error))?;
    // Orders over the last two years, more and bigger for the first accounts, so that the
    // computed RFM scores, value tiers and lifecycle stages differ between accounts.
    let today = time::OffsetDateTime::now_utc().date();
    let mut orders = Vec::new();
    for (i, account) in account_ids.iter().enumerate() {
        if !trading[i] {
            continue;
        }
        let count = 12usize.saturating_sub(i);
        for n in 0..count {
            let days_ago = (i * 30 + n * 700 / count.max(1)) as i64 % 730;
            let date = today - time::Duration::days(days_ago);
            orders.push(json!({
                "account": account,
                "ordered_on": date.to_string(),
                "amount": {"amount": 500 * (12 - i) * (n + 1), "currency": "EUR"},
                "status": if n % 7 == 6 { "cancelled" } else { "paid" }
            }));
        }
    }
    state
        .records
        .create_batch(principal, "order", orders, None)
        .await
        .map_err(|error| explain("order", error))?;
    Ok(())
}

/// A records error with its field errors, for the server's log.
fn explain(entity: &str, error: crate::records::RecordError) -> anyhow::Error {
    use crate::records::RecordError;
    match &error {
        RecordError::Invalid(fields) | RecordError::Conflict(fields) => {
            anyhow::anyhow!("demo `{entity}` records: {error}: {fields:?}")
        }
        _ => anyhow::anyhow!("demo `{entity}` records: {error}"),
    }
}
