//! Workflows that start on time, in a real server on SQLite and PostgreSQL: cron schedules (in
//! the tenant's time zone, fanned out over matching records), date triggers (a datetime or a
//! date field shifted by an offset, each moment once) and yearly dates (birthdays).

use std::collections::HashMap;
use std::time::Duration;

use rapport_tests::{TestApp, on_both_backends};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use time::format_description::well_known::Rfc3339;
use time::{OffsetDateTime, UtcOffset};

on_both_backends!(
    timed_triggers_with_problems_are_refused_with_the_path_of_each,
    a_schedule_fans_out_over_the_matching_records_at_each_time_until_disabled,
    a_schedule_without_an_entity_starts_one_run_per_time,
    schedules_follow_the_tenant_time_zone,
    a_datetime_comes_round_once_shifted_by_its_offset,
    a_date_field_comes_round_at_its_time_of_day,
    birthdays_come_round_every_year_for_contacts_who_opted_in,
);

async fn define_complaints(app: &TestApp) {
    app.define(json!({"name": "complaint", "fields": [
        {"name": "title", "type": "text", "required": true},
        {"name": "priority", "type": "picklist", "options": ["urgent", "ordinary"], "required": true},
        {"name": "note", "type": "text"},
        {"name": "due_at", "type": "datetime"},
        {"name": "renewal", "type": "date"}
    ]}))
    .await;
}

async fn save(app: &TestApp, definition: Value) -> Value {
    let reply = app.post("/api/v1/workflows", definition).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    reply.body
}

/// The runs of a workflow, newest first.
async fn runs(app: &TestApp, workflow: &str) -> Vec<Value> {
    let reply = app
        .get(&format!("/api/v1/workflows/{workflow}/runs?limit=100"))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    reply.body["data"].as_array().unwrap().clone()
}

