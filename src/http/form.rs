//! The HTML help form: `GET /`, `POST /`, `GET /submitted/{ref}`. Works without JavaScript; every
//! refusal re-renders the form with what the customer typed.

use std::collections::BTreeMap;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Serialize;
use strum::IntoEnumIterator;

use super::body::{media_type, read_limited, BodyError, MAX_BODY};
use super::AppState;
use crate::abuse::{Decoy, OverLimit, Refusal};
use crate::domain::{
    Channel, ClosedSet, FieldError, IdempotencyKey, RawSubmission, Reference, RequestType, UnsupportedReason,
};
use crate::form_token::TokenError;
use crate::store::InsertOutcome;
use crate::templates::Templates;

#[derive(Serialize)]
struct TypeView {
    id: &'static str,
    label: &'static str,
    description: &'static str,
}

#[derive(Serialize)]
struct UnsupportedView {
    id: &'static str,
    label: &'static str,
    policy: &'static str,
}

impl From<UnsupportedReason> for UnsupportedView {
    fn from(u: UnsupportedReason) -> Self {
        UnsupportedView {
            id: u.id(),
            label: u.label(),
            policy: u.policy(),
        }
    }
}

#[derive(Serialize)]
struct FormPage<'a> {
    site_name: &'a str,
    form_token: &'a str,
    values: &'a RawSubmission,
    errors: BTreeMap<&'a str, &'a str>,
    error_list: &'a [FieldError],
    notice: Option<String>,
    types: Vec<TypeView>,
    unsupported: Vec<UnsupportedView>,
}

/// An HTML response that is never cached: form pages carry a token and the customer's text.
fn html(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .insert_header((header::CONTENT_TYPE, "text/html; charset=utf-8"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

/// A plain page for what cannot be shown as the form (a body we did not read, a missing ticket).
pub fn error_page(state: &AppState, status: StatusCode, title: &str, detail: &str) -> HttpResponse {
    #[derive(Serialize)]
    struct ErrorPage<'a> {
        site_name: &'a str,
        title: &'a str,
        detail: &'a str,
    }
    match state.templates.render(
        "error.html",
        ErrorPage {
            site_name: &state.site_name,
            title,
            detail,
        },
    ) {
        Ok(body) => html(status, body),
        Err(e) => {
            tracing::error!(error = %e, "rendering the error page failed");
            HttpResponse::build(status)
                .content_type("text/plain; charset=utf-8")
                .body(title.to_owned())
        }
    }
}

/// The form page itself; every value is escaped by the template engine (HTML auto-escaping).
pub fn form_page(
    templates: &Templates,
    site_name: &str,
    token: &str,
    values: &RawSubmission,
    errors: &[FieldError],
    notice: Option<String>,
) -> Result<String, minijinja::Error> {
    let page = FormPage {
        site_name,
        form_token: token,
        values,
        errors: errors.iter().map(|e| (e.field.as_str(), e.message.as_str())).collect(),
        error_list: errors,
        notice,
        types: RequestType::iter()
            .map(|t| TypeView {
                id: t.id(),
                label: t.label(),
                description: t.description(),
            })
            .collect(),
        unsupported: UnsupportedReason::iter().map(UnsupportedView::from).collect(),
    };
    templates.render("form.html", page)
}

fn render_form(
    state: &AppState,
    status: StatusCode,
    token: &str,
    values: &RawSubmission,
    errors: &[FieldError],
    notice: Option<String>,
) -> HttpResponse {
    match form_page(&state.templates, &state.site_name, token, values, errors, notice) {
        Ok(body) => html(status, body),
        Err(e) => {
            tracing::error!(error = %e, "rendering the form failed");
            HttpResponse::InternalServerError().finish()
        }
    }
}

pub async fn show(state: web::Data<AppState>) -> HttpResponse {
    let token = state.form_tokens.issue(Utc::now());
    render_form(&state, StatusCode::OK, &token, &RawSubmission::default(), &[], None)
}

/// What a form post carries besides the customer's fields.
#[derive(Debug)]
pub struct FormExtras {
    pub token: String,
    /// The hidden field people never see and bots fill in.
    pub honeypot: String,
}

/// The form fields as sent; the first of a repeated field wins.
pub fn form_fields(body: &[u8]) -> Option<(RawSubmission, FormExtras)> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_bytes(body).ok()?;
    let get = |name: &str| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    let raw = RawSubmission {
        name: get("name"),
        email: get("email"),
        request_type: get("type"),
        subject: get("subject"),
        message: get("message"),
        account: get("account"),
        page_url: get("page_url"),
    };
    let extras = FormExtras {
        token: get("form_token").unwrap_or_default(),
        honeypot: get("website").unwrap_or_default(),
    };
    Some((raw, extras))
}

/// A bot is answered as if it had succeeded: a `303` to a confirmation page, as a person gets,
/// whose reference exists nowhere but shows like a real one (see [`crate::abuse::Decoys`]).
/// Nothing is stored, mailed or filed.
fn looks_accepted(state: &AppState, nonce: &str, submission: &crate::domain::Submission) -> HttpResponse {
    let classification = state.submitter.classify(submission);
    let reference = state.decoys.remember(
        nonce,
        Reference::generate(state.submitter.reference_prefix()).to_string(),
        Decoy {
            filed_type: classification.filed_as,
            unsupported: classification.unsupported,
        },
    );
    see_confirmation(&reference)
}

fn see_confirmation(reference: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, format!("/submitted/{reference}")))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .finish()
}

