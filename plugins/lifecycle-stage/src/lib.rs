//! `lifecycle-stage`: where a customer is in its life with the company, from its purchase
//! history — potential → new → satisfied → retained → loyal.
//!
//! A computed field of the customer entity (`account` by default), function `stage`:
//! - `potential`: no counted order yet;
//! - `new`: one order;
//! - `satisfied`: came back (at least two orders);
//! - `retained`: at least `retained.orders` orders over at least `retained.days` days since the
//!   first, and an order within the last `active_days`;
//! - `loyal`: the same with `loyal.orders` and `loyal.days`.
//!
//! A customer that stopped buying stays `satisfied` at most: retention and loyalty need recent
//! orders. Orders are read through the host (`read order`); cancelled ones do not count.

use purchase_history::{Orders, Purchase, days_between, purchases, today};
use rapport_sdk::{Compute, Plugin};
use serde_json::{Map, Value};
use time::Date;

pub struct LifecycleStage;

/// A stage's requirements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requirement {
    pub orders: usize,
    pub days: i64,
}

/// The tenant's configuration, with the manifest's defaults.
pub struct Settings {
    pub orders: Orders,
    pub active_days: i64,
    pub retained: Requirement,
    pub loyal: Requirement,
}

impl Settings {
    pub fn from_config(config: &Map<String, Value>) -> Self {
        let requirement = |key: &str, orders: usize, days: i64| {
            let object = config.get(key).and_then(Value::as_object);
            let number = |field: &str| object.and_then(|o| o.get(field)).and_then(Value::as_i64);
            Requirement {
                orders: number("orders").map_or(orders, |n| n.max(0) as usize),
                days: number("days").unwrap_or(days),
            }
        };
        Self {
            orders: Orders::from_config(config),
            active_days: config
                .get("active_days")
                .and_then(Value::as_i64)
                .unwrap_or(365),
            retained: requirement("retained", 3, 365),
            loyal: requirement("loyal", 6, 730),
        }
    }
}

/// The stage of a customer with these counted orders (oldest first), as of `today`.
pub fn stage(settings: &Settings, purchases: &[Purchase], today: Date) -> &'static str {
    let (Some(first), Some(last)) = (purchases.first(), purchases.last()) else {
        return "potential";
    };
    let count = purchases.len();
    let tenure = days_between(first.date, today);
    let active = days_between(last.date, today) <= settings.active_days;
    let meets = |requirement: Requirement| {
        active && count >= requirement.orders && tenure >= requirement.days
    };
    if meets(settings.loyal) {
        "loyal"
    } else if meets(settings.retained) {
        "retained"
    } else if count >= 2 {
        "satisfied"
    } else {
        "new"
    }
}

impl Plugin for LifecycleStage {
    fn compute(request: Compute) -> Result<Value, String> {
        if request.function != "stage" {
            return Err(format!("no function `{}`: use stage", request.function));
        }
        let settings = Settings::from_config(&rapport_sdk::config());
        let today = today(&request.at)?;
        let bought = purchases(&settings.orders, &request.record.id, None)?;
        Ok(stage(&settings, &bought, today).into())
    }
}

rapport_sdk::plugin!(LifecycleStage);

#[cfg(test)]
mod tests {
    use super::*;
    use purchase_history::parse_date;

    fn history(dates: &[&str]) -> Vec<Purchase> {
        dates
            .iter()
            .map(|date| Purchase {
                date: parse_date(date).unwrap(),
                amount: 100.0,
            })
            .collect()
    }

    fn stage_on(dates: &[&str], today: &str) -> &'static str {
        let settings = Settings::from_config(&Map::new());
        stage(&settings, &history(dates), parse_date(today).unwrap())
    }

    #[test]
    fn the_stages_follow_the_purchase_history() {
        let today = "2026-11-22";
        assert_eq!(stage_on(&[], today), "potential");
        assert_eq!(stage_on(&["2026-11-01"], today), "new");
        assert_eq!(stage_on(&["2026-10-01", "2026-11-01"], today), "satisfied");
        assert_eq!(
            stage_on(&["2025-06-01", "2026-01-10", "2026-11-01"], today),
            "retained"
        );
        let loyal = [
            "2024-01-01",
            "2024-06-01",
            "2025-01-01",
            "2025-06-01",
            "2026-01-01",
            "2026-10-01",
        ];
        assert_eq!(stage_on(&loyal, today), "loyal");
    }

    #[test]
    fn a_customer_who_stopped_buying_is_not_retained() {
        let lapsed = ["2022-01-01", "2022-06-01", "2023-01-01", "2023-06-01"];
        assert_eq!(stage_on(&lapsed, "2026-11-22"), "satisfied");
    }
}
