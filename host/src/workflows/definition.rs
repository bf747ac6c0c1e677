//! The typed form of a workflow definition (`schemas/workflow.schema.json`), its checks against
//! the tenant's entities, and the plan a run walks.

use std::collections::HashMap;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::template::{Path, Template};
use super::timers;
use crate::metadata::definition::{EntityDefinition, FieldType};
use crate::metadata::validation::Problem;
use crate::records::filter::{self, Filter};

/// The JSON Schema of workflow definitions, shipped in `schemas/`.
pub const WORKFLOW_SCHEMA: &str = include_str!("../../../schemas/workflow.schema.json");

static WORKFLOW_VALIDATOR: LazyLock<jsonschema::Validator> = LazyLock::new(|| {
    crate::metadata::validation::shipped_schema("workflow.schema.json", WORKFLOW_SCHEMA)
});

/// A workflow as admins write it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkflowDefinition {
    pub name: String,
    /// Only in API bodies: the version a client read (checked on update) or is shown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default = "yes")]
    pub enabled: bool,
    #[serde(default, skip_serializing_if = "RunAs::is_trigger")]
    pub run_as: RunAs,
    pub trigger: Trigger,
    #[serde(default)]
    pub retry: Retry,
    pub steps: Vec<Step>,
}

fn yes() -> bool {
    true
}

/// Whom a run acts as.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunAs {
    /// The user whose write or call started the run.
    #[default]
    Trigger,
    /// The administrator who last saved the workflow.
    Owner,
}

