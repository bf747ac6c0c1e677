//! Dashboard pages: KPI tiles with their target and trend, and charts (bar, line, pie, funnel)
//! drawn as SVG on the server from `Analytics::dashboard_data` — no chart library, no script.

use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use maud::{Markup, html};
use serde_json::Value;

use super::i18n::Lang;
use super::{Chrome, document, respond};
use crate::analytics::Kind;
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::auth::Principal;

/// A palette readable on white, and told apart without colour by the legend's order.
const COLOURS: [&str; 8] = [
    "#2454c5", "#e07b00", "#2e9d5b", "#b42318", "#7a4cc2", "#0f8b9c", "#a86b00", "#5b6475",
];

pub async fn list(
    State(state): State<AppState>,
    principal: Principal,
    headers: HeaderMap,
) -> Response {
    let lang = Lang::of(&headers);
    let result = async {
        let chrome = Chrome::load(lang, &state, &principal, "").await?;
        let saved = state
            .analytics
            .list(&principal, Kind::Dashboard)
            .await
            .map_err(ApiError::from)?;
        let body = html! {
            main {
                h1 { (lang.t("dashboards")) }
                @if saved.is_empty() { p.empty { (lang.t("no_dashboards")) } }
                ul.cards {
                    @for item in &saved {
                        @let name = item.definition["name"].as_str().unwrap_or_default();
                        @let label = item.definition["label"].as_str().unwrap_or(name);
                        li { a href={ "/d/" (name) } { (label) } }
                    }
                }
            }
        };
        Ok::<_, ApiError>(document(lang, lang.t("dashboards"), Some(&chrome), body))
    }
    .await;
    respond(lang, result)
}

pub async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    headers: HeaderMap,
) -> Response {
    let lang = Lang::of(&headers);
    let result = async {
        let chrome = Chrome::load(lang, &state, &principal, "").await?;
        let data = state
            .analytics
            .dashboard_data(&principal, &name)
            .await
            .map_err(ApiError::from)?;
        let title = data["label"].as_str().unwrap_or(&name).to_owned();
        let body = html! {
            main {
                p.crumbs { a href="/d" { (lang.t("dashboards")) } }
                h1 { (title) }
                p.hint { (lang.t("computed_at")) " " (data["computed_at"].as_str().unwrap_or_default()) " (" (data["time_zone"].as_str().unwrap_or_default()) ")" }
                div.widgets {
                    @for widget in data["widgets"].as_array().into_iter().flatten() {
                        (widget_card(lang, widget))
                    }
                }
            }
        };
        Ok::<_, ApiError>(document(lang, &title, Some(&chrome), body))
    }
    .await;
    respond(lang, result)
}

fn widget_title(widget: &Value) -> String {
    widget["title"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| widget["id"].as_str().unwrap_or_default().replace('_', " "))
}

fn widget_card(lang: Lang, widget: &Value) -> Markup {
    let kind = widget["type"].as_str().unwrap_or_default();
    let chart = widget["chart"].as_str().unwrap_or_default();
    html! {
        section.card.widget data-widget=(widget["id"].as_str().unwrap_or_default()) data-type=(kind) {
            h2 { (widget_title(widget)) }
            @if let Some(error) = widget.get("error").filter(|e| !e.is_null()) {
                p.error-summary role="alert" { (error["message"].as_str().unwrap_or_default()) }
            } @else if kind == "kpi" {
                (kpi(lang, widget))
            } @else if chart == "table" || kind == "table" {
                (table(widget))
            } @else {
                (chart_svg(lang, widget))
            }
        }
    }
}

/// A number as a person reads it: thousands grouped, at most two decimals.
pub fn number(value: f64) -> String {
    let negative = value < 0.0;
    let rounded = (value.abs() * 100.0).round() / 100.0;
    let whole = rounded.trunc() as u64;
    let cents = ((rounded - rounded.trunc()) * 100.0).round() as u64;
    let digits = whole.to_string();
    let mut grouped = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            grouped.push(',');
        }
        grouped.push(digit);
    }
    let mut text = if negative {
        format!("-{grouped}")
    } else {
        grouped
    };
    if cents > 0 {
        text.push_str(&format!(".{cents:02}"));
    }
    text
}

