//! Ops tokens on HTTP: `Authorization: Bearer itk_…`, checked against the stored hash in constant
//! time, with scopes; and `GET /api/me`.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Serialize;

use super::error::ApiError;
use super::AppState;
use crate::abuse::Refusal;
use crate::tokens::{secret_matches, split_token, Scope};

/// Who a request is, by its token.
#[derive(Debug, Clone, Serialize)]
pub struct Caller {
    pub name: String,
    pub scopes: Vec<Scope>,
}

impl Caller {
    /// The actor as the audit log names it.
    pub fn actor(&self) -> String {
        format!("token:{}", self.name)
    }
}

/// The caller, if the request carries a live token with `scope` (any live token for `None`).
/// A missing token is `401`; a wrong one `401` and a refusal line; a weaker one `403`.
pub async fn authorize(req: &HttpRequest, state: &AppState, scope: Option<Scope>) -> Result<Caller, ApiError> {
    let Some(value) = req.headers().get(header::AUTHORIZATION) else {
        return Err(ApiError::Unauthenticated);
    };
    let refused = || {
        state.refuse(state.clients.client(req), Refusal::BadCredentials);
        ApiError::Unauthenticated
    };
    let token = value
        .to_str()
        .ok()
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim);
    let Some((id, secret)) = token.and_then(split_token) else {
        return Err(refused());
    };
    let stored = state
        .store
        .live_token(id)
        .await
        .map_err(|e| ApiError::Unavailable(std::sync::Arc::new(e)))?;
    let Some(stored) = stored.filter(|t| secret_matches(secret, &t.secret_hash)) else {
        return Err(refused());
    };
    if let Some(needed) = scope {
        if !stored.scopes.contains(&needed) {
            return Err(ApiError::Forbidden { scope: needed.as_str() });
        }
    }
    Ok(Caller {
        name: stored.name,
        scopes: stored.scopes,
    })
}

/// `GET /api/me`: who this token belongs to.
pub async fn me(req: HttpRequest, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let caller = authorize(&req, &state, None).await?;
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(caller))
}