impl RunAs {
    fn is_trigger(&self) -> bool {
        *self == RunAs::Trigger
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    Created,
    Updated,
    Deleted,
}

impl Event {
    pub fn as_str(self) -> &'static str {
        match self {
            Event::Created => "created",
            Event::Updated => "updated",
            Event::Deleted => "deleted",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Trigger {
    Record {
        entity: String,
        events: Vec<Event>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        condition: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        changes: Vec<FieldChange>,
    },
    Manual {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        entity: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<Value>,
    },
    /// At the times of a cron expression: one run, or one per matching record of `entity`.
    Schedule {
        cron: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time_zone: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        entity: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        condition: Option<String>,
    },
    /// When a date or datetime field of a record, shifted by `offset`, comes round.
    Date {
        entity: String,
        field: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        at: Option<String>,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        yearly: bool,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        condition: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        time_zone: Option<String>,
    },
}

impl Trigger {
    /// The entity whose records runs are about, if any.
    pub fn entity(&self) -> Option<&str> {
        match self {
            Trigger::Record { entity, .. } => Some(entity),
            Trigger::Manual { entity, .. } | Trigger::Schedule { entity, .. } => entity.as_deref(),
            Trigger::Date { entity, .. } => Some(entity),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Trigger::Record { .. } => "record",
            Trigger::Manual { .. } => "manual",
            Trigger::Schedule { .. } => "schedule",
            Trigger::Date { .. } => "date",
        }
    }

    /// Whether the trigger fires on time (a schedule or a date) rather than on an event.
    pub fn is_timed(&self) -> bool {
        matches!(self, Trigger::Schedule { .. } | Trigger::Date { .. })
    }
}

/// "The field changed", or "changed from X and/or to Y". `Some(Value::Null)` means empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub field: String,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub from: Option<Value>,
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub to: Option<Value>,
}

/// Tells `"from": null` (the field was empty) from no `from` at all.
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<Value>, D::Error> {
    Value::deserialize(deserializer).map(Some)
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Retry {
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
    #[serde(default = "default_backoff")]
    pub backoff_seconds: f64,
}

fn default_attempts() -> u32 {
    3
}

fn default_backoff() -> f64 {
    10.0
}

impl Default for Retry {
    fn default() -> Self {
        Self {
            max_attempts: default_attempts(),
            backoff_seconds: default_backoff(),
        }
    }
}

impl Retry {
    /// The wait before attempt `attempt + 1` (the first retry waits `backoff_seconds`, then it
    /// doubles), capped at an hour.
    pub fn delay(&self, attempt: u32) -> time::Duration {
        let factor = 2f64.powi(attempt.saturating_sub(1).min(20) as i32);
        time::Duration::seconds_f64((self.backoff_seconds * factor).min(3600.0))
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step {
    pub id: String,
    #[serde(flatten)]
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Action {
    SetFields {
        values: Map<String, Value>,
    },
    CreateRecord {
        entity: String,
        values: Map<String, Value>,
        /// Who owns the new record (a user id template); the run's user when left out.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        owner: Option<String>,
    },
    UpdateRecords {
        entity: String,
        filter: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        limit: Option<u32>,
        values: Map<String, Value>,
    },
    Notify {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        /// Every enabled user holding this role.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
        /// Every member of this team.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        team: Option<String>,
        message: String,
    },
    SendEmail {
        to: String,
        subject: String,
        body: String,
    },
    Webhook {
        webhook: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<Map<String, Value>>,
    },
    Wait {
        #[serde(default, rename = "for", skip_serializing_if = "Option::is_none")]
        duration: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        offset: Option<String>,
    },
    Branch {
        #[serde(rename = "if")]
        condition: String,
        then: Vec<Step>,
        #[serde(default, rename = "else", skip_serializing_if = "Vec::is_empty")]
        otherwise: Vec<Step>,
    },
    Plugin {
        plugin: String,
        step: String,
        #[serde(default)]
        input: Map<String, Value>,
    },
    AssignOwner {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        round_robin: Vec<String>,
        /// Round robin among the enabled users holding this role.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        role: Option<String>,
        /// Round robin among this team's members.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        team: Option<String>,
    },
    Approval {
        approvers: Vec<String>,
        message: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout: Option<String>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        then: Vec<Step>,
        #[serde(default, rename = "else", skip_serializing_if = "Vec::is_empty")]
        otherwise: Vec<Step>,
    },
}

impl Action {
    pub fn kind(&self) -> &'static str {
        match self {
            Action::SetFields { .. } => "set_fields",
            Action::CreateRecord { .. } => "create_record",
            Action::UpdateRecords { .. } => "update_records",
            Action::Notify { .. } => "notify",
            Action::SendEmail { .. } => "send_email",
            Action::Webhook { .. } => "webhook",
            Action::Wait { .. } => "wait",
            Action::Branch { .. } => "branch",
            Action::Approval { .. } => "approval",
            Action::AssignOwner { .. } => "assign_owner",
            Action::Plugin { .. } => "plugin",
        }
    }

    /// The two lists of steps of a branch or an approval.
    pub fn children(&self) -> Option<(&[Step], &[Step])> {
        match self {
            Action::Branch {
                then, otherwise, ..
            }
            | Action::Approval {
                then, otherwise, ..
            } => Some((then, otherwise)),
            _ => None,
        }
    }
}

/// Parses a duration of the schema's form (`30m`, `2d`, `+1h`, `-3d`).
pub fn parse_duration(text: &str) -> Option<time::Duration> {
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => (1, text),
    };
    let unit = rest.chars().last()?;
    let number: i64 = rest[..rest.len() - 1].parse().ok()?;
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3600,
        'd' => 86_400,
        'w' => 604_800,
        _ => return None,
    };
    Some(time::Duration::seconds(sign * number * seconds))
}

/// Parses a definition on its own: the JSON Schema, then the typed form. Checks that need the
/// tenant's entities are [`check`]'s.
pub fn parse(json: &Value) -> Result<WorkflowDefinition, Vec<Problem>> {
    let problems = crate::metadata::validation::schema_problems(&WORKFLOW_VALIDATOR, json);
    if !problems.is_empty() {
        return Err(trim(problems));
    }
    serde_json::from_value(json.clone()).map_err(|error| vec![Problem::new("/", error.to_string())])
}

/// A `oneOf` failure reports every branch; when a more precise problem exists at a deeper path,
/// the vaguer ones above it say nothing more.
fn trim(mut problems: Vec<Problem>) -> Vec<Problem> {
    let paths: Vec<String> = problems.iter().map(|p| p.path.clone()).collect();
    problems.retain(|problem| {
        let prefix = if problem.path == "/" {
            "/".to_owned()
        } else {
            format!("{}/", problem.path)
        };
        !paths.iter().any(|other| other.starts_with(&prefix))
    });
    problems
}

/// The tenant's entities, by name, as a definition is checked against them.
pub type Entities = HashMap<String, EntityDefinition>;

/// Checks a parsed definition against the tenant's entities: every entity, field, template path
/// and condition must make sense. Every problem names the JSON path it is about.
pub fn check(
    definition: &WorkflowDefinition,
    entities: &Entities,
    plugin_steps: &PluginSteps,
    webhooks: &[String],
) -> Vec<Problem> {
    let mut checker = Checker {
        entities,
        steps_of: plugin_steps,
        webhooks,
        problems: Vec::new(),
        seen: Vec::new(),
        subject: None,
    };
    checker.trigger(&definition.trigger);
    checker.steps(&definition.steps, "/steps");
    checker.problems
}

/// The workflow steps of each plugin enabled in the tenant, by plugin id.
pub type PluginSteps = HashMap<String, Vec<String>>;

struct Checker<'a> {
    entities: &'a Entities,
    steps_of: &'a PluginSteps,
    /// The names of the tenant's webhooks.
    webhooks: &'a [String],
    problems: Vec<Problem>,
    /// Step ids in document order so far.
    seen: Vec<String>,
    /// The entity of the run's record.
    subject: Option<&'a EntityDefinition>,
}

impl<'a> Checker<'a> {
    fn problem(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(path, message));
    }

