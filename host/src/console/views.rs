//! Saved views on a page: the records a view lists, and — when its records have a place
//! (`x`, `y`, `width`, `height`) — a floor plan of them coloured by their status, such as the
//! exhibition pack's booth map. A record's detail page links the views that take it as their
//! parameter.

use std::collections::BTreeMap;

use axum::extract::{Path, Query, State};
use axum::http::HeaderMap;
use axum::response::Response;
use maud::{Markup, html};
use serde_json::{Map, Value};

use super::i18n::Lang;
use super::records::{display_name, entity_label, field_label};
use super::{Chrome, document, encode, respond};
use crate::api::AppState;
use crate::api::error::ApiError;
use crate::auth::Principal;
use crate::metadata::definition::{EntityDefinition, FieldDefinition, FieldType};
use crate::records::access::Sight;

/// A record of a view: its id and its fields.
type Row = (String, Map<String, Value>);

/// Colours of well-known states; other options take the palette in their order.
fn state_colour(value: &str, index: usize) -> &'static str {
    match value {
        "free" | "available" | "open" => "#2e9d5b",
        "reserved" | "pending" | "on_hold" => "#e0a100",
        "sold" | "taken" | "closed" | "booked" => "#b42318",
        _ => ["#2454c5", "#7a4cc2", "#0f8b9c", "#a86b00", "#5b6475"][index % 5],
    }
}

/// The views that take a record of `entity` as their one parameter: `(name, label, param)`.
pub async fn views_for(
    state: &AppState,
    principal: &Principal,
    entity: &str,
) -> Vec<(String, String, String)> {
    let Ok(views) = state.views.list(principal).await else {
        return Vec::new();
    };
    let Ok(mut conn) = state.store.reader().await else {
        return Vec::new();
    };
    let mut scoped = conn.scoped(&principal.tenant);
    let mut found = Vec::new();
    for view in views {
        let definition = view.definition;
        let mut params = definition.params.keys();
        let (Some(param), None) = (params.next(), params.next()) else {
            continue;
        };
        let Ok(compiled) = state
            .metadata
            .compiled(&mut scoped, &definition.entity)
            .await
        else {
            continue;
        };
        let sight = Sight::of(principal, &compiled);
        let takes_it = sight.definition.field(param).is_some_and(|field| {
            field.active
                && field.value_type() == FieldType::Reference
                && field.entity.as_ref().map(|e| e.as_str()) == Some(entity)
        });
        if takes_it && sight.grant.read != crate::auth::Scope::None {
            let label = definition.label.clone().unwrap_or(definition.name.clone());
            found.push((definition.name, label, param.clone()));
        }
    }
    found
}