fn kpi(lang: Lang, widget: &Value) -> Markup {
    let currency = widget["currency"].as_str().unwrap_or_default();
    let percent = widget["format"].as_str() == Some("percent");
    let show = |value: &Value| -> String {
        match value.as_f64() {
            Some(v) if percent => format!("{}%", number(v * 100.0)),
            Some(v) => format!(
                "{}{}",
                number(v),
                if currency.is_empty() {
                    String::new()
                } else {
                    format!(" {currency}")
                }
            ),
            None => lang.t("none").to_owned(),
        }
    };
    let progress = widget["progress"].as_f64();
    let change = widget["change"].as_f64();
    html! {
        @if let Some(groups) = widget["groups"].as_array() {
            table.kpi-groups {
                tbody {
                    @for group in groups {
                        tr {
                            th scope="row" { (group_label(&group["group"])) }
                            td.value { (show(&group["value"])) }
                            td { @if let Some(p) = group["progress"].as_f64() { (progress_bar(p)) } }
                        }
                    }
                }
            }
        } @else {
            p.kpi-value data-value=(widget["value"].to_string()) { (show(&widget["value"])) }
            @if !widget["target"].is_null() {
                p.kpi-target {
                    (lang.t("target")) " " (show(&widget["target"]))
                    @if let Some(p) = progress { " · " (number(p * 100.0)) "%" (progress_bar(p)) }
                }
            }
            @if let Some(change) = change {
                @let (arrow, class) = if change >= 0.0 { ("▲", "up") } else { ("▼", "down") };
                p.kpi-trend.(class) {
                    (arrow) " " (number(change.abs() * 100.0)) "% " (lang.t("vs_previous")) " (" (show(&widget["previous"])) ")"
                }
            }
            @if let Some(period) = widget["period"].as_object() {
                p.hint { (period.get("start").and_then(Value::as_str).unwrap_or_default()) " – " (period.get("end").and_then(Value::as_str).unwrap_or_default()) }
            }
        }
    }
}

fn progress_bar(progress: f64) -> Markup {
    let width = (progress.clamp(0.0, 1.0) * 100.0).round();
    html! {
        svg.progress viewBox="0 0 100 6" preserveAspectRatio="none" role="img" aria-label={ (number(progress * 100.0)) "%" } {
            rect x="0" y="0" width="100" height="6" fill="#e3e7ef" {}
            rect x="0" y="0" width=(width) height="6" fill=(if progress >= 1.0 { "#2e9d5b" } else { "#2454c5" }) {}
        }
    }
}

