//! A GitHub fake with memory: issues created through it are listed back, as GitHub does, so the
//! marker search after a crash can find them.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use wiremock::matchers::{header, header_exists, method, path};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const TOKEN: &str = "ghp_test_token_0123456789";
/// The login the token belongs to: the author of every issue the service files.
pub const LOGIN: &str = "intake-bot";

#[derive(Clone, Default)]
struct Issues(Arc<Mutex<Vec<(i64, String, Instant)>>>);

struct Create {
    issues: Issues,
    repo: String,
    delay: Duration,
}

impl Respond for Create {
    fn respond(&self, req: &Request) -> ResponseTemplate {
        let Ok(v) = serde_json::from_slice::<Value>(&req.body) else {
            return ResponseTemplate::new(400).set_body_json(json!({"message": "Problems parsing JSON"}));
        };
        let (Some(_title), Some(body)) = (v["title"].as_str(), v["body"].as_str()) else {
            return ResponseTemplate::new(422).set_body_json(json!({"message": "Validation Failed"}));
        };
        let mut issues = self.issues.0.lock().unwrap();
        let number = issues.len() as i64 + 1;
        issues.push((number, body.to_owned(), Instant::now()));
        ResponseTemplate::new(201)
            .set_body_json(json!({
                "number": number,
                "html_url": format!("https://github.com/{}/issues/{number}", self.repo),
                "body": body,
                "state": "open",
                "user": {"login": LOGIN, "type": "User"},
            }))
            .set_delay(self.delay)
    }
}

struct List {
    issues: Issues,
    repo: String,
}

impl Respond for List {
    fn respond(&self, _req: &Request) -> ResponseTemplate {
        let issues = self.issues.0.lock().unwrap();
        let list: Vec<Value> = issues
            .iter()
            .rev()
            .map(|(n, body, _)| json!({"number": n, "html_url": format!("https://github.com/{}/issues/{n}", self.repo), "body": body, "user": {"login": LOGIN, "type": "User"}}))
            .collect();
        ResponseTemplate::new(200).set_body_json(list)
    }
}

pub struct StatefulGithub {
    pub server: MockServer,
    issues: Issues,
}

impl StatefulGithub {
    /// A private repository `repo`, answering creates after `delay`.
    pub async fn start(repo: &str, delay: Duration) -> StatefulGithub {
        let server = MockServer::start().await;
        let issues = Issues::default();
        let checked = |m: wiremock::MockBuilder| {
            m.and(header("authorization", format!("Bearer {TOKEN}").as_str()))
                .and(header_exists("user-agent"))
                .and(header("accept", "application/vnd.github+json"))
                .and(header("x-github-api-version", "2022-11-28"))
        };
        checked(Mock::given(method("GET")).and(path("/user")))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"login": LOGIN, "type": "User"})))
            .mount(&server)
            .await;
        checked(Mock::given(method("GET")).and(path(format!("/repos/{repo}"))))
            .respond_with(ResponseTemplate::new(200).set_body_json(json!({"full_name": repo, "private": true})))
            .mount(&server)
            .await;
        checked(Mock::given(method("POST")).and(path(format!("/repos/{repo}/issues"))))
            .respond_with(Create {
                issues: issues.clone(),
                repo: repo.to_owned(),
                delay,
            })
            .mount(&server)
            .await;
        checked(Mock::given(method("GET")).and(path(format!("/repos/{repo}/issues"))))
            .respond_with(List {
                issues: issues.clone(),
                repo: repo.to_owned(),
            })
            .mount(&server)
            .await;
        StatefulGithub { server, issues }
    }

    pub fn created(&self) -> usize {
        self.issues.0.lock().unwrap().len()
    }

    /// How many issues carry each ticket's marker.
    pub fn issues_per_ticket(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for (_, body, _) in self.issues.0.lock().unwrap().iter() {
            if let Some(reference) = marker_of(body) {
                *counts.entry(reference).or_insert(0) += 1;
            }
        }
        counts
    }

    /// When each ticket's (first) issue arrived.
    #[allow(dead_code)] // the delivery benchmark includes this file and uses it
    pub fn arrivals(&self) -> HashMap<String, Instant> {
        let mut at = HashMap::new();
        for (_, body, when) in self.issues.0.lock().unwrap().iter() {
            if let Some(reference) = marker_of(body) {
                at.entry(reference).or_insert(*when);
            }
        }
        at
    }
}

fn marker_of(body: &str) -> Option<String> {
    let rest = body.split("<!-- intake-ticket: ").nth(1)?;
    Some(rest.split(' ').next().unwrap_or("").to_owned())
}
