//! `mail-merge`: batch invitations for an exhibition (the source documents' exhibition CRM:
//! "select a batch of exhibitors and send the invitation: each one's name, phone and other
//! details are merged into the template, as if it were written for that customer alone").
//!
//! The workflow step `invite` takes an exhibition, a subject and a body with placeholders
//! (`{{company}}`, `{{contact_name}}`, `{{exhibition}}`, `{{booth}}`, … see [`PLACEHOLDERS`]) and,
//! for every exhibitor of the exhibition not invited yet:
//!
//! 1. merges the exhibitor's details into the subject and body;
//! 2. enqueues one outbox `email` (`{"to", "subject", "body"}`, the payload the server's
//!    delivery sends through its SMTP relay);
//! 3. creates one `invitation` record (status `sent`) that tracks the exhibitor's response.
//!
//! The address is the exhibitor's `email`, else its contact's (unless the contact declined
//! email), else its account's; exhibitors without one are skipped and reported. An unknown
//! placeholder fails the step before anything is sent. Each invitation costs two writes and an
//! invocation may make 100, so one run invites at most `max_per_run` (50) exhibitors and reports
//! how many remain: run it again for the rest (exhibitors already invited are skipped unless
//! `resend`).

use std::collections::{BTreeMap, BTreeSet};

use rapport_sdk::records::quote;
use rapport_sdk::{Plugin, Record, json, records};
use serde_json::{Map, Value};

pub struct MailMerge;

/// The placeholders a template may use.
pub const PLACEHOLDERS: &[&str] = &[
    "company",
    "contact_name",
    "first_name",
    "last_name",
    "email",
    "exhibition",
    "theme",
    "venue",
    "city",
    "starts_on",
    "ends_on",
    "booth",
    "hall",
];

/// The most rows one query asks for (the host caps a query at 1,000).
const PAGE: u32 = 1_000;
/// Record ids per `_id in (…)` query.
const IDS_PER_QUERY: usize = 200;
/// Each invitation is two writes (the email and the record); an invocation may make 100.
const MAX_PER_RUN: usize = 50;

/// Replaces each `{{ name }}` of `template` by its value. Text that is not a placeholder
/// (`{{` without `}}`, or something that is not a name) stays as it is. Every unknown name is
/// an error, listed once each.
pub fn render(template: &str, values: &BTreeMap<&str, String>) -> Result<String, Vec<String>> {
    let mut out = String::with_capacity(template.len());
    let mut unknown: Vec<String> = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            rest = "";
            break;
        };
        let name = after[..end].trim();
        if is_name(name) {
            match values.get(name) {
                Some(value) => out.push_str(value),
                None => {
                    if !unknown.iter().any(|known| known == name) {
                        unknown.push(name.to_owned());
                    }
                }
            }
            rest = &after[end + 2..];
        } else {
            // Not a placeholder: keep the first brace and look again from the next one.
            out.push('{');
            rest = &rest[start + 1..];
        }
    }
    out.push_str(rest);
    if unknown.is_empty() {
        Ok(out)
    } else {
        Err(unknown)
    }
}

fn is_name(text: &str) -> bool {
    let mut chars = text.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_lowercase() || first == '_')
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

/// Checks that `template` uses only [`PLACEHOLDERS`]; the error says which it does not know.
pub fn check_template(what: &str, template: &str) -> Result<(), String> {
    let known: BTreeMap<&str, String> = PLACEHOLDERS
        .iter()
        .map(|name| (*name, String::new()))
        .collect();
    render(template, &known).map(|_| ()).map_err(|unknown| {
        format!(
            "the {what} uses unknown placeholder{} {}; known are {}",
            if unknown.len() == 1 { "" } else { "s" },
            unknown
                .iter()
                .map(|name| format!("{{{{{name}}}}}"))
                .collect::<Vec<_>>()
                .join(", "),
            PLACEHOLDERS
                .iter()
                .map(|name| format!("{{{{{name}}}}}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    })
}

fn text<'a>(data: &'a Map<String, Value>, field: &str) -> Option<&'a str> {
    data.get(field)
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|text| !text.is_empty())
}

/// The tenant's configuration, with the manifest's defaults.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Exhibitors in these statuses are not invited.
    pub skip_statuses: Vec<String>,
    /// Do not write to a contact whose `opt_in_email` is false.
    pub respect_opt_out: bool,
    /// `{{contact_name}}` when the exhibitor has no contact.
    pub default_contact_name: String,
    /// `{{booth}}` when the exhibitor has no booth yet.
    pub no_booth: String,
    /// At most this many invitations per run (at most 50).
    pub max_per_run: usize,
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
        Self {
            skip_statuses: match config.get("skip_statuses").and_then(Value::as_array) {
                Some(items) => items
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect(),
                None => vec!["cancelled".to_owned(), "declined".to_owned()],
            },
            respect_opt_out: config
                .get("respect_opt_out")
                .and_then(Value::as_bool)
                .unwrap_or(true),
            default_contact_name: text("default_contact_name", "Sir or Madam"),
            no_booth: text("no_booth", "to be assigned"),
            max_per_run: config
                .get("max_per_run")
                .and_then(Value::as_u64)
                .map_or(MAX_PER_RUN, |max| (max as usize).clamp(1, MAX_PER_RUN)),
        }
    }
}

