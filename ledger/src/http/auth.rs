//! Who is calling, as axum extractors: an app with its paywall key, an
//! operator with the admin token, the filter with the internal secret. A
//! handler names the one it needs in its arguments; a caller without it gets
//! the OpenAI-shaped refusal before the handler runs. Bearer tokens are read
//! by the one rule both sides share (`tollgate_protocol::bearer_token`).

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use tollgate_protocol::{bearer_token, ApiError, INTERNAL_SECRET_HEADER};

use super::errors::api_error;
use super::Shared;
use crate::access::secrets::{constant_time_eq, sha256_hex};
use crate::catalog::{self, Paywall};

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_token)
}

/// The paywall an app authenticates as with `Authorization: Bearer <paywall key>`.
pub struct PaywallAuth(pub Paywall);

impl FromRequestParts<Shared> for PaywallAuth {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Response> {
        let unauthorized =
            |m: &str| api_error(StatusCode::UNAUTHORIZED, ApiError::authentication(m));
        let key =
            bearer(&parts.headers).ok_or_else(|| unauthorized("You didn't provide an API key."))?;
        match catalog::paywall_by_key(&state.db, key).await? {
            Some(p) => Ok(PaywallAuth(p)),
            None => Err(unauthorized("Incorrect API key provided.")),
        }
    }
}

/// An operator with the admin token (`TOLLGATE_ADMIN_TOKEN`). Without a
/// configured token the admin API does not exist (404).
pub struct AdminAuth;

impl FromRequestParts<Shared> for AdminAuth {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Response> {
        let Some(expected) = &state.admin_token_hash else {
            return Err(api_error(
                StatusCode::NOT_FOUND,
                ApiError::invalid_request("not_found", "The admin API is disabled."),
            ));
        };
        let given = bearer(&parts.headers).unwrap_or("");
        if constant_time_eq(&sha256_hex(given), expected) {
            Ok(AdminAuth)
        } else {
            Err(api_error(
                StatusCode::UNAUTHORIZED,
                ApiError::authentication("Invalid admin token."),
            ))
        }
    }
}

/// The filter, proving itself with the internal secret of its configuration.
pub struct InternalAuth;

impl FromRequestParts<Shared> for InternalAuth {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &Shared) -> Result<Self, Response> {
        let given = parts
            .headers
            .get(INTERNAL_SECRET_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if constant_time_eq(given, &state.internal_secret) {
            Ok(InternalAuth)
        } else {
            tracing::warn!("internal call with a missing or wrong secret");
            Err(api_error(
                StatusCode::FORBIDDEN,
                ApiError::new("permission_error", "forbidden", "Internal endpoint."),
            ))
        }
    }
}