pub async fn show(
    State(state): State<AppState>,
    principal: Principal,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(params): Query<BTreeMap<String, String>>,
) -> Response {
    let lang = Lang::of(&headers);
    let result = async {
        let chrome = Chrome::load(lang, &state, &principal, "").await?;
        let view = state
            .views
            .get(&principal, &name)
            .await
            .map_err(ApiError::from)?
            .definition;
        let page = state
            .views
            .records(&principal, &name, params.clone())
            .await
            .map_err(ApiError::from)?;
        let definition = {
            let mut conn = state.store.reader().await?;
            let mut scoped = conn.scoped(&principal.tenant);
            let compiled = state.metadata.compiled(&mut scoped, &view.entity).await?;
            Sight::of(&principal, &compiled).definition.into_owned()
        };
        let rows: Vec<(String, Map<String, Value>)> = page
            .data
            .iter()
            .map(|record| {
                (
                    record.id.clone(),
                    serde_json::from_str(record.data.get()).unwrap_or_default(),
                )
            })
            .collect();
        let title = view.label.clone().unwrap_or(view.name.clone());
        let columns: Vec<&FieldDefinition> = match &view.fields {
            Some(names) => names
                .iter()
                .filter_map(|name| definition.field(name))
                .filter(|field| field.active)
                .collect(),
            None => definition.active_fields().take(6).collect(),
        };
        let body = html! {
            main {
                p.crumbs { a href={ "/r/" (view.entity) } { (entity_label(lang, &definition, true)) } }
                h1 { (title) }
                @if let Some(description) = &view.description { p.hint { (description) } }
                @for (space, rows) in spaces(&definition, &rows) {
                    @if let Some(plan) = floor_plan(&definition, &view.entity, &rows, &title) {
                        section.card.space {
                            @if !space.is_empty() { h2 { (space) } }
                            (plan)
                        }
                    }
                }
                div.table-wrap {
                    table.records {
                        thead { tr { @for field in &columns { th scope="col" { (field_label(lang, field)) } } } }
                        tbody {
                            @for (id, data) in &rows {
                                tr {
                                    @for (index, field) in columns.iter().enumerate() {
                                        @let text = cell(data.get(field.name.as_str()));
                                        td data-label=(field_label(lang, field)) {
                                            @if index == 0 { a href={ "/r/" (view.entity) "/" (id) } { (text) } } @else { (text) }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
                @if let Some(cursor) = &page.next_cursor {
                    @let query: Vec<String> = params.iter().filter(|(k, _)| *k != "cursor").map(|(k, v)| format!("{k}={}", encode(v))).collect();
                    nav.pages { a rel="next" href={ "/v/" (name) "?" (query.join("&")) "&cursor=" (encode(cursor)) } { (lang.t("next_page")) } }
                }
            }
        };
        Ok::<_, ApiError>(document(lang, &title, Some(&chrome), body))
    }
    .await;
    respond(lang, result)
}

fn cell(value: Option<&Value>) -> String {
    match value {
        None | Some(Value::Null) => "—".to_owned(),
        Some(Value::String(text)) => text.clone(),
        Some(Value::Object(money)) if money.contains_key("amount") => format!(
            "{} {}",
            money["amount"],
            money
                .get("currency")
                .and_then(Value::as_str)
                .unwrap_or_default()
        ),
        Some(other) => other.to_string(),
    }
}

/// Records with a place are laid out per space — a hall, floor, level, zone or room, when the
/// entity has such a field — since two halls use the same coordinates.
fn spaces(definition: &EntityDefinition, rows: &[Row]) -> Vec<(String, Vec<Row>)> {
    let space = ["hall", "floor", "level", "zone", "room"]
        .into_iter()
        .find(|name| definition.field(name).is_some_and(|field| field.active));
    let mut spaces: Vec<(String, Vec<Row>)> = Vec::new();
    for (id, data) in rows {
        let key = space
            .and_then(|name| data.get(name))
            .map(|value| cell(Some(value)))
            .unwrap_or_default();
        match spaces.iter_mut().find(|(k, _)| *k == key) {
            Some((_, members)) => members.push((id.clone(), data.clone())),
            None => spaces.push((key, vec![(id.clone(), data.clone())])),
        }
    }
    spaces
}

/// A plan of records that have a place: each a rectangle at (`x`, `y`) of `width` × `height`,
/// coloured by its first picklist named `status` (or the first picklist), labelled with its
/// name, linking to it; with a legend counting each state. `None` when the records have no place.
fn floor_plan(
    definition: &EntityDefinition,
    entity: &str,
    rows: &[(String, Map<String, Value>)],
    title: &str,
) -> Option<Markup> {
    let number = |data: &Map<String, Value>, name: &str| data.get(name).and_then(Value::as_f64);
    let placed: Vec<(&String, &Map<String, Value>, [f64; 4])> = rows
        .iter()
        .filter_map(|(id, data)| {
            Some((
                id,
                data,
                [
                    number(data, "x")?,
                    number(data, "y")?,
                    number(data, "width")?,
                    number(data, "height")?,
                ],
            ))
        })
        .collect();
    if placed.is_empty() {
        return None;
    }
    let state_field = definition
        .field("status")
        .filter(|field| field.active && field.value_type() == FieldType::Picklist)
        .or_else(|| {
            definition
                .active_fields()
                .find(|field| field.value_type() == FieldType::Picklist)
        });
    let options: Vec<String> = state_field
        .map(|field| {
            field
                .option_values()
                .iter()
                .map(|v| (*v).to_owned())
                .collect()
        })
        .unwrap_or_default();
    let state_of = |data: &Map<String, Value>| -> String {
        state_field
            .and_then(|field| data.get(field.name.as_str()))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let colour_of = |state: &str| {
        let index = options
            .iter()
            .position(|o| o == state)
            .unwrap_or(options.len());
        state_colour(state, index)
    };
    let right = placed
        .iter()
        .map(|(_, _, [x, _, w, _])| x + w)
        .fold(1.0_f64, f64::max);
    let bottom = placed
        .iter()
        .map(|(_, _, [_, y, _, h])| y + h)
        .fold(1.0_f64, f64::max);
    let mut counts: Vec<(String, usize)> = options.iter().map(|o| (o.clone(), 0)).collect();
    for (_, data, _) in &placed {
        let state = state_of(data);
        match counts.iter_mut().find(|(o, _)| *o == state) {
            Some((_, n)) => *n += 1,
            None => counts.push((state, 1)),
        }
    }
    let scale = 760.0 / right;
    let height = bottom * scale + 20.0;
    Some(html! {
        svg.plan viewBox={ "0 0 780 " (format!("{height:.0}")) } role="img" aria-label=(title) {
            rect x="0" y="0" width=(format!("{:.1}", right * scale + 20.0)) height=(format!("{height:.1}")) fill="#f4f6fa" {}
            @for (id, data, [x, y, w, h]) in &placed {
                @let state = state_of(data);
                @let name = display_name(definition, id, data);
                a href={ "/r/" (entity) "/" (id) } {
                    rect.place data-state=(state) x=(format!("{:.1}", x * scale + 10.0)) y=(format!("{:.1}", y * scale + 10.0))
                        width=(format!("{:.1}", (w * scale - 2.0).max(1.0))) height=(format!("{:.1}", (h * scale - 2.0).max(1.0)))
                        fill=(colour_of(&state)) stroke="#1d2430" stroke-width="0.5" {
                        title { (name) " — " (state) }
                    }
                    text x=(format!("{:.1}", x * scale + 10.0 + w * scale / 2.0)) y=(format!("{:.1}", y * scale + 10.0 + h * scale / 2.0 + 4.0))
                        text-anchor="middle" font-size="11" fill="#fff" { (name) }
                }
            }
        }
        ul.legend {
            @for (state, count) in &counts {
                li { span.swatch style={ "background:" (colour_of(state)) } {} " " (if state.is_empty() { "—" } else { state }) " (" (count) ")" }
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn records_with_a_place_are_drawn_coloured_by_status() {
        let definition: EntityDefinition =
            serde_json::from_value(json!({"name": "booth", "fields": [
            {"name": "number", "type": "text"},
            {"name": "x", "type": "decimal"}, {"name": "y", "type": "decimal"},
            {"name": "width", "type": "decimal"}, {"name": "height", "type": "decimal"},
            {"name": "status", "type": "picklist", "options": ["free", "reserved", "sold"]}]}))
            .unwrap();
        let row = |number: &str, x: f64, status: &str| {
            let data = json!({"number": number, "x": x, "y": 0.0, "width": 3.0, "height": 3.0, "status": status});
            (format!("id-{number}"), data.as_object().unwrap().clone())
        };
        let rows = vec![
            row("A1", 0.0, "free"),
            row("A2", 3.0, "sold"),
            row("A3", 6.0, "sold"),
        ];
        let svg = floor_plan(&definition, "booth", &rows, "plan")
            .unwrap()
            .into_string();
        assert_eq!(svg.matches("class=\"place\"").count(), 3, "{svg}");
        assert_eq!(svg.matches("data-state=\"sold\"").count(), 2);
        assert!(svg.contains("href=\"/r/booth/id-A2\""));
        assert!(
            svg.contains("sold (2)") && svg.contains("free (1)") && svg.contains("reserved (0)")
        );
        // Two halls are two plans.
        let mut other = row("B1", 0.0, "free");
        other.1.insert("hall".into(), json!("B"));
        let mut first = row("A1", 0.0, "free");
        first.1.insert("hall".into(), json!("A"));
        let halls: EntityDefinition = serde_json::from_value(json!({"name": "booth", "fields": [
            {"name": "hall", "type": "text"}, {"name": "x", "type": "decimal"}]}))
        .unwrap();
        let split = spaces(&halls, &[first, other]);
        assert_eq!(
            split
                .iter()
                .map(|(k, v)| (k.as_str(), v.len()))
                .collect::<Vec<_>>(),
            [("A", 1), ("B", 1)]
        );
        // Records without a place draw no plan.
        let unplaced = vec![(
            "x".to_owned(),
            json!({"number": "B1"}).as_object().unwrap().clone(),
        )];
        assert!(floor_plan(&definition, "booth", &unplaced, "plan").is_none());
    }
}
