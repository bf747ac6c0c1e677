//! The web console: sign-in with a cookie session, pages generated from metadata that respect
//! roles and field-level security, and forms that show the server's field errors in place —
//! over HTTP on both backends, and in a real headless Chromium (`chromedriver`).

use std::time::Duration;

use axum::http::StatusCode;
use rapport_tests::{TestApp, on_both_backends};
use serde_json::json;

on_both_backends!(
    pages_need_a_session_and_send_the_browser_back_after_sign_in,
    hidden_fields_never_reach_the_page,
    a_refused_form_keeps_what_was_typed_and_names_the_field,
    dashboards_draw_kpis_and_charts_as_svg,
    the_booth_map_draws_each_booth_coloured_by_status,
    a_plugin_failure_is_in_its_runs_with_its_error,
    the_schema_editor_creates_entities_and_fields_of_every_kind,
    a_type_change_shows_its_dry_run_and_waits_for_confirmation,
    packs_are_installed_and_removed_after_their_dry_run,
    plugins_are_uploaded_configured_and_switched_from_the_console,
    workflows_are_edited_with_problems_at_their_step_and_runs_retried,
    users_roles_and_the_audit_trail_are_managed_by_administrators,
    labels_are_translated_and_the_language_follows_the_user,
    a_form_sent_after_the_session_ended_is_kept_through_sign_in,
);

const PASSWORD: &str = "correct horse battery";

/// A browser-like client over plain HTTP: keeps the session cookie, shows redirects instead of
/// following them (the tests look at them).
struct Client {
    http: reqwest::Client,
    cookies: std::sync::Mutex<Vec<String>>,
}

fn browser() -> Client {
    Client {
        http: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap(),
        cookies: Default::default(),
    }
}

impl Client {
    async fn send(&self, request: reqwest::RequestBuilder) -> reqwest::Response {
        let cookie = self.cookies.lock().unwrap().join("; ");
        let request = if cookie.is_empty() {
            request
        } else {
            request.header("cookie", cookie)
        };
        let response = request.send().await.unwrap();
        for set in response.headers().get_all("set-cookie") {
            let pair = set.to_str().unwrap().split(';').next().unwrap().to_owned();
            let name = pair.split('=').next().unwrap().to_owned();
            let mut cookies = self.cookies.lock().unwrap();
            cookies.retain(|kept| !kept.starts_with(&format!("{name}=")));
            if !pair.ends_with('=') {
                cookies.push(pair);
            }
        }
        response
    }

    async fn get(&self, url: String) -> reqwest::Response {
        self.send(self.http.get(url)).await
    }

    async fn post(&self, url: String, form: &[(&str, &str)]) -> reqwest::Response {
        self.send(self.http.post(url).form(form)).await
    }

    /// Posts files as a browser's file inputs do (`multipart/form-data`).
    async fn upload(
        &self,
        url: String,
        files: Vec<(&'static str, &'static str, Vec<u8>)>,
    ) -> reqwest::Response {
        let mut form = reqwest::multipart::Form::new();
        for (name, file, bytes) in files {
            form = form.part(name, reqwest::multipart::Part::bytes(bytes).file_name(file));
        }
        self.send(self.http.post(url).multipart(form)).await
    }
}

/// A user with `roles` and a password; returns their name.
async fn person(app: &TestApp, name: &str, roles: &[&str]) -> String {
    let (_, id) = app.user_with_roles(name, roles).await;
    let set = app
        .put(
            &format!("/api/v1/users/{id}/password"),
            json!({"password": PASSWORD}),
        )
        .await;
    assert_eq!(set.status, StatusCode::NO_CONTENT, "{:?}", set.body);
    name.to_owned()
}

async fn sign_in(app: &TestApp, client: &Client, user: &str, next: &str) -> reqwest::Response {
    client
        .post(
            format!("{}/sign-in", app.base),
            &[
                ("tenant", "acme"),
                ("user", user),
                ("password", PASSWORD),
                ("next", next),
            ],
        )
        .await
}

async fn page(client: &Client, url: String) -> (StatusCode, String) {
    let response = client.get(url).await;
    let status = response.status();
    (status, response.text().await.unwrap())
}

async fn deals(app: &TestApp) {
    app.define(
        json!({"name": "deal", "label": "Deal", "plural_label": "Deals", "fields": [
            {"name": "title", "type": "text", "required": true},
            {"name": "stage", "type": "picklist", "options": ["open", "won", "lost"]},
            {"name": "seats", "type": "integer", "min": 1},
            {"name": "margin", "type": "decimal"}
        ]}),
    )
    .await;
}

