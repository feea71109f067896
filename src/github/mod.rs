//! GitHub's REST API: file an issue, check a repository's visibility, find an issue by its marker.
//! Every request carries the headers GitHub requires (docs/delivery.md).

mod render;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderMap, HeaderValue, ACCEPT, AUTHORIZATION, USER_AGENT};
use reqwest::StatusCode;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use tokio::sync::Mutex;

pub use render::{fenced, has_own_marker, issue_body, issue_title, marker, BODY_MAX, TITLE_MAX};

/// How long a repository's visibility is trusted before it is asked again.
const VISIBILITY_TTL: Duration = Duration::from_secs(600);

/// A GitHub client for one token.
pub struct GithubClient {
    http: reqwest::Client,
    api_url: String,
    token: SecretString,
    visibility: Mutex<HashMap<String, (bool, Instant)>>,
    /// Who the token files issues as, once asked: only that author's issues are searched for markers.
    author: Mutex<Option<Author>>,
}

/// The author of the service's own issues.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Author {
    /// A user's token (a personal access token): that login.
    Login(String),
    /// A GitHub App installation token, which cannot ask `GET /user`: the issues of a bot account.
    App,
}

/// An issue's or a user's author, as GitHub shows it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct User {
    pub login: String,
    #[serde(rename = "type", default)]
    pub kind: String,
}

/// An issue GitHub holds.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Issue {
    pub number: i64,
    pub html_url: String,
    #[serde(default)]
    pub body: Option<String>,
    #[serde(default)]
    pub pull_request: Option<serde_json::Value>,
    #[serde(default)]
    pub user: Option<User>,
}

/// What went wrong, sorted by what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GithubError {
    /// Rate limited (403/429): wait until `until`, then back off.
    #[error("rate limited by GitHub (HTTP {status}); waiting until {until}")]
    RateLimited { status: u16, until: DateTime<Utc> },
    /// Worth another try. `ambiguous` when the request may have had its effect (timeout, lost
    /// connection, 5xx after sending): look for the marker before creating again.
    #[error("{message}")]
    Transient { message: String, ambiguous: bool },
    /// A configuration or content fault (401, 404, 410, 422, ...): retrying will not help.
    #[error("{message}")]
    Permanent { message: String },
}

#[derive(Serialize)]
struct NewIssue<'a> {
    title: &'a str,
    body: &'a str,
    labels: &'a [String],
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    assignees: &'a [String],
}

#[derive(Deserialize)]
struct Repo {
    private: bool,
}

