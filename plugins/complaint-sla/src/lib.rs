//! `complaint-sla`: a complaint's due date from its priority.
//!
//! A `before` hook on cases: when a case is created, or its priority changes, the due field is
//! set to the write's time plus the days configured for the priority (urgent: 2 days, ordinary:
//! 5 days by default). A priority without configured days leaves the due date alone.

use rapport_sdk::{Event, Outcome, Plugin, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

pub struct ComplaintSla;

/// The tenant's configuration, with the defaults of the manifest.
struct Settings {
    priority_field: String,
    due_field: String,
    days: serde_json::Map<String, serde_json::Value>,
}

impl Settings {
    fn load() -> Self {
        let config = rapport_sdk::config();
        let text = |key: &str, default: &str| {
            config
                .get(key)
                .and_then(|value| value.as_str())
                .unwrap_or(default)
                .to_owned()
        };
        let days = match config.get("days") {
            Some(serde_json::Value::Object(days)) => days.clone(),
            _ => json!({"urgent": 2, "high": 3, "ordinary": 5, "low": 10})
                .as_object()
                .cloned()
                .unwrap_or_default(),
        };
        Self {
            priority_field: text("priority_field", "priority"),
            due_field: text("due_field", "sla_due_at"),
            days,
        }
    }
}

/// The due time: `at` plus `days` days, in the API's datetime form.
pub fn due(at: &str, days: i64) -> Result<String, String> {
    let at =
        OffsetDateTime::parse(at, &Rfc3339).map_err(|error| format!("bad time `{at}`: {error}"))?;
    let due = at + time::Duration::days(days);
    due.format(&Rfc3339).map_err(|error| error.to_string())
}

impl Plugin for ComplaintSla {
    fn hook(event: Event) -> Result<Outcome, String> {
        let settings = Settings::load();
        let relevant = event.previous.is_none() || event.changes(&settings.priority_field);
        if !relevant {
            return Ok(Outcome::Proceed);
        }
        let Some(priority) = event.record.get_str(&settings.priority_field) else {
            return Ok(Outcome::Proceed);
        };
        let Some(days) = settings.days.get(priority).and_then(|days| days.as_i64()) else {
            return Ok(Outcome::Proceed);
        };
        let due = due(&event.at, days)?;
        let mut patch = serde_json::Map::new();
        patch.insert(settings.due_field, due.into());
        Ok(Outcome::Patch(patch))
    }
}

rapport_sdk::plugin!(ComplaintSla);

#[cfg(test)]
mod tests {
    use super::due;

    #[test]
    fn urgent_is_due_two_days_later_across_a_month_end() {
        assert_eq!(
            due("2026-11-29T10:00:00Z", 2).unwrap(),
            "2026-12-01T10:00:00Z"
        );
    }

    #[test]
    fn a_bad_time_is_a_fault_not_a_panic() {
        assert!(due("yesterday", 2).is_err());
    }
}
