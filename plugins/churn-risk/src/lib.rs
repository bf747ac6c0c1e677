//! `churn-risk`: how likely a customer is to leave, from 0 (safe) to 100 (leaving), as the
//! weighted mean of three signals, each from 0 to 1:
//! - **recency**: the days since the customer's last order over `recency_horizon_days` (365),
//!   capped at 1; 1 when it never ordered;
//! - **complaints**: its complaints (cases matching `complaint_filter`) of the last
//!   `complaint_window_days` over `complaints_for_full_risk` (3), capped at 1;
//! - **trend**: how much its spending of the last `trend_days` (180) fell against the
//!   `trend_days` before (0 when it grew or held; 0 for a customer with no spending in either).
//!
//! Weights default to 0.5, 0.25 and 0.25. Orders and cases are read through the host, within the
//! manifest's capabilities (`read order, case`).

use purchase_history::{Orders, days_between, purchases, today};
use rapport_sdk::records;
use rapport_sdk::{Compute, Plugin};
use serde_json::{Map, Value};
use time::Date;

pub struct ChurnRisk;

/// The most complaints read per customer.
const MAX_COMPLAINTS: u32 = 100;

/// The tenant's configuration, with the manifest's defaults.
pub struct Settings {
    pub orders: Orders,
    pub case_entity: String,
    pub case_customer_field: String,
    pub complaint_filter: String,
    pub case_date_field: String,
    pub recency_horizon_days: f64,
    pub complaint_window_days: i64,
    pub complaints_for_full_risk: f64,
    pub trend_days: i64,
    /// Recency, complaints, trend.
    pub weights: [f64; 3],
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
        let int =
            |key: &str, default: i64| config.get(key).and_then(Value::as_i64).unwrap_or(default);
        let weights = config.get("weights").and_then(Value::as_object);
        let weight = |key: &str, default: f64| {
            weights
                .and_then(|weights| weights.get(key))
                .and_then(Value::as_f64)
                .unwrap_or(default)
        };
        Self {
            orders: Orders::from_config(config),
            case_entity: text("case_entity", "case"),
            case_customer_field: text("case_customer_field", "account"),
            complaint_filter: text("complaint_filter", "type eq 'complaint'"),
            case_date_field: text("case_date_field", "_created_at"),
            recency_horizon_days: int("recency_horizon_days", 365).max(1) as f64,
            complaint_window_days: int("complaint_window_days", 365).max(1),
            complaints_for_full_risk: int("complaints_for_full_risk", 3).max(1) as f64,
            trend_days: int("trend_days", 180).max(1),
            weights: [
                weight("recency", 0.5),
                weight("complaints", 0.25),
                weight("trend", 0.25),
            ],
        }
    }
}

/// What the score is computed from.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Signals {
    /// Days since the last order; `None` when there is none.
    pub days_since_last: Option<i64>,
    pub complaints: usize,
    /// Spending in the last `trend_days`, and in the `trend_days` before.
    pub recent: f64,
    pub previous: f64,
}