impl GithubClient {
    pub fn new(api_url: &str, token: SecretString, timeout: Duration) -> anyhow::Result<GithubClient> {
        let mut headers = HeaderMap::new();
        headers.insert(ACCEPT, HeaderValue::from_static("application/vnd.github+json"));
        headers.insert("X-GitHub-Api-Version", HeaderValue::from_static("2022-11-28"));
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("intake/", env!("CARGO_PKG_VERSION"))),
        );
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .timeout(timeout)
            .build()?;
        Ok(GithubClient {
            http,
            api_url: api_url.trim_end_matches('/').to_owned(),
            token,
            visibility: Mutex::new(HashMap::new()),
            author: Mutex::new(None),
        })
    }

    fn auth(&self) -> Result<HeaderValue, GithubError> {
        let mut v = HeaderValue::from_str(&format!("Bearer {}", self.token.expose_secret())).map_err(|_| {
            GithubError::Permanent {
                message: "github.token has characters a header cannot carry".into(),
            }
        })?;
        v.set_sensitive(true);
        Ok(v)
    }

    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Result<reqwest::Response, GithubError> {
        let res = req
            .header(AUTHORIZATION, self.auth()?)
            .send()
            .await
            .map_err(|e| GithubError::Transient {
                message: format!("{what}: {}", describe(&e)),
                // A request that may have reached GitHub may have had its effect.
                ambiguous: !e.is_connect() && !e.is_builder(),
            })?;
        let status = res.status();
        if status.is_success() {
            return Ok(res);
        }
        let headers = res.headers().clone();
        Err(classify(status, &headers, what, res.text().await.unwrap_or_default()))
    }

    /// Whether `repo` is private, cached for a while.
    pub async fn is_private(&self, repo: &str) -> Result<bool, GithubError> {
        if let Some((private, at)) = self.visibility.lock().await.get(repo) {
            if at.elapsed() < VISIBILITY_TTL {
                return Ok(*private);
            }
        }
        let res = self
            .send(
                self.http.get(format!("{}/repos/{repo}", self.api_url)),
                "reading the repository",
            )
            .await?;
        let r: Repo = res.json().await.map_err(|e| GithubError::Transient {
            message: format!("reading the repository: unexpected answer: {e}"),
            ambiguous: false,
        })?;
        self.visibility
            .lock()
            .await
            .insert(repo.to_owned(), (r.private, Instant::now()));
        Ok(r.private)
    }

    pub async fn create_issue(
        &self,
        repo: &str,
        title: &str,
        body: &str,
        labels: &[String],
        assignees: &[String],
    ) -> Result<Issue, GithubError> {
        let req = self
            .http
            .post(format!("{}/repos/{repo}/issues", self.api_url))
            .json(&NewIssue {
                title,
                body,
                labels,
                assignees,
            });
        let res = self.send(req, "creating the issue").await?;
        res.json().await.map_err(|e| GithubError::Transient {
            message: format!("creating the issue: unexpected answer: {e}"),
            // GitHub said 2xx: the issue exists even if we cannot read the answer.
            ambiguous: true,
        })
    }

    /// Who the token acts as (`GET /user`, asked once). An installation token gets 403 there; its
    /// issues are a bot's.
    async fn author(&self) -> Result<Author, GithubError> {
        let mut known = self.author.lock().await;
        if let Some(a) = known.as_ref() {
            return Ok(a.clone());
        }
        let res = self
            .http
            .get(format!("{}/user", self.api_url))
            .header(AUTHORIZATION, self.auth()?)
            .send()
            .await;
        let author = match res {
            Ok(r) if r.status() == StatusCode::FORBIDDEN => {
                // A rate limit is a 403 too: wait it out; only a plain refusal means an App's token.
                let (status, headers) = (r.status(), r.headers().clone());
                match classify(
                    status,
                    &headers,
                    "reading the token's user",
                    r.text().await.unwrap_or_default(),
                ) {
                    e @ GithubError::RateLimited { .. } => return Err(e),
                    _ => Author::App,
                }
            }
            Ok(r) if r.status().is_success() => {
                let u: User = r.json().await.map_err(|e| GithubError::Transient {
                    message: format!("reading the token's user: unexpected answer: {e}"),
                    ambiguous: false,
                })?;
                Author::Login(u.login)
            }
            Ok(r) => {
                let (status, headers) = (r.status(), r.headers().clone());
                return Err(classify(
                    status,
                    &headers,
                    "reading the token's user",
                    r.text().await.unwrap_or_default(),
                ));
            }
            Err(e) => {
                return Err(GithubError::Transient {
                    message: format!("reading the token's user: {}", describe(&e)),
                    ambiguous: false,
                })
            }
        };
        *known = Some(author.clone());
        Ok(author)
    }

    /// The service's own issue carrying `marker`, among those updated since `since`: written by the
    /// token's user (or, for an App, a bot), with the marker on a line of its own outside every
    /// fence, so that a customer quoting a marker in another issue never passes for it. Pull
    /// requests are skipped.
    pub async fn find_by_marker(
        &self,
        repo: &str,
        marker: &str,
        since: DateTime<Utc>,
    ) -> Result<Option<Issue>, GithubError> {
        let author = self.author().await?;
        let ours = |i: &Issue| match (&author, &i.user) {
            (Author::Login(login), Some(u)) => u.login.eq_ignore_ascii_case(login),
            (Author::App, Some(u)) => u.kind == "Bot",
            (_, None) => false,
        };
        for page in 1..=5 {
            let req = self.http.get(format!("{}/repos/{repo}/issues", self.api_url)).query(&[
                ("state", "all"),
                ("since", &since.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                ("per_page", "100"),
                ("sort", "created"),
                ("direction", "desc"),
                ("page", &page.to_string()),
            ]);
            let res = self.send(req, "looking for an earlier issue").await?;
            let issues: Vec<Issue> = res.json().await.map_err(|e| GithubError::Transient {
                message: format!("looking for an earlier issue: unexpected answer: {e}"),
                ambiguous: false,
            })?;
            let count = issues.len();
            if let Some(found) = issues.into_iter().find(|i| {
                i.pull_request.is_none() && ours(i) && i.body.as_deref().is_some_and(|b| has_own_marker(b, marker))
            }) {
                return Ok(Some(found));
            }
            if count < 100 {
                break;
            }
        }
        Ok(None)
    }
}

fn describe(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "no answer in time".into()
    } else if e.is_connect() {
        "could not connect".into()
    } else {
        "the connection failed".into()
    }
}

fn header_i64(headers: &HeaderMap, name: &str) -> Option<i64> {
    headers.get(name)?.to_str().ok()?.trim().parse().ok()
}

/// Sorts a failed answer (GitHub's documented rate-limit rules).
pub fn classify(status: StatusCode, headers: &HeaderMap, what: &str, body: String) -> GithubError {
    let now = Utc::now();
    let detail: String = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
        .unwrap_or_default()
        .chars()
        .take(200)
        .collect();
    let code = status.as_u16();
    if code == 429
        || (code == 403
            && (headers.contains_key("retry-after")
                || header_i64(headers, "x-ratelimit-remaining") == Some(0)
                || detail.to_ascii_lowercase().contains("rate limit")))
    {
        let until = if let Some(secs) = header_i64(headers, "retry-after") {
            now + chrono::Duration::seconds(secs.max(1))
        } else if header_i64(headers, "x-ratelimit-remaining") == Some(0) {
            header_i64(headers, "x-ratelimit-reset")
                .and_then(|t| DateTime::<Utc>::from_timestamp(t, 0))
                .filter(|t| *t > now)
                .unwrap_or(now + chrono::Duration::seconds(60))
        } else {
            now + chrono::Duration::seconds(60)
        };
        return GithubError::RateLimited { status: code, until };
    }
    if status.is_server_error() {
        return GithubError::Transient {
            message: format!("{what}: GitHub answered {code}"),
            ambiguous: true,
        };
    }
    let hint = match code {
        401 => " (github.token is not valid)",
        403 => " (the token lacks permission)",
        404 => " (no such repository, or the token cannot see it)",
        410 => " (issues are disabled on this repository)",
        422 => " (GitHub refused the content)",
        _ => "",
    };
    GithubError::Permanent {
        message: format!("{what}: GitHub answered {code}{hint} {detail}")
            .trim()
            .to_owned(),
    }
}