/// Waits (up to `seconds`) until `workflow` has at least `count` runs, all finished.
async fn at_least(app: &TestApp, workflow: &str, count: usize, seconds: u64) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(seconds);
    loop {
        let all = runs(app, workflow).await;
        let finished = all.iter().all(|run| run["finished_at"].is_string());
        if all.len() >= count && finished {
            return all;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "`{workflow}` has not got {count} finished runs in {seconds} s: {all:#?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn rfc3339(moment: OffsetDateTime) -> String {
    moment.format(&Rfc3339).unwrap()
}

fn parse(text: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(text.as_str().expect("a datetime"), &Rfc3339).unwrap()
}

async fn timed_triggers_with_problems_are_refused_with_the_path_of_each(app: &TestApp) {
    define_complaints(app).await;
    let cases = [
        (
            json!({"type": "schedule", "cron": "61 * * * *"}),
            "/trigger/cron",
            "is not a cron expression",
        ),
        (
            json!({"type": "schedule", "cron": "0 0 30 2 *"}),
            "/trigger/cron",
            "never comes round",
        ),
        (
            json!({"type": "schedule", "cron": "0 9 * * *", "time_zone": "Mars/Olympus"}),
            "/trigger/time_zone",
            "Mars/Olympus",
        ),
        (
            json!({"type": "schedule", "cron": "0 9 * * *", "entity": "complaint", "condition": "colour eq 'red'"}),
            "/trigger/condition",
            "no field `colour`",
        ),
        (
            json!({"type": "schedule", "cron": "0 9 * * *", "condition": "priority eq 'urgent'"}),
            "/trigger/condition",
            "name the `entity`",
        ),
        (
            json!({"type": "date", "entity": "complaint", "field": "title"}),
            "/trigger/field",
            "needs a date or datetime field",
        ),
        (
            json!({"type": "date", "entity": "complaint", "field": "nothing"}),
            "/trigger/field",
            "no field `nothing`",
        ),
        (
            json!({"type": "date", "entity": "complaint", "field": "renewal", "offset": "-3h"}),
            "/trigger/offset",
            "whole days",
        ),
        (
            json!({"type": "date", "entity": "complaint", "field": "due_at", "at": "09:00"}),
            "/trigger/at",
            "applies to date fields",
        ),
        (
            json!({"type": "date", "entity": "complaint", "field": "due_at", "yearly": true}),
            "/trigger/yearly",
            "applies to date fields",
        ),
        (
            json!({"type": "date", "entity": "complaint", "field": "renewal", "at": "25:00"}),
            "/trigger/at",
            "not a time of day",
        ),
        (
            json!({"type": "date", "entity": "ghost", "field": "renewal"}),
            "/trigger/entity",
            "does not exist",
        ),
    ];
    for (trigger, path, message) in cases {
        let reply = app
            .post(
                "/api/v1/workflows",
                json!({"name": "bad", "trigger": trigger,
                       "steps": [{"id": "n", "type": "notify", "user": "{{user}}", "message": "x"}]}),
            )
            .await;
        assert_eq!(
            reply.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{trigger}: {:?}",
            reply.body
        );
        let problems = reply.body["error"]["fields"].as_object().unwrap();
        let messages = problems
            .get(path)
            .unwrap_or_else(|| panic!("{trigger}: no problem at {path}: {problems:?}"));
        assert!(
            messages.to_string().contains(message),
            "{trigger}: {messages}"
        );
    }
    assert_eq!(
        app.get("/api/v1/workflows/bad").await.status,
        StatusCode::NOT_FOUND,
        "nothing was saved"
    );
}

async fn a_schedule_fans_out_over_the_matching_records_at_each_time_until_disabled(app: &TestApp) {
    define_complaints(app).await;
    let urgent = [
        app.create("complaint", json!({"title": "A", "priority": "urgent"}))
            .await,
        app.create("complaint", json!({"title": "B", "priority": "urgent"}))
            .await,
    ];
    let ordinary = app
        .create("complaint", json!({"title": "C", "priority": "ordinary"}))
        .await;
    let saved = save(
        app,
        json!({
            "name": "sweep",
            "trigger": {"type": "schedule", "cron": "* * * * * *", "entity": "complaint",
                        "condition": "priority eq 'urgent'"},
            "steps": [{"id": "mark", "type": "set_fields", "values": {"note": "swept at {{now}}"}}]
        }),
    )
    .await;
    assert!(saved["next_run_at"].is_string(), "{saved}");
    at_least(app, "sweep", 4, 15).await;
    let reply = app.post("/api/v1/workflows/sweep/disable", json!({})).await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert!(
        reply.body.get("next_run_at").is_none(),
        "a disabled schedule has no next time: {:?}",
        reply.body
    );
    // A firing that began before the disable has committed by now; then nothing more fires.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let count = at_least(app, "sweep", 4, 15).await.len();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let all = runs(app, "sweep").await;
    assert_eq!(all.len(), count, "a disabled schedule starts no runs");
    // Every firing started one run per urgent complaint: each has as many, and no other has any.
    let mut per_record: HashMap<String, usize> = HashMap::new();
    let mut fired: std::collections::HashSet<(String, String)> = Default::default();
    for run in &all {
        assert_eq!(run["event"], "schedule");
        assert_eq!(run["status"], "succeeded", "{run:#}");
        let record = run["record_id"].as_str().unwrap().to_owned();
        let time = run["trigger"]["scheduled_for"].as_str().unwrap().to_owned();
        assert!(
            fired.insert((record.clone(), time)),
            "a time fired twice: {run:#}"
        );
        *per_record.entry(record).or_default() += 1;
    }
    assert_eq!(per_record.len(), 2, "{per_record:?}");
    assert_eq!(
        per_record[&urgent[0]], per_record[&urgent[1]],
        "{per_record:?}"
    );
    for id in &urgent {
        let note = app
            .get(&format!("/api/v1/records/complaint/{id}"))
            .await
            .body["data"]["note"]
            .clone();
        assert!(note.as_str().unwrap().starts_with("swept at "), "{note}");
    }
    let untouched = app
        .get(&format!("/api/v1/records/complaint/{ordinary}"))
        .await;
    assert!(untouched.body["data"].get("note").is_none());
}

async fn a_schedule_without_an_entity_starts_one_run_per_time(app: &TestApp) {
    save(
        app,
        json!({
            "name": "heartbeat",
            "trigger": {"type": "schedule", "cron": "*/2 * * * * *"},
            "steps": [{"id": "tell", "type": "notify", "user": "{{user}}", "message": "tick"}]
        }),
    )
    .await;
    let all = at_least(app, "heartbeat", 2, 15).await;
    app.delete("/api/v1/workflows/heartbeat").await;
    for run in &all {
        assert_eq!(run["event"], "schedule");
        assert!(run["record_id"].is_null());
        assert_eq!(run["status"], "succeeded", "{run:#}");
    }
    // Each time of `*/2` seconds once: every run is for a different even second.
    let mut times: Vec<OffsetDateTime> = all
        .iter()
        .map(|run| parse(&run["trigger"]["scheduled_for"]))
        .collect();
    times.sort();
    times.dedup();
    assert_eq!(times.len(), all.len(), "a time fired twice: {all:#?}");
    assert!(times.iter().all(|time| time.second() % 2 == 0), "{times:?}");
    let notes = app.get("/api/v1/notifications").await.body["data"].clone();
    assert!(notes.as_array().unwrap().len() >= 2, "{notes}");
    assert_eq!(notes[0]["message"], "tick");
}

async fn schedules_follow_the_tenant_time_zone(app: &TestApp) {
    let reply = app.get("/api/v1/tenant").await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["time_zone"], "UTC");
    for (body, field) in [
        (json!({"time_zone": "Europe/Atlantis"}), "Europe/Atlantis"),
        (json!({"timezone": "UTC"}), "timezone"),
    ] {
        let reply = app.patch("/api/v1/tenant", body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{:?}", reply.body);
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(field),
            "{:?}",
            reply.body
        );
    }
    let member = app.member("mia").await;
    let reply = app
        .send(
            Method::PATCH,
            "/api/v1/tenant",
            &member,
            Some(&json!({"time_zone": "Asia/Tokyo"})),
            &[],
        )
        .await;
    assert_eq!(reply.status, StatusCode::FORBIDDEN);
    let reply = app
        .patch("/api/v1/tenant", json!({"time_zone": "Asia/Tokyo"}))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    assert_eq!(reply.body["time_zone"], "Asia/Tokyo");

    // 09:00 in Tokyo (UTC+9, no daylight saving) is 00:00 UTC.
    let saved = save(
        app,
        json!({
            "name": "morning",
            "trigger": {"type": "schedule", "cron": "0 9 * * *"},
            "steps": [{"id": "tell", "type": "notify", "user": "{{user}}", "message": "good morning"}]
        }),
    )
    .await;
    let next = parse(&saved["next_run_at"]);
    assert_eq!((next.hour(), next.minute()), (0, 0), "{next}");
    assert!(next > OffsetDateTime::now_utc());
    assert!(next - OffsetDateTime::now_utc() <= time::Duration::days(1));
    // A schedule with its own time zone keeps it.
    let saved = save(
        app,
        json!({
            "name": "istanbul",
            "trigger": {"type": "schedule", "cron": "30 9 * * *", "time_zone": "Europe/Istanbul"},
            "steps": [{"id": "tell", "type": "notify", "user": "{{user}}", "message": "günaydın"}]
        }),
    )
    .await;
    let next = parse(&saved["next_run_at"]);
    assert_eq!((next.hour(), next.minute()), (6, 30), "{next}");
    // Moving the tenant to Istanbul (UTC+3) moves the tenant-zone schedule: 09:00 is 06:00 UTC.
    let reply = app
        .patch("/api/v1/tenant", json!({"time_zone": "Europe/Istanbul"}))
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let next = parse(&app.get("/api/v1/workflows/morning").await.body["next_run_at"]);
    assert_eq!(
        (next.to_offset(UtcOffset::UTC).hour(), next.minute()),
        (6, 0),
        "{next}"
    );
}

