//! Security over HTTP: roles with entity permissions, record scopes and field-level security
//! on every read surface, refused writes, mass assignment, administrator routes, tokens that
//! expire and are revoked, password sign-in with its lock, rate limits and the audit trail; on
//! SQLite and PostgreSQL.

use rapport_tests::{Backend, TestApp, on_both_backends, spawn_app_with};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

on_both_backends!(
    roles_scope_records_and_hide_fields_everywhere,
    writes_beyond_the_role_are_refused_naming_the_field,
    administrator_routes_refuse_other_roles,
    tokens_are_listed_expire_and_are_revoked,
    passwords_sign_in_and_failures_lock,
    changes_and_refusals_are_audited,
    roles_and_teams_are_managed_as_data,
    every_route_answers_each_role_as_its_permissions_say,
    plugins_see_what_their_user_may_see,
    workflows_act_as_the_trigger_or_the_owner,
    the_core_packs_roles_work_as_the_documents_say,
    a_hidden_reference_lists_nothing_and_purges_are_audited,
);

/// An app with `account` (a `notes` field hidden from reps, a read-only `credit_limit`), a
/// `contact` that references it and an admin-only `competitor`; a `rep` role; and three reps:
/// alice and bob in team `north`, carol alone. Returns (alice, bob, carol) as (token, id).
async fn sales_floor(app: &TestApp) -> [(String, String); 3] {
    app.define(json!({"name": "account", "fields": [
        {"name": "name", "type": "text", "required": true},
        {"name": "credit_limit", "type": "decimal"},
        {"name": "notes", "type": "long_text"}
    ]}))
    .await;
    app.define(json!({"name": "contact", "fields": [
        {"name": "name", "type": "text", "required": true},
        {"name": "account", "type": "reference", "entity": "account"}
    ]}))
    .await;
    app.define(json!({"name": "competitor", "fields": [
        {"name": "name", "type": "text", "required": true}
    ]}))
    .await;
    let role = app
        .post(
            "/api/v1/roles",
            json!({
                "name": "rep",
                "label": "Sales rep",
                "entities": {
                    "account": {"create": true, "read": "team", "update": "own",
                                "fields": {"credit_limit": "read", "notes": "none"}},
                    "contact": {"create": true, "read": "all", "update": "own"}
                }
            }),
        )
        .await;
    assert_eq!(role.status, StatusCode::CREATED, "{:?}", role.body);
    let alice = app.user_with_roles("alice", &["rep"]).await;
    let bob = app.user_with_roles("bob", &["rep"]).await;
    let carol = app.user_with_roles("carol", &["rep"]).await;
    let team = app
        .post(
            "/api/v1/teams",
            json!({"name": "north", "members": [alice.1, bob.1]}),
        )
        .await;
    assert_eq!(team.status, StatusCode::CREATED, "{:?}", team.body);
    [alice, bob, carol]
}