    fn entity(&mut self, name: &str, path: &str) -> Option<&'a EntityDefinition> {
        let found = self.entities.get(name);
        if found.is_none() {
            self.problem(path, format!("entity `{name}` does not exist"));
        }
        found
    }

    fn trigger(&mut self, trigger: &Trigger) {
        match trigger {
            Trigger::Record {
                entity,
                events,
                condition,
                changes,
            } => {
                self.subject = self.entity(entity, "/trigger/entity");
                if let (Some(condition), Some(subject)) = (condition, self.subject) {
                    self.condition(condition, subject, "/trigger/condition", false);
                }
                if !changes.is_empty() && !events.contains(&Event::Updated) {
                    self.problem(
                        "/trigger/changes",
                        "`changes` apply to updates: add `updated` to `events`",
                    );
                }
                if let Some(subject) = self.subject {
                    for (index, change) in changes.iter().enumerate() {
                        if change.field != "_owner" && subject.field(&change.field).is_none() {
                            self.problem(
                                format!("/trigger/changes/{index}/field"),
                                format!(
                                    "entity `{}` has no field `{}`",
                                    subject.name, change.field
                                ),
                            );
                        }
                    }
                }
            }
            Trigger::Manual { entity, input } => {
                if let Some(entity) = entity {
                    self.subject = self.entity(entity, "/trigger/entity");
                }
                if let Some(schema) = input
                    && let Err(error) = jsonschema::validator_for(schema)
                {
                    self.problem(
                        "/trigger/input",
                        format!("not a valid JSON Schema: {error}"),
                    );
                }
            }
            Trigger::Schedule {
                cron,
                time_zone,
                entity,
                condition,
            } => {
                match timers::parse_cron(cron) {
                    Err(message) => self.problem("/trigger/cron", message),
                    Ok(parsed) => {
                        let now = time::OffsetDateTime::now_utc();
                        if timers::next_cron(&parsed, chrono_tz::Tz::UTC, now).is_none() {
                            self.problem(
                                "/trigger/cron",
                                format!("`{cron}` never comes round (no date matches it)"),
                            );
                        }
                    }
                }
                self.time_zone(time_zone.as_deref());
                if let Some(entity) = entity {
                    self.subject = self.entity(entity, "/trigger/entity");
                }
                match (condition, self.subject) {
                    (Some(condition), Some(subject)) => {
                        self.condition(condition, subject, "/trigger/condition", false)
                    }
                    (Some(_), None) if entity.is_none() => self.problem(
                        "/trigger/condition",
                        "a condition picks records: name the `entity` they are of",
                    ),
                    _ => {}
                }
            }
            Trigger::Date {
                entity,
                field,
                offset,
                at,
                yearly,
                condition,
                time_zone,
            } => {
                self.time_zone(time_zone.as_deref());
                self.subject = self.entity(entity, "/trigger/entity");
                let Some(subject) = self.subject else {
                    return;
                };
                if let Some(condition) = condition {
                    self.condition(condition, subject, "/trigger/condition", false);
                }
                let offset = offset.as_deref().map(|text| (text, parse_duration(text)));
                if let Some((text, None)) = offset {
                    self.problem("/trigger/offset", format!("`{text}` is not a duration"));
                }
                let is_date = match subject.field(field).map(|f| (f.active, f.value_type())) {
                    None => {
                        self.problem(
                            "/trigger/field",
                            format!("entity `{}` has no field `{field}`", subject.name),
                        );
                        return;
                    }
                    Some((false, _)) => {
                        self.problem(
                            "/trigger/field",
                            format!("field `{field}` of `{}` is deactivated", subject.name),
                        );
                        return;
                    }
                    Some((true, FieldType::Date)) => true,
                    Some((true, FieldType::Datetime)) => false,
                    Some((true, other)) => {
                        self.problem(
                            "/trigger/field",
                            format!(
                                "field `{field}` of `{}` is a {} field: a date trigger needs a date or datetime field",
                                subject.name,
                                other.as_str()
                            ),
                        );
                        return;
                    }
                };
                if is_date {
                    if let Some((text, Some(duration))) = offset
                        && duration.whole_seconds() % 86_400 != 0
                    {
                        self.problem(
                            "/trigger/offset",
                            format!("`{field}` is a date: the offset `{text}` must be whole days or weeks"),
                        );
                    }
                    if let Some(at) = at
                        && timers::parse_at(at).is_none()
                    {
                        self.problem(
                            "/trigger/at",
                            format!("`{at}` is not a time of day (HH:MM or HH:MM:SS)"),
                        );
                    }
                } else {
                    if at.is_some() {
                        self.problem(
                            "/trigger/at",
                            format!("`{field}` is a datetime, which has its own time: `at` applies to date fields"),
                        );
                    }
                    if *yearly {
                        self.problem(
                            "/trigger/yearly",
                            format!("`yearly` applies to date fields (birthdays, anniversaries), and `{field}` is a datetime"),
                        );
                    }
                }
            }
        }
    }