async fn a_datetime_comes_round_once_shifted_by_its_offset(app: &TestApp) {
    define_complaints(app).await;
    // Datetimes are kept to the millisecond.
    let at = |from_now: time::Duration| {
        let moment = OffsetDateTime::now_utc() + from_now;
        moment.replace_millisecond(moment.millisecond()).unwrap()
    };
    let past = app
        .create(
            "complaint",
            json!({"title": "past", "priority": "urgent",
                   "due_at": rfc3339(at(time::Duration::days(1) - time::Duration::minutes(5)))}),
        )
        .await;
    save(
        app,
        json!({
            "name": "day_before",
            "trigger": {"type": "date", "entity": "complaint", "field": "due_at", "offset": "-1d",
                        "condition": "priority eq 'urgent'"},
            "steps": [{"id": "warn", "type": "set_fields", "values": {"note": "due tomorrow"}}]
        }),
    )
    .await;
    // Written after the workflow, due tomorrow a few seconds from now: the write brings the
    // timer forward from its next look (up to a minute away) to the moment.
    let due = at(time::Duration::days(1) + time::Duration::seconds(4));
    let moment = due - time::Duration::days(1);
    let soon = app
        .create(
            "complaint",
            json!({"title": "soon", "priority": "urgent", "due_at": rfc3339(due)}),
        )
        .await;
    // (Or the first look, right after the save, is still to come.)
    let next = parse(&app.get("/api/v1/workflows/day_before").await.body["next_run_at"]);
    assert!(
        next <= moment,
        "the timer looks by the moment: {next} vs {moment}"
    );
    let later = app
        .create(
            "complaint",
            json!({"title": "later", "priority": "urgent",
                   "due_at": rfc3339(at(time::Duration::days(1) + time::Duration::hours(1)))}),
        )
        .await;
    // The right moment, but the condition does not hold.
    app.create(
        "complaint",
        json!({"title": "ordinary", "priority": "ordinary", "due_at": rfc3339(due)}),
    )
    .await;
    let all = at_least(app, "day_before", 1, 30).await;
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0]["event"], "date");
    assert_eq!(all[0]["record_id"], soon.as_str(), "not {past} nor {later}");
    assert_eq!(all[0]["status"], "succeeded", "{:#}", all[0]);
    assert!(all[0]["trigger"]["window"].is_array(), "{:#}", all[0]);
    let started = parse(&all[0]["created_at"]);
    assert!(
        started >= moment && started - moment < time::Duration::seconds(5),
        "the run started at its moment: {started} vs {moment}"
    );
    let note = &app
        .get(&format!("/api/v1/records/complaint/{soon}"))
        .await
        .body["data"]["note"];
    assert_eq!(note, "due tomorrow");
    // After the firing the timer looks again at `later`'s moment or within a minute.
    let next = parse(&app.get("/api/v1/workflows/day_before").await.body["next_run_at"]);
    assert!(next > moment, "{next}");
    assert!(
        next <= OffsetDateTime::now_utc() + time::Duration::seconds(61),
        "{next}"
    );
}

