//! Saved reports and dashboards (`schemas/report.schema.json`, `schemas/dashboard.schema.json`).
//! A report is an aggregation or a list over one entity; a dashboard is a set of widgets, each a
//! report drawn as a chart or table, or a KPI: one measure (or the ratio of two) over a period in
//! the tenant's time zone, with a target and the previous period. Both are stored with saved
//! views (one namespace of names, told apart by `kind`), ship in packs among their `views`, and
//! always run through the records layer as the user who asks: their record scope and field
//! security decide what each number counts.

use std::collections::BTreeMap;
use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use time::{Date, Duration, Month, OffsetDateTime};

use crate::auth::Principal;
use crate::metadata::definition::FieldType;
use crate::metadata::validation::{self, Problem};
use crate::metadata::{Metadata, MetadataError};
use crate::records::aggregate::AggregateParams;
use crate::records::query::{self as record_query, SystemKind, Target};
use crate::records::{ListParams, RecordError, Records, Shape};
use crate::store::packs::StoredView;
use crate::store::{Scoped, Store, StoreError};
use crate::workflows::template::{self, Path, Scope, Template};
use crate::workflows::timers;

pub const REPORT_SCHEMA: &str = include_str!("../../schemas/report.schema.json");
pub const DASHBOARD_SCHEMA: &str = include_str!("../../schemas/dashboard.schema.json");

static REPORT_VALIDATOR: LazyLock<jsonschema::Validator> =
    LazyLock::new(|| validation::shipped_schema("report.schema.json", REPORT_SCHEMA));
static DASHBOARD_VALIDATOR: LazyLock<jsonschema::Validator> =
    LazyLock::new(|| validation::shipped_schema("dashboard.schema.json", DASHBOARD_SCHEMA));

/// What a report asks: the part of a report a dashboard widget may also give inline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Query {
    pub entity: String,
    #[serde(
        rename = "type",
        default,
        skip_serializing_if = "QueryType::is_aggregate"
    )]
    pub query_type: QueryType,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_by: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measures: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sort: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fields: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<i64>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueryType {
    #[default]
    Aggregate,
    List,
}

impl QueryType {
    fn is_aggregate(&self) -> bool {
        *self == QueryType::Aggregate
    }
}

impl Query {
    /// The aggregation this query asks, with `filter` (its own, rendered and combined).
    fn aggregate_params(&self, filter: Option<String>) -> AggregateParams {
        AggregateParams {
            group_by: Some(self.group_by.join(",")),
            measures: Some(self.measure_labels().join(",")),
            filter,
            q: None,
            sort: self.sort.clone(),
            limit: self.limit,
        }
    }

