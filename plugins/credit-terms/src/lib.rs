//! `credit-terms`: what a customer's size and payment record mean for how the company trades
//! with it (from the source documents' credit-management example).
//!
//! | size | payment record | discount | payment terms | credit status |
//! |---|---|---|---|---|
//! | big | good | `discount_big_good` (10%) | net 60 | `ok` |
//! | big | poor | none | net 30, strict | `strict` |
//! | small | good | `discount_small_good` (5%) | net 30 | `ok` |
//! | small | poor | none | prepayment | `stop`: orders refused |
//!
//! A `before` hook on accounts writes `discount_pct`, `payment_terms` and `credit_status`; a
//! validator on orders refuses a new order whose account is stopped; the workflow step `terms`
//! answers the table for any size and payment record.

use rapport_sdk::{Event, FieldError, Outcome, Plugin, json, records};
use serde_json::{Map, Value};

pub struct CreditTerms;

/// The terms of one combination of size and payment record.
#[derive(Debug, Clone, PartialEq)]
pub struct Terms {
    pub discount_pct: f64,
    pub payment_terms: &'static str,
    pub credit_status: &'static str,
}

/// The decision table.
pub fn terms(big: bool, good: bool, discount_big_good: f64, discount_small_good: f64) -> Terms {
    match (big, good) {
        (true, true) => Terms {
            discount_pct: discount_big_good,
            payment_terms: "net 60",
            credit_status: "ok",
        },
        (true, false) => Terms {
            discount_pct: 0.0,
            payment_terms: "net 30, strict",
            credit_status: "strict",
        },
        (false, true) => Terms {
            discount_pct: discount_small_good,
            payment_terms: "net 30",
            credit_status: "ok",
        },
        (false, false) => Terms {
            discount_pct: 0.0,
            payment_terms: "prepayment",
            credit_status: "stop",
        },
    }
}

struct Settings(Map<String, Value>);

impl Settings {
    fn load() -> Self {
        Self(rapport_sdk::config())
    }

    fn text(&self, key: &str, default: &str) -> String {
        self.0
            .get(key)
            .and_then(Value::as_str)
            .unwrap_or(default)
            .to_owned()
    }

    fn list(&self, key: &str, default: &[&str]) -> Vec<String> {
        match self.0.get(key).and_then(Value::as_array) {
            Some(items) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            None => default.iter().map(|item| (*item).to_owned()).collect(),
        }
    }

    fn number(&self, key: &str, default: f64) -> f64 {
        self.0.get(key).and_then(Value::as_f64).unwrap_or(default)
    }
}

impl Plugin for CreditTerms {
    fn hook(event: Event) -> Result<Outcome, String> {
        let settings = Settings::load();
        let size_field = settings.text("size_field", "size");
        let payment_field = settings.text("payment_field", "payment_record");
        if event.previous.is_some() && !event.changes(&size_field) && !event.changes(&payment_field)
        {
            return Ok(Outcome::Proceed);
        }
        let (Some(size), Some(payment)) = (
            event.record.get_str(&size_field),
            event.record.get_str(&payment_field),
        ) else {
            // Without both facts there is nothing to decide yet.
            return Ok(Outcome::Proceed);
        };
        let big = settings
            .list("big_sizes", &["large", "enterprise"])
            .iter()
            .any(|value| value == size);
        let good = settings
            .list("good_payment", &["good", "excellent"])
            .iter()
            .any(|value| value == payment);
        let terms = terms(
            big,
            good,
            settings.number("discount_big_good", 10.0),
            settings.number("discount_small_good", 5.0),
        );
        Ok(Outcome::patch(json!({
            "discount_pct": terms.discount_pct,
            "payment_terms": terms.payment_terms,
            "credit_status": terms.credit_status,
        })))
    }

    /// The workflow step `terms`: the decision table for `{size, payment_record}`, with the
    /// tenant's configuration, for workflows that set terms on other records.
    fn run_step(step: &str, input: Value) -> Result<Value, String> {
        if step != "terms" {
            return Err(format!("credit-terms has no workflow step `{step}`"));
        }
        let settings = Settings::load();
        let text = |key: &str| {
            input
                .get(key)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("`{key}` must be a string"))
        };
        let (size, payment) = (text("size")?, text("payment_record")?);
        let big = settings
            .list("big_sizes", &["large", "enterprise"])
            .iter()
            .any(|value| value == size);
        let good = settings
            .list("good_payment", &["good", "excellent"])
            .iter()
            .any(|value| value == payment);
        let terms = terms(
            big,
            good,
            settings.number("discount_big_good", 10.0),
            settings.number("discount_small_good", 5.0),
        );
        Ok(json!({
            "discount_pct": terms.discount_pct,
            "payment_terms": terms.payment_terms,
            "credit_status": terms.credit_status,
        }))
    }

    fn validate(event: Event) -> Vec<FieldError> {
        let settings = Settings::load();
        let field = settings.text("order_account_field", "account");
        let Some(account_id) = event.record.get_str(&field) else {
            return Vec::new();
        };
        match records::get("account", account_id) {
            Ok(Some(account)) if account.get_str("credit_status") == Some("stop") => {
                vec![FieldError::new(
                    field,
                    "trading with this account is stopped (small customer with a poor payment record): settle the account first",
                )]
            }
            Ok(_) => Vec::new(),
            Err(error) => vec![FieldError::new(
                field,
                format!("cannot check the account's credit: {error:?}"),
            )],
        }
    }
}

rapport_sdk::plugin!(CreditTerms);

#[cfg(test)]
mod tests {
    use super::terms;

    #[test]
    fn the_four_combinations_of_the_documents() {
        assert_eq!(terms(true, true, 10.0, 5.0).discount_pct, 10.0);
        assert_eq!(terms(true, false, 10.0, 5.0).credit_status, "strict");
        assert_eq!(terms(false, true, 10.0, 5.0).discount_pct, 5.0);
        let stopped = terms(false, false, 10.0, 5.0);
        assert_eq!(stopped.credit_status, "stop");
        assert_eq!(stopped.payment_terms, "prepayment");
    }
}
