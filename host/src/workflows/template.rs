//! Templates in step values: `{{ record.name }}`, `{{ today + 1d }}`, `{{ steps.task.id }}`.
//! A string that is exactly one template keeps the value's type (a number stays a number);
//! otherwise each template is replaced by its text. In filters, a template becomes a quoted
//! literal of the filter language, so a value can never change the filter's structure.

use std::fmt;

use serde_json::{Map, Value};
use time::format_description::well_known::Rfc3339;
use time::macros::format_description;
use time::{Date, OffsetDateTime, PrimitiveDateTime};

use super::definition::parse_duration;

/// The longest text a rendered template may produce.
pub const MAX_RENDERED: usize = 100_000;

/// What a template may name.
#[derive(Debug, Clone, PartialEq)]
pub enum Path {
    Now,
    Today,
    /// Who triggered the run.
    User,
    /// The run's id.
    Run,
    Record(String),
    Old(String),
    Input(String),
    Step(String, String),
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Path::Now => write!(f, "now"),
            Path::Today => write!(f, "today"),
            Path::User => write!(f, "user"),
            Path::Run => write!(f, "run._id"),
            Path::Record(field) => write!(f, "record.{field}"),
            Path::Old(field) => write!(f, "old.{field}"),
            Path::Input(key) => write!(f, "input.{key}"),
            Path::Step(id, key) => write!(f, "steps.{id}.{key}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Expr {
    path: Path,
    offset: Option<time::Duration>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    Text(String),
    Expr(Expr),
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    parts: Vec<Part>,
}

/// What templates are rendered against.
#[derive(Debug, Clone, Default)]
pub struct Scope<'a> {
    pub now: Option<OffsetDateTime>,
    pub user: &'a str,
    pub run: &'a str,
    /// The run's record as it is now, with its system fields (`_id`, `_owner`, …).
    pub record: Option<&'a Map<String, Value>>,
    pub old: Option<&'a Map<String, Value>>,
    pub input: Option<&'a Map<String, Value>>,
    pub steps: Option<&'a Map<String, Value>>,
}

fn parse_path(text: &str) -> Result<Path, String> {
    let segments: Vec<&str> = text.split('.').collect();
    let name_ok = |name: &str| {
        !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
    };
    let path = match segments.as_slice() {
        ["now"] => Path::Now,
        ["today"] => Path::Today,
        ["user"] => Path::User,
        ["run", "_id"] => Path::Run,
        ["record", field] if name_ok(field) => Path::Record((*field).to_owned()),
        ["old", field] if name_ok(field) => Path::Old((*field).to_owned()),
        ["input", key] if !key.is_empty() => Path::Input((*key).to_owned()),
        ["steps", id, key] if name_ok(id) && !key.is_empty() => {
            Path::Step((*id).to_owned(), (*key).to_owned())
        }
        _ => {
            return Err(format!(
                "`{{{{ {text} }}}}` names nothing: use record.<field>, old.<field>, input.<key>, steps.<step>.<key>, user, run._id, now or today"
            ));
        }
    };
    Ok(path)
}

fn parse_expr(text: &str) -> Result<Expr, String> {
    let text = text.trim();
    let (path, offset) = match text.find(['+', '-']) {
        Some(at) => {
            let offset: String = text[at..].chars().filter(|c| !c.is_whitespace()).collect();
            let offset = parse_duration(&offset).ok_or_else(|| {
                format!(
                    "`{{{{ {text} }}}}`: `{}` is not a duration such as `+ 2d`",
                    &text[at..]
                )
            })?;
            (text[..at].trim(), Some(offset))
        }
        None => (text, None),
    };
    Ok(Expr {
        path: parse_path(path)?,
        offset,
    })
}

