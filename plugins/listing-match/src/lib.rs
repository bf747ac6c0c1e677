//! `listing-match`: which buyers a property listing suits (real estate, one of the
//! customer-intensive industries the source documents expect to adopt CRM first).
//!
//! The workflow step `match` takes a listing, reads its property and the buyers' requirements,
//! and finds the requirements the listing meets. Each criterion a requirement states must hold:
//!
//! | criterion | holds when |
//! |---|---|
//! | `district` | the listing's district is the same (ignoring case and surrounding spaces) |
//! | `property_type` | the property's type is the same |
//! | `min_area` | the listing's area is at least that |
//! | `min_rooms` | the listing has at least that many rooms |
//! | `max_price` | the price is at most that, in the same currency (the buyer's `budget_max` when the requirement states none) |
//!
//! A value the listing lacks fails a criterion that needs it. The **score** (0-100) weighs the
//! criteria — district 30, type 20, price 25, area 15, rooms 10 — a stated criterion that holds
//! counts in full, one the buyer left open counts half: 100 is a buyer who stated everything and
//! gets it, a buyer who stated nothing scores 50.
//!
//! One `listing_match` is created per buyer (the best of its requirements), skipping buyers who
//! are not in an active status and buyers already matched to the listing. The output is
//! `{count, buyers, matches, summary, already_matched, more}`: a workflow branches on
//! `steps.<id>.count gt 0`.

use std::collections::{BTreeMap, BTreeSet};

use rapport_sdk::records::quote;
use rapport_sdk::{Plugin, Record, json, records};
use serde_json::{Map, Value};

pub struct ListingMatch;

const PAGE: u32 = 1_000;
const IDS_PER_QUERY: usize = 200;
/// An invocation may make 100 writes.
const MAX_MATCHES: usize = 100;

/// The weights of the criteria; they add up to 100.
pub const WEIGHTS: Weights = Weights {
    district: 30.0,
    property_type: 20.0,
    price: 25.0,
    area: 15.0,
    rooms: 10.0,
};

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Weights {
    pub district: f64,
    pub property_type: f64,
    pub price: f64,
    pub area: f64,
    pub rooms: f64,
}

/// What a listing offers.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Offer {
    pub district: Option<String>,
    pub property_type: Option<String>,
    pub area: Option<f64>,
    pub rooms: Option<f64>,
    pub price: Option<(f64, String)>,
}

/// What a buyer asks for.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Wish {
    pub district: Option<String>,
    pub property_type: Option<String>,
    pub min_area: Option<f64>,
    pub min_rooms: Option<f64>,
    pub max_price: Option<(f64, String)>,
}

fn text(data: &Map<String, Value>, field: &str) -> Option<String> {
    data.get(field)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|text| !text.is_empty())
        .map(str::to_owned)
}

