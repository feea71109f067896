//! Filing through a GitHub fake (wiremock) that checks what GitHub checks and answers as GitHub
//! does, faults included.

use intake::domain::ClosedSet;
use intake::store::queue::DeliveryState;
use std::time::Duration;

use chrono::Utc;
use secrecy::SecretString;
use serde_json::{json, Value};
use wiremock::matchers::{header, header_exists, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

use crate::helpers::{spawn_app_with, valid_ticket, Backend, TestApp};
use crate::on_both_backends;

const TOKEN: &str = "ghp_test_token_0123456789";

/// The 201 body GitHub documents for a created issue, with our number.
fn created(number: i64, repo: &str) -> Value {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/github/issue-created-response.json"
    );
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("fixture")).unwrap();
    v["number"] = json!(number);
    v["html_url"] = json!(format!("https://github.com/{repo}/issues/{number}"));
    v.as_object_mut().unwrap().remove("pull_request");
    v
}

/// What GitHub checks on every request.
fn github_headers(m: wiremock::MockBuilder) -> wiremock::MockBuilder {
    m.and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header_exists("user-agent"))
        .and(header("accept", "application/vnd.github+json"))
        .and(header("x-github-api-version", "2022-11-28"))
}

/// The JSON shape `POST /repos/{owner}/{repo}/issues` accepts.
fn issue_shape(req: &Request) -> bool {
    let Ok(v) = serde_json::from_slice::<Value>(&req.body) else {
        return false;
    };
    let title_ok = v["title"]
        .as_str()
        .is_some_and(|t| !t.is_empty() && t.chars().count() <= 256);
    let body_ok = v["body"].as_str().is_some_and(|b| b.chars().count() <= 65_536);
    let labels_ok = v["labels"].as_array().is_some_and(|l| l.iter().all(Value::is_string));
    let only_known = v
        .as_object()
        .unwrap()
        .keys()
        .all(|k| ["title", "body", "labels", "assignees"].contains(&k.as_str()));
    title_ok && body_ok && labels_ok && only_known
}

/// `verb /repos/{repo}/issues`, with GitHub's checks.
fn issues(verb: &str, repo: &str) -> wiremock::MockBuilder {
    github_headers(Mock::given(method(verb)).and(path(format!("/repos/{repo}/issues"))))
}

/// Every create in `repo` succeeds as issue `number`.
async fn files_as(fake: &MockServer, repo: &str, number: i64) {
    issues("POST", repo)
        .respond_with(ResponseTemplate::new(201).set_body_json(created(number, repo)))
        .mount(fake)
        .await;
}

/// The marker search in `repo` finds nothing (`expect`: how often it must be asked).
async fn finds_no_marker(fake: &MockServer, repo: &str, expect: Option<u64>) {
    let mock = issues("GET", repo).respond_with(ResponseTemplate::new(200).set_body_json(json!([])));
    match expect {
        Some(n) => mock.expect(n).mount(fake).await,
        None => mock.mount(fake).await,
    }
}

/// The token belongs to `octocat`, the author of the documented create answer.
async fn repo(fake: &MockServer, name: &str, private: bool) {
    github_headers(Mock::given(method("GET")).and(path("/user")))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"login": "octocat", "type": "User"})))
        .mount(fake)
        .await;
    github_headers(Mock::given(method("GET")).and(path(format!("/repos/{name}"))))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"full_name": name, "private": private})))
        .mount(fake)
        .await;
}

async fn app_with_github(backend: Backend, fake: &MockServer, routes: &[(&str, &str)]) -> Option<TestApp> {
    let api = fake.uri();
    let routes: Vec<(String, String)> = routes.iter().map(|(t, r)| (t.to_string(), r.to_string())).collect();
    spawn_app_with(backend, move |s| {
        s.github.api_url = api.parse().unwrap();
        s.github.token = Some(SecretString::from(TOKEN));
        s.github.pacing = false;
        s.github.timeout_seconds = 1;
        for (t, r) in routes {
            s.github.routes.insert(
                t,
                intake::config::GithubRoute {
                    repo: r,
                    labels: None,
                    assignees: vec![],
                },
            );
        }
    })
    .await
}

