//! Which provider the mock pretends to be: where it serves chat completions
//! and how it checks the key, so tests can prove Tollgate rewrites a request
//! the way each real provider needs it.

use axum::http::{HeaderMap, Uri};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Flavor {
    /// `Authorization: Bearer`, `/v1/chat/completions` (also Together, Mistral,
    /// Anthropic's OpenAI-compatible endpoint, vLLM).
    Openai,
    /// `api-key` header, `/openai/deployments/{deployment}/chat/completions?api-version=…`.
    Azure,
    /// Bearer, `/api/v1/chat/completions`.
    Openrouter,
    /// Bearer, `/openai/v1/chat/completions`.
    Groq,
    /// No key unless one is configured, `/v1/chat/completions`.
    Ollama,
}

/// Azure API versions the mock accepts (a real deployment rejects unknown ones).
const AZURE_API_VERSIONS: &[&str] = &["2024-10-21", "2025-04-01-preview"];

impl Flavor {
    /// The route the chat endpoint is served under (axum syntax).
    pub fn chat_route(self) -> &'static str {
        match self {
            Flavor::Openai | Flavor::Ollama => "/v1/chat/completions",
            Flavor::Azure => "/openai/deployments/{deployment}/chat/completions",
            Flavor::Openrouter => "/api/v1/chat/completions",
            Flavor::Groq => "/openai/v1/chat/completions",
        }
    }

    /// Whether the request carries `key` the way this provider expects it.
    pub fn authorized(self, key: &str, headers: &HeaderMap) -> bool {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        match self {
            Flavor::Azure => get("api-key") == Some(key),
            Flavor::Ollama if key.is_empty() => true,
            _ => get("authorization") == Some(format!("Bearer {key}").as_str()),
        }
    }

    /// A problem with the URL beyond the path (Azure's required `api-version`).
    pub fn url_problem(self, uri: &Uri) -> Option<String> {
        if self != Flavor::Azure {
            return None;
        }
        let version = uri
            .query()
            .unwrap_or_default()
            .split('&')
            .find_map(|kv| kv.strip_prefix("api-version="));
        match version {
            Some(v) if AZURE_API_VERSIONS.contains(&v) => None,
            Some(v) => Some(format!("Unsupported api-version {v:?}.")),
            None => Some("Missing api-version query parameter.".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn each_flavor_checks_its_own_header() {
        let bearer = headers(&[("authorization", "Bearer k1")]);
        let api_key = headers(&[("api-key", "k1")]);
        assert!(Flavor::Openai.authorized("k1", &bearer));
        assert!(!Flavor::Openai.authorized("k1", &api_key));
        assert!(Flavor::Azure.authorized("k1", &api_key));
        assert!(!Flavor::Azure.authorized("k1", &bearer));
        assert!(!Flavor::Groq.authorized("k2", &bearer));
        assert!(Flavor::Ollama.authorized("", &HeaderMap::new()));
    }

    #[test]
    fn azure_needs_a_known_api_version() {
        let ok: Uri = "/openai/deployments/d/chat/completions?api-version=2024-10-21"
            .parse()
            .unwrap();
        let missing: Uri = "/openai/deployments/d/chat/completions".parse().unwrap();
        assert_eq!(Flavor::Azure.url_problem(&ok), None);
        assert!(Flavor::Azure.url_problem(&missing).is_some());
        assert_eq!(Flavor::Openai.url_problem(&missing), None);
    }
}
