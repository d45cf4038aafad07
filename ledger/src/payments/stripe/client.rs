//! Stripe's REST API, the three calls the ledger makes: create a Checkout
//! Session, retrieve one, list them (reconciliation, refund matching).
//! Requests are form-encoded as Stripe documents (`a[b][c]=v`), carry the
//! secret key as a Bearer token and, for creation, an `Idempotency-Key`.

use std::fmt;
use std::time::Duration;

use super::objects::{ErrorBody, Session, SessionList};

#[derive(Clone)]
pub struct StripeApi {
    http: reqwest::Client,
    base: String,
    key: String,
}

// The secret key never reaches a log line through Debug.
impl fmt::Debug for StripeApi {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StripeApi")
            .field("base", &self.base)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    #[error("Stripe could not be reached: {0}")]
    Unreachable(String),
    #[error("Stripe answered {status} ({kind}): {message}")]
    Api {
        status: u16,
        kind: String,
        message: String,
    },
    #[error("Stripe's answer could not be read: {0}")]
    Decode(String),
}

/// Form parameters in Stripe's bracket notation, in order.
pub type Form = Vec<(String, String)>;

impl StripeApi {
    pub fn new(base: &str, key: String) -> anyhow::Result<StripeApi> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(StripeApi {
            http,
            base: base.trim_end_matches('/').to_string(),
            key,
        })
    }

    pub async fn create_session(
        &self,
        form: &Form,
        idempotency_key: &str,
    ) -> Result<Session, StripeError> {
        let req = self
            .http
            .post(format!("{}/v1/checkout/sessions", self.base))
            .header("Idempotency-Key", idempotency_key)
            .form(form);
        self.send(req).await
    }

    pub async fn retrieve_session(&self, id: &str) -> Result<Session, StripeError> {
        let path: String =
            percent_encoding::utf8_percent_encode(id, percent_encoding::NON_ALPHANUMERIC).collect();
        let req = self
            .http
            .get(format!("{}/v1/checkout/sessions/{path}", self.base));
        self.send(req).await
    }

    pub async fn list_sessions(&self, query: &Form) -> Result<SessionList, StripeError> {
        let req = self
            .http
            .get(format!("{}/v1/checkout/sessions", self.base))
            .query(query);
        self.send(req).await
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<T, StripeError> {
        let resp = req
            .bearer_auth(&self.key)
            .send()
            .await
            .map_err(|e| StripeError::Unreachable(e.without_url().to_string()))?;
        let status = resp.status();
        let body = resp
            .bytes()
            .await
            .map_err(|e| StripeError::Unreachable(e.without_url().to_string()))?;
        if !status.is_success() {
            let (kind, message) = match serde_json::from_slice::<ErrorBody>(&body) {
                Ok(e) => (e.error.kind, e.error.message.unwrap_or_default()),
                Err(_) => ("unknown".into(), String::new()),
            };
            return Err(StripeError::Api {
                status: status.as_u16(),
                kind,
                message,
            });
        }
        serde_json::from_slice(&body).map_err(|e| StripeError::Decode(e.to_string()))
    }
}
