//! `exhibition-results`: how an exhibition did, measured (the source documents want results
//! measured, "not a pile of business cards"), as computed fields of the exhibition that roll up
//! its booths, registrations, exhibitors and sessions:
//!
//! | function | returns | what |
//! |---|---|---|
//! | `booths_sold` | integer | booths in status `sold` |
//! | `booth_revenue` | currency | the prices of the sold booths, in the currency of the budget (else of the first sold booth, else `default_currency`); booths priced in another currency are left out, with a warning |
//! | `revenue_vs_budget` | decimal | `booth_revenue` as a percentage of `budget` (one decimal); empty without a budget or in another currency |
//! | `session_costs` | currency | the actual costs of its sessions (ceremonies, seminars, press events, banquets) |
//! | `visitors` | integer | its visitor registrations (only checked-in ones with `visitors_checked_in_only`) |
//! | `visitors_per_exhibitor` | decimal | `visitors` over its exhibitors that are not cancelled or declined (two decimals) |
//!
//! Each reads the related records through the host (`read booth, registration, exhibitor,
//! session`), page by page. The host has no count query yet, so a count reads the records: an
//! invocation may read 10,000 rows, and past `max_rows` a count stops with a warning (a lower
//! bound).

use rapport_sdk::records::quote;
use rapport_sdk::{Compute, Plugin, Record, records};
use serde_json::{Map, Value, json};

pub struct ExhibitionResults;

const PAGE: u32 = 1_000;

/// The tenant's configuration, with the manifest's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The exhibition's reference field on booths, registrations, exhibitors and sessions.
    pub exhibition_field: String,
    pub sold_statuses: Vec<String>,
    pub excluded_exhibitor_statuses: Vec<String>,
    pub visitors_checked_in_only: bool,
    pub default_currency: String,
    /// The most related records one count reads.
    pub max_rows: usize,
}

impl Settings {
    pub fn from_config(config: &Map<String, Value>) -> Self {
        let list = |key: &str, default: &[&str]| match config.get(key).and_then(Value::as_array) {
            Some(items) => items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            None => default.iter().map(|item| (*item).to_owned()).collect(),
        };
        Self {
            exhibition_field: config
                .get("exhibition_field")
                .and_then(Value::as_str)
                .unwrap_or("exhibition")
                .to_owned(),
            sold_statuses: list("sold_statuses", &["sold"]),
            excluded_exhibitor_statuses: list(
                "excluded_exhibitor_statuses",
                &["cancelled", "declined"],
            ),
            visitors_checked_in_only: config
                .get("visitors_checked_in_only")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            default_currency: config
                .get("default_currency")
                .and_then(Value::as_str)
                .unwrap_or("EUR")
                .to_owned(),
            max_rows: config
                .get("max_rows")
                .and_then(Value::as_u64)
                .map_or(9_000, |max| max as usize),
        }
    }
}

/// A currency value's amount and code.
pub fn money(value: Option<&Value>) -> Option<(f64, &str)> {
    let object = value?.as_object()?;
    let amount = match object.get("amount")? {
        Value::Number(number) => number.as_f64()?,
        Value::String(text) => text.parse().ok()?,
        _ => return None,
    };
    Some((amount, object.get("currency")?.as_str()?))
}

fn round(value: f64, decimals: i32) -> f64 {
    let factor = 10f64.powi(decimals);
    (value * factor).round() / factor
}

/// The total of `amounts` in one currency: `preferred` (the budget's) if given, else the first
/// amount's, else `fallback`. Returns the total, its currency and how many amounts were left
/// out for being in another currency.
pub fn total<'a>(
    amounts: impl IntoIterator<Item = (f64, &'a str)>,
    preferred: Option<&str>,
    fallback: &str,
) -> (f64, String, usize) {
    let mut currency: Option<String> = preferred.map(str::to_owned);
    let mut sum = 0.0;
    let mut left_out = 0;
    for (amount, code) in amounts {
        let chosen = currency.get_or_insert_with(|| code.to_owned());
        if chosen == code {
            sum += amount;
        } else {
            left_out += 1;
        }
    }
    (
        round(sum, 2),
        currency.unwrap_or_else(|| fallback.to_owned()),
        left_out,
    )
}

/// `revenue` as a percentage of `budget` (one decimal); `None` without a positive budget in the
/// same currency.
pub fn percent_of(revenue: Option<(f64, &str)>, budget: Option<(f64, &str)>) -> Option<f64> {
    let (revenue, revenue_currency) = revenue?;
    let (budget, budget_currency) = budget?;
    (budget > 0.0 && revenue_currency == budget_currency)
        .then(|| round(revenue / budget * 100.0, 1))
}