async fn a_date_field_comes_round_at_its_time_of_day(app: &TestApp) {
    define_complaints(app).await;
    // Thirty days before the renewal date, at a time of day a few seconds from now (UTC): after
    // the workflow is saved, since moments before it do not count.
    let moment = OffsetDateTime::now_utc() + time::Duration::seconds(6);
    let at = format!(
        "{:02}:{:02}:{:02}",
        moment.hour(),
        moment.minute(),
        moment.second()
    );
    let renewal = moment.date() + time::Duration::days(30);
    let due = app
        .create(
            "complaint",
            json!({"title": "renews", "priority": "ordinary", "renewal": renewal.to_string()}),
        )
        .await;
    app.create(
        "complaint",
        json!({"title": "renews a day later", "priority": "ordinary",
               "renewal": (renewal + time::Duration::days(1)).to_string()}),
    )
    .await;
    let saved = save(
        app,
        json!({
            "name": "renewal_notice",
            "trigger": {"type": "date", "entity": "complaint", "field": "renewal", "offset": "-30d",
                        "at": at},
            "steps": [{"id": "tell", "type": "notify", "user": "{{user}}",
                       "message": "{{record.title}} renews on {{record.renewal}}"}]
        }),
    )
    .await;
    assert!(saved["next_run_at"].is_string(), "{saved}");
    let all = at_least(app, "renewal_notice", 1, 30).await;
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0]["record_id"], due.as_str());
    let started = parse(&all[0]["created_at"]);
    assert!(
        started + time::Duration::milliseconds(5) >= moment.replace_nanosecond(0).unwrap(),
        "not before its time of day: {started} vs {moment}"
    );
    let notes = app.get("/api/v1/notifications").await.body["data"].clone();
    assert_eq!(notes[0]["message"], format!("renews renews on {renewal}"));
    let next = parse(&app.get("/api/v1/workflows/renewal_notice").await.body["next_run_at"]);
    let tomorrow = moment.replace_nanosecond(0).unwrap() + time::Duration::days(1);
    assert_eq!(next, tomorrow, "the next look is at the same time tomorrow");
}