/// `{"stage": "won"}` → `won`; several keys joined with ` · `.
fn group_label(group: &Value) -> String {
    match group {
        Value::Object(keys) => keys
            .values()
            .map(|value| match value {
                Value::String(text) => text.clone(),
                Value::Null => "—".to_owned(),
                other => other.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" · "),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The first measure's value of a row (`count`, or e.g. `sum` of `amount`, a money amount).
fn measure_value(widget: &Value, row: &Value) -> f64 {
    let measure = widget["measures"][0].as_str().unwrap_or("count");
    let raw = match measure.split_once(':') {
        Some((function, field)) => &row[function][field],
        None => &row[measure],
    };
    match raw {
        Value::Object(money) => money.get("amount").and_then(Value::as_f64).unwrap_or(0.0),
        other => other.as_f64().unwrap_or(0.0),
    }
}

fn chart_svg(lang: Lang, widget: &Value) -> Markup {
    let rows: Vec<(String, f64)> = widget["data"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|row| (group_label(&row["group"]), measure_value(widget, row)))
        .collect();
    if rows.is_empty() {
        return html! { p.empty { (lang.t("no_records")) } };
    }
    let kind = widget["chart"].as_str().unwrap_or("bar");
    let max = rows
        .iter()
        .map(|(_, v)| *v)
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE);
    let label = widget_title(widget);
    match kind {
        "pie" | "donut" => pie(&label, &rows),
        "line" => line(&label, &rows, max),
        "funnel" => {
            let mut sorted = rows.clone();
            sorted.sort_by(|a, b| b.1.total_cmp(&a.1));
            bars(&label, &sorted, max, true)
        }
        _ => bars(&label, &rows, max, false),
    }
}

/// Horizontal bars, one per group, labelled with the group and its value; a funnel centres them.
fn bars(label: &str, rows: &[(String, f64)], max: f64, centred: bool) -> Markup {
    let row_height = 28.0;
    let height = row_height * rows.len() as f64 + 4.0;
    html! {
        svg.chart viewBox={ "0 0 400 " (height) } role="img" aria-label=(label) {
            @for (index, (group, value)) in rows.iter().enumerate() {
                @let width = (value / max * 220.0).max(1.0);
                @let y = index as f64 * row_height + 2.0;
                @let x = if centred { 120.0 + (220.0 - width) / 2.0 } else { 120.0 };
                text x="114" y=(y + 17.0) text-anchor="end" font-size="12" { (group) }
                rect x=(x) y=(y) width=(width) height=(row_height - 6.0) rx="3" fill=(COLOURS[index % COLOURS.len()]) { title { (group) ": " (number(*value)) } }
                text x=(if centred { 346.0 } else { x + width + 4.0 }) y=(y + 17.0) font-size="12" { (number(*value)) }
            }
        }
    }
}

/// A line through the groups in their order (date buckets come sorted).
fn line(label: &str, rows: &[(String, f64)], max: f64) -> Markup {
    let (width, height, left, bottom) = (400.0, 200.0, 40.0, 170.0);
    let step = if rows.len() > 1 {
        (width - left - 10.0) / (rows.len() - 1) as f64
    } else {
        0.0
    };
    let points: Vec<(f64, f64)> = rows
        .iter()
        .enumerate()
        .map(|(index, (_, value))| {
            (
                left + step * index as f64,
                bottom - value / max * (bottom - 10.0),
            )
        })
        .collect();
    let path: Vec<String> = points
        .iter()
        .map(|(x, y)| format!("{x:.1},{y:.1}"))
        .collect();
    html! {
        svg.chart viewBox={ "0 0 " (width) " " (height) } role="img" aria-label=(label) {
            line x1=(left) y1=(bottom) x2=(width - 10.0) y2=(bottom) stroke="#d9dee7" {}
            text x="2" y="14" font-size="11" { (number(max)) }
            polyline points=(path.join(" ")) fill="none" stroke=(COLOURS[0]) stroke-width="2" {}
            @for ((group, value), (x, y)) in rows.iter().zip(&points) {
                circle cx=(format!("{x:.1}")) cy=(format!("{y:.1}")) r="3" fill=(COLOURS[0]) { title { (group) ": " (number(*value)) } }
            }
            @if let (Some((first, _)), Some((last, _))) = (rows.first(), rows.last()) {
                text x=(left) y=(bottom + 18.0) font-size="11" { (first) }
                text x=(width - 10.0) y=(bottom + 18.0) font-size="11" text-anchor="end" { (last) }
            }
        }
    }
}

/// A pie of the groups' shares, with a legend.
fn pie(label: &str, rows: &[(String, f64)]) -> Markup {
    let total: f64 = rows.iter().map(|(_, v)| v.max(0.0)).sum();
    let (cx, cy, r) = (80.0_f64, 80.0_f64, 70.0_f64);
    let mut angle = -std::f64::consts::FRAC_PI_2;
    let mut slices = Vec::new();
    for (index, (group, value)) in rows.iter().enumerate() {
        let share = if total > 0.0 {
            value.max(0.0) / total
        } else {
            0.0
        };
        let sweep = share * std::f64::consts::TAU;
        let (x1, y1) = (cx + r * angle.cos(), cy + r * angle.sin());
        let end = angle + sweep;
        let (x2, y2) = (cx + r * end.cos(), cy + r * end.sin());
        let large = if sweep > std::f64::consts::PI { 1 } else { 0 };
        let path = if share >= 0.9999 {
            format!(
                "M {cx} {} A {r} {r} 0 1 1 {cx} {} A {r} {r} 0 1 1 {cx} {} Z",
                cy - r,
                cy + r,
                cy - r
            )
        } else {
            format!("M {cx} {cy} L {x1:.2} {y1:.2} A {r} {r} 0 {large} 1 {x2:.2} {y2:.2} Z")
        };
        slices.push((
            group.clone(),
            *value,
            share,
            path,
            COLOURS[index % COLOURS.len()],
        ));
        angle = end;
    }
    let height = (rows.len() as f64 * 20.0 + 10.0).max(170.0);
    html! {
        svg.chart viewBox={ "0 0 400 " (height) } role="img" aria-label=(label) {
            @for (group, value, share, path, colour) in &slices {
                path d=(path) fill=(colour) stroke="#fff" stroke-width="1" { title { (group) ": " (number(*value)) " (" (number(share * 100.0)) "%)" } }
            }
            @for (index, (group, value, share, _, colour)) in slices.iter().enumerate() {
                rect x="180" y=(index as f64 * 20.0 + 8.0) width="12" height="12" fill=(colour) {}
                text x="198" y=(index as f64 * 20.0 + 18.0) font-size="12" { (group) " — " (number(*value)) " (" (number(share * 100.0)) "%)" }
            }
        }
    }
}

fn table(widget: &Value) -> Markup {
    let rows = widget["data"].as_array().cloned().unwrap_or_default();
    // The report's fields in its order; without them, what the first row has.
    let named: Option<Vec<String>> = widget["fields"].as_array().map(|fields| {
        fields
            .iter()
            .filter_map(|field| field.as_str().map(str::to_owned))
            .collect()
    });
    let columns: Vec<String> = named.unwrap_or_else(|| {
        rows.first()
            .and_then(|row| row["data"].as_object())
            .map(|data| data.keys().cloned().collect())
            .unwrap_or_default()
    });
    html! {
        div.table-wrap {
            table.records {
                thead { tr { @for column in &columns { th scope="col" { (column.replace('_', " ")) } } } }
                tbody {
                    @for row in &rows {
                        tr {
                            @for column in &columns {
                                td { (match &row["data"][column] { Value::String(text) => text.clone(), Value::Null => String::new(), other => other.to_string() }) }
                            }
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn numbers_are_grouped_and_rounded() {
        assert_eq!(number(168267800.0), "168,267,800");
        assert_eq!(number(1234.5), "1,234.50");
        assert_eq!(number(-12.0), "-12");
        assert_eq!(number(0.0), "0");
    }

    #[test]
    fn charts_draw_one_mark_per_group() {
        let widget = json!({"type": "chart", "chart": "bar", "measures": ["count"], "data": [
            {"group": {"stage": "lead"}, "count": 3}, {"group": {"stage": "won"}, "count": 1}]});
        let svg = chart_svg(Lang::En, &widget).into_string();
        assert_eq!(svg.matches("<rect").count(), 2, "{svg}");
        assert!(svg.contains(">lead<") && svg.contains(">won<"));
        let pie = chart_svg(
            Lang::En,
            &json!({"type": "chart", "chart": "pie", "data": widget["data"]}),
        )
        .into_string();
        assert_eq!(pie.matches("<path").count(), 2, "{pie}");
        assert!(pie.contains("75%"), "{pie}");
        let money = json!({"type": "chart", "chart": "funnel", "measures": ["sum:amount"], "data": [
            {"group": {"stage": "a"}, "sum": {"amount": {"amount": 10.0, "currency": "EUR"}}}]});
        assert!(chart_svg(Lang::En, &money).into_string().contains(">10<"));
    }
}