    fn time_zone(&mut self, time_zone: Option<&str>) {
        if let Some(name) = time_zone
            && let Err(message) = timers::parse_time_zone(name)
        {
            self.problem("/trigger/time_zone", message);
        }
    }

    fn steps(&mut self, steps: &'a [Step], at: &str) {
        for (index, step) in steps.iter().enumerate() {
            let path = format!("{at}/{index}");
            if self.seen.contains(&step.id) {
                self.problem(
                    format!("{path}/id"),
                    format!("step id `{}` is used twice", step.id),
                );
            }
            self.step(step, &path);
            self.seen.push(step.id.clone());
        }
    }

    fn needs_subject(&mut self, path: &str, kind: &str) -> Option<&'a EntityDefinition> {
        if self.subject.is_none() && !self.problems.iter().any(|p| p.path == "/trigger/entity") {
            self.problem(
                path,
                format!("a `{kind}` step needs a record: the trigger names no entity"),
            );
        }
        self.subject
    }

    fn step(&mut self, step: &'a Step, path: &str) {
        match &step.action {
            Action::SetFields { values } => {
                if let Some(subject) = self.needs_subject(&format!("{path}/type"), "set_fields") {
                    self.values(values, subject, &format!("{path}/values"));
                }
            }
            Action::CreateRecord {
                entity,
                values,
                owner,
            } => {
                if let Some(target) = self.entity(entity, &format!("{path}/entity")) {
                    self.values(values, target, &format!("{path}/values"));
                }
                if let Some(owner) = owner {
                    self.template(owner, &format!("{path}/owner"));
                }
            }
            Action::UpdateRecords {
                entity,
                filter,
                values,
                ..
            } => {
                if let Some(target) = self.entity(entity, &format!("{path}/entity")) {
                    self.condition(filter, target, &format!("{path}/filter"), true);
                    self.values(values, target, &format!("{path}/values"));
                }
            }
            Action::Notify { user, message, .. } => {
                if let Some(user) = user {
                    self.template(user, &format!("{path}/user"));
                }
                self.template(message, &format!("{path}/message"));
            }
            Action::SendEmail { to, subject, body } => {
                self.template(to, &format!("{path}/to"));
                self.template(subject, &format!("{path}/subject"));
                self.template(body, &format!("{path}/body"));
            }
            Action::Webhook { webhook, body } => {
                if !self.webhooks.contains(webhook) {
                    self.problem(
                        format!("{path}/webhook"),
                        format!(
                            "webhook `{webhook}` does not exist: register it at /api/v1/webhooks (there are: {})",
                            if self.webhooks.is_empty() {
                                "none".to_owned()
                            } else {
                                self.webhooks.join(", ")
                            }
                        ),
                    );
                }
                for (key, value) in body.iter().flatten() {
                    if let Value::String(text) = value {
                        self.template(text, &format!("{path}/body/{key}"));
                    }
                }
            }
            Action::Wait {
                duration: _,
                until,
                offset: _,
            } => {
                if let Some(until) = until {
                    self.template(until, &format!("{path}/until"));
                }
            }
            Action::Branch {
                condition,
                then,
                otherwise,
            } => {
                // A branch on earlier steps' outputs alone needs no record.
                let subject = if on_steps_only(condition) {
                    self.subject
                } else {
                    self.needs_subject(&format!("{path}/type"), "branch")
                };
                if subject.is_some() || on_steps_only(condition) {
                    self.branch_condition(condition, subject, &format!("{path}/if"));
                }
                self.steps(then, &format!("{path}/then"));
                self.steps(otherwise, &format!("{path}/else"));
            }
            Action::Plugin {
                plugin,
                step: name,
                input,
            } => {
                match self.steps_of.get(plugin.as_str()) {
                    None => self.problem(
                        format!("{path}/plugin"),
                        format!("plugin `{plugin}` is not installed and enabled in this tenant"),
                    ),
                    Some(steps) if !steps.iter().any(|s| s == name) => self.problem(
                        format!("{path}/step"),
                        format!("plugin `{plugin}` provides no workflow step `{name}` (it provides: {})",
                            if steps.is_empty() { "none".to_owned() } else { steps.join(", ") }),
                    ),
                    Some(_) => {}
                }
                for (key, value) in input {
                    if let Value::String(text) = value {
                        self.template(text, &format!("{path}/input/{key}"));
                    }
                }
            }
            Action::AssignOwner {
                user, round_robin, ..
            } => {
                self.needs_subject(&format!("{path}/type"), "assign_owner");
                if let Some(user) = user {
                    self.template(user, &format!("{path}/user"));
                }
                for (index, user) in round_robin.iter().enumerate() {
                    self.template(user, &format!("{path}/round_robin/{index}"));
                }
            }
            Action::Approval {
                approvers,
                message,
                then,
                otherwise,
                ..
            } => {
                for (index, approver) in approvers.iter().enumerate() {
                    self.template(approver, &format!("{path}/approvers/{index}"));
                }
                self.template(message, &format!("{path}/message"));
                // The approval's own output is known to the steps of its lists (`steps()` adds
                // its id again once it is checked).
                self.seen.push(step.id.clone());
                self.steps(then, &format!("{path}/then"));
                self.steps(otherwise, &format!("{path}/else"));
                if let Some(at) = self.seen.iter().position(|seen| seen == &step.id) {
                    self.seen.remove(at);
                }
            }
        }
    }

    fn values(&mut self, values: &Map<String, Value>, entity: &EntityDefinition, path: &str) {
        for (name, value) in values {
            let at = format!("{path}/{name}");
            match entity.field(name) {
                None => self.problem(
                    at.clone(),
                    format!("entity `{}` has no field `{name}`", entity.name),
                ),
                Some(field) if !field.active => self.problem(
                    at.clone(),
                    format!("field `{name}` of `{}` is deactivated", entity.name),
                ),
                Some(field) if field.is_read_only() => self.problem(
                    at.clone(),
                    format!(
                        "field `{name}` of `{}` is {} and cannot be set",
                        entity.name,
                        if field.field_type == FieldType::AutoNumber {
                            "an auto-number"
                        } else {
                            "computed"
                        }
                    ),
                ),
                Some(_) => {}
            }
            if let Value::String(text) = value {
                self.template(text, &at);
            }
        }
    }

    /// A condition or filter; with `templates`, `{{ … }}` may stand for literals.
    fn condition(&mut self, text: &str, entity: &EntityDefinition, path: &str, templates: bool) {
        let parsed = if templates {
            match Template::parse(text) {
                Ok(template) => {
                    self.paths(&template, path);
                    filter::parse(&template.placeholder_filter())
                }
                Err(message) => {
                    self.problem(path, message);
                    return;
                }
            }
        } else {
            filter::parse(text)
        };
        match parsed {
            Ok(parsed) => {
                for field in fields_of(&parsed) {
                    if !crate::records::query::is_system_field(field)
                        && entity.field(field).is_none()
                    {
                        self.problem(
                            path,
                            format!("entity `{}` has no field `{field}`", entity.name),
                        );
                    }
                }
            }
            Err(error) => self.problem(path, error.to_string()),
        }
    }

    /// A branch's condition: fields of the record, and `steps.<step>.<key>` of a step before it.
    fn branch_condition(&mut self, text: &str, entity: Option<&EntityDefinition>, path: &str) {
        let parsed = match Template::parse(text) {
            Ok(template) => {
                self.paths(&template, path);
                filter::parse(&template.placeholder_filter())
            }
            Err(message) => {
                self.problem(path, message);
                return;
            }
        };
        let parsed = match parsed {
            Ok(parsed) => parsed,
            Err(error) => {
                self.problem(path, error.to_string());
                return;
            }
        };
        for field in fields_of(&parsed) {
            if let Some(rest) = field.strip_prefix("steps.") {
                match rest.split_once('.') {
                    Some((id, key)) if !key.is_empty() && !key.contains('.') => {
                        if !self.seen.iter().any(|seen| seen == id) {
                            self.problem(
                                path,
                                format!("`{field}`: no step `{id}` comes before this one"),
                            );
                        }
                    }
                    _ => self.problem(
                        path,
                        format!("`{field}`: name an earlier step's output as `steps.<step>.<key>`"),
                    ),
                }
            } else if let Some(entity) = entity {
                if !crate::records::query::is_system_field(field) && entity.field(field).is_none() {
                    self.problem(
                        path,
                        format!("entity `{}` has no field `{field}`", entity.name),
                    );
                }
            } else {
                self.problem(
                    path,
                    format!("`{field}`: the trigger names no entity, so runs have no record"),
                );
            }
        }
    }

    fn template(&mut self, text: &str, path: &str) {
        match Template::parse(text) {
            Ok(template) => self.paths(&template, path),
            Err(message) => self.problem(path, message),
        }
    }

    fn paths(&mut self, template: &Template, at: &str) {
        for path in template.paths() {
            match path {
                Path::Record(field) | Path::Old(field) => match self.subject {
                    None => self.problem(
                        at,
                        format!("`{path}`: the trigger names no entity, so runs have no record"),
                    ),
                    Some(subject) if !field.starts_with('_') && subject.field(field).is_none() => {
                        self.problem(
                            at,
                            format!("`{path}`: entity `{}` has no field `{field}`", subject.name),
                        )
                    }
                    Some(_) => {}
                },
                Path::Step(id, _) if !self.seen.iter().any(|seen| seen == id) => self.problem(
                    at,
                    format!("`{path}`: no step `{id}` comes before this one"),
                ),
                _ => {}
            }
        }
    }
}