async fn birthdays_come_round_every_year_for_contacts_who_opted_in(app: &TestApp) {
    let contact = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../schemas/packs/core/entities/contact.json"),
    )
    .unwrap();
    let mut contact: Value = serde_json::from_str(&contact).unwrap();
    // Without its reference to accounts, which this test does not need.
    contact["fields"]
        .as_array_mut()
        .unwrap()
        .retain(|field| field["type"] != "reference");
    app.define(contact).await;
    // The demo's birthday greeting, at a time of day a few seconds from now.
    let text = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../schemas/packs/core/workflows/birthday_greeting.json"),
    )
    .unwrap();
    let mut greeting: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(greeting["trigger"]["yearly"], true);
    let moment = OffsetDateTime::now_utc() + time::Duration::seconds(6);
    greeting["trigger"]["at"] = json!(format!(
        "{:02}:{:02}:{:02}",
        moment.hour(),
        moment.minute(),
        moment.second()
    ));
    let today = moment.date();
    let born = |year: i32| today.replace_year(year).unwrap_or(today).to_string();
    let ann = app
        .create(
            "contact",
            json!({"first_name": "Ann", "email": "ann@example.com", "birthday": born(1990),
                   "channels": ["email", "phone"]}),
        )
        .await;
    app.create(
        "contact",
        json!({"first_name": "Bob", "email": "bob@example.com", "birthday": born(1985),
               "channels": ["phone"]}),
    )
    .await;
    app.create(
        "contact",
        json!({"first_name": "Cid", "email": "cid@example.com",
               "birthday": (today + time::Duration::days(1)).replace_year(1972).unwrap().to_string(),
               "channels": ["email"]}),
    )
    .await;
    save(app, greeting).await;
    let all = at_least(app, "birthday_greeting", 1, 30).await;
    assert_eq!(all.len(), 1, "{all:#?}");
    assert_eq!(all[0]["record_id"], ann.as_str());
    assert_eq!(all[0]["status"], "succeeded", "{:#}", all[0]);
    let outbox = app.get("/api/v1/outbox?kind=email").await.body["data"].clone();
    let emails = outbox.as_array().unwrap();
    assert_eq!(emails.len(), 1, "{outbox}");
    assert_eq!(emails[0]["payload"]["to"], "ann@example.com");
    assert!(
        emails[0]["payload"]["subject"]
            .as_str()
            .unwrap()
            .contains("Ann"),
        "{outbox}"
    );
}
