//! `GET /api/health`: can the service take submissions, and is delivery keeping up (docs/operations.md).

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Serialize;

use super::{ApiError, AppState};
use crate::store::queue::JobKind;

#[derive(Debug, Serialize, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    NotConfigured,
    Degraded,
    Down,
}

#[derive(Debug, Serialize)]
pub struct Check {
    pub status: Status,
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct OutboxCheck {
    pub status: Status,
    pub detail: String,
    pub pending: i64,
    pub dead: i64,
    pub oldest_pending_seconds: i64,
}

#[derive(Debug, Serialize)]
pub struct Checks {
    pub database: Check,
    pub outbox: OutboxCheck,
    pub email: Check,
    pub github: Check,
}

#[derive(Debug, Serialize)]
pub struct Health {
    pub status: &'static str,
    pub version: &'static str,
    pub checks: Checks,
}

/// The words a check's `detail` is reduced to for an anonymous caller: the status in words, with
/// no path, key name, repository or server reply (those are for a `read` token).
fn public_detail(check: &str, status: Status) -> &'static str {
    match (check, status) {
        (_, Status::Ok) => "ok",
        ("database", _) => "unreachable",
        ("email", _) => "sending fails and is retried",
        ("github", Status::NotConfigured) => "filing waits for configuration",
        ("github", _) => "filing waits or fails and is retried",
        _ => "not ok",
    }
}

/// `GET /api/health`. Anyone gets the status of each check and the outbox counts; the details
/// (what fails and why) need a token with the `read` scope.
pub async fn health(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let detailed = if req.headers().contains_key(actix_web::http::header::AUTHORIZATION) {
        super::authorize(&req, &state, Some(crate::tokens::Scope::Read)).await?;
        true
    } else {
        false
    };
    let mut res = checks(&state).await;
    if !detailed {
        for (name, check) in [
            ("database", &mut res.checks.database),
            ("email", &mut res.checks.email),
            ("github", &mut res.checks.github),
        ] {
            check.detail = public_detail(name, check.status).to_owned();
        }
    }
    let code = if res.status == "down" {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(code)
        .insert_header(("Cache-Control", "no-store"))
        .json(res))
}

async fn checks(state: &AppState) -> Health {
    let (database, outbox) = match state.store.outbox_stats(Utc::now()).await {
        Ok(stats) => {
            let (status, detail) = if stats.dead > 0 {
                (
                    Status::Degraded,
                    format!(
                        "{} delivery job(s) failed for good and wait for a retry by an operator",
                        stats.dead
                    ),
                )
            } else {
                (Status::Ok, format!("{} delivery job(s) pending", stats.pending))
            };
            (
                Check {
                    status: Status::Ok,
                    detail: format!("{} reachable", state.store.backend()),
                },
                OutboxCheck {
                    status,
                    detail,
                    pending: stats.pending,
                    dead: stats.dead,
                    oldest_pending_seconds: stats.oldest_pending_seconds,
                },
            )
        }
        Err(e) => {
            tracing::warn!(error = %e.for_log(), "health: database unreachable");
            (
                Check {
                    status: Status::Down,
                    detail: format!("{} unreachable", state.store.backend()),
                },
                OutboxCheck {
                    status: Status::Down,
                    detail: "unknown while the database is unreachable".to_owned(),
                    pending: 0,
                    dead: 0,
                    oldest_pending_seconds: 0,
                },
            )
        }
    };
    // Sends that failed and wait for their retry make email degraded, with the last error.
    let email = match state.store.failing_reason(JobKind::AckEmail).await {
        Ok(Some(error)) => Check {
            status: Status::Degraded,
            detail: format!(
                "{}; sending fails and is retried: {error}",
                state.delivery_config.email_detail
            ),
        },
        _ => Check {
            status: Status::Ok,
            detail: state.delivery_config.email_detail.clone(),
        },
    };
    let github = match &state.delivery_config.github_missing {
        Some(missing) => Check {
            status: Status::NotConfigured,
            detail: format!("filing waits: {missing}"),
        },
        None => match state.store.waiting_reason(JobKind::GithubIssue).await {
            Ok(Some(reason)) => Check {
                status: Status::Degraded,
                detail: format!("some issues wait: {reason}"),
            },
            _ => match state.store.failing_reason(JobKind::GithubIssue).await {
                Ok(Some(error)) => Check {
                    status: Status::Degraded,
                    detail: format!("filing fails and is retried: {error}"),
                },
                _ => Check {
                    status: Status::Ok,
                    detail: "configured".to_owned(),
                },
            },
        },
    };

    let worst = [database.status, outbox.status, email.status, github.status]
        .into_iter()
        .max()
        .unwrap_or(Status::Ok);
    let status = match worst {
        Status::Ok => "ok",
        Status::NotConfigured | Status::Degraded => "degraded",
        Status::Down => "down",
    };
    Health {
        status,
        version: env!("CARGO_PKG_VERSION"),
        checks: Checks {
            database,
            outbox,
            email,
            github,
        },
    }
}
