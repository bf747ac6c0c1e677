//! A customer's purchase history, read through the host's `records` interface: the orders that
//! point at the customer, without cancelled ones. Shared by `rfm-score` and `lifecycle-stage`,
//! whose configurations name the order entity and its fields the same way.

use rapport_sdk::records;
use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime};

/// The most orders read per computation (the host caps a query's rows as well).
pub const MAX_ORDERS: u32 = 500;

/// Where orders are and which of their fields matter; every key has a default.
#[derive(Debug, Clone, PartialEq)]
pub struct Orders {
    pub entity: String,
    /// The order's reference to the customer.
    pub customer_field: String,
    /// The order's date (a `date` or `datetime` field).
    pub date_field: String,
    /// The order's amount (a number or a currency field).
    pub amount_field: String,
    pub status_field: String,
    /// Orders in these statuses do not count.
    pub excluded_statuses: Vec<String>,
}

impl Orders {
    /// From a plugin configuration (`order_entity`, `customer_field`, `date_field`,
    /// `amount_field`, `status_field`, `excluded_statuses`).
    pub fn from_config(config: &Map<String, Value>) -> Self {
        let text = |key: &str, default: &str| {
            config
                .get(key)
                .and_then(Value::as_str)
                .unwrap_or(default)
                .to_owned()
        };
        let excluded_statuses = match config.get("excluded_statuses") {
            Some(Value::Array(statuses)) => statuses
                .iter()
                .filter_map(|status| status.as_str().map(str::to_owned))
                .collect(),
            _ => vec!["cancelled".to_owned()],
        };
        Self {
            entity: text("order_entity", "order"),
            customer_field: text("customer_field", "account"),
            date_field: text("date_field", "ordered_on"),
            amount_field: text("amount_field", "amount"),
            status_field: text("status_field", "status"),
            excluded_statuses,
        }
    }
}

/// One counted order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Purchase {
    pub date: Date,
    pub amount: f64,
}

/// The counted orders of `customer` on or after `since` (all when `None`), oldest first. A
/// customer being created (empty id) has none.
pub fn purchases(
    orders: &Orders,
    customer: &str,
    since: Option<Date>,
) -> Result<Vec<Purchase>, String> {
    if customer.is_empty() {
        return Ok(Vec::new());
    }
    if customer.contains('\'') {
        return Err(format!("`{customer}` is not a record id"));
    }
    let mut filter = format!("{} eq '{customer}'", orders.customer_field);
    if let Some(since) = since {
        filter.push_str(&format!(
            " and {} ge '{}'",
            orders.date_field,
            iso_date(since)
        ));
    }
    let found = records::query(&orders.entity, &filter, &orders.date_field, MAX_ORDERS)
        .map_err(|error| format!("cannot read `{}` records: {error:?}", orders.entity))?;
    let mut purchases = Vec::with_capacity(found.len());
    for order in found {
        let status = order.get_str(&orders.status_field).unwrap_or_default();
        if orders.excluded_statuses.iter().any(|s| s == status) {
            continue;
        }
        let Some(date) = order.get_str(&orders.date_field).and_then(parse_date) else {
            continue;
        };
        let amount = order.get_f64(&orders.amount_field).unwrap_or(0.0);
        purchases.push(Purchase { date, amount });
    }
    purchases.sort_by_key(|purchase| purchase.date);
    Ok(purchases)
}

/// The date of a `date` (`2026-11-22`) or `datetime` (RFC 3339) value.
pub fn parse_date(text: &str) -> Option<Date> {
    let day = format_description!("[year]-[month]-[day]");
    Date::parse(text.get(..10)?, day).ok().or_else(|| {
        OffsetDateTime::parse(text, &Rfc3339)
            .ok()
            .map(|at| at.date())
    })
}

/// The date of the write's time (`at`, RFC 3339).
pub fn today(at: &str) -> Result<Date, String> {
    OffsetDateTime::parse(at, &Rfc3339)
        .map(|at| at.date())
        .map_err(|error| format!("bad time `{at}`: {error}"))
}

fn iso_date(date: Date) -> String {
    let day = format_description!("[year]-[month]-[day]");
    date.format(day).unwrap_or_default()
}

/// Whole days from `from` to `to`.
pub fn days_between(from: Date, to: Date) -> i64 {
    (to - from).whole_days()
}

/// Reads a list of numbers from a configuration, or the default.
pub fn numbers(config: &Map<String, Value>, key: &str, default: &[f64]) -> Vec<f64> {
    match config.get(key) {
        Some(Value::Array(values)) => values.iter().filter_map(Value::as_f64).collect(),
        _ => default.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_datetimes_parse_to_their_day() {
        let day = parse_date("2026-11-22").unwrap();
        assert_eq!(parse_date("2026-11-22T23:59:00Z"), Some(day));
        assert_eq!(parse_date("22/11/2026"), None);
        assert_eq!(days_between(parse_date("2026-10-23").unwrap(), day), 30);
    }

    #[test]
    fn configuration_overrides_the_defaults() {
        let config = serde_json::json!({"order_entity": "sale", "excluded_statuses": []});
        let orders = Orders::from_config(config.as_object().unwrap());
        assert_eq!(orders.entity, "sale");
        assert_eq!(orders.customer_field, "account");
        assert!(orders.excluded_statuses.is_empty());
    }
}