impl Template {
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut parts = Vec::new();
        let mut rest = text;
        while let Some(start) = rest.find("{{") {
            if start > 0 {
                parts.push(Part::Text(rest[..start].to_owned()));
            }
            let after = &rest[start + 2..];
            let end = after
                .find("}}")
                .ok_or_else(|| format!("`{{{{` without a closing `}}}}` in `{text}`"))?;
            parts.push(Part::Expr(parse_expr(&after[..end])?));
            rest = &after[end + 2..];
        }
        if !rest.is_empty() {
            parts.push(Part::Text(rest.to_owned()));
        }
        Ok(Self { parts })
    }

    pub fn paths(&self) -> impl Iterator<Item = &Path> {
        self.parts.iter().filter_map(|part| match part {
            Part::Expr(expr) => Some(&expr.path),
            Part::Text(_) => None,
        })
    }

    /// The filter with each template replaced by a placeholder literal: for checking that it
    /// parses and which fields it names.
    pub fn placeholder_filter(&self) -> String {
        self.parts
            .iter()
            .map(|part| match part {
                Part::Text(text) => text.clone(),
                Part::Expr(_) => "'x'".to_owned(),
            })
            .collect()
    }

    /// The value: a string that is one template keeps the value's type.
    pub fn render(&self, scope: &Scope<'_>) -> Result<Value, String> {
        if let [Part::Expr(expr)] = self.parts.as_slice() {
            return evaluate(expr, scope);
        }
        let mut text = String::new();
        for part in &self.parts {
            match part {
                Part::Text(literal) => text.push_str(literal),
                Part::Expr(expr) => match evaluate(expr, scope)? {
                    Value::Null => {}
                    Value::String(value) => text.push_str(&value),
                    other => text.push_str(&other.to_string()),
                },
            }
            if text.len() > MAX_RENDERED {
                return Err(format!(
                    "a rendered template is longer than {MAX_RENDERED} bytes"
                ));
            }
        }
        Ok(Value::String(text))
    }

    /// A filter with each template as a literal of the filter language.
    pub fn render_filter(&self, scope: &Scope<'_>) -> Result<String, String> {
        let mut text = String::new();
        for part in &self.parts {
            match part {
                Part::Text(literal) => text.push_str(literal),
                Part::Expr(expr) => match evaluate(expr, scope)? {
                    Value::String(value) => {
                        text.push('\'');
                        text.push_str(&value.replace('\'', "''"));
                        text.push('\'');
                    }
                    Value::Number(number) => text.push_str(&number.to_string()),
                    Value::Bool(boolean) => text.push_str(&boolean.to_string()),
                    Value::Null => {
                        return Err(format!(
                            "`{}` is empty, so the filter cannot compare with it",
                            expr.path
                        ));
                    }
                    _ => {
                        return Err(format!(
                            "`{}` is a list or an object, not a value to filter on",
                            expr.path
                        ));
                    }
                },
            }
        }
        Ok(text)
    }
}

/// Renders every string of `values` (one level: field values).
pub fn render_values(
    values: &Map<String, Value>,
    scope: &Scope<'_>,
) -> Result<Map<String, Value>, String> {
    values
        .iter()
        .map(|(name, value)| {
            let value = match value {
                Value::String(text) => Template::parse(text)
                    .and_then(|template| template.render(scope))
                    .map_err(|message| format!("`{name}`: {message}"))?,
                other => other.clone(),
            };
            Ok((name.clone(), value))
        })
        .collect()
}

/// Renders a template as text (`null` is the empty string).
pub fn render_text(text: &str, scope: &Scope<'_>) -> Result<String, String> {
    Ok(match Template::parse(text)?.render(scope)? {
        Value::Null => String::new(),
        Value::String(text) => text,
        other => other.to_string(),
    })
}

fn evaluate(expr: &Expr, scope: &Scope<'_>) -> Result<Value, String> {
    let now = scope.now.unwrap_or_else(OffsetDateTime::now_utc);
    let lookup = |map: Option<&Map<String, Value>>, key: &str| {
        map.and_then(|map| map.get(key))
            .cloned()
            .unwrap_or(Value::Null)
    };
    let base = match &expr.path {
        Path::Now => Value::String(format_time(now)),
        Path::Today => Value::String(format_date(now.date())),
        Path::User => Value::String(scope.user.to_owned()),
        Path::Run => Value::String(scope.run.to_owned()),
        Path::Record(field) => lookup(scope.record, field),
        Path::Old(field) => lookup(scope.old, field),
        Path::Input(key) => lookup(scope.input, key),
        Path::Step(id, key) => scope
            .steps
            .and_then(|steps| steps.get(id))
            .and_then(|output| output.get(key))
            .cloned()
            .unwrap_or(Value::Null),
    };
    let Some(offset) = expr.offset else {
        return Ok(base);
    };
    match &base {
        Value::Null => Ok(Value::Null),
        Value::String(text) => shift(text, offset).ok_or_else(|| {
            format!(
                "`{}` is `{text}`, not a date or time that can be moved",
                expr.path
            )
        }),
        _ => Err(format!(
            "`{}` is not a date or time that can be moved",
            expr.path
        )),
    }
}