/// One exhibitor with what its invitation is merged from.
#[derive(Debug, Clone, Default)]
pub struct Exhibitor<'a> {
    pub data: Option<&'a Map<String, Value>>,
    pub account: Option<&'a Map<String, Value>>,
    pub contact: Option<&'a Map<String, Value>>,
    /// Its booths (sold or reserved to it).
    pub booths: Vec<&'a Map<String, Value>>,
}

/// The address an exhibitor's invitation goes to, or why there is none.
pub fn recipient(exhibitor: &Exhibitor<'_>, settings: &Settings) -> Result<String, String> {
    if let Some(email) = exhibitor.data.and_then(|data| text(data, "email")) {
        return Ok(email.to_owned());
    }
    let mut opted_out = false;
    if let Some(contact) = exhibitor.contact {
        let declined = contact.get("opt_in_email").and_then(Value::as_bool) == Some(false);
        if declined && settings.respect_opt_out {
            opted_out = true;
        } else if let Some(email) = text(contact, "email") {
            return Ok(email.to_owned());
        }
    }
    if let Some(email) = exhibitor.account.and_then(|account| text(account, "email")) {
        return Ok(email.to_owned());
    }
    Err(if opted_out {
        "its contact does not accept email, and neither the exhibitor nor its account has another address".to_owned()
    } else {
        "no email address: neither the exhibitor, its contact nor its account has one".to_owned()
    })
}

/// The values of the placeholders for one exhibitor of `exhibition`.
pub fn merge_fields(
    exhibition: &Map<String, Value>,
    exhibitor: &Exhibitor<'_>,
    email: &str,
    settings: &Settings,
) -> BTreeMap<&'static str, String> {
    let of = |data: Option<&Map<String, Value>>, field: &str| {
        data.and_then(|data| text(data, field))
            .unwrap_or_default()
            .to_owned()
    };
    let company = exhibitor
        .account
        .and_then(|account| text(account, "name"))
        .or_else(|| exhibitor.data.and_then(|data| text(data, "name")))
        .unwrap_or_default()
        .to_owned();
    let first_name = of(exhibitor.contact, "first_name");
    let last_name = of(exhibitor.contact, "last_name");
    let contact_name = match format!("{first_name} {last_name}").trim() {
        "" => settings.default_contact_name.clone(),
        name => name.to_owned(),
    };
    let mut booths: Vec<&str> = exhibitor
        .booths
        .iter()
        .filter_map(|booth| text(booth, "number"))
        .collect();
    booths.sort_unstable();
    booths.dedup();
    let halls: BTreeSet<&str> = exhibitor
        .booths
        .iter()
        .filter_map(|booth| text(booth, "hall"))
        .collect();
    let booth = if booths.is_empty() {
        settings.no_booth.clone()
    } else {
        booths.join(", ")
    };
    let hall = if halls.is_empty() {
        settings.no_booth.clone()
    } else {
        halls.into_iter().collect::<Vec<_>>().join(", ")
    };
    BTreeMap::from([
        ("company", company),
        ("contact_name", contact_name),
        ("first_name", first_name),
        ("last_name", last_name),
        ("email", email.to_owned()),
        ("exhibition", of(Some(exhibition), "name")),
        ("theme", of(Some(exhibition), "theme")),
        ("venue", of(Some(exhibition), "venue")),
        ("city", of(Some(exhibition), "city")),
        ("starts_on", of(Some(exhibition), "starts_on")),
        ("ends_on", of(Some(exhibition), "ends_on")),
        ("booth", booth),
        ("hall", hall),
    ])
}