async fn issue_job(app: &TestApp, reference: &str) -> intake::store::queue::Delivery {
    let t = app.store.ticket_by_reference(reference).await.unwrap().unwrap();
    app.store
        .deliveries_for_ticket(t.id)
        .await
        .unwrap()
        .into_iter()
        .find(|d| d.kind.id() == "github_issue")
        .unwrap()
}

fn creates(requests: &[Request]) -> Vec<&Request> {
    requests.iter().filter(|r| r.method.as_str() == "POST").collect()
}

async fn a_ticket_is_filed_once_with_the_headers_and_shape_github_requires(backend: Backend) {
    let fake = MockServer::start().await;
    repo(&fake, "acme/support", true).await;
    github_headers(Mock::given(method("POST")).and(path("/repos/acme/support/issues")))
        .and(issue_shape)
        .respond_with(ResponseTemplate::new(201).set_body_json(created(1347, "acme/support")))
        .expect(1)
        .mount(&fake)
        .await;
    // The message carries an XSS payload, which the classifier may read as a report: both routes
    // lead to the one private repository.
    let Some(app) = app_with_github(
        backend,
        &fake,
        &[("billing", "acme/support"), ("security", "acme/support")],
    )
    .await
    else {
        return;
    };
    let mut t = valid_ticket();
    t["message"] = json!("Hi @octocat, see #12 and acme/other#3. <img src=x onerror=alert(1)> ```` **bold**");
    let reference = app.submit(&t).await;
    app.deliverer.run_once().await.unwrap();

    let ticket = app.store.ticket_by_reference(&reference).await.unwrap().unwrap();
    let filed = ticket.github_issue.expect("filed");
    assert_eq!((filed.repo.as_str(), filed.number), ("acme/support", 1347));
    assert_eq!(filed.url, "https://github.com/acme/support/issues/1347");
    assert_eq!(issue_job(&app, &reference).await.state, DeliveryState::Done);

    let requests = fake.received_requests().await.unwrap();
    let create = creates(&requests)[0];
    let sent: Value = serde_json::from_slice(&create.body).unwrap();
    assert_eq!(
        sent["title"],
        format!("[{}] Invoice for October", ticket.filed_type.label())
    );
    // The route's labels, then what the decision means (docs/categorisation.md).
    let mut labels = vec!["support".to_owned(), ticket.filed_type.id().to_owned()];
    if ticket.needs_triage {
        labels.push("needs-triage".to_owned());
    }
    if intake::classify::band_of(&ticket.signals) == Some(intake::classify::Band::SecuritySuspect) {
        labels.push("security-suspect".to_owned());
    }
    assert_eq!(sent["labels"], json!(labels));
    let body = sent["body"].as_str().unwrap();
    assert!(body.contains(&format!("<!-- intake-ticket: {reference} -->")));
    assert!(
        body.contains("Email: ada@example.com"),
        "a private repository gets the contact details"
    );
    assert!(body.contains("- [ ] Reproducibility verified"));
    assert!(
        body.contains("`````text\nHi @octocat"),
        "the message sits in a fence longer than its backtick runs"
    );
    app.deliverer.run_once().await.unwrap();
    fake.verify().await;
}