/// Whether a branch condition names only earlier steps' outputs (`steps.<step>.<key>`).
pub fn on_steps_only(condition: &str) -> bool {
    Template::parse(condition)
        .ok()
        .and_then(|template| filter::parse(&template.placeholder_filter()).ok())
        .is_some_and(|parsed| {
            fields_of(&parsed)
                .iter()
                .all(|field| field.starts_with("steps."))
        })
}

/// Every field a filter names.
pub fn fields_of(filter: &Filter) -> Vec<&str> {
    let mut names = Vec::new();
    let mut stack = vec![filter];
    while let Some(filter) = stack.pop() {
        match filter {
            Filter::And(left, right) | Filter::Or(left, right) => {
                stack.push(left);
                stack.push(right);
            }
            Filter::Not(inner) => stack.push(inner),
            Filter::Compare { field, .. }
            | Filter::In { field, .. }
            | Filter::Contains { field, .. }
            | Filter::StartsWith { field, .. }
            | Filter::IsNull { field, .. } => names.push(field.as_str()),
        }
    }
    names
}

/// A step of the plan: where it is in the definition, and what follows it.
#[derive(Debug, Clone)]
pub struct Node {
    pub step: Step,
    /// The step after this one (after a branch: after the branch's last step), or the end.
    pub next: Option<usize>,
    /// For a branch: the first step of `then` and of `else` (each falls through to `next`).
    pub then_first: Option<usize>,
    pub else_first: Option<usize>,
}