async fn as_user(
    app: &TestApp,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> rapport_tests::Reply {
    app.send(method, path, token, body.as_ref(), &[]).await
}

fn ids(reply: &Value) -> Vec<String> {
    let mut ids: Vec<String> = reply["data"]
        .as_array()
        .expect("a list")
        .iter()
        .map(|r| r["id"].as_str().expect("an id").to_owned())
        .collect();
    ids.sort();
    ids
}

async fn roles_scope_records_and_hide_fields_everywhere(app: &TestApp) {
    let [alice, bob, carol] = sales_floor(app).await;
    let created = as_user(
        app,
        &alice.0,
        Method::POST,
        "/api/v1/records/account",
        Some(json!({"data": {"name": "Alice's account"}})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let mine = created.body["id"].as_str().unwrap().to_owned();
    // The administrator fills in the hidden and the read-only field, and has a record of
    // their own, outside the team.
    let filled = app
        .patch(
            &format!("/api/v1/records/account/{mine}"),
            json!({"data": {"credit_limit": 5000, "notes": "secret margin talk"}}),
        )
        .await;
    assert_eq!(filled.status, StatusCode::OK, "{:?}", filled.body);
    let admins = app
        .create(
            "account",
            json!({"name": "Admin's account", "notes": "secret"}),
        )
        .await;
    let contact = app
        .create("contact", json!({"name": "Dana", "account": mine}))
        .await;

    // Get: the hidden field is absent, the read-only one shown.
    let got = as_user(
        app,
        &alice.0,
        Method::GET,
        &format!("/api/v1/records/account/{mine}"),
        None,
    )
    .await;
    assert_eq!(got.status, StatusCode::OK);
    assert_eq!(got.body["data"]["credit_limit"], json!(5000));
    assert!(got.body["data"].get("notes").is_none(), "{:?}", got.body);
    assert!(!got.body.to_string().contains("secret"));

    // Scope: bob (same team) sees alice's account, carol does not; nobody sees the admin's.
    let bobs = as_user(app, &bob.0, Method::GET, "/api/v1/records/account", None).await;
    assert_eq!(ids(&bobs.body), vec![mine.clone()]);
    let carols = as_user(app, &carol.0, Method::GET, "/api/v1/records/account", None).await;
    assert_eq!(ids(&carols.body), Vec::<String>::new());
    let foreign = as_user(
        app,
        &carol.0,
        Method::GET,
        &format!("/api/v1/records/account/{mine}"),
        None,
    )
    .await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND);
    let admin_record = as_user(
        app,
        &alice.0,
        Method::GET,
        &format!("/api/v1/records/account/{admins}"),
        None,
    )
    .await;
    assert_eq!(admin_record.status, StatusCode::NOT_FOUND);
    let all = app.get("/api/v1/records/account").await;
    assert_eq!(
        ids(&all.body).len(),
        2,
        "the administrator sees every record"
    );

    // No oracle: filtering, sorting, selecting or searching by the hidden field is refused or
    // finds nothing.
    for query in [
        "filter=notes%20eq%20'secret'",
        "sort=notes",
        "fields=notes",
        "filter=notes%20is%20null",
    ] {
        let reply = as_user(
            app,
            &alice.0,
            Method::GET,
            &format!("/api/v1/records/account?{query}"),
            None,
        )
        .await;
        assert_eq!(
            reply.status,
            StatusCode::BAD_REQUEST,
            "{query}: {:?}",
            reply.body
        );
    }
    let searched = as_user(
        app,
        &alice.0,
        Method::GET,
        "/api/v1/records/account?q=margin",
        None,
    )
    .await;
    assert_eq!(searched.status, StatusCode::OK);
    assert_eq!(
        ids(&searched.body),
        Vec::<String>::new(),
        "search does not look into hidden fields"
    );

    // Expansion and related lists apply the target's rules.
    let expanded = as_user(
        app,
        &alice.0,
        Method::GET,
        &format!("/api/v1/records/contact/{contact}?expand=account"),
        None,
    )
    .await;
    assert_eq!(expanded.status, StatusCode::OK, "{:?}", expanded.body);
    assert_eq!(expanded.body["expanded"]["account"]["id"], json!(mine));
    assert!(
        expanded.body["expanded"]["account"]["data"]
            .get("notes")
            .is_none()
    );
    let carol_expands = as_user(
        app,
        &carol.0,
        Method::GET,
        &format!("/api/v1/records/contact/{contact}?expand=account"),
        None,
    )
    .await;
    assert_eq!(carol_expands.status, StatusCode::OK);
    assert_eq!(
        carol_expands.body["expanded"]["account"],
        Value::Null,
        "out of carol's scope"
    );
    let related = as_user(
        app,
        &carol.0,
        Method::GET,
        &format!("/api/v1/records/account/{mine}/related/contact"),
        None,
    )
    .await;
    assert_eq!(
        related.status,
        StatusCode::NOT_FOUND,
        "the parent is out of scope"
    );

    // History: the hidden field's changes are not there.
    let history = as_user(
        app,
        &alice.0,
        Method::GET,
        &format!("/api/v1/records/account/{mine}/history"),
        None,
    )
    .await;
    assert_eq!(history.status, StatusCode::OK);
    let text = history.body.to_string();
    assert!(
        text.contains("credit_limit") && !text.contains("notes") && !text.contains("secret"),
        "{text}"
    );
    let carol_history = as_user(
        app,
        &carol.0,
        Method::GET,
        &format!("/api/v1/records/account/{mine}/history"),
        None,
    )
    .await;
    assert_eq!(carol_history.status, StatusCode::NOT_FOUND);

    // Entities without a grant are forbidden, and absent from the metadata.
    let competitors = as_user(
        app,
        &alice.0,
        Method::GET,
        "/api/v1/records/competitor",
        None,
    )
    .await;
    assert_eq!(
        competitors.status,
        StatusCode::FORBIDDEN,
        "{:?}",
        competitors.body
    );
    let entities = as_user(app, &alice.0, Method::GET, "/api/v1/entities", None).await;
    let names: Vec<&str> = entities.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["account", "contact"]);
    let account = &entities.body["data"][0];
    assert!(
        !account.to_string().contains("notes"),
        "hidden fields are not described"
    );
    let hidden_entity = as_user(
        app,
        &alice.0,
        Method::GET,
        "/api/v1/entities/competitor",
        None,
    )
    .await;
    assert_eq!(hidden_entity.status, StatusCode::NOT_FOUND);

    // `me` tells a user what they may do.
    let me = as_user(app, &alice.0, Method::GET, "/api/v1/me", None).await;
    assert_eq!(me.status, StatusCode::OK);
    assert_eq!(me.body["user"]["roles"], json!(["rep"]));
    assert_eq!(me.body["permissions"]["account"]["read"], json!("team"));
    assert!(me.body["permissions"].get("competitor").is_none());
}

async fn writes_beyond_the_role_are_refused_naming_the_field(app: &TestApp) {
    let [alice, bob, _carol] = sales_floor(app).await;
    let mine = as_user(
        app,
        &alice.0,
        Method::POST,
        "/api/v1/records/account",
        Some(json!({"data": {"name": "Mine"}})),
    )
    .await
    .body["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (field, value) in [("notes", json!("x")), ("credit_limit", json!(1))] {
        let reply = as_user(
            app,
            &alice.0,
            Method::POST,
            "/api/v1/records/account",
            Some(json!({"data": {"name": "Another", field: value}})),
        )
        .await;
        assert_eq!(reply.status, StatusCode::FORBIDDEN, "{:?}", reply.body);
        assert!(
            reply.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(&format!("`{field}`"))
        );
        let patched = as_user(
            app,
            &alice.0,
            Method::PATCH,
            &format!("/api/v1/records/account/{mine}"),
            Some(json!({"data": {field: value}})),
        )
        .await;
        assert_eq!(patched.status, StatusCode::FORBIDDEN, "{:?}", patched.body);
    }
    // Bob may read alice's record but not change or delete it; nobody created a second one.
    let bobs = as_user(
        app,
        &bob.0,
        Method::PATCH,
        &format!("/api/v1/records/account/{mine}"),
        Some(json!({"data": {"name": "Bob was here"}})),
    )
    .await;
    assert_eq!(bobs.status, StatusCode::FORBIDDEN, "{:?}", bobs.body);
    let deleted = as_user(
        app,
        &alice.0,
        Method::DELETE,
        &format!("/api/v1/records/account/{mine}"),
        None,
    )
    .await;
    assert_eq!(
        deleted.status,
        StatusCode::FORBIDDEN,
        "reps may not delete: {:?}",
        deleted.body
    );
    let all = app.get("/api/v1/records/account").await;
    assert_eq!(ids(&all.body), vec![mine.clone()]);
    assert_eq!(all.body["data"][0]["data"]["name"], json!("Mine"));
    // No competitor for a rep.
    let competitor = as_user(
        app,
        &alice.0,
        Method::POST,
        "/api/v1/records/competitor",
        Some(json!({"data": {"name": "Rival"}})),
    )
    .await;
    assert_eq!(competitor.status, StatusCode::FORBIDDEN);

    // Mass assignment: system fields and members other than `data` are refused.
    for body in [
        json!({"data": {"name": "X", "_owner": bob.1}}),
        json!({"data": {"name": "X", "_id": "0192f3a4-0000-7000-8000-000000000000"}}),
        json!({"data": {"name": "X"}, "owner": bob.1}),
        json!({"data": {"name": "X"}, "tenant_id": "other"}),
        json!({"data": {"name": "X"}, "version": 7}),
        json!({"data": {"name": "X", "_created_at": "2020-01-01T00:00:00Z"}}),
    ] {
        let reply = as_user(
            app,
            &alice.0,
            Method::POST,
            "/api/v1/records/account",
            Some(body.clone()),
        )
        .await;
        assert!(
            reply.status == StatusCode::BAD_REQUEST
                || reply.status == StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {:?}",
            reply.body
        );
    }
    // Reassigning needs a role that may: reps may not, the administrator may.
    let assign = format!("/api/v1/records/account/{mine}/assign");
    let refused = as_user(
        app,
        &alice.0,
        Method::POST,
        &assign,
        Some(json!({"owner": bob.1})),
    )
    .await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{:?}", refused.body);
    let reassigned = app.post(&assign, json!({"owner": bob.1})).await;
    assert_eq!(reassigned.status, StatusCode::OK, "{:?}", reassigned.body);
    assert_eq!(reassigned.body["owner"], json!(bob.1));
    let nobody = app.post(&assign, json!({"owner": "no-such-user"})).await;
    assert_eq!(nobody.status, StatusCode::UNPROCESSABLE_ENTITY);
    // Purging (for good, history and all) is an administrator's, and audited.
    let purge = format!("/api/v1/records/account/{mine}?purge=true");
    let refused = as_user(app, &alice.0, Method::DELETE, &purge, None).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{:?}", refused.body);
    let member = app.member("mallory").await;
    let refused = as_user(app, &member, Method::DELETE, &purge, None).await;
    assert_eq!(refused.status, StatusCode::FORBIDDEN, "{:?}", refused.body);
    // Now bob owns it and may change it; alice (same team) still reads it.
    let bobs = as_user(
        app,
        &bob.0,
        Method::PATCH,
        &format!("/api/v1/records/account/{mine}"),
        Some(json!({"data": {"name": "Bob's now"}})),
    )
    .await;
    assert_eq!(bobs.status, StatusCode::OK, "{:?}", bobs.body);
}

async fn administrator_routes_refuse_other_roles(app: &TestApp) {
    let (member, _) = app.user_with_roles("mallory", &["member"]).await;
    let admin_only: &[(Method, &str, Option<Value>)] = &[
        (
            Method::POST,
            "/api/v1/entities",
            Some(json!({"name": "x", "fields": []})),
        ),
        (Method::GET, "/api/v1/users", None),
        (Method::POST, "/api/v1/users", Some(json!({"name": "eve"}))),
        (Method::GET, "/api/v1/roles", None),
        (
            Method::POST,
            "/api/v1/roles",
            Some(json!({"name": "boss", "admin": true})),
        ),
        (
            Method::PUT,
            "/api/v1/roles/member",
            Some(json!({"name": "member", "admin": true})),
        ),
        (Method::POST, "/api/v1/teams", Some(json!({"name": "t"}))),
        (Method::GET, "/api/v1/audit", None),
        (Method::GET, "/api/v1/tokens?user=*", None),
        (Method::GET, "/api/v1/plugins", None),
        (Method::POST, "/api/v1/packs/core/install", None),
        (
            Method::POST,
            "/api/v1/workflows",
            Some(json!({"name": "w"})),
        ),
        (Method::GET, "/api/v1/webhooks", None),
        (Method::GET, "/api/v1/outbox", None),
        (
            Method::PATCH,
            "/api/v1/tenant",
            Some(json!({"time_zone": "UTC"})),
        ),
    ];
    for (method, path, body) in admin_only {
        let reply = as_user(app, &member, method.clone(), path, body.clone()).await;
        assert_eq!(
            reply.status,
            StatusCode::FORBIDDEN,
            "{method} {path}: {:?}",
            reply.body
        );
    }
    // Still no administrator but the first, and the member role unchanged.
    let users = app.get("/api/v1/users").await;
    assert_eq!(users.body["data"].as_array().unwrap().len(), 2);
    let member_role = app.get("/api/v1/roles/member").await;
    assert!(
        member_role.body.get("admin").is_none(),
        "{:?}",
        member_role.body
    );
}

async fn tokens_are_listed_expire_and_are_revoked(app: &TestApp) {
    let (member, member_id) = app.user_with_roles("mallory", &["member"]).await;
    let created = as_user(
        app,
        &member,
        Method::POST,
        "/api/v1/tokens",
        Some(json!({"name": "ci", "expires_in_days": 30})),
    )
    .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let token = created.body["token"].as_str().unwrap().to_owned();
    let id = created.body["id"].as_str().unwrap().to_owned();
    assert!(created.body["expires_at"].is_string());
    let works = as_user(app, &token, Method::GET, "/api/v1/me", None).await;
    assert_eq!(works.status, StatusCode::OK);
    assert_eq!(works.body["user"]["id"], json!(member_id));

    // Listed without the secret; the admin sees everyone's.
    let listed = as_user(app, &member, Method::GET, "/api/v1/tokens", None).await;
    assert_eq!(listed.body["data"].as_array().unwrap().len(), 2);
    assert!(!listed.body.to_string().contains(&token));
    let everyone = app.get("/api/v1/tokens?user=*").await;
    assert_eq!(everyone.body["data"].as_array().unwrap().len(), 3);

    // Another user cannot revoke it (it is not there for them); its owner can.
    let (other, _) = app.user_with_roles("trent", &["member"]).await;
    let foreign = as_user(
        app,
        &other,
        Method::DELETE,
        &format!("/api/v1/tokens/{id}"),
        None,
    )
    .await;
    assert_eq!(foreign.status, StatusCode::NOT_FOUND);
    let revoked = as_user(
        app,
        &member,
        Method::DELETE,
        &format!("/api/v1/tokens/{id}"),
        None,
    )
    .await;
    assert_eq!(revoked.status, StatusCode::OK);
    let refused = as_user(app, &token, Method::GET, "/api/v1/me", None).await;
    assert_eq!(refused.status, StatusCode::UNAUTHORIZED);

    // An expired token is refused.
    let tenant = app.store.tenant_id("acme").await.unwrap().unwrap();
    let mut tx = app.store.begin().await.unwrap();
    let past = rapport::store::now() - time::Duration::minutes(1);
    let (expired, _) = tx
        .scoped(&tenant)
        .insert_token(
            &rapport::domain::UserId::from_stored(member_id.clone()),
            Some("old"),
            "api",
            Some(past),
        )
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let reply = as_user(app, &expired, Method::GET, "/api/v1/me", None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED, "{:?}", reply.body);

    // A disabled user's tokens stop working at once.
    let disabled = app
        .patch(
            &format!("/api/v1/users/{member_id}"),
            json!({"disabled": true}),
        )
        .await;
    assert_eq!(disabled.status, StatusCode::OK, "{:?}", disabled.body);
    let reply = as_user(app, &member, Method::GET, "/api/v1/me", None).await;
    assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    // The last administrator cannot be disabled.
    let admin = app.get("/api/v1/me").await.body["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let last = app
        .patch(&format!("/api/v1/users/{admin}"), json!({"disabled": true}))
        .await;
    assert_eq!(last.status, StatusCode::CONFLICT, "{:?}", last.body);
}

/// Signs in: a request without a token.
async fn sign_in(app: &TestApp, user: &str, password: &str) -> rapport_tests::Reply {
    let response = app
        .client
        .post(format!("{}/api/v1/sessions", app.base))
        .json(&json!({"tenant": "acme", "user": user, "password": password}))
        .send()
        .await
        .expect("request sent");
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    rapport_tests::Reply {
        status,
        headers,
        body,
    }
}

async fn passwords_sign_in_and_failures_lock(app: &TestApp) {
    let (_, id) = app.user_with_roles("mallory", &["member"]).await;
    let short = app
        .put(
            &format!("/api/v1/users/{id}/password"),
            json!({"password": "short"}),
        )
        .await;
    assert_eq!(short.status, StatusCode::UNPROCESSABLE_ENTITY);
    let set = app
        .put(
            &format!("/api/v1/users/{id}/password"),
            json!({"password": "correct horse battery"}),
        )
        .await;
    assert_eq!(set.status, StatusCode::NO_CONTENT, "{:?}", set.body);
    let session = sign_in(app, "mallory", "correct horse battery").await;
    assert_eq!(session.status, StatusCode::CREATED, "{:?}", session.body);
    let token = session.body["token"].as_str().unwrap().to_owned();
    let me = as_user(app, &token, Method::GET, "/api/v1/me", None).await;
    assert_eq!(me.body["user"]["name"], json!("mallory"));
    // Signing out revokes the session.
    let out = as_user(
        app,
        &token,
        Method::DELETE,
        "/api/v1/sessions/current",
        None,
    )
    .await;
    assert_eq!(out.status, StatusCode::NO_CONTENT);
    assert_eq!(
        as_user(app, &token, Method::GET, "/api/v1/me", None)
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );

    // Wrong passwords, unknown users and tenants answer alike.
    for (user, password) in [("mallory", "wrong password!"), ("nobody", "whatever it is")] {
        let reply = sign_in(app, user, password).await;
        assert_eq!(reply.status, StatusCode::UNAUTHORIZED);
    }
    // Five failures in a row lock the user, even with the right password.
    for _ in 0..4 {
        assert_eq!(
            sign_in(app, "mallory", "wrong password!").await.status,
            StatusCode::UNAUTHORIZED
        );
    }
    let locked = sign_in(app, "mallory", "correct horse battery").await;
    assert_eq!(
        locked.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        locked.body
    );
    let user = app.get(&format!("/api/v1/users/{id}")).await;
    assert!(user.body["locked_until"].is_string(), "{:?}", user.body);
    // An administrator setting a new password lifts the lock.
    app.put(
        &format!("/api/v1/users/{id}/password"),
        json!({"password": "a new long password"}),
    )
    .await;
    let session = sign_in(app, "mallory", "a new long password").await;
    assert_eq!(session.status, StatusCode::CREATED);
    let token = session.body["token"].as_str().unwrap().to_owned();
    // Changing the password again ends the sessions signed in with the old one.
    app.put(
        &format!("/api/v1/users/{id}/password"),
        json!({"password": "yet another password"}),
    )
    .await;
    let ended = as_user(app, &token, Method::GET, "/api/v1/me", None).await;
    assert_eq!(ended.status, StatusCode::UNAUTHORIZED);
    // Each user name gets ten attempts a minute, whether the user exists or not.
    let mut last = None;
    for _ in 0..11 {
        last = Some(sign_in(app, "nobody", "whatever it is").await);
    }
    let limited = last.unwrap();
    assert_eq!(
        limited.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        limited.body
    );
    assert!(limited.headers.contains_key("retry-after"));
    let huge = sign_in(app, &"x".repeat(5000), "whatever it is").await;
    assert_eq!(huge.status, StatusCode::UNPROCESSABLE_ENTITY);

    let audit = app.get("/api/v1/audit?action=user.sign_in_failed").await;
    assert_eq!(audit.status, StatusCode::OK);
    assert!(
        audit.body["data"].as_array().unwrap().len() >= 5,
        "{:?}",
        audit.body
    );
    let signed_in = app.get("/api/v1/audit?action=user.sign_in").await;
    assert_eq!(signed_in.body["data"].as_array().unwrap().len(), 2);
}

async fn changes_and_refusals_are_audited(app: &TestApp) {
    let admin = app.get("/api/v1/me").await.body["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    app.define(json!({"name": "thing", "fields": [{"name": "name", "type": "text"}]}))
        .await;
    let (member, member_id) = app.user_with_roles("mallory", &["member"]).await;
    let denied = as_user(app, &member, Method::DELETE, "/api/v1/entities/thing", None).await;
    assert_eq!(denied.status, StatusCode::FORBIDDEN);
    let dry = app
        .put(
            "/api/v1/entities/thing?dry_run=true",
            json!({"name": "thing", "fields": [{"name": "name", "type": "text", "label": "Name"}]}),
        )
        .await;
    assert!(dry.status.is_success(), "{:?}", dry.body);

    let entity = app.get("/api/v1/audit?action=entity").await;
    let entries = entity.body["data"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "the dry run is not a change: {entries:?}");
    assert_eq!(entries[0]["action"], json!("entity.create"));
    assert_eq!(entries[0]["actor"], json!(admin));
    let refusals = app
        .get(&format!(
            "/api/v1/audit?action=access.denied&actor={member_id}"
        ))
        .await;
    let entries = refusals.body["data"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["target"], json!("DELETE /entities/thing"));
    // Pages walk newest first.
    let first = app.get("/api/v1/audit?limit=1").await;
    let cursor = first.body["next_cursor"].as_str().unwrap().to_owned();
    let second = app
        .get(&format!("/api/v1/audit?limit=1&cursor={cursor}"))
        .await;
    assert!(second.body["data"][0]["id"].as_i64() < first.body["data"][0]["id"].as_i64());
    let bad = app.get("/api/v1/audit?since=yesterday").await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

async fn roles_and_teams_are_managed_as_data(app: &TestApp) {
    let invalid = app
        .post(
            "/api/v1/roles",
            json!({"name": "x", "entities": {"account": {"read": "mine"}}}),
        )
        .await;
    assert_eq!(invalid.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(
        invalid.fields().get("/entities/account/read").is_some(),
        "{:?}",
        invalid.body
    );
    let builtin = app
        .put(
            "/api/v1/roles/administrator",
            json!({"name": "administrator"}),
        )
        .await;
    assert_eq!(builtin.status, StatusCode::CONFLICT);
    let created = app
        .post(
            "/api/v1/roles",
            json!({"name": "viewer", "entities": {"*": {"read": "all"}}}),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    // What a GET shows can be PUT back.
    let mut shown = app.get("/api/v1/roles/viewer").await.body;
    shown["label"] = json!("Viewer");
    let updated = app.put("/api/v1/roles/viewer", shown).await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    let (viewer, viewer_id) = app.user_with_roles("victor", &["viewer"]).await;
    app.define(json!({"name": "thing", "fields": [{"name": "name", "type": "text"}]}))
        .await;
    let write = as_user(
        app,
        &viewer,
        Method::POST,
        "/api/v1/records/thing",
        Some(json!({"data": {"name": "n"}})),
    )
    .await;
    assert_eq!(write.status, StatusCode::FORBIDDEN);
    // A role in use cannot be deleted; changing it takes effect at once.
    let in_use = app.delete("/api/v1/roles/viewer").await;
    assert_eq!(in_use.status, StatusCode::CONFLICT);
    let widened = app
        .put(
            "/api/v1/roles/viewer",
            json!({"name": "viewer", "entities": {"*": {"read": "all", "create": true}}}),
        )
        .await;
    assert_eq!(widened.status, StatusCode::OK);
    let write = as_user(
        app,
        &viewer,
        Method::POST,
        "/api/v1/records/thing",
        Some(json!({"data": {"name": "n"}})),
    )
    .await;
    assert_eq!(write.status, StatusCode::CREATED, "{:?}", write.body);
    // Users are created with roles that exist.
    let unknown = app
        .post("/api/v1/users", json!({"name": "wendy", "roles": ["nope"]}))
        .await;
    assert_eq!(unknown.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(unknown.fields().get("/roles/0").is_some());
    let user = app
        .post(
            "/api/v1/users",
            json!({"name": "wendy", "email": "wendy@example.com", "roles": ["viewer", "member"]}),
        )
        .await;
    assert_eq!(user.status, StatusCode::CREATED, "{:?}", user.body);
    assert_eq!(user.body["roles"], json!(["member", "viewer"]));
    // Teams name users that exist.
    let team = app
        .post("/api/v1/teams", json!({"name": "t", "members": ["nobody"]}))
        .await;
    assert_eq!(team.status, StatusCode::UNPROCESSABLE_ENTITY);
    let team = app
        .post(
            "/api/v1/teams",
            json!({"name": "t", "members": [viewer_id], "manager": viewer_id}),
        )
        .await;
    assert_eq!(team.status, StatusCode::CREATED, "{:?}", team.body);
    let shown = app.get(&format!("/api/v1/users/{viewer_id}")).await;
    assert_eq!(shown.body["teams"], json!(["t"]));
    assert_eq!(app.delete("/api/v1/teams/t").await.status, StatusCode::OK);
    assert_eq!(
        app.get("/api/v1/teams/t").await.status,
        StatusCode::NOT_FOUND
    );
}

/// A token over its rate gets 429 with `Retry-After`; another token is unaffected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_over_its_rate_limit_is_told_when_to_retry() {
    let app = spawn_app_with(Backend::Sqlite, |state| {
        state.limiter = rapport::api::guard::Limiter::new(Some(rapport::api::guard::RateLimit {
            per_second: 1,
            burst: 3,
        }));
    })
    .await
    .expect("SQLite is always available");
    let mut statuses = Vec::new();
    for _ in 0..5 {
        statuses.push(app.get("/api/v1/me").await);
    }
    assert!(
        statuses[..3]
            .iter()
            .all(|reply| reply.status == StatusCode::OK)
    );
    let limited = statuses.last().unwrap();
    assert_eq!(limited.status, StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = limited.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let other = app.member("mallory").await;
    let reply = app.send(Method::GET, "/api/v1/me", &other, None, &[]).await;
    assert_eq!(reply.status, StatusCode::OK);
    app.stop().await;
}

/// PostgreSQL's row-level security holds even for a query that forgets the tenant filter: a
/// connection scoped to one tenant sees and writes none of another's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn row_level_security_hides_other_tenants_from_a_query_without_the_filter() {
    let Some(app) = rapport_tests::spawn_app(Backend::Postgres).await else {
        return;
    };
    // (`records` itself has no policy: see `0010_row_security.sql` and docs/SECURITY.md.)
    let thing = json!({"name": "thing", "fields": [{"name": "name", "type": "text"}]});
    app.define(thing.clone()).await;
    app.create("thing", json!({"name": "acme's"})).await;
    let other = app.other_tenant("globex").await;
    let defined = app
        .send(Method::POST, "/api/v1/entities", &other, Some(&thing), &[])
        .await;
    assert_eq!(defined.status, StatusCode::CREATED);
    for name in ["one", "two"] {
        let body = json!({"data": {"name": name}});
        let created = app
            .send(
                Method::POST,
                "/api/v1/records/thing",
                &other,
                Some(&body),
                &[],
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED);
    }
    let acme = app.store.tenant_id("acme").await.unwrap().unwrap();
    let globex = app.store.tenant_id("globex").await.unwrap().unwrap();

    let mut tx = app.store.begin().await.unwrap();
    let mut scoped = tx.scoped(&acme);
    let rapport::store::Exec::Postgres(c) = scoped.entered().await.unwrap() else {
        panic!("a PostgreSQL store");
    };
    for (table, expected) in [
        ("record_history", 1),
        ("roles", 2),
        ("tenants", 1),
        ("users", 1),
        ("entities", 1),
    ] {
        let seen: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&mut **c)
            .await
            .unwrap();
        assert_eq!(seen, expected, "{table} without a tenant filter");
    }
    let theirs: i64 =
        sqlx::query_scalar("SELECT count(*) FROM record_history WHERE tenant_id = $1")
            .bind(globex.as_str())
            .fetch_one(&mut **c)
            .await
            .unwrap();
    assert_eq!(
        theirs, 0,
        "even asking for the other tenant by name finds nothing"
    );
    let changed = sqlx::query("UPDATE entities SET version = version + 1")
        .execute(&mut **c)
        .await
        .unwrap()
        .rows_affected();
    assert_eq!(
        changed, 1,
        "an update without the filter touches this tenant only"
    );
    let planted = sqlx::query(
        "INSERT INTO audit_log (tenant_id, at, action, detail) VALUES ($1, now(), 'planted', '{}')",
    )
    .bind(globex.as_str())
    .execute(&mut **c)
    .await;
    assert!(planted.is_err(), "a row for another tenant is refused");
    drop(tx);

    // Work that spans tenants (the workflow engine's queues) is not scoped, and sees both.
    let mut conn = app.store.reader().await.unwrap();
    let rapport::store::Exec::Postgres(c) = conn.exec() else {
        panic!("a PostgreSQL store");
    };
    let all: i64 = sqlx::query_scalar("SELECT count(*) FROM record_history")
        .fetch_one(&mut *c)
        .await
        .unwrap();
    assert_eq!(all, 3);
    drop(conn);
    app.stop().await;
}

/// Sends as `token` and returns the reply; the body is always JSON or empty.
async fn call(
    app: &TestApp,
    token: &str,
    method: &Method,
    path: &str,
    body: Option<&Value>,
) -> rapport_tests::Reply {
    app.send(method.clone(), path, token, body, &[]).await
}

fn created_id(reply: &rapport_tests::Reply) -> String {
    assert!(reply.status.is_success(), "{:?}", reply.body);
    reply.body["id"].as_str().expect("an id").to_owned()
}

/// One tenant's objects the routes name.
struct Objects {
    record: String,
    run: String,
    token: String,
    user: String,
    entity: &'static str,
    workflow: &'static str,
    webhook: &'static str,
    role: &'static str,
    team: &'static str,
}

async fn tenant_objects(
    app: &TestApp,
    token: &str,
    names: [&'static str; 5],
    mark: &str,
) -> Objects {
    let [entity, workflow, webhook, role, team] = names;
    let post = |path: &str, body: Value| {
        let path = path.to_owned();
        async move { call(app, token, &Method::POST, &path, Some(&body)).await }
    };
    for name in ["thing", entity] {
        let defined = post(
            "/api/v1/entities",
            json!({"name": name, "fields": [
                {"name": "name", "type": "text", "required": true},
                {"name": "secret", "type": "text"}
            ]}),
        )
        .await;
        assert!(defined.status.is_success() || defined.status == StatusCode::CONFLICT);
    }
    let record = created_id(
        &post(
            "/api/v1/records/thing",
            json!({"data": {"name": mark, "secret": format!("{mark}-HIDDEN")}}),
        )
        .await,
    );
    post(
        &format!("/api/v1/records/{entity}"),
        json!({"data": {"name": mark}}),
    )
    .await;
    let workflow_body = json!({"name": workflow, "trigger": {"type": "manual"},
        "steps": [{"id": "a", "type": "wait", "for": "1h"}]});
    assert!(
        post("/api/v1/workflows", workflow_body)
            .await
            .status
            .is_success()
    );
    let run = created_id(&post(&format!("/api/v1/workflows/{workflow}/runs"), json!({})).await);
    assert!(
        post(
            "/api/v1/webhooks",
            json!({"name": webhook, "url": "https://example.com/hook"})
        )
        .await
        .status
        .is_success()
    );
    assert!(
        post(
            "/api/v1/roles",
            json!({"name": role, "entities": {"*": {"read": "all"},
        "thing": {"read": "all", "fields": {"secret": "none"}}}})
        )
        .await
        .status
        .is_success()
    );
    let me = call(app, token, &Method::GET, "/api/v1/me", None).await;
    let user = me.body["user"]["id"].as_str().unwrap().to_owned();
    assert!(
        post("/api/v1/teams", json!({"name": team, "members": [user]}))
            .await
            .status
            .is_success()
    );
    let token_id = created_id(&post("/api/v1/tokens", json!({"name": "spare"})).await);
    Objects {
        record,
        run,
        token: token_id,
        user,
        entity,
        workflow,
        webhook,
        role,
        team,
    }
}

/// A concrete path for a route template, naming `objects`.
fn concrete(template: &str, objects: &Objects) -> String {
    let segments: Vec<&str> = template.split('/').collect();
    let mut out = Vec::new();
    for (index, segment) in segments.iter().enumerate() {
        let owner = segments[..index]
            .iter()
            .rev()
            .find(|s| !s.starts_with('{'))
            .copied()
            .unwrap_or("");
        let value = match (*segment, owner) {
            ("{entity}", _) | ("{source}", _) => "thing".to_owned(),
            ("{field}", _) => "name".to_owned(),
            ("{name}", "entities") => objects.entity.to_owned(),
            ("{name}", "workflows") => objects.workflow.to_owned(),
            ("{name}", "webhooks") => objects.webhook.to_owned(),
            ("{name}", "roles") => objects.role.to_owned(),
            ("{name}", "teams") => objects.team.to_owned(),
            ("{name}", _) => "no_such_view".to_owned(),
            ("{id}", "runs") => objects.run.clone(),
            ("{id}", "tokens") => objects.token.clone(),
            ("{id}", "users") => objects.user.clone(),
            ("{id}", "plugins") => "minimal".to_owned(),
            ("{id}", "packs") => "exhibition".to_owned(),
            ("{id}", _) if template.starts_with("/api/v1/records") => objects.record.clone(),
            ("{id}", _) => "0192f3a4-0000-7000-8000-000000000000".to_owned(),
            (other, _) => other.to_owned(),
        };
        out.push(value);
    }
    let path = out.join("/");
    // Pack operations only show what they would do.
    if template.starts_with("/api/v1/packs/") {
        format!("{path}?dry_run=true")
    } else {
        path
    }
}

/// A body a route accepts, so that what the test sees is the answer to who asks, not to a
/// malformed request.
fn body_for(method: &Method, template: &str, objects: &Objects, owner: &str) -> Option<Value> {
    if *method == Method::GET || *method == Method::DELETE {
        return None;
    }
    let fields = json!([{"name": "name", "type": "text", "required": true}, {"name": "secret", "type": "text"}]);
    let record_path = template
        .strip_prefix("/api/v1/records/")
        .unwrap_or_default();
    let parts: Vec<&str> = record_path.split('/').collect();
    Some(match template {
        _ if matches!(parts.as_slice(), [_] | [_, "{id}"]) && !record_path.is_empty() => {
            json!({"data": {"name": "changed"}})
        }
        "/api/v1/records/{entity}/{id}/assign" => json!({"owner": owner}),
        "/api/v1/entities/{name}" => json!({"name": objects.entity, "fields": fields}),
        "/api/v1/workflows/{name}" => {
            json!({"name": objects.workflow, "trigger": {"type": "manual"},
            "steps": [{"id": "a", "type": "wait", "for": "1h"}]})
        }
        "/api/v1/webhooks/{name}" => {
            json!({"name": objects.webhook, "url": "https://example.com/hook"})
        }
        "/api/v1/users/{id}/password" => json!({"password": "a long enough password"}),
        _ => json!({}),
    })
}

/// Every route of the OpenAPI description, as three roles of one tenant and against another
/// tenant's objects: administrator routes refuse the others (403), another tenant's objects are
/// not found (404), hidden fields and the other tenant's data never appear, nothing fails.
async fn every_route_answers_each_role_as_its_permissions_say(app: &TestApp) {
    let globex = app.other_tenant("globex").await;
    let theirs = tenant_objects(
        app,
        &globex,
        ["gadget", "gw", "gh", "grole", "gteam"],
        "GLOBEX",
    )
    .await;
    let ours = tenant_objects(app, &app.token, ["widget", "w", "h", "reader", "t"], "ACME").await;
    let (member, _) = app.user_with_roles("mallory", &["member"]).await;
    let (reader, _) = app.user_with_roles("rita", &["reader"]).await;
    let document = app.get("/api/v1/openapi.json").await.body;
    let mut operations: Vec<(Method, String, bool)> = Vec::new();
    for (template, item) in document["paths"].as_object().unwrap() {
        // Signing in and out are about the caller's own session (tested above).
        if template == "/healthz" || template.starts_with("/api/v1/sessions") {
            continue;
        }
        for method in ["get", "post", "put", "patch", "delete"] {
            if let Some(operation) = item.get(method) {
                let admin = operation.get("x-rapport-admin") == Some(&Value::Bool(true));
                operations.push((
                    method.to_uppercase().parse().unwrap(),
                    template.clone(),
                    admin,
                ));
            }
        }
    }
    assert!(operations.len() > 60, "{} operations", operations.len());
    // Reads before writes, deletes last: the objects stay until the end.
    let order = |method: &Method| match *method {
        Method::GET => 0,
        Method::DELETE => 2,
        _ => 1,
    };
    operations.sort_by_key(|(method, template, _)| (order(method), template.clone()));
    let others = [
        theirs.record.as_str(),
        theirs.user.as_str(),
        theirs.run.as_str(),
        theirs.token.as_str(),
        "GLOBEX",
    ];
    for (role, token) in [
        ("reader", &reader),
        ("member", &member),
        ("administrator", &app.token),
    ] {
        for (method, template, admin_only) in &operations {
            // Our own objects.
            let path = concrete(template, &ours);
            let sent = body_for(method, template, &ours, &ours.user);
            let reply = call(app, token, method, &path, sent.as_ref()).await;
            let what = format!("{role} {method} {path}");
            assert!(reply.status.as_u16() < 500, "{what}: {:?}", reply.body);
            // The audit trail echoes the paths this test asked for, ids of the other tenant's
            // included: its markers are checked, not its ids.
            let text = reply.body.to_string();
            let checked: &[&str] = if template == "/api/v1/audit" {
                &["GLOBEX"]
            } else {
                &others
            };
            for other in checked {
                assert!(
                    !text.contains(other),
                    "{what} shows another tenant's `{other}`: {text}"
                );
            }
            if role == "reader" {
                assert!(
                    !text.contains("ACME-HIDDEN"),
                    "{what} shows a hidden field: {text}"
                );
            }
            // `{id}` of a user route names the administrator: another user for the others.
            let someone_else = template.starts_with("/api/v1/users/") && role != "administrator";
            if (*admin_only || someone_else) && role != "administrator" {
                assert_eq!(
                    reply.status,
                    StatusCode::FORBIDDEN,
                    "{what}: {:?}",
                    reply.body
                );
            } else if role == "administrator" || role == "member" && !template.ends_with("/assign")
            {
                // A member may do anything but administer and reassign records.
                assert_ne!(
                    reply.status,
                    StatusCode::FORBIDDEN,
                    "{what}: {:?}",
                    reply.body
                );
            } else if reply.status == StatusCode::FORBIDDEN {
                // A reader is refused writes of records, and nothing else.
                assert!(
                    template.starts_with("/api/v1/records") && *method != Method::GET,
                    "{what}: {:?}",
                    reply.body
                );
            }
            // The other tenant's objects, named from here.
            let foreign = concrete(template, &theirs);
            if foreign == path
                || template.starts_with("/api/v1/roles/")
                || template.starts_with("/api/v1/teams/") && *method == Method::PUT
            {
                continue;
            }
            let sent = body_for(method, template, &theirs, &ours.user);
            let reply = call(app, token, method, &foreign, sent.as_ref()).await;
            let what = format!("{role} {method} {foreign} (another tenant's)");
            let text = reply.body.to_string();
            for other in others {
                assert!(
                    !text.contains(other)
                        || reply.status == StatusCode::NOT_FOUND && !text.contains("GLOBEX-"),
                    "{what}: {text}"
                );
            }
            if role == "administrator" {
                assert_eq!(
                    reply.status,
                    StatusCode::NOT_FOUND,
                    "{what}: {:?}",
                    reply.body
                );
            } else {
                assert!(
                    matches!(reply.status, StatusCode::NOT_FOUND | StatusCode::FORBIDDEN),
                    "{what}: {:?}",
                    reply.body
                );
            }
        }
    }
    // The other tenant lost nothing.
    let record = call(
        app,
        &globex,
        &Method::GET,
        &format!("/api/v1/records/thing/{}", theirs.record),
        None,
    )
    .await;
    assert_eq!(record.status, StatusCode::OK);
    for path in [
        "/api/v1/entities/gadget",
        "/api/v1/workflows/gw",
        "/api/v1/webhooks/gh",
        "/api/v1/roles/grole",
        "/api/v1/teams/gteam",
    ] {
        assert_eq!(
            call(app, &globex, &Method::GET, path, None).await.status,
            StatusCode::OK,
            "{path}"
        );
    }
    let tokens = call(app, &globex, &Method::GET, "/api/v1/tokens", None).await;
    assert!(
        tokens.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["revoked_at"].is_null())
    );
}

/// An `agent` role: `entity` in full but its `secret` field hidden.
async fn agent_without_secrets(app: &TestApp, entity: &str) -> (String, String) {
    let role = app
        .post(
            "/api/v1/roles",
            json!({"name": "agent", "entities": {
                entity: {"create": true, "read": "all", "update": "all",
                         "fields": {"secret": "none"}}}}),
        )
        .await;
    assert_eq!(role.status, StatusCode::CREATED, "{:?}", role.body);
    app.user_with_roles("agnes", &["agent"]).await
}

/// A hook runs as the user who made the write: the record it is given, and what it reads back
/// through the host, lack the fields hidden from that user; the hidden values survive the
/// user's update.
async fn plugins_see_what_their_user_may_see(app: &TestApp) {
    app.define(json!({"name": "target", "fields": [
        {"name": "name", "type": "text"},
        {"name": "n", "type": "integer"},
        {"name": "secret", "type": "text"},
        {"name": "seen", "type": "long_text"}
    ]}))
    .await;
    app.install_plugin("hostile", Some(json!({"attack": "echo"})))
        .await;
    let (agent, _) = agent_without_secrets(app, "target").await;
    let id = app
        .create("target", json!({"name": "a", "secret": "S3CRET"}))
        .await;
    let admins = app.get(&format!("/api/v1/records/target/{id}")).await;
    let seen = admins.body["data"]["seen"].as_str().unwrap().to_owned();
    assert!(seen.starts_with("given name,secret"), "{seen}");

    let updated = as_user(
        app,
        &agent,
        Method::PATCH,
        &format!("/api/v1/records/target/{id}"),
        Some(json!({"data": {"name": "b"}})),
    )
    .await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    let seen = updated.body["data"]["seen"].as_str().unwrap().to_owned();
    assert!(
        !seen.contains("secret"),
        "the hook saw a hidden field: {seen}"
    );
    assert!(
        seen.contains("given name") && seen.contains("read name"),
        "{seen}"
    );
    let after = app.get(&format!("/api/v1/records/target/{id}")).await;
    assert_eq!(after.body["data"]["secret"], json!("S3CRET"));
    assert_eq!(after.body["data"]["name"], json!("b"));
}

/// A workflow acts as the triggering user (`run_as: trigger`, the default) or as its owner:
/// what it reads of the record follows that user's field rules.
async fn workflows_act_as_the_trigger_or_the_owner(app: &TestApp) {
    app.define(json!({"name": "thing", "fields": [
        {"name": "name", "type": "text"},
        {"name": "secret", "type": "text"}
    ]}))
    .await;
    let (agent, _) = agent_without_secrets(app, "thing").await;
    let admin = app.get("/api/v1/me").await.body["user"]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    for (name, run_as) in [("as_trigger", "trigger"), ("as_owner", "owner")] {
        let created = app
            .post(
                "/api/v1/workflows",
                json!({"name": name, "run_as": run_as,
                       "trigger": {"type": "record", "entity": "thing", "events": ["updated"]},
                       "steps": [{"id": "tell", "type": "notify", "user": admin,
                                  "message": format!("{name}: [{{{{record.secret}}}}]")}]}),
            )
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    }
    let id = app
        .create("thing", json!({"name": "a", "secret": "S3CRET"}))
        .await;
    let updated = as_user(
        app,
        &agent,
        Method::PATCH,
        &format!("/api/v1/records/thing/{id}"),
        Some(json!({"data": {"name": "b"}})),
    )
    .await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    let mut messages = Vec::new();
    for _ in 0..200 {
        let notes = app.get("/api/v1/notifications").await;
        messages = notes.body["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["message"].as_str().unwrap_or_default().to_owned())
            .collect();
        if messages.len() >= 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    messages.sort();
    assert_eq!(
        messages,
        vec!["as_owner: [S3CRET]".to_owned(), "as_trigger: []".to_owned()]
    );
}

/// The `core` pack's roles: a sales rep reads accounts but not changes their credit terms; a
/// service agent does not see them at all, nor opportunities.
async fn the_core_packs_roles_work_as_the_documents_say(app: &TestApp) {
    let installed = app
        .post("/api/v1/packs/core/install?sample=true", Value::Null)
        .await;
    assert_eq!(
        installed.status,
        StatusCode::CREATED,
        "{:?}",
        installed.body
    );
    let roles = app.get("/api/v1/roles").await;
    let names: Vec<&str> = roles.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    for role in [
        "sales_rep",
        "sales_manager",
        "sales_assistant",
        "service_agent",
        "service_supervisor",
        "marketing",
        "administrator",
    ] {
        assert!(names.contains(&role), "{role} in {names:?}");
    }
    let (rep, _) = app.user_with_roles("rita", &["sales_rep"]).await;
    let (agent, _) = app.user_with_roles("sam", &["service_agent"]).await;
    let accounts = as_user(
        app,
        &rep,
        Method::GET,
        "/api/v1/records/account?limit=1",
        None,
    )
    .await;
    assert_eq!(accounts.status, StatusCode::OK);
    let account = accounts.body["data"][0]["id"].as_str().unwrap().to_owned();
    assert!(accounts.body["data"][0]["data"].get("name").is_some());
    // Someone else's account: not the rep's to change.
    let renamed = as_user(
        app,
        &rep,
        Method::PATCH,
        &format!("/api/v1/records/account/{account}"),
        Some(json!({"data": {"name": "Renamed"}})),
    )
    .await;
    assert_eq!(renamed.status, StatusCode::FORBIDDEN, "{:?}", renamed.body);
    // Their own: yes, but not its credit terms.
    let own = as_user(
        app,
        &rep,
        Method::POST,
        "/api/v1/records/account",
        Some(json!({"data": {"name": "Rita's new customer"}})),
    )
    .await;
    assert_eq!(own.status, StatusCode::CREATED, "{:?}", own.body);
    let own = own.body["id"].as_str().unwrap().to_owned();
    let terms = as_user(
        app,
        &rep,
        Method::PATCH,
        &format!("/api/v1/records/account/{own}"),
        Some(json!({"data": {"payment_terms": "cash"}})),
    )
    .await;
    assert_eq!(terms.status, StatusCode::FORBIDDEN, "{:?}", terms.body);
    assert!(
        terms.body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("payment_terms")
    );
    let seen = as_user(
        app,
        &agent,
        Method::GET,
        &format!("/api/v1/records/account/{account}"),
        None,
    )
    .await;
    assert_eq!(seen.status, StatusCode::OK);
    for hidden in [
        "credit_status",
        "payment_terms",
        "discount_pct",
        "annual_revenue",
    ] {
        assert!(
            seen.body["data"].get(hidden).is_none(),
            "{hidden}: {:?}",
            seen.body
        );
    }
    let opportunities = as_user(
        app,
        &agent,
        Method::GET,
        "/api/v1/records/opportunity",
        None,
    )
    .await;
    assert_eq!(opportunities.status, StatusCode::FORBIDDEN);
    // A tenant may adjust a pack's role; it stays the pack's.
    let mut shipped = app.get("/api/v1/roles/sales_rep").await.body;
    shipped["label"] = json!("Account executive");
    let adjusted = app.put("/api/v1/roles/sales_rep", shipped).await;
    assert_eq!(adjusted.status, StatusCode::OK, "{:?}", adjusted.body);
    assert_eq!(adjusted.body["pack"], json!("core"));
    // Removing the pack keeps roles users hold, and drops the others.
    let removed = app.delete("/api/v1/packs/core").await;
    assert_eq!(removed.status, StatusCode::OK, "{:?}", removed.body);
    let roles = app.get("/api/v1/roles").await.body.to_string();
    assert!(roles.contains("sales_rep") && roles.contains("service_agent"));
    assert!(!roles.contains("sales_manager"), "{roles}");
}

/// Listing related records by a reference field the caller may not see would tell its
/// values: it is refused. An administrator's purge is in the audit trail.
async fn a_hidden_reference_lists_nothing_and_purges_are_audited(app: &TestApp) {
    app.define(json!({"name": "account", "fields": [{"name": "name", "type": "text"}]}))
        .await;
    app.define(json!({"name": "deal", "fields": [
        {"name": "name", "type": "text"},
        {"name": "partner", "type": "reference", "entity": "account"}
    ]}))
    .await;
    let role = app
        .post(
            "/api/v1/roles",
            json!({"name": "seller", "entities": {
                "account": {"read": "all"},
                "deal": {"read": "all", "fields": {"partner": "none"}}}}),
        )
        .await;
    assert_eq!(role.status, StatusCode::CREATED, "{:?}", role.body);
    let (seller, _) = app.user_with_roles("sid", &["seller"]).await;
    let partner = app.create("account", json!({"name": "Partner"})).await;
    app.create("deal", json!({"name": "Secret deal", "partner": partner}))
        .await;
    let listed = as_user(
        app,
        &seller,
        Method::GET,
        &format!("/api/v1/records/account/{partner}/related/deal"),
        None,
    )
    .await;
    assert_eq!(listed.status, StatusCode::BAD_REQUEST, "{:?}", listed.body);
    assert!(!listed.body.to_string().contains("Secret deal"));
    let shown = app
        .get(&format!("/api/v1/records/account/{partner}/related/deal"))
        .await;
    assert_eq!(shown.body["data"].as_array().unwrap().len(), 1);

    let purged = app
        .delete(&format!("/api/v1/records/account/{partner}?purge=true"))
        .await;
    assert!(purged.status.is_success(), "{:?}", purged.body);
    let audit = app.get("/api/v1/audit?action=record.purge").await;
    assert_eq!(
        audit.body["data"][0]["target"],
        json!(format!("account/{partner}"))
    );
}