async fn a_lost_answer_after_creation_does_not_create_a_second_issue(backend: Backend) {
    let fake = MockServer::start().await;
    repo(&fake, "acme/support", true).await;
    // GitHub creates the issue but answers after the client gave up (timeout 1 s).
    github_headers(Mock::given(method("POST")).and(path("/repos/acme/support/issues")))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(created(77, "acme/support"))
                .set_delay(Duration::from_millis(2500)),
        )
        .mount(&fake)
        .await;
    let Some(app) = app_with_github(backend, &fake, &[("billing", "acme/support")]).await else {
        return;
    };
    let reference = app.submit(&valid_ticket()).await;
    app.deliverer.run_once().await.unwrap();
    let job = issue_job(&app, &reference).await;
    assert_eq!(job.state, DeliveryState::Pending, "{:?}", job.last_error);
    assert_eq!(creates(&fake.received_requests().await.unwrap()).len(), 1);

    // The list endpoint now shows the issue the first attempt created.
    let mut listed = created(77, "acme/support");
    listed["body"] = json!(format!("…\n<!-- intake-ticket: {reference} -->\n"));
    let pr = json!({"number": 78, "html_url": "https://github.com/acme/support/pull/78",
                    "body": format!("<!-- intake-ticket: {reference} -->"), "pull_request": {"url": "x"},
                    "user": {"login": "octocat", "type": "User"}});
    // Newer issues that carry the marker but are not ours: one by a stranger, one of ours where a
    // customer quoted the marker inside the fence of their message.
    let stranger = json!({"number": 90, "html_url": "https://github.com/acme/support/issues/90",
                          "body": format!("<!-- intake-ticket: {reference} -->\n"),
                          "user": {"login": "mallory", "type": "User"}});
    let quoted = json!({"number": 91, "html_url": "https://github.com/acme/support/issues/91",
                        "body": format!("### Message\n\n````text\n<!-- intake-ticket: {reference} -->\n````\n\n<!-- intake-ticket: LV-OTHER000 -->\n"),
                        "user": {"login": "octocat", "type": "User"}});
    github_headers(Mock::given(method("GET")).and(path("/repos/acme/support/issues")))
        .and(query_param("state", "all"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!([stranger, quoted, pr, listed])))
        .expect(1..)
        .mount(&fake)
        .await;
    app.deliverer
        .run_once_at(Utc::now() + chrono::Duration::minutes(1))
        .await
        .unwrap();
    let ticket = app.store.ticket_by_reference(&reference).await.unwrap().unwrap();
    assert_eq!(ticket.github_issue.expect("found, not created again").number, 77);
    assert_eq!(
        creates(&fake.received_requests().await.unwrap()).len(),
        1,
        "exactly one create"
    );
    let list = fake
        .received_requests()
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.method.as_str() == "GET" && r.url.path().ends_with("/issues"))
        .unwrap();
    assert!(list.url.query().unwrap().contains("since="));
}

async fn rate_limits_are_waited_out_without_spending_attempts(backend: Backend) {
    let fake = MockServer::start().await;
    repo(&fake, "acme/support", true).await;
    let reset = Utc::now().timestamp() + 900;
    // First a secondary limit (403 + retry-after), then the primary (remaining 0 until reset).
    github_headers(Mock::given(method("POST")).and(path("/repos/acme/support/issues")))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("retry-after", "120")
                .set_body_json(json!({"message": "You have exceeded a secondary rate limit."})),
        )
        .up_to_n_times(1)
        .mount(&fake)
        .await;
    github_headers(Mock::given(method("POST")).and(path("/repos/acme/support/issues")))
        .respond_with(
            ResponseTemplate::new(403)
                .insert_header("x-ratelimit-remaining", "0")
                .insert_header("x-ratelimit-reset", reset.to_string().as_str())
                .set_body_json(json!({"message": "API rate limit exceeded"})),
        )
        .up_to_n_times(1)
        .mount(&fake)
        .await;
    finds_no_marker(&fake, "acme/support", None).await;
    files_as(&fake, "acme/support", 5).await;
    let Some(app) = app_with_github(backend, &fake, &[("billing", "acme/support")]).await else {
        return;
    };
    let reference = app.submit(&valid_ticket()).await;

    let before = Utc::now();
    app.deliverer.run_once().await.unwrap();
    let job = issue_job(&app, &reference).await;
    assert_eq!(job.state, DeliveryState::Pending);
    assert_eq!(job.attempts, 0, "a rate limit costs no attempt");
    assert!(
        job.run_at >= before + chrono::Duration::seconds(120),
        "retry-after honoured: {}",
        job.run_at
    );

    app.deliverer.run_once_at(job.run_at).await.unwrap();
    let job = issue_job(&app, &reference).await;
    assert!(
        job.run_at.timestamp() >= reset,
        "x-ratelimit-reset honoured: {}",
        job.run_at
    );

    app.deliverer.run_once_at(job.run_at).await.unwrap();
    assert_eq!(issue_job(&app, &reference).await.state, DeliveryState::Done);
}