/// The steps of a definition, flattened: a run's position is an index into `nodes`.
#[derive(Debug, Clone)]
pub struct Plan {
    pub nodes: Vec<Node>,
}

impl Plan {
    pub fn new(steps: &[Step]) -> Self {
        let mut nodes = Vec::new();
        let mut children = HashMap::new();
        let top = assign(steps, &mut nodes, &mut children);
        link(&mut nodes, &children, &top, None);
        Self { nodes }
    }

    pub fn first(&self) -> Option<usize> {
        (!self.nodes.is_empty()).then_some(0)
    }

    pub fn position(&self, id: &str) -> Option<usize> {
        self.nodes.iter().position(|node| node.step.id == id)
    }
}

/// The `then` and `else` lists of each branch, as node indices.
type Children = HashMap<usize, (Vec<usize>, Vec<usize>)>;

/// Appends `steps` to `nodes` in document order (a branch's steps right after it) and returns
/// the indices of this list's own steps.
fn assign(steps: &[Step], nodes: &mut Vec<Node>, children: &mut Children) -> Vec<usize> {
    let mut indices = Vec::with_capacity(steps.len());
    for step in steps {
        let index = nodes.len();
        indices.push(index);
        nodes.push(Node {
            step: step.clone(),
            next: None,
            then_first: None,
            else_first: None,
        });
        if let Some((then, otherwise)) = step.action.children() {
            let then = assign(then, nodes, children);
            let otherwise = assign(otherwise, nodes, children);
            nodes[index].then_first = then.first().copied();
            nodes[index].else_first = otherwise.first().copied();
            children.insert(index, (then, otherwise));
        }
    }
    indices
}

