//! `booth-guard`: an exhibition booth is never sold twice (the booth map of the source
//! documents' exhibition CRM shows which booths are sold, reserved or free, and it must be right).
//!
//! A `before` hook on booths (it sees the stored booth as `previous`, inside the write's
//! transaction, so two sales of one booth cannot both pass):
//!
//! - a `sold` or `reserved` booth must name its exhibitor;
//! - a booth that is `sold` keeps its exhibitor: selling or reserving it to another exhibitor is
//!   refused until it is set `free` (and, with `protect_reservations`, a booth reserved for one
//!   exhibitor is not sold or reserved to another until the reservation is released);
//! - a sold booth cannot be deleted (set it free first);
//! - the exhibitor must exhibit at the booth's exhibition (read through the host, `read
//!   exhibitor`), so that a booth of one show is never sold to an exhibitor of another.
//!
//! And it keeps the booth tidy: a booth set `free` loses its exhibitor, `sold_at` is the time of
//! the sale (cleared when the booth leaves `sold`), and an empty `area` is `width × height`.
//!
//! Every rejection names the booth by its number (and hall).

use rapport_sdk::{Event, FieldError, Operation, Outcome, Plugin, records};
use serde_json::{Map, Value};

pub struct BoothGuard;

/// The tenant's configuration, with the manifest's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Refuse selling or reserving a booth reserved for another exhibitor.
    pub protect_reservations: bool,
    /// Check that the exhibitor exhibits at the booth's exhibition.
    pub check_exhibition: bool,
    /// The field that records when the booth was sold; empty for none.
    pub sold_at_field: String,
    /// Fill an empty `area` with `width × height`.
    pub compute_area: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            protect_reservations: true,
            check_exhibition: true,
            sold_at_field: "sold_at".to_owned(),
            compute_area: true,
        }
    }
}

impl Settings {
    pub fn from_config(config: &Map<String, Value>) -> Self {
        let defaults = Self::default();
        let flag =
            |key: &str, default: bool| config.get(key).and_then(Value::as_bool).unwrap_or(default);
        Self {
            protect_reservations: flag("protect_reservations", defaults.protect_reservations),
            check_exhibition: flag("check_exhibition", defaults.check_exhibition),
            sold_at_field: config
                .get("sold_at_field")
                .and_then(Value::as_str)
                .map_or(defaults.sold_at_field, str::to_owned),
            compute_area: flag("compute_area", defaults.compute_area),
        }
    }
}

/// The fields of a booth the rules look at.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Booth<'a> {
    pub number: Option<&'a str>,
    pub hall: Option<&'a str>,
    pub exhibition: Option<&'a str>,
    pub exhibitor: Option<&'a str>,
    pub status: Option<&'a str>,
    pub width: Option<f64>,
    pub height: Option<f64>,
    pub area: Option<f64>,
}

fn text<'a>(data: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    data.get(field)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|text| !text.is_empty())
}

fn number(data: &Map<String, Value>, field: &str) -> Option<f64> {
    match data.get(field)? {
        Value::Number(number) => number.as_f64(),
        // Decimal fields may come as text of a number.
        Value::String(text) => text.trim().parse().ok(),
        _ => None,
    }
}

impl<'a> Booth<'a> {
    pub fn from_data(data: &'a Map<String, Value>) -> Self {
        Self {
            number: text(data, "number"),
            hall: text(data, "hall"),
            exhibition: text(data, "exhibition"),
            exhibitor: text(data, "exhibitor"),
            status: text(data, "status"),
            width: number(data, "width"),
            height: number(data, "height"),
            area: number(data, "area"),
        }
    }

    /// How messages name the booth: `booth A-12 (hall 1)`.
    pub fn label(&self) -> String {
        match (self.number, self.hall) {
            (Some(number), Some(hall)) => format!("booth {number} (hall {hall})"),
            (Some(number), None) => format!("booth {number}"),
            (None, Some(hall)) => format!("the booth without a number in hall {hall}"),
            (None, None) => "the booth without a number".to_owned(),
        }
    }

    fn is(&self, status: &str) -> bool {
        self.status == Some(status)
    }
}