    /// The measures asked, `count` when none are named.
    fn measure_labels(&self) -> Vec<String> {
        if self.measures.is_empty() {
            vec!["count".to_owned()]
        } else {
            self.measures.clone()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportDefinition {
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(flatten)]
    pub query: Query,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Day,
    Week,
    Month,
    Quarter,
    Year,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WidgetType {
    Kpi,
    Chart,
    Table,
}

/// A measure of a report, by name or inline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MeasureSource {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<Query>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measure: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_field: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Widget {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    #[serde(rename = "type")]
    pub widget_type: WidgetType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chart: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<Query>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measure: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub divide_by: Option<MeasureSource>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub period: Option<Period>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date_field: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<f64>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub targets: BTreeMap<String, f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub format: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DashboardDefinition {
    pub kind: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub widgets: Vec<Widget>,
}

/// What a `kind` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    View,
    Report,
    Dashboard,
}

impl Kind {
    /// The kind of a stored or shipped definition (`kind` absent: a view).
    pub fn of(json: &Value) -> Kind {
        match json.get("kind").and_then(Value::as_str) {
            Some("report") => Kind::Report,
            Some("dashboard") => Kind::Dashboard,
            _ => Kind::View,
        }
    }

    pub fn noun(self) -> &'static str {
        match self {
            Kind::View => "view",
            Kind::Report => "report",
            Kind::Dashboard => "dashboard",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AnalyticsError {
    #[error("no {0} `{1}`")]
    NotFound(&'static str, String),
    #[error("`{name}` is already a {existing} of this tenant: choose another name")]
    Exists {
        name: String,
        existing: &'static str,
    },
    #[error("the {0} is invalid")]
    Invalid(&'static str, Vec<Problem>),
    #[error("{0}")]
    BadRequest(String),
    #[error(transparent)]
    Records(#[from] RecordError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Parses a saved view, report or dashboard by its `kind`, returning its name.
pub fn parse_any(json: &Value) -> Result<String, Vec<Problem>> {
    match Kind::of(json) {
        Kind::View => crate::views::parse(json).map(|view| view.name),
        Kind::Report => parse_report(json).map(|report| report.name),
        Kind::Dashboard => parse_dashboard(json).map(|dashboard| dashboard.name),
    }
}

/// Parses a report: the JSON Schema, then its filter's templates.
pub fn parse_report(json: &Value) -> Result<ReportDefinition, Vec<Problem>> {
    let problems = validation::schema_problems(&REPORT_VALIDATOR, json);
    if !problems.is_empty() {
        return Err(problems);
    }
    let report: ReportDefinition = serde_json::from_value(json.clone())
        .map_err(|error| vec![Problem::new("/", error.to_string())])?;
    let problems = filter_problems("", &report.query);
    if problems.is_empty() {
        Ok(report)
    } else {
        Err(problems)
    }
}

/// Parses a dashboard: the JSON Schema, unique widget ids, inline queries' templates, and KPIs
/// that a period can apply to.
pub fn parse_dashboard(json: &Value) -> Result<DashboardDefinition, Vec<Problem>> {
    let mut problems = validation::schema_problems(&DASHBOARD_VALIDATOR, json);
    if !problems.is_empty() {
        return Err(problems);
    }
    let dashboard: DashboardDefinition = serde_json::from_value(json.clone())
        .map_err(|error| vec![Problem::new("/", error.to_string())])?;
    let mut ids = std::collections::BTreeSet::new();
    for (index, widget) in dashboard.widgets.iter().enumerate() {
        let at = format!("/widgets/{index}");
        if !ids.insert(widget.id.as_str()) {
            problems.push(Problem::new(
                format!("{at}/id"),
                format!("two widgets have the id `{}`", widget.id),
            ));
        }
        if let Some(query) = &widget.query {
            problems.extend(filter_problems(&format!("{at}/query"), query));
        }
        if let Some(query) = widget.divide_by.as_ref().and_then(|d| d.query.as_ref()) {
            problems.extend(filter_problems(&format!("{at}/divide_by/query"), query));
        }
        if widget.widget_type != WidgetType::Kpi
            && (widget.divide_by.is_some() || widget.period.is_some() || widget.target.is_some())
        {
            problems.push(Problem::new(
                at.clone(),
                "`divide_by`, `period` and `target` belong to KPI widgets",
            ));
        }
    }
    if problems.is_empty() {
        Ok(dashboard)
    } else {
        Err(problems)
    }
}

/// A filter's templates may name `now`, `today` and `user` (with offsets), nothing else.
fn filter_problems(at: &str, query: &Query) -> Vec<Problem> {
    let Some(filter) = &query.filter else {
        return Vec::new();
    };
    match Template::parse(filter) {
        Ok(template) => template
            .paths()
            .filter(|path| !matches!(path, Path::Now | Path::Today | Path::User))
            .map(|path| {
                Problem::new(
                    format!("{at}/filter"),
                    format!(
                        "`{{{{ {path} }}}}`: a report's filter may name `now`, `today` and `user` (with offsets such as `today - 30d`)"
                    ),
                )
            })
            .collect(),
        Err(message) => vec![Problem::new(format!("{at}/filter"), message)],
    }
}

/// The filter with its templates rendered for `user` at `now`.
fn render_filter(
    filter: Option<&str>,
    user: &str,
    now: OffsetDateTime,
) -> Result<Option<String>, String> {
    let Some(filter) = filter else {
        return Ok(None);
    };
    let template = Template::parse(filter)?;
    let scope = Scope {
        now: Some(now),
        user,
        ..Scope::default()
    };
    template.render_filter(&scope).map(Some)
}

/// Both filters, joined with `and`.
fn and(left: Option<String>, right: Option<String>) -> Option<String> {
    match (left, right) {
        (Some(left), Some(right)) => Some(format!("({left}) and ({right})")),
        (left, right) => left.or(right),
    }
}

/// Checks a report's query against the tenant's entities (in the caller's transaction), as an
/// administrator would see them: the entity, its fields, groups, measures, filter and sort.
pub async fn check_query(
    records: &Records,
    metadata: &Metadata,
    scoped: &mut Scoped<'_>,
    at: &str,
    query: &Query,
) -> Vec<Problem> {
    let compiled = match metadata.compiled(scoped, &query.entity).await {
        Ok(compiled) => compiled,
        Err(MetadataError::UnknownEntity(name)) => {
            return vec![Problem::new(
                format!("{at}/entity"),
                format!("entity `{name}` does not exist"),
            )];
        }
        Err(error) => return vec![Problem::new(format!("{at}/entity"), error.to_string())],
    };
    // Templates rendered as they would be now (`now`, `today` and `user` are typed values: a
    // placeholder text would not compare with a datetime).
    let filter = match render_filter(
        query.filter.as_deref(),
        "00000000-0000-7000-8000-000000000000",
        OffsetDateTime::now_utc(),
    ) {
        Ok(filter) => filter,
        Err(message) => return vec![Problem::new(format!("{at}/filter"), message)],
    };
    let mut problems = Vec::new();
    match query.query_type {
        QueryType::Aggregate => {
            let params = query.aggregate_params(filter);
            if let Err(error) = records
                .plan_aggregate(scoped, None, &query.entity, &params)
                .await
            {
                problems.push(Problem::new(at_or_root(at), error.to_string()));
            }
        }
        QueryType::List => {
            let definition = &compiled.definition;
            for (index, field) in query.fields.iter().flatten().enumerate() {
                if !field.starts_with('_') && definition.field(field).is_none() {
                    problems.push(Problem::new(
                        format!("{at}/fields/{index}"),
                        format!("entity `{}` has no field `{field}`", query.entity),
                    ));
                }
            }
            if let Some(filter) = &filter {
                let mut builder = crate::store::records::ListQuery::builder(scoped.dialect());
                if let Err(message) =
                    record_query::filter_condition(definition, filter, &mut builder)
                {
                    problems.push(Problem::new(format!("{at}/filter"), message));
                }
            }
            if let Some(sort) = &query.sort
                && let Err(message) = record_query::parse_sort(definition, sort)
            {
                problems.push(Problem::new(format!("{at}/sort"), message));
            }
        }
    }
    problems
}

fn at_or_root(at: &str) -> String {
    if at.is_empty() {
        "/".to_owned()
    } else {
        at.to_owned()
    }
}

/// Checks that a KPI's period can apply: its date field is a date, datetime or system timestamp.
async fn check_date_field(
    metadata: &Metadata,
    scoped: &mut Scoped<'_>,
    at: &str,
    entity: &str,
    field: &str,
) -> Vec<Problem> {
    let Ok(compiled) = metadata.compiled(scoped, entity).await else {
        return Vec::new();
    };
    match date_kind(&compiled.definition, field) {
        Ok(_) => Vec::new(),
        Err(message) => vec![Problem::new(format!("{at}/date_field"), message)],
    }
}

/// How a period's bounds are written for a field: dates, or instants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DateKind {
    Date,
    Instant,
}

fn date_kind(
    definition: &crate::metadata::definition::EntityDefinition,
    field: &str,
) -> Result<DateKind, String> {
    match record_query::resolve(definition, field)? {
        Target::System {
            kind: SystemKind::Timestamp,
            ..
        } => Ok(DateKind::Instant),
        Target::Field(found) if found.value_type() == FieldType::Date => Ok(DateKind::Date),
        Target::Field(found) if found.value_type() == FieldType::Datetime => Ok(DateKind::Instant),
        _ => Err(format!(
            "`{field}` is not a date, datetime or system timestamp: a period cannot apply to it"
        )),
    }
}

/// The saved item of `kind` a definition is, checked against the tenant (for the API and packs).
pub async fn check_in(
    records: &Records,
    metadata: &Metadata,
    scoped: &mut Scoped<'_>,
    json: &Value,
    // Reports being saved in the same operation, by name (a pack's).
    pending: &BTreeMap<String, Value>,
) -> Result<(), Vec<Problem>> {
    let problems = match Kind::of(json) {
        Kind::View => {
            let view = crate::views::parse(json)?;
            return crate::views::check_in(metadata, scoped, &view).await;
        }
        Kind::Report => {
            let report = parse_report(json)?;
            check_query(records, metadata, scoped, "", &report.query).await
        }
        Kind::Dashboard => {
            let dashboard = parse_dashboard(json)?;
            let mut problems = Vec::new();
            for (index, widget) in dashboard.widgets.iter().enumerate() {
                let at = format!("/widgets/{index}");
                let source = MeasureSource {
                    report: widget.report.clone(),
                    query: widget.query.clone(),
                    measure: widget.measure.clone(),
                    date_field: widget.date_field.clone(),
                };
                problems.extend(
                    check_source(records, metadata, scoped, &at, widget, &source, pending).await,
                );
                if let Some(divide_by) = &widget.divide_by {
                    problems.extend(
                        check_source(
                            records,
                            metadata,
                            scoped,
                            &format!("{at}/divide_by"),
                            widget,
                            divide_by,
                            pending,
                        )
                        .await,
                    );
                }
            }
            problems
        }
    };
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

async fn check_source(
    records: &Records,
    metadata: &Metadata,
    scoped: &mut Scoped<'_>,
    at: &str,
    widget: &Widget,
    source: &MeasureSource,
    pending: &BTreeMap<String, Value>,
) -> Vec<Problem> {
    let query = match (&source.report, &source.query) {
        (Some(name), _) => {
            let json = match pending.get(name) {
                Some(json) => Some(json.clone()),
                None => match scoped.view(name).await {
                    Ok(stored) => stored.and_then(|s| serde_json::from_str(&s.definition).ok()),
                    Err(error) => {
                        return vec![Problem::new(format!("{at}/report"), error.to_string())];
                    }
                },
            };
            match json.filter(|json| Kind::of(json) == Kind::Report) {
                Some(json) => match serde_json::from_value::<ReportDefinition>(json) {
                    Ok(report) => report.query,
                    Err(error) => {
                        return vec![Problem::new(format!("{at}/report"), error.to_string())];
                    }
                },
                None => {
                    return vec![Problem::new(
                        format!("{at}/report"),
                        format!("no report `{name}`: save it first (or ship it in the same pack)"),
                    )];
                }
            }
        }
        (None, Some(query)) => {
            let found = check_query(records, metadata, scoped, &format!("{at}/query"), query).await;
            if !found.is_empty() {
                return found;
            }
            query.clone()
        }
        (None, None) => {
            return vec![Problem::new(
                at.to_owned(),
                "a widget needs `report` or `query`",
            )];
        }
    };
    let mut problems = Vec::new();
    let kpi = widget.widget_type == WidgetType::Kpi;
    if query.query_type == QueryType::List
        && (kpi || widget.chart.as_deref().is_some_and(|c| c != "table"))
    {
        problems.push(Problem::new(
            at.to_owned(),
            "a list report can only be shown as a table: KPIs and charts need an aggregation",
        ));
    }
    if kpi {
        if let Some(measure) = &source.measure
            && !query.measure_labels().contains(measure)
        {
            problems.push(Problem::new(
                format!("{at}/measure"),
                format!(
                    "`{measure}` is not a measure of the report (its measures: {})",
                    query.measure_labels().join(", ")
                ),
            ));
        }
        if widget.period.is_some() {
            match source.date_field.as_ref().or(widget.date_field.as_ref()) {
                Some(field) => problems
                    .extend(check_date_field(metadata, scoped, at, &query.entity, field).await),
                None => problems.push(Problem::new(
                    format!("{at}/date_field"),
                    "a KPI with a period needs the date field it applies to",
                )),
            }
        }
    }
    problems
}

/// Reports and dashboards of every tenant.
#[derive(Debug, Clone)]
pub struct Analytics {
    store: Store,
    metadata: std::sync::Arc<Metadata>,
    records: Records,
}

/// A saved report or dashboard as the API shows it.
#[derive(Debug, Serialize)]
pub struct Saved {
    #[serde(flatten)]
    pub definition: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pack: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

fn saved(stored: StoredView) -> Result<Saved, StoreError> {
    let definition = serde_json::from_str(&stored.definition)
        .map_err(|error| StoreError::Corrupt(format!("a saved {}: {error}", stored.name)))?;
    Ok(Saved {
        definition,
        pack: stored.pack_id,
        updated_at: stored.updated_at,
    })
}

impl Analytics {
    pub fn new(store: Store, metadata: std::sync::Arc<Metadata>, records: Records) -> Self {
        Self {
            store,
            metadata,
            records,
        }
    }

    pub async fn list(
        &self,
        principal: &Principal,
        kind: Kind,
    ) -> Result<Vec<Saved>, AnalyticsError> {
        let mut conn = self.store.reader().await?;
        let stored = conn.scoped(&principal.tenant).views().await?;
        stored
            .into_iter()
            .filter(|item| {
                serde_json::from_str::<Value>(&item.definition)
                    .is_ok_and(|json| Kind::of(&json) == kind)
            })
            .map(|item| saved(item).map_err(AnalyticsError::from))
            .collect()
    }

    pub async fn get(
        &self,
        principal: &Principal,
        kind: Kind,
        name: &str,
    ) -> Result<Saved, AnalyticsError> {
        let mut conn = self.store.reader().await?;
        let stored = conn
            .scoped(&principal.tenant)
            .view(name)
            .await?
            .ok_or_else(|| AnalyticsError::NotFound(kind.noun(), name.to_owned()))?;
        let item = saved(stored)?;
        if Kind::of(&item.definition) != kind {
            return Err(AnalyticsError::NotFound(kind.noun(), name.to_owned()));
        }
        Ok(item)
    }

    /// Creates (`name` None) or replaces a report or dashboard; a replaced one keeps its pack.
    pub async fn put(
        &self,
        principal: &Principal,
        kind: Kind,
        name: Option<&str>,
        mut json: Value,
    ) -> Result<(Saved, bool), AnalyticsError> {
        if let Value::Object(object) = &mut json {
            object
                .entry("kind")
                .or_insert_with(|| Value::String(kind.noun().to_owned()));
            if let Some(name) = name {
                object
                    .entry("name")
                    .or_insert_with(|| Value::String(name.to_owned()));
            }
        }
        let parsed_name = match kind {
            Kind::Report => parse_report(&json)
                .map(|report| report.name)
                .map_err(|problems| AnalyticsError::Invalid("report", problems))?,
            Kind::Dashboard => parse_dashboard(&json)
                .map(|dashboard| dashboard.name)
                .map_err(|problems| AnalyticsError::Invalid("dashboard", problems))?,
            Kind::View => unreachable!("views are not written here"),
        };
        if Kind::of(&json) != kind {
            return Err(AnalyticsError::BadRequest(format!(
                "`kind` is `{}` here",
                kind.noun()
            )));
        }
        if let Some(name) = name
            && name != parsed_name
        {
            return Err(AnalyticsError::BadRequest(format!(
                "the body names `{parsed_name}` but the path `{name}`: a {} cannot be renamed",
                kind.noun()
            )));
        }
        let mut tx = self.store.begin().await?;
        let mut scoped = tx.scoped(&principal.tenant);
        let existing = scoped.view(&parsed_name).await?;
        let pack = match (&existing, name) {
            (Some(existing), None) => {
                let existing_kind = serde_json::from_str::<Value>(&existing.definition)
                    .map(|json| Kind::of(&json))
                    .unwrap_or(Kind::View);
                return Err(AnalyticsError::Exists {
                    name: parsed_name,
                    existing: existing_kind.noun(),
                });
            }
            (Some(existing), Some(_)) => {
                let existing_json: Value =
                    serde_json::from_str(&existing.definition).unwrap_or_default();
                if Kind::of(&existing_json) != kind {
                    return Err(AnalyticsError::NotFound(kind.noun(), parsed_name));
                }
                existing.pack_id.clone()
            }
            (None, Some(_)) => return Err(AnalyticsError::NotFound(kind.noun(), parsed_name)),
            (None, None) => None,
        };
        check_in(
            &self.records,
            &self.metadata,
            &mut scoped,
            &json,
            &BTreeMap::new(),
        )
        .await
        .map_err(|problems| AnalyticsError::Invalid(kind.noun(), problems))?;
        scoped
            .put_view(&parsed_name, &json.to_string(), pack.as_deref())
            .await?;
        let stored = scoped
            .view(&parsed_name)
            .await?
            .ok_or_else(|| StoreError::Corrupt("a saved item vanished".to_owned()))?;
        tx.commit().await?;
        Ok((saved(stored)?, existing.is_none()))
    }

    pub async fn delete(
        &self,
        principal: &Principal,
        kind: Kind,
        name: &str,
    ) -> Result<(), AnalyticsError> {
        self.get(principal, kind, name).await?;
        let mut tx = self.store.begin().await?;
        tx.scoped(&principal.tenant).delete_view(name).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Runs a saved report as `principal`.
    pub async fn report_data(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<Value, AnalyticsError> {
        let query = self.source_query(principal, Some(name), None).await?;
        Ok(self
            .run(principal, &query, None, OffsetDateTime::now_utc())
            .await?)
    }

    /// Runs a query as `principal`, with an extra filter (a period's bounds).
    async fn run(
        &self,
        principal: &Principal,
        query: &Query,
        extra: Option<String>,
        now: OffsetDateTime,
    ) -> Result<Value, RecordError> {
        let filter = render_filter(query.filter.as_deref(), principal.user.as_str(), now)
            .map_err(RecordError::BadRequest)?;
        let filter = and(filter, extra);
        match query.query_type {
            QueryType::Aggregate => {
                let params = query.aggregate_params(filter);
                let aggregation = self
                    .records
                    .aggregate(principal, &query.entity, &params)
                    .await?;
                Ok(serde_json::to_value(aggregation).expect("aggregations serialize"))
            }
            QueryType::List => {
                let params = ListParams {
                    filter,
                    sort: query.sort.clone(),
                    limit: query.limit,
                    shape: Shape {
                        fields: query.fields.as_ref().map(|fields| fields.join(",")),
                        expand: None,
                    },
                    ..ListParams::default()
                };
                let page = self.records.list(principal, &query.entity, &params).await?;
                Ok(serde_json::to_value(page).expect("pages serialize"))
            }
        }
    }

    /// Every widget of a dashboard, computed as `principal`. A widget the user may not see (an
    /// entity or field their roles hide) carries its error; the others are computed.
    pub async fn dashboard_data(
        &self,
        principal: &Principal,
        name: &str,
    ) -> Result<Value, AnalyticsError> {
        let saved = self.get(principal, Kind::Dashboard, name).await?;
        let dashboard: DashboardDefinition = serde_json::from_value(saved.definition)
            .map_err(|error| StoreError::Corrupt(format!("dashboard `{name}`: {error}")))?;
        let now = OffsetDateTime::now_utc();
        let zone = {
            let mut conn = self.store.reader().await?;
            let (_, zone) = conn.scoped(&principal.tenant).tenant_settings().await?;
            timers::parse_time_zone(&zone).unwrap_or(chrono_tz::UTC)
        };
        // Widgets are computed at once, each on its own read connection (on SQLite, each on its
        // own thread): the dashboard takes about as long as its slowest widget, not their sum.
        let mut tasks = tokio::task::JoinSet::new();
        for (index, widget) in dashboard.widgets.iter().cloned().enumerate() {
            let (this, principal) = (self.clone(), principal.clone());
            tasks.spawn(async move {
                let started = std::time::Instant::now();
                let computed = match widget.widget_type {
                    WidgetType::Kpi => this.kpi(&principal, &widget, zone, now).await,
                    WidgetType::Chart | WidgetType::Table => {
                        this.chart(&principal, &widget, now).await
                    }
                };
                (index, started.elapsed(), computed)
            });
        }
        let mut computed = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            computed.push(joined.map_err(|error| {
                StoreError::Corrupt(format!("a dashboard widget's task failed: {error}"))
            })?);
        }
        computed.sort_by_key(|(index, ..)| *index);
        let mut widgets = Vec::new();
        for ((_, elapsed, computed), widget) in computed.into_iter().zip(&dashboard.widgets) {
            let mut out = Map::new();
            out.insert("id".into(), json!(widget.id));
            out.insert("title".into(), json!(widget.title));
            out.insert("type".into(), json!(widget.widget_type));
            // How long the widget took: what to look at when a dashboard is slow.
            out.insert(
                "ms".into(),
                json!((elapsed.as_secs_f64() * 10_000.0).round() / 10.0),
            );
            match computed {
                Ok(Value::Object(values)) => out.extend(values),
                Ok(other) => {
                    out.insert("data".into(), other);
                }
                Err(AnalyticsError::Records(error)) if widget_error(&error).is_some() => {
                    let (code, message) = widget_error(&error).expect("checked");
                    out.insert("error".into(), json!({"code": code, "message": message}));
                }
                Err(AnalyticsError::NotFound(kind, name)) => {
                    out.insert(
                        "error".into(),
                        json!({"code": "not_found", "message": format!("no {kind} `{name}`")}),
                    );
                }
                Err(error) => return Err(error),
            }
            widgets.push(Value::Object(out));
        }
        Ok(json!({
            "name": dashboard.name,
            "label": dashboard.label,
            "time_zone": zone.name(),
            "computed_at": template::format_time(now),
            "widgets": widgets,
        }))
    }

    async fn source_query(
        &self,
        principal: &Principal,
        report: Option<&str>,
        query: Option<&Query>,
    ) -> Result<Query, AnalyticsError> {
        match (report, query) {
            (Some(name), _) => {
                let saved = self.get(principal, Kind::Report, name).await?;
                let report: ReportDefinition = serde_json::from_value(saved.definition)
                    .map_err(|error| StoreError::Corrupt(format!("report `{name}`: {error}")))?;
                Ok(report.query)
            }
            (None, Some(query)) => Ok(query.clone()),
            (None, None) => Err(AnalyticsError::BadRequest(
                "a widget needs `report` or `query`".to_owned(),
            )),
        }
    }

    async fn chart(
        &self,
        principal: &Principal,
        widget: &Widget,
        now: OffsetDateTime,
    ) -> Result<Value, AnalyticsError> {
        let query = self
            .source_query(principal, widget.report.as_deref(), widget.query.as_ref())
            .await?;
        let mut result = self.run(principal, &query, None, now).await?;
        let chart = widget.chart.clone().unwrap_or_else(|| {
            match (widget.widget_type, query.query_type) {
                (WidgetType::Table, _) | (_, QueryType::List) => "table",
                _ => "bar",
            }
            .to_owned()
        });
        if chart == "pareto" {
            let measure = query.measure_labels()[0].clone();
            let summary = pareto(&mut result, &measure);
            result["pareto"] = summary;
        }
        if let Value::Object(object) = &mut result {
            object.insert("chart".into(), json!(chart));
            // A list's columns, in the order the report names them.
            if query.query_type == QueryType::List
                && let Some(fields) = &query.fields
            {
                object.insert("fields".into(), json!(fields));
            }
            object.insert("group_by".into(), json!(query.group_by));
            object.insert("measures".into(), json!(query.measure_labels()));
        }
        Ok(result)
    }

    async fn kpi(
        &self,
        principal: &Principal,
        widget: &Widget,
        zone: chrono_tz::Tz,
        now: OffsetDateTime,
    ) -> Result<Value, AnalyticsError> {
        let main = MeasureSource {
            report: widget.report.clone(),
            query: widget.query.clone(),
            measure: widget.measure.clone(),
            date_field: widget.date_field.clone(),
        };
        let bounds = widget.period.map(|period| period_bounds(zone, now, period));
        // The current and the previous period at once.
        let previous_of = |source: &MeasureSource| {
            let source = source.clone();
            async move {
                match bounds {
                    Some(bounds) => self
                        .measure(principal, widget, &source, Some(bounds.previous), zone, now)
                        .await
                        .map(Some),
                    None => Ok(None),
                }
            }
        };
        let (current, previous) = tokio::join!(
            self.measure(
                principal,
                widget,
                &main,
                bounds.map(|b| b.current),
                zone,
                now
            ),
            previous_of(&main)
        );
        let (current, previous) = (current?, previous?);
        let (current, previous) = match &widget.divide_by {
            Some(divisor) => {
                let (current_divisor, previous_divisor) = tokio::join!(
                    self.measure(
                        principal,
                        widget,
                        divisor,
                        bounds.map(|b| b.current),
                        zone,
                        now
                    ),
                    previous_of(divisor)
                );
                let (current_divisor, previous_divisor) = (current_divisor?, previous_divisor?);
                (
                    divide(&current, &current_divisor),
                    previous
                        .zip(previous_divisor)
                        .map(|(previous, divisor)| divide(&previous, &divisor)),
                )
            }
            None => (current, previous),
        };
        let mut out = Map::new();
        if let Some(bounds) = bounds {
            out.insert(
                "period".into(),
                json!({
                    "name": widget.period,
                    "start": bounds.current.0.to_string(),
                    "end": bounds.current.1.to_string(),
                    "previous_start": bounds.previous.0.to_string(),
                }),
            );
        }
        if let Some(format) = &widget.format {
            out.insert("format".into(), json!(format));
        }
        if current.grouped {
            let previous_values = previous.map(|previous| previous.values).unwrap_or_default();
            let groups: Vec<Value> = current
                .values
                .iter()
                .map(|(group, value)| {
                    let key = group_key(group);
                    let target = widget.targets.get(&key).copied().or(widget.target);
                    let previous = previous_values
                        .iter()
                        .find(|(other, _)| other == group)
                        .and_then(|(_, value)| *value)
                        .or(bounds.map(|_| 0.0));
                    kpi_values(*value, target, previous, group.clone())
                })
                .collect();
            out.insert("groups".into(), Value::Array(groups));
            if let Some(currency) = current.currency {
                out.insert("currency".into(), json!(currency));
            }
        } else {
            let value = current.values.first().and_then(|(_, value)| *value);
            let previous = previous.map(|previous| {
                previous
                    .values
                    .first()
                    .and_then(|(_, value)| *value)
                    .unwrap_or(0.0)
            });
            if let Value::Object(values) = kpi_values(value, widget.target, previous, Value::Null) {
                out.extend(values.into_iter().filter(|(key, _)| key != "group"));
            }
            if let Some(currency) = current.currency {
                out.insert("currency".into(), json!(currency));
            }
        }
        Ok(Value::Object(out))
    }

    /// One measure of a report over a period (`[start, end)` local dates).
    async fn measure(
        &self,
        principal: &Principal,
        widget: &Widget,
        source: &MeasureSource,
        period: Option<(Date, Date)>,
        zone: chrono_tz::Tz,
        now: OffsetDateTime,
    ) -> Result<Measured, AnalyticsError> {
        let query = self
            .source_query(principal, source.report.as_deref(), source.query.as_ref())
            .await?;
        let label = source
            .measure
            .clone()
            .unwrap_or_else(|| query.measure_labels()[0].clone());
        let extra = match period {
            Some((start, end)) => {
                let field = source
                    .date_field
                    .as_ref()
                    .or(widget.date_field.as_ref())
                    .ok_or_else(|| {
                        AnalyticsError::BadRequest(
                            "a KPI with a period needs `date_field`".to_owned(),
                        )
                    })?;
                let kind = {
                    let mut conn = self.store.reader().await?;
                    let mut scoped = conn.scoped(&principal.tenant);
                    let compiled = self
                        .metadata
                        .compiled(&mut scoped, &query.entity)
                        .await
                        .map_err(RecordError::from)?;
                    date_kind(&compiled.definition, field).map_err(AnalyticsError::BadRequest)?
                };
                let bound = |date: Date| match kind {
                    DateKind::Date => date.to_string(),
                    DateKind::Instant => template::format_time(timers::local_moment(
                        zone,
                        date,
                        chrono::NaiveTime::MIN,
                    )),
                };
                Some(format!(
                    "{field} ge '{}' and {field} lt '{}'",
                    bound(start),
                    bound(end)
                ))
            }
            None => None,
        };
        let result = self.run(principal, &query, extra, now).await?;
        let (function, field) = match label.split_once(':') {
            Some((function, field)) => (function.to_owned(), Some(field.to_owned())),
            None => (label.clone(), None),
        };
        let mut currency = None;
        let values = result["data"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|row| {
                let raw = match &field {
                    Some(field) => &row[function.as_str()][field.as_str()],
                    None => &row[function.as_str()],
                };
                let value = match raw {
                    Value::Object(money) => {
                        if let Some(code) = money.get("currency").and_then(Value::as_str) {
                            currency = Some(code.to_owned());
                        }
                        money.get("amount").and_then(Value::as_f64)
                    }
                    other => other.as_f64(),
                };
                (row["group"].clone(), value)
            })
            .collect();
        Ok(Measured {
            grouped: !query.group_by.is_empty(),
            values,
            currency,
        })
    }
}

/// The values of one measure: one per group (one group `{}` when ungrouped).
#[derive(Debug, Clone)]
struct Measured {
    grouped: bool,
    values: Vec<(Value, Option<f64>)>,
    currency: Option<String>,
}

/// `value / divisor` group by group (none where the divisor is missing or zero).
fn divide(value: &Measured, divisor: &Measured) -> Measured {
    let values = value
        .values
        .iter()
        .map(|(group, numerator)| {
            let denominator = divisor
                .values
                .iter()
                .find(|(other, _)| other == group || !divisor.grouped)
                .and_then(|(_, value)| *value);
            let ratio = match (numerator, denominator) {
                (Some(n), Some(d)) if d != 0.0 => Some(n / d),
                (None, Some(d)) if d != 0.0 => Some(0.0),
                _ => None,
            };
            (group.clone(), ratio)
        })
        .collect();
    Measured {
        grouped: value.grouped,
        values,
        currency: None,
    }
}

/// A group's key for `targets`: its values joined with `/`.
fn group_key(group: &Value) -> String {
    group
        .as_object()
        .map(|object| {
            object
                .values()
                .map(|value| match value {
                    Value::String(text) => text.clone(),
                    Value::Null => String::new(),
                    other => other.to_string(),
                })
                .collect::<Vec<_>>()
                .join("/")
        })
        .unwrap_or_default()
}

fn kpi_values(
    value: Option<f64>,
    target: Option<f64>,
    previous: Option<f64>,
    group: Value,
) -> Value {
    let value = value.or(Some(0.0));
    let progress = match (value, target) {
        (Some(value), Some(target)) if target != 0.0 => Some(round(value / target)),
        _ => None,
    };
    let change = match (value, previous) {
        (Some(value), Some(previous)) if previous != 0.0 => {
            Some(round((value - previous) / previous.abs()))
        }
        _ => None,
    };
    json!({
        "group": group,
        "value": value.map(round),
        "target": target,
        "progress": progress,
        "previous": previous.map(round),
        "change": change,
    })
}

fn round(value: f64) -> f64 {
    (value * 10_000.0).round() / 10_000.0
}

/// Adds each group's share and cumulative share of `measure` (groups sorted by it, largest
/// first) and returns the summary: how many of the groups bring 80% of the total.
fn pareto(result: &mut Value, measure: &str) -> Value {
    let (function, field) = match measure.split_once(':') {
        Some((function, field)) => (function.to_owned(), Some(field.to_owned())),
        None => (measure.to_owned(), None),
    };
    let value_of = |row: &Value| -> f64 {
        let raw = match &field {
            Some(field) => &row[function.as_str()][field.as_str()],
            None => &row[function.as_str()],
        };
        match raw {
            Value::Object(money) => money.get("amount").and_then(Value::as_f64),
            other => other.as_f64(),
        }
        .unwrap_or(0.0)
    };
    let Some(rows) = result["data"].as_array_mut() else {
        return Value::Null;
    };
    rows.sort_by(|a, b| value_of(b).total_cmp(&value_of(a)));
    let total: f64 = rows.iter().map(value_of).sum();
    let mut cumulative = 0.0;
    let mut groups_for_80 = None;
    for (index, row) in rows.iter_mut().enumerate() {
        let value = value_of(row);
        cumulative += value;
        let share = if total == 0.0 { 0.0 } else { value / total };
        let cumulative_share = if total == 0.0 {
            0.0
        } else {
            cumulative / total
        };
        row["share"] = json!(round(share));
        row["cumulative_share"] = json!(round(cumulative_share));
        if groups_for_80.is_none() && cumulative_share >= 0.8 - 1e-9 {
            groups_for_80 = Some(index + 1);
        }
    }
    let groups = rows.len();
    json!({
        "total": round(total),
        "groups": groups,
        "groups_for_80_percent": groups_for_80,
        "share_of_groups": groups_for_80.map(|k| round(k as f64 / groups.max(1) as f64)),
    })
}

/// A widget's error to show in its place, for errors of what the user may see or ask.
fn widget_error(error: &RecordError) -> Option<(&'static str, String)> {
    match error {
        RecordError::Forbidden(message) => Some(("forbidden", message.clone())),
        RecordError::BadRequest(message) => Some(("bad_request", message.clone())),
        RecordError::Metadata(MetadataError::UnknownEntity(name)) => {
            Some(("not_found", format!("entity `{name}` does not exist")))
        }
        _ => None,
    }
}

#[derive(Debug, Clone, Copy)]
struct Bounds {
    current: (Date, Date),
    previous: (Date, Date),
}

/// The current and previous period containing `now` in `zone`, as local dates `[start, end)`.
fn period_bounds(zone: chrono_tz::Tz, now: OffsetDateTime, period: Period) -> Bounds {
    let today = timers::local_date(zone, now);
    let start = match period {
        Period::Day => today,
        Period::Week => {
            today - Duration::days(i64::from(today.weekday().number_days_from_monday()))
        }
        Period::Month => today.replace_day(1).expect("day 1 exists"),
        Period::Quarter => {
            let month = (u8::from(today.month()) - 1) / 3 * 3 + 1;
            Date::from_calendar_date(today.year(), Month::try_from(month).expect("a month"), 1)
                .expect("a quarter's first day")
        }
        Period::Year => {
            Date::from_calendar_date(today.year(), Month::January, 1).expect("January 1st")
        }
    };
    let step = |date: Date, forward: bool| -> Date {
        match period {
            Period::Day => date + Duration::days(if forward { 1 } else { -1 }),
            Period::Week => date + Duration::days(if forward { 7 } else { -7 }),
            Period::Month => add_months(date, if forward { 1 } else { -1 }),
            Period::Quarter => add_months(date, if forward { 3 } else { -3 }),
            Period::Year => add_months(date, if forward { 12 } else { -12 }),
        }
    };
    Bounds {
        current: (start, step(start, true)),
        previous: (step(start, false), start),
    }
}

/// The first of the month `months` after (or before) the first-of-month `date`.
fn add_months(date: Date, months: i32) -> Date {
    let index = date.year() * 12 + i32::from(u8::from(date.month())) - 1 + months;
    let (year, month) = (index.div_euclid(12), index.rem_euclid(12) + 1);
    Date::from_calendar_date(year, Month::try_from(month as u8).expect("a month"), 1)
        .expect("a first of month")
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    #[test]
    fn periods_are_local_and_have_a_previous_one() {
        let shanghai: chrono_tz::Tz = "Asia/Shanghai".parse().unwrap();
        // 2026-03-31T20:00Z is already April 1st in Shanghai.
        let now = datetime!(2026-03-31 20:00 UTC);
        let day = period_bounds(shanghai, now, Period::Day);
        assert_eq!(day.current, (date!(2026 - 04 - 01), date!(2026 - 04 - 02)));
        assert_eq!(day.previous, (date!(2026 - 03 - 31), date!(2026 - 04 - 01)));
        let week = period_bounds(shanghai, now, Period::Week);
        assert_eq!(week.current, (date!(2026 - 03 - 30), date!(2026 - 04 - 06)));
        let quarter = period_bounds(shanghai, now, Period::Quarter);
        assert_eq!(
            quarter.current,
            (date!(2026 - 04 - 01), date!(2026 - 07 - 01))
        );
        assert_eq!(
            quarter.previous,
            (date!(2026 - 01 - 01), date!(2026 - 04 - 01))
        );
        let year = period_bounds(chrono_tz::UTC, now, Period::Year);
        assert_eq!(
            year.previous,
            (date!(2025 - 01 - 01), date!(2026 - 01 - 01))
        );
        let month = period_bounds(
            chrono_tz::UTC,
            datetime!(2026-01-15 00:00 UTC),
            Period::Month,
        );
        assert_eq!(
            month.previous,
            (date!(2025 - 12 - 01), date!(2026 - 01 - 01))
        );
    }

    #[test]
    fn pareto_finds_the_few_groups_that_bring_most() {
        let mut result = json!({"data": [
            {"group": {"a": "x"}, "sum": {"v": 10}},
            {"group": {"a": "y"}, "sum": {"v": 80}},
            {"group": {"a": "z"}, "sum": {"v": 5}},
            {"group": {"a": "w"}, "sum": {"v": 5}},
            {"group": {"a": "v"}, "sum": {"v": 0}}
        ]});
        let summary = pareto(&mut result, "sum:v");
        assert_eq!(summary["groups_for_80_percent"], json!(1));
        assert_eq!(summary["share_of_groups"], json!(0.2));
        assert_eq!(result["data"][0]["group"]["a"], json!("y"));
        assert_eq!(result["data"][1]["cumulative_share"], json!(0.9));
    }

    #[test]
    fn kpis_compare_with_target_and_previous() {
        let values = kpi_values(Some(150.0), Some(200.0), Some(100.0), Value::Null);
        assert_eq!(values["progress"], json!(0.75));
        assert_eq!(values["change"], json!(0.5));
        let none = kpi_values(None, None, Some(0.0), Value::Null);
        assert_eq!(none["value"], json!(0.0));
        assert_eq!(none["change"], Value::Null);
    }

    #[test]
    fn reports_and_dashboards_are_validated() {
        let report = parse_report(&json!({"kind": "report", "name": "r", "entity": "deal",
            "group_by": ["stage"], "measures": ["sum:amount"], "filter": "close_on ge {{today - 30d}}"}));
        assert!(report.is_ok(), "{report:?}");
        let bad = parse_report(&json!({"kind": "report", "name": "r", "entity": "deal",
            "filter": "owner eq {{record.x}}"}))
        .unwrap_err();
        assert!(
            bad[0]
                .message
                .contains("may name `now`, `today` and `user`"),
            "{bad:?}"
        );
        let list_with_measures =
            parse_report(&json!({"kind": "report", "name": "r", "entity": "deal",
            "type": "list", "measures": ["count"]}));
        assert!(list_with_measures.is_err());
        let twice = parse_dashboard(&json!({"kind": "dashboard", "name": "d", "widgets": [
            {"id": "a", "type": "chart", "report": "r"},
            {"id": "a", "type": "kpi", "report": "r", "period": "month", "date_field": "close_on"}
        ]}))
        .unwrap_err();
        assert!(twice[0].message.contains("two widgets"), "{twice:?}");
        let no_date = parse_dashboard(&json!({"kind": "dashboard", "name": "d", "widgets": [
            {"id": "a", "type": "kpi", "report": "r", "period": "month"}
        ]}));
        assert!(no_date.is_err());
    }
}
