//! OpenAI's error envelope: `{"error":{"message","type","param","code"}}`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiError {
    pub message: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub param: Option<String>,
    pub code: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    error: ApiError,
}

impl ApiError {
    pub fn new(kind: &str, code: &str, message: impl Into<String>) -> Self {
        ApiError {
            message: message.into(),
            kind: kind.to_string(),
            param: None,
            code: Some(code.to_string()),
        }
    }

    pub fn with_param(mut self, param: &str) -> Self {
        self.param = Some(param.to_string());
        self
    }

    pub fn invalid_request(code: &str, message: impl Into<String>) -> Self {
        Self::new("invalid_request_error", code, message)
    }

    pub fn authentication(message: impl Into<String>) -> Self {
        Self::new("authentication_error", "invalid_api_key", message)
    }

    /// The JSON body OpenAI clients expect, wrapped in `{"error": …}`.
    pub fn to_body(&self) -> String {
        let env = Envelope {
            error: self.clone(),
        };
        serde_json::to_string(&env).unwrap_or_else(|_| {
            r#"{"error":{"message":"internal error","type":"server_error","param":null,"code":null}}"#.to_string()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_has_openai_shape() {
        let e = ApiError::invalid_request("missing_user", "no user").with_param("user");
        let v: serde_json::Value = serde_json::from_str(&e.to_body()).unwrap();
        assert_eq!(v["error"]["type"], "invalid_request_error");
        assert_eq!(v["error"]["param"], "user");
        assert_eq!(v["error"]["code"], "missing_user");
        assert_eq!(v["error"]["message"], "no user");
        let back: Envelope = serde_json::from_str(&e.to_body()).unwrap();
        assert_eq!(back.error, e);
    }
}
