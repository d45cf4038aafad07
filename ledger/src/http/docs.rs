//! What the OpenAPI document says beyond the handlers' own annotations: the
//! title, servers, tags and security schemes, and the operation Envoy's
//! filter answers on the public listener (documented here because apps call
//! it through the same base URL, but never routed to the sidecar).

use utoipa::openapi::extensions::ExtensionsBuilder;
use utoipa::openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::schemas::{ErrorBody, UserQuery};
use tollgate_protocol::INTERNAL_SECRET_HEADER;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Tollgate ledger sidecar",
        description = "Public API (apps, server-side, with their paywall key), admin API (operators, own token) and the internal API the Envoy filter calls. Money on the wire is a decimal string; inside, integer micro-units. Errors use OpenAI's envelope."
    ),
    servers(
        (url = "http://127.0.0.1:8080", description = "Through Envoy (public API and pages)"),
        (url = "http://127.0.0.1:8081", description = "The sidecar itself (admin and internal APIs; never exposed publicly)")
    ),
    tags(
        (name = "public", description = "Apps, server-side, with their paywall key"),
        (name = "pages", description = "End-user pages behind the links in assistant messages"),
        (name = "payments", description = "Stripe's webhook events, signed with the endpoint's secret"),
        (name = "admin", description = "Operators, with the admin token"),
        (name = "internal", description = "The Envoy filter only; never routed from the public listener"),
        (name = "meta", description = "The sidecar's own port: health, metrics, this document")
    ),
    modifiers(&SecuritySchemes)
)]
pub struct ApiDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let bearer = |description: &str| {
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(description))
                    .build(),
            )
        };
        components.add_security_scheme("paywallKey", bearer("The app's paywall key."));
        components.add_security_scheme(
            "adminToken",
            bearer("The operator's admin token (TOLLGATE_ADMIN_TOKEN)."),
        );
        components.add_security_scheme(
            "stripeSignature",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "Stripe-Signature",
                "Stripe's HMAC-SHA256 signature of the event with the webhook endpoint's secret.",
            ))),
        );
        components.add_security_scheme(
            "internalSecret",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                INTERNAL_SECRET_HEADER,
                "The secret of the filter's configuration.",
            ))),
        );
    }
}

/// `POST /v1/chat/completions` as the filter answers it. The body is an
/// OpenAI chat-completions request; `user`, the `X-Paywall-User` header or the
/// `/v1/{user}/chat/completions` path names the end user.
#[utoipa::path(
    post,
    path = "/v1/chat/completions",
    tag = "public",
    security(("paywallKey" = [])),
    request_body(content = serde_json::Value, description = "An OpenAI chat-completions request."),
    responses(
        (status = 200, description = "The provider's chat.completion (or SSE stream), or an assistant message with a top-up / authorization link (header x-tollgate-action)", body = serde_json::Value),
        (status = 400, description = "Bad input", body = ErrorBody),
        (status = 401, description = "Missing or unknown key", body = ErrorBody),
        (status = 404, description = "Not found", body = ErrorBody),
        (status = 405, description = "Wrong method", body = ErrorBody),
        (status = 413, description = "Body over the limit", body = ErrorBody),
        (status = 429, description = "Rate or concurrency limit; see Retry-After", body = ErrorBody),
        (status = 503, description = "Temporarily unavailable", body = ErrorBody),
    )
)]
#[allow(dead_code)] // documents Envoy's filter; never called
fn chat_completions() {}

#[derive(OpenApi)]
#[openapi(paths(chat_completions), components(schemas(UserQuery)))]
struct EnvoyServed;

/// The operations Envoy's filter serves, each marked `x-served-by: envoy-filter`.
pub fn envoy_served() -> utoipa::openapi::OpenApi {
    let mut doc = EnvoyServed::openapi();
    for item in doc.paths.paths.values_mut() {
        for op in [&mut item.get, &mut item.post].into_iter().flatten() {
            let mark = ExtensionsBuilder::new()
                .add("x-served-by", "envoy-filter")
                .build();
            op.extensions
                .get_or_insert_with(Default::default)
                .merge(mark);
        }
    }
    doc
}
