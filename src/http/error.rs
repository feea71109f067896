//! The API's one error type and the one place it becomes a response: RFC 9457 problem details.

use std::sync::Arc;

use actix_web::http::{header, StatusCode};
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;

use crate::domain::FieldError;
use crate::store::StoreError;

/// Everything the JSON API can refuse a request for.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("malformed request: {0}")]
    Malformed(String),
    #[error("request body over {limit} bytes")]
    TooLarge { limit: usize },
    #[error("content type must be {expected}")]
    UnsupportedMediaType { expected: &'static str },
    #[error("invalid fields")]
    Invalid(Vec<FieldError>),
    #[error("idempotency key reused with different content")]
    KeyConflict,
    #[error("not found")]
    NotFound,
    #[error("over a rate limit")]
    TooManyRequests { retry_after_seconds: u64 },
    #[error("request body not sent in time")]
    Timeout,
    #[error("unauthorized")]
    Unauthorized(&'static str),
    /// A browser sent this from another site's page (`Sec-Fetch-Site: cross-site`, a foreign `Origin`).
    #[error("cross-site request")]
    CrossSite,
    #[error("no valid ops token")]
    Unauthenticated,
    #[error("token lacks a scope")]
    Forbidden { scope: &'static str },
    #[error("conflict: {0}")]
    Conflict(String),
    /// Logged once, by the request's span when the request ends, with the database's code and
    /// message ([`StoreError::for_log`]).
    #[error("storage unavailable: {}", .0.for_log())]
    Unavailable(Arc<StoreError>),
}

/// The body of every error the API returns.
#[derive(Debug, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub title: &'static str,
    pub status: u16,
    pub detail: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

impl ApiError {
    /// A body that could not be read in full, under a limit of `limit` bytes.
    pub fn from_body(e: super::body::BodyError, limit: usize) -> ApiError {
        use super::body::BodyError;
        match e {
            BodyError::TooLarge => ApiError::TooLarge { limit },
            BodyError::Incomplete => ApiError::Malformed("The request body was cut short.".to_owned()),
            BodyError::TimedOut => ApiError::Timeout,
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        ApiError::Unavailable(Arc::new(e))
    }
}

impl From<crate::ops::OpsError> for ApiError {
    fn from(e: crate::ops::OpsError) -> Self {
        use crate::ops::OpsError;
        match e {
            OpsError::NoTicket(_) | OpsError::NoDelivery(_) | OpsError::NoToken(_) => ApiError::NotFound,
            OpsError::NotRetryable { id, state } => ApiError::Conflict(format!(
                "Delivery {id} is {state}; only dead or skipped deliveries are retried."
            )),
            OpsError::Invalid(errors) => ApiError::Invalid(errors),
            OpsError::Conflict(m) => ApiError::Conflict(m),
            OpsError::Store(e) => e.into(),
        }
    }
}

impl ApiError {
    fn slug_title(&self) -> (&'static str, &'static str) {
        match self {
            ApiError::Malformed(_) => ("malformed-request", "Malformed request"),
            ApiError::TooLarge { .. } => ("body-too-large", "Request body too large"),
            ApiError::UnsupportedMediaType { .. } => ("unsupported-media-type", "Unsupported content type"),
            ApiError::Invalid(_) => ("invalid-fields", "Invalid fields"),
            ApiError::KeyConflict => ("idempotency-key-reused", "Idempotency key reused"),
            ApiError::NotFound => ("not-found", "Not found"),
            ApiError::TooManyRequests { .. } => ("rate-limited", "Too many requests"),
            ApiError::Timeout => ("request-timeout", "Request timeout"),
            ApiError::Unauthorized(_) => ("unauthorized", "Unauthorized"),
            ApiError::CrossSite => ("cross-site-request", "Cross-site request refused"),
            ApiError::Unauthenticated => ("unauthenticated", "Unauthenticated"),
            ApiError::Forbidden { .. } => ("forbidden", "Forbidden"),
            ApiError::Conflict(_) => ("conflict", "Conflict"),
            ApiError::Unavailable(_) => ("storage-unavailable", "Service unavailable"),
        }
    }

    pub fn problem(&self) -> Problem {
        let (slug, title) = self.slug_title();
        let detail = match self {
            ApiError::Malformed(d) => d.clone(),
            ApiError::TooLarge { limit } => format!("The request body must be at most {limit} bytes."),
            ApiError::UnsupportedMediaType { expected } => format!("Send the request body as {expected}."),
            ApiError::Invalid(errors) => format!("{} field(s) need attention.", errors.len()),
            ApiError::KeyConflict => {
                "This Idempotency-Key was already used for a request with different content; use a new key for a new request.".to_owned()
            }
            ApiError::NotFound => "There is nothing at this address.".to_owned(),
            ApiError::TooManyRequests { retry_after_seconds } => format!(
                "Too many requests were sent from this address or for this email address; nothing was stored. Try again in {retry_after_seconds} seconds."
            ),
            ApiError::Timeout => "The request body did not arrive in time; nothing was stored.".to_owned(),
            ApiError::Unauthorized(d) => (*d).to_owned(),
            ApiError::CrossSite => {
                "Submissions are accepted from this service's own pages and from clients that are not browsers; this one came from another site.".to_owned()
            }
            ApiError::Unauthenticated => {
                "Send a live ops token as `Authorization: Bearer <token>` (intake tokens create).".to_owned()
            }
            ApiError::Forbidden { scope } => format!("This token does not have the `{scope}` scope."),
            ApiError::Conflict(d) => d.clone(),
            // Says nothing internal: the cause is in the log.
            ApiError::Unavailable(_) => {
                "The request could not be stored right now and nothing was kept. Please try again in a few minutes.".to_owned()
            }
        };
        let errors = match self {
            ApiError::Invalid(e) => e.clone(),
            _ => Vec::new(),
        };
        Problem {
            kind: format!("/problems/{slug}"),
            title,
            status: self.status_code().as_u16(),
            detail,
            errors,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Malformed(_) => StatusCode::BAD_REQUEST,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Invalid(_) | ApiError::KeyConflict => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::NotFound => StatusCode::NOT_FOUND,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Timeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::CrossSite => StatusCode::FORBIDDEN,
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden { .. } => StatusCode::FORBIDDEN,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut res = HttpResponse::build(self.status_code());
        res.insert_header((header::CONTENT_TYPE, "application/problem+json"));
        match self {
            ApiError::Unavailable(_) => {
                res.insert_header((header::RETRY_AFTER, "30"));
            }
            ApiError::TooManyRequests { retry_after_seconds } => {
                res.insert_header((header::RETRY_AFTER, retry_after_seconds.to_string()));
            }
            ApiError::Unauthenticated => {
                res.insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"intake\""));
            }
            // The connection is in an unknown state mid-body: do not reuse it.
            ApiError::Timeout => {
                res.insert_header((header::CONNECTION, "close"));
            }
            _ => {}
        }
        res.body(serde_json::to_string(&self.problem()).unwrap_or_default())
    }
}