fn number(data: &Map<String, Value>, field: &str) -> Option<f64> {
    match data.get(field)? {
        Value::Number(number) => number.as_f64(),
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

fn money(data: &Map<String, Value>, field: &str) -> Option<(f64, String)> {
    let object = data.get(field)?.as_object()?;
    let amount = match object.get("amount")? {
        Value::Number(number) => number.as_f64()?,
        Value::String(text) => text.trim().parse().ok()?,
        _ => return None,
    };
    Some((amount, object.get("currency")?.as_str()?.to_owned()))
}

impl Offer {
    /// From a listing, with its property's values where the listing has none (the type is the
    /// property's).
    pub fn from_records(
        listing: &Map<String, Value>,
        property: Option<&Map<String, Value>>,
    ) -> Self {
        let either_text = |field: &str| {
            text(listing, field).or_else(|| property.and_then(|property| text(property, field)))
        };
        let either_number = |field: &str| {
            number(listing, field).or_else(|| property.and_then(|property| number(property, field)))
        };
        Self {
            district: either_text("district"),
            property_type: either_text("property_type"),
            area: either_number("area"),
            rooms: either_number("rooms"),
            price: money(listing, "price"),
        }
    }
}

impl Wish {
    /// From a requirement; `budget_max` (the buyer's) stands in for a missing `max_price`.
    pub fn from_records(
        requirement: &Map<String, Value>,
        buyer: Option<&Map<String, Value>>,
    ) -> Self {
        Self {
            district: text(requirement, "district"),
            property_type: text(requirement, "property_type"),
            min_area: number(requirement, "min_area"),
            min_rooms: number(requirement, "min_rooms"),
            max_price: money(requirement, "max_price")
                .or_else(|| buyer.and_then(|buyer| money(buyer, "budget_max"))),
        }
    }
}

/// One criterion: `None` when stated and not met (or not known), else its share of the weight.
fn criterion(stated: bool, met: bool) -> Option<f64> {
    match (stated, met) {
        (false, _) => Some(0.5),
        (true, true) => Some(1.0),
        (true, false) => None,
    }
}

/// The score (0-100) of a listing for a wish, `None` when the listing does not meet it.
pub fn score(offer: &Offer, wish: &Wish) -> Option<u32> {
    let same = |a: &Option<String>, b: &Option<String>| match (a, b) {
        (Some(a), Some(b)) => a.to_lowercase() == b.to_lowercase(),
        _ => false,
    };
    let at_least = |have: Option<f64>, want: Option<f64>| match (have, want) {
        (Some(have), Some(want)) => have >= want,
        _ => false,
    };
    let price_ok = match (&offer.price, &wish.max_price) {
        (Some((price, currency)), Some((max, max_currency))) => {
            currency == max_currency && price <= max
        }
        _ => false,
    };
    let parts = [
        (
            WEIGHTS.district,
            criterion(
                wish.district.is_some(),
                same(&offer.district, &wish.district),
            )?,
        ),
        (
            WEIGHTS.property_type,
            criterion(
                wish.property_type.is_some(),
                same(&offer.property_type, &wish.property_type),
            )?,
        ),
        (
            WEIGHTS.price,
            criterion(wish.max_price.is_some(), price_ok)?,
        ),
        (
            WEIGHTS.area,
            criterion(wish.min_area.is_some(), at_least(offer.area, wish.min_area))?,
        ),
        (
            WEIGHTS.rooms,
            criterion(
                wish.min_rooms.is_some(),
                at_least(offer.rooms, wish.min_rooms),
            )?,
        ),
    ];
    let total: f64 = parts.iter().map(|(weight, share)| weight * share).sum();
    Some(total.round() as u32)
}

/// A filter that narrows the requirements to those whose minimums the listing may meet (the
/// rest is checked by [`score`]).
pub fn requirement_filter(offer: &Offer) -> String {
    let minimum = |field: &str, have: Option<f64>| match have {
        Some(have) => format!("({field} is null or {field} le {have})"),
        None => format!("{field} is null"),
    };
    format!(
        "{} and {}",
        minimum("min_area", offer.area),
        minimum("min_rooms", offer.rooms)
    )
}

/// A new match: the buyer, its best requirement and the score.
#[derive(Debug, Clone, PartialEq)]
pub struct Found {
    pub buyer: String,
    pub requirement: String,
    pub score: u32,
}

/// The best match per buyer, best first (ties by buyer id), without `already` matched buyers.
pub fn best_per_buyer(
    candidates: impl IntoIterator<Item = Found>,
    already: &BTreeSet<String>,
) -> Vec<Found> {
    let mut best: BTreeMap<String, Found> = BTreeMap::new();
    for found in candidates {
        if already.contains(&found.buyer) {
            continue;
        }
        match best.get(&found.buyer) {
            Some(current) if current.score >= found.score => {}
            _ => {
                best.insert(found.buyer.clone(), found);
            }
        }
    }
    let mut list: Vec<Found> = best.into_values().collect();
    list.sort_by(|a, b| b.score.cmp(&a.score).then_with(|| a.buyer.cmp(&b.buyer)));
    list
}

/// The tenant's configuration, with the manifest's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Buyers in these statuses are matched (a buyer without a status is, too).
    pub buyer_statuses: Vec<String>,
    /// The lowest score that counts as a match.
    pub min_score: u32,
    /// At most this many new matches per run (at most 100).
    pub max_matches: usize,
}

impl Settings {
    pub fn from_config(config: &Map<String, Value>) -> Self {
        Self {
            buyer_statuses: match config.get("buyer_statuses").and_then(Value::as_array) {
                Some(items) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                None => vec!["active".to_owned()],
            },
            min_score: config
                .get("min_score")
                .and_then(Value::as_u64)
                .map_or(0, |score| score.min(100) as u32),
            max_matches: config
                .get("max_matches")
                .and_then(Value::as_u64)
                .map_or(MAX_MATCHES, |max| (max as usize).clamp(1, MAX_MATCHES)),
        }
    }

    pub fn buyer_counts(&self, buyer: &Map<String, Value>) -> bool {
        match text(buyer, "status") {
            Some(status) => self.buyer_statuses.contains(&status),
            None => true,
        }
    }
}

fn host<T>(what: &str, result: Result<T, rapport_sdk::HostError>) -> Result<T, String> {
    result.map_err(|error| format!("cannot {what}: {error:?}"))
}

/// Every record of `entity` matching `filter`, page by page (sorted by id).
fn query_all(entity: &str, filter: &str) -> Result<Vec<Record>, String> {
    host(
        &format!("read `{entity}` records"),
        records::query_all(entity, filter, PAGE, usize::MAX),
    )
}

/// Records by id. (A `BTreeMap`, not a `HashMap`: the standard hasher's random seed would import
/// `wasi:random`, which the host refuses.)
fn by_ids(entity: &str, ids: &BTreeSet<&str>) -> Result<BTreeMap<String, Record>, String> {
    let ids: Vec<&str> = ids.iter().copied().collect();
    let mut found = BTreeMap::new();
    for chunk in ids.chunks(IDS_PER_QUERY) {
        let filter = format!(
            "_id in ({})",
            chunk
                .iter()
                .map(|id| quote(id))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for record in host(
            &format!("read `{entity}` records"),
            records::query(entity, &filter, "", PAGE),
        )? {
            found.insert(record.id.clone(), record);
        }
    }
    Ok(found)
}

fn run_match(
    listing_id: &str,
    matched_at: Option<&str>,
    settings: &Settings,
) -> Result<Value, String> {
    let listing = host("read the listing", records::get("listing", listing_id))?
        .ok_or_else(|| format!("no listing {listing_id}"))?;
    let property = match listing.get_str("property") {
        Some(id) => host("read the property", records::get("property", id))?,
        None => None,
    };
    let offer = Offer::from_records(&listing.data, property.as_ref().map(|p| &p.data));
    let requirements = query_all("requirement", &requirement_filter(&offer))?;
    let buyer_ids: BTreeSet<&str> = requirements
        .iter()
        .filter_map(|requirement| requirement.get_str("buyer"))
        .collect();
    let buyers = by_ids("buyer", &buyer_ids)?;
    let already: BTreeSet<String> = query_all(
        "listing_match",
        &format!("listing eq {}", quote(&listing.id)),
    )?
    .iter()
    .filter_map(|found| found.get_str("buyer").map(str::to_owned))
    .collect();

    let candidates = requirements.iter().filter_map(|requirement| {
        let buyer = buyers.get(requirement.get_str("buyer")?)?;
        if !settings.buyer_counts(&buyer.data) {
            return None;
        }
        let wish = Wish::from_records(&requirement.data, Some(&buyer.data));
        let score = score(&offer, &wish)?;
        (score >= settings.min_score).then(|| Found {
            buyer: buyer.id.clone(),
            requirement: requirement.id.clone(),
            score,
        })
    });
    let mut found = best_per_buyer(candidates, &already);
    let more = found.len().saturating_sub(settings.max_matches);
    found.truncate(settings.max_matches);

    let mut matches = Vec::new();
    let mut summary = Vec::new();
    for found in &found {
        let mut values = json!({
            "listing": listing.id,
            "buyer": found.buyer,
            "requirement": found.requirement,
            "score": found.score,
            "notified": false,
        });
        if let Some(at) = matched_at {
            values["matched_at"] = json!(at);
        }
        let created = host(
            "create the match",
            records::create("listing_match", &values),
        )?;
        let name = buyers
            .get(&found.buyer)
            .and_then(|buyer| buyer.get_str("name"))
            .unwrap_or(&found.buyer)
            .to_owned();
        summary.push(format!("{name} ({})", found.score));
        matches.push(json!({
            "match": created.id,
            "buyer": found.buyer,
            "name": name,
            "requirement": found.requirement,
            "score": found.score,
        }));
    }
    if more > 0 {
        rapport_sdk::log::warn(&format!(
            "{more} more buyers match: run the step again to record them"
        ));
    }
    Ok(json!({
        "count": found.len(),
        "buyers": found.iter().map(|found| found.buyer.clone()).collect::<Vec<_>>(),
        "matches": matches,
        "summary": summary.join(", "),
        "already_matched": already.len(),
        "more": more,
    }))
}

impl Plugin for ListingMatch {
    fn run_step(step: &str, input: Value) -> Result<Value, String> {
        match step {
            "match" => {
                let listing = input
                    .get("listing")
                    .and_then(Value::as_str)
                    .filter(|id| !id.is_empty())
                    .ok_or("`listing` must be the listing's id")?;
                let matched_at = input.get("matched_at").and_then(Value::as_str);
                let settings = Settings::from_config(&rapport_sdk::config());
                run_match(listing, matched_at, &settings)
            }
            other => Err(format!(
                "listing-match has no workflow step `{other}`: use `match`"
            )),
        }
    }
}

rapport_sdk::plugin!(ListingMatch);

#[cfg(test)]
mod tests {
    use super::*;

    fn eur(amount: f64) -> Option<(f64, String)> {
        Some((amount, "EUR".to_owned()))
    }

    fn offer() -> Offer {
        Offer {
            district: Some("Kadıköy".to_owned()),
            property_type: Some("apartment".to_owned()),
            area: Some(95.0),
            rooms: Some(3.0),
            price: eur(420_000.0),
        }
    }

    fn full_wish() -> Wish {
        Wish {
            district: Some(" kadıköy ".trim().to_owned()),
            property_type: Some("apartment".to_owned()),
            min_area: Some(90.0),
            min_rooms: Some(3.0),
            max_price: eur(450_000.0),
        }
    }

    #[test]
    fn a_listing_meeting_every_stated_criterion_scores_100() {
        assert_eq!(score(&offer(), &full_wish()), Some(100));
    }

    #[test]
    fn limits_are_inclusive() {
        let wish = Wish {
            min_area: Some(95.0),
            min_rooms: Some(3.0),
            max_price: eur(420_000.0),
            ..full_wish()
        };
        assert_eq!(score(&offer(), &wish), Some(100));
    }

    #[test]
    fn each_unmet_criterion_rules_the_listing_out() {
        let cases = [
            Wish {
                district: Some("Beşiktaş".into()),
                ..full_wish()
            },
            Wish {
                property_type: Some("villa".into()),
                ..full_wish()
            },
            Wish {
                min_area: Some(100.0),
                ..full_wish()
            },
            Wish {
                min_rooms: Some(4.0),
                ..full_wish()
            },
            Wish {
                max_price: eur(400_000.0),
                ..full_wish()
            },
            // A price in another currency cannot be compared.
            Wish {
                max_price: Some((450_000.0, "USD".into())),
                ..full_wish()
            },
        ];
        for wish in cases {
            assert_eq!(score(&offer(), &wish), None, "{wish:?}");
        }
    }

    #[test]
    fn open_criteria_count_half() {
        // Only a price: 25 + (30 + 20 + 15 + 10) / 2 = 62.5.
        let wish = Wish {
            max_price: eur(500_000.0),
            ..Wish::default()
        };
        assert_eq!(score(&offer(), &wish), Some(63));
        assert_eq!(score(&offer(), &Wish::default()), Some(50));
    }

    #[test]
    fn a_value_the_listing_lacks_fails_a_criterion_that_needs_it() {
        let unknown_area = Offer {
            area: None,
            ..offer()
        };
        assert_eq!(score(&unknown_area, &full_wish()), None);
        let wish = Wish {
            min_area: None,
            ..full_wish()
        };
        assert_eq!(score(&unknown_area, &wish), Some(93));
        let unpriced = Offer {
            price: None,
            ..offer()
        };
        assert_eq!(score(&unpriced, &full_wish()), None);
    }

    #[test]
    fn the_listing_falls_back_on_its_property() {
        let listing = json!({"price": {"amount": 300000, "currency": "EUR"}, "rooms": 2});
        let property =
            json!({"district": "Moda", "property_type": "apartment", "area": "72.5", "rooms": 3});
        let offer = Offer::from_records(
            listing.as_object().unwrap(),
            Some(property.as_object().unwrap()),
        );
        assert_eq!(offer.district.as_deref(), Some("Moda"));
        assert_eq!(offer.property_type.as_deref(), Some("apartment"));
        assert_eq!(offer.area, Some(72.5));
        assert_eq!(offer.rooms, Some(2.0), "the listing's own value first");
        assert_eq!(offer.price, eur(300_000.0));
    }

    #[test]
    fn the_buyers_budget_stands_in_for_a_missing_max_price() {
        let requirement = json!({"district": "Moda", "min_rooms": 2});
        let buyer = json!({"budget_max": {"amount": 350000, "currency": "EUR"}});
        let wish = Wish::from_records(
            requirement.as_object().unwrap(),
            Some(buyer.as_object().unwrap()),
        );
        assert_eq!(wish.max_price, eur(350_000.0));
        let stated = json!({"max_price": {"amount": 200000, "currency": "EUR"}});
        let wish = Wish::from_records(
            stated.as_object().unwrap(),
            Some(buyer.as_object().unwrap()),
        );
        assert_eq!(wish.max_price, eur(200_000.0));
    }

    #[test]
    fn the_requirement_filter_narrows_by_minimums() {
        assert_eq!(
            requirement_filter(&offer()),
            "(min_area is null or min_area le 95) and (min_rooms is null or min_rooms le 3)"
        );
        let unknown = Offer {
            area: Some(72.5),
            rooms: None,
            ..offer()
        };
        assert_eq!(
            requirement_filter(&unknown),
            "(min_area is null or min_area le 72.5) and min_rooms is null"
        );
    }

    #[test]
    fn one_match_per_buyer_the_best_and_not_twice() {
        let found = |buyer: &str, requirement: &str, score| Found {
            buyer: buyer.into(),
            requirement: requirement.into(),
            score,
        };
        let already = BTreeSet::from(["b3".to_owned()]);
        let list = best_per_buyer(
            [
                found("b1", "r1", 70),
                found("b1", "r2", 90),
                found("b2", "r3", 80),
                found("b3", "r4", 100),
                found("b4", "r5", 80),
            ],
            &already,
        );
        assert_eq!(
            list,
            vec![
                found("b1", "r2", 90),
                found("b2", "r3", 80),
                found("b4", "r5", 80)
            ]
        );
    }

    #[test]
    fn only_active_buyers_count() {
        let settings = Settings::from_config(&Map::new());
        let status = |value: Value| value.as_object().cloned().unwrap();
        assert!(settings.buyer_counts(&status(json!({"status": "active"}))));
        assert!(settings.buyer_counts(&status(json!({}))));
        assert!(!settings.buyer_counts(&status(json!({"status": "bought"}))));
        let config = json!({"max_matches": 1000, "min_score": 60});
        let settings = Settings::from_config(config.as_object().unwrap());
        assert_eq!(settings.max_matches, 100);
        assert_eq!(settings.min_score, 60);
    }
}