/// Visitors per exhibitor (two decimals); `None` without exhibitors.
pub fn per_exhibitor(visitors: f64, exhibitors: usize) -> Option<f64> {
    (exhibitors > 0).then(|| round(visitors / exhibitors as f64, 2))
}

fn currency_value(amount: f64, currency: &str) -> Value {
    json!({"amount": amount, "currency": currency})
}

/// The records of `entity` pointing at `exhibition` and matching `extra` (if any), at most
/// `settings.max_rows`, page by page.
fn related(
    settings: &Settings,
    entity: &str,
    exhibition: &str,
    extra: Option<&str>,
) -> Result<Vec<Record>, String> {
    let mut filter = format!("{} eq {}", settings.exhibition_field, quote(exhibition));
    if let Some(extra) = extra {
        filter = format!("{filter} and ({extra})");
    }
    // One more than the cap, to tell a full result from a cut one.
    let mut found = records::query_all(entity, &filter, PAGE, settings.max_rows + 1)
        .map_err(|error| format!("cannot read `{entity}` records: {error:?}"))?;
    if found.len() > settings.max_rows {
        found.truncate(settings.max_rows);
        rapport_sdk::log::warn(&format!(
            "more than {} `{entity}` records: the result counts the first {} only",
            settings.max_rows, settings.max_rows
        ));
    }
    Ok(found)
}

fn in_list(values: &[String]) -> String {
    values
        .iter()
        .map(|value| quote(value))
        .collect::<Vec<_>>()
        .join(", ")
}

fn sold_booths(settings: &Settings, exhibition: &str) -> Result<Vec<Record>, String> {
    if settings.sold_statuses.is_empty() {
        return Ok(Vec::new());
    }
    let extra = format!("status in ({})", in_list(&settings.sold_statuses));
    related(settings, "booth", exhibition, Some(&extra))
}

fn visitors(settings: &Settings, exhibition: &str) -> Result<usize, String> {
    let extra = settings
        .visitors_checked_in_only
        .then_some("checked_in eq true");
    Ok(related(settings, "registration", exhibition, extra)?.len())
}

fn booth_revenue(settings: &Settings, exhibition: &Record) -> Result<(f64, String, usize), String> {
    let booths = sold_booths(settings, &exhibition.id)?;
    let budget_currency = money(exhibition.get("budget")).map(|(_, currency)| currency);
    let result = total(
        booths.iter().filter_map(|booth| money(booth.get("price"))),
        budget_currency,
        &settings.default_currency,
    );
    Ok(result)
}

impl Plugin for ExhibitionResults {
    fn compute(request: Compute) -> Result<Value, String> {
        let settings = Settings::from_config(&rapport_sdk::config());
        let exhibition = &request.record;
        // An exhibition being created has nothing pointing at it yet.
        let new = exhibition.id.is_empty();
        match request.function.as_str() {
            "booths_sold" => {
                if new {
                    return Ok(json!(0));
                }
                Ok(json!(sold_booths(&settings, &exhibition.id)?.len()))
            }
            "booth_revenue" => {
                let budget_currency = money(exhibition.get("budget")).map(|(_, c)| c.to_owned());
                if new {
                    let currency = budget_currency.unwrap_or(settings.default_currency);
                    return Ok(currency_value(0.0, &currency));
                }
                let (sum, currency, left_out) = booth_revenue(&settings, exhibition)?;
                if left_out > 0 {
                    rapport_sdk::log::warn(&format!(
                        "{left_out} sold booths are priced in another currency than {currency} and are left out"
                    ));
                }
                Ok(currency_value(sum, &currency))
            }
            "revenue_vs_budget" => {
                // From the stored revenue when it is a computed field of the record (computed
                // first: list it in `depends_on`), else from the booths.
                let revenue = match money(exhibition.get("booth_revenue")) {
                    Some((amount, currency)) => Some((amount, currency.to_owned())),
                    None if new => None,
                    None => {
                        let (sum, currency, _) = booth_revenue(&settings, exhibition)?;
                        Some((sum, currency))
                    }
                };
                let percent = percent_of(
                    revenue
                        .as_ref()
                        .map(|(amount, currency)| (*amount, currency.as_str())),
                    money(exhibition.get("budget")),
                );
                Ok(percent.map_or(Value::Null, |percent| json!(percent)))
            }
            "session_costs" => {
                let budget_currency = money(exhibition.get("budget")).map(|(_, c)| c.to_owned());
                if new {
                    let currency = budget_currency.unwrap_or(settings.default_currency);
                    return Ok(currency_value(0.0, &currency));
                }
                let sessions = related(&settings, "session", &exhibition.id, None)?;
                let (sum, currency, left_out) = total(
                    sessions
                        .iter()
                        .filter_map(|session| money(session.get("actual_cost"))),
                    budget_currency.as_deref(),
                    &settings.default_currency,
                );
                if left_out > 0 {
                    rapport_sdk::log::warn(&format!(
                        "{left_out} sessions cost in another currency than {currency} and are left out"
                    ));
                }
                Ok(currency_value(sum, &currency))
            }
            "visitors" => {
                if new {
                    return Ok(json!(0));
                }
                Ok(json!(visitors(&settings, &exhibition.id)?))
            }
            "visitors_per_exhibitor" => {
                if new {
                    return Ok(Value::Null);
                }
                let visitors = match exhibition.get_f64("visitors") {
                    Some(visitors) => visitors,
                    None => visitors(&settings, &exhibition.id)? as f64,
                };
                let excluded = &settings.excluded_exhibitor_statuses;
                let exhibitors = related(&settings, "exhibitor", &exhibition.id, None)?
                    .iter()
                    .filter(|exhibitor| {
                        let status = exhibitor.get_str("status").unwrap_or_default();
                        !excluded.iter().any(|skip| skip == status)
                    })
                    .count();
                Ok(per_exhibitor(visitors, exhibitors).map_or(Value::Null, |value| json!(value)))
            }
            other => Err(format!(
                "no function `{other}`: use booths_sold, booth_revenue, revenue_vs_budget, session_costs, visitors or visitors_per_exhibitor"
            )),
        }
    }
}

