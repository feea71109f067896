//! Reading request bodies within limits, so no handler ever holds more than it accepts.

use std::time::Duration;

use actix_web::http::header;
use actix_web::{web, HttpRequest};
use futures_util::StreamExt;

/// The largest body the service reads (docs/http-api.md).
pub const MAX_BODY: usize = 64 * 1024;

#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    TooLarge,
    /// The client stopped sending or sent a broken stream.
    Incomplete,
    /// The client took longer than `server.request_timeout_seconds` to send the body.
    TimedOut,
}

/// The essence of a `Content-Type` header: `type/subtype`, lowercased, without parameters.
pub fn media_type(req: &HttpRequest) -> Option<String> {
    let value = req.headers().get(header::CONTENT_TYPE)?.to_str().ok()?;
    Some(value.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

/// Reads the whole body, refusing it as soon as it is known to exceed `limit` or when it takes
/// longer than `timeout` (a slow client must not hold a connection and a worker's buffer).
pub async fn read_limited(
    req: &HttpRequest,
    payload: web::Payload,
    limit: usize,
    timeout: Duration,
) -> Result<web::BytesMut, BodyError> {
    tokio::time::timeout(timeout, read(req, payload, limit))
        .await
        .unwrap_or(Err(BodyError::TimedOut))
}

async fn read(req: &HttpRequest, mut payload: web::Payload, limit: usize) -> Result<web::BytesMut, BodyError> {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    let mut body = web::BytesMut::with_capacity(declared.map_or(1024, |n| n as usize));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|_| BodyError::Incomplete)?;
        if body.len() + chunk.len() > limit {
            return Err(BodyError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