async fn pages_need_a_session_and_send_the_browser_back_after_sign_in(app: &TestApp) {
    deals(app).await;
    let user = person(app, "dana", &["administrator"]).await;
    let client = browser();
    let first = client.get(format!("{}/r/deal?q=big", app.base)).await;
    assert_eq!(first.status(), StatusCode::SEE_OTHER);
    let to = first.headers()["location"].to_str().unwrap().to_owned();
    assert_eq!(to, "/sign-in?next=/r/deal%3Fq%3Dbig");

    let (status, form) = page(&client, format!("{}{to}", app.base)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        form.contains(r#"name="next" value="/r/deal?q=big""#),
        "{form}"
    );

    // A wrong password: the form again, with the server's reason and the names kept.
    let wrong = client
        .post(
            format!("{}/sign-in", app.base),
            &[
                ("tenant", "acme"),
                ("user", "dana"),
                ("password", "nope nope nope"),
                ("next", "/"),
            ],
        )
        .await;
    assert_eq!(wrong.status(), StatusCode::UNAUTHORIZED);
    let text = wrong.text().await.unwrap();
    assert!(
        text.contains(r#"value="dana""#) && text.contains("error-summary"),
        "{text}"
    );

    let signed = sign_in(app, &client, &user, "/r/deal?q=big").await;
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    assert_eq!(signed.headers()["location"], "/r/deal?q=big");
    let cookie = signed.headers()["set-cookie"].to_str().unwrap().to_owned();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Lax"),
        "{cookie}"
    );

    app.create("deal", json!({"title": "Big deal", "stage": "open"}))
        .await;
    let (status, list) = page(&client, format!("{}/r/deal?q=big", app.base)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        list.contains("Big deal") && list.contains("<h1>Deals</h1>"),
        "{list}"
    );
    // The navigation lists the tenant's entities.
    assert!(list.contains(r#"href="/r/deal""#));

    // A post from another site is refused, even with the cookie.
    let forged = client
        .send(
            client
                .http
                .post(format!("{}/r/deal/new", app.base))
                .header("origin", "https://evil.example")
                .form(&[("title", "forged")]),
        )
        .await;
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    // So is a sign-in posted from another site (which would sign the browser in as someone).
    let forged_sign_in = client
        .send(
            client
                .http
                .post(format!("{}/sign-in", app.base))
                .header("origin", "https://evil.example")
                .form(&[("tenant", "acme"), ("user", "dana"), ("password", PASSWORD)]),
        )
        .await;
    assert_eq!(forged_sign_in.status(), StatusCode::FORBIDDEN);

    // Signing out ends the session: the next page asks to sign in again.
    let out = client.post(format!("{}/sign-out", app.base), &[]).await;
    assert_eq!(out.status(), StatusCode::SEE_OTHER);
    let after = client.get(format!("{}/r/deal", app.base)).await;
    assert_eq!(after.status(), StatusCode::SEE_OTHER);
    // The API never takes the cookie.
    let api = client
        .get(format!("{}/api/v1/records/deal", app.base))
        .await;
    assert_eq!(api.status(), StatusCode::UNAUTHORIZED);
}

async fn hidden_fields_never_reach_the_page(app: &TestApp) {
    deals(app).await;
    let role = app
        .post(
            "/api/v1/roles",
            json!({"name": "rep", "entities": {"deal": {"create": true, "read": "all", "update": "all",
                    "fields": {"margin": "none", "seats": "read"}}}}),
        )
        .await;
    assert_eq!(role.status, StatusCode::CREATED, "{:?}", role.body);
    let user = person(app, "rita", &["rep"]).await;
    let id = app
        .create(
            "deal",
            json!({"title": "Secret deal", "margin": 0.4217, "seats": 12}),
        )
        .await;
    let client = browser();
    sign_in(app, &client, &user, "/").await;

    for url in [
        format!("{}/r/deal", app.base),
        format!("{}/r/deal/{id}", app.base),
        format!("{}/r/deal/{id}/edit", app.base),
        format!("{}/r/deal/new", app.base),
    ] {
        let (status, html) = page(&client, url.clone()).await;
        assert_eq!(status, StatusCode::OK, "{url}: {html}");
        assert!(
            !html.contains("0.4217") && !html.to_lowercase().contains("margin"),
            "{url} shows the hidden field: {html}"
        );
    }
    // A read-only field is shown but is no input of the form.
    let (_, detail) = page(&client, format!("{}/r/deal/{id}", app.base)).await;
    assert!(detail.contains(r#"data-field="seats""#), "{detail}");
    let (_, edit) = page(&client, format!("{}/r/deal/{id}/edit", app.base)).await;
    assert!(!edit.contains(r#"name="seats""#), "{edit}");
    assert!(edit.contains(r#"name="title""#));
}

async fn a_refused_form_keeps_what_was_typed_and_names_the_field(app: &TestApp) {
    deals(app).await;
    let user = person(app, "dana", &["administrator"]).await;
    let client = browser();
    sign_in(app, &client, &user, "/").await;

    // No title (required) and a seat count below the minimum: both named at their fields.
    let refused = client
        .post(
            format!("{}/r/deal/new", app.base),
            &[
                ("title", ""),
                ("stage", "won"),
                ("seats", "0"),
                ("margin", "0.25"),
            ],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = refused.text().await.unwrap();
    for field in ["title", "seats"] {
        let at = html
            .find(&format!(r#"data-field="{field}""#))
            .unwrap_or_else(|| panic!("no {field} field: {html}"));
        let block = &html[at..at + html[at..].find("</div>").unwrap()];
        assert!(
            block.contains("field-error"),
            "no error at {field}: {block}"
        );
    }
    assert!(
        html.contains(r#"value="0.25""#),
        "the typed margin is lost: {html}"
    );
    assert!(
        html.contains(r#"<option value="won" selected>"#),
        "the chosen stage is lost: {html}"
    );
    let listed = app.get("/api/v1/records/deal").await;
    assert_eq!(
        listed.body["data"].as_array().unwrap().len(),
        0,
        "nothing was written"
    );

    // Corrected, it is created and the browser goes to the new record.
    let created = client
        .post(
            format!("{}/r/deal/new", app.base),
            &[
                ("title", "Corrected"),
                ("stage", "won"),
                ("seats", "3"),
                ("margin", "0.25"),
            ],
        )
        .await;
    assert_eq!(created.status(), StatusCode::SEE_OTHER);
    let to = created.headers()["location"].to_str().unwrap().to_owned();
    let (_, detail) = page(&client, format!("{}{to}", app.base)).await;
    assert!(detail.contains("<h1>Corrected</h1>"), "{detail}");

    // An edit against a stale version says so and keeps the edit.
    let id = to.rsplit('/').next().unwrap();
    let moved = app
        .patch(
            &format!("/api/v1/records/deal/{id}"),
            json!({"data": {"stage": "lost"}}),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK, "{:?}", moved.body);
    let stale = client
        .post(
            format!("{}/r/deal/{id}/edit", app.base),
            &[
                ("_version", "1"),
                ("title", "Renamed"),
                ("stage", "won"),
                ("seats", "3"),
                ("margin", "0.25"),
            ],
        )
        .await;
    assert_eq!(stale.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let html = stale.text().await.unwrap();
    assert!(
        html.contains(r#"value="Renamed""#) && html.contains("error-summary"),
        "{html}"
    );
    let stored = app.get(&format!("/api/v1/records/deal/{id}")).await;
    assert_eq!(stored.body["data"]["title"], "Corrected");
}

/// Deals in three stages and a dashboard of a KPI against a target, a bar chart, a pie and a
/// table; plus a widget over an entity the second user may not read.
async fn sales_dashboard(app: &TestApp) {
    deals(app).await;
    sales_dashboard_in(app).await;
}

/// [`sales_dashboard`] where the `deal` entity exists already.
async fn sales_dashboard_in(app: &TestApp) {
    for (title, stage, seats) in [
        ("A", "open", 5),
        ("B", "open", 7),
        ("C", "won", 11),
        ("D", "lost", 2),
        ("E", "won", 3),
    ] {
        app.create(
            "deal",
            json!({"title": title, "stage": stage, "seats": seats}),
        )
        .await;
    }
    app.define(json!({"name": "secret", "fields": [{"name": "code", "type": "text"}]}))
        .await;
    let created = app
        .post(
            "/api/v1/dashboards",
            json!({"name": "sales", "label": "Sales floor", "widgets": [
                {"id": "won_deals", "type": "kpi", "title": "Won deals",
                 "query": {"entity": "deal", "filter": "stage eq 'won'"}, "target": 4},
                {"id": "by_stage", "type": "chart", "chart": "bar", "title": "Deals by stage",
                 "query": {"entity": "deal", "group_by": ["stage"]}},
                {"id": "seats", "type": "chart", "chart": "pie",
                 "query": {"entity": "deal", "group_by": ["stage"], "measures": ["sum:seats"]}},
                {"id": "latest", "type": "table",
                 "query": {"entity": "deal", "type": "list", "sort": "-title", "limit": 3, "fields": ["title", "stage"]}},
                {"id": "secrets", "type": "kpi", "query": {"entity": "secret"}}
            ]}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
}

async fn dashboards_draw_kpis_and_charts_as_svg(app: &TestApp) {
    sales_dashboard(app).await;
    let user = person(app, "dana", &["administrator"]).await;
    let client = browser();
    sign_in(app, &client, &user, "/").await;
    let (status, list) = page(&client, format!("{}/d", app.base)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        list.contains(r#"href="/d/sales""#) && list.contains("Sales floor"),
        "{list}"
    );

    let (status, html) = page(&client, format!("{}/d/sales", app.base)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let widget = |id: &str| {
        let at = html
            .find(&format!(r#"data-widget="{id}""#))
            .unwrap_or_else(|| panic!("no widget {id}: {html}"));
        let end = html[at..].find("</section>").unwrap();
        html[at..at + end].to_owned()
    };
    // The KPI: 2 won deals against a target of 4, half way.
    let kpi = widget("won_deals");
    assert!(
        kpi.contains(r#"class="kpi-value""#)
            && kpi.contains(">2</p>")
            && kpi.contains("Target 4 · 50%"),
        "{kpi}"
    );
    // The bar chart: one bar per stage, labelled.
    let bars = widget("by_stage");
    assert_eq!(bars.matches("<rect").count(), 3, "{bars}");
    for stage in [">open<", ">won<", ">lost<"] {
        assert!(bars.contains(stage), "{bars}");
    }
    // The pie: the seats' shares (open 12, won 14, lost 2 of 28).
    let pie = widget("seats");
    assert_eq!(pie.matches("<path").count(), 3, "{pie}");
    assert!(pie.contains("won — 14 (50%)"), "{pie}");
    let table = widget("latest");
    assert!(table.contains(">E<") && !table.contains(">A<"), "{table}");
    // Its columns in the report's order (title before stage), not alphabetically.
    let (title, stage) = (
        table.find(">title<").unwrap(),
        table.find(">stage<").unwrap(),
    );
    assert!(title < stage, "{table}");

    // A user who may read deals but not `secret`: that one widget says why; the rest draws.
    let role = app
        .post(
            "/api/v1/roles",
            json!({"name": "seller", "entities": {"deal": {"read": "all"}}}),
        )
        .await;
    assert_eq!(role.status, StatusCode::CREATED, "{:?}", role.body);
    let seller = person(app, "sam", &["seller"]).await;
    let other = browser();
    sign_in(app, &other, &seller, "/").await;
    let (status, html) = page(&other, format!("{}/d/sales", app.base)).await;
    assert_eq!(status, StatusCode::OK, "{html}");
    let at = html.find(r#"data-widget="secrets""#).unwrap();
    assert!(
        html[at..]
            .split("</section>")
            .next()
            .unwrap()
            .contains("error-summary"),
        "{html}"
    );
    assert!(html.contains(">2</p>"), "{html}");
}

/// Installs the exhibition pack with its sample data; returns the sample exhibition's id.
async fn exhibition(app: &TestApp) -> String {
    let installed = app
        .post(
            "/api/v1/packs/exhibition/install?sample=true",
            serde_json::Value::Null,
        )
        .await;
    assert_eq!(
        installed.status,
        StatusCode::CREATED,
        "{:?}",
        installed.body
    );
    let expos = app.get("/api/v1/records/exhibition?limit=1").await;
    expos.body["data"][0]["id"].as_str().unwrap().to_owned()
}

async fn the_booth_map_draws_each_booth_coloured_by_status(app: &TestApp) {
    let expo = exhibition(app).await;
    let user = person(app, "dana", &["administrator"]).await;
    let client = browser();
    sign_in(app, &client, &user, "/").await;
    // The exhibition's page links the views that take an exhibition: the booth map among them.
    let (status, detail) = page(&client, format!("{}/r/exhibition/{expo}", app.base)).await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    let link = format!("/v/booth_map?exhibition={expo}");
    assert!(detail.contains(&format!(r#"href="{link}""#)), "{detail}");

    let (status, map) = page(&client, format!("{}{link}", app.base)).await;
    assert_eq!(status, StatusCode::OK, "{map}");
    let booths = app
        .get(&format!(
            "/api/v1/views/booth_map/records?exhibition={expo}"
        ))
        .await
        .body["data"]
        .as_array()
        .unwrap()
        .clone();
    assert!(!booths.is_empty());
    assert_eq!(
        map.matches(r#"class="place""#).count(),
        booths.len(),
        "{map}"
    );
    for state in ["free", "reserved", "sold"] {
        let count = booths
            .iter()
            .filter(|booth| booth["data"]["status"] == state)
            .count();
        assert_eq!(
            map.matches(&format!(r#"data-state="{state}""#)).count(),
            count,
            "{state}"
        );
    }
    // One plan per hall: the halls reuse the same coordinates.
    let mut halls: Vec<&str> = booths
        .iter()
        .map(|booth| booth["data"]["hall"].as_str().unwrap())
        .collect();
    halls.sort_unstable();
    halls.dedup();
    assert_eq!(
        map.matches(r#"<svg class="plan""#).count(),
        halls.len(),
        "{map}"
    );
    // Each booth links to its record.
    let first = booths[0]["id"].as_str().unwrap();
    assert!(map.contains(&format!(r#"href="/r/booth/{first}""#)));
}

/// The `hostile` test plugin on `target`, set to panic: a write fails and its run is recorded.
async fn failing_plugin(app: &TestApp) {
    app.install_panicking_plugin().await;
    app.refused_by_plugin().await;
    let failed = app
        .plugin_runs("hostile", "failures=true", |runs| !runs.is_empty())
        .await;
    assert!(!failed.is_empty(), "the failed run was not recorded");
}

async fn a_plugin_failure_is_in_its_runs_with_its_error(app: &TestApp) {
    failing_plugin(app).await;
    let admin = person(app, "dana", &["administrator"]).await;
    let client = browser();
    sign_in(app, &client, &admin, "/").await;
    let (status, list) = page(&client, format!("{}/p", app.base)).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert!(
        list.contains(r#"href="/p/hostile""#) && list.contains("0.1.0"),
        "{list}"
    );
    // The capabilities it requests, as the manifest says.
    assert!(list.contains("<strong>read</strong>: target"), "{list}");

    let (status, runs) = page(&client, format!("{}/p/hostile?failures=1", app.base)).await;
    assert_eq!(status, StatusCode::OK, "{runs}");
    let stored = app.get("/api/v1/plugins/hostile/runs?failures=true").await;
    let failed = stored.body["data"].as_array().unwrap();
    assert!(!failed.is_empty(), "{:?}", stored.body);
    assert_eq!(
        runs.matches(r#"<tr class="failed""#).count(),
        failed.len(),
        "{runs}"
    );
    let error = failed[0]["error"].as_str().unwrap();
    assert!(
        runs.contains(
            &error
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;")
                .replace('"', "&quot;")
        ),
        "{runs}"
    );

    // Plugins are for administrators.
    let member = person(app, "mo", &["member"]).await;
    let other = browser();
    sign_in(app, &other, &member, "/").await;
    let (status, _) = page(&other, format!("{}/p", app.base)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (_, home) = page(&other, format!("{}/", app.base)).await;
    assert!(!home.contains(r#"href="/p""#));
}

/// The definition of `entity` as the API shows it.
async fn definition(app: &TestApp, entity: &str) -> serde_json::Value {
    let got = app.get(&format!("/api/v1/entities/{entity}")).await;
    assert_eq!(got.status, StatusCode::OK, "{:?}", got.body);
    got.body
}

fn field<'a>(definition: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    definition["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|field| field["name"] == name)
        .unwrap_or_else(|| panic!("no field {name} in {definition}"))
}

/// The error shown at one input of a console form.
fn error_at(page: &str, input: &str) -> Option<String> {
    let start = page.find(&format!(r#"id="f-{input}-error""#))?;
    let text = &page[start..];
    let text = &text[text.find('>')? + 1..];
    Some(text[..text.find('<')?].to_owned())
}

async fn the_schema_editor_creates_entities_and_fields_of_every_kind(app: &TestApp) {
    deals(app).await;
    let admin = person(app, "dana", &["administrator"]).await;
    let client = browser();
    sign_in(app, &client, &admin, "/").await;
    let (status, list) = page(&client, format!("{}/s", app.base)).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert!(list.contains(r#"href="/s/deal""#), "{list}");

    // A bad API name is refused at its input, and what was typed stays.
    let refused = client
        .post(
            format!("{}/s", app.base),
            &[("name", "Ticket Type"), ("label", "Ticket")],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = refused.text().await.unwrap();
    assert!(error_at(&body, "name").is_some(), "{body}");
    assert!(body.contains(r#"value="Ticket Type""#), "{body}");
    assert_eq!(
        app.get("/api/v1/entities/ticket").await.status,
        StatusCode::NOT_FOUND
    );

    let created = client
        .post(
            format!("{}/s", app.base),
            &[
                ("name", "ticket"),
                ("label", "Ticket"),
                ("plural_label", "Tickets"),
            ],
        )
        .await;
    assert_eq!(created.status(), StatusCode::SEE_OTHER);
    assert_eq!(created.headers()["location"], "/s/ticket");
    assert_eq!(definition(app, "ticket").await["plural_label"], "Tickets");

    let add = |form: Vec<(&'static str, &'static str)>| {
        let client = &client;
        async move {
            client
                .post(format!("{}/s/ticket/fields/new", app.base), &form)
                .await
        }
    };
    let version = |v: i64| -> &'static str { Box::leak(v.to_string().into_boxed_str()) };
    let v = definition(app, "ticket").await["version"].as_i64().unwrap();
    let made = add(vec![
        ("_version", version(v)),
        ("name", "subject"),
        ("label", "Subject"),
        ("type", "text"),
        ("required", "true"),
        ("max_length", "80"),
        // Settings of other types are left out.
        ("options", "a\nb"),
    ])
    .await;
    assert_eq!(made.status(), StatusCode::SEE_OTHER);
    let subject = field(&definition(app, "ticket").await, "subject").clone();
    assert_eq!(
        subject,
        json!({"name": "subject", "label": "Subject", "type": "text", "required": true, "max_length": 80})
    );

    // A picklist without options: the server's problem is shown at the options input.
    let v = definition(app, "ticket").await["version"].as_i64().unwrap();
    let refused = add(vec![
        ("_version", version(v)),
        ("name", "priority"),
        ("type", "picklist"),
    ])
    .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = refused.text().await.unwrap();
    assert!(error_at(&body, "options").is_some(), "{body}");
    assert!(body.contains(r#"value="priority""#), "{body}");

    let made = add(vec![
        ("_version", version(v)),
        ("name", "priority"),
        ("type", "picklist"),
        ("options", "low\nurgent | Urgent\ndone | Done | closed"),
        ("indexed", "true"),
    ])
    .await;
    assert_eq!(made.status(), StatusCode::SEE_OTHER);
    let made = add(vec![
        ("_version", version(v + 1)),
        ("name", "deal"),
        ("type", "reference"),
        ("entity", "deal"),
    ])
    .await;
    assert_eq!(made.status(), StatusCode::SEE_OTHER);
    let ticket = definition(app, "ticket").await;
    assert_eq!(
        field(&ticket, "priority")["options"],
        json!(["low", {"value": "urgent", "label": "Urgent"}, {"value": "done", "label": "Done", "closed": true}])
    );
    assert_eq!(field(&ticket, "priority")["indexed"], true);
    assert_eq!(field(&ticket, "deal")["entity"], "deal");

    // A form of an older version is refused: someone changed the entity meanwhile.
    let stale = add(vec![
        ("_version", version(v)),
        ("name", "due"),
        ("type", "date"),
    ])
    .await;
    assert_eq!(stale.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = stale.text().await.unwrap();
    assert!(body.contains("Someone changed this entity"), "{body}");
    assert!(
        field_names(&definition(app, "ticket").await)
            .iter()
            .all(|f| f != "due")
    );

    // The records work at once, and the change is in the audit trail.
    let record = app
        .post(
            "/api/v1/records/ticket",
            json!({"data": {"subject": "Printer", "priority": "urgent"}}),
        )
        .await;
    assert_eq!(record.status, StatusCode::CREATED, "{:?}", record.body);
    let audit = app.get("/api/v1/audit?action=entity.create").await;
    assert!(
        audit.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .any(|entry| entry["target"] == "ticket" && entry["detail"]["via"] == "console"),
        "{:?}",
        audit.body
    );

    // The editor is for administrators.
    let member = person(app, "mo", &["member"]).await;
    let other = browser();
    sign_in(app, &other, &member, "/").await;
    let (status, _) = page(&other, format!("{}/s", app.base)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let refused = other
        .post(format!("{}/s", app.base), &[("name", "sneaky")])
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        app.get("/api/v1/entities/sneaky").await.status,
        StatusCode::NOT_FOUND
    );
}

fn field_names(definition: &serde_json::Value) -> Vec<String> {
    definition["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|field| field["name"].as_str().unwrap().to_owned())
        .collect()
}

async fn a_type_change_shows_its_dry_run_and_waits_for_confirmation(app: &TestApp) {
    app.define(json!({"name": "part", "fields": [
        {"name": "name", "type": "text"},
        {"name": "code", "type": "text"}
    ]}))
    .await;
    let mut ids = Vec::new();
    for code in ["12", "abc", "7"] {
        let made = app
            .post(
                "/api/v1/records/part",
                json!({"data": {"name": format!("part {code}"), "code": code}}),
            )
            .await;
        ids.push(made.body["id"].as_str().unwrap().to_owned());
    }
    let workflow = app
        .post(
            "/api/v1/workflows",
            json!({
                "name": "big_codes",
                "trigger": {"type": "record", "entity": "part", "events": ["updated"], "condition": "code is not null"},
                "steps": [{"id": "tell", "type": "notify", "user": "{{user}}", "message": "code {{record.code}}"}]
            }),
        )
        .await;
    assert_eq!(workflow.status, StatusCode::CREATED, "{:?}", workflow.body);
    let admin = person(app, "dana", &["administrator"]).await;
    let client = browser();
    sign_in(app, &client, &admin, "/").await;
    let retype = |version: String, confirm: bool| {
        let client = &client;
        async move {
            let mut form = vec![
                ("_version", version),
                ("type", "integer".to_owned()),
                ("label", "Code".to_owned()),
            ];
            if confirm {
                form.push(("_confirm", "1".to_owned()));
            }
            let form: Vec<(&str, &str)> = form.iter().map(|(k, v)| (*k, v.as_str())).collect();
            client
                .post(format!("{}/s/part/fields/code", app.base), &form)
                .await
        }
    };
    let v = definition(app, "part").await["version"].as_i64().unwrap();

    // One record would not convert: the dry run says which, and there is nothing to confirm.
    let refused = retype(v.to_string(), false).await;
    assert_eq!(refused.status(), StatusCode::CONFLICT);
    let body = refused.text().await.unwrap();
    assert!(body.contains(r#"data-failures="1""#), "{body}");
    assert!(
        body.contains(&format!(r#"href="/r/part/{}""#, ids[1])),
        "{body}"
    );
    assert!(!body.contains(r#"name="_confirm""#), "{body}");
    assert_eq!(
        field(&definition(app, "part").await, "code")["type"],
        "text"
    );

    // Once fixed, the dry run shows the change, that all convert, and the workflow that reads
    // the field; nothing changes until the admin confirms.
    let fixed = app
        .patch(
            &format!("/api/v1/records/part/{}", ids[1]),
            json!({"data": {"code": "13"}}),
        )
        .await;
    assert_eq!(fixed.status, StatusCode::OK, "{:?}", fixed.body);
    let dry = retype(v.to_string(), false).await;
    assert_eq!(dry.status(), StatusCode::OK);
    let body = dry.text().await.unwrap();
    assert!(body.contains(r#"data-failures="0""#), "{body}");
    assert!(body.contains("text → integer"), "{body}");
    assert!(
        body.contains(r#"<li data-kind="workflow">"#) && body.contains("big_codes"),
        "{body}"
    );
    assert!(body.contains(r#"name="_confirm""#), "{body}");
    assert_eq!(
        field(&definition(app, "part").await, "code")["type"],
        "text"
    );
    // The API's dry run names the same dependents.
    let mut changed = definition(app, "part").await;
    changed["fields"][1]["type"] = json!("integer");
    changed.as_object_mut().unwrap().remove("updated_at");
    let api = app.put("/api/v1/entities/part?dry_run=true", changed).await;
    assert_eq!(api.status, StatusCode::OK, "{:?}", api.body);
    assert_eq!(
        api.body["dependents"][0]["name"], "big_codes",
        "{:?}",
        api.body
    );

    let confirmed = retype(v.to_string(), true).await;
    assert_eq!(confirmed.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        field(&definition(app, "part").await, "code")["type"],
        "integer"
    );
    let record = app.get(&format!("/api/v1/records/part/{}", ids[0])).await;
    assert_eq!(record.body["data"]["code"], 12);

    // Deactivating shows what depends on the field first, then keeps the data.
    let v = definition(app, "part").await["version"].as_i64().unwrap();
    let url = format!("{}/s/part/fields/code/deactivate", app.base);
    let asked = client
        .post(url.clone(), &[("_version", &v.to_string())])
        .await;
    assert_eq!(asked.status(), StatusCode::OK);
    let body = asked.text().await.unwrap();
    assert!(body.contains("big_codes"), "{body}");
    assert_eq!(
        field(&definition(app, "part").await, "code").get("active"),
        None
    );
    let done = client
        .post(url, &[("_version", &v.to_string()), ("_confirm", "1")])
        .await;
    assert_eq!(done.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        field(&definition(app, "part").await, "code")["active"],
        false
    );

    // Purging asks too, then the field and its values are gone.
    let url = format!("{}/s/part/fields/code/purge", app.base);
    assert_eq!(client.post(url.clone(), &[]).await.status(), StatusCode::OK);
    assert!(field_names(&definition(app, "part").await).contains(&"code".to_owned()));
    let purged = client.post(url, &[("_confirm", "1")]).await;
    assert_eq!(purged.status(), StatusCode::SEE_OTHER);
    assert!(!field_names(&definition(app, "part").await).contains(&"code".to_owned()));
    let audit = app.get("/api/v1/audit?action=entity.purge_field").await;
    assert_eq!(audit.body["data"][0]["target"], "part", "{:?}", audit.body);

    // Deleting the entity: first what depends on it (the workflow on its records).
    let url = format!("{}/s/part/delete", app.base);
    let asked = client.post(url.clone(), &[]).await;
    assert_eq!(asked.status(), StatusCode::OK);
    let body = asked.text().await.unwrap();
    assert!(
        body.contains(r#"<li data-kind="workflow">"#) && body.contains("big_codes"),
        "{body}"
    );
    assert_eq!(
        app.get("/api/v1/entities/part").await.status,
        StatusCode::OK
    );
    let deleted = client.post(url, &[("_confirm", "1")]).await;
    assert_eq!(deleted.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        app.get("/api/v1/entities/part").await.status,
        StatusCode::NOT_FOUND
    );
}

async fn pack_status(app: &TestApp, id: &str) -> String {
    let packs = app.get("/api/v1/packs").await;
    packs.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .find(|pack| pack["id"] == id)
        .map(|pack| pack["status"].as_str().unwrap().to_owned())
        .unwrap()
}

async fn packs_are_installed_and_removed_after_their_dry_run(app: &TestApp) {
    let admin = person(app, "dana", &["administrator"]).await;
    let client = browser();
    sign_in(app, &client, &admin, "/").await;
    let (status, gallery) = page(&client, format!("{}/k", app.base)).await;
    assert_eq!(status, StatusCode::OK, "{gallery}");
    for id in ["core", "exhibition", "real-estate"] {
        assert!(
            gallery.contains(&format!(r#"data-pack="{id}" data-status="available""#)),
            "{gallery}"
        );
    }
    // A pack's page lists the capabilities its plugins request.
    let (_, detail) = page(&client, format!("{}/k/exhibition", app.base)).await;
    assert!(
        detail.contains(r#"data-plugin="booth-guard""#) && detail.contains("read booth"),
        "{detail}"
    );

    // The preview is a dry run: what it would add (core comes with it), nothing installed.
    let preview = client
        .post(
            format!("{}/k/exhibition/install", app.base),
            &[("sample", "true")],
        )
        .await;
    assert_eq!(preview.status(), StatusCode::OK);
    let body = preview.text().await.unwrap();
    assert!(
        body.contains(r#"data-entity="booth" data-change="added""#),
        "{body}"
    );
    assert!(body.contains(r#"data-pack="core""#), "{body}");
    assert!(body.contains(r#"name="_confirm""#), "{body}");
    assert_eq!(pack_status(app, "exhibition").await, "available");
    assert_eq!(
        app.get("/api/v1/entities/booth").await.status,
        StatusCode::NOT_FOUND
    );

    let confirmed = client
        .post(
            format!("{}/k/exhibition/install", app.base),
            &[("sample", "true"), ("_confirm", "1")],
        )
        .await;
    assert_eq!(confirmed.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        confirmed.headers()["location"],
        "/k/exhibition?done=install"
    );
    assert_eq!(pack_status(app, "exhibition").await, "installed");
    assert_eq!(pack_status(app, "core").await, "installed");
    let booths = app.get("/api/v1/records/booth?limit=1").await;
    assert_eq!(
        booths.body["data"].as_array().unwrap().len(),
        1,
        "sample records"
    );
    let audit = app.get("/api/v1/audit?action=pack.install").await;
    assert_eq!(
        audit.body["data"][0]["target"], "exhibition",
        "{:?}",
        audit.body
    );
    assert_eq!(audit.body["data"][0]["detail"]["via"], "console");

    // Installing again is refused with the reason; core cannot go while exhibition needs it.
    let again = client
        .post(
            format!("{}/k/exhibition/install", app.base),
            &[("_confirm", "1")],
        )
        .await;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert!(again.text().await.unwrap().contains("upgrade it instead"));
    let core = client
        .post(format!("{}/k/core/remove", app.base), &[])
        .await;
    assert_eq!(core.status(), StatusCode::CONFLICT);
    assert!(core.text().await.unwrap().contains("remove it first"));

    // Removal: the preview says the entities stay; confirmed, the pack is gone, its data kept.
    let preview = client
        .post(format!("{}/k/exhibition/remove", app.base), &[])
        .await;
    assert_eq!(preview.status(), StatusCode::OK);
    let body = preview.text().await.unwrap();
    assert!(
        body.contains(r#"data-entity="booth" data-change="kept""#),
        "{body}"
    );
    assert_eq!(pack_status(app, "exhibition").await, "installed");
    let removed = client
        .post(
            format!("{}/k/exhibition/remove", app.base),
            &[("_confirm", "1")],
        )
        .await;
    assert_eq!(removed.status(), StatusCode::SEE_OTHER);
    assert_eq!(pack_status(app, "exhibition").await, "removed");
    assert_eq!(
        app.get("/api/v1/entities/booth").await.status,
        StatusCode::OK
    );

    // Packs are for administrators.
    let member = person(app, "mo", &["member"]).await;
    let other = browser();
    sign_in(app, &other, &member, "/").await;
    let (status, _) = page(&other, format!("{}/k", app.base)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let refused = other
        .post(
            format!("{}/k/real-estate/install", app.base),
            &[("_confirm", "1")],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(pack_status(app, "real-estate").await, "available");
}

/// A bundled plugin's manifest and component, as files (the manifest of `manifest_of`).
fn plugin_files(manifest_of: &str, crate_dir: &str) -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins");
    let manifest = std::fs::read(root.join(manifest_of).join("manifest.json")).unwrap();
    let wasm = rapport_tests::plugins_dir().join(format!("{}.wasm", crate_dir.replace('-', "_")));
    let component = std::fs::read(&wasm)
        .unwrap_or_else(|error| panic!("{}: {error}; build the plugins first", wasm.display()));
    vec![
        ("manifest", "manifest.json", manifest),
        ("component", "plugin.wasm", component),
    ]
}

async fn plugins_are_uploaded_configured_and_switched_from_the_console(app: &TestApp) {
    let admin = person(app, "dana", &["administrator"]).await;
    let client = browser();
    sign_in(app, &client, &admin, "/").await;

    // A component that imports the filesystem (with a valid manifest) is refused, naming the
    // import; nothing is installed.
    let refused = client
        .upload(
            format!("{}/p", app.base),
            plugin_files("complaint-sla", "hostile-fs"),
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = refused.text().await.unwrap();
    assert!(body.contains("wasi:filesystem"), "{body}");
    let listed = app.get("/api/v1/plugins").await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 0);
    // A missing file is named.
    let mut files = plugin_files("credit-terms", "credit-terms");
    files.pop();
    let missing = client.upload(format!("{}/p", app.base), files).await;
    assert_eq!(missing.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert!(missing.text().await.unwrap().contains("component"));

    let uploaded = client
        .upload(
            format!("{}/p", app.base),
            plugin_files("credit-terms", "credit-terms"),
        )
        .await;
    assert_eq!(uploaded.status(), StatusCode::SEE_OTHER);
    let to = uploaded.headers()["location"].to_str().unwrap().to_owned();
    assert!(to.starts_with("/p/credit-terms?done="), "{to}");
    let (status, detail) = page(&client, format!("{}{to}", app.base)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        detail.contains("read account"),
        "the capabilities added: {detail}"
    );

    // The configuration form is generated from the plugin's schema, with its current values.
    assert!(
        detail.contains(r#"<input id="f-discount_big_good" name="discount_big_good" value="10""#),
        "{detail}"
    );
    assert!(detail.contains("large\nenterprise</textarea>"), "{detail}");
    let config = |discount: &'static str| {
        let client = &client;
        async move {
            client
                .post(
                    format!("{}/p/credit-terms/config", app.base),
                    &[
                        ("size_field", "size"),
                        ("big_sizes", "large\nenterprise\nglobal"),
                        ("payment_field", "payment_record"),
                        ("good_payment", "good\nexcellent"),
                        ("discount_big_good", discount),
                        ("discount_small_good", ""),
                        ("order_account_field", "account"),
                    ],
                )
                .await
        }
    };
    let wrong = config("150").await;
    assert_eq!(wrong.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = wrong.text().await.unwrap();
    assert!(
        body.contains(r#"id="f-discount_big_good-error""#),
        "the problem at its input: {body}"
    );
    assert!(
        body.contains(r#"value="150""#),
        "the typed value stays: {body}"
    );
    let stored = app.get("/api/v1/plugins/credit-terms").await;
    assert_eq!(stored.body["config"]["discount_big_good"], 10);

    let saved = config("12.5").await;
    assert_eq!(saved.status(), StatusCode::SEE_OTHER);
    let stored = app.get("/api/v1/plugins/credit-terms").await;
    assert_eq!(stored.body["config"]["discount_big_good"], 12.5);
    assert_eq!(
        stored.body["config"]["big_sizes"],
        json!(["large", "enterprise", "global"])
    );
    assert!(
        stored.body["config"].get("discount_small_good").is_none(),
        "an empty input leaves the property out: {:?}",
        stored.body
    );

    // Enable and disable.
    assert_eq!(stored.body["enabled"], false);
    let enabled = client
        .post(format!("{}/p/credit-terms/enable", app.base), &[])
        .await;
    assert_eq!(enabled.status(), StatusCode::SEE_OTHER);
    assert_eq!(
        app.get("/api/v1/plugins/credit-terms").await.body["enabled"],
        true
    );
    let (_, detail) = page(&client, format!("{}/p/credit-terms", app.base)).await;
    assert!(
        detail.contains(r#"action="/p/credit-terms/disable""#),
        "{detail}"
    );
    client
        .post(format!("{}/p/credit-terms/disable", app.base), &[])
        .await;
    assert_eq!(
        app.get("/api/v1/plugins/credit-terms").await.body["enabled"],
        false
    );
    for action in [
        "plugin.install",
        "plugin.configure",
        "plugin.enable",
        "plugin.disable",
    ] {
        let audit = app.get(&format!("/api/v1/audit?action={action}")).await;
        assert_eq!(
            audit.body["data"][0]["target"], "credit-terms",
            "{action}: {:?}",
            audit.body
        );
    }

    // Members cannot change plugins.
    let member = person(app, "mo", &["member"]).await;
    let other = browser();
    sign_in(app, &other, &member, "/").await;
    let refused = other
        .post(format!("{}/p/credit-terms/enable", app.base), &[])
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(
        app.get("/api/v1/plugins/credit-terms").await.body["enabled"],
        false
    );
}

/// The newest run of a workflow once it is `status` (the engine runs in the background).
async fn run_in(app: &TestApp, workflow: &str, status: &str) -> serde_json::Value {
    let mut last = serde_json::Value::Null;
    for _ in 0..400 {
        let runs = app.get(&format!("/api/v1/workflows/{workflow}/runs")).await;
        last = runs.body["data"][0].clone();
        if last["status"] == status {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the run of {workflow} is not {status}: {last}");
}

async fn workflows_are_edited_with_problems_at_their_step_and_runs_retried(app: &TestApp) {
    app.define(json!({"name": "claim", "fields": [
        {"name": "title", "type": "text"},
        {"name": "status", "type": "picklist", "options": ["open", "paid", "closed"]},
        {"name": "next_status", "type": "text"}
    ]}))
    .await;
    let admin = person(app, "dana", &["administrator"]).await;
    let client = browser();
    sign_in(app, &client, &admin, "/").await;
    let (status, editor) = page(&client, format!("{}/w/new", app.base)).await;
    assert_eq!(status, StatusCode::OK, "{editor}");
    let save = |definition: String| {
        let client = &client;
        async move {
            client
                .post(
                    format!("{}/w/new", app.base),
                    &[("definition", definition.as_str())],
                )
                .await
        }
    };

    // Not JSON: said where, and the text stays.
    let broken = save("{\"name\": \"pay\",".to_owned()).await;
    assert_eq!(broken.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = broken.text().await.unwrap();
    assert!(body.contains("line 1"), "{body}");
    assert!(
        body.contains("{&quot;name&quot;: &quot;pay&quot;,"),
        "{body}"
    );

    // A step writing a field the entity lacks: the problem is shown at that step.
    let mut definition = json!({
        "name": "pay",
        "retry": {"max_attempts": 1},
        "trigger": {"type": "record", "entity": "claim", "events": ["created"]},
        "steps": [
            {"id": "ok", "type": "approval", "approvers": ["{{record._owner}}"],
             "message": "Pay {{record.title}}?",
             "then": [{"id": "pay", "type": "set_fields", "values": {"nope": "x"}}]}
        ]
    });
    let refused = save(definition.to_string()).await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = refused.text().await.unwrap();
    let at = body
        .find(r#"data-path="/steps/0/then/0""#)
        .unwrap_or_else(|| panic!("{body}"));
    let step = &body[at..];
    assert!(
        step[..step.find("</li>").unwrap()].contains("nope"),
        "the problem is at its step: {body}"
    );
    assert!(body.contains(r#"<li class="step invalid""#), "{body}");
    assert_eq!(
        app.get("/api/v1/workflows/pay").await.status,
        StatusCode::NOT_FOUND
    );

    definition["steps"][0]["then"][0]["values"] = json!({"status": "{{record.next_status}}"});
    let saved = save(definition.to_string()).await;
    assert_eq!(saved.status(), StatusCode::SEE_OTHER);
    assert_eq!(saved.headers()["location"], "/w/pay?done=saved");
    let enabled = app.get("/api/v1/workflows/pay").await;
    assert_eq!(enabled.body["enabled"], true, "{:?}", enabled.body);

    // A record starts a run that waits for an approval; it is approved on the approvals page.
    let id = app
        .create(
            "claim",
            json!({"title": "Broken screen", "next_status": "bogus"}),
        )
        .await;
    run_in(app, "pay", "waiting").await;
    let (_, approvals) = page(&client, format!("{}/a", app.base)).await;
    assert!(approvals.contains("Pay Broken screen?"), "{approvals}");
    let pending = app.get("/api/v1/approvals?status=pending").await;
    let approval = pending.body["data"][0]["id"].as_str().unwrap().to_owned();
    let decided = client
        .post(
            format!("{}/a/{approval}", app.base),
            &[("decision", "approved"), ("comment", "fine")],
        )
        .await;
    assert_eq!(decided.status(), StatusCode::SEE_OTHER);

    // The step after it fails (`bogus` is no option): the run's page shows the step's error
    // and offers a retry, which, once the data is fixed, goes on.
    let run = run_in(app, "pay", "failed").await;
    let run_id = run["id"].as_str().unwrap();
    let (_, shown) = page(&client, format!("{}/w/pay/runs/{run_id}", app.base)).await;
    assert!(
        shown.contains(r#"<tr class="failed" data-step="pay" data-status="failed">"#),
        "{shown}"
    );
    assert!(shown.contains("bogus"), "{shown}");
    assert!(shown.contains(r#"/retry""#), "{shown}");
    let (_, listed) = page(&client, format!("{}/w/pay", app.base)).await;
    assert!(listed.contains(r#"data-status="failed""#), "{listed}");
    app.patch(
        &format!("/api/v1/records/claim/{id}"),
        json!({"data": {"next_status": "paid"}}),
    )
    .await;
    let retried = client
        .post(format!("{}/w/pay/runs/{run_id}/retry", app.base), &[])
        .await;
    assert_eq!(retried.status(), StatusCode::SEE_OTHER);
    run_in(app, "pay", "succeeded").await;
    let claim = app.get(&format!("/api/v1/records/claim/{id}")).await;
    assert_eq!(claim.body["data"]["status"], "paid");
    for action in ["workflow.create", "workflow.retry", "approval.approve"] {
        let audit = app.get(&format!("/api/v1/audit?action={action}")).await;
        assert_eq!(
            audit.body["data"].as_array().unwrap().len(),
            1,
            "{action}: {:?}",
            audit.body
        );
    }

    // Workflows are the administrators'; approvals are everyone's page.
    let member = person(app, "mo", &["member"]).await;
    let other = browser();
    sign_in(app, &other, &member, "/").await;
    let (status, _) = page(&other, format!("{}/w", app.base)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = page(&other, format!("{}/a", app.base)).await;
    assert_eq!(status, StatusCode::OK);
}

async fn users_roles_and_the_audit_trail_are_managed_by_administrators(app: &TestApp) {
    app.define(json!({"name": "lead", "fields": [
        {"name": "name", "type": "text"},
        {"name": "budget", "type": "decimal"}
    ]}))
    .await;
    let admin = person(app, "dana", &["administrator"]).await;
    let client = browser();
    sign_in(app, &client, &admin, "/").await;
    let (status, users) = page(&client, format!("{}/u", app.base)).await;
    assert_eq!(status, StatusCode::OK, "{users}");
    assert!(users.contains(r#"data-user="dana""#), "{users}");

    // A user: a bad name is named at its input; then created with a password and a role.
    let refused = client
        .post(
            format!("{}/u", app.base),
            &[
                ("name", "Rita Bad"),
                ("email", "rita@example.com"),
                ("roles", "member"),
            ],
        )
        .await;
    assert_eq!(refused.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = refused.text().await.unwrap();
    assert!(error_at(&body, "name").is_some(), "{body}");
    assert!(body.contains(r#"value="rita@example.com""#), "{body}");
    let created = client
        .post(
            format!("{}/u", app.base),
            &[
                ("name", "rita"),
                ("email", "rita@example.com"),
                ("password", PASSWORD),
                ("roles", "member"),
            ],
        )
        .await;
    assert_eq!(created.status(), StatusCode::SEE_OTHER);
    let to = created.headers()["location"].to_str().unwrap().to_owned();
    let rita = to
        .strip_prefix("/u/")
        .unwrap()
        .split('?')
        .next()
        .unwrap()
        .to_owned();

    // A role from the permission matrix; a field access that is no level is named at its row.
    let role = |fields: &'static str| {
        let client = &client;
        async move {
            client
                .post(
                    format!("{}/roles/new", app.base),
                    &[
                        ("name", "sales"),
                        ("label", "Sales"),
                        ("e.lead.create", "true"),
                        ("e.lead.read", "all"),
                        ("e.lead.update", "own"),
                        ("e.lead.delete", "none"),
                        ("e.lead.fields", fields),
                    ],
                )
                .await
        }
    };
    let wrong = role("budget:secret").await;
    assert_eq!(wrong.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body = wrong.text().await.unwrap();
    assert!(error_at(&body, "e.lead.fields").is_some(), "{body}");
    assert!(body.contains(r#"value="budget:secret""#), "{body}");
    let made = role("budget:none").await;
    assert_eq!(made.status(), StatusCode::SEE_OTHER);
    let sales = app.get("/api/v1/roles/sales").await;
    assert_eq!(
        sales.body["entities"]["lead"],
        json!({"create": true, "read": "all", "update": "own", "fields": {"budget": "none"}}),
        "{:?}",
        sales.body
    );

    let changed = client
        .post(
            format!("{}/u/{rita}", app.base),
            &[("email", "rita@example.com"), ("roles", "sales")],
        )
        .await;
    assert_eq!(changed.status(), StatusCode::SEE_OTHER);
    let shown = app.get(&format!("/api/v1/users/{rita}")).await;
    assert_eq!(shown.body["roles"], json!(["sales"]), "{:?}", shown.body);
    // Rita signs in with the password set for her, and the role applies: no budget.
    app.create("lead", json!({"name": "Acme", "budget": 5000}))
        .await;
    let hers = browser();
    let signed = sign_in(app, &hers, "rita", "/r/lead").await;
    assert_eq!(signed.status(), StatusCode::SEE_OTHER);
    let (status, leads) = page(&hers, format!("{}/r/lead", app.base)).await;
    assert_eq!(status, StatusCode::OK, "{leads}");
    assert!(leads.contains("Acme") && !leads.contains("5000"), "{leads}");

    // The audit trail lists what the API lists, filtered by action.
    let (_, trail) = page(&client, format!("{}/audit?action=user", app.base)).await;
    let listed = app.get("/api/v1/audit?action=user").await;
    let entries = listed.body["data"].as_array().unwrap();
    assert!(!entries.is_empty());
    assert_eq!(
        trail.matches("<tr data-action=").count(),
        entries.len(),
        "{trail}"
    );
    assert!(
        trail.contains(r#"<tr data-action="user.create">"#),
        "{trail}"
    );
    assert!(!trail.contains(r#"<tr data-action="role."#), "{trail}");

    // All three are the administrators'.
    let (status, _) = page(&hers, format!("{}/u", app.base)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let (status, _) = page(&hers, format!("{}/audit", app.base)).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    let refused = hers
        .post(format!("{}/roles/sales", app.base), &[("admin", "true")])
        .await;
    assert_eq!(refused.status(), StatusCode::FORBIDDEN);
    assert_eq!(app.get("/api/v1/roles/sales").await.body.get("admin"), None);
}

async fn labels_are_translated_and_the_language_follows_the_user(app: &TestApp) {
    app.define(
        json!({"name": "deal", "label": "Deal", "plural_label": "Deals",
        "labels": {"zh-CN": "交易"}, "plural_labels": {"zh-CN": "交易列表"},
        "fields": [
            {"name": "title", "type": "text", "label": "Title", "labels": {"zh-CN": "标题"}},
            {"name": "seats", "type": "integer"}
        ]}),
    )
    .await;
    app.create("deal", json!({"title": "Big one"})).await;
    let admin = person(app, "dana", &["administrator"]).await;
    let client = browser();
    sign_in(app, &client, &admin, "/").await;
    let (_, english) = page(&client, format!("{}/r/deal", app.base)).await;
    assert!(
        english.contains("<h1>Deals</h1>") && english.contains(">Title<"),
        "{english}"
    );

    // Choosing Chinese: labels come from the translations, the console's words from its own.
    let chosen = client
        .post(
            format!("{}/language", app.base),
            &[("lang", "zh-CN"), ("next", "/r/deal")],
        )
        .await;
    assert_eq!(chosen.status(), StatusCode::SEE_OTHER);
    let (_, chinese) = page(&client, format!("{}/r/deal", app.base)).await;
    assert!(chinese.contains("<h1>交易列表</h1>"), "{chinese}");
    assert!(
        chinese.contains(">标题<") && chinese.contains(">新建<"),
        "{chinese}"
    );
    assert!(
        chinese.contains(">Seats<"),
        "untranslated labels stay: {chinese}"
    );

    // The choice is the user's: another browser gets it at sign-in.
    let other = browser();
    let signed = sign_in(app, &other, &admin, "/r/deal").await;
    let cookies: Vec<&str> = signed
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert!(
        cookies.iter().any(|c| c.starts_with("rapport_lang=zh-CN")),
        "{cookies:?}"
    );
    let (_, again) = page(&other, format!("{}/r/deal", app.base)).await;
    assert!(again.contains("<h1>交易列表</h1>"), "{again}");

    // The schema editor edits the translations.
    let v = definition(app, "deal").await["version"].as_i64().unwrap();
    let saved = client
        .post(
            format!("{}/s/deal", app.base),
            &[
                ("_version", &v.to_string()),
                ("label", "Deal"),
                ("labels.zh-CN", "商机"),
                ("plural_label", "Deals"),
                ("plural_labels.zh-CN", ""),
            ],
        )
        .await;
    assert_eq!(saved.status(), StatusCode::SEE_OTHER);
    let deal = definition(app, "deal").await;
    assert_eq!(deal["labels"], json!({"zh-CN": "商机"}));
    assert!(deal.get("plural_labels").is_none(), "{deal}");

    // A translation keyed by something that is no language tag is refused, with its path.
    let mut wrong = deal.clone();
    wrong.as_object_mut().unwrap().remove("updated_at");
    wrong["labels"] = json!({"Chinese": "商机"});
    let refused = app.put("/api/v1/entities/deal", wrong).await;
    assert_eq!(
        refused.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        refused.body
    );
    assert!(
        refused.body["error"]["fields"]
            .as_object()
            .unwrap()
            .keys()
            .any(|path| path.starts_with("/labels")),
        "{:?}",
        refused.body
    );
}

/// The value of the hidden input `name` of a page, unescaped.
fn hidden(page: &str, name: &str) -> Option<String> {
    let marker = format!(r#"name="{name}" value=""#);
    let start = page.find(&marker)? + marker.len();
    let value = &page[start..start + page[start..].find('"')?];
    Some(
        value
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

async fn a_form_sent_after_the_session_ended_is_kept_through_sign_in(app: &TestApp) {
    deals(app).await;
    let user = person(app, "dana", &["administrator"]).await;
    // The session ends (signed out elsewhere, or expired) while a form is being typed.
    let stale = browser();
    stale
        .cookies
        .lock()
        .unwrap()
        .push("rapport_session=rps_ended".to_owned());
    let typed = [("title", "Typed before"), ("seats", "3")];
    let mut confirmed = typed.to_vec();
    confirmed.push(("_confirm", "1"));
    let sent = stale.post(format!("{}/r/deal/new", app.base), &typed).await;
    assert_eq!(sent.status(), StatusCode::UNAUTHORIZED);
    let body = sent.text().await.unwrap();
    assert!(body.contains(r#"action="/sign-in""#), "{body}");
    let replay = hidden(&body, "replay").unwrap_or_else(|| panic!("{body}"));
    assert!(replay.contains("Typed before"), "{replay}");
    assert!(
        !replay.contains("_confirm"),
        "a confirmation is not carried over: {replay}"
    );
    assert_eq!(
        app.get("/api/v1/records/deal").await.body["data"]
            .as_array()
            .unwrap()
            .len(),
        0,
        "nothing was written"
    );

    // Signed in, the form comes back as it was typed, on its way to where it was going.
    let signed = stale
        .post(
            format!("{}/sign-in", app.base),
            &[
                ("tenant", "acme"),
                ("user", &user),
                ("password", PASSWORD),
                ("next", "/r/deal/new"),
                ("replay", &replay),
            ],
        )
        .await;
    assert_eq!(signed.status(), StatusCode::OK);
    let body = signed.text().await.unwrap();
    assert!(
        body.contains(
            r#"<form class="replay" method="post" action="/r/deal/new" data-autosubmit>"#
        ),
        "{body}"
    );
    assert_eq!(hidden(&body, "title").as_deref(), Some("Typed before"));
    assert_eq!(hidden(&body, "seats").as_deref(), Some("3"));
    let created = stale.post(format!("{}/r/deal/new", app.base), &typed).await;
    assert_eq!(created.status(), StatusCode::SEE_OTHER);
    let deals = app.get("/api/v1/records/deal").await;
    assert_eq!(deals.body["data"][0]["data"]["title"], "Typed before");
}

/// The browser half: a real headless Chromium driven through `chromedriver`. Needs `chromium`
/// and `chromedriver` (the test command installs them); without them it says it was skipped,
/// and in CI (`CI=true`) it fails instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_a_real_browser_sign_in_build_an_entity_then_a_form_error_is_shown_at_its_field() {
    let Some(driver) = rapport_tests::browser::Driver::start().await else {
        return;
    };
    let app = rapport_tests::spawn_app(rapport_tests::Backend::Sqlite)
        .await
        .unwrap();
    let user = person(&app, "dana", &["administrator"]).await;
    let browser = driver.session().await;

    browser.goto(&format!("{}/s", app.base)).await.unwrap();
    browser.wait_for("input[name=tenant]").await;
    browser.fill("input[name=tenant]", "acme").await;
    browser.fill("input[name=user]", &user).await;
    browser.fill("input[name=password]", PASSWORD).await;
    browser.shot("console-sign-in").await;
    browser
        .click("form[action='/sign-in'] button[type=submit]")
        .await;

    // The schema editor: the `deal` entity and its fields, made by hand.
    browser.wait_for("form[action='/s'] #f-name").await;
    browser.fill("#f-name", "deal").await;
    browser.fill("#f-label", "Deal").await;
    browser.fill("#f-plural_label", "Deals").await;
    browser.click("form[action='/s'] button[type=submit]").await;
    browser
        .wait_for("a.button[href='/s/deal/fields/new']")
        .await;
    let add_field =
        |name: &'static str, kind: &'static str, settings: Vec<(&'static str, &'static str)>| {
            let browser = &browser;
            async move {
                browser.click("a.button[href='/s/deal/fields/new']").await;
                browser.wait_for("form.schema-field #f-name").await;
                browser.fill("#f-name", name).await;
                browser.select("#f-type", kind).await;
                for (setting, text) in settings {
                    if setting == "required" {
                        browser.click("input[name=required]").await;
                    } else {
                        browser.fill(&format!("#f-{setting}"), text).await;
                    }
                }
                if name == "stage" {
                    browser.shot("console-schema-field").await;
                }
                browser.click("form.schema-field button[type=submit]").await;
                browser.wait_for(&format!("tr[data-field={name}]")).await;
            }
        };
    add_field("title", "text", vec![("label", "Title"), ("required", "")]).await;
    // A picklist without options: the server's error is shown at the options input.
    browser.click("a.button[href='/s/deal/fields/new']").await;
    browser.wait_for("form.schema-field #f-name").await;
    browser.fill("#f-name", "stage").await;
    browser.select("#f-type", "picklist").await;
    browser.click("form.schema-field button[type=submit]").await;
    browser
        .wait_for(".field.invalid[data-field=options] .field-error")
        .await;
    assert_eq!(
        browser.value("#f-name").await,
        "stage",
        "the typed name is kept"
    );
    browser.goto(&format!("{}/s/deal", app.base)).await.unwrap();
    add_field(
        "stage",
        "picklist",
        vec![("options", "open\nwon | Won | closed\nlost | Lost | closed")],
    )
    .await;
    add_field("seats", "integer", vec![("min", "1")]).await;
    add_field("margin", "decimal", vec![]).await;
    browser.shot("console-schema").await;
    let deal = app.get("/api/v1/entities/deal").await.body;
    assert_eq!(
        deal["fields"],
        json!([
            {"name": "title", "label": "Title", "type": "text", "required": true},
            {"name": "stage", "type": "picklist", "options": ["open", {"value": "won", "label": "Won", "closed": true}, {"value": "lost", "label": "Lost", "closed": true}]},
            {"name": "seats", "type": "integer", "min": 1.0},
            {"name": "margin", "type": "decimal"}
        ])
    );

    browser.goto(&format!("{}/r/deal", app.base)).await.unwrap();
    browser.wait_for("a.button[href='/r/deal/new']").await;
    assert!(browser.current_url().await.ends_with("/r/deal"));

    browser.click("a.button[href='/r/deal/new']").await;
    browser.wait_for("form.record").await;
    browser.fill("#f-seats", "0").await;
    browser.fill("#f-margin", "0.25").await;
    browser.click("form.record button[type=submit]").await;
    browser
        .wait_for(".field.invalid[data-field=title] .field-error")
        .await;
    let error = browser
        .text(".field.invalid[data-field=title] .field-error")
        .await;
    assert!(!error.is_empty());
    assert_eq!(
        browser.value("#f-margin").await,
        "0.25",
        "the typed value is kept"
    );
    browser.shot("console-form-errors").await;

    browser.fill("#f-title", "Browser deal").await;
    browser.fill("#f-seats", "4").await;
    browser.click("form.record button[type=submit]").await;
    browser.wait_for("dd[data-field=title]").await;
    assert_eq!(browser.text("dd[data-field=title]").await, "Browser deal");
    browser.shot("console-record").await;

    browser.goto(&format!("{}/r/deal", app.base)).await.unwrap();
    browser.wait_for("table.records").await;
    assert!(browser.text("table.records").await.contains("Browser deal"));
    browser.shot("console-list").await;

    // Phone width: the list still shows the record (as label–value rows).
    browser.resize(390, 844).await;
    browser.goto(&format!("{}/r/deal", app.base)).await.unwrap();
    browser.wait_for("table.records").await;
    assert!(browser.text("table.records").await.contains("Browser deal"));
    browser.shot("console-list-phone").await;

    // A dashboard: KPI tiles and SVG charts.
    browser.resize(1280, 900).await;
    sales_dashboard_in(&app).await;
    browser
        .goto(&format!("{}/d/sales", app.base))
        .await
        .unwrap();
    browser
        .wait_for("[data-widget=by_stage] svg.chart rect")
        .await;
    assert!(
        browser
            .text("[data-widget=won_deals] .kpi-value")
            .await
            .starts_with('2')
    );
    browser.shot("console-dashboard").await;

    // The exhibition pack, installed from the gallery after its preview, and its booth map
    // from the exhibition's page.
    browser.goto(&format!("{}/k", app.base)).await.unwrap();
    browser.click("[data-pack=exhibition] h2 a").await;
    browser
        .wait_for("form[action='/k/exhibition/install'] input[name=sample]")
        .await;
    browser
        .click("form[action='/k/exhibition/install'] input[name=sample]")
        .await;
    browser
        .click("form[action='/k/exhibition/install'] button[type=submit]")
        .await;
    browser
        .wait_for("li[data-entity=booth][data-change=added]")
        .await;
    browser.shot("console-pack-preview").await;
    browser.click("form.confirm button[type=submit]").await;
    // Installed: the pack's page offers its removal.
    browser
        .wait_for("form[action='/k/exhibition/remove']")
        .await;
    let expos = app.get("/api/v1/records/exhibition?limit=1").await;
    let expo = expos.body["data"][0]["id"].as_str().unwrap().to_owned();
    browser
        .goto(&format!("{}/r/exhibition/{expo}", app.base))
        .await
        .unwrap();
    browser.wait_for("nav.views a[href^='/v/booth_map']").await;
    browser.click("nav.views a[href^='/v/booth_map']").await;
    browser.wait_for("svg.plan rect.place").await;
    browser.shot("console-booth-map").await;

    // A plugin's failure, in its runs list.
    failing_plugin(&app).await;
    browser.goto(&format!("{}/p", app.base)).await.unwrap();
    browser.click("a[href='/p/hostile']").await;
    browser.wait_for("table.runs").await;
    browser.click("a[href='/p/hostile?failures=1']").await;
    browser.wait_for("table.runs tr.failed .field-error").await;
    assert!(
        !browser
            .text("table.runs tr.failed .field-error")
            .await
            .is_empty()
    );
    browser.scroll_to("table.runs").await;
    browser.shot("console-plugin-runs").await;

    browser.close().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    app.stop().await;
}