/// Moves a date (`2026-03-01`) or a time (RFC 3339) by `offset`; a date moves by whole days.
pub fn shift(text: &str, offset: time::Duration) -> Option<Value> {
    if let Some(date) = parse_date(text) {
        let moved = date.checked_add(time::Duration::days(offset.whole_days()))?;
        return Some(Value::String(format_date(moved)));
    }
    let moment = OffsetDateTime::parse(text, &Rfc3339).ok()?;
    Some(Value::String(format_time(moment.checked_add(offset)?)))
}

pub fn parse_date(text: &str) -> Option<Date> {
    Date::parse(text, format_description!("[year]-[month]-[day]")).ok()
}

/// A date or time value as a moment: a date is its midnight UTC.
pub fn parse_moment(text: &str) -> Option<OffsetDateTime> {
    if let Some(date) = parse_date(text) {
        return Some(PrimitiveDateTime::new(date, time::Time::MIDNIGHT).assume_utc());
    }
    OffsetDateTime::parse(text, &Rfc3339).ok()
}

fn format_date(date: Date) -> String {
    date.format(format_description!("[year]-[month]-[day]"))
        .expect("dates format")
}

/// RFC 3339 in UTC with milliseconds, the precision of datetime fields.
pub fn format_time(moment: OffsetDateTime) -> String {
    let moment = moment.to_offset(time::UtcOffset::UTC);
    let moment = moment
        .replace_nanosecond(moment.nanosecond() / 1_000_000 * 1_000_000)
        .expect("a valid nanosecond");
    moment.format(&Rfc3339).expect("times format")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use time::macros::datetime;

    fn map(value: Value) -> Map<String, Value> {
        value.as_object().unwrap().clone()
    }

    #[test]
    fn one_template_keeps_its_type_and_text_interpolates() {
        let record = map(json!({"amount": 12.5, "name": "Ada", "due": "2026-03-01"}));
        let scope = Scope {
            now: Some(datetime!(2026-02-27 10:00 UTC)),
            record: Some(&record),
            ..Scope::default()
        };
        let render = |text: &str| Template::parse(text).unwrap().render(&scope).unwrap();
        assert_eq!(render("{{record.amount}}"), json!(12.5));
        assert_eq!(
            render("Hi {{ record.name }}, {{record.amount}}"),
            json!("Hi Ada, 12.5")
        );
        assert_eq!(render("{{ record.missing }}"), Value::Null);
        assert_eq!(render("{{ today + 1d }}"), json!("2026-02-28"));
        assert_eq!(render("{{ now - 2h }}"), json!("2026-02-27T08:00:00Z"));
        assert_eq!(render("{{ record.due + 1w }}"), json!("2026-03-08"));
    }

    #[test]
    fn templates_in_filters_are_quoted_literals() {
        let record = map(json!({"name": "O'Brien') or (x eq 'y"}));
        let scope = Scope {
            record: Some(&record),
            ..Scope::default()
        };
        let filter = Template::parse("name eq {{record.name}}")
            .unwrap()
            .render_filter(&scope)
            .unwrap();
        assert_eq!(filter, "name eq 'O''Brien'') or (x eq ''y'");
        let parsed = crate::records::filter::parse(&filter).unwrap();
        assert!(matches!(
            parsed,
            crate::records::filter::Filter::Compare { .. }
        ));
    }

    #[test]
    fn bad_templates_say_what_is_wrong() {
        assert!(
            Template::parse("{{ record.name")
                .unwrap_err()
                .contains("closing")
        );
        assert!(
            Template::parse("{{ secrets }}")
                .unwrap_err()
                .contains("names nothing")
        );
        assert!(
            Template::parse("{{ today + tomorrow }}")
                .unwrap_err()
                .contains("duration")
        );
    }
}