/// Over a rate limit: the form again, with the customer's text, a `429` and `Retry-After`.
fn too_many(state: &AppState, token: &str, raw: &RawSubmission, over: OverLimit) -> HttpResponse {
    let seconds = over.retry_after_seconds();
    let wait = if seconds < 120 {
        format!("{seconds} seconds")
    } else {
        format!("{} minutes", seconds.div_ceil(60))
    };
    let mut res = render_form(
        state,
        StatusCode::TOO_MANY_REQUESTS,
        token,
        raw,
        &[],
        Some(format!(
            "Too many requests were sent from here or for this email address in a short time, so this one was not sent. Your text is kept below: please send it again in {wait}."
        )),
    );
    if let Ok(v) = header::HeaderValue::from_str(&seconds.to_string()) {
        res.headers_mut().insert(header::RETRY_AFTER, v);
    }
    res
}

#[tracing::instrument(name = "form_submit", skip_all)]
pub async fn submit(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    if state.refuse_cross_site(&req).is_err() {
        let mut res = error_page(
            &state,
            StatusCode::FORBIDDEN,
            "This form was sent from another website",
            "Nothing was sent. To contact us, open this page and fill in the form here.",
        );
        res.headers_mut()
            .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
        return res;
    }
    // Every attempt counts, valid or not; the verdict waits until the text is read, to keep it.
    let client = state.clients.client(&req);
    let admitted = state.admit_client(client);
    if media_type(&req).as_deref() != Some("application/x-www-form-urlencoded") {
        return error_page(
            &state,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "This form could not be read",
            "The form must be sent as application/x-www-form-urlencoded, as a browser does.",
        );
    }
    let body = match read_limited(&req, payload, MAX_BODY, state.request_timeout).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            state.refuse(client, Refusal::BodyTooLarge);
            return error_page(
                &state,
                StatusCode::PAYLOAD_TOO_LARGE,
                "Your request is too long",
                "The form accepts at most 64 KiB. Please go back, shorten your message (at most 10,000 characters) and send it again.",
            );
        }
        Err(BodyError::Incomplete) => {
            return error_page(
                &state,
                StatusCode::BAD_REQUEST,
                "The form arrived incomplete",
                "Please go back and send it again.",
            )
        }
        Err(BodyError::TimedOut) => {
            let mut res = error_page(
                &state,
                StatusCode::REQUEST_TIMEOUT,
                "The form took too long to arrive",
                "Nothing was sent. Please go back and send it again.",
            );
            res.headers_mut()
                .insert(header::CONNECTION, header::HeaderValue::from_static("close"));
            return res;
        }
    };
    let Some((raw, extras)) = form_fields(&body) else {
        return error_page(
            &state,
            StatusCode::BAD_REQUEST,
            "This form could not be read",
            "Please go back and send it again.",
        );
    };
    let token = extras.token;
    if let Err(over) = admitted {
        return too_many(&state, &token, &raw, over);
    }
    // A bot is logged (for Fail2Ban) as soon as it is known, but answered exactly as a person with
    // the same form would be, down to the confirmation page: it learns nothing.
    let mut trap = (!extras.honeypot.is_empty()).then_some(Refusal::Honeypot);
    if let Some(why) = trap {
        state.refuse(client, why);
    }
    let now = Utc::now();
    let verified = match state.form_tokens.verify(&token, now) {
        Ok(v) => v,
        Err(e) => {
            if e == TokenError::Expired {
                // A tab left open for a day is a person, not an attack.
                tracing::info!("form token expired; form rendered again");
            } else if trap.is_none() {
                state.refuse(client, Refusal::BadToken);
            }
            let fresh = state.form_tokens.issue(now);
            return render_form(
                &state,
                StatusCode::UNPROCESSABLE_ENTITY,
                &fresh,
                &raw,
                &[],
                Some("This form had expired, so nothing was sent yet. Your text is kept below: please check it and send it again.".to_owned()),
            );
        }
    };
    if trap.is_none() && (now - verified.issued_at).num_seconds() < state.min_fill_seconds as i64 {
        trap = Some(Refusal::TooFast);
        state.refuse(client, Refusal::TooFast);
    }
    if let Err(over) = state.admit_email(client, raw.valid_email().as_deref()) {
        return too_many(&state, &token, &raw, over);
    }

    let submission = match raw.validate() {
        Ok(s) => s,
        Err(errors) => return render_form(&state, StatusCode::UNPROCESSABLE_ENTITY, &token, &raw, &errors, None),
    };
    if trap.is_some() {
        return looks_accepted(&state, &verified.nonce, &submission);
    }
    let key = IdempotencyKey::from_form_nonce(&verified.nonce);
    let outcome = state.submitter.submit(submission, Channel::Form, Some(key)).await;
    if let Ok(o) = &outcome {
        super::api::record_submission(&state, o);
    }
    match outcome {
        Ok(InsertOutcome::Created(t) | InsertOutcome::Repeated(t)) => see_confirmation(&t.reference),
        Ok(InsertOutcome::KeyConflict(t)) => {
            // The same rendered form sent again with other text: a replay is never a second ticket.
            tracing::info!("form token replayed with different content; form rendered again");
            let fresh = state.form_tokens.issue(now);
            render_form(
                &state,
                StatusCode::UNPROCESSABLE_ENTITY,
                &fresh,
                &raw,
                &[],
                Some(format!(
                    "This form was already sent as request {}. Your changes are kept below: send them to make a new request.",
                    t.reference
                )),
            )
        }
        Err(_) => {
            // The writer logged the failure, and the request's span logs this 503.
            render_form(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                &token,
                &raw,
                &[],
                Some("We could not store your request right now, so nothing was sent. Your text is kept below: please try again in a few minutes.".to_owned()),
            )
        }
    }
}