/// What the rules decided about one write of a booth.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Refuse the write with these field errors.
    Reject(Vec<FieldError>),
    /// Go on, with these field values merged into the booth (empty: unchanged). When
    /// `check_exhibitor` names an exhibitor, it must exhibit at `exhibition` (checked through the
    /// host by the hook).
    Accept {
        patch: Map<String, Value>,
        check_exhibitor: Option<String>,
    },
}

/// The rules, for a write of `operation` on a booth that will be `current` and was `previous`
/// (the stored booth, on update and delete); `at` is the write's time.
pub fn decide(
    settings: &Settings,
    operation: Operation,
    current: &Map<String, Value>,
    previous: Option<&Map<String, Value>>,
    at: &str,
) -> Decision {
    let booth = Booth::from_data(current);
    let before = previous.map(Booth::from_data);
    let label = booth.label();

    if operation == Operation::Delete {
        // On delete the record is the booth as it was.
        let was = before.unwrap_or(booth);
        if was.is("sold") {
            return Decision::Reject(vec![FieldError::new(
                "status",
                format!("{} is sold: set it free before deleting it", was.label()),
            )]);
        }
        return Decision::Accept {
            patch: Map::new(),
            check_exhibitor: None,
        };
    }

    let mut errors = Vec::new();
    let mut patch = Map::new();
    let status = booth.status.unwrap_or("free");

    if matches!(status, "sold" | "reserved") && booth.exhibitor.is_none() {
        errors.push(FieldError::new(
            "exhibitor",
            format!("{label} is {status}: name the exhibitor it is {status} to"),
        ));
    }

    if let Some(before) = before
        && status != "free"
        && before.exhibitor.is_some()
        && booth.exhibitor.is_some()
        && booth.exhibitor != before.exhibitor
    {
        if before.is("sold") {
            errors.push(FieldError::new(
                "exhibitor",
                format!(
                    "{label} is already sold to another exhibitor: it cannot be {status} again until it is set free"
                ),
            ));
        } else if before.is("reserved") && settings.protect_reservations {
            errors.push(FieldError::new(
                "exhibitor",
                format!(
                    "{label} is reserved for another exhibitor: release the reservation (set the booth free) before it is {status} to someone else"
                ),
            ));
        }
    }

    for (field, value) in [
        ("width", booth.width),
        ("height", booth.height),
        ("area", booth.area),
    ] {
        if value.is_some_and(|value| value < 0.0) {
            errors.push(FieldError::new(
                field,
                format!("{label}: the {field} cannot be negative"),
            ));
        }
    }

    if !errors.is_empty() {
        return Decision::Reject(errors);
    }

    // Tidying.
    if status == "free" && booth.exhibitor.is_some() {
        patch.insert("exhibitor".into(), Value::Null);
    }
    if !settings.sold_at_field.is_empty() {
        let has_sold_at = current
            .get(&settings.sold_at_field)
            .is_some_and(|value| !value.is_null());
        if status == "sold" && !has_sold_at {
            patch.insert(settings.sold_at_field.clone(), Value::String(at.to_owned()));
        } else if status != "sold" && has_sold_at {
            patch.insert(settings.sold_at_field.clone(), Value::Null);
        }
    }
    if settings.compute_area
        && booth.area.is_none()
        && let (Some(width), Some(height)) = (booth.width, booth.height)
    {
        let area = (width * height * 100.0).round() / 100.0;
        if let Some(area) = serde_json::Number::from_f64(area) {
            patch.insert("area".into(), Value::Number(area));
        }
    }

    // The exhibitor must exhibit at this exhibition: checked when either of them is new.
    let check_exhibitor = match (settings.check_exhibition, status, booth.exhibitor) {
        (true, "sold" | "reserved", Some(exhibitor))
            if before.is_none_or(|before| {
                before.exhibitor != booth.exhibitor || before.exhibition != booth.exhibition
            }) =>
        {
            Some(exhibitor.to_owned())
        }
        _ => None,
    };
    Decision::Accept {
        patch,
        check_exhibitor,
    }
}

/// The rejection when the exhibitor exhibits elsewhere (`None` when it is fine).
pub fn exhibition_mismatch(
    booth: &Booth<'_>,
    exhibitor: &Map<String, Value>,
) -> Option<FieldError> {
    let theirs = text(exhibitor, "exhibition");
    if theirs.is_some() && theirs != booth.exhibition {
        let name = text(exhibitor, "name").map_or_else(String::new, |name| format!(" {name}"));
        Some(FieldError::new(
            "exhibitor",
            format!(
                "{}: the exhibitor{name} exhibits at another exhibition",
                booth.label()
            ),
        ))
    } else {
        None
    }
}

