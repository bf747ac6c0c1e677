//! `rfm-score`: how much a customer is worth, from its orders — the recency, frequency and
//! monetary scores (1 to 5 each) and the value tier (key / important / ordinary / small).
//!
//! Computed fields of the customer entity (`account` by default), each naming a function:
//! - `recency`: 1 + how many of `recency_days` (e.g. 365, 180, 90, 30) the days since the last
//!   order are within; 1 without an order in the window.
//! - `frequency`: 1 + how many of `frequency_orders` the number of orders in the window reaches.
//! - `monetary`: 1 + how many of `monetary_amounts` the orders' total in the window reaches.
//! - `value_tier`: from the sum of the three scores in the record (`score_fields`): `key` from
//!   `tiers.key` up, then `important`, `ordinary`, and `small` below.
//!
//! The window is the last `window_days` days (365) before the write. Orders are read through the
//! host, within the manifest's capability (`read order`); cancelled orders do not count.

use purchase_history::{Orders, days_between, numbers, purchases, today};
use rapport_sdk::{Compute, Plugin};
use serde_json::{Map, Value};

pub struct RfmScore;

/// The three scores of a customer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scores {
    pub recency: i64,
    pub frequency: i64,
    pub monetary: i64,
}

/// The tenant's configuration, with the manifest's defaults.
pub struct Settings {
    pub orders: Orders,
    pub window_days: i64,
    pub recency_days: Vec<f64>,
    pub frequency_orders: Vec<f64>,
    pub monetary_amounts: Vec<f64>,
    /// The fields holding the three scores, for `value_tier`.
    pub score_fields: [String; 3],
    /// The lowest score sums of the tiers `key`, `important` and `ordinary`.
    pub tiers: [f64; 3],
}

impl Settings {
    pub fn from_config(config: &Map<String, Value>) -> Self {
        let score_fields = match config.get("score_fields") {
            Some(Value::Array(fields)) if fields.len() == 3 => {
                let name = |index: usize| fields[index].as_str().unwrap_or_default().to_owned();
                [name(0), name(1), name(2)]
            }
            _ => ["rfm_recency", "rfm_frequency", "rfm_monetary"].map(str::to_owned),
        };
        let tiers = config.get("tiers").and_then(Value::as_object);
        let tier = |key: &str, default: f64| {
            tiers
                .and_then(|tiers| tiers.get(key))
                .and_then(Value::as_f64)
                .unwrap_or(default)
        };
        Self {
            orders: Orders::from_config(config),
            window_days: config
                .get("window_days")
                .and_then(Value::as_i64)
                .unwrap_or(365),
            recency_days: numbers(config, "recency_days", &[365.0, 180.0, 90.0, 30.0]),
            frequency_orders: numbers(config, "frequency_orders", &[2.0, 4.0, 8.0, 12.0]),
            monetary_amounts: numbers(
                config,
                "monetary_amounts",
                &[1_000.0, 5_000.0, 20_000.0, 100_000.0],
            ),
            score_fields,
            tiers: [
                tier("key", 13.0),
                tier("important", 10.0),
                tier("ordinary", 6.0),
            ],
        }
    }
}

/// 1 + how many thresholds `value` reaches, at most 5.
pub fn score_reaching(value: f64, thresholds: &[f64]) -> i64 {
    (1 + thresholds.iter().filter(|t| value >= **t).count() as i64).min(5)
}

/// 1 + how many thresholds `value` stays within, at most 5.
pub fn score_within(value: f64, thresholds: &[f64]) -> i64 {
    (1 + thresholds.iter().filter(|t| value <= **t).count() as i64).min(5)
}

/// The scores from the days since the last order (if any in the window), the number of orders
/// and their total in the window.
pub fn scores(
    settings: &Settings,
    days_since_last: Option<i64>,
    count: usize,
    total: f64,
) -> Scores {
    Scores {
        recency: days_since_last
            .map_or(1, |days| score_within(days as f64, &settings.recency_days)),
        frequency: score_reaching(count as f64, &settings.frequency_orders),
        monetary: score_reaching(total, &settings.monetary_amounts),
    }
}

/// The value tier of a sum of scores (3 to 15).
pub fn tier(settings: &Settings, sum: f64) -> &'static str {
    let [key, important, ordinary] = settings.tiers;
    if sum >= key {
        "key"
    } else if sum >= important {
        "important"
    } else if sum >= ordinary {
        "ordinary"
    } else {
        "small"
    }
}

impl Plugin for RfmScore {
    fn compute(request: Compute) -> Result<Value, String> {
        let settings = Settings::from_config(&rapport_sdk::config());
        match request.function.as_str() {
            "value_tier" => {
                let sum: Option<f64> = settings
                    .score_fields
                    .iter()
                    .map(|field| request.record.get_f64(field))
                    .sum();
                Ok(sum.map_or(Value::Null, |sum| tier(&settings, sum).into()))
            }
            function @ ("recency" | "frequency" | "monetary") => {
                let today = today(&request.at)?;
                let since = today - time::Duration::days(settings.window_days.max(0));
                let bought = purchases(&settings.orders, &request.record.id, Some(since))?;
                let days_since_last = bought.last().map(|last| days_between(last.date, today));
                let total = bought.iter().map(|purchase| purchase.amount).sum();
                let scores = scores(&settings, days_since_last, bought.len(), total);
                Ok(match function {
                    "recency" => scores.recency,
                    "frequency" => scores.frequency,
                    _ => scores.monetary,
                }
                .into())
            }
            other => Err(format!(
                "no function `{other}`: use recency, frequency, monetary or value_tier"
            )),
        }
    }
}

rapport_sdk::plugin!(RfmScore);

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Settings {
        Settings::from_config(&Map::new())
    }

    #[test]
    fn a_recent_frequent_big_spender_scores_five_three_times() {
        let settings = defaults();
        let scores = scores(&settings, Some(10), 12, 150_000.0);
        assert_eq!(
            scores,
            Scores {
                recency: 5,
                frequency: 5,
                monetary: 5
            }
        );
        assert_eq!(tier(&settings, 15.0), "key");
    }

    #[test]
    fn no_orders_in_the_window_score_one_and_make_a_small_customer() {
        let settings = defaults();
        let scores = scores(&settings, None, 0, 0.0);
        assert_eq!(
            (scores.recency, scores.frequency, scores.monetary),
            (1, 1, 1)
        );
        assert_eq!(tier(&settings, 3.0), "small");
    }

    #[test]
    fn thresholds_are_inclusive() {
        assert_eq!(score_within(30.0, &[365.0, 180.0, 90.0, 30.0]), 5);
        assert_eq!(score_within(31.0, &[365.0, 180.0, 90.0, 30.0]), 4);
        assert_eq!(score_reaching(1_000.0, &[1_000.0, 5_000.0]), 2);
        assert_eq!(score_reaching(999.0, &[1_000.0, 5_000.0]), 1);
    }

    #[test]
    fn tiers_follow_the_configuration() {
        let config = serde_json::json!({"tiers": {"key": 9, "important": 7, "ordinary": 5}});
        let settings = Settings::from_config(config.as_object().unwrap());
        assert_eq!(tier(&settings, 9.0), "key");
        assert_eq!(tier(&settings, 8.0), "important");
        assert_eq!(tier(&settings, 4.0), "small");
    }
}
