//! The bundled industry packs end to end, in a real server with their real plugins, on SQLite
//! and PostgreSQL: `exhibition` (booth map, a booth never sold twice, invitations merged into
//! the outbox, results on the exhibition) and `real-estate` (buyers matched to listings, the
//! agent told).

use std::time::Duration;

use rapport_tests::{TestApp, on_both_backends};
use reqwest::StatusCode;
use serde_json::{Value, json};

on_both_backends!(
    the_exhibition_pack_draws_a_booth_map_sells_booths_once_and_invites_exhibitors,
    the_real_estate_pack_matches_buyers_to_a_new_listing_and_tells_the_agent,
);

async fn list(app: &TestApp, path: &str) -> Vec<Value> {
    let reply = app.get(path).await;
    assert_eq!(reply.status, StatusCode::OK, "{path}: {:?}", reply.body);
    reply.body["data"].as_array().unwrap().clone()
}

/// Polls a list until `done` holds (workflows run in the background).
async fn wait_for(app: &TestApp, path: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    for _ in 0..200 {
        let items = list(app, path).await;
        if done(&items) {
            return items;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} never got there: {:#?}", list(app, path).await);
}

async fn install(app: &TestApp, pack: &str) -> Value {
    let reply = app
        .post(
            &format!("/api/v1/packs/{pack}/install?sample=true"),
            Value::Null,
        )
        .await;
    assert_eq!(reply.status, StatusCode::CREATED, "{:?}", reply.body);
    reply.body
}

async fn the_exhibition_pack_draws_a_booth_map_sells_booths_once_and_invites_exhibitors(
    app: &TestApp,
) {
    // `core` comes first, as the pack's dependency, in the same transaction.
    let report = install(app, "exhibition").await;
    let ids: Vec<&str> = report["packs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|pack| pack["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["core", "exhibition"]);
    let account = app.get("/api/v1/entities/account").await.body;
    assert!(
        account["fields"]
            .as_array()
            .unwrap()
            .iter()
            .any(|field| field["name"] == "exhibitor_category"),
        "the pack adds fields to core's account"
    );

    let expo = list(
        app,
        "/api/v1/records/exhibition?filter=name%20eq%20'Shanghai%20Industrial%20Automation%20Expo'",
    )
    .await[0]
        .clone();
    let expo_id = expo["id"].as_str().unwrap().to_owned();
    // The booth map: every booth of the exhibition with its place and status.
    let map = list(
        app,
        &format!("/api/v1/views/booth_map/records?exhibition={expo_id}"),
    )
    .await;
    assert!(map.len() >= 10, "{map:#?}");
    for booth in &map {
        let data = &booth["data"];
        for field in ["number", "hall", "x", "y", "width", "height", "status"] {
            assert!(!data[field].is_null(), "{field} of {booth}");
        }
        assert!(data.get("notes").is_none(), "only the view's fields");
    }
    let sold: Vec<&Value> = map
        .iter()
        .filter(|booth| booth["data"]["status"] == "sold")
        .collect();
    assert_eq!(
        expo["data"]["booths_sold"].as_u64(),
        Some(sold.len() as u64),
        "exhibition-results counts the sold booths"
    );
    assert!(expo["data"]["booth_revenue"].is_object(), "{expo:#}");

    // A sold booth cannot be sold to another exhibitor.
    let booth = sold[0];
    let number = booth["data"]["number"].as_str().unwrap();
    let exhibitors = list(
        app,
        &format!("/api/v1/records/exhibitor?filter=exhibition%20eq%20'{expo_id}'"),
    )
    .await;
    let other = exhibitors
        .iter()
        .find(|exhibitor| exhibitor["id"] != booth["data"]["exhibitor"])
        .expect("another exhibitor");
    let reply = app
        .patch(
            &format!("/api/v1/records/booth/{}", booth["id"].as_str().unwrap()),
            json!({"data": {"exhibitor": other["id"]}}),
        )
        .await;
    assert_eq!(
        reply.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "{:?}",
        reply.body
    );
    assert!(
        reply.body.to_string().contains(number),
        "the refusal names booth {number}: {:?}",
        reply.body
    );
    // A free booth sold: the exhibition's results follow in the same write.
    let free = map
        .iter()
        .find(|booth| booth["data"]["status"] == "free")
        .expect("a free booth");
    let reply = app
        .patch(
            &format!("/api/v1/records/booth/{}", free["id"].as_str().unwrap()),
            json!({"data": {"status": "sold", "exhibitor": other["id"]}}),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{:?}", reply.body);
    let expo_now = app
        .get(&format!("/api/v1/records/exhibition/{expo_id}"))
        .await
        .body;
    assert_eq!(
        expo_now["data"]["booths_sold"].as_u64(),
        Some(sold.len() as u64 + 1)
    );

    // Invitations: one merged email per exhibitor into the outbox, one invitation each.
    let invitations_path =
        format!("/api/v1/records/invitation?filter=exhibition%20eq%20'{expo_id}'&limit=500");
    let invitations_before = list(app, &invitations_path).await.len();
    let before = list(app, "/api/v1/outbox?kind=email&limit=1000")
        .await
        .len();
    let started = app
        .post(
            "/api/v1/workflows/invite_exhibitors/runs",
            json!({"record": expo_id, "input": {
                "subject": "Your place at {{exhibition}}",
                "body": "Dear {{contact_name}}, {{company}} is welcome at {{exhibition}}."}}),
        )
        .await;
    assert_eq!(started.status, StatusCode::ACCEPTED, "{:?}", started.body);
    let runs = wait_for(app, "/api/v1/workflows/invite_exhibitors/runs", |runs| {
        runs.first()
            .is_some_and(|run| run["status"] == "succeeded" || run["status"] == "failed")
    })
    .await;
    assert_eq!(runs[0]["status"], "succeeded", "{:#?}", runs[0]);
    let emails = list(app, "/api/v1/outbox?kind=email&limit=1000").await;
    let new: Vec<&Value> = emails[..emails.len() - before].iter().collect();
    assert!(!new.is_empty(), "{emails:#?}");
    for email in &new {
        let payload = &email["payload"];
        assert_eq!(
            payload["subject"],
            "Your place at Shanghai Industrial Automation Expo"
        );
        let body = payload["body"].as_str().unwrap();
        assert!(
            body.starts_with("Dear ") && !body.contains("{{"),
            "merged: {body}"
        );
    }
    let invitations = list(app, &invitations_path).await;
    assert_eq!(
        invitations.len() - invitations_before,
        new.len(),
        "one invitation per email: {invitations:#?}"
    );
}

async fn the_real_estate_pack_matches_buyers_to_a_new_listing_and_tells_the_agent(app: &TestApp) {
    install(app, "real-estate").await;
    let property = app
        .create(
            "property",
            json!({"address": "Moda Caddesi 12", "district": "Kadıköy", "city": "Istanbul",
                   "property_type": "apartment", "area": 100, "rooms": 3}),
        )
        .await;
    let listing = app
        .create(
            "listing",
            json!({"property": property, "title": "Bright 3-room flat", "district": "Kadıköy",
                   "price": {"amount": 400000, "currency": "EUR"}, "area": 100, "rooms": 3,
                   "status": "active"}),
        )
        .await;
    let matches = wait_for(
        app,
        &format!("/api/v1/records/listing_match?filter=listing%20eq%20'{listing}'"),
        |matches| !matches.is_empty(),
    )
    .await;
    let buyers: Vec<&Value> = matches.iter().map(|m| &m["data"]["buyer"]).collect();
    assert!(buyers.iter().all(|buyer| buyer.is_string()), "{matches:#?}");
    let notes = wait_for(app, "/api/v1/notifications", |notes| {
        notes.iter().any(|note| {
            note["message"]
                .as_str()
                .is_some_and(|m| m.contains("Bright 3-room flat"))
        })
    })
    .await;
    let note = notes
        .iter()
        .find(|note| {
            note["message"]
                .as_str()
                .unwrap()
                .contains("Bright 3-room flat")
        })
        .unwrap();
    assert!(
        note["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{} new buyers match listing", matches.len())),
        "{note}"
    );
    // A listing nobody's requirements accept matches nobody.
    let castle = app
        .create(
            "listing",
            json!({"property": property, "title": "Castle", "district": "Nowhere",
                   "price": {"amount": 90000000, "currency": "EUR"}, "area": 100, "rooms": 3,
                   "status": "active"}),
        )
        .await;
    let runs = wait_for(
        app,
        "/api/v1/workflows/notify_agent_of_matches/runs",
        |runs| {
            runs.iter()
                .any(|run| run["record_id"] == castle.as_str() && run["status"] == "succeeded")
        },
    )
    .await;
    // The branch on the plugin step's output: no new buyer, no message.
    let run = runs
        .iter()
        .find(|run| run["record_id"] == castle.as_str())
        .unwrap();
    let run = app
        .get(&format!(
            "/api/v1/workflows/notify_agent_of_matches/runs/{}",
            run["id"].as_str().unwrap()
        ))
        .await
        .body;
    let branch = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|step| step["step"] == "any_new")
        .unwrap_or_else(|| panic!("{run:#}"));
    assert_eq!(branch["output"]["taken"], "else", "{run:#}");
    assert_eq!(
        list(
            app,
            &format!("/api/v1/records/listing_match?filter=listing%20eq%20'{castle}'")
        )
        .await,
        Vec::<Value>::new()
    );
}