impl Plugin for BoothGuard {
    fn hook(event: Event) -> Result<Outcome, String> {
        let settings = Settings::from_config(&rapport_sdk::config());
        let previous = event.previous.as_ref().map(|previous| &previous.data);
        match decide(
            &settings,
            event.operation,
            &event.record.data,
            previous,
            &event.at,
        ) {
            Decision::Reject(errors) => Ok(Outcome::Reject(errors)),
            Decision::Accept {
                patch,
                check_exhibitor,
            } => {
                if let Some(id) = check_exhibitor {
                    match records::get("exhibitor", &id) {
                        Ok(Some(exhibitor)) => {
                            let booth = Booth::from_data(&event.record.data);
                            if let Some(error) = exhibition_mismatch(&booth, &exhibitor.data) {
                                return Ok(Outcome::Reject(vec![error]));
                            }
                        }
                        // The reference itself is checked by the host.
                        Ok(None) => {}
                        Err(error) => {
                            return Err(format!("cannot read exhibitor {id}: {error:?}"));
                        }
                    }
                }
                Ok(if patch.is_empty() {
                    Outcome::Proceed
                } else {
                    Outcome::Patch(patch)
                })
            }
        }
    }
}

rapport_sdk::plugin!(BoothGuard);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const AT: &str = "2026-11-22T09:30:00.000000Z";

    fn data(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    fn booth(status: &str, exhibitor: Option<&str>) -> Map<String, Value> {
        let mut booth = data(json!({
            "exhibition": "ex1", "hall": "A", "number": "A-12", "status": status,
            "width": 3, "height": 4, "area": 12
        }));
        if let Some(exhibitor) = exhibitor {
            booth.insert("exhibitor".into(), json!(exhibitor));
        }
        booth
    }

    fn with(mut booth: Map<String, Value>, field: &str, value: Value) -> Map<String, Value> {
        booth.insert(field.into(), value);
        booth
    }

    fn errors(decision: Decision) -> Vec<FieldError> {
        match decision {
            Decision::Reject(errors) => errors,
            other => panic!("expected a rejection, got {other:?}"),
        }
    }

    fn accepted(decision: Decision) -> (Map<String, Value>, Option<String>) {
        match decision {
            Decision::Accept {
                patch,
                check_exhibitor,
            } => (patch, check_exhibitor),
            other => panic!("expected acceptance, got {other:?}"),
        }
    }

    fn update(previous: &Map<String, Value>, current: &Map<String, Value>) -> Decision {
        decide(
            &Settings::default(),
            Operation::Update,
            current,
            Some(previous),
            AT,
        )
    }

    #[test]
    fn a_sold_booth_cannot_be_sold_to_another_exhibitor() {
        let sold = with(booth("sold", Some("e1")), "sold_at", json!(AT));
        let found = errors(update(&sold, &with(sold.clone(), "exhibitor", json!("e2"))));
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].field, "exhibitor");
        assert!(
            found[0].message.contains("booth A-12 (hall A)"),
            "{}",
            found[0].message
        );
        assert!(found[0].message.contains("already sold"));
    }

    #[test]
    fn a_sold_booth_cannot_be_reserved_for_another_exhibitor_either() {
        let sold = booth("sold", Some("e1"));
        let found = errors(update(&sold, &booth("reserved", Some("e2"))));
        assert!(found[0].message.contains("already sold"));
    }

    #[test]
    fn a_sold_booth_must_keep_an_exhibitor() {
        let sold = booth("sold", Some("e1"));
        let found = errors(update(&sold, &booth("sold", None)));
        assert_eq!(found[0].field, "exhibitor");
        assert!(found[0].message.contains("booth A-12 (hall A) is sold"));
    }

    #[test]
    fn sold_or_reserved_booths_name_their_exhibitor() {
        for status in ["sold", "reserved"] {
            let found = errors(decide(
                &Settings::default(),
                Operation::Create,
                &booth(status, None),
                None,
                AT,
            ));
            assert_eq!(found[0].field, "exhibitor");
            assert!(found[0].message.contains(status));
        }
    }

    #[test]
    fn a_freed_booth_can_be_sold_again_and_loses_its_exhibitor() {
        let sold = with(booth("sold", Some("e1")), "sold_at", json!(AT));
        let (patch, _) = accepted(update(&sold, &booth("free", Some("e1"))));
        assert_eq!(patch.get("exhibitor"), Some(&Value::Null));
        let free = booth("free", None);
        let (patch, check) = accepted(update(&free, &booth("sold", Some("e2"))));
        assert_eq!(patch.get("sold_at"), Some(&json!(AT)));
        assert_eq!(check.as_deref(), Some("e2"));
    }

    #[test]
    fn leaving_sold_clears_the_time_of_the_sale() {
        let sold = with(booth("sold", Some("e1")), "sold_at", json!(AT));
        let freed = with(booth("free", None), "sold_at", json!(AT));
        let (patch, _) = accepted(update(&sold, &freed));
        assert_eq!(patch.get("sold_at"), Some(&Value::Null));
    }

    #[test]
    fn other_changes_of_a_sold_booth_pass_unchecked() {
        let sold = with(booth("sold", Some("e1")), "sold_at", json!(AT));
        let repriced = with(
            sold.clone(),
            "price",
            json!({"amount": 5000, "currency": "EUR"}),
        );
        let (patch, check) = accepted(update(&sold, &repriced));
        assert!(patch.is_empty(), "{patch:?}");
        assert_eq!(check, None);
    }

    #[test]
    fn a_reservation_holds_unless_configured_otherwise() {
        let reserved = booth("reserved", Some("e1"));
        let found = errors(update(&reserved, &booth("sold", Some("e2"))));
        assert!(found[0].message.contains("reserved for another exhibitor"));
        let settings = Settings {
            protect_reservations: false,
            ..Settings::default()
        };
        let decision = decide(
            &settings,
            Operation::Update,
            &booth("sold", Some("e2")),
            Some(&reserved),
            AT,
        );
        accepted(decision);
        // The holder of the reservation may buy it.
        accepted(update(&reserved, &booth("sold", Some("e1"))));
    }

    #[test]
    fn a_sold_booth_cannot_be_deleted() {
        let sold = booth("sold", Some("e1"));
        let found = errors(decide(
            &Settings::default(),
            Operation::Delete,
            &sold,
            Some(&sold),
            AT,
        ));
        assert!(found[0].message.contains("booth A-12 (hall A) is sold"));
        let free = booth("free", None);
        accepted(decide(
            &Settings::default(),
            Operation::Delete,
            &free,
            Some(&free),
            AT,
        ));
    }

    #[test]
    fn an_empty_area_is_width_times_height() {
        let mut new = booth("free", None);
        new.remove("area");
        new.insert("width".into(), json!(2.5));
        let (patch, _) = accepted(decide(
            &Settings::default(),
            Operation::Create,
            &new,
            None,
            AT,
        ));
        assert_eq!(patch.get("area"), Some(&json!(10.0)));
    }

    #[test]
    fn negative_sizes_are_refused() {
        let new = with(booth("free", None), "width", json!(-1));
        let found = errors(decide(
            &Settings::default(),
            Operation::Create,
            &new,
            None,
            AT,
        ));
        assert_eq!(found[0].field, "width");
    }

    #[test]
    fn the_exhibitor_must_exhibit_at_the_booths_exhibition() {
        let current = booth("sold", Some("e1"));
        let booth = Booth::from_data(&current);
        let elsewhere = data(json!({"exhibition": "ex2", "name": "Lumen Optics"}));
        let error = exhibition_mismatch(&booth, &elsewhere).unwrap();
        assert!(error.message.contains("booth A-12"));
        assert!(error.message.contains("Lumen Optics"));
        let here = data(json!({"exhibition": "ex1"}));
        assert_eq!(exhibition_mismatch(&booth, &here), None);
    }

    #[test]
    fn the_configuration_overrides_the_defaults() {
        let config = data(json!({"protect_reservations": false, "sold_at_field": ""}));
        let settings = Settings::from_config(&config);
        assert!(!settings.protect_reservations);
        assert!(settings.check_exhibition);
        assert_eq!(settings.sold_at_field, "");
    }
}
