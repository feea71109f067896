//! `POST /api/v1/tickets`: the JSON submission endpoint.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::body::{media_type, read_limited, BodyError, MAX_BODY};
use super::error::ApiError;
use super::AppState;
use crate::abuse::{OverLimit, Refusal};
use crate::domain::{Channel, ClosedSet, FieldError, IdempotencyKey, RawSubmission, TicketStatus, TicketSummary};
use crate::store::InsertOutcome;

/// The accepted shape: every field optional here so that a wrong type is reported per field (422)
/// rather than as a parse failure; unknown and duplicate keys are refused by serde (400).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonSubmission {
    name: Option<Value>,
    email: Option<Value>,
    #[serde(rename = "type")]
    request_type: Option<Value>,
    subject: Option<Value>,
    message: Option<Value>,
    account: Option<Value>,
    page_url: Option<Value>,
}

/// The answer to an accepted (or repeated) submission.
#[derive(Debug, Serialize)]
pub struct Accepted {
    pub ticket: String,
    #[serde(rename = "type")]
    pub request_type: &'static str,
    pub status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub picked_type: Option<&'static str>,
}

impl From<&TicketSummary> for Accepted {
    fn from(t: &TicketSummary) -> Self {
        Accepted {
            ticket: t.reference.clone(),
            request_type: t.filed_type.id(),
            status: TicketStatus::of(t.unsupported).id(),
            reason: t.unsupported.map(|u| u.id()),
            picked_type: (t.picked_type != t.filed_type).then(|| t.picked_type.id()),
        }
    }
}

fn string_field(name: &str, v: Option<Value>, errors: &mut Vec<FieldError>) -> Option<String> {
    match v {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            errors.push(FieldError::new(name, "must be a string"));
            None
        }
    }
}

/// The JSON body as a submission not yet validated, or why it is not one.
pub fn parse(body: &[u8]) -> Result<RawSubmission, ApiError> {
    // serde would also read a struct from a JSON array, positionally; only an object is a submission.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::Malformed("The body must be a JSON object.".to_owned()));
    }
    let json: JsonSubmission = serde_json::from_slice(body).map_err(|e| {
        let what = match e.classify() {
            serde_json::error::Category::Io
            | serde_json::error::Category::Syntax
            | serde_json::error::Category::Eof => "The body is not valid JSON",
            serde_json::error::Category::Data => "The JSON does not have the expected shape",
        };
        ApiError::Malformed(format!("{what}: {e}."))
    })?;
    let mut type_errors = Vec::new();
    let raw = RawSubmission {
        name: string_field("name", json.name, &mut type_errors),
        email: string_field("email", json.email, &mut type_errors),
        request_type: string_field("type", json.request_type, &mut type_errors),
        subject: string_field("subject", json.subject, &mut type_errors),
        message: string_field("message", json.message, &mut type_errors),
        account: string_field("account", json.account, &mut type_errors),
        page_url: string_field("page_url", json.page_url, &mut type_errors),
    };
    if type_errors.is_empty() {
        return Ok(raw);
    }
    // Report the type error for a field instead of "missing", and the other fields' problems beside it.
    let mut errors = raw.validate().err().unwrap_or_default();
    errors.retain(|e| !type_errors.iter().any(|t| t.field == e.field));
    errors.extend(type_errors);
    Err(ApiError::Invalid(errors))
}

fn too_many(over: OverLimit) -> ApiError {
    ApiError::TooManyRequests {
        retry_after_seconds: over.retry_after_seconds(),
    }
}

/// Counts an answered submission for `/metrics`.
pub fn record_submission(state: &AppState, outcome: &InsertOutcome) {
    use crate::metrics::SubmissionOutcome;
    match outcome {
        InsertOutcome::Created(t) => state.metrics.submission(
            t.filed_type,
            if t.unsupported.is_some() {
                SubmissionOutcome::Unsupported
            } else {
                SubmissionOutcome::Received
            },
        ),
        InsertOutcome::Repeated(t) => state.metrics.submission(t.filed_type, SubmissionOutcome::Replayed),
        InsertOutcome::KeyConflict(_) => {}
    }
}

#[tracing::instrument(name = "api_submit", skip_all)]
pub async fn submit(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    // A browser on another site's page must not spend its visitor's limits (nor get them banned).
    state.refuse_cross_site(&req).map_err(|()| ApiError::CrossSite)?;
    // Every attempt counts, valid or not, before any work is done for it.
    let client = state.clients.client(&req);
    if let Err(over) = state.admit_client(client) {
        // Read what was sent (within the limits) so the connection stays usable: a client over
        // its limit then costs one small read instead of a new connection per attempt.
        let _ = read_limited(&req, payload, MAX_BODY, state.request_timeout).await;
        return Err(too_many(over));
    }
    match media_type(&req).as_deref() {
        Some("application/json") => {}
        Some(t) if t.starts_with("application/") && t.ends_with("+json") => {}
        _ => {
            return Err(ApiError::UnsupportedMediaType {
                expected: "application/json",
            })
        }
    }
    let key = match req.headers().get("idempotency-key") {
        None => None,
        Some(v) => {
            let key = v
                .to_str()
                .map_err(|_| "must be visible ASCII characters".to_owned())
                .and_then(IdempotencyKey::from_api)
                .map_err(|m| ApiError::Invalid(vec![FieldError::new("Idempotency-Key", m)]))?;
            Some(key)
        }
    };
    let body = read_limited(&req, payload, MAX_BODY, state.request_timeout)
        .await
        .map_err(|e| {
            if e == BodyError::TooLarge {
                state.refuse(client, Refusal::BodyTooLarge);
            }
            ApiError::from_body(e, MAX_BODY)
        })?;
    let raw = parse(&body)?;
    state
        .admit_email(client, raw.valid_email().as_deref())
        .map_err(too_many)?;
    let submission = raw.validate().map_err(ApiError::Invalid)?;
    let outcome = state
        .submitter
        .submit(submission, Channel::Api, key)
        .await
        .map_err(ApiError::Unavailable)?;
    record_submission(&state, &outcome);
    match outcome {
        InsertOutcome::Created(t) => Ok(HttpResponse::build(StatusCode::ACCEPTED).json(Accepted::from(&t))),
        InsertOutcome::Repeated(t) => Ok(HttpResponse::build(StatusCode::ACCEPTED)
            .insert_header(("Idempotent-Replayed", "true"))
            .json(Accepted::from(&t))),
        InsertOutcome::KeyConflict(_) => Err(ApiError::KeyConflict),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_types_are_reported_per_field() {
        let err =
            parse(br#"{"name": 5, "email": ["a"], "type": "billing", "subject": "s", "message": "long enough text"}"#)
                .unwrap_err();
        let ApiError::Invalid(errors) = err else {
            panic!("expected field errors")
        };
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["name", "email"]);
        assert!(errors.iter().all(|e| e.message == "must be a string"));
    }

    #[test]
    fn duplicate_and_unknown_keys_are_malformed() {
        assert!(matches!(
            parse(br#"{"name": "a", "name": "b"}"#),
            Err(ApiError::Malformed(_))
        ));
        assert!(matches!(parse(br#"{"nmae": "a"}"#), Err(ApiError::Malformed(_))));
        assert!(matches!(parse(b"[1,2]"), Err(ApiError::Malformed(_))));
        let positional = br#"["Ada", "ada@example.com", "billing", "Subject", "A long enough message", null, null]"#;
        assert!(matches!(parse(positional), Err(ApiError::Malformed(_))));
        assert!(matches!(parse(b"\xff\xfe"), Err(ApiError::Malformed(_))));
    }
}