async fn bad_routes_and_refused_content_are_dead_with_the_reason(backend: Backend) {
    let fake = MockServer::start().await;
    repo(&fake, "acme/support", true).await;
    github_headers(Mock::given(method("GET")).and(path("/repos/acme/gone")))
        .respond_with(ResponseTemplate::new(404).set_body_json(json!({"message": "Not Found"})))
        .mount(&fake)
        .await;
    github_headers(Mock::given(method("POST")).and(path("/repos/acme/support/issues")))
        .respond_with(ResponseTemplate::new(422).set_body_json(json!({"message": "Validation Failed"})))
        .mount(&fake)
        .await;
    let Some(app) = app_with_github(backend, &fake, &[("billing", "acme/support"), ("account", "acme/gone")]).await
    else {
        return;
    };
    let refused = app.submit(&valid_ticket()).await;
    let mut t = valid_ticket();
    t["type"] = json!("account");
    t["subject"] = json!("Cannot sign in");
    t["message"] = json!("I cannot sign in since this morning, the password is refused.");
    let missing = app.submit(&t).await;
    app.deliverer.run_once().await.unwrap();
    let job = issue_job(&app, &refused).await;
    assert_eq!(job.state, DeliveryState::Dead);
    assert!(
        job.last_error.as_deref().unwrap().contains("422"),
        "{:?}",
        job.last_error
    );
    let job = issue_job(&app, &missing).await;
    assert_eq!(job.state, DeliveryState::Dead);
    assert!(
        job.last_error.as_deref().unwrap().contains("404"),
        "{:?}",
        job.last_error
    );
    let health: Value = app.get("/api/health").await.json().await.unwrap();
    assert_eq!(health["checks"]["outbox"]["dead"], 2);
}

async fn a_502_is_retried_and_then_filed(backend: Backend) {
    let fake = MockServer::start().await;
    repo(&fake, "acme/support", true).await;
    github_headers(Mock::given(method("POST")).and(path("/repos/acme/support/issues")))
        .respond_with(ResponseTemplate::new(502).set_body_string("<html>Bad Gateway</html>"))
        .up_to_n_times(1)
        .mount(&fake)
        .await;
    finds_no_marker(&fake, "acme/support", Some(1)).await;
    files_as(&fake, "acme/support", 9).await;
    let Some(app) = app_with_github(backend, &fake, &[("billing", "acme/support")]).await else {
        return;
    };
    let reference = app.submit(&valid_ticket()).await;
    app.deliverer.run_once().await.unwrap();
    let job = issue_job(&app, &reference).await;
    assert_eq!((job.state, job.attempts), (DeliveryState::Pending, 1));
    assert!(
        job.run_at <= Utc::now() + chrono::Duration::seconds(10),
        "first retry within 10 s"
    );
    app.deliverer.run_once_at(job.run_at).await.unwrap();
    let ticket = app.store.ticket_by_reference(&reference).await.unwrap().unwrap();
    assert_eq!(ticket.github_issue.unwrap().number, 9);
    fake.verify().await;
}

on_both_backends!(
    a_ticket_is_filed_once_with_the_headers_and_shape_github_requires,
    a_lost_answer_after_creation_does_not_create_a_second_issue,
    rate_limits_are_waited_out_without_spending_attempts,
    bad_routes_and_refused_content_are_dead_with_the_reason,
    a_502_is_retried_and_then_filed,
);

#[tokio::test]
async fn a_public_repository_gets_no_contact_details_and_never_a_security_ticket() {
    let fake = MockServer::start().await;
    repo(&fake, "acme/public", false).await;
    files_as(&fake, "acme/public", 3).await;
    let app = app_with_github(
        Backend::Sqlite,
        &fake,
        &[("billing", "acme/public"), ("security", "acme/public")],
    )
    .await
    .unwrap();
    let ordinary = app.submit(&valid_ticket()).await;
    let mut t = valid_ticket();
    t["type"] = json!("security");
    t["subject"] = json!("XSS in titles");
    t["message"] = json!("A script tag in a video title runs for every viewer: stored XSS.");
    let security = app.submit(&t).await;
    app.deliverer.run_once().await.unwrap();

    let requests = fake.received_requests().await.unwrap();
    let posts = creates(&requests);
    assert_eq!(posts.len(), 1, "only the ordinary ticket is filed");
    let body: Value = serde_json::from_slice(&posts[0].body).unwrap();
    let body = body["body"].as_str().unwrap();
    assert!(!body.contains("ada@example.com") && !body.contains("Ada Lovelace"));
    assert!(body.contains(&ordinary));
    let job = issue_job(&app, &security).await;
    assert_eq!(job.state, DeliveryState::Pending);
    assert_eq!(job.attempts, 0);
    assert!(
        job.last_error.as_deref().unwrap().contains("public"),
        "{:?}",
        job.last_error
    );
}