pub async fn submitted(path: web::Path<String>, state: web::Data<AppState>) -> HttpResponse {
    #[derive(Serialize)]
    struct Submitted<'a> {
        site_name: &'a str,
        reference: &'a str,
        type_label: &'static str,
        unsupported: Option<UnsupportedView>,
    }
    let not_found = || {
        error_page(
            &state,
            StatusCode::NOT_FOUND,
            "Request not found",
            "There is no request with this reference.",
        )
    };
    let Some(reference) = Reference::parse(&path) else {
        return not_found();
    };
    let show = |filed_type: RequestType, unsupported: Option<UnsupportedReason>| {
        let page = Submitted {
            site_name: &state.site_name,
            reference: reference.as_str(),
            type_label: filed_type.label(),
            unsupported: unsupported.map(UnsupportedView::from),
        };
        match state.templates.render("submitted.html", page) {
            Ok(body) => html(StatusCode::OK, body),
            Err(e) => {
                tracing::error!(error = %e, "rendering the confirmation failed");
                HttpResponse::InternalServerError().finish()
            }
        }
    };
    if let Some(d) = state.decoys.get(reference.as_str()) {
        return show(d.filed_type, d.unsupported);
    }
    match state.store.ticket_by_reference(reference.as_str()).await {
        Ok(Some(t)) => show(t.filed_type, t.unsupported),
        Ok(None) => not_found(),
        Err(e) => {
            tracing::error!(error = %e.for_log(), "confirmation page: storage unavailable");
            error_page(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                "Please try again shortly",
                "We cannot show this page right now.",
            )
        }
    }
}