/// `_id in ('a', 'b', …)` filters for `ids`, a few hundred ids each.
pub fn id_filters(ids: &[&str]) -> Vec<String> {
    ids.chunks(IDS_PER_QUERY)
        .map(|chunk| {
            format!(
                "_id in ({})",
                chunk
                    .iter()
                    .map(|id| quote(id))
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })
        .collect()
}

/// The step's input.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub exhibition: String,
    pub subject: String,
    pub body: String,
    /// The time of the run (`{{now}}`), for the invitations' `sent_at`; plugins have no clock.
    pub sent_at: Option<String>,
    /// Invite again exhibitors who already have a sent, accepted or declined invitation.
    pub resend: bool,
}

impl Input {
    pub fn parse(input: &Value) -> Result<Self, String> {
        let required = |key: &str| {
            input
                .get(key)
                .and_then(Value::as_str)
                .filter(|text| !text.trim().is_empty())
                .map(str::to_owned)
                .ok_or_else(|| format!("`{key}` must be a non-empty string"))
        };
        Ok(Self {
            exhibition: required("exhibition")?,
            subject: required("subject")?,
            body: required("body")?,
            sent_at: input
                .get("sent_at")
                .and_then(Value::as_str)
                .filter(|text| !text.is_empty())
                .map(str::to_owned),
            resend: input
                .get("resend")
                .and_then(Value::as_bool)
                .unwrap_or(false),
        })
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
fn by_ids(entity: &str, ids: &[&str]) -> Result<BTreeMap<String, Record>, String> {
    let mut found = BTreeMap::new();
    for filter in id_filters(ids) {
        for record in host(
            &format!("read `{entity}` records"),
            records::query(entity, &filter, "", PAGE),
        )? {
            found.insert(record.id.clone(), record);
        }
    }
    Ok(found)
}

fn invite(input: &Input, settings: &Settings) -> Result<Value, String> {
    check_template("subject", &input.subject)?;
    check_template("body", &input.body)?;
    let exhibition = host(
        "read the exhibition",
        records::get("exhibition", &input.exhibition),
    )?
    .ok_or_else(|| format!("no exhibition {}", input.exhibition))?;
    let of_exhibition = format!("exhibition eq {}", quote(&exhibition.id));

    let exhibitors: Vec<Record> = query_all("exhibitor", &of_exhibition)?
        .into_iter()
        .filter(|exhibitor| {
            let status = exhibitor.get_str("status").unwrap_or_default();
            !settings.skip_statuses.iter().any(|skip| skip == status)
        })
        .collect();
    let invited: BTreeSet<String> = if input.resend {
        BTreeSet::new()
    } else {
        query_all(
            "invitation",
            &format!("{of_exhibition} and status in ('sent', 'accepted', 'declined')"),
        )?
        .iter()
        .filter_map(|invitation| invitation.get_str("exhibitor").map(str::to_owned))
        .collect()
    };
    let (already, pending): (Vec<&Record>, Vec<&Record>) = exhibitors
        .iter()
        .partition(|exhibitor| invited.contains(&exhibitor.id));
    let batch: Vec<&Record> = pending.iter().copied().take(settings.max_per_run).collect();
    let remaining = pending.len() - batch.len();

    let ids = |field: &str| -> Vec<&str> {
        let set: BTreeSet<&str> = batch.iter().filter_map(|e| e.get_str(field)).collect();
        set.into_iter().collect()
    };
    let accounts = by_ids("account", &ids("account"))?;
    let contacts = by_ids("contact", &ids("contact"))?;
    let booths = query_all(
        "booth",
        &format!("{of_exhibition} and status in ('sold', 'reserved')"),
    )?;

    let mut sent = Vec::new();
    let mut skipped = Vec::new();
    for exhibitor in batch {
        let merged = Exhibitor {
            data: Some(&exhibitor.data),
            account: exhibitor
                .get_str("account")
                .and_then(|id| accounts.get(id))
                .map(|record| &record.data),
            contact: exhibitor
                .get_str("contact")
                .and_then(|id| contacts.get(id))
                .map(|record| &record.data),
            booths: booths
                .iter()
                .filter(|booth| booth.get_str("exhibitor") == Some(exhibitor.id.as_str()))
                .map(|booth| &booth.data)
                .collect(),
        };
        let email = match recipient(&merged, settings) {
            Ok(email) => email,
            Err(reason) => {
                skipped.push(json!({
                    "exhibitor": exhibitor.id,
                    "name": exhibitor.get_str("name"),
                    "reason": reason,
                }));
                continue;
            }
        };
        let values = merge_fields(&exhibition.data, &merged, &email, settings);
        let subject = render(&input.subject, &values)
            .map_err(|unknown| format!("unknown placeholders {unknown:?}"))?;
        let body = render(&input.body, &values)
            .map_err(|unknown| format!("unknown placeholders {unknown:?}"))?;
        host(
            "enqueue the email",
            rapport_sdk::enqueue(
                "email",
                &json!({"to": email, "subject": subject, "body": body}),
            ),
        )?;
        let mut invitation = json!({
            "exhibition": exhibition.id,
            "exhibitor": exhibitor.id,
            "email": email,
            "subject": subject,
            "body": body,
            "status": "sent",
        });
        if let Some(at) = &input.sent_at {
            invitation["sent_at"] = json!(at);
        }
        let created = host(
            "create the invitation",
            records::create("invitation", &invitation),
        )?;
        sent.push(created.id);
    }
    rapport_sdk::log::info(&format!(
        "{} invitations sent for {}, {} skipped, {} already invited, {} remaining",
        sent.len(),
        exhibition.get_str("name").unwrap_or(&exhibition.id),
        skipped.len(),
        already.len(),
        remaining
    ));
    Ok(json!({
        "count": sent.len(),
        "invitations": sent,
        "skipped": skipped.len(),
        "skipped_exhibitors": skipped,
        "already_invited": already.len(),
        "remaining": remaining,
    }))
}

impl Plugin for MailMerge {
    fn run_step(step: &str, input: Value) -> Result<Value, String> {
        match step {
            "invite" => {
                let input = Input::parse(&input)?;
                let settings = Settings::from_config(&rapport_sdk::config());
                invite(&input, &settings)
            }
            other => Err(format!(
                "mail-merge has no workflow step `{other}`: use `invite`"
            )),
        }
    }
}

rapport_sdk::plugin!(MailMerge);

#[cfg(test)]
mod tests {
    use super::*;

    fn data(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    fn values(pairs: &[(&'static str, &str)]) -> BTreeMap<&'static str, String> {
        pairs
            .iter()
            .map(|(name, value)| (*name, (*value).to_owned()))
            .collect()
    }

    #[test]
    fn placeholders_are_replaced_with_or_without_spaces() {
        let values = values(&[("company", "Lumen Optics"), ("booth", "A-03")]);
        assert_eq!(
            render("Dear {{company}}, booth {{ booth }}.", &values).unwrap(),
            "Dear Lumen Optics, booth A-03."
        );
        assert_eq!(
            render("{{company}}{{company}}", &values).unwrap(),
            "Lumen OpticsLumen Optics"
        );
    }

    #[test]
    fn text_that_is_not_a_placeholder_stays() {
        let values = values(&[("company", "X")]);
        assert_eq!(
            render("a {{ not a name }} b", &values).unwrap(),
            "a {{ not a name }} b"
        );
        assert_eq!(render("open {{company", &values).unwrap(), "open {{company");
        assert_eq!(render("{{{company}}}", &values).unwrap(), "{X}");
        assert_eq!(
            render("no placeholders", &values).unwrap(),
            "no placeholders"
        );
        assert_eq!(render("", &values).unwrap(), "");
        assert_eq!(
            render("ünïcödé {{company}} ✓", &values).unwrap(),
            "ünïcödé X ✓"
        );
    }

    #[test]
    fn unknown_placeholders_are_listed_once_each() {
        let values = values(&[("company", "X")]);
        assert_eq!(
            render("{{colour}} {{company}} {{colour}} {{size}}", &values).unwrap_err(),
            vec!["colour".to_owned(), "size".to_owned()]
        );
        let error = check_template("body", "Dear {{company}}, {{colour}}").unwrap_err();
        assert!(error.contains("{{colour}}"), "{error}");
        assert!(error.contains("{{contact_name}}"), "{error}");
        assert!(check_template("subject", "{{exhibition}}: your booth {{booth}}").is_ok());
    }

    fn settings() -> Settings {
        Settings::from_config(&Map::new())
    }

    #[test]
    fn an_exhibitors_details_are_merged() {
        let exhibition = data(json!({
            "name": "Automation Expo 2026", "venue": "Hall of Industry", "city": "Shanghai",
            "starts_on": "2026-09-01", "ends_on": "2026-09-04"
        }));
        let exhibitor = data(json!({"name": "Lumen (catalogue)", "status": "invited"}));
        let account = data(json!({"name": "Lumen Optics", "email": "info@lumen.example"}));
        let contact =
            data(json!({"first_name": "Li", "last_name": "Wei", "email": "li.wei@lumen.example"}));
        let booth_a = data(json!({"number": "A-04", "hall": "A"}));
        let booth_b = data(json!({"number": "A-03", "hall": "A"}));
        let merged = Exhibitor {
            data: Some(&exhibitor),
            account: Some(&account),
            contact: Some(&contact),
            booths: vec![&booth_a, &booth_b],
        };
        let email = recipient(&merged, &settings()).unwrap();
        assert_eq!(email, "li.wei@lumen.example");
        let values = merge_fields(&exhibition, &merged, &email, &settings());
        let body = render(
            "Dear {{contact_name}} of {{company}}: {{exhibition}} at {{venue}}, {{city}}, {{starts_on}} to {{ends_on}}; booth {{booth}} in hall {{hall}}.",
            &values,
        )
        .unwrap();
        assert_eq!(
            body,
            "Dear Li Wei of Lumen Optics: Automation Expo 2026 at Hall of Industry, Shanghai, 2026-09-01 to 2026-09-04; booth A-03, A-04 in hall A."
        );
    }

    #[test]
    fn missing_details_have_defaults() {
        let exhibition = data(json!({"name": "Expo"}));
        let exhibitor = data(json!({"name": "Nameless Ltd", "email": "fair@nameless.example"}));
        let merged = Exhibitor {
            data: Some(&exhibitor),
            ..Exhibitor::default()
        };
        let email = recipient(&merged, &settings()).unwrap();
        let values = merge_fields(&exhibition, &merged, &email, &settings());
        assert_eq!(values["company"], "Nameless Ltd");
        assert_eq!(values["contact_name"], "Sir or Madam");
        assert_eq!(values["booth"], "to be assigned");
        assert_eq!(values["venue"], "");
    }

    #[test]
    fn the_address_is_the_exhibitors_then_the_contacts_then_the_accounts() {
        let exhibitor = data(json!({"email": "expo@acme.example"}));
        let contact = data(json!({"email": "ada@acme.example", "opt_in_email": true}));
        let account = data(json!({"email": "info@acme.example"}));
        let mut merged = Exhibitor {
            data: Some(&exhibitor),
            account: Some(&account),
            contact: Some(&contact),
            booths: Vec::new(),
        };
        assert_eq!(
            recipient(&merged, &settings()).unwrap(),
            "expo@acme.example"
        );
        merged.data = None;
        assert_eq!(recipient(&merged, &settings()).unwrap(), "ada@acme.example");
        merged.contact = None;
        assert_eq!(
            recipient(&merged, &settings()).unwrap(),
            "info@acme.example"
        );
        merged.account = None;
        assert!(
            recipient(&merged, &settings())
                .unwrap_err()
                .contains("no email address")
        );
    }

    #[test]
    fn a_contact_who_declined_email_is_not_written_to() {
        let contact = data(json!({"email": "ada@acme.example", "opt_in_email": false}));
        let account = data(json!({"email": "info@acme.example"}));
        let mut merged = Exhibitor {
            contact: Some(&contact),
            account: Some(&account),
            ..Exhibitor::default()
        };
        assert_eq!(
            recipient(&merged, &settings()).unwrap(),
            "info@acme.example"
        );
        merged.account = None;
        assert!(
            recipient(&merged, &settings())
                .unwrap_err()
                .contains("does not accept email")
        );
        let lenient = Settings {
            respect_opt_out: false,
            ..settings()
        };
        assert_eq!(recipient(&merged, &lenient).unwrap(), "ada@acme.example");
    }

    #[test]
    fn ids_are_quoted_and_chunked() {
        assert_eq!(quote("it's"), "'it''s'");
        let ids: Vec<String> = (0..450).map(|i| format!("id{i}")).collect();
        let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
        let filters = id_filters(&refs);
        assert_eq!(filters.len(), 3);
        assert!(filters[0].starts_with("_id in ('id0', 'id1'"));
        assert!(id_filters(&[]).is_empty());
    }

    #[test]
    fn the_input_needs_an_exhibition_a_subject_and_a_body() {
        let input = Input::parse(&json!({
            "exhibition": "e1", "subject": "Hi {{company}}", "body": "…", "sent_at": "2026-01-01T00:00:00Z",
            "resend": null
        }))
        .unwrap();
        assert_eq!(input.exhibition, "e1");
        assert!(!input.resend);
        assert!(Input::parse(&json!({"exhibition": "e1", "subject": "", "body": "x"})).is_err());
        assert!(Input::parse(&json!({"subject": "s", "body": "x"})).is_err());
    }

    #[test]
    fn the_configuration_caps_a_run_at_fifty() {
        let config = data(json!({"max_per_run": 500, "skip_statuses": ["cancelled"]}));
        let settings = Settings::from_config(&config);
        assert_eq!(settings.max_per_run, 50);
        assert_eq!(settings.skip_statuses, vec!["cancelled".to_owned()]);
    }
}