rapport_sdk::plugin!(ExhibitionResults);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_are_read_from_currency_values() {
        assert_eq!(
            money(Some(&json!({"amount": 1200.5, "currency": "EUR"}))),
            Some((1200.5, "EUR"))
        );
        assert_eq!(
            money(Some(&json!({"amount": "99.90", "currency": "CNY"}))),
            Some((99.9, "CNY"))
        );
        assert_eq!(money(Some(&json!(12))), None);
        assert_eq!(money(None), None);
    }

    #[test]
    fn the_total_is_in_the_budgets_currency() {
        let amounts = [(1000.0, "EUR"), (250.25, "EUR"), (900.0, "USD")];
        assert_eq!(
            total(amounts, Some("EUR"), "CNY"),
            (1250.25, "EUR".to_owned(), 1)
        );
        // Without a budget: the first amount's currency.
        assert_eq!(total(amounts, None, "CNY"), (1250.25, "EUR".to_owned(), 1));
        // Nothing sold: zero in the budget's currency, else the default.
        assert_eq!(total([], Some("USD"), "CNY"), (0.0, "USD".to_owned(), 0));
        assert_eq!(total([], None, "CNY"), (0.0, "CNY".to_owned(), 0));
    }

    #[test]
    fn revenue_against_budget_is_a_percentage() {
        assert_eq!(
            percent_of(Some((45_000.0, "EUR")), Some((60_000.0, "EUR"))),
            Some(75.0)
        );
        assert_eq!(
            percent_of(Some((1.0, "EUR")), Some((3.0, "EUR"))),
            Some(33.3)
        );
        assert_eq!(percent_of(Some((1.0, "EUR")), Some((3.0, "USD"))), None);
        assert_eq!(percent_of(Some((1.0, "EUR")), Some((0.0, "EUR"))), None);
        assert_eq!(percent_of(Some((1.0, "EUR")), None), None);
        assert_eq!(percent_of(None, Some((1.0, "EUR"))), None);
    }

    #[test]
    fn visitors_per_exhibitor_has_two_decimals() {
        assert_eq!(per_exhibitor(10.0, 3), Some(3.33));
        assert_eq!(per_exhibitor(0.0, 4), Some(0.0));
        assert_eq!(per_exhibitor(10.0, 0), None);
    }

    #[test]
    fn the_configuration_has_defaults() {
        let settings = Settings::from_config(&Map::new());
        assert_eq!(settings.sold_statuses, vec!["sold".to_owned()]);
        assert_eq!(settings.default_currency, "EUR");
        assert!(!settings.visitors_checked_in_only);
        let config = json!({"visitors_checked_in_only": true, "sold_statuses": ["sold", "paid"]});
        let settings = Settings::from_config(config.as_object().unwrap());
        assert!(settings.visitors_checked_in_only);
        assert_eq!(settings.sold_statuses.len(), 2);
        assert_eq!(in_list(&settings.sold_statuses), "'sold', 'paid'");
    }
}
