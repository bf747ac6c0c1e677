//! `sales-metrics`: measures the source documents ask a sales team to watch, as computed fields.
//!
//! - `weighted_amount` (an opportunity): its amount × its win probability / 100, in the amount's
//!   currency — what the weighted forecast sums.
//! - `responses` (a campaign): how many of its members responded (read through the host, within
//!   the manifest's `read campaign_member`).
//! - `cost_per_response` (a campaign): its actual cost (else its budget) divided by its
//!   responses, in the cost's currency; null while nobody has responded. It reads the campaign's
//!   `responses` field when that is computed first (list it in `depends_on`), else counts.

use rapport_sdk::{Compute, Plugin, Record, json, records};
use serde_json::{Map, Value};

pub struct SalesMetrics;

/// The most member pages read for one count (a page is 500 members).
const MAX_PAGES: usize = 20;
const PAGE: u32 = 500;

/// The tenant's configuration, with the manifest's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub amount_field: String,
    pub probability_field: String,
    pub member_entity: String,
    pub campaign_field: String,
    pub member_status_field: String,
    pub responded_statuses: Vec<String>,
    pub cost_fields: Vec<String>,
    pub responses_field: String,
}

impl Settings {
    pub fn from_config(config: &Map<String, Value>) -> Self {
        let text = |key: &str, default: &str| {
            config
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or(default)
                .to_owned()
        };
        let list = |key: &str, default: &[&str]| match config.get(key) {
            Some(Value::Array(items)) => items
                .iter()
                .filter_map(|item| item.as_str().map(str::to_owned))
                .collect(),
            _ => default.iter().map(|item| (*item).to_owned()).collect(),
        };
        Self {
            amount_field: text("amount_field", "amount"),
            probability_field: text("probability_field", "probability"),
            member_entity: text("member_entity", "campaign_member"),
            campaign_field: text("campaign_field", "campaign"),
            member_status_field: text("member_status_field", "status"),
            responded_statuses: list("responded_statuses", &["responded"]),
            cost_fields: list("cost_fields", &["actual_cost", "budget"]),
            responses_field: text("responses_field", "responses"),
        }
    }
}

/// An amount and its currency, from a currency value (`{"amount", "currency"}`).
pub fn money(value: Option<&Value>) -> Option<(f64, String)> {
    let object = value?.as_object()?;
    let amount = object.get("amount")?.as_f64()?;
    let currency = object.get("currency")?.as_str()?;
    Some((amount, currency.to_owned()))
}

/// A currency value, rounded to cents.
pub fn currency(amount: f64, code: &str) -> Value {
    json!({"amount": (amount * 100.0).round() / 100.0, "currency": code})
}

/// The weighted amount of an opportunity: null without an amount; a missing probability
/// weighs nothing; probabilities are clamped to 0–100.
pub fn weighted(settings: &Settings, record: &Record) -> Value {
    let Some((amount, code)) = money(record.get(&settings.amount_field)) else {
        return Value::Null;
    };
    let probability = record
        .get_f64(&settings.probability_field)
        .unwrap_or(0.0)
        .clamp(0.0, 100.0);
    currency(amount * probability / 100.0, &code)
}

/// Cost per response: the first cost field that is set, divided by the responses.
pub fn per_response(settings: &Settings, campaign: &Record, responses: u64) -> Value {
    if responses == 0 {
        return Value::Null;
    }
    let cost = settings
        .cost_fields
        .iter()
        .find_map(|field| money(campaign.get(field)));
    match cost {
        Some((amount, code)) => currency(amount / responses as f64, &code),
        None => Value::Null,
    }
}