/// The churn risk, 0 to 100.
pub fn risk(settings: &Settings, signals: &Signals) -> i64 {
    let recency = signals.days_since_last.map_or(1.0, |days| {
        (days.max(0) as f64 / settings.recency_horizon_days).min(1.0)
    });
    let complaints = (signals.complaints as f64 / settings.complaints_for_full_risk).min(1.0);
    let trend = if signals.previous > 0.0 {
        ((signals.previous - signals.recent) / signals.previous).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let [w_recency, w_complaints, w_trend] = settings.weights;
    let total = w_recency + w_complaints + w_trend;
    if total <= 0.0 {
        return 0;
    }
    let score = (w_recency * recency + w_complaints * complaints + w_trend * trend) / total;
    (score * 100.0).round() as i64
}

fn iso(date: Date) -> String {
    format!(
        "{:04}-{:02}-{:02}",
        date.year(),
        u8::from(date.month()),
        date.day()
    )
}

/// The customer's complaints since `since`.
fn complaints(settings: &Settings, customer: &str, since: Date) -> Result<usize, String> {
    let mut filter = format!(
        "{} eq {} and {} ge '{}'",
        settings.case_customer_field,
        records::quote(customer),
        settings.case_date_field,
        if settings.case_date_field.starts_with('_') {
            format!("{}T00:00:00Z", iso(since))
        } else {
            iso(since)
        }
    );
    if !settings.complaint_filter.trim().is_empty() {
        filter = format!("({filter}) and ({})", settings.complaint_filter);
    }
    records::query(&settings.case_entity, &filter, "", MAX_COMPLAINTS)
        .map(|found| found.len())
        .map_err(|error| format!("cannot read `{}` records: {error:?}", settings.case_entity))
}

impl Plugin for ChurnRisk {
    fn compute(request: Compute) -> Result<Value, String> {
        if request.function != "churn_risk" {
            return Err(format!(
                "no function `{}`: use churn_risk",
                request.function
            ));
        }
        let settings = Settings::from_config(&rapport_sdk::config());
        let customer = request.record.id.clone();
        if customer.is_empty() {
            // A customer being created has no orders or cases yet.
            return Ok(risk(
                &settings,
                &Signals {
                    days_since_last: None,
                    complaints: 0,
                    recent: 0.0,
                    previous: 0.0,
                },
            )
            .into());
        }
        let today = today(&request.at)?;
        let bought = purchases(&settings.orders, &customer, None)?;
        let days_since_last = bought.last().map(|last| days_between(last.date, today));
        let recent_from = today - time::Duration::days(settings.trend_days);
        let previous_from = recent_from - time::Duration::days(settings.trend_days);
        let sum = |from: Date, to: Date| -> f64 {
            bought
                .iter()
                .filter(|purchase| purchase.date > from && purchase.date <= to)
                .map(|purchase| purchase.amount)
                .sum()
        };
        let signals = Signals {
            days_since_last,
            complaints: complaints(
                &settings,
                &customer,
                today - time::Duration::days(settings.complaint_window_days),
            )?,
            recent: sum(recent_from, today),
            previous: sum(previous_from, recent_from),
        };
        Ok(risk(&settings, &signals).into())
    }
}

rapport_sdk::plugin!(ChurnRisk);

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Settings {
        Settings::from_config(&Map::new())
    }

    #[test]
    fn a_customer_who_never_ordered_is_half_way_to_leaving() {
        let none = Signals {
            days_since_last: None,
            complaints: 0,
            recent: 0.0,
            previous: 0.0,
        };
        assert_eq!(risk(&defaults(), &none), 50);
    }

    #[test]
    fn a_loyal_growing_customer_is_safe() {
        let loyal = Signals {
            days_since_last: Some(0),
            complaints: 0,
            recent: 900.0,
            previous: 500.0,
        };
        assert_eq!(risk(&defaults(), &loyal), 0);
    }

    #[test]
    fn silence_complaints_and_falling_spending_add_up() {
        let leaving = Signals {
            days_since_last: Some(400),
            complaints: 5,
            recent: 0.0,
            previous: 1000.0,
        };
        assert_eq!(risk(&defaults(), &leaving), 100);
        // Half a year of silence (0.5 × 0.5), one complaint (1/3 × 0.25), spending halved (0.5 × 0.25).
        let cooling = Signals {
            days_since_last: Some(182),
            complaints: 1,
            recent: 500.0,
            previous: 1000.0,
        };
        assert_eq!(risk(&defaults(), &cooling), 46);
    }

    #[test]
    fn weights_follow_the_configuration() {
        let config = serde_json::json!({"weights": {"recency": 0, "complaints": 1, "trend": 0}});
        let settings = Settings::from_config(config.as_object().unwrap());
        let one = Signals {
            days_since_last: None,
            complaints: 1,
            recent: 0.0,
            previous: 0.0,
        };
        assert_eq!(risk(&settings, &one), 33);
    }
}
