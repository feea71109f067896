//! The span every request's log lines carry: a request id, the method, the route pattern and,
//! at the end, the status. Deliberately nothing the client wrote: no raw path (it may carry a
//! reference), no user agent, no `X-Forwarded-For` (anyone can send one), so no client text can
//! appear on a line that Fail2Ban reads, and no personal data is logged with every request. The
//! client address appears only on refusal lines (see [`crate::abuse`]).

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::{Error, HttpMessage};
use tracing::Span;
use tracing_actix_web::{RequestId, RootSpanBuilder};

pub struct RequestSpan;

impl RootSpanBuilder for RequestSpan {
    fn on_request_start(request: &ServiceRequest) -> Span {
        // Field values are computed only when the span is enabled (not at `log.level = warn`).
        tracing::info_span!(
            "request",
            request_id = %request
                .extensions()
                .get::<RequestId>()
                .map(ToString::to_string)
                .unwrap_or_default(),
            method = crate::metrics::method_label(request.method()),
            route = %request
                .extensions()
                .get::<super::RoutePattern>()
                .map_or("unmatched", |r| r.0.as_str()),
            status = tracing::field::Empty,
        )
    }

    fn on_request_end<B: MessageBody>(span: Span, outcome: &Result<ServiceResponse<B>, Error>) {
        let (status, error) = match outcome {
            Ok(res) => (res.status(), res.response().error()),
            Err(e) => (e.as_response_error().status_code(), Some(e)),
        };
        span.record("status", status.as_u16());
        // Refusals (4xx) are logged by the handlers that know why; a 5xx is always worth a line.
        if status.is_server_error() {
            let _in = span.enter();
            match error {
                Some(e) => tracing::error!(status = status.as_u16(), error = %e, "request failed"),
                None => tracing::error!(status = status.as_u16(), "request failed"),
            }
        }
    }
}