/// The campaign's responded members, counted page by page through the host.
fn count_responses(settings: &Settings, campaign: &str) -> Result<u64, String> {
    if campaign.is_empty() {
        return Ok(0);
    }
    let statuses = settings
        .responded_statuses
        .iter()
        .map(|status| records::quote(status))
        .collect::<Vec<_>>()
        .join(", ");
    let filter = format!(
        "{} eq {} and {} in ({statuses})",
        settings.campaign_field,
        records::quote(campaign),
        settings.member_status_field
    );
    let max = MAX_PAGES * PAGE as usize;
    let members = records::query_all(&settings.member_entity, &filter, PAGE, max + 1)
        .map_err(|error| format!("cannot read {}: {error:?}", settings.member_entity))?;
    if members.len() > max {
        rapport_sdk::log::warn(&format!("more than {max} responses: the count stops there"));
        return Ok(max as u64);
    }
    Ok(members.len() as u64)
}

impl Plugin for SalesMetrics {
    fn compute(request: Compute) -> Result<Value, String> {
        let settings = Settings::from_config(&rapport_sdk::config());
        let record = &request.record;
        match request.function.as_str() {
            "weighted_amount" => Ok(weighted(&settings, record)),
            "responses" => Ok(json!(count_responses(&settings, &record.id)?)),
            "cost_per_response" => {
                let responses = match record
                    .get(&settings.responses_field)
                    .and_then(Value::as_u64)
                {
                    Some(stored) => stored,
                    None => count_responses(&settings, &record.id)?,
                };
                Ok(per_response(&settings, record, responses))
            }
            other => Err(format!(
                "no function `{other}`: use weighted_amount, responses or cost_per_response"
            )),
        }
    }
}

rapport_sdk::plugin!(SalesMetrics);

#[cfg(test)]
mod tests {
    use super::*;

    fn record(data: Value) -> Record {
        Record {
            entity: "opportunity".into(),
            id: "o1".into(),
            version: 1,
            data: data.as_object().unwrap().clone(),
        }
    }

    fn defaults() -> Settings {
        Settings::from_config(&Map::new())
    }

    #[test]
    fn the_weighted_amount_is_the_amount_times_the_probability() {
        let settings = defaults();
        let opportunity =
            record(json!({"amount": {"amount": 12500, "currency": "EUR"}, "probability": 40}));
        assert_eq!(
            weighted(&settings, &opportunity),
            json!({"amount": 5000.0, "currency": "EUR"})
        );
        let unsure = record(json!({"amount": {"amount": 100, "currency": "USD"}}));
        assert_eq!(
            weighted(&settings, &unsure),
            json!({"amount": 0.0, "currency": "USD"})
        );
        let wild =
            record(json!({"amount": {"amount": 100, "currency": "USD"}, "probability": 250}));
        assert_eq!(weighted(&settings, &wild)["amount"], json!(100.0));
        assert_eq!(
            weighted(&settings, &record(json!({"probability": 50}))),
            Value::Null
        );
    }

    #[test]
    fn cost_per_response_uses_the_actual_cost_else_the_budget() {
        let settings = defaults();
        let campaign = record(json!({
            "budget": {"amount": 9000, "currency": "EUR"},
            "actual_cost": {"amount": 7000, "currency": "EUR"}}));
        assert_eq!(
            per_response(&settings, &campaign, 3),
            json!({"amount": 2333.33, "currency": "EUR"})
        );
        let planned = record(json!({"budget": {"amount": 9000, "currency": "EUR"}}));
        assert_eq!(
            per_response(&settings, &planned, 3)["amount"],
            json!(3000.0)
        );
        assert_eq!(per_response(&settings, &planned, 0), Value::Null);
        assert_eq!(per_response(&settings, &record(json!({})), 2), Value::Null);
    }

    #[test]
    fn the_configuration_renames_the_fields() {
        let config = json!({"probability_field": "chance", "cost_fields": ["spent"]});
        let settings = Settings::from_config(config.as_object().unwrap());
        assert_eq!(settings.probability_field, "chance");
        assert_eq!(settings.cost_fields, ["spent"]);
        assert_eq!(settings.amount_field, "amount");
    }
}