/// Sets `next` of every step of `list`: the following step, and `after` for the last one; a
/// branch's lists fall through to what follows the branch.
fn link(nodes: &mut [Node], children: &Children, list: &[usize], after: Option<usize>) {
    for (position, &index) in list.iter().enumerate() {
        let next = list.get(position + 1).copied().or(after);
        nodes[index].next = next;
        if let Some((then, otherwise)) = children.get(&index) {
            link(nodes, children, then, next);
            link(nodes, children, otherwise, next);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn steps(json: Value) -> Vec<Step> {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_plan_walks_branches_and_falls_through_to_the_step_after_them() {
        let plan = Plan::new(&steps(json!([
            {"id": "a", "type": "wait", "for": "1s"},
            {"id": "b", "type": "branch", "if": "x eq 1",
             "then": [{"id": "c", "type": "wait", "for": "1s"}, {"id": "d", "type": "wait", "for": "1s"}],
             "else": [{"id": "e", "type": "branch", "if": "y eq 1", "then": [{"id": "f", "type": "wait", "for": "1s"}]}]},
            {"id": "g", "type": "wait", "for": "1s"}
        ])));
        let id = |index: Option<usize>| index.map(|i| plan.nodes[i].step.id.as_str());
        let at = |name: &str| &plan.nodes[plan.position(name).unwrap()];
        assert_eq!(id(at("a").next), Some("b"));
        assert_eq!(id(at("b").then_first), Some("c"));
        assert_eq!(id(at("b").else_first), Some("e"));
        assert_eq!(id(at("b").next), Some("g"));
        assert_eq!(id(at("c").next), Some("d"));
        assert_eq!(id(at("d").next), Some("g"));
        assert_eq!(id(at("e").then_first), Some("f"));
        assert_eq!(id(at("e").else_first), None);
        assert_eq!(id(at("e").next), Some("g"));
        assert_eq!(id(at("f").next), Some("g"));
        assert_eq!(id(at("g").next), None);
    }

    #[test]
    fn durations_parse_with_units_and_signs() {
        assert_eq!(parse_duration("30s"), Some(time::Duration::seconds(30)));
        assert_eq!(parse_duration("2d"), Some(time::Duration::days(2)));
        assert_eq!(parse_duration("-1h"), Some(time::Duration::hours(-1)));
        assert_eq!(parse_duration("+1w"), Some(time::Duration::weeks(1)));
        assert_eq!(parse_duration("1y"), None);
        assert_eq!(parse_duration("d"), None);
    }

    #[test]
    fn retries_double_from_the_backoff() {
        let retry = Retry {
            max_attempts: 5,
            backoff_seconds: 2.0,
        };
        assert_eq!(retry.delay(1), time::Duration::seconds(2));
        assert_eq!(retry.delay(2), time::Duration::seconds(4));
        assert_eq!(retry.delay(3), time::Duration::seconds(8));
    }
}
