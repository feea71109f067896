//! The HTML help form: `GET /`, `POST /`, `GET /submitted/{ref}`. Works without JavaScript; every
//! refusal re-renders the form with what the customer typed.

use std::collections::BTreeMap;

use actix_web::http::{header, StatusCode};
use actix_web::{web, HttpRequest, HttpResponse};
use chrono::Utc;
use serde::Serialize;

use super::body::{media_type, read_limited, BodyError, MAX_BODY};
use super::AppState;
use crate::domain::{FieldError, IdempotencyKey, RawSubmission, Reference, RequestType, UnsupportedReason};
use crate::store::{Channel, InsertOutcome};

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

fn render_form(
    state: &AppState,
    status: StatusCode,
    token: &str,
    values: &RawSubmission,
    errors: &[FieldError],
    notice: Option<String>,
) -> HttpResponse {
    let page = FormPage {
        site_name: &state.site_name,
        form_token: token,
        values,
        errors: errors.iter().map(|e| (e.field.as_str(), e.message.as_str())).collect(),
        error_list: errors,
        notice,
        types: RequestType::ALL
            .into_iter()
            .map(|t| TypeView {
                id: t.id(),
                label: t.label(),
                description: t.description(),
            })
            .collect(),
        unsupported: UnsupportedReason::ALL.into_iter().map(UnsupportedView::from).collect(),
    };
    match state.templates.render("form.html", page) {
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

/// The form fields as sent; the first of a repeated field wins.
/// What a form post carries besides the customer's fields.
struct FormExtras {
    token: String,
    /// The hidden field people never see and bots fill in.
    honeypot: String,
}

fn form_fields(body: &[u8]) -> Option<(RawSubmission, FormExtras)> {
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

/// A bot is answered as if it had succeeded (a confirmation page with a reference that exists
/// nowhere), so it learns nothing; nothing is stored, mailed or filed. One WARN line in the fixed
/// `client=<ip> reason=<…>` form is left for Fail2Ban.
fn looks_accepted(state: &AppState, req: &HttpRequest, reason: &'static str) -> HttpResponse {
    let client = req
        .peer_addr()
        .map(|a| a.ip().to_string())
        .unwrap_or_else(|| "unknown".to_owned());
    tracing::warn!(client = %client, reason = %reason, "refused a form submission");
    #[derive(Serialize)]
    struct Submitted<'a> {
        site_name: &'a str,
        reference: String,
        type_label: &'static str,
    }
    let page = Submitted {
        site_name: &state.site_name,
        reference: Reference::generate(state.intake.reference_prefix()).to_string(),
        type_label: "support",
    };
    match state.templates.render("submitted.html", page) {
        Ok(body) => html(StatusCode::OK, body),
        Err(_) => HttpResponse::Ok().finish(),
    }
}

#[tracing::instrument(name = "form_submit", skip_all)]
pub async fn submit(req: HttpRequest, payload: web::Payload, state: web::Data<AppState>) -> HttpResponse {
    if media_type(&req).as_deref() != Some("application/x-www-form-urlencoded") {
        return error_page(
            &state,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "This form could not be read",
            "The form must be sent as application/x-www-form-urlencoded, as a browser does.",
        );
    }
    let body = match read_limited(&req, payload, MAX_BODY).await {
        Ok(b) => b,
        Err(BodyError::TooLarge) => {
            return error_page(
                &state,
                StatusCode::PAYLOAD_TOO_LARGE,
                "Your request is too long",
                "The form accepts at most 64 KiB. Please go back, shorten your message (at most 10,000 characters) and send it again.",
            )
        }
        Err(BodyError::Incomplete) => {
            return error_page(&state, StatusCode::BAD_REQUEST, "The form arrived incomplete", "Please go back and send it again.")
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
    if !extras.honeypot.is_empty() {
        return looks_accepted(&state, &req, "honeypot");
    }
    let now = Utc::now();
    let verified = match state.form_tokens.verify(&token, now) {
        Ok(v) => v,
        Err(e) => {
            tracing::info!(reason = %e, "form token refused; form rendered again");
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

    if (now - verified.issued_at).num_seconds() < state.min_fill_seconds as i64 {
        return looks_accepted(&state, &req, "too-fast");
    }

    let submission = match raw.validate() {
        Ok(s) => s,
        Err(errors) => return render_form(&state, StatusCode::UNPROCESSABLE_ENTITY, &token, &raw, &errors, None),
    };
    let key = IdempotencyKey::from_form_nonce(&verified.nonce);
    match state.intake.submit(submission, Channel::Form, Some(key)).await {
        Ok(InsertOutcome::Created(t) | InsertOutcome::Repeated(t)) => HttpResponse::SeeOther()
            .insert_header((header::LOCATION, format!("/submitted/{}", t.reference)))
            .insert_header((header::CACHE_CONTROL, "no-store"))
            .finish(),
        Ok(InsertOutcome::KeyConflict(t)) => {
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
        Err(e) => {
            tracing::error!(error = ?e, "form submission not stored: storage unavailable");
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
    match state.store.ticket_by_reference(reference.as_str()).await {
        Ok(Some(t)) => {
            let page = Submitted {
                site_name: &state.site_name,
                reference: &t.reference,
                type_label: t.filed_type.label(),
                unsupported: t.unsupported.map(UnsupportedView::from),
            };
            match state.templates.render("submitted.html", page) {
                Ok(body) => html(StatusCode::OK, body),
                Err(e) => {
                    tracing::error!(error = %e, "rendering the confirmation failed");
                    HttpResponse::InternalServerError().finish()
                }
            }
        }
        Ok(None) => not_found(),
        Err(e) => {
            tracing::error!(error = ?e, "confirmation page: storage unavailable");
            error_page(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                "Please try again shortly",
                "We cannot show this page right now.",
            )
        }
    }
}
