//! Workflow runs survive the death of their server: `rapport serve` processes are killed with
//! SIGKILL while runs are in flight, and every run finishes with each of its steps done exactly
//! once, after a restart (SQLite and PostgreSQL) or on a second server sharing the database
//! (PostgreSQL).

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

use rapport_tests::{Backend, TestDatabase, rapport_binary};
use serde_json::{Value, json};

/// One `rapport serve` process.
struct Host {
    child: tokio::process::Child,
    base: String,
}

impl Host {
    async fn start(url: &str) -> Host {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new(rapport_binary())
            .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--workflow-lease", "1"])
            .env("RAPPORT_DATABASE_URL", url)
            .env("RAPPORT_LOG", "warn")
            .stdout(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if reqwest::get(format!("{base}/healthz")).await.is_ok() {
                return Host { child, base };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the server did not start");
    }

    async fn kill9(mut self) {
        self.child.start_kill().unwrap();
        self.child.wait().await.unwrap();
    }
}

struct Client {
    http: reqwest::Client,
    token: String,
}

impl Client {
    async fn send(
        &self,
        host: &Host,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", host.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("request sent");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Every item of a paged list (`data`, `next_cursor`), following the cursors.
    async fn all_pages(&self, host: &Host, path: &str) -> Vec<Value> {
        let mut items = Vec::new();
        let mut page = path.to_owned();
        loop {
            let (status, body) = self.send(host, reqwest::Method::GET, &page, None).await;
            assert_eq!(status, 200, "{page}: {body:?}");
            items.extend(body["data"].as_array().unwrap().iter().cloned());
            match body["next_cursor"].as_str() {
                Some(next) => page = format!("{path}&cursor={next}"),
                None => return items,
            }
        }
    }
}

/// The ids of every complaint stored.
async fn stored_complaints(client: &Client, host: &Host) -> Vec<String> {
    client
        .all_pages(host, "/api/v1/records/complaint?limit=500")
        .await
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

/// What happens after the first server is killed.
#[derive(Clone, Copy, PartialEq)]
enum Then {
    /// It is started again.
    Restart,
    /// A second server, running since the start, takes its runs over.
    OtherHost,
}

async fn runs_survive_kill_9_with_each_step_done_once(backend: Backend, then: Then) {
    let Some(database) = TestDatabase::create(backend).await else {
        return;
    };
    let url = database.url.clone();
    let output = Command::new(rapport_binary())
        .args(["tenant", "create", "acme", "--json"])
        .env("RAPPORT_DATABASE_URL", &url)
        .env("RAPPORT_LOG", "warn")
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token: Value = serde_json::from_slice(&output.stdout).unwrap();
    let client = Client {
        http: reqwest::Client::new(),
        token: token["token"].as_str().unwrap().to_owned(),
    };
    let post = reqwest::Method::POST;
    let host = Host::start(&url).await;
    let other = match then {
        Then::OtherHost => Some(Host::start(&url).await),
        Then::Restart => None,
    };
    for definition in [
        json!({"name": "complaint", "fields": [{"name": "title", "type": "text"}]}),
        json!({"name": "task", "fields": [
            {"name": "subject", "type": "text"},
            {"name": "complaint", "type": "reference", "entity": "complaint", "indexed": true}
        ]}),
    ] {
        let (status, body) = client
            .send(&host, post.clone(), "/api/v1/entities", Some(definition))
            .await;
        assert_eq!(status, 201, "{body:?}");
    }
    let task = |subject: &str| {
        json!({"id": subject, "type": "create_record", "entity": "task",
               "values": {"subject": subject, "complaint": "{{record._id}}"}})
    };
    let workflow = json!({
        "name": "follow_up",
        "trigger": {"type": "record", "entity": "complaint", "events": ["created"]},
        "steps": [task("a"), task("b"), {"id": "pause", "type": "wait", "for": "1s"}, task("c"), task("d")]
    });
    let (status, body) = client
        .send(&host, post.clone(), "/api/v1/workflows", Some(workflow))
        .await;
    assert_eq!(status, 201, "{body:?}");

    // Clients keep creating complaints while the server is killed: runs are then at every
    // point of their steps, some mid-step.
    let writer = {
        let (http, token, base) = (client.http.clone(), client.token.clone(), host.base.clone());
        tokio::spawn(async move {
            let mut acknowledged = 0;
            for i in 0..100_000 {
                let sent = http
                    .post(format!("{base}/api/v1/records/complaint"))
                    .bearer_auth(&token)
                    .json(&json!({"data": {"title": format!("complaint {i}")}}))
                    .send()
                    .await;
                match sent {
                    Ok(response) if response.status() == 201 => acknowledged += 1,
                    _ => break,
                }
            }
            acknowledged
        })
    };
    // Let some runs reach their wait, then kill the server in the middle of the others.
    let mut waiting = false;
    for _ in 0..200 {
        let (_, body) = client
            .send(
                &host,
                reqwest::Method::GET,
                "/api/v1/workflows/follow_up/runs?status=waiting&limit=1",
                None,
            )
            .await;
        if body["data"].as_array().is_some_and(|runs| !runs.is_empty()) {
            waiting = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(waiting, "no run reached its wait step");
    tokio::time::sleep(Duration::from_millis(100)).await;
    host.kill9().await;
    let acknowledged = writer.await.unwrap();
    assert!(acknowledged > 0);

    let host = match other {
        Some(other) => other,
        None => Host::start(&url).await,
    };
    // Every complaint in the database (acknowledged or not) has its run, and each run ends.
    // Complaints are read again while waiting: a COMMIT the killed server had sent may still
    // land in PostgreSQL after the kill (its complaint and its run together).
    let mut complaints = stored_complaints(&client, &host).await;
    assert!(
        complaints.len() >= acknowledged,
        "{} stored, {acknowledged} acknowledged",
        complaints.len()
    );
    eprintln!(
        "{} complaints stored ({acknowledged} acknowledged) when the server was killed",
        complaints.len()
    );
    let mut runs: Vec<Value> = Vec::new();
    for _ in 0..600 {
        runs = client
            .all_pages(&host, "/api/v1/workflows/follow_up/runs?limit=1000")
            .await;
        complaints = stored_complaints(&client, &host).await;
        if runs.len() == complaints.len() && runs.iter().all(|run| run["status"] == "succeeded") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let unfinished: Vec<&Value> = runs
        .iter()
        .filter(|run| run["status"] != "succeeded")
        .collect();
    assert!(
        unfinished.is_empty(),
        "runs that did not finish: {unfinished:#?}"
    );
    assert_eq!(runs.len(), complaints.len(), "one run per stored complaint");

    // Each step's record exists exactly once per complaint: nothing done twice, nothing lost.
    let mut tasks: HashMap<(String, String), usize> = HashMap::new();
    for task in client
        .all_pages(&host, "/api/v1/records/task?limit=500")
        .await
    {
        let key = (
            task["data"]["complaint"].as_str().unwrap().to_owned(),
            task["data"]["subject"].as_str().unwrap().to_owned(),
        );
        *tasks.entry(key).or_default() += 1;
    }
    for complaint in &complaints {
        for subject in ["a", "b", "c", "d"] {
            let count = tasks
                .get(&(complaint.clone(), subject.to_owned()))
                .copied()
                .unwrap_or(0);
            assert_eq!(
                count, 1,
                "complaint {complaint} has {count} task(s) `{subject}`"
            );
        }
    }
    assert_eq!(tasks.values().sum::<usize>(), 4 * complaints.len());
    // A resumed run shows each step once.
    let id = runs[0]["id"].as_str().unwrap();
    let (_, run) = client
        .send(
            &host,
            reqwest::Method::GET,
            &format!("/api/v1/workflows/follow_up/runs/{id}"),
            None,
        )
        .await;
    let steps: Vec<&str> = run["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["a", "b", "pause", "c", "d"], "{run:#?}");
    host.kill9().await;
    database.remove().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_survives_kill_9_on_sqlite() {
    runs_survive_kill_9_with_each_step_done_once(Backend::Sqlite, Then::Restart).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_run_survives_kill_9_on_postgres() {
    runs_survive_kill_9_with_each_step_done_once(Backend::Postgres, Then::Restart).await;
}

/// Two servers on one PostgreSQL share the runs (`FOR UPDATE SKIP LOCKED`, fenced leases); when
/// one is killed mid-run the other finishes its runs, and no step runs twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_share_the_runs_and_one_finishes_what_the_killed_one_started() {
    runs_survive_kill_9_with_each_step_done_once(Backend::Postgres, Then::OtherHost).await;
}

/// Two servers on one PostgreSQL look at the same schedule every second: each of its times
/// fires once (one run per record, never two), and when one server is killed the other goes on
/// firing it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_fire_each_time_of_a_schedule_once() {
    let Some(database) = TestDatabase::create(Backend::Postgres).await else {
        return;
    };
    let url = database.url.clone();
    let output = Command::new(rapport_binary())
        .args(["tenant", "create", "acme", "--json"])
        .env("RAPPORT_DATABASE_URL", &url)
        .env("RAPPORT_LOG", "warn")
        .output()
        .unwrap();
    assert!(output.status.success());
    let token: Value = serde_json::from_slice(&output.stdout).unwrap();
    let client = Client {
        http: reqwest::Client::new(),
        token: token["token"].as_str().unwrap().to_owned(),
    };
    let post = reqwest::Method::POST;
    let first = Host::start(&url).await;
    let second = Host::start(&url).await;
    let (status, body) = client
        .send(
            &first,
            post.clone(),
            "/api/v1/entities",
            Some(json!({"name": "account", "fields": [{"name": "name", "type": "text"}]})),
        )
        .await;
    assert_eq!(status, 201, "{body:?}");
    let mut accounts = Vec::new();
    for name in ["a", "b", "c", "d", "e"] {
        let (status, body) = client
            .send(
                &first,
                post.clone(),
                "/api/v1/records/account",
                Some(json!({"data": {"name": name}})),
            )
            .await;
        assert_eq!(status, 201, "{body:?}");
        accounts.push(body["id"].as_str().unwrap().to_owned());
    }
    let (status, body) = client
        .send(
            &second,
            post.clone(),
            "/api/v1/workflows",
            Some(json!({
                "name": "review",
                "trigger": {"type": "schedule", "cron": "*/2 * * * * *", "entity": "account"},
                "steps": [{"id": "tell", "type": "notify", "user": "{{user}}", "message": "review {{record.name}}"}]
            })),
        )
        .await;
    assert_eq!(status, 201, "{body:?}");
    tokio::time::sleep(Duration::from_secs(5)).await;
    first.kill9().await;
    let killed = time::OffsetDateTime::now_utc();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let (status, body) = client
        .send(
            &second,
            post.clone(),
            "/api/v1/workflows/review/disable",
            None,
        )
        .await;
    assert_eq!(status, 200, "{body:?}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let runs = client
        .all_pages(&second, "/api/v1/workflows/review/runs?limit=100")
        .await;
    // Each time once per account: (account, time) pairs are unique, and every time covers
    // every account.
    let mut per_time: HashMap<String, Vec<String>> = HashMap::new();
    let mut after_kill = 0;
    for run in &runs {
        let time = run["trigger"]["scheduled_for"].as_str().unwrap().to_owned();
        per_time
            .entry(time)
            .or_default()
            .push(run["record_id"].as_str().unwrap().to_owned());
        let created = time::OffsetDateTime::parse(
            run["created_at"].as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap();
        if created > killed {
            after_kill += 1;
        }
    }
    for (time, records) in &mut per_time {
        records.sort();
        let mut expected = accounts.clone();
        expected.sort();
        assert_eq!(
            records, &expected,
            "the firing for {time}: once per account"
        );
    }
    assert!(per_time.len() >= 3, "{per_time:?}");
    assert!(
        after_kill >= accounts.len(),
        "the second server went on firing after the first was killed: {after_kill} runs"
    );
    second.kill9().await;
    database.remove().await;
}
